//! DANE for SMTP (RFC 7672, on RFC 6698 and RFC 7671): which TLSA records
//! count, and a rustls certificate verifier that enforces them.
//!
//! The TLSA lookup itself (and whether its answer was validated) belongs to
//! `deliver::dns`; what to do when there is no usable answer belongs to
//! `tlspolicy::policy`. This module only answers "does this certificate
//! chain match this TLSA set, for these names?".
//!
//! RFC 7672 3.1: of the four certificate usages only DANE-TA(2) and
//! DANE-EE(3) are usable for SMTP (there is no agreed list of public CAs
//! for MTAs, so PKIX-TA(0) and PKIX-EE(1) cannot be checked); records with
//! an unknown usage, selector or matching type are unusable too. A
//! DANE-EE match authenticates the server by itself: names and validity
//! dates are ignored (RFC 7672 3.1.1). A DANE-TA match makes that
//! certificate the only trust anchor: the chain is then validated as usual
//! (dates included) and the server certificate must carry one of the
//! reference names (RFC 7672 3.1.2, 3.2.2).

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme,
};

use crate::deliver::dns::TlsaRecord;

/// The two certificate usages RFC 7672 3.1 allows for SMTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// DANE-TA(2): the record names a trust anchor in the server's chain.
    TrustAnchor,
    /// DANE-EE(3): the record names the server's own certificate or key.
    EndEntity,
}

/// What part of a certificate a record covers (RFC 6698 2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// 0: the whole DER certificate.
    Cert,
    /// 1: the DER SubjectPublicKeyInfo.
    Spki,
}

/// How a record's data is compared (RFC 6698 2.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matching {
    /// 0: the selected bytes themselves.
    Full,
    /// 1: their SHA-256.
    Sha256,
    /// 2: their SHA-512.
    Sha512,
}

/// A TLSA record usable for SMTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: Usage,
    pub selector: Selector,
    pub matching: Matching,
    pub data: Vec<u8>,
}

impl Tlsa {
    /// The record as usable for SMTP, or None (RFC 7672 3.1: PKIX-TA and
    /// PKIX-EE, unknown parameters, and digests of the wrong length, which
    /// can never match, are unusable).
    pub fn usable(r: &TlsaRecord) -> Option<Tlsa> {
        let usage = match r.usage {
            2 => Usage::TrustAnchor,
            3 => Usage::EndEntity,
            _ => return None,
        };
        let selector = match r.selector {
            0 => Selector::Cert,
            1 => Selector::Spki,
            _ => return None,
        };
        let matching = match (r.matching, r.data.len()) {
            (0, n) if n > 0 => Matching::Full,
            (1, 32) => Matching::Sha256,
            (2, 64) => Matching::Sha512,
            _ => return None,
        };
        Some(Tlsa {
            usage,
            selector,
            matching,
            data: r.data.clone(),
        })
    }

    /// Whether `der` (a certificate) matches this record's selector and
    /// matching type. Usage is the caller's business.
    pub fn matches(&self, der: &[u8]) -> bool {
        let selected = match self.selector {
            Selector::Cert => der.to_vec(),
            Selector::Spki => match spki(der) {
                Some(s) => s,
                None => return false,
            },
        };
        match self.matching {
            Matching::Full => selected == self.data,
            Matching::Sha256 => ring::digest::digest(&ring::digest::SHA256, &selected).as_ref() == self.data,
            Matching::Sha512 => ring::digest::digest(&ring::digest::SHA512, &selected).as_ref() == self.data,
        }
    }
}

