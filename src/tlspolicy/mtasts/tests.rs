use super::fetch::{Fetcher, HostResolver};
use super::*;
use crate::deliver::dns::Security;
use std::cell::Cell;
use std::fs;
use std::net::IpAddr;
use std::sync::Arc;

#[test]
fn txt_records() {
    let ok = |s: &str, id: &str| assert_eq!(parse_record(s), Ok(StsRecord { id: id.to_owned() }), "{s}");
    ok("v=STSv1; id=20160831085700Z;", "20160831085700Z");
    ok("v=STSv1;id=abc", "abc");
    ok("v=STSv1; id=abc ; ext_1=whatever", "abc");
    ok("v=STSv1;\tid=A1;", "A1");
    ok(&format!("v=STSv1; id={}", "x".repeat(32)), &"x".repeat(32));
    for s in [
        "id=abc; v=STSv1",                          // v must come first
        "v=STSv2; id=abc",                          // unknown version
        "v=STSv1",                                  // no id
        "v=STSv1; id=",                             // empty id
        "v=STSv1; id=a-b",                          // id is alphanumeric
        &format!("v=STSv1; id={}", "x".repeat(33)), // id too long
        "v=STSv1; id=abc; -bad=1",                  // bad extension name
        "v=STSv1; id=abc; junk",                    // field without '='
        " v=STSv1; id=abc",
    ] {
        assert!(parse_record(s).is_err(), "{s}");
    }
}

#[test]
fn exactly_one_sts_record_counts() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        select_record(&s(&["v=spf1 -all", "v=STSv1; id=1"])),
        Some(StsRecord { id: "1".to_owned() })
    );
    assert_eq!(select_record(&s(&["v=STSv1; id=1", "v=STSv1; id=2"])), None);
    assert_eq!(select_record(&s(&["v=spf1 -all"])), None);
    assert_eq!(select_record(&s(&["v=STSv1; id=a-b"])), None);
    assert_eq!(select_record(&[]), None);
}

#[test]
fn mx_patterns() {
    let cases: &[(&str, &str, bool)] = &[
        ("mail.example.com", "mail.example.com", true),
        ("mail.example.com", "MAIL.Example.COM.", true),
        ("mail.example.com", "mx.example.com", false),
        ("*.example.com", "mx1.example.com", true),
        ("*.example.com", "MX1.EXAMPLE.COM", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", "a.b.example.com", false),
        ("*.example.com", "mx1.example.org", false),
        ("*.example.com", ".example.com", false),
    ];
    for (pat, host, want) in cases {
        assert_eq!(
            MxPattern::parse(pat).unwrap().matches(host),
            *want,
            "{pat} vs {host}"
        );
    }
    for bad in [
        "",
        "*.",
        "mx*.example.com",
        "a..b",
        "-a.example.com",
        "*.*.example.com",
        "ex ample.com",
    ] {
        assert!(MxPattern::parse(bad).is_err(), "{bad:?}");
    }
}

const GOOD: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";

#[test]
fn policy_grammar() {
    let p = parse_policy(GOOD).unwrap();
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.max_age, 604_800);
    assert_eq!(p.mx.len(), 3);
    assert!(p.mx_allowed("mail.example.com"));
    assert!(p.mx_allowed("a.example.net"));
    assert!(!p.mx_allowed("mail.example.org"));
    assert_eq!(
        p.policy_strings(),
        vec![
            "version: STSv1",
            "mode: enforce",
            "mx: mail.example.com",
            "mx: *.example.net",
            "mx: backupmx.example.com",
            "max_age: 604800"
        ]
    );

    // Table: body -> Ok((mode, mx count, max_age)) or Err.
    type Want = Option<(Mode, usize, u64)>;
    let table: &[(&str, Want)] = &[
        (
            "version: STSv1\nmode: testing\nmx: a.example\nmax_age: 86400\n",
            Some((Mode::Testing, 1, 86400)),
        ),
        // LF and CRLF, no final newline, whitespace after the colon
        (
            "version: STSv1\r\nmode:enforce\nmx:\ta.example\r\nmax_age:   5",
            Some((Mode::Enforce, 1, 5)),
        ),
        // mode none needs no mx
        (
            "version: STSv1\nmode: none\nmax_age: 86400\n",
            Some((Mode::None, 0, 86400)),
        ),
        // unknown fields ignored; extension with dots
        (
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nfoo.bar: baz\n",
            Some((Mode::Enforce, 1, 1)),
        ),
        // keys and keywords are case-sensitive: "Version" is an unknown key
        ("Version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n", None),
        ("version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n", None),
        ("version: stsv1\nmode: enforce\nmx: a.example\nmax_age: 1\n", None),
        // max_age above a year is a year
        (
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9999999999\n",
            Some((Mode::Enforce, 1, MAX_AGE_LIMIT)),
        ),
        // first of a repeated key counts
        (
            "version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 1\n",
            Some((Mode::Testing, 1, 1)),
        ),
        ("version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", None),
        ("mode: enforce\nmx: a.example\nmax_age: 1\n", None),
        ("version: STSv1\nmx: a.example\nmax_age: 1\n", None),
        ("version: STSv1\nmode: enforce\nmx: a.example\n", None),
        ("version: STSv1\nmode: enforce\nmax_age: 1\n", None),
        ("version: STSv1\nmode: block\nmx: a.example\nmax_age: 1\n", None),
        (
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
            None,
        ),
        (
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n",
            None,
        ),
        (
            "version: STSv1\nmode: enforce\nmx: mx*.example\nmax_age: 1\n",
            None,
        ),
        ("<html>not a policy</html>", None),
        ("", None),
    ];
    for (body, want) in table {
        let got = parse_policy(body).ok().map(|p| (p.mode, p.mx.len(), p.max_age));
        assert_eq!(got, *want, "{body:?}");
    }
}

