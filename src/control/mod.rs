//! The control socket: how `sendmail`, `ternctl` and `ternd -i` talk to a
//! running ternd.
//!
//! A Unix stream socket at `SPOOL/control`, mode 0660, owner root and group `tern`
//! when root starts the daemon and the group exists, so only root and that group
//! may use it (sendmail runs setgid tern). One connection carries one
//! [`Request`] and gets one [`Response`] (the wire format is in `protocol.rs`).
//!
//! The server forwards orders to the queue runner and lists the queue for
//! `mailq` (so that users who may not read the spool can list it, as with
//! Postfix's showq) with `spool::listing`; nothing here writes the spool's
//! files. When the daemon is down the socket refuses connections, and the
//! callers fall back to their own means (the maildrop waits, ternctl works on
//! the spool directly).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::queue::runner::Control;
use crate::spool::{self, listing, QueueId, Spool};
use crate::sys;

mod protocol;

pub use protocol::{Request, Response};

/// Longest request line read: "wake " and a queue id fit many times over.
const MAX_LINE: u64 = 256;
/// The most of a reply read from the daemon (a queue listing can be long).
const MAX_REPLY: u64 = 64 * 1024 * 1024;
/// A client that does not finish its line in this time is dropped.
const TIMEOUT: Duration = Duration::from_secs(5);

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
    let response = match Request::decode(&line) {
        Ok(req) => respond(req, runner, spool),
        Err(why) => Response::Error(why),
    };
    (&conn).write_all(response.encode().as_bytes())
}

/// Carry out one request.
fn respond(req: Request, runner: &Sender<Control>, spool: &Spool) -> Response {
    let order = match req {
        Request::Mailq => {
            return match listing::mailq(spool) {
                Ok(text) => Response::Listing(text),
                Err(e) => Response::Error(e.to_string()),
            }
        }
        Request::Pickup => Control::Pickup,
        Request::Flush => Control::Flush,
        Request::Wake(id) => Control::Wake(id),
        Request::TlsRpt => Control::TlsRpt,
    };
    log::info!("control: {}", Request::from(order.clone()).encode().trim_end());
    match runner.send(order) {
        Ok(()) => Response::Ok,
        Err(_) => Response::Error("the queue runner is not running".to_owned()),
    }
}

impl From<Control> for Request {
    fn from(c: Control) -> Request {
        match c {
            Control::Pickup => Request::Pickup,
            Control::Flush => Request::Flush,
            Control::Wake(id) => Request::Wake(id),
            Control::TlsRpt => Request::TlsRpt,
        }
    }
}

impl fmt::Display for Response {
    /// As on the wire, without the line end (`ok`, `error: WHY`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode().trim_end_matches('\n'))
    }
}

/// Ask the daemon of the spool at `root`. An error means it could not be
/// reached (it is down, or we may not talk to it) or gave no proper answer.
pub fn request(root: &Path, req: &Request) -> io::Result<Response> {
    let conn = UnixStream::connect(spool::control_socket(root))?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.set_write_timeout(Some(TIMEOUT))?;
    (&conn).write_all(req.encode().as_bytes())?;
    let mut text = String::new();
    if *req == Request::Mailq {
        (&conn).take(MAX_REPLY).read_to_string(&mut text)?;
    } else {
        BufReader::new(&conn).take(MAX_LINE).read_line(&mut text)?;
    }
    Response::decode(req, &text).ok_or_else(|| {
        let what = if text.is_empty() {
            "no reply"
        } else {
            "unexpected reply"
        };
        io::Error::new(io::ErrorKind::UnexpectedEof, what)
    })
}

/// Tell the daemon of the spool at `root` about messages a session put in
/// the queue, so that it delivers them at once. Best effort: a daemon that
/// is down finds them when it starts.
pub fn wake(root: &Path, ids: &[QueueId]) {
    for id in ids {
        let _ = request(root, &Request::Wake(id.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_over_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        // Nobody listening: an error, not a hang.
        assert!(request(dir.path(), &Request::Flush).is_err());
        serve(dir.path(), tx.clone()).unwrap();
        let mode = std::fs::metadata(spool::control_socket(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o660);
        assert_eq!(request(dir.path(), &Request::Flush).unwrap(), Response::Ok);
        assert_eq!(rx.recv_timeout(TIMEOUT), Ok(Control::Flush));
        let id = QueueId::generate();
        wake(dir.path(), std::slice::from_ref(&id));
        assert_eq!(rx.recv_timeout(TIMEOUT), Ok(Control::Wake(id)));
        assert_eq!(
            request(dir.path(), &Request::Mailq).unwrap(),
            Response::Listing("Mail queue is empty\n".to_owned())
        );
        // A line the protocol does not have, as a raw client sends it.
        let mut raw = UnixStream::connect(spool::control_socket(dir.path())).unwrap();
        raw.write_all(b"bogus\n").unwrap();
        let mut reply = String::new();
        raw.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "error: unknown command\n");
        // A runner that is gone.
        drop(rx);
        assert_eq!(
            request(dir.path(), &Request::Pickup).unwrap().to_string(),
            "error: the queue runner is not running"
        );
        // A second daemon on the same spool is refused.
        assert!(serve(dir.path(), tx).is_err());
    }
}
