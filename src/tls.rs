//! TLS for the server side: the rustls configuration built from `tls_cert`
//! and `tls_key`, and the handshake that turns a session's plain `Conn` into
//! a TLS one (STARTTLS, RFC 3207; implicit TLS, RFC 8314).
//!
//! The outbound client side lives in `deliver::tls_client`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring;
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::server::conn::Conn;

/// What was negotiated, for the Received: header (RFC 3848) and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The IANA-style suite name as rustls spells it, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

impl fmt::Display for TlsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} with cipher {}", self.version, self.cipher)
    }
}

/// What identifies a version of the certificate and key files.
type Stamp = Option<[(SystemTime, u64); 2]>;

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    Some([one(cert)?, one(key)?])
}

/// The server configuration, rebuilt when the certificate or key file
/// changes (a renewed certificate is used without a restart). A new pair
/// that does not load is logged and the last good one stays in use.
pub struct Source {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<(Stamp, Arc<ServerConfig>)>,
}

impl Source {
    /// None when no certificate is configured. The error says which file
    /// is wrong and why, for `ternd -n` and start-up.
    pub fn new(cfg: &Config) -> Result<Option<Source>, String> {
        let (Some(cert), Some(key)) = (&cfg.tls.cert, &cfg.tls.key) else {
            return Ok(None);
        };
        let st = stamp(cert, key);
        let config = load(cert, key)?;
        Ok(Some(Source {
            cert: cert.clone(),
            key: key.clone(),
            state: Mutex::new((st, config)),
        }))
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        let now = stamp(&self.cert, &self.key);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.is_some() && now != st.0 {
            match load(&self.cert, &self.key) {
                Ok(c) => {
                    log::info!("TLS: loaded the new {}", self.cert.display());
                    *st = (now, c);
                }
                Err(e) => {
                    log::warn!("TLS: keeping the previous certificate: {e}");
                    // Do not try again until the files change once more.
                    st.0 = now;
                }
            }
        }
        Arc::clone(&st.1)
    }
}

/// Build a rustls server config from a PEM chain (leaf first) and a PEM key
/// (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls_cert {}: no certificate in the file", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls_key {}: {e}", key.display()))?;
    // TLS 1.2 and 1.3 only: rustls implements nothing older, and says so here.
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls_cert/tls_key: {e}"))?;
    Ok(Arc::new(config))
}

/// A TLS stream over whatever the session was running on (TCP, or stdin/stdout
/// for `ternd -i` behind inetd).
pub type TlsStream = StreamOwned<ServerConnection, Box<dyn Conn>>;

impl Conn for TlsStream {
    fn set_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.sock.set_timeout(t)
    }

    fn set_read_wait(&mut self, t: Duration) -> io::Result<()> {
        self.sock.set_read_wait(t)
    }
}

/// Run the server handshake over `conn` to completion. The caller has set
/// the timeouts; a failure is an error for that session only.
pub fn accept(config: &Arc<ServerConfig>, mut conn: Box<dyn Conn>) -> io::Result<(TlsStream, TlsInfo)> {
    let mut tls = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
    while tls.is_handshaking() {
        let (read, written) = tls.complete_io(&mut conn)?;
        if read == 0 && written == 0 && tls.is_handshaking() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    let info = info_of(&tls);
    Ok((StreamOwned::new(tls, conn), info))
}

fn info_of(tls: &ServerConnection) -> TlsInfo {
    let version = match tls.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(v) => format!("{v:?}"),
        None => "unknown".to_owned(),
    };
    let cipher = match tls.negotiated_cipher_suite() {
        Some(s) => {
            let suite = s.suite();
            suite.as_str().map_or_else(|| format!("{suite:?}"), str::to_owned)
        }
        None => "unknown".to_owned(),
    };
    TlsInfo { version, cipher }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_reports_missing_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let e = load(&cert, &key).unwrap_err();
        assert!(e.starts_with("tls_cert "), "{e}");
        std::fs::write(&cert, "not pem\n").unwrap();
        let e = load(&cert, &key).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
    }

    #[test]
    fn load_good_pair() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["mx.test".to_owned()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        load(&cert, &key).unwrap();
        // A key that does not match the certificate is refused.
        let other = rcgen::generate_simple_self_signed(vec!["x.test".to_owned()]).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        assert!(load(&cert, &key).is_err());
    }

    /// RSA (PKCS#1 and PKCS#8) and ECDSA (SEC1) keys as openssl writes them.
    #[test]
    fn openssl_key_formats() {
        if !crate::testskip::tool("openssl", &["version"], "openssl") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sh = |script: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        sh("openssl genrsa -traditional -out rsa1.pem 2048 2>/dev/null || openssl genrsa -out rsa1.pem 2048");
        sh("openssl pkcs8 -topk8 -nocrypt -in rsa1.pem -out rsa8.pem");
        sh("openssl ecparam -name prime256v1 -genkey -noout -out ec.pem");
        for key in ["rsa1.pem", "rsa8.pem", "ec.pem"] {
            sh(&format!(
                "openssl req -new -x509 -days 1 -key {key} -subj /CN=mx.test -out {key}.crt"
            ));
            load(&d.join(format!("{key}.crt")), &d.join(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        let rsa1 = std::fs::read_to_string(d.join("rsa1.pem")).unwrap();
        let ec = std::fs::read_to_string(d.join("ec.pem")).unwrap();
        assert!(rsa1.contains("BEGIN RSA PRIVATE KEY") || rsa1.contains("BEGIN PRIVATE KEY"));
        assert!(ec.contains("BEGIN EC PRIVATE KEY"), "{ec}");
    }
}
