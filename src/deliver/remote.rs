//! Remote delivery: find the next hop for a domain (a `route`, the
//! `relay_host`, or its MX records, RFC 5321 5.1), then walk the hosts and
//! their addresses until one takes the message in one SMTP transaction with
//! a result for each recipient.
//!
//! The walk (as chasquid and Postfix do): a host that cannot be reached,
//! greets with an error, fails TLS that the policy requires or answers 4xx
//! to MAIL moves on to the next address or host. Once a host has answered
//! the recipients, its answers are final for this attempt: 2xx sent, 4xx
//! deferred, 5xx bounced. A connection lost after the body went out defers
//! everyone who was accepted.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{Config, NextHop};
use crate::deliver::client::{self, Client, Extensions, Reply};
use crate::deliver::dns::{self, DnsError, Mx, Resolver};
use crate::deliver::tls_client::{self, Policy, Stream};
use crate::deliver::{Attempted, Outcome, Success, Timing};
use crate::smtp::status::Status;
use crate::spool::{BodyType, DsnRet, Envelope, Recipient};

/// Connections kept open between messages, and the count of deliveries in
/// progress per destination. One per queue runner, shared by its threads.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    active: Mutex<HashMap<String, usize>>,
    freed: Condvar,
}

/// A connection between transactions: greeted, encrypted and authenticated
/// as it was for its last message.
struct Idle {
    client: Client<Stream>,
    ext: Extensions,
    tls: Option<&'static str>,
    since: Instant,
}

/// At most this many idle connections per host, address and policy.
const MAX_IDLE_PER_KEY: usize = 4;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A delivery thread that panicked leaves consistent data behind (every
    // change is one insert or remove), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    fn take(&self, key: &str, max_age: Duration) -> Option<Idle> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(key)?;
        while let Some(i) = list.pop() {
            if i.since.elapsed() < max_age {
                return Some(i);
            }
            let mut stale = i.client;
            quit(&mut stale);
        }
        None
    }

    fn put(&self, key: String, conn: Idle) {
        let mut idle = lock(&self.idle);
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_KEY {
            list.push(conn);
        } else {
            drop(idle);
            let mut c = conn.client;
            quit(&mut c);
        }
    }

    /// Close connections idle longer than `max_age` (the runner calls this
    /// about once a second).
    pub fn purge(&self, max_age: Duration) {
        let mut expired = Vec::new();
        {
            let mut idle = lock(&self.idle);
            for list in idle.values_mut() {
                let (old, keep): (Vec<Idle>, Vec<Idle>) =
                    list.drain(..).partition(|i| i.since.elapsed() >= max_age);
                *list = keep;
                expired.extend(old);
            }
            idle.retain(|_, l| !l.is_empty());
        }
        for i in expired {
            let mut c = i.client;
            set_timeout(&mut c, Duration::from_secs(5));
            quit(&mut c);
        }
    }

    /// Wait for one of `limit` delivery slots of `dest`; the slot is given
    /// back when the guard drops.
    fn enter(&self, dest: &str, limit: usize) -> Slot<'_> {
        let mut active = lock(&self.active);
        loop {
            let n = active.get(dest).copied().unwrap_or(0);
            if n < limit.max(1) {
                active.insert(dest.to_owned(), n + 1);
                return Slot {
                    pool: self,
                    dest: dest.to_owned(),
                };
            }
            active = self.freed.wait(active).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// One delivery in progress to a destination.
struct Slot<'a> {
    pool: &'a Pool,
    dest: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut active = lock(&self.pool.active);
        if let Some(n) = active.get_mut(&self.dest) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                active.remove(&self.dest);
            }
        }
        drop(active);
        self.pool.freed.notify_all();
    }
}

