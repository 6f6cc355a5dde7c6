//! Prometheus metrics (issue 17, item 8): the real ternd with
//! `metrics_listen`, scraped over a raw socket while it accepts, refuses,
//! relays and delivers mail; every counter must move by exactly what was
//! done, and `promtool check metrics` must accept what it serves.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::{message, tools, wait_files, wait_until, Client, Setup, Tern};

/// One scrape: series (`name{labels}`) -> value.
type Scrape = BTreeMap<String, f64>;

/// GET /metrics over a raw socket; the whole text, after checking the head.
fn scrape_text(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain;version=0.0.4\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close"), "{head}");
    assert!(
        head.contains(&format!("\r\nContent-Length: {}", body.len())),
        "{head}"
    );
    body.to_owned()
}

pub(crate) fn scrape(addr: SocketAddr) -> Scrape {
    scrape_text(addr)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, v) = l.rsplit_once(' ').expect("a sample");
            (series.to_owned(), v.parse::<f64>().expect("a value"))
        })
        .collect()
}

fn metrics_addr(t: &Tern) -> SocketAddr {
    t.service_addr("metrics")
}

/// `want` (series, how much it grew) holds between `before` and `now`.
fn grew_by(before: &Scrape, now: &Scrape, want: &[(&str, f64)]) -> Vec<String> {
    want.iter()
        .filter_map(|(series, d)| {
            let b = before.get(*series).copied().unwrap_or(f64::NAN);
            let n = now.get(*series).copied().unwrap_or(f64::NAN);
            (n - b != *d).then(|| format!("{series}: {b} -> {n}, expected +{d}"))
        })
        .collect()
}

/// Scrape until every series in `want` grew by its amount (the events are
/// counted by the daemon's threads as they finish), then check it is exact.
fn expect_growth(addr: SocketAddr, before: &Scrape, want: &[(&str, f64)]) -> Scrape {
    let mut now = scrape(addr);
    wait_until(15, || {
        now = scrape(addr);
        grew_by(before, &now, want).is_empty()
    });
    let wrong = grew_by(before, &now, want);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    now
}

/// `promtool check metrics` on a scrape: it parses and passes the linter.
/// Where promtool is missing a skip is recorded (a failure under CI, which
/// installs it: .ci/run).
fn promtool_accepts(text: &str) {
    if let Some(out) = tools::promtool_check_metrics(text) {
        // promtool prints lint problems (and exits non-zero for them).
        let said = format!("{}{}", out.stdout, out.stderr);
        assert!(
            out.ok && said.trim().is_empty(),
            "promtool check metrics:\n{said}"
        );
    }
}

