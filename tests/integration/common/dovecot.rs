//! Dovecot's LMTP server (dovecot-core, dovecot-lmtpd) with a private
//! configuration: `dovecot -F -c DIR/dovecot.conf`, base_dir, state and log
//! in the temp dir, LMTP on a free loopback port and on a UNIX socket
//! (mode 0666, for a ternd that dropped root), users in a passwd-file (the
//! passdb Dovecot needs even for LMTP, and the userdb that makes unknown
//! users a per-recipient 550), one Maildir per user under DIR/mail/USER/Maildir,
//! and the quota plugin with a per-user limit that a test can change while
//! Dovecot runs (the passwd-file is read again when it changes).
//!
//! Facts from issue 19: Dovecot must start as root and refuses to deliver as
//! uid 0, so mail is written as the tests' unprivileged account.
//!
//! User names are looked up without their domain (`auth_username_format =
//! %Ln`, as Debian's configuration suggests for an MTA that passes
//! `user@domain`): `alice@any.test` is alice. With `.tls()` the LMTP
//! listener offers STARTTLS with a certificate from a fresh test CA.
//!
//! ```ignore
//! let Some(dovecot) = Dovecot::builder().user("alice").user_quota("bob", "1K").start() else { return };
//! dovecot.lmtp_addr();              // lmtp:[127.0.0.1]:port
//! dovecot.lmtp_socket();            // lmtp:unix:/path
//! dovecot.wait_messages("alice", 1);
//! dovecot.set_quota("bob", Some("10M"));
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{self, PeerProcess};
use super::skip;

#[derive(Clone)]
pub struct DovecotBuilder {
    users: Vec<(String, Option<String>)>,
    quota_tempfail: bool,
    tls: bool,
}

impl DovecotBuilder {
    /// A user with no quota limit.
    pub fn user(mut self, name: &str) -> Self {
        self.users.push((name.to_owned(), None));
        self
    }

    /// A user with a storage limit in Dovecot's syntax ("1K", "10M").
    pub fn user_quota(mut self, name: &str, limit: &str) -> Self {
        self.users.push((name.to_owned(), Some(limit.to_owned())));
        self
    }

    /// A full mailbox is a permanent 552 5.2.2 (Dovecot's default) rather than
    /// the 452 4.2.2 these tests use by default (quota_full_tempfail = yes).
    pub fn quota_permanent(mut self) -> Self {
        self.quota_tempfail = false;
        self
    }

    /// Offer STARTTLS on LMTP (`ssl = yes`) with a certificate for
    /// localhost and 127.0.0.1 signed by a fresh CA (`Dovecot::ca_pem`).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// None when Dovecot is missing or the tests do not run as root (skip
    /// recorded; a failure under CI).
    pub fn start(self) -> Option<Dovecot> {
        if !skip::installed("dovecot", &["/usr/lib/dovecot/lmtp"])
            || !skip::root_for("Dovecot's master runs as root and delivers as another account")
        {
            return None;
        }
        Some(process::retry_start("dovecot", || Dovecot::start(&self)))
    }
}

/// A running Dovecot; stops on Drop.
pub struct Dovecot {
    proc: PeerProcess,
    port: u16,
    uid: u32,
    gid: u32,
    users: Vec<(String, Option<String>)>,
    ca_pem: Option<String>,
}

impl Dovecot {
    pub fn builder() -> DovecotBuilder {
        DovecotBuilder {
            users: Vec::new(),
            quota_tempfail: true,
            tls: false,
        }
    }

    fn passwd(&self) -> String {
        passwd_text(self.proc.dir(), self.uid, self.gid, &self.users)
    }

    fn start(b: &DovecotBuilder) -> Result<Dovecot, String> {
        let dir = process::peer_dir("dovecot");
        let d = dir.path().to_path_buf();
        // The account mail is written as: the tests' daemon account.
        let pw = super::daemon_account().ok_or("no unprivileged account for Dovecot's mail")?;
        let (uid, gid) = (pw.uid, pw.gid);
        for sub in ["run", "state"] {
            std::fs::create_dir_all(d.join(sub)).map_err(|e| e.to_string())?;
        }
        let mail = d.join("mail");
        std::fs::create_dir_all(&mail).map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(&mail, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        std::fs::write(d.join("passwd"), passwd_text(&d, uid, gid, &b.users)).map_err(|e| e.to_string())?;
        let port = process::free_port();
        let (ssl, ca_pem) = if b.tls {
            let certs = super::make_certs_for(&["localhost", "127.0.0.1"]);
            std::fs::write(d.join("cert.pem"), &certs.chain_pem).map_err(|e| e.to_string())?;
            std::fs::write(d.join("key.pem"), &certs.key_pem).map_err(|e| e.to_string())?;
            let ssl = format!(
                "ssl = yes\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem\n",
                d = d.display()
            );
            (ssl, Some(certs.ca_pem))
        } else {
            ("ssl = no\n".to_owned(), None)
        };
        let conf = format!(
            "# Private Dovecot for tern's tests.\n\
             base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\ninfo_log_path = {d}/dovecot.log\n\
             protocols = lmtp\nlisten = 127.0.0.1\n{ssl}\
             first_valid_uid = 1\nfirst_valid_gid = 1\nauth_username_format = %Ln\n\
             mail_location = maildir:~/Maildir\nmail_plugins = quota\n\
             recipient_delimiter = +\nlmtp_save_to_detail_mailbox = no\n\
             passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
             quota_full_tempfail = {tempfail}\n\
             plugin {{\n  quota = maildir:User quota\n}}\n\
             service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  \
             unix_listener lmtp {{\n    mode = 0666\n  }}\n}}\n",
            d = d.display(),
            tempfail = if b.quota_tempfail { "yes" } else { "no" },
        );
        let conf_path = d.join("dovecot.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(skip::find_tool("dovecot").ok_or("no dovecot")?);
        cmd.arg("-F").arg("-c").arg(&conf_path);
        let mut proc = PeerProcess::spawn("dovecot", cmd, dir, vec![d.join("dovecot.log")])?;
        let addr = process::localhost(port);
        proc.wait_ready(Duration::from_secs(10), || lmtp_greets(addr))?;
        Ok(Dovecot {
            proc,
            port,
            uid,
            gid,
            users: b.users.clone(),
            ca_pem,
        })
    }

