//! Milters: mail filters speaking the Sendmail milter protocol (version 6 as
//! Postfix implements it), such as OpenDKIM, rspamd, clamav-milter.
//!
//! - `protocol`: pure encoding and decoding of packets, negotiation, reply codes.
//! - `client`: one conversation per SMTP session and milter, with time-outs and
//!   the default action when the milter fails.
//! - `chain`: several milters in order, combined as Postfix does.
//! - `edit`: applying the header, body and envelope changes milters ask for.
//!
//! The session drives a [`Chain`]; /work/brief/milter-keys.md (kept with the
//! project notes) describes the calls per SMTP stage.

pub mod chain;
pub mod client;
pub mod edit;
pub mod protocol;

pub use chain::{Chain, MessageOutcome};
pub use client::{
    ConnectInfo, DefaultAction, EomOutcome, MacroLists, Macros, Milter, MilterSpec, Refusal, Timeouts,
    Transport, Verdict,
};
pub use edit::{EnvelopeEdit, Field, Message, Modification, RcptEdit};
