use super::*;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn request_is_name_value_lines_and_an_empty_line() {
    let mut r = PolicyRequest::new(ProtocolState::Rcpt);
    r.protocol_name = "ESMTP".into();
    r.client_address = "192.0.2.1".into();
    r.client_name = "client.example.com".into();
    r.helo_name = "evil\r\nrecipient=injected".into();
    r.sender = "a@example.com".into();
    r.recipient = "b@example.org".into();
    r.ccert_subject = "CN with space+plus".into();
    r.size = 1234;
    r.encryption_keysize = 256;
    let text = String::from_utf8(r.encode()).unwrap();
    assert!(text.starts_with("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"));
    assert!(text.ends_with("\n\n"));
    assert_eq!(
        text.matches("\n\n").count(),
        1,
        "exactly one empty line, at the end"
    );
    for want in [
        "client_address=192.0.2.1\n",
        "client_name=client.example.com\n",
        "sender=a@example.com\n",
        "recipient=b@example.org\n",
        "recipient_count=0\n",
        "size=1234\n",
        "encryption_keysize=256\n",
        "ccert_subject=CN+20with+20space+2Bplus\n",
        "sasl_username=\n",
        "helo_name=evil  recipient=injected\n",
    ] {
        assert!(text.contains(want), "{want:?} missing from\n{text}");
    }
    // The injected line did not become an attribute of its own.
    assert_eq!(text.lines().filter(|l| l.starts_with("recipient=")).count(), 1);
}

#[test]
fn actions_parse_like_postfix_access_tables() {
    use PolicyAction as A;
    let some = |s: &str| Some(s.to_owned());
    for (input, want) in [
        ("OK", A::Ok),
        ("ok trailing text ignored", A::Ok),
        ("RELAY", A::Ok),
        ("DUNNO", A::Dunno),
        ("dunno", A::Dunno),
        ("REJECT", A::Reject(None)),
        ("REJECT go away", A::Reject(some("go away"))),
        ("DEFER", A::Defer(None)),
        (
            "DEFER_IF_PERMIT Greylisted, see http://x/",
            A::DeferIfPermit(some("Greylisted, see http://x/")),
        ),
        ("defer_if_reject", A::DeferIfReject(None)),
        (
            "450 4.2.0 Greylisted",
            A::Code {
                code: 450,
                text: "4.2.0 Greylisted".into(),
            },
        ),
        (
            "554 no",
            A::Code {
                code: 554,
                text: "no".into(),
            },
        ),
        (
            "PREPEND X-Greylist: delayed 2 seconds",
            A::Prepend("X-Greylist: delayed 2 seconds".into()),
        ),
        ("PREPEND not a header", A::Other("PREPEND not a header".into())),
        ("HOLD", A::Hold(None)),
        ("DISCARD spam", A::Discard(some("spam"))),
        ("WARN look at this", A::Warn("look at this".into())),
        ("INFO fyi", A::Info("fyi".into())),
        (
            "FILTER smtp:[127.0.0.1]:10025",
            A::Filter("smtp:[127.0.0.1]:10025".into()),
        ),
        ("REDIRECT a@b", A::Redirect("a@b".into())),
        ("BCC a@b", A::Bcc("a@b".into())),
        ("1234567", A::Ok),
        ("450", A::Ok),
        ("250 ok", A::Other("250 ok".into())),
        ("permit_mynetworks", A::Other("permit_mynetworks".into())),
        ("", A::Other(String::new())),
    ] {
        assert_eq!(A::parse(input), want, "{input:?}");
    }
}

#[test]
fn refusals_have_postfix_codes_and_texts() {
    let r = |s: &str| PolicyAction::parse(s).refusal().unwrap();
    assert_eq!(
        r("DEFER_IF_PERMIT Greylisted"),
        PolicyRefusal {
            code: 450,
            esc: Status(4, 7, 1),
            text: "Greylisted".into()
        }
    );
    assert_eq!(r("REJECT").code, 554);
    assert_eq!(r("REJECT").text, "Access denied");
    assert_eq!(r("DEFER").text, "Access denied");
    assert_eq!(r("DEFER_IF_REJECT").text, "Service unavailable");
    let c = r("450 4.2.0 Mailbox busy");
    assert_eq!(
        (c.code, c.esc, c.text.as_str()),
        (450, Status(4, 2, 0), "Mailbox busy")
    );
    // An enhanced code of the wrong class takes the reply's class.
    assert_eq!(r("550 4.7.1 no").esc, Status(5, 7, 1));
    assert_eq!(r("REJECT 5.7.26 DMARC").esc, Status(5, 7, 26));
    assert!(r("DEFER").is_temporary());
    assert_eq!(
        r("REJECT spam").describe("b@example.org", "Recipient address"),
        "<b@example.org>: Recipient address rejected: spam"
    );
    for no in ["OK", "DUNNO", "PREPEND X: y", "HOLD", "DISCARD", "WARN x"] {
        assert_eq!(PolicyAction::parse(no).refusal(), None, "{no}");
    }
}

#[test]
fn answers_need_an_action() {
    assert_eq!(parse_answer(b"action=DUNNO\n\n").unwrap(), PolicyAction::Dunno);
    assert_eq!(
        parse_answer(b"other=1\naction=REJECT no\n\n").unwrap(),
        PolicyAction::Reject(Some("no".into()))
    );
    assert!(parse_answer(b"\n").is_err());
    assert!(parse_answer(b"foo=bar\n\n").is_err());
    assert_eq!(answer_end(b"action=OK\n\nextra"), Some(11));
    assert_eq!(answer_end(b"action=OK\r\n\r\n"), Some(13));
    assert_eq!(answer_end(b"action=OK\n"), None);
}

