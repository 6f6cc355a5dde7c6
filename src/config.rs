//! tern.conf(5): the configuration file parser and the typed [`Config`].
//!
//! The format is deliberately small: `key = value` lines, `#` comments, blank lines.
//! Every error names the file and line so an administrator can go straight to it.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::deliver::dns::Family;
use crate::deliver::tls_client::Policy as TlsPolicy;
use crate::spool::SyncMode;
use crate::sys;

/// Where `ternd` looks for its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/tern/tern.conf";

/// A configuration problem, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line number; 0 means the problem concerns the whole file.
    pub line: usize,
    pub what: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The "file:line: message" form is what compilers use, so editors can jump to it.
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.what)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.what)
        }
    }
}

impl std::error::Error for ConfigError {}

/// An IP network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    /// Parse `ADDRESS/PREFIX` or a bare address (a single host). Host bits beyond the
    /// prefix are cleared rather than rejected: `10.1.2.3/8` means `10.0.0.0/8`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            // u8::from_str accepts a leading '+'; a prefix is plain digits only.
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => l.parse::<u8>().ok()?,
            Some(_) => return None,
            None => max,
        };
        if len > max {
            return None;
        }
        Some(Cidr {
            net: mask(ip, len),
            len,
        })
    }

    /// Whether `ip` lies in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
    /// as a dual-stack socket reports IPv4 peers) matches IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.len) == self.net
    }
}

/// Clear the bits of `ip` beyond the first `len`.
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    // checked_shl yields None for a full-width shift (prefix 0): then nothing is kept.
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// The daemon's configuration, with every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Our name in the greeting, EHLO reply and Received: headers.
    pub hostname: String,
    pub listen: Vec<SocketAddr>,
    /// Message submission listeners (RFC 6409): AUTH required before MAIL.
    pub submission: Vec<SocketAddr>,
    /// Submission over implicit TLS (RFC 8314 section 3.3): TLS from the first byte.
    pub smtps: Vec<SocketAddr>,
    /// PEM certificate chain, leaf first; with `tls_key`, enables STARTTLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// `user:crypt-hash` lines for SMTP AUTH; None = no AUTH.
    pub auth_users: Option<PathBuf>,
    /// `user: address, @domain` lines: the senders each user may use. Users
    /// not listed may use user@ each local domain.
    pub sender_map: Option<PathBuf>,
    /// Pause before answering a failed AUTH (slows password guessing).
    pub auth_failure_delay: Duration,
    /// Unknown recipients in one session before each further one is answered slowly.
    pub harvest_threshold: u32,
    /// Pause per unknown recipient past `harvest_threshold`; zero = none.
    pub harvest_delay: Duration,
    /// Unknown recipients in one session before it is closed (directory harvest).
    pub harvest_limit: u32,
    /// Services ("smtp", "submission", "smtps") whose listeners expect a
    /// PROXY protocol header (v1 or v2) before anything else.
    pub proxy_protocol: Vec<String>,
    /// The proxies allowed to send that header; connections from elsewhere are closed.
    pub proxy_from: Vec<Cidr>,
    pub spool: PathBuf,
    /// How the spool makes accepted mail durable (syncfs per batch, or fsync per file).
    pub spool_sync: SyncMode,
    /// Lowercased, without a trailing dot.
    pub local_domains: Vec<String>,
    /// File of user names; None = system accounts.
    pub local_users: Option<PathBuf>,
    /// aliases(5) file.
    pub aliases: Option<PathBuf>,
    pub relay_networks: Vec<Cidr>,
    /// Bytes; never 0.
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    /// Bad commands before 421 and close.
    pub max_errors: u32,
    /// Received: headers before 554 5.4.6 (mail loop).
    pub max_received: u32,
    /// From connect until the first command.
    pub greeting_timeout: Duration,
    /// Waiting for a command (RFC 5321 4.5.3.2.7).
    pub command_timeout: Duration,
    /// Waiting for each block of message data.
    pub data_timeout: Duration,
    /// Every wait on a client while more than 3/4 of `max_sessions` are in
    /// use (stress mode): an idle client loses its slot after this.
    pub stress_timeout: Duration,
    pub expn: bool,
    /// Kept for later; VRFY answers 252 either way.
    pub vrfy: bool,
    /// Where local mail goes: `%u` the user, `~` the home; a trailing `/` means Maildir.
    pub mailbox: String,
    /// First retry delay after a temporary failure; doubles each attempt.
    pub retry_initial: Duration,
    /// The retry delay never grows beyond this.
    pub retry_max: Duration,
    /// After this long in the queue a recipient fails permanently.
    pub queue_lifetime: Duration,
    /// When to tell the sender mail is delayed; None = never.
    pub delay_warning: Option<Duration>,
    /// Delivery threads in the queue runner.
    pub delivery_threads: usize,
    /// How long a pipe (`|command`) delivery may run.
    pub pipe_timeout: Duration,
    /// Send failures of bounces (null sender) to postmaster instead of dropping them.
    pub double_bounce_to_postmaster: bool,
    /// Accept and queue mail but do not deliver it (sendmail's queue-only
    /// delivery mode): for maintenance, or to inspect what arrives.
    pub queue_only: bool,
    /// Name servers for delivery (address:port); empty = /etc/resolv.conf.
    pub dns_servers: Vec<SocketAddr>,
    /// How long one DNS query may take.
    pub dns_timeout: Duration,
    /// `route = DOMAIN HOP`: fixed next hops per recipient domain, first match wins.
    pub routes: Vec<(String, NextHop)>,
    /// The smarthost for every domain without a route; None = MX lookup.
    pub relay_host: Option<NextHop>,
    /// user and password for AUTH to the relay_host.
    pub relay_auth: Option<(String, String)>,
    /// The outbound TLS policy unless a route says otherwise.
    pub smtp_tls: TlsPolicy,
    /// CA certificates (PEM) for `tls = verify`; None = the system's CA store.
    pub tls_ca_file: Option<PathBuf>,
    /// Address families used to reach next hops.
    pub inet_protocols: Family,
    /// The port MX hosts are contacted on. 25 in real life; ONLY FOR TESTING.
    pub mx_port: u16,
    /// RFC 5321 4.5.3.2 client timeouts: connect, greeting and EHLO/STARTTLS/AUTH,
    /// MAIL/RCPT/RSET, DATA and each data block, the reply to the final dot.
    pub smtp_connect_timeout: Duration,
    pub smtp_helo_timeout: Duration,
    pub smtp_command_timeout: Duration,
    pub smtp_data_timeout: Duration,
    pub smtp_data_done_timeout: Duration,
    /// Keep a connection open this long for the next message to the same
    /// host; None = close after each.
    pub smtp_connection_cache_time: Option<Duration>,
    /// Deliveries in progress at once to one destination (route or relay
    /// host, else recipient domain).
    pub max_connections_per_domain: usize,
    /// Where a detached ternd writes its pid (and holds a lock).
    pub pid_file: PathBuf,
    /// How long a stopping daemon waits for sessions and deliveries.
    pub shutdown_grace: Duration,
    /// The account a daemon started as root drops to (its primary group too).
    pub user: String,
    /// The least severe log messages written.
    pub log_level: log::LevelFilter,
    /// The syslog facility of a detached daemon, as its RFC 5424 number.
    pub syslog_facility: u8,
}

/// A value a SIGHUP may replace (the configuration, the tables, the session
/// context): readers take an `Arc` snapshot and keep it as long as they need
/// a consistent view, so a reload never changes anything under a session or
/// a delivery in progress.
pub struct Live<T>(std::sync::RwLock<std::sync::Arc<T>>);

impl<T> Live<T> {
    pub fn new(value: std::sync::Arc<T>) -> Live<T> {
        Live(std::sync::RwLock::new(value))
    }

