//! Removing delivered messages without an fsync each.
//!
//! A message leaves the queue when env/ID is unlinked. Losing that unlink in a
//! crash only means the message is delivered again (at least once, as every MTA
//! does), so it need not be durable at once. Two states must never be left behind:
//! an envelope without its body (recover would move it to corrupt/), and a body
//! without its envelope that still looks committed: its seal (seal.rs) would make
//! recover queue the finished message again. So [`Spool::retire`] first renames
//! msg/ID to msg/ID.done (the body marked finished), then unlinks env/ID, and notes
//! the id in a [`Retired`] batch; [`Spool::reap`] fsyncs msg/ (the marks) and env/
//! (the unlinks) once for the whole batch, and only then unlinks the bodies.
//!
//! After a crash, [`Spool::recover`] finishes what it finds: an ID.done in msg/ is a
//! finished message, whose env/ID (if its unlink was lost) and body it removes. A
//! process that dies between the two calls of `retire` leaves ID.done beside env/ID,
//! never a sealed orphan. Only a power loss that writes env/'s unlink out before
//! msg/'s rename, in the moment before the reap, can leave a sealed orphan: that
//! message is delivered twice, never lost (RFC 5321 6.1).

use std::fs;
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{exists, sync_dir, QueueId, Spool, SpoolError, ENV, MSG};

/// The suffix of a finished message's body in msg/ (never a queue id).
pub(super) const DONE: &str = ".done";

/// A batch is reaped once it holds this many bodies...
const BATCH: usize = 256;
/// ...or once its oldest body has waited this long (see [`Spool::reap_due`]).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Bodies of retired messages, waiting for the env/ fsync that lets them go.
/// Shared by the threads that retire messages (the queue runner's workers).
#[derive(Debug, Default)]
pub struct Retired {
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    ids: Vec<QueueId>,
    since: Option<Instant>,
}

impl Retired {
    pub fn new() -> Retired {
        Retired::default()
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Every change is one push or one take: a panic leaves it consistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many bodies wait.
    pub fn len(&self) -> usize {
        self.lock().ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Spool {
    /// Take a finished message out of the queue: mark its body finished (msg/ID.done)
    /// and unlink env/ID now, and remove the body at the next [`Spool::reap`] of
    /// `batch` (done here when the batch is full). Errors if env/ID does not exist,
    /// and then touches nothing. Not durable until the reap: a crash before it
    /// delivers the message again, never loses it.
    pub fn retire(&self, id: &QueueId, batch: &Retired) -> Result<(), SpoolError> {
        self.unqueue(ENV, id)?;
        let full = {
            let mut p = batch.lock();
            p.ids.push(id.clone());
            p.since.get_or_insert_with(Instant::now);
            p.ids.len() >= BATCH
        };
        if full {
            self.reap(batch)?;
        }
        Ok(())
    }

    /// msg/ID.done: the body of a message taken out of the queue.
    pub(super) fn done_file(&self, id: &QueueId) -> std::path::PathBuf {
        self.dir(MSG).join(format!("{id}{DONE}"))
    }

    /// Rename msg/ID to msg/ID.done, then unlink `sub`/ID (env/ or hold/); unsynced.
    /// Errors if `sub`/ID does not exist, and then touches nothing.
    pub(super) fn unqueue(&self, sub: &str, id: &QueueId) -> Result<(), SpoolError> {
        let env = self.file(sub, id);
        if !exists(&env)? {
            let e = io::Error::from(io::ErrorKind::NotFound);
            return Err(SpoolError::from_io("remove", &env, e));
        }
        let (body, done) = (self.file(MSG, id), self.done_file(id));
        match fs::rename(&body, &done) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::from_io("rename", &body, e)),
        }
        if let Err(e) = fs::remove_file(&env) {
            let _ = fs::rename(&done, &body);
            return Err(SpoolError::from_io("remove", &env, e));
        }
        Ok(())
    }

    /// Remove the finished bodies of `ids` (msg/ID.done), once the marks and the
    /// envelopes' unlinks are durable: never a body gone while its envelope may come
    /// back.
    pub(super) fn remove_done(&self, ids: &[QueueId]) {
        for id in ids {
            let done = self.done_file(id);
            match fs::remove_file(&done) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Out of the queue already; recover removes it later.
                Err(e) => log::warn!("spool: remove {}: {e}", done.display()),
            }
        }
    }

