//! AUTH failures remembered across sessions (issue 16 item 6): password
//! guessing spread over many sessions, or over many addresses, is slowed
//! and then refused before any password is checked.
//!
//! Two tables in memory, bounded and expiring: failures per client address
//! (an IPv6 client by its /64, what one host usually holds) and per account
//! name. Each counts the failures in a window that begins with the first
//! of them (`auth_failure_window`) and is forgotten when the window ends.
//! - An address with `auth_failure_limit` failures in its window is refused
//!   AUTH outright (421) until the window ends.
//! - An account with that many failures, from any addresses, is under
//!   attack: until its window ends, its password is checked at most once
//!   per window/limit (one a minute by default) for everyone; other
//!   attempts are refused (454) unchecked, and count against the address.
//!
//! A success never clears a count: an attacker with one account of its
//! own could otherwise reset its address between guesses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many addresses, and as many account names, are remembered;
/// past it the oldest window is dropped first.
const MAX_ENTRIES: usize = 10_000;

/// How many failures, in how long, the guard allows (from the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `auth_failure_limit`.
    pub failures: u32,
    /// `auth_failure_window`.
    pub window: Duration,
}

impl Limits {
    /// The least time between two password checks of an account under attack.
    fn spacing(&self) -> Duration {
        self.window / self.failures.max(1)
    }
}

/// What the guard says about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on and check the password.
    Check,
    /// Refused: the address failed too often. Held until the window ends.
    AddressBlocked(Duration),
    /// Refused unchecked: the account is under attack and was checked less
    /// than window/limit ago.
    AccountThrottled(Duration),
}

/// Failures within one window.
#[derive(Debug, Clone, Copy)]
struct Window {
    since: Instant,
    failures: u32,
    /// For an account under attack: no password check before this.
    next_check: Option<Instant>,
}

impl Window {
    fn expired(&self, now: Instant, window: Duration) -> bool {
        now.saturating_duration_since(self.since) >= window
    }

    fn left(&self, now: Instant, window: Duration) -> Duration {
        (self.since + window).saturating_duration_since(now)
    }
}

/// The failures of every address and account, shared by all sessions (and
/// kept across reloads).
#[derive(Debug, Default)]
pub struct AuthGuard {
    inner: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    addresses: HashMap<IpAddr, Window>,
    accounts: HashMap<String, Window>,
}

/// An address as the guard counts it: IPv4 as it is, IPv6 by its /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// The window of `key` in `map`, if it has one that has not ended (an ended
/// one is dropped).
fn live<'a, K: std::hash::Hash + Eq>(
    map: &'a mut HashMap<K, Window>,
    key: &K,
    now: Instant,
    window: Duration,
) -> Option<&'a mut Window> {
    if map.get(key).is_some_and(|w| w.expired(now, window)) {
        map.remove(key);
    }
    map.get_mut(key)
}

/// Count one failure of `key`, making room when the table is full.
fn count<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, Window>,
    key: &K,
    now: Instant,
    window: Duration,
) {
    if let Some(w) = live(map, key, now, window) {
        w.failures = w.failures.saturating_add(1);
        return;
    }
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, w| !w.expired(now, window));
    }
    if map.len() >= MAX_ENTRIES {
        if let Some(oldest) = map.iter().min_by_key(|(_, w)| w.since).map(|(k, _)| k.clone()) {
            map.remove(&oldest);
        }
    }
    map.insert(
        key.clone(),
        Window {
            since: now,
            failures: 1,
            next_check: None,
        },
    );
}

