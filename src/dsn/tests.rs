use super::*;

const ORIGINAL: &[u8] = b"From: Alice <alice@example.org>\n\
To: bob@example.net\n\
Subject: Original subject\n\
Message-ID: <m1@example.org>\n\
\n\
Hello Bob,\n\
this is the body.\n";

fn rcpt(addr: &str, action: Action, status: Status) -> RecipientReport {
    RecipientReport {
        final_recipient: addr.to_owned(),
        original_recipient: Some(format!("rfc822;{addr}")),
        action,
        status,
        remote_mta: None,
        diagnostic: None,
        last_attempt: Some(1_700_000_100),
        will_retry_until: None,
    }
}

fn report(recipients: Vec<RecipientReport>) -> Report<'static> {
    Report {
        hostname: "mx.example.org",
        queue_id: "0193A5F2C41B07E2",
        envid: Some("env-123"),
        arrival: 1_700_000_000,
        sender: "alice@example.org",
        recipients,
        return_content: ReturnContent::Full,
        original: ORIGINAL,
        max_return_size: 1_000_000,
    }
}

fn failed() -> RecipientReport {
    RecipientReport {
        remote_mta: Some("dns; mx.example.net".to_owned()),
        diagnostic: Some("smtp; 550 5.1.1 user unknown".to_owned()),
        ..rcpt("bob@example.net", Action::Failed, Status(5, 1, 1))
    }
}

fn text(r: &Report<'_>) -> String {
    String::from_utf8(build_at(r, 1_700_003_600)).unwrap()
}

/// The boundary from the top-level Content-Type.
fn boundary_of(m: &str) -> String {
    let i = m.find("boundary=\"").unwrap() + 10;
    let j = m[i..].find('"').unwrap();
    m[i..i + j].to_owned()
}

/// Top-level header section and the parts' (headers, body) split by the boundary.
fn split(m: &str) -> (String, Vec<(String, String)>) {
    let b = boundary_of(m);
    let (head, _) = m.split_once("\n\n").unwrap();
    let close = format!("\n--{b}--\n");
    assert!(m.ends_with(&close), "no closing delimiter");
    let inner = &m[..m.len() - close.len()];
    let delim = format!("\n--{b}\n");
    let mut pieces = inner.split(&delim);
    pieces.next(); // preamble
    let parts = pieces
        .map(|p| {
            let (h, body) = p.split_once("\n\n").unwrap();
            (h.to_owned(), body.to_owned())
        })
        .collect();
    (format!("{head}\n"), parts)
}

fn assert_lines_sane(m: &[u8]) {
    assert!(!m.contains(&b'\r'), "CR in output");
    for line in m.split(|&b| b == b'\n') {
        assert!(line.len() <= 998, "line of {} octets", line.len());
    }
}

#[test]
fn failed_report_structure() {
    let r = report(vec![failed()]);
    let m = text(&r);
    assert_lines_sane(m.as_bytes());
    let (head, parts) = split(&m);
    assert!(head.starts_with("From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\n"));
    assert!(head.contains("\nTo: <alice@example.org>\n"));
    assert!(head.contains("\nSubject: Undelivered Mail Returned to Sender\n"));
    assert!(head.contains("\nDate: "));
    assert!(head.contains("\nMessage-ID: <0193A5F2C41B07E2.1700003600@mx.example.org>\n"));
    assert!(head.contains("\nMIME-Version: 1.0\n"));
    assert!(head.contains("\nAuto-Submitted: auto-replied\n"));
    assert!(head.contains("Content-Type: multipart/report; report-type=delivery-status;\n boundary=\""));
    assert_eq!(parts.len(), 3);

    let (h0, t0) = &parts[0];
    assert!(h0.contains("Content-Type: text/plain; charset=utf-8"));
    assert!(t0.starts_with("This is the mail system at host mx.example.org.\n"));
    assert!(t0.contains("I'm sorry to have to inform you"));
    assert!(t0.contains("0193A5F2C41B07E2"));
    assert!(
        t0.contains("<bob@example.net>: host mx.example.net said: 550 5.1.1 user unknown\n"),
        "{t0}"
    );

    let (h1, t1) = &parts[1];
    assert!(h1.contains("Content-Type: message/delivery-status"));
    let blocks: Vec<&str> = t1.split("\n\n").collect();
    assert_eq!(blocks.len(), 2, "{t1:?}");
    assert!(blocks[0].starts_with("Reporting-MTA: dns; mx.example.org\n"));
    assert!(blocks[0].contains("X-Tern-Queue-ID: 0193A5F2C41B07E2\n"));
    assert!(blocks[0].contains("Original-Envelope-Id: env-123\n"));
    assert!(blocks[0].contains("Arrival-Date: "));
    let want = [
        "Final-Recipient: rfc822; bob@example.net",
        "Original-Recipient: rfc822; bob@example.net",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mx.example.net",
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown",
    ];
    let lines: Vec<&str> = blocks[1].lines().collect();
    assert_eq!(&lines[..6], &want);
    assert!(lines[6].starts_with("Last-Attempt-Date: "));
    assert_eq!(lines.len(), 7);

    let (h2, t2) = &parts[2];
    assert!(h2.contains("Content-Type: message/rfc822"));
    assert_eq!(t2.as_bytes(), ORIGINAL);
}

