//! DKIM signing (RFC 6376 5, RFC 8463) of mail tern originates.
//!
//! What is signed, and how:
//! - The signing domain (`d=`) is the From: domain (the first address of the
//!   first From: field), the identity DMARC aligns with (RFC 9989 4.4). When
//!   that exact domain has no key, the closest parent domain with one signs
//!   (`d=example.org` for From: `a@mail.example.org`), which DMARC's relaxed
//!   alignment accepts. No key, no signature: the envelope sender's domain is
//!   never used, since a signature that does not align buys nothing for
//!   DMARC and exposes the key to forged From: lines.
//! - Every key of that domain signs: one DKIM-Signature per key, so a domain
//!   may publish an RSA and an Ed25519 selector (RFC 8463 6).
//! - relaxed/relaxed canonicalization (RFC 6376 3.4.2, 3.4.4), which
//!   survives the header refolding and trailing-space changes of relays.
//! - `h=`: the present fields among [`SIGNED_FIELDS`] and every `List-*`
//!   field (each instance), plus From: once more than present
//!   ("oversigned", RFC 6376 8.15), so a second From: cannot be added
//!   without breaking the signature. Absent fields are not signed.
//! - The whole body (no `l=`, RFC 6376 8.2), rsa-sha256 or ed25519-sha256.
//!
//! tern stores messages with LF line ends and sends them with CRLF; DKIM
//! hashes the CRLF form (RFC 6376 3.4). The signer reads the stored form and
//! feeds the CRLF form to mail-auth, so the signature verifies on the wire.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, DkimSigningStream, Done};
use mail_parser::MessageParser;

use super::keys::{Key, KeyError, KeyKind, SharedKey};

/// The header fields signed when present (besides `List-*`).
pub const SIGNED_FIELDS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Reply-To",
    "In-Reply-To",
    "References",
];

/// A header section longer than this is refused rather than buffered (the
/// body streams; only the header section is held in memory).
const MAX_HEADER_SECTION: usize = 1 << 20;

/// One `dkim_sign` entry; a configuration type.
pub use crate::config::SignEntry;

/// Why a message could not be signed. The session answers 451 (a temporary
/// error) rather than send the message unsigned.
#[derive(Debug)]
pub enum SignError {
    /// Reading the message failed.
    Read(io::Error),
    /// The header section exceeds 1 MiB.
    HeaderTooLong,
    /// mail-auth (ring) could not sign.
    Crypto(String),
    /// A key of the signing domain did not load (at the last reload).
    Key(KeyError),
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::Read(e) => write!(f, "reading the message to sign: {e}"),
            SignError::HeaderTooLong => {
                write!(f, "header section over {MAX_HEADER_SECTION} bytes")
            }
            SignError::Crypto(e) => write!(f, "DKIM signing failed: {e}"),
            SignError::Key(e) => write!(f, "no usable DKIM key: {e}"),
        }
    }
}

impl std::error::Error for SignError {}

/// The DKIM-Signature fields made for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selectors, in the order of `fields`.
    pub selectors: Vec<String>,
    /// Complete header fields, folded, each line ended by LF (tern's stored
    /// form): prepend them to the stored message.
    pub fields: String,
}

struct Signer {
    selector: String,
    key: Key,
}

/// Every configured signing key, by domain.
#[derive(Default)]
pub struct Signers {
    by_domain: BTreeMap<String, Vec<Signer>>,
    /// Domains one of whose keys did not load: their mail is refused
    /// (temporarily) rather than signed with fewer keys or none.
    broken: BTreeMap<String, KeyError>,
}

impl fmt::Debug for Signers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (d, v) in &self.by_domain {
            let sel: Vec<(&str, KeyKind)> = v.iter().map(|s| (s.selector.as_str(), s.key.kind())).collect();
            m.entry(d, &sel);
        }
        for (d, e) in &self.broken {
            m.entry(d, &e.to_string());
        }
        m.finish()
    }
}

