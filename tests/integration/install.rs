//! The Makefile's targets for administrators and developers: `make install
//! DESTDIR=...` lays out the tree (binaries, links, man pages, examples, the
//! configuration, never overwritten, and the spool with its modes) and `make
//! uninstall` takes away the programs and pages but not the configuration or
//! the spool; `make install-mta` and `uninstall-mta` switch the system's
//! sendmail to tern and back; `make run` serves the development configuration.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::TERND;

/// Run make in the source tree with the test's binaries (no release build needed).
fn make(target: &str, destdir: &Path) -> String {
    let bins = Path::new(TERND).parent().expect("the binaries' directory");
    let out = Command::new("make")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg(target)
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg("PREFIX=/usr/local")
        .arg(format!("BINARIES={}", bins.display()))
        // Not the jobserver or flags of a `make test` around us.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .expect("run make (is it installed?)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "make {target} failed:\n{text}");
    text
}

/// The installed ternd accepts the installed configuration (`ternd -n`).
fn check_config(usr: &Path, conf: &Path) {
    let out = Command::new(usr.join("sbin/ternd"))
        .arg("-n")
        .arg("-f")
        .arg(conf)
        .output()
        .expect("ternd -n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn link(p: &Path) -> PathBuf {
    fs::read_link(p).unwrap_or_else(|e| panic!("{} is not a symbolic link: {e}", p.display()))
}

#[test]
fn make_install_with_destdir_lays_out_the_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    let said = make("install", d);
    let usr = d.join("usr/local");

    for b in ["ternd", "ternctl", "sendmail"] {
        let p = usr.join("sbin").join(b);
        // Staged: no setgid bit on sendmail, since its group cannot be set here.
        assert_eq!(mode(&p), 0o755, "{}", p.display());
        // The same size as the built program (reading 100 MB of debug build to
        // compare would only slow the timing-sensitive tests running beside this).
        assert_eq!(
            fs::metadata(&p).expect("installed binary").len(),
            fs::metadata(Path::new(TERND).with_file_name(b))
                .expect("built binary")
                .len(),
            "{b} is not the built program"
        );
    }
    for l in ["mailq", "newaliases"] {
        assert_eq!(link(&usr.join("sbin").join(l)), Path::new("sendmail"));
        assert_eq!(
            link(&usr.join("bin").join(l)),
            Path::new("/usr/local/sbin/sendmail")
        );
    }
    assert!(
        said.contains("Staged install"),
        "no note on what to do as root:\n{said}"
    );
    assert!(said.contains("chmod 2755 /usr/local/sbin/sendmail"), "{said}");

    let man = usr.join("share/man");
    for (sec, page) in [
        ("man5", "tern.conf.5"),
        ("man5", "aliases.5"),
        ("man8", "ternd.8"),
        ("man8", "sendmail.8"),
        ("man8", "ternctl.8"),
    ] {
        let p = man.join(sec).join(page);
        assert_eq!(mode(&p), 0o644, "{}", p.display());
        assert_eq!(
            fs::read(&p).unwrap(),
            fs::read(src.join("man").join(page)).unwrap()
        );
    }
    assert_eq!(link(&man.join("man8/mailq.8")), Path::new("sendmail.8"));
    assert_eq!(link(&man.join("man8/newaliases.8")), Path::new("sendmail.8"));

    let ex = usr.join("share/examples/tern");
    assert_eq!(mode(&ex.join("rc.d/ternd")), 0o755);
    assert_eq!(mode(&ex.join("init.d/ternd")), 0o755);
    let unit = fs::read_to_string(ex.join("ternd.service")).expect("ternd.service");
    assert!(
        unit.contains("ExecStart=/usr/local/sbin/ternd -f /etc/tern/tern.conf"),
        "{unit}"
    );
    for f in ["inetd.conf.sample", "xinetd.d/smtp", "aliases"] {
        assert!(ex.join(f).is_file(), "examples/{f} missing");
    }

    let conf = d.join("etc/tern/tern.conf");
    let aliases = d.join("etc/tern/aliases");
    assert_eq!(
        fs::read(&conf).unwrap(),
        fs::read(src.join("etc/tern.conf")).unwrap()
    );
    assert_eq!(
        fs::read(&aliases).unwrap(),
        fs::read(src.join("etc/aliases")).unwrap()
    );
    assert_eq!(mode(&conf), 0o644);

    let spool = d.join("var/spool/tern");
    assert_eq!(mode(&spool), 0o711);
    for sub in ["tmp", "msg", "env", "hold", "corrupt"] {
        assert_eq!(mode(&spool.join(sub)), 0o700, "spool/{sub}");
    }
    assert_eq!(mode(&spool.join("maildrop")), 0o1730);

    // The installed configuration is valid as shipped.
    check_config(&usr, &conf);

    // A second install keeps the administrator's configuration and aliases.
    fs::write(&conf, "# mine\nmax_recipients = 7\n").unwrap();
    fs::write(&aliases, "postmaster: me\n").unwrap();
    let said = make("install", d);
    assert_eq!(fs::read_to_string(&conf).unwrap(), "# mine\nmax_recipients = 7\n");
    assert_eq!(fs::read_to_string(&aliases).unwrap(), "postmaster: me\n");
    assert!(said.contains("keeping"), "{said}");

    // uninstall: programs, links and pages go; configuration and spool stay.
    make("uninstall", d);
    for p in [
        "sbin/ternd",
        "sbin/ternctl",
        "sbin/sendmail",
        "sbin/mailq",
        "sbin/newaliases",
        "bin/mailq",
        "bin/newaliases",
        "share/man/man5/tern.conf.5",
        "share/man/man8/sendmail.8",
        "share/man/man8/mailq.8",
        "share/man/man8/ternctl.8",
        "share/examples/tern",
    ] {
        assert!(
            fs::symlink_metadata(usr.join(p)).is_err(),
            "{p} left after uninstall"
        );
    }
    assert_eq!(fs::read_to_string(&conf).unwrap(), "# mine\nmax_recipients = 7\n");
    assert!(aliases.is_file());
    assert!(spool.join("maildrop").is_dir());
}

