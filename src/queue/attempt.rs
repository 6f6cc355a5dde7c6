//! One delivery run over one queued message: try every recipient that is
//! due, record each outcome in the spool as soon as it is known, then send
//! the notices owed and remove the message once every recipient is final.
//!
//! Crash safety: what is known is written to the spool before the next
//! delivery starts (remote recipients of one domain go in one transaction,
//! local ones one by one), so a crash repeats at most the delivery in flight.
//! A permanent failure is written only after its bounce is queued, so a crash
//! in between repeats the attempt (and the bounce) rather than losing it.
//! When every recipient is final at the end, the state is not written at
//! all: the message is retired at once. None of these writes needs to be
//! durable at once: losing one only repeats work (src/spool/README.md,
//! "Delivery state").

use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

use crate::clock;
use crate::config::Config;
use crate::deliver::outcome::{self, Attempted, Outcome, Success, Timing, TlsNote, Verdict};
use crate::deliver::router::{self, Context};
use crate::dsn::Action;
use crate::maillog;
use crate::message;
use crate::metrics::{self, Transport};
use crate::queue::notify::{self, Line};
use crate::queue::schedule::Schedule;
use crate::queue::shared::Shared;
use crate::spool::{Envelope, QueueId, RcptStatus, Recipient, Spool};
use crate::tables::Tables;

/// The most of a message's header section read for loop checks.
const MAX_HEADERS: u64 = 256 * 1024;

/// What the runner should do with a message after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    /// Out of the queue (delivered, or deleted or held meanwhile): forget it.
    Gone,
    /// Look at it again at this time (seconds since the epoch).
    At(u64),
    /// The state could not be written: read the spool to know.
    Reload,
}

