//! SPF (RFC 7208), DKIM verification (RFC 6376 6) and DMARC (RFC 9989) of
//! incoming mail, and the administrator's policy on the outcome.
//!
//! Two calls, so the session can act as early as the data allows:
//! [`Checker::spf`] needs only the connection, HELO and MAIL FROM (an SPF
//! rejection can come at MAIL or RCPT time, before any data is sent);
//! [`Checker::message`] needs the message for DKIM and DMARC.
//!
//! Time is bounded: each call has a deadline (`auth_timeout`), and every
//! query a per-query time-out (`dns_timeout`). What has no answer by then
//! is `temperror`, reported in Authentication-Results and never a reason to
//! reject (RFC 7208 2.6.6 and RFC 9989 5.3.6 leave a temporary error to the
//! receiver; tern annotates and accepts, so a DNS outage never bounces
//! legitimate mail).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_auth::dkim::{Canonicalization, DkimError};
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy as DmarcRecordPolicy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, DkimOutput, DkimResult, DmarcResult, SpfOutput, SpfResult};

use super::dns::Dns;
use super::results::{AuthResults, DkimCheck, DmarcCheck, DmarcPolicy, Outcome, SpfCheck, SpfResults};

/// `spf_reject`: whether an SPF `fail` rejects; a configuration type.
pub use crate::config::SpfReject;

/// The administrator's policy: what, beyond annotating, the results do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `dmarc_reject = yes`: reject a DMARC `fail` whose domain publishes
    /// `p=reject` (not in `t=y` testing mode).
    pub dmarc_reject: bool,
    pub spf_reject: SpfReject,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            dmarc_reject: false,
            spf_reject: SpfReject::None,
        }
    }
}

/// Why a message is refused. The session turns it into its reply:
/// SPF `550 5.7.23` (RFC 7372 3.2, "SPF validation failed"), DMARC
/// `550 5.7.1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// SPF `fail` of `identity` (the envelope sender, or the HELO name).
    Spf { identity: String, domain: String },
    /// DMARC `fail` under `p=reject` of `domain` (the From: domain).
    Dmarc { domain: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject(Rejection),
}

impl SpfResults {
    /// What `spf_reject` makes of these results.
    pub fn verdict(&self, policy: &Policy) -> Verdict {
        if policy.spf_reject == SpfReject::Fail {
            for c in [&self.mail_from, &self.helo] {
                if c.result == Outcome::Fail {
                    return Verdict::Reject(Rejection::Spf {
                        identity: c.identity.clone(),
                        domain: c.domain.clone(),
                    });
                }
            }
        }
        Verdict::Accept
    }
}

impl AuthResults {
    /// What the policy makes of all the results (SPF first).
    pub fn verdict(&self, policy: &Policy) -> Verdict {
        if let Verdict::Reject(r) = self.spf.verdict(policy) {
            return Verdict::Reject(r);
        }
        let d = &self.dmarc;
        if policy.dmarc_reject
            && d.result == Outcome::Fail
            && d.policy == Some(DmarcPolicy::Reject)
            && !d.testing
        {
            return Verdict::Reject(Rejection::Dmarc {
                domain: d.from_domain.clone(),
            });
        }
        Verdict::Accept
    }
}

/// Runs the checks; one per daemon, shared by the session threads.
pub struct Checker {
    /// Shared with the checker a reload makes (its caches too).
    dns: Arc<Dns>,
    authserv_id: String,
    deadline: Duration,
}

impl Checker {
    /// `authserv_id`: the name in Authentication-Results, tern's host name.
    /// `dns_servers`, `dns_timeout`: as for delivery. `deadline`: the most
    /// one call may take (`auth_timeout`).
    pub fn new(
        authserv_id: &str,
        dns_servers: &[SocketAddr],
        dns_timeout: Duration,
        deadline: Duration,
    ) -> std::io::Result<Checker> {
        Ok(Checker {
            dns: Arc::new(Dns::new(dns_servers, dns_timeout)?),
            authserv_id: authserv_id.to_owned(),
            deadline,
        })
    }

    /// A checker with another name or deadline (a reload changed
    /// `hostname` or `auth_timeout`) over the same resolver and caches.
    pub fn with(&self, authserv_id: &str, deadline: Duration) -> Checker {
        Checker {
            dns: Arc::clone(&self.dns),
            authserv_id: authserv_id.to_owned(),
            deadline,
        }
    }

