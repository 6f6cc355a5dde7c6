//! Listening sockets and the fixed pool of session threads.
//!
//! One thread per listening socket accepts connections. Each connection
//! takes a slot (a global count and a per-address count, both released on
//! drop) and is handed through a bounded crossbeam channel to one of
//! `max_sessions` session threads. When no slot is free the client gets a
//! 421 at once and the socket is closed: accept never blocks on a busy pool,
//! and no client ever waits unanswered in a queue.
//!
//! Stress mode (idle clients must not starve honest ones): while more than
//! 3/4 of the slots are in use, a session whose client has been silent for
//! `stress_timeout` is closed with 421, and an address that already holds a
//! session gets no second one. The last quarter of the pool is thus kept
//! for addresses not yet connected, and idle holders are shed within
//! seconds. Postfix's stress mode shortens its timeouts the same way.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::config::{Config, Live};
use crate::maillog;
use crate::metrics;
use crate::server::conn::{self, Conn};
use crate::server::proxy;
use crate::server::session::{self, Context, Peer, Service};
use crate::smtp::reply::{self, Reply};

/// Session threads do little recursion; a small stack keeps idle sessions
/// cheap (the pool may be large). Buffers live on the heap.
const SESSION_STACK: usize = 256 * 1024;

/// Counts of sessions in use, overall and per client address.
struct Slots {
    max: usize,
    max_per_ip: usize,
    inner: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Whether `busy` of `max` slots in use is stress: more than three quarters.
fn stressed(busy: usize, max: usize) -> bool {
    busy.saturating_mul(4) > max.saturating_mul(3)
}

/// The sessions one address may hold: `max_per_ip`, but only one while
/// the pool is under stress (see the module comment).
fn per_ip_limit(busy: usize, max: usize, max_per_ip: usize) -> usize {
    if stressed(busy, max) {
        max_per_ip.min(1)
    } else {
        max_per_ip
    }
}

/// A held session slot; dropping it frees the slot.
pub struct Slot {
    slots: Arc<Slots>,
    /// The address counted against `max_sessions_per_ip`; None for a
    /// connection from a trusted proxy until its PROXY header names the client.
    ip: Option<IpAddr>,
}

fn release(per_ip: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = per_ip.get_mut(&ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_ip.remove(&ip);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.slots.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.saturating_sub(1);
        if let Some(ip) = self.ip {
            release(&mut g.1, ip);
        }
    }
}

impl Slot {
    /// Count this session against `ip` instead: the client a proxy named.
    fn rebind(&mut self, ip: IpAddr) -> Result<(), Reply> {
        let mut g = self.slots.inner.lock().unwrap_or_else(|e| e.into_inner());
        let per_ip = g.1.get(&ip).copied().unwrap_or(0);
        // This session is already counted in g.0.
        let others = g.0.saturating_sub(1);
        if per_ip >= per_ip_limit(others, self.slots.max, self.slots.max_per_ip) {
            return Err(reply::too_many_from_ip());
        }
        if let Some(old) = self.ip {
            release(&mut g.1, old);
        }
        g.1.insert(ip, per_ip + 1);
        self.ip = Some(ip);
        Ok(())
    }
}

impl Slots {
    fn under_stress(&self) -> bool {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        stressed(g.0, self.max)
    }

    /// A slot, counted against `ip` when given.
    fn take(self: &Arc<Slots>, ip: Option<IpAddr>) -> Result<Slot, Reply> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 >= self.max {
            return Err(reply::too_busy());
        }
        if let Some(ip) = ip {
            let per_ip = g.1.get(&ip).copied().unwrap_or(0);
            if per_ip >= per_ip_limit(g.0, self.max, self.max_per_ip) {
                return Err(reply::too_many_from_ip());
            }
            g.1.insert(ip, per_ip + 1);
        }
        if !stressed(g.0, self.max) && stressed(g.0 + 1, self.max) {
            log::warn!(
                "{} of {} sessions in use: stress mode (idle clients cut short, one session per address)",
                g.0 + 1,
                self.max
            );
        }
        g.0 += 1;
        Ok(Slot {
            slots: Arc::clone(self),
            ip,
        })
    }
}

struct Job {
    stream: TcpStream,
    peer: Peer,
    service: Service,
    _slot: Slot,
}

