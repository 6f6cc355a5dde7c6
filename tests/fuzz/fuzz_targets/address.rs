//! The address and ESMTP parameter parsers: reverse and forward paths with what
//! follows them (the parameters), mailboxes and domains; MAIL/RCPT lines whole.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern::smtp::address::{parse_forward_path, parse_reverse_path, Domain, Mailbox, PathSyntax};
mod common;

fuzz_target!(|data: &[u8]| {
    let bytes = common::raw_or_mapped(data);
    let s = String::from_utf8_lossy(&bytes);
    for syntax in [PathSyntax::Strict, PathSyntax::Lenient] {
        if let Ok((_, rest)) = parse_reverse_path(&s, syntax) {
            // The rest is a suffix of the input (the parameters).
            assert!(s.ends_with(rest));
        }
        if let Ok((_, rest)) = parse_forward_path(&s, syntax) {
            assert!(s.ends_with(rest));
        }
    }
    if let Ok(m) = Mailbox::parse(&s) {
        let _ = (m.local(), m.domain().lower(), m.is_ascii(), m.has_routing_chars());
    }
    if let Ok(d) = Domain::parse(&s) {
        let _ = (d.lower(), d.is_ascii());
    }
    let _ = Domain::parse_name(&s);
    // The same text as MAIL and RCPT commands: the parameter parsing behind them.
    let mut mail = b"MAIL FROM:".to_vec();
    mail.extend_from_slice(&bytes);
    let _ = tern::smtp::command::parse(&mail);
    let _ = tern::smtp::command::parse_with(&mail, PathSyntax::Lenient);
    let mut rcpt = b"RCPT TO:".to_vec();
    rcpt.extend_from_slice(&bytes);
    let _ = tern::smtp::command::parse(&rcpt);
    let _ = tern::smtp::command::parse_with(&rcpt, PathSyntax::Lenient);
});
