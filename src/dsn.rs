//! Delivery status notifications (RFC 3464): the bounce, the delay warning and the
//! success notice, built as one complete RFC 5322 message with LF line ends, ready to
//! be queued with the null reverse-path `<>` to the original sender.
//!
//! The message is a `multipart/report` (RFC 6522) of three parts: a human-readable
//! explanation in the tone of Postfix's bounce, the machine-readable
//! `message/delivery-status`, and the original message (whole, or only its header
//! section when RET=HDRS was asked for or it is too big to return).
//!
//! Everything that comes from outside (addresses, remote servers' replies, the
//! original message) is untrusted: field values are stripped of CR, LF and other
//! control characters and folded to keep every line well under RFC 5322's 998 octets,
//! and the MIME boundary is chosen so that it occurs in none of the parts.
//!
//! Internationalised mail is reported the RFC 6533 way: UTF-8 addresses are typed
//! `utf-8;` and the report switches to `message/global-delivery-status`, and a returned
//! original with UTF-8 header fields is `message/global` / `message/global-headers`.

use std::fmt::Write as _;

use crate::clock;
use crate::message;
use crate::smtp::status::Status;

/// What happened to one recipient (RFC 3464 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    /// The action-value as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    /// Failed > delayed > the success actions: a report that mixes actions is
    /// titled and introduced by its most severe one.
    fn severity(self) -> u8 {
        match self {
            Action::Failed => 2,
            Action::Delayed => 1,
            Action::Delivered | Action::Relayed | Action::Expanded => 0,
        }
    }
}

/// One recipient's block in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The address, without <>; written "rfc822; addr", or "utf-8; addr" when it is
    /// not ASCII (RFC 6533 3).
    pub final_recipient: String,
    /// ORCPT as stored (RFC 3461 4.2), e.g. "rfc822;addr"; written "rfc822; addr".
    pub original_recipient: Option<String>,
    pub action: Action,
    pub status: Status,
    /// E.g. "dns; mx.example.com" (a bare name gets "dns; ").
    pub remote_mta: Option<String>,
    /// E.g. "smtp; 550 5.1.1 user unknown" or "x-local; command died with status 1"
    /// (text without a diagnostic-type gets "x-tern; ").
    pub diagnostic: Option<String>,
    /// Unix seconds.
    pub last_attempt: Option<u64>,
    /// Unix seconds; written only for `Action::Delayed` (RFC 3464 2.3.7).
    pub will_retry_until: Option<u64>,
}

/// Everything one notification says: one message per queue run, covering all the
/// recipients it reports on.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// This MTA: `Reporting-MTA: dns; hostname`, `From: MAILER-DAEMON@hostname`.
    pub hostname: &'a str,
    /// The original message's queue id: in the text, in `X-Tern-Queue-ID:` of the
    /// per-message fields, and in the report's Message-ID.
    pub queue_id: &'a str,
    /// ENVID (RFC 3461 4.4) → `Original-Envelope-Id:`.
    pub envid: Option<&'a str>,
    /// Unix seconds → `Arrival-Date:`.
    pub arrival: u64,
    /// The original envelope sender, the report's `To:`.
    pub sender: &'a str,
    pub recipients: Vec<RecipientReport>,
    pub return_content: ReturnContent,
    /// The original message as stored (LF line ends).
    pub original: &'a [u8],
    /// Above this many octets only the header section is returned.
    pub max_return_size: u64,
}

/// How much of the original to return (RFC 3461 4.3, RET=FULL / RET=HDRS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnContent {
    Full,
    Headers,
}

/// Where long lines are folded: RFC 5322 2.1.1's recommended 78 characters.
const FOLD_AT: usize = 78;
/// The longest run without white space written on one line; longer runs are broken
/// (adding a space) so that no line can reach RFC 5322 2.1.1's 998-octet limit.
const MAX_RUN: usize = 900;
/// Longest boundary RFC 2046 5.1.1 allows.
const MAX_BOUNDARY: usize = 70;

/// The notification for `report`, dated now.
pub fn build(report: &Report<'_>) -> Vec<u8> {
    build_at(report, clock::now())
}

/// Whether `message_headers` (a header section, or a whole message: reading stops at
/// the first empty line) belong to a message that must never be bounced: an
/// auto-reply (`Auto-Submitted:` other than "no", RFC 3834 5) or a delivery report
/// (`multipart/report; report-type=delivery-status`, RFC 6522/RFC 3464, or its
/// RFC 6533 global variant). The null sender is the caller's check.
pub fn is_auto_generated(message_headers: &[u8]) -> bool {
    for field in message::fields(message_headers) {
        let value = field.value();
        if field.is("auto-submitted") {
            let keyword: String = value
                .trim()
                .chars()
                .take_while(|c| !matches!(c, ';' | '(' | ' ' | '\t'))
                .collect();
            if !keyword.is_empty() && !keyword.eq_ignore_ascii_case("no") {
                return true;
            }
        } else if field.is("content-type") && is_delivery_report(&value) {
            return true;
        }
    }
    false
}

/// `multipart/report` whose report-type is (global-)delivery-status.
fn is_delivery_report(content_type: &str) -> bool {
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/report") {
        return false;
    }
    params.any(|p| {
        let Some((name, value)) = p.split_once('=') else {
            return false;
        };
        let value = value.trim().trim_matches('"');
        name.trim().eq_ignore_ascii_case("report-type")
            && (value.eq_ignore_ascii_case("delivery-status")
                || value.eq_ignore_ascii_case("global-delivery-status"))
    })
}

