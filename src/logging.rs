//! Where log lines go: stderr with times in the foreground (`-d`), syslog
//! through /dev/log otherwise (a detached daemon, or `-i` under inetd, whose
//! stderr may be the client's socket), or the file `log_file` names on a
//! system without syslog (in the foreground, stderr as well).
//!
//! Mail log events (`maillog`) carry the Postfix component they stand for as
//! their log target (`mail/smtpd`, `mail/qmgr`, ...): their lines are tagged
//! `ternd/smtpd[PID]:` as Postfix's are `postfix/smtpd[PID]:`, which is what
//! log summarizers key on (`pflogsumm --syslog-name=ternd`).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{OnceLock, RwLock};
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::{clock, sys};

/// The log target prefix of mail log events; the rest is the component.
pub const COMPONENT: &str = "mail/";

/// Where syslog listens.
const SYSLOG_SOCKET: &str = "/dev/log";

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
    install(program, vec![Out::Stderr], level);
}

/// Log to syslog with `facility` (an RFC 5424 number, see `syslog_facility`).
pub fn to_syslog(program: &str, facility: u8, level: LevelFilter) {
    let out = Out::Syslog {
        facility,
        sock: RwLock::new(connect_syslog().ok()),
    };
    install(program, vec![out], level);
}

/// Whether syslog can be reached (its socket, /dev/log); Err says why not.
pub fn syslog_reachable() -> io::Result<()> {
    connect_syslog().map(drop)
}

/// Log to the file at `path` (appending; created mode 0640 when missing), and
/// to stderr as well when `also_stderr`. Returns whether the file was created.
pub fn to_file(program: &str, path: &Path, also_stderr: bool, level: LevelFilter) -> io::Result<bool> {
    let existed = path.exists();
    let file = open_log(path)?;
    let mut outs = vec![Out::File(LogFile {
        path: path.to_path_buf(),
        file: RwLock::new(file),
        host: short_hostname(),
    })];
    if also_stderr {
        outs.push(Out::Stderr);
    }
    install(program, outs, level);
    Ok(!existed)
}

/// SIGHUP: open the log file again, by its name (after logrotate moved it).
/// A file that cannot be opened now keeps the one in use; Err says why.
pub fn reopen() -> io::Result<()> {
    let Some(logger) = LOGGER.get() else {
        return Ok(());
    };
    for out in &logger.outs {
        if let Out::File(f) = out {
            let fresh = open_log(&f.path)?;
            *f.file.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
    }
    Ok(())
}

/// A tool's log (ternctl): where the daemon's goes, the `log_file` when one is
/// set (and can be opened), else syslog.
pub fn for_tool(program: &str, log_file: Option<&Path>, facility: u8) {
    if let Some(path) = log_file {
        if to_file(program, path, false, LevelFilter::Info).is_ok() {
            return;
        }
    }
    to_syslog(program, facility, LevelFilter::Info);
}

/// Log messages up to `level` from now on (start-up, and SIGHUP with a new
/// `log_level`).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// The one logger of this process, kept where [`reopen`] finds it.
static LOGGER: OnceLock<Logger> = OnceLock::new();

fn install(program: &str, outs: Vec<Out>, level: LevelFilter) {
    let logger = Logger {
        program: program.to_owned(),
        outs,
    };
    if LOGGER.set(logger).is_ok() {
        if let Some(l) = LOGGER.get() {
            if log::set_logger(l).is_ok() {
                set_level(level);
            }
        }
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The host name syslog would put on each line: its first label.
fn short_hostname() -> String {
    let h = sys::hostname().unwrap_or_else(|_| "localhost".to_owned());
    h.split('.').next().unwrap_or("localhost").to_owned()
}

/// No output takes a lock to write a line, so session threads log at once
/// without waiting for each other (std's `Stderr` lock, contended, was a third of
/// ternd's futex calls under load).
struct Logger {
    program: String,
    outs: Vec<Out>,
}

enum Out {
    /// `2026-11-23T13:08:39.042Z ternd/smtpd[PID]: INFO: text`, each line one write(2) of
    /// its own. The kernel keeps one write's bytes together: on a regular file it
    /// serialises writes through one open file, on a pipe up to PIPE_BUF (4096) bytes.
    Stderr,
    /// `<PRI>ternd/smtpd[PID]: text`, one datagram to /dev/log per line.
    Syslog {
        facility: u8,
        /// Shared for sending (a datagram socket needs no lock of its own); taken
        /// exclusively only to reconnect.
        sock: RwLock<Option<UnixDatagram>>,
    },
    /// `log_file`: what syslog would have written there,
    /// `2026-11-23T13:08:39.042Z host ternd/smtpd[PID]: text`, one O_APPEND
    /// write per line.
    File(LogFile),
}

struct LogFile {
    path: PathBuf,
    /// Shared for writing; taken exclusively only to reopen.
    file: RwLock<File>,
    host: String,
}

fn connect_syslog() -> io::Result<UnixDatagram> {
    let s = UnixDatagram::unbound()?;
    s.connect(SYSLOG_SOCKET)?;
    Ok(s)
}

/// `ternd/smtpd` for a mail log event of component smtpd, else `ternd`.
fn tag<'a>(program: &'a str, target: &str) -> std::borrow::Cow<'a, str> {
    match target.strip_prefix(COMPONENT) {
        Some(c) if !c.is_empty() => format!("{program}/{c}").into(),
        _ => program.into(),
    }
}

/// Postfix's way to mark severity inside the text (syslog and files have no
/// level column): `warning: ...`, `error: ...`.
fn severity(level: Level) -> &'static str {
    match level {
        Level::Error => "error: ",
        Level::Warn => "warning: ",
        Level::Info | Level::Debug | Level::Trace => "",
    }
}

