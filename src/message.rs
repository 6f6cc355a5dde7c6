//! The header section of an Internet message (RFC 5322 2.1, 2.2), the one parser
//! and editor every part of tern uses: where the header ends, its fields with their
//! folded lines, a field by name, and an editor that removes and adds fields and
//! otherwise gives the message back byte for byte.
//!
//! Lines end in LF (the spool's form) or CRLF (the wire's); both are read. The
//! header section is the fields up to the first empty line. A line that is neither
//! a field nor the continuation of one also ends it, and starts the body (Postfix's
//! cleanup reads a message so; RFC 5322 has no room for such a line in a header).
//! A field is a name of printable ASCII but ':', optional white space (the obsolete
//! syntax of RFC 5322 4.5.3, which a reader must accept), ':', then the value and
//! its continuation lines (those starting with a space or a tab).
//!
//! Nothing here panics or allocates more than the input on any input; the `message`
//! fuzz target checks it.

use std::fmt;

/// Where the header section of a message ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The length of the header fields, through the last field's line end.
    pub header_len: usize,
    /// Where the body starts: after the empty line, or at the first line that is
    /// no field (then equal to `header_len`: there is no empty line).
    pub body_start: usize,
}

impl End {
    /// Whether an empty line separates the header from the body.
    pub fn has_empty_line(&self) -> bool {
        self.body_start > self.header_len
    }
}

/// The end of the header section, if `data` holds it: the first empty line, or
/// the first complete line that is neither a field nor a continuation. None when
/// `data` is all header so far (more may come: a last line without its line end
/// is not judged).
pub fn find_end(data: &[u8]) -> Option<End> {
    EndScanner::default().scan(data)
}

/// [`find_end`] over data that keeps growing (a message as it arrives): each
/// call looks only at what the calls before it have not, so finding the end
/// of a header that comes in small pieces costs its length, not its square.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndScanner {
    /// Where the first line not yet judged starts.
    pos: usize,
    /// How far that line has been searched for its LF.
    searched: usize,
    /// A field is open above `pos`.
    in_field: bool,
}

impl EndScanner {
    /// The end of the header section, if `data` (the same data as before,
    /// with more after it) holds it now.
    pub fn scan(&mut self, data: &[u8]) -> Option<End> {
        loop {
            let from = self.searched.max(self.pos);
            let tail = data.get(from..).filter(|r| !r.is_empty())?;
            let Some(lf) = tail.iter().position(|&b| b == b'\n') else {
                self.searched = data.len();
                return None;
            };
            let end = from + lf + 1;
            let line = data.get(self.pos..end).unwrap_or_default();
            match classify(line, self.in_field) {
                Line::Empty => {
                    return Some(End {
                        header_len: self.pos,
                        body_start: end,
                    })
                }
                Line::Other => {
                    return Some(End {
                        header_len: self.pos,
                        body_start: self.pos,
                    })
                }
                Line::Field | Line::Continuation => self.in_field = true,
            }
            self.pos = end;
            self.searched = end;
        }
    }
}

/// A whole message's header fields and body. Without an end, all of it is header
/// (a last line without its line end counts as a complete line).
pub fn split(message: &[u8]) -> (&[u8], &[u8]) {
    let end = end_of_whole(message);
    (
        message.get(..end.header_len).unwrap_or_default(),
        message.get(end.body_start..).unwrap_or_default(),
    )
}

/// The fields of a message's header section (or of a header section alone), in
/// order.
pub fn fields(message: &[u8]) -> Fields<'_> {
    Fields {
        rest: split(message).0,
    }
}

/// The first field called `name` (case-insensitive).
pub fn get<'a>(message: &'a [u8], name: &str) -> Option<Field<'a>> {
    fields(message).find(|f| f.is(name))
}

