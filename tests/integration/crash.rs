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
