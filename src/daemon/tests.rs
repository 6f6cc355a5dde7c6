//! The lifecycle in process: a daemon started on a temporary spool and
//! loopback port 0 (no detaching, no root helper), reloaded with edited
//! configuration files, and stopped, with real TCP clients.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{account, load, prepare, Daemon, Event, Origin, Reloaded};
use crate::config::Config;
use crate::server::session::Service;
use crate::sysexits::SysExit;

/// The keys every test daemon has, with `extra` lines replacing or adding keys.
fn config_text(dir: &Path, extra: &str) -> String {
    let defaults = format!(
        "hostname = one.test\nlisten = 127.0.0.1:0\nspool = {}\nlocal_domains = example.org\n\
         local_users = {}\nqueue_only = yes\ndns_servers = 127.0.0.1:9\nshutdown_grace = 10s\n",
        dir.join("spool").display(),
        dir.join("users").display()
    );
    let key = |l: &str| l.split('=').next().unwrap_or_default().trim().to_owned();
    let overridden: Vec<String> = extra.lines().map(key).collect();
    let mut text: String = defaults
        .lines()
        .filter(|l| !overridden.contains(&key(l)))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(extra);
    text
}

struct Test {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Test {
    fn new(extra: &str) -> Test {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users"), "alice\n").unwrap();
        let conf = dir.path().join("tern.conf");
        std::fs::write(&conf, config_text(dir.path(), extra)).unwrap();
        Test { dir, conf }
    }

    fn start(&self) -> Daemon {
        let origin = Origin {
            path: self.conf.clone(),
            cwd: self.dir.path().to_owned(),
            verbose: 0,
        };
        let (cfg, tls) = load(&origin.path, &origin.cwd).unwrap();
        let prepared = prepare(cfg, tls, None).unwrap_or_else(|f| panic!("{}", f.what));
        Daemon::serve(prepared, origin, None, None).unwrap_or_else(|f| panic!("{}", f.what))
    }

    /// Replace the configuration file: the defaults plus `extra`.
    fn rewrite(&self, extra: &str) {
        std::fs::write(&self.conf, config_text(self.dir.path(), extra)).unwrap();
    }
}

fn smtp_addr(d: &Daemon) -> SocketAddr {
    d.local_addrs()
        .into_iter()
        .find(|(s, _)| *s == Service::Smtp)
        .map(|(_, a)| a)
        .expect("an smtp listener")
}

struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { r: BufReader::new(s) }
    }

    /// One reply line ("" at end of stream).
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l.trim_end().to_owned()
    }

    /// Send a line, return the last line of the reply.
    fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        loop {
            let l = self.line();
            if l.len() < 4 || l.as_bytes().get(3) != Some(&b'-') {
                return l;
            }
        }
    }

    fn send(&mut self, line: &str) {
        self.r
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
    }
}

/// Poll `cond` for up to ten seconds.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn reload_applies_what_it_may_and_names_what_needs_a_restart() {
    let t = Test::new("");
    let d = t.start();
    let addr = smtp_addr(&d);
    let mut before = Client::connect(addr);
    assert_eq!(before.line(), "220 one.test ESMTP tern");

    t.rewrite("hostname = two.test\nmax_errors = 3\nspool_sync = syncfs\ndelivery_threads = 2\n");
    let r = d.reload().unwrap();
    assert_eq!(
        r,
        Reloaded {
            applied: vec!["hostname", "max_errors"],
            need_restart: vec!["spool_sync", "delivery_threads"],
            kept_certificate: false,
            kept_files: vec![],
        }
    );
    // New sessions use the new configuration ...
    let ctx = d.context();
    assert_eq!(
        (ctx.cfg.hostname.as_str(), ctx.cfg.session.max_errors),
        ("two.test", 3)
    );
    let mut after = Client::connect(addr);
    assert_eq!(after.line(), "220 two.test ESMTP tern");
    // ... a session in progress keeps the one it started with.
    assert_eq!(before.cmd("HELO c"), "250 one.test");
    assert_eq!(after.cmd("HELO c"), "250 two.test");
    // The same file again changes nothing.
    let again = d.reload().unwrap();
    assert!(
        again.applied.is_empty() && again.need_restart.is_empty(),
        "{again:?}"
    );
    // SIGHUP and SIGUSR1 keep the daemon running; SIGTERM ends it.
    assert!(d.handle(Event::Reload));
    assert!(d.handle(Event::Flush));
    assert!(!d.handle(Event::Stop));
    assert_eq!(d.shutdown().cut_short, 0);
}

