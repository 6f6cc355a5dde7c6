//! One mail transaction on a connection already greeted (and encrypted and
//! authenticated as the hop needs): MAIL, RCPT for each recipient, DATA and
//! the message, and an outcome for each recipient. It owns no socket and
//! chooses no host: `remote` opens the connection and walks the hops, and
//! the transaction runs over any `Client<S>`, so tests script the far end.
//!
//! SMTP (RFC 5321 3.3) and LMTP (RFC 2033) alike: the commands sent are the
//! same, and the replies after the message are read in one place
//! ([`after_data`]), where LMTP reads one per accepted recipient instead of
//! one for all.

use std::io::{self, Read, Write};
use std::time::Duration;

use crate::deliver::client::{self, Client, Extensions, Reply, Timed};
use crate::deliver::outcome::{self, Outcome, Stage, Success};
use crate::smtp::xtext;
use crate::spool::{BodyType, DsnRet, Envelope, Recipient};

/// The most bytes of the message sent in one write, each write under the
/// data timeout (RFC 5321 4.5.3.2.5's data-block timeout).
const BLOCK: usize = 64 * 1024;

/// The RFC 5321 4.5.3.2 timeouts a transaction runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// MAIL, RCPT, DATA (its 354) and RSET.
    pub command: Duration,
    /// Each block of the message.
    pub data: Duration,
    /// The reply after the final dot.
    pub data_done: Duration,
}

/// What goes out: the envelope as queued, and the message in its wire form
/// (CRLF, dot-stuffed, with the final dot; see `client::wire_body`).
pub struct Message<'a> {
    pub env: &'a Envelope,
    pub wire: &'a [u8],
}

/// The protocol on the connection: they differ after the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RFC 5321: one reply to the message, for every recipient.
    Smtp,
    /// RFC 2033 4.2: one reply per accepted recipient, in RCPT order; the
    /// server is the final delivery.
    Lmtp,
}

/// What one host did with the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostResult {
    /// It answered for the recipients: an outcome and the success notice
    /// owed, for each, in order.
    Done(Vec<(Outcome, Success)>),
    /// It took nothing (a lost connection, a 4xx to MAIL): try the next
    /// address or host; this is why.
    Next(Outcome),
}

/// The transaction for every recipient in `rcpts`. When the server answers
/// 452 to some RCPTs (RFC 5321 4.5.3.1.10: too many recipients) after taking
/// others, those go in another transaction on the same connection. With
/// `rset` (a connection kept from an earlier message) it starts with RSET;
/// None when that fails: the connection is no longer usable, and nothing was
/// delivered on it. The bool says whether the connection may carry another
/// transaction. In `proto` LMTP, one reply per recipient follows the message.
pub fn run<S: Read + Write + Timed>(
    proto: Protocol,
    c: &mut Client<S>,
    ext: &Extensions,
    msg: &Message<'_>,
    rcpts: &[&Recipient],
    t: &Timeouts,
    mut rset: bool,
) -> Option<(HostResult, bool)> {
    // RFC 9422: at most RCPTMAX recipients per transaction, and at most
    // MAILMAX transactions on the connection; the rest wait for a new one.
    let per_transaction = ext.rcptmax.unwrap_or(usize::MAX).max(1);
    let mut todo: Vec<usize> = (0..rcpts.len()).collect();
    let mut results: Vec<Option<(Outcome, Success)>> = vec![None; rcpts.len()];
    let mut reusable = true;
    while !todo.is_empty() && reusable {
        if let Some(max) = ext.mailmax.filter(|&m| c.transactions() >= m) {
            for &i in &todo {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some((outcome::mailmax_reached(max), Success::Relayed));
                }
            }
            break;
        }
        let batch: Vec<usize> = todo.drain(..per_transaction.min(todo.len())).collect();
        let subset: Vec<&Recipient> = batch.iter().filter_map(|&i| rcpts.get(i).copied()).collect();
        let first = results.iter().all(Option::is_none);
        let (r, ok, closed) = match once(proto, c, ext, msg, &subset, t, rset) {
            Some(r) => r,
            None if first => return None,
            // A later transaction's RSET failed: what is left waits.
            None => {
                for &i in batch.iter().chain(&todo) {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some((outcome::rset_refused(), Success::Relayed));
                    }
                }
                reusable = false;
                break;
            }
        };
        c.count_transaction();
        // A transaction the server did not end (no recipient taken) must be
        // reset before the next MAIL (RFC 5321 4.1.1.5).
        rset = !closed;
        reusable = ok;
        let round = match r {
            HostResult::Next(o) if first => return Some((HostResult::Next(o), reusable_after(c, ext, ok))),
            // Some recipients already went: these wait for the next attempt.
            HostResult::Next(o) => batch.iter().map(|_| (o.clone(), Success::Relayed)).collect(),
            HostResult::Done(rs) => rs,
        };
        let mut again = Vec::new();
        let mut progress = false;
        for (&i, res) in batch.iter().zip(round) {
            if res.0.is_delivered() {
                progress = true;
            } else if too_many_recipients(&res.0) {
                again.push(i);
            }
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(res);
            }
        }
        // RFC 5321 4.5.3.1.10: those refused with 452 go in a transaction of
        // their own, as long as the server takes some each time.
        if progress {
            todo.extend(again);
        }
    }
    let done = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| (outcome::no_result(), Success::Relayed)))
        .collect();
    Some((HostResult::Done(done), reusable_after(c, ext, reusable)))
}

