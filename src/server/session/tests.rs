//! The session's state machine, driven over `conn::Memory`: bytes in,
//! replies out, mail into a temporary spool. Expected replies come from the
//! catalog (`reply::*().to_wire()`), so a test names what it expects.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{run, Context, Peer, Report, Service};
use crate::config::Config;
use crate::server::conn::{Event, Memory, Transcript};
use crate::smtp::reply::{self, Reply};
use crate::spool::{QueueId, Spool};
use crate::tables::Tables;

/// A client outside `relay_networks`, and one inside.
const OUTSIDER: &str = "203.0.113.5";
const INSIDER: &str = "192.0.2.9";

struct Server {
    _dir: tempfile::TempDir,
    ctx: Context,
    /// What the session announced to the queue runner.
    woken: crossbeam_channel::Receiver<QueueId>,
}

/// A session context over a temporary spool: local users alice and bob at
/// example.org, relaying for 192.0.2.0/24, plus `extra` config lines.
fn server(extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "alice\nbob\n").unwrap();
    let text = format!(
        "hostname = mx.example.org\nspool = {}\nlocal_domains = example.org\n\
         relay_networks = 192.0.2.0/24\nlocal_users = {}\n{extra}",
        dir.path().join("spool").display(),
        users.display()
    );
    let cfg = Config::parse(&text, Path::new("test.conf")).unwrap();
    let spool = Spool::open(&cfg.spool.dir).unwrap();
    let tables = Arc::new(Tables::new(&cfg));
    let mut ctx = Context::new(Arc::new(cfg), Arc::new(spool), tables, None);
    let (tx, rx) = crossbeam_channel::unbounded();
    ctx.queued = Some(tx);
    Server {
        _dir: dir,
        ctx,
        woken: rx,
    }
}

impl Server {
    /// One session from `ip` on `service`: the client sends `chunks` (one per
    /// read), then closes.
    fn talk_as(&self, ip: &str, service: Service, chunks: &[&str]) -> (Report, Transcript) {
        let (conn, t) = Memory::new(chunks.iter().copied());
        let r = run(
            &self.ctx,
            &Peer::remote(ip.parse().unwrap()),
            service,
            Box::new(conn),
        );
        (r, t)
    }

    /// One session from an outsider on port 25, every line in one chunk.
    fn talk(&self, lines: &[&str]) -> Vec<String> {
        let text: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        self.talk_as(OUTSIDER, Service::Smtp, &[&text]).1.lines()
    }
}

