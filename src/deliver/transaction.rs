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
mod tests {
    use super::*;
    use crate::deliver::outcome::Verdict;
    use crate::smtp::status::Status;
    use crate::spool::QueueId;

    const T: Timeouts = Timeouts {
        command: Duration::from_secs(5),
        data: Duration::from_secs(5),
        data_done: Duration::from_secs(5),
    };

    fn envelope(rcpts: &[&str]) -> Envelope {
        let mut env = Envelope::new(QueueId::generate(), "a@example.org".to_owned(), 0);
        env.recipients = rcpts.iter().map(|r| Recipient::new((*r).to_owned())).collect();
        env
    }

    /// Run the transaction against `script`; the outcomes and what was sent.
    fn against(
        script: &str,
        ext: &Extensions,
        env: &Envelope,
        rset: bool,
    ) -> (Option<(HostResult, bool)>, String) {
        against_as(Protocol::Smtp, script, ext, env, rset)
    }

    fn against_as(
        proto: Protocol,
        script: &str,
        ext: &Extensions,
        env: &Envelope,
        rset: bool,
    ) -> (Option<(HostResult, bool)>, String) {
        let mut c = crate::deliver::client::script::client(script);
        let wire = crate::deliver::client::wire_body(b"Subject: x\n\nbody\n");
        let msg = Message { env, wire: &wire };
        let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
        let r = run(proto, &mut c, ext, &msg, &rcpts, &T, rset);
        let sent = String::from_utf8_lossy(&c.stream().output).into_owned();
        (r, sent)
    }

    fn done(r: Option<(HostResult, bool)>) -> Vec<(Verdict, Status, String)> {
        match r {
            Some((HostResult::Done(v), _)) => v
                .into_iter()
                .map(|(o, _)| (o.verdict(), o.status(), o.detail().to_owned()))
                .collect(),
            other => panic!("not done: {other:?}"),
        }
    }

    #[test]
    fn each_recipient_gets_its_reply_and_the_data_reply_counts_for_the_accepted() {
        let env = envelope(&["a@x.test", "b@x.test", "c@x.test"]);
        let ext = Extensions {
            pipelining: true,
            ..Extensions::default()
        };
        let script = "250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n451 4.2.0 later\r\n354 go\r\n250 2.0.0 queued as X\r\n";
        let (r, sent) = against(script, &ext, &env, false);
        assert_eq!(
            done(r),
            vec![
                (
                    Verdict::Delivered,
                    Status(2, 0, 0),
                    "250 2.0.0 queued as X".to_owned()
                ),
                (
                    Verdict::Permanent,
                    Status(5, 1, 1),
                    "550 5.1.1 no such user".to_owned()
                ),
                (Verdict::Temporary, Status(4, 2, 0), "451 4.2.0 later".to_owned()),
            ]
        );
        assert!(sent.starts_with(
            "MAIL FROM:<a@example.org>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n"
        ));
        assert!(sent.ends_with("Subject: x\r\n\r\nbody\r\n.\r\n"), "{sent}");
    }

    /// Run the transaction in `proto` against `script`; each recipient's
    /// outcome (verdict, stage, detail) and success notice, and whether the
    /// connection may carry another.
    fn lmtp_against(
        proto: Protocol,
        script: &str,
        ext: &Extensions,
        env: &Envelope,
    ) -> (Vec<(Verdict, Stage, String, Success)>, bool) {
        let (r, _) = against_as(proto, script, ext, env, false);
        let Some((HostResult::Done(v), reusable)) = r else {
            panic!("not done: {r:?}")
        };
        let got = v
            .into_iter()
            .map(|(o, s)| (o.verdict(), o.stage(), o.detail().to_owned(), s));
        (got.collect(), reusable)
    }

