//! A tiny authoritative DNS server on 127.0.0.1 (UDP), built with
//! hickory-proto, serving a test zone: MX, A and AAAA records, names that
//! answer NXDOMAIN (anything unknown) or SERVFAIL. Tests point ternd's
//! `dns_servers` at it, so no test ever asks real DNS.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};

fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The records a test serves.
#[derive(Default, Clone)]
pub struct Zone {
    mx: HashMap<String, Vec<(u16, String)>>,
    addrs: HashMap<String, Vec<IpAddr>>,
    servfail: HashSet<String>,
    /// Names that exist (NOERROR) even without records of the asked type.
    exists: HashSet<String>,
    /// SERVFAIL for every name.
    all_servfail: bool,
}

impl Zone {
    pub fn new() -> Zone {
        Zone::default()
    }

    /// `domain MX pref host`; host "." is a null MX.
    pub fn mx(mut self, domain: &str, pref: u16, host: &str) -> Zone {
        self.exists.insert(norm(domain));
        self.mx
            .entry(norm(domain))
            .or_default()
            .push((pref, host.to_owned()));
        self
    }

    pub fn addr(mut self, host: &str, ip: &str) -> Zone {
        self.exists.insert(norm(host));
        self.addrs
            .entry(norm(host))
            .or_default()
            .push(ip.parse().expect("ip"));
        self
    }

    /// A name that exists (NOERROR) without MX or address records.
    pub fn name(mut self, name: &str) -> Zone {
        self.exists.insert(norm(name));
        self
    }

    pub fn servfail(mut self, name: &str) -> Zone {
        self.servfail.insert(norm(name));
        self
    }

    fn answer(&self, query: &Message) -> Message {
        let mut m = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
        m.metadata.recursion_desired = query.metadata.recursion_desired;
        m.metadata.recursion_available = true;
        m.metadata.authoritative = true;
        let Some(q) = query.queries.first() else {
            m.metadata.response_code = ResponseCode::FormErr;
            return m;
        };
        m.add_query(q.clone());
        let name = norm(&q.name.to_ascii());
        if self.all_servfail || self.servfail.contains(&name) {
            m.metadata.response_code = ResponseCode::ServFail;
            return m;
        }
        if !self.exists.contains(&name) {
            m.metadata.response_code = ResponseCode::NXDomain;
            return m;
        }
        let owner = q.name.clone();
        match q.query_type {
            RecordType::MX => {
                for (pref, host) in self.mx.get(&name).into_iter().flatten() {
                    let exchange = if host == "." {
                        Name::root()
                    } else {
                        Name::from_ascii(format!("{host}.")).expect("name")
                    };
                    m.add_answer(Record::from_rdata(
                        owner.clone(),
                        60,
                        RData::MX(MX::new(*pref, exchange)),
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
                    m.add_answer(Record::from_rdata(owner.clone(), 60, rdata));
                }
            }
            _ => {}
        }
        m
    }
}

/// A running server; stops when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    pub fn start(zone: Zone) -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind dns");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let addr = sock.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if let Ok(out) = zone.answer(&query).to_vec() {
                    let _ = sock.send_to(&out, from);
                }
            }
        });
        DnsServer { addr, stop }
    }

    /// `dns_servers` value for ternd.
    pub fn conf(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The server every test uses unless it sets its own: an empty zone that
/// answers SERVFAIL for everything, so stray remote mail is deferred and
/// no query ever leaves the machine.
pub fn default_stub() -> SocketAddr {
    static STUB: OnceLock<DnsServer> = OnceLock::new();
    STUB.get_or_init(|| {
        DnsServer::start(Zone {
            all_servfail: true,
            ..Zone::default()
        })
    })
    .addr
}