/// The wire lines of `replies`, in order.
fn wire(replies: impl IntoIterator<Item = Reply>) -> Vec<String> {
    replies
        .into_iter()
        .flat_map(|r| r.to_wire().lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

fn greeting() -> Reply {
    reply::greeting("mx.example.org")
}

fn helo() -> Reply {
    reply::helo("mx.example.org")
}

#[test]
fn greeting_then_quit() {
    let s = server("");
    assert_eq!(s.talk(&["QUIT", "NOOP"]), wire([greeting(), reply::bye()]));
    // A client that hangs up at once still saw the greeting.
    assert_eq!(s.talk(&[]), wire([greeting()]));
}

#[test]
fn commands_out_of_sequence() {
    let s = server("");
    let got = s.talk(&[
        "MAIL FROM:<a@x.test>",
        "RCPT TO:<alice@example.org>",
        "DATA",
        "HELO client.test",
        "RCPT TO:<alice@example.org>",
        "DATA",
        "MAIL FROM:<a@x.test>",
        "MAIL FROM:<a@x.test>",
        "DATA",
        "QUIT",
    ]);
    let want = wire([
        greeting(),
        reply::need_helo(),
        reply::need_mail(),
        reply::need_mail(),
        helo(),
        reply::need_mail(),
        reply::need_mail(),
        reply::sender_ok(),
        reply::nested_mail(),
        reply::need_rcpt(),
        reply::bye(),
    ]);
    assert_eq!(got, want);
}

#[test]
fn ehlo_and_helo() {
    let s = server("max_message_size = 10k");
    let got = s.talk(&["EHLO client.test", "QUIT"]);
    let exts: Vec<String> = [
        "PIPELINING",
        "SIZE 10240",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "DSN",
        "CHUNKING",
        "LIMITS RCPTMAX=100 MAILMAX=1000",
        "HELP",
    ]
    .iter()
    .map(|e| (*e).to_owned())
    .collect();
    let want = wire([
        greeting(),
        reply::ehlo("mx.example.org", "client.test", &exts),
        reply::bye(),
    ]);
    assert_eq!(got, want);
    // After HELO there is no ESMTP: parameters are refused.
    let got = s.talk(&["HELO client.test", "MAIL FROM:<a@x.test> BODY=8BITMIME", "QUIT"]);
    assert_eq!(
        got,
        wire([greeting(), helo(), reply::unknown_parameter(), reply::bye()])
    );
    // RFC 1870 6.1: a declared size over the limit is refused at MAIL.
    let got = s.talk(&[
        "EHLO c",
        "MAIL FROM:<a@x.test> SIZE=10241",
        "MAIL FROM:<a@x.test> SIZE=10240",
    ]);
    assert_eq!(
        got.get(got.len() - 2..),
        Some(&wire([reply::size_exceeded(), reply::sender_ok()])[..])
    );
}

/// RFC 8689 4: REQUIRETLS is neither offered (the EHLO list above) nor
/// taken without TLS; turned off, it is an unknown parameter.
#[test]
fn requiretls_without_tls() {
    let s = server("");
    let got = s.talk(&["EHLO c", "MAIL FROM:<a@x.test> REQUIRETLS", "QUIT"]);
    assert_eq!(
        got.get(got.len() - 2..),
        Some(&wire([reply::requiretls_needs_tls(), reply::bye()])[..])
    );
    assert!(reply::requiretls_needs_tls()
        .to_string()
        .starts_with("530 5.7.10 "));
    let s = server("requiretls = no");
    let got = s.talk(&["EHLO c", "MAIL FROM:<a@x.test> REQUIRETLS", "QUIT"]);
    assert_eq!(
        got.get(got.len() - 2..),
        Some(&wire([reply::unknown_parameter(), reply::bye()])[..])
    );
}

#[test]
fn a_message_into_the_spool() {
    let s = server("");
    let input = "EHLO client.test\r\nMAIL FROM:<sender@x.test>\r\nRCPT TO:<alice@example.org>\r\n\
                 RCPT TO:<Bob@Example.org>\r\nDATA\r\n";
    let body = "Subject: hi\r\n\r\n..dot-stuffed\r\nbody\r\n.\r\nQUIT\r\n";
    let (report, t) = s.talk_as(OUTSIDER, Service::Smtp, &[input, body]);
    let [id] = report.queued.as_slice() else {
        panic!("queued {:?}: {}", report.queued, t.output());
    };
    let lines = t.lines();
    let tail = wire([
        reply::sender_ok(),
        reply::recipient_ok(),
        reply::recipient_ok(),
        reply::start_data(),
        reply::queued(id.as_str()),
        reply::bye(),
    ]);
    assert_eq!(
        lines.get(lines.len() - tail.len()..),
        Some(&tail[..]),
        "{lines:?}"
    );
    // The queue runner was told.
    assert_eq!(s.woken.try_recv().as_ref(), Ok(id));
    // What the spool holds: the envelope, and the message with its trace field.
    let env = s.ctx.spool.load(id).unwrap();
    assert_eq!(env.sender, "sender@x.test");
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.addr.as_str()).collect();
    assert_eq!(rcpts, ["alice@example.org", "Bob@Example.org"]);
    assert_eq!(env.helo.as_deref(), Some("client.test"));
    assert_eq!(env.protocol, "ESMTP");
    let msg = String::from_utf8(s.ctx.spool.read_message(&env).unwrap()).unwrap();
    assert!(
        msg.starts_with(
            "Received: from client.test (unknown [203.0.113.5])\n\tby mx.example.org (tern) with ESMTP id "
        ),
        "{msg}"
    );
    assert!(msg.ends_with("\nSubject: hi\n\n.dot-stuffed\nbody\n"), "{msg:?}");
    assert_eq!(env.size, msg.len() as u64);
}

#[test]
fn rset_ends_the_transaction() {
    let s = server("");
    let got = s.talk(&[
        "HELO c",
        "MAIL FROM:<a@x.test>",
        "RCPT TO:<alice@example.org>",
        "RSET",
        "DATA",
        "MAIL FROM:<a@x.test>",
        "QUIT",
    ]);
    let want = wire([
        greeting(),
        helo(),
        reply::sender_ok(),
        reply::recipient_ok(),
        reply::reset_ok(),
        reply::need_mail(),
        reply::sender_ok(),
        reply::bye(),
    ]);
    assert_eq!(got, want);
}

/// RFC 2920 3.1 (qmail's flush before read): replies are held until the
/// input buffer is empty, so a pipelined group gets its replies in one write.
#[test]
fn pipelined_replies_go_out_together() {
    let s = server("");
    let group =
        "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n";
    let (_, t) = s.talk_as(OUTSIDER, Service::Smtp, &[group, "QUIT\r\n"]);
    let events = t.events();
    let shape: Vec<&str> = events
        .iter()
        .map(|e| match e {
            Event::Read(_) => "read",
            Event::Wrote(_) => "wrote",
        })
        .collect();
    // The greeting before the first read; one write for the four replies of
    // the group; one for QUIT's.
    assert_eq!(shape, ["wrote", "read", "wrote", "read", "wrote"], "{events:?}");
    let Some(Event::Wrote(group_replies)) = events.get(2) else {
        panic!("{events:?}");
    };
    let text = String::from_utf8_lossy(group_replies);
    assert!(text.starts_with("250-mx.example.org"), "{text}");
    let want = [reply::sender_ok(), reply::recipient_ok(), reply::recipient_ok()]
        .map(|r| r.to_wire())
        .concat();
    assert!(text.ends_with(&want), "{text}");
}

#[test]
fn too_many_errors_end_the_session() {
    let s = server("max_errors = 3");
    let got = s.talk(&["BOGUS", "NOOP", "XYZZY", "FROB", "NOOP"]);
    let want = wire([
        greeting(),
        reply::unknown_command(),
        reply::noop_ok(),
        reply::unknown_command(),
        reply::unknown_command(),
        reply::too_many_errors(),
    ]);
    assert_eq!(got, want);
    // Refused recipients are policy, not errors: they do not count.
    let got = s.talk(&[
        "HELO c",
        "MAIL FROM:<a@x.test>",
        "RCPT TO:<nobody@example.org>",
        "RCPT TO:<nobody@example.org>",
        "RCPT TO:<x@remote.test>",
        "RCPT TO:<x@remote.test>",
        "QUIT",
    ]);
    assert_eq!(got.last(), wire([reply::bye()]).last(), "{got:?}");
}

#[test]
fn starttls_and_auth_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("auth");
    std::fs::write(&users, "alice:$6$x$y\n").unwrap();
    let s = server(&format!("auth_users = {}\n", users.display()));
    let got = s.talk(&["EHLO c", "STARTTLS", "AUTH PLAIN AGFsaWNlAHNlY3JldA==", "QUIT"]);
    // Neither STARTTLS (no certificate) nor AUTH (not inside TLS) is offered.
    assert!(
        !got.iter().any(|l| l.contains("STARTTLS") || l.contains("AUTH")),
        "{got:?}"
    );
    let tail = wire([reply::not_implemented(), reply::auth_needs_tls(), reply::bye()]);
    assert_eq!(got.get(got.len() - 3..), Some(&tail[..]), "{got:?}");
    // Submission without TLS: no mail at all.
    let (_, t) = s.talk_as(
        OUTSIDER,
        Service::Submission,
        &["EHLO c\r\nMAIL FROM:<alice@example.org>\r\n"],
    );
    assert_eq!(t.lines().last(), wire([reply::tls_required()]).last());
}

