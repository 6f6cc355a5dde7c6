//! The queue-runner thread and its delivery pool.
//!
//! One thread owns the schedule: which message is due when, and which are
//! being delivered. It wakes when a session queues a message (a channel, not
//! a polling delay), when a delivery finishes, when the next deferred
//! message falls due, and every `RESCAN` for anything put in the spool from
//! outside. Deliveries run on `delivery_threads` workers, so one slow
//! delivery never holds up the others; a message is only ever in one
//! worker at a time.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use crate::clock;
use crate::config::{Config, Live, TrustAd};
use crate::deliver::dns::{self, Resolver};
use crate::deliver::pool::Pool;
use crate::maillog;
use crate::pipeline::{self, MailAuth};
use crate::queue::agenda::{Agenda, Job, RESCAN};
use crate::queue::attempt::{self, After};
use crate::queue::notify;
use crate::queue::reports;
use crate::queue::schedule::Schedule;
use crate::queue::shared::Shared;
use crate::spool::maildrop::Pickup;
use crate::spool::{Envelope, QueueId, Retired, Spool};
use crate::tables::Tables;
use crate::tlspolicy::outbound::{Outbound, Resolvers, PROBE_INTERVAL};

/// Orders from outside the daemon, through the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Queue what waits in the maildrop now (sendmail just dropped a message).
    Pickup,
    /// Try every deferred recipient now, whatever its next-attempt time (`ternctl flush`).
    Flush,
    /// Look at this message now (`ternctl release`, a `sendmail -bs` submission).
    Wake(QueueId),
    /// Send the TLS reports (RFC 8460) due now (`ternctl tlsrpt send`).
    TlsRpt,
}

/// The ways into a running queue runner.
#[derive(Clone)]
pub struct Handle {
    /// Sessions announce each queued message here.
    pub wake: Sender<QueueId>,
    /// The control socket's orders.
    pub control: Sender<Control>,
    /// Questions for the runner thread: which messages wait for a retry.
    asks: Sender<Sender<Vec<QueueId>>>,
    shared: Arc<Shared>,
}

impl Handle {
    /// A reload: attempts (and pickups) that start from now on use `cfg`,
    /// `tables` and `mailauth`.
    pub fn reconfigure(&self, cfg: Arc<Config>, tables: Arc<Tables>, mailauth: Arc<MailAuth>) {
        self.shared.cfg.set(cfg);
        self.shared.tables.set(tables);
        self.shared.mailauth.set(mailauth);
    }

    /// Deliveries in progress; the daemon waits for these before exiting.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The queued messages held back until a later retry, sorted; only the
    /// runner thread knows, so it is asked. None when it does not answer
    /// within `timeout` (busy listing a large spool).
    pub fn waiting(&self, timeout: Duration) -> Option<Vec<QueueId>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.asks.send(tx).ok()?;
        rx.recv_timeout(timeout).ok()
    }
}

/// Start the runner thread and its workers; returns the wake-up channel
/// sessions use to announce a queued message, and the control channel.
/// With `queue_only` no worker runs: the runner still picks up the maildrop
/// (that is accepting mail, not delivering it) but dispatches nothing.
/// `mailauth` signs what it picks up and what tern sends itself.
pub fn start(
    cfg: Arc<Config>,
    spool: Arc<Spool>,
    tables: Arc<Tables>,
    mailauth: Arc<MailAuth>,
    stopping: Arc<AtomicBool>,
) -> io::Result<Handle> {
    let (wake_tx, wake_rx) = crossbeam_channel::unbounded::<QueueId>();
    let (resolver, resolvers) = resolver(&cfg);
    let outbound = Arc::new(Outbound::new(&cfg.spool.dir, Arc::clone(&resolver), resolvers));
    let (control_tx, control_rx) = crossbeam_channel::unbounded::<Control>();
    let (asks_tx, asks_rx) = crossbeam_channel::unbounded::<Sender<Vec<QueueId>>>();
    let shared = Arc::new(Shared {
        cfg: Live::new(cfg),
        spool,
        tables: Live::new(tables),
        mailauth: Live::new(mailauth),
        wake: wake_tx.clone(),
        resolver,
        outbound,
        pool: Arc::new(Pool::new()),
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
    // RFC 7672 needs validated DNS: ask the resolvers now and hourly
    // whether they validate (the log says when that changes).
    {
        let shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("dnssec-probe".to_owned())
            .spawn(move || loop {
                shared.outbound.probe();
                thread::sleep(PROBE_INTERVAL);
            })?;
    }
    let tlsrpt_tx = start_reports(&shared)?;
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
                            maillog::reap_failed(&e);
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
            let mut r = Runner::new(runner_shared, threads, tlsrpt_tx);
            r.run(&wake_rx, &control_rx, &asks_rx, &done_rx, &job_tx);
        })?;
    Ok(Handle {
        wake: wake_tx,
        control: control_tx,
        asks: asks_tx,
        shared,
    })
}