    /// The current value.
    pub fn get(&self) -> std::sync::Arc<T> {
        // A panic while holding the lock cannot leave a half-written Arc.
        std::sync::Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replace the value for every later `get`.
    pub fn set(&self, value: std::sync::Arc<T>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = value;
    }
}

/// Where `route` or `relay_host` sends mail: `[host]:port` (no MX lookup),
/// `host:port` or `host` (MX lookup of host), optionally followed by `tls=POLICY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub host: String,
    pub port: u16,
    /// Look up the host's MX records (a bare name) or not (`[name]`).
    pub mx: bool,
    pub tls: Option<TlsPolicy>,
    /// TLS from the first byte (RFC 8314): port 465, or the word `smtps`.
    pub implicit_tls: bool,
}

impl Default for Config {
    fn default() -> Config {
        // A host name that is not a valid domain (empty, underscores) would put garbage
        // into every greeting, so fall back to "localhost" for those too.
        let hostname = sys::hostname()
            .ok()
            .filter(|h| check_domain(h).is_ok())
            .unwrap_or_else(|| "localhost".to_string());
        let local_domains = default_local_domains(&hostname);
        Config {
            path: PathBuf::from(DEFAULT_PATH),
            hostname,
            listen: vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 25),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 25),
            ],
            submission: Vec::new(),
            smtps: Vec::new(),
            tls_cert: None,
            tls_key: None,
            auth_users: None,
            sender_map: None,
            auth_failure_delay: Duration::from_secs(2),
            harvest_threshold: 5,
            harvest_delay: Duration::from_secs(1),
            harvest_limit: 20,
            proxy_protocol: Vec::new(),
            proxy_from: Vec::new(),
            spool: PathBuf::from("/var/spool/tern"),
            spool_sync: SyncMode::default(),
            local_domains,
            local_users: None,
            aliases: None,
            relay_networks: vec![
                Cidr {
                    net: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                    len: 8,
                },
                Cidr {
                    net: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    len: 128,
                },
            ],
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 100,
            max_sessions: 100,
            max_sessions_per_ip: 20,
            max_errors: 10,
            max_received: 50,
            greeting_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(300),
            stress_timeout: Duration::from_secs(10),
            expn: false,
            vrfy: false,
            mailbox: "/var/mail/%u".to_owned(),
            retry_initial: Duration::from_secs(300),
            retry_max: Duration::from_secs(4 * 3600),
            queue_lifetime: Duration::from_secs(5 * 86400),
            delay_warning: Some(Duration::from_secs(4 * 3600)),
            delivery_threads: 8,
            pipe_timeout: Duration::from_secs(600),
            double_bounce_to_postmaster: false,
            queue_only: false,
            dns_servers: Vec::new(),
            dns_timeout: Duration::from_secs(10),
            routes: Vec::new(),
            relay_host: None,
            relay_auth: None,
            smtp_tls: TlsPolicy::May,
            tls_ca_file: None,
            inet_protocols: Family::Both,
            mx_port: 25,
            smtp_connect_timeout: Duration::from_secs(30),
            smtp_helo_timeout: Duration::from_secs(300),
            smtp_command_timeout: Duration::from_secs(300),
            smtp_data_timeout: Duration::from_secs(180),
            smtp_data_done_timeout: Duration::from_secs(600),
            smtp_connection_cache_time: Some(Duration::from_secs(2)),
            max_connections_per_domain: 20,
            pid_file: PathBuf::from("/var/run/ternd.pid"),
            shutdown_grace: Duration::from_secs(30),
            user: "tern".to_owned(),
            log_level: log::LevelFilter::Info,
            syslog_facility: 2,
        }
    }
}

impl Config {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            what: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parse `text`; `path` is recorded in the result and shown, as given, in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let err = |line: usize, what: String| ConfigError {
            file: file.clone(),
            line,
            what,
        };
        let mut c = Config {
            path: path.to_path_buf(),
            ..Config::default()
        };
        // Key -> line it was first set on, to catch repeats and to say where the first was.
        let mut seen: HashMap<String, usize> = HashMap::new();

        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(err(
                    n,
                    format!("missing \"=\" in {line:?} (lines have the form \"key = value\")"),
                ));
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                return Err(err(n, format!("missing key before \"=\" in {line:?}")));
            }
            let Some((times, set)) = key_spec(key) else {
                return Err(err(n, format!("unknown key {key:?}")));
            };
            if let Some(first) = seen.get(key) {
                if times == Times::Once {
                    return Err(err(
                        n,
                        format!("repeated key {key:?} (first set on line {first})"),
                    ));
                }
            } else {
                seen.insert(key.to_string(), n);
            }
            set(&mut c, value).map_err(|m| err(n, format!("{key}: {m}")))?;
        }

        // A certificate without its key (or the reverse) is a mistake, not "no TLS".
        if c.tls_cert.is_some() != c.tls_key.is_some() {
            let (set, missing) = if c.tls_cert.is_some() {
                ("tls_cert", "tls_key")
            } else {
                ("tls_key", "tls_cert")
            };
            let line = seen.get(set).copied().unwrap_or(0);
            return Err(err(line, format!("{set} is set but {missing} is not")));
        }
        // A PROXY listener that trusts no proxy would refuse everyone.
        if !c.proxy_protocol.is_empty() && c.proxy_from.is_empty() {
            let line = seen.get("proxy_protocol").copied().unwrap_or(0);
            return Err(err(line, "proxy_protocol: needs proxy_from".to_owned()));
        }
        // Submission takes mail only after AUTH, and AUTH only inside TLS:
        // without both it could never accept anything.
        for (key, set) in [
            ("submission", !c.submission.is_empty()),
            ("smtps", !c.smtps.is_empty()),
        ] {
            let line = seen.get(key).copied().unwrap_or(0);
            if set && c.tls_cert.is_none() {
                return Err(err(line, format!("{key}: needs tls_cert and tls_key")));
            }
            if set && c.auth_users.is_none() {
                return Err(err(line, format!("{key}: needs auth_users")));
            }
        }
        // The default local domains follow the host name, which the file may have changed.
        if !seen.contains_key("local_domains") {
            c.local_domains = default_local_domains(&c.hostname);
        }
        Ok(c)
    }

    /// Make relative paths absolute against `base` (the directory ternd was
    /// started in), so that they mean the same in delivery children, which
    /// run in `/`, and after the daemon changes directory.
    pub fn resolve_relative(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.spool);
        abs(&mut self.pid_file);
        for p in [
            &mut self.local_users,
            &mut self.aliases,
            &mut self.tls_cert,
            &mut self.tls_key,
            &mut self.auth_users,
            &mut self.sender_map,
            &mut self.tls_ca_file,
        ]
        .into_iter()
        .flatten()
        {
            abs(p);
        }
        if !self.mailbox.starts_with('/') && !self.mailbox.starts_with('~') {
            self.mailbox = base.join(&self.mailbox).display().to_string();
        }
    }

    /// Whether mail for `domain` is delivered here (case-insensitive, trailing dot ignored).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let d = domain.strip_suffix('.').unwrap_or(domain);
        self.local_domains.iter().any(|l| l.eq_ignore_ascii_case(d))
    }

    /// Whether a client at `ip` may send mail to non-local domains.
    pub fn may_relay(&self, ip: IpAddr) -> bool {
        self.relay_networks.iter().any(|n| n.contains(ip))
    }

    /// The configured next hop for a recipient domain: its route, else the
    /// relay_host, else None (MX lookup).
    pub fn next_hop(&self, domain: &str) -> Option<&NextHop> {
        let d = domain.strip_suffix('.').unwrap_or(domain);
        self.routes
            .iter()
            .find(|(r, _)| r.eq_ignore_ascii_case(d))
            .map(|(_, h)| h)
            .or(self.relay_host.as_ref())
    }
}

/// How often a key may appear in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Times {
    Once,
    /// Each occurrence adds to the value; its setter must append rather than replace.
    Repeatable,
}