#[test]
fn unknown_recipients_reach_the_harvest_limit() {
    let s = server("harvest_threshold = 1\nharvest_delay = 0\nharvest_limit = 3\n");
    let got = s.talk(&[
        "HELO c",
        "MAIL FROM:<a@x.test>",
        "RCPT TO:<n1@example.org>",
        "RCPT TO:<alice@example.org>",
        "RCPT TO:<n2@example.org>",
        "RCPT TO:<n3@example.org>",
        "RCPT TO:<alice@example.org>",
    ]);
    let want = wire([
        greeting(),
        helo(),
        reply::sender_ok(),
        reply::no_such_user("n1@example.org"),
        reply::recipient_ok(),
        reply::no_such_user("n2@example.org"),
        reply::harvest_limit(),
    ]);
    assert_eq!(got, want);
}

#[test]
fn vrfy_off_tells_nothing() {
    let s = server("");
    let got = s.talk(&["VRFY alice", "VRFY nobody@example.org", "QUIT"]);
    assert_eq!(
        got,
        wire([
            greeting(),
            reply::vrfy_cannot(),
            reply::vrfy_cannot(),
            reply::bye()
        ])
    );
}

#[test]
fn vrfy_on_answers_as_rcpt_would() {
    let s = server("vrfy = yes\n");
    let got = s.talk(&[
        "VRFY alice",
        "VRFY <Bob@example.org>",
        "VRFY Alice Smith <alice@example.org>",
        "VRFY postmaster",
        "VRFY nobody",
        "VRFY x@remote.test",
        "VRFY <>",
        "QUIT",
    ]);
    let want = wire([
        greeting(),
        reply::vrfy_ok("alice@example.org"),
        reply::vrfy_ok("Bob@example.org"),
        reply::vrfy_ok("alice@example.org"),
        reply::vrfy_ok("postmaster@example.org"),
        reply::no_such_user("nobody@example.org"),
        reply::relay_denied("x@remote.test"),
        reply::bad_recipient_syntax(),
        reply::bye(),
    ]);
    assert_eq!(got, want);
    // A client that may relay may verify remote addresses.
    let (_, t) = s.talk_as(INSIDER, Service::Smtp, &["VRFY x@remote.test\r\n"]);
    assert_eq!(t.lines().last(), wire([reply::vrfy_ok("x@remote.test")]).last());
}

