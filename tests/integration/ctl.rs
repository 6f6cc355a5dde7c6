//! mailq and ternctl against the real binaries: the Postfix queue listing on an
//! empty and a busy queue, and hold / release / delete / flush / show / stats with
//! a running daemon and without one.

use std::process::Command;

use tern::spool::{QueueId, RcptStatus};

use crate::common::{message, wait_until, Setup, Tern};

/// Send one message over SMTP; returns its queue id.
fn submit(t: &Tern, to: &[&str], body: &str) -> String {
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail("sender@example.test", to, body);
    assert_eq!(r.code, 250, "{r:?}");
    c.cmd("QUIT");
    r.queue_id()
}

/// Postfix's mailq heading for long queue ids (tern's are 16 characters), as
/// postqueue -p prints it (Postfix 3.7, enable_long_queue_ids = yes).
const HEADER: &str = "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n";

/// Postfix's reason line: in parentheses, right-aligned to end in column 78.
fn reason_line(why: &str) -> String {
    format!("{}({why})\n", " ".repeat(76 - why.len()))
}

#[test]
fn mailq_empty_and_busy() {
    // queue_only: messages stay in the queue for us to look at.
    let t = Setup::new().start();
    let out = t.setup.sendmail_as("mailq", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "Mail queue is empty\n");

    let a = submit(&t, &["alice@example.test", "bob@example.test"], &message("one"));
    let b = submit(&t, &["carol@example.test"], &message("two"));
    let c = submit(&t, &["alice@example.test"], &message("three"));
    // b: its recipient deferred with a reason; c: held; a: being delivered (locked).
    let spool = t.spool();
    let bid = QueueId::parse(&b).unwrap();
    let mut env = spool.load(&bid).unwrap();
    env.recipients[0].status = RcptStatus::Deferred;
    env.recipients[0].attempts = 1;
    env.recipients[0].next_attempt = Some(env.created + 3600);
    env.recipients[0].last_reply = Some("4.2.2 mailbox full".into());
    spool.update(&env).unwrap();
    let out = t.setup.ternctl(&["hold", &c]);
    assert_eq!(out.code, 0, "{out:?}");
    let _lock = spool.lock(&QueueId::parse(&a).unwrap()).unwrap();

    let out = t.setup.sendmail_as("mailq", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let text = out.stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], HEADER.trim_end(), "{text}");
    let sizes: Vec<u64> = [&a, &b, &c]
        .iter()
        .map(|id| {
            let id = QueueId::parse(id).unwrap();
            spool.load(&id).or_else(|_| spool.load_held(&id)).unwrap().size
        })
        .collect();
    let arrival = |id: &str| {
        let e = spool
            .load(&QueueId::parse(id).unwrap())
            .or_else(|_| spool.load_held(&QueueId::parse(id).unwrap()))
            .unwrap();
        tern::clock::asctime(e.created)
            .chars()
            .take(19)
            .collect::<String>()
    };
    let indent = " ".repeat(47);
    let want = format!(
        "{HEADER}\
         {a}* {:>8} {} sender@example.test\n\
         {indent}alice@example.test\n\
         {indent}bob@example.test\n\
         \n\
         {b}  {:>8} {} sender@example.test\n\
         {}\
         {indent}carol@example.test\n\
         \n\
         {c}! {:>8} {} sender@example.test\n\
         {indent}alice@example.test\n\
         \n\
         -- {} Kbytes in 3 Requests.\n",
        sizes[0],
        arrival(&a),
        sizes[1],
        arrival(&b),
        reason_line("mailbox full"),
        sizes[2],
        arrival(&c),
        sizes.iter().sum::<u64>() / 1024,
    );
    assert_eq!(text, want);
    // sendmail -bp is the same listing.
    let bp = t.setup.sendmail(&["-bp"], b"");
    assert_eq!(bp.stdout, want);
    // ternctl queue too.
    assert_eq!(t.setup.ternctl(&["queue"]).stdout, want);
}

