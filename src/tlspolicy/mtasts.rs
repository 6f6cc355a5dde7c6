//! MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy file and its
//! grammar, the HTTPS fetch, the policy cache on disk and MX matching.
//!
//! The flow (RFC 8461 3 and 5.1), in [`discover`]: look up the TXT record;
//! when its id is the cached policy's and that policy has not expired, use
//! the cache; otherwise fetch `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`
//! (WebPKI-verified, no redirects, size and time limits) and cache it. A
//! failed fetch keeps the cached policy until it expires (the downgrade
//! resistance of RFC 8461 10.2); with nothing cached the domain has no
//! policy. What an enforce/testing policy then means for delivery is
//! `tlspolicy::policy`'s business.
//!
//! Why not `mail-auth`: it parses the TXT record only (not the policy file),
//! and more loosely than 3.1 asks; see DECISIONS.md 2026-12-04.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::tlsrpt::ResultType;
use crate::deliver::dns::{DnsError, Secured};

/// RFC 8461 3.2: max_age is at most 31557600 seconds (about a year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;
/// The most of a policy body read (RFC 8461 3.3 asks senders to bound the
/// fetch; a real policy is a few hundred bytes, so 64 KiB is generous).
pub const BODY_LIMIT: u64 = 64 * 1024;
/// RFC 8461 3.3: a timeout of no more than a minute is suggested.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// RFC 8461 3.3: after a failed fetch, wait at least five minutes before
/// asking again for the same policy id.
pub const RETRY_AFTER_FAILURE: u64 = 300;
/// RFC 8461 10.2: refresh a cached policy well before it expires, so that
/// a policy host that is down for a while does not make it lapse: daily,
/// or at half of max_age when that is shorter.
pub const REFRESH_AFTER: u64 = 86_400;

/// The `_mta-sts.DOMAIN` TXT record (RFC 8461 3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRecord {
    /// 1 to 32 letters and digits; a new id means a new policy.
    pub id: String,
}

/// Why a record or policy does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(why: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(why.into()))
}

/// Parse one TXT record: `v=STSv1; id=ID` with `v` first, optional
/// whitespace around fields, extension fields ignored (RFC 8461 3.1).
pub fn parse_record(txt: &str) -> Result<StsRecord, ParseError> {
    let mut id = None;
    for (k, v) in super::tag_fields(txt, "v=STSv1").map_err(ParseError)? {
        match k {
            // sts-id = 1*32(ALPHA / DIGIT); the first one counts.
            "id" if id.is_none() => {
                if v.is_empty() || v.len() > 32 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return bad(format!("bad id {v:?}"));
                }
                id = Some(v.to_owned());
            }
            // sts-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
            _ if valid_ext_name(k) => {}
            _ => return bad(format!("bad field name {k:?}")),
        }
    }
    match id {
        Some(id) => Ok(StsRecord { id }),
        None => bad("no id field"),
    }
}

fn valid_ext_name(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && k.len() <= 32
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// The record among all the TXT strings at `_mta-sts.DOMAIN`: those not
/// beginning with `v=STSv1;` are discarded, and anything but exactly one
/// left (or one that does not parse) means no policy (RFC 8461 3.1).
pub fn select_record(txts: &[String]) -> Option<StsRecord> {
    parse_record(super::only_record(txts, "v=STSv1")?).ok()
}

/// Policy mode (RFC 8461 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only to matching MX hosts over verified TLS.
    Enforce,
    /// Deliver anyway; report what would have failed.
    Testing,
    /// The domain has withdrawn its policy (RFC 8461 8.3).
    None,
}

impl Mode {
    /// "enforce", "testing", "none" (logs, TLS-RPT policy strings).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// One `mx:` pattern: a host name, or `*.` and a domain meaning exactly one
/// more label on the left (RFC 8461 4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxPattern {
    wildcard: bool,
    /// Lower case, no trailing dot (the part after `*.` for a wildcard).
    name: String,
}

