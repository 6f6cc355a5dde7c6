//! DNS for remote delivery: MX and address lookups behind a small blocking
//! trait, so the rest of tern (and its tests) never sees an async type.
//!
//! hickory-resolver has no synchronous resolver any more (hickory-dns PR
//! #2515, in 0.25), so tern keeps one current-thread tokio runtime
//! ([`runtime`]) for it and `block_on`s each lookup; `mailauth::dns` shares
//! the runtime and the settings ([`resolver_settings`]), so that tern has
//! one resolver stack (hickory 0.26) configured in one place.
//!
//! The DNSSEC-aware lookups (`*_secured`, TLSA, TXT, the probe) follow
//! Postfix's model: tern does not validate, it believes the AD bit of
//! resolvers it is told to trust (see [`Hickory::trust_ad`]).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_resolver::proto::rr::rdata::opt::EdnsOption;
use hickory_resolver::proto::rr::rdata::{MX, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::TokioResolver;
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::Family;

/// What the MX lookup of a domain said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mx {
    /// MX records: (preference, host), in DNS order (unsorted).
    Hosts(Vec<(u16, String)>),
    /// The domain exists but has no MX: use its own address (RFC 5321 5.1).
    Implicit,
    /// `MX 0 .`: the domain accepts no mail (RFC 7505).
    Null,
}

/// Why a lookup failed. NXDOMAIN is permanent; everything else (SERVFAIL,
/// timeouts, no reachable server) is temporary and never bounces mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    NxDomain,
    Temporary(String),
}

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsError::NxDomain => f.write_str("domain not found (NXDOMAIN)"),
            DnsError::Temporary(why) => write!(f, "temporary DNS failure: {why}"),
        }
    }
}

/// The lookups remote delivery needs.
pub trait Resolver: Send + Sync {
    fn mx(&self, domain: &str) -> Result<Mx, DnsError>;
    /// A host's addresses, IPv6 first when both are wanted. An empty list
    /// means the name exists without addresses of the wanted families.
    fn addrs(&self, host: &str, family: Family) -> Result<Vec<IpAddr>, DnsError>;

    // The lookups below carry the DNSSEC status of each answer, for DANE
    // (RFC 7672), REQUIRETLS (RFC 8689) and MTA-STS (RFC 8461). Their
    // defaults fit a resolver that knows nothing of DNSSEC: every answer is
    // Indeterminate, so none of them ever yields a DANE policy.

    /// [`Resolver::mx`] with the answer's DNSSEC status. A bogus answer is
    /// `Err(DnsError::Temporary)`: the MX set is unknown, so delivery waits.
    fn mx_secured(&self, domain: &str) -> Result<Secured<Mx>, DnsError> {
        self.mx(domain).map(Secured::indeterminate)
    }

    /// [`Resolver::addrs`] with the DNSSEC status (Secure only when every
    /// family asked was) and the name CNAMEs led to. Bogus is an error, as
    /// for [`Resolver::mx_secured`].
    fn addrs_secured(&self, host: &str, family: Family) -> Result<Secured<Vec<IpAddr>>, DnsError> {
        self.addrs(host, family).map(Secured::indeterminate)
    }

    /// The TLSA records at `_PORT._tcp.HOST` (RFC 6698 3; RFC 7672 2.2.3),
    /// following CNAMEs (RFC 7672 2.2.2: Secure only when every link is).
    /// An empty list is "no TLSA" (NXDOMAIN or NODATA); a bogus answer is
    /// `Ok` with [`Security::Bogus`] and no records, so that the caller can
    /// tell it from a plain failure (RFC 7672 2.2: defer either way; RFC
    /// 8460 4.3.2 reports it as `dnssec-invalid`).
    fn tlsa(&self, _host: &str, _port: u16) -> Result<Secured<Vec<TlsaRecord>>, DnsError> {
        Ok(Secured::indeterminate(Vec::new()))
    }

