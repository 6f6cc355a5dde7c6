//! One SMTP session (RFC 5321 sections 3 and 4) over any `Conn`: TCP from
//! the pool, stdin/stdout for `ternd -i` and `sendmail -bs`, memory in tests.
//! Commands come from `smtp::command`, replies from `smtp::reply`, decisions
//! from `policy`, and accepted mail goes to the spool. The session itself
//! never touches a file, and never calls up into the daemon: it reports what
//! it queued, and its caller tells whoever must know.
//!
//! - `mod.rs`: the command loop (read, dispatch, reply, count errors);
//! - `envelope.rs`: EHLO/HELO, MAIL, RCPT, VRFY, EXPN;
//! - `data.rs`: DATA and BDAT, from the first octet to the commit (through
//!   `crate::pipeline`);
//! - `starttls.rs`, `auth.rs`: STARTTLS and AUTH.
//!
//! Each stage has one method, with a marked place ("Stage hook") where
//! outside checks (milters, a policy service) and, at the end of the
//! message, transforms (DKIM signing) belong.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::mailauth::SpfResults;
use crate::maillog;
use crate::metrics;
use crate::pipeline::MailAuth;
use crate::server::auth::Auth;
use crate::server::auth_guard::AuthGuard;
use crate::server::conn::{self, Conn, Io, Line};
use crate::server::policy::{self, Policy};
use crate::smtp::address::{ForwardPath, PathSyntax, ReversePath};
use crate::smtp::command::{self, Command, MailParams, RcptParams, MAX_COMMAND_LINE};
use crate::smtp::reply::{self, Reply};
use crate::spool::{QueueId, Spool};
use crate::tables::Tables;
use crate::tls::{self, TlsInfo};

mod auth;
mod data;
mod envelope;
mod filters;
mod starttls;
#[cfg(test)]
mod tests;

/// Keep at least this share of the spool filesystem free (OpenSMTPD-style guard).
const MIN_FREE_PERCENT: u8 = 2;

/// What every session shares: configuration, spool, policy, and the way to
/// tell the queue runner a message arrived.
pub struct Context {
    pub cfg: Arc<Config>,
    pub spool: Arc<Spool>,
    pub policy: Arc<Policy>,
    /// Set when the daemon is stopping; sessions answer 421 before their next command.
    pub shutdown: Arc<AtomicBool>,
    /// Told the id of each message queued (the queue runner's wake-up).
    pub queued: Option<crossbeam_channel::Sender<QueueId>>,
    /// The TLS server configuration; None when no certificate is configured.
    pub tls: Option<Arc<tls::Source>>,
    /// The AUTH password file and sender map.
    pub auth: Arc<Auth>,
    /// AUTH failures across sessions; kept by a reload.
    pub auth_guard: Arc<AuthGuard>,
    /// Where accepted mail goes: the queue, or the maildrop.
    pub door: Door,
    /// DKIM keys and the SPF/DKIM/DMARC checker (none until the daemon sets
    /// them; the maildrop door never signs: the daemon does, at pickup).
    pub mailauth: Arc<MailAuth>,
}

/// Where a session puts what it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The queue itself (the daemon, `ternd -i`): the session needs the daemon's
    /// rights on the spool.
    Queue,
    /// The maildrop, as the sendmail program drops mail (`sendmail -bs`): any user
    /// sendmail lets write there may run the session; the daemon's pickup queues it.
    Maildrop,
}

impl Context {
    /// A context over `spool` with fresh policy and AUTH tables; no one is
    /// told of queued mail until `queued` is set.
    pub fn new(
        cfg: Arc<Config>,
        spool: Arc<Spool>,
        tables: Arc<Tables>,
        tls: Option<Arc<tls::Source>>,
    ) -> Context {
        let auth = Arc::new(Auth::new(&cfg));
        Context {
            cfg,
            spool,
            policy: Arc::new(Policy::new(tables)),
            shutdown: Arc::new(AtomicBool::new(false)),
            queued: None,
            tls,
            auth,
            auth_guard: Arc::new(AuthGuard::new()),
            door: Door::Queue,
            mailauth: Arc::new(MailAuth::none()),
        }
    }
}

