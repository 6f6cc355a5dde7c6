use super::*;

#[test]
fn mx_sorted_by_preference() {
    let hosts = vec![(20, "b".to_owned()), (10, "a".to_owned()), (30, "c".to_owned())];
    let s = sort_mx(hosts, 7);
    let prefs: Vec<u16> = s.iter().map(|(p, _)| *p).collect();
    assert_eq!(prefs, vec![10, 20, 30]);
}

#[test]
fn equal_preferences_vary() {
    let hosts: Vec<(u16, String)> = (0..8).map(|i| (10, format!("h{i}"))).collect();
    let orders: std::collections::HashSet<Vec<String>> = (0..20)
        .map(|n| sort_mx(hosts.clone(), n).into_iter().map(|(_, h)| h).collect())
        .collect();
    assert!(orders.len() > 1);
}

/// A validating resolver's answers, scripted: an in-process UDP (and
/// TCP, for truncation) server on loopback that answers each name the
/// way unbound answered it in the prototype against a signed zone
/// (AD on secure data, no AD on insecure data, SERVFAIL + EDE 6 on
/// bogus data; see DECISIONS.md 2026-12-04).
mod stub {
    use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::opt::EdnsOption;
    use hickory_proto::rr::rdata::{tlsa, A, CNAME, MX, NS, TLSA, TXT};
    use hickory_proto::rr::{Name, RData, Record};
    use std::io::{Read, Write};
    use std::net::SocketAddr;

    fn rec(name: &str, data: RData) -> Record {
        Record::from_rdata(Name::from_ascii(name).unwrap(), 300, data)
    }

    /// (rcode, AD, EDE, answers, truncate over UDP)
    fn answer(q: &str) -> (ResponseCode, bool, Option<u16>, Vec<Record>, bool) {
        let tlsa = |n: &str| {
            rec(
                n,
                RData::TLSA(TLSA::new(
                    tlsa::CertUsage::DaneEe,
                    tlsa::Selector::Spki,
                    tlsa::Matching::Sha256,
                    vec![0xab; 32],
                )),
            )
        };
        let cname = |n: &str, t: &str| rec(n, RData::CNAME(CNAME(Name::from_ascii(t).unwrap())));
        match q {
            ". NS" => (
                ResponseCode::NoError,
                true,
                None,
                vec![rec(".", RData::NS(NS(Name::from_ascii("ns.").unwrap())))],
                false,
            ),
            "secure. MX" => (
                ResponseCode::NoError,
                true,
                None,
                vec![rec(
                    "secure.",
                    RData::MX(MX::new(10, Name::from_ascii("mx.secure.").unwrap())),
                )],
                false,
            ),
            "insecure. MX" => (
                ResponseCode::NoError,
                false,
                None,
                vec![rec(
                    "insecure.",
                    RData::MX(MX::new(10, Name::from_ascii("mx.insecure.").unwrap())),
                )],
                false,
            ),
            "null. MX" => (
                ResponseCode::NoError,
                true,
                None,
                vec![rec("null.", RData::MX(MX::new(0, Name::root())))],
                false,
            ),
            "bogus. MX" | "mx.bogus. A" | "_25._tcp.mx.bogus. TLSA" | "_mta-sts.bogus. TXT" => {
                (ResponseCode::ServFail, false, Some(6), vec![], false)
            }
            "broken. MX" => (ResponseCode::ServFail, false, None, vec![], false),
            "expired. MX" => (ResponseCode::ServFail, false, Some(7), vec![], false),
            "mx.secure. A" => (
                ResponseCode::NoError,
                true,
                None,
                vec![rec("mx.secure.", RData::A(A::new(127, 0, 0, 1)))],
                false,
            ),
            "mx.secure. AAAA" => (ResponseCode::NoError, true, None, vec![], false),
            "alias.secure. A" => (
                ResponseCode::NoError,
                true,
                None,
                vec![
                    cname("alias.secure.", "mx.secure."),
                    rec("mx.secure.", RData::A(A::new(127, 0, 0, 1))),
                ],
                false,
            ),
            "_25._tcp.mx.secure. TLSA" => (
                ResponseCode::NoError,
                true,
                None,
                vec![tlsa("_25._tcp.mx.secure.")],
                false,
            ),
            // RFC 7672 2.2.2: a CNAME into an unsigned zone: no AD.
            "_25._tcp.mx3.secure. TLSA" => (
                ResponseCode::NoError,
                false,
                None,
                vec![
                    cname("_25._tcp.mx3.secure.", "tlsa.insecure."),
                    tlsa("tlsa.insecure."),
                ],
                false,
            ),
            "_25._tcp.mx2.secure. TLSA" => (
                ResponseCode::NoError,
                true,
                None,
                vec![
                    cname("_25._tcp.mx2.secure.", "tlsa.secure."),
                    tlsa("tlsa.secure."),
                ],
                false,
            ),
            "_25._tcp.none.secure. TLSA" => (ResponseCode::NXDomain, true, None, vec![], false),
            "_25._tcp.big.secure. TLSA" => (
                ResponseCode::NoError,
                true,
                None,
                vec![tlsa("_25._tcp.big.secure.")],
                true,
            ),
            "_mta-sts.secure. TXT" => (
                ResponseCode::NoError,
                true,
                None,
                vec![rec(
                    "_mta-sts.secure.",
                    RData::TXT(TXT::new(vec!["v=STSv1; ".into(), "id=1".into()])),
                )],
                false,
            ),
            _ => (ResponseCode::NXDomain, false, None, vec![], false),
        }
    }

