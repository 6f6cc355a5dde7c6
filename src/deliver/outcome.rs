//! What became of one recipient in one delivery attempt, as a typed value,
//! and the catalog of every outcome tern produces.
//!
//! An [`Outcome`] says whether the copy was delivered or failed for now or for
//! good (the [`Verdict`]), where that was decided (the [`Stage`]: DNS, connect,
//! TLS, greeting, MAIL, RCPT, DATA, a local mailbox...), the RFC 3463 status,
//! the remote server's reply when one decided it, and the one-line detail the
//! mail log and the DSN show. Like `smtp::reply` for replies, a reader finds
//! here, in one file, every reason tern can give for a message it did not
//! deliver; the code that delivers only picks a constructor.
//!
//! Temporary or permanent is the first-class bit (the queue retries or
//! bounces on it). Our own misconfiguration (a missing directory, a locked
//! mailbox, wrong relay credentials) is always temporary, so mail waits for
//! an administrator instead of bouncing.

use std::fmt;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::deliver::client::Reply;
use crate::smtp::status::Status;

/// Delivered, or failed for now, or failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered here, or handed over to the next hop.
    Delivered,
    /// Try again later: a full disk, a locked mailbox, a 4xx, a lost connection.
    Temporary,
    /// Give up and bounce: no such user, a 5xx, a null MX, a loop.
    Permanent,
}

/// Where in the delivery the outcome was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The recipient address itself, its aliases and its account.
    Recipient,
    /// Choosing the hosts: the route, the MX rules, a loop back to ourselves.
    Route,
    /// An MX or address lookup.
    Dns,
    /// Opening the TCP connection.
    Connect,
    /// STARTTLS or implicit TLS, and the TLS policy.
    Tls,
    /// The server's 220 greeting.
    Greeting,
    /// EHLO or HELO (LHLO for LMTP).
    Hello,
    /// AUTH to the relay host.
    Auth,
    /// MAIL FROM, and what the server's extensions allow (SIZE, SMTPUTF8).
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA, the message, and the reply after it.
    Data,
    /// Writing a local copy: a Maildir, an mbox, a command, the delivery
    /// child or the root helper.
    Local,
    /// The queue's own verdicts (expiry, a spool copy that cannot be read or
    /// forwarded) and outcomes read back from the spool, which keeps no stage.
    Queue,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Recipient => "recipient",
            Stage::Route => "route",
            Stage::Dns => "dns",
            Stage::Connect => "connect",
            Stage::Tls => "tls",
            Stage::Greeting => "greeting",
            Stage::Hello => "hello",
            Stage::Auth => "auth",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Local => "local",
            Stage::Queue => "queue",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one delivery attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    verdict: Verdict,
    stage: Stage,
    status: Status,
    reply: Option<Reply>,
    detail: String,
}

/// 2.0.0: what a delivery reports, whatever the server's own code said
/// (the log's `dsn=` and the success DSN).
const DELIVERED: Status = Status(2, 0, 0);

impl Outcome {
    fn new(verdict: Verdict, stage: Stage, status: Status, detail: impl Into<String>) -> Outcome {
        let status = if verdict == Verdict::Delivered {
            DELIVERED
        } else {
            status
        };
        Outcome {
            verdict,
            stage,
            status,
            reply: None,
            detail: detail.into(),
        }
    }

    fn temporary(stage: Stage, status: Status, detail: impl Into<String>) -> Outcome {
        Outcome::new(Verdict::Temporary, stage, status, detail)
    }

    fn permanent(stage: Stage, status: Status, detail: impl Into<String>) -> Outcome {
        Outcome::new(Verdict::Permanent, stage, status, detail)
    }

    fn with_reply(mut self, reply: Reply) -> Outcome {
        self.reply = Some(reply);
        self
    }

