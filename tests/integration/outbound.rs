//! Remote delivery (issue 4): routes to a second ternd and to scripted
//! peers, MX walks against a DNS server on loopback, outbound TLS, AUTH to
//! a smarthost, and the per-recipient results of one transaction.

use crate::common::dns::{DnsServer, Zone};
use crate::common::peer::{self, Peer, Script};
use crate::common::{message, submit, wait_files, wait_until, Setup, Tern};

/// A sender whose remote mail for `domain` goes to the peer.
fn via_route(domain: &str, port: u16) -> Setup {
    Setup::new()
        .deliver()
        .set("route", &format!("{domain} [127.0.0.1]:{port}"))
}

fn log_has(t: &Tern, needle: &str) -> bool {
    let ok = t.wait_log(needle);
    if !ok {
        eprintln!("no {needle:?} in log:\n{}", t.log_text());
    }
    ok
}

#[test]
fn route_to_a_second_ternd() {
    let dest = Setup::new()
        .deliver()
        .set("hostname", "mx.dest.test")
        .set("local_domains", "dest.test")
        .start();
    let port = dest.addr.port();
    let t = via_route("dest.test", port).start();
    let id = submit(
        &t,
        "alice@example.test",
        &["alice@dest.test", "bob@dest.test"],
        // The client stuffs the dot; ternd stores ".leading dot" and must
        // stuff it again on the way out.
        "Subject: to the other side\r\n\r\n..leading dot\r\n",
    );
    for user in ["alice", "bob"] {
        let files = wait_files(&dest.maildir_new(user), 1, 10);
        assert_eq!(files.len(), 1, "{user}: {}", dest.log_text());
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(text.contains("Subject: to the other side"), "{text}");
        assert!(text.contains("\n.leading dot"), "dot-stuffing lost: {text}");
    }
    assert!(log_has(
        &t,
        &format!("{id}: to=<alice@dest.test>, relay=127.0.0.1[127.0.0.1]:{port}, delay=")
    ));
    assert!(log_has(&t, "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as"));
    // Both recipients went in one transaction: one message at the far end.
    assert!(dest.wait_log("nrcpt=2 (queue active)"), "{}", dest.log_text());
}

/// A peer's RCPT replies: later@ deferred, nobody@ refused, the rest accepted.
fn mixed_rcpt(a: &str) -> String {
    match a.split('@').next().unwrap_or_default() {
        "later" => "451 4.2.0 try later".to_owned(),
        "nobody" => "550 5.1.1 no such user".to_owned(),
        _ => "250 2.1.5 Ok".to_owned(),
    }
}

#[test]
fn per_recipient_results_in_one_transaction() {
    let peer = Peer::start(Script {
        rcpt: mixed_rcpt,
        ..Script::default()
    });
    let t = via_route("peer.test", peer.port()).start();
    let id = submit(
        &t,
        "alice@example.test",
        &["ok@peer.test", "later@peer.test", "nobody@peer.test"],
        &message("mixed"),
    );
    assert!(log_has(&t, &format!("{id}: to=<ok@peer.test>")));
    assert!(log_has(&t, "to=<ok@peer.test>, relay=peer.test") || log_has(&t, "status=sent (250 2.0.0 Ok"));
    assert!(log_has(&t, "dsn=4.2.0, status=deferred (451 4.2.0 try later)"));
    assert!(log_has(&t, "dsn=5.1.1, status=bounced (550 5.1.1 no such user)"));
    let msgs = peer.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].1, vec!["ok@peer.test"]);
    // PIPELINING: MAIL, the RCPTs and DATA came as one group.
    let cmds = peer.commands();
    let mail = cmds.iter().position(|c| c.starts_with("MAIL")).unwrap();
    assert_eq!(cmds[mail + 4], "DATA", "{cmds:?}");
    // The body arrives with CRLF line ends.
    assert!(msgs[0].2.windows(2).any(|w| w == b"\r\n"));
    // The bounce for nobody@ reaches the sender, with the remote reply.
    let files = wait_files(&t.maildir_new("alice"), 1, 10);
    assert_eq!(files.len(), 1, "{}", t.log_text());
    let bounce = std::fs::read_to_string(&files[0]).unwrap();
    assert!(bounce.contains("smtp; 550 5.1.1 no such user"), "{bounce}");
    assert!(bounce.contains("Remote-MTA: dns; 127.0.0.1"), "{bounce}");
    assert!(
        !bounce.contains("Final-Recipient: rfc822; ok@peer.test"),
        "{bounce}"
    );
}