fn stderr_line(now: SystemTime, tag: &str, pid: u32, level: Level, text: &fmt::Arguments<'_>) -> String {
    let now = clock::rfc3339_millis(now);
    format!("{now} {tag}[{pid}]: {level}: {text}\n")
}

/// RFC 3164 4.1.1: PRI is facility * 8 + severity.
fn syslog_line(facility: u8, tag: &str, pid: u32, level: Level, text: &fmt::Arguments<'_>) -> String {
    let severity_code = match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    };
    let pri = u16::from(facility) * 8 + severity_code;
    format!("<{pri}>{tag}[{pid}]: {}{text}", severity(level))
}

fn file_line(
    now: SystemTime,
    host: &str,
    tag: &str,
    pid: u32,
    level: Level,
    text: &fmt::Arguments<'_>,
) -> String {
    let now = clock::rfc3339_millis(now);
    format!("{now} {host} {tag}[{pid}]: {}{text}\n", severity(level))
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let pid = std::process::id();
        let tag = tag(&self.program, record.target());
        for out in &self.outs {
            match out {
                Out::Stderr => {
                    let line = stderr_line(SystemTime::now(), &tag, pid, record.level(), record.args());
                    let _ = sys::write_stderr(line.as_bytes());
                }
                Out::Syslog { facility, sock } => {
                    let msg = syslog_line(*facility, &tag, pid, record.level(), record.args());
                    let sent = {
                        let s = sock.read().unwrap_or_else(|e| e.into_inner());
                        s.as_ref().is_some_and(|s| s.send(msg.as_bytes()).is_ok())
                    };
                    if !sent {
                        // Not connected yet, or syslogd restarted: reconnect, send once more.
                        let mut s = sock.write().unwrap_or_else(|e| e.into_inner());
                        *s = connect_syslog().ok();
                        if let Some(s) = s.as_ref() {
                            let _ = s.send(msg.as_bytes());
                        }
                    }
                }
                Out::File(f) => {
                    let line = file_line(
                        SystemTime::now(),
                        &f.host,
                        &tag,
                        pid,
                        record.level(),
                        record.args(),
                    );
                    let file = f.file.read().unwrap_or_else(|e| e.into_inner());
                    let _ = (&*file).write_all(line.as_bytes());
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
        // mail (2) * 8 + warning (4); the severity in the text, as Postfix writes it.
        assert_eq!(
            syslog_line(2, "ternd", 42, Level::Warn, &format_args!("disk full")),
            "<20>ternd[42]: warning: disk full"
        );
        assert_eq!(
            syslog_line(2, "ternd/smtpd", 42, Level::Info, &format_args!("connect from x")),
            "<22>ternd/smtpd[42]: connect from x"
        );
        // log_file: syslog's line, which pflogsumm reads.
        assert_eq!(
            file_line(t, "mx", "ternd/qmgr", 7, Level::Info, &format_args!("A: removed")),
            "2026-11-23T13:08:39.042Z mx ternd/qmgr[7]: A: removed\n"
        );
        assert_eq!(
            file_line(t, "mx", "ternd", 7, Level::Error, &format_args!("bad")),
            "2026-11-23T13:08:39.042Z mx ternd[7]: error: bad\n"
        );
        assert_eq!(tag("ternd", "mail/smtpd"), "ternd/smtpd");
        assert_eq!(tag("ternd", "tern::queue::runner"), "ternd");
        assert_eq!(tag("ternd", "mail/"), "ternd");
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