/// Deliver `rcpts` (all in `domain`) of one message: one result per
/// recipient, in order.
pub fn deliver(
    cfg: &Config,
    resolver: &dyn Resolver,
    pool: &Pool,
    env: &Envelope,
    message: &[u8],
    domain: &str,
    rcpts: &[&Recipient],
) -> Vec<Attempted> {
    // For delays=: setup runs from here to the start of the transaction
    // (less any wait for a slot), transmission from there to the end.
    let began = Instant::now();
    let waited = Cell::new(Duration::ZERO);
    let tx_start: Cell<Option<Instant>> = Cell::new(None);
    let timing = || {
        let now = Instant::now();
        let setup_end = tx_start.get().unwrap_or(now);
        Timing {
            began: Some(began),
            waited: waited.get(),
            setup: setup_end
                .saturating_duration_since(began)
                .saturating_sub(waited.get()),
            transmit: now.saturating_duration_since(setup_end),
        }
    };
    let all = |relay: &str, outcome: Outcome| -> Vec<Attempted> {
        let timing = timing();
        rcpts
            .iter()
            .map(|_| Attempted {
                relay: relay.to_owned(),
                tls: None,
                outcome: outcome.clone(),
                success: Success::Relayed,
                timing,
            })
            .collect()
    };
    let hop = cfg.next_hop(domain);
    let smarthost = hop.is_some() && hop == cfg.relay_host.as_ref();
    let implicit_tls = hop.is_some_and(|h| h.implicit_tls);
    // RFC 5321 5.1: with no MX, the domain itself is the host; when it has
    // no address either, there is nowhere to deliver.
    let mut implicit = false;
    let (hosts, port, policy) = match hop {
        Some(NextHop {
            host, port, mx, tls, ..
        }) => {
            let hosts = if *mx {
                match mx_hosts(cfg, resolver, host, env) {
                    Ok((h, i)) => {
                        implicit = i;
                        h
                    }
                    Err(o) => return all("none", o),
                }
            } else {
                vec![host.clone()]
            };
            (hosts, *port, tls.unwrap_or(cfg.smtp_tls))
        }
        // RFC 5321 5.1: an address literal is the host; no DNS at all.
        None if domain.starts_with('[') => {
            let inner = domain.trim_start_matches('[').trim_end_matches(']');
            let inner = inner.strip_prefix("IPv6:").unwrap_or(inner);
            match inner.parse::<IpAddr>() {
                Ok(ip) => (vec![ip.to_string()], cfg.mx_port, cfg.smtp_tls),
                Err(_) => {
                    return all(
                        "none",
                        Outcome::permanent(Status(5, 1, 2), format!("unusable address literal {domain}")),
                    )
                }
            }
        }
        None => match mx_hosts(cfg, resolver, domain, env) {
            Ok((h, i)) => {
                implicit = i;
                (h, cfg.mx_port, cfg.smtp_tls)
            }
            Err(o) => return all("none", o),
        },
    };

    // The destination the concurrency limit counts: the route or relay
    // host when there is one, else the recipient domain.
    let dest = hop.map_or(domain, |h| h.host.as_str());
    let entering = Instant::now();
    let _slot = pool.enter(dest, cfg.max_connections_per_domain);
    waited.set(entering.elapsed());
    let wire = client::wire_body(message);
    let job = Job {
        cfg,
        env,
        wire: &wire,
        rcpts,
        smarthost,
        implicit_tls,
        pool,
        tx_start: &tx_start,
    };
    let mut last = Outcome::temporary(Status(4, 4, 4), format!("no usable host for {domain}"));
    let mut last_relay = "none".to_owned();
    for host in &hosts {
        let addrs = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match resolver.addrs(host, cfg.inet_protocols) {
                Ok(a) if a.is_empty() && implicit => {
                    return all(
                        "none",
                        Outcome::permanent(
                            Status(5, 4, 4),
                            format!("{host} has neither MX nor address records"),
                        ),
                    );
                }
                Ok(a) if a.is_empty() => {
                    last = Outcome::temporary(Status(4, 4, 4), format!("{host} has no address"));
                    continue;
                }
                Ok(a) => a,
                Err(DnsError::NxDomain) => {
                    last = Outcome::temporary(Status(4, 4, 4), format!("host {host} not found"));
                    continue;
                }
                Err(e) => {
                    last = Outcome::temporary(Status(4, 4, 3), format!("{host}: {e}"));
                    continue;
                }
            },
        };
        for ip in addrs {
            let relay = format!("{host}[{ip}]:{port}");
            // RFC 5321 5.1: an MX whose address is one we listen on is us
            // under another name; it and every worse MX are skipped.
            if hop.is_none() && is_myself(cfg, ip, port) {
                if last_relay == "none" {
                    return all(
                        "none",
                        Outcome::permanent(
                            Status(5, 4, 6),
                            format!("mail for {domain} loops back to myself ({relay})"),
                        ),
                    );
                }
                return all(&last_relay, last);
            }
            // A transaction with an earlier host that failed was setup time.
            tx_start.set(None);
            match job.try_host(host, SocketAddr::new(ip, port), policy) {
                HostResult::Done(results) => {
                    let timing = timing();
                    return results
                        .into_iter()
                        .map(|(outcome, tls, success)| Attempted {
                            relay: relay.clone(),
                            tls,
                            outcome,
                            success,
                            timing,
                        })
                        .collect();
                }
                HostResult::Next(o) => {
                    log::info!("{}: {relay}: {}", env.id, o.detail());
                    last = o;
                    last_relay = relay;
                }
            }
        }
    }
    all(&last_relay, last)
}

