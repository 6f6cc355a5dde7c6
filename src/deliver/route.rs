//! Where mail for a domain goes: pure decisions from the configuration and
//! the DNS answers to an ordered list of hops. No lookups and no sockets
//! here; `remote` asks the DNS what [`mx_query`] names, hands the answer to
//! [`plan`], then resolves and connects hop by hop, asking [`addresses`]
//! what each address answer means and [`is_myself`] about each address.
//!
//! The rules (RFC 5321 5.1, as Postfix applies them): a `route` for the
//! domain first, then `relay_host`, then the domain's MX records by
//! preference (equal preferences shuffled), the domain itself when it has no
//! MX (A/AAAA fallback), nothing at all for a null MX (RFC 7505). An MX list
//! that names this host keeps only the hosts more preferred than us; an MX
//! whose address is one we listen on is us under another name.
//!
//! Each hop carries what the TLS policy decision (`tlspolicy::policy`)
//! needs from routing: the configured level (the route's `tls=`, else
//! `smtp_tls`), whether the route fixed it, and whether the host name came
//! from validated DNS (RFC 7672 2.2.1). `remote` adds the address answer,
//! the TLSA records and the MTA-STS policy, and asks for the decision.

use std::net::{IpAddr, SocketAddr};

use crate::config::{Config, Family, NextHop, TlsPolicy};
use crate::deliver::dns::{self, DnsError, Mx, Secured, Security};
use crate::deliver::outcome::{self, Outcome};

/// One host to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The host name (or the address, written out) for the log's relay=.
    pub host: String,
    /// The address when the hop is one (an address literal, `[192.0.2.1]`):
    /// no lookup.
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// The address families to look up (`inet_protocols`).
    pub family: Family,
    /// The configured TLS level for this hop: the route's `tls=`, else
    /// `smtp_tls`.
    pub tls: TlsPolicy,
    /// The route (or relay host) said `tls=` itself: that level and
    /// nothing else applies, as a `tls_policy` override would.
    pub tls_fixed: bool,
    /// How the host name was learnt (RFC 7672 2.2.1): the MX answer's
    /// DNSSEC status, or Secure for a name (or address) the configuration
    /// gave.
    pub mx_security: Security,
    /// TLS from the first byte (RFC 8314 3.3): port 465 or `smtps`.
    pub implicit_tls: bool,
    /// The domain itself standing in for a missing MX (RFC 5321 5.1): if it
    /// has no address either, the mail cannot be delivered at all.
    pub implicit_mx: bool,
}

/// The hops for one domain and how to treat them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub hops: Vec<Hop>,
    /// The destination `max_connections_per_domain` counts: the route or
    /// relay host when there is one, else the recipient domain.
    pub slot: String,
    /// A `route` or `relay_host` chose the hosts: the administrator meant
    /// them, so they are not checked against our own addresses.
    pub configured: bool,
    /// The hop is the `relay_host`: `relay_auth` applies.
    pub smarthost: bool,
}

/// The name whose MX records [`plan`] needs for `domain`: the domain, or a
/// route's bare host name; None when the configuration or an address
/// literal names the host outright.
pub fn mx_query<'a>(cfg: &'a Config, domain: &'a str) -> Option<&'a str> {
    match cfg.remote.next_hop(domain) {
        Some(h) if h.mx => Some(&h.host),
        Some(_) => None,
        None if domain.starts_with('[') => None,
        None => Some(domain),
    }
}

