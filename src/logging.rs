//! Where log lines go: stderr with times in the foreground (`-d`), syslog
//! through /dev/log otherwise (a detached daemon, or `-i` under inetd, whose
//! stderr may be the client's socket).

use std::os::unix::net::UnixDatagram;
use std::sync::RwLock;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::{clock, sys};

/// The configured `log_level`, raised one step per `-v` (info, debug, trace).
pub fn level(base: LevelFilter, verbose: usize) -> LevelFilter {
    let mut level = base;
    for _ in 0..verbose {
        level = match level {
            LevelFilter::Off => LevelFilter::Error,
            LevelFilter::Error => LevelFilter::Warn,
            LevelFilter::Warn => LevelFilter::Info,
            LevelFilter::Info => LevelFilter::Debug,
            LevelFilter::Debug | LevelFilter::Trace => LevelFilter::Trace,
        };
    }
    level
}

/// Log to stderr with timestamps.
pub fn to_stderr(program: &str, level: LevelFilter) {
    let logger = Stderr {
        program: program.to_owned(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        set_level(level);
    }
}

/// `2026-11-23T13:08:39.042Z ternd[PID]: INFO: text` on stderr, each line one
/// write(2) of its own, taking no lock: session threads log at once without waiting
/// for each other (std's `Stderr` lock, contended, was a third of ternd's futex
/// calls under load). The kernel keeps one write's bytes together: on a regular
/// file it serialises writes through one open file, on a pipe it does so up to
/// PIPE_BUF (4096) bytes.
struct Stderr {
    program: String,
}

impl Log for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {}[{}]: {}: {}\n",
            clock::rfc3339_millis(SystemTime::now()),
            self.program,
            std::process::id(),
            record.level(),
            record.args()
        );
        let _ = sys::write_stderr(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Log messages up to `level` from now on (start-up, and SIGHUP with a new
/// `log_level`).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

struct Syslog {
    program: String,
    facility: u8,
    /// Shared for sending (a datagram socket needs no lock of its own); taken
    /// exclusively only to reconnect.
    sock: RwLock<Option<UnixDatagram>>,
}

impl Syslog {
    fn connect() -> Option<UnixDatagram> {
        let s = UnixDatagram::unbound().ok()?;
        s.connect("/dev/log").ok()?;
        Some(s)
    }
}

impl Log for Syslog {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let severity = match record.level() {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug | Level::Trace => 7,
        };
        let pri = u16::from(self.facility) * 8 + severity;
        let msg = format!(
            "<{pri}>{}[{}]: {}",
            self.program,
            std::process::id(),
            record.args()
        );
        let sent = {
            let sock = self.sock.read().unwrap_or_else(|e| e.into_inner());
            sock.as_ref().is_some_and(|s| s.send(msg.as_bytes()).is_ok())
        };
        if !sent {
            // Not connected yet, or syslogd restarted: reconnect and send once more.
            let mut sock = self.sock.write().unwrap_or_else(|e| e.into_inner());
            *sock = Syslog::connect();
            if let Some(s) = sock.as_ref() {
                let _ = s.send(msg.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Log to syslog with `facility` (an RFC 5424 number, see `syslog_facility`).
pub fn to_syslog(program: &str, facility: u8, level: LevelFilter) {
    let logger = Syslog {
        program: program.to_owned(),
        facility,
        sock: RwLock::new(Syslog::connect()),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        set_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_raises_the_configured_level() {
        assert_eq!(level(LevelFilter::Info, 0), LevelFilter::Info);
        assert_eq!(level(LevelFilter::Info, 1), LevelFilter::Debug);
        assert_eq!(level(LevelFilter::Info, 5), LevelFilter::Trace);
        assert_eq!(level(LevelFilter::Error, 1), LevelFilter::Warn);
    }
}
