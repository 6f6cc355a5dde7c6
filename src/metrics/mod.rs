//! Metrics for Prometheus: what the daemon counts, and the one call per event
//! that counts it, in the manner of [`crate::maillog`] (which says the same
//! events in words). ternd(8), section METRICS, lists every metric.
//!
//! The counters live in statics of fixed size ([`registry`]): the code that
//! sees an event makes one call here, which is a relaxed atomic add, and
//! never fails. Values that are cheaper to compute when asked than to keep
//! current (the queue's size) are set by the hooks given to [`on_scrape`],
//! which run before each scrape is rendered. A daemon with `metrics_listen`
//! serves them over HTTP ([`http`]); without it they are counted and never read.
//!
//! This module depends on nothing above it but the reply catalog (to name
//! the reason of a refusal from the reply that said it).

use std::cell::Cell;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::smtp::reply::{self, Reply};

pub mod http;
pub mod registry;
mod text;

use registry::{counter, gauge, histogram, label, Family};

pub use text::CONTENT_TYPE;

// ---- Labels ----------------------------------------------------------------

label! {
    /// The listener a client came in on.
    pub enum Listener("listener") {
        Smtp = "smtp",
        Submission = "submission",
        Smtps = "smtps",
    }
}

label! {
    /// What became of a connection when it came in.
    pub enum Outcome("outcome") {
        /// A session started.
        Accepted = "accepted",
        /// Every session slot in use (`max_sessions`): 421 and closed.
        RefusedBusy = "refused_busy",
        /// The address holds its share already (`max_sessions_per_ip`).
        RefusedPerIp = "refused_per_ip",
        /// A PROXY listener: not from a trusted proxy, or no valid header.
        RefusedProxy = "refused_proxy",
    }
}

label! {
    /// How a session ended.
    pub enum End("reason") {
        /// The client said QUIT.
        Quit = "quit",
        /// The client closed the connection (or it broke) without QUIT.
        Hangup = "hangup",
        /// The client was silent too long (also in stress mode).
        Timeout = "timeout",
        /// Too many bad commands (`max_errors`).
        ErrorLimit = "error_limit",
        /// Too many unknown recipients (`harvest_limit`).
        HarvestLimit = "harvest_limit",
        /// Too many failed AUTH attempts (in the session, or from the address).
        AuthLimit = "auth_limit",
        /// Closed by a full pool to make room for a new client: it sent no mail.
        Evicted = "evicted",
        /// An HTTP request sent to the SMTP port.
        HttpProbe = "http_probe",
        /// The TLS handshake failed (smtps, or after STARTTLS).
        TlsFailed = "tls_failed",
        /// The daemon was stopping.
        Shutdown = "shutdown",
        /// A bug: the session's thread panicked, or answered 421 internal error.
        InternalError = "internal_error",
        /// Any other closing reply.
        Other = "other",
    }
}

label! {
    /// Why a command was refused (each `NOQUEUE: reject` line of the log).
    pub enum Reject("reason") {
        UnknownUser = "unknown_user",
        RelayDenied = "relay_denied",
        SenderNotOwned = "sender_not_owned",
        TlsRequired = "tls_required",
        AuthRequired = "auth_required",
        AuthFailed = "auth_failed",
        /// AUTH refused unchecked by the guard across sessions
        /// (server::auth_guard): the address or the account failed too often.
        AuthThrottled = "auth_throttled",
        TooBig = "message_too_big",
        TooManyRecipients = "too_many_recipients",
        NoSpace = "insufficient_storage",
        LocalError = "local_error",
        MailLoop = "mail_loop",
        BadData = "bad_data",
        Smtputf8Required = "smtputf8_required",
        HarvestLimit = "harvest_limit",
        /// `spf_reject = fail` (550 5.7.23).
        SpfFail = "spf_fail",
        /// `dmarc_reject = yes` (550 5.7.1 after DATA).
        DmarcReject = "dmarc_reject",
        /// A milter's refusal (its own reply, or its failure's default action).
        Milter = "milter",
        /// A policy service's refusal (greylisting, SPF, rate limits).
        PolicyService = "policy_service",
        /// Syntax, sequence, unknown commands and parameters (X.5.X).
        Protocol = "protocol",
        Other = "other",
    }
}

label! {
    /// How a message entered the queue.
    pub enum Source("source") {
        Smtp = "smtp",
        Submission = "submission",
        Smtps = "smtps",
        /// From the maildrop: the sendmail program.
        Pickup = "pickup",
    }
}

label! {
    /// What delivered (or tried to deliver) a recipient.
    pub enum Transport("transport") {
        /// Mailbox, Maildir, pipe or file on this host.
        Local = "local",
        /// SMTP to a remote host (MX, route or relay_host).
        Smtp = "smtp",
        /// LMTP to a mailbox server (mailbox_transport, or a route).
        Lmtp = "lmtp",
    }
}

