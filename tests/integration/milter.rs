//! The milter client (src/milter/) against real milters from Debian: OpenDKIM
//! signing and verifying, and a libmilter-based test milter (python3-milter)
//! that exercises every reply and modification. The library is driven directly,
//! as the session will drive it; the peers are started by milter_peers.rs.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tern::endpoint::Endpoint;
use tern::milter::edit;
use tern::milter::protocol::ReplyText;
use tern::milter::{
    Chain, ConnectInfo, EnvelopeEdit, Field, Macros, Message, Milter, MilterSpec, Modification, RcptEdit,
    Refusal, Verdict,
};
use tern::smtp::reply::Esc;

use super::milter_peers::{self, PYTHON};

fn spec(port: u16) -> MilterSpec {
    let mut s = MilterSpec::new(Endpoint::parse(&format!("inet:127.0.0.1:{port}")).unwrap());
    s.timeouts.connect = Duration::from_secs(5);
    s.timeouts.command = Duration::from_secs(10);
    s.timeouts.content = Duration::from_secs(10);
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

/// A message as the spool holds it, with tern's Received: first (hidden).
fn message(subject: &str) -> Message {
    let text = format!(
        "Received: from localhost (localhost [127.0.0.1])\n\tby mx.example.org (tern) with ESMTP id 19A2B3C4D5E;\n\
         \tSat, 5 Dec 2026 10:00:00 +0000\n\
         From: Alice <a@example.org>\nTo: Bob <b@example.org>\nSubject: {subject}\n\
         Date: Sat, 5 Dec 2026 10:00:00 +0000\nMessage-ID: <1@example.org>\nX-Delete-Me: please\n\n\
         Hello Bob,\n\nthis is a test.\n"
    );
    let mut m = Message::parse(text.as_bytes());
    m.hide_first(1);
    m
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

/// python3-dkim's verdict on `msg`, with the key record given (no DNS).
fn dkim_verify(msg: &[u8], txt: &str) -> Option<bool> {
    if !milter_peers::have_python_module("dkim") {
        milter_peers::missing("python3-dkim");
        return None;
    }
    let script = "import dkim, sys\n\
                  txt = sys.argv[1].encode()\n\
                  ok = dkim.verify(sys.stdin.buffer.read(), dnsfunc=lambda name, timeout=5: txt)\n\
                  print('pass' if ok else 'fail')\n";
    let mut child = Command::new(PYTHON)
        .args(["-c", script, txt])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(msg).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        said == "pass" || said == "fail",
        "dkim.verify: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(said == "pass")
}

/// One whole transaction through `m`: envelope stages, then the message.
fn transaction(m: &mut Milter, msg: &Message, mac: &Macros) -> tern::milter::EomOutcome {
    assert_eq!(m.mail(&["<a@example.org>"], mac), Verdict::Continue);
    assert_eq!(m.rcpt(&["<b@example.org>"], mac), Verdict::Continue);
    assert_eq!(m.data(mac), Verdict::Continue);
    m.message(msg, mac)
}

#[test]
fn opendkim_signs_and_the_signature_verifies() {
    let Some(dkim) = milter_peers::opendkim() else {
        return;
    };
    let mut m = Milter::new(spec(dkim.peer.port));
    let mac = macros("19A2B3C4D5E");
    assert_eq!(m.connect(&local_client(), &mac), Verdict::Continue);
    // Issue 19's fact: OpenDKIM asks for header values with their leading space.
    assert!(m.negotiated().unwrap().leading_space(), "{:?}", m.negotiated());
    assert_eq!(m.helo("localhost", &mac), Verdict::Continue);
    let mut msg = message("signed by opendkim");
    let out = transaction(&mut m, &msg, &mac);
    // OpenDKIM answers SMFIR_ACCEPT at the end of a message.
    assert!(out.verdict.is_go_on(), "{:?}\n{}", out.verdict, dkim.peer.log());
    let sig = out
        .modifications
        .iter()
        .find_map(|md| match md {
            Modification::InsertHeader { name, value, .. } | Modification::AddHeader { name, value }
                if name == "DKIM-Signature" =>
            {
                Some(value.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| {
            panic!(
                "no DKIM-Signature in {:?}\n{}",
                out.modifications,
                dkim.peer.log()
            )
        });
    // Stored with its one leading space, folded with LF and a tab, no CR.
    assert!(sig.starts_with(b" v=1;"), "{}", String::from_utf8_lossy(&sig));
    assert!(sig.contains(&b'\n') && !sig.contains(&b'\r'));
    edit::apply(&mut msg, &mut envelope(), &out.modifications);
    m.abort();
    m.quit();
    let signed = msg.to_bytes();
    // Inserted at index 0, so above tern's own Received: (as with Postfix).
    let text = String::from_utf8_lossy(&signed);
    assert!(text.starts_with("DKIM-Signature: v=1;"), "{text}");
    assert!(
        text.contains("\n\t qH") || text.contains(";\n\th="),
        "folds kept: {text}"
    );
    assert!(text.contains("\nReceived: from localhost"), "{text}");
    let Some(ok) = dkim_verify(&crlf(&signed), &dkim.txt) else {
        return;
    };
    assert!(
        ok,
        "signature does not verify:\n{}",
        String::from_utf8_lossy(&signed)
    );
    // And the verifier is not a rubber stamp: one changed body byte fails it.
    let tampered = String::from_utf8_lossy(&signed).replace("this is a test", "this is a tesT");
    assert_eq!(dkim_verify(&crlf(tampered.as_bytes()), &dkim.txt), Some(false));
}

#[test]
fn opendkim_verifies_mail_from_outside() {
    let Some(dkim) = milter_peers::opendkim() else {
        return;
    };
    // Sign as an internal client first.
    let mut m = Milter::new(spec(dkim.peer.port));
    let mac = macros("1111111111A");
    m.connect(&local_client(), &mac);
    let mut msg = message("verify me");
    let out = transaction(&mut m, &msg, &mac);
    edit::apply(&mut msg, &mut envelope(), &out.modifications);
    m.quit();
    // Then the same message arrives from an outside address: OpenDKIM checks it
    // (the key from its TestDNSData file) and says so in Authentication-Results.
    let mut outside = Milter::new(spec(dkim.peer.port));
    let mut mac = macros("2222222222B");
    mac.client_addr = Some("192.0.2.1".into());
    let info = ConnectInfo {
        hostname: "mail.example.net".into(),
        addr: Some("192.0.2.1:25000".parse().unwrap()),
    };
    assert_eq!(outside.connect(&info, &mac), Verdict::Continue);
    // The receiving MTA adds its own Received: on top, hidden from milters; the
    // signer's fields, DKIM-Signature included, are all shown.
    let mut received = Message::parse(&msg.to_bytes());
    let mut ours = Field::new(
        "Received",
        b" from mail.example.net ([192.0.2.1]) by mx2.example.org (tern)",
    );
    ours.hidden = true;
    received.fields.insert(0, ours);
    let out = transaction(&mut outside, &received, &mac);
    outside.quit();
    let ar = out
        .modifications
        .iter()
        .find_map(|md| match md {
            Modification::InsertHeader { name, value, .. } | Modification::AddHeader { name, value }
                if name == "Authentication-Results" =>
            {
                Some(String::from_utf8_lossy(value).into_owned())
            }
            _ => None,
        })
        .unwrap_or_else(|| {
            panic!(
                "no Authentication-Results in {:?}\n{}",
                out.modifications,
                dkim.peer.log()
            )
        });
    assert!(ar.contains("dkim=pass"), "{ar}\n{}", dkim.peer.log());
}

#[test]
fn test_milter_every_modification_and_quarantine() {
    let Some(peer) = milter_peers::test_milter() else {
        return;
    };
    let mut m = Milter::new(spec(peer.port));
    let mac = macros("3333333333C");
    assert_eq!(m.connect(&local_client(), &mac), Verdict::Continue);
    // The python milter's header callback is @noreply: SMFIP_NR_HDR negotiated.
    assert!(m.negotiated().unwrap().steps & tern::milter::protocol::SMFIP_NR_HDR != 0);
    let mut msg = message("all-actions");
    let out = transaction(&mut m, &msg, &mac);
    assert_eq!(out.verdict, Verdict::Accept, "{}", peer.log());
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
    assert!(!text.contains("X-Delete-Me"), "{text}");
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
    let Some(peer) = milter_peers::test_milter() else {
        return;
    };
    let mut m = Milter::new(spec(peer.port));
    let mac = macros("4444444444D");
    assert_eq!(m.connect(&local_client(), &mac), Verdict::Continue);
    assert_eq!(m.helo("localhost", &mac), Verdict::Continue);
    // MAIL refused, then a new transaction.
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
            esc: Some(Esc(5, 1, 1)),
            lines: vec!["custom rejection".into(), "second line".into()],
        }))
    );
    assert_eq!(m.rcpt(&["<b@example.org>"], &mac), Verdict::Continue);
    assert_eq!(m.data(&mac), Verdict::Continue);
    assert_eq!(
        m.message(&message("reject"), &mac).verdict,
        Verdict::Reject(Refusal::Plain)
    );
    // Each following message in the same session, after abort() as the session does.
    for (subject, want) in [
        ("tempfail", Verdict::Tempfail(Refusal::Plain)),
        ("discard", Verdict::Discard),
        (
            "reply",
            Verdict::Reject(Refusal::Custom(ReplyText {
                code: 554,
                esc: Some(Esc(5, 7, 1)),
                lines: vec!["no thanks, 100% sure".into()],
            })),
        ),
        ("plain", Verdict::Continue),
    ] {
        m.abort();
        let out = transaction(&mut m, &message(subject), &mac);
        assert_eq!(out.verdict, want, "{subject}\n{}", peer.log());
        assert!(out.modifications.is_empty());
    }
    m.quit();
}

#[test]
fn test_milter_sees_macros_headers_and_body() {
    let Some(peer) = milter_peers::test_milter() else {
        return;
    };
    let mut m = Milter::new(spec(peer.port));
    let mac = macros("5555555555E");
    m.connect(&local_client(), &mac);
    let msg = message("echo");
    let out = transaction(&mut m, &msg, &mac);
    m.quit();
    let header = |want: &str| {
        out.modifications
            .iter()
            .find_map(|md| match md {
                Modification::AddHeader { name, value } if name == want => {
                    Some(String::from_utf8_lossy(value).trim().to_owned())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {want} in {:?}\n{}", out.modifications, peer.log()))
    };
    let macros = header("X-Seen-Macros");
    for want in [
        "j=mx.example.org",
        "{daemon_name}=tern",
        "{client_addr}=127.0.0.1",
        "v=tern test",
        "_=localhost [127.0.0.1]",
        "i=5555555555E",
        "{mail_addr}=a@example.org",
        "{rcpt_addr}=b@example.org",
    ] {
        assert!(macros.contains(want), "{want} not in {macros}");
    }
    // Our own Received: is not shown to milters.
    assert_eq!(
        header("X-Seen-Headers"),
        "From,To,Subject,Date,Message-ID,X-Delete-Me"
    );
    let body = b"Hello Bob,\r\n\r\nthis is a test.\r\n";
    let hex: String = body[..20].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(header("X-Seen-Body"), format!("{} {hex}", body.len()));
    assert_eq!(header("X-Seen-Rcpts"), "<b@example.org>");
}

#[test]
fn test_milter_progress_keeps_a_slow_answer_alive() {
    let Some(peer) = milter_peers::test_milter() else {
        return;
    };
    let mut sp = spec(peer.port);
    // The milter takes 2 s, sending SMFIR_PROGRESS every 0.4 s.
    sp.timeouts.content = Duration::from_secs(1);
    let mut m = Milter::new(sp);
    let mac = macros("6666666666F");
    m.connect(&local_client(), &mac);
    assert_eq!(
        transaction(&mut m, &message("slow"), &mac).verdict,
        Verdict::Continue
    );
    m.quit();
}

#[test]
fn chain_of_test_milter_then_opendkim_signs_the_modified_message() {
    let Some(peer) = milter_peers::test_milter() else {
        return;
    };
    let Some(dkim) = milter_peers::opendkim() else {
        return;
    };
    let mut chain = Chain::new([spec(peer.port), spec(dkim.peer.port)]);
    let mac = macros("7777777777A");
    assert_eq!(chain.connect(&local_client(), &mac), Verdict::Continue);
    assert_eq!(chain.helo("localhost", &mac), Verdict::Continue);
    assert_eq!(chain.mail(&["<a@example.org>"], &mac), Verdict::Continue);
    assert_eq!(chain.rcpt(&["<b@example.org>"], &mac), Verdict::Continue);
    assert_eq!(chain.data(&mac), Verdict::Continue);
    let mut msg = message("all-actions");
    let mut env = envelope();
    let out = chain.message(&mut msg, &mut env, &mac);
    assert!(
        out.verdict.is_go_on(),
        "{:?}\n{}\n{}",
        out.verdict,
        peer.log(),
        dkim.peer.log()
    );
    assert!(out.modified);
    assert_eq!(out.quarantine.as_deref(), Some("held by test milter"));
    chain.abort();
    chain.quit();
    let signed = msg.to_bytes();
    let text = String::from_utf8_lossy(&signed);
    // OpenDKIM signed what the first milter left: the new subject and body.
    assert!(
        text.contains("DKIM-Signature:") && text.contains("Subject: changed subject"),
        "{text}"
    );
    assert!(text.ends_with("replaced body\nsecond line\n"), "{text}");
    if let Some(ok) = dkim_verify(&crlf(&signed), &dkim.txt) {
        assert!(ok, "signature does not verify:\n{text}");
    }
}
