//! The queue-runner thread and its delivery pool.
//!
//! One thread owns the schedule: which message is due when, and which are
//! being delivered. It wakes when a session queues a message (a channel, not
//! a polling delay), when a delivery finishes, when the next deferred
//! message falls due, and every `RESCAN` for anything put in the spool from
//! outside. Deliveries run on `delivery_threads` workers, so one slow
//! delivery never holds up the others; a message is only ever in one
//! worker at a time.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use crate::clock;
use crate::config::Config;
use crate::queue::attempt;
use crate::queue::schedule::Schedule;
use crate::spool::{Envelope, QueueId, RcptStatus, Spool};
use crate::tables::Tables;

/// How often the whole spool is listed again, to pick up what arrived by
/// other doors (the sendmail maildrop, a restored backup).
const RESCAN: Duration = Duration::from_secs(60);

/// What the runner and its workers share.
pub struct Shared {
    pub cfg: Arc<Config>,
    pub spool: Arc<Spool>,
    pub tables: Arc<Tables>,
    /// Tell the runner about a message (new, or changed outside the runner).
    pub wake: Sender<QueueId>,
    /// Set when the daemon stops: no new deliveries start.
    pub stopping: Arc<AtomicBool>,
    /// Deliveries in progress.
    pub in_flight: AtomicUsize,
}

/// The running queue runner, as the daemon sees it.
pub struct Handle {
    pub wake: Sender<QueueId>,
    shared: Arc<Shared>,
}

impl Handle {
    /// Deliveries in progress; the daemon waits for these before exiting.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }
}

/// Start the runner thread and its workers; returns the wake-up channel
/// sessions use to announce a queued message.
pub fn start(
    cfg: Arc<Config>,
    spool: Arc<Spool>,
    tables: Arc<Tables>,
    stopping: Arc<AtomicBool>,
) -> io::Result<Handle> {
    let (wake_tx, wake_rx) = crossbeam_channel::unbounded::<QueueId>();
    let shared = Arc::new(Shared {
        cfg,
        spool,
        tables,
        wake: wake_tx.clone(),
        stopping,
        in_flight: AtomicUsize::new(0),
    });
    let threads = shared.cfg.delivery_threads;
    let (job_tx, job_rx) = crossbeam_channel::bounded::<QueueId>(threads);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<QueueId>();
    for i in 0..threads {
        let (shared, job_rx, done_tx) = (Arc::clone(&shared), job_rx.clone(), done_tx.clone());
        thread::Builder::new()
            .name(format!("deliver-{i}"))
            .spawn(move || {
                while let Ok(id) = job_rx.recv() {
                    attempt::run(&shared, &id);
                    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                    if done_tx.send(id).is_err() {
                        break;
                    }
                }
            })?;
    }
    let runner_shared = Arc::clone(&shared);
    thread::Builder::new()
        .name("queue-runner".to_owned())
        .spawn(move || {
            let mut r = Runner::new(runner_shared, threads);
            r.run(&wake_rx, &done_rx, &job_tx);
        })?;
    Ok(Handle {
        wake: wake_tx,
        shared,
    })
}

struct Runner {
    shared: Arc<Shared>,
    threads: usize,
    /// (due time, id), earliest first.
    due: BTreeSet<(u64, QueueId)>,
    when: HashMap<QueueId, u64>,
    busy: HashSet<QueueId>,
    /// Woken while busy: look again as soon as the worker is done.
    again: HashSet<QueueId>,
}

impl Runner {
    fn new(shared: Arc<Shared>, threads: usize) -> Runner {
        Runner {
            shared,
            threads,
            due: BTreeSet::new(),
            when: HashMap::new(),
            busy: HashSet::new(),
            again: HashSet::new(),
        }
    }

    fn run(&mut self, wake: &Receiver<QueueId>, done: &Receiver<QueueId>, jobs: &Sender<QueueId>) {
        self.rescan();
        let mut last_scan = Instant::now();
        loop {
            self.dispatch(jobs);
            let now = clock::now();
            let until_due = match self.due.first() {
                Some((t, _)) => Duration::from_secs(t.saturating_sub(now)),
                None => RESCAN,
            };
            let wait = until_due
                .min(RESCAN.saturating_sub(last_scan.elapsed()))
                .max(Duration::from_millis(50));
            select! {
                recv(wake) -> id => match id {
                    Ok(id) => self.schedule(id, clock::now()),
                    Err(_) => return,
                },
                recv(done) -> id => match id {
                    Ok(id) => self.finished(id),
                    Err(_) => return,
                },
                default(wait) => {}
            }
            if last_scan.elapsed() >= RESCAN {
                self.rescan();
                last_scan = Instant::now();
            }
        }
    }

    /// Hand every due message to a free worker.
    fn dispatch(&mut self, jobs: &Sender<QueueId>) {
        let now = clock::now();
        while self.busy.len() < self.threads && !self.shared.stopping.load(Ordering::SeqCst) {
            let Some((t, id)) = self.due.first().cloned() else {
                break;
            };
            if t > now {
                break;
            }
            self.due.remove(&(t, id.clone()));
            self.when.remove(&id);
            self.busy.insert(id.clone());
            self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
            if jobs.send(id).is_err() {
                return;
            }
        }
    }

    fn schedule(&mut self, id: QueueId, at: u64) {
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

    fn finished(&mut self, id: QueueId) {
        self.busy.remove(&id);
        let again = self.again.remove(&id);
        // Gone (delivered) or moved away by ternctl: nothing more to do.
        if let Ok(env) = self.shared.spool.load(&id) {
            let sched = Schedule::from_config(&self.shared.cfg);
            let t = due_time(&env, &sched);
            self.schedule(id, if again { clock::now() } else { t });
        }
    }

    fn rescan(&mut self) {
        let ids = match self.shared.spool.list() {
            Ok(ids) => ids,
            Err(e) => {
                log::error!("queue scan: {e}");
                return;
            }
        };
        let sched = Schedule::from_config(&self.shared.cfg);
        for id in ids {
            if self.busy.contains(&id) || self.when.contains_key(&id) {
                continue;
            }
            match self.shared.spool.load(&id) {
                Ok(env) => self.schedule(id, due_time(&env, &sched)),
                Err(e) => log::warn!("{id}: {e}"),
            }
        }
    }
}

/// When a message next needs attention: now for pending recipients, the
/// next attempt for deferred ones, and the delay-warning moment if one is
/// still owed. A message whose recipients are all final (left by a crash
/// before its removal) is due at once, so a worker removes it.
pub fn due_time(env: &Envelope, sched: &Schedule) -> u64 {
    let mut t: Option<u64> = None;
    let mut deferred = false;
    for r in &env.recipients {
        let at = match r.status {
            RcptStatus::Pending => 0,
            RcptStatus::Deferred => {
                deferred = true;
                r.next_attempt.unwrap_or(0)
            }
            RcptStatus::Sent | RcptStatus::Failed => continue,
        };
        t = Some(t.map_or(at, |x| x.min(at)));
    }
    if deferred && !env.delay_warned {
        if let Some(d) = sched.delay_warning {
            let warn_at = env.created.saturating_add(d.as_secs());
            t = t.map(|x| x.min(warn_at));
        }
    }
    t.unwrap_or(0)
}
