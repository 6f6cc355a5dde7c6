//! What every real peer (nsd, unbound, nginx, dovecot, opendkim, rspamd,
//! postgrey, postfix, the python test milter) shares: a private temp
//! directory, free loopback ports, a child process in its own process group
//! whose output is kept, a bounded wait until it answers, and on Drop a
//! SIGTERM (then SIGKILL) to the whole group. When the test is failing, Drop
//! prints the tail of the peer's output and log files and keeps its
//! directory for a look.
//!
//! Also the cache for what is slow to make and the same in every run (DNSSEC
//! and DKIM keys, rspamd's compiled patterns), under target/test-peers/.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines of a peer's stdout/stderr kept for the failure report.
const KEEP_LINES: usize = 2000;
/// Lines printed per source when a test fails.
const TAIL_LINES: usize = 40;

/// A port on 127.0.0.1 that is free for TCP and UDP right now. Another
/// process may take it before the peer binds it: peers are started with
/// [`retry_start`], which tries again on a new port.
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// Start something that picks its own ports: up to 4 tries, so a port taken
/// between [`free_port`] and the peer's bind costs a retry, not a failure.
pub fn retry_start<T>(what: &str, mut start: impl FnMut() -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..4 {
        match start() {
            Ok(t) => return t,
            Err(e) => last = e,
        }
    }
    panic!("{what} did not start:\n{last}");
}

/// True when a TCP connection to `addr` succeeds.
pub fn tcp_answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A temp directory for a peer: tern-peer-NAME-XXXX under the system's temp
/// dir, mode 0755 so the unprivileged accounts peers run as (postgrey,
/// dovecot's mail user, nginx workers, postfix) and ternd after it dropped
/// root can reach what is meant for them inside.
pub fn peer_dir(name: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(&format!("tern-peer-{name}-"))
        .tempdir()
        .expect("peer tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod peer dir");
    dir
}

/// A running peer process (and everything it forks: its own process group).
pub struct PeerProcess {
    pub name: String,
    child: Child,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    output: Arc<Mutex<VecDeque<String>>>,
    logs: Vec<PathBuf>,
    /// Pid files of processes that left our process group (a daemon that
    /// calls setsid, as Postfix's master does): their groups are stopped too.
    pid_files: Vec<PathBuf>,
    /// Each pid file's process as seen while the peer ran: (pid, start
    /// time). A pid is signalled only while it is still that process.
    seen: Mutex<Vec<(libc::pid_t, u64)>>,
    stopped: bool,
}