#[test]
fn delayed_report() {
    let mut d = rcpt("carol@example.net", Action::Delayed, Status(4, 4, 1));
    d.will_retry_until = Some(1_700_432_000);
    d.diagnostic = Some("smtp; 451 4.4.1 try later".to_owned());
    let mut r = report(vec![d]);
    r.return_content = ReturnContent::Headers;
    let m = text(&r);
    let (head, parts) = split(&m);
    assert!(head.contains("\nSubject: Delayed Mail (still being retried)\n"));
    let t0 = &parts[0].1;
    assert!(t0.contains("THIS IS A WARNING ONLY"));
    assert!(t0.contains("for 1 hour."), "{t0}");
    assert!(
        t0.contains(&format!("until {}", clock::rfc5322(1_700_432_000))),
        "{t0}"
    );
    assert!(t0.contains("<carol@example.net>: 451 4.4.1 try later"));
    let t1 = &parts[1].1;
    assert!(t1.contains("Action: delayed\nStatus: 4.4.1\n"));
    assert!(t1.contains(&format!("Will-Retry-Until: {}\n", clock::rfc5322(1_700_432_000))));
    assert!(parts[2].0.contains("Content-Type: text/rfc822-headers"));
    assert!(!parts[2].1.contains("Hello Bob"));
}

#[test]
fn delivered_report() {
    let mut d = rcpt("dave@example.net", Action::Delivered, Status(2, 0, 0));
    // Will-Retry-Until is only for delayed recipients (RFC 3464 2.3.7).
    d.will_retry_until = Some(1_700_432_000);
    let mut r = report(vec![
        d,
        rcpt("erin@example.com", Action::Relayed, Status(2, 0, 0)),
    ]);
    r.return_content = ReturnContent::Headers;
    let m = text(&r);
    let (head, parts) = split(&m);
    assert!(head.contains("\nSubject: Successful Mail Delivery Report\n"));
    assert!(parts[0].1.contains("successfully delivered"));
    assert!(parts[0]
        .1
        .contains("<dave@example.net>: delivered (status 2.0.0)"));
    assert!(
        !parts[0].1.contains("Delivery succeeded for:"),
        "no headings for one group"
    );
    assert!(parts[1].1.contains("Action: delivered\n"));
    assert!(parts[1].1.contains("Action: relayed\n"));
    assert!(!parts[1].1.contains("Will-Retry-Until"));
    assert_eq!(parts[1].1.split("\n\n").count(), 3);
    assert!(parts[2].0.contains("Content-Description: Message Headers"));
}

