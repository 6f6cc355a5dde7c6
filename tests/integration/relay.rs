//! Relay control (issue 5): every old and new trick for getting a local
//! domain to pass mail on is refused from a client outside relay_networks,
//! and from inside relay_networks accepted only where it is a real relay
//! (to a domain that is not ours). Also the directory-harvest defence and
//! what VRFY, EXPN and the greeting give away.

use std::time::{Duration, Instant};

use crate::common::{Client, Setup, Tern};

/// (RCPT address, reply from an outsider, reply from relay_networks).
/// Local domains: example.test and localhost; users alice, bob, carol.
const CASES: &[(&str, &str, &str)] = &[
    // The percent hack (RFC 5321 3.6.1 warns against it).
    ("alice%remote.test@example.test", "554 5.7.1", "550 5.1.1"),
    ("alice%remote.test@Example.TEST.", "554 5.7.1", "550 5.1.1"),
    ("postmaster%remote.test@example.test", "554 5.7.1", "550 5.1.1"),
    // A quoted local part holding a whole address.
    ("\"alice@remote.test\"@example.test", "554 5.7.1", "550 5.1.1"),
    ("\"alice\\@remote.test\"@example.test", "554 5.7.1", "550 5.1.1"),
    ("\"alice%remote.test\"@example.test", "554 5.7.1", "550 5.1.1"),
    // Two @ signs unquoted: not an address at all.
    ("alice@remote.test@example.test", "501 5.1.3", "501 5.1.3"),
    ("alice@example.test@remote.test", "501 5.1.3", "501 5.1.3"),
    // A source route through us (RFC 5321 4.1.2: the route is ignored, so
    // this is mail for remote.test).
    ("@example.test:alice@remote.test", "554 5.7.1", "250 2.1.5"),
    (
        "@example.test,@localhost:alice@remote.test",
        "554 5.7.1",
        "250 2.1.5",
    ),
    (
        "@example.test:alice%remote.test@example.test",
        "554 5.7.1",
        "550 5.1.1",
    ),
    // UUCP bang paths.
    ("remote.test!alice@example.test", "554 5.7.1", "550 5.1.1"),
    ("remote.test!alice@localhost", "554 5.7.1", "550 5.1.1"),
    // Trailing dots and mixed case on a foreign domain.
    ("alice@remote.test.", "554 5.7.1", "250 2.1.5"),
    ("alice@REMOTE.Test", "554 5.7.1", "250 2.1.5"),
    ("alice@Remote.Test.", "554 5.7.1", "250 2.1.5"),
    // ... and on ours: still local mail, accepted from anyone.
    ("ALICE@Example.TEST.", "250 2.1.5", "250 2.1.5"),
    ("alice@LOCALHOST.", "250 2.1.5", "250 2.1.5"),
    // Look-alikes of our domain are other domains.
    ("alice@example.test.remote.test", "554 5.7.1", "250 2.1.5"),
    ("alice@localhost.localdomain", "554 5.7.1", "250 2.1.5"),
    ("alice@sub.example.test", "554 5.7.1", "250 2.1.5"),
    // Address literals: never local, even ours.
    ("alice@[192.0.2.1]", "554 5.7.1", "250 2.1.5"),
    ("alice@[127.0.0.1]", "554 5.7.1", "250 2.1.5"),
    ("alice@[IPv6:2001:db8::1]", "554 5.7.1", "250 2.1.5"),
    ("alice@[IPv6:::ffff:127.0.0.1]", "554 5.7.1", "250 2.1.5"),
    ("alice@[x-tag:whatever]", "554 5.7.1", "250 2.1.5"),
    // IDN: the A-label and the U-label of a foreign domain.
    ("alice@xn--bcher-kva.test", "554 5.7.1", "250 2.1.5"),
    ("alice@bücher.test", "554 5.7.1", "250 2.1.5"),
    ("alice@BÜCHER.test.", "554 5.7.1", "250 2.1.5"),
    // U-label look-alikes of our own domain are not ours.
    ("alice@exämple.test", "554 5.7.1", "250 2.1.5"),
    ("alice@example。test", "554 5.7.1", "250 2.1.5"),
    ("alice%bücher.test@example.test", "554 5.7.1", "550 5.1.1"),
    // A UTF-8 local part at our domain is just an unknown user.
    ("älice@example.test", "550 5.1.1", "550 5.1.1"),
];

fn run_cases(t: &Tern, who: &str, column: usize) -> Vec<String> {
    let mut c: Client = t.connect();
    c.hello();
    let mut failures = Vec::new();
    for case in CASES {
        let (addr, ..) = case;
        let want = if column == 1 { case.1 } else { case.2 };
        let utf8 = if addr.is_ascii() { "" } else { " SMTPUTF8" };
        let r = c.cmd(&format!("MAIL FROM:<x@elsewhere.test>{utf8}"));
        assert_eq!(r.status(), "250 2.1.0", "{r:?}");
        let r = c.cmd(&format!("RCPT TO:<{addr}>"));
        eprintln!("{who}: RCPT TO:<{addr}> -> {}", r.lines.join(" / "));
        if r.status() != want {
            failures.push(format!("{who} {addr}: want {want}, got {:?}", r.lines));
        }
        assert_eq!(c.cmd("RSET").status(), "250 2.0.0");
    }
    failures
}

fn setup() -> Setup {
    // Keep the harvest defence out of the way of this many unknown users.
    Setup::new()
        .set("harvest_threshold", "1000")
        .set("harvest_limit", "1000")
}

