//! tern.conf(5): the configuration file parser and the typed [`Config`].
//!
//! The format is deliberately small: `key = value` lines, `#` comments, blank lines.
//! Every error names the file and line so an administrator can go straight to it.
//!
//! The configuration depends on nothing above it (only `sys`, for the host
//! name): the value types its keys hold live in [`types`], and the modules
//! that use them import them from here.
//!
//! - `mod.rs`: [`Config`], grouped by concern, its defaults, and the parser loop;
//! - `keys.rs`: the key table (how each key is stored and what a SIGHUP does with it);
//! - `value.rs`: the parsers of single values;
//! - `types.rs`: the value types (networks, next hops, TLS policy, ...).
//!
//! Fields are named after their keys, without the prefix their group already
//! says: `smtp_helo_timeout` is `remote.helo_timeout`, `local_users` is
//! `local.users`; the key table maps each key to its field.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::smtp::address::domain_key;
use crate::sys;

pub mod keys;
mod types;
mod value;

#[cfg(test)]
mod tests;

pub use keys::Reload;
pub use types::{
    Cidr, Family, KeyKind, Lmtp, NextHop, Origin, Route, SignEntry, SpfReject, SyncMode, TlsOverride,
    TlsPolicy, TrustAd,
};
pub use value::{parse_bool, parse_duration, parse_size};

/// Where `ternd` looks for its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/tern/tern.conf";

/// The aliases file used without an `aliases` key, when it is present in the
/// configuration file's directory.
pub const DEFAULT_ALIASES: &str = "aliases";

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

/// The daemon's configuration, with every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Our name in the greeting, EHLO reply and Received: headers.
    pub hostname: String,
    /// `origin`: the domain bare user names get; see [`Config::origin`].
    pub origin: Origin,
    pub listen: Listeners,
    pub tls: ServerTls,
    pub auth: SmtpAuth,
    pub session: SessionLimits,
    pub spool: SpoolSettings,
    pub local: LocalDelivery,
    pub queue: QueueSettings,
    pub remote: RemoteDelivery,
    pub outbound: OutboundTls,
    pub tlsrpt: TlsReports,
    pub mailauth: MailAuth,
    pub daemon: DaemonSettings,
    /// Each key set in the file, with its line, in file order (for errors
    /// found after parsing, such as a `dkim_sign` key that does not load).
    lines: Vec<(&'static str, usize)>,
    pub milter: MilterSettings,
    pub policy: PolicySettings,
}

/// Where the daemon listens, and how many sessions it serves.
#[derive(Debug, Clone)]
pub struct Listeners {
    /// `listen`: mail exchange (RFC 5321).
    pub smtp: Vec<SocketAddr>,
    /// Message submission listeners (RFC 6409): AUTH required before MAIL.
    pub submission: Vec<SocketAddr>,
    /// Submission over implicit TLS (RFC 8314 section 3.3): TLS from the first byte.
    pub smtps: Vec<SocketAddr>,
    /// Services ("smtp", "submission", "smtps") whose listeners expect a
    /// PROXY protocol header (v1 or v2) before anything else.
    pub proxy_protocol: Vec<String>,
    /// The proxies allowed to send that header; connections from elsewhere are closed.
    pub proxy_from: Vec<Cidr>,
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    /// `refuse_mail`: services whose listeners accept no mail at all: they
    /// answer `521 5.3.2` at connection opening and close (RFC 7504 3).
    pub refuse_mail: Vec<String>,
}

/// The server's certificate (STARTTLS and smtps).
#[derive(Debug, Clone, Default)]
pub struct ServerTls {
    /// `tls_cert`: PEM certificate chain, leaf first; with `key`, enables STARTTLS.
    pub cert: Option<PathBuf>,
    /// `tls_key`: PEM private key for `cert`.
    pub key: Option<PathBuf>,
}

/// SMTP AUTH for clients.
#[derive(Debug, Clone)]
pub struct SmtpAuth {
    /// `auth_users`: `user:crypt-hash` lines; None = no AUTH.
    pub users: Option<PathBuf>,
    /// `user: address, @domain` lines: the senders each user may use. Users
    /// not listed may use user@ each local domain.
    pub sender_map: Option<PathBuf>,
    /// `auth_failure_delay`: pause before answering a failed AUTH (slows password guessing).
    pub failure_delay: Duration,
    /// `auth_failure_limit`: failed AUTH attempts from one address, or for one
    /// account, within `failure_window` before the address is refused AUTH
    /// and the account's checks are spaced out (server::auth_guard).
    pub failure_limit: u32,
    /// `auth_failure_window`: how long failures are remembered.
    pub failure_window: Duration,
}

