//! MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy file and its
//! grammar, the HTTPS fetch, the policy cache on disk and MX matching.
//!
//! This module holds the grammar and [`discover`]; the HTTPS client is
//! [`fetch`], the policy cache on disk [`cache`].
//!
//! The flow (RFC 8461 3 and 5.1), in [`discover`]: look up the TXT record;
//! when its id is the cached policy's and that policy has not expired, use
//! the cache; otherwise fetch `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`
//! (WebPKI-verified, no redirects, size and time limits) and cache it. A
//! failed fetch keeps the cached policy until it expires (the downgrade
//! resistance of RFC 8461 10.2); with nothing cached the domain has no
//! policy. What an enforce/testing policy then means for delivery is
//! `tlspolicy::policy`'s business.
//!
//! Why not `mail-auth`: it parses the TXT record only (not the policy file),
//! and more loosely than 3.1 asks; see DECISIONS.md 2026-12-04.

use std::fmt;
use std::time::Duration;

use crate::deliver::dns::{DnsError, Secured};

pub mod cache;
pub mod fetch;

use cache::{Cache, Cached};
use fetch::{FetchError, FetchResult};

/// RFC 8461 3.2: max_age is at most 31557600 seconds (about a year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;
/// The most of a policy body read (RFC 8461 3.3 asks senders to bound the
/// fetch; a real policy is a few hundred bytes, so 64 KiB is generous).
pub const BODY_LIMIT: u64 = 64 * 1024;
/// RFC 8461 3.3: a timeout of no more than a minute is suggested.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// RFC 8461 3.3: after a failed fetch, wait at least five minutes before
/// asking again for the same policy id.
pub const RETRY_AFTER_FAILURE: u64 = 300;
/// RFC 8461 10.2: refresh a cached policy well before it expires, so that
/// a policy host that is down for a while does not make it lapse: daily,
/// or at half of max_age when that is shorter.
pub const REFRESH_AFTER: u64 = 86_400;

/// The `_mta-sts.DOMAIN` TXT record (RFC 8461 3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRecord {
    /// 1 to 32 letters and digits; a new id means a new policy.
    pub id: String,
}

/// Why a record or policy does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(why: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(why.into()))
}

/// Parse one TXT record: `v=STSv1; id=ID` with `v` first, optional
/// whitespace around fields, extension fields ignored (RFC 8461 3.1).
pub fn parse_record(txt: &str) -> Result<StsRecord, ParseError> {
    let mut id = None;
    for (k, v) in super::tag_fields(txt, "v=STSv1").map_err(ParseError)? {
        match k {
            // sts-id = 1*32(ALPHA / DIGIT); the first one counts.
            "id" if id.is_none() => {
                if v.is_empty() || v.len() > 32 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return bad(format!("bad id {v:?}"));
                }
                id = Some(v.to_owned());
            }
            // sts-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
            _ if valid_ext_name(k) => {}
            _ => return bad(format!("bad field name {k:?}")),
        }
    }
    match id {
        Some(id) => Ok(StsRecord { id }),
        None => bad("no id field"),
    }
}

fn valid_ext_name(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && k.len() <= 32
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// The record among all the TXT strings at `_mta-sts.DOMAIN`: those not
/// beginning with `v=STSv1;` are discarded, and anything but exactly one
/// left (or one that does not parse) means no policy (RFC 8461 3.1).
pub fn select_record(txts: &[String]) -> Option<StsRecord> {
    parse_record(super::only_record(txts, "v=STSv1")?).ok()
}

/// Policy mode (RFC 8461 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only to matching MX hosts over verified TLS.
    Enforce,
    /// Deliver anyway; report what would have failed.
    Testing,
    /// The domain has withdrawn its policy (RFC 8461 8.3).
    None,
}

impl Mode {
    /// "enforce", "testing", "none" (logs, TLS-RPT policy strings).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// One `mx:` pattern: a host name, or `*.` and a domain meaning exactly one
/// more label on the left (RFC 8461 4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxPattern {
    wildcard: bool,
    /// Lower case, no trailing dot (the part after `*.` for a wildcard).
    name: String,
}

impl MxPattern {
    /// Parse a pattern: `mail.example.com` or `*.example.com`.
    pub fn parse(s: &str) -> Result<MxPattern, ParseError> {
        let s = s.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, s),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return bad(format!("bad mx pattern {name:?}"));
        }
        Ok(MxPattern { wildcard, name })
    }

    /// Whether `host` (an MX host name) matches, case-insensitively.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if !self.wildcard {
            return host == self.name;
        }
        // "*.example.com" matches "mx1.example.com" but neither
        // "example.com" nor "a.b.example.com".
        match host.split_once('.') {
            Some((first, rest)) => !first.is_empty() && rest == self.name,
            None => false,
        }
    }
}

impl fmt::Display for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

/// A parsed policy file (RFC 8461 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    pub mx: Vec<MxPattern>,
    /// Seconds, clamped to [`MAX_AGE_LIMIT`].
    pub max_age: u64,
}

impl Policy {
    /// Whether the MX host is one the policy allows (RFC 8461 4.1).
    pub fn mx_allowed(&self, host: &str) -> bool {
        self.mx.iter().any(|p| p.matches(host))
    }

