//! Delivery status notifications (RFC 3464) queued back to the sender:
//! failures, the one delay warning, and success notices (RFC 3461 NOTIFY).
//! A notice goes through the same spool door as any message, with the null
//! sender so that it can never itself be bounced.

use std::io::Read;

use crate::clock;
use crate::config::Config;
use crate::deliver::outcome::Outcome;
use crate::dsn::{self, Action, RecipientReport, Report, ReturnContent};
use crate::maillog;
use crate::spool::{BodyType, DsnRet, Envelope, QueueId, Recipient, Spool, SpoolError};

/// Whether the recipient's NOTIFY asks for this kind of notice. Without
/// NOTIFY, failures and delays are reported and successes are not (RFC 3461 4.1).
pub fn wants(r: &Recipient, kind: Action) -> bool {
    let word = match kind {
        Action::Failed => "FAILURE",
        Action::Delayed => "DELAY",
        Action::Delivered | Action::Relayed | Action::Expanded => "SUCCESS",
    };
    match &r.notify {
        None => matches!(kind, Action::Failed | Action::Delayed),
        Some(n) => n.split(',').any(|w| w.eq_ignore_ascii_case(word)),
    }
}

/// One line of a report: a recipient and what happened to it.
pub struct Line<'a> {
    pub rcpt: &'a Recipient,
    pub action: Action,
    pub outcome: &'a Outcome,
    pub relay: Option<&'a str>,
}

/// Build and queue one report for `lines` to the envelope's sender.
/// Returns the notice's queue id, or None when nothing was owed.
pub fn send(
    cfg: &Config,
    spool: &Spool,
    env: &Envelope,
    lines: &[Line<'_>],
    will_retry_until: Option<u64>,
) -> Result<Option<QueueId>, SpoolError> {
    if lines.is_empty() {
        return Ok(None);
    }
    let to = if env.sender.is_empty() {
        // Never bounce a bounce: log it, or hand it to postmaster if asked,
        // unless it already was for postmaster.
        let for_postmaster = env
            .recipients
            .iter()
            .all(|r| r.addr.to_lowercase().starts_with("postmaster@"));
        if !cfg.queue.double_bounce_to_postmaster || for_postmaster {
            maillog::notice_dropped(&env.id);
            return Ok(None);
        }
        format!("postmaster@{}", cfg.hostname)
    } else {
        env.sender.clone()
    };
    let now = clock::now();
    let original = read_original(spool, &env.id);
    let ret = match (lines.first().map(|l| l.action), env.ret) {
        (Some(Action::Failed), Some(DsnRet::Hdrs)) => ReturnContent::Headers,
        (Some(Action::Failed), _) => ReturnContent::Full,
        _ => ReturnContent::Headers,
    };
    let recipients = lines
        .iter()
        .map(|l| RecipientReport {
            final_recipient: l.rcpt.addr.clone(),
            original_recipient: l.rcpt.orcpt.clone(),
            action: l.action,
            status: l.outcome.status(),
            remote_mta: l.relay.map(|r| format!("dns; {r}")),
            diagnostic: Some(l.outcome.diagnostic()),
            last_attempt: Some(now),
            will_retry_until: if l.action == Action::Delayed {
                will_retry_until
            } else {
                None
            },
        })
        .collect();
    let report = Report {
        hostname: &cfg.hostname,
        queue_id: env.id.as_str(),
        envid: env.envid.as_deref(),
        arrival: env.created,
        sender: &env.sender,
        recipients,
        return_content: ret,
        original: &original,
        max_return_size: cfg.session.max_message_size / 2,
    };
    let body = dsn::build(&report);
    let id = enqueue_notice(spool, &to, &body)?;
    Ok(Some(id))
}

fn read_original(spool: &Spool, id: &QueueId) -> Vec<u8> {
    let mut v = Vec::new();
    if let Ok(mut f) = std::fs::File::open(spool.message_path(id)) {
        let _ = f.read_to_end(&mut v);
    }
    v
}

/// Queue a locally generated message from the null sender to `to`.
fn enqueue_notice(spool: &Spool, to: &str, body: &[u8]) -> Result<QueueId, SpoolError> {
    let mut incoming = spool.begin()?;
    let id = incoming.id().clone();
    incoming.append(body)?;
    let mut env = Envelope::new(id.clone(), String::new(), clock::now());
    env.protocol = "local".to_owned();
    env.body = if body.is_ascii() {
        BodyType::SevenBit
    } else {
        BodyType::EightBitMime
    };
    env.smtputf8 = !to.is_ascii();
    env.size = incoming.bytes_written();
    env.recipients = vec![Recipient::new(to.to_owned())];
    incoming.commit(&env)?;
    maillog::queued(&id, &env.sender, env.size, env.recipients.len(), &"local");
    Ok(id)
}
