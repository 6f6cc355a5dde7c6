//! xtext (RFC 3461 section 4), the encoding of ENVID, ORCPT and AUTH= values, and
//! of every free-form value in a spool envelope. The one copy: the SMTP parser,
//! the SMTP client and the envelope all use it.
//!
//! ```text
//! xtext   = *( xchar / hexchar )
//! xchar   = any ASCII CHAR between "!" (33) and "~" (126) inclusive,
//!           except for "+" and "=".
//! hexchar = ASCII "+" immediately followed by two upper case
//!           hexadecimal digits
//! ```
//!
//! tern applies it to the UTF-8 bytes of a string, and decodes only to UTF-8.

use std::fmt;

/// Why a string is not xtext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XtextError {
    /// A `+` not followed by two upper case hex digits.
    BadEscape,
    /// A byte outside 33..=126, or a raw `=`.
    BadChar,
    /// The decoded octets are not UTF-8.
    NotUtf8,
}

impl fmt::Display for XtextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XtextError::BadEscape => "bad xtext escape",
            XtextError::BadChar => "bad character in xtext",
            XtextError::NotUtf8 => "xtext is not UTF-8",
        })
    }
}

impl std::error::Error for XtextError {}

/// Encode: bytes outside 33..=126, `+` and `=` become `+XX` (upper case hex).
pub fn encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if is_xchar(b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "+{b:02X}");
        }
    }
    out
}

/// Decode, strictly: RFC 3461 4 allows only upper case hex after `+` (the spool's
/// envelope, which once accepted lower case too, now reads what it writes and no
/// more), and no byte the encoder would have escaped.
pub fn decode(s: &str) -> Result<String, XtextError> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'+' {
            let hi = bytes.next().and_then(hex_digit).ok_or(XtextError::BadEscape)?;
            let lo = bytes.next().and_then(hex_digit).ok_or(XtextError::BadEscape)?;
            out.push(hi << 4 | lo);
        } else if is_xchar(b) {
            out.push(b);
        } else {
            return Err(XtextError::BadChar);
        }
    }
    String::from_utf8(out).map_err(|_| XtextError::NotUtf8)
}

fn is_xchar(b: u8) -> bool {
    (33..=126).contains(&b) && b != b'+' && b != b'='
}

/// An upper case hex digit's value.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_it_must() {
        assert_eq!(encode("abc"), "abc");
        assert_eq!(encode("a b+c=é"), "a+20b+2Bc+3D+C3+A9");
        assert_eq!(encode("rfc822;a+b=c@d é"), "rfc822;a+2Bb+3Dc@d+20+C3+A9");
        assert_eq!(encode(""), "");
        assert_eq!(encode("\n\r\0\x7f~!"), "+0A+0D+00+7F~!");
    }

    #[test]
    fn decodes_strictly() {
        assert_eq!(decode("abc").as_deref(), Ok("abc"));
        assert_eq!(decode("a+20b").as_deref(), Ok("a b"));
        assert_eq!(decode("a+2Bc").as_deref(), Ok("a+c"));
        assert_eq!(decode("").as_deref(), Ok(""));
        assert_eq!(decode("a+2"), Err(XtextError::BadEscape));
        assert_eq!(decode("a+"), Err(XtextError::BadEscape));
        assert_eq!(decode("a+zz"), Err(XtextError::BadEscape));
        // RFC 3461 4: "two upper case hexadecimal digits".
        assert_eq!(decode("a+e9"), Err(XtextError::BadEscape));
        assert_eq!(decode("a+2b"), Err(XtextError::BadEscape));
        assert_eq!(decode("a=b"), Err(XtextError::BadChar));
        assert_eq!(decode("a b"), Err(XtextError::BadChar));
        assert_eq!(decode("é"), Err(XtextError::BadChar));
        assert_eq!(decode("+FF"), Err(XtextError::NotUtf8));
        assert_eq!(decode("+C3+A9").as_deref(), Ok("é"));
    }

    #[test]
    fn round_trip() {
        for s in [
            "",
            "plain",
            "a b+c=d",
            "x\r\ny",
            "ünïcödé",
            "+++===",
            "\u{7f}\u{1}",
        ] {
            assert_eq!(decode(&encode(s)).as_deref(), Ok(s), "{s:?}");
        }
    }
}
