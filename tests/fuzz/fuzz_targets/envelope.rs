//! spool::Envelope::parse (the queue's env/ files): no panic, and whatever parses
//! writes back out as text that parses to the same envelope.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern::spool::Envelope;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(env) = Envelope::parse(text) {
        let again = env.to_text();
        let back = Envelope::parse(&again).expect("to_text output must parse");
        assert_eq!(env, back, "round trip changed the envelope");
    }
});
