//! The SMTP client's reply reader (deliver/client.rs) on whatever a remote server
//! sends, delivered in reads of arbitrary sizes, then the EHLO extension parser.
#![no_main]
use common::Peer;
use libfuzzer_sys::fuzz_target;
use std::io;
use std::time::Duration;
use tern::deliver::client::{Client, Extensions, Timed};
mod common;

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
    let mut c = Client::new(Peer::new(step, &data));
    // Every reply until the stream ends or one is refused (bounded: each reply consumes input).
    while let Ok(r) = c.reply() {
        assert!((200..600).contains(&r.code));
        let _ = (r.is_positive(), r.is_temporary(), r.status(), r.one_line());
        let _ = Extensions::parse(&r);
    }
});
