//! The test harness: start the real `ternd` on a free loopback port with a
//! throwaway spool, talk to it over raw sockets, and look at its spool.

#![allow(dead_code)]

// First: the require_* macros are used by the modules below and the tests.
#[macro_use]
pub mod skip;

pub mod dns;
pub mod dnssec;
pub mod dovecot;
pub mod https;
pub mod milter;
pub mod opendkim;
pub mod peer;
pub mod postfix;
pub mod postgrey;
pub mod process;
pub mod rspamd;
pub mod tools;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tern::spool::{Envelope, QueueId, Spool};

pub const TERND: &str = env!("CARGO_BIN_EXE_ternd");
pub const SENDMAIL: &str = env!("CARGO_BIN_EXE_sendmail");
pub const TERNCTL: &str = env!("CARGO_BIN_EXE_ternctl");

/// What a finished program said.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run `prog` with `args`, `input` on stdin; kill it and fail after 20 s.
pub fn run_program(prog: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(prog)
        .args(args)
        .env_remove("TERN_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", prog.display()));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // A writer thread: the program may exit before reading everything (EPIPE is fine).
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let ereader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} {args:?} did not finish in 20 s", prog.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Output {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&ereader.join().unwrap_or_default()).into_owned(),
    }
}

/// The account every test daemon runs as when the tests run as root (CI does):
/// ternd started as root always drops to its `user`, so the tests run it the way
/// it runs in production. Created, with a group of the same name, when missing.
pub const TEST_USER: &str = "tern-test";

/// The unprivileged account test daemons drop to, or None when the tests do not
/// run as root (ternd then runs as the test's own user and drops nothing).
pub fn daemon_account() -> Option<&'static tern::sys::Passwd> {
    static ACCOUNT: OnceLock<Option<tern::sys::Passwd>> = OnceLock::new();
    ACCOUNT
        .get_or_init(|| (tern::sys::uids().1 == 0).then(ensure_test_account))
        .as_ref()
}

/// Find or create TEST_USER. Test threads share one answer (OnceLock); test
/// processes (two `cargo test` at once) take turns through a lock file, since
/// two useradd runs for one new name can both pass its "exists?" check and the
/// second then rewrites the first's entry with another uid under the feet of a
/// daemon already started. useradd may still fail (/etc/passwd locked by some
/// other tool): look again and retry rather than trust an exit status. Where
/// there is no useradd (or it keeps failing), `nobody` stands in.
fn ensure_test_account() -> tern::sys::Passwd {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(pw) = tern::sys::getpwnam(TEST_USER) {
        return pw;
    }
    // O_NOFOLLOW: the file is in a directory everyone may write.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(std::env::temp_dir().join("tern-test-account.lock"))
        .expect("open the test account's lock file");
    lock.lock().expect("lock the test account's lock file");
    let pw = create_test_account();
    drop(lock);
    pw
}

