//! Stages 4 and 5 of the message path (issue 20): the authentication checks
//! of mail from outside, and the DKIM signature of mail from inside; and the
//! daemon's mail-authentication state they work with ([`MailAuth`]: the
//! signing keys and the checker, made at start and again on SIGHUP).
//!
//! Who gets what is the receiver's decision ([`Stages`]), since only it
//! knows who sent the message:
//! - a client that may relay (it authenticated, or it is in
//!   `relay_networks`), and the `sendmail` program at pickup, are inside:
//!   their mail is signed when its From: domain has a key, and not checked;
//! - any other client is outside: Authentication-Results fields claiming
//!   our host name are removed from its mail (RFC 8601 5), and with
//!   `auth_check` its mail is checked (SPF at the first accepted RCPT, by
//!   the session; DKIM and DMARC here) and gets one Authentication-Results
//!   field above the fields it came with (under our Received:). It is
//!   never signed: mail merely relayed through (to an alias that forwards,
//!   say) keeps whatever signatures it came with.
//!
//! The `mailauth` module does the work; this one applies it to a draft.

use std::io::{self, Read};
use std::sync::Arc;

use super::{head_bytes, Context, Draft};
use crate::config::{Config, ConfigError};
use crate::mailauth::{self, Checker, Key, Policy, Rejection, SignError, Signers, SpfResults, Verdict};
use crate::maillog;
use crate::message::Header;
use crate::smtp::reply::{self, Reply};
use crate::spool::QueueId;

/// The daemon's signing keys and checker; sessions and the queue runner
/// share one, and a reload makes the next.
pub struct MailAuth {
    pub signers: Signers,
    /// None: no resolver for the checks (logged at start); mail is then
    /// accepted without them.
    pub checker: Option<Arc<Checker>>,
}

impl MailAuth {
    /// Nothing signs, nothing checks: the `sendmail` program's own process
    /// (the daemon does both at pickup), and tests.
    pub fn none() -> MailAuth {
        MailAuth {
            signers: Signers::default(),
            checker: None,
        }
    }

    /// Every `dkim_sign` key of `cfg`, each of which must load: at start,
    /// for `ternd -n` and `ternd -i`. The error names the line:
    /// `FILE:LINE: dkim_sign: KEYFILE: why`.
    pub fn load_keys(cfg: &Config) -> Result<Signers, ConfigError> {
        let mut signers = Signers::default();
        for (i, e) in cfg.mailauth.dkim_sign.iter().enumerate() {
            let key = Key::load(&e.key_file, e.kind).map_err(|err| cfg.error_at("dkim_sign", i, err))?;
            signers.add(&e.domain, &e.selector, key);
        }
        Ok(signers)
    }

    /// The daemon's at start: the keys [`MailAuth::load_keys`] read, and one
    /// checker for the daemon's life, with `dns_servers` and `dns_timeout`
    /// as delivery has them. It is made even with `auth_check = no`, so that
    /// a reload can turn the checks on.
    pub fn start(cfg: &Config, signers: Signers) -> MailAuth {
        MailAuth {
            signers,
            checker: new_checker(cfg),
        }
    }

    /// SIGHUP: the keys are read again. One that no longer loads (the file
    /// replaced by something that is not a usable key, or unreadable) is not
    /// replaced by the key it had: its domain's mail is refused with 451
    /// until it loads again, rather than signed with a key the domain may
    /// have withdrawn from DNS, or sent unsigned. The checker stays (and its
    /// cache), remade over the same resolver when `hostname` or
    /// `auth_timeout` changed: `dns_servers` and `dns_timeout` wait for a
    /// restart, as they do for delivery.
    pub fn reload(&self, cfg: &Config) -> MailAuth {
        let (signers, errors) = Signers::load_lenient(&cfg.mailauth.dkim_sign);
        for (i, e) in errors {
            let domain = cfg.mailauth.dkim_sign.get(i).map_or("", |e| e.domain.as_str());
            log::error!(
                "SIGHUP: {}; mail from {domain} is refused with 451 until the key loads",
                cfg.error_at("dkim_sign", i, e)
            );
        }
        let checker = match &self.checker {
            Some(c) if c.authserv_id() == cfg.hostname && c.deadline() == cfg.mailauth.timeout => {
                Some(Arc::clone(c))
            }
            Some(c) => Some(Arc::new(c.with(&cfg.hostname, cfg.mailauth.timeout))),
            None => new_checker(cfg),
        };
        MailAuth { signers, checker }
    }

