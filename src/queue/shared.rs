//! What the queue runner and its delivery workers share: the live
//! configuration and tables, the spool, the resolver and connection pool for
//! remote delivery and its TLS policy state, and the counters the daemon reads when it stops. The
//! runner makes one at start-up; each attempt reads it.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::config::{Config, Live};
use crate::deliver::dns::Resolver;
use crate::deliver::pool::Pool;
use crate::pipeline::MailAuth;
use crate::spool::{QueueId, Retired, Spool};
use crate::tables::Tables;
use crate::tlspolicy::outbound::Outbound;

pub(super) struct Shared {
    /// Swapped by a reload; each attempt takes the current one.
    pub(super) cfg: Live<Config>,
    pub(super) spool: Arc<Spool>,
    pub(super) tables: Live<Tables>,
    /// Signing keys for what the runner queues itself (pickups, notices,
    /// reports); swapped by a reload.
    pub(super) mailauth: Live<MailAuth>,
    /// Tell the runner about a message (new, or changed outside the runner).
    pub(super) wake: Sender<QueueId>,
    /// DNS for remote delivery.
    pub(super) resolver: Arc<dyn Resolver>,
    /// The outbound TLS policy's state: DNSSEC probe, MTA-STS, TLS-RPT.
    pub(super) outbound: Arc<Outbound>,
    /// Connections kept between remote deliveries, and per-destination limits.
    pub(super) pool: Arc<Pool>,
    /// Set when the daemon stops: no new deliveries start.
    pub(super) stopping: Arc<AtomicBool>,
    /// Deliveries in progress.
    pub(super) in_flight: AtomicUsize,
    /// Delivered messages whose bodies wait for one fsync for many (spool::retire).
    pub(super) retired: Retired,
}

impl Shared {
    /// Have the runner look at `id` (a notice or a forwarded copy just
    /// queued). A runner that is gone has nothing to look with.
    pub(super) fn announce(&self, id: QueueId) {
        let _ = self.wake.send(id);
    }
}
