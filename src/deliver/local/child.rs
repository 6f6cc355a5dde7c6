//! The delivery child: when ternd runs as root (or is the root helper) and a
//! copy is for a user, ternd re-executes itself as `ternd --local-delivery
//! ARGS` running as that user (uid, gid, no supplementary groups; for their
//! own mbox in a group-writable mail spool, that spool's group instead: see
//! `mailspool`), with the spool file as stdin. The child writes the copy with the same code as the
//! daemon ([`super::write`]) and reports one line `STATUS detail` on stderr and
//! a sysexits code; this module is both sides of that protocol.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use super::job::{Job, Target};
use super::mailspool::{self, Access};
use super::mbox::LOCK_WAIT;
use super::pipe::{first_line, one_line, spawn_captured, supervise, with_output, Exit, Ran, SAFE_PATH};
use super::write::{deliver_here, Delivery};
use crate::deliver::outcome::{self, Outcome, Stage, Verdict};
use crate::smtp::status::Status;
use crate::sys::Passwd;
use crate::sysexits::SysExit;

/// argv[1] that makes ternd run [`child_main`] instead of the daemon.
pub const CHILD_FLAG: &str = "--local-delivery";
/// The first argument after [`CHILD_FLAG`]: the version of the argument list, so a
/// parent and a child from different builds fail (temporarily) instead of misreading.
const CHILD_PROTOCOL: &str = "2";

/// Extra time a delivery child gets beyond the pipe timeout and both lock waits.
const CHILD_GRACE: Duration = Duration::from_secs(60);

/// The running ternd. On Linux /proc/self/exe names the running image even after a
/// package upgrade replaced the file, so the child always speaks its parent's protocol.
pub fn own_executable() -> io::Result<PathBuf> {
    let proc_exe = Path::new("/proc/self/exe");
    if cfg!(any(target_os = "linux", target_os = "android")) && proc_exe.exists() {
        return Ok(proc_exe.to_owned());
    }
    std::env::current_exe()
}

/// Deliver in a child process: `program --local-delivery ...` running as `user`,
/// stdin the spool file. `deliver` passes ternd itself; tests pass the ternd they built.
/// The child's stderr line `STATUS detail` and exit code become the outcome; anything
/// unexpected from the child (no status line, a crash, a usage error) is temporary.
pub fn deliver_in_child(job: &Job, user: &Passwd, program: &Path) -> Outcome {
    spawn_child(job, user, program, None)
}

/// The delivery helper's entry: deliver `job` as its user in a child (the helper
/// decided whether it is the user's own mailbox, `job.mailbox`). The message must
/// be a file of the unprivileged daemon's, `owner` (see `open_message`).
pub(super) fn deliver_as_user(job: &Job, owner: u32) -> Outcome {
    let Some(user) = &job.user else {
        return outcome::local_error("local delivery without a user");
    };
    match own_executable() {
        Ok(program) => spawn_child(job, user, &program, Some(owner)),
        Err(e) => outcome::local_error(format!("cannot find ternd's executable: {e}")),
    }
}

/// Open the spool file to feed a delivery child. Never through a symlink. With
/// `owner` (root opening a file in a directory an unprivileged daemon controls) it
/// must also be a regular file of that owner with one link, so the daemon cannot
/// point root at another file, by symlink or hard link, to be read out as mail.
fn open_message(path: &Path, owner: Option<u32>) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if let Some(uid) = owner {
        let m = f.metadata()?;
        if !m.is_file() || m.uid() != uid || m.nlink() != 1 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("not a spool file of uid {uid} with one link"),
            ));
        }
    }
    Ok(f)
}

