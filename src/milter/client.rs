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

use std::fmt;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::edit::{self, Message, Modification};
use super::macros::{ConnectInfo, Macros};
use super::negotiate::{self, Negotiated};
use super::protocol::{self as p, Command, Response, Stage};
use super::reply_text::ReplyText;
use super::spec::{DefaultAction, MilterSpec};
use crate::endpoint::Stream;

mod exchange;
use exchange::Exchange;

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
        let n =
            negotiate::negotiate(&self.spec.protocol, &answer).map_err(|e| Failure::Comm(e.to_string()))?;
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
}

impl Drop for Milter {
    fn drop(&mut self) {
        // A session that ends without quit() still tells the milter.
        if self.conn.is_some() && self.state != State::Closed {
            self.quit();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
