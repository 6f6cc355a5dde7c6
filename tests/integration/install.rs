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

/// The programs `make install-mta` points at tern's sendmail.
const MTA_LINKS: [&str; 4] = [
    "usr/sbin/sendmail",
    "usr/lib/sendmail",
    "usr/bin/mailq",
    "usr/bin/newaliases",
];

/// What one of the system's mail programs is, exactly: absent, a symbolic
/// link (its target), or a file (its bytes and mode).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Absent,
    Link(PathBuf),
    File(Vec<u8>, u32),
}

fn node(p: &Path) -> Node {
    match fs::symlink_metadata(p) {
        Err(_) => Node::Absent,
        Ok(m) if m.file_type().is_symlink() => Node::Link(fs::read_link(p).unwrap()),
        Ok(m) => Node::File(fs::read(p).unwrap(), m.permissions().mode() & 0o7777),
    }
}

/// The four programs and what is kept beside them.
fn mta_state(root: &Path) -> Vec<(String, Node)> {
    MTA_LINKS
        .iter()
        .flat_map(|l| [l.to_string(), format!("{l}.pre-tern")])
        .map(|l| {
            let n = node(&root.join(&l));
            (l, n)
        })
        .collect()
}

/// A root that looks like Debian with Postfix: sendmail a setgid program,
/// the others relative links to it; no newaliases, to cover a name that had
/// nothing before.
fn plant_postfix(root: &Path) {
    for d in ["usr/sbin", "usr/lib", "usr/bin"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let sendmail = root.join("usr/sbin/sendmail");
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&sendmail, bytes).unwrap();
    fs::set_permissions(&sendmail, fs::Permissions::from_mode(0o2755)).unwrap();
    for l in ["usr/lib/sendmail", "usr/bin/mailq"] {
        std::os::unix::fs::symlink("../sbin/sendmail", root.join(l)).unwrap();
    }
}

/// After install-mta: every name is tern's link, and what was there is
/// kept, unchanged, under NAME.pre-tern.
fn assert_switched(root: &Path, before: &[(String, Node)]) {
    let now = mta_state(root);
    for (i, l) in MTA_LINKS.iter().enumerate() {
        assert_eq!(
            now[2 * i].1,
            Node::Link("/usr/local/sbin/sendmail".into()),
            "/{l}"
        );
        assert_eq!(now[2 * i + 1].1, before[2 * i].1, "/{l}.pre-tern");
    }
}

/// `make install-mta` into a fake root: the system's sendmail, mailq and
/// newaliases become links to tern's sendmail and what was there is kept;
/// a second run changes nothing; `make uninstall-mta` and `make uninstall`
/// put every original back byte for byte (mode included) and leave nothing
/// behind; a link the administrator changed meanwhile is left alone.
#[test]
fn make_install_mta_switches_the_system_sendmail_and_uninstall_restores_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make("install", d);
    plant_postfix(d);
    let before = mta_state(d);

    let said = make("install-mta", d);
    assert_switched(d, &before);
    assert!(
        said.contains("mv "),
        "no dpkg database in the fake root: a rename\n{said}"
    );
    let said = make("install-mta", d);
    assert_switched(d, &before);
    assert!(
        said.contains("already points at /usr/local/sbin/sendmail"),
        "{said}"
    );

    make("uninstall-mta", d);
    assert_eq!(mta_state(d), before);

    // uninstall undoes install-mta too, before it removes tern's programs.
    make("install-mta", d);
    assert_switched(d, &before);
    make("uninstall", d);
    assert_eq!(mta_state(d), before);
    assert!(!d.join("usr/local/sbin/sendmail").exists());

    // A name changed by hand after the switch is not tern's to remove; its
    // original stays where it was kept, and uninstall-mta says so.
    make("install", d);
    make("install-mta", d);
    let mailq = d.join("usr/bin/mailq");
    fs::remove_file(&mailq).unwrap();
    fs::write(&mailq, "#!/bin/sh\n# mine\n").unwrap();
    let said = make("uninstall-mta", d);
    assert!(
        said.contains("/usr/bin/mailq is not tern's link any more"),
        "{said}"
    );
    assert_eq!(fs::read_to_string(&mailq).unwrap(), "#!/bin/sh\n# mine\n");
    let now = mta_state(d);
    assert_eq!(now[5].1, before[4].1, "the original mailq is kept");
    for i in [0, 1, 2, 3, 6, 7] {
        assert_eq!(now[i], before[i]);
    }

    // Nothing to switch without tern installed.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = Command::new("make")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg("install-mta")
        .arg(format!("DESTDIR={}", empty.path().display()))
        .env_remove("MAKEFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .expect("make");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("make install first"),
        "{out:?}"
    );
}

