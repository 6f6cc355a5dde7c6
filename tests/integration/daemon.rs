//! The daemon's life: detaching with a pid file, refusing a second instance,
//! and a graceful stop on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{daemon_account, message, wait_until, Client, Setup, TERND};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A detached ternd, stopped with SIGTERM when a failing test unwinds, so it
/// does not outlive the test (and keep the test account busy).
struct Stop(u32);

impl Drop for Stop {
    fn drop(&mut self) {
        if std::thread::panicking() && pid_alive(self.0) {
            let _ = tern::sys::send_signal(self.0, libc::SIGTERM);
        }
    }
}

/// Start ternd detached on `conf` and return its pid.
fn start_detached(conf: &std::path::Path, pid_path: &std::path::Path) -> u32 {
    start_detached_saying(conf, pid_path).0
}

/// Start ternd detached on `conf`; its pid, and what it said on stderr
/// before it detached.
fn start_detached_saying(conf: &std::path::Path, pid_path: &std::path::Path) -> (u32, String) {
    let out = Command::new(TERND)
        .arg("-f")
        .arg(conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    (
        std::fs::read_to_string(pid_path).unwrap().trim().parse().unwrap(),
        err,
    )
}

/// The Uid: or Gid: line of /proc/PID/status: real, effective, saved, fs.
fn proc_ids(pid: u32, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn detaches_writes_a_pid_file_and_refuses_a_second_instance() {
    let port = free_port();
    let setup = Setup::new().set("listen", &format!("127.0.0.1:{port}"));
    let pid_path = setup.path().join("ternd.pid");
    let setup = setup.set("pid_file", &pid_path.display().to_string());
    let conf = setup.write_config();
    // Without -d: the command returns once the daemon has detached and is
    // ready, with its pid file written, as rc scripts expect.
    let st = Command::new(TERND)
        .arg("-f")
        .arg(&conf)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
    let pid: u32 = std::fs::read_to_string(&pid_path)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _stop = Stop(pid);
    assert!(pid_alive(pid));
    let mut c = Client::connect(format!("127.0.0.1:{port}").parse().unwrap());
    assert_eq!(c.reply().code, 220);
    assert_eq!(c.cmd("QUIT").code, 221);
    // A second instance on the same config refuses to start, saying why.
    let out = Command::new(TERND)
        .arg("-f")
        .arg(&conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another ternd is running"), "{err}");
    assert!(err.contains(&pid.to_string()), "{err}");
    // SIGTERM stops it; the pid file goes with it.
    tern::sys::send_signal(pid, libc::SIGTERM).unwrap();
    assert!(wait_until(10, || !pid_alive(pid)), "ternd did not stop");
    assert!(!pid_path.exists());
}

/// Started as root, detached or in the foreground (-d), ternd runs as `user`
/// (the harness's test account), every id of it, and the root delivery helper
/// still writes each local user's mail as that user: a system account's
/// Maildir belongs to the account, root's own mailbox to root.
fn root_drops_to_user_and_still_delivers_as_the_recipient(foreground: bool) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    require_root!("dropping privileges");
    let account = require_some!(daemon_account(), "no account for the test daemon");
    let rcpt = require_some!(tern::sys::getpwnam("daemon"), "no daemon account");
    let port = free_port();
    let setup = Setup::new().deliver().set("listen", &format!("127.0.0.1:{port}"));
    let pid_path = setup.path().join("ternd.pid");
    let setup = setup.set("pid_file", &pid_path.display().to_string());
    // A mail root where the recipients' delivery children may create their Maildirs.
    let mail = setup.path().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    std::fs::set_permissions(&mail, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(setup.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(setup.path().join("users"), "daemon\nroot\n").unwrap();
    let conf = setup.write_config();
    let (pid, tern) = if foreground {
        let t = setup.start();
        (t.child.id(), Some(t))
    } else {
        (start_detached(&conf, &pid_path), None)
    };
    let _stop = Stop(pid);
    // Every uid and gid of the daemon is the unprivileged account's.
    assert_eq!(proc_ids(pid, "Uid:"), vec![account.uid; 4]);
    assert_eq!(proc_ids(pid, "Gid:"), vec![account.gid; 4]);
    let spool = mail.with_file_name("spool");
    assert_eq!(std::fs::metadata(spool.join("env")).unwrap().uid(), account.uid);
    // The spool's lock file too: a kill -9 leaves it, and `user` must get past it.
    assert_eq!(
        std::fs::metadata(spool.join("ternd.pid")).unwrap().uid(),
        account.uid
    );
    let mut c = Client::connect(format!("127.0.0.1:{port}").parse().unwrap());
    c.hello();
    let r = c.send_mail(
        "alice@example.test",
        &["daemon@example.test", "root@example.test"],
        &message("dropped"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    c.cmd("QUIT");
    // The daemon, no longer root, had the root helper write each copy as its user.
    for (user, uid) in [("daemon", rcpt.uid), ("root", 0)] {
        let files = crate::common::wait_files(&mail.join(user).join("new"), 1, 10);
        assert_eq!(
            files.len(),
            1,
            "{user}: {}",
            tern.as_ref().map(|t| t.log_text()).unwrap_or_default()
        );
        assert_eq!(std::fs::metadata(&files[0]).unwrap().uid(), uid, "{user}");
        assert_eq!(std::fs::metadata(mail.join(user)).unwrap().uid(), uid, "{user}");
    }
    tern::sys::send_signal(pid, libc::SIGTERM).unwrap();
    if let Some(mut t) = tern {
        assert_eq!(t.wait_exit(10), Some(0), "{}", t.log_text());
        // No pid file in the foreground, and the helper removes none.
        assert!(!pid_path.exists());
    } else {
        assert!(wait_until(10, || !pid_alive(pid)), "ternd did not stop");
        // The helper, still root, removes the pid file the daemon no longer can.
        assert!(wait_until(5, || !pid_path.exists()), "pid file left behind");
    }
}

#[test]
fn root_drops_to_user_when_detached() {
    root_drops_to_user_and_still_delivers_as_the_recipient(false);
}

#[test]
fn root_drops_to_user_in_the_foreground_too() {
    root_drops_to_user_and_still_delivers_as_the_recipient(true);
}

/// `user` naming root (or any account of uid or gid 0) is a configuration error,
/// with -d and -i as without: ternd never keeps running as root.
#[test]
fn root_refuses_a_user_that_is_root() {
    require_root!("ternd's checks of the account it drops to");
    let setup = Setup::new().set("user", "root");
    let conf = setup.write_config();
    for args in [&["-d"][..], &[][..], &["-i"][..]] {
        let out = Command::new(TERND)
            .args(args)
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {err}");
        assert!(err.contains("user = root"), "{args:?}: {err}");
        assert!(err.contains("will not run as root"), "{args:?}: {err}");
    }
    assert!(!setup.path().join("spool").exists(), "nothing done as root");
}

#[test]
fn root_refuses_a_missing_user() {
    require_root!("ternd's checks of the account it drops to");
    let setup = Setup::new().set("user", "no-such-user-tern-test");
    let pid_path = setup.path().join("ternd.pid");
    let setup = setup.set("pid_file", &pid_path.display().to_string());
    let conf = setup.write_config();
    let out = Command::new(TERND)
        .arg("-f")
        .arg(&conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("user no-such-user-tern-test: no such account"),
        "{err}"
    );
}

#[test]
fn a_world_writable_spool_directory_is_refused_by_name() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new();
    let spool = setup.path().join("spool");
    tern::spool::Spool::open(&spool).unwrap();
    std::fs::set_permissions(spool.join("env"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let conf = setup.write_config();
    let out = Command::new(TERND)
        .args(["-d", "-f"])
        .arg(&conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}: mode 0777 lets group or others write it (chmod go-w",
        spool.join("env").display()
    );
    assert!(err.contains(&want), "{err}");
}

#[test]
fn sigterm_lets_data_finish_and_tells_idle_clients() {
    let mut t = Setup::new().start();
    let mut idle = t.connect();
    idle.hello();
    let mut busy = t.connect();
    busy.hello();
    busy.cmd("MAIL FROM:<a@example.test>");
    busy.cmd("RCPT TO:<alice@example.test>");
    assert_eq!(busy.cmd("DATA").code, 354);
    busy.send_raw(b"Subject: in flight\r\n\r\nfirst half\r\n");
    t.signal(libc::SIGTERM);
    // The idle client is told at once.
    let start = Instant::now();
    assert_eq!(idle.reply().status(), "421 4.3.2");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(idle.closed());
    // The message in flight is completed and acknowledged: nothing is lost.
    busy.send_raw(b"second half\r\n.\r\n");
    let r = busy.reply();
    assert_eq!(r.status(), "250 2.0.0", "{r:?}");
    let id = r.queue_id();
    assert_eq!(busy.cmd("NOOP").status(), "421 4.3.2");
    // New connections are refused; the daemon exits 0.
    assert_eq!(t.wait_exit(10), Some(0), "{}", t.log_text());
    assert!(Client::try_connect(t.addr).is_none());
    let (env, body) = t.message(&id);
    assert_eq!(env.recipients.len(), 1);
    assert!(String::from_utf8_lossy(&body).ends_with("first half\nsecond half\n"));
    assert!(t.log_text().contains("stopped"));
}

#[test]
fn sigterm_waits_for_deliveries_in_flight() {
    let setup = Setup::new().deliver().open_to_all();
    let out = setup.path().join("out");
    let mut t = setup
        .aliases(&format!(
            "slow: \"|touch {0}/started; sleep 1; cat > {0}/slow.txt\"\n",
            out.display()
        ))
        .start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(
        c.send_mail("a@example.test", &["slow@example.test"], &message("slow"))
            .code,
        250
    );
    c.cmd("QUIT");
    // Stop while the pipe is still sleeping (it has started, it has not
    // written): the delivery completes first.
    assert!(
        wait_until(10, || out.join("started").exists()),
        "{}",
        t.log_text()
    );
    assert!(
        !out.join("slow.txt").exists(),
        "the delivery ended before the signal"
    );
    t.signal(libc::SIGTERM);
    assert_eq!(t.wait_exit(20), Some(0), "{}", t.log_text());
    assert!(out.join("slow.txt").exists(), "{}", t.log_text());
}

#[test]
fn sigusr1_runs_the_queue_now() {
    let t = Setup::new()
        .deliver()
        .set("retry_initial", "1h")
        .aliases("slow: \"|exit 75\"\n")
        .open_to_all()
        .start();
    let mut c = t.connect();
    c.hello();
    let id = c
        .send_mail("a@example.test", &["slow@example.test"], &message("later"))
        .queue_id();
    let attempt = format!("{id}: to=<slow@example.test>");
    assert!(wait_until(5, || t.log_text().matches(&attempt).count() == 1));
    // The next try is an hour away; SIGUSR1 makes it now.
    t.signal(libc::SIGUSR1);
    assert!(
        wait_until(5, || t.log_text().matches(&attempt).count() == 2),
        "{}",
        t.log_text()
    );
}

/// Rewrite one `key = value` line of a running ternd's config file.
fn edit_config(t: &crate::common::Tern, key: &str, value: &str) {
    let path = t.setup.path().join("tern.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(&format!("{key} =")))
        .map(str::to_owned)
        .collect();
    lines.push(format!("{key} = {value}"));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn sighup_applies_a_new_config_to_new_sessions_only_and_keeps_it_when_broken() {
    let t = Setup::new().set("max_recipients", "1").start();
    // A session open across the reload: it keeps the limit it started with.
    let mut old = t.connect();
    old.hello();
    assert_eq!(old.cmd("MAIL FROM:<s@example.test>").code, 250);
    assert_eq!(old.cmd("RCPT TO:<alice@example.test>").code, 250);
    assert_eq!(old.cmd("RCPT TO:<bob@example.test>").code, 452);

    edit_config(&t, "max_recipients", "3");
    t.signal(libc::SIGHUP);
    assert!(t.wait_log("SIGHUP: configuration reloaded"), "{}", t.log_text());

    let mut new = t.connect();
    new.hello();
    let r = new.send_mail(
        "s@example.test",
        &["alice@example.test", "bob@example.test", "carol@example.test"],
        &message("after reload"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    new.cmd("QUIT");

    // The open session was not dropped and still has its own limit.
    assert_eq!(old.cmd("RCPT TO:<carol@example.test>").code, 452);
    assert_eq!(old.cmd("DATA").code, 354);
    old.send_raw(message("before reload").as_bytes());
    old.send_raw(b".\r\n");
    assert_eq!(old.reply().code, 250);
    old.cmd("QUIT");

    // A broken file is logged with its line and the running config kept.
    edit_config(&t, "max_recipients", "many");
    t.signal(libc::SIGHUP);
    assert!(
        t.wait_log("keeping the running configuration"),
        "{}",
        t.log_text()
    );
    let log = t.log_text();
    assert!(log.contains("tern.conf:"), "{log}");
    let mut after = t.connect();
    after.hello();
    let r = after.send_mail(
        "s@example.test",
        &["alice@example.test", "bob@example.test", "carol@example.test"],
        &message("broken reload"),
    );
    assert_eq!(r.code, 250, "{r:?}");
}

#[test]
fn sighup_listens_on_a_new_address_and_closes_a_removed_one() {
    let t = Setup::new().start();
    let port = free_port();
    let added = format!("127.0.0.1:{port}");
    edit_config(&t, "listen", &format!("127.0.0.1:0 {added}"));
    t.signal(libc::SIGHUP);
    assert!(t.wait_log("SIGHUP: configuration reloaded"), "{}", t.log_text());
    assert!(
        t.log_text()
            .contains(&format!("now listening for smtp on {added}")),
        "{}",
        t.log_text()
    );
    let mut c = Client::connect(added.parse().unwrap());
    assert_eq!(c.reply().code, 220);
    c.cmd("QUIT");
    // Removed again: that port stops accepting, the first one goes on.
    edit_config(&t, "listen", "127.0.0.1:0");
    t.signal(libc::SIGHUP);
    let gone = format!("no longer listening for smtp on {added}");
    assert!(
        wait_until(10, || t.log_text().contains(&gone)),
        "{}",
        t.log_text()
    );
    assert!(
        wait_until(5, || std::net::TcpStream::connect(&added).is_err()),
        "still accepting on {added}"
    );
    let mut c = t.connect();
    assert_eq!(c.reply().code, 220);
}

#[test]
fn sighup_applies_a_new_log_level_at_once() {
    let t = Setup::new().start();
    edit_config(&t, "log_level", "debug");
    t.signal(libc::SIGHUP);
    assert!(t.wait_log("SIGHUP: log_level is now DEBUG"), "{}", t.log_text());
    assert!(t.wait_log("SIGHUP: configuration reloaded"), "{}", t.log_text());
    // Down to warn: the next reload's info lines are not logged...
    // (a restart-only change makes that reload log a warning to wait for).
    edit_config(&t, "log_level", "warn");
    edit_config(&t, "delivery_threads", "3");
    edit_config(&t, "spool_sync", "syncfs");
    t.signal(libc::SIGHUP);
    assert!(t.wait_log("SIGHUP: delivery_threads changed"), "{}", t.log_text());
    assert!(t.wait_log("SIGHUP: spool_sync changed"), "{}", t.log_text());
    // ...and a broken file after it, an error, is.
    edit_config(&t, "max_recipients", "many");
    t.signal(libc::SIGHUP);
    assert!(
        t.wait_log("keeping the running configuration"),
        "{}",
        t.log_text()
    );
    let log = t.log_text();
    assert_eq!(log.matches("SIGHUP: configuration reloaded").count(), 1, "{log}");
}

/// Issue 17, 6: a detached ternd that cannot reach syslog says so when it
/// starts (its log would be lost); with `log_file` it logs there instead, as
/// syslog would, and says nothing.
#[test]
fn detached_without_syslog_warns_and_log_file_takes_its_place() {
    // What this machine offers decides what to expect.
    let reachable = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.connect("/dev/log"))
        .is_ok();
    let run = |log_file: Option<&std::path::Path>| {
        let setup = Setup::new().set("listen", &format!("127.0.0.1:{}", free_port()));
        let pid_path = setup.path().join("ternd.pid");
        let mut setup = setup.set("pid_file", &pid_path.display().to_string());
        if let Some(p) = log_file {
            setup = setup.set("log_file", &p.display().to_string());
        }
        let conf = setup.write_config();
        let (pid, err) = start_detached_saying(&conf, &pid_path);
        let _stop = Stop(pid);
        tern::sys::send_signal(pid, libc::SIGTERM).unwrap();
        assert!(wait_until(10, || !pid_alive(pid)), "ternd did not stop");
        (setup, err)
    };
    let (_setup, err) = run(None);
    let warned = err.contains("ternd: warning: cannot reach syslog (/dev/log: ");
    assert_eq!(warned, !reachable, "{err}");
    if warned {
        assert!(err.contains("set log_file = PATH in "), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tern.log");
    let (_setup, err) = run(Some(&log));
    assert_eq!(err, "");
    let text = std::fs::read_to_string(&log).unwrap();
    let host = tern::sys::hostname().unwrap();
    let host = host.split('.').next().unwrap().to_owned();
    let started = text
        .lines()
        .find(|l| l.contains("ternd started, pid"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(started.contains(&format!("Z {host} ternd[")), "{started}");
    assert!(text.contains("]: stopped"), "{text}");
    // Created for the account the daemon runs as, 0640.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&log).unwrap();
    assert_eq!(m.mode() & 0o777, 0o640);
    if let Some(account) = daemon_account() {
        assert_eq!(m.uid(), account.uid);
    }
}
