//! LMTP delivery (RFC 2033): a message handed to a mailbox server such as
//! Dovecot, over a UNIX-domain socket or TCP. Used for `mailbox_transport`
//! (the users the aliases expand to, see `router`) and for domains routed
//! `lmtp:...`.
//!
//! The conversation is SMTP's, spoken by `client` and `transaction`, with
//! three differences: LHLO instead of EHLO, with nothing to fall back to
//! (RFC 2033 4.1); one reply per accepted recipient after the message (4.2),
//! each recorded on its own; and the server is the final delivery, so a
//! success notice is ours to send unless it offers DSN (as Postfix decides).
//! There are no MX records: a server named by host name has its addresses
//! looked up and tried in turn. Connections are kept in the `pool` between
//! messages as SMTP ones are (`smtp_connection_cache_time`), the
//! `smtp_*_timeout` waits apply, and over TCP STARTTLS is used as the
//! server's `tls=`, else `smtp_tls`, says. A UNIX socket is never encrypted:
//! it does not leave the host.
//!
//! The log's `relay=` is Postfix's form with the transport in front:
//! `lmtp/HOSTNAME[/run/dovecot/lmtp]` for a socket (our own host name, as
//! Postfix writes `myhostname[private/dovecot-lmtp]`), `lmtp/HOST[IP]:PORT`
//! for TCP.

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, Lmtp, TlsPolicy};
use crate::deliver::client::{self, Client, Extensions};
use crate::deliver::dns::{Resolver, Security};
use crate::deliver::outcome::{self, Attempted, Outcome, Stage, Success, Timing};
use crate::deliver::pool::{Farewell, Idle, Pool};
use crate::deliver::route::{self, Addresses, Hop};
use crate::deliver::tls_client::{self, StartTlsError, Stream};
use crate::deliver::transaction::{self, HostResult, Message, Protocol, Timeouts};
use crate::endpoint::Endpoint;
use crate::maillog;
use crate::spool::{Envelope, Recipient};

/// Deliver `rcpts` of one message to `server` in one transaction: one
/// result per recipient, in order, and the connection, to be let go once
/// the caller has recorded the results (see [`Farewell`]).
pub fn deliver(
    cfg: &Config,
    resolver: &dyn Resolver,
    pool: &Arc<Pool>,
    env: &Envelope,
    message: &[u8],
    server: &Lmtp,
    rcpts: &[&Recipient],
) -> (Vec<Attempted>, Farewell) {
    let began = Instant::now();
    // One destination for max_connections_per_domain, like a route's host.
    let _slot = pool.enter(
        &format!("lmtp:{}", server.addr),
        cfg.remote.max_connections_per_domain,
    );
    let waited = began.elapsed();
    let tx_start: Cell<Option<Instant>> = Cell::new(None);
    let timing = || Timing::measured(began, waited, tx_start.get());
    let all = |relay: &str, o: Outcome| {
        let results = vec![(o, Success::Delivered); rcpts.len()];
        (Attempted::each(results, relay, None, timing()), Farewell::none())
    };
    let dests = match destinations(cfg, resolver, server) {
        Ok(e) => e,
        Err(o) => return all("none", o),
    };
    let wire = client::wire_body(message);
    let job = Job {
        cfg,
        env,
        msg: Message { env, wire: &wire },
        rcpts,
        pool,
        policy: server.tls.unwrap_or(cfg.remote.tls),
        tx_start: &tx_start,
    };
    let mut last = outcome::no_usable_host(&server.addr.to_string());
    let mut last_relay = "none".to_owned();
    for ep in &dests {
        let relay = ep.relay(&cfg.hostname);
        // A transaction with an earlier address that failed was setup time.
        tx_start.set(None);
        match job.try_dest(ep) {
            (HostResult::Done(results), tls, farewell) => {
                return (Attempted::each(results, &relay, tls, timing()), farewell)
            }
            // Nothing to record: the connection goes at once.
            (HostResult::Next(o), _, _farewell) => {
                maillog::host_failed(&env.id, &relay, o.detail());
                last = o;
                last_relay = relay;
            }
        }
    }
    all(&last_relay, last)
}

