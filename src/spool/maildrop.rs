//! The maildrop: how the `sendmail` program hands mail to the daemon, whether or not
//! the daemon runs (Postfix's postdrop → maildrop → pickup).
//!
//! `sendmail` runs as the invoking user (setgid to the `tern` group when installed),
//! so it cannot use the spool's commit protocol: `env/` and `msg/` belong to the
//! daemon's user. It writes one file into `maildrop/` instead — [`deposit`] — and the
//! daemon's queue runner turns each such file into a normally queued message —
//! [`Spool::pickup`] — at start-up, on its periodic rescan, and at once when told so
//! over the control socket.
//!
//! A drop file is the text envelope of `envelope.rs` behind a first line of its own,
//! then an empty line, then the message with LF line ends (the spool's form):
//!
//! ```text
//! maildrop: 1
//! version: 1
//! id: 0193A5F2C41B07E2
//! created: 1732370000
//! sender: alice@example.org
//! protocol: local
//! rcpt: bob@example.net status=pending attempts=0
//!
//! Subject: hi
//! ...
//! ```
//!
//! The envelope text never holds an empty line, so the first one ends it. Who sent the
//! file is not taken from the file: pickup reads its owner (the kernel's record of the
//! uid that created it), so a user cannot claim to be someone else in the Received:
//! header, whatever sender address they give.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{exists, read_dir, sync_dir, Cause, Envelope, QueueId, Spool, SpoolError, CORRUPT, MAILDROP};
use crate::sys;

/// The first line of every drop file; a new format gets a new number.
const MAGIC: &str = "maildrop: 1";
/// Drop files are 0644, which is less open than it looks: only the directory's
/// owner (the daemon's user), its group (sendmail's setgid group, which never
/// reads a drop file) and root may search maildrop/ (mode 1730), so no other user
/// can reach the file at all. The read bit for others is for the daemon: it is
/// neither the submitting user nor, in general, in the file's group (a drop made by
/// root belongs to root's group), and it must read every drop.
const FILE_MODE: u32 = 0o644;
/// The most envelope text pickup reads before giving up on a file (a recipient line
/// is rarely over 1 KiB; this allows tens of thousands).
const MAX_HEADER: u64 = 16 * 1024 * 1024;
/// A temporary drop file (`.ID.tmp`) older than this belongs to a sendmail that died
/// before its rename (the same grace qmail gives its tmp files).
const STALE_TMP: Duration = Duration::from_secs(36 * 3600);

/// Where the maildrop directory of the spool at `root` is.
pub fn dir(root: &Path) -> PathBuf {
    root.join(MAILDROP)
}

/// Put a message into the maildrop atomically and durably: write `maildrop/.ID.tmp`
/// (created exclusively, mode 0644), fsync it, rename it to `maildrop/ID`, and make
/// the rename durable. Returns the drop file's name. On any error nothing is left
/// behind: the temporary file is removed, so a full disk leaves no partial file.
///
/// `env` is the envelope the message will be queued with (its id is replaced at
/// pickup); `body` is the message with LF line ends.
pub fn deposit(root: &Path, env: &Envelope, body: &[u8]) -> Result<String, SpoolError> {
    deposit_named(root, env, body, None)
}