impl PeerProcess {
    /// Spawn `cmd` in a new process group, stdin closed, stdout and stderr
    /// kept. `dir` is removed when the peer is dropped (kept if the test
    /// fails); `logs` are files the peer writes, tailed on failure.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        dir: tempfile::TempDir,
        logs: Vec<PathBuf>,
    ) -> Result<PeerProcess, String> {
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("spawn {name} ({cmd:?}): {e}"))?;
        let output = Arc::new(Mutex::new(VecDeque::new()));
        let out: Option<Box<dyn Read + Send>> =
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        let err: Option<Box<dyn Read + Send>> =
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        for stream in [out, err].into_iter().flatten() {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut o = output.lock().unwrap_or_else(|e| e.into_inner());
                    if o.len() >= KEEP_LINES {
                        o.pop_front();
                    }
                    o.push_back(line);
                }
            });
        }
        Ok(PeerProcess {
            name: name.to_owned(),
            child,
            path: dir.path().to_path_buf(),
            dir: Some(dir),
            output,
            logs,
            pid_files: Vec::new(),
            seen: Mutex::new(Vec::new()),
            stopped: false,
        })
    }

    /// The peer's private directory.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A pid file whose process (and its process group) is stopped with
    /// this peer: for a daemon that starts its own session.
    pub fn add_pid_file(&mut self, path: PathBuf) {
        self.pid_files.push(path);
    }

    /// Another log file to tail on failure.
    pub fn add_log(&mut self, path: PathBuf) {
        self.logs.push(path);
    }

    /// Poll `ready` every 20 ms until it is true; an error with the log tail
    /// if the process exits first or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                self.remember_pid_files();
                return Ok(());
            }
            if let Some(status) = self.exit_status() {
                // Let the reader threads catch the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Err(format!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.name,
                    self.tail()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} not ready after {timeout:?}:\n{}",
                    self.name,
                    self.tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the main process runs.
    pub fn running(&mut self) -> bool {
        !self.exited()
    }

    /// True when the main process has exited, without reaping it: while it
    /// is an unreaped zombie its pid, which is also its process group's id,
    /// cannot be reused, so signalling the group can never reach another
    /// program's processes (other agents' test peers and shells run here).
    fn exited(&self) -> bool {
        self.exit_status().is_some()
    }

    /// How the main process ended, if it has, without reaping it.
    fn exit_status(&self) -> Option<String> {
        let pid: libc::id_t = self.child.id();
        // SAFETY: waitid(2) writes only into `info`, a zeroed siginfo_t we own.
        #[allow(unsafe_code)]
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            if r == -1 {
                // ECHILD: reaped already (only stop() reaps).
                return Some("reaped".to_owned());
            }
            // si_pid 0: still running.
            (info.si_pid() != 0).then(|| match info.si_code {
                libc::CLD_EXITED => format!("exit status {}", info.si_status()),
                _ => format!("signal {}", info.si_status()),
            })
        }
    }

    /// Record each pid file's process while the peer is known to run.
    fn remember_pid_files(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for f in &self.pid_files {
            if let Some(pid) = read_pid(f) {
                if let Some(start) = start_time(pid) {
                    if !seen.iter().any(|&(p, _)| p == pid) {
                        seen.push((pid, start));
                    }
                }
            }
        }
    }

    /// Everything the peer printed so far, one line each.
    pub fn output(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Wait up to `secs` for a line of output or of a log file containing
    /// `needle`.
    pub fn wait_output(&self, secs: u64, needle: &str) -> bool {
        super::wait_until(secs, || {
            self.output().iter().any(|l| l.contains(needle))
                || self
                    .logs
                    .iter()
                    .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(needle)))
        })
    }

    /// The last lines of the output and of each log file.
    pub fn tail(&self) -> String {
        let mut s = String::new();
        let out = self.output();
        s.push_str(&format!(
            "--- {} output (last {TAIL_LINES} lines) ---\n",
            self.name
        ));
        for l in out.iter().skip(out.len().saturating_sub(TAIL_LINES)) {
            s.push_str(l);
            s.push('\n');
        }
        for log in &self.logs {
            let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("({e})"));
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&format!("--- {} (last {TAIL_LINES} lines) ---\n", log.display()));
            for l in lines.iter().skip(lines.len().saturating_sub(TAIL_LINES)) {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// The process groups to signal: the child's, and those of the pids in
    /// the pid files.
    fn groups(&self) -> Vec<libc::pid_t> {
        let mut g: Vec<libc::pid_t> = libc::pid_t::try_from(self.child.id()).into_iter().collect();
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for f in &self.pid_files {
            let Some(pid) = read_pid(f) else { continue };
            // A pid file's process that has exited may have its pid reused by
            // anyone: signal it only while it is the process seen running.
            let same = seen
                .iter()
                .any(|&(p, start)| p == pid && start_time(pid) == Some(start));
            if same && !g.contains(&pid) {
                g.push(pid);
            }
        }
        g
    }

    /// Send `sig` to the peer's whole process group (and the groups of its
    /// pid files).
    pub fn signal(&self, sig: i32) {
        for pgid in self.groups() {
            // SAFETY: kill(2) takes plain integers; a negative pid names a
            // process group (the child leads its own: process_group(0)).
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
    }

    /// SIGTERM to the groups, up to 5 s for every leader to exit, then
    /// SIGKILL to the groups. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.remember_pid_files();
        let groups = self.groups();
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let child_done = self.exited();
            // A leader that is not our child: gone when /proc has no entry
            // (or only a zombie's, which its parent will reap).
            let others_done = groups.iter().skip(1).all(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map(|s| {
                        s.rsplit(')')
                            .next()
                            .is_some_and(|r| r.trim_start().starts_with('Z'))
                    })
                    .unwrap_or(true)
            });
            if child_done && others_done {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Whatever is left of the groups (children that outlive their master).
        // The child is not reaped yet, so its group id is still ours.
        for pgid in &groups {
            // SAFETY: as in signal().
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("{}", self.tail());
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("--- {}: files kept in {} ---", self.name, kept.display());
            }
        }
    }
}

