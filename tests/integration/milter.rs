//! The milter client (src/milter/) against real milters from Debian, started by
//! the shared harness (common/opendkim.rs, rspamd.rs, milter.rs): OpenDKIM
//! signing and verifying, rspamd refusing GTUBE, and the libmilter test milter
//! (python3-milter) doing every reply and modification. The library is driven
//! directly, as the session will drive it.

use std::time::{Duration, Instant};

use tern::endpoint::Endpoint;
use tern::milter::edit;
use tern::milter::protocol::SMFIP_HDR_LEADSPC;
use tern::milter::reply_text::ReplyText;
use tern::milter::{
    Chain, ConnectInfo, EnvelopeEdit, EomOutcome, Field, Macros, Message, Milter, MilterSpec, Modification,
    RcptEdit, Refusal, Verdict,
};
use tern::smtp::status::Status;

use super::common::milter::TestMilter;
use super::common::opendkim::OpenDkim;
use super::common::rspamd::{self, Rspamd};
use super::common::tools;

fn spec(conf: &str) -> MilterSpec {
    let mut s = MilterSpec::new(Endpoint::parse(conf).unwrap());
    s.timeouts.connect = Duration::from_secs(5);
    s.timeouts.command = Duration::from_secs(10);
    s.timeouts.content = Duration::from_secs(20);
    s
}

fn macros(queue_id: &str) -> Macros {
    Macros {
        j: Some("mx.example.org".into()),
        daemon_name: Some("tern".into()),
        v: Some("tern test".into()),
        daemon_addr: Some("127.0.0.1".into()),
        client_addr: Some("127.0.0.1".into()),
        client_port: Some("40000".into()),
        client_name: Some("localhost".into()),
        client_ptr: Some("localhost".into()),
        queue_id: Some(queue_id.into()),
        mail_addr: Some("a@example.org".into()),
        rcpt_addr: Some("b@example.org".into()),
        ..Macros::default()
    }
}

fn local_client() -> ConnectInfo {
    ConnectInfo {
        hostname: "localhost".into(),
        addr: Some("127.0.0.1:40000".parse().unwrap()),
    }
}

/// A message as the spool holds it (LF), tern's Received: first and hidden,
/// with `extra` header lines and `body`.
fn message_with(subject: &str, extra: &str, body: &str) -> Message {
    let text = format!(
        "Received: from localhost (localhost [127.0.0.1])\n\tby mx.example.org (tern) with ESMTP id 19A2B3C4D5E;\n\
         \tSat, 5 Dec 2026 10:00:00 +0000\n\
         From: Alice <a@example.org>\nTo: Bob <b@example.org>\nSubject: {subject}\n\
         Date: Sat, 5 Dec 2026 10:00:00 +0000\nMessage-ID: <1@example.org>\nX-Delete-Me: please\n{extra}\n{body}"
    );
    let mut m = Message::parse(text.as_bytes());
    m.hide_first(1);
    m
}

fn message(subject: &str) -> Message {
    message_with(subject, "", "Hello Bob,\n\nthis is a test.\n")
}

fn envelope() -> EnvelopeEdit {
    EnvelopeEdit {
        sender: "a@example.org".into(),
        sender_args: None,
        recipients: vec![RcptEdit::new("b@example.org")],
    }
}

/// The spool's LF message as it goes on the wire (CRLF), for a DKIM verifier.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// One whole transaction through `m`: envelope stages, then the message.
fn transaction(m: &mut Milter, msg: &Message, mac: &Macros) -> EomOutcome {
    assert_eq!(m.mail(&["<a@example.org>"], mac), Verdict::Continue);
    assert_eq!(m.rcpt(&["<b@example.org>"], mac), Verdict::Continue);
    assert_eq!(m.data(mac), Verdict::Continue);
    m.message(msg, mac)
}

