//! One milter conversation: the MTA side of the Sendmail milter protocol for one
//! SMTP session and one milter, over a blocking socket, following Postfix's
//! milter8.c: the same states, the same replies to the same events, and the same
//! fall-back when the milter is down, slow or confused (`milter_default_action`).
//!
//! The session calls one method per SMTP stage and gets a [`Verdict`]; at the end
//! of a message it gets the verdict and the [`Modification`]s the milter asked for
//! ([`EomOutcome`]). A [`crate::milter::chain::Chain`] runs several milters in order.
//!
//! Time limits (Postfix's milter_*_timeout): `connect` for opening the socket,
//! `command` for negotiation and the envelope stages, `content` for headers, body
//! and end of message. Each reply the milter owes must arrive within the limit;
//! SMFIR_PROGRESS ("still working") starts the limit again.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::edit::{self, Message, Modification};
use super::protocol::{self as p, Command, Family, Negotiated, ProtocolSetting, ReplyText, Response, Stage};
use crate::endpoint::{self, Endpoint, Stream};

/// What a milter's answer means for the SMTP stage that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on (SMFIR_CONTINUE, or the milter is not involved).
    Continue,
    /// SMFIR_ACCEPT: go on, and this milter wants no more events for the
    /// connection (at CONNECT or HELO) or for the message (later).
    Accept,
    /// Refuse permanently (5xx).
    Reject(Refusal),
    /// Refuse temporarily (4xx).
    Tempfail(Refusal),
    /// Accept the message and throw it away (SMFIR_DISCARD).
    Discard,
    /// 421 and close the connection (SMFIR_SHUTDOWN, or milter_default_action
    /// = shutdown).
    Shutdown,
}

impl Verdict {
    /// Whether the SMTP stage goes on (Continue or Accept).
    pub fn is_go_on(&self) -> bool {
        matches!(self, Verdict::Continue | Verdict::Accept)
    }
}

/// Which words a refusal carries. The reply text itself is made by the session
/// from the catalog (smtp/reply.rs), except a milter's own reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// SMFIR_REJECT or SMFIR_TEMPFAIL: Postfix says `550 5.7.1 Command rejected`
    /// or `451 4.7.1 Service unavailable - try again later`.
    Plain,
    /// SMFIR_REPLYCODE: the milter's own reply.
    Custom(ReplyText),
    /// The milter is down, timed out or broke the protocol, and
    /// milter_default_action said reject or tempfail: `550 5.5.0 Service
    /// unavailable` or `451 4.7.1 Service unavailable - try again later`.
    Unavailable,
    /// The milter answered something tern cannot carry out (a malformed reply
    /// code, a header without a name...): `451 4.3.5 Server configuration
    /// problem - try again later`, temporary whatever the default action.
    Misconfigured,
    /// A replacement body larger than the limit: `552 5.3.4`.
    TooBig,
}

/// The end of a message for one milter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EomOutcome {
    pub verdict: Verdict,
    /// What the milter asked to change, in its order, in the spool's form.
    pub modifications: Vec<Modification>,
    /// SMFIR_QUARANTINE: hold the message (ternctl release), with this reason.
    pub quarantine: Option<String>,
}

impl EomOutcome {
    fn plain(verdict: Verdict) -> EomOutcome {
        EomOutcome {
            verdict,
            modifications: Vec::new(),
            quarantine: None,
        }
    }
}

/// tern.conf `milter_default_action`: what a milter that cannot be reached, times
/// out or breaks the protocol means for the rest of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultAction {
    /// 451: the client tries again later (Postfix's documented default).
    #[default]
    Tempfail,
    /// As if the milter were not configured.
    Accept,
    /// 550.
    Reject,
    /// 421 and close the connection.
    Shutdown,
}

impl DefaultAction {
    pub fn parse(s: &str) -> Result<DefaultAction, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tempfail" => Ok(DefaultAction::Tempfail),
            "accept" => Ok(DefaultAction::Accept),
            "reject" => Ok(DefaultAction::Reject),
            "shutdown" => Ok(DefaultAction::Shutdown),
            _ => Err(format!("{s:?}: expected tempfail, accept, reject or shutdown")),
        }
    }

    fn verdict(self) -> Verdict {
        match self {
            DefaultAction::Tempfail => Verdict::Tempfail(Refusal::Unavailable),
            DefaultAction::Accept => Verdict::Continue,
            DefaultAction::Reject => Verdict::Reject(Refusal::Unavailable),
            DefaultAction::Shutdown => Verdict::Shutdown,
        }
    }
}

/// Postfix's three milter time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// milter_connect_timeout: opening the socket.
    pub connect: Duration,
    /// milter_command_timeout: negotiation and each envelope stage.
    pub command: Duration,
    /// milter_content_timeout: each header, body chunk and the end of message.
    pub content: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(30),
            command: Duration::from_secs(30),
            content: Duration::from_secs(300),
        }
    }
}

/// The macro names sent at each stage (Postfix's milter_*_macros), unless the
/// milter asks for its own list at negotiation. Postfix's defaults, plus the
/// client and interface macros at CONNECT that Sendmail sends and some milters
/// read there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacroLists {
    pub connect: String,
    pub helo: String,
    pub mail: String,
    pub rcpt: String,
    pub data: String,
    pub eoh: String,
    pub eom: String,
    pub unknown: String,
}

impl Default for MacroLists {
    fn default() -> MacroLists {
        MacroLists {
            connect: "j {daemon_name} {daemon_addr} {daemon_port} {if_addr} v _ {client_addr} {client_port} \
                      {client_name} {client_ptr} {client_resolve}"
                .to_owned(),
            helo: "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer} {tls_sni}".to_owned(),
            mail: "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}"
                .to_owned(),
            rcpt: "i {rcpt_addr} {rcpt_host} {rcpt_mailer}".to_owned(),
            data: "i".to_owned(),
            eoh: "i".to_owned(),
            eom: "i".to_owned(),
            unknown: String::new(),
        }
    }
}

impl MacroLists {
    fn for_stage(&self, s: Stage) -> &str {
        match s {
            Stage::Connect => &self.connect,
            Stage::Helo => &self.helo,
            Stage::Mail => &self.mail,
            Stage::Rcpt => &self.rcpt,
            Stage::Data => &self.data,
            Stage::Eoh => &self.eoh,
            Stage::Eom => &self.eom,
        }
    }
}

/// One configured milter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterSpec {
    pub endpoint: Endpoint,
    pub timeouts: Timeouts,
    pub default_action: DefaultAction,
    pub protocol: ProtocolSetting,
    pub macros: MacroLists,
    /// The largest replacement body accepted (the session passes max_message_size).
    pub max_body: usize,
}

impl MilterSpec {
    pub fn new(endpoint: Endpoint) -> MilterSpec {
        MilterSpec {
            endpoint,
            timeouts: Timeouts::default(),
            default_action: DefaultAction::default(),
            protocol: ProtocolSetting::default(),
            macros: MacroLists::default(),
            max_body: 100 << 20,
        }
    }

    /// Parse a `milters` list: endpoints separated by commas or white space, each
    /// either plain or, as in Postfix, `{ endpoint, name = value, ... }` with the
    /// per-milter settings `connect_timeout`, `command_timeout`,
    /// `content_timeout`, `default_action` and `protocol`. Every milter starts as
    /// a copy of `defaults` (its endpoint replaced); `duration` parses a time
    /// value as tern.conf does.
    pub fn parse_list(
        list: &str,
        defaults: &MilterSpec,
        duration: &dyn Fn(&str) -> Option<Duration>,
    ) -> Result<Vec<MilterSpec>, String> {
        let mut out = Vec::new();
        for entry in endpoint::parse_list(list)? {
            let mut spec = defaults.clone();
            spec.endpoint = entry.endpoint;
            for (k, v) in &entry.settings {
                let time = || duration(v).ok_or_else(|| format!("{k} = {v:?}: not a time"));
                match k.as_str() {
                    "connect_timeout" => spec.timeouts.connect = time()?,
                    "command_timeout" => spec.timeouts.command = time()?,
                    "content_timeout" => spec.timeouts.content = time()?,
                    "default_action" => spec.default_action = DefaultAction::parse(v)?,
                    "protocol" => spec.protocol = ProtocolSetting::parse(v)?,
                    _ => return Err(format!("{k:?}: unknown milter setting")),
                }
            }
            out.push(spec);
        }
        Ok(out)
    }
}

/// The values of the Sendmail macros milters read, filled by the session as it
/// learns them. `None` is not sent (Postfix sends only macros with a value).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Macros {
    /// `j`: our host name.
    pub j: Option<String>,
    /// `{daemon_name}` (Postfix: milter_macro_daemon_name).
    pub daemon_name: Option<String>,
    /// `v`: the MTA and its version (Postfix: milter_macro_v).
    pub v: Option<String>,
    /// `{daemon_addr}`, `{daemon_port}`: the address the client connected to.
    pub daemon_addr: Option<String>,
    pub daemon_port: Option<String>,
    /// `{if_addr}`: Sendmail's name for the same address; `{daemon_addr}` when unset.
    pub if_addr: Option<String>,
    /// `{client_addr}`, `{client_port}`.
    pub client_addr: Option<String>,
    pub client_port: Option<String>,
    /// `{client_name}`: the verified name, or "unknown".
    pub client_name: Option<String>,
    /// `{client_ptr}`: the reverse-DNS name, or "unknown".
    pub client_ptr: Option<String>,
    /// `{client_resolve}`: OK, FAIL, FORGED or TEMP.
    pub client_resolve: Option<String>,
    /// `{client_connections}`.
    pub client_connections: Option<String>,
    /// `{tls_version}`, `{cipher}`, `{cipher_bits}`, `{tls_sni}`; `{cert_subject}` and
    /// `{cert_issuer}` only for a verified client certificate.
    pub tls_version: Option<String>,
    pub cipher: Option<String>,
    pub cipher_bits: Option<String>,
    pub tls_sni: Option<String>,
    pub cert_subject: Option<String>,
    pub cert_issuer: Option<String>,
    /// `i`: the queue id.
    pub queue_id: Option<String>,
    /// `{auth_type}`, `{auth_authen}`, `{auth_author}`: SASL mechanism, user, sender.
    pub auth_type: Option<String>,
    pub auth_authen: Option<String>,
    pub auth_author: Option<String>,
    /// `{mail_addr}`, `{mail_host}`, `{mail_mailer}`: the sender, its next hop and
    /// transport ("" for the null sender).
    pub mail_addr: Option<String>,
    pub mail_host: Option<String>,
    pub mail_mailer: Option<String>,
    /// `{rcpt_addr}`, `{rcpt_host}`, `{rcpt_mailer}`: the recipient of this RCPT,
    /// its next hop and transport (for a rejected recipient: its text, its enhanced
    /// code and "error").
    pub rcpt_addr: Option<String>,
    pub rcpt_host: Option<String>,
    pub rcpt_mailer: Option<String>,
    /// Any other name (with or without braces) and value: milter_macro_defaults,
    /// used when nothing above has a value.
    pub other: Vec<(String, String)>,
}

