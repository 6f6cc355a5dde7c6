//! Message submission (RFC 6409) and SMTP AUTH (RFC 4954): TLS first, then
//! AUTH PLAIN or LOGIN, then MAIL as an address the user owns; failures are
//! slowed, logged and end the session at the third.

use std::time::{Duration, Instant};

use crate::common::{b64, message, Setup, Tern, TlsClient};

/// A submission session after STARTTLS and EHLO.
fn tls_session(t: &Tern) -> TlsClient {
    let mut c = crate::common::Client::connect(t.submission_addr());
    c.hello();
    let mut s = c.starttls(&t.setup.ca_pem());
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    s
}

#[test]
fn submission_needs_tls_then_auth() {
    let t = Setup::new().submission().start();
    let mut c = crate::common::Client::connect(t.submission_addr());
    let r = c.hello();
    assert!(r.lines.contains(&"250-STARTTLS".to_owned()), "{r:?}");
    // RFC 4954: not advertised before TLS, and refused if tried.
    assert!(!r.text().contains("AUTH"), "{r:?}");
    let plain = format!("AUTH PLAIN {}", b64(b"\0alice\0secret"));
    assert_eq!(c.cmd(&plain).status(), "538 5.7.11");
    assert_eq!(c.cmd("AUTH LOGIN").status(), "538 5.7.11");
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").status(), "530 5.7.0");
    let mut s = c.starttls(&t.setup.ca_pem());
    let r = s.cmd("EHLO client.test");
    assert!(r.lines.contains(&"250-AUTH PLAIN LOGIN".to_owned()), "{r:?}");
    assert_eq!(s.cmd("MAIL FROM:<alice@example.test>").status(), "530 5.7.0");
    assert_eq!(s.auth_plain("alice", "secret").status(), "235 2.7.0");
    assert_eq!(s.auth_plain("alice", "secret").status(), "503 5.5.1");
    let r = s.send_mail("alice@example.test", &["someone@remote.test"], &message("sub"));
    assert_eq!(r.status(), "250 2.0.0");
    assert!(t.wait_log("auth ok from unknown[127.0.0.1]: mechanism=PLAIN user=<alice>"));
}

#[test]
fn auth_plain_and_login_exchanges() {
    let t = Setup::new().submission().start();
    // PLAIN with the response after a 334 challenge, authzid = authcid.
    let mut s = tls_session(&t);
    let r = s.cmd("AUTH PLAIN");
    assert_eq!(r.lines, vec!["334 "]);
    assert_eq!(s.cmd(&b64(b"alice\0alice\0secret")).status(), "235 2.7.0");
    // LOGIN, user name as initial response, then the password prompt.
    let mut s = tls_session(&t);
    let r = s.cmd(&format!("AUTH LOGIN {}", b64(b"bob")));
    assert_eq!(r.lines, vec!["334 UGFzc3dvcmQ6"]);
    assert_eq!(s.cmd(&b64(b"hunter2")).status(), "235 2.7.0");
    // LOGIN with both prompts.
    let mut s = tls_session(&t);
    assert_eq!(s.cmd("AUTH LOGIN").lines, vec!["334 VXNlcm5hbWU6"]);
    assert_eq!(s.cmd(&b64(b"bob")).lines, vec!["334 UGFzc3dvcmQ6"]);
    assert_eq!(s.cmd(&b64(b"wrong")).status(), "535 5.7.8");
    // Cancel with "*" (RFC 4954 4), an empty "=" response, junk, unknown mechanism.
    assert_eq!(s.cmd("AUTH PLAIN").code, 334);
    assert_eq!(s.cmd("*").status(), "501 5.0.0");
    assert_eq!(s.cmd("AUTH LOGIN").code, 334);
    assert_eq!(s.cmd("*").status(), "501 5.0.0");
    assert_eq!(s.cmd("AUTH PLAIN =").status(), "501 5.5.2");
    assert_eq!(s.cmd("AUTH PLAIN not*base64").status(), "501 5.5.2");
    assert_eq!(
        s.cmd(&format!("AUTH PLAIN {}", b64(b"carol\0alice\0secret")))
            .status(),
        "501 5.5.2"
    );
    assert_eq!(s.cmd("AUTH CRAM-MD5").status(), "504 5.5.4");
    // Still usable: failures so far were one 535.
    assert_eq!(s.auth_plain("alice", "secret").status(), "235 2.7.0");
}

#[test]
fn three_failures_close_the_session_after_a_delay() {
    let t = Setup::new().submission().set("auth_failure_delay", "1s").start();
    let mut s = tls_session(&t);
    let start = Instant::now();
    assert_eq!(s.auth_plain("alice", "nope").status(), "535 5.7.8");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(s.auth_plain("nosuchuser", "secret").status(), "535 5.7.8");
    assert_eq!(s.auth_plain("bob", "secret").status(), "535 5.7.8");
    assert!(s.closed());
    // Every failure is logged with the client address.
    assert!(t.wait_log("auth failed from unknown[127.0.0.1]: mechanism=PLAIN user=<alice>"));
    assert!(t.wait_log("auth failed from unknown[127.0.0.1]: mechanism=PLAIN user=<nosuchuser>"));
    assert!(t.wait_log("auth failed from unknown[127.0.0.1]: mechanism=PLAIN user=<bob>"));
}

