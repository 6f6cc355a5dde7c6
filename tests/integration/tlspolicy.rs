//! Outbound TLS policy (issue 18) with real parts: a DNSSEC-signed private
//! root and zones on nsd behind a validating unbound (tern trusts its AD
//! bit: it is on loopback), nginx serving MTA-STS policies with a test CA,
//! and scripted SMTP peers with good, wrong-name, self-signed and expired
//! certificates, with and without REQUIRETLS. Each test shares one set of
//! zones, one nginx and one ternd between its cases.

use std::io::Read;

use base64::prelude::{Engine as _, BASE64_STANDARD};

use crate::common::dnssec::{self, SignedZones, ZonesBuilder};
use crate::common::https::Https;
use crate::common::peer::{self, Peer, Script, TestCa};
use crate::common::{message, wait_files, wait_until, Setup, Tern};

/// A TLSA digest that matches no certificate.
const NO_MATCH: &str = "abababababababababababababababababababababababababababababababab";

/// Send one message through `t` over SMTP; its queue id.
fn submit(t: &Tern, to: &str, body: &str) -> String {
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail("alice@example.test", &[to], body);
    assert_eq!(r.code, 250, "{r:?}");
    r.queue_id()
}

/// Wait for a log line holding every one of `parts`.
fn log_line(t: &Tern, parts: &[&str]) -> String {
    let mut found = None;
    wait_until(10, || {
        found = t
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .cloned();
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no log line with {parts:?}:\n{}", t.log_text()))
}

/// A peer offering STARTTLS with `cert`.
fn tls_peer(cert: &peer::Cert, requiretls: bool) -> Script {
    Script {
        starttls: Some(cert.config.clone()),
        requiretls,
        ..Script::default()
    }
}

/// The TLSA owner name for `host` on the peers' port.
fn tlsa_name(port: u16, host: &str) -> String {
    format!("_{port}._tcp.{host}")
}

/// A delivering ternd that resolves through `dns`'s unbound and reaches MX
/// hosts on `port`.
fn sender(dns: &SignedZones, port: u16) -> Setup {
    Setup::new()
        .deliver()
        .set("dns_servers", &dns.resolver_addr().to_string())
        .set("mx_port", &port.to_string())
}

/// DANE (RFC 7672): match, CNAME-expanded TLSA base, mismatch with the
/// next MX tried, mismatch alone, bogus TLSA, an insecure zone; then the
/// day's TLS-RPT report (RFC 8460) built from those sessions.
#[test]
fn dane_outcomes_and_the_tls_report() {
    let ca = TestCa::new();
    let cert = ca.leaf(&["mx.peer.test"], false);
    let good = dnssec::tlsa_3_1_1(&cert.pem);
    let (port, peers) = peer::on_one_port(vec![tls_peer(&cert, false)]);
    let peer = &peers[0];
    let rua = "v=TLSRPTv1; rua=mailto:bob@example.test";
    let zones = SignedZones::builder()
        .zone("dane.test")
        .insecure("plain.test")
        // A match.
        .mx("match.dane.test", 10, "mx.match.dane.test")
        .a("mx.match.dane.test", "127.0.0.1")
        .tlsa(&tlsa_name(port, "mx.match.dane.test"), 3, 1, 1, &good)
        .txt("_smtp._tls.match.dane.test", rua)
        // RFC 7672 2.2.2: the MX host is an alias; TLSA at its target.
        .mx("alias.dane.test", 10, "mx.alias.dane.test")
        .cname("mx.alias.dane.test", "real.dane.test")
        .a("real.dane.test", "127.0.0.1")
        .tlsa(&tlsa_name(port, "real.dane.test"), 3, 1, 1, &good)
        // The first MX does not match, the second does.
        .mx("next.dane.test", 10, "mx1.next.dane.test")
        .mx("next.dane.test", 20, "mx2.next.dane.test")
        .a("mx1.next.dane.test", "127.0.0.1")
        .a("mx2.next.dane.test", "127.0.0.1")
        .tlsa(&tlsa_name(port, "mx1.next.dane.test"), 3, 1, 1, NO_MATCH)
        .tlsa(&tlsa_name(port, "mx2.next.dane.test"), 3, 1, 1, &good)
        // The only MX does not match.
        .mx("wrong.dane.test", 10, "mx.wrong.dane.test")
        .a("mx.wrong.dane.test", "127.0.0.1")
        .tlsa(&tlsa_name(port, "mx.wrong.dane.test"), 3, 1, 1, NO_MATCH)
        .txt("_smtp._tls.wrong.dane.test", rua)
        // Bogus TLSA: the signature over it is broken.
        .mx("bogus.dane.test", 10, "mx.bogus.dane.test")
        .a("mx.bogus.dane.test", "127.0.0.1")
        .tlsa(&tlsa_name(port, "mx.bogus.dane.test"), 3, 1, 1, &good)
        .tamper(&tlsa_name(port, "mx.bogus.dane.test"), "TLSA")
        // An override: this domain gets `may`, whatever its TLSA says.
        .mx("over.dane.test", 10, "mx.over.dane.test")
        .a("mx.over.dane.test", "127.0.0.1")
        .tlsa(&tlsa_name(port, "mx.over.dane.test"), 3, 1, 1, NO_MATCH)
        // Insecure: TLSA published, but nothing validates it.
        .mx("plain.test", 10, "mx.plain.test")
        .a("mx.plain.test", "127.0.0.1")
        .tlsa(&tlsa_name(port, "mx.plain.test"), 3, 1, 1, NO_MATCH)
        .with_unbound()
        .start();
    let Some(dns) = zones else { return };
    let t = sender(&dns, port)
        .set("tls_policy", "over.dane.test may")
        .set("tlsrpt_from", "tlsrpt@mx.test")
        .set("tlsrpt_organization", "Tern Test")
        .start();
    log_line(&t, &["dnssec: resolvers", "validate", "DANE on"]);

    let id = submit(&t, "u@match.dane.test", &message("dane match"));
    log_line(
        &t,
        &[
            &id,
            &format!("relay=mx.match.dane.test[127.0.0.1]:{port}"),
            "tls=TLSv1.3 policy=dane verified=yes, dsn=2.0.0, status=sent",
        ],
    );
    // RFC 7672 8.1: SNI is the TLSA base domain.
    assert!(peer.sni().contains(&Some("mx.match.dane.test".to_owned())));

    let id = submit(&t, "u@alias.dane.test", &message("dane alias"));
    log_line(&t, &[&id, "tls=TLSv1.3 policy=dane verified=yes", "status=sent"]);
    assert!(
        peer.sni().contains(&Some("real.dane.test".to_owned())),
        "{:?}",
        peer.sni()
    );

    let id = submit(&t, "u@next.dane.test", &message("dane next"));
    log_line(
        &t,
        &[
            &id,
            "mx1.next.dane.test[127.0.0.1]",
            "TLS with mx1.next.dane.test",
        ],
    );
    log_line(
        &t,
        &[
            &id,
            "relay=mx2.next.dane.test[127.0.0.1]",
            "policy=dane verified=yes, dsn=2.0.0, status=sent",
        ],
    );

    let id = submit(&t, "u@wrong.dane.test", &message("dane wrong"));
    let line = log_line(
        &t,
        &[
            &id,
            "policy=dane, dsn=4.7.5, status=deferred (TLS with mx.wrong.dane.test",
        ],
    );
    assert!(line.contains("TLSA"), "{line}");

    let id = submit(&t, "u@bogus.dane.test", &message("dane bogus"));
    // unbound says SERVFAIL with the extended error "DNSSEC Bogus" (RFC 8914).
    log_line(
        &t,
        &[
            &id,
            "relay=mx.bogus.dane.test, ",
            "policy=dane, dsn=4.7.5, status=deferred (TLSA records of mx.bogus.dane.test are bogus \
             (DNSSEC validation failed))",
        ],
    );

    let id = submit(&t, "u@over.dane.test", &message("override"));
    log_line(
        &t,
        &[&id, "tls=TLSv1.3 policy=may verified=no, dsn=2.0.0, status=sent"],
    );

    let id = submit(&t, "u@plain.test", &message("insecure"));
    log_line(
        &t,
        &[
            &id,
            "relay=mx.plain.test[127.0.0.1]",
            "tls=TLSv1.3 policy=may verified=no, dsn=2.0.0, status=sent",
        ],
    );
    // Delivered: match, alias, next (mx2), over and plain; nothing to
    // wrong or bogus.
    let got: Vec<String> = peer.messages().iter().flat_map(|m| m.1.clone()).collect();
    for want in [
        "u@match.dane.test",
        "u@alias.dane.test",
        "u@next.dane.test",
        "u@over.dane.test",
        "u@plain.test",
    ] {
        assert!(got.contains(&want.to_owned()), "{want} not in {got:?}");
    }
    assert!(
        !got.iter().any(|r| r.contains("wrong") || r.contains("bogus")),
        "{got:?}"
    );

    // The day is over (its file is renamed to yesterday's date, which is
    // what midnight does), and the reports are sent now.
    let store = t.spool_dir().join("tlsrpt");
    let today = tern::tlspolicy::tlsrpt::day_of(tern::clock::now());
    let yesterday = tern::tlspolicy::tlsrpt::day_of(tern::clock::now() - 86_400);
    std::fs::rename(store.join(&today), store.join(&yesterday)).expect("the day's results");
    let out = t.setup.ternctl(&["tlsrpt", "send"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    log_line(
        &t,
        &[
            "tlsrpt: report for match.dane.test",
            "to bob@example.test queued as",
        ],
    );
    log_line(
        &t,
        &[
            "tlsrpt: report for wrong.dane.test",
            "to bob@example.test queued as",
        ],
    );
    let files = wait_files(&t.maildir_new("bob"), 2, 10);
    assert_eq!(files.len(), 2, "{}", t.log_text());
    let mut reports = std::collections::BTreeMap::new();
    for f in files {
        let json = report_json(&std::fs::read_to_string(f).unwrap());
        let domain = json["policies"][0]["policy"]["policy-domain"]
            .as_str()
            .unwrap()
            .to_owned();
        reports.insert(domain, json);
    }
    let ok = &reports["match.dane.test"];
    assert_eq!(ok["organization-name"], "Tern Test");
    assert_eq!(ok["contact-info"], "tlsrpt@mx.test");
    assert_eq!(
        ok["date-range"]["start-datetime"],
        format!("{yesterday}T00:00:00Z")
    );
    assert_eq!(ok["date-range"]["end-datetime"], format!("{yesterday}T23:59:59Z"));
    assert!(ok["report-id"].as_str().unwrap().contains("match.dane.test"));
    let p = &ok["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "tlsa");
    assert_eq!(p["policy"]["policy-string"][0], format!("3 1 1 {good}"));
    assert_eq!(p["policy"]["mx-host"][0], "mx.match.dane.test");
    assert_eq!(p["summary"]["total-successful-session-count"], 1);
    assert_eq!(p["summary"]["total-failure-session-count"], 0);
    let bad = &reports["wrong.dane.test"]["policies"][0];
    assert_eq!(bad["policy"]["policy-type"], "tlsa");
    assert_eq!(bad["summary"]["total-successful-session-count"], 0);
    assert!(bad["summary"]["total-failure-session-count"].as_u64().unwrap() >= 1);
    let f = &bad["failure-details"][0];
    assert_eq!(f["result-type"], "certificate-not-trusted", "{bad}");
    assert_eq!(f["receiving-mx-hostname"], "mx.wrong.dane.test");
    // Only domains that ask get a report.
    assert!(!reports.contains_key("plain.test"));
}

/// Without a resolver whose validation tern believes, DANE is off and mail
/// goes with the configured level: a resolver that does not validate
/// (nsd itself: never AD), and a validating one that `dnssec_trust_ad = no`
/// does not trust. The probe's log line says which.
#[test]
fn dane_is_off_without_a_trusted_validating_resolver() {
    let cert = peer::self_signed(&["mx.peer.test"]);
    let (port, peers) = peer::on_one_port(vec![tls_peer(&cert, false)]);
    let zones = SignedZones::builder()
        .zone("dane.test")
        .mx("wrong.dane.test", 10, "mx.wrong.dane.test")
        .a("mx.wrong.dane.test", "127.0.0.1")
        .tlsa(&tlsa_name(port, "mx.wrong.dane.test"), 3, 1, 1, NO_MATCH)
        .with_unbound()
        .start();
    let Some(dns) = zones else { return };
    let plain = Setup::new()
        .deliver()
        .set("dns_servers", &dns.nsd_addr().to_string())
        .set("mx_port", &port.to_string())
        .start();
    log_line(
        &plain,
        &[
            "dnssec: resolvers",
            "do not validate (the root's NS came back insecure, without AD): DANE off",
        ],
    );
    let untrusted = sender(&dns, port).set("dnssec_trust_ad", "no").start();
    log_line(
        &untrusted,
        &["dnssec: the AD bit of resolvers", "is not trusted", "DANE off"],
    );
    for t in [&plain, &untrusted] {
        let id = submit(t, "u@wrong.dane.test", &message("no dane"));
        log_line(
            t,
            &[&id, "tls=TLSv1.3 policy=may verified=no, dsn=2.0.0, status=sent"],
        );
    }
    assert_eq!(peers[0].messages().len(), 2);
}

/// The RFC 8460 JSON inside a report mail: the base64 of the
/// application/tlsrpt+gzip part, gunzipped, parsed.
fn report_json(mail: &str) -> serde_json::Value {
    assert!(mail.contains("TLS-Report-Domain: "), "{mail}");
    assert!(
        mail.contains("Content-Type: multipart/report; report-type=\"tlsrpt\""),
        "{mail}"
    );
    let part = mail
        .split("Content-Type: application/tlsrpt+gzip")
        .nth(1)
        .expect("a tlsrpt+gzip part");
    let body = part.split("\n\n").nth(1).expect("part body");
    let b64: String = body
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .map(str::trim)
        .collect();
    let gz = BASE64_STANDARD.decode(b64).expect("base64");
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .expect("gzip");
    serde_json::from_str(&json).expect("RFC 8460 JSON")
}

/// One MTA-STS policy file.
fn sts(mode: &str, mx: &str) -> String {
    format!("version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n")
}

/// MTA-STS (RFC 8461): enforce with a good certificate; enforce with a
/// wrong-name, a self-signed and an expired one; testing; none; an MX the
/// policy does not list; a cached policy that stays in force while the
/// policy host is down (after a restart, with a new policy id).
#[test]
fn mta_sts_outcomes() {
    let ca = TestCa::new();
    let good = ca.leaf(
        &[
            "mx.enforce.sts.test",
            "mx.none.sts.test",
            "mx.cached.sts.test",
            "mx2.cached.sts.test",
        ],
        false,
    );
    let self_signed = peer::self_signed(&["mx.selfsigned.sts.test", "mx.testing.sts.test"]);
    let expired = ca.leaf(&["mx.expired.sts.test"], true);
    let (port, peers) = peer::on_one_port(vec![
        tls_peer(&good, false),
        tls_peer(&self_signed, false),
        tls_peer(&expired, false),
    ]);
    // Domain, policy mode and mx pattern, MX host, its address.
    let cases = [
        ("enforce", "enforce", "mx.enforce.sts.test", "127.0.0.1"),
        ("wrongname", "enforce", "mx.wrongname.sts.test", "127.0.0.1"),
        ("selfsigned", "enforce", "mx.selfsigned.sts.test", "127.0.0.2"),
        ("expired", "enforce", "mx.expired.sts.test", "127.0.0.3"),
        ("testing", "testing", "mx.testing.sts.test", "127.0.0.2"),
        ("none", "none", "mx.none.sts.test", "127.0.0.1"),
        ("mismatch", "enforce", "mx.other.sts.test", "127.0.0.1"),
        ("cached", "enforce", "mx.cached.sts.test", "127.0.0.1"),
    ];
    let mut web = Https::builder();
    let mut zones = SignedZones::builder().zone("sts.test");
    for (name, mode, pattern, ip) in cases {
        let domain = format!("{name}.sts.test");
        let mx = format!("mx.{domain}");
        web = web.file(
            &format!("mta-sts.{domain}"),
            "/.well-known/mta-sts.txt",
            &sts(mode, pattern),
        );
        zones = zones
            .mx(&domain, 10, &mx)
            .a(&mx, ip)
            .a(&format!("mta-sts.{domain}"), "127.0.0.1")
            .txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=1");
    }
    let zones = zones.a("mx2.cached.sts.test", "127.0.0.1").with_unbound();
    let Some(web) = web.start() else { return };
    let Some(mut dns) = zones.clone().start() else {
        return;
    };
    // tern trusts the CA of the policy host and that of the peers.
    let setup = sender(&dns, port);
    let bundle = setup.path().join("ca-bundle.pem");
    std::fs::write(&bundle, format!("{}{}", web.ca_pem(), ca.pem)).unwrap();
    let mut t = setup
        .set("tls_ca_file", &bundle.display().to_string())
        .set("testing__mta_sts_port", &web.port().to_string())
        .start();

    let id = submit(&t, "u@enforce.sts.test", &message("enforce"));
    log_line(
        &t,
        &["mta-sts: enforce.sts.test: policy id=1 mode=enforce max_age=86400 fetched"],
    );
    log_line(
        &t,
        &[
            &id,
            "relay=mx.enforce.sts.test[127.0.0.1]",
            "tls=TLSv1.3 policy=mta-sts mode=enforce verified=yes, dsn=2.0.0, status=sent",
        ],
    );
    assert!(peers[0].sni().contains(&Some("mx.enforce.sts.test".to_owned())));

    for (name, why) in [
        ("wrongname", "not valid for name"),
        ("selfsigned", "UnknownIssuer"),
        ("expired", "expired"),
    ] {
        let id = submit(&t, &format!("u@{name}.sts.test"), &message(name));
        let line = log_line(
            &t,
            &[
                &id,
                "policy=mta-sts mode=enforce, dsn=4.7.5, status=deferred (TLS with",
            ],
        );
        assert!(line.contains(why), "{name}: {line}");
    }

    let id = submit(&t, "u@testing.sts.test", &message("testing"));
    log_line(
        &t,
        &[
            &id,
            "relay=mx.testing.sts.test[127.0.0.2]",
            "tls=TLSv1.3 policy=mta-sts mode=testing verified=no, dsn=2.0.0, status=sent",
        ],
    );

    let id = submit(&t, "u@none.sts.test", &message("none"));
    log_line(
        &t,
        &[&id, "tls=TLSv1.3 policy=may verified=no, dsn=2.0.0, status=sent"],
    );

    let id = submit(&t, "u@mismatch.sts.test", &message("mismatch"));
    log_line(
        &t,
        &[
            &id,
            "policy=mta-sts mode=enforce, dsn=4.7.5, status=deferred (MX host mx.mismatch.sts.test is not \
             in the MTA-STS policy of mismatch.sts.test)",
        ],
    );

    let id = submit(&t, "u@cached.sts.test", &message("cached 1"));
    log_line(
        &t,
        &[
            &id,
            "policy=mta-sts mode=enforce verified=yes, dsn=2.0.0, status=sent",
        ],
    );
    assert!(t.spool_dir().join("mta-sts/cached.sts.test").is_file());
    let delivered = |peer: &Peer, rcpt: &str| peer.messages().iter().any(|m| m.1.contains(&rcpt.to_owned()));
    assert!(delivered(&peers[0], "u@enforce.sts.test"));
    assert!(delivered(&peers[1], "u@testing.sts.test"));
    assert!(delivered(&peers[0], "u@none.sts.test"));
    for name in ["wrongname", "selfsigned", "expired", "mismatch"] {
        assert!(
            !peers.iter().any(|p| delivered(p, &format!("u@{name}.sts.test"))),
            "{name}"
        );
    }

    // The policy host goes away, the domain publishes a new policy id and
    // moves its mail to an MX the cached policy does not list; ternd
    // restarts (nothing in memory). The cached policy still rules.
    drop(web);
    dns.reload(|b: ZonesBuilder| {
        b.remove("_mta-sts.cached.sts.test", "TXT")
            .txt("_mta-sts.cached.sts.test", "v=STSv1; id=2")
            .remove("cached.sts.test", "MX")
            .mx("cached.sts.test", 10, "mx2.cached.sts.test")
    });
    t.restart();
    let id = submit(&t, "v@cached.sts.test", &message("cached 2"));
    log_line(
        &t,
        &[
            "mta-sts: cached.sts.test: policy fetch",
            "the cached policy stays in force",
        ],
    );
    log_line(
        &t,
        &[
            &id,
            "policy=mta-sts mode=enforce, dsn=4.7.5, status=deferred (MX host mx2.cached.sts.test is not \
             in the MTA-STS policy of cached.sts.test)",
        ],
    );
    assert!(!delivered(&peers[0], "v@cached.sts.test"));
}

/// REQUIRETLS (RFC 8689), receiving: offered on TLS sessions only, refused
/// without TLS, kept in the envelope across a restart and shown by ternctl.
#[test]
fn requiretls_received() {
    let mut t = Setup::new().tls().start();
    let mut c = t.connect();
    let ehlo = c.hello();
    assert!(!ehlo.text().contains("REQUIRETLS"), "{ehlo:?}");
    let r = c.cmd("MAIL FROM:<alice@example.test> REQUIRETLS");
    assert_eq!(r.status(), "530 5.7.10", "{r:?}");
    let mut s = c.starttls(&t.setup.ca_pem());
    let ehlo = s.cmd("EHLO client.test");
    assert!(ehlo.lines.iter().any(|l| l.ends_with("REQUIRETLS")), "{ehlo:?}");
    let r = s.cmd("MAIL FROM:<alice@example.test> REQUIRETLS");
    assert_eq!(r.code, 250, "{r:?}");
    let r = s.cmd("RCPT TO:<bob@far.test>");
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(s.cmd("DATA").code, 354);
    s.send_raw(message("secret").as_bytes());
    let r = s.cmd(".");
    assert_eq!(r.code, 250, "{r:?}");
    let id = r.queue_id();
    assert!(t.message(&id).0.requiretls);
    t.restart();
    assert!(t.message(&id).0.requiretls, "the flag survives a restart");
    let out = t.setup.ternctl(&["show", &id]);
    assert!(out.stdout.contains("requiretls: yes"), "{}", out.stdout);
}

/// REQUIRETLS sent (RFC 8689 4.1, 5): passed on to a DANE-authenticated
/// host that offers it; a host that does not offer it, and an MX found
/// without DNSSEC, return the message with 5.7.10 (headers only); and
/// `TLS-Required: No` (RFC 8689 3) lets a message through a DANE
/// mismatch.
#[test]
fn requiretls_sent_and_tls_required_no() {
    let ca = TestCa::new();
    let cert = ca.leaf(&["mx.rt.test"], false);
    let good = dnssec::tlsa_3_1_1(&cert.pem);
    let (port, peers) = peer::on_one_port(vec![tls_peer(&cert, true), tls_peer(&cert, false)]);
    let zones = SignedZones::builder()
        .zone("rt.test")
        .insecure("plainrt.test")
        .mx("pass.rt.test", 10, "mx.pass.rt.test")
        .a("mx.pass.rt.test", "127.0.0.1")
        .tlsa(&tlsa_name(port, "mx.pass.rt.test"), 3, 1, 1, &good)
        .mx("norq.rt.test", 10, "mx.norq.rt.test")
        .a("mx.norq.rt.test", "127.0.0.2")
        .tlsa(&tlsa_name(port, "mx.norq.rt.test"), 3, 1, 1, &good)
        .mx("trn.rt.test", 10, "mx.trn.rt.test")
        .a("mx.trn.rt.test", "127.0.0.1")
        .tlsa(&tlsa_name(port, "mx.trn.rt.test"), 3, 1, 1, NO_MATCH)
        .mx("plainrt.test", 10, "mx.plainrt.test")
        .a("mx.plainrt.test", "127.0.0.1")
        .with_unbound()
        .start();
    let Some(dns) = zones else { return };
    let t = sender(&dns, port).start();
    let sendmail = |to: &str, subject: &str| {
        let text = format!("Subject: {subject}\n\nthe secret body\n");
        let out = t.setup.sendmail(
            &["-O", "RequireTLS=yes", "-f", "alice@example.test", to],
            text.as_bytes(),
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    };

    // Passed on: the next hop offers REQUIRETLS and DANE authenticates it.
    sendmail("u@pass.rt.test", "pass");
    log_line(
        &t,
        &[
            "to=<u@pass.rt.test>",
            "tls=TLSv1.3 policy=dane requiretls=yes verified=yes, dsn=2.0.0, status=sent",
        ],
    );
    let mails: Vec<String> = peers[0].messages().iter().map(|m| m.0.clone()).collect();
    assert!(
        mails.iter().any(|m| m.ends_with(" REQUIRETLS")),
        "REQUIRETLS passed on: {mails:?}"
    );

    // Refused: authenticated, but the server does not offer REQUIRETLS.
    sendmail("u@norq.rt.test", "norq");
    log_line(
        &t,
        &[
            "to=<u@norq.rt.test>",
            "tls=TLSv1.3 policy=dane requiretls=yes verified=yes, dsn=5.7.10, status=bounced (no next hop qualifies for REQUIRETLS: mx.norq.rt.test does not offer \
             REQUIRETLS)",
        ],
    );
    assert!(peers[1].messages().is_empty());

    // Returned: the MX was not found through DNSSEC (and no MTA-STS).
    sendmail("u@plainrt.test", "insecure");
    log_line(
        &t,
        &[
            "to=<u@plainrt.test>",
            "policy=may requiretls=yes, dsn=5.7.10, status=bounced (no next hop qualifies for REQUIRETLS: mx.plainrt.test was found \
             neither through DNSSEC nor in an enforced MTA-STS policy)",
        ],
    );
    // RFC 8689 5: the notices return the header only.
    let bounces = wait_files(&t.maildir_new("alice"), 2, 10);
    assert_eq!(bounces.len(), 2, "{}", t.log_text());
    for b in bounces {
        let text = std::fs::read_to_string(b).unwrap();
        assert!(text.contains("Status: 5.7.10"), "{text}");
        assert!(text.contains("Subject: "), "{text}");
        assert!(!text.contains("the secret body"), "{text}");
    }

    // TLS-Required: No: a DANE mismatch, delivered all the same.
    let id = submit(
        &t,
        "u@trn.rt.test",
        "TLS-Required: No\r\nSubject: anyway\r\n\r\nHello.\r\n",
    );
    log_line(
        &t,
        &[
            &id,
            "relay=mx.trn.rt.test[127.0.0.1]",
            "tls=TLSv1.3 policy=dane verified=no, dsn=2.0.0, status=sent",
        ],
    );
    // Without the header, the same host is refused.
    let id = submit(&t, "w@trn.rt.test", &message("no header"));
    log_line(
        &t,
        &[
            &id,
            "policy=dane, dsn=4.7.5, status=deferred (TLS with mx.trn.rt.test",
        ],
    );
}
