//! Issue 17, 6: the mail log as Postfix admins' tools read it. A mixed run
//! (received over SMTP, with AUTH, and from sendmail; delivered, deferred,
//! bounced with its notice, rejected; held, released, flushed and deleted by
//! ternctl) is logged to a `log_file`; its lines are checked, and pflogsumm,
//! the Postfix log summarizer Debian ships, must count it right.

use std::path::{Path, PathBuf};

use crate::common::tools::{pflogsumm, pflogsumm_total};
use crate::common::{message, wait_until, Client, Setup, Tern, TlsClient};

/// The ids of the mixed run's messages.
struct Run {
    t: Tern,
    log: PathBuf,
    /// To alice over SMTP: delivered.
    plain: String,
    /// To a pipe that defers: deferred (twice: once more after the flush).
    deferred: String,
    /// To a pipe that fails: bounced; its notice goes to alice.
    bounced: String,
    /// The notice about `bounced`.
    notice: String,
    /// From sendmail, to bob: delivered.
    picked: String,
    /// Submitted with AUTH as alice, to carol: delivered.
    authed: String,
}

fn log_text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The lines of the log that contain `needle`, once at least `n` do.
fn wait_lines(log: &Path, needle: &str, n: usize) -> Vec<String> {
    let mut found = Vec::new();
    wait_until(10, || {
        found = log_text(log)
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect();
        found.len() >= n
    });
    found
}

fn smtp(t: &Tern, from: &str, to: &[&str], subject: &str) -> String {
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail(from, to, &message(subject));
    assert_eq!(r.code, 250, "{r:?}");
    c.cmd("QUIT");
    r.queue_id()
}

fn mixed_run() -> Run {
    let setup = Setup::new().submission().deliver().open_to_all();
    let log = setup.path().join("mail.log");
    let t = setup
        .aliases("flaky: \"|exit 75\"\ngone: \"|exit 1\"\n")
        .set("retry_initial", "1h")
        .set("log_file", log.to_str().unwrap())
        .start();
    let plain = smtp(&t, "a@example.test", &["alice@example.test"], "plain");
    // Rejected: an unknown recipient; the transaction then gets nowhere.
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody-here@example.test>").code, 550);
    c.cmd("QUIT");
    let deferred = smtp(&t, "a@example.test", &["flaky@example.test"], "deferred");
    let bounced = smtp(&t, "alice@example.test", &["gone@example.test"], "bounced");
    let out = t
        .setup
        .sendmail(&["bob@example.test"], b"Subject: from cron\n\nhello\n");
    assert_eq!(out.code, 0, "{out:?}");
    // Submission with AUTH.
    let mut c = Client::connect(t.submission_addr());
    c.hello();
    let mut s: TlsClient = c.starttls(&t.setup.ca_pem());
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    assert_eq!(s.auth_plain("alice", "secret").status(), "235 2.7.0");
    let r = s.send_mail("alice@example.test", &["carol@example.test"], &message("authed"));
    assert_eq!(r.code, 250, "{r:?}");
    let authed = r.queue_id();

    let picked_line = wait_lines(&log, "ternd/pickup[", 1);
    let picked = picked_line
        .first()
        .and_then(|l| l.split("]: ").nth(1))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("no pickup line: {}", log_text(&log)))
        .to_owned();
    let notice_line = wait_lines(&log, &format!("{bounced}: sender non-delivery notification: "), 1);
    let notice = notice_line
        .first()
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no notice: {}", log_text(&log)))
        .to_owned();
    for (id, status) in [
        (&plain, "sent"),
        (&deferred, "deferred"),
        (&bounced, "bounced"),
        (&notice, "sent"),
        (&picked, "sent"),
        (&authed, "sent"),
    ] {
        let want = format!("{id}: to=<");
        let lines = wait_lines(&log, &want, 1);
        assert!(
            lines.iter().any(|l| l.contains(&format!(", status={status} ("))),
            "{id} {status}: {}",
            log_text(&log)
        );
    }

    // ternctl: hold and release the deferred one, flush (it is tried and
    // deferred again), then delete it.
    let spool = t.spool();
    let qid = tern::spool::QueueId::parse(&deferred).unwrap();
    assert!(wait_until(10, || !spool.is_locked(&qid)));
    for args in [["hold", deferred.as_str()], ["release", deferred.as_str()]] {
        let r = t.setup.ternctl(&args);
        assert_eq!(r.code, 0, "{r:?}");
    }
    assert_eq!(t.setup.ternctl(&["flush"]).code, 0);
    wait_lines(&log, &format!("{deferred}: to=<flaky@example.test>"), 2);
    assert!(wait_until(10, || !spool.is_locked(&qid)));
    let r = t.setup.ternctl(&["delete", &deferred]);
    assert_eq!(r.code, 0, "{r:?}");
    Run {
        t,
        log,
        plain,
        deferred,
        bounced,
        notice,
        picked,
        authed,
    }
}