/// What one SMTP session accepts, and how long it waits.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Clients that may send mail to non-local domains.
    pub relay_networks: Vec<Cidr>,
    /// Bytes; never 0.
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// `max_transactions`: MAIL commands one session may give (RFC 9422 MAILMAX).
    pub max_transactions: usize,
    /// `message_drop_headers`: header fields removed from every message on its
    /// way into the queue (Postfix's message_drop_headers), lower case.
    pub drop_headers: Vec<String>,
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
    /// Unknown recipients in one session before each further one is answered slowly.
    pub harvest_threshold: u32,
    /// Pause per unknown recipient past `harvest_threshold`; zero = none.
    pub harvest_delay: Duration,
    /// Unknown recipients in one session before it is closed (directory harvest).
    pub harvest_limit: u32,
    /// EXPN lists alias targets.
    pub expn: bool,
    /// VRFY says whether a local recipient exists (Postfix's default); off,
    /// it answers 252 for everyone.
    pub vrfy: bool,
    /// `junk_command_limit`: NOOP, RSET, VRFY, EXPN, HELP and repeated
    /// EHLO/HELO a session may send (since its last message) before each
    /// further one is answered late and counts as an error.
    pub junk_command_limit: u32,
    /// `junk_command_delay`: the pause before answering each junk command past the limit.
    pub junk_command_delay: Duration,
    /// `strict_rfc821_envelopes`: MAIL FROM and RCPT TO paths must be in
    /// angle brackets (RFC 5321 4.1.2); off, a bare address is taken too.
    pub strict_rfc821_envelopes: bool,
    /// Offer REQUIRETLS (RFC 8689) on TLS sessions and accept it on MAIL.
    pub requiretls: bool,
}

/// The queue's directory and how it commits.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// `spool`: the queue's root directory.
    pub dir: PathBuf,
    /// `spool_sync`: how the spool makes accepted mail durable.
    pub sync: SyncMode,
}

/// Who is local, and where their mail goes.
#[derive(Debug, Clone)]
pub struct LocalDelivery {
    /// `local_domains`: lowercased, without a trailing dot.
    pub domains: Vec<String>,
    /// `local_users`: file of user names; None = system accounts.
    pub users: Option<PathBuf>,
    /// aliases(5) file.
    pub aliases: Option<PathBuf>,
    /// Where local mail goes: `%u` the user, `~` the home; a trailing `/` means Maildir.
    pub mailbox: String,
    /// How long a pipe (`|command`) delivery may run.
    pub pipe_timeout: Duration,
    /// `mailbox_transport`: the LMTP server that takes users' mail instead of
    /// the `mailbox` (aliases are expanded first); None = tern writes it.
    pub mailbox_transport: Option<Lmtp>,
}

/// The queue runner: retries, expiry, notices.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// First retry delay after a temporary failure; doubles each attempt.
    pub retry_initial: Duration,
    /// The retry delay never grows beyond this.
    pub retry_max: Duration,
    /// `queue_lifetime`: after this long in the queue a recipient fails permanently.
    pub lifetime: Duration,
    /// When to tell the sender mail is delayed; None = never.
    pub delay_warning: Option<Duration>,
    /// Delivery threads in the queue runner.
    pub delivery_threads: usize,
    /// Send failures of bounces (null sender) to postmaster instead of dropping them.
    pub double_bounce_to_postmaster: bool,
    /// `queue_only`: accept and queue mail but do not deliver it (sendmail's
    /// queue-only delivery mode): for maintenance, or to inspect what arrives.
    pub only: bool,
}

