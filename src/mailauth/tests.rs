//! The module end to end: signatures checked by an independent verifier
//! (Debian's dkimpy, python3-dkim), messages signed by dkimpy checked by
//! us, and SPF, DKIM and DMARC through a real resolver talking to a DNS
//! server on loopback, down to the Authentication-Results field.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::check::to_crlf;
use super::keys::tests::openssl_key;
use super::results::{strip_own_results, DmarcPolicy, Outcome};
use super::testdns::{TestDns, Zone};
use super::*;

const ME: &str = "mx.test.example";

/// The interpreter that has dkimpy: Debian's /usr/bin/python3 (a python3
/// earlier on PATH, pyenv's for one, may lack Debian's modules). Missing:
/// a visible skip (crate::testskip), a failure under CI, whose .ci/run installs it.
fn dkimpy() -> Option<&'static str> {
    crate::testskip::python("dkim, nacl", "python3-dkim")
}

/// Runs a Python script with dkimpy; returns its stdout.
fn python(py: &str, script: &str, args: &[&Path]) -> String {
    let out = std::process::Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// dkimpy verifies every DKIM-Signature of argv[1] with the keys of the
/// records file argv[2] ("NAME TXT" lines) through its dnsfunc hook; prints
/// one line per signature: "True|False d=... s=... a=... c=... h=...".
const DKIMPY_VERIFY: &str = r#"
import sys, dkim
msg = open(sys.argv[1], 'rb').read()
recs = {}
for line in open(sys.argv[2]):
    name, txt = line.rstrip('\n').split(' ', 1)
    recs[name.lower()] = txt
def dnsfunc(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    return recs.get(n.rstrip('.').lower())
headers, body = dkim.rfc822_parse(msg)
sigs = [v for (k, v) in headers if k.lower() == b'dkim-signature']
for i, v in enumerate(sigs):
    tags = dkim.util.parse_tag_value(v)
    try:
        ok = dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc)
    except dkim.ValidationError:
        ok = False
    h = b''.join(tags[b'h'].split()).decode()
    print(ok, 'd=' + tags[b'd'].decode(), 's=' + tags[b's'].decode(),
          'a=' + tags[b'a'].decode(), 'c=' + tags.get(b'c', b'simple').decode(),
          'h=' + h.lower())
"#;

/// dkimpy signs argv[1] (d, s, key file, algorithm, canonicalization from
/// argv[2..]) and prints the DKIM-Signature field.
const DKIMPY_SIGN: &str = r#"
import sys, dkim
msg = open(sys.argv[1], 'rb').read()
d, s, keyfile, alg, canon = sys.argv[2:7]
key = open(keyfile, 'rb').read().strip()
h, b = canon.split('/')
sig = dkim.sign(msg, s.encode(), d.encode(), key,
                canonicalize=(h.encode(), b.encode()),
                signature_algorithm=alg.encode(),
                include_headers=[b'from', b'to', b'subject', b'date'])
sys.stdout.write(sig.decode())
"#;

/// A message as tern stores it: LF line ends, folded and odd whitespace,
/// 8-bit text, and whitespace-only lines at the end of the body (which
/// relaxed canonicalization ignores).
const MESSAGE: &str = "Received: from client (client [192.0.2.1])\n\tby mx.test.example\n\
From: Alice <alice@example.org>\n\
To: bob@example.net\n\
Subject:  a long   subject\n\tfolded  onto two lines\n\
Date: Thu, 04 Dec 2026 10:00:00 +0000\n\
Message-ID: <1@example.org>\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=utf-8\n\
List-Id: Test list <list.example.org>\n\
X-Not-Signed: yes\n\
\n\
Bonjour caf\u{e9}  with  spaces   \n\
\n\
 an indented line\n\
. a line that was dot-stuffed on the wire\n\
 \n\
\t\n";

struct Keys {
    dir: tempfile::TempDir,
    /// (selector, kind, public key base64, private PEM path)
    keys: Vec<(String, KeyKind, String, std::path::PathBuf)>,
}

fn keys(domain_selectors: &[(&str, KeyKind, bool)]) -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    for (sel, kind, pkcs1) in domain_selectors {
        let (pem, public) = openssl_key(*kind, *pkcs1);
        let path = dir.path().join(format!("{sel}.pem"));
        std::fs::write(&path, pem).unwrap();
        keys.push((sel.to_string(), *kind, public, path));
    }
    Keys { dir, keys }
}

