//! SASL decoding (server/auth.rs): the base64 response line, PLAIN's three fields,
//! a LOGIN field; and base64 as the client encodes it decodes back unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern::server::auth::{base64_decode, decode_response, parse_login_field, parse_plain, Mechanism};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(msg) = decode_response(&s) {
        let _ = parse_plain(&msg);
        let _ = parse_login_field(&msg);
    }
    let _ = parse_plain(data);
    let _ = parse_login_field(data);
    let _ = Mechanism::parse(&s);
    let encoded = tern::deliver::client::base64(data);
    assert_eq!(
        base64_decode(&encoded).as_deref(),
        Some(data),
        "base64 round trip"
    );
});
