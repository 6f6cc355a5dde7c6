//! What every local writer shares: the RFC 3463 codes of local failures, the
//! temporary outcome of an I/O error, and copying the spool's bytes with read
//! errors told apart from write errors.

use std::io::{self, Read, Write};
use std::path::Path;

use crate::deliver::Outcome;
use crate::smtp::status::Status;

/// RFC 3463: 4.2.0 mailbox unavailable, 4.2.2 mailbox full, 4.3.0 system error,
/// 5.3.0 permanent system error.
pub(super) const MAILBOX_UNAVAILABLE: Status = Status(4, 2, 0);
pub(super) const MAILBOX_FULL: Status = Status(4, 2, 2);
pub(super) const SYSTEM_ERROR: Status = Status(4, 3, 0);
pub(super) const COMMAND_FAILED: Status = Status(5, 3, 0);

pub(super) const COPY_BUF: usize = 64 * 1024;

/// Whether an I/O error means the disk or the user's quota is full.
pub(super) fn no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// A temporary outcome for an I/O error: 4.2.2 for a full disk (RFC 3463 "mailbox
/// full"), else `otherwise`.
pub(super) fn io_temp(what: &str, e: &io::Error, otherwise: Status) -> Outcome {
    if no_space(e) {
        Outcome::temporary(MAILBOX_FULL, format!("mailbox full: {what}: {e}"))
    } else {
        Outcome::temporary(otherwise, format!("{what}: {e}"))
    }
}

/// A failed copy: reading the spool or writing the mailbox.
#[derive(Debug)]
pub(super) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl CopyError {
    pub(super) fn outcome(&self, dest: &Path) -> Outcome {
        match self {
            CopyError::Read(e) => Outcome::temporary(SYSTEM_ERROR, format!("cannot read message: {e}")),
            CopyError::Write(e) => io_temp(&format!("cannot write {}", dest.display()), e, SYSTEM_ERROR),
        }
    }
}

/// Copy the message, telling read errors from write errors.
pub(super) fn copy_message(message: &mut dyn Read, out: &mut dyn Write) -> Result<(), CopyError> {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match message.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        out.write_all(buf.get(..n).unwrap_or_default())
            .map_err(CopyError::Write)?;
    }
}
