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
        let tmp_env = s.root().join(TMP).join(format!("{id}.env"));
        let mut env = Envelope::new(id.clone(), "a@example.org".into(), 1_700_000_000);
        env.recipients.push(Recipient::new("b@example.net".into()));
        fs::write(s.message_path(&id), format!("body of {id}\n")).unwrap();
        fs::write(&tmp_env, env.to_text()).unwrap();
        let open = |p: &Path| Arc::new(File::open(p).unwrap());
        Pending {
            files: [open(&s.message_path(&id)), open(&tmp_env)],
            synced: None,
            tmp_env,
            id,
            held: false,
        }
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

    /// A file whose fdatasync fails (EINVAL: /dev/null cannot be synced).
    fn unsyncable() -> Arc<File> {
        Arc::new(File::open("/dev/null").unwrap())
    }

    #[test]
    fn with_fsync_each_message_stands_or_falls_by_its_own_syncs() {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let mut batch: Vec<Pending> = (0..5).map(|_| pending(&s)).collect();
        // 1: its session's own syncs failed.
        batch[1].synced = Some(Err(SpoolError::other("fsync", &batch[1].tmp_env, "disk on fire")));
        // 2: its session synced it.
        batch[2].synced = Some(Ok(()));
        // 3: comes unsynced and its body cannot be synced; 0 and 4 come unsynced.
        batch[3].files[0] = unsyncable();
        let refs: Vec<&Pending> = batch.iter().collect();
        let results = commit_batch(&Dirs::new(s.root()), SyncMode::Fsync, &refs);
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, true, false, true]);
        assert!(results[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("disk on fire"));
        let e = results[3].as_ref().unwrap_err();
        assert!(e.to_string().starts_with("spool: fsync "), "{e}");
        assert_eq!(e.io().and_then(io::Error::raw_os_error), Some(libc::EINVAL));
        let mut good: Vec<QueueId> = [0, 2, 4].iter().map(|&i| batch[i].id.clone()).collect();
        good.sort();
        assert_eq!(s.list().unwrap(), good);
        assert_eq!(names(&s.root().join(MSG)).len(), 3);
        assert!(names(&s.root().join(TMP)).is_empty());
    }

    #[test]
    fn with_fsync_a_session_syncs_its_own_message_before_it_queues_it() {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let c = Committer::default();
        // Its envelope cannot be synced: refused before it ever reaches a batch, and
        // nothing of it stays.
        let mut bad = pending(&s);
        bad.files[1] = unsyncable();
        let tmp_env = bad.tmp_env.clone();
        let e = c.commit(s.root(), SyncMode::Fsync, bad).unwrap_err();
        assert!(e.to_string().starts_with("spool: fsync "), "{e}");
        assert!(e.to_string().contains(&*tmp_env.to_string_lossy()), "{e}");
        assert!(s.list().unwrap().is_empty());
        assert!(names(&s.root().join(MSG)).is_empty());
        assert!(names(&s.root().join(TMP)).is_empty());
        let good = pending(&s);
        let id = good.id.clone();
        c.commit(s.root(), SyncMode::Fsync, good).unwrap();
        assert_eq!(s.list().unwrap(), [id]);
    }

    #[test]
    fn a_slow_syncfs_is_logged_at_most_every_ten_minutes() {
        let last = Mutex::new(None);
        assert!(!slow_syncfs_warning(Duration::from_millis(20), &last));
        assert!(lock(&last).is_none());
        assert!(slow_syncfs_warning(Duration::from_millis(800), &last));
        assert!(!slow_syncfs_warning(Duration::from_secs(3), &last));
        // Ten minutes later, the next slow one is told again.
        *lock(&last) = Instant::now().checked_sub(SLOW_SYNCFS_EVERY);
        assert!(lock(&last).is_some());
        assert!(slow_syncfs_warning(Duration::from_secs(1), &last));
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
        within(120, many_threads_commit_through_one_committer_in);
    }

    fn many_threads_commit_through_one_committer_in() {
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
            let st = lock(&c.state);
            assert!(st.queue.is_empty() && !st.busy);
        }
    }

    /// Runs `f` in a thread of its own and fails if it has not returned within `secs`:
    /// a lost wake-up hangs its waiter, and the test must fail instead of hanging.
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
            Ok(v) => v,
            Err(e) => panic!("group commit hung ({e}): a lost wake-up?"),
        }
    }

    /// A message for `Committer::run` with a stand-in commit: no files, and the path
    /// names who sent it.
    fn fake(who: String) -> Pending {
        let null = || Arc::new(File::open("/dev/null").unwrap());
        Pending {
            id: QueueId::generate(),
            tmp_env: PathBuf::from(who),
            held: false,
            files: [null(), null()],
            synced: None,
        }
    }

    /// The stand-in commit: fails the messages whose name ends in "!", counts the
    /// messages and the batches, and lets the others queue meanwhile.
    fn fake_commit(batch: &[&Pending], stats: &Mutex<(usize, usize, usize)>) -> Vec<Result<(), SpoolError>> {
        thread::yield_now();
        let mut s = lock(stats);
        s.0 += batch.len();
        s.1 += 1;
        s.2 = s.2.max(batch.len());
        batch
            .iter()
            .map(|p| match p.tmp_env.to_string_lossy().ends_with('!') {
                true => Err(SpoolError::other("commit", &p.tmp_env, "refused")),
                false => Ok(()),
            })
            .collect()
    }

    #[test]
    fn no_wake_up_is_lost() {
        const THREADS: usize = 16;
        const ROUNDS: usize = 400;
        let c = Arc::new(Committer::default());
        let stats = Arc::new(Mutex::new((0, 0, 0)));
        let (c2, stats2) = (Arc::clone(&c), Arc::clone(&stats));
        within(120, move || {
            thread::scope(|sc| {
                for t in 0..THREADS {
                    let (c, stats) = (&c2, &stats2);
                    sc.spawn(move || {
                        for round in 0..ROUNDS {
                            // Every thread gets its own result, good or bad.
                            let bad = (t + round) % 7 == 0;
                            let who = format!("{t}/{round}{}", if bad { "!" } else { "" });
                            let r = c.run(fake(who.clone()), |b| fake_commit(b, stats));
                            match r {
                                Ok(()) => assert!(!bad, "{who}"),
                                Err(e) => assert!(bad && e.to_string().contains(&who), "{who}: {e}"),
                            }
                        }
                    });
                }
            });
        });
        let (messages, batches, largest) = *lock(&stats);
        assert_eq!(messages, THREADS * ROUNDS);
        assert!(batches <= messages && largest <= THREADS, "{batches} {largest}");
        let st = lock(&c.state);
        assert!(st.queue.is_empty() && !st.busy);
    }

    #[test]
    fn a_lone_message_is_its_own_batch_and_batches_stay_bounded() {
        let c = Arc::new(Committer::default());
        let sizes = Arc::new(Mutex::new(Vec::new()));
        // Alone: committed in the calling thread, at once.
        let me = thread::current().id();
        c.run(fake("alone".into()), |b| {
            assert_eq!(thread::current().id(), me);
            lock(&sizes).push(b.len());
            b.iter().map(|_| Ok(())).collect()
        })
        .unwrap();

        // The first batch holds its leader until 300 more messages are queued: they
        // go in batches of at most MAX_BATCH, the oldest first.
        const MORE: usize = 300;
        let (c2, sizes2) = (Arc::clone(&c), Arc::clone(&sizes));
        within(120, move || {
            thread::scope(|sc| {
                let c = &c2;
                let sizes = &sizes2;
                sc.spawn(move || {
                    c.run(fake("first".into()), |b| {
                        while lock(&c.state).queue.len() < MORE {
                            thread::sleep(std::time::Duration::from_millis(1));
                        }
                        lock(sizes).push(b.len());
                        b.iter().map(|_| Ok(())).collect()
                    })
                    .unwrap();
                });
                while !lock(&c.state).busy {
                    thread::yield_now();
                }
                for i in 0..MORE {
                    sc.spawn(move || {
                        c.run(fake(format!("{i}")), |b| {
                            lock(sizes).push(b.len());
                            b.iter().map(|_| Ok(())).collect()
                        })
                        .unwrap();
                    });
                }
            });
        });
        assert_eq!(*lock(&sizes), [1, 1, MAX_BATCH, MORE - MAX_BATCH]);
        let st = lock(&c.state);
        assert!(st.queue.is_empty() && !st.busy);
    }
}
