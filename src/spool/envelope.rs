//! The envelope: everything about a queued message that is not its content, kept as
//! versioned text a human can read (one `key: value` per line) in env/ID.
//!
//! ```text
//! version: 1
//! id: 0193A5F2C41B07E2
//! created: 1732370000
//! sender: alice@example.org
//! rcpt: bob@example.net status=pending attempts=0 notify=FAILURE
//! ```
//!
//! Every free-form value (sender, helo, client-name, protocol, envid, auth, and the
//! recipient's address, orcpt, notify and last reply) is written xtext-encoded (RFC 3461
//! section 4, applied to the UTF-8 bytes): bytes outside 33..=126, and '+' and '=',
//! become `+XX`. So no value can contain a space, a newline or an '=' and none can break
//! the line format, and `parse(to_text(e)) == e` for every envelope.
//!
//! Parsing is strict: an unknown key means a newer tern wrote the file, and guessing
//! would lose or misroute mail, so it is an error (the spool then moves the file to
//! corrupt/ for a human). `parse` never panics, whatever the input.

use std::fmt;
use std::net::IpAddr;

use super::id::QueueId;
use crate::smtp::notify::Notify;
use crate::smtp::xtext;

/// The only envelope version this tern writes and reads.
const VERSION: u32 = 1;

/// A queued message's envelope and per-recipient delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: QueueId,
    /// Unix seconds.
    pub created: u64,
    /// "" for the null reverse-path <>.
    pub sender: String,
    /// The client's EHLO/HELO argument.
    pub helo: Option<String>,
    /// None = local submission.
    pub client_addr: Option<IpAddr>,
    /// E.g. "localhost" or a reverse-DNS name.
    pub client_name: Option<String>,
    /// "SMTP", "ESMTP", "ESMTPS", "ESMTPSA", "local".
    pub protocol: String,
    /// From BODY=.
    pub body: BodyType,
    pub smtputf8: bool,
    /// Message octets as stored.
    pub size: u64,
    /// RET=FULL|HDRS (RFC 3461).
    pub ret: Option<DsnRet>,
    /// ENVID (RFC 3461), stored decoded.
    pub envid: Option<String>,
    /// Authenticated user, if any.
    pub auth: Option<String>,
    /// The sender has been sent the one delay notice (RFC 3464 "delayed").
    pub delay_warned: bool,
    /// Why the message was put on hold when it was queued (a milter's
    /// quarantine, a policy service's HOLD), for `ternctl show`; kept
    /// after a release as a record of it.
    pub hold_reason: Option<String>,
    /// `MAIL FROM:<...> REQUIRETLS` (RFC 8689): relay only over TLS that DANE
    /// or MTA-STS authenticates, to servers that offer REQUIRETLS. Written as
    /// `requiretls: yes` only when set, so envelopes without it read as
    /// before.
    pub requiretls: bool,
    pub recipients: Vec<Recipient>,
}

/// The BODY= parameter (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
    Binary,
}

/// The RET= parameter (RFC 3461).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnRet {
    Full,
    Hdrs,
}

/// One recipient and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The forward-path mailbox, without <>.
    pub addr: String,
    /// ORCPT (RFC 3461), e.g. "rfc822;a@b", stored decoded.
    pub orcpt: Option<String>,
    /// NOTIFY (RFC 3461), written as "SUCCESS,FAILURE" or "NEVER".
    pub notify: Option<Notify>,
    pub status: RcptStatus,
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt: Option<u64>,
    /// Last result text for mailq, e.g. "451 4.7.1 try later".
    pub last_reply: Option<String>,
}

/// Delivery state of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptStatus {
    Pending,
    Sent,
    Failed,
    Deferred,
}

/// Why an envelope text did not parse: what is wrong and on which line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeError(pub String);

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "envelope: {}", self.0)
    }
}

impl std::error::Error for EnvelopeError {}

impl Recipient {
    /// A fresh recipient: pending, never tried, no DSN parameters.
    pub fn new(addr: String) -> Recipient {
        Recipient {
            addr,
            orcpt: None,
            notify: None,
            status: RcptStatus::Pending,
            attempts: 0,
            next_attempt: None,
            last_reply: None,
        }
    }
}

