//! The parsers of tern.conf values: each takes the text after `=` and gives
//! the typed value or says what is wrong with it (without the key; the
//! caller prefixes it). Shared by the key table and the fuzz target.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::types::{
    Cidr, Family, Lmtp, NextHop, Origin, Route, SignEntry, SpfReject, SyncMode, TlsOverride, TlsPolicy,
    TrustAd,
};
use crate::endpoint::Endpoint;
use crate::smtp::address::domain_key;

/// An account name for `user`: what useradd accepts, checked here so a typo
/// is a config error rather than a failed lookup at start.
pub(super) fn account_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && !v.starts_with('-')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!("bad user name {v:?}"))
    }
}

/// `log_level`: syslog's severities that the log crate has (no trace: `-v -v`).
pub(super) fn log_level(v: &str) -> Result<log::LevelFilter, String> {
    match v.to_ascii_lowercase().as_str() {
        "error" => Ok(log::LevelFilter::Error),
        "warn" | "warning" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        _ => Err(format!("bad log level {v:?} (error, warn, info or debug)")),
    }
}

/// `syslog_facility`: the facilities a mail daemon may use, as RFC 5424 numbers
/// (mail 2, daemon 3, local0..local7 16..23).
pub(super) fn syslog_facility(v: &str) -> Result<u8, String> {
    let name = v.to_ascii_lowercase();
    let local = name
        .strip_prefix("local")
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| *n <= 7);
    match (name.as_str(), local) {
        ("mail", _) => Ok(2),
        ("daemon", _) => Ok(3),
        (_, Some(n)) => Ok(16 + n),
        _ => Err(format!(
            "bad syslog facility {v:?} (mail, daemon, local0 to local7)"
        )),
    }
}

/// Cut a `#` comment: one that starts the line or follows whitespace. A `#` inside a
/// word is kept, so a value such as a path may contain one.
pub(super) fn strip_comment(line: &str) -> &str {
    let mut after_space = true;
    for (i, ch) in line.char_indices() {
        if ch == '#' && after_space {
            return line.get(..i).unwrap_or(line);
        }
        after_space = ch.is_whitespace();
    }
    line
}

/// List items: separated by whitespace or commas, empty items dropped.
fn items(v: &str) -> impl Iterator<Item = &str> {
    v.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

pub(super) fn nonempty(v: &str) -> Result<&str, String> {
    if v.is_empty() {
        Err("missing value".to_string())
    } else {
        Ok(v)
    }
}

/// Relative paths are kept as given: whoever starts the daemon decides the cwd.
pub(super) fn path(v: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(nonempty(v)?))
}

/// `hostname`: a domain name, as written.
pub(super) fn hostname(v: &str) -> Result<String, String> {
    check_domain(nonempty(v)?).map_err(|why| format!("bad domain {v:?}: {why}"))?;
    Ok(v.to_owned())
}

/// `origin`: a domain, or an absolute path to a file that holds one.
pub(super) fn origin(v: &str) -> Result<Origin, String> {
    let v = nonempty(v)?;
    if v.starts_with('/') {
        return Ok(Origin::File(PathBuf::from(v)));
    }
    check_domain(v).map_err(|why| format!("bad domain {v:?}: {why}"))?;
    Ok(Origin::Domain(v.to_ascii_lowercase()))
}

/// `mx_port`: a port number other than 0.
pub(super) fn mx_port(v: &str) -> Result<u16, String> {
    port_number(nonempty(v)?)
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("bad port {v:?}"))
}

/// RFC 1035 host name syntax: letters, digits and hyphens in dot-separated labels.
pub(super) fn check_domain(d: &str) -> Result<(), String> {
    if d.is_empty() {
        return Err("empty".to_string());
    }
    if d.len() > 253 {
        return Err("longer than 253 characters".to_string());
    }
    for label in d.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a dot at the start or end)".to_string());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if let Some(bad) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(format!(
                "{bad:?} is not allowed (only letters, digits, hyphens and dots)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with a hyphen"));
        }
    }
    Ok(())
}