fn create_test_account() -> tern::sys::Passwd {
    let run = |prog: &str, args: &[&str]| {
        for dir in ["", "/usr/sbin/", "/sbin/"] {
            match Command::new(format!("{dir}{prog}"))
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
            {
                Ok(st) => return st.success(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => return false,
            }
        }
        false
    };
    for _ in 0..50 {
        if let Some(pw) = tern::sys::getpwnam(TEST_USER) {
            return pw;
        }
        if tern::sys::group_id(TEST_USER).is_none() {
            run("groupadd", &["--system", TEST_USER]);
        }
        let made = run(
            "useradd",
            &[
                "--system",
                "--gid",
                TEST_USER,
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "tern test suite",
                TEST_USER,
            ],
        );
        if !made {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if let Some(pw) = tern::sys::getpwnam(TEST_USER) {
        return pw;
    }
    eprintln!("warning: cannot create the {TEST_USER} account; test daemons run as nobody");
    tern::sys::getpwnam("nobody").expect("neither a tern-test nor a nobody account")
}

/// Users and aliases every test server knows.
pub const USERS: &str = "alice\nbob\nCarol\n";
pub const ALIASES: &str = "team: alice, bob\nsales: carol\n";

/// A config under construction: defaults for tests, overridable per key.
pub struct Setup {
    dir: tempfile::TempDir,
    keys: BTreeMap<String, String>,
    /// Environment variables for ternd beyond the test's own.
    env: Vec<(String, String)>,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("tern-test-")
            .tempdir()
            .expect("tempdir");
        let p = dir.path();
        // As root, the daemon drops to the test account: give it the test
        // directory (0700, so other accounts still see nothing of it), where it
        // creates the spool, the control socket and the mailboxes of users
        // without an account. The files written here stay root's, readable by it.
        if let Some(pw) = daemon_account() {
            std::os::unix::fs::chown(p, Some(pw.uid), Some(pw.gid)).expect("chown test dir");
        }
        std::fs::write(p.join("users"), USERS).expect("users");
        std::fs::write(p.join("aliases"), ALIASES).expect("aliases");
        let mut keys = BTreeMap::new();
        for (k, v) in [
            ("hostname", "mx.test".to_owned()),
            // Not the machine's /etc/mailname: bare names get mx.test, as before.
            ("origin", "mx.test".to_owned()),
            ("listen", "127.0.0.1:0".to_owned()),
            ("spool", p.join("spool").display().to_string()),
            ("local_domains", "example.test localhost".to_owned()),
            ("local_users", p.join("users").display().to_string()),
            ("aliases", p.join("aliases").display().to_string()),
            ("relay_networks", "127.0.0.0/8 ::1/128".to_owned()),
            ("mailbox", format!("{}/mail/%u/", p.display())),
            ("retry_initial", "1s".to_owned()),
            ("retry_max", "4s".to_owned()),
            // Most tests look at what the server accepted; delivery tests call deliver().
            ("queue_only", "yes".to_owned()),
            // Never real DNS: a local stub that answers SERVFAIL.
            ("dns_servers", dns::default_stub().to_string()),
            ("dns_timeout", "2s".to_owned()),
        ] {
            keys.insert(k.to_owned(), v);
        }
        if let Some(pw) = daemon_account() {
            keys.insert("user".to_owned(), pw.name.clone());
        }
        Setup {
            dir,
            keys,
            env: Vec::new(),
        }
    }

    pub fn set(mut self, key: &str, value: &str) -> Setup {
        self.keys.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Start ternd with `key=value` in its environment.
    pub fn env(mut self, key: &str, value: &str) -> Setup {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Create `rel` under the test directory for the daemon to write into: as
    /// root, owned by the account the daemon drops to (what root makes is
    /// root's, and the daemon is no longer root).
    pub fn daemon_dir(&self, rel: &str) -> PathBuf {
        let dir = self.dir.path().join(rel);
        std::fs::create_dir_all(&dir).expect("mkdir");
        if let Some(pw) = daemon_account() {
            std::os::unix::fs::chown(&dir, Some(pw.uid), Some(pw.gid)).expect("chown");
        }
        dir
    }

    /// Run the queue runner: deliver what is accepted.
    pub fn deliver(self) -> Setup {
        self.set("queue_only", "no")
    }

    /// Replace the aliases file.
    pub fn aliases(self, text: &str) -> Setup {
        std::fs::write(self.dir.path().join("aliases"), text).expect("aliases");
        self
    }

    /// Let unprivileged delivery children (alias pipes run as nobody when
    /// the tests run as root) reach files under the test directory.
    pub fn open_to_all(self) -> Setup {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let out = p.join("out");
        std::fs::create_dir_all(&out).expect("out dir");
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        self
    }

    /// Write the config file and return its path.
    pub fn write_config(&self) -> PathBuf {
        let text: String = self.keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let path = self.dir.path().join("tern.conf");
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn start(self) -> Tern {
        Tern::start(self)
    }

    /// Run `sendmail -C CONF ARGS` with `input` on stdin.
    pub fn sendmail(&self, args: &[&str], input: &[u8]) -> Output {
        let conf = self.write_config();
        let mut all = vec!["-C", conf.to_str().expect("utf8 path")];
        all.extend_from_slice(args);
        run_program(Path::new(SENDMAIL), &all, input)
    }

    /// Run `ternctl -f CONF ARGS`.
    pub fn ternctl(&self, args: &[&str]) -> Output {
        let conf = self.write_config();
        let mut all = vec!["-f", conf.to_str().expect("utf8 path")];
        all.extend_from_slice(args);
        run_program(Path::new(TERNCTL), &all, b"")
    }

    /// Run the sendmail binary under another name (a symlink, as `make install`
    /// makes): `mailq`, `newaliases`.
    pub fn sendmail_as(&self, name: &str, args: &[&str]) -> Output {
        let link = self.dir.path().join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(SENDMAIL, &link).expect("symlink");
        }
        let conf = self.write_config();
        let mut all = vec!["-C", conf.to_str().expect("utf8 path")];
        all.extend_from_slice(args);
        run_program(&link, &all, b"")
    }

    /// A fresh CA and a leaf for mx.test, localhost and 127.0.0.1 (rcgen),
    /// with `tls_cert` and `tls_key` pointing at them. Clients trust `ca.pem`.
    pub fn tls(self) -> Setup {
        let p = self.dir.path();
        let certs = make_certs();
        std::fs::write(p.join("ca.pem"), &certs.ca_pem).expect("ca");
        std::fs::write(p.join("cert.pem"), &certs.chain_pem).expect("cert");
        std::fs::write(p.join("key.pem"), &certs.key_pem).expect("key");
        let cert = p.join("cert.pem").display().to_string();
        let key = p.join("key.pem").display().to_string();
        self.set("tls_cert", &cert).set("tls_key", &key)
    }

    /// TLS, an `auth_users` file (alice:secret as SHA-512-crypt, bob:hunter2 as
    /// bcrypt, made by `openssl passwd -6` and libxcrypt), and one submission and one
    /// smtps listener.
    pub fn submission(self) -> Setup {
        let p = self.dir.path().to_path_buf();
        let users = format!(
            "# test users\nalice:{}\nbob:{}\n",
            "$6$tErNtEsTsAlT0001$U.UdS5Xt4jO2fSBoiUq8U4J7ZLwc94gy3Ce7whlgz80ohgfQpuvRLkDCtDg0pnIEfDJhhbGA2Q8EMEO9oqDjm/",
            "$2b$05$TernTestSaltTernTestSOYOokppVe2sLS1eQiPUTQqrQtNeF48hu",
        );
        std::fs::write(p.join("auth_users"), users).expect("auth_users");
        let au = p.join("auth_users").display().to_string();
        self.tls()
            .set("auth_users", &au)
            .set("submission", "127.0.0.1:0")
            .set("smtps", "127.0.0.1:0")
            .set("auth_failure_delay", "0")
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("ca.pem")).expect("ca.pem")
    }
}

pub struct Certs {
    pub ca_pem: String,
    pub chain_pem: String,
    pub key_pem: String,
}

pub fn make_certs() -> Certs {
    make_certs_for(&["mx.test", "localhost", "127.0.0.1"])
}

/// A fresh CA and a leaf for `names` (the first is also the CN), signed by it
/// (rcgen, ECDSA P-256): what the HTTPS peer and TLS tests serve.
pub fn make_certs_for(names: &[&str]) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tern test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let key = KeyPair::generate().expect("leaf key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
    if let Some(cn) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *cn);
    }
    let leaf = params.signed_by(&key, &ca).expect("leaf");
    Certs {
        ca_pem: ca.pem(),
        chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
        key_pem: key.serialize_pem(),
    }
}

/// A running ternd. Killed on drop; on a failing test its log is printed.
pub struct Tern {
    pub setup: Setup,
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Tern {
    /// The address of the first listener of another service ("submission",
    /// "smtps"), from its "listening for SERVICE on ADDR" log line.
    pub fn service_addr(&self, service: &str) -> SocketAddr {
        let needle = format!("listening for {service} on ");
        let log = self.log.lock().unwrap();
        log.iter()
            .find_map(|l| l.split(&needle).nth(1).and_then(|a| a.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {service} listener in the log"))
    }

    pub fn submission_addr(&self) -> SocketAddr {
        self.service_addr("submission")
    }

    pub fn smtps_addr(&self) -> SocketAddr {
        self.service_addr("smtps")
    }
}

impl Tern {
    fn start(setup: Setup) -> Tern {
        let (child, addr, log) = Tern::spawn(&setup);
        Tern {
            setup,
            child,
            addr,
            log,
        }
    }

    /// Kill -9 and start again on the same config and spool (a new port).
    pub fn restart(&mut self) {
        self.kill9();
        let (child, addr, log) = Tern::spawn(&self.setup);
        self.child = child;
        self.addr = addr;
        self.log = log;
    }

    fn spawn(setup: &Setup) -> (Child, SocketAddr, Arc<Mutex<Vec<String>>>) {
        let conf = setup.write_config();
        let mut child = Command::new(TERND)
            .args(["-d", "-f"])
            .arg(&conf)
            .envs(setup.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ternd");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(a) = line.split("listening on ").nth(1) {
                        if let Ok(addr) = a.trim().parse::<SocketAddr>() {
                            let _ = tx.send(addr);
                        }
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("ternd did not start; log:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        // The control socket comes up just after the listeners: wait for it
        // too, so that sendmail -q and ternctl find the daemon at once.
        if let Some(spool) = setup.keys.get("spool") {
            let control = Path::new(spool).join("control");
            wait_until(5, || control.exists());
        }
        (child, addr, log)
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A user's Maildir new/ directory under the test mail root.
    pub fn maildir_new(&self, user: &str) -> PathBuf {
        self.setup.path().join("mail").join(user).join("new")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.setup.path().join("spool")
    }

    pub fn spool(&self) -> Spool {
        Spool::open(&self.spool_dir()).expect("open spool")
    }

    /// Every committed message: envelope and body. A message the queue
    /// runner removes while this looks is left out.
    pub fn queued(&self) -> Vec<(Envelope, Vec<u8>)> {
        let spool = self.spool();
        spool
            .list()
            .expect("list")
            .into_iter()
            .filter_map(|id| {
                let env = spool.load(&id).ok()?;
                let body = spool.read_message(&env).ok()?;
                Some((env, body))
            })
            .collect()
    }

    /// Wait up to `secs` until no message is queued (env/ is empty): every
    /// message, notices included, delivered or given up. A positive signal
    /// that nothing more will be delivered, where a sleep would only hope so.
    pub fn wait_queue_empty(&self, secs: u64) -> bool {
        wait_until(secs, || self.spool().list().is_ok_and(|ids| ids.is_empty()))
    }

    pub fn message(&self, id: &str) -> (Envelope, Vec<u8>) {
        let spool = self.spool();
        let id = QueueId::parse(id).expect("queue id");
        let env = spool.load(&id).expect("load");
        let body = spool.read_message(&env).expect("read body");
        (env, body)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Wait until the log has a line containing `needle`.
    pub fn wait_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Send a signal to ternd.
    pub fn signal(&self, sig: i32) {
        tern::sys::send_signal(self.child.id(), sig).expect("signal");
    }

    /// Wait up to `secs` for ternd to exit; its exit code, if it did.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tern {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- ternd log ---\n{}", self.log_text());
        }
    }
}

/// A raw SMTP client for exact replies.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

/// One reply: its code and every line as received (without CRLF).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// "250 2.1.0" style prefix of the last line: code and enhanced status.
    pub fn status(&self) -> String {
        let last = self.lines.last().cloned().unwrap_or_default();
        last.split(' ').take(2).collect::<Vec<_>>().join(" ")
    }

    pub fn queue_id(&self) -> String {
        let last = self.lines.last().cloned().unwrap_or_default();
        last.rsplit(' ').next().unwrap_or_default().to_owned()
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).expect("connect")
    }

    pub fn try_connect(addr: SocketAddr) -> Option<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let reader = BufReader::new(stream.try_clone().ok()?);
        Some(Client { stream, reader })
    }

    /// A client over a stream connected some other way (e.g. from a chosen
    /// source address).
    pub fn from_stream(stream: TcpStream) -> Client {
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client { stream, reader }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    /// `send` for a server that may be gone (killed on purpose): false when
    /// the write failed.
    pub fn try_send(&mut self, line: &str) -> bool {
        self.stream.write_all(format!("{line}\r\n").as_bytes()).is_ok()
    }

    /// Read one (possibly multi-line) reply; panics on EOF or timeout.
    pub fn reply(&mut self) -> Reply {
        self.try_reply().expect("reply expected")
    }

    pub fn try_reply(&mut self) -> Option<Reply> {
        read_reply(&mut self.reader)
    }

    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(line);
        self.reply()
    }

    /// STARTTLS, expect 220, then the handshake trusting `ca_pem` for mx.test.
    pub fn starttls(mut self, ca_pem: &[u8]) -> TlsClient {
        let r = self.cmd("STARTTLS");
        assert_eq!(r.status(), "220 2.0.0", "{r:?}");
        assert!(self.reader.buffer().is_empty(), "bytes after the 220");
        TlsClient::handshake(self.stream, ca_pem)
    }

    /// Expect the greeting then EHLO.
    pub fn hello(&mut self) -> Reply {
        let g = self.reply();
        assert_eq!(g.code, 220, "{g:?}");
        let r = self.cmd("EHLO client.test");
        assert_eq!(r.code, 250, "{r:?}");
        r
    }

    /// True when the server has closed the connection (EOF within the timeout).
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0))
    }

    /// Everything the server sends until it closes; None if it does not
    /// close within the read timeout.
    /// A reset (the server closed with our bytes unread) counts as closed.
    pub fn read_to_close(&mut self) -> Option<Vec<u8>> {
        let mut all = Vec::new();
        match self.reader.read_to_end(&mut all) {
            Ok(_) => Some(all),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(all),
            Err(_) => None,
        }
    }

    /// A whole transaction; returns the reply to the end of data.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert_eq!(r.code, 250, "{r:?}");
        for t in to {
            let r = self.cmd(&format!("RCPT TO:<{t}>"));
            assert_eq!(r.code, 250, "{r:?}");
        }
        let r = self.cmd("DATA");
        assert_eq!(r.code, 354, "{r:?}");
        self.send_raw(body.as_bytes());
        self.send_raw(b".\r\n");
        self.reply()
    }
}

