//! The message path: from the last octet of a message to the commit.
//!
//! Whoever receives a message (the SMTP session, for DATA and BDAT alike, and
//! `sendmail`) builds a [`Draft`]: the parsed header section (the one editor,
//! [`message::Header`]), the body (in memory, or spilled to a file in the spool
//! when it is large: [`Body`]) and the envelope. The end-of-message stages then
//! run over the draft in a fixed order ([`finish`]); each may change the draft
//! or refuse the message with the reply that says why. Last, [`commit`] writes
//! the final header and the body into the spool's file (or the maildrop's),
//! whose commit makes it durable before anyone says 250. Nothing is written in
//! its final form before every stage has seen the whole message.
//!
//! The stages, in order (the order is part of the contract: each sees what the
//! ones before it made):
//!
//! 1. **hygiene**: the fields named by `message_drop_headers` (by default
//!    Return-Path, Bcc, Resent-Bcc, Content-Length) are removed from every
//!    message (issue 16 item 9; Postfix's cleanup does the same). The trace
//!    field the receiver put first (Received:) is not among them.
//! 2. **submission fixes** (RFC 6409 8): mail from an authenticated client
//!    gets the Date: and Message-ID: it lacks; mail from `sendmail` gets From:,
//!    Date: and Message-ID:.
//! 3. **milters** (issue 19, [`milters`]): each milter's end of message; its
//!    header, body and envelope edits apply to the draft, its refusal is the
//!    reply, a discard or quarantine is left in [`milters::Run::result`] for
//!    the caller. The milters of SMTP mail are the session's (`milters`), lent
//!    in [`Context::milters`]; mail from `sendmail` meets `non_smtp_milters`
//!    at pickup ([`picked_up`]). A discarded message goes through no further
//!    stage.
//! 4. **authentication checks** (issue 20, [`auth`]): mail from outside loses
//!    the Authentication-Results fields that claim our host name, and, checked,
//!    gets SPF, DKIM and DMARC results as one Authentication-Results field under
//!    our Received:; a DMARC (or SPF) failure the policy rejects is the refusal.
//! 5. **DKIM signing** (issue 20, [`auth`]): mail from inside gets its
//!    DKIM-Signature fields on top, over the final header and body; a signing
//!    failure is a temporary refusal, never an unsigned message.
//!
//! The session's own refusals of the data (size, bare CR or LF, NUL, line
//! length, a mail loop) come before any stage: a refused message is never
//! handed to a milter. The spool knows nothing of this: it gets bytes.

pub mod auth;
pub mod body;
pub mod milters;

pub use milters::Fate;

use std::io;

use crate::clock;
use crate::config::Config;
use crate::message::{self, Header};
use crate::smtp::reply::Reply;
use crate::spool::{Envelope, QueueId};

pub use auth::{MailAuth, Stages};
pub use body::{Body, Store};

/// A message whose data is complete, on its way to the queue.
pub struct Draft {
    pub header: Header,
    pub body: Body,
    pub env: Envelope,
}

/// Who handed the message in: the stages differ by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An SMTP client; `submitted`: it authenticated (RFC 6409 submission).
    Smtp { submitted: bool },
    /// The `sendmail` program: the invoking user's address and full name for
    /// a From: the message lacks.
    Local { from: String, name: String },
    /// A message `sendmail` dropped, at its pickup by the daemon.
    PickedUp,
}

/// What the stages may consult.
pub struct Context<'a> {
    pub cfg: &'a Config,
    pub origin: Origin,
    /// Stages 4 and 5: what mail authentication does with this message.
    pub auth: Stages<'a>,
    /// The milters of this message (stage 3), None without any.
    pub milters: Option<milters::Run<'a>>,
}