/// `make install-strip`: the same tree, with binaries stripped of their symbols
/// and debug info, and still working.
#[test]
fn make_install_strip_installs_smaller_working_binaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make("install-strip", d);
    let usr = d.join("usr/local");
    for b in ["ternd", "ternctl", "sendmail"] {
        let p = usr.join("sbin").join(b);
        assert_eq!(mode(&p), 0o755, "{}", p.display());
        let installed = fs::metadata(&p).expect("installed binary").len();
        let built = fs::metadata(Path::new(TERND).with_file_name(b))
            .expect("built binary")
            .len();
        assert!(
            installed < built,
            "{b}: {installed} bytes installed, {built} built: not stripped"
        );
    }
    let conf = d.join("etc/tern/tern.conf");
    check_config(&usr, &conf);
}

/// etc/init.d/ternd drives the real daemon: start returns once it listens, status
/// reads the pid file, configtest, flush and reload signal it, stop waits for it.
#[test]
fn the_init_script_starts_checks_reloads_and_stops_ternd() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let setup = crate::common::Setup::new().set("listen", &format!("127.0.0.1:{port}"));
    let pid_path = setup.path().join("ternd.pid");
    let setup = setup.set("pid_file", &pid_path.display().to_string());
    let conf = setup.write_config();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/init.d/ternd");
    let run = |cmd: &str| {
        let out = Command::new("sh")
            .arg(&script)
            .arg(cmd)
            .env("TERND", TERND)
            .env("CONFIG", &conf)
            .env_remove("PIDFILE")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run the init script");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = run("status");
    assert_eq!(code, Some(3), "status before start: {text}");
    let (code, text) = run("configtest");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("configuration OK"), "{text}");

    // The script finds the pid file through the configuration's pid_file.
    let (code, text) = run("start");
    assert_eq!(code, Some(0), "start: {text}");
    let pid: u32 = fs::read_to_string(&pid_path)
        .expect("pid file after start")
        .trim()
        .parse()
        .expect("a pid");
    let alive = || Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive());
    // Started means listening: no waiting needed.
    let mut c = crate::common::Client::connect(format!("127.0.0.1:{port}").parse().unwrap());
    assert_eq!(c.reply().code, 220);
    assert_eq!(c.cmd("QUIT").code, 221);

    let (code, text) = run("status");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("running (pid {pid})")), "{text}");
    let (code, text) = run("start");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("already running"), "{text}");
    for cmd in ["flush", "reload"] {
        let (code, text) = run(cmd);
        assert_eq!(code, Some(0), "{cmd}: {text}");
        assert!(alive(), "ternd died on {cmd}");
    }

    let (code, text) = run("stop");
    assert_eq!(code, Some(0), "stop: {text}");
    assert!(!alive(), "ternd still running after stop returned");
    assert!(!pid_path.exists());
    let (code, text) = run("status");
    assert_eq!(code, Some(3), "{text}");

    // A broken configuration: start refuses with ternd's message, starts nothing.
    fs::write(&conf, format!("listen = 127.0.0.1:{port}\nlisen = x\n")).unwrap();
    let (code, text) = run("start");
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("unknown key"), "{text}");
    assert!(!pid_path.exists());
}

/// A free loopback port (bound, then released for the program under test).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A program started in a process group of its own, killed with the whole
/// group if the test ends before it does.
struct Group(std::process::Child);

