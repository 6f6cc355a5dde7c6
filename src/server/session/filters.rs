//! The session's outside checks (issue 19): its milters, one conversation per
//! milter for the whole session, and its policy services, each asked at the
//! stages it is configured for. Both come after tern's own checks have
//! accepted a command (policy services first, as Postfix's access policy runs
//! before its milters); a refusal replaces tern's reply.
//!
//! The other modules of the session only call the hooks here, one per stage:
//! `filters_connect` (before the greeting), `filters_helo`, `filters_mail`,
//! `filters_rcpt` (and `filters_rcpt_refused` for recipients tern refused),
//! `filters_data` (once the queue id is known, before 354),
//! `filters_end_of_data` (the policy services' END-OF-MESSAGE; the milters'
//! end of message is the pipeline's stage 3, run with
//! [`Filters::run`]), `filters_unknown`, `filters_gate` (commands with no
//! event of their own) and `filters_abort` (the end of a transaction).
//!
//! What Postfix does, and so tern: a refusal at connection time answers 554
//! instead of 220 and 503 to everything but QUIT (RFC 5321 3.1); a temporary
//! one keeps the 220 and refuses MAIL and what follows; MAIL refused ends the
//! transaction for the milters; a refused RCPT refuses that recipient only; a
//! milter's DISCARD at MAIL or RCPT accepts the message and throws it away; a
//! milter that cannot be reached or answers late costs its time-out, then
//! `milter_default_action` holds for the rest of the session. Time-outs block
//! only this session's thread: every session has its own connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Session;
use crate::maillog;
use crate::metrics;
use crate::milter::{chain, Chain, ConnectInfo, Macros, Verdict};
use crate::pipeline::milters::{base_macros, next_hop_macros, Run};
use crate::pipeline::Draft;
use crate::policy_service::{PolicyAction, PolicyClient, PolicyRequest, ProtocolState};
use crate::smtp::address::{ForwardPath, ReversePath};
use crate::smtp::command::{self, Command, MailParams, RcptParams};
use crate::smtp::reply::{self, Reply};
use crate::smtp::xtext;
use crate::spool::QueueId;

/// Sessions started, for the policy requests' `instance`.
static SESSIONS: AtomicU64 = AtomicU64::new(0);

/// Who refused a command: for the log line (`milter-reject` or `reject`) and
/// the metrics' reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum By {
    Milter,
    Policy,
}

/// A refusal made here, until the command loop logs it.
#[derive(Debug, Clone)]
pub(super) struct Refused {
    pub(super) by: By,
    /// The stage's name when it is not the command's verb (END-OF-MESSAGE).
    pub(super) stage: Option<&'static str>,
    pub(super) id: Option<QueueId>,
    /// The (first) recipient, for a refusal at the end of the message.
    pub(super) to: Option<String>,
}

/// What became of the current transaction at the filters' hands.
#[derive(Debug, Clone, Default)]
pub(super) struct TxState {
    /// Accept the message and throw it away (a milter's DISCARD at MAIL or
    /// RCPT, a policy service's DISCARD), with the reason for the log.
    pub(super) discard: Option<(By, String)>,
    /// Queue it on hold (a policy service's HOLD), with the reason.
    pub(super) hold: Option<String>,
    /// Header fields a policy service asked to PREPEND, in order.
    pub(super) prepend: Vec<String>,
    /// The milters were told of this transaction: an abort is owed at its end.
    open: bool,
}

/// The session's milters and policy services, and what they decided so far.
pub(super) struct Filters {
    chain: Chain,
    macros: Macros,
    policy: Vec<PolicyClient>,
    /// A permanent refusal at connection time: 503 to every command but QUIT.
    denied: Option<Reply>,
    /// A temporary refusal at connection time: MAIL and what follows get it.
    deferred: Option<Reply>,
    /// HOLD or DISCARD answered at CONNECT or HELO: every transaction's.
    session_tx: TxState,
    pub(super) tx: TxState,
    refused: Option<Refused>,
    instance: u64,
    messages: u64,
}

