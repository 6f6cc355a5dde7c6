//! Duplicate recipients are delivered once per message (issue 16 item 4):
//! at RCPT (the same mailbox, however it is written; its first RCPT's DSN
//! parameters kept) and after alias expansion (each final target once:
//! mailbox, file, command, remote address). RCPT replies stay 250.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::path::Path;

use crate::common::peer::{Peer, Script};
use crate::common::{read_reply, wait_files, wait_until, Client, Setup, Tern};

/// Send MAIL, `rcpts` and DATA in one write, then the message; the RCPT
/// replies counted by status, and the queue id.
fn pipelined(t: &Tern, rcpts: &[String]) -> (HashMap<String, usize>, String) {
    let mut c: Client = t.connect();
    c.hello();
    let mut batch = b"MAIL FROM:<sender@elsewhere.test>\r\n".to_vec();
    for r in rcpts {
        batch.extend_from_slice(format!("RCPT TO:<{r}>\r\n").as_bytes());
    }
    batch.extend_from_slice(b"DATA\r\n");
    // Write from another thread: the replies come back while we write.
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&batch));
    let mut reader = BufReader::new(c.stream.try_clone().unwrap());
    assert_eq!(read_reply(&mut reader).unwrap().code, 250);
    let mut seen = HashMap::new();
    for _ in rcpts {
        let r = read_reply(&mut reader).expect("RCPT reply");
        *seen.entry(status(&r.lines[0])).or_insert(0) += 1;
    }
    writer.join().unwrap().unwrap();
    assert_eq!(read_reply(&mut reader).unwrap().code, 354);
    c.send_raw(b"Subject: once\r\n\r\nonly once, please\r\n.\r\n");
    let r = read_reply(&mut reader).unwrap();
    assert_eq!(r.status(), "250 2.0.0", "{r:?}");
    (seen, r.queue_id())
}

