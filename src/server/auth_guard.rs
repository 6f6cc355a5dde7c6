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
    /// Refused: the address failed too often, held until its window ends
    /// (this long); zero: its attempts under way would reach the limit.
    AddressBlocked(Duration),
    /// Refused unchecked: the account is under attack and was checked less
    /// than window/limit ago.
    AccountThrottled(Duration),
}

/// Failures within one window, and the attempts under way: those count
/// too, so that a guesser's parallel sessions cannot all slip through
/// before the first failure is counted.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the first failure of the window came.
    since: Instant,
    failures: u32,
    /// Attempts begun and not yet settled.
    pending: u32,
    /// For an account under attack: no password check before this.
    next_check: Option<Instant>,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            since: now,
            failures: 0,
            pending: 0,
            next_check: None,
        }
    }

    fn expired(&self, now: Instant, window: Duration) -> bool {
        self.failures > 0 && now.saturating_duration_since(self.since) >= window
    }

    fn left(&self, now: Instant, window: Duration) -> Duration {
        (self.since + window).saturating_duration_since(now)
    }

    /// Failures and attempts under way reach the limit.
    fn full(&self, limit: u32) -> bool {
        self.failures.saturating_add(self.pending) >= limit
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

/// The window of `key` in `map`, made or renewed (a window that ended
/// starts over, keeping its attempts under way), room made when the table
/// is full: the ended windows go first, then the oldest.
fn entry<'a, K: std::hash::Hash + Eq + Clone>(
    map: &'a mut HashMap<K, Window>,
    key: &K,
    now: Instant,
    window: Duration,
) -> &'a mut Window {
    if !map.contains_key(key) && map.len() >= MAX_ENTRIES {
        map.retain(|_, w| w.pending > 0 || (w.failures > 0 && !w.expired(now, window)));
        if map.len() >= MAX_ENTRIES {
            if let Some(oldest) = map.iter().min_by_key(|(_, w)| w.since).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
    }
    let w = map.entry(key.clone()).or_insert_with(|| Window::new(now));
    if w.expired(now, window) {
        *w = Window {
            pending: w.pending,
            ..Window::new(now)
        };
    }
    w
}

/// Settle one attempt of `key`: it is no longer under way; a failure counts.
fn settle<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Window>, key: &K, failed: bool, now: Instant) {
    let Some(w) = map.get_mut(key) else {
        return;
    };
    w.pending = w.pending.saturating_sub(1);
    if failed {
        if w.failures == 0 {
            w.since = now;
        }
        w.failures = w.failures.saturating_add(1);
    }
    if w.failures == 0 && w.pending == 0 {
        map.remove(key);
    }
}

impl AuthGuard {
    pub fn new() -> AuthGuard {
        AuthGuard::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // Every change is one insert, update or removal: a panic leaves it whole.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before the exchange: whether AUTH from `ip` may go on at all. Ok
    /// holds the attempt, which counts against the address until settled.
    pub fn begin(&self, ip: Option<IpAddr>, limits: Limits) -> Result<Attempt<'_>, Verdict> {
        self.begin_at(ip, limits, Instant::now())
    }

    fn begin_at(&self, ip: Option<IpAddr>, limits: Limits, now: Instant) -> Result<Attempt<'_>, Verdict> {
        let address = ip.map(address_key);
        if let Some(a) = address {
            let mut t = self.lock();
            let w = entry(&mut t.addresses, &a, now, limits.window);
            if w.full(limits.failures) {
                let left = if w.failures >= limits.failures {
                    w.left(now, limits.window)
                } else {
                    Duration::ZERO
                };
                if w.failures == 0 && w.pending == 0 {
                    t.addresses.remove(&a);
                }
                return Err(Verdict::AddressBlocked(left));
            }
            w.pending += 1;
        }
        Ok(Attempt {
            guard: self,
            address,
            account: None,
            limits,
        })
    }

    /// How many addresses and accounts are remembered now.
    pub fn len(&self) -> (usize, usize) {
        let t = self.lock();
        (t.addresses.len(), t.accounts.len())
    }
}

/// One AUTH attempt under way (see [`AuthGuard::begin`]): it counts against
/// its address, and once named against its account, until it is settled
/// with [`Attempt::failed`], or ends otherwise (success, a cancelled or
/// broken exchange, a lost connection) and counts no failure.
#[derive(Debug)]
pub struct Attempt<'a> {
    guard: &'a AuthGuard,
    address: Option<IpAddr>,
    account: Option<String>,
    limits: Limits,
}