impl Keys {
    fn record(&self, i: usize) -> String {
        let (_, kind, public, _) = &self.keys[i];
        format!("v=DKIM1; k={}; p={public}", kind.as_str())
    }

    fn signers(&self, domain: &str) -> Signers {
        let entries: Vec<SignEntry> = self
            .keys
            .iter()
            .map(|(sel, kind, _, path)| {
                SignEntry::parse(&format!("{domain} {sel} {} {}", path.display(), kind.as_str())).unwrap()
            })
            .collect();
        Signers::load(&entries).unwrap()
    }

    /// The records file for DKIMPY_VERIFY.
    fn records_file(&self, domain: &str) -> std::path::PathBuf {
        let p = self.dir.path().join("records");
        let mut s = String::new();
        for (i, (sel, ..)) in self.keys.iter().enumerate() {
            s.push_str(&format!("{sel}._domainkey.{domain} {}\n", self.record(i)));
        }
        std::fs::write(&p, s).unwrap();
        p
    }
}

/// What goes on the wire: the signature fields prepended to the stored
/// message, in CRLF form (as tern's SMTP client sends it).
fn wire(signed: &Signed, stored: &str) -> Vec<u8> {
    to_crlf(format!("{}{stored}", signed.fields).as_bytes()).into_owned()
}

fn dkimpy_verify(py: &str, k: &Keys, domain: &str, message: &[u8]) -> Vec<String> {
    let msg = k.dir.path().join("msg.eml");
    std::fs::write(&msg, message).unwrap();
    let recs = k.records_file(domain);
    python(py, DKIMPY_VERIFY, &[&msg, &recs])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn dkimpy_verifies_our_rsa_and_ed25519_signatures() {
    let Some(py) = dkimpy() else { return };
    let k = keys(&[
        ("rsa1", KeyKind::Rsa, true),
        ("rsa8", KeyKind::Rsa, false),
        ("ed", KeyKind::Ed25519, false),
    ]);
    let signers = k.signers("example.org");
    let signed = signers.sign(MESSAGE.as_bytes()).unwrap().unwrap();
    assert_eq!(signed.domain, "example.org");
    assert_eq!(signed.selectors, ["rsa1", "rsa8", "ed"]);
    assert_eq!(signed.fields.matches("DKIM-Signature:").count(), 3);
    assert!(!signed.fields.contains('\r'), "stored form has LF line ends");
    assert!(signed.fields.lines().all(|l| l.len() <= 78), "{}", signed.fields);

    let lines = dkimpy_verify(py, &k, "example.org", &wire(&signed, MESSAGE));
    assert_eq!(lines.len(), 3, "{lines:?}");
    // Header order: the fields are prepended in selector order.
    for (line, (sel, alg)) in lines.iter().zip([
        ("rsa1", "rsa-sha256"),
        ("rsa8", "rsa-sha256"),
        ("ed", "ed25519-sha256"),
    ]) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[0], "True", "dkimpy rejects {line}");
        assert_eq!(f[1], "d=example.org");
        assert_eq!(f[2], format!("s={sel}"));
        assert_eq!(f[3], format!("a={alg}"));
        assert_eq!(f[4], "c=relaxed/relaxed");
        let h: Vec<&str> = f[5].trim_start_matches("h=").split(':').collect();
        // From oversigned: listed once more than it occurs.
        assert_eq!(h.iter().filter(|x| **x == "from").count(), 2, "{h:?}");
        for present in [
            "to",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
            "list-id",
        ] {
            assert_eq!(
                h.iter().filter(|x| **x == present).count(),
                1,
                "{present} in {h:?}"
            );
        }
        for absent in ["cc", "reply-to", "references", "x-not-signed", "received"] {
            assert!(!h.contains(&absent), "{absent} in {h:?}");
        }
    }

    // The verifier is not a rubber stamp: one changed body byte, and every
    // signature fails; an added second From: breaks them too (oversigning).
    let tampered = wire(&signed, &MESSAGE.replace("Bonjour", "Bonsoir"));
    for l in dkimpy_verify(py, &k, "example.org", &tampered) {
        assert!(l.starts_with("False"), "{l}");
    }
    let two_froms = MESSAGE.replace("To: bob", "From: mallory@example.org\nTo: bob");
    for l in dkimpy_verify(py, &k, "example.org", &wire(&signed, &two_froms)) {
        assert!(l.starts_with("False"), "{l}");
    }
    // Relaxed canonicalization: refolding and trailing space are harmless.
    let refolded = MESSAGE.replace(
        "Subject:  a long   subject\n\tfolded",
        "Subject: a long subject\n folded",
    );
    let refolded = refolded.replace("spaces   \n", "spaces\n");
    for l in dkimpy_verify(py, &k, "example.org", &wire(&signed, &refolded)) {
        assert!(l.starts_with("True"), "{l}");
    }
}

