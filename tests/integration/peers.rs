//! Smoke tests of the real peers in common/: each starts privately on
//! loopback and answers the way the feature tests will rely on. A missing
//! package is a visible skip here (a failure under CI=true).

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::common::dnssec::{query, SignedZones};

/// The headers of the messages sent through the milters.
const HEADERS: [(&str, &str); 5] = [
    ("From", "Alice <alice@example.test>"),
    ("To", "bob@example.org"),
    ("Subject", "through a milter"),
    ("Date", "Fri, 04 Dec 2026 12:00:00 +0000"),
    ("Message-ID", "<1@example.test>"),
];

fn has(m: &hickory_proto::op::Message, t: RecordType) -> bool {
    m.answers.iter().any(|r| r.record_type() == t)
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
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{name} {t}: {m:?}"
        );
        assert!(has(&m, t), "{name} {t}: {m:?}");
        assert!(m.metadata.authentic_data, "{name} {t} validated (AD): {m:?}");
    }
    let nx = query(r, "nothing.example.test", RecordType::A).unwrap();
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain, "{nx:?}");
    assert!(nx.metadata.authentic_data, "a proven NXDOMAIN is secure: {nx:?}");

    let plain = query(r, "plain.test", RecordType::MX).unwrap();
    assert!(
        has(&plain, RecordType::MX) && !plain.metadata.authentic_data,
        "insecure: {plain:?}"
    );

    let bad = query(r, "bad.test", RecordType::MX).unwrap();
    assert_eq!(
        bad.metadata.response_code,
        ResponseCode::ServFail,
        "bogus: {bad:?}"
    );
    let tampered = query(r, "_25._tcp.mx2.example.test", RecordType::TLSA).unwrap();
    assert_eq!(
        tampered.metadata.response_code,
        ResponseCode::ServFail,
        "bogus TLSA: {tampered:?}"
    );
    let good = query(r, "mx2.example.test", RecordType::A).unwrap();
    assert!(
        good.metadata.authentic_data,
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
        assert!(m.metadata.authentic_data, "{m:?}");
        m.answers
            .iter()
            .map(|r| r.data.to_string())
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

/// LMTP into Dovecot: one reply per recipient after the data (RFC 2033), an
/// unknown user refused at RCPT, a user over quota deferred (452) while the
/// other gets the mail, then delivered once the quota is raised.
#[test]
fn dovecot_lmtp_delivers_with_quota() {
    use crate::common::dovecot::Dovecot;
    use crate::common::Client;
    let t0 = std::time::Instant::now();
    let Some(mut dovecot) = Dovecot::builder().user("alice").user_quota("bob", "1K").start() else {
        return;
    };
    eprintln!("dovecot ready in {:?}", t0.elapsed());
    let big = format!("Subject: lmtp\r\n\r\n{}\r\n", "x".repeat(3000));
    let lmtp = dovecot.lmtp_addr();
    let send = |rcpts: &[&str]| -> Vec<String> {
        let mut c = Client::connect(lmtp);
        assert_eq!(c.reply().code, 220);
        let l = c.cmd("LHLO tern.test");
        assert!(l.lines.iter().any(|x| x.contains("PIPELINING")), "{l:?}");
        assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
        let mut accepted = 0;
        let mut out = Vec::new();
        for r in rcpts {
            let rep = c.cmd(&format!("RCPT TO:<{r}>"));
            out.push(format!("RCPT {r}: {}", rep.text()));
            if rep.code == 250 {
                accepted += 1;
            }
        }
        assert_eq!(c.cmd("DATA").code, 354);
        c.send_raw(big.as_bytes());
        c.send_raw(b".\r\n");
        for _ in 0..accepted {
            out.push(c.reply().text());
        }
        c.cmd("QUIT");
        out
    };
    let replies = send(&["alice", "bob", "nobody"]);
    assert!(replies[2].contains("550 5.1.1"), "{replies:?}");
    assert!(replies[3].starts_with("250 2.0.0 <alice>"), "{replies:?}");
    assert!(replies[4].starts_with("452 4.2.2 <bob>"), "quota: {replies:?}");
    assert_eq!(dovecot.wait_messages("alice", 1).len(), 1);
    assert!(dovecot.messages("alice")[0].contains("Subject: lmtp"));
    assert!(dovecot.messages("bob").is_empty());
    dovecot.set_quota("bob", Some("10M"));
    let replies = send(&["bob"]);
    assert!(
        replies[1].starts_with("250 2.0.0 <bob>"),
        "{replies:?}\n{}",
        dovecot.log()
    );
    assert_eq!(dovecot.wait_messages("bob", 1).len(), 1);
    // The UNIX socket is there for lmtp:unix: routes.
    assert!(std::os::unix::net::UnixStream::connect(dovecot.lmtp_socket()).is_ok());
}

/// A message from a DKIM domain through OpenDKIM, driven by the milter
/// client: it negotiates, signs, and its signature verifies with dkimpy.
#[test]
fn opendkim_signs_and_dkimpy_verifies() {
    use crate::common::milter::{flags, Action, MilterClient, Reply};
    use crate::common::opendkim::OpenDkim;
    let t0 = std::time::Instant::now();
    let Some(dkim) = OpenDkim::builder().sign("example.test", "sel").start() else {
        return;
    };
    eprintln!("opendkim ready in {:?}", t0.elapsed());
    let mut c = MilterClient::connect(dkim.addr()).unwrap();
    assert_eq!(c.version, 6);
    assert!(
        c.protocol & flags::HDR_LEADSPC != 0,
        "OpenDKIM asks for leading spaces: {:#x}",
        c.protocol
    );
    let headers = HEADERS;
    let body = "Hello,\r\nthis is signed.\r\n";
    let (stage, reply) = c
        .message("alice@example.test", &["bob@example.org"], &headers, body)
        .unwrap();
    assert_eq!((stage, &reply), ("eom", &Reply::Accept), "{:?}", c.eom_actions);
    let sig = c
        .eom_actions
        .iter()
        .find_map(|a| match a {
            Action::InsHeader(_, n, v) | Action::AddHeader(n, v) if n == "DKIM-Signature" => Some(v.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no DKIM-Signature in {:?}", c.eom_actions));
    c.quit();
    assert!(sig.contains("d=example.test") && sig.contains("s=sel"), "{sig}");
    // As an MTA would insert it: the value keeps its leading space, bare LF
    // folds become CRLF.
    let mut msg = format!(
        "DKIM-Signature:{}\r\n",
        sig.replace("\r\n", "\n").replace('\n', "\r\n")
    );
    for (n, v) in headers {
        msg.push_str(&format!("{n}: {v}\r\n"));
    }
    msg.push_str("\r\n");
    msg.push_str(body);
    let (name, txt) = dkim.txt_record("example.test", "sel");
    let Some(verdict) = crate::common::tools::dkim_verify(msg.as_bytes(), &[(&name, &txt)]) else {
        return;
    };
    verdict.unwrap_or_else(|e| panic!("dkimpy: {e}\n{msg}"));
    // And a changed body does not verify: the check is real.
    let bad = msg.replace("this is signed", "this is changed");
    assert!(
        crate::common::tools::dkim_verify(bad.as_bytes(), &[(&name, &txt)])
            .unwrap()
            .is_err()
    );
}

/// The test milter does what the spec (environment) and the message's
/// X-Test-Milter header ask, and logs what the MTA sent.
#[test]
fn test_milter_performs_each_action() {
    use crate::common::milter::{Action, MilterClient, Reply, TestMilter};
    let t0 = std::time::Instant::now();
    let Some(m) = TestMilter::start("rcpt(bad@) reject; helo(reply.test) reply 550 5.7.1 go away") else {
        return;
    };
    eprintln!("test milter ready in {:?}", t0.elapsed());
    let spec = "eom addheader X-Added yes it is; eom insheader 0 X-First first; eom chgheader Subject 1 new subject; \
                eom delheader X-Drop 1; eom replacebody new\\r\\nbody\\r\\n; eom addrcpt extra@example.test; \
                eom addrcpt par@example.test NOTIFY=NEVER; eom delrcpt bob@example.test; \
                eom chgfrom other@example.test SIZE=10; eom quarantine held for review; eom progress";
    let mut c = MilterClient::connect(m.addr()).unwrap();
    let headers = [("Subject", "old"), ("X-Drop", "x"), ("X-Test-Milter", spec)];
    let (stage, reply) = c
        .message(
            "alice@example.test",
            &["bob@example.test"],
            &headers,
            "old body\r\n",
        )
        .unwrap();
    assert_eq!((stage, reply), ("eom", Reply::Continue));
    let want = [
        Action::Progress,
        Action::AddHeader("X-Added".into(), "yes it is".into()),
        Action::InsHeader(0, "X-First".into(), "first".into()),
        Action::ChgHeader(1, "Subject".into(), "new subject".into()),
        Action::ChgHeader(1, "X-Drop".into(), String::new()),
        Action::ReplBody(b"new\r\nbody\r\n".to_vec()),
        Action::AddRcpt("<extra@example.test>".into()),
        Action::AddRcptPar("<par@example.test>".into(), "NOTIFY=NEVER".into()),
        Action::DelRcpt("<bob@example.test>".into()),
        Action::ChgFrom("<other@example.test>".into(), "SIZE=10".into()),
        Action::Quarantine("held for review".into()),
    ];
    for w in &want {
        assert!(
            c.eom_actions.contains(w),
            "{w:?} missing from {:?}",
            c.eom_actions
        );
    }
    c.quit();
    // Stage replies from the spec given at start.
    let mut c = MilterClient::connect(m.addr()).unwrap();
    let (stage, reply) = c
        .message("a@example.test", &["bad@example.test"], &[], "x\r\n")
        .unwrap();
    assert_eq!((stage, reply), ("rcpt", Reply::Reject));
    c.quit();
    let mut c = MilterClient::connect(m.addr()).unwrap();
    c.connect_step("client.test", "127.0.0.1", 40000).unwrap();
    assert_eq!(
        c.helo("reply.test").unwrap(),
        Reply::Code("550 5.7.1 go away".into())
    );
    c.quit();
    // Every stage reached the log, with the macros the client sent.
    let ev = m.wait_event(5, "eom").expect("eom event");
    assert_eq!(ev.args, vec!["10".to_owned()], "body length: {ev:?}");
    let conn = m.events().into_iter().find(|e| e.stage == "connect").unwrap();
    assert_eq!(
        conn.macros.get("{client_addr}").map(String::as_str),
        Some("127.0.0.1"),
        "{conn:?}"
    );
    let rcpt = m.events().into_iter().find(|e| e.stage == "rcpt").unwrap();
    assert_eq!(
        rcpt.macros.get("{rcpt_addr}").map(String::as_str),
        Some("bob@example.test"),
        "{rcpt:?}"
    );
    let hdr = m.events().into_iter().find(|e| e.stage == "header").unwrap();
    assert_eq!(hdr.args, vec!["Subject".to_owned(), "old".to_owned()]);
}

/// rspamd's milter rejects the GTUBE string and adds its headers to a clean
/// message.
#[test]
fn rspamd_milter_rejects_gtube_and_adds_headers() {
    use crate::common::milter::{Action, MilterClient, Reply};
    use crate::common::rspamd::{Rspamd, GTUBE};
    let t0 = std::time::Instant::now();
    let Some(rspamd) = Rspamd::start() else {
        return;
    };
    eprintln!("rspamd ready in {:?}", t0.elapsed());
    // One message through rspamd: the step it ended at, its reply, the changes.
    let scan = |body: &str| {
        let mut c = MilterClient::connect(rspamd.addr()).unwrap();
        let (stage, reply) = c
            .message("alice@example.test", &["bob@example.test"], &HEADERS, body)
            .unwrap();
        let actions = c.eom_actions.clone();
        c.quit();
        (stage, reply, actions)
    };
    let (stage, reply, actions) = scan(&format!("Hi\r\n{GTUBE}\r\n"));
    assert_eq!(stage, "eom");
    match &reply {
        Reply::Code(text) => assert!(text.starts_with("554 5.7.1 Gtube pattern"), "{text}"),
        other => panic!("GTUBE not rejected: {other:?} {actions:?}"),
    }
    let (stage, reply, actions) =
        scan("A plain message, see http://example.com/x or mail bob@example.org.\r\n");
    assert_eq!(stage, "eom");
    assert!(matches!(reply, Reply::Accept | Reply::Continue), "{reply:?}");
    let names: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::AddHeader(n, _) | Action::InsHeader(_, n, _) | Action::ChgHeader(_, n, _) => {
                Some(n.as_str())
            }
            _ => None,
        })
        .collect();
    assert!(names.contains(&"X-Spamd-Result"), "{actions:?}");
}

/// postgrey answers a first policy request with DEFER_IF_PERMIT and the same
/// triplet after its delay with PREPEND X-Greylist (a pass).
#[test]
fn postgrey_defers_then_passes() {
    use crate::common::postgrey::{policy_request, Postgrey};
    let t0 = std::time::Instant::now();
    let Some(grey) = Postgrey::start(1) else {
        return;
    };
    eprintln!("postgrey ready in {:?}", t0.elapsed());
    let req = [
        ("protocol_state", "RCPT"),
        ("protocol_name", "ESMTP"),
        ("client_address", "127.0.0.1"),
        ("client_name", "localhost"),
        ("helo_name", "client.test"),
        ("sender", "alice@example.test"),
        ("recipient", "bob@example.test"),
        ("queue_id", ""),
        ("instance", "1.2.3"),
        ("size", "0"),
    ];
    let first = policy_request(grey.addr(), &req).unwrap();
    assert!(
        first.starts_with("DEFER_IF_PERMIT Greylisted by the test postgrey"),
        "{first}"
    );
    // Too early: still deferred.
    assert!(policy_request(grey.addr(), &req)
        .unwrap()
        .starts_with("DEFER_IF_PERMIT"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let later = policy_request(grey.addr(), &req).unwrap();
    assert!(later.starts_with("PREPEND X-Greylist: delayed "), "{later}");
    assert!(
        grey.process().wait_output(5, "action=pass, reason=triplet found"),
        "{}",
        grey.process().tail()
    );
}

/// A private Postfix takes mail over SMTP (STARTTLS offered, CHUNKING
/// advertised), stores it for its own domain, refuses unknown users, and
/// relays the rest to a ternd, which delivers it.
#[test]
fn postfix_receives_and_relays_to_ternd() {
    use crate::common::postfix::Postfix;
    use crate::common::{message, Client, Setup};
    let tern = Setup::new().deliver().start();
    let t0 = std::time::Instant::now();
    let Some(pf) = Postfix::builder()
        .mailbox("carol@example.org")
        .relay_to(tern.addr)
        .tls()
        .start()
    else {
        return;
    };
    eprintln!("postfix ready in {:?}", t0.elapsed());
    let mut c = Client::connect(pf.addr());
    assert_eq!(c.reply().code, 220);
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.lines.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
    assert!(ehlo.lines.iter().any(|l| l.contains("CHUNKING")), "{ehlo:?}");
    assert_eq!(c.cmd("MAIL FROM:<x@example.net>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@example.org>").code, 550);
    assert_eq!(c.cmd("RSET").code, 250);
    let r = c.send_mail(
        "x@example.net",
        &["carol@example.org", "alice@example.test"],
        &message("via postfix"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    c.cmd("QUIT");
    let mine = pf.wait_messages("carol@example.org", 1, 20);
    assert_eq!(mine.len(), 1, "{}", pf.log());
    assert!(mine[0].contains("Subject: via postfix"));
    let relayed = crate::common::wait_files(&tern.maildir_new("alice"), 1, 20);
    assert_eq!(relayed.len(), 1, "{}\n{}", pf.log(), tern.log_text());
    assert!(pf.wait_log(5, "status=sent"), "{}", pf.log());
}

/// pflogsumm counts a Postfix-style log; promtool passes good metrics and
/// fails bad ones; dkimpy signs (RSA and Ed25519) and verifies its own
/// signatures and refuses a changed message.
#[test]
fn log_metrics_and_dkim_tools_judge() {
    use crate::common::tools;
    let log = "Dec  4 12:00:00 mx postfix/smtpd[100]: 4AB12: client=client.test[127.0.0.1]\n\
               Dec  4 12:00:00 mx postfix/cleanup[101]: 4AB12: message-id=<1@example.test>\n\
               Dec  4 12:00:00 mx postfix/qmgr[102]: 4AB12: from=<a@example.test>, size=500, nrcpt=2 (queue active)\n\
               Dec  4 12:00:01 mx postfix/local[103]: 4AB12: to=<b@example.test>, relay=local, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (delivered to maildir)\n\
               Dec  4 12:00:01 mx postfix/smtp[104]: 4AB12: to=<c@example.net>, relay=mx.example.net[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=4.4.1, status=deferred (connect to mx.example.net[192.0.2.1]:25: Connection refused)\n\
               Dec  4 12:00:02 mx postfix/smtpd[100]: NOQUEUE: reject: RCPT from client.test[127.0.0.1]: 550 5.1.1 <x@example.test>: Recipient address rejected: User unknown; from=<a@example.test> to=<x@example.test> proto=ESMTP helo=<client.test>\n";
    let Some(sum) = tools::pflogsumm(log, &[]) else {
        return;
    };
    assert!(sum.ok, "{}", sum.stderr);
    for (what, n) in [
        ("received", 1),
        ("delivered", 1),
        ("deferred", 1),
        ("rejected", 1),
    ] {
        assert_eq!(
            tools::pflogsumm_total(&sum.stdout, what),
            Some(n),
            "{what}:\n{}",
            sum.stdout
        );
    }

    let good = "# HELP tern_messages_accepted_total Messages accepted.\n# TYPE tern_messages_accepted_total counter\ntern_messages_accepted_total 3\n";
    let Some(ok) = tools::promtool_check_metrics(good) else {
        return;
    };
    assert!(ok.ok, "{ok:?}");
    let bad = "# TYPE tern_accepted counter\ntern_accepted 3\n";
    let lint = tools::promtool_check_metrics(bad).unwrap();
    assert!(!lint.ok, "a counter without _total is linted: {lint:?}");
    let broken = tools::promtool_check_metrics("tern_x{ 3\n").unwrap();
    assert!(!broken.ok, "{broken:?}");

    let msg = b"From: a@example.test\r\nTo: b@example.org\r\nSubject: dkimpy\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\nMessage-ID: <3@example.test>\r\n\r\nBody.\r\n";
    require_tool!("opendkim-genkey");
    let (rsa_key, rsa_txt) = crate::common::opendkim::dkim_key("example.test", "rsa");
    let rsa_pem = std::fs::read_to_string(rsa_key).unwrap();
    let Some((ed_key, ed_txt)) = tools::dkim_ed25519_key() else {
        return;
    };
    let sig_rsa = tools::dkim_sign(msg, "rsa", "example.test", &rsa_pem, false).unwrap();
    let sig_ed = tools::dkim_sign(msg, "ed", "example.test", &ed_key, true).unwrap();
    assert!(sig_ed.contains("a=ed25519-sha256"), "{sig_ed}");
    let keys = [
        ("rsa._domainkey.example.test", rsa_txt.as_str()),
        ("ed._domainkey.example.test", ed_txt.as_str()),
    ];
    let signed = [sig_ed.as_bytes(), sig_rsa.as_bytes(), msg].concat();
    tools::dkim_verify(&signed, &keys).unwrap().unwrap();
    let tampered = String::from_utf8(signed).unwrap().replace("Body.", "B0dy.");
    assert!(tools::dkim_verify(tampered.as_bytes(), &keys).unwrap().is_err());
}
