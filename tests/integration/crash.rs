//! kill -9 while clients submit: every message that got 250 is in the spool,
//! intact and parseable, and nothing else is (no partial or garbage items).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{submit_until_stopped, Setup};

#[test]
fn kill9_during_concurrent_submission_loses_nothing() {
    kill9_during_concurrent_submission("syncfs");
}

#[test]
fn kill9_during_concurrent_submission_loses_nothing_with_fsync() {
    kill9_during_concurrent_submission("fsync");
}

/// With either `spool_sync`: the batch's syncfs, or each session's fsyncs.
fn kill9_during_concurrent_submission(spool_sync: &str) {
    let mut t = Setup::new()
        .set("max_sessions", "16")
        .set("spool_sync", spool_sync)
        .start();
    let acked = Arc::new(Mutex::new(Vec::new()));
    for round in 0..4 {
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..6)
            .map(|who| {
                let (addr, stop, acked) = (t.addr, Arc::clone(&stop), Arc::clone(&acked));
                std::thread::spawn(move || {
                    submit_until_stopped(addr, "alice@example.test", who, round, 5, &stop, &acked)
                })
            })
            .collect();
        // Let the clients get going, then kill at a moment that varies by round.
        std::thread::sleep(Duration::from_millis(150 + 70 * round as u64));
        t.kill9();
        stop.store(true, Ordering::Relaxed);
        for th in threads {
            th.join().unwrap();
        }
        t.restart();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 10,
        "too few messages got through to test anything: {}",
        acked.len()
    );

    // After the restart, recovery has run: tmp/ is empty, no orphaned bodies.
    let spool_dir = t.spool_dir();
    assert_eq!(
        std::fs::read_dir(spool_dir.join("tmp")).unwrap().count(),
        0,
        "tmp/ not cleaned"
    );
    let envs: Vec<String> = std::fs::read_dir(spool_dir.join("env"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let msgs = std::fs::read_dir(spool_dir.join("msg")).unwrap().count();
    assert_eq!(msgs, envs.len(), "every body has an envelope and vice versa");
    assert_eq!(std::fs::read_dir(spool_dir.join("corrupt")).unwrap().count(), 0);

    // Everything queued is whole: it parses, and its body ends with its own END line.
    let queued = t.queued();
    assert_eq!(queued.len(), envs.len());
    let mut by_id = std::collections::HashMap::new();
    for (env, body) in &queued {
        let body = String::from_utf8(body.clone()).expect("utf8 body");
        let token = body
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .expect("subject")
            .to_owned();
        assert!(
            body.ends_with(&format!("END {token}\n")),
            "truncated body for {token}"
        );
        assert_eq!(env.size, body.len() as u64);
        assert_eq!(env.recipients.len(), 1);
        by_id.insert(env.id.as_str().to_owned(), token);
    }
    // Every acknowledged message is there, under the id it was acknowledged with.
    for (token, id) in &acked {
        assert_eq!(
            by_id.get(id),
            Some(token),
            "acknowledged message {token} ({id}) lost"
        );
    }
    // Unacknowledged ones may exist only as whole messages (in flight at a kill).
    let extra = queued.len() - acked.len();
    assert!(
        extra <= 4 * 6,
        "more unacknowledged messages than clients in flight: {extra}"
    );
}

// ---- Duplicate deliveries after a crash (issue 16 item 7) -------------------

/// A scripted next hop for the crash tests: it takes every message, answers
/// each command after `latency` (a long network path), can stall one verb in
/// its first sessions, and keeps, for every session, when each transaction
/// began, when its data was accepted, and when the client moved on, and
/// which message (by its Subject) it accepted.
#[derive(Clone)]
pub(crate) struct Hop {
    pub(crate) addr: std::net::SocketAddr,
    state: Arc<Mutex<HopState>>,
}

#[derive(Clone, Copy)]
pub(crate) struct Stall {
    /// "RCPT", "DATA" (the reply to the end of the data) or "QUIT".
    pub(crate) verb: &'static str,
    pub(crate) wait: Duration,
    /// Stall in this many first sessions only.
    pub(crate) sessions: usize,
}

#[derive(Default)]
struct HopState {
    sessions: usize,
    /// (session, Subject, accepted at).
    accepted: Vec<(usize, String, std::time::Instant)>,
    /// One per transaction: (session, MAIL at, data accepted at, client moved on at).
    transactions: Vec<Txn>,
    /// The verbs seen, per session.
    seen: Vec<Vec<String>>,
}

struct Txn {
    session: usize,
    mail: std::time::Instant,
    accepted: Option<std::time::Instant>,
    done: Option<std::time::Instant>,
}

impl Hop {
    pub(crate) fn start(latency: Duration, stall: Option<Stall>) -> Hop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(HopState::default()));
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let session = {
                    let mut s = st.lock().unwrap();
                    s.sessions += 1;
                    s.seen.push(Vec::new());
                    s.sessions - 1
                };
                let st = Arc::clone(&st);
                std::thread::spawn(move || {
                    let _ = hop_session(conn, session, latency, stall, &st);
                    // However it ended (a write to a killed ternd fails), the
                    // session's transaction is over.
                    let now = std::time::Instant::now();
                    for t in st.lock().unwrap().transactions.iter_mut() {
                        if t.session == session && t.done.is_none() {
                            t.done = Some(now);
                        }
                    }
                });
            }
        });
        Hop { addr, state }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many times each message (by Subject) was accepted.
    pub(crate) fn counts(&self) -> std::collections::HashMap<String, usize> {
        let mut n = std::collections::HashMap::new();
        for (_, subject, _) in &self.state.lock().unwrap().accepted {
            *n.entry(subject.clone()).or_insert(0) += 1;
        }
        n
    }

    /// Whether some session has sent `verb`.
    pub(crate) fn saw(&self, verb: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .flatten()
            .any(|v| v == verb)
    }

    /// Transactions in flight at `at`: begun (MAIL) before it, their data
    /// not yet answered, and the connection still there.
    pub(crate) fn in_flight(&self, at: std::time::Instant) -> usize {
        self.state
            .lock()
            .unwrap()
            .transactions
            .iter()
            .filter(|t| t.mail <= at && t.accepted.is_none_or(|a| a > at) && t.done.is_none_or(|d| d > at))
            .count()
    }

    /// Acceptances of each message: (Subject, times).
    fn acceptances(&self) -> std::collections::HashMap<String, Vec<std::time::Instant>> {
        let mut m: std::collections::HashMap<String, Vec<std::time::Instant>> =
            std::collections::HashMap::new();
        for (_, s, at) in &self.state.lock().unwrap().accepted {
            m.entry(s.clone()).or_default().push(*at);
        }
        m
    }
}