impl Macros {
    /// The value of macro `name` (`j`, `{j}`, `{daemon_name}`...).
    pub fn lookup(&self, name: &str) -> Option<Cow<'_, str>> {
        let bare = name
            .strip_prefix('{')
            .and_then(|n| n.strip_suffix('}'))
            .unwrap_or(name);
        let field = match bare {
            "j" => &self.j,
            "daemon_name" => &self.daemon_name,
            "v" => &self.v,
            "daemon_addr" => &self.daemon_addr,
            "daemon_port" => &self.daemon_port,
            "if_addr" => {
                if self.if_addr.is_some() {
                    &self.if_addr
                } else {
                    &self.daemon_addr
                }
            }
            "client_addr" => &self.client_addr,
            "client_port" => &self.client_port,
            "client_name" => &self.client_name,
            "client_ptr" => &self.client_ptr,
            "client_resolve" => &self.client_resolve,
            "client_connections" => &self.client_connections,
            "tls_version" => &self.tls_version,
            "cipher" => &self.cipher,
            "cipher_bits" => &self.cipher_bits,
            "tls_sni" => &self.tls_sni,
            "cert_subject" => &self.cert_subject,
            "cert_issuer" => &self.cert_issuer,
            "i" => &self.queue_id,
            "auth_type" => &self.auth_type,
            "auth_authen" => &self.auth_authen,
            "auth_author" => &self.auth_author,
            "mail_addr" => &self.mail_addr,
            "mail_host" => &self.mail_host,
            "mail_mailer" => &self.mail_mailer,
            "rcpt_addr" => &self.rcpt_addr,
            "rcpt_host" => &self.rcpt_host,
            "rcpt_mailer" => &self.rcpt_mailer,
            "_" => {
                return self
                    .underscore()
                    .map(Cow::Owned)
                    .or_else(|| self.other_value(bare))
            }
            _ => &None,
        };
        field
            .as_deref()
            .map(Cow::Borrowed)
            .or_else(|| self.other_value(bare))
    }

    fn other_value(&self, bare: &str) -> Option<Cow<'_, str>> {
        self.other
            .iter()
            .find(|(n, _)| n.strip_prefix('{').and_then(|n| n.strip_suffix('}')).unwrap_or(n) == bare)
            .map(|(_, v)| Cow::Borrowed(v.as_str()))
    }

    /// `_`: "ptr [addr]", with "(may be forged)" when the verified name differs
    /// (Postfix's smtpd_milter_eval()).
    fn underscore(&self) -> Option<String> {
        let addr = self.client_addr.as_deref()?;
        let ptr = self
            .client_ptr
            .as_deref()
            .or(self.client_name.as_deref())
            .unwrap_or("unknown");
        let mut s = format!("{ptr} [{addr}]");
        if let Some(name) = &self.client_name {
            if !name.eq_ignore_ascii_case(ptr) {
                s.push_str(" (may be forged)");
            }
        }
        Some(s)
    }

    /// The (name, value) pairs for a list of names, in list order.
    fn pairs(&self, names: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        names
            .split([' ', ',', '\t'])
            .filter(|n| !n.is_empty())
            .filter_map(|n| {
                self.lookup(n)
                    .map(|v| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            })
            .collect()
    }
}

/// Who connected, for SMFIC_CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectInfo {
    /// The client's verified name, or "unknown".
    pub hostname: String,
    /// None for mail not from the network (sendmail, `ternd -i` from a pipe).
    pub addr: Option<SocketAddr>,
}

impl ConnectInfo {
    /// Local submission: Postfix pretends localhost at 127.0.0.1 (MILTER_README,
    /// non-SMTP milters).
    pub fn local() -> ConnectInfo {
        ConnectInfo {
            hostname: "localhost".to_owned(),
            addr: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)),
        }
    }

    fn command(&self) -> Command {
        let Some(addr) = self.addr else {
            return Command::Connect {
                hostname: self.hostname.as_bytes().to_vec(),
                family: Family::Unknown,
                port: 0,
                address: Vec::new(),
            };
        };
        // Sendmail's form for a name that did not verify (milter8_conn_event()).
        let hostname = if self.hostname == "unknown" {
            format!("[{}]", addr.ip())
        } else {
            self.hostname.clone()
        };
        Command::Connect {
            hostname: hostname.into_bytes(),
            family: if addr.is_ipv4() {
                Family::Inet
            } else {
                Family::Inet6
            },
            port: addr.port(),
            address: addr.ip().to_string().into_bytes(),
        }
    }
}

/// The byte stream to a milter; a socket in use, anything in tests and fuzzing.
pub trait Transport: Read + Write + Send {
    /// Bound each following read and write (None: no limit).
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// Close both ways now.
    fn shutdown(&self);
    /// About to wait for a reply: acknowledge what arrives at once.
    fn ack_now(&self) {}
}

impl Transport for Stream {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        Stream::set_timeout(self, t)
    }

    fn shutdown(&self) {
        Stream::shutdown(self);
    }

    fn ack_now(&self) {
        Stream::ack_now(self);
    }
}

/// milter8.c's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected yet, or after QUIT.
    Closed,
    /// Connected; between messages or in the envelope.
    Envelope,
    /// Sending a message's content.
    Message,
    /// The milter accepted the connection: no more events.
    AcceptConnection,
    /// The milter accepted the message: no more events until the next one.
    AcceptMessage,
    /// The milter refused the connection: every stage gets `sticky`.
    RejectConnection,
    /// The milter failed: every stage gets `sticky` (the default action).
    Error,
}

/// How an exchange with the milter went wrong.
enum Failure {
    /// Socket, time-out or framing: the default action.
    Comm(String),
    /// An answer tern cannot carry out: 451 4.3.5 (accept: as if absent).
    Config(String),
}

/// One milter's conversation for one SMTP session.
pub struct Milter {
    spec: MilterSpec,
    name: String,
    conn: Option<Box<dyn Transport>>,
    state: State,
    /// The verdict every stage gets in Error and RejectConnection.
    sticky: Verdict,
    negotiated: Option<Negotiated>,
    /// After SMFIR_SKIP: the event not to send again until another one is sent.
    skip_event: Option<u8>,
    /// The message's content stages are over for this milter (it refused, or
    /// accepted early), with the verdict the end of message reports.
    message_done: Option<Verdict>,
    /// Bytes to the milter, gathered so that a macro packet and its event go in one write.
    out: Vec<u8>,
    /// Bytes from the milter not yet decoded (a milter may send several replies at once).
    inbuf: Vec<u8>,
}