impl fmt::Display for Tlsa {
    /// Presentation form, as in a zone file and the TLS-RPT policy string
    /// (RFC 8460 4.4: "the TLSA records as they appear in DNS").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = match self.usage {
            Usage::TrustAnchor => 2,
            Usage::EndEntity => 3,
        };
        let s = match self.selector {
            Selector::Cert => 0,
            Selector::Spki => 1,
        };
        let m = match self.matching {
            Matching::Full => 0,
            Matching::Sha256 => 1,
            Matching::Sha512 => 2,
        };
        write!(f, "{u} {s} {m} ")?;
        for b in &self.data {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The usable records of a validated TLSA RRset (RFC 7672 3.1). Empty when
/// every record was unusable: the server then gets mandatory but
/// unauthenticated TLS (RFC 7672 2.2 and 3.1, as Postfix's "encrypt").
pub fn usable_set(records: &[TlsaRecord]) -> Vec<Tlsa> {
    records.iter().filter_map(Tlsa::usable).collect()
}

/// The DER SubjectPublicKeyInfo of a DER certificate, with its SEQUENCE
/// header (RFC 6698 2.1.2 hashes the whole structure). webpki's parser
/// hands out its contents; the header is put back here.
fn spki(cert: &[u8]) -> Option<Vec<u8>> {
    let mut store = RootCertStore::empty();
    store.add(CertificateDer::from(cert.to_vec())).ok()?;
    let root = store.roots.first()?;
    der_sequence(root.subject_public_key_info.as_ref())
}

/// `inner` wrapped as a DER SEQUENCE (tag 0x30; X.690 8.1.3 length: short
/// form below 128, else 0x80|count then the big-endian length).
fn der_sequence(inner: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0x30];
    let n = inner.len();
    if n < 0x80 {
        out.push(u8::try_from(n).ok()?);
    } else {
        let bytes: Vec<u8> = n.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
        out.push(0x80 | u8::try_from(bytes.len()).ok()?);
        out.extend(bytes);
    }
    out.extend(inner);
    Some(out)
}

/// Why a chain did not satisfy the TLSA set, for the logs and for the
/// TLS-RPT result type (RFC 8460 4.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// No DANE-EE record matched the server certificate and no DANE-TA
    /// record matched any certificate of the chain.
    NoMatch,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::NoMatch => f.write_str("no TLSA record matches the certificate chain"),
        }
    }
}

impl std::error::Error for Mismatch {}

