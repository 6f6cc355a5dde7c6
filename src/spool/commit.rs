//! Group commit: the last, envelope-naming part of
//! [`Incoming::commit`](super::Incoming::commit), done for many messages at once.
//!
//! Each receiving thread first does its own message's part, in parallel with the
//! others: it has written the body to msg/ID, writes tmp/ID.env and starts both
//! files' writeback. With `SyncMode::Fsync` (the default) it then makes its own
//! message durable (`Dirs::sync_message`): fdatasync of the body and of the envelope
//! and fsync of msg/ (the body's name), the three issued at once, two of them by the
//! spool's sync helpers (syncpool.rs). It then queues the message here. Whoever finds
//! nobody leading leads: it commits its own message and those queued while it waited
//! for the lead (at most `MAX_BATCH` in all). With `SyncMode::Syncfs` it first makes
//! their bytes and their bodies' names durable with one syncfs(2); either way it then
//! renames all the envelopes into env/ and fsyncs env/ once. Then it hands the lead to
//! the oldest message still queued, if any, and gives each member of its batch its
//! result.
//!
//! A queued message's thread sleeps in a slot of its own and is woken exactly once:
//! with its result, or to lead the next batch (its own message first). Nobody is woken
//! to find nothing and sleep again, as with one condvar and `notify_all` per batch:
//! that woke every session queued for the next batch too, each taking the contended
//! state lock on the way, and cost a futex call per batch even with nobody waiting.
//! (Futex calls made in the commit, counted from `strace -f -k` stacks over 1000
//! messages from 10 sessions: 3.1 per message with the condvar, 1.3 now, one park
//! and one unpark per message that waits.) The leader hands over the lead before it
//! wakes its batch, so the next batch's syncs start while the sessions reply.
//!
//! What a batch shares. A directory fsync costs as much for fifty new names as for
//! one, and a directory that other threads keep changing is never "already clean":
//! env/ is fsync'd once per batch, not once per message. The files are where the two
//! modes differ:
//!
//! - `Fsync` syncs each message's own files and nothing else, so a neighbour writing
//!   to the same filesystem costs it only the disk time it takes (issue 21: a process
//!   rewriting a 256 MiB file took `syncfs` down to 0.12-0.3 of its quiet rate at 10
//!   sessions, tern/README in tests/bench has the figures). The sharing comes from
//!   issuing the syncs together: a device cache flush requested while another is in
//!   flight waits for the next one, which serves every request queued meanwhile
//!   (block/blk-flush.c), and on a journalling filesystem concurrent fsyncs join one
//!   journal commit (ext4's jbd2, XFS's log force). On ext4 without a journal (the
//!   development VM) each fsync writes its file's data, its inode's table block and,
//!   for a new file, its directory's block and inode (`ext4_sync_parent`), then asks
//!   for a flush. So a lone message costs two rounds of syncs (its three at once,
//!   then env/), and many sessions sync their messages side by side while the batch
//!   before theirs commits, each batch then costing one fsync.
//! - `Syncfs` makes the whole batch durable with one call: every file of the batch,
//!   their inodes and msg/'s entries, one device flush. But it writes out everything
//!   dirty on the filesystem, another program's data as much as ours, and waits for
//!   it: with a busy neighbour every batch waits for that neighbour's writes.
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
//! reported. Errors are per message: a file sync or a rename that fails fails only its
//! message; a sync of a directory or of the filesystem that fails fails every message
//! whose bytes or name it was to make durable (syncfs reports any writeback error on
//! the filesystem since the last call, so one that is not ours fails a batch too: a
//! 451 and a retry, never a lost message). A failed message's names are removed again
//! (envelope first), so nothing half-committed stays in msg/ or env/.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use super::syncpool::{SyncPool, What};
use super::{sync_dir, QueueId, SpoolError, ENV, HOLD, MSG};
use crate::config::SyncMode;
use crate::sys;
use std::os::fd::AsRawFd;

/// At most this many messages in one batch, so a flood cannot delay the first
/// waiter's 250 without bound.
const MAX_BATCH: usize = 256;