    /// An outcome made elsewhere and read back from its text form: the
    /// delivery child's status line, the root helper's reply. Only the
    /// catalog below makes new outcomes; a delivery's status is always 2.0.0.
    pub fn decoded(verdict: Verdict, stage: Stage, status: Status, detail: impl Into<String>) -> Outcome {
        Outcome::new(verdict, stage, status, detail)
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The RFC 3463 status this outcome carries (2.0.0 for a delivery).
    pub fn status(&self) -> Status {
        self.status
    }

    /// The remote server's reply that decided this outcome, if one did.
    pub fn reply(&self) -> Option<&Reply> {
        self.reply.as_ref()
    }

    /// One line for the log and the DSN: `delivered to maildir`,
    /// `550 5.1.1 no such user`, `connect: Connection refused`.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub fn is_delivered(&self) -> bool {
        self.verdict == Verdict::Delivered
    }

    pub fn is_temporary(&self) -> bool {
        self.verdict == Verdict::Temporary
    }

    pub fn is_permanent(&self) -> bool {
        self.verdict == Verdict::Permanent
    }

    /// The same outcome with more said after its detail.
    pub fn amended(mut self, more: &str) -> Outcome {
        self.detail.push_str(more);
        self
    }

    /// The Diagnostic-Code of a DSN (RFC 3464 2.3.6): `smtp;` and the reply
    /// when a server's reply decided it, else `x-local;` and our own words.
    pub fn diagnostic(&self) -> String {
        match &self.reply {
            Some(r) => format!("smtp; {}", r.one_line()),
            None => format!("x-local; {}", self.detail),
        }
    }

    /// The spool's record of the last attempt of a recipient: `4.2.0 detail`.
    pub fn record(&self) -> String {
        format!("{} {}", self.status, self.detail)
    }

    /// The temporary outcome a spool record (see [`Outcome::record`]) stands
    /// for, as the delay notice reports it. A detail that starts with a reply
    /// code is that server's reply.
    pub fn from_record(record: &str) -> Outcome {
        let (status, detail) = match record.split_once(' ') {
            Some((s, d)) => (Status::parse(s), d),
            None => (None, record),
        };
        let o = Outcome::temporary(Stage::Queue, status.unwrap_or(Status(4, 0, 0)), detail);
        match recorded_reply(detail) {
            Some(r) => o.with_reply(r),
            None => o,
        }
    }
}

/// `451 4.3.0 text` back into the reply it was written from.
fn recorded_reply(detail: &str) -> Option<Reply> {
    let (code, text) = detail.split_once(' ')?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) || text.is_empty() {
        return None;
    }
    Some(Reply {
        code: code.parse().ok()?,
        lines: vec![text.to_owned()],
    })
}

// ---- A remote server's reply ----------------------------------------------

/// What a reply at `stage` means: 2xx delivered (or accepted, for RCPT), 4xx
/// temporary, 5xx permanent, with the reply's own enhanced status (X.0.0
/// when it has none).
pub fn reply(stage: Stage, r: &Reply) -> Outcome {
    let verdict = if r.is_positive() {
        Verdict::Delivered
    } else if r.is_temporary() {
        Verdict::Temporary
    } else {
        Verdict::Permanent
    };
    Outcome::new(verdict, stage, r.status(), r.one_line()).with_reply(r.clone())
}

/// A reply other than 220 to the connection (RFC 5321 4.3.2).
pub fn greeting_refused(r: &Reply) -> Outcome {
    Outcome::temporary(
        Stage::Greeting,
        Status(4, 4, 0),
        format!("greeting: {}", r.one_line()),
    )
    .with_reply(r.clone())
}

/// RFC 7504 3: a 521 greeting: this host accepts no mail at all. Permanent for
/// the host (remote delivery remembers it and never tries the host again
/// while it runs; another MX may still take the message).
pub fn refuses_all_mail(r: &Reply) -> Outcome {
    let status = Some(r.status()).filter(|s| s.0 == 5 && *s != Status(5, 0, 0));
    Outcome::permanent(
        Stage::Greeting,
        status.unwrap_or(Status(5, 3, 2)),
        format!("host accepts no mail: {}", r.one_line()),
    )
    .with_reply(r.clone())
}

/// EHLO answered with other than 250 or 5xx; its own status, never a bounce.
pub fn ehlo_refused(r: &Reply) -> Outcome {
    Outcome::temporary(Stage::Hello, r.status(), format!("EHLO: {}", r.one_line())).with_reply(r.clone())
}

