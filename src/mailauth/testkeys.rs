//! DKIM test keys made with the openssl CLI (present on every test machine,
//! see .ci/run), for the unit tests of this module and for
//! tests/bench/mailauth_cost.rs (which includes this file).

use std::io::Write;
use std::process::{Command, Stdio};

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A new key: (private key PEM, public key for the DNS `p=` tag). RSA is
/// 2048 bits, PKCS#1 (`BEGIN RSA PRIVATE KEY`) when `pkcs1`, else PKCS#8;
/// Ed25519 is always PKCS#8.
pub(crate) fn openssl_key(ed25519: bool, pkcs1: bool) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.pem");
    let k = key.to_str().expect("path");
    if ed25519 {
        openssl(&["genpkey", "-algorithm", "ed25519", "-out", k]);
    } else if pkcs1 {
        // -traditional: PKCS#1 on OpenSSL 3.
        openssl(&["genrsa", "-traditional", "-out", k, "2048"]);
    } else {
        openssl(&[
            "genpkey",
            "-algorithm",
            "rsa",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            k,
        ]);
    }
    let pem = std::fs::read_to_string(&key).expect("key");
    let der = openssl(&["pkey", "-in", k, "-pubout", "-outform", "DER"]);
    // RFC 6376 3.6.1: RSA p= is the DER SubjectPublicKeyInfo; RFC 8463
    // 4.2: Ed25519 p= is the raw 32-byte key, the tail of the SPKI.
    let public = if ed25519 {
        der.get(der.len() - 32..).expect("ed25519 SPKI").to_vec()
    } else {
        der
    };
    (pem, base64(&public))
}

/// Standard base64 (coreutils' base64).
pub(crate) fn base64(data: &[u8]) -> String {
    let mut c = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("base64");
    c.stdin.take().expect("stdin").write_all(data).expect("write");
    String::from_utf8(c.wait_with_output().expect("base64").stdout).expect("utf8")
}