/// OpenDKIM (Debian's opendkim, the milter) in its test mode, `-t FILE`,
/// with the public keys from a file (`TestPublicKeys`) instead of DNS. Its
/// opendkim-testmsg has no such hook and always asks live DNS.
/// Missing: a visible skip, a failure under CI.
fn opendkim() -> Option<&'static str> {
    let bin = "/usr/sbin/opendkim";
    crate::testskip::file(bin, "opendkim").then_some(bin)
}

/// OpenDKIM's verdict on `message` (one line per signature it reports).
fn opendkim_verify(bin: &str, k: &Keys, domain: &str, message: &[u8]) -> String {
    let dir = k.dir.path();
    let msg = dir.join("od.eml");
    std::fs::write(&msg, message).unwrap();
    let recs = k.records_file(domain);
    let conf = dir.join("opendkim.conf");
    std::fs::write(
        &conf,
        format!(
            "TestPublicKeys {}\nSyslog no\nMode v\nLogWhy yes\n",
            recs.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .arg("-x")
        .arg(&conf)
        .arg("-t")
        .arg(&msg)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn opendkim_verifies_our_rsa_and_ed25519_signatures() {
    let Some(bin) = opendkim() else { return };
    for (sel, kind, pkcs1) in [
        ("rsa", KeyKind::Rsa, true),
        ("rsa8", KeyKind::Rsa, false),
        ("ed", KeyKind::Ed25519, false),
    ] {
        let k = keys(&[(sel, kind, pkcs1)]);
        let signed = k
            .signers("example.org")
            .sign(MESSAGE.as_bytes())
            .unwrap()
            .unwrap();
        let out = opendkim_verify(bin, &k, "example.org", &wire(&signed, MESSAGE));
        assert!(
            out.contains(&format!("verification (s={sel}, d=example.org")) && out.contains("succeeded"),
            "{sel}: {out}"
        );
        let tampered = wire(&signed, &MESSAGE.replace("Bonjour", "Bonsoir"));
        let out = opendkim_verify(bin, &k, "example.org", &tampered);
        assert!(
            out.contains("failed") && !out.contains("succeeded"),
            "{sel}: {out}"
        );
    }
}

#[test]
fn signing_domain_is_the_from_domain_or_its_parent() {
    let Some(py) = dkimpy() else { return };
    let k = keys(&[("s", KeyKind::Ed25519, false)]);
    let signers = k.signers("example.org");
    let sub = MESSAGE.replace("alice@example.org", "alice@mail.Example.org");
    let signed = signers.sign(sub.as_bytes()).unwrap().unwrap();
    assert_eq!(signed.domain, "example.org");
    let lines = dkimpy_verify(py, &k, "example.org", &wire(&signed, &sub));
    assert!(lines[0].starts_with("True d=example.org"), "{lines:?}");

    // No key for the From: domain, or no From: at all: no signature, even
    // when the envelope sender's domain has a key.
    let other = MESSAGE.replace("alice@example.org", "alice@example.com");
    assert_eq!(signers.sign(other.as_bytes()).unwrap(), None);
    let no_from = MESSAGE.replace("From: Alice <alice@example.org>\n", "");
    assert_eq!(signers.sign(no_from.as_bytes()).unwrap(), None);
    assert_eq!(Signers::default().sign(MESSAGE.as_bytes()).unwrap(), None);
}

/// Reads `data` a few bytes at a time (sizes cycling 1..=13), as a slow
/// pipe would deliver it; then, when `fail`, an error.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
    fail: bool,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.data.is_empty() && self.fail {
            return Err(std::io::Error::other("disk on fire"));
        }
        self.step = self.step % 13 + 1;
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn tag<'a>(fields: &'a str, name: &str) -> &'a str {
    let unfolded = fields.split(';').map(str::trim);
    for t in unfolded {
        if let Some(v) = t.strip_prefix(name).and_then(|v| v.strip_prefix('=')) {
            return v;
        }
    }
    panic!("no {name}= in {fields}")
}

#[test]
fn signing_streams_the_message_in_any_chunks_and_lf_or_crlf() {
    let k = keys(&[("s", KeyKind::Ed25519, false)]);
    let signers = k.signers("example.org");
    let whole = signers.sign(MESSAGE.as_bytes()).unwrap().unwrap();
    let trickled = signers
        .sign(Trickle {
            data: MESSAGE.as_bytes(),
            step: 0,
            fail: false,
        })
        .unwrap()
        .unwrap();
    let wire = to_crlf(MESSAGE.as_bytes()).into_owned();
    let crlf = signers.sign(wire.as_slice()).unwrap().unwrap();
    // Every read ends between a CR and its LF.
    struct SplitCrlf(std::collections::VecDeque<Vec<u8>>);
    impl std::io::Read for SplitCrlf {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some(c) = self.0.pop_front() else { return Ok(0) };
            assert!(c.len() <= buf.len());
            buf[..c.len()].copy_from_slice(&c);
            Ok(c.len())
        }
    }
    let chunks = wire
        .split_inclusive(|&b| b == b'\r')
        .map(<[u8]>::to_vec)
        .collect();
    let split = signers.sign(SplitCrlf(chunks)).unwrap().unwrap();
    for other in [&trickled, &crlf, &split] {
        assert_eq!(tag(&other.fields, "bh"), tag(&whole.fields, "bh"));
        assert_eq!(tag(&other.fields, "h"), tag(&whole.fields, "h"));
    }
}

