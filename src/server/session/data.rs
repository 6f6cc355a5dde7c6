//! DATA (RFC 5321 4.1.1.4) and BDAT (RFC 3030): the message, and the one
//! reply that says whether it is queued. 250 is sent only after the spool's
//! commit.
//!
//! Both commands read the data through the same checks (`smtp::dot`: size,
//! CRLF only, line length, NUL, Received: count) into a `pipeline::Builder`;
//! at the end of the message (the final dot, or the LAST chunk)
//! `end_of_message` refuses it, or builds the draft and its envelope, runs the
//! pipeline's stages (`pipeline::finish`) and commits what they leave.

use std::io::{self, Write};

use super::{filters, is_timeout, Door, Hangup, Session, Transaction, MIN_FREE_PERCENT};
use crate::clock;
use crate::maillog;
use crate::pipeline::{self, Body, Builder, Draft, Origin, Stages, Store};
use crate::server::conn;
use crate::smtp::address::ForwardPath;
use crate::smtp::command::{self, Body as BodyParam};
use crate::smtp::dot::{DataError, DataReader, Fed};
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

    fn commit(self, env: &Envelope) -> Result<(), SpoolError> {
        match self {
            Sink::Queue(i) => i.commit(env),
            Sink::Maildrop(p) => p.commit(env),
        }
    }

    /// Commit on hold: into the queue's hold/ (the maildrop has no hold; its
    /// sessions have no milters or policy services to ask for one).
    fn commit_held(self, env: &Envelope) -> Result<(), SpoolError> {
        match self {
            Sink::Queue(i) => i.commit_held(env),
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

impl Store for Sink {
    fn append_file(&mut self, src: &mut std::fs::File) -> io::Result<u64> {
        match self {
            Sink::Queue(i) => i.append_file(src),
            Sink::Maildrop(p) => Store::append_file(p, src),
        }
    }
}

/// A message being received: where it goes, the checks on its data, and the
/// data so far.
pub(super) struct Receiving {
    sink: Sink,
    reader: DataReader,
    builder: Builder,
    /// The first failed write of the data; the rest of it was still read.
    write_err: Option<io::Error>,
}

impl Receiving {
    /// Check and keep one piece of the data.
    fn feed(&mut self, input: &[u8], chunk: &mut Vec<u8>) -> Fed {
        let fed = self.reader.feed(input, chunk);
        if self.write_err.is_none() && !chunk.is_empty() && self.reader.error().is_none() {
            self.write_err = self.builder.push(chunk).err();
        }
        chunk.clear();
        fed
    }
}

impl Session<'_> {
    pub(super) fn data(&mut self) -> Result<Reply, Hangup> {
        if let Err(r) = self.check_data() {
            return Ok(r);
        }
        if self.tx.as_ref().is_some_and(|t| t.chunks.is_some()) {
            return Ok(reply::data_after_bdat());
        }
        let rx = match self.start_message(DataReader::new(self.cfg.session.max_message_size)) {
            Ok(rx) => rx,
            Err(r) => return Ok(r),
        };
        // Stage hook (DATA): policy services and milters, before the 354.
        if let Some(r) = self.filters_data(rx.sink.id()) {
            self.tx = None;
            self.filters_abort();
            return Ok(r);
        }
        let rx = self.receive(rx)?;
        // The transaction ends here whatever the outcome (RFC 5321 4.1.1.4).
        let Some(tx) = self.tx.take() else {
            return Ok(reply::need_mail());
        };
        Ok(self.end_of_message(&tx, rx))
    }

    /// RFC 3030 2: one chunk of `size` octets, the last one with `last`. The
    /// chunk is read whatever the answer, since the client sent it without
    /// waiting (a refused BDAT's data is thrown away). A chunk that is not the
    /// last is answered as read; the LAST one with the message's fate.
    pub(super) fn bdat(&mut self, size: u64, last: bool) -> Result<Reply, Hangup> {
        let mut refusal = self.check_data().err();
        if refusal.is_none() && self.tx.as_ref().is_some_and(|t| t.chunks.is_none()) {
            match self.start_message(DataReader::chunked(self.cfg.session.max_message_size)) {
                // Stage hook (DATA), at the first chunk.
                Ok(rx) => match self.filters_data(rx.sink.id()) {
                    Some(r) => {
                        self.filters_abort();
                        refusal = Some(r);
                    }
                    None => {
                        if let Some(tx) = self.tx.as_mut() {
                            tx.chunks = Some(Box::new(rx));
                        }
                    }
                },
                Err(r) => refusal = Some(r),
            }
        }
        if refusal.is_some() {
            // A transaction that cannot go on ends (later chunks get 503).
            if self.tx.as_ref().is_some_and(|t| !t.rcpts.is_empty()) {
                self.tx = None;
            }
        }
        let _ = self.io.set_timeout(self.cfg.session.data_timeout);
        let mut chunk = Vec::with_capacity(64 * 1024);
        let mut left = size;
        loop {
            let avail = self.io.buffered();
            let take = usize::try_from(left).unwrap_or(usize::MAX).min(avail.len());
            let piece = avail.get(..take).unwrap_or_default();
            let used = match self.tx.as_mut().and_then(|t| t.chunks.as_mut()) {
                Some(rx) if refusal.is_none() => rx.feed(piece, &mut chunk).consumed,
                _ => take,
            };
            self.io.consume(used);
            left -= used as u64;
            if left == 0 {
                break;
            }
            self.fill_data()?;
        }
        let _ = self.io.set_timeout(self.cfg.session.command_timeout);
        if let Some(r) = refusal {
            return Ok(r);
        }
        if !last {
            return Ok(reply::chunk_received(size));
        }
        let Some(mut tx) = self.tx.take() else {
            return Ok(reply::need_mail());
        };
        let Some(mut rx) = tx.chunks.take() else {
            return Ok(reply::need_mail());
        };
        rx.reader.finish();
        Ok(self.end_of_message(&tx, *rx))
    }

    /// More data from the client, or the end of the session.
    fn fill_data(&mut self) -> Result<(), Hangup> {
        match self.io.fill() {
            Ok(0) => Err(Hangup),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => {
                // Postfix's name for the wait inside DATA.
                maillog::timeout(self.peer, "END-OF-MESSAGE", conn::is_stress_timeout(&e));
                self.send(reply::timeout())?;
                Err(Hangup)
            }
            Err(_) => Err(Hangup),
        }
    }

    /// The reasons to refuse DATA before the 354 (or a BDAT chunk).
    fn check_data(&self) -> Result<(), Reply> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(reply::need_mail());
        };
        if tx.rcpts.is_empty() {
            return Err(reply::need_rcpt());
        }
        if tx.chunks.is_none()
            && !self
                .ctx
                .spool
                .has_room(tx.params.size.unwrap_or(0), MIN_FREE_PERCENT)
        {
            return Err(reply::no_space());
        }
        Ok(())
    }

    /// A new message: its queue id and file (or maildrop drop), the checks
    /// its data goes through, and where its data is kept.
    fn start_message(&self, reader: DataReader) -> Result<Receiving, Reply> {
        let (sink, spill) = match self.ctx.door {
            Door::Queue => match self.ctx.spool.begin() {
                Ok(i) => (Sink::Queue(i), Some(&*self.ctx.spool)),
                Err(e) => return Err(spool_reply(&e)),
            },
            // The maildrop's user may not write the spool's tmp/: in memory,
            // bounded by max_message_size as the reader is.
            Door::Maildrop => (
                Sink::Maildrop(maildrop::Pending::new(self.ctx.spool.root())),
                None,
            ),
        };
        Ok(Receiving {
            sink,
            reader,
            builder: Builder::new(Body::new(spill)),
            write_err: None,
        })
    }

    /// Send 354 and read the message to its final dot.
    fn receive(&mut self, mut rx: Receiving) -> Result<Receiving, Hangup> {
        self.send(reply::start_data())?;
        let _ = self.io.set_timeout(self.cfg.session.data_timeout);
        let mut chunk = Vec::with_capacity(64 * 1024);
        loop {
            let fed = rx.feed(self.io.buffered(), &mut chunk);
            self.io.consume(fed.consumed);
            if fed.done {
                break;
            }
            self.fill_data()?;
        }
        let _ = self.io.set_timeout(self.cfg.session.command_timeout);
        Ok(rx)
    }

    /// The finished message: refuse it, or build its draft and envelope, run
    /// the pipeline's stages over it and commit what they leave. The
    /// transaction is over for the milters too, whatever the outcome.
    fn end_of_message(&mut self, tx: &Transaction, rx: Receiving) -> Reply {
        let r = self.message_fate(tx, rx);
        self.filters_abort();
        r
    }

    fn message_fate(&mut self, tx: &Transaction, rx: Receiving) -> Reply {
        let Receiving {
            mut sink,
            reader,
            builder,
            write_err,
        } = rx;
        let id = sink.id().clone();
        let refusal = match reader.error() {
            Some(DataError::TooBig) => Some(reply::size_exceeded()),
            Some(DataError::BareNewline) => Some(reply::bare_newline()),
            Some(DataError::LineTooLong) => Some(reply::data_line_too_long()),
            Some(DataError::Nul) => Some(reply::nul_in_data()),
            None if reader.received_count() > self.cfg.session.max_received => Some(reply::mail_loop()),
            None => None,
        };
        if let Some(r) = refusal {
            // Dropping `sink` removes its file: nothing is queued.
            return r;
        }
        let built = match write_err {
            Some(e) => Err(e),
            None => builder.finish(),
        };
        let (mut header, body) = match built {
            Ok(hb) => hb,
            Err(e) => return write_failed(&id, &e),
        };
        // RFC 5321 4.4: the trace field goes on top, before any stage looks.
        let _ = header.insert(0, "Received", &self.received_header(&id, tx));
        let mut draft = Draft {
            header,
            body,
            env: self.envelope(&id, tx, reader.saw_8bit()),
        };
        // Inside: signed (in the queue's door; the maildrop's is signed at
        // pickup). Outside: checked, when RCPT made the SPF results.
        let auth = match self.ctx.door {
            Door::Queue => Stages::smtp(&self.ctx.mailauth, self.trusted(), tx.spf.as_ref()),
            Door::Maildrop => Stages::default(),
        };
        // Stage hook (end of data): policy services' END-OF-MESSAGE, then
        // what they asked for earlier (PREPEND, DISCARD), then the milters
        // as the pipeline's stage 3.
        if let Some(r) = self.filters_end_of_data(&id, &draft) {
            return r;
        }
        for (i, h) in self.filters.tx.prepend.iter().enumerate() {
            if let Some((name, value)) = h.split_once(':') {
                // Below tern's own Received:, in the order they were asked for.
                let _ = draft.header.insert(1 + i, name.trim(), value.trim_start());
            }
        }
        let first = tx.rcpts.first().map(|(r, _)| r.to_string());
        if let Some((by, why)) = self.filters.tx.discard.clone() {
            let action = if by == filters::By::Milter {
                "milter-discard"
            } else {
                "discard"
            };
            self.log_filter_action(&id, action, &why, &draft.env.sender, first.as_deref());
            // Postfix answers a discarded message as a queued one.
            return reply::queued(id.as_str());
        }
        let mut ctx = pipeline::Context {
            cfg: self.cfg,
            origin: Origin::Smtp {
                submitted: self.user.is_some(),
            },
            auth,
            milters: self.filters.run(),
        };
        let finished = pipeline::finish(&mut draft, &mut ctx);
        let (refused, discarded, quarantine) = match &ctx.milters {
            Some(run) => (
                run.refused(),
                run.discarded(),
                run.quarantine().map(str::to_owned),
            ),
            None => (false, false, None),
        };
        drop(ctx);
        if let Err(r) = finished {
            if refused {
                self.filters_refused_message(&id, first);
            }
            return r;
        }
        if discarded {
            let why = "milter triggers DISCARD action";
            self.log_filter_action(&id, "milter-discard", why, &draft.env.sender, first.as_deref());
            return reply::queued(id.as_str());
        }
        // A milter's quarantine, or a policy service's HOLD: queued on hold.
        let hold = match (quarantine, self.filters.tx.hold.clone()) {
            (Some(q), _) => Some((
                "milter-hold",
                format!("milter triggers HOLD action: {q}"),
                format!("milter quarantine: {q}"),
            )),
            (None, Some(h)) => Some(("hold", h.clone(), format!("policy service: {h}"))),
            (None, None) => None,
        };
        if let Some((_, _, reason)) = &hold {
            draft.env.hold_reason = Some(reason.clone());
        }
        let env = match pipeline::commit(draft, &mut sink) {
            Ok(env) => env,
            Err(e) => return write_failed(&id, &e),
        };
        let committed = if hold.is_some() {
            sink.commit_held(&env)
        } else {
            sink.commit(&env)
        };
        if let Err(e) = committed {
            log::error!("{id}: {e}");
            return spool_reply(&e);
        }
        maillog::client(&id, self.peer, self.sasl());
        self.ctx.spool.log_queued(&env);
        self.meter.accepted();
        if let Some((action, text, _)) = &hold {
            self.log_filter_action(&id, action, text, &env.sender, first.as_deref());
            // On hold: nothing for the queue runner until `ternctl release`.
            return reply::queued(id.as_str());
        }
        if let Some(q) = &self.ctx.queued {
            let _ = q.try_send(id.clone());
        }
        let r = reply::queued(id.as_str());
        self.queued.push(id);
        r
    }

    /// RFC 5321 4.4 trace field's value (after `Received:`), folded with LF
    /// line ends as the spool stores them.
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
            "from {from}{using}\n\tby {} (tern) with {proto} id {id}",
            self.cfg.hostname
        );
        // Name the recipient only when there is one, as Postfix does, so that
        // Bcc: recipients are not shown to each other.
        if let [(rcpt, _)] = tx.rcpts.as_slice() {
            h.push_str(&format!("\n\tfor <{rcpt}>"));
        }
        h.push_str(&format!("; {}", clock::rfc5322(clock::now())));
        h
    }

    /// The envelope to queue the message with (its size is set at the commit).
    fn envelope(&self, id: &QueueId, tx: &Transaction, saw_8bit: bool) -> Envelope {
        let mut env = Envelope::new(id.clone(), tx.from.to_string(), clock::now());
        env.helo = self.helo.clone();
        env.client_addr = self.peer.ip;
        env.client_name = Some(self.peer.name.clone());
        env.protocol = self.proto();
        env.body = match tx.params.body {
            Some(BodyParam::EightBitMime) => spool::BodyType::EightBitMime,
            Some(BodyParam::BinaryMime) => spool::BodyType::Binary,
            // An undeclared 8-bit body is kept as sent and marked so that
            // delivery can downgrade or refuse it knowingly.
            Some(BodyParam::SevenBit) | None if saw_8bit => spool::BodyType::EightBitMime,
            Some(BodyParam::SevenBit) | None => spool::BodyType::SevenBit,
        };
        env.smtputf8 = tx.params.smtputf8;
        env.requiretls = tx.params.requiretls;
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

/// A failed write of the message into its file: a full disk is 452, else 451.
fn write_failed(id: &QueueId, e: &io::Error) -> Reply {
    log::error!("{id}: cannot write to the spool: {e}");
    if sys::is_no_space(e) {
        reply::no_space()
    } else {
        reply::local_error()
    }
}

/// RFC 3463: a full disk is X.3.1 (452); anything else the client retries (451).
fn spool_reply(e: &SpoolError) -> Reply {
    if e.is_no_space() {
        reply::no_space()
    } else {
        reply::local_error()
    }
}
