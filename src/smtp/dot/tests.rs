use super::*;

/// Everything observable after feeding some input.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    out: Vec<u8>,
    consumed: usize,
    done: bool,
    error: Option<DataError>,
    size: u64,
    received: u32,
    eight_bit: bool,
}

/// Feed `input` in chunks ending at the ascending offsets `cuts` (then the rest).
fn run_chunks(max: u64, input: &[u8], cuts: &[usize]) -> Outcome {
    let mut r = DataReader::new(max);
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut done = false;
    let mut start = 0;
    for end in cuts.iter().copied().chain(std::iter::once(input.len())) {
        let chunk = &input[start..end];
        let fed = r.feed(chunk, &mut out);
        assert!(fed.consumed <= chunk.len());
        consumed += fed.consumed;
        if fed.done {
            done = true;
            break;
        }
        assert_eq!(fed.consumed, chunk.len(), "short consume without done");
        start = end;
    }
    assert!(!out.contains(&b'\r'), "CR in output");
    Outcome {
        out,
        consumed,
        done,
        error: r.error(),
        size: r.size(),
        received: r.received_count(),
        eight_bit: r.saw_8bit(),
    }
}

/// xorshift64: deterministic splits without a rand crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut at = 0;
    while len > 0 && at < len {
        // Mostly short chunks (to split CRLF and `.CRLF`), sometimes long ones.
        let step = if rng.below(4) == 0 {
            1 + rng.below(len)
        } else {
            1 + rng.below(4)
        };
        at = (at + step).min(len);
        cuts.push(at);
    }
    cuts
}

/// Feed whole, byte by byte and in several random splits; all must agree.
fn check(max: u64, input: &[u8]) -> Outcome {
    let whole = run_chunks(max, input, &[]);
    let bytes: Vec<usize> = (1..input.len()).collect();
    assert_eq!(run_chunks(max, input, &bytes), whole, "byte by byte: {input:?}");
    for seed in 1..=6u64 {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed * 0x1234_5678_9abc));
        let cuts = random_cuts(&mut rng, input.len());
        assert_eq!(run_chunks(max, input, &cuts), whole, "cuts {cuts:?}: {input:?}");
    }
    whole
}

struct Case {
    name: &'static str,
    input: &'static [u8],
    out: &'static [u8],
    /// None: the whole input.
    consumed: Option<usize>,
    done: bool,
    error: Option<DataError>,
}

const CASES: &[Case] = &[
    Case {
        name: "simple",
        input: b"Subject: hi\r\n\r\nhello\r\n.\r\n",
        out: b"Subject: hi\n\nhello\n",
        consumed: None,
        done: true,
        error: None,
    },
    Case {
        name: "empty message",
        input: b".\r\n",
        out: b"",
        consumed: None,
        done: true,
        error: None,
    },
    Case {
        name: "empty message, pipelined QUIT",
        input: b".\r\nQUIT\r\n",
        out: b"",
        consumed: Some(3),
        done: true,
        error: None,
    },
    Case {
        name: "one empty line",
        input: b"\r\n.\r\n",
        out: b"\n",
        consumed: None,
        done: true,
        error: None,
    },
    Case {
        name: "dot stuffing",
        input: b"..foo\r\n..\r\n...\r\n.x\r\n.\r\n",
        out: b".foo\n.\n..\nx\n",
        consumed: None,
        done: true,
        error: None,
    },
    Case {
        name: "dot stuffing on the first line",
        input: b"..\r\n.\r\n",
        out: b".\n",
        consumed: None,
        done: true,
        error: None,
    },
    Case {
        name: "dots not at line start kept",
        input: b"a.b\r\nc.\r\n.\r\n",
        out: b"a.b\nc.\n",
        consumed: None,
        done: true,
        error: None,
    },
    Case {
        name: "pipelined commands after the terminator",
        input: b"hi\r\n.\r\nMAIL FROM:<a@b>\r\nQUIT\r\n",
        out: b"hi\n",
        consumed: Some(7),
        done: true,
        error: None,
    },
    Case {
        name: "only the first terminator counts",
        input: b"a\r\n.\r\n.\r\n",
        out: b"a\n",
        consumed: Some(6),
        done: true,
        error: None,
    },
    Case {
        name: "incomplete",
        input: b"hi\r\nthere",
        out: b"hi\nthere",
        consumed: None,
        done: false,
        error: None,
    },
    Case {
        name: "terminator incomplete",
        input: b"hi\r\n.\r",
        out: b"hi\n",
        consumed: None,
        done: false,
        error: None,
    },
    Case {
        name: "bare LF in text",
        input: b"a\nb\r\n.\r\n",
        out: b"a",
        consumed: None,
        done: true,
        error: Some(DataError::BareNewline),
    },
    Case {
        name: "bare CR in text",
        input: b"a\rb\r\n.\r\n",
        out: b"a",
        consumed: None,
        done: true,
        error: Some(DataError::BareNewline),
    },
    Case {
        name: "CR CR LF: first CR bare",
        input: b"a\r\r\n.\r\n",
        out: b"a",
        consumed: None,
        done: true,
        error: Some(DataError::BareNewline),
    },
    Case {
        name: "dot then bare LF at line start",
        input: b".\n.\r\n",
        out: b"",
        consumed: None,
        done: false,
        error: Some(DataError::BareNewline),
    },
];

