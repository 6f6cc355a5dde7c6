//! tern: a traditional Unix mail transfer agent.
//!
//! Data flows one way: socket → `server` (session) → `spool` → queue runner →
//! delivery. `smtp` is the protocol vocabulary with no I/O; `spool` is the only
//! code that writes the queue; `sys` holds the only `unsafe`.
#![deny(unsafe_code)]
#![warn(rust_2018_idioms, unreachable_pub)]
// No panic reachable from the network (or from a spool file, a config file or a
// remote server's reply): library code returns errors instead of unwrapping,
// indexing or slicing past an end, or panicking. `make clippy` (and so `make
// check` and CI) enforces it. Tests may still unwrap and index: a panic there
// is a failed test, not a dead session.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::string_slice,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod aliases;
pub mod clock;
pub mod config;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod deliver;
pub mod dsn;
pub mod endpoint;
pub mod logging;
pub mod mailauth;
pub mod maillog;
pub mod message;
pub mod metrics;
pub mod milter;
pub mod pipeline;
pub mod policy_service;
pub mod queue;
pub mod sendmail;
pub mod server;
pub mod smtp;
pub mod spool;
pub mod sys;
pub mod sysexits;
pub mod tables;
#[cfg(test)]
pub(crate) mod testnet;
#[cfg(test)]
pub(crate) mod testskip;
pub mod tls;
pub mod tlspolicy;
