//! DNS for the SPF, DKIM and DMARC checks: mail-auth's resolver (hickory-
//! resolver 0.26, the same as delivery's) on tern's one current-thread
//! tokio runtime (`deliver::dns::runtime`), with record caches that keep
//! each answer for its TTL.
//!
//! As in deliver/dns.rs, nothing async leaks out: callers hand a future to
//! `Dns::run`, which `block_on`s it with a deadline. Several session
//! threads (and delivery threads) may call it at once; a current-thread
//! runtime lets one of them drive the I/O while the others wait their
//! turn, which suits the handful of small queries one message needs.
//!
//! `servers` is `dns_servers` from the config: the same name servers as
//! delivery (tests point both at a server on loopback); empty means
//! /etc/resolv.conf.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mail_auth::hickory_resolver::config::ResolveHosts;
use mail_auth::{MessageAuthenticator, Parameters, RecordSet, ResolverCache, Txt, MX};

/// Entries per cache; when a cache is full, expired entries go, and if
/// that is not enough, the whole cache (a burst of distinct names is rare
/// and refilling costs only queries).
const CACHE_ENTRIES: usize = 8192;

/// A map whose entries expire at the time mail-auth gives (the answer's
/// TTL, from hickory). Lookups of expired entries miss.
pub(crate) struct TtlCache<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K, V> Default for TtlCache<K, V> {
    fn default() -> Self {
        TtlCache {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        // A panic elsewhere while holding the lock leaves a usable map.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for TtlCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut m = self.lock();
        match m.get(name) {
            Some((v, until)) if *until > Instant::now() => Some(v.clone()),
            Some(_) => {
                m.remove(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let now = Instant::now();
        if valid_until <= now {
            return;
        }
        let mut m = self.lock();
        if m.len() >= CACHE_ENTRIES {
            m.retain(|_, (_, until)| *until > now);
            if m.len() >= CACHE_ENTRIES {
                m.clear();
            }
        }
        m.insert(key, (value, valid_until));
    }
}

/// The caches mail-auth consults before asking DNS, one per record type.
#[derive(Default)]
pub(crate) struct Caches {
    pub(crate) txt: TtlCache<Box<str>, Txt>,
    mx: TtlCache<Box<str>, RecordSet<MX>>,
    ipv4: TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    ipv6: TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    ptr: TtlCache<IpAddr, RecordSet<Box<str>>>,
}

/// mail-auth's parameter bundle with our caches.
pub(crate) type Cached<'x, P> = Parameters<
    'x,
    P,
    TtlCache<Box<str>, Txt>,
    TtlCache<Box<str>, RecordSet<MX>>,
    TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    TtlCache<IpAddr, RecordSet<Box<str>>>,
>;

impl Caches {
    pub(crate) fn params<P>(&self, p: P) -> Cached<'_, P> {
        Parameters::new(p)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }
}

/// The resolver, the runtime it runs on and its caches.
pub struct Dns {
    /// Shared with delivery (`deliver::dns::runtime`).
    rt: Arc<tokio::runtime::Runtime>,
    pub(crate) auth: MessageAuthenticator,
    pub(crate) caches: Caches,
}

impl Dns {
    /// `servers`: `dns_servers` (UDP and TCP each), or /etc/resolv.conf when
    /// empty. `timeout`: per query (`dns_timeout`), one attempt per server.
    /// The settings are delivery's (`deliver::dns::resolver_settings`).
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> std::io::Result<Dns> {
        let rt = crate::deliver::dns::runtime()?;
        let (config, mut opts) = crate::deliver::dns::resolver_settings(servers, timeout)?;
        // The names looked up are fully qualified and never in /etc/hosts.
        opts.use_hosts_file = ResolveHosts::Never;
        let auth = {
            // hickory may spawn on the runtime while it builds.
            let _guard = rt.enter();
            MessageAuthenticator::new(config, opts)
                .map_err(|e| std::io::Error::other(format!("DNS resolver: {e}")))?
        };
        Ok(Dns {
            rt,
            auth,
            caches: Caches::default(),
        })
    }

    /// Runs `f` to completion or until `until`; `None` when time ran out.
    pub(crate) fn run<F: Future>(&self, until: Instant, f: F) -> Option<F::Output> {
        self.rt.block_on(async {
            tokio::time::timeout_at(tokio::time::Instant::from_std(until), f)
                .await
                .ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_cache_expires_and_refuses_stale_inserts() {
        let c: TtlCache<Box<str>, u32> = TtlCache::default();
        let now = Instant::now();
        c.insert("a.".into(), 1, now + Duration::from_secs(60));
        c.insert("b.".into(), 2, now + Duration::from_millis(30));
        c.insert("c.".into(), 3, now - Duration::from_secs(1));
        assert_eq!(c.get("a."), Some(1));
        assert_eq!(c.get("b."), Some(2));
        assert_eq!(c.get("c."), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get("b."), None, "expired with its TTL");
        assert_eq!(c.len(), 1, "an expired entry is dropped when seen");
        assert_eq!(c.remove("a."), Some(1));
    }

    #[test]
    fn ttl_cache_is_bounded() {
        let c: TtlCache<u32, u32> = TtlCache::default();
        let until = Instant::now() + Duration::from_secs(60);
        for i in 0..(CACHE_ENTRIES as u32 + 10) {
            c.insert(i, i, until);
        }
        assert!(c.len() <= CACHE_ENTRIES);
    }
}
