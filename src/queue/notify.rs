//! Delivery status notifications (RFC 3464) queued back to the sender:
//! failures, the one delay warning, and success notices (RFC 3461 NOTIFY).
//! A notice goes through the same spool door as any message, with the null
//! sender so that it can never itself be bounced.

use crate::clock;
use crate::config::Config;
use crate::deliver::outcome::Outcome;
use crate::dsn::{self, Action, RecipientReport, Report, ReturnContent};
use crate::mailauth::Signers;
use crate::maillog;
use crate::pipeline;
use crate::smtp::notify::Notify;
use crate::spool::{BodyType, DsnRet, Envelope, QueueId, Recipient, Spool, SpoolError};

/// Whether the recipient's NOTIFY asks for this kind of notice. Without
/// NOTIFY, failures and delays are reported and successes are not (RFC 3461 4.1).
pub(super) fn wants(r: &Recipient, kind: Action) -> bool {
    let n = Notify::or_default(r.notify);
    match kind {
        Action::Failed => n.failure(),
        Action::Delayed => n.delay(),
        Action::Delivered | Action::Relayed | Action::Expanded => n.success(),
    }
}

/// One line of a report: a recipient and what happened to it.
pub(super) struct Line<'a> {
    pub(super) rcpt: &'a Recipient,
    pub(super) action: Action,
    pub(super) outcome: &'a Outcome,
    pub(super) relay: Option<&'a str>,
}