    /// The TXT records at `name`, each one's strings joined (RFC 7208 3.3
    /// style, as RFC 8461 3.1 and RFC 8460 3 expect). Empty when there are
    /// none; bogus as for [`Resolver::tlsa`].
    fn txt(&self, _name: &str) -> Result<Secured<Vec<String>>, DnsError> {
        Ok(Secured::indeterminate(Vec::new()))
    }

    /// Whether the resolvers validate: the status of the root's NS RRset
    /// (Postfix's `dnssec_probe = ns:.`). Anything but Secure means the
    /// DNSSEC statuses above cannot be relied on.
    fn dnssec_probe(&self) -> Security {
        Security::Indeterminate
    }
}

/// The DNSSEC status of an answer (RFC 4033 5, RFC 4035 4.3), as the
/// validating resolver tern trusts reported it (see [`Hickory::trust_ad`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Validated from the trust anchor down: the resolver set AD.
    Secure,
    /// Answered without AD by a resolver that validates: provably unsigned
    /// (or signed with algorithms it does not know, RFC 6840 5.2).
    Insecure,
    /// Validation failed: SERVFAIL with a DNSSEC extended error (RFC 8914
    /// 4.6-4.13), or a CNAME chain with such a link.
    Bogus,
    /// Nobody tern trusts for DNSSEC was asked.
    Indeterminate,
}

impl Security {
    /// The status of data that depended on both `self` and `other`: the
    /// weaker one (Bogus < Indeterminate < Insecure < Secure).
    pub fn and(self, other: Security) -> Security {
        fn rank(s: Security) -> u8 {
            match s {
                Security::Bogus => 0,
                Security::Indeterminate => 1,
                Security::Insecure => 2,
                Security::Secure => 3,
            }
        }
        if rank(other) < rank(self) {
            other
        } else {
            self
        }
    }

    /// "secure", "insecure", "bogus", "indeterminate" (for the logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Secure => "secure",
            Security::Insecure => "insecure",
            Security::Bogus => "bogus",
            Security::Indeterminate => "indeterminate",
        }
    }
}

/// An answer with its DNSSEC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secured<T> {
    pub value: T,
    pub security: Security,
    /// The name the query led to through CNAMEs, when it was an alias
    /// (RFC 7672 2.2.2 looks TLSA up there first).
    pub canonical: Option<String>,
}

impl<T> Secured<T> {
    /// An answer from a resolver that says nothing about DNSSEC.
    pub fn indeterminate(value: T) -> Secured<T> {
        Secured {
            value,
            security: Security::Indeterminate,
            canonical: None,
        }
    }
}

/// One TLSA record as published (RFC 6698 2.1). Whether it is usable for
/// SMTP is decided by `tlspolicy::dane`, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsaRecord {
    /// Certificate usage: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0 the whole certificate, 1 its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    pub data: Vec<u8>,
}

/// The one tokio runtime tern keeps: current-thread, private to the DNS
/// code (delivery's [`Hickory`] and the SPF/DKIM/DMARC resolver of
/// `mailauth::dns`). Callers `block_on` their lookups from any thread: a
/// current-thread runtime lets one of them drive the I/O while the others
/// poll their own futures and wait for their turn, which suits the handful
/// of queries a delivery or a message needs.
pub fn runtime() -> std::io::Result<Arc<tokio::runtime::Runtime>> {
    static RT: OnceLock<Arc<tokio::runtime::Runtime>> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(Arc::clone(rt));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Two first callers at once: the loser's runtime is dropped unused.
    Ok(Arc::clone(RT.get_or_init(|| Arc::new(rt))))
}