/// Deliver what is due of message `id`; `force` (a flush) also tries deferred
/// recipients whose next attempt is still to come.
pub(super) fn run(shared: &Shared, id: &QueueId, force: bool) -> After {
    // The start of this attempt: delays= splits time before it (a) from after.
    let attempt_began = Instant::now();
    let attempt_wall = clock::now();
    let spool = &shared.spool;
    // Held for the whole run: `ternctl delete` and `hold` take the same lock, so the
    // message cannot vanish or be held between two recipients (spool::MessageLock).
    let lock = match spool.lock(id) {
        Ok(l) => l,
        Err(e) => {
            maillog::not_delivered_now(id, &e);
            return After::Gone;
        }
    };
    // Loaded under the lock: deleted or held while we waited means not ours any more.
    let mut env = match spool.load(id) {
        Ok(e) => e,
        // Delivered and removed meanwhile, or held: nothing to do.
        Err(e) => {
            maillog::not_delivered_now(id, &e);
            return After::Gone;
        }
    };
    // One configuration for the whole attempt, even if a SIGHUP swaps it meanwhile.
    let cfg = shared.cfg.get();
    let tables = shared.tables.get();
    let sched = Schedule::from_config(&cfg);
    let now = clock::now();
    let mut failed: Vec<(usize, Outcome, String)> = Vec::new();
    let mut delivered: Vec<(usize, Outcome, String, Action)> = Vec::new();
    // The envelope in memory differs from the one on disk.
    let mut dirty = false;

    let is_due = |r: &Recipient| match r.status {
        RcptStatus::Pending => true,
        RcptStatus::Deferred => force || r.next_attempt.is_none_or(|t| t <= now),
        RcptStatus::Sent | RcptStatus::Failed => false,
    };
    let queued = |nid: QueueId| shared.announce(nid);
    // Read once, through the lock's descriptor: the whole message when it goes
    // out by SMTP, else only the header section (for loop checks).
    let remote_due = env
        .recipients
        .iter()
        .any(|r| is_due(r) && router::remote_domain(&cfg, r).is_some());
    let (message, headers) = read_message(lock.file(), remote_due);
    let message = message.as_deref();
    // Remote recipients go in one transaction per domain (RFC 5321 5.1's
    // "same destination"): deliver those first, then record them in order.
    let mut remote: HashMap<usize, Attempted> = HashMap::new();
    {
        let ctx = context(shared, &cfg, &tables, &env, &headers, message, &queued);
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (idx, r) in env.recipients.iter().enumerate() {
            if !is_due(r) {
                continue;
            }
            let Some(domain) = router::remote_domain(&cfg, r) else {
                continue;
            };
            match groups.iter_mut().find(|(d, _)| *d == domain) {
                Some((_, v)) => v.push(idx),
                None => groups.push((domain, vec![idx])),
            }
        }
        for (domain, idxs) in groups {
            let rcpts: Vec<&Recipient> = idxs.iter().filter_map(|i| env.recipients.get(*i)).collect();
            let results = router::deliver_remote(&ctx, &domain, &rcpts);
            for (i, a) in idxs.into_iter().zip(results) {
                remote.insert(i, a);
            }
        }
    }

    for idx in 0..env.recipients.len() {
        let Some(rcpt) = env.recipients.get(idx).cloned() else {
            continue;
        };
        if !is_due(&rcpt) {
            continue;
        }
        let transport = if remote.contains_key(&idx) {
            Transport::Smtp
        } else {
            Transport::Local
        };
        let attempted = match remote.remove(&idx) {
            Some(a) => a,
            None if router::remote_domain(&cfg, &rcpt).is_some() => continue,
            None => {
                // What is known goes to disk before the next delivery starts,
                // so a crash repeats at most that one.
                if dirty {
                    if let Err(e) = spool.update(&env) {
                        maillog::state_not_recorded(id, &e);
                        return After::Reload;
                    }
                    dirty = false;
                }
                let ctx = context(shared, &cfg, &tables, &env, &headers, message, &queued);
                router::deliver(&ctx, &rcpt)
            }
        };
        let Attempted {
            relay,
            tls,
            policy,
            outcome,
            success,
            timing,
        } = attempted;
        let tls = Tls {
            version: tls,
            policy: policy.as_ref(),
        };
        let delays = Delays::of(&env, attempt_wall, attempt_began, &timing);
        // An LMTP server (a route, or mailbox_transport) names itself in relay=.
        let transport = if relay.starts_with("lmtp/") {
            Transport::Lmtp
        } else {
            transport
        };
        let relay = relay.as_str();
        let noise = noise(id, idx);
        let Some(slot) = env.recipients.get_mut(idx) else {
            continue;
        };
        slot.attempts = slot.attempts.saturating_add(1);
        slot.last_reply = Some(outcome.record());
        dirty = true;
        match outcome.verdict() {
            Verdict::Delivered => {
                slot.status = RcptStatus::Sent;
                slot.next_attempt = None;
                log_attempt(&env, &rcpt, transport, relay, tls, &delays, &outcome, "sent");
                let action = match success {
                    Success::Delivered => Some(Action::Delivered),
                    Success::Relayed => Some(Action::Relayed),
                    // RFC 3461 5.2.2: the next hop took the NOTIFY over.
                    Success::PassedOn => None,
                };
                if let Some(action) = action {
                    delivered.push((idx, outcome, relay.to_owned(), action));
                }
            }
            Verdict::Temporary if sched.expired(env.created, now) => {
                let final_outcome = outcome::expired(&outcome);
                log_attempt(
                    &env,
                    &rcpt,
                    transport,
                    relay,
                    tls,
                    &delays,
                    &final_outcome,
                    "expired",
                );
                failed.push((idx, final_outcome, relay.to_owned()));
            }
            Verdict::Temporary => {
                slot.status = RcptStatus::Deferred;
                match flushed_early(&rcpt, now) {
                    // A flush tried it before its time: that try does not count
                    // toward the back-off and the planned retry stays, so ten
                    // flushes do not push it hours out.
                    Some(planned) => {
                        slot.attempts = rcpt.attempts;
                        slot.next_attempt = Some(planned);
                    }
                    None => slot.next_attempt = Some(sched.next_attempt(slot.attempts, now, noise)),
                }
                log_attempt(&env, &rcpt, transport, relay, tls, &delays, &outcome, "deferred");
            }
            Verdict::Permanent => {
                log_attempt(&env, &rcpt, transport, relay, tls, &delays, &outcome, "bounced");
                failed.push((idx, outcome, relay.to_owned()));
            }
        }
    }

    // Failures: one report for all that failed in this run, then record them.
    if !failed.is_empty() {
        let owed: Vec<Line<'_>> = failed
            .iter()
            .filter_map(|(idx, o, relay)| {
                let r = env.recipients.get(*idx)?;
                notify::wants(r, Action::Failed).then_some(Line {
                    rcpt: r,
                    action: Action::Failed,
                    outcome: o,
                    relay: remote_relay(relay),
                })
            })
            .collect();
        match notify::send(&cfg, spool, &env, &owed, None) {
            Ok(Some(nid)) => {
                maillog::bounce_queued(id, &nid);
                shared.announce(nid);
            }
            Ok(None) => {}
            Err(e) => {
                // Leave the failed recipients as they were: the attempt and
                // the bounce are tried again later rather than lost.
                maillog::bounce_failed(id, &e);
                return save(spool, &env, &sched);
            }
        }
        for (idx, _, _) in &failed {
            if let Some(r) = env.recipients.get_mut(*idx) {
                r.status = RcptStatus::Failed;
                r.next_attempt = None;
            }
        }
    }

    // Success notices for those who asked (RFC 3461 NOTIFY=SUCCESS).
    let owed: Vec<Line<'_>> = delivered
        .iter()
        .filter_map(|(idx, o, relay, action)| {
            let r = env.recipients.get(*idx)?;
            notify::wants(r, *action).then_some(Line {
                rcpt: r,
                action: *action,
                outcome: o,
                relay: remote_relay(relay),
            })
        })
        .collect();
    match notify::send(&cfg, spool, &env, &owed, None) {
        Ok(Some(nid)) => {
            maillog::success_notice_queued(id, &nid);
            shared.announce(nid);
        }
        Ok(None) => {}
        Err(e) => maillog::success_notice_failed(id, &e),
    }

    dirty |= warn_if_due(shared, &cfg, &mut env, &sched, now);

    match conclude(&env, dirty) {
        Conclusion::Retire => match spool.retire(id, &shared.retired) {
            Ok(()) => {
                maillog::removed(id);
                After::Gone
            }
            Err(e) => {
                maillog::remove_failed(id, &e);
                After::Reload
            }
        },
        Conclusion::Save => save(spool, &env, &sched),
        Conclusion::Keep => After::At(sched.due(&env)),
    }
}

