//! The mail log: one function per mail event, one line each, keyed by queue
//! id where there is one, in Postfix's form so that administrators' grep
//! habits and log summarizers (pflogsumm) carry over. Each event is logged
//! under the Postfix component that logs it there (see `logging`): `smtpd`
//! for the SMTP server, `pickup` for mail from sendmail, `cleanup` for the
//! Message-ID, `qmgr` for the queue, `local` and `smtp` for deliveries,
//! `bounce` for notices. The format is documented in ternd(8); change it
//! only with the man page.

use std::fmt::Display;
use std::net::IpAddr;

// The components, as log targets (`logging::COMPONENT`).
const SMTPD: &str = "mail/smtpd";
const PICKUP: &str = "mail/pickup";
const CLEANUP: &str = "mail/cleanup";
const QMGR: &str = "mail/qmgr";
const LOCAL: &str = "mail/local";
const SMTP: &str = "mail/smtp";
const LMTP: &str = "mail/lmtp";
const BOUNCE: &str = "mail/bounce";

/// `connect from unknown[192.0.2.1]`
pub fn connect(client: &dyn Display) {
    log::info!(target: SMTPD, "connect from {client}");
}

/// `disconnect from unknown[192.0.2.1] commands=5 errors=0`
pub fn disconnect(client: &dyn Display, commands: u32, errors: u32) {
    log::info!(target: SMTPD, "disconnect from {client} commands={commands} errors={errors}");
}

/// A client that went silent: `timeout after RCPT from unknown[192.0.2.1]`, with
/// `(stress mode)` when it was cut short because the session pool was busy.
pub fn timeout(client: &dyn Display, after: &str, stress: bool) {
    let why = if stress { " (stress mode)" } else { "" };
    log::info!(target: SMTPD, "timeout after {after} from {client}{why}");
}

/// A session went past `junk_command_limit`: its junk commands are answered
/// late from now on. `junk: unknown[192.0.2.1] after 101 commands that move no mail`
pub fn junk_limit(client: &dyn Display, n: u32) {
    log::warn!(target: SMTPD, "junk: {client} after {n} commands that move no mail; slowing down");
}

/// A full pool closed this session, which sent no mail, for a new client:
/// `evicted: unknown[192.0.2.1] after NOOP: no mail, closed for a new client`
pub fn evicted(client: &dyn Display, after: &str) {
    log::info!(target: SMTPD, "evicted: {client} after {after}: no mail, closed to make room for a new client");
}

/// A refused command: `NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 550 5.1.1 ...; from=<a@b> to=<c@d> proto=ESMTP helo=<x>`
pub fn reject(
    client: &dyn Display,
    verb: &str,
    reply: &dyn Display,
    from: Option<&str>,
    to: Option<&str>,
    proto: &str,
    helo: Option<&str>,
) {
    let mut line = format!("NOQUEUE: reject: {verb} from {client}: {reply};");
    envelope_tail(&mut line, from, to, proto, helo);
    log::info!(target: SMTPD, "{line}");
}

/// The end of smtpd's reject lines: ` from=<a@b> to=<c@d> proto=ESMTP helo=<x>`.
fn envelope_tail(line: &mut String, from: Option<&str>, to: Option<&str>, proto: &str, helo: Option<&str>) {
    if let Some(f) = from {
        line.push_str(&format!(" from=<{f}>"));
    }
    if let Some(t) = to {
        line.push_str(&format!(" to=<{t}>"));
    }
    line.push_str(&format!(" proto={proto}"));
    if let Some(h) = helo {
        line.push_str(&format!(" helo=<{h}>"));
    }
}

/// What a milter or policy service made tern do, in Postfix's words: `ID:
/// ACTION: STAGE from CLIENT: TEXT; from=<..> to=<..> proto=.. helo=<..>`,
/// ACTION being `milter-reject`, `milter-discard`, `milter-hold` (a milter),
/// `hold`, `discard`, `warn` (a policy service); NOQUEUE when the message has
/// no queue id yet. pflogsumm counts the milter-reject lines as rejects.
#[allow(clippy::too_many_arguments)]
pub fn filter_action(
    id: Option<&dyn Display>,
    action: &str,
    stage: &str,
    client: &dyn Display,
    text: &dyn Display,
    from: Option<&str>,
    to: Option<&str>,
    proto: &str,
    helo: Option<&str>,
) {
    let mut line = match id {
        Some(id) => format!("{id}: {action}: {stage} from {client}: {text};"),
        None => format!("NOQUEUE: {action}: {stage} from {client}: {text};"),
    };
    envelope_tail(&mut line, from, to, proto, helo);
    // Postfix's cleanup logs the end-of-message verdicts, smtpd the others.
    if stage == "END-OF-MESSAGE" {
        log::info!(target: CLEANUP, "{line}");
    } else {
        log::info!(target: SMTPD, "{line}");
    }
}