/// Stores one parsed value into the config, or says what is wrong with it
/// (without the key; the caller prefixes it).
type Setter = fn(&mut Config, &str) -> Result<(), String>;

/// The key table. Adding a key is one arm here plus its field in [`Config`].
fn key_spec(key: &str) -> Option<(Times, Setter)> {
    use Times::{Once, Repeatable};
    let spec: (Times, Setter) = match key {
        "hostname" => (Once, |c, v| domain(v).map(|x| c.hostname = x.to_string())),
        "listen" => (Once, |c, v| listen(v).map(|x| c.listen = x)),
        "submission" => (Once, |c, v| listen_list(v).map(|x| c.submission = x)),
        "smtps" => (Once, |c, v| listen_list(v).map(|x| c.smtps = x)),
        "tls_cert" => (Once, |c, v| path(v).map(|x| c.tls_cert = Some(x))),
        "tls_key" => (Once, |c, v| path(v).map(|x| c.tls_key = Some(x))),
        "auth_users" => (Once, |c, v| path(v).map(|x| c.auth_users = Some(x))),
        "sender_map" => (Once, |c, v| path(v).map(|x| c.sender_map = Some(x))),
        "auth_failure_delay" => (Once, |c, v| delay(v).map(|x| c.auth_failure_delay = x)),
        "harvest_threshold" => (Once, |c, v| count(v).map(|x| c.harvest_threshold = x)),
        "harvest_delay" => (Once, |c, v| delay(v).map(|x| c.harvest_delay = x)),
        "harvest_limit" => (Once, |c, v| count(v).map(|x| c.harvest_limit = x)),
        "proxy_protocol" => (Once, |c, v| services(v).map(|x| c.proxy_protocol = x)),
        "proxy_from" => (Once, |c, v| networks(v).map(|x| c.proxy_from = x)),
        "spool" => (Once, |c, v| path(v).map(|x| c.spool = x)),
        "spool_sync" => (Once, |c, v| spool_sync(v).map(|x| c.spool_sync = x)),
        "local_domains" => (Once, |c, v| local_domains(v).map(|x| c.local_domains = x)),
        "local_users" => (Once, |c, v| path(v).map(|x| c.local_users = Some(x))),
        "aliases" => (Once, |c, v| path(v).map(|x| c.aliases = Some(x))),
        "relay_networks" => (Once, |c, v| networks(v).map(|x| c.relay_networks = x)),
        "max_message_size" => (Once, |c, v| size(v).map(|x| c.max_message_size = x)),
        "max_recipients" => (Once, |c, v| count(v).map(|x| c.max_recipients = x)),
        "max_sessions" => (Once, |c, v| count(v).map(|x| c.max_sessions = x)),
        "max_sessions_per_ip" => (Once, |c, v| count(v).map(|x| c.max_sessions_per_ip = x)),
        "max_errors" => (Once, |c, v| count(v).map(|x| c.max_errors = x)),
        "max_received" => (Once, |c, v| count(v).map(|x| c.max_received = x)),
        "greeting_timeout" => (Once, |c, v| timeout(v).map(|x| c.greeting_timeout = x)),
        "command_timeout" => (Once, |c, v| timeout(v).map(|x| c.command_timeout = x)),
        "data_timeout" => (Once, |c, v| timeout(v).map(|x| c.data_timeout = x)),
        "stress_timeout" => (Once, |c, v| timeout(v).map(|x| c.stress_timeout = x)),
        "expn" => (Once, |c, v| boolean(v).map(|x| c.expn = x)),
        "vrfy" => (Once, |c, v| boolean(v).map(|x| c.vrfy = x)),
        "mailbox" => (Once, |c, v| mailbox(v).map(|x| c.mailbox = x)),
        "retry_initial" => (Once, |c, v| timeout(v).map(|x| c.retry_initial = x)),
        "retry_max" => (Once, |c, v| timeout(v).map(|x| c.retry_max = x)),
        "queue_lifetime" => (Once, |c, v| timeout(v).map(|x| c.queue_lifetime = x)),
        "delay_warning" => (Once, |c, v| optional_duration(v).map(|x| c.delay_warning = x)),
        "delivery_threads" => (Once, |c, v| count(v).map(|x| c.delivery_threads = x)),
        "pipe_timeout" => (Once, |c, v| timeout(v).map(|x| c.pipe_timeout = x)),
        "double_bounce_to_postmaster" => (Once, |c, v| boolean(v).map(|x| c.double_bounce_to_postmaster = x)),
        "queue_only" => (Once, |c, v| boolean(v).map(|x| c.queue_only = x)),
        "dns_servers" => (Once, |c, v| dns_servers(v).map(|x| c.dns_servers = x)),
        "dns_timeout" => (Once, |c, v| timeout(v).map(|x| c.dns_timeout = x)),
        "route" => (Repeatable, |c, v| route(v).map(|x| c.routes.push(x))),
        "relay_host" => (Once, |c, v| next_hop(v).map(|x| c.relay_host = Some(x))),
        "relay_auth" => (Once, |c, v| relay_auth(v).map(|x| c.relay_auth = Some(x))),
        "smtp_tls" => (Once, |c, v| tls_policy(v).map(|x| c.smtp_tls = x)),
        "tls_ca_file" => (Once, |c, v| path(v).map(|x| c.tls_ca_file = Some(x))),
        "inet_protocols" => (Once, |c, v| inet_protocols(v).map(|x| c.inet_protocols = x)),
        "mx_port" => (Once, |c, v| {
            port_number(nonempty(v)?)
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("bad port {v:?}"))
                .map(|x| c.mx_port = x)
        }),
        "smtp_connect_timeout" => (Once, |c, v| timeout(v).map(|x| c.smtp_connect_timeout = x)),
        "smtp_helo_timeout" => (Once, |c, v| timeout(v).map(|x| c.smtp_helo_timeout = x)),
        "smtp_command_timeout" => (Once, |c, v| timeout(v).map(|x| c.smtp_command_timeout = x)),
        "smtp_data_timeout" => (Once, |c, v| timeout(v).map(|x| c.smtp_data_timeout = x)),
        "smtp_data_done_timeout" => (Once, |c, v| timeout(v).map(|x| c.smtp_data_done_timeout = x)),
        "smtp_connection_cache_time" => (Once, |c, v| {
            optional_duration(v).map(|x| c.smtp_connection_cache_time = x)
        }),
        "max_connections_per_domain" => (Once, |c, v| count(v).map(|x| c.max_connections_per_domain = x)),
        "pid_file" => (Once, |c, v| path(v).map(|x| c.pid_file = x)),
        "shutdown_grace" => (Once, |c, v| timeout(v).map(|x| c.shutdown_grace = x)),
        "user" => (Once, |c, v| account_name(v).map(|x| c.user = x)),
        "log_level" => (Once, |c, v| log_level(v).map(|x| c.log_level = x)),
        "syslog_facility" => (Once, |c, v| syslog_facility(v).map(|x| c.syslog_facility = x)),
        _ => return None,
    };
    Some(spec)
}

/// An account name for `user`: what useradd accepts, checked here so a typo
/// is a config error rather than a failed lookup at start.
fn account_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && !v.starts_with('-')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!("bad user name {v:?}"))
    }
}

/// `log_level`: syslog's severities that the log crate has (no trace: `-v -v`).
fn log_level(v: &str) -> Result<log::LevelFilter, String> {
    match v.to_ascii_lowercase().as_str() {
        "error" => Ok(log::LevelFilter::Error),
        "warn" | "warning" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        _ => Err(format!("bad log level {v:?} (error, warn, info or debug)")),
    }
}

