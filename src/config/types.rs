//! The value types tern.conf keys hold. They live here, at the bottom, so that
//! the configuration depends on nothing above it: the spool, outbound TLS and
//! DNS code import them from here rather than the other way round.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    /// Parse `ADDRESS/PREFIX` or a bare address (a single host). Host bits beyond the
    /// prefix are cleared rather than rejected: `10.1.2.3/8` means `10.0.0.0/8`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            // u8::from_str accepts a leading '+'; a prefix is plain digits only.
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => l.parse::<u8>().ok()?,
            Some(_) => return None,
            None => max,
        };
        if len > max {
            return None;
        }
        Some(Cidr::new(ip, len))
    }

    /// The network of `ip` with a `len`-bit prefix (clamped to the family's width).
    pub(crate) fn new(ip: IpAddr, len: u8) -> Cidr {
        let len = len.min(if ip.is_ipv4() { 32 } else { 128 });
        Cidr {
            net: mask(ip, len),
            len,
        }
    }

    /// Whether `ip` lies in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
    /// as a dual-stack socket reports IPv4 peers) matches IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.len) == self.net
    }
}

/// Clear the bits of `ip` beyond the first `len`.
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    // checked_shl yields None for a full-width shift (prefix 0): then nothing is kept.
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// Where `route` or `relay_host` sends mail: `[host]:port` (no MX lookup),
/// `host:port` or `host` (MX lookup of host), optionally followed by `tls=POLICY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub host: String,
    pub port: u16,
    /// Look up the host's MX records (a bare name) or not (`[name]`).
    pub mx: bool,
    pub tls: Option<TlsPolicy>,
    /// TLS from the first byte (RFC 8314): port 465, or the word `smtps`.
    pub implicit_tls: bool,
}

/// Where a `route` sends a domain's mail: an SMTP next hop, or an LMTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Smtp(NextHop),
    Lmtp(Lmtp),
}

/// An LMTP server (RFC 2033) that takes mail for its mailboxes: the value of
/// `mailbox_transport` and of a route written `lmtp:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lmtp {
    /// `unix:/path`, or `inet:` a host name or address and a port: a name
    /// has its addresses looked up, never its MX records (LMTP has no MX).
    pub addr: crate::endpoint::Endpoint,
    /// `tls=POLICY` after a TCP server (None: `smtp_tls`); a socket has none.
    pub tls: Option<TlsPolicy>,
}

/// The outbound TLS policy of a route, weakest first (`smtp_tls`, `tls=` of a
/// next hop; Postfix's smtp_tls_security_level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsPolicy {
    None,
    May,
    Encrypt,
    Verify,
}

impl TlsPolicy {
    pub fn parse(s: &str) -> Option<TlsPolicy> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Some(TlsPolicy::None),
            "may" => Some(TlsPolicy::May),
            "encrypt" => Some(TlsPolicy::Encrypt),
            "verify" => Some(TlsPolicy::Verify),
            _ => None,
        }
    }

    /// Whether mail may go out in plaintext under this policy.
    pub fn allows_plaintext(self) -> bool {
        matches!(self, TlsPolicy::None | TlsPolicy::May)
    }
}

/// A per-domain outbound TLS override (`tls_policy = DOMAIN LEVEL`,
/// Postfix's smtp_tls_policy_maps); `tlspolicy::policy` knows it as
/// `Override`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsOverride {
    /// Use DANE for this domain even when `smtp_dane = no`; without usable
    /// TLSA the normal order goes on (MTA-STS, then `smtp_tls`).
    Dane,
    /// This level and nothing else: DANE and MTA-STS are not consulted
    /// (the administrator knows this destination).
    Fixed(TlsPolicy),
}

impl TlsOverride {
    /// `dane`, `verify`, `encrypt`, `may` or `none`.
    pub fn parse(s: &str) -> Option<TlsOverride> {
        if s.eq_ignore_ascii_case("dane") {
            return Some(TlsOverride::Dane);
        }
        TlsPolicy::parse(s).map(TlsOverride::Fixed)
    }
}