#[test]
fn the_relay_is_named_with_host_address_and_port() {
    let peer = Peer::start(Script::default());
    let t = Setup::new()
        .deliver()
        .set("route", &format!("peer.test [127.0.0.1]:{}", peer.port()))
        .start();
    let id = submit(&t, "alice@example.test", &["x@peer.test"], &message("hi"));
    assert!(log_has(
        &t,
        &format!(
            "{id}: to=<x@peer.test>, relay=127.0.0.1[127.0.0.1]:{}, delay=",
            peer.port()
        )
    ));
    assert!(log_has(
        &t,
        "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as PEER0)"
    ));
}

#[test]
fn dropped_in_data_defers() {
    let peer = Peer::start(Script {
        drop_in_data: Some(10),
        ..Script::default()
    });
    let t = via_route("peer.test", peer.port()).start();
    let id = submit(&t, "alice@example.test", &["x@peer.test"], &message("dropped"));
    assert!(log_has(&t, &format!("{id}: to=<x@peer.test>")));
    assert!(log_has(&t, "status=deferred (connection lost after DATA"));
    assert!(peer.messages().is_empty());
}

#[test]
fn helo_when_ehlo_is_refused() {
    let peer = Peer::start(Script {
        refuse_ehlo: true,
        ..Script::default()
    });
    let t = via_route("peer.test", peer.port()).start();
    submit(&t, "alice@example.test", &["x@peer.test"], &message("old peer"));
    assert!(log_has(&t, "status=sent"));
    let cmds = peer.commands();
    assert!(cmds.iter().any(|c| c == "HELO mx.test"), "{cmds:?}");
    // No extensions: no SIZE= and one command at a time.
    assert!(
        cmds.iter().any(|c| c == "MAIL FROM:<alice@example.test>"),
        "{cmds:?}"
    );
}

#[test]
fn greeting_refused_defers() {
    let peer = Peer::start(Script {
        greeting: "421 4.3.2 busy".to_owned(),
        ..Script::default()
    });
    let t = via_route("peer.test", peer.port()).start();
    submit(&t, "alice@example.test", &["x@peer.test"], &message("busy"));
    assert!(log_has(&t, "status=deferred (greeting: 421 4.3.2 busy)"));
}

#[test]
fn size_limit_of_the_remote() {
    let peer = Peer::start(Script {
        size: Some(400),
        ..Script::default()
    });
    let t = via_route("peer.test", peer.port()).start();
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(800));
    submit(&t, "alice@example.test", &["x@peer.test"], &big);
    assert!(log_has(&t, "dsn=5.3.4, status=bounced (message size"));
    assert!(!peer.commands().iter().any(|c| c.starts_with("MAIL")));
    // A small one declares its size.
    submit(&t, "alice@example.test", &["y@peer.test"], &message("small"));
    assert!(log_has(&t, "to=<y@peer.test>"));
    assert!(wait_until(5, || peer.messages().len() == 1));
    assert!(peer.messages()[0].0.contains(" SIZE="), "{:?}", peer.messages());
}