fn hop_session(
    conn: std::net::TcpStream,
    session: usize,
    latency: Duration,
    stall: Option<Stall>,
    st: &Mutex<HopState>,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let mut w = conn.try_clone()?;
    // Lines are read, and stamped, as they arrive, whatever the replies'
    // latency: a transaction is in flight from when its MAIL came in.
    let (lines, arrived) = std::sync::mpsc::channel::<(std::time::Instant, String)>();
    std::thread::spawn(move || {
        let mut r = BufReader::new(conn);
        loop {
            let mut line = String::new();
            // A reset (ternd killed) ends the session as a close does.
            if r.read_line(&mut line).unwrap_or(0) == 0
                || lines.send((std::time::Instant::now(), line)).is_err()
            {
                return;
            }
        }
    });
    let mut current: Option<usize> = None;
    let end = |st: &Mutex<HopState>, current: &mut Option<usize>| {
        if let Some(i) = current.take() {
            st.lock().unwrap().transactions[i].done = Some(std::time::Instant::now());
        }
    };
    let reply = |w: &mut std::net::TcpStream, verb: &str, text: &str| -> std::io::Result<()> {
        std::thread::sleep(latency);
        if let Some(s) = stall {
            if s.verb == verb && session < s.sessions {
                std::thread::sleep(s.wait);
            }
        }
        w.write_all(format!("{text}\r\n").as_bytes())
    };
    w.write_all(b"220 hop.test ESMTP\r\n")?;
    loop {
        let Ok((at, line)) = arrived.recv() else {
            end(st, &mut current);
            return Ok(());
        };
        let upper = line.trim_end().to_ascii_uppercase();
        let verb = upper.split([' ', ':']).next().unwrap_or_default().to_owned();
        st.lock().unwrap().seen[session].push(verb.clone());
        match verb.as_str() {
            // LHLO: an LMTP client (with one recipient per transaction the
            // rest of the dialog is SMTP's).
            "EHLO" | "LHLO" => reply(&mut w, "EHLO", "250-hop.test\r\n250-PIPELINING\r\n250 8BITMIME")?,
            "MAIL" => {
                end(st, &mut current);
                let mut s = st.lock().unwrap();
                s.transactions.push(Txn {
                    session,
                    mail: at,
                    accepted: None,
                    done: None,
                });
                current = Some(s.transactions.len() - 1);
                drop(s);
                reply(&mut w, "MAIL", "250 2.1.0 Ok")?;
            }
            "RCPT" => reply(&mut w, "RCPT", "250 2.1.5 Ok")?,
            "DATA" => {
                reply(&mut w, "DATA-GO", "354 go ahead")?;
                let mut subject = String::new();
                loop {
                    let Ok((_, l)) = arrived.recv() else {
                        end(st, &mut current);
                        return Ok(());
                    };
                    if l == ".\r\n" {
                        break;
                    }
                    if subject.is_empty() {
                        if let Some(s) = l.strip_prefix("Subject: ") {
                            subject = s.trim_end().to_owned();
                        }
                    }
                }
                // Taken once the reply is on its way, as a real server's queue has it.
                reply(&mut w, "DATA", "250 2.0.0 Ok: queued")?;
                let now = std::time::Instant::now();
                let mut s = st.lock().unwrap();
                s.accepted.push((session, subject, now));
                if let Some(i) = current {
                    s.transactions[i].accepted = Some(now);
                }
            }
            "RSET" => {
                end(st, &mut current);
                reply(&mut w, "RSET", "250 2.0.0 Ok")?;
            }
            "QUIT" => {
                end(st, &mut current);
                reply(&mut w, "QUIT", "221 2.0.0 Bye")?;
                return Ok(());
            }
            _ => reply(&mut w, &verb, "502 5.5.2 no")?,
        }
    }
}

