//! Issue 21 items 4 and 5: CHUNKING (RFC 3030) both ways, LIMITS (RFC 9422)
//! both ways, 521 (RFC 7504) both ways; against raw sockets, Python's
//! smtplib, a second ternd, a scripted DATA-only peer and a private Postfix.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::peer::{Peer, Script};
use crate::common::postfix::Postfix;
use crate::common::{wait_files, wait_until, Setup, Tern};

/// A ternd that delivers, with mail for `domain` routed to 127.0.0.1:`port`.
fn via(domain: &str, port: u16) -> Tern {
    Setup::new()
        .deliver()
        .set("route", &format!("{domain} [127.0.0.1]:{port}"))
        .start()
}

fn log_has(t: &Tern, needle: &str) -> bool {
    let ok = t.wait_log(needle);
    if !ok {
        eprintln!("no {needle:?} in log:\n{}", t.log_text());
    }
    ok
}

/// The dialog of RFC 3030 2, pipelined in one write: chunks are answered as
/// read, LAST with the queue id; the data is stored as sent (a leading dot
/// is content, `CRLF.CRLF` ends nothing), with LF line ends.
#[test]
fn bdat_pipelined_and_stored_as_sent() {
    let t = Setup::new().start();
    let mut c = t.connect();
    let r = c.hello();
    assert!(r.lines.contains(&"250-CHUNKING".to_owned()), "{r:?}");
    assert!(!r.text().contains("BINARYMIME"), "{r:?}");
    let first = b"Subject: chunks\r\n\r\n.\r\n..two dots\r\n";
    let last = b"\r\n.\r\nend\r\n";
    let mut w = b"MAIL FROM:<a@example.test>\r\nRCPT TO:<alice@example.test>\r\n".to_vec();
    w.extend_from_slice(format!("BDAT {}\r\n", first.len()).as_bytes());
    w.extend_from_slice(first);
    w.extend_from_slice(format!("BDAT {} LAST\r\n", last.len()).as_bytes());
    w.extend_from_slice(last);
    w.extend_from_slice(b"NOOP\r\n");
    c.send_raw(&w);
    assert_eq!(c.reply().status(), "250 2.1.0");
    assert_eq!(c.reply().status(), "250 2.1.5");
    let r = c.reply();
    assert_eq!(
        r.lines,
        vec![format!("250 2.0.0 {} octets received", first.len())]
    );
    let r = c.reply();
    assert_eq!(r.status(), "250 2.0.0", "{r:?}");
    assert!(r.text().contains("queued as"), "{r:?}");
    assert_eq!(c.reply().status(), "250 2.0.0");
    let (env, body) = t.message(&r.queue_id());
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.ends_with("Subject: chunks\n\n.\n..two dots\n\n.\nend\n"),
        "{body}"
    );
    assert_eq!(env.size, body.len() as u64);
    // BDAT 0 LAST: an empty last chunk ends the message.
    c.cmd("MAIL FROM:<a@example.test>");
    c.cmd("RCPT TO:<alice@example.test>");
    c.send_raw(b"BDAT 9\r\nSubject: ");
    assert_eq!(c.reply().status(), "250 2.0.0");
    c.send_raw(b"BDAT 0 LAST\r\n");
    assert_eq!(c.reply().status(), "250 2.0.0");
    assert_eq!(t.queued().len(), 2);
}

