//! The connections remote delivery keeps between messages, and the count of
//! deliveries in progress per destination (`max_connections_per_domain`).
//! One pool per queue runner, shared by its delivery threads.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::deliver::client::{Client, Extensions};
use crate::deliver::tls_client::Stream;

/// Connections kept open between messages, and the count of deliveries in
/// progress per destination. One per queue runner, shared by its threads.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    active: Mutex<HashMap<String, usize>>,
    freed: Condvar,
}

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
}
