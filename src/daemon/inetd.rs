//! `ternd -i`: one session on stdin/stdout. The client is the socket's peer
//! (inetd), else $TCPREMOTEIP (tcpserver), else local.
//!
//! inetd usually starts it as root (the sample inetd.conf does): it then reads
//! its configuration and TLS key, gives the spool to `user` when it has to
//! (first use), and drops to `user` before the client sends a byte, so that
//! what it queues belongs to the daemon and no session runs as root. No
//! delivery helper is needed: a session only queues.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use super::start::{account, open_spool};
use super::Failure;
use crate::config::Config;
use crate::control;
use crate::pipeline::MailAuth;
use crate::server::session::{self, Peer};
use crate::spool;
use crate::sys;
use crate::sysexits::SysExit;
use crate::tls;

pub fn inetd(cfg: Config, tls: Option<Arc<tls::Source>>) -> ExitCode {
    match session_on_stdio(cfg, tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => ExitCode::from(f.report()),
    }
}

fn session_on_stdio(cfg: Config, tls: Option<Arc<tls::Source>>) -> Result<(), Failure> {
    let become_user = account(&cfg)?;
    let spool = open_spool(&cfg)?;
    let dir = &cfg.spool.dir;
    if let Some(pw) = &become_user {
        // Checked first without changing anything: only a spool this run had to
        // create (or one root wrote into) is given to `user`, so a busy inetd
        // does not walk the queue at every connection.
        if spool::check_owner(dir, pw.uid, false).is_err() {
            if let Err(e) = spool::check_owner(dir, pw.uid, true) {
                return Err(Failure::new(
                    SysExit::Config,
                    format!("spool {}: {e}", dir.display()),
                ));
            }
        }
        sys::drop_privileges(pw.uid, pw.gid).map_err(|e| {
            Failure::new(
                SysExit::OsErr,
                format!("cannot drop privileges to {}: {e}", pw.name),
            )
        })?;
    }
    let root = dir.clone();
    // As a daemon's sessions: keys read as the account the session runs as.
    let keys = MailAuth::load_keys(&cfg).map_err(|e| Failure::new(SysExit::Config, e))?;
    let mailauth = MailAuth::start(&cfg, keys);
    let queued = session::run_stdio(cfg, spool, &client(), tls, session::Door::Queue, mailauth);
    // The session only reports what it queued; the daemon, if it runs,
    // delivers at once (down, it finds the messages when it starts).
    control::wake(&root, &queued);
    Ok(())
}

/// Who is on the other end of stdin.
fn client() -> Peer {
    match sys::peer_of_fd(&std::io::stdin()) {
        Some(SocketAddr::V6(a)) => {
            Peer::remote(a.ip().to_ipv4_mapped().map_or(IpAddr::V6(*a.ip()), IpAddr::V4))
        }
        Some(a) => Peer::remote(a.ip()),
        None => match std::env::var("TCPREMOTEIP")
            .ok()
            .and_then(|s| s.parse::<IpAddr>().ok())
        {
            Some(ip) => Peer::remote(ip),
            None => Peer::local(),
        },
    }
}
