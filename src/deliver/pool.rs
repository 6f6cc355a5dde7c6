//! The connections remote delivery keeps between messages, and the count of
//! deliveries in progress per destination (`max_connections_per_domain`).
//! One pool per queue runner, shared by its delivery threads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::RemoteDelivery;
use crate::deliver::client::{Client, Extensions};
use crate::deliver::outcome::Outcome;
use crate::deliver::tls_client::Stream;

/// Connections kept open between messages, and the count of deliveries in
/// progress per destination. One per queue runner, shared by its threads.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    active: Mutex<HashMap<String, usize>>,
    freed: Condvar,
    /// Addresses that greeted with 521 (RFC 7504: no mail, ever), with when
    /// and what they said: not connected to again for [`NO_MAIL_MEMORY`].
    no_mail: Mutex<HashMap<SocketAddr, (Instant, Outcome)>>,
}

/// How long a 521 greeting is remembered. RFC 7504 says such a host never
/// accepts mail; a day lets an administrator who changes that be heard.
pub const NO_MAIL_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// A connection between transactions: greeted, encrypted and authenticated
/// as it was for its last message.
pub struct Idle {
    pub client: Client<Stream>,
    pub ext: Extensions,
    pub tls: Option<&'static str>,
    /// The certificate was authenticated (DANE or PKIX) when it was opened.
    pub verified: bool,
    pub since: Instant,
}

impl Idle {
    /// A connection done with its transaction just now.
    pub fn new(client: Client<Stream>, ext: Extensions, tls: Option<&'static str>) -> Idle {
        Idle {
            client,
            ext,
            tls,
            verified: false,
            since: Instant::now(),
        }
    }
}