fn txt(records: &[&str]) -> Result<Secured<Vec<String>>, DnsError> {
    Ok(Secured::indeterminate(
        records.iter().map(|s| s.to_string()).collect(),
    ))
}

fn policy(max_age: u64) -> Policy {
    parse_policy(&format!(
        "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: {max_age}\n"
    ))
    .unwrap()
}

/// A fetch that returns `result` and counts its calls.
fn fetcher(
    calls: &Cell<u32>,
    result: Result<Policy, FetchError>,
) -> impl Fn(&str) -> Result<(Policy, String), FetchError> + '_ {
    move |_d| {
        calls.set(calls.get() + 1);
        result.clone().map(|p| {
            let body = p.policy_strings().join("\n");
            (p, body)
        })
    }
}

#[test]
fn cache_survives_reopening_and_honours_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mta-sts");
    let calls = Cell::new(0);
    {
        let cache = Cache::open(&path).unwrap();
        let d = discover(
            "Example.TEST.",
            txt(&["v=STSv1; id=1"]),
            &cache,
            &fetcher(&calls, Ok(policy(3600))),
            1000,
        );
        assert!(matches!(d, Discovery::Policy { cached: false, .. }));
    }
    // A new Cache (a restarted daemon) reads the same file.
    let cache = Cache::open(&path).unwrap();
    let c = cache.get("example.test").unwrap();
    assert_eq!((c.id.as_str(), c.fetched, c.policy.max_age), ("1", 1000, 3600));
    let text = fs::read_to_string(path.join("example.test")).unwrap();
    assert!(text.contains("expires: 4600\n"), "{text}");
    // Same id, fresh: no fetch.
    let d = discover(
        "example.test",
        txt(&["v=STSv1; id=1"]),
        &cache,
        &fetcher(&calls, Ok(policy(3600))),
        1500,
    );
    assert!(matches!(
        d,
        Discovery::Policy {
            cached: true,
            failure: None,
            ..
        }
    ));
    assert_eq!(calls.get(), 1);
    // Past max_age: fetched again even with the same id.
    let d = discover(
        "example.test",
        txt(&["v=STSv1; id=1"]),
        &cache,
        &fetcher(&calls, Ok(policy(7200))),
        4600,
    );
    assert!(matches!(d, Discovery::Policy { cached: false, .. }));
    assert_eq!(calls.get(), 2);
    assert_eq!(cache.get("example.test").unwrap().policy.max_age, 7200);
    // Half of max_age passed: refreshed (RFC 8461 10.2).
    let d = discover(
        "example.test",
        txt(&["v=STSv1; id=1"]),
        &cache,
        &fetcher(&calls, Ok(policy(7200))),
        4600 + 3600,
    );
    assert!(matches!(d, Discovery::Policy { cached: false, .. }));
    assert_eq!(calls.get(), 3);
    // No tmp files left behind.
    let names: Vec<_> = fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("example.test")]);
}