#[test]
fn relay_tricks_from_an_outsider_are_refused() {
    let t = setup().set("relay_networks", "192.0.2.0/24").start();
    let failures = run_cases(&t, "outsider", 1);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn relay_tricks_from_relay_networks_only_real_relays_pass() {
    let t = setup().start();
    let failures = run_cases(&t, "relay_networks", 2);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn idn_without_smtputf8_is_refused_first() {
    let t = setup().set("relay_networks", "192.0.2.0/24").start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<x@elsewhere.test>");
    assert_eq!(c.cmd("RCPT TO:<alice@bücher.test>").status(), "553 5.6.7");
}

#[test]
fn directory_harvest_is_slowed_then_dropped() {
    let t = Setup::new()
        .set("harvest_threshold", "2")
        .set("harvest_delay", "1s")
        .set("harvest_limit", "4")
        .start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<x@elsewhere.test>");
    let timed = |c: &mut Client, rcpt: &str| {
        let start = Instant::now();
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        (r, start.elapsed())
    };
    for n in 1..=2 {
        let (r, took) = timed(&mut c, &format!("nobody{n}@example.test"));
        assert_eq!(r.status(), "550 5.1.1");
        assert!(took < Duration::from_millis(900), "{took:?}");
    }
    // Known users are never slowed.
    let (r, took) = timed(&mut c, "alice@example.test");
    assert_eq!(r.status(), "250 2.1.5");
    assert!(took < Duration::from_millis(900), "{took:?}");
    let (r, took) = timed(&mut c, "nobody3@example.test");
    assert_eq!(r.status(), "550 5.1.1");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    let r = c.cmd("RCPT TO:<nobody4@example.test>");
    assert_eq!(r.status(), "421 4.7.0");
    assert!(c.closed());
    assert!(t.wait_log("harvest: dropped unknown[127.0.0.1] after 4 unknown recipients"));
}

#[test]
fn nothing_is_given_away() {
    let t = Setup::new().set("expn", "no").start();
    let mut c = t.connect();
    // No software version in the greeting or the EHLO reply.
    let g = c.reply();
    assert_eq!(g.lines, vec!["220 mx.test ESMTP tern"]);
    let r = c.cmd("EHLO client.test");
    assert!(!r.text().contains(env!("CARGO_PKG_VERSION")), "{r:?}");
    // VRFY answers the same for a user and for nobody; EXPN is off.
    let a = c.cmd("VRFY alice");
    let b = c.cmd("VRFY nosuchuser");
    assert_eq!(a.lines, b.lines);
    assert_eq!(a.status(), "252 2.5.2");
    assert_eq!(c.cmd("EXPN team").status(), "502 5.5.1");
    assert_eq!(c.cmd("EXPN alice").status(), "502 5.5.1");
}

/// `vrfy = no`, said outright: the same 252 for a user, an alias, nobody and
/// a remote address, so VRFY tells a harvester nothing.
#[test]
fn vrfy_off_answers_252_to_everything() {
    let t = Setup::new()
        .set("vrfy", "no")
        .set("relay_networks", "192.0.2.0/24")
        .start();
    let mut c = t.connect();
    c.reply();
    for arg in ["alice", "<team@example.test>", "nosuchuser", "x@elsewhere.test"] {
        let r = c.cmd(&format!("VRFY {arg}"));
        assert_eq!(
            r.lines,
            vec!["252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery"],
            "VRFY {arg}"
        );
    }
}

/// `vrfy = yes` answers as Postfix does: what RCPT would say, 252 2.0.0 with
/// the address for one mail would be accepted for.
#[test]
fn vrfy_on_says_who_exists() {
    let t = Setup::new()
        .set("vrfy", "yes")
        .set("relay_networks", "192.0.2.0/24")
        .start();
    let mut c = t.connect();
    c.reply();
    let cases = [
        ("VRFY alice", "252 2.0.0 <alice@example.test>"),
        ("VRFY <Carol@Example.TEST>", "252 2.0.0 <Carol@Example.TEST>"),
        (
            "VRFY Team Members <team@example.test>",
            "252 2.0.0 <team@example.test>",
        ),
        ("VRFY postmaster", "252 2.0.0 <postmaster@example.test>"),
        (
            "VRFY nosuchuser",
            "550 5.1.1 <nosuchuser@example.test>: Recipient address rejected: User unknown",
        ),
        (
            "VRFY x@elsewhere.test",
            "554 5.7.1 <x@elsewhere.test>: Relay access denied",
        ),
        ("VRFY <>", "501 5.1.3 Bad recipient address syntax"),
    ];
    for (cmd, want) in cases {
        assert_eq!(c.cmd(cmd).lines, vec![want], "{cmd}");
    }
    // The refusals are policy, not protocol errors: the session goes on.
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
}

/// Unknown users asked about with VRFY count toward the harvest limits just
/// as unknown RCPTs do.
#[test]
fn vrfy_on_counts_toward_the_harvest_limit() {
    let t = Setup::new()
        .set("vrfy", "yes")
        .set("harvest_threshold", "5")
        .set("harvest_limit", "3")
        .start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("VRFY nobody1").status(), "550 5.1.1");
    assert_eq!(c.cmd("VRFY alice").status(), "252 2.0.0");
    assert_eq!(c.cmd("VRFY nobody2").status(), "550 5.1.1");
    c.cmd("MAIL FROM:<x@elsewhere.test>");
    let r = c.cmd("RCPT TO:<nobody3@example.test>");
    assert_eq!(r.status(), "421 4.7.0");
    assert!(c.closed());
    assert!(t.wait_log("harvest: dropped unknown[127.0.0.1] after 3 unknown recipients"));
}
