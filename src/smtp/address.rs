//! Envelope addresses: the RFC 5321 4.1.2 grammar, with the RFC 6531 UTF-8
//! extensions. Parse, don't validate: a `Mailbox` can only hold a valid address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// RFC 5321 4.5.3.1.1: local part at most 64 octets.
const MAX_LOCAL: usize = 64;
/// RFC 5321 4.5.3.1.2: domain at most 255 octets.
const MAX_DOMAIN: usize = 255;
/// RFC 5321 4.5.3.1.3: path at most 256 octets including the brackets.
const MAX_PATH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrError {
    Syntax,
    TooLong,
    /// A path without its angle brackets, under [`PathSyntax::Strict`].
    NoBrackets,
}

/// How MAIL FROM and RCPT TO paths are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathSyntax {
    /// RFC 5321 4.1.2: `Reverse-path = Path / "<>"`, `Path = "<" ... ">"`:
    /// the brackets are required.
    #[default]
    Strict,
    /// A bare `user@domain` is taken too, for old clients (tern.conf
    /// `strict_rfc821_envelopes = no`; Postfix's default).
    Lenient,
}

/// The part right of the `@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    /// A domain name as given (compare with `eq_ignore_ascii_case` or `lower()`).
    Name(String),
    /// `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
    Literal(IpAddr),
    /// `[tag:content]`, RFC 5321 4.1.3 General-address-literal; accepted, never local.
    General(String),
}

impl Domain {
    /// Parse a bare domain name (EHLO argument, config): RFC 5321 4.1.2 Domain.
    pub fn parse_name(s: &str) -> Result<Domain, AddrError> {
        let s = s.strip_suffix('.').unwrap_or(s);
        if s.len() > MAX_DOMAIN {
            return Err(AddrError::TooLong);
        }
        if s.is_empty() || !s.split('.').all(valid_subdomain) {
            return Err(AddrError::Syntax);
        }
        Ok(Domain::Name(s.to_owned()))
    }

    /// Parse `Domain / address-literal`.
    pub fn parse(s: &str) -> Result<Domain, AddrError> {
        match s.strip_prefix('[') {
            Some(rest) => {
                let inner = rest.strip_suffix(']').ok_or(AddrError::Syntax)?;
                parse_literal(inner)
            }
            None => Domain::parse_name(s),
        }
    }

    /// The lowercased name, for lookups; None for literals.
    pub fn lower(&self) -> Option<String> {
        match self {
            Domain::Name(n) => Some(n.to_lowercase()),
            _ => None,
        }
    }

    pub fn is_ascii(&self) -> bool {
        match self {
            Domain::Name(n) | Domain::General(n) => n.is_ascii(),
            Domain::Literal(_) => true,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(n) => f.write_str(n),
            Domain::Literal(IpAddr::V4(ip)) => write!(f, "[{ip}]"),
            Domain::Literal(IpAddr::V6(ip)) => write!(f, "[IPv6:{ip}]"),
            Domain::General(g) => write!(f, "[{g}]"),
        }
    }
}

/// The form of a domain name to compare by: A-labels (RFC 5890: a UTF-8 label
/// becomes its `xn--` form), lower case, without a trailing dot; so
/// `Bücher.example.` and `xn--bcher-kva.example` are one name. None when a
/// label is not a valid IDNA label, which then matches nothing configured.
///
/// Only the case of a label may differ: a label that IDNA's lookup mapping
/// would change otherwise (fullwidth letters, or an ideographic full stop
/// turned into a second label) is a different name, so a look-alike of a
/// local domain never counts as local.
pub fn domain_key(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut key = String::with_capacity(name.len());
    for (i, label) in name.split('.').enumerate() {
        if i > 0 {
            key.push('.');
        }
        key.push_str(&label_key(label)?);
    }
    Some(key)
}

/// One label of [`domain_key`]: one IDNA round trip (UTS 46, through the
/// `idna` crate) must give the label back.
fn label_key(label: &str) -> Option<String> {
    let lower = label.to_lowercase();
    let a_label = lower.starts_with("xn--");
    if lower.is_ascii() && !a_label {
        return Some(lower);
    }
    let ascii = if lower.is_ascii() {
        lower.clone()
    } else {
        idna::domain_to_ascii(&lower).ok()?
    };
    if ascii.contains('.') {
        return None;
    }
    let (unicode, checked) = idna::domain_to_unicode(&ascii);
    checked.ok()?;
    let same = if lower.is_ascii() {
        // An A-label: the one its U-label encodes to (punycode has one form).
        idna::domain_to_ascii(&unicode).ok()? == ascii
    } else {
        unicode == lower
    };
    same.then_some(ascii)
}

