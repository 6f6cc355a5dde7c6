//! SASL decoding (server/auth.rs): the base64 response line, PLAIN's three fields,
//! a LOGIN field.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern::server::auth::{decode_response, parse_login_field, parse_plain, Mechanism};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(msg) = decode_response(&s) {
        let _ = parse_plain(&msg);
        let _ = parse_login_field(&msg);
    }
    let _ = parse_plain(data);
    let _ = parse_login_field(data);
    let _ = Mechanism::parse(&s);
});