/// Submit one message (Subject `subject`) to `rcpts` through `t`.
fn submit_one(t: &crate::common::Tern, rcpts: &[&str], subject: &str) {
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail(
        "sender@example.test",
        rcpts,
        &format!("Subject: {subject}\r\n\r\nbody\r\n"),
    );
    assert_eq!(r.code, 250, "{r:?}");
}

/// A crash while the next domain's server is slow: the first domain's
/// delivery was answered and must already be recorded, so it is not made
/// again after the restart.
#[test]
fn a_delivery_answered_before_a_crash_is_not_repeated() {
    let fast = Hop::start(Duration::ZERO, None);
    let slow = Hop::start(
        Duration::ZERO,
        Some(Stall {
            verb: "RCPT",
            wait: Duration::from_secs(30),
            sessions: 1,
        }),
    );
    let mut t = Setup::new()
        .deliver()
        .set(
            "route",
            &format!(
                "fast.test [127.0.0.1]:{}\nroute = slow.test [127.0.0.1]:{}",
                fast.port(),
                slow.port()
            ),
        )
        .start();
    submit_one(&t, &["a@fast.test", "b@slow.test"], "two-domains");
    // fast.test has answered; slow.test is stuck before its RCPT reply.
    assert!(
        crate::common::wait_until(10, || slow.saw("RCPT")),
        "{}",
        t.log_text()
    );
    assert_eq!(fast.counts().get("two-domains"), Some(&1));
    t.restart();
    assert!(
        crate::common::wait_until(15, || slow.counts().get("two-domains") == Some(&1)),
        "{}",
        t.log_text()
    );
    assert!(crate::common::wait_until(5, || t.queued().is_empty()));
    assert_eq!(
        fast.counts().get("two-domains"),
        Some(&1),
        "delivered again after the crash"
    );
}

/// A crash while the server takes its time to answer QUIT: the message was
/// taken (250) and must already be recorded.
#[test]
fn a_slow_quit_does_not_hold_the_record_back() {
    slow_quit_then_crash("slowquit.test [127.0.0.1]", "a@slowquit.test", "EHLO");
}

/// The same over LMTP (a `route` to an LMTP server): the recipient's reply
/// after the data is recorded before the QUIT.
#[test]
fn a_slow_lmtp_quit_does_not_hold_the_record_back() {
    slow_quit_then_crash("store.test lmtp:[127.0.0.1]", "a@store.test", "LHLO");
}

