//! The outbound TLS policy's state in a running daemon, one per queue
//! runner: whether the resolvers' DNSSEC verdicts can be believed (the
//! probe, RFC 7672 needs validated answers), the MTA-STS policies (the
//! cache under the spool and the HTTPS fetcher, RFC 8461), and the record
//! of TLS results for the daily reports (RFC 8460).
//!
//! Delivery asks it for what it needs per domain and per session; the
//! decision itself stays the pure `policy::decide`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::deliver::dns::{Resolver, Security};
use crate::maillog;

use super::mtasts::cache::Cache;
use super::mtasts::fetch::{Fetcher, HostResolver};
use super::mtasts::{self, Discovery, Policy};
use super::tlsrpt::{self, Event, PolicyDetails, PolicyType};

/// How long a domain's MTA-STS discovery is reused before the TXT record
/// is asked again (RFC 8461 5.1 wants it checked "on each delivery"; a
/// minute spares a burst of messages the query, as the RFC's caching
/// allows).
const STS_MEMO: Duration = Duration::from_secs(60);

/// How often the resolvers are probed again (Postfix's dnssec_probe is
/// done per process; an hour catches a resolver that was fixed or broken).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(3600);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the last probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    NotYet,
    Done(Security),
}

/// The resolvers tern uses and whether their AD bit is believed.
#[derive(Debug, Clone)]
pub struct Resolvers {
    pub servers: Vec<SocketAddr>,
    pub trusted: bool,
}

impl Resolvers {
    fn describe(&self) -> String {
        if self.servers.is_empty() {
            return "(none)".to_owned();
        }
        let v: Vec<String> = self.servers.iter().map(ToString::to_string).collect();
        v.join(" ")
    }
}

/// What a fetcher is made for: the CA file and the port.
type FetcherKey = (Option<PathBuf>, u16);

/// The per-daemon state; cheap to share (`Arc`).
pub struct Outbound {
    resolver: Arc<dyn Resolver>,
    resolvers: Resolvers,
    probe: Mutex<Probe>,
    /// `SPOOL/mta-sts/`; None when it cannot be made (logged; MTA-STS then
    /// works from the network alone).
    sts_cache: Option<Cache>,
    /// The fetcher and the (CA file, port) it was made for: a reload that
    /// changes either makes a new one.
    fetcher: Mutex<Option<(FetcherKey, Arc<Fetcher>)>>,
    memo: Mutex<HashMap<String, (Instant, Option<Policy>)>>,
    /// `SPOOL/tlsrpt/`.
    reports: Option<tlsrpt::Store>,
}

impl Outbound {
    /// The state for a daemon whose spool is `spool_dir`, resolving with
    /// `resolver` (described by `resolvers`).
    pub fn new(spool_dir: &Path, resolver: Arc<dyn Resolver>, resolvers: Resolvers) -> Outbound {
        let sts_cache = match Cache::open(&spool_dir.join("mta-sts")) {
            Ok(c) => Some(c),
            Err(e) => {
                maillog::sts_cache_unusable(&e);
                None
            }
        };
        let reports = match tlsrpt::Store::open(&spool_dir.join("tlsrpt")) {
            Ok(s) => Some(s),
            Err(e) => {
                maillog::tlsrpt_store_unusable(&e);
                None
            }
        };
        Outbound {
            resolver,
            resolvers,
            probe: Mutex::new(Probe::NotYet),
            sts_cache,
            fetcher: Mutex::new(None),
            memo: Mutex::new(HashMap::new()),
            reports,
        }
    }

    /// Ask the resolvers whether they validate (Postfix's `dnssec_probe =
    /// ns:.`: the root's NS RRset must come back with AD) and log the
    /// verdict when it is the first or differs from the last.
    pub fn probe(&self) -> Security {
        let verdict = if self.resolvers.trusted {
            self.resolver.dnssec_probe()
        } else {
            Security::Indeterminate
        };
        let mut p = lock(&self.probe);
        if *p != Probe::Done(verdict) {
            let who = self.resolvers.describe();
            match verdict {
                Security::Secure => maillog::dnssec_validating(&who),
                Security::Indeterminate if !self.resolvers.trusted => maillog::dnssec_untrusted(&who),
                other => maillog::dnssec_not_validating(&who, other.as_str()),
            }
        }
        *p = Probe::Done(verdict);
        verdict
    }

    /// Whether the DNSSEC statuses of answers can be relied on: the last
    /// probe said Secure. The first caller before any probe runs one.
    pub fn dnssec_usable(&self) -> bool {
        let known = *lock(&self.probe);
        match known {
            Probe::Done(s) => s == Security::Secure,
            Probe::NotYet => self.probe() == Security::Secure,
        }
    }