#[test]
fn a_read_error_is_a_sign_error() {
    let k = keys(&[("s", KeyKind::Ed25519, false)]);
    let signers = k.signers("example.org");
    // In the header section, and in the body.
    let m = MESSAGE.as_bytes();
    for data in [&m[..40], m] {
        let e = signers
            .sign(Trickle {
                data,
                step: 0,
                fail: true,
            })
            .unwrap_err();
        assert!(matches!(e, SignError::Read(_)), "{e}");
    }
}

// ---- checking inbound mail through DNS on loopback ----

fn checker(dns: &TestDns, deadline: Duration) -> Checker {
    Checker::new(ME, &[dns.addr], Duration::from_millis(500), deadline).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The zone of the SPF and DMARC tests. 192.0.2.1 is the legitimate
/// sender, 198.51.100.9 a stranger.
fn spf_zone() -> Zone {
    Zone::new()
        .txt("pass.example", "v=spf1 ip4:192.0.2.1 -all")
        .txt("fail.example", "v=spf1 -all")
        .txt("soft.example", "v=spf1 ~all")
        .addr("none.example", "192.0.2.80")
        // Permanent errors (RFC 7208 4.6, 5.2): a malformed term, an
        // include: of a domain without a record. (mail-auth is more lenient
        // than RFC 7208 in places: it skips unknown mechanisms,
        // "frobnicate:x", like unknown modifiers, accepts
        // "ip4:192.0.2.1/99", and of two SPF records uses the first where
        // 4.5 says permerror.)
        .txt("perm.example", "v=spf1 ip4 -all")
        .txt("perm2.example", "v=spf1 include:none.example -all")
        // include: of a record that ends in redirect= (mail-auth before 0.7.3
        // lost the redirect and answered fail).
        .txt("inc.example", "v=spf1 include:_spf.inc.example -all")
        .txt("_spf.inc.example", "v=spf1 redirect=_real.inc.example")
        .txt("_real.inc.example", "v=spf1 ip4:192.0.2.1 -all")
        .txt("mxrec.example", "v=spf1 mx -all")
        .mx("mxrec.example", 10, "mail.mxrec.example")
        .addr("mail.mxrec.example", "192.0.2.1")
        .txt("mx.pass.example", "v=spf1 a -all")
        .addr("mx.pass.example", "192.0.2.1")
        .blackhole("slow.example")
        .blackhole("_dmarc.slow.example")
}

#[test]
fn spf_results_for_each_kind_of_record() {
    let dns = TestDns::start(spf_zone());
    let c = checker(&dns, Duration::from_secs(5));
    let good = ip("192.0.2.1");
    let bad = ip("198.51.100.9");
    for (sender, client, want) in [
        ("a@pass.example", good, Outcome::Pass),
        ("a@pass.example", bad, Outcome::Fail),
        ("a@fail.example", good, Outcome::Fail),
        ("a@soft.example", good, Outcome::SoftFail),
        ("a@none.example", good, Outcome::None),
        ("a@nxdomain.example", good, Outcome::None),
        ("a@perm.example", good, Outcome::PermError),
        ("a@perm2.example", good, Outcome::PermError),
        ("a@inc.example", good, Outcome::Pass),
        ("a@inc.example", bad, Outcome::Fail),
        ("a@mxrec.example", good, Outcome::Pass),
        ("a@mxrec.example", bad, Outcome::Fail),
    ] {
        let r = c.spf(client, "mx.pass.example", Some(sender));
        assert_eq!(r.mail_from.result, want, "{sender} from {client}");
        assert_eq!(r.mail_from.identity, sender);
    }
    // HELO identity (RFC 7208 2.3).
    let r = c.spf(good, "mx.pass.example", Some("a@soft.example"));
    assert_eq!(r.helo.result, Outcome::Pass);
    assert_eq!(c.spf(bad, "mx.pass.example", None).helo.result, Outcome::Fail);
    let r = c.spf(good, "[192.0.2.1]", Some("a@pass.example"));
    assert_eq!(r.helo.result, Outcome::None, "an address literal is not checked");
    assert_eq!(r.mail_from.result, Outcome::Pass);
    // Null sender: MAIL FROM is postmaster@HELO (RFC 7208 2.4).
    let r = c.spf(bad, "mx.pass.example", None);
    assert_eq!(r.mail_from.result, Outcome::Fail);
    assert_eq!(r.mail_from.identity, "postmaster@mx.pass.example");
    assert_eq!(r.mail_from.domain, "mx.pass.example");
    // spf_reject = fail rejects either identity's fail, nothing else.
    let policy = Policy {
        dmarc_reject: false,
        spf_reject: SpfReject::Fail,
    };
    assert!(matches!(
        c.spf(bad, "h.none.example", Some("a@pass.example"))
            .verdict(&policy),
        Verdict::Reject(Rejection::Spf { .. })
    ));
    assert_eq!(
        c.spf(good, "h.none.example", Some("a@soft.example"))
            .verdict(&policy),
        Verdict::Accept
    );
}

#[test]
fn session_threads_share_one_checker() {
    let dns = TestDns::start(spf_zone());
    let c = std::sync::Arc::new(checker(&dns, Duration::from_secs(5)));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                let (client, want) = if i % 2 == 0 {
                    (ip("192.0.2.1"), Outcome::Pass)
                } else {
                    (ip("198.51.100.9"), Outcome::Fail)
                };
                for _ in 0..20 {
                    let r = c.spf(client, "mx.pass.example", Some("a@inc.example"));
                    assert_eq!(r.mail_from.result, want);
                    assert_eq!(r.helo.result, want);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn an_idn_sender_domain_is_looked_up_as_its_a_label() {
    let dns = TestDns::start(Zone::new().txt("xn--caf-dma.example", "v=spf1 ip4:192.0.2.1 -all"));
    let c = checker(&dns, Duration::from_secs(5));
    let r = c.spf(
        ip("192.0.2.1"),
        "h.caf\u{e9}.example",
        Some("a@caf\u{e9}.example"),
    );
    assert_eq!(r.mail_from.result, Outcome::Pass);
    assert_eq!(r.mail_from.domain, "xn--caf-dma.example");
}

#[test]
fn a_dns_time_out_is_a_temperror_within_the_deadline_and_never_rejects() {
    let dns = TestDns::start(spf_zone());
    let c = checker(&dns, Duration::from_millis(1500));
    let t = Instant::now();
    let r = c.spf(ip("192.0.2.1"), "mx.pass.example", Some("a@slow.example"));
    assert!(t.elapsed() < Duration::from_secs(4), "took {:?}", t.elapsed());
    assert_eq!(r.mail_from.result, Outcome::TempError);
    assert_eq!(r.helo.result, Outcome::Pass);
    let strict = Policy {
        dmarc_reject: true,
        spf_reject: SpfReject::Fail,
    };
    assert_eq!(r.verdict(&strict), Verdict::Accept);

    // The deadline cuts a check short even when the per-query time-out
    // (here 5 s) would wait longer.
    let short = Checker::new(
        ME,
        &[dns.addr],
        Duration::from_secs(5),
        Duration::from_millis(600),
    )
    .unwrap();
    let t = Instant::now();
    let r2 = short.spf(ip("192.0.2.1"), "mx.pass.example", Some("a@slow.example"));
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    assert_eq!(r2.mail_from.result, Outcome::TempError);
    assert_eq!(r2.mail_from.note, Some("time-out"));

    // DMARC whose record lookup hangs: temperror, accepted.
    let msg = MESSAGE.replace("alice@example.org", "alice@slow.example");
    let a = c.message(&r, msg.as_bytes());
    assert_eq!(a.dmarc.result, Outcome::TempError, "{a:?}");
    assert_eq!(a.verdict(&strict), Verdict::Accept);
    assert!(a.value(ME).contains("spf=temperror"), "{}", a.value(ME));
}

/// A zone with example.org's DKIM keys and DMARC record, and SPF for it.
fn dkim_zone(k: &Keys, dmarc: &str) -> Zone {
    let mut z = spf_zone()
        .txt("example.org", "v=spf1 ip4:192.0.2.1 -all")
        .txt("bounces.example.org", "v=spf1 ip4:192.0.2.1 -all")
        .txt("_dmarc.example.org", dmarc);
    for (i, (sel, ..)) in k.keys.iter().enumerate() {
        z = z.txt(&format!("{sel}._domainkey.example.org"), &k.record(i));
    }
    z
}

/// example.org with `keys` and DMARC record `dmarc` on a DNS server on
/// loopback, and a checker asking it.
struct Site {
    k: Keys,
    dns: TestDns,
    c: Checker,
}

fn site(key_list: &[(&str, KeyKind, bool)], dmarc: &str) -> Site {
    let k = keys(key_list);
    let dns = TestDns::start(dkim_zone(&k, dmarc));
    let c = checker(&dns, Duration::from_secs(5));
    Site { k, dns, c }
}

impl Site {
    /// MESSAGE signed with every key, in stored form.
    fn signed(&self) -> String {
        let s = self.k.signers("example.org");
        let signed = s.sign(MESSAGE.as_bytes()).unwrap().unwrap();
        format!("{}{MESSAGE}", signed.fields)
    }
}

/// The resinfos of an Authentication-Results value, split on ";" outside
/// comments, each split into its words.
fn resinfos(value: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ';' if depth == 0 => {
                out.push(cur.split_whitespace().map(str::to_owned).collect());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur.split_whitespace().map(str::to_owned).collect());
    out
}

#[test]
fn authentication_results_of_a_pass_field_by_field() {
    let s = site(
        &[("rsa", KeyKind::Rsa, true), ("ed", KeyKind::Ed25519, false)],
        "v=DMARC1; p=reject",
    );
    let (c, stored) = (&s.c, s.signed());
    let spf = c.spf(ip("192.0.2.1"), "mx.pass.example", Some("alice@example.org"));
    let r = c.message(&spf, stored.as_bytes());
    let v = r.value(ME);
    let parts = resinfos(&v);
    assert_eq!(parts.len(), 6, "{v}");
    assert_eq!(parts[0], [ME]);
    assert_eq!(parts[1], ["spf=pass", "smtp.mailfrom=alice@example.org"]);
    assert_eq!(parts[2], ["spf=pass", "smtp.helo=mx.pass.example"]);
    for (p, sel) in parts[3..5].iter().zip(["rsa", "ed"]) {
        assert_eq!(p[0], "dkim=pass", "{v}");
        assert_eq!(p[1], "header.d=example.org");
        assert_eq!(p[2], format!("header.s={sel}"));
        let b = p[3].strip_prefix("header.b=").unwrap();
        assert_eq!(b.len(), 8);
        assert!(stored.contains(&format!("b={b}")), "header.b is the start of b=");
    }
    assert_eq!(parts[5], ["dmarc=pass", "(p=reject)", "header.from=example.org"]);
    let strict = Policy {
        dmarc_reject: true,
        spf_reject: SpfReject::Fail,
    };
    assert_eq!(r.verdict(&strict), Verdict::Accept);
    // The stored field: the same, one method per folded line.
    let field = r.field(ME);
    assert!(
        field.starts_with(&format!("Authentication-Results: {ME};\n\tspf=pass")),
        "{field}"
    );
    assert_eq!(
        field.replace(";\n\t", "; "),
        format!("Authentication-Results: {v}\n")
    );

    // Mail from a subdomain of example.org: SPF passes for it, which
    // aligns with From: example.org under relaxed alignment (no DKIM).
    let unsigned_spf = c.spf(ip("192.0.2.1"), "mx.pass.example", Some("b@bounces.example.org"));
    let r = c.message(&unsigned_spf, MESSAGE.as_bytes());
    assert_eq!(r.dkim, Vec::new());
    assert_eq!(r.dmarc.result, Outcome::Pass);
    assert!(r.value(ME).contains("; dkim=none; dmarc=pass"), "{}", r.value(ME));
}

#[test]
fn authentication_results_of_a_fail_and_the_dmarc_policy() {
    let s = site(&[("ed", KeyKind::Ed25519, false)], "v=DMARC1; p=reject; sp=none");
    let c = &s.c;
    // Forged: signed, then the body changed; sent from a stranger's
    // address with an envelope sender of a domain that fails SPF.
    let forged = s.signed().replace("Bonjour", "Pay now");
    let spf = c.spf(ip("198.51.100.9"), "evil.invalid", Some("x@fail.example"));
    let r = c.message(&spf, forged.as_bytes());
    let v = r.value(ME);
    let parts = resinfos(&v);
    assert_eq!(parts[1], ["spf=fail", "smtp.mailfrom=x@fail.example"], "{v}");
    assert_eq!(parts[2][0], "spf=none", "{v}");
    assert_eq!(parts[2].last().unwrap(), "smtp.helo=evil.invalid");
    assert_eq!(
        parts[3][..6],
        ["dkim=fail", "(body", "hash", "did", "not", "verify)"],
        "{v}"
    );
    assert_eq!(parts[3][6], "header.d=example.org");
    assert_eq!(parts[3][7], "header.s=ed");
    assert_eq!(parts[4], ["dmarc=fail", "(p=reject)", "header.from=example.org"]);
    assert_eq!(r.dmarc.policy, Some(DmarcPolicy::Reject));

    let off = Policy::default();
    let dmarc_only = Policy {
        dmarc_reject: true,
        spf_reject: SpfReject::None,
    };
    assert_eq!(r.verdict(&off), Verdict::Accept, "annotate only by default");
    assert_eq!(
        r.verdict(&dmarc_only),
        Verdict::Reject(Rejection::Dmarc {
            domain: "example.org".into()
        })
    );

    // sp=none covers subdomains: a failing From: sub.example.org is not
    // rejected even with dmarc_reject.
    let sub = MESSAGE.replace("alice@example.org", "alice@sub.example.org");
    let r = c.message(&spf, sub.as_bytes());
    assert_eq!(r.dmarc.result, Outcome::Fail, "{}", r.value(ME));
    assert_eq!(r.dmarc.policy, Some(DmarcPolicy::None));
    assert_eq!(r.verdict(&dmarc_only), Verdict::Accept);

    // No DMARC record at all: dmarc=none.
    let r = c.message(
        &spf,
        MESSAGE.replace("alice@example.org", "a@soft.example").as_bytes(),
    );
    assert_eq!(r.dmarc.result, Outcome::None);
    assert!(
        r.value(ME).ends_with("dmarc=none header.from=soft.example"),
        "{}",
        r.value(ME)
    );
}

#[test]
fn dmarc_testing_mode_is_not_enforced() {
    let s = site(&[("ed", KeyKind::Ed25519, false)], "v=DMARC1; p=reject; t=y");
    let c = &s.c;
    let spf = c.spf(ip("198.51.100.9"), "evil.invalid", Some("x@fail.example"));
    let r = c.message(&spf, MESSAGE.as_bytes());
    assert_eq!(r.dmarc.result, Outcome::Fail);
    assert!(r.dmarc.testing);
    // RFC 9989 4.7: under t=y a receiver applies the next less strict
    // policy, quarantine for reject.
    assert!(
        r.value(ME).contains("dmarc=fail (p=quarantine t=y)"),
        "{}",
        r.value(ME)
    );
    let strict = Policy {
        dmarc_reject: true,
        spf_reject: SpfReject::None,
    };
    assert_eq!(r.verdict(&strict), Verdict::Accept);
}

#[test]
fn mail_signed_by_dkimpy_verifies() {
    let Some(py) = dkimpy() else { return };
    let k = keys(&[("rsa", KeyKind::Rsa, true), ("ed", KeyKind::Ed25519, false)]);
    // dkimpy's Ed25519 key: the base64 32-byte seed (the end of PKCS#8).
    let ed_pem = k.keys[1].3.clone();
    let der = std::process::Command::new("openssl")
        .args(["pkey", "-outform", "DER", "-in"])
        .arg(&ed_pem)
        .output()
        .unwrap()
        .stdout;
    let seed = k.dir.path().join("ed.seed");
    std::fs::write(&seed, testkeys::base64(&der[der.len() - 32..])).unwrap();

    let dns = TestDns::start(dkim_zone(&k, "v=DMARC1; p=reject"));
    let c = checker(&dns, Duration::from_secs(5));
    let spf = c.spf(
        ip("198.51.100.9"),
        "list.example.net",
        Some("bounce@list.example.net"),
    );
    // dkimpy signs the wire (CRLF) form; tern stores LF and checks that.
    let msg = k.dir.path().join("in.eml");
    std::fs::write(&msg, to_crlf(MESSAGE.as_bytes())).unwrap();
    let rsa_key = k.keys[0].3.clone();
    for (sel, key, alg, canon) in [
        ("rsa", &rsa_key, "rsa-sha256", "relaxed/simple"),
        ("rsa", &rsa_key, "rsa-sha256", "simple/simple"),
        ("ed", &seed, "ed25519-sha256", "relaxed/relaxed"),
    ] {
        let sig = python(
            py,
            DKIMPY_SIGN,
            &[
                &msg,
                Path::new("example.org"),
                Path::new(sel),
                key,
                Path::new(alg),
                Path::new(canon),
            ],
        );
        let stored = format!("{}{MESSAGE}", sig.replace("\r\n", "\n"));
        let r = c.message(&spf, stored.as_bytes());
        assert_eq!(r.dkim.len(), 1, "{}", r.value(ME));
        assert_eq!(r.dkim[0].result, Outcome::Pass, "{alg} {canon}: {}", r.value(ME));
        assert_eq!(r.dkim[0].selector, sel);
        // DKIM aligns with From: example.org, so DMARC passes although SPF
        // (a mailing list's bounce address) does not align.
        assert_eq!(r.dmarc.result, Outcome::Pass, "{}", r.value(ME));
        // Changed in transit: fails.
        let r = c.message(&spf, stored.replace("Bonjour", "Hello").as_bytes());
        assert_eq!(r.dkim[0].result, Outcome::Fail, "{}", r.value(ME));
        assert_eq!(r.dmarc.result, Outcome::Fail);
    }
}

#[test]
fn answers_are_cached_for_their_ttl() {
    let s = site(&[("ed", KeyKind::Ed25519, false)], "v=DMARC1; p=none");
    let (c, dns, stored) = (&s.c, &s.dns, s.signed());
    let run = || {
        let spf = c.spf(ip("192.0.2.1"), "mx.pass.example", Some("a@inc.example"));
        c.message(&spf, stored.as_bytes())
    };
    let first = run();
    assert_eq!(first.dkim[0].result, Outcome::Pass);
    let asked = dns.queries();
    assert!(asked >= 5, "SPF chain, key and DMARC were looked up: {asked}");
    assert_eq!(run(), first);
    assert_eq!(dns.queries(), asked, "the second message asked DNS nothing");
    assert!(c.dns_cache_len() >= 4);
}

#[test]
fn a_forged_result_claiming_our_name_is_stripped_before_ours_is_added() {
    let s = site(&[("ed", KeyKind::Ed25519, false)], "v=DMARC1; p=reject");
    let c = &s.c;
    let forged = format!(
        "Authentication-Results: {};\n\tdkim=pass header.d=example.org;\n\tdmarc=pass header.from=example.org\n\
         Authentication-Results: elsewhere.example; spf=pass\n{MESSAGE}",
        ME.to_ascii_uppercase()
    );
    let clean = strip_own_results(forged.as_bytes(), c.authserv_id());
    let clean = String::from_utf8(clean.into_owned()).unwrap();
    assert_eq!(
        clean,
        format!("Authentication-Results: elsewhere.example; spf=pass\n{MESSAGE}")
    );
    let spf = c.spf(ip("198.51.100.9"), "evil.invalid", Some("x@fail.example"));
    let r = c.message(&spf, clean.as_bytes());
    let delivered = format!("{}{clean}", r.field(ME));
    let ours: Vec<&str> = delivered
        .lines()
        .filter(|l| {
            l.to_ascii_lowercase()
                .starts_with("authentication-results: mx.test")
        })
        .collect();
    assert_eq!(ours.len(), 1, "{delivered}");
    assert!(delivered.contains("\tdmarc=fail (p=reject) header.from=example.org\n"));
}
