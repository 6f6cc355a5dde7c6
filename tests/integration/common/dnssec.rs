//! Real DNSSEC on loopback: a private `nsd` serving an offline-signed root
//! zone `.` that delegates to the test zones, each signed (or not) with
//! dnssec-signzone (bind9-utils, ECDSAP256SHA256, a KSK and a ZSK per zone),
//! and optionally a validating `unbound` anchored on that root's key.
//!
//! ```ignore
//! let Some(dns) = SignedZones::builder()
//!     .zone("example.test")                 // signed, DS in the root
//!     .mx("example.test", 10, "mx.example.test")
//!     .a("mx.example.test", "127.0.0.1")
//!     .tlsa("_25._tcp.mx.example.test", 3, 1, 1, &hex)
//!     .txt("_mta-sts.example.test", "v=STSv1; id=1")
//!     .insecure("plain.test")               // delegated without DS
//!     .bogus("bad.test")                    // signed, served with broken signatures
//!     .with_unbound()                       // a validating resolver too
//!     .start()
//! else { return };                           // skipped (visibly) without nsd
//! dns.nsd_addr();         // authoritative for every zone, `.` included
//! dns.resolver_addr();    // unbound: AD on secure answers, SERVFAIL on bogus
//! dns.trust_anchor_ds();  // ". IN DS 12345 13 2 <hex>"
//! ```
//!
//! Both DNSSEC models can be tested: validation inside tern (a stub resolver
//! pointed at `nsd_addr()` with the trust anchor; issue 18 found that the
//! anchor must be this root's key, not a test zone's), or trusting the AD bit
//! from a validating resolver (`resolver_addr()`).
//!
//! Keys are made once per zone name and kept in target/test-peers/dnssec-keys;
//! zones are signed at each start (a few tens of ms), valid for 30 days.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use super::process::{self, PeerProcess};
use super::skip;

/// How a zone is delegated and served.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Signed, with a DS in the root: answers validate (secure).
    Signed,
    /// Unsigned, delegated without a DS: answers are provably insecure.
    Insecure,
    /// Signed with a DS in the root, but every signature over the zone's
    /// data is broken in what nsd serves (a tampered copy): bogus.
    Bogus,
}

#[derive(Clone)]
struct ZoneSpec {
    name: String,
    kind: Kind,
}

#[derive(Clone)]
struct Rec {
    owner: String,
    ttl: u32,
    rtype: String,
    rdata: String,
}

/// Zones and records to serve. Records go into the zone with the longest
/// name that ends their owner name; every zone gets its SOA, `NS ns.ZONE.`
/// and `ns.ZONE. A 127.0.0.1` (the glue in the root) by itself.
#[derive(Clone, Default)]
pub struct ZonesBuilder {
    zones: Vec<ZoneSpec>,
    records: Vec<Rec>,
    /// (owner, type) whose signatures are broken in an otherwise good zone.
    tampered: Vec<(String, String)>,
    unbound: bool,
    serial: u32,
}

fn fqdn(name: &str) -> String {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    if n.is_empty() {
        ".".to_owned()
    } else {
        format!("{n}.")
    }
}

/// Text of a TXT record's data: quoted, in chunks of at most 255 octets.
fn txt_rdata(text: &str) -> String {
    let mut chunks = Vec::new();
    let mut cur = String::new();
    let mut len = 0;
    for c in text.chars() {
        if len + c.len_utf8() > 255 {
            chunks.push(std::mem::take(&mut cur));
            len = 0;
        }
        match c {
            '"' => cur.push_str("\\\""),
            '\\' => cur.push_str("\\\\"),
            c => cur.push(c),
        }
        len += c.len_utf8();
    }
    chunks.push(cur);
    chunks
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(" ")
}

impl ZonesBuilder {
    fn add_zone(mut self, name: &str, kind: Kind) -> Self {
        let name = fqdn(name);
        assert!(name != ".", "the root zone is made by the builder itself");
        assert!(
            !self.zones.iter().any(|z| z.name == name),
            "zone {name} declared twice"
        );
        self.zones.push(ZoneSpec { name, kind });
        self
    }

