//! The MTA-STS policy cache on disk (RFC 8461 5.1): one file per domain under
//! the spool, replaced atomically, read back strictly.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::{parse_policy, Policy, BODY_LIMIT, REFRESH_AFTER, RETRY_AFTER_FAILURE};

/// A policy as kept in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The TXT id it was fetched under.
    pub id: String,
    /// When it was fetched (seconds since the epoch).
    pub fetched: u64,
    pub policy: Policy,
    /// The body as served, kept so the cache file reads like the policy.
    pub body: String,
}

impl Cached {
    /// RFC 8461 3.2: a policy is good for max_age seconds after its fetch.
    pub fn expired(&self, now: u64) -> bool {
        now >= self.fetched.saturating_add(self.policy.max_age)
    }

    /// Whether it is time to refresh it even though the id is unchanged
    /// (RFC 8461 10.2).
    pub fn due_for_refresh(&self, now: u64) -> bool {
        now.saturating_sub(self.fetched) >= REFRESH_AFTER.min(self.policy.max_age / 2)
    }
}

/// The policy cache: one file per domain in a directory under the spool
/// (`SPOOL/mta-sts/`), written by tmp+fsync+rename so that a crash leaves
/// the old policy or the new one, never half of one. It survives restarts.
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Open (creating it, mode 0700) the cache directory.
    pub fn open(dir: &Path) -> io::Result<Cache> {
        crate::tlspolicy::make_private_dir(dir)?;
        Ok(Cache { dir: dir.to_owned() })
    }

    /// The file for a domain: its lower-case name when that is a plain
    /// host name, so an administrator can read the cache with ls and cat.
    fn path(&self, domain: &str, suffix: &str) -> Option<PathBuf> {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        let ok = !d.is_empty()
            && !d.starts_with('.')
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !d.contains("..");
        ok.then(|| self.dir.join(format!("{d}{suffix}")))
    }

    /// The cached policy of `domain`, expired or not; None when there is
    /// none or the file does not parse (it is then ignored, not trusted).
    pub fn get(&self, domain: &str) -> Option<Cached> {
        let path = self.path(domain, "")?;
        let mut text = String::new();
        fs::File::open(path)
            .ok()?
            .take(BODY_LIMIT * 2)
            .read_to_string(&mut text)
            .ok()?;
        let (head, body) = text.split_once("\n\n")?;
        let mut id = None;
        let mut fetched = None;
        for line in head.lines() {
            match line.split_once(": ") {
                Some(("version", v)) if v != "1" => return None,
                Some(("id", v)) => id = Some(v.to_owned()),
                Some(("fetched", v)) => fetched = v.parse().ok(),
                _ => {}
            }
        }
        let policy = parse_policy(body).ok()?;
        Some(Cached {
            id: id?,
            fetched: fetched?,
            policy,
            body: body.to_owned(),
        })
    }

    /// Store (replace) the policy of `domain`.
    pub fn put(&self, domain: &str, c: &Cached) -> io::Result<()> {
        let path = self
            .path(domain, "")
            .ok_or_else(|| io::Error::other(format!("{domain}: not a cacheable domain name")))?;
        let text = format!(
            "version: 1\ndomain: {}\nid: {}\nfetched: {}\nexpires: {}\n\n{}",
            domain.trim_end_matches('.').to_ascii_lowercase(),
            c.id,
            c.fetched,
            c.fetched.saturating_add(c.policy.max_age),
            c.body
        );
        crate::tlspolicy::write_atomic(&path, text.as_bytes())
    }

    /// Forget the policy of `domain` (an expired one, or on request).
    pub fn remove(&self, domain: &str) -> io::Result<()> {
        let Some(path) = self.path(domain, "") else {
            return Ok(());
        };
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Note a failed fetch of policy `id`, for [`Cache::failed_recently`].
    pub fn note_failure(&self, domain: &str, id: &str, now: u64) -> io::Result<()> {
        let Some(path) = self.path(domain, ".failed") else {
            return Ok(());
        };
        crate::tlspolicy::write_atomic(&path, format!("{id} {now}\n").as_bytes())
    }

    /// Whether policy `id` failed to fetch less than [`RETRY_AFTER_FAILURE`]
    /// seconds ago (RFC 8461 3.3: do not hammer a failing policy host).
    pub fn failed_recently(&self, domain: &str, id: &str, now: u64) -> bool {
        let Some(text) = self
            .path(domain, ".failed")
            .and_then(|p| fs::read_to_string(p).ok())
        else {
            return false;
        };
        match text.trim().split_once(' ') {
            Some((fid, t)) => {
                fid == id
                    && t.parse::<u64>()
                        .is_ok_and(|t| now.saturating_sub(t) < RETRY_AFTER_FAILURE)
            }
            None => false,
        }
    }

    pub(super) fn clear_failure(&self, domain: &str) {
        if let Some(p) = self.path(domain, ".failed") {
            let _ = fs::remove_file(p);
        }
    }
}
