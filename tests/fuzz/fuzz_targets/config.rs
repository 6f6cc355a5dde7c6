//! config::Config::parse on arbitrary text (and its unit parsers).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = tern::config::Config::parse(&text, Path::new("fuzz.conf"));
    let _ = tern::config::parse_size(&text);
    let _ = tern::config::parse_duration(&text);
    let _ = tern::config::parse_bool(&text);
    let _ = tern::config::Cidr::parse(&text);
});
