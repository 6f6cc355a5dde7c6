//! Delivery: what happens to one recipient of one queued message. Every
//! attempt ends in an [`outcome::Outcome`], permanent or temporary, which the
//! queue runner records in the spool and turns into retries or bounces.
//!
//! The rooms, lowest first: `dns` and `tls_client` (lookups and TLS
//! streams), `client` (the SMTP client on the wire), `outcome` (the typed
//! result and its catalog), `route` (pure: config and DNS answers to ordered
//! hops), `secure` (the TLS each hop gets: TLSA, MTA-STS and the decision of
//! `tlspolicy`), `transaction` (MAIL, RCPT, DATA on an open connection),
//! `pool` (connections kept between messages), `local` (mailboxes and
//! commands), `lmtp` (handing mail to a mailbox server, RFC 2033), `remote`
//! (the I/O: lookups, connections, the walk over the hops), `router` (which
//! of them a recipient takes), and `verify` (what the router would do, for
//! `sendmail -bv`). Each uses only rooms before it (and `tlspolicy`, which
//! uses only `dns`).

pub mod client;
pub mod dns;
pub mod lmtp;
pub mod local;
pub mod outcome;
pub mod pool;
pub mod remote;
pub mod route;
pub mod router;
pub mod secure;
pub mod tls_client;
pub mod transaction;
pub mod verify;
