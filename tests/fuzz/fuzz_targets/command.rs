//! smtp::command::parse: every line a client can send, raw or on the SMTP alphabet.
#![no_main]
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let line = common::raw_or_mapped(data);
    let _ = tern::smtp::command::parse(&line);
    if let Ok(s) = std::str::from_utf8(&line) {
        let _ = tern::smtp::command::xtext_decode(s);
    }
});
