//! The Postfix SMTP access policy delegation protocol (Postfix's
//! SMTPD_POLICY_README), the client side: greylisting (postgrey), SPF policy
//! daemons, rate limiters (postfwd) speak it.
//!
//! A request is `name=value` lines and an empty line; the answer is
//! `action=...` (any other attributes ignored) and an empty line. One connection
//! serves a whole SMTP session and more; on trouble the request is tried again
//! on a fresh connection, and after `try_limit` failures the configured default
//! action stands in for the answer (Postfix 3.0's
//! smtpd_policy_service_default_action).
//!
//! The action is one of what a Postfix access(5) table may say, parsed into a
//! [`PolicyAction`]; what each means for the SMTP stage is the session's to
//! decide (milter-keys.md in the project notes has the table).

use std::fmt;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::endpoint::{self, Endpoint, Stream};
use crate::smtp::status::{split_esc, Status};
use crate::smtp::xtext;

/// The SMTP stage a request is about (`protocol_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolState {
    Connect,
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    EndOfMessage,
    Vrfy,
    Etrn,
}

impl ProtocolState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolState::Connect => "CONNECT",
            ProtocolState::Ehlo => "EHLO",
            ProtocolState::Helo => "HELO",
            ProtocolState::Mail => "MAIL",
            ProtocolState::Rcpt => "RCPT",
            ProtocolState::Data => "DATA",
            ProtocolState::EndOfMessage => "END-OF-MESSAGE",
            ProtocolState::Vrfy => "VRFY",
            ProtocolState::Etrn => "ETRN",
        }
    }

    /// `rcpt`, `RCPT`, `end-of-message`... as in a config file.
    pub fn parse(s: &str) -> Option<ProtocolState> {
        let all = [
            ProtocolState::Connect,
            ProtocolState::Ehlo,
            ProtocolState::Helo,
            ProtocolState::Mail,
            ProtocolState::Rcpt,
            ProtocolState::Data,
            ProtocolState::EndOfMessage,
            ProtocolState::Vrfy,
            ProtocolState::Etrn,
        ];
        all.into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl fmt::Display for ProtocolState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the session knows, sent as a policy request. Empty strings and zeros are
/// sent as such: the README says an unavailable value is sent empty or zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRequest {
    pub protocol_state: ProtocolState,
    /// `SMTP` or `ESMTP`.
    pub protocol_name: String,
    pub helo_name: String,
    pub queue_id: String,
    /// Without brackets; "" for the null sender.
    pub sender: String,
    /// The recipient at RCPT (and at DATA/END-OF-MESSAGE with only one).
    pub recipient: String,
    /// Recipients accepted, at DATA and END-OF-MESSAGE only (else 0).
    pub recipient_count: u32,
    pub client_address: String,
    pub client_name: String,
    pub client_port: String,
    pub reverse_client_name: String,
    pub server_address: String,
    pub server_port: String,
    /// The same for every request about one message.
    pub instance: String,
    /// SIZE= at MAIL, the real size at END-OF-MESSAGE (0 if unknown).
    pub size: u64,
    pub sasl_method: String,
    pub sasl_username: String,
    pub sasl_sender: String,
    /// A verified client certificate's subject and issuer common names (sent
    /// xtext-encoded, as Postfix does).
    pub ccert_subject: String,
    pub ccert_issuer: String,
    pub ccert_fingerprint: String,
    pub ccert_pubkey_fingerprint: String,
    /// TLS: e.g. `TLSv1.3`, `TLS_AES_256_GCM_SHA384`, 256; empty and 0 in plain text.
    pub encryption_protocol: String,
    pub encryption_cipher: String,
    pub encryption_keysize: u32,
    pub tls_sni: String,
    pub etrn_domain: String,
    /// "yes" under stress, else "".
    pub stress: String,
    /// The per-service `policy_context` setting.
    pub policy_context: String,
    /// e.g. `tern 0.1.0` (Postfix sends its own mail_version).
    pub mail_version: String,
}