/// `syslog_facility`: the facilities a mail daemon may use, as RFC 5424 numbers
/// (mail 2, daemon 3, local0..local7 16..23).
fn syslog_facility(v: &str) -> Result<u8, String> {
    let name = v.to_ascii_lowercase();
    let local = name
        .strip_prefix("local")
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| *n <= 7);
    match (name.as_str(), local) {
        ("mail", _) => Ok(2),
        ("daemon", _) => Ok(3),
        (_, Some(n)) => Ok(16 + n),
        _ => Err(format!(
            "bad syslog facility {v:?} (mail, daemon, local0 to local7)"
        )),
    }
}

/// Cut a `#` comment: one that starts the line or follows whitespace. A `#` inside a
/// word is kept, so a value such as a path may contain one.
fn strip_comment(line: &str) -> &str {
    let mut after_space = true;
    for (i, ch) in line.char_indices() {
        if ch == '#' && after_space {
            return line.get(..i).unwrap_or(line);
        }
        after_space = ch.is_whitespace();
    }
    line
}

/// List items: separated by whitespace or commas, empty items dropped.
fn items(v: &str) -> impl Iterator<Item = &str> {
    v.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

fn nonempty(v: &str) -> Result<&str, String> {
    if v.is_empty() {
        Err("missing value".to_string())
    } else {
        Ok(v)
    }
}

/// Relative paths are kept as given: whoever starts the daemon decides the cwd.
fn path(v: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(nonempty(v)?))
}

fn domain(v: &str) -> Result<&str, String> {
    check_domain(nonempty(v)?).map_err(|why| format!("bad domain {v:?}: {why}"))?;
    Ok(v)
}

/// RFC 1035 host name syntax: letters, digits and hyphens in dot-separated labels.
fn check_domain(d: &str) -> Result<(), String> {
    if d.is_empty() {
        return Err("empty".to_string());
    }
    if d.len() > 253 {
        return Err("longer than 253 characters".to_string());
    }
    for label in d.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a dot at the start or end)".to_string());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if let Some(bad) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(format!(
                "{bad:?} is not allowed (only letters, digits, hyphens and dots)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with a hyphen"));
        }
    }
    Ok(())
}

fn default_local_domains(hostname: &str) -> Vec<String> {
    let mut v = Vec::new();
    push_unique(
        &mut v,
        hostname
            .strip_suffix('.')
            .unwrap_or(hostname)
            .to_ascii_lowercase(),
    );
    push_unique(&mut v, "localhost".to_string());
    v
}

/// An empty list is allowed: a pure relay or smarthost client has no local domains.
fn local_domains(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in items(v) {
        // A fully qualified "example.org." is the same domain as "example.org".
        let d = item.strip_suffix('.').unwrap_or(item);
        check_domain(d).map_err(|why| format!("bad domain {item:?}: {why}"))?;
        push_unique(&mut out, d.to_ascii_lowercase());
    }
    Ok(out)
}

fn listen(v: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for item in items(v) {
        for addr in listen_addr(item).ok_or_else(|| {
            format!("bad address {item:?} (use IP:PORT, [IPv6]:PORT, a bare IP for port 25, or *:PORT)")
        })? {
            push_unique(&mut out, addr);
        }
    }
    if out.is_empty() {
        return Err("no addresses given (the daemon would not listen anywhere)".to_string());
    }
    Ok(out)
}

/// Like `listen`, but an empty value means no listener of that kind.
fn listen_list(v: &str) -> Result<Vec<SocketAddr>, String> {
    if items(v).next().is_none() {
        return Ok(Vec::new());
    }
    listen(v)
}

/// One listen item; `*` means every address of both families, hence possibly two.
/// Port 0 is allowed: the kernel picks a free port, which tests rely on.
fn listen_addr(item: &str) -> Option<Vec<SocketAddr>> {
    let any = |port| {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        ]
    };
    if item == "*" {
        return Some(any(25));
    }
    if let Some(port) = item.strip_prefix("*:") {
        return Some(any(port_number(port)?));
    }
    if let Ok(sa) = item.parse::<SocketAddr>() {
        return Some(vec![sa]);
    }
    // A bare address, IPv6 with or without brackets.
    let bare = item
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(item);
    let ip: IpAddr = bare.parse().ok()?;
    Some(vec![SocketAddr::new(ip, 25)])
}

fn port_number(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Name servers as IP:PORT (or a bare IP for port 53); empty = resolv.conf.
fn dns_servers(v: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for item in items(v) {
        let sa = match item.parse::<SocketAddr>() {
            Ok(sa) => sa,
            Err(_) => {
                let bare = item.trim_start_matches('[').trim_end_matches(']');
                let ip: IpAddr = bare
                    .parse()
                    .map_err(|_| format!("bad name server {item:?} (use IP or IP:PORT)"))?;
                SocketAddr::new(ip, 53)
            }
        };
        push_unique(&mut out, sa);
    }
    Ok(out)
}

/// Listener kinds, for `proxy_protocol`.
fn services(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in items(v) {
        let s = item.to_ascii_lowercase();
        if !["smtp", "submission", "smtps"].contains(&s.as_str()) {
            return Err(format!(
                "unknown service {item:?} (use smtp, submission or smtps)"
            ));
        }
        push_unique(&mut out, s);
    }
    Ok(out)
}

fn tls_policy(v: &str) -> Result<TlsPolicy, String> {
    TlsPolicy::parse(nonempty(v)?)
        .ok_or_else(|| format!("bad TLS policy {v:?} (use none, may, encrypt or verify)"))
}

fn spool_sync(v: &str) -> Result<SyncMode, String> {
    match nonempty(v)?.to_ascii_lowercase().as_str() {
        "syncfs" => Ok(SyncMode::Syncfs),
        "fsync" => Ok(SyncMode::Fsync),
        _ => Err(format!("bad value {v:?} (use syncfs or fsync)")),
    }
}

fn inet_protocols(v: &str) -> Result<Family, String> {
    match nonempty(v)?.to_ascii_lowercase().as_str() {
        "ipv4" => Ok(Family::Ipv4),
        "ipv6" => Ok(Family::Ipv6),
        "both" | "all" => Ok(Family::Both),
        _ => Err(format!("bad value {v:?} (use ipv4, ipv6 or both)")),
    }
}

/// `[host]:port`, `[host]`, `host:port` or `host`, then an optional `tls=POLICY`.
fn next_hop(v: &str) -> Result<NextHop, String> {
    let mut words = nonempty(v)?.split_whitespace();
    let target = words.next().ok_or("missing value")?;
    let mut tls = None;
    let mut smtps = false;
    for w in words {
        if w.eq_ignore_ascii_case("smtps") {
            smtps = true;
            continue;
        }
        match w.split_once('=') {
            Some((k, p)) if k.eq_ignore_ascii_case("tls") => tls = Some(tls_policy(p)?),
            _ => {
                return Err(format!(
                    "unexpected {w:?} after the next hop (only tls=POLICY may follow)"
                ))
            }
        }
    }
    let bad = || format!("bad next hop {target:?} (use [host]:port, host:port, [host] or host)");
    let (host, port, mx) = if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => 25,
            p => port_number(p.strip_prefix(':').ok_or_else(bad)?).ok_or_else(bad)?,
        };
        (host, port, false)
    } else {
        match target.rsplit_once(':') {
            Some((h, p)) => (h, port_number(p).ok_or_else(bad)?, true),
            None => (target, 25, true),
        }
    };
    if port == 0 {
        return Err(bad());
    }
    if host.parse::<IpAddr>().is_err() {
        check_domain(host).map_err(|why| format!("bad host {host:?}: {why}"))?;
    } else if mx {
        return Err(format!("{target:?}: an address needs brackets, as in [{host}]"));
    }
    Ok(NextHop {
        host: host.to_ascii_lowercase(),
        port,
        mx,
        tls,
        implicit_tls: smtps || port == 465,
    })
}