/// One session on stdin/stdout (`ternd -i` into the queue, `sendmail -bs` into
/// the maildrop). Returns the ids of the messages it queued: the caller tells
/// a running daemon about them so it delivers at once (when it is down, it
/// finds them at start-up).
pub fn run_stdio(
    cfg: Config,
    spool: Spool,
    peer: &Peer,
    tls: Option<Arc<tls::Source>>,
    door: Door,
    mailauth: MailAuth,
) -> Vec<QueueId> {
    let tables = Arc::new(Tables::new(&cfg));
    let mut ctx = Context::new(Arc::new(cfg), Arc::new(spool), tables, tls);
    ctx.door = door;
    ctx.mailauth = Arc::new(mailauth);
    run(&ctx, peer, Service::Smtp, Box::new(conn::Stdio::new())).queued
}

/// What a session did, for its caller.
#[derive(Debug, Default)]
pub struct Report {
    /// The messages it queued, in order.
    pub queued: Vec<QueueId>,
}

/// What kind of listener a session came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Mail exchange (RFC 5321), port 25; also `ternd -i`.
    Smtp,
    /// Message submission (RFC 6409), port 587: STARTTLS and AUTH before MAIL.
    Submission,
    /// Submission over implicit TLS (RFC 8314), port 465.
    Smtps,
}

impl Service {
    fn is_submission(self) -> bool {
        matches!(self, Service::Submission | Service::Smtps)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Smtp => "smtp",
            Service::Submission => "submission",
            Service::Smtps => "smtps",
        })
    }
}

/// The client, as logged and as written into Received:.
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: Option<IpAddr>,
    /// Reverse-DNS name or "unknown"; "localhost" for local submission.
    pub name: String,
    /// The client's port, when known (for milters and policy services).
    pub port: Option<u16>,
    /// The address and port the client connected to, when known.
    pub server: Option<std::net::SocketAddr>,
}

impl Peer {
    pub fn remote(ip: IpAddr) -> Peer {
        Peer {
            ip: Some(ip),
            name: "unknown".to_owned(),
            port: None,
            server: None,
        }
    }

    pub fn local() -> Peer {
        Peer {
            ip: None,
            name: "localhost".to_owned(),
            port: None,
            server: None,
        }
    }
}

impl fmt::Display for Peer {
    /// Postfix's `name[ip]` form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            Some(ip) => write!(f, "{}[{}]", self.name, ip),
            None => write!(f, "{}", self.name),
        }
    }
}

/// The session ends without a reply: the client went away or the link broke.
struct Hangup;

/// An open mail transaction (RFC 5321 3.3): exists from MAIL to the end of DATA or RSET.
struct Transaction {
    from: ReversePath,
    params: MailParams,
    /// The recipients, each mailbox once, with the parameters of its first RCPT.
    rcpts: Vec<(ForwardPath, RcptParams)>,
    /// The mailbox of each recipient (`Mailbox::identity`), and whether a
    /// duplicate of it was logged yet.
    mailboxes: HashMap<String, bool>,
    /// RCPTs answered 250, duplicates included (`max_recipients` counts them).
    accepted: usize,
    /// The message BDAT is receiving, from the first chunk to the LAST.
    chunks: Option<Box<data::Receiving>>,
    /// SPF of the client, HELO and sender, checked at the first accepted
    /// RCPT when this session's mail is checked (issue 20).
    spf: Option<SpfResults>,
}

impl Transaction {
    fn new(from: ReversePath, params: MailParams) -> Transaction {
        Transaction {
            from,
            params,
            rcpts: Vec::new(),
            mailboxes: HashMap::new(),
            accepted: 0,
            chunks: None,
            spf: None,
        }
    }
}

