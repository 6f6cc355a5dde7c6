//! Remote delivery: the I/O around the routing decisions. It asks the DNS
//! what `route` needs, takes the hops `route::plan` orders, resolves each,
//! and opens a connection (greeting, EHLO, STARTTLS, AUTH) to one address
//! after another until one takes the message in one transaction
//! (`transaction`) with a result for each recipient.
//!
//! The walk (as chasquid and Postfix do): a host that cannot be reached,
//! greets with an error, fails TLS that the policy requires or answers 4xx
//! to MAIL moves on to the next address or host. Once a host has answered
//! the recipients, its answers are final for this attempt: 2xx sent, 4xx
//! deferred, 5xx bounced. A connection lost after the body went out defers
//! everyone who was accepted.

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::prelude::{Engine as _, BASE64_STANDARD};

use crate::config::{Config, TlsPolicy};
use crate::deliver::client::{self, Client, Extensions};
use crate::deliver::dns::Resolver;
use crate::deliver::outcome::{self, Attempted, Outcome, Stage, Success, Timing};
use crate::deliver::pool::{quit, set_timeout, Idle, Pool};
use crate::deliver::route::{self, Addresses, Hop};
use crate::deliver::tls_client::{self, Stream};
use crate::deliver::transaction::{self, HostResult, Message, Timeouts};
use crate::maillog;
use crate::spool::{Envelope, Recipient};

/// Deliver `rcpts` (all in `domain`) of one message: one result per
/// recipient, in order, and the connection that took them, to be let go
/// (kept for the next message, or QUIT) once the caller has recorded the
/// results: a crash while a server is slow to answer QUIT then repeats
/// nothing.
pub fn deliver(
    cfg: &Config,
    resolver: &dyn Resolver,
    pool: &Arc<Pool>,
    env: &Envelope,
    message: &[u8],
    domain: &str,
    rcpts: &[&Recipient],
) -> (Vec<Attempted>, Farewell) {
    let none = Farewell::none(cfg, pool);
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
    // The one lookup the plan needs (I/O here), then the plan (pure).
    let mx = route::mx_query(cfg, domain).map(|name| resolver.mx(name));
    let plan = match route::plan(cfg, domain, mx.as_ref(), mx_noise(env)) {
        Ok(p) => p,
        Err(o) => return (all("none", o), none),
    };
    let entering = Instant::now();
    let _slot = pool.enter(&plan.slot, cfg.remote.max_connections_per_domain);
    waited.set(entering.elapsed());
    let wire = client::wire_body(message);
    let job = Job {
        cfg,
        env,
        msg: Message { env, wire: &wire },
        rcpts,
        smarthost: plan.smarthost,
        pool,
        tx_start: &tx_start,
    };
    let mut last = outcome::no_usable_host(domain);
    let mut last_relay = "none".to_owned();
    for hop in &plan.hops {
        let answer = hop.ip.is_none().then(|| resolver.addrs(&hop.host, hop.family));
        let addrs = match route::addresses(hop, answer) {
            Addresses::Use(a) => a,
            Addresses::Skip(o) => {
                last = o;
                continue;
            }
            Addresses::Fail(o) => return (all("none", o), none),
        };
        for addr in addrs {
            let relay = format!("{}[{}]:{}", hop.host, addr.ip(), addr.port());
            // RFC 5321 5.1: an MX whose address is one we listen on is us
            // under another name; it and every worse MX are skipped.
            if !plan.configured && route::is_myself(cfg, addr) {
                if last_relay == "none" {
                    return (all("none", outcome::loops_to_myself(domain, Some(&relay))), none);
                }
                return (all(&last_relay, last), none);
            }
            // A transaction with an earlier host that failed was setup time.
            tx_start.set(None);
            match job.try_host(hop, addr) {
                Tried::Done(results, tls, farewell) => {
                    let timing = timing();
                    let results = results
                        .into_iter()
                        .map(|(outcome, success)| Attempted {
                            relay: relay.clone(),
                            tls,
                            outcome,
                            success,
                            timing,
                        })
                        .collect();
                    return (results, farewell);
                }
                Tried::Next(o) => {
                    maillog::host_failed(&env.id, &relay, o.detail());
                    last = o;
                    last_relay = relay;
                }
            }
        }
    }
    (all(&last_relay, last), none)
}