    /// The most one call may take.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    /// TXT answers cached now (tests).
    #[cfg(test)]
    pub(crate) fn dns_cache_len(&self) -> usize {
        self.dns.caches.txt.len()
    }

    /// SPF for the HELO identity (RFC 7208 2.3) and the MAIL FROM identity
    /// (2.4; `None` or empty is the null sender, whose identity is
    /// `postmaster@HELO`, so it shares the HELO result).
    pub fn spf(&self, client: IpAddr, helo: &str, mail_from: Option<&str>) -> SpfResults {
        let until = Instant::now() + self.deadline;
        // IDNs are looked up as A-labels (RFC 5890); SMTPUTF8 clients may
        // send U-labels.
        let helo_a = mail_auth::common::to_a_label(helo.trim_end_matches('.'));
        let helo = helo_a.as_ref();
        // An address literal or a bare word has no SPF record to look up.
        let helo_check = self.spf_identity(
            until,
            SpfParameters::verify_ehlo(client, helo, &self.authserv_id),
            helo,
            helo,
            "HELO is not a domain name",
        );
        let mail_from_check = match mail_from.filter(|s| !s.is_empty()) {
            None => SpfCheck {
                identity: format!("postmaster@{helo}"),
                ..helo_check.clone()
            },
            Some(addr) => {
                let domain = addr.rsplit_once('@').map_or("", |(_, d)| d);
                let domain = mail_auth::common::to_a_label(domain.trim_end_matches('.'));
                self.spf_identity(
                    until,
                    SpfParameters::verify_mail_from(client, helo, &self.authserv_id, addr),
                    addr,
                    &domain,
                    "no domain to check",
                )
            }
        };
        SpfResults {
            mail_from: mail_from_check,
            helo: helo_check,
        }
    }

    /// check_host() of one identity whose domain is `domain`, or `none`
    /// (with `why`) when that is not a domain name SPF can look up.
    fn spf_identity(
        &self,
        until: Instant,
        p: SpfParameters<'_>,
        identity: &str,
        domain: &str,
        why: &'static str,
    ) -> SpfCheck {
        if !is_domain(domain) {
            return SpfCheck {
                result: Outcome::None,
                identity: identity.to_owned(),
                domain: domain.to_owned(),
                note: Some(why),
            };
        }
        let out = self
            .dns
            .run(until, self.dns.auth.verify_spf(self.dns.caches.params(p)));
        spf_check(out, identity.to_owned(), domain.to_owned())
    }

