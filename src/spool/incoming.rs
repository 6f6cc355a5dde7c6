//! A message being received: its body written straight into msg/ID, then
//! committed (made durable and queued) through the spool's group commit.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::*;

/// A message being received. Write the body through `Write` (buffered, 64 KiB); then
/// [`commit`](Incoming::commit). Dropping it without committing removes its body file.
pub struct Incoming {
    pub(super) spool: Spool,
    pub(super) id: QueueId,
    /// msg/ID, not yet named by any envelope
    pub(super) tmp: PathBuf,
    /// Some until commit takes it.
    pub(super) out: Option<BufWriter<File>>,
    pub(super) written: u64,
    /// The first write error: the file may hold part of a write, so it must never be
    /// committed. Kept (as kind and errno) so commit can say why, e.g. "no space".
    pub(super) failed: Option<(io::ErrorKind, Option<i32>)>,
    /// Handed to the committer, which removes msg/ID itself if it fails.
    pub(super) done: bool,
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
    pub(super) fn fail(&mut self, e: io::Error) -> io::Error {
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