/// One sender (smtp, submission and smtps, TLS and AUTH), and a second ternd
/// with STARTTLS as the far end of a route; both serve metrics.
#[test]
fn counters_move_with_the_mail() {
    let dest = Setup::new()
        .tls()
        .deliver()
        .set("hostname", "mx.dest.test")
        .set("local_domains", "dest.test")
        .set("metrics_listen", "127.0.0.1:0")
        .start();
    let t = Setup::new()
        .submission()
        .deliver()
        .set("route", &format!("dest.test [127.0.0.1]:{}", dest.addr.port()))
        .set("metrics_listen", "127.0.0.1:0")
        .start();
    let (m, dm) = (metrics_addr(&t), metrics_addr(&dest));
    let (before, dest_before) = (scrape(m), scrape(dm));
    // Nothing has happened yet: every series is there, at zero.
    for series in [
        "tern_connections_total{listener=\"smtp\",outcome=\"accepted\"}",
        "tern_messages_accepted_total{source=\"smtp\"}",
        "tern_deliveries_total{transport=\"local\",status=\"sent\"}",
        "tern_queue_messages{state=\"deferred\"}",
    ] {
        assert_eq!(before.get(series), Some(&0.0), "{series}");
    }

    // One session: an unknown user refused, one local and one relayed message.
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<carol@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@example.test>").status(), "550 5.1.1");
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(message("local").as_bytes());
    assert_eq!(c.cmd(".").code, 250);
    let r = c.send_mail("carol@example.test", &["bob@dest.test"], &message("relayed"));
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("QUIT").code, 221);
    assert!(c.closed());
    // A client that hangs up without QUIT, and an HTTP request on port 25.
    let mut h = t.connect();
    assert_eq!(h.reply().code, 220);
    drop(h);
    let mut p = t.connect();
    assert_eq!(p.reply().code, 220);
    assert_eq!(p.cmd("GET / HTTP/1.0").status(), "554 5.7.0");
    assert!(p.closed());
    // Submission: STARTTLS, then a wrong password.
    let mut s = Client::connect(t.submission_addr());
    s.hello();
    let mut s = s.starttls(&t.setup.ca_pem());
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    assert_eq!(s.auth_plain("alice", "wrong").status(), "535 5.7.8");
    assert_eq!(s.cmd("QUIT").code, 221);

    assert_eq!(wait_files(&t.maildir_new("alice"), 1, 10).len(), 1);
    assert_eq!(wait_files(&dest.maildir_new("bob"), 1, 10).len(), 1);

    let after = expect_growth(
        m,
        &before,
        &[
            (
                "tern_connections_total{listener=\"smtp\",outcome=\"accepted\"}",
                3.0,
            ),
            (
                "tern_connections_total{listener=\"submission\",outcome=\"accepted\"}",
                1.0,
            ),
            (
                "tern_connections_total{listener=\"smtp\",outcome=\"refused_busy\"}",
                0.0,
            ),
            (
                "tern_sessions_closed_total{listener=\"smtp\",reason=\"quit\"}",
                1.0,
            ),
            (
                "tern_sessions_closed_total{listener=\"smtp\",reason=\"hangup\"}",
                1.0,
            ),
            (
                "tern_sessions_closed_total{listener=\"smtp\",reason=\"http_probe\"}",
                1.0,
            ),
            (
                "tern_sessions_closed_total{listener=\"submission\",reason=\"quit\"}",
                1.0,
            ),
            ("tern_sessions{listener=\"smtp\"}", 0.0),
            ("tern_messages_accepted_total{source=\"smtp\"}", 2.0),
            ("tern_messages_accepted_total{source=\"submission\"}", 0.0),
            ("tern_smtp_rejects_total{reason=\"unknown_user\"}", 1.0),
            ("tern_smtp_rejects_total{reason=\"protocol\"}", 1.0),
            ("tern_smtp_rejects_total{reason=\"auth_failed\"}", 1.0),
            ("tern_smtp_rejects_total{reason=\"relay_denied\"}", 0.0),
            (
                "tern_auth_attempts_total{listener=\"submission\",result=\"failure\"}",
                1.0,
            ),
            (
                "tern_auth_attempts_total{listener=\"submission\",result=\"success\"}",
                0.0,
            ),
            (
                "tern_tls_sessions_total{direction=\"in\",version=\"TLSv1.3\"}",
                1.0,
            ),
            (
                "tern_tls_sessions_total{direction=\"out\",version=\"TLSv1.3\"}",
                1.0,
            ),
            ("tern_tls_handshake_failures_total{direction=\"in\"}", 0.0),
            ("tern_deliveries_total{transport=\"local\",status=\"sent\"}", 1.0),
            ("tern_deliveries_total{transport=\"smtp\",status=\"sent\"}", 1.0),
            (
                "tern_deliveries_total{transport=\"local\",status=\"bounced\"}",
                0.0,
            ),
            ("tern_delivery_latency_seconds_count{transport=\"local\"}", 1.0),
            ("tern_delivery_latency_seconds_count{transport=\"smtp\"}", 1.0),
            ("tern_spool_commit_seconds_count", 2.0),
            ("tern_queue_messages{state=\"active\"}", 0.0),
            ("tern_queue_messages{state=\"deferred\"}", 0.0),
        ],
    );
    // A delivery takes less than 5 s here, and more than nothing.
    for tr in ["local", "smtp"] {
        let sum = after[&format!("tern_delivery_latency_seconds_sum{{transport=\"{tr}\"}}")];
        let fast = after[&format!("tern_delivery_latency_seconds_bucket{{transport=\"{tr}\",le=\"5\"}}")];
        assert!(
            sum > 0.0 && sum < 5.0 && fast == 1.0,
            "{tr}: sum {sum}, le=5 {fast}"
        );
    }
    assert!(after["tern_start_time_seconds"] > 1.7e9);

    // The far end saw one TLS session bring one message, delivered locally.
    expect_growth(
        dm,
        &dest_before,
        &[
            (
                "tern_connections_total{listener=\"smtp\",outcome=\"accepted\"}",
                1.0,
            ),
            ("tern_messages_accepted_total{source=\"smtp\"}", 1.0),
            (
                "tern_tls_sessions_total{direction=\"in\",version=\"TLSv1.3\"}",
                1.0,
            ),
            ("tern_deliveries_total{transport=\"local\",status=\"sent\"}", 1.0),
        ],
    );
    promtool_accepts(&scrape_text(m));
}

