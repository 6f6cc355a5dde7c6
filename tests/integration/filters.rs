//! Milters and policy services wired into ternd (issue 19), against the real
//! programs the harness starts (common/opendkim.rs, rspamd.rs, milter.rs,
//! postgrey.rs): what a client is answered at each stage, and what is queued
//! (the message as the milters left it, on hold for a quarantine). A missing
//! peer is a visible skip (a failure under CI=true).

use std::time::{Duration, Instant};

use tern::spool::{Envelope, QueueId};

use crate::common::milter::TestMilter;
use crate::common::opendkim::OpenDkim;
use crate::common::postgrey::Postgrey;
use crate::common::rspamd::{self, Rspamd};
use crate::common::{message, process, tools, wait_until, Client, Setup, Tern, TlsClient};

/// The committed message `id` (queue or hold): envelope and text.
fn stored(t: &Tern, id: &str) -> (Envelope, String) {
    let spool = t.spool();
    let id = QueueId::parse(id).expect("queue id");
    let env = spool
        .load(&id)
        .or_else(|_| spool.load_held(&id))
        .expect("message committed");
    let text = spool.read_message(&env).expect("message file");
    (env, String::from_utf8_lossy(&text).into_owned())
}

/// The spool's LF text as it goes on the wire (CRLF), for dkimpy.
fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

/// The (last) log line containing every one of `needles`, waiting for it.
fn log_line(t: &Tern, needles: &[&str]) -> String {
    let mut line = String::new();
    let found = wait_until(5, || {
        line = t
            .log_text()
            .lines()
            .rev()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .unwrap_or_default()
            .to_owned();
        !line.is_empty()
    });
    assert!(found, "no log line with {needles:?}:\n{}", t.log_text());
    line
}

/// One message through `c` with extra header lines (`X-Test-Milter:` picks
/// what the test milter does to it): the reply to MAIL, each RCPT, DATA and
/// the end of data, stopping at the first refusal of MAIL or DATA.
fn transaction(
    c: &mut Client,
    from: &str,
    to: &[&str],
    headers: &str,
    body: &str,
) -> Vec<crate::common::Reply> {
    let mut replies = vec![c.cmd(&format!("MAIL FROM:<{from}>"))];
    if replies[0].code != 250 {
        return replies;
    }
    for r in to {
        replies.push(c.cmd(&format!("RCPT TO:<{r}>")));
    }
    let data = c.cmd("DATA");
    let go = data.code == 354;
    replies.push(data);
    if go {
        c.send_raw(
            format!(
                "From: <{from}>\r\nTo: <{}>\r\nSubject: filters\r\nX-Delete-Me: please\r\n{headers}\r\n{body}.\r\n",
                to.join(">, <")
            )
            .as_bytes(),
        );
        replies.push(c.reply());
    }
    replies
}

fn last(replies: &[crate::common::Reply]) -> &crate::common::Reply {
    replies.last().expect("a reply")
}