/// LHLO (RFC 2033 4.1) answered with other than 250: an LMTP server that
/// will not talk to us, or no LMTP server at all, is our configuration's
/// problem, so defer.
pub fn lhlo_refused(r: &Reply) -> Outcome {
    Outcome::temporary(Stage::Hello, Status(4, 4, 0), format!("LHLO: {}", r.one_line())).with_reply(r.clone())
}

/// HELO refused after EHLO was.
pub fn helo_refused(r: &Reply) -> Outcome {
    Outcome::temporary(Stage::Hello, Status(4, 4, 0), format!("HELO: {}", r.one_line())).with_reply(r.clone())
}

/// The relay host answered AUTH with other than 235 or 334 (RFC 4954):
/// wrong credentials are our configuration's fault, so defer, never bounce.
pub fn auth_failed(r: &Reply) -> Outcome {
    Outcome::temporary(
        Stage::Auth,
        Status(4, 7, 0),
        format!("authentication failed: {}", r.one_line()),
    )
    .with_reply(r.clone())
}

/// AUTH LOGIN's challenge did not come.
pub fn auth_login_refused(r: &Reply) -> Outcome {
    Outcome::temporary(
        Stage::Auth,
        Status(4, 7, 0),
        format!("AUTH LOGIN: {}", r.one_line()),
    )
    .with_reply(r.clone())
}

pub fn auth_no_mechanism() -> Outcome {
    Outcome::temporary(
        Stage::Auth,
        Status(4, 7, 0),
        "the relay host offers neither AUTH PLAIN nor LOGIN",
    )
}

// ---- The connection ----------------------------------------------------------

/// An I/O error in Postfix's words: the system's message (strerror) without
/// the ` (os error 111)` std puts after it, which mailq and the log show to
/// people who know `Connection refused`, not errno numbers.
pub fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    let Some(code) = e.raw_os_error() else {
        return text;
    };
    let suffix = format!(" (os error {code})");
    text.strip_suffix(&suffix)
        .map_or_else(|| text.clone(), str::to_owned)
}

/// An I/O error talking to a server: a timeout is 4.4.2 (bad connection),
/// anything else 4.4.1 (no answer from host).
pub fn network(stage: Stage, what: &str, e: &io::Error) -> Outcome {
    let status = if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
        Status(4, 4, 2)
    } else {
        Status(4, 4, 1)
    };
    Outcome::temporary(stage, status, format!("{what}: {}", io_text(e)))
}

/// The TCP connection to `host` at `addr` failed, in Postfix's words, which
/// mailq shows and log tools (pflogsumm) take apart:
/// `connect to mx.example.org[192.0.2.1]:25: Connection refused`.
pub fn connect_failed(host: &str, addr: std::net::SocketAddr, e: &io::Error) -> Outcome {
    network(
        Stage::Connect,
        &format!("connect to {host}[{}]:{}", addr.ip(), addr.port()),
        e,
    )
}

/// The TLS handshake failed (with `host` named when the policy insists).
pub fn tls_failed(why: String) -> Outcome {
    Outcome::temporary(Stage::Tls, Status(4, 7, 5), why)
}

/// The policy requires TLS and the server does not offer STARTTLS.
pub fn tls_required(host: &str) -> Outcome {
    Outcome::temporary(
        Stage::Tls,
        Status(4, 7, 4),
        format!("TLS is required for {host} but not offered"),
    )
}

/// The outbound TLS policy (DANE, MTA-STS, REQUIRETLS) rules a host out
/// before any connection: bogus TLSA records, an MX the enforced MTA-STS
/// policy does not list, a host REQUIRETLS cannot use (`why` names it).
/// The walk goes on.
pub fn tls_policy_refused(why: &str) -> Outcome {
    Outcome::temporary(Stage::Tls, Status(4, 7, 5), why)
}

/// RFC 8689 4.1: the host was reached over authenticated TLS but does not
/// offer REQUIRETLS, so the message may not go to it.
pub fn requiretls_not_offered(host: &str) -> Outcome {
    Outcome::temporary(
        Stage::Tls,
        Status(4, 7, 10),
        format!("{host} does not offer REQUIRETLS"),
    )
}

