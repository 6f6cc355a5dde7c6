//! What milters may change, and applying it: pure functions over a message held
//! as header fields and a body (LF line ends, as the spool stores it) and over
//! the envelope's sender and recipients. The header/body rules are Postfix's
//! (cleanup_milter.c), which follow Sendmail 8.13:
//!
//! - a header change or delete names the nth field with that name, counting only
//!   fields the milters were shown (tern's own Received: is hidden from them);
//!   index 0 means 1; changing a field that is not there adds it, deleting one
//!   that is not there does nothing;
//! - a header insert counts every field, hidden ones too: index 0 goes above
//!   tern's own Received:, past the end appends;
//! - header values travel without the space after the colon unless the milter
//!   negotiated SMFIP_HDR_LEADSPC (OpenDKIM does), in which case it is part of
//!   the value both ways;
//! - a milter folds a value with a bare `\n` + tab (OpenDKIM) or with CRLF; the
//!   spool keeps `\n`.
//!
//! [`Message`] is the milters' view of a message: fields as the shared header
//! parser (`crate::message`) finds them, each marked hidden or not, which
//! `message::Header` cannot say; edits by index as milters name them.

use crate::message;
use crate::smtp::address::Mailbox;

/// One modification a milter asked for at the end of a message, normalised to
/// the spool's form (see [`header_value_from_milter`], [`body_from_milter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modification {
    /// SMFIR_ADDHEADER: append.
    AddHeader { name: String, value: Vec<u8> },
    /// SMFIR_INSHEADER: insert at `index` (0 = the very top).
    InsertHeader {
        index: u32,
        name: String,
        value: Vec<u8>,
    },
    /// SMFIR_CHGHEADER: change the `index`th `name` field (1 = first); an empty
    /// value deletes it.
    ChangeHeader {
        index: u32,
        name: String,
        value: Vec<u8>,
    },
    /// SMFIR_REPLBODY, all chunks joined.
    ReplaceBody(Vec<u8>),
    /// SMFIR_ADDRCPT / SMFIR_ADDRCPT_PAR (with ESMTP parameters).
    AddRcpt { rcpt: String, args: Option<String> },
    /// SMFIR_DELRCPT.
    DelRcpt(String),
    /// SMFIR_CHGFROM (with ESMTP parameters).
    ChangeFrom { sender: String, args: Option<String> },
}

/// One header field: `name` is every byte before the colon, `value` every byte
/// after it (the leading space included), folded lines joined with `\n`, without
/// the final line end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: Vec<u8>,
    /// Not shown to milters and not counted by their change/delete indexes: the
    /// Received: field tern adds (Postfix hides its own the same way).
    pub hidden: bool,
}

impl Field {
    pub fn new(name: &str, value: &[u8]) -> Field {
        Field {
            name: name.to_owned(),
            value: value.to_vec(),
            hidden: false,
        }
    }

    /// The field name without the (obsolete) white space before the colon.
    pub fn label(&self) -> &str {
        self.name.trim_end_matches([' ', '\t'])
    }
}

/// A message as header fields and a body, LF line ends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub fields: Vec<Field>,
    /// Whether an empty line separates the header section from the body.
    pub separator: bool,
    pub body: Vec<u8>,
}

/// RFC 5322 2.2: ftext, printable US-ASCII except the colon.
fn is_ftext(b: u8) -> bool {
    (33..=126).contains(&b) && b != b':'
}

/// A valid field name (RFC 5322 3.6.8 field-name = 1*ftext).
pub fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_ftext)
}

impl Message {
    /// Split message bytes with the shared header parser (`crate::message`): the
    /// header section ends at the first empty line, or at the first line that is
    /// neither a field nor the continuation of one (that line then starts the
    /// body, as in Postfix). `to_bytes` gives the same bytes back for LF input
    /// that ends with a line end.
    pub fn parse(bytes: &[u8]) -> Message {
        let (head, body) = message::split(bytes);
        let fields = message::fields(bytes)
            .map(|f| {
                let raw = f.raw();
                let value = f.raw_value();
                // Everything before the colon, obsolete white space included.
                let name = raw
                    .get(..raw.len().saturating_sub(value.len() + 1))
                    .unwrap_or_default();
                Field {
                    name: String::from_utf8_lossy(name).into_owned(),
                    value: value.strip_suffix(b"\n").unwrap_or(value).to_vec(),
                    hidden: false,
                }
            })
            .collect();
        Message {
            fields,
            separator: bytes.len() > head.len() + body.len(),
            body: body.to_vec(),
        }
    }

