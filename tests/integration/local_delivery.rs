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
    fs::write(&message, BODY).unwrap();
    Job {
        target,
        sender: "alice@example.org".to_owned(),
        recipient: "bob@example.test".to_owned(),
        user: None,
        message,
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
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("4.3.0 local delivery: expected 9 arguments"));
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
    let o = deliver_in_child(
        &job(dir.path(), Target::Mbox(mbox.clone())),
        &user,
        Path::new(TERND),
    );
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
