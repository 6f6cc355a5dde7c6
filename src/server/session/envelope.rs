//! The envelope stages of a session: EHLO/HELO, MAIL, RCPT, and the
//! questions about recipients (VRFY, EXPN).
//!
//! MAIL and RCPT are each split into a check (every reason to refuse, in
//! the order the client would expect to hear them) and a proceed that
//! records what was accepted (OpenSMTPD's smtp_check_*/smtp_proceed_*).
//! Outside checks at these stages (a milter's MAIL and RCPT, a policy
//! service at RCPT) belong between the two: after tern's own refusals,
//! before anything is recorded.

use super::{Session, Transaction, MIN_FREE_PERCENT};
use crate::config::Config;
use crate::mailauth::Verdict;
use crate::maillog;
use crate::pipeline;
use crate::server::auth;
use crate::server::policy::{self, Refusal};
use crate::smtp::address::{ForwardPath, Mailbox, ReversePath};
use crate::smtp::command::{Body, MailParams, RcptParams};
use crate::smtp::reply::{self, Reply};

impl Session<'_> {
    /// RFC 5321 4.1.1.1: EHLO/HELO also reset any transaction.
    pub(super) fn ehlo(&mut self, name: String, extended: bool) -> Reply {
        self.tx = None;
        self.esmtp = extended;
        let r = if extended {
            let mut exts = vec![
                "PIPELINING".to_owned(),
                format!("SIZE {}", self.cfg.session.max_message_size),
                "8BITMIME".to_owned(),
            ];
            // RFC 3207 4.2: not offered again once TLS is up.
            if self.ctx.tls.is_some() && self.tls.is_none() {
                exts.push("STARTTLS".to_owned());
            }
            // RFC 4954 and RFC 6409: AUTH only inside TLS.
            if self.auth_offered() {
                exts.push(format!("AUTH {}", auth::MECHANISMS));
            }
            // RFC 8689 4: REQUIRETLS only on a TLS session.
            if self.requiretls_offered() {
                exts.push("REQUIRETLS".to_owned());
            }
            exts.extend(
                ["ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN", "CHUNKING"]
                    .iter()
                    .map(|e| (*e).to_owned()),
            );
            // RFC 9422: the limits this session applies (BINARYMIME is not
            // offered: the spool keeps messages with LF line ends, and the
            // local mailboxes and most next hops could not carry binary).
            exts.push(format!(
                "LIMITS RCPTMAX={} MAILMAX={}",
                self.cfg.session.max_recipients, self.cfg.session.max_transactions
            ));
            exts.push("HELP".to_owned());
            reply::ehlo(&self.cfg.hostname, &name, &exts)
        } else {
            reply::helo(&self.cfg.hostname)
        };
        // Stage hook (HELO): a milter or policy service may refuse the name.
        if let Some(refusal) = self.filters_helo(&name, extended) {
            return refusal;
        }
        self.helo = Some(name);
        r
    }

    /// RFC 8689 4: REQUIRETLS is offered on TLS sessions, when enabled.
    fn requiretls_offered(&self) -> bool {
        self.tls.is_some() && self.cfg.session.requiretls
    }

    pub(super) fn mail(&mut self, from: ReversePath, params: MailParams) -> Reply {
        // RFC 9422 MAILMAX: every MAIL counts, accepted or not (as Exim counts).
        self.mails += 1;
        if self.mails > self.cfg.session.max_transactions {
            return reply::too_many_transactions();
        }
        if let Err(r) = self.check_mail(&from, &params) {
            return r;
        }
        // Stage hook (MAIL): policy services, then milters (filters.rs).
        if let Some(r) = self.filters_mail(&from, &params) {
            return r;
        }
        self.tx = Some(Transaction::new(from, params));
        reply::sender_ok()
    }

    /// Every reason to refuse MAIL, in order.
    fn check_mail(&self, from: &ReversePath, params: &MailParams) -> Result<(), Reply> {
        if self.helo.is_none() {
            return Err(reply::need_helo());
        }
        if self.tx.is_some() {
            return Err(reply::nested_mail());
        }
        // RFC 6409 4.3 and RFC 8314: submission needs TLS, then AUTH.
        if self.service.is_submission() {
            if self.tls.is_none() {
                return Err(reply::tls_required());
            }
            if self.user.is_none() {
                return Err(reply::auth_required());
            }
        }
        // An authenticated user sends only as an address it owns (the issue's
        // policy; Postfix calls it reject_sender_login_mismatch).
        if let (Some(user), ReversePath::Mailbox(m)) = (&self.user, from) {
            if !self.ctx.auth.may_send_as(self.cfg, user, m) {
                return Err(reply::sender_not_owned(&m.to_string()));
            }
        }
        // ESMTP parameters are only valid after EHLO (RFC 5321 4.1.1.2), and
        // only those tern advertises: AUTH= comes with the AUTH extension.
        let plain = *params == MailParams::default();
        if !plain && !self.esmtp {
            return Err(reply::unknown_parameter());
        }
        // RFC 4954 5: AUTH= is valid only where AUTH is offered; its value is
        // not trusted (tern records who authenticated on this session itself).
        if params.auth.is_some() && !self.auth_offered() {
            return Err(reply::unknown_parameter());
        }
        // RFC 8689 4: REQUIRETLS where it is offered; on a session
        // without TLS (where it is not) it is refused as the RFC says.
        if params.requiretls && self.tls.is_none() && self.cfg.session.requiretls {
            return Err(reply::requiretls_needs_tls());
        }
        if params.requiretls && !self.requiretls_offered() {
            return Err(reply::unknown_parameter());
        }
        if params.body == Some(Body::BinaryMime) {
            return Err(reply::body_unsupported());
        }
        // RFC 6531 3.4: UTF-8 addresses only with SMTPUTF8 declared.
        if !params.smtputf8 && !from.is_ascii() {
            return Err(reply::need_smtputf8());
        }
        let declared = params.size.unwrap_or(0);
        // RFC 1870 6.1: refuse a declared size over the limit at MAIL time.
        if declared > self.cfg.session.max_message_size {
            return Err(reply::size_exceeded());
        }
        if !self.ctx.spool.has_room(declared, MIN_FREE_PERCENT) {
            return Err(reply::no_space());
        }
        Ok(())
    }

    pub(super) fn rcpt(&mut self, to: ForwardPath, params: RcptParams) -> Reply {
        if let Err(r) = self.check_rcpt(&to, &params) {
            return r;
        }
        // A mailbox named again is answered as before and recorded once,
        // with the DSN parameters of its first RCPT (as Postfix's cleanup
        // drops duplicate recipients): one transaction, one copy.
        let mailbox = self.mailbox_of(&to);
        if let Some(tx) = self.tx.as_mut() {
            if let Some(logged) = tx.mailboxes.get_mut(&mailbox) {
                tx.accepted += 1;
                if !std::mem::replace(logged, true) {
                    maillog::duplicate_recipient(
                        self.peer,
                        &tx.from.to_string(),
                        &to.to_string(),
                        &self.proto(),
                        self.helo.as_deref(),
                    );
                }
                return reply::recipient_ok();
            }
        }
        if let Err(refusal) = self.ctx.policy.check_recipient(self.cfg, self.client(), &to) {
            let r = self.refused_recipient(&refusal);
            self.filters_rcpt_refused(&to, &params, &r);
            return r;
        }
        if let Err(r) = self.check_spf() {
            return r;
        }
        // Stage hook (RCPT): policy services, then milters (filters.rs).
        if let Some(r) = self.filters_rcpt(&to, &params) {
            return r;
        }
        let Some(tx) = self.tx.as_mut() else {
            return reply::need_mail();
        };
        tx.rcpts.push((to, params));
        tx.mailboxes.insert(mailbox, false);
        tx.accepted += 1;
        reply::recipient_ok()
    }

    /// SPF (RFC 7208) of mail from outside, with `auth_check`: evaluated once
    /// per transaction, when its first recipient is accepted (a transaction
    /// that names no acceptable recipient costs no DNS), for the HELO name
    /// and the sender (RFC 7208 2.3, 2.4). With `spf_reject = fail` a `fail`
    /// refuses this and every later recipient (550 5.7.23); otherwise the
    /// result waits for Authentication-Results at the end of the data. A DNS
    /// failure or time-out is `temperror`, which never refuses.
    fn check_spf(&mut self) -> Result<(), Reply> {
        let trusted = self.trusted();
        let Some(checker) = self.ctx.mailauth.checks(self.cfg, trusted) else {
            return Ok(());
        };
        let (Some(ip), Some(tx)) = (self.peer.ip, self.tx.as_mut()) else {
            return Ok(());
        };
        let spf = tx.spf.get_or_insert_with(|| {
            let sender = match &tx.from {
                ReversePath::Null => None,
                ReversePath::Mailbox(m) => Some(m.to_string()),
            };
            let helo = self.helo.as_deref().unwrap_or_default();
            checker.spf(ip.to_canonical(), helo, sender.as_deref())
        });
        match spf.verdict(&pipeline::auth::policy(self.cfg)) {
            Verdict::Accept => Ok(()),
            Verdict::Reject(r) => Err(pipeline::auth::rejection_reply(&r)),
        }
    }

    /// The mailbox a forward path names (`Mailbox::identity`); bare
    /// `<postmaster>` is postmaster at the first local domain, as the
    /// envelope records it.
    fn mailbox_of(&self, to: &ForwardPath) -> String {
        match to {
            ForwardPath::Postmaster => {
                let domain = self.cfg.local.domains.first().unwrap_or(&self.cfg.hostname);
                format!("postmaster@{}", domain.to_lowercase())
            }
            ForwardPath::Mailbox(m) => m.identity(policy::is_local(self.cfg, m)),
        }
    }

    /// The protocol's reasons to refuse RCPT, before policy is asked.
    fn check_rcpt(&self, to: &ForwardPath, params: &RcptParams) -> Result<(), Reply> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(reply::need_mail());
        };
        // RFC 3461: NOTIFY and ORCPT belong to the DSN extension, EHLO only.
        if (params.notify.is_some() || params.orcpt.is_some()) && !self.esmtp {
            return Err(reply::unknown_parameter());
        }
        if !tx.params.smtputf8 && !to.is_ascii() {
            return Err(reply::need_smtputf8());
        }
        // RFC 5321 4.5.3.1.8: at least 100 must be accepted; excess gets 452
        // so the client sends the rest in another transaction.
        if tx.accepted >= self.cfg.session.max_recipients {
            return Err(reply::too_many_recipients());
        }
        Ok(())
    }

    /// The reply to a refused recipient (RCPT or VRFY). An unknown user
    /// counts toward the directory-harvest limits: past `harvest_threshold`
    /// each is answered slowly, and at `harvest_limit` the session ends.
    fn refused_recipient(&mut self, refusal: &Refusal) -> Reply {
        if refusal.is_unknown_user() {
            self.unknown_rcpts += 1;
            if self.unknown_rcpts >= self.cfg.session.harvest_limit {
                maillog::harvest(self.peer, self.unknown_rcpts);
                return reply::harvest_limit();
            }
            if self.unknown_rcpts > self.cfg.session.harvest_threshold {
                let _ = self.io.flush();
                std::thread::sleep(self.cfg.session.harvest_delay);
            }
        }
        refusal.reply()
    }

    /// RFC 5321 3.5.3. With `vrfy = no` (the default) every address gets 252
    /// and nothing is disclosed. With `vrfy = yes` it answers as Postfix does:
    /// what RCPT would, so 252 2.0.0 for an address mail is accepted for, and
    /// the RCPT refusal (550 5.1.1, 554 5.7.1) otherwise, an unknown user
    /// counted toward the harvest limits just as at RCPT.
    pub(super) fn vrfy(&mut self, arg: &str) -> Reply {
        if !self.cfg.session.vrfy {
            return reply::vrfy_cannot();
        }
        let Some(target) = vrfy_target(arg, self.cfg) else {
            return reply::bad_recipient_syntax();
        };
        match self.ctx.policy.check_recipient(self.cfg, self.client(), &target) {
            Ok(()) => reply::vrfy_ok(&target.to_string()),
            Err(refusal) => self.refused_recipient(&refusal),
        }
    }

    pub(super) fn expn(&mut self, name: &str) -> Reply {
        if !self.cfg.session.expn {
            return reply::expn_disabled();
        }
        match self.ctx.policy.expand(name.trim_matches(['<', '>'])) {
            Some(list) => reply::expn_list(&list),
            None => reply::expn_unknown(),
        }
    }
}