    pub fn lmtp_addr(&self) -> SocketAddr {
        process::localhost(self.port)
    }

    /// The LMTP UNIX socket (mode 0666).
    pub fn lmtp_socket(&self) -> PathBuf {
        self.proc.dir().join("run").join("lmtp")
    }

    /// USER's Maildir (it exists after the first delivery).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.proc.dir().join("mail").join(user).join("Maildir")
    }

    /// Every message in USER's INBOX (new/ and cur/), oldest name first.
    pub fn messages(&self, user: &str) -> Vec<String> {
        process::maildir_messages(&self.maildir(user), &["new", "cur"])
    }

    /// Wait up to 10 s for USER to have at least `n` messages; returns them.
    pub fn wait_messages(&self, user: &str, n: usize) -> Vec<String> {
        super::wait_until(10, || self.messages(user).len() >= n);
        self.messages(user)
    }

    /// Change (or lift, with None) USER's storage limit; Dovecot reads the
    /// passwd-file again at its next lookup.
    pub fn set_quota(&mut self, user: &str, limit: Option<&str>) {
        let entry = self
            .users
            .iter_mut()
            .find(|(n, _)| n == user)
            .expect("a known user");
        entry.1 = limit.map(str::to_owned);
        let path = self.proc.dir().join("passwd");
        // Write beside it and rename: Dovecot never reads half a file. It
        // reads the file again when its mtime (in whole seconds) or size
        // changed: "1K" to "10M" keeps the size, so the mtime moves on by a
        // second at least, even for two changes within one second.
        let old = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("passwd mtime");
        let mtime = std::time::SystemTime::now().max(old + Duration::from_secs(1));
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, self.passwd()).expect("write passwd");
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .and_then(|f| f.set_modified(mtime))
            .expect("set passwd mtime");
        std::fs::rename(&tmp, &path).expect("rename passwd");
        // Dovecot's auth process looks at the file at most once a second: ask
        // it (doveadm user) until it answers with the new limit.
        let want = limit.map(|q| format!("*:storage={q}")).unwrap_or_default();
        let conf = self.proc.dir().join("dovecot.conf");
        let doveadm = skip::find_tool("doveadm").expect("doveadm (dovecot-core)");
        let seen = super::wait_until(10, || {
            Command::new(&doveadm)
                .arg("-c")
                .arg(&conf)
                .args(["user", "-f", "quota_rule", user])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == want)
        });
        assert!(
            seen,
            "Dovecot did not take {user}'s new quota {want:?}:\n{}",
            self.proc.tail()
        );
    }

    /// The CA that signed the LMTP certificate (with `.tls()`).
    pub fn ca_pem(&self) -> &str {
        self.ca_pem.as_deref().expect("Dovecot started with .tls()")
    }

    /// How many LMTP connections went past Dovecot's greeting: its log's
    /// `Connect from` lines (`127.0.0.1` for TCP, `local` for the socket)
    /// less those closed at the greeting, as the start-up probe's is.
    pub fn connections(&self) -> usize {
        let log = self.log();
        let count = |s: &str| log.lines().filter(|l| l.contains(s)).count();
        count(": Connect from ").saturating_sub(count("(state=GREETING)"))
    }

    /// Dovecot's log (deliveries, quota refusals).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.proc.dir().join("dovecot.log")).unwrap_or_default()
    }

    pub fn process(&self) -> &PeerProcess {
        &self.proc
    }
}

fn passwd_text(dir: &Path, uid: u32, gid: u32, users: &[(String, Option<String>)]) -> String {
    users
        .iter()
        .map(|(name, quota)| {
            let extra = quota
                .as_deref()
                .map(|q| format!("userdb_quota_rule=*:storage={q}"))
                .unwrap_or_default();
            format!(
                "{name}:{{PLAIN}}secret:{uid}:{gid}::{}::{extra}\n",
                dir.join("mail").join(name).display()
            )
        })
        .collect()
}

/// Dovecot's LMTP answers with its 220 greeting.
fn lmtp_greets(addr: SocketAddr) -> bool {
    use std::io::{BufRead, BufReader};
    let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("220 ")
}
