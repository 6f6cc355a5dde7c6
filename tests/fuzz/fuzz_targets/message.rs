//! message: the header parser and editor (src/message.rs) on any bytes: a message
//! from a client, a spool file, a bounce's original. The first byte chooses raw
//! input or input on a header alphabet, and where a header edit splits it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern::message::{self, Header};

/// What header sections are made of, so most inputs are near-valid headers.
const ALPHABET: &[u8] = b"Subject: To,Cc:Bcc Date From x@y.z \t\r\n\n\n:;\"()<>-";

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let m: Vec<u8> = if ctl & 1 == 1 {
        rest.iter()
            .map(|&b| if b >= 0xE0 { b } else { ALPHABET[b as usize % ALPHABET.len()] })
            .collect()
    } else {
        rest.to_vec()
    };

    // split: a prefix and a suffix that do not overlap.
    let (head, body) = message::split(&m);
    assert!(m.starts_with(head) && m.ends_with(body));
    assert!(head.len() + body.len() <= m.len());

    // find_end is stable as more data arrives (the session relies on it): a cut
    // either has not seen the end yet or sees the same one.
    let end = message::find_end(&m);
    if let Some(e) = end {
        assert!(e.header_len <= e.body_start && e.body_start <= m.len());
        assert_eq!(e.header_len, head.len());
    }
    let cut = usize::from(ctl >> 1) * m.len() / 128;
    if let Some(e) = message::find_end(&m[..cut]) {
        assert_eq!(Some(e), end, "the end moved when more data came");
    }

    // Every field has a name; values never panic.
    let mut count = 0;
    for f in message::fields(&m) {
        assert!(!f.name().is_empty());
        assert!(f.raw().ends_with(f.raw_value()));
        let _ = f.value();
        count += 1;
    }

    // The editor gives the message back: byte for byte where it had an empty line
    // (or no end) and a last line end; in any case the same fields and body.
    let (mut h, b) = Header::parse(&m);
    assert_eq!(b, body);
    assert_eq!(h.fields().count(), count);
    let again = h.to_message(b);
    if end.is_none_or(|e| e.has_empty_line()) && m.last().is_none_or(|&c| c == b'\n') {
        assert_eq!(again, m);
    }
    let (h2, b2) = Header::parse(&again);
    assert_eq!(b2, b);
    assert_eq!(h2.fields().count(), count);

    // An added field, whatever its value, is one field more and nothing else.
    let value = String::from_utf8_lossy(&m[cut..]).into_owned();
    let removed = h.remove("Subject");
    if h.insert(usize::from(ctl), "X-Fuzz", &value).is_ok() {
        let out = h.to_message(b);
        let (h3, b3) = Header::parse(&out);
        assert_eq!(b3, b, "an added value moved the body");
        assert_eq!(h3.fields().count(), count - removed + 1, "an added value made fields");
        assert!(h3.has("x-fuzz"));
    }
});