    /// DKIM of every signature and DMARC of the From: domain, given the SPF
    /// results from [`Checker::spf`]. `message` is in tern's stored form
    /// (LF line ends; CRLF is accepted too).
    pub fn message(&self, spf: &SpfResults, message: &[u8]) -> AuthResults {
        let until = Instant::now() + self.deadline;
        let crlf = to_crlf(message);
        let trimmed = trim_trailing_space_lines(&crlf);
        let Some(am) = AuthenticatedMessage::parse(&crlf) else {
            return AuthResults {
                spf: spf.clone(),
                dkim: Vec::new(),
                dmarc: DmarcCheck {
                    result: Outcome::None,
                    from_domain: String::new(),
                    policy: None,
                    testing: false,
                },
            };
        };
        // See sign::RelaxedBody: mail-auth 0.13 hashes whitespace-only lines
        // at the end of a relaxed body as empty lines. Signatures with
        // c=*/relaxed are judged on a copy without them (equal under
        // relaxed canonicalization); simple-body signatures on the message.
        let am_trimmed = trimmed.as_deref().and_then(|t| {
            am.dkim_headers
                .iter()
                .any(|h| h.header.cb == Canonicalization::Relaxed)
                .then(|| AuthenticatedMessage::parse(t))
                .flatten()
        });

        let dkim_out: Option<Vec<DkimOutput<'_>>> = self
            .dns
            .run(until, self.dns.auth.verify_dkim(self.dns.caches.params(&am)))
            .map(|mut outs| {
                if let Some(am2) = &am_trimmed {
                    let second = self
                        .dns
                        .run(until, self.dns.auth.verify_dkim(self.dns.caches.params(am2)))
                        .unwrap_or_default();
                    for o in &mut outs {
                        let Some(sig) = o.signature() else { continue };
                        if sig.cb != Canonicalization::Relaxed {
                            continue;
                        }
                        if let Some(o2) = second
                            .iter()
                            .find(|x| x.signature().is_some_and(|s| s.b == sig.b))
                        {
                            *o = o2.clone();
                        }
                    }
                }
                outs
            });

        let dkim: Vec<DkimCheck> = match &dkim_out {
            Some(outs) => outs.iter().map(|o| dkim_check(o, &am)).collect(),
            // Out of time: every signature is a temporary error.
            None => am
                .dkim_headers
                .iter()
                .map(|h| DkimCheck {
                    result: Outcome::TempError,
                    domain: h.header.d.clone(),
                    selector: h.header.s.clone(),
                    b: b_prefix(h.value),
                    note: Some("time-out"),
                })
                .collect(),
        };

        let from_domain = am
            .from
            .first()
            .and_then(|f| f.rsplit_once('@'))
            .map(|(_, d)| mail_auth::common::to_a_label(d).into_owned())
            .unwrap_or_default();
        let dmarc = match &dkim_out {
            None => DmarcCheck {
                result: Outcome::TempError,
                from_domain,
                policy: None,
                testing: false,
            },
            Some(outs) => {
                // DMARC's SPF input is the MAIL FROM identity (RFC 9989
                // 4.4.2); for the null sender that is postmaster@HELO.
                let spf_out = SpfOutput::new(spf.mail_from.domain.clone())
                    .with_result(to_spf_result(spf.mail_from.result));
                let p = DmarcParameters::new(&am, outs, &spf.mail_from.domain, &spf_out);
                match self
                    .dns
                    .run(until, self.dns.auth.verify_dmarc(self.dns.caches.params(p)))
                {
                    None => DmarcCheck {
                        result: Outcome::TempError,
                        from_domain,
                        policy: None,
                        testing: false,
                    },
                    Some(d) => {
                        let record = d.dmarc_record();
                        DmarcCheck {
                            result: match d.result() {
                                DmarcResult::Pass => Outcome::Pass,
                                DmarcResult::Fail(_) => Outcome::Fail,
                                DmarcResult::TempError(_) => Outcome::TempError,
                                DmarcResult::PermError(_) => Outcome::PermError,
                                DmarcResult::None => Outcome::None,
                            },
                            from_domain: if d.domain().is_empty() {
                                from_domain
                            } else {
                                d.domain().to_owned()
                            },
                            policy: record.map(|_| match d.policy() {
                                DmarcRecordPolicy::Reject => DmarcPolicy::Reject,
                                DmarcRecordPolicy::Quarantine => DmarcPolicy::Quarantine,
                                DmarcRecordPolicy::None | DmarcRecordPolicy::Unspecified => DmarcPolicy::None,
                            }),
                            testing: record.is_some_and(|r| r.t),
                        }
                    }
                }
            }
        };
        AuthResults {
            spf: spf.clone(),
            dkim,
            dmarc,
        }
    }
}

