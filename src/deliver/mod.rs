//! Delivery: what happens to one recipient of one queued message. Every
//! attempt ends in an `Outcome`, permanent or temporary, which the queue
//! runner records in the spool and turns into retries or bounces.

use std::time::{Duration, Instant};

use crate::smtp::status::Status;

pub mod client;
pub mod dns;
pub mod local;
pub mod remote;
pub mod router;
pub mod tls_client;

/// One recipient's attempt as the queue records and logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempted {
    /// `local`, `none`, or `mx.host[ip]:port` for the log's relay=.
    pub relay: String,
    /// "TLSv1.3" when the hop was encrypted.
    pub tls: Option<&'static str>,
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
            outcome,
            success: Success::Delivered,
            timing: Timing::default(),
        }
    }

    /// The same attempt with its timing.
    pub fn timed(mut self, timing: Timing) -> Attempted {
        self.timing = timing;
        self
    }
}

/// The result of one delivery attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered; the detail says where (`delivered to maildir`).
    Delivered { detail: String },
    /// Try again later: a full disk, a locked mailbox, EX_TEMPFAIL.
    Temporary { status: Status, detail: String },
    /// Give up and bounce: no such user, a pipe that failed, a loop.
    Permanent { status: Status, detail: String },
}

impl Outcome {
    pub fn delivered(detail: impl Into<String>) -> Outcome {
        Outcome::Delivered {
            detail: detail.into(),
        }
    }

    pub fn temporary(status: Status, detail: impl Into<String>) -> Outcome {
        Outcome::Temporary {
            status,
            detail: detail.into(),
        }
    }

    pub fn permanent(status: Status, detail: impl Into<String>) -> Outcome {
        Outcome::Permanent {
            status,
            detail: detail.into(),
        }
    }

    /// The RFC 3463 status this outcome carries (2.0.0 for a delivery).
    pub fn status(&self) -> Status {
        match self {
            Outcome::Delivered { .. } => Status(2, 0, 0),
            Outcome::Temporary { status, .. } | Outcome::Permanent { status, .. } => *status,
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Outcome::Delivered { detail }
            | Outcome::Temporary { detail, .. }
            | Outcome::Permanent { detail, .. } => detail,
        }
    }
}
