use super::*;
use crate::endpoint::Endpoint;
use crate::milter::chain::Chain;
use crate::milter::edit::{EnvelopeEdit, RcptEdit};
use crate::milter::protocol::{Family, OptNeg};
use crate::milter::spec::Timeouts;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the fake milter does after a command.
#[derive(Clone)]
pub(crate) enum Step {
    Send(Response),
    Raw(Vec<u8>),
    Sleep(u64),
    Close,
}
use Step::{Close, Raw, Send, Sleep};

/// A milter played by a thread on the other end of a socket pair: it answers
/// OPTNEG with `answer`, then each command with what `script` says, and keeps
/// every command it read.
pub(crate) struct Fake {
    seen: Arc<Mutex<Vec<Command>>>,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    /// Every command the milter read, once the MTA side has closed.
    pub(crate) fn finish(mut self) -> Vec<Command> {
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

fn read_command(s: &mut UnixStream) -> Option<Command> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(h) as usize];
    s.read_exact(&mut body).ok()?;
    let (&cmd, data) = body.split_first()?;
    Some(Command::decode(cmd, data).expect("MTA sent a bad packet"))
}

pub(crate) fn fake(
    answer: OptNeg,
    mut script: impl FnMut(&Command) -> Vec<Step> + std::marker::Send + 'static,
) -> (Box<dyn Transport>, Fake) {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    let thread = std::thread::spawn(move || {
        while let Some(cmd) = read_command(&mut theirs) {
            seen2.lock().unwrap().push(cmd.clone());
            let steps = match &cmd {
                Command::OptNeg(_) => vec![Send(Response::OptNeg(answer.clone()))],
                c => script(c),
            };
            for step in steps {
                match step {
                    Send(r) => {
                        let mut out = Vec::new();
                        r.encode(&mut out);
                        if theirs.write_all(&out).is_err() {
                            return;
                        }
                    }
                    Raw(b) => {
                        let _ = theirs.write_all(&b);
                    }
                    Sleep(ms) => std::thread::sleep(Duration::from_millis(ms)),
                    Close => return,
                }
            }
        }
    });
    (
        Box::new(Stream::Unix(ours)),
        Fake {
            seen,
            thread: Some(thread),
        },
    )
}

pub(crate) fn v6(actions: u32, protocol: u32) -> OptNeg {
    OptNeg {
        version: 6,
        actions,
        protocol,
        symlists: Vec::new(),
    }
}

/// Answer every event that expects a reply with Continue.
pub(crate) fn continue_all(c: &Command) -> Vec<Step> {
    match c {
        Command::Macro { .. } | Command::Abort | Command::Quit | Command::QuitNc => vec![],
        _ => vec![Send(Response::Continue)],
    }
}

pub(crate) fn spec() -> MilterSpec {
    let mut s = MilterSpec::new(Endpoint::parse("unix:/nonexistent/test.sock").unwrap());
    s.timeouts = Timeouts {
        connect: Duration::from_secs(2),
        command: Duration::from_secs(5),
        content: Duration::from_secs(5),
    };
    s
}

pub(crate) fn macros() -> Macros {
    Macros {
        j: Some("mx.example.org".into()),
        daemon_name: Some("tern".into()),
        v: Some("tern 0.1.0".into()),
        daemon_addr: Some("192.0.2.25".into()),
        client_addr: Some("198.51.100.7".into()),
        client_port: Some("40000".into()),
        client_name: Some("client.example.com".into()),
        client_ptr: Some("client.example.com".into()),
        queue_id: Some("19A2B3C4D5E".into()),
        mail_addr: Some("a@example.com".into()),
        rcpt_addr: Some("b@example.org".into()),
        ..Macros::default()
    }
}

pub(crate) fn client() -> ConnectInfo {
    ConnectInfo {
        hostname: "client.example.com".into(),
        addr: Some("198.51.100.7:40000".parse().unwrap()),
    }
}

fn macro_names(seen: &[Command], for_cmd: u8) -> Vec<String> {
    seen.iter()
        .filter_map(|c| match c {
            Command::Macro { cmd, pairs } if *cmd == for_cmd => Some(pairs),
            _ => None,
        })
        .flatten()
        .map(|(n, v)| format!("{}={}", String::from_utf8_lossy(n), String::from_utf8_lossy(v)))
        .collect()
}

fn codes(seen: &[Command]) -> String {
    seen.iter().map(|c| char::from(c.code())).collect()
}

const MSG: &[u8] = b"Received: by mx (tern)\nFrom: a@example.com\nSubject: hi\n\tthere\n\nline 1\nline 2\n";

fn message() -> Message {
    let mut m = Message::parse(MSG);
    m.hide_first(1);
    m
}

