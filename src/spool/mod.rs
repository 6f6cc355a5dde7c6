//! The spool: tern's durable, maildir-style queue on disk.
//!
//! It stores message bytes and a text envelope and knows nothing of SMTP. Every
//! program that queues, reads or removes mail (the SMTP server, the queue runner,
//! `sendmail`, `ternctl`) goes through this module; nothing else touches the files.
//!
//! Layout under the root (see src/spool/README.md for the full story):
//!
//! ```text
//! tmp/       ID.env while being written (emptied by recover at start-up)
//! msg/ID     message body, written once (while being received, before env/ID exists)
//! env/ID     envelope; replaced only by tmp + fsync + rename (the commit point)
//! hold/ID    held envelopes
//! corrupt/ID envelopes that did not parse, for a human
//! maildrop/  files from the sendmail binary (maildrop.rs), picked up by the daemon
//! control    the daemon's control socket (crate::control)
//! ```
//!
//! The promise: when [`Incoming::commit`] returns Ok the message is durable, and a crash
//! at any instant leaves either a complete queued message or nothing queued (at most
//! leftovers that [`Spool::recover`] removes) — never a half-written queued file.

mod commit;
pub mod envelope;
pub mod id;
pub mod listing;
pub mod maildrop;
pub mod retire;
mod syncpool;

pub use envelope::{BodyType, DsnRet, Envelope, EnvelopeError, RcptStatus, Recipient};
pub use id::QueueId;
pub use retire::Retired;

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sys;

const TMP: &str = "tmp";
const MSG: &str = "msg";
const ENV: &str = "env";
const HOLD: &str = "hold";
const CORRUPT: &str = "corrupt";
const MAILDROP: &str = "maildrop";
const SUBDIRS: [&str; 6] = [TMP, MSG, ENV, HOLD, CORRUPT, MAILDROP];
/// The control socket's name in the root (see `crate::control`).
const CONTROL: &str = "control";
/// The group that alone may write the maildrop (sendmail is installed setgid to it)
/// and talk to the control socket (Postfix's `postdrop` group).
pub const GROUP: &str = "tern";
/// maildrop/: sticky, group write and search, no read: a setgid sendmail can drop a
/// file but not list, read or remove anyone else's (Postfix's maildrop is 1730 too).
const MAILDROP_MODE: u32 = 0o1730;
/// The root: others may only traverse it, to reach maildrop/ and the control socket.
const ROOT_MODE: u32 = 0o711;

/// How many fresh ids `begin` tries before giving up (each clash is already unlikely).
const MAX_ID_TRIES: usize = 100;
/// Write buffer for message bodies.
const BUF_SIZE: usize = 64 * 1024;

/// A spool directory. Cheap to clone; safe to share between threads (all state is on
/// disk, but for the group committer, which clones share: see commit.rs).
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    committer: Arc<commit::Committer>,
    sync: SyncMode,
}

/// How [`Incoming::commit`] makes a new message durable (tern.conf `spool_sync`);
/// defined with the configuration that holds it.
pub use crate::config::SyncMode;

/// A failed spool operation: what was being done, to which path, and why.
#[derive(Debug)]
pub struct SpoolError {
    op: &'static str,
    path: PathBuf,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    Io(io::Error),
    Envelope(EnvelopeError),
    Other(String),
}

impl SpoolError {
    fn from_io(op: &'static str, path: &Path, e: io::Error) -> SpoolError {
        SpoolError {
            op,
            path: path.to_owned(),
            cause: Cause::Io(e),
        }
    }

    fn other(op: &'static str, path: &Path, msg: impl Into<String>) -> SpoolError {
        SpoolError {
            op,
            path: path.to_owned(),
            cause: Cause::Other(msg.into()),
        }
    }

    /// Whether the filesystem was full (ENOSPC) or a quota was exceeded (EDQUOT):
    /// a temporary condition the SMTP server reports as 452 rather than 451.
    pub fn is_no_space(&self) -> bool {
        match &self.cause {
            Cause::Io(e) => sys::is_no_space(e),
            _ => false,
        }
    }

    /// The same error again, for each message of a batch that one failure fails.
    fn duplicate(&self) -> SpoolError {
        SpoolError {
            op: self.op,
            path: self.path.clone(),
            cause: match &self.cause {
                Cause::Io(e) => Cause::Io(commit::dup_io(e)),
                Cause::Envelope(e) => Cause::Other(e.to_string()),
                Cause::Other(s) => Cause::Other(s.clone()),
            },
        }
    }

    /// The underlying I/O error, if there is one.
    pub fn io(&self) -> Option<&io::Error> {
        match &self.cause {
            Cause::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spool: {} {}: ", self.op, self.path.display())?;
        match &self.cause {
            Cause::Io(e) => write!(f, "{e}"),
            Cause::Envelope(e) => write!(f, "{e}"),
            Cause::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for SpoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Io(e) => Some(e),
            Cause::Envelope(e) => Some(e),
            Cause::Other(_) => None,
        }
    }
}

/// What [`Spool::recover`] cleaned up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoverStats {
    /// Entries removed from tmp/.
    pub tmp_removed: usize,
    /// msg/ files removed because no envelope refers to them.
    pub orphans_removed: usize,
    /// env/ entries moved to corrupt/.
    pub corrupt: usize,
}

