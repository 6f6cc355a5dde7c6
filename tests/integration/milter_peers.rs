//! STARTER, to be folded into the shared harness (tests/integration/common/, branch
//! `harness`, which did not exist yet when this was written): the real peers the
//! milter and policy-service tests talk to, each started privately in a temp dir on
//! a loopback port and killed on drop.
//!
//! - [`opendkim`]: OpenDKIM (Debian `opendkim`, `opendkim-tools`) signing for
//!   example.org with a key made for the test.
//! - [`test_milter`]: tests/integration/peers/test_milter.py on Debian's
//!   python3-milter (libmilter underneath).
//! - [`postgrey`]: postgrey with its own database directory.
//!
//! A missing peer is a visible skip (`skipped: ...` on stderr) and, under CI=true,
//! a failure: .ci/run installs them all.

#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's python, where python3-milter and python3-dkim live (a python3 earlier
/// on PATH, e.g. pyenv's, does not have them).
pub const PYTHON: &str = "/usr/bin/python3";

/// Say a peer is missing: a failure under CI, a visible skip elsewhere.
pub fn missing(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is missing, and CI must run this test (.ci/run installs it)");
    }
    eprintln!("skipped: {what} missing (apt-get install it; CI does)");
}

pub fn have_program(path: &str) -> bool {
    Path::new(path).is_file()
}

pub fn have_python_module(module: &str) -> bool {
    Command::new(PYTHON)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A running peer: its process, port and directory (kept, with its log, when a
/// test fails: the path is printed).
pub struct Peer {
    pub name: &'static str,
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Peer {
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}):\n{}",
                self.name,
                self.dir.path().display(),
                self.log()
            );
        }
    }
}

/// Start `cmd` (stdout and stderr to DIR/log) and wait until `port` accepts.
fn start(name: &'static str, mut cmd: Command, port: u16, dir: tempfile::TempDir) -> Peer {
    let log = fs::File::create(dir.path().join("log")).expect("log file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let mut peer = Peer {
        name,
        child,
        port,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return peer;
        }
        if let Ok(Some(st)) = peer.child.try_wait() {
            panic!("{name} exited with {st} before listening:\n{}", peer.log());
        }
        if Instant::now() > deadline {
            panic!(
                "{name} did not listen on 127.0.0.1:{port} in 15 s:\n{}",
                peer.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// OpenDKIM, signing and verifying for example.org (selector `test`).
pub struct OpenDkim {
    pub peer: Peer,
    /// The public key record to publish at test._domainkey.example.org.
    pub txt: String,
}

pub fn opendkim() -> Option<OpenDkim> {
    if !have_program("/usr/sbin/opendkim") || !have_program("/usr/sbin/opendkim-genkey") {
        missing("opendkim (opendkim, opendkim-tools)");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let st = Command::new("/usr/sbin/opendkim-genkey")
        .args(["-b", "1024", "-d", "example.org", "-s", "test", "-D"])
        .arg(dir.path())
        .status()
        .expect("opendkim-genkey");
    assert!(st.success(), "opendkim-genkey failed");
    // test.txt is a zone-file TXT record: join its quoted strings.
    let zone = fs::read_to_string(dir.path().join("test.txt")).expect("test.txt");
    let txt: String = zone
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    // The key lookups OpenDKIM makes when verifying are answered from a file.
    fs::write(
        dir.path().join("dns"),
        format!("test._domainkey.example.org {txt}\n"),
    )
    .unwrap();
    let port = free_port();
    let conf = dir.path().join("opendkim.conf");
    fs::write(
        &conf,
        format!(
            "Syslog no\nLogWhy yes\nMode sv\nDomain example.org\nSelector test\n\
             KeyFile {key}\nSocket inet:{port}@127.0.0.1\nRequireSafeKeys false\n\
             Canonicalization relaxed/relaxed\nPidFile {pid}\nTestDNSData file:{dns}\n\
             InternalHosts 127.0.0.1\nUMask 007\n",
            key = dir.path().join("test.private").display(),
            pid = dir.path().join("pid").display(),
            dns = dir.path().join("dns").display(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new("/usr/sbin/opendkim");
    cmd.arg("-f").arg("-x").arg(&conf);
    Some(OpenDkim {
        peer: start("opendkim", cmd, port, dir),
        txt,
    })
}

/// tests/integration/peers/test_milter.py.
pub fn test_milter() -> Option<Peer> {
    if !have_program(PYTHON) || !have_python_module("Milter") {
        missing("python3-milter");
        return None;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/integration/peers/test_milter.py");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script)
        .arg(format!("inet:{port}@127.0.0.1"))
        .current_dir(dir.path());
    Some(start("test milter", cmd, port, dir))
}

/// postgrey greylisting for `delay` seconds, its database in its temp dir.
pub fn postgrey(delay: u32) -> Option<Peer> {
    if !have_program("/usr/sbin/postgrey") {
        missing("postgrey");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    fs::create_dir(&db).unwrap();
    // postgrey drops to --user; root keeps the test self-contained (the package's
    // postgrey user may not own our temp dir).
    let user = if is_root() { "root" } else { "nobody" };
    let port = free_port();
    let mut cmd = Command::new("/usr/sbin/postgrey");
    cmd.arg(format!("--inet=127.0.0.1:{port}"))
        .arg(format!("--dbdir={}", db.display()))
        .arg(format!("--delay={delay}"))
        .arg(format!("--user={user}"))
        .arg("--auto-whitelist-clients=0")
        .arg(format!(
            "--whitelist-clients={}",
            dir.path().join("none").display()
        ))
        .arg(format!(
            "--whitelist-recipients={}",
            dir.path().join("none").display()
        ))
        .arg("--hostname=greylist.test")
        .arg("--verbose");
    fs::write(dir.path().join("none"), "").unwrap();
    Some(start("postgrey", cmd, port, dir))
}

/// Whether the tests run as root (id -u, without unsafe code).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