    /// A signed zone with its DS in the root: secure.
    pub fn zone(self, name: &str) -> Self {
        self.add_zone(name, Kind::Signed)
    }

    /// An unsigned zone delegated without a DS: insecure.
    pub fn insecure(self, name: &str) -> Self {
        self.add_zone(name, Kind::Insecure)
    }

    /// A signed zone whose served copy has broken signatures: bogus.
    pub fn bogus(self, name: &str) -> Self {
        self.add_zone(name, Kind::Bogus)
    }

    /// Break only the signature over `owner`'s `rtype` RRset in an otherwise
    /// good signed zone (for example a bogus TLSA beside a valid MX).
    pub fn tamper(mut self, owner: &str, rtype: &str) -> Self {
        self.tampered.push((fqdn(owner), rtype.to_ascii_uppercase()));
        self
    }

    /// Any record, in zone-file syntax: `.record("x.example.test", "CAA", "0 issue \"ca.test\"")`.
    pub fn record(mut self, owner: &str, rtype: &str, rdata: &str) -> Self {
        self.records.push(Rec {
            owner: fqdn(owner),
            ttl: 60,
            rtype: rtype.to_ascii_uppercase(),
            rdata: rdata.to_owned(),
        });
        self
    }

    /// Drop every `rtype` record of `owner` (before adding new ones in a `reload`).
    pub fn remove(mut self, owner: &str, rtype: &str) -> Self {
        let (owner, rtype) = (fqdn(owner), rtype.to_ascii_uppercase());
        self.records.retain(|r| !(r.owner == owner && r.rtype == rtype));
        self
    }

    /// `domain MX pref host`; host "." is a null MX (RFC 7505).
    pub fn mx(self, domain: &str, pref: u16, host: &str) -> Self {
        let host = if host == "." { ".".to_owned() } else { fqdn(host) };
        self.record(domain, "MX", &format!("{pref} {host}"))
    }

    pub fn a(self, name: &str, ip: &str) -> Self {
        let _: std::net::Ipv4Addr = ip.parse().expect("an IPv4 address");
        self.record(name, "A", ip)
    }

    pub fn aaaa(self, name: &str, ip: &str) -> Self {
        let _: std::net::Ipv6Addr = ip.parse().expect("an IPv6 address");
        self.record(name, "AAAA", ip)
    }

    pub fn cname(self, name: &str, target: &str) -> Self {
        let target = fqdn(target);
        self.record(name, "CNAME", &target)
    }

    /// TLSA (RFC 6698): usage, selector, matching type, data in hex.
    pub fn tlsa(self, name: &str, usage: u8, selector: u8, mtype: u8, hex: &str) -> Self {
        self.record(name, "TLSA", &format!("{usage} {selector} {mtype} {hex}"))
    }

    /// TXT with `text` as one string (split in 255-octet chunks when longer).
    pub fn txt(self, name: &str, text: &str) -> Self {
        let rdata = txt_rdata(text);
        self.record(name, "TXT", &rdata)
    }

    /// Start a validating unbound too, anchored on the root's key.
    pub fn with_unbound(mut self) -> Self {
        self.unbound = true;
        self
    }

    /// Sign and serve. None when nsd or bind9-utils (or unbound, if asked
    /// for) is missing: the skip is already recorded (a failure under CI).
    pub fn start(self) -> Option<SignedZones> {
        let mut tools = vec!["nsd", "dnssec-keygen", "dnssec-signzone", "dnssec-dsfromkey"];
        if self.unbound {
            tools.push("unbound");
        }
        if !skip::tools_present(&tools) {
            return None;
        }
        Some(SignedZones::start(self))
    }

    fn zone_of(&self, owner: &str) -> Option<&ZoneSpec> {
        self.zones
            .iter()
            .filter(|z| owner == z.name || owner.ends_with(&format!(".{}", z.name)))
            .max_by_key(|z| z.name.len())
    }
}