/// The line rules of a 7BIT/8BITMIME body hold under BDAT (RFC 3030 3: only
/// BINARYMIME lifts them, and tern does not offer it); every refusal comes
/// after the LAST chunk is read, the session in step, nothing queued.
#[test]
fn bdat_refusals_and_sequence() {
    let t = Setup::new().set("max_message_size", "100").start();
    let mut c = t.connect();
    c.hello();
    // No transaction: the chunk is read and thrown away, the session goes on.
    c.send_raw(b"BDAT 12 LAST\r\nNOOP\r\nNOOP\r\n");
    assert_eq!(c.reply().status(), "503 5.5.1");
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
    let refused = |c: &mut crate::common::Client, chunks: &[&[u8]]| -> String {
        c.cmd("MAIL FROM:<a@example.test>");
        c.cmd("RCPT TO:<alice@example.test>");
        let n = chunks.len();
        let mut last = String::new();
        for (i, ch) in chunks.iter().enumerate() {
            let end = if i + 1 == n { " LAST" } else { "" };
            c.send_raw(format!("BDAT {}{end}\r\n", ch.len()).as_bytes());
            c.send_raw(ch);
            last = c.reply().status();
        }
        last
    };
    assert_eq!(refused(&mut c, &[b"bare\nLF\r\n"]), "550 5.6.0");
    assert_eq!(refused(&mut c, &[b"bare CR\r", b"x\r\n"]), "550 5.6.0");
    assert_eq!(refused(&mut c, &[b"ends in CR\r"]), "550 5.6.0");
    assert_eq!(refused(&mut c, &[&[b'x'; 60], &[b'y'; 60]]), "552 5.3.4");
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
    // DATA in a BDAT transaction.
    c.cmd("MAIL FROM:<a@example.test>");
    c.cmd("RCPT TO:<alice@example.test>");
    c.send_raw(b"BDAT 3\r\nab\n");
    assert_eq!(c.reply().status(), "250 2.0.0");
    assert_eq!(c.cmd("DATA").status(), "503 5.5.1");
    assert_eq!(c.cmd("RSET").status(), "250 2.0.0");
    // BINARYMIME is not offered.
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.test> BODY=BINARYMIME").status(),
        "555 5.5.4"
    );
    // A chunk size that does not parse: nothing after it can be trusted.
    c.send_raw(b"BDAT x LAST\r\n");
    assert_eq!(c.reply().status(), "501 5.5.4");
    assert!(c.closed());
    assert!(t.queued().is_empty());
}

/// Python's smtplib (not written here) driven by hand through BDAT.
#[test]
fn python_smtplib_sends_bdat() {
    require_tool!("python3");
    let t = Setup::new().start();
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port})
s.ehlo("py.test")
assert s.has_extn("chunking"), s.esmtp_features
limits = s.esmtp_features.get("limits", "")
assert "RCPTMAX=100" in limits and "MAILMAX=1000" in limits, limits
assert s.mail("a@example.test")[0] == 250
assert s.rcpt("alice@example.test")[0] == 250
part1 = b"Subject: from python\r\n\r\n.leading dot\r\n"
part2 = b"last line\r\n"
s.send(b"BDAT %d\r\n" % len(part1) + part1)
code, msg = s.getreply()
assert code == 250, (code, msg)
s.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
code, msg = s.getreply()
assert code == 250 and b"queued as" in msg, (code, msg)
print(msg.decode().split()[-1])
s.quit()
"#,
        port = t.addr.port()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (_, body) = t.message(&id);
    assert!(String::from_utf8_lossy(&body).ends_with("Subject: from python\n\n.leading dot\nlast line\n"));
}

/// RFC 9422 as a server: the limits advertised are the ones applied; MAILMAX
/// past its end is a 421 that closes the session.
#[test]
fn limits_advertised_and_applied() {
    let t = Setup::new()
        .set("max_recipients", "2")
        .set("max_transactions", "2")
        .start();
    let mut c = t.connect();
    let r = c.hello();
    assert!(
        r.lines.contains(&"250-LIMITS RCPTMAX=2 MAILMAX=2".to_owned()),
        "{r:?}"
    );
    for _ in 0..2 {
        assert_eq!(c.cmd("MAIL FROM:<a@example.test>").status(), "250 2.1.0");
        assert_eq!(c.cmd("RCPT TO:<alice@example.test>").status(), "250 2.1.5");
        assert_eq!(c.cmd("RCPT TO:<bob@example.test>").status(), "250 2.1.5");
        assert_eq!(c.cmd("RCPT TO:<carol@example.test>").status(), "452 4.5.3");
        assert_eq!(c.cmd("RSET").status(), "250 2.0.0");
    }
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").status(), "421 4.7.0");
    assert!(c.closed());
}