fn status(line: &str) -> String {
    line.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

/// A route for peer.test to `peer`.
fn peer_route(peer: &Peer) -> String {
    format!("peer.test [127.0.0.1]:{}", peer.port())
}

/// Wait for `id` to leave the queue, every recipient final.
fn done(t: &Tern, id: &str) {
    assert!(t.wait_log(&format!("{id}: removed")), "{}", t.log_text());
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn three_thousand_pipelined_rcpts_make_one_copy() {
    let t = Setup::new().deliver().start();
    let rcpts = vec!["alice@example.test".to_owned(); 3000];
    let (seen, id) = pipelined(&t, &rcpts);
    // Duplicates count toward max_recipients (100) as Postfix's limit does;
    // each one inside it is answered as the first was.
    assert_eq!(seen.get("250 2.1.5"), Some(&100), "{seen:?}");
    assert_eq!(seen.get("452 4.5.3"), Some(&2900), "{seen:?}");
    done(&t, &id);
    assert_eq!(count(&t.maildir_new("alice")), 1);
    // Logged once for the address, not 99 times.
    let log = t.log_text();
    assert_eq!(
        log.matches("NOQUEUE: duplicate: RCPT from unknown[127.0.0.1]: <alice@example.test>: duplicate recipient, delivered once")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains(&format!("{id}: from=<sender@elsewhere.test>, size=")));
    assert!(log.contains("nrcpt=1 (queue active)"), "{log}");
}

#[test]
fn one_mailbox_however_written_keeps_its_first_dsn_parameters() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<sender@elsewhere.test>");
    for rcpt in [
        "<alice@example.test> NOTIFY=SUCCESS ORCPT=rfc822;first@example.test",
        "<ALICE@Example.TEST> NOTIFY=NEVER",
        "<\"alice\"@example.test.> ORCPT=rfc822;second@example.test",
        "<postmaster>",
        "<PostMaster@example.test>",
        "<bob@remote.test>",
        "<bob@REMOTE.test>",
        // Another mailbox: case matters in a domain that is not ours.
        "<Bob@remote.test>",
    ] {
        assert_eq!(c.cmd(&format!("RCPT TO:{rcpt}")).status(), "250 2.1.5", "{rcpt}");
    }
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(b"Subject: x\r\n\r\nx\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.status(), "250 2.0.0");
    let (env, _) = t.message(&r.queue_id());
    let got: Vec<(String, Option<String>, Option<String>)> = env
        .recipients
        .iter()
        .map(|r| (r.addr.clone(), r.notify.map(|n| n.to_string()), r.orcpt.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "alice@example.test".to_owned(),
                Some("SUCCESS".to_owned()),
                Some("rfc822;first@example.test".to_owned())
            ),
            ("postmaster@example.test".to_owned(), None, None),
            ("bob@remote.test".to_owned(), None, None),
            ("Bob@remote.test".to_owned(), None, None),
        ]
    );
}

#[test]
fn alias_overlaps_reach_each_target_once() {
    let peer = Peer::start(Script::default());
    let setup = Setup::new().deliver().open_to_all();
    let out = setup.path().join("out");
    let aliases = format!(
        "team: alice, bob\nfwd1: alice, far@peer.test\nfwd2: far@peer.test, bob\n\
         log1: {box_}, carol\nlog2: {box_}\ncmd1: \"|cat >> {pipe}\"\ncmd2: \"|cat >> {pipe}\", alice\n",
        box_ = out.join("box").display(),
        pipe = out.join("pipe").display(),
    );
    let t = setup.aliases(&aliases).set("route", &peer_route(&peer)).start();
    let rcpts: Vec<String> = [
        "team", "alice", "fwd1", "fwd2", "log1", "log2", "cmd1", "cmd2", "ALICE", "carol",
    ]
    .iter()
    .map(|n| format!("{n}@example.test"))
    .collect();
    let (seen, id) = pipelined(&t, &rcpts);
    // ALICE is alice at RCPT already; every other RCPT names another address.
    assert_eq!(seen.get("250 2.1.5"), Some(&10), "{seen:?}");
    done(&t, &id);
    for user in ["alice", "bob", "carol"] {
        assert_eq!(wait_files(&t.maildir_new(user), 1, 5).len(), 1, "{user}");
        assert_eq!(count(&t.maildir_new(user)), 1, "{user}: {}", t.log_text());
    }
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    assert_eq!(read("box").matches("Subject: once").count(), 1, "{}", read("box"));
    assert_eq!(
        read("pipe").matches("Subject: once").count(),
        1,
        "{}",
        read("pipe")
    );
    // far@peer.test is forwarded in one copy, which the peer gets once.
    assert!(wait_until(10, || !peer.messages().is_empty()), "{}", t.log_text());
    assert!(wait_until(5, || t.queued().is_empty()));
    let far: usize = peer
        .messages()
        .iter()
        .map(|m| m.1.iter().filter(|r| *r == "far@peer.test").count())
        .sum();
    assert_eq!(far, 1, "{:?}", peer.messages());
    // The collapse is in the log: who got the target first.
    let log = t.log_text();
    assert!(
        log.contains(&format!("{id}: to=<alice@example.test>, relay=local, delay="))
            && log.contains("status=sent (duplicate of <team@example.test>: delivered to maildir)"),
        "{log}"
    );
}

#[test]
fn a_remote_recipient_named_by_an_alias_too_gets_one_copy() {
    let peer = Peer::start(Script::default());
    let t = Setup::new()
        .deliver()
        .aliases("list: alice, far@peer.test\n")
        .set("route", &peer_route(&peer))
        .start();
    let rcpts = vec![
        "far@peer.test".to_owned(),
        "list@example.test".to_owned(),
        "far@PEER.Test".to_owned(),
    ];
    let (_, id) = pipelined(&t, &rcpts);
    done(&t, &id);
    assert!(wait_until(5, || t.queued().is_empty()));
    assert_eq!(count(&t.maildir_new("alice")), 1);
    let msgs = peer.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].1, vec!["far@peer.test"]);
    assert!(t.log_text().contains(
        "status=sent (delivered to maildir, duplicate of <far@peer.test>, a recipient of this message)"
    ));
}

/// A `sendmail` submission naming one mailbox in several spellings is
/// delivered once, locally and in a remote transaction.
#[test]
fn sendmail_duplicates_are_delivered_once() {
    let peer = Peer::start(Script::default());
    let t = Setup::new().deliver().set("route", &peer_route(&peer)).start();
    let out = t.setup.sendmail(
        &[
            "alice@example.test",
            "alice@EXAMPLE.test",
            "ALICE@example.test",
            "x@peer.test",
            "x@PEER.TEST",
        ],
        b"Subject: once\n\nhi\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let removed = || t.log_text().lines().any(|l| l.ends_with(": removed"));
    assert!(wait_until(10, removed), "{}", t.log_text());
    assert_eq!(count(&t.maildir_new("alice")), 1, "{}", t.log_text());
    let msgs = peer.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].1, vec!["x@peer.test"]);
}
