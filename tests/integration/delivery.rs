//! The queue runner and local delivery, end to end through the real binary:
//! Maildir and mbox, aliases, pipes, retries, bounces, DSN, delay notices,
//! and crash safety while delivering.

use std::process::Command;
use std::time::Duration;

use crate::common::{message, submit, wait_files, wait_until, Setup, Tern};

fn read(p: &std::path::Path) -> String {
    String::from_utf8(std::fs::read(p).expect("read")).expect("utf8")
}

/// Messages in a user's Maildir new/, waiting for at least `n`.
fn inbox(t: &Tern, user: &str, n: usize) -> Vec<String> {
    wait_files(&t.maildir_new(user), n, 10)
        .iter()
        .map(|p| read(p))
        .collect()
}

#[test]
fn maildir_copy_is_byte_exact() {
    let t = Setup::new().deliver().start();
    let body = "From: a@example.test\r\nSubject: exact\r\n\r\nline one\r\n..dotted\r\n\r\nlast\r\n";
    let id = submit(&t, "a@example.test", &["alice@example.test"], body);
    let mail = inbox(&t, "alice", 1);
    assert_eq!(mail.len(), 1);
    let m = &mail[0];
    let head = "Return-Path: <a@example.test>\nDelivered-To: alice@example.test\nReceived: from client.test (unknown [127.0.0.1])\n\tby mx.test (tern) with ESMTP id ";
    assert!(m.starts_with(head), "{m}");
    assert!(
        m.contains(&format!("id {id}\n\tfor <alice@example.test>; ")),
        "{m}"
    );
    assert!(
        m.ends_with("\nFrom: a@example.test\nSubject: exact\n\nline one\n.dotted\n\nlast\n"),
        "{m}"
    );
    // Maildir: written in tmp/, renamed into new/; tmp/ is left empty.
    let tmp = t.setup.path().join("mail/alice/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
    // The message leaves the queue once delivered, and the log says so.
    assert!(wait_until(5, || t.queued().is_empty()));
    assert!(t.wait_log(&format!("{id}: to=<alice@example.test>, relay=local, delay=")));
    // delays=a/b/c/d: local delivery sets up no connection, so c is 0.
    let log = t.log_text();
    let line = log.lines().find(|l| l.contains(&format!("{id}: to=<"))).unwrap();
    let delays = line.split(", delays=").nth(1).unwrap().split(',').next().unwrap();
    let parts: Vec<&str> = delays.split('/').collect();
    assert_eq!(parts.len(), 4, "{line}");
    assert!(parts.iter().all(|p| p.parse::<f64>().is_ok()), "{line}");
    assert_eq!(parts[2], "0", "{line}");
    assert!(
        t.log_text()
            .contains("dsn=2.0.0, status=sent (delivered to maildir)"),
        "{}",
        t.log_text()
    );
    assert!(t.wait_log(&format!("{id}: removed")));
}

#[test]
fn alias_fans_out_to_two_users() {
    let t = Setup::new().deliver().start();
    let id = submit(&t, "a@example.test", &["team@example.test"], &message("fan out"));
    let a = inbox(&t, "alice", 1);
    let b = inbox(&t, "bob", 1);
    assert_eq!((a.len(), b.len()), (1, 1));
    assert!(a[0].contains("Delivered-To: team@example.test\n"));
    assert!(b[0].contains("Subject: fan out\n"));
    // The message leaves the queue once every copy is written: a second copy
    // could only have been written before this line.
    assert!(t.wait_log(&format!("{id}: removed")), "{}", t.log_text());
    assert_eq!(
        wait_files(&t.maildir_new("alice"), 2, 0).len(),
        1,
        "exactly one copy"
    );
    assert_eq!(
        wait_files(&t.maildir_new("bob"), 2, 0).len(),
        1,
        "exactly one copy"
    );
}

#[test]
fn mbox_format_mutt_reads() {
    let setup = Setup::new().deliver();
    let mbox = setup.daemon_dir("mail");
    let t = setup.set("mailbox", &format!("{}/%u", mbox.display())).start();
    submit(
        &t,
        "a@example.test",
        &["alice@example.test"],
        "Subject: one\r\n\r\nFrom here on\r\n>From quoted\r\nok\r\n",
    );
    submit(&t, "", &["alice@example.test"], "Subject: two\r\n\r\nsecond\r\n");
    let path = mbox.join("alice");
    assert!(wait_until(10, || read_opt(&path).matches("\nSubject: ").count() == 2));
    let text = read(&path);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("From a@example.test "), "{first}");
    // asctime date: "From sender Www Mmm dd hh:mm:ss yyyy"
    assert!(first.split(' ').count() >= 6, "{first}");
    assert!(
        text.contains("\n>From here on\n>>From quoted\nok\n\nFrom MAILER-DAEMON "),
        "{text}"
    );
    assert!(text.ends_with("second\n\n"), "{text:?}");
    // The dotlock is gone once the second delivery is over.
    assert!(wait_until(5, || !path.with_extension("lock").exists()));
}