/// The value of the first added or inserted header called `name`.
fn added(out: &EomOutcome, name: &str) -> Option<String> {
    out.modifications.iter().find_map(|md| match md {
        Modification::InsertHeader { name: n, value, .. } | Modification::AddHeader { name: n, value }
            if n.eq_ignore_ascii_case(name) =>
        {
            Some(String::from_utf8_lossy(value).into_owned())
        }
        _ => None,
    })
}

#[test]
fn opendkim_signs_and_the_signature_verifies() {
    let Some(dkim) = OpenDkim::builder().sign("example.org", "test").start() else {
        return;
    };
    let mut m = Milter::new(spec(&dkim.conf()));
    let mac = macros("19A2B3C4D5E");
    assert_eq!(m.connect(&local_client(), &mac), Verdict::Continue);
    // Issue 19's fact: OpenDKIM asks for header values with their leading space.
    assert!(m.negotiated().unwrap().leading_space(), "{:?}", m.negotiated());
    assert_eq!(m.helo("localhost", &mac), Verdict::Continue);
    let mut msg = message("signed by opendkim");
    let out = transaction(&mut m, &msg, &mac);
    // OpenDKIM answers SMFIR_ACCEPT at the end of a message.
    assert!(out.verdict.is_go_on(), "{:?}", out.verdict);
    let sig =
        added(&out, "DKIM-Signature").unwrap_or_else(|| panic!("no signature: {:?}", out.modifications));
    // Stored with its one leading space, folded with LF and a tab, no CR.
    assert!(
        sig.starts_with(" v=1;") && sig.contains("\n\t") && !sig.contains('\r'),
        "{sig}"
    );
    edit::apply(&mut msg, &mut envelope(), &out.modifications);
    m.abort();
    m.quit();
    let signed = msg.to_bytes();
    let text = String::from_utf8_lossy(&signed).into_owned();
    // Inserted at index 0, so above tern's own Received: (as with Postfix).
    assert!(text.starts_with("DKIM-Signature: v=1;"), "{text}");
    assert!(text.contains("\nReceived: from localhost"), "{text}");
    let (name, txt) = dkim.txt_record("example.org", "test");
    let Some(verdict) = tools::dkim_verify(&crlf(&signed), &[(&name, &txt)]) else {
        return;
    };
    assert_eq!(verdict, Ok(()), "{text}");
    // The verifier is not a rubber stamp: one changed body byte fails it.
    let tampered = text.replace("this is a test", "this is a tesT");
    assert!(tools::dkim_verify(&crlf(tampered.as_bytes()), &[(&name, &txt)])
        .unwrap()
        .is_err());
}

#[test]
fn opendkim_verifies_mail_from_outside() {
    let Some(dkim) = OpenDkim::builder().sign("example.org", "test").start() else {
        return;
    };
    // Sign as an internal client first.
    let mut m = Milter::new(spec(&dkim.conf()));
    let mac = macros("1111111111A");
    m.connect(&local_client(), &mac);
    let mut msg = message("verify me");
    let out = transaction(&mut m, &msg, &mac);
    edit::apply(&mut msg, &mut envelope(), &out.modifications);
    m.quit();
    // The same message arrives from outside; the receiving MTA's own Received:
    // on top is hidden, the signature and everything else shown.
    let mut outside = Milter::new(spec(&dkim.conf()));
    let mut mac = macros("2222222222B");
    mac.client_addr = Some("192.0.2.1".into());
    let info = ConnectInfo {
        hostname: "mail.example.net".into(),
        addr: Some("192.0.2.1:25000".parse().unwrap()),
    };
    assert_eq!(outside.connect(&info, &mac), Verdict::Continue);
    let mut received = Message::parse(&msg.to_bytes());
    let mut ours = Field::new(
        "Received",
        b" from mail.example.net ([192.0.2.1]) by mx2.example.org (tern)",
    );
    ours.hidden = true;
    received.fields.insert(0, ours);
    let out = transaction(&mut outside, &received, &mac);
    outside.quit();
    let ar = added(&out, "Authentication-Results").unwrap_or_else(|| panic!("{:?}", out.modifications));
    assert!(ar.contains("dkim=pass"), "{ar}");
}

