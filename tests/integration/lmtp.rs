//! LMTP delivery (RFC 2033) into a real Dovecot (common/dovecot.rs):
//! `mailbox_transport` over the UNIX socket, a `route` over TCP, one reply
//! per recipient after the data, each recorded on its own, STARTTLS with
//! tern's outbound TLS settings, and connections kept between messages.
//! Dovecot needs root; without it (or without Dovecot) the tests skip
//! visibly, and fail under CI=true.

use crate::common::dovecot::Dovecot;
use crate::common::{message, submit, wait_until, Setup, Tern};

/// The mail log line of `id`'s delivery attempt to `rcpt` (the last one).
fn attempt_line(t: &Tern, id: &str, rcpt: &str) -> String {
    let needle = format!("{id}: to=<{rcpt}>, ");
    assert!(t.wait_log(&needle), "no attempt for {rcpt}:\n{}", t.log_text());
    t.log_text()
        .lines()
        .rev()
        .find(|l| l.contains(&needle))
        .map(|l| {
            // Postfix's lmtp(8) logs these: ternd/lmtp[pid], relay=lmtp/...
            assert!(!l.contains("relay=lmtp/") || l.contains(" ternd/lmtp["), "{l}");
            l.to_owned()
        })
        .unwrap_or_default()
}

/// A message larger than a 1K quota.
fn big(subject: &str) -> String {
    format!(
        "From: s@example.test\r\nSubject: {subject}\r\n\r\n{}",
        format!("{}\r\n", "x".repeat(70)).repeat(50)
    )
}

#[test]
fn mailbox_transport_hands_users_to_dovecot_over_its_socket() {
    let Some(dovecot) = Dovecot::builder().user("alice").user("bob").start() else {
        return;
    };
    let socket = dovecot.lmtp_socket();
    let setup = Setup::new().deliver().open_to_all();
    // A command in an alias writes here (open_to_all made it reachable).
    let piped = setup.path().join("out/piped");
    let setup = setup
        .aliases(&format!(
            "team: alice, bob\nlogged: alice, \"|cat > {}\"\n",
            piped.display()
        ))
        .set("mailbox_transport", &format!("lmtp:unix:{}", socket.display()))
        // One delivery at a time, and connections kept long enough that
        // every message of the test goes over the first one.
        .set("delivery_threads", "1")
        .set("smtp_connection_cache_time", "60s");
    let t = setup.start();
    let relay = format!("relay=lmtp/mx.test[{}]", socket.display());

    // A user Dovecot knows: the mail lands in Dovecot's Maildir, not tern's.
    let id = submit(
        &t,
        "alice@example.test",
        &["alice@example.test"],
        &message("to dovecot"),
    );
    let mail = dovecot.wait_messages("alice", 1);
    assert_eq!(mail.len(), 1, "{}", dovecot.log());
    assert!(mail[0].contains("Subject: to dovecot"), "{}", mail[0]);
    // Dovecot adds Return-Path and Delivered-To itself; our Received: is kept.
    assert!(
        mail[0].starts_with("Return-Path: <alice@example.test>"),
        "{}",
        mail[0]
    );
    assert!(mail[0].contains(&format!("with ESMTP id {id}")), "{}", mail[0]);
    let line = attempt_line(&t, &id, "alice@example.test");
    assert!(line.contains(&relay), "{line}");
    assert!(
        line.contains("dsn=2.0.0, status=sent (250 2.0.0 <alice@example.test> "),
        "{line}"
    );
    assert!(
        !t.setup.path().join("mail/alice").exists(),
        "tern wrote a mailbox itself"
    );

    // A user tern knows (local_users) and Dovecot does not: Dovecot's 550
    // bounces it, and the report, to alice, goes through Dovecot too.
    let id = submit(
        &t,
        "alice@example.test",
        &["carol@example.test"],
        &message("to carol"),
    );
    let line = attempt_line(&t, &id, "carol@example.test");
    assert!(line.contains(&relay), "{line}");
    assert!(
        line.contains("dsn=5.1.1, status=bounced (550 5.1.1 <carol@example.test> User doesn't exist"),
        "{line}"
    );
    let mail = dovecot.wait_messages("alice", 2);
    let bounce = mail
        .iter()
        .find(|m| m.contains("Undelivered Mail"))
        .unwrap_or_else(|| panic!("no bounce in {mail:?}"));
    assert!(bounce.contains("Action: failed"), "{bounce}");
    assert!(bounce.contains("Status: 5.1.1"), "{bounce}");
    assert!(
        bounce.contains("Diagnostic-Code: smtp; 550 5.1.1 <carol@example.test> User doesn't exist"),
        "{bounce}"
    );
    assert!(bounce.contains("Remote-MTA: dns; mx.test"), "{bounce}");

    // Aliases are ours: team is alice and bob (in one LMTP transaction),
    // and a command in an alias still runs here. alice is in both aliases:
    // her mailbox gets the message once (issue 16, duplicates).
    let id = submit(
        &t,
        "s@example.test",
        &["team@example.test", "logged@example.test"],
        &message("fan out"),
    );
    assert_eq!(dovecot.wait_messages("bob", 1).len(), 1, "{}", dovecot.log());
    assert!(wait_until(10, || std::fs::read_to_string(&piped)
        .is_ok_and(|s| s.contains("Subject: fan out"))));
    let line = attempt_line(&t, &id, "team@example.test");
    assert!(line.contains(&relay) && line.contains("status=sent"), "{line}");
    let line = attempt_line(&t, &id, "logged@example.test");
    assert!(
        line.contains("status=sent") && line.contains("duplicate of <team@example.test>"),
        "{line}"
    );
    assert!(t.wait_queue_empty(10), "{}", t.log_text());
    let mail = dovecot.messages("alice");
    assert_eq!(mail.len(), 3, "{}", dovecot.log());
    assert_eq!(mail.iter().filter(|m| m.contains("Subject: fan out")).count(), 1);

    // Every transaction (four with the bounce) used one connection.
    assert_eq!(dovecot.connections(), 1, "{}", dovecot.log());
}

