//! The queue runner's agenda: which message is due when, which are being
//! delivered, and what a wake-up, a flush, a rescan or a finished attempt
//! changes. Pure bookkeeping: the runner (runner.rs) does the waiting, the
//! spool reads and the hand-off to workers, and asks this what to do.
//!
//! A message is in at most one of two places: scheduled (`when`/`due`) or
//! busy (with a worker). A wake-up for a busy message is remembered and acted
//! on as soon as its worker is done, so a release or a new reason to look
//! is never lost to a delivery in progress.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use crate::queue::attempt::After;
use crate::spool::QueueId;

/// How often the whole spool is listed again, to pick up what arrived by
/// other doors (the sendmail maildrop, a restored backup).
pub(super) const RESCAN: Duration = Duration::from_secs(60);
/// How often the bodies of delivered messages are looked at (spool::retire).
pub(super) const REAP: Duration = Duration::from_secs(1);
/// The shortest sleep of the runner's loop.
const MIN_WAIT: Duration = Duration::from_millis(50);

/// A job for a worker: the message, and whether to try deferred recipients
/// before their time (a flush).
pub(super) type Job = (QueueId, bool);

#[derive(Debug, Default)]
pub(super) struct Agenda {
    /// (due time, id), earliest first.
    due: BTreeSet<(u64, QueueId)>,
    when: HashMap<QueueId, u64>,
    busy: HashSet<QueueId>,
    /// Woken while busy: look again as soon as the worker is done.
    again: HashSet<QueueId>,
    /// Flushed: the next run tries deferred recipients before their time.
    forced: HashSet<QueueId>,
}

impl Agenda {
    /// Messages known: scheduled or with a worker.
    pub(super) fn len(&self) -> usize {
        self.when.len() + self.busy.len()
    }

    /// Whether `id` is scheduled or with a worker.
    pub(super) fn knows(&self, id: &QueueId) -> bool {
        self.busy.contains(id) || self.when.contains_key(id)
    }

    /// Look at `id` at `at` (seconds since the epoch), or earlier if it is
    /// already due earlier; if a worker has it, once the worker is done.
    pub(super) fn schedule(&mut self, id: QueueId, at: u64) {
        if self.busy.contains(&id) {
            self.again.insert(id);
            return;
        }
        if let Some(old) = self.when.get(&id).copied() {
            if old <= at {
                return;
            }
            self.due.remove(&(old, id.clone()));
        }
        self.when.insert(id.clone(), at);
        self.due.insert((at, id));
    }

    /// The next message due by `now` for a worker, when fewer than `threads`
    /// are busy; it is busy from now on.
    pub(super) fn next_job(&mut self, now: u64, threads: usize) -> Option<Job> {
        if self.busy.len() >= threads {
            return None;
        }
        let (t, id) = self.due.first().cloned()?;
        if t > now {
            return None;
        }
        self.due.remove(&(t, id.clone()));
        self.when.remove(&id);
        self.busy.insert(id.clone());
        let force = self.forced.remove(&id);
        Some((id, force))
    }

    /// A worker finished `id` with `after`. Returns None when nothing more is
    /// to be done, or Some(now) when the spool must tell when it is due next:
    /// the caller then schedules it at `due(id)`, or at once if it was woken
    /// meanwhile.
    pub(super) fn finished(&mut self, id: &QueueId, after: After, now: u64) -> Option<Reread> {
        self.busy.remove(id);
        let again = self.again.remove(id);
        match after {
            // Woken meanwhile (a release?): the spool tells.
            After::Gone if again => Some(Reread { again }),
            After::Gone => None,
            After::At(t) => {
                self.schedule(id.clone(), if again { now } else { t });
                None
            }
            After::Reload => Some(Reread { again }),
        }
    }

    /// `ternctl flush`: every known message now, deferred recipients included.
    /// Returns them, in id order.
    pub(super) fn flush(&mut self, now: u64) -> Vec<QueueId> {
        let mut ids: Vec<QueueId> = self.when.keys().chain(self.busy.iter()).cloned().collect();
        ids.sort();
        for id in &ids {
            self.forced.insert(id.clone());
            if let Some(old) = self.when.remove(id) {
                self.due.remove(&(old, id.clone()));
            }
            self.schedule(id.clone(), now);
        }
        ids
    }