/// The resolver settings every lookup of tern's uses: `servers`
/// (`dns_servers`, UDP and TCP each) or /etc/resolv.conf when empty; one
/// attempt per server within `timeout` (`dns_timeout`); names taken as
/// fully qualified (RFC 5321 5.1: an MX host is never searched under the
/// local domain); EDNS0, with TCP when an answer is truncated (DKIM keys
/// and SPF records are often longer than 512 octets).
pub fn resolver_settings(
    servers: &[SocketAddr],
    timeout: Duration,
) -> std::io::Result<(ResolverConfig, ResolverOpts)> {
    let (config, mut opts) = if servers.is_empty() {
        hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| std::io::Error::other(format!("resolv.conf: {e}")))?
    } else {
        let mut c = ResolverConfig::default();
        for s in servers {
            let mut ns = NameServerConfig::udp_and_tcp(s.ip());
            for conn in &mut ns.connections {
                conn.port = s.port();
            }
            c.add_name_server(ns);
        }
        (c, ResolverOpts::default())
    };
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.ndots = 0;
    opts.edns0 = true;
    opts.try_tcp_on_error = true;
    Ok((config, opts))
}

/// The socket addresses of a resolver configuration's name servers, in
/// order, each once.
fn server_addrs(config: &ResolverConfig) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for ns in config.name_servers() {
        for conn in &ns.connections {
            let a = SocketAddr::new(ns.ip, conn.port);
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// hickory-resolver on the shared runtime.
pub struct Hickory {
    rt: Arc<tokio::runtime::Runtime>,
    resolver: TokioResolver,
    /// The resolvers in use, for the DNSSEC-aware queries.
    servers: Vec<SocketAddr>,
    timeout: Duration,
    /// Whether their AD bit is believed ([`Hickory::trust_ad`]).
    trust_ad: bool,
    /// The last [`Resolver::dnssec_probe`] found them validating. Until
    /// then, and whenever it does not, lookups go the plain way (hickory's
    /// resolver, /etc/hosts included) and every status is Indeterminate:
    /// a resolver that does not validate gives nothing to believe.
    validating: AtomicBool,
}

impl Hickory {
    /// Use `servers` when given (UDP and TCP each), else /etc/resolv.conf.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> std::io::Result<Hickory> {
        let rt = runtime()?;
        let (config, opts) = resolver_settings(servers, timeout)?;
        let ad_servers = server_addrs(&config);
        let resolver = {
            // hickory may spawn on the runtime while it builds.
            let _guard = rt.enter();
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(opts)
                .build()
                .map_err(|e| std::io::Error::other(format!("DNS resolver: {e}")))?
        };
        Ok(Hickory {
            rt,
            resolver,
            servers: ad_servers,
            timeout,
            trust_ad: false,
            validating: AtomicBool::new(false),
        })
    }

    /// Believe the AD bit of these resolvers: they validate DNSSEC and the
    /// path to them cannot be tampered with (normally a local unbound).
    /// This is Postfix's model, chosen over validating inside tern (see
    /// DECISIONS.md, 2026-12-04): without it every status is Indeterminate.
    pub fn trust_ad(mut self, yes: bool) -> Hickory {
        self.trust_ad = yes;
        self
    }

    /// The resolvers asked, in order (for logs and for the "only loopback
    /// resolvers are trusted by default" rule).
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Whether the AD bit of the resolvers is believed.
    pub fn trusts_ad(&self) -> bool {
        self.trust_ad
    }

    /// The DNSSEC-aware lookups apply: the resolvers are trusted and the
    /// last probe found them validating.
    fn ad_path(&self) -> bool {
        self.trust_ad && self.validating.load(Ordering::Relaxed)
    }

    /// The records of one lookup, or how it failed.
    fn lookup(&self, name: &str, rtype: RecordType) -> Result<Vec<RData>, Failure> {
        match self.rt.block_on(self.resolver.lookup(fqdn(name), rtype)) {
            Ok(l) => Ok(l.answers().iter().map(|r| r.data.clone()).collect()),
            Err(e) => Err(classify(&e)),
        }
    }
}

/// Fully qualified, so the search list never applies.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// NXDOMAIN, "exists but no records of this type", or a temporary failure.
enum Failure {
    NxDomain,
    NoRecords,
    Temporary(String),
}

fn classify(e: &NetError) -> Failure {
    if e.is_nx_domain() {
        Failure::NxDomain
    } else if e.is_no_records_found() {
        Failure::NoRecords
    } else {
        Failure::Temporary(e.to_string())
    }
}

/// An MX record's exchange without the trailing dot.
fn exchange(mx: &MX) -> String {
    let host = mx.exchange.to_ascii();
    host.strip_suffix('.').unwrap_or(&host).to_owned()
}

fn txt_text(t: &TXT) -> String {
    let bytes: Vec<u8> = t.txt_data.iter().flat_map(|p| p.iter().copied()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Resolver for Hickory {
    fn mx(&self, domain: &str) -> Result<Mx, DnsError> {
        match self.lookup(domain, RecordType::MX) {
            Ok(data) => {
                let hosts = data
                    .iter()
                    .filter_map(|d| match d {
                        RData::MX(mx) => Some((mx.preference, exchange(mx))),
                        _ => None,
                    })
                    .collect();
                Ok(mx_from(hosts))
            }
            Err(Failure::NxDomain) => Err(DnsError::NxDomain),
            Err(Failure::NoRecords) => Ok(Mx::Implicit),
            Err(Failure::Temporary(why)) => Err(DnsError::Temporary(why)),
        }
    }

    fn addrs(&self, host: &str, family: Family) -> Result<Vec<IpAddr>, DnsError> {
        let mut out = Vec::new();
        let mut nx = 0;
        let mut temp = None;
        let mut types = Vec::new();
        if family != Family::Ipv4 {
            types.push(RecordType::AAAA);
        }
        if family != Family::Ipv6 {
            types.push(RecordType::A);
        }
        for t in types {
            match self.lookup(host, t) {
                Ok(data) => out.extend(data.iter().filter_map(|d| match d {
                    RData::A(v4) => Some(IpAddr::V4(v4.0)),
                    RData::AAAA(v6) => Some(IpAddr::V6(v6.0)),
                    _ => None,
                })),
                Err(Failure::NxDomain) => nx += 1,
                Err(Failure::NoRecords) => {}
                Err(Failure::Temporary(why)) => temp = Some(why),
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        if let Some(why) = temp {
            return Err(DnsError::Temporary(why));
        }
        if nx > 0 {
            return Err(DnsError::NxDomain);
        }
        Ok(out)
    }

    fn mx_secured(&self, domain: &str) -> Result<Secured<Mx>, DnsError> {
        if !self.ad_path() {
            return self.mx(domain).map(Secured::indeterminate);
        }
        let a = self.ask_ad(domain, RecordType::MX)?;
        let security = a.security()?;
        if a.rcode == ResponseCode::NXDomain {
            return Err(DnsError::NxDomain);
        }
        let hosts = a
            .records()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, exchange(mx))),
                _ => None,
            })
            .collect();
        Ok(Secured {
            value: mx_from(hosts),
            security,
            canonical: a.canonical.clone(),
        })
    }

    fn addrs_secured(&self, host: &str, family: Family) -> Result<Secured<Vec<IpAddr>>, DnsError> {
        if !self.ad_path() {
            return self.addrs(host, family).map(Secured::indeterminate);
        }
        let mut types = Vec::new();
        if family != Family::Ipv4 {
            types.push(RecordType::AAAA);
        }
        if family != Family::Ipv6 {
            types.push(RecordType::A);
        }
        let mut out = Vec::new();
        let mut security = Security::Secure;
        let mut canonical = None;
        let mut nx = 0;
        for t in &types {
            let a = self.ask_ad(host, *t)?;
            security = security.and(a.security()?);
            if a.rcode == ResponseCode::NXDomain {
                nx += 1;
            }
            canonical = canonical.or_else(|| a.canonical.clone());
            out.extend(a.records().filter_map(|r| match &r.data {
                RData::A(v4) => Some(IpAddr::V4(v4.0)),
                RData::AAAA(v6) => Some(IpAddr::V6(v6.0)),
                _ => None,
            }));
        }
        if out.is_empty() && nx == types.len() {
            return Err(DnsError::NxDomain);
        }
        Ok(Secured {
            value: out,
            security,
            canonical,
        })
    }

    fn tlsa(&self, host: &str, port: u16) -> Result<Secured<Vec<TlsaRecord>>, DnsError> {
        if !self.ad_path() {
            // Without validation a TLSA answer is worthless (RFC 7672 2.2):
            // do not even ask.
            return Ok(Secured::indeterminate(Vec::new()));
        }
        let name = format!("_{port}._tcp.{}", host.trim_end_matches('.'));
        self.ask_records(&name, RecordType::TLSA, |d| match d {
            RData::TLSA(t) => Some(TlsaRecord {
                usage: t.cert_usage.into(),
                selector: t.selector.into(),
                matching: t.matching.into(),
                data: t.cert_data.clone(),
            }),
            _ => None,
        })
    }

    fn txt(&self, name: &str) -> Result<Secured<Vec<String>>, DnsError> {
        if !self.ad_path() {
            return match self.lookup(name, RecordType::TXT) {
                Ok(data) => Ok(Secured::indeterminate(
                    data.iter()
                        .filter_map(|d| match d {
                            RData::TXT(t) => Some(txt_text(t)),
                            _ => None,
                        })
                        .collect(),
                )),
                Err(Failure::NxDomain | Failure::NoRecords) => Ok(Secured::indeterminate(Vec::new())),
                Err(Failure::Temporary(why)) => Err(DnsError::Temporary(why)),
            };
        }
        self.ask_records(name, RecordType::TXT, |d| match d {
            RData::TXT(t) => Some(txt_text(t)),
            _ => None,
        })
    }

    fn dnssec_probe(&self) -> Security {
        if !self.trust_ad {
            return Security::Indeterminate;
        }
        let verdict = match self.ask_ad(".", RecordType::NS) {
            Ok(a) if a.bogus => Security::Bogus,
            Ok(a) => a.security().unwrap_or(Security::Indeterminate),
            Err(_) => Security::Indeterminate,
        };
        self.validating
            .store(verdict == Security::Secure, Ordering::Relaxed);
        verdict
    }
}

/// One answer from a resolver whose AD bit tern believes.
struct AdAnswer {
    rcode: ResponseCode,
    /// AD was set (RFC 4035 3.2.3, RFC 6840 5.8).
    ad: bool,
    /// SERVFAIL with a DNSSEC extended error (RFC 8914 4.6-4.13).
    bogus: bool,
    /// The records of the wanted type at the end of the CNAME chain.
    found: Vec<Record>,
    canonical: Option<String>,
}

impl AdAnswer {
    fn records(&self) -> impl Iterator<Item = &Record> {
        self.found.iter()
    }

    /// The status of a usable answer; Bogus and other failures are errors
    /// here (the callers that report Bogus in-band check `bogus` first).
    fn security(&self) -> Result<Security, DnsError> {
        if self.bogus {
            return Err(DnsError::Temporary("DNSSEC validation failed (bogus)".to_owned()));
        }
        match self.rcode {
            ResponseCode::NoError | ResponseCode::NXDomain if self.ad => Ok(Security::Secure),
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(Security::Insecure),
            other => Err(DnsError::Temporary(format!("{other}"))),
        }
    }
}

/// RFC 8914 4.6-4.13: the extended DNS errors that mean "validation failed"
/// (5 Indeterminate, 6 Bogus, 7/8 signature expired or not yet valid, 9
/// DNSKEY missing, 10 RRSIGs missing, 11 no zone key bit, 12 NSEC missing).
/// 1 and 2 (unsupported algorithm or digest) make a zone insecure instead.
fn ede_is_dnssec_failure(code: u16) -> bool {
    (5..=12).contains(&code)
}

impl Hickory {
    /// The records of one type at `name` with their status, a bogus answer
    /// in-band as Bogus with no records (for [`Resolver::tlsa`] and
    /// [`Resolver::txt`]).
    fn ask_records<T>(
        &self,
        name: &str,
        rtype: RecordType,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Result<Secured<Vec<T>>, DnsError> {
        let a = self.ask_ad(name, rtype)?;
        if a.bogus {
            return Ok(Secured {
                value: Vec::new(),
                security: Security::Bogus,
                canonical: None,
            });
        }
        Ok(Secured {
            value: a.records().filter_map(|r| pick(&r.data)).collect(),
            security: a.security()?,
            canonical: a.canonical.clone(),
        })
    }

    /// Ask the trusted resolvers, in order, with AD and DO set (RFC 6840
    /// 5.7), over UDP and again over TCP when the answer is truncated. A
    /// timeout, a refusal or a SERVFAIL that is not a validation failure
    /// moves on to the next resolver; a validation failure is final (each
    /// validator would say the same). These queries go around hickory's
    /// resolver, whose answers keep neither the AD bit nor the extended
    /// error; they are plain blocking exchanges (no cache: the validating
    /// resolver has one).
    fn ask_ad(&self, name: &str, rtype: RecordType) -> Result<AdAnswer, DnsError> {
        let qname = Name::from_ascii(fqdn(name)).map_err(|e| DnsError::Temporary(format!("{name}: {e}")))?;
        let mut last = DnsError::Temporary("no DNS servers".to_owned());
        for server in &self.servers {
            match exchange_ad(*server, &qname, rtype, self.timeout) {
                Ok(resp) => {
                    let a = read_answer(&resp, &qname, rtype);
                    if a.bogus || matches!(a.rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
                        return Ok(a);
                    }
                    last = DnsError::Temporary(format!("{server}: {}", a.rcode));
                }
                Err(e) => last = DnsError::Temporary(format!("{server}: {e}")),
            }
        }
        Err(last)
    }
}

/// One query to one server, blocking: UDP from a fresh socket (a random
/// source port from the kernel, a random id), answered only by that server
/// (a connected socket) with the same id and question; TCP when the answer
/// is truncated. `timeout` bounds each transport's wait.
fn exchange_ad(
    server: SocketAddr,
    qname: &Name,
    rtype: RecordType,
    timeout: Duration,
) -> io::Result<Message> {
    let mut idb = [0u8; 2];
    SystemRandom::new()
        .fill(&mut idb)
        .map_err(|_| io::Error::other("no random id"))?;
    let id = u16::from_be_bytes(idb);
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.metadata.authentic_data = true;
    m.add_query(Query::query(qname.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232).set_version(0).set_dnssec_ok(true);
    m.set_edns(edns);
    let query = m.to_vec().map_err(io::Error::other)?;
    let matches = |a: &Message| {
        a.metadata.id == id
            && a.metadata.message_type == MessageType::Response
            && a.queries
                .first()
                .is_some_and(|q| q.query_type == rtype && q.name == *qname)
    };
    let local: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(server)?;
    sock.send(&query)?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65535];
    let answer = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer"));
        }
        sock.set_read_timeout(Some(left))?;
        let n = sock.recv(&mut buf)?;
        // A stray or forged datagram is ignored, not an error.
        let Ok(a) = Message::from_vec(buf.get(..n).unwrap_or_default()) else {
            continue;
        };
        if matches(&a) {
            break a;
        }
    };
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    let mut tcp = TcpStream::connect_timeout(&server, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let len = u16::try_from(query.len()).map_err(io::Error::other)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    tcp.write_all(&framed)?;
    let mut l = [0u8; 2];
    tcp.read_exact(&mut l)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(l))];
    tcp.read_exact(&mut body)?;
    let a =
        Message::from_vec(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    if !matches(&a) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "answer to another query",
        ));
    }
    Ok(a)
}