impl Filters {
    /// The filters of a session with `cfg`; none for mail that goes into the
    /// maildrop (`sendmail -bs` runs as its user: the milters for that mail
    /// are `non_smtp_milters`, at pickup).
    pub(super) fn new(cfg: &crate::config::Config, maildrop: bool) -> Filters {
        let (chain, policy) = if maildrop {
            (Chain::default(), Vec::new())
        } else {
            (
                Chain::new(cfg.milter.smtp.iter().cloned()),
                cfg.policy
                    .services
                    .iter()
                    .cloned()
                    .map(PolicyClient::new)
                    .collect(),
            )
        };
        Filters {
            chain,
            macros: base_macros(cfg),
            policy,
            denied: None,
            deferred: None,
            session_tx: TxState::default(),
            tx: TxState::default(),
            refused: None,
            instance: SESSIONS.fetch_add(1, Ordering::Relaxed),
            messages: 0,
        }
    }

    pub(super) fn any(&self) -> bool {
        !self.chain.is_empty() || !self.policy.is_empty()
    }

    fn wants(&self, state: ProtocolState) -> bool {
        self.policy.iter().any(|p| asks_at(p, state))
    }

    /// The milters for the pipeline's stage 3, unless there are none or the
    /// message is being discarded anyway.
    pub(super) fn run(&mut self) -> Option<Run<'_>> {
        if self.chain.is_empty() || self.tx.discard.is_some() {
            return None;
        }
        Some(Run::new(&mut self.chain, &self.macros))
    }

    /// The refusal made here since the last call, if the reply being sent is one.
    pub(super) fn take_refused(&mut self) -> Option<Refused> {
        self.refused.take()
    }

    /// The client is gone: SMFIC_QUIT to the milters, close the services.
    pub(super) fn quit(&mut self) {
        self.chain.quit();
        for p in &mut self.policy {
            p.close();
        }
    }
}

