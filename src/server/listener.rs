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
//!
//! A client that is not silent but sends no mail (a NOOP every few seconds)
//! is not shed by that. So when the pool is full, a new client is not
//! turned away while some session has sent more junk commands than
//! `junk_command_limit`, or has had no mail transaction open for
//! `stress_timeout`: the worst of them (junk first, then the longest
//! without mail) is closed with 421, and its slot goes to the newcomer.
//! Sessions that move mail are never closed this way.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::config::{Config, Live};
use crate::maillog;
use crate::metrics;
use crate::server::conn::{self, Conn, Standing};
use crate::server::proxy;
use crate::server::session::{self, Context, Peer, Service};
use crate::smtp::reply::{self, Reply};

/// Session threads do little recursion; a small stack keeps idle sessions
/// cheap (the pool may be large). Buffers live on the heap.
const SESSION_STACK: usize = 256 * 1024;

/// Counts of sessions in use, overall and per client address, and each
/// session's standing.
struct Slots {
    max: usize,
    max_per_ip: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Slots held, those of sessions being closed included.
    busy: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Every session holding a slot.
    held: Vec<Arc<Held>>,
    /// Sessions told to close (evicted) that still hold their slot.
    evicting: usize,
}

/// One session's standing, shared by its slot and its connection.
struct Held {
    since: Instant,
    /// Milliseconds after `since` from which the session has had no mail
    /// transaction open; `IN_TRANSACTION` while it has one.
    idle_from: AtomicU64,
    /// Past `junk_command_limit`.
    junk: AtomicBool,
    /// Closed to make room: its reads fail from now on.
    evicted: AtomicBool,
    /// The socket, to wake the session's read when it is evicted.
    stream: OnceLock<TcpStream>,
}

const IN_TRANSACTION: u64 = u64::MAX;

impl Held {
    fn new() -> Held {
        Held {
            since: Instant::now(),
            idle_from: AtomicU64::new(0),
            junk: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            stream: OnceLock::new(),
        }
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn report(&self, s: Standing) {
        if s.in_transaction {
            self.idle_from.store(IN_TRANSACTION, Ordering::Relaxed);
        } else if self.idle_from.load(Ordering::Relaxed) == IN_TRANSACTION {
            self.idle_from.store(self.millis(), Ordering::Relaxed);
        }
        self.junk.store(s.junk, Ordering::Relaxed);
    }

    /// How long it has been without a mail transaction; None while in one.
    fn without_mail(&self) -> Option<Duration> {
        match self.idle_from.load(Ordering::Relaxed) {
            IN_TRANSACTION => None,
            from => Some(Duration::from_millis(self.millis().saturating_sub(from))),
        }
    }
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
    held: Arc<Held>,
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
        g.busy = g.busy.saturating_sub(1);
        if let Some(ip) = self.ip {
            release(&mut g.per_ip, ip);
        }
        if self.held.evicted.load(Ordering::Relaxed) {
            g.evicting = g.evicting.saturating_sub(1);
        }
        if let Some(i) = g.held.iter().position(|h| Arc::ptr_eq(h, &self.held)) {
            g.held.swap_remove(i);
        }
    }
}

impl Slot {
    /// Count this session against `ip` instead: the client a proxy named.
    fn rebind(&mut self, ip: IpAddr) -> Result<(), Reply> {
        let mut g = self.slots.inner.lock().unwrap_or_else(|e| e.into_inner());
        let per_ip = g.per_ip.get(&ip).copied().unwrap_or(0);
        // This session is already counted in g.busy.
        let others = g.busy.saturating_sub(1);
        if per_ip >= per_ip_limit(others, self.slots.max, self.slots.max_per_ip) {
            return Err(reply::too_many_from_ip());
        }
        if let Some(old) = self.ip {
            release(&mut g.per_ip, old);
        }
        g.per_ip.insert(ip, per_ip + 1);
        self.ip = Some(ip);
        Ok(())
    }
}

