//! Junk commands and NOOP keep-alives (issue 16 item 5): past
//! `junk_command_limit` commands that move no mail are answered late and
//! end the session with 421; and clients that keep sessions open without
//! sending mail cannot keep an honest client out of a full pool.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{connect_from, message, Client, Setup};

/// Everything the server says to `input` (written from another thread)
/// until it closes: the replies by status, and the last one.
fn flood(addr: SocketAddr, input: Vec<u8>) -> (std::collections::BTreeMap<String, usize>, String) {
    let mut c = Client::connect(addr);
    c.hello();
    let mut w = c.stream.try_clone().unwrap();
    // The server stops reading when it closes: a write error is expected.
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&input);
    });
    c.stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(c.stream.try_clone().unwrap());
    let mut seen = std::collections::BTreeMap::new();
    let mut last = String::new();
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let status: String = line.split(' ').take(2).collect::<Vec<_>>().join(" ");
        *seen.entry(status).or_insert(0) += 1;
        last = line.trim_end().to_owned();
    }
    let _ = writer.join();
    (seen, last)
}

#[test]
fn twenty_thousand_noops_end_in_421() {
    // Defaults (limit 100, 1 s), but max_errors 2 to keep the test short.
    let t = Setup::new().set("max_errors", "2").start();
    let started = Instant::now();
    let (seen, last) = flood(t.addr, b"NOOP\r\n".repeat(20_000));
    // 100 answered at once, then max_errors (2) answered a second late each,
    // then 421.
    assert_eq!(seen.get("250 2.0.0"), Some(&102), "{seen:?}");
    assert_eq!(last, "421 4.7.0 Too many errors, closing connection");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "no delay past the limit"
    );
    assert!(t.wait_log("junk: unknown[127.0.0.1] after 101 commands that move no mail"));
    // The EHLO, then the NOOPs answered.
    assert!(t.wait_log("commands=103 errors=2"));
}

#[test]
fn every_kind_of_junk_counts_and_mail_starts_the_count_over() {
    let t = Setup::new()
        .set("expn", "yes")
        .set("junk_command_limit", "5")
        .set("junk_command_delay", "0")
        .set("max_errors", "3")
        .start();
    let mut c = t.connect();
    c.hello();
    // Five of them are fine; a message resets the count.
    for cmd in ["NOOP", "RSET", "VRFY alice", "HELP", "EHLO again.test"] {
        assert!(c.cmd(cmd).code < 400, "{cmd}");
    }
    let r = c.send_mail("a@example.test", &["alice@example.test"], &message("resets"));
    assert_eq!(r.status(), "250 2.0.0");
    for cmd in ["NOOP", "EXPN team", "NOOP", "HELO again.test", "NOOP"] {
        c.cmd(cmd);
    }
    // Three past the limit, each an error: the third ends the session.
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
    assert_eq!(c.cmd("RSET").status(), "250 2.0.0");
    c.send("NOOP");
    assert_eq!(c.reply().status(), "250 2.0.0");
    assert_eq!(c.reply().status(), "421 4.7.0");
    assert!(c.closed());
}

#[test]
fn the_ehlo_after_starttls_is_not_junk() {
    let t = Setup::new()
        .tls()
        .set("junk_command_limit", "1")
        .set("junk_command_delay", "0")
        .set("max_errors", "1")
        .start();
    let mut c = t.connect();
    c.hello();
    let mut s = c.starttls(&t.setup.ca_pem());
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    assert_eq!(s.cmd("NOOP").status(), "250 2.0.0");
    // The second junk command is past the limit, and max_errors is 1.
    s.send("NOOP");
    assert_eq!(s.reply().status(), "250 2.0.0");
    assert_eq!(s.reply().status(), "421 4.7.0");
}

/// Keep `n` sessions open from each of `sources`, each sending a NOOP every
/// `every` and reading the answer; reopen each as soon as the server closes
/// it. Counts the sessions opened.
fn keep_alive(
    dst: SocketAddr,
    sources: Vec<Ipv4Addr>,
    n: usize,
    every: Duration,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
) {
    let mut conns: Vec<Option<(TcpStream, Instant)>> = (0..sources.len() * n).map(|_| None).collect();
    // A slot refused or closed tries again after a pause, as a patient attacker would.
    let mut retry_at: Vec<Instant> = vec![Instant::now(); conns.len()];
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        for (i, slot) in conns.iter_mut().enumerate() {
            let alive = match slot {
                Some((s, last)) => {
                    let open = match s.read(&mut buf) {
                        Ok(0) => false,
                        Ok(_) => true,
                        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                    };
                    if open && last.elapsed() >= every {
                        *last = Instant::now();
                        s.write_all(b"NOOP\r\n").is_ok()
                    } else {
                        open
                    }
                }
                None => false,
            };
            if !alive && slot.is_some() {
                *slot = None;
                retry_at[i] = Instant::now() + Duration::from_millis(300);
            }
            if slot.is_none() && Instant::now() >= retry_at[i] {
                *slot = connect_from(sources[i % sources.len()], dst).ok().map(|s| {
                    let _ = s.set_nonblocking(true);
                    let _ = (&s).write_all(b"EHLO keepalive.test\r\n");
                    opened.fetch_add(1, Ordering::Relaxed);
                    (s, Instant::now())
                });
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The attack: 100 addresses with 2 sessions each, a NOOP every
/// second (under stress_timeout, so never silent), on a pool of 100. An
/// honest client from another address still gets its message in.
#[test]
fn noop_keep_alives_cannot_lock_an_honest_client_out() {
    let t = Setup::new()
        .set("max_sessions", "100")
        .set("stress_timeout", "3s")
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let sources: Vec<Ipv4Addr> = (1..=100).map(|i| Ipv4Addr::new(127, 1, 0, i)).collect();
    let attack = {
        let (stop, opened) = (Arc::clone(&stop), Arc::clone(&opened));
        let dst = t.addr;
        std::thread::spawn(move || keep_alive(dst, sources, 2, Duration::from_secs(1), stop, opened))
    };
    // The pool fills up.
    assert!(crate::common::wait_until(10, || t
        .log_text()
        .contains("sessions in use: stress mode")));
    let started = Instant::now();
    let mut tries = 0;
    let delivered = loop {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "locked out after {tries} tries: {}",
            t.log_text().lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
        tries += 1;
        let Ok(stream) = connect_from(Ipv4Addr::new(127, 2, 0, 1), t.addr) else {
            continue;
        };
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Client::from_stream(stream);
        match c.try_reply() {
            Some(r) if r.code == 220 => {}
            _ => {
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
        }
        if c.cmd("EHLO honest.test").code != 250 {
            continue;
        }
        break c.send_mail("honest@example.test", &["alice@example.test"], &message("honest"));
    };
    assert_eq!(delivered.status(), "250 2.0.0", "{delivered:?}");
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    attack.join().unwrap();
    eprintln!(
        "honest client in after {tries} tries, {took:?}; {} attacking sessions opened",
        opened.load(Ordering::Relaxed)
    );
    assert!(
        t.log_text().contains("evicted: unknown[127.1.0."),
        "no eviction logged"
    );
}
