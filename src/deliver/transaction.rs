//! One mail transaction on a connection already greeted (and encrypted and
//! authenticated as the hop needs): MAIL, RCPT for each recipient, DATA and
//! the message, and an outcome for each recipient. It owns no socket and
//! chooses no host: `remote` opens the connection and walks the hops, and
//! the transaction runs over any `Client<S>`, so tests script the far end.
//!
//! Written for SMTP (RFC 5321 3.3) and kept in the shape LMTP (RFC 2033)
//! needs: the commands it sends are the same, and the replies after the
//! message are read in one place ([`after_data`]), where LMTP will read one
//! per accepted recipient instead of one for all.

use std::io::{self, Read, Write};
use std::time::Duration;

use crate::deliver::client::{Client, Extensions, Reply, Timed};
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
/// transaction.
pub fn run<S: Read + Write + Timed>(
    c: &mut Client<S>,
    ext: &Extensions,
    msg: &Message<'_>,
    rcpts: &[&Recipient],
    t: &Timeouts,
    mut rset: bool,
) -> Option<(HostResult, bool)> {
    let mut todo: Vec<usize> = (0..rcpts.len()).collect();
    let mut results: Vec<Option<(Outcome, Success)>> = vec![None; rcpts.len()];
    loop {
        let subset: Vec<&Recipient> = todo.iter().filter_map(|&i| rcpts.get(i).copied()).collect();
        let (r, reusable) = once(c, ext, msg, &subset, t, rset)?;
        rset = false;
        let round = match r {
            HostResult::Next(o) if results.iter().all(Option::is_none) => {
                return Some((HostResult::Next(o), reusable))
            }
            // Some recipients already went: the rest wait for the next attempt.
            HostResult::Next(o) => todo.iter().map(|_| (o.clone(), Success::Relayed)).collect(),
            HostResult::Done(rs) => rs,
        };
        let mut again = Vec::new();
        let mut progress = false;
        for (&i, res) in todo.iter().zip(round) {
            if res.0.is_delivered() {
                progress = true;
            } else if too_many_recipients(&res.0) {
                again.push(i);
            }
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(res);
            }
        }
        if again.is_empty() || !progress || !reusable {
            let done = results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| (outcome::no_result(), Success::Relayed)))
                .collect();
            return Some((HostResult::Done(done), reusable));
        }
        todo = again;
    }
}

/// RFC 5321 4.5.3.1.10: a 452 to RCPT means "not in this transaction".
fn too_many_recipients(o: &Outcome) -> bool {
    o.is_temporary() && o.reply().is_some_and(|r| r.code == 452)
}

/// One transaction; None when the leading RSET (see [`run`]) failed.
fn once<S: Read + Write + Timed>(
    c: &mut Client<S>,
    ext: &Extensions,
    msg: &Message<'_>,
    rcpts: &[&Recipient],
    t: &Timeouts,
    rset: bool,
) -> Option<(HostResult, bool)> {
    let env = msg.env;
    let success = if ext.dsn {
        Success::PassedOn
    } else {
        Success::Relayed
    };
    let all = |o: Outcome| HostResult::Done(rcpts.iter().map(|_| (o.clone(), success)).collect());
    // RFC 6531 3.2: no SMTPUTF8 at the far end, and the message needs
    // it: a non-ASCII address or header. Declared but not needed, it
    // goes as plain ESMTP (as Postfix does).
    let needs_utf8 = env.smtputf8
        && (!env.sender.is_ascii() || rcpts.iter().any(|r| !r.addr.is_ascii()) || !headers_ascii(msg.wire));
    if needs_utf8 && !ext.smtputf8 {
        return Some((all(outcome::needs_smtputf8()), true));
    }
    // RFC 1870: the size on the wire (CRLF and dot-stuffed, without the final dot).
    let size = msg.wire.len().saturating_sub(3) as u64;
    if let Some(limit) = ext.size.filter(|l| *l > 0) {
        if size > limit {
            return Some((all(outcome::too_big(size, limit)), true));
        }
    }
    let mail = mail_command(env, ext, size);
    let rcpt_lines: Vec<String> = rcpts.iter().map(|r| rcpt_command(r, ext)).collect();
    let _ = c.set_timeouts(t.command);
    let envelope = match c.envelope(rset, &mail, &rcpt_lines, ext.pipelining) {
        // Closed meanwhile, on a kept connection: before the body, so
        // nothing was delivered; the caller opens a new one.
        Err(_) if rset => return None,
        Ok(e) if rset && e.rset.as_ref().is_none_or(|r| r.code != 250) => return None,
        Ok(e) => e,
        Err(e) => {
            return Some((
                HostResult::Next(outcome::network(Stage::Mail, "MAIL/RCPT", &e)),
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
        return Some((r, true));
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
    match &envelope.data {
        None => {}
        Some(d) if d.code == 354 => {
            let _ = c.set_timeouts(t.data);
            let sent = send_body(c, msg.wire);
            let _ = c.set_timeouts(t.data_done);
            match sent.and_then(|()| after_data(c, accepted.len())) {
                Ok(replies) => settle(replies.iter().map(|r| outcome::reply(Stage::Data, r)).collect()),
                Err(e) => {
                    let lost = outcome::network(Stage::Data, "connection lost after DATA", &e);
                    settle(vec![lost; accepted.len()]);
                    return Some((HostResult::Done(results), false));
                }
            }
        }
        Some(d) => settle(vec![outcome::reply(Stage::Data, d); accepted.len()]),
    }
    let _ = c.set_timeouts(t.command);
    Some((HostResult::Done(results), true))
}

/// The replies after the final dot, one for each of the `accepted`
/// recipients: SMTP's single reply counts for all of them (RFC 5321
/// 4.1.1.4); LMTP sends one per recipient (RFC 2033 4.2).
fn after_data<S: Read + Write + Timed>(c: &mut Client<S>, accepted: usize) -> io::Result<Vec<Reply>> {
    let r = c.reply()?;
    Ok(vec![r; accepted])
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
        let mut c = crate::deliver::client::script::client(script);
        let wire = crate::deliver::client::wire_body(b"Subject: x\n\nbody\n");
        let msg = Message { env, wire: &wire };
        let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
        let r = run(&mut c, ext, &msg, &rcpts, &T, rset);
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