/// Serving nsd (and maybe unbound); both stop when this is dropped.
pub struct SignedZones {
    nsd: PeerProcess,
    unbound: Option<PeerProcess>,
    nsd_addr: SocketAddr,
    unbound_addr: Option<SocketAddr>,
    anchor_dnskey: String,
    anchor_ds: String,
    builder: ZonesBuilder,
}

/// Keys for `zone` (KSK + ZSK, ECDSAP256SHA256), made once.
fn zone_keys(zone: &str) -> PathBuf {
    let dirname = if zone == "." {
        "root".to_owned()
    } else {
        zone.trim_end_matches('.').to_owned()
    };
    process::cached(&format!("dnssec-keys/{dirname}"), |dir| {
        for ksk in [true, false] {
            let mut cmd = Command::new("dnssec-keygen");
            cmd.current_dir(dir)
                .args(["-q", "-a", "ECDSAP256SHA256", "-n", "ZONE"]);
            if ksk {
                cmd.args(["-f", "KSK"]);
            }
            cmd.arg(zone);
            process::run_tool(&mut cmd)?;
        }
        Ok(())
    })
}

/// The key-signing key's public file in a key directory.
fn ksk_file(keys: &Path) -> PathBuf {
    std::fs::read_dir(keys)
        .expect("key dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "key")
                && std::fs::read_to_string(p).is_ok_and(|t| {
                    t.lines().any(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        f.windows(2).any(|w| w == ["DNSKEY", "257"])
                    })
                })
        })
        .expect("a KSK in the key directory")
}

/// Sign `src` (zone text for `zone`) into `out` with the cached keys.
fn sign(zone: &str, src: &Path, out: &Path, dsdir: &Path) -> Result<(), String> {
    let keys = zone_keys(zone);
    process::run_tool(
        Command::new("dnssec-signzone")
            .args(["-q", "-S", "-O", "full", "-K"])
            .arg(&keys)
            .arg("-d")
            .arg(dsdir)
            .args(["-o", zone, "-f"])
            .arg(out)
            .arg(src),
    )
    .map(|_| ())
}

