//! mailauth-cost: the CPU one message costs in src/mailauth/: DKIM signing
//! of a 4 KiB message with RSA-2048 and with Ed25519, and checking one
//! (DKIM verification of its signature, SPF and DMARC) with the DNS answers
//! already cached, as they are for a busy sender.
//!
//! ```text
//! mailauth-cost [ROUNDS]        (default 500)
//! ```
//!
//! Single-threaded; prints the CPU time per message (this thread's, so
//! other load on the machine does not count) and the wall time.
//! Keys come from the openssl CLI; DNS answers from the unit tests' loopback
//! server (src/mailauth/testdns.rs), asked once and then cached.

#[path = "../../src/mailauth/testdns.rs"]
#[allow(dead_code)]
mod testdns;
#[path = "../../src/mailauth/testkeys.rs"]
#[allow(dead_code)]
mod testkeys;
#[path = "../../src/testnet.rs"]
mod testnet;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tern::mailauth::results::Outcome;
use tern::mailauth::{Checker, Key, KeyKind, Signers};

/// (key, DNS record) made by openssl.
fn key(kind: KeyKind) -> (Key, String) {
    let (pem, public) = testkeys::openssl_key(kind == KeyKind::Ed25519, false);
    let key = Key::from_pem(pem.as_bytes(), Some(kind)).expect("key");
    (key, format!("v=DKIM1; k={}; p={public}", kind.as_str()))
}

/// A 4 KiB message in tern's stored form.
fn message() -> String {
    let mut m = String::from(
        "From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: the cost of DKIM\n\
         Date: Thu, 04 Dec 2026 10:00:00 +0000\nMessage-ID: <bench@example.org>\n\
         MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n",
    );
    let line = "The quick brown fox jumps over the lazy dog, then signs the result.\n";
    while m.len() + line.len() <= 4096 {
        m.push_str(line);
    }
    m
}

/// This thread's CPU time so far (Linux: /proc/thread-self/schedstat, in
/// ns), so that other load on the machine does not count; wall time where
/// it is missing.
fn cpu_now() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(s.split_whitespace().next()?.parse().ok()?))
}

/// (CPU, wall) time per call of `f`.
fn per_message(rounds: u32, mut f: impl FnMut()) -> (Duration, Duration) {
    f(); // warm up (and fill the caches)
    let (c, t) = (cpu_now(), Instant::now());
    for _ in 0..rounds {
        f();
    }
    let wall = t.elapsed() / rounds;
    let cpu = match (c, cpu_now()) {
        (Some(a), Some(b)) => (b - a) / rounds,
        _ => wall,
    };
    (cpu, wall)
}

fn main() -> ExitCode {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let (rsa, rsa_rec) = key(KeyKind::Rsa);
    let (ed, ed_rec) = key(KeyKind::Ed25519);
    let msg = message();
    println!("message: {} bytes, {rounds} rounds each", msg.len());

    let zone = testdns::Zone::new()
        .txt("rsa._domainkey.example.org", &rsa_rec)
        .txt("ed._domainkey.example.org", &ed_rec)
        .txt("example.org", "v=spf1 ip4:192.0.2.1 -all")
        .txt("_dmarc.example.org", "v=DMARC1; p=reject");
    let dns = testdns::TestDns::start(zone);
    let checker = Checker::new(
        "mx.bench.example",
        &[dns.addr],
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
    .expect("checker");

    for (name, sel, key) in [("RSA-2048", "rsa", rsa), ("Ed25519", "ed", ed)] {
        let mut s = Signers::default();
        s.add("example.org", sel, key);
        let sign = per_message(rounds, || {
            s.sign(msg.as_bytes()).expect("sign").expect("signed");
        });
        let signed = s.sign(msg.as_bytes()).expect("sign").expect("signed");
        let stored = format!("{}{msg}", signed.fields);
        let mut ok = true;
        let check = per_message(rounds, || {
            let spf = checker.spf(
                "192.0.2.1".parse().expect("ip"),
                "mail.example.org",
                Some("alice@example.org"),
            );
            let r = checker.message(&spf, stored.as_bytes());
            ok &= r.dkim.first().map(|d| d.result) == Some(Outcome::Pass) && r.dmarc.result == Outcome::Pass;
        });
        if !ok {
            eprintln!("mailauth-cost: {name}: the check did not pass");
            return ExitCode::FAILURE;
        }
        println!(
            "{name:9} sign {:7.1} us CPU/message ({:.1} wall)   check (DKIM+SPF+DMARC, cached DNS) {:7.1} us CPU/message ({:.1} wall)",
            sign.0.as_secs_f64() * 1e6,
            sign.1.as_secs_f64() * 1e6,
            check.0.as_secs_f64() * 1e6,
            check.1.as_secs_f64() * 1e6
        );
    }
    println!("DNS queries for all of it: {}", dns.queries());
    ExitCode::SUCCESS
}
