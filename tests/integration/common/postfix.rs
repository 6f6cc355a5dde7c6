//! A private Postfix (Debian's postfix) as a peer for interop tests, in both
//! directions: it receives mail on a free loopback port and delivers it to
//! Maildirs through virtual(8) (unknown addresses get Postfix's 550), and
//! it relays what it is given to a next hop, typically a test ternd.
//! Everything lives in the temp dir (main.cf, master.cf, queue, data, mail,
//! maillog); `postfix -c DIR/etc start-fg` keeps the master in the
//! foreground, so it is stopped with its process group like every peer.
//! No DNS: next hops are [127.0.0.1]:PORT, and mail for any other domain
//! is refused rather than looked up.
//!
//! tests/bench/postfix.sh is the benchmark's instance (tuned per load); this
//! one is for correctness, with a full set of services (qmgr, bounce, TLS).
//!
//! ```ignore
//! let Some(pf) = Postfix::builder()
//!     .mailbox("alice@example.org")                    // receives for example.org
//!     .relay_to(ternd.addr)                            // everything else to tern
//!     .tls()                                           // STARTTLS, test CA
//!     .set("smtpd_discard_ehlo_keywords", "chunking")  // any main.cf key
//!     .start()
//! else { return };
//! pf.addr();  pf.messages("alice@example.org");  pf.log();
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{self, PeerProcess};
use super::skip;

#[derive(Clone, Default)]
pub struct PostfixBuilder {
    hostname: Option<String>,
    mailboxes: Vec<String>,
    relay: Option<SocketAddr>,
    transports: Vec<(String, String)>,
    tls: bool,
    extra: Vec<(String, String)>,
}

impl PostfixBuilder {
    /// myhostname (default postfix.test).
    pub fn hostname(mut self, name: &str) -> Self {
        self.hostname = Some(name.to_owned());
        self
    }

    /// Accept and store mail for this address; its domain becomes one
    /// Postfix delivers to (virtual_mailbox_domains).
    pub fn mailbox(mut self, addr: &str) -> Self {
        self.mailboxes.push(addr.to_ascii_lowercase());
        self
    }

    /// Send every message for other domains to this host (relayhost).
    pub fn relay_to(mut self, addr: SocketAddr) -> Self {
        self.relay = Some(addr);
        self
    }

    /// Route DOMAIN through a transport: `.transport("tern.test", "smtp:[127.0.0.1]:2525")`.
    pub fn transport(mut self, domain: &str, next: &str) -> Self {
        self.transports.push((domain.to_owned(), next.to_owned()));
        self
    }

    /// Offer STARTTLS with a certificate for the hostname from a test CA
    /// (`ca_pem()`), and use TLS when the next hop offers it.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Any main.cf parameter, written last (it wins).
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.to_owned(), value.to_owned()));
        self
    }

    /// None when Postfix is missing or the tests do not run as root (skip
    /// recorded; a failure under CI).
    pub fn start(self) -> Option<Postfix> {
        if !skip::installed("postfix", &["/usr/lib/postfix/sbin/master"])
            || !skip::root_for("Postfix's master runs as root")
        {
            return None;
        }
        if process::account("postfix").is_none() {
            skip::skip("no postfix account (the postfix package makes it)");
            return None;
        }
        Some(process::retry_start("postfix", || Postfix::start(&self)))
    }
}

pub struct Postfix {
    proc: PeerProcess,
    port: u16,
    ca_pem: Option<String>,
}

impl Postfix {
    pub fn builder() -> PostfixBuilder {
        PostfixBuilder::default()
    }