    #[test]
    fn lmtp_reads_one_reply_per_accepted_recipient() {
        let env = envelope(&["a@x.test", "b@x.test", "c@x.test"]);
        let ext = Extensions {
            pipelining: true,
            ..Extensions::default()
        };
        // RFC 2033 4.2: b was refused at RCPT, so two replies follow the
        // message, a's then c's.
        let script = "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 <b@x.test> User doesn't exist\r\n\
                      250 2.1.5 ok\r\n354 go\r\n250 2.0.0 <a@x.test> Saved\r\n\
                      452 4.2.2 <c@x.test> Quota exceeded\r\n";
        let (got, reusable) = lmtp_against(Protocol::Lmtp, script, &ext, &env);
        assert_eq!(
            got,
            vec![
                (
                    Verdict::Delivered,
                    Stage::Data,
                    "250 2.0.0 <a@x.test> Saved".to_owned(),
                    Success::Delivered
                ),
                (
                    Verdict::Permanent,
                    Stage::Rcpt,
                    "550 5.1.1 <b@x.test> User doesn't exist".to_owned(),
                    Success::Delivered
                ),
                (
                    Verdict::Temporary,
                    Stage::Data,
                    "452 4.2.2 <c@x.test> Quota exceeded".to_owned(),
                    Success::Delivered
                ),
            ]
        );
        // The full mailbox is not "too many recipients": no second transaction.
        assert!(reusable);
        // The same replies read as SMTP: the first after the message counts
        // for both, and the second is left unread (a server speaking LMTP to
        // an SMTP client would desynchronise it).
        let (smtp, _) = lmtp_against(Protocol::Smtp, script, &ext, &env);
        assert_eq!(smtp[2].2, "250 2.0.0 <a@x.test> Saved");
        assert_eq!(smtp[0].3, Success::Relayed);
        // A server that offers DSN takes the NOTIFY request over.
        let dsn = Extensions {
            dsn: true,
            ..ext.clone()
        };
        let (got, _) = lmtp_against(Protocol::Lmtp, script, &dsn, &env);
        assert_eq!(got[0].3, Success::PassedOn);
    }

    #[test]
    fn lmtp_keeps_the_replies_that_came_before_the_connection_broke() {
        let env = envelope(&["a@x.test", "b@x.test", "c@x.test"]);
        let ext = Extensions::default();
        // Without PIPELINING: one command at a time.
        let script = "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 <a@x.test> Saved\r\n";
        let (got, reusable) = lmtp_against(Protocol::Lmtp, script, &ext, &env);
        assert!(!reusable);
        // a is delivered and stays so: it must not be sent again.
        assert_eq!(got[0].0, Verdict::Delivered);
        for g in &got[1..] {
            assert_eq!((g.0, g.1), (Verdict::Temporary, Stage::Data), "{g:?}");
            assert!(g.2.starts_with("connection lost after DATA"), "{g:?}");
        }
    }

    #[test]
    fn lmtp_421_stands_for_the_replies_still_to_come() {
        let env = envelope(&["a@x.test", "b@x.test", "c@x.test"]);
        let ext = Extensions {
            pipelining: true,
            ..Extensions::default()
        };
        let script = "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 <a@x.test> Saved\r\n\
                      421 4.3.2 shutting down\r\n";
        let (got, reusable) = lmtp_against(Protocol::Lmtp, script, &ext, &env);
        assert!(!reusable);
        assert_eq!(got[0].0, Verdict::Delivered);
        assert_eq!(
            got[1..].iter().map(|g| (g.0, g.2.as_str())).collect::<Vec<_>>(),
            vec![(Verdict::Temporary, "421 4.3.2 shutting down"); 2]
        );
    }

    #[test]
    fn a_temporary_mail_reply_moves_on_a_permanent_one_bounces_all() {
        let env = envelope(&["a@x.test", "b@x.test"]);
        let ext = Extensions::default();
        match against("451 4.3.0 busy\r\n", &ext, &env, false).0 {
            Some((HostResult::Next(o), true)) => {
                assert_eq!((o.stage(), o.detail()), (Stage::Mail, "451 4.3.0 busy"))
            }
            other => panic!("{other:?}"),
        }
        let got = done(against("553 5.7.1 no\r\n", &ext, &env, false).0);
        assert_eq!(got.len(), 2);
        assert!(got
            .iter()
            .all(|(v, s, _)| *v == Verdict::Permanent && *s == Status(5, 7, 1)));
    }