/// How a part must be labelled (RFC 2045 6.2), in increasing order of demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Encoding {
    SevenBit,
    EightBit,
    Binary,
}

impl Encoding {
    fn of(data: &[u8]) -> Encoding {
        // RFC 2045 2.8: NULs or lines over 998 octets make data binary.
        if data.contains(&0) || data.split(|&b| b == b'\n').any(|l| l.len() > 998) {
            Encoding::Binary
        } else if data.is_ascii() {
            Encoding::SevenBit
        } else {
            Encoding::EightBit
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Encoding::SevenBit => "7bit",
            Encoding::EightBit => "8bit",
            Encoding::Binary => "binary",
        }
    }
}

/// One body part: its content type and content.
struct Part {
    content_type: String,
    description: &'static str,
    body: Vec<u8>,
}

fn build_at(report: &Report<'_>, now: u64) -> Vec<u8> {
    let host = clean(report.hostname);
    let queue_id = clean(report.queue_id);
    let worst = report
        .recipients
        .iter()
        .map(|r| r.action)
        .max_by_key(|a| a.severity())
        .unwrap_or(Action::Delivered);

    let (status_type, status_body) = delivery_status(report, &host, &queue_id);
    let (original_type, original_desc, original_body, truncated) = returned_original(report, worst);
    let parts = [
        Part {
            content_type: "text/plain; charset=utf-8".to_owned(),
            description: "Notification",
            body: human_text(report, &host, &queue_id, worst, truncated, now).into_bytes(),
        },
        Part {
            content_type: format!("message/{status_type}"),
            description: "Delivery report",
            body: status_body.into_bytes(),
        },
        Part {
            content_type: original_type.to_owned(),
            description: original_desc,
            body: original_body,
        },
    ];
    let boundary = choose_boundary(&queue_id, now, &parts);
    let encoding = parts
        .iter()
        .map(|p| Encoding::of(&p.body))
        .max()
        .unwrap_or(Encoding::SevenBit);

    let subject = match worst {
        Action::Failed => "Undelivered Mail Returned to Sender",
        Action::Delayed => "Delayed Mail (still being retried)",
        Action::Delivered | Action::Relayed | Action::Expanded => "Successful Mail Delivery Report",
    };
    let id_host = id_chars(&host, 200);
    let id_host = if id_host.is_empty() {
        "localhost".to_owned()
    } else {
        id_host
    };
    let mut id_local = id_chars(&queue_id, 64);
    if id_local.is_empty() {
        id_local.push_str("dsn");
    }

    let mut head = String::new();
    field(
        &mut head,
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{host}>"),
    );
    field(&mut head, "To", &format!("<{}>", clean(report.sender)));
    field(&mut head, "Subject", subject);
    field(&mut head, "Date", &clock::rfc5322(now));
    field(&mut head, "Message-ID", &format!("<{id_local}.{now}@{id_host}>"));
    field(&mut head, "MIME-Version", "1.0");
    // RFC 3834 5: mark the report so that vacation programs do not answer it.
    field(&mut head, "Auto-Submitted", "auto-replied");
    // RFC 6522 3: report-type names the subtype of the second part.
    field(
        &mut head,
        "Content-Type",
        &format!("multipart/report; report-type={status_type}; boundary=\"{boundary}\""),
    );
    // RFC 2045 6.4: a multipart is labelled with the widest encoding inside it.
    field(&mut head, "Content-Transfer-Encoding", encoding.as_str());
    head.push('\n');
    head.push_str("This is a MIME-encapsulated message.\n");

    let mut out = head.into_bytes();
    for part in &parts {
        let mut part_head = format!("\n--{boundary}\n");
        field(&mut part_head, "Content-Description", part.description);
        field(&mut part_head, "Content-Type", &part.content_type);
        // RFC 2046 5.2.1 and RFC 3464 2.1: message/* and the report take no
        // base64 or quoted-printable, only an identity encoding label.
        field(
            &mut part_head,
            "Content-Transfer-Encoding",
            Encoding::of(&part.body).as_str(),
        );
        part_head.push('\n');
        out.extend_from_slice(part_head.as_bytes());
        out.extend_from_slice(&part.body);
        // The line break before a delimiter belongs to the delimiter (RFC 2046
        // 5.1.1), so the part keeps its own last one.
        if !part.body.is_empty() && !part.body.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    out.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    out
}

/// The machine-readable part (RFC 3464 2.2, 2.3): its subtype and its text.
fn delivery_status(report: &Report<'_>, host: &str, queue_id: &str) -> (&'static str, String) {
    let mut s = String::new();
    field(&mut s, "Reporting-MTA", &format!("dns; {host}"));
    // RFC 3464 2.2: per-message extension fields are allowed; the queue id is
    // what a postmaster greps the log for.
    field(&mut s, "X-Tern-Queue-ID", queue_id);
    if let Some(envid) = report.envid {
        field(&mut s, "Original-Envelope-Id", envid);
    }
    field(&mut s, "Arrival-Date", &clock::rfc5322(report.arrival));
    for r in &report.recipients {
        s.push('\n');
        let addr = clean(&r.final_recipient);
        // RFC 6533 3: a UTF-8 address is of type utf-8, not rfc822.
        let addr_type = if addr.is_ascii() { "rfc822" } else { "utf-8" };
        field(&mut s, "Final-Recipient", &format!("{addr_type}; {addr}"));
        if let Some(orcpt) = &r.original_recipient {
            field(&mut s, "Original-Recipient", &typed(orcpt, "rfc822"));
        }
        field(&mut s, "Action", r.action.as_str());
        field(&mut s, "Status", &r.status.to_string());
        if let Some(mta) = &r.remote_mta {
            field(&mut s, "Remote-MTA", &typed(mta, "dns"));
        }
        if let Some(diag) = &r.diagnostic {
            field(&mut s, "Diagnostic-Code", &typed(diag, "x-tern"));
        }
        if let Some(t) = r.last_attempt {
            field(&mut s, "Last-Attempt-Date", &clock::rfc5322(t));
        }
        // RFC 3464 2.3.7: only meaningful for delayed recipients.
        if let (Some(t), Action::Delayed) = (r.will_retry_until, r.action) {
            field(&mut s, "Will-Retry-Until", &clock::rfc5322(t));
        }
    }
    // RFC 6533 6.1: non-ASCII text needs the global variant of the report.
    let subtype = if s.is_ascii() {
        "delivery-status"
    } else {
        "global-delivery-status"
    };
    (subtype, s)
}

/// The third part: (content type, description, content, whether only the headers
/// were returned although the whole message was asked for).
fn returned_original(report: &Report<'_>, worst: Action) -> (&'static str, &'static str, Vec<u8>, bool) {
    let original = report.original;
    let too_big = u64::try_from(original.len()).unwrap_or(u64::MAX) > report.max_return_size;
    let headers = message::split(original).0;
    // RFC 6532 3.7 / RFC 6533 6.3: UTF-8 header fields need the global types.
    let global = !headers.is_ascii();
    let undelivered = worst.severity() > 0;
    if report.return_content == ReturnContent::Full && !too_big {
        let ctype = if global {
            "message/global"
        } else {
            "message/rfc822"
        };
        let desc = if undelivered {
            "Undelivered Message"
        } else {
            "Message"
        };
        (ctype, desc, original.to_vec(), false)
    } else {
        let ctype = if global {
            "message/global-headers"
        } else {
            "text/rfc822-headers"
        };
        let desc = if undelivered {
            "Undelivered Message Headers"
        } else {
            "Message Headers"
        };
        let truncated = report.return_content == ReturnContent::Full;
        (ctype, desc, headers.to_vec(), truncated)
    }
}

/// The first part, for the human who sent the message.
fn human_text(
    report: &Report<'_>,
    host: &str,
    queue_id: &str,
    worst: Action,
    truncated: bool,
    now: u64,
) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "This is the mail system at host {host}.\n");
    match worst {
        Action::Failed => {
            t.push_str(
                "I'm sorry to have to inform you that your message could not\n\
                 be delivered to one or more recipients. It's attached below.\n\n\
                 For further assistance, please send mail to postmaster.\n\n\
                 If you do so, please include this problem report. You can\n\
                 delete your own text from the attached returned message.\n",
            );
        }
        Action::Delayed => {
            t.push_str(
                "####################################################################\n\
                 # THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n\
                 ####################################################################\n\n",
            );
            let _ = writeln!(
                t,
                "Your message could not be delivered for {}.",
                duration_words(now.saturating_sub(report.arrival))
            );
            let until = report
                .recipients
                .iter()
                .filter(|r| r.action == Action::Delayed)
                .filter_map(|r| r.will_retry_until)
                .max();
            match until {
                Some(u) => {
                    let _ = writeln!(t, "It is still being retried, until {}.", clock::rfc5322(u));
                }
                None => t.push_str("It is still being retried.\n"),
            }
        }
        Action::Delivered | Action::Relayed | Action::Expanded => {
            t.push_str(
                "Your message was successfully delivered to the destination(s)\n\
                 listed below. If the message was delivered to mailbox you will\n\
                 receive no further notifications. Otherwise you may still receive\n\
                 notifications of mail delivery errors from other systems.\n",
            );
        }
    }
    if truncated {
        t.push_str(
            "\nThe message was too large to be returned in full; only its\n\
             header fields are attached.\n",
        );
    }
    t.push('\n');
    wrap(
        &mut t,
        &format!(
            "The message had queue id {queue_id} and arrived on {}.",
            clock::rfc5322(report.arrival)
        ),
        "",
    );
    t.push_str("\n                   The mail system\n");

    // Group by action when the report mixes them, most severe first.
    let groups: [(&[Action], &str); 3] = [
        (&[Action::Failed], "Delivery failed permanently for:"),
        (&[Action::Delayed], "Delivery is delayed for:"),
        (
            &[Action::Delivered, Action::Relayed, Action::Expanded],
            "Delivery succeeded for:",
        ),
    ];
    let present = groups
        .iter()
        .filter(|(actions, _)| report.recipients.iter().any(|r| actions.contains(&r.action)))
        .count();
    for (actions, title) in groups {
        let members: Vec<&RecipientReport> = report
            .recipients
            .iter()
            .filter(|r| actions.contains(&r.action))
            .collect();
        if members.is_empty() {
            continue;
        }
        if present > 1 {
            let _ = write!(t, "\n{title}\n");
        }
        for r in members {
            t.push('\n');
            wrap(
                &mut t,
                &format!("<{}>: {}", clean(&r.final_recipient), recipient_text(r)),
                "    ",
            );
        }
    }
    t
}

