//! The mail log: one function per mail event, one line each, keyed by queue
//! id where there is one, in a form close to Postfix's so that administrators'
//! grep habits and log summarizers carry over. The format is documented in
//! ternd(8); change it only with the man page.

use std::fmt::Display;
use std::net::IpAddr;

/// `connect from unknown[192.0.2.1]`
pub fn connect(client: &dyn Display) {
    log::info!("connect from {client}");
}

/// `disconnect from unknown[192.0.2.1] commands=5 errors=0`
pub fn disconnect(client: &dyn Display, commands: u32, errors: u32) {
    log::info!("disconnect from {client} commands={commands} errors={errors}");
}

/// A client that went silent: `timeout after RCPT from unknown[192.0.2.1]`, with
/// `(stress mode)` when it was cut short because the session pool was busy.
pub fn timeout(client: &dyn Display, after: &str, stress: bool) {
    let why = if stress { " (stress mode)" } else { "" };
    log::info!("timeout after {after} from {client}{why}");
}

/// A session went past `junk_command_limit`: its junk commands are answered
/// late from now on. `junk: unknown[192.0.2.1] after 101 commands that move no mail`
pub fn junk_limit(client: &dyn Display, n: u32) {
    log::warn!("junk: {client} after {n} commands that move no mail; slowing down");
}

/// A full pool closed this session, which sent no mail, for a new client:
/// `evicted: unknown[192.0.2.1] after NOOP: no mail, closed for a new client`
pub fn evicted(client: &dyn Display, after: &str) {
    log::info!("evicted: {client} after {after}: no mail, closed to make room for a new client");
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
    log::info!("{line}");
}

/// A recipient named again in one transaction, logged once per mailbox: it
/// is answered 250 and delivered once, with the first RCPT's DSN parameters.
/// `NOQUEUE: duplicate: RCPT from unknown[192.0.2.1]: <c@d>: duplicate
/// recipient, delivered once; from=<a@b> to=<c@d> proto=ESMTP helo=<x>`
pub fn duplicate_recipient(client: &dyn Display, from: &str, to: &str, proto: &str, helo: Option<&str>) {
    let helo = helo.map(|h| format!(" helo=<{h}>")).unwrap_or_default();
    log::info!(
        "NOQUEUE: duplicate: RCPT from {client}: <{to}>: duplicate recipient, delivered once; \
         from=<{from}> to=<{to}> proto={proto}{helo}"
    );
}

/// A message is on disk: `ID: from=<a@b>, size=1234, nrcpt=2, client=unknown[192.0.2.1]`
pub fn queued(id: &dyn Display, from: &str, size: u64, nrcpt: usize, client: &dyn Display) {
    log::info!("{id}: from=<{from}>, size={size}, nrcpt={nrcpt}, client={client}");
}

/// A connection refused before any session: `reject: connect from unknown[192.0.2.1]: 421 4.3.2 ...`
pub fn refuse_connection(client: &dyn Display, reply: &dyn Display) {
    log::warn!("reject: connect from {client}: {reply}");
}

/// `STARTTLS from unknown[192.0.2.1] on smtp: TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384`
pub fn tls_established(client: &dyn Display, service: &dyn Display, tls: &dyn Display) {
    log::info!("TLS established from {client} on {service}: {tls}");
}

/// A failed handshake ends that session only.
pub fn tls_failed(client: &dyn Display, service: &dyn Display, why: &dyn Display) {
    log::warn!("TLS handshake failed from {client} on {service}: {why}");
}

/// `auth ok from unknown[192.0.2.1]: mechanism=PLAIN user=<alice>`
pub fn auth_ok(client: &dyn Display, mechanism: &str, user: &str) {
    log::info!("auth ok from {client}: mechanism={mechanism} user=<{user}>");
}

/// Every failed AUTH, with the client address, for fail2ban-style tools:
/// `auth failed from unknown[192.0.2.1]: mechanism=PLAIN user=<alice>`
pub fn auth_failed(client: &dyn Display, mechanism: &str, user: &str) {
    let user = printable(user);
    log::warn!("auth failed from {client}: mechanism={mechanism} user=<{user}>");
}

/// A client's text with control characters shown as `?`, so that it cannot
/// forge a log line.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// AUTH refused before any password check (server::auth_guard), with the
/// address, for fail2ban-style tools: `auth refused from unknown[192.0.2.1]:
/// too many failures from this address, for 412s more` or `...: account
/// <alice> under attack, next check in 37s`.
pub fn auth_refused(client: &dyn Display, why: &dyn Display) {
    log::warn!("auth refused from {client}: {why}");
}

/// A client dropped for asking after too many unknown recipients.
pub fn harvest(client: &dyn Display, unknown: u32) {
    log::warn!("harvest: dropped {client} after {unknown} unknown recipients");
}

/// `proxy unknown[192.0.2.10]: client unknown[203.0.113.5]`
pub fn proxied(proxy: &dyn Display, client: &dyn Display) {
    log::info!("proxy {proxy}: client {client}");
}