/// `deposit`, named `first` when that name is free (a session has already told its
/// client that id), else by a fresh id.
fn deposit_named(
    root: &Path,
    env: &Envelope,
    body: &[u8],
    first: Option<QueueId>,
) -> Result<String, SpoolError> {
    let mut first = first;
    if env.recipients.is_empty() {
        return Err(SpoolError::other("deposit", &dir(root), "no recipients"));
    }
    let drop_dir = dir(root);
    for _ in 0..super::MAX_ID_TRIES {
        let id = first.take().unwrap_or_else(QueueId::generate);
        let tmp = drop_dir.join(format!(".{id}.tmp"));
        let file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(SpoolError::from_io("create", &tmp, e)),
        };
        let mut env = env.clone();
        env.id = id.clone();
        let result = write_drop(&file, &tmp, &env, body).and_then(|()| {
            let target = drop_dir.join(id.as_str());
            // rename(2) replaces silently; names are unique ids, but never clobber.
            if exists(&target)? {
                return Err(SpoolError::other("rename", &target, "exists"));
            }
            fs::rename(&tmp, &target).map_err(|e| SpoolError::from_io("rename", &tmp, e))?;
            // The rename must be on disk before we exit 0. The directory is mode 1730,
            // so an unprivileged (setgid) sendmail cannot open it to fsync it; syncfs on
            // the file then flushes the filesystem, directory entry included.
            if sync_dir(&drop_dir).is_err() {
                sys::syncfs(file.as_raw_fd()).map_err(|e| SpoolError::from_io("syncfs", &target, e))?;
            }
            Ok(())
        });
        if let Err(e) = result {
            drop(file);
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        return Ok(id.to_string());
    }
    Err(SpoolError::other("create", &drop_dir, "no unused name found"))
}

/// Give the read bit for others to drop files that lack it, so that a daemon about
/// to give up root can read them: sendmail made them 0640 before it made them 0644
/// (see `FILE_MODE`), and one made so by root is readable by root alone. Run by
/// ternd while still root. Each file is opened without following a symlink and
/// changed through its descriptor, so no other file can be made readable this way.
/// Returns how many were changed; errors are per file and only logged.
pub fn open_drops_to_daemon(root: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir(root)) else {
        return 0;
    };
    let mut changed = 0;
    for e in entries.flatten() {
        let path = e.path();
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path);
        let Ok(file) = opened else { continue };
        let Ok(meta) = file.metadata() else { continue };
        if !meta.is_file() || meta.mode() & 0o004 != 0 {
            continue;
        }
        match file.set_permissions(fs::Permissions::from_mode(FILE_MODE)) {
            Ok(()) => changed += 1,
            Err(e) => log::warn!("spool: chmod {}: {e}", path.display()),
        }
    }
    changed
}

/// The spool at `root` as a process that may write only the maildrop sees it
/// (`sendmail -bs` run by an ordinary user): unlike `Spool::open`, nothing is
/// created or probed. Only [`Pending`] and `has_room` are of use through it.
pub fn submission_spool(root: &Path) -> Spool {
    Spool {
        root: root.to_owned(),
        committer: Default::default(),
        sync: Default::default(),
    }
}

/// A message an SMTP session queues through the maildrop (`sendmail -bs`, whose
/// user may not write the queue itself). A drop file begins with the envelope,
/// which is complete only at the end of DATA, so the message is kept in memory
/// until then: the DATA reader stores at most `max_message_size` of it.
pub struct Pending {
    root: PathBuf,
    id: QueueId,
    body: Vec<u8>,
}

impl Pending {
    /// A drop to be made in the spool at `root`, named by a fresh id.
    pub fn new(root: &Path) -> Pending {
        Pending {
            root: root.to_owned(),
            id: QueueId::generate(),
            body: Vec::new(),
        }
    }

    /// The drop file's name to be, which the session reports as the queue id
    /// (pickup logs it beside the id it queues the message under).
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Body bytes accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.body.len() as u64
    }

    /// Deposit the message with this envelope: Ok only once it is durable in
    /// maildrop/ (see [`deposit`]).
    pub fn commit(self, env: &Envelope) -> Result<(), SpoolError> {
        let name = deposit_named(&self.root, env, &self.body, Some(self.id.clone()))?;
        if name != self.id.as_str() {
            log::info!("{}: dropped as maildrop/{name}", self.id);
        }
        Ok(())
    }
}

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.body.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_drop(file: &File, path: &Path, env: &Envelope, body: &[u8]) -> Result<(), SpoolError> {
    // The umask may have taken bits from the mode given to open; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .map_err(|e| SpoolError::from_io("chmod", path, e))?;
    let mut out = io::BufWriter::new(file);
    let w = (|| {
        out.write_all(MAGIC.as_bytes())?;
        out.write_all(b"\n")?;
        out.write_all(env.to_text().as_bytes())?;
        out.write_all(b"\n")?;
        out.write_all(body)?;
        out.flush()
    })();
    w.map_err(|e| SpoolError::from_io("write", path, e))?;
    drop(out);
    file.sync_all().map_err(|e| SpoolError::from_io("fsync", path, e))
}

