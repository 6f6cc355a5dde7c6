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
//!
//! The TLS of each hop is decided by `secure` (DANE, MTA-STS, the
//! configured level, REQUIRETLS; issue 18): a host the decision rules out
//! is skipped, one whose TLS fails where it is required is left for the
//! next, and a REQUIRETLS message that no host could take for those
//! reasons is returned with 5.7.10 (RFC 8689 4.1).

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::prelude::{Engine as _, BASE64_STANDARD};

use crate::config::Config;
use crate::deliver::client::{Client, Extensions};
use crate::deliver::dns::{Resolver, Security};
use crate::deliver::outcome::{self, Attempted, Outcome, Stage, Success, Timing, TlsNote};
use crate::deliver::pool::{quit, set_timeout, Farewell, Idle, Pool};
use crate::deliver::route::{self, Addresses, Hop};
use crate::deliver::secure::{self, Destination, HopTls, Start};
use crate::deliver::tls_client::{self, Stream};
use crate::deliver::transaction::{self, HostResult, Message, Protocol, Timeouts};
use crate::maillog;
use crate::spool::{Envelope, Recipient};
use crate::tlspolicy::outbound::Outbound;
use crate::tlspolicy::policy::{Action, Failure};
use crate::tlspolicy::tlsrpt::ResultType;