/// A connection on a PROXY listener that was closed before any SMTP.
pub fn proxy_refused(client: &dyn Display, why: &dyn Display) {
    log::warn!("proxy: refused connection from {client}: {why}");
}

// ---- The queue and delivery ----------------------------------------------------

/// What became of one recipient in one attempt, Postfix's line:
/// `ID: to=<rcpt>, relay=mx.host[ip]:port, delay=S, delays=a/b/c/d, tls=TLSv1.3, dsn=X.Y.Z, status=sent (detail)`;
/// `tls=` only when the hop was encrypted. `status` is sent, deferred,
/// bounced or expired.
#[allow(clippy::too_many_arguments)]
pub fn delivery(
    id: &dyn Display,
    rcpt: &str,
    relay: &str,
    delay: u64,
    delays: &dyn Display,
    tls: Option<&str>,
    dsn: &dyn Display,
    status: &str,
    detail: &str,
) {
    let tls = tls.map(|t| format!(", tls={t}")).unwrap_or_default();
    log::info!(
        "{id}: to=<{rcpt}>, relay={relay}, delay={delay}, delays={delays}{tls}, dsn={dsn}, status={status} ({detail})"
    );
}

/// One address of a remote walk that did not take the message; the walk
/// goes on: `ID: mx.host[ip]:port: connect: Connection refused`.
pub fn host_failed(id: &dyn Display, relay: &str, detail: &str) {
    log::info!("{id}: {relay}: {detail}");
}

/// Opportunistic TLS failed and the host is tried again in plaintext.
pub fn tls_fallback(id: &dyn Display, host: &str, ip: IpAddr, why: &str) {
    log::info!("{id}: {host}[{ip}]: TLS failed ({why}), retrying without");
}

/// A connection kept from an earlier message carried this one.
pub fn connection_reused(id: &dyn Display, host: &str, ip: IpAddr) {
    log::debug!("{id}: reused the connection to {host}[{ip}]");
}

/// A bounce (RFC 3464 action failed) was queued as `notice`.
pub fn bounce_queued(id: &dyn Display, notice: &dyn Display) {
    log::info!("{id}: sender non-delivery notification: {notice}");
}

/// A success notice (RFC 3461 NOTIFY=SUCCESS) was queued as `notice`.
pub fn success_notice_queued(id: &dyn Display, notice: &dyn Display) {
    log::info!("{id}: sender delivery status notification: {notice}");
}

/// The one delay notice was queued as `notice`.
pub fn delay_notice_queued(id: &dyn Display, notice: &dyn Display) {
    log::info!("{id}: sender delay notification: {notice}");
}

/// A notice owed for a message from the null sender: never sent.
pub fn notice_dropped(id: &dyn Display) {
    log::warn!("{id}: undeliverable notification dropped (null sender)");
}

/// The bounce could not be queued: the failed recipients are tried again.
pub fn bounce_failed(id: &dyn Display, why: &dyn Display) {
    log::error!("{id}: cannot queue the bounce, will retry: {why}");
}

pub fn success_notice_failed(id: &dyn Display, why: &dyn Display) {
    log::error!("{id}: cannot queue the success notice: {why}");
}

pub fn delay_notice_failed(id: &dyn Display, why: &dyn Display) {
    log::error!("{id}: cannot queue the delay notice: {why}");
}

/// Every recipient is final: the message left the queue.
pub fn removed(id: &dyn Display) {
    log::info!("{id}: removed");
}

pub fn remove_failed(id: &dyn Display, why: &dyn Display) {
    log::error!("{id}: cannot remove: {why}");
}

/// What an attempt learnt could not be written; the spool is read again.
pub fn state_not_recorded(id: &dyn Display, why: &dyn Display) {
    log::error!("{id}: cannot record delivery state: {why}");
}

/// A message the runner found gone, held or locked when its turn came.
pub fn not_delivered_now(id: &dyn Display, why: &dyn Display) {
    log::debug!("{id}: not delivered now: {why}");
}

/// A queued message whose envelope cannot be read.
pub fn unreadable(id: &dyn Display, why: &dyn Display) {
    log::warn!("{id}: {why}");
}

/// The queue runner started with this many messages to look at.
pub fn queue_scheduled(count: usize) {
    log::info!("queue: {count} messages scheduled");
}

/// `ternctl flush`.
pub fn flush() {
    log::info!("flush: trying all deferred mail now");
}

pub fn queue_scan_failed(why: &dyn Display) {
    log::error!("queue scan: {why}");
}

pub fn pickup_failed(why: &dyn Display) {
    log::error!("maildrop pickup: {why}");
}

/// Delivered messages whose files could not be removed (spool::retire).
pub fn reap_failed(why: &dyn Display) {
    log::error!("removing delivered messages: {why}");
}

/// Without a resolver remote mail waits rather than bounces; this says why.
pub fn resolver_unavailable(why: &dyn Display) {
    log::error!("DNS resolver unavailable: {why}");
}
