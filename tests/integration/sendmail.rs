//! The sendmail program: submission through the maildrop with ternd down or up,
//! -t and Bcc, -i and the lone dot, the RFC 6409 header fixes, -bs, -q, the
//! exit codes, newaliases, and a full spool disk.

use std::path::Path;
use std::process::Command;

use crate::common::{wait_files, Setup};

fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).expect("read")).into_owned()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn uid() -> u32 {
    tern::sys::uids().0
}

fn user() -> String {
    tern::sys::getpwuid(uid()).expect("passwd entry").name
}

#[test]
fn dropped_while_ternd_is_down_then_delivered_at_start() {
    let setup = Setup::new().deliver();
    let out = setup.sendmail(
        &["alice@example.test"],
        b"Subject: while down\n\nhello from cron\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    // Durable in the maildrop, not yet queued: nobody runs to pick it up.
    let drop = setup.path().join("spool/maildrop");
    let dropped = names(&drop);
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert!(!dropped[0].starts_with('.'), "{dropped:?}");
    assert!(names(&setup.path().join("spool/env")).is_empty());
    // mailq shows it as Postfix shows its maildrop queue.
    let q = setup.sendmail_as("mailq", &[]);
    assert!(
        q.stdout.contains(&format!("{}  ", dropped[0]))
            && q.stdout
                .contains(&format!(" (maildrop queue, sender UID {})\n", uid())),
        "{q:?}"
    );
    assert!(q.stdout.ends_with(" Kbytes in 1 Request.\n"), "{q:?}");

    let t = setup.start();
    let mail = wait_files(&t.maildir_new("alice"), 1, 10);
    assert_eq!(mail.len(), 1, "{}", t.log_text());
    let m = read(&mail[0]);
    // Postfix's form of the local trace field, with the real uid.
    let received = format!("Received: by mx.test (tern, from userid {})\n\tid ", uid());
    assert!(m.contains(&received), "{m}");
    // RFC 6409 section 8: From:, Date: and Message-ID: added when missing.
    assert!(m.contains("\nFrom: "), "{m}");
    assert!(m.contains(&format!("<{}@mx.test>\n", user())), "{m}");
    assert!(m.contains("\nDate: "), "{m}");
    assert!(m.contains("\nMessage-ID: <"), "{m}");
    assert!(m.contains(&format!("Return-Path: <{}@mx.test>", user())), "{m}");
    assert!(m.ends_with("\n\nhello from cron\n"), "{m}");
    assert!(names(&t.spool_dir().join("maildrop")).is_empty());
}

#[test]
fn picked_up_at_once_when_ternd_runs() {
    let t = Setup::new().deliver().start();
    // Well under the runner's one-minute rescan: the control socket's pickup.
    let out = t.setup.sendmail(
        &["-f", "someone@example.org", "-F", "Some One", "bob@example.test"],
        b"Subject: now\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody line\r\n\xc3\xa9t\xc3\xa9\r\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let mail = wait_files(&t.maildir_new("bob"), 1, 5);
    assert_eq!(mail.len(), 1, "{}", t.log_text());
    let m = read(&mail[0]);
    assert!(t.log_text().contains("control: pickup"), "{}", t.log_text());
    // -f is the envelope sender; -F names the added From:; the given Date: stays.
    assert!(m.starts_with("Return-Path: <someone@example.org>\n"), "{m}");
    assert!(m.contains("\nFrom: Some One <someone@example.org>\n"), "{m}");
    assert_eq!(m.matches("Date: ").count(), 1, "{m}");
    assert!(m.contains("Date: Mon, 23 Nov 2026 10:00:00 +0000\n"), "{m}");
    // CRLF input is stored with LF (and sent with CRLF); 8-bit text is kept.
    assert!(m.ends_with("\n\nbody line\nété\n"), "{m}");
    // The forged sender does not hide who sent it.
    assert!(m.contains(&format!("(tern, from userid {})", uid())), "{m}");
}

#[test]
fn t_takes_recipients_from_headers_and_drops_bcc() {
    let t = Setup::new().deliver().start();
    let msg = b"From: a@example.test\nTo: Alice <alice@example.test>\nBcc: bob@example.test\nSubject: secret\n\nhi\n";
    let out = t.setup.sendmail(&["-t"], msg);
    assert_eq!(out.code, 0, "{out:?}");
    let a = wait_files(&t.maildir_new("alice"), 1, 5);
    let b = wait_files(&t.maildir_new("bob"), 1, 5);
    assert_eq!((a.len(), b.len()), (1, 1), "{}", t.log_text());
    for p in [&a[0], &b[0]] {
        let m = read(p);
        assert!(m.contains("\nSubject: secret\n"), "{m}");
        assert!(!m.to_ascii_lowercase().contains("\nbcc:"), "{m}");
        assert!(m.contains("\nTo: Alice <alice@example.test>\n"), "{m}");
    }
}

#[test]
fn lone_dot_ends_the_message_unless_i() {
    let t = Setup::new().deliver().start();
    let input = b"From someone Mon Nov 23 10:00:00 2026\nSubject: dots\n\nbefore\n.\nafter\n";
    assert_eq!(t.setup.sendmail(&["alice@example.test"], input).code, 0);
    let first = wait_files(&t.maildir_new("alice"), 1, 5);
    assert_eq!(first.len(), 1, "{}", t.log_text());
    let m = read(&first[0]);
    assert!(m.ends_with("\n\nbefore\n"), "{m}");
    // The mbox "From " line in front was dropped, so Subject: is a header field.
    assert!(
        !m.contains("From someone") && m.contains("\nSubject: dots\n"),
        "{m}"
    );

    for flag in ["-i", "-oi"] {
        assert_eq!(t.setup.sendmail(&[flag, "bob@example.test"], input).code, 0);
    }
    let got = wait_files(&t.maildir_new("bob"), 2, 5);
    assert_eq!(got.len(), 2, "{}", t.log_text());
    for p in got {
        let m = read(&p);
        assert!(m.ends_with("\n\nbefore\n.\nafter\n"), "{m}");
    }
}

#[test]
fn bs_runs_an_smtp_session_on_stdin() {
    let t = Setup::new().deliver().start();
    let input = b"EHLO local.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: via -bs\r\n\r\nhello\r\n.\r\nQUIT\r\n";
    let out = t.setup.sendmail(&["-bs"], input);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("220 mx.test ESMTP tern\r\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\r\n250 2.0.0 Ok: queued as "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.ends_with("221 2.0.0 Bye\r\n"), "{}", out.stdout);
    // Dropped into the maildrop; the daemon, told to pick it up, delivers it now.
    let mail = wait_files(&t.maildir_new("alice"), 1, 5);
    assert_eq!(mail.len(), 1, "{}", t.log_text());
    assert!(read(&mail[0]).contains("Received: from local.test (localhost)\n"));
}

#[test]
fn q_flushes_a_running_daemon_and_fails_without_one() {
    let setup = Setup::new();
    let out = setup.sendmail(&["-q"], b"");
    assert_eq!(out.code, 75, "{out:?}");
    assert!(out.stderr.contains("ternd is not running"), "{out:?}");
    let t = setup.start();
    let out = t.setup.sendmail(&["-q"], b"");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(t.wait_log("control: flush"), "{}", t.log_text());
}

#[test]
fn exit_codes() {
    let setup = Setup::new().set("max_message_size", "1k");
    let msg = b"Subject: x\n\nx\n";
    let cases: &[(&[&str], &[u8], i32, &str)] = &[
        (&["-Z", "alice"], msg, 64, "Unrecognized option"),
        (&["bad address@"], msg, 64, "bad recipient address"),
        (&["-f", "a b@c", "alice"], msg, 64, "bad sender address"),
        (&[], msg, 64, "no recipients"),
        (&["-t"], msg, 64, "no recipients"),
        (
            &["-t"],
            b"To: not an address\n\nx\n",
            64,
            "bad address in to: header",
        ),
        (&["alice"], &[b'x'; 3000], 65, "message too big"),
    ];
    for (args, input, code, text) in cases {
        let out = setup.sendmail(args, input);
        assert_eq!(out.code, *code, "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("sendmail: "), "{out:?}");
        assert!(out.stderr.contains(text), "{args:?}: {out:?}");
    }
    let out = crate::common::run_program(
        Path::new(crate::common::SENDMAIL),
        &["-C", "/nonexistent/tern.conf", "alice"],
        msg,
    );
    assert_eq!(out.code, 78, "{out:?}");
    assert!(out.stderr.contains("cannot read"), "{out:?}");
    // Nothing was queued by any of them.
    assert!(names(&setup.path().join("spool/maildrop")).is_empty());
    // Legacy options are accepted, silently (a warning with -v); an empty
    // message is valid.
    let out = setup.sendmail(&["-odb", "-B8BITMIME", "alice"], b"");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stderr, "", "{out:?}");
    assert_eq!(names(&setup.path().join("spool/maildrop")).len(), 1);
    let out = setup.sendmail(&["-v", "-odb", "-B8BITMIME", "alice"], b"");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("warning: option -odb is ignored"), "{out:?}");
    let out = setup.sendmail(&["-B", "9BIT", "alice"], b"");
    assert_eq!(out.code, 64, "{out:?}");
    assert!(
        out.stderr.contains("-B 9BIT: expected 8BITMIME or 7BIT"),
        "{out:?}"
    );
}

/// Issue 17, 5: what cron, mutt and mail(1) pass is taken without a word.
#[test]
fn mail_programs_options_are_accepted_silently() {
    let setup = Setup::new();
    for args in [
        &["-oi", "-oem", "-odb", "-B8BITMIME", "-Ac", "alice@example.test"][..],
        &["-odi", "-Am", "-ODeliveryMode=b", "-i", "--", "bob@example.test"],
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "alice@example.test"],
        &["-oi", "-f", "root", "-t"],
        &[
            "-c",
            "-x",
            "-e",
            "m",
            "-p",
            "local",
            "-om",
            "-oQ/var/spool",
            "alice@example.test",
        ],
    ] {
        let out = setup.sendmail(
            args,
            b"To: alice@example.test
Subject: cron

out
",
        );
        assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{args:?}: {out:?}");
    }
    assert_eq!(names(&setup.path().join("spool/maildrop")).len(), 5);
    let out = setup.sendmail(
        &["-v", "-Am", "-ODeliveryMode=b", "alice@example.test"],
        b"x
",
    );
    assert_eq!(out.code, 0, "{out:?}");
    for o in ["-Am", "-ODeliveryMode=b"] {
        assert!(
            out.stderr.contains(&format!("warning: option {o} is ignored")),
            "{out:?}"
        );
    }
}

