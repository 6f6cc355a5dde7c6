//! The SMTP DATA reader: a pure byte state machine, no I/O.
//!
//! It owns everything about the octets a client sends after the `354` reply
//! (RFC 5321 4.1.1.4): finding the end of data, dot-unstuffing (4.5.2), turning
//! each CRLF into LF, the size (RFC 1870) and line-length (4.5.3.1.6) limits,
//! counting `Received:` fields for loop detection (6.3) and noting 8-bit octets
//! (RFC 6152). It is also the SMTP-smuggling defence (CVE-2023-51764, -51765,
//! -51766): only `CRLF.CRLF` ends the data and a bare CR or LF is never a line
//! end, so no look-alike (`LF.LF`, `LF.CRLF`, `CR.CR`, ...) can end one message
//! and start a second one inside it.
//!
//! Counting convention, shared by the size and the line-length limits: octets are
//! counted after dot-unstuffing (RFC 5321 4.5.3.1.6 excludes the transparency
//! dot from the line length), a CRLF counts as 2, a bare CR or LF as 1, and the
//! terminating `.CRLF` is not counted.
//!
//! Once an error is recorded `out` holds a partial prefix of the message that the
//! caller must discard; the reader only keeps scanning for the terminator so that
//! the session stays in step with the client.
//!
//! The same reader serves BDAT (RFC 3030) in [`DataReader::chunked`] mode: there
//! is no dot and no terminator (the chunk sizes say where the data ends), but
//! every line rule of a 7BIT or 8BITMIME body holds the same: CRLF only, at most
//! 1000 octets a line, no NUL, the size limit, the Received: count.

/// Why a message was refused; sticky once set. The session maps these to replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    /// More than the size limit of unstuffed message octets (RFC 1870).
    TooBig,
    /// A CR not followed by LF, or an LF not preceded by CR, anywhere in the data.
    BareNewline,
    /// A line longer than 1000 octets including its CRLF (RFC 5321 4.5.3.1.6).
    LineTooLong,
    /// A NUL octet: RFC 5322 2.3 text and RFC 6152 8-bit data both exclude it, and
    /// a next hop that drops NULs would see `CRLF.CRLF` in `CRLF NUL . CRLF`.
    Nul,
}

/// Result of one feed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Input bytes consumed. When `done` is true this stops right after the terminator's
    /// final LF, so any bytes the client pipelined after the end of data stay unconsumed.
    pub consumed: usize,
    /// True once `CRLF.CRLF` (or `.CRLF` at the very start of the data) has been seen.
    pub done: bool,
}

/// RFC 5321 4.5.3.1.6: at most 1000 octets per line, CRLF included.
const MAX_LINE: u64 = 1000;
/// The field name looked for, lower case; the colon is matched separately.
const RECEIVED: &[u8] = b"received";
/// `rmatch` value meaning "this line cannot start a Received: field".
const NO_MATCH: u8 = u8::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line; nothing of it seen yet.
    LineStart,
    /// The line so far is a single `.`: either stuffing or the terminator.
    Dot,
    /// The line so far is `.CR`: the terminator if an LF follows.
    DotCr,
    /// Inside a line.
    Text,
    /// Inside a line, just after a CR (already counted) whose meaning the next octet decides.
    Cr,
    /// The terminator has been consumed.
    Done,
}

/// Incremental reader of the DATA stream; see the module documentation.
#[derive(Debug, Clone)]
pub struct DataReader {
    state: State,
    max_size: u64,
    size: u64,
    /// Unstuffed octets of the current line so far.
    line_len: u64,
    error: Option<DataError>,
    /// Still before the first empty line.
    in_header: bool,
    /// How many octets of "received" the current line has matched, `RECEIVED.len()` once the
    /// whole name matched (waiting for the colon), or `NO_MATCH`.
    rmatch: u8,
    received: u32,
    saw_8bit: bool,
    /// BDAT: no dot-stuffing and no terminator.
    chunked: bool,
}

/// The run of input bytes waiting to be appended to `out`, so that output is written with
/// one `extend_from_slice` per run rather than per byte.
struct Sink<'a> {
    input: &'a [u8],
    out: &'a mut Vec<u8>,
    start: usize,
    end: usize,
}

