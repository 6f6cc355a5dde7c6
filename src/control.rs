//! The control socket: how `sendmail` and `ternctl` talk to a running ternd.
//!
//! A Unix stream socket at `SPOOL/control`, mode 0660, owner root and group `tern`
//! when root starts the daemon and the group exists, so only root and that group
//! may use it (sendmail runs setgid tern). One connection carries one command line
//! and gets one reply line:
//!
//! ```text
//! pickup       → ok         queue what waits in the maildrop now
//! flush        → ok         try every deferred recipient now
//! wake ID      → ok         look at message ID now
//! mailq        → the queue listing (many lines), then the connection closes
//! (other)      → error: unknown command
//! ```
//!
//! The server forwards orders to the queue runner and reads the queue for
//! `mailq` (so that users who may not read the spool can list it, as with
//! Postfix's showq); nothing here writes the spool's files. When the daemon is down the socket refuses connections, and the
//! callers fall back to their own means (the maildrop waits, ternctl works on the
//! spool directly).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::queue::runner::Control;
use crate::spool::{self, QueueId, Spool};
use crate::sys;

/// Longest command line read: "wake " and a queue id fit many times over.
const MAX_LINE: u64 = 256;
/// The most of a queue listing read from the daemon.
const MAX_LISTING: u64 = 64 * 1024 * 1024;
/// A client that does not finish its line in this time is dropped.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Parse one command line.
pub fn parse(line: &str) -> Result<Control, String> {
    let mut words = line.split_whitespace();
    let cmd = match (words.next(), words.next(), words.next()) {
        (Some("pickup"), None, _) => Control::Pickup,
        (Some("flush"), None, _) => Control::Flush,
        (Some("wake"), Some(id), None) => match QueueId::parse(id) {
            Some(id) => Control::Wake(id),
            None => return Err(format!("not a queue id: {id}")),
        },
        _ => return Err("unknown command".to_owned()),
    };
    Ok(cmd)
}

/// Bind the control socket of the spool at `root` and serve it on a thread,
/// forwarding each order to `runner`.
pub fn serve(root: &Path, runner: Sender<Control>) -> io::Result<()> {
    let path = spool::control_socket(root);
    // A socket left by a daemon that died: nobody answers on it, so it is safe to
    // replace. One that answers belongs to a running ternd: refuse to steal it.
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: another ternd is running", path.display()),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let spool = Spool::open(root).map_err(|e| io::Error::other(e.to_string()))?;
    let listener = UnixListener::bind(&path)?;
    if sys::uids().1 == 0 {
        if let Some(gid) = sys::group_id(spool::GROUP) {
            std::os::unix::fs::chown(&path, Some(0), Some(gid))?;
        }
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
    log::info!("control socket {}", path.display());
    thread::Builder::new().name("control".to_owned()).spawn(move || {
        for conn in listener.incoming() {
            match conn {
                Ok(c) => {
                    if let Err(e) = answer(c, &runner, &spool) {
                        log::debug!("control: {e}");
                    }
                }
                Err(e) => log::warn!("control: accept: {e}"),
            }
        }
    })?;
    Ok(())
}

fn answer(conn: UnixStream, runner: &Sender<Control>, spool: &Spool) -> io::Result<()> {
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.set_write_timeout(Some(TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(&conn).take(MAX_LINE).read_line(&mut line)?;
    if line.trim() == "mailq" {
        let text = match crate::ctl::mailq(spool) {
            Ok(t) => t,
            Err(e) => format!("error: {e}\n"),
        };
        return (&conn).write_all(text.as_bytes());
    }
    let reply = match parse(line.trim()) {
        Ok(c) => {
            log::info!("control: {}", line.trim());
            match runner.send(c) {
                Ok(()) => "ok".to_owned(),
                Err(_) => "error: the queue runner is not running".to_owned(),
            }
        }
        Err(e) => format!("error: {e}"),
    };
    (&conn).write_all(format!("{reply}\n").as_bytes())
}

/// The queue listing from the daemon of the spool at `root` (`mailq` for
/// users who may not read the spool themselves).
pub fn mailq(root: &Path) -> io::Result<String> {
    let conn = UnixStream::connect(spool::control_socket(root))?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.set_write_timeout(Some(TIMEOUT))?;
    (&conn).write_all(b"mailq\n")?;
    let mut text = String::new();
    (&conn).take(MAX_LISTING).read_to_string(&mut text)?;
    if text.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no reply"));
    }
    Ok(text)
}

/// Send one command to the daemon of the spool at `root` and return its reply line.
/// An error means the daemon could not be reached (it is down, or we may not talk
/// to it) or gave no answer.
pub fn send(root: &Path, command: &str) -> io::Result<String> {
    let conn = UnixStream::connect(spool::control_socket(root))?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.set_write_timeout(Some(TIMEOUT))?;
    (&conn).write_all(format!("{command}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&conn).take(MAX_LINE).read_line(&mut reply)?;
    let reply = reply.trim_end().to_owned();
    if reply.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no reply"));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse("pickup"), Ok(Control::Pickup));
        assert_eq!(parse(" flush "), Ok(Control::Flush));
        let id = QueueId::generate();
        assert_eq!(parse(&format!("wake {id}")), Ok(Control::Wake(id)));
        assert!(parse("wake ../etc").is_err());
        assert!(parse("wake").is_err());
        assert!(parse("flush now").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn round_trip_over_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        // Nobody listening: an error, not a hang.
        assert!(send(dir.path(), "flush").is_err());
        serve(dir.path(), tx.clone()).unwrap();
        let mode = std::fs::metadata(spool::control_socket(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o660);
        assert_eq!(send(dir.path(), "flush").unwrap(), "ok");
        assert_eq!(rx.recv_timeout(TIMEOUT), Ok(Control::Flush));
        assert_eq!(send(dir.path(), "bogus").unwrap(), "error: unknown command");
        // A second daemon on the same spool is refused.
        assert!(serve(dir.path(), tx).is_err());
    }
}