/// Issue 17, 5: a bare user name gets the origin domain (`origin`, else
/// /etc/mailname, else hostname) on the command line, with -t and under -bs;
/// so does the sender's own name.
#[test]
fn bare_names_get_the_origin_domain() {
    let t = Setup::new().set("origin", "example.test").start();
    let user = user();
    assert_eq!(
        t.setup
            .sendmail(
                &["carol"],
                b"Subject: one

x
"
            )
            .code,
        0
    );
    assert_eq!(
        t.setup
            .sendmail(
                &["-t"],
                b"To: Bob <bob>, carol
Subject: two

x
"
            )
            .code,
        0
    );
    let out = t.setup.sendmail(
        &["-bs"],
        b"HELO l\r\nMAIL FROM:<root>\r\nRCPT TO:<alice>\r\nRCPT TO:<postmaster>\r\nDATA\r\nSubject: three\r\n\r\nx\r\n.\r\nQUIT\r\n",
    );
    assert!(out.stdout.contains("\r\n250 2.0.0 Ok: queued as "), "{out:?}");
    let mut seen = Vec::new();
    assert!(
        crate::common::wait_until(10, || {
            seen = t.queued();
            seen.len() == 3
        }),
        "{}",
        t.log_text()
    );
    let mut got: Vec<(String, Vec<String>)> = seen
        .iter()
        .map(|(e, _)| {
            (
                e.sender.clone(),
                e.recipients.iter().map(|r| r.addr.clone()).collect(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (
            format!("{user}@example.test"),
            vec!["carol@example.test".to_owned()],
        ),
        (
            format!("{user}@example.test"),
            vec!["bob@example.test".to_owned(), "carol@example.test".to_owned()],
        ),
        (
            "root@example.test".to_owned(),
            vec![
                "alice@example.test".to_owned(),
                "postmaster@example.test".to_owned(),
            ],
        ),
    ];
    want.sort();
    assert_eq!(got, want);
}

/// Issue 17, 5: -bv says what delivery would do and sends nothing.
#[test]
fn bv_says_what_delivery_would_do() {
    let setup = Setup::new()
        .set("origin", "example.test")
        .set("route", "far.test [127.0.0.1]:2")
        .aliases("team: alice, Carol@example.test, friend@far.test\n");
    let mail = setup.path().join("mail");
    let out = setup.sendmail(&["-bv", "alice", "team@example.test", "x@far.test"], b"");
    assert_eq!(out.code, 0, "{out:?}");
    let want = format!(
        "alice@example.test... deliverable: local user alice (no system account), maildir {m}/alice/\n\
         team@example.test... deliverable: alias, 3 targets\n\
         \x20   alice... deliverable: local user alice (no system account), maildir {m}/alice/\n\
         \x20   carol... deliverable: local user carol (no system account), maildir {m}/carol/\n\
         \x20   friend@far.test... deliverable: forwarded, SMTP via route: [127.0.0.1]:2\n\
         x@far.test... deliverable: SMTP via route: [127.0.0.1]:2\n",
        m = mail.display()
    );
    assert_eq!(out.stdout, want);
    let out = setup.sendmail(&["-bv", "dave", "alice"], b"");
    assert_eq!(out.code, 67, "{out:?}");
    assert!(
        out.stdout
            .starts_with("dave@example.test... undeliverable: 5.1.1 unknown user: \"dave\"\n"),
        "{out:?}"
    );
    assert_eq!(setup.sendmail(&["-bv"], b"").code, 64);
    // Nothing was queued or dropped, nothing delivered.
    assert!(names(&setup.path().join("spool/maildrop")).is_empty());
    assert!(!mail.exists());
}

#[test]
fn newaliases_checks_the_aliases_file() {
    let setup = Setup::new();
    let out = setup.sendmail_as("newaliases", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(": 2 aliases"), "{out:?}");
    let out = setup.sendmail(&["-bi"], b"");
    assert_eq!(out.code, 0, "{out:?}");
    // -I is newaliases too (Sendmail's and Postfix's).
    let out = setup.sendmail(&["-I"], b"");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(": 2 aliases"), "{out:?}");
    let setup = setup.aliases("good: alice\nthis line is bad\n");
    let out = setup.sendmail_as("newaliases", &[]);
    assert_eq!(out.code, 65, "{out:?}");
    assert!(out.stderr.contains(":2: "), "{out:?}");
    // One error is "1 error".
    assert!(
        out.stderr.ends_with(&format!(
            "newaliases: 1 error in {}\n",
            setup.path().join("aliases").display()
        )),
        "{out:?}"
    );
    let setup = setup.aliases("bad one\nbad two\n");
    let out = setup.sendmail_as("newaliases", &[]);
    assert!(out.stderr.contains("newaliases: 2 errors in "), "{out:?}");
}

/// Issue 17, 5: the aliases file installed beside tern.conf is used without
/// an `aliases` key.
#[test]
fn newaliases_finds_the_installed_aliases_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tern.conf");
    std::fs::write(&conf, format!("spool = {}\n", dir.path().join("spool").display())).unwrap();
    let run = || {
        let link = dir.path().join("newaliases");
        if !link.exists() {
            std::os::unix::fs::symlink(crate::common::SENDMAIL, &link).unwrap();
        }
        crate::common::run_program(&link, &["-C", conf.to_str().unwrap()], b"")
    };
    let out = run();
    assert_eq!(out.stdout, "newaliases: no aliases file configured\n", "{out:?}");
    std::fs::write(dir.path().join("aliases"), "root: alice\npostmaster: root\n").unwrap();
    let out = run();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!(
            "newaliases: {}: 2 aliases\n",
            dir.path().join("aliases").display()
        )
    );
}