impl PolicyRequest {
    /// A request with every attribute empty.
    pub fn new(state: ProtocolState) -> PolicyRequest {
        PolicyRequest {
            protocol_state: state,
            protocol_name: "SMTP".to_owned(),
            helo_name: String::new(),
            queue_id: String::new(),
            sender: String::new(),
            recipient: String::new(),
            recipient_count: 0,
            client_address: String::new(),
            client_name: String::new(),
            client_port: String::new(),
            reverse_client_name: String::new(),
            server_address: String::new(),
            server_port: String::new(),
            instance: String::new(),
            size: 0,
            sasl_method: String::new(),
            sasl_username: String::new(),
            sasl_sender: String::new(),
            ccert_subject: String::new(),
            ccert_issuer: String::new(),
            ccert_fingerprint: String::new(),
            ccert_pubkey_fingerprint: String::new(),
            encryption_protocol: String::new(),
            encryption_cipher: String::new(),
            encryption_keysize: 0,
            tls_sni: String::new(),
            etrn_domain: String::new(),
            stress: String::new(),
            policy_context: String::new(),
            mail_version: String::new(),
        }
    }

    /// The request on the wire, ending with the empty line.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        let mut put = |name: &str, value: &str| {
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            // A value must not contain a newline or NUL (README); anything a
            // client sent that would cut the request short becomes a space.
            out.extend(
                value
                    .bytes()
                    .map(|b| if matches!(b, b'\n' | b'\r' | 0) { b' ' } else { b }),
            );
            out.push(b'\n');
        };
        put("request", "smtpd_access_policy");
        put("protocol_state", self.protocol_state.as_str());
        put("protocol_name", &self.protocol_name);
        put("client_address", &self.client_address);
        put("client_name", &self.client_name);
        put("client_port", &self.client_port);
        put("reverse_client_name", &self.reverse_client_name);
        put("server_address", &self.server_address);
        put("server_port", &self.server_port);
        put("helo_name", &self.helo_name);
        put("sender", &self.sender);
        put("recipient", &self.recipient);
        put("recipient_count", &self.recipient_count.to_string());
        put("queue_id", &self.queue_id);
        put("instance", &self.instance);
        put("size", &self.size.to_string());
        put("etrn_domain", &self.etrn_domain);
        put("stress", &self.stress);
        put("sasl_method", &self.sasl_method);
        put("sasl_username", &self.sasl_username);
        put("sasl_sender", &self.sasl_sender);
        put("ccert_subject", &xtext::encode(&self.ccert_subject));
        put("ccert_issuer", &xtext::encode(&self.ccert_issuer));
        put("ccert_fingerprint", &self.ccert_fingerprint);
        put("ccert_pubkey_fingerprint", &self.ccert_pubkey_fingerprint);
        put("encryption_protocol", &self.encryption_protocol);
        put("encryption_cipher", &self.encryption_cipher);
        put("encryption_keysize", &self.encryption_keysize.to_string());
        put("tls_sni", &self.tls_sni);
        put("policy_context", &self.policy_context);
        put("mail_version", &self.mail_version);
        out.push(b'\n');
        out
    }
}

/// What a policy service answered: one of the actions of a Postfix access(5)
/// table (Postfix's check_table_result()). Words are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyAction {
    /// OK, RELAY, or an all-numeric answer: permit, skip the remaining checks.
    Ok,
    /// DUNNO: no opinion, go on with the next check.
    Dunno,
    /// REJECT [text]: refuse (554 5.7.1 by default).
    Reject(Option<String>),
    /// DEFER [text]: refuse temporarily (450 4.7.1).
    Defer(Option<String>),
    /// DEFER_IF_PERMIT [text]: refuse temporarily (450 4.7.1) unless a later
    /// check refuses permanently (postgrey's greylisting answer).
    DeferIfPermit(Option<String>),
    /// DEFER_IF_REJECT [text]: a later permanent refusal becomes 450 4.7.1.
    DeferIfReject(Option<String>),
    /// `4NN text` or `5NN text`: refuse with this code.
    Code {
        code: u16,
        text: String,
    },
    /// PREPEND header: add this header field at the top of the message.
    Prepend(String),
    /// HOLD [text]: queue on hold.
    Hold(Option<String>),
    /// DISCARD [text]: accept and throw away.
    Discard(Option<String>),
    /// WARN text / INFO text: log, go on.
    Warn(String),
    Info(String),
    /// FILTER transport:destination, REDIRECT user@domain, BCC user@domain:
    /// Postfix delivery features tern does not have; go on, with a warning.
    Filter(String),
    Redirect(String),
    Bcc(String),
    /// Anything else (a Postfix restriction name, or a malformed action): tern
    /// cannot evaluate it; the session logs it and goes on (DUNNO).
    Other(String),
}