/// A message from the maildrop the stages refused for now: it stays there.
pub fn pickup_deferred(drop_id: &dyn Display, why: &dyn Display) {
    log::warn!(target: PICKUP, "{drop_id}: left in the maildrop for a later pickup: {why}");
}

/// A message accepted over SMTP, Postfix's smtpd line, which log summarizers
/// count as received: `ID: client=unknown[192.0.2.1]`, with
/// `, sasl_method=PLAIN, sasl_username=alice` after an AUTH.
pub fn client(id: &dyn Display, client: &dyn Display, sasl: Option<(&str, &str)>) {
    match sasl {
        Some((method, user)) => {
            let user = printable(user);
            log::info!(target: SMTPD, "{id}: client={client}, sasl_method={method}, sasl_username={user}");
        }
        None => log::info!(target: SMTPD, "{id}: client={client}"),
    }
}

/// A message picked up from sendmail's maildrop, Postfix's pickup line (also
/// counted as received): `ID: uid=1000 from=<alice@example.org> (maildrop NAME)`.
pub fn picked_up(id: &dyn Display, uid: u32, from: &str, drop_name: &str) {
    log::info!(target: PICKUP, "{id}: uid={uid} from=<{from}> (maildrop {drop_name})");
}

/// A recipient named again in one transaction, logged once per mailbox: it
/// is answered 250 and delivered once, with the first RCPT's DSN parameters.
/// `NOQUEUE: duplicate: RCPT from unknown[192.0.2.1]: <c@d>: duplicate
/// recipient, delivered once; from=<a@b> to=<c@d> proto=ESMTP helo=<x>`
pub fn duplicate_recipient(client: &dyn Display, from: &str, to: &str, proto: &str, helo: Option<&str>) {
    let helo = helo.map(|h| format!(" helo=<{h}>")).unwrap_or_default();
    log::info!(
        target: SMTPD,
        "NOQUEUE: duplicate: RCPT from {client}: <{to}>: duplicate recipient, delivered once; \
         from=<{from}> to=<{to}> proto={proto}{helo}"
    );
}

/// A message is on disk, from whatever door (SMTP, sendmail, a notice, a
/// forwarded copy): Postfix's cleanup line `ID: message-id=<x@y>` (`<>` when
/// it has none), then its qmgr line `ID: from=<a@b>, size=1234, nrcpt=2 (queue active)`.
pub fn queued(id: &dyn Display, message_id: Option<&str>, from: &str, size: u64, nrcpt: usize) {
    let mid = printable(message_id.unwrap_or("<>"));
    log::info!(target: CLEANUP, "{id}: message-id={mid}");
    log::info!(target: QMGR, "{id}: from=<{from}>, size={size}, nrcpt={nrcpt} (queue active)");
}

/// The checks of a message from outside (issue 20), before it is queued or
/// refused: `ID: authentication-results=mx.example.org; spf=pass ...`, the
/// value of the Authentication-Results field it gets.
pub fn auth_results(id: &dyn Display, value: &str) {
    log::info!(target: CLEANUP, "{id}: authentication-results={}", printable(value));
}

/// A message DKIM-signed before it is queued: `ID: dkim-signed d=example.org s=ed2026,rsa2026`.
pub fn dkim_signed(id: &dyn Display, domain: &str, selectors: &[String]) {
    log::info!(target: CLEANUP, "{id}: dkim-signed d={domain} s={}", selectors.join(","));
}

/// A message that should be signed and could not be: refused (451), or left
/// in the maildrop for the next pickup.
pub fn dkim_sign_failed(id: &dyn Display, why: &dyn Display) {
    log::warn!(target: CLEANUP, "{id}: DKIM signing failed: {why}");
}