    /// The checker for mail from a client (`trusted`: it may relay), when
    /// that mail is to be checked.
    pub fn checks(&self, cfg: &Config, trusted: bool) -> Option<&Checker> {
        if trusted || !cfg.mailauth.check {
            return None;
        }
        self.checker.as_deref()
    }
}

fn new_checker(cfg: &Config) -> Option<Arc<Checker>> {
    let made = Checker::new(
        &cfg.hostname,
        &cfg.remote.dns_servers,
        cfg.remote.dns_timeout,
        cfg.mailauth.timeout,
    );
    match made {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            if cfg.mailauth.check {
                log::error!("auth_check: no resolver for the checks ({e}); mail is accepted without them");
            }
            None
        }
    }
}

/// The administrator's policy on the results (`dmarc_reject`, `spf_reject`).
pub fn policy(cfg: &Config) -> Policy {
    Policy {
        dmarc_reject: cfg.mailauth.dmarc_reject,
        spf_reject: cfg.mailauth.spf_reject,
    }
}

/// The reply to an SPF or DMARC rejection.
pub fn rejection_reply(r: &Rejection) -> Reply {
    match r {
        Rejection::Spf { domain, .. } => reply::spf_failed(domain),
        Rejection::Dmarc { domain } => reply::dmarc_rejected(domain),
    }
}

/// What stages 4 and 5 do with one message.
#[derive(Clone, Copy, Default)]
pub struct Stages<'a> {
    /// From outside: Authentication-Results fields claiming our host name
    /// are removed (RFC 8601 5), checked or not.
    pub outside: bool,
    /// Stage 4: check with this checker, given the transaction's SPF results.
    pub check: Option<(&'a Checker, &'a SpfResults)>,
    /// Stage 5: sign with these keys.
    pub sign: Option<&'a Signers>,
}

impl<'a> Stages<'a> {
    /// Mail from an SMTP client: from inside (`trusted`) it is signed; from
    /// outside it is checked when the session made its SPF results.
    pub fn smtp(auth: &'a MailAuth, trusted: bool, spf: Option<&'a SpfResults>) -> Stages<'a> {
        if trusted {
            return Stages {
                sign: Some(&auth.signers),
                ..Stages::default()
            };
        }
        Stages {
            outside: true,
            check: auth.checker.as_deref().zip(spf),
            sign: None,
        }
    }

    /// Mail the `sendmail` program dropped, at pickup: from inside.
    pub fn local(auth: &'a MailAuth) -> Stages<'a> {
        Stages {
            sign: Some(&auth.signers),
            ..Stages::default()
        }
    }
}

/// Stage 4: remove forged results, check, add ours; a DMARC (or SPF)
/// rejection the policy asks for is the refusal.
pub(super) fn check(draft: &mut Draft, ctx: &Context<'_>) -> Result<(), Reply> {
    let results = match ctx.auth.check {
        Some((checker, spf)) => {
            // The message as received (forged fields included: a signature
            // may cover them), in the CRLF form DKIM hashes.
            let message = crlf_message(draft).map_err(|e| {
                log::error!("{}: reading the message to check it: {e}", draft.env.id);
                reply::local_error()
            })?;
            Some((checker.authserv_id(), checker.message(spf, &message)))
        }
        None => None,
    };
    if ctx.auth.outside {
        let me = ctx.cfg.hostname.as_str();
        let n = draft.header.remove_if(|f| {
            f.is("Authentication-Results") && mailauth::results::claims_authserv_id(f.raw_value(), me)
        });
        if n > 0 {
            log::info!(
                "{}: removed {n} Authentication-Results field(s) claiming {me}",
                draft.env.id
            );
        }
    }
    let Some((authserv_id, results)) = results else {
        return Ok(());
    };
    maillog::auth_results(&draft.env.id, &results.value(authserv_id));
    if let Verdict::Reject(r) = results.verdict(&policy(ctx.cfg)) {
        return Err(rejection_reply(&r));
    }
    // RFC 8601 5 (and 7.1): above every field the message came with, where
    // a reader trusts what we added; under our own Received: (the hop's
    // first trace field, RFC 5321 4.4), as Gmail and Postfix's milters do.
    let at = usize::from(draft.header.fields().next().is_some_and(|f| f.is("Received")));
    insert_fields(&mut draft.header, at, &results.field(authserv_id));
    Ok(())
}

