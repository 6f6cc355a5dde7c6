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
mod tests {
    use super::*;
    use crate::deliver::dns::Security;
    use std::cell::Cell;

    #[test]
    fn txt_records() {
        let ok = |s: &str, id: &str| assert_eq!(parse_record(s), Ok(StsRecord { id: id.to_owned() }), "{s}");
        ok("v=STSv1; id=20160831085700Z;", "20160831085700Z");
        ok("v=STSv1;id=abc", "abc");
        ok("v=STSv1; id=abc ; ext_1=whatever", "abc");
        ok("v=STSv1;\tid=A1;", "A1");
        ok(&format!("v=STSv1; id={}", "x".repeat(32)), &"x".repeat(32));
        for s in [
            "id=abc; v=STSv1",                          // v must come first
            "v=STSv2; id=abc",                          // unknown version
            "v=STSv1",                                  // no id
            "v=STSv1; id=",                             // empty id
            "v=STSv1; id=a-b",                          // id is alphanumeric
            &format!("v=STSv1; id={}", "x".repeat(33)), // id too long
            "v=STSv1; id=abc; -bad=1",                  // bad extension name
            "v=STSv1; id=abc; junk",                    // field without '='
            " v=STSv1; id=abc",
        ] {
            assert!(parse_record(s).is_err(), "{s}");
        }
    }