/// Whether the connection may carry another message: it is in step, and the
/// server's MAILMAX leaves room.
fn reusable_after<S: Read + Write + Timed>(c: &Client<S>, ext: &Extensions, in_step: bool) -> bool {
    in_step && ext.mailmax.is_none_or(|m| c.transactions() < m)
}

/// RFC 5321 4.5.3.1.10: a 452 to RCPT means "not in this transaction". A
/// 452 after the message (an LMTP server's full mailbox) is no such thing.
fn too_many_recipients(o: &Outcome) -> bool {
    o.is_temporary() && o.stage() == Stage::Rcpt && o.reply().is_some_and(|r| r.code == 452)
}

/// One transaction; None when the leading RSET (see [`run`]) failed. Besides
/// the result and whether the connection is in step: whether the server has
/// ended the transaction (the message went and its reply came, or MAIL was
/// refused); if not, the next one on the connection starts with RSET.
fn once<S: Read + Write + Timed>(
    proto: Protocol,
    c: &mut Client<S>,
    ext: &Extensions,
    msg: &Message<'_>,
    rcpts: &[&Recipient],
    t: &Timeouts,
    rset: bool,
) -> Option<(HostResult, bool, bool)> {
    let env = msg.env;
    // As Postfix: a server that offers DSN takes the NOTIFY request over;
    // otherwise an LMTP server delivered (it is the final hop), an SMTP
    // server only relayed.
    let success = match (ext.dsn, proto) {
        (true, _) => Success::PassedOn,
        (false, Protocol::Smtp) => Success::Relayed,
        (false, Protocol::Lmtp) => Success::Delivered,
    };
    let all = |o: Outcome| HostResult::Done(rcpts.iter().map(|_| (o.clone(), success)).collect());
    // RFC 6531 3.2: no SMTPUTF8 at the far end, and the message needs
    // it: a non-ASCII address or header. Declared but not needed, it
    // goes as plain ESMTP (as Postfix does).
    let needs_utf8 = env.smtputf8
        && (!env.sender.is_ascii() || rcpts.iter().any(|r| !r.addr.is_ascii()) || !headers_ascii(msg.wire));
    if needs_utf8 && !ext.smtputf8 {
        return Some((all(outcome::needs_smtputf8()), true, true));
    }
    // RFC 3030 4: binary content only to a server that takes it; tern cannot
    // convert it to 7bit or 8bit.
    if env.body == BodyType::Binary && !(ext.binarymime && ext.chunking) {
        return Some((all(outcome::needs_binarymime()), true, true));
    }
    // What BDAT sends: the message without transparency dots.
    let chunk = ext.chunking.then(|| unstuffed(msg.wire));
    // RFC 1870: the size on the wire (CRLF, without the final dot; for DATA
    // the stuffed dots are counted too, which only errs on the large side).
    let size = chunk.as_ref().map_or(msg.wire.len().saturating_sub(3), Vec::len) as u64;
    if let Some(limit) = ext.size.filter(|l| *l > 0) {
        if size > limit {
            return Some((all(outcome::too_big(size, limit)), true, true));
        }
    }
    let mail = mail_command(env, ext, size);
    let rcpt_lines: Vec<String> = rcpts.iter().map(|r| rcpt_command(r, ext)).collect();
    let _ = c.set_timeouts(t.command);
    // RFC 3030: BDAT to a server that offers CHUNKING: no dot-stuffing, and a
    // message whose size is said first.
    let sent = if ext.chunking {
        c.envelope_only(rset, &mail, &rcpt_lines, ext.pipelining)
    } else {
        c.envelope(rset, &mail, &rcpt_lines, ext.pipelining)
    };
    let envelope = match sent {
        // Closed meanwhile, on a kept connection: before the body, so
        // nothing was delivered; the caller opens a new one.
        Err(_) if rset => return None,
        Ok(e) if rset && e.rset.as_ref().is_none_or(|r| r.code != 250) => return None,
        Ok(e) => e,
        Err(e) => {
            return Some((
                HostResult::Next(outcome::network(Stage::Mail, "MAIL/RCPT", &e)),
                false,
                false,
            ))
        }
    };
    if !envelope.mail.is_positive() {
        let o = outcome::reply(Stage::Mail, &envelope.mail);
        let r = if o.is_temporary() {
            HostResult::Next(o)
        } else {
            all(o)
        };
        return Some((r, true, true));
    }
    let mut results: Vec<(Outcome, Success)> = Vec::new();
    let mut accepted = Vec::new();
    for (i, _) in rcpts.iter().enumerate() {
        match envelope.rcpts.get(i) {
            Some(r) => {
                if r.is_positive() {
                    accepted.push(i);
                }
                results.push((outcome::reply(Stage::Rcpt, r), success));
            }
            None => results.push((outcome::no_rcpt_reply(), success)),
        }
    }
    // The reply after the message is the one that counts for each accepted.
    let mut settle = |outcomes: Vec<Outcome>| {
        for (&i, o) in accepted.iter().zip(outcomes) {
            if let Some(slot) = results.get_mut(i) {
                slot.0 = o;
            }
        }
    };
    let body = match &envelope.data {
        None if !accepted.is_empty() => chunk.as_deref().map(|ch| (ch, "BDAT")),
        None => None,
        Some(d) if d.code == 354 => Some((msg.wire, "DATA")),
        Some(d) => {
            settle(vec![outcome::reply(Stage::Data, d); accepted.len()]);
            None
        }
    };
    let mut closed = false;
    if let Some((bytes, how)) = body {
        let _ = c.set_timeouts(t.data);
        let sent = if how == "BDAT" {
            send_chunk(c, bytes)
        } else {
            send_body(c, bytes)
        };
        let _ = c.set_timeouts(t.data_done);
        let (replies, lost) = match sent {
            Ok(()) => after_data(proto, c, accepted.len()),
            Err(e) => (Vec::new(), Some(e)),
        };
        // RFC 5321 3.8: after a 421 the server closes the connection.
        let closing = replies.iter().any(|r| r.code == 421);
        let mut outcomes: Vec<Outcome> = replies.iter().map(|r| outcome::reply(Stage::Data, r)).collect();
        if let Some(e) = &lost {
            // Those answered keep their answer (an LMTP recipient already
            // delivered is never sent again); the rest wait.
            let lost = outcome::network(Stage::Data, &format!("connection lost after {how}"), e);
            outcomes.resize(accepted.len(), lost);
        }
        settle(outcomes);
        if lost.is_some() || closing {
            return Some((HostResult::Done(results), false, false));
        }
        closed = true;
    }
    let _ = c.set_timeouts(t.command);
    Some((HostResult::Done(results), true, closed))
}