/// Like [`find_end`] for a whole message: the last line needs no line end.
fn end_of_whole(message: &[u8]) -> End {
    if let Some(end) = find_end(message) {
        return end;
    }
    // Everything up to the last line end is header; judge what follows it.
    let complete = message.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last = message.get(complete..).unwrap_or_default();
    let in_field = complete > 0;
    match classify(last, in_field) {
        _ if last.is_empty() => End {
            header_len: complete,
            body_start: complete,
        },
        Line::Field | Line::Continuation => End {
            header_len: message.len(),
            body_start: message.len(),
        },
        // A lone CR at the very end is an empty line without its LF.
        Line::Empty => End {
            header_len: complete,
            body_start: message.len(),
        },
        Line::Other => End {
            header_len: complete,
            body_start: complete,
        },
    }
}

enum Line {
    Empty,
    Field,
    Continuation,
    Other,
}

/// What one line (with or without its line end) is; `in_field`: a field is open
/// above it, so a line starting with white space continues it.
fn classify(line: &[u8], in_field: bool) -> Line {
    let content = strip_eol(line);
    if content.is_empty() {
        return Line::Empty;
    }
    if matches!(content.first(), Some(b' ' | b'\t')) {
        return if in_field { Line::Continuation } else { Line::Other };
    }
    if name_len(content).is_some() {
        Line::Field
    } else {
        Line::Other
    }
}

/// `line` without its LF or CRLF.
fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// RFC 5322 3.6.8 and 4.5.3: `field-name *WSP ":"`, field-name = 1*(%d33-57 /
/// %d59-126). The name's length and the colon's offset.
fn name_len(line: &[u8]) -> Option<(usize, usize)> {
    let name = line.iter().position(|&b| !is_name_char(b)).unwrap_or(line.len());
    if name == 0 {
        return None;
    }
    let after = line.get(name..).unwrap_or_default();
    let wsp = after
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(after.len());
    (after.get(wsp) == Some(&b':')).then_some((name, name + wsp))
}

fn is_name_char(b: u8) -> bool {
    (33..=126).contains(&b) && b != b':'
}

/// The fields of a header section, each with its continuation lines.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let len = field_len(self.rest);
            let raw = self.rest.get(..len).unwrap_or_default();
            self.rest = self.rest.get(len..).unwrap_or_default();
            // Only fields reach here (split() stopped at anything else); a stray
            // line is skipped rather than trusted.
            if let Some(f) = Field::parse(raw) {
                return Some(f);
            }
        }
    }
}

/// The length of the field at the start of `h`: its first line and every line
/// after it that starts with white space.
fn field_len(h: &[u8]) -> usize {
    let mut pos = 0;
    loop {
        let rest = h.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            return pos;
        }
        pos += rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        if !matches!(h.get(pos), Some(b' ' | b'\t')) {
            return pos;
        }
    }
}

/// One header field as it stands in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    raw: &'a [u8],
    name_len: usize,
    colon: usize,
}

impl<'a> Field<'a> {
    /// A field from its raw bytes (first line, continuation lines, line ends).
    fn parse(raw: &'a [u8]) -> Option<Field<'a>> {
        let (name_len, colon) = name_len(raw)?;
        Some(Field { raw, name_len, colon })
    }

    /// The name as written (ASCII by the grammar).
    pub fn name(&self) -> &'a str {
        let name = self.raw.get(..self.name_len).unwrap_or_default();
        std::str::from_utf8(name).unwrap_or_default()
    }

    /// Whether the field is called `name`; field names are case-insensitive.
    pub fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name)
    }

    /// The field's bytes: name, colon, value, continuation lines, line ends.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The bytes after the colon, folding and the last line end included.
    pub fn raw_value(&self) -> &'a [u8] {
        self.raw.get(self.colon + 1..).unwrap_or_default()
    }

    /// The value unfolded (RFC 5322 2.2.3: each line end before white space
    /// removed, and the last one), white space around it trimmed, as text (bytes
    /// that are not UTF-8 replaced).
    pub fn value(&self) -> String {
        let v = self.raw_value();
        let mut out = Vec::with_capacity(v.len());
        let mut bytes = v.iter().copied().peekable();
        while let Some(b) = bytes.next() {
            match b {
                b'\r' if bytes.peek() == Some(&b'\n') => {}
                b'\n' => {}
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(out.trim_ascii()).into_owned()
    }
}

/// Why a field cannot be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadName(pub String);

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a header field name: {:?}", self.0)
    }
}

