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
mod tests;