/// The records of `rtype` at the end of the CNAME chain from `qname`, the
/// AD bit and the extended error of a response.
fn read_answer(resp: &Message, qname: &Name, rtype: RecordType) -> AdAnswer {
    let ede = resp.edns.as_ref().and_then(|e| {
        e.options().options.iter().find_map(|(code, opt)| match opt {
            // RFC 8914 2: option 15, INFO-CODE in the first two octets.
            EdnsOption::Unknown(15, data) if u16::from(*code) == 15 => {
                let hi = *data.first()?;
                let lo = *data.get(1)?;
                Some(u16::from_be_bytes([hi, lo]))
            }
            _ => None,
        })
    });
    let rcode = resp.metadata.response_code;
    let bogus = rcode == ResponseCode::ServFail && ede.is_some_and(ede_is_dnssec_failure);
    // Follow CNAMEs within the answer (a resolver sends the whole chain),
    // at most a few links.
    let mut name = qname.clone();
    let mut canonical = None;
    for _ in 0..8 {
        let next = resp.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) if r.name == name && rtype != RecordType::CNAME => Some(c.0.clone()),
            _ => None,
        });
        match next {
            Some(n) => {
                let text = n.to_ascii();
                canonical = Some(text.strip_suffix('.').unwrap_or(&text).to_owned());
                name = n;
            }
            None => break,
        }
    }
    let found = resp
        .answers
        .iter()
        .filter(|r| r.record_type() == rtype && r.name == name)
        .cloned()
        .collect();
    AdAnswer {
        rcode,
        ad: resp.metadata.authentic_data,
        bogus,
        found,
        canonical,
    }
}