impl fmt::Debug for Milter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Milter")
            .field("name", &self.name)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Milter {
    /// A milter not yet connected: [`Milter::connect`] opens the socket.
    pub fn new(spec: MilterSpec) -> Milter {
        let name = spec.endpoint.to_string();
        Milter {
            spec,
            name,
            conn: None,
            state: State::Closed,
            sticky: Verdict::Continue,
            negotiated: None,
            skip_event: None,
            message_done: None,
            out: Vec::new(),
            inbuf: Vec::new(),
        }
    }

    /// A milter over an already open transport ([`Milter::connect`] negotiates
    /// on it instead of opening a socket): for tests and the fuzz target.
    pub fn with_transport(spec: MilterSpec, t: Box<dyn Transport>) -> Milter {
        let mut m = Milter::new(spec);
        m.conn = Some(t);
        m
    }

    /// The endpoint, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What negotiation agreed (None before, or if it failed).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Whether the milter asked to see recipients tern rejected (SMFIP_RCPT_REJ).
    pub fn wants_rejected_recipients(&self) -> bool {
        self.usable() && self.steps() & p::SMFIP_RCPT_REJ != 0
    }

    /// Whether the milter still takes events in this session (Postfix's
    /// milter8_active()).
    pub fn usable(&self) -> bool {
        self.conn.is_some()
            && matches!(
                self.state,
                State::Envelope | State::Message | State::AcceptMessage
            )
    }

    /// The verdict for a stage that has no event of its own (AUTH, STARTTLS...):
    /// the sticky refusal of a failed or refusing milter, else Continue.
    pub fn other(&self) -> Verdict {
        match self.state {
            State::Error | State::RejectConnection => self.sticky.clone(),
            _ => Verdict::Continue,
        }
    }

    fn steps(&self) -> u32 {
        self.negotiated.as_ref().map_or(0, |n| n.steps)
    }

    fn leading_space(&self) -> bool {
        self.negotiated.as_ref().is_some_and(Negotiated::leading_space)
    }

    /// SMTP connect: open the socket, negotiate, send CONNECT.
    pub fn connect(&mut self, info: &ConnectInfo, macros: &Macros) -> Verdict {
        if self.state != State::Closed {
            return self.other();
        }
        if let Err(f) = self.open() {
            return self.fail(f);
        }
        self.state = State::Envelope;
        let r = self.event(
            info.command(),
            p::SMFIP_NOCONNECT,
            p::SMFIP_NR_CONN,
            Some(Stage::Connect),
            macros,
        );
        self.connection_event_result(r)
    }

    fn open(&mut self) -> Result<(), Failure> {
        if self.conn.is_none() {
            let s = self
                .spec
                .endpoint
                .connect(self.spec.timeouts.connect)
                .map_err(|e| Failure::Comm(format!("connect: {e}")))?;
            self.conn = Some(Box::new(s));
        }
        let offer = self.spec.protocol.optneg();
        self.send(Command::OptNeg(offer));
        let deadline = Instant::now() + self.spec.timeouts.command;
        self.flush(deadline)?;
        let answer = match self.read_response(deadline)? {
            Response::OptNeg(o) => o,
            other => {
                return Err(Failure::Comm(format!(
                    "unexpected reply '{}' in initial handshake",
                    char::from(other.code())
                )))
            }
        };
        let n = p::negotiate(&self.spec.protocol, &answer).map_err(|e| Failure::Comm(e.to_string()))?;
        self.negotiated = Some(n);
        Ok(())
    }

    /// HELO or EHLO.
    pub fn helo(&mut self, name: &str, macros: &Macros) -> Verdict {
        match self.state {
            State::Envelope | State::AcceptMessage => {
                let cmd = Command::Helo(name.as_bytes().to_vec());
                let r = self.event(cmd, p::SMFIP_NOHELO, p::SMFIP_NR_HELO, Some(Stage::Helo), macros);
                self.connection_event_result(r)
            }
            _ => self.other(),
        }
    }

    /// MAIL FROM: `args[0]` is `<sender>` as the client wrote it, then its ESMTP
    /// parameters (`SIZE=1000`...).
    pub fn mail(&mut self, args: &[&str], macros: &Macros) -> Verdict {
        if self.state == State::AcceptMessage {
            // A new transaction without abort(): end the old one as Postfix would.
            self.abort();
        }
        match self.state {
            State::Envelope => {
                let cmd = Command::Mail(args.iter().map(|a| a.as_bytes().to_vec()).collect());
                let r = self.event(cmd, p::SMFIP_NOMAIL, p::SMFIP_NR_MAIL, Some(Stage::Mail), macros);
                self.envelope_event_result(r)
            }
            _ => self.other(),
        }
    }

    /// RCPT TO: `args[0]` is `<recipient>`, then its ESMTP parameters.
    pub fn rcpt(&mut self, args: &[&str], macros: &Macros) -> Verdict {
        match self.state {
            State::Envelope => {
                let cmd = Command::Rcpt(args.iter().map(|a| a.as_bytes().to_vec()).collect());
                let r = self.event(cmd, p::SMFIP_NORCPT, p::SMFIP_NR_RCPT, Some(Stage::Rcpt), macros);
                self.envelope_event_result(r)
            }
            _ => self.other(),
        }
    }

    /// DATA.
    pub fn data(&mut self, macros: &Macros) -> Verdict {
        match self.state {
            State::Envelope => {
                let r = self.event(
                    Command::Data,
                    p::SMFIP_NODATA,
                    p::SMFIP_NR_DATA,
                    Some(Stage::Data),
                    macros,
                );
                self.envelope_event_result(r)
            }
            _ => self.other(),
        }
    }

    /// A command tern does not know (the whole line).
    pub fn unknown(&mut self, line: &str, macros: &Macros) -> Verdict {
        match self.state {
            State::Envelope => {
                let cmd = Command::Unknown(line.as_bytes().to_vec());
                // Postfix's milter_unknown_command_macros; no SMFIM_ stage of its own.
                let names = self.spec.macros.unknown.clone();
                let r = self.event_with(cmd, p::SMFIP_NOUNKNOWN, p::SMFIP_NR_UNKN, &names, macros);
                self.envelope_event_result(r)
            }
            _ => self.other(),
        }
    }

    /// Whether content stages go to the milter; starts the message on first use.
    fn in_message(&mut self) -> Option<Verdict> {
        if let Some(v) = &self.message_done {
            return Some(v.clone());
        }
        match self.state {
            State::Envelope => {
                self.state = State::Message;
                None
            }
            State::Message => None,
            State::AcceptMessage | State::AcceptConnection => Some(Verdict::Accept),
            _ => Some(self.other()),
        }
    }

    /// One header field: its name, and its value in the spool's form (the
    /// leading space is removed unless the milter negotiated SMFIP_HDR_LEADSPC).
    pub fn header(&mut self, name: &str, value: &[u8], macros: &Macros) -> Verdict {
        if let Some(v) = self.in_message() {
            return v;
        }
        let value = edit::header_value_for_milter(value, self.leading_space()).to_vec();
        let cmd = Command::Header {
            name: name.as_bytes().to_vec(),
            value,
        };
        let r = self.event(cmd, p::SMFIP_NOHDRS, p::SMFIP_NR_HDR, Some(Stage::Eoh), macros);
        self.content_event_result(r)
    }

    /// End of headers.
    pub fn eoh(&mut self, macros: &Macros) -> Verdict {
        if let Some(v) = self.in_message() {
            return v;
        }
        let r = self.event(
            Command::Eoh,
            p::SMFIP_NOEOH,
            p::SMFIP_NR_EOH,
            Some(Stage::Eoh),
            macros,
        );
        self.content_event_result(r)
    }

    /// Body bytes, CRLF line ends (see [`edit::body_for_milter`]); sent in chunks
    /// of at most 65535 bytes.
    pub fn body(&mut self, bytes: &[u8], macros: &Macros) -> Verdict {
        for chunk in bytes.chunks(p::MILTER_CHUNK_SIZE) {
            if let Some(v) = self.in_message() {
                return v;
            }
            let cmd = Command::Body(chunk.to_vec());
            let r = self.event(cmd, p::SMFIP_NOBODY, p::SMFIP_NR_BODY, Some(Stage::Eom), macros);
            let v = self.content_event_result(r);
            if !matches!(v, Verdict::Continue) || self.skip_event == Some(p::SMFIC_BODY) {
                return v;
            }
        }
        Verdict::Continue
    }

    /// End of message: the verdict and the modifications.
    pub fn eom(&mut self, macros: &Macros) -> EomOutcome {
        let outcome = match self.in_message() {
            Some(v) => EomOutcome::plain(v),
            None => self.eom_exchange(macros),
        };
        if matches!(self.state, State::Message | State::AcceptMessage) {
            self.state = State::Envelope;
        }
        self.message_done = None;
        self.skip_event = None;
        outcome
    }

    /// Send a whole message: every field the milter may see, end of headers, the
    /// body, end of message. Steps the milter declined are not sent at all.
    pub fn message(&mut self, msg: &Message, macros: &Macros) -> EomOutcome {
        let steps = self.steps();
        if steps & p::SMFIP_NOHDRS == 0 {
            // header() takes the stored value and removes the space itself.
            for f in msg.fields.iter().filter(|f| !f.hidden) {
                if !self.header(f.label(), &f.value, macros).is_go_on() {
                    break;
                }
            }
        }
        if steps & p::SMFIP_NOEOH == 0 {
            self.eoh(macros);
        }
        if steps & p::SMFIP_NOBODY == 0 {
            self.body(&edit::body_for_milter(&msg.body), macros);
        }
        self.eom(macros)
    }

    /// End the transaction (RSET, a new MAIL, a refused or finished message).
    /// Nothing is read back: SMFIC_ABORT has no reply.
    pub fn abort(&mut self) {
        self.message_done = None;
        self.skip_event = None;
        if matches!(
            self.state,
            State::Envelope | State::Message | State::AcceptMessage
        ) {
            self.send(Command::Abort);
            let deadline = Instant::now() + self.spec.timeouts.command;
            if let Err(f) = self.flush(deadline) {
                self.fail(f);
                return;
            }
            self.state = State::Envelope;
        }
    }

    /// The SMTP session is over: SMFIC_QUIT, then close.
    pub fn quit(&mut self) {
        if matches!(
            self.state,
            State::Envelope | State::Message | State::AcceptMessage
        ) {
            self.send(Command::Quit);
            let deadline = Instant::now() + self.spec.timeouts.command;
            let _ = self.flush(deadline);
        }
        self.close();
        self.state = State::Closed;
        self.sticky = Verdict::Continue;
    }

    // ---- Results per kind of stage (milter8.c) ------------------------------

    /// CONNECT and HELO: an accept or a refusal covers the whole connection, and
    /// the milter's socket closes (libmilter closes its end too).
    fn connection_event_result(&mut self, r: Result<Exchange, Failure>) -> Verdict {
        match r {
            Err(f) => self.fail(f),
            Ok(Exchange { verdict, .. }) => match verdict {
                Verdict::Continue => Verdict::Continue,
                Verdict::Accept => {
                    self.close();
                    self.state = State::AcceptConnection;
                    Verdict::Accept
                }
                Verdict::Discard => {
                    log::warn!(
                        "milter {}: DISCARD action is not allowed for connect or helo",
                        self.name
                    );
                    Verdict::Continue
                }
                refusal => {
                    self.close();
                    self.state = State::RejectConnection;
                    self.sticky = refusal.clone();
                    refusal
                }
            },
        }
    }

    /// MAIL, RCPT, DATA, unknown commands: an accept covers the message.
    fn envelope_event_result(&mut self, r: Result<Exchange, Failure>) -> Verdict {
        match r {
            Err(f) => self.fail(f),
            Ok(Exchange { verdict, .. }) => {
                if verdict == Verdict::Accept {
                    self.state = State::AcceptMessage;
                }
                if verdict == Verdict::Shutdown {
                    self.close();
                    self.state = State::RejectConnection;
                    self.sticky = Verdict::Shutdown;
                }
                verdict
            }
        }
    }

    /// Headers, end of headers, body: anything but Continue ends the content
    /// stages for this milter, and the end of message reports it.
    fn content_event_result(&mut self, r: Result<Exchange, Failure>) -> Verdict {
        let v = match r {
            Err(f) => self.fail(f),
            Ok(e) => e.verdict,
        };
        match &v {
            Verdict::Continue => {}
            Verdict::Accept => {
                self.state = State::AcceptMessage;
                self.message_done = Some(Verdict::Accept);
            }
            Verdict::Shutdown => {
                self.close();
                self.state = State::RejectConnection;
                self.sticky = Verdict::Shutdown;
                self.message_done = Some(Verdict::Shutdown);
            }
            other => self.message_done = Some(other.clone()),
        }
        v
    }

    fn eom_exchange(&mut self, macros: &Macros) -> EomOutcome {
        // End of message is always answered (there is no SMFIP_NR_ flag for it).
        match self.event(Command::BodyEob, 0, 0, Some(Stage::Eom), macros) {
            Err(f) => EomOutcome::plain(self.fail(f)),
            Ok(e) => {
                if e.verdict == Verdict::Shutdown {
                    self.close();
                    self.state = State::RejectConnection;
                    self.sticky = Verdict::Shutdown;
                }
                EomOutcome {
                    verdict: e.verdict,
                    modifications: e.modifications,
                    quarantine: e.quarantine,
                }
            }
        }
    }

    /// The milter failed: close, remember the default action, return it.
    fn fail(&mut self, f: Failure) -> Verdict {
        let verdict = match f {
            Failure::Comm(why) => {
                log::warn!("milter {}: {why}", self.name);
                self.spec.default_action.verdict()
            }
            Failure::Config(why) => {
                log::warn!("milter {}: {why}", self.name);
                match self.spec.default_action {
                    DefaultAction::Accept => Verdict::Continue,
                    DefaultAction::Shutdown => Verdict::Shutdown,
                    DefaultAction::Tempfail | DefaultAction::Reject => {
                        Verdict::Tempfail(Refusal::Misconfigured)
                    }
                }
            }
        };
        if let Some(c) = &self.conn {
            c.shutdown();
        }
        self.close();
        self.state = State::Error;
        self.sticky = verdict.clone();
        verdict
    }

    fn close(&mut self) {
        self.conn = None;
        self.out.clear();
        self.inbuf.clear();
    }

    // ---- One event and its replies ---------------------------------------------

    fn event(
        &mut self,
        cmd: Command,
        no_flag: u32,
        nr_flag: u32,
        stage: Option<Stage>,
        macros: &Macros,
    ) -> Result<Exchange, Failure> {
        let names = match stage {
            Some(s) => self
                .negotiated
                .as_ref()
                .and_then(|n| n.symlists.get(s as usize).cloned().flatten())
                .unwrap_or_else(|| self.spec.macros.for_stage(s).to_owned()),
            None => String::new(),
        };
        self.event_with(cmd, no_flag, nr_flag, &names, macros)
    }

    /// Send the macros for `cmd`, then `cmd` unless the milter declined it, then
    /// read the replies unless it said it sends none (milter8_event()).
    fn event_with(
        &mut self,
        cmd: Command,
        no_flag: u32,
        nr_flag: u32,
        names: &str,
        macros: &Macros,
    ) -> Result<Exchange, Failure> {
        let code = cmd.code();
        let (steps, not_in_protocol) = self
            .negotiated
            .as_ref()
            .map_or((0, 0), |n| (n.steps, n.not_in_protocol));
        let go_on = Ok(Exchange::go_on());
        // Events the version we speak lacks: not even their macros.
        if no_flag & not_in_protocol != 0 {
            return go_on;
        }
        // SMFIR_SKIP covers further events of the same type only.
        match self.skip_event {
            Some(s) if s == code => return go_on,
            Some(_) => self.skip_event = None,
            None => {}
        }
        let content = matches!(
            code,
            p::SMFIC_HEADER | p::SMFIC_EOH | p::SMFIC_BODY | p::SMFIC_BODYEOB
        );
        let limit = if content {
            self.spec.timeouts.content
        } else {
            self.spec.timeouts.command
        };
        let pairs = macros.pairs(names);
        if !pairs.is_empty() {
            self.send(Command::Macro { cmd: code, pairs });
        }
        let declined = no_flag & steps != 0;
        if !declined {
            self.send(cmd);
        }
        self.flush(Instant::now() + limit)?;
        if declined || nr_flag & steps != 0 {
            return go_on;
        }
        self.replies(code, limit)
    }

    /// Read replies until one decides (milter8_event()'s loop).
    fn replies(&mut self, event: u8, limit: Duration) -> Result<Exchange, Failure> {
        let at_eom = event == p::SMFIC_BODYEOB;
        let leading = self.leading_space();
        let mut x = Exchange::go_on();
        let mut body: Option<Vec<u8>> = None;
        let mut body_done = false;
        let mut too_big = false;
        let mut deadline = Instant::now() + limit;
        loop {
            let resp = self.read_response(deadline)?;
            if body.is_some() && !matches!(resp, Response::ReplBody(_)) {
                // The replacement ends when anything else comes (milter8.c).
                if let Some(b) = body.take().filter(|_| !too_big) {
                    x.modifications
                        .push(Modification::ReplaceBody(edit::body_from_milter(&b)));
                }
                body_done = true;
            }
            let decided = match resp {
                Response::Progress => {
                    deadline = Instant::now() + limit;
                    continue;
                }
                Response::Continue => Verdict::Continue,
                Response::Accept => Verdict::Accept,
                Response::Discard => Verdict::Discard,
                Response::Reject => Verdict::Reject(Refusal::Plain),
                Response::Tempfail => Verdict::Tempfail(Refusal::Plain),
                Response::Shutdown => Verdict::Shutdown,
                Response::ReplyCode(text) => match p::parse_reply_text(&text) {
                    Some(r) if r.is_temporary() => Verdict::Tempfail(Refusal::Custom(r)),
                    Some(r) => Verdict::Reject(Refusal::Custom(r)),
                    None => {
                        return Err(Failure::Config(format!(
                            "malformed reply: {}",
                            String::from_utf8_lossy(&text)
                        )))
                    }
                },
                Response::Quarantine(reason) => {
                    // No state change: the milter goes on to its real answer.
                    let mut reason = String::from_utf8_lossy(&reason).into_owned();
                    reason.truncate(reason.char_indices().nth(100).map_or(reason.len(), |(i, _)| i));
                    x.quarantine = Some(reason);
                    continue;
                }
                Response::Skip => {
                    self.skip_event = Some(event);
                    Verdict::Continue
                }
                Response::ReplBody(chunk) if at_eom => {
                    if body_done {
                        return Err(Failure::Config(
                            "body replacement requests can't be mixed with other requests".to_owned(),
                        ));
                    }
                    let b = body.get_or_insert_with(Vec::new);
                    if b.len().saturating_add(chunk.len()) > self.spec.max_body {
                        // Like a queue file edit error in Postfix: read on to the
                        // milter's decision, so the conversation stays in step,
                        // and refuse this message only.
                        if !too_big {
                            log::warn!(
                                "milter {}: replacement body over {} bytes",
                                self.name,
                                self.spec.max_body
                            );
                        }
                        too_big = true;
                        b.clear();
                    } else if !too_big {
                        b.extend_from_slice(&chunk);
                    }
                    continue;
                }
                other if at_eom => match modification(other, leading) {
                    Ok(m) => {
                        x.modifications.push(m);
                        continue;
                    }
                    Err(f) => return Err(f),
                },
                other => {
                    return Err(Failure::Comm(format!(
                        "unexpected filter response '{}' after event '{}'",
                        char::from(other.code()),
                        char::from(event)
                    )))
                }
            };
            x.verdict = decided;
            if too_big {
                // milter8.c: the edit error stands unless the milter itself
                // discards, shuts down or fails temporarily.
                x.modifications.clear();
                if !matches!(
                    x.verdict,
                    Verdict::Discard | Verdict::Shutdown | Verdict::Tempfail(_)
                ) {
                    x.verdict = Verdict::Reject(Refusal::TooBig);
                }
            }
            return Ok(x);
        }
    }

    // ---- Bytes ----------------------------------------------------------------

    fn send(&mut self, cmd: Command) {
        cmd.encode(&mut self.out);
    }

    fn flush(&mut self, deadline: Instant) -> Result<(), Failure> {
        let out = std::mem::take(&mut self.out);
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Failure::Comm("not connected".to_owned()))?;
        let mut rest = out.as_slice();
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::Comm("timeout while writing".to_owned()));
            }
            conn.set_timeout(Some(left))
                .map_err(|e| Failure::Comm(format!("write: {e}")))?;
            match conn.write(rest) {
                Ok(0) => return Err(Failure::Comm("write: connection closed".to_owned())),
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if endpoint::is_timeout(&e) => {
                    return Err(Failure::Comm("timeout while writing".to_owned()))
                }
                Err(e) => return Err(Failure::Comm(format!("write: {e}"))),
            }
        }
        Ok(())
    }

    /// Read more of the milter's bytes before `deadline`. Each read waits only for
    /// the time left, so a milter dripping bytes cannot stretch the limit.
    fn fill(&mut self, deadline: Instant) -> Result<(), Failure> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Failure::Comm("not connected".to_owned()))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::Comm("timeout while reading a reply".to_owned()));
            }
            conn.set_timeout(Some(left))
                .map_err(|e| Failure::Comm(format!("read: {e}")))?;
            conn.ack_now();
            match conn.read(&mut chunk) {
                Ok(0) => {
                    return Err(Failure::Comm(
                        "connection closed while reading a reply".to_owned(),
                    ))
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if endpoint::is_timeout(&e) => {
                    return Err(Failure::Comm("timeout while reading a reply".to_owned()))
                }
                Err(e) => return Err(Failure::Comm(format!("read: {e}"))),
            }
        }
    }

    fn read_response(&mut self, deadline: Instant) -> Result<Response, Failure> {
        loop {
            let decoded = match p::split_packet(&self.inbuf) {
                Err(e) => return Err(Failure::Comm(e.to_string())),
                Ok(None) => None,
                Ok(Some(packet)) => Some((Response::decode(packet.cmd, packet.data), packet.size)),
            };
            match decoded {
                Some((r, size)) => {
                    self.inbuf.drain(..size.min(self.inbuf.len()));
                    return r.map_err(|e| Failure::Comm(e.to_string()));
                }
                None => self.fill(deadline)?,
            }
        }
    }
}

