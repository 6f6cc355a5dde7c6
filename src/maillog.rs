//! The mail log: one function per mail event, one line each, keyed by queue
//! id where there is one, in a form close to Postfix's so that administrators'
//! grep habits and log summarizers carry over. The format is documented in
//! ternd(8); change it only with the man page.

use std::fmt::Display;

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
    let user: String = user
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    log::warn!("auth failed from {client}: mechanism={mechanism} user=<{user}>");
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