/// A refusal's code, enhanced code and text, with Postfix's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRefusal {
    pub code: u16,
    pub esc: Status,
    pub text: String,
}

impl PolicyRefusal {
    pub fn is_temporary(&self) -> bool {
        self.code < 500
    }

    /// Postfix's reply text, e.g. `<b@example.org>: Recipient address rejected:
    /// Greylisted` for `name` = the address and `class` = "Recipient address".
    pub fn describe(&self, name: &str, class: &str) -> String {
        format!("<{name}>: {class} rejected: {}", self.text)
    }
}

/// Postfix's access_map_reject_code and access_map_defer_code.
const REJECT_CODE: u16 = 554;
const DEFER_CODE: u16 = 450;

impl PolicyAction {
    /// Parse the value of `action=`.
    pub fn parse(value: &str) -> PolicyAction {
        let value = value.trim();
        let (word, text) = match value.find([' ', '\t']) {
            Some(i) => (
                value.get(..i).unwrap_or(value),
                value.get(i..).unwrap_or("").trim_start(),
            ),
            None => (value, ""),
        };
        let opt = || (!text.is_empty()).then(|| text.to_owned());
        let is = |w: &str| word.eq_ignore_ascii_case(w);
        if is("OK") || is("RELAY") {
            PolicyAction::Ok
        } else if is("DUNNO") {
            PolicyAction::Dunno
        } else if is("REJECT") {
            PolicyAction::Reject(opt())
        } else if is("DEFER") {
            PolicyAction::Defer(opt())
        } else if is("DEFER_IF_PERMIT") {
            PolicyAction::DeferIfPermit(opt())
        } else if is("DEFER_IF_REJECT") {
            PolicyAction::DeferIfReject(opt())
        } else if is("HOLD") {
            PolicyAction::Hold(opt())
        } else if is("DISCARD") {
            PolicyAction::Discard(opt())
        } else if is("WARN") {
            PolicyAction::Warn(text.to_owned())
        } else if is("INFO") {
            PolicyAction::Info(text.to_owned())
        } else if is("PREPEND") {
            // Postfix insists on "name: text".
            let header = text
                .split_once(':')
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| (33..=126).contains(&b)));
            if header {
                PolicyAction::Prepend(text.to_owned())
            } else {
                PolicyAction::Other(value.to_owned())
            }
        } else if is("FILTER") && text.contains(':') {
            PolicyAction::Filter(text.to_owned())
        } else if is("REDIRECT") && text.contains('@') {
            PolicyAction::Redirect(text.to_owned())
        } else if is("BCC") && text.contains('@') {
            PolicyAction::Bcc(text.to_owned())
        } else if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            // Postfix: "some out-of-band authentication mechanism uses this as time stamp".
            PolicyAction::Ok
        } else if let Some(code) = reply_code(word).filter(|_| !text.is_empty()) {
            PolicyAction::Code {
                code,
                text: text.to_owned(),
            }
        } else {
            PolicyAction::Other(value.to_owned())
        }
    }

    /// The refusal this action means when it decides (Postfix's texts: the
    /// action's own, or "Access denied" / "Service unavailable"); None for the
    /// actions that do not refuse.
    pub fn refusal(&self) -> Option<PolicyRefusal> {
        let (code, text, default) = match self {
            PolicyAction::Reject(t) => (REJECT_CODE, t.as_deref(), "Access denied"),
            PolicyAction::Defer(t) => (DEFER_CODE, t.as_deref(), "Access denied"),
            PolicyAction::DeferIfPermit(t) | PolicyAction::DeferIfReject(t) => {
                (DEFER_CODE, t.as_deref(), "Service unavailable")
            }
            PolicyAction::Code { code, text } => (*code, Some(text.as_str()), "Access denied"),
            _ => return None,
        };
        let class = u8::try_from(code / 100).unwrap_or(4);
        let (esc, text) = match text {
            Some(t) => {
                let (esc, rest) = split_esc(t.as_bytes());
                let rest = t.get(t.len().saturating_sub(rest.len())..).unwrap_or(t);
                (esc, rest)
            }
            None => (None, ""),
        };
        // The enhanced code follows the reply code's class (smtpd_dsn_fix()).
        let esc = match esc {
            Some(Status(_, s, d)) => Status(class, s, d),
            None => Status(class, 7, 1),
        };
        Some(PolicyRefusal {
            code,
            esc,
            text: if text.is_empty() {
                default.to_owned()
            } else {
                text.to_owned()
            },
        })
    }
}