/// Deliver `rcpts` (all in `domain`) of one message: one result per
/// recipient, in order, and the connection that took them, to be let go
/// (kept for the next message, or QUIT) once the caller has recorded the
/// results (see [`Farewell`]). `outbound` is the daemon's TLS policy state
/// (the DNSSEC probe, MTA-STS policies, TLS-RPT).
#[allow(clippy::too_many_arguments)]
pub fn deliver(
    cfg: &Config,
    resolver: &dyn Resolver,
    outbound: &Outbound,
    pool: &Arc<Pool>,
    env: &Envelope,
    message: &[u8],
    domain: &str,
    rcpts: &[&Recipient],
) -> (Vec<Attempted>, Farewell) {
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
    // The same outcome for every recipient, and no connection to let go.
    let all = |relay: &str,
               outcome: Outcome,
               tls: Option<(Option<&'static str>, TlsNote)>|
     -> (Vec<Attempted>, Farewell) {
        let timing = timing();
        let (version, policy) = match tls {
            Some((v, p)) => (v, Some(p)),
            None => (None, None),
        };
        let results = rcpts
            .iter()
            .map(|_| Attempted {
                relay: relay.to_owned(),
                tls: version,
                policy: policy.clone(),
                outcome: outcome.clone(),
                success: Success::Relayed,
                timing,
            })
            .collect();
        (results, Farewell::none())
    };
    // The one lookup the plan needs (I/O here), then the plan (pure). The
    // MX answer's DNSSEC status decides whether DANE may apply (RFC 7672
    // 2.2.1) and whether REQUIRETLS may use the hosts (RFC 8689 4.1); it
    // is known only once the resolvers were probed (the first delivery
    // after start-up may be the one to ask).
    outbound.dnssec_usable();
    let mx = route::mx_query(cfg, domain).map(|name| resolver.mx_secured(name));
    let plan = match route::plan(cfg, domain, mx.as_ref(), mx_noise(env)) {
        Ok(p) => p,
        Err(o) => return all("none", o, None),
    };
    let entering = Instant::now();
    let _slot = pool.enter(&plan.slot, cfg.remote.max_connections_per_domain);
    waited.set(entering.elapsed());
    let dest = Destination::new(
        cfg,
        outbound,
        domain,
        plan.hops.first(),
        plan.configured,
        env,
        message,
    );
    let wire = match transaction::wire(message) {
        Ok(w) => w,
        Err(o) => return all("none", o, None),
    };
    let job = Job {
        cfg,
        env,
        msg: Message { env, wire: &wire },
        rcpts,
        smarthost: plan.smarthost,
        pool,
        tx_start: &tx_start,
        dest: &dest,
    };
    let mut last = outcome::no_usable_host(domain);
    let mut last_relay = "none".to_owned();
    let mut last_note = None;
    // RFC 8689 4.1, 5: a REQUIRETLS message that every host refused for
    // the extension's own reasons is returned (5.7.10); any other failure
    // on the way (DNS, a connection, a 4xx) leaves it to a later attempt.
    let mut only_requiretls_failures = env.requiretls;
    let mut tried = false;
    for hop in &plan.hops {
        let answer = hop
            .ip
            .is_none()
            .then(|| resolver.addrs_secured(&hop.host, hop.family));
        let (addr_security, canonical) = match &answer {
            Some(Ok(s)) => (s.security, s.canonical.clone()),
            _ => (Security::Indeterminate, None),
        };
        let addrs = match route::addresses(hop, answer.map(|r| r.map(|s| s.value))) {
            Addresses::Use(a) => a,
            Addresses::Skip(o) => {
                only_requiretls_failures = false;
                last = o;
                continue;
            }
            Addresses::Fail(o) => return all("none", o, None),
        };
        let tls = dest.hop(resolver, hop, addr_security, canonical.as_deref());
        if let Action::Skip { why, result } = &tls.decision.action {
            // Ruled out by the policy before any connection (RFC 7672 2.2,
            // RFC 8461 5.1, RFC 8689 4.1): the next MX may do.
            dest.record(&tls, result.map(|r| (r, Some(why.clone()))));
            let o = outcome::tls_policy_refused(why);
            maillog::host_failed(&env.id, &hop.host, o.detail());
            if tls.failure() != Failure::RequireTls {
                only_requiretls_failures = false;
            }
            tried = true;
            last = o;
            last_relay = hop.host.clone();
            last_note = Some((None, tls.note(false, false)));
            continue;
        }
        for addr in addrs {
            let relay = format!("{}[{}]:{}", hop.host, addr.ip(), addr.port());
            // RFC 5321 5.1: an MX whose address is one we listen on is us
            // under another name; it and every worse MX are skipped.
            if !plan.configured && route::is_myself(cfg, addr) {
                if last_relay == "none" {
                    return all("none", outcome::loops_to_myself(domain, Some(&relay)), None);
                }
                return all(&last_relay, last, last_note);
            }
            // A transaction with an earlier host that failed was setup time.
            tx_start.set(None);
            match job.try_host(hop, addr, &tls) {
                Tried::Done(results, version, note, farewell) => {
                    let timing = timing();
                    let results = results
                        .into_iter()
                        .map(|(outcome, success)| Attempted {
                            relay: relay.clone(),
                            tls: version,
                            policy: Some(note.clone()),
                            outcome,
                            success,
                            timing,
                        })
                        .collect();
                    return (results, farewell);
                }
                Tried::Next(o, why, version, note) => {
                    maillog::host_failed(&env.id, &relay, o.detail());
                    if why != Why::Policy || tls.failure() != Failure::RequireTls {
                        only_requiretls_failures = false;
                    }
                    tried = true;
                    last = o;
                    last_relay = relay;
                    last_note = Some((version, note));
                }
            }
        }
    }
    if only_requiretls_failures && tried {
        last = outcome::requiretls_failed(&last);
    }
    all(&last_relay, last, last_note)
}

/// Shuffles MX hosts of equal preference the same way for every attempt
/// of one message, differently across messages.
fn mx_noise(env: &Envelope) -> u64 {
    env.id
        .as_str()
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

/// Why an address did not take the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// The TLS policy: no STARTTLS where it is required, a failed
    /// handshake or certificate check, no REQUIRETLS.
    Policy,
    /// Anything else: the connection, the greeting, a 4xx to MAIL.
    Other,
}

/// What one address did: took the transaction (and the connection to let
/// go once the results are recorded), or not; with the TLS version of the
/// connection (if it got that far) and what the policy said.
enum Tried {
    Done(Vec<(Outcome, Success)>, Option<&'static str>, TlsNote, Farewell),
    Next(Outcome, Why, Option<&'static str>, TlsNote),
}

/// One delivery: the message, its recipients, and where connections go.
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
    /// The destination's TLS policy inputs, and its TLS-RPT record.
    dest: &'a Destination<'a>,
}

/// A failed TLS handshake: why, and the TLS error when there was one.
struct TlsFail(String, Option<rustls::Error>);

impl TlsFail {
    fn of(e: &io::Error) -> TlsFail {
        TlsFail(tls_client::describe(e), tls_client::tls_error(e).cloned())
    }

    /// The TLS-RPT result type (RFC 8460 4.3.1).
    fn result(&self) -> (ResultType, Option<String>) {
        let rt = self
            .1
            .as_ref()
            .map_or(ResultType::ValidationFailure, secure::result_of);
        (rt, Some(self.0.clone()))
    }
}

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
        transaction::run(
            Protocol::Smtp,
            c,
            ext,
            &self.msg,
            self.rcpts,
            &self.timeouts(),
            rset,
        )
    }

    /// Try one address; a failed handshake where TLS is only opportunistic
    /// retries it in plaintext.
    fn try_host(&self, hop: &Hop, addr: SocketAddr, tls: &HopTls) -> Tried {
        let host = &hop.host;
        match self.session(hop, addr, tls, false) {
            // With implicit TLS there is no plaintext to fall back to.
            Err(f) if tls.start() == Start::IfOffered && !hop.implicit_tls => {
                self.dest.record(tls, Some(f.result()));
                maillog::tls_fallback(&self.env.id, host, addr.ip(), &f.0);
                match self.session(hop, addr, tls, true) {
                    Ok(r) => r,
                    Err(f) => Tried::Next(
                        outcome::tls_failed(f.0),
                        Why::Policy,
                        None,
                        tls.note(false, false),
                    ),
                }
            }
            Err(f) => {
                self.dest.record(tls, Some(f.result()));
                Tried::Next(
                    outcome::tls_failed(format!("TLS with {host}: {}", f.0)),
                    Why::Policy,
                    None,
                    tls.note(false, false),
                )
            }
            Ok(r) => r,
        }
    }

    /// One connection: greeting, EHLO, STARTTLS, AUTH, the transaction.
    /// A connection kept from an earlier message to the same host, address
    /// and TLS decision is used instead when it still answers RSET.
    /// `plain`: no STARTTLS (the retry after a failed opportunistic one).
    fn session(&self, hop: &Hop, addr: SocketAddr, tls: &HopTls, plain: bool) -> Result<Tried, TlsFail> {
        let (cfg, host) = (self.cfg, hop.host.as_str());
        let tls_key = if plain { "plain".to_owned() } else { tls.pool_key() };
        let key = format!("{host} {addr} {tls_key} {}", self.smarthost);
        if let Some(max_age) = cfg.remote.connection_cache_time {
            if let Some(mut idle) = self.pool.take(&key, max_age) {
                set_timeout(&mut idle.client, cfg.remote.command_timeout);
                // The transaction starts with RSET, pipelined with MAIL when the
                // server allows; a connection closed or confused meanwhile (None)
                // is dropped for a new one.
                self.tx_start.set(Some(Instant::now()));
                if let Some((result, reusable)) = self.transaction(&mut idle.client, &idle.ext, true) {
                    maillog::connection_reused(&self.env.id, host, addr.ip());
                    let (version, verified) = (idle.tls, idle.verified);
                    let farewell = self.pool.release(key, idle, reusable, &cfg.remote);
                    let note = tls.note(version.is_some(), verified);
                    return Ok(tried(result, version, note, farewell));
                }
            }
        }
        let next = |o: Outcome| Ok(Tried::Next(o, Why::Other, None, tls.note(false, false)));
        // RFC 7504: a host that said it accepts no mail is not asked again.
        if let Some(o) = self.pool.refused_mail(addr) {
            return next(o);
        }
        let tcp = match TcpStream::connect_timeout(&addr, cfg.remote.connect_timeout) {
            Ok(s) => s,
            Err(e) => return next(outcome::connect_failed(host, addr, &e)),
        };
        let _ = tcp.set_nodelay(true);
        if let Err(e) = timeouts(&tcp, cfg.remote.helo_timeout) {
            return next(outcome::network(Stage::Connect, "socket", &e));
        }
        let ca = cfg.remote.tls_ca_file.as_deref();
        // Port 465 or `smtps`: TLS from the first byte (RFC 8314 3.3),
        // whatever the policy says: such a port speaks nothing else.
        let mut stream = Stream::Plain(tcp);
        let mut observed = None;
        if hop.implicit_tls {
            let (c, o) = tls.client_config(ca).map_err(|e| TlsFail::of(&e))?;
            stream = stream.upgrade(c, &tls.sni).map_err(|e| TlsFail::of(&e))?;
            observed = o;
        }
        let mut c = Client::new(stream);
        c.set_reply_limit(cfg.remote.helo_timeout);
        let greeting = match c.reply() {
            Ok(r) => r,
            Err(e) => return next(outcome::network(Stage::Greeting, "greeting", &e)),
        };
        if greeting.code == 521 {
            let o = outcome::refuses_all_mail(&greeting);
            self.pool.refuses_mail(addr, &o);
            return next(o);
        }
        if greeting.code != 220 {
            return next(outcome::greeting_refused(&greeting));
        }
        let mut ext = match self.hello(&mut c) {
            Ok(e) => e,
            Err(o) => return next(o),
        };
        let start = if plain { Start::Never } else { tls.start() };
        let tls_active = matches!(c.stream(), Stream::Tls(_));
        if !tls_active && start != Start::Never && ext.starttls {
            match c.command("STARTTLS") {
                Ok(r) if r.code == 220 => {}
                Ok(r) => return Err(TlsFail(format!("STARTTLS refused: {}", r.one_line()), None)),
                Err(e) => return next(outcome::network(Stage::Tls, "STARTTLS", &e)),
            }
            let plain_stream = c.into_stream().map_err(|e| TlsFail::of(&e))?;
            let (config, o) = tls.client_config(ca).map_err(|e| TlsFail::of(&e))?;
            let encrypted = plain_stream
                .upgrade(config, &tls.sni)
                .map_err(|e| TlsFail::of(&e))?;
            observed = o;
            c = Client::new(encrypted);
            c.set_reply_limit(cfg.remote.helo_timeout);
            // RFC 3207 4.2: forget everything learnt before TLS.
            ext = match self.hello(&mut c) {
                Ok(e) => e,
                Err(o) => return next(o),
            };
        }
        let version = c.stream().tls_version();
        if version.is_none() && start == Start::Required {
            // RFC 7672 2.2, RFC 8461 5: TLS is mandatory here.
            self.dest
                .record(tls, Some((ResultType::StarttlsNotSupported, None)));
            return Ok(Tried::Next(
                outcome::tls_required(host),
                Why::Policy,
                None,
                tls.note(false, false),
            ));
        }
        // A check that was only watched (MTA-STS testing, TLS-Required: No)
        // is reported, and the message goes on.
        let watched = observed.as_ref().and_then(|o| o.failure());
        let verified = version.is_some() && tls.checks() && watched.is_none();
        let note = tls.note(version.is_some(), verified);
        match (&watched, version) {
            (Some(e), _) => self.dest.record(
                tls,
                Some((
                    secure::result_of(e),
                    Some(tls_client::describe(&io::Error::other(e.clone()))),
                )),
            ),
            (None, Some(_)) => self.dest.record(tls, None),
            // Plaintext where TLS was wanted but not offered.
            (None, None) if start == Start::IfOffered && !plain => self
                .dest
                .record(tls, Some((ResultType::StarttlsNotSupported, None))),
            (None, None) => {}
        }
        // RFC 8689 4.1: only to a server that offers REQUIRETLS.
        if tls.requiretls() && !ext.requiretls {
            quit(&mut c);
            return Ok(Tried::Next(
                outcome::requiretls_not_offered(host),
                Why::Policy,
                version,
                note,
            ));
        }
        if self.smarthost {
            if let Some((user, pass)) = &cfg.remote.relay_auth {
                if version.is_none() {
                    return Ok(Tried::Next(outcome::auth_needs_tls(host), Why::Other, None, note));
                }
                if let Err(o) = auth(&mut c, &ext, user, pass) {
                    return Ok(Tried::Next(o, Why::Other, version, note));
                }
            }
        }
        self.tx_start.set(Some(Instant::now()));
        let (result, reusable) = self
            .transaction(&mut c, &ext, false)
            .unwrap_or_else(|| (HostResult::Next(outcome::rset_refused()), false));
        let conn = Idle {
            verified,
            ..Idle::new(c, ext, version)
        };
        let farewell = self.pool.release(key, conn, reusable, &cfg.remote);
        Ok(tried(result, version, note, farewell))
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

/// What a transaction on one connection means for the walk. The
/// connection is let go at once unless the server took the message (then
/// the caller records first).
fn tried(r: HostResult, tls: Option<&'static str>, note: TlsNote, farewell: Farewell) -> Tried {
    match r {
        HostResult::Done(v) => Tried::Done(v, tls, note, farewell),
        HostResult::Next(o) => {
            drop(farewell);
            Tried::Next(o, Why::Other, tls, note)
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