    #[test]
    fn recipients_refused_with_452_go_in_another_transaction() {
        let env = envelope(&["a@x.test", "b@x.test"]);
        let ext = Extensions::default();
        let script = "250 ok\r\n250 ok\r\n452 4.5.3 too many\r\n354 go\r\n250 first\r\n\
                      250 ok\r\n250 ok\r\n354 go\r\n250 second\r\n";
        let (r, sent) = against(script, &ext, &env, false);
        let got = done(r);
        assert_eq!(
            got.iter().map(|g| g.2.as_str()).collect::<Vec<_>>(),
            ["250 first", "250 second"]
        );
        assert_eq!(sent.matches("MAIL FROM").count(), 2);
        assert_eq!(sent.matches("RCPT TO:<b@x.test>").count(), 2);
    }

    #[test]
    fn a_connection_lost_after_the_message_defers_the_accepted() {
        let env = envelope(&["a@x.test", "b@x.test"]);
        let ext = Extensions::default();
        let (r, _) = against("250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n", &ext, &env, false);
        let Some((HostResult::Done(v), reusable)) = r else {
            panic!("{r:?}")
        };
        assert!(!reusable);
        let (a, b) = (&v[0].0, &v[1].0);
        assert!(
            a.is_temporary() && a.detail().starts_with("connection lost after DATA"),
            "{a:?}"
        );
        assert_eq!(a.stage(), Stage::Data);
        assert!(b.is_permanent());
    }

    #[test]
    fn extensions_decide_before_mail() {
        let mut env = envelope(&["δ@x.test"]);
        env.smtputf8 = true;
        let got = done(against("", &Extensions::default(), &env, false).0);
        assert_eq!(got[0].1, Status(5, 6, 7));
        let env = envelope(&["a@x.test"]);
        let small = Extensions {
            size: Some(10),
            ..Extensions::default()
        };
        let got = done(against("", &small, &env, false).0);
        assert_eq!(got[0].1, Status(5, 3, 4));
        assert!(
            got[0].2.ends_with("exceeds the receiving server's limit of 10"),
            "{:?}",
            got[0]
        );
    }

    #[test]
    fn a_kept_connection_that_fails_rset_delivers_nothing() {
        let env = envelope(&["a@x.test"]);
        let ext = Extensions {
            pipelining: true,
            ..Extensions::default()
        };
        assert!(against("", &ext, &env, true).0.is_none());
        assert!(
            against("421 bye\r\n250 ok\r\n250 ok\r\n354 go\r\n", &ext, &env, true)
                .0
                .is_none()
        );
    }

    /// RFC 3030: to a server with CHUNKING the message goes as one BDAT LAST
    /// chunk, undotted, after the recipients' replies; SIZE counts no dots.
    #[test]
    fn chunking_sends_bdat_without_dots() {
        let env = envelope(&["a@x.test"]);
        let ext = Extensions {
            pipelining: true,
            chunking: true,
            size: Some(0),
            ..Extensions::default()
        };
        let mut c = crate::deliver::client::script::client("250 ok\r\n250 ok\r\n250 2.0.0 queued\r\n");
        let wire = client::wire_body(b"Subject: x\n\n.\n..dots\nend\n");
        let msg = Message {
            env: &env,
            wire: &wire,
        };
        let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
        let r = run(Protocol::Smtp, &mut c, &ext, &msg, &rcpts, &T, false);
        let sent = String::from_utf8_lossy(&c.stream().output).into_owned();
        assert_eq!(done(r)[0].0, Verdict::Delivered);
        let data = "Subject: x\r\n\r\n.\r\n..dots\r\nend\r\n";
        assert_eq!(
            sent,
            format!(
                "MAIL FROM:<a@example.org> SIZE=30\r\nRCPT TO:<a@x.test>\r\nBDAT {} LAST\r\n{data}",
                data.len()
            )
        );
        // Nobody accepted: no BDAT at all.
        let mut c = crate::deliver::client::script::client("250 ok\r\n550 no\r\n");
        let r = run(Protocol::Smtp, &mut c, &ext, &msg, &rcpts, &T, false);
        assert_eq!(done(r)[0].0, Verdict::Permanent);
        assert!(!String::from_utf8_lossy(&c.stream().output).contains("BDAT"));
    }