/// The ordered hops for `domain`, given the answer to the MX query that
/// [`mx_query`] named (None when it named none), with its DNSSEC status.
/// `noise` shuffles MX hosts of equal preference. Err is the outcome for
/// every recipient when there is nowhere to go.
pub fn plan(
    cfg: &Config,
    domain: &str,
    mx: Option<&Result<Secured<Mx>, DnsError>>,
    noise: u64,
) -> Result<Plan, Outcome> {
    let configured = cfg.remote.next_hop(domain);
    let smarthost = configured.is_some() && configured == cfg.remote.relay_host.as_ref();
    // Names from the configuration need no DNS to be trusted.
    let mx_security = match mx {
        Some(Ok(s)) => s.security,
        _ => Security::Secure,
    };
    let mx = mx.map(|r| r.as_ref().map(|s| s.value.clone()).map_err(Clone::clone));
    let mx = mx.as_ref();
    let hop = |host: String, ip: Option<IpAddr>, implicit_mx: bool| {
        let (port, tls, tls_fixed, implicit_tls) = match configured {
            Some(NextHop {
                port,
                tls,
                implicit_tls,
                ..
            }) => (*port, tls.unwrap_or(cfg.remote.tls), tls.is_some(), *implicit_tls),
            None => (cfg.remote.mx_port, cfg.remote.tls, false, false),
        };
        Hop {
            host,
            ip,
            port,
            family: cfg.remote.inet_protocols,
            tls,
            tls_fixed,
            mx_security,
            implicit_tls,
            implicit_mx,
        }
    };
    let hops = match configured {
        Some(NextHop { host, mx: false, .. }) => vec![hop(host.clone(), host.parse().ok(), false)],
        Some(NextHop { host, .. }) => mx_hosts(cfg, host, mx, noise)?
            .into_iter()
            .map(|(h, implicit)| hop(h, None, implicit))
            .collect(),
        // RFC 5321 5.1: an address literal is the host; no DNS at all.
        None if domain.starts_with('[') => {
            let inner = domain.trim_start_matches('[').trim_end_matches(']');
            let inner = inner.strip_prefix("IPv6:").unwrap_or(inner);
            match inner.parse::<IpAddr>() {
                Ok(ip) => vec![hop(ip.to_string(), Some(ip), false)],
                Err(_) => return Err(outcome::bad_address_literal(domain)),
            }
        }
        None => mx_hosts(cfg, domain, mx, noise)?
            .into_iter()
            .map(|(h, implicit)| hop(h, None, implicit))
            .collect(),
    };
    Ok(Plan {
        hops,
        slot: configured.map_or(domain, |h| h.host.as_str()).to_owned(),
        configured: configured.is_some(),
        smarthost,
    })
}

/// The MX hosts of `name`, best first, with ourselves and anything worse
/// removed, each marked when it is the implicit MX (the name itself).
fn mx_hosts(
    cfg: &Config,
    name: &str,
    answer: Option<&Result<Mx, DnsError>>,
    noise: u64,
) -> Result<Vec<(String, bool)>, Outcome> {
    let hosts = match answer {
        // RFC 7505 4.1: a null MX is an immediate, permanent failure.
        Some(Ok(Mx::Null)) => return Err(outcome::null_mx(name)),
        // RFC 5321 5.1: no MX, so the domain itself is the only host.
        Some(Ok(Mx::Implicit)) => return Ok(vec![(name.to_owned(), true)]),
        Some(Ok(Mx::Hosts(h))) => h.clone(),
        Some(Err(DnsError::NxDomain)) => return Err(outcome::domain_not_found(name)),
        Some(Err(e)) => return Err(outcome::mx_lookup_failed(name, e)),
        // The caller did not ask what mx_query named.
        None => return Err(outcome::mx_lookup_failed(name, &"not looked up")),
    };
    let sorted = dns::sort_mx(hosts, noise);
    // RFC 5321 5.1: if we are one of the MX hosts, only those more
    // preferred than us may be used; none left means a loop.
    let me = cfg.hostname.trim_end_matches('.');
    let mine = sorted
        .iter()
        .find(|(_, h)| h.eq_ignore_ascii_case(me))
        .map(|(p, _)| *p);
    let usable: Vec<(String, bool)> = sorted
        .into_iter()
        .filter(|(p, _)| mine.is_none_or(|m| *p < m))
        .map(|(_, h)| (h, false))
        .collect();
    if usable.is_empty() {
        return Err(outcome::loops_to_myself(name, None));
    }
    Ok(usable)
}

/// What an address lookup of a hop means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addresses {
    /// Try these, in order.
    Use(Vec<SocketAddr>),
    /// Nothing here: try the next hop, remembering why.
    Skip(Outcome),
    /// Nowhere at all: the outcome for every recipient.
    Fail(Outcome),
}

