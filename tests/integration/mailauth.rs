//! Mail authentication (issue 20) end to end: DKIM signatures made by ternd
//! and verified by dkimpy (python3-dkim, no one here wrote it), for RSA and
//! Ed25519, on mail from an authenticated submission, from `sendmail` and
//! from a relay_networks client, and never on mail merely relayed; SPF, DKIM
//! and DMARC checks of mail from outside against a real DNS server on
//! loopback (the harness's nsd), the Authentication-Results field read field
//! by field, forged ones removed, `dmarc_reject`, `spf_reject`, a DNS that
//! never answers, and keys read at `ternd -n` and on SIGHUP.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::dnssec::SignedZones;
use crate::common::{opendkim, tools, wait_until, Client, Setup, Tern, TERND};

// ---- keys -------------------------------------------------------------------

/// A fresh Ed25519 key made by openssl in `dir`: (PEM file, TXT value of its
/// public key, RFC 8463 3: the raw 32 octets in p=).
fn ed25519_key(setup: &Setup, name: &str) -> (PathBuf, String) {
    let pem = setup.path().join(format!("{name}.pem"));
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&pem)
        .output()
        .expect("openssl genpkey");
    assert!(out.status.success(), "{out:?}");
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&pem)
        .output()
        .expect("openssl pkey");
    assert!(der.status.success(), "{der:?}");
    let raw = der
        .stdout
        .get(der.stdout.len().saturating_sub(32)..)
        .unwrap_or_default();
    let txt = format!("v=DKIM1; k=ed25519; p={}", crate::common::b64(raw));
    (install_key(setup, &pem, &format!("{name}.key")), txt)
}

/// Put `key` in the test directory as a file the daemon's account can read
/// (private keys are 0600; as root the daemon drops to the test account).
fn install_key(setup: &Setup, key: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let to = setup.path().join(name);
    std::fs::copy(key, &to).expect("copy key");
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    if let Some(pw) = crate::common::daemon_account() {
        std::os::unix::fs::chown(&to, Some(pw.uid), Some(pw.gid)).expect("chown key");
    }
    to
}

/// The cached 2048-bit RSA key of opendkim-genkey (PKCS#1 PEM) and its TXT.
fn rsa_key(selector: &str) -> (PathBuf, String) {
    opendkim::dkim_key("example.test", selector)
}

/// The message in CRLF form, as it goes on the wire and dkimpy reads it.
fn crlf(stored: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(stored).replace('\n', "\r\n").into_bytes()
}

/// The header fields named `name` (unfolded values, in order).
fn fields(message: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\n\n").next().unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(c) = current.as_mut() {
                c.push(' ');
                c.push_str(line.trim());
            }
            continue;
        }
        if let Some(c) = current.take() {
            out.push(c);
        }
        if let Some((n, v)) = line.split_once(':') {
            if n.eq_ignore_ascii_case(name) {
                current = Some(v.trim().to_owned());
            }
        }
    }
    out.extend(current);
    out
}

/// A DKIM-Signature's tag, e.g. `tag(sig, "h")`.
fn tag(sig: &str, name: &str) -> String {
    sig.split(';')
        .filter_map(|t| t.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.split_whitespace().collect::<String>())
        .unwrap_or_default()
}

/// Wait until `n` messages are queued; returns them.
fn wait_queued(t: &Tern, n: usize) -> Vec<(tern::spool::Envelope, Vec<u8>)> {
    let mut all = Vec::new();
    wait_until(10, || {
        all = t.queued();
        all.len() >= n
    });
    assert!(all.len() >= n, "{} queued, want {n}\n{}", all.len(), t.log_text());
    all
}

fn message_from(from: &str, subject: &str) -> String {
    format!(
        "From: Alice <{from}>\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\
         Date: Fri, 04 Dec 2026 20:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello,  world.  \r\n\r\nTrailing blank lines:\r\n\r\n\r\n"
    )
}

