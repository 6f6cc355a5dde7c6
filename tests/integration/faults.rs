//! Faults (issue 8): kill -9 while mail is both arriving and going out,
//! destinations that hang or trickle, and full disks.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::peer::{Peer, Script};
use crate::common::{message, submit_until_stopped, wait_until, Setup, Tern};

/// The token in a message's Subject.
fn token_of(body: &[u8]) -> Option<String> {
    String::from_utf8_lossy(body)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(|s| s.trim().to_owned()))
}

/// A small xorshift generator: the kill moments vary from run to run, and
/// the seed is printed so a failing run can be repeated (TERN_CRASH_SEED).
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[test]
fn kill9_while_submitting_and_delivering_loses_nothing() {
    let seed = std::env::var("TERN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    let mut rng = Rng(seed);
    let peer = Peer::start(Script::default());
    let mut t = Setup::new()
        .deliver()
        .set("route", &format!("example.net [127.0.0.1]:{}", peer.port()))
        .set("max_sessions", "16")
        .set("smtp_connection_cache_time", "2s")
        .start();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let kills = 6;
    for round in 0..kills {
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..5)
            .map(|who| {
                let (addr, stop, acked) = (t.addr, Arc::clone(&stop), Arc::clone(&acked));
                std::thread::spawn(move || {
                    submit_until_stopped(addr, "x@example.net", who, round, 4, &stop, &acked)
                })
            })
            .collect();
        // Kill at a random moment: while sessions write the spool and the
        // runner delivers what came in before.
        std::thread::sleep(Duration::from_millis(100 + rng.next(600)));
        t.kill9();
        stop.store(true, Ordering::Relaxed);
        for th in threads {
            th.join().unwrap();
        }
        t.restart();
    }
    let acked: Vec<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(token, _)| token.clone())
        .collect();
    assert!(
        acked.len() >= 20,
        "too few messages to test anything: {}",
        acked.len()
    );
    // After the last restart the queue drains: every acknowledged message
    // reaches the peer.
    let delivered = || -> HashMap<String, usize> {
        let mut count = HashMap::new();
        for (_, _, body) in peer.messages() {
            if let Some(tok) = token_of(&body) {
                *count.entry(tok).or_insert(0) += 1;
            }
        }
        count
    };
    let all_there = wait_until(30, || {
        let d = delivered();
        acked.iter().all(|a| d.contains_key(a))
    });
    let d = delivered();
    let lost: Vec<&String> = acked.iter().filter(|a| !d.contains_key(*a)).collect();
    // Bodies arrive whole: each ends with its own END line.
    for (_, _, body) in peer.messages() {
        let tok = token_of(&body).expect("subject");
        assert!(
            String::from_utf8_lossy(&body).ends_with(&format!("END {tok}\r\n")),
            "truncated delivery of {tok}"
        );
    }
    let dups: usize = d.values().map(|n| n - 1).sum();
    let unacked = d.keys().filter(|k| !acked.contains(k)).count();
    eprintln!(
        "crash test (seed {seed}): kills survived {kills}, acknowledged {}, delivered {}, lost {}, duplicates {dups}, delivered but unacknowledged {unacked}",
        acked.len(),
        d.len(),
        lost.len()
    );
    assert!(
        all_there && lost.is_empty(),
        "acknowledged but never delivered: {lost:?}"
    );
    // Only a message in flight at a kill may go twice: at most one per
    // delivery thread per kill.
    assert!(dups <= kills * 8, "{dups} duplicates in {kills} kills");
    assert!(
        wait_until(10, || t.spool().list().map(|l| l.is_empty()).unwrap_or(false)),
        "queue not empty at the end: {:?}\n{}",
        t.queued()
            .iter()
            .map(|(e, b)| format!("{}\n{}", e.to_text(), String::from_utf8_lossy(b)))
            .collect::<Vec<_>>(),
        t.log_text()
    );
}

/// A destination that misbehaves in one way, on 127.0.0.1.
#[derive(Clone, Copy)]
enum Hostile {
    /// Accepts the connection, never says a word.
    Silent,
    /// "220 " one byte every 200 ms, never ending the line.
    Trickle,
    /// One endless line, as fast as it goes.
    Endless,
}

