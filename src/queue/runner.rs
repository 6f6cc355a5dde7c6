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
use crate::config::Live;
use crate::deliver::dns::{self, Resolver};
use crate::deliver::pool;
use crate::queue::attempt;
use crate::queue::attempt::After;
use crate::queue::schedule::Schedule;
use crate::spool::{Envelope, QueueId, RcptStatus, Retired, Spool};
use crate::tables::Tables;

/// How often the whole spool is listed again, to pick up what arrived by
/// other doors (the sendmail maildrop, a restored backup).
const RESCAN: Duration = Duration::from_secs(60);
/// How often the bodies of delivered messages are looked at (spool::retire).
const REAP: Duration = Duration::from_secs(1);

/// Orders from outside the daemon, through the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Queue what waits in the maildrop now (sendmail just dropped a message).
    Pickup,
    /// Try every deferred recipient now, whatever its next-attempt time (`ternctl flush`).
    Flush,
    /// Look at this message now (`ternctl release`, a `sendmail -bs` submission).
    Wake(QueueId),
}

/// The ways into a running queue runner.
#[derive(Clone)]
pub struct Handle {
    /// Sessions announce each queued message here.
    pub wake: Sender<QueueId>,
    /// The control socket's orders.
    pub control: Sender<Control>,
    shared: Arc<Shared>,
}

/// A job for a worker: the message, and whether to try deferred recipients before
/// their time (a flush).
type Job = (QueueId, bool);

/// What the runner and its workers share.
pub struct Shared {
    /// Swapped by a reload; each attempt takes the current one.
    pub cfg: Live<Config>,
    pub spool: Arc<Spool>,
    pub tables: Live<Tables>,
    /// Tell the runner about a message (new, or changed outside the runner).
    pub wake: Sender<QueueId>,
    /// DNS for remote delivery.
    pub resolver: Arc<dyn Resolver>,
    /// Connections kept between remote deliveries, and per-destination limits.
    pub pool: pool::Pool,
    /// Set when the daemon stops: no new deliveries start.
    pub stopping: Arc<AtomicBool>,
    /// Deliveries in progress.
    pub in_flight: AtomicUsize,
    /// Delivered messages whose bodies wait for one fsync for many (spool::retire).
    pub retired: Retired,
}

impl Handle {
    /// A reload: attempts that start from now on use `cfg` and `tables`.
    pub fn reconfigure(&self, cfg: Arc<Config>, tables: Arc<Tables>) {
        self.shared.cfg.set(cfg);
        self.shared.tables.set(tables);
    }

    /// Deliveries in progress; the daemon waits for these before exiting.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }
}