    /// The message bytes, LF line ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 64 * self.fields.len());
        for f in &self.fields {
            out.extend_from_slice(f.name.as_bytes());
            out.push(b':');
            out.extend_from_slice(&f.value);
            out.push(b'\n');
        }
        if self.separator {
            out.push(b'\n');
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// Hide the first `n` fields from milters (tern's own Received:).
    pub fn hide_first(&mut self, n: usize) {
        for f in self.fields.iter_mut().take(n) {
            f.hidden = true;
        }
    }

    /// The fields a milter is shown, as (name, value) in the milter's form.
    pub fn fields_for_milter(&self, leading_space: bool) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields
            .iter()
            .filter(|f| !f.hidden)
            .map(move |f| (f.label(), header_value_for_milter(&f.value, leading_space)))
    }
}

/// The value a milter is sent: as stored, but without the one space after the
/// colon unless the milter negotiated SMFIP_HDR_LEADSPC (milter8_header(); a tab
/// is never eaten).
pub fn header_value_for_milter(value: &[u8], leading_space: bool) -> &[u8] {
    if leading_space {
        value
    } else {
        value.strip_prefix(b" ").unwrap_or(value)
    }
}

/// A value a milter sent, in the spool's form: the space after the colon added
/// back unless the milter keeps it itself (SMFIP_HDR_LEADSPC); CRLF and CR line
/// ends made LF; a line end not followed by white space (which would end the
/// field and start a forged one) followed by a tab; no line end at the end.
pub fn header_value_from_milter(value: &[u8], leading_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 2);
    if !leading_space && !value.is_empty() {
        out.push(b' ');
    }
    let mut it = value.iter().copied().peekable();
    while let Some(b) = it.next() {
        match b {
            b'\r' | b'\n' => {
                if b == b'\r' && it.peek() == Some(&b'\n') {
                    it.next();
                }
                match it.peek() {
                    None => break,
                    // A blank folded line would end the header section.
                    Some(b'\r' | b'\n') => continue,
                    Some(b' ' | b'\t') => out.push(b'\n'),
                    Some(_) => out.extend_from_slice(b"\n\t"),
                }
            }
            _ => out.push(b),
        }
    }
    out
}

