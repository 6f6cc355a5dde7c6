//! ternd: the tern SMTP daemon. See ternd(8).
//!
//! Flags follow OpenSMTPD's smtpd(8): `-f FILE` config, `-d` foreground with
//! logs on stderr, `-n` check the config and exit, `-v` verbose, `-i` one
//! SMTP session on stdin/stdout (inetd, tcpserver).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern::config::{self, Config, Live};
use tern::daemon::{self, Event, PidFile};
use tern::deliver::{helper, local};
use tern::server::listener;
use tern::server::session::{self, Context, Peer, Service};
use tern::spool::Spool;
use tern::tables::Tables;
use tern::{control, logging, metrics, queue, sys, tls};

/// sysexits.h
const EX_USAGE: u8 = 64;
const EX_SOFTWARE: u8 = 70;
const EX_OSERR: u8 = 71;
const EX_CANTCREAT: u8 = 73;
const EX_TEMPFAIL: u8 = 75;
const EX_CONFIG: u8 = 78;

fn usage(opts: &getopts::Options) -> String {
    opts.usage("usage: ternd [-dinv] [-f file]")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A delivery child (see tern::deliver::local): ternd re-executed as a mail user.
    if args.first().map(String::as_str) == Some(local::CHILD_FLAG) {
        return local::child_main(args.get(1..).unwrap_or_default());
    }
    let mut opts = getopts::Options::new();
    opts.optopt("f", "", "configuration file", "FILE");
    opts.optflag("d", "", "stay in the foreground, log to stderr");
    opts.optflag("n", "", "check the configuration and exit");
    opts.optflagmulti("v", "", "more verbose logging");
    opts.optflag("i", "", "one SMTP session on stdin/stdout (inetd)");
    opts.optflag("h", "help", "show this help");
    let m = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ternd: {e}\n{}", usage(&opts));
            return ExitCode::from(EX_USAGE);
        }
    };
    if m.opt_present("h") {
        print!("{}", usage(&opts));
        return ExitCode::SUCCESS;
    }
    if !m.free.is_empty() {
        eprintln!(
            "ternd: unexpected argument {:?}\n{}",
            m.free.join(" "),
            usage(&opts)
        );
        return ExitCode::from(EX_USAGE);
    }
    let path = PathBuf::from(m.opt_str("f").unwrap_or_else(|| config::DEFAULT_PATH.to_owned()));
    let mut cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ternd: {e}");
            return ExitCode::from(if m.opt_present("n") { 1 } else { EX_CONFIG });
        }
    };
    if let Ok(cwd) = std::env::current_dir() {
        cfg.resolve_relative(&cwd);
    }
    // Certificate and key problems are configuration errors, found here
    // rather than at the first STARTTLS.
    let tls = match tls::Source::new(&cfg) {
        Ok(t) => t.map(Arc::new),
        Err(e) => {
            eprintln!("ternd: {}: {e}", path.display());
            return ExitCode::from(if m.opt_present("n") { 1 } else { EX_CONFIG });
        }
    };
    if m.opt_present("n") {
        println!("ternd: configuration OK: {}", path.display());
        return ExitCode::SUCCESS;
    }
    let level = logging::level(cfg.daemon.log_level, m.opt_count("v"));
    let foreground = m.opt_present("d");
    if foreground {
        logging::to_stderr("ternd", level);
    } else {
        logging::to_syslog("ternd", cfg.daemon.syslog_facility, level);
    }
    if m.opt_present("i") {
        inetd(cfg, tls, &path)
    } else {
        // A reload reads the same file and resolves relative paths against the
        // directory ternd was started in (detached, it is in / by then).
        let origin = Origin {
            path,
            verbose: m.opt_count("v"),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        };
        daemon(cfg, foreground, tls, &origin)
    }
}

fn open_spool(cfg: &Config) -> Result<Spool, ExitCode> {
    match Spool::open(&cfg.spool.dir) {
        Ok(s) => Ok(s.with_sync(cfg.spool.sync)),
        Err(e) => {
            eprintln!("ternd: {e}");
            log::error!("{e}");
            Err(ExitCode::from(EX_CANTCREAT))
        }
    }
}

