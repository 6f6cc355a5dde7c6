//! Start-up, in the order that keeps failures visible and root short-lived:
//!
//! 1. [`account`]: the account a root ternd becomes, and whether it can
//!    read every file the daemon needs (`check_files`);
//! 2. [`prepare`]: open and check the spool, lock it, recover it, bind the
//!    listening sockets (ports below 1024 need root) and `metrics_listen`;
//! 3. detach (unless `-d`), only now that everything that can fail has been
//!    checked, so that rc scripts see errors and the exit status;
//! 4. fork the root delivery helper, then drop root, while still one thread;
//! 5. block signals and start the thread that waits for them;
//! 6. [`Daemon::serve`]: tables, queue runner, control socket, metrics,
//!    listeners.
//!
//! [`run`] does all of it for `ternd`; tests call `prepare` and `serve`.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;

use super::{Event, Failure, Origin, PidFile};
use crate::config::{Config, Live};
use crate::control;
use crate::deliver::local::helper;
use crate::metrics;
use crate::pipeline::MailAuth;
use crate::queue;
use crate::server::listener;
use crate::server::session::{Context, Service};
use crate::spool::{self, Spool};
use crate::sys;
use crate::sysexits::SysExit;
use crate::tables::Tables;
use crate::tls;

/// The account a ternd started as root becomes (None when it is not root):
/// detached, in the foreground (-d) and under inetd (-i) alike, since what it
/// writes (spool files, mailboxes of users without an account) must belong to
/// `user`, and a daemon that talks to the network must not keep root. An
/// account that is root, or in group root, is refused rather than used.
pub fn account(cfg: &Config) -> Result<Option<sys::Passwd>, Failure> {
    if sys::uids().1 != 0 {
        return Ok(None);
    }
    let user = &cfg.daemon.user;
    match sys::getpwnam(user) {
        Some(pw) if pw.uid != 0 && pw.gid != 0 => Ok(Some(pw)),
        Some(pw) => Err(Failure::new(
            SysExit::Config,
            format!(
                "{}: user = {user}: uid {}, gid {}: ternd will not run as root or group root; \
                 set `user` to an unprivileged account (default tern)",
                cfg.path.display(),
                pw.uid,
                pw.gid
            ),
        )),
        None => Err(Failure::new(
            SysExit::Config,
            format!("user {user}: no such account; create it or set `user` in the configuration"),
        )),
    }
}

/// Open the spool of `cfg` with its sync mode.
pub(super) fn open_spool(cfg: &Config) -> Result<Spool, Failure> {
    match Spool::open(&cfg.spool.dir) {
        Ok(s) => Ok(s.with_sync(cfg.spool.sync)),
        Err(e) => Err(Failure::new(SysExit::CantCreat, e)),
    }
}

/// What start-up has checked and opened before the daemon detaches.
pub struct Prepared {
    cfg: Config,
    tls: Option<Arc<tls::Source>>,
    /// The account to become (root only).
    become_user: Option<sys::Passwd>,
    spool: Spool,
    /// One daemon per spool (None only in the delivery helper, which closed it).
    spool_lock: Option<PidFile>,
    /// (socket, service, configured address).
    listeners: Vec<(TcpListener, Service, SocketAddr)>,
    /// The metrics listener, when `metrics_listen` is set.
    metrics: Option<metrics::http::Endpoint>,
}

