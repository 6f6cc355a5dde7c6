//! Delivery: what happens to one recipient of one queued message. Every
//! attempt ends in an [`outcome::Outcome`], permanent or temporary, which the
//! queue runner records in the spool and turns into retries or bounces.
//!
//! The rooms, lowest first: `outcome` (the typed result and its catalog),
//! `dns` and `tls_client` (lookups and TLS streams), `client` (the SMTP client
//! on the wire), `route` (pure: config and DNS answers to ordered hops),
//! `local` (mailboxes and commands), `remote` (the walk over the hops and
//! the transaction), and `router` (which of the two a recipient takes).

pub mod client;
pub mod dns;
pub mod local;
pub mod outcome;
pub mod pool;
pub mod remote;
pub mod route;
pub mod router;
pub mod tls_client;
pub mod transaction;
