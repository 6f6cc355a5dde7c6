//! The daemon's life outside SMTP: start-up, reload, shutdown, and the
//! single session of `ternd -i`. `bin/ternd.rs` only parses flags and calls
//! in here, so every step is reachable from tests.
//!
//! - `start.rs`: check and prepare everything that can fail visibly (spool,
//!   locks, listening sockets), detach, fork the root delivery helper and drop
//!   root, then start the queue runner, the control socket and the listeners,
//!   and turn signals into [`Event`]s for [`Daemon::run`];
//! - `reload.rs`: SIGHUP, what the key table says a reload may change;
//! - `stop.rs`: SIGTERM, a graceful stop within `shutdown_grace`;
//! - `inetd.rs`: `ternd -i`;
//! - `pidfile.rs`: the locked pid files;
//! - `readable.rs`: can the account the daemon runs as read its files?

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::pipeline::MailAuth;
use crate::sys;
use crate::sysexits::SysExit;
use crate::tls;

mod inetd;
mod pidfile;
mod readable;
mod reload;
mod start;
mod stop;
#[cfg(test)]
mod tests;

pub use inetd::inetd;
pub use pidfile::PidFile;
pub use readable::{child_main as check_readable_main, CHECK_FLAG};
pub use reload::Reloaded;
pub use start::{account, prepare, run, Daemon, Prepared};
pub use stop::Stopped;

/// Where the configuration came from, for SIGHUP.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The configuration file.
    pub path: PathBuf,
    /// The directory ternd was started in: relative paths resolve against it
    /// (detached, the daemon is in / by then).
    pub cwd: PathBuf,
    /// How many -v: they raise a reloaded `log_level` too.
    pub verbose: usize,
}

/// A start-up that failed: what to say, and the exit status.
#[derive(Debug)]
pub struct Failure {
    pub code: SysExit,
    pub what: String,
}

impl Failure {
    fn new(code: SysExit, what: impl std::fmt::Display) -> Failure {
        Failure {
            code,
            what: what.to_string(),
        }
    }

    /// Print and log the failure, each of its lines; return its exit status.
    pub fn report(&self) -> SysExit {
        for line in self.what.lines() {
            eprintln!("ternd: {line}");
            log::error!("{line}");
        }
        self.code
    }
}

/// Start-up and `ternd -n`: every file the daemon reads once it runs as
/// `account` (the account a root ternd becomes; None: this process's own)
/// must be readable by it. The failure has one line per file that is not,
/// naming the file, the account and the fix.
pub fn check_files(cfg: &Config, account: Option<&sys::Passwd>) -> Result<(), Failure> {
    let bad = readable::unreadable(cfg, account)
        .map_err(|e| Failure::new(SysExit::OsErr, format!("cannot check the configured files: {e}")))?;
    if bad.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = bad.iter().map(ToString::to_string).collect();
    Err(Failure::new(SysExit::Config, lines.join("\n")))
}

/// Read the configuration at `path`, resolve its relative paths against
/// `cwd`, load its certificate and check its DKIM keys: what start-up and
/// `ternd -n` do first. Certificate and key problems are configuration
/// errors, found here rather than at the first STARTTLS or the first
/// message to sign. The error is the line to print (FILE:LINE: why).
pub fn load(path: &Path, cwd: &Path) -> Result<(Config, Option<Arc<tls::Source>>), String> {
    let mut cfg = Config::load(path).map_err(|e| e.to_string())?;
    cfg.resolve_relative(cwd);
    let tls = tls::Source::new(&cfg)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .map(Arc::new);
    // Only checked here (perhaps as root): the daemon reads them again as
    // the account it runs as, as a reload does (`Daemon::serve`).
    MailAuth::load_keys(&cfg).map_err(|e| e.to_string())?;
    Ok((cfg, tls))
}

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGHUP: re-read the configuration and tables.
    Reload,
    /// SIGTERM, SIGINT: stop gracefully.
    Stop,
    /// SIGUSR1: run the queue now.
    Flush,
}

/// Block the daemon's signals in every thread (call before starting any)
/// and start the one thread that waits for them.
pub fn signals() -> io::Result<crossbeam_channel::Receiver<Event>> {
    sys::block_signals(&sys::DAEMON_SIGNALS)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || loop {
            let event = match sys::wait_signal(&sys::DAEMON_SIGNALS) {
                Ok(libc::SIGHUP) => Event::Reload,
                Ok(libc::SIGUSR1) => Event::Flush,
                Ok(_) => Event::Stop,
                Err(e) => {
                    log::error!("sigwait: {e}");
                    return;
                }
            };
            if tx.send(event).is_err() {
                return;
            }
        })?;
    Ok(rx)
}