pub(super) fn default_local_domains(hostname: &str) -> Vec<String> {
    let mut v = Vec::new();
    push_unique(
        &mut v,
        hostname
            .strip_suffix('.')
            .unwrap_or(hostname)
            .to_ascii_lowercase(),
    );
    push_unique(&mut v, "localhost".to_string());
    v
}

/// An empty list is allowed: a pure relay or smarthost client has no local domains.
pub(super) fn local_domains(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in items(v) {
        push_unique(&mut out, ascii_domain(item)?);
    }
    Ok(out)
}

/// A domain name as it is kept for comparisons: lower case, A-labels for
/// a UTF-8 name (RFC 5890; `bücher.example` is kept as
/// `xn--bcher-kva.example`), no trailing dot (a fully qualified
/// "example.org." is the same domain as "example.org").
fn ascii_domain(item: &str) -> Result<String, String> {
    let d =
        domain_key(item).ok_or_else(|| format!("bad domain {item:?}: not a valid internationalized name"))?;
    check_domain(&d).map_err(|why| format!("bad domain {item:?}: {why}"))?;
    Ok(d)
}

/// A next hop's host name as it is looked up: A-labels for a UTF-8 name,
/// lower case.
fn host_name(host: &str) -> Result<String, String> {
    let ascii =
        domain_key(host).ok_or_else(|| format!("bad host {host:?}: not a valid internationalized name"))?;
    check_domain(&ascii).map_err(|why| format!("bad host {host:?}: {why}"))?;
    Ok(ascii)
}

pub(super) fn listen(v: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for item in items(v) {
        for addr in listen_addr(item).ok_or_else(|| {
            format!("bad address {item:?} (use IP:PORT, [IPv6]:PORT, a bare IP for port 25, or *:PORT)")
        })? {
            push_unique(&mut out, addr);
        }
    }
    if out.is_empty() {
        return Err("no addresses given (the daemon would not listen anywhere)".to_string());
    }
    Ok(out)
}

/// Like `listen`, but an empty value means no listener of that kind.
pub(super) fn listen_list(v: &str) -> Result<Vec<SocketAddr>, String> {
    if items(v).next().is_none() {
        return Ok(Vec::new());
    }
    listen(v)
}

/// One listen item; `*` means every address of both families, hence possibly two.
/// Port 0 is allowed: the kernel picks a free port, which tests rely on.
fn listen_addr(item: &str) -> Option<Vec<SocketAddr>> {
    let any = |port| {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        ]
    };
    if item == "*" {
        return Some(any(25));
    }
    if let Some(port) = item.strip_prefix("*:") {
        return Some(any(port_number(port)?));
    }
    if let Ok(sa) = item.parse::<SocketAddr>() {
        return Some(vec![sa]);
    }
    // A bare address, IPv6 with or without brackets.
    let bare = item
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(item);
    let ip: IpAddr = bare.parse().ok()?;
    Some(vec![SocketAddr::new(ip, 25)])
}

pub(super) fn port_number(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Name servers as IP:PORT (or a bare IP for port 53); empty = resolv.conf.
pub(super) fn dns_servers(v: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for item in items(v) {
        let sa = match item.parse::<SocketAddr>() {
            Ok(sa) => sa,
            Err(_) => {
                let bare = item.trim_start_matches('[').trim_end_matches(']');
                let ip: IpAddr = bare
                    .parse()
                    .map_err(|_| format!("bad name server {item:?} (use IP or IP:PORT)"))?;
                SocketAddr::new(ip, 53)
            }
        };
        push_unique(&mut out, sa);
    }
    Ok(out)
}

/// Listener kinds, for `proxy_protocol`.
/// `message_drop_headers`: header field names (RFC 5322 3.6.8: printable ASCII
/// but the colon), separated by spaces or commas; lower-cased. An empty value
/// drops nothing.
pub(super) fn header_names(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in items(v) {
        if !item.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
            return Err(format!("{item:?} is not a header field name"));
        }
        push_unique(&mut out, item.to_ascii_lowercase());
    }
    Ok(out)
}