impl Signers {
    /// Reads every entry's key file; the first bad one is the error (so
    /// `ternd -n` names it).
    pub fn load(entries: &[SignEntry]) -> Result<Signers, KeyError> {
        let mut s = Signers::default();
        for e in entries {
            let key = Key::load(&e.key_file, e.kind)?;
            s.add(&e.domain, &e.selector, key);
        }
        Ok(s)
    }

    /// Reads every entry's key file, keeping going past bad ones: the
    /// domain of a key that does not load is marked broken (its mail gets
    /// [`SignError::Key`]), and the errors are returned, each with the
    /// index of its entry. For a reload, where refusing to start is no
    /// longer an option and signing with an old key the domain may have
    /// withdrawn is worse than waiting.
    pub fn load_lenient(entries: &[SignEntry]) -> (Signers, Vec<(usize, KeyError)>) {
        let mut s = Signers::default();
        let mut errors = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match Key::load(&e.key_file, e.kind) {
                Ok(key) => s.add(&e.domain, &e.selector, key),
                Err(err) => {
                    s.broken.entry(e.domain.clone()).or_insert_with(|| err.clone());
                    errors.push((i, err));
                }
            }
        }
        (s, errors)
    }

    /// Adds a key for `domain` (lower case, no trailing dot).
    pub fn add(&mut self, domain: &str, selector: &str, key: Key) {
        self.by_domain
            .entry(domain.trim_end_matches('.').to_ascii_lowercase())
            .or_default()
            .push(Signer {
                selector: selector.to_owned(),
                key,
            });
    }

    /// No key at all (broken ones included).
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty() && self.broken.is_empty()
    }

    /// The domain that signs for author domain `from_domain`: the domain
    /// itself or its closest parent that has a key (usable or not).
    pub fn signing_domain(&self, from_domain: &str) -> Option<&str> {
        let mut d = from_domain.trim_end_matches('.');
        loop {
            let lower = d.to_ascii_lowercase();
            if let Some((k, _)) = self.by_domain.get_key_value(&lower) {
                return Some(k.as_str());
            }
            if let Some((k, _)) = self.broken.get_key_value(&lower) {
                return Some(k.as_str());
            }
            d = d.split_once('.')?.1;
        }
    }

    /// Signs a message read from `message` in tern's stored form (LF line
    /// ends; CRLF is accepted too). `Ok(None)`: no key for its From: domain
    /// (or no From:), so the message goes unsigned by design. Reads the
    /// header section into memory and streams the body.
    pub fn sign(&self, message: impl Read) -> Result<Option<Signed>, SignError> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut rd = BufReader::with_capacity(64 * 1024, message);
        let (header, names) = read_header_section(&mut rd)?;
        let Some(from_domain) = author_domain(&header) else {
            return Ok(None);
        };
        let Some(domain) = self.signing_domain(&from_domain) else {
            return Ok(None);
        };
        if let Some(e) = self.broken.get(domain) {
            return Err(SignError::Key(e.clone()));
        }
        let signers = self.by_domain.get(domain).map(Vec::as_slice).unwrap_or_default();

        // h=: the present fields of the set, From: once more (oversigned).
        let mut h: Vec<String> = Vec::new();
        for name in &names {
            let signed = SIGNED_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name))
                || name.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("list-"));
            if signed && !h.iter().any(|x| x.eq_ignore_ascii_case(name)) {
                h.push(name.clone());
            }
        }
        // mail-auth lists each present instance of a field in h= and then
        // every configured name it did not see: a second "From" is never
        // "seen" (the first entry matches), so From: ends up listed once
        // more than it occurs.
        h.push("From".to_owned());

        let dkim: Vec<DkimSigner<SharedKey, Done>> = signers
            .iter()
            .map(|s| {
                DkimSigner::from_key(s.key.signing_key())
                    .domain(domain)
                    .selector(s.selector.as_str())
                    .headers(h.iter().cloned())
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed)
            })
            .collect();
        let mut streams: Vec<DkimSigningStream<'_, SharedKey>> =
            dkim.iter().map(DkimSigner::sign_streaming).collect();
        for s in &mut streams {
            s.write(&header);
            s.write(b"\r\n");
        }
        let mut body = RelaxedBody::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match rd.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SignError::Read(e)),
            };
            body.push(buf.get(..n).unwrap_or_default(), &mut |b| {
                streams.iter_mut().for_each(|s| s.write(b))
            });
        }
        let mut fields = String::new();
        let mut selectors = Vec::new();
        for (s, signer) in streams.into_iter().zip(signers) {
            let sig = s.finish().map_err(|e| SignError::Crypto(e.to_string()))?;
            fields.push_str(&sig.to_header().replace("\r\n", "\n"));
            selectors.push(signer.selector.clone());
        }
        Ok(Some(Signed {
            domain: domain.to_owned(),
            selectors,
            fields,
        }))
    }
}