/// A cache holding policy id 1 (enforce, max_age a day) of
/// example.test, fetched at 1000, and the fetch counter (at 1).
fn primed() -> (tempfile::TempDir, Cache, Cell<u32>) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let calls = Cell::new(0);
    let d = discover(
        "example.test",
        txt(&["v=STSv1; id=1"]),
        &cache,
        &fetcher(&calls, Ok(policy(86400))),
        1000,
    );
    assert!(matches!(d, Discovery::Policy { cached: false, .. }));
    (dir, cache, calls)
}

#[test]
fn a_new_id_refetches() {
    let (_dir, cache, calls) = primed();
    let mut testing = policy(86400);
    testing.mode = Mode::Testing;
    let d = discover(
        "example.test",
        txt(&["v=STSv1; id=2"]),
        &cache,
        &fetcher(&calls, Ok(testing)),
        1010,
    );
    assert_eq!(calls.get(), 2);
    match d {
        Discovery::Policy {
            policy, id, cached, ..
        } => {
            assert_eq!((policy.mode, id.as_str(), cached), (Mode::Testing, "2", false));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(cache.get("example.test").unwrap().id, "2");
}

#[test]
fn a_failed_fetch_keeps_the_cached_policy_until_it_expires() {
    let (_dir, cache, calls) = primed();
    let down = Err(FetchError::Fetch("connection refused".to_owned()));
    // New id but the policy host is down: the cached policy stays.
    let d = discover(
        "example.test",
        txt(&["v=STSv1; id=2"]),
        &cache,
        &fetcher(&calls, down.clone()),
        2000,
    );
    match &d {
        Discovery::Policy {
            id,
            cached: true,
            failure: Some(f),
            policy,
        } => {
            assert_eq!((id.as_str(), policy.mode), ("1", Mode::Enforce));
            assert_eq!(f.result_type(), "sts-policy-fetch-error");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.get(), 2);
    // Within five minutes the host is not asked again (RFC 8461 3.3).
    let d = discover(
        "example.test",
        txt(&["v=STSv1; id=2"]),
        &cache,
        &fetcher(&calls, down.clone()),
        2100,
    );
    assert!(matches!(d, Discovery::Policy { cached: true, .. }));
    assert_eq!(calls.get(), 2);
    // The TXT lookup fails, or the record is gone: still the cache.
    let d = discover(
        "example.test",
        Err(DnsError::Temporary("timeout".into())),
        &cache,
        &fetcher(&calls, down.clone()),
        2200,
    );
    assert!(matches!(d, Discovery::Policy { cached: true, .. }));
    let d = discover(
        "example.test",
        txt(&[]),
        &cache,
        &fetcher(&calls, down.clone()),
        2200,
    );
    assert!(matches!(d, Discovery::Policy { cached: true, .. }));
    // Expired and still unreachable: no policy, with the reason.
    let d = discover(
        "example.test",
        txt(&["v=STSv1; id=2"]),
        &cache,
        &fetcher(&calls, down.clone()),
        1000 + 86400,
    );
    assert_eq!(d, Discovery::NoPolicy { failure: down.err() });
}

#[test]
fn no_record_and_nothing_cached_is_no_policy() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let calls = Cell::new(0);
    let d = discover(
        "example.test",
        txt(&["v=spf1 -all"]),
        &cache,
        &fetcher(&calls, Ok(policy(1))),
        1,
    );
    assert_eq!(d, Discovery::NoPolicy { failure: None });
    let invalid = Err(FetchError::Invalid("no mode".to_owned()));
    let d = discover(
        "example.test",
        txt(&["v=STSv1; id=9"]),
        &cache,
        &fetcher(&calls, invalid.clone()),
        1,
    );
    assert_eq!(
        d,
        Discovery::NoPolicy {
            failure: invalid.err()
        }
    );
    assert_eq!(calls.get(), 1);
    // Bogus TXT is "no record" here; MTA-STS does not rest on DNSSEC.
    let bogus = Ok(Secured {
        value: vec![],
        security: Security::Bogus,
        canonical: None,
    });
    assert_eq!(
        discover("other.test", bogus, &cache, &fetcher(&calls, Ok(policy(1))), 1),
        Discovery::NoPolicy { failure: None }
    );
}

#[test]
fn a_corrupt_cache_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    fs::write(dir.path().join("example.test"), "garbage").unwrap();
    assert_eq!(cache.get("example.test"), None);
    fs::write(
        dir.path().join("example.test"),
        "version: 2\nid: 1\nfetched: 1\n\nversion: STSv1\nmode: none\nmax_age: 9\n",
    )
    .unwrap();
    assert_eq!(cache.get("example.test"), None);
    // Names that are not host names are never turned into paths.
    assert!(cache
        .put(
            "../etc",
            &Cached {
                id: "1".into(),
                fetched: 1,
                policy: policy(1),
                body: String::new()
            }
        )
        .is_err());
    assert_eq!(cache.get("../../etc/passwd"), None);
}

/// The fetcher against a real HTTPS server: a rustls server thread on
/// loopback with a certificate for `mta-sts.example.test` from a test
/// CA, answering one scripted HTTP response per connection.
mod https {
    use super::super::fetch::{Fetcher, HostResolver};
    use super::super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{BufRead, BufReader, Write};
    use std::net::IpAddr;
    use std::net::TcpListener;
    use std::sync::Arc;

    pub(super) struct Server {
        pub port: u16,
        pub ca_pem: tempfile::NamedTempFile,
    }

    /// Serve `response` (raw HTTP) to every connection; `names` go in the certificate.
    pub(super) fn serve(names: &[&str], expired: bool, response: Vec<u8>) -> Server {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        if expired {
            p.not_before = rcgen::date_time_ymd(2001, 1, 1);
            p.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let leaf = p.signed_by(&key, &ca).unwrap();
        let mut ca_pem = tempfile::NamedTempFile::new().unwrap();
        ca_pem.write_all(ca.pem().as_bytes()).unwrap();
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![CertificateDer::from(leaf.der().to_vec())],
                    PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
                )
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let cfg = Arc::clone(&cfg);
                let response = response.clone();
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(cfg).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut r = BufReader::new(&mut tls);
                    let mut line = String::new();
                    let mut path = String::new();
                    // Read the request head, then answer.
                    loop {
                        line.clear();
                        match r.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) if path.is_empty() => {
                                path = line.split(' ').nth(1).unwrap_or("").to_owned();
                            }
                            Ok(_) => {}
                        }
                    }
                    // Any other path serves a valid policy: a client that
                    // followed a redirect there would succeed.
                    let other = reply("200 OK", "text/plain", super::GOOD);
                    let response = if path == "/.well-known/mta-sts.txt" {
                        &response
                    } else {
                        &other
                    };
                    let _ = tls.write_all(response);
                    let _ = tls.flush();
                    tls.conn.send_close_notify();
                    let _ = tls.conn.complete_io(&mut tls.sock);
                });
            }
        });
        Server { port, ca_pem }
    }

    pub(super) fn reply(status: &str, ctype: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    pub(super) fn fetcher(s: &Server, timeout: Duration) -> Fetcher {
        let resolve: HostResolver = Arc::new(|host: &str| {
            if host == "mta-sts.example.test" {
                Ok(vec![IpAddr::from([127, 0, 0, 1])])
            } else {
                Err(format!("{host}: NXDOMAIN"))
            }
        });
        Fetcher::new(Some(s.ca_pem.path()), timeout, resolve)
            .unwrap()
            .with_port(s.port)
    }
}