fn read_opt(p: &std::path::Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[test]
fn pipe_exit_75_is_retried_and_exit_1_bounces() {
    let t = Setup::new()
        .deliver()
        .aliases("flaky: \"|exit 75\"\nbroken: \"|echo no such list >&2; exit 1\"\n")
        .open_to_all()
        .start();
    let flaky = submit(
        &t,
        "alice@example.test",
        &["flaky@example.test"],
        &message("retry me"),
    );
    let broken = submit(
        &t,
        "alice@example.test",
        &["broken@example.test"],
        &message("bounce me"),
    );
    // Deferred, then tried again after retry_initial (1s).
    assert!(t.wait_log(&format!("{flaky}: to=<flaky@example.test>, relay=local")));
    assert!(wait_until(8, || t
        .log_text()
        .matches(&format!("{flaky}: to=<flaky@example.test>"))
        .count()
        >= 2));
    assert!(t.log_text().contains("status=deferred"));
    let (env, _) = t.message(&flaky);
    assert!(env.recipients[0].attempts >= 1);
    // The other bounces to alice with a standard report.
    assert!(t.wait_log(&format!("{broken}: to=<broken@example.test>, relay=local")));
    assert!(
        t.log_text()
            .contains("status=bounced (command died with status 1"),
        "{}",
        t.log_text()
    );
    let mail = inbox(&t, "alice", 1);
    let bounce = mail
        .iter()
        .find(|m| m.contains("Undelivered Mail"))
        .expect("bounce")
        .clone();
    assert!(bounce.starts_with("Return-Path: <>\n"), "{bounce}");
    check_report(&bounce, "failed", "broken@example.test", "5.3.0", "bounce me");
}

/// Parse a report with Python's email package and check its RFC 3464 fields.
fn check_report(text: &str, action: &str, rcpt: &str, status: &str, subject: &str) {
    assert!(text.contains(&format!("Action: {action}")), "{text}");
    require_tool!("python3");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.eml");
    std::fs::write(&path, text).unwrap();
    let script = r#"
import email, email.policy, sys
msg = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=email.policy.default)
assert msg.get_content_type() == 'multipart/report', msg.get_content_type()
assert msg.get_param('report-type') == 'delivery-status'
assert msg['From'].addresses[0].username == 'MAILER-DAEMON'
assert msg['Auto-Submitted'] == 'auto-replied'
parts = list(msg.iter_parts())
assert len(parts) == 3, len(parts)
assert parts[0].get_content_type() == 'text/plain'
assert parts[1].get_content_type() == 'message/delivery-status'
blocks = parts[1].get_payload()
per_msg, per_rcpt = blocks[0], blocks[1]
assert per_msg['Reporting-MTA'] == 'dns; mx.test', per_msg['Reporting-MTA']
assert per_rcpt['Final-Recipient'] == 'rfc822; ' + sys.argv[3], per_rcpt['Final-Recipient']
assert per_rcpt['Action'] == sys.argv[2], per_rcpt['Action']
assert per_rcpt['Status'] == sys.argv[4], per_rcpt['Status']
assert per_rcpt['Diagnostic-Code'], 'no diagnostic'
third = parts[2]
assert third.get_content_type() in ('message/rfc822', 'text/rfc822-headers'), third.get_content_type()
assert sys.argv[5] in third.as_string(), 'original subject missing'
print('ok')
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args([path.to_str().unwrap(), action, rcpt, status, subject])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "report check failed: {}\n{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn null_sender_failure_makes_no_bounce() {
    let t = Setup::new()
        .deliver()
        .aliases("broken: \"|exit 1\"\n")
        .open_to_all()
        .start();
    let id = submit(&t, "", &["broken@example.test"], &message("bounce of a bounce"));
    assert!(t.wait_log(&format!("{id}: undeliverable notification dropped (null sender)")));
    assert!(wait_until(5, || t.queued().is_empty()));
    assert!(!t.log_text().contains("non-delivery notification"));
}