/// The address a VRFY string names (RFC 5321 3.5.3: a user name or a
/// mailbox): `<addr>`, `Full Name <addr>`, `addr`, or a bare user name, which
/// means that user at our first local domain (Postfix appends $myorigin).
fn vrfy_target(arg: &str, cfg: &Config) -> Option<ForwardPath> {
    let arg = arg.trim();
    let inner = match arg.strip_suffix('>') {
        Some(head) => head.rfind('<').and_then(|i| head.get(i + 1..))?,
        None => arg,
    };
    let mailbox = if inner.contains('@') {
        Mailbox::parse(inner)
    } else {
        let domain = cfg.local.domains.first().unwrap_or(&cfg.hostname);
        Mailbox::parse(&format!("{inner}@{domain}"))
    };
    mailbox.ok().map(ForwardPath::Mailbox)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn vrfy_strings() {
        let cfg = Config::parse("local_domains = example.org other.test", Path::new("t")).unwrap();
        for (arg, want) in [
            ("alice", Some("alice@example.org")),
            (" alice ", Some("alice@example.org")),
            ("<alice@other.test>", Some("alice@other.test")),
            ("Alice Smith <alice@other.test>", Some("alice@other.test")),
            ("alice@remote.test", Some("alice@remote.test")),
            ("<>", None),
            ("a b", None),
            ("alice@", None),
            ("<alice@other.test", None),
        ] {
            let got = vrfy_target(arg, &cfg).map(|p| p.to_string());
            assert_eq!(got.as_deref(), want, "{arg:?}");
        }
        let none = Config::parse("hostname = mx.test\nlocal_domains =", Path::new("t")).unwrap();
        assert_eq!(
            vrfy_target("bob", &none).map(|p| p.to_string()).as_deref(),
            Some("bob@mx.test")
        );
    }
}