impl Sink<'_> {
    /// Queue `input[from..to]`, extending the pending run when contiguous.
    fn add(&mut self, from: usize, to: usize) {
        if from != self.end {
            self.flush();
            self.start = from;
        }
        self.end = to;
    }

    fn flush(&mut self) {
        if let Some(run) = self.input.get(self.start..self.end) {
            self.out.extend_from_slice(run);
        }
        self.start = self.end;
    }
}

impl DataReader {
    /// `max_size`: the most unstuffed octets (counting each line end as 2, CRLF, as received) kept.
    pub fn new(max_size: u64) -> DataReader {
        DataReader {
            // RFC 5321 4.1.1.4: the data begins at the start of a line, so `.CRLF` first is
            // an empty message.
            state: State::LineStart,
            max_size,
            size: 0,
            line_len: 0,
            error: None,
            in_header: true,
            rmatch: 0,
            received: 0,
            saw_8bit: false,
            chunked: false,
        }
    }

    /// A reader for the chunks of BDAT (RFC 3030 2): the same limits and line
    /// rules, but a leading dot is content and nothing in the data ends it; the
    /// caller feeds exactly the octets each chunk announced, then calls
    /// [`DataReader::finish`] after the LAST one.
    pub fn chunked(max_size: u64) -> DataReader {
        DataReader {
            chunked: true,
            ..DataReader::new(max_size)
        }
    }

    /// The end of a chunked message: a CR left waiting for its LF is bare.
    /// (A last line without a line end is kept as it is, as Postfix keeps it.)
    pub fn finish(&mut self) {
        if self.state == State::Cr {
            self.fail(DataError::BareNewline);
        }
        self.state = State::Done;
    }

