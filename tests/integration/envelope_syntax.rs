//! MAIL FROM and RCPT TO need their angle brackets (RFC 5321 4.1.2; issue
//! 16 item 2), unless `strict_rfc821_envelopes = no` asks for the old
//! leniency.

use crate::common::Setup;

#[test]
fn bare_addresses_are_refused_by_default() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    let r = c.cmd("MAIL FROM:alice@example.test");
    assert_eq!(r.text(), "501 5.5.4 Syntax: MAIL FROM:<address>");
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").status(), "250 2.1.0");
    let r = c.cmd("RCPT TO:bob@example.test");
    assert_eq!(r.text(), "501 5.5.4 Syntax: RCPT TO:<address>");
    assert_eq!(c.cmd("RCPT TO:postmaster").status(), "501 5.5.4");
    // Nothing was recorded: DATA still needs a recipient.
    assert_eq!(c.cmd("DATA").status(), "503 5.5.1");
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").status(), "250 2.1.5");
    assert!(t.wait_log("reject: MAIL from unknown[127.0.0.1]: 501 5.5.4 Syntax: MAIL FROM:<address>"));
}

#[test]
fn the_key_restores_leniency() {
    let t = Setup::new().set("strict_rfc821_envelopes", "no").start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(
        c.cmd("MAIL FROM:alice@example.test SIZE=100").status(),
        "250 2.1.0"
    );
    assert_eq!(c.cmd("RCPT TO:bob@example.test").status(), "250 2.1.5");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(b"Subject: old client\r\n\r\nhi\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.status(), "250 2.0.0", "{r:?}");
    let (env, _) = t.message(&r.queue_id());
    assert_eq!(env.sender, "alice@example.test");
    assert_eq!(env.recipients[0].addr, "bob@example.test");
}
