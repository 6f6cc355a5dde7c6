//! The policy-service client (src/policy_service.rs): an answer as a service sends
//! it, the action parser and its refusal; and a request built from arbitrary
//! client data stays one attribute per line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern::policy_service::{parse_answer, PolicyAction, PolicyRequest, ProtocolState};

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = parse_answer(data) {
        if let Some(r) = a.refusal() {
            assert!((400..600).contains(&r.code));
            assert_eq!(u16::from(r.esc.0), r.code / 100, "enhanced code class");
            assert!(!r.text.is_empty());
        }
    }
    let s = String::from_utf8_lossy(data);
    let _ = PolicyAction::parse(&s).refusal();
    let mut req = PolicyRequest::new(ProtocolState::Rcpt);
    req.helo_name = s.to_string();
    req.sender = s.to_string();
    req.ccert_subject = s.to_string();
    let wire = req.encode();
    let text = String::from_utf8_lossy(&wire);
    assert!(text.ends_with("\n\n"));
    assert_eq!(
        text.matches("\n\n").count(),
        1,
        "an empty line inside the request"
    );
    assert!(!wire.contains(&0));
});