/// Unmounts on drop, so a failing test never leaves a mount behind.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_spool_disk_gives_tempfail_and_no_partial_file() {
    require_root!("mounting a small tmpfs");
    let setup = Setup::new();
    let spool = setup.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tern-test"])
        .arg(&spool)
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        crate::common::skip::skip("cannot mount a tmpfs here");
        return;
    }
    let _guard = Mount(spool.clone());
    let mut big = b"Subject: too big for the disk\n\n".to_vec();
    big.extend(
        std::iter::repeat_n(
            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n",
            32 * 1024,
        )
        .flatten(),
    );
    let out = setup.sendmail(&["alice"], &big);
    assert_eq!(out.code, 75, "{out:?}");
    assert!(out.stderr.contains("No space left on device"), "{out:?}");
    // Nothing half-written anywhere: not in the maildrop, not in the queue.
    assert!(
        names(&spool.join("maildrop")).is_empty(),
        "{:?}",
        names(&spool.join("maildrop"))
    );
    assert!(names(&spool.join("env")).is_empty());
    // A small message still fits: the failure left the disk as it was.
    let out = setup.sendmail(&["alice"], b"Subject: small\n\nok\n");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(names(&spool.join("maildrop")).len(), 1);
}

#[test]
fn unprivileged_user_drops_through_the_group_and_is_traced_by_uid() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    require_root!("running sendmail as another user");
    let nobody = require_some!(tern::sys::getpwnam("nobody"), "no nobody account");
    let gid = require_some!(
        tern::sys::group_id("nogroup").or_else(|| tern::sys::group_id("nobody")),
        "no nogroup group"
    );
    let setup = Setup::new().deliver().open_to_all();
    let conf = setup.write_config();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The spool as root creates it; the maildrop's group stands in for `tern`, and
    // running sendmail with that gid stands in for the setgid bit.
    let spool = tern::spool::Spool::open(&setup.path().join("spool")).unwrap();
    let drop = spool.root().join("maildrop");
    std::os::unix::fs::chown(&drop, Some(0), Some(gid)).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&drop), 0o1730);
    assert_eq!(mode(spool.root()), 0o711);

    let run = |uid: u32, gid: u32, input: &[u8]| {
        let mut child = Command::new(crate::common::SENDMAIL)
            .args([
                "-C",
                conf.to_str().unwrap(),
                "-f",
                "root@example.test",
                "alice@example.test",
            ])
            .uid(uid)
            .gid(gid)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    // Forging the sender works (as with any sendmail), but the uid is recorded.
    let out = run(nobody.uid, gid, b"Subject: forged\n\nhi\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = names(&drop);
    assert_eq!(files.len(), 1);
    let meta = std::fs::metadata(drop.join(&files[0])).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o777), (nobody.uid, 0o644));
    // Without the group, the maildrop is closed: a clear error, nothing written.
    let out = run(nobody.uid, if gid == 1 { 2 } else { 1 }, b"x\n");
    let code = out.status.code();
    assert!(
        code == Some(73) || code == Some(77),
        "{code:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(names(&drop).len(), 1);

    let t = setup.start();
    let mail = wait_files(&t.maildir_new("alice"), 1, 10);
    assert_eq!(mail.len(), 1, "{}", t.log_text());
    let m = read(&mail[0]);
    assert!(m.starts_with("Return-Path: <root@example.test>\n"), "{m}");
    assert!(
        m.contains(&format!(
            "Received: by mx.test (tern, from userid {})\n",
            nobody.uid
        )),
        "{m}"
    );
}