    fn start(b: &PostfixBuilder) -> Result<Postfix, String> {
        let dir = process::peer_dir("postfix");
        let d = dir.path().to_path_buf();
        let etc = d.join("etc");
        let queue = d.join("queue");
        let data = d.join("data");
        let mail = d.join("mail");
        for p in [&etc, &queue, &data, &mail] {
            std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
        }
        let (pf_uid, _) = process::account("postfix").ok_or("no postfix account")?;
        // data_directory belongs to postfix; queue_directory to root (postfix
        // check makes its subdirectories); the mail to the account virtual(8)
        // writes as.
        std::os::unix::fs::chown(&data, Some(pf_uid), Some(0)).map_err(|e| e.to_string())?;
        let owner = super::daemon_account().ok_or("no unprivileged account for the mail")?;
        std::os::unix::fs::chown(&mail, Some(owner.uid), Some(owner.gid)).map_err(|e| e.to_string())?;
        let hostname = b.hostname.clone().unwrap_or_else(|| "postfix.test".to_owned());

        let mut domains: Vec<String> = b
            .mailboxes
            .iter()
            .filter_map(|m| m.split_once('@').map(|(_, d)| d.to_owned()))
            .collect();
        domains.sort();
        domains.dedup();
        let vmailbox: String = b
            .mailboxes
            .iter()
            .map(|m| {
                let (local, domain) = m.split_once('@').unwrap_or((m, "invalid"));
                format!("{m} {domain}/{local}/Maildir/\n")
            })
            .collect();
        std::fs::write(etc.join("vmailbox"), vmailbox).map_err(|e| e.to_string())?;
        let transport: String = b
            .transports
            .iter()
            .map(|(dom, next)| format!("{dom} {next}\n"))
            .collect();
        std::fs::write(etc.join("transport"), transport).map_err(|e| e.to_string())?;

        let port = process::free_port();
        let mut main = format!(
            "# Private Postfix for tern's tests (tests/integration/common/postfix.rs).\n\
             compatibility_level = 3.6\n\
             queue_directory = {queue}\ndata_directory = {data}\n\
             mail_owner = postfix\nsetgid_group = postdrop\n\
             myhostname = {hostname}\nmydomain = test\nmyorigin = $myhostname\n\
             inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
             maillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\n\
             smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
             smtpd_recipient_restrictions =\nsmtpd_peername_lookup = no\n\
             smtpd_client_connection_count_limit = 0\nsmtpd_client_connection_rate_limit = 0\n\
             mydestination =\nlocal_recipient_maps =\nalias_maps =\nalias_database =\nrelay_domains =\n\
             biff = no\nappend_dot_mydomain = no\n\
             smtp_dns_support_level = disabled\nsmtp_host_lookup = native\nlmtp_host_lookup = native\n\
             virtual_mailbox_domains = {domains}\nvirtual_mailbox_base = {mail}\n\
             virtual_mailbox_maps = texthash:{etc}/vmailbox\n\
             virtual_uid_maps = static:{uid}\nvirtual_gid_maps = static:{gid}\nvirtual_minimum_uid = 1\n\
             transport_maps = texthash:{etc}/transport\n\
             # Quick retries: tests wait for deferred mail, not hours.\n\
             queue_run_delay = 1s\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n\
             bounce_queue_lifetime = 1h\nmaximal_queue_lifetime = 1h\n\
             delay_warning_time = 0\n",
            queue = queue.display(),
            data = data.display(),
            d = d.display(),
            mail = mail.display(),
            etc = etc.display(),
            domains = domains.join(", "),
            uid = owner.uid,
            gid = owner.gid,
        );
        match b.relay {
            Some(r) => main.push_str(&format!("relayhost = [{}]:{}\n", r.ip(), r.port())),
            // Nothing leaves the machine: other domains are refused at once.
            None => main.push_str("default_transport = error:no delivery outside the test\n"),
        }
        let mut ca_pem = None;
        if b.tls {
            let certs = super::make_certs_for(&[&hostname, "localhost", "127.0.0.1"]);
            std::fs::write(etc.join("cert.pem"), &certs.chain_pem).map_err(|e| e.to_string())?;
            std::fs::write(etc.join("key.pem"), &certs.key_pem).map_err(|e| e.to_string())?;
            std::fs::write(etc.join("ca.pem"), &certs.ca_pem).map_err(|e| e.to_string())?;
            main.push_str(&format!(
                "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {e}/cert.pem\nsmtpd_tls_key_file = {e}/key.pem\n\
                 smtp_tls_security_level = may\nsmtp_tls_CAfile = {e}/ca.pem\n\
                 smtpd_tls_loglevel = 1\nsmtp_tls_loglevel = 1\n",
                e = etc.display()
            ));
            ca_pem = Some(certs.ca_pem);
        } else {
            main.push_str("smtpd_tls_security_level = none\nsmtp_tls_security_level = none\n");
        }
        for (k, v) in &b.extra {
            main.push_str(&format!("{k} = {v}\n"));
        }
        std::fs::write(etc.join("main.cf"), main).map_err(|e| e.to_string())?;
        let master = format!(
            "# service type private unpriv chroot wakeup maxproc command\n\
             127.0.0.1:{port} inet n - n - - smtpd\n\
             cleanup unix n - n - 0 cleanup\n\
             qmgr unix n - n 300 1 qmgr\n\
             tlsmgr unix - - n 1000? 1 tlsmgr\n\
             rewrite unix - - n - - trivial-rewrite\n\
             bounce unix - - n - 0 bounce\n\
             defer unix - - n - 0 bounce\n\
             trace unix - - n - 0 bounce\n\
             verify unix - - n - 1 verify\n\
             flush unix n - n 1000? 0 flush\n\
             proxymap unix - - n - - proxymap\n\
             smtp unix - - n - - smtp\n\
             relay unix - - n - - smtp\n\
             showq unix n - n - - showq\n\
             error unix - - n - - error\n\
             retry unix - - n - - error\n\
             discard unix - - n - - discard\n\
             virtual unix - n n - - virtual\n\
             lmtp unix - - n - - lmtp\n\
             anvil unix - - n - 1 anvil\n\
             scache unix - - n - 1 scache\n\
             postlog unix-dgram n - n - 1 postlogd\n"
        );
        std::fs::write(etc.join("master.cf"), master).map_err(|e| e.to_string())?;
        make_queue(&queue)?;
        let mut cmd = Command::new(skip::find_tool("postfix").ok_or("no postfix")?);
        cmd.arg("-c").arg(&etc).arg("start-fg");
        let mut proc = PeerProcess::spawn("postfix", cmd, dir, vec![d.join("maillog")])?;
        // master starts a session of its own: stop it by its pid file too.
        proc.add_pid_file(queue.join("pid").join("master.pid"));
        let addr = process::localhost(port);
        proc.wait_ready(Duration::from_secs(30), || greets(addr))?;
        Ok(Postfix { proc, port, ca_pem })
    }