/// Run every end-of-message stage over `draft`, in the order of the module
/// documentation; the first refusal ends the run.
pub fn finish(draft: &mut Draft, ctx: &mut Context<'_>) -> Result<(), Reply> {
    hygiene(draft, ctx);
    submission_fixes(draft, ctx);
    if let Some(run) = ctx.milters.as_mut() {
        milters::stage(draft, run)?;
        if run.discarded() {
            return Ok(());
        }
    }
    auth::check(draft, ctx)?;
    auth::sign(draft, ctx)?;
    Ok(())
}

/// Stage 1: the fields that must not travel (RFC 5321 4.4: Return-Path is
/// added at final delivery only; RFC 5322 3.6.3: Bcc shows hidden recipients).
fn hygiene(draft: &mut Draft, ctx: &Context<'_>) {
    for name in &ctx.cfg.session.drop_headers {
        let n = draft.header.remove(name);
        if n > 0 {
            log::debug!("{}: removed {n} {name} header field(s)", draft.env.id);
        }
    }
}

/// Stage 2: RFC 6409 8.1-8.3.
fn submission_fixes(draft: &mut Draft, ctx: &Context<'_>) {
    match &ctx.origin {
        Origin::Smtp { submitted: true } => {
            // In front of the client's own fields, below the trace fields.
            let h = &mut draft.header;
            let mut at = h.fields().take_while(|f| f.is("Received")).count();
            if !h.has("Date") && h.insert(at, "Date", &clock::rfc5322(clock::now())).is_ok() {
                at += 1;
            }
            if !h.has("Message-ID") {
                let _ = h.insert(at, "Message-ID", &message_id(&draft.env.id, &ctx.cfg.hostname));
            }
        }
        Origin::Smtp { submitted: false } | Origin::PickedUp => {}
        Origin::Local { from, name } => add_missing(&mut draft.header, from, name, &ctx.cfg.hostname),
    }
}

fn message_id(id: &QueueId, hostname: &str) -> String {
    format!("<{id}@{hostname}>")
}

/// RFC 6409 sections 8.1, 8.2, 8.3 for locally submitted mail: From:, Date: and
/// Message-ID: when missing (RFC 5322 section 3.6 requires the first two),
/// after the fields the message has.
pub fn add_missing(h: &mut Header, from: &str, name: &str, host: &str) {
    if !h.has("from") {
        let phrase = display_name(name);
        let f = if phrase.is_empty() {
            from.to_owned()
        } else {
            format!("{phrase} <{from}>")
        };
        let _ = h.append("From", &f);
    }
    if !h.has("date") {
        let _ = h.append("Date", &clock::rfc5322(clock::now()));
    }
    if !h.has("message-id") {
        let _ = h.append("Message-ID", &message_id(&QueueId::generate(), host));
    }
}

