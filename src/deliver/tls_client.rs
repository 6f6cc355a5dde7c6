//! Outbound TLS for the SMTP client: the rustls client configs for each
//! policy, and the stream that is plain TCP until STARTTLS upgrades it.
//!
//! Policies (Postfix's smtp_tls_security_level): `none` never starts TLS;
//! `may` encrypts when offered without checking the certificate (opportunistic
//! TLS, RFC 7435: an unchecked encryption still beats plaintext); `encrypt`
//! insists on TLS, still unchecked; `verify` insists on TLS with a certificate
//! valid for the host name under the system's CA store or `tls_ca_file`.
//!
//! The per-hop decision (`tlspolicy::policy`) chooses among these and DANE;
//! [`checking`] makes the config for a certificate check that is either
//! enforced (a failure ends the handshake) or only observed (the handshake
//! goes on, the failure is kept for the log and TLS-RPT: MTA-STS testing
//! mode, `TLS-Required: No`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme, StreamOwned,
};

use crate::config::TlsPolicy;

/// A connection to the next hop: plain, or TLS over it; or a local LMTP
/// server's UNIX-domain socket (never encrypted: it does not leave the host).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Unix(UnixStream),
}

impl Stream {
    /// "TLSv1.3" once encrypted, for the log line.
    pub fn tls_version(&self) -> Option<&'static str> {
        match self {
            Stream::Plain(_) | Stream::Unix(_) => None,
            Stream::Tls(t) => t.conn.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
                _ => "TLS",
            }),
        }
    }

    /// Run the TLS handshake over a plain stream. A stream already
    /// encrypted is an error (STARTTLS twice), and so is a UNIX socket.
    pub fn upgrade(self, config: Arc<ClientConfig>, host: &str) -> io::Result<Stream> {
        let upgraded = self.handshake(config, host);
        match upgraded.as_ref().map(Stream::tls_version) {
            Ok(v) => crate::metrics::tls(crate::metrics::Direction::Out, v.unwrap_or_default()),
            Err(_) => crate::metrics::tls_out_failed(),
        }
        upgraded
    }

    fn handshake(self, config: Arc<ClientConfig>, host: &str) -> io::Result<Stream> {
        let mut tcp = match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(_) => return Err(io::Error::other("TLS already active")),
            Stream::Unix(_) => return Err(io::Error::other("no TLS over a UNIX socket")),
        };
        let name = server_name(host)?;
        let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }
}

impl crate::deliver::client::Timed for Stream {
    fn set_read_limit(&self, t: std::time::Duration) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.set_read_timeout(Some(t)),
            Stream::Tls(s) => s.sock.set_read_timeout(Some(t)),
            Stream::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }

    fn set_write_limit(&self, t: std::time::Duration) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.set_write_timeout(Some(t)),
            Stream::Tls(s) => s.sock.set_write_timeout(Some(t)),
            Stream::Unix(s) => s.set_write_timeout(Some(t)),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Why STARTTLS did not give an encrypted connection.
#[derive(Debug)]
pub enum StartTlsError {
    /// The connection broke while asking: the host is not usable now.
    Io(io::Error),
    /// Refused, or the handshake failed: under `may` the caller may try the
    /// host again in plaintext.
    Tls(String),
}

/// RFC 3207: STARTTLS on a greeted connection, and the handshake with
/// `config` for `host`. The client that comes back knows nothing of the
/// server yet: the caller says EHLO (or LHLO) again (RFC 3207 4.2).
pub fn starttls(
    mut c: crate::deliver::client::Client<Stream>,
    config: Arc<ClientConfig>,
    host: &str,
) -> Result<crate::deliver::client::Client<Stream>, StartTlsError> {
    match c.command("STARTTLS") {
        Ok(r) if r.code == 220 => {}
        Ok(r) => return Err(StartTlsError::Tls(format!("STARTTLS refused: {}", r.one_line()))),
        Err(e) => return Err(StartTlsError::Io(e)),
    }
    let tls = c
        .into_stream()
        .and_then(|plain| plain.upgrade(config, host))
        .map_err(|e| StartTlsError::Tls(e.to_string()))?;
    Ok(crate::deliver::client::Client::new(tls))
}

/// `mx.example.org`, or an address literal from `[192.0.2.1]` routes.
fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))
}

/// The rustls config for a policy. `verify` uses `ca_file` when given, else the
/// system's CA store.
pub fn config(policy: TlsPolicy, ca_file: Option<&Path>) -> io::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?;
    let cfg = if policy == TlsPolicy::Verify {
        builder
            .with_root_certificates(roots(ca_file)?)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(cfg))
}

/// The trust anchors of `verify`: `ca_file` when given, else the system's.
fn roots(ca_file: Option<&Path>) -> io::Result<Arc<RootCertStore>> {
    match ca_file {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
            for c in certs {
                let c = c.map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
                roots.add(c).map_err(io::Error::other)?;
            }
            Ok(Arc::new(roots))
        }
        None => Ok(system_roots()),
    }
}