impl BodyType {
    fn as_str(self) -> &'static str {
        match self {
            BodyType::SevenBit => "7bit",
            BodyType::EightBitMime => "8bitmime",
            BodyType::Binary => "binarymime",
        }
    }
    fn from_str(s: &str) -> Option<BodyType> {
        match s {
            "7bit" => Some(BodyType::SevenBit),
            "8bitmime" => Some(BodyType::EightBitMime),
            "binarymime" => Some(BodyType::Binary),
            _ => None,
        }
    }
}

impl DsnRet {
    fn as_str(self) -> &'static str {
        match self {
            DsnRet::Full => "full",
            DsnRet::Hdrs => "hdrs",
        }
    }
    fn from_str(s: &str) -> Option<DsnRet> {
        match s {
            "full" => Some(DsnRet::Full),
            "hdrs" => Some(DsnRet::Hdrs),
            _ => None,
        }
    }
}

impl RcptStatus {
    fn as_str(self) -> &'static str {
        match self {
            RcptStatus::Pending => "pending",
            RcptStatus::Sent => "sent",
            RcptStatus::Failed => "failed",
            RcptStatus::Deferred => "deferred",
        }
    }
    fn from_str(s: &str) -> Option<RcptStatus> {
        match s {
            "pending" => Some(RcptStatus::Pending),
            "sent" => Some(RcptStatus::Sent),
            "failed" => Some(RcptStatus::Failed),
            "deferred" => Some(RcptStatus::Deferred),
            _ => None,
        }
    }
}

impl Envelope {
    /// An envelope with no recipients yet: protocol "ESMTP", body 7bit, everything else
    /// empty.
    pub fn new(id: QueueId, sender: String, created: u64) -> Envelope {
        Envelope {
            id,
            created,
            sender,
            helo: None,
            client_addr: None,
            client_name: None,
            protocol: "ESMTP".to_owned(),
            body: BodyType::SevenBit,
            smtputf8: false,
            size: 0,
            ret: None,
            envid: None,
            auth: None,
            delay_warned: false,
            hold_reason: None,
            requiretls: false,
            recipients: Vec::new(),
        }
    }