#[test]
fn milter_modifications_are_what_is_queued() {
    let Some(m) = TestMilter::start("") else { return };
    let t = Setup::new().set("milters", &m.conf()).start();
    let mut c = t.connect();
    assert_eq!(c.hello().code, 250);

    // Header and envelope edits, one message.
    let spec =
        "X-Test-Milter: eom addheader X-Added added by the milter; eom insheader 0 X-Inserted on top; \
                eom chgheader Subject 1 changed subject; eom delheader X-Delete-Me 1; \
                eom addrcpt carol@example.test NOTIFY=NEVER; eom delrcpt bob@example.test; \
                eom chgfrom new@example.test\r\n";
    let r = transaction(
        &mut c,
        "alice@example.test",
        &["bob@example.test"],
        spec,
        "Hello.\r\n",
    );
    assert_eq!(last(&r).status(), "250 2.0.0", "{r:?}");
    let id = last(&r).queue_id();
    let (env, text) = stored(&t, &id);
    assert_eq!(env.sender, "new@example.test");
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.addr.as_str()).collect();
    assert_eq!(rcpts, ["carol@example.test"], "{env:?}");
    assert_eq!(
        env.recipients[0].notify.map(|n| n.to_string()).as_deref(),
        Some("NEVER")
    );
    // tern's Received: is hidden from the milter: index 0 is above it, as in
    // Postfix (where OpenDKIM puts its signature).
    assert!(text.starts_with("X-Inserted: on top\nReceived: "), "{text}");
    assert!(text.contains("\nSubject: changed subject\n"), "{text}");
    assert!(!text.contains("\nX-Delete-Me:"), "{text}");
    assert!(text.contains("\nX-Added: added by the milter\n"), "{text}");
    assert_eq!(env.size, text.len() as u64);

    // The body replaced.
    let spec = "X-Test-Milter: eom replacebody a new\\r\\nbody\\r\\n\r\n";
    let r = transaction(
        &mut c,
        "alice@example.test",
        &["bob@example.test"],
        spec,
        "old body\r\n",
    );
    assert_eq!(last(&r).code, 250, "{r:?}");
    let (env, text) = stored(&t, &last(&r).queue_id());
    assert!(text.ends_with("\n\na new\nbody\n"), "{text}");
    assert_eq!(env.size, text.len() as u64);

    // The milter saw the macros Postfix sends, and the queue id at the end.
    let eom = m
        .events()
        .into_iter()
        .rfind(|e| e.stage == "eom")
        .expect("eom event");
    assert_eq!(
        eom.macros.get("i").map(String::as_str),
        Some(last(&r).queue_id().as_str())
    );
    let connect = m.wait_event(5, "connect").expect("connect event");
    assert_eq!(connect.args.get(1).map(String::as_str), Some("127.0.0.1"));
    for (k, v) in [
        ("j", "mx.test"),
        ("_", "unknown [127.0.0.1]"),
        ("{daemon_name}", "mx.test"),
        ("{client_addr}", "127.0.0.1"),
        ("{if_addr}", "127.0.0.1"),
        ("{daemon_addr}", "127.0.0.1"),
    ] {
        assert_eq!(
            connect.macros.get(k).map(String::as_str),
            Some(v),
            "{k}: {connect:?}"
        );
    }
    assert!(connect.macros.contains_key("{client_name}"), "{connect:?}");
    let mail = m.wait_event(5, "mail").expect("mail event");
    assert_eq!(
        mail.macros.get("{mail_addr}").map(String::as_str),
        Some("alice@example.test")
    );
    let rcpt = m.wait_event(5, "rcpt").expect("rcpt event");
    assert_eq!(
        rcpt.macros.get("{rcpt_addr}").map(String::as_str),
        Some("bob@example.test")
    );
    assert_eq!(c.cmd("QUIT").code, 221);
}