impl MxPattern {
    /// Parse a pattern: `mail.example.com` or `*.example.com`.
    pub fn parse(s: &str) -> Result<MxPattern, ParseError> {
        let s = s.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, s),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return bad(format!("bad mx pattern {name:?}"));
        }
        Ok(MxPattern { wildcard, name })
    }

    /// Whether `host` (an MX host name) matches, case-insensitively.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if !self.wildcard {
            return host == self.name;
        }
        // "*.example.com" matches "mx1.example.com" but neither
        // "example.com" nor "a.b.example.com".
        match host.split_once('.') {
            Some((first, rest)) => !first.is_empty() && rest == self.name,
            None => false,
        }
    }
}

impl fmt::Display for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

/// A parsed policy file (RFC 8461 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    pub mx: Vec<MxPattern>,
    /// Seconds, clamped to [`MAX_AGE_LIMIT`].
    pub max_age: u64,
}

impl Policy {
    /// Whether the MX host is one the policy allows (RFC 8461 4.1).
    pub fn mx_allowed(&self, host: &str) -> bool {
        self.mx.iter().any(|p| p.matches(host))
    }

    /// The policy as TLS-RPT's `policy-string` lists it: one string per
    /// line of the policy (RFC 8460 4.4).
    pub fn policy_strings(&self) -> Vec<String> {
        let mut v = vec![
            "version: STSv1".to_owned(),
            format!("mode: {}", self.mode.as_str()),
        ];
        v.extend(self.mx.iter().map(|p| format!("mx: {p}")));
        v.push(format!("max_age: {}", self.max_age));
        v
    }
}

/// Parse a policy body. Lines end in LF or CRLF; each is `key: value` with
/// optional whitespace after the colon; keys and keywords are exact (the
/// ABNF spells them as case-sensitive strings); unknown keys are ignored; of a
/// repeated key other than `mx` the first counts; `version`, `mode` and
/// `max_age` are required, and at least one `mx` unless the mode is none.
pub fn parse_policy(body: &str) -> Result<Policy, ParseError> {
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = line.trim_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return bad(format!("line without ':': {line:?}"));
        };
        let value = value.trim_matches([' ', '\t']);
        match key {
            "version" if version.is_none() => {
                if value != "STSv1" {
                    return bad(format!("unknown version {value:?}"));
                }
                version = Some(());
            }
            "mode" if mode.is_none() => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    _ => return bad(format!("unknown mode {value:?}")),
                });
            }
            "max_age" if max_age.is_none() => {
                // 1*10DIGIT
                if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return bad(format!("bad max_age {value:?}"));
                }
                let n: u64 = value
                    .parse()
                    .map_err(|_| ParseError(format!("bad max_age {value:?}")))?;
                max_age = Some(n.min(MAX_AGE_LIMIT));
            }
            "mx" => mx.push(MxPattern::parse(value)?),
            _ => {}
        }
    }
    if version.is_none() {
        return bad("no version field");
    }
    let Some(mode) = mode else {
        return bad("no mode field");
    };
    let Some(max_age) = max_age else {
        return bad("no max_age field");
    };
    if mx.is_empty() && mode != Mode::None {
        return bad("no mx field");
    }
    Ok(Policy { mode, mx, max_age })
}

/// Why a policy could not be fetched, with the TLS-RPT result type it is
/// reported as (RFC 8460 4.3.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The policy host's certificate did not verify: `sts-webpki-invalid`.
    WebPki(String),
    /// The body is not a valid policy (or not text/plain): `sts-policy-invalid`.
    Invalid(String),
    /// Anything else (DNS, connection, timeout, status other than 200, a
    /// redirect, a body too big): `sts-policy-fetch-error`.
    Fetch(String),
}

impl FetchError {
    /// The RFC 8460 4.3.2.2 result type.
    pub fn result(&self) -> ResultType {
        match self {
            FetchError::WebPki(_) => ResultType::StsWebpkiInvalid,
            FetchError::Invalid(_) => ResultType::StsPolicyInvalid,
            FetchError::Fetch(_) => ResultType::StsPolicyFetchError,
        }
    }

    /// The result type as the report spells it.
    pub fn result_type(&self) -> &'static str {
        self.result().as_str()
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::WebPki(w) => write!(f, "policy host certificate: {w}"),
            FetchError::Invalid(w) => write!(f, "invalid policy: {w}"),
            FetchError::Fetch(w) => write!(f, "policy fetch: {w}"),
        }
    }
}