/// A fully qualified domain name SPF can evaluate: ASCII labels (A-labels
/// for IDNs) with at least one dot; not an address literal.
fn is_domain(s: &str) -> bool {
    s.contains('.')
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

fn spf_check(out: Option<SpfOutput>, identity: String, domain: String) -> SpfCheck {
    let (result, note) = match out.map(|o| o.result()) {
        None => (Outcome::TempError, Some("time-out")),
        Some(SpfResult::Pass) => (Outcome::Pass, None),
        Some(SpfResult::Fail) => (Outcome::Fail, None),
        Some(SpfResult::SoftFail) => (Outcome::SoftFail, None),
        Some(SpfResult::Neutral) => (Outcome::Neutral, None),
        Some(SpfResult::None) => (Outcome::None, None),
        Some(SpfResult::TempError) => (Outcome::TempError, Some("DNS error")),
        Some(SpfResult::PermError) => (Outcome::PermError, Some("bad SPF record")),
    };
    SpfCheck {
        result,
        identity,
        domain,
        note,
    }
}

fn to_spf_result(o: Outcome) -> SpfResult {
    match o {
        Outcome::Pass => SpfResult::Pass,
        Outcome::Fail => SpfResult::Fail,
        Outcome::SoftFail => SpfResult::SoftFail,
        Outcome::Neutral => SpfResult::Neutral,
        Outcome::None => SpfResult::None,
        Outcome::TempError => SpfResult::TempError,
        Outcome::PermError => SpfResult::PermError,
    }
}

fn dkim_check(o: &DkimOutput<'_>, am: &AuthenticatedMessage<'_>) -> DkimCheck {
    use mail_auth::Error;
    let (result, note) = match o.result() {
        DkimResult::Pass => (Outcome::Pass, None),
        // RFC 6376 6.1.3: a body hash mismatch fails verification (mail-auth
        // calls it neutral).
        DkimResult::Neutral(Error::Dkim(DkimError::FailedBodyHashMatch)) => {
            (Outcome::Fail, Some("body hash did not verify"))
        }
        DkimResult::Neutral(Error::Dkim(DkimError::SignatureExpired)) => {
            (Outcome::Neutral, Some("signature expired"))
        }
        DkimResult::Neutral(_) => (Outcome::Neutral, Some("signature not usable")),
        DkimResult::Fail(Error::Dkim(DkimError::RevokedPublicKey)) => (Outcome::Fail, Some("key revoked")),
        DkimResult::Fail(_) => (Outcome::Fail, Some("signature did not verify")),
        DkimResult::PermError(_) => (Outcome::PermError, Some("no usable key")),
        DkimResult::TempError(_) => (Outcome::TempError, Some("DNS error")),
        DkimResult::None => (Outcome::None, None),
    };
    let (domain, selector, b) = match o.signature() {
        Some(sig) => (
            sig.d.clone(),
            sig.s.clone(),
            am.dkim_headers
                .iter()
                .find(|h| h.header.b == sig.b)
                .map(|h| b_prefix(h.value))
                .unwrap_or_default(),
        ),
        None => Default::default(),
    };
    DkimCheck {
        result,
        domain,
        selector,
        b,
        note,
    }
}

/// The first 8 characters of a DKIM-Signature's b= tag (RFC 6008 2: enough
/// to tell signatures apart), taken from the field as written.
fn b_prefix(value: &[u8]) -> String {
    for tag in value.split(|&c| c == b';') {
        let Some(eq) = tag.iter().position(|&c| c == b'=') else {
            continue;
        };
        let name = tag.get(..eq).unwrap_or_default().trim_ascii();
        if name == b"b" {
            return tag
                .get(eq + 1..)
                .unwrap_or_default()
                .iter()
                .filter(|c| c.is_ascii_alphanumeric() || **c == b'+' || **c == b'/')
                .take(8)
                .map(|&c| char::from(c))
                .collect();
        }
    }
    String::new()
}

/// The message with CRLF line ends (DKIM's form, RFC 6376 3.4): LF alone
/// becomes CRLF; borrowed when nothing changes.
pub(crate) fn to_crlf(message: &[u8]) -> Cow<'_, [u8]> {
    let bare_lf = message
        .iter()
        .enumerate()
        .any(|(i, &c)| c == b'\n' && (i == 0 || message.get(i - 1) != Some(&b'\r')));
    if !bare_lf {
        return Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / 32);
    let mut prev = 0u8;
    for &c in message {
        if c == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(c);
        prev = c;
    }
    Cow::Owned(out)
}