/// `<addr>: ...` text for one recipient, Postfix style ("host X said: ...").
fn recipient_text(r: &RecipientReport) -> String {
    let diag = r.diagnostic.as_deref().map(|d| {
        let d = clean(d);
        match d.split_once(';') {
            Some((ty, text)) if is_atom(ty.trim()) => {
                (ty.trim().to_ascii_lowercase(), text.trim().to_owned())
            }
            _ => (String::new(), d),
        }
    });
    let mta = r.remote_mta.as_deref().map(|m| {
        let m = clean(m);
        match m.split_once(';') {
            Some((ty, name)) if is_atom(ty.trim()) => name.trim().to_owned(),
            _ => m,
        }
    });
    match (diag, mta) {
        (Some((ty, text)), Some(mta)) if ty == "smtp" => format!("host {mta} said: {text}"),
        (Some((_, text)), _) => text,
        (None, Some(mta)) => format!("{} via {mta} (status {})", action_words(r.action), r.status),
        (None, None) => format!("{} (status {})", action_words(r.action), r.status),
    }
}

fn action_words(a: Action) -> &'static str {
    match a {
        Action::Failed => "delivery failed",
        Action::Delayed => "delivery temporarily suspended",
        Action::Delivered => "delivered",
        Action::Relayed => "relayed to a system that sends no further notifications",
        Action::Expanded => "expanded to several recipients",
    }
}