    /// The MTA-STS policy of `domain` (any mode), discovered as RFC 8461
    /// 5.1 says (see `mtasts::discover`), or None. A failed discovery is
    /// logged and, with reports on, recorded for TLS-RPT.
    pub fn sts_policy(&self, cfg: &Config, domain: &str, now: u64) -> Option<Policy> {
        let key = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Some((at, p)) = lock(&self.memo).get(&key) {
            if at.elapsed() < STS_MEMO {
                return p.clone();
            }
        }
        let Some(cache) = &self.sts_cache else {
            return None;
        };
        let fetcher = match self.fetcher(cfg) {
            Ok(f) => f,
            Err(e) => {
                maillog::sts_fetcher_unusable(&e);
                return None;
            }
        };
        let txt = self.resolver.txt(&format!("_mta-sts.{key}"));
        let found = mtasts::discover(&key, txt, cache, &|d| fetcher.fetch(d), now);
        let (policy, failure) = match found {
            Discovery::NoPolicy { failure } => (None, failure),
            Discovery::Policy {
                policy,
                id,
                cached,
                failure,
            } => {
                if !cached {
                    maillog::sts_fetched(&key, &id, policy.mode.as_str(), policy.max_age);
                }
                (Some(policy), failure)
            }
        };
        if let Some(f) = failure {
            maillog::sts_fetch_failed(&key, &f, policy.is_some());
            let (kind, strings) = match &policy {
                Some(p) => (PolicyType::Sts, p.policy_strings()),
                None => (PolicyType::NoPolicyFound, Vec::new()),
            };
            let mut failure = tlsrpt::Failure::new(f.result(), "");
            failure.receiving_mx_hostname = None;
            failure.additional_information = Some(f.to_string());
            self.record(
                cfg,
                &Event {
                    policy: PolicyDetails::new(kind, strings, &key, ""),
                    failure: Some(failure),
                },
                now,
            );
        }
        lock(&self.memo).insert(key, (Instant::now(), policy.clone()));
        policy
    }

    /// The fetcher for the configuration's CA file and port.
    fn fetcher(&self, cfg: &Config) -> std::io::Result<Arc<Fetcher>> {
        let want = (cfg.remote.tls_ca_file.clone(), cfg.outbound.mta_sts_port);
        let mut f = lock(&self.fetcher);
        if let Some((have, fetcher)) = f.as_ref() {
            if *have == want {
                return Ok(Arc::clone(fetcher));
            }
        }
        let resolver = Arc::clone(&self.resolver);
        let family = cfg.remote.inet_protocols;
        let resolve: HostResolver =
            Arc::new(move |host: &str| resolver.addrs(host, family).map_err(|e| e.to_string()));
        let fetcher = Fetcher::new(want.0.as_deref(), mtasts::FETCH_TIMEOUT, resolve)?;
        let fetcher = Arc::new(if want.1 == 443 {
            fetcher
        } else {
            fetcher.with_port(want.1)
        });
        *f = Some((want, Arc::clone(&fetcher)));
        Ok(fetcher)
    }

    /// Record one session's result for the daily report, when reports are
    /// on (`tlsrpt_from`). Failing to write only undercounts: logged.
    pub fn record(&self, cfg: &Config, ev: &Event, now: u64) {
        if cfg.tlsrpt.from.is_none() {
            return;
        }
        if let Some(store) = &self.reports {
            if let Err(e) = store.record(now, ev) {
                maillog::tlsrpt_record_failed(&e);
            }
        }
    }

    /// The record of results, for the daily reports.
    pub fn reports(&self) -> Option<&tlsrpt::Store> {
        self.reports.as_ref()
    }

    /// The resolver, for the reports' `_smtp._tls` lookups.
    pub fn resolver(&self) -> &dyn Resolver {
        self.resolver.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Family;
    use crate::deliver::dns::{DnsError, Mx, Secured};
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A resolver whose probe answers `probe`, counting the probes, and
    /// whose `_mta-sts` TXT lookups fail.
    struct Fixed {
        probe: Security,
        probes: AtomicUsize,
    }

    impl Resolver for Fixed {
        fn mx(&self, _: &str) -> Result<Mx, DnsError> {
            Err(DnsError::NxDomain)
        }
        fn addrs(&self, _: &str, _: Family) -> Result<Vec<IpAddr>, DnsError> {
            Err(DnsError::NxDomain)
        }
        fn txt(&self, _: &str) -> Result<Secured<Vec<String>>, DnsError> {
            Err(DnsError::Temporary("test".to_owned()))
        }
        fn dnssec_probe(&self) -> Security {
            self.probes.fetch_add(1, Ordering::SeqCst);
            self.probe
        }
    }

    fn outbound(probe: Security, trusted: bool) -> (Outbound, Arc<Fixed>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let r = Arc::new(Fixed {
            probe,
            probes: AtomicUsize::new(0),
        });
        let o = Outbound::new(
            dir.path(),
            r.clone(),
            Resolvers {
                servers: vec!["127.0.0.1:53".parse().unwrap()],
                trusted,
            },
        );
        (o, r, dir)
    }

    #[test]
    fn dane_needs_a_secure_probe_made_once() {
        let (o, r, _d) = outbound(Security::Secure, true);
        assert!(o.dnssec_usable());
        assert!(o.dnssec_usable());
        assert_eq!(r.probes.load(Ordering::SeqCst), 1, "probed once, then remembered");
        let (o, _, _d) = outbound(Security::Insecure, true);
        assert!(!o.dnssec_usable());
        // Untrusted resolvers are not even asked.
        let (o, r, _d) = outbound(Security::Secure, false);
        assert!(!o.dnssec_usable());
        assert_eq!(r.probes.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn spool_directories_are_made() {
        let (o, _, d) = outbound(Security::Secure, true);
        assert!(d.path().join("mta-sts").is_dir());
        assert!(d.path().join("tlsrpt").is_dir());
        assert!(o.reports().is_some());
        // Without a TXT answer and nothing cached: no policy, remembered.
        let cfg = Config::default();
        assert_eq!(o.sts_policy(&cfg, "example.org", 1), None);
        assert!(lock(&o.memo).contains_key("example.org"));
    }
}