#[test]
fn mixed_actions_take_most_severe_subject() {
    let r = report(vec![
        rcpt("a@example.net", Action::Delivered, Status(2, 0, 0)),
        rcpt("b@example.net", Action::Delayed, Status(4, 0, 0)),
    ]);
    assert!(text(&r).contains("\nSubject: Delayed Mail (still being retried)\n"));
    let r = report(vec![
        rcpt("a@example.net", Action::Delivered, Status(2, 0, 0)),
        failed(),
        rcpt("b@example.net", Action::Delayed, Status(4, 0, 0)),
    ]);
    let m = text(&r);
    assert!(m.contains("\nSubject: Undelivered Mail Returned to Sender\n"));
    let t0 = &split(&m).1[0].1;
    let f = t0.find("Delivery failed permanently for:").unwrap();
    let d = t0.find("Delivery is delayed for:").unwrap();
    let s = t0.find("Delivery succeeded for:").unwrap();
    assert!(f < d && d < s);
}

#[test]
fn headers_only_when_hdrs_or_too_big() {
    let mut r = report(vec![failed()]);
    r.return_content = ReturnContent::Headers;
    let (_, parts) = split(&text(&r));
    assert!(parts[2].0.contains("Content-Type: text/rfc822-headers"));
    assert_eq!(
        parts[2].1,
        "From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: Original subject\n\
             Message-ID: <m1@example.org>\n"
    );
    assert!(!parts[0].1.contains("too large"));

    let mut r = report(vec![failed()]);
    r.max_return_size = ORIGINAL.len() as u64 - 1;
    let (_, parts) = split(&text(&r));
    assert!(parts[2].0.contains("Content-Type: text/rfc822-headers"));
    assert!(parts[2]
        .0
        .contains("Content-Description: Undelivered Message Headers"));
    assert!(!parts[2].1.contains("Hello Bob"));
    assert!(parts[0].1.contains("too large to be returned in full"));

    // Exactly at the limit the whole message goes back.
    r.max_return_size = ORIGINAL.len() as u64;
    let (_, parts) = split(&text(&r));
    assert!(parts[2].0.contains("Content-Type: message/rfc822"));
}

#[test]
fn boundary_not_in_original() {
    let r = report(vec![failed()]);
    let first = boundary_of(&text(&r));
    // An original that contains the boundary that would have been chosen, and
    // the next candidate too.
    let second = first.replace("/tern", ".1/tern");
    let evil = format!("Subject: x\n\n--{first}\n--{second}--\n");
    let mut r = report(vec![failed()]);
    r.original = evil.as_bytes();
    let m = text(&r);
    let b = boundary_of(&m);
    assert_ne!(b, first);
    assert_ne!(b, second);
    assert!(!evil.contains(&b));
    let (_, parts) = split(&m);
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[2].1, evil);
    assert!(b.len() <= MAX_BOUNDARY);
}

#[test]
fn diagnostic_with_crlf_cannot_inject() {
    let mut f = failed();
    f.diagnostic = Some("smtp; 550 no\r\nAction: delivered\r\n\r\nFinal-Recipient: rfc822; x@y".to_owned());
    f.remote_mta = Some("mx\n\nX-Evil: 1".to_owned());
    f.final_recipient = "bob@example.net\r\nBcc: victim@example.com".to_owned();
    let mut r = report(vec![f]);
    r.sender = "alice@example.org>\nBcc: <victim@example.com";
    r.envid = Some("e\rReporting-MTA: dns; evil");
    let m = text(&r);
    assert_lines_sane(m.as_bytes());
    assert!(!m.contains("\nAction: delivered"));
    assert!(!m.contains("\nFinal-Recipient: rfc822; x@y"));
    assert!(!m.contains("\nX-Evil"));
    assert!(!m.contains("\nBcc:"));
    assert!(!m.contains("\nReporting-MTA: dns; evil"));
    let (_, parts) = split(&m);
    let blocks: Vec<&str> = parts[1].1.split("\n\n").collect();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[1].lines().filter(|l| l.starts_with("Action:")).count(), 1);
    assert!(blocks[1].contains("Diagnostic-Code: smtp; 550 no Action: delivered Final-Recipient:"));
    assert!(blocks[1].contains("Remote-MTA: dns; mx X-Evil: 1"));
}