#[test]
fn rspamd_rejects_gtube_and_adds_its_headers_to_clean_mail() {
    let Some(rs) = Rspamd::start() else { return };
    let mut m = Milter::new(spec(&rs.conf()));
    let mac = macros("3333333333C");
    assert_eq!(m.connect(&local_client(), &mac), Verdict::Continue);
    assert_eq!(m.helo("localhost", &mac), Verdict::Continue);
    let spam = message_with("spam", "", &format!("Hello,\n\n{}\n", rspamd::GTUBE));
    let out = transaction(&mut m, &spam, &mac);
    match &out.verdict {
        Verdict::Reject(Refusal::Custom(r)) => {
            assert_eq!((r.code, r.esc), (554, Some(Status(5, 7, 1))), "{r:?}")
        }
        Verdict::Reject(Refusal::Plain) => {}
        other => panic!("GTUBE not rejected: {other:?}"),
    }
    m.abort();
    let out = transaction(&mut m, &message("clean"), &mac);
    m.quit();
    assert!(out.verdict.is_go_on(), "{:?}", out.verdict);
    assert!(added(&out, "X-Spamd-Result").is_some(), "{:?}", out.modifications);
}

#[test]
fn test_milter_every_modification_and_quarantine() {
    let Some(tm) = TestMilter::start("") else { return };
    let mut m = Milter::new(spec(&tm.conf()));
    let mac = macros("4444444444D");
    assert_eq!(m.connect(&local_client(), &mac), Verdict::Continue);
    assert_eq!(m.negotiated().unwrap().steps & SMFIP_HDR_LEADSPC, 0);
    // What to do, told by the message itself (test_milter.py's X-Test-Milter).
    let todo = "X-Test-Milter: eom addheader X-Test-Added yes; eom insheader 0 X-Test-Inserted top; \
                eom chgheader Subject 1 changed subject; eom delheader X-Delete-Me 1; \
                eom replacebody replaced body\\r\\nsecond line\\r\\n; eom addrcpt added@example.net; \
                eom addrcpt added2@example.net NOTIFY=NEVER; eom delrcpt b@example.org; \
                eom chgfrom new-sender@example.com RET=HDRS; eom quarantine held by test milter; eom accept\n";
    let mut msg = message_with("all actions", todo, "old body\n");
    let out = transaction(&mut m, &msg, &mac);
    assert_eq!(out.verdict, Verdict::Accept);
    assert_eq!(out.quarantine.as_deref(), Some("held by test milter"));
    let mut env = envelope();
    let warnings = edit::apply(&mut msg, &mut env, &out.modifications);
    assert!(warnings.is_empty(), "{warnings:?}");
    m.abort();
    m.quit();
    let text = String::from_utf8(msg.to_bytes()).unwrap();
    // Inserted at index 0: above tern's own Received:.
    assert!(
        text.starts_with("X-Test-Inserted: top\nReceived: from localhost"),
        "{text}"
    );
    assert!(text.contains("\nSubject: changed subject\n"), "{text}");
    assert!(!text.contains("\nX-Delete-Me:"), "{text}");
    assert!(text.contains("\nX-Test-Added: yes\n\n"), "{text}");
    assert!(text.ends_with("\n\nreplaced body\nsecond line\n"), "{text}");
    assert_eq!(env.sender, "new-sender@example.com");
    assert_eq!(env.sender_args.as_deref(), Some("RET=HDRS"));
    let rcpts: Vec<(&str, Option<&str>)> = env
        .recipients
        .iter()
        .map(|r| (r.addr.as_str(), r.args.as_deref()))
        .collect();
    assert_eq!(
        rcpts,
        [
            ("added@example.net", None),
            ("added2@example.net", Some("NOTIFY=NEVER"))
        ]
    );
}

