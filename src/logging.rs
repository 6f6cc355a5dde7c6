//! Where log lines go: stderr with times in the foreground (`-d`), syslog
//! through /dev/log otherwise (a detached daemon, or `-i` under inetd, whose
//! stderr may be the client's socket).

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

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
    let program = program.to_owned();
    let _ = env_logger::Builder::new()
        // The logger passes everything; the global maximum (set_level) filters,
        // so that a reload can change it.
        .filter_level(LevelFilter::Trace)
        .format(move |buf, record| {
            let ts = buf.timestamp_millis();
            writeln!(
                buf,
                "{ts} {program}[{}]: {}: {}",
                std::process::id(),
                record.level(),
                record.args()
            )
        })
        .target(env_logger::Target::Stderr)
        .try_init();
    set_level(level);
}

/// Log messages up to `level` from now on (start-up, and SIGHUP with a new
/// `log_level`).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

struct Syslog {
    program: String,
    facility: u8,
    sock: Mutex<Option<UnixDatagram>>,
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
        let mut sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        if sock.is_none() {
            *sock = Syslog::connect();
        }
        let sent = sock.as_ref().is_some_and(|s| s.send(msg.as_bytes()).is_ok());
        if !sent {
            // syslogd restarted: reconnect once next time.
            *sock = None;
        }
    }

    fn flush(&self) {}
}

/// Log to syslog with `facility` (an RFC 5424 number, see `syslog_facility`).
pub fn to_syslog(program: &str, facility: u8, level: LevelFilter) {
    let logger = Syslog {
        program: program.to_owned(),
        facility,
        sock: Mutex::new(Syslog::connect()),
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