/// What a client or a message header said, fit for one log line: controls
/// become `?` (a header value may hold anything), so that it cannot forge a
/// log line.
pub fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// A connection refused before any session: `reject: connect from unknown[192.0.2.1]: 421 4.3.2 ...`
pub fn refuse_connection(client: &dyn Display, reply: &dyn Display) {
    log::warn!(target: SMTPD, "reject: connect from {client}: {reply}");
}

/// `STARTTLS from unknown[192.0.2.1] on smtp: TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384`
pub fn tls_established(client: &dyn Display, service: &dyn Display, tls: &dyn Display) {
    log::info!(target: SMTPD, "TLS established from {client} on {service}: {tls}");
}

/// A failed handshake ends that session only.
pub fn tls_failed(client: &dyn Display, service: &dyn Display, why: &dyn Display) {
    log::warn!(target: SMTPD, "TLS handshake failed from {client} on {service}: {why}");
}

/// `auth ok from unknown[192.0.2.1]: mechanism=PLAIN user=<alice>`
pub fn auth_ok(client: &dyn Display, mechanism: &str, user: &str) {
    log::info!(target: SMTPD, "auth ok from {client}: mechanism={mechanism} user=<{user}>");
}

/// Every failed AUTH, with the client address, for fail2ban-style tools:
/// `auth failed from unknown[192.0.2.1]: mechanism=PLAIN user=<alice>`
pub fn auth_failed(client: &dyn Display, mechanism: &str, user: &str) {
    let user = printable(user);
    log::warn!(target: SMTPD, "auth failed from {client}: mechanism={mechanism} user=<{user}>");
}

/// AUTH refused before any password check (server::auth_guard), with the
/// address, for fail2ban-style tools: `auth refused from unknown[192.0.2.1]:
/// too many failures from this address, for 412s more` or `...: account
/// <alice> under attack, next check in 37s`.
pub fn auth_refused(client: &dyn Display, why: &dyn Display) {
    log::warn!(target: SMTPD, "auth refused from {client}: {why}");
}

/// A client dropped for asking after too many unknown recipients.
pub fn harvest(client: &dyn Display, unknown: u32) {
    log::warn!(target: SMTPD, "harvest: dropped {client} after {unknown} unknown recipients");
}

/// `proxy unknown[192.0.2.10]: client unknown[203.0.113.5]`
pub fn proxied(proxy: &dyn Display, client: &dyn Display) {
    log::info!(target: SMTPD, "proxy {proxy}: client {client}");
}

/// A connection on a PROXY listener that was closed before any SMTP.
pub fn proxy_refused(client: &dyn Display, why: &dyn Display) {
    log::warn!(target: SMTPD, "proxy: refused connection from {client}: {why}");
}

// ---- The queue and delivery ----------------------------------------------------

/// What became of one recipient in one attempt, Postfix's line:
/// `ID: to=<rcpt>, relay=mx.host[ip]:port, delay=S, delays=a/b/c/d, tls=TLSv1.3 policy=dane verified=yes, dsn=X.Y.Z, status=sent (detail)`;
/// `tls=` only when the hop was encrypted; `policy=` (with `mode=` for
/// MTA-STS and `verified=` when encrypted) for remote attempts that chose
/// a TLS policy. `status` is sent, deferred, bounced or expired.
#[allow(clippy::too_many_arguments)]
pub fn delivery(
    id: &dyn Display,
    rcpt: &str,
    relay: &str,
    delay: u64,
    delays: &dyn Display,
    tls: Option<&str>,
    policy: Option<&dyn Display>,
    dsn: &dyn Display,
    status: &str,
    detail: &str,
) {
    let tls = match (tls, policy) {
        (Some(t), Some(p)) => format!(", tls={t} {p}"),
        (Some(t), None) => format!(", tls={t}"),
        (None, Some(p)) => format!(", {p}"),
        (None, None) => String::new(),
    };
    // Postfix's delivery agents: local, lmtp (relay=lmtp/...), smtp.
    let agent = if relay == "local" {
        LOCAL
    } else if relay.starts_with("lmtp/") {
        LMTP
    } else {
        SMTP
    };
    log::info!(
        target: agent,
        "{id}: to=<{rcpt}>, relay={relay}, delay={delay}, delays={delays}{tls}, dsn={dsn}, status={status} ({detail})"
    );
}