impl Attempt<'_> {
    /// After the exchange, before the password check: whether `user`'s
    /// password may be checked now. An account under attack (its failures
    /// and attempts under way at the limit) is checked once per
    /// window/limit, whoever asks; saying yes takes that turn.
    pub fn account(&mut self, user: &str) -> Verdict {
        self.account_at(user, Instant::now())
    }

    fn account_at(&mut self, user: &str, now: Instant) -> Verdict {
        let limits = self.limits;
        let mut t = self.guard.lock();
        // One account per attempt: a second name replaces the first.
        if let Some(previous) = self.account.take() {
            settle(&mut t.accounts, &previous, false, now);
        }
        // Names are compared as `auth_users` compares them: exactly.
        let key = user.to_owned();
        let w = entry(&mut t.accounts, &key, now, limits.window);
        if w.full(limits.failures) {
            match w.next_check {
                Some(at) if at > now => {
                    let left = at - now;
                    if w.failures == 0 && w.pending == 0 {
                        t.accounts.remove(&key);
                    }
                    return Verdict::AccountThrottled(left);
                }
                _ => w.next_check = Some(now + limits.spacing()),
            }
        }
        w.pending += 1;
        self.account = Some(key);
        Verdict::Check
    }

    /// The password was wrong, or (before any check) the attempt was refused:
    /// a failure for the address, and for the account once named.
    pub fn failed(mut self) {
        self.settle(true, Instant::now());
    }

    fn settle(&mut self, failed: bool, now: Instant) {
        let (address, account) = (self.address.take(), self.account.take());
        if address.is_none() && account.is_none() {
            return;
        }
        let mut t = self.guard.lock();
        if let Some(a) = address {
            settle(&mut t.addresses, &a, failed, now);
        }
        if let Some(u) = account {
            settle(&mut t.accounts, &u, failed, now);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.settle(false, Instant::now());
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

    fn fail(g: &AuthGuard, from: Option<IpAddr>, user: Option<&str>, now: Instant) {
        let mut a = g.begin_at(from, LIMITS, now).expect("not blocked");
        if let Some(u) = user {
            assert_eq!(a.account_at(u, now), Verdict::Check);
        }
        a.settle(true, now);
    }

    fn blocked(g: &AuthGuard, from: Option<IpAddr>, now: Instant) -> Option<Verdict> {
        g.begin_at(from, LIMITS, now).err()
    }

    #[test]
    fn an_address_is_blocked_for_the_rest_of_its_window() {
        let g = AuthGuard::new();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..2 {
            fail(&g, a, Some("alice"), t0);
            assert_eq!(blocked(&g, a, t0), None);
        }
        fail(&g, a, Some("bob"), t0 + Duration::from_secs(10));
        assert_eq!(
            blocked(&g, a, t0 + Duration::from_secs(20)),
            Some(Verdict::AddressBlocked(Duration::from_secs(40)))
        );
        // Other addresses, and local clients, are not affected.
        assert_eq!(blocked(&g, ip("192.0.2.2"), t0), None);
        assert_eq!(blocked(&g, None, t0), None);
        // The window ends: it starts over.
        assert_eq!(blocked(&g, a, t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn attempts_under_way_count_so_parallel_sessions_cannot_slip_through() {
        let g = AuthGuard::new();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        let held: Vec<Attempt<'_>> = (0..3).map(|_| g.begin_at(a, LIMITS, t0).unwrap()).collect();
        assert_eq!(blocked(&g, a, t0), Some(Verdict::AddressBlocked(Duration::ZERO)));
        // Attempts that end without a failure (a success, a cancel) free their place.
        drop(held);
        assert_eq!(blocked(&g, a, t0), None);
        assert_eq!(g.len(), (0, 0));
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_v4_as_v4() {
        let g = AuthGuard::new();
        let t0 = Instant::now();
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"] {
            fail(&g, ip(host), None, t0);
        }
        assert!(matches!(
            blocked(&g, ip("2001:db8:1:2::77"), t0),
            Some(Verdict::AddressBlocked(_))
        ));
        assert_eq!(blocked(&g, ip("2001:db8:1:3::1"), t0), None);
        for _ in 0..3 {
            fail(&g, ip("::ffff:192.0.2.7"), None, t0);
        }
        assert!(matches!(
            blocked(&g, ip("192.0.2.7"), t0),
            Some(Verdict::AddressBlocked(_))
        ));
    }

    #[test]
    fn an_account_under_attack_is_checked_once_per_spacing_for_everyone() {
        let g = AuthGuard::new();
        let t0 = Instant::now();
        // Failures from three addresses (each under its own limit).
        for (i, a) in ["192.0.2.1", "192.0.2.2", "192.0.2.3"].iter().enumerate() {
            fail(&g, ip(a), Some("alice"), t0 + Duration::from_secs(i as u64));
        }
        // Under attack now: one check, then none for window/limit = 20 s.
        let t1 = t0 + Duration::from_secs(5);
        let mut first = g.begin_at(ip("192.0.2.9"), LIMITS, t1).unwrap();
        assert_eq!(first.account_at("alice", t1), Verdict::Check);
        let mut second = g.begin_at(ip("192.0.2.10"), LIMITS, t1).unwrap();
        assert_eq!(
            second.account_at("alice", t1 + Duration::from_secs(1)),
            Verdict::AccountThrottled(Duration::from_secs(19))
        );
        assert_eq!(
            second.account_at("alice", t1 + Duration::from_secs(20)),
            Verdict::Check
        );
        // Other accounts go on as usual.
        assert_eq!(first.account_at("bob", t1), Verdict::Check);
        drop((first, second));
        // The window, begun at the first failure, ends.
        let mut later = g
            .begin_at(ip("192.0.2.9"), LIMITS, t0 + Duration::from_secs(61))
            .unwrap();
        assert_eq!(
            later.account_at("alice", t0 + Duration::from_secs(61)),
            Verdict::Check
        );
        assert_eq!(
            later.account_at("alice", t0 + Duration::from_secs(62)),
            Verdict::Check
        );
    }

    #[test]
    fn the_tables_are_bounded() {
        let g = AuthGuard::new();
        let t0 = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 50) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            fail(
                &g,
                Some(a),
                Some(&format!("user{i}")),
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert_eq!(g.len(), (MAX_ENTRIES, MAX_ENTRIES));
        // The oldest went first; the newest is there.
        let newest = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + MAX_ENTRIES as u32 + 49));
        let now = t0 + Duration::from_secs(20);
        for _ in 0..2 {
            fail(&g, Some(newest), None, now);
        }
        assert!(matches!(
            blocked(&g, Some(newest), now),
            Some(Verdict::AddressBlocked(_))
        ));
    }
}
