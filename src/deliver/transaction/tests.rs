use super::*;
use crate::deliver::outcome::Verdict;
use crate::smtp::status::Status;
use crate::spool::QueueId;

const T: Timeouts = Timeouts {
    command: Duration::from_secs(5),
    data: Duration::from_secs(5),
    data_done: Duration::from_secs(5),
};

fn envelope(rcpts: &[&str]) -> Envelope {
    let mut env = Envelope::new(QueueId::generate(), "a@example.org".to_owned(), 0);
    env.recipients = rcpts.iter().map(|r| Recipient::new((*r).to_owned())).collect();
    env
}

/// Run the transaction against `script`; the outcomes and what was sent.
fn against(
    script: &str,
    ext: &Extensions,
    env: &Envelope,
    rset: bool,
) -> (Option<(HostResult, bool)>, String) {
    against_as(Protocol::Smtp, script, ext, env, rset)
}

fn against_as(
    proto: Protocol,
    script: &str,
    ext: &Extensions,
    env: &Envelope,
    rset: bool,
) -> (Option<(HostResult, bool)>, String) {
    let mut c = crate::deliver::client::script::client(script);
    let wire = crate::deliver::client::wire_body(b"Subject: x\n\nbody\n");
    let msg = Message { env, wire: &wire };
    let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
    let r = run(proto, &mut c, ext, &msg, &rcpts, &T, rset);
    let sent = String::from_utf8_lossy(&c.stream().output).into_owned();
    (r, sent)
}

fn done(r: Option<(HostResult, bool)>) -> Vec<(Verdict, Status, String)> {
    match r {
        Some((HostResult::Done(v), _)) => v
            .into_iter()
            .map(|(o, _)| (o.verdict(), o.status(), o.detail().to_owned()))
            .collect(),
        other => panic!("not done: {other:?}"),
    }
}

#[test]
fn each_recipient_gets_its_reply_and_the_data_reply_counts_for_the_accepted() {
    let env = envelope(&["a@x.test", "b@x.test", "c@x.test"]);
    let ext = Extensions {
        pipelining: true,
        ..Extensions::default()
    };
    let script = "250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n451 4.2.0 later\r\n354 go\r\n250 2.0.0 queued as X\r\n";
    let (r, sent) = against(script, &ext, &env, false);
    assert_eq!(
        done(r),
        vec![
            (
                Verdict::Delivered,
                Status(2, 0, 0),
                "250 2.0.0 queued as X".to_owned()
            ),
            (
                Verdict::Permanent,
                Status(5, 1, 1),
                "550 5.1.1 no such user".to_owned()
            ),
            (Verdict::Temporary, Status(4, 2, 0), "451 4.2.0 later".to_owned()),
        ]
    );
    assert!(sent.starts_with(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n"
    ));
    assert!(sent.ends_with("Subject: x\r\n\r\nbody\r\n.\r\n"), "{sent}");
}

/// Run the transaction in `proto` against `script`; each recipient's
/// outcome (verdict, stage, detail) and success notice, and whether the
/// connection may carry another.
fn lmtp_against(
    proto: Protocol,
    script: &str,
    ext: &Extensions,
    env: &Envelope,
) -> (Vec<(Verdict, Stage, String, Success)>, bool) {
    let (r, _) = against_as(proto, script, ext, env, false);
    let Some((HostResult::Done(v), reusable)) = r else {
        panic!("not done: {r:?}")
    };
    let got = v
        .into_iter()
        .map(|(o, s)| (o.verdict(), o.stage(), o.detail().to_owned(), s));
    (got.collect(), reusable)
}