/// `DOMAIN NEXTHOP [tls=POLICY]`.
fn route(v: &str) -> Result<(String, NextHop), String> {
    let v = nonempty(v)?;
    let (domain, hop) = v
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("bad route {v:?} (use DOMAIN [host]:port)"))?;
    let d = domain.strip_suffix('.').unwrap_or(domain);
    check_domain(d).map_err(|why| format!("bad domain {domain:?}: {why}"))?;
    Ok((d.to_ascii_lowercase(), next_hop(hop.trim())?))
}

/// `user:password`; the password may contain colons.
fn relay_auth(v: &str) -> Result<(String, String), String> {
    match nonempty(v)?.split_once(':') {
        Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok((u.to_owned(), p.to_owned())),
        _ => Err("use user:password".to_owned()),
    }
}

/// An empty list is allowed: it turns relaying off entirely.
fn networks(v: &str) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::new();
    for item in items(v) {
        let n = Cidr::parse(item).ok_or_else(|| {
            format!("bad network {item:?} (use ADDRESS/PREFIX such as 192.0.2.0/24 or 2001:db8::/32, or a single address)")
        })?;
        push_unique(&mut out, n);
    }
    Ok(out)
}

fn size(v: &str) -> Result<u64, String> {
    let n = parse_size(nonempty(v)?)
        .ok_or_else(|| format!("bad size {v:?} (use a number with optional K, M or G)"))?;
    if n == 0 {
        return Err("must be greater than 0".to_string());
    }
    Ok(n)
}

fn timeout(v: &str) -> Result<Duration, String> {
    let d = parse_duration(nonempty(v)?).ok_or_else(|| {
        format!("bad duration {v:?} (use a number with optional s, m, h, d or w; plain means seconds)")
    })?;
    if d.is_zero() {
        return Err("must be greater than 0".to_string());
    }
    Ok(d)
}

/// A duration where 0 means "off".
fn optional_duration(v: &str) -> Result<Option<Duration>, String> {
    let d = parse_duration(nonempty(v)?).ok_or_else(|| {
        format!("bad duration {v:?} (use a number with optional s, m, h, d or w; 0 turns it off)")
    })?;
    Ok(if d.is_zero() { None } else { Some(d) })
}

/// A pause, where 0 means none.
fn delay(v: &str) -> Result<Duration, String> {
    parse_duration(nonempty(v)?).ok_or_else(|| {
        format!("bad duration {v:?} (use a number with optional s, m, h, d or w; 0 means none)")
    })
}

/// The mailbox template must name a place per user.
fn mailbox(v: &str) -> Result<String, String> {
    let v = nonempty(v)?;
    // Only the recipient's own home is known: "~/..." (or "~"), not "~user".
    if v.starts_with('~') && v != "~" && !v.starts_with("~/") {
        return Err(format!(
            "{v:?}: only ~/ (the recipient's home) is understood, not ~user"
        ));
    }
    if !v.contains("%u") && !v.starts_with('~') {
        return Err(format!(
            "mailbox {v:?} must contain %u or start with ~ so each user has their own"
        ));
    }
    Ok(v.to_owned())
}

fn boolean(v: &str) -> Result<bool, String> {
    parse_bool(nonempty(v)?).ok_or_else(|| format!("bad boolean {v:?} (use yes or no)"))
}

/// A limit of at least 1: zero would make the daemon refuse everything.
fn count<T: TryFrom<u64>>(v: &str) -> Result<T, String> {
    let v = nonempty(v)?;
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad number {v:?} (use a whole number, 1 or more)"));
    }
    let n = v
        .parse::<u64>()
        .ok()
        .and_then(|n| T::try_from(n).ok().map(|t| (n, t)));
    match n {
        None => Err(format!("number {v:?} is too large")),
        Some((0, _)) => Err("must be at least 1".to_string()),
        Some((_, t)) => Ok(t),
    }
}

/// Split `s` into its leading digits and the rest, refusing an empty digit run.
fn split_number(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, rest) = s.split_at_checked(end)?;
    if digits.is_empty() {
        return None;
    }
    // Only digits remain, so the only failure left is overflow.
    Some((digits.parse().ok()?, rest))
}

/// A byte count: digits with an optional K, M or G suffix (any case, powers of 1024).
/// None on bad syntax or overflow.
pub fn parse_size(s: &str) -> Option<u64> {
    let (n, unit) = split_number(s)?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A duration: digits with an optional s, m, h, d or w suffix (any case); a bare
/// number is seconds. None on bad syntax or overflow.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (n, unit) = split_number(s)?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        "w" => 7 * 24 * 60 * 60,
        _ => return None,
    };
    n.checked_mul(mult).map(Duration::from_secs)
}