/// Shuffles MX hosts of equal preference the same way for every attempt
/// of one message, differently across messages.
fn mx_noise(env: &Envelope) -> u64 {
    env.id
        .as_str()
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

/// What one address did: took the transaction (with the TLS version of the
/// connection, and the connection to let go), or not.
enum Tried {
    Done(Vec<(Outcome, Success)>, Option<&'static str>, Farewell),
    Next(Outcome),
}

impl Tried {
    /// A transaction's result; the connection is let go at once unless the
    /// server took the message (then the caller records first).
    fn from(r: HostResult, tls: Option<&'static str>, farewell: Farewell) -> Tried {
        match r {
            HostResult::Done(v) => Tried::Done(v, tls, farewell),
            HostResult::Next(o) => {
                drop(farewell);
                Tried::Next(o)
            }
        }
    }
}

/// A connection whose transaction is over, let go when this is dropped:
/// kept in the pool for the next message, or sent QUIT (RFC 5321 4.1.1.10),
/// whose answer a slow server may take its time over. Dropped by the caller
/// once the results are recorded.
pub struct Farewell {
    pool: Arc<Pool>,
    /// `smtp_connection_cache_time`: keep the connection (else QUIT).
    cache: Option<Duration>,
    /// `smtp_command_timeout`, for the QUIT.
    timeout: Duration,
    parting: Option<Box<Parting>>,
}

struct Parting {
    key: String,
    client: Client<Stream>,
    ext: Extensions,
    tls: Option<&'static str>,
    reusable: bool,
}

impl Farewell {
    /// No connection to let go.
    pub fn none(cfg: &Config, pool: &Arc<Pool>) -> Farewell {
        Farewell {
            pool: Arc::clone(pool),
            cache: cfg.remote.connection_cache_time,
            timeout: cfg.remote.command_timeout,
            parting: None,
        }
    }
}

impl Drop for Farewell {
    fn drop(&mut self) {
        let Some(parting) = self.parting.take() else {
            return;
        };
        let Parting {
            key,
            mut client,
            ext,
            tls,
            reusable,
        } = *parting;
        if reusable && self.cache.is_some() {
            self.pool.put(
                key,
                Idle {
                    client,
                    ext,
                    tls,
                    since: Instant::now(),
                },
            );
        } else if reusable {
            set_timeout(&mut client, self.timeout);
            quit(&mut client);
        }
    }
}

/// One delivery: the message, its recipients, and where connections go
struct Job<'a> {
    cfg: &'a Config,
    env: &'a Envelope,
    msg: Message<'a>,
    rcpts: &'a [&'a Recipient],
    /// The hop is the relay host: AUTH with `relay_auth`.
    smarthost: bool,
    pool: &'a Arc<Pool>,
    /// When the current host's transaction (MAIL FROM) began, for delays=.
    tx_start: &'a Cell<Option<Instant>>,
}

/// A TLS failure: under `may` the host is tried again in plaintext.
struct Tls(String);