/// A full name as an RFC 5322 phrase: control characters dropped (a newline
/// must never start a new header field), quoted when it holds specials.
fn display_name(name: &str) -> String {
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    if clean.is_empty() {
        return String::new();
    }
    let plain = clean
        .chars()
        .all(|c| c.is_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c));
    if plain {
        clean.to_owned()
    } else {
        format!("\"{}\"", clean.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Write the finished message into `out`: the header section, then the body.
/// Returns the envelope, its size set to the octets written. The header is
/// byte for byte what was received but for the stages' edits; when the
/// message had no empty line after its header, one is put before the body
/// (the header editor's rule: no body line can then be read as a field or as
/// the continuation of one, such as a text line under the Received: field put
/// on top).
pub fn commit(draft: Draft, out: &mut dyn Store) -> io::Result<Envelope> {
    let Draft {
        header,
        body,
        mut env,
    } = draft;
    let head = head_bytes(&header, &body);
    out.write_all(&head)?;
    env.size = head.len() as u64 + body.len();
    body.write_into(out)?;
    Ok(env)
}

/// The header section as the commit writes it: the stages that read the
/// whole message (DKIM) must see these very bytes.
fn head_bytes(header: &Header, body: &Body) -> Vec<u8> {
    let mut head = Vec::with_capacity(1024);
    // Only whether a body follows matters to `write`.
    let follows: &[u8] = if body.is_empty() { b"" } else { b"\n" };
    header.write(follows, &mut head);
    head
}

/// A message from the maildrop, at pickup in the daemon, to be queued as
/// `id`: read from `message`
/// (LF line ends, as `sendmail` wrote it after its own stages), its trace
/// field `received` put on top, the stages run again (hygiene is idempotent;
/// the submission fixes were made by `sendmail`, which knew the user), and
/// the result written into `out` with `env` as the milters left it. The
/// daemon-side stages for local mail run here: `non_smtp_milters` see the
/// message as Postfix shows them non-SMTP mail (a client `localhost` at
/// 127.0.0.1, HELO localhost, then MAIL, each RCPT, DATA and the message),
/// and it is DKIM-signed with `auth`'s keys.
/// `sendmail` has long exited 0, so a refusal cannot be answered: a
/// permanent one becomes a bounce to the sender (as Postfix's pickup makes
/// it), a temporary one (a DKIM key that does not load: never sent
/// unsigned) leaves the message in the maildrop; a refused RCPT
/// is a configuration problem (Postfix: milters may not refuse recipients of
/// non-SMTP mail) and leaves it there too.
pub fn picked_up(
    cfg: &Config,
    auth: &MailAuth,
    spool: &crate::spool::Spool,
    received: &str,
    env: &mut Envelope,
    message: &mut dyn io::Read,
    out: &mut dyn Store,
) -> io::Result<Fate> {
    let mut b = Builder::new(Body::new(Some(spool)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = message.read(&mut buf)?;
        if n == 0 {
            break;
        }
        b.push(buf.get(..n).unwrap_or_default())?;
    }
    let (mut header, body) = b.finish()?;
    header
        .insert(0, "Received", received)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let draft = Draft {
        header,
        body,
        env: env.clone(),
    };
    milters::at_pickup(cfg, Stages::local(auth), draft, env, out)
}

/// Splits the data of a message, as it arrives (LF line ends), into its header
/// section and its body.
pub struct Builder {
    /// The data until the header section is complete.
    head: Vec<u8>,
    /// Where the end of `head`'s header section was looked for so far.
    scanner: message::EndScanner,
    header: Option<Header>,
    body: Body,
}

/// A header section is held up to this size; what comes after is body, behind
/// an empty line (Postfix's header_size_limit, 100 KiB, discards it instead).
pub const MAX_HEADER: usize = 256 * 1024;

impl Builder {
    pub fn new(body: Body) -> Builder {
        Builder {
            head: Vec::with_capacity(4096),
            scanner: message::EndScanner::default(),
            header: None,
            body,
        }
    }

    /// More data.
    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        if self.header.is_some() {
            return self.body.append(data);
        }
        self.head.extend_from_slice(data);
        if self.scanner.scan(&self.head).is_some() {
            self.split()
        } else if self.head.len() > MAX_HEADER {
            // Too large to hold: its complete lines are the header, the rest body.
            let all = std::mem::take(&mut self.head);
            let cut = all.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let (lines, rest) = all.split_at_checked(cut).unwrap_or((&[], &all));
            self.header = Some(Header::parse(lines).0);
            self.body.append(rest)
        } else {
            Ok(())
        }
    }

    fn split(&mut self) -> io::Result<()> {
        let head = std::mem::take(&mut self.head);
        let (header, rest) = Header::parse(&head);
        self.header = Some(header);
        self.body.append(rest)
    }

    /// The header section and the body: all of the data is header when no
    /// end of it was seen.
    pub fn finish(mut self) -> io::Result<(Header, Body)> {
        if self.header.is_none() {
            self.split()?;
        }
        let header = self.header.unwrap_or_else(|| Header::parse(b"").0);
        Ok((header, self.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A draft of `message`, pushed in pieces as the data arrives (the
    /// stages' tests use it too).
    pub(super) fn draft(message: &[u8]) -> Draft {
        let mut b = Builder::new(Body::new(None));
        // In pieces, as the data arrives.
        for piece in message.chunks(3) {
            b.push(piece).unwrap();
        }
        let (header, body) = b.finish().unwrap();
        Draft {
            header,
            body,
            env: Envelope::new(QueueId::generate(), "a@b".into(), 0),
        }
    }

    fn written(d: Draft) -> Vec<u8> {
        let mut out = Vec::new();
        let env = commit(d, &mut out).unwrap();
        assert_eq!(env.size, out.len() as u64);
        out
    }

    #[test]
    fn unedited_messages_come_back_byte_for_byte() {
        for m in [
            &b"Subject: x\nTo: a@b\n\nbody\n.\n..\n"[..],
            b"Subject: x\r\n\r\nbody\r\n",
            b"A: 1\n",
            b"A: 1",
            b"",
            b"\nbody only\n",
        ] {
            assert_eq!(written(draft(m)), m, "{:?}", String::from_utf8_lossy(m));
        }
    }

    #[test]
    fn a_field_in_front_keeps_the_body_a_body() {
        // No empty line after the header: one goes in, so that no body line
        // (one that starts with white space, one that looks like a field) can
        // be read as header.
        let mut d = draft(b"just text\n");
        d.header.insert(0, "Received", "by x").unwrap();
        assert_eq!(written(d), b"Received: by x\n\njust text\n");
        let mut d = draft(b" indented\n");
        d.header.insert(0, "Received", "by x").unwrap();
        assert_eq!(written(d), b"Received: by x\n\n indented\n");
        assert_eq!(written(draft(b"A: 1\nnot a field\n")), b"A: 1\n\nnot a field\n");
    }

    #[test]
    fn hygiene_and_fixes() {
        let cfg = Config::parse("hostname = h.test\n", Path::new("t.conf")).unwrap();
        let mut d = draft(
            b"Return-Path: <forged@evil.test>\nSubject: s\nBcc: hidden@x.test\nresent-bcc: y\nContent-Length: 3\nTo: a@b\n\nbody\n",
        );
        let mut ctx = Context {
            cfg: &cfg,
            origin: Origin::Smtp { submitted: false },
            milters: None,
            auth: Stages::default(),
        };
        finish(&mut d, &mut ctx).unwrap();
        assert_eq!(written(d), b"Subject: s\nTo: a@b\n\nbody\n");
        let mut d = draft(b"Subject: s\n\nbody\n");
        let mut ctx = Context {
            cfg: &cfg,
            origin: Origin::Smtp { submitted: true },
            milters: None,
            auth: Stages::default(),
        };
        finish(&mut d, &mut ctx).unwrap();
        let out = String::from_utf8(written(d)).unwrap();
        assert!(out.starts_with("Date: "), "{out}");
        assert!(out.contains("\nMessage-ID: <"), "{out}");
        assert!(out.ends_with("@h.test>\nSubject: s\n\nbody\n"), "{out}");
        // The list is the administrator's: empty keeps everything.
        let cfg = Config::parse("message_drop_headers =\n", Path::new("t.conf")).unwrap();
        let mut d = draft(b"Return-Path: <x@y>\nBcc: z\n\nb\n");
        let mut ctx = Context {
            cfg: &cfg,
            origin: Origin::Smtp { submitted: false },
            milters: None,
            auth: Stages::default(),
        };
        finish(&mut d, &mut ctx).unwrap();
        assert_eq!(written(d), b"Return-Path: <x@y>\nBcc: z\n\nb\n");
    }

    #[test]
    fn a_huge_header_goes_through_as_body() {
        let mut m = Vec::new();
        while m.len() <= MAX_HEADER {
            m.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\n");
        }
        m.extend_from_slice(b"X-Last: 1\n\nbody\n");
        let d = draft(&m);
        assert!(d.header.len() > 1000);
        let out = written(d);
        // Cut at a line end: what did not fit is body, behind an empty line
        // when it would otherwise be read as header.
        assert!(out.len() - m.len() <= 1 && out.ends_with(b"X-Last: 1\n\nbody\n"));
    }
}