/// Bind every address in `addrs`; the error names the address that failed.
pub fn bind(addrs: &[SocketAddr]) -> io::Result<Vec<TcpListener>> {
    addrs
        .iter()
        .map(|a| {
            let l = match a {
                SocketAddr::V6(v6) => crate::sys::listen_v6only(*v6, 1024),
                SocketAddr::V4(_) => TcpListener::bind(a),
            };
            l.map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {a}: {e}")))
        })
        .collect()
}

/// One listening socket the server accepts on.
struct Listening {
    /// The address as configured (port 0 stays 0), to compare with a reload's.
    configured: SocketAddr,
    service: Service,
    /// A handle on the socket, to shut it down.
    socket: TcpListener,
    /// Set to make its accept loop return (a reload removed the address).
    closed: Arc<AtomicBool>,
}

/// The running server: its listeners and session slots.
pub struct Server {
    slots: Arc<Slots>,
    listening: Mutex<Vec<Listening>>,
    ctx: Arc<Live<Context>>,
    tx: Sender<Job>,
}

impl Server {
    /// Sessions in progress.
    pub fn active(&self) -> usize {
        self.slots.inner.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The addresses accepted on now, by service, as bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<(Service, SocketAddr)> {
        self.listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|l| l.socket.local_addr().ok().map(|a| (l.service, a)))
            .collect()
    }

    /// Stop accepting connections: the accept loops see the shutdown flag
    /// once their blocked accept() returns, which shutting the sockets down
    /// makes it do at once.
    pub fn stop_accepting(&self) {
        for l in self.listening.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            crate::sys::shutdown_socket(&l.socket);
        }
    }

    /// A reload: the addresses of `service` become `addrs`. New ones are bound
    /// (a failure, such as a port below 1024 after the privilege drop, is
    /// logged and the address left out); removed ones stop accepting, while
    /// their sessions in progress go on.
    pub fn rebind(&self, service: Service, addrs: &[SocketAddr]) {
        let mut listening = self.listening.lock().unwrap_or_else(|e| e.into_inner());
        listening.retain(|l| {
            if l.service != service || addrs.contains(&l.configured) {
                return true;
            }
            log::info!("SIGHUP: no longer listening for {service} on {}", l.configured);
            l.closed.store(true, Ordering::SeqCst);
            crate::sys::shutdown_socket(&l.socket);
            false
        });
        for a in addrs {
            if listening
                .iter()
                .any(|l| l.service == service && l.configured == *a)
            {
                continue;
            }
            let started = bind(std::slice::from_ref(a))
                .and_then(|mut b| b.pop().ok_or_else(|| io::Error::other("nothing bound")))
                .and_then(|l| self.start(l, service, *a));
            match started {
                Ok(l) => {
                    match l.socket.local_addr() {
                        Ok(bound) => log::info!("SIGHUP: now listening for {service} on {bound}"),
                        Err(_) => log::info!("SIGHUP: now listening for {service} on {a}"),
                    }
                    listening.push(l);
                }
                Err(e) => log::error!("SIGHUP: {e}; restart ternd as root to listen there"),
            }
        }
    }

    fn start(&self, l: TcpListener, service: Service, configured: SocketAddr) -> io::Result<Listening> {
        let socket = l.try_clone()?;
        let closed = Arc::new(AtomicBool::new(false));
        let (tx, slots, ctx, stop) = (
            self.tx.clone(),
            Arc::clone(&self.slots),
            Arc::clone(&self.ctx),
            Arc::clone(&closed),
        );
        let name = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        thread::Builder::new()
            .name(format!("listen-{name}"))
            .spawn(move || accept_loop(&l, service, &slots, &tx, &ctx, &stop))?;
        Ok(Listening {
            configured,
            service,
            socket,
            closed,
        })
    }
}