/// Remote delivery: DNS, next hops and the SMTP client.
#[derive(Debug, Clone)]
pub struct RemoteDelivery {
    /// Name servers for delivery (address:port); empty = /etc/resolv.conf.
    pub dns_servers: Vec<SocketAddr>,
    /// How long one DNS query may take.
    pub dns_timeout: Duration,
    /// `route = DOMAIN HOP`: fixed next hops per recipient domain (SMTP or
    /// LMTP), first match wins.
    pub routes: Vec<(String, Route)>,
    /// The smarthost for every domain without a route; None = MX lookup.
    pub relay_host: Option<NextHop>,
    /// user and password for AUTH to the relay_host.
    pub relay_auth: Option<(String, String)>,
    /// `smtp_tls`: the outbound TLS policy unless a route says otherwise.
    pub tls: TlsPolicy,
    /// CA certificates (PEM) for `tls = verify`; None = the system's CA store.
    pub tls_ca_file: Option<PathBuf>,
    /// Address families used to reach next hops.
    pub inet_protocols: Family,
    /// The port MX hosts are contacted on. 25 in real life; ONLY FOR TESTING.
    pub mx_port: u16,
    /// RFC 5321 4.5.3.2 client timeouts (`smtp_*_timeout`): connect, greeting
    /// and EHLO/STARTTLS/AUTH, MAIL/RCPT/RSET, DATA and each data block, the
    /// reply to the final dot.
    pub connect_timeout: Duration,
    pub helo_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub data_done_timeout: Duration,
    /// `smtp_connection_cache_time`: keep a connection open this long for the
    /// next message to the same host; None = close after each.
    pub connection_cache_time: Option<Duration>,
    /// Deliveries in progress at once to one destination (route or relay
    /// host, else recipient domain).
    pub max_connections_per_domain: usize,
}

/// Outbound TLS policy beyond `smtp_tls` (issue 18): DANE, MTA-STS,
/// per-domain overrides, REQUIRETLS's header.
#[derive(Debug, Clone)]
pub struct OutboundTls {
    /// `smtp_dane`: use DANE (RFC 7672) when validated DNS is available.
    pub dane: bool,
    /// `dnssec_trust_ad`: whose AD bit is believed.
    pub dnssec_trust_ad: TrustAd,
    /// `mta_sts`: use MTA-STS (RFC 8461).
    pub mta_sts: bool,
    /// `tls_policy = DOMAIN LEVEL`: overrides, first match wins; a domain
    /// with a leading dot matches its subdomains.
    pub policies: Vec<(String, TlsOverride)>,
    /// `tls_required_header`: honour `TLS-Required: No` (RFC 8689 3).
    pub tls_required_header: bool,
    /// `testing__mta_sts_port`: the port MTA-STS policies are fetched
    /// from; 443 in real life. ONLY FOR TESTING.
    pub mta_sts_port: u16,
}

impl OutboundTls {
    /// The `tls_policy` override for mail to `domain`, if any: an exact
    /// match, or a `.parent` entry for a subdomain; first listed wins.
    pub fn policy_for(&self, domain: &str) -> Option<TlsOverride> {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.policies
            .iter()
            .find(|(p, _)| match p.strip_prefix('.') {
                Some(parent) => d.ends_with(p.as_str()) && d.len() > parent.len() + 1,
                None => *p == d,
            })
            .map(|(_, o)| *o)
    }
}

/// SMTP TLS reporting (RFC 8460): off unless `tlsrpt_from` is set.
#[derive(Debug, Clone, Default)]
pub struct TlsReports {
    /// `tlsrpt_from`: the reports' sender and contact address.
    pub from: Option<String>,
    /// `tlsrpt_organization`: the reports' organization-name; None = hostname.
    pub organization: Option<String>,
    /// `tlsrpt_submitter`: TLS-Report-Submitter; None = hostname.
    pub submitter: Option<String>,
}

/// Mail authentication (issue 20): DKIM signing of the mail tern sends, and
/// SPF, DKIM and DMARC checks of the mail it receives on `listen`.
#[derive(Debug, Clone)]
pub struct MailAuth {
    /// `dkim_sign`: the keys that sign, in file order.
    pub dkim_sign: Vec<SignEntry>,
    /// `auth_check`: check mail from untrusted clients on `listen` and add
    /// Authentication-Results.
    pub check: bool,
    /// `auth_timeout`: the most the checks may take, once for SPF and once
    /// for DKIM and DMARC.
    pub timeout: Duration,
    /// `dmarc_reject`: refuse a DMARC failure under `p=reject` (550 5.7.1).
    pub dmarc_reject: bool,
    /// `spf_reject`: refuse an SPF `fail` (550 5.7.23).
    pub spf_reject: SpfReject,
}