/// Stage 5: the DKIM-Signature fields on top, over the final header and
/// body; a failure is a temporary refusal, never an unsigned message.
pub(super) fn sign(draft: &mut Draft, ctx: &Context<'_>) -> Result<(), Reply> {
    let Some(signers) = ctx.auth.sign.filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let head = head_bytes(&draft.header, &draft.body);
    let signed = draft
        .body
        .read_with(|body| signers.sign(head.as_slice().chain(body)))
        .map_err(SignError::Read)
        .and_then(|r| r);
    match signed {
        Ok(None) => Ok(()),
        Ok(Some(s)) => {
            insert_fields(&mut draft.header, 0, &s.fields);
            maillog::dkim_signed(&draft.env.id, &s.domain, &s.selectors);
            Ok(())
        }
        Err(e) => {
            maillog::dkim_sign_failed(&draft.env.id, &e);
            Err(reply::dkim_sign_failed())
        }
    }
}

/// A message tern writes itself (a delivery status notification, a TLS
/// report) is signed like mail from inside: the DKIM-Signature fields to put
/// on top of `message`, None when its From: domain has no key. `id` is its
/// queue id, for the log.
pub fn sign_generated(signers: &Signers, id: &QueueId, message: &[u8]) -> Result<Option<String>, SignError> {
    let signed = signers.sign(message)?;
    if let Some(s) = &signed {
        maillog::dkim_signed(id, &s.domain, &s.selectors);
    }
    Ok(signed.map(|s| s.fields))
}

/// The whole message in the CRLF form (what goes on the wire, what DKIM
/// hashes): the stored form has LF line ends.
fn crlf_message(draft: &mut Draft) -> io::Result<Vec<u8>> {
    let head = head_bytes(&draft.header, &draft.body);
    let len = usize::try_from(draft.body.len()).unwrap_or(0) + head.len();
    let mut out = Vec::with_capacity(len + len / 32);
    let mut prev = 0u8;
    let mut push = |piece: &[u8]| {
        for &c in piece {
            if c == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            out.push(c);
            prev = c;
        }
    };
    push(&head);
    draft.body.for_each_piece(|piece| {
        push(piece);
        Ok(())
    })?;
    Ok(out)
}

/// Put the fields of `text` (`Name: value`, folded, LF line ends: what
/// mailauth makes) in front of field `index`, in their order.
fn insert_fields(header: &mut Header, index: usize, text: &str) {
    let (fields, _) = Header::parse(text.as_bytes());
    for (i, f) in fields.fields().enumerate() {
        let value = String::from_utf8_lossy(f.raw_value());
        let value = value.strip_prefix(' ').unwrap_or(&value);
        // Our own names: never a BadName.
        let _ = header.insert(index + i, f.name(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::commit;
    use crate::pipeline::tests::draft;

    #[test]
    fn generated_fields_go_in_as_written() {
        let mut d = draft(b"Received: by x\nSubject: s\n\nbody\n");
        insert_fields(
            &mut d.header,
            0,
            "DKIM-Signature: v=1; a=ed25519-sha256;\n\tb=abc\nDKIM-Signature: v=1; d=x.org;\n\tb=def\n",
        );
        let mut out = Vec::new();
        commit(d, &mut out).unwrap();
        assert_eq!(
            out,
            b"DKIM-Signature: v=1; a=ed25519-sha256;\n\tb=abc\nDKIM-Signature: v=1; d=x.org;\n\tb=def\n\
              Received: by x\nSubject: s\n\nbody\n"
        );
    }

    #[test]
    fn the_checked_form_is_the_committed_one_in_crlf() {
        let mut d = draft(b"Subject: s\n\nline\n\nlast\n");
        d.header.insert(0, "Received", "by x\n\tfor y").unwrap();
        let crlf = crlf_message(&mut d).unwrap();
        let mut stored = Vec::new();
        commit(d, &mut stored).unwrap();
        assert_eq!(
            crlf,
            String::from_utf8(stored)
                .unwrap()
                .replace('\n', "\r\n")
                .into_bytes()
        );
    }
}
