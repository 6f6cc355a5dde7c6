//! The spool seen from outside: 250 means committed, ids are unique across
//! restarts, and start-up removes leftovers of a crash.

use std::collections::HashSet;

use crate::common::{message, Setup};

#[test]
fn queue_ids_are_unique_across_restarts() {
    let mut t = Setup::new().start();
    let mut ids = HashSet::new();
    for _ in 0..3 {
        let mut c = t.connect();
        c.hello();
        for i in 0..20 {
            let r = c.send_mail(
                "a@example.test",
                &["alice@example.test"],
                &message(&format!("m{i}")),
            );
            assert_eq!(r.status(), "250 2.0.0");
            assert!(ids.insert(r.queue_id()), "duplicate id {}", r.queue_id());
        }
        t.restart();
    }
    assert_eq!(t.queued().len(), 60);
}

#[test]
fn startup_cleans_tmp_and_orphans() {
    let mut t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail("a@example.test", &["alice@example.test"], &message("keep"));
    let keep = r.queue_id();
    drop(c);
    t.kill9();
    let spool = t.spool_dir();
    std::fs::write(spool.join("tmp/0000000000000AAAA.msg"), "half a mess").unwrap();
    std::fs::write(spool.join("msg/00000000000BBBBB"), "body without envelope").unwrap();
    t.restart();
    assert_eq!(std::fs::read_dir(spool.join("tmp")).unwrap().count(), 0);
    assert!(!spool.join("msg/00000000000BBBBB").exists());
    let q = t.queued();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].0.id.as_str(), keep);
}

#[test]
fn spool_write_failure_gives_4xx_and_queues_nothing() {
    // Running as root ignores permissions, so break the spool another way:
    // replace msg/ with a file so the body cannot be linked into it.
    let t = Setup::new().start();
    let msg = t.spool_dir().join("msg");
    std::fs::remove_dir(&msg).unwrap();
    std::fs::write(&msg, "not a directory").unwrap();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<a@example.test>");
    c.cmd("RCPT TO:<alice@example.test>");
    // The failure may show at DATA (no id can be reserved) or after the data.
    let mut r = c.cmd("DATA");
    if r.code == 354 {
        c.send_raw(message("fails").as_bytes());
        r = c.cmd(".");
    }
    assert_eq!(r.status(), "451 4.3.0");
    assert_eq!(std::fs::read_dir(t.spool_dir().join("env")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(t.spool_dir().join("tmp")).unwrap().count(), 0);
    // The session goes on.
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
}