/// Steps 2: everything that can fail visibly before the daemon detaches.
/// `become_user` is what [`account`] answered.
pub fn prepare(
    cfg: Config,
    tls: Option<Arc<tls::Source>>,
    become_user: Option<sys::Passwd>,
) -> Result<Prepared, Failure> {
    let spool = open_spool(&cfg)?;
    let dir = &cfg.spool.dir;
    // The spool must belong to whoever the daemon runs as; root gives it to
    // the account it is about to become.
    let owner = become_user.as_ref().map_or(sys::uids().1, |pw| pw.uid);
    if let Err(e) = spool::check_owner(dir, owner, become_user.is_some()) {
        return Err(Failure::new(
            SysExit::Config,
            format!("spool {}: {e}", dir.display()),
        ));
    }
    if become_user.is_some() {
        let n = spool::maildrop::open_drops_to_daemon(dir);
        if n > 0 {
            log::info!("spool: made {n} maildrop files readable by {}", cfg.daemon.user);
        }
    }
    // One daemon per spool, -d or not: a second one would clean up the
    // first one's messages in progress as crash leftovers.
    let spool_lock =
        PidFile::create(&dir.join("ternd.pid")).map_err(|e| Failure::new(SysExit::TempFail, e))?;
    // Like the rest of the spool, the lock file is `user`'s: one a kill -9 left
    // behind must not stop that account from starting ternd itself later.
    if let Some(pw) = &become_user {
        if let Err(e) = spool_lock.chown(pw.uid, pw.gid) {
            log::warn!("spool {}: chown ternd.pid: {e}", dir.display());
        }
    }
    match spool.recover() {
        Ok(st) => log::info!(
            "spool {}: removed {} temporary and {} orphaned files, finished {} removals, \
             queued {} again from their seal, {} corrupt",
            dir.display(),
            st.tmp_removed,
            st.orphans_removed,
            st.finished,
            st.restored,
            st.corrupt
        ),
        Err(e) => return Err(Failure::new(SysExit::CantCreat, e)),
    }
    // Submission and smtps first, then listen: the plain "listening on"
    // lines come last, so whoever waits for them has seen the others too.
    let mut listeners = Vec::new();
    for (addrs, service) in services(&cfg) {
        match listener::bind(addrs) {
            Ok(bound) => listeners.extend(bound.into_iter().zip(addrs.iter()).map(|(l, a)| (l, service, *a))),
            Err(e) => return Err(Failure::new(SysExit::OsErr, e)),
        }
    }
    let metrics = cfg
        .daemon
        .metrics_listen
        .map(metrics::http::bind)
        .transpose()
        .map_err(|e| Failure::new(SysExit::OsErr, e))?;
    Ok(Prepared {
        cfg,
        tls,
        become_user,
        spool,
        spool_lock: Some(spool_lock),
        listeners,
        metrics,
    })
}

/// The listening addresses of each service, in the order they are bound.
pub(super) fn services(cfg: &Config) -> [(&[SocketAddr], Service); 3] {
    [
        (&cfg.listen.smtps, Service::Smtps),
        (&cfg.listen.submission, Service::Submission),
        (&cfg.listen.smtp, Service::Smtp),
    ]
}

/// The running daemon.
pub struct Daemon {
    pub(super) origin: Origin,
    /// What sessions start with; a reload replaces it.
    pub(super) live: Arc<Live<Context>>,
    pub(super) server: listener::Server,
    pub(super) runner: queue::runner::Handle,
    /// The pid file and the spool's lock, held for the daemon's life;
    /// dropped (and their files removed) when it stops.
    _locks: Vec<PidFile>,
}