    /// How long the runner may sleep: until the next message is due, the
    /// next rescan (`since_scan` after the last one), or the next reaping of
    /// delivered bodies when some wait; never less than a moment.
    pub(super) fn wait(&self, now: u64, since_scan: Duration, reap_pending: bool) -> Duration {
        let until_due = match self.due.first() {
            Some((t, _)) => Duration::from_secs(t.saturating_sub(now)),
            None => RESCAN,
        };
        let mut wait = until_due.min(RESCAN.saturating_sub(since_scan));
        if reap_pending {
            wait = wait.min(REAP);
        }
        wait.max(MIN_WAIT)
    }

    /// The messages held back until after `now` (their next retry), sorted
    /// by id: the queue's deferred part, for the metrics.
    pub(super) fn waiting(&self, now: u64) -> Vec<QueueId> {
        let mut ids: Vec<QueueId> = self
            .due
            .iter()
            .rev()
            .take_while(|(t, _)| *t > now)
            .map(|(_, id)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// When `id` is next due, if scheduled.
    #[cfg(test)]
    fn due_at(&self, id: &QueueId) -> Option<u64> {
        self.when.get(id).copied()
    }
}

/// A finished message whose next time only the spool knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reread {
    /// It was woken during the attempt: due at once, whatever the spool says.
    pub(super) again: bool,
}

impl Reread {
    /// The time to schedule at, given the one the envelope says.
    pub(super) fn at(self, due: u64, now: u64) -> u64 {
        if self.again {
            now
        } else {
            due
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<QueueId> {
        let mut v: Vec<QueueId> = (0..n).map(|_| QueueId::generate()).collect();
        v.sort();
        v
    }

    fn drain(a: &mut Agenda, now: u64, threads: usize) -> Vec<Job> {
        std::iter::from_fn(|| a.next_job(now, threads)).collect()
    }

    #[test]
    fn waiting_are_the_scheduled_after_now_in_id_order() {
        let mut a = Agenda::default();
        let [w, x, y, z] = <[QueueId; 4]>::try_from(ids(4)).unwrap();
        a.schedule(w.clone(), 50);
        a.schedule(x.clone(), 10);
        a.schedule(y.clone(), 40);
        a.schedule(z.clone(), 20);
        assert_eq!(a.waiting(20), vec![w.clone(), y.clone()]);
        assert_eq!(a.waiting(0), vec![w.clone(), x.clone(), y.clone(), z]);
        // With a worker, or due: not waiting.
        assert_eq!(drain(&mut a, 10, 1), vec![(x, false)]);
        assert_eq!(a.waiting(45), vec![w]);
        assert!(a.waiting(100).is_empty());
    }

    #[test]
    fn due_messages_go_out_earliest_first_up_to_the_thread_count() {
        let mut a = Agenda::default();
        let [x, y, z] = <[QueueId; 3]>::try_from(ids(3)).unwrap();
        a.schedule(x.clone(), 30);
        a.schedule(y.clone(), 10);
        a.schedule(z.clone(), 20);
        // Nothing due yet.
        assert_eq!(a.next_job(5, 4), None);
        // Two due, but only one thread.
        assert_eq!(drain(&mut a, 25, 1), vec![(y.clone(), false)]);
        // The worker is busy: nothing more until it finishes.
        assert_eq!(a.next_job(100, 1), None);
        assert_eq!(a.finished(&y, After::Gone, 25), None);
        assert_eq!(drain(&mut a, 100, 2), vec![(z, false), (x, false)]);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn an_earlier_time_wins_a_later_one_is_ignored() {
        let mut a = Agenda::default();
        let x = QueueId::generate();
        a.schedule(x.clone(), 100);
        a.schedule(x.clone(), 200);
        assert_eq!(a.due_at(&x), Some(100));
        a.schedule(x.clone(), 50);
        assert_eq!(a.due_at(&x), Some(50));
        assert_eq!(a.len(), 1);
        assert_eq!(drain(&mut a, 50, 4).len(), 1, "one entry, not two");
    }

    #[test]
    fn a_wake_up_during_delivery_is_acted_on_when_it_ends() {
        let mut a = Agenda::default();
        let x = QueueId::generate();
        a.schedule(x.clone(), 0);
        assert!(a.next_job(0, 1).is_some());
        // A session or ternctl wakes it while a worker has it.
        a.schedule(x.clone(), 10);
        assert!(a.knows(&x));
        assert_eq!(a.due_at(&x), None, "not scheduled twice");
        // The attempt says "in an hour"; the wake-up says now.
        assert_eq!(a.finished(&x, After::At(3600), 10), None);
        assert_eq!(a.due_at(&x), Some(10));
        // Without a wake-up, the attempt's time stands.
        assert!(a.next_job(10, 1).is_some());
        assert_eq!(a.finished(&x, After::At(3600), 11), None);
        assert_eq!(a.due_at(&x), Some(3600));
    }

    #[test]
    fn finished_messages_are_forgotten_or_reread() {
        let mut a = Agenda::default();
        let x = QueueId::generate();
        a.schedule(x.clone(), 0);
        a.next_job(0, 1);
        // Delivered (or deleted meanwhile): forgotten.
        assert_eq!(a.finished(&x, After::Gone, 5), None);
        assert!(!a.knows(&x));
        // Woken while busy, then gone: only the spool can say (a release?).
        a.schedule(x.clone(), 0);
        a.next_job(0, 1);
        a.schedule(x.clone(), 0);
        assert_eq!(a.finished(&x, After::Gone, 5), Some(Reread { again: true }));
        // State not written: the spool says when.
        a.schedule(x.clone(), 0);
        a.next_job(0, 1);
        let r = a.finished(&x, After::Reload, 5).expect("reread");
        assert_eq!(r, Reread { again: false });
        assert_eq!(r.at(900, 5), 900);
        assert_eq!(Reread { again: true }.at(900, 5), 5);
    }

    #[test]
    fn flush_makes_everything_due_and_forced_once() {
        let mut a = Agenda::default();
        let [x, y] = <[QueueId; 2]>::try_from(ids(2)).unwrap();
        a.schedule(x.clone(), 5000);
        a.schedule(y.clone(), 0);
        assert_eq!(a.next_job(0, 2), Some((y.clone(), false)));
        let mut both = vec![x.clone(), y.clone()];
        both.sort();
        assert_eq!(a.flush(100), both);
        // The scheduled one is due now and forced; the busy one is woken.
        assert_eq!(a.next_job(100, 2), Some((x.clone(), true)));
        assert_eq!(a.finished(&y, After::At(9000), 100), None);
        assert_eq!(a.due_at(&y), Some(100));
        assert_eq!(a.next_job(100, 2), Some((y, true)));
        // Forced only for the run after the flush.
        assert_eq!(a.finished(&x, After::At(200), 100), None);
        assert_eq!(a.next_job(200, 2), Some((x, false)));
    }

    #[test]
    fn the_runner_sleeps_until_the_next_event() {
        let mut a = Agenda::default();
        let none = Duration::ZERO;
        // Nothing scheduled: until the rescan.
        assert_eq!(a.wait(1000, none, false), RESCAN);
        assert_eq!(
            a.wait(1000, Duration::from_secs(45), false),
            Duration::from_secs(15)
        );
        a.schedule(QueueId::generate(), 1010);
        assert_eq!(a.wait(1000, none, false), Duration::from_secs(10));
        // Bodies to reap: at least once a second.
        assert_eq!(a.wait(1000, none, true), REAP);
        // Due already, or the rescan overdue: a short pause, never a spin.
        assert_eq!(a.wait(2000, none, false), MIN_WAIT);
        assert_eq!(a.wait(0, Duration::from_secs(61), false), MIN_WAIT);
    }
}