/// One place to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Unix(PathBuf),
    /// One address of the server `host`.
    Inet {
        host: String,
        addr: SocketAddr,
    },
}

impl Dest {
    /// The log's `relay=`.
    fn relay(&self, hostname: &str) -> String {
        match self {
            Dest::Unix(p) => format!("lmtp/{hostname}[{}]", p.display()),
            Dest::Inet { host, addr } => format!("lmtp/{host}[{}]:{}", addr.ip(), addr.port()),
        }
    }

    /// The name in messages: the socket's path, or the host.
    fn name(&self) -> String {
        match self {
            Dest::Unix(p) => p.display().to_string(),
            Dest::Inet { host, .. } => host.clone(),
        }
    }
}

/// The socket, or the server's addresses (looked up when it is a name, as
/// a route's `[host]` is: the same outcomes for a name that has none).
fn destinations(cfg: &Config, resolver: &dyn Resolver, server: &Lmtp) -> Result<Vec<Dest>, Outcome> {
    let (host, port) = match &server.addr {
        Endpoint::Unix(p) => return Ok(vec![Dest::Unix(p.clone())]),
        Endpoint::Inet { host, port } => (host, *port),
    };
    let hop = Hop {
        host: host.clone(),
        ip: host.parse().ok(),
        port,
        family: cfg.remote.inet_protocols,
        tls: server.tls.unwrap_or(cfg.remote.tls),
        // DANE and MTA-STS are for MX hosts; an LMTP server gets the TLS
        // level configured for it and nothing else.
        tls_fixed: true,
        mx_security: Security::Secure,
        implicit_tls: false,
        implicit_mx: false,
    };
    let answer = hop.ip.is_none().then(|| resolver.addrs(host, hop.family));
    match route::addresses(&hop, answer) {
        Addresses::Use(addrs) => Ok(addrs
            .into_iter()
            .map(|addr| Dest::Inet {
                host: host.clone(),
                addr,
            })
            .collect()),
        Addresses::Skip(o) | Addresses::Fail(o) => Err(o),
    }
}

/// One delivery: the message, its recipients, and where connections go.
struct Job<'a> {
    cfg: &'a Config,
    env: &'a Envelope,
    msg: Message<'a>,
    rcpts: &'a [&'a Recipient],
    pool: &'a Arc<Pool>,
    /// The TLS policy for TCP servers.
    policy: TlsPolicy,
    /// When the transaction (MAIL FROM) began, for delays=.
    tx_start: &'a Cell<Option<Instant>>,
}

/// A TLS failure: under `may` the address is tried again in plaintext.
struct Tls(String);