#[test]
fn lmtp_reads_one_reply_per_accepted_recipient() {
    let env = envelope(&["a@x.test", "b@x.test", "c@x.test"]);
    let ext = Extensions {
        pipelining: true,
        ..Extensions::default()
    };
    // RFC 2033 4.2: b was refused at RCPT, so two replies follow the
    // message, a's then c's.
    let script = "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 <b@x.test> User doesn't exist\r\n\
                      250 2.1.5 ok\r\n354 go\r\n250 2.0.0 <a@x.test> Saved\r\n\
                      452 4.2.2 <c@x.test> Quota exceeded\r\n";
    let (got, reusable) = lmtp_against(Protocol::Lmtp, script, &ext, &env);
    assert_eq!(
        got,
        vec![
            (
                Verdict::Delivered,
                Stage::Data,
                "250 2.0.0 <a@x.test> Saved".to_owned(),
                Success::Delivered
            ),
            (
                Verdict::Permanent,
                Stage::Rcpt,
                "550 5.1.1 <b@x.test> User doesn't exist".to_owned(),
                Success::Delivered
            ),
            (
                Verdict::Temporary,
                Stage::Data,
                "452 4.2.2 <c@x.test> Quota exceeded".to_owned(),
                Success::Delivered
            ),
        ]
    );
    // The full mailbox is not "too many recipients": no second transaction.
    assert!(reusable);
    // The same replies read as SMTP: the first after the message counts
    // for both, and the second is left unread (a server speaking LMTP to
    // an SMTP client would desynchronise it).
    let (smtp, _) = lmtp_against(Protocol::Smtp, script, &ext, &env);
    assert_eq!(smtp[2].2, "250 2.0.0 <a@x.test> Saved");
    assert_eq!(smtp[0].3, Success::Relayed);
    // A server that offers DSN takes the NOTIFY request over.
    let dsn = Extensions {
        dsn: true,
        ..ext.clone()
    };
    let (got, _) = lmtp_against(Protocol::Lmtp, script, &dsn, &env);
    assert_eq!(got[0].3, Success::PassedOn);
}

#[test]
fn lmtp_keeps_the_replies_that_came_before_the_connection_broke() {
    let env = envelope(&["a@x.test", "b@x.test", "c@x.test"]);
    let ext = Extensions::default();
    // Without PIPELINING: one command at a time.
    let script = "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 <a@x.test> Saved\r\n";
    let (got, reusable) = lmtp_against(Protocol::Lmtp, script, &ext, &env);
    assert!(!reusable);
    // a is delivered and stays so: it must not be sent again.
    assert_eq!(got[0].0, Verdict::Delivered);
    for g in &got[1..] {
        assert_eq!((g.0, g.1), (Verdict::Temporary, Stage::Data), "{g:?}");
        assert!(g.2.starts_with("connection lost after DATA"), "{g:?}");
    }
}

#[test]
fn lmtp_421_stands_for_the_replies_still_to_come() {
    let env = envelope(&["a@x.test", "b@x.test", "c@x.test"]);
    let ext = Extensions {
        pipelining: true,
        ..Extensions::default()
    };
    let script = "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 <a@x.test> Saved\r\n\
                      421 4.3.2 shutting down\r\n";
    let (got, reusable) = lmtp_against(Protocol::Lmtp, script, &ext, &env);
    assert!(!reusable);
    assert_eq!(got[0].0, Verdict::Delivered);
    assert_eq!(
        got[1..].iter().map(|g| (g.0, g.2.as_str())).collect::<Vec<_>>(),
        vec![(Verdict::Temporary, "421 4.3.2 shutting down"); 2]
    );
}

#[test]
fn a_temporary_mail_reply_moves_on_a_permanent_one_bounces_all() {
    let env = envelope(&["a@x.test", "b@x.test"]);
    let ext = Extensions::default();
    match against("451 4.3.0 busy\r\n", &ext, &env, false).0 {
        Some((HostResult::Next(o), true)) => {
            assert_eq!((o.stage(), o.detail()), (Stage::Mail, "451 4.3.0 busy"))
        }
        other => panic!("{other:?}"),
    }
    let got = done(against("553 5.7.1 no\r\n", &ext, &env, false).0);
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|(v, s, _)| *v == Verdict::Permanent && *s == Status(5, 7, 1)));
}