#[test]
fn a_config_that_does_not_load_keeps_the_running_one() {
    let t = Test::new("max_errors = 4\n");
    let d = t.start();
    let running = d.context();
    std::fs::write(&t.conf, "max_errors = 5\nbogus = 1\n").unwrap();
    let e = d.reload().unwrap_err();
    let want = format!(
        "{}:2: unknown key \"bogus\"; keeping the running configuration",
        t.conf.display()
    );
    assert_eq!(e, want);
    // A certificate that does not load is a failed reload too.
    t.rewrite("max_errors = 5\ntls_cert = /nonexistent/cert.pem\ntls_key = /nonexistent/key.pem\n");
    let e = d.reload().unwrap_err();
    assert!(e.starts_with(&format!("{}: ", t.conf.display())), "{e}");
    assert!(e.ends_with("; keeping the running configuration"), "{e}");
    assert!(Arc::ptr_eq(&running, &d.context()));
    assert_eq!(d.context().cfg.session.max_errors, 4);
    let mut c = Client::connect(smtp_addr(&d));
    assert_eq!(c.line(), "220 one.test ESMTP tern");
    d.shutdown();
}

#[test]
fn reload_rebinds_the_listeners() {
    let t = Test::new("");
    let d = t.start();
    let old = smtp_addr(&d);
    // A port that was free a moment ago.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    t.rewrite(&format!("listen = 127.0.0.1:{port}\n"));
    let r = d.reload().unwrap();
    assert_eq!(r.applied, vec!["listen"]);
    let now: Vec<SocketAddr> = d.local_addrs().into_iter().map(|(_, a)| a).collect();
    assert_eq!(now, vec![SocketAddr::from(([127, 0, 0, 1], port))]);
    let mut c = Client::connect(now[0]);
    assert_eq!(c.line(), "220 one.test ESMTP tern");
    // The old address stops accepting.
    assert!(
        eventually(|| TcpStream::connect(old).is_err()),
        "{old} still accepts"
    );
    d.shutdown();
}

#[test]
fn shutdown_answers_idle_sessions_421_and_stops_accepting() {
    let t = Test::new("");
    let d = t.start();
    let addr = smtp_addr(&d);
    let lock = t.dir.path().join("spool/ternd.pid");
    assert!(lock.exists());
    let mut idle = Client::connect(addr);
    assert_eq!(idle.line(), "220 one.test ESMTP tern");
    let stopped = d.shutdown();
    assert_eq!(stopped.cut_short, 0);
    assert_eq!(idle.line(), "421 4.3.2 Service shutting down, closing channel");
    assert_eq!(idle.line(), "");
    assert!(
        eventually(|| TcpStream::connect(addr).is_err()),
        "{addr} still accepts"
    );
    // The spool's lock went with the daemon.
    assert!(!lock.exists());
}

#[test]
fn shutdown_lets_a_message_in_progress_finish() {
    let t = Test::new("");
    let d = t.start();
    let ctx = d.context();
    let mut c = Client::connect(smtp_addr(&d));
    c.line();
    assert_eq!(c.cmd("HELO c"), "250 one.test");
    assert!(c.cmd("MAIL FROM:<a@x.test>").starts_with("250 "));
    assert!(c.cmd("RCPT TO:<alice@example.org>").starts_with("250 "));
    assert!(c.cmd("DATA").starts_with("354 "));
    c.send("Subject: in flight\r\n\r\nhalf");
    let stopper = std::thread::spawn(move || d.shutdown());
    assert!(eventually(|| ctx.shutdown.load(Ordering::SeqCst)));
    let queued = c.cmd("the rest\r\n.");
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    // Then the session is told the server is going away.
    assert!(c.line().starts_with("421 4.3.2"));
    assert_eq!(stopper.join().unwrap().cut_short, 0);
    assert_eq!(ctx.spool.list().unwrap().len(), 1);
}

#[test]
fn the_account_to_become() {
    let mut cfg = Config::default();
    if crate::sys::uids().1 != 0 {
        // Not root: nothing to become, whatever `user` says.
        cfg.daemon.user = "root".to_owned();
        assert!(account(&cfg).unwrap().is_none());
        return;
    }
    cfg.daemon.user = "root".to_owned();
    let f = account(&cfg).unwrap_err();
    assert_eq!(f.code, SysExit::Config);
    assert!(
        f.what.contains("will not run as root or group root"),
        "{}",
        f.what
    );
    cfg.daemon.user = "no-such-account-here".to_owned();
    let f = account(&cfg).unwrap_err();
    assert!(f.what.contains("no such account"), "{}", f.what);
}