/// A fetched policy and its body as served, or why not.
pub type FetchResult = Result<(Policy, String), FetchError>;

/// How the fetcher finds the policy host's addresses (tern's own resolver
/// in the daemon, a fixed answer in tests).
pub type HostResolver = Arc<dyn Fn(&str) -> Result<Vec<IpAddr>, String> + Send + Sync>;

/// A blocking HTTPS client for policy files (ureq, rustls on ring).
pub struct Fetcher {
    agent: ureq::Agent,
    /// 443, except in tests that run their HTTPS server on another port.
    port: u16,
}

impl Fetcher {
    /// `ca_file` replaces the WebPKI roots (Mozilla's list, compiled in)
    /// when given, for tests and private deployments. `timeout` bounds the
    /// whole fetch (connect, TLS, request, body).
    pub fn new(ca_file: Option<&Path>, timeout: Duration, resolve: HostResolver) -> io::Result<Fetcher> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
        let roots = match ca_file {
            Some(path) => {
                use rustls::pki_types::pem::PemObject;
                let certs: Vec<Certificate<'static>> = rustls::pki_types::CertificateDer::pem_file_iter(path)
                    .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?
                    .map(|c| c.map(|c| Certificate::from_der(c.as_ref()).to_owned()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
                if certs.is_empty() {
                    return Err(io::Error::other(format!("{}: no certificates", path.display())));
                }
                RootCerts::Specific(Arc::new(certs))
            }
            None => RootCerts::WebPki,
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(roots)
            .build();
        let config = ureq::Agent::config_builder()
            .https_only(true)
            // RFC 8461 3.3: "HTTP 3xx redirects MUST NOT be followed".
            .max_redirects(0)
            .http_status_as_error(false)
            // The destination is the policy host, never a proxy from the environment.
            .proxy(None)
            .timeout_global(Some(timeout))
            .user_agent("tern (MTA-STS)")
            .tls_config(tls)
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::new(),
            Resolve(resolve),
        );
        Ok(Fetcher { agent, port: 443 })
    }

    /// Use another port than 443 (tests only: their HTTPS server cannot
    /// have the real one).
    pub fn with_port(mut self, port: u16) -> Fetcher {
        self.port = port;
        self
    }

    /// Fetch and parse the policy of `domain` (RFC 8461 3.3).
    pub fn fetch(&self, domain: &str) -> FetchResult {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let url = if self.port == 443 {
            format!("https://mta-sts.{domain}/.well-known/mta-sts.txt")
        } else {
            format!("https://mta-sts.{domain}:{}/.well-known/mta-sts.txt", self.port)
        };
        let mut resp = self.agent.get(&url).call().map_err(classify)?;
        // "only valid if the HTTP response code is 200 (OK)"
        let status = resp.status();
        if status.as_u16() != 200 {
            return Err(FetchError::Fetch(format!("{url}: HTTP {status}")));
        }
        // "senders SHOULD validate that the media type is text/plain"
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = ctype.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("text/plain") {
            return Err(FetchError::Invalid(format!(
                "{url}: content type {ctype:?}, not text/plain"
            )));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_vec()
            .map_err(classify)?;
        let text = String::from_utf8(body).map_err(|_| FetchError::Invalid(format!("{url}: not UTF-8")))?;
        let policy = parse_policy(&text).map_err(|e| FetchError::Invalid(format!("{url}: {e}")))?;
        Ok((policy, text))
    }
}

fn classify(e: ureq::Error) -> FetchError {
    match e {
        ureq::Error::Rustls(r) => match r {
            rustls::Error::InvalidCertificate(_) | rustls::Error::InvalidCertRevocationList(_) => {
                FetchError::WebPki(r.to_string())
            }
            other => FetchError::Fetch(format!("TLS: {other}")),
        },
        ureq::Error::BodyExceedsLimit(n) => FetchError::Fetch(format!("policy larger than {n} bytes")),
        ureq::Error::Io(io) => {
            // rustls errors surface wrapped in io errors from the stream.
            if let Some(r) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                if matches!(r, rustls::Error::InvalidCertificate(_)) {
                    return FetchError::WebPki(r.to_string());
                }
            }
            FetchError::Fetch(io.to_string())
        }
        other => FetchError::Fetch(other.to_string()),
    }
}

/// ureq's name lookup through [`HostResolver`].
struct Resolve(HostResolver);

impl fmt::Debug for Resolve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolve")
    }
}