/// The queue by state, counted at each scrape: due messages wait as active
/// (queue_only: nothing delivers), a held one, a corrupt envelope, mail in
/// the maildrop, and the oldest message's age.
#[test]
fn queue_gauges() {
    let t = Setup::new().set("metrics_listen", "127.0.0.1:0").start();
    let m = metrics_addr(&t);
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut c = t.connect();
        c.hello();
        let r = c.send_mail(
            "carol@example.test",
            &["alice@example.test"],
            &message(&format!("m{i}")),
        );
        assert_eq!(r.code, 250, "{r:?}");
        ids.push(r.queue_id());
    }
    let out = t.setup.ternctl(&["hold", &ids[0]]);
    assert_eq!(out.code, 0, "{out:?}");
    std::fs::write(t.spool_dir().join("corrupt").join("0000000000000000"), "garbage").unwrap();
    let want = |s: &Scrape| {
        s.get("tern_queue_messages{state=\"active\"}") == Some(&2.0)
            && s.get("tern_queue_messages{state=\"hold\"}") == Some(&1.0)
            && s.get("tern_queue_messages{state=\"corrupt\"}") == Some(&1.0)
            && s.get("tern_queue_messages{state=\"deferred\"}") == Some(&0.0)
    };
    let mut s = scrape(m);
    wait_until(10, || {
        s = scrape(m);
        want(&s)
    });
    assert!(want(&s), "{s:?}");
    // The oldest waiting message is ids[1] (ids[0] is held): seconds old.
    let age = s["tern_queue_oldest_message_age_seconds"];
    assert!((0.0..60.0).contains(&age), "{age}");
    promtool_accepts(&scrape_text(m));
}

/// A message whose next hop refuses connections is deferred: counted as a
/// deferred delivery, then as the queue's deferred part until its retry.
#[test]
fn deferred_mail() {
    // A port nothing listens on any more: connections to it are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t = Setup::new()
        .deliver()
        .set("route", &format!("nowhere.test [127.0.0.1]:{}", closed.port()))
        .set("retry_initial", "1h")
        .set("metrics_listen", "127.0.0.1:0")
        .start();
    let m = metrics_addr(&t);
    let before = scrape(m);
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail("carol@example.test", &["bob@nowhere.test"], &message("later"));
    assert_eq!(r.code, 250, "{r:?}");
    let after = expect_growth(
        m,
        &before,
        &[
            (
                "tern_deliveries_total{transport=\"smtp\",status=\"deferred\"}",
                1.0,
            ),
            ("tern_deliveries_total{transport=\"smtp\",status=\"sent\"}", 0.0),
            ("tern_delivery_latency_seconds_count{transport=\"smtp\"}", 0.0),
            ("tern_queue_messages{state=\"deferred\"}", 1.0),
            ("tern_queue_messages{state=\"active\"}", 0.0),
        ],
    );
    let age = after["tern_queue_oldest_message_age_seconds"];
    assert!((0.0..60.0).contains(&age), "{age}");
}

/// The responder answers only GET and HEAD of /metrics, and closes.
#[test]
fn only_get_metrics() {
    let t = Setup::new().set("metrics_listen", "127.0.0.1:0").start();
    let m = metrics_addr(&t);
    let ask = |req: &str| {
        let mut s = TcpStream::connect(m).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(ask("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    assert!(ask("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").starts_with("HTTP/1.1 405 "));
    let head = ask("HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    // Not a port the SMTP server answers on, and no SMTP on it.
    assert!(!ask("EHLO x\r\n\r\n").starts_with("220"));
}

/// Off by default; a bad address is a configuration error; an address in
/// use fails the start, before the daemon detaches.
#[test]
fn off_by_default_and_checked() {
    let t = Setup::new().start();
    assert!(!t.log_text().contains("metrics"), "{}", t.log_text());
    let ternd = |setup: Setup, flag: &str| {
        let conf = setup.write_config();
        let args = [flag, "-f", conf.to_str().unwrap()];
        crate::common::run_program(std::path::Path::new(crate::common::TERND), &args, b"")
    };
    let out = ternd(Setup::new().set("metrics_listen", "localhost:9125"), "-n");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("metrics_listen: bad address \"localhost:9125\""),
        "{out:?}"
    );
    // The port another process holds.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = ternd(
        Setup::new().set("metrics_listen", &busy.local_addr().unwrap().to_string()),
        "-d",
    );
    assert_eq!(out.code, 71, "{out:?}");
    assert!(out.stderr.contains("metrics_listen: cannot listen on"), "{out:?}");
}
