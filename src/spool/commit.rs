//! The commit of a sealed message (incoming.rs, seal.rs): make msg/ID durable, then
//! queue it by renaming its envelope into env/ (or hold/).
//!
//! With `SyncMode::Fsync` (the default) a session makes its own message durable with
//! one fsync of its one file, in its own thread, alongside the other sessions: the
//! same I/O as a Postfix queue file's, and nothing else on the filesystem is written
//! or waited for, so a neighbour writing to the same filesystem costs it only the disk
//! time it takes. Concurrent fsyncs still share: a device cache flush requested while
//! another is in flight waits for the next one, which serves every request queued
//! meanwhile (block/blk-flush.c), and on a journalling filesystem concurrent fsyncs
//! join one journal commit (ext4's jbd2, XFS's log force).
//!
//! Why one file: the layout before seals synced the body, the envelope in tmp/ and
//! msg/ at once, then renamed the envelope into env/ and fsynced env/ (the commit
//! point): two device round trips, one after the other, for a lone message. On the
//! development VM (ext4 without a journal, virtio disk) that pattern took 1.16 ms at
//! p50 against 0.41 ms for Postfix's one fsync of one file, and a single session
//! accepted 0.6-0.9 of Postfix's rate (issue 21). The seal makes the envelope part of
//! the one file, so the rename need not be durable before the reply: recover rebuilds
//! env/ID from the seal when a crash lost it.
//!
//! With `SyncMode::Syncfs` messages are committed in groups: whoever finds nobody
//! leading leads: it takes the messages queued while it waited (at most `MAX_BATCH`),
//! makes them all durable with one syncfs(2), queues each, hands the lead to the
//! oldest message still waiting, if any, and gives each member its result. One
//! syncfs writes out, and waits for, everything dirty on the filesystem, another
//! program's data as much as ours: it suits only a spool with a filesystem of its own.
//!
//! A queued message's thread sleeps in a slot of its own and is woken exactly once:
//! with its result, or to lead the next batch (its own message first). Nobody is woken
//! to find nothing and sleep again, as with one condvar and `notify_all` per batch:
//! that woke every session queued for the next batch too, each taking the contended
//! state lock on the way, and cost a futex call per batch even with nobody waiting.
//! The leader hands over the lead before it wakes its batch, so the next batch's sync
//! starts while the sessions reply. No dedicated committer thread fed by a channel:
//! that costs two thread switches per message even when a session is alone.
//!
//! Errors are per message: a file sync or a rename that fails fails only its message;
//! a syncfs that fails fails the whole batch (it reports any writeback error on the
//! filesystem since the last call, so one that is not ours fails a batch too: a 451
//! and a retry, never a lost message). A failed message's msg/ID is removed again.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use super::{write_new, QueueId, SpoolError, ENV, HOLD, MSG, TMP};
use crate::config::SyncMode;
use crate::sys;
use std::os::fd::AsRawFd;

/// At most this many messages in one batch, so a flood cannot delay the first
/// waiter's 250 without bound.
const MAX_BATCH: usize = 256;