/// What the end of a run writes to the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conclusion {
    /// Every recipient is final: no state to record, the message just goes.
    Retire,
    /// Some recipient still waits and the envelope changed: record it.
    Save,
    /// Some recipient still waits and nothing changed.
    Keep,
}

fn conclude(env: &Envelope, dirty: bool) -> Conclusion {
    if env
        .recipients
        .iter()
        .all(|r| matches!(r.status, RcptStatus::Sent | RcptStatus::Failed))
    {
        Conclusion::Retire
    } else if dirty {
        Conclusion::Save
    } else {
        Conclusion::Keep
    }
}

/// Record `env` and say when it is next due.
fn save(spool: &Spool, env: &Envelope, sched: &Schedule) -> After {
    match spool.update(env) {
        Ok(()) => After::At(sched.due(env)),
        Err(e) => {
            maillog::state_not_recorded(&env.id, &e);
            After::Reload
        }
    }
}

/// What the router needs for one recipient of `env`.
fn context<'a>(
    shared: &'a Shared,
    cfg: &'a Config,
    tables: &'a Tables,
    env: &'a Envelope,
    headers: &'a [u8],
    message: Option<&'a [u8]>,
    queued: &'a dyn Fn(QueueId),
) -> Context<'a> {
    Context {
        cfg,
        tables,
        spool: &shared.spool,
        env,
        headers,
        message,
        resolver: shared.resolver.as_ref(),
        outbound: &shared.outbound,
        pool: &shared.pool,
        queued,
    }
}