impl ureq::unversioned::resolver::Resolver for Resolve {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let port = uri.port_u16().unwrap_or(443);
        let addrs = (self.0)(host).map_err(|e| ureq::Error::Io(io::Error::other(format!("{host}: {e}"))))?;
        let mut out = self.empty();
        for a in addrs {
            // At most 16 (ureq's array); the rest are not needed.
            if out.try_push(SocketAddr::new(a, port)).is_err() {
                break;
            }
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

/// A policy as kept in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The TXT id it was fetched under.
    pub id: String,
    /// When it was fetched (seconds since the epoch).
    pub fetched: u64,
    pub policy: Policy,
    /// The body as served, kept so the cache file reads like the policy.
    pub body: String,
}

impl Cached {
    /// RFC 8461 3.2: a policy is good for max_age seconds after its fetch.
    pub fn expired(&self, now: u64) -> bool {
        now >= self.fetched.saturating_add(self.policy.max_age)
    }

    /// Whether it is time to refresh it even though the id is unchanged
    /// (RFC 8461 10.2).
    pub fn due_for_refresh(&self, now: u64) -> bool {
        now.saturating_sub(self.fetched) >= REFRESH_AFTER.min(self.policy.max_age / 2)
    }
}

/// The policy cache: one file per domain in a directory under the spool
/// (`SPOOL/mta-sts/`), written by tmp+fsync+rename so that a crash leaves
/// the old policy or the new one, never half of one. It survives restarts.
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Open (creating it, mode 0700) the cache directory.
    pub fn open(dir: &Path) -> io::Result<Cache> {
        super::make_private_dir(dir)?;
        Ok(Cache { dir: dir.to_owned() })
    }

    /// The file for a domain: its lower-case name when that is a plain
    /// host name, so an administrator can read the cache with ls and cat.
    fn path(&self, domain: &str, suffix: &str) -> Option<PathBuf> {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        let ok = !d.is_empty()
            && !d.starts_with('.')
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !d.contains("..");
        ok.then(|| self.dir.join(format!("{d}{suffix}")))
    }

    /// The cached policy of `domain`, expired or not; None when there is
    /// none or the file does not parse (it is then ignored, not trusted).
    pub fn get(&self, domain: &str) -> Option<Cached> {
        let path = self.path(domain, "")?;
        let mut text = String::new();
        fs::File::open(path)
            .ok()?
            .take(BODY_LIMIT * 2)
            .read_to_string(&mut text)
            .ok()?;
        let (head, body) = text.split_once("\n\n")?;
        let mut id = None;
        let mut fetched = None;
        for line in head.lines() {
            match line.split_once(": ") {
                Some(("version", v)) if v != "1" => return None,
                Some(("id", v)) => id = Some(v.to_owned()),
                Some(("fetched", v)) => fetched = v.parse().ok(),
                _ => {}
            }
        }
        let policy = parse_policy(body).ok()?;
        Some(Cached {
            id: id?,
            fetched: fetched?,
            policy,
            body: body.to_owned(),
        })
    }

    /// Store (replace) the policy of `domain`.
    pub fn put(&self, domain: &str, c: &Cached) -> io::Result<()> {
        let path = self
            .path(domain, "")
            .ok_or_else(|| io::Error::other(format!("{domain}: not a cacheable domain name")))?;
        let text = format!(
            "version: 1\ndomain: {}\nid: {}\nfetched: {}\nexpires: {}\n\n{}",
            domain.trim_end_matches('.').to_ascii_lowercase(),
            c.id,
            c.fetched,
            c.fetched.saturating_add(c.policy.max_age),
            c.body
        );
        super::write_atomic(&path, text.as_bytes())
    }