/// RFC 8689 4.1, 5: a REQUIRETLS message that no host of the destination
/// can take as the extension requires: returned with 5.7.10 ("REQUIRETLS
/// support required"), with the last host's reason.
pub fn requiretls_failed(last: &Outcome) -> Outcome {
    Outcome::permanent(
        Stage::Tls,
        Status(5, 7, 10),
        format!("no next hop qualifies for REQUIRETLS: {}", last.detail()),
    )
}

/// AUTH to the relay host is configured, and the connection is not encrypted.
pub fn auth_needs_tls(host: &str) -> Outcome {
    Outcome::temporary(
        Stage::Auth,
        Status(4, 7, 4),
        format!("{host}: not sending credentials without TLS"),
    )
}

/// A kept connection that no longer answered RSET.
pub fn rset_refused() -> Outcome {
    Outcome::temporary(Stage::Mail, Status(4, 4, 2), "RSET refused")
}

/// The server closed or broke off before answering a RCPT.
pub fn no_rcpt_reply() -> Outcome {
    Outcome::temporary(Stage::Rcpt, Status(4, 4, 2), "no reply to RCPT")
}

/// A recipient the transaction never gave a result (cannot happen; defer).
pub fn no_result() -> Outcome {
    Outcome::temporary(Stage::Rcpt, Status(4, 4, 2), "no result")
}

// ---- What the server's extensions allow (decided before MAIL) ----------------

/// RFC 6531 3.2: the message needs SMTPUTF8 and the server lacks it.
pub fn needs_smtputf8() -> Outcome {
    Outcome::permanent(
        Stage::Mail,
        Status(5, 6, 7),
        "the message needs SMTPUTF8, which the receiving server does not support",
    )
}

/// RFC 3030 4: a BINARYMIME message to a server that does not offer
/// BINARYMIME and CHUNKING; it cannot be converted here.
pub fn needs_binarymime() -> Outcome {
    Outcome::permanent(
        Stage::Mail,
        Status(5, 6, 3),
        "the message is BINARYMIME, which the receiving server does not support",
    )
}

/// A NUL in the queued message: tern refuses NUL on the way in (issue 16),
/// so this message came from elsewhere (an older version); it is never sent,
/// since a next hop that drops NULs could read a smuggled end of data.
pub fn contains_nul() -> Outcome {
    Outcome::permanent(
        Stage::Data,
        Status(5, 6, 0),
        "the message contains NUL characters, which are never sent",
    )
}

/// RFC 9422 MAILMAX: the connection has carried as many transactions as the
/// server allows; these recipients wait for the next attempt on a new one.
pub fn mailmax_reached(max: usize) -> Outcome {
    Outcome::temporary(
        Stage::Mail,
        Status(4, 5, 3),
        format!("the server's limit of {max} transactions per connection was reached"),
    )
}

/// RFC 1870: bigger than the server's SIZE.
pub fn too_big(size: u64, limit: u64) -> Outcome {
    Outcome::permanent(
        Stage::Mail,
        Status(5, 3, 4),
        format!("message size {size} exceeds the receiving server's limit of {limit}"),
    )
}

// ---- Before the queue ----------------------------------------------------------

/// A message from `sendmail` that a non-SMTP milter refused for good at its
/// pickup (there is no client to answer: its sender gets a bounce); the
/// milter's reply is the diagnostic.
pub fn refused_by_milter(status: Status, reply: &str) -> Outcome {
    let status = if status.0 == 5 { status } else { Status(5, 7, 1) };
    Outcome::permanent(Stage::Queue, status, format!("refused by a mail filter: {reply}"))
}

// ---- Routing and DNS ---------------------------------------------------------

/// RFC 7505 4.1: a null MX fails at once, reported with the reply the RFC
/// prescribes, 556 5.1.10, as if the domain had said it.
pub fn null_mx(domain: &str) -> Outcome {
    let r = Reply {
        code: 556,
        lines: vec![format!("5.1.10 domain {domain} does not accept mail (null MX)")],
    };
    Outcome::permanent(Stage::Dns, Status(5, 1, 10), r.one_line()).with_reply(r)
}

/// NXDOMAIN for the recipient domain.
pub fn domain_not_found(domain: &str) -> Outcome {
    Outcome::permanent(Stage::Dns, Status(5, 1, 2), format!("domain {domain} not found"))
}

