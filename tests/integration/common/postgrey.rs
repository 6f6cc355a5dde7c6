//! postgrey, the greylisting policy server that speaks Postfix's policy
//! delegation protocol, on a free loopback port with a private database
//! directory, empty whitelists (Debian's list whitelists nothing a test uses,
//! but a test must not depend on it) and a short delay:
//! `postgrey --inet=127.0.0.1:PORT --dbdir=DIR/db --delay=N`.
//!
//! As root postgrey drops to its own account (the package makes it), so
//! its database directory is given to that account.
//!
//! ```ignore
//! let Some(grey) = Postgrey::start(2) else { return };   // 2 s delay
//! grey.conf();   // policy_services = inet:127.0.0.1:PORT
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use super::process::{self, PeerProcess, Service};
use super::skip;

/// A running postgrey; `addr()`, `conf()` and `process()` come from [`Service`].
pub struct Postgrey {
    service: Service,
    pub delay: u32,
}

impl std::ops::Deref for Postgrey {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

impl Postgrey {
    /// Greylist for `delay` seconds. None when postgrey is missing (skip
    /// recorded; a failure under CI).
    pub fn start(delay: u32) -> Option<Postgrey> {
        if !skip::installed("postgrey", &[]) {
            return None;
        }
        Some(process::retry_start("postgrey", || Postgrey::spawn(delay)))
    }

    fn spawn(delay: u32) -> Result<Postgrey, String> {
        let dir = process::peer_dir("postgrey");
        let d = dir.path().to_path_buf();
        let db = d.join("db");
        std::fs::create_dir_all(&db).map_err(|e| e.to_string())?;
        std::fs::write(d.join("empty"), "").map_err(|e| e.to_string())?;
        let mut cmd = Command::new(skip::find_tool("postgrey").ok_or("no postgrey")?);
        let port = process::free_port();
        cmd.arg(format!("--inet=127.0.0.1:{port}"))
            .arg(format!("--dbdir={}", db.display()))
            .arg(format!("--delay={delay}"))
            .arg(format!("--pidfile={}/postgrey.pid", d.display()))
            .arg(format!("--whitelist-clients={}/empty", d.display()))
            .arg(format!("--whitelist-recipients={}/empty", d.display()))
            .arg("--auto-whitelist-clients=0")
            .arg("--greylist-text=Greylisted by the test postgrey, try again later")
            .arg("--verbose");
        if skip::is_root() {
            let (uid, gid) = process::account("postgrey").ok_or("no postgrey account")?;
            process::chown_tree(&db, uid, gid);
        } else {
            // Not root: it cannot change user, so it stays who we are.
            let me = std::env::var("USER").unwrap_or_default();
            cmd.arg(format!("--user={me}"));
        }
        let mut proc = PeerProcess::spawn("postgrey", cmd, dir, vec![])?;
        proc.wait_ready(Duration::from_secs(20), || {
            process::tcp_answers(process::localhost(port))
        })?;
        Ok(Postgrey {
            service: Service { proc, port },
            delay,
        })
    }
}

/// One policy delegation request (name=value lines and an empty line, as
/// Postfix sends them); returns the `action=` value of the answer.
pub fn policy_request(addr: SocketAddr, attrs: &[(&str, &str)]) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut req = String::from("request=smtpd_access_policy\n");
    for (k, v) in attrs {
        req.push_str(&format!("{k}={v}\n"));
    }
    req.push('\n');
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut action = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(a) = line.strip_prefix("action=") {
            action = Some(a.to_owned());
        }
    }
    action.ok_or_else(|| "no action= in the answer".to_owned())
}
