//! smtp::dot::DataReader fed the same stream whole and in arbitrary pieces.
//! Checks: the result does not depend on the split; it is done only right after a
//! CRLF.CRLF (or a first line "."); everything after the terminator is left
//! unconsumed; the output never holds a CR.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern::smtp::dot::DataReader;
mod common;

/// Feed `input` in pieces ending at `cuts`; (output, consumed, done, error, size, received, 8bit).
fn run(max: u64, input: &[u8], cuts: &[usize]) -> (Vec<u8>, usize, bool, String, u64, u32, bool) {
    let mut r = DataReader::new(max);
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut done = false;
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        let end = end.clamp(start, input.len());
        let mut piece = &input[start..end];
        // A reader may consume less than it was given only when it is done.
        while !piece.is_empty() && !done {
            let fed = r.feed(piece, &mut out);
            assert!(fed.consumed <= piece.len());
            assert!(fed.done || fed.consumed == piece.len(), "not done but left input");
            consumed += fed.consumed;
            piece = &piece[fed.consumed..];
            done = fed.done;
        }
        start = end;
    }
    (
        out,
        consumed,
        done,
        format!("{:?}", r.error()),
        r.size(),
        r.received_count(),
        r.saw_8bit(),
    )
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max = u64::from(data[0]) * 4;
    let ncuts = usize::from(data[1] % 8);
    let rest = &data[2..];
    let (cut_bytes, body) = rest.split_at(ncuts.min(rest.len()));
    let input = if data[0] & 1 == 1 {
        common::smtp_alphabet(body)
    } else {
        body.to_vec()
    };
    let mut cuts: Vec<usize> = cut_bytes
        .iter()
        .map(|&b| usize::from(b) * input.len() / 256)
        .collect();
    cuts.sort_unstable();

    let whole = run(max, &input, &[]);
    let split = run(max, &input, &cuts);
    assert_eq!(whole, split, "the split changed the result");
    let bytewise: Vec<usize> = (1..input.len()).collect();
    assert_eq!(
        whole,
        run(max, &input, &bytewise),
        "byte-at-a-time changed the result"
    );

    let (out, consumed, done, ..) = whole;
    assert!(!out.contains(&b'\r'), "CR in the output");
    let prefix = &input[..consumed];
    if done {
        assert!(
            prefix == b".\r\n" || prefix.ends_with(b"\r\n.\r\n"),
            "done without CRLF.CRLF: {:?}",
            String::from_utf8_lossy(prefix)
        );
    } else {
        assert_eq!(consumed, input.len());
    }
});