#[test]
fn test_milter_replies_at_every_stage_in_one_session() {
    let Some(tm) = TestMilter::start(
        "mail(tempfail@) tempfail; rcpt(reject@) reject; rcpt(temp@) tempfail; \
         rcpt(custom@) reply 550 5.1.1 custom rejection",
    ) else {
        return;
    };
    let mut m = Milter::new(spec(&tm.conf()));
    let mac = macros("5555555555E");
    assert_eq!(m.connect(&local_client(), &mac), Verdict::Continue);
    assert_eq!(m.helo("localhost", &mac), Verdict::Continue);
    assert_eq!(
        m.mail(&["<tempfail@example.org>"], &mac),
        Verdict::Tempfail(Refusal::Plain)
    );
    m.abort();
    assert_eq!(m.mail(&["<a@example.org>", "SIZE=300"], &mac), Verdict::Continue);
    assert_eq!(
        m.rcpt(&["<reject@example.org>"], &mac),
        Verdict::Reject(Refusal::Plain)
    );
    assert_eq!(
        m.rcpt(&["<temp@example.org>"], &mac),
        Verdict::Tempfail(Refusal::Plain)
    );
    assert_eq!(
        m.rcpt(&["<custom@example.org>"], &mac),
        Verdict::Reject(Refusal::Custom(ReplyText {
            code: 550,
            esc: Some(Status(5, 1, 1)),
            lines: vec!["custom rejection".into()],
        }))
    );
    assert_eq!(m.rcpt(&["<b@example.org>"], &mac), Verdict::Continue);
    // test_milter.py's DATA callback is @noreply: SMFIP_NR_DATA, not waited for.
    assert_eq!(m.data(&mac), Verdict::Continue);
    let msg = message_with("x", "X-Test-Milter: eom reject\n", "b\n");
    assert_eq!(m.message(&msg, &mac).verdict, Verdict::Reject(Refusal::Plain));
    // Each following message in the same session, after abort() as the session does.
    for (todo, want) in [
        ("eom tempfail", Verdict::Tempfail(Refusal::Plain)),
        ("eom discard", Verdict::Discard),
        (
            "eom reply 554 5.7.1 no thanks, 100%% sure",
            Verdict::Reject(Refusal::Custom(ReplyText {
                code: 554,
                esc: Some(Status(5, 7, 1)),
                lines: vec!["no thanks, 100% sure".into()],
            })),
        ),
        ("eom continue", Verdict::Continue),
    ] {
        m.abort();
        let msg = message_with("x", &format!("X-Test-Milter: {todo}\n"), "b\n");
        let out = transaction(&mut m, &msg, &mac);
        assert_eq!(out.verdict, want, "{todo}");
        assert!(out.modifications.is_empty());
    }
    m.quit();
}

#[test]
fn test_milter_sees_macros_headers_and_body() {
    let Some(tm) = TestMilter::start("") else { return };
    let mut m = Milter::new(spec(&tm.conf()));
    let mac = macros("6666666666F");
    m.connect(&local_client(), &mac);
    m.helo("localhost", &mac);
    let out = transaction(&mut m, &message("look"), &mac);
    m.quit();
    assert!(out.verdict.is_go_on());
    let eom = tm.wait_event(10, "eom").expect("eom event");
    let events = tm.events();
    let at = |stage: &str| {
        events
            .iter()
            .find(|e| e.stage == stage)
            .unwrap_or_else(|| panic!("{events:?}"))
    };
    let connect = at("connect");
    assert_eq!(connect.args, ["localhost", "127.0.0.1"]);
    for (k, v) in [
        ("j", "mx.example.org"),
        ("{daemon_name}", "tern"),
        ("{client_addr}", "127.0.0.1"),
        ("v", "tern test"),
        ("_", "localhost [127.0.0.1]"),
    ] {
        assert_eq!(
            connect.macros.get(k).map(String::as_str),
            Some(v),
            "{k}: {:?}",
            connect.macros
        );
    }
    assert_eq!(
        at("mail").macros.get("i").map(String::as_str),
        Some("6666666666F")
    );
    assert_eq!(
        at("mail").macros.get("{mail_addr}").map(String::as_str),
        Some("a@example.org")
    );
    assert_eq!(
        at("rcpt").macros.get("{rcpt_addr}").map(String::as_str),
        Some("b@example.org")
    );
    // Our own Received: is not shown to milters, and values lose the space.
    let headers: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.stage == "header")
        .map(|e| (e.args[0].as_str(), e.args[1].as_str()))
        .collect();
    assert_eq!(
        headers.iter().map(|h| h.0).collect::<Vec<_>>(),
        ["From", "To", "Subject", "Date", "Message-ID", "X-Delete-Me"]
    );
    assert_eq!(headers[2], ("Subject", "look"));
    // The body in CRLF, and its length at the end.
    let body = "Hello Bob,\r\n\r\nthis is a test.\r\n";
    assert_eq!(at("body").args, [body]);
    assert_eq!(eom.args, [body.len().to_string()]);
}