impl Session<'_> {
    /// Before the greeting: the policy services' CONNECT, the milters'
    /// connect. Some(reply) replaces the 220.
    pub(super) fn filters_connect(&mut self) -> Option<Reply> {
        if !self.filters.any() {
            return None;
        }
        let m = &mut self.filters.macros;
        m.client_addr = self.peer.ip.map(|ip| ip.to_string());
        m.client_port = self.peer.port.map(|p| p.to_string());
        m.client_name = Some(self.peer.name.clone());
        m.client_ptr = Some(self.peer.name.clone());
        m.client_resolve = Some(if self.peer.name == "unknown" { "FAIL" } else { "OK" }.to_owned());
        m.daemon_addr = self.peer.server.map(|a| a.ip().to_string());
        m.daemon_port = self.peer.server.map(|a| a.port().to_string());
        let name = self.peer.to_string();
        if let Err(r) = self.ask_policy(ProtocolState::Connect, &name, "Client host") {
            return self.refused_connection(r, By::Policy);
        }
        let info = ConnectInfo {
            hostname: self.peer.name.clone(),
            addr: self
                .peer
                .ip
                .map(|ip| SocketAddr::new(ip, self.peer.port.unwrap_or(0))),
        };
        let v = self.filters.chain.connect(&info, &self.filters.macros);
        match chain::reply(&v) {
            Some(r) => self.refused_connection(r, By::Milter),
            None => None,
        }
    }

    /// A refusal at connection time: logged here (no command carries it).
    fn refused_connection(&mut self, r: Reply, by: By) -> Option<Reply> {
        self.log_refusal(by, "CONNECT", &r, None, None, None);
        if r.close {
            return Some(reply::unavailable_greeting(&self.cfg.hostname));
        }
        if r.code >= 500 {
            self.filters.denied = Some(reply::access_denied(&self.peer.to_string()));
            return Some(reply::not_accepting(&self.cfg.hostname));
        }
        self.filters.deferred = Some(r);
        None
    }

    /// Commands with no milter event of their own: after a refusal at
    /// connection time, everything but QUIT gets 503; AUTH, STARTTLS, VRFY
    /// and EXPN get a failed or refusing milter's verdict (Postfix's
    /// milter_other_event).
    pub(super) fn filters_gate(&mut self, cmd: &Command) -> Option<Reply> {
        if matches!(cmd, Command::Quit) {
            return None;
        }
        if let Some(r) = &self.filters.denied {
            return Some(r.clone());
        }
        if matches!(
            cmd,
            Command::Auth(_) | Command::StartTls | Command::Vrfy(_) | Command::Expn(_)
        ) {
            if let Some(r) = &self.filters.deferred {
                return Some(r.clone());
            }
            let r = chain::reply(&self.filters.chain.other())?;
            self.mark(By::Milter, None);
            return Some(r);
        }
        None
    }

    /// HELO or EHLO that tern accepted (which ended any transaction).
    pub(super) fn filters_helo(&mut self, name: &str, extended: bool) -> Option<Reply> {
        self.filters_abort();
        if !self.filters.any() || self.filters.denied.is_some() || self.filters.deferred.is_some() {
            return None;
        }
        let state = if extended {
            ProtocolState::Ehlo
        } else {
            ProtocolState::Helo
        };
        // The name is not recorded yet (a refusal leaves the session without one).
        if let Err(r) = self.ask_policy_with(state, name, "Helo command", |q| q.helo_name = name.to_owned()) {
            return Some(r);
        }
        self.sync_macros();
        let v = self.filters.chain.helo(name, &self.filters.macros);
        self.milter_refusal(&v)
    }

    /// MAIL that tern accepted: Some(reply) refuses it (no transaction).
    pub(super) fn filters_mail(&mut self, from: &ReversePath, params: &MailParams) -> Option<Reply> {
        if !self.filters.any() {
            return None;
        }
        if let Some(r) = &self.filters.deferred {
            return Some(r.clone());
        }
        self.filters.tx = self.filters.session_tx.clone();
        self.filters.messages += 1;
        let sender = from.to_string();
        if let Err(r) = self.ask_policy_with(ProtocolState::Mail, &sender, "Sender address", |q| {
            q.sender.clone_from(&sender);
            q.size = params.size.unwrap_or(0);
        }) {
            self.filters.tx = TxState::default();
            return Some(r);
        }
        if self.filters.chain.is_empty() {
            return None;
        }
        self.sync_macros();
        let (host, mailer) = next_hop_macros(self.cfg, &sender);
        let m = &mut self.filters.macros;
        m.queue_id = None;
        m.mail_addr = Some(sender);
        m.mail_host = host;
        m.mail_mailer = mailer;
        m.auth_author = params.auth.clone();
        (m.rcpt_addr, m.rcpt_host, m.rcpt_mailer) = (None, None, None);
        let args = mail_args(from, params);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = self.filters.chain.mail(&args, &self.filters.macros);
        self.filters.tx.open = true;
        if v == Verdict::Discard {
            self.filters.tx.discard = Some((By::Milter, "milter triggers DISCARD action".to_owned()));
            return None;
        }
        let refusal = self.milter_refusal(&v);
        if refusal.is_some() {
            self.filters_abort();
        }
        refusal
    }

    /// RCPT that tern accepted: Some(reply) refuses this recipient.
    pub(super) fn filters_rcpt(&mut self, to: &ForwardPath, params: &RcptParams) -> Option<Reply> {
        if !self.filters.any() {
            return None;
        }
        if let Some(r) = &self.filters.deferred {
            return Some(r.clone());
        }
        let rcpt = to.to_string();
        if let Err(r) = self.ask_policy_with(ProtocolState::Rcpt, &rcpt, "Recipient address", |q| {
            q.recipient.clone_from(&rcpt);
        }) {
            self.filters_rcpt_refused(to, params, &r);
            return Some(r);
        }
        if self.filters.chain.is_empty() || self.filters.tx.discard.is_some() {
            return None;
        }
        let (host, mailer) = next_hop_macros(self.cfg, &rcpt);
        let m = &mut self.filters.macros;
        (m.rcpt_addr, m.rcpt_host, m.rcpt_mailer) = (Some(rcpt), host, mailer);
        let args = rcpt_args(to, params);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = self.filters.chain.rcpt(&args, &self.filters.macros);
        if v == Verdict::Discard {
            self.filters.tx.discard = Some((By::Milter, "milter triggers DISCARD action".to_owned()));
            return None;
        }
        self.milter_refusal(&v)
    }

    /// A recipient refused (by tern or a policy service), shown to the
    /// milters that asked for those (SMFIP_RCPT_REJ) as Postfix shows it:
    /// `{rcpt_addr}` the reply's text, `{rcpt_host}` its enhanced code,
    /// `{rcpt_mailer}` "error". Their answers change nothing.
    pub(super) fn filters_rcpt_refused(&mut self, to: &ForwardPath, params: &RcptParams, r: &Reply) {
        if self.filters.chain.is_empty() || !self.filters.tx.open || self.filters.tx.discard.is_some() {
            return;
        }
        let mut m = self.filters.macros.clone();
        m.rcpt_addr = Some(r.lines.join(" "));
        m.rcpt_host = r.esc.map(|e| e.to_string());
        m.rcpt_mailer = Some("error".to_owned());
        let args = rcpt_args(to, params);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.filters.chain.rejected_rcpt(&args, &m);
    }

    /// DATA (or the first BDAT), once the message has its queue id: the
    /// policy services' DATA and the milters' DATA. Some(reply) refuses it
    /// and ends the transaction.
    pub(super) fn filters_data(&mut self, id: &QueueId) -> Option<Reply> {
        if !self.filters.any() {
            return None;
        }
        if let Some(r) = &self.filters.deferred {
            return Some(r.clone());
        }
        self.filters.macros.queue_id = Some(id.to_string());
        if let Err(r) = self.ask_policy(ProtocolState::Data, "DATA", "Data command") {
            return Some(r);
        }
        if self.filters.chain.is_empty() || self.filters.tx.discard.is_some() {
            return None;
        }
        let v = self.filters.chain.data(&self.filters.macros);
        if v == Verdict::Discard {
            self.filters.tx.discard = Some((By::Milter, "milter triggers DISCARD action".to_owned()));
            return None;
        }
        self.milter_refusal(&v)
    }

    /// The whole message is in (`size` octets): the policy services'
    /// END-OF-MESSAGE, before the milters see the content.
    pub(super) fn filters_end_of_data(&mut self, id: &QueueId, draft: &Draft) -> Option<Reply> {
        if !self.filters.wants(ProtocolState::EndOfMessage) {
            return None;
        }
        let mut head = Vec::new();
        draft.header.write(b"", &mut head);
        let size = head.len() as u64 + draft.body.len();
        let r = self
            .ask_policy_with(
                ProtocolState::EndOfMessage,
                "END-OF-MESSAGE",
                "End-of-data",
                |q| {
                    // The transaction is over by now: its envelope is the draft's.
                    q.size = size;
                    q.sender.clone_from(&draft.env.sender);
                    q.recipient_count = u32::try_from(draft.env.recipients.len()).unwrap_or(u32::MAX);
                    if let [only] = draft.env.recipients.as_slice() {
                        q.recipient.clone_from(&only.addr);
                    }
                },
            )
            .err()?;
        if let Some(m) = self.filters.refused.as_mut() {
            m.stage = Some("END-OF-MESSAGE");
            m.id = Some(id.clone());
            m.to = draft.env.recipients.first().map(|r| r.addr.clone());
        }
        Some(r)
    }

    /// A command tern does not know: a milter's refusal replaces tern's 500.
    pub(super) fn filters_unknown(&mut self, line: &[u8]) -> Option<Reply> {
        if self.filters.chain.is_empty() || self.filters.denied.is_some() {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let v = self.filters.chain.unknown(&line, &self.filters.macros);
        self.milter_refusal(&v)
    }

    /// The transaction ended (RSET, HELO/EHLO, a refused MAIL or DATA, the
    /// end of a message): SMFIC_ABORT to the milters that were told of it.
    pub(super) fn filters_abort(&mut self) {
        if std::mem::take(&mut self.filters.tx).open {
            self.filters.chain.abort();
        }
        let m = &mut self.filters.macros;
        m.queue_id = None;
        (m.mail_addr, m.mail_host, m.mail_mailer, m.auth_author) = (None, None, None, None);
        (m.rcpt_addr, m.rcpt_host, m.rcpt_mailer) = (None, None, None);
    }

    /// The end of a message refused by the milters' stage 3 (`id` known;
    /// `to` its first recipient, for the log).
    pub(super) fn filters_refused_message(&mut self, id: &QueueId, to: Option<String>) {
        self.filters.refused = Some(Refused {
            by: By::Milter,
            stage: Some("END-OF-MESSAGE"),
            id: Some(id.clone()),
            to,
        });
    }

    /// Log a refusal made here as Postfix does (`milter-reject` for a
    /// milter's, a plain `reject` for a policy service's, which is an access
    /// restriction there) and count it by who made it.
    pub(super) fn log_refusal(
        &self,
        by: By,
        stage: &str,
        r: &Reply,
        id: Option<&QueueId>,
        from: Option<&str>,
        to: Option<&str>,
    ) {
        let proto = self.proto();
        match by {
            By::Milter => {
                maillog::filter_action(
                    id.map(|i| i as &dyn std::fmt::Display),
                    "milter-reject",
                    stage,
                    self.peer,
                    r,
                    from,
                    to,
                    &proto,
                    self.helo.as_deref(),
                );
                metrics::filter_rejected(metrics::Reject::Milter);
            }
            By::Policy => {
                maillog::reject(self.peer, stage, r, from, to, &proto, self.helo.as_deref());
                metrics::filter_rejected(metrics::Reject::PolicyService);
            }
        }
    }

    /// A milter action other than a refusal (discard, hold), logged with the
    /// message's queue id.
    pub(super) fn log_filter_action(
        &self,
        id: &QueueId,
        action: &str,
        text: &str,
        from: &str,
        to: Option<&str>,
    ) {
        maillog::filter_action(
            Some(id),
            action,
            "END-OF-MESSAGE",
            self.peer,
            &text,
            Some(from),
            to,
            &self.proto(),
            self.helo.as_deref(),
        );
    }

    // ---- Helpers ----------------------------------------------------------

    fn mark(&mut self, by: By, stage: Option<&'static str>) {
        self.filters.refused = Some(Refused {
            by,
            stage,
            id: None,
            to: None,
        });
    }

    /// The reply a milter's verdict means, marked as a milter's.
    fn milter_refusal(&mut self, v: &Verdict) -> Option<Reply> {
        let r = chain::reply(v)?;
        self.mark(By::Milter, None);
        Some(r)
    }

    /// What the milters may learn since the last event: TLS and AUTH.
    fn sync_macros(&mut self) {
        let m = &mut self.filters.macros;
        if let Some(t) = &self.tls {
            m.tls_version = Some(t.version.clone());
            m.cipher = Some(t.cipher.clone());
            m.cipher_bits = cipher_bits(&t.cipher).map(|b| b.to_string());
        }
        m.auth_type = self.sasl_method.map(str::to_owned);
        m.auth_authen.clone_from(&self.user);
    }

    fn ask_policy(&mut self, state: ProtocolState, name: &str, class: &str) -> Result<(), Reply> {
        self.ask_policy_with(state, name, class, |_| {})
    }

    /// Ask every policy service configured for `state`, in order, as
    /// Postfix's restriction list would (SMTPD_POLICY_README, access(5)): OK
    /// ends the list, DUNNO goes on, a refusal ends it; DEFER_IF_PERMIT
    /// refuses at the end unless something refused for good first;
    /// DEFER_IF_REJECT turns a later permanent refusal into its 450. `name`
    /// and `class` make Postfix's reply text (`<b@x>: Recipient address
    /// rejected: ...`).
    fn ask_policy_with(
        &mut self,
        state: ProtocolState,
        name: &str,
        class: &str,
        fill: impl FnOnce(&mut PolicyRequest),
    ) -> Result<(), Reply> {
        if !self.filters.wants(state) {
            return Ok(());
        }
        let mut req = self.policy_request(state);
        fill(&mut req);
        let mut if_permit: Option<Reply> = None;
        let mut if_reject: Option<Reply> = None;
        let mut clients = std::mem::take(&mut self.filters.policy);
        let mut verdict = Ok(());
        for client in clients.iter_mut().filter(|c| asks_at(c, state)) {
            let action = client.query(&req);
            let refusal = |a: &PolicyAction| {
                a.refusal()
                    .map(|p| reply::from_filter(p.code, Some(p.esc), vec![p.describe(name, class)]))
            };
            match &action {
                PolicyAction::Ok => break,
                PolicyAction::Dunno => {}
                PolicyAction::Reject(_) | PolicyAction::Defer(_) | PolicyAction::Code { .. } => {
                    if let Some(r) = refusal(&action) {
                        verdict = Err(match (&if_reject, r.code >= 500) {
                            (Some(d), true) => d.clone(),
                            _ => r,
                        });
                        break;
                    }
                }
                PolicyAction::DeferIfPermit(_) => {
                    if if_permit.is_none() {
                        if_permit = refusal(&action);
                    }
                }
                PolicyAction::DeferIfReject(_) => {
                    if if_reject.is_none() {
                        if_reject = refusal(&action);
                    }
                }
                PolicyAction::Prepend(h) => self.policy_prepend(state, h),
                PolicyAction::Hold(t) => {
                    let why = t
                        .clone()
                        .unwrap_or_else(|| format!("{class} triggers HOLD action"));
                    self.policy_fate(state, |tx| tx.hold = Some(why.clone()));
                }
                PolicyAction::Discard(t) => {
                    let why = t
                        .clone()
                        .unwrap_or_else(|| format!("{class} triggers DISCARD action"));
                    self.policy_fate(state, |tx| tx.discard = Some((By::Policy, why.clone())));
                }
                PolicyAction::Warn(t) | PolicyAction::Info(t) => {
                    log::info!(
                        target: "mail/smtpd",
                        "NOQUEUE: warn: {state} from {}: <{name}>: {class} {t}; proto={}",
                        self.peer,
                        self.proto()
                    );
                }
                PolicyAction::Filter(_)
                | PolicyAction::Redirect(_)
                | PolicyAction::Bcc(_)
                | PolicyAction::Other(_) => {
                    log::warn!(
                        "policy service {}: action {action:?} is not supported by tern; ignored (DUNNO)",
                        client.spec().endpoint
                    );
                }
            }
        }
        self.filters.policy = clients;
        if verdict.is_ok() {
            if let Some(r) = if_permit {
                verdict = Err(r);
            }
        }
        if verdict.is_err() {
            self.mark(By::Policy, None);
        }
        verdict
    }

    /// PREPEND: a header field for this transaction's message (from MAIL on;
    /// earlier there is no message to put it in, as in Postfix).
    fn policy_prepend(&mut self, state: ProtocolState, header: &str) {
        match state {
            ProtocolState::Connect | ProtocolState::Ehlo | ProtocolState::Helo => log::warn!(
                "policy service asked to PREPEND {header:?} at {state}, before any message; ignored"
            ),
            _ => self.filters.tx.prepend.push(header.to_owned()),
        }
    }

    /// HOLD or DISCARD: for the transaction, or (at CONNECT and HELO) for
    /// every transaction of the session.
    fn policy_fate(&mut self, state: ProtocolState, set: impl Fn(&mut TxState)) {
        if matches!(
            state,
            ProtocolState::Connect | ProtocolState::Ehlo | ProtocolState::Helo
        ) {
            set(&mut self.filters.session_tx);
        }
        set(&mut self.filters.tx);
    }

    /// A policy request with what the session knows (Postfix's attributes).
    fn policy_request(&self, state: ProtocolState) -> PolicyRequest {
        let mut q = PolicyRequest::new(state);
        q.protocol_name = if self.esmtp { "ESMTP" } else { "SMTP" }.to_owned();
        q.client_address = self.peer.ip.map(|ip| ip.to_string()).unwrap_or_default();
        q.client_port = self.peer.port.map(|p| p.to_string()).unwrap_or_default();
        q.client_name.clone_from(&self.peer.name);
        q.reverse_client_name.clone_from(&self.peer.name);
        if let Some(a) = self.peer.server {
            q.server_address = a.ip().to_string();
            q.server_port = a.port().to_string();
        }
        q.helo_name = self.helo.clone().unwrap_or_default();
        if let Some(tx) = &self.tx {
            q.sender = tx.from.to_string();
            q.size = tx.params.size.unwrap_or(0);
            if matches!(state, ProtocolState::Data | ProtocolState::EndOfMessage) {
                q.recipient_count = u32::try_from(tx.rcpts.len()).unwrap_or(u32::MAX);
                if let [(only, _)] = tx.rcpts.as_slice() {
                    q.recipient = only.to_string();
                }
            }
        }
        q.queue_id = self.filters.macros.queue_id.clone().unwrap_or_default();
        q.instance = format!("{:x}.{:x}", self.filters.instance, self.filters.messages);
        if let Some((method, user)) = self.sasl() {
            q.sasl_method = method.to_owned();
            q.sasl_username = user.to_owned();
        }
        if let Some(t) = &self.tls {
            q.encryption_protocol.clone_from(&t.version);
            q.encryption_cipher.clone_from(&t.cipher);
            q.encryption_keysize = cipher_bits(&t.cipher).unwrap_or(0);
        }
        q.mail_version = format!("tern {}", env!("CARGO_PKG_VERSION"));
        q
    }
}