/// Start the runner thread and its workers; returns the wake-up channel
/// sessions use to announce a queued message, and the control channel.
/// With `queue_only` no worker runs: the runner still picks up the maildrop
/// (that is accepting mail, not delivering it) but dispatches nothing.
pub fn start(
    cfg: Arc<Config>,
    spool: Arc<Spool>,
    tables: Arc<Tables>,
    stopping: Arc<AtomicBool>,
) -> io::Result<Handle> {
    let (wake_tx, wake_rx) = crossbeam_channel::unbounded::<QueueId>();
    // Without a usable resolver (no resolv.conf), remote mail waits rather
    // than bounces, and the log says why.
    let resolver: Arc<dyn Resolver> = match dns::Hickory::new(&cfg.remote.dns_servers, cfg.remote.dns_timeout)
    {
        Ok(r) => Arc::new(r),
        Err(e) => {
            log::error!("DNS resolver unavailable: {e}");
            Arc::new(dns::Broken(e.to_string()))
        }
    };
    let (control_tx, control_rx) = crossbeam_channel::unbounded::<Control>();
    let shared = Arc::new(Shared {
        cfg: Live::new(cfg),
        spool,
        tables: Live::new(tables),
        wake: wake_tx.clone(),
        resolver,
        pool: pool::Pool::new(),
        stopping,
        in_flight: AtomicUsize::new(0),
        retired: Retired::new(),
    });
    // Close cached connections once they have been idle long enough.
    if let Some(max_age) = shared.cfg.get().remote.connection_cache_time {
        let shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("conn-cache".to_owned())
            .spawn(move || loop {
                thread::sleep(Duration::from_millis(500));
                shared.pool.purge(max_age);
            })?;
    }
    let threads = if shared.cfg.get().queue.only {
        0
    } else {
        shared.cfg.get().queue.delivery_threads
    };
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(threads.max(1));
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<(QueueId, After)>();
    for i in 0..threads {
        let (shared, job_rx, done_tx) = (Arc::clone(&shared), job_rx.clone(), done_tx.clone());
        thread::Builder::new()
            .name(format!("deliver-{i}"))
            .spawn(move || {
                while let Ok((id, force)) = job_rx.recv() {
                    let after = attempt::run(&shared, &id, force);
                    // The last delivery of a burst frees the space of the delivered
                    // at once; under load, bodies go in batches (spool::retire).
                    if shared.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                        if let Err(e) = shared.spool.reap(&shared.retired) {
                            log::error!("removing delivered messages: {e}");
                        }
                    }
                    if done_tx.send((id, after)).is_err() {
                        break;
                    }
                }
            })?;
    }
    let runner_shared = Arc::clone(&shared);
    thread::Builder::new()
        .name("queue-runner".to_owned())
        .spawn(move || {
            // Kept so that `done` stays connected even with no worker (queue_only).
            let _done_tx = done_tx;
            let mut r = Runner::new(runner_shared, threads);
            r.run(&wake_rx, &control_rx, &done_rx, &job_tx);
        })?;
    Ok(Handle {
        wake: wake_tx,
        control: control_tx,
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
    /// Flushed: the next run tries deferred recipients before their time.
    forced: HashSet<QueueId>,
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
            forced: HashSet::new(),
        }
    }

    fn run(
        &mut self,
        wake: &Receiver<QueueId>,
        control: &Receiver<Control>,
        done: &Receiver<(QueueId, After)>,
        jobs: &Sender<Job>,
    ) {
        // Mail dropped while the daemon was down goes out at start-up.
        self.pickup();
        self.rescan();
        log::info!("queue: {} messages scheduled", self.when.len() + self.busy.len());
        let mut last_scan = Instant::now();
        loop {
            self.dispatch(jobs);
            let now = clock::now();
            let until_due = match self.due.first() {
                Some((t, _)) => Duration::from_secs(t.saturating_sub(now)),
                None => RESCAN,
            };
            let mut wait = until_due.min(RESCAN.saturating_sub(last_scan.elapsed()));
            if !self.shared.retired.is_empty() {
                wait = wait.min(REAP);
            }
            let wait = wait.max(Duration::from_millis(50));
            select! {
                recv(wake) -> id => match id {
                    Ok(id) => self.schedule(id, clock::now()),
                    Err(_) => return,
                },
                recv(control) -> c => match c {
                    Ok(c) => self.control(c),
                    Err(_) => return,
                },
                recv(done) -> d => match d {
                    Ok((id, after)) => self.finished(id, after),
                    Err(_) => return,
                },
                default(wait) => {}
            }
            if let Err(e) = self.shared.spool.reap_due(&self.shared.retired) {
                log::error!("removing delivered messages: {e}");
            }
            if last_scan.elapsed() >= RESCAN {
                self.pickup();
                self.rescan();
                last_scan = Instant::now();
            }
        }
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::Pickup => self.pickup(),
            Control::Wake(id) => self.schedule(id, clock::now()),
            Control::Flush => {
                log::info!("flush: trying all deferred mail now");
                self.rescan();
                let now = clock::now();
                let ids: Vec<QueueId> = self.when.keys().chain(self.busy.iter()).cloned().collect();
                for id in ids {
                    self.forced.insert(id.clone());
                    if let Some(old) = self.when.remove(&id) {
                        self.due.remove(&(old, id.clone()));
                    }
                    self.schedule(id, now);
                }
            }
        }
    }

    /// Queue what waits in the maildrop, and schedule it at once.
    fn pickup(&mut self) {
        let host = self.shared.cfg.get().hostname.clone();
        let received = move |id: &QueueId, uid: u32| received_header(&host, id, uid);
        match self.shared.spool.pickup(&received) {
            Ok(ids) => {
                let now = clock::now();
                for id in ids {
                    self.schedule(id, now);
                }
            }
            Err(e) => log::error!("maildrop pickup: {e}"),
        }
    }

    /// Hand every due message to a free worker.
    fn dispatch(&mut self, jobs: &Sender<Job>) {
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
            let force = self.forced.remove(&id);
            if jobs.send((id, force)).is_err() {
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

    fn finished(&mut self, id: QueueId, after: After) {
        self.busy.remove(&id);
        let again = self.again.remove(&id);
        match after {
            // Woken meanwhile (a release?): the spool tells.
            After::Gone if again => {}
            After::Gone => return,
            After::At(t) => {
                self.schedule(id, if again { clock::now() } else { t });
                return;
            }
            After::Reload => {}
        }
        // Gone (delivered) or moved away by ternctl: nothing more to do.
        if let Ok(env) = self.shared.spool.load(&id) {
            let sched = Schedule::from_config(&self.shared.cfg.get());
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
        let sched = Schedule::from_config(&self.shared.cfg.get());
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

/// RFC 5321 section 4.4 trace field for a locally submitted message, in
/// Postfix's form: there is no "from" clause (no SMTP client), and the real uid
/// of the submitting user stands in a comment, so a forged sender address can
/// still be traced to its account. LF line ends, as the spool stores them.
pub fn received_header(host: &str, id: &QueueId, uid: u32) -> String {
    format!(
        "Received: by {host} (tern, from userid {uid})\n\tid {id}; {}\n",
        clock::rfc5322(clock::now())
    )
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