impl Slots {
    fn new(max: usize, max_per_ip: usize) -> Slots {
        Slots {
            max,
            max_per_ip,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn under_stress(&self) -> bool {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        stressed(g.busy, self.max)
    }

    /// A slot, counted against `ip` when given. When the pool is full, a
    /// session that sends no mail (see the module comment) is closed to
    /// make room; `idle_after` is `stress_timeout`.
    fn take(self: &Arc<Slots>, ip: Option<IpAddr>, idle_after: Duration) -> Result<Slot, Reply> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Sessions already told to close are on their way out.
        let full = g.busy.saturating_sub(g.evicting) >= self.max;
        if let Some(ip) = ip {
            let per_ip = g.per_ip.get(&ip).copied().unwrap_or(0);
            if per_ip >= per_ip_limit(g.busy, self.max, self.max_per_ip) {
                return Err(if full {
                    reply::too_busy()
                } else {
                    reply::too_many_from_ip()
                });
            }
        }
        if full && !evict(&mut g, idle_after) {
            return Err(reply::too_busy());
        }
        if let Some(ip) = ip {
            *g.per_ip.entry(ip).or_insert(0) += 1;
        }
        if !stressed(g.busy, self.max) && stressed(g.busy + 1, self.max) {
            log::warn!(
                "{} of {} sessions in use: stress mode (idle clients cut short, one session per address)",
                g.busy + 1,
                self.max
            );
        }
        g.busy += 1;
        let held = Arc::new(Held::new());
        g.held.push(Arc::clone(&held));
        Ok(Slot {
            slots: Arc::clone(self),
            ip,
            held,
        })
    }
}

/// Close the session that most deserves it to make room: one past the junk
/// command limit, else the one longest without a mail transaction, if that
/// is at least `idle_after`. False when every session moves mail.
fn evict(g: &mut Inner, idle_after: Duration) -> bool {
    let candidate = g
        .held
        .iter()
        .filter(|h| !h.evicted.load(Ordering::Relaxed) && h.stream.get().is_some())
        .filter_map(|h| {
            let quiet = h.without_mail()?;
            let junk = h.junk.load(Ordering::Relaxed);
            (junk || quiet >= idle_after).then_some((junk, quiet, h))
        })
        .max_by_key(|(junk, quiet, _)| (*junk, *quiet))
        .map(|(_, _, h)| Arc::clone(h));
    let Some(h) = candidate else {
        return false;
    };
    h.evicted.store(true, Ordering::Relaxed);
    g.evicting += 1;
    // Wakes the session's read, which then fails (Guarded::read): it says
    // 421 and ends, freeing its slot.
    if let Some(s) = h.stream.get() {
        let _ = s.shutdown(std::net::Shutdown::Read);
    }
    true
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
        self.slots.inner.lock().unwrap_or_else(|e| e.into_inner()).busy
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
    let slots = Arc::new(Slots::new(max, first.cfg.listen.max_sessions_per_ip));
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
        let peer = Peer::remote(ip);
        // Behind a proxy, its own address is not the client's: the per-address
        // limit waits for the PROXY header (see worker).
        let proxied = behind_proxy(&ctx.cfg, service)
            && ctx.cfg.listen.proxy_from.iter().any(|n| n.contains(addr.ip()));
        let per_ip = if proxied { None } else { Some(ip) };
        match slots.take(per_ip, ctx.cfg.session.stress_timeout) {
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
        let _ = stream.set_nodelay(true);
        let spare = stream.try_clone();
        if let Ok(s) = stream.try_clone() {
            let _ = slot.held.stream.set(s);
        }
        let conn = Guarded {
            tcp: stream,
            slots: Arc::clone(&slot.slots),
            held: Arc::clone(&slot.held),
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
    /// The session's standing in the pool.
    held: Arc<Held>,
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
        if self.held.evicted.load(Ordering::Relaxed) {
            return Err(conn::evicted());
        }
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
        } else if self.held.evicted.load(Ordering::Relaxed) {
            // Not the client's end of stream: ours (see `evict`).
            return Err(conn::evicted());
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

    fn report(&mut self, standing: Standing) {
        self.held.report(standing);
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
        Ok(proxy::Header::Proxied { src, .. }) => {
            let client = Peer::remote(canonical_ip(src.ip()));
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

    const IDLE: Duration = Duration::from_secs(3600);

    /// A connected loopback socket for a slot, as the worker gives it.
    fn connect(held: &Held, listener: &std::net::TcpListener) -> TcpStream {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        held.stream.set(server).unwrap();
        client
    }

    #[test]
    fn a_full_pool_closes_a_session_that_sends_no_mail() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let slots = Arc::new(Slots::new(2, 2));
        let ip: IpAddr = [127, 0, 0, 2].into();
        let a = slots.take(Some(ip), IDLE).unwrap();
        let b = slots.take(Some(ip), IDLE).unwrap();
        let _clients = (connect(&a.held, &l), connect(&b.held, &l));
        // Nobody idle long enough, nobody junk: the newcomer is refused.
        assert_eq!(slots.take(Some(ip), IDLE).err().map(|r| r.code), Some(421));
        // b sends mail; a has been without for long enough (here: any time).
        b.held.report(Standing {
            in_transaction: true,
            junk: false,
        });
        let c = slots.take(Some([127, 0, 0, 3].into()), Duration::ZERO).unwrap();
        assert!(a.held.evicted.load(Ordering::Relaxed));
        assert!(!b.held.evicted.load(Ordering::Relaxed));
        // a still holds its slot until its session ends; no second eviction meanwhile.
        assert!(slots.take(Some([127, 0, 0, 4].into()), Duration::ZERO).is_err());
        drop(a);
        {
            let g = slots.inner.lock().unwrap();
            assert_eq!((g.busy, g.evicting, g.held.len()), (2, 0, 2));
        }
        // Past the junk limit comes first, whatever the time.
        c.held.report(Standing {
            in_transaction: false,
            junk: true,
        });
        let _c_client = connect(&c.held, &l);
        b.held.report(Standing {
            in_transaction: false,
            junk: false,
        });
        let _d = slots.take(Some([127, 0, 0, 5].into()), IDLE).unwrap();
        assert!(c.held.evicted.load(Ordering::Relaxed));
        assert!(!b.held.evicted.load(Ordering::Relaxed));
    }

    #[test]
    fn stressed_pool_keeps_room_for_new_addresses() {
        let slots = Arc::new(Slots::new(8, 4));
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let c: IpAddr = [127, 0, 0, 9].into();
        let mut held = Vec::new();
        for ip in [a, a, a, a, b, b] {
            held.push(slots.take(Some(ip), IDLE).expect("slot"));
        }
        // 6 of 8 in use (75%): b may still have a third.
        held.push(slots.take(Some(b), IDLE).expect("slot"));
        // 7 of 8: stressed; b and a are refused, a new address is not.
        assert!(slots.take(Some(b), IDLE).is_err());
        assert!(slots.take(Some(a), IDLE).is_err());
        held.push(slots.take(Some(c), IDLE).expect("new address"));
        assert!(
            slots.take(Some([127, 0, 0, 10].into()), IDLE).is_err(),
            "pool full"
        );
        held.clear();
        assert!(slots.take(Some(a), IDLE).is_ok());
    }
}