/// Start serving on `listeners` (socket, service, configured address):
/// threads for accepting and for sessions; returns at once. Each session
/// takes the context current when it starts (see [`Live`]).
pub fn serve(
    ctx: Arc<Live<Context>>,
    listeners: Vec<(TcpListener, Service, SocketAddr)>,
) -> io::Result<Server> {
    let first = ctx.get();
    // The pool is sized once: a reload that changes these logs that it
    // needs a restart.
    let max = first.cfg.listen.max_sessions;
    let slots = Arc::new(Slots {
        max,
        max_per_ip: first.cfg.listen.max_sessions_per_ip,
        inner: Mutex::new((0, HashMap::new())),
    });
    // Capacity max: a job is only sent while it holds one of `max` slots, so
    // the send below never blocks.
    let (tx, rx) = crossbeam_channel::bounded::<Job>(max);
    for i in 0..max {
        let rx = rx.clone();
        let ctx = Arc::clone(&ctx);
        thread::Builder::new()
            .name(format!("session-{i}"))
            .stack_size(SESSION_STACK)
            .spawn(move || worker(&ctx, &rx))?;
    }
    let server = Server {
        slots,
        listening: Mutex::new(Vec::new()),
        ctx,
        tx,
    };
    for (l, service, configured) in listeners {
        let started = server.start(l, service, configured)?;
        server
            .listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(started);
    }
    Ok(server)
}

fn accept_loop(
    l: &TcpListener,
    service: Service,
    slots: &Arc<Slots>,
    tx: &Sender<Job>,
    live: &Live<Context>,
    closed: &AtomicBool,
) {
    loop {
        let accepted = l.accept();
        let ctx = live.get();
        if ctx.shutdown.load(Ordering::Relaxed) || closed.load(Ordering::SeqCst) {
            return;
        }
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::error!("accept: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let ip = canonical_ip(addr.ip());
        let mut peer = Peer::remote(ip);
        peer.port = Some(addr.port());
        // Behind a proxy, its own address is not the client's: the per-address
        // limit waits for the PROXY header (see worker).
        let proxied = behind_proxy(&ctx.cfg, service)
            && ctx.cfg.listen.proxy_from.iter().any(|n| n.contains(addr.ip()));
        let per_ip = if proxied { None } else { Some(ip) };
        match slots.take(per_ip) {
            Ok(slot) => {
                if let Err(e) = tx.try_send(Job {
                    stream,
                    peer,
                    service,
                    _slot: slot,
                }) {
                    // Cannot happen while slots bound the channel; answer anyway.
                    let job = e.into_inner();
                    refuse(job.stream, service, &job.peer, &reply::too_busy());
                }
            }
            Err(r) => refuse(stream, service, &peer, &r),
        }
    }
}

/// Answer a connection we will not serve, without letting a slow client hold
/// up the accept loop.
fn refuse(mut stream: TcpStream, service: Service, peer: &Peer, r: &Reply) {
    maillog::refuse_connection(peer, r);
    metrics::refused(service.into(), r);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_nonblocking(true);
    let _ = stream.write_all(r.to_wire().as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn worker(live: &Live<Context>, rx: &Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        // This session's configuration, whatever a reload does meanwhile.
        let ctx = &*live.get();
        let Job {
            mut stream,
            peer,
            service,
            _slot: mut slot,
        } = job;
        // Dropping the stream closes a connection the PROXY check refused.
        let Some(peer) = proxied_peer(ctx, service, &mut stream, peer) else {
            metrics::proxy_refused(service.into());
            continue;
        };
        // The slot is held (and freed on drop) until the session ends.
        if slot.ip.is_none() {
            if let Some(ip) = peer.ip {
                if let Err(r) = slot.rebind(ip) {
                    refuse(stream, service, &peer, &r);
                    continue;
                }
            }
        }
        let mut peer = peer;
        peer.server = peer.server.or_else(|| stream.local_addr().ok());
        let _ = stream.set_nodelay(true);
        let spare = stream.try_clone();
        let conn = Guarded {
            tcp: stream,
            slots: Arc::clone(&slot.slots),
            stress_timeout: ctx.cfg.session.stress_timeout,
            timeout: ctx.cfg.session.greeting_timeout,
            last: Instant::now(),
            read_set: None,
            write_set: None,
        };
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            session::run(ctx, &peer, service, Box::new(conn));
        }));
        if result.is_err() {
            // A bug must cost one session, never the daemon.
            log::error!("session with {peer} panicked; closed");
            if let Ok(mut s) = spare {
                let _ = s.write_all(reply::internal_error().to_wire().as_bytes());
            }
        }
    }
}

/// A pooled session's TCP stream: under stress, a client silent for
/// `stress_timeout` (counted from the last byte either way) times out,
/// whatever the session's own timeout.
struct Guarded {
    tcp: TcpStream,
    slots: Arc<Slots>,
    stress_timeout: Duration,
    /// The read timeout the session asked for.
    timeout: Duration,
    /// When a byte last went either way.
    last: Instant,
    /// The timeouts the socket has now: setsockopt(2) only when they change (it
    /// used to run before every read, some 40 calls per message).
    read_set: Option<Duration>,
    write_set: Option<Duration>,
}