impl std::error::Error for BadName {}

/// A header section being edited. The body is never copied in: [`Header::parse`]
/// hands it back as a slice, and [`Header::write`] puts the two together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Each field's raw bytes, line ends included.
    fields: Vec<Vec<u8>>,
    /// The empty line that ended the section, as found ("\n", "\r\n"), or empty.
    empty_line: Vec<u8>,
    /// Added fields end in CRLF (the message's first line did) or LF.
    crlf: bool,
}

impl Header {
    /// The header section of a whole message, and its body.
    pub fn parse(message: &[u8]) -> (Header, &[u8]) {
        let end = end_of_whole(message);
        let head = message.get(..end.header_len).unwrap_or_default();
        let mut fields = Vec::new();
        let mut rest = head;
        while !rest.is_empty() {
            let len = field_len(rest);
            fields.push(rest.get(..len).unwrap_or_default().to_vec());
            rest = rest.get(len..).unwrap_or_default();
        }
        let first_line_end = message.iter().position(|&b| b == b'\n');
        let crlf = first_line_end
            .and_then(|i| i.checked_sub(1))
            .is_some_and(|i| message.get(i) == Some(&b'\r'));
        let header = Header {
            fields,
            empty_line: message
                .get(end.header_len..end.body_start)
                .unwrap_or_default()
                .to_vec(),
            crlf,
        };
        (header, message.get(end.body_start..).unwrap_or_default())
    }

