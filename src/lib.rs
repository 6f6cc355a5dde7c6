//! tern: a traditional Unix mail transfer agent.
//!
//! Data flows one way: socket → `server` (session) → `spool` → queue runner →
//! delivery. `smtp` is the protocol vocabulary with no I/O; `spool` is the only
//! code that writes the queue; `sys` holds the only `unsafe`.
#![deny(unsafe_code)]
#![warn(rust_2018_idioms, unreachable_pub)]

pub mod aliases;
pub mod clock;
pub mod config;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod deliver;
pub mod dsn;
pub mod logging;
pub mod maillog;
pub mod queue;
pub mod sendmail;
pub mod server;
pub mod smtp;
pub mod spool;
pub mod sys;
pub mod tables;
pub mod tls;
