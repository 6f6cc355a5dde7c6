//! The outcome of the checks as plain values, the Authentication-Results
//! field that reports them (RFC 8601), and the removal of incoming fields
//! that claim to come from us (RFC 8601 5).

use std::borrow::Cow;
use std::fmt::Write as _;

/// A method's result, spelled as RFC 8601 2.7 (and RFC 7208 2.6) spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::SoftFail => "softfail",
            Outcome::Neutral => "neutral",
            Outcome::None => "none",
            Outcome::TempError => "temperror",
            Outcome::PermError => "permerror",
        }
    }
}

/// The SPF result of one identity (RFC 7208 2.3 HELO, 2.4 MAIL FROM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfCheck {
    pub result: Outcome,
    /// The identity checked, as reported: the envelope sender for MAIL FROM
    /// (`postmaster@HELO` for the null sender, RFC 7208 2.4), the HELO name
    /// for HELO.
    pub identity: String,
    /// The domain whose SPF record was (or would have been) evaluated.
    pub domain: String,
    /// A short fixed note on failures (a comment in the header).
    pub note: Option<&'static str>,
}

/// SPF of both identities, from [`super::Checker::spf`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfResults {
    pub mail_from: SpfCheck,
    pub helo: SpfCheck,
}

/// One DKIM-Signature's verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimCheck {
    pub result: Outcome,
    /// `d=`, `s=` and the first characters of `b=` (RFC 6008 header.b, so a
    /// reader can tell several signatures of one domain apart). Empty for
    /// a signature too broken to parse.
    pub domain: String,
    pub selector: String,
    pub b: String,
    pub note: Option<&'static str>,
}

/// The DMARC policy a failure asks for (RFC 9989 4.7 p, sp, np).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

/// The DMARC evaluation of the author (From:) domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcCheck {
    pub result: Outcome,
    /// The RFC5322.From domain; empty when the message has none usable.
    pub from_domain: String,
    /// The policy that applies to this domain, when a record was found.
    pub policy: Option<DmarcPolicy>,
    /// `t=y`: the domain owner is testing; the policy is not enforced
    /// (RFC 9989 4.7).
    pub testing: bool,
}

/// Everything the checks found about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResults {
    pub spf: SpfResults,
    /// One per signature, in header order; empty: dkim=none.
    pub dkim: Vec<DkimCheck>,
    pub dmarc: DmarcCheck,
}

impl AuthResults {
    /// The resinfo parts (RFC 8601 2.2), one per method result.
    fn resinfos(&self) -> Vec<String> {
        let mut v = Vec::new();
        let s = &self.spf.mail_from;
        v.push(format!(
            "spf={}{} smtp.mailfrom={}",
            s.result.as_str(),
            comment(s.note),
            pvalue(&s.identity)
        ));
        let s = &self.spf.helo;
        if !s.identity.is_empty() {
            v.push(format!(
                "spf={}{} smtp.helo={}",
                s.result.as_str(),
                comment(s.note),
                pvalue(&s.identity)
            ));
        }
        if self.dkim.is_empty() {
            v.push("dkim=none".to_owned());
        }
        for d in &self.dkim {
            let mut r = format!("dkim={}{}", d.result.as_str(), comment(d.note));
            if !d.domain.is_empty() {
                let _ = write!(r, " header.d={}", pvalue(&d.domain));
            }
            if !d.selector.is_empty() {
                let _ = write!(r, " header.s={}", pvalue(&d.selector));
            }
            if !d.b.is_empty() {
                let _ = write!(r, " header.b={}", pvalue(&d.b));
            }
            v.push(r);
        }
        let m = &self.dmarc;
        let mut r = format!("dmarc={}", m.result.as_str());
        if let Some(p) = m.policy {
            let _ = write!(r, " (p={}{})", p.as_str(), if m.testing { " t=y" } else { "" });
        }
        if !m.from_domain.is_empty() {
            let _ = write!(r, " header.from={}", pvalue(&m.from_domain));
        }
        v.push(r);
        v
    }

    /// The field's value on one line: `AUTHSERV-ID; spf=...; ...; dmarc=...`.
    pub fn value(&self, authserv_id: &str) -> String {
        let mut s = authserv_id.to_owned();
        for r in self.resinfos() {
            s.push_str("; ");
            s.push_str(&r);
        }
        s
    }

    /// The whole field in tern's stored form, one method per line, each
    /// line ended by LF: `Authentication-Results: AUTHSERV-ID;\n\tspf=...`.
    pub fn field(&self, authserv_id: &str) -> String {
        let mut s = format!("Authentication-Results: {authserv_id}");
        for r in self.resinfos() {
            s.push_str(";\n\t");
            s.push_str(&r);
        }
        s.push('\n');
        s
    }
}