/// Reads up to and including the empty line that ends the header section.
/// Returns the section in CRLF form (without the empty line) and the field
/// names in order.
fn read_header_section(rd: &mut impl BufRead) -> Result<(Vec<u8>, Vec<String>), SignError> {
    let mut header = Vec::with_capacity(4096);
    let mut names = Vec::new();
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = rd.read_until(b'\n', &mut line).map_err(SignError::Read)?;
        if n == 0 {
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            break;
        }
        if header.len() + text.len() + 2 > MAX_HEADER_SECTION {
            return Err(SignError::HeaderTooLong);
        }
        if !matches!(text.first(), Some(b' ' | b'\t')) {
            if let Some(colon) = text.iter().position(|&c| c == b':') {
                let name = text.get(..colon).unwrap_or_default();
                names.push(String::from_utf8_lossy(name).trim_end().to_owned());
            }
        }
        header.extend_from_slice(text);
        header.extend_from_slice(b"\r\n");
    }
    Ok((header, names))
}

/// The domain of the first From: address, as an A-label in lower case.
fn author_domain(header: &[u8]) -> Option<String> {
    let parsed = MessageParser::new().parse_headers(header)?;
    let addr = parsed.from()?.first()?.address()?;
    let (_, domain) = addr.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.');
    if domain.is_empty() {
        return None;
    }
    Some(mail_auth::common::to_a_label(domain).into_owned())
}

/// The body as mail-auth should hash it under relaxed canonicalization: CRLF
/// line ends, and whitespace-only lines at the end held back and dropped.
///
/// RFC 6376 3.4.4 ignores whitespace at line ends and empty lines at the end
/// of the body, so a run of whitespace-only lines before the end hashes to
/// nothing. mail-auth 0.13 hashes them as empty lines (its issue #62, fixed
/// in 0.15, which needs a newer rustc), giving a bh= other verifiers reject.
/// Dropping them first gives the same canonical body with either version.
/// Held-back lines are only counted (each is, canonically, an empty line),
/// so memory stays constant whatever the body.
#[derive(Default)]
pub(crate) struct RelaxedBody {
    /// Whitespace-only lines seen since the last line with content.
    blank_lines: usize,
    line: LineState,
}

#[derive(Default, PartialEq, Eq, Clone, Copy)]
enum LineState {
    /// At the start of a line.
    #[default]
    Start,
    /// Only spaces and tabs so far on this line.
    Space,
    /// The line has content: bytes pass through until its end.
    Content,
}