/// The body as a milter is sent it: CRLF line ends (milter8_body()), and a final
/// CRLF when the last line had none.
pub fn body_for_milter(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32 + 2);
    for &b in body {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    if !body.is_empty() && !body.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A replacement body from a milter in the spool's form: CRLF becomes LF; a CR
/// not followed by LF stays (milter8.c keeps it too).
pub fn body_from_milter(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut it = body.iter().copied().peekable();
    while let Some(b) = it.next() {
        if b == b'\r' && it.peek() == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

/// Apply the header and body modifications, in the order the milter sent them.
/// Envelope modifications are left to [`apply_envelope`].
pub fn apply_content(msg: &mut Message, mods: &[Modification]) {
    for m in mods {
        match m {
            Modification::AddHeader { name, value } => msg.fields.push(Field::new(name, value)),
            Modification::InsertHeader { index, name, value } => {
                let at = usize::try_from(*index)
                    .unwrap_or(usize::MAX)
                    .min(msg.fields.len());
                msg.fields.insert(at, Field::new(name, value));
            }
            Modification::ChangeHeader { index, name, value } => change_header(msg, *index, name, value),
            Modification::ReplaceBody(body) => {
                msg.body = body.clone();
                msg.separator |= !body.is_empty();
            }
            Modification::AddRcpt { .. } | Modification::DelRcpt(_) | Modification::ChangeFrom { .. } => {}
        }
    }
}

fn change_header(msg: &mut Message, index: u32, name: &str, value: &[u8]) {
    // Sendmail compatibility (milter8.c): index 0 means the first.
    let nth = usize::try_from(index.max(1)).unwrap_or(usize::MAX);
    let pos = msg
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.hidden && f.label().eq_ignore_ascii_case(name))
        .nth(nth - 1)
        .map(|(i, _)| i);
    match (pos, value.is_empty()) {
        (Some(i), true) => {
            msg.fields.remove(i);
        }
        (Some(i), false) => {
            if let Some(f) = msg.fields.get_mut(i) {
                *f = Field::new(name, value);
            }
        }
        // cleanup_upd_header(): a change to a field that is not there adds it.
        (None, false) => msg.fields.push(Field::new(name, value)),
        (None, true) => {}
    }
}

/// The envelope as milters may change it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvelopeEdit {
    /// "" for the null reverse-path.
    pub sender: String,
    /// ESMTP parameters a milter gave with a new sender (RET=, ENVID=), raw.
    pub sender_args: Option<String>,
    pub recipients: Vec<RcptEdit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptEdit {
    pub addr: String,
    /// ESMTP parameters a milter gave with an added recipient (NOTIFY=, ORCPT=), raw.
    pub args: Option<String>,
}

impl RcptEdit {
    pub fn new(addr: &str) -> RcptEdit {
        RcptEdit {
            addr: addr.to_owned(),
            args: None,
        }
    }
}

/// An address as a milter writes it, `<a@b>` or `a@b`, without the brackets;
/// None unless it is a valid mailbox (or postmaster, for a recipient).
fn milter_address(s: &str, postmaster_ok: bool) -> Option<String> {
    let s = s.trim();
    let s = s.strip_prefix('<').and_then(|x| x.strip_suffix('>')).unwrap_or(s);
    if postmaster_ok && s.eq_ignore_ascii_case("postmaster") {
        return Some(s.to_owned());
    }
    Mailbox::parse(s).ok().map(|m| m.to_string())
}

/// Apply the envelope modifications in order. What cannot be applied (an address
/// that does not parse) is left out and described in the returned warnings, as
/// Postfix logs and skips them.
pub fn apply_envelope(env: &mut EnvelopeEdit, mods: &[Modification]) -> Vec<String> {
    let mut warnings = Vec::new();
    for m in mods {
        match m {
            Modification::AddRcpt { rcpt, args } => match milter_address(rcpt, true) {
                Some(addr) => {
                    // Postfix's duplicate filter: the same address twice is delivered once.
                    if !env.recipients.iter().any(|r| r.addr.eq_ignore_ascii_case(&addr)) {
                        env.recipients.push(RcptEdit {
                            addr,
                            args: args.clone(),
                        });
                    }
                }
                None => warnings.push(format!("ignoring bad recipient address {rcpt:?} from milter")),
            },
            Modification::DelRcpt(rcpt) => match milter_address(rcpt, true) {
                Some(addr) => env.recipients.retain(|r| !r.addr.eq_ignore_ascii_case(&addr)),
                None => warnings.push(format!("ignoring bad recipient address {rcpt:?} to delete")),
            },
            Modification::ChangeFrom { sender, args } => {
                let bare = sender.trim();
                if bare == "<>" || bare.is_empty() {
                    env.sender = String::new();
                    env.sender_args = args.clone();
                } else if let Some(addr) = milter_address(sender, false) {
                    env.sender = addr;
                    env.sender_args = args.clone();
                } else {
                    warnings.push(format!("ignoring bad sender address {sender:?} from milter"));
                }
            }
            Modification::AddHeader { .. }
            | Modification::InsertHeader { .. }
            | Modification::ChangeHeader { .. }
            | Modification::ReplaceBody(_) => {}
        }
    }
    warnings
}

/// Apply everything: content to `msg`, envelope changes to `env`.
pub fn apply(msg: &mut Message, env: &mut EnvelopeEdit, mods: &[Modification]) -> Vec<String> {
    apply_content(msg, mods);
    apply_envelope(env, mods)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from client\n\tby mx (tern); Sat, 5 Dec 2026 10:00:00 +0000\n\
From: a@example.com\nTo: b@example.org\nSubject: hello\n\tworld\nX-Tag: one\nX-Tag: two\n\nbody line\n";

    fn msg() -> Message {
        let mut m = Message::parse(MSG);
        m.hide_first(1);
        m
    }

    fn names(m: &Message) -> Vec<&str> {
        m.fields.iter().map(|f| f.name.as_str()).collect()
    }

    fn value<'a>(m: &'a Message, name: &str) -> Vec<&'a [u8]> {
        m.fields
            .iter()
            .filter(|f| f.label().eq_ignore_ascii_case(name))
            .map(|f| f.value.as_slice())
            .collect()
    }

    #[test]
    fn parse_round_trips_and_finds_fields() {
        let m = Message::parse(MSG);
        assert_eq!(m.to_bytes(), MSG);
        assert_eq!(names(&m), ["Received", "From", "To", "Subject", "X-Tag", "X-Tag"]);
        assert_eq!(value(&m, "subject"), [&b" hello\n\tworld"[..]]);
        assert!(m.separator);
        assert_eq!(m.body, b"body line\n");
        // No blank line: a non-field line starts the body.
        let odd = b"A: 1\nnot a header\nB: 2\n";
        let m = Message::parse(odd);
        assert_eq!(names(&m), ["A"]);
        assert!(!m.separator);
        assert_eq!(m.to_bytes(), odd);
        // Obsolete space before the colon is kept; the label drops it.
        let m = Message::parse(b"Subject : x\n\n");
        assert_eq!(m.fields[0].label(), "Subject");
        assert_eq!(m.to_bytes(), b"Subject : x\n\n");
        // Header section only; empty input; leading continuation is body.
        assert_eq!(Message::parse(b"A: 1\n").to_bytes(), b"A: 1\n");
        assert_eq!(Message::parse(b""), Message::default());
        assert_eq!(Message::parse(b" x\n").body, b" x\n");
    }

    #[test]
    fn milters_see_values_without_the_leading_space_unless_leadspc() {
        let m = msg();
        let shown: Vec<_> = m.fields_for_milter(false).collect();
        // tern's Received: is hidden.
        assert_eq!(shown[0], ("From", &b"a@example.com"[..]));
        assert_eq!(shown[2], ("Subject", &b"hello\n\tworld"[..]));
        let shown: Vec<_> = m.fields_for_milter(true).collect();
        assert_eq!(shown[2], ("Subject", &b" hello\n\tworld"[..]));
        // Only one space is eaten, and never a tab.
        assert_eq!(header_value_for_milter(b"  two", false), b" two");
        assert_eq!(header_value_for_milter(b"\tx", false), b"\tx");
    }

    #[test]
    fn values_from_milters_get_the_spools_form() {
        // Without LEADSPC the space after the colon comes back.
        assert_eq!(header_value_from_milter(b"yes", false), b" yes");
        assert_eq!(header_value_from_milter(b"", false), b"");
        // OpenDKIM: LEADSPC, folded with a bare \n and a tab.
        assert_eq!(
            header_value_from_milter(b" v=1; a=rsa-sha256;\n\td=example.org;", true),
            b" v=1; a=rsa-sha256;\n\td=example.org;"
        );
        // CRLF folding becomes LF.
        assert_eq!(header_value_from_milter(b" a\r\n\tb", true), b" a\n\tb");
        // A line end that would start a new field is made a fold.
        assert_eq!(header_value_from_milter(b"a\nBcc: x", false), b" a\n\tBcc: x");
        assert_eq!(header_value_from_milter(b"a\rb", false), b" a\n\tb");
        // Blank folded lines and a final line end go.
        assert_eq!(header_value_from_milter(b"a\r\n\r\n b\r\n", false), b" a\n b");
    }

    #[test]
    fn body_converts_between_lf_and_crlf() {
        assert_eq!(body_for_milter(b"a\nb\n"), b"a\r\nb\r\n");
        assert_eq!(body_for_milter(b"a\nno end"), b"a\r\nno end\r\n");
        assert_eq!(body_for_milter(b""), b"");
        assert_eq!(body_from_milter(b"a\r\nb\r\n"), b"a\nb\n");
        assert_eq!(body_from_milter(b"lone\rcr\r\n"), b"lone\rcr\n");
        assert_eq!(body_from_milter(&body_for_milter(b"x\ny\n")), b"x\ny\n");
    }

    #[test]
    fn add_header_appends() {
        let mut m = msg();
        apply_content(
            &mut m,
            &[Modification::AddHeader {
                name: "X-Spam".into(),
                value: b" yes".to_vec(),
            }],
        );
        assert_eq!(names(&m).last(), Some(&"X-Spam"));
        assert!(m.to_bytes().ends_with(b"X-Tag: two\nX-Spam: yes\n\nbody line\n"));
    }

    #[test]
    fn insert_header_counts_every_field_and_appends_past_the_end() {
        let ins = |index| Modification::InsertHeader {
            index,
            name: "DKIM-Signature".into(),
            value: b" v=1".to_vec(),
        };
        let mut m = msg();
        apply_content(&mut m, &[ins(0)]);
        assert_eq!(
            names(&m)[..2],
            ["DKIM-Signature", "Received"],
            "0: above our Received"
        );
        let mut m = msg();
        apply_content(&mut m, &[ins(1)]);
        assert_eq!(names(&m)[..3], ["Received", "DKIM-Signature", "From"]);
        let mut m = msg();
        apply_content(&mut m, &[ins(99)]);
        assert_eq!(names(&m).last(), Some(&"DKIM-Signature"));
        // u32::MAX is just "past the end".
        let mut m = msg();
        apply_content(&mut m, &[ins(u32::MAX)]);
        assert_eq!(names(&m).last(), Some(&"DKIM-Signature"));
    }

    #[test]
    fn change_header_finds_the_nth_visible_field() {
        let chg = |index, name: &str, value: &[u8]| Modification::ChangeHeader {
            index,
            name: name.into(),
            value: value.to_vec(),
        };
        let mut m = msg();
        apply_content(&mut m, &[chg(2, "x-tag", b" TWO")]);
        assert_eq!(value(&m, "X-Tag"), [&b" one"[..], b" TWO"]);
        assert_eq!(names(&m)[5], "x-tag", "the milter's spelling of the name");
        // Index 0 means 1.
        let mut m = msg();
        apply_content(&mut m, &[chg(0, "X-Tag", b" ONE")]);
        assert_eq!(value(&m, "X-Tag"), [&b" ONE"[..], b" two"]);
        // Our own Received: is not counted: Received #1 does not exist for milters,
        // so changing it adds one and the hidden one stays as it was.
        let mut m = msg();
        apply_content(&mut m, &[chg(1, "Received", b" forged")]);
        assert!(m.fields[0].hidden);
        assert!(m.fields[0].value.starts_with(b" from client"));
        assert_eq!(m.fields.last().unwrap().value, b" forged");
        // Changing a field that is not there adds it.
        let mut m = msg();
        apply_content(&mut m, &[chg(3, "X-Tag", b" three")]);
        assert_eq!(value(&m, "X-Tag"), [&b" one"[..], b" two", b" three"]);
    }

    #[test]
    fn delete_header_removes_only_the_named_instance() {
        let del = |index, name: &str| Modification::ChangeHeader {
            index,
            name: name.into(),
            value: vec![],
        };
        let mut m = msg();
        apply_content(&mut m, &[del(1, "X-Tag")]);
        assert_eq!(value(&m, "X-Tag"), [&b" two"[..]]);
        let mut m = msg();
        apply_content(&mut m, &[del(1, "Subject")]);
        assert!(value(&m, "Subject").is_empty());
        // Not there: nothing happens; the hidden Received: cannot be deleted.
        for d in [del(5, "X-Tag"), del(1, "Received"), del(1, "Nope")] {
            let mut m = msg();
            apply_content(&mut m, &[d]);
            assert_eq!(m, msg());
        }
    }

    #[test]
    fn replace_body_and_mods_apply_in_order() {
        let mut m = msg();
        apply_content(
            &mut m,
            &[
                Modification::ReplaceBody(b"first\n".to_vec()),
                Modification::AddHeader {
                    name: "A".into(),
                    value: b" 1".to_vec(),
                },
                Modification::ChangeHeader {
                    index: 1,
                    name: "A".into(),
                    value: b" 2".to_vec(),
                },
                Modification::ReplaceBody(b"second\n".to_vec()),
            ],
        );
        assert_eq!(m.body, b"second\n");
        assert_eq!(value(&m, "A"), [&b" 2"[..]]);
        // A header-only message gets its separator when it gains a body.
        let mut m = Message::parse(b"A: 1\n");
        apply_content(&mut m, &[Modification::ReplaceBody(b"x\n".to_vec())]);
        assert_eq!(m.to_bytes(), b"A: 1\n\nx\n");
    }

    fn env() -> EnvelopeEdit {
        EnvelopeEdit {
            sender: "a@example.com".into(),
            sender_args: None,
            recipients: vec![RcptEdit::new("b@example.org"), RcptEdit::new("c@example.org")],
        }
    }

    #[test]
    fn recipients_are_added_and_deleted() {
        let mut e = env();
        let w = apply_envelope(
            &mut e,
            &[
                Modification::AddRcpt {
                    rcpt: "<d@example.net>".into(),
                    args: None,
                },
                Modification::AddRcpt {
                    rcpt: "e@example.net".into(),
                    args: Some("NOTIFY=NEVER".into()),
                },
                Modification::AddRcpt {
                    rcpt: "<B@example.org>".into(),
                    args: None,
                },
                Modification::AddRcpt {
                    rcpt: "<postmaster>".into(),
                    args: None,
                },
                Modification::DelRcpt("<c@EXAMPLE.org>".into()),
                Modification::AddRcpt {
                    rcpt: "not an address".into(),
                    args: None,
                },
                Modification::DelRcpt("<@>".into()),
            ],
        );
        let addrs: Vec<_> = e.recipients.iter().map(|r| r.addr.as_str()).collect();
        assert_eq!(
            addrs,
            ["b@example.org", "d@example.net", "e@example.net", "postmaster"]
        );
        assert_eq!(e.recipients[2].args.as_deref(), Some("NOTIFY=NEVER"));
        assert_eq!(w.len(), 2, "{w:?}");
    }

    #[test]
    fn sender_changes_including_to_null() {
        let mut e = env();
        apply_envelope(
            &mut e,
            &[Modification::ChangeFrom {
                sender: "<bounces@example.com>".into(),
                args: Some("RET=HDRS".into()),
            }],
        );
        assert_eq!(
            (e.sender.as_str(), e.sender_args.as_deref()),
            ("bounces@example.com", Some("RET=HDRS"))
        );
        apply_envelope(
            &mut e,
            &[Modification::ChangeFrom {
                sender: "<>".into(),
                args: None,
            }],
        );
        assert_eq!(e.sender, "");
        let w = apply_envelope(
            &mut e,
            &[Modification::ChangeFrom {
                sender: "<x y>".into(),
                args: None,
            }],
        );
        assert_eq!((e.sender.as_str(), w.len()), ("", 1));
    }

    #[test]
    fn apply_does_both() {
        let mut m = msg();
        let mut e = env();
        let w = apply(
            &mut m,
            &mut e,
            &[
                Modification::DelRcpt("<b@example.org>".into()),
                Modification::AddHeader {
                    name: "X-A".into(),
                    value: b" 1".to_vec(),
                },
            ],
        );
        assert!(w.is_empty());
        assert_eq!(e.recipients.len(), 1);
        assert_eq!(value(&m, "X-A"), [&b" 1"[..]]);
    }
}