#[test]
fn sender_ownership() {
    let setup = Setup::new().submission();
    let map = setup.path().join("senders");
    std::fs::write(&map, "bob: bob@example.test, @bob.test\n").unwrap();
    let map = map.display().to_string();
    let t = setup.set("sender_map", &map).start();

    let mut s = tls_session(&t);
    assert_eq!(s.auth_plain("alice", "secret").status(), "235 2.7.0");
    assert_eq!(s.cmd("MAIL FROM:<bob@example.test>").status(), "553 5.7.1");
    assert_eq!(s.cmd("MAIL FROM:<alice@remote.test>").status(), "553 5.7.1");
    assert_eq!(s.cmd("MAIL FROM:<alice@[127.0.0.1]>").status(), "553 5.7.1");
    assert_eq!(s.cmd("MAIL FROM:<Alice@Example.TEST>").status(), "250 2.1.0");
    assert_eq!(s.cmd("RSET").status(), "250 2.0.0");
    assert_eq!(s.cmd("MAIL FROM:<alice@localhost>").status(), "250 2.1.0");

    let mut s = tls_session(&t);
    assert_eq!(s.auth_plain("bob", "hunter2").status(), "235 2.7.0");
    assert_eq!(s.cmd("MAIL FROM:<anything@bob.test>").status(), "250 2.1.0");
    assert_eq!(s.cmd("RSET").status(), "250 2.0.0");
    assert_eq!(s.cmd("MAIL FROM:<bob@localhost>").status(), "553 5.7.1");
    assert_eq!(s.cmd("MAIL FROM:<alice@example.test>").status(), "553 5.7.1");
    assert!(t.wait_log("553 5.7.1 <alice@example.test>: Sender address rejected"));
}

#[test]
fn submitted_mail_gets_date_and_message_id() {
    let t = Setup::new().submission().start();
    let mut s = tls_session(&t);
    assert_eq!(s.auth_plain("alice", "secret").status(), "235 2.7.0");
    let r = s.send_mail(
        "alice@example.test",
        &["bob@example.test"],
        "From: alice@example.test\r\nSubject: bare\r\n\r\nbody\r\n",
    );
    let id = r.queue_id();
    let (_, body) = t.message(&id);
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.contains(&format!("\nMessage-ID: <{id}@mx.test>\n")),
        "{body}"
    );
    assert!(body.contains("\nDate: "), "{body}");
    assert!(
        body.ends_with("From: alice@example.test\nSubject: bare\n\nbody\n"),
        "{body}"
    );
    // Present fields are kept as they are, and nothing is added.
    let r = s.send_mail(
        "alice@example.test",
        &["bob@example.test"],
        "date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-Id: <x@y>\r\nSubject: full\r\n\r\nDate: in body\r\n",
    );
    let (_, body) = t.message(&r.queue_id());
    let body = String::from_utf8(body).unwrap();
    assert_eq!(
        body.matches("Date:").count() + body.matches("date:").count(),
        2,
        "{body}"
    );
    assert!(!body.contains("Message-ID:"), "{body}");
    // RFC 5322 4.5.3: white space before the colon still names the field.
    let r = s.send_mail(
        "alice@example.test",
        &["bob@example.test"],
        "Date : Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID\t: <x@y>\r\n\r\nb\r\n",
    );
    let (_, body) = t.message(&r.queue_id());
    let body = String::from_utf8(body).unwrap();
    assert!(
        !body.contains("\nDate: ") && !body.contains("\nMessage-ID: "),
        "{body}"
    );
    // No header at all: the fields go in front, and an empty line keeps the text
    // out of the header.
    let r = s.send_mail("alice@example.test", &["bob@example.test"], "just text\r\n");
    let id = r.queue_id();
    let (_, body) = t.message(&id);
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.ends_with(&format!("\nMessage-ID: <{id}@mx.test>\n\njust text\n")),
        "{body}"
    );
    // Mail from port 25 is left alone.
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail(
        "x@remote.test",
        &["bob@example.test"],
        "Subject: mx\r\n\r\nhi\r\n",
    );
    let (_, body) = t.message(&r.queue_id());
    let body = String::from_utf8(body).unwrap();
    assert!(!body.contains("Message-ID:") && !body.contains("Date:"), "{body}");
}

#[test]
fn authenticated_clients_relay_anywhere_outsiders_do_not() {
    let t = Setup::new()
        .submission()
        .set("relay_networks", "192.0.2.0/24")
        .start();
    // Port 25 with STARTTLS: relaying refused until AUTH.
    let mut c = t.connect();
    c.hello();
    let mut s = c.starttls(&t.setup.ca_pem());
    s.cmd("EHLO client.test");
    assert_eq!(s.cmd("MAIL FROM:<alice@example.test>").status(), "250 2.1.0");
    assert_eq!(s.cmd("RCPT TO:<someone@remote.test>").status(), "554 5.7.1");
    assert_eq!(s.cmd("RSET").status(), "250 2.0.0");
    assert_eq!(s.auth_plain("alice", "secret").status(), "235 2.7.0");
    assert_eq!(s.cmd("MAIL FROM:<alice@example.test>").status(), "250 2.1.0");
    assert_eq!(s.cmd("RCPT TO:<someone@remote.test>").status(), "250 2.1.5");
    assert_eq!(s.cmd("RCPT TO:<u@[192.0.2.7]>").status(), "250 2.1.5");
}

#[test]
fn auth_users_changes_without_restart() {
    let t = Setup::new().submission().start();
    let mut s = tls_session(&t);
    assert_eq!(s.auth_plain("carol", "newpass").status(), "535 5.7.8");
    let path = t.setup.path().join("auth_users");
    // openssl passwd -6 -salt tErNtEsTsAlT0002 newpass
    let line = "carol:$6$tErNtEsTsAlT0002$Sehqt9dpVzYVLWmbjc4vi8VwDSgt/2a./8Y5wUp8ck0LFoakbP7NM7xrks1aOXypPw09.FtA8RpDwrW0bLtRt.\n";
    std::fs::write(&path, line).unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    assert_eq!(s.auth_plain("carol", "newpass").status(), "235 2.7.0");
}
