//! SMTP smuggling (CVE-2023-51764/51765/51766): only CRLF.CRLF ends the data,
//! so no variant can make a second message out of one.

use crate::common::{Client, Setup, Tern};

/// Send one DATA payload that hides a second transaction behind `end`, then a
/// real end of data. Returns the reply to the real end, and the next reply.
fn smuggle(t: &Tern, end: &[u8]) -> (u16, u16) {
    let mut c: Client = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<a@example.test>");
    c.cmd("RCPT TO:<alice@example.test>");
    assert_eq!(c.cmd("DATA").code, 354);
    let mut payload = b"Subject: first\r\n\r\nfirst body\r\n".to_vec();
    payload.extend_from_slice(end);
    payload.extend_from_slice(b"MAIL FROM:<evil@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n");
    payload.extend_from_slice(b".\r\n");
    c.send_raw(&payload);
    let first = c.reply().code;
    let next = c.cmd("NOOP").code;
    (first, next)
}

#[test]
fn no_variant_yields_a_second_message() {
    let variants: &[&[u8]] = &[
        b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\n.\n", b"\r.\r", b"\r\n.\r", b".\n",
    ];
    let t = Setup::new().start();
    for v in variants {
        let (first, next) = smuggle(&t, v);
        // Each variant has a bare CR or LF, so the whole message is refused,
        // and the session is still in step (NOOP is answered as a command).
        assert_eq!(first, 550, "variant {v:?}");
        assert_eq!(next, 250, "variant {v:?}");
    }
    assert!(t.queued().is_empty(), "nothing may be queued");
}

#[test]
fn bare_lf_in_body_is_refused() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail(
        "a@example.test",
        &["alice@example.test"],
        "Subject: x\r\n\r\nline one\nline two\r\n",
    );
    assert_eq!(r.status(), "550 5.6.0");
    let r = c.send_mail(
        "a@example.test",
        &["alice@example.test"],
        "Subject: x\r\n\r\nline one\rline two\r\n",
    );
    assert_eq!(r.status(), "550 5.6.0");
    assert!(t.queued().is_empty());
}

#[test]
fn the_real_terminator_after_a_dot_line() {
    // A lone "." preceded by CRLF ends the data exactly once.
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<a@example.test>");
    c.cmd("RCPT TO:<alice@example.test>");
    c.cmd("DATA");
    c.send_raw(b"Subject: x\r\n\r\n.\r\nNOOP\r\n");
    assert_eq!(c.reply().status(), "250 2.0.0");
    assert_eq!(c.reply().status(), "250 2.0.0");
    let q = t.queued();
    assert_eq!(q.len(), 1);
    assert!(q[0].1.ends_with(b"Subject: x\n\n"));
}