/// What an MX RRset means, its exchanges without the trailing dot.
fn mx_from(hosts: Vec<(u16, String)>) -> Mx {
    // RFC 7505 3: a single MX with an empty exchange (the root).
    if hosts.len() == 1 && hosts.iter().all(|(_, h)| h.is_empty()) {
        return Mx::Null;
    }
    let hosts: Vec<_> = hosts.into_iter().filter(|(_, h)| !h.is_empty()).collect();
    if hosts.is_empty() {
        return Mx::Implicit;
    }
    Mx::Hosts(hosts)
}

/// A resolver that could not be set up: every lookup fails temporarily.
pub struct Broken(pub String);

impl Resolver for Broken {
    fn mx(&self, _domain: &str) -> Result<Mx, DnsError> {
        Err(DnsError::Temporary(self.0.clone()))
    }
    fn addrs(&self, _host: &str, _family: Family) -> Result<Vec<IpAddr>, DnsError> {
        Err(DnsError::Temporary(self.0.clone()))
    }
    fn tlsa(&self, _host: &str, _port: u16) -> Result<Secured<Vec<TlsaRecord>>, DnsError> {
        Err(DnsError::Temporary(self.0.clone()))
    }
    fn txt(&self, _name: &str) -> Result<Secured<Vec<String>>, DnsError> {
        Err(DnsError::Temporary(self.0.clone()))
    }
}

/// Order MX hosts by preference, shuffling equal preferences (RFC 5321
/// 5.1: "randomize ... to spread the load"), using `noise` as the source.
pub fn sort_mx(mut hosts: Vec<(u16, String)>, noise: u64) -> Vec<(u16, String)> {
    let key = |h: &str| {
        use std::hash::{Hash, Hasher};
        let mut s = std::collections::hash_map::DefaultHasher::new();
        noise.hash(&mut s);
        h.hash(&mut s);
        s.finish()
    };
    hosts.sort_by_key(|(p, h)| (*p, key(h)));
    hosts
}

#[cfg(test)]
mod tests;