/// Whose DNSSEC validation tern believes (`dnssec_trust_ad`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustAd {
    /// Only when every resolver in use is on loopback (a local validator).
    Auto,
    Yes,
    No,
}

/// Which address families delivery uses (`inet_protocols`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
    Both,
}

/// How the spool makes a new message durable (`spool_sync`). Both give the same
/// promise (src/spool/README.md, "The promise"); they differ in what they write and
/// wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Each session makes its own message durable with one fsync of its one file
    /// (msg/ID: the body, then the seal holding its envelope, src/spool/seal.rs), as
    /// Postfix does its queue file. Nothing else on the filesystem is written or
    /// waited for, so another program writing there costs only the disk time it
    /// takes (issue 21). Relies on the filesystem making a new file's name durable
    /// with the file's fsync, as Linux's ext4, XFS and btrfs do.
    #[default]
    Fsync,
    /// One `syncfs(2)` per group-commit batch writes every message of the batch and
    /// every new name at once: one device flush per batch, however many messages it
    /// holds. It also writes out, and waits for, whatever else is dirty on the
    /// spool's filesystem, so it suits only a spool with a filesystem of its own.
    Syncfs,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn cidr_parse_and_display() {
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.0/8", Some("127.0.0.0/8")),
            ("10.1.2.3", Some("10.1.2.3/32")),
            ("10.1.2.3/8", Some("10.0.0.0/8")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("1.2.3.4/0", Some("0.0.0.0/0")),
            ("::1/128", Some("::1/128")),
            ("::1", Some("::1/128")),
            ("2001:db8::1/32", Some("2001:db8::/32")),
            ("::/0", Some("::/0")),
            ("10.0.0.0/33", None),
            ("::/129", None),
            ("10.0.0.0/", None),
            ("10.0.0.0/+8", None),
            ("10.0.0.0/-1", None),
            ("10.0.0.0/8/8", None),
            ("10.0.0/8", None),
            ("/8", None),
            ("", None),
            ("fe80::1%eth0/64", None),
            ("10.0.0.0/999999999999", None),
        ];
        for (s, want) in cases {
            assert_eq!(Cidr::parse(s).map(|c| c.to_string()).as_deref(), *want, "{s:?}");
        }
    }

    #[test]
    fn cidr_contains() {
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.0/8", "127.0.0.1", true),
            ("127.0.0.0/8", "127.255.255.255", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("127.0.0.0/8", "::ffff:10.0.0.1", false),
            ("10.0.0.0/8", "::10.0.0.1", false), // IPv4-compatible, not mapped
            ("::1/128", "::1", true),
            ("::1/128", "::2", false),
            ("::1/128", "127.0.0.1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::/0", "2001:db8::1", true),
            ("::/0", "10.0.0.1", false),
        ];
        for (net, addr, want) in cases {
            assert_eq!(cidr(net).contains(ip(addr)), *want, "{net} contains {addr}");
        }
        assert_eq!(Cidr::new(ip("10.1.2.3"), 8), cidr("10.0.0.0/8"));
        assert_eq!(Cidr::new(ip("::1"), 200), cidr("::1/128"));
    }

    #[test]
    fn tls_overrides() {
        assert_eq!(TlsOverride::parse("DANE"), Some(TlsOverride::Dane));
        assert_eq!(
            TlsOverride::parse("verify"),
            Some(TlsOverride::Fixed(TlsPolicy::Verify))
        );
        assert_eq!(
            TlsOverride::parse("none"),
            Some(TlsOverride::Fixed(TlsPolicy::None))
        );
        assert_eq!(TlsOverride::parse("dane-only"), None);
    }

    #[test]
    fn tls_policies() {
        assert_eq!(TlsPolicy::parse("VERIFY"), Some(TlsPolicy::Verify));
        assert_eq!(TlsPolicy::parse("sometimes"), None);
        assert!(TlsPolicy::May.allows_plaintext());
        assert!(!TlsPolicy::Encrypt.allows_plaintext());
        assert!(TlsPolicy::None < TlsPolicy::May && TlsPolicy::Encrypt < TlsPolicy::Verify);
    }
}

