use super::*;
use crate::milter::negotiate::ProtocolSetting;

fn roundtrip_command(c: Command) {
    let mut out = Vec::new();
    c.encode(&mut out);
    let p = split_packet(&out).unwrap().unwrap();
    assert_eq!(p.size, out.len());
    assert_eq!(Command::decode(p.cmd, p.data), Ok(c));
}

fn roundtrip_response(r: Response) {
    let mut out = Vec::new();
    r.encode(&mut out);
    let p = split_packet(&out).unwrap().unwrap();
    assert_eq!(p.size, out.len());
    assert_eq!(Response::decode(p.cmd, p.data), Ok(r));
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[test]
fn every_command_round_trips() {
    for c in [
        Command::OptNeg(ProtocolSetting::default().optneg()),
        Command::Macro {
            cmd: SMFIC_CONNECT,
            pairs: vec![(v("j"), v("mx.example.org")), (v("{daemon_name}"), v("tern"))],
        },
        Command::Macro {
            cmd: SMFIC_BODYEOB,
            pairs: vec![],
        },
        Command::Connect {
            hostname: v("client.example.com"),
            family: Family::Inet,
            port: 40000,
            address: v("192.0.2.1"),
        },
        Command::Connect {
            hostname: v("[2001:db8::1]"),
            family: Family::Inet6,
            port: 25,
            address: v("2001:db8::1"),
        },
        Command::Connect {
            hostname: v("localhost"),
            family: Family::Unknown,
            port: 0,
            address: vec![],
        },
        Command::Helo(v("client.example.com")),
        Command::Mail(vec![v("<a@example.com>"), v("SIZE=100"), v("BODY=8BITMIME")]),
        Command::Rcpt(vec![v("<b@example.org>")]),
        Command::Data,
        Command::Header {
            name: v("Subject"),
            value: v(" hi\n\tthere"),
        },
        Command::Eoh,
        Command::Body(b"line\r\n\0binary\xff\r\n".to_vec()),
        Command::BodyEob,
        Command::Abort,
        Command::Quit,
        Command::QuitNc,
        Command::Unknown(v("XYZZY now")),
    ] {
        roundtrip_command(c);
    }
}

#[test]
fn every_response_round_trips() {
    for r in [
        Response::OptNeg(OptNeg {
            version: 6,
            actions: SMFIF_ADDHDRS | SMFIF_CHGBODY,
            protocol: SMFIP_NOCONNECT | SMFIP_HDR_LEADSPC,
            symlists: vec![(Stage::Mail as u32, v("{mail_addr} i")), (5, v("i"))],
        }),
        Response::Accept,
        Response::Continue,
        Response::Reject,
        Response::Tempfail,
        Response::Discard,
        Response::ConnFail,
        Response::Shutdown,
        Response::Progress,
        Response::Skip,
        Response::ReplyCode(v("554 5.7.1 Spam")),
        Response::Quarantine(v("looks odd")),
        Response::AddHeader {
            name: v("X-Spam"),
            value: v("yes"),
        },
        Response::InsHeader {
            index: 0,
            name: v("DKIM-Signature"),
            value: v(" v=1;\n\ta=rsa-sha256"),
        },
        Response::ChgHeader {
            index: 2,
            name: v("Subject"),
            value: vec![],
        },
        Response::ReplBody(b"new\r\nbody\r\n".to_vec()),
        Response::AddRcpt(v("<c@example.net>")),
        Response::AddRcptPar {
            rcpt: v("<c@example.net>"),
            args: Some(v("NOTIFY=NEVER")),
        },
        Response::AddRcptPar {
            rcpt: v("<c@example.net>"),
            args: None,
        },
        Response::DelRcpt(v("<b@example.org>")),
        Response::ChgFrom {
            sender: v("<>"),
            args: None,
        },
        Response::ChgFrom {
            sender: v("<bounce@example.com>"),
            args: Some(v("RET=HDRS")),
        },
        Response::SetSymList {
            stage: 2,
            macros: v("{auth_authen}"),
        },
    ] {
        roundtrip_response(r);
    }
}

#[test]
fn wire_format_is_libmilters() {
    // Length counts the command byte; numbers big-endian; strings NUL-terminated.
    let mut out = Vec::new();
    Command::Helo(v("h")).encode(&mut out);
    assert_eq!(out, b"\0\0\0\x03Hh\0");
    out.clear();
    Command::OptNeg(ProtocolSetting::default().optneg()).encode(&mut out);
    assert_eq!(&out[..5], b"\0\0\0\x0dO");
    assert_eq!(&out[5..9], &6u32.to_be_bytes());
    assert_eq!(&out[9..13], &0x1ffu32.to_be_bytes());
    assert_eq!(&out[13..17], &0x1f_ffffu32.to_be_bytes());
    out.clear();
    Command::Connect {
        hostname: v("h"),
        family: Family::Inet,
        port: 0x1234,
        address: v("1.2.3.4"),
    }
    .encode(&mut out);
    let want = [&b"\0\0\0\x0eCh\0"[..], b"4", &[0x12, 0x34], b"1.2.3.4\0"].concat();
    assert_eq!(out, want);
}

#[test]
fn nul_inside_a_string_cannot_shift_the_fields() {
    let mut out = Vec::new();
    Command::Header {
        name: v("X\0Y"),
        value: v("a\0b"),
    }
    .encode(&mut out);
    let p = split_packet(&out).unwrap().unwrap();
    assert_eq!(
        Command::decode(p.cmd, p.data),
        Ok(Command::Header {
            name: v("XY"),
            value: v("ab"),
        })
    );
}

#[test]
fn framing_refuses_hostile_lengths_and_waits_for_the_rest() {
    assert_eq!(split_packet(b""), Ok(None));
    assert_eq!(split_packet(b"\0\0\0"), Ok(None));
    assert_eq!(split_packet(b"\0\0\0\x02c"), Ok(None));
    assert_eq!(split_packet(b"\0\0\0\0"), Err(ProtocolError::EmptyPacket));
    assert_eq!(
        split_packet(b"\xff\xff\xff\xff"),
        Err(ProtocolError::TooLong(0xffff_ffff))
    );
    assert_eq!(packet_len((MAX_PACKET as u32).to_be_bytes()), Ok(MAX_PACKET));
    assert!(packet_len((MAX_PACKET as u32 + 1).to_be_bytes()).is_err());
    assert_eq!(
        split_packet(b"\0\0\0\x01cextra"),
        Ok(Some(Packet {
            cmd: b'c',
            data: b"",
            size: 5
        }))
    );
}

#[test]
fn hostile_packets_are_errors_not_panics() {
    let short = |c: u8| Err::<Response, _>(ProtocolError::Short(c));
    assert_eq!(Response::decode(b'c', b"x"), Err(ProtocolError::Trailing(b'c')));
    assert_eq!(Response::decode(b'a', b"\0"), Err(ProtocolError::Trailing(b'a')));
    assert_eq!(Response::decode(b'h', b""), short(b'h'));
    assert_eq!(
        Response::decode(b'h', b"name"),
        Err(ProtocolError::Unterminated(b'h'))
    );
    assert_eq!(Response::decode(b'h', b"name\0"), short(b'h'));
    assert_eq!(
        Response::decode(b'h', b"name\0v\0x"),
        Err(ProtocolError::Trailing(b'h'))
    );
    assert_eq!(Response::decode(b'm', b"\0\0\0"), short(b'm'));
    assert_eq!(Response::decode(b'i', b"\0\0\0\x01"), short(b'i'));
    assert_eq!(Response::decode(b'+', b""), short(b'+'));
    assert_eq!(
        Response::decode(b'e', b"<a>\0args\0more"),
        Err(ProtocolError::Trailing(b'e'))
    );
    assert_eq!(Response::decode(b'O', b"\0\0\0\x06"), short(b'O'));
    assert_eq!(
        Response::decode(b'O', b"\0\0\0\x06\0\0\0\0\0\0\0\0\0\0\0\x02{x}"),
        Err(ProtocolError::Unterminated(b'O'))
    );
    assert_eq!(
        Response::decode(b'Z', b""),
        Err(ProtocolError::UnknownCommand(b'Z'))
    );
    assert_eq!(Command::decode(b'C', b"h\0X"), Err(ProtocolError::Short(b'C')));
    assert_eq!(
        Command::decode(b'C', b"h\x004\x01"),
        Err(ProtocolError::Short(b'C'))
    );
    assert_eq!(Command::decode(b'D', b""), Err(ProtocolError::Short(b'D')));
    assert_eq!(Command::decode(b'D', b"Cj\0"), Err(ProtocolError::Short(b'D')));
    // Free-text replies keep everything but one final NUL.
    assert_eq!(
        Response::decode(b'y', b"550 5.7.1 no\0"),
        Ok(Response::ReplyCode(v("550 5.7.1 no")))
    );
    assert_eq!(Response::decode(b'q', b""), Ok(Response::Quarantine(vec![])));
}
