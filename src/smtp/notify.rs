//! NOTIFY (RFC 3461 4.1): which delivery status notifications a recipient's
//! sender asked for. Parsed once, from RCPT TO or `sendmail -N`, then carried typed
//! through the envelope (in the same text: `NEVER`, or a comma list) to the queue,
//! which asks `wants_*`, and to the next hop, which gets it back as text.

use std::fmt;

/// `NEVER`, or a non-empty set of SUCCESS, FAILURE and DELAY. NEVER is the empty
/// set: the grammar allows no empty list, so nothing else can mean "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify {
    success: bool,
    failure: bool,
    delay: bool,
}

impl Notify {
    pub const NEVER: Notify = Notify {
        success: false,
        failure: false,
        delay: false,
    };

    /// RFC 3461 4.1: without NOTIFY, "FAILURE" or "FAILURE,DELAY" is assumed;
    /// tern reports delays too, as Postfix and Sendmail do.
    pub const DEFAULT: Notify = Notify {
        success: false,
        failure: true,
        delay: true,
    };

    /// `"NEVER" / 1#("SUCCESS" / "FAILURE" / "DELAY")`, case-insensitive, white
    /// space around the words ignored (`sendmail -N "success, delay"`). NEVER
    /// only alone; a word given twice counts once.
    pub fn parse(s: &str) -> Option<Notify> {
        let mut n = Notify::NEVER;
        let mut never = false;
        let mut words = 0;
        for w in s.split(',').map(str::trim) {
            words += 1;
            if w.eq_ignore_ascii_case("NEVER") {
                never = true;
            } else if w.eq_ignore_ascii_case("SUCCESS") {
                n.success = true;
            } else if w.eq_ignore_ascii_case("FAILURE") {
                n.failure = true;
            } else if w.eq_ignore_ascii_case("DELAY") {
                n.delay = true;
            } else {
                return None;
            }
        }
        match (never, words) {
            (true, 1) => Some(Notify::NEVER),
            (true, _) => None,
            _ => Some(n),
        }
    }

    /// What applies to a recipient given its NOTIFY, if any.
    pub fn or_default(n: Option<Notify>) -> Notify {
        n.unwrap_or(Notify::DEFAULT)
    }

    pub fn is_never(self) -> bool {
        self == Notify::NEVER
    }

    pub fn success(self) -> bool {
        self.success
    }

    pub fn failure(self) -> bool {
        self.failure
    }

    pub fn delay(self) -> bool {
        self.delay
    }
}

/// The canonical text: `NEVER`, else the words asked for in the order SUCCESS,
/// FAILURE, DELAY (what the envelope stores and the next hop is sent).
impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_never() {
            return f.write_str("NEVER");
        }
        let words = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ];
        let mut first = true;
        for (_, w) in words.iter().filter(|(on, _)| *on) {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(w)?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(s: &str) -> Option<String> {
        Notify::parse(s).map(|n| n.to_string())
    }

    #[test]
    fn parses_the_grammar() {
        assert_eq!(round("NEVER").as_deref(), Some("NEVER"));
        assert_eq!(round("never").as_deref(), Some("NEVER"));
        assert_eq!(round("SUCCESS").as_deref(), Some("SUCCESS"));
        assert_eq!(round("success,delay").as_deref(), Some("SUCCESS,DELAY"));
        assert_eq!(
            round("DELAY,FAILURE,SUCCESS").as_deref(),
            Some("SUCCESS,FAILURE,DELAY")
        );
        assert_eq!(round("FAILURE,FAILURE").as_deref(), Some("FAILURE"));
        assert_eq!(round(" success , failure ").as_deref(), Some("SUCCESS,FAILURE"));
        for bad in [
            "",
            ",",
            "SUCCESS,",
            "NEVER,SUCCESS",
            "SUCCESS,NEVER",
            "NEVER,NEVER",
            "SOMETIMES",
            "SUCCESS;DELAY",
        ] {
            assert_eq!(Notify::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn asks() {
        let n = Notify::parse("SUCCESS,DELAY").unwrap();
        assert!(n.success() && n.delay() && !n.failure() && !n.is_never());
        assert!(Notify::NEVER.is_never());
        assert!(!Notify::NEVER.failure());
        let d = Notify::or_default(None);
        assert!(d.failure() && d.delay() && !d.success());
        assert_eq!(Notify::or_default(Some(Notify::NEVER)), Notify::NEVER);
    }

    #[test]
    fn display_parses_back() {
        for s in [
            "NEVER",
            "SUCCESS",
            "FAILURE",
            "DELAY",
            "SUCCESS,FAILURE",
            "FAILURE,DELAY",
            "SUCCESS,FAILURE,DELAY",
        ] {
            let n = Notify::parse(s).unwrap();
            assert_eq!(n.to_string(), s);
            assert_eq!(Notify::parse(&n.to_string()), Some(n));
        }
    }
}
