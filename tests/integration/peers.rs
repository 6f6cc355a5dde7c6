//! Smoke tests of the real peers in common/: each starts privately on
//! loopback and answers the way the feature tests will rely on. A missing
//! package is a visible skip here (a failure under CI=true).

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::common::dnssec::{query, SignedZones};

fn has(m: &hickory_proto::op::Message, t: RecordType) -> bool {
    m.answers().iter().any(|r| r.record_type() == t)
}

/// nsd serves the signed root and zones with RRSIGs; unbound, anchored on the
/// root's key, validates: AD on the secure zone, SERVFAIL on the bogus one and
/// on a tampered RRset, no AD on the insecure delegation.
#[test]
fn dnssec_nsd_signs_and_unbound_validates() {
    let t0 = std::time::Instant::now();
    let Some(dns) = SignedZones::builder()
        .zone("example.test")
        .mx("example.test", 10, "mx.example.test")
        .a("mx.example.test", "127.0.0.1")
        .tlsa("_25._tcp.mx.example.test", 3, 1, 1, &"ab".repeat(32))
        .txt("_mta-sts.example.test", "v=STSv1; id=20261204")
        .a("mx2.example.test", "127.0.0.2")
        .tlsa("_25._tcp.mx2.example.test", 3, 1, 1, &"cd".repeat(32))
        .tamper("_25._tcp.mx2.example.test", "TLSA")
        .insecure("plain.test")
        .mx("plain.test", 10, "mx.plain.test")
        .a("mx.plain.test", "127.0.0.1")
        .bogus("bad.test")
        .mx("bad.test", 10, "mx.bad.test")
        .a("mx.bad.test", "127.0.0.1")
        .with_unbound()
        .start()
    else {
        return;
    };
    eprintln!("nsd+unbound ready in {:?}", t0.elapsed());
    assert!(
        dns.trust_anchor_ds().starts_with(". IN DS "),
        "{}",
        dns.trust_anchor_ds()
    );
    assert!(
        dns.trust_anchor_dnskey().starts_with(". IN DNSKEY 257 3 13 "),
        "{}",
        dns.trust_anchor_dnskey()
    );

    // The authoritative server: data and signatures, never AD.
    let m = query(dns.nsd_addr(), "example.test", RecordType::MX).unwrap();
    assert!(has(&m, RecordType::MX) && has(&m, RecordType::RRSIG), "{m:?}");
    let ds = query(dns.nsd_addr(), "example.test", RecordType::DS).unwrap();
    assert!(has(&ds, RecordType::DS) && has(&ds, RecordType::RRSIG), "{ds:?}");
    let ds = query(dns.nsd_addr(), "plain.test", RecordType::DS).unwrap();
    assert!(
        !has(&ds, RecordType::DS),
        "an insecure delegation has no DS: {ds:?}"
    );

    // The validating resolver.
    let r = dns.resolver_addr();
    for (name, t) in [
        ("example.test", RecordType::MX),
        ("mx.example.test", RecordType::A),
        ("_25._tcp.mx.example.test", RecordType::TLSA),
        ("_mta-sts.example.test", RecordType::TXT),
    ] {
        let m = query(r, name, t).unwrap();
        assert_eq!(m.response_code(), ResponseCode::NoError, "{name} {t}: {m:?}");
        assert!(has(&m, t), "{name} {t}: {m:?}");
        assert!(m.authentic_data(), "{name} {t} validated (AD): {m:?}");
    }
    let nx = query(r, "nothing.example.test", RecordType::A).unwrap();
    assert_eq!(nx.response_code(), ResponseCode::NXDomain, "{nx:?}");
    assert!(nx.authentic_data(), "a proven NXDOMAIN is secure: {nx:?}");

    let plain = query(r, "plain.test", RecordType::MX).unwrap();
    assert!(
        has(&plain, RecordType::MX) && !plain.authentic_data(),
        "insecure: {plain:?}"
    );

    let bad = query(r, "bad.test", RecordType::MX).unwrap();
    assert_eq!(bad.response_code(), ResponseCode::ServFail, "bogus: {bad:?}");
    let tampered = query(r, "_25._tcp.mx2.example.test", RecordType::TLSA).unwrap();
    assert_eq!(
        tampered.response_code(),
        ResponseCode::ServFail,
        "bogus TLSA: {tampered:?}"
    );
    let good = query(r, "mx2.example.test", RecordType::A).unwrap();
    assert!(
        good.authentic_data(),
        "the rest of the zone is still secure: {good:?}"
    );
    assert!(
        dns.unbound()
            .unwrap()
            .wait_output(5, "validation failure <bad.test. MX IN>"),
        "unbound says why"
    );
}