#[test]
fn hold_release_delete_flush() {
    // A pipe that defers until the test creates out/ok; retries only when flushed.
    let setup = Setup::new().deliver().open_to_all();
    let out = setup.path().join("out");
    let aliases = format!(
        "flaky: \"|test -e {0}/ok || exit 75; cat >> {0}/got\"\n",
        out.display()
    );
    let t = setup
        .aliases(&aliases)
        .set("retry_initial", "1h")
        .set("retry_max", "1h")
        .start();
    let m1 = submit(&t, &["flaky@example.test"], &message("first"));
    let m3 = submit(&t, &["flaky@example.test"], &message("third"));
    for id in [&m1, &m3] {
        assert!(
            t.wait_log(&format!("{id}: to=<flaky@example.test>, relay=local")),
            "{}",
            t.log_text()
        );
    }
    assert!(t.log_text().contains("status=deferred"), "{}", t.log_text());

    // show: envelope, recipient state and reason, headers. The log line comes
    // before the attempt has written its state: wait until it let go of m1.
    let mut show = t.setup.ternctl(&["show", &m1]);
    assert!(
        wait_until(10, || {
            show = t.setup.ternctl(&["show", &m1]);
            !show.stdout.contains("(being delivered)")
        }),
        "{show:?}"
    );
    assert_eq!(show.code, 0, "{show:?}");
    assert!(
        show.stdout.starts_with(&format!("id: {m1} (queued)\n")),
        "{show:?}"
    );
    assert!(
        show.stdout
            .contains("  <flaky@example.test>: deferred, 1 attempts, next "),
        "{show:?}"
    );
    assert!(show.stdout.contains("    last: 4."), "{show:?}");
    assert!(
        show.stdout.contains("headers:\n  Received: from client.test"),
        "{show:?}"
    );
    assert!(show.stdout.contains("  Subject: first\n"), "{show:?}");

    // Hold m1; with the pipe now working, a flush delivers m3 but never m1.
    std::fs::write(out.join("ok"), b"").unwrap();
    let r = t.setup.ternctl(&["hold", &m1]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(t.setup.path().join("spool/hold").join(&m1).exists());
    assert!(t
        .setup
        .sendmail_as("mailq", &[])
        .stdout
        .contains(&format!("{m1}! ")));
    let r = t.setup.ternctl(&["hold", &m1]);
    assert_eq!(r.code, 1, "{r:?}");
    let r = t.setup.ternctl(&["flush"]);
    assert_eq!(r.code, 0, "{r:?}");
    let got = out.join("got");
    assert!(
        wait_until(5, || std::fs::read_to_string(&got)
            .is_ok_and(|s| s.contains("Subject: third"))),
        "{}",
        t.log_text()
    );
    assert!(!std::fs::read_to_string(&got).unwrap().contains("Subject: first"));
    assert!(wait_until(5, || t
        .spool()
        .load(&QueueId::parse(&m3).unwrap())
        .is_err()));

    // Release puts it back in the queue; the next flush delivers it.
    let r = t.setup.ternctl(&["release", &m1]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!t.setup.path().join("spool/hold").join(&m1).exists());
    assert_eq!(t.setup.ternctl(&["release", &m1]).code, 1);
    assert_eq!(t.setup.ternctl(&["flush"]).code, 0);
    assert!(
        wait_until(5, || std::fs::read_to_string(&got)
            .is_ok_and(|s| s.contains("Subject: first"))),
        "{}",
        t.log_text()
    );
    assert!(wait_until(5, || t.queued().is_empty()));

    // Delete: a deferred message is gone, body and all, and never delivered.
    std::fs::remove_file(out.join("ok")).unwrap();
    let m4 = submit(&t, &["flaky@example.test"], &message("fourth"));
    assert!(
        t.wait_log(&format!("{m4}: to=<flaky@example.test>")),
        "{}",
        t.log_text()
    );
    // The log line comes just before the spool records the deferral.
    let want = "queued: 1\nheld: 0\nrecipients pending: 0\nrecipients deferred: 1\n";
    assert!(
        wait_until(5, || t.setup.ternctl(&["stats"]).stdout.contains(want)),
        "{:?}",
        t.setup.ternctl(&["stats"])
    );
    let stats = t.setup.ternctl(&["stats"]);
    assert!(stats.stdout.contains(&format!("({m4})")), "{stats:?}");
    let r = t.setup.ternctl(&["delete", &m4]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("{m4}: deleted\n"));
    assert!(t.queued().is_empty());
    assert!(!t.setup.path().join("spool/msg").join(&m4).exists());
    std::fs::write(out.join("ok"), b"").unwrap();
    assert_eq!(t.setup.ternctl(&["flush"]).code, 0);
    assert!(t.wait_log("flush: trying all deferred mail now"));
    assert!(!std::fs::read_to_string(&got).unwrap().contains("Subject: fourth"));

    // Bad and unknown ids: a clear error and exit 1.
    for (args, text) in [
        (&["show", "nonsense"][..], "not a queue id: nonsense"),
        (&["delete", "../../etc/passwd"], "not a queue id"),
        (&["show", &m4], "no such message"),
        (&["hold", &m4], "no such message"),
        (&["delete", &m4], "no such message"),
    ] {
        let r = t.setup.ternctl(args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(r.stderr.contains(text), "{args:?}: {r:?}");
    }
    assert_eq!(t.setup.ternctl(&["frobnicate"]).code, 64);
}

#[test]
fn without_the_daemon() {
    let mut t = Setup::new().start();
    let a = submit(&t, &["alice@example.test"], &message("a"));
    let b = submit(&t, &["bob@example.test"], &message("b"));
    t.kill9();
    // Works on the spool directly.
    let spool = t.spool();
    let bid = QueueId::parse(&b).unwrap();
    let mut env = spool.load(&bid).unwrap();
    env.recipients[0].status = RcptStatus::Deferred;
    env.recipients[0].next_attempt = Some(env.created + 86400);
    spool.update(&env).unwrap();
    let r = t.setup.ternctl(&["flush"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("ternd is not running; 1 deferred messages marked due"),
        "{r:?}"
    );
    let next = spool.load(&bid).unwrap().recipients[0].next_attempt.unwrap();
    assert!(next <= tern::clock::now());
    assert_eq!(t.setup.ternctl(&["hold", &a]).code, 0);
    assert_eq!(t.setup.ternctl(&["delete", "ALL"]).code, 0);
    assert_eq!(t.setup.ternctl(&["queue"]).stdout, "Mail queue is empty\n");
    assert!(spool.list_held().unwrap().is_empty());
}

#[test]
fn delete_waits_for_a_delivery_in_flight() {
    let t = Setup::new().start();
    let a = submit(&t, &["alice@example.test"], &message("a"));
    let id = QueueId::parse(&a).unwrap();
    let spool = t.spool();
    // Stand in for a worker delivering the message: it holds the message's lock.
    let lock = spool.lock(&id).unwrap();
    let conf = t.setup.write_config();
    let mut child = std::process::Command::new(crate::common::TERNCTL)
        .args(["-f", conf.to_str().unwrap(), "delete", &a])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // ternctl is waiting on the lock: the message is still whole.
    assert!(!wait_until(1, || child.try_wait().unwrap().is_some()));
    assert!(spool.load(&id).is_ok() && spool.message_path(&id).exists());
    drop(lock);
    assert!(wait_until(10, || child.try_wait().unwrap().is_some()));
    assert!(child.wait().unwrap().success());
    assert!(t.queued().is_empty());
}

#[test]
fn mailq_for_an_unprivileged_user_asks_the_daemon() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    require_root!("running mailq as another user");
    let (nobody, gid) = require_some!(
        tern::sys::getpwnam("nobody")
            .zip(tern::sys::group_id("nogroup").or_else(|| tern::sys::group_id("nobody"))),
        "no nobody account or group"
    );
    let t = Setup::new().open_to_all().start();
    let id = submit(&t, &["alice@example.test"], &message("listed"));
    let conf = t.setup.write_config();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The socket's group stands in for `tern`, as sendmail's setgid bit would.
    let sock = tern::spool::control_socket(&t.spool_dir());
    assert!(wait_until(5, || sock.exists()));
    std::os::unix::fs::chown(&sock, Some(0), Some(gid)).unwrap();
    let out = Command::new(crate::common::SENDMAIL)
        .args(["-C", conf.to_str().unwrap(), "-bp"])
        .uid(nobody.uid)
        .gid(gid)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with(HEADER), "{text}");
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("alice@example.test"), "{text}");
}

