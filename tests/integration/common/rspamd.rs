//! rspamd (Debian's rspamd 3.4) as a milter: its proxy worker in milter mode
//! (`milter = yes`, scanning in the same process: `self_scan = yes`) on a
//! free loopback port, run privately as `rspamd -f -i -c DIR/rspamd.conf`.
//!
//! The configuration is our own, not /etc/rspamd's: Debian's loads dozens
//! of modules that fetch maps from the internet, query public DNS blocklists
//! and fuzzy servers, none of which a test may reach. Here only the core
//! (which knows the GTUBE test string and rejects it) and the
//! `milter_headers` plugin (X-Spamd-Result, X-Rspamd-Queue-Id, X-Spam-Status)
//! are loaded, from a private plugin directory; rspamd's resolver is pointed
//! at the tests' loopback stub DNS. No redis, no controller.
//!
//! The first start on a machine compiles rspamd's TLD table for hyperscan
//! (about 11 s on the 2-core test machine); the result is kept in
//! target/test-peers/rspamd-hs, so later starts take well under a second.
//!
//! ```ignore
//! let Some(rspamd) = Rspamd::start() else { return };
//! rspamd.conf();   // milters = inet:127.0.0.1:PORT
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{self, PeerProcess, Service};
use super::skip;

/// The GTUBE test string: rspamd rejects any message that contains it.
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// A running rspamd; `addr()`, `conf()` and `process()` come from [`Service`].
pub struct Rspamd(Service);

impl std::ops::Deref for Rspamd {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.0
    }
}

fn plugins_dir() -> Option<PathBuf> {
    ["/usr/share/rspamd/plugins"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("milter_headers.lua").exists())
}

/// Write a private configuration for a proxy on `port` into `dir`.
fn write_conf(dir: &Path, port: u16, hs_cache: &Path) -> Result<PathBuf, String> {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).map_err(|e| e.to_string())?;
    let src = plugins_dir().ok_or("no rspamd plugins directory")?;
    std::os::unix::fs::symlink(src.join("milter_headers.lua"), plugins.join("milter_headers.lua"))
        .map_err(|e| e.to_string())?;
    for sub in ["local", "db"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
    }
    let dns = super::dns::default_stub();
    let conf = format!(
        "# Private rspamd for tern's tests: no network modules, see common/rspamd.rs.\n\
         options {{\n  pidfile = \"{d}/rspamd.pid\";\n  hs_cache_dir = \"{hs}\";\n  \
         dns {{ nameserver = [\"{dns}\"]; timeout = 1s; retransmits = 1; }}\n  \
         gtube_patterns = \"all\";\n  local_addrs = [];\n}}\n\
         logging {{ type = \"console\"; level = \"info\"; systemd = false; }}\n\
         actions {{ reject = 15; add_header = 6; greylist = 4; }}\n\
         modules {{ path = \"{d}/plugins\"; }}\n\
         milter_headers {{\n  use = [\"x-spamd-result\", \"x-rspamd-queue-id\", \"x-spam-status\"];\n  \
         skip_local = false;\n  skip_authenticated = false;\n}}\n\
         worker \"rspamd_proxy\" {{\n  bind_socket = \"127.0.0.1:{port}\";\n  milter = yes;\n  \
         timeout = 60s;\n  count = 1;\n  upstream \"local\" {{ default = yes; self_scan = yes; }}\n}}\n",
        d = dir.display(),
        hs = hs_cache.display(),
    );
    let path = dir.join("rspamd.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    Ok(path)
}

fn command(dir: &Path, conf: &Path) -> Result<Command, String> {
    let mut cmd = Command::new(skip::find_tool("rspamd").ok_or("no rspamd")?);
    // -i: workers may run as root (the tests do); the directories rspamd
    // would take from /etc, /var/lib and /run are the temp dir's.
    cmd.args(["-f", "-i", "-c"])
        .arg(conf)
        .arg(format!("--var=LOCAL_CONFDIR={}/local", dir.display()))
        .arg(format!("--var=DBDIR={}/db", dir.display()))
        .arg(format!("--var=RUNDIR={}", dir.display()))
        .arg(format!("--var=LOGDIR={}", dir.display()))
        .env("TMPDIR", dir);
    Ok(cmd)
}

/// target/test-peers/rspamd-hs, filled by one start of rspamd (under the
/// cache lock, so parallel tests wait for it instead of compiling too).
fn hs_cache() -> PathBuf {
    process::cached("rspamd-hs", |hs| {
        let dir = process::peer_dir("rspamd-warmup");
        let port = process::free_port();
        let conf = write_conf(dir.path(), port, hs)?;
        let cmd = command(dir.path(), &conf)?;
        let mut p = PeerProcess::spawn("rspamd (first start)", cmd, dir, vec![])?;
        p.wait_ready(Duration::from_secs(120), || {
            process::tcp_answers(process::localhost(port)) && hs_compiled(hs)
        })?;
        p.stop();
        Ok(())
    })
}

/// The compiled TLD table is written (a .hsmp file) once the proxy runs.
fn hs_compiled(hs: &Path) -> bool {
    std::fs::read_dir(hs).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "hsmp"))
    })
}

impl Rspamd {
    /// None when rspamd is missing (skip recorded; a failure under CI).
    pub fn start() -> Option<Rspamd> {
        if !skip::installed("rspamd", &["/usr/share/rspamd/plugins/milter_headers.lua"]) {
            return None;
        }
        let hs = hs_cache();
        Some(process::retry_start("rspamd", || {
            let dir = process::peer_dir("rspamd");
            let port = process::free_port();
            let conf = write_conf(dir.path(), port, &hs)?;
            let cmd = command(dir.path(), &conf)?;
            let mut proc = PeerProcess::spawn("rspamd", cmd, dir, vec![])?;
            proc.wait_ready(Duration::from_secs(30), || {
                process::tcp_answers(process::localhost(port))
            })?;
            Ok(Rspamd(Service { proc, port }))
        }))
    }
}