/// One message whose files are written: its body msg/ID, and its envelope waiting in
/// tmp/ (synced by its session with `SyncMode::Fsync`; with `Syncfs`, the batch's
/// syncfs makes them durable).
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: QueueId,
    /// tmp/ID.env
    pub(super) tmp_env: PathBuf,
    /// Committed into hold/ instead of env/: queued on hold from the start
    /// (a milter's quarantine), never seen by the queue runner until released.
    pub(super) held: bool,
    /// msg/ID and tmp/ID.env, still open.
    pub(super) files: [Arc<File>; 2],
    /// `SyncMode::Fsync`: how its session's syncs of both files and msg/ went (None:
    /// not done yet, the batch does them).
    pub(super) synced: Option<Result<(), SpoolError>>,
}

/// The group commit of one spool, shared by its clones.
#[derive(Debug, Default)]
pub(super) struct Committer {
    state: Mutex<State>,
    /// Opened on first use.
    dirs: OnceLock<Dirs>,
}

#[derive(Debug, Default)]
struct State {
    /// Messages waiting for the next batch, each with its sleeping thread.
    queue: VecDeque<(Pending, Arc<Waiter>)>,
    /// Some thread leads: it is committing a batch outside the lock, or it has been
    /// handed the lead and is about to. While nobody leads the queue is empty.
    busy: bool,
}

/// A queued message's thread, asleep until a leader hands it an [`Outcome`]: its own
/// slot, so that it alone is woken, once.
#[derive(Debug)]
struct Waiter {
    thread: Thread,
    outcome: Mutex<Option<Outcome>>,
}

#[derive(Debug)]
enum Outcome {
    /// The message's batch is committed: this is its own result.
    Done(Result<(), SpoolError>),
    /// Lead the next batch, this message first (taken out of the queue for it).
    Lead(Pending),
}

impl Waiter {
    /// Store the outcome, then wake the thread. A wake-up cannot be lost: `unpark`
    /// before `park` makes that `park` return at once, and the thread looks at its
    /// slot after every return (which also covers spurious ones).
    fn finish(&self, o: Outcome) {
        *lock(&self.outcome) = Some(o);
        self.thread.unpark();
    }

    fn wait(&self) -> Outcome {
        loop {
            let o = lock(&self.outcome).take();
            match o {
                Some(o) => return o,
                None => thread::park(),
            }
        }
    }
}

impl Committer {
    /// Make `p` durable and queued; returns once it is, or with its own error (and
    /// then its msg/ID and tmp/ID.env are gone).
    pub(super) fn commit(&self, root: &Path, mode: SyncMode, mut p: Pending) -> Result<(), SpoolError> {
        let dirs = self.dirs.get_or_init(|| Dirs::new(root));
        if mode == SyncMode::Fsync {
            // The message's own syncs, in this session's thread (and the pool's),
            // alongside the other sessions' and whatever batch is being committed:
            // the batch then has only the renames to make durable.
            p.synced = Some(dirs.sync_message(&p));
        }
        self.run(p, |batch| {
            let _timer = crate::metrics::spool_commit();
            commit_batch(dirs, mode, batch)
        })
    }

    /// The group commit around `commit`, which makes a batch durable and gives one
    /// result per message, in order.
    fn run<F>(&self, p: Pending, commit: F) -> Result<(), SpoolError>
    where
        F: FnOnce(&[&Pending]) -> Vec<Result<(), SpoolError>>,
    {
        let mut st = lock(&self.state);
        let p = if st.busy {
            let w = Arc::new(Waiter {
                thread: thread::current(),
                outcome: Mutex::new(None),
            });
            st.queue.push_back((p, Arc::clone(&w)));
            drop(st);
            match w.wait() {
                Outcome::Done(r) => return r,
                Outcome::Lead(p) => {
                    st = lock(&self.state);
                    p
                }
            }
        } else {
            // Nobody leads, so nobody is queued: a lone session commits its own
            // message without a thread switch.
            st.busy = true;
            p
        };

        // We lead: our message and whatever has queued meanwhile.
        let n = st.queue.len().min(MAX_BATCH - 1);
        let members: Vec<(Pending, Arc<Waiter>)> = st.queue.drain(..n).collect();
        drop(st);
        let mut results = {
            let mut batch = Vec::with_capacity(n + 1);
            batch.push(&p);
            batch.extend(members.iter().map(|(q, _)| q));
            commit(&batch).into_iter()
        };
        let mut result = |q: &Pending| {
            results
                .next()
                .unwrap_or_else(|| Err(SpoolError::other("commit", &q.tmp_env, "no result")))
        };
        let mine = result(&p);

        // Hand the lead to the oldest waiter first, so the next batch's syncs start
        // while this batch's sessions send their replies; or, with nobody queued, let
        // the next arrival lead. Wake outside the lock: a woken thread then finds it
        // free.
        let mut st = lock(&self.state);
        let next = st.queue.pop_front();
        st.busy = next.is_some();
        drop(st);
        if let Some((q, w)) = next {
            w.finish(Outcome::Lead(q));
        }
        for (q, w) in members {
            w.finish(Outcome::Done(result(&q)));
        }
        mine
    }
}