    fn respond(query: &[u8], udp: bool) -> Vec<u8> {
        let q = Message::from_vec(query).unwrap();
        let first = q.queries.first().unwrap();
        let key = format!("{} {}", first.name, first.query_type);
        let (rcode, ad, ede, answers, trunc) = answer(&key);
        // RFC 6840 5.8: AD only for a client that asked with AD or DO.
        let asked = q.metadata.authentic_data || q.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let ad = ad && asked;
        let mut m = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.metadata.response_code = rcode;
        m.metadata.authentic_data = ad;
        m.add_query(first.clone());
        if udp && trunc {
            m.metadata.truncation = true;
        } else {
            m.insert_answers(answers);
        }
        let mut edns = Edns::new();
        if let Some(code) = ede {
            edns.options_mut()
                .insert(EdnsOption::Unknown(15, code.to_be_bytes().to_vec()));
        }
        m.set_edns(edns);
        m.to_vec().unwrap()
    }

    /// Start the stub; it serves until the test process ends.
    pub(super) fn start() -> SocketAddr {
        let (udp, tcp, addr) = crate::testnet::udp_tcp_pair();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&respond(&buf[..n], true), from);
            }
        });
        std::thread::spawn(move || {
            for mut c in tcp.incoming().flatten() {
                let mut len = [0u8; 2];
                while c.read_exact(&mut len).is_ok() {
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    c.read_exact(&mut q).unwrap();
                    let r = respond(&q, false);
                    c.write_all(&(r.len() as u16).to_be_bytes()).unwrap();
                    c.write_all(&r).unwrap();
                }
            }
        });
        addr
    }
}

fn validating() -> Hickory {
    let r = Hickory::new(&[stub::start()], Duration::from_secs(3))
        .unwrap()
        .trust_ad(true);
    assert_eq!(r.dnssec_probe(), Security::Secure);
    r
}

#[test]
fn ad_bit_means_secure_and_its_absence_insecure() {
    let r = validating();
    assert_eq!(r.dnssec_probe(), Security::Secure);
    let mx = r.mx_secured("secure").unwrap();
    assert_eq!(mx.value, Mx::Hosts(vec![(10, "mx.secure".to_owned())]));
    assert_eq!(mx.security, Security::Secure);
    assert_eq!(r.mx_secured("insecure").unwrap().security, Security::Insecure);
    assert_eq!(r.mx_secured("null").unwrap().value, Mx::Null);
    assert_eq!(r.mx_secured("nowhere"), Err(DnsError::NxDomain));
    let a = r.addrs_secured("mx.secure", Family::Both).unwrap();
    assert_eq!(a.value, vec![IpAddr::from([127, 0, 0, 1])]);
    assert_eq!(a.security, Security::Secure);
    let a = r.addrs_secured("alias.secure", Family::Ipv4).unwrap();
    assert_eq!(a.canonical.as_deref(), Some("mx.secure"));
    assert_eq!(a.value, vec![IpAddr::from([127, 0, 0, 1])]);
}