/// The daemon process itself.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
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
    /// `log_file`: write the log to this file instead of syslog (systems
    /// without one); None = syslog.
    pub log_file: Option<PathBuf>,
    /// `metrics_listen`: where Prometheus metrics are served over HTTP; None = nowhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// Milters (the Sendmail milter protocol): which, and the defaults each
/// starts from. A session takes the lists of the configuration it started with.
#[derive(Debug, Clone)]
pub struct MilterSettings {
    /// `milters` as written: the milters of SMTP sessions.
    pub smtp_list: String,
    /// `non_smtp_milters` as written: the milters of mail from sendmail (at pickup).
    pub non_smtp_list: String,
    /// `milter_default_action`: a milter down, silent or confused means this.
    pub default_action: crate::milter::DefaultAction,
    /// `milter_protocol`: the version offered, and no_header_reply.
    pub protocol: crate::milter::ProtocolSetting,
    /// `milter_connect_timeout`, `milter_command_timeout`, `milter_content_timeout`.
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub content_timeout: Duration,
    /// `milter_macro_daemon_name` (`{daemon_name}`); None = the hostname.
    pub macro_daemon_name: Option<String>,
    /// `milter_macro_v` (`v`); None = `tern VERSION`.
    pub macro_v: Option<String>,
    /// The lists above as specs, each with the defaults above and its own
    /// settings; built when the file has been read ([`Config::parse`]).
    pub smtp: Vec<crate::milter::MilterSpec>,
    pub non_smtp: Vec<crate::milter::MilterSpec>,
}

/// Policy services (Postfix's SMTP access policy delegation).
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// `policy_services` as written.
    pub list: String,
    /// `policy_service_timeout`: connecting, writing, each answer.
    pub timeout: Duration,
    /// `policy_service_default_action`: the answer of a service that failed.
    pub default_action: String,
    /// `policy_service_try_limit`: attempts per request.
    pub try_limit: u32,
    /// `policy_service_retry_delay`: the pause between attempts.
    pub retry_delay: Duration,
    /// `policy_service_max_idle`, `policy_service_max_ttl`: when a kept
    /// connection is closed before the next request.
    pub max_idle: Duration,
    pub max_ttl: Duration,
    /// `policy_service_request_limit`: requests per connection, 0 = no limit.
    pub request_limit: u32,
    /// The list as specs (built as the milters are).
    pub services: Vec<crate::policy_service::PolicySpec>,
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