pub(super) fn services(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in items(v) {
        let s = item.to_ascii_lowercase();
        if !["smtp", "submission", "smtps"].contains(&s.as_str()) {
            return Err(format!(
                "unknown service {item:?} (use smtp, submission or smtps)"
            ));
        }
        push_unique(&mut out, s);
    }
    Ok(out)
}

pub(super) fn tls_policy(v: &str) -> Result<TlsPolicy, String> {
    TlsPolicy::parse(nonempty(v)?)
        .ok_or_else(|| format!("bad TLS policy {v:?} (use none, may, encrypt or verify)"))
}

/// `tls_policy = DOMAIN LEVEL`: a domain, or `.domain` for its subdomains
/// (Postfix's parent_domain_matches_subdomains), and a level.
pub(super) fn tls_override(v: &str) -> Result<(String, TlsOverride), String> {
    let v = nonempty(v)?;
    let (domain, level) = v
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("bad tls_policy {v:?} (use DOMAIN dane|verify|encrypt|may|none)"))?;
    let level = level.trim();
    let o = TlsOverride::parse(level)
        .ok_or_else(|| format!("bad TLS level {level:?} (use dane, verify, encrypt, may or none)"))?;
    let d = domain.strip_suffix('.').unwrap_or(domain);
    let bare = d.strip_prefix('.').unwrap_or(d);
    check_domain(bare).map_err(|why| format!("bad domain {domain:?}: {why}"))?;
    Ok((d.to_ascii_lowercase(), o))
}

/// `dnssec_trust_ad`: auto, yes or no.
pub(super) fn trust_ad(v: &str) -> Result<TrustAd, String> {
    match nonempty(v)?.to_ascii_lowercase().as_str() {
        "auto" => Ok(TrustAd::Auto),
        "yes" => Ok(TrustAd::Yes),
        "no" => Ok(TrustAd::No),
        _ => Err(format!("bad value {v:?} (use auto, yes or no)")),
    }
}

/// A mail address for reports to come from (`tlsrpt_from`): local@domain.
pub(super) fn address(v: &str) -> Result<String, String> {
    let v = nonempty(v)?;
    let (local, domain) = v
        .rsplit_once('@')
        .ok_or_else(|| format!("bad address {v:?} (use local@domain)"))?;
    if local.is_empty()
        || local
            .bytes()
            .any(|b| b <= b' ' || b == b'<' || b == b'>' || b >= 0x7f)
    {
        return Err(format!("bad address {v:?} (use local@domain)"));
    }
    check_domain(domain).map_err(|why| format!("bad domain in {v:?}: {why}"))?;
    Ok(v.to_owned())
}

/// Free text on one line (`tlsrpt_organization`).
pub(super) fn text(v: &str) -> Result<String, String> {
    Ok(nonempty(v)?.to_owned())
}

/// `dkim_sign = DOMAIN SELECTOR KEYFILE [rsa|ed25519]`; the key itself is
/// read later, by the daemon (sendmail, which reads this file too, holds no
/// keys).
pub(super) fn dkim_sign(v: &str) -> Result<SignEntry, String> {
    SignEntry::parse(v)
}

/// `spf_reject = fail | none`.
pub(super) fn spf_reject(v: &str) -> Result<SpfReject, String> {
    match v.to_ascii_lowercase().as_str() {
        "fail" => Ok(SpfReject::Fail),
        "none" => Ok(SpfReject::None),
        _ => Err(format!("bad value {v:?} (fail or none)")),
    }
}

pub(super) fn spool_sync(v: &str) -> Result<SyncMode, String> {
    match nonempty(v)?.to_ascii_lowercase().as_str() {
        "syncfs" => Ok(SyncMode::Syncfs),
        "fsync" => Ok(SyncMode::Fsync),
        _ => Err(format!("bad value {v:?} (use syncfs or fsync)")),
    }
}

pub(super) fn inet_protocols(v: &str) -> Result<Family, String> {
    match nonempty(v)?.to_ascii_lowercase().as_str() {
        "ipv4" => Ok(Family::Ipv4),
        "ipv6" => Ok(Family::Ipv6),
        "both" | "all" => Ok(Family::Both),
        _ => Err(format!("bad value {v:?} (use ipv4, ipv6 or both)")),
    }
}