/// The PKIX check of `verify` (and MTA-STS, RFC 8461 4.2): the chain to a
/// trust anchor of `ca_file` or the system, and the name the connection is
/// made to.
pub fn pkix_verifier(ca_file: Option<&Path>) -> io::Result<Arc<dyn ServerCertVerifier>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let v = rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca_file)?, provider)
        .build()
        .map_err(io::Error::other)?;
    Ok(v)
}

/// A client config that checks certificates with `verifier`: a failure
/// ends the handshake when `enforce`, else it is only kept in the returned
/// [`Observed`] and the handshake goes on (the signature over the
/// handshake is still checked with the certificate's key).
pub fn checking(
    verifier: Arc<dyn ServerCertVerifier>,
    enforce: bool,
) -> io::Result<(Arc<ClientConfig>, Option<Arc<Observed>>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous();
    if enforce {
        let cfg = builder
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        return Ok((Arc::new(cfg), None));
    }
    let observed = Arc::new(Observed {
        inner: verifier,
        failure: Mutex::new(None),
    });
    let cfg = builder
        .with_custom_certificate_verifier(Arc::clone(&observed) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    Ok((Arc::new(cfg), Some(observed)))
}

/// A certificate check that only watches: it runs `inner`, keeps its
/// failure, and lets the handshake go on.
#[derive(Debug)]
pub struct Observed {
    inner: Arc<dyn ServerCertVerifier>,
    failure: Mutex<Option<rustls::Error>>,
}

impl Observed {
    /// Why the certificate failed the check, if it did.
    pub fn failure(&self) -> Option<rustls::Error> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ServerCertVerifier for Observed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Err(e) =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The TLS error inside an I/O error from a handshake, if that is what it was.
pub fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|x| x.downcast_ref::<rustls::Error>())
}

/// A handshake failure for the log: rustls shows an error of a verifier of
/// our own (DANE's "no TLSA record matches") by its Debug form; say it.
pub fn describe(e: &io::Error) -> String {
    match tls_error(e) {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) => {
            format!("invalid peer certificate: {}", o.0)
        }
        _ => e.to_string(),
    }
}

/// The system's trust anchors, what OpenSSL on this host trusts: found by
/// rustls-native-certs ($SSL_CERT_FILE and $SSL_CERT_DIR, else the distribution's
/// bundle, /etc/ssl/certs/ca-certificates.crt on Debian). Read once, at the first
/// `verify` connection, so that each delivery does not parse the bundle again; a
/// change to the store is seen after a restart. No compiled-in fallback: a
/// list built into the binary would go stale where the system's is updated, so a
/// host with no store says so in the log and `verify` fails until one is
/// installed (the ca-certificates package) or `tls_ca_file` is set.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| Arc::new(roots_from(rustls_native_certs::load_native_certs()))))
}

/// A root store from what the system store yielded, with what went wrong logged.
fn roots_from(found: rustls_native_certs::CertificateResult) -> RootCertStore {
    for e in &found.errors {
        log::warn!("system CA store: {e}");
    }
    let mut roots = RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(found.certs);
    if unusable > 0 {
        log::warn!("system CA store: {unusable} certificates could not be used");
    }
    if roots.is_empty() {
        log::error!(
            "system CA store: no CA certificates found (install ca-certificates, or set \
             tls_ca_file): every tls = verify delivery will fail"
        );
    } else {
        log::info!(
            "system CA store: {} CA certificates trusted for tls = verify",
            roots.len()
        );
    }
    roots
}

/// Accepts any certificate (opportunistic TLS) but still checks that the
/// handshake is signed by the key in it, so the session keys are sound.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_build() {
        for p in [TlsPolicy::May, TlsPolicy::Encrypt, TlsPolicy::Verify] {
            assert!(config(p, None).is_ok());
        }
        assert!(config(TlsPolicy::Verify, Some(Path::new("/nonexistent/ca.pem"))).is_err());
    }

    #[test]
    fn system_store_roots() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        let bundle = dir.path().join("bundle.crt");
        std::fs::write(&bundle, ca.cert.pem()).unwrap();
        let found = rustls_native_certs::load_certs_from_paths(Some(&bundle), None);
        assert_eq!(roots_from(found).len(), 1);
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "").unwrap();
        assert!(roots_from(rustls_native_certs::load_certs_from_paths(Some(&empty), None)).is_empty());
        let missing = dir.path().join("missing.crt");
        let found = rustls_native_certs::load_certs_from_paths(Some(&missing), None);
        assert!(roots_from(found).is_empty());
    }

    #[test]
    fn server_names() {
        assert!(server_name("mx.example.org").is_ok());
        assert!(server_name("[127.0.0.1]").is_ok());
    }
}