/// Whether two domain names are the same name (see [`domain_key`]).
pub fn same_domain(a: &str, b: &str) -> bool {
    domain_key(a).is_some_and(|k| Some(k) == domain_key(b))
}

/// RFC 5321: sub-domain = Let-dig [Ldh-str]; RFC 6531 adds U-labels, which we
/// accept as any label with non-ASCII characters and no ASCII punctuation.
fn valid_subdomain(label: &str) -> bool {
    if label.is_empty() || label.len() > 63 {
        return false;
    }
    let ascii_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii();
    label.chars().all(ascii_ok) && !label.starts_with('-') && !label.ends_with('-')
}

fn parse_literal(inner: &str) -> Result<Domain, AddrError> {
    if let Ok(ip) = inner.parse::<Ipv4Addr>() {
        return Ok(Domain::Literal(IpAddr::V4(ip)));
    }
    if let Some(v6) = inner
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("IPv6:"))
        .and_then(|_| inner.get(5..))
    {
        return v6
            .parse::<Ipv6Addr>()
            .map(|ip| Domain::Literal(IpAddr::V6(ip)))
            .map_err(|_| AddrError::Syntax);
    }
    // General-address-literal = Standardized-tag ":" 1*dcontent
    let (tag, content) = inner.split_once(':').ok_or(AddrError::Syntax)?;
    let tag_ok =
        !tag.is_empty() && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') && !tag.ends_with('-');
    // dcontent = %d33-90 / %d94-126
    let content_ok = !content.is_empty()
        && content
            .bytes()
            .all(|b| (33..=90).contains(&b) || (94..=126).contains(&b));
    if tag_ok && content_ok {
        Ok(Domain::General(inner.to_owned()))
    } else {
        Err(AddrError::Syntax)
    }
}

/// `local@domain`. `local` holds the decoded local part: a quoted string's
/// quotes and backslashes are removed, so `"a b"@x` holds `a b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    local: String,
    domain: Domain,
}

impl Mailbox {
    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// Whether sending this address needs SMTPUTF8 (RFC 6531).
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.is_ascii()
    }

    /// Parse a whole `local@domain` string.
    pub fn parse(s: &str) -> Result<Mailbox, AddrError> {
        let (mbox, rest) = parse_mailbox(s)?;
        if rest.is_empty() {
            Ok(mbox)
        } else {
            Err(AddrError::Syntax)
        }
    }

    /// The mailbox this address names, for finding duplicates within one
    /// message: the local part as decoded (so `"alice"` and `alice` agree),
    /// lowercased when `fold_local` (a local domain, whose users are matched
    /// without regard to case; elsewhere RFC 5321 2.4 leaves the case to the
    /// receiver), `@`, and the domain by [`domain_key`].
    pub fn identity(&self, fold_local: bool) -> String {
        let local = if fold_local {
            self.local.to_lowercase()
        } else {
            self.local.clone()
        };
        let domain = match &self.domain {
            Domain::Name(n) => domain_key(n).unwrap_or_else(|| n.to_lowercase()),
            other => other.to_string(),
        };
        format!("{local}@{domain}")
    }

    /// Whether the local part contains the old routing characters (`%`, `!`,
    /// `@`) that must never make tern relay (RFC 5321 3.6.1, 3.6.2).
    pub fn has_routing_chars(&self) -> bool {
        self.local.contains(['%', '!', '@'])
    }
}

/// atext of RFC 5322 3.2.3, plus UTF8-non-ascii (RFC 6531 3.3).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_dot_string(&self.local) {
            f.write_str(&self.local)?;
        } else {
            f.write_str("\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\"")?;
        }
        write!(f, "@{}", self.domain)
    }
}

/// Parse `Local-part "@" (Domain / address-literal)` from the front of `s`,
/// returning the remainder (which starts at `>` or a space, or is empty).
fn parse_mailbox(s: &str) -> Result<(Mailbox, &str), AddrError> {
    let (local, rest) = if let Some(q) = s.strip_prefix('"') {
        parse_quoted(q)?
    } else {
        let end = s.find(|c: char| !(is_atext(c) || c == '.')).unwrap_or(s.len());
        let (l, r) = s.split_at(end);
        if !is_dot_string(l) {
            return Err(AddrError::Syntax);
        }
        (l.to_owned(), r)
    };
    if local.len() > MAX_LOCAL {
        return Err(AddrError::TooLong);
    }
    let rest = rest.strip_prefix('@').ok_or(AddrError::Syntax)?;
    let end = if rest.starts_with('[') {
        rest.find(']').map(|i| i + 1).ok_or(AddrError::Syntax)?
    } else {
        rest.find(['>', ' ']).unwrap_or(rest.len())
    };
    let (dom, rest) = rest.split_at(end);
    let domain = Domain::parse(dom)?;
    Ok((Mailbox { local, domain }, rest))
}