impl Default for Config {
    fn default() -> Config {
        // A host name that is not a valid domain (empty, underscores) would put garbage
        // into every greeting, so fall back to "localhost" for those too.
        let hostname = sys::hostname()
            .ok()
            .filter(|h| value::check_domain(h).is_ok())
            .unwrap_or_else(|| "localhost".to_string());
        let local_domains = value::default_local_domains(&hostname);
        Config {
            path: PathBuf::from(DEFAULT_PATH),
            hostname,
            origin: Origin::Default,
            listen: Listeners {
                smtp: vec![
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 25),
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 25),
                ],
                submission: Vec::new(),
                smtps: Vec::new(),
                proxy_protocol: Vec::new(),
                proxy_from: Vec::new(),
                max_sessions: 100,
                max_sessions_per_ip: 20,
                refuse_mail: Vec::new(),
            },
            tls: ServerTls::default(),
            auth: SmtpAuth {
                users: None,
                sender_map: None,
                failure_delay: Duration::from_secs(2),
                failure_limit: 10,
                failure_window: Duration::from_secs(600),
            },
            session: SessionLimits {
                relay_networks: vec![
                    Cidr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
                    Cidr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
                ],
                max_message_size: 35 * 1024 * 1024,
                max_recipients: 100,
                // Exim's smtp_accept_max_per_connection.
                max_transactions: 1000,
                // RFC 5321 4.4 (Return-Path is added at final delivery only),
                // RFC 5322 3.6.3 (Bcc), RFC 2076 (Content-Length is not for transport).
                drop_headers: ["bcc", "content-length", "resent-bcc", "return-path"]
                    .iter()
                    .map(|h| (*h).to_owned())
                    .collect(),
                max_errors: 10,
                max_received: 50,
                greeting_timeout: Duration::from_secs(300),
                command_timeout: Duration::from_secs(300),
                data_timeout: Duration::from_secs(300),
                stress_timeout: Duration::from_secs(10),
                harvest_threshold: 5,
                harvest_delay: Duration::from_secs(1),
                harvest_limit: 20,
                expn: false,
                vrfy: false,
                strict_rfc821_envelopes: true,
                junk_command_limit: 100,
                junk_command_delay: Duration::from_secs(1),
                requiretls: true,
            },
            spool: SpoolSettings {
                dir: PathBuf::from("/var/spool/tern"),
                sync: SyncMode::default(),
            },
            local: LocalDelivery {
                domains: local_domains,
                users: None,
                aliases: None,
                mailbox: "/var/mail/%u".to_owned(),
                pipe_timeout: Duration::from_secs(600),
                mailbox_transport: None,
            },
            queue: QueueSettings {
                retry_initial: Duration::from_secs(300),
                retry_max: Duration::from_secs(4 * 3600),
                lifetime: Duration::from_secs(5 * 86400),
                delay_warning: Some(Duration::from_secs(4 * 3600)),
                delivery_threads: 8,
                double_bounce_to_postmaster: false,
                only: false,
            },
            remote: RemoteDelivery {
                dns_servers: Vec::new(),
                dns_timeout: Duration::from_secs(10),
                routes: Vec::new(),
                relay_host: None,
                relay_auth: None,
                tls: TlsPolicy::May,
                tls_ca_file: None,
                inet_protocols: Family::Both,
                mx_port: 25,
                connect_timeout: Duration::from_secs(30),
                helo_timeout: Duration::from_secs(300),
                command_timeout: Duration::from_secs(300),
                data_timeout: Duration::from_secs(180),
                data_done_timeout: Duration::from_secs(600),
                connection_cache_time: Some(Duration::from_secs(2)),
                max_connections_per_domain: 20,
            },
            outbound: OutboundTls {
                dane: true,
                dnssec_trust_ad: TrustAd::Auto,
                mta_sts: true,
                policies: Vec::new(),
                tls_required_header: true,
                mta_sts_port: 443,
            },
            tlsrpt: TlsReports::default(),
            mailauth: MailAuth {
                dkim_sign: Vec::new(),
                check: true,
                timeout: Duration::from_secs(10),
                dmarc_reject: false,
                spf_reject: SpfReject::None,
            },
            daemon: DaemonSettings {
                pid_file: PathBuf::from("/var/run/ternd.pid"),
                shutdown_grace: Duration::from_secs(30),
                user: "tern".to_owned(),
                log_level: log::LevelFilter::Info,
                syslog_facility: 2,
                log_file: None,
                metrics_listen: None,
            },
            lines: Vec::new(),
            milter: MilterSettings {
                smtp_list: String::new(),
                non_smtp_list: String::new(),
                default_action: crate::milter::DefaultAction::Tempfail,
                protocol: crate::milter::ProtocolSetting::default(),
                connect_timeout: Duration::from_secs(30),
                command_timeout: Duration::from_secs(30),
                content_timeout: Duration::from_secs(300),
                macro_daemon_name: None,
                macro_v: None,
                smtp: Vec::new(),
                non_smtp: Vec::new(),
            },
            policy: PolicySettings {
                list: String::new(),
                timeout: Duration::from_secs(100),
                default_action: crate::policy_service::DEFAULT_ACTION.to_owned(),
                try_limit: 2,
                retry_delay: Duration::from_secs(1),
                max_idle: Duration::from_secs(300),
                max_ttl: Duration::from_secs(1000),
                request_limit: 0,
                services: Vec::new(),
            },
        }
    }
}

