//! SMTP TLS Reporting (RFC 8460): the `_smtp._tls` TXT record, the record
//! of each outbound session's TLS policy result, and the daily aggregate
//! report (JSON, gzip) in its report mail.
//!
//! Results are appended, one JSON line per session, to a file per UTC day
//! in a directory the daemon keeps under the spool (`SPOOL/tlsrpt/`), so a
//! restart loses nothing written before it. Once the day is over, the
//! caller loads it, aggregates it per policy domain, builds one report per
//! domain that publishes a `rua=mailto:` and enqueues the report mail
//! through tern's own queue, then removes the day.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::prelude::{Engine as _, BASE64_STANDARD};
use serde::{Deserialize, Serialize};

/// What a policy was (RFC 8460 4.4 `policy-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyType {
    /// DANE: the TLSA RRset of an MX host.
    Tlsa,
    /// MTA-STS.
    Sts,
    /// Neither applied.
    NoPolicyFound,
}

/// Why a session failed (RFC 8460 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultType {
    // 4.3.1 negotiation failures
    StarttlsNotSupported,
    CertificateHostMismatch,
    CertificateExpired,
    CertificateNotTrusted,
    ValidationFailure,
    // 4.3.2.1 DANE
    TlsaInvalid,
    DnssecInvalid,
    DaneRequired,
    // 4.3.2.2 MTA-STS
    StsPolicyFetchError,
    StsPolicyInvalid,
    StsWebpkiInvalid,
}

impl ResultType {
    /// The name as the report spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultType::StarttlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateExpired => "certificate-expired",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::ValidationFailure => "validation-failure",
            ResultType::TlsaInvalid => "tlsa-invalid",
            ResultType::DnssecInvalid => "dnssec-invalid",
            ResultType::DaneRequired => "dane-required",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }

    /// The result type of a failed certificate check in the handshake:
    /// the name (host mismatch), the dates (expired), the chain or the TLSA
    /// records (not trusted), or anything else.
    pub fn of_tls_error(e: &rustls::Error) -> ResultType {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::NotValidForName | C::NotValidForNameContext { .. } => ResultType::CertificateHostMismatch,
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
                    ResultType::CertificateExpired
                }
                C::UnknownIssuer | C::BadSignature | C::Revoked | C::Other(_) => {
                    ResultType::CertificateNotTrusted
                }
                _ => ResultType::ValidationFailure,
            },
            _ => ResultType::ValidationFailure,
        }
    }
}

impl fmt::Display for ResultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy a session was held to (RFC 8460 4.4 `policy`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyDetails {
    pub policy_type: PolicyType,
    /// The TLSA records, or the MTA-STS policy's lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<String>,
    pub policy_domain: String,
    /// For MTA-STS, the policy's mx patterns; for TLSA, the MX host whose
    /// records these are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

impl PolicyDetails {
    /// The details for a session, from the decision's report fields.
    pub fn new(
        policy_type: PolicyType,
        policy_string: Vec<String>,
        domain: &str,
        mx_host: &str,
    ) -> PolicyDetails {
        let mx_host = match policy_type {
            PolicyType::Sts => policy_string
                .iter()
                .filter_map(|l| l.strip_prefix("mx: ").map(str::to_owned))
                .collect(),
            PolicyType::Tlsa => vec![mx_host.to_ascii_lowercase()],
            PolicyType::NoPolicyFound => Vec::new(),
        };
        PolicyDetails {
            policy_type,
            policy_string,
            policy_domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            mx_host,
        }
    }
}

/// One failed session's details (RFC 8460 4.4 `failure-details`, less the
/// count, which aggregation adds).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Failure {
    pub result_type: ResultType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_helo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_information: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason_code: Option<String>,
}

impl Failure {
    /// A failure of `result_type` at `mx` with nothing else known yet.
    pub fn new(result_type: ResultType, mx: &str) -> Failure {
        Failure {
            result_type,
            sending_mta_ip: None,
            receiving_mx_hostname: Some(mx.to_ascii_lowercase()),
            receiving_mx_helo: None,
            receiving_ip: None,
            additional_information: None,
            failure_reason_code: None,
        }
    }
}

/// One session's result, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub policy: PolicyDetails,
    /// None: the session met its policy.
    #[serde(default)]
    pub failure: Option<Failure>,
}