/// What one endpoint did with the message, the TLS version it spoke, and
/// the connection to let go.
type Tried = (HostResult, Option<&'static str>, Farewell);

impl Job<'_> {
    /// Try one endpoint; a TLS failure under `may` tries it in plaintext.
    fn try_dest(&self, ep: &Dest) -> Tried {
        let policy = match ep {
            Dest::Unix(_) => TlsPolicy::None,
            Dest::Inet { .. } => self.policy,
        };
        match (self.session(ep, policy), ep) {
            (Ok(t), _) => t,
            (Err(Tls(why)), Dest::Inet { host, addr }) if policy == TlsPolicy::May => {
                maillog::tls_fallback(&self.env.id, host, addr.ip(), &why);
                self.session(ep, TlsPolicy::None).unwrap_or_else(|Tls(why)| {
                    (HostResult::Next(outcome::tls_failed(why)), None, Farewell::none())
                })
            }
            (Err(Tls(why)), _) => (
                HostResult::Next(outcome::tls_failed(format!("TLS with {}: {why}", ep.name()))),
                None,
                Farewell::none(),
            ),
        }
    }

    fn transaction(
        &self,
        c: &mut Client<Stream>,
        ext: &Extensions,
        rset: bool,
    ) -> Option<(HostResult, bool)> {
        let t = Timeouts {
            command: self.cfg.remote.command_timeout,
            data: self.cfg.remote.data_timeout,
            data_done: self.cfg.remote.data_done_timeout,
        };
        transaction::run(Protocol::Lmtp, c, ext, &self.msg, self.rcpts, &t, rset)
    }

    /// One connection: greeting, LHLO, STARTTLS, the transaction. A
    /// connection kept from an earlier message is used instead when it
    /// still answers RSET.
    fn session(&self, ep: &Dest, policy: TlsPolicy) -> Result<Tried, Tls> {
        let cfg = self.cfg;
        let key = match ep {
            Dest::Unix(p) => format!("lmtp unix:{}", p.display()),
            Dest::Inet { host, addr } => format!("lmtp {host} {addr} {policy:?}"),
        };
        if let Some(mut idle) = self.pool.reuse(&key, &cfg.remote) {
            self.tx_start.set(Some(Instant::now()));
            // A connection closed meanwhile (None) is dropped for a new one.
            if let Some((result, reusable)) = self.transaction(&mut idle.client, &idle.ext, true) {
                maillog::connection_reused_to(&self.env.id, &ep.relay(&cfg.hostname));
                let tls = idle.tls;
                let farewell = self.pool.release(key, idle, reusable, &cfg.remote);
                return Ok((result, tls, farewell));
            }
        }
        let next = |o: Outcome| Ok((HostResult::Next(o), None, Farewell::none()));
        let stream = match connect(ep, cfg.remote.connect_timeout) {
            Ok(s) => s,
            Err(e) => return next(outcome::network(Stage::Connect, "connect", &e)),
        };
        let mut c = Client::new(stream);
        if let Err(e) = c.set_timeouts(cfg.remote.helo_timeout) {
            return next(outcome::network(Stage::Connect, "socket", &e));
        }
        let greeting = match c.reply() {
            Ok(r) => r,
            Err(e) => return next(outcome::network(Stage::Greeting, "greeting", &e)),
        };
        if greeting.code != 220 {
            return next(outcome::greeting_refused(&greeting));
        }
        let mut ext = match lhlo(&mut c, &cfg.hostname) {
            Ok(e) => e,
            Err(o) => return next(o),
        };
        if let Dest::Inet { host, .. } = ep {
            if policy != TlsPolicy::None && ext.starttls {
                let config = tls_client::config(policy, cfg.remote.tls_ca_file.as_deref())
                    .map_err(|e| Tls(e.to_string()))?;
                c = match tls_client::starttls(c, config, host) {
                    Ok(c) => c,
                    Err(StartTlsError::Tls(why)) => return Err(Tls(why)),
                    Err(StartTlsError::Io(e)) => return next(outcome::network(Stage::Tls, "STARTTLS", &e)),
                };
                if let Err(e) = c.set_timeouts(cfg.remote.helo_timeout) {
                    return next(outcome::network(Stage::Tls, "socket", &e));
                }
                // RFC 3207 4.2: forget everything learnt before TLS.
                ext = match lhlo(&mut c, &cfg.hostname) {
                    Ok(e) => e,
                    Err(o) => return next(o),
                };
            }
        }
        let tls = c.stream().tls_version();
        if tls.is_none() && !policy.allows_plaintext() {
            return next(outcome::tls_required(&ep.name()));
        }
        self.tx_start.set(Some(Instant::now()));
        let (result, reusable) = self
            .transaction(&mut c, &ext, false)
            .unwrap_or_else(|| (HostResult::Next(outcome::rset_refused()), false));
        let farewell = self
            .pool
            .release(key, Idle::new(c, ext, tls), reusable, &cfg.remote);
        Ok((result, tls, farewell))
    }
}

/// LHLO (RFC 2033 4.1); an LMTP server has no HELO to fall back to.
fn lhlo(c: &mut Client<Stream>, hostname: &str) -> Result<Extensions, Outcome> {
    let r = c
        .command(&format!("LHLO {hostname}"))
        .map_err(|e| outcome::network(Stage::Hello, "LHLO", &e))?;
    if r.code == 250 {
        Ok(Extensions::parse(&r))
    } else {
        Err(outcome::lhlo_refused(&r))
    }
}