/// "3 hours", "1 minute", "2 days".
fn duration_words(secs: u64) -> String {
    let (n, unit) = if secs >= 2 * 86_400 {
        (secs / 86_400, "day")
    } else if secs >= 3600 {
        (secs / 3600, "hour")
    } else {
        (secs / 60, "minute")
    };
    let n = n.max(1);
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// "type; value" with the space RFC 3464 writes after the semicolon; `default` is
/// the type for a value that has none (or whose "type" is not an atom).
fn typed(value: &str, default: &str) -> String {
    let value = clean(value);
    match value.split_once(';') {
        Some((ty, rest)) if is_atom(ty.trim()) => format!("{}; {}", ty.trim(), rest.trim()),
        _ => format!("{default}; {value}"),
    }
}

/// An RFC 3464 address-type / diagnostic-type / mta-name-type: an atom; in practice
/// letters, digits and '-'.
fn is_atom(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A value fit for a header field or a line of text: every control character
/// (CR and LF above all, which would start a new field) and every run of white space
/// becomes one space.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        // U+2028/U+2029 are line breaks to some parsers (Python's splitlines).
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// Characters safe in a Message-ID or boundary: letters, digits, '.', '-'.
fn id_chars(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .take(max)
        .collect()
}

/// A boundary made of the queue id and the time, with a counter added until it
/// occurs in none of the parts (RFC 2046 5.1.1).
fn choose_boundary(queue_id: &str, now: u64, parts: &[Part]) -> String {
    let base = format!("{}.{now}", id_chars(queue_id, 32));
    let taken = |b: &str| parts.iter().any(|p| contains(&p.body, b.as_bytes()));
    // Each part can contain only finitely many candidates, so this ends.
    (0u64..)
        .map(|n| {
            let mut b = if n == 0 {
                format!("{base}/tern")
            } else {
                format!("{base}.{n}/tern")
            };
            b.truncate(MAX_BOUNDARY);
            b
        })
        .find(|b| !taken(b))
        .unwrap_or(base)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// `s` cut into pieces of at most `max` bytes, on character boundaries.
fn runs(s: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while rest.len() > max {
        let mut cut = max;
        while cut > 0 && !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            break;
        }
        let (head, tail) = rest.split_at(cut);
        pieces.push(head);
        rest = tail;
    }
    pieces.push(rest);
    pieces
}

/// Appends `Name: value` (value cleaned), folded before white space (RFC 5322
/// 2.2.3) so lines stay near 78 octets.
fn field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    fill(out, name.len() + 1, &clean(value));
    out.push('\n');
}

/// Appends `text` as wrapped body lines; continuation lines start with `indent`.
fn wrap(out: &mut String, text: &str, indent: &str) {
    let text = clean(text);
    let mut first = true;
    let mut len = 0;
    for word in text.split(' ').flat_map(|w| runs(w, MAX_RUN)) {
        if !first && len + 1 + word.len() > FOLD_AT {
            out.push('\n');
            out.push_str(indent);
            len = indent.len();
        } else if !first {
            out.push(' ');
            len += 1;
        }
        out.push_str(word);
        len += word.len();
        first = false;
    }
    out.push('\n');
}

/// Appends the words of `value` after a line already `start` octets long, each
/// preceded by a space; a word that would pass `FOLD_AT` starts a new line (the
/// space then being the folding white space).
fn fill(out: &mut String, start: usize, value: &str) {
    let mut len = start;
    for word in value
        .split(' ')
        .filter(|w| !w.is_empty())
        .flat_map(|w| runs(w, MAX_RUN))
    {
        if len > start && len + 1 + word.len() > FOLD_AT {
            out.push('\n');
            len = 0;
        }
        out.push(' ');
        out.push_str(word);
        len += 1 + word.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &[u8] = b"From: Alice <alice@example.org>\n\
To: bob@example.net\n\
Subject: Original subject\n\
Message-ID: <m1@example.org>\n\
\n\
Hello Bob,\n\
this is the body.\n";

    fn rcpt(addr: &str, action: Action, status: Status) -> RecipientReport {
        RecipientReport {
            final_recipient: addr.to_owned(),
            original_recipient: Some(format!("rfc822;{addr}")),
            action,
            status,
            remote_mta: None,
            diagnostic: None,
            last_attempt: Some(1_700_000_100),
            will_retry_until: None,
        }
    }

    fn report(recipients: Vec<RecipientReport>) -> Report<'static> {
        Report {
            hostname: "mx.example.org",
            queue_id: "0193A5F2C41B07E2",
            envid: Some("env-123"),
            arrival: 1_700_000_000,
            sender: "alice@example.org",
            recipients,
            return_content: ReturnContent::Full,
            original: ORIGINAL,
            max_return_size: 1_000_000,
        }
    }

    fn failed() -> RecipientReport {
        RecipientReport {
            remote_mta: Some("dns; mx.example.net".to_owned()),
            diagnostic: Some("smtp; 550 5.1.1 user unknown".to_owned()),
            ..rcpt("bob@example.net", Action::Failed, Status(5, 1, 1))
        }
    }

    fn text(r: &Report<'_>) -> String {
        String::from_utf8(build_at(r, 1_700_003_600)).unwrap()
    }

    /// The boundary from the top-level Content-Type.
    fn boundary_of(m: &str) -> String {
        let i = m.find("boundary=\"").unwrap() + 10;
        let j = m[i..].find('"').unwrap();
        m[i..i + j].to_owned()
    }

    /// Top-level header section and the parts' (headers, body) split by the boundary.
    fn split(m: &str) -> (String, Vec<(String, String)>) {
        let b = boundary_of(m);
        let (head, _) = m.split_once("\n\n").unwrap();
        let close = format!("\n--{b}--\n");
        assert!(m.ends_with(&close), "no closing delimiter");
        let inner = &m[..m.len() - close.len()];
        let delim = format!("\n--{b}\n");
        let mut pieces = inner.split(&delim);
        pieces.next(); // preamble
        let parts = pieces
            .map(|p| {
                let (h, body) = p.split_once("\n\n").unwrap();
                (h.to_owned(), body.to_owned())
            })
            .collect();
        (format!("{head}\n"), parts)
    }

    fn assert_lines_sane(m: &[u8]) {
        assert!(!m.contains(&b'\r'), "CR in output");
        for line in m.split(|&b| b == b'\n') {
            assert!(line.len() <= 998, "line of {} octets", line.len());
        }
    }

    #[test]
    fn failed_report_structure() {
        let r = report(vec![failed()]);
        let m = text(&r);
        assert_lines_sane(m.as_bytes());
        let (head, parts) = split(&m);
        assert!(head.starts_with("From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\n"));
        assert!(head.contains("\nTo: <alice@example.org>\n"));
        assert!(head.contains("\nSubject: Undelivered Mail Returned to Sender\n"));
        assert!(head.contains("\nDate: "));
        assert!(head.contains("\nMessage-ID: <0193A5F2C41B07E2.1700003600@mx.example.org>\n"));
        assert!(head.contains("\nMIME-Version: 1.0\n"));
        assert!(head.contains("\nAuto-Submitted: auto-replied\n"));
        assert!(head.contains("Content-Type: multipart/report; report-type=delivery-status;\n boundary=\""));
        assert_eq!(parts.len(), 3);

        let (h0, t0) = &parts[0];
        assert!(h0.contains("Content-Type: text/plain; charset=utf-8"));
        assert!(t0.starts_with("This is the mail system at host mx.example.org.\n"));
        assert!(t0.contains("I'm sorry to have to inform you"));
        assert!(t0.contains("0193A5F2C41B07E2"));
        assert!(
            t0.contains("<bob@example.net>: host mx.example.net said: 550 5.1.1 user unknown\n"),
            "{t0}"
        );

        let (h1, t1) = &parts[1];
        assert!(h1.contains("Content-Type: message/delivery-status"));
        let blocks: Vec<&str> = t1.split("\n\n").collect();
        assert_eq!(blocks.len(), 2, "{t1:?}");
        assert!(blocks[0].starts_with("Reporting-MTA: dns; mx.example.org\n"));
        assert!(blocks[0].contains("X-Tern-Queue-ID: 0193A5F2C41B07E2\n"));
        assert!(blocks[0].contains("Original-Envelope-Id: env-123\n"));
        assert!(blocks[0].contains("Arrival-Date: "));
        let want = [
            "Final-Recipient: rfc822; bob@example.net",
            "Original-Recipient: rfc822; bob@example.net",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; mx.example.net",
            "Diagnostic-Code: smtp; 550 5.1.1 user unknown",
        ];
        let lines: Vec<&str> = blocks[1].lines().collect();
        assert_eq!(&lines[..6], &want);
        assert!(lines[6].starts_with("Last-Attempt-Date: "));
        assert_eq!(lines.len(), 7);

        let (h2, t2) = &parts[2];
        assert!(h2.contains("Content-Type: message/rfc822"));
        assert_eq!(t2.as_bytes(), ORIGINAL);
    }

    #[test]
    fn delayed_report() {
        let mut d = rcpt("carol@example.net", Action::Delayed, Status(4, 4, 1));
        d.will_retry_until = Some(1_700_432_000);
        d.diagnostic = Some("smtp; 451 4.4.1 try later".to_owned());
        let mut r = report(vec![d]);
        r.return_content = ReturnContent::Headers;
        let m = text(&r);
        let (head, parts) = split(&m);
        assert!(head.contains("\nSubject: Delayed Mail (still being retried)\n"));
        let t0 = &parts[0].1;
        assert!(t0.contains("THIS IS A WARNING ONLY"));
        assert!(t0.contains("for 1 hour."), "{t0}");
        assert!(
            t0.contains(&format!("until {}", clock::rfc5322(1_700_432_000))),
            "{t0}"
        );
        assert!(t0.contains("<carol@example.net>: 451 4.4.1 try later"));
        let t1 = &parts[1].1;
        assert!(t1.contains("Action: delayed\nStatus: 4.4.1\n"));
        assert!(t1.contains(&format!("Will-Retry-Until: {}\n", clock::rfc5322(1_700_432_000))));
        assert!(parts[2].0.contains("Content-Type: text/rfc822-headers"));
        assert!(!parts[2].1.contains("Hello Bob"));
    }

    #[test]
    fn delivered_report() {
        let mut d = rcpt("dave@example.net", Action::Delivered, Status(2, 0, 0));
        // Will-Retry-Until is only for delayed recipients (RFC 3464 2.3.7).
        d.will_retry_until = Some(1_700_432_000);
        let mut r = report(vec![
            d,
            rcpt("erin@example.com", Action::Relayed, Status(2, 0, 0)),
        ]);
        r.return_content = ReturnContent::Headers;
        let m = text(&r);
        let (head, parts) = split(&m);
        assert!(head.contains("\nSubject: Successful Mail Delivery Report\n"));
        assert!(parts[0].1.contains("successfully delivered"));
        assert!(parts[0]
            .1
            .contains("<dave@example.net>: delivered (status 2.0.0)"));
        assert!(
            !parts[0].1.contains("Delivery succeeded for:"),
            "no headings for one group"
        );
        assert!(parts[1].1.contains("Action: delivered\n"));
        assert!(parts[1].1.contains("Action: relayed\n"));
        assert!(!parts[1].1.contains("Will-Retry-Until"));
        assert_eq!(parts[1].1.split("\n\n").count(), 3);
        assert!(parts[2].0.contains("Content-Description: Message Headers"));
    }

    #[test]
    fn mixed_actions_take_most_severe_subject() {
        let r = report(vec![
            rcpt("a@example.net", Action::Delivered, Status(2, 0, 0)),
            rcpt("b@example.net", Action::Delayed, Status(4, 0, 0)),
        ]);
        assert!(text(&r).contains("\nSubject: Delayed Mail (still being retried)\n"));
        let r = report(vec![
            rcpt("a@example.net", Action::Delivered, Status(2, 0, 0)),
            failed(),
            rcpt("b@example.net", Action::Delayed, Status(4, 0, 0)),
        ]);
        let m = text(&r);
        assert!(m.contains("\nSubject: Undelivered Mail Returned to Sender\n"));
        let t0 = &split(&m).1[0].1;
        let f = t0.find("Delivery failed permanently for:").unwrap();
        let d = t0.find("Delivery is delayed for:").unwrap();
        let s = t0.find("Delivery succeeded for:").unwrap();
        assert!(f < d && d < s);
    }

    #[test]
    fn headers_only_when_hdrs_or_too_big() {
        let mut r = report(vec![failed()]);
        r.return_content = ReturnContent::Headers;
        let (_, parts) = split(&text(&r));
        assert!(parts[2].0.contains("Content-Type: text/rfc822-headers"));
        assert_eq!(
            parts[2].1,
            "From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: Original subject\n\
             Message-ID: <m1@example.org>\n"
        );
        assert!(!parts[0].1.contains("too large"));

        let mut r = report(vec![failed()]);
        r.max_return_size = ORIGINAL.len() as u64 - 1;
        let (_, parts) = split(&text(&r));
        assert!(parts[2].0.contains("Content-Type: text/rfc822-headers"));
        assert!(parts[2]
            .0
            .contains("Content-Description: Undelivered Message Headers"));
        assert!(!parts[2].1.contains("Hello Bob"));
        assert!(parts[0].1.contains("too large to be returned in full"));

        // Exactly at the limit the whole message goes back.
        r.max_return_size = ORIGINAL.len() as u64;
        let (_, parts) = split(&text(&r));
        assert!(parts[2].0.contains("Content-Type: message/rfc822"));
    }

    #[test]
    fn boundary_not_in_original() {
        let r = report(vec![failed()]);
        let first = boundary_of(&text(&r));
        // An original that contains the boundary that would have been chosen, and
        // the next candidate too.
        let second = first.replace("/tern", ".1/tern");
        let evil = format!("Subject: x\n\n--{first}\n--{second}--\n");
        let mut r = report(vec![failed()]);
        r.original = evil.as_bytes();
        let m = text(&r);
        let b = boundary_of(&m);
        assert_ne!(b, first);
        assert_ne!(b, second);
        assert!(!evil.contains(&b));
        let (_, parts) = split(&m);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2].1, evil);
        assert!(b.len() <= MAX_BOUNDARY);
    }

    #[test]
    fn diagnostic_with_crlf_cannot_inject() {
        let mut f = failed();
        f.diagnostic =
            Some("smtp; 550 no\r\nAction: delivered\r\n\r\nFinal-Recipient: rfc822; x@y".to_owned());
        f.remote_mta = Some("mx\n\nX-Evil: 1".to_owned());
        f.final_recipient = "bob@example.net\r\nBcc: victim@example.com".to_owned();
        let mut r = report(vec![f]);
        r.sender = "alice@example.org>\nBcc: <victim@example.com";
        r.envid = Some("e\rReporting-MTA: dns; evil");
        let m = text(&r);
        assert_lines_sane(m.as_bytes());
        assert!(!m.contains("\nAction: delivered"));
        assert!(!m.contains("\nFinal-Recipient: rfc822; x@y"));
        assert!(!m.contains("\nX-Evil"));
        assert!(!m.contains("\nBcc:"));
        assert!(!m.contains("\nReporting-MTA: dns; evil"));
        let (_, parts) = split(&m);
        let blocks: Vec<&str> = parts[1].1.split("\n\n").collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1].lines().filter(|l| l.starts_with("Action:")).count(), 1);
        assert!(blocks[1].contains("Diagnostic-Code: smtp; 550 no Action: delivered Final-Recipient:"));
        assert!(blocks[1].contains("Remote-MTA: dns; mx X-Evil: 1"));
    }

    #[test]
    fn long_values_are_folded() {
        let mut f = failed();
        let words: Vec<String> = (0..200).map(|i| format!("word{i}")).collect();
        f.diagnostic = Some(format!("smtp; 550 {}", words.join(" ")));
        let mut g = rcpt("g@example.net", Action::Failed, Status(5, 0, 0));
        g.diagnostic = Some(format!("x-local; {}", "z".repeat(3000)));
        let r = report(vec![f, g]);
        let m = build_at(&r, 1_700_003_600);
        assert_lines_sane(&m);
        let m = String::from_utf8(m).unwrap();
        let (_, parts) = split(&m);
        for line in parts[1].1.lines().chain(parts[0].1.lines()) {
            assert!(
                line.len() <= FOLD_AT || !line.trim().contains(' '),
                "unfolded: {line}"
            );
        }
        // Unfolding gives back the value.
        let unfolded = parts[1].1.replace("\n ", " ");
        assert!(unfolded.contains(&format!("Diagnostic-Code: smtp; 550 {}\n", words.join(" "))));
    }

    #[test]
    fn utf8_addresses_use_global_types() {
        let mut f = failed();
        f.final_recipient = "用户@example.net".to_owned();
        f.original_recipient = Some("utf-8;用户@example.net".to_owned());
        let original = "From: jürgen@example.org\nSubject: Grüße\n\nHallo\n";
        let mut r = report(vec![f]);
        r.sender = "jürgen@example.org";
        r.original = original.as_bytes();
        let m = text(&r);
        let (head, parts) = split(&m);
        assert!(head.contains("report-type=global-delivery-status;"));
        assert!(head.contains("\nTo: <jürgen@example.org>\n"));
        assert!(head.contains("\nContent-Transfer-Encoding: 8bit\n"));
        assert!(parts[1]
            .0
            .contains("Content-Type: message/global-delivery-status"));
        assert!(parts[1].0.contains("Content-Transfer-Encoding: 8bit"));
        assert!(parts[1].1.contains("Final-Recipient: utf-8; 用户@example.net\n"));
        assert!(parts[1]
            .1
            .contains("Original-Recipient: utf-8; 用户@example.net\n"));
        assert!(parts[2].0.contains("Content-Type: message/global\n"));

        r.return_content = ReturnContent::Headers;
        let (_, parts) = split(&text(&r));
        assert!(parts[2].0.contains("Content-Type: message/global-headers\n"));

        // ASCII headers with an 8-bit body stay message/rfc822, labelled 8bit.
        let mut r = report(vec![failed()]);
        r.original = "Subject: hi\n\nGrüße\n".as_bytes();
        let (head, parts) = split(&text(&r));
        assert!(head.contains("report-type=delivery-status;"));
        assert!(parts[2]
            .0
            .contains("Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit"));
        assert!(parts[0].0.contains("Content-Transfer-Encoding: 7bit"));
    }

    #[test]
    fn untyped_values_get_default_types() {
        assert_eq!(typed("rfc822;a@b", "rfc822"), "rfc822; a@b");
        assert_eq!(typed("  RFC822 ;  a@b ", "rfc822"), "RFC822; a@b");
        assert_eq!(typed("a@b", "rfc822"), "rfc822; a@b");
        assert_eq!(typed("mx.example.com", "dns"), "dns; mx.example.com");
        assert_eq!(
            typed("host said: 550; no", "x-tern"),
            "x-tern; host said: 550; no"
        );
        assert_eq!(clean(" a\t\tb\r\n c\u{2028}d\u{7f} "), "a b c d");
    }

    #[test]
    fn no_recipients_or_odd_inputs_do_not_panic() {
        let mut r = report(vec![]);
        r.hostname = "";
        r.queue_id = "";
        r.original = b"";
        let m = build_at(&r, 0);
        assert_lines_sane(&m);
        let m = String::from_utf8(m).unwrap();
        assert!(m.contains("Message-ID: <dsn.0@localhost>"));
        assert_eq!(split(&m).1.len(), 3);
        assert_eq!(duration_words(0), "1 minute");
        assert_eq!(duration_words(7200), "2 hours");
        assert_eq!(duration_words(3 * 86_400), "3 days");
    }

    #[test]
    fn auto_generated_table() {
        let cases: &[(&str, bool)] = &[
            ("Subject: hi\n\n", false),
            ("Auto-Submitted: no\n\n", false),
            ("auto-submitted: No (a human wrote this)\n\n", false),
            ("Auto-Submitted:\n\n", false),
            ("Auto-Submitted: auto-replied\n\n", true),
            ("AUTO-SUBMITTED: Auto-Generated\n\n", true),
            ("Auto-Submitted: auto-notified; owner-email=\"a@b\"\n\n", true),
            ("Auto-Submitted:\n auto-generated\n\n", true),
            (
                "Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n",
                true,
            ),
            (
                "Content-Type: Multipart/Report;\n\tboundary=\"x\"; Report-Type=\"Delivery-Status\"\n\n",
                true,
            ),
            (
                "Content-Type: multipart/report; report-type=global-delivery-status\n\n",
                true,
            ),
            (
                "Content-Type: multipart/report; report-type=disposition-notification\n\n",
                false,
            ),
            ("Content-Type: multipart/mixed; boundary=x\n\n", false),
            (
                "Content-Type: text/plain\r\nAuto-Submitted: auto-replied\r\n\r\n",
                true,
            ),
            // Only the header section counts.
            ("Subject: hi\n\nAuto-Submitted: auto-replied\n", false),
            ("X-Note: Auto-Submitted: yes\n\n", false),
        ];
        for (headers, want) in cases {
            assert_eq!(is_auto_generated(headers.as_bytes()), *want, "{headers:?}");
        }
        // Our own reports are recognised as such.
        assert!(is_auto_generated(&build_at(&report(vec![failed()]), 1)));
    }

    #[test]
    fn python_email_parses_report() {
        let script = r#"
import sys, email, email.policy
data = open(sys.argv[1], 'rb').read()
msg = email.message_from_bytes(data, policy=email.policy.default)
assert msg.get_content_type() == 'multipart/report', msg.get_content_type()
assert msg.get_param('report-type') == 'delivery-status', msg.get_param('report-type')
assert msg['Subject'] == 'Undelivered Mail Returned to Sender', msg['Subject']
assert msg['Auto-Submitted'] == 'auto-replied'
assert msg['To'].addresses[0].addr_spec == 'alice@example.org'
parts = list(msg.iter_parts())
assert len(parts) == 3, len(parts)
assert parts[0].get_content_type() == 'text/plain'
assert 'could not' in parts[0].get_content()
assert parts[1].get_content_type() == 'message/delivery-status'
blocks = parts[1].get_payload()
assert len(blocks) == 3, len(blocks)
assert blocks[0]['Reporting-MTA'] == 'dns; mx.example.org', blocks[0]['Reporting-MTA']
want = [('rfc822; bob@example.net', 'failed', '5.1.1'), ('rfc822; carol@example.net', 'delayed', '4.4.1')]
for block, (fr, action, status) in zip(blocks[1:], want):
    assert block['Final-Recipient'] == fr, block['Final-Recipient']
    assert block['Action'] == action, block['Action']
    assert block['Status'] == status, block['Status']
assert 'word199' in str(blocks[1]['Diagnostic-Code'])
assert blocks[1]['X-Injected'] is None
assert all(b['X-Injected'] is None for b in blocks)
assert parts[2].get_content_type() == 'message/rfc822'
inner = parts[2].get_payload(0)
assert inner['Subject'] == 'Original subject', inner['Subject']
assert 'this is the body' in inner.get_content()
for p in msg.walk():
    assert not p.defects, (p.get_content_type(), p.defects)
print('ok')
"#;
        let mut f = failed();
        let words: Vec<String> = (0..40).map(|i| format!("word{i}")).collect();
        f.diagnostic = Some(format!(
            "smtp; 550 5.1.1 {} word199\r\nX-Injected: 1",
            words.join(" ")
        ));
        let mut d = rcpt("carol@example.net", Action::Delayed, Status(4, 4, 1));
        d.will_retry_until = Some(1_700_432_000);
        let r = report(vec![f, d]);
        // Skip, not fail, where there is no usable python3 with its email package.
        let probe = std::process::Command::new("python3")
            .args(["-c", "import email.policy"])
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            println!("skipped: python3 missing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dsn.eml");
        std::fs::write(&path, build(&r)).unwrap();
        let out = match std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&path)
            .output()
        {
            Ok(out) => out,
            Err(_) => {
                println!("skipped: python3 missing");
                return;
            }
        };
        assert!(
            out.status.success() && out.stdout == b"ok\n",
            "python3 rejected the report:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
