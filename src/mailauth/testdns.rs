//! A minimal DNS server on 127.0.0.1 for the unit tests of this module:
//! TXT, A, AAAA and MX answers from a map (UDP, and TCP for answers too big
//! for UDP), NXDOMAIN for anything unknown, silence for "blackhole" names (to
//! test time-outs), and a count of the queries it answered (to test
//! caching). The project's loopback DNS harness (tests/integration/common/)
//! replaces it once it serves TXT; the seam is the same: `dns_servers`.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[derive(Default, Clone)]
pub(crate) struct Zone {
    txt: HashMap<String, Vec<String>>,
    addrs: HashMap<String, Vec<IpAddr>>,
    mx: HashMap<String, Vec<(u16, String)>>,
    blackhole: HashSet<String>,
    ttl: u32,
}

impl Zone {
    pub(crate) fn new() -> Zone {
        Zone {
            ttl: 300,
            ..Zone::default()
        }
    }

    pub(crate) fn txt(mut self, name: &str, text: &str) -> Zone {
        self.txt.entry(norm(name)).or_default().push(text.to_owned());
        self
    }

    pub(crate) fn addr(mut self, name: &str, ip: &str) -> Zone {
        self.addrs
            .entry(norm(name))
            .or_default()
            .push(ip.parse().unwrap());
        self
    }

    pub(crate) fn mx(mut self, name: &str, pref: u16, host: &str) -> Zone {
        self.mx
            .entry(norm(name))
            .or_default()
            .push((pref, host.to_owned()));
        self
    }

    /// Queries for `name` get no answer at all.
    pub(crate) fn blackhole(mut self, name: &str) -> Zone {
        self.blackhole.insert(norm(name));
        self
    }

    fn exists(&self, name: &str) -> bool {
        self.txt.contains_key(name) || self.addrs.contains_key(name) || self.mx.contains_key(name)
    }

    fn answer(&self, query: &Message) -> Option<Message> {
        let q = query.queries.first()?;
        let name = norm(&q.name.to_ascii());
        if self.blackhole.contains(&name) {
            return None;
        }
        let mut m = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
        m.metadata.recursion_desired = query.metadata.recursion_desired;
        m.metadata.recursion_available = true;
        m.metadata.authoritative = true;
        m.add_query(q.clone());
        // RFC 2308 3: a negative answer carries the zone's SOA, whose TTL
        // lets resolvers cache it.
        let soa = Record::from_rdata(
            Name::root(),
            self.ttl,
            RData::SOA(SOA::new(
                Name::from_ascii("ns.test.").unwrap(),
                Name::from_ascii("hostmaster.test.").unwrap(),
                1,
                3600,
                600,
                86400,
                self.ttl,
            )),
        );
        if !self.exists(&name) {
            m.metadata.response_code = ResponseCode::NXDomain;
            m.add_authority(soa);
            return Some(m);
        }
        let owner = q.name.clone();
        match q.query_type {
            RecordType::TXT => {
                for t in self.txt.get(&name).into_iter().flatten() {
                    // RFC 1035 3.3.14: character-strings of at most 255 octets.
                    let parts: Vec<String> = t
                        .as_bytes()
                        .chunks(255)
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect();
                    m.add_answer(Record::from_rdata(
                        owner.clone(),
                        self.ttl,
                        RData::TXT(TXT::new(parts)),
                    ));
                }
            }
            RecordType::A | RecordType::AAAA => {
                for ip in self.addrs.get(&name).into_iter().flatten() {
                    let rdata = match (ip, q.query_type) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    m.add_answer(Record::from_rdata(owner.clone(), self.ttl, rdata));
                }
            }
            RecordType::MX => {
                for (pref, host) in self.mx.get(&name).into_iter().flatten() {
                    let exchange = Name::from_ascii(format!("{host}.")).unwrap();
                    m.add_answer(Record::from_rdata(
                        owner.clone(),
                        self.ttl,
                        RData::MX(MX::new(*pref, exchange)),
                    ));
                }
            }
            _ => {}
        }
        if m.answers.is_empty() {
            m.add_authority(soa);
        }
        Some(m)
    }
}

/// A running server; stops when dropped.
pub(crate) struct TestDns {
    pub(crate) addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TestDns {
    pub(crate) fn start(zone: Zone) -> TestDns {
        let (udp, tcp, addr) = crate::testnet::udp_tcp_pair();
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let zone = Arc::new(zone);
        {
            let (stop, queries, zone) = (stop.clone(), queries.clone(), zone.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    let Ok(query) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    if let Some(out) = zone.answer(&query) {
                        if std::env::var_os("TESTDNS_LOG").is_some() {
                            eprintln!("testdns: {:?}", query.queries);
                        }
                        queries.fetch_add(1, Ordering::Relaxed);
                        let _ = udp.send_to(&out.to_vec().unwrap(), from);
                    }
                }
            });
        }
        {
            let (stop, queries) = (stop.clone(), queries.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    // RFC 1035 4.2.2: two-octet length, then the message.
                    let mut len = [0u8; 2];
                    while s.read_exact(&mut len).is_ok() {
                        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if s.read_exact(&mut q).is_err() {
                            break;
                        }
                        let Ok(query) = Message::from_vec(&q) else { break };
                        let Some(out) = zone.answer(&query) else { break };
                        queries.fetch_add(1, Ordering::Relaxed);
                        let out = out.to_vec().unwrap();
                        let mut framed = (out.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&out);
                        if s.write_all(&framed).is_err() {
                            break;
                        }
                    }
                }
            });
        }
        TestDns { addr, queries, stop }
    }

    /// Queries answered so far.
    pub(crate) fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
