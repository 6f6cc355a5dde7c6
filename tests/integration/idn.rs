//! Internationalized domains are one domain (RFC 5890; issue 16 item 8): a
//! UTF-8 name and its `xn--` form match the same `local_domains`, `route`
//! and relay decisions, whichever form the configuration and the address use.

use crate::common::peer::{Peer, Script};
use crate::common::{wait_files, wait_until, Client, Setup, Tern};

/// MAIL with SMTPUTF8, then each RCPT; the replies' status.
fn rcpts(t: &Tern, to: &[&str]) -> (Client, Vec<String>) {
    let mut c = t.connect();
    c.hello();
    assert_eq!(
        c.cmd("MAIL FROM:<x@elsewhere.test> SMTPUTF8").status(),
        "250 2.1.0"
    );
    let got = to
        .iter()
        .map(|a| c.cmd(&format!("RCPT TO:<{a}>")).status())
        .collect();
    (c, got)
}

fn finish(c: &mut Client) {
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(b"Subject: idn\r\n\r\nhi\r\n.\r\n");
    assert_eq!(c.reply().status(), "250 2.0.0");
}

#[test]
fn utf8_local_domain_matches_its_a_label() {
    // 127.0.0.1 may not relay: only local domains are accepted from it.
    let t = Setup::new()
        .deliver()
        .set("local_domains", "example.test bücher.test")
        .set("relay_networks", "192.0.2.0/24")
        .start();
    let (mut c, got) = rcpts(
        &t,
        &[
            "alice@xn--bcher-kva.test",
            "bob@XN--BCHER-KVA.test.",
            "carol@BÜCHER.test",
            "x@xn--caf-dma.test",
            "x@bucher.test",
        ],
    );
    assert_eq!(
        got,
        ["250 2.1.5", "250 2.1.5", "250 2.1.5", "554 5.7.1", "554 5.7.1"]
    );
    finish(&mut c);
    for user in ["alice", "bob", "carol"] {
        assert_eq!(
            wait_files(&t.maildir_new(user), 1, 10).len(),
            1,
            "{user}: {}",
            t.log_text()
        );
    }
}

#[test]
fn a_label_local_domain_matches_its_utf8_form() {
    let t = Setup::new()
        .deliver()
        .set("local_domains", "example.test xn--caf-dma.test")
        .set("relay_networks", "192.0.2.0/24")
        .start();
    let (mut c, got) = rcpts(
        &t,
        &["alice@café.test", "bob@CAFÉ.Test", "x@bücher.test", "x@cafe.test"],
    );
    assert_eq!(got, ["250 2.1.5", "250 2.1.5", "554 5.7.1", "554 5.7.1"]);
    finish(&mut c);
    for user in ["alice", "bob"] {
        assert_eq!(
            wait_files(&t.maildir_new(user), 1, 10).len(),
            1,
            "{user}: {}",
            t.log_text()
        );
    }
}

#[test]
fn routes_match_either_form() {
    let script = || Script {
        smtputf8: true,
        ..Script::default()
    };
    let (utf8_route, a_label_route) = (Peer::start(script()), Peer::start(script()));
    let routes = format!(
        "bücher.example [127.0.0.1]:{}\nroute = xn--caf-dma.example [127.0.0.1]:{}",
        utf8_route.port(),
        a_label_route.port()
    );
    let t = Setup::new().deliver().set("route", &routes).start();
    // The A-label of the UTF-8 route, and the UTF-8 form of the A-label one.
    let (mut c, got) = rcpts(&t, &["x@xn--bcher-kva.example"]);
    assert_eq!(got, ["250 2.1.5"]);
    finish(&mut c);
    let (mut c, got) = rcpts(&t, &["y@Café.example"]);
    assert_eq!(got, ["250 2.1.5"]);
    finish(&mut c);
    assert!(
        wait_until(10, || utf8_route.messages().len() == 1
            && a_label_route.messages().len() == 1),
        "{}",
        t.log_text()
    );
    assert_eq!(utf8_route.messages()[0].1, ["x@xn--bcher-kva.example"]);
    assert_eq!(a_label_route.messages()[0].1, ["y@Café.example"]);
}
