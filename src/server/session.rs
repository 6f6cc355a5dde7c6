//! One SMTP session (RFC 5321 sections 3 and 4) over any `Conn`: TCP from
//! the pool, stdin/stdout for `ternd -i`. Commands come from `smtp::command`,
//! replies from `smtp::reply`, decisions from `policy`, and accepted mail goes
//! to the spool. The session itself never touches a file.

use std::fmt;
use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::clock;
use crate::config::Config;
use crate::maillog;
use crate::metrics;
use crate::server::auth::{self, Auth, Mechanism, SaslError};
use crate::server::conn::{self, Conn, Io, Line};
use crate::server::policy::Policy;
use crate::smtp::address::{ForwardPath, ReversePath};
use crate::smtp::command::{self, Body, Command, MailParams, RcptParams, MAX_COMMAND_LINE};
use crate::smtp::dot::{DataError, DataReader};
use crate::smtp::reply::{self, Reply};
use crate::spool::{self, maildrop, Envelope, QueueId, Spool, SpoolError};
use crate::tables::Tables;
use crate::tls::{self, TlsInfo};

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
    /// Where accepted mail goes: the queue, or the maildrop.
    pub door: Door,
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
            door: Door::Queue,
        }
    }
}

/// One session on stdin/stdout (`ternd -i` into the queue, `sendmail -bs` into
/// the maildrop), then tell a running daemon about what was queued so it
/// delivers at once (when it is down, it finds the messages at start-up).
pub fn run_stdio(cfg: Config, spool: Spool, peer: &Peer, tls: Option<Arc<tls::Source>>, door: Door) {
    let tables = Arc::new(Tables::new(&cfg));
    let root = cfg.spool.dir.clone();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut ctx = Context::new(Arc::new(cfg), Arc::new(spool), tables, tls);
    ctx.queued = Some(tx);
    ctx.door = door;
    run(&ctx, peer, Service::Smtp, Box::new(conn::Stdio::new()));
    let ids: Vec<QueueId> = rx.try_iter().collect();
    match door {
        Door::Queue => {
            for id in ids {
                let _ = crate::control::send(&root, &format!("wake {id}"));
            }
        }
        Door::Maildrop if !ids.is_empty() => {
            let _ = crate::control::send(&root, "pickup");
        }
        Door::Maildrop => {}
    }
}

/// What DATA is written into: a queue file, or a drop for the maildrop.
enum Sink {
    Queue(spool::Incoming),
    Maildrop(maildrop::Pending),
}

impl Sink {
    fn id(&self) -> &QueueId {
        match self {
            Sink::Queue(i) => i.id(),
            Sink::Maildrop(p) => p.id(),
        }
    }

    fn bytes_written(&self) -> u64 {
        match self {
            Sink::Queue(i) => i.bytes_written(),
            Sink::Maildrop(p) => p.bytes_written(),
        }
    }

    fn commit(self, env: &Envelope) -> Result<(), SpoolError> {
        match self {
            Sink::Queue(i) => i.commit(env),
            Sink::Maildrop(p) => p.commit(env),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Queue(i) => i.write(buf),
            Sink::Maildrop(p) => p.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Queue(i) => i.flush(),
            Sink::Maildrop(p) => p.flush(),
        }
    }
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

/// Failed AUTH attempts before the session is closed.
const MAX_AUTH_FAILURES: u32 = 3;

/// The client, as logged and as written into Received:.
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: Option<IpAddr>,
    /// Reverse-DNS name or "unknown"; "localhost" for local submission.
    pub name: String,
}

impl Peer {
    pub fn remote(ip: IpAddr) -> Peer {
        Peer {
            ip: Some(ip),
            name: "unknown".to_owned(),
        }
    }