/// RFC 9422 as a client, and BDAT from ternd to ternd: five recipients to a
/// server with RCPTMAX=2 MAILMAX=2 go as transactions of two, the fifth on a
/// second connection, and the server never has to refuse anything.
#[test]
fn client_respects_limits_and_sends_bdat() {
    let dest = Setup::new()
        .deliver()
        .set("hostname", "mx.dest.test")
        .set("local_domains", "dest.test")
        .set("max_recipients", "2")
        .set("max_transactions", "2")
        .start();
    let tap = Tap::start(dest.addr);
    let t = via("dest.test", tap.addr.port());
    let mut c = t.connect();
    c.hello();
    // Five recipients; the aliases bring alice, bob and carol two copies each.
    let rcpts = [
        "alice@dest.test",
        "bob@dest.test",
        "carol@dest.test",
        "team@dest.test",
        "sales@dest.test",
    ];
    let r = c.send_mail("a@example.test", &rcpts, "Subject: limits\r\n\r\n..dot\r\n");
    assert_eq!(r.status(), "250 2.0.0");
    let users = ["alice", "bob", "carol"];
    let count = || -> usize {
        users
            .iter()
            .map(|u| wait_files(&dest.maildir_new(u), 0, 0).len())
            .sum()
    };
    assert!(
        wait_until(20, || count() == 6),
        "{}\n{}",
        t.log_text(),
        dest.log_text()
    );
    let sent = tap.client_bytes();
    assert_eq!(sent.matches("MAIL FROM:").count(), 3, "{sent}");
    assert_eq!(sent.matches(" LAST\r\n").count(), 3, "{sent}");
    assert!(!sent.contains("\r\nDATA\r\n"), "{sent}");
    assert!(tap.connections() >= 2);
    assert!(!dest.log_text().contains("452 4.5.3"), "{}", dest.log_text());
    assert!(!dest.log_text().contains("421 4.7.0"), "{}", dest.log_text());
    let text = std::fs::read_to_string(&wait_files(&dest.maildir_new("alice"), 1, 1)[0]).unwrap();
    assert!(text.ends_with("Subject: limits\n\n.dot\n"), "{text}");
}

/// Smuggling-safe: a message received by BDAT, with lines holding a lone dot,
/// relayed to a host without CHUNKING is dot-stuffed: the peer reads the
/// whole message and nothing ends it early.
#[test]
fn bdat_message_relayed_by_data_is_dot_stuffed() {
    let peer = Peer::start(Script::default());
    let t = via("remote.test", peer.port());
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<a@example.test>");
    c.cmd("RCPT TO:<x@remote.test>");
    let data = b"Subject: s\r\n\r\n.\r\nMAIL FROM:<evil@x.test>\r\n..\r\n.x\r\nend\r\n";
    c.send_raw(format!("BDAT {} LAST\r\n", data.len()).as_bytes());
    c.send_raw(data);
    assert_eq!(c.reply().status(), "250 2.0.0");
    assert!(wait_until(10, || !peer.messages().is_empty()));
    let (_, _, wire) = peer.messages().remove(0);
    let wire = String::from_utf8(wire).unwrap();
    assert!(
        wire.ends_with("Subject: s\r\n\r\n..\r\nMAIL FROM:<evil@x.test>\r\n...\r\n..x\r\nend\r\n"),
        "{wire}"
    );
    assert!(!peer.commands().iter().any(|l| l.contains("evil")));
    assert_eq!(peer.messages().len(), 1);
}

/// RFC 7504 as a server: `refuse_mail` answers 521 5.3.2 and closes.
#[test]
fn refuse_mail_answers_521_and_closes() {
    let t = Setup::new().set("refuse_mail", "smtp").start();
    let mut c = t.connect();
    let r = c.reply();
    assert_eq!(r.lines, vec!["521 5.3.2 mx.test does not accept mail"]);
    assert!(c.closed());
}

