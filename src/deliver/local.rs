//! Local delivery: one queued message to one local mailbox — a Maildir, an mbox
//! file, or a `|command` pipe — ending in an [`Outcome`].
//!
//! Every copy is `Return-Path: <sender>` (RFC 5321 4.4: the delivering MTA adds it),
//! `Delivered-To: recipient`, then the spool's bytes (which begin with our
//! Received: header). The spool holds LF text, and so does every copy.
//!
//! Privileges: when ternd runs as root and the job names a user, the writing
//! happens in a child process that runs as that user (uid, gid, no supplementary
//! groups): ternd re-executes itself as `ternd --local-delivery ...` (see
//! [`child_main`]) with the spool file as stdin and reports one status line on
//! stderr. Otherwise the writing happens in-process. Both paths run the same code
//! ([`deliver_here`]).
//!
//! Failure policy: a misconfiguration (missing or unwritable directory, a symlinked
//! mbox, a locked mailbox) is temporary, so mail waits in the queue for an admin
//! instead of bouncing. Only a command that exits with a permanent status fails
//! permanently.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Outcome;
use crate::clock;
use crate::smtp::status::Status;
use crate::sys::{self, Passwd};

/// argv[1] that makes ternd run [`child_main`] instead of the daemon.
pub const CHILD_FLAG: &str = "--local-delivery";
/// The first argument after [`CHILD_FLAG`]: the version of the argument list, so a
/// parent and a child from different builds fail (temporarily) instead of misreading.
const CHILD_PROTOCOL: &str = "1";

/// RFC 3463: 4.2.0 mailbox unavailable, 4.2.2 mailbox full, 4.3.0 system error,
/// 5.3.0 permanent system error.
const MAILBOX_UNAVAILABLE: Status = Status(4, 2, 0);
const MAILBOX_FULL: Status = Status(4, 2, 2);
const SYSTEM_ERROR: Status = Status(4, 3, 0);
const COMMAND_FAILED: Status = Status(5, 3, 0);

/// sysexits.h
const EX_USAGE: u8 = 64;
const EX_NOUSER: u8 = 67;
const EX_UNAVAILABLE: u8 = 69;
const EX_CANTCREAT: u8 = 73;
const EX_TEMPFAIL: u8 = 75;
const EX_NOPERM: u8 = 77;

/// How long to wait for each of the two mbox locks.
const LOCK_WAIT: Duration = Duration::from_secs(10);
const LOCK_RETRY: Duration = Duration::from_millis(100);
/// A dotlock older than this was left by a crashed writer (mutt and procmail use
/// the same five minutes).
const STALE_LOCK: Duration = Duration::from_secs(300);
/// Bytes of a command's output kept for the outcome's detail.
const OUTPUT_LIMIT: usize = 4096;
/// The longest first line of output quoted in a detail.
const DETAIL_LIMIT: usize = 200;
/// Extra time a delivery child gets beyond the pipe timeout and both lock waits.
const CHILD_GRACE: Duration = Duration::from_secs(60);
/// After a process exits, how long to wait for its output pipe to reach EOF (a
/// background grandchild may hold it open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(1);
const COPY_BUF: usize = 64 * 1024;
/// The environment of commands and delivery children.
const SAFE_PATH: &str = "/usr/bin:/bin";

/// Where one local recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Maildir directory (tmp/ new/ cur/ created if missing, mode 0700).
    Maildir(PathBuf),
    /// An mbox file (created mode 0600 if missing).
    Mbox(PathBuf),
    /// A shell command line, run with /bin/sh -c.
    Pipe(String),
}

/// One delivery job.
#[derive(Debug, Clone)]
pub struct Job {
    pub target: Target,
    /// Envelope sender, "" for <>.
    pub sender: String,
    /// The address this copy is for (Delivered-To).
    pub recipient: String,
    /// Run as this user when ternd is root; None = as ternd's own user.
    pub user: Option<Passwd>,
    /// The spool's msg/ID file (read-only).
    pub message: PathBuf,
    /// For Maildir unique names.
    pub hostname: String,
    pub pipe_timeout: Duration,
}

/// Expand the `mailbox` template for a user: `%u` → name, a leading `~` → home;
/// trailing '/' → Maildir, else Mbox. (`%%` → `%`; any other `%x` stays as written.)
///
/// The name comes from the account database, which does not hand out names with '/'.
pub fn mailbox_target(template: &str, user: &Passwd) -> Target {
    let mut out = String::new();
    let mut rest = template;
    if rest == "~" || rest.starts_with("~/") {
        let home = user.home.to_string_lossy();
        out.push_str(home.trim_end_matches('/'));
        rest = rest.get(1..).unwrap_or("");
    }
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.clone().next() {
            Some('u') => {
                chars.next();
                out.push_str(&user.name);
            }
            Some('%') => {
                chars.next();
                out.push('%');
            }
            _ => out.push('%'),
        }
    }
    if out.ends_with('/') {
        Target::Maildir(PathBuf::from(out))
    } else {
        Target::Mbox(PathBuf::from(out))
    }
}

/// Deliver one job. As root with `job.user` set, in a child running as that user
/// (ternd re-executed, see [`deliver_in_child`]); otherwise in this process.
pub fn deliver(job: &Job) -> Outcome {
    if let Some(user) = &job.user {
        // A daemon that dropped root asks its root helper (see super::helper).
        if let Some(helper) = super::helper::installed() {
            return helper.deliver(job, &user.name);
        }
        if sys::uids().1 == 0 {
            return match own_executable() {
                Ok(program) => deliver_in_child(job, user, &program),
                Err(e) => Outcome::temporary(SYSTEM_ERROR, format!("cannot find ternd's executable: {e}")),
            };
        }
    }
    deliver_in_process(job)
}

/// The running ternd. On Linux /proc/self/exe names the running image even after a
/// package upgrade replaced the file, so the child always speaks its parent's protocol.
fn own_executable() -> io::Result<PathBuf> {
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
    spawn_child(job, user, program, true, None)
}

