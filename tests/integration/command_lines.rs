//! A command line ends at CRLF and nowhere else (RFC 5321 2.3.8, 4.1.1;
//! issue 16 item 1): a lone LF or CR makes the whole line one bad line,
//! answered `550 5.5.2` once, nothing of it executed, and the session
//! closed; on TCP, in the AUTH exchange, under `ternd -i` and `sendmail -bs`.

use crate::common::{b64, Client, Setup, Tern};

/// Everything the server says to `input` sent in one write after EHLO,
/// until it closes.
fn after_ehlo(t: &Tern, input: &[u8]) -> String {
    let mut c: Client = t.connect();
    c.hello();
    c.send_raw(input);
    let all = c.read_to_close().expect("the server closes the session");
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn a_bare_lf_line_is_one_error_and_the_session_ends() {
    let t = Setup::new().start();
    // The vector: an address with an LF in it smuggles a RCPT.
    let out = after_ehlo(
        &t,
        b"MAIL FROM:<carol@example.org>\nRCPT TO:<bob@example.test>\r\n",
    );
    assert_eq!(out, "550 5.5.2 Error: bare <LF> received\r\n");
    // Before EHLO's reply: nothing after the LF runs either.
    let mut c = t.connect();
    assert_eq!(c.reply().code, 220);
    c.send_raw(b"EHLO a\nMAIL FROM:<x@y.test>\r\n");
    let out = String::from_utf8_lossy(&c.read_to_close().expect("closed")).into_owned();
    assert_eq!(out, "550 5.5.2 Error: bare <LF> received\r\n");
    // A client that ends its lines with LF only is answered at once, not left waiting.
    let started = std::time::Instant::now();
    let out = after_ehlo(&t, b"NOOP\n");
    assert_eq!(out, "550 5.5.2 Error: bare <LF> received\r\n");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(t.wait_log("reject: line from unknown[127.0.0.1]: 550 5.5.2 Error: bare <LF> received"));
    assert!(t.queued().is_empty());
}

#[test]
fn a_bare_cr_line_is_one_error_and_the_session_ends() {
    let t = Setup::new().start();
    let out = after_ehlo(&t, b"NOOP\rRSET\r\n");
    assert_eq!(out, "550 5.5.2 Error: bare <CR> received\r\n");
    let out = after_ehlo(
        &t,
        b"MAIL FROM:<a@example.test>\rRCPT TO:<alice@example.test>\r\n",
    );
    assert_eq!(out, "550 5.5.2 Error: bare <CR> received\r\n");
    // Clean lines before it in the same write are still answered, in order.
    let out = after_ehlo(
        &t,
        b"NOOP\r\nMAIL FROM:<a@example.test>\nRCPT TO:<alice@example.test>\r\n",
    );
    assert_eq!(out, "250 2.0.0 Ok\r\n550 5.5.2 Error: bare <LF> received\r\n");
    assert!(t.wait_log("disconnect from unknown[127.0.0.1] commands=2 errors=1"));
}

#[test]
fn auth_lines_end_at_crlf_too() {
    let t = Setup::new().submission().start();
    let ca = t.setup.ca_pem();
    // The command line itself.
    let mut c = Client::connect(t.submission_addr());
    c.hello();
    let mut s = c.starttls(&ca);
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    s.send_raw(b"AUTH PLAIN\nNOOP\r\n");
    let r = s.reply();
    assert_eq!(r.text(), "550 5.5.2 Error: bare <LF> received");
    assert!(s.closed());
    // A continuation line: the user name line carries a second line.
    let mut c = Client::connect(t.submission_addr());
    c.hello();
    let mut s = c.starttls(&ca);
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    assert_eq!(s.cmd("AUTH LOGIN").code, 334);
    s.send_raw(format!("{}\nNOOP\r\n", b64(b"alice")).as_bytes());
    let r = s.reply();
    assert_eq!(r.text(), "550 5.5.2 Error: bare <LF> received");
    assert!(s.closed());
    assert!(t.wait_log("reject: AUTH from unknown[127.0.0.1]: 550 5.5.2"));
}

const INJECTED: &[u8] =
    b"EHLO local.test\r\nMAIL FROM:<carol@example.org>\nRCPT TO:<bob@example.test>\r\nQUIT\r\n";

/// What follows the EHLO reply.
fn after_ehlo_reply(out: &str) -> &str {
    let end = out.find("\r\n250 ").expect("EHLO reply");
    let rest = &out[end + 2..];
    &rest[rest.find("\r\n").expect("line end") + 2..]
}

#[test]
fn inetd_and_sendmail_bs_sessions_too() {
    let setup = Setup::new();
    let (out, _) = crate::inetd::run_inetd(&setup, INJECTED, &[]);
    assert_eq!(
        after_ehlo_reply(&out),
        "550 5.5.2 Error: bare <LF> received\r\n",
        "{out}"
    );
    // sendmail -bs drops into a running daemon's maildrop.
    let t = Setup::new().start();
    let out = t.setup.sendmail(&["-bs"], INJECTED);
    assert_eq!(
        after_ehlo_reply(&out.stdout),
        "550 5.5.2 Error: bare <LF> received\r\n",
        "{out:?}"
    );
}
