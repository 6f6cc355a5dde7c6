//! Outbound TLS policy (issue 18): which TLS a next hop must get, and the
//! pieces that find and check it. Nothing here knows about sessions or the
//! queue; `deliver` asks, the SMTP client enforces.
//!
//! - [`dane`]: TLSA records and the certificate verifier for them (RFC 7672).
//! - [`mtasts`]: MTA-STS records, policies and discovery (RFC 8461), with the
//!   HTTPS fetch in `mtasts::fetch` and the disk cache under the spool in
//!   `mtasts::cache`.
//! - [`tlsrpt`]: the per-domain results and the daily report (RFC 8460).
//! - [`policy`]: the pure decision for one hop, DANE over MTA-STS over the
//!   configured level, with REQUIRETLS and `TLS-Required: No` (RFC 8689).
//! - [`outbound`]: the daemon's state: the DNSSEC probe, MTA-STS discovery
//!   with its cache and fetcher, the TLS-RPT record.
//!
//! The DNSSEC status these rely on comes from `deliver::dns` (Postfix's
//! model: the AD bit of a trusted validating resolver).

pub mod dane;
pub mod mtasts;
pub mod outbound;
pub mod policy;
pub mod tlsrpt;

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Create `dir` (and its parents) with mode 0700 when missing: the policy
/// cache and the report counters are the daemon's own business.
pub(crate) fn make_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Replace `path` with `data` so that a crash leaves the old content or the
/// new, never a mix: write a temporary file beside it, fsync, rename over,
/// fsync the directory (the spool's own rule, ARCHITECTURE 3.4).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The one TXT record of a kind among all the strings at a name: those not
/// beginning with `VERSION;` (or equal to `VERSION`) are discarded, and
/// anything but exactly one left means none (RFC 8461 3.1, RFC 8460 3).
pub(crate) fn only_record<'a>(txts: &'a [String], version: &str) -> Option<&'a str> {
    let mut c = txts.iter().filter(|t| {
        t.strip_prefix(version)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(';'))
    });
    let one = c.next()?;
    if c.next().is_some() {
        return None;
    }
    Some(one)
}

/// The `key=value` fields of a TXT record that must begin with `version`
/// (`v=STSv1`, `v=TLSRPTv1`), after it: `;` between fields with optional
/// whitespace around them, empty fields skipped (RFC 8461 3.1, RFC 8460 3).
pub(crate) fn tag_fields<'a>(txt: &'a str, version: &str) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut fields = txt.split(';').map(|f| f.trim_matches([' ', '\t']));
    // The version, exactly, at the very start.
    if !txt.starts_with(version) || fields.next() != Some(version) {
        return Err(format!("the record does not begin with {version}"));
    }
    fields
        .filter(|f| !f.is_empty())
        .map(|f| f.split_once('=').ok_or_else(|| format!("field without '=': {f}")))
        .collect()
}