impl Config {
    /// Read and parse `path`. Without an `aliases` key, the aliases file
    /// beside it (`/etc/tern/aliases`, where `make install` puts it) is used
    /// when there is one.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            what: format!("cannot read: {e}"),
        })?;
        let mut c = Config::parse(&text, path)?;
        if c.local.aliases.is_none() {
            let beside = path.parent().unwrap_or(Path::new("")).join(DEFAULT_ALIASES);
            if beside.is_file() {
                c.local.aliases = Some(beside);
            }
        }
        Ok(c)
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
            let line = value::strip_comment(raw).trim();
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
            let Some(spec) = keys::find(key) else {
                return Err(err(n, format!("unknown key {key:?}")));
            };
            if let Some(first) = seen.get(key) {
                if spec.times == keys::Times::Once {
                    return Err(err(
                        n,
                        format!("repeated key {key:?} (first set on line {first})"),
                    ));
                }
            } else {
                seen.insert(key.to_string(), n);
            }
            (spec.set)(&mut c, value).map_err(|m| err(n, format!("{key}: {m}")))?;
            c.lines.push((spec.name, n));
        }

        // A certificate without its key (or the reverse) is a mistake, not "no TLS".
        if c.tls.cert.is_some() != c.tls.key.is_some() {
            let (set, missing) = if c.tls.cert.is_some() {
                ("tls_cert", "tls_key")
            } else {
                ("tls_key", "tls_cert")
            };
            let line = seen.get(set).copied().unwrap_or(0);
            return Err(err(line, format!("{set} is set but {missing} is not")));
        }
        // A PROXY listener that trusts no proxy would refuse everyone.
        if !c.listen.proxy_protocol.is_empty() && c.listen.proxy_from.is_empty() {
            let line = seen.get("proxy_protocol").copied().unwrap_or(0);
            return Err(err(line, "proxy_protocol: needs proxy_from".to_owned()));
        }
        // Submission takes mail only after AUTH, and AUTH only inside TLS:
        // without both it could never accept anything.
        for (key, set) in [
            ("submission", !c.listen.submission.is_empty()),
            ("smtps", !c.listen.smtps.is_empty()),
        ] {
            let line = seen.get(key).copied().unwrap_or(0);
            if set && c.tls.cert.is_none() {
                return Err(err(line, format!("{key}: needs tls_cert and tls_key")));
            }
            if set && c.auth.users.is_none() {
                return Err(err(line, format!("{key}: needs auth_users")));
            }
        }
        // The default local domains follow the host name, which the file may have changed.
        if !seen.contains_key("local_domains") {
            c.local.domains = value::default_local_domains(&c.hostname);
        }
        // Each milter and policy service starts from the defaults, wherever in
        // the file they were set.
        if let Err((key, what)) = c.build_filters() {
            let line = seen.get(key).copied().unwrap_or(0);
            return Err(err(line, format!("{key}: {what}")));
        }
        Ok(c)
    }

    /// Build `milter.smtp`, `milter.non_smtp` and `policy.services` from their
    /// lists and the default keys; on error, the list key and why.
    pub fn build_filters(&mut self) -> Result<(), (&'static str, String)> {
        use crate::milter::{MilterSpec, Timeouts};
        use crate::policy_service::PolicySpec;
        let none = crate::endpoint::Endpoint::Unix(PathBuf::new());
        let mut m = MilterSpec::new(none.clone());
        m.timeouts = Timeouts {
            connect: self.milter.connect_timeout,
            command: self.milter.command_timeout,
            content: self.milter.content_timeout,
        };
        m.default_action = self.milter.default_action;
        m.protocol = self.milter.protocol;
        // A replacement body may be as large as a message may be.
        m.max_body = usize::try_from(self.session.max_message_size).unwrap_or(usize::MAX);
        self.milter.smtp = MilterSpec::parse_list(&self.milter.smtp_list, &m, &parse_duration)
            .map_err(|e| ("milters", e))?;
        self.milter.non_smtp = MilterSpec::parse_list(&self.milter.non_smtp_list, &m, &parse_duration)
            .map_err(|e| ("non_smtp_milters", e))?;
        let mut p = PolicySpec::new(none);
        p.timeout = self.policy.timeout;
        p.default_action.clone_from(&self.policy.default_action);
        p.try_limit = self.policy.try_limit;
        p.retry_delay = self.policy.retry_delay;
        p.max_idle = self.policy.max_idle;
        p.max_ttl = self.policy.max_ttl;
        p.request_limit = self.policy.request_limit;
        self.policy.services = PolicySpec::parse_list(&self.policy.list, &p, &parse_duration)
            .map_err(|e| ("policy_services", e))?;
        Ok(())
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
        abs(&mut self.spool.dir);
        abs(&mut self.daemon.pid_file);
        for p in [
            &mut self.local.users,
            &mut self.local.aliases,
            &mut self.tls.cert,
            &mut self.tls.key,
            &mut self.auth.users,
            &mut self.auth.sender_map,
            &mut self.remote.tls_ca_file,
            &mut self.daemon.log_file,
        ]
        .into_iter()
        .flatten()
        {
            abs(p);
        }
        for e in &mut self.mailauth.dkim_sign {
            abs(&mut e.key_file);
        }
        let mailbox = &mut self.local.mailbox;
        if !mailbox.starts_with('/') && !mailbox.starts_with('~') {
            *mailbox = base.join(&*mailbox).display().to_string();
        }
    }
}

