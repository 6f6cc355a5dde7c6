//! Whole sessions through SMTP clients nobody here wrote: lettre (Rust) and
//! Python's smtplib.

use std::process::Command;

use lettre::message::Mailbox;
use lettre::{Message, SmtpTransport, Transport};

use crate::common::Setup;

#[test]
fn lettre_sends_a_message() {
    let t = Setup::new().start();
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(t.addr.port())
        .build();
    let email = Message::builder()
        .from("Ann <ann@remote.test>".parse::<Mailbox>().unwrap())
        .to("Alice <alice@example.test>".parse::<Mailbox>().unwrap())
        .cc("team@example.test".parse::<Mailbox>().unwrap())
        .subject("lettre says hi")
        .body("A line.\n.A line with a leading dot.\nÜmlaut.\n".to_owned())
        .unwrap();
    let resp = mailer.send(&email).expect("lettre send");
    assert_eq!(resp.code().to_string(), "250");
    let text = resp.message().collect::<Vec<_>>().join(" ");
    let id = text.rsplit(' ').next().unwrap().to_owned();
    let (env, body) = t.message(&id);
    assert_eq!(env.sender, "ann@remote.test");
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.addr.as_str()).collect();
    assert_eq!(rcpts, vec!["alice@example.test", "team@example.test"]);
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains("Subject: lettre says hi\n"), "{body}");
    assert!(body.contains("\n.A line with a leading dot.\n"), "{body}");
    assert!(!body.contains('\r'));
}

#[test]
fn python_smtplib_sends_a_message() {
    require_tool!("python3");
    let t = Setup::new().start();
    let script = format!(
        r#"
import smtplib, sys
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "py@remote.test"
m["To"] = "bob@example.test"
m["Subject"] = "smtplib"
m.set_content("hello from python\n.leading dot\n")
with smtplib.SMTP("127.0.0.1", {port}, timeout=10) as s:
    code, msg = s.ehlo("py.test")
    assert code == 250, (code, msg)
    assert s.has_extn("pipelining") and s.has_extn("8bitmime") and s.has_extn("size")
    refused = s.send_message(m, from_addr="py@remote.test", to_addrs=["bob@example.test", "team@example.test"])
    assert refused == {{}}, refused
    try:
        s.sendmail("py@remote.test", ["nobody@example.test"], "Subject: x\r\n\r\ny\r\n")
        sys.exit("unknown recipient was accepted")
    except smtplib.SMTPRecipientsRefused as e:
        code, msg = e.recipients["nobody@example.test"]
        assert code == 550 and msg.startswith(b"5.1.1"), (code, msg)
print("ok")
"#,
        port = t.addr.port()
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "ok");
    let q = t.queued();
    assert_eq!(q.len(), 1);
    let body = String::from_utf8(q[0].1.clone()).unwrap();
    assert!(body.contains("hello from python\n.leading dot\n"), "{body}");
}