impl Spool {
    /// Open the spool at `root`, creating root and any missing subdirectories (mode 0700
    /// for new ones). Errors, naming the path, if root is not a writable directory.
    pub fn open(root: &Path) -> Result<Spool, SpoolError> {
        match fs::metadata(root) {
            Ok(m) if !m.is_dir() => return Err(SpoolError::other("open", root, "not a directory")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(root)
                    .map_err(|e| SpoolError::from_io("create", root, e))?;
                fs::set_permissions(root, fs::Permissions::from_mode(ROOT_MODE))
                    .map_err(|e| SpoolError::from_io("chmod", root, e))?;
            }
            Err(e) => return Err(SpoolError::from_io("open", root, e)),
        }
        let mut created = false;
        for sub in SUBDIRS {
            let dir = root.join(sub);
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    created = true;
                    if sub == MAILDROP {
                        set_maildrop_owner(&dir)?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !fs::metadata(&dir).map(|m| m.is_dir()).unwrap_or(false) {
                        return Err(SpoolError::other("open", &dir, "not a directory"));
                    }
                }
                Err(e) => return Err(SpoolError::from_io("create", &dir, e)),
            }
        }
        if created {
            sync_dir(root)?;
        }
        // Permission bits do not tell (root ignores them, ACLs, read-only mounts): try it.
        // The probe lives in tmp/, so a crash right here leaves only what recover removes.
        let probe = root.join(TMP).join(format!(".probe-{}", QueueId::generate()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&probe)
            .map_err(|e| SpoolError::from_io("write", &probe, e))?;
        match fs::remove_file(&probe) {
            // NotFound: a concurrent recover emptied tmp/ first.
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::from_io("remove", &probe, e)),
        }
        Ok(Spool {
            root: root.to_owned(),
            committer: Arc::default(),
            sync: SyncMode::default(),
        })
    }

    /// This spool, committing new messages with `mode` (clones made after share it).
    pub fn with_sync(mut self, mode: SyncMode) -> Spool {
        self.sync = mode;
        self
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, sub: &str) -> PathBuf {
        self.root.join(sub)
    }

    fn file(&self, sub: &str, id: &QueueId) -> PathBuf {
        self.root.join(sub).join(id.as_str())
    }

    /// Start-up clean-up, run once before anything else uses the spool:
    /// - remove everything in tmp/ (unfinished writes of a crashed process);
    /// - move env/ entries into corrupt/ (with a warning) when their name is not a queue
    ///   id, they are not regular files, the envelope does not parse or names another id,
    ///   or their msg/ID body is missing;
    /// - remove msg/ID files with no env/ID, hold/ID or corrupt/ID (orphans of a crash
    ///   during reception or commit, or of an interrupted remove). Bodies of corrupt
    ///   envelopes are kept so a human can still deliver them.
    pub fn recover(&self) -> Result<RecoverStats, SpoolError> {
        let mut stats = RecoverStats::default();

        let tmp = self.dir(TMP);
        for entry in read_dir(&tmp)? {
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let r = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match r {
                Ok(()) => stats.tmp_removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::from_io("remove", &path, e)),
            }
        }

        let env_dir = self.dir(ENV);
        for entry in read_dir(&env_dir)? {
            let name = entry.file_name();
            if let Some(why) = self.env_entry_problem(&name, &entry)? {
                self.move_to_corrupt(&name, &why)?;
                stats.corrupt += 1;
            }
        }
        if stats.corrupt > 0 {
            sync_dir(&env_dir)?;
            sync_dir(&self.dir(CORRUPT))?;
        }

        let msg_dir = self.dir(MSG);
        for entry in read_dir(&msg_dir)? {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(QueueId::parse) else {
                log::warn!("spool: ignoring {}: not a queue id", entry.path().display());
                continue;
            };
            let mut referenced = false;
            for sub in [ENV, HOLD, CORRUPT] {
                referenced |= exists(&self.file(sub, &id))?;
            }
            if !referenced {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => stats.orphans_removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(SpoolError::from_io("remove", &path, e)),
                }
            }
        }
        if stats.orphans_removed > 0 {
            sync_dir(&msg_dir)?;
        }

        if stats != RecoverStats::default() {
            log::info!(
                "spool: recovered {}: {} tmp files removed, {} orphan bodies removed, {} corrupt envelopes",
                self.root.display(),
                stats.tmp_removed,
                stats.orphans_removed,
                stats.corrupt
            );
        }
        Ok(stats)
    }

    /// Why an env/ entry must go to corrupt/, or None if it is a sound queued message.
    /// Read errors (permissions, I/O) are returned, not treated as corruption: moving
    /// every envelope away because the daemon runs as the wrong user would be a disaster.
    fn env_entry_problem(&self, name: &OsStr, entry: &fs::DirEntry) -> Result<Option<String>, SpoolError> {
        let Some(id) = name.to_str().and_then(QueueId::parse) else {
            return Ok(Some("name is not a queue id".to_owned()));
        };
        // DirEntry::file_type does not follow symlinks: a symlink is not ours.
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if !is_file {
            return Ok(Some("not a regular file".to_owned()));
        }
        match self.load(&id) {
            Ok(_) => {}
            Err(e) if e.io().is_none() => return Ok(Some(e.to_string())),
            Err(e) => return Err(e),
        }
        if !exists(&self.file(MSG, &id))? {
            return Ok(Some(format!("its message body msg/{id} is missing")));
        }
        Ok(None)
    }

    fn move_to_corrupt(&self, name: &OsStr, why: &str) -> Result<(), SpoolError> {
        let from = self.dir(ENV).join(name);
        let corrupt = self.dir(CORRUPT);
        // rename(2) would silently replace an earlier corrupt file of the same name.
        let mut to = corrupt.join(name);
        let mut n = 0u32;
        while exists(&to)? {
            n += 1;
            let mut alt = name.to_owned();
            alt.push(format!(".{n}"));
            to = corrupt.join(alt);
        }
        fs::rename(&from, &to).map_err(|e| SpoolError::from_io("rename", &from, e))?;
        log::warn!("spool: moved {} to {}: {}", from.display(), to.display(), why);
        Ok(())
    }

    /// A new incoming message with a fresh, unused id.
    ///
    /// The body is written straight into msg/ID, created O_EXCL: that is the id's
    /// uniqueness check, and no other name is looked at. Every queued or held message
    /// has its msg/ID (env/ID and hold/ID never outlive it, see `remove`), so an id in
    /// use is an id whose msg/ID exists; the one name that can exist without msg/ID is a
    /// corrupt/ID whose body was lost, and a new message of that id harms nothing there.
    /// A msg/ID without env/ID is not queued (nothing lists msg/); if the process dies
    /// before the commit, `recover` removes it as an orphan.
    pub fn begin(&self) -> Result<Incoming, SpoolError> {
        let msg_dir = self.dir(MSG);
        for _ in 0..MAX_ID_TRIES {
            let id = QueueId::generate();
            let tmp = msg_dir.join(id.as_str());
            // O_EXCL: never another message's body, whichever process made it.
            let file = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(SpoolError::from_io("create", &tmp, e)),
            };
            return Ok(Incoming {
                spool: self.clone(),
                id,
                tmp,
                out: Some(BufWriter::with_capacity(BUF_SIZE, file)),
                written: 0,
                failed: None,
                done: false,
            });
        }
        Err(SpoolError::other("create", &msg_dir, "no unused queue id found"))
    }

    /// A file with no name in tmp/, for a message body too large to hold in
    /// memory until its commit: nothing of it outlives the process, even a
    /// crash (the name is removed at once; `recover` removes one a crash left
    /// in between).
    pub fn spill_file(&self) -> io::Result<File> {
        let path = self.dir(TMP).join(format!(".spill-{}", QueueId::generate()));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        fs::remove_file(&path)?;
        Ok(f)
    }

    /// Ids of committed messages (env/), sorted (so oldest first). Names that are not
    /// queue ids are ignored.
    pub fn list(&self) -> Result<Vec<QueueId>, SpoolError> {
        self.ids_in(ENV)
    }

    /// The queue ids named in one subdirectory, sorted; other names are ignored.
    fn ids_in(&self, sub: &str) -> Result<Vec<QueueId>, SpoolError> {
        let mut ids: Vec<QueueId> = read_dir(&self.dir(sub))?
            .iter()
            .filter_map(|e| e.file_name().to_str().and_then(QueueId::parse))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Read and parse env/ID. An envelope naming another id is an error.
    pub fn load(&self, id: &QueueId) -> Result<Envelope, SpoolError> {
        self.load_from(ENV, id)
    }

    fn load_from(&self, sub: &str, id: &QueueId) -> Result<Envelope, SpoolError> {
        let path = self.file(sub, id);
        let bytes = fs::read(&path).map_err(|e| SpoolError::from_io("read", &path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| SpoolError::other("parse", &path, "not UTF-8"))?;
        let env = Envelope::parse(&text).map_err(|e| SpoolError {
            op: "parse",
            path: path.clone(),
            cause: Cause::Envelope(e),
        })?;
        if env.id != *id {
            return Err(SpoolError::other(
                "parse",
                &path,
                format!("envelope says its id is {}", env.id),
            ));
        }
        Ok(env)
    }

    /// msg/ID: the message body. Open it read-only; it is never modified.
    pub fn message_path(&self, id: &QueueId) -> PathBuf {
        self.file(MSG, id)
    }

    /// The mail log's lines for a message just committed (`maillog::queued`):
    /// its Message-ID, read back from msg/ID, and its envelope's sender, size
    /// and recipient count. Every door into the queue logs this way.
    pub fn log_queued(&self, env: &Envelope) {
        let message_id = self.message_id(&env.id);
        crate::maillog::queued(
            &env.id,
            message_id.as_deref(),
            &env.sender,
            env.size,
            env.recipients.len(),
        );
    }

    /// The Message-ID field of a queued message, for the mail log (read from
    /// the first 64 KiB of msg/ID; None when it has none or cannot be read).
    pub fn message_id(&self, id: &QueueId) -> Option<String> {
        use std::io::Read;
        let mut head = Vec::new();
        std::fs::File::open(self.message_path(id))
            .ok()?
            .take(64 * 1024)
            .read_to_end(&mut head)
            .ok()?;
        crate::message::get(&head, "Message-ID").map(|f| f.value())
    }

    /// Replace env/ID atomically (tmp + fsync + rename); for the queue runner. The new
    /// contents are on disk before the rename, so env/ID is always old or new, never
    /// torn; the rename itself becomes durable with the next fsync of env/ (a crash
    /// before may bring the old envelope back, which only repeats work).
    /// env/ID must exist: an update never resurrects a removed or held message. (The check
    /// and the rename are not one atomic step; callers that race, such as the runner and
    /// `ternctl hold`, must coordinate.)
    pub fn update(&self, env: &Envelope) -> Result<(), SpoolError> {
        let target = self.file(ENV, &env.id);
        check_writable_envelope(env, &target)?;
        if !exists(&target)? {
            return Err(SpoolError::other("update", &target, "no such queued message"));
        }
        // A unique tmp name, so two updaters never write into the same file.
        let tmp = self
            .dir(TMP)
            .join(format!("{}.env.{}", env.id, QueueId::generate()));
        write_synced(&tmp, env.to_text().as_bytes())?;
        if let Err(e) = fs::rename(&tmp, &target) {
            let _ = fs::remove_file(&tmp);
            return Err(SpoolError::from_io("rename", &tmp, e));
        }
        // No fsync of env/: a rename lost in a crash leaves the previous envelope,
        // complete, and only repeats work (see "Delivery state" in README.md).
        Ok(())
    }

    /// Remove a queued message now, durably (for ternctl; the queue runner uses
    /// [`Spool::retire`]): env/ID first (after which it is no longer queued), fsync env/,
    /// then msg/ID. A crash in between leaves an orphan body that recover removes, never
    /// an envelope without its body. Errors if env/ID does not exist, and
    /// then touches nothing (msg/ID may belong to a held message).
    pub fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        self.remove_from(ENV, id)
    }

    /// Remove `sub`/ID, fsync `sub`/, then remove msg/ID: the body goes only once
    /// the envelope's removal is durable, so a crash never leaves an envelope without
    /// its body (an orphan body is harmless: recover removes it).
    fn remove_from(&self, sub: &str, id: &QueueId) -> Result<(), SpoolError> {
        let env = self.file(sub, id);
        fs::remove_file(&env).map_err(|e| SpoolError::from_io("remove", &env, e))?;
        sync_dir(&self.dir(sub))?;
        let msg = self.file(MSG, id);
        match fs::remove_file(&msg) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // The message is already gone from the queue; recover removes the body later.
            Err(e) => log::warn!("spool: remove {}: {e}", msg.display()),
        }
        Ok(())
    }

    /// Whether the spool filesystem has room for `bytes` more: false when, after it, less
    /// than `min_free_percent`% of blocks or of inodes would stay free. Errors from statvfs,
    /// and filesystems that report no totals, count as "has room": refusing mail because
    /// statvfs is odd would be worse than filling the disk.
    pub fn has_room(&self, bytes: u64, min_free_percent: u8) -> bool {
        let Ok((avail, total, iavail, itotal)) = sys::fs_space(&self.root) else {
            return true;
        };
        let pct = u128::from(min_free_percent.min(100));
        // A message takes two inodes: msg/ID and env/ID.
        let stays_free = |avail: u64, need: u64, total: u64| {
            total == 0 || (need <= avail && u128::from(avail - need) * 100 >= u128::from(total) * pct)
        };
        stays_free(avail, bytes, total) && stays_free(iavail, 2, itotal)
    }
}