/// yes/no, true/false, on/off, 1/0, in any case.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("tern.conf"))
    }

    fn perr(text: &str) -> String {
        match p(text) {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn defaults() {
        for c in [Config::default(), p("").unwrap()] {
            assert!(!c.hostname.is_empty());
            assert!(check_domain(&c.hostname).is_ok());
            assert_eq!(c.listen, vec![sa("0.0.0.0:25"), sa("[::]:25")]);
            assert_eq!(c.spool, PathBuf::from("/var/spool/tern"));
            assert_eq!(c.local_domains, default_local_domains(&c.hostname));
            assert!(c.local_domains.contains(&"localhost".to_string()));
            assert!(c.is_local_domain(&c.hostname));
            assert_eq!(c.local_users, None);
            assert_eq!(c.aliases, None);
            assert_eq!(c.relay_networks, vec![cidr("127.0.0.0/8"), cidr("::1/128")]);
            assert_eq!(c.max_message_size, 36_700_160);
            assert_eq!(c.max_recipients, 100);
            assert_eq!(c.max_sessions, 100);
            assert_eq!(c.max_sessions_per_ip, 20);
            assert_eq!(c.max_errors, 10);
            assert_eq!(c.max_received, 50);
            assert_eq!(c.greeting_timeout, Duration::from_secs(300));
            assert_eq!(c.command_timeout, Duration::from_secs(300));
            assert_eq!(c.data_timeout, Duration::from_secs(300));
            assert!(!c.expn);
            assert!(!c.vrfy);
        }
        assert_eq!(Config::default().path, PathBuf::from(DEFAULT_PATH));
        assert_eq!(p("").unwrap().path, PathBuf::from("tern.conf"));
    }

    #[test]
    fn default_local_domains_dedup() {
        assert_eq!(default_local_domains("localhost"), vec!["localhost"]);
        assert_eq!(default_local_domains("LocalHost."), vec!["localhost"]);
        assert_eq!(
            default_local_domains("Mail.Example.ORG"),
            vec!["mail.example.org", "localhost"]
        );
    }

    #[test]
    fn every_key() {
        let text = "\
# every key, with non-default values
hostname = Mail.Example.org
listen = 127.0.0.1:2525 [::1]:2525, 192.0.2.1 *:587 127.0.0.1:2525
spool = ./var/spool
local_domains = Example.ORG. example.org, localhost
local_users = /etc/tern/users
aliases = /etc/aliases
relay_networks = 10.0.0.0/8, 2001:db8::/32 192.0.2.7
max_message_size = 10m
max_recipients = 5
max_sessions = 6
max_sessions_per_ip = 7
max_errors = 3
max_received = 30
greeting_timeout = 30s
command_timeout = 10m
data_timeout = 1h
expn = yes
vrfy = on
";
        let c = p(text).unwrap();
        assert_eq!(c.hostname, "Mail.Example.org");
        assert_eq!(
            c.listen,
            vec![
                sa("127.0.0.1:2525"),
                sa("[::1]:2525"),
                sa("192.0.2.1:25"),
                sa("0.0.0.0:587"),
                sa("[::]:587")
            ]
        );
        assert_eq!(c.spool, PathBuf::from("./var/spool"));
        assert_eq!(c.local_domains, vec!["example.org", "localhost"]);
        assert_eq!(c.local_users, Some(PathBuf::from("/etc/tern/users")));
        assert_eq!(c.aliases, Some(PathBuf::from("/etc/aliases")));
        assert_eq!(
            c.relay_networks,
            vec![cidr("10.0.0.0/8"), cidr("2001:db8::/32"), cidr("192.0.2.7/32")]
        );
        assert_eq!(c.max_message_size, 10 << 20);
        assert_eq!(c.max_recipients, 5);
        assert_eq!(c.max_sessions, 6);
        assert_eq!(c.max_sessions_per_ip, 7);
        assert_eq!(c.max_errors, 3);
        assert_eq!(c.max_received, 30);
        assert_eq!(c.greeting_timeout, Duration::from_secs(30));
        assert_eq!(c.command_timeout, Duration::from_secs(600));
        assert_eq!(c.data_timeout, Duration::from_secs(3600));
        assert!(c.expn);
        assert!(c.vrfy);
    }

    #[test]
    fn local_domains_follow_hostname_unless_set() {
        let c = p("hostname = MX.example.net").unwrap();
        assert_eq!(c.local_domains, vec!["mx.example.net", "localhost"]);
        let c = p("local_domains =\nhostname = mx.example.net").unwrap();
        assert!(c.local_domains.is_empty());
        assert!(!c.is_local_domain("localhost"));
        let c = p("local_domains = example.com # only this").unwrap();
        assert_eq!(c.local_domains, vec!["example.com"]);
    }

    #[test]
    fn empty_lists_that_are_allowed() {
        assert!(p("relay_networks =").unwrap().relay_networks.is_empty());
        assert!(p("relay_networks = # nobody").unwrap().relay_networks.is_empty());
    }

    #[test]
    fn comments_and_blank_lines() {
        let cases: &[(&str, usize)] = &[
            ("# comment\n\n   \n\t\nmax_recipients = 7\n", 7),
            ("  # indented comment\nmax_recipients = 7 # trailing comment\n", 7),
            ("max_recipients = 7\t# tab then comment\n", 7),
            ("max_recipients=7\r\n", 7),
            ("   max_recipients   =   7   \n# last line without newline", 7),
            ("#max_recipients = 1\nmax_recipients = 7", 7),
        ];
        for (text, want) in cases {
            assert_eq!(p(text).unwrap().max_recipients, *want, "{text:?}");
        }
        // A '#' inside a word is not a comment.
        assert_eq!(
            p("spool = /var/spool/a#b").unwrap().spool,
            PathBuf::from("/var/spool/a#b")
        );
        assert_eq!(strip_comment("a # b"), "a ");
        assert_eq!(strip_comment("#x"), "");
        assert_eq!(strip_comment("a#b"), "a#b");
    }

    #[test]
    fn errors_with_file_and_line() {
        let cases: &[(&str, &str)] = &[
            (
                "\n\n\n\n\n\nlisen = 1.2.3.4",
                "tern.conf:7: unknown key \"lisen\"",
            ),
            ("Listen = 1.2.3.4", "tern.conf:1: unknown key \"Listen\""),
            (
                "# x\nlisten 127.0.0.1",
                "tern.conf:2: missing \"=\" in \"listen 127.0.0.1\"",
            ),
            ("= 5", "tern.conf:1: missing key before \"=\""),
            (
                "max_recipients = 5\n\nmax_recipients = 6",
                "tern.conf:3: repeated key \"max_recipients\" (first set on line 1)",
            ),
            (
                "\n\nmax_message_size = 10X",
                "tern.conf:3: max_message_size: bad size \"10X\" (use a number with optional K, M or G)",
            ),
            (
                "max_message_size = 0",
                "tern.conf:1: max_message_size: must be greater than 0",
            ),
            (
                "max_message_size = 99999999999999999999G",
                "tern.conf:1: max_message_size: bad size",
            ),
            (
                "max_message_size =",
                "tern.conf:1: max_message_size: missing value",
            ),
            (
                "data_timeout = 5 m",
                "tern.conf:1: data_timeout: bad duration \"5 m\"",
            ),
            (
                "command_timeout = 0s",
                "tern.conf:1: command_timeout: must be greater than 0",
            ),
            (
                "greeting_timeout = -1",
                "tern.conf:1: greeting_timeout: bad duration \"-1\"",
            ),
            (
                "expn = maybe",
                "tern.conf:1: expn: bad boolean \"maybe\" (use yes or no)",
            ),
            ("vrfy =", "tern.conf:1: vrfy: missing value"),
            (
                "relay_networks = 10.0.0.0/33",
                "tern.conf:1: relay_networks: bad network \"10.0.0.0/33\"",
            ),
            (
                "relay_networks = 10.0.0.0/8 bogus",
                "tern.conf:1: relay_networks: bad network \"bogus\"",
            ),
            (
                "listen = localhost:25",
                "tern.conf:1: listen: bad address \"localhost:25\"",
            ),
            (
                "listen = 127.0.0.1:99999",
                "tern.conf:1: listen: bad address \"127.0.0.1:99999\"",
            ),
            ("listen = *:", "tern.conf:1: listen: bad address \"*:\""),
            ("listen =", "tern.conf:1: listen: no addresses given"),
            (
                "hostname = mail_1.example.org",
                "tern.conf:1: hostname: bad domain \"mail_1.example.org\": '_'",
            ),
            (
                "hostname = -mail.example.org",
                "tern.conf:1: hostname: bad domain \"-mail.example.org\": label",
            ),
            (
                "hostname = mail.example.org.",
                "tern.conf:1: hostname: bad domain \"mail.example.org.\": empty label",
            ),
            ("hostname =", "tern.conf:1: hostname: missing value"),
            (
                "local_domains = ok.example a..b",
                "tern.conf:1: local_domains: bad domain \"a..b\": empty label",
            ),
            (
                "max_sessions = 0",
                "tern.conf:1: max_sessions: must be at least 1",
            ),
            (
                "max_recipients = 0",
                "tern.conf:1: max_recipients: must be at least 1",
            ),
            (
                "max_sessions_per_ip = +3",
                "tern.conf:1: max_sessions_per_ip: bad number \"+3\"",
            ),
            (
                "max_errors = 4294967296",
                "tern.conf:1: max_errors: number \"4294967296\" is too large",
            ),
            (
                "max_received = 99999999999999999999999",
                "tern.conf:1: max_received: number",
            ),
            ("spool =", "tern.conf:1: spool: missing value"),
            ("aliases = # none", "tern.conf:1: aliases: missing value"),
            ("local_users =", "tern.conf:1: local_users: missing value"),
        ];
        for (text, want) in cases {
            let got = perr(text);
            assert!(got.starts_with(want), "{text:?}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn error_display() {
        let e = ConfigError {
            file: "f.conf".into(),
            line: 0,
            what: "cannot read: x".into(),
        };
        assert_eq!(e.to_string(), "f.conf: cannot read: x");
        let e = ConfigError { line: 4, ..e };
        assert_eq!(e.to_string(), "f.conf:4: cannot read: x");
    }

    #[test]
    fn load() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.conf");
        std::fs::write(&f, "max_errors = 2\n").unwrap();
        let c = Config::load(&f).unwrap();
        assert_eq!(c.max_errors, 2);
        assert_eq!(c.path, f);

        std::fs::write(&f, "max_errors = 2\nfoo = 1\n").unwrap();
        let e = Config::load(&f).unwrap_err();
        assert_eq!(e.to_string(), format!("{}:2: unknown key \"foo\"", f.display()));

        let missing = dir.path().join("nope.conf");
        let e = Config::load(&missing).unwrap_err();
        assert_eq!(e.line, 0);
        let s = e.to_string();
        assert!(
            s.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{s}"
        );
    }

    #[test]
    fn cidr_parse_and_display() {
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.0/8", Some("127.0.0.0/8")),
            ("10.1.2.3", Some("10.1.2.3/32")),
            ("10.1.2.3/8", Some("10.0.0.0/8")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("1.2.3.4/0", Some("0.0.0.0/0")),
            ("::1/128", Some("::1/128")),
            ("::1", Some("::1/128")),
            ("2001:db8::1/32", Some("2001:db8::/32")),
            ("::/0", Some("::/0")),
            ("10.0.0.0/33", None),
            ("::/129", None),
            ("10.0.0.0/", None),
            ("10.0.0.0/+8", None),
            ("10.0.0.0/-1", None),
            ("10.0.0.0/8/8", None),
            ("10.0.0/8", None),
            ("/8", None),
            ("", None),
            ("fe80::1%eth0/64", None),
            ("10.0.0.0/999999999999", None),
        ];
        for (s, want) in cases {
            assert_eq!(Cidr::parse(s).map(|c| c.to_string()).as_deref(), *want, "{s:?}");
        }
    }

    #[test]
    fn cidr_contains() {
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.0/8", "127.0.0.1", true),
            ("127.0.0.0/8", "127.255.255.255", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("127.0.0.0/8", "::ffff:10.0.0.1", false),
            ("10.0.0.0/8", "::10.0.0.1", false), // IPv4-compatible, not mapped
            ("::1/128", "::1", true),
            ("::1/128", "::2", false),
            ("::1/128", "127.0.0.1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::/0", "2001:db8::1", true),
            ("::/0", "10.0.0.1", false),
        ];
        for (net, addr, want) in cases {
            assert_eq!(cidr(net).contains(ip(addr)), *want, "{net} contains {addr}");
        }
        let c = Config::default();
        assert!(c.may_relay(ip("127.0.0.1")));
        assert!(c.may_relay(ip("::1")));
        assert!(c.may_relay(ip("::ffff:127.0.0.2")));
        assert!(!c.may_relay(ip("192.0.2.1")));
    }

    #[test]
    fn is_local_domain() {
        let c = p("local_domains = example.org localhost").unwrap();
        for (d, want) in [
            ("example.org", true),
            ("EXAMPLE.Org", true),
            ("example.org.", true),
            ("Localhost.", true),
            ("sub.example.org", false),
            ("example.com", false),
            ("", false),
            (".", false),
        ] {
            assert_eq!(c.is_local_domain(d), want, "{d:?}");
        }
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("1", Some(1)),
            ("1024", Some(1024)),
            ("10k", Some(10 * 1024)),
            ("10K", Some(10 * 1024)),
            ("35M", Some(36_700_160)),
            ("1g", Some(1 << 30)),
            ("007", Some(7)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("17179869184G", None),
            ("99999999999999999999G", None),
            ("", None),
            ("K", None),
            ("10X", None),
            ("10KB", None),
            ("10 K", None),
            (" 10", None),
            ("-1", None),
            ("+1", None),
            ("1.5M", None),
            ("10T", None),
            ("１０", None), // fullwidth digits are not ASCII digits
        ];
        for (s, want) in cases {
            assert_eq!(parse_size(s), *want, "{s:?}");
        }
    }

    #[test]
    fn durations() {
        let d = Duration::from_secs;
        let cases: &[(&str, Option<Duration>)] = &[
            ("0", Some(d(0))),
            ("30", Some(d(30))),
            ("30s", Some(d(30))),
            ("5m", Some(d(300))),
            ("5M", Some(d(300))),
            ("2h", Some(d(7200))),
            ("1d", Some(d(86400))),
            ("1w", Some(d(604_800))),
            ("18446744073709551615", Some(d(u64::MAX))),
            ("18446744073709551615m", None),
            ("99999999999999999999", None),
            ("99999999999999999999w", None),
            ("", None),
            ("m", None),
            ("5x", None),
            ("5ms", None),
            ("5 m", None),
            ("-5", None),
            ("1.5h", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s), *want, "{s:?}");
        }
    }

    #[test]
    fn bools() {
        let cases: &[(&str, Option<bool>)] = &[
            ("yes", Some(true)),
            ("YES", Some(true)),
            ("true", Some(true)),
            ("on", Some(true)),
            ("1", Some(true)),
            ("no", Some(false)),
            ("False", Some(false)),
            ("off", Some(false)),
            ("0", Some(false)),
            ("", None),
            ("y", None),
            ("2", None),
            ("enabled", None),
            (" yes", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_bool(s), *want, "{s:?}");
        }
    }

    #[test]
    fn listen_forms() {
        let cases: &[(&str, &[&str])] = &[
            ("127.0.0.1:2525", &["127.0.0.1:2525"]),
            ("[::1]:2525", &["[::1]:2525"]),
            ("10.0.0.1", &["10.0.0.1:25"]),
            ("::1", &["[::1]:25"]),
            ("[::1]", &["[::1]:25"]),
            ("*:587", &["0.0.0.0:587", "[::]:587"]),
            ("*", &["0.0.0.0:25", "[::]:25"]),
            ("*:25 0.0.0.0:25", &["0.0.0.0:25", "[::]:25"]),
            ("127.0.0.1:0", &["127.0.0.1:0"]),
        ];
        for (v, want) in cases {
            let got = listen(v).unwrap();
            let want: Vec<SocketAddr> = want.iter().map(|s| sa(s)).collect();
            assert_eq!(got, want, "{v:?}");
        }
        for bad in [
            "host:25",
            "1.2.3.4:",
            "1.2.3.4:x",
            "*:-1",
            "*:+25",
            ":25",
            "[1.2.3.4]:25",
            "1.2.3.4:65536",
        ] {
            assert!(listen(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn domains() {
        let long_label = "a".repeat(64);
        let ok_label = "a".repeat(63);
        let too_long = vec!["abcdefghi"; 26].join("."); // 259 characters
        let good = [
            "localhost",
            "mail.example.org",
            "MAIL.Example.Org",
            "a-b.c",
            "1.2.3.4",
            ok_label.as_str(),
        ];
        for d in good {
            assert!(check_domain(d).is_ok(), "{d:?}");
        }
        let bad = [
            "",
            ".",
            "a..b",
            ".a",
            "a.",
            "-a",
            "a-",
            "a.-b",
            "a_b",
            "a b",
            "[1.2.3.4]",
            "bücher.de",
            long_label.as_str(),
            too_long.as_str(),
        ];
        for d in bad {
            assert!(check_domain(d).is_err(), "{d:?}");
        }
    }

    /// Each tests/configs/bad/NAME.conf must fail with a message starting with NAME.err.
    #[test]
    fn bad_config_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/bad");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("conf") {
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let want = std::fs::read_to_string(path.with_extension("err"))
                .unwrap_or_else(|e| panic!("{name}: no matching .err file: {e}"));
            let want = want.trim_end_matches(['\n', '\r']);
            assert!(!want.is_empty(), "{name}: empty .err file");
            match Config::parse(&text, Path::new(&name)) {
                Ok(_) => panic!("{name}: parsed without error"),
                Err(e) => {
                    let got = e.to_string();
                    assert!(got.starts_with(want), "{name}\n got: {got}\nwant: {want}");
                }
            }
            checked += 1;
        }
        assert!(checked >= 8, "only {checked} bad configs in {}", dir.display());
    }

    fn etc(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("etc").join(name)
    }

    #[test]
    fn dev_config() {
        let c = Config::load(&etc("tern.dev.conf")).unwrap();
        assert_eq!(c.listen, vec![sa("127.0.0.1:2525")]);
        assert_eq!(c.spool, PathBuf::from("./var/spool"));
        assert_eq!(c.hostname, "localhost");
        assert_eq!(c.local_domains, vec!["localhost"]);
        assert_eq!(c.relay_networks, vec![cidr("127.0.0.0/8"), cidr("::1/128")]);
    }

    /// The sample file must parse as is, document every key, and its commented-out
    /// values must be the real defaults (except those that depend on the host or
    /// default to "none", where the sample shows an example instead).
    #[test]
    fn sample_config() {
        let path = etc("tern.conf");
        let sample = std::fs::read_to_string(&path).unwrap();
        Config::load(&path).unwrap();

        // "#key = value" lines (no space after '#') are the settings; "# ..." is prose.
        let uncommented: String = sample
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = p(&uncommented).unwrap();
        let d = Config::default();
        let keys: Vec<&str> = uncommented
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, _)| k.trim())
            .collect();
        for key in [
            "hostname",
            "listen",
            "spool",
            "spool_sync",
            "local_domains",
            "local_users",
            "aliases",
            "relay_networks",
            "max_message_size",
            "max_recipients",
            "max_sessions",
            "max_sessions_per_ip",
            "mailbox",
            "retry_initial",
            "retry_max",
            "queue_lifetime",
            "delay_warning",
            "delivery_threads",
            "pipe_timeout",
            "double_bounce_to_postmaster",
            "queue_only",
            "dns_servers",
            "dns_timeout",
            "route",
            "relay_host",
            "relay_auth",
            "smtp_tls",
            "tls_ca_file",
            "inet_protocols",
            "mx_port",
            "smtp_connect_timeout",
            "smtp_helo_timeout",
            "smtp_command_timeout",
            "smtp_data_timeout",
            "smtp_data_done_timeout",
            "smtp_connection_cache_time",
            "max_connections_per_domain",
            "pid_file",
            "shutdown_grace",
            "user",
            "log_level",
            "syslog_facility",
            "max_errors",
            "max_received",
            "greeting_timeout",
            "command_timeout",
            "data_timeout",
            "stress_timeout",
            "expn",
            "vrfy",
            "submission",
            "smtps",
            "tls_cert",
            "tls_key",
            "auth_users",
            "sender_map",
            "auth_failure_delay",
            "harvest_threshold",
            "harvest_delay",
            "harvest_limit",
            "proxy_protocol",
            "proxy_from",
        ] {
            assert!(keys.contains(&key), "sample does not document {key}");
        }
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.spool, d.spool);
        assert_eq!(c.relay_networks, d.relay_networks);
        assert_eq!(c.max_message_size, d.max_message_size);
        assert_eq!(c.max_recipients, d.max_recipients);
        assert_eq!(c.max_sessions, d.max_sessions);
        assert_eq!(c.max_sessions_per_ip, d.max_sessions_per_ip);
        assert_eq!(c.max_errors, d.max_errors);
        assert_eq!(c.max_received, d.max_received);
        assert_eq!(c.greeting_timeout, d.greeting_timeout);
        assert_eq!(c.command_timeout, d.command_timeout);
        assert_eq!(c.data_timeout, d.data_timeout);
        assert_eq!(c.stress_timeout, d.stress_timeout);
        assert_eq!(c.expn, d.expn);
        assert_eq!(c.vrfy, d.vrfy);
        assert_eq!(c.auth_failure_delay, d.auth_failure_delay);
        assert_eq!(c.harvest_threshold, d.harvest_threshold);
        assert_eq!(c.harvest_delay, d.harvest_delay);
        assert_eq!(c.harvest_limit, d.harvest_limit);
        assert_eq!(c.proxy_protocol, d.proxy_protocol);
        assert_eq!(c.dns_timeout, d.dns_timeout);
        assert_eq!(c.smtp_tls, d.smtp_tls);
        assert_eq!(c.inet_protocols, d.inet_protocols);
        assert_eq!(c.mx_port, d.mx_port);
        assert_eq!(c.smtp_connect_timeout, d.smtp_connect_timeout);
        assert_eq!(c.smtp_helo_timeout, d.smtp_helo_timeout);
        assert_eq!(c.smtp_command_timeout, d.smtp_command_timeout);
        assert_eq!(c.smtp_data_timeout, d.smtp_data_timeout);
        assert_eq!(c.smtp_data_done_timeout, d.smtp_data_done_timeout);
        assert_eq!(c.smtp_connection_cache_time, d.smtp_connection_cache_time);
        assert_eq!(c.max_connections_per_domain, d.max_connections_per_domain);
    }

    #[test]
    fn routes_and_relay_host() {
        let c = p("route = Example.ORG [127.0.0.1]:2525\nroute = b.test mx.b.test tls=verify\nrelay_host = [smart.test]:465\nrelay_auth = u:p:w").unwrap();
        assert_eq!(
            c.next_hop("example.org"),
            Some(&NextHop {
                host: "127.0.0.1".into(),
                port: 2525,
                mx: false,
                tls: None,
                implicit_tls: false
            })
        );
        assert_eq!(
            c.next_hop("B.test."),
            Some(&NextHop {
                host: "mx.b.test".into(),
                port: 25,
                mx: true,
                tls: Some(TlsPolicy::Verify),
                implicit_tls: false
            })
        );
        assert_eq!(
            c.next_hop("other.test").map(|h| (h.port, h.implicit_tls)),
            Some((465, true))
        );
        assert!(p("relay_host = [x.test]:2465 smtps")
            .unwrap()
            .relay_host
            .is_some_and(|h| h.implicit_tls));
        assert_eq!(c.relay_auth, Some(("u".into(), "p:w".into())));
        assert!(p("").unwrap().next_hop("x.test").is_none());
        for bad in [
            "route = example.org",
            "route = example.org 127.0.0.1:25",
            "route = example.org [x.test]:0",
            "route = example.org [x.test]:25 tls=maybe",
            "relay_host = [x.test",
            "relay_auth = nopassword",
            "smtp_tls = perhaps",
            "inet_protocols = ipx",
            "dns_servers = localhost",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        let c = p("dns_servers = 127.0.0.1:5353, ::1").unwrap();
        assert_eq!(c.dns_servers, vec![sa("127.0.0.1:5353"), sa("[::1]:53")]);
    }

    #[test]
    fn spool_sync_values() {
        assert_eq!(p("").unwrap().spool_sync, SyncMode::Syncfs);
        assert_eq!(p("spool_sync = fsync").unwrap().spool_sync, SyncMode::Fsync);
        assert_eq!(p("spool_sync = SyncFS").unwrap().spool_sync, SyncMode::Syncfs);
        let e = p("spool_sync = fdatasync").unwrap_err().to_string();
        assert!(e.contains("use syncfs or fsync"), "{e}");
        assert!(p("spool_sync =").is_err());
    }

    #[test]
    fn relative_paths_resolve_against_the_start_directory() {
        let mut c = p("spool = ./var/spool\naliases = etc/aliases\nmailbox = ./var/mail/%u/\n").unwrap();
        c.resolve_relative(Path::new("/srv/tern"));
        assert_eq!(c.spool, PathBuf::from("/srv/tern/./var/spool"));
        assert_eq!(c.aliases, Some(PathBuf::from("/srv/tern/etc/aliases")));
        assert_eq!(c.mailbox, "/srv/tern/./var/mail/%u/");
        let mut c = p("mailbox = ~/Maildir/\n").unwrap();
        c.resolve_relative(Path::new("/srv"));
        assert_eq!(c.mailbox, "~/Maildir/");
    }

    #[test]
    fn daemon_user_and_log_keys() {
        let c = Config::parse(
            "user = _tern\nlog_level = WARN\nsyslog_facility = local3\n",
            Path::new("t"),
        )
        .expect("parse");
        assert_eq!(c.user, "_tern");
        assert_eq!(c.log_level, log::LevelFilter::Warn);
        assert_eq!(c.syslog_facility, 19);
        let d = Config::default();
        assert_eq!(
            (d.user.as_str(), d.log_level, d.syslog_facility),
            ("tern", log::LevelFilter::Info, 2)
        );
        for bad in [
            "user = a/b",
            "user = -x",
            "log_level = loud",
            "syslog_facility = local8",
            "syslog_facility = kern",
        ] {
            assert!(Config::parse(bad, Path::new("t")).is_err(), "{bad}");
        }
        assert_eq!(syslog_facility("daemon"), Ok(3));
        assert_eq!(syslog_facility("mail"), Ok(2));
    }
}