/// The record of results, one file per UTC day.
pub struct Store {
    dir: PathBuf,
}

/// The UTC day of `t` as `YYYY-MM-DD`.
pub fn day_of(t: u64) -> String {
    let s = crate::clock::rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
    s.get(..10).unwrap_or("1970-01-01").to_owned()
}

/// The first second of the UTC day of `t`.
pub fn day_start(t: u64) -> u64 {
    t - t % 86_400
}

impl Store {
    /// Open (creating it, mode 0700) the results directory.
    pub fn open(dir: &Path) -> io::Result<Store> {
        super::make_private_dir(dir)?;
        Ok(Store { dir: dir.to_owned() })
    }

    /// Append one session's result to the file of the day of `now`. One
    /// `write` of one line on an O_APPEND file: concurrent delivery threads
    /// never interleave, and a crash can only cut the last line, which
    /// [`Store::load`] skips. Not fsync'd per line: the page cache keeps
    /// it across a daemon restart, and a lost line only undercounts.
    pub fn record(&self, now: u64, ev: &Event) -> io::Result<()> {
        let mut line = serde_json::to_vec(ev).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(self.dir.join(day_of(now)))?;
        f.write_all(&line)
    }

    /// The days before the day of `now` that have results waiting.
    pub fn finished_days(&self, now: u64) -> io::Result<Vec<String>> {
        let today = day_of(now);
        let mut days: Vec<String> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| is_day(n) && *n < today)
            .collect();
        days.sort();
        Ok(days)
    }

    /// The results of `day`; lines that do not parse (a cut last line)
    /// are skipped.
    pub fn load(&self, day: &str) -> io::Result<Vec<Event>> {
        let f = fs::File::open(self.dir.join(day))?;
        let mut out = Vec::new();
        for line in io::BufReader::new(f).lines() {
            if let Ok(ev) = serde_json::from_str(&line?) {
                out.push(ev);
            }
        }
        Ok(out)
    }

    /// Forget `day` once its reports are queued.
    pub fn remove(&self, day: &str) -> io::Result<()> {
        if !is_day(day) {
            return Ok(());
        }
        match fs::remove_file(self.dir.join(day)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn is_day(n: &str) -> bool {
    n.len() == 10
        && n.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// One policy's part of a report (RFC 8460 4.4 `policies` element).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyResult {
    pub policy: PolicyDetails,
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_details: Vec<FailureCount>,
}

/// Session counts (RFC 8460 4.4 `summary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    pub total_successful_session_count: u64,
    pub total_failure_session_count: u64,
}

/// A failure and how many sessions it happened in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureCount {
    #[serde(flatten)]
    pub failure: Failure,
    pub failed_session_count: u64,
}

/// Group a day's events by policy domain, then by policy; identical
/// failures are counted together.
pub fn aggregate(events: &[Event]) -> BTreeMap<String, Vec<PolicyResult>> {
    type Counts = (u64, BTreeMap<Failure, u64>);
    let mut by: BTreeMap<PolicyDetails, Counts> = BTreeMap::new();
    for ev in events {
        let e = by.entry(ev.policy.clone()).or_default();
        match &ev.failure {
            None => e.0 += 1,
            Some(f) => *e.1.entry(f.clone()).or_default() += 1,
        }
    }
    let mut out: BTreeMap<String, Vec<PolicyResult>> = BTreeMap::new();
    for (policy, (ok, failures)) in by {
        let failed = failures.values().sum();
        out.entry(policy.policy_domain.clone())
            .or_default()
            .push(PolicyResult {
                policy,
                summary: Summary {
                    total_successful_session_count: ok,
                    total_failure_session_count: failed,
                },
                failure_details: failures
                    .into_iter()
                    .map(|(failure, failed_session_count)| FailureCount {
                        failure,
                        failed_session_count,
                    })
                    .collect(),
            });
    }
    out
}