/// A drop file read back: its envelope and where the message starts.
struct Dropped {
    env: Envelope,
    uid: u32,
    reader: BufReader<File>,
}

fn read_drop(path: &Path) -> Result<Dropped, SpoolError> {
    // O_NOFOLLOW: a symlink in the maildrop is nobody's message, and following it
    // could make the daemon queue a file the dropper may not read.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| SpoolError::from_io("open", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| SpoolError::from_io("stat", path, e))?;
    if !meta.is_file() {
        return Err(SpoolError::other("pickup", path, "not a regular file"));
    }
    let mut reader = BufReader::new(file);
    let mut head = String::new();
    let mut first = true;
    loop {
        let mut line = String::new();
        let n = (&mut reader)
            .take(MAX_HEADER.saturating_sub(head.len() as u64))
            .read_line(&mut line)
            .map_err(|e| match e.kind() {
                // Bytes that are not UTF-8 make a bad file, not an I/O failure: as an
                // I/O error it would stop every pickup at this file (found by fuzzing).
                io::ErrorKind::InvalidData => SpoolError::other("pickup", path, "envelope is not UTF-8"),
                _ => SpoolError::from_io("read", path, e),
            })?;
        if n == 0 || !line.ends_with('\n') {
            return Err(SpoolError::other("pickup", path, "truncated envelope"));
        }
        if first {
            if line.trim_end() != MAGIC {
                return Err(SpoolError::other("pickup", path, "not a maildrop file"));
            }
            first = false;
            continue;
        }
        if line == "\n" {
            break;
        }
        head.push_str(&line);
    }
    let env = Envelope::parse(&head).map_err(|e| SpoolError {
        op: "parse",
        path: path.to_owned(),
        cause: Cause::Envelope(e),
    })?;
    if env.recipients.is_empty() {
        return Err(SpoolError::other("pickup", path, "no recipients"));
    }
    Ok(Dropped {
        env,
        uid: meta.uid(),
        reader,
    })
}

/// How [`Spool::pickup_with`] writes a drop's message into its queue file:
/// `(new_id, uid, envelope, message, out)`, returning what becomes of it. The
/// envelope (its id already the new one) may be changed: it is the one queued.
pub type WriteDrop<'a> =
    dyn Fn(&QueueId, u32, &mut Envelope, &mut dyn Read, &mut super::Incoming) -> io::Result<Pickup> + 'a;

/// What becomes of a drop once [`WriteDrop`] has written its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pickup {
    /// Queue it.
    Queue,
    /// Queue it on hold (`Incoming::commit_held`; the envelope's `hold_reason`
    /// says why): it waits for `ternctl release`.
    Hold,
    /// Queue nothing and remove the drop: the writer has dealt with the
    /// message for good (discarded it, or queued a bounce for it).
    Done,
    /// Queue nothing and leave the drop for a later pickup (a temporary
    /// refusal by the daemon's stages).
    Later,
}

/// A file waiting in the maildrop, as `mailq` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub name: String,
    pub size: u64,
    /// Unix seconds, the file's modification time.
    pub since: u64,
    /// The file's owner: the user who ran sendmail.
    pub uid: u32,
}