/// The lines Postfix admins look for, in the log_file, in syslog's form.
#[test]
fn log_lines_postfix_admins_look_for() {
    let run = mixed_run();
    let text = log_text(&run.log);
    let host = tern::sys::hostname().unwrap();
    let host = host.split('.').next().unwrap();
    let pid = run.t.child.id();
    // Every line: RFC 3339 time, host, program/component[pid]: text.
    for l in text.lines() {
        let mut parts = l.splitn(3, ' ');
        let (time, h, rest) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert!(time.len() == 24 && time.ends_with('Z'), "{l}");
        assert_eq!(h, host, "{l}");
        assert!(rest.starts_with("ternd") || rest.starts_with("ternctl["), "{l}");
    }
    let has = |want: &str| text.lines().any(|l| l.ends_with(want));
    let tag = |c: &str| format!("ternd/{c}[{pid}]: ");
    // A message-id line for each message, whatever door it came in by.
    for id in [
        &run.plain,
        &run.deferred,
        &run.bounced,
        &run.notice,
        &run.picked,
        &run.authed,
    ] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&format!("{}{id}: message-id=", tag("cleanup"))))
            .collect();
        assert_eq!(lines.len(), 1, "{id}: {text}");
        let qmgr = format!("{}{id}: from=<", tag("qmgr"));
        assert!(
            text.lines()
                .any(|l| l.contains(&qmgr) && l.ends_with(" (queue active)")),
            "{id}: {text}"
        );
    }
    // sendmail's and the submission's messages got a Message-ID on the way in.
    for id in [&run.picked, &run.authed] {
        assert!(
            text.contains(&format!("{}{id}: message-id=<", tag("cleanup")))
                && !has(&format!("{id}: message-id=<>")),
            "{id}: {text}"
        );
    }
    // From sendmail: pickup's uid= from= line, and qmgr's from/size/nrcpt.
    let uid = tern::sys::uids().0;
    let user = tern::sys::getpwuid(uid).unwrap().name;
    assert!(
        text.contains(&format!(
            "{}{}: uid={uid} from=<{user}@mx.test> (maildrop ",
            tag("pickup"),
            run.picked
        )),
        "{text}"
    );
    // The notice: from=<>, one recipient.
    assert!(
        text.lines().any(
            |l| l.contains(&format!("{}{}: from=<>, size=", tag("qmgr"), run.notice))
                && l.ends_with(", nrcpt=1 (queue active)")
        ),
        "{text}"
    );
    // The authenticated client.
    assert!(
        has(&format!(
            "{}{}: client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username=alice",
            tag("smtpd"),
            run.authed
        )),
        "{text}"
    );
    assert!(
        has(&format!(
            "{}{}: client=unknown[127.0.0.1]",
            tag("smtpd"),
            run.plain
        )),
        "{text}"
    );
    // Deliveries under local, the bounce notice under bounce.
    assert!(
        text.contains(&format!(
            "{}{}: to=<alice@example.test>, relay=local, ",
            tag("local"),
            run.plain
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}{}: sender non-delivery notification: {}",
            tag("bounce"),
            run.bounced,
            run.notice
        )),
        "{text}"
    );
    // ternctl's hold, release and delete, and the daemon's flush, each with the id.
    let d = &run.deferred;
    for want in [
        format!("]: {d}: placed on hold"),
        format!("]: {d}: released from hold"),
        format!("]: {d}: removed"),
    ] {
        assert!(
            text.lines().any(|l| l.contains("ternctl[") && l.ends_with(&want)),
            "{want}: {text}"
        );
    }
    assert!(has(&format!("{}{d}: flushed", tag("qmgr"))), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("ternctl[") && l.ends_with("flush: requested")),
        "{text}"
    );
    // The same lines reach stderr with -d.
    assert!(run
        .t
        .log_text()
        .contains(&format!("{}INFO: {}: client=", tag("smtpd"), run.plain)));
}

/// pflogsumm (Debian's package) counts tern's log like Postfix's.
#[test]
fn pflogsumm_counts_a_mixed_run() {
    require_tool!("pflogsumm");
    let run = mixed_run();
    let Some(out) = pflogsumm(&log_text(&run.log), &["--syslog-name=ternd", "--problems-first"]) else {
        return;
    };
    let report = out.stdout;
    assert!(out.ok, "{report} {}", out.stderr);
    let names = [
        "received",
        "delivered",
        "forwarded",
        "deferred",
        "bounced",
        "rejected",
    ];
    let got: std::collections::BTreeMap<String, u64> = names
        .iter()
        .filter_map(|n| Some(((*n).to_owned(), pflogsumm_total(&report, n)?)))
        .collect();
    let want: std::collections::BTreeMap<String, u64> = [
        // SMTP (plain, deferred, bounced), the submission and sendmail's.
        ("received", 5),
        // plain, the notice, sendmail's, the submission's.
        ("delivered", 4),
        ("forwarded", 0),
        ("deferred", 1),
        ("bounced", 1),
        ("rejected", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(got, want, "{report}\n{}", log_text(&run.log));
    // Two deferrals of the one deferred message (the second after the flush).
    assert!(report.contains("(2  deferrals)"), "{report}");
    eprintln!("{report}");
}
