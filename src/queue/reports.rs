//! The daily SMTP TLS reports (RFC 8460): once a UTC day is over, the
//! results recorded during it (`tlspolicy::tlsrpt::Store`) are aggregated
//! per policy domain, and each domain that publishes `_smtp._tls` with a
//! `rua=mailto:` gets its report by mail, through tern's own queue, from
//! `tlsrpt_from`. Days that could not be sent stay for the next run.
//!
//! The runner's "tlsrpt" thread runs this after 00:00 UTC (plus a delay
//! that differs per host, as RFC 8460 4.1 suggests so that receivers are
//! not hit all at once), a few minutes after start-up for days finished
//! while the daemon was down, and when `ternctl tlsrpt send` asks.

use std::time::Duration;

use crate::clock;
use crate::config::Config;
use crate::mailauth::Signers;
use crate::maillog;
use crate::pipeline;
use crate::spool::{BodyType, Envelope, QueueId, Recipient, Spool};
use crate::tlspolicy::outbound::Outbound;
use crate::tlspolicy::tlsrpt::{self, Report, Reporter};

/// How long after start-up the first run happens.
pub(super) const FIRST_RUN: Duration = Duration::from_secs(300);

/// Send the reports of every finished day; returns the queued reports.
/// Each report is DKIM-signed with `signers` (RFC 8460 5.3 asks for it) when
/// the domain of `tlsrpt_from` has a key.
pub(super) fn send_due(
    cfg: &Config,
    spool: &Spool,
    outbound: &Outbound,
    signers: &Signers,
    now: u64,
) -> Vec<QueueId> {
    let mut queued = Vec::new();
    let Some(from) = cfg.tlsrpt.from.as_deref() else {
        return queued;
    };
    let Some(store) = outbound.reports() else {
        return queued;
    };
    let days = match store.finished_days(now) {
        Ok(d) => d,
        Err(e) => {
            maillog::tlsrpt_failed("(all)", &e);
            return queued;
        }
    };
    let who = Reporter {
        organization: cfg
            .tlsrpt
            .organization
            .clone()
            .unwrap_or_else(|| cfg.hostname.clone()),
        contact: from.to_owned(),
        submitter: cfg
            .tlsrpt
            .submitter
            .clone()
            .unwrap_or_else(|| cfg.hostname.clone()),
    };
    for day in days {
        let Some(start) = tlsrpt::day_start_of(&day) else {
            continue;
        };
        let events = match store.load(&day) {
            Ok(e) => e,
            Err(e) => {
                maillog::tlsrpt_failed(&day, &e);
                continue;
            }
        };
        let mut ok = true;
        for (domain, policies) in tlsrpt::aggregate(&events) {
            // RFC 8460 3: the reporting policy of the policy domain.
            let to = match outbound.resolver().txt(&format!("_smtp._tls.{domain}")) {
                Ok(t) => tlsrpt::select_record(&t.value)
                    .map(|r| r.mailto())
                    .unwrap_or_default(),
                Err(e) => {
                    // Unknown for now: leave the day for the next run.
                    maillog::tlsrpt_failed(&day, &format!("_smtp._tls.{domain}: {e}"));
                    ok = false;
                    continue;
                }
            };
            if to.is_empty() {
                maillog::tlsrpt_no_record(&day, &domain);
                continue;
            }
            let report = Report::new(&who, &domain, start, policies);
            match enqueue(spool, signers, &report, &who, &domain, from, &to, now) {
                Ok(id) => {
                    maillog::tlsrpt_queued(&day, &domain, &to.join(", "), &id);
                    queued.push(id);
                }
                Err(e) => {
                    maillog::tlsrpt_failed(&day, &e);
                    ok = false;
                }
            }
        }
        // A day half sent is sent again whole: its reports keep their
        // report-id, so a receiver can tell the copies apart.
        if ok {
            if let Err(e) = store.remove(&day) {
                maillog::tlsrpt_failed(&day, &e);
            }
        }
    }
    queued
}

/// Queue one report mail from `from` to `to`.
#[allow(clippy::too_many_arguments)]
fn enqueue(
    spool: &Spool,
    signers: &Signers,
    report: &Report,
    who: &Reporter,
    domain: &str,
    from: &str,
    to: &[String],
    now: u64,
) -> Result<QueueId, String> {
    let mut incoming = spool.begin().map_err(|e| e.to_string())?;
    let id = incoming.id().clone();
    let mail =
        tlsrpt::report_mail(report, who, domain, from, to, now, id.as_str()).map_err(|e| e.to_string())?;
    // Unsigned only when no key is configured (said in the log): a signing
    // failure leaves the day for the next run.
    match pipeline::auth::sign_generated(signers, &id, &mail).map_err(|e| e.to_string())? {
        Some(fields) => incoming.append(fields.as_bytes()).map_err(|e| e.to_string())?,
        None => log::warn!(
            "{id}: TLS report unsigned: no dkim_sign key for the domain of {from} (RFC 8460 5.3 asks for DKIM)"
        ),
    }
    incoming.append(&mail).map_err(|e| e.to_string())?;
    let mut env = Envelope::new(id.clone(), from.to_owned(), clock::now());
    env.protocol = "local".to_owned();
    // base64 inside, ASCII headers.
    env.body = BodyType::SevenBit;
    env.size = incoming.bytes_written();
    env.recipients = to.iter().map(|a| Recipient::new(a.clone())).collect();
    incoming.commit(&env).map_err(|e| e.to_string())?;
    spool.log_queued(&env);
    Ok(id)
}

/// Seconds from `now` to the next run: after 00:00 UTC, by `jitter`
/// seconds (under an hour).
pub(super) fn until_next_run(now: u64, jitter: u64) -> Duration {
    let next = tlsrpt::day_start(now) + 86_400 + jitter % 3600;
    Duration::from_secs(next.saturating_sub(now).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_after_midnight_utc() {
        let midnight = 1_733_270_400; // 2024-12-04T00:00:00Z
        assert_eq!(until_next_run(midnight - 10, 0), Duration::from_secs(10));
        assert_eq!(until_next_run(midnight, 120), Duration::from_secs(86_400 + 120));
        assert_eq!(until_next_run(midnight + 5, 3605), Duration::from_secs(86_400));
    }
}