    /// The text form, ending in a newline. None fields are left out.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(256 + 64 * self.recipients.len());
        let mut line = |k: &str, v: &str| {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push('\n');
        };
        line("version", &VERSION.to_string());
        line("id", self.id.as_str());
        line("created", &self.created.to_string());
        line("sender", &xtext::encode(&self.sender));
        if let Some(v) = &self.helo {
            line("helo", &xtext::encode(v));
        }
        if let Some(v) = &self.client_addr {
            line("client-addr", &v.to_string());
        }
        if let Some(v) = &self.client_name {
            line("client-name", &xtext::encode(v));
        }
        line("protocol", &xtext::encode(&self.protocol));
        line("body", self.body.as_str());
        line("smtputf8", if self.smtputf8 { "yes" } else { "no" });
        line("size", &self.size.to_string());
        if let Some(v) = self.ret {
            line("ret", v.as_str());
        }
        if let Some(v) = &self.envid {
            line("envid", &xtext::encode(v));
        }
        if let Some(v) = &self.auth {
            line("auth", &xtext::encode(v));
        }
        if self.delay_warned {
            line("warned", "yes");
        }
        if let Some(v) = &self.hold_reason {
            line("hold-reason", &xtext::encode(v));
        }
        if self.requiretls {
            line("requiretls", "yes");
        }
        for r in &self.recipients {
            let mut v = format!(
                "{} status={} attempts={}",
                xtext::encode(&r.addr),
                r.status.as_str(),
                r.attempts
            );
            if let Some(n) = r.next_attempt {
                v.push_str(&format!(" next={n}"));
            }
            let notify = r.notify.map(|n| n.to_string());
            for (k, o) in [("orcpt", &r.orcpt), ("notify", &notify), ("last", &r.last_reply)] {
                if let Some(s) = o {
                    v.push_str(&format!(" {k}={}", xtext::encode(s)));
                }
            }
            line("rcpt", &v);
        }
        out
    }

    /// Parse the text form. Errors say what is wrong and on which line; never panics.
    pub fn parse(text: &str) -> Result<Envelope, EnvelopeError> {
        let mut version_seen = false;
        let mut id = None;
        let mut created = None;
        let mut sender = None;
        let mut helo = None;
        let mut client_addr = None;
        let mut client_name = None;
        let mut protocol = None;
        let mut body = None;
        let mut smtputf8 = None;
        let mut size = None;
        let mut ret = None;
        let mut envid = None;
        let mut auth = None;
        let mut warned = None;
        let mut hold_reason = None;
        let mut requiretls = None;
        let mut recipients = Vec::new();

        for (i, raw) in text.split('\n').enumerate() {
            let n = i + 1;
            // Tolerate CRLF from a hand edit; encoded values never hold a raw CR.
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            let err = |what: String| EnvelopeError(format!("line {n}: {what}"));
            let Some((key, rest)) = line.split_once(':') else {
                return Err(err(format!("expected \"key: value\", got {}", quote(line))));
            };
            // "key:" with nothing after it is an empty value (an editor may strip the space).
            let value = rest.strip_prefix(' ').unwrap_or(rest);
            if !version_seen {
                if key != "version" {
                    return Err(err(format!("expected \"version\" first, got {}", quote(key))));
                }
                match value.parse::<u32>() {
                    Ok(VERSION) => version_seen = true,
                    Ok(v) => return Err(err(format!("unsupported envelope version {v}"))),
                    Err(_) => return Err(err(format!("bad version {}", quote(value)))),
                }
                continue;
            }
            // Store into a slot that must still be empty: a repeated key is an error.
            fn set<T>(slot: &mut Option<T>, v: T, key: &str, n: usize) -> Result<(), EnvelopeError> {
                if slot.is_some() {
                    return Err(EnvelopeError(format!("line {n}: duplicate key {}", quote(key))));
                }
                *slot = Some(v);
                Ok(())
            }
            let text_value = || xtext_decode(value).map_err(|e| err(format!("{key}: {e}")));
            match key {
                "version" => return Err(err("duplicate key \"version\"".to_owned())),
                "id" => {
                    let v =
                        QueueId::parse(value).ok_or_else(|| err(format!("bad queue id {}", quote(value))))?;
                    set(&mut id, v, key, n)?;
                }
                "created" => set(&mut created, parse_num(value).map_err(&err)?, key, n)?,
                "sender" => set(&mut sender, text_value()?, key, n)?,
                "helo" => set(&mut helo, text_value()?, key, n)?,
                "client-addr" => {
                    let v = value
                        .parse::<IpAddr>()
                        .map_err(|_| err(format!("bad client address {}", quote(value))))?;
                    set(&mut client_addr, v, key, n)?;
                }
                "client-name" => set(&mut client_name, text_value()?, key, n)?,
                "protocol" => set(&mut protocol, text_value()?, key, n)?,
                "body" => {
                    let v = BodyType::from_str(value)
                        .ok_or_else(|| err(format!("bad body type {}", quote(value))))?;
                    set(&mut body, v, key, n)?;
                }
                "smtputf8" => {
                    let v = match value {
                        "yes" => true,
                        "no" => false,
                        _ => return Err(err(format!("smtputf8: expected yes or no, got {}", quote(value)))),
                    };
                    set(&mut smtputf8, v, key, n)?;
                }
                "size" => set(&mut size, parse_num(value).map_err(&err)?, key, n)?,
                "ret" => {
                    let v =
                        DsnRet::from_str(value).ok_or_else(|| err(format!("bad ret {}", quote(value))))?;
                    set(&mut ret, v, key, n)?;
                }
                "envid" => set(&mut envid, text_value()?, key, n)?,
                "auth" => set(&mut auth, text_value()?, key, n)?,
                "warned" => {
                    if value != "yes" {
                        return Err(err(format!("warned: expected yes, got {}", quote(value))));
                    }
                    set(&mut warned, true, key, n)?;
                }
                "hold-reason" => set(&mut hold_reason, text_value()?, key, n)?,
                "requiretls" => {
                    if value != "yes" {
                        return Err(err(format!("requiretls: expected yes, got {}", quote(value))));
                    }
                    set(&mut requiretls, true, key, n)?;
                }
                "rcpt" => recipients.push(parse_rcpt(value).map_err(|e| err(format!("rcpt: {e}")))?),
                _ => {
                    return Err(err(format!(
                        "unknown key {} (written by a newer tern?)",
                        quote(key)
                    )))
                }
            }
        }

        let missing = |k: &str| EnvelopeError(format!("missing \"{k}\""));
        if !version_seen {
            return Err(EnvelopeError("empty envelope (no \"version\" line)".to_owned()));
        }
        let id = id.ok_or_else(|| missing("id"))?;
        let created = created.ok_or_else(|| missing("created"))?;
        let sender = sender.ok_or_else(|| missing("sender"))?;
        if recipients.is_empty() {
            return Err(missing("rcpt"));
        }
        Ok(Envelope {
            id,
            created,
            sender,
            helo,
            client_addr,
            client_name,
            protocol: protocol.unwrap_or_else(|| "ESMTP".to_owned()),
            body: body.unwrap_or(BodyType::SevenBit),
            smtputf8: smtputf8.unwrap_or(false),
            size: size.unwrap_or(0),
            ret,
            envid,
            auth,
            delay_warned: warned.unwrap_or(false),
            hold_reason,
            requiretls: requiretls.unwrap_or(false),
            recipients,
        })
    }
}