/// A new maildrop/ gets mode 1730 and, when root creates it and the `tern` group
/// exists, owner root and group tern, so that only a sendmail installed setgid tern
/// can write there. (`make install` sets the same; without the group, only root and
/// the daemon's user can submit, which is safe.)
fn set_maildrop_owner(dir: &Path) -> Result<(), SpoolError> {
    if sys::uids().1 == 0 {
        if let Some(gid) = sys::group_id(GROUP) {
            std::os::unix::fs::chown(dir, Some(0), Some(gid))
                .map_err(|e| SpoolError::from_io("chown", dir, e))?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(MAILDROP_MODE))
        .map_err(|e| SpoolError::from_io("chmod", dir, e))
}

/// Check that the spool at `root` belongs to the daemon's account `uid`: the
/// root and its directories owned by it and writable by no one else, except
/// maildrop/, which must be mode 1730 (sendmail's group drops files there).
/// With `fix` (a daemon still root, about to drop to `uid`), ownership is
/// given to `uid`, contents included, instead of being reported; modes are
/// never changed, since a loose one means someone made it so. The error names
/// every problem and what to run about it.
pub fn check_owner(root: &Path, uid: u32, fix: bool) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut check = |path: &Path, want_mode: Option<u32>| {
        let m = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                return false;
            }
        };
        if !m.is_dir() {
            problems.push(format!("{}: not a directory", path.display()));
            return false;
        }
        let mode = m.permissions().mode() & 0o7777;
        match want_mode {
            Some(w) if mode != w => problems.push(format!(
                "{}: mode {mode:04o}, should be {w:04o} (chmod {w:04o} {})",
                path.display(),
                path.display()
            )),
            None if mode & 0o022 != 0 => problems.push(format!(
                "{}: mode {mode:04o} lets group or others write it (chmod go-w {})",
                path.display(),
                path.display()
            )),
            _ => {}
        }
        if m.uid() != uid {
            if !fix {
                problems.push(format!(
                    "{}: owned by uid {}, should be uid {uid} (chown {uid} {})",
                    path.display(),
                    m.uid(),
                    path.display()
                ));
                return false;
            }
            if let Err(e) = std::os::unix::fs::lchown(path, Some(uid), None) {
                problems.push(format!("{}: chown: {e}", path.display()));
                return false;
            }
        }
        true
    };
    if !check(root, None) {
        return Err(problems.join("; "));
    }
    let mut dirs = Vec::new();
    for sub in SUBDIRS {
        let dir = root.join(sub);
        // A drop file's owner records who ran sendmail: never changed.
        if check(&dir, (sub == MAILDROP).then_some(MAILDROP_MODE)) && sub != MAILDROP {
            dirs.push(dir);
        }
    }
    if fix {
        // Files a root daemon left: the daemon must read, rewrite and remove
        // them once it is no longer root.
        for dir in dirs {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let p = e.path();
                let owned = fs::symlink_metadata(&p).map(|m| m.uid() == uid).unwrap_or(true);
                if !owned {
                    if let Err(err) = std::os::unix::fs::lchown(&p, Some(uid), None) {
                        problems.push(format!("{}: chown: {err}", p.display()));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// msg/ID of the spool at `root`, for the delivery helper, which must not
/// open (and so create) the spool to name a file in it.
pub fn message_file(root: &Path, id: &QueueId) -> PathBuf {
    root.join(MSG).join(id.as_str())
}

/// The control socket of the spool at `root`. A free function: `sendmail` and
/// `ternctl` need the path without being able to open the spool.
pub fn control_socket(root: &Path) -> PathBuf {
    root.join(CONTROL)
}

/// Where a message is: queued (env/) or held (hold/).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Queued,
    Held,
}

/// An exclusive lock on one message, held while it is delivered and while `ternctl`
/// deletes or holds it, so a message never disappears halfway through a delivery.
/// It is a flock(2) on msg/ID, the one file that keeps its inode for the message's
/// whole life (env/ID is replaced at every update). Released on drop.
#[derive(Debug)]
pub struct MessageLock {
    file: File,
}

impl MessageLock {
    /// msg/ID, open for reading: the holder reads the body through it rather than
    /// opening it again.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Spool {
    fn open_body(&self, id: &QueueId) -> Result<File, SpoolError> {
        let path = self.file(MSG, id);
        File::open(&path).map_err(|e| SpoolError::from_io("open", &path, e))
    }

    /// Take the message's lock, waiting for a delivery in progress to end. Errors when
    /// the message does not exist (its body is gone).
    pub fn lock(&self, id: &QueueId) -> Result<MessageLock, SpoolError> {
        let file = self.open_body(id)?;
        file.lock()
            .map_err(|e| SpoolError::from_io("lock", &self.file(MSG, id), e))?;
        Ok(MessageLock { file })
    }

    /// Whether someone holds the message's lock now (mailq's `*`: being delivered).
    pub fn is_locked(&self, id: &QueueId) -> bool {
        match self.open_body(id) {
            Ok(f) => matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    /// Where message `id` is, if anywhere.
    pub fn place(&self, id: &QueueId) -> Result<Option<Place>, SpoolError> {
        if exists(&self.file(ENV, id))? {
            Ok(Some(Place::Queued))
        } else if exists(&self.file(HOLD, id))? {
            Ok(Some(Place::Held))
        } else {
            Ok(None)
        }
    }

    /// Ids of held messages (hold/), sorted.
    pub fn list_held(&self) -> Result<Vec<QueueId>, SpoolError> {
        self.ids_in(HOLD)
    }

    /// Read and parse hold/ID.
    pub fn load_held(&self, id: &QueueId) -> Result<Envelope, SpoolError> {
        self.load_from(HOLD, id)
    }

    /// Move env/ID to hold/ID: the queue runner lists only env/, so a held message is
    /// never delivered. Take [`Spool::lock`] first so no delivery is in flight.
    pub fn hold(&self, id: &QueueId) -> Result<(), SpoolError> {
        self.move_envelope(id, ENV, HOLD)
    }

    /// Move hold/ID back to env/ID; the caller then wakes the queue runner.
    pub fn release(&self, id: &QueueId) -> Result<(), SpoolError> {
        self.move_envelope(id, HOLD, ENV)
    }

    fn move_envelope(&self, id: &QueueId, from: &str, to: &str) -> Result<(), SpoolError> {
        let src = self.file(from, id);
        let dst = self.file(to, id);
        if !exists(&src)? {
            return Err(SpoolError::from_io(
                "rename",
                &src,
                io::ErrorKind::NotFound.into(),
            ));
        }
        // rename(2) would replace: never clobber an envelope.
        if exists(&dst)? {
            return Err(SpoolError::other("rename", &dst, "already exists"));
        }
        fs::rename(&src, &dst).map_err(|e| SpoolError::from_io("rename", &src, e))?;
        sync_dir(&self.dir(to))?;
        sync_dir(&self.dir(from))
    }

    /// Remove a held message (hold/ID, then msg/ID), as [`Spool::remove`] does a queued one.
    pub fn remove_held(&self, id: &QueueId) -> Result<(), SpoolError> {
        self.remove_from(HOLD, id)
    }

    /// How many envelopes wait in corrupt/ for a human.
    pub fn corrupt_count(&self) -> Result<usize, SpoolError> {
        Ok(read_dir(&self.dir(CORRUPT))?.len())
    }
}

/// A message being received. Write the body through `Write` (buffered, 64 KiB); then
/// [`commit`](Incoming::commit). Dropping it without committing removes its body file.
pub struct Incoming {
    spool: Spool,
    id: QueueId,
    /// msg/ID, not yet named by any envelope
    tmp: PathBuf,
    /// Some until commit takes it.
    out: Option<BufWriter<File>>,
    written: u64,
    /// The first write error: the file may hold part of a write, so it must never be
    /// committed. Kept (as kind and errno) so commit can say why, e.g. "no space".
    failed: Option<(io::ErrorKind, Option<i32>)>,
    /// Handed to the committer, which removes msg/ID itself if it fails.
    done: bool,
}

impl Incoming {
    /// The message's queue id.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Write all of `bytes`, as a `SpoolError` naming the file on failure.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        use std::io::Write;
        self.write_all(bytes)
            .map_err(|e| SpoolError::from_io("write", &self.tmp, e))
    }

    /// Body bytes accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Append the rest of `src`, file to file in the kernel (copy_file_range
    /// where the filesystem has it); how many octets.
    pub fn append_file(&mut self, src: &mut File) -> io::Result<u64> {
        let out = self.writer()?;
        if let Err(e) = out.flush() {
            return Err(self.fail(e));
        }
        let out = self.writer()?;
        match io::copy(src, out.get_mut()) {
            Ok(n) => {
                self.written += n;
                Ok(n)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Make the message durable with this envelope (`env.id` must equal `self.id()`; the
    /// caller sets `env.size`). Returns Ok only once body, envelope and directory entries
    /// are on disk. On any error nothing of this message stays in msg/ or env/.
    ///
    /// The steps, and why (src/spool/README.md has the whole story):
    /// 1. flush msg/ID (created by `begin`) and write tmp/ID.env, and start writing both
    ///    out. Until step 2 renames the envelope, msg/ID is an orphan that nothing reads
    ///    and that recover removes after a crash;
    /// 2. hand both to the spool's group commit (commit.rs). With `SyncMode::Fsync`
    ///    this session first makes them and msg/ID's name durable (fdatasync of each
    ///    file and fsync of msg/, at once, alongside the other sessions); with
    ///    `Syncfs` one syncfs does that for every message of the batch. Then the batch
    ///    renames each tmp/ID.env to env/ID (the commit point, atomic: env/ID is either
    ///    absent or complete) and fsyncs env/ once (the renames are on disk before
    ///    anyone reports success).
    ///
    /// So a message costs its own three syncs issued together (`Fsync`), or a share of
    /// one syncfs of the whole filesystem (`Syncfs`), and a share of one fsync of env/.
    pub fn commit(self, env: &Envelope) -> Result<(), SpoolError> {
        self.commit_to(env, false)
    }

    /// [`Incoming::commit`], but into hold/ rather than env/: the message is
    /// queued on hold from its first moment (a milter's quarantine, a policy
    /// service's HOLD), with no window in which the queue runner could take it
    /// as a commit followed by [`Spool::hold`] would leave. `ternctl release`
    /// queues it. The envelope's `hold_reason` says why.
    pub fn commit_held(self, env: &Envelope) -> Result<(), SpoolError> {
        self.commit_to(env, true)
    }

    fn commit_to(mut self, env: &Envelope, held: bool) -> Result<(), SpoolError> {
        if env.id != self.id {
            return Err(SpoolError::other(
                "commit",
                &self.tmp,
                format!("envelope id {} is not the message's id {}", env.id, self.id),
            ));
        }
        check_writable_envelope(env, &self.tmp)?;
        if let Some((kind, errno)) = self.failed {
            let e = errno.map_or_else(|| io::Error::from(kind), io::Error::from_raw_os_error);
            return Err(SpoolError::from_io("write", &self.tmp, e));
        }
        let Some(out) = self.out.take() else {
            return Err(SpoolError::other("commit", &self.tmp, "already committed"));
        };
        let file = out
            .into_inner()
            .map_err(|e| SpoolError::from_io("write", &self.tmp, e.into_error()))?;
        // On error from here on, Drop removes msg/ID.
        let tmp_env = self.spool.dir(TMP).join(format!("{}.env", self.id));
        let env_file = write_new(&tmp_env, env.to_text().as_bytes())?;
        // Both files' blocks get allocated and their writes started now, in this
        // thread, in parallel with the other sessions: the syncs that follow (this
        // session's fdatasyncs, or the batch's syncfs) then find them under way.
        sys::start_writeback(env_file.as_raw_fd());
        sys::start_writeback(file.as_raw_fd());
        self.done = true;
        let pending = commit::Pending {
            id: self.id.clone(),
            tmp_env,
            held,
            files: [Arc::new(file), Arc::new(env_file)],
            synced: None,
        };
        // The committer removes msg/ID and tmp/ID.env again when it fails.
        self.spool
            .committer
            .commit(&self.spool.root, self.spool.sync, pending)
    }
}

impl Write for Incoming {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self.writer()?;
        match out.write(buf) {
            Ok(n) => {
                self.written += n as u64;
                Ok(n)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let out = self.writer()?;
        out.flush().map_err(|e| self.fail(e))
    }
}

impl Incoming {
    fn writer(&mut self) -> io::Result<&mut BufWriter<File>> {
        if let Some((kind, errno)) = self.failed {
            let e = errno.map_or_else(|| io::Error::from(kind), io::Error::from_raw_os_error);
            return Err(io::Error::new(
                e.kind(),
                format!("spool: an earlier write failed: {e}"),
            ));
        }
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("spool: message already committed"))
    }

    /// Remember a write error (but not EINTR, after which nothing was written).
    fn fail(&mut self, e: io::Error) -> io::Error {
        if e.kind() != io::ErrorKind::Interrupted && self.failed.is_none() {
            self.failed = Some((e.kind(), e.raw_os_error()));
        }
        e
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(out) = self.out.take() {
            // into_parts: do not flush a buffer into a file we are about to delete.
            let _ = out.into_parts();
        }
        let _ = fs::remove_file(&self.tmp);
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("id", &self.id)
            .field("tmp", &self.tmp)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// Refuse to write an envelope that would not parse back (the only such envelope is one
/// without recipients): recover would move it to corrupt/ at the next start.
fn check_writable_envelope(env: &Envelope, path: &Path) -> Result<(), SpoolError> {
    if env.recipients.is_empty() {
        return Err(SpoolError::other("commit", path, "envelope has no recipients"));
    }
    Ok(())
}

/// Create `path` exclusively (mode 0600) and write `data`, without fsync (the caller
/// does that). Removes it on error.
fn write_new(path: &Path, data: &[u8]) -> Result<File, SpoolError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SpoolError::from_io("create", path, e))?;
    if let Err(e) = f.write_all(data) {
        drop(f);
        let _ = fs::remove_file(path);
        return Err(SpoolError::from_io("write", path, e));
    }
    Ok(f)
}

/// Create `path` exclusively (mode 0600), write `data`, fsync. Removes it on error.
fn write_synced(path: &Path, data: &[u8]) -> Result<(), SpoolError> {
    let f = write_new(path, data)?;
    let r = f.sync_all().map_err(|e| SpoolError::from_io("fsync", path, e));
    if r.is_err() {
        drop(f);
        let _ = fs::remove_file(path);
    }
    r
}

/// fsync a directory, making the creations, renames and removals of names in it durable.
fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SpoolError::from_io("fsync", dir, e))
}

/// Whether a name exists (without following a symlink).
fn exists(path: &Path) -> Result<bool, SpoolError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SpoolError::from_io("stat", path, e)),
    }
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, SpoolError> {
    fs::read_dir(dir)
        .and_then(|it| it.collect::<io::Result<Vec<_>>>())
        .map_err(|e| SpoolError::from_io("read", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;
    use tempfile::TempDir;

    fn spool() -> (TempDir, Spool) {
        let dir = TempDir::new().unwrap();
        let s = Spool::open(&dir.path().join("spool")).unwrap();
        (dir, s)
    }

    fn envelope(id: &QueueId, rcpts: &[&str]) -> Envelope {
        let mut e = Envelope::new(id.clone(), "alice@example.org".into(), 1_700_000_000);
        e.client_addr = Some("192.0.2.1".parse().unwrap());
        for r in rcpts {
            e.recipients.push(Recipient::new((*r).into()));
        }
        e
    }

    fn queue(s: &Spool, body: &[u8]) -> QueueId {
        let mut inc = s.begin().unwrap();
        inc.write_all(body).unwrap();
        let id = inc.id().clone();
        let mut env = envelope(&id, &["bob@example.net"]);
        env.size = inc.bytes_written();
        inc.commit(&env).unwrap();
        id
    }

    /// The sorted names in `dir`; for the tests of the spool's submodules too.
    pub(crate) fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn open_creates_layout() {
        let (_d, s) = spool();
        for sub in SUBDIRS {
            let m = fs::metadata(s.root().join(sub)).unwrap();
            assert!(m.is_dir());
            let want = if sub == MAILDROP { MAILDROP_MODE } else { 0o700 };
            assert_eq!(m.permissions().mode() & 0o7777, want, "{sub}");
        }
        assert_eq!(
            fs::metadata(s.root()).unwrap().permissions().mode() & 0o777,
            ROOT_MODE
        );
        assert!(names(&s.root().join(TMP)).is_empty(), "probe left behind");
        // Opening again is fine, and an existing layout is left as it is.
        Spool::open(s.root()).unwrap();
    }

    #[test]
    fn owner_check_names_loose_modes_and_wrong_owners() {
        let (_d, s) = spool();
        let me = sys::uids().1;
        check_owner(s.root(), me, false).unwrap();
        let env = s.root().join(ENV);
        fs::set_permissions(&env, fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_owner(s.root(), me, false).unwrap_err();
        assert!(e.contains("env: mode 0777 lets group or others write it"), "{e}");
        fs::set_permissions(&env, fs::Permissions::from_mode(0o700)).unwrap();
        let md = s.root().join(MAILDROP);
        fs::set_permissions(&md, fs::Permissions::from_mode(0o700)).unwrap();
        let e = check_owner(s.root(), me, false).unwrap_err();
        assert!(e.contains("maildrop: mode 0700, should be 1730"), "{e}");
        fs::set_permissions(&md, fs::Permissions::from_mode(MAILDROP_MODE)).unwrap();
        let e = check_owner(s.root(), me + 1, false).unwrap_err();
        assert!(
            e.contains(&format!("owned by uid {me}, should be uid {}", me + 1)),
            "{e}"
        );
    }

    #[test]
    fn open_rejects_non_directory() {
        let d = TempDir::new().unwrap();
        let file = d.path().join("file");
        fs::write(&file, b"x").unwrap();
        let e = Spool::open(&file).unwrap_err().to_string();
        assert!(
            e.contains(&file.display().to_string()) && e.contains("not a directory"),
            "{e}"
        );
        // A subdirectory that is a file.
        let root = d.path().join("s");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("env"), b"x").unwrap();
        let e = Spool::open(&root).unwrap_err().to_string();
        assert!(e.contains("/s/env: not a directory"), "{e}");
    }

    #[test]
    fn commit_list_load_read() {
        let (_d, s) = spool();
        assert!(s.list().unwrap().is_empty());
        let body = b"Subject: hi\n\nhello\n".repeat(10_000); // bigger than the buffer
        let mut inc = s.begin().unwrap();
        let id = inc.id().clone();
        assert!(s.message_path(&id).exists());
        assert!(s.list().unwrap().is_empty());
        inc.write_all(&body).unwrap();
        assert_eq!(inc.bytes_written(), body.len() as u64);
        let mut env = envelope(&id, &["bob@example.net", "\"odd one\"@example.com"]);
        env.size = inc.bytes_written();
        inc.commit(&env).unwrap();

        assert_eq!(s.list().unwrap(), vec![id.clone()]);
        assert_eq!(s.load(&id).unwrap(), env);
        assert_eq!(fs::read(s.message_path(&id)).unwrap(), body);
        assert_eq!(s.message_path(&id), s.root().join("msg").join(id.as_str()));
        assert!(names(&s.root().join(TMP)).is_empty());
        for f in [s.message_path(&id), s.root().join(ENV).join(id.as_str())] {
            assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(fs::metadata(&f).unwrap().nlink(), 1);
        }
        // Nothing for recover to do after a clean commit.
        assert_eq!(s.recover().unwrap(), RecoverStats::default());
        assert_eq!(s.list().unwrap(), vec![id]);
    }

    use std::os::unix::fs::MetadataExt;

    #[test]
    fn empty_body_commits() {
        let (_d, s) = spool();
        let id = queue(&s, b"");
        assert_eq!(fs::read(s.message_path(&id)).unwrap(), b"");
    }

    #[test]
    fn drop_without_commit_leaves_nothing() {
        let (_d, s) = spool();
        let mut inc = s.begin().unwrap();
        inc.write_all(b"partial").unwrap();
        drop(inc);
        let mut inc = s.begin().unwrap();
        inc.write_all(&vec![b'x'; 200_000]).unwrap();
        inc.flush().unwrap();
        drop(inc);
        for sub in [TMP, MSG, ENV] {
            assert!(names(&s.root().join(sub)).is_empty(), "{sub}");
        }
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn commit_with_wrong_id_or_no_recipients_fails_cleanly() {
        let (_d, s) = spool();
        let mut inc = s.begin().unwrap();
        inc.write_all(b"body\n").unwrap();
        let other = QueueId::generate();
        let e = inc.commit(&envelope(&other, &["bob@example.net"])).unwrap_err();
        assert!(e.to_string().contains("is not the message's id"), "{e}");
        assert!(!e.is_no_space() && e.io().is_none());

        let mut inc = s.begin().unwrap();
        inc.write_all(b"body\n").unwrap();
        let id = inc.id().clone();
        let e = inc.commit(&envelope(&id, &[])).unwrap_err();
        assert!(e.to_string().contains("no recipients"), "{e}");

        for sub in [TMP, MSG, ENV] {
            assert!(names(&s.root().join(sub)).is_empty(), "{sub}");
        }
    }

    #[test]
    fn failed_write_is_never_committed() {
        let (_d, s) = spool();
        let mut inc = s.begin().unwrap();
        inc.write_all(b"half a mess").unwrap();
        // As if the disk filled up under BufWriter.
        let _ = inc.fail(io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(inc.write_all(b"more").is_err());
        let id = inc.id().clone();
        let e = inc.commit(&envelope(&id, &["a@b"])).unwrap_err();
        assert!(e.is_no_space(), "{e}");
        assert!(e.to_string().starts_with("spool: write "), "{e}");
        for sub in [TMP, MSG, ENV] {
            assert!(names(&s.root().join(sub)).is_empty(), "{sub}");
        }
        // EINTR does not poison.
        let mut inc = s.begin().unwrap();
        let _ = inc.fail(io::Error::from(io::ErrorKind::Interrupted));
        inc.write_all(b"ok").unwrap();
        let id = inc.id().clone();
        inc.commit(&envelope(&id, &["a@b"])).unwrap();
    }

    #[test]
    fn begin_never_reuses_a_body() {
        let (_d, s) = spool();
        let mut inc = s.begin().unwrap();
        inc.write_all(b"mine").unwrap();
        let id = inc.id().clone();
        // The body is msg/ID itself, created O_EXCL, and not queued until the commit.
        assert!(OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(s.message_path(&id))
            .is_err());
        assert!(s.list().unwrap().is_empty());
        inc.commit(&envelope(&id, &["a@b"])).unwrap();
        assert_eq!(fs::read(s.message_path(&id)).unwrap(), b"mine");
        assert!(names(&s.root().join(TMP)).is_empty());
    }

    #[test]
    fn recover_cleans_up() {
        let (_d, s) = spool();
        let good = queue(&s, b"good\n");
        let root = s.root().to_owned();

        // A crash mid-receive and mid-commit: tmp leftovers, a body with no envelope.
        let crashed = QueueId::generate();
        fs::write(root.join(TMP).join(format!("{crashed}.msg")), b"half").unwrap();
        fs::write(root.join(TMP).join(format!("{crashed}.env")), b"version: 1\nid: ").unwrap();
        fs::create_dir(root.join(TMP).join("junkdir")).unwrap();
        fs::write(root.join(TMP).join("junkdir").join("f"), b"").unwrap();
        fs::write(root.join(MSG).join(crashed.as_str()), b"orphan").unwrap();

        // A held message keeps its body.
        let held = QueueId::generate();
        fs::write(
            root.join(HOLD).join(held.as_str()),
            envelope(&held, &["a@b"]).to_text(),
        )
        .unwrap();
        fs::write(root.join(MSG).join(held.as_str()), b"held").unwrap();

        // A corrupt envelope goes to corrupt/, its body stays for a human.
        let bad = QueueId::generate();
        fs::write(root.join(ENV).join(bad.as_str()), b"version: 1\nid: garbage\n").unwrap();
        fs::write(root.join(MSG).join(bad.as_str()), b"bad").unwrap();
        // So does an env/ name that is not an id, and an envelope without its body.
        fs::write(root.join(ENV).join("notes.txt~"), b"hello").unwrap();
        let nobody = QueueId::generate();
        fs::write(
            root.join(ENV).join(nobody.as_str()),
            envelope(&nobody, &["a@b"]).to_text(),
        )
        .unwrap();
        // An envelope whose text names another id.
        let liar = QueueId::generate();
        fs::write(
            root.join(ENV).join(liar.as_str()),
            envelope(&good, &["a@b"]).to_text(),
        )
        .unwrap();
        fs::write(root.join(MSG).join(liar.as_str()), b"liar").unwrap();
        // An earlier corrupt file of the same name is not replaced.
        fs::write(root.join(CORRUPT).join(bad.as_str()), b"older").unwrap();

        let stats = s.recover().unwrap();
        assert_eq!(
            stats,
            RecoverStats {
                tmp_removed: 3,
                orphans_removed: 1,
                corrupt: 4
            }
        );
        assert!(names(&root.join(TMP)).is_empty());
        assert_eq!(s.list().unwrap(), vec![good.clone()]);
        assert_eq!(names(&root.join(ENV)), vec![good.to_string()]);
        let mut msgs = vec![
            good.to_string(),
            held.to_string(),
            bad.to_string(),
            liar.to_string(),
        ];
        msgs.sort();
        assert_eq!(names(&root.join(MSG)), msgs);
        let mut corrupt = vec![
            bad.to_string(),
            format!("{bad}.1"),
            "notes.txt~".to_owned(),
            nobody.to_string(),
            liar.to_string(),
        ];
        corrupt.sort();
        assert_eq!(names(&root.join(CORRUPT)), corrupt);
        assert_eq!(fs::read(root.join(CORRUPT).join(bad.as_str())).unwrap(), b"older");
        assert_eq!(fs::read(s.message_path(&good)).unwrap(), b"good\n");

        // Idempotent.
        assert_eq!(s.recover().unwrap(), RecoverStats::default());
    }

    #[test]
    fn update_round_trip() {
        let (_d, s) = spool();
        let id = queue(&s, b"x\n");
        let mut env = s.load(&id).unwrap();
        env.recipients[0].status = RcptStatus::Deferred;
        env.recipients[0].attempts = 1;
        env.recipients[0].next_attempt = Some(1_700_000_600);
        env.recipients[0].last_reply = Some("451 4.7.1 try later".into());
        s.update(&env).unwrap();
        assert_eq!(s.load(&id).unwrap(), env);
        assert!(names(&s.root().join(TMP)).is_empty());
        assert_eq!(fs::read(s.message_path(&id)).unwrap(), b"x\n");

        // Not for messages that are not queued.
        let gone = envelope(&QueueId::generate(), &["a@b"]);
        let e = s.update(&gone).unwrap_err();
        assert!(e.to_string().contains("no such queued message"), "{e}");
        assert!(names(&s.root().join(ENV)).len() == 1);
        // Nor for envelopes that would not parse back.
        env.recipients.clear();
        assert!(s.update(&env).is_err());
        assert_eq!(s.load(&id).unwrap().recipients.len(), 1);
    }

    #[test]
    fn remove_message() {
        let (_d, s) = spool();
        let a = queue(&s, b"a");
        let b = queue(&s, b"b");
        s.remove(&a).unwrap();
        assert_eq!(s.list().unwrap(), vec![b.clone()]);
        assert!(!s.message_path(&a).exists());
        assert!(s.load(&a).unwrap_err().io().is_some());
        // Removing twice errors and touches nothing.
        let e = s.remove(&a).unwrap_err();
        assert_eq!(e.io().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
        assert!(s.message_path(&b).exists());
    }

    #[test]
    fn hold_release_lock() {
        let (_d, s) = spool();
        let id = queue(&s, b"a");
        assert_eq!(s.place(&id).unwrap(), Some(Place::Queued));
        let lock = s.lock(&id).unwrap();
        assert!(s.is_locked(&id));
        s.hold(&id).unwrap();
        drop(lock);
        assert!(!s.is_locked(&id));
        assert_eq!(s.place(&id).unwrap(), Some(Place::Held));
        assert!(s.list().unwrap().is_empty());
        assert_eq!(s.list_held().unwrap(), vec![id.clone()]);
        assert_eq!(s.load_held(&id).unwrap().id, id);
        assert!(s.hold(&id).is_err());
        // recover keeps a held message's body.
        assert_eq!(s.recover().unwrap(), RecoverStats::default());
        s.release(&id).unwrap();
        assert_eq!(s.list().unwrap(), vec![id.clone()]);
        s.hold(&id).unwrap();
        s.remove_held(&id).unwrap();
        assert_eq!(s.place(&id).unwrap(), None);
        assert!(!s.message_path(&id).exists());
        assert!(s.lock(&id).is_err());
    }

    #[test]
    fn list_ignores_foreign_names() {
        let (_d, s) = spool();
        let id = queue(&s, b"a");
        fs::write(s.root().join(ENV).join(".hidden"), b"").unwrap();
        fs::write(s.root().join(ENV).join("0123"), b"").unwrap();
        assert_eq!(s.list().unwrap(), vec![id]);
    }

    #[test]
    fn concurrent_commits() {
        for mode in [SyncMode::Syncfs, SyncMode::Fsync] {
            let (_d, s) = spool();
            concurrent_commits_with(&s.with_sync(mode));
        }
    }

    fn concurrent_commits_with(s: &Spool) {
        let ids: Vec<QueueId> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..8)
                .map(|t| {
                    sc.spawn(move || {
                        (0..50)
                            .map(|i| queue(s, format!("thread {t} message {i}\n").as_bytes()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(ids.len(), 400);
        let distinct: HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), 400);
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(s.list().unwrap(), sorted);
        for id in &ids {
            assert_eq!(s.load(id).unwrap().id, *id);
        }
        assert!(names(&s.root().join(TMP)).is_empty());
    }

    #[test]
    fn has_room_guard() {
        let (_d, s) = spool();
        assert!(s.has_room(0, 0));
        assert!(s.has_room(1024, 1));
        let (avail, total, _, _) = sys::fs_space(s.root()).unwrap();
        if total > 0 {
            assert!(!s.has_room(u64::MAX, 0));
            // (Other tests change the free space meanwhile: leave a wide margin.)
            assert!(!s.has_room(avail.saturating_add(total), 0));
            assert!(!s.has_room(0, 100) || avail == total);
        }
        // statvfs failing counts as room.
        let gone = Spool {
            root: s.root().join("no/such/dir"),
            committer: Arc::default(),
            sync: SyncMode::default(),
        };
        assert!(gone.has_room(u64::MAX, 100));
    }

    #[test]
    fn error_display_and_no_space() {
        let e = SpoolError::from_io(
            "write",
            Path::new("/x/tmp/ID.msg"),
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert!(e.is_no_space());
        assert!(
            e.to_string()
                .starts_with("spool: write /x/tmp/ID.msg: No space left on device"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(
            SpoolError::from_io("w", Path::new("/"), io::Error::from_raw_os_error(libc::EDQUOT))
                .is_no_space()
        );
        assert!(
            SpoolError::from_io("w", Path::new("/"), io::Error::from(io::ErrorKind::StorageFull))
                .is_no_space()
        );
        assert!(
            !SpoolError::from_io("w", Path::new("/"), io::Error::from_raw_os_error(libc::EIO)).is_no_space()
        );
    }
}