    /// Reap `batch` if its oldest body has waited long enough; for an idle caller.
    pub fn reap_due(&self, batch: &Retired) -> Result<usize, SpoolError> {
        let due = batch.lock().since.is_some_and(|t| t.elapsed() >= MAX_WAIT);
        if due {
            self.reap(batch)
        } else {
            Ok(0)
        }
    }

    /// Make the batch's marks and its envelopes' unlinks durable (one fsync of msg/,
    /// one of env/), then remove their bodies. Returns how many bodies went.
    pub fn reap(&self, batch: &Retired) -> Result<usize, SpoolError> {
        let ids = {
            let mut p = batch.lock();
            p.since = None;
            std::mem::take(&mut p.ids)
        };
        if ids.is_empty() {
            return Ok(0);
        }
        // The marks first, then the unlinks: a lost mark beside a durable unlink is
        // the sealed orphan that must not be.
        let synced = sync_dir(&self.dir(MSG)).and_then(|()| sync_dir(&self.dir(ENV)));
        if let Err(e) = synced {
            // Keep them for the next try: removing a body before its envelope's
            // unlink is durable is the one order that must not happen.
            let mut p = batch.lock();
            p.ids.extend(ids);
            p.since.get_or_insert_with(Instant::now);
            return Err(e);
        }
        // Unsynced: a body that comes back after a crash is marked done, and recover
        // removes it.
        self.remove_done(&ids);
        Ok(ids.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Envelope, Recipient};

    fn queue(s: &Spool) -> QueueId {
        let mut inc = s.begin().unwrap();
        let id = inc.id().clone();
        inc.append(b"Subject: x\n\nbody\n").unwrap();
        let mut env = Envelope::new(id.clone(), "a@example.org".into(), 1);
        env.recipients.push(Recipient::new("b@example.org".into()));
        env.size = inc.bytes_written();
        inc.commit(&env).unwrap();
        id
    }

    #[test]
    fn retire_keeps_the_body_until_the_reap() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path()).unwrap();
        let batch = Retired::new();
        let a = queue(&s);
        let b = queue(&s);
        s.retire(&a, &batch).unwrap();
        // Out of the queue at once, body still there, marked finished.
        assert_eq!(s.list().unwrap(), vec![b.clone()]);
        assert!(!s.message_path(&a).exists());
        assert!(s.done_file(&a).exists());
        assert_eq!(batch.len(), 1);
        // Not yet due: nothing happens.
        assert_eq!(s.reap_due(&batch).unwrap(), 0);
        assert_eq!(s.reap(&batch).unwrap(), 1);
        assert!(!s.done_file(&a).exists());
        assert!(s.message_path(&b).exists());
        assert!(batch.is_empty());
        // Retiring what is not queued fails and changes nothing.
        assert!(s.retire(&a, &batch).is_err());
        assert!(batch.is_empty());
    }

    #[test]
    fn a_crash_before_the_reap_leaves_a_finished_body_that_recover_removes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path()).unwrap();
        let batch = Retired::new();
        let a = queue(&s);
        s.retire(&a, &batch).unwrap();
        drop(batch);
        let stats = s.recover().unwrap();
        // Finished, not queued again from its seal.
        assert_eq!((stats.finished, stats.restored), (1, 0));
        assert!(s.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join(MSG)).unwrap().count(), 0);
    }

    #[test]
    fn a_full_batch_reaps_itself() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path()).unwrap();
        let batch = Retired::new();
        for _ in 0..BATCH {
            let id = queue(&s);
            s.retire(&id, &batch).unwrap();
        }
        assert!(batch.is_empty());
        assert_eq!(fs::read_dir(dir.path().join(MSG)).unwrap().count(), 0);
    }
}