/// `ADDR status=S attempts=N [next=T] [orcpt=X] [notify=X] [last=X]`
fn parse_rcpt(value: &str) -> Result<Recipient, String> {
    // Split on single spaces: an empty address (writes as "rcpt:  status=...") stays a token.
    let mut tokens = value.split(' ');
    let addr = xtext_decode(tokens.next().unwrap_or_default()).map_err(|e| format!("address: {e}"))?;
    let mut status = None;
    let mut attempts = None;
    let mut next = None;
    let mut orcpt = None;
    let mut notify = None;
    let mut last = None;
    for tok in tokens.filter(|t| !t.is_empty()) {
        let Some((k, v)) = tok.split_once('=') else {
            return Err(format!("expected key=value, got {}", quote(tok)));
        };
        let dup = || format!("duplicate {}", quote(k));
        let text = || xtext_decode(v).map_err(|e| format!("{k}: {e}"));
        match k {
            "status" if status.is_none() => {
                status = Some(RcptStatus::from_str(v).ok_or_else(|| format!("bad status {}", quote(v)))?)
            }
            "attempts" if attempts.is_none() => attempts = Some(parse_num::<u32>(v)?),
            "next" if next.is_none() => next = Some(parse_num::<u64>(v)?),
            "orcpt" if orcpt.is_none() => orcpt = Some(text()?),
            "notify" if notify.is_none() => {
                let t = text()?;
                notify = Some(Notify::parse(&t).ok_or_else(|| format!("bad notify {}", quote(&t)))?);
            }
            "last" if last.is_none() => last = Some(text()?),
            "status" | "attempts" | "next" | "orcpt" | "notify" | "last" => return Err(dup()),
            _ => return Err(format!("unknown field {} (written by a newer tern?)", quote(k))),
        }
    }
    Ok(Recipient {
        addr,
        orcpt,
        notify,
        status: status.ok_or("missing status=")?,
        attempts: attempts.ok_or("missing attempts=")?,
        next_attempt: next,
        last_reply: last,
    })
}

/// An xtext value (RFC 3461 4), decoded; the error quotes it.
fn xtext_decode(s: &str) -> Result<String, String> {
    xtext::decode(s).map_err(|e| format!("{e} in {}", quote(s)))
}

/// A decimal number; digits only (no sign, no spaces), so there is one spelling of each.
fn parse_num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a number, got {}", quote(s)));
    }
    s.parse::<T>()
        .map_err(|_| format!("number out of range: {}", quote(s)))
}

/// A value quoted for an error message, cut short so a garbage file cannot flood the log.
fn quote(s: &str) -> String {
    const MAX: usize = 40;
    let mut cut: String = s.chars().take(MAX).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

#[cfg(test)]
mod tests;