impl Daemon {
    /// Step 6: start serving what `prepared` opened. `helper_sock` is the
    /// daemon's end of the socket to a delivery helper forked before root
    /// was dropped; `pid_file` the detached daemon's pid file.
    pub fn serve(
        prepared: Prepared,
        origin: Origin,
        pid_file: Option<PidFile>,
        helper_sock: Option<UnixStream>,
    ) -> Result<Daemon, Failure> {
        let Prepared {
            cfg,
            tls,
            spool,
            spool_lock,
            listeners,
            metrics,
            ..
        } = prepared;
        if let Some(sock) = helper_sock {
            match helper::Client::new(sock) {
                Ok(c) => helper::install(c),
                Err(e) => {
                    return Err(Failure::new(
                        SysExit::OsErr,
                        format!("cannot start the delivery helper: {e}"),
                    ))
                }
            }
        }
        let cfg = Arc::new(cfg);
        let tables = Arc::new(Tables::new(&cfg));
        if cfg.queue.only {
            log::info!("queue_only: mail is queued, not delivered");
        }
        // The DKIM keys, read as the account the daemon now runs as (`load`
        // checked them already), and the checker of incoming mail.
        let keys = MailAuth::load_keys(&cfg).map_err(|e| Failure::new(SysExit::Config, e))?;
        let mailauth = Arc::new(MailAuth::start(&cfg, keys));
        let mut ctx = Context::new(Arc::clone(&cfg), Arc::new(spool), Arc::clone(&tables), tls);
        ctx.mailauth = Arc::clone(&mailauth);
        // The runner also runs with queue_only: it picks up the maildrop
        // (accepting mail) but starts no delivery worker.
        let stopping = Arc::clone(&ctx.shutdown);
        let runner = queue::runner::start(
            Arc::clone(&cfg),
            Arc::clone(&ctx.spool),
            tables,
            mailauth,
            stopping,
        )
        .map_err(|e| Failure::new(SysExit::OsErr, format!("cannot start the queue runner: {e}")))?;
        // Without the control socket mail still flows (the runner rescans the
        // spool every minute); only "at once" is lost, so this is not fatal.
        if let Err(e) = control::serve(&cfg.spool.dir, runner.control.clone()) {
            log::error!("control socket: {e}");
        }
        ctx.queued = Some(runner.wake.clone());
        if let Some(m) = metrics {
            let asks = runner.clone();
            let waiting = Box::new(move || asks.waiting(queue::gauges::ASK_TIMEOUT));
            queue::gauges::on_scrape(Arc::clone(&ctx.spool), waiting);
            if let Err(e) = m.serve() {
                log::error!("metrics: {e}");
            }
        }
        // Logged last, once the control socket is up too: whoever waits for
        // these lines (rc scripts, tests) may use sendmail's pickup at once.
        for (l, service, _) in &listeners {
            if let Ok(a) = l.local_addr() {
                match service {
                    Service::Smtp => log::info!("listening on {a}"),
                    other => log::info!("listening for {other} on {a}"),
                }
            }
        }
        let live = Arc::new(Live::new(Arc::new(ctx)));
        let server = listener::serve(Arc::clone(&live), listeners)
            .map_err(|e| Failure::new(SysExit::Software, format!("cannot start: {e}")))?;
        log::info!("ternd started, pid {}", std::process::id());
        Ok(Daemon {
            origin,
            live,
            server,
            runner,
            _locks: pid_file.into_iter().chain(spool_lock).collect(),
        })
    }

    /// The context new sessions start with now.
    pub fn context(&self) -> Arc<Context> {
        self.live.get()
    }

    /// The addresses the daemon accepts connections on, by service.
    pub fn local_addrs(&self) -> Vec<(Service, SocketAddr)> {
        self.server.local_addrs()
    }

    /// Act on one event; false once the daemon should stop.
    pub fn handle(&self, event: Event) -> bool {
        match event {
            Event::Stop => return false,
            Event::Reload => {
                let _ = self.reload();
            }
            Event::Flush => {
                log::info!("SIGUSR1: running the queue now");
                let _ = self.runner.control.send(queue::runner::Control::Flush);
            }
        }
        true
    }

    /// Serve events until one says stop, then stop gracefully.
    pub fn run(self, events: &crossbeam_channel::Receiver<Event>) {
        for event in events.iter() {
            if !self.handle(event) {
                break;
            }
        }
        self.shutdown();
    }
}

/// `ternd` without -i: start (steps 1 to 6), serve signals, stop.
pub fn run(cfg: Config, tls: Option<Arc<tls::Source>>, origin: Origin, foreground: bool) -> ExitCode {
    match start(cfg, tls, origin, foreground) {
        Ok((daemon, events)) => {
            daemon.run(&events);
            ExitCode::SUCCESS
        }
        Err(f) => ExitCode::from(f.report()),
    }
}