impl Job<'_> {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            command: self.cfg.remote.command_timeout,
            data: self.cfg.remote.data_timeout,
            data_done: self.cfg.remote.data_done_timeout,
        }
    }

    fn transaction(
        &self,
        c: &mut Client<Stream>,
        ext: &Extensions,
        rset: bool,
    ) -> Option<(HostResult, bool)> {
        transaction::run(c, ext, &self.msg, self.rcpts, &self.timeouts(), rset)
    }

    /// Try one address; a TLS failure under `may` retries it in plaintext.
    fn try_host(&self, hop: &Hop, addr: SocketAddr) -> Tried {
        let host = &hop.host;
        match self.session(hop, addr, hop.tls) {
            // With implicit TLS there is no plaintext to fall back to.
            Err(Tls(why)) if hop.tls == TlsPolicy::May && !hop.implicit_tls => {
                maillog::tls_fallback(&self.env.id, host, addr.ip(), &why);
                match self.session(hop, addr, TlsPolicy::None) {
                    Ok(r) => r,
                    Err(Tls(why)) => Tried::Next(outcome::tls_failed(why)),
                }
            }
            Err(Tls(why)) => Tried::Next(outcome::tls_failed(format!("TLS with {host}: {why}"))),
            Ok(r) => r,
        }
    }

    /// One connection: greeting, EHLO, STARTTLS, AUTH, the transaction.
    /// A connection kept from an earlier message to the same host, address
    /// and policy is used instead when it still answers RSET.
    fn session(&self, hop: &Hop, addr: SocketAddr, policy: TlsPolicy) -> Result<Tried, Tls> {
        let (cfg, host) = (self.cfg, hop.host.as_str());
        let key = format!("{host} {addr} {policy:?} {}", self.smarthost);
        if let Some(max_age) = cfg.remote.connection_cache_time {
            if let Some(mut idle) = self.pool.take(&key, max_age) {
                set_timeout(&mut idle.client, cfg.remote.command_timeout);
                // The transaction starts with RSET, pipelined with MAIL when the
                // server allows; a connection closed or confused meanwhile (None)
                // is dropped for a new one.
                self.tx_start.set(Some(Instant::now()));
                if let Some((result, reusable)) = self.transaction(&mut idle.client, &idle.ext, true) {
                    maillog::connection_reused(&self.env.id, host, addr.ip());
                    let tls = idle.tls;
                    let farewell = self.farewell(key, idle.client, idle.ext, tls, reusable);
                    return Ok(Tried::from(result, tls, farewell));
                }
            }
        }
        let next = |o: Outcome| Ok(Tried::Next(o));
        let tcp = match TcpStream::connect_timeout(&addr, cfg.remote.connect_timeout) {
            Ok(s) => s,
            Err(e) => return next(outcome::network(Stage::Connect, "connect", &e)),
        };
        let _ = tcp.set_nodelay(true);
        if let Err(e) = timeouts(&tcp, cfg.remote.helo_timeout) {
            return next(outcome::network(Stage::Connect, "socket", &e));
        }
        let tls_config = || tls_client::config(policy, cfg.remote.tls_ca_file.as_deref());
        // Port 465 or `smtps`: TLS from the first byte (RFC 8314 3.3),
        // whatever the policy says: such a port speaks nothing else.
        let mut stream = Stream::Plain(tcp);
        if hop.implicit_tls {
            let c = tls_client::config(policy.max(TlsPolicy::May), cfg.remote.tls_ca_file.as_deref())
                .map_err(|e| Tls(e.to_string()))?;
            stream = stream.upgrade(c, host).map_err(|e| Tls(e.to_string()))?;
        }
        let mut c = Client::new(stream);
        c.set_reply_limit(cfg.remote.helo_timeout);
        let greeting = match c.reply() {
            Ok(r) => r,
            Err(e) => return next(outcome::network(Stage::Greeting, "greeting", &e)),
        };
        if greeting.code != 220 {
            return next(outcome::greeting_refused(&greeting));
        }
        let mut ext = match self.hello(&mut c) {
            Ok(e) => e,
            Err(o) => return next(o),
        };
        let tls_active = matches!(c.stream(), Stream::Tls(_));
        if !tls_active && policy != TlsPolicy::None && ext.starttls {
            match c.command("STARTTLS") {
                Ok(r) if r.code == 220 => {}
                Ok(r) => return Err(Tls(format!("STARTTLS refused: {}", r.one_line()))),
                Err(e) => return next(outcome::network(Stage::Tls, "STARTTLS", &e)),
            }
            let plain = c.into_stream().map_err(|e| Tls(e.to_string()))?;
            let cfg_tls = tls_config().map_err(|e| Tls(e.to_string()))?;
            let tls = plain.upgrade(cfg_tls, host).map_err(|e| Tls(e.to_string()))?;
            c = Client::new(tls);
            c.set_reply_limit(cfg.remote.helo_timeout);
            // RFC 3207 4.2: forget everything learnt before TLS.
            ext = match self.hello(&mut c) {
                Ok(e) => e,
                Err(o) => return next(o),
            };
        }
        let tls = c.stream().tls_version();
        if tls.is_none() && !policy.allows_plaintext() {
            return next(outcome::tls_required(host));
        }
        if self.smarthost {
            if let Some((user, pass)) = &cfg.remote.relay_auth {
                if tls.is_none() {
                    return next(outcome::auth_needs_tls(host));
                }
                if let Err(o) = auth(&mut c, &ext, user, pass) {
                    return next(o);
                }
            }
        }
        self.tx_start.set(Some(Instant::now()));
        let (result, reusable) = self
            .transaction(&mut c, &ext, false)
            .unwrap_or_else(|| (HostResult::Next(outcome::rset_refused()), false));
        let farewell = self.farewell(key, c, ext, tls, reusable);
        Ok(Tried::from(result, tls, farewell))
    }

    /// The connection to let go once the results are recorded.
    fn farewell(
        &self,
        key: String,
        client: Client<Stream>,
        ext: Extensions,
        tls: Option<&'static str>,
        reusable: bool,
    ) -> Farewell {
        let mut farewell = Farewell::none(self.cfg, self.pool);
        farewell.parting = Some(Box::new(Parting {
            key,
            client,
            ext,
            tls,
            reusable,
        }));
        farewell
    }

    /// EHLO, or HELO when EHLO is refused (RFC 5321 4.1.4).
    fn hello(&self, c: &mut Client<Stream>) -> Result<Extensions, Outcome> {
        let hostname = &self.cfg.hostname;
        let r = c
            .command(&format!("EHLO {hostname}"))
            .map_err(|e| outcome::network(Stage::Hello, "EHLO", &e))?;
        if r.code == 250 {
            return Ok(Extensions::parse(&r));
        }
        if !(500..600).contains(&r.code) {
            return Err(outcome::ehlo_refused(&r));
        }
        let r = c
            .command(&format!("HELO {hostname}"))
            .map_err(|e| outcome::network(Stage::Hello, "HELO", &e))?;
        if r.code == 250 {
            Ok(Extensions::default())
        } else {
            Err(outcome::helo_refused(&r))
        }
    }
}

