//! Queue ids: 16 uppercase hex digits, 11 of milliseconds since the epoch and 5 of
//! randomness. They sort by time as plain strings, print well in logs and are safe as
//! file names. A name read from disk or from a user becomes a `QueueId` only through
//! [`QueueId::parse`], which admits nothing but those 16 characters (no '/', no "..").

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::sys;

/// Length of a printed id.
const LEN: usize = 16;
/// 11 hex digits of milliseconds: good until the year 2527.
const MS_MASK: u64 = (1 << 44) - 1;
/// 5 hex digits of randomness.
const LOW_BITS: u32 = 20;
const LOW_MASK: u32 = (1 << LOW_BITS) - 1;

/// A message's identity in the spool; also its file name in msg/, env/, hold/.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(String);

/// The last id handed out by this process, so ids made within one millisecond
/// still differ and still sort in the order they were made.
static LAST: Mutex<(u64, u32)> = Mutex::new((0, 0));
/// Mixed into the fallback when the kernel's random source fails.
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl QueueId {
    /// A new id: 11 uppercase hex digits of milliseconds since the epoch followed by 5
    /// uppercase hex digits of randomness = 16 characters.
    ///
    /// Within one process ids are strictly increasing: when the clock has not moved (or
    /// went backwards) since the last id, the random part is incremented instead of drawn
    /// afresh, because 20 random bits alone collide quickly at thousands of ids per
    /// millisecond. Collisions between processes are caught by `Spool::begin` (O_EXCL).
    pub fn generate() -> QueueId {
        let now = now_ms() & MS_MASK;
        // A poisoned lock only means another thread panicked while holding it; the
        // (u64, u32) inside is always valid.
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        let (last_ms, last_low) = *last;
        let (ms, low) = if now > last_ms {
            (now, random_low())
        } else if last_low < LOW_MASK {
            (last_ms, last_low + 1)
        } else {
            // The 5 digits are used up for this millisecond: borrow the next one.
            ((last_ms + 1) & MS_MASK, random_low())
        };
        *last = (ms, low);
        drop(last);
        QueueId(format!("{ms:011X}{low:05X}"))
    }

    /// Parse a printed id (exactly 16 characters `[0-9A-F]`); None otherwise.
    pub fn parse(s: &str) -> Option<QueueId> {
        let ok = s.len() == LEN
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        ok.then(|| QueueId(s.to_owned()))
    }

    /// The printed form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When the id was made, so when its message entered the queue: its first
    /// 11 digits, milliseconds since the epoch.
    pub fn millis(&self) -> u64 {
        self.0
            .get(..11)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    }

    /// How long ago the id was made (zero if that seems to be in the future).
    pub fn age(&self) -> std::time::Duration {
        std::time::Duration::from_millis(now_ms().saturating_sub(self.millis()))
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// 20 random bits; a process counter mixed with the time if the kernel will not give any.
fn random_low() -> u32 {
    let mut buf = [0u8; 4];
    let v = match sys::random_bytes(&mut buf) {
        Ok(()) => u32::from_le_bytes(buf),
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let c = COUNTER.fetch_add(1, Ordering::Relaxed);
            let seed = (u64::from(std::process::id()) << 32) ^ u64::from(nanos) ^ c.rotate_left(17);
            splitmix64(seed) as u32
        }
    };
    v & LOW_MASK
}

/// A good bit mixer (Steele, Lea & Flood), so nearby seeds give unrelated outputs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generate_unique_and_parseable() {
        let mut seen = HashSet::new();
        let mut prev: Option<QueueId> = None;
        for _ in 0..100_000 {
            let id = QueueId::generate();
            assert_eq!(id.as_str().len(), 16);
            assert_eq!(QueueId::parse(id.as_str()).as_ref(), Some(&id));
            if let Some(p) = &prev {
                assert!(*p < id, "{p} then {id}: not increasing");
            }
            assert!(seen.insert(id.clone()), "duplicate {id}");
            prev = Some(id);
        }
    }

    #[test]
    fn generate_unique_across_threads() {
        let all: Vec<QueueId> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..5000).map(|_| QueueId::generate()).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let set: HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
    }

    #[test]
    fn time_prefix_is_now() {
        let id = QueueId::generate();
        let ms = u64::from_str_radix(&id.as_str()[..11], 16).unwrap();
        let now = now_ms();
        assert!(ms <= now + 1000 && ms + 60_000 >= now, "{ms} vs {now}");
        assert_eq!(id.millis(), ms);
        assert!(id.age() < std::time::Duration::from_secs(60));
        let old = QueueId::parse("0000000000000000").unwrap().age();
        assert!(old > std::time::Duration::from_secs(50 * 365 * 86400), "{old:?}");
        assert_eq!(
            QueueId::parse("0193A5F2C41B07E2").unwrap().millis(),
            0x0193A5F2C41
        );
        assert_eq!(id.to_string(), id.as_str());
    }

    #[test]
    fn parse_rejects_bad() {
        assert!(QueueId::parse("0123456789ABCDEF").is_some());
        for bad in [
            "",
            "0123456789ABCDE",
            "0123456789ABCDEF0",
            "0123456789abcdef",
            "0123456789ABCDEG",
            "../../etc/passwd",
            "0123456789ABCD/F",
            "0123456789ABCD..",
            " 123456789ABCDEF",
            "0123456789ABCDE\n",
            "0123456789ABCDÉ",
            "０123456789ABCDE",
        ] {
            assert_eq!(QueueId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn splitmix_spreads() {
        assert_ne!(splitmix64(1) & 0xFFFFF, splitmix64(2) & 0xFFFFF);
        assert!(random_low() <= LOW_MASK);
    }
}