/// Relay to `rcpt` by `route` (the hop's port appended) to a hop that
/// stalls before answering QUIT, kill ternd then, and check that nothing
/// was delivered twice; `hello` is the greeting verb the hop must have seen.
fn slow_quit_then_crash(route: &str, rcpt: &str, hello: &str) {
    let hop = Hop::start(
        Duration::ZERO,
        Some(Stall {
            verb: "QUIT",
            wait: Duration::from_secs(30),
            sessions: 1,
        }),
    );
    let mut t = Setup::new()
        .deliver()
        .set("route", &format!("{route}:{}", hop.port()))
        .set("smtp_connection_cache_time", "0")
        .start();
    submit_one(&t, &[rcpt], "slow-quit");
    assert!(
        crate::common::wait_until(10, || hop.saw("QUIT")),
        "{}",
        t.log_text()
    );
    t.restart();
    // Give a repeat every chance to happen: a later message goes out behind it.
    submit_one(&t, &[rcpt], "after-restart");
    assert!(
        crate::common::wait_until(15, || hop.counts().get("after-restart") == Some(&1)),
        "{}",
        t.log_text()
    );
    assert!(crate::common::wait_until(5, || t.queued().is_empty()));
    assert!(hop.saw(hello), "greeted with {hello}");
    assert_eq!(
        hop.counts().get("slow-quit"),
        Some(&1),
        "delivered again after the crash"
    );
}

/// The figures for issue 16 item 7: `kill -9` ternd 20 times (CRASH_KILLS)
/// while it relays to two scripted next hops 20 ms away, messages to one or
/// both, and count the messages a hop was given twice, per kill, against the
/// transactions in flight at the kill (MAIL sent, the data not yet
/// answered). Not part of `make test`: run it with `make crash-duplicates`
/// (tests/bench/README.md).
#[test]
#[ignore = "a measurement: make crash-duplicates"]
fn crash_duplicates_over_many_kills() {
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let latency = Duration::from_millis(20);
    let hops = [Hop::start(latency, None), Hop::start(latency, None)];
    let mut t = Setup::new()
        .deliver()
        .set("max_sessions", "32")
        .set("retry_initial", "1s")
        .set(
            "route",
            &format!(
                "one.test [127.0.0.1]:{}\nroute = two.test [127.0.0.1]:{}",
                hops[0].port(),
                hops[1].port()
            ),
        )
        .start();
    let mut kill_times = Vec::new();
    let mut in_flight = Vec::new();
    let sent = Arc::new(Mutex::new(0usize));
    for round in 0..kills {
        let stop = Arc::new(AtomicBool::new(false));
        // Two clients, each a message every 25 ms: about what the relay
        // keeps up with, so each kill meets deliveries under way rather
        // than a backlog.
        let threads: Vec<_> = (0..2)
            .map(|who| {
                let (addr, stop, sent) = (t.addr, Arc::clone(&stop), Arc::clone(&sent));
                std::thread::spawn(move || relay_load(addr, who, round, &stop, &sent))
            })
            .collect();
        // A kill at a moment that varies from round to round.
        std::thread::sleep(Duration::from_millis(700 + (round as u64 * 137) % 600));
        t.kill9();
        let at = std::time::Instant::now();
        kill_times.push(at);
        in_flight.push(hops.iter().map(|h| h.in_flight(at)).sum::<usize>());
        stop.store(true, Ordering::Relaxed);
        for th in threads {
            // A client cut off in the middle of a reply may have given up loudly.
            let _ = th.join();
        }
        t.restart();
    }
    // Let the last restart deliver what is left.
    assert!(
        crate::common::wait_until(300, || t.queued().is_empty()),
        "queue not empty after 5 minutes"
    );
    // Each duplicate is charged to the kill whose restart made it: the last
    // kill before its second delivery. Its first delivery was answered either
    // before that kill (ternd had the answer but had not recorded it: the
    // window this issue narrows) or after it (the answer went to a dead
    // process: a delivery in flight, which no MTA can avoid repeating).
    let mut per_kill = vec![0usize; kills];
    let mut heard_per_kill = vec![0usize; kills];
    let (mut total, mut delivered, mut heard) = (0, 0, Vec::new());
    for h in &hops {
        for times in h.acceptances().values() {
            delivered += 1;
            let mut times = times.clone();
            times.sort();
            let Some(&first) = times.first() else { continue };
            for again in times.iter().skip(1) {
                total += 1;
                if let Some(k) = kill_times.iter().rposition(|k| k < again) {
                    per_kill[k] += 1;
                    if first < kill_times[k] {
                        heard_per_kill[k] += 1;
                        heard.push(kill_times[k].duration_since(first));
                    }
                }
            }
        }
    }
    heard.sort();
    eprintln!(
        "crash duplicates: {kills} kills, {} messages submitted, {delivered} deliveries to the hops",
        sent.lock().unwrap()
    );
    eprintln!("kill  in-flight  duplicates  of which answered before the kill");
    for k in 0..kills {
        eprintln!(
            "{:>4}  {:>9}  {:>10}  {:>33}",
            k + 1,
            in_flight[k],
            per_kill[k],
            heard_per_kill[k]
        );
    }
    let flight: usize = in_flight.iter().sum();
    eprintln!(
        "total: {total} duplicates over {kills} kills ({:.2} per kill), {flight} transactions in flight at the kills ({:.2} per kill)",
        total as f64 / kills as f64,
        flight as f64 / kills as f64
    );
    eprintln!(
        "of which {} had been answered before the kill (by {:?} at most), the others after it",
        heard.len(),
        heard.last().copied().unwrap_or_default()
    );
}

