//! The seal: a new message's first envelope and a checksum, written after its body
//! in msg/ID, so that one fsync of one file makes the whole message durable.
//!
//! ```text
//! msg/ID = body (env.size octets) | envelope text | record
//! record = "\ntern-seal 1 Q|H BODYLEN ENVLEN CRC\n"   (fixed width, lowercase hex)
//! ```
//!
//! Q or H says where the envelope goes: env/ (queued) or hold/. The CRC-32 covers the
//! body and the envelope text. Readers of the body read only its `env.size` octets
//! ([`Spool::open_message`](super::Spool::open_message)), so the seal stays where it
//! is for the message's whole life.
//!
//! Why it is there: a message is acknowledged once its msg/ID is fsync'd, and only
//! then is env/ID created, by a rename that nothing syncs at once. A crash can lose
//! that rename; [`Spool::recover`](super::Spool::recover) then finds msg/ID with no
//! envelope and rebuilds env/ID from the seal. A file whose seal does not verify was
//! never acknowledged (its fsync had not returned): part of it may be missing or, on
//! a filesystem without a journal, read back as zeros or old blocks, which the CRC
//! catches; recover removes it as before. The CRC guards against torn writes, not
//! against anyone forging a file, which needs write access to the spool anyway.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

const MAGIC: &str = "tern-seal 1";
/// "\n" MAGIC " " Q " " 16 hex " " 8 hex " " 8 hex "\n"
const RECORD_LEN: usize = 1 + MAGIC.len() + 1 + 1 + 1 + 16 + 1 + 8 + 1 + 8 + 1;

/// A running CRC-32 of the body as it is written.
pub(super) type Crc = crc32fast::Hasher;

/// What follows a body of `body_len` octets whose CRC so far is `crc`: the envelope
/// text and the record.
pub(super) fn seal(mut crc: Crc, body_len: u64, env_text: &str, held: bool) -> Vec<u8> {
    crc.update(env_text.as_bytes());
    let mut out = Vec::with_capacity(env_text.len() + RECORD_LEN);
    out.extend_from_slice(env_text.as_bytes());
    out.extend_from_slice(record(held, body_len, env_text.len() as u64, crc.finalize()).as_bytes());
    out
}

fn record(held: bool, body_len: u64, env_len: u64, crc: u32) -> String {
    let place = if held { 'H' } else { 'Q' };
    format!("\n{MAGIC} {place} {body_len:016x} {env_len:08x} {crc:08x}\n")
}

/// A verified seal: the envelope it holds and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sealed {
    pub(super) env_text: String,
    pub(super) held: bool,
    pub(super) body_len: u64,
}

/// The seal of msg/ID open as `f`, if it has one that verifies; None for a body
/// written before seals, a commit cut short, or any damage. Errors are I/O errors.
pub(super) fn open(f: &mut File) -> io::Result<Option<Sealed>> {
    let len = f.metadata()?.len();
    let Some(rec_at) = len.checked_sub(RECORD_LEN as u64) else {
        return Ok(None);
    };
    let mut rec = [0u8; RECORD_LEN];
    f.seek(SeekFrom::Start(rec_at))?;
    f.read_exact(&mut rec)?;
    let Some((held, body_len, env_len, crc)) = parse_record(&rec) else {
        return Ok(None);
    };
    if body_len.checked_add(env_len) != Some(rec_at) {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(0))?;
    let mut h = Crc::new();
    let mut body = f.by_ref().take(body_len);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
    let mut env = Vec::new();
    f.by_ref().take(env_len).read_to_end(&mut env)?;
    h.update(&env);
    if h.finalize() != crc {
        return Ok(None);
    }
    let Ok(env_text) = String::from_utf8(env) else {
        return Ok(None);
    };
    Ok(Some(Sealed {
        env_text,
        held,
        body_len,
    }))
}

/// (held, body length, envelope length, CRC) of a well-formed record.
fn parse_record(rec: &[u8]) -> Option<(bool, u64, u64, u32)> {
    let text = std::str::from_utf8(rec).ok()?;
    let rest = text.strip_prefix('\n')?.strip_suffix('\n')?.strip_prefix(MAGIC)?;
    let mut f = rest.strip_prefix(' ')?.split(' ');
    let held = match f.next()? {
        "Q" => false,
        "H" => true,
        _ => return None,
    };
    let body_len = hex(f.next()?, 16)?;
    let env_len = hex(f.next()?, 8)?;
    let crc = u32::try_from(hex(f.next()?, 8)?).ok()?;
    if f.next().is_some() {
        return None;
    }
    Some((held, body_len, env_len, crc))
}

fn hex(s: &str, width: usize) -> Option<u64> {
    // Lowercase only, as written: one spelling per value, so no changed byte
    // can leave a record meaning the same.
    if s.len() != width
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sealed_file(dir: &std::path::Path, body: &[u8], env: &str, held: bool) -> std::path::PathBuf {
        let path = dir.join("m");
        let mut crc = Crc::new();
        crc.update(body);
        let mut f = File::create(&path).unwrap();
        f.write_all(body).unwrap();
        f.write_all(&seal(crc, body.len() as u64, env, held)).unwrap();
        path
    }

    #[test]
    fn record_has_its_fixed_width() {
        assert_eq!(
            record(true, u64::MAX, u64::from(u32::MAX), u32::MAX).len(),
            RECORD_LEN
        );
        assert_eq!(record(false, 0, 0, 0).len(), RECORD_LEN);
    }

    #[test]
    fn a_seal_reads_back() {
        let d = tempfile::tempdir().unwrap();
        for (body, held) in [(&b"Subject: x\r\n\r\nhi\r\n"[..], false), (&b""[..], true)] {
            let p = sealed_file(d.path(), body, "version: 1\n", held);
            let s = open(&mut File::open(&p).unwrap()).unwrap().unwrap();
            assert_eq!(s.env_text, "version: 1\n");
            assert_eq!(s.held, held);
            assert_eq!(s.body_len, body.len() as u64);
        }
    }

    #[test]
    fn damage_anywhere_fails_the_seal() {
        let d = tempfile::tempdir().unwrap();
        let p = sealed_file(d.path(), b"hello, body\r\n", "version: 1\nid: X\n", false);
        let good = std::fs::read(&p).unwrap();
        // Every single-byte change (a torn block read back as other data) and every
        // truncation (a commit cut short) is caught.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x20;
            std::fs::write(&p, &bad).unwrap();
            assert_eq!(open(&mut File::open(&p).unwrap()).unwrap(), None, "byte {i}");
        }
        for n in 0..good.len() {
            std::fs::write(&p, &good[..n]).unwrap();
            assert_eq!(open(&mut File::open(&p).unwrap()).unwrap(), None, "length {n}");
        }
        // Zeros where the body was (a filesystem without a journal after a crash).
        let mut zeroed = good.clone();
        zeroed[..5].fill(0);
        std::fs::write(&p, &zeroed).unwrap();
        assert_eq!(open(&mut File::open(&p).unwrap()).unwrap(), None);
    }

    #[test]
    fn a_body_without_a_seal_has_none() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("old");
        std::fs::write(&p, "Subject: written before seals\r\n\r\nbody\r\n".repeat(10)).unwrap();
        assert_eq!(open(&mut File::open(&p).unwrap()).unwrap(), None);
    }
}