/// The delivery helper's entry: deliver `job` as its user in a child. A missing
/// mbox is pre-created only when `precreate` (the helper checked that the path is
/// the user's own mailbox). The message must be a file of the unprivileged daemon's,
/// `owner` (see `open_message`).
pub fn deliver_as_user(job: &Job, precreate: bool, owner: u32) -> Outcome {
    let Some(user) = &job.user else {
        return Outcome::temporary(SYSTEM_ERROR, "local delivery without a user");
    };
    match own_executable() {
        Ok(program) => spawn_child(job, user, &program, precreate, Some(owner)),
        Err(e) => Outcome::temporary(SYSTEM_ERROR, format!("cannot find ternd's executable: {e}")),
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

fn spawn_child(job: &Job, user: &Passwd, program: &Path, precreate: bool, owner: Option<u32>) -> Outcome {
    if let (Target::Mbox(path), true) = (&job.target, precreate) {
        precreate_mbox(path, user);
    }
    let args = match child_args(job, user) {
        Ok(a) => a,
        Err(o) => return o,
    };
    let message = match open_message(&job.message, owner) {
        Ok(f) => f,
        Err(e) => {
            return Outcome::temporary(
                SYSTEM_ERROR,
                format!("cannot open message {}: {e}", job.message.display()),
            )
        }
    };
    let mut cmd = Command::new(program);
    cmd.arg0("ternd")
        .args(&args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .current_dir("/")
        .uid(user.uid)
        .gid(user.gid)
        .stdin(Stdio::from(message));
    let (child, output) = match spawn_captured(&mut cmd) {
        Ok(x) => x,
        Err(e) => {
            return Outcome::temporary(
                SYSTEM_ERROR,
                format!("cannot start local delivery as {}: {e}", user.name),
            )
        }
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
    let d = match parse_child_args(args) {
        Ok(d) => d,
        Err(e) => {
            report(&Outcome::temporary(SYSTEM_ERROR, format!("local delivery: {e}")));
            return ExitCode::from(EX_USAGE);
        }
    };
    let outcome = deliver_here(&d, Box::new(io::stdin()));
    report(&outcome);
    ExitCode::from(exit_code(&outcome))
}

fn report(o: &Outcome) {
    let _ = writeln!(io::stderr(), "{} {}", o.status(), one_line(o.detail()));
}

fn exit_code(o: &Outcome) -> u8 {
    match o {
        Outcome::Delivered { .. } => 0,
        Outcome::Temporary { .. } => EX_TEMPFAIL,
        Outcome::Permanent { status, .. } => match status.1 {
            1 => EX_NOUSER,
            2 => EX_CANTCREAT,
            7 => EX_NOPERM,
            _ => EX_UNAVAILABLE,
        },
    }
}

/// The child's argv after argv[0]: [`CHILD_FLAG`], then protocol version, kind
/// (`maildir`, `mbox`, `pipe`), path or command, sender, recipient, hostname, pipe
/// timeout in ms, user name, home. Positional, so an empty sender is just "".
fn child_args(job: &Job, user: &Passwd) -> Result<Vec<String>, Outcome> {
    let utf8 = |p: &Path| {
        p.to_str().map(str::to_owned).ok_or_else(|| {
            Outcome::temporary(MAILBOX_UNAVAILABLE, format!("path {} is not UTF-8", p.display()))
        })
    };
    let (kind, target) = match &job.target {
        Target::Maildir(p) => ("maildir", utf8(p)?),
        Target::Mbox(p) => ("mbox", utf8(p)?),
        Target::Pipe(c) => ("pipe", c.clone()),
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
    ])
}

fn parse_child_args(args: &[String]) -> Result<Delivery, String> {
    let [version, kind, target, sender, recipient, hostname, timeout, user, home] = args else {
        return Err(format!("expected 9 arguments, got {}", args.len()));
    };
    if version != CHILD_PROTOCOL {
        return Err(format!("protocol {version:?}, expected {CHILD_PROTOCOL}"));
    }
    let target = match kind.as_str() {
        "maildir" => Target::Maildir(PathBuf::from(target)),
        "mbox" => Target::Mbox(PathBuf::from(target)),
        "pipe" => Target::Pipe(target.clone()),
        _ => return Err(format!("unknown kind {kind:?}")),
    };
    let ms: u64 = timeout.parse().map_err(|_| format!("bad timeout {timeout:?}"))?;
    Ok(Delivery {
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
    })
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
        Exit::TimedOut => return Outcome::temporary(SYSTEM_ERROR, "local delivery timed out"),
        Exit::Failed(e) => return Outcome::temporary(SYSTEM_ERROR, format!("local delivery: {e}")),
    };
    let Some(code) = status.code() else {
        let sig = status.signal().unwrap_or(0);
        return Outcome::temporary(SYSTEM_ERROR, format!("local delivery killed by signal {sig}"));
    };
    match (code, parsed) {
        (0, Some((s, detail))) if s.0 == 2 => Outcome::delivered(detail),
        (0, _) => Outcome::delivered("delivered"),
        (c, Some((s, detail)))
            if s.0 == 5
                && [EX_NOUSER, EX_UNAVAILABLE, EX_CANTCREAT, EX_NOPERM]
                    .contains(&u8::try_from(c).unwrap_or(0)) =>
        {
            Outcome::permanent(s, detail)
        }
        (_, Some((s, detail))) if s.0 == 4 => Outcome::temporary(s, detail),
        (c, _) => Outcome::temporary(
            SYSTEM_ERROR,
            with_output(format!("local delivery exited with status {c}"), &ran.output),
        ),
    }
}

/// Root pre-creates a missing mbox for the user (owned by them, mode 0600) in a
/// directory the user may not create files in — /var/mail is root:mail 2775 on
/// Debian — as Postfix's local(8) does. Only where no one but root can redirect
/// the path (see `root_controlled`), and with O_EXCL|O_NOFOLLOW, so a planted
/// name is never followed. Errors are left for the child to report.
fn precreate_mbox(path: &Path, user: &Passwd) {
    if sys::uids().1 != 0 || path == Path::new("/dev/null") {
        return;
    }
    let Some(dir) = path.parent() else { return };
    if !root_controlled(dir) {
        return;
    }
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    if let Ok(f) = created {
        if std::os::unix::fs::fchown(&f, Some(user.uid), Some(user.gid)).is_err() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Whether only root can change what `dir` names: an absolute path without `..`
/// whose every directory is a real directory owned by root, and whose ancestors
/// are not writable by group or others unless sticky (where only an entry's owner,
/// root, may rename it). `dir` itself may be writable: the file is made with O_EXCL.
fn root_controlled(dir: &Path) -> bool {
    if !dir.is_absolute() || dir.components().any(|c| c == Component::ParentDir) {
        return false;
    }
    dir.ancestors()
        .enumerate()
        .all(|(i, a)| match fs::symlink_metadata(a) {
            Ok(m) => {
                let open = m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0;
                m.file_type().is_dir() && m.uid() == 0 && (i == 0 || !open)
            }
            Err(_) => false,
        })
}

/// Deliver in this process, reading the spool file.
fn deliver_in_process(job: &Job) -> Outcome {
    let message = match File::open(&job.message) {
        Ok(f) => f,
        Err(e) => {
            return Outcome::temporary(
                SYSTEM_ERROR,
                format!("cannot open message {}: {e}", job.message.display()),
            )
        }
    };
    deliver_here(&Delivery::in_process(job), Box::new(message))
}

/// What the writing code needs, in either process.
#[derive(Debug, Clone)]
struct Delivery {
    target: Target,
    sender: String,
    recipient: String,
    hostname: String,
    pipe_timeout: Duration,
    /// USER and HOME for commands.
    user_name: String,
    home: PathBuf,
    /// Besides this process's effective uid, who may own an existing mbox.
    owner: Option<u32>,
    lock_wait: Duration,
}

impl Delivery {
    fn in_process(job: &Job) -> Delivery {
        let (user_name, home, owner) = match &job.user {
            Some(u) => (u.name.clone(), u.home.clone(), Some(u.uid)),
            None => match sys::getpwuid(sys::uids().1) {
                Some(u) => (u.name, u.home, None),
                None => (String::new(), PathBuf::from("/"), None),
            },
        };
        Delivery {
            target: job.target.clone(),
            sender: job.sender.clone(),
            recipient: job.recipient.clone(),
            hostname: job.hostname.clone(),
            pipe_timeout: job.pipe_timeout,
            user_name,
            home,
            owner,
            lock_wait: LOCK_WAIT,
        }
    }
}

/// Write one copy in this process: the code both delivery paths share.
fn deliver_here(d: &Delivery, mut message: Box<dyn Read + Send>) -> Outcome {
    let prefix = delivery_prefix(&d.sender, &d.recipient);
    match &d.target {
        Target::Maildir(dir) => deliver_maildir(dir, &d.hostname, &prefix, &mut message),
        // The aliases(5) idiom `nobody: /dev/null` discards; it is not a regular file.
        Target::Mbox(path) if path == Path::new("/dev/null") => Outcome::delivered("discarded to /dev/null"),
        Target::Mbox(path) => {
            let opts = MboxOptions {
                sender: &d.sender,
                owner: d.owner,
                lock_wait: d.lock_wait,
            };
            deliver_mbox(path, &opts, &prefix, &mut message)
        }
        Target::Pipe(command) => {
            deliver_pipe(command, &pipe_env(d), &d.home, prefix, message, d.pipe_timeout)
        }
    }
}

/// The lines every copy starts with. CR and LF are dropped so an address can never
/// Postfix and qmail write Delivered-To without angle brackets; loop checks match that form.
/// start a header of its own.
fn delivery_prefix(sender: &str, recipient: &str) -> Vec<u8> {
    format!(
        "Return-Path: <{}>\nDelivered-To: {}\n",
        header_safe(sender),
        header_safe(recipient)
    )
    .into_bytes()
}

fn header_safe(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, '\r' | '\n' | '\0')).collect()
}

/// Whether an I/O error means the disk or the user's quota is full.
fn no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// A temporary outcome for an I/O error: 4.2.2 for a full disk (RFC 3463 "mailbox
/// full"), else `otherwise`.
fn io_temp(what: &str, e: &io::Error, otherwise: Status) -> Outcome {
    if no_space(e) {
        Outcome::temporary(MAILBOX_FULL, format!("mailbox full: {what}: {e}"))
    } else {
        Outcome::temporary(otherwise, format!("{what}: {e}"))
    }
}

/// A failed copy: reading the spool or writing the mailbox.
#[derive(Debug)]
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl CopyError {
    fn outcome(&self, dest: &Path) -> Outcome {
        match self {
            CopyError::Read(e) => Outcome::temporary(SYSTEM_ERROR, format!("cannot read message: {e}")),
            CopyError::Write(e) => io_temp(&format!("cannot write {}", dest.display()), e, SYSTEM_ERROR),
        }
    }
}

/// Copy the message, telling read errors from write errors.
fn copy_message(message: &mut dyn Read, out: &mut dyn Write) -> Result<(), CopyError> {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match message.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        out.write_all(buf.get(..n).unwrap_or_default())
            .map_err(CopyError::Write)?;
    }
}

// ---------------------------------------------------------------------------
// Maildir (cr.yp.to/proto/maildir.html)

/// Deliveries by this process, for the Q part of Maildir names.
static MAILDIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The maildir protocol: a unique name in tmp/, written and fsync'd, then renamed
/// into new/, where readers look; a reader never sees a partial file.
fn deliver_maildir(dir: &Path, hostname: &str, prefix: &[u8], message: &mut dyn Read) -> Outcome {
    if let Err(e) = make_maildir(dir) {
        return io_temp(
            &format!("cannot create maildir {}", dir.display()),
            &e,
            MAILBOX_UNAVAILABLE,
        );
    }
    let tmp_dir = dir.join("tmp");
    let new_dir = dir.join("new");
    let mut clashes = 0;
    let (name, mut file) = loop {
        let name = maildir_name(hostname);
        // O_EXCL: a clash (only after a clock step back in a recycled pid) is an
        // error to retry with a new name, never an overwrite.
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp_dir.join(&name));
        match opened {
            Ok(f) => break (name, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && clashes < 10 => clashes += 1,
            Err(e) => {
                return io_temp(
                    &format!("cannot create file in {}", tmp_dir.display()),
                    &e,
                    MAILBOX_UNAVAILABLE,
                )
            }
        }
    };
    let tmp = tmp_dir.join(&name);
    let written = file
        .write_all(prefix)
        .map_err(CopyError::Write)
        .and_then(|()| copy_message(message, &mut file))
        .and_then(|()| file.sync_all().map_err(CopyError::Write));
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return e.outcome(&tmp);
    }
    let new = new_dir.join(&name);
    if let Err(e) = fs::rename(&tmp, &new) {
        let _ = fs::remove_file(&tmp);
        return io_temp(
            &format!("cannot rename into {}", new_dir.display()),
            &e,
            SYSTEM_ERROR,
        );
    }
    // The rename is the delivery; make it durable before saying so. If that fails,
    // take the message back so the retry does not leave a duplicate.
    if let Err(e) = sync_dir(&new_dir) {
        let _ = fs::remove_file(&new);
        return io_temp(&format!("cannot fsync {}", new_dir.display()), &e, SYSTEM_ERROR);
    }
    Outcome::delivered("delivered to maildir")
}