#[test]
fn milter_replies_at_every_stage() {
    let spec = "helo(bad.helo) reject; mail(refused@) reply 550 5.7.1 No mail from you; \
                rcpt(later@) tempfail; rcpt(dropped@) discard; \
                eom(x) continue";
    let Some(m) = TestMilter::start(spec) else { return };
    let t = Setup::new().set("milters", &m.conf()).start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("EHLO bad.helo").status(), "550 5.7.1");
    // As in Postfix, a refused HELO refuses the connection's later ones too.
    assert_eq!(c.cmd("EHLO client.test").status(), "550 5.7.1");
    let mut c = t.connect();
    c.hello();
    let r = c.cmd("MAIL FROM:<refused@example.test>");
    assert_eq!(r.status(), "550 5.7.1");
    assert_eq!(r.text(), "550 5.7.1 No mail from you");
    let line = log_line(&t, &["milter-reject: MAIL from", "No mail from you"]);
    assert!(line.contains("from=<refused@example.test>"), "{line}");

    // A refused recipient only; a discard accepts and throws away.
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<later@remote.test>").status(), "451 4.7.1");
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").code, 250);
    assert_eq!(c.cmd("RSET").code, 250);
    assert!(
        m.wait_event(5, "abort").is_some(),
        "no abort after RSET: {:?}",
        m.events()
    );
    let r = transaction(
        &mut c,
        "alice@example.test",
        &["dropped@remote.test"],
        "",
        "x\r\n",
    );
    assert_eq!(last(&r).code, 250, "{r:?}");
    log_line(&t, &["milter-discard", "DISCARD"]);

    // End of message: reject, tempfail, a custom reply, discard.
    for (spec, status, text) in [
        ("eom reject", "550 5.7.1", "Command rejected"),
        (
            "eom tempfail",
            "451 4.7.1",
            "Service unavailable - try again later",
        ),
        (
            "eom reply 554 5.7.0 Your message smells",
            "554 5.7.0",
            "Your message smells",
        ),
        ("eom discard", "250 2.0.0", ""),
    ] {
        let h = format!("X-Test-Milter: {spec}\r\n");
        let r = transaction(&mut c, "alice@example.test", &["bob@example.test"], &h, "x\r\n");
        assert_eq!(last(&r).status(), status, "{spec}: {r:?}");
        if !text.is_empty() {
            assert_eq!(last(&r).text(), format!("{status} {text}"), "{spec}");
        }
    }
    log_line(&t, &["milter-reject: END-OF-MESSAGE", "Your message smells"]);
    // Nothing of all this was queued.
    assert!(t.queued().is_empty(), "{:?}", t.queued());
    assert_eq!(c.cmd("QUIT").code, 221);
}

