//! Group commit: the last, envelope-naming part of
//! [`Incoming::commit`](super::Incoming::commit), done for many messages at once.
//!
//! Each receiving thread first does its own message's part, in parallel with the
//! others: it has written the body to msg/ID, writes tmp/ID.env and starts both
//! files' writeback (with `SyncMode::Fsync` it also fsyncs both). It then queues the
//! message here and waits. Whoever finds no batch in progress becomes the committer:
//! it takes every message queued at that moment, makes their bytes and their bodies'
//! names durable at once, renames all the envelopes into env/, fsyncs env/ once, and
//! then publishes each message's result and wakes the waiters; one of those still
//! waiting takes the next batch.
//!
//! "At once" is `syncfs(2)` with `SyncMode::Syncfs` (the default): one call writes
//! every file of the batch, their inodes and msg/'s entries, and flushes the device
//! cache once, where fsyncing each file costs a flush per file (on ext4 without a
//! journal, as on the development VM, and on most disks). A batch of fifty costs two
//! flushes, not a hundred and two: what lets acceptance pass the one-fsync-per-file
//! durability ceiling. With `SyncMode::Fsync` it is one fsync of msg/, the files
//! having been fsync'd by their sessions. Either way a directory fsync costs as much
//! for fifty new names as for one, and a directory that other threads keep changing
//! is never "already clean": one per batch instead of one per message.
//!
//! Why no dedicated committer thread fed by a channel: that costs two thread switches
//! per message even when a session is alone (measured with strace -c -f over 1000
//! messages in one session: futex calls 4.3 -> 9.0 and sched_yield 4.0 -> 11.9 per
//! message), and a lone session's commit would wait for a thread that 2 busy cores do
//! not schedule at once. Here a lone session commits its own batch of one, and under
//! load the batching is the same as a committer thread's.
//!
//! Every message of a batch keeps the order of the single-message protocol (see
//! src/spool/README.md): its body and envelope bytes and its body's name are durable
//! before its envelope is renamed into env/, and that rename is durable before it is
//! reported. Errors are per message: a rename that fails fails only its message; a
//! sync that fails fails every message whose bytes or name it was to make durable
//! (syncfs reports any writeback error on the filesystem since the last call, so one
//! that is not ours fails a batch too: a 451 and a retry, never a lost message).
//! A failed message's names are removed again (envelope first), so nothing
//! half-committed stays in msg/ or env/.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use super::{sync_dir, QueueId, SpoolError, SyncMode, ENV, MSG};
use crate::sys;
use std::os::fd::AsRawFd;

/// At most this many messages in one batch, so a flood cannot delay the first
/// waiter's 250 without bound.
const MAX_BATCH: usize = 256;

/// One message whose files are written: its body msg/ID, and its envelope waiting in
/// tmp/ (both fsync'd by the session with `SyncMode::Fsync`; with `Syncfs`, the
/// batch's syncfs makes them durable).
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: QueueId,
    /// tmp/ID.env
    pub(super) tmp_env: PathBuf,
}

/// The group commit of one spool, shared by its clones.
#[derive(Debug, Default)]
pub(super) struct Committer {
    state: Mutex<State>,
    /// Signalled when a batch's results are published.
    done: Condvar,
    /// Opened on first use.
    dirs: OnceLock<Dirs>,
}

#[derive(Debug, Default)]
struct State {
    /// Messages waiting for the next batch, with their tickets.
    queue: Vec<(u64, Pending)>,
    /// Results not yet collected, by ticket.
    results: HashMap<u64, Result<(), SpoolError>>,
    /// A batch is being committed (by some thread, outside the lock).
    busy: bool,
    next_ticket: u64,
}

