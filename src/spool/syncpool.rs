//! fsync several files at once: the batch leader of the group commit (commit.rs) hands
//! its batch's files to a few helper threads and syncs some itself, so that their
//! fsyncs are in flight together.
//!
//! Why together: each fsync waits for its file's writes and then for a device cache
//! flush, and a flush requested while another is in flight waits for the next one,
//! which then serves every request queued meanwhile (the block layer's flush
//! sequencing, block/blk-flush.c). So fsyncs issued together cost about what one costs,
//! where one after the other each costs its own flush; on a journalling filesystem
//! (ext4, XFS) they also join one journal commit. Unlike `syncfs(2)`, each writes only
//! its own file's data and metadata, never another program's.
//!
//! The helpers are spawned on demand, at most `MAX_HELPERS`, and end after
//! `IDLE_EXIT` without work. A helper that cannot be spawned is no error: the leader
//! takes every job nobody else took, so the batch gets synced, only less in parallel.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, Thread};
use std::time::Duration;

/// Helper threads at most, beside the leader: a lone message's three syncs (its
/// body, its envelope, msg/) at once. A batch of several has its members' files
/// synced already (commit.rs), so it rarely has more to do.
const MAX_HELPERS: usize = 2;
/// A helper with nothing to do for this long ends.
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// What to make durable of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum What {
    /// fdatasync(2): its bytes and what is needed to read them back (size, blocks).
    Data,
    /// fsync(2): all of it; for a directory, its entries.
    All,
}

/// The helper threads of one spool's group commit.
#[derive(Debug, Default)]
pub(super) struct SyncPool {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// A job was queued.
    work: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Helpers waiting for a job.
    idle: usize,
    /// Helpers alive.
    helpers: usize,
}

#[derive(Debug)]
struct Job {
    file: Arc<File>,
    how: What,
    index: usize,
    tally: Arc<Tally>,
}

/// The results of one `sync_all` call, and whom to wake when the last one is in.
#[derive(Debug)]
struct Tally {
    state: Mutex<(usize, Vec<Option<io::Result<()>>>)>,
    leader: Thread,
}

impl Job {
    fn run(self) {
        let r = match self.how {
            What::Data => self.file.sync_data(),
            What::All => self.file.sync_all(),
        };
        let mut st = lock(&self.tally.state);
        if let Some(slot) = st.1.get_mut(self.index) {
            *slot = Some(r);
        }
        st.0 = st.0.saturating_sub(1);
        if st.0 == 0 {
            // Under the lock: the leader, once it sees zero, finds nothing else to do.
            self.tally.leader.unpark();
        }
    }
}

impl SyncPool {
    /// Sync every file, as many at once as there are threads for; one result per file,
    /// in order. Returns when all are done. One caller at a time per pool (the group
    /// commit has one leader at a time); the calling thread syncs some files itself.
    pub(super) fn sync_all(&self, files: &[(Arc<File>, What)]) -> Vec<io::Result<()>> {
        let tally = Arc::new(Tally {
            state: Mutex::new((files.len(), files.iter().map(|_| None).collect())),
            leader: thread::current(),
        });
        let mut jobs = files.iter().enumerate().map(|(index, (file, how))| Job {
            file: Arc::clone(file),
            how: *how,
            index,
            tally: Arc::clone(&tally),
        });
        // The first is ours; the others go to the helpers (or back to us).
        let first = jobs.next();
        let mut q = lock(&self.shared.queue);
        q.jobs.extend(jobs);
        let queued = q.jobs.len();
        let wake = queued.min(q.idle);
        let spawn = (queued - wake).min(MAX_HELPERS.saturating_sub(q.helpers));
        q.helpers += spawn;
        drop(q);
        for _ in 0..wake {
            self.shared.work.notify_one();
        }
        for _ in 0..spawn {
            let shared = Arc::clone(&self.shared);
            let spawned = thread::Builder::new()
                .name("spool-sync".into())
                .spawn(move || helper(&shared));
            if spawned.is_err() {
                lock(&self.shared.queue).helpers -= 1;
            }
        }
        if let Some(job) = first {
            job.run();
        }
        // Whatever no helper has taken yet, we do.
        loop {
            let job = lock(&self.shared.queue).jobs.pop_front();
            match job {
                Some(job) => job.run(),
                None => break,
            }
        }
        loop {
            let mut st = lock(&tally.state);
            if st.0 == 0 {
                return std::mem::take(&mut st.1)
                    .into_iter()
                    .map(|r| r.unwrap_or_else(|| Err(io::Error::other("fsync not done"))))
                    .collect();
            }
            drop(st);
            thread::park();
        }
    }
}