/// RFC 5321 4.1.2 Quoted-string, after the opening quote: returns the decoded
/// content and the text after the closing quote.
fn parse_quoted(s: &str) -> Result<(String, &str), AddrError> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, s.get(i + 1..).unwrap_or(""))),
            // quoted-pairSMTP = %d92 %d32-126
            '\\' => match chars.next() {
                Some((_, e)) if (' '..='~').contains(&e) => out.push(e),
                _ => return Err(AddrError::Syntax),
            },
            // qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF-8 (RFC 6531)
            c if (' '..='~').contains(&c) || !c.is_ascii() => out.push(c),
            _ => return Err(AddrError::Syntax),
        }
    }
    Err(AddrError::Syntax)
}

/// The argument of MAIL FROM: the null path or a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    Null,
    Mailbox(Mailbox),
}

impl ReversePath {
    pub fn is_ascii(&self) -> bool {
        match self {
            ReversePath::Null => true,
            ReversePath::Mailbox(m) => m.is_ascii(),
        }
    }
}

impl fmt::Display for ReversePath {
    /// Without the brackets; the null path is the empty string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// The argument of RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPath {
    /// RFC 5321 4.1.1.3: `<Postmaster>` with no domain, any case.
    Postmaster,
    Mailbox(Mailbox),
}

impl ForwardPath {
    pub fn is_ascii(&self) -> bool {
        match self {
            ForwardPath::Postmaster => true,
            ForwardPath::Mailbox(m) => m.is_ascii(),
        }
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("postmaster"),
            ForwardPath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// Split `<path> params` into the path's inside and the rest; under
/// [`PathSyntax::Lenient`] a path without brackets too.
fn split_path(s: &str, syntax: PathSyntax) -> Result<(&str, &str), AddrError> {
    let Some(inner) = s.strip_prefix('<') else {
        if syntax == PathSyntax::Strict {
            return Err(AddrError::NoBrackets);
        }
        let end = s.find(' ').unwrap_or(s.len());
        let (p, r) = s.split_at(end);
        return if p.is_empty() || p.contains('>') {
            Err(AddrError::Syntax)
        } else {
            Ok((p, r))
        };
    };
    // Find the closing '>' outside any quoted string.
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let path = inner.get(..i).ok_or(AddrError::Syntax)?;
                if path.len() + 2 > MAX_PATH {
                    return Err(AddrError::TooLong);
                }
                let rest = inner.get(i + 1..).unwrap_or("");
                // Parameters, if any, are separated from the path by a space.
                if !rest.is_empty() && !rest.starts_with(' ') {
                    return Err(AddrError::Syntax);
                }
                return Ok((path, rest));
            }
            _ => {}
        }
    }
    Err(AddrError::Syntax)
}

/// RFC 5321 4.1.2 A-d-l: `@one,@two:` source routes are parsed and ignored
/// (RFC 5321 3.3, C: servers must accept and may ignore them).
fn strip_source_route(p: &str) -> Result<&str, AddrError> {
    if !p.starts_with('@') {
        return Ok(p);
    }
    let (route, rest) = p.split_once(':').ok_or(AddrError::Syntax)?;
    for hop in route.split(',') {
        let d = hop.strip_prefix('@').ok_or(AddrError::Syntax)?;
        Domain::parse(d)?;
    }
    Ok(rest)
}

/// Parse a MAIL FROM argument: returns the path and the parameter text after it.
pub fn parse_reverse_path(s: &str, syntax: PathSyntax) -> Result<(ReversePath, &str), AddrError> {
    let (inner, rest) = split_path(s, syntax)?;
    if inner.is_empty() {
        return if s.starts_with('<') {
            Ok((ReversePath::Null, rest))
        } else {
            Err(AddrError::Syntax)
        };
    }
    let mbox = Mailbox::parse(strip_source_route(inner)?)?;
    Ok((ReversePath::Mailbox(mbox), rest))
}