/// target/test-peers/: generated files reused across runs.
pub fn cache_root() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    target.join("test-peers")
}

/// A cached directory `target/test-peers/NAME`, made once by `make` (into a
/// fresh directory it is given) under a lock, so parallel tests and test
/// processes neither wait for each other's half-made files nor make them twice.
pub fn cached(name: &str, make: impl FnOnce(&Path) -> Result<(), String>) -> PathBuf {
    let root = cache_root();
    let done = root.join(name);
    if done.is_dir() {
        return done;
    }
    std::fs::create_dir_all(&root).expect("create target/test-peers");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(format!("{}.lock", name.replace('/', "_"))))
        .expect("cache lock");
    lock.lock().expect("lock the cache");
    if !done.is_dir() {
        let tmp = root.join(format!("{}.tmp{}", name.replace('/', "_"), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).expect("cache tmp dir");
        if let Err(e) = make(&tmp) {
            let _ = std::fs::remove_dir_all(&tmp);
            panic!("making target/test-peers/{name}: {e}");
        }
        if let Some(parent) = done.parent() {
            std::fs::create_dir_all(parent).expect("cache parent");
        }
        std::fs::rename(&tmp, &done).expect("publish cache dir");
    }
    drop(lock);
    done
}

/// Run a short helper program (key generation, signing) to completion;
/// its stderr in the error.
pub fn run_tool(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Recursively give `path` to `uid:gid` (peers that drop root write there).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() {
        for e in std::fs::read_dir(path).expect("read_dir").flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
}

/// The messages in a Maildir's `subdirs` (new, cur), ordered by file name
/// (Maildir names start with the delivery time).
pub fn maildir_messages(maildir: &Path, subdirs: &[&str]) -> Vec<String> {
    let mut files: Vec<PathBuf> = subdirs
        .iter()
        .flat_map(|sub| {
            std::fs::read_dir(maildir.join(sub))
                .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

/// uid and gid of a system account (postgrey, _rspamd, dovecot...).
pub fn account(name: &str) -> Option<(u32, u32)> {
    tern::sys::getpwnam(name).map(|p| (p.uid, p.gid))
}

/// A peer that serves one TCP port on 127.0.0.1 (a milter, a policy
/// server): its process and port. The peers deref to it.
pub struct Service {
    pub proc: PeerProcess,
    pub port: u16,
}

impl Service {
    pub fn addr(&self) -> SocketAddr {
        localhost(self.port)
    }

    /// `inet:127.0.0.1:PORT`, as a `milters =` or `policy_services =` entry.
    pub fn conf(&self) -> String {
        format!("inet:127.0.0.1:{}", self.port)
    }

    pub fn process(&self) -> &PeerProcess {
        &self.proc
    }
}

/// A pid from a pid file (pids 0 and 1 never).
fn read_pid(f: &Path) -> Option<libc::pid_t> {
    let pid = std::fs::read_to_string(f)
        .ok()?
        .trim()
        .parse::<libc::pid_t>()
        .ok()?;
    (pid > 1).then_some(pid)
}

/// A live (not zombie) process's start time in clock ticks since boot
/// (/proc/PID/stat field 22): with the pid, it names one process.
fn start_time(pid: libc::pid_t) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and parentheses.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if rest.first() == Some(&"Z") {
        return None;
    }
    // rest[0] is field 3 (state), so field 22 is rest[19].
    rest.get(19)?.parse().ok()
}