/// `4NN`/`5NN`.
fn reply_code(word: &str) -> Option<u16> {
    let ok = word.len() == 3 && word.starts_with(['4', '5']) && word.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| word.parse().ok()).flatten()
}

/// One configured policy service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub endpoint: Endpoint,
    /// Stages it is asked at (Postfix: where check_policy_service is listed).
    pub stages: Vec<ProtocolState>,
    /// Connecting, sending and each answer (smtpd_policy_service_timeout, 100s).
    pub timeout: Duration,
    /// The action when the service fails (smtpd_policy_service_default_action).
    pub default_action: String,
    /// Attempts per request before the default action (try_limit, 2).
    pub try_limit: u32,
    /// Pause between attempts (retry_delay, 1s).
    pub retry_delay: Duration,
    /// Close a connection unused this long (max_idle, 300s).
    pub max_idle: Duration,
    /// Close a connection this old (max_ttl, 1000s).
    pub max_ttl: Duration,
    /// Requests per connection, 0 for no limit (request_limit).
    pub request_limit: u32,
    /// Sent as policy_context.
    pub policy_context: String,
}

/// Postfix's default for a failed policy service.
pub const DEFAULT_ACTION: &str = "451 4.3.5 Server configuration problem";

impl PolicySpec {
    pub fn new(endpoint: Endpoint) -> PolicySpec {
        PolicySpec {
            endpoint,
            stages: vec![ProtocolState::Rcpt],
            timeout: Duration::from_secs(100),
            default_action: DEFAULT_ACTION.to_owned(),
            try_limit: 2,
            retry_delay: Duration::from_secs(1),
            max_idle: Duration::from_secs(300),
            max_ttl: Duration::from_secs(1000),
            request_limit: 0,
            policy_context: String::new(),
        }
    }

    /// Parse a `policy_services` list: endpoints separated by commas or white
    /// space, each plain or `{ endpoint, name = value, ... }` with `stages`
    /// (space-separated states, e.g. `rcpt data`), `timeout`, `default_action`,
    /// `try_limit`, `retry_delay`, `max_idle`, `max_ttl`, `request_limit`,
    /// `policy_context`. Each starts as a copy of `defaults`.
    pub fn parse_list(
        list: &str,
        defaults: &PolicySpec,
        duration: &dyn Fn(&str) -> Option<Duration>,
    ) -> Result<Vec<PolicySpec>, String> {
        let place = |spec: &mut PolicySpec, e| spec.endpoint = e;
        endpoint::parse_specs(list, defaults, place, |spec, k, v| {
            let time = || duration(v).ok_or_else(|| format!("{k} = {v:?}: not a time"));
            let number = || v.parse::<u32>().map_err(|_| format!("{k} = {v:?}: not a number"));
            match k {
                "stages" => {
                    spec.stages = v
                        .split_whitespace()
                        .map(|s| ProtocolState::parse(s).ok_or_else(|| format!("{s:?}: not an SMTP stage")))
                        .collect::<Result<_, _>>()?;
                }
                "timeout" => spec.timeout = time()?,
                "default_action" => spec.default_action = v.to_owned(),
                "try_limit" => spec.try_limit = number()?.max(1),
                "retry_delay" => spec.retry_delay = time()?,
                "max_idle" => spec.max_idle = time()?,
                "max_ttl" => spec.max_ttl = time()?,
                "request_limit" => spec.request_limit = number()?,
                "policy_context" => spec.policy_context = v.to_owned(),
                _ => return Err(format!("{k:?}: unknown policy service setting")),
            }
            Ok(())
        })
    }
}