impl Spool {
    /// The files waiting in the maildrop, by name (so oldest first).
    pub fn maildrop_list(&self) -> Result<Vec<Waiting>, SpoolError> {
        let mut out = Vec::new();
        for e in read_dir(&dir(&self.root))? {
            let Some(name) = e
                .file_name()
                .to_str()
                .filter(|n| QueueId::parse(n).is_some())
                .map(str::to_owned)
            else {
                continue;
            };
            // Picked up meanwhile: not waiting any more.
            let Ok(m) = e.metadata() else { continue };
            let since = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            out.push(Waiting {
                name,
                size: m.len(),
                since,
                uid: m.uid(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// How many messages wait in the maildrop (temporary files not counted).
    pub fn maildrop_count(&self) -> Result<usize, SpoolError> {
        Ok(read_dir(&dir(&self.root))?
            .iter()
            .filter(|e| e.file_name().to_str().and_then(QueueId::parse).is_some())
            .count())
    }

    /// Queue every file in the maildrop, oldest first; returns the new queue ids.
    ///
    /// For each one: `received(new_id, uid)` gives the trace header to put first (uid
    /// is the drop file's owner, the real user who ran sendmail); then the message is
    /// committed as any other (the commit point is its rename into env/), and only then
    /// is the drop file removed. A crash in between queues the message twice rather
    /// than losing it (Postfix's pickup makes the same choice). A file that is not a
    /// drop file (a bad one, a symlink, a socket) goes to corrupt/ for a human; one that
    /// cannot be read now (EACCES, EIO) is logged and left for a later pickup, and the
    /// others are picked up meanwhile. Temporary files of a sendmail that died are
    /// removed after 36 hours.
    ///
    /// Only one pickup may run at a time (the daemon's queue runner is the only caller).
    pub fn pickup(&self, received: &dyn Fn(&QueueId, u32) -> String) -> Result<Vec<QueueId>, SpoolError> {
        self.pickup_with(&|id, uid, _env, message, out| {
            out.write_all(received(id, uid).as_bytes())?;
            io::copy(message, out).map(|_| Pickup::Queue)
        })
    }

    /// [`Spool::pickup`], with `write(new_id, uid, env, message, out)` writing
    /// the message to be queued into `out` from the drop's `message` (the
    /// daemon's message path runs its stages there) and saying what becomes
    /// of it ([`Pickup`]). Returns the ids queued (not those put on hold).
    pub fn pickup_with(&self, write: &WriteDrop<'_>) -> Result<Vec<QueueId>, SpoolError> {
        let drop_dir = dir(&self.root);
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        for entry in read_dir(&drop_dir)? {
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                self.drop_to_corrupt(&path, "name is not UTF-8")?;
                continue;
            };
            if name.starts_with('.') {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > STALE_TMP);
                if old {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            names.push((name, path));
        }
        names.sort();
        let mut queued = Vec::new();
        for (name, path) in names {
            if QueueId::parse(&name).is_none() {
                self.drop_to_corrupt(&path, "name is not a queue id")?;
                continue;
            }
            let mut d = match read_drop(&path) {
                Ok(d) => d,
                // O_NOFOLLOW met a symlink, or the name is a socket: never a message.
                Err(e)
                    if matches!(
                        e.io().and_then(io::Error::raw_os_error),
                        Some(libc::ELOOP | libc::ENXIO)
                    ) =>
                {
                    self.drop_to_corrupt(&path, "not a regular file")?;
                    continue;
                }
                // EACCES, EIO...: perhaps the file is fine and will be readable later
                // (an administrator fixes its mode). Leave it, and go on with the others:
                // one file must not hold up every drop sorted after it.
                Err(e) if e.io().is_some() => {
                    log::warn!("spool: pickup skips maildrop/{name} for now: {e}");
                    continue;
                }
                Err(e) => {
                    self.drop_to_corrupt(&path, &e.to_string())?;
                    continue;
                }
            };
            let mut inc = self.begin()?;
            let id = inc.id().clone();
            d.env.id = id.clone();
            let fate = write(&id, d.uid, &mut d.env, &mut d.reader, &mut inc)
                .map_err(|e| SpoolError::from_io("copy", &path, e))?;
            d.env.size = inc.bytes_written();
            match fate {
                Pickup::Queue => inc.commit(&d.env)?,
                Pickup::Hold => inc.commit_held(&d.env)?,
                Pickup::Later => continue,
                Pickup::Done => {
                    drop(inc);
                    fs::remove_file(&path).map_err(|e| SpoolError::from_io("remove", &path, e))?;
                    continue;
                }
            }
            fs::remove_file(&path).map_err(|e| SpoolError::from_io("remove", &path, e))?;
            crate::maillog::picked_up(&id, d.uid, &d.env.sender, &name);
            self.log_queued(&d.env);
            crate::metrics::picked_up();
            if fate == Pickup::Queue {
                queued.push(id);
            }
        }
        if !queued.is_empty() {
            // Best effort: a lost removal only means a duplicate, never a loss.
            let _ = sync_dir(&drop_dir);
        }
        Ok(queued)
    }

    fn drop_to_corrupt(&self, path: &Path, why: &str) -> Result<(), SpoolError> {
        let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let corrupt = self.dir(CORRUPT);
        let mut to = corrupt.join(format!("maildrop-{name}"));
        let mut n = 0u32;
        while exists(&to)? {
            n += 1;
            to = corrupt.join(format!("maildrop-{name}.{n}"));
        }
        fs::rename(path, &to).map_err(|e| SpoolError::from_io("rename", path, e))?;
        log::warn!("spool: moved {} to {}: {why}", path.display(), to.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::tests::names;
    use crate::spool::Recipient;
    use tempfile::TempDir;

    fn env(rcpts: &[&str]) -> Envelope {
        let mut e = Envelope::new(QueueId::generate(), "alice@example.org".into(), 1_700_000_000);
        e.protocol = "local".into();
        for r in rcpts {
            e.recipients.push(Recipient::new((*r).into()));
        }
        e
    }

    #[test]
    fn deposit_then_pickup() {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let name = deposit(
            s.root(),
            &env(&["bob@example.net", "carol@example.net"]),
            b"Subject: x\n\nhi\n",
        )
        .unwrap();
        assert_eq!(names(&dir(s.root())), vec![name.clone()]);
        let meta = fs::metadata(dir(s.root()).join(&name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(s.maildrop_count().unwrap(), 1);

        let ids = s
            .pickup(&|id, uid| format!("Received: by h (tern, from userid {uid}) id {id}\n"))
            .unwrap();
        assert_eq!(ids.len(), 1);
        assert!(names(&dir(s.root())).is_empty());
        let e = s.load(&ids[0]).unwrap();
        assert_eq!(e.recipients.len(), 2);
        assert_eq!(e.sender, "alice@example.org");
        assert_eq!(e.protocol, "local");
        let body = String::from_utf8(s.read_message(&e).unwrap()).unwrap();
        let uid = sys::uids().0;
        assert_eq!(
            body,
            format!(
                "Received: by h (tern, from userid {uid}) id {}\nSubject: x\n\nhi\n",
                ids[0]
            )
        );
        assert_eq!(e.size, body.len() as u64);
        // Nothing left to pick up.
        assert!(s.pickup(&|_, _| String::new()).unwrap().is_empty());
    }

    #[test]
    fn bad_files_go_to_corrupt_and_tmp_files_wait() {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let md = dir(s.root());
        fs::write(md.join(QueueId::generate().as_str()), b"garbage\n\nbody").unwrap();
        fs::write(md.join("notes"), b"x").unwrap();
        fs::write(
            md.join(QueueId::generate().as_str()),
            b"maildrop: 1\nversion: 1\n",
        )
        .unwrap();
        fs::write(md.join(".0193A5F2C41B07E2.tmp"), b"being written").unwrap();
        assert!(s.pickup(&|_, _| String::new()).unwrap().is_empty());
        assert_eq!(names(&md), vec![".0193A5F2C41B07E2.tmp".to_owned()]);
        assert_eq!(names(&s.dir(CORRUPT)).len(), 3);
        assert!(s.list().unwrap().is_empty());
    }

    /// A drop file whose envelope is not UTF-8 goes to corrupt/ and the files after
    /// it are still picked up (it used to fail every pickup; fuzz target maildrop).
    #[test]
    fn non_utf8_envelope_goes_to_corrupt() {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let md = dir(s.root());
        fs::write(
            md.join("0193A5F2C41B07E2"),
            b"maildrop: 1\nversion\xca\xf5: 1\n\nbody\n",
        )
        .unwrap();
        deposit(s.root(), &env(&["bob@example.net"]), b"hello\n").unwrap();
        assert_eq!(s.pickup(&|_, _| String::new()).unwrap().len(), 1);
        assert!(names(&md).is_empty());
        assert_eq!(names(&s.dir(CORRUPT)).len(), 1);
    }

    /// Names that cannot be opened as files go to corrupt/, a file that cannot be read
    /// now stays for later, and neither holds up the drops sorted after it (an I/O
    /// error used to end the whole pickup, every time, at the same file).
    #[test]
    fn unopenable_drops_do_not_stop_pickup() {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let md = dir(s.root());
        let outside = d.path().join("elsewhere");
        fs::write(&outside, b"maildrop: 1\n").unwrap();
        std::os::unix::fs::symlink(&outside, md.join("0000000000000001")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(md.join("0000000000000002")).unwrap();
        let locked = md.join("0000000000000003");
        fs::write(&locked, b"maildrop: 1\n").unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        deposit(s.root(), &env(&["bob@example.net"]), b"hello\n").unwrap();
        assert_eq!(s.pickup(&|_, _| String::new()).unwrap().len(), 1);
        assert_eq!(s.list().unwrap().len(), 1);
        let mut corrupt = names(&s.dir(CORRUPT));
        corrupt.sort();
        let bad = ["maildrop-0000000000000001", "maildrop-0000000000000002"];
        if crate::sys::uids().0 == 0 {
            // Root reads a mode 000 file: a truncated drop, so corrupt/ has it too...
            assert_eq!(corrupt, [bad[0], bad[1], "maildrop-0000000000000003"]);
        } else {
            // ...while for any other user it is unreadable for now: left in place.
            assert_eq!(corrupt, bad);
            assert_eq!(names(&md), ["0000000000000003"]);
        }
    }

    #[test]
    fn old_drops_are_opened_to_the_daemon_but_not_through_symlinks() {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let md = dir(s.root());
        let old = md.join(QueueId::generate().as_str());
        fs::write(&old, b"x").unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o640)).unwrap();
        let outside = d.path().join("secret");
        fs::write(&outside, b"x").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&outside, md.join(QueueId::generate().as_str())).unwrap();
        assert_eq!(open_drops_to_daemon(s.root()), 1);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&old), 0o644);
        assert_eq!(mode(&outside), 0o600);
        assert_eq!(open_drops_to_daemon(s.root()), 0);
    }

    /// A drop made through the session door (sendmail -bs) is named by the id the
    /// session announced, and picked up like any other.
    #[test]
    fn pending_drop_keeps_its_announced_name() {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let mut p = Pending::new(s.root());
        let id = p.id().clone();
        p.write_all(b"Subject: x\n\nhi\n").unwrap();
        assert_eq!(p.bytes_written(), 15);
        p.commit(&env(&["bob@example.net"])).unwrap();
        assert_eq!(names(&dir(s.root())), vec![id.to_string()]);
        assert_eq!(s.pickup(&|_, _| String::new()).unwrap().len(), 1);
    }

    #[test]
    fn deposit_refuses_no_recipients_and_leaves_nothing() {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        assert!(deposit(s.root(), &env(&[]), b"x").is_err());
        // A missing maildrop directory is an error, not a panic.
        assert!(deposit(&d.path().join("nowhere"), &env(&["a@b"]), b"x").is_err());
        assert!(names(&dir(s.root())).is_empty());
    }
}