/// The addresses to try for `hop`, given its lookup (ignored, and None
/// expected, for an address hop).
pub fn addresses(hop: &Hop, answer: Option<Result<Vec<IpAddr>, DnsError>>) -> Addresses {
    let to = |ips: Vec<IpAddr>| ips.into_iter().map(|ip| SocketAddr::new(ip, hop.port)).collect();
    if let Some(ip) = hop.ip {
        return Addresses::Use(to(vec![ip]));
    }
    match answer {
        Some(Ok(a)) if a.is_empty() && hop.implicit_mx => {
            Addresses::Fail(outcome::no_mx_no_address(&hop.host))
        }
        Some(Ok(a)) if a.is_empty() => Addresses::Skip(outcome::host_without_address(&hop.host)),
        Some(Ok(a)) => Addresses::Use(to(a)),
        Some(Err(DnsError::NxDomain)) => Addresses::Skip(outcome::host_not_found(&hop.host)),
        Some(Err(e)) => Addresses::Skip(outcome::host_lookup_failed(&hop.host, &e)),
        None => Addresses::Skip(outcome::host_lookup_failed(&hop.host, &"not looked up")),
    }
}

/// Whether `addr` is one of our own listening sockets (a wildcard listener
/// is every loopback address): an MX there is us under another name.
pub fn is_myself(cfg: &Config, addr: SocketAddr) -> bool {
    let (ip, port) = (addr.ip(), addr.port());
    cfg.listen
        .smtp
        .iter()
        .any(|l| l.port() == port && (l.ip() == ip || (l.ip().is_unspecified() && ip.is_loopback())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::outcome::Verdict;
    use crate::smtp::status::Status;

    fn config(extra: &str) -> Config {
        let text = format!("hostname = mx.self.test\n{extra}");
        Config::parse(&text, std::path::Path::new("test.conf")).expect("config")
    }

    fn hosts(h: &[(u16, &str)]) -> Result<Mx, DnsError> {
        Ok(Mx::Hosts(h.iter().map(|(p, n)| (*p, (*n).to_owned())).collect()))
    }

    /// An answer from a resolver that says nothing of DNSSEC.
    fn sec(mx: Option<Result<Mx, DnsError>>) -> Option<Result<Secured<Mx>, DnsError>> {
        mx.map(|r| r.map(Secured::indeterminate))
    }

    /// A failed plan: its verdict, status and detail.
    type Failed<S> = (Verdict, Status, S);

    /// The hosts and ports of a plan, or how it failed.
    fn run(
        cfg: &Config,
        domain: &str,
        mx: Option<Result<Mx, DnsError>>,
    ) -> Result<Vec<String>, Failed<String>> {
        let asked = mx_query(cfg, domain);
        assert_eq!(asked.is_some(), mx.is_some(), "{domain}: MX query {asked:?}");
        plan(cfg, domain, sec(mx).as_ref(), 7)
            .map(|p| p.hops.iter().map(|h| format!("{}:{}", h.host, h.port)).collect())
            .map_err(|o| (o.verdict(), o.status(), o.detail().to_owned()))
    }

    #[test]
    fn routes_relay_host_and_mx_in_that_order() {
        let cfg = config(
            "route = routed.test [10.0.0.1]:2525\nroute = via.test relay.via.test:26\nrelay_host = [smart.test]:587",
        );
        // A route to an address: no DNS.
        assert_eq!(
            run(&cfg, "routed.test", None),
            Ok(vec!["10.0.0.1:2525".to_owned()])
        );
        assert_eq!(
            run(&cfg, "ROUTED.test.", None),
            Ok(vec!["10.0.0.1:2525".to_owned()])
        );
        // A route to a bare name: that name's MX, on the route's port.
        assert_eq!(mx_query(&cfg, "via.test"), Some("relay.via.test"));
        assert_eq!(
            run(
                &cfg,
                "via.test",
                Some(hosts(&[(20, "b.via.test"), (10, "a.via.test")]))
            ),
            Ok(vec!["a.via.test:26".to_owned(), "b.via.test:26".to_owned()])
        );
        // Everything else: the relay host, which is the smarthost.
        assert_eq!(
            run(&cfg, "other.test", None),
            Ok(vec!["smart.test:587".to_owned()])
        );
        let p = plan(&cfg, "other.test", None, 0).expect("plan");
        assert!(p.smarthost && p.configured);
        assert_eq!(p.slot, "smart.test");
        let p = plan(&cfg, "routed.test", None, 0).expect("plan");
        assert!(!p.smarthost && p.configured);
        assert_eq!(p.hops.first().and_then(|h| h.ip), "10.0.0.1".parse().ok());
    }

    #[test]
    fn mx_by_preference_on_mx_port() {
        let cfg = config("mx_port = 2526");
        type Row = (
            &'static str,
            Result<Mx, DnsError>,
            Result<Vec<&'static str>, Failed<&'static str>>,
        );
        let table: &[Row] = &[
            (
                "pref.test",
                hosts(&[(30, "c.test"), (10, "a.test"), (20, "b.test")]),
                Ok(vec!["a.test:2526", "b.test:2526", "c.test:2526"]),
            ),
            // No MX: the domain itself (A/AAAA fallback).
            ("bare.test", Ok(Mx::Implicit), Ok(vec!["bare.test:2526"])),
            // RFC 7505: null MX.
            (
                "null.test",
                Ok(Mx::Null),
                Err((
                    Verdict::Permanent,
                    Status(5, 1, 10),
                    "556 5.1.10 domain null.test does not accept mail (null MX)",
                )),
            ),
            (
                "nowhere.test",
                Err(DnsError::NxDomain),
                Err((
                    Verdict::Permanent,
                    Status(5, 1, 2),
                    "domain nowhere.test not found",
                )),
            ),
            (
                "broken.test",
                Err(DnsError::Temporary("SERVFAIL".to_owned())),
                Err((
                    Verdict::Temporary,
                    Status(4, 4, 3),
                    "MX lookup of broken.test: temporary DNS failure: SERVFAIL",
                )),
            ),
            // We are an MX: only the better ones remain...
            (
                "backup.test",
                hosts(&[(10, "primary.test"), (20, "MX.Self.test"), (30, "worse.test")]),
                Ok(vec!["primary.test:2526"]),
            ),
            // ...and when we are the best, the mail would loop.
            (
                "loop.test",
                hosts(&[(10, "mx.self.test"), (20, "other.test")]),
                Err((
                    Verdict::Permanent,
                    Status(5, 4, 6),
                    "mail for loop.test loops back to myself",
                )),
            ),
        ];
        for (domain, mx, want) in table {
            let want = want
                .clone()
                .map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>())
                .map_err(|(v, s, d)| (v, s, d.to_owned()));
            assert_eq!(run(&cfg, domain, Some(mx.clone())), want, "{domain}");
        }
    }

    #[test]
    fn equal_preferences_are_shuffled_by_the_noise() {
        let cfg = config("");
        let mx = sec(Some(hosts(&[
            (10, "a.test"),
            (10, "b.test"),
            (10, "c.test"),
            (10, "d.test"),
            (5, "first.test"),
        ])))
        .expect("answer");
        let orders: std::collections::HashSet<Vec<String>> = (0..20)
            .map(|n| {
                let p = plan(&cfg, "x.test", Some(&mx), n).expect("plan");
                p.hops.into_iter().map(|h| h.host).collect()
            })
            .collect();
        assert!(orders.len() > 1);
        assert!(orders
            .iter()
            .all(|o| o.first().map(String::as_str) == Some("first.test")));
    }

    #[test]
    fn address_literals() {
        let cfg = config("mx_port = 2526");
        assert_eq!(
            run(&cfg, "[192.0.2.1]", None),
            Ok(vec!["192.0.2.1:2526".to_owned()])
        );
        assert_eq!(
            run(&cfg, "[IPv6:2001:db8::1]", None),
            Ok(vec!["2001:db8::1:2526".to_owned()])
        );
        assert_eq!(
            run(&cfg, "[not.an.address]", None),
            Err((
                Verdict::Permanent,
                Status(5, 1, 2),
                "unusable address literal [not.an.address]".to_owned()
            ))
        );
    }

    #[test]
    fn hops_carry_tls_family_and_port() {
        let cfg = config(
            "smtp_tls = encrypt\ninet_protocols = ipv4\nroute = v.test [10.0.0.2]:465 tls=verify\nroute = n.test [10.0.0.3] tls=none",
        );
        let hop = |d: &str| plan(&cfg, d, None, 0).expect("plan").hops.remove(0);
        let v = hop("v.test");
        assert_eq!(
            (v.tls, v.implicit_tls, v.port, v.family),
            (TlsPolicy::Verify, true, 465, Family::Ipv4)
        );
        assert_eq!(hop("n.test").tls, TlsPolicy::None);
        let mx = Ok(Secured::indeterminate(Mx::Implicit));
        let d = plan(&cfg, "d.test", Some(&mx), 0).expect("plan").hops.remove(0);
        assert_eq!(
            (d.tls, d.implicit_tls, d.port, d.implicit_mx),
            (TlsPolicy::Encrypt, false, 25, true)
        );
    }

    #[test]
    fn address_answers() {
        let cfg = config("");
        let mx = hosts(&[(10, "a.test")]).map(Secured::indeterminate);
        let named = plan(&cfg, "x.test", Some(&mx), 0).expect("plan").hops.remove(0);
        let implicit_mx = Ok(Secured::indeterminate(Mx::Implicit));
        let implicit = plan(&cfg, "bare.test", Some(&implicit_mx), 0)
            .expect("plan")
            .hops
            .remove(0);
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let sa = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(
            addresses(&named, Some(Ok(vec![ip("::1"), ip("127.0.0.1")]))),
            Addresses::Use(vec![sa("[::1]:25"), sa("127.0.0.1:25")])
        );
        let detail = |a: Addresses| match a {
            Addresses::Skip(o) => ("skip", o.status(), o.detail().to_owned()),
            Addresses::Fail(o) => ("fail", o.status(), o.detail().to_owned()),
            Addresses::Use(v) => ("use", Status(2, 0, 0), format!("{v:?}")),
        };
        assert_eq!(
            detail(addresses(&named, Some(Ok(vec![])))),
            ("skip", Status(4, 4, 4), "a.test has no address".to_owned())
        );
        assert_eq!(
            detail(addresses(&implicit, Some(Ok(vec![])))),
            (
                "fail",
                Status(5, 4, 4),
                "bare.test has neither MX nor address records".to_owned()
            )
        );
        assert_eq!(
            detail(addresses(&named, Some(Err(DnsError::NxDomain)))),
            ("skip", Status(4, 4, 4), "host a.test not found".to_owned())
        );
        assert_eq!(
            detail(addresses(
                &named,
                Some(Err(DnsError::Temporary("timeout".to_owned())))
            )),
            (
                "skip",
                Status(4, 4, 3),
                "a.test: temporary DNS failure: timeout".to_owned()
            )
        );
        // An address hop needs no answer.
        let lit = plan(&cfg, "[192.0.2.9]", None, 0).expect("plan").hops.remove(0);
        assert_eq!(addresses(&lit, None), Addresses::Use(vec![sa("192.0.2.9:25")]));
    }

    #[test]
    fn our_own_sockets() {
        let sa = |s: &str| s.parse::<SocketAddr>().expect("addr");
        let mut cfg = config("");
        cfg.listen.smtp = vec![sa("127.0.0.1:25"), sa("0.0.0.0:2525")];
        assert!(is_myself(&cfg, sa("127.0.0.1:25")));
        assert!(!is_myself(&cfg, sa("127.0.0.2:25")));
        // A wildcard listener is every loopback address on its port.
        assert!(is_myself(&cfg, sa("127.0.0.2:2525")));
        assert!(!is_myself(&cfg, sa("192.0.2.1:2525")));
        assert!(!is_myself(&cfg, sa("127.0.0.1:26")));
    }
}