/// One address of a remote walk that did not take the message; the walk
/// goes on: `ID: connect to mx.host[ip]:port: Connection refused`, or
/// `ID: mx.host[ip]:port: DETAIL` when the detail does not name the host.
pub fn host_failed(id: &dyn Display, relay: &str, detail: &str) {
    if detail.contains(relay) {
        log::info!(target: SMTP, "{id}: {detail}");
    } else {
        log::info!(target: SMTP, "{id}: {relay}: {detail}");
    }
}

/// Opportunistic TLS failed and the host is tried again in plaintext.
pub fn tls_fallback(id: &dyn Display, host: &str, ip: IpAddr, why: &str) {
    log::info!(target: SMTP, "{id}: {host}[{ip}]: TLS failed ({why}), retrying without");
}

/// A connection kept from an earlier message carried this one.
pub fn connection_reused(id: &dyn Display, host: &str, ip: IpAddr) {
    log::debug!(target: SMTP, "{id}: reused the connection to {host}[{ip}]");
}

/// A kept LMTP connection carried this message: `relay` as in `relay=`.
pub fn connection_reused_to(id: &dyn Display, relay: &str) {
    log::debug!("{id}: reused the connection to {relay}");
}

/// A bounce (RFC 3464 action failed) was queued as `notice`.
pub fn bounce_queued(id: &dyn Display, notice: &dyn Display) {
    log::info!(target: BOUNCE, "{id}: sender non-delivery notification: {notice}");
}

/// A success notice (RFC 3461 NOTIFY=SUCCESS) was queued as `notice`.
pub fn success_notice_queued(id: &dyn Display, notice: &dyn Display) {
    log::info!(target: BOUNCE, "{id}: sender delivery status notification: {notice}");
}

/// The one delay notice was queued as `notice`.
pub fn delay_notice_queued(id: &dyn Display, notice: &dyn Display) {
    log::info!(target: BOUNCE, "{id}: sender delay notification: {notice}");
}

/// A notice owed for a message from the null sender: never sent.
pub fn notice_dropped(id: &dyn Display) {
    log::warn!(target: BOUNCE, "{id}: undeliverable notification dropped (null sender)");
}

/// The bounce could not be queued: the failed recipients are tried again.
pub fn bounce_failed(id: &dyn Display, why: &dyn Display) {
    log::error!(target: BOUNCE, "{id}: cannot queue the bounce, will retry: {why}");
}

pub fn success_notice_failed(id: &dyn Display, why: &dyn Display) {
    log::error!(target: BOUNCE, "{id}: cannot queue the success notice: {why}");
}

pub fn delay_notice_failed(id: &dyn Display, why: &dyn Display) {
    log::error!(target: BOUNCE, "{id}: cannot queue the delay notice: {why}");
}

/// Every recipient is final: the message left the queue.
pub fn removed(id: &dyn Display) {
    log::info!(target: QMGR, "{id}: removed");
}

pub fn remove_failed(id: &dyn Display, why: &dyn Display) {
    log::error!(target: QMGR, "{id}: cannot remove: {why}");
}

/// What an attempt learnt could not be written; the spool is read again.
pub fn state_not_recorded(id: &dyn Display, why: &dyn Display) {
    log::error!(target: QMGR, "{id}: cannot record delivery state: {why}");
}

/// A message the runner found gone, held or locked when its turn came.
pub fn not_delivered_now(id: &dyn Display, why: &dyn Display) {
    log::debug!(target: QMGR, "{id}: not delivered now: {why}");
}

/// A queued message whose envelope cannot be read.
pub fn unreadable(id: &dyn Display, why: &dyn Display) {
    log::warn!(target: QMGR, "{id}: {why}");
}

/// The queue runner started with this many messages to look at.
pub fn queue_scheduled(count: usize) {
    log::info!(target: QMGR, "queue: {count} messages scheduled");
}

/// One message a flush makes due now (`sendmail -q`, `ternctl flush`).
pub fn flushed(id: &dyn Display) {
    log::info!(target: QMGR, "{id}: flushed");
}

/// `ternctl flush`.
pub fn flush() {
    log::info!(target: QMGR, "flush: trying all deferred mail now");
}

pub fn queue_scan_failed(why: &dyn Display) {
    log::error!(target: QMGR, "queue scan: {why}");
}

