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
mod tests {
    use super::*;

    fn id() -> QueueId {
        QueueId::parse("0193A5F2C41B07E2").unwrap()
    }

    fn full() -> Envelope {
        let mut e = Envelope::new(id(), "alice@example.org".into(), 1_732_370_000);
        e.helo = Some("mail.example.org".into());
        e.client_addr = Some("192.0.2.7".parse().unwrap());
        e.client_name = Some("mail.example.org".into());
        e.protocol = "ESMTPS".into();
        e.body = BodyType::EightBitMime;
        e.smtputf8 = true;
        e.size = 12345;
        e.ret = Some(DsnRet::Hdrs);
        e.envid = Some("QQ314159".into());
        e.auth = Some("alice".into());
        e.delay_warned = true;
        e.requiretls = true;
        e.recipients.push(Recipient::new("bob@example.net".into()));
        e.recipients.push(Recipient {
            addr: "\"carol smith\"@example.com".into(),
            orcpt: Some("rfc822;carol+x@example.com".into()),
            notify: Notify::parse("SUCCESS,FAILURE"),
            status: RcptStatus::Deferred,
            attempts: 3,
            next_attempt: Some(1_732_371_000),
            last_reply: Some("451 4.7.1 try later".into()),
        });
        e
    }

    fn minimal_text() -> &'static str {
        "version: 1\nid: 0193A5F2C41B07E2\ncreated: 5\nsender: \nrcpt: a@b status=pending attempts=0\n"
    }

    #[test]
    fn text_form_is_readable() {
        let t = full().to_text();
        assert!(
            t.starts_with("version: 1\nid: 0193A5F2C41B07E2\ncreated: 1732370000\n"),
            "{t}"
        );
        assert!(t.contains("\nsender: alice@example.org\n"));
        assert!(t.contains("\nclient-addr: 192.0.2.7\n"));
        assert!(t.contains("\nbody: 8bitmime\n"));
        assert!(t.contains("\nsmtputf8: yes\n"));
        assert!(t.contains("\nret: hdrs\n"));
        assert!(t.contains("\nrequiretls: yes\n"));
        assert!(t.contains("\nrcpt: bob@example.net status=pending attempts=0\n"));
        assert!(t.contains(
            "\nrcpt: \"carol+20smith\"@example.com status=deferred attempts=3 next=1732371000 \
             orcpt=rfc822;carol+2Bx@example.com notify=SUCCESS,FAILURE last=451+204.7.1+20try+20later\n"
        ));
        assert!(t.ends_with('\n'));
        // None fields are left out.
        let e = Envelope::parse(minimal_text()).unwrap();
        let t = e.to_text();
        for k in [
            "helo:",
            "client-addr:",
            "client-name:",
            "ret:",
            "envid:",
            "auth:",
            "requiretls:",
            "next=",
            "orcpt=",
            "last=",
        ] {
            assert!(!t.contains(k), "{k} in {t}");
        }
    }

    #[test]
    fn round_trip_table() {
        let mut cases = vec![full()];
        let mut e = Envelope::new(id(), String::new(), 0);
        e.recipients.push(Recipient::new(String::new()));
        cases.push(e);
        let mut e = full();
        e.client_addr = Some("2001:db8::1".parse().unwrap());
        e.helo = Some(String::new());
        e.envid = Some("a=b+c d\r\ne\u{0}f".into());
        e.body = BodyType::Binary;
        e.ret = Some(DsnRet::Full);
        e.recipients[0].status = RcptStatus::Sent;
        e.recipients[1].status = RcptStatus::Failed;
        e.recipients[1].orcpt = Some(String::new());
        e.recipients[1].attempts = u32::MAX;
        e.recipients[1].next_attempt = Some(u64::MAX);
        e.recipients.push(Recipient::new("用户@例子.广告".into()));
        e.sender = "\"odd = + sender\"@exämple.org".into();
        e.created = u64::MAX;
        e.size = u64::MAX;
        cases.push(e);
        for e in cases {
            let t = e.to_text();
            assert_eq!(Envelope::parse(&t), Ok(e.clone()), "{t}");
            // Tolerated variations: no final newline, CRLF.
            assert_eq!(Envelope::parse(t.trim_end_matches('\n')), Ok(e.clone()));
            assert_eq!(Envelope::parse(&t.replace('\n', "\r\n")), Ok(e));
        }
    }

    /// xorshift64*: a small deterministic generator so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn odd_string(&mut self) -> String {
            const POOL: &[char] = &[
                'a', 'Z', '0', '@', '.', ' ', '=', '+', '\n', '\r', '\t', '\0', ':', '"', '\\', '<', '>',
                ';', ',', '%', '~', '\u{7f}', 'é', 'ß', '日', '本', '😀', '\u{feff}', '\u{2028}', '+', '=',
            ];
            let len = self.below(24) as usize;
            (0..len)
                .map(|_| POOL[self.below(POOL.len() as u64) as usize])
                .collect()
        }
        fn opt_string(&mut self) -> Option<String> {
            (self.below(3) != 0).then(|| self.odd_string())
        }
        fn num(&mut self) -> u64 {
            match self.below(3) {
                0 => 0,
                1 => u64::MAX,
                _ => self.next(),
            }
        }
    }

    fn random_envelope(r: &mut Rng) -> Envelope {
        let mut e = Envelope::new(QueueId::generate(), r.odd_string(), r.num());
        e.helo = r.opt_string();
        e.client_addr = match r.below(3) {
            0 => None,
            1 => Some(IpAddr::from((r.next() as u32).to_be_bytes())),
            _ => Some(IpAddr::from(
                ((u128::from(r.next()) << 64) | u128::from(r.next())).to_be_bytes(),
            )),
        };
        e.client_name = r.opt_string();
        e.protocol = r.odd_string();
        e.body = [BodyType::SevenBit, BodyType::EightBitMime, BodyType::Binary][r.below(3) as usize];
        e.smtputf8 = r.below(2) == 0;
        e.size = r.num();
        e.ret = [None, Some(DsnRet::Full), Some(DsnRet::Hdrs)][r.below(3) as usize];
        e.envid = r.opt_string();
        e.auth = r.opt_string();
        e.delay_warned = r.next().is_multiple_of(2);
        e.requiretls = r.next().is_multiple_of(2);
        for _ in 0..=r.below(4) {
            e.recipients.push(Recipient {
                addr: r.odd_string(),
                orcpt: r.opt_string(),
                notify: [
                    None,
                    Some(Notify::NEVER),
                    Notify::parse("SUCCESS,DELAY"),
                    Some(Notify::DEFAULT),
                ][r.below(4) as usize],
                status: [
                    RcptStatus::Pending,
                    RcptStatus::Sent,
                    RcptStatus::Failed,
                    RcptStatus::Deferred,
                ][r.below(4) as usize],
                attempts: r.num() as u32,
                next_attempt: (r.below(2) == 0).then(|| r.num()),
                last_reply: r.opt_string(),
            });
        }
        e
    }

    #[test]
    fn round_trip_generated() {
        let mut r = Rng(0x1234_5678_9ABC_DEF1);
        for _ in 0..5000 {
            let e = random_envelope(&mut r);
            let t = e.to_text();
            // Nothing but printable ASCII and line ends in the text.
            assert!(t.bytes().all(|b| b == b'\n' || (32..=126).contains(&b)), "{t:?}");
            assert_eq!(Envelope::parse(&t).as_ref(), Ok(&e), "{t}");
        }
    }

    #[test]
    fn xtext() {
        for s in ["", "a b", "+", "=", "é", "\n\r", "abc~!"] {
            assert_eq!(xtext_decode(&xtext::encode(s)).as_deref(), Ok(s));
        }
        assert_eq!(xtext::encode("a b+c=é"), "a+20b+2Bc+3D+C3+A9");
        assert_eq!(xtext_decode("a+2Bc").as_deref(), Ok("a+c"));
        // Lower case hex is not xtext (RFC 3461 4): the envelope reads what tern writes.
        for bad in ["+", "+2", "+zz", "a b", "a=b", "+FF", "+C3", "\u{e9}", "a+2bc"] {
            assert!(xtext_decode(bad).is_err(), "{bad:?}");
        }
    }

    fn parse_err(t: &str) -> String {
        match Envelope::parse(t) {
            Ok(e) => panic!("parsed {e:?} from {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parse_errors() {
        let ok = minimal_text();
        assert!(Envelope::parse(ok).is_ok());
        assert!(parse_err(&ok.replace("version: 1", "version: 2")).contains("unsupported envelope version 2"));
        assert!(parse_err(&ok.replace("version: 1", "version: x")).contains("line 1: bad version"));
        assert!(parse_err(&ok.replace("version: 1\n", "")).contains("line 1: expected \"version\" first"));
        let e = parse_err(&format!("{ok}colour: blue\n"));
        assert!(e.contains("line 6: unknown key \"colour\""), "{e}");
        let e = parse_err(&ok.replace("rcpt: a@b status=pending attempts=0\n", ""));
        assert!(e.contains("missing \"rcpt\""), "{e}");
        assert!(parse_err(&ok.replace("id: 0193A5F2C41B07E2\n", "")).contains("missing \"id\""));
        assert!(parse_err(&ok.replace("created: 5\n", "")).contains("missing \"created\""));
        assert!(parse_err(&ok.replace("sender: \n", "")).contains("missing \"sender\""));
        assert!(
            parse_err(&ok.replace("id: 0193A5F2C41B07E2", "id: ../../x")).contains("line 2: bad queue id")
        );
        assert!(parse_err(&ok.replace("created: 5", "created: -5")).contains("line 3"));
        assert!(
            parse_err(&ok.replace("created: 5", "created: 99999999999999999999")).contains("out of range")
        );
        assert!(parse_err(&format!("{ok}sender: x\n")).contains("duplicate key \"sender\""));
        assert!(parse_err(&format!("{ok}version: 1\n")).contains("duplicate"));
        assert!(parse_err(&ok.replace("sender: ", "sender: a b")).contains("line 4: sender"));
        assert!(parse_err(&ok.replace("status=pending", "status=lost")).contains("bad status"));
        assert!(parse_err(&ok.replace("status=pending ", "")).contains("missing status"));
        assert!(parse_err(&ok.replace(" attempts=0", "")).contains("missing attempts"));
        assert!(parse_err(&ok.replace("attempts=0", "attempts=0 attempts=1")).contains("duplicate"));
        assert!(parse_err(&ok.replace("attempts=0", "attempts=0 colour=blue")).contains("unknown field"));
        assert!(parse_err(&ok.replace("attempts=0", "attempts=0 junk")).contains("key=value"));
        assert!(parse_err(&ok.replace("attempts=0", "attempts=0 notify=SOMETIMES")).contains("bad notify"));
        assert!(parse_err(&ok.replace("attempts=0", "attempts=0 notify=NEVER,DELAY")).contains("bad notify"));
        // Any order and case reads; it is written back in canonical form.
        let e = Envelope::parse(&ok.replace("attempts=0", "attempts=0 notify=delay,SUCCESS")).unwrap();
        assert!(e.to_text().contains(" notify=SUCCESS,DELAY\n"), "{}", e.to_text());
        assert!(parse_err(&format!("{ok}no colon here\n")).contains("line 6: expected \"key: value\""));
        assert!(parse_err(&format!("{ok}body: 9bit\n")).contains("bad body"));
        assert!(parse_err(&format!("{ok}smtputf8: maybe\n")).contains("smtputf8"));
        assert!(parse_err(&format!("{ok}client-addr: 999.1.1.1\n")).contains("bad client address"));
        assert!(parse_err(&format!("{ok}ret: some\n")).contains("bad ret"));
        assert!(parse_err(&format!("{ok}requiretls: no\n")).contains("requiretls: expected yes"));
        // An envelope written before REQUIRETLS existed reads as without it.
        assert!(!Envelope::parse(ok).unwrap().requiretls);
        assert!(
            Envelope::parse(&format!("{ok}requiretls: yes\n"))
                .unwrap()
                .requiretls
        );
        assert!(parse_err("").contains("empty envelope"));
        assert!(parse_err("\n\n").contains("empty envelope"));
        // A huge garbage value is cut short in the message.
        let long = "x".repeat(10_000);
        assert!(parse_err(&format!("{ok}{long}: y\n")).len() < 200);
        // Missing final newline, blank lines and "key:" without a space are tolerated.
        assert!(Envelope::parse(ok.trim_end()).is_ok());
        assert!(Envelope::parse(&ok.replace("sender: \n", "\nsender:\n\n")).is_ok());
    }

    #[test]
    fn garbage_never_panics() {
        let mut r = Rng(99);
        let valid = full().to_text();
        // Every prefix (at char boundaries: the input is &str) parses or errors.
        for n in 0..=valid.len() {
            if let Some(p) = valid.get(..n) {
                let _ = Envelope::parse(p);
            }
        }
        // Random bytes, and valid text with random bytes changed.
        for _ in 0..3000 {
            let len = r.below(300) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
            let _ = Envelope::parse(&String::from_utf8_lossy(&bytes));
            let mut m = valid.clone().into_bytes();
            for _ in 0..=r.below(4) {
                let i = r.below(m.len() as u64) as usize;
                m[i] = b"+=: \n\r0aF9-"[r.below(11) as usize];
            }
            let _ = Envelope::parse(&String::from_utf8_lossy(&m));
        }
    }
}