#[test]
fn long_values_are_folded() {
    let mut f = failed();
    let words: Vec<String> = (0..200).map(|i| format!("word{i}")).collect();
    f.diagnostic = Some(format!("smtp; 550 {}", words.join(" ")));
    let mut g = rcpt("g@example.net", Action::Failed, Status(5, 0, 0));
    g.diagnostic = Some(format!("x-local; {}", "z".repeat(3000)));
    let r = report(vec![f, g]);
    let m = build_at(&r, 1_700_003_600);
    assert_lines_sane(&m);
    let m = String::from_utf8(m).unwrap();
    let (_, parts) = split(&m);
    for line in parts[1].1.lines().chain(parts[0].1.lines()) {
        assert!(
            line.len() <= FOLD_AT || !line.trim().contains(' '),
            "unfolded: {line}"
        );
    }
    // Unfolding gives back the value.
    let unfolded = parts[1].1.replace("\n ", " ");
    assert!(unfolded.contains(&format!("Diagnostic-Code: smtp; 550 {}\n", words.join(" "))));
}

#[test]
fn utf8_addresses_use_global_types() {
    let mut f = failed();
    f.final_recipient = "用户@example.net".to_owned();
    f.original_recipient = Some("utf-8;用户@example.net".to_owned());
    let original = "From: jürgen@example.org\nSubject: Grüße\n\nHallo\n";
    let mut r = report(vec![f]);
    r.sender = "jürgen@example.org";
    r.original = original.as_bytes();
    let m = text(&r);
    let (head, parts) = split(&m);
    assert!(head.contains("report-type=global-delivery-status;"));
    assert!(head.contains("\nTo: <jürgen@example.org>\n"));
    assert!(head.contains("\nContent-Transfer-Encoding: 8bit\n"));
    assert!(parts[1]
        .0
        .contains("Content-Type: message/global-delivery-status"));
    assert!(parts[1].0.contains("Content-Transfer-Encoding: 8bit"));
    assert!(parts[1].1.contains("Final-Recipient: utf-8; 用户@example.net\n"));
    assert!(parts[1]
        .1
        .contains("Original-Recipient: utf-8; 用户@example.net\n"));
    assert!(parts[2].0.contains("Content-Type: message/global\n"));

    r.return_content = ReturnContent::Headers;
    let (_, parts) = split(&text(&r));
    assert!(parts[2].0.contains("Content-Type: message/global-headers\n"));

    // ASCII headers with an 8-bit body stay message/rfc822, labelled 8bit.
    let mut r = report(vec![failed()]);
    r.original = "Subject: hi\n\nGrüße\n".as_bytes();
    let (head, parts) = split(&text(&r));
    assert!(head.contains("report-type=delivery-status;"));
    assert!(parts[2]
        .0
        .contains("Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit"));
    assert!(parts[0].0.contains("Content-Transfer-Encoding: 7bit"));
}

#[test]
fn untyped_values_get_default_types() {
    assert_eq!(typed("rfc822;a@b", "rfc822"), "rfc822; a@b");
    assert_eq!(typed("  RFC822 ;  a@b ", "rfc822"), "RFC822; a@b");
    assert_eq!(typed("a@b", "rfc822"), "rfc822; a@b");
    assert_eq!(typed("mx.example.com", "dns"), "dns; mx.example.com");
    assert_eq!(
        typed("host said: 550; no", "x-tern"),
        "x-tern; host said: 550; no"
    );
    assert_eq!(clean(" a\t\tb\r\n c\u{2028}d\u{7f} "), "a b c d");
}

#[test]
fn no_recipients_or_odd_inputs_do_not_panic() {
    let mut r = report(vec![]);
    r.hostname = "";
    r.queue_id = "";
    r.original = b"";
    let m = build_at(&r, 0);
    assert_lines_sane(&m);
    let m = String::from_utf8(m).unwrap();
    assert!(m.contains("Message-ID: <dsn.0@localhost>"));
    assert_eq!(split(&m).1.len(), 3);
    assert_eq!(duration_words(0), "1 minute");
    assert_eq!(duration_words(7200), "2 hours");
    assert_eq!(duration_words(3 * 86_400), "3 days");
}

