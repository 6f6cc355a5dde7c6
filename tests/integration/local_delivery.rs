//! Local delivery through the real delivery child: `ternd --local-delivery`,
//! as the current user and, when the tests run as root, as `nobody`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tern::deliver::local::{deliver_in_child, Job, Target};
use tern::deliver::outcome::{Outcome, Stage, Verdict};
use tern::smtp::status::Status;
use tern::sys;

use crate::common::TERND;

const BODY: &str = "Received: from x by mx.test; Mon, 23 Nov 2026 14:08:39 +0000\nSubject: hi\n\nFrom here\n";

fn job(dir: &Path, target: Target) -> Job {
    let message = dir.join("msg");
    // As in the spool: the message, then a seal no delivery may copy.
    fs::write(&message, format!("{BODY}\ntern-seal 1 Q (not the message)\n")).unwrap();
    Job {
        target,
        sender: "alice@example.org".to_owned(),
        recipient: "bob@example.test".to_owned(),
        user: None,
        mailbox: false,
        message,
        size: BODY.len() as u64,
        hostname: "mx.test".to_owned(),
        pipe_timeout: Duration::from_secs(10),
    }
}

/// What the delivery child reports, as the parent reads it back.
fn delivered(detail: &str) -> Outcome {
    Outcome::decoded(Verdict::Delivered, Stage::Local, Status(2, 0, 0), detail)
}

fn temporary(status: Status, detail: impl Into<String>) -> Outcome {
    Outcome::decoded(Verdict::Temporary, Stage::Local, status, detail)
}

fn permanent(status: Status, detail: impl Into<String>) -> Outcome {
    Outcome::decoded(Verdict::Permanent, Stage::Local, status, detail)
}

fn only_file(dir: &Path) -> String {
    let names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    fs::read_to_string(&names[0]).unwrap()
}

#[test]
fn child_delivers_as_the_current_user() {
    let me = sys::getpwuid(sys::uids().1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "Return-Path: <alice@example.org>\nDelivered-To: bob@example.test\n";

    let md = dir.path().join("Maildir");
    let o = deliver_in_child(
        &job(dir.path(), Target::Maildir(md.clone())),
        &me,
        Path::new(TERND),
    );
    assert_eq!(o, delivered("delivered to maildir"));
    assert_eq!(only_file(&md.join("new")), format!("{prefix}{BODY}"));

    let mbox = dir.path().join("mbox");
    let o = deliver_in_child(
        &job(dir.path(), Target::Mbox(mbox.clone())),
        &me,
        Path::new(TERND),
    );
    assert_eq!(o, delivered("delivered to mbox"));
    let text = fs::read_to_string(&mbox).unwrap();
    assert!(text.starts_with("From alice@example.org "), "{text}");
    assert!(
        text.ends_with(&format!(
            "{prefix}{}>From here\n\n",
            BODY.trim_end_matches("From here\n")
        )),
        "{text}"
    );

    let o = deliver_in_child(
        &job(
            dir.path(),
            Target::Pipe("cat >/dev/null; echo no such list >&2; exit 1".to_owned()),
        ),
        &me,
        Path::new(TERND),
    );
    assert_eq!(
        o,
        permanent(Status(5, 3, 0), "command died with status 1: no such list")
    );

    let o = deliver_in_child(
        &job(dir.path(), Target::Pipe("exit 75".to_owned())),
        &me,
        Path::new(TERND),
    );
    assert_eq!(o, temporary(Status(4, 3, 0), "command deferred with status 75"));

    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&mbox, &link).unwrap();
    let o = deliver_in_child(
        &job(dir.path(), Target::Mbox(link.clone())),
        &me,
        Path::new(TERND),
    );
    assert_eq!(
        o,
        temporary(
            Status(4, 2, 0),
            format!("mailbox {} is a symlink, refusing", link.display())
        )
    );

    let o = deliver_in_child(
        &job(dir.path(), Target::Maildir(md.clone())),
        &me,
        Path::new("/no/such/ternd"),
    );
    assert_eq!(o.status(), Status(4, 3, 0), "{o:?}");
    assert!(o.detail().starts_with("cannot start local delivery as"), "{o:?}");
}