/// At most this many idle connections per host, address and policy.
const MAX_IDLE_PER_KEY: usize = 4;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A delivery thread that panicked leaves consistent data behind (every
    // change is one insert or remove), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    /// A connection kept under `key` and idle less than `max_age`; older ones
    /// met on the way are closed.
    pub fn take(&self, key: &str, max_age: Duration) -> Option<Idle> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(key)?;
        while let Some(i) = list.pop() {
            if i.since.elapsed() < max_age {
                return Some(i);
            }
            let mut stale = i.client;
            quit(&mut stale);
        }
        None
    }

    /// A connection kept under `key`, when connections are kept at all
    /// (`smtp_connection_cache_time`), its replies bounded by the command
    /// timeout. The caller starts with RSET: one closed meanwhile is dropped.
    pub fn reuse(&self, key: &str, remote: &RemoteDelivery) -> Option<Idle> {
        let mut idle = self.take(key, remote.connection_cache_time?)?;
        set_timeout(&mut idle.client, remote.command_timeout);
        Some(idle)
    }

    /// Done with `conn` after a transaction: kept under `key` for the next
    /// message when it may carry another (`reusable`) and connections are
    /// kept, else closed with QUIT if it still can say it. Not at once, but
    /// when the returned [`Farewell`] is dropped: after the caller has
    /// recorded the transaction's results.
    pub fn release(
        self: &Arc<Pool>,
        key: String,
        conn: Idle,
        reusable: bool,
        remote: &RemoteDelivery,
    ) -> Farewell {
        Farewell(Some(Box::new(Parting {
            pool: Arc::clone(self),
            key,
            conn,
            reusable,
            cache: remote.connection_cache_time.is_some(),
            command_timeout: remote.command_timeout,
        })))
    }

    /// Keep `conn` for the next message to the same `key`.
    pub fn put(&self, key: String, conn: Idle) {
        let mut idle = lock(&self.idle);
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_KEY {
            list.push(conn);
        } else {
            drop(idle);
            let mut c = conn.client;
            quit(&mut c);
        }
    }

    /// Remember that `addr` greeted with 521 (the outcome says so).
    pub fn refuses_mail(&self, addr: SocketAddr, o: &Outcome) {
        let mut m = lock(&self.no_mail);
        m.retain(|_, (at, _)| at.elapsed() < NO_MAIL_MEMORY);
        m.insert(addr, (Instant::now(), o.clone()));
    }

    /// What `addr` said when it greeted with 521, if it did lately.
    pub fn refused_mail(&self, addr: SocketAddr) -> Option<Outcome> {
        let m = lock(&self.no_mail);
        m.get(&addr)
            .filter(|(at, _)| at.elapsed() < NO_MAIL_MEMORY)
            .map(|(_, o)| o.clone())
    }

    /// Close connections idle longer than `max_age` (the runner calls this
    /// about once a second).
    pub fn purge(&self, max_age: Duration) {
        let mut expired = Vec::new();
        {
            let mut idle = lock(&self.idle);
            for list in idle.values_mut() {
                let (old, keep): (Vec<Idle>, Vec<Idle>) =
                    list.drain(..).partition(|i| i.since.elapsed() >= max_age);
                *list = keep;
                expired.extend(old);
            }
            idle.retain(|_, l| !l.is_empty());
        }
        for i in expired {
            let mut c = i.client;
            set_timeout(&mut c, Duration::from_secs(5));
            quit(&mut c);
        }
    }

    /// Wait for one of `limit` delivery slots of `dest`; the slot is given
    /// back when the guard drops.
    pub fn enter(&self, dest: &str, limit: usize) -> Slot<'_> {
        let mut active = lock(&self.active);
        loop {
            let n = active.get(dest).copied().unwrap_or(0);
            if n < limit.max(1) {
                active.insert(dest.to_owned(), n + 1);
                return Slot {
                    pool: self,
                    dest: dest.to_owned(),
                };
            }
            active = self.freed.wait(active).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A connection whose transaction is over, let go when this is dropped:
/// kept in the pool for the next message, or sent QUIT (RFC 5321
/// 4.1.1.10), whose answer a slow server may take its time over. SMTP and
/// LMTP delivery hand it back with their results, and the queue drops it
/// only once those are recorded (issue 16): a crash meanwhile then repeats
/// nothing the server had answered before the record.
#[must_use = "dropping a Farewell lets its connection go: drop it after recording the results"]
#[derive(Default)]
pub struct Farewell(Option<Box<Parting>>);

struct Parting {
    pool: Arc<Pool>,
    key: String,
    conn: Idle,
    reusable: bool,
    /// Connections are kept (`smtp_connection_cache_time`), else QUIT.
    cache: bool,
    /// `smtp_command_timeout`, for the QUIT.
    command_timeout: Duration,
}

impl Farewell {
    /// No connection to let go.
    pub fn none() -> Farewell {
        Farewell(None)
    }
}

impl Drop for Farewell {
    fn drop(&mut self) {
        let Some(p) = self.0.take() else {
            return;
        };
        if !p.reusable {
            return;
        }
        if p.cache {
            // Idle from now: the cache time counts from its last message.
            let mut conn = p.conn;
            conn.since = Instant::now();
            p.pool.put(p.key, conn);
        } else {
            let mut c = p.conn.client;
            set_timeout(&mut c, p.command_timeout);
            quit(&mut c);
        }
    }
}

/// One delivery in progress to a destination.
pub struct Slot<'a> {
    pool: &'a Pool,
    dest: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut active = lock(&self.pool.active);
        if let Some(n) = active.get_mut(&self.dest) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                active.remove(&self.dest);
            }
        }
        drop(active);
        self.pool.freed.notify_all();
    }
}

/// Say QUIT and forget the answer: the connection closes either way.
pub fn quit(c: &mut Client<Stream>) {
    let _ = c.command("QUIT");
}

/// Bound each reply and write on `c` by `t`; a socket that refuses is
/// caught by the next read or write.
pub fn set_timeout(c: &mut Client<Stream>, t: Duration) {
    let _ = c.set_timeouts(t);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn destination_slots_are_limited() {
        let pool = Arc::new(Pool::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (pool, inside, most) = (Arc::clone(&pool), Arc::clone(&inside), Arc::clone(&most));
                std::thread::spawn(move || {
                    let _slot = pool.enter("example.org", 2);
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert!(lock(&pool.active).is_empty());
    }

    #[test]
    fn a_farewell_keeps_the_connection_only_when_dropped_and_idle_from_then() {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let client = Client::new(Stream::Unix(ours));
        let mut remote = crate::config::Config::default().remote;
        remote.connection_cache_time = Some(Duration::from_millis(200));
        let pool = Arc::new(Pool::new());
        // Used long ago: its idle time must count from the farewell.
        let conn = Idle {
            since: Instant::now() - Duration::from_secs(60),
            ..Idle::new(client, Extensions::default(), None)
        };
        let farewell = pool.release("k".to_owned(), conn, true, &remote);
        // Not in the pool while the caller records the results.
        assert!(pool.take("k", Duration::from_secs(3600)).is_none());
        drop(farewell);
        assert!(pool.reuse("k", &remote).is_some(), "kept, and fresh");
    }
}