impl RelaxedBody {
    pub(crate) fn push(&mut self, mut data: &[u8], out: &mut impl FnMut(&[u8])) {
        while !data.is_empty() {
            let (seg, rest, eol) = match data.iter().position(|&b| b == b'\n') {
                Some(i) => (
                    data.get(..i).unwrap_or_default(),
                    data.get(i + 1..).unwrap_or_default(),
                    true,
                ),
                None => (data, &[][..], false),
            };
            // A CR that ends a line is part of its CRLF. (A CR split from
            // its LF across two pushes reaches mail-auth, which ignores CR
            // under relaxed canonicalization.)
            let seg = if eol {
                seg.strip_suffix(b"\r").unwrap_or(seg)
            } else {
                seg
            };
            self.segment(seg, eol, out);
            data = rest;
        }
    }

    fn segment(&mut self, seg: &[u8], eol: bool, out: &mut impl FnMut(&[u8])) {
        if self.line == LineState::Content {
            out(seg);
        } else {
            // A CR here is one split from its LF by the reader (or a stray
            // one): mail-auth ignores CR under relaxed canonicalization, so
            // it neither makes the line content nor counts as space.
            let wsp = |b: &u8| *b == b' ' || *b == b'\t';
            match seg.iter().position(|b| !wsp(b) && *b != b'\r') {
                None => {
                    if seg.iter().any(wsp) {
                        self.line = LineState::Space;
                    }
                }
                Some(i) => {
                    for _ in 0..self.blank_lines {
                        out(b"\r\n");
                    }
                    self.blank_lines = 0;
                    // Leading whitespace reduces to one space (3.4.4 b).
                    let lead = seg.get(..i).unwrap_or_default();
                    if self.line == LineState::Space || lead.iter().any(wsp) {
                        out(b" ");
                    }
                    out(seg.get(i..).unwrap_or_default());
                    self.line = LineState::Content;
                }
            }
        }
        if eol {
            if self.line == LineState::Content {
                out(b"\r\n");
            } else {
                self.blank_lines += 1;
            }
            self.line = LineState::Start;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relaxed(chunks: &[&[u8]]) -> Vec<u8> {
        let mut b = RelaxedBody::default();
        let mut out = Vec::new();
        for c in chunks {
            b.push(c, &mut |x| out.extend_from_slice(x));
        }
        out
    }

    #[test]
    fn relaxed_body_drops_trailing_blank_lines_only() {
        assert_eq!(relaxed(&[b"a\n\n \n\t\nb\n \n\n"]), b"a\r\n\r\n\r\n\r\nb\r\n");
        assert_eq!(relaxed(&[b"a \t b\r\n  c\n"]), b"a \t b\r\n c\r\n");
        // Split anywhere, same result.
        let whole = b"x\n  \n\ty z\n \n";
        for i in 0..whole.len() {
            let (p, q) = whole.split_at(i);
            assert_eq!(relaxed(&[p, q]), b"x\r\n\r\n y z\r\n", "split at {i}");
        }
        assert_eq!(relaxed(&[b" \n\n"]), b"");
        assert_eq!(relaxed(&[b"no newline"]), b"no newline");
        // A CRLF split between two reads, on a trailing space line and on
        // a content line.
        assert_eq!(relaxed(&[b"x\r\n \r", b"\n\t\r", b"\n"]), b"x\r\n");
        assert_eq!(relaxed(&[b"x\r", b"\ny\r\n"]), b"x\r\r\ny\r\n");
    }

    #[test]
    fn signing_domain_walks_up_to_a_parent_with_a_key() {
        let (pem, _) = super::super::keys::tests::openssl_key(KeyKind::Ed25519, false);
        let key = Key::from_pem(pem.as_bytes(), None).unwrap();
        let mut s = Signers::default();
        s.add("Example.org", "a", key.clone());
        s.add("other.example.org", "b", key);
        assert_eq!(s.signing_domain("example.org"), Some("example.org"));
        assert_eq!(s.signing_domain("MAIL.Example.ORG."), Some("example.org"));
        assert_eq!(s.signing_domain("x.other.example.org"), Some("other.example.org"));
        assert_eq!(s.signing_domain("example.net"), None);
        assert_eq!(s.signing_domain("org"), None);
    }
}
