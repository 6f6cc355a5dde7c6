//! Slowloris (issue 8): 500 idle connections from five addresses must not
//! keep ten honest clients out of the thread-per-connection pool.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{connect_from, message, Client, Setup};

/// Keep `n` connections open from `sources`, saying nothing; reopen each as
/// soon as the server closes it. Counts the connections opened.
fn attack(
    dst: SocketAddr,
    sources: Vec<Ipv4Addr>,
    n: usize,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
) {
    let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        for (i, slot) in conns.iter_mut().enumerate() {
            let alive = match slot {
                Some(s) => match s.read(&mut buf) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                },
                None => false,
            };
            if !alive {
                *slot = connect_from(sources[i % sources.len()], dst).ok().inspect(|s| {
                    let _ = s.set_nonblocking(true);
                    opened.fetch_add(1, Ordering::Relaxed);
                });
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One honest client from `src`: retry a refused connection until it gets
/// its message accepted; the time that took.
fn honest(dst: SocketAddr, src: Ipv4Addr, deadline: Instant) -> Option<(Duration, usize)> {
    let start = Instant::now();
    let mut tries = 0;
    while Instant::now() < deadline {
        tries += 1;
        if let Ok(stream) = connect_from(src, dst) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut c = Client::from_stream(stream);
            if let Some(g) = c.try_reply() {
                if g.code == 220 {
                    c.send("EHLO honest.test");
                    if c.try_reply().is_some_and(|r| r.code == 250) {
                        let r = c.send_mail("bob@example.test", &["alice@example.test"], &message("honest"));
                        if r.code == 250 {
                            c.send("QUIT");
                            return Some((start.elapsed(), tries));
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn idle_connections_cannot_lock_out_honest_clients() {
    // Five attacking addresses times max_sessions_per_ip is more than the
    // pool: without stress mode they would hold every session for the
    // whole greeting_timeout (5 minutes).
    let t = Setup::new()
        .set("max_sessions", "40")
        .set("max_sessions_per_ip", "10")
        .set("stress_timeout", "2s")
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let sources: Vec<Ipv4Addr> = (2..7).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    let attacker = {
        let (stop, opened, dst) = (Arc::clone(&stop), Arc::clone(&opened), t.addr);
        std::thread::spawn(move || attack(dst, sources, 500, stop, opened))
    };
    // Let the attack fill the pool first.
    assert!(
        crate::common::wait_until(10, || t.log_text().contains("stress mode")),
        "the pool never came under stress"
    );
    // Idle sessions are shed after stress_timeout, and the attacker takes
    // their places again: the pool stays under attack throughout.
    let idle_ended = |t: &crate::common::Tern| {
        t.log_text()
            .lines()
            .filter(|l| l.contains("disconnect from unknown[127.0.0.") && l.contains("commands=0"))
            .count()
    };
    assert!(
        crate::common::wait_until(10, || idle_ended(&t) >= 5),
        "idle sessions were not cut under stress"
    );
    // The log says why: the pool's stress, not the ordinary greeting timeout.
    assert!(
        t.wait_log("timeout after CONNECT from unknown[127.0.0."),
        "{}",
        t.log_text()
    );
    assert!(t
        .log_text()
        .lines()
        .any(|l| l.contains("timeout after CONNECT") && l.ends_with("(stress mode)")));
    let deadline = Instant::now() + Duration::from_secs(20);
    let honest: Vec<_> = (1..=10)
        .map(|i| {
            let dst = t.addr;
            std::thread::spawn(move || honest(dst, Ipv4Addr::new(127, 0, 1, i), deadline))
        })
        .collect();
    let results: Vec<Option<(Duration, usize)>> = honest.into_iter().map(|h| h.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    let through = results.iter().flatten().count();
    let slowest = results.iter().flatten().map(|r| r.0).max().unwrap_or_default();
    let tries: usize = results.iter().flatten().map(|r| r.1).sum();
    let cut = idle_ended(&t);
    let refused = t
        .log_text()
        .lines()
        .filter(|l| l.contains("reject: connect from"))
        .count();
    eprintln!(
        "slowloris: {} attacker connections opened from 5 addresses (500 kept open), \
         {cut} idle sessions ended, {refused} refused at once; honest clients through: {through}/10, slowest {slowest:?}, {tries} connection attempts",
        opened.load(Ordering::Relaxed)
    );
    assert_eq!(through, 10, "honest clients kept out: {results:?}");
    assert_eq!(t.queued().len(), 10);
}