/// The MX lookup failed for now (SERVFAIL, timeout).
pub fn mx_lookup_failed(domain: &str, why: &dyn fmt::Display) -> Outcome {
    Outcome::temporary(
        Stage::Dns,
        Status(4, 4, 3),
        format!("MX lookup of {domain}: {why}"),
    )
}

/// An address lookup of a host failed for now.
pub fn host_lookup_failed(host: &str, why: &dyn fmt::Display) -> Outcome {
    Outcome::temporary(Stage::Dns, Status(4, 4, 3), format!("{host}: {why}"))
}

/// An MX host that does not exist (NXDOMAIN): try the next.
pub fn host_not_found(host: &str) -> Outcome {
    Outcome::temporary(Stage::Dns, Status(4, 4, 4), format!("host {host} not found"))
}

/// An MX host with no address of the families in use: try the next.
pub fn host_without_address(host: &str) -> Outcome {
    Outcome::temporary(Stage::Dns, Status(4, 4, 4), format!("{host} has no address"))
}

/// RFC 5321 5.1: no MX, and the domain has no address either.
pub fn no_mx_no_address(host: &str) -> Outcome {
    Outcome::permanent(
        Stage::Dns,
        Status(5, 4, 4),
        format!("{host} has neither MX nor address records"),
    )
}

/// No host was tried at all (none listed).
pub fn no_usable_host(domain: &str) -> Outcome {
    Outcome::temporary(
        Stage::Route,
        Status(4, 4, 4),
        format!("no usable host for {domain}"),
    )
}

/// `[...]` that is no IP address (RFC 5321 4.1.3).
pub fn bad_address_literal(domain: &str) -> Outcome {
    Outcome::permanent(
        Stage::Route,
        Status(5, 1, 2),
        format!("unusable address literal {domain}"),
    )
}

/// RFC 5321 5.1: we are the best MX (by name, or at `relay`, one of our
/// own listening addresses), so sending would loop.
pub fn loops_to_myself(domain: &str, relay: Option<&str>) -> Outcome {
    let detail = match relay {
        Some(r) => format!("mail for {domain} loops back to myself ({r})"),
        None => format!("mail for {domain} loops back to myself"),
    };
    Outcome::permanent(Stage::Route, Status(5, 4, 6), detail)
}

// ---- The recipient: address, aliases, account --------------------------------

pub fn bad_recipient_syntax(addr: &str) -> Outcome {
    Outcome::permanent(
        Stage::Recipient,
        Status(5, 1, 3),
        format!("bad recipient address syntax: {addr}"),
    )
}

/// RFC 5321 6.3: a copy that already passed through this recipient.
pub fn forwarding_loop(addr: &str) -> Outcome {
    Outcome::permanent(
        Stage::Recipient,
        Status(5, 4, 6),
        format!("mail forwarding loop for {addr}"),
    )
}

/// An alias loop or an alias too deep or too wide.
pub fn alias_failed(why: &dyn fmt::Display) -> Outcome {
    Outcome::permanent(
        Stage::Recipient,
        Status(5, 4, 6),
        format!("alias expansion failed: {why}"),
    )
}

/// An :include: file that cannot be read (or is unsafe): the admin fixes it.
pub fn include_failed(why: &dyn fmt::Display) -> Outcome {
    Outcome::temporary(Stage::Recipient, Status(4, 3, 0), why.to_string())
}

pub fn unknown_user(name: &str) -> Outcome {
    Outcome::permanent(
        Stage::Recipient,
        Status(5, 1, 1),
        format!("unknown user: \"{name}\""),
    )
}

/// A local_users user without an account, and a `~` mailbox template.
pub fn no_home(name: &str, mailbox: &str) -> Outcome {
    Outcome::temporary(
        Stage::Recipient,
        Status(4, 3, 0),
        format!("user {name} has no home directory for mailbox {mailbox}"),
    )
}

/// Neither the aliases file's owner nor `nobody` exists.
pub fn no_alias_account() -> Outcome {
    Outcome::temporary(
        Stage::Local,
        Status(4, 3, 0),
        "no unprivileged account to run alias deliveries as",
    )
}