/// Every lock here keeps its data consistent at each unlock: a panic elsewhere leaves
/// it usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// msg/ and env/, with descriptors kept open for their fsyncs (two syscalls less per
/// batch; when opening fails, each fsync opens the path itself).
#[derive(Debug)]
pub(super) struct Dirs {
    msg: PathBuf,
    env: PathBuf,
    hold: PathBuf,
    msg_fd: Option<Arc<File>>,
    env_fd: Option<File>,
    pool: SyncPool,
    /// When a slow syncfs was last logged.
    last_slow_warning: Mutex<Option<Instant>>,
}

impl Dirs {
    pub(super) fn new(root: &Path) -> Dirs {
        let (msg, env) = (root.join(MSG), root.join(ENV));
        Dirs {
            msg_fd: File::open(&msg).ok().map(Arc::new),
            pool: SyncPool::default(),
            env_fd: File::open(&env).ok(),
            last_slow_warning: Mutex::new(None),
            msg,
            env,
            hold: root.join(HOLD),
        }
    }

    /// Where a message's envelope is committed: env/, or hold/.
    fn dest(&self, p: &Pending) -> PathBuf {
        let dir = if p.held { &self.hold } else { &self.env };
        dir.join(p.id.as_str())
    }

    fn sync(fd: Option<&File>, path: &Path) -> Result<(), SpoolError> {
        match fd {
            Some(f) => f.sync_all().map_err(|e| SpoolError::from_io("fsync", path, e)),
            None => sync_dir(path),
        }
    }

    /// msg/: the descriptor kept open, or a new one when opening it failed at first.
    fn msg_dir(&self) -> Result<Arc<File>, SpoolError> {
        match &self.msg_fd {
            Some(f) => Ok(Arc::clone(f)),
            None => File::open(&self.msg)
                .map(Arc::new)
                .map_err(|e| SpoolError::from_io("open", &self.msg, e)),
        }
    }

    /// One message's body and envelope and msg/ (its body's name) durable, the three
    /// syncs at once.
    fn sync_message(&self, p: &Pending) -> Result<(), SpoolError> {
        let [body, env] = &p.files;
        let jobs = [
            (self.msg_dir()?, What::All),
            (Arc::clone(body), What::Data),
            (Arc::clone(env), What::Data),
        ];
        let paths = [self.msg.clone(), self.msg.join(p.id.as_str()), p.tmp_env.clone()];
        for (r, path) in self.pool.sync_all(&jobs).into_iter().zip(paths) {
            r.map_err(|e| SpoolError::from_io("fsync", &path, e))?;
        }
        Ok(())
    }

    /// Everything the batch wrote durable, msg/'s names included, with one syncfs of
    /// msg/'s filesystem (the whole spool is one), and whatever else is dirty there.
    fn syncfs(&self) -> Result<(), SpoolError> {
        let fd = self.msg_dir()?;
        let started = Instant::now();
        let r = sys::syncfs(fd.as_raw_fd()).map_err(|e| SpoolError::from_io("syncfs", &self.msg, e));
        let took = started.elapsed();
        if slow_syncfs_warning(took, &self.last_slow_warning) {
            log::warn!(
                "spool: syncfs took {} ms: every message waits for all data waiting to be \
                 written on the spool's filesystem; with other busy writers there, \
                 spool_sync = fsync syncs each message's own files only",
                took.as_millis()
            );
        }
        r
    }
}

/// A syncfs this slow is worth telling the administrator about (it was a message's
/// wait, or a whole batch's): other programs' data on the spool's filesystem.
const SLOW_SYNCFS: Duration = Duration::from_millis(500);
/// At most one such warning per this long.
const SLOW_SYNCFS_EVERY: Duration = Duration::from_secs(600);