/// Create the Maildir and its tmp/ new/ cur/ (0700) where missing; its parent must exist.
fn make_maildir(dir: &Path) -> io::Result<()> {
    // Missing parents are made too (as Postfix's local does for ~/Maildir/
    // under a mail root), owned by whoever delivers: the user, in the child.
    if !dir.is_dir() {
        DirBuilder::new().mode(0o700).recursive(true).create(dir)?;
    }
    let mut builder = DirBuilder::new();
    builder.mode(0o700);
    for d in [dir.join("tmp"), dir.join("new"), dir.join("cur")] {
        match builder.create(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// `secs.M<usecs>P<pid>Q<counter>R<random>.host`, the modern maildir unique name:
/// unique within this process by the counter, across processes by the pid, across
/// pid reuse by the time and the random part.
fn maildir_name(hostname: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let q = MAILDIR_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut rnd = [0u8; 8];
    let random = match sys::random_bytes(&mut rnd) {
        Ok(()) => format!("R{}", rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        Err(_) => String::new(),
    };
    format!(
        "{}.M{}P{}Q{q}{random}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        maildir_host(hostname)
    )
}

/// The spec: '/' and ':' in the host name become `\057` and `\072` (':' starts the
/// info part of a name in cur/).
fn maildir_host(hostname: &str) -> String {
    if hostname.is_empty() {
        return "localhost".to_owned();
    }
    hostname.replace('/', "\\057").replace(':', "\\072")
}

// ---------------------------------------------------------------------------
// mbox (as mutt, mailx and Dovecot read it)

struct MboxOptions<'a> {
    /// The envelope sender, for the From_ line.
    sender: &'a str,
    /// Besides this process's effective uid, who may own the file.
    owner: Option<u32>,
    lock_wait: Duration,
}

/// Append one entry: open safely, lock (dotlock and fcntl), write, fsync, unlock.
/// Any failure after writing began truncates the file back to where it ended, so a
/// half-written entry never corrupts the mailbox.
fn deliver_mbox(path: &Path, opts: &MboxOptions<'_>, prefix: &[u8], message: &mut dyn Read) -> Outcome {
    let file = match open_mbox(path, opts.owner) {
        Ok(f) => f,
        Err(o) => return o,
    };
    let lock = match lock_mbox(path, &file, opts.lock_wait) {
        Ok(l) => l,
        Err(o) => return o,
    };
    let size = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return io_temp(&format!("cannot stat {}", path.display()), &e, SYSTEM_ERROR),
    };
    let from_line = from_line(opts.sender, clock::now());
    let result = append_entry(&file, &from_line, prefix, message)
        .and_then(|()| file.sync_all().map_err(CopyError::Write));
    let outcome = match result {
        Ok(()) => Outcome::delivered("delivered to mbox"),
        Err(e) => {
            let outcome = e.outcome(path);
            match truncate_back(&file, size) {
                Ok(()) => outcome,
                Err(te) => Outcome::temporary(
                    outcome.status(),
                    format!(
                        "{}; cannot truncate it back to {size} bytes: {te}",
                        outcome.detail()
                    ),
                ),
            }
        }
    };
    // Closing the file drops the fcntl lock; then the dotlock goes.
    drop(file);
    drop(lock);
    outcome
}

/// Undo a partial append.
fn truncate_back(file: &File, size: u64) -> io::Result<()> {
    file.set_len(size)?;
    file.sync_all()
}

/// Open for appending, creating it 0600, without following a symlink (an attacker
/// with write access to /var/mail could plant one to a file of the user's), and
/// only a regular file with one link that this process or the user owns.
fn open_mbox(path: &Path, owner: Option<u32>) -> Result<File, Outcome> {
    let refuse = |why: String| {
        Outcome::temporary(
            MAILBOX_UNAVAILABLE,
            format!("mailbox {} {why}, refusing", path.display()),
        )
    };
    // O_NONBLOCK: opening a planted FIFO must not hang; regular files ignore it.
    let opened = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            return Err(match fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => refuse("is a symlink".to_owned()),
                Ok(m) if !m.file_type().is_file() => refuse("is not a regular file".to_owned()),
                _ => io_temp(
                    &format!("cannot open mailbox {}", path.display()),
                    &e,
                    MAILBOX_UNAVAILABLE,
                ),
            })
        }
    };
    let meta = file.metadata().map_err(|e| {
        io_temp(
            &format!("cannot stat mailbox {}", path.display()),
            &e,
            MAILBOX_UNAVAILABLE,
        )
    })?;
    if !meta.file_type().is_file() {
        return Err(refuse("is not a regular file".to_owned()));
    }
    if meta.nlink() > 1 {
        return Err(refuse(format!("has {} hard links", meta.nlink())));
    }
    let euid = sys::uids().1;
    if meta.uid() != euid && Some(meta.uid()) != owner {
        return Err(refuse(format!("is owned by uid {}", meta.uid())));
    }
    Ok(file)
}

/// Holds the dotlock (if one was taken) until dropped.
#[derive(Debug)]
struct MboxLock {
    dotlock: Option<PathBuf>,
}

impl Drop for MboxLock {
    fn drop(&mut self) {
        if let Some(p) = &self.dotlock {
            let _ = fs::remove_file(p);
        }
    }
}

/// Both locks mail readers may use: `PATH.lock` (mailx, mutt's default, procmail)
/// and an fcntl write lock (mutt, Dovecot).
fn lock_mbox(path: &Path, file: &File, wait: Duration) -> Result<MboxLock, Outcome> {
    let guard = MboxLock {
        dotlock: dotlock(path, wait)?,
    };
    let deadline = Instant::now() + wait;
    loop {
        match sys::try_lock_write(file.as_raw_fd()) {
            Ok(true) => return Ok(guard),
            Ok(false) if Instant::now() < deadline => thread::sleep(LOCK_RETRY),
            Ok(false) => {
                return Err(Outcome::temporary(
                    MAILBOX_UNAVAILABLE,
                    format!("mailbox {} locked", path.display()),
                ))
            }
            Err(e) => {
                return Err(io_temp(
                    &format!("cannot lock mailbox {}", path.display()),
                    &e,
                    MAILBOX_UNAVAILABLE,
                ))
            }
        }
    }
}