#[test]
fn a_full_mailbox_defers_only_its_recipient_until_the_quota_is_raised() {
    let Some(mut dovecot) = Dovecot::builder().user("alice").user_quota("bob", "1K").start() else {
        return;
    };
    let lmtp = dovecot.lmtp_addr();
    let t = Setup::new()
        .deliver()
        .set("route", &format!("dove.test lmtp:[127.0.0.1]:{}", lmtp.port()))
        .set("retry_initial", "1h")
        .set("metrics_listen", "127.0.0.1:0")
        .start();
    let relay = format!("relay=lmtp/127.0.0.1[127.0.0.1]:{}", lmtp.port());
    // Both recipients in one transaction: Dovecot answers each after the data.
    let id = submit(
        &t,
        "s@example.test",
        &["alice@dove.test", "bob@dove.test"],
        &big("quota"),
    );
    let alice = attempt_line(&t, &id, "alice@dove.test");
    assert!(
        alice.contains(&relay) && alice.contains("status=sent (250 2.0.0 <alice@dove.test>"),
        "{alice}"
    );
    let bob = attempt_line(&t, &id, "bob@dove.test");
    assert!(bob.contains(&relay), "{bob}");
    assert!(
        bob.contains("dsn=4.2.2, status=deferred (452 4.2.2 <bob@dove.test> Quota exceeded"),
        "{bob}"
    );
    assert_eq!(dovecot.wait_messages("alice", 1).len(), 1);
    assert!(dovecot.messages("bob").is_empty());
    // The spool keeps bob alone, with Dovecot's reply (written once the
    // attempt is over).
    let deferred = |env: &tern::spool::Envelope| {
        env.recipients
            .iter()
            .any(|r| r.status == tern::spool::RcptStatus::Deferred)
    };
    assert!(wait_until(5, || deferred(&t.message(&id).0)));
    let (env, _) = t.message(&id);
    let waiting: Vec<_> = env
        .recipients
        .iter()
        .filter(|r| r.status == tern::spool::RcptStatus::Deferred)
        .collect();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].addr, "bob@dove.test");
    assert!(
        waiting[0]
            .last_reply
            .as_deref()
            .is_some_and(|r| r.contains("Quota exceeded")),
        "{waiting:?}"
    );

    // The quota is raised; the next attempt delivers bob, and only bob.
    dovecot.set_quota("bob", Some("10M"));
    assert_eq!(t.setup.ternctl(&["flush"]).code, 0);
    assert!(t.wait_queue_empty(10), "{}", t.log_text());
    let bob = attempt_line(&t, &id, "bob@dove.test");
    assert!(bob.contains("status=sent (250 2.0.0 <bob@dove.test>"), "{bob}");
    assert_eq!(dovecot.wait_messages("bob", 1).len(), 1);
    assert_eq!(dovecot.messages("alice").len(), 1, "alice got it again");
    let log = t.log_text();
    assert_eq!(
        log.matches(&format!("{id}: to=<alice@dove.test>")).count(),
        1,
        "{log}"
    );
    // Counted as LMTP deliveries: two sent, one deferred.
    let m = crate::metrics::scrape(t.service_addr("metrics"));
    let count = |status: &str| {
        m.get(&format!(
            "tern_deliveries_total{{transport=\"lmtp\",status=\"{status}\"}}"
        ))
        .copied()
    };
    assert_eq!(
        (count("sent"), count("deferred")),
        (Some(2.0), Some(1.0)),
        "{m:?}"
    );
    let saved = dovecot.log();
    assert_eq!(
        saved
            .lines()
            .filter(|l| l.contains("lmtp(alice)") && l.contains("saved mail"))
            .count(),
        1,
        "{saved}"
    );
}