/// Parse a RCPT TO argument: returns the path and the parameter text after it.
pub fn parse_forward_path(s: &str, syntax: PathSyntax) -> Result<(ForwardPath, &str), AddrError> {
    let (inner, rest) = split_path(s, syntax)?;
    if inner.eq_ignore_ascii_case("postmaster") {
        return Ok((ForwardPath::Postmaster, rest));
    }
    let mbox = Mailbox::parse(strip_source_route(inner)?)?;
    Ok((ForwardPath::Mailbox(mbox), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(s: &str) -> Result<String, AddrError> {
        parse_reverse_path(s, PathSyntax::Lenient).map(|(p, rest)| format!("{p}|{rest}"))
    }

    fn fp(s: &str) -> Result<String, AddrError> {
        parse_forward_path(s, PathSyntax::Lenient).map(|(p, rest)| format!("{p}|{rest}"))
    }

    /// RFC 5321 4.1.2: brackets required unless leniency is asked for; with
    /// them, both syntaxes read a path the same way.
    #[test]
    fn strict_paths_need_brackets() {
        use PathSyntax::{Lenient, Strict};
        for bare in [
            "a@b.example",
            "a@b.example SIZE=10",
            "postmaster",
            "Postmaster NOTIFY=NEVER",
        ] {
            assert_eq!(
                parse_reverse_path(bare, Strict).err(),
                Some(AddrError::NoBrackets),
                "{bare}"
            );
            assert_eq!(
                parse_forward_path(bare, Strict).err(),
                Some(AddrError::NoBrackets),
                "{bare}"
            );
        }
        assert_eq!(
            parse_forward_path("a@b.example SIZE=10", Lenient).map(|(p, r)| format!("{p}|{r}")),
            Ok("a@b.example| SIZE=10".to_owned())
        );
        assert!(parse_reverse_path("", Lenient).is_err());
        for bracketed in [
            "<a@b.example>",
            "<> SIZE=1",
            "<Postmaster>",
            "<\"a b\"@c.example> X=1",
        ] {
            if bracketed.starts_with("<>") {
                assert_eq!(
                    parse_reverse_path(bracketed, Strict),
                    parse_reverse_path(bracketed, Lenient)
                );
            } else {
                assert_eq!(
                    parse_forward_path(bracketed, Strict),
                    parse_forward_path(bracketed, Lenient)
                );
                assert!(parse_forward_path(bracketed, Strict).is_ok(), "{bracketed}");
            }
        }
    }

    #[test]
    fn reverse_paths() {
        let ok = [
            ("<>", "|"),
            ("<> SIZE=10", "| SIZE=10"),
            ("<a@b.example>", "a@b.example|"),
            (
                "<a.b+c@x-y.example> BODY=8BITMIME",
                "a.b+c@x-y.example| BODY=8BITMIME",
            ),
            ("a@b.example", "a@b.example|"),
            ("<\"john doe\"@example.com>", "\"john doe\"@example.com|"),
            ("<\"john\"@example.com>", "john@example.com|"),
            ("<\"a>b\"@example.com>", "\"a>b\"@example.com|"),
            ("<\"a\\\"b\"@example.com>", "\"a\\\"b\"@example.com|"),
            ("<@relay.example,@r2.example:u@example.com>", "u@example.com|"),
            ("<u@[192.0.2.1]>", "u@[192.0.2.1]|"),
            ("<u@[IPv6:2001:db8::1]>", "u@[IPv6:2001:db8::1]|"),
            ("<u@[x-tag:abc]>", "u@[x-tag:abc]|"),
            ("<u@example.com.>", "u@example.com|"),
            ("<用户@例子.广告>", "用户@例子.广告|"),
        ];
        for (input, want) in ok {
            assert_eq!(rp(input).as_deref(), Ok(want), "{input}");
        }
        let bad = [
            "",
            "<",
            "<a>",
            "<a@>",
            "<@b>",
            "<a@b",
            "<a..b@c>",
            "<.a@c>",
            "<a.@c>",
            "<a@-b.c>",
            "<a@b-.c>",
            "<a@b..c>",
            "<a b@c>",
            "<\"a@c>",
            "<a@[1.2.3]>",
            "<a@[IPv6:zz]>",
            "<a@[]>",
            "<@x:>",
            "<@x>",
            "<a@b>>",
            "<a@b c>",
            "<\"a\x01\"@b>",
            "<a@b_c>",
            "<a@[x:]>",
        ];
        for input in bad {
            assert!(rp(input).is_err(), "{input} should fail: {:?}", rp(input));
        }
    }

    #[test]
    fn forward_paths() {
        assert_eq!(fp("<Postmaster>").as_deref(), Ok("postmaster|"));
        assert_eq!(
            fp("<POSTMASTER> NOTIFY=NEVER").as_deref(),
            Ok("postmaster| NOTIFY=NEVER")
        );
        assert_eq!(
            fp("<postmaster@x.example>").as_deref(),
            Ok("postmaster@x.example|")
        );
        assert!(fp("<>").is_err());
    }

    #[test]
    fn length_limits() {
        let local = "a".repeat(64);
        assert!(Mailbox::parse(&format!("{local}@x.example")).is_ok());
        let local = "a".repeat(65);
        assert_eq!(
            Mailbox::parse(&format!("{local}@x.example")),
            Err(AddrError::TooLong)
        );
        let label = "b".repeat(63);
        assert!(Domain::parse_name(&label).is_ok());
        assert!(Domain::parse_name(&"b".repeat(64)).is_err());
        let long = [label.as_str(); 5].join(".");
        assert_eq!(Domain::parse_name(&long), Err(AddrError::TooLong));
        let path = format!(
            "<{}@{}>",
            "a".repeat(60),
            ["c".repeat(60), "c".repeat(60), "c".repeat(60), "c".repeat(60)].join(".")
        );
        assert_eq!(
            parse_reverse_path(&path, PathSyntax::Strict).err(),
            Some(AddrError::TooLong)
        );
    }

    #[test]
    fn routing_characters_are_flagged() {
        for a in ["a%b@x.example", "a!b@x.example", "\"a@b\"@x.example"] {
            assert!(
                Mailbox::parse(a).map(|m| m.has_routing_chars()).unwrap_or(false),
                "{a}"
            );
        }
        assert!(!Mailbox::parse("a.b@x.example")
            .map(|m| m.has_routing_chars())
            .unwrap_or(true));
    }

    /// RFC 5890: a U-label and its A-label are one domain name, in any case;
    /// look-alikes that only IDNA's mapping would fold are not.
    #[test]
    fn idn_domain_keys() {
        for (a, b) in [
            ("bücher.test", "xn--bcher-kva.test"),
            ("BÜCHER.Test.", "XN--BCHER-KVA.test"),
            ("café.example", "xn--caf-dma.example"),
            ("例子.广告", "xn--fsqu00a.xn--4rr70v"),
            ("Example.TEST", "example.test."),
        ] {
            assert!(same_domain(a, b), "{a} = {b}");
            assert!(same_domain(b, a), "{b} = {a}");
            assert_eq!(domain_key(a), domain_key(b));
        }
        assert_eq!(domain_key("bücher.test").as_deref(), Some("xn--bcher-kva.test"));
        for (a, b) in [
            ("exämple.test", "example.test"),
            ("example\u{3002}test", "example.test"),
            ("\u{ff45}xample.test", "example.test"),
            ("bucher.test", "xn--bcher-kva.test"),
        ] {
            assert!(!same_domain(a, b), "{a} != {b}");
        }
        // Not valid IDNA: no key, so it matches nothing.
        for bad in ["xn--zz.test", "a\u{3002}b.test", "\u{ff45}xample.test"] {
            assert_eq!(domain_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn mailbox_identity_for_duplicates() {
        let id = |s: &str, fold| Mailbox::parse(s).unwrap().identity(fold);
        assert_eq!(
            id("alice@example.test", true),
            id("\"alice\"@Example.TEST.", true)
        );
        assert_eq!(id("ALICE@example.test", true), "alice@example.test");
        assert_eq!(id("u@bücher.test", false), id("u@XN--BCHER-KVA.test", false));
        // Elsewhere the local part keeps its case.
        assert_ne!(id("Bob@remote.test", false), id("bob@remote.test", false));
        assert_eq!(id("Bob@REMOTE.test", false), "Bob@remote.test");
        assert_eq!(id("\"a b\"@[192.0.2.1]", false), "a b@[192.0.2.1]");
    }

    #[test]
    fn ascii_detection() {
        assert!(Mailbox::parse("a@b.example")
            .map(|m| m.is_ascii())
            .unwrap_or(false));
        assert!(!Mailbox::parse("ü@b.example")
            .map(|m| m.is_ascii())
            .unwrap_or(true));
        assert!(!Mailbox::parse("u@bü.example")
            .map(|m| m.is_ascii())
            .unwrap_or(true));
    }
}