/// Issue 17, 7: a connect failure is listed as Postfix lists it, naming the
/// host and the address, under the message in its own right-aligned line.
#[test]
fn mailq_names_the_host_that_refused_the_connection() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = Setup::new()
        .deliver()
        .set("route", &format!("far.test [127.0.0.1]:{port}"))
        .set("retry_initial", "1h")
        .start();
    let id = submit(&t, &["bob@far.test", "carol@far.test"], &message("refused"));
    let reason = format!("connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused");
    assert!(
        t.wait_log(&format!(
            "{id}: to=<carol@far.test>, relay=127.0.0.1[127.0.0.1]:{port}"
        )),
        "{}",
        t.log_text()
    );
    assert!(
        t.log_text().contains(&format!("status=deferred ({reason})")),
        "{}",
        t.log_text()
    );
    let spool = t.spool();
    let qid = QueueId::parse(&id).unwrap();
    // The log line comes just before the attempt records the state.
    assert!(wait_until(5, || spool.load(&qid).is_ok_and(|e| e
        .recipients
        .iter()
        .all(|r| r.status == RcptStatus::Deferred))));
    let env = spool.load(&qid).unwrap();
    let when: String = tern::clock::asctime(env.created).chars().take(19).collect();
    let indent = " ".repeat(47);
    let want = format!(
        "{HEADER}\
         {id}  {:>8} {when} sender@example.test\n\
         {}\
         {indent}bob@far.test\n\
         {indent}carol@far.test\n\
         \n\
         -- {} Kbytes in 1 Request.\n",
        env.size,
        reason_line(&reason),
        env.size / 1024,
    );
    assert_eq!(t.setup.sendmail_as("mailq", &[]).stdout, want);
    assert_eq!(t.setup.ternctl(&["queue"]).stdout, want);
}

