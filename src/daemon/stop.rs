//! SIGTERM and SIGINT: a graceful stop (RFC 5321 3.8).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::start::Daemon;

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Sessions and deliveries still running when the grace period ended.
    pub cut_short: usize,
}

impl Daemon {
    /// Stop accepting, let each session finish the command it is in (a DATA
    /// in progress is completed and answered), answer 421 to idle ones, let
    /// deliveries in flight finish, all within `shutdown_grace`; then release
    /// the pid files.
    pub fn shutdown(self) -> Stopped {
        let ctx = self.live.get();
        let grace = ctx.cfg.daemon.shutdown_grace;
        log::info!(
            "stopping: no new connections, {} sessions open",
            self.server.active()
        );
        ctx.shutdown.store(true, Ordering::SeqCst);
        self.server.stop_accepting();
        let deadline = Instant::now() + grace;
        let busy = || self.server.active() + self.runner.in_flight();
        while busy() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let cut_short = busy();
        match cut_short {
            0 => log::info!("stopped"),
            n => log::warn!("stopped with {n} sessions or deliveries cut short by the grace period"),
        }
        Stopped { cut_short }
    }
}