fn comment(note: Option<&'static str>) -> String {
    // Notes are fixed texts without parentheses or backslashes.
    note.map(|n| format!(" ({n})")).unwrap_or_default()
}

/// A property value (RFC 8601 2.2 pvalue): as is when it is a plain
/// [local-part "@"] domain, else a quoted-string (RFC 5322 3.2.4) with
/// quotes and backslashes escaped and control characters dropped, so that
/// nothing a sender chose can end the field or add a result to it.
pub(crate) fn pvalue(s: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-._+!#$%&'*/=?^`{|}~".contains(c);
    let at = s.matches('@').count();
    if !s.is_empty() && at <= 1 && s.chars().all(|c| plain(c) || c == '@') {
        return Cow::Borrowed(s);
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    Cow::Owned(q)
}

/// Whether an Authentication-Results value claims `authserv_id` (ours):
/// its authserv-id (RFC 8601 2.2), after any CFWS, compared without case
/// and without a trailing dot. Such fields must be removed from incoming
/// mail (RFC 8601 5) so that no one can forge our verdicts.
pub fn claims_authserv_id(value: &[u8], authserv_id: &str) -> bool {
    let mut i = 0;
    // Skip CFWS: whitespace (folding included) and nested comments.
    let mut depth = 0usize;
    while let Some(&c) = value.get(i) {
        match c {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b'\\' if depth > 0 => i += 1,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if depth > 0 => {}
            _ => break,
        }
        i += 1;
    }
    let rest = value.get(i..).unwrap_or_default();
    let id: Vec<u8> = if rest.first() == Some(&b'"') {
        // A quoted-string authserv-id.
        let mut out = Vec::new();
        let mut it = rest.iter().skip(1);
        while let Some(&c) = it.next() {
            match c {
                b'"' => break,
                b'\\' => out.extend(it.next()),
                _ => out.push(c),
            }
        }
        out
    } else {
        rest.iter()
            .take_while(|&&c| !matches!(c, b';' | b' ' | b'\t' | b'\r' | b'\n' | b'('))
            .copied()
            .collect()
    };
    let id = id.strip_suffix(b".").unwrap_or(&id);
    let ours = authserv_id.trim_end_matches('.');
    !id.is_empty() && id.eq_ignore_ascii_case(ours.as_bytes())
}

/// The message without the Authentication-Results fields of its header
/// section that claim `authserv_id` (RFC 8601 5); borrowed when there are
/// none. Works on the stored form (LF) and on CRLF alike.
pub fn strip_own_results<'a>(message: &'a [u8], authserv_id: &str) -> Cow<'a, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut pos = 0;
    // Start of the field being read, and whether it is to be dropped.
    while pos < message.len() {
        let rest = message.get(pos..).unwrap_or_default();
        let line_len = rest
            .iter()
            .position(|&c| c == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let line = rest.get(..line_len).unwrap_or_default();
        if line == b"\n" || line == b"\r\n" {
            break; // end of the header section
        }
        // A field: this line and its continuation lines.
        let mut end = pos + line_len;
        while let Some(&c) = message.get(end) {
            if c != b' ' && c != b'\t' {
                break;
            }
            let more = message.get(end..).unwrap_or_default();
            end += more
                .iter()
                .position(|&c| c == b'\n')
                .map_or(more.len(), |i| i + 1);
        }
        let field = message.get(pos..end).unwrap_or_default();
        let drop = field
            .iter()
            .position(|&c| c == b':')
            .and_then(|colon| {
                let name = field.get(..colon)?;
                let name = name.trim_ascii_end();
                name.eq_ignore_ascii_case(b"Authentication-Results")
                    .then(|| field.get(colon + 1..))
                    .flatten()
            })
            .is_some_and(|value| claims_authserv_id(value, authserv_id));
        if drop {
            out.get_or_insert_with(|| {
                let mut v = Vec::with_capacity(message.len());
                v.extend_from_slice(message.get(..pos).unwrap_or_default());
                v
            });
        } else if let Some(o) = out.as_mut() {
            o.extend_from_slice(field);
        }
        pos = end;
    }
    match out {
        None => Cow::Borrowed(message),
        Some(mut o) => {
            o.extend_from_slice(message.get(pos..).unwrap_or_default());
            Cow::Owned(o)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvalue_quotes_what_could_break_the_field() {
        assert_eq!(pvalue("alice@example.org"), "alice@example.org");
        assert_eq!(pvalue("mail.example.org"), "mail.example.org");
        assert_eq!(pvalue("a+b=c@x.org"), "a+b=c@x.org");
        assert_eq!(pvalue("x; dkim=pass"), r#""x; dkim=pass""#);
        assert_eq!(pvalue("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(pvalue("evil\r\nX-Injected: 1"), r#""evilX-Injected: 1""#);
        assert_eq!(pvalue("a@b@c"), r#""a@b@c""#);
        assert_eq!(pvalue(""), r#""""#);
    }

    #[test]
    fn claims_authserv_id_reads_the_first_token() {
        let me = "mx.example.net";
        for yes in [
            " mx.example.net; spf=pass smtp.mailfrom=a@b.org",
            "MX.Example.NET.; dkim=pass",
            " (forged) mx.example.net 1; none",
            "\r\n\t(a (nested) comment)\r\n mx.example.net;none",
            " \"mx.example.net\"; none",
            " mx.example.net",
        ] {
            assert!(claims_authserv_id(yes.as_bytes(), me), "{yes:?}");
        }
        for no in [
            " mx.example.org; spf=pass",
            " mx.example.net.evil; none",
            " other; mx.example.net",
            " (mx.example.net) other; none",
            "",
            " ;",
        ] {
            assert!(!claims_authserv_id(no.as_bytes(), me), "{no:?}");
        }
    }

    #[test]
    fn strip_removes_only_fields_claiming_us() {
        let msg = "Received: from x\n\tby y\n\
                   Authentication-Results: mx.example.net;\n\tdkim=pass header.d=bank.example\n\
                   Authentication-Results: other.example; spf=fail\n\
                   authentication-results : MX.EXAMPLE.NET; spf=pass\n\
                   Subject: hi\n\
                   \n\
                   Authentication-Results: mx.example.net; in the body stays\n";
        let out = strip_own_results(msg.as_bytes(), "mx.example.net");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "Received: from x\n\tby y\n\
             Authentication-Results: other.example; spf=fail\n\
             Subject: hi\n\
             \n\
             Authentication-Results: mx.example.net; in the body stays\n"
        );
        // CRLF form, and nothing to strip: borrowed.
        let crlf = b"A: 1\r\nAuthentication-Results: mx.example.net; none\r\n\r\nbody\r\n";
        assert_eq!(
            &*strip_own_results(crlf, "mx.example.net"),
            b"A: 1\r\n\r\nbody\r\n"
        );
        let clean = b"A: 1\n\nbody\n";
        assert!(matches!(
            strip_own_results(clean, "mx.example.net"),
            Cow::Borrowed(_)
        ));
    }

    fn sample() -> AuthResults {
        AuthResults {
            spf: SpfResults {
                mail_from: SpfCheck {
                    result: Outcome::Pass,
                    identity: "alice@example.org".into(),
                    domain: "example.org".into(),
                    note: None,
                },
                helo: SpfCheck {
                    result: Outcome::None,
                    identity: "mail.example.org".into(),
                    domain: "mail.example.org".into(),
                    note: None,
                },
            },
            dkim: vec![DkimCheck {
                result: Outcome::Fail,
                domain: "example.org".into(),
                selector: "s1".into(),
                b: "AbCd+/12".into(),
                note: Some("body hash did not verify"),
            }],
            dmarc: DmarcCheck {
                result: Outcome::Pass,
                from_domain: "example.org".into(),
                policy: Some(DmarcPolicy::Reject),
                testing: false,
            },
        }
    }

    #[test]
    fn header_field_syntax() {
        let r = sample();
        assert_eq!(
            r.value("mx.example.net"),
            "mx.example.net; spf=pass smtp.mailfrom=alice@example.org; \
             spf=none smtp.helo=mail.example.org; \
             dkim=fail (body hash did not verify) header.d=example.org header.s=s1 header.b=AbCd+/12; \
             dmarc=pass (p=reject) header.from=example.org"
        );
        assert_eq!(
            r.field("mx.example.net"),
            "Authentication-Results: mx.example.net;\n\
             \tspf=pass smtp.mailfrom=alice@example.org;\n\
             \tspf=none smtp.helo=mail.example.org;\n\
             \tdkim=fail (body hash did not verify) header.d=example.org header.s=s1 header.b=AbCd+/12;\n\
             \tdmarc=pass (p=reject) header.from=example.org\n"
        );
        let mut none = sample();
        none.dkim.clear();
        none.dmarc = DmarcCheck {
            result: Outcome::None,
            from_domain: String::new(),
            policy: None,
            testing: false,
        };
        assert!(
            none.value("h").ends_with("; dkim=none; dmarc=none"),
            "{}",
            none.value("h")
        );
    }
}