impl Guarded {
    fn set_read(&mut self, t: Duration) -> io::Result<()> {
        if self.read_set != Some(t) {
            self.tcp.set_read_timeout(Some(t))?;
            self.read_set = Some(t);
        }
        Ok(())
    }
}

impl Read for Guarded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.slots.under_stress() {
            let left = self.stress_timeout.saturating_sub(self.last.elapsed());
            if left.is_zero() {
                return Err(conn::stress_timeout());
            }
            self.set_read(left.min(self.timeout))?;
        } else {
            self.set_read(self.timeout)?;
        }
        let n = self.tcp.read(buf)?;
        if n > 0 {
            self.last = Instant::now();
        }
        Ok(n)
    }
}

impl Write for Guarded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.tcp.write(buf)?;
        self.last = Instant::now();
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

impl Conn for Guarded {
    fn set_timeout(&mut self, t: Duration) -> io::Result<()> {
        // The read timeout is applied by the next read.
        self.timeout = t;
        if self.write_set != Some(t) {
            self.tcp.set_write_timeout(Some(t))?;
            self.write_set = Some(t);
        }
        Ok(())
    }

    fn set_read_wait(&mut self, t: Duration) -> io::Result<()> {
        self.timeout = t;
        Ok(())
    }
}

fn behind_proxy(cfg: &Config, service: Service) -> bool {
    cfg.listen
        .proxy_protocol
        .iter()
        .any(|s| *s == service.to_string())
}

/// On a listener behind a proxy: check that the connection comes from a
/// trusted proxy and read its PROXY header, which names the real client.
/// None: refused (logged); the caller closes the connection.
fn proxied_peer(ctx: &Context, service: Service, stream: &mut TcpStream, peer: Peer) -> Option<Peer> {
    let cfg = &ctx.cfg;
    if !behind_proxy(cfg, service) {
        return Some(peer);
    }
    let trusted = peer
        .ip
        .is_some_and(|ip| cfg.listen.proxy_from.iter().any(|n| n.contains(ip)));
    if !trusted {
        maillog::proxy_refused(&peer, &"not in proxy_from");
        return None;
    }
    let _ = stream.set_read_timeout(Some(cfg.session.greeting_timeout));
    match proxy::read_header(stream) {
        Ok(proxy::Header::Proxied { src, dst }) => {
            let mut client = Peer::remote(canonical_ip(src.ip()));
            client.port = Some(src.port());
            client.server = Some(dst);
            maillog::proxied(&peer, &client);
            Some(client)
        }
        // The proxy's own health check, or a family without an address.
        Ok(proxy::Header::Local) => Some(peer),
        Err(e) => {
            maillog::proxy_refused(&peer, &e);
            None
        }
    }
}

/// An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d; log and
/// match it as the IPv4 address it is.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stress_starts_past_three_quarters() {
        assert!(!stressed(75, 100));
        assert!(stressed(76, 100));
        assert!(!stressed(3, 4));
        assert!(stressed(4, 4));
        assert_eq!(per_ip_limit(10, 100, 20), 20);
        assert_eq!(per_ip_limit(80, 100, 20), 1);
    }

    #[test]
    fn stressed_pool_keeps_room_for_new_addresses() {
        let slots = Arc::new(Slots {
            max: 8,
            max_per_ip: 4,
            inner: Mutex::new((0, HashMap::new())),
        });
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let c: IpAddr = [127, 0, 0, 9].into();
        let mut held = Vec::new();
        for ip in [a, a, a, a, b, b] {
            held.push(slots.take(Some(ip)).expect("slot"));
        }
        // 6 of 8 in use (75%): b may still have a third.
        held.push(slots.take(Some(b)).expect("slot"));
        // 7 of 8: stressed; b and a are refused, a new address is not.
        assert!(slots.take(Some(b)).is_err());
        assert!(slots.take(Some(a)).is_err());
        held.push(slots.take(Some(c)).expect("new address"));
        assert!(slots.take(Some([127, 0, 0, 10].into())).is_err(), "pool full");
        held.clear();
        assert!(slots.take(Some(a)).is_ok());
    }
}