/// The largest answer read (Postfix's attribute lines are short; postgrey's
/// longest is a greylisting URL).
const MAX_ANSWER: usize = 64 * 1024;

/// A connection to one policy service, kept across requests.
#[derive(Debug)]
pub struct PolicyClient {
    spec: PolicySpec,
    conn: Option<Conn>,
}

#[derive(Debug)]
struct Conn {
    stream: Stream,
    opened: Instant,
    last_used: Instant,
    requests: u32,
    /// Bytes read past the last answer (a service should send none).
    buf: Vec<u8>,
}

impl PolicyClient {
    pub fn new(spec: PolicySpec) -> PolicyClient {
        PolicyClient { spec, conn: None }
    }

    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// Ask; on failure ask again on a fresh connection, up to `try_limit` times,
    /// then answer with the default action. Blocks at most about
    /// `try_limit` × (`timeout` + `retry_delay`).
    pub fn query(&mut self, req: &PolicyRequest) -> PolicyAction {
        let mut req = req.clone();
        if req.policy_context.is_empty() {
            req.policy_context.clone_from(&self.spec.policy_context);
        }
        let bytes = req.encode();
        let tries = self.spec.try_limit.max(1);
        for attempt in 1..=tries {
            match self.exchange(&bytes) {
                Ok(action) => return action,
                Err(e) => {
                    log::warn!(
                        "policy service {}: {e} (attempt {attempt} of {tries})",
                        self.spec.endpoint
                    );
                    if let Some(c) = self.conn.take() {
                        c.stream.shutdown();
                    }
                    if attempt < tries {
                        std::thread::sleep(self.spec.retry_delay);
                    }
                }
            }
        }
        PolicyAction::parse(&self.spec.default_action)
    }

    /// Close the connection (end of session, or shutdown).
    pub fn close(&mut self) {
        self.conn = None;
    }

    fn exchange(&mut self, request: &[u8]) -> io::Result<PolicyAction> {
        let now = Instant::now();
        let stale = self.conn.as_ref().is_some_and(|c| {
            now.duration_since(c.last_used) > self.spec.max_idle
                || now.duration_since(c.opened) > self.spec.max_ttl
                || (self.spec.request_limit > 0 && c.requests >= self.spec.request_limit)
        });
        if stale {
            self.conn = None;
        }
        let deadline = now + self.spec.timeout;
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let stream = self.spec.endpoint.connect(self.spec.timeout)?;
                self.conn.insert(Conn {
                    stream,
                    opened: now,
                    last_used: now,
                    requests: 0,
                    buf: Vec::new(),
                })
            }
        };
        conn.requests = conn.requests.saturating_add(1);
        conn.stream.set_timeout(Some(self.spec.timeout))?;
        conn.stream.write_all(request)?;
        let answer = read_answer(conn, deadline)?;
        conn.last_used = Instant::now();
        parse_answer(&answer)
    }
}

/// Read up to and including the empty line that ends an answer.
fn read_answer(conn: &mut Conn, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = answer_end(&conn.buf) {
            let rest = conn.buf.split_off(end);
            return Ok(std::mem::replace(&mut conn.buf, rest));
        }
        if conn.buf.len() > MAX_ANSWER {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "answer too long"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "timeout waiting for the answer",
            ));
        }
        conn.stream.set_timeout(Some(left))?;
        match conn.stream.read(&mut chunk) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed")),
            Ok(n) => conn.buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if endpoint::is_timeout(&e) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timeout waiting for the answer",
                ))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Where the answer's empty line ends: after "\n\n" (or "\r\n\r\n"), or at a
/// leading empty line.
fn answer_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            let line = buf.get(line_start..i).unwrap_or_default();
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

/// The action in an answer; an answer without one is a failure.
pub fn parse_answer(answer: &[u8]) -> io::Result<PolicyAction> {
    let text = String::from_utf8_lossy(answer);
    for line in text.lines() {
        if let Some((name, value)) = line.split_once('=') {
            if name.trim() == "action" {
                return Ok(PolicyAction::parse(value));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "answer without action=",
    ))
}

#[cfg(test)]
mod tests;
