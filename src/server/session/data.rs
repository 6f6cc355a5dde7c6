//! DATA (RFC 5321 4.1.1.4): the message, and the one reply that says
//! whether it is queued. 250 is sent only after the spool's commit.
//!
//! Two stages: `receive` streams the body into the spool as it arrives (the
//! Received: field first; for submitted mail the header section is held back
//! to add what the client left out), and `end_of_message` judges the
//! finished message and commits it. Whatever must see the whole message
//! before it is queued (milters' end of message, DKIM signing) belongs in
//! `end_of_message`, between the envelope being built and the commit.

use std::io::{self, Write};

use super::{is_timeout, Door, Hangup, Session, Transaction, MIN_FREE_PERCENT};
use crate::clock;
use crate::maillog;
use crate::message::{self, Header};
use crate::server::conn;
use crate::smtp::address::ForwardPath;
use crate::smtp::command::{self, Body};
use crate::smtp::dot::{DataError, DataReader};
use crate::smtp::reply::{self, Reply};
use crate::spool::{self, maildrop, Envelope, QueueId, SpoolError};
use crate::sys;

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

/// What `receive` read: the message in its sink, and how reading went.
struct Received {
    sink: Sink,
    reader: DataReader,
    /// The first failed write to the sink; the rest of the data was still read.
    write_err: Option<io::Error>,
}

impl Session<'_> {
    pub(super) fn data(&mut self) -> Result<Reply, Hangup> {
        if let Err(r) = self.check_data() {
            return Ok(r);
        }
        let mut sink = match self.ctx.door {
            Door::Queue => match self.ctx.spool.begin() {
                Ok(i) => Sink::Queue(i),
                Err(e) => return Ok(spool_reply(&e)),
            },
            Door::Maildrop => Sink::Maildrop(maildrop::Pending::new(self.ctx.spool.root())),
        };
        let trace = match self.tx.as_ref() {
            Some(tx) => self.received_header(sink.id(), tx),
            None => return Ok(reply::need_mail()),
        };
        let write_err = sink.write_all(trace.as_bytes()).err();
        let received = self.receive(sink, write_err)?;
        // The transaction ends here whatever the outcome (RFC 5321 4.1.1.4).
        let Some(tx) = self.tx.take() else {
            return Ok(reply::need_mail());
        };
        Ok(self.end_of_message(&tx, received))
    }

    /// The reasons to refuse DATA before the 354.
    fn check_data(&self) -> Result<(), Reply> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(reply::need_mail());
        };
        if tx.rcpts.is_empty() {
            return Err(reply::need_rcpt());
        }
        if !self
            .ctx
            .spool
            .has_room(tx.params.size.unwrap_or(0), MIN_FREE_PERCENT)
        {
            return Err(reply::no_space());
        }
        Ok(())
    }

    /// Send 354 and read the message to its final dot into `sink`, which
    /// already holds the Received: field (`write_err`: writing it failed).
    fn receive(&mut self, mut sink: Sink, mut write_err: Option<io::Error>) -> Result<Received, Hangup> {
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
                    let out = submission_fixes(h, sink.id(), &self.cfg.hostname);
                    header = None;
                    if write_err.is_none() {
                        write_err = sink.write_all(&out).err();
                    }
                }
            }
            if write_err.is_none() && !chunk.is_empty() {
                write_err = sink.write_all(&chunk).err();
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
        Ok(Received {
            sink,
            reader,
            write_err,
        })
    }

    /// The finished message: refuse it, or build its envelope and commit it.
    fn end_of_message(&mut self, tx: &Transaction, received: Received) -> Reply {
        let Received {
            sink,
            reader,
            write_err,
        } = received;
        let id = sink.id().clone();
        let refusal = match reader.error() {
            Some(DataError::TooBig) => Some(reply::size_exceeded()),
            Some(DataError::BareNewline) => Some(reply::bare_newline()),
            Some(DataError::LineTooLong) => Some(reply::data_line_too_long()),
            None if reader.received_count() > self.cfg.session.max_received => Some(reply::mail_loop()),
            None => None,
        };
        if let Some(r) = refusal {
            // Dropping `sink` removes its temporary file: nothing is queued.
            return r;
        }
        if let Some(e) = write_err {
            log::error!("{id}: cannot write to the spool: {e}");
            return if sys::is_no_space(&e) {
                reply::no_space()
            } else {
                reply::local_error()
            };
        }
        let env = self.envelope(&id, tx, sink.bytes_written(), reader.saw_8bit());
        // Stage hook (end of message): checks and transforms of the finished
        // message (milters, DKIM signing) go here, with `env` and the message
        // in `sink`; a refusal returns its reply and drops the sink.
        if let Err(e) = sink.commit(&env) {
            log::error!("{id}: {e}");
            return spool_reply(&e);
        }
        maillog::queued(&id, &env.sender, env.size, env.recipients.len(), self.peer);
        self.meter.accepted();
        if let Some(q) = &self.ctx.queued {
            let _ = q.try_send(id.clone());
        }
        let r = reply::queued(id.as_str());
        self.queued.push(id);
        r
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
        env.requiretls = tx.params.requiretls;
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
                r.notify = p.notify;
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
/// header section: its end is in it, or it grew too large to hold.
fn header_complete(h: &[u8]) -> bool {
    h.len() > MAX_HELD_HEADER || message::find_end(h).is_some()
}

/// The held start of a submitted message with the Date: and Message-ID: fields
/// it lacks put in front (RFC 6409 8.2 and 8.3). A last line without its line
/// end (the hold grew too large mid-line) is passed on as it is.
fn submission_fixes(h: &[u8], id: &QueueId, hostname: &str) -> Vec<u8> {
    let complete = match message::find_end(h) {
        Some(_) => h.len(),
        None => h.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1),
    };
    let (lines, cut) = h.split_at_checked(complete).unwrap_or((h, &[]));
    let (mut head, body) = Header::parse(lines);
    let mut at = 0;
    if !head.has("Date") && head.insert(at, "Date", &clock::rfc5322(clock::now())).is_ok() {
        at += 1;
    }
    if !head.has("Message-ID") {
        let _ = head.insert(at, "Message-ID", &format!("<{id}@{hostname}>"));
    }
    let mut out = head.to_message(body);
    out.extend_from_slice(cut);
    out
}

/// RFC 3463: a full disk is X.3.1 (452); anything else the client retries (451).
fn spool_reply(e: &SpoolError) -> Reply {
    if e.is_no_space() {
        reply::no_space()
    } else {
        reply::local_error()
    }
}