// ---- Local delivery ----------------------------------------------------------

/// RFC 3463 X.2.0: the mailbox cannot be used now (missing, not ours, locked).
pub fn mailbox_unavailable(detail: impl Into<String>) -> Outcome {
    Outcome::temporary(Stage::Local, Status(4, 2, 0), detail)
}

/// RFC 3463 X.3.0: a local fault that is not the mailbox's.
pub fn local_error(detail: impl Into<String>) -> Outcome {
    Outcome::temporary(Stage::Local, Status(4, 3, 0), detail)
}

/// A command that failed with a status that means it will fail again.
pub fn command_failed(detail: impl Into<String>) -> Outcome {
    Outcome::permanent(Stage::Local, Status(5, 3, 0), detail)
}

/// An I/O error on the mailbox: 4.2.2 (mailbox full) for a full disk or
/// quota, else 4.2.0.
pub fn mailbox_io(what: &str, e: &io::Error) -> Outcome {
    if crate::sys::is_no_space(e) {
        return mailbox_full(what, e);
    }
    mailbox_unavailable(format!("{what}: {}", io_text(e)))
}

/// An I/O error elsewhere: 4.2.2 for a full disk or quota, else 4.3.0.
pub fn local_io(what: &str, e: &io::Error) -> Outcome {
    if crate::sys::is_no_space(e) {
        return mailbox_full(what, e);
    }
    local_error(format!("{what}: {}", io_text(e)))
}

fn mailbox_full(what: &str, e: &io::Error) -> Outcome {
    Outcome::temporary(
        Stage::Local,
        Status(4, 2, 2),
        format!("mailbox full: {what}: {}", io_text(e)),
    )
}

/// The spool's copy could not be read.
pub fn cannot_read_message(e: &io::Error) -> Outcome {
    local_error(format!("cannot read message: {}", io_text(e)))
}

/// The spool's file could not be opened.
pub fn cannot_open_message(path: &Path, e: &io::Error) -> Outcome {
    local_error(format!("cannot open message {}: {}", path.display(), io_text(e)))
}

/// A local copy written: `delivered to maildir`, `delivered to command`...
pub fn delivered_locally(detail: impl Into<String>) -> Outcome {
    Outcome::new(Verdict::Delivered, Stage::Local, DELIVERED, detail)
}

// ---- The queue -----------------------------------------------------------------

/// The queued copy could not be read for remote delivery.
pub fn spool_unreadable(path: &Path, e: &io::Error) -> Outcome {
    Outcome::temporary(
        Stage::Queue,
        Status(4, 3, 0),
        format!("read {}: {}", path.display(), io_text(e)),
    )
}

/// An alias to other domains, queued again as `id`.
pub fn forwarded(id: &dyn fmt::Display) -> Outcome {
    Outcome::new(
        Verdict::Delivered,
        Stage::Queue,
        DELIVERED,
        format!("forwarded as {id}"),
    )
}

pub fn cannot_forward(why: &str) -> Outcome {
    Outcome::temporary(
        Stage::Queue,
        Status(4, 3, 0),
        format!("cannot queue forwarded copy: {why}"),
    )
}

/// A final target (mailbox, file, command, remote address) this message
/// already reached in this run through recipient `first`: no second copy is
/// made, and this recipient has the result the first one had (issue 16:
/// duplicates delivered once). Its detail names the first recipient.
pub fn duplicate_of(first: &str, result: &Outcome) -> Outcome {
    let mut o = result.clone();
    o.detail = format!("duplicate of <{first}>: {}", result.detail);
    o
}

/// An alias target in another domain that is itself a recipient of the
/// message: it gets its copy as that recipient, not a second one.
pub fn also_a_recipient(addr: &str) -> Outcome {
    Outcome::new(
        Verdict::Delivered,
        Stage::Queue,
        DELIVERED,
        format!("duplicate of <{addr}>, a recipient of this message"),
    )
}

/// A recipient that got no result from the router (cannot happen; defer).
pub fn no_route_result() -> Outcome {
    Outcome::temporary(Stage::Queue, Status(4, 3, 0), "no result")
}