/// The MX hosts to try for `name`, best first, with ourselves and anything
/// worse removed, and whether they are the implicit MX (the name itself);
/// or the outcome for every recipient when there are none.
fn mx_hosts(
    cfg: &Config,
    resolver: &dyn Resolver,
    name: &str,
    env: &Envelope,
) -> Result<(Vec<String>, bool), Outcome> {
    let hosts = match resolver.mx(name) {
        // RFC 7505 4.1: a null MX is an immediate, permanent failure.
        Ok(Mx::Null) => {
            return Err(Outcome::permanent(
                Status(5, 1, 10),
                format!("556 5.1.10 domain {name} does not accept mail (null MX)"),
            ))
        }
        // RFC 5321 5.1: no MX, so the domain itself is the only host.
        Ok(Mx::Implicit) => return Ok((vec![name.to_owned()], true)),
        Ok(Mx::Hosts(h)) => h,
        Err(DnsError::NxDomain) => {
            return Err(Outcome::permanent(
                Status(5, 1, 2),
                format!("domain {name} not found"),
            ));
        }
        Err(e) => {
            return Err(Outcome::temporary(
                Status(4, 4, 3),
                format!("MX lookup of {name}: {e}"),
            ))
        }
    };
    let noise = env
        .id
        .as_str()
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let sorted = dns::sort_mx(hosts, noise);
    // RFC 5321 5.1: if we are one of the MX hosts, only those more
    // preferred than us may be used; none left means a loop.
    let me = cfg.hostname.trim_end_matches('.');
    let mine = sorted
        .iter()
        .find(|(_, h)| h.eq_ignore_ascii_case(me))
        .map(|(p, _)| *p);
    let usable: Vec<String> = sorted
        .into_iter()
        .filter(|(p, _)| mine.is_none_or(|m| *p < m))
        .map(|(_, h)| h)
        .collect();
    if usable.is_empty() {
        return Err(Outcome::permanent(
            Status(5, 4, 6),
            format!("mail for {name} loops back to myself"),
        ));
    }
    Ok((usable, false))
}

/// Whether `ip:port` is one of our own listening sockets.
fn is_myself(cfg: &Config, ip: IpAddr, port: u16) -> bool {
    cfg.listen
        .iter()
        .any(|l| l.port() == port && (l.ip() == ip || (l.ip().is_unspecified() && ip.is_loopback())))
}

/// What one host did with the transaction.
enum HostResult {
    /// It answered for the recipients: (outcome, tls, success notice) each.
    Done(Vec<(Outcome, Option<&'static str>, Success)>),
    /// Try the next address or host; this is why.
    Next(Outcome),
}

struct Job<'a> {
    cfg: &'a Config,
    env: &'a Envelope,
    wire: &'a [u8],
    rcpts: &'a [&'a Recipient],
    smarthost: bool,
    implicit_tls: bool,
    pool: &'a Pool,
    /// When the current host's transaction (MAIL FROM) began, for delays=.
    tx_start: &'a Cell<Option<Instant>>,
}

fn temp(status: Status, detail: String) -> Outcome {
    Outcome::temporary(status, detail)
}

/// The outcome a reply means: 2xx delivered, 4xx temporary, 5xx permanent.
fn from_reply(r: &Reply) -> Outcome {
    if r.is_positive() {
        Outcome::delivered(r.one_line())
    } else if r.is_temporary() {
        Outcome::temporary(r.status(), r.one_line())
    } else {
        Outcome::permanent(r.status(), r.one_line())
    }
}

fn io_temp(what: &str, e: &io::Error) -> Outcome {
    let status = if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
        Status(4, 4, 2)
    } else {
        Status(4, 4, 1)
    };
    temp(status, format!("{what}: {e}"))
}

