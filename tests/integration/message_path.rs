//! The message path (issue 16 items 3 and 9): NUL refused on every way in and
//! never sent on; the header fields that must not travel dropped on the way
//! into the queue, from SMTP and from sendmail alike.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use crate::common::{message, wait_files, Setup, Tern, SENDMAIL, TERND};

/// DATA holding `CRLF NUL . CRLF` (what a NUL-dropping next hop would read as
/// the end of data), then the real end.
const NUL_DATA: &[u8] = b"Subject: nul\r\n\r\nfirst\r\n\x00.\r\nMAIL FROM:<evil@example.test>\r\n.\r\n";

/// A raw dialog over stdin/stdout of `prog args` (ternd -i, sendmail -bs).
fn pipe_dialog(prog: &str, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new(prog)
        .args(args)
        .env_remove("TERN_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.wait().unwrap();
    out
}

fn queued_count(setup: &Setup) -> usize {
    let spool = tern::spool::Spool::open(&setup.path().join("spool")).unwrap();
    spool.list().unwrap().len()
        + std::fs::read_dir(setup.path().join("spool/maildrop")).map_or(0, |d| d.count())
}

/// Before: `354`, then `250 2.0.0 Ok: queued as ...` (the NUL stored and
/// relayed byte for byte). After: `550 5.6.0` once the real end of data is
/// read, the session still in step, nothing queued: on the smtp listener,
/// submission, smtps, `ternd -i` and `sendmail -bs`.
#[test]
fn nul_in_data_is_refused_on_every_listener() {
    let t = Setup::new().submission().start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<a@example.test>");
    c.cmd("RCPT TO:<alice@example.test>");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(NUL_DATA);
    assert_eq!(c.reply().status(), "550 5.6.0");
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
    // BDAT too: the whole message is refused at LAST.
    c.cmd("MAIL FROM:<a@example.test>");
    c.cmd("RCPT TO:<alice@example.test>");
    c.send_raw(b"BDAT 5\r\nab\x00\r\n");
    assert_eq!(c.reply().status(), "250 2.0.0");
    c.send_raw(b"BDAT 4 LAST\r\nxy\r\n");
    assert_eq!(c.reply().status(), "550 5.6.0");
    // Submission, after STARTTLS and AUTH.
    let mut c = crate::common::Client::connect(t.submission_addr());
    c.hello();
    let mut s = c.starttls(&t.setup.ca_pem());
    s.cmd("EHLO client.test");
    assert_eq!(s.auth_plain("alice", "secret").status(), "235 2.7.0");
    assert_eq!(s.cmd("MAIL FROM:<alice@example.test>").code, 250);
    assert_eq!(s.cmd("RCPT TO:<bob@example.test>").code, 250);
    assert_eq!(s.cmd("DATA").code, 354);
    s.send_raw(NUL_DATA);
    assert_eq!(s.reply().status(), "550 5.6.0");
    // smtps.
    let mut s = crate::common::TlsClient::connect(t.smtps_addr(), &t.setup.ca_pem());
    assert_eq!(s.reply().code, 220);
    s.cmd("EHLO client.test");
    assert_eq!(s.auth_plain("alice", "secret").status(), "235 2.7.0");
    s.cmd("MAIL FROM:<alice@example.test>");
    s.cmd("RCPT TO:<bob@example.test>");
    assert_eq!(s.cmd("DATA").code, 354);
    s.send_raw(NUL_DATA);
    assert_eq!(s.reply().status(), "550 5.6.0");
    assert!(t.queued().is_empty(), "nothing may be queued");

    // ternd -i and sendmail -bs: the same session over a pipe.
    let setup = Setup::new();
    let conf = setup.write_config();
    let mut input =
        b"EHLO pipe.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n".to_vec();
    input.extend_from_slice(NUL_DATA);
    input.extend_from_slice(b"QUIT\r\n");
    let conf = conf.to_str().unwrap();
    for (prog, args) in [(TERND, ["-i", "-f", conf]), (SENDMAIL, ["-bs", "-C", conf])] {
        let out = pipe_dialog(prog, &args, &input);
        assert!(out.contains("\r\n550 5.6.0 "), "{prog}: {out}");
        assert!(!out.contains("queued as"), "{prog}: {out}");
        assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{prog}: {out}");
    }
    assert_eq!(queued_count(&setup), 0);
}

/// Before: sendmail queued a message with a NUL and exited 0. After: exit 65
/// (EX_DATAERR) with a message naming the NUL, nothing dropped.
#[test]
fn sendmail_refuses_nul() {
    let setup = Setup::new();
    let out = setup.sendmail(&["alice@example.test"], b"Subject: x\n\nbad \x00 byte\n");
    assert_eq!(out.code, 65, "{out:?}");
    assert!(out.stderr.contains("NUL"), "{}", out.stderr);
    assert_eq!(queued_count(&setup), 0);
}

/// The fields that must not travel, as issue 16 item 9 found them delivered.
const LEAKY: &str = "Return-Path: <forged@evil.test>\r\nFrom: a@example.test\r\nBcc: hidden@x.test\r\nResent-Bcc: also-hidden@x.test\r\nContent-Length: 12345\r\nSubject: leaks\r\n\r\nReturn-Path: in the body stays\r\n";

fn assert_clean(text: &str, own_return_path: bool) {
    let head = text.split("\n\n").next().unwrap_or_default();
    let head = head.to_ascii_lowercase();
    let want_rp = usize::from(own_return_path);
    assert_eq!(head.matches("return-path:").count(), want_rp, "{text}");
    assert!(!head.contains("forged@evil.test"), "{text}");
    assert!(
        !head.contains("bcc:") && !head.contains("hidden@x.test"),
        "{text}"
    );
    assert!(!head.contains("content-length:"), "{text}");
    assert!(text.contains("Subject: leaks"), "{text}");
    assert!(text.contains("Return-Path: in the body stays"), "{text}");
}

/// Before: delivered with the forged Return-Path (under tern's own) and the
/// Bcc: intact. After: only tern's own Return-Path, no Bcc, Resent-Bcc or
/// Content-Length, by SMTP and by sendmail.
#[test]
fn headers_that_must_not_travel_are_dropped() {
    let t = Setup::new().deliver().start();
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail("a@example.test", &["alice@example.test"], LEAKY);
    assert_eq!(r.status(), "250 2.0.0");
    let files = wait_files(&t.maildir_new("alice"), 1, 10);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.starts_with("Return-Path: <a@example.test>\n"), "{text}");
    assert_clean(&text, true);
    // sendmail: the same stage.
    let out = t
        .setup
        .sendmail(&["bob@example.test"], LEAKY.replace("\r\n", "\n").as_bytes());
    assert_eq!(out.code, 0, "{out:?}");
    let files = wait_files(&t.maildir_new("bob"), 1, 10);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert_clean(&text, true);
}

