//! AUTH brute force across sessions (issue 16 item 6): failures are
//! remembered per address and per account; an address past the limit is
//! refused AUTH before any password check, and an account under attack is
//! checked at most once per window/limit, from any address.

use std::net::Ipv4Addr;

use crate::common::{connect_from, Client, Setup, Tern, TlsClient};

/// A submission session from `src`, inside TLS, after EHLO.
fn session_from(t: &Tern, src: Ipv4Addr) -> TlsClient {
    let stream = connect_from(src, t.submission_addr()).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut c = Client::from_stream(stream);
    c.hello();
    let mut s = c.starttls(&t.setup.ca_pem());
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    s
}

fn attempt(t: &Tern, src: Ipv4Addr, user: &str, pass: &str) -> (String, bool) {
    let mut s = session_from(t, src);
    let r = s.auth_plain(user, pass);
    let closed = r.code == 421 && s.closed();
    (r.status(), closed)
}

fn guarded() -> Tern {
    Setup::new()
        .submission()
        .set("auth_failure_limit", "3")
        .set("auth_failure_window", "1m")
        .start()
}

#[test]
fn an_address_that_failed_too_often_is_refused_before_any_check() {
    let t = guarded();
    let guesser = Ipv4Addr::new(127, 0, 0, 1);
    for pass in ["guess1", "guess2", "guess3"] {
        assert_eq!(attempt(&t, guesser, "alice", pass).0, "535 5.7.8");
    }
    // Even the right password: refused unchecked, and the session closed.
    assert_eq!(
        attempt(&t, guesser, "alice", "secret"),
        ("421 4.7.0".to_owned(), true)
    );
    assert_eq!(
        attempt(&t, guesser, "bob", "hunter2"),
        ("421 4.7.0".to_owned(), true)
    );
    assert!(t.wait_log(
        "auth refused from unknown[127.0.0.1]: too many failures from this address (3 in 60s), for "
    ));
    // Another address is not affected.
    assert_eq!(
        attempt(&t, Ipv4Addr::new(127, 0, 0, 2), "bob", "hunter2").0,
        "235 2.7.0"
    );
}

#[test]
fn an_account_under_attack_is_slowed_for_every_address() {
    let t = guarded();
    // One guess each from three addresses: no address is over the limit,
    // the account is.
    for host in 3..=5 {
        assert_eq!(
            attempt(&t, Ipv4Addr::new(127, 0, 0, host), "alice", "guess").0,
            "535 5.7.8"
        );
    }
    // One check per window/limit (20 s) from anywhere: this one takes the turn...
    assert_eq!(
        attempt(&t, Ipv4Addr::new(127, 0, 0, 6), "alice", "secret").0,
        "235 2.7.0"
    );
    // ...and the next is refused unchecked, right password or not.
    assert_eq!(
        attempt(&t, Ipv4Addr::new(127, 0, 0, 7), "alice", "secret").0,
        "454 4.7.0"
    );
    assert_eq!(
        attempt(&t, Ipv4Addr::new(127, 0, 0, 8), "alice", "guess").0,
        "454 4.7.0"
    );
    assert!(t.wait_log("auth refused from unknown[127.0.0.8]: account <alice> under attack, next check in "));
    // Other accounts are not slowed.
    assert_eq!(
        attempt(&t, Ipv4Addr::new(127, 0, 0, 9), "bob", "hunter2").0,
        "235 2.7.0"
    );
}
