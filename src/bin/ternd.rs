//! ternd: the tern SMTP daemon. See ternd(8).
//!
//! Flags follow OpenSMTPD's smtpd(8): `-f FILE` config, `-d` foreground with
//! logs on stderr, `-n` check the config and exit, `-v` verbose, `-i` one
//! SMTP session on stdin/stdout (inetd, tcpserver).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tern::config::{self, Config};
use tern::deliver::local;
use tern::server::auth::Auth;
use tern::server::conn::Stdio;
use tern::server::listener;
use tern::server::policy::Policy;
use tern::server::session::{self, Context, Peer, Service};
use tern::spool::Spool;
use tern::tables::Tables;
use tern::{logging, queue, sys, tls};

/// sysexits.h
const EX_USAGE: u8 = 64;
const EX_SOFTWARE: u8 = 70;
const EX_OSERR: u8 = 71;
const EX_CANTCREAT: u8 = 73;
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
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ternd: {e}");
            return ExitCode::from(if m.opt_present("n") { 1 } else { EX_CONFIG });
        }
    };
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
    let level = logging::level(m.opt_count("v"));
    let foreground = m.opt_present("d");
    if foreground {
        logging::to_stderr("ternd", level);
    } else {
        logging::to_syslog("ternd", level);
    }
    if m.opt_present("i") {
        inetd(cfg, tls)
    } else {
        daemon(cfg, tls)
    }
}

fn open_spool(cfg: &Config) -> Result<Arc<Spool>, ExitCode> {
    match Spool::open(&cfg.spool) {
        Ok(s) => Ok(Arc::new(s)),
        Err(e) => {
            eprintln!("ternd: {e}");
            log::error!("{e}");
            Err(ExitCode::from(EX_CANTCREAT))
        }
    }
}

fn context(cfg: Arc<Config>, spool: Arc<Spool>, tables: Arc<Tables>, tls: Option<TlsConfig>) -> Context {
    let auth = Arc::new(Auth::new(&cfg));
    Context {
        cfg,
        spool,
        policy: Arc::new(Policy::new(tables)),
        shutdown: Arc::new(AtomicBool::new(false)),
        queued: None,
        tls,
        auth,
    }
}

/// `ternd -i`: one session on stdin/stdout. The client is the socket's peer
/// (inetd), else $TCPREMOTEIP (tcpserver), else local.
type TlsConfig = Arc<tls::Source>;

fn inetd(cfg: Config, tls: Option<TlsConfig>) -> ExitCode {
    let spool = match open_spool(&cfg) {
        Ok(s) => s,
        Err(code) => return code,
    };
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
    let tables = Arc::new(Tables::new(&cfg));
    // The daemon's queue runner picks the message up on its next scan.
    let ctx = context(Arc::new(cfg), spool, tables, tls);
    session::run(&ctx, &peer, Service::Smtp, Box::new(Stdio::new()));
    ExitCode::SUCCESS
}

fn daemon(cfg: Config, tls: Option<TlsConfig>) -> ExitCode {
    let spool = match open_spool(&cfg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match spool.recover() {
        Ok(st) => log::info!(
            "spool {}: removed {} temporary and {} orphaned files, {} corrupt",
            cfg.spool.display(),
            st.tmp_removed,
            st.orphans_removed,
            st.corrupt
        ),
        Err(e) => {
            eprintln!("ternd: {e}");
            log::error!("{e}");
            return ExitCode::from(EX_CANTCREAT);
        }
    }
    // Submission and smtps first, then listen: the plain "listening on"
    // lines come last, so whoever waits for them has seen the others too.
    let mut listeners = Vec::new();
    for (addrs, service) in [
        (&cfg.smtps, Service::Smtps),
        (&cfg.submission, Service::Submission),
        (&cfg.listen, Service::Smtp),
    ] {
        let bound = match listener::bind(addrs) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ternd: {e}");
                log::error!("{e}");
                return ExitCode::from(EX_OSERR);
            }
        };
        for l in bound {
            if let Ok(a) = l.local_addr() {
                match service {
                    Service::Smtp => log::info!("listening on {a}"),
                    other => log::info!("listening for {other} on {a}"),
                }
            }
            listeners.push((l, service));
        }
    }
    let cfg = Arc::new(cfg);
    let tables = Arc::new(Tables::new(&cfg));
    let wake = if cfg.queue_only {
        log::info!("queue_only: mail is queued, not delivered");
        None
    } else {
        match queue::runner::start(Arc::clone(&cfg), Arc::clone(&spool), Arc::clone(&tables)) {
            Ok(w) => Some(w),
            Err(e) => {
                log::error!("cannot start the queue runner: {e}");
                return ExitCode::from(EX_OSERR);
            }
        }
    };
    let mut ctx = context(cfg, spool, tables, tls);
    ctx.queued = wake;
    match listener::serve(Arc::new(ctx), listeners) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("cannot start: {e}");
            ExitCode::from(EX_SOFTWARE)
        }
    }
}
