//! What every local writer shares: copying the spool's bytes with read errors
//! told apart from write errors, and the outcome of each.

use std::io::{self, Read, Write};
use std::path::Path;

use crate::deliver::outcome::{self, Outcome};

pub(super) const COPY_BUF: usize = 64 * 1024;

/// A failed copy: reading the spool or writing the mailbox.
#[derive(Debug)]
pub(super) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl CopyError {
    pub(super) fn outcome(&self, dest: &Path) -> Outcome {
        match self {
            CopyError::Read(e) => outcome::cannot_read_message(e),
            CopyError::Write(e) => outcome::local_io(&format!("cannot write {}", dest.display()), e),
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
