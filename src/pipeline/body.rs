//! The body of a message being received: in memory while it is small, in an
//! unnamed file in the spool's tmp/ beyond [`SPILL_AT`], so that a session
//! never holds more than that of any message however large, and the commit
//! copies a large body into the queue file in the kernel (copy_file_range).

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

use crate::spool::{self, maildrop, Spool};

/// Bodies up to this size stay in memory (ordinary mail is a few KiB: it is
/// written once, at the commit, and never touches a second file).
pub const SPILL_AT: usize = 1024 * 1024;

/// A message body: bytes with LF line ends, as the spool stores them.
pub struct Body {
    mem: Vec<u8>,
    /// The spill file, once the body has outgrown memory.
    file: Option<BufWriter<File>>,
    /// Where a spill file goes; None keeps everything in memory (the maildrop
    /// door: its user may not write the spool's tmp/).
    spool: Option<Spool>,
    len: u64,
}

impl Body {
    /// An empty body that spills into `spool`'s tmp/ when it grows large.
    pub fn new(spool: Option<&Spool>) -> Body {
        Body {
            mem: Vec::new(),
            file: None,
            spool: spool.cloned(),
            len: 0,
        }
    }

    /// A body that is all in memory already.
    pub fn from_vec(bytes: Vec<u8>) -> Body {
        Body {
            len: bytes.len() as u64,
            mem: bytes,
            file: None,
            spool: None,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the body has gone to a file.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// Append `data`.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if let Some(f) = self.file.as_mut() {
            f.write_all(data)?;
        } else if self.mem.len() + data.len() > SPILL_AT && self.spool.is_some() {
            self.spill()?;
            if let Some(f) = self.file.as_mut() {
                f.write_all(data)?;
            }
        } else {
            self.mem.extend_from_slice(data);
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Move what is in memory into a new spill file.
    fn spill(&mut self) -> io::Result<()> {
        let Some(spool) = self.spool.as_ref() else {
            return Ok(());
        };
        let mut f = BufWriter::with_capacity(64 * 1024, spool.spill_file()?);
        f.write_all(&self.mem)?;
        self.mem = Vec::new();
        self.file = Some(f);
        Ok(())
    }

    /// Every octet of the body, in order, in pieces (for a stage that reads the
    /// whole body).
    pub fn for_each_piece(&mut self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        if self.file.is_none() {
            return f(&self.mem);
        }
        self.read_with(|r| {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                f(buf.get(..n).unwrap_or_default())?;
            }
        })?
    }

    /// `f` over a reader of every octet of the body, in order (for a stage
    /// that streams the whole body, such as a DKIM signer). Appending may go
    /// on afterwards.
    pub fn read_with<T>(&mut self, f: impl FnOnce(&mut dyn Read) -> T) -> io::Result<T> {
        match self.file.as_mut() {
            None => Ok(f(&mut self.mem.as_slice())),
            Some(w) => {
                w.flush()?;
                let mut file: &File = w.get_mut();
                file.seek(SeekFrom::Start(0))?;
                let out = f(&mut file);
                file.seek(SeekFrom::End(0))?;
                Ok(out)
            }
        }
    }

    /// Write the body into `out` (the commit): from memory, or from the spill
    /// file through `out`'s `append_file`.
    pub fn write_into(self, out: &mut dyn Store) -> io::Result<()> {
        match self.file {
            None => out.write_all(&self.mem),
            Some(w) => {
                let mut file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
                file.seek(SeekFrom::Start(0))?;
                let n = out.append_file(&mut file)?;
                if n != self.len {
                    return Err(io::Error::other(format!(
                        "spill file gave {n} octets of {}",
                        self.len
                    )));
                }
                Ok(())
            }
        }
    }

    /// The whole body in memory (for a caller that needs the bytes; bodies that
    /// spilled are read back).
    pub fn into_vec(mut self) -> io::Result<Vec<u8>> {
        if self.file.is_none() {
            return Ok(self.mem);
        }
        let mut v = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        self.for_each_piece(|p| {
            v.extend_from_slice(p);
            Ok(())
        })?;
        Ok(v)
    }
}

/// Where the commit writes the finished message: the queue, or the maildrop.
pub trait Store: Write {
    /// Append the rest of `src`; how many octets. The default reads it through.
    fn append_file(&mut self, src: &mut File) -> io::Result<u64> {
        io::copy(src, self)
    }
}

impl Store for spool::Incoming {
    fn append_file(&mut self, src: &mut File) -> io::Result<u64> {
        spool::Incoming::append_file(self, src)
    }
}

impl Store for maildrop::Pending {}

impl Store for Vec<u8> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_stay_in_memory_large_ones_spill_and_come_back_whole() {
        let dir = tempfile::TempDir::new().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let mut b = Body::new(Some(&spool));
        b.append(b"first line\n").unwrap();
        assert!(!b.spilled());
        let block = vec![b'x'; 300 * 1024];
        for _ in 0..4 {
            b.append(&block).unwrap();
        }
        assert!(b.spilled());
        assert_eq!(b.len(), 11 + 4 * 300 * 1024);
        // Nothing named is left in tmp/: the spill file has no name.
        assert_eq!(std::fs::read_dir(spool.root().join("tmp")).unwrap().count(), 0);
        let mut total = 0;
        b.for_each_piece(|p| {
            total += p.len();
            Ok(())
        })
        .unwrap();
        assert_eq!(total as u64, b.len());
        b.append(b"end\n").unwrap();
        let mut out = Vec::new();
        b.write_into(&mut out).unwrap();
        assert_eq!(out.len(), 11 + 4 * 300 * 1024 + 4);
        assert!(out.starts_with(b"first line\nxxx"));
        assert!(out.ends_with(b"xxend\n"));
        // Without a spool, everything stays in memory.
        let mut m = Body::new(None);
        m.append(&vec![b'y'; SPILL_AT + 1]).unwrap();
        assert!(!m.spilled());
        assert_eq!(m.into_vec().unwrap().len(), SPILL_AT + 1);
    }
}
