//! The milter client (src/milter/) on whatever a milter sends: the packet decoder,
//! negotiation, SMFIR_REPLYCODE validation, the header and body conversions,
//! applying modifications to a message, and a whole conversation (connect to
//! end of message, abort, quit) over a peer that sends the input in reads of
//! 1–256 bytes.
#![no_main]
use common::Peer;
use libfuzzer_sys::fuzz_target;
use std::io;
use std::time::Duration;
use tern::endpoint::Endpoint;
use tern::milter::edit::{self, EnvelopeEdit, Message, Modification, RcptEdit};
use tern::milter::negotiate::{self, ProtocolSetting};
use tern::milter::protocol::{self, Command, Response};
use tern::milter::reply_text;
use tern::milter::{ConnectInfo, Macros, Milter, MilterSpec, Transport};
mod common;

impl Transport for Peer {
    fn set_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn shutdown(&self) {}
}

const MSG: &[u8] = b"Received: by mx (tern)\nFrom: a@example.com\nSubject: hi\n\tthere\n\nbody\n";

fuzz_target!(|data: &[u8]| {
    // Packets one after another, as a milter would send them.
    let mut rest = data;
    while let Ok(Some(p)) = protocol::split_packet(rest) {
        if let Ok(r) = Response::decode(p.cmd, p.data) {
            let nul_in_text =
                matches!(&r, Response::ReplyCode(t) | Response::Quarantine(t) if t.contains(&0));
            if !nul_in_text {
                let mut out = Vec::new();
                r.encode(&mut out);
                let q = protocol::split_packet(&out).unwrap().unwrap();
                assert_eq!(
                    Response::decode(q.cmd, q.data).as_ref(),
                    Ok(&r),
                    "response round trip"
                );
            }
            if let Response::OptNeg(o) = &r {
                let _ = negotiate::negotiate(&ProtocolSetting::default(), o);
            }
        }
        let _ = Command::decode(p.cmd, p.data);
        rest = &rest[p.size..];
    }
    if let Some(r) = reply_text::parse_reply_text(data) {
        assert!((400..600).contains(&r.code) && !r.lines.is_empty());
    }

    // Conversions and applying modifications keep the message well formed.
    for leading in [false, true] {
        let v = edit::header_value_from_milter(data, leading);
        assert!(!v.contains(&b'\r') && !v.ends_with(b"\n"));
        assert!(v
            .windows(2)
            .all(|w| w[0] != b'\n' || w[1] == b' ' || w[1] == b'\t'));
    }
    let back = edit::body_from_milter(&edit::body_for_milter(data));
    if data.is_empty() || data.ends_with(b"\n") {
        assert_eq!(back, data, "body LF -> CRLF -> LF");
    } else {
        assert_eq!(back, [data, b"\n"].concat(), "body LF -> CRLF -> LF");
    }
    let m = Message::parse(data);
    if !data.contains(&b'\r') && (data.is_empty() || data.ends_with(b"\n")) {
        assert_eq!(m.to_bytes(), data, "message parse round trip");
    } else {
        assert_eq!(Message::parse(&m.to_bytes()), m, "message parse round trip");
    }

    // A whole conversation against the input.
    let Some((&step, script)) = data.split_first() else {
        return;
    };
    let spec = MilterSpec::new(Endpoint::parse("unix:/fuzz").unwrap());
    let peer = Peer::new(step, script);
    let mut milter = Milter::with_transport(spec, Box::new(peer));
    let mac = Macros {
        j: Some("mx".into()),
        queue_id: Some("ID".into()),
        ..Macros::default()
    };
    let mut msg = Message::parse(MSG);
    msg.hide_first(1);
    let _ = milter.connect(&ConnectInfo::local(), &mac);
    let _ = milter.helo("client", &mac);
    let _ = milter.mail(&["<a@example.com>"], &mac);
    let _ = milter.rcpt(&["<b@example.org>"], &mac);
    let _ = milter.data(&mac);
    let out = milter.message(&msg, &mac);
    let mut env = EnvelopeEdit {
        sender: "a@example.com".into(),
        sender_args: None,
        recipients: vec![RcptEdit::new("b@example.org")],
    };
    let _ = edit::apply(&mut msg, &mut env, &out.modifications);
    // Whatever the milter asked, the result still parses to the same fields.
    let again = Message::parse(&msg.to_bytes());
    assert_eq!(
        again.fields.len(),
        msg.fields.len(),
        "a modification broke the header section"
    );
    for m in &out.modifications {
        if let Modification::AddHeader { name, .. } | Modification::InsertHeader { name, .. } = m {
            assert!(edit::is_field_name(name));
        }
    }
    milter.abort();
    milter.quit();
});
