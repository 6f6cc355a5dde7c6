//! Every limit of RFC 5321 4.5.3 and the configured ones, and that the session
//! carries on (or closes) as it should afterwards.

use std::time::{Duration, Instant};

use crate::common::{message, Setup};

#[test]
fn command_line_512_octets() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    // 510 octets + CRLF = 512: accepted (NOOP takes any text).
    let ok = format!("NOOP {}", "x".repeat(505));
    assert_eq!(ok.len(), 510);
    assert_eq!(c.cmd(&ok).status(), "250 2.0.0");
    let long = format!("NOOP {}", "x".repeat(506));
    assert_eq!(c.cmd(&long).status(), "500 5.5.2");
    // A huge line is swallowed whole and the session goes on.
    assert_eq!(c.cmd(&"y".repeat(100_000)).status(), "500 5.5.2");
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
}

#[test]
fn text_line_1000_octets() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    let ok = format!("Subject: x\r\n\r\n{}\r\n", "a".repeat(998));
    assert_eq!(
        c.send_mail("a@example.test", &["alice@example.test"], &ok)
            .status(),
        "250 2.0.0"
    );
    let bad = format!("Subject: x\r\n\r\n{}\r\n", "a".repeat(999));
    assert_eq!(
        c.send_mail("a@example.test", &["alice@example.test"], &bad)
            .status(),
        "550 5.6.0"
    );
    assert_eq!(t.queued().len(), 1);
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
}

#[test]
fn max_recipients() {
    let t = Setup::new().set("max_recipients", "2").start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<a@example.test>");
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").status(), "250 2.1.5");
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").status(), "250 2.1.5");
    assert_eq!(c.cmd("RCPT TO:<carol@example.test>").status(), "452 4.5.3");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(message("two").as_bytes());
    c.send_raw(b".\r\n");
    let r = c.reply();
    assert_eq!(r.status(), "250 2.0.0");
    assert_eq!(t.message(&r.queue_id()).0.recipients.len(), 2);
}

#[test]
fn declared_size_over_limit() {
    let t = Setup::new().set("max_message_size", "1K").start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.test> SIZE=1025").status(),
        "552 5.3.4"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.test> SIZE=99999999999999999999999")
            .status(),
        "552 5.3.4"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.test> SIZE=1024").status(),
        "250 2.1.0"
    );
}

#[test]
fn oversize_data_is_refused_and_session_continues() {
    let t = Setup::new().set("max_message_size", "1K").start();
    let mut c = t.connect();
    c.hello();
    let big = format!(
        "Subject: big\r\n\r\n{}",
        "0123456789abcdef0123456789abcdef\r\n".repeat(100)
    );
    let r = c.send_mail("a@example.test", &["alice@example.test"], &big);
    assert_eq!(r.status(), "552 5.3.4");
    assert!(t.queued().is_empty());
    assert!(
        std::fs::read_dir(t.spool_dir().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "tmp must be empty"
    );
    // The dialog continues: a small message goes through.
    let r = c.send_mail("a@example.test", &["alice@example.test"], &message("small"));
    assert_eq!(r.status(), "250 2.0.0");
    assert_eq!(t.queued().len(), 1);
}

#[test]
fn loop_detection_over_50_received() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    let hops = |n: usize| {
        let mut m = "Received: from a by b; Mon, 23 Nov 2026 10:00:00 +0000\r\n".repeat(n);
        m.push_str(&message("hops"));
        m
    };
    assert_eq!(
        c.send_mail("a@example.test", &["alice@example.test"], &hops(50))
            .status(),
        "250 2.0.0"
    );
    assert_eq!(
        c.send_mail("a@example.test", &["alice@example.test"], &hops(51))
            .status(),
        "554 5.4.6"
    );
    assert_eq!(t.queued().len(), 1);
}

#[test]
fn ten_bad_commands_close_the_session() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    for _ in 0..9 {
        assert_eq!(c.cmd("BOGUS").status(), "500 5.5.2");
    }
    assert_eq!(c.cmd("BOGUS").status(), "500 5.5.2");
    let r = c.reply();
    assert_eq!(r.status(), "421 4.7.0");
    assert!(c.closed());
}

#[test]
fn policy_rejections_do_not_count_as_errors() {
    let t = Setup::new().set("max_errors", "3").start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<a@example.test>");
    for i in 0..5 {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<nobody{i}@example.test>")).status(),
            "550 5.1.1"
        );
    }
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
}

#[test]
fn command_timeout() {
    let t = Setup::new()
        .set("command_timeout", "1s")
        .set("greeting_timeout", "1s")
        .start();
    let mut c = t.connect();
    c.hello();
    let start = Instant::now();
    let r = c.reply();
    assert_eq!(r.status(), "421 4.4.2");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(c.closed());
    // Logged as Postfix does, naming the last command; no pool stress here.
    assert!(t.wait_log("timeout after EHLO from"), "{}", t.log_text());
    assert!(!t.log_text().contains("(stress mode)"), "{}", t.log_text());
}

#[test]
fn data_timeout() {
    let t = Setup::new().set("data_timeout", "1s").start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<a@example.test>");
    c.cmd("RCPT TO:<alice@example.test>");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(b"Subject: unfinished\r\n\r\nhalf a mess");
    assert_eq!(c.reply().status(), "421 4.4.2");
    assert!(c.closed());
    assert!(t.queued().is_empty());
    assert!(
        t.wait_log("timeout after END-OF-MESSAGE from"),
        "{}",
        t.log_text()
    );
}
