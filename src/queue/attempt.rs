//! One delivery run over one queued message: try every recipient that is
//! due, record each outcome in the spool as soon as it is known, then send
//! the notices owed and remove the message once every recipient is final.
//!
//! Crash safety (issue 16): a delivery a server or a mailbox has taken is
//! recorded right after that answer, before anything else (the log line,
//! the QUIT or the next delivery), and each delivery is recorded on its own:
//! the recipients of one domain (one transaction) together, local ones one
//! by one, so no delivery waits for another to be saved and a crash repeats
//! at most the deliveries whose answer had just come. The record is the
//! removal of env/ID when every recipient is done, else a new env/ID. A
//! success notice owed (RFC 3461 NOTIFY=SUCCESS) is queued just before its
//! record, as Postfix does, so a crash repeats it rather than loses it.
//! A permanent failure is written only after its bounce is queued, so a
//! crash in between repeats the attempt (and the bounce) rather than losing
//! it. None of these writes needs to be durable at once: losing one only
//! repeats work (src/spool/README.md, "Delivery state").

use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

use crate::clock;
use crate::config::Config;
use crate::deliver::outcome::{self, Attempted, Outcome, Success, Timing, TlsNote, Verdict};
use crate::deliver::router::{self, Context, Targets};
use crate::dsn::Action;
use crate::maillog;
use crate::message;
use crate::metrics::{self, Transport};
use crate::queue::notify::{self, Line};
use crate::queue::schedule::Schedule;
use crate::queue::shared::Shared;
use crate::smtp::address::Mailbox;
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
    let (message, headers) = read_message(lock.file(), env.size, remote_due);
    let message = message.as_deref();
    // What this message reached in this run: each final target once.
    let targets = Targets::new(&cfg, &env);
    let inputs = Inputs {
        shared,
        cfg: &cfg,
        tables: &tables,
        headers: &headers,
        message,
        queued: &queued,
        targets: &targets,
    };
    let mut run = Run {
        shared,
        cfg: &cfg,
        sched: &sched,
        now,
        attempt_wall,
        attempt_began,
        loaded: env.recipients.clone(),
        failed: Vec::new(),
        dirty: false,
        retired: false,
    };

    // Remote recipients go in one transaction per domain (RFC 5321 5.1's
    // "same destination"), each transaction recorded as soon as its server
    // has answered, and its connection let go only then.
    for group in remote_groups(&cfg, &env, &is_due) {
        let (results, farewell) = {
            let ctx = inputs.context(&env);
            let rcpts: Vec<&Recipient> = group.idxs.iter().filter_map(|i| env.recipients.get(*i)).collect();
            router::deliver_remote(&ctx, &group.domain, &rcpts)
        };
        let mut unit = Unit::default();
        let mut firsts: HashMap<usize, Attempted> = HashMap::new();
        for (idx, a) in group.idxs.iter().copied().zip(results) {
            firsts.insert(idx, a.clone());
            run.apply(&mut env, &mut unit, idx, Transport::Smtp, a);
        }
        // The same mailbox named twice in the envelope: one RCPT, one result.
        for (dup, first) in group.dups {
            let (Some(a), Some(addr)) = (
                firsts.get(&first),
                env.recipients.get(first).map(|r| r.addr.clone()),
            ) else {
                continue;
            };
            let mut a = a.clone();
            a.outcome = outcome::duplicate_of(&addr, &a.outcome);
            run.apply(&mut env, &mut unit, dup, Transport::Smtp, a);
        }
        let recorded = run.commit(&mut env, &unit);
        run.log(&env, &unit);
        drop(farewell);
        if let Err(after) = recorded {
            return after;
        }
    }

    // Local recipients one by one, each recorded before the next begins.
    for idx in 0..env.recipients.len() {
        let Some(rcpt) = env.recipients.get(idx).cloned() else {
            continue;
        };
        if !is_due(&rcpt) || router::remote_domain(&cfg, &rcpt).is_some() {
            continue;
        }
        let (attempted, farewell) = {
            let ctx = inputs.context(&env);
            router::deliver(&ctx, &rcpt)
        };
        let mut unit = Unit::default();
        run.apply(&mut env, &mut unit, idx, Transport::Local, attempted);
        let recorded = run.commit(&mut env, &unit);
        run.log(&env, &unit);
        // A mailbox_transport connection goes once the delivery is recorded.
        drop(farewell);
        if let Err(after) = recorded {
            return after;
        }
    }
    if run.retired {
        // Every recipient was delivered, and the message is gone already.
        return After::Gone;
    }
    let Run { failed, dirty, .. } = run;
    let mut dirty = dirty;

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
        match notify::send(&cfg, spool, &shared.mailauth.get().signers, &env, &owed, None) {
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
        dirty = true;
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

/// The remote recipients due in one transaction: those of one domain, each
/// mailbox once (`dups`: a later recipient naming the same mailbox, and the
/// one it takes the result of).
#[derive(Debug, PartialEq, Eq)]
struct Group {
    domain: String,
    idxs: Vec<usize>,
    dups: Vec<(usize, usize)>,
}

fn remote_groups(cfg: &Config, env: &Envelope, is_due: &dyn Fn(&Recipient) -> bool) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut mailboxes: HashMap<String, usize> = HashMap::new();
    for (idx, r) in env.recipients.iter().enumerate() {
        if !is_due(r) {
            continue;
        }
        let Some(domain) = router::remote_domain(cfg, r) else {
            continue;
        };
        let g = match groups.iter().position(|g| g.domain == domain) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    domain,
                    idxs: Vec::new(),
                    dups: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let Some(group) = groups.get_mut(g) else {
            continue;
        };
        let mailbox = Mailbox::parse(&r.addr).map_or_else(|_| r.addr.clone(), |m| m.identity(false));
        match mailboxes.get(&mailbox) {
            Some(&first) => group.dups.push((idx, first)),
            None => {
                mailboxes.insert(mailbox, idx);
                group.idxs.push(idx);
            }
        }
    }
    groups
}