pub fn pickup_failed(why: &dyn Display) {
    log::error!(target: PICKUP, "maildrop pickup: {why}");
}

/// Delivered messages whose files could not be removed (spool::retire).
pub fn reap_failed(why: &dyn Display) {
    log::error!(target: QMGR, "removing delivered messages: {why}");
}

/// Without a resolver remote mail waits rather than bounces; this says why.
pub fn resolver_unavailable(why: &dyn Display) {
    log::error!("DNS resolver unavailable: {why}");
}

// ---- ternctl ---------------------------------------------------------------
// Logged by ternctl itself (its own program name, no component), with
// Postfix's postsuper words, so that a message's history in the log shows who
// held, released or removed it.

/// `ternctl hold ID`.
pub fn held(id: &dyn Display) {
    log::info!("{id}: placed on hold");
}

/// `ternctl release ID`.
pub fn released(id: &dyn Display) {
    log::info!("{id}: released from hold");
}

/// `ternctl delete ID`.
pub fn deleted(id: &dyn Display) {
    log::info!("{id}: removed");
}

/// `ternctl flush` with the daemon down: the message is due when it starts.
pub fn marked_due(id: &dyn Display) {
    log::info!("{id}: flushed (ternd is not running: due when it starts)");
}

/// `ternctl flush` handed to the running daemon (which logs each message).
pub fn flush_requested() {
    log::info!("flush: requested");
}

// ---- Outbound TLS policy (DNSSEC, MTA-STS, TLS-RPT) ---------------------------

/// The probe found the resolvers validating: DANE can be used.
/// `dnssec: resolvers 127.0.0.1:53 validate (AD on the root's NS): DANE on`
pub fn dnssec_validating(resolvers: &str) {
    log::info!("dnssec: resolvers {resolvers} validate (AD on the root's NS): DANE on");
}

/// The probe's answer was not validated: no DNSSEC-based policy applies.
pub fn dnssec_not_validating(resolvers: &str, status: &str) {
    log::warn!(
        "dnssec: resolvers {resolvers} do not validate (the root's NS came back {status}, \
         without AD): DANE off, answers count as insecure"
    );
}

/// `dnssec_trust_ad` does not let tern believe these resolvers.
pub fn dnssec_untrusted(resolvers: &str) {
    log::info!(
        "dnssec: the AD bit of resolvers {resolvers} is not trusted (not on loopback, or \
         dnssec_trust_ad = no): DANE off"
    );
}

/// An MTA-STS policy was fetched (new id, or a refresh).
pub fn sts_fetched(domain: &str, id: &str, mode: &str, max_age: u64) {
    log::info!("mta-sts: {domain}: policy id={id} mode={mode} max_age={max_age} fetched");
}

/// An MTA-STS policy could not be fetched; a cached one may stand in.
pub fn sts_fetch_failed(domain: &str, why: &dyn Display, cached: bool) {
    let then = if cached {
        "the cached policy stays in force"
    } else {
        "no policy"
    };
    log::warn!("mta-sts: {domain}: {why}: {then}");
}

pub fn sts_cache_unusable(why: &dyn Display) {
    log::error!("mta-sts: policy cache unusable, policies are not kept: {why}");
}

pub fn sts_fetcher_unusable(why: &dyn Display) {
    log::error!("mta-sts: cannot fetch policies: {why}");
}

pub fn tlsrpt_store_unusable(why: &dyn Display) {
    log::error!("tlsrpt: results directory unusable, no reports: {why}");
}

pub fn tlsrpt_record_failed(why: &dyn Display) {
    log::warn!("tlsrpt: cannot record a result: {why}");
}

/// A daily TLS report was queued for `domain`'s `rua` addresses.
pub fn tlsrpt_queued(day: &str, domain: &str, to: &str, id: &dyn Display) {
    log::info!("tlsrpt: report for {domain} ({day}) to {to} queued as {id}");
}

/// A domain with results but no (mailto) `_smtp._tls` record: no report.
pub fn tlsrpt_no_record(day: &str, domain: &str) {
    log::debug!("tlsrpt: no report for {domain} ({day}): no _smtp._tls record with a mailto rua");
}

pub fn tlsrpt_failed(day: &str, why: &dyn Display) {
    log::error!("tlsrpt: reports for {day} not sent, will retry: {why}");
}
