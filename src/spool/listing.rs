//! The queue as people read it: Postfix's `mailq` listing, shared by
//! `ternctl queue`, `mailq`/`sendmail -bp` and the daemon's control socket
//! (which lists for users who may not read the spool themselves).

use std::fmt::Write as _;

use crate::clock;
use crate::spool::{Envelope, RcptStatus, Spool, SpoolError};

/// Every message in the queue and on hold, in id order, each with whether it is held.
pub fn messages(spool: &Spool) -> Result<Vec<(Envelope, bool)>, SpoolError> {
    let mut out = Vec::new();
    for id in spool.list()? {
        // Delivered or held between the listing and the read: skip it.
        if let Ok(env) = spool.load(&id) {
            out.push((env, false));
        }
    }
    for id in spool.list_held()? {
        if let Ok(env) = spool.load_held(&id) {
            out.push((env, true));
        }
    }
    out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    Ok(out)
}

/// Postfix's `mailq` columns for long queue ids (`enable_long_queue_ids`, which
/// tern's 16-character ids are): `%-17s %8s %-19s %s` (postqueue's showq_compat.c).
const HEADER: &str = "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n";
/// A recipient line: the three empty columns of that format, then the address.
const RCPT_INDENT: usize = 17 + 1 + 8 + 1 + 19 + 1;
/// A reason is right-aligned so that its closing parenthesis ends in column 78.
const REASON_END: usize = 76;

/// The queue in Postfix's `mailq` format, byte for byte, which people,
/// monitoring checks and log tools already parse:
///
/// ```text
/// ----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------
/// 0193A5F2C41B07E2*      512 Mon Nov 23 14:08:39  alice@example.org
///                             (connect to mx.example.net[192.0.2.1]:25: Connection refused)
///                                                bob@example.net
///
/// -- 0 Kbytes in 1 Request.
/// ```
///
/// `*` marks a message being delivered, `!` a held one. Each recipient still to
/// be delivered is listed; deferred ones first, each run of the same reason
/// under that reason in parentheses on a line of its own, right-aligned; a
/// recipient without a reason after one with gets "(reason unavailable)".
pub fn mailq(spool: &Spool) -> Result<String, SpoolError> {
    let msgs = messages(spool)?;
    // Not yet picked up (ternd down): listed as Postfix lists its maildrop queue.
    let drops = spool.maildrop_list().unwrap_or_default();
    if msgs.is_empty() && drops.is_empty() {
        return Ok("Mail queue is empty\n".to_owned());
    }
    let mut out = String::from(HEADER);
    let mut bytes: u64 = 0;
    let mut first = true;
    let mut separate = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push('\n');
        }
    };
    for (env, held) in &msgs {
        separate(&mut out);
        let mark = if *held {
            "!"
        } else if spool.is_locked(&env.id) {
            "*"
        } else {
            ""
        };
        bytes = bytes.saturating_add(env.size);
        let sender = if env.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            env.sender.as_str()
        };
        let _ = writeln!(
            out,
            "{:<17} {:>8} {} {sender}",
            format!("{}{mark}", env.id),
            env.size,
            arrival(env.created)
        );
        // Like showq: the recipients of the defer log (with reasons) first, then
        // the rest of the queue file's (without).
        let waiting =
            |r: &&crate::spool::Recipient| matches!(r.status, RcptStatus::Pending | RcptStatus::Deferred);
        let deferred = env
            .recipients
            .iter()
            .filter(waiting)
            .filter(|r| r.status == RcptStatus::Deferred)
            .map(|r| (r, reason(r.last_reply.as_deref().unwrap_or_default())));
        let pending = env
            .recipients
            .iter()
            .filter(waiting)
            .filter(|r| r.status == RcptStatus::Pending)
            .map(|r| (r, ""));
        let mut last = "";
        for (r, why) in deferred.chain(pending) {
            if why != last {
                let shown = if why.is_empty() { "reason unavailable" } else { why };
                let pad = REASON_END.saturating_sub(shown.chars().count());
                let _ = writeln!(out, "{:pad$}({shown})", "");
                last = why;
            }
            let _ = writeln!(out, "{:RCPT_INDENT$}{}", "", r.addr);
        }
    }
    for d in &drops {
        separate(&mut out);
        bytes = bytes.saturating_add(d.size);
        let _ = writeln!(
            out,
            "{:<17} {:>8} {} (maildrop queue, sender UID {})",
            d.name,
            d.size,
            arrival(d.since),
            d.uid
        );
    }
    let n = msgs.len() + drops.len();
    let _ = writeln!(
        out,
        "\n-- {} Kbytes in {n} Request{}.",
        bytes / 1024,
        if n == 1 { "" } else { "s" }
    );
    Ok(out)
}

