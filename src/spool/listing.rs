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

/// The queue in Postfix's `mailq` format, which people and log tools already read:
///
/// ```text
/// -Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
/// 0193A5F2C41B07E2*    512 Mon Nov 23 14:08:39  alice@example.org
/// (451 4.7.1 try later)
///                                          bob@example.net
///
/// -- 1 Kbytes in 1 Request.
/// ```
///
/// `*` marks a message being delivered, `!` a held one. Each pending recipient is
/// listed, under its last deferral reason in parentheses when it has one.
pub fn mailq(spool: &Spool) -> Result<String, SpoolError> {
    let msgs = messages(spool)?;
    // Not yet picked up (ternd down): listed as Postfix lists its maildrop queue.
    let drops = spool.maildrop_list().unwrap_or_default();
    if msgs.is_empty() && drops.is_empty() {
        return Ok("Mail queue is empty\n".to_owned());
    }
    let mut out = String::new();
    // Postfix's "%-10s %8s %-20s %s" header.
    out.push_str("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
    let mut bytes: u64 = 0;
    for (env, held) in &msgs {
        let mark = if *held {
            '!'
        } else if spool.is_locked(&env.id) {
            '*'
        } else {
            ' '
        };
        bytes = bytes.saturating_add(env.size);
        // asctime without the year, as Postfix prints it (20 columns).
        let when: String = clock::asctime(env.created).chars().take(19).collect();
        let sender = if env.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            env.sender.as_str()
        };
        let _ = writeln!(
            out,
            "{:<11} {:>8} {:<20} {sender}",
            format!("{}{mark}", env.id),
            env.size,
            when
        );
        let mut last_reason: Option<&str> = None;
        for r in &env.recipients {
            if !matches!(r.status, RcptStatus::Pending | RcptStatus::Deferred) {
                continue;
            }
            let reason = r
                .last_reply
                .as_deref()
                .filter(|_| r.status == RcptStatus::Deferred);
            if reason.is_some() && reason != last_reason {
                let _ = writeln!(out, "({})", reason.unwrap_or_default());
            }
            last_reason = reason;
            let _ = writeln!(out, "{:41}{}", "", r.addr);
        }
        out.push('\n');
    }
    for d in &drops {
        bytes = bytes.saturating_add(d.size);
        let when: String = clock::asctime(d.since).chars().take(19).collect();
        let _ = writeln!(
            out,
            "{:<11} {:>8} {:<20} (maildrop queue, sender UID {})\n",
            format!("{} ", d.name),
            d.size,
            when,
            d.uid
        );
    }
    let n = msgs.len() + drops.len();
    let _ = writeln!(
        out,
        "-- {} Kbytes in {n} Request{}.",
        bytes.div_ceil(1024),
        if n == 1 { "" } else { "s" }
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Recipient;
    use std::io::Write;

    #[test]
    fn mailq_format() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        assert_eq!(mailq(&s).unwrap(), "Mail queue is empty\n");
        let mut inc = s.begin().unwrap();
        inc.write_all(&[b'x'; 1500]).unwrap();
        let id = inc.id().clone();
        let mut env = Envelope::new(id.clone(), String::new(), 1_700_000_000);
        let mut r = Recipient::new("a@b.test".into());
        r.status = RcptStatus::Deferred;
        r.last_reply = Some("451 4.7.1 try later".into());
        env.recipients = vec![r, Recipient::new("c@d.test".into())];
        let mut sent = Recipient::new("done@x.test".into());
        sent.status = RcptStatus::Sent;
        env.recipients.push(sent);
        env.size = 1500;
        inc.commit(&env).unwrap();
        let when: String = clock::asctime(1_700_000_000).chars().take(19).collect();
        let want = format!(
            "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n\
             {id}      1500 {when}  MAILER-DAEMON\n\
             (451 4.7.1 try later)\n\
             {:41}a@b.test\n\
             {:41}c@d.test\n\
             \n\
             -- 2 Kbytes in 1 Request.\n",
            "", ""
        );
        assert_eq!(mailq(&s).unwrap(), want);
        let _lock = s.lock(&id).unwrap();
        assert!(mailq(&s).unwrap().contains(&format!("\n{id}*     1500 ")));
    }
}
