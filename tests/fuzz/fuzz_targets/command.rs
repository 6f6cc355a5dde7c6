//! smtp::command::parse: every line a client can send, raw or on the SMTP alphabet.
#![no_main]
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let line = common::raw_or_mapped(data);
    let _ = tern::smtp::command::parse(&line);
    if let Ok(s) = std::str::from_utf8(&line) {
        if let Ok(d) = tern::smtp::xtext::decode(s) {
            let again = tern::smtp::xtext::decode(&tern::smtp::xtext::encode(&d));
            assert_eq!(again.as_deref(), Ok(d.as_str()), "xtext round trip");
        }
    }
});