fn start(
    cfg: Config,
    tls: Option<Arc<tls::Source>>,
    origin: Origin,
    foreground: bool,
) -> Result<(Daemon, crossbeam_channel::Receiver<Event>), Failure> {
    let become_user = account(&cfg)?;
    super::check_files(&cfg, become_user.as_ref())?;
    let mut prepared = prepare(cfg, tls, become_user)?;
    let (mut pid_file, mut detached) = if foreground {
        (None, None)
    } else {
        let (p, d) = detach(&mut prepared)?;
        (Some(p), Some(d))
    };
    let helper_sock = fork_helper(&mut prepared, &mut pid_file, &mut detached)?;
    // Signals are taken by one thread; block them before any other starts.
    let events =
        super::signals().map_err(|e| Failure::new(SysExit::OsErr, format!("cannot set up signals: {e}")))?;
    let daemon = Daemon::serve(prepared, origin, pid_file, helper_sock)?;
    if let Some(d) = detached {
        d.ready();
    }
    Ok((daemon, events))
}

/// Step 3: write the pid file and detach; the locks follow the new pid.
fn detach(prepared: &mut Prepared) -> Result<(PidFile, sys::Detached), Failure> {
    let mut pid_file =
        PidFile::create(&prepared.cfg.daemon.pid_file).map_err(|e| Failure::new(SysExit::TempFail, e))?;
    let detached =
        sys::daemonize().map_err(|e| Failure::new(SysExit::OsErr, format!("cannot detach: {e}")))?;
    // The locks passed to the detached child with the open files; the pid changed.
    for lock in std::iter::once(&mut pid_file).chain(prepared.spool_lock.as_mut()) {
        if let Err(e) = lock.update() {
            log::error!("{e}");
        }
    }
    Ok((pid_file, detached))
}

/// Step 4, for a daemon started as root: fork the delivery helper (which
/// keeps root to deliver into users' mailboxes), then drop root. Returns
/// the daemon's end of the socket to the helper.
fn fork_helper(
    prepared: &mut Prepared,
    pid_file: &mut Option<PidFile>,
    detached: &mut Option<sys::Detached>,
) -> Result<Option<UnixStream>, Failure> {
    let Some(pw) = prepared.become_user.clone() else {
        return Ok(None);
    };
    let cant =
        |e: std::io::Error| Failure::new(SysExit::OsErr, format!("cannot start the delivery helper: {e}"));
    let (ours, theirs) = UnixStream::pair().map_err(cant)?;
    match sys::fork().map_err(cant)? {
        None => {
            // The helper: nothing of the daemon's but the socket and the logger.
            drop(ours);
            prepared.listeners.clear();
            prepared.metrics = None;
            drop(detached.take());
            // The pid file is the daemon's: it must not stay locked by the
            // helper after the daemon died (its removal is the helper's job).
            // In the foreground no pid file was written: nothing to remove.
            let pid_path = pid_file.as_ref().map(|_| prepared.cfg.daemon.pid_file.clone());
            for lock in pid_file.take().into_iter().chain(prepared.spool_lock.take()) {
                lock.close_in_child();
            }
            // Ctrl-C on a foreground ternd reaches its whole process group:
            // the helper outlives the daemon's graceful stop (deliveries in
            // flight finish) and exits when the daemon closes the socket.
            if let Err(e) = sys::block_signals(&sys::DAEMON_SIGNALS) {
                log::warn!("delivery helper: cannot block signals: {e}");
            }
            let policy = helper::Policy {
                spool: prepared.cfg.spool.dir.clone(),
                owner: pw.uid,
                mailbox: prepared.cfg.local.mailbox.clone(),
                pid_file: pid_path,
            };
            helper::serve(theirs, policy)
        }
        Some(pid) => log::info!("delivery helper started, pid {pid}"),
    }
    drop(theirs);
    sys::drop_privileges(pw.uid, pw.gid).map_err(|e| {
        Failure::new(
            SysExit::OsErr,
            format!("cannot drop privileges to {}: {e}", pw.name),
        )
    })?;
    log::info!("running as {} (uid {}, gid {})", pw.name, pw.uid, pw.gid);
    Ok(Some(ours))
}