/// One sealed message, written but not yet durable: msg/ID holds its body and seal.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: QueueId,
    /// msg/ID
    pub(super) body: PathBuf,
    /// Queued into hold/ instead of env/: on hold from the start (a milter's
    /// quarantine), never seen by the queue runner until released.
    pub(super) held: bool,
    /// msg/ID, still open.
    pub(super) file: File,
    /// The envelope, as sealed, for env/ID.
    pub(super) env_text: String,
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
    /// then its msg/ID is gone).
    pub(super) fn commit(&self, root: &Path, mode: SyncMode, p: Pending) -> Result<(), SpoolError> {
        let dirs = self.dirs.get_or_init(|| Dirs::new(root));
        match mode {
            // Alone, in this session's thread: no batch to wait for.
            SyncMode::Fsync => {
                let _timer = crate::metrics::spool_commit();
                let mut r = commit_batch(dirs, mode, &[&p]);
                r.pop()
                    .unwrap_or_else(|| Err(SpoolError::other("commit", &p.body, "no result")))
            }
            SyncMode::Syncfs => {
                // Its blocks allocated and its write started now, in parallel with
                // the other sessions: the batch's syncfs then finds it under way.
                sys::start_writeback(p.file.as_raw_fd());
                self.run(p, |batch| {
                    let _timer = crate::metrics::spool_commit();
                    commit_batch(dirs, mode, batch)
                })
            }
        }
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
                .unwrap_or_else(|| Err(SpoolError::other("commit", &q.body, "no result")))
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

/// The spool's directories, with msg/ kept open for syncfs (a syscall less per batch;
/// when opening it failed, each syncfs opens the path itself).
#[derive(Debug)]
pub(super) struct Dirs {
    msg: PathBuf,
    env: PathBuf,
    hold: PathBuf,
    tmp: PathBuf,
    msg_fd: Option<File>,
    /// When a slow syncfs was last logged.
    last_slow_warning: Mutex<Option<Instant>>,
}

impl Dirs {
    pub(super) fn new(root: &Path) -> Dirs {
        let msg = root.join(MSG);
        Dirs {
            msg_fd: File::open(&msg).ok(),
            last_slow_warning: Mutex::new(None),
            msg,
            env: root.join(ENV),
            hold: root.join(HOLD),
            tmp: root.join(TMP),
        }
    }

    /// Where a message's envelope is queued: env/, or hold/.
    fn dest(&self, p: &Pending) -> PathBuf {
        let dir = if p.held { &self.hold } else { &self.env };
        dir.join(p.id.as_str())
    }

    /// Everything the batch wrote durable, msg/'s names included, with one syncfs of
    /// msg/'s filesystem (the whole spool is one), and whatever else is dirty there.
    fn syncfs(&self) -> Result<(), SpoolError> {
        // The descriptor kept open, or a new one when opening it failed at first.
        let opened;
        let fd = match &self.msg_fd {
            Some(f) => f,
            None => {
                opened = File::open(&self.msg).map_err(|e| SpoolError::from_io("open", &self.msg, e))?;
                &opened
            }
        };
        let started = Instant::now();
        let r = sys::syncfs(fd.as_raw_fd()).map_err(|e| SpoolError::from_io("syncfs", &self.msg, e));
        let took = started.elapsed();
        if slow_syncfs_warning(took, &self.last_slow_warning) {
            log::warn!(
                "spool: syncfs took {} ms: every message waits for all data waiting to be \
                 written on the spool's filesystem; with other busy writers there, \
                 spool_sync = fsync syncs each message's own file only",
                took.as_millis()
            );
        }
        r
    }

    /// Queue a durable message: its envelope written to tmp/ID.env and renamed to
    /// env/ID (hold/ID), unsynced: the seal in msg/ID already holds it.
    fn publish(&self, p: &Pending) -> Result<(), SpoolError> {
        let tmp = self.tmp.join(format!("{}.env", p.id));
        drop(write_new(&tmp, p.env_text.as_bytes())?);
        fs::rename(&tmp, self.dest(p)).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            SpoolError::from_io("rename", &tmp, e)
        })
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

/// Make the batch's messages durable (each file's fsync, or one syncfs), then queue
/// each (`Dirs::publish`). One result per message, in order. Every message that fails
/// loses its msg/ID again.
pub(super) fn commit_batch(dirs: &Dirs, mode: SyncMode, batch: &[&Pending]) -> Vec<Result<(), SpoolError>> {
    let mut results: Vec<Result<(), SpoolError>> = match mode {
        SyncMode::Fsync => batch
            .iter()
            .map(|p| {
                p.file
                    .sync_all()
                    .map_err(|e| SpoolError::from_io("fsync", &p.body, e))
            })
            .collect(),
        SyncMode::Syncfs => {
            let r = dirs.syncfs();
            batch
                .iter()
                .map(|_| r.as_ref().map(|_| ()).map_err(SpoolError::duplicate))
                .collect()
        }
    };
    for (p, r) in batch.iter().zip(results.iter_mut()) {
        if r.is_ok() {
            *r = dirs.publish(p);
        }
        if r.is_err() {
            // Never acknowledged: if a crash brings the unlink back, recover queues a
            // message its client was told to send again (a duplicate, never a loss).
            let _ = fs::remove_file(&p.body);
        }
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
mod tests;
