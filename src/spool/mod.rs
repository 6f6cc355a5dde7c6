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
//! msg/ID     message body, written once, then sealed with the first envelope and a
//!            CRC (seal.rs) and fsync'd: the commit point
//! env/ID     envelope; renamed in from tmp/ after the commit, later replaced only by
//!            tmp + fsync + rename
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
mod incoming;
pub mod listing;
pub mod maildrop;
pub mod retire;
mod seal;

pub use envelope::{BodyType, DsnRet, Envelope, EnvelopeError, RcptStatus, Recipient};
pub use id::QueueId;
pub use incoming::Incoming;
pub use retire::Retired;

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::SyncMode;
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
    /// msg/ files removed because no envelope refers to them and their seal does
    /// not verify (commits cut short).
    pub orphans_removed: usize,
    /// Committed messages whose envelope a crash lost, queued again from their seal.
    pub restored: usize,
    /// Finished messages (msg/ID.done) whose removal a crash cut short, removed.
    pub finished: usize,
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
    /// - finish the removal of finished messages (msg/ID.done, see retire.rs): their
    ///   env/ID or hold/ID if still there, then the body;
    /// - move env/ entries into corrupt/ (with a warning) when their name is not a queue
    ///   id, they are not regular files, the envelope does not parse or names another id,
    ///   or their msg/ID body is missing;
    /// - for msg/ID files with no env/ID, hold/ID or corrupt/ID: when the seal verifies
    ///   (seal.rs), the message was committed and a crash lost the rename of its
    ///   envelope, so env/ID (or hold/ID) is written again from the seal; otherwise it
    ///   is an orphan of a crash during reception or commit and is removed. Bodies of
    ///   corrupt envelopes are kept so a human can still deliver them.
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

        // Finished messages first (retire.rs): their envelopes, where an unlink was
        // lost, must not be taken for queued messages that lost their bodies.
        stats.finished = self.finish_retired()?;

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
        let mut restored_into = std::collections::BTreeSet::new();
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
            if referenced {
                continue;
            }
            let path = entry.path();
            if let Some(place) = self.restore(&id, &path)? {
                stats.restored += 1;
                restored_into.insert(place);
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => stats.orphans_removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::from_io("remove", &path, e)),
            }
        }
        if stats.orphans_removed > 0 {
            sync_dir(&msg_dir)?;
        }
        for sub in restored_into {
            sync_dir(&self.dir(sub))?;
        }

        if stats != RecoverStats::default() {
            log::info!(
                "spool: recovered {}: {} tmp files removed, {} finished messages removed, {} orphan bodies removed, {} messages queued again from their seal, {} corrupt envelopes",
                self.root.display(),
                stats.tmp_removed,
                stats.finished,
                stats.orphans_removed,
                stats.restored,
                stats.corrupt
            );
        }
        Ok(stats)
    }

    /// Remove every finished message's leftovers: `sub`/ID for env/ and hold/ (an
    /// unlink a crash lost), fsync'd, then msg/ID.done. How many there were.
    fn finish_retired(&self) -> Result<usize, SpoolError> {
        let mut ids = Vec::new();
        for entry in read_dir(&self.dir(MSG))? {
            let name = entry.file_name();
            let id = name
                .to_str()
                .and_then(|n| n.strip_suffix(retire::DONE))
                .and_then(QueueId::parse);
            if let Some(id) = id {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Ok(0);
        }
        for sub in [ENV, HOLD] {
            let mut removed = false;
            for id in &ids {
                let path = self.file(sub, id);
                match fs::remove_file(&path) {
                    Ok(()) => removed = true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(SpoolError::from_io("remove", &path, e)),
                }
            }
            if removed {
                sync_dir(&self.dir(sub))?;
            }
        }
        self.remove_done(&ids);
        Ok(ids.len())
    }

    /// Queue msg/ID again from its seal, when it has one that verifies and holds a
    /// sound envelope of this id and size: write env/ID (or hold/ID) through tmp/
    /// with its contents fsync'd. Returns where it went; None leaves the file alone.
    fn restore(&self, id: &QueueId, path: &Path) -> Result<Option<&'static str>, SpoolError> {
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SpoolError::from_io("open", path, e)),
        };
        let Some(sealed) = seal::open(&mut f).map_err(|e| SpoolError::from_io("read", path, e))? else {
            return Ok(None);
        };
        let sound =
            Envelope::parse(&sealed.env_text).is_ok_and(|env| env.id == *id && env.size == sealed.body_len);
        if !sound {
            log::warn!(
                "spool: {}: its seal verifies but holds no envelope of its own",
                path.display()
            );
            return Ok(None);
        }
        let sub = if sealed.held { HOLD } else { ENV };
        let tmp = self.dir(TMP).join(format!("{id}.env"));
        // Recover runs before a root ternd drops to its user: the envelope gets
        // the owner of the body it is for, or the daemon could not read it.
        let owner = f.metadata().map_err(|e| SpoolError::from_io("stat", path, e))?;
        let owner = (sys::uids().1 == 0).then_some((owner.uid(), owner.gid()));
        write_synced_as(&tmp, sealed.env_text.as_bytes(), owner)?;
        let target = self.file(sub, id);
        fs::rename(&tmp, &target).map_err(|e| SpoolError::from_io("rename", &tmp, e))?;
        log::info!(
            "spool: {id}: envelope lost in a crash, queued again into {sub}/ from the seal of msg/{id}"
        );
        Ok(Some(sub))
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
                crc: seal::Crc::new(),
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

    /// msg/ID: the message body and, after its `env.size` octets, its seal. Read it
    /// through [`Spool::open_message`] (or read only `env.size` octets); it is never
    /// modified.
    pub fn message_path(&self, id: &QueueId) -> PathBuf {
        self.file(MSG, id)
    }

    /// The body of the message `env` describes, for reading: its `env.size` octets,
    /// without the seal that follows.
    pub fn open_message(&self, env: &Envelope) -> io::Result<io::Take<File>> {
        use std::io::Read;
        Ok(File::open(self.message_path(&env.id))?.take(env.size))
    }

    /// The whole body of the message `env` describes.
    pub fn read_message(&self, env: &Envelope) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut body = Vec::with_capacity(usize::try_from(env.size).unwrap_or(0));
        self.open_message(env)?.read_to_end(&mut body)?;
        Ok(body)
    }

    /// The mail log's lines for a message just committed (`maillog::queued`):
    /// its Message-ID, read back from msg/ID, and its envelope's sender, size
    /// and recipient count. Every door into the queue logs this way.
    pub fn log_queued(&self, env: &Envelope) {
        let message_id = self.message_id(env);
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
    pub fn message_id(&self, env: &Envelope) -> Option<String> {
        use std::io::Read;
        let mut head = Vec::new();
        self.open_message(env)
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

    /// Remove a queued message now, durably, as `remove_from` says (for ternctl; the
    /// queue runner uses [`Spool::retire`]). Errors if env/ID does not exist, and
    /// then touches nothing (msg/ID may belong to a held message).
    pub fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        self.remove_from(ENV, id)
    }

    /// Take `sub`/ID out durably: mark its body finished (msg/ID.done) and unlink
    /// `sub`/ID, fsync msg/ and then `sub`/, then remove the body (see retire.rs for
    /// why in this order: a crash never leaves an envelope without its body, nor a
    /// body that recover would queue again).
    fn remove_from(&self, sub: &str, id: &QueueId) -> Result<(), SpoolError> {
        self.unqueue(sub, id)?;
        sync_dir(&self.dir(MSG))?;
        sync_dir(&self.dir(sub))?;
        self.remove_done(std::slice::from_ref(id));
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
    write_synced_as(path, data, None)
}

/// [`write_synced`], the file given to `owner` (uid, gid) before its fsync.
fn write_synced_as(path: &Path, data: &[u8], owner: Option<(u32, u32)>) -> Result<(), SpoolError> {
    let f = write_new(path, data)?;
    let chown = |(uid, gid)| {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(|e| SpoolError::from_io("chown", path, e))
    };
    let r = owner
        .map_or(Ok(()), chown)
        .and_then(|()| f.sync_all().map_err(|e| SpoolError::from_io("fsync", path, e)));
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
mod tests;
