//! Mail authentication: DKIM signing of mail tern sends (RFC 6376, RFC 8463),
//! and SPF, DKIM and DMARC checks of mail it receives (RFC 7208, RFC 6376,
//! RFC 9989, which obsoletes RFC 7489), reported in one
//! Authentication-Results field (RFC 8601).
//!
//! The cryptography, the canonicalization and the record grammars are the
//! `mail-auth` crate's (ring underneath). This module decides what is signed
//! and with which key ([`sign`]), feeds mail-auth the CRLF form of tern's
//! LF-stored messages, runs its async checks on a private current-thread
//! runtime with a deadline and a TTL cache ([`dns`], [`check`]), and turns the
//! outcome into a header field and a verdict ([`results`]).
//!
//! Nothing here knows the session, the spool or the config file: the
//! session passes what it knows (client address, HELO, envelope sender, the
//! message) and gets back values. See /work/brief/mailauth-keys.md (kept as
//! `doc` notes for the wiring) for where the session calls what.

pub mod check;
pub mod dns;
pub mod keys;
pub mod results;
pub mod sign;

#[cfg(test)]
mod testdns;
#[cfg(test)]
mod testkeys;
#[cfg(test)]
mod tests;

pub use check::{Checker, Policy, Rejection, SpfReject, Verdict};
pub use keys::{Key, KeyError, KeyKind};
pub use results::{AuthResults, DkimCheck, DmarcCheck, SpfCheck};
pub use sign::{SignEntry, SignError, Signed, Signers};