    pub fn addr(&self) -> SocketAddr {
        process::localhost(self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA of its certificate (with `.tls()`).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The Maildir of a mailbox given to the builder.
    pub fn maildir(&self, addr: &str) -> PathBuf {
        let (local, domain) = addr.split_once('@').expect("an address");
        self.proc
            .dir()
            .join("mail")
            .join(domain)
            .join(local)
            .join("Maildir")
    }

    /// The messages delivered to ADDR so far.
    pub fn messages(&self, addr: &str) -> Vec<String> {
        process::maildir_messages(&self.maildir(addr), &["new"])
    }

    /// Wait up to `secs` for ADDR to have `n` messages.
    pub fn wait_messages(&self, addr: &str, n: usize, secs: u64) -> Vec<String> {
        super::wait_until(secs, || self.messages(addr).len() >= n);
        self.messages(addr)
    }

    /// Postfix's maillog (maillog_file, one line per event, syslog style).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.proc.dir().join("maillog")).unwrap_or_default()
    }

    /// Wait up to `secs` for a maillog line containing `needle`.
    pub fn wait_log(&self, secs: u64, needle: &str) -> bool {
        super::wait_until(secs, || self.log().contains(needle))
    }

    pub fn process(&self) -> &PeerProcess {
        &self.proc
    }
}

/// The queue's subdirectories with the owners and modes of Debian's
/// postfix-files, and the `quick-start` marker that makes `postfix start`
/// skip its integrity check: that check (post-install create-missing and
/// some ninety postconf and find runs) takes 2.5 s, ten times the rest.
fn make_queue(queue: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let (pf_uid, _) = process::account("postfix").ok_or("no postfix account")?;
    let postdrop = tern::sys::group_id("postdrop").ok_or("no postdrop group")?;
    let mut dirs: Vec<(&str, u32, u32, u32)> = [
        "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved",
        "trace",
    ]
    .iter()
    .map(|d| (*d, pf_uid, 0, 0o700))
    .collect();
    dirs.push(("maildrop", pf_uid, postdrop, 0o730));
    dirs.push(("public", pf_uid, postdrop, 0o710));
    dirs.push(("pid", 0, 0, 0o755));
    for (name, uid, gid, mode) in dirs {
        let d = queue.join(name);
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(&d, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
    }
    std::fs::write(queue.join("quick-start"), "").map_err(|e| e.to_string())
}

/// The port answers with a 220 greeting.
fn greets(addr: SocketAddr) -> bool {
    use std::io::{BufRead, BufReader};
    let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let ok = BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("220 ");
    let _ = std::io::Write::write_all(&mut &s, b"QUIT\r\n");
    ok
}