    /// Consume bytes; append the message (dot-unstuffed, each CRLF written as a single LF,
    /// the terminating ".CRLF" not included) to `out`. After an error has been recorded,
    /// nothing more is appended to `out` but input keeps being consumed up to the terminator.
    /// Calling feed after done returns consumed 0, done true.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Fed {
        if self.state == State::Done {
            return Fed {
                consumed: 0,
                done: true,
            };
        }
        let mut sink = Sink {
            input,
            out,
            start: 0,
            end: 0,
        };
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            if self.state == State::Text && self.rmatch == NO_MATCH {
                let n = self.plain_run(input.get(i..).unwrap_or_default());
                if n > 0 {
                    self.emit(&mut sink, i, i + n);
                    i += n;
                    continue;
                }
            }
            if self.step(b, i, &mut sink) {
                sink.flush();
                return Fed {
                    consumed: i + 1,
                    done: true,
                };
            }
            i += 1;
        }
        sink.flush();
        Fed {
            consumed: input.len(),
            done: false,
        }
    }

    /// The first error recorded, if any.
    pub fn error(&self) -> Option<DataError> {
        self.error
    }

    /// Unstuffed octets seen so far, counting CRLF as 2 (keeps counting after TooBig, saturating).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of `Received:` header fields (name matched case-insensitively, at the start of a
    /// line, within the header section, i.e. before the first empty line) seen so far.
    /// Continuation lines (starting with space or tab) are not new fields. RFC 5321 6.3: loop detection.
    pub fn received_count(&self) -> u32 {
        self.received
    }

    /// Whether the data contained any octet > 127 (for 8BITMIME bookkeeping).
    pub fn saw_8bit(&self) -> bool {
        self.saw_8bit
    }

    /// Fast path for the middle of a line: account for the longest prefix of `rest` holding
    /// no CR or LF that crosses no limit, and return its length. Every octet in it does
    /// exactly what `step` would do with it, so chunking never changes the result.
    fn plain_run(&mut self, rest: &[u8]) -> usize {
        // A NUL also ends the run: `step` records it at its own place.
        let run = rest
            .iter()
            .position(|&c| c == b'\r' || c == b'\n' || c == 0)
            .unwrap_or(rest.len());
        let n = if self.error.is_some() {
            run
        } else {
            // Stop before the octet that would cross a limit; `step` records the error there.
            let room = MAX_LINE
                .saturating_sub(self.line_len)
                .min(self.max_size.saturating_sub(self.size));
            run.min(usize::try_from(room).unwrap_or(usize::MAX))
        };
        let span = rest.get(..n).unwrap_or_default();
        if !self.saw_8bit && span.iter().any(|&c| c > 0x7f) {
            self.saw_8bit = true;
        }
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        self.size = self.size.saturating_add(n64);
        self.line_len = self.line_len.saturating_add(n64);
        n
    }

    /// Process one input octet at index `i`; true when it was the terminator's final LF.
    fn step(&mut self, b: u8, i: usize, sink: &mut Sink<'_>) -> bool {
        match self.state {
            State::LineStart => {
                if b == b'.' && !self.chunked {
                    // Not counted yet: it is either stuffing or part of the terminator.
                    self.state = State::Dot;
                } else {
                    self.text(b, i, sink);
                }
            }
            State::Dot => {
                if b == b'\r' {
                    self.state = State::DotCr;
                } else {
                    // RFC 5321 4.5.2: a leading dot followed by more characters is removed.
                    // A bare LF here is content, so `CRLF.LF` never ends the data.
                    self.text(b, i, sink);
                }
            }
            State::DotCr => {
                if b == b'\n' {
                    // RFC 5321 4.1.1.4: `CRLF.CRLF` is the end of data; not part of the message.
                    self.state = State::Done;
                    return true;
                }
                // `.CR` + other: the dot was stuffing and the CR is bare content (RFC 5321
                // 2.3.8), so `CRLF.CR` cannot end the data.
                self.octet(b'\r');
                self.match_received(b'\r');
                self.fail(DataError::BareNewline);
                self.text(b, i, sink);
            }
            State::Text => self.text(b, i, sink),
            State::Cr => {
                if b == b'\n' {
                    // CRLF: the only line end (RFC 5321 2.3.8); written as the LF alone.
                    self.octet(b);
                    self.emit(sink, i, i + 1);
                    // RFC 5322 2.1: the first empty line ends the header section.
                    if self.line_len == 2 {
                        self.in_header = false;
                    }
                    self.line_len = 0;
                    self.rmatch = if self.in_header { 0 } else { NO_MATCH };
                    self.state = State::LineStart;
                } else {
                    // RFC 5321 2.3.8: a bare CR is not a line end; it was counted as content.
                    self.fail(DataError::BareNewline);
                    self.text(b, i, sink);
                }
            }
            // `feed` returns before stepping once done.
            State::Done => return true,
        }
        false
    }

    /// An octet of line content (the leading dot, if any, already dealt with).
    fn text(&mut self, b: u8, i: usize, sink: &mut Sink<'_>) {
        self.octet(b);
        self.match_received(b);
        match b {
            // Maybe a line end; the next octet decides. Never emitted: a CRLF becomes its LF.
            b'\r' => self.state = State::Cr,
            b'\n' => {
                // RFC 5321 2.3.8: a bare LF is not a line end (CVE-2023-51764 and kin).
                self.fail(DataError::BareNewline);
                self.state = State::Text;
            }
            _ => {
                self.state = State::Text;
                self.emit(sink, i, i + 1);
            }
        }
    }

    /// Count one unstuffed octet against the limits.
    fn octet(&mut self, b: u8) {
        self.size = self.size.saturating_add(1);
        self.line_len = self.line_len.saturating_add(1);
        if b > 0x7f {
            self.saw_8bit = true;
        }
        if b == 0 {
            self.fail(DataError::Nul);
        }
        // RFC 1870: refuse a message larger than the advertised SIZE.
        if self.size > self.max_size {
            self.fail(DataError::TooBig);
        }
        // RFC 5321 4.5.3.1.6: 1000 octets per line including CRLF.
        if self.line_len > MAX_LINE {
            self.fail(DataError::LineTooLong);
        }
    }

    /// Advance the `Received:` matcher by one unstuffed content octet of the current line.
    fn match_received(&mut self, b: u8) {
        let m = self.rmatch;
        if m == NO_MATCH {
            return;
        }
        self.rmatch = match RECEIVED.get(usize::from(m)) {
            Some(&c) if b.to_ascii_lowercase() == c => m.saturating_add(1),
            Some(_) => NO_MATCH,
            // RFC 5322 4.5: the obsolete syntax allows WSP between field name and colon.
            None if b == b' ' || b == b'\t' => m,
            None if b == b':' => {
                self.received = self.received.saturating_add(1);
                NO_MATCH
            }
            None => NO_MATCH,
        };
    }

    /// Queue `input[from..to]` for output unless an error has made the message void.
    fn emit(&self, sink: &mut Sink<'_>, from: usize, to: usize) {
        if self.error.is_none() {
            sink.add(from, to);
        }
    }

    /// Record `e` unless an earlier error is already recorded.
    fn fail(&mut self, e: DataError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
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
}