/// RFC 7504 as a client: a 521 greeting is a permanent failure (a bounce at
/// once, not a retry), and the host is not connected to again.
#[test]
fn a_521_greeting_bounces_and_is_not_retried() {
    let peer = Peer::start(Script {
        greeting: "521 5.3.2 nomail.test does not accept mail".to_owned(),
        ..Script::default()
    });
    let t = via("remote.test", peer.port());
    let mut c = t.connect();
    c.hello();
    let r = c.send_mail(
        "alice@example.test",
        &["x@remote.test"],
        "Subject: to nowhere\r\n\r\nhi\r\n",
    );
    assert_eq!(r.status(), "250 2.0.0");
    // The bounce comes back to alice with the 521.
    let files = wait_files(&t.maildir_new("alice"), 1, 15);
    assert_eq!(files.len(), 1, "{}", t.log_text());
    let dsn = std::fs::read_to_string(&files[0]).unwrap();
    assert!(dsn.contains("Status: 5.3.2"), "{dsn}");
    assert!(
        dsn.contains("521 5.3.2 nomail.test does not accept mail"),
        "{dsn}"
    );
    // A second message to the same host: bounced without a connection.
    let r = c.send_mail(
        "alice@example.test",
        &["y@remote.test"],
        "Subject: again\r\n\r\nhi\r\n",
    );
    assert_eq!(r.status(), "250 2.0.0");
    assert_eq!(wait_files(&t.maildir_new("alice"), 2, 15).len(), 2);
    assert_eq!(peer.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    // ternd to ternd: the same.
    let dest = Setup::new().set("refuse_mail", "smtp").start();
    let t2 = via("dest.test", dest.addr.port());
    let mut c = t2.connect();
    c.hello();
    c.send_mail("alice@example.test", &["x@dest.test"], "Subject: x\r\n\r\nhi\r\n");
    assert!(log_has(&t2, "status=bounced"));
}

/// Interop with Postfix, both ways: Postfix relays to tern (its SMTP client
/// has no BDAT, so by DATA, into a server offering CHUNKING); tern relays to
/// Postfix's smtpd by BDAT, and by DATA once CHUNKING is taken off Postfix's
/// EHLO. A tap on each connection shows which command carried the message.
#[test]
fn postfix_bdat_interop_both_ways() {
    let t = Setup::new().deliver().start();
    let to_tern = Tap::start(t.addr);
    let Some(pf) = Postfix::builder()
        .mailbox("carol@postfix.test")
        .transport(
            "example.test",
            &format!("smtp:[127.0.0.1]:{}", to_tern.addr.port()),
        )
        .start()
    else {
        return;
    };
    // Postfix -> tern.
    let mut c = crate::common::Client::connect(pf.addr());
    assert_eq!(c.reply().code, 220);
    c.cmd("EHLO client.test");
    let r = c.send_mail(
        "someone@postfix.test",
        &["alice@example.test"],
        "Subject: from postfix\r\n\r\n..dot line\r\nbody\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    let files = wait_files(&t.maildir_new("alice"), 1, 20);
    assert_eq!(files.len(), 1, "{}\n{}", t.log_text(), pf.log());
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("Subject: from postfix\n"), "{text}");
    assert!(text.ends_with("\n\n.dot line\nbody\n"), "{text}");
    // Postfix's SMTP client sends DATA even to a CHUNKING server (its BDAT
    // support is the server's only; seen here with Postfix 3.7): BDAT into
    // tern is shown by smtplib and by ternd itself above.
    let sent = to_tern.client_bytes();
    assert!(sent.contains("\r\nDATA\r\n") || sent.contains("BDAT "), "{sent}");

    // tern -> Postfix, with and without CHUNKING at Postfix.
    for chunking in [true, false] {
        let mut b = Postfix::builder().mailbox("carol@postfix.test");
        if !chunking {
            b = b.set("smtpd_discard_ehlo_keywords", "chunking");
        }
        let Some(pf) = b.start() else { return };
        let tap = Tap::start(pf.addr());
        let t = via("postfix.test", tap.addr.port());
        let mut c = t.connect();
        c.hello();
        let r = c.send_mail(
            "alice@example.test",
            &["carol@postfix.test"],
            "Subject: to postfix\r\n\r\n..\r\n..dot line\r\n",
        );
        assert_eq!(r.status(), "250 2.0.0");
        assert!(
            wait_until(20, || !pf.messages("carol@postfix.test").is_empty()),
            "{}\n{}",
            t.log_text(),
            pf.log()
        );
        let got = pf.messages("carol@postfix.test").remove(0).replace("\r\n", "\n");
        assert!(got.contains("Subject: to postfix\n"), "{got}");
        assert!(got.ends_with("\n\n.\n.dot line\n"), "{got}");
        let sent = tap.client_bytes();
        assert_eq!(sent.contains(" LAST\r\n"), chunking, "{sent}");
        assert_eq!(sent.contains("\r\nDATA\r\n"), !chunking, "{sent}");
    }
}

/// A TCP relay that records what the client side sent: to see which command
/// carried a message between two programs not written here and there.
struct Tap {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
    conns: Arc<Mutex<usize>>,
}

impl Tap {
    fn start(target: SocketAddr) -> Tap {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(0));
        let (s2, c2) = (Arc::clone(&seen), Arc::clone(&conns));
        std::thread::spawn(move || {
            for client in l.incoming().flatten() {
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                *c2.lock().unwrap() += 1;
                let (mut c_r, mut s_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_r, mut c_w) = (server, client);
                let s3 = Arc::clone(&s2);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = c_r.read(&mut buf) {
                        if n == 0 || s_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        s3.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = s_w.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = s_r.set_read_timeout(Some(Duration::from_secs(60)));
                    let _ = std::io::copy(&mut s_r, &mut c_w);
                    let _ = c_w.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Tap { addr, seen, conns }
    }

    fn client_bytes(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    fn connections(&self) -> usize {
        *self.conns.lock().unwrap()
    }
}