/// A raw SMTP client inside TLS (rustls), for exact replies.
pub struct TlsClient {
    conn: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Implicit TLS (smtps): connect and handshake at once.
    pub fn connect(addr: SocketAddr, ca_pem: &[u8]) -> TlsClient {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        TlsClient::handshake(stream, ca_pem)
    }

    /// For a client that sent STARTTLS itself (with more pipelined after it):
    /// read the 220, check nothing else came in plaintext, and handshake.
    pub fn handshake_after_ready(mut c: Client, ca_pem: &[u8]) -> TlsClient {
        let r = c.reply();
        assert_eq!(r.status(), "220 2.0.0", "{r:?}");
        assert!(c.reader.buffer().is_empty(), "plaintext replies after the 220");
        TlsClient::handshake(c.stream, ca_pem)
    }

    pub fn handshake(stream: TcpStream, ca_pem: &[u8]) -> TlsClient {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(c.expect("ca pem")).expect("add root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("mx.test").expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut stream = stream;
        while conn.is_handshaking() {
            conn.complete_io(&mut stream).expect("TLS handshake");
        }
        TlsClient {
            conn: BufReader::new(rustls::StreamOwned::new(conn, stream)),
        }
    }

    /// The negotiated protocol version, e.g. "TLSv1_3".
    pub fn version(&self) -> String {
        format!(
            "{:?}",
            self.conn.get_ref().conn.protocol_version().expect("version")
        )
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let s = self.conn.get_mut();
        s.write_all(bytes).expect("write");
        s.flush().expect("flush");
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    pub fn reply(&mut self) -> Reply {
        self.try_reply().expect("reply expected")
    }

    pub fn try_reply(&mut self) -> Option<Reply> {
        read_reply(&mut self.conn)
    }

    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(line);
        self.reply()
    }

    /// True when the server has closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        !matches!(self.conn.read(&mut buf), Ok(n) if n > 0)
    }