struct Session<'a> {
    ctx: &'a Context,
    cfg: &'a Config,
    peer: &'a Peer,
    service: Service,
    io: Io,
    helo: Option<String>,
    esmtp: bool,
    /// Set once the TLS handshake is done (STARTTLS or implicit).
    tls: Option<TlsInfo>,
    /// The authenticated user name.
    user: Option<String>,
    /// The SASL mechanism `user` authenticated with, for the log.
    sasl_method: Option<&'static str>,
    auth_failures: u32,
    /// RCPTs (and VRFYs) refused as unknown users (directory-harvest defence).
    unknown_rcpts: u32,
    tx: Option<Transaction>,
    errors: u32,
    /// Commands that move no mail (NOOP, RSET, VRFY, EXPN, HELP, a repeated
    /// EHLO or HELO) since the session began or last queued a message.
    junk: u32,
    commands: u32,
    /// MAIL commands so far (RFC 9422 MAILMAX, `max_transactions`).
    mails: usize,
    /// The verb of the last command (CONNECT before any, END-OF-MESSAGE in
    /// DATA), for the log line of a timeout, as Postfix's `timeout after X`.
    last: String,
    /// The messages queued so far.
    queued: Vec<QueueId>,
    /// Counts the session and how it ends (metrics).
    meter: metrics::SessionMeter,
    /// Milters and policy services (filters.rs).
    filters: filters::Filters,
}

/// Run one session to its end. Never panics on client input; I/O errors end
/// the session quietly.
pub fn run(ctx: &Context, peer: &Peer, service: Service, conn: Box<dyn Conn>) -> Report {
    maillog::connect(peer);
    let mut s = Session {
        ctx,
        cfg: &ctx.cfg,
        peer,
        service,
        io: Io::new(conn),
        helo: None,
        esmtp: false,
        tls: None,
        user: None,
        sasl_method: None,
        auth_failures: 0,
        unknown_rcpts: 0,
        tx: None,
        errors: 0,
        junk: 0,
        commands: 0,
        mails: 0,
        last: "CONNECT".to_owned(),
        queued: Vec::new(),
        meter: metrics::session(service.into()),
        filters: filters::Filters::new(&ctx.cfg, ctx.door == Door::Maildrop),
    };
    let _ = s.io.set_timeout(s.cfg.session.greeting_timeout);
    s.io.set_stop_flag(Arc::clone(&ctx.shutdown));
    // RFC 8314 3.3: on the implicit-TLS port the handshake comes first.
    let ready = service != Service::Smtps || s.handshake().is_ok();
    if ready {
        let _ = s.serve();
    }
    let _ = s.io.flush();
    s.filters.quit();
    maillog::disconnect(peer, s.commands, s.errors);
    Report { queued: s.queued }
}