#[test]
fn fetch_a_policy_over_verified_https() {
    let s = https::serve(
        &["mta-sts.example.test"],
        false,
        https::reply("200 OK", "text/plain; charset=utf-8", GOOD),
    );
    let f = https::fetcher(&s, Duration::from_secs(10));
    let (p, body) = f.fetch("Example.Test.").unwrap();
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(body, GOOD);
}

#[test]
fn fetch_refusals() {
    let t = Duration::from_secs(10);
    let cases: Vec<(https::Server, &str)> = vec![
        // RFC 8461 3.3: no redirects, 200 only.
        (
            https::serve(
                &["mta-sts.example.test"],
                false,
                b"HTTP/1.1 301 Moved\r\nLocation: /other\r\nContent-Length: 0\r\n\r\n".to_vec(),
            ),
            "sts-policy-fetch-error",
        ),
        (
            https::serve(
                &["mta-sts.example.test"],
                false,
                https::reply("404 Not Found", "text/plain", ""),
            ),
            "sts-policy-fetch-error",
        ),
        // Not text/plain.
        (
            https::serve(
                &["mta-sts.example.test"],
                false,
                https::reply("200 OK", "text/html", GOOD),
            ),
            "sts-policy-invalid",
        ),
        // Not a policy.
        (
            https::serve(
                &["mta-sts.example.test"],
                false,
                https::reply("200 OK", "text/plain", "hello"),
            ),
            "sts-policy-invalid",
        ),
        // Too big.
        (
            https::serve(
                &["mta-sts.example.test"],
                false,
                https::reply(
                    "200 OK",
                    "text/plain",
                    &format!("{GOOD}{}", "x: y\n".repeat(20_000)),
                ),
            ),
            "sts-policy-fetch-error",
        ),
        // Certificate for another name, or expired.
        (
            https::serve(
                &["www.example.test"],
                false,
                https::reply("200 OK", "text/plain", GOOD),
            ),
            "sts-webpki-invalid",
        ),
        (
            https::serve(
                &["mta-sts.example.test"],
                true,
                https::reply("200 OK", "text/plain", GOOD),
            ),
            "sts-webpki-invalid",
        ),
    ];
    for (s, want) in cases {
        let e = https::fetcher(&s, t).fetch("example.test").unwrap_err();
        assert_eq!(e.result_type(), want, "{e}");
    }
}