#[test]
fn unknown_local_user_after_acceptance_bounces() {
    // Accepted while the user existed, then removed before delivery.
    let setup = Setup::new().deliver().set("retry_initial", "1s");
    let t = setup.start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<alice@example.test>");
    assert_eq!(c.cmd("RCPT TO:<sales@example.test>").code, 250);
    std::fs::write(t.setup.path().join("aliases"), "sales: gone\n").unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(t.setup.path().join("aliases"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    c.cmd("DATA");
    c.send_raw(message("to a ghost").as_bytes());
    let r = c.cmd(".");
    assert_eq!(r.code, 250);
    let mail = inbox(&t, "alice", 1);
    assert!(mail[0].contains("Undelivered Mail"), "{}", mail[0]);
    check_report(&mail[0], "failed", "sales@example.test", "5.1.1", "to a ghost");
}

#[test]
fn dsn_notify_success_never_and_ret_hdrs() {
    let t = Setup::new()
        .deliver()
        .aliases("broken: \"|exit 1\"\n")
        .open_to_all()
        .start();
    let mut c = t.connect();
    let ehlo = c.hello();
    assert!(ehlo.lines.iter().any(|l| l == "250-DSN"), "{ehlo:?}");
    // Success notice requested.
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.test> RET=HDRS ENVID=env+2B1")
            .status(),
        "250 2.1.0"
    );
    assert_eq!(
        c.cmd("RCPT TO:<bob@example.test> NOTIFY=SUCCESS ORCPT=rfc822;bob@example.test")
            .code,
        250
    );
    c.cmd("DATA");
    c.send_raw(b"Subject: notify me\r\n\r\nsecret body text\r\n");
    assert_eq!(c.cmd(".").code, 250);
    // A failure with NOTIFY=NEVER: no bounce.
    c.cmd("MAIL FROM:<alice@example.test>");
    assert_eq!(c.cmd("RCPT TO:<broken@example.test> NOTIFY=NEVER").code, 250);
    c.cmd("DATA");
    c.send_raw(message("silent").as_bytes());
    let silent = c.cmd(".").queue_id();
    let notes = inbox(&t, "alice", 1);
    assert!(t.wait_log(&format!("{silent}: to=<broken@example.test>")));
    // A bounce would be queued before the failed message leaves the queue, and
    // delivered before the queue is empty: after both, it would be in the inbox.
    assert!(t.wait_log(&format!("{silent}: removed")), "{}", t.log_text());
    assert!(t.wait_queue_empty(10), "{}", t.log_text());
    let notes: Vec<String> = wait_files(&t.maildir_new("alice"), notes.len() + 1, 0)
        .iter()
        .map(|p| read(p))
        .collect();
    assert_eq!(notes.len(), 1, "only the success notice: {notes:?}");
    let n = &notes[0];
    assert!(n.contains("Original-Envelope-Id: env+1"), "{n}");
    assert!(n.contains("Original-Recipient: rfc822; bob@example.test"), "{n}");
    assert!(!n.contains("secret body text"), "RET=HDRS returns headers only");
    check_report(n, "delivered", "bob@example.test", "2.0.0", "notify me");
}

#[test]
fn delay_notice_is_sent_once() {
    let t = Setup::new()
        .deliver()
        .set("delay_warning", "2s")
        .aliases("slow: \"|exit 75\"\n")
        .open_to_all()
        .start();
    let id = submit(
        &t,
        "alice@example.test",
        &["slow@example.test"],
        &message("slowly"),
    );
    let mail = inbox(&t, "alice", 1);
    assert_eq!(mail.len(), 1);
    check_report(&mail[0], "delayed", "slow@example.test", "4.3.0", "slowly");
    assert!(mail[0].contains("Will-Retry-Until: "));
    // Later attempts send no second notice.
    assert!(wait_until(10, || t
        .log_text()
        .matches(&format!("{id}: to=<slow@example.test>"))
        .count()
        >= 4));
    assert_eq!(wait_files(&t.maildir_new("alice"), 2, 0).len(), 1);
    assert!(t.message(&id).0.delay_warned);
}

#[test]
fn retry_backs_off_and_expires() {
    let t = Setup::new()
        .deliver()
        .set("queue_lifetime", "6s")
        .set("retry_max", "2s")
        .aliases("slow: \"|exit 75\"\n")
        .open_to_all()
        .start();
    let id = submit(
        &t,
        "alice@example.test",
        &["slow@example.test"],
        &message("expire me"),
    );
    // Attempts at about 0, 1, 3, 5 s, then the one past 6 s fails for good.
    assert!(t.wait_log(&format!("{id}: to=<slow@example.test>, relay=local")));
    // The log line comes just before the spool records the attempt.
    assert!(wait_until(5, || t.message(&id).0.recipients[0].attempts >= 1));
    let (env, _) = t.message(&id);
    let r = &env.recipients[0];
    assert_eq!(r.attempts, 1);
    let next = r.next_attempt.unwrap();
    assert!(
        next >= env.created && next <= env.created + 2,
        "first retry after ~1s: {next} vs {}",
        env.created
    );
    assert!(
        wait_until(15, || t.log_text().contains("status=expired")),
        "{}",
        t.log_text()
    );
    let attempts = t
        .log_text()
        .matches(&format!("{id}: to=<slow@example.test>"))
        .count();
    assert!((3..=8).contains(&attempts), "attempts: {attempts}");
    let mail = inbox(&t, "alice", 1);
    check_report(&mail[0], "failed", "slow@example.test", "4.4.7", "expire me");
    assert!(wait_until(5, || t.queued().is_empty()));
}

#[test]
fn stop_and_start_keeps_the_queue() {
    // One delivery thread: after the restart, what is due goes out in order,
    // so a later message delivered proves the queue was looked at before it.
    let mut t = Setup::new()
        .deliver()
        .set("retry_initial", "1h")
        .set("delivery_threads", "1")
        .aliases("slow: \"|exit 75\"\n")
        .open_to_all()
        .start();
    let id = submit(
        &t,
        "alice@example.test",
        &["slow@example.test"],
        &message("keep me"),
    );
    assert!(t.wait_log(&format!("{id}: to=<slow@example.test>")));
    assert!(wait_until(5, || t.message(&id).0.recipients[0].attempts >= 1));
    t.restart();
    let q = t.queued();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].0.id.as_str(), id);
    assert_eq!(q[0].0.recipients[0].attempts, 1);
    // The retry time survives the restart: no attempt right away. A message
    // queued after the restart is delivered; had the old one been due, the one
    // delivery thread would have tried it first.
    let later = submit(&t, "alice@example.test", &["bob@example.test"], &message("after"));
    assert!(t.wait_log(&format!("{later}: removed")), "{}", t.log_text());
    assert!(!t.log_text().contains(&format!("{id}: to=")), "{}", t.log_text());
}