/// The replies after the final dot, one for each of the `accepted`
/// recipients: SMTP's single reply counts for all of them (RFC 5321
/// 4.1.1.4); LMTP sends one per recipient, in the order of the RCPTs
/// (RFC 2033 4.2), each under the data-done timeout. The error, when the
/// connection failed, comes with the replies read before it: fewer than
/// `accepted`. A 421 (the server is closing) stands for itself and every
/// reply still to come.
fn after_data<S: Read + Write + Timed>(
    proto: Protocol,
    c: &mut Client<S>,
    accepted: usize,
) -> (Vec<Reply>, Option<io::Error>) {
    let mut replies = Vec::with_capacity(accepted);
    while replies.len() < accepted {
        match c.reply() {
            Ok(r) if proto == Protocol::Smtp || r.code == 421 => {
                replies.resize(accepted, r);
            }
            Ok(r) => replies.push(r),
            Err(e) => return (replies, Some(e)),
        }
    }
    (replies, None)
}

/// `MAIL FROM:<sender>` with the parameters the server understands.
fn mail_command(env: &Envelope, ext: &Extensions, size: u64) -> String {
    let mut mail = format!("MAIL FROM:<{}>", env.sender);
    if ext.size.is_some() {
        mail.push_str(&format!(" SIZE={size}"));
    }
    // RFC 6152: declare 8-bit content when the server understands it;
    // to one that does not, it goes as is (as Postfix does by default).
    if env.body != BodyType::SevenBit && ext.eightbitmime {
        mail.push_str(" BODY=8BITMIME");
    }
    if env.smtputf8 && ext.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    // RFC 8689 4.1: passed on; a host without it never gets the message
    // (remote checks that before the transaction).
    if env.requiretls && ext.requiretls {
        mail.push_str(" REQUIRETLS");
    }
    if ext.dsn {
        match env.ret {
            Some(DsnRet::Full) => mail.push_str(" RET=FULL"),
            Some(DsnRet::Hdrs) => mail.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(id) = &env.envid {
            mail.push_str(&format!(" ENVID={}", xtext::encode(id)));
        }
    }
    mail
}

/// `RCPT TO:<addr>`, with the DSN request passed on when the server takes it
/// (RFC 3461 5.2.2).
fn rcpt_command(r: &Recipient, ext: &Extensions) -> String {
    let mut line = format!("RCPT TO:<{}>", r.addr);
    if ext.dsn {
        if let Some(n) = &r.notify {
            line.push_str(&format!(" NOTIFY={n}"));
        }
        if let Some(o) = &r.orcpt {
            // Stored decoded as "rfc822;addr"; the address part is xtext.
            let (kind, addr) = o.split_once(';').unwrap_or(("rfc822", o));
            line.push_str(&format!(" ORCPT={kind};{}", xtext::encode(addr)));
        }
    }
    line
}

/// The whole message as one `BDAT n LAST` chunk (RFC 3030 2), in blocks each
/// under the data-block timeout; the reply is read by [`after_data`].
fn send_chunk<S: Read + Write + Timed>(c: &mut Client<S>, data: &[u8]) -> io::Result<()> {
    c.send(format!("BDAT {} LAST\r\n", data.len()).as_bytes())?;
    send_body(c, data)
}

/// The wire form (see `client::wire_body`) without its transparency: the
/// leading dot each line that starts with one got, and the final `.CRLF`.
/// What BDAT sends (RFC 3030 2: the data is sent as it is).
pub fn unstuffed(wire: &[u8]) -> Vec<u8> {
    let body = wire.strip_suffix(b".\r\n").unwrap_or(wire);
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while !rest.is_empty() {
        let line_len = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (line, next) = rest.split_at(line_len);
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        rest = next;
    }
    out
}

/// The message as it goes to a next hop (the wire form of
/// `client::wire_body`), or why it never goes: a NUL (issue 16). A
/// Return-Path: at the top is left out (RFC 5321 4.4: only final delivery
/// adds one; `message_drop_headers` removes it on the way in, but a message
/// queued before, or with another list, may still hold one).
pub fn wire(message: &[u8]) -> Result<Vec<u8>, Outcome> {
    if message.contains(&0) {
        return Err(outcome::contains_nul());
    }
    if crate::message::get(message, "Return-Path").is_none() {
        return Ok(client::wire_body(message));
    }
    let (mut head, body) = crate::message::Header::parse(message);
    head.remove("Return-Path");
    Ok(client::wire_body(&head.to_message(body)))
}

/// The message in blocks, each under the data-block timeout.
fn send_body<S: Read + Write + Timed>(c: &mut Client<S>, wire: &[u8]) -> io::Result<()> {
    for block in wire.chunks(BLOCK) {
        c.send(block)?;
    }
    Ok(())
}

/// Whether the header section of the wire-form message is ASCII.
fn headers_ascii(wire: &[u8]) -> bool {
    let end = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(wire.len());
    wire.get(..end).unwrap_or(wire).is_ascii()
}

#[cfg(test)]
mod tests;
