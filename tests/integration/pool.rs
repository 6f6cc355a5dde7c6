//! The session pool: a full pool answers 421 at once, never hangs; so does an
//! address over its share.

use std::time::{Duration, Instant};

use crate::common::Setup;

#[test]
fn full_pool_answers_421_at_once() {
    let t = Setup::new()
        .set("max_sessions", "2")
        .set("max_sessions_per_ip", "10")
        .start();
    let mut a = t.connect();
    let mut b = t.connect();
    assert_eq!(a.reply().code, 220);
    assert_eq!(b.reply().code, 220);
    let start = Instant::now();
    let mut c = t.connect();
    let r = c.reply();
    assert_eq!(r.status(), "421 4.3.2", "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(c.closed());
    // A slot frees when a session ends, and the next client is served.
    assert_eq!(a.cmd("QUIT").code, 221);
    assert!(a.closed());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = t.connect();
        let r = d.reply();
        if r.code == 220 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.cmd("NOOP").code, 250);
    assert!(t.wait_log("reject: connect from unknown[127.0.0.1]: 421 4.3.2"));
}

#[test]
fn per_ip_limit() {
    let t = Setup::new()
        .set("max_sessions", "10")
        .set("max_sessions_per_ip", "1")
        .start();
    let mut a = t.connect();
    assert_eq!(a.reply().code, 220);
    let mut b = t.connect();
    assert_eq!(b.reply().status(), "421 4.7.0");
    assert!(b.closed());
}