label! {
    /// What one attempt did for one recipient, as the log's `status=`.
    pub enum Status("status") {
        Sent = "sent",
        Deferred = "deferred",
        /// Failed for good: refused, or expired (`queue_lifetime`).
        Bounced = "bounced",
    }
}

label! {
    /// Where a queued message is.
    pub enum QueueState("state") {
        /// Being delivered, or due and waiting for a delivery thread.
        Active = "active",
        /// Waiting for its next retry.
        Deferred = "deferred",
        /// Held by `ternctl hold`.
        Hold = "hold",
        /// Envelopes that did not parse, kept for a human.
        Corrupt = "corrupt",
        /// Submitted by sendmail, waiting for pickup.
        Maildrop = "maildrop",
    }
}

label! {
    /// Inbound (a client of ours) or outbound (we are the client).
    pub enum Direction("direction") {
        In = "in",
        Out = "out",
    }
}

label! {
    pub enum TlsVersion("version") {
        Tls12 = "TLSv1.2",
        Tls13 = "TLSv1.3",
        Other = "other",
    }
}

label! {
    pub enum AuthResult("result") {
        Success = "success",
        Failure = "failure",
    }
}

// ---- Metrics ---------------------------------------------------------------

counter!(static CONNECTIONS: (Listener, Outcome), "tern_connections_total",
    "Connections to the SMTP listeners, by what became of them when they came in.");
counter!(static CLOSED: (Listener, End), "tern_sessions_closed_total",
    "SMTP sessions ended, by how they ended.");
gauge!(static SESSIONS: Listener, "tern_sessions",
    "SMTP sessions in progress.");
counter!(static ACCEPTED: Source, "tern_messages_accepted_total",
    "Messages queued (the 250 after DATA, or a pickup from the maildrop).");
counter!(static REJECTS: Reject, "tern_smtp_rejects_total",
    "Commands refused by the SMTP server (the log's NOQUEUE: reject lines), by reason.");
counter!(static AUTH: (Listener, AuthResult), "tern_auth_attempts_total",
    "SMTP AUTH attempts with credentials, by result.");
counter!(static TLS: (Direction, TlsVersion), "tern_tls_sessions_total",
    "TLS handshakes completed, inbound (STARTTLS, smtps) and outbound (delivery).");
counter!(static TLS_FAILED: Direction, "tern_tls_handshake_failures_total",
    "TLS handshakes that failed.");
counter!(static DELIVERIES: (Transport, Status), "tern_deliveries_total",
    "Delivery attempts per recipient, by transport and result (the log's status=).");
histogram!(static LATENCY: Transport, "tern_delivery_latency_seconds",
    "Time from queue entry to delivery, per recipient delivered.",
    &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0, 432000.0]);
gauge!(static QUEUE: QueueState, "tern_queue_messages",
    "Messages in the queue, by state, when scraped.");
gauge!(static OLDEST: (), "tern_queue_oldest_message_age_seconds",
    "Age of the oldest message waiting for delivery (held ones not counted); 0 when none.");
