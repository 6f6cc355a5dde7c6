//! Stage 3: the milters' end of message over a draft (issue 19).
//!
//! The session (or the pickup, for `non_smtp_milters`) has talked to its
//! milters through the envelope already; here each milter in turn is sent the
//! header fields (tern's own trace field on top hidden, as Postfix hides its
//! own), the end of the header, the body in pieces and the end of the message,
//! and what it asks for is applied to the draft before the next milter sees
//! it: header fields added, inserted, changed or deleted, the body replaced,
//! recipients added or removed, the sender changed. What is committed is the
//! message as the milters left it, and only then is 250 said.
//!
//! The verdict is the caller's to act on (refuse with its reply, discard, put
//! on hold): [`Run::result`] holds it after the stage.

use std::io;

use crate::config::Config;
use crate::message::Header;
use crate::milter::{
    self, chain, Chain, ConnectInfo, EnvelopeEdit, Macros, MessageOutcome, RcptEdit, Verdict,
};
use crate::smtp::notify::Notify;
use crate::smtp::reply::{self, Reply};
use crate::smtp::xtext;
use crate::spool::{DsnRet, Envelope, Recipient};

use super::{commit, finish, Body, Context, Draft, Origin, Store};

/// What the pickup's stages made of a message from the maildrop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Queue it.
    Queue,
    /// Queue it on hold, for this reason (a milter's quarantine).
    Hold(String),
    /// Throw it away (a milter's discard), for this reason.
    Discard(String),
    /// Refused for good: nobody can be told but the sender, by a bounce with
    /// this reply; `original` is the message as it reached the stages.
    /// `by_milter`: a milter refused it (logged `milter-reject`), not a later
    /// stage such as DKIM signing (logged `reject`).
    Refused {
        reply: Reply,
        original: Vec<u8>,
        by_milter: bool,
    },
    /// Refused for now: it stays in the maildrop for a later pickup.
    Later { reply: Reply, by_milter: bool },
}

/// Stage 3 and the rest of [`super::picked_up`] for a message from the
/// maildrop: the `non_smtp_milters` see its envelope as Postfix shows non-SMTP
/// mail, then [`finish`] runs every stage with them; what is left is written
/// into `out` with `env` as the milters left it, unless they refused,
/// discarded or quarantined it (the [`Fate`] says which).
pub(super) fn at_pickup(
    cfg: &Config,
    auth: super::Stages<'_>,
    mut draft: Draft,
    env: &mut Envelope,
    out: &mut dyn Store,
) -> io::Result<Fate> {
    let mut chain = Chain::new(cfg.milter.non_smtp.iter().cloned());
    let macros = local_macros(cfg, &draft.env);
    if let Some(fate) = local_envelope(&mut chain, &macros, &draft.env) {
        return Ok(match fate {
            Early::Refused(reply) => Fate::Refused {
                reply,
                original: original(draft)?,
                by_milter: true,
            },
            other => other.into(),
        });
    }
    let mut ctx = Context {
        cfg,
        origin: Origin::PickedUp,
        auth,
        milters: (!chain.is_empty()).then(|| Run::new(&mut chain, &macros)),
    };
    let finished = finish(&mut draft, &mut ctx);
    let run = ctx.milters.take();
    let quarantine = run.as_ref().and_then(|r| r.quarantine().map(str::to_owned));
    let discarded = run.as_ref().is_some_and(Run::discarded);
    let by_milter = run.as_ref().is_some_and(Run::refused);
    drop(run);
    chain.quit();
    if let Err(reply) = finished {
        return Ok(if reply.code >= 500 {
            Fate::Refused {
                reply,
                original: original(draft)?,
                by_milter,
            }
        } else {
            Fate::Later { reply, by_milter }
        });
    }
    if discarded {
        return Ok(Fate::Discard("milter triggers DISCARD action".to_owned()));
    }
    if let Some(q) = &quarantine {
        draft.env.hold_reason = Some(format!("milter quarantine: {q}"));
    }
    *env = commit(draft, out)?;
    Ok(match quarantine {
        Some(q) => Fate::Hold(q),
        None => Fate::Queue,
    })
}

