//! Exact replies to each command and to bad sequences (RFC 5321 4.1, 4.3.2).

use crate::common::{message, Setup};

#[test]
fn greeting_and_ehlo_extensions() {
    let t = Setup::new().set("max_message_size", "10M").start();
    let mut c = t.connect();
    let g = c.reply();
    assert_eq!(g.lines, vec!["220 mx.test ESMTP tern"]);
    let r = c.cmd("EHLO client.test");
    assert_eq!(
        r.lines,
        vec![
            "250-mx.test Hello client.test",
            "250-PIPELINING",
            "250-SIZE 10485760",
            "250-8BITMIME",
            "250-ENHANCEDSTATUSCODES",
            "250-SMTPUTF8",
            "250-DSN",
            "250-CHUNKING",
            "250-LIMITS RCPTMAX=100 MAILMAX=1000",
            "250 HELP",
        ]
    );
    assert_eq!(c.cmd("HELO client.test").lines, vec!["250 mx.test"]);
    assert_eq!(c.cmd("QUIT").lines, vec!["221 2.0.0 Bye"]);
    assert!(c.closed());
}

#[test]
fn simple_commands() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
    assert_eq!(c.cmd("noop with args").status(), "250 2.0.0");
    assert_eq!(c.cmd("RSET").status(), "250 2.0.0");
    assert_eq!(c.cmd("VRFY alice").status(), "252 2.5.2");
    assert_eq!(c.cmd("VRFY nosuchuser").status(), "252 2.5.2");
    assert_eq!(c.cmd("EXPN team").status(), "502 5.5.1");
    let h = c.cmd("HELP");
    assert_eq!(h.code, 214);
    assert!(h.lines.iter().all(|l| l.starts_with("214")));
    assert_eq!(c.cmd("FOO").status(), "500 5.5.2");
    assert_eq!(c.cmd("STARTTLS").status(), "502 5.5.1");
    assert_eq!(c.cmd("quit").status(), "221 2.0.0");
}

#[test]
fn expn_when_enabled() {
    let t = Setup::new().set("expn", "yes").start();
    let mut c = t.connect();
    c.hello();
    let r = c.cmd("EXPN team");
    assert_eq!(r.lines, vec!["250-2.1.5 alice", "250 2.1.5 bob"]);
    assert_eq!(c.cmd("EXPN nobody").status(), "550 5.1.1");
}

#[test]
fn sequence_errors() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.reply();
    // RFC 5321 4.1.4: MAIL before EHLO/HELO.
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").status(), "503 5.5.1");
    c.cmd("EHLO client.test");
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").status(), "503 5.5.1");
    assert_eq!(c.cmd("DATA").status(), "503 5.5.1");
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").status(), "250 2.1.0");
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").status(), "503 5.5.1");
    assert_eq!(c.cmd("DATA").status(), "503 5.5.1");
    assert_eq!(c.cmd("RSET").status(), "250 2.0.0");
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").status(), "503 5.5.1");
    // EHLO resets the transaction too (RFC 5321 4.1.4).
    c.cmd("MAIL FROM:<a@example.test>");
    c.cmd("EHLO again.test");
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").status(), "503 5.5.1");
}

#[test]
fn syntax_errors() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("EHLO").status(), "501 5.5.4");
    assert_eq!(c.cmd("MAIL").status(), "501 5.5.4");
    assert_eq!(c.cmd("MAIL FROM:<not an address>").status(), "501 5.1.7");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.test> FROBNICATE=1").status(),
        "555 5.5.4"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.test> BODY=BINARYMIME").status(),
        "555 5.5.4"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@example.test> AUTH=<>").status(), "555 5.5.4");
    assert_eq!(c.cmd("MAIL FROM:<a@example.test> RET=SOME").status(), "501 5.5.4");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.test> BODY=8BITMIME").status(),
        "250 2.1.0"
    );
    assert_eq!(c.cmd("RCPT TO:<@@>").status(), "501 5.1.3");
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.test> NOTIFY=NEVER,DELAY").status(),
        "501 5.5.4"
    );
    assert_eq!(c.cmd("RCPT TO:<alice@example.test> FOO=1").status(), "555 5.5.4");
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.test> NOTIFY=NEVER").status(),
        "250 2.1.5"
    );
    assert_eq!(c.cmd("DATA extra").status(), "501 5.5.4");
}

#[test]
fn esmtp_parameters_need_ehlo() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.reply();
    c.cmd("HELO client.test");
    assert_eq!(c.cmd("MAIL FROM:<a@example.test> SIZE=10").status(), "555 5.5.4");
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").status(), "250 2.1.0");
}

#[test]
fn null_sender_and_source_routes() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail("", &["alice@example.test"], &message("bounce"));
    assert_eq!(r.status(), "250 2.0.0");
    let (env, _) = t.message(&r.queue_id());
    assert_eq!(env.sender, "");
    // RFC 5321 4.1.2: source routes are accepted and ignored.
    assert_eq!(
        c.cmd("MAIL FROM:<@relay.test,@r2.test:a@example.test>").status(),
        "250 2.1.0"
    );
    assert_eq!(
        c.cmd("RCPT TO:<@relay.test:bob@example.test>").status(),
        "250 2.1.5"
    );
    c.cmd("DATA");
    c.send_raw(b"Subject: x\r\n\r\nbody\r\n.\r\n");
    let r = c.reply();
    let (env, _) = t.message(&r.queue_id());
    assert_eq!(env.sender, "a@example.test");
    assert_eq!(env.recipients[0].addr, "bob@example.test");
}

#[test]
fn http_probe_is_closed() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.reply();
    assert_eq!(c.cmd("GET / HTTP/1.1").status(), "554 5.7.0");
    assert!(c.closed());
}