#[test]
fn table() {
    for c in CASES {
        let got = check(u64::MAX, c.input);
        assert_eq!(got.out, c.out, "{}", c.name);
        assert_eq!(got.consumed, c.consumed.unwrap_or(c.input.len()), "{}", c.name);
        assert_eq!(got.done, c.done, "{}", c.name);
        assert_eq!(got.error, c.error, "{}", c.name);
    }
}

#[test]
fn smuggling_vectors() {
    let vectors: &[&[u8]] = &[
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\n",
        b"\n.\n",
        b"\r.\r",
        b"\r\n.\r\r\n",
        b"\r\n.\n\r\n",
        b"\r\n\n.\r\n",
        b"\r\n.\r.\r\n",
    ];
    let smuggled: &[u8] = b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\n";
    for v in vectors {
        for prefix in [&b""[..], b"hello", b"hello\r\n"] {
            let mut input = prefix.to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(smuggled);
            let got = check(u64::MAX, &input);
            assert!(!got.done, "ended early: {input:?}");
            assert_eq!(got.consumed, input.len());
            assert_eq!(got.error, Some(DataError::BareNewline), "{input:?}");

            // The real terminator then ends it, exactly once, leaving QUIT unconsumed.
            input.extend_from_slice(b".\r\n");
            let end = input.len();
            input.extend_from_slice(b"QUIT\r\n");
            let got = check(u64::MAX, &input);
            assert!(got.done, "{input:?}");
            assert_eq!(got.consumed, end, "{input:?}");
            assert_eq!(got.error, Some(DataError::BareNewline));
        }
    }
}

fn line(stuff: bool, n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    if stuff {
        v.push(b'.');
    }
    v.resize(v.len() + n, b'x');
    v.extend_from_slice(b"\r\n.\r\n");
    v
}

#[test]
fn line_length() {
    let ok = check(u64::MAX, &line(false, 998));
    assert_eq!(ok.error, None);
    assert_eq!(ok.out.len(), 999);
    assert_eq!(ok.size, 1000);

    let long = check(u64::MAX, &line(false, 999));
    assert_eq!(long.error, Some(DataError::LineTooLong));
    assert!(long.done);
    assert_eq!(long.consumed, 999 + 5);

    // RFC 5321 4.5.3.1.6: the transparency dot does not count.
    let stuffed = check(u64::MAX, &line(true, 998));
    assert_eq!(stuffed.error, None);
    assert_eq!(
        stuffed.out,
        line(false, 998)[..998]
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<_>>()
    );
    let stuffed = check(u64::MAX, &line(true, 999));
    assert_eq!(stuffed.error, Some(DataError::LineTooLong));

    // The limit is per line, not cumulative.
    let mut two = line(false, 998);
    two.truncate(1000);
    two.extend_from_slice(&line(false, 998));
    let got = check(u64::MAX, &two);
    assert_eq!(got.error, None);
    assert_eq!(got.out.len(), 2 * 999);

    // Without any CRLF the error comes at octet 1001.
    let r = run_chunks(u64::MAX, &[b'x'; 1000], &[]);
    assert_eq!(r.error, None);
    let r = run_chunks(u64::MAX, &[b'x'; 1001], &[]);
    assert_eq!(r.error, Some(DataError::LineTooLong));
    assert_eq!(r.out.len(), 1000);
}