#[test]
fn milter_quarantine_puts_the_message_on_hold() {
    let Some(m) = TestMilter::start("") else { return };
    let t = Setup::new().set("milters", &m.conf()).start();
    let mut c = t.connect();
    c.hello();
    let h = "X-Test-Milter: eom quarantine looks odd\r\n";
    let r = transaction(&mut c, "alice@example.test", &["bob@example.test"], h, "x\r\n");
    assert_eq!(last(&r).code, 250, "{r:?}");
    let id = last(&r).queue_id();
    let qid = QueueId::parse(&id).unwrap();
    // Committed straight into hold/, never in the queue.
    assert!(t.spool().list_held().unwrap().contains(&qid));
    assert!(t.queued().is_empty());
    let line = log_line(&t, &[&id, "milter-hold"]);
    assert!(line.contains("looks odd"), "{line}");
    let show = t.setup.ternctl(&["show", &id]);
    assert!(show.stdout.contains("(held)"), "{show:?}");
    assert!(
        show.stdout.contains("hold reason: milter quarantine: looks odd"),
        "{show:?}"
    );
    let mailq = t.setup.sendmail_as("mailq", &[]);
    assert!(mailq.stdout.contains(&format!("{id}!")), "{mailq:?}");
    // Released, it is an ordinary queued message.
    let out = t.setup.ternctl(&["release", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(t.spool().list().unwrap().contains(&qid));
}

#[test]
fn milter_down_or_silent_costs_its_timeout_then_the_default_action() {
    // Nothing listens on the port: refused at once.
    let port = process::free_port();
    let dead = format!("inet:127.0.0.1:{port}");
    let t = Setup::new().set("milters", &dead).start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").status(), "451 4.7.1");
    drop(c);
    let t = Setup::new()
        .set("milters", &dead)
        .set("milter_default_action", "accept")
        .start();
    let mut c = t.connect();
    c.hello();
    let r = transaction(&mut c, "alice@example.test", &["bob@example.test"], "", "x\r\n");
    assert_eq!(last(&r).code, 250, "{r:?}");
    assert_eq!(t.queued().len(), 1);
    drop(c);
    let t = Setup::new()
        .set("milters", &dead)
        .set("milter_default_action", "reject")
        .start();
    let mut c = t.connect();
    assert_eq!(c.reply().code, 554);
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").status(), "503 5.7.0");

    // A milter that does not answer costs its time-out, in its own session only.
    let Some(m) = TestMilter::start("helo(slow.test) sleep 6") else {
        return;
    };
    let t = Setup::new()
        .set("milters", &m.conf())
        .set("milter_command_timeout", "2s")
        .start();
    let mut slow = t.connect();
    slow.reply();
    let began = Instant::now();
    slow.send("EHLO slow.test");
    // Meanwhile another session goes through the same milter unhindered.
    let mut c = t.connect();
    c.hello();
    let r = transaction(&mut c, "alice@example.test", &["bob@example.test"], "", "x\r\n");
    assert_eq!(last(&r).code, 250, "{r:?}");
    let other = began.elapsed();
    let r = slow.reply();
    let waited = began.elapsed();
    assert_eq!(r.status(), "451 4.7.1", "{r:?}");
    // Blocked behind the slow one, it would have waited its 2 s time-out.
    assert!(
        other < Duration::from_millis(1900),
        "the other session waited {other:?}"
    );
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // The rest of that session: the default action, at once.
    let began = Instant::now();
    assert_eq!(slow.cmd("EHLO other.test").status(), "451 4.7.1");
    assert!(began.elapsed() < Duration::from_secs(1));
}

#[test]
fn milter_progress_keeps_a_slow_end_of_message_alive() {
    let Some(m) = TestMilter::start("") else { return };
    let t = Setup::new()
        .set("milters", &m.conf())
        .set("milter_content_timeout", "2s")
        .start();
    let mut c = t.connect();
    c.hello();
    // Three progress reports a second apart, then the answer: 3 s in all.
    let h = "X-Test-Milter: eom progress; eom progress; eom progress; eom addheader X-Slow done\r\n";
    let r = transaction(&mut c, "alice@example.test", &["bob@example.test"], h, "x\r\n");
    assert_eq!(last(&r).code, 250, "{r:?}");
    let (_, text) = stored(&t, &last(&r).queue_id());
    assert!(text.contains("\nX-Slow: done\n"), "{text}");
}

#[test]
fn non_smtp_milters_see_mail_from_sendmail_at_pickup() {
    let Some(m) = TestMilter::start("eom addheader X-Pickup seen; mail(refused@) reject") else {
        return;
    };
    let t = Setup::new().set("non_smtp_milters", &m.conf()).start();
    let out = t.setup.sendmail(
        &["-f", "alice@example.test", "bob@example.test"],
        b"Subject: local\r\n\r\nfrom cron\r\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let mut queued = Vec::new();
    assert!(
        wait_until(10, || {
            queued = t.queued();
            !queued.is_empty()
        }),
        "{}",
        t.log_text()
    );
    let (env, text) = &queued[0];
    assert_eq!(env.sender, "alice@example.test");
    let text = String::from_utf8_lossy(text);
    assert!(text.contains("\nX-Pickup: seen\n"), "{text}");
    let connect = m.wait_event(5, "connect").expect("connect");
    assert_eq!(connect.args, ["localhost", "127.0.0.1"], "{connect:?}");

    // A permanent refusal there goes back to the sender as a bounce.
    let out = t.setup.sendmail(
        &["-f", "refused@example.test", "bob@example.test"],
        b"Subject: refused\r\n\r\nno\r\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    log_line(
        &t,
        &["milter-reject: END-OF-MESSAGE", "from=<refused@example.test>"],
    );
    let mut bounce = None;
    assert!(wait_until(10, || {
        bounce = t.queued().into_iter().find(|(e, _)| {
            e.sender.is_empty() && e.recipients.iter().any(|r| r.addr == "refused@example.test")
        });
        bounce.is_some()
    }));
    let (_, text) = bounce.unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("550 5.7.1"), "{text}");
}

#[test]
fn opendkim_signs_submitted_mail_and_dkimpy_verifies_it() {
    let Some(dkim) = OpenDkim::builder().sign("example.test", "tern").start() else {
        return;
    };
    let t = Setup::new().submission().set("milters", &dkim.conf()).start();
    let mut c = Client::connect(t.submission_addr());
    c.hello();
    let mut s: TlsClient = c.starttls(&t.setup.ca_pem());
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    assert_eq!(s.auth_plain("alice", "secret").status(), "235 2.7.0");
    let r = s.send_mail(
        "alice@example.test",
        &["someone@example.net"],
        "From: Alice <alice@example.test>\r\nTo: <someone@example.net>\r\nSubject: signed\r\n\r\nHello,\r\nsigned by OpenDKIM.\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    let (_, text) = stored(&t, &r.queue_id());
    eprintln!("signed message as queued:\n{text}");
    // On top, above tern's own Received: (hidden from milters, as in Postfix).
    assert!(text.starts_with("DKIM-Signature: "), "{text}");
    let (name, txt) = dkim.txt_record("example.test", "tern");
    let Some(verdict) = tools::dkim_verify(&crlf(&text), &[(&name, &txt)]) else {
        return;
    };
    eprintln!("dkimpy: {verdict:?}");
    assert_eq!(verdict, Ok(()), "{text}");
}

#[test]
fn rspamd_rejects_gtube_and_marks_clean_mail() {
    let Some(r) = Rspamd::start() else { return };
    let t = Setup::new().set("milters", &r.conf()).start();
    let mut c = t.connect();
    c.hello();
    let ok = transaction(
        &mut c,
        "alice@example.test",
        &["bob@example.test"],
        "",
        "Just a clean note.\r\n",
    );
    assert_eq!(last(&ok).code, 250, "{ok:?}");
    let (_, text) = stored(&t, &last(&ok).queue_id());
    assert!(text.contains("\nX-Spamd-Result: "), "{text}");
    assert!(text.contains("\nX-Rspamd-Queue-Id: "), "{text}");
    let body = format!("{}\r\n", rspamd::GTUBE);
    let spam = transaction(&mut c, "alice@example.test", &["bob@example.test"], "", &body);
    assert_eq!(last(&spam).status(), "554 5.7.1", "{spam:?}");
    let line = log_line(&t, &["milter-reject: END-OF-MESSAGE", "554 5.7.1"]);
    assert!(
        line.contains("; from=<alice@example.test> to=<bob@example.test> proto=ESMTP"),
        "{line}"
    );
    eprintln!("{line}");
    assert_eq!(t.queued().len(), 1);
}

#[test]
fn postgrey_defers_the_first_attempt_and_accepts_the_retry() {
    let Some(pg) = Postgrey::start(2) else { return };
    let t = Setup::new().set("policy_services", &pg.conf()).start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<alice@sender.test>").code, 250);
    let r = c.cmd("RCPT TO:<bob@example.test>");
    assert_eq!(r.code, 450, "{r:?}");
    assert!(r.text().contains("Greylisted by the test postgrey"), "{r:?}");
    assert!(
        r.text()
            .contains(" <bob@example.test>: Recipient address rejected: "),
        "{r:?}"
    );
    let line = log_line(&t, &["reject: RCPT from", "Greylisted"]);
    eprintln!("{line}");
    assert_eq!(c.cmd("QUIT").code, 221);

    // After the delay, the same triplet passes, with postgrey's header.
    std::thread::sleep(Duration::from_secs(u64::from(pg.delay) + 1));
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail("alice@sender.test", &["bob@example.test"], &message("retry"));
    assert_eq!(r.code, 250, "{r:?}");
    let (_, text) = stored(&t, &r.queue_id());
    assert!(text.contains("\nX-Greylist: "), "{text}");
    eprintln!("{}", log_line(&t, &[&r.queue_id(), "from=<alice@sender.test>"]));
}

#[test]
fn policy_service_down_means_its_default_action() {
    let port = process::free_port();
    let t = Setup::new()
        .set("policy_services", &format!("inet:127.0.0.1:{port}"))
        .set("policy_service_try_limit", "1")
        .start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").code, 250);
    let r = c.cmd("RCPT TO:<bob@example.test>");
    assert_eq!(r.status(), "451 4.3.5", "{r:?}");
}

#[test]
fn milter_sees_tls_and_auth_macros_on_submission() {
    let Some(m) = TestMilter::start("") else { return };
    let t = Setup::new().submission().set("milters", &m.conf()).start();
    let mut c = Client::connect(t.submission_addr());
    c.hello();
    let mut s: TlsClient = c.starttls(&t.setup.ca_pem());
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    assert_eq!(s.auth_plain("alice", "secret").status(), "235 2.7.0");
    assert_eq!(s.cmd("MAIL FROM:<alice@example.test>").code, 250);
    let mail = m.wait_event(5, "mail").expect("mail event");
    for (k, v) in [
        ("{auth_type}", "PLAIN"),
        ("{auth_authen}", "alice"),
        ("{tls_version}", "TLSv1.3"),
        ("{mail_addr}", "alice@example.test"),
    ] {
        assert_eq!(mail.macros.get(k).map(String::as_str), Some(v), "{k}: {mail:?}");
    }
    assert!(
        mail.macros
            .get("{cipher}")
            .is_some_and(|c| c.starts_with("TLS13_")),
        "{mail:?}"
    );
}

/// A scripted policy service on loopback: the answer to each request is
/// chosen by the recipient's local part (`reject`, `code`, `defer`, `ok`,
/// `hold`, `discard`, `prepend`, anything else DUNNO). Returns its address
/// and every request it got.
fn policy_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let log = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut req = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line.trim_end().is_empty() {
                        let rcpt = req
                            .lines()
                            .find_map(|l| l.strip_prefix("recipient="))
                            .unwrap_or_default()
                            .to_owned();
                        let action = match rcpt.split('@').next().unwrap_or_default() {
                            "reject" => "REJECT not this one",
                            "code" => "554 5.7.9 Custom refusal",
                            "defer" => "450 4.7.9 Come back later",
                            "ok" => "OK",
                            "hold" => "HOLD held by policy",
                            "discard" => "DISCARD dropped by policy",
                            "prepend" => "PREPEND X-Policy: seen",
                            _ => "DUNNO",
                        };
                        log.lock().unwrap().push(std::mem::take(&mut req));
                        if w.write_all(format!("action={action}\n\n").as_bytes()).is_err() {
                            return;
                        }
                    } else {
                        req.push_str(&line);
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn policy_service_answers_at_rcpt() {
    let (addr, seen) = policy_server();
    let t = Setup::new()
        .set("policy_services", &format!("inet:{addr}"))
        .start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<alice@sender.test>").code, 250);
    let r = c.cmd("RCPT TO:<reject@remote.test>");
    assert_eq!(
        r.text(),
        "554 5.7.1 <reject@remote.test>: Recipient address rejected: not this one"
    );
    let r = c.cmd("RCPT TO:<code@remote.test>");
    assert_eq!(
        r.text(),
        "554 5.7.9 <code@remote.test>: Recipient address rejected: Custom refusal"
    );
    let r = c.cmd("RCPT TO:<defer@remote.test>");
    assert_eq!(
        r.text(),
        "450 4.7.9 <defer@remote.test>: Recipient address rejected: Come back later"
    );
    assert_eq!(c.cmd("RCPT TO:<ok@remote.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<prepend@remote.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(message("policy").as_bytes());
    let r = c.cmd(".");
    assert_eq!(r.code, 250, "{r:?}");
    let (env, text) = stored(&t, &r.queue_id());
    assert_eq!(env.recipients.len(), 2);
    // Right below tern's own Received:.
    let received_end = text.find("\nFrom: ").unwrap();
    assert!(text[..received_end].ends_with("\nX-Policy: seen"), "{text}");
    log_line(
        &t,
        &["reject: RCPT from", "Custom refusal", "to=<code@remote.test>"],
    );
    let req = seen.lock().unwrap().first().cloned().unwrap();
    for attr in [
        "request=smtpd_access_policy",
        "protocol_state=RCPT",
        "protocol_name=ESMTP",
        "client_address=127.0.0.1",
        "helo_name=client.test",
        "sender=alice@sender.test",
        "recipient=reject@remote.test",
    ] {
        assert!(req.lines().any(|l| l == attr), "{attr} not in\n{req}");
    }

    // HOLD queues the message on hold; DISCARD accepts and queues nothing.
    let r = c.send_mail("alice@sender.test", &["hold@remote.test"], &message("held"));
    assert_eq!(r.code, 250, "{r:?}");
    let qid = QueueId::parse(&r.queue_id()).unwrap();
    assert!(t.spool().list_held().unwrap().contains(&qid));
    let r = c.send_mail("alice@sender.test", &["discard@remote.test"], &message("dropped"));
    assert_eq!(r.code, 250, "{r:?}");
    log_line(
        &t,
        &[&r.queue_id(), "discard: END-OF-MESSAGE", "dropped by policy"],
    );
    assert_eq!(t.queued().len(), 1, "{:?}", t.queued());
}

#[test]
fn milters_see_and_edit_a_message_sent_with_bdat() {
    let Some(m) = TestMilter::start("eom addheader X-Chunked seen") else {
        return;
    };
    let t = Setup::new().set("milters", &m.conf()).start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").code, 250);
    let (first, last) = ("Subject: chunks\r\n\r\nfirst ", "and last\r\n");
    c.send_raw(format!("BDAT {}\r\n{first}", first.len()).as_bytes());
    assert_eq!(c.reply().code, 250);
    c.send_raw(format!("BDAT {} LAST\r\n{last}", last.len()).as_bytes());
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
    let (_, text) = stored(&t, &r.queue_id());
    assert!(text.contains("\nX-Chunked: seen\n"), "{text}");
    assert!(text.ends_with("\n\nfirst and last\n"), "{text}");
    let body = m.wait_event(5, "body").expect("body event");
    assert_eq!(body.args, ["first and last\r\n"], "{body:?}");
}

#[test]
fn policy_service_at_other_stages() {
    let (addr, seen) = policy_server();
    let t = Setup::new()
        .set(
            "policy_services",
            &format!("{{ inet:{addr}, stages = helo mail data end-of-message, timeout = 5s }}"),
        )
        .start();
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail("alice@sender.test", &["bob@example.test"], &message("stages"));
    assert_eq!(r.code, 250, "{r:?}");
    let reqs = seen.lock().unwrap().clone();
    let states: Vec<&str> = reqs
        .iter()
        .filter_map(|q| q.lines().find_map(|l| l.strip_prefix("protocol_state=")))
        .collect();
    // Not asked at RCPT: the stages given replace the default.
    assert_eq!(states, ["EHLO", "MAIL", "DATA", "END-OF-MESSAGE"], "{reqs:?}");
    let eom = reqs.last().unwrap();
    for attr in [
        "recipient_count=1",
        "recipient=bob@example.test",
        "sender=alice@sender.test",
    ] {
        assert!(eom.lines().any(|l| l == attr), "{attr} not in\n{eom}");
    }
    assert!(
        eom.lines().any(|l| l.starts_with("queue_id=") && l.len() > 9),
        "{eom}"
    );
    let size: u64 = eom
        .lines()
        .find_map(|l| l.strip_prefix("size="))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(size > message("stages").len() as u64, "{eom}");
}