/// A helper's life: take jobs until none has come for `IDLE_EXIT`.
fn helper(shared: &Shared) {
    let mut q = lock(&shared.queue);
    loop {
        if let Some(job) = q.jobs.pop_front() {
            drop(q);
            job.run();
            q = lock(&shared.queue);
            continue;
        }
        q.idle += 1;
        let (g, waited) = shared
            .work
            .wait_timeout(q, IDLE_EXIT)
            .unwrap_or_else(|e| e.into_inner());
        q = g;
        q.idle -= 1;
        if waited.timed_out() && q.jobs.is_empty() {
            q.helpers -= 1;
            return;
        }
    }
}

/// Every lock here keeps its data consistent at each unlock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tempfile::TempDir;

    /// `n` files, every third one /dev/null, whose fdatasync fails (EINVAL).
    fn files(d: &TempDir, n: usize, tag: &str) -> Vec<(Arc<File>, What)> {
        (0..n)
            .map(|i| {
                if i % 3 == 1 {
                    return (Arc::new(File::open("/dev/null").unwrap()), What::Data);
                }
                let p = d.path().join(format!("{tag}-{i}"));
                fs::write(&p, b"x").unwrap();
                let how = if i % 2 == 0 { What::All } else { What::Data };
                (Arc::new(File::open(&p).unwrap()), how)
            })
            .collect()
    }

    fn check(results: &[io::Result<()>], n: usize) {
        assert_eq!(results.len(), n);
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(()) => assert!(i % 3 != 1, "{i} of {n}: /dev/null synced"),
                Err(e) => assert!(
                    i % 3 == 1 && e.raw_os_error() == Some(libc::EINVAL),
                    "{i} of {n}: {e}"
                ),
            }
        }
    }

    #[test]
    fn every_file_gets_its_own_result_in_order() {
        let d = TempDir::new().unwrap();
        let pool = SyncPool::default();
        assert!(pool.sync_all(&[]).is_empty());
        for n in [1, 2, 3, 4, 11] {
            check(&pool.sync_all(&files(&d, n, &n.to_string())), n);
        }
        let q = lock(&pool.shared.queue);
        assert!(q.jobs.is_empty() && q.helpers <= MAX_HELPERS);
    }

    #[test]
    fn callers_at_once_each_get_their_own_results() {
        let d = Arc::new(TempDir::new().unwrap());
        let pool = Arc::new(SyncPool::default());
        let (tx, rx) = std::sync::mpsc::channel();
        for t in 0..8 {
            let (pool, d, tx) = (Arc::clone(&pool), Arc::clone(&d), tx.clone());
            thread::spawn(move || {
                for round in 0..20 {
                    let n = 1 + (t + round) % 5;
                    check(&pool.sync_all(&files(&d, n, &format!("{t}-{round}"))), n);
                }
                let _ = tx.send(t);
            });
        }
        drop(tx);
        // A lost wake-up would hang a caller, a failed check ends one without its
        // message: either way fewer than eight arrive, and the test fails.
        for _ in 0..8 {
            rx.recv_timeout(Duration::from_secs(120))
                .expect("a caller hung or failed");
        }
        assert!(lock(&pool.shared.queue).jobs.is_empty());
    }
}