/// `[host]:port`, `[host]`, `host:port` or `host`, then an optional `tls=POLICY`.
pub(super) fn next_hop(v: &str) -> Result<NextHop, String> {
    let mut words = nonempty(v)?.split_whitespace();
    let target = words.next().ok_or("missing value")?;
    let mut tls = None;
    let mut smtps = false;
    for w in words {
        if w.eq_ignore_ascii_case("smtps") {
            smtps = true;
            continue;
        }
        match w.split_once('=') {
            Some((k, p)) if k.eq_ignore_ascii_case("tls") => tls = Some(tls_policy(p)?),
            _ => {
                return Err(format!(
                    "unexpected {w:?} after the next hop (only tls=POLICY may follow)"
                ))
            }
        }
    }
    let bad = || format!("bad next hop {target:?} (use [host]:port, host:port, [host] or host)");
    let (host, port, mx) = if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => 25,
            p => port_number(p.strip_prefix(':').ok_or_else(bad)?).ok_or_else(bad)?,
        };
        (host, port, false)
    } else {
        match target.rsplit_once(':') {
            Some((h, p)) => (h, port_number(p).ok_or_else(bad)?, true),
            None => (target, 25, true),
        }
    };
    if port == 0 {
        return Err(bad());
    }
    let host = if host.parse::<IpAddr>().is_err() {
        host_name(host)?
    } else if mx {
        return Err(format!("{target:?}: an address needs brackets, as in [{host}]"));
    } else {
        host.to_ascii_lowercase()
    };
    Ok(NextHop {
        host,
        port,
        mx,
        tls,
        implicit_tls: smtps || port == 465,
    })
}

/// `DOMAIN NEXTHOP [tls=POLICY]`, or `DOMAIN lmtp:...` (see [`lmtp`]).
pub(super) fn route(v: &str) -> Result<(String, Route), String> {
    let v = nonempty(v)?;
    let (domain, hop) = v
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("bad route {v:?} (use DOMAIN [host]:port)"))?;
    let hop = hop.trim();
    let route = if has_prefix(hop, "lmtp:") {
        Route::Lmtp(lmtp(hop)?)
    } else {
        Route::Smtp(next_hop(hop)?)
    };
    Ok((ascii_domain(domain)?, route))
}

/// Whether `s` starts with `prefix`, in any case.
fn has_prefix(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// The port of an LMTP server written without one: 24, "any private mail
/// system" in IANA's registry, as Postfix's lmtp_tcp_port.
const LMTP_PORT: u16 = 24;

/// An LMTP server: `lmtp:unix:/path`, or `lmtp:[host]:port`, `lmtp:[host]`,
/// `lmtp:host:port`, `lmtp:host` (`inet:` may come first, as in Postfix),
/// then an optional `tls=POLICY` for TCP.
pub(super) fn lmtp(v: &str) -> Result<Lmtp, String> {
    let mut words = nonempty(v)?.split_whitespace();
    let target = words.next().ok_or("missing value")?;
    let usage =
        || format!("bad LMTP server {target:?} (use lmtp:unix:/path, lmtp:[host]:port or lmtp:host:port)");
    if !has_prefix(target, "lmtp:") {
        return Err(usage());
    }
    let rest = target.get(5..).unwrap_or_default();
    let mut tls = None;
    for w in words {
        match w.split_once('=') {
            Some((k, p)) if k.eq_ignore_ascii_case("tls") => tls = Some(tls_policy(p)?),
            _ => {
                return Err(format!(
                    "unexpected {w:?} after the LMTP server (only tls=POLICY may follow)"
                ))
            }
        }
    }
    if has_prefix(rest, "unix:") {
        let path = rest.get(5..).unwrap_or_default();
        if !path.starts_with('/') {
            return Err(format!("{target:?}: the socket needs an absolute path"));
        }
        if tls.is_some() {
            return Err(format!("{target:?}: tls= is for TCP servers, not sockets"));
        }
        return Ok(Lmtp {
            addr: Endpoint::Unix(PathBuf::from(path)),
            tls,
        });
    }
    let rest = if has_prefix(rest, "inet:") {
        rest.get(5..).unwrap_or_default()
    } else {
        rest
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or_else(usage)?;
        let port = match after {
            "" => LMTP_PORT,
            p => port_number(p.strip_prefix(':').ok_or_else(usage)?).ok_or_else(usage)?,
        };
        (host, port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, port_number(p).ok_or_else(usage)?),
            None => (rest, LMTP_PORT),
        }
    };
    if port == 0 {
        return Err(usage());
    }
    // RFC 2033 1: LMTP "MUST NOT be used on TCP port 25".
    if port == 25 {
        return Err(format!("{target:?}: LMTP must not be used on port 25 (RFC 2033)"));
    }
    let host = match host.parse::<IpAddr>() {
        Ok(_) => host.to_ascii_lowercase(),
        Err(_) => host_name(host)?,
    };
    Ok(Lmtp {
        addr: Endpoint::Inet { host, port },
        tls,
    })
}