/// -bs run by an ordinary user: the session drops what it accepts into the
/// maildrop (it may not write the queue), the daemon picks it up, and the drop
/// file's owner is the uid in the Received: header.
#[test]
fn bs_as_an_unprivileged_user_queues_through_the_maildrop() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    require_root!("running sendmail as another user");
    let (nobody, gid) = require_some!(
        tern::sys::getpwnam("nobody")
            .zip(tern::sys::group_id("nogroup").or_else(|| tern::sys::group_id("nobody"))),
        "no nobody account or group"
    );
    let setup = Setup::new().deliver().open_to_all();
    let conf = setup.write_config();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The maildrop's and the control socket's group stand in for `tern`, and
    // running sendmail with that gid for the setgid bit.
    let spool = tern::spool::Spool::open(&setup.path().join("spool")).unwrap();
    std::os::unix::fs::chown(spool.root().join("maildrop"), Some(0), Some(gid)).unwrap();
    let t = setup.start();
    let sock = tern::spool::control_socket(&t.spool_dir());
    std::os::unix::fs::chown(&sock, None, Some(gid)).unwrap();

    let mut child = Command::new(crate::common::SENDMAIL)
        .args(["-C", conf.to_str().unwrap(), "-bs"])
        .uid(nobody.uid)
        .gid(gid)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"EHLO local.test\r\nMAIL FROM:<n@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: -bs as nobody\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queued = stdout
        .lines()
        .find_map(|l| l.strip_prefix("250 2.0.0 Ok: queued as "))
        .unwrap_or_else(|| panic!("no 250 after DATA: {stdout}"))
        .trim()
        .to_owned();
    assert!(stdout.ends_with("221 2.0.0 Bye\r\n"), "{stdout}");
    // Told at once over the control socket, the daemon picks it up and delivers.
    let mail = wait_files(&t.maildir_new("alice"), 1, 10);
    assert_eq!(mail.len(), 1, "{}", t.log_text());
    let m = read(&mail[0]);
    assert!(m.contains("Subject: -bs as nobody\n"), "{m}");
    assert!(
        m.contains(&format!(
            "Received: by mx.test (tern, from userid {})\n",
            nobody.uid
        )),
        "{m}"
    );
    assert!(
        t.log_text().contains(&format!(
            ": uid={} from=<n@example.test> (maildrop {queued})",
            nobody.uid
        )),
        "{}",
        t.log_text()
    );
}