/// The CRLF message without the whitespace-only lines that end its body,
/// when any of them holds a space or tab (pure empty lines mail-auth
/// handles); `None` when there are none.
fn trim_trailing_space_lines(crlf: &[u8]) -> Option<Vec<u8>> {
    let body_start = crlf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let body = crlf.get(body_start..)?;
    // Walk back over lines made only of SP, HTAB (and the CRLFs).
    let mut keep = body.len();
    let mut saw_space = false;
    for (i, &c) in body.iter().enumerate().rev() {
        match c {
            b' ' | b'\t' => saw_space = true,
            b'\r' | b'\n' => {}
            _ => {
                // Keep through the end of this content line.
                let after = body.get(i..)?;
                keep = i + after
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .map_or(after.len(), |p| p + 2);
                break;
            }
        }
        if i == 0 {
            keep = 0;
        }
    }
    if !saw_space || keep >= body.len() {
        return None;
    }
    let mut out = crlf.get(..body_start + keep)?.to_vec();
    if keep > 0 && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    Some(out)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn crlf_conversion() {
        assert_eq!(&*to_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert!(matches!(to_crlf(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert_eq!(&*to_crlf(b"\n"), b"\r\n");
    }

    #[test]
    fn trailing_space_lines() {
        let m = b"A: 1\r\n\r\nbody\r\n \r\n\t\r\n\r\n";
        assert_eq!(trim_trailing_space_lines(m).unwrap(), b"A: 1\r\n\r\nbody\r\n");
        // Trailing spaces on the last content line are kept (relaxed
        // canonicalization removes them itself), and so is the line.
        let m = b"A: 1\r\n\r\nbody  \r\n \r\n";
        assert_eq!(trim_trailing_space_lines(m).unwrap(), b"A: 1\r\n\r\nbody  \r\n");
        assert_eq!(trim_trailing_space_lines(b"A: 1\r\n\r\nbody\r\n\r\n"), None);
        assert_eq!(trim_trailing_space_lines(b"A: 1\r\n\r\nbody\r\n"), None);
        assert_eq!(
            trim_trailing_space_lines(b"A: 1\r\n\r\n  \r\n").unwrap(),
            b"A: 1\r\n\r\n"
        );
    }

    #[test]
    fn b_prefix_from_the_raw_field() {
        let v = b" v=1; a=rsa-sha256; d=x.org; s=s;\r\n\tbh=abc=; b=AbC\r\n\tdEf+/Gh12345";
        assert_eq!(b_prefix(v), "AbCdEf+/");
        assert_eq!(b_prefix(b"v=1"), "");
    }

    #[test]
    fn is_domain_accepts_only_names_spf_can_check() {
        assert!(is_domain("mail.example.org"));
        assert!(is_domain("xn--bcher-kva.example"));
        assert!(!is_domain("localhost"));
        assert!(!is_domain("[192.0.2.1]"));
        assert!(!is_domain("a..b"));
        assert!(!is_domain(""));
    }

    #[test]
    fn verdicts_follow_the_policy() {
        let spf = |mf: Outcome, helo: Outcome| SpfResults {
            mail_from: SpfCheck {
                result: mf,
                identity: "a@x.org".into(),
                domain: "x.org".into(),
                note: None,
            },
            helo: SpfCheck {
                result: helo,
                identity: "h.x.org".into(),
                domain: "h.x.org".into(),
                note: None,
            },
        };
        let off = Policy::default();
        let on = Policy {
            dmarc_reject: true,
            spf_reject: SpfReject::Fail,
        };
        assert_eq!(spf(Outcome::Fail, Outcome::Pass).verdict(&off), Verdict::Accept);
        assert_eq!(
            spf(Outcome::Fail, Outcome::Pass).verdict(&on),
            Verdict::Reject(Rejection::Spf {
                identity: "a@x.org".into(),
                domain: "x.org".into()
            })
        );
        assert!(matches!(
            spf(Outcome::Pass, Outcome::Fail).verdict(&on),
            Verdict::Reject(Rejection::Spf { .. })
        ));
        for o in [
            Outcome::SoftFail,
            Outcome::TempError,
            Outcome::PermError,
            Outcome::None,
            Outcome::Neutral,
        ] {
            assert_eq!(spf(o, o).verdict(&on), Verdict::Accept, "{o:?}");
        }
        let dmarc = |result, policy, testing| AuthResults {
            spf: spf(Outcome::None, Outcome::None),
            dkim: Vec::new(),
            dmarc: DmarcCheck {
                result,
                from_domain: "x.org".into(),
                policy,
                testing,
            },
        };
        let reject = Some(DmarcPolicy::Reject);
        assert_eq!(
            dmarc(Outcome::Fail, reject, false).verdict(&on),
            Verdict::Reject(Rejection::Dmarc {
                domain: "x.org".into()
            })
        );
        assert_eq!(dmarc(Outcome::Fail, reject, false).verdict(&off), Verdict::Accept);
        assert_eq!(dmarc(Outcome::Fail, reject, true).verdict(&on), Verdict::Accept);
        assert_eq!(
            dmarc(Outcome::Fail, Some(DmarcPolicy::Quarantine), false).verdict(&on),
            Verdict::Accept
        );
        assert_eq!(
            dmarc(Outcome::TempError, reject, false).verdict(&on),
            Verdict::Accept
        );
        assert_eq!(dmarc(Outcome::Pass, reject, false).verdict(&on), Verdict::Accept);
    }
}
