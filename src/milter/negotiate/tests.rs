use super::*;
use crate::milter::protocol::SMFIF_ADDHDRS;

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[test]
fn protocol_setting_parses_postfix_values() {
    assert_eq!(ProtocolSetting::parse("6"), Ok(ProtocolSetting::default()));
    let p = ProtocolSetting::parse("2").unwrap();
    assert_eq!((p.version, p.offer), (2, V2_MASK));
    let p = ProtocolSetting::parse("4, no_header_reply").unwrap();
    assert_eq!((p.version, p.offer), (4, V4_MASK | SMFIP_NR_HDR));
    assert_eq!(ProtocolSetting::parse("3").unwrap().offer, V3_MASK);
    for bad in ["", "5", "7", "2 6", "no_header_reply", "six"] {
        assert!(ProtocolSetting::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn negotiation_follows_milter8() {
    let ours = ProtocolSetting::default();
    let answer = |version, actions, protocol| OptNeg {
        version,
        actions,
        protocol,
        symlists: vec![(Stage::Connect as u32, v("j {client_addr}")), (99, v("x"))],
    };
    let n = negotiate(&ours, &answer(6, SMFIF_ADDHDRS, SMFIP_NR_HDR | SMFIP_HDR_LEADSPC)).unwrap();
    assert!(n.leading_space());
    assert!(n.declines(SMFIP_NR_HDR));
    assert_eq!(n.not_in_protocol, 0);
    assert_eq!(n.symlists[0].as_deref(), Some("j {client_addr}"));
    assert!(n.symlists[1..].iter().all(Option::is_none), "stage 99 ignored");
    // Newer than ours, or prehistoric: refused.
    assert!(negotiate(&ours, &answer(7, 0, 0)).is_err());
    assert!(negotiate(&ours, &answer(1, 0, 0)).is_err());
    // Actions we never offered: refused.
    assert_eq!(
        negotiate(&ours, &answer(6, 1 << 9, 0)),
        Err(NegotiationError::Actions {
            offered: MTA_ACTIONS,
            wanted: 1 << 9
        })
    );
    // An older milter never gets DATA or UNKNOWN (version 2) events.
    let n = negotiate(&ours, &answer(2, SMFIF_ADDHDRS, 0)).unwrap();
    assert_eq!(n.not_in_protocol, SMFIP_NODATA | SMFIP_NOUNKNOWN);
    // Nor when we ourselves speak version 2.
    let n = negotiate(&ProtocolSetting::parse("2").unwrap(), &answer(2, 0, 0)).unwrap();
    assert_eq!(n.not_in_protocol, SMFIP_NODATA | SMFIP_NOUNKNOWN);
}