/// Whether `client` is asked at `state`: `helo` and `ehlo` both mean the
/// HELO/EHLO stage, as Postfix's smtpd_helo_restrictions apply to both.
fn asks_at(client: &PolicyClient, state: ProtocolState) -> bool {
    let stages = &client.spec().stages;
    match state {
        ProtocolState::Helo | ProtocolState::Ehlo => {
            stages.contains(&ProtocolState::Helo) || stages.contains(&ProtocolState::Ehlo)
        }
        _ => stages.contains(&state),
    }
}

/// MAIL's arguments as milters get them: `<sender>`, then the ESMTP
/// parameters tern accepted, in their wire form.
fn mail_args(from: &ReversePath, p: &MailParams) -> Vec<String> {
    let mut args = vec![format!("<{from}>")];
    if let Some(s) = p.size {
        args.push(format!("SIZE={s}"));
    }
    if let Some(b) = p.body {
        args.push(
            match b {
                command::Body::SevenBit => "BODY=7BIT",
                command::Body::EightBitMime => "BODY=8BITMIME",
                command::Body::BinaryMime => "BODY=BINARYMIME",
            }
            .to_owned(),
        );
    }
    if p.smtputf8 {
        args.push("SMTPUTF8".to_owned());
    }
    if let Some(r) = p.ret {
        args.push(
            match r {
                command::Ret::Full => "RET=FULL",
                command::Ret::Hdrs => "RET=HDRS",
            }
            .to_owned(),
        );
    }
    if let Some(e) = &p.envid {
        args.push(format!("ENVID={}", xtext::encode(e)));
    }
    if let Some(a) = &p.auth {
        args.push(format!("AUTH={}", xtext::encode(a)));
    }
    if p.requiretls {
        args.push("REQUIRETLS".to_owned());
    }
    args
}

/// RCPT's arguments: `<recipient>`, NOTIFY=, ORCPT=.
fn rcpt_args(to: &ForwardPath, p: &RcptParams) -> Vec<String> {
    let mut args = vec![format!("<{to}>")];
    if let Some(n) = p.notify {
        args.push(format!("NOTIFY={n}"));
    }
    if let Some(o) = &p.orcpt {
        args.push(format!("ORCPT={}", xtext::encode(o)));
    }
    args
}

/// The symmetric key size of a TLS cipher suite, from its name.
fn cipher_bits(suite: &str) -> Option<u32> {
    let s = suite.to_ascii_uppercase();
    if s.contains("AES_256") || s.contains("CHACHA20") {
        Some(256)
    } else if s.contains("AES_128") {
        Some(128)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
