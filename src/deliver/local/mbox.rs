//! mbox delivery, as mutt, mailx and Dovecot read it: both locks readers use
//! (a dotlock and an fcntl lock), the From_ separator and mboxrd quoting, and
//! a failed append truncated back so a half-written entry never corrupts the
//! mailbox. Who creates a missing mailbox in the mail spool is
//! [`super::mailspool`]'s question.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::copy::{copy_message, CopyError, COPY_BUF};
use crate::clock;
use crate::deliver::outcome::{self, Outcome};
use crate::sys;

/// How long to wait for each of the two mbox locks.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(10);
const LOCK_RETRY: Duration = Duration::from_millis(100);
/// A dotlock older than this was left by a crashed writer (mutt and procmail use
/// the same five minutes).
const STALE_LOCK: Duration = Duration::from_secs(300);

pub(super) struct MboxOptions<'a> {
    /// The envelope sender, for the From_ line.
    pub(super) sender: &'a str,
    /// Besides this process's effective uid, who may own the file.
    pub(super) owner: Option<u32>,
    pub(super) lock_wait: Duration,
}

/// Append one entry: open safely, lock (dotlock and fcntl), write, fsync, unlock.
/// Any failure after writing began truncates the file back to where it ended, so a
/// half-written entry never corrupts the mailbox.
pub(super) fn deliver_mbox(
    path: &Path,
    opts: &MboxOptions<'_>,
    prefix: &[u8],
    message: &mut dyn Read,
) -> Outcome {
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
        Err(e) => return outcome::local_io(&format!("cannot stat {}", path.display()), &e),
    };
    let from_line = from_line(opts.sender, clock::now());
    let result = append_entry(&file, &from_line, prefix, message)
        .and_then(|()| file.sync_all().map_err(CopyError::Write));
    let done = match result {
        Ok(()) => outcome::delivered_locally("delivered to mbox"),
        Err(e) => {
            let failed = e.outcome(path);
            match truncate_back(&file, size) {
                Ok(()) => failed,
                Err(te) => failed.amended(&format!("; cannot truncate it back to {size} bytes: {te}")),
            }
        }
    };
    // Closing the file drops the fcntl lock; then the dotlock goes.
    drop(file);
    drop(lock);
    done
}

/// Undo a partial append.
fn truncate_back(file: &File, size: u64) -> io::Result<()> {
    file.set_len(size)?;
    file.sync_all()
}

/// Open the mailbox for appending the way Postfix's safe_open does: an existing
/// file without O_CREAT, a missing one created 0600 with O_CREAT|O_EXCL, both
/// with O_NOFOLLOW, so no symlink is ever followed and nothing is created
/// anywhere but at `path` (an attacker who may write the spool directory could
/// plant a link to a file of the user's). What O_NOFOLLOW cannot see is
/// checked on the open file: a regular file (not a device or FIFO), with one
/// link (a hard link to someone else's file), that this process or the user owns.
fn open_mbox(path: &Path, owner: Option<u32>) -> Result<File, Outcome> {
    let refuse =
        |why: String| outcome::mailbox_unavailable(format!("mailbox {} {why}, refusing", path.display()));
    let failed = |e: io::Error| match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => refuse("is a symlink".to_owned()),
        Ok(m) if !m.file_type().is_file() => refuse("is not a regular file".to_owned()),
        _ => outcome::mailbox_io(&format!("cannot open mailbox {}", path.display()), &e),
    };
    // O_NONBLOCK: opening a planted FIFO must not hang; regular files ignore it.
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let mut tries = 0;
    let file = loop {
        tries += 1;
        match OpenOptions::new().append(true).custom_flags(flags).open(path) {
            Ok(f) => break f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(e)),
        }
        let created = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(flags)
            .open(path);
        match created {
            Ok(f) => break f,
            // Made by someone else between the two opens: open that one (twice at most).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 3 => {}
            Err(e) => return Err(failed(e)),
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| outcome::mailbox_io(&format!("cannot stat mailbox {}", path.display()), &e))?;
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
                return Err(outcome::mailbox_unavailable(format!(
                    "mailbox {} locked",
                    path.display()
                )))
            }
            Err(e) => {
                return Err(outcome::mailbox_io(
                    &format!("cannot lock mailbox {}", path.display()),
                    &e,
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
                return Err(outcome::mailbox_io(
                    &format!("cannot create {}", lock.display()),
                    &e,
                ))
            }
        }
        if Instant::now() >= deadline {
            return Err(outcome::mailbox_unavailable(format!(
                "mailbox {} locked ({} exists)",
                path.display(),
                lock.display()
            )));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::local::copy::copy_message;
    use crate::deliver::local::deliver;
    use crate::deliver::local::job::Target;
    use crate::deliver::local::testutil::{
        delivered, delivery, here, job, mode, temporary, FailingReader, Trickle, BODY, MAILBOX_UNAVAILABLE,
        PREFIX, SYSTEM_ERROR,
    };
    use std::process::Command;

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
        assert_eq!(deliver(&j), delivered("delivered to mbox"));
        assert_eq!(mode(&mbox), 0o600);
        let mut d = delivery(Target::Mbox(mbox.clone()), dir.path());
        d.sender = String::new();
        assert_eq!(
            here(&d, b"Subject: two\n\nno newline"),
            delivered("delivered to mbox")
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
        assert!(o.is_temporary());
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
        if crate::testskip::tool("mkfifo", &["--version"], "coreutils") {
            let made = Command::new("mkfifo").arg(&fifo).status();
            assert!(made.is_ok_and(|s| s.success()), "mkfifo {fifo:?}");
            let o = here(&delivery(Target::Mbox(fifo), dir.path()), BODY);
            assert!(o.detail().contains("is not a regular file, refusing"), "{o:?}");
        }

        assert_eq!(
            here(&delivery(Target::Mbox("/dev/null".into()), dir.path()), BODY),
            delivered("discarded to /dev/null")
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
        assert_eq!(here(&d, BODY), delivered("delivered to mbox"));
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
            temporary(MAILBOX_UNAVAILABLE, format!("mailbox {} locked", mbox.display()))
        );
        assert!(!dir.path().join("bob.lock").exists());
        assert_eq!(fs::read(&mbox).expect("read"), b"");
        drop(holder);
        assert_eq!(here(&d, BODY), delivered("delivered to mbox"));
    }

    #[test]
    fn mbox_owned_by_someone_else_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mbox = dir.path().join("bob");
        fs::write(&mbox, b"").expect("create");
        if !crate::testskip::root_for("only root can give the file away") {
            return;
        }
        std::os::unix::fs::chown(&mbox, Some(12345), None).expect("chown");
        let o = here(&delivery(Target::Mbox(mbox.clone()), dir.path()), BODY);
        assert!(o.detail().contains("is owned by uid 12345, refusing"), "{o:?}");
        // ...unless it belongs to the user the delivery is for.
        let mut d = delivery(Target::Mbox(mbox), dir.path());
        d.owner = Some(12345);
        assert_eq!(here(&d, BODY), delivered("delivered to mbox"));
    }
}
