//! A message being received: its body written straight into msg/ID, then sealed
//! (its envelope and a checksum appended, seal.rs), made durable and queued.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

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
    /// CRC-32 of the `written` octets, for the seal.
    pub(super) crc: seal::Crc,
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

    /// Append the rest of `src`; how many octets.
    pub fn append_file(&mut self, src: &mut File) -> io::Result<u64> {
        let out = self.writer()?;
        if let Err(e) = out.flush() {
            return Err(self.fail(e));
        }
        // Through user space rather than copy_file_range: the seal needs the CRC.
        let mut crc = std::mem::take(&mut self.crc);
        let copied = {
            let out = self.writer()?;
            let mut hashing = Hashing {
                inner: src,
                crc: &mut crc,
            };
            io::copy(&mut hashing, out.get_mut())
        };
        self.crc = crc;
        match copied {
            Ok(n) => {
                self.written += n;
                Ok(n)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Make the message durable with this envelope (`env.id` must equal `self.id()`,
    /// `env.size` the octets written). Returns Ok only once the message is on disk and
    /// queued. On any error nothing of this message stays in msg/ or env/.
    ///
    /// The steps, and why (src/spool/README.md has the whole story):
    /// 1. seal msg/ID: append the envelope text and a record with a CRC-32 of body and
    ///    envelope (seal.rs). Until step 2 ends msg/ID is an orphan that nothing reads.
    /// 2. make msg/ID durable: with `SyncMode::Fsync` (the default) one fsync of that
    ///    one file, data and inode (on Linux's ext4, XFS and btrfs the fsync of a new
    ///    file also makes its name durable, which Postfix's queue files rely on too);
    ///    with `Syncfs` one syncfs for every message of a group-commit batch (commit.rs).
    ///    This is the commit point: a sealed, durable msg/ID is a queued message.
    /// 3. queue it: write tmp/ID.env and rename it to env/ID (hold/ID for
    ///    `commit_held`), with no sync: a crash that loses the rename leaves msg/ID
    ///    without an envelope, and `Spool::recover` rebuilds env/ID from the seal.
    ///
    /// So a message costs one fsync of one file, as a Postfix queue file does, or a
    /// share of one syncfs.
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
        // Readers read env.size octets of msg/ID: the seal follows them.
        if env.size != self.written {
            return Err(SpoolError::other(
                "commit",
                &self.tmp,
                format!(
                    "envelope size {} is not the {} octets written",
                    env.size, self.written
                ),
            ));
        }
        let Some(mut out) = self.out.take() else {
            return Err(SpoolError::other("commit", &self.tmp, "already committed"));
        };
        let env_text = env.to_text();
        let crc = std::mem::take(&mut self.crc);
        out.write_all(&seal::seal(crc, self.written, &env_text, held))
            .map_err(|e| SpoolError::from_io("write", &self.tmp, e))?;
        // On error from here on, Drop removes msg/ID.
        let file = out
            .into_inner()
            .map_err(|e| SpoolError::from_io("write", &self.tmp, e.into_error()))?;
        self.done = true;
        let pending = commit::Pending {
            id: self.id.clone(),
            body: self.tmp.clone(),
            held,
            file,
            env_text,
        };
        // The committer removes msg/ID again when it fails.
        self.spool
            .committer
            .commit(&self.spool.root, self.spool.sync, pending)
    }
}

/// A reader that adds what it reads to a CRC.
struct Hashing<'a, R> {
    inner: R,
    crc: &'a mut seal::Crc,
}

impl<R: io::Read> io::Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

impl Write for Incoming {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self.writer()?;
        match out.write(buf) {
            Ok(n) => {
                self.written += n as u64;
                self.crc.update(buf.get(..n).unwrap_or_default());
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