/// The message as a bounce returns it.
fn original(draft: Draft) -> io::Result<Vec<u8>> {
    let body = draft.body.into_vec()?;
    Ok(draft.header.to_message(&body))
}

/// The macros every conversation starts with: `j`, `{daemon_name}`, `v`.
pub fn base_macros(cfg: &Config) -> Macros {
    Macros {
        j: Some(cfg.hostname.clone()),
        daemon_name: Some(
            cfg.milter
                .macro_daemon_name
                .clone()
                .unwrap_or_else(|| cfg.hostname.clone()),
        ),
        v: Some(
            cfg.milter
                .macro_v
                .clone()
                .unwrap_or_else(|| format!("tern {}", env!("CARGO_PKG_VERSION"))),
        ),
        ..Macros::default()
    }
}

/// `{mail_host}`/`{rcpt_host}` and `{mail_mailer}`/`{rcpt_mailer}` of an
/// address: where tern would send it and how, as Postfix fills them from its
/// resolver (`local` and our name for a local domain, `lmtp` or `smtp` and
/// the next hop otherwise; the null sender has neither).
pub fn next_hop_macros(cfg: &Config, addr: &str) -> (Option<String>, Option<String>) {
    let Some((_, domain)) = addr.rsplit_once('@') else {
        if addr.is_empty() {
            return (None, None);
        }
        return (Some(cfg.hostname.clone()), Some("local".to_owned()));
    };
    if cfg.local.is_local_domain(domain) {
        let mailer = if cfg.local.mailbox_transport.is_some() {
            "lmtp"
        } else {
            "local"
        };
        return (Some(cfg.hostname.clone()), Some(mailer.to_owned()));
    }
    if let Some(l) = cfg.remote.lmtp_route(domain) {
        return (Some(l.addr.to_string()), Some("lmtp".to_owned()));
    }
    let host = match cfg.remote.next_hop(domain) {
        Some(h) => h.host.clone(),
        None => domain.to_ascii_lowercase(),
    };
    (Some(host), Some("smtp".to_owned()))
}

/// The macros of mail from `sendmail` at pickup: Postfix shows non-SMTP mail
/// to milters as from `localhost` at 127.0.0.1.
pub(super) fn local_macros(cfg: &Config, env: &Envelope) -> Macros {
    let (mail_host, mail_mailer) = next_hop_macros(cfg, &env.sender);
    Macros {
        client_addr: Some("127.0.0.1".to_owned()),
        client_name: Some("localhost".to_owned()),
        client_ptr: Some("localhost".to_owned()),
        client_resolve: Some("OK".to_owned()),
        daemon_addr: Some("127.0.0.1".to_owned()),
        queue_id: Some(env.id.to_string()),
        mail_addr: Some(env.sender.clone()),
        mail_host,
        mail_mailer,
        ..base_macros(cfg)
    }
}

/// How the emulated envelope of a picked-up message ended early.
pub(super) enum Early {
    Refused(Reply),
    Later(Reply),
    Discard(String),
}

impl From<Early> for Fate {
    fn from(e: Early) -> Fate {
        match e {
            Early::Refused(reply) => Fate::Refused {
                reply,
                original: Vec::new(),
                by_milter: true,
            },
            Early::Later(reply) => Fate::Later {
                reply,
                by_milter: true,
            },
            Early::Discard(why) => Fate::Discard(why),
        }
    }
}