#[test]
fn starttls_over_tcp_follows_the_outbound_tls_settings() {
    let Some(dovecot) = Dovecot::builder().user("alice").tls().start() else {
        return;
    };
    let port = dovecot.lmtp_addr().port();
    let setup = Setup::new().deliver();
    let ca = setup.path().join("dovecot-ca.pem");
    std::fs::write(&ca, dovecot.ca_pem()).unwrap();
    let t = setup
        .set("tls_ca_file", &ca.display().to_string())
        .set("route", &format!("dove.test lmtp:[127.0.0.1]:{port} tls=verify"))
        .start();
    let id = submit(&t, "s@example.test", &["alice@dove.test"], &message("encrypted"));
    let line = attempt_line(&t, &id, "alice@dove.test");
    assert!(
        line.contains(&format!("relay=lmtp/127.0.0.1[127.0.0.1]:{port}")) && line.contains(", tls=TLSv1.3"),
        "{line}"
    );
    assert!(line.contains("status=sent"), "{line}");
    assert_eq!(dovecot.wait_messages("alice", 1).len(), 1);
}

#[test]
fn an_lmtp_server_that_is_down_defers() {
    let setup = Setup::new().deliver().set("retry_initial", "1h");
    let socket = setup.path().join("no-lmtp");
    let t = setup
        .set("mailbox_transport", &format!("lmtp:unix:{}", socket.display()))
        .start();
    let id = submit(&t, "s@example.test", &["alice@example.test"], &message("waits"));
    let line = attempt_line(&t, &id, "alice@example.test");
    assert!(
        line.contains(&format!("relay=lmtp/mx.test[{}]", socket.display())),
        "{line}"
    );
    assert!(line.contains("dsn=4.4.1, status=deferred (connect: "), "{line}");
    assert!(!t.setup.path().join("mail/alice").exists());
}