/// RFC 3463 X.4.7: the message outlived `queue_lifetime`; the last
/// temporary reason, now final.
pub fn expired(last: &Outcome) -> Outcome {
    Outcome::permanent(
        Stage::Queue,
        Status(4, 4, 7),
        format!("delivery time expired: {}", last.detail()),
    )
}

// ---- The attempt as the queue records it ---------------------------------------

/// The outbound TLS policy that applied to a remote attempt, for the log
/// line: `policy=dane verified=yes`, `policy=mta-sts mode=enforce
/// verified=no`, `policy=may` (issue 18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsNote {
    /// `policy=NAME` and, for MTA-STS, ` mode=MODE`.
    pub policy: String,
    /// Whether the certificate was authenticated (DANE or PKIX); None when
    /// the session was not encrypted.
    pub verified: Option<bool>,
}

impl fmt::Display for TlsNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.policy)?;
        match self.verified {
            Some(true) => f.write_str(" verified=yes"),
            Some(false) => f.write_str(" verified=no"),
            None => Ok(()),
        }
    }
}

/// One recipient's attempt as the queue records and logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempted {
    /// `local`, `none`, or `mx.host[ip]:port` for the log's relay=.
    pub relay: String,
    /// "TLSv1.3" when the hop was encrypted.
    pub tls: Option<&'static str>,
    /// The outbound TLS policy that applied (remote attempts that got as
    /// far as choosing one).
    pub policy: Option<TlsNote>,
    pub outcome: Outcome,
    /// What success notice we owe if the sender asked for one (RFC 3461):
    /// none when the next hop took over the DSN request.
    pub success: Success,
    /// Where the time went, for the log's `delays=`.
    pub timing: Timing,
}

/// Where one recipient's delivery spent its time: the last three parts of
/// the log's `delays=a/b/c/d` (the queue runner knows `a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    /// When the delivery of this recipient (or its domain's group) began.
    pub began: Option<Instant>,
    /// Time spent waiting for a connection slot to the destination
    /// (`max_connections_per_domain`): queue wait, part of `b`.
    pub waited: Duration,
    /// Connection setup, `c`: DNS lookups, connect, greeting, EHLO,
    /// STARTTLS and AUTH; zero for local delivery.
    pub setup: Duration,
    /// Transmission, `d`: MAIL FROM to the reply to the end of data, or
    /// writing the local copy.
    pub transmit: Duration,
}

impl Timing {
    /// A connection's delivery that began at `began`, waited `waited` for a
    /// slot and began its transaction at `tx_start` (None: it never did):
    /// setup until then, transmission from then until now.
    pub fn measured(began: Instant, waited: Duration, tx_start: Option<Instant>) -> Timing {
        let now = Instant::now();
        let setup_end = tx_start.unwrap_or(now);
        Timing {
            began: Some(began),
            waited,
            setup: setup_end.saturating_duration_since(began).saturating_sub(waited),
            transmit: now.saturating_duration_since(setup_end),
        }
    }
}

/// Who reports success to a sender who asked for NOTIFY=SUCCESS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Success {
    /// Delivered here: we send a "delivered" notice.
    Delivered,
    /// Handed to a server without DSN: we send a "relayed" notice.
    Relayed,
    /// The next hop supports DSN and was given NOTIFY: it reports.
    PassedOn,
}

impl Attempted {
    pub fn local(relay: &str, outcome: Outcome) -> Attempted {
        Attempted {
            relay: relay.to_owned(),
            tls: None,
            policy: None,
            outcome,
            success: Success::Delivered,
            timing: Timing::default(),
        }
    }

    /// One attempt per recipient, from the results of one host at `relay`.
    pub fn each(
        results: Vec<(Outcome, Success)>,
        relay: &str,
        tls: Option<&'static str>,
        timing: Timing,
    ) -> Vec<Attempted> {
        results
            .into_iter()
            .map(|(outcome, success)| Attempted {
                relay: relay.to_owned(),
                tls,
                policy: None,
                outcome,
                success,
                timing,
            })
            .collect()
    }

    /// The same attempt with its timing.
    pub fn timed(mut self, timing: Timing) -> Attempted {
        self.timing = timing;
        self
    }
}

#[cfg(test)]
mod tests;