/// Issue 17, 7: a flush (sendmail -q, ternctl flush) tries deferred mail at
/// once, but an early try that fails again leaves the back-off as it was:
/// ten flushes used to push the next retry to retry_max.
#[test]
fn flush_tries_now_without_doubling_the_backoff() {
    let setup = Setup::new().deliver();
    let t = setup
        .aliases("flaky: \"|exit 75\"\n")
        .set("retry_initial", "1h")
        .set("retry_max", "16h")
        .start();
    let id = submit(&t, &["flaky@example.test"], &message("flaky"));
    let qid = QueueId::parse(&id).unwrap();
    let spool = t.spool();
    let tries = || {
        t.log_text()
            .matches(&format!("{id}: to=<flaky@example.test>, relay=local"))
            .count()
    };
    // The state is written just after the log line: wait for both.
    let settled = |n: usize| {
        wait_until(10, || {
            tries() == n
                && !spool.is_locked(&qid)
                && spool
                    .load(&qid)
                    .is_ok_and(|e| e.recipients[0].status == RcptStatus::Deferred)
        })
    };
    assert!(settled(1), "{}", t.log_text());
    let first = spool.load(&qid).unwrap().recipients[0].clone();
    assert_eq!(first.attempts, 1);
    let planned = first.next_attempt.unwrap();
    // About an hour away (the back-off after one failure, jitter included).
    assert!(planned >= tern::clock::now() + 3000, "{planned}");
    for n in 0..10 {
        let r = if n % 2 == 0 {
            t.setup.ternctl(&["flush"])
        } else {
            t.setup.sendmail(&["-q"], b"")
        };
        assert_eq!(r.code, 0, "{r:?}");
        assert!(settled(n + 2), "flush {n}: {}", t.log_text());
    }
    let after = spool.load(&qid).unwrap().recipients[0].clone();
    assert_eq!(after.attempts, 1, "flushes counted as attempts");
    assert_eq!(after.next_attempt, Some(planned), "flushes moved the retry");
}