impl Session<'_> {
    fn serve(&mut self) -> Result<(), Hangup> {
        // RFC 7504 3: a listener that accepts no mail says so instead of 220.
        if self
            .cfg
            .listen
            .refuse_mail
            .iter()
            .any(|s| *s == self.service.to_string())
        {
            let r = reply::does_not_accept_mail(&self.cfg.hostname);
            maillog::reject(self.peer, "CONNECT", &r, None, None, &self.proto(), None);
            return self.send(r);
        }
        // Milters and policy services may refuse the client at once.
        match self.filters_connect() {
            Some(r) => self.send(r)?,
            None => self.send(reply::greeting(&self.cfg.hostname))?,
        }
        loop {
            if self.ctx.shutdown.load(Ordering::Relaxed) {
                return self.send(reply::shutting_down());
            }
            let line = match self.io.read_line(MAX_COMMAND_LINE) {
                Ok(l) => l,
                Err(e) if is_timeout(&e) => {
                    maillog::timeout(self.peer, &self.last, conn::is_stress_timeout(&e));
                    return self.send(reply::timeout());
                }
                Err(e) if conn::is_stopping(&e) => return self.send(reply::shutting_down()),
                Err(e) if conn::is_evicted(&e) => {
                    maillog::evicted(self.peer, &self.last);
                    return self.send(reply::evicted());
                }
                Err(_) => return Err(Hangup),
            };
            self.commands += 1;
            let _ = self.io.set_timeout(self.cfg.session.command_timeout);
            // The sender as it was before the command, so a refused DATA
            // (which ends the transaction) is still logged with it.
            let mut from = self.tx.as_ref().map(|t| t.from.to_string());
            let mut junk = false;
            let (verb, reply, to) = match line {
                Line::Eof => return Err(Hangup),
                Line::TooLong => ("line".to_owned(), reply::line_too_long(), None),
                Line::Bare(bare) => ("line".to_owned(), bare_reply(bare), None),
                Line::Text(mut text) => {
                    let verb = verb_of(&text);
                    self.last.clone_from(&verb);
                    if self.ctx.door == Door::Maildrop {
                        if let Some(t) = with_origin(&text, || self.cfg.origin()) {
                            text = t;
                        }
                    }
                    match command::parse_with(&text, self.path_syntax()) {
                        Ok(cmd) => {
                            let to = match &cmd {
                                Command::Rcpt(to, _) => Some(to.to_string()),
                                // A filter's refusal of MAIL names the sender (Postfix).
                                Command::Mail(f, _) if from.is_none() && self.filters.any() => {
                                    from = Some(f.to_string());
                                    None
                                }
                                _ => None,
                            };
                            junk = self.is_junk(&cmd);
                            let queued = self.queued.len();
                            let r = self.handle(cmd)?;
                            if self.queued.len() > queued {
                                // Mail moved: the count starts over (Postfix's rule).
                                self.junk = 0;
                            }
                            self.io.report(self.standing());
                            match r {
                                Some(r) => (verb, r, to),
                                None => continue,
                            }
                        }
                        // A milter may refuse an unknown command with its own words.
                        Err(r) if r == reply::unknown_command() => {
                            (verb, self.filters_unknown(&text).unwrap_or(r), None)
                        }
                        Err(r) => (verb, r, None),
                    }
                }
            };
            // Past `junk_command_limit`, each junk command is answered late
            // and counts as an error, so the session ends at `max_errors`
            // (Postfix's smtpd_junk_command_limit).
            let over = junk && self.junk_past_limit();
            if over {
                if self.junk == self.cfg.session.junk_command_limit.saturating_add(1) {
                    maillog::junk_limit(self.peer, self.junk);
                }
                let _ = self.io.flush();
                std::thread::sleep(self.cfg.session.junk_command_delay);
            }
            let by_filter = self.filters.take_refused();
            if !reply.is_positive() {
                if let Some(f) = by_filter {
                    let stage = f.stage.unwrap_or(&verb);
                    let to = f.to.as_deref().or(to.as_deref());
                    self.log_refusal(f.by, stage, &reply, f.id.as_ref(), from.as_deref(), to);
                } else {
                    maillog::reject(
                        self.peer,
                        &verb,
                        &reply,
                        from.as_deref(),
                        to.as_deref(),
                        &self.proto(),
                        self.helo.as_deref(),
                    );
                    metrics::rejected(&reply);
                }
            }
            // Counted before it is sent: a closing reply ends the session.
            let bad = is_bad_command(&reply) || over;
            if bad {
                self.errors += 1;
            }
            self.send(reply)?;
            if bad && self.errors >= self.cfg.session.max_errors {
                return self.send(reply::too_many_errors());
            }
        }
    }

    /// Queue a reply; a closing reply is flushed and ends the session.
    fn send(&mut self, r: Reply) -> Result<(), Hangup> {
        r.write_to(self.io.out_buffer());
        if r.close {
            self.meter.closing(&r);
            let _ = self.io.flush();
            return Err(Hangup);
        }
        Ok(())
    }

    /// The protocol for logs and the Received: `with` clause (RFC 3848:
    /// ESMTPS with TLS, ESMTPA with AUTH, ESMTPSA with both).
    fn proto(&self) -> String {
        let mut p = if self.esmtp { "ESMTP" } else { "SMTP" }.to_owned();
        if self.esmtp && self.tls.is_some() {
            p.push('S');
        }
        if self.esmtp && self.user.is_some() {
            p.push('A');
        }
        p
    }

    /// Whether `cmd` is a junk command, counting it if so: one that moves no
    /// mail, which a client holding a session open with keep-alives sends.
    fn is_junk(&mut self, cmd: &Command) -> bool {
        let junk = match cmd {
            Command::Noop | Command::Rset | Command::Vrfy(_) | Command::Expn(_) | Command::Help => true,
            // The first EHLO, and the first after STARTTLS (RFC 3207 4.2), are needed.
            Command::Ehlo(_) | Command::Helo(_) => self.helo.is_some(),
            _ => false,
        };
        if junk {
            self.junk = self.junk.saturating_add(1);
        }
        junk
    }

    fn junk_past_limit(&self) -> bool {
        self.junk > self.cfg.session.junk_command_limit
    }

    /// What the pool needs to know to choose a session to close under
    /// stress (src/server/listener.rs): sessions that send no mail go first.
    fn standing(&self) -> conn::Standing {
        conn::Standing {
            in_transaction: self.tx.is_some(),
            junk: self.junk_past_limit(),
        }
    }

    /// How MAIL and RCPT paths are read (`strict_rfc821_envelopes`).
    fn path_syntax(&self) -> PathSyntax {
        if self.cfg.session.strict_rfc821_envelopes {
            PathSyntax::Strict
        } else {
            PathSyntax::Lenient
        }
    }

    /// The client, for policy decisions.
    fn client(&self) -> policy::Client {
        policy::Client {
            ip: self.peer.ip,
            authenticated: self.user.is_some(),
        }
    }

    /// Whether the client is inside our domain (see `policy::Client::trusted`).
    fn trusted(&self) -> bool {
        self.client().trusted(self.cfg)
    }

    /// The reply to `cmd`; None when the command was answered already (STARTTLS).
    fn handle(&mut self, cmd: Command) -> Result<Option<Reply>, Hangup> {
        if let Some(r) = self.filters_gate(&cmd) {
            return Ok(Some(r));
        }
        Ok(Some(match cmd {
            Command::Ehlo(name) => self.ehlo(name, true),
            Command::Helo(name) => self.ehlo(name, false),
            Command::Mail(from, params) => self.mail(from, params),
            Command::Rcpt(to, params) => self.rcpt(to, params),
            Command::Data => self.data()?,
            Command::Bdat { size, last } => self.bdat(size, last)?,
            Command::Rset => {
                self.tx = None;
                self.filters_abort();
                reply::reset_ok()
            }
            Command::Noop => reply::noop_ok(),
            Command::Quit => reply::bye(),
            Command::Vrfy(arg) => self.vrfy(&arg),
            Command::Expn(name) => self.expn(&name),
            Command::Help => reply::help(),
            Command::StartTls => return self.starttls(),
            Command::Auth(arg) => self.auth(&arg)?,
            Command::Http => reply::http_probe(),
        }))
    }
}

