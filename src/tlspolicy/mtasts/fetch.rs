//! The HTTPS fetch of an MTA-STS policy file (RFC 8461 3.3): a blocking
//! ureq client on rustls (ring), WebPKI-verified, no redirects, the body and
//! the time bounded; errors classified as TLS-RPT reports them.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{parse_policy, Policy, BODY_LIMIT};
use crate::tlspolicy::tlsrpt::ResultType;

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