#[test]
fn child_rejects_bad_arguments() {
    let out = Command::new(TERND)
        .args(["--local-delivery", "9", "mbox"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("4.3.0 local delivery: expected 10 arguments"));
}

#[test]
fn child_runs_as_the_user_without_groups() {
    require_root!("running the delivery child as another user");
    let nobody = require_some!(sys::getpwnam("nobody"), "no nobody account");
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(nobody.uid), Some(nobody.gid)).unwrap();
    let mut user = nobody.clone();
    user.home = home.clone();

    let out = home.join("id");
    let cmd = format!(
        "id -u > {0}; id -G >> {0}; echo $USER $HOME >> {0}",
        out.display()
    );
    let o = deliver_in_child(&job(dir.path(), Target::Pipe(cmd)), &user, Path::new(TERND));
    assert_eq!(o, delivered("delivered to command"));
    assert_eq!(
        fs::read_to_string(&out).unwrap(),
        format!("{}\n{}\nnobody {}\n", nobody.uid, nobody.gid, home.display())
    );

    let md = home.join("Maildir");
    let o = deliver_in_child(
        &job(dir.path(), Target::Maildir(md.clone())),
        &user,
        Path::new(TERND),
    );
    assert_eq!(o, delivered("delivered to maildir"));
    assert_eq!(fs::metadata(md.join("new")).unwrap().uid(), nobody.uid);

    // A root-owned 0755 spool directory: root pre-creates the mbox for the user,
    // the user cannot make a dotlock there and relies on the fcntl lock.
    let mbox = dir.path().join("nobody");
    let mut own = job(dir.path(), Target::Mbox(mbox.clone()));
    own.mailbox = true;
    let o = deliver_in_child(&own, &user, Path::new(TERND));
    assert_eq!(o, delivered("delivered to mbox"));
    let meta = fs::metadata(&mbox).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (nobody.uid, 0o600));

    // The user cannot write where root can.
    let o = deliver_in_child(
        &job(dir.path(), Target::Maildir(dir.path().join("rootonly"))),
        &user,
        Path::new(TERND),
    );
    assert_eq!(o.status(), Status(4, 2, 0), "{o:?}");
    assert!(o.detail().contains("Permission denied"), "{o:?}");
}

/// Debian's mail spool: a directory root:mail 2775 (in a root-owned 0755
/// temporary directory, so that the user can reach it), and the account mail
/// goes to (nobody). None, with the reason given, where that cannot be made.
fn debian_mail_spool() -> Option<(tempfile::TempDir, std::path::PathBuf, sys::Passwd, u32)> {
    if !crate::common::skip::root_for("a root:mail 2775 mail spool") {
        return None;
    }
    let (Some(nobody), Some(mail)) = (sys::getpwnam("nobody"), sys::group_id("mail")) else {
        crate::common::skip::skip("no nobody account or mail group");
        return None;
    };
    let base = tempfile::tempdir().unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let spool = base.path().join("mail");
    fs::create_dir(&spool).unwrap();
    std::os::unix::fs::chown(&spool, Some(0), Some(mail)).unwrap();
    fs::set_permissions(&spool, fs::Permissions::from_mode(0o2775)).unwrap();
    Some((base, spool, nobody, mail))
}