/// The report's period (RFC 8460 4.4 `date-range`, RFC 3339 date-times).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DateRange {
    pub start_datetime: String,
    pub end_datetime: String,
}

/// An aggregate report for one policy domain (RFC 8460 4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    pub organization_name: String,
    pub date_range: DateRange,
    pub contact_info: String,
    pub report_id: String,
    pub policies: Vec<PolicyResult>,
}

/// Who sends reports: the `organization-name`, the `contact-info` (the
/// reporting address), and the submitter (this MTA's domain, in the
/// TLS-Report-Submitter field and the report's file name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporter {
    pub organization: String,
    pub contact: String,
    pub submitter: String,
}

fn rfc3339(t: u64) -> String {
    let s = crate::clock::rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
    // Whole seconds: "2026-12-04T00:00:00.000Z" -> "2026-12-04T00:00:00Z".
    s.replace(".000Z", "Z")
}

impl Report {
    /// The report for `domain`'s results of the UTC day starting at
    /// `start` (a [`day_start`]).
    pub fn new(who: &Reporter, domain: &str, start: u64, policies: Vec<PolicyResult>) -> Report {
        Report {
            organization_name: who.organization.clone(),
            date_range: DateRange {
                start_datetime: rfc3339(start),
                end_datetime: rfc3339(start + 86_399),
            },
            contact_info: who.contact.clone(),
            // Unique per (day, domain, submitter): a re-sent report keeps its id.
            report_id: format!("{}.{}@{}", day_of(start), domain, who.submitter),
            policies,
        }
    }

    /// The JSON of RFC 8460 4.4.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// gzip (RFC 1952) of the report JSON: `application/tlsrpt+gzip`.
pub fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data)?;
    e.finish()
}

/// The report mail of RFC 8460 5.3 for `domain`, from `from` to the
/// `rua=mailto:` addresses `to`: multipart/report with report-type tlsrpt,
/// a short text part and the gzip'd JSON as `application/tlsrpt+gzip`
/// named per 5.1. Lines end in LF (the spool's form); `TLS-Required: No`
/// (RFC 8689 3) because a report about broken TLS must still get through
/// (RFC 8460 5.3). `unique` makes the Message-ID and boundary unique.
pub fn report_mail(
    report: &Report,
    who: &Reporter,
    domain: &str,
    from: &str,
    to: &[String],
    now: u64,
    unique: &str,
) -> io::Result<Vec<u8>> {
    let json = report.to_json();
    let gz = gzip(json.as_bytes())?;
    let start = report_start(report);
    let end = start + 86_399;
    // RFC 8460 5.1: sender "!" policy-domain "!" begin "!" end "." ext
    let filename = format!("{}!{}!{start}!{end}.json.gz", who.submitter, domain);
    let boundary = format!("tlsrpt-{unique}");
    let mut m = String::new();
    let mut field = |name: &str, value: &str| {
        m.push_str(name);
        m.push_str(": ");
        m.push_str(value);
        m.push('\n');
    };
    field("From", from);
    field("To", &to.join(", "));
    field("Date", &crate::clock::rfc5322(now));
    field(
        "Subject",
        &format!(
            "Report Domain: {domain} Submitter: {} Report-ID: <{}>",
            who.submitter, report.report_id
        ),
    );
    field("Message-ID", &format!("<{unique}.tlsrpt@{}>", who.submitter));
    field("TLS-Report-Domain", domain);
    field("TLS-Report-Submitter", &who.submitter);
    field("TLS-Required", "No");
    field("Auto-Submitted", "auto-generated");
    field("MIME-Version", "1.0");
    field(
        "Content-Type",
        &format!("multipart/report; report-type=\"tlsrpt\";\n\tboundary=\"{boundary}\""),
    );
    m.push('\n');
    m.push_str("This is a multi-part message in MIME format.\n\n");
    m.push_str(&format!("--{boundary}\n"));
    m.push_str("Content-Type: text/plain; charset=us-ascii\n\n");
    m.push_str(&format!(
        "This is an aggregate TLS report from {} for {domain}\n({} to {}).\n\n",
        who.submitter, report.date_range.start_datetime, report.date_range.end_datetime
    ));
    m.push_str(&format!("--{boundary}\n"));
    m.push_str("Content-Type: application/tlsrpt+gzip\n");
    m.push_str("Content-Transfer-Encoding: base64\n");
    m.push_str(&format!(
        "Content-Disposition: attachment;\n\tfilename=\"{filename}\"\n\n"
    ));
    let b64 = BASE64_STANDARD.encode(&gz);
    // RFC 2045 6.8: lines of at most 76 characters.
    let bytes = b64.as_bytes();
    for chunk in bytes.chunks(76) {
        m.push_str(&String::from_utf8_lossy(chunk));
        m.push('\n');
    }
    m.push_str(&format!("\n--{boundary}--\n"));
    Ok(m.into_bytes())
}