fn timeouts(s: &TcpStream, t: Duration) -> io::Result<()> {
    s.set_read_timeout(Some(t))?;
    s.set_write_timeout(Some(t))
}

/// AUTH PLAIN (RFC 4616) or LOGIN to the smarthost.
fn auth(c: &mut Client<Stream>, ext: &Extensions, user: &str, pass: &str) -> Result<(), Outcome> {
    let err = |e: io::Error| outcome::network(Stage::Auth, "AUTH", &e);
    let r = if ext.auth.iter().any(|m| m == "PLAIN") {
        let token = BASE64_STANDARD.encode(format!("\0{user}\0{pass}").as_bytes());
        c.command(&format!("AUTH PLAIN {token}")).map_err(err)?
    } else if ext.auth.iter().any(|m| m == "LOGIN") {
        let r = c.command("AUTH LOGIN").map_err(err)?;
        if r.code != 334 {
            return Err(outcome::auth_login_refused(&r));
        }
        let r = c.command(&BASE64_STANDARD.encode(user.as_bytes())).map_err(err)?;
        if r.code != 334 {
            return Err(outcome::auth_login_refused(&r));
        }
        c.command(&BASE64_STANDARD.encode(pass.as_bytes())).map_err(err)?
    } else {
        return Err(outcome::auth_no_mechanism());
    };
    if r.code == 235 {
        Ok(())
    } else {
        Err(outcome::auth_failed(&r))
    }
}