/// On Debian the originals are kept with dpkg-divert, so that a package
/// upgrade (Postfix's, Exim's) installs its new sendmail beside tern's link
/// rather than over it: the real dpkg-divert on a fake root holding its own
/// dpkg database (`dpkg-divert --root`), which cannot touch this machine's.
#[test]
fn make_install_mta_uses_dpkg_divert_where_there_is_a_dpkg_database() {
    // Not Debian: only the rename (the other install-mta tests) is tested.
    require_tool!("dpkg-divert");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::create_dir_all(d.join("var/lib/dpkg")).unwrap();
    make("install", d);
    plant_postfix(d);
    let before = mta_state(d);
    let diversions = || {
        let out = Command::new("dpkg-divert")
            .arg("--root")
            .arg(d)
            .arg("--list")
            .output()
            .expect("dpkg-divert --list");
        let mut l: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        l.sort();
        l
    };

    let said = make("install-mta", d);
    assert!(said.contains("dpkg-divert --root"), "{said}");
    assert_switched(d, &before);
    let mut want: Vec<String> = MTA_LINKS
        .iter()
        .map(|l| format!("local diversion of /{l} to /{l}.pre-tern"))
        .collect();
    want.sort();
    assert_eq!(diversions(), want);
    make("install-mta", d);
    assert_eq!(diversions(), want);

    make("uninstall", d);
    assert_eq!(mta_state(d), before);
    assert!(diversions().is_empty(), "{:?}", diversions());
}

/// The real thing, as root: `make install-mta` and `make uninstall-mta`
/// without DESTDIR, on this machine's /usr and dpkg database, but inside a
/// private mount namespace where both are overlays on a tmpfs: whatever the
/// targets do stays in the namespace and is gone when it ends. Through the
/// links, mailq and newaliases run tern's program; afterwards every original
/// (Postfix's, where it is installed) is back, byte for byte, and no
/// diversion is left.
#[test]
fn make_install_mta_on_the_real_system_inside_a_throwaway_mount_namespace() {
    require_root!("the real /usr/sbin/sendmail, in a private mount namespace");
    let dir = tempfile::tempdir().expect("tempdir");
    let t = dir.path();
    let bins = Path::new(TERND).parent().expect("the binaries' directory");
    let ns = fs::read_link("/proc/self/ns/mnt").expect("our mount namespace");
    let script = r#"
set -e
t=$1; src=$2; bins=$3; outer=$4
# Never touch anything unless this is a mount namespace of our own.
[ "$(readlink /proc/self/ns/mnt)" != "$outer" ] || { echo "NOT PRIVATE"; exit 3; }
mount -t tmpfs tmpfs "$t"
mkdir "$t/u1" "$t/w1" "$t/u2" "$t/w2" "$t/spool"
mount -t overlay overlay -o "lowerdir=/usr,upperdir=$t/u1,workdir=$t/w1" /usr
mount -t overlay overlay -o "lowerdir=/var/lib/dpkg,upperdir=$t/u2,workdir=$t/w2" /var/lib/dpkg
echo MOUNTED
# A system without an MTA gets a stand-in, so there is something to restore.
[ -e /usr/sbin/sendmail ] || { printf 'not tern\n' > /usr/sbin/sendmail; chmod 755 /usr/sbin/sendmail; }
state() {
    for f in /usr/sbin/sendmail /usr/lib/sendmail /usr/bin/mailq /usr/bin/newaliases; do
        if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"
        elif [ -e "$f" ]; then echo "$f $(stat -c %a:%u:%g "$f") $(sha256sum < "$f")"
        else echo "$f absent"; fi
        ls -d "$f.pre-tern" 2>/dev/null || true
    done
    if command -v dpkg-divert >/dev/null; then dpkg-divert --list | grep -E 'sendmail|mailq|newaliases' | sort || true; fi
}
echo BEFORE; state; echo END
make -s -C "$src" install-mta SBINDIR="$bins" >/dev/null
echo INSTALLED; state; echo END
printf 'spool = %s/spool\n' "$t" > "$t/tern.conf"
echo RUN; TERN_CONFIG="$t/tern.conf" /usr/bin/mailq; TERN_CONFIG="$t/tern.conf" /usr/bin/newaliases; echo END
make -s -C "$src" uninstall-mta SBINDIR="$bins" >/dev/null
echo AFTER; state; echo END
"#;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(t)
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg(bins)
        .arg(&ns)
        .env_remove("MAKEFLAGS")
        .env_remove("MAKELEVEL")
        .stdin(Stdio::null())
        .output();
    let text = match &out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("{e}"),
    };
    if !text.contains("MOUNTED") {
        eprintln!(
            "install-mta: no private mount namespace with overlays here ({}); the real /usr/sbin/sendmail is not tested",
            text.trim()
        );
        return;
    }
    assert!(out.as_ref().is_ok_and(|o| o.status.success()), "{text}");
    let block = |name: &str| -> Vec<String> {
        let start = text
            .find(&format!("{name}\n"))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        text[start..]
            .lines()
            .skip(1)
            .take_while(|l| *l != "END")
            .map(str::to_owned)
            .collect()
    };
    let (before, installed, after) = (block("BEFORE"), block("INSTALLED"), block("AFTER"));
    assert_eq!(before, after, "the originals are not back as they were:\n{text}");
    assert!(!after.iter().any(|l| l.contains("pre-tern")), "{text}");
    let link = format!("-> {}/sendmail", bins.display());
    for l in MTA_LINKS {
        assert!(
            installed.iter().any(|i| *i == format!("/{l} {link}")),
            "/{l} is not tern's link:\n{text}"
        );
    }
    if Command::new("dpkg-divert").arg("--version").output().is_ok() {
        for l in MTA_LINKS {
            assert!(
                installed
                    .iter()
                    .any(|i| *i == format!("local diversion of /{l} to /{l}.pre-tern")),
                "no diversion of /{l}:\n{text}"
            );
        }
    }
    let run = block("RUN");
    assert_eq!(
        run,
        ["Mail queue is empty", "newaliases: no aliases file configured"],
        "{text}"
    );
}
