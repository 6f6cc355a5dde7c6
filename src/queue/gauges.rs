//! The queue's size for the metrics (`tern_queue_messages`), counted when
//! Prometheus asks rather than kept current: a scrape every few seconds is
//! far rarer than the events that change it. Held, corrupt and maildrop
//! messages are files counted in their directories (no file is read).

use std::sync::Arc;

use crate::metrics::{self, QueueState};
use crate::spool::{Spool, SpoolError};

/// Count the queue before each scrape.
pub fn on_scrape(spool: Arc<Spool>) {
    metrics::on_scrape(move || {
        count(QueueState::Hold, spool.list_held().map(|ids| ids.len()));
        count(QueueState::Corrupt, spool.corrupt_count());
        count(QueueState::Maildrop, spool.maildrop_count());
    });
}

/// A directory that cannot be listed keeps its last count; the log says why.
fn count(state: QueueState, n: Result<usize, SpoolError>) {
    match n {
        Ok(n) => metrics::queue_size(state, n),
        Err(e) => log::warn!("metrics: {e}"),
    }
}