fn hostile(kind: Hostile) -> (SocketAddr, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let stop3 = Arc::clone(&stop2);
                    match kind {
                        Hostile::Silent => held.push(s),
                        Hostile::Trickle => {
                            std::thread::spawn(move || {
                                let mut s = s;
                                for b in b"220 slow.test ".iter().cycle() {
                                    if stop3.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                                        return;
                                    }
                                    std::thread::sleep(Duration::from_millis(200));
                                }
                            });
                        }
                        Hostile::Endless => {
                            std::thread::spawn(move || {
                                let mut s = s;
                                let _ = s.write_all(b"220 ");
                                let chunk = [b'x'; 1024];
                                for _ in 0..100_000 {
                                    if stop3.load(Ordering::Relaxed) || s.write_all(&chunk).is_err() {
                                        return;
                                    }
                                }
                            });
                        }
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (addr, stop)
}

fn submit(t: &Tern, to: &str, subject: &str) -> String {
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail("alice@example.test", &[to], &message(subject));
    assert_eq!(r.code, 250, "{r:?}");
    r.queue_id()
}

#[test]
fn hostile_destinations_time_out_and_stall_nobody() {
    let (silent, s1) = hostile(Hostile::Silent);
    let (trickle, s2) = hostile(Hostile::Trickle);
    let (endless, s3) = hostile(Hostile::Endless);
    let good = Peer::start(Script::default());
    let routes = [
        format!("silent.test [127.0.0.1]:{}", silent.port()),
        format!("trickle.test [127.0.0.1]:{}", trickle.port()),
        format!("endless.test [127.0.0.1]:{}", endless.port()),
        format!("good.test [127.0.0.1]:{}", good.port()),
    ];
    // One `route` line per destination (the key repeats).
    let t = Setup::new()
        .deliver()
        .set("route", &routes.join("\nroute = "))
        .set("smtp_helo_timeout", "2s")
        .set("smtp_command_timeout", "2s")
        .set("retry_initial", "1m")
        .start();
    let started = Instant::now();
    let ids: Vec<String> = ["silent", "trickle", "endless"]
        .iter()
        .map(|d| submit(&t, &format!("x@{d}.test"), d))
        .collect();
    let good_id = submit(&t, "x@good.test", "good");
    // The good destination gets its mail while the others hang.
    assert!(wait_until(10, || good.messages().len() == 1), "{}", t.log_text());
    let good_after = started.elapsed();
    assert!(
        good_after < Duration::from_secs(2),
        "good delivery waited for the hostile ones: {good_after:?}"
    );
    // Each hostile one is given up within its timeout and deferred, not bounced.
    for id in &ids {
        assert!(
            wait_until(10, || t
                .log_text()
                .lines()
                .any(|l| l.contains(id.as_str()) && l.contains("status=deferred"))),
            "{id} not deferred: {}",
            t.log_text()
        );
    }
    let all_deferred = started.elapsed();
    assert!(all_deferred < Duration::from_secs(8), "took {all_deferred:?}");
    let log = t.log_text();
    assert!(!log.contains("status=bounced"), "{log}");
    let deferred: Vec<&str> = log.lines().filter(|l| l.contains("status=deferred")).collect();
    eprintln!(
        "good delivered after {good_after:?}, all hostile deferred after {all_deferred:?}:\n{}",
        deferred.join("\n")
    );
    assert!(log.contains(&format!("{good_id}: to=<x@good.test>")));
    for s in [s1, s2, s3] {
        s.store(true, Ordering::Relaxed);
    }
}

/// A tmpfs of `size` mounted on `dir` for the life of the guard.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Deliveries to the peer wait (451) until this is set.
static PEER_OPEN: AtomicBool = AtomicBool::new(false);