/// Build and queue one report for `lines` to the envelope's sender.
/// Returns the notice's queue id, or None when nothing was owed.
pub(super) fn send(
    cfg: &Config,
    spool: &Spool,
    signers: &Signers,
    env: &Envelope,
    lines: &[Line<'_>],
    will_retry_until: Option<u64>,
) -> Result<Option<QueueId>, SpoolError> {
    if lines.is_empty() {
        return Ok(None);
    }
    let to = if env.sender.is_empty() {
        // Never bounce a bounce: log it, or hand it to postmaster if asked,
        // unless it already was for postmaster.
        let for_postmaster = env
            .recipients
            .iter()
            .all(|r| r.addr.to_lowercase().starts_with("postmaster@"));
        if !cfg.queue.double_bounce_to_postmaster || for_postmaster {
            maillog::notice_dropped(&env.id);
            return Ok(None);
        }
        format!("postmaster@{}", cfg.hostname)
    } else {
        env.sender.clone()
    };
    let original = spool.read_message(env).unwrap_or_default();
    report(cfg, spool, signers, env, lines, will_retry_until, &to, &original).map(Some)
}

/// A message refused for good by the daemon's stages at its pickup from the
/// maildrop (a non-SMTP milter's reject): it was never queued, so the bounce
/// to its sender quotes `original` and names every recipient. None when no
/// notice is owed (the null sender, NOTIFY=NEVER).
pub(super) fn refused_at_pickup(
    cfg: &Config,
    spool: &Spool,
    signers: &Signers,
    env: &Envelope,
    outcome: &Outcome,
    original: &[u8],
) -> Result<Option<QueueId>, SpoolError> {
    let lines: Vec<Line<'_>> = env
        .recipients
        .iter()
        .filter(|r| wants(r, Action::Failed))
        .map(|rcpt| Line {
            rcpt,
            action: Action::Failed,
            outcome,
            relay: None,
        })
        .collect();
    if lines.is_empty() {
        return Ok(None);
    }
    if env.sender.is_empty() {
        maillog::notice_dropped(&env.id);
        return Ok(None);
    }
    report(cfg, spool, signers, env, &lines, None, &env.sender, original).map(Some)
}

/// Build the report for `lines` (the message `original` returned as the
/// sender asked) and queue it to `to`.
#[allow(clippy::too_many_arguments)]
fn report(
    cfg: &Config,
    spool: &Spool,
    signers: &Signers,
    env: &Envelope,
    lines: &[Line<'_>],
    will_retry_until: Option<u64>,
    to: &str,
    original: &[u8],
) -> Result<QueueId, SpoolError> {
    let now = clock::now();
    let ret = match (lines.first().map(|l| l.action), env.ret) {
        // RFC 8689 5: a REQUIRETLS message is returned as if RET=HDRS.
        _ if env.requiretls => ReturnContent::Headers,
        (Some(Action::Failed), Some(DsnRet::Hdrs)) => ReturnContent::Headers,
        (Some(Action::Failed), _) => ReturnContent::Full,
        _ => ReturnContent::Headers,
    };
    let recipients = lines
        .iter()
        .map(|l| RecipientReport {
            final_recipient: l.rcpt.addr.clone(),
            original_recipient: l.rcpt.orcpt.clone(),
            action: l.action,
            status: l.outcome.status(),
            remote_mta: l.relay.map(|r| format!("dns; {r}")),
            diagnostic: Some(l.outcome.diagnostic()),
            last_attempt: Some(now),
            will_retry_until: if l.action == Action::Delayed {
                will_retry_until
            } else {
                None
            },
        })
        .collect();
    let report = Report {
        hostname: &cfg.hostname,
        queue_id: env.id.as_str(),
        envid: env.envid.as_deref(),
        arrival: env.created,
        sender: &env.sender,
        recipients,
        return_content: ret,
        original,
        max_return_size: cfg.session.max_message_size / 2,
    };
    let body = dsn::build(&report);
    // RFC 8689 5: the notice about a REQUIRETLS message carries its header
    // and so travels with REQUIRETLS too.
    enqueue_notice(spool, signers, to, &body, env.requiretls)
}

/// Queue a locally generated message from the null sender to `to`, DKIM-signed
/// when its From: domain (the host name's, or a parent's) has a key. A notice
/// that cannot be signed goes unsigned, with a warning: a bounce the sender
/// never gets is worse than an unsigned one, which receivers judge by the
/// null sender's SPF (the HELO name) instead.
fn enqueue_notice(
    spool: &Spool,
    signers: &Signers,
    to: &str,
    body: &[u8],
    requiretls: bool,
) -> Result<QueueId, SpoolError> {
    let mut incoming = spool.begin()?;
    let id = incoming.id().clone();
    match pipeline::auth::sign_generated(signers, &id, body) {
        Ok(Some(fields)) => incoming.append(fields.as_bytes())?,
        Ok(None) => {}
        Err(e) => maillog::dkim_sign_failed(&id, &format!("{e}; the notice goes unsigned")),
    }
    incoming.append(body)?;
    let mut env = Envelope::new(id.clone(), String::new(), clock::now());
    env.protocol = "local".to_owned();
    env.body = if body.is_ascii() {
        BodyType::SevenBit
    } else {
        BodyType::EightBitMime
    };
    env.smtputf8 = !to.is_ascii();
    env.requiretls = requiretls;
    env.size = incoming.bytes_written();
    env.recipients = vec![Recipient::new(to.to_owned())];
    incoming.commit(&env)?;
    spool.log_queued(&env);
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::client::Reply;
    use crate::deliver::outcome::{self, Stage};
    use std::path::Path;

    fn rcpt(addr: &str, notify: Option<&str>) -> Recipient {
        let mut r = Recipient::new(addr.to_owned());
        r.notify = notify.and_then(Notify::parse);
        r
    }

    #[test]
    fn notify_chooses_the_notices() {
        let all = [
            Action::Failed,
            Action::Delayed,
            Action::Delivered,
            Action::Relayed,
            Action::Expanded,
        ];
        let asked = |n: Option<&str>| -> Vec<Action> {
            let r = rcpt("a@x.test", n);
            all.iter().copied().filter(|a| wants(&r, *a)).collect()
        };
        // RFC 3461 4.1: without NOTIFY, failures and delays only.
        assert_eq!(asked(None), [Action::Failed, Action::Delayed]);
        assert_eq!(asked(Some("NEVER")), []);
        assert_eq!(
            asked(Some("success,DELAY")),
            [
                Action::Delayed,
                Action::Delivered,
                Action::Relayed,
                Action::Expanded
            ]
        );
        assert_eq!(asked(Some("FAILURE")), [Action::Failed]);
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        cfg: Config,
        spool: Spool,
        env: Envelope,
    }

    /// A queued message from `sender` to two recipients, in a temp spool.
    fn fixture(sender: &str, extra: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!("hostname = mx.test\nmax_message_size = 1000000\n{extra}");
        let cfg = Config::parse(&text, Path::new("test.conf")).expect("config");
        let spool = Spool::open(&dir.path().join("spool")).expect("spool");
        let mut inc = spool.begin().expect("begin");
        let id = inc.id().clone();
        inc.append(b"Subject: the original\n\nthe original body\n")
            .expect("append");
        let mut env = Envelope::new(id, sender.to_owned(), 1_700_000_000);
        env.recipients = vec![rcpt("bob@far.test", None), rcpt("carol@far.test", None)];
        env.size = inc.bytes_written();
        inc.commit(&env).expect("commit");
        Fixture {
            _dir: dir,
            cfg,
            spool,
            env,
        }
    }

    /// The notice queued as `id`: its envelope and its text.
    fn notice(f: &Fixture, id: &QueueId) -> (Envelope, String) {
        let env = f.spool.load(id).expect("notice queued");
        let text = std::fs::read_to_string(f.spool.message_path(id)).expect("notice text");
        (env, text)
    }

    fn line<'a>(
        rcpt: &'a Recipient,
        action: Action,
        outcome: &'a Outcome,
        relay: Option<&'a str>,
    ) -> Line<'a> {
        Line {
            rcpt,
            action,
            outcome,
            relay,
        }
    }

    fn refused() -> Outcome {
        outcome::reply(
            Stage::Rcpt,
            &Reply {
                code: 550,
                lines: vec!["5.1.1 no such user".to_owned()],
            },
        )
    }

    #[test]
    fn a_bounce_goes_to_the_sender_from_the_null_sender_with_the_original() {
        let f = fixture("alice@example.org", "");
        let failed = refused();
        let lines = [line(
            &f.env.recipients[0],
            Action::Failed,
            &failed,
            Some("mx.far.test"),
        )];
        let id = send(&f.cfg, &f.spool, &Signers::default(), &f.env, &lines, None)
            .expect("send")
            .expect("queued");
        let (env, text) = notice(&f, &id);
        assert_eq!(env.sender, "");
        assert_eq!(env.recipients.len(), 1);
        assert_eq!(env.recipients[0].addr, "alice@example.org");
        assert_eq!(env.protocol, "local");
        for want in [
            "Final-Recipient: rfc822; bob@far.test",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; mx.far.test",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user",
            "Reporting-MTA: dns; mx.test",
            "the original body",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        // Only the recipient reported on.
        assert!(!text.contains("carol@far.test"), "{text}");
        assert!(!text.contains("Will-Retry-Until"), "{text}");
    }

    #[test]
    fn ret_hdrs_returns_only_the_headers() {
        let mut f = fixture("alice@example.org", "");
        f.env.ret = Some(DsnRet::Hdrs);
        let failed = outcome::command_failed("command died with status 1".to_owned());
        let lines = [line(&f.env.recipients[1], Action::Failed, &failed, None)];
        let id = send(&f.cfg, &f.spool, &Signers::default(), &f.env, &lines, None)
            .expect("send")
            .expect("queued");
        let (_, text) = notice(&f, &id);
        assert!(text.contains("Subject: the original"), "{text}");
        assert!(!text.contains("the original body"), "{text}");
        assert!(
            text.contains("Diagnostic-Code: x-local; command died with status 1"),
            "{text}"
        );
        assert!(!text.contains("Remote-MTA"), "{text}");
    }

    #[test]
    fn a_requiretls_message_is_returned_headers_only_with_requiretls() {
        // RFC 8689 5: as if RET=HDRS (RET=FULL disregarded), and the notice
        // is itself sent with REQUIRETLS.
        let mut f = fixture("alice@example.org", "");
        f.env.ret = Some(DsnRet::Full);
        f.env.requiretls = true;
        let failed = outcome::requiretls_failed(&outcome::requiretls_not_offered("mx.far.test"));
        let lines = [line(&f.env.recipients[0], Action::Failed, &failed, None)];
        let id = send(&f.cfg, &f.spool, &Signers::default(), &f.env, &lines, None)
            .expect("send")
            .expect("queued");
        let (env, text) = notice(&f, &id);
        assert!(env.requiretls, "the notice travels with REQUIRETLS");
        assert!(text.contains("Subject: the original"), "{text}");
        assert!(!text.contains("the original body"), "{text}");
        assert!(text.contains("Status: 5.7.10"), "{text}");
        // Without REQUIRETLS, RET=FULL returns the body as before.
        f.env.requiretls = false;
        let id = send(&f.cfg, &f.spool, &Signers::default(), &f.env, &lines, None)
            .expect("send")
            .expect("queued");
        let (env, text) = notice(&f, &id);
        assert!(!env.requiretls);
        assert!(text.contains("the original body"), "{text}");
    }

    #[test]
    fn a_delay_notice_says_until_when() {
        let f = fixture("alice@example.org", "");
        let later = outcome::Outcome::from_record("4.4.1 connect: Connection refused");
        let lines = [line(&f.env.recipients[0], Action::Delayed, &later, None)];
        let id = send(
            &f.cfg,
            &f.spool,
            &Signers::default(),
            &f.env,
            &lines,
            Some(1_700_432_000),
        )
        .expect("send")
        .expect("queued");
        let (_, text) = notice(&f, &id);
        assert!(text.contains("Action: delayed"), "{text}");
        assert!(text.contains("Status: 4.4.1"), "{text}");
        assert!(
            text.contains(&format!("Will-Retry-Until: {}", clock::rfc5322(1_700_432_000))),
            "{text}"
        );
        // A delay notice returns the headers only, whatever RET said.
        assert!(!text.contains("the original body"), "{text}");
    }

    #[test]
    fn nothing_owed_nothing_queued() {
        let f = fixture("alice@example.org", "");
        assert_eq!(
            send(&f.cfg, &f.spool, &Signers::default(), &f.env, &[], None).expect("send"),
            None
        );
        assert_eq!(f.spool.list().expect("list").len(), 1);
    }

    #[test]
    fn a_bounce_is_never_bounced_unless_postmaster_asked_for_it() {
        let failed = refused();
        // From <>: dropped.
        let f = fixture("", "");
        let lines = [line(&f.env.recipients[0], Action::Failed, &failed, None)];
        assert_eq!(
            send(&f.cfg, &f.spool, &Signers::default(), &f.env, &lines, None).expect("send"),
            None
        );
        assert_eq!(f.spool.list().expect("list").len(), 1);
        // double_bounce_to_postmaster: to postmaster here.
        let f = fixture("", "double_bounce_to_postmaster = yes");
        let lines = [line(&f.env.recipients[0], Action::Failed, &failed, None)];
        let id = send(&f.cfg, &f.spool, &Signers::default(), &f.env, &lines, None)
            .expect("send")
            .expect("queued");
        assert_eq!(notice(&f, &id).0.recipients[0].addr, "postmaster@mx.test");
        // ...but not when the bounce was already for a postmaster.
        let mut f = fixture("", "double_bounce_to_postmaster = yes");
        f.env.recipients = vec![rcpt("Postmaster@far.test", None)];
        let lines = [line(&f.env.recipients[0], Action::Failed, &failed, None)];
        assert_eq!(
            send(&f.cfg, &f.spool, &Signers::default(), &f.env, &lines, None).expect("send"),
            None
        );
    }

    #[test]
    fn wants_follows_notify() {
        let mut r = Recipient::new("a@b.example".to_owned());
        // RFC 3461 4.1: no NOTIFY means failures and delays, not successes.
        assert!(wants(&r, Action::Failed));
        assert!(wants(&r, Action::Delayed));
        assert!(!wants(&r, Action::Delivered));
        r.notify = Notify::parse("SUCCESS");
        assert!(wants(&r, Action::Delivered) && wants(&r, Action::Relayed) && wants(&r, Action::Expanded));
        assert!(!wants(&r, Action::Failed) && !wants(&r, Action::Delayed));
        r.notify = Notify::parse("FAILURE,DELAY");
        assert!(wants(&r, Action::Failed) && wants(&r, Action::Delayed) && !wants(&r, Action::Delivered));
        r.notify = Some(Notify::NEVER);
        for a in [Action::Failed, Action::Delayed, Action::Delivered] {
            assert!(!wants(&r, a), "{a:?}");
        }
    }
}