/// The one delay notice (RFC 3464 action "delayed"), once `delay_warning` has passed.
/// Returns whether `env` changed (the caller records it).
fn warn_if_due(shared: &Shared, cfg: &Config, env: &mut Envelope, sched: &Schedule, now: u64) -> bool {
    if !sched.warn_due(env.created, now, env.delay_warned) {
        return false;
    }
    let outcomes: Vec<(usize, Outcome)> = env
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == RcptStatus::Deferred && notify::wants(r, Action::Delayed))
        .map(|(i, r)| (i, last_outcome(r)))
        .collect();
    if outcomes.is_empty() {
        return false;
    }
    let lines: Vec<Line<'_>> = outcomes
        .iter()
        .filter_map(|(i, o)| {
            Some(Line {
                rcpt: env.recipients.get(*i)?,
                action: Action::Delayed,
                outcome: o,
                relay: None,
            })
        })
        .collect();
    match notify::send(
        cfg,
        &shared.spool,
        env,
        &lines,
        Some(sched.give_up_at(env.created)),
    ) {
        Ok(nid) => {
            if let Some(nid) = nid {
                maillog::delay_notice_queued(&env.id, &nid);
                shared.announce(nid);
            }
            env.delay_warned = true;
            true
        }
        Err(e) => {
            maillog::delay_notice_failed(&env.id, &e);
            false
        }
    }
}

/// Rebuild the last temporary outcome from what the spool recorded.
fn last_outcome(r: &Recipient) -> Outcome {
    Outcome::from_record(r.last_reply.as_deref().unwrap_or_default())
}

/// The Remote-MTA of a DSN (RFC 3464 2.3.5): the host name of
/// `host[ip]:port` (or LMTP's `lmtp/host[...]`), without the address and
/// port the log shows.
fn remote_relay(relay: &str) -> Option<&str> {
    let host = relay.split('[').next().unwrap_or(relay);
    let host = host.strip_prefix("lmtp/").unwrap_or(host);
    (relay != "local" && relay != "none" && !host.is_empty()).then_some(host)
}

/// Postfix's `delays=a/b/c/d`, in seconds, as tern measures them:
/// a, in the queue before this attempt (since arrival, back-off included);
/// b, queue wait within the attempt (other recipients first, a connection slot);
/// c, connection setup (DNS, connect, greeting, EHLO, STARTTLS, AUTH);
/// d, transmission (MAIL FROM to the end of data, or writing the local copy).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Delays([f64; 4]);

impl Delays {
    fn of(env: &Envelope, attempt_wall: u64, attempt_began: Instant, t: &Timing) -> Delays {
        // The envelope keeps whole seconds of arrival.
        let a = attempt_wall.saturating_sub(env.created) as f64;
        let before = t
            .began
            .map_or(Duration::ZERO, |b| b.saturating_duration_since(attempt_began));
        let b = before.saturating_add(t.waited).as_secs_f64();
        Delays([a, b, t.setup.as_secs_f64(), t.transmit.as_secs_f64()])
    }
}

impl std::fmt::Display for Delays {
    /// Like Postfix: two decimals, trailing zeros dropped, "0" under 0.01.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|v| {
                if *v < 0.01 {
                    return "0".to_owned();
                }
                let s = format!("{v:.2}");
                s.trim_end_matches('0').trim_end_matches('.').to_owned()
            })
            .collect();
        f.write_str(&parts.join("/"))
    }
}

/// What an attempt's connection was: its TLS version and the policy that
/// applied, for the log line.
#[derive(Clone, Copy)]
struct Tls<'a> {
    version: Option<&'a str>,
    policy: Option<&'a TlsNote>,
}

/// The delivery log line (see `maillog::delivery`), and its count in the metrics.
#[allow(clippy::too_many_arguments)]
fn log_attempt(
    env: &Envelope,
    rcpt: &Recipient,
    transport: Transport,
    relay: &str,
    tls: Tls<'_>,
    delays: &Delays,
    o: &Outcome,
    status: &str,
) {
    let counted = match status {
        "sent" => metrics::Status::Sent,
        "deferred" => metrics::Status::Deferred,
        _ => metrics::Status::Bounced,
    };
    metrics::delivery(transport, counted, Some(env.id.age()));
    let delay = clock::now().saturating_sub(env.created);
    maillog::delivery(
        &env.id,
        &rcpt.addr,
        relay,
        delay,
        delays,
        tls.version,
        tls.policy.map(|p| p as &dyn std::fmt::Display),
        &o.status(),
        status,
        o.detail(),
    );
}

