//! RFC 3463 enhanced status codes, `class.subject.detail`: the one type for
//! them in tern. The reply catalog puts them in SMTP replies (RFC 2034), the
//! delivery outcomes carry them, the queue records them, and the DSNs report
//! them (RFC 3464 2.3.4).

use std::fmt;

/// An enhanced status code, class.subject.detail (RFC 3463 2). The class is
/// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u8, pub u16, pub u16);

impl Status {
    /// Parse `4.2.2`; None for anything else, including a class other than
    /// 2, 4 or 5 (RFC 3463 3.1).
    pub fn parse(s: &str) -> Option<Status> {
        let mut it = s.split('.');
        let class: u8 = it.next()?.parse().ok()?;
        let subject: u16 = it.next()?.parse().ok()?;
        let detail: u16 = it.next()?.parse().ok()?;
        if it.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(Status(class, subject, detail))
    }

    /// The class: 2, 4 or 5.
    pub fn class(self) -> u8 {
        self.0
    }

    /// The subject: 1 addressing, 2 mailbox, 3 mail system, 4 network and
    /// routing, 5 protocol, 6 content, 7 security (RFC 3463 3.2).
    pub fn subject(self) -> u16 {
        self.1
    }

    /// Class 5: retrying will not help.
    pub fn is_permanent(self) -> bool {
        self.0 == 5
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A leading `class.subject.detail ` (RFC 3463) of class 2, 4 or 5, and the text
/// after it: the enhanced status a milter's or a policy service's reply text
/// starts with.
pub fn split_esc(text: &[u8]) -> (Option<Status>, &[u8]) {
    let end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    let (word, rest) = text.split_at(end);
    // RFC 3463: one class digit, then one to three digits twice.
    let shape = |w: &str| {
        let mut parts = w.split('.');
        let (c, s, d) = (parts.next(), parts.next(), parts.next());
        parts.next().is_none()
            && c.is_some_and(|c| c.len() == 1)
            && [s, d].iter().all(|p| {
                p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            })
    };
    let parsed = std::str::from_utf8(word)
        .ok()
        .filter(|w| shape(w))
        .and_then(Status::parse);
    match parsed {
        Some(e) if matches!(e.0, 2 | 4 | 5) => (Some(e), rest.strip_prefix(b" ").unwrap_or(rest)),
        _ => (None, text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(Status::parse("5.1.1"), Some(Status(5, 1, 1)));
        assert_eq!(Status::parse("5.1.10"), Some(Status(5, 1, 10)));
        assert_eq!(Status(4, 2, 2).to_string(), "4.2.2");
        assert_eq!(Status(5, 1, 10).to_string(), "5.1.10");
    }

    #[test]
    fn only_the_three_classes_and_three_parts() {
        for bad in ["3.1.1", "5.1", "5.1.1.1", "", "5..1", "x.1.1", "5.1.1 ", "-5.1.1"] {
            assert_eq!(Status::parse(bad), None, "{bad:?}");
        }
        assert!(Status(5, 7, 1).is_permanent());
        assert!(!Status(4, 7, 1).is_permanent());
        assert_eq!(Status(4, 7, 1).class(), 4);
        assert_eq!(Status(4, 7, 1).subject(), 7);
    }
}