fn connect(ep: &Dest, timeout: Duration) -> io::Result<Stream> {
    match ep {
        Dest::Unix(path) => connect_unix(path, timeout).map(Stream::Unix),
        Dest::Inet { addr, .. } => {
            let s = TcpStream::connect_timeout(addr, timeout)?;
            let _ = s.set_nodelay(true);
            Ok(Stream::Plain(s))
        }
    }
}

/// Connect to a UNIX-domain socket, waiting at most `timeout` when the
/// server's backlog is full: Linux bounds a blocking connect to such a
/// socket by the send timeout, where std's connect would wait forever.
fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    s.set_write_timeout(Some(timeout).filter(|t| !t.is_zero()))?;
    s.connect(&SockAddr::unix(path)?)?;
    Ok(UnixStream::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::dns::Broken;
    use crate::deliver::outcome::Verdict;
    use crate::smtp::status::Status;
    use crate::spool::QueueId;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};

    /// What the scripted server saw: connections accepted and every line.
    #[derive(Default)]
    struct Seen {
        connections: usize,
        lines: Vec<String>,
    }

    /// A scripted LMTP server on `listener`: Dovecot's replies, an unknown
    /// user for addresses starting `nobody`, a full mailbox for `full`, no
    /// answer at all after the data for `stall`, and `greeting` instead of
    /// 220 when given.
    fn serve<L, S>(accept: L, greeting: Option<&'static str>) -> Arc<Mutex<Seen>>
    where
        L: FnMut() -> Option<S> + Send + 'static,
        S: io::Read + io::Write + Send + 'static,
    {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = Arc::clone(&seen);
        let mut accept = accept;
        std::thread::spawn(move || {
            while let Some(conn) = accept() {
                s.lock().unwrap().connections += 1;
                let s = Arc::clone(&s);
                std::thread::spawn(move || session(conn, greeting, &s));
            }
        });
        seen
    }

    fn session<S: io::Read + io::Write>(conn: S, greeting: Option<&str>, seen: &Mutex<Seen>) {
        let mut r = BufReader::new(conn);
        let say = |r: &mut BufReader<S>, text: &str| {
            let _ = r.get_mut().write_all(text.as_bytes());
        };
        say(&mut r, greeting.unwrap_or("220 store.test Dovecot ready.\r\n"));
        let mut accepted: Vec<String> = Vec::new();
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            let cmd = line.trim_end().to_owned();
            line.clear();
            seen.lock().unwrap().lines.push(cmd.clone());
            let verb = cmd.split([' ', ':']).next().unwrap_or("").to_ascii_uppercase();
            match verb.as_str() {
                "LHLO" => say(
                    &mut r,
                    "250-store.test\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n",
                ),
                "MAIL" => say(&mut r, "250 2.1.0 OK\r\n"),
                "RCPT" => {
                    let addr = cmd.split(['<', '>']).nth(1).unwrap_or("").to_owned();
                    if addr.starts_with("nobody") {
                        say(
                            &mut r,
                            &format!("550 5.1.1 <{addr}> User doesn't exist: {addr}\r\n"),
                        );
                    } else {
                        say(&mut r, "250 2.1.5 OK\r\n");
                        accepted.push(addr);
                    }
                }
                "DATA" => {
                    say(&mut r, "354 OK\r\n");
                    let mut body = String::new();
                    while r.read_line(&mut body).is_ok_and(|n| n > 0) && body != ".\r\n" {
                        body.clear();
                    }
                    // RFC 2033 4.2: one reply per accepted recipient.
                    for a in accepted.drain(..) {
                        if a.starts_with("stall") {
                            // Never answers: the client's data-done timeout ends it.
                            std::thread::sleep(Duration::from_secs(5));
                            return;
                        }
                        if a.starts_with("full") {
                            say(
                                &mut r,
                                &format!("452 4.2.2 <{a}> Quota exceeded (mailbox for user is full)\r\n"),
                            );
                        } else {
                            say(&mut r, &format!("250 2.0.0 <{a}> Saved\r\n"));
                        }
                    }
                }
                "RSET" => {
                    accepted.clear();
                    say(&mut r, "250 2.0.0 OK\r\n");
                }
                "QUIT" => {
                    say(&mut r, "221 2.0.0 Bye\r\n");
                    return;
                }
                _ => say(&mut r, "500 5.5.1 Unknown command\r\n"),
            }
        }
    }

    fn unix_server(dir: &Path, greeting: Option<&'static str>) -> (PathBuf, Arc<Mutex<Seen>>) {
        let path = dir.join("lmtp");
        let l = UnixListener::bind(&path).unwrap();
        let seen = serve(move || l.accept().ok().map(|(s, _)| s), greeting);
        (path, seen)
    }

    fn config() -> Config {
        Config::parse(
            "hostname = mx.test\nsmtp_connection_cache_time = 30s\n",
            Path::new("t.conf"),
        )
        .unwrap()
    }

    fn envelope(rcpts: &[&str]) -> Envelope {
        let mut env = Envelope::new(QueueId::generate(), "a@example.org".to_owned(), 0);
        env.recipients = rcpts.iter().map(|r| Recipient::new((*r).to_owned())).collect();
        env
    }

    fn run(cfg: &Config, pool: &Arc<Pool>, server: &Lmtp, env: &Envelope) -> Vec<Attempted> {
        let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
        deliver(
            cfg,
            &Broken("no DNS".into()),
            pool,
            env,
            b"Subject: t\n\nhi\n",
            server,
            &rcpts,
        )
        .0
    }

    fn unix(path: &Path) -> Lmtp {
        Lmtp {
            addr: Endpoint::Unix(path.to_path_buf()),
            tls: None,
        }
    }

    #[test]
    fn each_recipient_has_its_own_result_and_the_connection_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (path, seen) = unix_server(dir.path(), None);
        let (cfg, pool) = (config(), Arc::new(Pool::new()));
        let env = envelope(&["alice@store.test", "nobody@store.test", "full@store.test"]);
        let got = run(&cfg, &pool, &unix(&path), &env);
        let relay = format!("lmtp/mx.test[{}]", path.display());
        let summary: Vec<_> = got
            .iter()
            .map(|a| {
                (
                    a.relay.as_str(),
                    a.outcome.verdict(),
                    a.outcome.status(),
                    a.success,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    relay.as_str(),
                    Verdict::Delivered,
                    Status(2, 0, 0),
                    Success::Delivered
                ),
                (
                    relay.as_str(),
                    Verdict::Permanent,
                    Status(5, 1, 1),
                    Success::Delivered
                ),
                (
                    relay.as_str(),
                    Verdict::Temporary,
                    Status(4, 2, 2),
                    Success::Delivered
                ),
            ]
        );
        assert_eq!(
            got[1].outcome.diagnostic(),
            "smtp; 550 5.1.1 <nobody@store.test> User doesn't exist: nobody@store.test"
        );
        assert!(got.iter().all(|a| a.tls.is_none()));
        // A second message goes over the same connection, after RSET.
        let env2 = envelope(&["alice@store.test"]);
        let again = run(&cfg, &pool, &unix(&path), &env2);
        assert!(again[0].outcome.is_delivered(), "{again:?}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.connections, 1);
        let verbs: Vec<&str> = seen
            .lines
            .iter()
            .filter(|l| !l.starts_with("RCPT"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            verbs,
            [
                "LHLO mx.test",
                "MAIL FROM:<a@example.org>",
                "DATA",
                "RSET",
                "MAIL FROM:<a@example.org>",
                "DATA"
            ]
        );
    }

    #[test]
    fn a_server_that_stops_answering_costs_the_data_done_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _seen) = unix_server(dir.path(), None);
        let mut cfg = config();
        cfg.remote.data_done_timeout = Duration::from_millis(500);
        let env = envelope(&["alice@store.test", "stall@store.test", "bob@store.test"]);
        let began = Instant::now();
        let got = run(&cfg, &Arc::new(Pool::new()), &unix(&path), &env);
        assert!(began.elapsed() < Duration::from_secs(4), "{:?}", began.elapsed());
        // alice was answered before the server went quiet: delivered.
        assert!(got[0].outcome.is_delivered(), "{got:?}");
        for a in &got[1..] {
            let o = &a.outcome;
            assert_eq!(
                (o.verdict(), o.status()),
                (Verdict::Temporary, Status(4, 4, 2)),
                "{o:?}"
            );
            assert!(o.detail().starts_with("connection lost after DATA: "), "{o:?}");
        }
    }

    #[test]
    fn over_tcp_the_relay_names_host_and_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = serve(move || l.accept().ok().map(|(s, _)| s), None);
        let mut cfg = config();
        // Without a connection cache, the connection ends with QUIT.
        cfg.remote.connection_cache_time = None;
        let server = Lmtp {
            addr: Endpoint::Inet {
                host: "127.0.0.1".into(),
                port,
            },
            tls: None,
        };
        let got = run(
            &cfg,
            &Arc::new(Pool::new()),
            &server,
            &envelope(&["alice@store.test"]),
        );
        assert_eq!(got[0].relay, format!("lmtp/127.0.0.1[127.0.0.1]:{port}"));
        assert!(got[0].outcome.is_delivered(), "{got:?}");
        // STARTTLS was not offered and smtp_tls = may: plaintext.
        assert!(got[0].tls.is_none());
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().lines.last().map(String::as_str) != Some("QUIT") {
            assert!(Instant::now() < deadline, "{:?}", seen.lock().unwrap().lines);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_server_that_is_no_lmtp_server_or_is_down_defers() {
        let dir = tempfile::tempdir().unwrap();
        // An SMTP server where the LMTP socket should be: LHLO is refused.
        let path = dir.path().join("smtp");
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let _ = s.write_all(b"220 smtp.test ESMTP\r\n");
                let mut r = BufReader::new(s);
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                    line.clear();
                    let _ = r
                        .get_mut()
                        .write_all(b"500 5.5.2 Error: command not recognized\r\n");
                }
            }
        });
        let env = envelope(&["alice@store.test", "bob@store.test"]);
        let got = run(&config(), &Arc::new(Pool::new()), &unix(&path), &env);
        assert_eq!(got.len(), 2);
        for a in &got {
            let o = &a.outcome;
            assert_eq!(
                (o.verdict(), o.stage(), o.status()),
                (Verdict::Temporary, Stage::Hello, Status(4, 4, 0))
            );
            assert_eq!(o.detail(), "LHLO: 500 5.5.2 Error: command not recognized");
            assert_eq!(a.relay, format!("lmtp/mx.test[{}]", path.display()));
        }
        // Nobody listening: deferred, and the log says where it tried.
        let gone = dir.path().join("gone");
        let got = run(
            &config(),
            &Arc::new(Pool::new()),
            &unix(&gone),
            &envelope(&["alice@store.test"]),
        );
        let o = &got[0].outcome;
        assert_eq!(
            (o.verdict(), o.stage(), o.status()),
            (Verdict::Temporary, Stage::Connect, Status(4, 4, 1))
        );
        assert!(o.detail().starts_with("connect: "), "{o:?}");
        assert_eq!(got[0].relay, format!("lmtp/mx.test[{}]", gone.display()));
    }

    #[test]
    fn a_server_name_that_does_not_resolve_defers() {
        let server = Lmtp {
            addr: Endpoint::Inet {
                host: "store.test".into(),
                port: 24,
            },
            tls: None,
        };
        let got = run(
            &config(),
            &Arc::new(Pool::new()),
            &server,
            &envelope(&["alice@store.test"]),
        );
        let o = &got[0].outcome;
        assert_eq!((o.verdict(), o.stage()), (Verdict::Temporary, Stage::Dns));
        assert_eq!(got[0].relay, "none");
    }
}