#[test]
fn vrfy_counts_toward_the_harvest_limit() {
    let s = server("vrfy = yes\nharvest_threshold = 1\nharvest_delay = 0\nharvest_limit = 2\n");
    let got = s.talk(&[
        "VRFY n1",
        "VRFY alice",
        "HELO c",
        "MAIL FROM:<a@x.test>",
        "RCPT TO:<n2@example.org>",
        "NOOP",
    ]);
    let want = wire([
        greeting(),
        reply::no_such_user("n1@example.org"),
        reply::vrfy_ok("alice@example.org"),
        helo(),
        reply::sender_ok(),
        reply::harvest_limit(),
    ]);
    assert_eq!(got, want);
}

#[test]
fn idle_client_gets_a_timeout() {
    let s = server("");
    let (conn, t) = Memory::new(["HELO c\r\n"]);
    run(
        &s.ctx,
        &Peer::remote(OUTSIDER.parse().unwrap()),
        Service::Smtp,
        Box::new(conn.then_idle()),
    );
    assert_eq!(t.lines(), wire([greeting(), helo(), reply::timeout()]));
}

#[test]
fn a_stopping_daemon_answers_421() {
    let s = server("");
    s.ctx.shutdown.store(true, Ordering::SeqCst);
    assert_eq!(s.talk(&["NOOP"]), wire([greeting(), reply::shutting_down()]));
}

#[test]
fn a_refused_message_is_not_queued() {
    let s = server("max_received = 1");
    let input = "HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n\
                 Received: one\r\nReceived: two\r\n\r\nloop\r\n.\r\nQUIT\r\n";
    let (report, t) = s.talk_as(OUTSIDER, Service::Smtp, &[input]);
    // Two Received: fields, over the limit of one: a mail loop.
    let tail = wire([reply::start_data(), reply::mail_loop(), reply::bye()]);
    let lines = t.lines();
    assert_eq!(lines.get(lines.len() - 3..), Some(&tail[..]), "{lines:?}");
    assert!(report.queued.is_empty());
    assert!(s.ctx.spool.list().unwrap().is_empty());
    assert!(s.woken.try_recv().is_err());
}

/// Issue 17, 5: under `sendmail -bs` a bare user name gets the origin domain.
#[test]
fn bare_names_get_the_origin_under_sendmail_bs() {
    let o = || "example.org".to_owned();
    let q = |l: &str| super::with_origin(l.as_bytes(), o).map(|v| String::from_utf8(v).unwrap());
    assert_eq!(
        q("RCPT TO:<carol>").as_deref(),
        Some("RCPT TO:<carol@example.org>")
    );
    assert_eq!(
        q("rcpt to: <carol.x> NOTIFY=NEVER").as_deref(),
        Some("rcpt to: <carol.x@example.org> NOTIFY=NEVER")
    );
    assert_eq!(
        q("MAIL FROM:<root> SIZE=10").as_deref(),
        Some("MAIL FROM:<root@example.org> SIZE=10")
    );
    for left in [
        "RCPT TO:<carol@example.net>",
        "RCPT TO:<postmaster>",
        "RCPT TO:<Postmaster>",
        "MAIL FROM:<>",
        "RCPT TO:<\"odd name\">",
        "RCPT TO:carol",
        "RCPT TO:<carol",
        "NOOP <carol>",
        "RCPT",
    ] {
        assert_eq!(q(left), None, "{left}");
    }
}