#[test]
fn spec_lists_parse() {
    let defaults = PolicySpec::new(Endpoint::parse("inet:127.0.0.1:1").unwrap());
    let dur = |s: &str| {
        s.strip_suffix('s')
            .and_then(|n| n.parse().ok())
            .map(Duration::from_secs)
    };
    let l = PolicySpec::parse_list(
        "inet:127.0.0.1:10023, { unix:/run/spf.sock, stages = mail rcpt, timeout = 5s, \
             default_action = DUNNO, request_limit = 10 }",
        &defaults,
        &dur,
    )
    .unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0].stages, [ProtocolState::Rcpt]);
    assert_eq!(l[0].default_action, DEFAULT_ACTION);
    assert_eq!(l[1].stages, [ProtocolState::Mail, ProtocolState::Rcpt]);
    assert_eq!(l[1].timeout, Duration::from_secs(5));
    assert_eq!(l[1].default_action, "DUNNO");
    assert_eq!(l[1].request_limit, 10);
    for bad in [
        "{ inet:h:1, bogus = 1 }",
        "{ inet:h:1",
        "{ }",
        "nope",
        "{ inet:h:1, stages = nowhere }",
    ] {
        assert!(PolicySpec::parse_list(bad, &defaults, &dur).is_err(), "{bad:?}");
    }
}

/// A scripted policy server: answers each request with the next of `answers`
/// (None: close the connection instead), counting connections and requests.
fn server(answers: Vec<Option<&'static str>>) -> (PolicySpec, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let reqs = Arc::new(AtomicUsize::new(0));
    let (c2, r2) = (Arc::clone(&conns), Arc::clone(&reqs));
    std::thread::spawn(move || {
        let mut answers = answers.into_iter();
        for s in l.incoming() {
            let Ok(s) = s else { return };
            c2.fetch_add(1, Ordering::SeqCst);
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            'conn: loop {
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break 'conn;
                    }
                    if line == "\n" {
                        break;
                    }
                }
                r2.fetch_add(1, Ordering::SeqCst);
                match answers.next() {
                    Some(Some(a)) => w.write_all(format!("action={a}\n\n").as_bytes()).unwrap(),
                    Some(None) | None => break 'conn,
                }
            }
        }
    });
    let mut spec = PolicySpec::new(Endpoint::parse(&format!("inet:127.0.0.1:{port}")).unwrap());
    spec.retry_delay = Duration::from_millis(10);
    spec.timeout = Duration::from_secs(5);
    (spec, conns, reqs)
}

#[test]
fn one_connection_serves_many_requests() {
    let (spec, conns, reqs) = server(vec![Some("DUNNO"), Some("OK"), Some("REJECT no")]);
    let mut c = PolicyClient::new(spec);
    let req = PolicyRequest::new(ProtocolState::Rcpt);
    assert_eq!(c.query(&req), PolicyAction::Dunno);
    assert_eq!(c.query(&req), PolicyAction::Ok);
    assert_eq!(c.query(&req), PolicyAction::Reject(Some("no".into())));
    assert_eq!(
        (conns.load(Ordering::SeqCst), reqs.load(Ordering::SeqCst)),
        (1, 3)
    );
}

#[test]
fn a_dropped_connection_is_retried_then_the_default_stands() {
    // First connection dies before answering; the retry on a new one works.
    let (spec, conns, _) = server(vec![None, Some("OK")]);
    let mut c = PolicyClient::new(spec);
    assert_eq!(
        c.query(&PolicyRequest::new(ProtocolState::Rcpt)),
        PolicyAction::Ok
    );
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    // Both tries die: the default action.
    let (spec, _, reqs) = server(vec![None, None]);
    let mut c = PolicyClient::new(spec);
    assert_eq!(
        c.query(&PolicyRequest::new(ProtocolState::Rcpt)),
        PolicyAction::Code {
            code: 451,
            text: "4.3.5 Server configuration problem".into()
        }
    );
    assert_eq!(reqs.load(Ordering::SeqCst), 2);
}

#[test]
fn a_down_or_silent_service_costs_only_the_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut spec = PolicySpec::new(Endpoint::parse(&format!("inet:127.0.0.1:{port}")).unwrap());
    spec.timeout = Duration::from_millis(200);
    spec.retry_delay = Duration::from_millis(10);
    spec.default_action = "DUNNO".into();
    // Silent: accepts (the backlog does) and never answers.
    let t = Instant::now();
    let mut c = PolicyClient::new(spec.clone());
    assert_eq!(
        c.query(&PolicyRequest::new(ProtocolState::Rcpt)),
        PolicyAction::Dunno
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(t.elapsed() >= Duration::from_millis(400), "two tries of 200 ms");
    // Down: refused at once.
    drop(l);
    let t = Instant::now();
    let mut c = PolicyClient::new(spec);
    assert_eq!(
        c.query(&PolicyRequest::new(ProtocolState::Rcpt)),
        PolicyAction::Dunno
    );
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn request_limit_opens_new_connections() {
    let (mut spec, conns, _) = server(vec![Some("OK"), Some("OK"), Some("OK")]);
    spec.request_limit = 2;
    let mut c = PolicyClient::new(spec);
    for _ in 0..3 {
        assert_eq!(
            c.query(&PolicyRequest::new(ProtocolState::Rcpt)),
            PolicyAction::Ok
        );
    }
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}