impl Group {
    fn signal(&self, sig: i32) {
        let pgid = i32::try_from(self.0.id()).expect("pid");
        // SAFETY: kill(2) on the process group this test created.
        unsafe { libc::kill(-pgid, sig) };
    }

    /// The exit status, waiting up to `secs`.
    fn wait_secs(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(st) = self.0.try_wait().expect("wait") {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.signal(libc::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

/// Lines from a pipe, collected by a thread as they come.
fn collect(from: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    use std::io::BufRead;
    let text = Arc::new(Mutex::new(String::new()));
    let to = Arc::clone(&text);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            to.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    text
}

/// `make run PORT=N`: ternd runs the development configuration on that port
/// (the configuration it writes says so), the instructions it prints name
/// that port, and the Python one-liner they give delivers a message into the
/// development Maildir; Ctrl-C stops it. RUNDIR keeps the test's spool out of
/// the source tree; CARGO=true and RUN_BINARIES use the binaries this test
/// run built (a cargo build inside cargo test would wait for cargo's lock).
#[test]
fn make_run_serves_the_port_it_is_given_and_says_so() {
    use std::os::unix::process::CommandExt;

    let dir = tempfile::tempdir().expect("tempdir");
    // Run as root, ternd drops to RUN_USER, which must reach the spool.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let rundir = dir.path().join("var");
    let port = free_port();
    assert_ne!(port, 2525);
    let bins = Path::new(TERND).parent().expect("the binaries' directory");
    let run_user = crate::common::daemon_account().map_or_else(|| "nobody".to_owned(), |pw| pw.name.clone());
    let make_run = |port: &str| {
        let mut c = Command::new("make");
        c.arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .arg("--no-print-directory")
            .arg("run")
            .arg(format!("PORT={port}"))
            .arg(format!("RUNDIR={}", rundir.display()))
            .arg(format!("RUN_BINARIES={}", bins.display()))
            .arg("CARGO=true")
            .arg(format!("RUN_USER={run_user}"))
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("MAKELEVEL")
            .stdin(Stdio::null());
        c
    };

    // A port that is not one is refused before anything starts.
    let out = make_run("25x").output().expect("make run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PORT=25x is not a port number"), "{err}");

    let mut group = Group(
        make_run(&port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("make run"),
    );
    // make's output, and ternd's log (stderr, with -d).
    let said = collect(group.0.stdout.take().expect("stdout"));
    let log = collect(group.0.stderr.take().expect("stderr"));
    let deadline = Instant::now() + Duration::from_secs(30);
    for (text, needle) in [
        (&said, "Stop ternd with Ctrl-C.".to_owned()),
        (&log, format!("listening on 127.0.0.1:{port}")),
    ] {
        while !text.lock().unwrap().contains(&needle) {
            assert!(
                Instant::now() < deadline && group.0.try_wait().expect("wait").is_none(),
                "no {needle:?} from make run:\n{}{}",
                said.lock().unwrap(),
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let said = said.lock().unwrap().clone();
    let conf = fs::read_to_string(rundir.join("tern.dev.conf")).expect("the generated configuration");
    assert!(
        conf.lines().any(|l| l == format!("listen = 127.0.0.1:{port}")),
        "{conf}"
    );
    assert!(!conf.contains("2525"), "{conf}");
    assert!(said.contains(&format!("ternd on 127.0.0.1:{port} ")), "{said}");
    assert!(said.contains(&format!("telnet 127.0.0.1 {port} ")), "{said}");
    assert!(
        !said.contains("2525"),
        "the instructions name the default port:\n{said}"
    );

    let mut c = crate::common::Client::connect(format!("127.0.0.1:{port}").parse().unwrap());
    let g = c.reply();
    assert_eq!(g.text(), "220 localhost ESMTP tern", "{g:?}");
    assert_eq!(c.cmd("QUIT").code, 221);

    // The printed one-liner, as a developer would paste it.
    let python = said
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("python3 -c"))
        .expect("a python3 example in the instructions");
    let out = Command::new("sh").arg("-c").arg(python).output().expect("sh");
    if out.status.code() == Some(127) {
        eprintln!("make_run: python3 not installed; the printed example was not run");
    } else {
        assert!(
            out.status.success(),
            "{python}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let new = rundir.join("mail/root/new");
        while fs::read_dir(&new).map_or(true, |mut d| d.next().is_none()) {
            assert!(
                Instant::now() < deadline,
                "nothing in {}:\n{}",
                new.display(),
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // Ctrl-C reaches the whole foreground group: ternd stops, make ends.
    group.signal(libc::SIGINT);
    assert!(
        group.wait_secs(30).is_some(),
        "make run still running after SIGINT"
    );
    assert!(log.lock().unwrap().contains("stopped"), "{}", log.lock().unwrap());
}
