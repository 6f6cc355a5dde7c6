//! The SMTP client's reply reader (deliver/client.rs) on whatever a remote server
//! sends, delivered in reads of arbitrary sizes, then the EHLO extension parser.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::{self, Read, Write};
use std::time::Duration;
use tern::deliver::client::{Client, Extensions, Timed};
mod common;

/// A server that sends `data` in reads of at most `step` bytes and swallows writes.
struct Peer {
    data: Vec<u8>,
    pos: usize,
    step: usize,
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Replies arrive at once here; there is no clock to bound.
impl Timed for Peer {
    fn set_read_limit(&self, _: Duration) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let data = common::raw_or_mapped(rest);
    let mut c = Client::new(Peer {
        data,
        pos: 0,
        step: usize::from(step) + 1,
    });
    // Every reply until the stream ends or one is refused (bounded: each reply consumes input).
    while let Ok(r) = c.reply() {
        assert!((200..600).contains(&r.code));
        let _ = (r.is_positive(), r.is_temporary(), r.status(), r.one_line());
        let _ = Extensions::parse(&r);
    }
});
