//! The policy delegation client (src/policy_service.rs) against a real postgrey
//! (common/postgrey.rs): the first attempt is greylisted with postgrey's own
//! text, a retry after the delay is let through with postgrey's PREPEND
//! header, and a postgrey that has gone away costs only the retries before the
//! default action.

use std::time::{Duration, Instant};

use tern::endpoint::Endpoint;
use tern::policy_service::{PolicyAction, PolicyClient, PolicyRequest, PolicySpec, ProtocolState};

use super::common::postgrey::Postgrey;

fn client(conf: &str) -> PolicyClient {
    let mut spec = PolicySpec::new(Endpoint::parse(conf).unwrap());
    spec.timeout = Duration::from_secs(10);
    spec.retry_delay = Duration::from_millis(50);
    PolicyClient::new(spec)
}

fn rcpt_request(sender: &str) -> PolicyRequest {
    let mut r = PolicyRequest::new(ProtocolState::Rcpt);
    r.protocol_name = "ESMTP".into();
    r.client_address = "192.0.2.77".into();
    r.client_name = "mail.example.net".into();
    r.reverse_client_name = "mail.example.net".into();
    r.helo_name = "mail.example.net".into();
    r.sender = sender.into();
    r.recipient = "b@example.org".into();
    r.instance = "1a2b.3c4d.0".into();
    r
}

#[test]
fn postgrey_greylists_then_lets_the_retry_through() {
    let Some(pg) = Postgrey::start(1) else { return };
    let mut c = client(&pg.conf());
    let req = rcpt_request("a@example.net");
    let first = c.query(&req);
    let PolicyAction::DeferIfPermit(Some(text)) = &first else {
        panic!("first attempt: {first:?}");
    };
    assert!(text.contains("Greylisted by the test postgrey"), "{text}");
    let refusal = first.refusal().unwrap();
    assert_eq!((refusal.code, refusal.esc.class()), (450, 4));
    assert!(refusal.text.contains("Greylisted"), "{}", refusal.text);
    // A retry once the delay has passed gets through, with postgrey's header.
    // Poll (the delay is 1 s) rather than sleep and hope.
    let deadline = Instant::now() + Duration::from_secs(15);
    let passed = loop {
        let a = c.query(&req);
        if !matches!(a, PolicyAction::DeferIfPermit(_)) {
            break a;
        }
        assert!(Instant::now() < deadline, "still greylisted after 15 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    let PolicyAction::Prepend(header) = &passed else {
        panic!("retry: {passed:?}");
    };
    assert!(header.starts_with("X-Greylist: delayed "), "{header}");
    assert_eq!(passed.refusal(), None);
    // Another sender is a new triplet: greylisted again, on the same connection.
    assert!(matches!(
        c.query(&rcpt_request("other@example.net")),
        PolicyAction::DeferIfPermit(_)
    ));
}

#[test]
fn postgrey_gone_means_the_default_action() {
    let Some(pg) = Postgrey::start(300) else { return };
    let mut c = client(&pg.conf());
    assert!(matches!(
        c.query(&rcpt_request("a@example.net")),
        PolicyAction::DeferIfPermit(_)
    ));
    let addr = pg.addr();
    drop(pg);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "postgrey still answers"
    );
    let start = Instant::now();
    let a = c.query(&rcpt_request("a@example.net"));
    assert_eq!(
        a,
        PolicyAction::Code {
            code: 451,
            text: "4.3.5 Server configuration problem".into()
        }
    );
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    let r = a.refusal().unwrap();
    assert_eq!(
        (r.code, r.esc.to_string(), r.text.as_str()),
        (451, "4.3.5".into(), "Server configuration problem")
    );
}