fn spawn_child(job: &Job, user: &Passwd, program: &Path, owner: Option<u32>) -> Outcome {
    // A user's own mbox missing from the mail spool: the child gets the spool's
    // group, or root creates the file, as Postfix's local(8) decides (mailspool).
    let mut gid = user.gid;
    if let (Target::Mbox(path), true) = (&job.target, job.mailbox) {
        match mailspool::access(path, user) {
            Access::User => {}
            Access::Group(g) => gid = g,
            Access::RootCreates => mailspool::precreate(path, user),
        }
    }
    let args = match child_args(job, user) {
        Ok(a) => a,
        Err(o) => return o,
    };
    let message = match open_message(&job.message, owner) {
        Ok(f) => f,
        Err(e) => {
            return outcome::cannot_open_message(&job.message, &e);
        }
    };
    let mut cmd = Command::new(program);
    cmd.arg0("ternd")
        .args(&args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .current_dir("/")
        .uid(user.uid)
        .gid(gid)
        .stdin(Stdio::from(message));
    let (child, output) = match spawn_captured(&mut cmd) {
        Ok(x) => x,
        Err(e) => return outcome::local_error(format!("cannot start local delivery as {}: {e}", user.name)),
    };
    drop(cmd);
    let limit = job
        .pipe_timeout
        .saturating_add(LOCK_WAIT * 2)
        .saturating_add(CHILD_GRACE);
    let ran = supervise(child, output, None, limit);
    child_outcome(&ran)
}

/// The entry point of the delivery child (`ternd --local-delivery ARGS`); `args` are
/// the arguments after the flag. Reads the message on stdin, writes one line
/// `STATUS detail` on stderr, exits 0 (delivered), 75 (temporary), 67/69/73/77
/// (permanent) or 64 (bad arguments).
pub fn child_main(args: &[String]) -> ExitCode {
    let (d, size) = match parse_child_args(args) {
        Ok(d) => d,
        Err(e) => {
            report(&outcome::local_error(format!("local delivery: {e}")));
            return ExitCode::from(SysExit::Usage);
        }
    };
    let outcome = deliver_here(&d, Box::new(io::stdin().take(size)));
    report(&outcome);
    ExitCode::from(exit_code(&outcome))
}

fn report(o: &Outcome) {
    let _ = writeln!(io::stderr(), "{} {}", o.status(), one_line(o.detail()));
}

fn exit_code(o: &Outcome) -> SysExit {
    match o.verdict() {
        Verdict::Delivered => SysExit::Ok,
        Verdict::Temporary => SysExit::TempFail,
        // RFC 3463 3.2 subjects: addressing, mailbox, security.
        Verdict::Permanent => match o.status().subject() {
            1 => SysExit::NoUser,
            2 => SysExit::CantCreat,
            7 => SysExit::NoPerm,
            _ => SysExit::Unavailable,
        },
    }
}

/// The child's argv after argv[0]: [`CHILD_FLAG`], then protocol version, kind
/// (`maildir`, `mbox`, `pipe`), path or command, sender, recipient, hostname, pipe
/// timeout in ms, user name, home. Positional, so an empty sender is just "".
fn child_args(job: &Job, user: &Passwd) -> Result<Vec<String>, Outcome> {
    let utf8 = |p: &Path| {
        p.to_str()
            .map(str::to_owned)
            .ok_or_else(|| outcome::mailbox_unavailable(format!("path {} is not UTF-8", p.display())))
    };
    let (kind, target) = match &job.target {
        Target::Maildir(p) | Target::Mbox(p) => (job.target.kind(), utf8(p)?),
        Target::Pipe(c) => (job.target.kind(), c.clone()),
    };
    Ok(vec![
        CHILD_FLAG.to_owned(),
        CHILD_PROTOCOL.to_owned(),
        kind.to_owned(),
        target,
        job.sender.clone(),
        job.recipient.clone(),
        job.hostname.clone(),
        job.pipe_timeout.as_millis().to_string(),
        user.name.clone(),
        utf8(&user.home)?,
        job.size.to_string(),
    ])
}

/// The delivery, and the octets of the message to read from stdin (the spool's
/// msg/ID: its seal follows them).
fn parse_child_args(args: &[String]) -> Result<(Delivery, u64), String> {
    let [version, kind, target, sender, recipient, hostname, timeout, user, home, size] = args else {
        return Err(format!("expected 10 arguments, got {}", args.len()));
    };
    if version != CHILD_PROTOCOL {
        return Err(format!("protocol {version:?}, expected {CHILD_PROTOCOL}"));
    }
    let target = Target::from_parts(kind, target)?;
    let ms: u64 = timeout.parse().map_err(|_| format!("bad timeout {timeout:?}"))?;
    let size: u64 = size.parse().map_err(|_| format!("bad size {size:?}"))?;
    let d = Delivery {
        target,
        sender: sender.clone(),
        recipient: recipient.clone(),
        hostname: hostname.clone(),
        pipe_timeout: Duration::from_millis(ms),
        user_name: user.clone(),
        home: PathBuf::from(home),
        // The child runs as the user: only files the user owns are theirs.
        owner: None,
        lock_wait: LOCK_WAIT,
    };
    Ok((d, size))
}

/// Turn what the delivery child did into an outcome. A permanent outcome needs the
/// child's own word for it: a class 5 status line and one of its permanent exit codes.
fn child_outcome(ran: &Ran) -> Outcome {
    let line = first_line(&ran.output);
    let parsed = line.as_deref().and_then(|l| {
        let (code, rest) = l.split_once(' ').unwrap_or((l, ""));
        Status::parse(code).map(|s| (s, rest.to_owned()))
    });
    let status = match &ran.exit {
        Exit::Status(s) => *s,
        Exit::TimedOut => return outcome::local_error("local delivery timed out"),
        Exit::Failed(e) => return outcome::local_error(format!("local delivery: {e}")),
    };
    let Some(code) = status.code() else {
        let sig = status.signal().unwrap_or(0);
        return outcome::local_error(format!("local delivery killed by signal {sig}"));
    };
    match (code, parsed) {
        // The child's words, as it said them (see `report`).
        (0, Some((s, detail))) if s.0 == 2 => Outcome::decoded(Verdict::Delivered, Stage::Local, s, detail),
        (0, _) => outcome::delivered_locally("delivered"),
        (c, Some((s, detail)))
            if s.0 == 5
                && matches!(
                    SysExit::from_code(c),
                    Some(SysExit::NoUser | SysExit::Unavailable | SysExit::CantCreat | SysExit::NoPerm)
                ) =>
        {
            Outcome::decoded(Verdict::Permanent, Stage::Local, s, detail)
        }
        (_, Some((s, detail))) if s.0 == 4 => Outcome::decoded(Verdict::Temporary, Stage::Local, s, detail),
        (c, _) => outcome::local_error(with_output(
            format!("local delivery exited with status {c}"),
            &ran.output,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::local::testutil::{
        delivered, job, permanent, temporary, user, BODY, COMMAND_FAILED, MAILBOX_FULL, SYSTEM_ERROR,
    };
    use crate::sys;
    use std::fs;
    use std::process::ExitStatus;

    fn status_of(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn ran(exit: Exit, output: &str) -> Ran {
        Ran {
            exit,
            output: output.as_bytes().to_vec(),
            feed_error: None,
        }
    }

    #[test]
    fn message_files_for_root_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let msg = dir.path().join("msg");
        fs::write(&msg, b"x\n").expect("write");
        let me = sys::uids().1;
        assert!(open_message(&msg, None).is_ok());
        assert!(open_message(&msg, Some(me)).is_ok());
        // Not the daemon's file.
        assert!(open_message(&msg, Some(me.wrapping_add(1))).is_err());
        // A symlink is never followed.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&msg, &link).expect("symlink");
        assert!(open_message(&link, None).is_err());
        // A second name (a hard link to someone else's file) is refused for root.
        fs::hard_link(&msg, dir.path().join("hard")).expect("link");
        assert!(open_message(&msg, Some(me)).is_err());
    }

    #[test]
    fn child_arguments_round_trip() {
        let home = tempfile::tempdir().expect("tempdir");
        let u = user(home.path());
        for target in [
            Target::Maildir("/home/bob/Maildir/".into()),
            Target::Mbox("/var/mail/bob".into()),
            Target::Pipe("/usr/bin/list -x 'a b'".to_owned()),
        ] {
            let mut j = job(home.path(), target.clone(), BODY);
            j.sender = String::new();
            j.pipe_timeout = Duration::from_millis(1500);
            let args = child_args(&j, &u).expect("args");
            assert_eq!(args.first().map(String::as_str), Some(CHILD_FLAG));
            let (d, size) = parse_child_args(args.get(1..).expect("rest")).expect("parse");
            assert_eq!(size, BODY.len() as u64);
            assert_eq!(d.target, target);
            assert_eq!(d.sender, "");
            assert_eq!(d.recipient, "bob@example.test");
            assert_eq!(d.hostname, "mx.test");
            assert_eq!(d.pipe_timeout, Duration::from_millis(1500));
            assert_eq!(d.user_name, "bob");
            assert_eq!(d.home, home.path());
            assert_eq!(d.owner, None);
        }
        let ok = |v: &[&str]| parse_child_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(ok(&["2", "mbox", "/m", "", "r", "h", "10", "u", "/", "9"]).is_ok());
        // Protocol 1 had no size: its child would read the seal as message.
        assert!(ok(&["1", "mbox", "/m", "", "r", "h", "10", "u", "/", "9"]).is_err());
        assert!(ok(&["2", "mbox", "/m", "", "r", "h", "10", "u", "/"]).is_err());
        assert!(ok(&["2", "file", "/m", "", "r", "h", "10", "u", "/", "9"]).is_err());
        assert!(ok(&["2", "mbox", "/m", "", "r", "h", "soon", "u", "/", "9"]).is_err());
        assert!(ok(&["2", "mbox", "/m", "", "r", "h", "10", "u", "/", "-1"]).is_err());
        assert!(ok(&["2", "mbox", "/m"]).is_err());
    }

    #[test]
    fn child_results_become_outcomes() {
        let st = |c| Exit::Status(status_of(c));
        assert_eq!(
            child_outcome(&ran(st(0), "2.0.0 delivered to mbox\n")),
            delivered("delivered to mbox")
        );
        assert_eq!(child_outcome(&ran(st(0), "")), delivered("delivered"));
        assert_eq!(
            child_outcome(&ran(st(75), "4.2.2 mailbox full: cannot write /m: No space\n")),
            temporary(MAILBOX_FULL, "mailbox full: cannot write /m: No space")
        );
        assert_eq!(
            child_outcome(&ran(st(69), "5.3.0 command died with status 1: no\n")),
            permanent(COMMAND_FAILED, "command died with status 1: no")
        );
        // No bounce without the child's say-so.
        for (code, line) in [
            (64, "4.3.0 local delivery: expected 10 arguments, got 2"),
            (70, "5.3.0 something"),
            (101, "thread 'main' panicked at src/x.rs"),
            (75, "5.3.0 contradiction"),
            (1, ""),
        ] {
            let o = child_outcome(&ran(st(code), line));
            assert!(o.is_temporary(), "{code} {line}: {o:?}");
        }
        assert_eq!(
            child_outcome(&ran(st(101), "thread 'main' panicked")),
            temporary(
                SYSTEM_ERROR,
                "local delivery exited with status 101: thread 'main' panicked"
            )
        );
        assert_eq!(
            child_outcome(&ran(Exit::Status(ExitStatus::from_raw(9)), "")),
            temporary(SYSTEM_ERROR, "local delivery killed by signal 9")
        );
        assert_eq!(
            child_outcome(&ran(Exit::TimedOut, "")),
            temporary(SYSTEM_ERROR, "local delivery timed out")
        );

        assert_eq!(exit_code(&delivered("x")), SysExit::Ok);
        assert_eq!(exit_code(&temporary(MAILBOX_FULL, "x")), SysExit::TempFail);
        assert_eq!(exit_code(&permanent(COMMAND_FAILED, "x")), SysExit::Unavailable);
        assert_eq!(exit_code(&permanent(Status(5, 1, 1), "x")), SysExit::NoUser);
    }
}
