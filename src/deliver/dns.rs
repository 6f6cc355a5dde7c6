//! DNS for remote delivery: MX and address lookups behind a small blocking
//! trait, so the rest of tern (and its tests) never sees an async type.
//!
//! hickory-resolver 0.25 has no synchronous resolver any more (hickory-dns
//! PR #2515), so [`Hickory`] keeps one current-thread tokio runtime of its own
//! and `block_on`s each lookup. Several delivery threads may call it at once:
//! a current-thread runtime lets one of them drive the I/O while the others
//! wait for their turn, which is fine for the handful of queries a delivery
//! makes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

/// What the MX lookup of a domain said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mx {
    /// MX records: (preference, host), in DNS order (unsorted).
    Hosts(Vec<(u16, String)>),
    /// The domain exists but has no MX: use its own address (RFC 5321 5.1).
    Implicit,
    /// `MX 0 .`: the domain accepts no mail (RFC 7505).
    Null,
}

/// Why a lookup failed. NXDOMAIN is permanent; everything else (SERVFAIL,
/// timeouts, no reachable server) is temporary and never bounces mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    NxDomain,
    Temporary(String),
}

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsError::NxDomain => f.write_str("domain not found (NXDOMAIN)"),
            DnsError::Temporary(why) => write!(f, "temporary DNS failure: {why}"),
        }
    }
}

/// Which address families delivery uses, defined with the configuration.
pub use crate::config::Family;

/// The lookups remote delivery needs.
pub trait Resolver: Send + Sync {
    fn mx(&self, domain: &str) -> Result<Mx, DnsError>;
    /// A host's addresses, IPv6 first when both are wanted. An empty list
    /// means the name exists without addresses of the wanted families.
    fn addrs(&self, host: &str, family: Family) -> Result<Vec<IpAddr>, DnsError>;
}

/// hickory-resolver with its private runtime.
pub struct Hickory {
    rt: tokio::runtime::Runtime,
    resolver: TokioResolver,
}

impl Hickory {
    /// Use `servers` when given (UDP and TCP each), else /etc/resolv.conf.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> std::io::Result<Hickory> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (config, mut opts) = if servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| std::io::Error::other(format!("resolv.conf: {e}")))?
        } else {
            let mut c = ResolverConfig::new();
            for s in servers {
                c.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
                c.add_name_server(NameServerConfig::new(*s, Protocol::Tcp));
            }
            (c, ResolverOpts::default())
        };
        opts.timeout = timeout;
        opts.attempts = 1;
        // MX hosts must not be searched under the local domain (RFC 5321 5.1).
        opts.ndots = 0;
        let resolver = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        Ok(Hickory { rt, resolver })
    }
}

/// Fully qualified, so the search list never applies.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// NXDOMAIN, "exists but no records of this type", or a temporary failure.
enum Failure {
    NxDomain,
    NoRecords,
    Temporary(String),
}

fn classify(e: &ResolveError) -> Failure {
    if let Some(p) = e.proto() {
        if let ProtoErrorKind::NoRecordsFound { response_code, .. } = p.kind() {
            return match *response_code {
                ResponseCode::NXDomain => Failure::NxDomain,
                ResponseCode::NoError => Failure::NoRecords,
                other => Failure::Temporary(format!("{other}")),
            };
        }
    }
    Failure::Temporary(e.to_string())
}

impl Resolver for Hickory {
    fn mx(&self, domain: &str) -> Result<Mx, DnsError> {
        let r = self.rt.block_on(self.resolver.mx_lookup(fqdn(domain)));
        match r {
            Ok(l) => {
                let hosts: Vec<(u16, String)> = l
                    .iter()
                    .map(|mx| {
                        let host = mx.exchange().to_ascii();
                        let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
                        (mx.preference(), host)
                    })
                    .collect();
                // RFC 7505 3: a single MX with an empty exchange (the root).
                if hosts.len() == 1 && hosts.iter().all(|(_, h)| h.is_empty()) {
                    return Ok(Mx::Null);
                }
                let hosts: Vec<_> = hosts.into_iter().filter(|(_, h)| !h.is_empty()).collect();
                if hosts.is_empty() {
                    return Ok(Mx::Implicit);
                }
                Ok(Mx::Hosts(hosts))
            }
            Err(e) => match classify(&e) {
                Failure::NxDomain => Err(DnsError::NxDomain),
                Failure::NoRecords => Ok(Mx::Implicit),
                Failure::Temporary(why) => Err(DnsError::Temporary(why)),
            },
        }
    }

    fn addrs(&self, host: &str, family: Family) -> Result<Vec<IpAddr>, DnsError> {
        let name = fqdn(host);
        let mut out = Vec::new();
        let mut nx = 0;
        let mut temp = None;
        if family != Family::Ipv4 {
            match self.rt.block_on(self.resolver.ipv6_lookup(name.as_str())) {
                Ok(l) => out.extend(l.iter().map(|a| IpAddr::V6(a.0))),
                Err(e) => match classify(&e) {
                    Failure::NxDomain => nx += 1,
                    Failure::NoRecords => {}
                    Failure::Temporary(why) => temp = Some(why),
                },
            }
        }
        if family != Family::Ipv6 {
            match self.rt.block_on(self.resolver.ipv4_lookup(name.as_str())) {
                Ok(l) => out.extend(l.iter().map(|a| IpAddr::V4(a.0))),
                Err(e) => match classify(&e) {
                    Failure::NxDomain => nx += 1,
                    Failure::NoRecords => {}
                    Failure::Temporary(why) => temp = Some(why),
                },
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        if let Some(why) = temp {
            return Err(DnsError::Temporary(why));
        }
        if nx > 0 {
            return Err(DnsError::NxDomain);
        }
        Ok(out)
    }
}

/// A resolver that could not be set up: every lookup fails temporarily.
pub struct Broken(pub String);

impl Resolver for Broken {
    fn mx(&self, _domain: &str) -> Result<Mx, DnsError> {
        Err(DnsError::Temporary(self.0.clone()))
    }
    fn addrs(&self, _host: &str, _family: Family) -> Result<Vec<IpAddr>, DnsError> {
        Err(DnsError::Temporary(self.0.clone()))
    }
}

/// Order MX hosts by preference, shuffling equal preferences (RFC 5321
/// 5.1: "randomize ... to spread the load"), using `noise` as the source.
pub fn sort_mx(mut hosts: Vec<(u16, String)>, noise: u64) -> Vec<(u16, String)> {
    let key = |h: &str| {
        use std::hash::{Hash, Hasher};
        let mut s = std::collections::hash_map::DefaultHasher::new();
        noise.hash(&mut s);
        h.hash(&mut s);
        s.finish()
    };
    hosts.sort_by_key(|(p, h)| (*p, key(h)));
    hosts
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn fqdn_adds_the_root() {
        assert_eq!(fqdn("example.org"), "example.org.");
        assert_eq!(fqdn("example.org."), "example.org.");
    }
}