/// The state of one run between its deliveries.
struct Run<'a> {
    shared: &'a Shared,
    cfg: &'a Config,
    sched: &'a Schedule,
    now: u64,
    attempt_wall: u64,
    attempt_began: Instant,
    /// The recipients as the run found them on disk.
    loaded: Vec<Recipient>,
    /// Permanent failures (and expiries) of this run, written once bounced.
    failed: Vec<(usize, Outcome, String)>,
    /// The envelope in memory differs from the one on disk.
    dirty: bool,
    /// Every recipient was delivered and the message left the queue.
    retired: bool,
}

/// What one delivery (a transaction, or one local recipient) produced:
/// the deliveries to record, and the log lines to write once recorded.
#[derive(Default)]
struct Unit {
    /// Delivered: (recipient, outcome, relay, the success notice's action).
    delivered: Vec<(usize, Outcome, String, Option<Action>)>,
    logs: Vec<Logged>,
}

/// A delivery log line, written after the record (see `maillog::delivery`).
struct Logged {
    rcpt: Recipient,
    transport: Transport,
    relay: String,
    tls: Option<&'static str>,
    policy: Option<TlsNote>,
    delays: Delays,
    outcome: Outcome,
    status: &'static str,
}

impl Run<'_> {
    /// The log lines of a recorded unit, then the removal if it ended the message.
    fn log(&self, env: &Envelope, unit: &Unit) {
        for l in &unit.logs {
            let tls = Tls {
                version: l.tls,
                policy: l.policy.as_ref(),
            };
            log_attempt(
                env,
                &l.rcpt,
                l.transport,
                &l.relay,
                tls,
                &l.delays,
                &l.outcome,
                l.status,
            );
        }
        if self.retired {
            maillog::removed(&env.id);
        }
    }

    /// Take recipient `idx`'s result into the envelope in memory;
    /// `transport` is how it went (for the metrics) unless an LMTP server
    /// names itself in relay=.
    fn apply(
        &mut self,
        env: &mut Envelope,
        unit: &mut Unit,
        idx: usize,
        transport: Transport,
        attempted: Attempted,
    ) {
        let Attempted {
            relay,
            tls,
            policy,
            outcome,
            success,
            timing,
        } = attempted;
        let delays = Delays::of(env, self.attempt_wall, self.attempt_began, &timing);
        // An LMTP server (a route, or mailbox_transport) names itself in relay=.
        let transport = if relay.starts_with("lmtp/") {
            Transport::Lmtp
        } else {
            transport
        };
        let noise = noise(&env.id, idx);
        let Some(slot) = env.recipients.get_mut(idx) else {
            return;
        };
        let rcpt = slot.clone();
        slot.attempts = slot.attempts.saturating_add(1);
        slot.last_reply = Some(outcome.record());
        self.dirty = true;
        let status = match outcome.verdict() {
            Verdict::Delivered => {
                slot.status = RcptStatus::Sent;
                slot.next_attempt = None;
                let action = match success {
                    Success::Delivered => Some(Action::Delivered),
                    Success::Relayed => Some(Action::Relayed),
                    // RFC 3461 5.2.2: the next hop took the NOTIFY over.
                    Success::PassedOn => None,
                };
                unit.delivered.push((idx, outcome.clone(), relay.clone(), action));
                "sent"
            }
            Verdict::Temporary if self.sched.expired(env.created, self.now) => {
                let final_outcome = outcome::expired(&outcome);
                unit.logs.push(Logged {
                    rcpt,
                    transport,
                    relay: relay.clone(),
                    tls,
                    policy,
                    delays,
                    outcome: final_outcome.clone(),
                    status: "expired",
                });
                self.failed.push((idx, final_outcome, relay));
                return;
            }
            Verdict::Temporary => {
                slot.status = RcptStatus::Deferred;
                match flushed_early(&rcpt, self.now) {
                    // A flush tried it before its time: that try does not count
                    // toward the back-off and the planned retry stays, so ten
                    // flushes do not push it hours out.
                    Some(planned) => {
                        slot.attempts = rcpt.attempts;
                        slot.next_attempt = Some(planned);
                    }
                    None => slot.next_attempt = Some(self.sched.next_attempt(slot.attempts, self.now, noise)),
                }
                "deferred"
            }
            Verdict::Permanent => {
                self.failed.push((idx, outcome.clone(), relay.clone()));
                "bounced"
            }
        };
        unit.logs.push(Logged {
            rcpt,
            transport,
            relay,
            tls,
            policy,
            delays,
            outcome,
            status,
        });
    }

    /// Record what `unit` delivered, at once: the success notices it owes
    /// first, then the message's removal when every recipient is now
    /// delivered, else its new state. Nothing to do when nothing was
    /// delivered (a deferral lost in a crash only comes early). Err: stop
    /// the run and answer this.
    fn commit(&mut self, env: &mut Envelope, unit: &Unit) -> Result<(), After> {
        if unit.delivered.is_empty() {
            return Ok(());
        }
        let spool = &self.shared.spool;
        let owed: Vec<Line<'_>> = unit
            .delivered
            .iter()
            .filter_map(|(idx, o, relay, action)| {
                let r = env.recipients.get(*idx)?;
                let action = (*action)?;
                notify::wants(r, action).then_some(Line {
                    rcpt: r,
                    action,
                    outcome: o,
                    relay: remote_relay(relay),
                })
            })
            .collect();
        match notify::send(
            self.cfg,
            spool,
            &self.shared.mailauth.get().signers,
            env,
            &owed,
            None,
        ) {
            Ok(Some(nid)) => {
                maillog::success_notice_queued(&env.id, &nid);
                self.shared.announce(nid);
            }
            Ok(None) => {}
            Err(e) => maillog::success_notice_failed(&env.id, &e),
        }
        if env.recipients.iter().all(|r| r.status == RcptStatus::Sent) {
            return match spool.retire(&env.id, &self.shared.retired) {
                Ok(()) => {
                    self.retired = true;
                    self.dirty = false;
                    Ok(())
                }
                Err(e) => {
                    maillog::remove_failed(&env.id, &e);
                    Err(After::Reload)
                }
            };
        }
        // A failure is not on disk until its bounce is queued (at the end of
        // the run): until then its recipient is recorded as it was found.
        let mut record = env.clone();
        for (idx, ..) in &self.failed {
            if let (Some(slot), Some(was)) = (record.recipients.get_mut(*idx), self.loaded.get(*idx)) {
                slot.clone_from(was);
            }
        }
        match spool.update(&record) {
            Ok(()) => {
                // Still differs from the disk when a failure waits.
                self.dirty = !self.failed.is_empty();
                Ok(())
            }
            Err(e) => {
                maillog::state_not_recorded(&env.id, &e);
                Err(After::Reload)
            }
        }
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

/// What the router needs for the recipients of one message, but the
/// envelope (which the run changes between deliveries).
struct Inputs<'a> {
    shared: &'a Shared,
    cfg: &'a Config,
    tables: &'a Tables,
    headers: &'a [u8],
    message: Option<&'a [u8]>,
    queued: &'a dyn Fn(QueueId),
    targets: &'a Targets,
}

impl<'a> Inputs<'a> {
    /// The router's context for a delivery of `env` as it stands now.
    fn context(&self, env: &'a Envelope) -> Context<'a> {
        Context {
            cfg: self.cfg,
            tables: self.tables,
            spool: &self.shared.spool,
            env,
            headers: self.headers,
            message: self.message,
            resolver: self.shared.resolver.as_ref(),
            outbound: &self.shared.outbound,
            pool: &self.shared.pool,
            queued: self.queued,
            targets: self.targets,
        }
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
        &shared.mailauth.get().signers,
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
fn read_message(file: &std::fs::File, size: u64, whole: bool) -> (Option<Vec<u8>>, Vec<u8>) {
    // `size` octets, the message: the spool's seal follows them.
    let limit = if whole { size } else { MAX_HEADERS.min(size) };
    // Sized beforehand, so a small message takes one read (and one for EOF).
    let size = limit;
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
mod tests;