    /// The policy as TLS-RPT's `policy-string` lists it: one string per
    /// line of the policy (RFC 8460 4.4).
    pub fn policy_strings(&self) -> Vec<String> {
        let mut v = vec![
            "version: STSv1".to_owned(),
            format!("mode: {}", self.mode.as_str()),
        ];
        v.extend(self.mx.iter().map(|p| format!("mx: {p}")));
        v.push(format!("max_age: {}", self.max_age));
        v
    }
}

/// Parse a policy body. Lines end in LF or CRLF; each is `key: value` with
/// optional whitespace after the colon; keys and keywords are exact (the
/// ABNF spells them as case-sensitive strings); unknown keys are ignored; of a
/// repeated key other than `mx` the first counts; `version`, `mode` and
/// `max_age` are required, and at least one `mx` unless the mode is none.
pub fn parse_policy(body: &str) -> Result<Policy, ParseError> {
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = line.trim_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return bad(format!("line without ':': {line:?}"));
        };
        let value = value.trim_matches([' ', '\t']);
        match key {
            "version" if version.is_none() => {
                if value != "STSv1" {
                    return bad(format!("unknown version {value:?}"));
                }
                version = Some(());
            }
            "mode" if mode.is_none() => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    _ => return bad(format!("unknown mode {value:?}")),
                });
            }
            "max_age" if max_age.is_none() => {
                // 1*10DIGIT
                if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return bad(format!("bad max_age {value:?}"));
                }
                let n: u64 = value
                    .parse()
                    .map_err(|_| ParseError(format!("bad max_age {value:?}")))?;
                max_age = Some(n.min(MAX_AGE_LIMIT));
            }
            "mx" => mx.push(MxPattern::parse(value)?),
            _ => {}
        }
    }
    if version.is_none() {
        return bad("no version field");
    }
    let Some(mode) = mode else {
        return bad("no mode field");
    };
    let Some(max_age) = max_age else {
        return bad("no max_age field");
    };
    if mx.is_empty() && mode != Mode::None {
        return bad("no mx field");
    }
    Ok(Policy { mode, mx, max_age })
}

/// What policy discovery found for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// No MTA-STS: no valid TXT record and nothing cached, or the policy
    /// could not be had and nothing is cached (RFC 8461 5: then the domain
    /// is treated as having no policy). `failure` carries the reason for
    /// the log and TLS-RPT when there was a TXT record.
    NoPolicy { failure: Option<FetchError> },
    /// A policy to apply.
    Policy {
        policy: Policy,
        id: String,
        /// Whether it came from the cache (no fetch, or a failed one).
        cached: bool,
        /// A fetch that failed while a cached policy was used instead.
        failure: Option<FetchError>,
    },
}

/// RFC 8461 5.1, the whole dance for one domain. `txt` is the lookup of
/// `_mta-sts.DOMAIN`; `fetch` gets the policy (a [`Fetcher`] in the
/// daemon). Only the fetch does I/O besides the cache, and it happens
/// only when the id changed, nothing usable is cached, or a refresh is
/// due, and not within five minutes of a failure for the same id.
pub fn discover(
    domain: &str,
    txt: Result<Secured<Vec<String>>, DnsError>,
    cache: &Cache,
    fetch: &dyn Fn(&str) -> FetchResult,
    now: u64,
) -> Discovery {
    let cached = cache.get(domain).filter(|c| !c.expired(now));
    let record = match &txt {
        Ok(t) => select_record(&t.value),
        Err(_) => None,
    };
    let use_cache = |c: Cached, failure| Discovery::Policy {
        policy: c.policy,
        id: c.id,
        cached: true,
        failure,
    };
    let Some(record) = record else {
        // No (valid) record, or the lookup failed: a cached policy stays in
        // force until it expires (RFC 8461 3.1, 10.2: removing the record
        // does not remove a policy; publishing mode none does).
        return match cached {
            Some(c) => use_cache(c, None),
            None => Discovery::NoPolicy { failure: None },
        };
    };
    if let Some(c) = &cached {
        if c.id == record.id && !c.due_for_refresh(now) {
            return use_cache(c.clone(), None);
        }
    }
    if cache.failed_recently(domain, &record.id, now) {
        let failure = Some(FetchError::Fetch("failed less than five minutes ago".to_owned()));
        return match cached {
            Some(c) => use_cache(c, failure),
            None => Discovery::NoPolicy { failure },
        };
    }
    match fetch(domain) {
        Ok((policy, body)) => {
            let c = Cached {
                id: record.id.clone(),
                fetched: now,
                policy: policy.clone(),
                body,
            };
            if let Err(e) = cache.put(domain, &c) {
                log::warn!("MTA-STS: cannot cache the policy of {domain}: {e}");
            }
            cache.clear_failure(domain);
            Discovery::Policy {
                policy,
                id: record.id,
                cached: false,
                failure: None,
            }
        }
        Err(e) => {
            if let Err(w) = cache.note_failure(domain, &record.id, now) {
                log::warn!("MTA-STS: cannot note the failed fetch for {domain}: {w}");
            }
            match cached {
                Some(c) => use_cache(c, Some(e)),
                None => Discovery::NoPolicy { failure: Some(e) },
            }
        }
    }
}

#[cfg(test)]
mod tests;