histogram!(static SPOOL_COMMIT: (), "tern_spool_commit_seconds",
    "Time to make a batch of accepted messages durable (sync and rename into the queue).",
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
gauge!(static STARTED: (), "tern_start_time_seconds",
    "When the daemon started, in seconds since the Unix epoch.");

/// `tern_build_info{version="..."} 1`: which tern is running.
struct BuildInfo;

impl Family for BuildInfo {
    fn render(&self, out: &mut String) {
        let name = "tern_build_info";
        text::header(out, name, "The running tern's version (always 1).", "gauge");
        let mut labels = String::new();
        text::label(&mut labels, "version", env!("CARGO_PKG_VERSION"));
        text::sample(out, name, "", &labels, 1);
    }
}

/// Every metric, in the order of a scrape (and of ternd(8)).
static FAMILIES: &[&dyn Family] = &[
    &CONNECTIONS,
    &CLOSED,
    &SESSIONS,
    &ACCEPTED,
    &REJECTS,
    &AUTH,
    &TLS,
    &TLS_FAILED,
    &DELIVERIES,
    &LATENCY,
    &QUEUE,
    &OLDEST,
    &SPOOL_COMMIT,
    &STARTED,
    &BuildInfo,
];

// ---- Events: one call where each happens -------------------------------------

/// A connection refused with `r` before any session: every slot in use, or
/// the address's share (`max_sessions_per_ip`).
pub fn refused(listener: Listener, r: &Reply) {
    let outcome = if same(By::Whole, r, &reply::too_many_from_ip()) {
        Outcome::RefusedPerIp
    } else {
        Outcome::RefusedBusy
    };
    CONNECTIONS.inc((listener, outcome));
}

/// A connection on a PROXY listener closed before any SMTP: not from a
/// trusted proxy, or without a valid header.
pub fn proxy_refused(listener: Listener) {
    CONNECTIONS.inc((listener, Outcome::RefusedProxy));
}

/// A session starts: counted as accepted and in progress until the meter is
/// dropped, which counts how it ended ([`SessionMeter::closing`]; a session
/// that ends without a closing reply was hung up on).
pub fn session(listener: Listener) -> SessionMeter {
    CONNECTIONS.inc((listener, Outcome::Accepted));
    SESSIONS.add(listener, 1);
    SessionMeter {
        listener,
        end: Cell::new(End::Hangup),
    }
}

/// One session, from its start to its end (drop).
pub struct SessionMeter {
    listener: Listener,
    end: Cell<End>,
}

impl SessionMeter {
    /// The session sends `r`, a reply that closes the connection.
    pub fn closing(&self, r: &Reply) {
        self.end.set(end_of(r));
    }

    /// The TLS handshake failed (which ends the session).
    pub fn tls_failed(&self) {
        TLS_FAILED.inc(Direction::In);
        self.end.set(End::TlsFailed);
    }

    /// A TLS handshake completed on this session.
    pub fn tls(&self, version: &str) {
        tls(Direction::In, version);
    }

    /// An AUTH exchange with credentials ended, `ok` or not.
    pub fn auth(&self, ok: bool) {
        let result = if ok {
            AuthResult::Success
        } else {
            AuthResult::Failure
        };
        AUTH.inc((self.listener, result));
    }

    /// A message was queued (the 250 after DATA).
    pub fn accepted(&self) {
        ACCEPTED.inc(match self.listener {
            Listener::Smtp => Source::Smtp,
            Listener::Submission => Source::Submission,
            Listener::Smtps => Source::Smtps,
        });
    }
}

impl Drop for SessionMeter {
    fn drop(&mut self) {
        SESSIONS.add(self.listener, -1);
        // Unwinding from a panic: the listener catches it and closes the session.
        let end = if std::thread::panicking() {
            End::InternalError
        } else {
            self.end.get()
        };
        CLOSED.inc((self.listener, end));
    }
}

/// A command refused with `r` (logged as `NOQUEUE: reject`).
pub fn rejected(r: &Reply) {
    REJECTS.inc(reject_reason(r));
}

/// A command or message refused by a milter or a policy service: their
/// replies are their own words, not the catalog's, so the session says who.
pub fn filter_rejected(reason: Reject) {
    REJECTS.inc(reason);
}

/// A message taken from the maildrop into the queue.
pub fn picked_up() {
    ACCEPTED.inc(Source::Pickup);
}

/// A TLS handshake completed; `version` as rustls names it ("TLSv1.3").
pub fn tls(direction: Direction, version: &str) {
    let v = match version {
        "TLSv1.3" => TlsVersion::Tls13,
        "TLSv1.2" => TlsVersion::Tls12,
        _ => TlsVersion::Other,
    };
    TLS.inc((direction, v));
}

/// An outbound TLS handshake failed.
pub fn tls_out_failed() {
    TLS_FAILED.inc(Direction::Out);
}

/// One recipient's attempt ended with `status`; for a delivered one,
/// `queued_for` is how long since the message entered the queue.
pub fn delivery(transport: Transport, status: Status, queued_for: Option<Duration>) {
    DELIVERIES.inc((transport, status));
    if let (Status::Sent, Some(d)) = (status, queued_for) {
        LATENCY.observe(transport, d);
    }
}

/// The queue's size in `state`, for the scrape being made.
pub fn queue_size(state: QueueState, n: usize) {
    QUEUE.set(state, i64::try_from(n).unwrap_or(i64::MAX));
}

/// The age of the oldest message waiting for delivery (None: the queue is empty).
pub fn oldest_message(age: Option<Duration>) {
    let secs = age.map_or(0, |a| i64::try_from(a.as_secs()).unwrap_or(i64::MAX));
    OLDEST.set((), secs);
}

/// Times a spool commit from now until it is dropped.
pub fn spool_commit() -> Timer {
    Timer(Instant::now())
}

/// See [`spool_commit`].
pub struct Timer(Instant);

impl Drop for Timer {
    fn drop(&mut self) {
        SPOOL_COMMIT.observe((), self.0.elapsed());
    }
}

// ---- Scrapes ---------------------------------------------------------------

type Hook = Box<dyn Fn() + Send>;

fn hooks() -> &'static Mutex<Vec<Hook>> {
    static HOOKS: OnceLock<Mutex<Vec<Hook>>> = OnceLock::new();
    HOOKS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Run `f` before each scrape, to set what is computed on demand.
pub fn on_scrape(f: impl Fn() + Send + 'static) {
    hooks()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Box::new(f));
}