/// The TLS certificate source, shared by every session.
type TlsConfig = Arc<tls::Source>;

/// `ternd -i`: one session on stdin/stdout. The client is the socket's peer
/// (inetd), else $TCPREMOTEIP (tcpserver), else local.
///
/// inetd usually starts it as root (the sample inetd.conf does): it then reads
/// its configuration and TLS key, gives the spool to `user` when it has to
/// (first use), and drops to `user` before the client sends a byte, so that
/// what it queues belongs to the daemon and no session runs as root. No
/// delivery helper is needed: a session only queues.
fn inetd(cfg: Config, tls: Option<TlsConfig>, path: &std::path::Path) -> ExitCode {
    let become_user = match account(&cfg, path) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let spool = match open_spool(&cfg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Some(pw) = &become_user {
        // Checked first without changing anything: only a spool this run had to
        // create (or one root wrote into) is given to `user`, so a busy inetd
        // does not walk the queue at every connection.
        if tern::spool::check_owner(&cfg.spool.dir, pw.uid, false).is_err() {
            if let Err(e) = tern::spool::check_owner(&cfg.spool.dir, pw.uid, true) {
                return fail(EX_CONFIG, format!("spool {}: {e}", cfg.spool.dir.display()));
            }
        }
        if let Err(e) = sys::drop_privileges(pw.uid, pw.gid) {
            return fail(EX_OSERR, format!("cannot drop privileges to {}: {e}", pw.name));
        }
    }
    let peer = match sys::peer_of_fd(std::io::stdin().as_raw_fd()) {
        Some(SocketAddr::V6(a)) => {
            Peer::remote(a.ip().to_ipv4_mapped().map_or(IpAddr::V6(*a.ip()), IpAddr::V4))
        }
        Some(a) => Peer::remote(a.ip()),
        None => match std::env::var("TCPREMOTEIP")
            .ok()
            .and_then(|s| s.parse::<IpAddr>().ok())
        {
            Some(ip) => Peer::remote(ip),
            None => Peer::local(),
        },
    };
    session::run_stdio(cfg, spool, &peer, tls, session::Door::Queue);
    ExitCode::SUCCESS
}

/// Print and log a start-up failure; return its exit code.
fn fail(code: u8, what: impl std::fmt::Display) -> ExitCode {
    eprintln!("ternd: {what}");
    log::error!("{what}");
    ExitCode::from(code)
}

/// The account a ternd started as root becomes (None when it is not root):
/// detached, in the foreground (-d) and under inetd (-i) alike, since what it
/// writes (spool files, mailboxes of users without an account) must belong to
/// `user`, and a daemon that talks to the network must not keep root. An
/// account that is root, or in group root, is refused rather than used.
fn account(cfg: &Config, path: &std::path::Path) -> Result<Option<sys::Passwd>, ExitCode> {
    if sys::uids().1 != 0 {
        return Ok(None);
    }
    match sys::getpwnam(&cfg.daemon.user) {
        Some(pw) if pw.uid != 0 && pw.gid != 0 => Ok(Some(pw)),
        Some(pw) => Err(fail(
            EX_CONFIG,
            format!(
                "{}: user = {}: uid {}, gid {}: ternd will not run as root or group root; \
                 set `user` to an unprivileged account (default tern)",
                path.display(),
                cfg.daemon.user,
                pw.uid,
                pw.gid
            ),
        )),
        None => Err(fail(
            EX_CONFIG,
            format!(
                "user {}: no such account; create it or set `user` in the configuration",
                cfg.daemon.user
            ),
        )),
    }
}

fn daemon(cfg: Config, foreground: bool, tls: Option<TlsConfig>, origin: &Origin) -> ExitCode {
    let become_user = match account(&cfg, &origin.path) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let spool = match open_spool(&cfg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // The spool must belong to whoever the daemon runs as; root gives it to
    // the account it is about to become.
    let owner = become_user.as_ref().map_or(sys::uids().1, |pw| pw.uid);
    if let Err(e) = tern::spool::check_owner(&cfg.spool.dir, owner, become_user.is_some()) {
        return fail(EX_CONFIG, format!("spool {}: {e}", cfg.spool.dir.display()));
    }
    if become_user.is_some() {
        let n = tern::spool::maildrop::open_drops_to_daemon(&cfg.spool.dir);
        if n > 0 {
            log::info!("spool: made {n} maildrop files readable by {}", cfg.daemon.user);
        }
    }
    // One daemon per spool, -d or not: a second one would clean up the
    // first one's messages in progress as crash leftovers.
    let mut spool_lock = match PidFile::create(&cfg.spool.dir.join("ternd.pid")) {
        Ok(l) => l,
        Err(e) => return fail(EX_TEMPFAIL, e),
    };
    // Like the rest of the spool, the lock file is `user`'s: one a kill -9 left
    // behind must not stop that account from starting ternd itself later.
    if let Some(pw) = &become_user {
        if let Err(e) = spool_lock.chown(pw.uid, pw.gid) {
            log::warn!("spool {}: chown ternd.pid: {e}", cfg.spool.dir.display());
        }
    }
    match spool.recover() {
        Ok(st) => log::info!(
            "spool {}: removed {} temporary and {} orphaned files, {} corrupt",
            cfg.spool.dir.display(),
            st.tmp_removed,
            st.orphans_removed,
            st.corrupt
        ),
        Err(e) => return fail(EX_CANTCREAT, e),
    }
    // Submission and smtps first, then listen: the plain "listening on"
    // lines come last, so whoever waits for them has seen the others too.
    let mut listeners = Vec::new();
    for (addrs, service) in [
        (&cfg.listen.smtps, Service::Smtps),
        (&cfg.listen.submission, Service::Submission),
        (&cfg.listen.smtp, Service::Smtp),
    ] {
        match listener::bind(addrs) {
            Ok(bound) => listeners.extend(bound.into_iter().zip(addrs.iter()).map(|(l, a)| (l, service, *a))),
            Err(e) => return fail(EX_OSERR, e),
        }
    }
    let metrics = match cfg.daemon.metrics_listen.map(metrics::http::bind).transpose() {
        Ok(m) => m,
        Err(e) => return fail(EX_OSERR, e),
    };
    // Detach only after everything that can fail visibly has been checked,
    // so that rc scripts see errors and the exit status.
    let mut pid_file = None;
    let mut detached = None;
    if !foreground {
        match PidFile::create(&cfg.daemon.pid_file) {
            Ok(p) => pid_file = Some(p),
            Err(e) => return fail(EX_TEMPFAIL, e),
        }
        match sys::daemonize() {
            Ok(d) => detached = Some(d),
            Err(e) => return fail(EX_OSERR, format!("cannot detach: {e}")),
        }
        // The locks passed to the detached child with the open files; the pid changed.
        for lock in pid_file.iter_mut().chain(std::iter::once(&mut spool_lock)) {
            if let Err(e) = lock.update() {
                log::error!("{e}");
            }
        }
    }
    // Still one thread: fork the root delivery helper, then give up root.
    let mut helper_sock = None;
    if let Some(pw) = &become_user {
        let (ours, theirs) = match UnixStream::pair() {
            Ok(p) => p,
            Err(e) => return fail(EX_OSERR, format!("cannot start the delivery helper: {e}")),
        };
        match sys::fork() {
            Ok(None) => {
                // The helper: nothing of the daemon's but the socket and the logger.
                drop(ours);
                drop(listeners);
                drop(metrics);
                drop(detached);
                // The pid file is the daemon's: it must not stay locked by the
                // helper after the daemon died (its removal is the helper's job).
                let pid_path = pid_file.as_ref().map(|_| cfg.daemon.pid_file.clone());
                for lock in pid_file.take().into_iter().chain(std::iter::once(spool_lock)) {
                    lock.close_in_child();
                }
                // Ctrl-C on a foreground ternd reaches its whole process group:
                // the helper outlives the daemon's graceful stop (deliveries in
                // flight finish) and exits when the daemon closes the socket.
                if let Err(e) = sys::block_signals(&sys::DAEMON_SIGNALS) {
                    log::warn!("delivery helper: cannot block signals: {e}");
                }
                let policy = helper::Policy {
                    spool: cfg.spool.dir.clone(),
                    owner: pw.uid,
                    mailbox: cfg.local.mailbox.clone(),
                    // In the foreground no pid file was written: nothing to remove.
                    pid_file: pid_path,
                };
                helper::serve(theirs, policy)
            }
            Ok(Some(pid)) => log::info!("delivery helper started, pid {pid}"),
            Err(e) => return fail(EX_OSERR, format!("cannot start the delivery helper: {e}")),
        }
        drop(theirs);
        if let Err(e) = sys::drop_privileges(pw.uid, pw.gid) {
            return fail(EX_OSERR, format!("cannot drop privileges to {}: {e}", pw.name));
        }
        log::info!("running as {} (uid {}, gid {})", pw.name, pw.uid, pw.gid);
        helper_sock = Some(ours);
    }
    // Signals are taken by one thread; block them before any other starts.
    let events = match daemon::signals() {
        Ok(ev) => ev,
        Err(e) => return fail(EX_OSERR, format!("cannot set up signals: {e}")),
    };
    if let Some(sock) = helper_sock {
        match helper::Client::new(sock) {
            Ok(c) => helper::install(c),
            Err(e) => return fail(EX_OSERR, format!("cannot start the delivery helper: {e}")),
        }
    }
    let cfg = Arc::new(cfg);
    let tables = Arc::new(Tables::new(&cfg));
    if cfg.queue.only {
        log::info!("queue_only: mail is queued, not delivered");
    }
    let mut ctx = Context::new(Arc::clone(&cfg), Arc::new(spool), Arc::clone(&tables), tls);
    // The runner also runs with queue_only: it picks up the maildrop (accepting
    // mail) but starts no delivery worker.
    let stopping = Arc::clone(&ctx.shutdown);
    let runner = match queue::runner::start(Arc::clone(&cfg), Arc::clone(&ctx.spool), tables, stopping) {
        Ok(h) => h,
        Err(e) => return fail(EX_OSERR, format!("cannot start the queue runner: {e}")),
    };
    // Without the control socket mail still flows (the runner rescans the spool
    // every minute); only "at once" is lost, so this is not fatal.
    if let Err(e) = control::serve(&cfg.spool.dir, runner.control.clone()) {
        log::error!("control socket: {e}");
    }
    ctx.queued = Some(runner.wake.clone());
    if let Some(m) = metrics {
        queue::gauges::on_scrape(Arc::clone(&ctx.spool), Box::new(|| None));
        if let Err(e) = m.serve() {
            log::error!("metrics: {e}");
        }
    }
    // Logged last, once the control socket is up too: whoever waits for these
    // lines (rc scripts, tests) may use sendmail's pickup at once.
    for (l, service, _) in &listeners {
        if let Ok(a) = l.local_addr() {
            match service {
                Service::Smtp => log::info!("listening on {a}"),
                other => log::info!("listening for {other} on {a}"),
            }
        }
    }
    let live = Arc::new(Live::new(Arc::new(ctx)));
    let server = match listener::serve(Arc::clone(&live), listeners) {
        Ok(s) => s,
        Err(e) => return fail(EX_SOFTWARE, format!("cannot start: {e}")),
    };
    log::info!("ternd started, pid {}", std::process::id());
    if let Some(d) = detached {
        d.ready();
    }
    for event in events.iter() {
        match event {
            Event::Stop => break,
            Event::Reload => reload(origin, &live, &server, &runner),
            Event::Flush => {
                log::info!("SIGUSR1: running the queue now");
                let _ = runner.control.send(queue::runner::Control::Flush);
            }
        }
    }
    let ctx = live.get();
    shutdown(&ctx, &server, &runner, ctx.cfg.daemon.shutdown_grace);
    drop(pid_file);
    drop(spool_lock);
    ExitCode::SUCCESS
}

/// Where the configuration came from, for SIGHUP.
struct Origin {
    path: PathBuf,
    cwd: PathBuf,
    /// How many -v: they raise a reloaded `log_level` too.
    verbose: usize,
}

/// SIGHUP: read the configuration again. A file that does not load is logged
/// and the running configuration kept. Otherwise new sessions and delivery
/// attempts use the new one (sessions in progress keep theirs); tables whose
/// paths changed are opened anew (unchanged ones reload themselves when their
/// files change), certificates are loaded again, listening addresses are
/// rebound, and what cannot change without a restart is logged.
fn reload(origin: &Origin, live: &Live<Context>, server: &listener::Server, runner: &queue::runner::Handle) {
    let mut cfg = match Config::load(&origin.path) {
        Ok(c) => c,
        Err(e) => {
            log::error!("SIGHUP: {e}; keeping the running configuration");
            return;
        }
    };
    cfg.resolve_relative(&origin.cwd);
    let old = live.get();
    let tls = match tls::Source::new(&cfg) {
        Ok(t) => t.map(Arc::new),
        // Unchanged paths that no longer load (a key only root may read, in a
        // daemon that dropped root): the certificate in use stays, the rest applies.
        Err(e) if old.cfg.tls.cert == cfg.tls.cert && old.cfg.tls.key == cfg.tls.key => {
            log::warn!("SIGHUP: {e}; keeping the certificate in use");
            old.tls.clone()
        }
        Err(e) => {
            log::error!(
                "SIGHUP: {}: {e}; keeping the running configuration",
                origin.path.display()
            );
            return;
        }
    };
    // The key table says what a reload cannot change.
    let with_helper = helper::installed().is_some();
    for (key, reload) in config::keys::changed(&old.cfg, &cfg) {
        if reload.needs_restart(with_helper) {
            log::warn!("SIGHUP: {key} changed; it takes effect when ternd is restarted");
        }
    }
    if old.cfg.daemon.log_level != cfg.daemon.log_level {
        logging::set_level(logging::level(cfg.daemon.log_level, origin.verbose));
        log::info!("SIGHUP: log_level is now {}", cfg.daemon.log_level);
    }
    let cfg = Arc::new(cfg);
    let tables = if old.cfg.local.aliases != cfg.local.aliases || old.cfg.local.users != cfg.local.users {
        Arc::new(Tables::new(&cfg))
    } else {
        old.policy.tables()
    };
    for (addrs, service) in [
        (&cfg.listen.smtps, Service::Smtps),
        (&cfg.listen.submission, Service::Submission),
        (&cfg.listen.smtp, Service::Smtp),
    ] {
        server.rebind(service, addrs);
    }
    runner.reconfigure(Arc::clone(&cfg), Arc::clone(&tables));
    let mut ctx = Context::new(Arc::clone(&cfg), Arc::clone(&old.spool), tables, tls);
    ctx.shutdown = Arc::clone(&old.shutdown);
    ctx.queued = old.queued.clone();
    live.set(Arc::new(ctx));
    log::info!("SIGHUP: configuration reloaded from {}", origin.path.display());
}

/// RFC 5321 3.8: stop accepting, let each session finish the command it is
/// in (a DATA in progress is completed and answered), answer 421 to idle
/// ones, let deliveries in flight finish, all within the grace period.
fn shutdown(ctx: &Context, server: &listener::Server, runner: &queue::runner::Handle, grace: Duration) {
    log::info!("stopping: no new connections, {} sessions open", server.active());
    ctx.shutdown.store(true, Ordering::SeqCst);
    server.stop_accepting();
    let deadline = Instant::now() + grace;
    let busy = || server.active() + runner.in_flight();
    while busy() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    match busy() {
        0 => log::info!("stopped"),
        n => log::warn!("stopped with {n} sessions or deliveries cut short by the grace period"),
    }
}