/// The answer to a line with a lone CR or LF: logged, and the session closed.
fn bare_reply(bare: conn::Bare) -> Reply {
    reply::bare_newline_command(bare == conn::Bare::Lf)
}

/// Replies that count toward `max_errors`: protocol errors (X.5.x), not
/// policy refusals such as an unknown user.
fn is_bad_command(r: &Reply) -> bool {
    r.code >= 500 && r.esc.is_some_and(|e| e.1 == 5)
}

fn verb_of(line: &[u8]) -> String {
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let verb = line.get(..end.min(16)).unwrap_or_default();
    String::from_utf8_lossy(verb).to_ascii_uppercase()
}

/// `sendmail -bs`: `MAIL FROM:<carol>` and `RCPT TO:<carol>` may name a local
/// user without a domain, as sendmail's arguments may; as Postfix's smtpd run
/// by sendmail -bs does (myorigin), the address gets the origin domain. Any
/// other line, and `<>`, `<postmaster>` or an address with `@`, is left alone.
fn with_origin(line: &[u8], origin: impl FnOnce() -> String) -> Option<Vec<u8>> {
    let prefix = [&b"MAIL FROM:"[..], b"RCPT TO:"]
        .into_iter()
        .find(|p| line.get(..p.len()).is_some_and(|l| l.eq_ignore_ascii_case(p)))?;
    let rest = line.get(prefix.len()..)?;
    let spaces = rest.iter().take_while(|&&b| b == b' ').count();
    let path = rest.get(spaces..)?.strip_prefix(b"<")?;
    let close = path.iter().position(|&b| b == b'>')?;
    let (name, tail) = path.split_at(close);
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(b);
    if name.is_empty() || name.eq_ignore_ascii_case(b"postmaster") || !name.iter().all(plain) {
        return None;
    }
    let mut out = line.get(..prefix.len() + spaces + 1)?.to_vec();
    out.extend_from_slice(name);
    out.push(b'@');
    out.extend_from_slice(origin().as_bytes());
    out.extend_from_slice(tail);
    Some(out)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}