/// The envelope events of a picked-up message (Postfix's cleanup emulates
/// them the same way); None when the message goes on to its content.
pub(super) fn local_envelope(chain: &mut Chain, macros: &Macros, env: &Envelope) -> Option<Early> {
    if chain.is_empty() {
        return None;
    }
    let early = |v: Verdict| match v {
        Verdict::Continue | Verdict::Accept => None,
        Verdict::Discard => Some(Early::Discard("milter triggers DISCARD action".to_owned())),
        Verdict::Reject(_) => chain::reply(&v).map(Early::Refused),
        Verdict::Tempfail(_) | Verdict::Shutdown => chain::reply(&v).map(Early::Later),
    };
    let sender = format!("<{}>", env.sender);
    let mut m = macros.clone();
    let mut end = early(chain.connect(&ConnectInfo::local(), &m))
        .or_else(|| early(chain.helo("localhost", &m)))
        .or_else(|| early(chain.mail(&[&sender], &m)));
    for r in &env.recipients {
        if end.is_some() {
            break;
        }
        m.rcpt_addr = Some(r.addr.clone());
        (m.rcpt_host, m.rcpt_mailer) = (None, None);
        end = match chain.rcpt(&[&format!("<{}>", r.addr)], &m) {
            Verdict::Discard => early(Verdict::Discard),
            v if !v.is_go_on() => {
                log::warn!(
                    "{}: milter refused recipient <{}> of non-SMTP mail ({}): a milter may not;                      the message stays in the maildrop",
                    env.id,
                    r.addr,
                    chain::reply(&v).map(|r| r.to_string()).unwrap_or_default()
                );
                Some(Early::Later(reply::milter_misconfigured()))
            }
            _ => None,
        };
    }
    let end = end.or_else(|| early(chain.data(&m)));
    if end.is_some() {
        chain.abort();
        chain.quit();
    }
    end
}

/// The milters of one message, lent to [`super::finish`] by its caller.
pub struct Run<'a> {
    pub chain: &'a mut Chain,
    pub macros: &'a Macros,
    /// How many fields on top of the header are tern's own (its Received:),
    /// hidden from the milters.
    pub hidden: usize,
    /// What the milters came to; set by the stage when it ran.
    pub result: Option<MessageOutcome>,
}

impl<'a> Run<'a> {
    pub fn new(chain: &'a mut Chain, macros: &'a Macros) -> Run<'a> {
        Run {
            chain,
            macros,
            hidden: 1,
            result: None,
        }
    }

    /// The milters said to throw the message away (SMFIR_DISCARD, or every
    /// recipient deleted).
    pub fn discarded(&self) -> bool {
        self.result
            .as_ref()
            .is_some_and(|r| r.verdict == Verdict::Discard)
    }

    /// The milters refused the message (a reply was made from their verdict).
    pub fn refused(&self) -> bool {
        self.result
            .as_ref()
            .is_some_and(|r| chain::reply(&r.verdict).is_some())
    }

    /// The first quarantine reason, when the message is to be held.
    pub fn quarantine(&self) -> Option<&str> {
        self.result.as_ref().and_then(|r| r.quarantine.as_deref())
    }
}

/// The draft's body as the chain reads and replaces it.
struct Pieces<'b>(&'b mut Body);

impl chain::Body for Pieces<'_> {
    fn pieces(&mut self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        self.0.for_each_piece(f)
    }

    fn replace(&mut self, body: Vec<u8>) {
        *self.0 = Body::from_vec(body);
    }
}