/// `user:password`; the password may contain colons.
pub(super) fn relay_auth(v: &str) -> Result<(String, String), String> {
    match nonempty(v)?.split_once(':') {
        Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok((u.to_owned(), p.to_owned())),
        _ => Err("use user:password".to_owned()),
    }
}

/// An empty list is allowed: it turns relaying off entirely.
pub(super) fn networks(v: &str) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::new();
    for item in items(v) {
        let n = Cidr::parse(item).ok_or_else(|| {
            format!("bad network {item:?} (use ADDRESS/PREFIX such as 192.0.2.0/24 or 2001:db8::/32, or a single address)")
        })?;
        push_unique(&mut out, n);
    }
    Ok(out)
}

pub(super) fn size(v: &str) -> Result<u64, String> {
    let n = parse_size(nonempty(v)?)
        .ok_or_else(|| format!("bad size {v:?} (use a number with optional K, M or G)"))?;
    if n == 0 {
        return Err("must be greater than 0".to_string());
    }
    Ok(n)
}

pub(super) fn timeout(v: &str) -> Result<Duration, String> {
    let d = parse_duration(nonempty(v)?).ok_or_else(|| {
        format!("bad duration {v:?} (use a number with optional s, m, h, d or w; plain means seconds)")
    })?;
    if d.is_zero() {
        return Err("must be greater than 0".to_string());
    }
    Ok(d)
}

/// A duration where 0 means "off".
pub(super) fn optional_duration(v: &str) -> Result<Option<Duration>, String> {
    let d = parse_duration(nonempty(v)?).ok_or_else(|| {
        format!("bad duration {v:?} (use a number with optional s, m, h, d or w; 0 turns it off)")
    })?;
    Ok(if d.is_zero() { None } else { Some(d) })
}

/// One listening address, IP:PORT or [IPv6]:PORT; empty means none.
pub(super) fn optional_address(v: &str) -> Result<Option<SocketAddr>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        format!("bad address {v:?} (use IP:PORT or [IPv6]:PORT, e.g. 127.0.0.1:9125; empty for none)")
    })
}

/// A pause, where 0 means none.
pub(super) fn delay(v: &str) -> Result<Duration, String> {
    parse_duration(nonempty(v)?).ok_or_else(|| {
        format!("bad duration {v:?} (use a number with optional s, m, h, d or w; 0 means none)")
    })
}

/// The mailbox template must name a place per user.
pub(super) fn mailbox(v: &str) -> Result<String, String> {
    let v = nonempty(v)?;
    // Only the recipient's own home is known: "~/..." (or "~"), not "~user".
    if v.starts_with('~') && v != "~" && !v.starts_with("~/") {
        return Err(format!(
            "{v:?}: only ~/ (the recipient's home) is understood, not ~user"
        ));
    }
    if !v.contains("%u") && !v.starts_with('~') {
        return Err(format!(
            "mailbox {v:?} must contain %u or start with ~ so each user has their own"
        ));
    }
    Ok(v.to_owned())
}

pub(super) fn boolean(v: &str) -> Result<bool, String> {
    parse_bool(nonempty(v)?).ok_or_else(|| format!("bad boolean {v:?} (use yes or no)"))
}

