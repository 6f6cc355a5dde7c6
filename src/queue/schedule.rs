//! When to try again, when to give up, when to warn: pure arithmetic over
//! the queue settings, so the runner's timing can be tested without clocks.

use std::time::Duration;

use crate::config::Config;
use crate::spool::{Envelope, RcptStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub initial: Duration,
    pub max: Duration,
    pub lifetime: Duration,
    pub delay_warning: Option<Duration>,
}

impl Schedule {
    pub fn from_config(cfg: &Config) -> Schedule {
        Schedule {
            initial: cfg.queue.retry_initial,
            max: cfg.queue.retry_max,
            lifetime: cfg.queue.lifetime,
            delay_warning: cfg.queue.delay_warning,
        }
    }

    /// The delay before attempt `attempts + 1`, after `attempts` failures
    /// (attempts >= 1): initial · 2^(attempts−1), capped at max.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(32);
        let factor = 1u64 << shift;
        let secs = self.initial.as_secs().max(1).saturating_mul(factor);
        Duration::from_secs(secs).min(self.max.max(self.initial))
    }

    /// The next attempt time after `attempts` failures, with up to ±10%
    /// jitter taken from `noise` (any u64; random in practice) so a large
    /// queue does not wake all at once.
    pub fn next_attempt(&self, attempts: u32, now: u64, noise: u64) -> u64 {
        let base = self.backoff(attempts).as_secs();
        let span = base / 5; // 20% wide, centred on base
        let jitter = if span == 0 { 0 } else { noise % (span + 1) };
        now.saturating_add(base - base / 10 + jitter)
    }

    /// Whether a message created at `created` has outlived `queue_lifetime`.
    pub fn expired(&self, created: u64, now: u64) -> bool {
        now.saturating_sub(created) >= self.lifetime.as_secs()
    }

    /// Whether the one delay notice is due now.
    pub fn warn_due(&self, created: u64, now: u64, already: bool) -> bool {
        match self.delay_warning {
            Some(d) if !already => now.saturating_sub(created) >= d.as_secs(),
            _ => false,
        }
    }

    /// The time after which no more attempts are made (Will-Retry-Until).
    pub fn give_up_at(&self, created: u64) -> u64 {
        created.saturating_add(self.lifetime.as_secs())
    }

    /// When a message next needs attention: now for pending recipients, the
    /// next attempt for deferred ones, and the delay-warning moment if one is
    /// still owed. A message whose recipients are all final (left by a crash
    /// before its removal) is due at once, so a worker removes it.
    pub fn due(&self, env: &Envelope) -> u64 {
        let mut t: Option<u64> = None;
        let mut deferred = false;
        for r in &env.recipients {
            let at = match r.status {
                RcptStatus::Pending => 0,
                RcptStatus::Deferred => {
                    deferred = true;
                    r.next_attempt.unwrap_or(0)
                }
                RcptStatus::Sent | RcptStatus::Failed => continue,
            };
            t = Some(t.map_or(at, |x| x.min(at)));
        }
        if deferred && !env.delay_warned {
            if let Some(d) = self.delay_warning {
                let warn_at = env.created.saturating_add(d.as_secs());
                t = t.map(|x| x.min(warn_at));
            }
        }
        t.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Schedule {
        Schedule {
            initial: Duration::from_secs(300),
            max: Duration::from_secs(4 * 3600),
            lifetime: Duration::from_secs(5 * 86400),
            delay_warning: Some(Duration::from_secs(4 * 3600)),
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let got: Vec<u64> = (1..=9).map(|a| s().backoff(a).as_secs()).collect();
        assert_eq!(got, vec![300, 600, 1200, 2400, 4800, 9600, 14400, 14400, 14400]);
        assert_eq!(s().backoff(u32::MAX).as_secs(), 14400);
        assert_eq!(s().backoff(0).as_secs(), 300);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for noise in [0u64, 1, 59, 60, 61, 12345, u64::MAX] {
            let t = s().next_attempt(1, 1000, noise);
            assert!((1000 + 270..=1000 + 330).contains(&t), "{t}");
        }
        // Different noise spreads the times.
        let times: std::collections::HashSet<u64> = (0..100).map(|n| s().next_attempt(1, 0, n)).collect();
        assert!(times.len() > 30);
    }

    #[test]
    fn expiry_and_warning() {
        let s = s();
        assert!(!s.expired(0, 5 * 86400 - 1));
        assert!(s.expired(0, 5 * 86400));
        assert!(!s.warn_due(0, 4 * 3600 - 1, false));
        assert!(s.warn_due(0, 4 * 3600, false));
        assert!(!s.warn_due(0, 4 * 3600, true));
        let off = Schedule {
            delay_warning: None,
            ..s
        };
        assert!(!off.warn_due(0, u64::MAX, false));
        assert_eq!(s.give_up_at(10), 10 + 5 * 86400);
    }

    #[test]
    fn a_message_is_due_at_its_earliest_recipient_or_warning() {
        use crate::spool::{QueueId, Recipient};
        let s = s();
        let mut env = Envelope::new(QueueId::generate(), "a@x.test".to_owned(), 1000);
        for a in ["a@y.test", "b@y.test", "c@y.test"] {
            env.recipients.push(Recipient::new(a.to_owned()));
        }
        // Anything pending: now.
        assert_eq!(s.due(&env), 0);
        for (r, (status, next)) in env.recipients.iter_mut().zip([
            (RcptStatus::Deferred, Some(9000)),
            (RcptStatus::Deferred, Some(7000)),
            (RcptStatus::Sent, None),
        ]) {
            r.status = status;
            r.next_attempt = next;
        }
        assert_eq!(s.due(&env), 7000);
        // The delay warning (4 h after arrival) comes first when still owed.
        env.recipients[0].next_attempt = Some(1000 + 5 * 3600);
        env.recipients[1].next_attempt = Some(1000 + 6 * 3600);
        assert_eq!(s.due(&env), 1000 + 4 * 3600);
        env.delay_warned = true;
        assert_eq!(s.due(&env), 1000 + 5 * 3600);
        // A deferred recipient without a time: now.
        env.recipients[0].next_attempt = None;
        assert_eq!(s.due(&env), 0);
        // All final (a crash before removal): now, so a worker removes it.
        for r in &mut env.recipients {
            r.status = RcptStatus::Failed;
        }
        assert_eq!(s.due(&env), 0);
    }

    #[test]
    fn second_scale_settings_for_tests() {
        let s = Schedule {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            lifetime: Duration::from_secs(10),
            delay_warning: None,
        };
        let got: Vec<u64> = (1..=5).map(|a| s.backoff(a).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 4, 4]);
        assert_eq!(s.next_attempt(1, 100, 7), 101);
    }
}
