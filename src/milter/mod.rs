//! Milters: mail filters speaking the Sendmail milter protocol (version 6 as
//! Postfix implements it), such as OpenDKIM, rspamd, clamav-milter.
//!
//! - `protocol`: pure encoding and decoding of packets.
//! - `negotiate`: the version, actions and steps offered and agreed (SMFIC_OPTNEG).
//! - `reply_text`: a milter's own SMTP reply (SMFIR_REPLYCODE), validated.
//! - `client`: one conversation per SMTP session and milter, with time-outs and
//!   the default action when the milter fails (`client::exchange`: one event, its
//!   replies and the bytes on the socket).
//! - `spec`: one configured milter (endpoint, time limits, default action, macro lists).
//! - `macros`: the Sendmail macro values and the CONNECT information milters are told.
//! - `chain`: several milters in order, combined as Postfix does.
//! - `edit`: applying the header, body and envelope changes milters ask for.
//!
//! The session drives a [`Chain`]; /work/brief/milter-keys.md (kept with the
//! project notes) describes the calls per SMTP stage.

pub mod chain;
pub mod client;
pub mod edit;
pub mod macros;
pub mod negotiate;
pub mod protocol;
pub mod reply_text;
pub mod spec;

pub use chain::{Chain, MessageOutcome};
pub use client::{EomOutcome, Milter, Refusal, Transport, Verdict};
pub use edit::{EnvelopeEdit, Field, Message, Modification, RcptEdit};
pub use macros::{ConnectInfo, Macros};
pub use negotiate::ProtocolSetting;
pub use spec::{DefaultAction, MacroLists, MilterSpec, Timeouts};
