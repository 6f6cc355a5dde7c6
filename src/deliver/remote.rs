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

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};

use crate::config::{Config, NextHop};
use crate::deliver::client::{self, Client, Extensions, Reply};
use crate::deliver::dns::{self, DnsError, Mx, Resolver};
use crate::deliver::tls_client::{self, Policy, Stream};
use crate::deliver::{Attempted, Outcome, Status, Success};
use crate::spool::{BodyType, DsnRet, Envelope, Recipient};

/// Deliver `rcpts` (all in `domain`) of one message: one result per
/// recipient, in order.
pub fn deliver(
    cfg: &Config,
    resolver: &dyn Resolver,
    env: &Envelope,
    message: &[u8],
    domain: &str,
    rcpts: &[&Recipient],
) -> Vec<Attempted> {
    let all = |relay: &str, outcome: Outcome| -> Vec<Attempted> {
        rcpts
            .iter()
            .map(|_| Attempted {
                relay: relay.to_owned(),
                tls: None,
                outcome: outcome.clone(),
                success: Success::Relayed,
            })
            .collect()
    };
    let hop = cfg.next_hop(domain);
    let smarthost = hop.is_some() && hop == cfg.relay_host.as_ref();
    let implicit_tls = hop.is_some_and(|h| h.implicit_tls);
    let (hosts, port, policy) = match hop {
        Some(NextHop {
            host, port, mx, tls, ..
        }) => {
            let hosts = if *mx {
                match mx_hosts(cfg, resolver, host, env) {
                    Ok(h) => h,
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
            Ok(h) => (h, cfg.mx_port, cfg.smtp_tls),
            Err(o) => return all("none", o),
        },
    };

    let wire = client::wire_body(message);
    let job = Job {
        cfg,
        env,
        wire: &wire,
        rcpts,
        smarthost,
        implicit_tls,
    };
    let mut last = Outcome::temporary(Status(4, 4, 4), format!("no usable host for {domain}"));
    let mut last_relay = "none".to_owned();
    for host in &hosts {
        let addrs = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match resolver.addrs(host, cfg.inet_protocols) {
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
            match job.try_host(host, SocketAddr::new(ip, port), policy) {
                HostResult::Done(results) => {
                    return results
                        .into_iter()
                        .map(|(outcome, tls, success)| Attempted {
                            relay: relay.clone(),
                            tls,
                            outcome,
                            success,
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
/// worse removed; or the outcome for every recipient when there are none.
fn mx_hosts(
    cfg: &Config,
    resolver: &dyn Resolver,
    name: &str,
    env: &Envelope,
) -> Result<Vec<String>, Outcome> {
    let hosts = match resolver.mx(name) {
        // RFC 7505 4.1: a null MX is an immediate, permanent failure.
        Ok(Mx::Null) => {
            return Err(Outcome::permanent(
                Status(5, 1, 10),
                format!("556 5.1.10 domain {name} does not accept mail (null MX)"),
            ))
        }
        // RFC 5321 5.1: no MX, so the domain itself is the only host.
        Ok(Mx::Implicit) => return Ok(vec![name.to_owned()]),
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
    Ok(usable)
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
            Err(Tls(why)) if policy == Policy::May => {
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
    fn session(&self, host: &str, addr: SocketAddr, policy: Policy) -> Result<HostResult, Tls> {
        let cfg = self.cfg;
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
        // Port 465 or `smtps`: TLS from the first byte (RFC 8314 3.3).
        let mut stream = Stream::Plain(tcp);
        if self.implicit_tls && policy != Policy::None {
            let c = tls_config().map_err(|e| Tls(e.to_string()))?;
            stream = stream.upgrade(c, host).map_err(|e| Tls(e.to_string()))?;
        }
        let mut c = Client::new(stream);
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
        Ok(self.transaction(&mut c, &ext, tls))
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

    fn transaction(&self, c: &mut Client<Stream>, ext: &Extensions, tls: Option<&'static str>) -> HostResult {
        let (cfg, env) = (self.cfg, self.env);
        let success = if ext.dsn {
            Success::PassedOn
        } else {
            Success::Relayed
        };
        let all =
            |o: Outcome| HostResult::Done(self.rcpts.iter().map(|_| (o.clone(), tls, success)).collect());
        // RFC 6531 3.2: no SMTPUTF8 at the far end, and the message needs it.
        if env.smtputf8 && !ext.smtputf8 {
            quit(c);
            return all(Outcome::permanent(
                Status(5, 6, 7),
                "the message needs SMTPUTF8, which the receiving server does not support".to_owned(),
            ));
        }
        // RFC 1870: the size on the wire (CRLF and dot-stuffed, without the final dot).
        let size = self.wire.len().saturating_sub(3) as u64;
        if let Some(limit) = ext.size.filter(|l| *l > 0) {
            if size > limit {
                quit(c);
                return all(Outcome::permanent(
                    Status(5, 3, 4),
                    format!("message size {size} exceeds the receiving server's limit of {limit}"),
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
        if env.smtputf8 {
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
        let rcpt_lines: Vec<String> = self
            .rcpts
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
        let envelope = match c.envelope(&mail, &rcpt_lines, ext.pipelining) {
            Ok(e) => e,
            Err(e) => return HostResult::Next(io_temp("MAIL/RCPT", &e)),
        };
        if !envelope.mail.is_positive() {
            let o = from_reply(&envelope.mail);
            quit(c);
            return match o {
                Outcome::Temporary { .. } => HostResult::Next(o),
                _ => all(o),
            };
        }
        let mut results: Vec<(Outcome, Option<&'static str>, Success)> = Vec::new();
        let mut accepted = Vec::new();
        for (i, _) in self.rcpts.iter().enumerate() {
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
                        return HostResult::Done(results);
                    }
                }
            }
            Some(d) => fail_accepted(from_reply(d)),
        }
        set_timeout(c, cfg.smtp_command_timeout);
        quit(c);
        HostResult::Done(results)
    }

    /// The body in blocks, each under the data-block timeout.
    fn send_body(&self, c: &mut Client<Stream>) -> io::Result<()> {
        for block in self.wire.chunks(64 * 1024) {
            c.send(block)?;
        }
        Ok(())
    }
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

fn set_timeout(c: &Client<Stream>, t: std::time::Duration) {
    let s = c.stream().tcp();
    let _ = s.set_read_timeout(Some(t));
    let _ = s.set_write_timeout(Some(t));
}