/// The whole message when `whole` (None if it cannot be read: remote
/// delivery then reads it itself and reports why), and its header section
/// (`message::split`), at most MAX_HEADERS of it.
fn read_message(file: &std::fs::File, whole: bool) -> (Option<Vec<u8>>, Vec<u8>) {
    let limit = if whole { u64::MAX } else { MAX_HEADERS };
    // Sized from fstat, so a small message takes one read (and one for EOF).
    let size = file.metadata().map(|m| m.len().min(limit)).unwrap_or(0);
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
    let ok = file.take(limit).read_to_end(&mut buf).is_ok();
    let head = message::split(&buf).0;
    let mut headers = head
        .get(..head.len().min(MAX_HEADERS as usize))
        .unwrap_or_default()
        .to_vec();
    headers.shrink_to_fit();
    let message = (whole && ok).then_some(buf);
    (message, headers)
}

/// When a recipient tried now was planned to be retried, if that was still to
/// come: it was tried early, by a flush (`sendmail -q`, `ternctl flush`).
fn flushed_early(before: &Recipient, now: u64) -> Option<u64> {
    let planned = before.next_attempt?;
    (before.status == RcptStatus::Deferred && planned > now).then_some(planned)
}

/// Jitter source for the retry schedule: differs per message, recipient and moment.
fn noise(id: &QueueId, idx: usize) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(id.as_str().as_bytes());
    h.write_usize(idx);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_finishes_every_recipient_writes_no_state() {
        let mut env = Envelope::new(QueueId::generate(), String::new(), 100);
        for a in ["a@x.test", "b@x.test"] {
            env.recipients.push(Recipient::new(a.to_owned()));
        }
        // Not yet tried: nothing to write unless something changed.
        assert_eq!(conclude(&env, false), Conclusion::Keep);
        assert_eq!(conclude(&env, true), Conclusion::Save);
        env.recipients[0].status = RcptStatus::Sent;
        env.recipients[1].status = RcptStatus::Deferred;
        assert_eq!(conclude(&env, true), Conclusion::Save);
        // All final: retired at once, whatever changed in the run.
        env.recipients[1].status = RcptStatus::Failed;
        assert_eq!(conclude(&env, true), Conclusion::Retire);
        assert_eq!(conclude(&env, false), Conclusion::Retire);
    }

    #[test]
    fn only_a_flush_before_the_planned_retry_is_early() {
        let mut r = Recipient::new("a@x.test".to_owned());
        assert_eq!(flushed_early(&r, 100), None, "never tried");
        r.status = RcptStatus::Deferred;
        r.next_attempt = Some(500);
        assert_eq!(flushed_early(&r, 100), Some(500), "flushed");
        assert_eq!(flushed_early(&r, 500), None, "due");
        assert_eq!(flushed_early(&r, 600), None, "late");
        r.next_attempt = None;
        assert_eq!(flushed_early(&r, 100), None);
    }

    #[test]
    fn remote_mta_is_the_host_name() {
        assert_eq!(
            remote_relay("mx.example.org[192.0.2.1]:25"),
            Some("mx.example.org")
        );
        assert_eq!(remote_relay("lmtp/mx.test[/run/dovecot/lmtp]"), Some("mx.test"));
        assert_eq!(remote_relay("local"), None);
        assert_eq!(remote_relay("none"), None);
    }

    #[test]
    fn delays_split_the_time_like_postfix() {
        assert_eq!(Delays([3.0, 0.004, 0.25, 1.5]).to_string(), "3/0/0.25/1.5");
        assert_eq!(Delays([0.0, 0.0, 0.0, 0.0]).to_string(), "0/0/0/0");
        let env = Envelope::new(QueueId::generate(), String::new(), 100);
        let began = Instant::now();
        let t = Timing {
            began: Some(began),
            waited: Duration::from_millis(500),
            setup: Duration::from_secs(2),
            transmit: Duration::from_secs(1),
        };
        let d = Delays::of(&env, 107, began, &t);
        assert_eq!(d.to_string(), "7/0.5/2/1");
    }
}