#[test]
fn kill9_during_multi_recipient_delivery() {
    let setup = Setup::new().deliver().set("delivery_threads", "1").open_to_all();
    let out = setup.path().join("out");
    let mut aliases = String::new();
    for i in 0..6 {
        aliases.push_str(&format!(
            "r{i}: \"|sleep 0.3; cat > {}/r{i}.$$\"\n",
            out.display()
        ));
    }
    let mut t = setup.aliases(&aliases).start();
    let rcpts: Vec<String> = (0..6).map(|i| format!("r{i}@example.test")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    submit(
        &t,
        "alice@example.test",
        &refs,
        &message("crash while delivering"),
    );
    // Kill after a couple of recipients are done.
    assert!(wait_until(10, || std::fs::read_dir(&out)
        .map(|d| d.count())
        .unwrap_or(0)
        >= 2));
    t.kill9();
    t.restart();
    assert!(wait_until(20, || t.queued().is_empty()), "{}", t.log_text());
    let files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut dup = 0;
    for i in 0..6 {
        let n = files.iter().filter(|f| f.starts_with(&format!("r{i}."))).count();
        assert!(n >= 1, "r{i} never delivered: {files:?}");
        dup += n - 1;
    }
    assert!(dup <= 1, "only the recipient in flight may repeat: {files:?}");
}

#[test]
fn delivered_to_loop_bounces() {
    let t = Setup::new().deliver().start();
    let looping = "Delivered-To: bob@example.test\r\nSubject: looping\r\n\r\nround and round\r\n";
    let id = submit(&t, "alice@example.test", &["bob@example.test"], looping);
    assert!(t.wait_log(&format!("{id}: to=<bob@example.test>, relay=local")));
    assert!(t
        .log_text()
        .contains("dsn=5.4.6, status=bounced (mail forwarding loop for bob@example.test)"));
    let mail = inbox(&t, "alice", 1);
    check_report(&mail[0], "failed", "bob@example.test", "5.4.6", "looping");
    assert!(
        wait_files(&t.maildir_new("bob"), 1, 0).is_empty(),
        "no copy for bob"
    );
}

#[test]
fn system_user_mail_is_written_as_that_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    require_root!("delivering as another user");
    let nobody = require_some!(tern::sys::getpwnam("nobody"), "no nobody account");
    // A users file naming the system account; its mail root lets anyone create a Maildir.
    let setup = Setup::new().deliver().open_to_all();
    let mail = setup.path().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    std::fs::set_permissions(&mail, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(setup.path().join("users"), "nobody\n").unwrap();
    let t = setup.start();
    submit(
        &t,
        "alice@example.test",
        &["nobody@example.test"],
        &message("as nobody"),
    );
    let files = wait_files(&t.maildir_new("nobody"), 1, 10);
    assert_eq!(files.len(), 1, "{}", t.log_text());
    let meta = std::fs::metadata(&files[0]).unwrap();
    assert_eq!(meta.uid(), nobody.uid, "written by the recipient, not by root");
    assert_eq!(std::fs::metadata(mail.join("nobody")).unwrap().uid(), nobody.uid);
}
