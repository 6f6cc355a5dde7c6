//! The queue's size for the metrics (`tern_queue_messages`), counted when
//! Prometheus asks rather than kept current: a scrape every few seconds is
//! far rarer than the events that change it, and a count taken from the
//! spool's directories cannot drift from what is on disk. No file is read:
//! queued, held, corrupt and maildrop messages are names in their
//! directories, and a queued message's age is in its id. Which queued
//! messages wait for a retry only the queue runner knows; it is asked.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{self, QueueState};
use crate::spool::{QueueId, Spool, SpoolError};

/// The ids the queue runner holds back until a later retry, sorted; None
/// when it could not say in time (the counts keep their last values).
pub type Waiting = Box<dyn Fn() -> Option<Vec<QueueId>> + Send>;

/// How long a scrape waits for the runner's answer: it is busy for longer
/// only while it lists a large spool (start-up, the minutely rescan).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Count the queue before each scrape.
pub fn on_scrape(spool: Arc<Spool>, waiting: Waiting) {
    metrics::on_scrape(move || {
        count(QueueState::Hold, spool.list_held().map(|ids| ids.len()));
        count(QueueState::Corrupt, spool.corrupt_count());
        count(QueueState::Maildrop, spool.maildrop_count());
        match spool.list() {
            Ok(queued) => {
                if let Some(deferred) = waiting() {
                    let (active, deferred) = split(&queued, &deferred);
                    metrics::queue_size(QueueState::Active, active);
                    metrics::queue_size(QueueState::Deferred, deferred);
                }
                metrics::oldest_message(queued.first().map(QueueId::age));
            }
            Err(e) => log::warn!("metrics: {e}"),
        }
    });
}

/// (active, deferred) of the queued ids: deferred are those the runner holds
/// back (both lists sorted); the rest are due, in delivery, or not yet seen
/// by the runner (just arrived).
fn split(queued: &[QueueId], waiting: &[QueueId]) -> (usize, usize) {
    let deferred = waiting
        .iter()
        .filter(|id| queued.binary_search(id).is_ok())
        .count();
    (queued.len().saturating_sub(deferred), deferred)
}

/// A directory that cannot be listed keeps its last count; the log says why.
fn count(state: QueueState, n: Result<usize, SpoolError>) {
    match n {
        Ok(n) => metrics::queue_size(state, n),
        Err(e) => log::warn!("metrics: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_are_the_waiting_ones_still_queued() {
        let id = |s: &str| QueueId::parse(s).unwrap();
        let queued = [
            id("0000000000000001"),
            id("0000000000000002"),
            id("0000000000000003"),
        ];
        // ...2 waits; ...9 waited but was deleted or held since.
        let waiting = [id("0000000000000002"), id("0000000000000009")];
        assert_eq!(split(&queued, &waiting), (2, 1));
        assert_eq!(split(&queued, &[]), (3, 0));
        assert_eq!(split(&[], &waiting), (0, 0));
    }
}