impl Committer {
    /// Make `p` durable and queued; returns once it is, or with its own error (and
    /// then its msg/ID and tmp/ID.env are gone).
    pub(super) fn commit(&self, root: &Path, mode: SyncMode, p: Pending) -> Result<(), SpoolError> {
        let mut st = self.lock();
        let ticket = st.next_ticket;
        st.next_ticket = st.next_ticket.wrapping_add(1);
        st.queue.push((ticket, p));
        loop {
            if let Some(r) = st.results.remove(&ticket) {
                return r;
            }
            if st.busy {
                st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Nobody is committing: commit everything queued, ours included.
            st.busy = true;
            let n = st.queue.len().min(MAX_BATCH);
            let batch: Vec<(u64, Pending)> = st.queue.drain(..n).collect();
            drop(st);
            let dirs = self.dirs.get_or_init(|| Dirs::new(root));
            let refs: Vec<&Pending> = batch.iter().map(|(_, p)| p).collect();
            let results = commit_batch(dirs, mode, &refs);
            st = self.lock();
            st.busy = false;
            for ((t, _), r) in batch.iter().zip(results) {
                st.results.insert(*t, r);
            }
            self.done.notify_all();
        }
    }

    /// The state is consistent at every unlock: a panic elsewhere leaves it usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// msg/ and env/, with descriptors kept open for their fsyncs (two syscalls less per
/// batch; when opening fails, each fsync opens the path itself).
#[derive(Debug)]
pub(super) struct Dirs {
    msg: PathBuf,
    env: PathBuf,
    msg_fd: Option<File>,
    env_fd: Option<File>,
}

impl Dirs {
    pub(super) fn new(root: &Path) -> Dirs {
        let (msg, env) = (root.join(MSG), root.join(ENV));
        Dirs {
            msg_fd: File::open(&msg).ok(),
            env_fd: File::open(&env).ok(),
            msg,
            env,
        }
    }

    fn sync(fd: Option<&File>, path: &Path) -> Result<(), SpoolError> {
        match fd {
            Some(f) => f.sync_all().map_err(|e| SpoolError::from_io("fsync", path, e)),
            None => sync_dir(path),
        }
    }

    /// Everything the batch wrote durable, msg/'s names included: syncfs on msg/'s
    /// filesystem (the whole spool is one), or an fsync of msg/ when each session has
    /// fsync'd its own files.
    fn sync_batch(&self, mode: SyncMode) -> Result<(), SpoolError> {
        match mode {
            SyncMode::Fsync => Dirs::sync(self.msg_fd.as_ref(), &self.msg),
            SyncMode::Syncfs => {
                let opened;
                let fd = match self.msg_fd.as_ref() {
                    Some(f) => f,
                    None => {
                        opened =
                            File::open(&self.msg).map_err(|e| SpoolError::from_io("open", &self.msg, e))?;
                        &opened
                    }
                };
                sys::syncfs(fd.as_raw_fd()).map_err(|e| SpoolError::from_io("syncfs", &self.msg, e))
            }
        }
    }
}

/// Make the batch's files and bodies' names durable (syncfs, or fsync msg/), rename
/// every envelope into env/, fsync env/. One result per message, in order. Every
/// message that fails is undone: its env/ID (if renamed), its msg/ID and its
/// tmp/ID.env are removed.
pub(super) fn commit_batch(dirs: &Dirs, mode: SyncMode, batch: &[&Pending]) -> Vec<Result<(), SpoolError>> {
    let mut renamed = vec![false; batch.len()];
    let mut results: Vec<Result<(), SpoolError>> = batch.iter().map(|_| Ok(())).collect();

    // The files and the bodies' names are durable before any envelope can be.
    if !batch.is_empty() {
        if let Err(e) = dirs.sync_batch(mode) {
            for r in results.iter_mut() {
                *r = Err(e.duplicate());
            }
        }
    }
    // The rename is each message's commit point: atomic, env/ID absent or complete.
    for ((p, done), r) in batch.iter().zip(renamed.iter_mut()).zip(results.iter_mut()) {
        if r.is_err() {
            continue;
        }
        let env = dirs.env.join(p.id.as_str());
        match fs::rename(&p.tmp_env, &env) {
            Ok(()) => *done = true,
            Err(e) => *r = Err(SpoolError::from_io("rename", &p.tmp_env, e)),
        }
    }
    if renamed.contains(&true) {
        if let Err(e) = Dirs::sync(dirs.env_fd.as_ref(), &dirs.env) {
            for (done, r) in renamed.iter().zip(results.iter_mut()) {
                if *done {
                    *r = Err(e.duplicate());
                }
            }
        }
    }

    // Undo the failures, in deletion order (envelope first), so a crash during the undo
    // leaves at most an orphan body for recover.
    let mut unrenamed = false;
    for ((p, done), r) in batch.iter().zip(renamed.iter()).zip(results.iter()) {
        if r.is_ok() {
            continue;
        }
        let _ = fs::remove_file(&p.tmp_env);
        if *done {
            let _ = fs::remove_file(dirs.env.join(p.id.as_str()));
            unrenamed = true;
        }
        let _ = fs::remove_file(dirs.msg.join(p.id.as_str()));
    }
    if unrenamed {
        let _ = Dirs::sync(dirs.env_fd.as_ref(), &dirs.env);
    }
    results
}

/// An io::Error like `e` (same errno, so `is_no_space` still answers the same).
pub(super) fn dup_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::tests::names;
    use crate::spool::{Envelope, Recipient, Spool, TMP};
    use std::thread;
    use tempfile::TempDir;

    const MODES: [SyncMode; 2] = [SyncMode::Syncfs, SyncMode::Fsync];

    /// A message as Incoming::commit hands it over: msg/ID linked, tmp/ID.env written.
    fn pending(s: &Spool) -> Pending {
        let id = QueueId::generate();
        let p = Pending {
            tmp_env: s.root().join(TMP).join(format!("{id}.env")),
            id,
        };
        let mut env = Envelope::new(p.id.clone(), "a@example.org".into(), 1_700_000_000);
        env.recipients.push(Recipient::new("b@example.net".into()));
        fs::write(s.message_path(&p.id), format!("body of {}\n", p.id)).unwrap();
        fs::write(&p.tmp_env, env.to_text()).unwrap();
        p
    }

    #[test]
    fn one_failure_fails_only_its_message() {
        for mode in MODES {
            let d = TempDir::new().unwrap();
            let s = Spool::open(&d.path().join("spool")).unwrap();
            let batch: Vec<Pending> = (0..6).map(|_| pending(&s)).collect();
            // 1: its envelope vanished from tmp/.
            fs::remove_file(&batch[1].tmp_env).unwrap();
            // 4: something (a directory, not empty) is in the way in env/.
            let blocker = s.root().join(ENV).join(batch[4].id.as_str());
            fs::create_dir(&blocker).unwrap();
            fs::write(blocker.join("x"), b"").unwrap();
            let refs: Vec<&Pending> = batch.iter().collect();
            let results = commit_batch(&Dirs::new(s.root()), mode, &refs);
            let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
            assert_eq!(ok, [true, false, true, true, false, true]);
            for bad in [1, 4] {
                let e = results[bad].as_ref().unwrap_err();
                assert!(e.to_string().starts_with("spool: rename "), "{e}");
                assert!(!s.message_path(&batch[bad].id).exists());
            }
            assert_eq!(
                results[1].as_ref().unwrap_err().io().map(io::Error::kind),
                Some(io::ErrorKind::NotFound)
            );

            let good: Vec<QueueId> = [0, 2, 3, 5].iter().map(|&i| batch[i].id.clone()).collect();
            fs::remove_file(blocker.join("x")).unwrap();
            fs::remove_dir(&blocker).unwrap();
            assert_eq!(s.list().unwrap(), good);
            for id in &good {
                assert_eq!(s.load(id).unwrap().id, *id);
                assert_eq!(
                    fs::read(s.message_path(id)).unwrap(),
                    format!("body of {id}\n").as_bytes()
                );
            }
            assert!(names(&s.root().join(TMP)).is_empty());
            assert_eq!(names(&s.root().join(MSG)).len(), 4);
        }
    }

    #[test]
    fn a_failed_batch_sync_fails_and_undoes_every_message() {
        for mode in MODES {
            let d = TempDir::new().unwrap();
            let s = Spool::open(&d.path().join("spool")).unwrap();
            let batch: Vec<Pending> = (0..3).map(|_| pending(&s)).collect();
            let refs: Vec<&Pending> = batch.iter().collect();
            // msg/ cannot be opened for its sync: nothing may be renamed into env/.
            let mut dirs = Dirs::new(s.root());
            dirs.msg = s.root().join("gone");
            dirs.msg_fd = None;
            let results = commit_batch(&dirs, mode, &refs);
            for r in &results {
                let e = r.as_ref().unwrap_err().to_string();
                assert!(e.contains("/gone"), "{mode:?}: {e}");
            }
            assert!(s.list().unwrap().is_empty());
            assert!(names(&s.root().join(TMP)).is_empty());
        }
    }

    #[test]
    fn every_rename_failing_undoes_every_body() {
        for mode in MODES {
            let d = TempDir::new().unwrap();
            let s = Spool::open(&d.path().join("spool")).unwrap();
            let batch: Vec<Pending> = (0..3).map(|_| pending(&s)).collect();
            let refs: Vec<&Pending> = batch.iter().collect();
            // A spool whose env/ has gone: every rename fails, and the undo removes the
            // bodies and the tmp files.
            fs::remove_dir(s.root().join(ENV)).unwrap();
            let results = commit_batch(&Dirs::new(s.root()), mode, &refs);
            assert!(results.iter().all(Result::is_err));
            assert!(names(&s.root().join(MSG)).is_empty());
            assert!(names(&s.root().join(TMP)).is_empty());
        }
    }

    #[test]
    fn many_threads_commit_through_one_committer() {
        for mode in MODES {
            let d = TempDir::new().unwrap();
            let s = Spool::open(&d.path().join("spool")).unwrap();
            let c = Committer::default();
            let batch: Vec<Pending> = (0..40).map(|_| pending(&s)).collect();
            // One of them cannot be committed: only it fails, whatever batch it lands in.
            let bad = batch[17].id.clone();
            fs::remove_file(&batch[17].tmp_env).unwrap();
            let mut ids: Vec<QueueId> = batch
                .iter()
                .map(|p| p.id.clone())
                .filter(|id| *id != bad)
                .collect();
            let failed: Vec<QueueId> = thread::scope(|sc| {
                let hs: Vec<_> = batch
                    .into_iter()
                    .map(|p| {
                        let (c, root) = (&c, s.root());
                        sc.spawn(move || {
                            let id = p.id.clone();
                            c.commit(root, mode, p).err().map(|_| id)
                        })
                    })
                    .collect();
                hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(failed, vec![bad.clone()]);
            assert!(!s.message_path(&bad).exists());
            ids.sort();
            assert_eq!(s.list().unwrap(), ids);
            for id in &ids {
                assert_eq!(s.load(id).unwrap().id, *id);
            }
            assert!(names(&s.root().join(TMP)).is_empty());
            let st = c.lock();
            assert!(st.queue.is_empty() && st.results.is_empty() && !st.busy);
        }
    }
}
