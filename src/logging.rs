//! Where log lines go: stderr with times in the foreground (`-d`), syslog
//! through /dev/log otherwise (a detached daemon, or `-i` under inetd, whose
//! stderr may be the client's socket).

use std::fmt;
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
    install(program, Out::Stderr, level);
}

/// Log to syslog with `facility` (an RFC 5424 number, see `syslog_facility`).
pub fn to_syslog(program: &str, facility: u8, level: LevelFilter) {
    let out = Out::Syslog {
        facility,
        sock: RwLock::new(connect_syslog()),
    };
    install(program, out, level);
}

/// Log messages up to `level` from now on (start-up, and SIGHUP with a new
/// `log_level`).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

fn install(program: &str, out: Out, level: LevelFilter) {
    let logger = Logger {
        program: program.to_owned(),
        out,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        set_level(level);
    }
}

/// Neither output takes a lock to write a line, so session threads log at once
/// without waiting for each other (std's `Stderr` lock, contended, was a third of
/// ternd's futex calls under load).
struct Logger {
    program: String,
    out: Out,
}

enum Out {
    /// `2026-11-23T13:08:39.042Z ternd[PID]: INFO: text`, each line one write(2) of
    /// its own. The kernel keeps one write's bytes together: on a regular file it
    /// serialises writes through one open file, on a pipe up to PIPE_BUF (4096) bytes.
    Stderr,
    /// `<PRI>ternd[PID]: text`, one datagram to /dev/log per line.
    Syslog {
        facility: u8,
        /// Shared for sending (a datagram socket needs no lock of its own); taken
        /// exclusively only to reconnect.
        sock: RwLock<Option<UnixDatagram>>,
    },
}

fn connect_syslog() -> Option<UnixDatagram> {
    let s = UnixDatagram::unbound().ok()?;
    s.connect("/dev/log").ok()?;
    Some(s)
}

fn stderr_line(now: SystemTime, program: &str, pid: u32, level: Level, text: &fmt::Arguments<'_>) -> String {
    let now = clock::rfc3339_millis(now);
    format!("{now} {program}[{pid}]: {level}: {text}\n")
}

/// RFC 3164 4.1.1: PRI is facility * 8 + severity.
fn syslog_line(facility: u8, program: &str, pid: u32, level: Level, text: &fmt::Arguments<'_>) -> String {
    let severity = match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    };
    let pri = u16::from(facility) * 8 + severity;
    format!("<{pri}>{program}[{pid}]: {text}")
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let (program, pid) = (&self.program, std::process::id());
        match &self.out {
            Out::Stderr => {
                let line = stderr_line(SystemTime::now(), program, pid, record.level(), record.args());
                let _ = sys::write_stderr(line.as_bytes());
            }
            Out::Syslog { facility, sock } => {
                let msg = syslog_line(*facility, program, pid, record.level(), record.args());
                let sent = {
                    let s = sock.read().unwrap_or_else(|e| e.into_inner());
                    s.as_ref().is_some_and(|s| s.send(msg.as_bytes()).is_ok())
                };
                if !sent {
                    // Not connected yet, or syslogd restarted: reconnect, send once more.
                    let mut s = sock.write().unwrap_or_else(|e| e.into_inner());
                    *s = connect_syslog();
                    if let Some(s) = s.as_ref() {
                        let _ = s.send(msg.as_bytes());
                    }
                }
            }
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_formats() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = UNIX_EPOCH + Duration::from_millis(1_795_439_319_042);
        assert_eq!(
            stderr_line(
                t,
                "ternd",
                42,
                Level::Info,
                &format_args!("{} queued", "0193A5F2C41B07E2")
            ),
            "2026-11-23T13:08:39.042Z ternd[42]: INFO: 0193A5F2C41B07E2 queued\n"
        );
        // mail (2) * 8 + warning (4)
        assert_eq!(
            syslog_line(2, "ternd", 42, Level::Warn, &format_args!("disk full")),
            "<20>ternd[42]: disk full"
        );
        assert_eq!(
            syslog_line(16, "t", 1, Level::Trace, &format_args!("x")),
            "<135>t[1]: x"
        );
    }

    #[test]
    fn verbose_raises_the_configured_level() {
        assert_eq!(level(LevelFilter::Info, 0), LevelFilter::Info);
        assert_eq!(level(LevelFilter::Info, 1), LevelFilter::Debug);
        assert_eq!(level(LevelFilter::Info, 5), LevelFilter::Trace);
        assert_eq!(level(LevelFilter::Error, 1), LevelFilter::Warn);
    }
}