    /// The fields, in order.
    pub fn fields(&self) -> impl Iterator<Item = Field<'_>> {
        self.fields.iter().filter_map(|f| Field::parse(f))
    }

    /// The first field called `name`.
    pub fn get(&self, name: &str) -> Option<Field<'_>> {
        self.fields().find(|f| f.is(name))
    }

    /// Whether a field called `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Whether an empty line ended the section as it was parsed.
    pub fn has_empty_line(&self) -> bool {
        !self.empty_line.is_empty()
    }

    /// Remove every field called `name`; how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.fields.len();
        self.fields
            .retain(|f| !Field::parse(f).is_some_and(|f| f.is(name)));
        before - self.fields.len()
    }

    /// Remove every field `drop` picks; how many there were.
    pub fn remove_if(&mut self, mut drop: impl FnMut(&Field<'_>) -> bool) -> usize {
        let before = self.fields.len();
        self.fields.retain(|f| !Field::parse(f).is_some_and(|f| drop(&f)));
        before - self.fields.len()
    }

    /// Add `name: value` after the last field.
    pub fn append(&mut self, name: &str, value: &str) -> Result<(), BadName> {
        let f = self.field(name, value)?;
        self.fields.push(f);
        Ok(())
    }

    /// Add `name: value` before the field at `index` (after the last when `index`
    /// is past it).
    pub fn insert(&mut self, index: usize, name: &str, value: &str) -> Result<(), BadName> {
        let f = self.field(name, value)?;
        self.fields.insert(index.min(self.fields.len()), f);
        Ok(())
    }

    /// `name: value` and a line end. A line break in `value` becomes a fold (a line
    /// end and a space, unless white space follows already), so a value can never
    /// start a field of its own or end the header.
    fn field(&self, name: &str, value: &str) -> Result<Vec<u8>, BadName> {
        if name.is_empty() || !name.bytes().all(is_name_char) {
            return Err(BadName(name.to_owned()));
        }
        let eol: &[u8] = if self.crlf { b"\r\n" } else { b"\n" };
        let mut out = Vec::with_capacity(name.len() + value.len() + 4);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        let value = value.trim_end_matches(['\r', '\n']).as_bytes();
        let mut i = 0;
        while let Some(&b) = value.get(i) {
            i += 1;
            if b == b'\r' || b == b'\n' {
                if b == b'\r' && value.get(i) == Some(&b'\n') {
                    i += 1;
                }
                out.extend_from_slice(eol);
                if !matches!(value.get(i), Some(b' ' | b'\t')) {
                    out.push(b' ');
                }
            } else {
                out.push(b);
            }
        }
        out.extend_from_slice(eol);
        Ok(out)
    }

    /// The header section into `out`: the fields, then the empty line as found.
    /// When none was found and a body follows, one is written, so that the body
    /// can never be read as header.
    pub fn write(&self, body: &[u8], out: &mut Vec<u8>) {
        let eol: &[u8] = if self.crlf { b"\r\n" } else { b"\n" };
        let last = self.fields.len().saturating_sub(1);
        for (i, f) in self.fields.iter().enumerate() {
            out.extend_from_slice(f);
            // A field without its line end (the message ended there) gets one when
            // anything follows it: a field added after it, the empty line, a body.
            if !f.ends_with(b"\n") && (i < last || !self.empty_line.is_empty() || !body.is_empty()) {
                out.extend_from_slice(eol);
            }
        }
        if !self.empty_line.is_empty() {
            out.extend_from_slice(&self.empty_line);
        } else if !body.is_empty() {
            out.extend_from_slice(eol);
        }
    }

    /// The message again: this header section, then `body`.
    pub fn to_message(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + 64 * self.fields.len() + 2);
        self.write(body, &mut out);
        out.extend_from_slice(body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(m: &[u8]) -> Vec<String> {
        fields(m).map(|f| f.name().to_owned()).collect()
    }

    #[test]
    fn end_of_header() {
        let end = |h: &[u8]| find_end(h).map(|e| (e.header_len, e.body_start));
        assert_eq!(end(b"A: 1\nB: 2\n\nbody\n"), Some((10, 11)));
        assert_eq!(end(b"A: 1\r\n\r\nbody"), Some((6, 8)));
        assert_eq!(end(b"\nbody\n"), Some((0, 1)));
        assert_eq!(end(b"\r\n"), Some((0, 2)));
        // A line that is no field ends the header, with no empty line.
        assert_eq!(end(b"A: 1\njust text\n"), Some((5, 5)));
        assert_eq!(end(b"just text\n"), Some((0, 0)));
        assert_eq!(end(b" leading space\n"), Some((0, 0)));
        assert_eq!(end(b"From alice Mon Nov 23\n"), Some((0, 0)));
        // Continuations belong to the field above.
        assert_eq!(end(b"A: 1\n 2\n\tthree\n\nb"), Some((15, 16)));
        // Not yet: no end seen, or a last line without its line end.
        assert_eq!(end(b""), None);
        assert_eq!(end(b"A: 1\nB: 2\n"), None);
        assert_eq!(end(b"A: 1\njust te"), None);
        assert!(find_end(b"A: 1\n\n").is_some_and(|e| e.has_empty_line()));
        assert!(find_end(b"A: 1\nx\n").is_some_and(|e| !e.has_empty_line()));
    }

    #[test]
    fn split_whole_messages() {
        assert_eq!(
            split(b"A: 1\nB: 2\n\nbody\n\nmore"),
            (&b"A: 1\nB: 2\n"[..], &b"body\n\nmore"[..])
        );
        assert_eq!(split(b"A: 1\r\n\r\nbody"), (&b"A: 1\r\n"[..], &b"body"[..]));
        assert_eq!(split(b"A: 1\nB: 2"), (&b"A: 1\nB: 2"[..], &b""[..]));
        assert_eq!(split(b"A: 1\nB: 2\n"), (&b"A: 1\nB: 2\n"[..], &b""[..]));
        assert_eq!(split(b"\nbody"), (&b""[..], &b"body"[..]));
        assert_eq!(split(b""), (&b""[..], &b""[..]));
        assert_eq!(split(b"A: 1\ntext"), (&b"A: 1\n"[..], &b"text"[..]));
        assert_eq!(split(b"just text\n"), (&b""[..], &b"just text\n"[..]));
        assert_eq!(split(b"A: 1\n\r"), (&b"A: 1\n"[..], &b""[..]));
    }

    #[test]
    fn fields_and_values() {
        let m = b"Subject: hi\r\nTo: a@b,\r\n c@d\r\nX-Empty:\r\nSubject : obsolete\r\n\r\nNot: a field\r\n";
        assert_eq!(names(m), ["Subject", "To", "X-Empty", "Subject"]);
        let f: Vec<Field<'_>> = fields(m).collect();
        assert_eq!(f[0].value(), "hi");
        assert_eq!(f[1].value(), "a@b, c@d");
        assert_eq!(f[1].raw_value(), b" a@b,\r\n c@d\r\n");
        assert_eq!(f[1].raw(), b"To: a@b,\r\n c@d\r\n");
        assert_eq!(f[2].value(), "");
        // RFC 5322 4.5.3: white space before the colon is read.
        assert!(f[3].is("subject"));
        assert_eq!(f[3].value(), "obsolete");
        assert_eq!(get(m, "TO").map(|f| f.value()).as_deref(), Some("a@b, c@d"));
        assert_eq!(get(m, "not"), None);
        // Unfolding keeps the white space that starts the continuation.
        assert_eq!(get(b"A: x\n\t\ty\n", "a").unwrap().value(), "x\t\ty");
        // Not UTF-8: replaced, never a panic.
        assert_eq!(get(b"A: \xff\n", "a").unwrap().value(), "\u{fffd}");
        // A field name is printable ASCII: these are not fields.
        assert!(names(b"Na me: x\n").is_empty());
        assert!(names(b": x\n").is_empty());
        assert!(names(b"\xc3\xa9: x\n").is_empty());
        assert_eq!(names(b"A:1\nB-2.x_y: 2\n"), ["A", "B-2.x_y"]);
    }

    #[test]
    fn edit_and_write_back() {
        let m = b"Subject: s\nBcc: x@y,\n z@w\nTo: a@b\n\nbody\n";
        let (mut h, body) = Header::parse(m);
        assert_eq!(body, b"body\n");
        assert_eq!(h.len(), 3);
        assert_eq!(h.to_message(body), m, "unedited, byte for byte");
        assert_eq!(h.get("bcc").map(|f| f.value()).as_deref(), Some("x@y, z@w"));
        assert_eq!(h.remove("BCC"), 1);
        assert_eq!(h.remove("bcc"), 0);
        h.append("Date", "Mon, 1 Jan 2024 00:00:00 +0000").unwrap();
        h.insert(0, "Message-ID", "<1@h>").unwrap();
        assert_eq!(
            h.to_message(body),
            b"Message-ID: <1@h>\nSubject: s\nTo: a@b\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\nbody\n"
        );
        assert_eq!(h.insert(99, "X", "last"), Ok(()));
        assert!(h.to_message(b"").ends_with(b"X: last\n\n"));
        assert_eq!(h.append("Bad Name", "v"), Err(BadName("Bad Name".into())));
        assert_eq!(h.append("", "v"), Err(BadName(String::new())));
        assert_eq!(h.append("A:B", "v"), Err(BadName("A:B".into())));
    }

    #[test]
    fn added_values_cannot_inject_fields() {
        let (mut h, _) = Header::parse(b"A: 1\n\n");
        h.append("From", "Jo\nBcc: evil@x").unwrap();
        h.append("X", "one\r\n\ttwo\rthree\n").unwrap();
        let out = h.to_message(b"");
        assert_eq!(out, b"A: 1\nFrom: Jo\n Bcc: evil@x\nX: one\n\ttwo\n three\n\n");
        let names: Vec<String> = fields(&out).map(|f| f.name().to_owned()).collect();
        assert_eq!(names, ["A", "From", "X"]);
    }

    #[test]
    fn line_ends_follow_the_message() {
        let (mut h, body) = Header::parse(b"A: 1\r\n\r\nbody\r\n");
        h.append("B", "2").unwrap();
        assert_eq!(h.to_message(body), b"A: 1\r\nB: 2\r\n\r\nbody\r\n");
        let (mut h, body) = Header::parse(b"");
        h.append("B", "2").unwrap();
        assert_eq!(h.to_message(body), b"B: 2\n");
    }

    #[test]
    fn no_empty_line() {
        // A message with no header: fields added go in front, an empty line after.
        let (mut h, body) = Header::parse(b"just text\n");
        assert!(h.is_empty());
        assert_eq!(h.to_message(body), b"\njust text\n");
        h.append("Date", "d").unwrap();
        assert_eq!(h.to_message(body), b"Date: d\n\njust text\n");
        // A header ended by a line that is no field: the empty line is put back.
        let (h, body) = Header::parse(b"A: 1\ntext\n");
        assert_eq!(h.to_message(body), b"A: 1\n\ntext\n");
        // All header, no body: nothing added.
        let (h, body) = Header::parse(b"A: 1\n");
        assert_eq!(h.to_message(body), b"A: 1\n");
        // A last line without its line end keeps it so, until a field follows.
        let (mut h, body) = Header::parse(b"A: 1\nB: 2");
        assert_eq!(h.to_message(body), b"A: 1\nB: 2");
        h.append("C", "3").unwrap();
        assert_eq!(h.to_message(body), b"A: 1\nB: 2\nC: 3\n");
    }

    #[test]
    fn round_trip_on_any_bytes() {
        // Cheap deterministic noise over the bytes that matter to the grammar.
        let alphabet = b"Ab: \t\r\n\xff-";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..5000 {
            let mut m = Vec::new();
            for _ in 0..(x % 24) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                m.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            x = x.wrapping_add(1);
            let (h, body) = Header::parse(&m);
            let again = h.to_message(body);
            let (head, b2) = split(&m);
            assert_eq!(body, b2);
            if find_end(&m).is_none_or(|e| e.has_empty_line()) && m.last().is_none_or(|&c| c == b'\n') {
                assert_eq!(again, m, "{m:?}");
            }
            // Reparsing what was written finds the same fields and body.
            let (h2, body2) = Header::parse(&again);
            assert_eq!(body2, body, "{m:?}");
            let count = fields(head).count();
            assert_eq!(h2.fields().count(), count, "{m:?}");
            // Scanning as the data grows finds what scanning it whole finds.
            let mut scanner = EndScanner::default();
            for cut in 0..=m.len() {
                let found = scanner.scan(&m[..cut]);
                assert_eq!(found, find_end(&m[..cut]), "{m:?} cut at {cut}");
                if found.is_some() {
                    break;
                }
            }
            // The end does not move as more data comes.
            for cut in 0..m.len() {
                if let Some(e) = find_end(&m[..cut]) {
                    assert_eq!(Some(e), find_end(&m), "{m:?} cut at {cut}");
                }
            }
            // A field added with any value is one field more, and the body stays.
            let mut h = h;
            let value = String::from_utf8_lossy(&m).into_owned();
            h.insert((x % 4) as usize, "X-New", &value).unwrap();
            let out = h.to_message(body);
            let (h3, body3) = Header::parse(&out);
            assert_eq!(body3, body, "{m:?}");
            assert_eq!(h3.fields().count(), count + 1, "{m:?}");
        }
    }
}
