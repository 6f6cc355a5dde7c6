//! Removing delivered messages without an fsync each.
//!
//! A message leaves the queue when env/ID is unlinked. Losing that unlink in a
//! crash only means the message is delivered again (at least once, as every MTA
//! does), so it need not be durable at once. What must never happen is the
//! opposite order reaching the disk: msg/ID gone while env/ID survives, a queued
//! envelope without a body (recover would move it to corrupt/). So the body's
//! unlink waits: [`Spool::retire`] unlinks env/ID and notes the id in a
//! [`Retired`] batch; [`Spool::reap`] fsyncs env/ once for the whole batch and
//! only then unlinks the bodies. A crash before the reap leaves orphan bodies,
//! which [`Spool::recover`] removes at the next start.

use std::fs;
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{sync_dir, QueueId, Spool, SpoolError, ENV, MSG};

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
    /// Take a finished message out of the queue: unlink env/ID now, and its body at
    /// the next [`Spool::reap`] of `batch` (done here when the batch is full). Errors
    /// if env/ID does not exist, and then touches nothing. Not durable until the
    /// reap: a crash before it delivers the message again, never loses it.
    pub fn retire(&self, id: &QueueId, batch: &Retired) -> Result<(), SpoolError> {
        let env = self.file(ENV, id);
        fs::remove_file(&env).map_err(|e| SpoolError::from_io("remove", &env, e))?;
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

    /// Reap `batch` if its oldest body has waited long enough; for an idle caller.
    pub fn reap_due(&self, batch: &Retired) -> Result<usize, SpoolError> {
        let due = batch.lock().since.is_some_and(|t| t.elapsed() >= MAX_WAIT);
        if due {
            self.reap(batch)
        } else {
            Ok(0)
        }
    }

    /// Make the unlinks of the batch's envelopes durable (one fsync of env/), then
    /// remove their bodies. Returns how many bodies went.
    pub fn reap(&self, batch: &Retired) -> Result<usize, SpoolError> {
        let ids = {
            let mut p = batch.lock();
            p.since = None;
            std::mem::take(&mut p.ids)
        };
        if ids.is_empty() {
            return Ok(0);
        }
        if let Err(e) = sync_dir(&self.dir(ENV)) {
            // Keep them for the next try: removing a body before its envelope's
            // unlink is durable is the one order that must not happen.
            let mut p = batch.lock();
            p.ids.extend(ids);
            p.since.get_or_insert_with(Instant::now);
            return Err(e);
        }
        for id in &ids {
            let msg = self.file(MSG, id);
            match fs::remove_file(&msg) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Out of the queue already; recover removes the orphan later.
                Err(e) => log::warn!("spool: remove {}: {e}", msg.display()),
            }
        }
        // The bodies' unlinks need no fsync: one that comes back after a crash is an
        // orphan, and recover removes it.
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
        // Out of the queue at once, body still there.
        assert_eq!(s.list().unwrap(), vec![b.clone()]);
        assert!(s.message_path(&a).exists());
        assert_eq!(batch.len(), 1);
        // Not yet due: nothing happens.
        assert_eq!(s.reap_due(&batch).unwrap(), 0);
        assert_eq!(s.reap(&batch).unwrap(), 1);
        assert!(!s.message_path(&a).exists());
        assert!(s.message_path(&b).exists());
        assert!(batch.is_empty());
        // Retiring what is not queued fails and changes nothing.
        assert!(s.retire(&a, &batch).is_err());
        assert!(batch.is_empty());
    }

    #[test]
    fn a_crash_before_the_reap_leaves_an_orphan_that_recover_removes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path()).unwrap();
        let batch = Retired::new();
        let a = queue(&s);
        s.retire(&a, &batch).unwrap();
        drop(batch);
        let stats = s.recover().unwrap();
        assert_eq!(stats.orphans_removed, 1);
        assert!(!s.message_path(&a).exists());
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
