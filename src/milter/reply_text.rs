//! A milter's own SMTP reply (SMFIR_REPLYCODE): validated and split into code,
//! enhanced status code and lines as Postfix's milter8.c does.

use crate::smtp::status::{split_esc, Status};

/// A milter's own SMTP reply (SMFIR_REPLYCODE), validated: the code, the
/// enhanced status code when the milter gave one, and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyText {
    pub code: u16,
    pub esc: Option<Status>,
    pub lines: Vec<String>,
}

impl ReplyText {
    /// A 4xx reply.
    pub fn is_temporary(&self) -> bool {
        self.code < 500
    }
}

/// Validate and split a SMFIR_REPLYCODE text as milter8_valid_smtp_reply() does:
/// every line `[45]dd` then `-` (more lines follow, CRLF between) or ` ` (the
/// last line), an enhanced code if present of the same class, and the same code on
/// every line (RFC 5321 4.2.1). `%%` becomes `%` and a lone `%` goes (Sendmail
/// treats the text as a format string, so milters double their percent signs).
pub fn parse_reply_text(data: &[u8]) -> Option<ReplyText> {
    let data = data.strip_suffix(b"\0").unwrap_or(data);
    if data.contains(&0) || data.is_empty() {
        return None;
    }
    let mut code = None;
    let mut esc = None;
    let mut lines = Vec::new();
    let mut rest = data;
    loop {
        let end = rest.iter().position(|&b| b == b'\r' || b == b'\n');
        let (line, after) = match end {
            Some(i) => rest.split_at(i),
            None => (rest, &[][..]),
        };
        let last = end.is_none();
        let [c0, c1, c2, sep, text @ ..] = line else {
            return None;
        };
        if !matches!(c0, b'4' | b'5') || !c1.is_ascii_digit() || !c2.is_ascii_digit() {
            return None;
        }
        if *sep != if last { b' ' } else { b'-' } {
            return None;
        }
        let this = u16::from(c0 - b'0') * 100 + u16::from(c1 - b'0') * 10 + u16::from(c2 - b'0');
        if *code.get_or_insert(this) != this {
            return None;
        }
        let text = unpercent(text);
        let (line_esc, text) = split_esc(&text);
        if let Some(e) = line_esc {
            if e.0 != c0 - b'0' {
                return None;
            }
        } else if text.first().is_some_and(|b| b.is_ascii_digit()) && text.first() != Some(c0) {
            // milter8.c: a digit right after the code must be the code's class.
            return None;
        }
        if esc.is_none() && lines.is_empty() {
            esc = line_esc;
        }
        lines.push(String::from_utf8_lossy(text).into_owned());
        if last {
            break;
        }
        // Between lines exactly CRLF.
        rest = after.strip_prefix(b"\r\n")?;
    }
    Some(ReplyText {
        code: code?,
        esc,
        lines,
    })
}

fn unpercent(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut it = text.iter();
    while let Some(&b) = it.next() {
        if b == b'%' {
            if let Some(&n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests;