/// `origin`: the domain a bare user name gets (Postfix's `myorigin`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    /// Unset: /etc/mailname when present (Debian's MTAs read it), else `hostname`.
    #[default]
    Default,
    /// A domain, as written.
    Domain(String),
    /// A file whose first line is the domain (`origin = /etc/mailname`).
    File(std::path::PathBuf),
}

/// The algorithm of a DKIM key, as written in `dkim_sign` (`rsa` or `ed25519`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// rsa-sha256 (RFC 6376 3.3; RFC 8301 forbids rsa-sha1 for signing).
    Rsa,
    /// ed25519-sha256 (RFC 8463).
    Ed25519,
}

impl KeyKind {
    pub fn parse(s: &str) -> Option<KeyKind> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" => Some(KeyKind::Rsa),
            "ed25519" => Some(KeyKind::Ed25519),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Rsa => "rsa",
            KeyKind::Ed25519 => "ed25519",
        }
    }
}

/// One `dkim_sign = DOMAIN SELECTOR KEYFILE [rsa|ed25519]` entry: who signs
/// with which key (the key itself is read by `mailauth`, see
/// `mailauth::Signers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignEntry {
    /// The signing domain, lower case, without a trailing dot.
    pub domain: String,
    pub selector: String,
    pub key_file: std::path::PathBuf,
    /// `None`: taken from the key file.
    pub kind: Option<KeyKind>,
}

impl SignEntry {
    /// Parses the value of a `dkim_sign` line; the error says what is wrong.
    pub fn parse(value: &str) -> Result<SignEntry, String> {
        let words: Vec<&str> = value.split_whitespace().collect();
        let (domain, selector, file, kind) = match words.as_slice() {
            [d, s, f] => (*d, *s, *f, None),
            [d, s, f, k] => {
                let kind =
                    KeyKind::parse(k).ok_or_else(|| format!("key type must be rsa or ed25519, not {k:?}"))?;
                (*d, *s, *f, Some(kind))
            }
            _ => return Err("expected DOMAIN SELECTOR KEYFILE [rsa|ed25519]".to_owned()),
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !is_dns_name(&domain) || !domain.contains('.') {
            return Err(format!("{domain:?} is not a domain name"));
        }
        // RFC 6376 3.1: selector = sub-domain *( "." sub-domain ).
        if !is_dns_name(selector) {
            return Err(format!("{selector:?} is not a selector (DNS labels)"));
        }
        Ok(SignEntry {
            domain,
            selector: selector.to_owned(),
            key_file: std::path::PathBuf::from(file),
            kind,
        })
    }
}

/// ASCII DNS labels: letters, digits, hyphens inside, dots between, each
/// label 1-63 octets (RFC 1035 2.3.1, RFC 5321 4.1.2 sub-domain).
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
                && b.first() != Some(&b'-')
                && b.last() != Some(&b'-')
        })
}

/// `spf_reject`: whether an SPF `fail` refuses the mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpfReject {
    /// Refuse when either identity (MAIL FROM or HELO) evaluates to `fail`.
    Fail,
    /// Never refuse on SPF; only annotate. The default.
    #[default]
    None,
}

#[cfg(test)]
mod mailauth_tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn sign_entry_parse() {
        let e = SignEntry::parse("Example.ORG. s2026 /etc/tern/k.pem ed25519").unwrap();
        assert_eq!(e.domain, "example.org");
        assert_eq!(e.selector, "s2026");
        assert_eq!(e.key_file, PathBuf::from("/etc/tern/k.pem"));
        assert_eq!(e.kind, Some(KeyKind::Ed25519));
        assert_eq!(SignEntry::parse("example.org a.b k.pem").unwrap().kind, None);
        for bad in [
            "",
            "example.org sel",
            "example.org sel k.pem dsa",
            "example.org sel k.pem rsa extra",
            "exa mple.org",
            "localhost sel k.pem",
            "example.org -sel k.pem",
            "example.org sel;x k.pem",
            "bad..org sel k.pem",
        ] {
            assert!(SignEntry::parse(bad).is_err(), "{bad:?}");
        }
    }
}