#[test]
fn too_big() {
    let msg = b"abc\r\nde\r\n.\r\n";
    let exact = check(9, msg);
    assert_eq!(exact.error, None);
    assert_eq!(exact.size, 9);
    assert_eq!(exact.out, b"abc\nde\n");

    let over = check(8, msg);
    assert_eq!(over.error, Some(DataError::TooBig));
    assert!(over.done);
    assert_eq!(over.consumed, msg.len());
    assert_eq!(over.size, 9, "keeps counting");
    assert_eq!(over.out, b"abc\nde", "nothing appended after the error");

    // Inside a long run (the fast path stops exactly at the limit).
    let mut long = vec![b'y'; 100];
    long.extend_from_slice(b"\r\n.\r\n");
    let got = check(50, &long);
    assert_eq!(got.error, Some(DataError::TooBig));
    assert_eq!(got.out, vec![b'y'; 50]);
    assert_eq!(got.size, 102);

    // Stuffing dots and the terminator are not counted.
    assert_eq!(check(0, b".\r\n").error, None);
    assert_eq!(check(3, b"..\r\n.\r\n").error, None);
    assert_eq!(check(2, b"..\r\n.\r\n").error, Some(DataError::TooBig));
}

#[test]
fn first_error_sticks() {
    let mut input = b"a\nb".to_vec();
    input.extend_from_slice(&line(false, 1200));
    let got = check(10, &input);
    assert_eq!(got.error, Some(DataError::BareNewline));
    assert!(got.done);

    // TooBig reached before the line gets long.
    let got = check(5, &line(false, 1200));
    assert_eq!(got.error, Some(DataError::TooBig));
    // On the same octet, TooBig is reported.
    let got = check(1000, &line(false, 1200));
    assert_eq!(got.error, Some(DataError::TooBig));
    let got = check(1001, &line(false, 1200));
    assert_eq!(got.error, Some(DataError::LineTooLong));
}