    #[test]
    fn exactly_one_sts_record_counts() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            select_record(&s(&["v=spf1 -all", "v=STSv1; id=1"])),
            Some(StsRecord { id: "1".to_owned() })
        );
        assert_eq!(select_record(&s(&["v=STSv1; id=1", "v=STSv1; id=2"])), None);
        assert_eq!(select_record(&s(&["v=spf1 -all"])), None);
        assert_eq!(select_record(&s(&["v=STSv1; id=a-b"])), None);
        assert_eq!(select_record(&[]), None);
    }

    #[test]
    fn mx_patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("mail.example.com", "mail.example.com", true),
            ("mail.example.com", "MAIL.Example.COM.", true),
            ("mail.example.com", "mx.example.com", false),
            ("*.example.com", "mx1.example.com", true),
            ("*.example.com", "MX1.EXAMPLE.COM", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", "mx1.example.org", false),
            ("*.example.com", ".example.com", false),
        ];
        for (pat, host, want) in cases {
            assert_eq!(
                MxPattern::parse(pat).unwrap().matches(host),
                *want,
                "{pat} vs {host}"
            );
        }
        for bad in [
            "",
            "*.",
            "mx*.example.com",
            "a..b",
            "-a.example.com",
            "*.*.example.com",
            "ex ample.com",
        ] {
            assert!(MxPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    const GOOD: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";

    #[test]
    fn policy_grammar() {
        let p = parse_policy(GOOD).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604_800);
        assert_eq!(p.mx.len(), 3);
        assert!(p.mx_allowed("mail.example.com"));
        assert!(p.mx_allowed("a.example.net"));
        assert!(!p.mx_allowed("mail.example.org"));
        assert_eq!(
            p.policy_strings(),
            vec![
                "version: STSv1",
                "mode: enforce",
                "mx: mail.example.com",
                "mx: *.example.net",
                "mx: backupmx.example.com",
                "max_age: 604800"
            ]
        );

        // Table: body -> Ok((mode, mx count, max_age)) or Err.
        type Want = Option<(Mode, usize, u64)>;
        let table: &[(&str, Want)] = &[
            (
                "version: STSv1\nmode: testing\nmx: a.example\nmax_age: 86400\n",
                Some((Mode::Testing, 1, 86400)),
            ),
            // LF and CRLF, no final newline, whitespace after the colon
            (
                "version: STSv1\r\nmode:enforce\nmx:\ta.example\r\nmax_age:   5",
                Some((Mode::Enforce, 1, 5)),
            ),
            // mode none needs no mx
            (
                "version: STSv1\nmode: none\nmax_age: 86400\n",
                Some((Mode::None, 0, 86400)),
            ),
            // unknown fields ignored; extension with dots
            (
                "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nfoo.bar: baz\n",
                Some((Mode::Enforce, 1, 1)),
            ),
            // keys and keywords are case-sensitive: "Version" is an unknown key
            ("Version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n", None),
            ("version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n", None),
            ("version: stsv1\nmode: enforce\nmx: a.example\nmax_age: 1\n", None),
            // max_age above a year is a year
            (
                "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9999999999\n",
                Some((Mode::Enforce, 1, MAX_AGE_LIMIT)),
            ),
            // first of a repeated key counts
            (
                "version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 1\n",
                Some((Mode::Testing, 1, 1)),
            ),
            ("version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", None),
            ("mode: enforce\nmx: a.example\nmax_age: 1\n", None),
            ("version: STSv1\nmx: a.example\nmax_age: 1\n", None),
            ("version: STSv1\nmode: enforce\nmx: a.example\n", None),
            ("version: STSv1\nmode: enforce\nmax_age: 1\n", None),
            ("version: STSv1\nmode: block\nmx: a.example\nmax_age: 1\n", None),
            (
                "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
                None,
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n",
                None,
            ),
            (
                "version: STSv1\nmode: enforce\nmx: mx*.example\nmax_age: 1\n",
                None,
            ),
            ("<html>not a policy</html>", None),
            ("", None),
        ];
        for (body, want) in table {
            let got = parse_policy(body).ok().map(|p| (p.mode, p.mx.len(), p.max_age));
            assert_eq!(got, *want, "{body:?}");
        }
    }

    fn txt(records: &[&str]) -> Result<Secured<Vec<String>>, DnsError> {
        Ok(Secured::indeterminate(
            records.iter().map(|s| s.to_string()).collect(),
        ))
    }

    fn policy(max_age: u64) -> Policy {
        parse_policy(&format!(
            "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: {max_age}\n"
        ))
        .unwrap()
    }

    /// A fetch that returns `result` and counts its calls.
    fn fetcher(
        calls: &Cell<u32>,
        result: Result<Policy, FetchError>,
    ) -> impl Fn(&str) -> Result<(Policy, String), FetchError> + '_ {
        move |_d| {
            calls.set(calls.get() + 1);
            result.clone().map(|p| {
                let body = p.policy_strings().join("\n");
                (p, body)
            })
        }
    }

    #[test]
    fn cache_survives_reopening_and_honours_max_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mta-sts");
        let calls = Cell::new(0);
        {
            let cache = Cache::open(&path).unwrap();
            let d = discover(
                "Example.TEST.",
                txt(&["v=STSv1; id=1"]),
                &cache,
                &fetcher(&calls, Ok(policy(3600))),
                1000,
            );
            assert!(matches!(d, Discovery::Policy { cached: false, .. }));
        }
        // A new Cache (a restarted daemon) reads the same file.
        let cache = Cache::open(&path).unwrap();
        let c = cache.get("example.test").unwrap();
        assert_eq!((c.id.as_str(), c.fetched, c.policy.max_age), ("1", 1000, 3600));
        let text = fs::read_to_string(path.join("example.test")).unwrap();
        assert!(text.contains("expires: 4600\n"), "{text}");
        // Same id, fresh: no fetch.
        let d = discover(
            "example.test",
            txt(&["v=STSv1; id=1"]),
            &cache,
            &fetcher(&calls, Ok(policy(3600))),
            1500,
        );
        assert!(matches!(
            d,
            Discovery::Policy {
                cached: true,
                failure: None,
                ..
            }
        ));
        assert_eq!(calls.get(), 1);
        // Past max_age: fetched again even with the same id.
        let d = discover(
            "example.test",
            txt(&["v=STSv1; id=1"]),
            &cache,
            &fetcher(&calls, Ok(policy(7200))),
            4600,
        );
        assert!(matches!(d, Discovery::Policy { cached: false, .. }));
        assert_eq!(calls.get(), 2);
        assert_eq!(cache.get("example.test").unwrap().policy.max_age, 7200);
        // Half of max_age passed: refreshed (RFC 8461 10.2).
        let d = discover(
            "example.test",
            txt(&["v=STSv1; id=1"]),
            &cache,
            &fetcher(&calls, Ok(policy(7200))),
            4600 + 3600,
        );
        assert!(matches!(d, Discovery::Policy { cached: false, .. }));
        assert_eq!(calls.get(), 3);
        // No tmp files left behind.
        let names: Vec<_> = fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("example.test")]);
    }

    /// A cache holding policy id 1 (enforce, max_age a day) of
    /// example.test, fetched at 1000, and the fetch counter (at 1).
    fn primed() -> (tempfile::TempDir, Cache, Cell<u32>) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let calls = Cell::new(0);
        let d = discover(
            "example.test",
            txt(&["v=STSv1; id=1"]),
            &cache,
            &fetcher(&calls, Ok(policy(86400))),
            1000,
        );
        assert!(matches!(d, Discovery::Policy { cached: false, .. }));
        (dir, cache, calls)
    }

    #[test]
    fn a_new_id_refetches() {
        let (_dir, cache, calls) = primed();
        let mut testing = policy(86400);
        testing.mode = Mode::Testing;
        let d = discover(
            "example.test",
            txt(&["v=STSv1; id=2"]),
            &cache,
            &fetcher(&calls, Ok(testing)),
            1010,
        );
        assert_eq!(calls.get(), 2);
        match d {
            Discovery::Policy {
                policy, id, cached, ..
            } => {
                assert_eq!((policy.mode, id.as_str(), cached), (Mode::Testing, "2", false));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cache.get("example.test").unwrap().id, "2");
    }

    #[test]
    fn a_failed_fetch_keeps_the_cached_policy_until_it_expires() {
        let (_dir, cache, calls) = primed();
        let down = Err(FetchError::Fetch("connection refused".to_owned()));
        // New id but the policy host is down: the cached policy stays.
        let d = discover(
            "example.test",
            txt(&["v=STSv1; id=2"]),
            &cache,
            &fetcher(&calls, down.clone()),
            2000,
        );
        match &d {
            Discovery::Policy {
                id,
                cached: true,
                failure: Some(f),
                policy,
            } => {
                assert_eq!((id.as_str(), policy.mode), ("1", Mode::Enforce));
                assert_eq!(f.result_type(), "sts-policy-fetch-error");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(calls.get(), 2);
        // Within five minutes the host is not asked again (RFC 8461 3.3).
        let d = discover(
            "example.test",
            txt(&["v=STSv1; id=2"]),
            &cache,
            &fetcher(&calls, down.clone()),
            2100,
        );
        assert!(matches!(d, Discovery::Policy { cached: true, .. }));
        assert_eq!(calls.get(), 2);
        // The TXT lookup fails, or the record is gone: still the cache.
        let d = discover(
            "example.test",
            Err(DnsError::Temporary("timeout".into())),
            &cache,
            &fetcher(&calls, down.clone()),
            2200,
        );
        assert!(matches!(d, Discovery::Policy { cached: true, .. }));
        let d = discover(
            "example.test",
            txt(&[]),
            &cache,
            &fetcher(&calls, down.clone()),
            2200,
        );
        assert!(matches!(d, Discovery::Policy { cached: true, .. }));
        // Expired and still unreachable: no policy, with the reason.
        let d = discover(
            "example.test",
            txt(&["v=STSv1; id=2"]),
            &cache,
            &fetcher(&calls, down.clone()),
            1000 + 86400,
        );
        assert_eq!(d, Discovery::NoPolicy { failure: down.err() });
    }

    #[test]
    fn no_record_and_nothing_cached_is_no_policy() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let calls = Cell::new(0);
        let d = discover(
            "example.test",
            txt(&["v=spf1 -all"]),
            &cache,
            &fetcher(&calls, Ok(policy(1))),
            1,
        );
        assert_eq!(d, Discovery::NoPolicy { failure: None });
        let invalid = Err(FetchError::Invalid("no mode".to_owned()));
        let d = discover(
            "example.test",
            txt(&["v=STSv1; id=9"]),
            &cache,
            &fetcher(&calls, invalid.clone()),
            1,
        );
        assert_eq!(
            d,
            Discovery::NoPolicy {
                failure: invalid.err()
            }
        );
        assert_eq!(calls.get(), 1);
        // Bogus TXT is "no record" here; MTA-STS does not rest on DNSSEC.
        let bogus = Ok(Secured {
            value: vec![],
            security: Security::Bogus,
            canonical: None,
        });
        assert_eq!(
            discover("other.test", bogus, &cache, &fetcher(&calls, Ok(policy(1))), 1),
            Discovery::NoPolicy { failure: None }
        );
    }

    #[test]
    fn a_corrupt_cache_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        fs::write(dir.path().join("example.test"), "garbage").unwrap();
        assert_eq!(cache.get("example.test"), None);
        fs::write(
            dir.path().join("example.test"),
            "version: 2\nid: 1\nfetched: 1\n\nversion: STSv1\nmode: none\nmax_age: 9\n",
        )
        .unwrap();
        assert_eq!(cache.get("example.test"), None);
        // Names that are not host names are never turned into paths.
        assert!(cache
            .put(
                "../etc",
                &Cached {
                    id: "1".into(),
                    fetched: 1,
                    policy: policy(1),
                    body: String::new()
                }
            )
            .is_err());
        assert_eq!(cache.get("../../etc/passwd"), None);
    }

    /// The fetcher against a real HTTPS server: a rustls server thread on
    /// loopback with a certificate for `mta-sts.example.test` from a test
    /// CA, answering one scripted HTTP response per connection.
    mod https {
        use super::super::*;
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use std::io::{BufRead, BufReader, Write};
        use std::net::TcpListener;

        pub(super) struct Server {
            pub port: u16,
            pub ca_pem: tempfile::NamedTempFile,
        }

        /// Serve `response` (raw HTTP) to every connection; `names` go in the certificate.
        pub(super) fn serve(names: &[&str], expired: bool, response: Vec<u8>) -> Server {
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
            let key = KeyPair::generate().unwrap();
            let mut p =
                CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            if expired {
                p.not_before = rcgen::date_time_ymd(2001, 1, 1);
                p.not_after = rcgen::date_time_ymd(2002, 1, 1);
            }
            let leaf = p.signed_by(&key, &ca).unwrap();
            let mut ca_pem = tempfile::NamedTempFile::new().unwrap();
            ca_pem.write_all(ca.pem().as_bytes()).unwrap();
            let cfg = Arc::new(
                rustls::ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![CertificateDer::from(leaf.der().to_vec())],
                    PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
                )
                .unwrap(),
            );
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            std::thread::spawn(move || {
                for tcp in listener.incoming().flatten() {
                    let cfg = Arc::clone(&cfg);
                    let response = response.clone();
                    std::thread::spawn(move || {
                        let conn = rustls::ServerConnection::new(cfg).unwrap();
                        let mut tls = rustls::StreamOwned::new(conn, tcp);
                        let mut r = BufReader::new(&mut tls);
                        let mut line = String::new();
                        let mut path = String::new();
                        // Read the request head, then answer.
                        loop {
                            line.clear();
                            match r.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" => break,
                                Ok(_) if path.is_empty() => {
                                    path = line.split(' ').nth(1).unwrap_or("").to_owned();
                                }
                                Ok(_) => {}
                            }
                        }
                        // Any other path serves a valid policy: a client that
                        // followed a redirect there would succeed.
                        let other = reply("200 OK", "text/plain", super::GOOD);
                        let response = if path == "/.well-known/mta-sts.txt" {
                            &response
                        } else {
                            &other
                        };
                        let _ = tls.write_all(response);
                        let _ = tls.flush();
                        tls.conn.send_close_notify();
                        let _ = tls.conn.complete_io(&mut tls.sock);
                    });
                }
            });
            Server { port, ca_pem }
        }

        pub(super) fn reply(status: &str, ctype: &str, body: &str) -> Vec<u8> {
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }

        pub(super) fn fetcher(s: &Server, timeout: Duration) -> Fetcher {
            let resolve: HostResolver = Arc::new(|host: &str| {
                if host == "mta-sts.example.test" {
                    Ok(vec![IpAddr::from([127, 0, 0, 1])])
                } else {
                    Err(format!("{host}: NXDOMAIN"))
                }
            });
            Fetcher::new(Some(s.ca_pem.path()), timeout, resolve)
                .unwrap()
                .with_port(s.port)
        }
    }

    #[test]
    fn fetch_a_policy_over_verified_https() {
        let s = https::serve(
            &["mta-sts.example.test"],
            false,
            https::reply("200 OK", "text/plain; charset=utf-8", GOOD),
        );
        let f = https::fetcher(&s, Duration::from_secs(10));
        let (p, body) = f.fetch("Example.Test.").unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(body, GOOD);
    }

    #[test]
    fn fetch_refusals() {
        let t = Duration::from_secs(10);
        let cases: Vec<(https::Server, &str)> = vec![
            // RFC 8461 3.3: no redirects, 200 only.
            (
                https::serve(
                    &["mta-sts.example.test"],
                    false,
                    b"HTTP/1.1 301 Moved\r\nLocation: /other\r\nContent-Length: 0\r\n\r\n".to_vec(),
                ),
                "sts-policy-fetch-error",
            ),
            (
                https::serve(
                    &["mta-sts.example.test"],
                    false,
                    https::reply("404 Not Found", "text/plain", ""),
                ),
                "sts-policy-fetch-error",
            ),
            // Not text/plain.
            (
                https::serve(
                    &["mta-sts.example.test"],
                    false,
                    https::reply("200 OK", "text/html", GOOD),
                ),
                "sts-policy-invalid",
            ),
            // Not a policy.
            (
                https::serve(
                    &["mta-sts.example.test"],
                    false,
                    https::reply("200 OK", "text/plain", "hello"),
                ),
                "sts-policy-invalid",
            ),
            // Too big.
            (
                https::serve(
                    &["mta-sts.example.test"],
                    false,
                    https::reply(
                        "200 OK",
                        "text/plain",
                        &format!("{GOOD}{}", "x: y\n".repeat(20_000)),
                    ),
                ),
                "sts-policy-fetch-error",
            ),
            // Certificate for another name, or expired.
            (
                https::serve(
                    &["www.example.test"],
                    false,
                    https::reply("200 OK", "text/plain", GOOD),
                ),
                "sts-webpki-invalid",
            ),
            (
                https::serve(
                    &["mta-sts.example.test"],
                    true,
                    https::reply("200 OK", "text/plain", GOOD),
                ),
                "sts-webpki-invalid",
            ),
        ];
        for (s, want) in cases {
            let e = https::fetcher(&s, t).fetch("example.test").unwrap_err();
            assert_eq!(e.result_type(), want, "{e}");
        }
    }

    #[test]
    fn fetch_with_an_untrusted_ca_is_webpki_invalid() {
        let s = https::serve(
            &["mta-sts.example.test"],
            false,
            https::reply("200 OK", "text/plain", GOOD),
        );
        let other = https::serve(&["mta-sts.example.test"], false, Vec::new());
        let resolve: HostResolver = Arc::new(|_h: &str| Ok(vec![IpAddr::from([127, 0, 0, 1])]));
        let f = Fetcher::new(Some(other.ca_pem.path()), Duration::from_secs(10), resolve)
            .unwrap()
            .with_port(s.port);
        assert_eq!(
            f.fetch("example.test").unwrap_err().result_type(),
            "sts-webpki-invalid"
        );
    }

    #[test]
    fn fetch_times_out() {
        // A server that accepts and never answers.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let hold = std::thread::spawn(move || {
            let c = l.accept();
            let _ = wait.recv_timeout(Duration::from_secs(5));
            drop(c);
        });
        let s = https::serve(&["mta-sts.example.test"], false, Vec::new());
        let resolve: HostResolver = Arc::new(|_h: &str| Ok(vec![IpAddr::from([127, 0, 0, 1])]));
        let f = Fetcher::new(Some(s.ca_pem.path()), Duration::from_millis(500), resolve)
            .unwrap()
            .with_port(port);
        let start = std::time::Instant::now();
        let e = f.fetch("example.test").unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "took {:?}",
            start.elapsed()
        );
        assert_eq!(e.result_type(), "sts-policy-fetch-error");
        done.send(()).unwrap();
        hold.join().unwrap();
    }

    #[test]
    fn unknown_policy_host_is_a_fetch_error() {
        let s = https::serve(&["mta-sts.example.test"], false, Vec::new());
        let e = https::fetcher(&s, Duration::from_secs(5))
            .fetch("nowhere.test")
            .unwrap_err();
        assert_eq!(e.result_type(), "sts-policy-fetch-error");
    }
}