/// A limit of at least 1: zero would make the daemon refuse everything.
pub(super) fn count<T: TryFrom<u64>>(v: &str) -> Result<T, String> {
    let v = nonempty(v)?;
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad number {v:?} (use a whole number, 1 or more)"));
    }
    let n = v
        .parse::<u64>()
        .ok()
        .and_then(|n| T::try_from(n).ok().map(|t| (n, t)));
    match n {
        None => Err(format!("number {v:?} is too large")),
        Some((0, _)) => Err("must be at least 1".to_string()),
        Some((_, t)) => Ok(t),
    }
}

/// Split `s` into its leading digits and the rest, refusing an empty digit run.
fn split_number(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, rest) = s.split_at_checked(end)?;
    if digits.is_empty() {
        return None;
    }
    // Only digits remain, so the only failure left is overflow.
    Some((digits.parse().ok()?, rest))
}

/// A byte count: digits with an optional K, M or G suffix (any case, powers of 1024).
/// None on bad syntax or overflow.
pub fn parse_size(s: &str) -> Option<u64> {
    let (n, unit) = split_number(s)?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A duration: digits with an optional s, m, h, d or w suffix (any case); a bare
/// number is seconds. None on bad syntax or overflow.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (n, unit) = split_number(s)?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        "w" => 7 * 24 * 60 * 60,
        _ => return None,
    };
    n.checked_mul(mult).map(Duration::from_secs)
}

/// yes/no, true/false, on/off, 1/0, in any case.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// The template every milter of a list starts from (its endpoint is replaced).
fn milter_template() -> crate::milter::MilterSpec {
    crate::milter::MilterSpec::new(Endpoint::Unix(PathBuf::new()))
}

/// `milters`, `non_smtp_milters`: checked here (endpoints and per-milter
/// settings), kept as written; the specs are built once the whole file is
/// read, since the defaults they start from may come later in it.
pub(super) fn milter_list(v: &str) -> Result<String, String> {
    crate::milter::MilterSpec::parse_list(v, &milter_template(), &parse_duration)?;
    Ok(v.to_owned())
}

/// The same for `policy_services`.
pub(super) fn policy_list(v: &str) -> Result<String, String> {
    let template = crate::policy_service::PolicySpec::new(Endpoint::Unix(PathBuf::new()));
    for spec in crate::policy_service::PolicySpec::parse_list(v, &template, &parse_duration)? {
        policy_action(&spec.default_action)?;
    }
    Ok(v.to_owned())
}

pub(super) fn milter_action(v: &str) -> Result<crate::milter::DefaultAction, String> {
    crate::milter::DefaultAction::parse(nonempty(v)?)
}

pub(super) fn milter_protocol(v: &str) -> Result<crate::milter::ProtocolSetting, String> {
    crate::milter::ProtocolSetting::parse(nonempty(v)?)
}

/// A policy service's answer as a default: any action of an access(5) table
/// tern carries out (OK, DUNNO, REJECT, DEFER, 4NN/5NN text...).
pub(super) fn policy_action(v: &str) -> Result<String, String> {
    use crate::policy_service::PolicyAction;
    match PolicyAction::parse(nonempty(v)?) {
        PolicyAction::Other(_)
        | PolicyAction::Filter(_)
        | PolicyAction::Redirect(_)
        | PolicyAction::Bcc(_) => Err(format!(
            "{v:?}: not an action tern carries out (use e.g. DUNNO, DEFER text, 451 4.3.5 text)"
        )),
        _ => Ok(v.to_owned()),
    }
}

/// A number where 0 means "no limit".
pub(super) fn limit(v: &str) -> Result<u32, String> {
    let v = nonempty(v)?;
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad number {v:?} (use a whole number, 0 for no limit)"));
    }
    v.parse().map_err(|_| format!("number {v:?} is too large"))
}

/// A macro value: any text, empty for tern's own default.
pub(super) fn macro_value(v: &str) -> Result<Option<String>, String> {
    Ok((!v.is_empty()).then(|| v.to_owned()))
}

#[cfg(test)]
mod tests;