/// Break the signature of each RRSIG line that `broken(owner, covered type)`
/// selects (its first base64 character changes: the data no longer matches).
fn tamper_file(path: &Path, broken: impl Fn(&str, &str) -> bool) {
    let text = std::fs::read_to_string(path).expect("signed zone");
    let mut out = String::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 12 && f[3] == "RRSIG" && broken(&f[0].to_ascii_lowercase(), f[4]) {
            let sig = f[12];
            let first = if sig.starts_with('A') { "B" } else { "A" };
            let mut g: Vec<String> = f.iter().map(|s| s.to_string()).collect();
            g[12] = format!("{first}{}", &sig[1..]);
            out.push_str(&g.join(" "));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    std::fs::write(path, out).expect("write tampered zone");
}

fn soa(zone: &str, serial: u32) -> String {
    let host = if zone == "." {
        "a.root-servers.invalid.".to_owned()
    } else {
        format!("ns.{zone}")
    };
    format!("$TTL 60\n{zone} IN SOA {host} hostmaster.invalid. {serial} 3600 600 86400 60\n{zone} IN NS {host}\n{host} IN A 127.0.0.1\n")
}

impl SignedZones {
    pub fn builder() -> ZonesBuilder {
        ZonesBuilder {
            serial: 1,
            ..ZonesBuilder::default()
        }
    }

    /// Write and sign every zone into `dir`; returns the nsd zone stanzas.
    fn write_zones(b: &ZonesBuilder, dir: &Path) -> Result<String, String> {
        let dsdir = dir.join("ds");
        std::fs::create_dir_all(&dsdir).map_err(|e| e.to_string())?;
        let mut stanzas = String::new();
        let mut root = soa(".", b.serial);
        for z in &b.zones {
            let mut text = soa(&z.name, b.serial);
            for r in &b.records {
                if b.zone_of(&r.owner).is_some_and(|o| o.name == z.name) {
                    text.push_str(&format!("{} {} IN {} {}\n", r.owner, r.ttl, r.rtype, r.rdata));
                }
            }
            let src = dir.join(format!("{}zone", z.name));
            std::fs::write(&src, text).map_err(|e| e.to_string())?;
            let served = match z.kind {
                Kind::Insecure => src.clone(),
                Kind::Signed | Kind::Bogus => {
                    let out = dir.join(format!("{}signed", z.name));
                    sign(&z.name, &src, &out, &dsdir)?;
                    if z.kind == Kind::Bogus {
                        // Everything but the keys: the DNSKEY RRset stays valid, so
                        // the chain of trust reaches the zone and the data fails.
                        tamper_file(&out, |_, t| t != "DNSKEY");
                    } else {
                        let tampered: Vec<&(String, String)> = b
                            .tampered
                            .iter()
                            .filter(|(o, _)| b.zone_of(o).is_some_and(|x| x.name == z.name))
                            .collect();
                        if !tampered.is_empty() {
                            tamper_file(&out, |owner, t| {
                                tampered.iter().any(|(o, tt)| o == owner && tt == t)
                            });
                        }
                    }
                    let ds = std::fs::read_to_string(dsdir.join(format!("dsset-{}", z.name)))
                        .map_err(|e| e.to_string())?;
                    root.push_str(&ds);
                    out
                }
            };
            // The delegation and its glue.
            root.push_str(&format!("{0} IN NS ns.{0}\nns.{0} IN A 127.0.0.1\n", z.name));
            stanzas.push_str(&format!(
                "zone:\n  name: \"{}\"\n  zonefile: \"{}\"\n",
                z.name,
                served.display()
            ));
        }
        let root_src = dir.join("root.zone");
        std::fs::write(&root_src, root).map_err(|e| e.to_string())?;
        let root_out = dir.join("root.signed");
        sign(".", &root_src, &root_out, &dsdir)?;
        stanzas.push_str(&format!(
            "zone:\n  name: \".\"\n  zonefile: \"{}\"\n",
            root_out.display()
        ));
        Ok(stanzas)
    }

    fn start(b: ZonesBuilder) -> SignedZones {
        let keys = zone_keys(".");
        let ksk = ksk_file(&keys);
        let anchor_dnskey = std::fs::read_to_string(&ksk)
            .expect("root KSK")
            .lines()
            .find(|l| !l.starts_with(';') && l.contains("DNSKEY"))
            .expect("DNSKEY line")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let anchor_ds = process::run_tool(Command::new("dnssec-dsfromkey").arg("-2").arg(&ksk))
            .expect("dnssec-dsfromkey")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");

        let (nsd, nsd_addr) = process::retry_start("nsd", || Self::start_nsd(&b));
        let mut zones = SignedZones {
            nsd,
            unbound: None,
            nsd_addr,
            unbound_addr: None,
            anchor_dnskey,
            anchor_ds,
            builder: b,
        };
        if zones.builder.unbound {
            let (u, addr) = process::retry_start("unbound", || zones.start_unbound());
            zones.unbound = Some(u);
            zones.unbound_addr = Some(addr);
        }
        zones
    }

    fn start_nsd(b: &ZonesBuilder) -> Result<(PeerProcess, SocketAddr), String> {
        let dir = process::peer_dir("nsd");
        let d = dir.path().to_path_buf();
        let stanzas = Self::write_zones(b, &d)?;
        let port = process::free_port();
        let conf = format!(
            "server:\n  ip-address: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdir: \"{d}\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 2\n  hide-version: yes\nremote-control:\n  control-enable: no\n{stanzas}",
            d = d.display()
        );
        let conf_path = d.join("nsd.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(skip::find_tool("nsd").ok_or("no nsd")?);
        cmd.arg("-d").arg("-c").arg(&conf_path);
        let logs = vec![d.join("nsd.log")];
        let mut p = PeerProcess::spawn("nsd", cmd, dir, logs)?;
        let addr = process::localhost(port);
        p.wait_ready(Duration::from_secs(10), || answers_root_soa(addr))?;
        Ok((p, addr))
    }

    fn start_unbound(&self) -> Result<(PeerProcess, SocketAddr), String> {
        let dir = process::peer_dir("unbound");
        let d = dir.path().to_path_buf();
        std::fs::write(d.join("root.key"), format!("{}\n", self.anchor_dnskey)).map_err(|e| e.to_string())?;
        let port = process::free_port();
        // unbound serves test. and invalid. itself (RFC 6761 default local
        // zones): let them through to nsd.
        let mut tlds: BTreeSet<String> = ["test".to_owned(), "invalid".to_owned()].into();
        for z in &self.builder.zones {
            if let Some(tld) = z.name.trim_end_matches('.').rsplit('.').next() {
                if ["onion", "localhost", "test", "invalid"].contains(&tld) {
                    tlds.insert(tld.to_owned());
                }
            }
        }
        let nodefault: String = tlds
            .iter()
            .map(|t| format!("  local-zone: \"{t}.\" nodefault\n"))
            .collect();
        let conf = format!(
            "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  logfile: \"\"\n  use-syslog: no\n  log-time-ascii: yes\n  verbosity: 1\n  val-log-level: 2\n  num-threads: 1\n  so-reuseport: no\n  outgoing-range: 64\n  do-not-query-localhost: no\n  access-control: 127.0.0.0/8 allow\n  module-config: \"validator iterator\"\n  trust-anchor-file: \"{d}/root.key\"\n  root-hints: \"\"\n  qname-minimisation: no\n  cache-max-ttl: 0\n  cache-max-negative-ttl: 0\n  val-bogus-ttl: 0\n  ede: yes\n{nodefault}forward-zone:\n  name: \".\"\n  forward-addr: {nsd}\nremote-control:\n  control-enable: no\n",
            d = d.display(),
            nsd = format_args!("{}@{}", self.nsd_addr.ip(), self.nsd_addr.port()),
        );
        let conf_path = d.join("unbound.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(skip::find_tool("unbound").ok_or("no unbound")?);
        cmd.arg("-d").arg("-c").arg(&conf_path);
        let mut p = PeerProcess::spawn("unbound", cmd, dir, vec![])?;
        let addr = process::localhost(port);
        p.wait_ready(Duration::from_secs(10), || answers_root_soa(addr))?;
        Ok((p, addr))
    }

    /// nsd: authoritative for `.` and every test zone.
    pub fn nsd_addr(&self) -> SocketAddr {
        self.nsd_addr
    }

    /// unbound, validating; panics unless the builder asked `with_unbound()`.
    pub fn resolver_addr(&self) -> SocketAddr {
        self.unbound_addr
            .expect("start with .with_unbound() for a validating resolver")
    }

    /// The root's KSK as a DNSKEY record: `. IN DNSKEY 257 3 13 <base64>`.
    pub fn trust_anchor_dnskey(&self) -> &str {
        &self.anchor_dnskey
    }

    /// The root's KSK as a DS record (SHA-256): `. IN DS <tag> 13 2 <hex>`.
    pub fn trust_anchor_ds(&self) -> &str {
        &self.anchor_ds
    }

    /// Write the trust anchor (the DNSKEY line, the format unbound and BIND's
    /// trust-anchor files take) to `path`.
    pub fn write_trust_anchor(&self, path: &Path) {
        std::fs::write(path, format!("{}\n", self.anchor_dnskey)).expect("write trust anchor");
    }

    /// Serve new data: the builder is re-signed with a higher serial and nsd
    /// reloads (SIGHUP); returns when nsd answers with the new serial.
    /// unbound keeps nothing in its cache (cache-max-ttl 0), so it follows.
    pub fn reload(&mut self, f: impl FnOnce(ZonesBuilder) -> ZonesBuilder) {
        let mut b = f(self.builder.clone());
        b.serial = self.builder.serial + 1;
        b.unbound = self.builder.unbound;
        let dir = self.nsd.dir().to_path_buf();
        Self::write_zones(&b, &dir).expect("re-sign zones");
        // Zones added by the reload would need a new nsd.conf: not supported.
        assert_eq!(
            b.zones.iter().map(|z| &z.name).collect::<Vec<_>>(),
            self.builder.zones.iter().map(|z| &z.name).collect::<Vec<_>>(),
            "reload changes records, not the list of zones"
        );
        self.nsd.signal(libc::SIGHUP);
        let addr = self.nsd_addr;
        let serial = b.serial;
        let names: Vec<String> = b
            .zones
            .iter()
            .map(|z| z.name.clone())
            .chain([".".to_owned()])
            .collect();
        let ok = super::wait_until(10, || names.iter().all(|n| soa_serial(addr, n) == Some(serial)));
        assert!(ok, "nsd did not load serial {serial}:\n{}", self.nsd.tail());
        self.builder = b;
    }

    /// nsd's process, for its log.
    pub fn nsd(&self) -> &PeerProcess {
        &self.nsd
    }

    pub fn unbound(&self) -> Option<&PeerProcess> {
        self.unbound.as_ref()
    }
}

/// The server answers for `.` (a start-up probe: a short time-out).
fn answers_root_soa(server: SocketAddr) -> bool {
    query_within(server, ".", RecordType::SOA, Duration::from_millis(200))
        .is_ok_and(|m| !m.answers.is_empty())
}

fn soa_serial(server: SocketAddr, zone: &str) -> Option<u32> {
    let m = query(server, zone, RecordType::SOA).ok()?;
    m.answers.iter().find_map(|r| match &r.data {
        hickory_proto::rr::RData::SOA(s) => Some(s.serial),
        _ => None,
    })
}

/// One query over UDP with the DO bit (DNSSEC records wanted) and RD, as a
/// stub resolver sends it; a truncated answer is asked again over TCP.
pub fn query(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Message, String> {
    query_within(server, name, rtype, Duration::from_secs(3))
}

/// [`query`] with a chosen time-out for the UDP answer.
pub fn query_within(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, String> {
    let id: u16 = (std::process::id() as u16)
        ^ (std::time::SystemTime::UNIX_EPOCH
            .elapsed()
            .map(|d| d.subsec_nanos())
            .unwrap_or(0) as u16);
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.authentic_data = true;
    let name = Name::from_ascii(fqdn(name)).map_err(|e| e.to_string())?;
    m.add_query(Query::query(name, rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(4096).set_dnssec_ok(true);
    m.set_edns(edns);
    let bytes = m.to_vec().map_err(|e| e.to_string())?;
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    // Connected: a closed port is an error at once (ICMP), not a time-out.
    sock.connect(server).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    sock.send(&bytes).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    let answer = loop {
        let n = sock
            .recv(&mut buf)
            .map_err(|e| format!("no answer from {server}: {e}"))?;
        let a = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
        if a.metadata.id == id {
            break a;
        }
    };
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    query_tcp(server, &bytes, id)
}

fn query_tcp(server: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&server, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let len = u16::try_from(bytes.len()).map_err(|e| e.to_string())?;
    s.write_all(&len.to_be_bytes()).map_err(|e| e.to_string())?;
    s.write_all(bytes).map_err(|e| e.to_string())?;
    let mut l = [0u8; 2];
    s.read_exact(&mut l).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
    s.read_exact(&mut buf).map_err(|e| e.to_string())?;
    let a = Message::from_vec(&buf).map_err(|e| e.to_string())?;
    if a.metadata.id != id {
        return Err("TCP answer with another id".to_owned());
    }
    Ok(a)
}

/// The TLSA data (hex) for DANE-EE SPKI SHA-256 (`3 1 1`) of the first
/// certificate in `cert_pem`, computed by the openssl CLI.
pub fn tlsa_3_1_1(cert_pem: &str) -> String {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    std::fs::File::create(&cert)
        .and_then(|mut f| f.write_all(cert_pem.as_bytes()))
        .expect("write cert");
    let script = format!(
        "openssl x509 -in '{}' -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r",
        cert.display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned()
}