    /// AUTH PLAIN with an initial response.
    pub fn auth_plain(&mut self, user: &str, pass: &str) -> Reply {
        self.cmd(&format!(
            "AUTH PLAIN {}",
            b64(format!("\0{user}\0{pass}").as_bytes())
        ))
    }

    /// A whole transaction; returns the reply to the end of data.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert_eq!(r.code, 250, "{r:?}");
        for t in to {
            let r = self.cmd(&format!("RCPT TO:<{t}>"));
            assert_eq!(r.code, 250, "{r:?}");
        }
        let r = self.cmd("DATA");
        assert_eq!(r.code, 354, "{r:?}");
        self.send_raw(body.as_bytes());
        self.send_raw(b".\r\n");
        self.reply()
    }
}

/// Base64 (RFC 4648) for SASL in tests.
pub fn b64(data: &[u8]) -> String {
    use base64::prelude::{Engine as _, BASE64_STANDARD};
    BASE64_STANDARD.encode(data)
}

/// A small message with CRLF line ends.
/// Send one message to `t` over SMTP and say QUIT; returns its queue id.
pub fn submit(t: &Tern, from: &str, to: &[&str], body: &str) -> String {
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail(from, to, body);
    assert_eq!(r.code, 250, "{r:?}");
    c.cmd("QUIT");
    r.queue_id()
}

