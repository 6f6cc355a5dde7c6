//! DKIM private keys: read from PEM files, checked once (at `ternd -n`, at
//! start and on reload), then shared by every session.
//!
//! RSA keys come as PKCS#1 (`BEGIN RSA PRIVATE KEY`, `openssl genrsa`) or
//! PKCS#8 (`BEGIN PRIVATE KEY`, `openssl genpkey -algorithm rsa`); Ed25519
//! keys (RFC 8463) as PKCS#8 (`openssl genpkey -algorithm ed25519`). The
//! parsing of the key material and all signing is ring's, through mail-auth.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mail_auth::common::crypto::{Algorithm, DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::Writable;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// The algorithm of a key (`dkim_sign`'s last word); a configuration type.
pub use crate::config::KeyKind;

/// A key file that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub path: PathBuf,
    pub why: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.why)
    }
}

impl std::error::Error for KeyError {}

/// A loaded private key; cheap to clone (the key itself is shared).
#[derive(Clone)]
pub struct Key {
    kind: KeyKind,
    inner: Arc<DkimKey>,
}

impl fmt::Debug for Key {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.kind.as_str())
    }
}

impl Key {
    /// Reads and parses `path`. `kind` is what the configuration says; without
    /// it the kind is taken from the key itself.
    pub fn load(path: &Path, kind: Option<KeyKind>) -> Result<Key, KeyError> {
        let err = |why: String| KeyError {
            path: path.to_owned(),
            why,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        Key::from_pem(&pem, kind).map_err(err)
    }

    /// Parses a PEM private key (the first one in `pem`).
    pub fn from_pem(pem: &[u8], kind: Option<KeyKind>) -> Result<Key, String> {
        let der =
            PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no private key in PEM form ({e})"))?;
        match (der, kind) {
            (PrivateKeyDer::Pkcs1(_), Some(KeyKind::Ed25519)) => {
                Err("an RSA key (PKCS#1), but the entry says ed25519".to_owned())
            }
            (der @ PrivateKeyDer::Pkcs1(_), _) => rsa(der),
            (PrivateKeyDer::Pkcs8(p8), Some(KeyKind::Rsa)) => rsa(PrivateKeyDer::Pkcs8(p8)),
            (PrivateKeyDer::Pkcs8(p8), Some(KeyKind::Ed25519)) => ed25519(&p8),
            (PrivateKeyDer::Pkcs8(p8), None) => {
                let as_rsa = rsa(PrivateKeyDer::Pkcs8(p8.clone_key()));
                as_rsa.or_else(|rsa_why| {
                    ed25519(&p8).map_err(|ed_why| {
                        format!("a PKCS#8 key that is neither RSA ({rsa_why}) nor Ed25519 ({ed_why})")
                    })
                })
            }
            (PrivateKeyDer::Sec1(_), _) => {
                Err("an EC (SEC1) key; DKIM signs with RSA or Ed25519 keys".to_owned())
            }
            (_, _) => Err("an unsupported private key format".to_owned()),
        }
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// A handle for mail-auth's signer that shares this key.
    pub(crate) fn signing_key(&self) -> SharedKey {
        SharedKey(Arc::clone(&self.inner))
    }
}

fn rsa(der: PrivateKeyDer<'_>) -> Result<Key, String> {
    // ring refuses keys under 2048 bits, which RFC 8301 3.2 recommends anyway.
    let key = RsaKey::<Sha256>::from_key_der(der)
        .map_err(|e| format!("not a usable RSA key: {e} (RSA keys must be 2048 to 4096 bits)"))?;
    Ok(Key {
        kind: KeyKind::Rsa,
        inner: Arc::new(DkimKey::Rsa(key)),
    })
}

fn ed25519(p8: &PrivatePkcs8KeyDer<'_>) -> Result<Key, String> {
    // "maybe unchecked": OpenSSL writes PKCS#8 v1 Ed25519 keys, without the
    // public key that ring's strict parser wants.
    let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
        .map_err(|e| format!("not a usable Ed25519 key: {e}"))?;
    Ok(Key {
        kind: KeyKind::Ed25519,
        inner: Arc::new(DkimKey::Ed25519(key)),
    })
}

/// mail-auth's `DkimSigner` owns its key; this lets many signers (one per
/// message) share one parsed key instead of parsing it per message.
pub(crate) struct SharedKey(Arc<DkimKey>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn openssl_key(kind: KeyKind, pkcs1: bool) -> (String, String) {
        super::super::testkeys::openssl_key(kind == KeyKind::Ed25519, pkcs1)
    }

    #[test]
    fn loads_every_supported_format() {
        for (kind, pkcs1) in [
            (KeyKind::Rsa, true),
            (KeyKind::Rsa, false),
            (KeyKind::Ed25519, false),
        ] {
            let (pem, _) = openssl_key(kind, pkcs1);
            assert!(pem.contains(if pkcs1 {
                "BEGIN RSA PRIVATE KEY"
            } else {
                "BEGIN PRIVATE KEY"
            }));
            // Named and detected.
            assert_eq!(Key::from_pem(pem.as_bytes(), Some(kind)).unwrap().kind(), kind);
            assert_eq!(Key::from_pem(pem.as_bytes(), None).unwrap().kind(), kind);
        }
    }

    #[test]
    fn refuses_a_key_of_the_wrong_kind() {
        let (rsa1, _) = openssl_key(KeyKind::Rsa, true);
        let e = Key::from_pem(rsa1.as_bytes(), Some(KeyKind::Ed25519)).unwrap_err();
        assert!(e.contains("RSA key"), "{e}");
        let (ed, _) = openssl_key(KeyKind::Ed25519, false);
        let e = Key::from_pem(ed.as_bytes(), Some(KeyKind::Rsa)).unwrap_err();
        assert!(e.contains("RSA"), "{e}");
        let (rsa8, _) = openssl_key(KeyKind::Rsa, false);
        let e = Key::from_pem(rsa8.as_bytes(), Some(KeyKind::Ed25519)).unwrap_err();
        assert!(e.contains("Ed25519"), "{e}");
    }

    #[test]
    fn refuses_what_is_not_a_dkim_key() {
        assert!(Key::from_pem(b"hello", None)
            .unwrap_err()
            .contains("no private key"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ec.pem");
        let st = std::process::Command::new("openssl")
            .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        let e = Key::load(&p, None).unwrap_err();
        assert!(e.why.contains("EC (SEC1)"), "{e}");
        assert!(e.to_string().starts_with(p.to_str().unwrap()), "{e}");
        // A small RSA key: ring wants 2048 bits or more.
        let small = dir.path().join("small.pem");
        let st = std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&small)
            .arg("1024")
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let e = Key::load(&small, Some(KeyKind::Rsa)).unwrap_err();
        assert!(e.why.contains("2048"), "{e}");
        let e = Key::load(&dir.path().join("absent.pem"), None).unwrap_err();
        assert!(e.why.contains("No such file"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let (pem, _) = openssl_key(KeyKind::Ed25519, false);
        let k = Key::from_pem(pem.as_bytes(), None).unwrap();
        assert_eq!(format!("{k:?}"), "Key(ed25519)");
    }
}