#[test]
fn smtputf8_needed_but_not_offered() {
    let peer = Peer::start(Script::default());
    let t = via_route("peer.test", peer.port()).start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test> SMTPUTF8").code, 250);
    assert_eq!(c.cmd("RCPT TO:<jörg@peer.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(message("utf8").as_bytes());
    assert_eq!(c.cmd(".").code, 250);
    assert!(log_has(&t, "dsn=5.6.7, status=bounced"));
    assert!(peer.messages().is_empty());
}

#[test]
fn dsn_parameters_are_passed_on() {
    let peer = Peer::start(Script {
        dsn: true,
        ..Script::default()
    });
    let t = via_route("peer.test", peer.port()).start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.test> RET=HDRS ENVID=abc+2Bdef BODY=8BITMIME")
            .code,
        250
    );
    assert_eq!(
        c.cmd("RCPT TO:<x@peer.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+2Bo@peer.test")
            .code,
        250
    );
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw("Subject: 8bit\r\n\r\ncaf\u{e9}\r\n".as_bytes());
    let r = c.cmd(".");
    assert_eq!(r.code, 250, "{r:?}");
    let id = r.queue_id();
    assert!(wait_until(10, || peer.messages().len() == 1), "{}", t.log_text());
    let cmds = peer.commands();
    let mail = cmds.iter().find(|c| c.starts_with("MAIL")).unwrap();
    assert!(mail.contains(" BODY=8BITMIME"), "{mail}");
    assert!(mail.contains(" RET=HDRS"), "{mail}");
    assert!(mail.contains(" ENVID=abc+2Bdef"), "{mail}");
    let rcpt = cmds.iter().find(|c| c.starts_with("RCPT")).unwrap();
    assert!(rcpt.contains(" NOTIFY=SUCCESS,FAILURE"), "{rcpt}");
    assert!(rcpt.contains(" ORCPT=rfc822;x+2Bo@peer.test"), "{rcpt}");
    // The peer reports success itself: no notice from us. A notice would be
    // queued before the message leaves the queue, and delivered before the
    // queue is empty.
    assert!(log_has(&t, "status=sent"));
    assert!(log_has(&t, &format!("{id}: removed")));
    assert!(t.wait_queue_empty(10), "{}", t.log_text());
    assert!(wait_files(&t.maildir_new("alice"), 1, 0).is_empty());
}

#[test]
fn relayed_notice_when_the_peer_has_no_dsn() {
    let peer = Peer::start(Script::default());
    let t = via_route("peer.test", peer.port()).start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<x@peer.test> NOTIFY=SUCCESS").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(message("notify").as_bytes());
    assert_eq!(c.cmd(".").code, 250);
    let files = wait_files(&t.maildir_new("alice"), 1, 10);
    assert_eq!(files.len(), 1, "{}", t.log_text());
    let notice = std::fs::read_to_string(&files[0]).unwrap();
    assert!(notice.contains("Action: relayed"), "{notice}");
    assert!(!peer.commands().iter().any(|c| c.contains("NOTIFY=")));
}

// ---- DNS -----------------------------------------------------------------

fn via_dns(dns: &DnsServer, port: u16) -> Setup {
    Setup::new()
        .deliver()
        .set("dns_servers", &dns.conf())
        .set("mx_port", &port.to_string())
}

#[test]
fn mx_preference_and_fallback_when_the_first_is_down() {
    let peer = Peer::start(Script::default());
    // mx1 (preferred) is on 127.0.0.2, where nothing listens: refused at
    // once. mx2 is the peer.
    let dns = DnsServer::start(
        Zone::new()
            .mx("far.test", 20, "mx2.far.test")
            .mx("far.test", 10, "mx1.far.test")
            .addr("mx1.far.test", "127.0.0.2")
            .addr("mx2.far.test", "127.0.0.1"),
    );
    let t = via_dns(&dns, peer.port()).start();
    let id = submit(&t, "alice@example.test", &["x@far.test"], &message("mx"));
    assert!(log_has(
        &t,
        &format!(
            "{id}: to=<x@far.test>, relay=mx2.far.test[127.0.0.1]:{}",
            peer.port()
        )
    ));
    assert!(log_has(&t, "mx1.far.test[127.0.0.2]"));
    assert_eq!(peer.messages().len(), 1);
}

#[test]
fn implicit_mx() {
    let peer = Peer::start(Script::default());
    let dns = DnsServer::start(Zone::new().addr("plain.test", "127.0.0.1"));
    let t = via_dns(&dns, peer.port()).start();
    submit(&t, "alice@example.test", &["x@plain.test"], &message("no mx"));
    assert!(log_has(&t, "relay=plain.test[127.0.0.1]"));
    assert!(log_has(&t, "status=sent"));
}

#[test]
fn null_mx_bounces() {
    let dns = DnsServer::start(Zone::new().mx("nomail.test", 0, "."));
    let t = via_dns(&dns, 9).start();
    submit(&t, "alice@example.test", &["x@nomail.test"], &message("null"));
    assert!(log_has(&t, "dsn=5.1.10, status=bounced"));
    assert_eq!(wait_files(&t.maildir_new("alice"), 1, 10).len(), 1);
}

#[test]
fn nxdomain_bounces() {
    let dns = DnsServer::start(Zone::new());
    let t = via_dns(&dns, 9).start();
    submit(&t, "alice@example.test", &["x@nowhere.test"], &message("nx"));
    assert!(log_has(
        &t,
        "dsn=5.1.2, status=bounced (domain nowhere.test not found)"
    ));
}

#[test]
fn servfail_defers() {
    let dns = DnsServer::start(Zone::new().servfail("broken.test"));
    let t = via_dns(&dns, 9).start();
    submit(&t, "alice@example.test", &["x@broken.test"], &message("sf"));
    assert!(log_has(
        &t,
        "dsn=4.4.3, status=deferred (MX lookup of broken.test"
    ));
}

#[test]
fn mx_pointing_at_ourselves_is_a_loop() {
    // Our hostname is mx.test; the only MX of loop.test is us.
    let dns = DnsServer::start(
        Zone::new()
            .mx("loop.test", 10, "mx.test")
            .addr("mx.test", "127.0.0.1"),
    );
    let t = via_dns(&dns, 9).start();
    submit(&t, "alice@example.test", &["x@loop.test"], &message("loop"));
    assert!(log_has(
        &t,
        "dsn=5.4.6, status=bounced (mail for loop.test loops back to myself)"
    ));
}

#[test]
fn mx_hosts_less_preferred_than_ourselves_are_skipped() {
    let peer = Peer::start(Script::default());
    let dns = DnsServer::start(
        Zone::new()
            .mx("backup.test", 10, "primary.backup.test")
            .mx("backup.test", 20, "mx.test")
            .mx("backup.test", 30, "worse.backup.test")
            .addr("primary.backup.test", "127.0.0.1")
            .addr("worse.backup.test", "127.0.0.1"),
    );
    let t = via_dns(&dns, peer.port()).start();
    submit(&t, "alice@example.test", &["x@backup.test"], &message("backup"));
    assert!(log_has(&t, "relay=primary.backup.test[127.0.0.1]"));
}

// ---- TLS and AUTH ----------------------------------------------------------

#[test]
fn starttls_may_accepts_a_self_signed_peer() {
    let cert = peer::self_signed(&["peer.test"]);
    let peer = Peer::start(Script {
        starttls: Some(cert.config.clone()),
        ..Script::default()
    });
    let t = via_route("peer.test", peer.port()).start();
    submit(&t, "alice@example.test", &["x@peer.test"], &message("tls"));
    assert!(log_has(
        &t,
        "tls=TLSv1.3 policy=may verified=no, dsn=2.0.0, status=sent"
    ));
    assert_eq!(peer.tls(), vec![true]);
    let cmds = peer.commands();
    assert_eq!(
        cmds.iter().filter(|c| c.starts_with("EHLO")).count(),
        2,
        "{cmds:?}"
    );
}

#[test]
fn verify_refuses_a_self_signed_peer() {
    let cert = peer::self_signed(&["localhost"]);
    let peer = Peer::start(Script {
        starttls: Some(cert.config.clone()),
        ..Script::default()
    });
    let t = Setup::new()
        .deliver()
        .set(
            "route",
            &format!("peer.test [localhost]:{} tls=verify", peer.port()),
        )
        .set(
            "dns_servers",
            &DnsServer::start(Zone::new().addr("localhost", "127.0.0.1")).conf(),
        )
        .start();
    submit(&t, "alice@example.test", &["x@peer.test"], &message("verify"));
    assert!(log_has(&t, "status=deferred (TLS with localhost"));
    assert!(peer.messages().is_empty());
}

/// A STARTTLS peer with a certificate for localhost, the DNS that finds it, and
/// a delivering setup routed to it under `smtp_tls = verify`, with the peer's
/// certificate written to `ca_name` in the test directory for the test to trust.
fn verify_setup(ca_name: &str) -> (Peer, DnsServer, Setup, std::path::PathBuf) {
    let cert = peer::self_signed(&["localhost"]);
    let peer = Peer::start(Script {
        starttls: Some(cert.config.clone()),
        ..Script::default()
    });
    let dns = DnsServer::start(Zone::new().addr("localhost", "127.0.0.1"));
    let setup = Setup::new();
    let ca = setup.path().join(ca_name);
    std::fs::write(&ca, &cert.pem).unwrap();
    let setup = setup
        .deliver()
        .set("route", &format!("peer.test [localhost]:{}", peer.port()))
        .set("smtp_tls", "verify")
        .set("dns_servers", &dns.conf());
    (peer, dns, setup, ca)
}

#[test]
fn verify_accepts_a_peer_signed_by_the_configured_ca() {
    let (_peer, _dns, setup, ca) = verify_setup("ca.pem");
    let t = setup.set("tls_ca_file", &ca.display().to_string()).start();
    submit(&t, "alice@example.test", &["x@peer.test"], &message("verified"));
    assert!(log_has(
        &t,
        "tls=TLSv1.3 policy=verify verified=yes, dsn=2.0.0, status=sent"
    ));
}

/// Without tls_ca_file, `verify` trusts the system's CA store, found as OpenSSL
/// finds it: here $SSL_CERT_FILE names a bundle holding the peer's CA.
#[test]
fn verify_trusts_the_system_ca_store_by_default() {
    let (_peer, _dns, setup, bundle) = verify_setup("system-ca-bundle.crt");
    let t = setup.env("SSL_CERT_FILE", &bundle.display().to_string()).start();
    submit(
        &t,
        "alice@example.test",
        &["x@peer.test"],
        &message("system store"),
    );
    assert!(log_has(
        &t,
        "tls=TLSv1.3 policy=verify verified=yes, dsn=2.0.0, status=sent"
    ));
}

#[test]
fn encrypt_defers_when_starttls_is_not_offered() {
    let peer = Peer::start(Script::default());
    let t = Setup::new()
        .deliver()
        .set(
            "route",
            &format!("peer.test [127.0.0.1]:{} tls=encrypt", peer.port()),
        )
        .start();
    submit(&t, "alice@example.test", &["x@peer.test"], &message("encrypt"));
    assert!(log_has(&t, "dsn=4.7.4, status=deferred (TLS is required"));
    assert!(peer.messages().is_empty());
}

#[test]
fn smarthost_auth_over_implicit_tls() {
    let cert = peer::self_signed(&["smart.test"]);
    let peer = Peer::start(Script {
        implicit_tls: Some(cert.config.clone()),
        auth: Some(("user".into(), "s3cret:x".into())),
        ..Script::default()
    });
    let t = Setup::new()
        .deliver()
        .set("relay_host", &format!("[127.0.0.1]:{} smtps", peer.port()))
        .set("relay_auth", "user:s3cret:x")
        .start();
    submit(
        &t,
        "alice@example.test",
        &["x@anywhere.test"],
        &message("smarthost"),
    );
    assert!(
        log_has(&t, "tls=TLSv1.3 policy=may verified=no, dsn=2.0.0, status=sent"),
        "{:?}",
        peer.commands()
    );
    let cmds = peer.commands();
    assert!(cmds.iter().any(|c| c.starts_with("AUTH PLAIN ")), "{cmds:?}");
    assert_eq!(peer.messages().len(), 1);
}

#[test]
fn smarthost_auth_failure_defers() {
    let cert = peer::self_signed(&["smart.test"]);
    let peer = Peer::start(Script {
        starttls: Some(cert.config.clone()),
        auth: Some(("user".into(), "right".into())),
        ..Script::default()
    });
    let t = Setup::new()
        .deliver()
        .set("relay_host", &format!("[127.0.0.1]:{}", peer.port()))
        .set("relay_auth", "user:wrong")
        .start();
    submit(
        &t,
        "alice@example.test",
        &["x@anywhere.test"],
        &message("bad auth"),
    );
    assert!(log_has(&t, "status=deferred (authentication failed: 535 5.7.8"));
    assert!(peer.messages().is_empty());
}

#[test]
fn one_connection_carries_two_messages() {
    let peer = Peer::start(Script::default());
    let t = via_route("peer.test", peer.port())
        .set("smtp_connection_cache_time", "10s")
        .start();
    submit(&t, "alice@example.test", &["x@peer.test"], &message("first"));
    assert!(wait_until(10, || peer.messages().len() == 1), "{}", t.log_text());
    submit(&t, "alice@example.test", &["y@peer.test"], &message("second"));
    assert!(wait_until(10, || peer.messages().len() == 2), "{}", t.log_text());
    assert_eq!(peer.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    let cmds = peer.commands();
    assert_eq!(
        cmds.iter().filter(|c| c.starts_with("EHLO")).count(),
        1,
        "{cmds:?}"
    );
    assert!(cmds.iter().any(|c| c == "RSET"), "{cmds:?}");
    assert!(!cmds.iter().any(|c| c == "QUIT"), "{cmds:?}");
}

#[test]
fn without_the_cache_each_message_has_its_connection() {
    let peer = Peer::start(Script::default());
    let t = via_route("peer.test", peer.port())
        .set("smtp_connection_cache_time", "0")
        .start();
    submit(&t, "alice@example.test", &["x@peer.test"], &message("first"));
    assert!(wait_until(10, || peer.messages().len() == 1));
    submit(&t, "alice@example.test", &["y@peer.test"], &message("second"));
    assert!(wait_until(10, || peer.messages().len() == 2));
    assert!(wait_until(5, || peer
        .commands()
        .iter()
        .filter(|c| *c == "QUIT")
        .count()
        == 2));
    assert_eq!(peer.connections.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn too_many_recipients_go_in_a_second_transaction() {
    let peer = Peer::start(Script {
        max_rcpts: Some(2),
        ..Script::default()
    });
    let t = via_route("peer.test", peer.port()).start();
    submit(
        &t,
        "alice@example.test",
        &["a@peer.test", "b@peer.test", "c@peer.test"],
        &message("many"),
    );
    assert!(wait_until(10, || peer.messages().len() == 2), "{}", t.log_text());
    let msgs = peer.messages();
    assert_eq!(
        msgs[0].1,
        vec!["a@peer.test", "b@peer.test"],
        "{:?}",
        peer.commands()
    );
    assert_eq!(msgs[1].1, vec!["c@peer.test"], "{:?}", peer.commands());
    assert!(log_has(&t, "to=<c@peer.test>"));
    assert!(!t.log_text().contains("status=deferred"), "{}", t.log_text());
    assert_eq!(peer.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn tls_failure_under_may_retries_in_plaintext() {
    let cert = peer::self_signed(&["peer.test"]);
    let peer = Peer::start(Script {
        starttls: Some(cert.config.clone()),
        broken_tls: true,
        ..Script::default()
    });
    let t = via_route("peer.test", peer.port()).start();
    submit(&t, "alice@example.test", &["x@peer.test"], &message("fallback"));
    assert!(log_has(&t, "TLS failed"));
    assert!(log_has(&t, "dsn=2.0.0, status=sent"));
    assert_eq!(peer.connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    // The first session never finished its handshake.
    assert_eq!(peer.tls(), vec![false, false]);
    assert_eq!(peer.commands().iter().filter(|c| *c == "STARTTLS").count(), 1);
}

#[test]
fn smtputf8_declared_but_not_needed_goes_as_plain_esmtp() {
    let peer = Peer::start(Script::default());
    let t = via_route("peer.test", peer.port()).start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test> SMTPUTF8").code, 250);
    assert_eq!(c.cmd("RCPT TO:<x@peer.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(message("ascii after all").as_bytes());
    assert_eq!(c.cmd(".").code, 250);
    assert!(log_has(&t, "status=sent"));
    let mail = peer.messages()[0].0.clone();
    assert!(!mail.contains("SMTPUTF8"), "{mail}");
}

#[test]
fn no_mx_and_no_address_bounces() {
    let dns = DnsServer::start(Zone::new().name("bare.test"));
    let t = via_dns(&dns, 9).start();
    submit(&t, "alice@example.test", &["x@bare.test"], &message("bare"));
    assert!(log_has(
        &t,
        "dsn=5.4.4, status=bounced (bare.test has neither MX nor address records)"
    ));
}

#[test]
fn mx_with_our_own_address_is_a_loop() {
    // The MX has another name but our address and port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let dns = DnsServer::start(
        Zone::new()
            .mx("alias.test", 10, "other-name.alias.test")
            .addr("other-name.alias.test", "127.0.0.1"),
    );
    let t = via_dns(&dns, port)
        .set("listen", &format!("127.0.0.1:{port}"))
        .start();
    submit(&t, "alice@example.test", &["x@alias.test"], &message("self"));
    assert!(log_has(
        &t,
        "dsn=5.4.6, status=bounced (mail for alias.test loops back to myself"
    ));
}

#[test]
fn inet_protocols_ipv4_skips_aaaa() {
    let peer = Peer::start(Script::default());
    let dns = DnsServer::start(
        Zone::new()
            .mx("dual.test", 10, "mx.dual.test")
            .addr("mx.dual.test", "::1")
            .addr("mx.dual.test", "127.0.0.1"),
    );
    let t = via_dns(&dns, peer.port()).set("inet_protocols", "ipv4").start();
    submit(&t, "alice@example.test", &["x@dual.test"], &message("v4"));
    assert!(log_has(&t, "relay=mx.dual.test[127.0.0.1]"));
    assert!(log_has(&t, "status=sent"));
    assert!(!t.log_text().contains("[::1]"), "{}", t.log_text());
}

/// The resolver's private current-thread runtime serves several delivery
/// threads at once.
#[test]
fn resolver_answers_many_threads_at_once() {
    use std::sync::Arc;
    use tern::config::Family;
    use tern::deliver::dns::{Hickory, Mx, Resolver};
    let dns = DnsServer::start(
        Zone::new()
            .mx("many.test", 10, "mx.many.test")
            .addr("mx.many.test", "127.0.0.1"),
    );
    let r = Arc::new(Hickory::new(&[dns.addr], std::time::Duration::from_secs(5)).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                for _ in 0..20 {
                    assert_eq!(
                        r.mx("many.test"),
                        Ok(Mx::Hosts(vec![(10, "mx.many.test".to_owned())]))
                    );
                    assert_eq!(
                        r.addrs("mx.many.test", Family::Both),
                        Ok(vec!["127.0.0.1".parse().unwrap()])
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(r.mx("nope.test"), Err(tern::deliver::dns::DnsError::NxDomain));
}

#[test]
fn implicit_tls_failure_defers_without_a_plaintext_retry() {
    // The "smtps" peer speaks plain SMTP: the handshake fails, and there is
    // no plaintext retry on a TLS-only port.
    let peer = Peer::start(Script::default());
    let t = Setup::new()
        .deliver()
        .set("relay_host", &format!("[127.0.0.1]:{} smtps", peer.port()))
        .set("smtp_helo_timeout", "3s")
        .start();
    submit(&t, "alice@example.test", &["x@anywhere.test"], &message("smtps"));
    assert!(log_has(&t, "dsn=4.7.5, status=deferred (TLS with 127.0.0.1"));
    assert_eq!(peer.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn mixed_results_are_recorded_once_and_survive_a_restart() {
    let peer = Peer::start(Script {
        rcpt: mixed_rcpt,
        ..Script::default()
    });
    // One delivery thread: after the restart, due mail goes out in order (see below).
    let mut t = via_route("peer.test", peer.port())
        .set("retry_initial", "1h")
        .set("delivery_threads", "1")
        .start();
    let id = submit(
        &t,
        "alice@example.test",
        &["ok@peer.test", "later@peer.test", "nobody@peer.test"],
        &message("mixed, then a restart"),
    );
    let recorded = |t: &Tern| {
        let q = t.queued();
        q.len() == 1 && q[0].0.recipients.iter().all(|r| r.attempts == 1)
    };
    assert!(wait_until(10, || recorded(&t)), "{}", t.log_text());
    let states = |t: &Tern| -> Vec<String> {
        t.message(&id)
            .0
            .recipients
            .iter()
            .map(|r| format!("{} {:?} {}", r.addr, r.status, r.next_attempt.is_some()))
            .collect()
    };
    let before = states(&t);
    assert_eq!(
        before,
        vec![
            "ok@peer.test Sent false",
            "later@peer.test Deferred true",
            "nobody@peer.test Failed false"
        ]
    );
    t.restart();
    assert_eq!(states(&t), before);
    // Nothing is tried again before its time: the one delivery stays one. A
    // message queued after the restart goes out; had the old one been due, the
    // one delivery thread would have tried it first.
    let fresh = submit(&t, "alice@example.test", &["fresh@peer.test"], &message("after"));
    assert!(log_has(&t, &format!("{fresh}: removed")));
    assert_eq!(peer.messages().len(), 2);
    assert!(!t.log_text().contains(&format!("{id}: to=")), "{}", t.log_text());
}

/// A peer that takes one message per connection, then hangs up without a
/// word: what a server that times out idle clients looks like to the cache.
fn one_message_then_hang_up(messages: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(4) {
            let Ok(mut out) = conn else { return };
            let mut input = BufReader::new(out.try_clone().unwrap());
            let _ = out.write_all(b"220 hangup.test ESMTP\r\n");
            let mut line = String::new();
            let mut in_data = false;
            while input.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let reply: &[u8] = if in_data {
                    if line == ".\r\n" {
                        messages.fetch_add(1, Ordering::SeqCst);
                        let _ = out.write_all(b"250 2.0.0 queued\r\n");
                        break;
                    }
                    b""
                } else if line.starts_with("EHLO") {
                    b"250-hangup.test\r\n250 PIPELINING\r\n"
                } else if line.starts_with("DATA") {
                    in_data = true;
                    b"354 go\r\n"
                } else {
                    b"250 2.0.0 ok\r\n"
                };
                let _ = out.write_all(reply);
                line.clear();
            }
        }
    });
    port
}

#[test]
fn a_kept_connection_the_peer_closed_is_replaced() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let messages = Arc::new(AtomicUsize::new(0));
    let port = one_message_then_hang_up(Arc::clone(&messages));
    let t = via_route("peer.test", port)
        .set("smtp_connection_cache_time", "10s")
        .start();
    submit(&t, "alice@example.test", &["x@peer.test"], &message("first"));
    assert!(
        wait_until(10, || messages.load(Ordering::SeqCst) == 1),
        "{}",
        t.log_text()
    );
    // The peer has hung up; the cache does not know yet.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let id = submit(&t, "alice@example.test", &["y@peer.test"], &message("second"));
    assert!(
        wait_until(10, || messages.load(Ordering::SeqCst) == 2),
        "{}",
        t.log_text()
    );
    assert!(log_has(&t, &format!("{id}: to=<y@peer.test>")));
    assert!(!t.log_text().contains("status=deferred"), "{}", t.log_text());
}