impl Config {
    /// The line of the `nth` (from 0) occurrence of `key` in the file; 0
    /// when it was not set there.
    pub fn line_of(&self, key: &str, nth: usize) -> usize {
        self.lines
            .iter()
            .filter(|(k, _)| *k == key)
            .nth(nth)
            .map_or(0, |(_, n)| *n)
    }

    /// `ConfigError` for a problem found after parsing with the `nth` value
    /// of `key` (`FILE:LINE: KEY: what`).
    pub fn error_at(&self, key: &str, nth: usize, what: impl fmt::Display) -> ConfigError {
        ConfigError {
            file: self.path.display().to_string(),
            line: self.line_of(key, nth),
            what: format!("{key}: {what}"),
        }
    }
}

/// Debian's name of the mail domain (mailname(5)), which its MTAs use for
/// bare user names when it is present.
pub const MAILNAME: &str = "/etc/mailname";

impl Config {
    /// The domain a bare user name gets (`sendmail carol`, `To: carol` with
    /// `-t`, `RCPT TO:<carol>` under `sendmail -bs`), Postfix's `myorigin`:
    /// the `origin` domain, or the first line of the file it names; unset,
    /// that of /etc/mailname when present, as on Debian; else `hostname`
    /// (also when the file holds no valid domain).
    pub fn origin(&self) -> String {
        let file = match &self.origin {
            Origin::Domain(d) => return d.clone(),
            Origin::File(p) => p.as_path(),
            Origin::Default => Path::new(MAILNAME),
        };
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.trim().to_ascii_lowercase()))
            .filter(|d| value::check_domain(d).is_ok())
            .unwrap_or_else(|| self.hostname.to_ascii_lowercase())
    }
}

impl LocalDelivery {
    /// Whether mail for `domain` is delivered here (case-insensitive,
    /// trailing dot ignored, a UTF-8 name the same as its `xn--` form).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        // `domains` holds A-labels, lowercased.
        domain_key(domain).is_some_and(|d| self.domains.contains(&d))
    }
}

impl SessionLimits {
    /// Whether a client at `ip` may send mail to non-local domains.
    pub fn may_relay(&self, ip: IpAddr) -> bool {
        self.relay_networks.iter().any(|n| n.contains(ip))
    }
}

impl RemoteDelivery {
    /// The route of a recipient domain, if it has one.
    fn route(&self, domain: &str) -> Option<&Route> {
        // Route domains are kept as A-labels, lowercased.
        let d = domain_key(domain);
        self.routes
            .iter()
            .find(|(r, _)| d.as_deref() == Some(r.as_str()))
            .map(|(_, h)| h)
    }

    /// The configured SMTP next hop for a recipient domain: its route, else
    /// the relay_host, else None (MX lookup). None too for a domain routed to
    /// LMTP, which SMTP never sees (see [`RemoteDelivery::lmtp_route`]).
    pub fn next_hop(&self, domain: &str) -> Option<&NextHop> {
        match self.route(domain) {
            Some(Route::Smtp(h)) => Some(h),
            Some(Route::Lmtp(_)) => None,
            None => self.relay_host.as_ref(),
        }
    }

    /// The LMTP server a route sends the domain's mail to, if it does.
    pub fn lmtp_route(&self, domain: &str) -> Option<&Lmtp> {
        match self.route(domain) {
            Some(Route::Lmtp(l)) => Some(l),
            _ => None,
        }
    }
}