/// asctime(3) of the local time without the year: the 19 characters of
/// Postfix's `%19.19s`.
fn arrival(t: u64) -> String {
    clock::asctime(t).chars().take(19).collect()
}

/// What mailq shows of a recorded outcome (`4.4.1 connect to ...`): the text,
/// without the enhanced status code in front (Postfix shows the DSN reason).
fn reason(record: &str) -> &str {
    match record.split_once(' ') {
        Some((code, rest))
            if code.split('.').count() == 3
                && code
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            rest
        }
        _ => record,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Recipient;
    use std::io::Write;

    fn spooled(s: &Spool, sender: &str, size: usize, rcpts: Vec<Recipient>) -> crate::spool::QueueId {
        let mut inc = s.begin().unwrap();
        inc.write_all(&vec![b'x'; size]).unwrap();
        let id = inc.id().clone();
        let mut env = Envelope::new(id.clone(), sender.to_owned(), 1_700_000_000);
        env.recipients = rcpts;
        env.size = size as u64;
        inc.commit(&env).unwrap();
        id
    }

    fn rcpt(addr: &str, status: RcptStatus, reply: Option<&str>) -> Recipient {
        let mut r = Recipient::new(addr.into());
        r.status = status;
        r.last_reply = reply.map(str::to_owned);
        r
    }

    /// Byte for byte what Postfix's postqueue -p prints for the same queue
    /// (showq_compat.c with long queue ids): columns, the right-aligned reason
    /// on its own line, deferred recipients first, "(reason unavailable)",
    /// the blank line between messages, Kbytes rounded down.
    #[test]
    fn mailq_is_postfix_layout() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        assert_eq!(mailq(&s).unwrap(), "Mail queue is empty\n");
        let refused = "connect to mx.example.org[192.0.2.1]:25: Connection refused";
        let a = spooled(
            &s,
            "",
            1500,
            vec![
                rcpt("new@b.test", RcptStatus::Pending, None),
                rcpt(
                    "a@b.test",
                    RcptStatus::Deferred,
                    Some(&format!("4.4.1 {refused}")),
                ),
                rcpt("done@x.test", RcptStatus::Sent, Some("2.0.0 ok")),
                rcpt(
                    "c@b.test",
                    RcptStatus::Deferred,
                    Some(&format!("4.4.1 {refused}")),
                ),
                rcpt(
                    "d@e.test",
                    RcptStatus::Deferred,
                    Some("4.7.1 451 4.7.1 try later"),
                ),
            ],
        );
        let b = spooled(
            &s,
            "alice@example.org",
            600,
            vec![rcpt("bob@example.net", RcptStatus::Pending, None)],
        );
        let when: String = clock::asctime(1_700_000_000).chars().take(19).collect();
        let pad = |reason: &str| " ".repeat(76 - reason.len());
        let indent = " ".repeat(47);
        let want = format!(
            "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n\
             {a}      1500 {when} MAILER-DAEMON\n\
             {}({refused})\n\
             {indent}a@b.test\n\
             {indent}c@b.test\n\
             {}(451 4.7.1 try later)\n\
             {indent}d@e.test\n\
             {}(reason unavailable)\n\
             {indent}new@b.test\n\
             \n\
             {b}       600 {when} alice@example.org\n\
             {indent}bob@example.net\n\
             \n\
             -- 2 Kbytes in 2 Requests.\n",
            pad(refused),
            pad("451 4.7.1 try later"),
            pad("reason unavailable"),
        );
        assert_eq!(mailq(&s).unwrap(), want);
        let _lock = s.lock(&a).unwrap();
        assert!(mailq(&s).unwrap().contains(&format!("\n{a}*     1500 ")));
        assert_eq!(reason("4.4.1 connect to x"), "connect to x");
        assert_eq!(reason("no status here"), "no status here");
        assert_eq!(reason("4.4 x"), "4.4 x");
    }
}