/// Submit messages to one.test, two.test or both until `stop` or the
/// server goes away.
fn relay_load(addr: std::net::SocketAddr, who: usize, round: usize, stop: &AtomicBool, sent: &Mutex<usize>) {
    use std::io::Write;
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut c) = crate::common::Client::try_connect(addr) else {
            return;
        };
        // Writes fail once the server is killed: that ends this client.
        let say = |c: &mut crate::common::Client, text: &str| c.stream.write_all(text.as_bytes()).is_ok();
        if c.try_reply().is_none() || !say(&mut c, "EHLO load.test\r\n") || c.try_reply().is_none() {
            return;
        }
        for _ in 0..10 {
            n += 1;
            let token = format!("r{round}-c{who}-m{n}");
            let rcpts: &[&str] = match n % 3 {
                0 => &["x@one.test"],
                1 => &["x@two.test"],
                _ => &["x@one.test", "y@two.test"],
            };
            let mut cmds = "MAIL FROM:<load@example.test>\r\n".to_owned();
            for r in rcpts {
                cmds.push_str(&format!("RCPT TO:<{r}>\r\n"));
            }
            cmds.push_str("DATA\r\n");
            if !say(&mut c, &cmds)
                || !(0..rcpts.len() + 2).all(|_| c.try_reply().is_some_and(|r| r.code < 400))
            {
                return;
            }
            if !say(&mut c, &format!("Subject: {token}\r\n\r\nbody\r\n.\r\n")) {
                return;
            }
            match c.try_reply() {
                Some(r) if r.code == 250 => *sent.lock().unwrap() += 1,
                _ => return,
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = say(&mut c, "QUIT\r\n");
    }
}

/// A crash that loses the rename of an accepted message's envelope (a power
/// loss before env/ reaches the disk; here kill -9, then env/ID removed by
/// hand) leaves its body with the seal: the restarted ternd queues it again
/// from the seal, whole and with the envelope it was accepted with.
#[test]
fn an_envelope_lost_in_a_crash_is_rebuilt_from_the_seal() {
    let mut t = Setup::new().start();
    submit_one(&t, &["a@example.net", "b@example.net"], "lost-rename");
    let queued = t.queued();
    let [(env, body)] = queued.as_slice() else {
        panic!("one message queued: {queued:?}");
    };
    t.kill9();
    std::fs::remove_file(t.spool_dir().join("env").join(env.id.as_str())).unwrap();
    t.restart();
    assert!(
        t.wait_log(&format!("{}: envelope lost in a crash, queued again", env.id)),
        "{}",
        t.log_text()
    );
    // The start-up summary counts it.
    assert!(t.wait_log("queued 1 again from their seal"), "{}", t.log_text());
    let again = t.queued();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].0, *env);
    assert_eq!(again[0].1, *body);
    assert!(String::from_utf8_lossy(body).ends_with("Subject: lost-rename\n\nbody\n"));
    // Rebuilt before a root ternd drops to its user, yet the user's: else the
    // runner could not read it.
    use std::os::unix::fs::MetadataExt;
    let owner = |sub: &str| {
        std::fs::metadata(t.spool_dir().join(sub).join(env.id.as_str()))
            .unwrap()
            .uid()
    };
    assert_eq!(owner("env"), owner("msg"));
}
