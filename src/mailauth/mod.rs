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
//! Nothing here knows the session, the spool or the config file: callers
//! pass what they know and get values back. A trusted submission (AUTH,
//! `relay_networks`, sendmail) is signed before it is committed:
//! [`Signers::sign`] over the stored message, its fields prepended, a
//! [`SignError`] answered with 451. Mail from elsewhere is checked:
//! [`Checker::spf`] at MAIL FROM (an SPF rejection can come before DATA),
//! [`results::strip_own_results`] as the data arrives, [`Checker::message`]
//! at the end of DATA, [`AuthResults::field`] prepended and
//! [`AuthResults::verdict`] deciding between 250 and 550.

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
pub use results::{AuthResults, DkimCheck, DmarcCheck, SpfCheck, SpfResults};
pub use sign::{SignEntry, SignError, Signed, Signers};
