//! The queue runner: finds due messages in the spool, hands them to a pool
//! of delivery threads, records each recipient's outcome, retries with
//! backoff, and sends delivery status notifications.

pub mod attempt;
pub mod gauges;
pub mod notify;
pub mod runner;
pub mod schedule;