#[test]
fn spool_disk_full_refuses_new_mail_and_recovers() {
    require_root!("mounting a tmpfs for the spool");
    let peer = Peer::start(Script {
        rcpt: |_| {
            if PEER_OPEN.load(Ordering::SeqCst) {
                "250 2.1.5 Ok".to_owned()
            } else {
                "451 4.3.0 not yet".to_owned()
            }
        },
        ..Script::default()
    });
    let setup = Setup::new()
        .deliver()
        .set("route", &format!("example.net [127.0.0.1]:{}", peer.port()));
    let spool_dir = setup.path().join("spool");
    let _fs = match Tmpfs::mount(&spool_dir, "2m") {
        Ok(m) => m,
        Err(e) => {
            crate::common::skip::skip(&e);
            return;
        }
    };
    let t = setup.start();
    let big = format!(
        "Subject: big\r\n\r\n{}",
        "0123456789abcdef0123456789abcdef0123456789abcdef012345678\r\n".repeat(2000)
    );
    let mut acked: Vec<String> = Vec::new();
    let mut refused = None;
    for _ in 0..40 {
        let mut c = t.connect();
        c.hello();
        let r = c.cmd("MAIL FROM:<a@example.test>");
        if r.code != 250 {
            refused = Some(r);
            break;
        }
        let r = c.cmd("RCPT TO:<x@example.net>");
        if r.code != 250 {
            refused = Some(r);
            break;
        }
        let r = c.cmd("DATA");
        if r.code != 354 {
            refused = Some(r);
            break;
        }
        c.send_raw(big.as_bytes());
        c.send_raw(b".\r\n");
        let r = c.reply();
        if r.code != 250 {
            refused = Some(r);
            break;
        }
        acked.push(r.queue_id());
    }
    let refused = refused.expect("the 2 MB spool never filled");
    assert_eq!(refused.status(), "452 4.3.1", "{refused:?}");
    assert!(!acked.is_empty());
    // Nothing queued is damaged.
    let queued = t.queued();
    for id in &acked {
        let (env, body) = t.message(id);
        assert_eq!(env.size, body.len() as u64, "{id}");
        assert!(
            body.ends_with(b"012345678\n") || body.ends_with(b"012345678\r\n"),
            "{id} truncated"
        );
    }
    assert!(queued.len() >= acked.len());
    // Space returns as the queue delivers; then new mail is accepted again.
    PEER_OPEN.store(true, Ordering::SeqCst);
    assert!(
        wait_until(20, || peer.messages().len() >= acked.len()),
        "delivered {} of {}: {}",
        peer.messages().len(),
        acked.len(),
        t.log_text()
    );
    assert!(wait_until(10, || t
        .spool()
        .list()
        .map(|l| l.is_empty())
        .unwrap_or(false)));
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail("a@example.test", &["x@example.net"], &big);
    assert_eq!(r.code, 250, "acceptance did not resume: {r:?}");
    eprintln!(
        "spool disk full: {} accepted, then {}",
        acked.len(),
        refused.text()
    );
}

#[test]
fn mailbox_disk_full_defers_not_bounces() {
    require_root!("mounting a tmpfs for the mailboxes");
    let setup = Setup::new().deliver();
    let mail_dir = setup.path().join("mail");
    let fs = match Tmpfs::mount(&mail_dir, "64k") {
        Ok(m) => m,
        Err(e) => {
            crate::common::skip::skip(&e);
            return;
        }
    };
    let t = setup.start();
    let big = format!(
        "Subject: too big for the mailbox\r\n\r\n{}",
        format!("{}\r\n", "y".repeat(70)).repeat(2000)
    );
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail("bob@example.test", &["alice@example.test"], &big);
    assert_eq!(r.code, 250, "{r:?}");
    let id = r.queue_id();
    assert!(
        wait_until(10, || t
            .log_text()
            .lines()
            .any(|l| l.contains(&id) && l.contains("status=deferred"))),
        "{}",
        t.log_text()
    );
    let log = t.log_text();
    assert!(!log.contains("status=bounced"), "{log}");
    // Still queued for a later attempt, and no bounce was queued.
    let queued = t.queued();
    assert_eq!(queued.len(), 1, "{log}");
    assert_eq!(queued[0].0.id.as_str(), id);
    drop(t);
    drop(fs);
}