    /// Forget the policy of `domain` (an expired one, or on request).
    pub fn remove(&self, domain: &str) -> io::Result<()> {
        let Some(path) = self.path(domain, "") else {
            return Ok(());
        };
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Note a failed fetch of policy `id`, for [`Cache::failed_recently`].
    pub fn note_failure(&self, domain: &str, id: &str, now: u64) -> io::Result<()> {
        let Some(path) = self.path(domain, ".failed") else {
            return Ok(());
        };
        super::write_atomic(&path, format!("{id} {now}\n").as_bytes())
    }

    /// Whether policy `id` failed to fetch less than [`RETRY_AFTER_FAILURE`]
    /// seconds ago (RFC 8461 3.3: do not hammer a failing policy host).
    pub fn failed_recently(&self, domain: &str, id: &str, now: u64) -> bool {
        let Some(text) = self
            .path(domain, ".failed")
            .and_then(|p| fs::read_to_string(p).ok())
        else {
            return false;
        };
        match text.trim().split_once(' ') {
            Some((fid, t)) => {
                fid == id
                    && t.parse::<u64>()
                        .is_ok_and(|t| now.saturating_sub(t) < RETRY_AFTER_FAILURE)
            }
            None => false,
        }
    }

    fn clear_failure(&self, domain: &str) {
        if let Some(p) = self.path(domain, ".failed") {
            let _ = fs::remove_file(p);
        }
    }
}

/// What policy discovery found for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// No MTA-STS: no valid TXT record and nothing cached, or the policy
    /// could not be had and nothing is cached (RFC 8461 5: then the domain
    /// is treated as having no policy). `failure` carries the reason for
    /// the log and TLS-RPT when there was a TXT record.
    NoPolicy { failure: Option<FetchError> },
    /// A policy to apply.
    Policy {
        policy: Policy,
        id: String,
        /// Whether it came from the cache (no fetch, or a failed one).
        cached: bool,
        /// A fetch that failed while a cached policy was used instead.
        failure: Option<FetchError>,
    },
}

/// RFC 8461 5.1, the whole dance for one domain. `txt` is the lookup of
/// `_mta-sts.DOMAIN`; `fetch` gets the policy (a [`Fetcher`] in the
/// daemon). Only the fetch does I/O besides the cache, and it happens
/// only when the id changed, nothing usable is cached, or a refresh is
/// due, and not within five minutes of a failure for the same id.
pub fn discover(
    domain: &str,
    txt: Result<Secured<Vec<String>>, DnsError>,
    cache: &Cache,
    fetch: &dyn Fn(&str) -> FetchResult,
    now: u64,
) -> Discovery {
    let cached = cache.get(domain).filter(|c| !c.expired(now));
    let record = match &txt {
        Ok(t) => select_record(&t.value),
        Err(_) => None,
    };
    let use_cache = |c: Cached, failure| Discovery::Policy {
        policy: c.policy,
        id: c.id,
        cached: true,
        failure,
    };
    let Some(record) = record else {
        // No (valid) record, or the lookup failed: a cached policy stays in
        // force until it expires (RFC 8461 3.1, 10.2: removing the record
        // does not remove a policy; publishing mode none does).
        return match cached {
            Some(c) => use_cache(c, None),
            None => Discovery::NoPolicy { failure: None },
        };
    };
    if let Some(c) = &cached {
        if c.id == record.id && !c.due_for_refresh(now) {
            return use_cache(c.clone(), None);
        }
    }
    if cache.failed_recently(domain, &record.id, now) {
        let failure = Some(FetchError::Fetch("failed less than five minutes ago".to_owned()));
        return match cached {
            Some(c) => use_cache(c, failure),
            None => Discovery::NoPolicy { failure },
        };
    }
    match fetch(domain) {
        Ok((policy, body)) => {
            let c = Cached {
                id: record.id.clone(),
                fetched: now,
                policy: policy.clone(),
                body,
            };
            if let Err(e) = cache.put(domain, &c) {
                log::warn!("MTA-STS: cannot cache the policy of {domain}: {e}");
            }
            cache.clear_failure(domain);
            Discovery::Policy {
                policy,
                id: record.id,
                cached: false,
                failure: None,
            }
        }
        Err(e) => {
            if let Err(w) = cache.note_failure(domain, &record.id, now) {
                log::warn!("MTA-STS: cannot note the failed fetch for {domain}: {w}");
            }
            match cached {
                Some(c) => use_cache(c, Some(e)),
                None => Discovery::NoPolicy { failure: Some(e) },
            }
        }
    }
}

#[cfg(test)]
mod tests;