/// What every signature of ours must be (RFC 6376 as issue 20 asks).
fn assert_signature_shape(sig: &str) {
    assert_eq!(tag(sig, "c"), "relaxed/relaxed", "{sig}");
    assert_eq!(tag(sig, "l"), "", "the whole body is hashed: {sig}");
    let h: Vec<String> = tag(sig, "h").split(':').map(|s| s.to_ascii_lowercase()).collect();
    // From oversigned: listed once more than it occurs.
    assert_eq!(h.iter().filter(|n| *n == "from").count(), 2, "{sig}");
    for f in [
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
    ] {
        assert!(h.iter().any(|n| n == f), "{f} not signed: {sig}");
    }
}

/// The queued copy of the message `r` (a 250 to the end of data) accepted.
fn stored(t: &Tern, r: &crate::common::Reply) -> Vec<u8> {
    assert_eq!(r.code, 250, "{r:?}\n{}", t.log_text());
    t.message(&r.queue_id()).1
}

/// The DKIM-Signature fields of `stored`, which must number `n`.
fn signatures(stored: &[u8], n: usize) -> Vec<String> {
    let sigs = fields(stored, "DKIM-Signature");
    assert_eq!(sigs.len(), n, "{}", String::from_utf8_lossy(stored));
    sigs
}

/// dkimpy's verdict on every signature of `stored`, the keys given.
fn verify(stored: &[u8], keys: &[(&str, &str)]) -> Result<(), String> {
    tools::dkim_verify(&crlf(stored), keys).expect("dkimpy")
}

