//! Several milters in a row, as Postfix runs them (milter.c): each event goes to
//! the milters in their configured order and stops at the first that does not
//! let it go on; at the end of a message each milter sees the message as the
//! milters before it left it, because their modifications are applied in between.

use super::client::{Milter, Verdict};
use super::edit::{self, EnvelopeEdit, Message};
use super::macros::{ConnectInfo, Macros};
use super::spec::MilterSpec;

/// The milters of one SMTP session.
#[derive(Debug, Default)]
pub struct Chain {
    milters: Vec<Milter>,
}

/// The end of a message for the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageOutcome {
    /// Continue (queue it), or the first refusal, discard or shutdown.
    pub verdict: Verdict,
    /// The first SMFIR_QUARANTINE reason: queue the message on hold.
    pub quarantine: Option<String>,
    /// Whether any milter changed the message or its envelope.
    pub modified: bool,
    /// Modifications that could not be applied (logged by the caller).
    pub warnings: Vec<String>,
}

impl Chain {
    /// One conversation per configured milter, none connected yet.
    pub fn new(specs: impl IntoIterator<Item = MilterSpec>) -> Chain {
        Chain::from_milters(specs.into_iter().map(Milter::new).collect())
    }

    pub fn from_milters(milters: Vec<Milter>) -> Chain {
        Chain { milters }
    }

    pub fn is_empty(&self) -> bool {
        self.milters.is_empty()
    }

    pub fn milters(&self) -> &[Milter] {
        &self.milters
    }

    /// Run `f` on each milter until one does not let the stage go on. Accept
    /// from one milter only ends that milter's part: the chain goes on.
    fn each(&mut self, mut f: impl FnMut(&mut Milter) -> Verdict) -> Verdict {
        for m in &mut self.milters {
            let v = f(m);
            if !v.is_go_on() {
                return v;
            }
        }
        Verdict::Continue
    }

    /// The client connected (every milter is connected and negotiated here).
    pub fn connect(&mut self, info: &ConnectInfo, macros: &Macros) -> Verdict {
        self.each(|m| m.connect(info, macros))
    }

    pub fn helo(&mut self, name: &str, macros: &Macros) -> Verdict {
        self.each(|m| m.helo(name, macros))
    }

    /// MAIL FROM: `args[0]` is `<sender>`, then the ESMTP parameters.
    pub fn mail(&mut self, args: &[&str], macros: &Macros) -> Verdict {
        self.each(|m| m.mail(args, macros))
    }

    /// RCPT TO: `args[0]` is `<recipient>`, then the ESMTP parameters.
    pub fn rcpt(&mut self, args: &[&str], macros: &Macros) -> Verdict {
        self.each(|m| m.rcpt(args, macros))
    }

    /// A recipient tern itself rejected, shown to the milters that asked
    /// (SMFIP_RCPT_REJ; `{rcpt_mailer}` = "error" in `macros`). Their answers do
    /// not change the rejection.
    pub fn rejected_rcpt(&mut self, args: &[&str], macros: &Macros) {
        for m in self.milters.iter_mut().filter(|m| m.wants_rejected_recipients()) {
            let _ = m.rcpt(args, macros);
        }
    }

    pub fn data(&mut self, macros: &Macros) -> Verdict {
        self.each(|m| m.data(macros))
    }

    pub fn unknown(&mut self, line: &str, macros: &Macros) -> Verdict {
        self.each(|m| m.unknown(line, macros))
    }

    /// For a stage with no event of its own (AUTH, STARTTLS, VRFY...): the
    /// refusal of a failed or refusing milter, else Continue.
    pub fn other(&self) -> Verdict {
        self.milters
            .iter()
            .map(Milter::other)
            .find(|v| !v.is_go_on())
            .unwrap_or(Verdict::Continue)
    }

    /// The message's content, milter by milter; each one's modifications are
    /// applied to `msg` and `env` before the next sees it.
    pub fn message(&mut self, msg: &mut Message, env: &mut EnvelopeEdit, macros: &Macros) -> MessageOutcome {
        let mut out = MessageOutcome {
            verdict: Verdict::Continue,
            quarantine: None,
            modified: false,
            warnings: Vec::new(),
        };
        for m in &mut self.milters {
            let eom = m.message(msg, macros);
            if !eom.modifications.is_empty() {
                out.modified = true;
                for w in edit::apply(msg, env, &eom.modifications) {
                    out.warnings.push(format!("milter {}: {w}", m.name()));
                }
            }
            if out.quarantine.is_none() {
                out.quarantine = eom.quarantine;
            }
            if !eom.verdict.is_go_on() {
                out.verdict = eom.verdict;
                break;
            }
        }
        out
    }

    /// The transaction ended (RSET, new MAIL, after the end of a message, or
    /// after it was refused).
    pub fn abort(&mut self) {
        for m in &mut self.milters {
            m.abort();
        }
    }

    /// The client is gone.
    pub fn quit(&mut self) {
        for m in &mut self.milters {
            m.quit();
        }
    }
}