/// Take `PATH.lock` (O_EXCL), waiting up to `wait`; a lock older than five minutes
/// is stale and removed. Ok(None) when the directory does not let us create files
/// (EACCES: /var/mail root:mail 0775 and a child without group mail): then the fcntl
/// lock alone guards the file.
fn dotlock(path: &Path, wait: Duration) -> Result<Option<PathBuf>, Outcome> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock = PathBuf::from(name);
    let deadline = Instant::now() + wait;
    loop {
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&lock);
        match created {
            Ok(_) => return Ok(Some(lock)),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(None),
            // Two writers can both judge a lock stale and one remove the other's fresh
            // lock; every dotlock user shares that race, and the fcntl lock still holds.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if is_stale(&lock) && fs::remove_file(&lock).is_ok() {
                    continue;
                }
            }
            Err(e) => {
                return Err(io_temp(
                    &format!("cannot create {}", lock.display()),
                    &e,
                    MAILBOX_UNAVAILABLE,
                ))
            }
        }
        if Instant::now() >= deadline {
            return Err(Outcome::temporary(
                MAILBOX_UNAVAILABLE,
                format!("mailbox {} locked ({} exists)", path.display(), lock.display()),
            ));
        }
        thread::sleep(LOCK_RETRY);
    }
}

fn is_stale(lock: &Path) -> bool {
    fs::symlink_metadata(lock)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > STALE_LOCK)
}

/// `From SENDER DATE`, the mbox separator; MAILER-DAEMON for the null sender, as
/// sendmail and Postfix write it. White space and controls in the address would
/// confuse readers that split the line, so they become `_`.
fn from_line(sender: &str, now: u64) -> Vec<u8> {
    let who: String = if sender.is_empty() {
        "MAILER-DAEMON".to_owned()
    } else {
        sender
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    };
    format!("From {who} {}\n", clock::asctime(now)).into_bytes()
}

fn append_entry(
    file: &File,
    from_line: &[u8],
    prefix: &[u8],
    message: &mut dyn Read,
) -> Result<(), CopyError> {
    let mut out = BufWriter::with_capacity(COPY_BUF, file);
    out.write_all(from_line).map_err(CopyError::Write)?;
    let mut quoted = FromQuoter::new(&mut out);
    quoted.write_all(prefix).map_err(CopyError::Write)?;
    copy_message(message, &mut quoted)?;
    quoted.finish().map_err(CopyError::Write)?;
    out.flush().map_err(CopyError::Write)
}

/// Streams message text into an mbox, quoting the mboxrd way: a line matching
/// `^>*From ` gets one more `>`. mboxrd readers strip one and get the original
/// back; mboxo readers never see a false separator. `finish` ends the text with a
/// newline if it lacks one and adds the blank line that separates entries.
struct FromQuoter<W: Write> {
    out: W,
    /// At the start of a line, still deciding whether it needs quoting.
    at_start: bool,
    /// '>' characters seen at the start of this line.
    gts: usize,
    /// Bytes of "From " matched after them.
    matched: usize,
    last: Option<u8>,
}

const FROM_: &[u8] = b"From ";

impl<W: Write> FromQuoter<W> {
    fn new(out: W) -> FromQuoter<W> {
        FromQuoter {
            out,
            at_start: true,
            gts: 0,
            matched: 0,
            last: None,
        }
    }

    /// Write the held-back start of a line unchanged.
    fn release(&mut self) -> io::Result<()> {
        for _ in 0..self.gts {
            self.out.write_all(b">")?;
        }
        self.out
            .write_all(FROM_.get(..self.matched).unwrap_or_default())?;
        self.at_start = false;
        self.gts = 0;
        self.matched = 0;
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        if self.at_start && (self.gts > 0 || self.matched > 0) {
            self.release()?;
        }
        if self.last != Some(b'\n') {
            self.out.write_all(b"\n")?;
        }
        self.out.write_all(b"\n")
    }
}

impl<W: Write> Write for FromQuoter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.at_start {
                let Some((&b, tail)) = rest.split_first() else {
                    break;
                };
                if self.matched == 0 && b == b'>' {
                    self.gts += 1;
                    rest = tail;
                } else if FROM_.get(self.matched) == Some(&b) {
                    self.matched += 1;
                    rest = tail;
                    if self.matched == FROM_.len() {
                        self.out.write_all(b">")?;
                        self.release()?;
                    }
                } else {
                    // Not a From_ line: what was held back goes out as it was, and
                    // this byte is ordinary text (perhaps the line's end).
                    self.release()?;
                }
            } else {
                match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        let (line, tail) = rest.split_at(i + 1);
                        self.out.write_all(line)?;
                        self.at_start = true;
                        rest = tail;
                    }
                    None => {
                        self.out.write_all(rest)?;
                        rest = &[];
                    }
                }
            }
        }
        if let Some(&b) = buf.last() {
            self.last = Some(b);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

// ---------------------------------------------------------------------------
// Pipes (`|command` in aliases(5))

/// The whole environment of a command: nothing of ternd's leaks in. The names are
/// Postfix local(8)'s, which .forward and alias programs already expect.
fn pipe_env(d: &Delivery) -> Vec<(&'static str, String)> {
    let (local, domain) = d.recipient.rsplit_once('@').unwrap_or((d.recipient.as_str(), ""));
    vec![
        ("SENDER", d.sender.clone()),
        ("RECIPIENT", d.recipient.clone()),
        ("LOCAL", local.to_owned()),
        ("DOMAIN", domain.to_owned()),
        ("HOME", d.home.to_string_lossy().into_owned()),
        ("USER", d.user_name.clone()),
        ("LOGNAME", d.user_name.clone()),
        ("SHELL", "/bin/sh".to_owned()),
        ("PATH", SAFE_PATH.to_owned()),
    ]
}

/// Run `/bin/sh -c COMMAND` in the user's home directory (else /, like sendmail's
/// prog mailer), the copy on its stdin. Exit 0 delivers; EX_TEMPFAIL (75) and
/// signals are temporary; any other status is permanent (sysexits.h, as sendmail).
fn deliver_pipe(
    command: &str,
    env: &[(&'static str, String)],
    home: &Path,
    prefix: Vec<u8>,
    message: Box<dyn Read + Send>,
    timeout: Duration,
) -> Outcome {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped());
    let in_home = home.is_absolute() && home.is_dir();
    cmd.current_dir(if in_home { home } else { Path::new("/") });
    let spawned = match spawn_captured(&mut cmd) {
        // The home directory may exist but not be searchable by this user.
        Err(_) if in_home => spawn_captured(cmd.current_dir("/")),
        other => other,
    };
    let (child, output) = match spawned {
        Ok(x) => x,
        Err(e) => return Outcome::temporary(SYSTEM_ERROR, format!("cannot run command: {e}")),
    };
    drop(cmd);
    let ran = supervise(child, output, Some((prefix, message)), timeout);
    pipe_outcome(&ran, timeout)
}

fn pipe_outcome(ran: &Ran, timeout: Duration) -> Outcome {
    if let Some(e) = &ran.feed_error {
        return Outcome::temporary(SYSTEM_ERROR, format!("cannot read message: {e}"));
    }
    let status = match &ran.exit {
        Exit::Status(s) => *s,
        Exit::TimedOut => {
            return Outcome::temporary(SYSTEM_ERROR, format!("command timed out after {timeout:?}"))
        }
        Exit::Failed(e) => return Outcome::temporary(SYSTEM_ERROR, format!("command: {e}")),
    };
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome::delivered("delivered to command"),
        (Some(c), _) if c == i32::from(EX_TEMPFAIL) => Outcome::temporary(
            SYSTEM_ERROR,
            with_output(format!("command deferred with status {c}"), &ran.output),
        ),
        (Some(c), _) => Outcome::permanent(
            COMMAND_FAILED,
            with_output(format!("command died with status {c}"), &ran.output),
        ),
        (None, sig) => Outcome::temporary(
            SYSTEM_ERROR,
            with_output(
                format!("command killed by signal {}", sig.unwrap_or(0)),
                &ran.output,
            ),
        ),
    }
}

/// `what: first line of output`, or just `what` when there was none.
fn with_output(what: String, output: &[u8]) -> String {
    match first_line(output) {
        Some(line) => format!("{what}: {line}"),
        None => what,
    }
}

/// The first non-blank line of a process's output, trimmed to one printable line.
fn first_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(one_line(line).chars().take(DETAIL_LIMIT).collect())
}

fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

// ---------------------------------------------------------------------------
// Running a child process with a time limit

/// How a supervised process ended.
#[derive(Debug)]
enum Exit {
    Status(ExitStatus),
    /// Ran past its time and was killed with its process group.
    TimedOut,
    /// Waiting for it failed; it was killed.
    Failed(String),
}

#[derive(Debug)]
struct Ran {
    exit: Exit,
    /// The first OUTPUT_LIMIT bytes of stdout and stderr together.
    output: Vec<u8>,
    /// Reading the message to feed the process failed (it was killed).
    feed_error: Option<io::Error>,
}

/// Spawn with stdout and stderr on one pipe, leading a new process group so a
/// timeout can kill everything it started.
fn spawn_captured(cmd: &mut Command) -> io::Result<(Child, io::PipeReader)> {
    let (reader, writer) = io::pipe()?;
    cmd.stdout(writer.try_clone()?).stderr(writer).process_group(0);
    let spawned = cmd.spawn();
    // The Command keeps its Stdio until replaced or dropped: close our copies of the
    // write end now, or the reader would never see EOF.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    Ok((spawned?, reader))
}

/// Read all of `output`, keeping the first OUTPUT_LIMIT bytes: the process must
/// never block on a full pipe, however much it writes.
fn drain(mut output: io::PipeReader, keep: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 8192];
    loop {
        match output.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let mut kept = keep.lock().unwrap_or_else(|p| p.into_inner());
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Write the prefix and the message to a command's stdin. Write errors (EPIPE: the
/// command exited without reading everything) are not failures — its exit status
/// decides; a read error is.
fn feed(mut stdin: File, prefix: &[u8], mut message: Box<dyn Read + Send>) -> io::Result<()> {
    if stdin.write_all(prefix).is_err() {
        return Ok(());
    }
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match message.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if stdin.write_all(buf.get(..n).unwrap_or_default()).is_err() {
            return Ok(());
        }
    }
}

/// Feed the process (if asked), collect its output, wait for it up to `timeout`;
/// then kill its process group. Only this thread reaps the child, so a kill can
/// never hit a recycled process id.
///
/// The feeding thread writes to a duplicate of the stdin pipe while this thread holds
/// the original: the process sees EOF only once the whole message went through, so
/// a spool read error (the process is killed) can never look like a short message.
fn supervise(
    mut child: Child,
    output: io::PipeReader,
    feed_with: Option<(Vec<u8>, Box<dyn Read + Send>)>,
    timeout: Duration,
) -> Ran {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (drained_tx, drained_rx) = mpsc::channel::<()>();
    let keep = Arc::clone(&kept);
    // If the thread cannot start, the reader is dropped and the process's writes
    // fail: it runs on, only its output is lost.
    let _ = thread::Builder::new()
        .name("local-output".to_owned())
        .spawn(move || {
            drain(output, &keep);
            let _ = drained_tx.send(());
        });

    let mut feed_error = None;
    let mut held_stdin: Option<OwnedFd> = None;
    let mut fed_rx = None;
    if let Some((prefix, message)) = feed_with {
        let started = child
            .stdin
            .take()
            .map(OwnedFd::from)
            .ok_or_else(|| io::Error::other("no stdin pipe"))
            .and_then(|fd| Ok((fd.try_clone()?, fd)))
            .and_then(|(dup, fd)| {
                let (tx, rx) = mpsc::channel();
                thread::Builder::new()
                    .name("local-feed".to_owned())
                    .spawn(move || {
                        let _ = tx.send(feed(File::from(dup), &prefix, message));
                    })
                    .map(|_| (fd, rx))
            });
        match started {
            Ok((fd, rx)) => {
                held_stdin = Some(fd);
                fed_rx = Some(rx);
            }
            Err(e) => feed_error = Some(e),
        }
    }

    let deadline = deadline_after(timeout);
    let mut step = Duration::from_millis(2);
    let exit = loop {
        if feed_error.is_some() {
            break kill_and_reap(&mut child, Exit::Failed("feeding the message failed".to_owned()));
        }
        if let Some(rx) = &fed_rx {
            match rx.try_recv() {
                Ok(Ok(())) => {
                    // All written: now let the process see EOF.
                    held_stdin = None;
                    fed_rx = None;
                }
                Ok(Err(e)) => {
                    feed_error = Some(e);
                    continue;
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    feed_error = Some(io::Error::other("the feeding thread died"));
                    continue;
                }
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break Exit::Status(status),
            Ok(None) => {}
            Err(e) => break kill_and_reap(&mut child, Exit::Failed(format!("cannot wait: {e}"))),
        }
        let now = Instant::now();
        if now >= deadline {
            break kill_and_reap(&mut child, Exit::TimedOut);
        }
        thread::sleep(step.min(deadline - now));
        step = (step * 2).min(Duration::from_millis(50));
    };
    drop(held_stdin);
    // Output after exit: wait briefly for EOF; a background process holding the pipe
    // must not hold up the delivery.
    let _ = drained_rx.recv_timeout(DRAIN_GRACE);
    let output = kept.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ran {
        exit,
        output,
        feed_error,
    }
}

/// `timeout` from now; a time limit too large for the clock is a very long one.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(u64::from(u32::MAX))))
        .unwrap_or(now)
}

