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
mod tests;