    pub fn local() -> Peer {
        Peer {
            ip: None,
            name: "localhost".to_owned(),
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
    rcpts: Vec<(ForwardPath, RcptParams)>,
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
    auth_failures: u32,
    /// RCPTs refused as unknown users (directory-harvest defence).
    unknown_rcpts: u32,
    tx: Option<Transaction>,
    errors: u32,
    commands: u32,
    /// The verb of the last command (CONNECT before any, END-OF-MESSAGE in
    /// DATA), for the log line of a timeout, as Postfix's `timeout after X`.
    last: String,
    /// Counts the session and how it ends (metrics).
    meter: metrics::SessionMeter,
}

/// Run one session to its end. Never panics on client input; I/O errors end
/// the session quietly.
pub fn run(ctx: &Context, peer: &Peer, service: Service, conn: Box<dyn Conn>) {
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
        auth_failures: 0,
        unknown_rcpts: 0,
        tx: None,
        errors: 0,
        commands: 0,
        last: "CONNECT".to_owned(),
        meter: metrics::session(service.into()),
    };
    let _ = s.io.set_timeout(s.cfg.session.greeting_timeout);
    s.io.set_stop_flag(Arc::clone(&ctx.shutdown));
    // RFC 8314 3.3: on the implicit-TLS port the handshake comes first.
    let ready = service != Service::Smtps || s.handshake().is_ok();
    if ready {
        let _ = s.serve();
    }
    let _ = s.io.flush();
    maillog::disconnect(peer, s.commands, s.errors);
}

impl Session<'_> {
    fn serve(&mut self) -> Result<(), Hangup> {
        self.send(reply::greeting(&self.cfg.hostname))?;
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
                Err(_) => return Err(Hangup),
            };
            self.commands += 1;
            let _ = self.io.set_timeout(self.cfg.session.command_timeout);
            // The sender as it was before the command, so a refused DATA
            // (which ends the transaction) is still logged with it.
            let from = self.tx.as_ref().map(|t| t.from.to_string());
            let (verb, reply, to) = match line {
                Line::Eof => return Err(Hangup),
                Line::TooLong => ("line".to_owned(), reply::line_too_long(), None),
                Line::Text(text) => {
                    let verb = verb_of(&text);
                    self.last.clone_from(&verb);
                    match command::parse(&text) {
                        Ok(cmd) => {
                            let to = match &cmd {
                                Command::Rcpt(to, _) => Some(to.to_string()),
                                _ => None,
                            };
                            match self.handle(cmd)? {
                                Some(r) => (verb, r, to),
                                None => continue,
                            }
                        }
                        Err(r) => (verb, r, None),
                    }
                }
            };
            if !reply.is_positive() {
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
            let bad = is_bad_command(&reply);
            self.send(reply)?;
            if bad {
                self.errors += 1;
                if self.errors >= self.cfg.session.max_errors {
                    return self.send(reply::too_many_errors());
                }
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

    /// Run the TLS handshake over the current connection. Input the client
    /// sent before it and not yet read is discarded by `Io::upgrade`.
    fn handshake(&mut self) -> Result<(), Hangup> {
        let Some(config) = self.ctx.tls.as_ref().map(|t| t.current()) else {
            return Err(Hangup);
        };
        let result = self.io.upgrade(|conn| {
            let (stream, info) = tls::accept(&config, conn)?;
            Ok((Box::new(stream) as Box<dyn Conn>, info))
        });
        match result {
            Ok(info) => {
                maillog::tls_established(self.peer, &self.service, &info);
                self.meter.tls(&info.version);
                self.tls = Some(info);
                Ok(())
            }
            Err(e) => {
                maillog::tls_failed(self.peer, &self.service, &e);
                self.meter.tls_failed();
                Err(Hangup)
            }
        }
    }

    /// RFC 3207: STARTTLS. After the handshake the session starts over: no
    /// HELO, no transaction, and (for the client) no knowledge from before.
    fn starttls(&mut self) -> Result<Option<Reply>, Hangup> {
        if self.tls.is_some() {
            return Ok(Some(reply::tls_already_active()));
        }
        if self.ctx.tls.is_none() {
            return Ok(Some(reply::not_implemented()));
        }
        self.send(reply::starttls_ready())?;
        self.handshake()?;
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.user = None;
        // Nothing more to answer: the client speaks first inside TLS.
        Ok(None)
    }

    /// Whether AUTH is offered now: configured, and only inside TLS.
    fn auth_offered(&self) -> bool {
        self.ctx.auth.enabled() && self.tls.is_some()
    }

    /// RFC 4954: AUTH mechanism [initial-response], then 334 challenges.
    fn auth(&mut self, arg: &str) -> Result<Reply, Hangup> {
        if !self.ctx.auth.enabled() {
            return Ok(reply::not_implemented());
        }
        if self.tls.is_none() {
            return Ok(reply::auth_needs_tls());
        }
        if self.helo.is_none() {
            return Ok(reply::need_helo());
        }
        if self.user.is_some() {
            return Ok(reply::auth_already());
        }
        if self.tx.is_some() {
            return Ok(reply::auth_in_transaction());
        }
        let mut words = arg.split_whitespace();
        let Some(mech) = words.next().and_then(Mechanism::parse) else {
            return Ok(reply::auth_mechanism_unknown());
        };
        let initial = words.next().map(str::to_owned);
        if words.next().is_some() {
            return Ok(reply::syntax("Syntax: AUTH mechanism [initial-response]"));
        }
        let creds = match mech {
            Mechanism::Plain => self.sasl_step(initial, "")?.and_then(|m| auth::parse_plain(&m)),
            Mechanism::Login => {
                let user = self
                    .sasl_step(initial, auth::LOGIN_USER_PROMPT)?
                    .and_then(|m| auth::parse_login_field(&m));
                match user {
                    Ok(u) => self
                        .sasl_step(None, auth::LOGIN_PASS_PROMPT)?
                        .and_then(|m| auth::parse_login_field(&m))
                        .map(|p| (u, p)),
                    Err(e) => Err(e),
                }
            }
        };
        let (user, pass) = match creds {
            Ok(c) => c,
            Err(SaslError::Cancelled) => return Ok(reply::auth_cancelled()),
            Err(SaslError::Malformed) => return Ok(reply::auth_malformed()),
        };
        if self.ctx.auth.check(&user, &pass) {
            maillog::auth_ok(self.peer, mech.name(), &user);
            self.meter.auth(true);
            self.user = Some(user);
            return Ok(reply::auth_ok());
        }
        self.auth_failures += 1;
        maillog::auth_failed(self.peer, mech.name(), &user);
        self.meter.auth(false);
        // Slow down guessing; the client waits for its answer meanwhile.
        let _ = self.io.flush();
        std::thread::sleep(self.cfg.auth.failure_delay);
        let r = reply::auth_failed();
        Ok(if self.auth_failures >= MAX_AUTH_FAILURES {
            r.and_close()
        } else {
            r
        })
    }

    /// One client response: the initial response if given, else a 334
    /// challenge and the line that answers it.
    fn sasl_step(
        &mut self,
        initial: Option<String>,
        challenge: &'static str,
    ) -> Result<Result<Vec<u8>, SaslError>, Hangup> {
        let line = match initial {
            Some(l) => l,
            None => {
                self.send(reply::auth_challenge(challenge))?;
                match self.io.read_line(auth::MAX_AUTH_LINE) {
                    Ok(Line::Text(t)) => String::from_utf8_lossy(&t).into_owned(),
                    Ok(Line::TooLong) => return Ok(Err(SaslError::Malformed)),
                    Ok(Line::Eof) => return Err(Hangup),
                    Err(e) if is_timeout(&e) => {
                        maillog::timeout(self.peer, "AUTH", conn::is_stress_timeout(&e));
                        self.send(reply::timeout())?;
                        return Err(Hangup);
                    }
                    Err(_) => return Err(Hangup),
                }
            }
        };
        Ok(auth::decode_response(&line))
    }

    /// The reply to `cmd`; None when the command was answered already (STARTTLS).
    fn handle(&mut self, cmd: Command) -> Result<Option<Reply>, Hangup> {
        Ok(Some(match cmd {
            Command::Ehlo(name) => self.ehlo(name, true),
            Command::Helo(name) => self.ehlo(name, false),
            Command::Mail(from, params) => self.mail(from, params),
            Command::Rcpt(to, params) => self.rcpt(to, params),
            Command::Data => self.data()?,
            Command::Rset => {
                self.tx = None;
                reply::reset_ok()
            }
            Command::Noop => reply::noop_ok(),
            Command::Quit => reply::bye(),
            Command::Vrfy(_) => reply::vrfy_cannot(),
            Command::Expn(name) => self.expn(&name),
            Command::Help => reply::help(),
            Command::StartTls => return self.starttls(),
            Command::Auth(arg) => self.auth(&arg)?,
            Command::Http => reply::http_probe(),
        }))
    }

    /// RFC 5321 4.1.1.1: EHLO/HELO also reset any transaction.
    fn ehlo(&mut self, name: String, extended: bool) -> Reply {
        self.tx = None;
        self.esmtp = extended;
        let r = if extended {
            let mut exts = vec![
                "PIPELINING".to_owned(),
                format!("SIZE {}", self.cfg.session.max_message_size),
                "8BITMIME".to_owned(),
            ];
            // RFC 3207 4.2: not offered again once TLS is up.
            if self.ctx.tls.is_some() && self.tls.is_none() {
                exts.push("STARTTLS".to_owned());
            }
            // RFC 4954 and RFC 6409: AUTH only inside TLS.
            if self.auth_offered() {
                exts.push(format!("AUTH {}", auth::MECHANISMS));
            }
            exts.extend(
                ["ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN", "HELP"]
                    .iter()
                    .map(|e| (*e).to_owned()),
            );
            reply::ehlo(&self.cfg.hostname, &name, &exts)
        } else {
            reply::helo(&self.cfg.hostname)
        };
        self.helo = Some(name);
        r
    }

    fn mail(&mut self, from: ReversePath, params: MailParams) -> Reply {
        if self.helo.is_none() {
            return reply::need_helo();
        }
        if self.tx.is_some() {
            return reply::nested_mail();
        }
        // RFC 6409 4.3 and RFC 8314: submission needs TLS, then AUTH.
        if self.service.is_submission() {
            if self.tls.is_none() {
                return reply::tls_required();
            }
            if self.user.is_none() {
                return reply::auth_required();
            }
        }
        // An authenticated user sends only as an address it owns (the issue's
        // policy; Postfix calls it reject_sender_login_mismatch).
        if let (Some(user), ReversePath::Mailbox(m)) = (&self.user, &from) {
            if !self.ctx.auth.may_send_as(self.cfg, user, m) {
                return reply::sender_not_owned(&m.to_string());
            }
        }
        // ESMTP parameters are only valid after EHLO (RFC 5321 4.1.1.2), and
        // only those tern advertises: AUTH= comes with the AUTH extension.
        let plain = params == MailParams::default();
        if !plain && !self.esmtp {
            return reply::unknown_parameter();
        }
        // RFC 4954 5: AUTH= is valid only where AUTH is offered; its value is
        // not trusted (tern records who authenticated on this session itself).
        if params.auth.is_some() && !self.auth_offered() {
            return reply::unknown_parameter();
        }
        if params.body == Some(Body::BinaryMime) {
            return reply::body_unsupported();
        }
        // RFC 6531 3.4: UTF-8 addresses only with SMTPUTF8 declared.
        if !params.smtputf8 && !from.is_ascii() {
            return reply::need_smtputf8();
        }
        let declared = params.size.unwrap_or(0);
        // RFC 1870 6.1: refuse a declared size over the limit at MAIL time.
        if declared > self.cfg.session.max_message_size {
            return reply::size_exceeded();
        }
        if !self.ctx.spool.has_room(declared, MIN_FREE_PERCENT) {
            return reply::no_space();
        }
        self.tx = Some(Transaction {
            from,
            params,
            rcpts: Vec::new(),
        });
        reply::sender_ok()
    }

    fn rcpt(&mut self, to: ForwardPath, params: RcptParams) -> Reply {
        let Some(tx) = self.tx.as_mut() else {
            return reply::need_mail();
        };
        // RFC 3461: NOTIFY and ORCPT belong to the DSN extension, EHLO only.
        if (params.notify.is_some() || params.orcpt.is_some()) && !self.esmtp {
            return reply::unknown_parameter();
        }
        if !tx.params.smtputf8 && !to.is_ascii() {
            return reply::need_smtputf8();
        }
        // RFC 5321 4.5.3.1.8: at least 100 must be accepted; excess gets 452
        // so the client sends the rest in another transaction.
        if tx.rcpts.len() >= self.cfg.session.max_recipients {
            return reply::too_many_recipients();
        }
        let authenticated = self.user.is_some();
        if let Err(r) = self
            .ctx
            .policy
            .check_recipient(self.cfg, self.peer.ip, authenticated, &to)
        {
            // Directory harvest (many unknown users): answer slowly, then hang up.
            if r.code == 550 && r.esc == reply::no_such_user("").esc {
                self.unknown_rcpts += 1;
                if self.unknown_rcpts >= self.cfg.session.harvest_limit {
                    maillog::harvest(self.peer, self.unknown_rcpts);
                    return reply::harvest_limit();
                }
                if self.unknown_rcpts > self.cfg.session.harvest_threshold {
                    let _ = self.io.flush();
                    std::thread::sleep(self.cfg.session.harvest_delay);
                }
            }
            return r;
        }
        tx.rcpts.push((to, params));
        reply::recipient_ok()
    }

    fn expn(&mut self, name: &str) -> Reply {
        if !self.cfg.session.expn {
            return reply::expn_disabled();
        }
        match self.ctx.policy.expand(name.trim_matches(['<', '>'])) {
            Some(list) => reply::expn_list(&list),
            None => reply::expn_unknown(),
        }
    }

    /// RFC 5321 4.1.1.4: DATA, the message, and the one reply that says
    /// whether it is queued. 250 is sent only after the spool's commit.
    fn data(&mut self) -> Result<Reply, Hangup> {
        let Some(tx) = self.tx.as_ref() else {
            return Ok(reply::need_mail());
        };
        if tx.rcpts.is_empty() {
            return Ok(reply::need_rcpt());
        }
        if !self
            .ctx
            .spool
            .has_room(tx.params.size.unwrap_or(0), MIN_FREE_PERCENT)
        {
            return Ok(reply::no_space());
        }
        let mut incoming = match self.ctx.door {
            Door::Queue => match self.ctx.spool.begin() {
                Ok(i) => Sink::Queue(i),
                Err(e) => return Ok(spool_reply(&e)),
            },
            Door::Maildrop => Sink::Maildrop(maildrop::Pending::new(self.ctx.spool.root())),
        };
        let id = incoming.id().clone();
        let received = self.received_header(&id, tx);
        let mut write_err = incoming.write_all(received.as_bytes()).err();

        self.send(reply::start_data())?;
        let _ = self.io.set_timeout(self.cfg.session.data_timeout);
        let mut reader = DataReader::new(self.cfg.session.max_message_size);
        let mut chunk = Vec::with_capacity(64 * 1024);
        // Submitted mail: hold the header section back until it is complete,
        // to add what the client left out (RFC 6409 8.2, 8.3).
        let mut header: Option<Vec<u8>> = self.user.is_some().then(Vec::new);
        loop {
            let fed = reader.feed(self.io.buffered(), &mut chunk);
            self.io.consume(fed.consumed);
            if let Some(h) = header.as_mut() {
                h.append(&mut chunk);
                if fed.done || header_complete(h) {
                    let mut out = submission_fixes(h, &id, &self.cfg.hostname).into_bytes();
                    out.append(h);
                    header = None;
                    if write_err.is_none() {
                        write_err = incoming.write_all(&out).err();
                    }
                }
            }
            if write_err.is_none() && !chunk.is_empty() {
                write_err = incoming.write_all(&chunk).err();
            }
            chunk.clear();
            if fed.done {
                break;
            }
            match self.io.fill() {
                Ok(0) => return Err(Hangup),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    // Postfix's name for the wait inside DATA.
                    maillog::timeout(self.peer, "END-OF-MESSAGE", conn::is_stress_timeout(&e));
                    self.send(reply::timeout())?;
                    return Err(Hangup);
                }
                Err(_) => return Err(Hangup),
            }
        }
        let _ = self.io.set_timeout(self.cfg.session.command_timeout);

        // The transaction ends here whatever the outcome (RFC 5321 4.1.1.4).
        let Some(tx) = self.tx.take() else {
            return Ok(reply::need_mail());
        };
        let refusal = match reader.error() {
            Some(DataError::TooBig) => Some(reply::size_exceeded()),
            Some(DataError::BareNewline) => Some(reply::bare_newline()),
            Some(DataError::LineTooLong) => Some(reply::data_line_too_long()),
            None if reader.received_count() > self.cfg.session.max_received => Some(reply::mail_loop()),
            None => None,
        };
        if let Some(r) = refusal {
            // Dropping `incoming` removes its temporary file: nothing is queued.
            return Ok(r);
        }
        if let Some(e) = write_err {
            log::error!("{id}: cannot write to the spool: {e}");
            return Ok(if is_no_space(&e) {
                reply::no_space()
            } else {
                reply::local_error()
            });
        }
        let env = self.envelope(&id, &tx, incoming.bytes_written(), reader.saw_8bit());
        if let Err(e) = incoming.commit(&env) {
            log::error!("{id}: {e}");
            return Ok(spool_reply(&e));
        }
        maillog::queued(&id, &env.sender, env.size, env.recipients.len(), self.peer);
        self.meter.accepted();
        if let Some(q) = &self.ctx.queued {
            let _ = q.try_send(id.clone());
        }
        Ok(reply::queued(id.as_str()))
    }

    /// RFC 5321 4.4 trace field, with LF line ends as the spool stores them.
    fn received_header(&self, id: &QueueId, tx: &Transaction) -> String {
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let from = match self.peer.ip {
            Some(ip) => format!("{helo} ({} [{ip}])", self.peer.name),
            None => format!("{helo} ({})", self.peer.name),
        };
        let mut proto = self.proto();
        if tx.params.smtputf8 {
            // RFC 6531 3.7.3: UTF8SMTP, UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA.
            proto = proto.replacen("ESMTP", "UTF8SMTP", 1);
        }
        // RFC 3848 leaves the TLS details to a comment; this is Postfix's form.
        let using = match &self.tls {
            Some(t) => format!("\n\t(using {t})"),
            None => String::new(),
        };
        let mut h = format!(
            "Received: from {from}{using}\n\tby {} (tern) with {proto} id {id}",
            self.cfg.hostname
        );
        // Name the recipient only when there is one, as Postfix does, so that
        // Bcc: recipients are not shown to each other.
        if let [(rcpt, _)] = tx.rcpts.as_slice() {
            h.push_str(&format!("\n\tfor <{rcpt}>"));
        }
        h.push_str(&format!("; {}\n", clock::rfc5322(clock::now())));
        h
    }

    fn envelope(&self, id: &QueueId, tx: &Transaction, size: u64, saw_8bit: bool) -> Envelope {
        let mut env = Envelope::new(id.clone(), tx.from.to_string(), clock::now());
        env.helo = self.helo.clone();
        env.client_addr = self.peer.ip;
        env.client_name = Some(self.peer.name.clone());
        env.protocol = self.proto();
        env.body = match tx.params.body {
            Some(Body::EightBitMime) => spool::BodyType::EightBitMime,
            Some(Body::BinaryMime) => spool::BodyType::Binary,
            // An undeclared 8-bit body is kept as sent and marked so that
            // delivery can downgrade or refuse it knowingly.
            Some(Body::SevenBit) | None if saw_8bit => spool::BodyType::EightBitMime,
            Some(Body::SevenBit) | None => spool::BodyType::SevenBit,
        };
        env.smtputf8 = tx.params.smtputf8;
        env.size = size;
        env.ret = tx.params.ret.map(|r| match r {
            command::Ret::Full => spool::DsnRet::Full,
            command::Ret::Hdrs => spool::DsnRet::Hdrs,
        });
        env.envid = tx.params.envid.clone();
        env.recipients = tx
            .rcpts
            .iter()
            .map(|(to, p)| {
                let addr = match to {
                    // RFC 5321 4.1.1.3: bare <postmaster> means ours, so name a local domain.
                    ForwardPath::Postmaster => format!(
                        "postmaster@{}",
                        self.cfg.local.domains.first().unwrap_or(&self.cfg.hostname)
                    ),
                    ForwardPath::Mailbox(m) => m.to_string(),
                };
                let mut r = spool::Recipient::new(addr);
                r.notify = p.notify.clone();
                r.orcpt = p.orcpt.clone();
                r
            })
            .collect();
        env
    }
}

/// Headers held back for submission fixes beyond this are written as they are.
const MAX_HELD_HEADER: usize = 256 * 1024;

/// Whether `h` (LF line ends, as the DATA reader gives them) holds the whole
/// header section: it reached the empty line, or grew too large to hold.
fn header_complete(h: &[u8]) -> bool {
    h.starts_with(b"\n") || h.windows(2).any(|w| w == b"\n\n") || h.len() > MAX_HELD_HEADER
}

/// The Date: and Message-ID: fields a submitted message lacks (RFC 6409
/// 8.2 and 8.3), to put in front of its header section.
fn submission_fixes(h: &[u8], id: &QueueId, hostname: &str) -> String {
    let end = h.windows(2).position(|w| w == b"\n\n").map_or(h.len(), |p| p + 1);
    let head = h.get(..end).unwrap_or_default();
    let has = |name: &str| {
        head.split(|&b| b == b'\n').any(|line| {
            line.len() > name.len()
                && line
                    .get(..name.len())
                    .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
                && line.get(name.len()) == Some(&b':')
        })
    };
    let mut out = String::new();
    if !has("Date") {
        out.push_str(&format!("Date: {}\n", clock::rfc5322(clock::now())));
    }
    if !has("Message-ID") {
        out.push_str(&format!("Message-ID: <{id}@{hostname}>\n"));
    }
    out
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

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// RFC 3463: a full disk is X.3.1 (452); anything else the client retries (451).
fn spool_reply(e: &SpoolError) -> Reply {
    if e.is_no_space() {
        reply::no_space()
    } else {
        reply::local_error()
    }
}