/// Record the daemon's start (`tern_start_time_seconds`).
pub fn started(unix_seconds: u64) {
    STARTED.set((), i64::try_from(unix_seconds).unwrap_or(i64::MAX));
}

/// Every metric in the text format, after running the scrape hooks.
pub fn render() -> String {
    // Held while rendering too: two scrapes at once (there is one server
    // thread, but tests call this) do not interleave hook and render.
    let hooks = hooks().lock().unwrap_or_else(|e| e.into_inner());
    for h in hooks.iter() {
        h();
    }
    let mut out = String::with_capacity(16 * 1024);
    for f in FAMILIES {
        f.render(&mut out);
    }
    out
}

// ---- Reasons, from the reply catalog ------------------------------------------

/// How a reply is recognised: the whole reply (for fixed texts that share a
/// code, like the two 530 5.7.0), or its code and enhanced status alone (for
/// replies that name an address).
#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    Whole,
    Code,
}

fn same(by: By, a: &Reply, b: &Reply) -> bool {
    a.code == b.code && a.esc == b.esc && (by == By::Code || a.lines == b.lines)
}

/// The catalog's refusals and their reasons: built once, from the catalog
/// itself, so a code changed there cannot leave a stale copy here.
fn reject_table() -> &'static [(Reply, By, Reject)] {
    static TABLE: OnceLock<Vec<(Reply, By, Reject)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        vec![
            (reply::no_such_user(""), By::Code, Reject::UnknownUser),
            (reply::expn_unknown(), By::Code, Reject::UnknownUser),
            (reply::relay_denied(""), By::Code, Reject::RelayDenied),
            (reply::sender_not_owned(""), By::Code, Reject::SenderNotOwned),
            (reply::tls_required(), By::Whole, Reject::TlsRequired),
            (reply::requiretls_needs_tls(), By::Code, Reject::TlsRequired),
            (reply::auth_needs_tls(), By::Code, Reject::TlsRequired),
            (reply::auth_required(), By::Whole, Reject::AuthRequired),
            (reply::auth_failed(), By::Code, Reject::AuthFailed),
            (reply::auth_address_blocked(), By::Whole, Reject::AuthThrottled),
            (reply::auth_account_throttled(), By::Code, Reject::AuthThrottled),
            (reply::size_exceeded(), By::Code, Reject::TooBig),
            (reply::too_many_recipients(), By::Code, Reject::TooManyRecipients),
            (reply::no_space(), By::Code, Reject::NoSpace),
            (reply::local_error(), By::Code, Reject::LocalError),
            (reply::mail_loop(), By::Code, Reject::MailLoop),
            (reply::bare_newline(), By::Code, Reject::BadData),
            (reply::bare_newline_command(true), By::Code, Reject::BadData),
            (reply::path_needs_brackets(""), By::Code, Reject::Protocol),
            (reply::need_smtputf8(), By::Code, Reject::Smtputf8Required),
            (reply::harvest_limit(), By::Whole, Reject::HarvestLimit),
            (reply::spf_failed(""), By::Code, Reject::SpfFail),
            (reply::dmarc_rejected(""), By::Code, Reject::DmarcReject),
            (reply::http_probe(), By::Whole, Reject::Protocol),
        ]
    })
}

fn reject_reason(r: &Reply) -> Reject {
    if let Some((_, _, why)) = reject_table().iter().find(|(c, by, _)| same(*by, c, r)) {
        return *why;
    }
    // RFC 3463 3.6: X.5.X is a protocol (syntax, sequence) problem.
    let protocol_code = matches!(r.code, 500..=504 | 555);
    if protocol_code || r.esc.is_some_and(|e| e.1 == 5) {
        Reject::Protocol
    } else {
        Reject::Other
    }
}

fn end_table() -> &'static [(Reply, By, End)] {
    static TABLE: OnceLock<Vec<(Reply, By, End)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        vec![
            (reply::bye(), By::Code, End::Quit),
            (reply::timeout(), By::Whole, End::Timeout),
            (reply::shutting_down(), By::Whole, End::Shutdown),
            (reply::too_many_errors(), By::Whole, End::ErrorLimit),
            (reply::harvest_limit(), By::Whole, End::HarvestLimit),
            (reply::auth_failed(), By::Code, End::AuthLimit),
            (reply::auth_address_blocked(), By::Whole, End::AuthLimit),
            (reply::auth_account_throttled(), By::Code, End::AuthLimit),
            (reply::evicted(), By::Whole, End::Evicted),
            (reply::http_probe(), By::Whole, End::HttpProbe),
            (reply::internal_error(), By::Whole, End::InternalError),
        ]
    })
}

fn end_of(r: &Reply) -> End {
    end_table()
        .iter()
        .find(|(c, by, _)| same(*by, c, r))
        .map_or(End::Other, |(_, _, e)| *e)
}

#[cfg(test)]
mod tests;