    /// RFC 9422: RCPTMAX splits the recipients into transactions; MAILMAX
    /// caps the transactions on one connection (the rest wait, and the
    /// connection is not kept).
    #[test]
    fn limits_split_recipients_and_cap_transactions() {
        let env = envelope(&["a@x.test", "b@x.test", "c@x.test", "d@x.test", "e@x.test"]);
        let ext = Extensions {
            pipelining: true,
            rcptmax: Some(2),
            mailmax: Some(2),
            ..Extensions::default()
        };
        let one = "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 done\r\n";
        let (r, sent) = against(&one.repeat(2), &ext, &env, false);
        let Some((HostResult::Done(v), reusable)) = r else {
            panic!("{r:?}")
        };
        assert!(!reusable, "MAILMAX reached: not kept");
        assert_eq!(sent.matches("MAIL FROM").count(), 2);
        assert_eq!(sent.matches("RCPT TO").count(), 4);
        let verdicts: Vec<Verdict> = v.iter().map(|(o, _)| o.verdict()).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Delivered,
                Verdict::Delivered,
                Verdict::Delivered,
                Verdict::Delivered,
                Verdict::Temporary
            ]
        );
        assert_eq!(v[4].0.status(), Status(4, 5, 3));
        // No MAILMAX: three transactions of at most two.
        let ext = Extensions {
            rcptmax: Some(2),
            ..ext
        };
        let ext = Extensions { mailmax: None, ..ext };
        let (r, sent) = against(&one.repeat(3), &ext, &env, false);
        assert!(done(r).iter().all(|g| g.0 == Verdict::Delivered));
        assert_eq!(sent.matches("MAIL FROM").count(), 3);
    }

    #[test]
    fn binary_needs_binarymime_and_chunking() {
        let mut env = envelope(&["a@x.test"]);
        env.body = BodyType::Binary;
        let got = done(against("", &Extensions::default(), &env, false).0);
        assert_eq!((got[0].0, got[0].1), (Verdict::Permanent, Status(5, 6, 3)));
    }

    /// Issue 16: no NUL and no Return-Path: ever go to a next hop.
    #[test]
    fn what_never_goes_out() {
        assert_eq!(
            wire(b"Subject: x\n\na\x00b\n").unwrap_err().status(),
            Status(5, 6, 0)
        );
        let w = wire(b"Return-Path: <forged@evil.test>\nSubject: x\nreturn-path: <y>\n\nReturn-Path: body\n")
            .unwrap();
        assert_eq!(w, b"Subject: x\r\n\r\nReturn-Path: body\r\n.\r\n");
        assert_eq!(
            unstuffed(&client::wire_body(b".a\n..\n.\nb")),
            b".a\r\n..\r\n.\r\nb\r\n"
        );
    }

    #[test]
    fn mail_and_rcpt_parameters() {
        let mut env = envelope(&["a@x.test"]);
        env.body = BodyType::EightBitMime;
        env.ret = Some(DsnRet::Hdrs);
        env.envid = Some("id+1".to_owned());
        let all = Extensions {
            size: Some(0),
            eightbitmime: true,
            dsn: true,
            ..Extensions::default()
        };
        assert_eq!(
            mail_command(&env, &all, 42),
            "MAIL FROM:<a@example.org> SIZE=42 BODY=8BITMIME RET=HDRS ENVID=id+2B1"
        );
        assert_eq!(
            mail_command(&env, &Extensions::default(), 42),
            "MAIL FROM:<a@example.org>"
        );
        // RFC 8689: REQUIRETLS passed on to a server that offers it.
        env.requiretls = true;
        let rt = Extensions {
            requiretls: true,
            ..Extensions::default()
        };
        assert_eq!(
            mail_command(&env, &rt, 42),
            "MAIL FROM:<a@example.org> REQUIRETLS"
        );
        let mut r = Recipient::new("a@x.test".to_owned());
        r.notify = crate::smtp::notify::Notify::parse("SUCCESS,FAILURE");
        r.orcpt = Some("rfc822;a=b@x.test".to_owned());
        assert_eq!(
            rcpt_command(&r, &all),
            "RCPT TO:<a@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+3Db@x.test"
        );
        assert_eq!(rcpt_command(&r, &Extensions::default()), "RCPT TO:<a@x.test>");
    }
}