#[test]
fn test_milter_progress_keeps_a_slow_answer_alive_and_silence_costs_the_timeout() {
    // Three SMFIR_PROGRESS a second apart, then the answer: 3 s in all, with a
    // content limit of 1.5 s that each progress starts again.
    let Some(tm) = TestMilter::start("eom progress; eom progress; eom progress; rcpt(slow@) sleep 5") else {
        return;
    };
    let mut sp = spec(&tm.conf());
    sp.timeouts.content = Duration::from_millis(1500);
    sp.timeouts.command = Duration::from_secs(1);
    let mut m = Milter::new(sp);
    let mac = macros("7777777777A");
    m.connect(&local_client(), &mac);
    assert_eq!(
        transaction(&mut m, &message("slow"), &mac).verdict,
        Verdict::Continue
    );
    m.abort();
    // A recipient the milter sits on for 5 s: the 1 s limit, then the default
    // action (tempfail) for this and every later stage of the session.
    assert_eq!(m.mail(&["<a@example.org>"], &mac), Verdict::Continue);
    let start = Instant::now();
    assert_eq!(
        m.rcpt(&["<slow@example.org>"], &mac),
        Verdict::Tempfail(Refusal::Unavailable)
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(
        m.rcpt(&["<b@example.org>"], &mac),
        Verdict::Tempfail(Refusal::Unavailable)
    );
}

#[test]
fn chain_of_test_milter_then_opendkim_signs_the_modified_message() {
    let Some(tm) =
        TestMilter::start("eom chgheader Subject 1 changed subject; eom replacebody new body\\r\\n")
    else {
        return;
    };
    let Some(dkim) = OpenDkim::builder().sign("example.org", "test").start() else {
        return;
    };
    let mut chain = Chain::new([spec(&tm.conf()), spec(&dkim.conf())]);
    let mac = macros("8888888888B");
    assert_eq!(chain.connect(&local_client(), &mac), Verdict::Continue);
    assert_eq!(chain.helo("localhost", &mac), Verdict::Continue);
    assert_eq!(chain.mail(&["<a@example.org>"], &mac), Verdict::Continue);
    assert_eq!(chain.rcpt(&["<b@example.org>"], &mac), Verdict::Continue);
    assert_eq!(chain.data(&mac), Verdict::Continue);
    let mut msg = message("original subject");
    let mut env = envelope();
    let out = chain.message(&mut msg, &mut env, &mac);
    assert_eq!(out.verdict, Verdict::Continue);
    assert!(out.modified);
    chain.abort();
    chain.quit();
    let signed = msg.to_bytes();
    let text = String::from_utf8_lossy(&signed).into_owned();
    // OpenDKIM signed what the first milter left: the new subject and body.
    assert!(
        text.starts_with("DKIM-Signature:") && text.contains("\nSubject: changed subject\n"),
        "{text}"
    );
    assert!(text.ends_with("\n\nnew body\n"), "{text}");
    let (name, txt) = dkim.txt_record("example.org", "test");
    if let Some(v) = tools::dkim_verify(&crlf(&signed), &[(&name, &txt)]) {
        assert_eq!(v, Ok(()), "{text}");
    }
}