pub fn message(subject: &str) -> String {
    format!("From: a@example.test\r\nTo: b@example.test\r\nSubject: {subject}\r\n\r\nHello.\r\n")
}

/// Wait until `dir` holds at least `n` entries; returns their paths, sorted.
pub fn wait_files(dir: &Path, n: usize, secs: u64) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        if files.len() >= n || Instant::now() >= deadline {
            return files;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll `cond` every 20 ms for up to `secs` seconds.
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Read one (possibly multi-line) reply; None on EOF or a read error.
pub fn read_reply(r: &mut impl BufRead) -> Option<Reply> {
    let mut lines = Vec::new();
    loop {
        let mut raw = Vec::new();
        let n = r.read_until(b'\n', &mut raw).ok()?;
        if n == 0 {
            return None;
        }
        assert!(raw.ends_with(b"\r\n"), "reply line without CRLF: {raw:?}");
        let line = String::from_utf8_lossy(&raw[..raw.len() - 2]).into_owned();
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).expect("reply code");
        let more = line.as_bytes().get(3) == Some(&b'-');
        lines.push(line);
        if !more {
            return Some(Reply { code, lines });
        }
    }
}

/// For crash tests: submit numbered messages (`Subject: TOKEN`, a body of
/// varying size ending in `END TOKEN`) to `rcpt`, `per_conn` to a
/// connection, until `stop` is set or the server goes away; record each
/// message acknowledged with 250 as (token, queue id).
pub fn submit_until_stopped(
    addr: SocketAddr,
    rcpt: &str,
    who: usize,
    round: usize,
    per_conn: usize,
    stop: &std::sync::atomic::AtomicBool,
    acked: &Mutex<Vec<(String, String)>>,
) {
    let mut n = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Some(mut c) = Client::try_connect(addr) else {
            return;
        };
        if c.try_reply().is_none() {
            return;
        }
        if !c.try_send("EHLO crash.test") || c.try_reply().is_none() {
            return;
        }
        for _ in 0..per_conn {
            n += 1;
            let token = format!("r{round}-c{who}-m{n}");
            // Sizes vary so kills land in every phase of a write.
            let filler = "the quick brown fox jumps over the lazy dog\r\n".repeat((n * 37 + who * 11) % 400);
            let body = format!("Subject: {token}\r\n\r\n{filler}END {token}\r\n.\r\n");
            let sent = c.try_send("MAIL FROM:<a@example.test>")
                && c.try_send(&format!("RCPT TO:<{rcpt}>"))
                && c.try_send("DATA");
            if !sent || !(0..3).all(|_| c.try_reply().is_some_and(|r| r.code < 400)) {
                return;
            }
            if c.stream.write_all(body.as_bytes()).is_err() {
                return;
            }
            match c.try_reply() {
                Some(r) if r.code == 250 => acked.lock().unwrap().push((token, r.queue_id())),
                _ => return,
            }
        }
        let _ = c.try_send("QUIT");
    }
}

/// Connect to `dst` from `src` (bind before connect; std cannot).
#[allow(unsafe_code)]
pub fn connect_from(src: std::net::Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(dst) = dst else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let sockaddr = |a: std::net::SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor we own; the sockaddr
    // structures live across the calls; the descriptor goes to TcpStream,
    // which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd);
        let local = sockaddr(std::net::SocketAddrV4::new(src, 0));
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(dst);
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}