impl Job<'_> {
    /// Try one address; a TLS failure under `may` retries it in plaintext.
    fn try_host(&self, host: &str, addr: SocketAddr, policy: Policy) -> HostResult {
        match self.session(host, addr, policy) {
            // With implicit TLS there is no plaintext to fall back to.
            Err(Tls(why)) if policy == Policy::May && !self.implicit_tls => {
                log::info!(
                    "{}: {host}[{}]: TLS failed ({why}), retrying without",
                    self.env.id,
                    addr.ip()
                );
                match self.session(host, addr, Policy::None) {
                    Ok(r) => r,
                    Err(Tls(why)) => HostResult::Next(temp(Status(4, 7, 5), why)),
                }
            }
            Err(Tls(why)) => HostResult::Next(temp(Status(4, 7, 5), format!("TLS with {host}: {why}"))),
            Ok(r) => r,
        }
    }

    fn timeouts(&self, s: &TcpStream, t: std::time::Duration) -> io::Result<()> {
        s.set_read_timeout(Some(t))?;
        s.set_write_timeout(Some(t))
    }

    /// One connection: greeting, EHLO, STARTTLS, AUTH, the transaction.
    /// A connection kept from an earlier message to the same host, address
    /// and policy is used instead when it still answers RSET.
    fn session(&self, host: &str, addr: SocketAddr, policy: Policy) -> Result<HostResult, Tls> {
        let cfg = self.cfg;
        let key = format!("{host} {addr} {policy:?} {}", self.smarthost);
        if let Some(max_age) = cfg.smtp_connection_cache_time {
            if let Some(mut idle) = self.pool.take(&key, max_age) {
                set_timeout(&mut idle.client, cfg.smtp_command_timeout);
                // The transaction starts with RSET, pipelined with MAIL when the
                // server allows; a connection closed or confused meanwhile (None)
                // is dropped for a new one.
                self.tx_start.set(Some(Instant::now()));
                if let Some((result, reusable)) =
                    self.transaction(&mut idle.client, &idle.ext, idle.tls, true)
                {
                    log::debug!("{}: reused the connection to {host}[{}]", self.env.id, addr.ip());
                    self.finish(key, idle.client, idle.ext, idle.tls, reusable);
                    return Ok(result);
                }
            }
        }
        let next = |o: Outcome| Ok(HostResult::Next(o));
        let tcp = match TcpStream::connect_timeout(&addr, cfg.smtp_connect_timeout) {
            Ok(s) => s,
            Err(e) => return next(io_temp("connect", &e)),
        };
        let _ = tcp.set_nodelay(true);
        if let Err(e) = self.timeouts(&tcp, cfg.smtp_helo_timeout) {
            return next(io_temp("socket", &e));
        }
        let tls_config = || tls_client::config(policy, cfg.tls_ca_file.as_deref());
        // Port 465 or `smtps`: TLS from the first byte (RFC 8314 3.3),
        // whatever the policy says: such a port speaks nothing else.
        let mut stream = Stream::Plain(tcp);
        if self.implicit_tls {
            let c = tls_client::config(policy.max(Policy::May), cfg.tls_ca_file.as_deref())
                .map_err(|e| Tls(e.to_string()))?;
            stream = stream.upgrade(c, host).map_err(|e| Tls(e.to_string()))?;
        }
        let mut c = Client::new(stream);
        c.set_reply_limit(cfg.smtp_helo_timeout);
        let greeting = match c.reply() {
            Ok(r) => r,
            Err(e) => return next(io_temp("greeting", &e)),
        };
        if greeting.code != 220 {
            return next(temp(
                Status(4, 4, 0),
                format!("greeting: {}", greeting.one_line()),
            ));
        }
        let mut ext = match self.hello(&mut c) {
            Ok(e) => e,
            Err(o) => return next(o),
        };
        let tls_active = matches!(c.stream(), Stream::Tls(_));
        if !tls_active && policy != Policy::None && ext.starttls {
            match c.command("STARTTLS") {
                Ok(r) if r.code == 220 => {}
                Ok(r) => return Err(Tls(format!("STARTTLS refused: {}", r.one_line()))),
                Err(e) => return next(io_temp("STARTTLS", &e)),
            }
            let plain = c.into_stream().map_err(|e| Tls(e.to_string()))?;
            let cfg_tls = tls_config().map_err(|e| Tls(e.to_string()))?;
            let tls = plain.upgrade(cfg_tls, host).map_err(|e| Tls(e.to_string()))?;
            c = Client::new(tls);
            c.set_reply_limit(cfg.smtp_helo_timeout);
            // RFC 3207 4.2: forget everything learnt before TLS.
            ext = match self.hello(&mut c) {
                Ok(e) => e,
                Err(o) => return next(o),
            };
        }
        let tls = c.stream().tls_version();
        if tls.is_none() && !policy.allows_plaintext() {
            return next(temp(
                Status(4, 7, 4),
                format!("TLS is required for {host} but not offered"),
            ));
        }
        if self.smarthost {
            if let Some((user, pass)) = &cfg.relay_auth {
                if tls.is_none() {
                    return next(temp(
                        Status(4, 7, 4),
                        format!("{host}: not sending credentials without TLS"),
                    ));
                }
                if let Err(o) = auth(&mut c, &ext, user, pass) {
                    return next(o);
                }
            }
        }
        self.tx_start.set(Some(Instant::now()));
        let (result, reusable) = self.transaction(&mut c, &ext, tls, false).unwrap_or_else(|| {
            (
                HostResult::Next(temp(Status(4, 4, 2), "RSET refused".to_owned())),
                false,
            )
        });
        self.finish(key, c, ext, tls, reusable);
        Ok(result)
    }

    /// Keep the connection for the next message, or say QUIT.
    fn finish(
        &self,
        key: String,
        mut c: Client<Stream>,
        ext: Extensions,
        tls: Option<&'static str>,
        reusable: bool,
    ) {
        if reusable && self.cfg.smtp_connection_cache_time.is_some() {
            self.pool.put(
                key,
                Idle {
                    client: c,
                    ext,
                    tls,
                    since: Instant::now(),
                },
            );
        } else if reusable {
            set_timeout(&mut c, self.cfg.smtp_command_timeout);
            quit(&mut c);
        }
    }

    /// EHLO, or HELO when EHLO is refused (RFC 5321 4.1.4).
    fn hello(&self, c: &mut Client<Stream>) -> Result<Extensions, Outcome> {
        let hostname = &self.cfg.hostname;
        let r = c
            .command(&format!("EHLO {hostname}"))
            .map_err(|e| io_temp("EHLO", &e))?;
        if r.code == 250 {
            return Ok(Extensions::parse(&r));
        }
        if !(500..600).contains(&r.code) {
            return Err(temp(r.status(), format!("EHLO: {}", r.one_line())));
        }
        let r = c
            .command(&format!("HELO {hostname}"))
            .map_err(|e| io_temp("HELO", &e))?;
        if r.code == 250 {
            Ok(Extensions::default())
        } else {
            Err(temp(Status(4, 4, 0), format!("HELO: {}", r.one_line())))
        }
    }

    /// The transaction for every recipient; when the server answers 452
    /// to some RCPTs (RFC 5321 4.5.3.1.10: too many recipients) after
    /// taking others, those go in another transaction on the same connection.
    /// With `rset` (a connection kept from an earlier message) it starts
    /// with RSET; None when that fails: the connection is no longer usable,
    /// and nothing was delivered on it.
    fn transaction(
        &self,
        c: &mut Client<Stream>,
        ext: &Extensions,
        tls: Option<&'static str>,
        mut rset: bool,
    ) -> Option<(HostResult, bool)> {
        let mut todo: Vec<usize> = (0..self.rcpts.len()).collect();
        let mut results: Vec<Option<(Outcome, Option<&'static str>, Success)>> = vec![None; self.rcpts.len()];
        loop {
            let subset: Vec<&Recipient> = todo.iter().filter_map(|&i| self.rcpts.get(i).copied()).collect();
            let (r, reusable) = self.transaction_for(c, ext, tls, &subset, rset)?;
            rset = false;
            let round = match r {
                HostResult::Next(o) if results.iter().all(Option::is_none) => {
                    return Some((HostResult::Next(o), reusable))
                }
                // Some recipients already went: the rest wait for the next attempt.
                HostResult::Next(o) => todo.iter().map(|_| (o.clone(), tls, Success::Relayed)).collect(),
                HostResult::Done(rs) => rs,
            };
            let mut again = Vec::new();
            let mut progress = false;
            for (&i, res) in todo.iter().zip(round) {
                match &res.0 {
                    Outcome::Temporary { detail, .. } if detail.starts_with("452") => again.push(i),
                    Outcome::Delivered { .. } => progress = true,
                    _ => {}
                }
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(res);
                }
            }
            if again.is_empty() || !progress || !reusable {
                let done = results
                    .into_iter()
                    .map(|r| {
                        r.unwrap_or_else(|| {
                            (
                                temp(Status(4, 4, 2), "no result".to_owned()),
                                tls,
                                Success::Relayed,
                            )
                        })
                    })
                    .collect();
                return Some((HostResult::Done(done), reusable));
            }
            todo = again;
        }
    }

    /// One transaction; None when the leading RSET (see `transaction`) failed.
    fn transaction_for(
        &self,
        c: &mut Client<Stream>,
        ext: &Extensions,
        tls: Option<&'static str>,
        rcpts: &[&Recipient],
        rset: bool,
    ) -> Option<(HostResult, bool)> {
        let (cfg, env) = (self.cfg, self.env);
        let success = if ext.dsn {
            Success::PassedOn
        } else {
            Success::Relayed
        };
        let all = |o: Outcome| HostResult::Done(rcpts.iter().map(|_| (o.clone(), tls, success)).collect());
        // RFC 6531 3.2: no SMTPUTF8 at the far end, and the message needs
        // it: a non-ASCII address or header. Declared but not needed, it
        // goes as plain ESMTP (as Postfix does).
        let needs_utf8 = env.smtputf8
            && (!env.sender.is_ascii()
                || rcpts.iter().any(|r| !r.addr.is_ascii())
                || !headers_ascii(self.wire));
        if needs_utf8 && !ext.smtputf8 {
            return Some((
                all(Outcome::permanent(
                    Status(5, 6, 7),
                    "the message needs SMTPUTF8, which the receiving server does not support".to_owned(),
                )),
                true,
            ));
        }
        // RFC 1870: the size on the wire (CRLF and dot-stuffed, without the final dot).
        let size = self.wire.len().saturating_sub(3) as u64;
        if let Some(limit) = ext.size.filter(|l| *l > 0) {
            if size > limit {
                return Some((
                    all(Outcome::permanent(
                        Status(5, 3, 4),
                        format!("message size {size} exceeds the receiving server's limit of {limit}"),
                    )),
                    true,
                ));
            }
        }
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
        if ext.dsn {
            match env.ret {
                Some(DsnRet::Full) => mail.push_str(" RET=FULL"),
                Some(DsnRet::Hdrs) => mail.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(id) = &env.envid {
                mail.push_str(&format!(" ENVID={}", client::xtext(id)));
            }
        }
        let rcpt_lines: Vec<String> = rcpts
            .iter()
            .map(|r| {
                let mut line = format!("RCPT TO:<{}>", r.addr);
                if ext.dsn {
                    if let Some(n) = &r.notify {
                        line.push_str(&format!(" NOTIFY={n}"));
                    }
                    if let Some(o) = &r.orcpt {
                        // Stored decoded as "rfc822;addr"; the address part is xtext.
                        let (kind, addr) = o.split_once(';').unwrap_or(("rfc822", o));
                        line.push_str(&format!(" ORCPT={kind};{}", client::xtext(addr)));
                    }
                }
                line
            })
            .collect();
        set_timeout(c, cfg.smtp_command_timeout);
        let envelope = match c.envelope(rset, &mail, &rcpt_lines, ext.pipelining) {
            // Closed meanwhile, on a kept connection: before the body, so
            // nothing was delivered; the caller opens a new one.
            Err(_) if rset => return None,
            Ok(e) if rset && e.rset.as_ref().is_none_or(|r| r.code != 250) => return None,
            Ok(e) => e,
            Err(e) => return Some((HostResult::Next(io_temp("MAIL/RCPT", &e)), false)),
        };
        if !envelope.mail.is_positive() {
            let o = from_reply(&envelope.mail);
            let r = match o {
                Outcome::Temporary { .. } => HostResult::Next(o),
                _ => all(o),
            };
            return Some((r, true));
        }
        let mut results: Vec<(Outcome, Option<&'static str>, Success)> = Vec::new();
        let mut accepted = Vec::new();
        for (i, _) in rcpts.iter().enumerate() {
            match envelope.rcpts.get(i) {
                Some(r) if r.is_positive() => {
                    accepted.push(i);
                    results.push((Outcome::delivered(r.one_line()), tls, success));
                }
                Some(r) => results.push((from_reply(r), tls, success)),
                None => results.push((temp(Status(4, 4, 2), "no reply to RCPT".to_owned()), tls, success)),
            }
        }
        let mut fail_accepted = |o: Outcome| {
            for &i in &accepted {
                if let Some(slot) = results.get_mut(i) {
                    slot.0 = o.clone();
                }
            }
        };
        match &envelope.data {
            None => {}
            Some(d) if d.code == 354 => {
                set_timeout(c, cfg.smtp_data_timeout);
                let sent = self.send_body(c);
                set_timeout(c, cfg.smtp_data_done_timeout);
                match sent.and_then(|()| c.reply()) {
                    Ok(r) if r.is_positive() => {
                        // The final reply is the one that counts for each.
                        let o = Outcome::delivered(r.one_line());
                        fail_accepted(o);
                    }
                    Ok(r) => fail_accepted(from_reply(&r)),
                    Err(e) => {
                        fail_accepted(io_temp("connection lost after DATA", &e));
                        return Some((HostResult::Done(results), false));
                    }
                }
            }
            Some(d) => fail_accepted(from_reply(d)),
        }
        set_timeout(c, cfg.smtp_command_timeout);
        Some((HostResult::Done(results), true))
    }

    /// The body in blocks, each under the data-block timeout.
    fn send_body(&self, c: &mut Client<Stream>) -> io::Result<()> {
        for block in self.wire.chunks(64 * 1024) {
            c.send(block)?;
        }
        Ok(())
    }
}

/// Whether the header section of the wire-form message is ASCII.
fn headers_ascii(wire: &[u8]) -> bool {
    let end = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(wire.len());
    wire.get(..end).unwrap_or(wire).is_ascii()
}

/// A TLS failure: under `may` the host is tried again in plaintext.
struct Tls(String);

/// AUTH PLAIN (RFC 4616) or LOGIN to the smarthost.
fn auth(c: &mut Client<Stream>, ext: &Extensions, user: &str, pass: &str) -> Result<(), Outcome> {
    let err = |e: io::Error| io_temp("AUTH", &e);
    let r = if ext.auth.iter().any(|m| m == "PLAIN") {
        let token = client::base64(format!("\0{user}\0{pass}").as_bytes());
        c.command(&format!("AUTH PLAIN {token}")).map_err(err)?
    } else if ext.auth.iter().any(|m| m == "LOGIN") {
        let r = c.command("AUTH LOGIN").map_err(err)?;
        if r.code != 334 {
            return Err(temp(Status(4, 7, 0), format!("AUTH LOGIN: {}", r.one_line())));
        }
        let r = c.command(&client::base64(user.as_bytes())).map_err(err)?;
        if r.code != 334 {
            return Err(temp(Status(4, 7, 0), format!("AUTH LOGIN: {}", r.one_line())));
        }
        c.command(&client::base64(pass.as_bytes())).map_err(err)?
    } else {
        return Err(temp(
            Status(4, 7, 0),
            "the relay host offers neither AUTH PLAIN nor LOGIN".to_owned(),
        ));
    };
    if r.code == 235 {
        Ok(())
    } else {
        // Wrong credentials are our configuration's fault: defer, never bounce.
        Err(temp(
            Status(4, 7, 0),
            format!("authentication failed: {}", r.one_line()),
        ))
    }
}

fn quit(c: &mut Client<Stream>) {
    let _ = c.command("QUIT");
}

fn set_timeout(c: &mut Client<Stream>, t: std::time::Duration) {
    let _ = c.set_timeouts(t);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn destination_slots_are_limited() {
        let pool = Arc::new(Pool::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (pool, inside, most) = (Arc::clone(&pool), Arc::clone(&inside), Arc::clone(&most));
                std::thread::spawn(move || {
                    let _slot = pool.enter("example.org", 2);
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert!(lock(&pool.active).is_empty());
    }

    #[test]
    fn replies_classify() {
        let r = |code, text: &str| Reply {
            code,
            lines: vec![text.to_owned()],
        };
        assert!(matches!(
            from_reply(&r(250, "2.0.0 ok")),
            Outcome::Delivered { .. }
        ));
        assert_eq!(from_reply(&r(451, "4.3.0 later")).status(), Status(4, 3, 0));
        assert!(matches!(from_reply(&r(550, "nope")), Outcome::Permanent { .. }));
        assert_eq!(from_reply(&r(550, "nope")).status(), Status(5, 0, 0));
    }
}