#[test]
fn auto_generated_table() {
    let cases: &[(&str, bool)] = &[
        ("Subject: hi\n\n", false),
        ("Auto-Submitted: no\n\n", false),
        ("auto-submitted: No (a human wrote this)\n\n", false),
        ("Auto-Submitted:\n\n", false),
        ("Auto-Submitted: auto-replied\n\n", true),
        ("AUTO-SUBMITTED: Auto-Generated\n\n", true),
        ("Auto-Submitted: auto-notified; owner-email=\"a@b\"\n\n", true),
        ("Auto-Submitted:\n auto-generated\n\n", true),
        (
            "Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n",
            true,
        ),
        (
            "Content-Type: Multipart/Report;\n\tboundary=\"x\"; Report-Type=\"Delivery-Status\"\n\n",
            true,
        ),
        (
            "Content-Type: multipart/report; report-type=global-delivery-status\n\n",
            true,
        ),
        (
            "Content-Type: multipart/report; report-type=disposition-notification\n\n",
            false,
        ),
        ("Content-Type: multipart/mixed; boundary=x\n\n", false),
        (
            "Content-Type: text/plain\r\nAuto-Submitted: auto-replied\r\n\r\n",
            true,
        ),
        // Only the header section counts.
        ("Subject: hi\n\nAuto-Submitted: auto-replied\n", false),
        ("X-Note: Auto-Submitted: yes\n\n", false),
    ];
    for (headers, want) in cases {
        assert_eq!(is_auto_generated(headers.as_bytes()), *want, "{headers:?}");
    }
    // Our own reports are recognised as such.
    assert!(is_auto_generated(&build_at(&report(vec![failed()]), 1)));
}

#[test]
fn python_email_parses_report() {
    let script = r#"
import sys, email, email.policy
data = open(sys.argv[1], 'rb').read()
msg = email.message_from_bytes(data, policy=email.policy.default)
assert msg.get_content_type() == 'multipart/report', msg.get_content_type()
assert msg.get_param('report-type') == 'delivery-status', msg.get_param('report-type')
assert msg['Subject'] == 'Undelivered Mail Returned to Sender', msg['Subject']
assert msg['Auto-Submitted'] == 'auto-replied'
assert msg['To'].addresses[0].addr_spec == 'alice@example.org'
parts = list(msg.iter_parts())
assert len(parts) == 3, len(parts)
assert parts[0].get_content_type() == 'text/plain'
assert 'could not' in parts[0].get_content()
assert parts[1].get_content_type() == 'message/delivery-status'
blocks = parts[1].get_payload()
assert len(blocks) == 3, len(blocks)
assert blocks[0]['Reporting-MTA'] == 'dns; mx.example.org', blocks[0]['Reporting-MTA']
want = [('rfc822; bob@example.net', 'failed', '5.1.1'), ('rfc822; carol@example.net', 'delayed', '4.4.1')]
for block, (fr, action, status) in zip(blocks[1:], want):
    assert block['Final-Recipient'] == fr, block['Final-Recipient']
    assert block['Action'] == action, block['Action']
    assert block['Status'] == status, block['Status']
assert 'word199' in str(blocks[1]['Diagnostic-Code'])
assert blocks[1]['X-Injected'] is None
assert all(b['X-Injected'] is None for b in blocks)
assert parts[2].get_content_type() == 'message/rfc822'
inner = parts[2].get_payload(0)
assert inner['Subject'] == 'Original subject', inner['Subject']
assert 'this is the body' in inner.get_content()
for p in msg.walk():
    assert not p.defects, (p.get_content_type(), p.defects)
print('ok')
"#;
    let mut f = failed();
    let words: Vec<String> = (0..40).map(|i| format!("word{i}")).collect();
    f.diagnostic = Some(format!(
        "smtp; 550 5.1.1 {} word199\r\nX-Injected: 1",
        words.join(" ")
    ));
    let mut d = rcpt("carol@example.net", Action::Delayed, Status(4, 4, 1));
    d.will_retry_until = Some(1_700_432_000);
    let r = report(vec![f, d]);
    // A visible skip (a failure under CI) where no python3 has its email package.
    let Some(python) = crate::testskip::python("email.policy", "python3") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dsn.eml");
    std::fs::write(&path, build(&r)).unwrap();
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "python3 rejected the report:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