/// Never a Return-Path to a next hop: a peer sees none, and the list is the
/// administrator's (`message_drop_headers`).
#[test]
fn no_return_path_to_a_next_hop_and_the_list_is_configurable() {
    use crate::common::peer::{Peer, Script};
    let peer = Peer::start(Script::default());
    let t = Setup::new()
        .deliver()
        .set("route", &format!("remote.test [127.0.0.1]:{}", peer.port()))
        // Return-Path is not in the list: the SMTP client still leaves it out.
        .set("message_drop_headers", "x-secret, bcc")
        .start();
    let mut c = t.connect();
    c.hello();
    let body = format!("X-Secret: 42\r\n{LEAKY}");
    let r = c.send_mail("a@example.test", &["someone@remote.test"], &body);
    assert_eq!(r.status(), "250 2.0.0");
    assert!(crate::common::wait_until(10, || !peer.messages().is_empty()));
    let (_, _, data) = peer.messages().remove(0);
    let text = String::from_utf8_lossy(&data).replace("\r\n", "\n");
    let head = text.split("\n\n").next().unwrap_or_default().to_ascii_lowercase();
    assert!(!head.contains("return-path"), "{text}");
    assert!(!head.contains("x-secret") && !head.contains("\nbcc:"), "{text}");
    // Not in the list: kept.
    assert!(
        head.contains("resent-bcc:") && head.contains("content-length:"),
        "{text}"
    );
}

/// A message larger than the memory threshold goes through a spill file and
/// arrives whole; the stages still see its header.
#[test]
fn a_large_message_arrives_whole() {
    let t: Tern = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    let line = format!("{}\r\n", "0123456789".repeat(9));
    let mut body = String::from("Bcc: hidden@x.test\r\nSubject: big\r\n\r\n");
    while body.len() < 3 * 1024 * 1024 {
        body.push_str(&line);
    }
    let r = c.send_mail("a@example.test", &["alice@example.test"], &body);
    assert_eq!(r.status(), "250 2.0.0");
    let (env, stored) = t.message(&r.queue_id());
    let stored = String::from_utf8(stored).unwrap();
    assert!(
        stored.starts_with("Received: from client.test"),
        "{}",
        &stored[..200]
    );
    assert!(!stored.contains("Bcc:"));
    let want = body.replace("Bcc: hidden@x.test\r\n", "").replace("\r\n", "\n");
    assert!(stored.ends_with(&want));
    assert_eq!(env.size, stored.len() as u64);
    let _ = message("x");
}