#[test]
fn fetch_with_an_untrusted_ca_is_webpki_invalid() {
    let s = https::serve(
        &["mta-sts.example.test"],
        false,
        https::reply("200 OK", "text/plain", GOOD),
    );
    let other = https::serve(&["mta-sts.example.test"], false, Vec::new());
    let resolve: HostResolver = Arc::new(|_h: &str| Ok(vec![IpAddr::from([127, 0, 0, 1])]));
    let f = Fetcher::new(Some(other.ca_pem.path()), Duration::from_secs(10), resolve)
        .unwrap()
        .with_port(s.port);
    assert_eq!(
        f.fetch("example.test").unwrap_err().result_type(),
        "sts-webpki-invalid"
    );
}

#[test]
fn fetch_times_out() {
    // A server that accepts and never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let hold = std::thread::spawn(move || {
        let c = l.accept();
        let _ = wait.recv_timeout(Duration::from_secs(5));
        drop(c);
    });
    let s = https::serve(&["mta-sts.example.test"], false, Vec::new());
    let resolve: HostResolver = Arc::new(|_h: &str| Ok(vec![IpAddr::from([127, 0, 0, 1])]));
    let f = Fetcher::new(Some(s.ca_pem.path()), Duration::from_millis(500), resolve)
        .unwrap()
        .with_port(port);
    let start = std::time::Instant::now();
    let e = f.fetch("example.test").unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(e.result_type(), "sts-policy-fetch-error");
    done.send(()).unwrap();
    hold.join().unwrap();
}

#[test]
fn unknown_policy_host_is_a_fetch_error() {
    let s = https::serve(&["mta-sts.example.test"], false, Vec::new());
    let e = https::fetcher(&s, Duration::from_secs(5))
        .fetch("nowhere.test")
        .unwrap_err();
    assert_eq!(e.result_type(), "sts-policy-fetch-error");
}