#[test]
fn recipients_refused_with_452_go_in_another_transaction() {
    let env = envelope(&["a@x.test", "b@x.test"]);
    let ext = Extensions::default();
    let script = "250 ok\r\n250 ok\r\n452 4.5.3 too many\r\n354 go\r\n250 first\r\n\
                      250 ok\r\n250 ok\r\n354 go\r\n250 second\r\n";
    let (r, sent) = against(script, &ext, &env, false);
    let got = done(r);
    assert_eq!(
        got.iter().map(|g| g.2.as_str()).collect::<Vec<_>>(),
        ["250 first", "250 second"]
    );
    assert_eq!(sent.matches("MAIL FROM").count(), 2);
    assert_eq!(sent.matches("RCPT TO:<b@x.test>").count(), 2);
}

#[test]
fn a_connection_lost_after_the_message_defers_the_accepted() {
    let env = envelope(&["a@x.test", "b@x.test"]);
    let ext = Extensions::default();
    let (r, _) = against("250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n", &ext, &env, false);
    let Some((HostResult::Done(v), reusable)) = r else {
        panic!("{r:?}")
    };
    assert!(!reusable);
    let (a, b) = (&v[0].0, &v[1].0);
    assert!(
        a.is_temporary() && a.detail().starts_with("connection lost after DATA"),
        "{a:?}"
    );
    assert_eq!(a.stage(), Stage::Data);
    assert!(b.is_permanent());
}

#[test]
fn extensions_decide_before_mail() {
    let mut env = envelope(&["δ@x.test"]);
    env.smtputf8 = true;
    let got = done(against("", &Extensions::default(), &env, false).0);
    assert_eq!(got[0].1, Status(5, 6, 7));
    let env = envelope(&["a@x.test"]);
    let small = Extensions {
        size: Some(10),
        ..Extensions::default()
    };
    let got = done(against("", &small, &env, false).0);
    assert_eq!(got[0].1, Status(5, 3, 4));
    assert!(
        got[0].2.ends_with("exceeds the receiving server's limit of 10"),
        "{:?}",
        got[0]
    );
}

#[test]
fn a_kept_connection_that_fails_rset_delivers_nothing() {
    let env = envelope(&["a@x.test"]);
    let ext = Extensions {
        pipelining: true,
        ..Extensions::default()
    };
    assert!(against("", &ext, &env, true).0.is_none());
    assert!(
        against("421 bye\r\n250 ok\r\n250 ok\r\n354 go\r\n", &ext, &env, true)
            .0
            .is_none()
    );
}

/// RFC 3030: to a server with CHUNKING the message goes as one BDAT LAST
/// chunk, undotted, after the recipients' replies; SIZE counts no dots.
#[test]
fn chunking_sends_bdat_without_dots() {
    let env = envelope(&["a@x.test"]);
    let ext = Extensions {
        pipelining: true,
        chunking: true,
        size: Some(0),
        ..Extensions::default()
    };
    let mut c = crate::deliver::client::script::client("250 ok\r\n250 ok\r\n250 2.0.0 queued\r\n");
    let wire = client::wire_body(b"Subject: x\n\n.\n..dots\nend\n");
    let msg = Message {
        env: &env,
        wire: &wire,
    };
    let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
    let r = run(Protocol::Smtp, &mut c, &ext, &msg, &rcpts, &T, false);
    let sent = String::from_utf8_lossy(&c.stream().output).into_owned();
    assert_eq!(done(r)[0].0, Verdict::Delivered);
    let data = "Subject: x\r\n\r\n.\r\n..dots\r\nend\r\n";
    assert_eq!(
        sent,
        format!(
            "MAIL FROM:<a@example.org> SIZE=30\r\nRCPT TO:<a@x.test>\r\nBDAT {} LAST\r\n{data}",
            data.len()
        )
    );
    // Nobody accepted: no BDAT at all.
    let mut c = crate::deliver::client::script::client("250 ok\r\n550 no\r\n");
    let r = run(Protocol::Smtp, &mut c, &ext, &msg, &rcpts, &T, false);
    assert_eq!(done(r)[0].0, Verdict::Permanent);
    assert!(!String::from_utf8_lossy(&c.stream().output).contains("BDAT"));
}