/// Records can change under a running nsd (re-signed, SIGHUP), as MTA-STS
/// tests need when a policy id changes.
#[test]
fn dnssec_reload_serves_new_records() {
    let Some(mut dns) = SignedZones::builder()
        .zone("example.test")
        .txt("_mta-sts.example.test", "v=STSv1; id=1")
        .with_unbound()
        .start()
    else {
        return;
    };
    let txt = |dns: &SignedZones| {
        let m = query(dns.resolver_addr(), "_mta-sts.example.test", RecordType::TXT).unwrap();
        assert!(m.authentic_data(), "{m:?}");
        m.answers()
            .iter()
            .map(|r| r.data().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(txt(&dns).contains("id=1"), "{}", txt(&dns));
    dns.reload(|b| {
        b.remove("_mta-sts.example.test", "TXT")
            .txt("_mta-sts.example.test", "v=STSv1; id=2")
    });
    let now = txt(&dns);
    assert!(now.contains("id=2") && !now.contains("id=1"), "{now}");
}

/// nginx serves a file over HTTPS with the test CA's certificate for the
/// name, a redirect, a status, an oversized body and a slow one.
#[test]
fn https_nginx_serves_policies() {
    use crate::common::https::{get, Https};
    let t0 = std::time::Instant::now();
    let policy = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n";
    let Some(web) = Https::builder()
        .file("mta-sts.example.test", "/.well-known/mta-sts.txt", policy)
        .redirect(
            "mta-sts.moved.test",
            "/.well-known/mta-sts.txt",
            "https://mta-sts.example.test/",
        )
        .status("mta-sts.gone.test", "/.well-known/mta-sts.txt", 404)
        .sized("mta-sts.big.test", "/.well-known/mta-sts.txt", 100_000)
        .slow("mta-sts.slow.test", "/.well-known/mta-sts.txt", policy, 200)
        .start()
    else {
        return;
    };
    eprintln!("nginx ready in {:?}", t0.elapsed());
    let wk = "/.well-known/mta-sts.txt";
    let a = get(web.addr(), "mta-sts.example.test", wk, web.ca_pem()).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body, policy.as_bytes());
    assert_eq!(a.header("Content-Type"), Some("text/plain"));
    let r = get(web.addr(), "mta-sts.moved.test", wk, web.ca_pem()).unwrap();
    assert_eq!(
        (r.status, r.header("Location")),
        (301, Some("https://mta-sts.example.test/")),
        "{r:?}"
    );
    assert_eq!(
        get(web.addr(), "mta-sts.gone.test", wk, web.ca_pem())
            .unwrap()
            .status,
        404
    );
    let big = get(web.addr(), "mta-sts.big.test", wk, web.ca_pem()).unwrap();
    assert_eq!(big.body.len(), 100_000);
    let t = std::time::Instant::now();
    let slow = get(web.addr(), "mta-sts.slow.test", wk, web.ca_pem()).unwrap();
    assert_eq!(slow.body, policy.as_bytes());
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    // Another CA is not trusted: the certificate really is the test CA's.
    let other = crate::common::make_certs_for(&["x.test"]);
    assert!(get(web.addr(), "mta-sts.example.test", wk, &other.ca_pem).is_err());
    assert_eq!(web.requests().len(), 5, "{:?}", web.requests());
}
