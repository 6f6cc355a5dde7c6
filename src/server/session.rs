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
use crate::server::conn::{self, Conn, Io, Line};
use crate::server::policy::Policy;
use crate::smtp::address::{ForwardPath, ReversePath};
use crate::smtp::command::{self, Body, Command, MailParams, RcptParams, MAX_COMMAND_LINE};
use crate::smtp::dot::{DataError, DataReader};
use crate::smtp::reply::{self, Reply};
use crate::spool::{self, Envelope, QueueId, Spool, SpoolError};

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
}

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
    io: Io,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: u32,
    commands: u32,
}

/// Run one session to its end. Never panics on client input; I/O errors end
/// the session quietly.
pub fn run(ctx: &Context, peer: &Peer, conn: Box<dyn Conn>) {
    maillog::connect(peer);
    let mut s = Session {
        ctx,
        cfg: &ctx.cfg,
        peer,
        io: Io::new(conn),
        helo: None,
        esmtp: false,
        tx: None,
        errors: 0,
        commands: 0,
    };
    let _ = s.io.set_timeout(s.cfg.greeting_timeout);
    s.io.set_stop_flag(Arc::clone(&ctx.shutdown));
    let _ = s.serve();
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
                Err(e) if is_timeout(&e) => return self.send(reply::timeout()),
                Err(e) if conn::is_stopping(&e) => return self.send(reply::shutting_down()),
                Err(_) => return Err(Hangup),
            };
            self.commands += 1;
            let _ = self.io.set_timeout(self.cfg.command_timeout);
            // The sender as it was before the command, so a refused DATA
            // (which ends the transaction) is still logged with it.
            let from = self.tx.as_ref().map(|t| t.from.to_string());
            let (verb, reply, to) = match line {
                Line::Eof => return Err(Hangup),
                Line::TooLong => ("line".to_owned(), reply::line_too_long(), None),
                Line::Text(text) => {
                    let verb = verb_of(&text);
                    match command::parse(&text) {
                        Ok(cmd) => {
                            let to = match &cmd {
                                Command::Rcpt(to, _) => Some(to.to_string()),
                                _ => None,
                            };
                            (verb, self.handle(cmd)?, to)
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
                    self.proto(),
                    self.helo.as_deref(),
                );
            }
            let bad = is_bad_command(&reply);
            self.send(reply)?;
            if bad {
                self.errors += 1;
                if self.errors >= self.cfg.max_errors {
                    return self.send(reply::too_many_errors());
                }
            }
        }
    }

    /// Queue a reply; a closing reply is flushed and ends the session.
    fn send(&mut self, r: Reply) -> Result<(), Hangup> {
        r.write_to(self.io.out_buffer());
        if r.close {
            let _ = self.io.flush();
            return Err(Hangup);
        }
        Ok(())
    }

    fn proto(&self) -> &'static str {
        if self.esmtp {
            "ESMTP"
        } else {
            "SMTP"
        }
    }

    fn handle(&mut self, cmd: Command) -> Result<Reply, Hangup> {
        Ok(match cmd {
            Command::Ehlo(name) => self.ehlo(name, true),
            Command::Helo(name) => self.ehlo(name, false),
            Command::Mail(from, params) => self.mail(from, params),
            Command::Rcpt(to, params) => self.rcpt(to, params),
            Command::Data => return self.data(),
            Command::Rset => {
                self.tx = None;
                reply::reset_ok()
            }
            Command::Noop => reply::noop_ok(),
            Command::Quit => reply::bye(),
            Command::Vrfy(_) => reply::vrfy_cannot(),
            Command::Expn(name) => self.expn(&name),
            Command::Help => reply::help(),
            // Not offered until TLS and AUTH are configured.
            Command::StartTls | Command::Auth(_) => reply::not_implemented(),
            Command::Http => reply::http_probe(),
        })
    }

    /// RFC 5321 4.1.1.1: EHLO/HELO also reset any transaction.
    fn ehlo(&mut self, name: String, extended: bool) -> Reply {
        self.tx = None;
        self.esmtp = extended;
        let r = if extended {
            let exts = vec![
                "PIPELINING".to_owned(),
                format!("SIZE {}", self.cfg.max_message_size),
                "8BITMIME".to_owned(),
                "ENHANCEDSTATUSCODES".to_owned(),
                "SMTPUTF8".to_owned(),
                "DSN".to_owned(),
                "HELP".to_owned(),
            ];
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
        // ESMTP parameters are only valid after EHLO (RFC 5321 4.1.1.2), and
        // only those tern advertises: AUTH= comes with the AUTH extension.
        let plain = params == MailParams::default();
        if !plain && !self.esmtp {
            return reply::unknown_parameter();
        }
        if params.auth.is_some() {
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
        if declared > self.cfg.max_message_size {
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
        if tx.rcpts.len() >= self.cfg.max_recipients {
            return reply::too_many_recipients();
        }
        if let Err(r) = self.ctx.policy.check_recipient(self.cfg, self.peer.ip, &to) {
            return r;
        }
        tx.rcpts.push((to, params));
        reply::recipient_ok()
    }

    fn expn(&mut self, name: &str) -> Reply {
        if !self.cfg.expn {
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
        let mut incoming = match self.ctx.spool.begin() {
            Ok(i) => i,
            Err(e) => return Ok(spool_reply(&e)),
        };
        let id = incoming.id().clone();
        let received = self.received_header(&id, tx);
        let mut write_err = incoming.write_all(received.as_bytes()).err();

        self.send(reply::start_data())?;
        let _ = self.io.set_timeout(self.cfg.data_timeout);
        let mut reader = DataReader::new(self.cfg.max_message_size);
        let mut chunk = Vec::with_capacity(64 * 1024);
        loop {
            let fed = reader.feed(self.io.buffered(), &mut chunk);
            self.io.consume(fed.consumed);
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
                    self.send(reply::timeout())?;
                    return Err(Hangup);
                }
                Err(_) => return Err(Hangup),
            }
        }
        let _ = self.io.set_timeout(self.cfg.command_timeout);

        // The transaction ends here whatever the outcome (RFC 5321 4.1.1.4).
        let Some(tx) = self.tx.take() else {
            return Ok(reply::need_mail());
        };
        let refusal = match reader.error() {
            Some(DataError::TooBig) => Some(reply::size_exceeded()),
            Some(DataError::BareNewline) => Some(reply::bare_newline()),
            Some(DataError::LineTooLong) => Some(reply::data_line_too_long()),
            None if reader.received_count() > self.cfg.max_received => Some(reply::mail_loop()),
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
        let mut proto = self.proto().to_owned();
        if tx.params.smtputf8 {
            // RFC 6531 3.7.3: UTF8SMTP in the with clause.
            proto = "UTF8SMTP".to_owned();
        }
        let mut h = format!(
            "Received: from {from}\n\tby {} (tern) with {proto} id {id}",
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
        env.protocol = self.proto().to_owned();
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
                        self.cfg.local_domains.first().unwrap_or(&self.cfg.hostname)
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