/// The resolver delivery uses, and whether its AD bit is believed
/// (`dnssec_trust_ad`: by default only when every resolver is on loopback,
/// a local validator such as unbound, since the path to any other can be
/// tampered with). Without a usable resolver (no resolv.conf), remote mail
/// waits rather than bounces, and the log says why.
fn resolver(cfg: &Config) -> (Arc<dyn Resolver>, Resolvers) {
    match dns::Hickory::new(&cfg.remote.dns_servers, cfg.remote.dns_timeout) {
        Ok(r) => {
            let servers = r.servers().to_vec();
            let trusted = match cfg.outbound.dnssec_trust_ad {
                TrustAd::Yes => !servers.is_empty(),
                TrustAd::No => false,
                TrustAd::Auto => !servers.is_empty() && servers.iter().all(|s| s.ip().is_loopback()),
            };
            (Arc::new(r.trust_ad(trusted)), Resolvers { servers, trusted })
        }
        Err(e) => {
            maillog::resolver_unavailable(&e);
            let r = Resolvers {
                servers: Vec::new(),
                trusted: false,
            };
            (Arc::new(dns::Broken(e.to_string())), r)
        }
    }
}

/// The thread that sends the daily TLS reports (`reports`): after 00:00
/// UTC, a while after start-up, and when told through the returned channel.
fn start_reports(shared: &Arc<Shared>) -> io::Result<Sender<()>> {
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    let shared = Arc::clone(shared);
    // Differs per host (RFC 8460 4.1: spread the reports over time).
    let jitter = shared
        .cfg
        .get()
        .hostname
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    thread::Builder::new().name("tlsrpt".to_owned()).spawn(move || {
        let mut wait = reports::FIRST_RUN;
        loop {
            match rx.recv_timeout(wait) {
                Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
            let cfg = shared.cfg.get();
            let signers = &shared.mailauth.get().signers;
            for id in reports::send_due(&cfg, &shared.spool, &shared.outbound, signers, clock::now()) {
                shared.announce(id);
            }
            wait = reports::until_next_run(clock::now(), jitter);
        }
    })?;
    Ok(tx)
}

/// The runner thread's state: the agenda, and the way to the spool.
struct Runner {
    shared: Arc<Shared>,
    threads: usize,
    agenda: Agenda,
    /// Wakes the TLS report thread (`ternctl tlsrpt send`).
    tlsrpt: Sender<()>,
}

impl Runner {
    fn new(shared: Arc<Shared>, threads: usize, tlsrpt: Sender<()>) -> Runner {
        Runner {
            shared,
            threads,
            agenda: Agenda::default(),
            tlsrpt,
        }
    }

    fn run(
        &mut self,
        wake: &Receiver<QueueId>,
        control: &Receiver<Control>,
        asks: &Receiver<Sender<Vec<QueueId>>>,
        done: &Receiver<(QueueId, After)>,
        jobs: &Sender<Job>,
    ) {
        // Mail dropped while the daemon was down goes out at start-up.
        self.pickup();
        self.rescan();
        maillog::queue_scheduled(self.agenda.len());
        let mut last_scan = Instant::now();
        loop {
            self.dispatch(jobs);
            let wait = self
                .agenda
                .wait(clock::now(), last_scan.elapsed(), !self.shared.retired.is_empty());
            select! {
                recv(wake) -> id => match id {
                    Ok(id) => self.agenda.schedule(id, clock::now()),
                    Err(_) => return,
                },
                recv(control) -> c => match c {
                    Ok(c) => self.control(c),
                    Err(_) => return,
                },
                recv(done) -> d => match d {
                    Ok((id, after)) => self.finished(&id, after),
                    Err(_) => return,
                },
                recv(asks) -> a => if let Ok(answer) = a {
                    // The asker may have given up waiting: nothing to do then.
                    let _ = answer.send(self.agenda.waiting(clock::now()));
                },
                default(wait) => {}
            }
            if let Err(e) = self.shared.spool.reap_due(&self.shared.retired) {
                maillog::reap_failed(&e);
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
            Control::Wake(id) => self.agenda.schedule(id, clock::now()),
            Control::Flush => {
                maillog::flush();
                self.rescan();
                for id in self.agenda.flush(clock::now()) {
                    maillog::flushed(&id);
                }
            }
            Control::TlsRpt => {
                let _ = self.tlsrpt.send(());
            }
        }
    }

    /// Queue what waits in the maildrop, and schedule it at once. Each
    /// message goes through the message path's stages again here, in the
    /// daemon (crate::pipeline): what the sendmail program, running as its
    /// user, could not do (it holds no keys, talks to no milter) belongs here.
    fn pickup(&mut self) {
        let cfg = self.shared.cfg.get();
        let shared = &self.shared;
        let mailauth = shared.mailauth.get();
        let write = |id: &QueueId,
                     uid: u32,
                     env: &mut Envelope,
                     message: &mut dyn std::io::Read,
                     out: &mut crate::spool::Incoming| {
            let received = received_value(&cfg.hostname, id, uid);
            let fate = pipeline::picked_up(&cfg, &mailauth, &shared.spool, &received, env, message, out)?;
            Ok(picked_up_fate(shared, &cfg, id, env, fate))
        };
        match self.shared.spool.pickup_with(&write) {
            Ok(ids) => {
                let now = clock::now();
                for id in ids {
                    self.agenda.schedule(id, now);
                }
            }
            Err(e) => maillog::pickup_failed(&e),
        }
    }

    /// Hand every due message to a free worker.
    fn dispatch(&mut self, jobs: &Sender<Job>) {
        let now = clock::now();
        while !self.shared.stopping.load(Ordering::SeqCst) {
            let Some(job) = self.agenda.next_job(now, self.threads) else {
                break;
            };
            self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
            if jobs.send(job).is_err() {
                return;
            }
        }
    }

    /// A worker is done with `id`: schedule what is left of it.
    fn finished(&mut self, id: &QueueId, after: After) {
        let now = clock::now();
        let Some(reread) = self.agenda.finished(id, after, now) else {
            return;
        };
        // Gone (delivered) or moved away by ternctl: nothing more to do.
        if let Ok(env) = self.shared.spool.load(id) {
            let due = Schedule::from_config(&self.shared.cfg.get()).due(&env);
            self.agenda.schedule(id.clone(), reread.at(due, now));
        }
    }

    /// List the spool and schedule every message not yet known.
    fn rescan(&mut self) {
        let ids = match self.shared.spool.list() {
            Ok(ids) => ids,
            Err(e) => {
                maillog::queue_scan_failed(&e);
                return;
            }
        };
        let sched = Schedule::from_config(&self.shared.cfg.get());
        for id in ids {
            if self.agenda.knows(&id) {
                continue;
            }
            match self.shared.spool.load(&id) {
                Ok(env) => self.agenda.schedule(id, sched.due(&env)),
                Err(e) => maillog::unreadable(&id, &e),
            }
        }
    }
}

/// RFC 5321 section 4.4 trace field for a locally submitted message, in
/// Postfix's form: there is no "from" clause (no SMTP client), and the real uid
/// of the submitting user stands in a comment, so a forged sender address can
/// still be traced to its account. LF line ends, as the spool stores them.
pub fn received_header(host: &str, id: &QueueId, uid: u32) -> String {
    format!("Received: {}\n", received_value(host, id, uid))
}

/// [`received_header`]'s value, after `Received: `.
fn received_value(host: &str, id: &QueueId, uid: u32) -> String {
    format!(
        "by {host} (tern, from userid {uid})\n\tid {id}; {}",
        clock::rfc5322(clock::now())
    )
}

/// What the pickup does with a message after the daemon's stages (`Fate`),
/// logged as Postfix's cleanup logs non-SMTP milters' verdicts. A permanent
/// refusal becomes a bounce to the sender, queued before the drop goes; a
/// bounce that cannot be queued leaves the drop for the next pickup.
fn picked_up_fate(
    shared: &Shared,
    cfg: &Config,
    id: &QueueId,
    env: &Envelope,
    fate: pipeline::Fate,
) -> Pickup {
    use pipeline::Fate;
    let client = "localhost[127.0.0.1]";
    let to = env.recipients.first().map(|r| r.addr.as_str());
    let log = |action: &str, text: &dyn std::fmt::Display| {
        maillog::filter_action(
            Some(id),
            action,
            "END-OF-MESSAGE",
            &client,
            text,
            Some(&env.sender),
            to,
            "local",
            None,
        );
    };
    match fate {
        Fate::Queue => Pickup::Queue,
        Fate::Hold(reason) => {
            log(
                "milter-hold",
                &format_args!("milter triggers HOLD action: {reason}"),
            );
            Pickup::Hold
        }
        Fate::Discard(why) => {
            log("milter-discard", &why);
            Pickup::Done
        }
        Fate::Later { reply, by_milter } => {
            log(if by_milter { "milter-reject" } else { "reject" }, &reply);
            maillog::pickup_deferred(id, &reply);
            Pickup::Later
        }
        Fate::Refused {
            reply,
            original,
            by_milter,
        } => {
            log(if by_milter { "milter-reject" } else { "reject" }, &reply);
            let why = crate::deliver::outcome::refused_by_milter(
                reply.esc.unwrap_or(crate::smtp::status::Status(5, 7, 1)),
                &reply.to_string(),
            );
            match notify::refused_at_pickup(
                cfg,
                &shared.spool,
                &shared.mailauth.get().signers,
                env,
                &why,
                &original,
            ) {
                Ok(Some(nid)) => {
                    maillog::bounce_queued(id, &nid);
                    shared.announce(nid);
                    Pickup::Done
                }
                Ok(None) => Pickup::Done,
                Err(e) => {
                    maillog::bounce_failed(id, &e);
                    Pickup::Later
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Envelope, RcptStatus, Recipient};
    use std::path::Path;

    /// A configuration whose local mail for `@example.test` lands in
    /// DIR/mail/USER/ as ternd's own user (local_users without system
    /// accounts), with the spool in DIR/spool.
    fn config(dir: &Path, extra: &str) -> Config {
        let users = dir.join("users");
        std::fs::write(&users, "alice\nbob\n").expect("users");
        let text = format!(
            "hostname = mx.test\nlocal_domains = example.test\nlocal_users = {}\nmailbox = {}/mail/%u/\nspool = {}\n{extra}",
            users.display(),
            dir.display(),
            dir.join("spool").display()
        );
        Config::parse(&text, Path::new("test.conf")).expect("config")
    }

    fn shared(cfg: Config) -> Arc<Shared> {
        let spool = Spool::open(&cfg.spool.dir).expect("spool");
        let (wake, _) = crossbeam_channel::unbounded();
        let tables = Arc::new(Tables::new(&cfg));
        let resolver: Arc<dyn Resolver> = Arc::new(dns::Broken("no DNS in unit tests".to_owned()));
        let resolvers = Resolvers {
            servers: Vec::new(),
            trusted: false,
        };
        let outbound = Arc::new(Outbound::new(&cfg.spool.dir, Arc::clone(&resolver), resolvers));
        Arc::new(Shared {
            cfg: Live::new(Arc::new(cfg)),
            spool: Arc::new(spool),
            tables: Live::new(tables),
            mailauth: Live::new(Arc::new(MailAuth::none())),
            wake,
            resolver,
            outbound,
            pool: Arc::new(Pool::new()),
            stopping: Arc::new(AtomicBool::new(false)),
            in_flight: AtomicUsize::new(0),
            retired: Retired::new(),
        })
    }

    /// Queue a message for `rcpt`, deferred until `next` when given.
    fn queue(spool: &Spool, rcpt: &str, next: Option<u64>) -> QueueId {
        let mut inc = spool.begin().expect("begin");
        let id = inc.id().clone();
        inc.append(b"Subject: t\n\nhello\n").expect("append");
        let mut env = Envelope::new(id.clone(), "sender@example.org".to_owned(), clock::now());
        let mut r = Recipient::new(rcpt.to_owned());
        if let Some(t) = next {
            r.status = RcptStatus::Deferred;
            r.next_attempt = Some(t);
        }
        env.recipients = vec![r];
        env.size = inc.bytes_written();
        inc.commit(&env).expect("commit");
        id
    }

    fn jobs(r: &mut Runner) -> Vec<Job> {
        let (tx, rx) = crossbeam_channel::unbounded();
        r.dispatch(&tx);
        rx.try_iter().collect()
    }

    #[test]
    fn a_rescan_schedules_what_the_spool_holds_at_its_due_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sh = shared(config(dir.path(), ""));
        let later = clock::now() + 3600;
        let now_id = queue(&sh.spool, "alice@example.test", None);
        let later_id = queue(&sh.spool, "bob@example.test", Some(later));
        let mut r = Runner::new(Arc::clone(&sh), 4, crossbeam_channel::unbounded().0);
        r.rescan();
        assert_eq!(r.agenda.len(), 2);
        // Only the pending one is due; the dispatch counts it in flight.
        assert_eq!(jobs(&mut r), vec![(now_id.clone(), false)]);
        assert_eq!(sh.in_flight.load(Ordering::SeqCst), 1);
        // A second rescan does not schedule the same messages again.
        r.rescan();
        assert_eq!(r.agenda.len(), 2);
        assert!(jobs(&mut r).is_empty());
        // ternctl flush: the deferred one goes now, told to try before its time.
        r.control(Control::Flush);
        assert_eq!(jobs(&mut r), vec![(later_id, true)]);
    }

    #[test]
    fn nothing_is_dispatched_while_stopping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sh = shared(config(dir.path(), ""));
        queue(&sh.spool, "alice@example.test", None);
        let mut r = Runner::new(Arc::clone(&sh), 4, crossbeam_channel::unbounded().0);
        r.rescan();
        sh.stopping.store(true, Ordering::SeqCst);
        assert!(jobs(&mut r).is_empty());
        assert_eq!(sh.in_flight.load(Ordering::SeqCst), 0);
        sh.stopping.store(false, Ordering::SeqCst);
        assert_eq!(jobs(&mut r).len(), 1);
    }

    #[test]
    fn a_finished_attempt_is_rescheduled_from_the_spool_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sh = shared(config(dir.path(), ""));
        let later = clock::now() + 3600;
        let id = queue(&sh.spool, "bob@example.test", Some(later));
        let mut r = Runner::new(Arc::clone(&sh), 1, crossbeam_channel::unbounded().0);
        r.control(Control::Wake(id.clone()));
        assert_eq!(jobs(&mut r), vec![(id.clone(), false)]);
        // The attempt could not write its state: the envelope says an hour.
        r.finished(&id, After::Reload);
        assert!(jobs(&mut r).is_empty());
        assert_eq!(r.agenda.wait(clock::now(), Duration::ZERO, false), RESCAN);
        // Woken during the next attempt: due at once, whatever the spool says.
        r.control(Control::Flush);
        assert_eq!(jobs(&mut r), vec![(id.clone(), true)]);
        r.agenda.schedule(id.clone(), clock::now());
        r.finished(&id, After::Reload);
        assert_eq!(jobs(&mut r), vec![(id.clone(), false)]);
        // Gone from the spool meanwhile (ternctl delete): forgotten.
        sh.spool.remove(&id).expect("remove");
        r.agenda.schedule(id.clone(), clock::now());
        r.finished(&id, After::Gone);
        assert_eq!(r.agenda.len(), 0);
    }

    /// Wait up to 20 s (well under RESCAN) for `n` copies in `new` and `id`
    /// out of the spool.
    fn delivered(new: &Path, n: usize, spool: &Spool, id: &QueueId) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let have = std::fs::read_dir(new).map(|d| d.count()).unwrap_or(0);
            if have == n && spool.load(id).is_err() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_start_up_scan_and_a_wake_up_get_mail_delivered_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), "delivery_threads = 2");
        let spool = Arc::new(Spool::open(&cfg.spool.dir).expect("spool"));
        let tables = Arc::new(Tables::new(&cfg));
        let stopping = Arc::new(AtomicBool::new(false));
        let new = dir.path().join("mail/alice/new");
        // Queued while no runner ran: the start-up scan finds it.
        let first = queue(&spool, "alice@example.test", None);
        let none = Arc::new(MailAuth::none());
        let handle = start(
            Arc::new(cfg),
            Arc::clone(&spool),
            tables,
            none,
            Arc::clone(&stopping),
        )
        .expect("start");
        assert!(
            delivered(&new, 1, &spool, &first),
            "{first} not delivered at start-up"
        );
        // Queued now, after that scan: only the wake-up brings it before
        // the next rescan, a minute away.
        let second = queue(&spool, "alice@example.test", None);
        handle.wake.send(second.clone()).expect("wake");
        assert!(
            delivered(&new, 2, &spool, &second),
            "{second} not delivered on wake-up"
        );
        // The control socket's wake-up (ternctl release, sendmail -bs) too.
        let third = queue(&spool, "alice@example.test", None);
        handle.control.send(Control::Wake(third.clone())).expect("wake");
        assert!(
            delivered(&new, 3, &spool, &third),
            "{third} not delivered on a control wake-up"
        );
        stopping.store(true, Ordering::SeqCst);
    }

    #[test]
    fn picked_up_mail_carries_a_trace_header_with_the_uid() {
        let id = QueueId::generate();
        let h = received_header("mx.test", &id, 1000);
        assert!(
            h.starts_with(&format!(
                "Received: by mx.test (tern, from userid 1000)\n\tid {id}; "
            )),
            "{h}"
        );
        assert!(h.ends_with('\n') && !h.contains('\r'));
    }
}