#[test]
fn tlsa_and_txt_with_their_status() {
    let r = validating();
    let t = r.tlsa("mx.secure", 25).unwrap();
    assert_eq!(t.security, Security::Secure);
    assert_eq!(
        t.value,
        vec![TlsaRecord {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![0xab; 32]
        }]
    );
    // CNAME at the TLSA name: the records at its target, the chain's status.
    let t = r.tlsa("mx2.secure", 25).unwrap();
    assert_eq!((t.value.len(), t.security), (1, Security::Secure));
    assert_eq!(t.canonical.as_deref(), Some("tlsa.secure"));
    let t = r.tlsa("mx3.secure", 25).unwrap();
    assert_eq!((t.value.len(), t.security), (1, Security::Insecure));
    // Secure denial: no TLSA.
    let t = r.tlsa("none.secure", 25).unwrap();
    assert_eq!((t.value.len(), t.security), (0, Security::Secure));
    // Truncated over UDP: asked again over TCP.
    let t = r.tlsa("big.secure", 25).unwrap();
    assert_eq!((t.value.len(), t.security), (1, Security::Secure));
    let txt = r.txt("_mta-sts.secure").unwrap();
    assert_eq!(txt.value, vec!["v=STSv1; id=1".to_owned()]);
    assert_eq!(txt.security, Security::Secure);
}

#[test]
fn validation_failures_are_bogus_and_other_servfails_temporary() {
    let r = validating();
    let t = r.tlsa("mx.bogus", 25).unwrap();
    assert_eq!((t.value.len(), t.security), (0, Security::Bogus));
    assert_eq!(r.txt("_mta-sts.bogus").unwrap().security, Security::Bogus);
    assert!(matches!(r.mx_secured("bogus"), Err(DnsError::Temporary(w)) if w.contains("bogus")));
    assert!(matches!(r.mx_secured("expired"), Err(DnsError::Temporary(w)) if w.contains("bogus")));
    assert!(matches!(
        r.addrs_secured("mx.bogus", Family::Ipv4),
        Err(DnsError::Temporary(_))
    ));
    assert!(matches!(r.mx_secured("broken"), Err(DnsError::Temporary(w)) if !w.contains("bogus")));
}

#[test]
fn without_trust_every_answer_is_indeterminate() {
    let r = Hickory::new(&[stub::start()], Duration::from_secs(3)).unwrap();
    assert_eq!(r.dnssec_probe(), Security::Indeterminate);
    let t = r.tlsa("mx.secure", 25).unwrap();
    assert_eq!((t.value.len(), t.security), (0, Security::Indeterminate));
    assert_eq!(r.mx_secured("secure").unwrap().security, Security::Indeterminate);
    // Trusted, but not yet found validating: still the plain way.
    let r = Hickory::new(&[stub::start()], Duration::from_secs(3))
        .unwrap()
        .trust_ad(true);
    assert_eq!(r.mx_secured("secure").unwrap().security, Security::Indeterminate);
    assert_eq!(r.dnssec_probe(), Security::Secure);
    assert_eq!(r.mx_secured("secure").unwrap().security, Security::Secure);
}

#[test]
fn security_and_takes_the_weaker() {
    use Security::*;
    assert_eq!(Secure.and(Insecure), Insecure);
    assert_eq!(Insecure.and(Bogus), Bogus);
    assert_eq!(Secure.and(Secure), Secure);
    assert_eq!(Indeterminate.and(Secure), Indeterminate);
}

#[test]
fn fqdn_adds_the_root() {
    assert_eq!(fqdn("example.org"), "example.org.");
    assert_eq!(fqdn("example.org."), "example.org.");
}