#[test]
fn received_count() {
    let cases: &[(&[u8], u32)] = &[
        (
            b"Received: from a\r\n\tby b\r\n  Received: cont\r\nRECEIVED: x\r\nreceived : y\r\n\
                  X-Received: no\r\nSubject: Received: no\r\nReceivedx: no\r\nReceived\r\n\
                  rEcEiVeD:z\r\n\r\nReceived: body\r\n.\r\n",
            4,
        ),
        // Matched after unstuffing: ".Received" is "Received", "..Received" is ".Received".
        (b".Received: a\r\n..Received: b\r\n.\r\n", 1),
        // An empty first line: no header section at all.
        (b"\r\nReceived: a\r\n.\r\n", 0),
        (b"Received:\r\n.\r\n", 1),
        (b"Received\r:\r\n.\r\n", 0),
    ];
    for (input, n) in cases {
        let got = check(u64::MAX, input);
        assert!(got.done);
        assert_eq!(got.received, *n, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn eight_bit() {
    assert!(!check(u64::MAX, b"plain\r\n.\r\n").eight_bit);
    assert!(check(u64::MAX, b"caf\xc3\xa9\r\n.\r\n").eight_bit);
    assert!(check(u64::MAX, b".\xff\r\n.\r\n").eight_bit);
    assert!(check(u64::MAX, b"\xff\r\n.\r\n").eight_bit);
    // Still noted after an error.
    assert!(check(1, b"abc\xff\r\n.\r\n").eight_bit);
    // Not counted past the terminator.
    assert!(!check(u64::MAX, b".\r\n\xff").eight_bit);
}

/// Issue 16 item 3: a NUL anywhere voids the message, in a fast run or alone,
/// and the reader still finds the real end of the data.
#[test]
fn nul_is_refused_and_the_end_still_found() {
    for input in [
        &b"a\x00b\r\n.\r\n"[..],
        b"\r\n\x00.\r\n.\r\n",
        b"\x00\r\n.\r\n",
        b"Subject: x\r\n\r\nlong line with a nul \x00 in the middle\r\n.\r\n",
    ] {
        let o = check(u64::MAX, input);
        assert_eq!(o.error, Some(DataError::Nul), "{input:?}");
        assert!(o.done, "{input:?}");
        assert_eq!(o.consumed, input.len(), "{input:?}");
    }
    assert_eq!(check(u64::MAX, b"no nul\r\n.\r\n").error, None);
}

/// BDAT: a leading dot is content, `CRLF.CRLF` ends nothing, the line rules
/// and NUL still hold, and a CR left at the very end is bare.
#[test]
fn chunked_mode() {
    let run = |chunks: &[&[u8]]| {
        let mut r = DataReader::chunked(2000);
        let mut out = Vec::new();
        for c in chunks {
            let fed = r.feed(c, &mut out);
            assert_eq!(
                fed,
                Fed {
                    consumed: c.len(),
                    done: false
                }
            );
        }
        r.finish();
        (out, r.error())
    };
    assert_eq!(
        run(&[b"A: 1\r\n\r\n.\r\n..x\r", b"\n.\r\nend\r\n"]),
        (b"A: 1\n\n.\n..x\n.\nend\n".to_vec(), None)
    );
    assert_eq!(run(&[b"no line end"]), (b"no line end".to_vec(), None));
    assert_eq!(run(&[b"bare\nlf\r\n"]).1, Some(DataError::BareNewline));
    assert_eq!(run(&[b"cr at the end\r"]).1, Some(DataError::BareNewline));
    assert_eq!(run(&[b"x\x00\r\n"]).1, Some(DataError::Nul));
    assert_eq!(run(&[&[b'x'; 1001][..], b"\r\n"]).1, Some(DataError::LineTooLong));
    let big: &[&[u8]] = &[
        &[b'x'; 900][..],
        b"\r\n",
        &[b'y'; 900][..],
        b"\r\n",
        &[b'z'; 900][..],
    ];
    assert_eq!(run(big).1, Some(DataError::TooBig));
    let mut r = DataReader::chunked(1000);
    r.feed(
        b"Received: a\r\nreceived : b\r\n\r\nReceived: c\r\n",
        &mut Vec::new(),
    );
    assert_eq!(r.received_count(), 2);
}

#[test]
fn feed_after_done() {
    let mut r = DataReader::new(100);
    let mut out = Vec::new();
    let fed = r.feed(b"x\r\n.\r\nQUIT", &mut out);
    assert_eq!(
        fed,
        Fed {
            consumed: 6,
            done: true
        }
    );
    let fed = r.feed(b"more\r\n.\r\n", &mut out);
    assert_eq!(
        fed,
        Fed {
            consumed: 0,
            done: true
        }
    );
    let fed = r.feed(b"", &mut out);
    assert_eq!(
        fed,
        Fed {
            consumed: 0,
            done: true
        }
    );
    assert_eq!(out, b"x\n");
    assert_eq!(r.size(), 3);
}

#[test]
fn empty_feeds() {
    let mut r = DataReader::new(100);
    let mut out = Vec::new();
    // (input, consumed, done): empty feeds in between change nothing.
    let steps: [(&[u8], usize, bool); 6] = [
        (b"", 0, false),
        (b"a\r", 2, false),
        (b"", 0, false),
        (b"\n.", 2, false),
        (b"\r", 1, false),
        (b"\n", 1, true),
    ];
    for (input, consumed, done) in steps {
        assert_eq!(r.feed(input, &mut out), Fed { consumed, done }, "{input:?}");
    }
    assert_eq!(out, b"a\n");
    assert_eq!(r.error(), None);
}

/// A direct model: lines are what lies between CRLFs; the terminator is the first line
/// that is exactly ".". Returns (out, consumed if done, bare newline seen, size).
fn model(input: &[u8]) -> (Vec<u8>, Option<usize>, bool, u64) {
    let mut out = Vec::new();
    let mut bare = false;
    let mut size = 0;
    let mut pos = 0;
    while let Some(off) = input[pos..].windows(2).position(|w| w == b"\r\n") {
        let line = &input[pos..pos + off];
        let next = pos + off + 2;
        if line == b"." {
            return (out, Some(next), bare, size);
        }
        let body = line.strip_prefix(b".").unwrap_or(line);
        bare |= body.contains(&b'\r') || body.contains(&b'\n');
        out.extend_from_slice(body);
        out.push(b'\n');
        size += body.len() as u64 + 2;
        pos = next;
    }
    // The unfinished last line: its content so far, a final CR still undecided.
    let tail = &input[pos..];
    let tail = tail.strip_suffix(b"\r").unwrap_or(tail);
    let body = tail.strip_prefix(b".").unwrap_or(tail);
    bare |= body.contains(&b'\r') || body.contains(&b'\n');
    out.extend_from_slice(body);
    (out, None, bare, size)
}

#[test]
fn random_inputs_match_model() {
    let alphabet = b"\r\n\r\n..aR\xe9";
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..3000 {
        let len = rng.below(48);
        let input: Vec<u8> = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
        let got = check(u64::MAX, &input);
        let (out, end, bare, size) = model(&input);
        assert_eq!(got.done, end.is_some(), "{input:?}");
        assert_eq!(got.consumed, end.unwrap_or(input.len()), "{input:?}");
        if bare {
            assert_eq!(got.error, Some(DataError::BareNewline), "{input:?}");
        } else {
            assert_eq!(got.error, None, "{input:?}");
            assert_eq!(got.out, out, "{input:?}");
            if got.done {
                assert_eq!(got.size, size, "{input:?}");
            }
        }
    }
}