/// Enforces a usable TLSA set on the server's certificate chain.
#[derive(Debug)]
pub struct DaneVerifier {
    tlsa: Vec<Tlsa>,
    /// Reference identifiers for DANE-TA (RFC 7672 3.2.2): the TLSA base
    /// domain (the MX host, or its validated CNAME target), and normally
    /// the next-hop domain as well.
    names: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl DaneVerifier {
    /// A verifier for `tlsa` (already filtered by [`usable_set`]; an empty
    /// set matches nothing) accepting DANE-TA chains for any of `names`.
    pub fn new(tlsa: Vec<Tlsa>, names: Vec<String>) -> DaneVerifier {
        DaneVerifier {
            tlsa,
            names,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        // RFC 7672 3.1.1: DANE-EE ignores names, dates and the rest of the chain.
        if self
            .tlsa
            .iter()
            .any(|t| t.usage == Usage::EndEntity && t.matches(end_entity.as_ref()))
        {
            return Ok(());
        }
        // RFC 7672 3.1.2: a DANE-TA record names a certificate the server
        // sends in its chain; that certificate becomes the trust anchor.
        let ee = ParsedCertificate::try_from(end_entity)?;
        let mut last = None;
        for (i, ca) in intermediates.iter().enumerate() {
            if !self
                .tlsa
                .iter()
                .any(|t| t.usage == Usage::TrustAnchor && t.matches(ca.as_ref()))
            {
                continue;
            }
            let mut roots = RootCertStore::empty();
            if let Err(e) = roots.add(ca.clone()) {
                last = Some(e);
                continue;
            }
            let below = intermediates.get(..i).unwrap_or_default();
            let algs = self.provider.signature_verification_algorithms.all;
            if let Err(e) = verify_server_cert_signed_by_trust_anchor(&ee, &roots, below, now, algs) {
                last = Some(e);
                continue;
            }
            return self.check_names(&ee, server_name);
        }
        Err(last.unwrap_or_else(|| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                Mismatch::NoMatch,
            ))))
        }))
    }

    /// RFC 7672 3.2.2: the certificate must be valid for one of the
    /// reference identifiers (wildcards only as the whole left-most label,
    /// 3.2.3, which is what webpki accepts).
    fn check_names(
        &self,
        ee: &ParsedCertificate<'_>,
        server_name: &ServerName<'_>,
    ) -> Result<(), rustls::Error> {
        let mut last = None;
        let extra = match server_name {
            ServerName::DnsName(d) => Some(d.as_ref().to_owned()),
            _ => None,
        };
        for name in self.names.iter().chain(extra.iter()) {
            let Ok(n) = ServerName::try_from(name.trim_end_matches('.').to_owned()) else {
                continue;
            };
            match verify_server_name(ee, &n) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        )))
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, server_name, now)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client config for a DANE-authenticated hop. The caller connects
/// with the TLSA base domain as the server name, which rustls sends as SNI
/// (RFC 7672 8.1).
pub fn client_config(tlsa: Vec<Tlsa>, names: Vec<String>) -> Result<Arc<ClientConfig>, rustls::Error> {
    let verifier = Arc::new(DaneVerifier::new(tlsa, names));
    let provider = Arc::clone(&verifier.provider);
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, PublicKeyData};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ClientConnection, ServerConfig, ServerConnection};

    /// A CA, a leaf for `names` signed by it (optionally expired), and a
    /// self-signed leaf.
    struct Pki {
        ca: CertificateDer<'static>,
        leaf: CertificateDer<'static>,
        leaf_key: KeyPair,
    }

    fn pki(names: &[&str], expired: bool) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        if expired {
            p.not_before = rcgen::date_time_ymd(2001, 1, 1);
            p.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let leaf = p.signed_by(&leaf_key, &ca).unwrap();
        Pki {
            ca: ca.der().clone(),
            leaf: leaf.der().clone(),
            leaf_key,
        }
    }

    /// A real handshake in memory: a rustls server presenting `chain`,
    /// a client with the DANE config, SNI `sni`. Returns the client's
    /// verdict and the SNI the server saw.
    fn handshake(
        chain: Vec<CertificateDer<'static>>,
        key: &KeyPair,
        tlsa: Vec<Tlsa>,
        names: &[&str],
        sni: &str,
    ) -> (Result<(), rustls::Error>, Option<String>) {
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let server_cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        let client_cfg = client_config(tlsa, names.iter().map(|n| n.to_string()).collect()).unwrap();
        let mut client =
            ClientConnection::new(client_cfg, ServerName::try_from(sni.to_owned()).unwrap()).unwrap();
        let mut server = ServerConnection::new(Arc::new(server_cfg)).unwrap();
        for _ in 0..20 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                if let Err(e) = server
                    .read_tls(&mut &buf[..])
                    .map_err(|e| e.to_string())
                    .and_then(|_| {
                        server
                            .process_new_packets()
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    })
                {
                    return (Err(rustls::Error::General(e)), None);
                }
            }
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                client.read_tls(&mut &buf[..]).unwrap();
                if let Err(e) = client.process_new_packets() {
                    return (Err(e), server.server_name().map(str::to_owned));
                }
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                return (Ok(()), server.server_name().map(str::to_owned));
            }
        }
        panic!("handshake did not finish");
    }

    fn sha256(b: &[u8]) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, b).as_ref().to_vec()
    }

    fn sha512(b: &[u8]) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA512, b).as_ref().to_vec()
    }

    fn rec(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
        Tlsa::usable(&TlsaRecord {
            usage,
            selector,
            matching,
            data,
        })
        .unwrap()
    }

    #[test]
    fn usable_set_follows_rfc7672_3_1() {
        let r = |usage, selector, matching, len| TlsaRecord {
            usage,
            selector,
            matching,
            data: vec![1; len],
        };
        let all = [
            r(0, 0, 1, 32), // PKIX-TA: unusable for SMTP
            r(1, 1, 1, 32), // PKIX-EE: unusable for SMTP
            r(2, 0, 1, 32),
            r(3, 1, 2, 64),
            r(3, 1, 0, 91),
            r(4, 1, 1, 32),   // unknown usage
            r(3, 2, 1, 32),   // unknown selector
            r(3, 1, 3, 32),   // unknown matching type
            r(3, 1, 1, 31),   // SHA-256 of the wrong length
            r(3, 1, 2, 32),   // SHA-512 of the wrong length
            r(3, 1, 0, 0),    // empty full data
            r(255, 1, 1, 32), // private use
        ];
        let u = usable_set(&all);
        assert_eq!(u.len(), 3);
        assert_eq!(
            (u[0].usage, u[0].selector, u[0].matching),
            (Usage::TrustAnchor, Selector::Cert, Matching::Sha256)
        );
        assert_eq!(
            (u[1].usage, u[1].selector, u[1].matching),
            (Usage::EndEntity, Selector::Spki, Matching::Sha512)
        );
        assert_eq!(u[2].matching, Matching::Full);
        assert!(usable_set(&all[..2]).is_empty());
    }

    #[test]
    fn spki_is_the_whole_der_structure() {
        let k = KeyPair::generate().unwrap();
        let c = CertificateParams::new(vec!["a.test".to_owned()])
            .unwrap()
            .self_signed(&k)
            .unwrap();
        assert_eq!(spki(c.der()).unwrap(), k.subject_public_key_info());
        // An RSA-sized SPKI needs the long length form.
        assert_eq!(der_sequence(&[7; 300]).unwrap()[..4], [0x30, 0x82, 0x01, 0x2c]);
        assert_eq!(der_sequence(&[7; 200]).unwrap()[..3], [0x30, 0x81, 200]);
        assert_eq!(der_sequence(&[7; 5]).unwrap(), [0x30, 5, 7, 7, 7, 7, 7]);
    }

    #[test]
    fn presentation_form() {
        let t = rec(3, 1, 1, vec![0xab; 32]);
        assert_eq!(t.to_string(), format!("3 1 1 {}", "ab".repeat(32)));
    }

    #[test]
    fn dane_ee_matches_by_cert_and_by_spki_with_each_matching_type() {
        let p = pki(&["mx.example.test"], false);
        let spki = p.leaf_key.subject_public_key_info();
        let cases = [
            rec(3, 0, 0, p.leaf.to_vec()),
            rec(3, 0, 1, sha256(&p.leaf)),
            rec(3, 0, 2, sha512(&p.leaf)),
            rec(3, 1, 0, spki.clone()),
            rec(3, 1, 1, sha256(&spki)),
            rec(3, 1, 2, sha512(&spki)),
        ];
        for t in cases {
            let (r, sni) = handshake(
                vec![p.leaf.clone()],
                &p.leaf_key,
                vec![t.clone()],
                &[],
                "mx.example.test",
            );
            assert!(r.is_ok(), "{t}: {r:?}");
            // RFC 7672 8.1: SNI is sent, with the TLSA base domain.
            assert_eq!(sni.as_deref(), Some("mx.example.test"));
        }
    }

    #[test]
    fn dane_ee_ignores_names_and_expiry() {
        let p = pki(&["other.test"], true);
        let t = rec(3, 1, 1, sha256(&p.leaf_key.subject_public_key_info()));
        let (r, _) = handshake(
            vec![p.leaf.clone()],
            &p.leaf_key,
            vec![t],
            &["mx.example.test"],
            "mx.example.test",
        );
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn dane_ee_mismatch_fails() {
        let p = pki(&["mx.example.test"], false);
        let other = pki(&["mx.example.test"], false);
        for t in [
            rec(3, 1, 1, sha256(&other.leaf_key.subject_public_key_info())),
            rec(3, 0, 2, sha512(&other.leaf)),
            // A DANE-EE record for the CA certificate is not a TA record.
            rec(3, 0, 1, sha256(&p.ca)),
        ] {
            let (r, _) = handshake(
                vec![p.leaf.clone(), p.ca.clone()],
                &p.leaf_key,
                vec![t],
                &["mx.example.test"],
                "mx.example.test",
            );
            let e = r.unwrap_err();
            assert!(
                matches!(&e, rustls::Error::InvalidCertificate(CertificateError::Other(o)) if o.to_string().contains("no TLSA record")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn dane_ta_validates_the_chain_and_the_name() {
        let p = pki(&["mx.example.test"], false);
        let ta = rec(2, 0, 1, sha256(&p.ca));
        let chain = vec![p.leaf.clone(), p.ca.clone()];
        let (r, _) = handshake(
            chain.clone(),
            &p.leaf_key,
            vec![ta.clone()],
            &["mx.example.test", "example.test"],
            "mx.example.test",
        );
        assert!(r.is_ok(), "{r:?}");
        // The TA by its key.
        let ca_spki = spki(&p.ca).unwrap();
        let (r, _) = handshake(
            chain.clone(),
            &p.leaf_key,
            vec![rec(2, 1, 2, sha512(&ca_spki))],
            &["mx.example.test"],
            "mx.example.test",
        );
        assert!(r.is_ok(), "{r:?}");
        // The certificate names the next-hop domain only: still one of the
        // reference identifiers (RFC 7672 3.2.2).
        let q = pki(&["example.test"], false);
        let (r, _) = handshake(
            vec![q.leaf.clone(), q.ca.clone()],
            &q.leaf_key,
            vec![rec(2, 0, 1, sha256(&q.ca))],
            &["mx.example.test", "example.test"],
            "mx.example.test",
        );
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn dane_ta_with_the_wrong_name_fails() {
        let p = pki(&["mx.elsewhere.test"], false);
        let (r, _) = handshake(
            vec![p.leaf.clone(), p.ca.clone()],
            &p.leaf_key,
            vec![rec(2, 0, 1, sha256(&p.ca))],
            &["mx.example.test", "example.test"],
            "mx.example.test",
        );
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{e:?}"
        );
    }

    #[test]
    fn dane_ta_checks_expiry() {
        let p = pki(&["mx.example.test"], true);
        let (r, _) = handshake(
            vec![p.leaf.clone(), p.ca.clone()],
            &p.leaf_key,
            vec![rec(2, 0, 1, sha256(&p.ca))],
            &["mx.example.test"],
            "mx.example.test",
        );
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{e:?}"
        );
    }

    #[test]
    fn dane_ta_for_a_ca_that_did_not_sign_the_leaf_fails() {
        let p = pki(&["mx.example.test"], false);
        let other = pki(&["mx.example.test"], false);
        // The server sends the other CA too, but it did not issue the leaf.
        let (r, _) = handshake(
            vec![p.leaf.clone(), other.ca.clone()],
            &p.leaf_key,
            vec![rec(2, 0, 1, sha256(&other.ca))],
            &["mx.example.test"],
            "mx.example.test",
        );
        assert!(r.is_err());
        // And a TA record for a CA not in the chain at all.
        let (r, _) = handshake(
            vec![p.leaf.clone()],
            &p.leaf_key,
            vec![rec(2, 0, 1, sha256(&p.ca))],
            &["mx.example.test"],
            "mx.example.test",
        );
        assert!(r.is_err());
    }

    #[test]
    fn an_unusable_only_set_matches_nothing() {
        let p = pki(&["mx.example.test"], false);
        let unusable = [TlsaRecord {
            usage: 1,
            selector: 0,
            matching: 1,
            data: sha256(&p.leaf),
        }];
        let set = usable_set(&unusable);
        assert!(set.is_empty());
        let (r, _) = handshake(
            vec![p.leaf.clone()],
            &p.leaf_key,
            set,
            &["mx.example.test"],
            "mx.example.test",
        );
        assert!(r.is_err());
    }

    #[test]
    fn any_matching_record_of_a_set_is_enough() {
        let p = pki(&["mx.example.test"], false);
        let other = pki(&["mx.example.test"], false);
        let set = vec![
            rec(3, 1, 1, sha256(&other.leaf_key.subject_public_key_info())),
            rec(3, 1, 1, sha256(&p.leaf_key.subject_public_key_info())),
        ];
        let (r, _) = handshake(vec![p.leaf.clone()], &p.leaf_key, set, &[], "mx.example.test");
        assert!(r.is_ok(), "{r:?}");
    }
}