impl AuthGuard {
    pub fn new() -> AuthGuard {
        AuthGuard::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // Every change is one insert, update or removal: a panic leaves it whole.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before the exchange: whether AUTH from `ip` may go on at all.
    pub fn address(&self, ip: Option<IpAddr>, limits: Limits) -> Verdict {
        self.address_at(ip, limits, Instant::now())
    }

    fn address_at(&self, ip: Option<IpAddr>, limits: Limits, now: Instant) -> Verdict {
        let Some(ip) = ip else {
            return Verdict::Check;
        };
        let mut t = self.lock();
        match live(&mut t.addresses, &address_key(ip), now, limits.window) {
            Some(w) if w.failures >= limits.failures => Verdict::AddressBlocked(w.left(now, limits.window)),
            _ => Verdict::Check,
        }
    }

    /// After the exchange, before the password check: whether `user`'s
    /// password may be checked now. Under attack, saying yes takes the
    /// account's next turn.
    pub fn account(&self, user: &str, limits: Limits) -> Verdict {
        self.account_at(user, limits, Instant::now())
    }

    fn account_at(&self, user: &str, limits: Limits, now: Instant) -> Verdict {
        // Names are compared as `auth_users` compares them: exactly.
        let mut t = self.lock();
        let Some(w) = live(&mut t.accounts, &user.to_owned(), now, limits.window) else {
            return Verdict::Check;
        };
        if w.failures < limits.failures {
            return Verdict::Check;
        }
        match w.next_check {
            Some(at) if at > now => Verdict::AccountThrottled(at - now),
            _ => {
                w.next_check = Some(now + limits.spacing());
                Verdict::Check
            }
        }
    }

    /// A failed attempt from `ip`: a wrong password for `user`, or (None)
    /// an attempt refused unchecked, which counts against the address only.
    pub fn failed(&self, ip: Option<IpAddr>, user: Option<&str>, limits: Limits) {
        self.failed_at(ip, user, limits, Instant::now());
    }

    fn failed_at(&self, ip: Option<IpAddr>, user: Option<&str>, limits: Limits, now: Instant) {
        let mut t = self.lock();
        if let Some(ip) = ip {
            count(&mut t.addresses, &address_key(ip), now, limits.window);
        }
        if let Some(user) = user {
            count(&mut t.accounts, &user.to_owned(), now, limits.window);
        }
    }

    /// How many addresses and accounts are remembered now.
    pub fn len(&self) -> (usize, usize) {
        let t = self.lock();
        (t.addresses.len(), t.accounts.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        failures: 3,
        window: Duration::from_secs(60),
    };

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_is_blocked_for_the_rest_of_its_window() {
        let g = AuthGuard::new();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..2 {
            g.failed_at(a, Some("alice"), LIMITS, t0);
            assert_eq!(g.address_at(a, LIMITS, t0), Verdict::Check);
        }
        g.failed_at(a, Some("bob"), LIMITS, t0 + Duration::from_secs(10));
        assert_eq!(
            g.address_at(a, LIMITS, t0 + Duration::from_secs(20)),
            Verdict::AddressBlocked(Duration::from_secs(40))
        );
        // Other addresses, and local clients, are not affected.
        assert_eq!(g.address_at(ip("192.0.2.2"), LIMITS, t0), Verdict::Check);
        assert_eq!(g.address_at(None, LIMITS, t0), Verdict::Check);
        // The window ends: forgotten.
        assert_eq!(
            g.address_at(a, LIMITS, t0 + Duration::from_secs(60)),
            Verdict::Check
        );
        assert_eq!(g.len().0, 0);
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_v4_as_v4() {
        let g = AuthGuard::new();
        let t0 = Instant::now();
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"] {
            g.failed_at(ip(host), None, LIMITS, t0);
        }
        assert!(matches!(
            g.address_at(ip("2001:db8:1:2::77"), LIMITS, t0),
            Verdict::AddressBlocked(_)
        ));
        assert_eq!(g.address_at(ip("2001:db8:1:3::1"), LIMITS, t0), Verdict::Check);
        for _ in 0..3 {
            g.failed_at(ip("::ffff:192.0.2.7"), None, LIMITS, t0);
        }
        assert!(matches!(
            g.address_at(ip("192.0.2.7"), LIMITS, t0),
            Verdict::AddressBlocked(_)
        ));
    }

    #[test]
    fn an_account_under_attack_is_checked_once_per_spacing_for_everyone() {
        let g = AuthGuard::new();
        let t0 = Instant::now();
        // Failures from three addresses (each under its own limit).
        for (i, a) in ["192.0.2.1", "192.0.2.2", "192.0.2.3"].iter().enumerate() {
            assert_eq!(g.account_at("alice", LIMITS, t0), Verdict::Check);
            g.failed_at(ip(a), Some("alice"), LIMITS, t0 + Duration::from_secs(i as u64));
        }
        // Under attack now: one check, then none for window/limit = 20 s.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(g.account_at("alice", LIMITS, t1), Verdict::Check);
        assert_eq!(
            g.account_at("alice", LIMITS, t1 + Duration::from_secs(1)),
            Verdict::AccountThrottled(Duration::from_secs(19))
        );
        assert_eq!(
            g.account_at("alice", LIMITS, t1 + Duration::from_secs(20)),
            Verdict::Check
        );
        // Other accounts go on as usual.
        assert_eq!(g.account_at("bob", LIMITS, t1), Verdict::Check);
        // The window, begun at the first failure, ends.
        assert_eq!(
            g.account_at("alice", LIMITS, t0 + Duration::from_secs(61)),
            Verdict::Check
        );
        assert_eq!(
            g.account_at("alice", LIMITS, t0 + Duration::from_secs(62)),
            Verdict::Check
        );
    }

    #[test]
    fn the_tables_are_bounded() {
        let g = AuthGuard::new();
        let t0 = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 50) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            g.failed_at(
                Some(a),
                Some(&format!("user{i}")),
                LIMITS,
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert_eq!(g.len(), (MAX_ENTRIES, MAX_ENTRIES));
        // The oldest went first; the newest is there.
        let newest = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + MAX_ENTRIES as u32 + 49));
        for _ in 0..2 {
            g.failed_at(Some(newest), None, LIMITS, t0 + Duration::from_secs(20));
        }
        assert!(matches!(
            g.address_at(Some(newest), LIMITS, t0 + Duration::from_secs(20)),
            Verdict::AddressBlocked(_)
        ));
    }
}