/// Owner, group and permission bits.
fn owner_group_mode(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// Issue 17, 1: the user's own mbox in /var/mail as Debian lays it out, through
/// the delivery child a root ternd runs: created for a user without one
/// (theirs, group mail, 0600, as Postfix's local(8) leaves it), appended to when
/// it exists, never through a symlink or a second hard link, and with the
/// dotlock mail readers take honoured (the child may create it: it has group mail).
#[test]
fn own_mailbox_in_a_root_mail_2775_spool() {
    let Some((base, spool, nobody, mail)) = debian_mail_spool() else {
        return;
    };
    let mbox = spool.join(&nobody.name);
    let own = |dir: &Path| {
        let mut j = job(dir, Target::Mbox(mbox.clone()));
        j.mailbox = true;
        j
    };
    let msgs = base.path().join("msgs");
    fs::create_dir(&msgs).unwrap();

    // No mailbox yet: created for the user.
    let o = deliver_in_child(&own(&msgs), &nobody, Path::new(TERND));
    assert_eq!(o, delivered("delivered to mbox"));
    assert_eq!(owner_group_mode(&mbox), (nobody.uid, mail, 0o600));
    let first = fs::read_to_string(&mbox).unwrap();
    assert!(first.starts_with("From alice@example.org "), "{first}");
    assert!(!spool.join(format!("{}.lock", nobody.name)).exists());

    // It exists: appended to, owner and mode kept.
    let o = deliver_in_child(&own(&msgs), &nobody, Path::new(TERND));
    assert_eq!(o, delivered("delivered to mbox"));
    assert_eq!(owner_group_mode(&mbox), (nobody.uid, mail, 0o600));
    let second = fs::read_to_string(&mbox).unwrap();
    assert!(second.starts_with(&first), "{second}");
    assert_eq!(second.matches("From alice@example.org ").count(), 2, "{second}");

    // A dotlock a mail reader holds is waited for.
    let lock = spool.join(format!("{}.lock", nobody.name));
    fs::write(&lock, b"").unwrap();
    let started = std::time::Instant::now();
    let remover = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            fs::remove_file(&lock).unwrap();
        })
    };
    let o = deliver_in_child(&own(&msgs), &nobody, Path::new(TERND));
    remover.join().unwrap();
    assert_eq!(o, delivered("delivered to mbox"));
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "delivered while the dotlock was held"
    );
    assert_eq!(
        fs::read_to_string(&mbox)
            .unwrap()
            .matches("From alice@example.org ")
            .count(),
        3
    );

    // A hostile symlink in its place: refused, its target untouched and not created.
    fs::remove_file(&mbox).unwrap();
    let victim = base.path().join("victim");
    fs::write(&victim, b"precious\n").unwrap();
    std::os::unix::fs::chown(&victim, Some(nobody.uid), None).unwrap();
    std::os::unix::fs::symlink(&victim, &mbox).unwrap();
    let o = deliver_in_child(&own(&msgs), &nobody, Path::new(TERND));
    assert_eq!(
        o,
        temporary(
            Status(4, 2, 0),
            format!("mailbox {} is a symlink, refusing", mbox.display())
        )
    );
    assert_eq!(fs::read(&victim).unwrap(), b"precious\n");
    fs::remove_file(&mbox).unwrap();
    let planted = base.path().join("planted");
    std::os::unix::fs::symlink(&planted, &mbox).unwrap();
    let o = deliver_in_child(&own(&msgs), &nobody, Path::new(TERND));
    assert!(o.detail().ends_with("is a symlink, refusing"), "{o:?}");
    assert!(!planted.exists());

    // A hard link to one of the user's files in its place: refused.
    fs::remove_file(&mbox).unwrap();
    fs::hard_link(&victim, &mbox).unwrap();
    let o = deliver_in_child(&own(&msgs), &nobody, Path::new(TERND));
    assert_eq!(
        o,
        temporary(
            Status(4, 2, 0),
            format!("mailbox {} has 2 hard links, refusing", mbox.display())
        )
    );
    assert_eq!(fs::read(&victim).unwrap(), b"precious\n");

    // A file an alias names gets no group mail: nobody cannot create it there.
    let aliased = job(&msgs, Target::Mbox(spool.join("list")));
    let o = deliver_in_child(&aliased, &nobody, Path::new(TERND));
    assert!(o.detail().contains("Permission denied"), "{o:?}");
    assert!(!spool.join("list").exists());
}

/// The same through a whole daemon that dropped root: its root delivery
/// helper recomputes the mailbox, and the child it starts creates it.
#[test]
fn daemon_creates_mailboxes_in_a_root_mail_2775_spool() {
    let Some((base, spool, nobody, mail)) = debian_mail_spool() else {
        return;
    };
    let users = base.path().join("users");
    fs::write(&users, format!("{}\n", nobody.name)).unwrap();
    let t = crate::common::Setup::new()
        .deliver()
        .set("local_users", users.to_str().unwrap())
        .set("mailbox", &format!("{}/%u", spool.display()))
        .start();
    let rcpt = format!("{}@example.test", nobody.name);
    let send = |subject: &str| {
        let mut c = t.connect();
        c.hello();
        let r = c.send_mail("alice@example.test", &[&rcpt], &crate::common::message(subject));
        assert_eq!(r.code, 250, "{r:?}");
        r.queue_id()
    };
    let mbox = spool.join(&nobody.name);
    let id = send("first");
    assert!(
        t.wait_log(&format!("{id}: to=<{rcpt}>, relay=local")),
        "{}",
        t.log_text()
    );
    assert!(
        t.log_text().contains("status=sent (delivered to mbox)"),
        "{}",
        t.log_text()
    );
    assert_eq!(owner_group_mode(&mbox), (nobody.uid, mail, 0o600));
    assert!(fs::read_to_string(&mbox).unwrap().contains("Subject: first"));

    let id = send("second");
    assert!(
        t.wait_log(&format!("{id}: to=<{rcpt}>, relay=local")),
        "{}",
        t.log_text()
    );
    let text = fs::read_to_string(&mbox).unwrap();
    assert!(
        text.contains("Subject: first") && text.contains("Subject: second"),
        "{text}"
    );

    // A symlink planted in its place: the mail waits, the target is untouched.
    fs::remove_file(&mbox).unwrap();
    let victim = base.path().join("victim");
    fs::write(&victim, b"precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, &mbox).unwrap();
    let id = send("third");
    let want = format!("{id}: to=<{rcpt}>, relay=local");
    assert!(t.wait_log(&want), "{}", t.log_text());
    let log = t.log_text();
    let line = log.lines().find(|l| l.contains(&want)).unwrap();
    assert!(
        line.contains(&format!(
            "status=deferred (mailbox {} is a symlink, refusing)",
            mbox.display()
        )),
        "{line}"
    );
    assert_eq!(fs::read(&victim).unwrap(), b"precious\n");
}