/// `ternd -n` on `setup`'s configuration: exit status and stderr.
fn check_config(setup: &Setup) -> (Option<i32>, String) {
    let conf = setup.write_config();
    let out = Command::new(TERND)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .output()
        .expect("ternd -n");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---- signing ----------------------------------------------------------------

#[test]
fn authenticated_submission_is_signed_rsa_and_ed25519_and_dkimpy_verifies() {
    require_tool!("openssl", "opendkim-genkey");
    require_python!("dkim");
    let setup = Setup::new().submission();
    let (ed, ed_txt) = ed25519_key(&setup, "ed");
    let (rsa, rsa_txt) = rsa_key("rsa2026");
    let rsa = install_key(&setup, &rsa, "rsa.key");
    let t = setup
        // Not in relay_networks: signed because it authenticated.
        .set("relay_networks", "192.0.2.0/24")
        // Two dkim_sign lines (Setup keeps one value per key: the second
        // rides on the first's line end).
        .set(
            "dkim_sign",
            &format!(
                "example.test ed2026 {} ed25519\ndkim_sign = example.test rsa2026 {}",
                ed.display(),
                rsa.display()
            ),
        )
        .start();

    let mut c = Client::connect(t.submission_addr());
    c.hello();
    let mut s = c.starttls(&t.setup.ca_pem());
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    assert_eq!(s.auth_plain("alice", "secret").status(), "235 2.7.0");
    let r = s.send_mail(
        "alice@example.test",
        &["bob@far.test"],
        &message_from("alice@example.test", "sub1"),
    );
    let stored = stored(&t, &r);
    let sigs = signatures(&stored, 2);
    let algs: Vec<String> = sigs.iter().map(|s| tag(s, "a")).collect();
    assert!(algs.contains(&"ed25519-sha256".to_owned()), "{algs:?}");
    assert!(algs.contains(&"rsa-sha256".to_owned()), "{algs:?}");
    for sig in &sigs {
        assert_eq!(tag(sig, "d"), "example.test");
        assert_signature_shape(sig);
    }
    // The signatures are on top, before our Received:.
    let text = String::from_utf8_lossy(&stored).into_owned();
    assert!(text.starts_with("DKIM-Signature:"), "{text}");
    let keys = [
        ("ed2026._domainkey.example.test", ed_txt.as_str()),
        ("rsa2026._domainkey.example.test", rsa_txt.as_str()),
    ];
    assert_eq!(verify(&stored, &keys), Ok(()), "{text}");
    eprintln!("SIGNED (dkimpy: every signature verifies):\n{text}");
    // The verifier is not fooled: one changed body octet fails both.
    let tampered = text.replace("Hello,", "Hallo,");
    assert!(verify(tampered.as_bytes(), &keys).is_err());
    assert!(t.wait_log("dkim-signed d=example.test"), "{}", t.log_text());
}

#[test]
fn sendmail_mail_is_signed_at_pickup() {
    require_tool!("openssl");
    require_python!("dkim");
    let setup = Setup::new();
    let (ed, ed_txt) = ed25519_key(&setup, "ed");
    let t = setup
        .set("dkim_sign", &format!("example.test ed2026 {}", ed.display()))
        .start();
    let out = t.setup.sendmail(
        &["-f", "alice@example.test", "bob@far.test"],
        message_from("alice@example.test", "local1").as_bytes(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let queued = wait_queued(&t, 1);
    let (_, stored) = &queued[0];
    let sigs = signatures(stored, 1);
    assert_eq!(tag(&sigs[0], "a"), "ed25519-sha256");
    assert_signature_shape(&sigs[0]);
    let keys = [("ed2026._domainkey.example.test", ed_txt.as_str())];
    assert_eq!(verify(stored, &keys), Ok(()));
}

#[test]
fn relay_networks_clients_are_signed_outsiders_and_relayed_mail_are_not() {
    require_tool!("openssl");
    require_python!("dkim");
    let setup = Setup::new();
    let (ed, ed_txt) = ed25519_key(&setup, "ed");
    let key = format!("example.test ed2026 {}", ed.display());
    // 127.0.0.1 is in relay_networks (the harness's default): inside.
    let t = setup.set("dkim_sign", &key).start();
    let mut c = t.connect();
    c.hello();
    // A parent's key signs a subdomain's mail (relaxed DMARC alignment).
    let r = c.send_mail(
        "ops@mail.example.test",
        &["bob@far.test"],
        &message_from("ops@mail.example.test", "net1"),
    );
    let sigs = signatures(&stored(&t, &r), 1);
    assert_eq!(tag(&sigs[0], "d"), "example.test");
    let keys = [("ed2026._domainkey.example.test", ed_txt.as_str())];
    assert_eq!(verify(&stored(&t, &r), &keys), Ok(()));
    // A From: domain without a key goes unsigned by design.
    let r = c.send_mail(
        "a@other.test",
        &["bob@far.test"],
        &message_from("a@other.test", "net2"),
    );
    signatures(&stored(&t, &r), 0);
    drop(t);

    // From outside (not in relay_networks, not authenticated), to an alias
    // that forwards off-site: merely relayed, never signed, even with a From:
    // of a domain we hold a key for.
    let setup = Setup::new().aliases("fwd: someone@far.test\n");
    let (ed, _) = ed25519_key(&setup, "ed");
    let t = setup
        .set("relay_networks", "192.0.2.0/24")
        .set("auth_check", "no")
        .set("dkim_sign", &format!("example.test ed2026 {}", ed.display()))
        .start();
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail(
        "alice@example.test",
        &["fwd@example.test"],
        &message_from("alice@example.test", "relay1"),
    );
    signatures(&stored(&t, &r), 0);
    assert!(!t.log_text().contains("dkim-signed"), "{}", t.log_text());
}

#[test]
fn keys_are_checked_by_ternd_n_and_reread_on_reload_a_bad_key_is_451_never_unsigned() {
    require_tool!("openssl");
    require_python!("dkim");
    // ternd -n names the line and the file.
    let setup = Setup::new();
    let missing = setup.path().join("missing.pem");
    let setup = setup.set("dkim_sign", &format!("example.test s1 {}", missing.display()));
    let (code, err) = check_config(&setup);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("tern.conf:2: dkim_sign: ") && err.contains("missing.pem"),
        "{err}"
    );
    let junk = setup.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let setup = setup.set("dkim_sign", &format!("example.test s1 {}", junk.display()));
    let (code, err) = check_config(&setup);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("tern.conf:2: dkim_sign: ") && err.contains("junk.pem"),
        "{err}"
    );

    // A good key; then the file replaced: re-read on SIGHUP.
    let (first, first_txt) = ed25519_key(&setup, "first");
    let key = install_key(&setup, &first, "key.pem");
    let t = setup
        .set("dkim_sign", &format!("example.test s1 {}", key.display()))
        .start();
    let send = |t: &Tern| {
        let mut c = t.connect();
        c.hello();
        c.cmd("MAIL FROM:<alice@example.test>");
        c.cmd("RCPT TO:<bob@far.test>");
        assert_eq!(c.cmd("DATA").code, 354);
        c.send_raw(message_from("alice@example.test", "reload").as_bytes());
        c.send_raw(b".\r\n");
        c.reply()
    };
    let keys = [("s1._domainkey.example.test", first_txt.as_str())];
    assert_eq!(verify(&stored(&t, &send(&t)), &keys), Ok(()));

    // Broken on disk: the domain's mail is refused for now, not sent unsigned.
    std::fs::write(&key, "not a key\n").unwrap();
    t.signal(libc::SIGHUP);
    assert!(
        t.wait_log("refused with 451 until the key loads"),
        "{}",
        t.log_text()
    );
    let before = t.queued().len();
    let r = send(&t);
    assert_eq!(r.status(), "451 4.3.0", "{r:?}");
    assert_eq!(t.queued().len(), before);
    // Mail from sendmail waits in the maildrop, logged as tern's own
    // refusal (no milter is configured: never `milter-reject`).
    let out = t.setup.sendmail(
        &["-f", "alice@example.test", "bob@far.test"],
        message_from("alice@example.test", "local-broken").as_bytes(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        wait_until(10, || t
            .log_text()
            .lines()
            .any(|l| l.contains(
                ": reject: END-OF-MESSAGE from localhost[127.0.0.1]: 451 4.3.0"
            ) && l.contains("from=<alice@example.test>"))),
        "{}",
        t.log_text()
    );
    assert!(
        t.wait_log("left in the maildrop for a later pickup"),
        "{}",
        t.log_text()
    );
    assert!(!t.log_text().contains("milter-reject"), "{}", t.log_text());
    assert_eq!(t.queued().len(), before);

    // A new key: signed with it.
    let (second, second_txt) = ed25519_key(&t.setup, "second");
    install_key(&t.setup, &second, "key.pem");
    t.signal(libc::SIGHUP);
    assert!(
        wait_until(5, || t
            .log_text()
            .matches("SIGHUP: configuration reloaded")
            .count()
            >= 2),
        "{}",
        t.log_text()
    );
    let stored = stored(&t, &send(&t));
    let keys = [("s1._domainkey.example.test", second_txt.as_str())];
    assert_eq!(verify(&stored, &keys), Ok(()));
    let old = [("s1._domainkey.example.test", first_txt.as_str())];
    assert!(verify(&stored, &old).is_err());
}

// ---- checking -----------------------------------------------------------------

/// The sender zone: SPF records of each kind for 127.0.0.1, DMARC
/// policies, and DKIM keys of messages dkimpy signs.
fn sender_zone(ed_txt: &str, rsa_txt: &str) -> Option<SignedZones> {
    SignedZones::builder()
        .zone("sender.test")
        .txt("pass.sender.test", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc.pass.sender.test", "v=DMARC1; p=reject")
        .txt("fail.sender.test", "v=spf1 ip4:192.0.2.1 -all")
        .txt("_dmarc.fail.sender.test", "v=DMARC1; p=reject")
        .txt("soft.sender.test", "v=spf1 ip4:192.0.2.1 ~all")
        .a("none.sender.test", "192.0.2.80")
        .txt("perm.sender.test", "v=spf1 ip4 -all")
        .txt("_dmarc.lax.sender.test", "v=DMARC1; p=none")
        .a("lax.sender.test", "192.0.2.80")
        .txt("dkim.sender.test", "v=spf1 -all")
        .txt("_dmarc.dkim.sender.test", "v=DMARC1; p=reject")
        .txt("ed._domainkey.dkim.sender.test", ed_txt)
        .txt("rsa._domainkey.dkim.sender.test", rsa_txt)
        .a("client.sender.test", "127.0.0.1")
        .txt("client.sender.test", "v=spf1 a -all")
        .start()
}

/// A ternd that checks mail from 127.0.0.1 (not in relay_networks) against
/// `dns`.
fn checking(dns: &SignedZones, extra: &[(&str, &str)]) -> Tern {
    let mut s = Setup::new()
        .set("relay_networks", "192.0.2.0/24")
        .set("dns_servers", &dns.nsd_addr().to_string());
    for (k, v) in extra {
        s = s.set(k, v);
    }
    s.start()
}

/// Send `body` from outside with HELO `helo`; the reply to MAIL, the first
/// RCPT, or the end of data, whichever refuses first, or the 250.
fn send_outside(t: &Tern, helo: &str, from: &str, body: &str) -> crate::common::Reply {
    let mut c = t.connect();
    assert_eq!(c.reply().code, 220);
    assert_eq!(c.cmd(&format!("EHLO {helo}")).code, 250);
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    if r.code != 250 {
        return r;
    }
    let r = c.cmd("RCPT TO:<alice@example.test>");
    if r.code != 250 {
        return r;
    }
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(body.as_bytes());
    c.send_raw(b".\r\n");
    let r = c.reply();
    c.cmd("QUIT");
    r
}

/// The one Authentication-Results field of ours on the queued message, split
/// into its resinfo parts (after the authserv-id).
fn our_results(t: &Tern, r: &crate::common::Reply) -> Vec<String> {
    let stored = stored(t, r);
    let ars: Vec<String> = fields(&stored, "Authentication-Results")
        .into_iter()
        .filter(|v| v.starts_with("mx.test;"))
        .collect();
    assert_eq!(ars.len(), 1, "{}", String::from_utf8_lossy(&stored));
    let text = String::from_utf8_lossy(&stored).into_owned();
    // Under our Received:, above everything the message came with.
    let names: Vec<&str> = text
        .lines()
        .take_while(|l| !l.is_empty())
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split(':').next())
        .take(2)
        .collect();
    assert_eq!(names, ["Received", "Authentication-Results"], "{text}");
    ars[0]
        .split(';')
        .skip(1)
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The resinfo of `method` for `property` (e.g. `spf`, `smtp.mailfrom`).
fn resinfo<'a>(parts: &'a [String], method: &str, property: &str) -> &'a str {
    parts
        .iter()
        .find(|p| p.starts_with(&format!("{method}=")) && p.contains(property))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {method} with {property} in {parts:?}"))
}

/// The method result (`pass`) of a resinfo.
fn result_of(part: &str) -> &str {
    part.split_once('=')
        .map_or("", |(_, r)| r.split_whitespace().next().unwrap_or(""))
}

#[test]
fn spf_dkim_dmarc_results_in_one_authentication_results_field() {
    require_tool!("openssl", "opendkim-genkey");
    require_python!("dkim");
    let (ed_seed, ed_txt) = require_some!(tools::dkim_ed25519_key(), "no dkimpy");
    let (rsa_file, rsa_txt) = rsa_key("rsa");
    let Some(dns) = sender_zone(&ed_txt, &rsa_txt) else {
        return;
    };
    let t = checking(&dns, &[]);

    // SPF of MAIL FROM, each result; HELO checked too; DMARC by the From:.
    for (sender, want_spf, want_dmarc) in [
        ("a@pass.sender.test", "pass", "pass"),
        ("a@fail.sender.test", "fail", "fail"),
        ("a@soft.sender.test", "softfail", "none"),
        ("a@none.sender.test", "none", "none"),
        ("a@perm.sender.test", "permerror", "none"),
    ] {
        let r = send_outside(&t, "client.sender.test", sender, &message_from(sender, "spf"));
        let parts = our_results(&t, &r);
        let spf = resinfo(&parts, "spf", "smtp.mailfrom=");
        assert_eq!(result_of(spf), want_spf, "{sender}: {parts:?}");
        assert!(spf.ends_with(&format!("smtp.mailfrom={sender}")), "{spf}");
        let helo = resinfo(&parts, "spf", "smtp.helo=");
        assert_eq!(helo, "spf=pass smtp.helo=client.sender.test", "{parts:?}");
        assert_eq!(resinfo(&parts, "dkim", ""), "dkim=none", "{parts:?}");
        let dmarc = resinfo(&parts, "dmarc", "header.from=");
        assert_eq!(result_of(dmarc), want_dmarc, "{sender}: {parts:?}");
        let domain = sender.split('@').nth(1).unwrap();
        assert!(dmarc.ends_with(&format!("header.from={domain}")), "{dmarc}");
        if sender.starts_with("a@pass") || sender.starts_with("a@fail") {
            assert!(dmarc.contains("(p=reject)"), "{dmarc}");
        }
    }
    // A DMARC p=none failure: accepted, recorded.
    let r = send_outside(
        &t,
        "client.sender.test",
        "a@pass.sender.test",
        &message_from("a@lax.sender.test", "lax"),
    );
    let parts = our_results(&t, &r);
    assert_eq!(
        resinfo(&parts, "dmarc", "header.from="),
        "dmarc=fail (p=none) header.from=lax.sender.test"
    );

    // DKIM: signed by dkimpy (Ed25519 and RSA), SPF failing: DMARC passes
    // on the aligned signature alone.
    let body = message_from("a@dkim.sender.test", "dkim");
    let sig_ed = tools::dkim_sign(body.as_bytes(), "ed", "dkim.sender.test", &ed_seed, true).expect("dkimpy");
    let rsa_pem = std::fs::read_to_string(&rsa_file).unwrap();
    let sig_rsa =
        tools::dkim_sign(body.as_bytes(), "rsa", "dkim.sender.test", &rsa_pem, false).expect("dkimpy");
    let signed = format!("{sig_ed}{sig_rsa}{body}")
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    let r = send_outside(&t, "client.sender.test", "a@dkim.sender.test", &signed);
    let parts = our_results(&t, &r);
    assert_eq!(result_of(resinfo(&parts, "spf", "smtp.mailfrom=")), "fail");
    let ed = resinfo(&parts, "dkim", "header.s=ed");
    assert!(
        ed.starts_with("dkim=pass header.d=dkim.sender.test header.s=ed header.b="),
        "{ed}"
    );
    let rsa = resinfo(&parts, "dkim", "header.s=rsa");
    assert!(
        rsa.starts_with("dkim=pass header.d=dkim.sender.test header.s=rsa header.b="),
        "{rsa}"
    );
    assert_eq!(
        resinfo(&parts, "dmarc", "header.from="),
        "dmarc=pass (p=reject) header.from=dkim.sender.test"
    );
    let pass_field = fields(&stored(&t, &r), "Authentication-Results").remove(0);
    eprintln!("PASS: Authentication-Results: {pass_field}");

    // The same, one body octet changed on the way: both fail, DMARC fails.
    let tampered = signed.replace("Hello,", "Hallo,");
    let r = send_outside(&t, "client.sender.test", "a@dkim.sender.test", &tampered);
    let parts = our_results(&t, &r);
    assert_eq!(
        result_of(resinfo(&parts, "dkim", "header.s=ed")),
        "fail",
        "{parts:?}"
    );
    assert_eq!(
        result_of(resinfo(&parts, "dkim", "header.s=rsa")),
        "fail",
        "{parts:?}"
    );
    assert_eq!(
        resinfo(&parts, "dmarc", "header.from="),
        "dmarc=fail (p=reject) header.from=dkim.sender.test"
    );
    let fail_field = fields(&stored(&t, &r), "Authentication-Results").remove(0);
    eprintln!("FAIL: Authentication-Results: {fail_field}");
    assert!(
        t.wait_log("authentication-results=mx.test; spf=fail"),
        "{}",
        t.log_text()
    );
}

#[test]
fn forged_authentication_results_claiming_our_host_are_removed() {
    let Some(dns) = sender_zone("v=DKIM1; p=", "v=DKIM1; p=") else {
        return;
    };
    let t = checking(&dns, &[]);
    let body = format!(
        "Authentication-Results: mx.test; spf=pass smtp.mailfrom=a@fail.sender.test; dmarc=pass\r\n\
         Authentication-Results: MX.TEST. ; dkim=pass header.d=fail.sender.test\r\n\
         Authentication-Results: other.example; spf=pass\r\n{}",
        message_from("a@fail.sender.test", "forged")
    );
    let r = send_outside(&t, "client.sender.test", "a@fail.sender.test", &body);
    let queued = stored(&t, &r);
    let ars = fields(&queued, "Authentication-Results");
    // Ours (fail), and the other host's kept: RFC 8601 5 removes only ours.
    assert_eq!(ars.len(), 2, "{}", String::from_utf8_lossy(&queued));
    assert!(
        ars[0].starts_with("mx.test;") && ars[0].contains("spf=fail smtp.mailfrom="),
        "{ars:?}"
    );
    assert!(ars[0].contains("dmarc=fail"), "{ars:?}");
    assert_eq!(ars[1], "other.example; spf=pass");

    // With the checks off, forged ones still go.
    let t = checking(&dns, &[("auth_check", "no")]);
    let r = send_outside(&t, "client.sender.test", "a@fail.sender.test", &body);
    assert_eq!(
        fields(&stored(&t, &r), "Authentication-Results"),
        vec!["other.example; spf=pass".to_owned()]
    );
}

#[test]
fn dmarc_reject_and_spf_reject_refuse_only_what_they_say() {
    let Some(dns) = sender_zone("v=DKIM1; p=", "v=DKIM1; p=") else {
        return;
    };
    let t = checking(&dns, &[("dmarc_reject", "yes"), ("spf_reject", "fail")]);
    // (HELO, MAIL FROM, From:, the reply that ends the transaction)
    for (helo, sender, author, want) in [
        // SPF fail of the sender: refused at RCPT, 5.7.23 (RFC 7372).
        (
            "client.sender.test",
            "a@fail.sender.test",
            "a@fail.sender.test",
            "550 5.7.23",
        ),
        // SPF fail of the HELO name alone refuses too.
        (
            "fail.sender.test",
            "a@none.sender.test",
            "a@none.sender.test",
            "550 5.7.23",
        ),
        // softfail, none, permerror: accepted.
        (
            "client.sender.test",
            "a@soft.sender.test",
            "a@soft.sender.test",
            "250 2.0.0",
        ),
        (
            "client.sender.test",
            "a@none.sender.test",
            "a@none.sender.test",
            "250 2.0.0",
        ),
        (
            "client.sender.test",
            "a@perm.sender.test",
            "a@perm.sender.test",
            "250 2.0.0",
        ),
        // DMARC failure under p=reject: 550 5.7.1 after DATA.
        (
            "client.sender.test",
            "a@pass.sender.test",
            "a@fail.sender.test",
            "550 5.7.1",
        ),
        // A DMARC failure under p=none, and an aligned pass: accepted.
        (
            "client.sender.test",
            "a@pass.sender.test",
            "a@lax.sender.test",
            "250 2.0.0",
        ),
        (
            "client.sender.test",
            "a@pass.sender.test",
            "a@pass.sender.test",
            "250 2.0.0",
        ),
    ] {
        let before = t.queued().len();
        let r = send_outside(&t, helo, sender, &message_from(author, "x"));
        assert_eq!(r.status(), want, "{helo} {sender} {author}: {r:?}");
        // A refusal queues nothing.
        let queued = if r.code == 250 { before + 1 } else { before };
        assert_eq!(t.queued().len(), queued);
    }
    // Inside clients are not checked: a relay_networks client sending as a
    // failing domain is accepted with no Authentication-Results.
    let t = checking(
        &dns,
        &[
            ("dmarc_reject", "yes"),
            ("spf_reject", "fail"),
            ("relay_networks", "127.0.0.0/8"),
        ],
    );
    let r = send_outside(
        &t,
        "client.sender.test",
        "a@fail.sender.test",
        &message_from("a@fail.sender.test", "x"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    assert!(fields(&stored(&t, &r), "Authentication-Results").is_empty());
}

#[test]
fn a_dns_that_never_answers_gives_temperror_within_auth_timeout_and_never_rejects() {
    // A name server that takes queries and answers none.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = Setup::new()
        .set("relay_networks", "192.0.2.0/24")
        .set("dns_servers", &silent.local_addr().unwrap().to_string())
        .set("dns_timeout", "5s")
        .set("auth_timeout", "1s")
        .set("dmarc_reject", "yes")
        .set("spf_reject", "fail")
        .start();
    let began = Instant::now();
    let r = send_outside(
        &t,
        "client.sender.test",
        "a@fail.sender.test",
        &message_from("a@fail.sender.test", "x"),
    );
    let took = began.elapsed();
    assert_eq!(r.code, 250, "{r:?}");
    // Once for SPF, once for DKIM and DMARC, with some slack.
    assert!(took < Duration::from_secs(4), "{took:?}");
    let parts = our_results(&t, &r);
    assert_eq!(
        result_of(resinfo(&parts, "spf", "smtp.mailfrom=")),
        "temperror",
        "{parts:?}"
    );
    assert_eq!(
        result_of(resinfo(&parts, "dmarc", "header.from=")),
        "temperror",
        "{parts:?}"
    );
}

// ---- what tern writes itself ----------------------------------------------------

/// RFC 8460 3: a TLS report is DKIM-signed when `dkim_sign` has a key for
/// the domain of `tlsrpt_from`.
#[test]
fn tls_reports_are_signed_with_the_key_of_the_tlsrpt_from_domain() {
    use tern::tlspolicy::tlsrpt::{self, Event, PolicyDetails, PolicyType, Store};
    require_tool!("openssl");
    require_python!("dkim");
    let Some(dns) = SignedZones::builder()
        .zone("far.test")
        .txt("_smtp._tls.far.test", "v=TLSRPTv1; rua=mailto:reports@far.test")
        .start()
    else {
        return;
    };
    let setup = Setup::new();
    let (ed, ed_txt) = ed25519_key(&setup, "ed");
    let t = setup
        .set("dns_servers", &dns.nsd_addr().to_string())
        .set("tlsrpt_from", "tlsrpt@example.test")
        .set("dkim_sign", &format!("example.test r2026 {}", ed.display()))
        .start();
    // Yesterday, one session to far.test met no policy.
    let store = Store::open(&t.spool_dir().join("tlsrpt")).expect("tlsrpt store");
    let yesterday = tern::clock::now() - 86_400;
    let ev = Event {
        policy: PolicyDetails::new(PolicyType::NoPolicyFound, Vec::new(), "far.test", "mx.far.test"),
        failure: None,
    };
    store.record(yesterday, &ev).expect("record");
    let day = t.spool_dir().join("tlsrpt").join(tlsrpt::day_of(yesterday));
    if let Some(pw) = crate::common::daemon_account() {
        std::os::unix::fs::chown(&day, Some(pw.uid), Some(pw.gid)).expect("chown");
    }
    let out = t.setup.ternctl(&["tlsrpt", "send"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let queued = wait_queued(&t, 1);
    let (env, stored) = &queued[0];
    assert_eq!(env.sender, "tlsrpt@example.test", "{}", t.log_text());
    let sigs = signatures(stored, 1);
    assert_eq!(tag(&sigs[0], "d"), "example.test");
    let keys = [("r2026._domainkey.example.test", ed_txt.as_str())];
    assert_eq!(verify(stored, &keys), Ok(()));
}

#[test]
fn bounces_are_signed_with_the_key_of_our_hostname() {
    require_tool!("openssl");
    require_python!("dkim");
    let setup = Setup::new();
    let (ed, ed_txt) = ed25519_key(&setup, "ed");
    // The bounce's way out is closed (connection refused): it stays queued.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    let t = setup
        .deliver()
        .aliases("broken: \"|exit 1\"\n")
        .set("route", &format!("far.test [127.0.0.1]:{port}"))
        .set("dkim_sign", &format!("mx.test b2026 {}", ed.display()))
        .start();
    let id = crate::common::submit(
        &t,
        "alice@far.test",
        &["broken@example.test"],
        &message_from("alice@far.test", "bounce me"),
    );
    let mut bounce = None;
    wait_until(15, || {
        bounce = t.queued().into_iter().find(|(env, _)| env.sender.is_empty());
        bounce.is_some()
    });
    let Some((env, stored)) = bounce else {
        panic!("no bounce for {id}\n{}", t.log_text());
    };
    assert_eq!(
        env.recipients.iter().map(|r| r.addr.as_str()).collect::<Vec<_>>(),
        ["alice@far.test"]
    );
    // From: MAILER-DAEMON@mx.test, signed with mx.test's key.
    let sigs = signatures(&stored, 1);
    assert_eq!(tag(&sigs[0], "d"), "mx.test");
    let keys = [("b2026._domainkey.mx.test", ed_txt.as_str())];
    assert_eq!(verify(&stored, &keys), Ok(()));
}
