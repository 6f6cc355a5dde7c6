//! The queue runner: finds due messages in the spool, hands them to a pool
//! of delivery threads, records each recipient's outcome, retries with
//! backoff, and sends delivery status notifications.
//!
//! Lowest first: `schedule` (retry, expiry and due-time arithmetic),
//! `shared` (what the runner and its workers share), `notify` (the DSNs),
//! `reports` (the daily TLS reports, RFC 8460), `attempt` (one delivery run
//! over one message), `agenda` (the runner's bookkeeping), `runner` (the
//! thread, its workers and its wake-ups), `gauges` (the queue's size for
//! the metrics, from the spool and the runner). Each calls only those
//! before it.

mod agenda;
mod attempt;
pub mod gauges;
mod notify;
mod reports;
pub mod runner;
pub mod schedule;
mod shared;