fn kill_and_reap(child: &mut Child, why: Exit) -> Exit {
    let _ = sys::kill_process_group(child.id());
    let _ = child.kill();
    let _ = child.wait();
    why
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Maildir(p) => write!(f, "maildir {}", p.display()),
            Target::Mbox(p) => write!(f, "mbox {}", p.display()),
            Target::Pipe(c) => write!(f, "|{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::Cursor;
    use std::os::unix::fs::PermissionsExt;

    const BODY: &[u8] =
        b"Received: from x by mx.test; Mon, 23 Nov 2026 14:08:39 +0000\nSubject: hi\n\nHello.\n";
    const PREFIX: &[u8] = b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.test\n";

    fn user(home: &Path) -> Passwd {
        let (_, euid) = sys::uids();
        Passwd {
            name: "bob".to_owned(),
            uid: euid,
            gid: 0,
            home: home.to_owned(),
            shell: "/bin/sh".to_owned(),
            gecos: String::new(),
        }
    }

    fn delivery(target: Target, home: &Path) -> Delivery {
        Delivery {
            target,
            sender: "alice@example.org".to_owned(),
            recipient: "bob@example.test".to_owned(),
            hostname: "mx.test".to_owned(),
            pipe_timeout: Duration::from_secs(10),
            user_name: "bob".to_owned(),
            home: home.to_owned(),
            owner: None,
            lock_wait: Duration::from_millis(300),
        }
    }

    /// A job for `deliver`, with the message written to DIR/msg.
    fn job(dir: &Path, target: Target, body: &[u8]) -> Job {
        let message = dir.join("msg");
        fs::write(&message, body).expect("write message");
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

    fn here(d: &Delivery, body: &[u8]) -> Outcome {
        deliver_here(d, Box::new(Cursor::new(body.to_vec())))
    }

    fn with_prefix(body: &[u8]) -> Vec<u8> {
        [PREFIX, body].concat()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).expect("stat").permissions().mode() & 0o7777
    }

    /// Yields `good` bytes of 'x' lines, then fails.
    struct FailingReader {
        good: usize,
    }

    impl Read for FailingReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.good == 0 {
                return Err(io::Error::other("injected read error"));
            }
            let n = buf.len().min(self.good);
            for (i, b) in buf.iter_mut().take(n).enumerate() {
                *b = if i % 64 == 63 { b'\n' } else { b'x' };
            }
            self.good -= n;
            Ok(n)
        }
    }

    /// Hands out one byte per read, to cross every chunk boundary.
    struct Trickle(Vec<u8>, usize);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.get(self.1), buf.first_mut()) {
                (Some(&b), Some(slot)) => {
                    *slot = b;
                    self.1 += 1;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

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

    // --- mailbox_target -----------------------------------------------------

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
    fn mailbox_template_expansion() {
        let u = user(Path::new("/home/bob"));
        assert_eq!(
            mailbox_target("/var/mail/%u", &u),
            Target::Mbox("/var/mail/bob".into())
        );
        assert_eq!(
            mailbox_target("~/Maildir/", &u),
            Target::Maildir("/home/bob/Maildir/".into())
        );
        assert_eq!(
            mailbox_target("~/mbox", &u),
            Target::Mbox("/home/bob/mbox".into())
        );
        assert_eq!(
            mailbox_target("/srv/mail/%u/", &u),
            Target::Maildir("/srv/mail/bob/".into())
        );
        assert_eq!(
            mailbox_target("/m/%%u-%u%x%", &u),
            Target::Mbox("/m/%u-bob%x%".into())
        );
        // Only a leading ~ means home.
        assert_eq!(mailbox_target("/m/~%u", &u), Target::Mbox("/m/~bob".into()));
        let root = user(Path::new("/"));
        assert_eq!(
            mailbox_target("~/Maildir/", &root),
            Target::Maildir("/Maildir/".into())
        );
    }

    // --- Maildir ------------------------------------------------------------

    #[test]
    fn maildir_delivery_lands_in_new_with_exact_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = dir.path().join("Maildir");
        let mut j = job(dir.path(), Target::Maildir(md.clone()), BODY);
        j.hostname = "mx/a:b".to_owned();
        assert_eq!(deliver(&j), Outcome::delivered("delivered to maildir"));
        let new = names(&md.join("new"));
        assert_eq!(new.len(), 1);
        assert!(names(&md.join("tmp")).is_empty());
        assert!(names(&md.join("cur")).is_empty());
        let name = new.first().expect("one file");
        assert!(name.ends_with(".mx\\057a\\072b"), "{name}");
        assert!(name.contains(&format!("P{}Q", std::process::id())), "{name}");
        assert!(name.contains('R') && name.contains(".M"), "{name}");
        let file = md.join("new").join(name);
        assert_eq!(fs::read(&file).expect("read"), with_prefix(BODY));
        assert_eq!(mode(&file), 0o600);
        for d in ["", "tmp", "new", "cur"] {
            assert_eq!(mode(&md.join(d)), 0o700, "{d}");
        }
    }

    #[test]
    fn maildir_null_sender() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = dir.path().join("Maildir");
        let mut d = delivery(Target::Maildir(md.clone()), dir.path());
        d.sender = String::new();
        assert_eq!(here(&d, b"x\n"), Outcome::delivered("delivered to maildir"));
        let new = names(&md.join("new"));
        let text = fs::read(md.join("new").join(new.first().expect("file"))).expect("read");
        assert_eq!(text, b"Return-Path: <>\nDelivered-To: bob@example.test\nx\n");
    }

    #[test]
    fn maildir_names_are_unique_over_1000_deliveries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = dir.path().join("Maildir");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let md = md.clone();
                let home = dir.path().to_owned();
                thread::spawn(move || {
                    let d = delivery(Target::Maildir(md), &home);
                    (0..250).all(|_| here(&d, b"x\n") == Outcome::delivered("delivered to maildir"))
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().expect("thread"));
        }
        assert_eq!(names(&md.join("new")).len(), 1000);
        assert!(names(&md.join("tmp")).is_empty());
        let many: HashSet<String> = (0..1000).map(|_| maildir_name("h")).collect();
        assert_eq!(many.len(), 1000);
    }

    #[test]
    fn maildir_failures_are_temporary_and_leave_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A missing parent is created; a parent that is a file cannot be.
        let d = delivery(Target::Maildir(dir.path().join("no/such/Maildir")), dir.path());
        assert!(matches!(here(&d, BODY), Outcome::Delivered { .. }));
        fs::write(dir.path().join("plain"), b"").expect("write");
        let d = delivery(Target::Maildir(dir.path().join("plain/Maildir")), dir.path());
        let o = here(&d, BODY);
        assert_eq!(o.status(), MAILBOX_UNAVAILABLE, "{o:?}");
        assert!(o.detail().contains("cannot create maildir"), "{o:?}");
        // A file where the Maildir should be.
        fs::write(dir.path().join("file"), b"").expect("write");
        let d = delivery(Target::Maildir(dir.path().join("file")), dir.path());
        assert!(matches!(here(&d, BODY), Outcome::Temporary { .. }));
        // A read error half-way: nothing in tmp/ or new/.
        let md = dir.path().join("Maildir");
        let o = deliver_maildir(&md, "h", PREFIX, &mut FailingReader { good: 200_000 });
        assert_eq!(o.status(), SYSTEM_ERROR, "{o:?}");
        assert!(o.detail().contains("injected read error"), "{o:?}");
        assert!(names(&md.join("tmp")).is_empty());
        assert!(names(&md.join("new")).is_empty());
    }

    // --- mbox ---------------------------------------------------------------

    fn quote(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut q = FromQuoter::new(&mut out);
        q.write_all(input).expect("write");
        q.finish().expect("finish");
        out
    }

    fn quote_trickled(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut q = FromQuoter::new(&mut out);
        copy_message(&mut Trickle(input.to_vec(), 0), &mut q).expect("copy");
        q.finish().expect("finish");
        out
    }

    #[test]
    fn from_lines_are_quoted_mboxrd_style() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"From x\n", b">From x\n\n"),
            (b">From x\n", b">>From x\n\n"),
            (b">>>From x\n", b">>>>From x\n\n"),
            (b"a\nFrom x\nb\n", b"a\n>From x\nb\n\n"),
            (b"From\n", b"From\n\n"),
            (b"Fromage\n", b"Fromage\n\n"),
            (b"> From x\n", b"> From x\n\n"),
            (b">>x\n", b">>x\n\n"),
            (b"a From x\n", b"a From x\n\n"),
            (b"from x\n", b"from x\n\n"),
            (b"\nFrom \n", b"\n>From \n\n"),
            (b"no newline", b"no newline\n\n"),
            (b"ends in From", b"ends in From\n\n"),
            (b"x\n>>", b"x\n>>\n\n"),
            (b"x\nFrom ", b"x\n>From \n\n"),
            (b"x\n", b"x\n\n"),
        ];
        for (input, want) in cases {
            assert_eq!(
                String::from_utf8_lossy(&quote(input)),
                String::from_utf8_lossy(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(quote_trickled(input), *want);
        }
    }

    #[test]
    fn from_line_format() {
        let line = from_line("alice@example.org", 1_795_442_919);
        let text = String::from_utf8(line).expect("utf8");
        assert!(text.starts_with("From alice@example.org "), "{text}");
        assert!(text.ends_with(" 2026\n"), "{text}");
        assert_eq!(text.len(), "From alice@example.org ".len() + 24 + 1);
        assert!(String::from_utf8_lossy(&from_line("", 0)).starts_with("From MAILER-DAEMON "));
        assert!(String::from_utf8_lossy(&from_line("\"a b\"@x", 0)).starts_with("From \"a_b\"@x "));
    }

    #[test]
    fn mbox_entries_are_separated_and_quoted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mbox = dir.path().join("bob");
        let j = job(
            dir.path(),
            Target::Mbox(mbox.clone()),
            b"Subject: one\n\nFrom me\n>From you\n",
        );
        assert_eq!(deliver(&j), Outcome::delivered("delivered to mbox"));
        assert_eq!(mode(&mbox), 0o600);
        let mut d = delivery(Target::Mbox(mbox.clone()), dir.path());
        d.sender = String::new();
        assert_eq!(
            here(&d, b"Subject: two\n\nno newline"),
            Outcome::delivered("delivered to mbox")
        );
        assert!(!dir.path().join("bob.lock").exists());

        let text = String::from_utf8(fs::read(&mbox).expect("read")).expect("utf8");
        let lines: Vec<&str> = text.split('\n').collect();
        let date = clock::asctime(0);
        let from1 = lines.first().expect("line");
        assert!(from1.starts_with("From alice@example.org "), "{text}");
        assert_eq!(from1.len(), "From alice@example.org ".len() + date.len());
        let from2 = lines.get(8).expect("line");
        assert!(from2.starts_with("From MAILER-DAEMON "), "{text}");
        assert_eq!(
            lines.get(1..8).expect("entry 1"),
            [
                "Return-Path: <alice@example.org>",
                "Delivered-To: bob@example.test",
                "Subject: one",
                "",
                ">From me",
                ">>From you",
                "",
            ]
        );
        assert_eq!(
            lines.get(9..).expect("entry 2"),
            [
                "Return-Path: <>",
                "Delivered-To: bob@example.test",
                "Subject: two",
                "",
                "no newline",
                "",
                "",
            ]
        );
    }

    #[test]
    fn mbox_symlink_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious\n").expect("write");
        let mbox = dir.path().join("bob");
        std::os::unix::fs::symlink(&victim, &mbox).expect("symlink");
        let o = here(&delivery(Target::Mbox(mbox.clone()), dir.path()), BODY);
        assert_eq!(o.status(), MAILBOX_UNAVAILABLE, "{o:?}");
        assert!(matches!(o, Outcome::Temporary { .. }));
        assert_eq!(
            o.detail(),
            format!("mailbox {} is a symlink, refusing", mbox.display())
        );
        assert_eq!(fs::read(&victim).expect("read"), b"precious\n");
        // A dangling symlink is not followed to create its target either.
        let mbox2 = dir.path().join("carol");
        std::os::unix::fs::symlink(dir.path().join("created"), &mbox2).expect("symlink");
        let o = here(&delivery(Target::Mbox(mbox2), dir.path()), BODY);
        assert!(o.detail().contains("is a symlink, refusing"), "{o:?}");
        assert!(!dir.path().join("created").exists());
    }

    #[test]
    fn mbox_odd_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("dir");
        fs::create_dir(&sub).expect("mkdir");
        let o = here(&delivery(Target::Mbox(sub), dir.path()), BODY);
        assert!(o.detail().contains("is not a regular file, refusing"), "{o:?}");
        assert_eq!(o.status(), MAILBOX_UNAVAILABLE);

        let linked = dir.path().join("linked");
        fs::write(&linked, b"").expect("write");
        fs::hard_link(&linked, dir.path().join("other")).expect("link");
        let o = here(&delivery(Target::Mbox(linked), dir.path()), BODY);
        assert!(o.detail().contains("has 2 hard links, refusing"), "{o:?}");

        let fifo = dir.path().join("fifo");
        let made = Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let o = here(&delivery(Target::Mbox(fifo), dir.path()), BODY);
            assert!(o.detail().contains("is not a regular file, refusing"), "{o:?}");
        }

        assert_eq!(
            here(&delivery(Target::Mbox("/dev/null".into()), dir.path()), BODY),
            Outcome::delivered("discarded to /dev/null")
        );
    }

    #[test]
    fn mbox_is_truncated_back_after_a_failed_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mbox = dir.path().join("bob");
        fs::write(&mbox, b"From a Thu Jan  1 00:00:00 1970\nold\n\n").expect("write");
        let opts = MboxOptions {
            sender: "alice@example.org",
            owner: None,
            lock_wait: Duration::from_millis(300),
        };
        // 200 KB passes the 64 KB write buffer, so part of it reached the file.
        let o = deliver_mbox(&mbox, &opts, PREFIX, &mut FailingReader { good: 200_000 });
        assert_eq!(o.status(), SYSTEM_ERROR, "{o:?}");
        assert!(
            o.detail().contains("cannot read message: injected read error"),
            "{o:?}"
        );
        assert_eq!(fs::metadata(&mbox).expect("stat").len(), 37);
        assert_eq!(
            fs::read(&mbox).expect("read"),
            b"From a Thu Jan  1 00:00:00 1970\nold\n\n"
        );
        assert!(!dir.path().join("bob.lock").exists());

        // The helper itself.
        let f = OpenOptions::new().append(true).open(&mbox).expect("open");
        (&f).write_all(b"partial").expect("write");
        truncate_back(&f, 5).expect("truncate");
        assert_eq!(fs::read(&mbox).expect("read"), b"From ");
    }

    #[test]
    fn stale_dotlock_is_removed_fresh_one_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mbox = dir.path().join("bob");
        let lock = dir.path().join("bob.lock");
        let f = File::create(&lock).expect("lock");
        f.set_modified(SystemTime::now() - Duration::from_secs(600))
            .expect("mtime");
        drop(f);
        let d = delivery(Target::Mbox(mbox.clone()), dir.path());
        assert_eq!(here(&d, BODY), Outcome::delivered("delivered to mbox"));
        assert!(!lock.exists());

        File::create(&lock).expect("lock");
        let start = Instant::now();
        let o = here(&d, BODY);
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(o.status(), MAILBOX_UNAVAILABLE, "{o:?}");
        assert!(o.detail().contains("locked"), "{o:?}");
        // Someone else's lock stays.
        assert!(lock.exists());
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn fcntl_lock_is_honoured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mbox = dir.path().join("bob");
        fs::write(&mbox, b"").expect("create");
        let holder = OpenOptions::new().write(true).open(&mbox).expect("open");
        assert!(sys::try_lock_write(holder.as_raw_fd()).expect("lock"));
        let d = delivery(Target::Mbox(mbox.clone()), dir.path());
        let o = here(&d, BODY);
        assert_eq!(
            o,
            Outcome::temporary(MAILBOX_UNAVAILABLE, format!("mailbox {} locked", mbox.display()))
        );
        assert!(!dir.path().join("bob.lock").exists());
        assert_eq!(fs::read(&mbox).expect("read"), b"");
        drop(holder);
        assert_eq!(here(&d, BODY), Outcome::delivered("delivered to mbox"));
    }

    #[test]
    fn mbox_owned_by_someone_else_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mbox = dir.path().join("bob");
        fs::write(&mbox, b"").expect("create");
        let (_, euid) = sys::uids();
        if euid != 0 {
            return; // only root can give the file away
        }
        std::os::unix::fs::chown(&mbox, Some(12345), None).expect("chown");
        let o = here(&delivery(Target::Mbox(mbox.clone()), dir.path()), BODY);
        assert!(o.detail().contains("is owned by uid 12345, refusing"), "{o:?}");
        // ...unless it belongs to the user the delivery is for.
        let mut d = delivery(Target::Mbox(mbox), dir.path());
        d.owner = Some(12345);
        assert_eq!(here(&d, BODY), Outcome::delivered("delivered to mbox"));
    }

    #[test]
    fn root_controlled_directories() {
        assert!(!root_controlled(Path::new("relative")));
        assert!(!root_controlled(Path::new("/var/../tmp")));
        let dir = tempfile::tempdir().expect("tempdir");
        let open = dir.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
        fs::create_dir(open.join("sub")).expect("mkdir");
        // A world-writable, non-sticky ancestor lets anyone swap `sub`.
        assert!(!root_controlled(&open.join("sub")));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&open, &link).expect("symlink");
        assert!(!root_controlled(&link));
        assert!(!root_controlled(&dir.path().join("missing")));
        if fs::metadata("/").is_ok_and(|m| m.uid() == 0) {
            assert!(root_controlled(Path::new("/")));
        }
    }

    // --- pipes --------------------------------------------------------------

    #[test]
    fn pipe_delivers_the_copy_on_stdin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let cmd = format!("cat > '{}'", out.display());
        let j = job(dir.path(), Target::Pipe(cmd), BODY);
        assert_eq!(deliver(&j), Outcome::delivered("delivered to command"));
        assert_eq!(fs::read(&out).expect("read"), with_prefix(BODY));
    }

    #[test]
    fn pipe_exit_statuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = |cmd: &str| here(&delivery(Target::Pipe(cmd.to_owned()), dir.path()), BODY);
        assert_eq!(run("exit 0"), Outcome::delivered("delivered to command"));
        assert_eq!(
            run("echo try later; exit 75"),
            Outcome::temporary(SYSTEM_ERROR, "command deferred with status 75: try later")
        );
        assert_eq!(
            run("cat >/dev/null; echo no such list >&2; exit 1"),
            Outcome::permanent(COMMAND_FAILED, "command died with status 1: no such list")
        );
        assert_eq!(
            run("echo; echo '  first  '; echo second; exit 2"),
            Outcome::permanent(COMMAND_FAILED, "command died with status 2: first")
        );
        assert_eq!(
            run("exit 67"),
            Outcome::permanent(COMMAND_FAILED, "command died with status 67")
        );
        assert_eq!(
            run("kill -9 $$"),
            Outcome::temporary(SYSTEM_ERROR, "command killed by signal 9")
        );
        let o = run("/no/such/program");
        assert_eq!(o.status(), COMMAND_FAILED, "{o:?}");
        assert!(o.detail().starts_with("command died with status 127: "), "{o:?}");
    }

    #[test]
    fn pipe_output_is_bounded_and_drained() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 1 MB of output must not block the command; the detail stays short.
        let d = delivery(
            Target::Pipe("head -c 1000000 /dev/zero | tr '\\0' x; exit 3".to_owned()),
            dir.path(),
        );
        let o = here(&d, BODY);
        assert_eq!(o.status(), COMMAND_FAILED, "{o:?}");
        assert!(o.detail().len() < 300, "{}", o.detail().len());
    }

    #[test]
    fn pipe_timeout_kills_the_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("marker");
        let mut d = delivery(
            Target::Pipe(format!("(sleep 1; touch '{}') & sleep 5", marker.display())),
            dir.path(),
        );
        d.pipe_timeout = Duration::from_millis(200);
        let start = Instant::now();
        let o = here(&d, BODY);
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
        assert_eq!(
            o,
            Outcome::temporary(SYSTEM_ERROR, "command timed out after 200ms")
        );
        // The background child died with the group.
        thread::sleep(Duration::from_millis(1200));
        assert!(!marker.exists());
    }

    #[test]
    fn pipe_that_ignores_its_input_does_not_deadlock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = vec![b'x'; 4 << 20];
        for cmd in ["exit 0", "head -c 10 >/dev/null", "exec 0<&-; sleep 0.1"] {
            let d = delivery(Target::Pipe(cmd.to_owned()), dir.path());
            let start = Instant::now();
            assert_eq!(
                here(&d, &big),
                Outcome::delivered("delivered to command"),
                "{cmd}"
            );
            assert!(start.elapsed() < Duration::from_secs(5), "{cmd}");
        }
        // A background process holding stdout open does not hold up the outcome.
        let d = delivery(Target::Pipe("sleep 3 & exit 0".to_owned()), dir.path());
        let start = Instant::now();
        assert_eq!(here(&d, BODY), Outcome::delivered("delivered to command"));
        assert!(
            start.elapsed() < Duration::from_millis(2500),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn pipe_read_error_is_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let d = delivery(Target::Pipe(format!("cat > '{}'", out.display())), dir.path());
        let o = deliver_pipe(
            "cat >/dev/null; exit 0",
            &pipe_env(&d),
            dir.path(),
            PREFIX.to_vec(),
            Box::new(FailingReader { good: 100_000 }),
            Duration::from_secs(10),
        );
        assert_eq!(
            o,
            Outcome::temporary(SYSTEM_ERROR, "cannot read message: injected read error")
        );
    }

    #[test]
    fn pipe_environment_is_clean() {
        let home = tempfile::tempdir().expect("tempdir");
        let out = home.path().join("env");
        let d = delivery(
            Target::Pipe(format!("env > '{}'; pwd >> '{}'", out.display(), out.display())),
            home.path(),
        );
        assert_eq!(here(&d, BODY), Outcome::delivered("delivered to command"));
        let text = fs::read_to_string(&out).expect("read");
        let lines: HashSet<&str> = text.lines().collect();
        for want in [
            "SENDER=alice@example.org".to_owned(),
            "RECIPIENT=bob@example.test".to_owned(),
            "LOCAL=bob".to_owned(),
            "DOMAIN=example.test".to_owned(),
            format!("HOME={}", home.path().display()),
            "USER=bob".to_owned(),
            "LOGNAME=bob".to_owned(),
            "SHELL=/bin/sh".to_owned(),
            "PATH=/usr/bin:/bin".to_owned(),
        ] {
            assert!(lines.contains(want.as_str()), "{want} not in {text}");
        }
        // Nothing of the test runner's environment leaks in; the shell may add PWD etc.
        for line in &lines {
            let name = line.split('=').next().unwrap_or("");
            assert!(
                !name.starts_with("CARGO") && name != "RUST_TEST_THREADS" && name != "TERM",
                "{line}"
            );
        }
        // It ran in the home directory.
        assert_eq!(text.lines().last(), Some(home.path().to_str().expect("utf8")));

        let mut d = delivery(Target::Pipe("exit 0".to_owned()), Path::new("/no/such/home"));
        d.recipient = "postmaster".to_owned();
        d.sender = String::new();
        let env = pipe_env(&d);
        assert!(env.contains(&("LOCAL", "postmaster".to_owned())));
        assert!(env.contains(&("DOMAIN", String::new())));
        assert!(env.contains(&("SENDER", String::new())));
        // A home that does not exist: run in / instead.
        assert_eq!(here(&d, BODY), Outcome::delivered("delivered to command"));
    }

    #[test]
    fn pipe_job_as_a_named_user_in_process() {
        let home = tempfile::tempdir().expect("tempdir");
        let out = home.path().join("who");
        let mut j = job(
            home.path(),
            Target::Pipe(format!("echo $USER $HOME > '{}'", out.display())),
            BODY,
        );
        j.user = Some(user(home.path()));
        assert_eq!(deliver_in_process(&j), Outcome::delivered("delivered to command"));
        assert_eq!(
            fs::read_to_string(&out).expect("read"),
            format!("bob {}\n", home.path().display())
        );
    }

    // --- the child protocol ---------------------------------------------------

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
            let d = parse_child_args(args.get(1..).expect("rest")).expect("parse");
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
        assert!(ok(&["1", "mbox", "/m", "", "r", "h", "10", "u", "/"]).is_ok());
        assert!(ok(&["2", "mbox", "/m", "", "r", "h", "10", "u", "/"]).is_err());
        assert!(ok(&["1", "file", "/m", "", "r", "h", "10", "u", "/"]).is_err());
        assert!(ok(&["1", "mbox", "/m", "", "r", "h", "soon", "u", "/"]).is_err());
        assert!(ok(&["1", "mbox", "/m"]).is_err());
    }

    #[test]
    fn child_results_become_outcomes() {
        let st = |c| Exit::Status(status_of(c));
        assert_eq!(
            child_outcome(&ran(st(0), "2.0.0 delivered to mbox\n")),
            Outcome::delivered("delivered to mbox")
        );
        assert_eq!(child_outcome(&ran(st(0), "")), Outcome::delivered("delivered"));
        assert_eq!(
            child_outcome(&ran(st(75), "4.2.2 mailbox full: cannot write /m: No space\n")),
            Outcome::temporary(MAILBOX_FULL, "mailbox full: cannot write /m: No space")
        );
        assert_eq!(
            child_outcome(&ran(st(69), "5.3.0 command died with status 1: no\n")),
            Outcome::permanent(COMMAND_FAILED, "command died with status 1: no")
        );
        // No bounce without the child's say-so.
        for (code, line) in [
            (64, "4.3.0 local delivery: expected 9 arguments, got 2"),
            (70, "5.3.0 something"),
            (101, "thread 'main' panicked at src/x.rs"),
            (75, "5.3.0 contradiction"),
            (1, ""),
        ] {
            let o = child_outcome(&ran(st(code), line));
            assert!(matches!(o, Outcome::Temporary { .. }), "{code} {line}: {o:?}");
        }
        assert_eq!(
            child_outcome(&ran(st(101), "thread 'main' panicked")),
            Outcome::temporary(
                SYSTEM_ERROR,
                "local delivery exited with status 101: thread 'main' panicked"
            )
        );
        assert_eq!(
            child_outcome(&ran(Exit::Status(ExitStatus::from_raw(9)), "")),
            Outcome::temporary(SYSTEM_ERROR, "local delivery killed by signal 9")
        );
        assert_eq!(
            child_outcome(&ran(Exit::TimedOut, "")),
            Outcome::temporary(SYSTEM_ERROR, "local delivery timed out")
        );

        assert_eq!(exit_code(&Outcome::delivered("x")), 0);
        assert_eq!(exit_code(&Outcome::temporary(MAILBOX_FULL, "x")), EX_TEMPFAIL);
        assert_eq!(
            exit_code(&Outcome::permanent(COMMAND_FAILED, "x")),
            EX_UNAVAILABLE
        );
        assert_eq!(exit_code(&Outcome::permanent(Status(5, 1, 1), "x")), EX_NOUSER);
    }

    #[test]
    fn missing_spool_file_is_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = job(dir.path(), Target::Mbox(dir.path().join("bob")), BODY);
        j.message = dir.path().join("gone");
        let o = deliver(&j);
        assert_eq!(o.status(), SYSTEM_ERROR, "{o:?}");
        assert!(o.detail().starts_with("cannot open message"), "{o:?}");
    }

    #[test]
    fn prefix_cannot_inject_headers() {
        assert_eq!(
            delivery_prefix("a@b\r\nX-Evil: 1", "c@d"),
            b"Return-Path: <a@bX-Evil: 1>\nDelivered-To: c@d\n"
        );
        assert_eq!(Target::Pipe("x".to_owned()).to_string(), "|x");
    }
}