/// RFC 9422: RCPTMAX splits the recipients into transactions; MAILMAX
/// caps the transactions on one connection (the rest wait, and the
/// connection is not kept).
#[test]
fn limits_split_recipients_and_cap_transactions() {
    let env = envelope(&["a@x.test", "b@x.test", "c@x.test", "d@x.test", "e@x.test"]);
    let ext = Extensions {
        pipelining: true,
        rcptmax: Some(2),
        mailmax: Some(2),
        ..Extensions::default()
    };
    let one = "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 done\r\n";
    let (r, sent) = against(&one.repeat(2), &ext, &env, false);
    let Some((HostResult::Done(v), reusable)) = r else {
        panic!("{r:?}")
    };
    assert!(!reusable, "MAILMAX reached: not kept");
    assert_eq!(sent.matches("MAIL FROM").count(), 2);
    assert_eq!(sent.matches("RCPT TO").count(), 4);
    let verdicts: Vec<Verdict> = v.iter().map(|(o, _)| o.verdict()).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Delivered,
            Verdict::Delivered,
            Verdict::Delivered,
            Verdict::Delivered,
            Verdict::Temporary
        ]
    );
    assert_eq!(v[4].0.status(), Status(4, 5, 3));
    // No MAILMAX: three transactions of at most two.
    let ext = Extensions {
        rcptmax: Some(2),
        ..ext
    };
    let ext = Extensions { mailmax: None, ..ext };
    let (r, sent) = against(&one.repeat(3), &ext, &env, false);
    assert!(done(r).iter().all(|g| g.0 == Verdict::Delivered));
    assert_eq!(sent.matches("MAIL FROM").count(), 3);
}

#[test]
fn binary_needs_binarymime_and_chunking() {
    let mut env = envelope(&["a@x.test"]);
    env.body = BodyType::Binary;
    let got = done(against("", &Extensions::default(), &env, false).0);
    assert_eq!((got[0].0, got[0].1), (Verdict::Permanent, Status(5, 6, 3)));
}

/// Issue 16: no NUL and no Return-Path: ever go to a next hop.
#[test]
fn what_never_goes_out() {
    assert_eq!(
        wire(b"Subject: x\n\na\x00b\n").unwrap_err().status(),
        Status(5, 6, 0)
    );
    let w = wire(b"Return-Path: <forged@evil.test>\nSubject: x\nreturn-path: <y>\n\nReturn-Path: body\n")
        .unwrap();
    assert_eq!(w, b"Subject: x\r\n\r\nReturn-Path: body\r\n.\r\n");
    assert_eq!(
        unstuffed(&client::wire_body(b".a\n..\n.\nb")),
        b".a\r\n..\r\n.\r\nb\r\n"
    );
}

#[test]
fn mail_and_rcpt_parameters() {
    let mut env = envelope(&["a@x.test"]);
    env.body = BodyType::EightBitMime;
    env.ret = Some(DsnRet::Hdrs);
    env.envid = Some("id+1".to_owned());
    let all = Extensions {
        size: Some(0),
        eightbitmime: true,
        dsn: true,
        ..Extensions::default()
    };
    assert_eq!(
        mail_command(&env, &all, 42),
        "MAIL FROM:<a@example.org> SIZE=42 BODY=8BITMIME RET=HDRS ENVID=id+2B1"
    );
    assert_eq!(
        mail_command(&env, &Extensions::default(), 42),
        "MAIL FROM:<a@example.org>"
    );
    // RFC 8689: REQUIRETLS passed on to a server that offers it.
    env.requiretls = true;
    let rt = Extensions {
        requiretls: true,
        ..Extensions::default()
    };
    assert_eq!(
        mail_command(&env, &rt, 42),
        "MAIL FROM:<a@example.org> REQUIRETLS"
    );
    let mut r = Recipient::new("a@x.test".to_owned());
    r.notify = crate::smtp::notify::Notify::parse("SUCCESS,FAILURE");
    r.orcpt = Some("rfc822;a=b@x.test".to_owned());
    assert_eq!(
        rcpt_command(&r, &all),
        "RCPT TO:<a@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+3Db@x.test"
    );
    assert_eq!(rcpt_command(&r, &Extensions::default()), "RCPT TO:<a@x.test>");
}