/// Run the chain's end of message over `draft`; the refusal, if any. The
/// outcome is left in `run.result`.
pub(super) fn stage(draft: &mut Draft, run: &mut Run<'_>) -> Result<(), Reply> {
    if run.chain.is_empty() {
        return Ok(());
    }
    let mut head = Vec::with_capacity(4096);
    draft.header.write(b"", &mut head);
    let mut msg = milter::Message::parse(&head);
    msg.hide_first(run.hidden);
    let mut env = EnvelopeEdit {
        sender: draft.env.sender.clone(),
        sender_args: None,
        recipients: draft
            .env
            .recipients
            .iter()
            .map(|r| RcptEdit::new(&r.addr))
            .collect(),
    };
    let mut out =
        match run
            .chain
            .message_streamed(&mut msg, &mut env, &mut Pieces(&mut draft.body), run.macros)
        {
            Ok(out) => out,
            Err(e) => {
                log::error!("{}: reading the message for the milters: {e}", draft.env.id);
                return Err(reply::local_error());
            }
        };
    for w in &out.warnings {
        log::warn!("{}: {w}", draft.env.id);
    }
    if out.modified {
        msg.body.clear();
        draft.header = Header::parse(&msg.to_bytes()).0;
        apply_envelope(&mut draft.env, &env);
        if draft.env.recipients.is_empty() && out.verdict.is_go_on() {
            // Nothing left to deliver: as if the milter had said discard.
            out.warnings.push("every recipient deleted".to_owned());
            out.verdict = Verdict::Discard;
        }
    }
    let refusal = chain::reply(&out.verdict);
    run.result = Some(out);
    match refusal {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

/// The sender and recipients as the milters left them. A recipient that was
/// there before keeps its DSN parameters; one a milter added gets those of
/// its ESMTP arguments (NOTIFY=, ORCPT=); a new sender's RET= and ENVID=
/// replace the message's (Postfix honours the same).
fn apply_envelope(env: &mut Envelope, edit: &EnvelopeEdit) {
    if env.sender != edit.sender {
        env.sender.clone_from(&edit.sender);
    }
    if let Some(args) = &edit.sender_args {
        for (k, v) in esmtp_args(args) {
            if k.eq_ignore_ascii_case("RET") {
                env.ret = match v.to_ascii_uppercase().as_str() {
                    "FULL" => Some(DsnRet::Full),
                    "HDRS" => Some(DsnRet::Hdrs),
                    _ => env.ret,
                };
            } else if k.eq_ignore_ascii_case("ENVID") {
                if let Ok(id) = xtext::decode(v) {
                    env.envid = Some(id);
                }
            }
        }
    }
    let mut old = std::mem::take(&mut env.recipients);
    for r in &edit.recipients {
        let kept = old.iter().position(|o| o.addr.eq_ignore_ascii_case(&r.addr));
        let rcpt = match kept {
            Some(i) => old.swap_remove(i),
            None => {
                let mut n = Recipient::new(r.addr.clone());
                for (k, v) in r.args.as_deref().map(esmtp_args).unwrap_or_default() {
                    if k.eq_ignore_ascii_case("NOTIFY") {
                        n.notify = Notify::parse(v);
                    } else if k.eq_ignore_ascii_case("ORCPT") {
                        n.orcpt = xtext::decode(v).ok();
                    }
                }
                n
            }
        };
        env.recipients.push(rcpt);
    }
}

/// `NAME=VALUE` words of an ESMTP parameter list.
fn esmtp_args(s: &str) -> Vec<(&str, &str)> {
    s.split_whitespace().filter_map(|w| w.split_once('=')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::QueueId;

    #[test]
    fn envelope_edits_keep_old_recipients_parameters_and_read_new_ones() {
        let mut env = Envelope::new(QueueId::generate(), "a@example.org".into(), 0);
        let mut b = Recipient::new("b@example.org".into());
        b.notify = Notify::parse("NEVER");
        env.recipients = vec![b, Recipient::new("c@example.org".into())];
        let edit = EnvelopeEdit {
            sender: "new@example.org".into(),
            sender_args: Some("RET=HDRS ENVID=x+2By".into()),
            recipients: vec![
                RcptEdit::new("B@example.org"),
                RcptEdit {
                    addr: "d@example.net".into(),
                    args: Some("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;d+2Bx@example.net".into()),
                },
            ],
        };
        apply_envelope(&mut env, &edit);
        assert_eq!(env.sender, "new@example.org");
        assert_eq!(env.ret, Some(DsnRet::Hdrs));
        assert_eq!(env.envid.as_deref(), Some("x+y"));
        let addrs: Vec<&str> = env.recipients.iter().map(|r| r.addr.as_str()).collect();
        assert_eq!(addrs, ["b@example.org", "d@example.net"]);
        assert_eq!(env.recipients[0].notify, Notify::parse("NEVER"));
        assert_eq!(env.recipients[1].notify, Notify::parse("SUCCESS,FAILURE"));
        assert_eq!(env.recipients[1].orcpt.as_deref(), Some("rfc822;d+x@example.net"));
    }
}