#[test]
fn a_whole_session_sends_what_postfix_sends() {
    let (t, f) = fake(v6(p::MTA_ACTIONS, 0), continue_all);
    let mut m = Milter::with_transport(spec(), t);
    let mac = macros();
    assert_eq!(m.connect(&client(), &mac), Verdict::Continue);
    assert_eq!(m.helo("client.example.com", &mac), Verdict::Continue);
    assert_eq!(m.mail(&["<a@example.com>", "SIZE=100"], &mac), Verdict::Continue);
    assert_eq!(m.rcpt(&["<b@example.org>"], &mac), Verdict::Continue);
    assert_eq!(m.data(&mac), Verdict::Continue);
    let out = m.message(&message(), &mac);
    assert_eq!(out, EomOutcome::plain(Verdict::Continue));
    m.abort();
    m.quit();
    let seen = f.finish();
    assert_eq!(codes(&seen), "ODCHDMDRDTDLDLDNDBDEAQ");
    // CONNECT carries the name, the family, the port and the address.
    assert!(seen.contains(&Command::Connect {
        hostname: b"client.example.com".to_vec(),
        family: Family::Inet,
        port: 40000,
        address: b"198.51.100.7".to_vec(),
    }));
    // The macros Postfix sends at each stage, when they have a value.
    let conn = macro_names(&seen, p::SMFIC_CONNECT);
    for want in [
        "j=mx.example.org",
        "{daemon_name}=tern",
        "{daemon_addr}=192.0.2.25",
        "{if_addr}=192.0.2.25",
        "v=tern 0.1.0",
        "_=client.example.com [198.51.100.7]",
        "{client_addr}=198.51.100.7",
        "{client_port}=40000",
        "{client_name}=client.example.com",
    ] {
        assert!(conn.contains(&want.to_owned()), "{want} not in {conn:?}");
    }
    assert!(
        !conn.iter().any(|m| m.starts_with("{client_resolve}")),
        "unset: not sent"
    );
    assert_eq!(
        macro_names(&seen, p::SMFIC_MAIL),
        ["i=19A2B3C4D5E", "{mail_addr}=a@example.com"]
    );
    assert_eq!(
        macro_names(&seen, p::SMFIC_RCPT),
        ["i=19A2B3C4D5E", "{rcpt_addr}=b@example.org"]
    );
    assert!(seen.contains(&Command::Mail(vec![
        b"<a@example.com>".to_vec(),
        b"SIZE=100".to_vec()
    ])));
    // Our Received: is hidden; values lose their leading space; folds are \n.
    let headers: Vec<_> = seen
        .iter()
        .filter_map(|c| match c {
            Command::Header { name, value } => Some((name.clone(), value.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        headers,
        [
            (b"From".to_vec(), b"a@example.com".to_vec()),
            (b"Subject".to_vec(), b"hi\n\tthere".to_vec())
        ]
    );
    assert!(seen.contains(&Command::Body(b"line 1\r\nline 2\r\n".to_vec())));
}

#[test]
fn leadspc_milters_get_and_give_the_space() {
    let (t, f) = fake(v6(p::SMFIF_ADDHDRS, p::SMFIP_HDR_LEADSPC), |c| match c {
        Command::BodyEob => vec![
            Send(Response::InsHeader {
                index: 0,
                name: b"DKIM-Signature".to_vec(),
                value: b" v=1; a=rsa-sha256;\n\tb=abc".to_vec(),
            }),
            Send(Response::Continue),
        ],
        c => continue_all(c),
    });
    let mut m = Milter::with_transport(spec(), t);
    let mac = macros();
    m.connect(&client(), &mac);
    m.mail(&["<a@example.com>"], &mac);
    let out = m.message(&message(), &mac);
    assert_eq!(
        out.modifications,
        [Modification::InsertHeader {
            index: 0,
            name: "DKIM-Signature".into(),
            value: b" v=1; a=rsa-sha256;\n\tb=abc".to_vec(),
        }]
    );
    m.quit();
    let seen = f.finish();
    assert!(seen.contains(&Command::Header {
        name: b"Subject".to_vec(),
        value: b" hi\n\tthere".to_vec()
    }));
}

#[test]
fn every_modification_is_collected_at_end_of_message() {
    let (t, f) = fake(v6(p::MTA_ACTIONS, 0), |c| match c {
        Command::BodyEob => vec![
            Send(Response::AddHeader {
                name: b"X-Spam".to_vec(),
                value: b"yes".to_vec(),
            }),
            Send(Response::InsHeader {
                index: 1,
                name: b"X-First".to_vec(),
                value: b"1".to_vec(),
            }),
            Send(Response::ChgHeader {
                index: 1,
                name: b"Subject".to_vec(),
                value: b"[SPAM] hi".to_vec(),
            }),
            Send(Response::ChgHeader {
                index: 1,
                name: b"From".to_vec(),
                value: vec![],
            }),
            Send(Response::Progress),
            Send(Response::ReplBody(b"new body\r\n".to_vec())),
            Send(Response::ReplBody(b"second chunk\r\n".to_vec())),
            Send(Response::AddRcpt(b"<c@example.net>".to_vec())),
            Send(Response::AddRcptPar {
                rcpt: b"<d@example.net>".to_vec(),
                args: Some(b"NOTIFY=NEVER".to_vec()),
            }),
            Send(Response::DelRcpt(b"<b@example.org>".to_vec())),
            Send(Response::ChgFrom {
                sender: b"<bounce@example.com>".to_vec(),
                args: None,
            }),
            Send(Response::Quarantine(b"suspicious".to_vec())),
            Send(Response::Accept),
        ],
        c => continue_all(c),
    });
    let mut m = Milter::with_transport(spec(), t);
    let mac = macros();
    m.connect(&client(), &mac);
    m.mail(&["<a@example.com>"], &mac);
    m.rcpt(&["<b@example.org>"], &mac);
    let out = m.message(&message(), &mac);
    assert_eq!(out.verdict, Verdict::Accept);
    assert_eq!(out.quarantine.as_deref(), Some("suspicious"));
    let s = |x: &str| x.to_owned();
    assert_eq!(
        out.modifications,
        [
            Modification::AddHeader {
                name: s("X-Spam"),
                value: b" yes".to_vec()
            },
            Modification::InsertHeader {
                index: 1,
                name: s("X-First"),
                value: b" 1".to_vec()
            },
            Modification::ChangeHeader {
                index: 1,
                name: s("Subject"),
                value: b" [SPAM] hi".to_vec()
            },
            Modification::ChangeHeader {
                index: 1,
                name: s("From"),
                value: vec![]
            },
            Modification::ReplaceBody(b"new body\nsecond chunk\n".to_vec()),
            Modification::AddRcpt {
                rcpt: s("<c@example.net>"),
                args: None
            },
            Modification::AddRcpt {
                rcpt: s("<d@example.net>"),
                args: Some(s("NOTIFY=NEVER"))
            },
            Modification::DelRcpt(s("<b@example.org>")),
            Modification::ChangeFrom {
                sender: s("<bounce@example.com>"),
                args: None
            },
        ]
    );
    // Applied, they make the message tern queues.
    let mut msg = message();
    let mut env = EnvelopeEdit {
        sender: s("a@example.com"),
        sender_args: None,
        recipients: vec![RcptEdit::new("b@example.org")],
    };
    assert!(edit::apply(&mut msg, &mut env, &out.modifications).is_empty());
    assert_eq!(
        msg.to_bytes(),
        b"Received: by mx (tern)\nX-First: 1\nSubject: [SPAM] hi\nX-Spam: yes\n\nnew body\nsecond chunk\n"
    );
    assert_eq!(env.sender, "bounce@example.com");
    let rcpts: Vec<_> = env.recipients.iter().map(|r| r.addr.as_str()).collect();
    assert_eq!(rcpts, ["c@example.net", "d@example.net"]);
    m.quit();
    f.finish();
}

#[test]
fn no_reply_steps_are_not_waited_for_and_declined_events_not_sent() {
    let steps = p::SMFIP_NR_HDR | p::SMFIP_NR_CONN | p::SMFIP_NOHELO | p::SMFIP_NR_BODY | p::SMFIP_NOEOH;
    let (t, f) = fake(v6(0, steps), |c| match c {
        // Any reply here would desynchronise the conversation.
        Command::Connect { .. } | Command::Header { .. } | Command::Body(_) | Command::Helo(_) => vec![],
        c => continue_all(c),
    });
    let mut m = Milter::with_transport(spec(), t);
    let mac = macros();
    assert_eq!(m.connect(&client(), &mac), Verdict::Continue);
    assert_eq!(m.helo("h", &mac), Verdict::Continue);
    assert_eq!(m.mail(&["<a@example.com>"], &mac), Verdict::Continue);
    assert_eq!(m.message(&message(), &mac).verdict, Verdict::Continue);
    m.quit();
    let seen = f.finish();
    // HELO's macros go, HELO does not (no HELO macros have values here, so
    // nothing at all); no EOH.
    assert!(!seen.iter().any(|c| matches!(c, Command::Helo(_) | Command::Eoh)));
    assert_eq!(codes(&seen), "ODCDMDLDLDBDEQ");
}

#[test]
fn large_bodies_go_in_chunks_and_skip_stops_them() {
    let body: Vec<u8> = b"0123456789abcdefghijklmnopqrstuvwxyz\n".repeat(5000);
    let mut msg = message();
    msg.body = body.clone();
    let (t, f) = fake(v6(0, p::SMFIP_SKIP), continue_all);
    let mut m = Milter::with_transport(spec(), t);
    let mac = macros();
    m.connect(&client(), &mac);
    m.mail(&["<a@example.com>"], &mac);
    m.message(&msg, &mac);
    m.quit();
    let seen = f.finish();
    let chunks: Vec<usize> = seen
        .iter()
        .filter_map(|c| match c {
            Command::Body(b) => Some(b.len()),
            _ => None,
        })
        .collect();
    let crlf = edit::body_for_milter(&body);
    assert_eq!(chunks, [65535, 65535, crlf.len() - 2 * 65535]);
    // With SMFIR_SKIP after the first chunk, the rest is not sent.
    let (t, f) = fake(v6(0, 0), |c| match c {
        Command::Body(_) => vec![Send(Response::Skip)],
        c => continue_all(c),
    });
    let mut m = Milter::with_transport(spec(), t);
    m.connect(&client(), &mac);
    m.mail(&["<a@example.com>"], &mac);
    assert_eq!(m.message(&msg, &mac).verdict, Verdict::Continue);
    m.quit();
    let seen = f.finish();
    assert_eq!(seen.iter().filter(|c| matches!(c, Command::Body(_))).count(), 1);
    assert!(seen.contains(&Command::BodyEob));
}

#[test]
fn refusal_at_connect_is_sticky_and_closes() {
    let (t, f) = fake(v6(0, 0), |c| match c {
        Command::Connect { .. } => vec![Send(Response::Reject)],
        c => continue_all(c),
    });
    let mut m = Milter::with_transport(spec(), t);
    let mac = macros();
    let rej = Verdict::Reject(Refusal::Plain);
    assert_eq!(m.connect(&client(), &mac), rej);
    assert_eq!(m.helo("h", &mac), rej);
    assert_eq!(m.mail(&["<a@example.com>"], &mac), rej);
    assert_eq!(m.other(), rej);
    assert!(!m.usable());
    // The socket closed: the fake saw EOF after CONNECT.
    assert_eq!(codes(&f.finish()), "ODC");
}

#[test]
fn accept_at_connect_ends_the_milters_part() {
    let (t, f) = fake(v6(0, 0), |c| match c {
        Command::Helo(_) => vec![Send(Response::Accept)],
        c => continue_all(c),
    });
    let mut m = Milter::with_transport(spec(), t);
    let mac = macros();
    m.connect(&client(), &mac);
    assert_eq!(m.helo("h", &mac), Verdict::Accept);
    assert_eq!(m.mail(&["<a@example.com>"], &mac), Verdict::Continue);
    assert_eq!(m.message(&message(), &mac).verdict, Verdict::Accept);
    assert_eq!(codes(&f.finish()), "ODCH");
}

#[test]
fn envelope_refusals_and_custom_replies() {
    let (t, f) = fake(v6(0, 0), |c| match c {
        Command::Rcpt(a) if a[0] == b"<temp@example.org>" => vec![Send(Response::Tempfail)],
        Command::Rcpt(a) if a[0] == b"<custom@example.org>" => {
            vec![Send(Response::ReplyCode(
                b"550-5.1.1 No such user\r\n550 5.1.1 really".to_vec(),
            ))]
        }
        Command::Rcpt(a) if a[0] == b"<busy@example.org>" => {
            vec![Send(Response::ReplyCode(b"452 4.2.2 Over quota".to_vec()))]
        }
        c => continue_all(c),
    });
    let mut m = Milter::with_transport(spec(), t);
    let mac = macros();
    m.connect(&client(), &mac);
    m.mail(&["<a@example.com>"], &mac);
    assert_eq!(
        m.rcpt(&["<temp@example.org>"], &mac),
        Verdict::Tempfail(Refusal::Plain)
    );
    let Verdict::Reject(Refusal::Custom(r)) = m.rcpt(&["<custom@example.org>"], &mac) else {
        panic!("not a custom reject");
    };
    assert_eq!(
        (r.code, r.esc, r.lines.len()),
        (550, Some(crate::smtp::status::Status(5, 1, 1)), 2)
    );
    let Verdict::Tempfail(Refusal::Custom(r)) = m.rcpt(&["<busy@example.org>"], &mac) else {
        panic!("not a custom tempfail");
    };
    assert_eq!(r.code, 452);
    // A refused recipient does not end the transaction.
    assert_eq!(m.rcpt(&["<b@example.org>"], &mac), Verdict::Continue);
    m.quit();
    assert_eq!(codes(&f.finish()), "ODCDMDRDRDRDRQ");
}

#[test]
fn a_malformed_reply_code_is_a_configuration_error() {
    let (t, f) = fake(v6(0, 0), |c| match c {
        Command::Mail(_) => vec![Send(Response::ReplyCode(b"250 looks fine".to_vec()))],
        c => continue_all(c),
    });
    let mut m = Milter::with_transport(spec(), t);
    let mac = macros();
    m.connect(&client(), &mac);
    let v = Verdict::Tempfail(Refusal::Misconfigured);
    assert_eq!(m.mail(&["<a@example.com>"], &mac), v);
    assert_eq!(m.rcpt(&["<b@example.org>"], &mac), v, "sticky");
    f.finish();
}

#[test]
fn a_silent_milter_costs_the_timeout_then_the_default_action() {
    for (action, want) in [
        (DefaultAction::Tempfail, Verdict::Tempfail(Refusal::Unavailable)),
        (DefaultAction::Reject, Verdict::Reject(Refusal::Unavailable)),
        (DefaultAction::Accept, Verdict::Continue),
        (DefaultAction::Shutdown, Verdict::Shutdown),
    ] {
        let (t, f) = fake(v6(0, 0), |c| match c {
            Command::Rcpt(_) => vec![Sleep(600)],
            c => continue_all(c),
        });
        let mut sp = spec();
        sp.timeouts.command = Duration::from_millis(200);
        sp.default_action = action;
        let mut m = Milter::with_transport(sp, t);
        let mac = macros();
        m.connect(&client(), &mac);
        m.mail(&["<a@example.com>"], &mac);
        let start = Instant::now();
        assert_eq!(m.rcpt(&["<b@example.org>"], &mac), want);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // From now on nothing is sent, and every stage gets the same.
        assert_eq!(m.data(&mac), want);
        assert_eq!(m.message(&message(), &mac).verdict, want);
        drop(m);
        assert_eq!(codes(&f.finish()), "ODCDMDR");
    }
}

#[test]
fn progress_restarts_the_clock() {
    let (t, f) = fake(v6(0, 0), |c| match c {
        Command::BodyEob => vec![
            Sleep(150),
            Send(Response::Progress),
            Sleep(150),
            Send(Response::Progress),
            Sleep(150),
            Send(Response::Continue),
        ],
        c => continue_all(c),
    });
    let mut sp = spec();
    sp.timeouts.content = Duration::from_millis(300);
    let mut m = Milter::with_transport(sp, t);
    let mac = macros();
    m.connect(&client(), &mac);
    m.mail(&["<a@example.com>"], &mac);
    assert_eq!(m.message(&message(), &mac).verdict, Verdict::Continue);
    m.quit();
    f.finish();
}

#[test]
fn a_milter_that_is_down_gets_the_default_action_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut sp = spec();
    sp.endpoint = Endpoint::Unix(dir.path().join("none.sock"));
    let mut m = Milter::new(sp.clone());
    let start = Instant::now();
    assert_eq!(
        m.connect(&client(), &macros()),
        Verdict::Tempfail(Refusal::Unavailable)
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(m.helo("h", &macros()), Verdict::Tempfail(Refusal::Unavailable));
    sp.default_action = DefaultAction::Accept;
    let mut m = Milter::new(sp);
    assert_eq!(m.connect(&client(), &macros()), Verdict::Continue);
    assert_eq!(m.mail(&["<a@example.com>"], &macros()), Verdict::Continue);
}

#[test]
fn protocol_violations_are_communication_errors() {
    let cases: Vec<(&str, Vec<Step>)> = vec![
        ("huge length", vec![Raw(b"\x7f\xff\xff\xff".to_vec())]),
        ("zero length", vec![Raw(b"\0\0\0\0".to_vec())]),
        ("unknown reply", vec![Raw(b"\0\0\0\x01Z".to_vec())]),
        ("data after continue", vec![Raw(b"\0\0\0\x02cX".to_vec())]),
        (
            "modification before end of message",
            vec![Send(Response::AddHeader {
                name: b"X".to_vec(),
                value: b"y".to_vec(),
            })],
        ),
        ("closed", vec![Close]),
        (
            "half a packet then closed",
            vec![Raw(b"\0\0\0\x09h".to_vec()), Close],
        ),
    ];
    for (what, steps) in cases {
        let (t, f) = fake(v6(0, 0), move |c| match c {
            Command::Mail(_) => steps.clone(),
            c => continue_all(c),
        });
        let mut m = Milter::with_transport(spec(), t);
        let mac = macros();
        m.connect(&client(), &mac);
        assert_eq!(
            m.mail(&["<a@example.com>"], &mac),
            Verdict::Tempfail(Refusal::Unavailable),
            "{what}"
        );
        drop(m);
        f.finish();
    }
}

#[test]
fn bad_modifications_are_configuration_errors() {
    let cases: Vec<(&str, Vec<Step>, Verdict)> = vec![
        (
            "header name with a colon",
            vec![Send(Response::AddHeader {
                name: b"X-A: b".to_vec(),
                value: b"c".to_vec(),
            })],
            Verdict::Tempfail(Refusal::Misconfigured),
        ),
        (
            "empty header name",
            vec![Send(Response::ChgHeader {
                index: 1,
                name: vec![],
                value: b"c".to_vec(),
            })],
            Verdict::Tempfail(Refusal::Misconfigured),
        ),
        (
            "body replacement interleaved",
            vec![
                Send(Response::ReplBody(b"a\r\n".to_vec())),
                Send(Response::AddRcpt(b"<c@example.net>".to_vec())),
                Send(Response::ReplBody(b"b\r\n".to_vec())),
            ],
            Verdict::Tempfail(Refusal::Misconfigured),
        ),
    ];
    for (what, steps, want) in cases {
        let (t, f) = fake(v6(p::MTA_ACTIONS, 0), move |c| match c {
            Command::BodyEob => steps.clone(),
            c => continue_all(c),
        });
        let mut sp = spec();
        sp.max_body = 1000;
        let mut m = Milter::with_transport(sp, t);
        let mac = macros();
        m.connect(&client(), &mac);
        m.mail(&["<a@example.com>"], &mac);
        let out = m.message(&message(), &mac);
        assert_eq!(out.verdict, want, "{what}");
        assert!(out.modifications.is_empty(), "{what}");
        drop(m);
        f.finish();
    }
}

#[test]
fn a_replacement_body_over_the_limit_refuses_only_that_message() {
    let (t, f) = fake(v6(p::MTA_ACTIONS, 0), |c| match c {
        Command::BodyEob => vec![
            Send(Response::ReplBody(vec![b'x'; 600])),
            Send(Response::ReplBody(vec![b'x'; 600])),
            Send(Response::AddHeader {
                name: b"X-A".to_vec(),
                value: b"1".to_vec(),
            }),
            Send(Response::Continue),
        ],
        c => continue_all(c),
    });
    let mut sp = spec();
    sp.max_body = 1000;
    let mut m = Milter::with_transport(sp, t);
    let mac = macros();
    m.connect(&client(), &mac);
    m.mail(&["<a@example.com>"], &mac);
    let out = m.message(&message(), &mac);
    assert_eq!(out.verdict, Verdict::Reject(Refusal::TooBig));
    assert!(out.modifications.is_empty());
    // The conversation stayed in step: the next message goes through.
    m.abort();
    assert_eq!(m.mail(&["<a@example.com>"], &mac), Verdict::Continue);
    assert!(m.usable());
    m.quit();
    assert_eq!(codes(&f.finish()).matches('E').count(), 1);
}

/// A transport that records whether each read was preceded by ack_now().
struct Acking {
    inner: Box<dyn Transport>,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl Read for Acking {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.log.lock().unwrap().push("read");
        self.inner.read(buf)
    }
}

impl Write for Acking {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Transport for Acking {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.inner.set_timeout(t)
    }
    fn shutdown(&self) {
        self.inner.shutdown();
    }
    fn ack_now(&self) {
        self.log.lock().unwrap().push("ack");
    }
}

#[test]
fn every_read_of_a_reply_asks_for_an_immediate_ack() {
    // libmilter writes a reply's packets one by one with Nagle on: unless we
    // ACK at once, each packet after the first waits ~40 ms for our delayed
    // ACK (measured with OpenDKIM: 45 ms a message instead of 1.5 ms).
    let (t, f) = fake(v6(p::SMFIF_ADDHDRS, 0), |c| match c {
        Command::BodyEob => vec![
            Send(Response::AddHeader {
                name: b"X-A".to_vec(),
                value: b"1".to_vec(),
            }),
            Sleep(20),
            Send(Response::Continue),
        ],
        c => continue_all(c),
    });
    let log = Arc::new(Mutex::new(Vec::new()));
    let acking = Acking {
        inner: t,
        log: Arc::clone(&log),
    };
    let mut m = Milter::with_transport(spec(), Box::new(acking));
    let mac = macros();
    m.connect(&client(), &mac);
    m.mail(&["<a@example.com>"], &mac);
    assert_eq!(m.message(&message(), &mac).modifications.len(), 1);
    m.quit();
    f.finish();
    let log = log.lock().unwrap();
    assert!(log.iter().filter(|e| **e == "read").count() >= 6, "{log:?}");
    for (i, e) in log.iter().enumerate() {
        if *e == "read" {
            assert_eq!(
                log.get(i.wrapping_sub(1)),
                Some(&"ack"),
                "read without ack: {log:?}"
            );
        }
    }
}

#[test]
fn content_refusal_stops_the_content_and_eom_reports_it() {
    let (t, f) = fake(v6(0, 0), |c| match c {
        Command::Header { name, .. } if name == b"From" => vec![Send(Response::Discard)],
        c => continue_all(c),
    });
    let mut m = Milter::with_transport(spec(), t);
    let mac = macros();
    m.connect(&client(), &mac);
    m.mail(&["<a@example.com>"], &mac);
    assert_eq!(m.message(&message(), &mac).verdict, Verdict::Discard);
    m.abort();
    // The next transaction starts clean.
    assert_eq!(m.mail(&["<a@example.com>"], &mac), Verdict::Continue);
    m.quit();
    assert_eq!(codes(&f.finish()), "ODCDMDLADMQ");
}

#[test]
fn older_milters_get_only_their_versions_events_and_their_own_macro_lists() {
    let mut answer = v6(0, 0);
    answer.version = 2;
    answer.symlists = vec![(Stage::Mail as u32, b"{mail_addr}".to_vec())];
    let (t, f) = fake(answer, continue_all);
    let mut m = Milter::with_transport(spec(), t);
    let mac = macros();
    m.connect(&client(), &mac);
    m.mail(&["<a@example.com>"], &mac);
    assert_eq!(m.data(&mac), Verdict::Continue);
    assert_eq!(m.unknown("XYZZY", &mac), Verdict::Continue);
    m.quit();
    let seen = f.finish();
    assert_eq!(codes(&seen), "ODCDMQ", "no DATA, no UNKNOWN, no DATA macros");
    assert_eq!(macro_names(&seen, p::SMFIC_MAIL), ["{mail_addr}=a@example.com"]);
}

#[test]
fn negotiation_failures_use_the_default_action() {
    for answer in [
        OptNeg {
            version: 7,
            ..v6(0, 0)
        },
        v6(1 << 12, 0),
    ] {
        let (t, f) = fake(answer, continue_all);
        let mut m = Milter::with_transport(spec(), t);
        assert_eq!(
            m.connect(&client(), &macros()),
            Verdict::Tempfail(Refusal::Unavailable)
        );
        assert!(m.negotiated().is_none());
        assert_eq!(codes(&f.finish()), "O");
    }
}

#[test]
fn chain_runs_in_order_and_applies_changes_between_milters() {
    let (t1, f1) = fake(v6(p::MTA_ACTIONS, 0), |c| match c {
        Command::Rcpt(a) if a[0] == b"<spam@example.org>" => vec![Send(Response::Reject)],
        Command::BodyEob => vec![
            Send(Response::AddHeader {
                name: b"X-First".to_vec(),
                value: b"seen".to_vec(),
            }),
            Send(Response::AddRcpt(b"<archive@example.org>".to_vec())),
            Send(Response::Accept),
        ],
        c => continue_all(c),
    });
    let (t2, f2) = fake(v6(p::MTA_ACTIONS, 0), |c| match c {
        Command::BodyEob => vec![
            Send(Response::ChgHeader {
                index: 1,
                name: b"X-First".to_vec(),
                value: b"changed by second".to_vec(),
            }),
            Send(Response::Quarantine(b"second says hold".to_vec())),
            Send(Response::Continue),
        ],
        c => continue_all(c),
    });
    let mut chain = Chain::from_milters(vec![
        Milter::with_transport(spec(), t1),
        Milter::with_transport(spec(), t2),
    ]);
    let mac = macros();
    assert_eq!(chain.connect(&client(), &mac), Verdict::Continue);
    assert_eq!(chain.mail(&["<a@example.com>"], &mac), Verdict::Continue);
    assert_eq!(
        chain.rcpt(&["<spam@example.org>"], &mac),
        Verdict::Reject(Refusal::Plain)
    );
    assert_eq!(chain.rcpt(&["<b@example.org>"], &mac), Verdict::Continue);
    let mut msg = message();
    let mut env = EnvelopeEdit {
        sender: "a@example.com".into(),
        sender_args: None,
        recipients: vec![RcptEdit::new("b@example.org")],
    };
    let out = chain.message(&mut msg, &mut env, &mac);
    assert_eq!(out.verdict, Verdict::Continue);
    assert!(out.modified);
    assert_eq!(out.quarantine.as_deref(), Some("second says hold"));
    assert!(msg
        .to_bytes()
        .ends_with(b"X-First: changed by second\n\nline 1\nline 2\n"));
    assert_eq!(env.recipients.len(), 2);
    chain.abort();
    chain.quit();
    let seen2 = f2.finish();
    // The second milter never saw the recipient the first refused, and saw
    // the header the first added.
    assert!(!seen2.contains(&Command::Rcpt(vec![b"<spam@example.org>".to_vec()])));
    assert!(seen2.contains(&Command::Header {
        name: b"X-First".to_vec(),
        value: b"seen".to_vec()
    }));
    f1.finish();
}

#[test]
fn chain_stops_at_the_first_refusal_at_end_of_message() {
    let (t1, f1) = fake(v6(0, 0), |c| match c {
        Command::BodyEob => vec![Send(Response::ReplyCode(b"554 5.7.1 Spam".to_vec()))],
        c => continue_all(c),
    });
    let (t2, f2) = fake(v6(0, 0), continue_all);
    let mut chain = Chain::from_milters(vec![
        Milter::with_transport(spec(), t1),
        Milter::with_transport(spec(), t2),
    ]);
    let mac = macros();
    chain.connect(&client(), &mac);
    chain.mail(&["<a@example.com>"], &mac);
    let out = chain.message(&mut message(), &mut EnvelopeEdit::default(), &mac);
    assert!(matches!(out.verdict, Verdict::Reject(Refusal::Custom(ref r)) if r.code == 554));
    chain.quit();
    f1.finish();
    assert!(!f2.finish().contains(&Command::BodyEob));
}

#[test]
fn macros_lookup_handles_both_name_forms_and_defaults() {
    let mut m = macros();
    assert_eq!(m.lookup("j").as_deref(), Some("mx.example.org"));
    assert_eq!(m.lookup("{j}").as_deref(), Some("mx.example.org"));
    assert_eq!(m.lookup("{if_addr}").as_deref(), Some("192.0.2.25"));
    assert_eq!(m.lookup("{auth_type}"), None);
    m.other.push(("{auth_type}".into(), "none".into()));
    m.other.push(("x".into(), "1".into()));
    assert_eq!(m.lookup("{auth_type}").as_deref(), Some("none"));
    assert_eq!(m.lookup("{x}").as_deref(), Some("1"));
    m.client_name = Some("other.example.com".into());
    assert_eq!(
        m.lookup("_").as_deref(),
        Some("client.example.com [198.51.100.7] (may be forged)")
    );
}

#[test]
fn unknown_client_names_become_address_literals() {
    let info = ConnectInfo {
        hostname: "unknown".into(),
        addr: Some("[2001:db8::1]:25".parse().unwrap()),
    };
    assert_eq!(
        info.command(),
        Command::Connect {
            hostname: b"[2001:db8::1]".to_vec(),
            family: Family::Inet6,
            port: 25,
            address: b"2001:db8::1".to_vec()
        }
    );
    assert!(matches!(
        ConnectInfo::local().command(),
        Command::Connect {
            family: Family::Inet,
            ..
        }
    ));
}

#[test]
fn milter_lists_parse_with_per_milter_settings() {
    let defaults = spec();
    let dur = |s: &str| {
        s.strip_suffix('s')
            .and_then(|n| n.parse().ok())
            .map(Duration::from_secs)
    };
    let l = MilterSpec::parse_list(
        "inet:127.0.0.1:11332 {unix:/run/opendkim/opendkim.sock, default_action = accept, \
             command_timeout = 10s, protocol = 4} , inet:8891@localhost",
        &defaults,
        &dur,
    )
    .unwrap();
    assert_eq!(l.len(), 3);
    assert_eq!(l[0].endpoint.to_string(), "inet:127.0.0.1:11332");
    assert_eq!(l[0].default_action, DefaultAction::Tempfail);
    assert_eq!(l[1].endpoint.to_string(), "unix:/run/opendkim/opendkim.sock");
    assert_eq!(l[1].default_action, DefaultAction::Accept);
    assert_eq!(l[1].timeouts.command, Duration::from_secs(10));
    assert_eq!(l[1].protocol.version, 4);
    assert_eq!(l[2].endpoint.to_string(), "inet:localhost:8891");
    for bad in [
        "{ inet:h:1, nope = 1 }",
        "{ inet:h:1, command_timeout = soon }",
        "{ inet:h:1",
        "tcp:x",
    ] {
        assert!(MilterSpec::parse_list(bad, &defaults, &dur).is_err(), "{bad}");
    }
    assert!(MilterSpec::parse_list("", &defaults, &dur).unwrap().is_empty());
}