/// The report's start as seconds: its date range begins with the day.
fn report_start(report: &Report) -> u64 {
    day_start_of(report.date_range.start_datetime.get(..10).unwrap_or("")).unwrap_or(0)
}

/// The first second of the UTC day `YYYY-MM-DD` (a [`Store`] file name).
pub fn day_start_of(day: &str) -> Option<u64> {
    if !is_day(day) {
        return None;
    }
    let mut parts = day.split('-').filter_map(|p| p.parse::<i64>().ok());
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    // Days from civil (Howard Hinnant), the inverse of clock's conversion.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400).ok()
}

/// The `_smtp._tls.DOMAIN` TXT record (RFC 8460 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RptRecord {
    /// `rua=` URIs in order.
    pub rua: Vec<Rua>,
}

/// Where reports go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rua {
    /// A `mailto:` address, percent-decoded, without any `?` query.
    Mailto(String),
    /// An `https:` URI (not used by tern: reports go by mail only).
    Https(String),
}

impl RptRecord {
    /// The mail addresses among the URIs.
    pub fn mailto(&self) -> Vec<String> {
        self.rua
            .iter()
            .filter_map(|r| match r {
                Rua::Mailto(a) => Some(a.clone()),
                Rua::Https(_) => None,
            })
            .collect()
    }
}

/// Parse `v=TLSRPTv1; rua=mailto:a@example.com,https://...` (RFC 8460 3):
/// the version first, `;` between fields with optional whitespace, `rua`
/// required, its URIs separated by commas; unknown fields ignored; URIs of
/// other schemes ignored.
pub fn parse_record(txt: &str) -> Result<RptRecord, String> {
    let mut rua = None;
    for (k, v) in super::tag_fields(txt, "v=TLSRPTv1")? {
        if k == "rua" && rua.is_none() {
            let mut uris = Vec::new();
            for u in v.split(',').map(|u| u.trim_matches([' ', '\t'])) {
                if let Some(rest) = strip_scheme(u, "mailto:") {
                    let addr = rest.split('?').next().unwrap_or("");
                    let addr = percent_decode(addr).ok_or_else(|| format!("bad mailto URI {u:?}"))?;
                    if !addr.contains('@') {
                        return Err(format!("bad mailto URI {u:?}"));
                    }
                    uris.push(Rua::Mailto(addr));
                } else if strip_scheme(u, "https:").is_some() {
                    uris.push(Rua::Https(u.to_owned()));
                } else if u.is_empty() {
                    return Err("empty rua URI".to_owned());
                }
            }
            rua = Some(uris);
        }
    }
    match rua {
        Some(rua) if !rua.is_empty() => Ok(RptRecord { rua }),
        _ => Err("no usable rua field".to_owned()),
    }
}

fn strip_scheme<'a>(u: &'a str, scheme: &str) -> Option<&'a str> {
    let head = u.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| u.get(scheme.len()..))
        .flatten()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The record among the TXT strings at `_smtp._tls.DOMAIN`: those not
/// beginning with `v=TLSRPTv1;` are discarded, and anything but exactly
/// one left means the domain does not do TLSRPT (RFC 8460 3).
pub fn select_record(txts: &[String]) -> Option<RptRecord> {
    parse_record(super::only_record(txts, "v=TLSRPTv1")?).ok()
}

#[cfg(test)]
mod tests;