/// Whether a syncfs that took `took` is to be logged, given when the last warning was
/// (`last`, None = never); records it if so.
fn slow_syncfs_warning(took: Duration, last: &Mutex<Option<Instant>>) -> bool {
    if took < SLOW_SYNCFS {
        return false;
    }
    let mut last = lock(last);
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < SLOW_SYNCFS_EVERY) {
        return false;
    }
    *last = Some(now);
    true
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
        match mode {
            SyncMode::Fsync => sync_own_files(dirs, batch, &mut results),
            SyncMode::Syncfs => {
                if let Err(e) = dirs.syncfs() {
                    for r in results.iter_mut() {
                        *r = Err(e.duplicate());
                    }
                }
            }
        }
    }
    // The rename is each message's commit point: atomic, env/ID (or hold/ID)
    // absent or complete.
    for ((p, done), r) in batch.iter().zip(renamed.iter_mut()).zip(results.iter_mut()) {
        if r.is_err() {
            continue;
        }
        match fs::rename(&p.tmp_env, dirs.dest(p)) {
            Ok(()) => *done = true,
            Err(e) => *r = Err(SpoolError::from_io("rename", &p.tmp_env, e)),
        }
    }
    // One fsync per directory that got a name: env/, and hold/ for the few
    // messages committed on hold.
    for held in [false, true] {
        let mine = |p: &&Pending| p.held == held;
        if !batch.iter().zip(renamed.iter()).any(|(p, d)| *d && mine(p)) {
            continue;
        }
        let synced = if held {
            sync_dir(&dirs.hold)
        } else {
            Dirs::sync(dirs.env_fd.as_ref(), &dirs.env)
        };
        if let Err(e) = synced {
            for ((p, done), r) in batch.iter().zip(renamed.iter()).zip(results.iter_mut()) {
                if *done && mine(p) {
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
            let _ = fs::remove_file(dirs.dest(p));
            unrenamed = true;
        }
        let _ = fs::remove_file(dirs.msg.join(p.id.as_str()));
    }
    if unrenamed {
        let _ = Dirs::sync(dirs.env_fd.as_ref(), &dirs.env);
    }
    results
}

/// With `SyncMode::Fsync`, each session has synced its own message before queueing it
/// (`Committer::commit`): its outcome stands. A message that comes unsynced has its
/// body and envelope synced here, with msg/, all at once; a failed file fails its own
/// message, a failed msg/ every such message.
fn sync_own_files(dirs: &Dirs, batch: &[&Pending], results: &mut [Result<(), SpoolError>]) {
    let unsynced = batch.iter().filter(|p| p.synced.is_none()).count();
    let mut synced = Vec::new().into_iter();
    let mut dir_failed = None;
    if unsynced > 0 {
        match dirs.msg_dir() {
            Ok(msg_dir) => {
                let mut jobs: Vec<(Arc<File>, What)> = Vec::with_capacity(2 * unsynced + 1);
                jobs.push((msg_dir, What::All));
                for p in batch.iter().filter(|p| p.synced.is_none()) {
                    jobs.extend(p.files.iter().map(|f| (Arc::clone(f), What::Data)));
                }
                synced = dirs.pool.sync_all(&jobs).into_iter();
                if let Some(Err(e)) = synced.next() {
                    dir_failed = Some(SpoolError::from_io("fsync", &dirs.msg, e));
                }
            }
            Err(e) => dir_failed = Some(e),
        }
    }
    for (p, r) in batch.iter().zip(results.iter_mut()) {
        match &p.synced {
            Some(Ok(())) => {}
            Some(Err(e)) => *r = Err(e.duplicate()),
            None => {
                let files = [synced.next(), synced.next()];
                if let Some(e) = &dir_failed {
                    *r = Err(e.duplicate());
                } else if let Some(Some(Err(e))) = files.into_iter().find(|f| matches!(f, Some(Err(_)))) {
                    *r = Err(SpoolError::from_io("fsync", &p.tmp_env, e));
                }
            }
        }
    }
}

/// An io::Error like `e` (same errno, so `is_no_space` still answers the same).
pub(super) fn dup_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests;