#[test]
fn pipelined_transaction_in_one_write() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.reply();
    let mut batch = String::from("EHLO client.test\r\nMAIL FROM:<a@example.test>\r\n");
    batch.push_str(
        "RCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\n",
    );
    batch.push_str("DATA\r\n");
    batch.push_str(&message("pipelined"));
    batch.push_str(".\r\nMAIL FROM:<b@example.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\n");
    batch.push_str(&message("second"));
    batch.push_str(".\r\nQUIT\r\n");
    c.send_raw(batch.as_bytes());
    let codes: Vec<u16> = std::iter::from_fn(|| c.try_reply()).map(|r| r.code).collect();
    assert_eq!(
        codes,
        vec![250, 250, 250, 550, 250, 354, 250, 250, 250, 354, 250, 221]
    );
    let q = t.queued();
    assert_eq!(q.len(), 2);
    let rcpts: usize = q.iter().map(|(e, _)| e.recipients.len()).sum();
    assert_eq!(rcpts, 3);
}

#[test]
fn received_header_and_body_are_stored() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail(
        "a@example.test",
        &["alice@example.test"],
        "Subject: hi\r\n\r\n..dot stuffed\r\nline\r\n",
    );
    assert_eq!(r.status(), "250 2.0.0");
    let id = r.queue_id();
    assert!(r.text().contains("queued as"), "{r:?}");
    let (env, body) = t.message(&id);
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.starts_with(
            "Received: from client.test (unknown [127.0.0.1])\n\tby mx.test (tern) with ESMTP id "
        ),
        "{body}"
    );
    assert!(
        body.contains(&format!("id {id}\n\tfor <alice@example.test>; ")),
        "{body}"
    );
    assert!(body.ends_with("Subject: hi\n\n.dot stuffed\nline\n"), "{body}");
    assert_eq!(env.id.as_str(), id);
    assert_eq!(env.sender, "a@example.test");
    assert_eq!(env.helo.as_deref(), Some("client.test"));
    assert_eq!(env.client_addr, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(env.size, body.len() as u64);
    // Postfix's three lines: smtpd's client=, cleanup's message-id=, qmgr's from=.
    let pid = t.child.id();
    let qmgr = format!(
        "ternd/qmgr[{pid}]: INFO: {id}: from=<a@example.test>, size={}, nrcpt=1 (queue active)",
        body.len()
    );
    assert!(t.wait_log(&qmgr), "{}", t.log_text());
    let lines = t.log.lock().unwrap().clone();
    let has = |want: &str| lines.iter().any(|l| l.ends_with(want));
    assert!(
        has(&format!(
            "ternd/smtpd[{pid}]: INFO: {id}: client=unknown[127.0.0.1]"
        )),
        "{lines:?}"
    );
    // The message has no Message-ID (plain SMTP gets none added).
    assert!(
        has(&format!("ternd/cleanup[{pid}]: INFO: {id}: message-id=<>")),
        "{lines:?}"
    );
}

#[test]
fn rejections_are_logged() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<a@example.test>");
    assert_eq!(c.cmd("RCPT TO:<nobody@example.test>").status(), "550 5.1.1");
    assert!(t.wait_log("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1"));
    assert!(t
        .log_text()
        .contains("from=<a@example.test> to=<nobody@example.test> proto=ESMTP helo=<client.test>"));
    assert!(t.log_text().contains("connect from unknown[127.0.0.1]"));
}

#[test]
fn eight_bit_and_smtputf8() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    // RFC 6531 3.4: UTF-8 addresses need SMTPUTF8 on MAIL.
    assert_eq!(c.cmd("MAIL FROM:<jöran@example.test>").status(), "553 5.6.7");
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").status(), "250 2.1.0");
    assert_eq!(c.cmd("RCPT TO:<björn@example.test>").status(), "553 5.6.7");
    c.cmd("RSET");
    assert_eq!(
        c.cmd("MAIL FROM:<jöran@example.test> SMTPUTF8 BODY=8BITMIME")
            .status(),
        "250 2.1.0"
    );
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").status(), "250 2.1.5");
    c.cmd("DATA");
    c.send_raw("Subject: grüße\r\n\r\nSchöne Grüße\r\n.\r\n".as_bytes());
    let r = c.reply();
    assert_eq!(r.status(), "250 2.0.0");
    let (env, body) = t.message(&r.queue_id());
    assert!(env.smtputf8);
    assert_eq!(env.sender, "jöran@example.test");
    assert!(String::from_utf8(body).unwrap().contains("with UTF8SMTP id"));
}

#[test]
fn listens_on_both_wildcards_of_one_port() {
    // The default `listen` binds 0.0.0.0 and [::] on one port; that must work
    // whatever net.ipv6.bindv6only says.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = Setup::new().set("listen", &format!("*:{port}")).start();
    let mut c = crate::common::Client::connect(format!("127.0.0.1:{port}").parse().unwrap());
    assert_eq!(c.reply().code, 220);
    assert!(
        t.wait_log(&format!("listening on [::]:{port}")),
        "{}",
        t.log_text()
    );
    if let Ok(s) = std::net::TcpStream::connect(("::1", port)) {
        drop(s);
    }
}

#[test]
fn each_rejection_is_logged_once() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<a@example.test>");
    assert_eq!(c.cmd("RCPT TO:<nobody@example.test>").code, 550);
    c.cmd("QUIT");
    assert!(t.wait_log("disconnect from"));
    assert_eq!(
        t.log_text().matches("NOQUEUE: reject: RCPT").count(),
        1,
        "{}",
        t.log_text()
    );
}