impl Drop for Milter {
    fn drop(&mut self) {
        // A session that ends without quit() still tells the milter.
        if self.conn.is_some() && self.state != State::Closed {
            self.quit();
        }
    }
}

/// What one event's replies came to.
struct Exchange {
    verdict: Verdict,
    modifications: Vec<Modification>,
    quarantine: Option<String>,
}

impl Exchange {
    fn go_on() -> Exchange {
        Exchange {
            verdict: Verdict::Continue,
            modifications: Vec::new(),
            quarantine: None,
        }
    }
}

/// A modification request in the spool's form, or why tern cannot carry it out.
fn modification(r: Response, leading_space: bool) -> Result<Modification, Failure> {
    let name = |n: Vec<u8>| -> Result<String, Failure> {
        match String::from_utf8(n) {
            Ok(s) if edit::is_field_name(&s) => Ok(s),
            Ok(s) => Err(Failure::Config(format!("bad header name {s:?}"))),
            Err(e) => Err(Failure::Config(format!(
                "bad header name {:?}",
                String::from_utf8_lossy(e.as_bytes())
            ))),
        }
    };
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let opt = |b: Option<Vec<u8>>| b.map(text).filter(|s| !s.is_empty());
    Ok(match r {
        Response::AddHeader { name: n, value } => Modification::AddHeader {
            name: name(n)?,
            value: edit::header_value_from_milter(&value, leading_space),
        },
        Response::InsHeader {
            index,
            name: n,
            value,
        } => Modification::InsertHeader {
            index,
            name: name(n)?,
            value: edit::header_value_from_milter(&value, leading_space),
        },
        Response::ChgHeader {
            index,
            name: n,
            value,
        } => Modification::ChangeHeader {
            index,
            name: name(n)?,
            // Empty means delete; keep it empty rather than " ".
            value: if value.is_empty() {
                Vec::new()
            } else {
                edit::header_value_from_milter(&value, leading_space)
            },
        },
        Response::AddRcpt(r) => Modification::AddRcpt {
            rcpt: text(r),
            args: None,
        },
        Response::AddRcptPar { rcpt, args } => Modification::AddRcpt {
            rcpt: text(rcpt),
            args: opt(args),
        },
        Response::DelRcpt(r) => Modification::DelRcpt(text(r)),
        Response::ChgFrom { sender, args } => Modification::ChangeFrom {
            sender: text(sender),
            args: opt(args),
        },
        other => {
            return Err(Failure::Comm(format!(
                "unexpected filter response '{}' at end of message",
                char::from(other.code())
            )))
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::milter::chain::Chain;
    use crate::milter::edit::{EnvelopeEdit, RcptEdit};
    use crate::milter::protocol::OptNeg;
    use std::os::unix::net::UnixStream;
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    /// What the fake milter does after a command.
    #[derive(Clone)]
    pub(crate) enum Step {
        Send(Response),
        Raw(Vec<u8>),
        Sleep(u64),
        Close,
    }
    use Step::{Close, Raw, Send, Sleep};

    /// A milter played by a thread on the other end of a socket pair: it answers
    /// OPTNEG with `answer`, then each command with what `script` says, and keeps
    /// every command it read.
    pub(crate) struct Fake {
        seen: Arc<Mutex<Vec<Command>>>,
        thread: Option<JoinHandle<()>>,
    }

    impl Fake {
        /// Every command the milter read, once the MTA side has closed.
        pub(crate) fn finish(mut self) -> Vec<Command> {
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
            self.seen.lock().unwrap().clone()
        }
    }

    fn read_command(s: &mut UnixStream) -> Option<Command> {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(h) as usize];
        s.read_exact(&mut body).ok()?;
        let (&cmd, data) = body.split_first()?;
        Some(Command::decode(cmd, data).expect("MTA sent a bad packet"))
    }

    pub(crate) fn fake(
        answer: OptNeg,
        mut script: impl FnMut(&Command) -> Vec<Step> + std::marker::Send + 'static,
    ) -> (Box<dyn Transport>, Fake) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        let thread = std::thread::spawn(move || {
            while let Some(cmd) = read_command(&mut theirs) {
                seen2.lock().unwrap().push(cmd.clone());
                let steps = match &cmd {
                    Command::OptNeg(_) => vec![Send(Response::OptNeg(answer.clone()))],
                    c => script(c),
                };
                for step in steps {
                    match step {
                        Send(r) => {
                            let mut out = Vec::new();
                            r.encode(&mut out);
                            if theirs.write_all(&out).is_err() {
                                return;
                            }
                        }
                        Raw(b) => {
                            let _ = theirs.write_all(&b);
                        }
                        Sleep(ms) => std::thread::sleep(Duration::from_millis(ms)),
                        Close => return,
                    }
                }
            }
        });
        (
            Box::new(Stream::Unix(ours)),
            Fake {
                seen,
                thread: Some(thread),
            },
        )
    }

    pub(crate) fn v6(actions: u32, protocol: u32) -> OptNeg {
        OptNeg {
            version: 6,
            actions,
            protocol,
            symlists: Vec::new(),
        }
    }

    /// Answer every event that expects a reply with Continue.
    pub(crate) fn continue_all(c: &Command) -> Vec<Step> {
        match c {
            Command::Macro { .. } | Command::Abort | Command::Quit | Command::QuitNc => vec![],
            _ => vec![Send(Response::Continue)],
        }
    }

    pub(crate) fn spec() -> MilterSpec {
        let mut s = MilterSpec::new(Endpoint::parse("unix:/nonexistent/test.sock").unwrap());
        s.timeouts = Timeouts {
            connect: Duration::from_secs(2),
            command: Duration::from_secs(5),
            content: Duration::from_secs(5),
        };
        s
    }

    pub(crate) fn macros() -> Macros {
        Macros {
            j: Some("mx.example.org".into()),
            daemon_name: Some("tern".into()),
            v: Some("tern 0.1.0".into()),
            daemon_addr: Some("192.0.2.25".into()),
            client_addr: Some("198.51.100.7".into()),
            client_port: Some("40000".into()),
            client_name: Some("client.example.com".into()),
            client_ptr: Some("client.example.com".into()),
            queue_id: Some("19A2B3C4D5E".into()),
            mail_addr: Some("a@example.com".into()),
            rcpt_addr: Some("b@example.org".into()),
            ..Macros::default()
        }
    }

    pub(crate) fn client() -> ConnectInfo {
        ConnectInfo {
            hostname: "client.example.com".into(),
            addr: Some("198.51.100.7:40000".parse().unwrap()),
        }
    }

    fn macro_names(seen: &[Command], for_cmd: u8) -> Vec<String> {
        seen.iter()
            .filter_map(|c| match c {
                Command::Macro { cmd, pairs } if *cmd == for_cmd => Some(pairs),
                _ => None,
            })
            .flatten()
            .map(|(n, v)| format!("{}={}", String::from_utf8_lossy(n), String::from_utf8_lossy(v)))
            .collect()
    }

    fn codes(seen: &[Command]) -> String {
        seen.iter().map(|c| char::from(c.code())).collect()
    }

    const MSG: &[u8] =
        b"Received: by mx (tern)\nFrom: a@example.com\nSubject: hi\n\tthere\n\nline 1\nline 2\n";

    fn message() -> Message {
        let mut m = Message::parse(MSG);
        m.hide_first(1);
        m
    }

    #[test]
    fn a_whole_session_sends_what_postfix_sends() {
        let (t, f) = fake(v6(p::MTA_ACTIONS, 0), continue_all);
        let mut m = Milter::with_transport(spec(), t);
        let mac = macros();
        assert_eq!(m.connect(&client(), &mac), Verdict::Continue);
        assert_eq!(m.helo("client.example.com", &mac), Verdict::Continue);
        assert_eq!(m.mail(&["<a@example.com>", "SIZE=100"], &mac), Verdict::Continue);
        assert_eq!(m.rcpt(&["<b@example.org>"], &mac), Verdict::Continue);
        assert_eq!(m.data(&mac), Verdict::Continue);
        let out = m.message(&message(), &mac);
        assert_eq!(out, EomOutcome::plain(Verdict::Continue));
        m.abort();
        m.quit();
        let seen = f.finish();
        assert_eq!(codes(&seen), "ODCHDMDRDTDLDLDNDBDEAQ");
        // CONNECT carries the name, the family, the port and the address.
        assert!(seen.contains(&Command::Connect {
            hostname: b"client.example.com".to_vec(),
            family: Family::Inet,
            port: 40000,
            address: b"198.51.100.7".to_vec(),
        }));
        // The macros Postfix sends at each stage, when they have a value.
        let conn = macro_names(&seen, p::SMFIC_CONNECT);
        for want in [
            "j=mx.example.org",
            "{daemon_name}=tern",
            "{daemon_addr}=192.0.2.25",
            "{if_addr}=192.0.2.25",
            "v=tern 0.1.0",
            "_=client.example.com [198.51.100.7]",
            "{client_addr}=198.51.100.7",
            "{client_port}=40000",
            "{client_name}=client.example.com",
        ] {
            assert!(conn.contains(&want.to_owned()), "{want} not in {conn:?}");
        }
        assert!(
            !conn.iter().any(|m| m.starts_with("{client_resolve}")),
            "unset: not sent"
        );
        assert_eq!(
            macro_names(&seen, p::SMFIC_MAIL),
            ["i=19A2B3C4D5E", "{mail_addr}=a@example.com"]
        );
        assert_eq!(
            macro_names(&seen, p::SMFIC_RCPT),
            ["i=19A2B3C4D5E", "{rcpt_addr}=b@example.org"]
        );
        assert!(seen.contains(&Command::Mail(vec![
            b"<a@example.com>".to_vec(),
            b"SIZE=100".to_vec()
        ])));
        // Our Received: is hidden; values lose their leading space; folds are \n.
        let headers: Vec<_> = seen
            .iter()
            .filter_map(|c| match c {
                Command::Header { name, value } => Some((name.clone(), value.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            headers,
            [
                (b"From".to_vec(), b"a@example.com".to_vec()),
                (b"Subject".to_vec(), b"hi\n\tthere".to_vec())
            ]
        );
        assert!(seen.contains(&Command::Body(b"line 1\r\nline 2\r\n".to_vec())));
    }

    #[test]
    fn leadspc_milters_get_and_give_the_space() {
        let (t, f) = fake(v6(p::SMFIF_ADDHDRS, p::SMFIP_HDR_LEADSPC), |c| match c {
            Command::BodyEob => vec![
                Send(Response::InsHeader {
                    index: 0,
                    name: b"DKIM-Signature".to_vec(),
                    value: b" v=1; a=rsa-sha256;\n\tb=abc".to_vec(),
                }),
                Send(Response::Continue),
            ],
            c => continue_all(c),
        });
        let mut m = Milter::with_transport(spec(), t);
        let mac = macros();
        m.connect(&client(), &mac);
        m.mail(&["<a@example.com>"], &mac);
        let out = m.message(&message(), &mac);
        assert_eq!(
            out.modifications,
            [Modification::InsertHeader {
                index: 0,
                name: "DKIM-Signature".into(),
                value: b" v=1; a=rsa-sha256;\n\tb=abc".to_vec(),
            }]
        );
        m.quit();
        let seen = f.finish();
        assert!(seen.contains(&Command::Header {
            name: b"Subject".to_vec(),
            value: b" hi\n\tthere".to_vec()
        }));
    }

    #[test]
    fn every_modification_is_collected_at_end_of_message() {
        let (t, f) = fake(v6(p::MTA_ACTIONS, 0), |c| match c {
            Command::BodyEob => vec![
                Send(Response::AddHeader {
                    name: b"X-Spam".to_vec(),
                    value: b"yes".to_vec(),
                }),
                Send(Response::InsHeader {
                    index: 1,
                    name: b"X-First".to_vec(),
                    value: b"1".to_vec(),
                }),
                Send(Response::ChgHeader {
                    index: 1,
                    name: b"Subject".to_vec(),
                    value: b"[SPAM] hi".to_vec(),
                }),
                Send(Response::ChgHeader {
                    index: 1,
                    name: b"From".to_vec(),
                    value: vec![],
                }),
                Send(Response::Progress),
                Send(Response::ReplBody(b"new body\r\n".to_vec())),
                Send(Response::ReplBody(b"second chunk\r\n".to_vec())),
                Send(Response::AddRcpt(b"<c@example.net>".to_vec())),
                Send(Response::AddRcptPar {
                    rcpt: b"<d@example.net>".to_vec(),
                    args: Some(b"NOTIFY=NEVER".to_vec()),
                }),
                Send(Response::DelRcpt(b"<b@example.org>".to_vec())),
                Send(Response::ChgFrom {
                    sender: b"<bounce@example.com>".to_vec(),
                    args: None,
                }),
                Send(Response::Quarantine(b"suspicious".to_vec())),
                Send(Response::Accept),
            ],
            c => continue_all(c),
        });
        let mut m = Milter::with_transport(spec(), t);
        let mac = macros();
        m.connect(&client(), &mac);
        m.mail(&["<a@example.com>"], &mac);
        m.rcpt(&["<b@example.org>"], &mac);
        let out = m.message(&message(), &mac);
        assert_eq!(out.verdict, Verdict::Accept);
        assert_eq!(out.quarantine.as_deref(), Some("suspicious"));
        let s = |x: &str| x.to_owned();
        assert_eq!(
            out.modifications,
            [
                Modification::AddHeader {
                    name: s("X-Spam"),
                    value: b" yes".to_vec()
                },
                Modification::InsertHeader {
                    index: 1,
                    name: s("X-First"),
                    value: b" 1".to_vec()
                },
                Modification::ChangeHeader {
                    index: 1,
                    name: s("Subject"),
                    value: b" [SPAM] hi".to_vec()
                },
                Modification::ChangeHeader {
                    index: 1,
                    name: s("From"),
                    value: vec![]
                },
                Modification::ReplaceBody(b"new body\nsecond chunk\n".to_vec()),
                Modification::AddRcpt {
                    rcpt: s("<c@example.net>"),
                    args: None
                },
                Modification::AddRcpt {
                    rcpt: s("<d@example.net>"),
                    args: Some(s("NOTIFY=NEVER"))
                },
                Modification::DelRcpt(s("<b@example.org>")),
                Modification::ChangeFrom {
                    sender: s("<bounce@example.com>"),
                    args: None
                },
            ]
        );
        // Applied, they make the message tern queues.
        let mut msg = message();
        let mut env = EnvelopeEdit {
            sender: s("a@example.com"),
            sender_args: None,
            recipients: vec![RcptEdit::new("b@example.org")],
        };
        assert!(edit::apply(&mut msg, &mut env, &out.modifications).is_empty());
        assert_eq!(
            msg.to_bytes(),
            b"Received: by mx (tern)\nX-First: 1\nSubject: [SPAM] hi\nX-Spam: yes\n\nnew body\nsecond chunk\n"
        );
        assert_eq!(env.sender, "bounce@example.com");
        let rcpts: Vec<_> = env.recipients.iter().map(|r| r.addr.as_str()).collect();
        assert_eq!(rcpts, ["c@example.net", "d@example.net"]);
        m.quit();
        f.finish();
    }

    #[test]
    fn no_reply_steps_are_not_waited_for_and_declined_events_not_sent() {
        let steps = p::SMFIP_NR_HDR | p::SMFIP_NR_CONN | p::SMFIP_NOHELO | p::SMFIP_NR_BODY | p::SMFIP_NOEOH;
        let (t, f) = fake(v6(0, steps), |c| match c {
            // Any reply here would desynchronise the conversation.
            Command::Connect { .. } | Command::Header { .. } | Command::Body(_) | Command::Helo(_) => vec![],
            c => continue_all(c),
        });
        let mut m = Milter::with_transport(spec(), t);
        let mac = macros();
        assert_eq!(m.connect(&client(), &mac), Verdict::Continue);
        assert_eq!(m.helo("h", &mac), Verdict::Continue);
        assert_eq!(m.mail(&["<a@example.com>"], &mac), Verdict::Continue);
        assert_eq!(m.message(&message(), &mac).verdict, Verdict::Continue);
        m.quit();
        let seen = f.finish();
        // HELO's macros go, HELO does not (no HELO macros have values here, so
        // nothing at all); no EOH.
        assert!(!seen.iter().any(|c| matches!(c, Command::Helo(_) | Command::Eoh)));
        assert_eq!(codes(&seen), "ODCDMDLDLDBDEQ");
    }

    #[test]
    fn large_bodies_go_in_chunks_and_skip_stops_them() {
        let body: Vec<u8> = b"0123456789abcdefghijklmnopqrstuvwxyz\n".repeat(5000);
        let mut msg = message();
        msg.body = body.clone();
        let (t, f) = fake(v6(0, p::SMFIP_SKIP), continue_all);
        let mut m = Milter::with_transport(spec(), t);
        let mac = macros();
        m.connect(&client(), &mac);
        m.mail(&["<a@example.com>"], &mac);
        m.message(&msg, &mac);
        m.quit();
        let seen = f.finish();
        let chunks: Vec<usize> = seen
            .iter()
            .filter_map(|c| match c {
                Command::Body(b) => Some(b.len()),
                _ => None,
            })
            .collect();
        let crlf = edit::body_for_milter(&body);
        assert_eq!(chunks, [65535, 65535, crlf.len() - 2 * 65535]);
        // With SMFIR_SKIP after the first chunk, the rest is not sent.
        let (t, f) = fake(v6(0, 0), |c| match c {
            Command::Body(_) => vec![Send(Response::Skip)],
            c => continue_all(c),
        });
        let mut m = Milter::with_transport(spec(), t);
        m.connect(&client(), &mac);
        m.mail(&["<a@example.com>"], &mac);
        assert_eq!(m.message(&msg, &mac).verdict, Verdict::Continue);
        m.quit();
        let seen = f.finish();
        assert_eq!(seen.iter().filter(|c| matches!(c, Command::Body(_))).count(), 1);
        assert!(seen.contains(&Command::BodyEob));
    }

    #[test]
    fn refusal_at_connect_is_sticky_and_closes() {
        let (t, f) = fake(v6(0, 0), |c| match c {
            Command::Connect { .. } => vec![Send(Response::Reject)],
            c => continue_all(c),
        });
        let mut m = Milter::with_transport(spec(), t);
        let mac = macros();
        let rej = Verdict::Reject(Refusal::Plain);
        assert_eq!(m.connect(&client(), &mac), rej);
        assert_eq!(m.helo("h", &mac), rej);
        assert_eq!(m.mail(&["<a@example.com>"], &mac), rej);
        assert_eq!(m.other(), rej);
        assert!(!m.usable());
        // The socket closed: the fake saw EOF after CONNECT.
        assert_eq!(codes(&f.finish()), "ODC");
    }

    #[test]
    fn accept_at_connect_ends_the_milters_part() {
        let (t, f) = fake(v6(0, 0), |c| match c {
            Command::Helo(_) => vec![Send(Response::Accept)],
            c => continue_all(c),
        });
        let mut m = Milter::with_transport(spec(), t);
        let mac = macros();
        m.connect(&client(), &mac);
        assert_eq!(m.helo("h", &mac), Verdict::Accept);
        assert_eq!(m.mail(&["<a@example.com>"], &mac), Verdict::Continue);
        assert_eq!(m.message(&message(), &mac).verdict, Verdict::Accept);
        assert_eq!(codes(&f.finish()), "ODCH");
    }

    #[test]
    fn envelope_refusals_and_custom_replies() {
        let (t, f) = fake(v6(0, 0), |c| match c {
            Command::Rcpt(a) if a[0] == b"<temp@example.org>" => vec![Send(Response::Tempfail)],
            Command::Rcpt(a) if a[0] == b"<custom@example.org>" => {
                vec![Send(Response::ReplyCode(
                    b"550-5.1.1 No such user\r\n550 5.1.1 really".to_vec(),
                ))]
            }
            Command::Rcpt(a) if a[0] == b"<busy@example.org>" => {
                vec![Send(Response::ReplyCode(b"452 4.2.2 Over quota".to_vec()))]
            }
            c => continue_all(c),
        });
        let mut m = Milter::with_transport(spec(), t);
        let mac = macros();
        m.connect(&client(), &mac);
        m.mail(&["<a@example.com>"], &mac);
        assert_eq!(
            m.rcpt(&["<temp@example.org>"], &mac),
            Verdict::Tempfail(Refusal::Plain)
        );
        let Verdict::Reject(Refusal::Custom(r)) = m.rcpt(&["<custom@example.org>"], &mac) else {
            panic!("not a custom reject");
        };
        assert_eq!(
            (r.code, r.esc, r.lines.len()),
            (550, Some(crate::smtp::status::Status(5, 1, 1)), 2)
        );
        let Verdict::Tempfail(Refusal::Custom(r)) = m.rcpt(&["<busy@example.org>"], &mac) else {
            panic!("not a custom tempfail");
        };
        assert_eq!(r.code, 452);
        // A refused recipient does not end the transaction.
        assert_eq!(m.rcpt(&["<b@example.org>"], &mac), Verdict::Continue);
        m.quit();
        assert_eq!(codes(&f.finish()), "ODCDMDRDRDRDRQ");
    }

    #[test]
    fn a_malformed_reply_code_is_a_configuration_error() {
        let (t, f) = fake(v6(0, 0), |c| match c {
            Command::Mail(_) => vec![Send(Response::ReplyCode(b"250 looks fine".to_vec()))],
            c => continue_all(c),
        });
        let mut m = Milter::with_transport(spec(), t);
        let mac = macros();
        m.connect(&client(), &mac);
        let v = Verdict::Tempfail(Refusal::Misconfigured);
        assert_eq!(m.mail(&["<a@example.com>"], &mac), v);
        assert_eq!(m.rcpt(&["<b@example.org>"], &mac), v, "sticky");
        f.finish();
    }

    #[test]
    fn a_silent_milter_costs_the_timeout_then_the_default_action() {
        for (action, want) in [
            (DefaultAction::Tempfail, Verdict::Tempfail(Refusal::Unavailable)),
            (DefaultAction::Reject, Verdict::Reject(Refusal::Unavailable)),
            (DefaultAction::Accept, Verdict::Continue),
            (DefaultAction::Shutdown, Verdict::Shutdown),
        ] {
            let (t, f) = fake(v6(0, 0), |c| match c {
                Command::Rcpt(_) => vec![Sleep(600)],
                c => continue_all(c),
            });
            let mut sp = spec();
            sp.timeouts.command = Duration::from_millis(200);
            sp.default_action = action;
            let mut m = Milter::with_transport(sp, t);
            let mac = macros();
            m.connect(&client(), &mac);
            m.mail(&["<a@example.com>"], &mac);
            let start = Instant::now();
            assert_eq!(m.rcpt(&["<b@example.org>"], &mac), want);
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(190) && took < Duration::from_secs(2),
                "{took:?}"
            );
            // From now on nothing is sent, and every stage gets the same.
            assert_eq!(m.data(&mac), want);
            assert_eq!(m.message(&message(), &mac).verdict, want);
            drop(m);
            assert_eq!(codes(&f.finish()), "ODCDMDR");
        }
    }

    #[test]
    fn progress_restarts_the_clock() {
        let (t, f) = fake(v6(0, 0), |c| match c {
            Command::BodyEob => vec![
                Sleep(150),
                Send(Response::Progress),
                Sleep(150),
                Send(Response::Progress),
                Sleep(150),
                Send(Response::Continue),
            ],
            c => continue_all(c),
        });
        let mut sp = spec();
        sp.timeouts.content = Duration::from_millis(300);
        let mut m = Milter::with_transport(sp, t);
        let mac = macros();
        m.connect(&client(), &mac);
        m.mail(&["<a@example.com>"], &mac);
        assert_eq!(m.message(&message(), &mac).verdict, Verdict::Continue);
        m.quit();
        f.finish();
    }

    #[test]
    fn a_milter_that_is_down_gets_the_default_action_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut sp = spec();
        sp.endpoint = Endpoint::Unix(dir.path().join("none.sock"));
        let mut m = Milter::new(sp.clone());
        let start = Instant::now();
        assert_eq!(
            m.connect(&client(), &macros()),
            Verdict::Tempfail(Refusal::Unavailable)
        );
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(m.helo("h", &macros()), Verdict::Tempfail(Refusal::Unavailable));
        sp.default_action = DefaultAction::Accept;
        let mut m = Milter::new(sp);
        assert_eq!(m.connect(&client(), &macros()), Verdict::Continue);
        assert_eq!(m.mail(&["<a@example.com>"], &macros()), Verdict::Continue);
    }

    #[test]
    fn protocol_violations_are_communication_errors() {
        let cases: Vec<(&str, Vec<Step>)> = vec![
            ("huge length", vec![Raw(b"\x7f\xff\xff\xff".to_vec())]),
            ("zero length", vec![Raw(b"\0\0\0\0".to_vec())]),
            ("unknown reply", vec![Raw(b"\0\0\0\x01Z".to_vec())]),
            ("data after continue", vec![Raw(b"\0\0\0\x02cX".to_vec())]),
            (
                "modification before end of message",
                vec![Send(Response::AddHeader {
                    name: b"X".to_vec(),
                    value: b"y".to_vec(),
                })],
            ),
            ("closed", vec![Close]),
            (
                "half a packet then closed",
                vec![Raw(b"\0\0\0\x09h".to_vec()), Close],
            ),
        ];
        for (what, steps) in cases {
            let (t, f) = fake(v6(0, 0), move |c| match c {
                Command::Mail(_) => steps.clone(),
                c => continue_all(c),
            });
            let mut m = Milter::with_transport(spec(), t);
            let mac = macros();
            m.connect(&client(), &mac);
            assert_eq!(
                m.mail(&["<a@example.com>"], &mac),
                Verdict::Tempfail(Refusal::Unavailable),
                "{what}"
            );
            drop(m);
            f.finish();
        }
    }

    #[test]
    fn bad_modifications_are_configuration_errors() {
        let cases: Vec<(&str, Vec<Step>, Verdict)> = vec![
            (
                "header name with a colon",
                vec![Send(Response::AddHeader {
                    name: b"X-A: b".to_vec(),
                    value: b"c".to_vec(),
                })],
                Verdict::Tempfail(Refusal::Misconfigured),
            ),
            (
                "empty header name",
                vec![Send(Response::ChgHeader {
                    index: 1,
                    name: vec![],
                    value: b"c".to_vec(),
                })],
                Verdict::Tempfail(Refusal::Misconfigured),
            ),
            (
                "body replacement interleaved",
                vec![
                    Send(Response::ReplBody(b"a\r\n".to_vec())),
                    Send(Response::AddRcpt(b"<c@example.net>".to_vec())),
                    Send(Response::ReplBody(b"b\r\n".to_vec())),
                ],
                Verdict::Tempfail(Refusal::Misconfigured),
            ),
        ];
        for (what, steps, want) in cases {
            let (t, f) = fake(v6(p::MTA_ACTIONS, 0), move |c| match c {
                Command::BodyEob => steps.clone(),
                c => continue_all(c),
            });
            let mut sp = spec();
            sp.max_body = 1000;
            let mut m = Milter::with_transport(sp, t);
            let mac = macros();
            m.connect(&client(), &mac);
            m.mail(&["<a@example.com>"], &mac);
            let out = m.message(&message(), &mac);
            assert_eq!(out.verdict, want, "{what}");
            assert!(out.modifications.is_empty(), "{what}");
            drop(m);
            f.finish();
        }
    }

    #[test]
    fn a_replacement_body_over_the_limit_refuses_only_that_message() {
        let (t, f) = fake(v6(p::MTA_ACTIONS, 0), |c| match c {
            Command::BodyEob => vec![
                Send(Response::ReplBody(vec![b'x'; 600])),
                Send(Response::ReplBody(vec![b'x'; 600])),
                Send(Response::AddHeader {
                    name: b"X-A".to_vec(),
                    value: b"1".to_vec(),
                }),
                Send(Response::Continue),
            ],
            c => continue_all(c),
        });
        let mut sp = spec();
        sp.max_body = 1000;
        let mut m = Milter::with_transport(sp, t);
        let mac = macros();
        m.connect(&client(), &mac);
        m.mail(&["<a@example.com>"], &mac);
        let out = m.message(&message(), &mac);
        assert_eq!(out.verdict, Verdict::Reject(Refusal::TooBig));
        assert!(out.modifications.is_empty());
        // The conversation stayed in step: the next message goes through.
        m.abort();
        assert_eq!(m.mail(&["<a@example.com>"], &mac), Verdict::Continue);
        assert!(m.usable());
        m.quit();
        assert_eq!(codes(&f.finish()).matches('E').count(), 1);
    }

    /// A transport that records whether each read was preceded by ack_now().
    struct Acking {
        inner: Box<dyn Transport>,
        log: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Read for Acking {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.log.lock().unwrap().push("read");
            self.inner.read(buf)
        }
    }

    impl Write for Acking {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    impl Transport for Acking {
        fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
            self.inner.set_timeout(t)
        }
        fn shutdown(&self) {
            self.inner.shutdown();
        }
        fn ack_now(&self) {
            self.log.lock().unwrap().push("ack");
        }
    }

    #[test]
    fn every_read_of_a_reply_asks_for_an_immediate_ack() {
        // libmilter writes a reply's packets one by one with Nagle on: unless we
        // ACK at once, each packet after the first waits ~40 ms for our delayed
        // ACK (measured with OpenDKIM: 45 ms a message instead of 1.5 ms).
        let (t, f) = fake(v6(p::SMFIF_ADDHDRS, 0), |c| match c {
            Command::BodyEob => vec![
                Send(Response::AddHeader {
                    name: b"X-A".to_vec(),
                    value: b"1".to_vec(),
                }),
                Sleep(20),
                Send(Response::Continue),
            ],
            c => continue_all(c),
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let acking = Acking {
            inner: t,
            log: Arc::clone(&log),
        };
        let mut m = Milter::with_transport(spec(), Box::new(acking));
        let mac = macros();
        m.connect(&client(), &mac);
        m.mail(&["<a@example.com>"], &mac);
        assert_eq!(m.message(&message(), &mac).modifications.len(), 1);
        m.quit();
        f.finish();
        let log = log.lock().unwrap();
        assert!(log.iter().filter(|e| **e == "read").count() >= 6, "{log:?}");
        for (i, e) in log.iter().enumerate() {
            if *e == "read" {
                assert_eq!(
                    log.get(i.wrapping_sub(1)),
                    Some(&"ack"),
                    "read without ack: {log:?}"
                );
            }
        }
    }

    #[test]
    fn content_refusal_stops_the_content_and_eom_reports_it() {
        let (t, f) = fake(v6(0, 0), |c| match c {
            Command::Header { name, .. } if name == b"From" => vec![Send(Response::Discard)],
            c => continue_all(c),
        });
        let mut m = Milter::with_transport(spec(), t);
        let mac = macros();
        m.connect(&client(), &mac);
        m.mail(&["<a@example.com>"], &mac);
        assert_eq!(m.message(&message(), &mac).verdict, Verdict::Discard);
        m.abort();
        // The next transaction starts clean.
        assert_eq!(m.mail(&["<a@example.com>"], &mac), Verdict::Continue);
        m.quit();
        assert_eq!(codes(&f.finish()), "ODCDMDLADMQ");
    }

    #[test]
    fn older_milters_get_only_their_versions_events_and_their_own_macro_lists() {
        let mut answer = v6(0, 0);
        answer.version = 2;
        answer.symlists = vec![(Stage::Mail as u32, b"{mail_addr}".to_vec())];
        let (t, f) = fake(answer, continue_all);
        let mut m = Milter::with_transport(spec(), t);
        let mac = macros();
        m.connect(&client(), &mac);
        m.mail(&["<a@example.com>"], &mac);
        assert_eq!(m.data(&mac), Verdict::Continue);
        assert_eq!(m.unknown("XYZZY", &mac), Verdict::Continue);
        m.quit();
        let seen = f.finish();
        assert_eq!(codes(&seen), "ODCDMQ", "no DATA, no UNKNOWN, no DATA macros");
        assert_eq!(macro_names(&seen, p::SMFIC_MAIL), ["{mail_addr}=a@example.com"]);
    }

    #[test]
    fn negotiation_failures_use_the_default_action() {
        for answer in [
            OptNeg {
                version: 7,
                ..v6(0, 0)
            },
            v6(1 << 12, 0),
        ] {
            let (t, f) = fake(answer, continue_all);
            let mut m = Milter::with_transport(spec(), t);
            assert_eq!(
                m.connect(&client(), &macros()),
                Verdict::Tempfail(Refusal::Unavailable)
            );
            assert!(m.negotiated().is_none());
            assert_eq!(codes(&f.finish()), "O");
        }
    }

    #[test]
    fn chain_runs_in_order_and_applies_changes_between_milters() {
        let (t1, f1) = fake(v6(p::MTA_ACTIONS, 0), |c| match c {
            Command::Rcpt(a) if a[0] == b"<spam@example.org>" => vec![Send(Response::Reject)],
            Command::BodyEob => vec![
                Send(Response::AddHeader {
                    name: b"X-First".to_vec(),
                    value: b"seen".to_vec(),
                }),
                Send(Response::AddRcpt(b"<archive@example.org>".to_vec())),
                Send(Response::Accept),
            ],
            c => continue_all(c),
        });
        let (t2, f2) = fake(v6(p::MTA_ACTIONS, 0), |c| match c {
            Command::BodyEob => vec![
                Send(Response::ChgHeader {
                    index: 1,
                    name: b"X-First".to_vec(),
                    value: b"changed by second".to_vec(),
                }),
                Send(Response::Quarantine(b"second says hold".to_vec())),
                Send(Response::Continue),
            ],
            c => continue_all(c),
        });
        let mut chain = Chain::from_milters(vec![
            Milter::with_transport(spec(), t1),
            Milter::with_transport(spec(), t2),
        ]);
        let mac = macros();
        assert_eq!(chain.connect(&client(), &mac), Verdict::Continue);
        assert_eq!(chain.mail(&["<a@example.com>"], &mac), Verdict::Continue);
        assert_eq!(
            chain.rcpt(&["<spam@example.org>"], &mac),
            Verdict::Reject(Refusal::Plain)
        );
        assert_eq!(chain.rcpt(&["<b@example.org>"], &mac), Verdict::Continue);
        let mut msg = message();
        let mut env = EnvelopeEdit {
            sender: "a@example.com".into(),
            sender_args: None,
            recipients: vec![RcptEdit::new("b@example.org")],
        };
        let out = chain.message(&mut msg, &mut env, &mac);
        assert_eq!(out.verdict, Verdict::Continue);
        assert!(out.modified);
        assert_eq!(out.quarantine.as_deref(), Some("second says hold"));
        assert!(msg
            .to_bytes()
            .ends_with(b"X-First: changed by second\n\nline 1\nline 2\n"));
        assert_eq!(env.recipients.len(), 2);
        chain.abort();
        chain.quit();
        let seen2 = f2.finish();
        // The second milter never saw the recipient the first refused, and saw
        // the header the first added.
        assert!(!seen2.contains(&Command::Rcpt(vec![b"<spam@example.org>".to_vec()])));
        assert!(seen2.contains(&Command::Header {
            name: b"X-First".to_vec(),
            value: b"seen".to_vec()
        }));
        f1.finish();
    }

    #[test]
    fn chain_stops_at_the_first_refusal_at_end_of_message() {
        let (t1, f1) = fake(v6(0, 0), |c| match c {
            Command::BodyEob => vec![Send(Response::ReplyCode(b"554 5.7.1 Spam".to_vec()))],
            c => continue_all(c),
        });
        let (t2, f2) = fake(v6(0, 0), continue_all);
        let mut chain = Chain::from_milters(vec![
            Milter::with_transport(spec(), t1),
            Milter::with_transport(spec(), t2),
        ]);
        let mac = macros();
        chain.connect(&client(), &mac);
        chain.mail(&["<a@example.com>"], &mac);
        let out = chain.message(&mut message(), &mut EnvelopeEdit::default(), &mac);
        assert!(matches!(out.verdict, Verdict::Reject(Refusal::Custom(ref r)) if r.code == 554));
        chain.quit();
        f1.finish();
        assert!(!f2.finish().contains(&Command::BodyEob));
    }

    #[test]
    fn macros_lookup_handles_both_name_forms_and_defaults() {
        let mut m = macros();
        assert_eq!(m.lookup("j").as_deref(), Some("mx.example.org"));
        assert_eq!(m.lookup("{j}").as_deref(), Some("mx.example.org"));
        assert_eq!(m.lookup("{if_addr}").as_deref(), Some("192.0.2.25"));
        assert_eq!(m.lookup("{auth_type}"), None);
        m.other.push(("{auth_type}".into(), "none".into()));
        m.other.push(("x".into(), "1".into()));
        assert_eq!(m.lookup("{auth_type}").as_deref(), Some("none"));
        assert_eq!(m.lookup("{x}").as_deref(), Some("1"));
        m.client_name = Some("other.example.com".into());
        assert_eq!(
            m.lookup("_").as_deref(),
            Some("client.example.com [198.51.100.7] (may be forged)")
        );
    }

    #[test]
    fn unknown_client_names_become_address_literals() {
        let info = ConnectInfo {
            hostname: "unknown".into(),
            addr: Some("[2001:db8::1]:25".parse().unwrap()),
        };
        assert_eq!(
            info.command(),
            Command::Connect {
                hostname: b"[2001:db8::1]".to_vec(),
                family: Family::Inet6,
                port: 25,
                address: b"2001:db8::1".to_vec()
            }
        );
        assert!(matches!(
            ConnectInfo::local().command(),
            Command::Connect {
                family: Family::Inet,
                ..
            }
        ));
    }

    #[test]
    fn milter_lists_parse_with_per_milter_settings() {
        let defaults = spec();
        let dur = |s: &str| {
            s.strip_suffix('s')
                .and_then(|n| n.parse().ok())
                .map(Duration::from_secs)
        };
        let l = MilterSpec::parse_list(
            "inet:127.0.0.1:11332 {unix:/run/opendkim/opendkim.sock, default_action = accept, \
             command_timeout = 10s, protocol = 4} , inet:8891@localhost",
            &defaults,
            &dur,
        )
        .unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].endpoint.to_string(), "inet:127.0.0.1:11332");
        assert_eq!(l[0].default_action, DefaultAction::Tempfail);
        assert_eq!(l[1].endpoint.to_string(), "unix:/run/opendkim/opendkim.sock");
        assert_eq!(l[1].default_action, DefaultAction::Accept);
        assert_eq!(l[1].timeouts.command, Duration::from_secs(10));
        assert_eq!(l[1].protocol.version, 4);
        assert_eq!(l[2].endpoint.to_string(), "inet:localhost:8891");
        for bad in [
            "{ inet:h:1, nope = 1 }",
            "{ inet:h:1, command_timeout = soon }",
            "{ inet:h:1",
            "tcp:x",
        ] {
            assert!(MilterSpec::parse_list(bad, &defaults, &dur).is_err(), "{bad}");
        }
        assert!(MilterSpec::parse_list("", &defaults, &dur).unwrap().is_empty());
    }
}
