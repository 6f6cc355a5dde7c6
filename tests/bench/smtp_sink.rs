//! smtp-sink: an SMTP server that accepts and discards mail, in the spirit of
//! Postfix's smtp-sink(1). The other end of `smtp-source`, or of ternd's relay.
//!
//! `smtp-sink [-q] [-c MAX_CONN] [-n EXPECT] [-w SECS] [--count-file PATH] [--durable DIR] ADDR:PORT`
//!
//! A thread per connection, at most MAX_CONN (default 200) at once; one more
//! gets `421` and is closed. It speaks enough ESMTP for a client: EHLO (with
//! PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8, DSN), HELO, MAIL,
//! RCPT (250 to everything), DATA, RSET, NOOP, QUIT. Replies are queued and
//! written only when the session is about to block on a read, so a pipelined
//! group gets its replies in one write (RFC 2920 3.1).
//!
//! It prints `LISTENING addr` on stdout once bound (so a script can ask for port
//! 0), and on exit `RESULT messages=N seconds=S msgs_per_sec=R` (and
//! `syncs=K` with `--durable`), where seconds run from the first MAIL to the
//! last 250 that ended a message. A message counts once its 250 has been
//! written to the socket.
//!
//! It exits after EXPECT messages (`-n`; it then waits up to 2 s for the
//! clients to hang up), after SECS without any connection activity (`-w`), or on
//! SIGINT/SIGTERM; otherwise it runs until killed. Exit status: 0, or 1 if `-n`
//! was given and fewer messages arrived, 2 on a usage or bind error.
//!
//! `--count-file PATH` keeps the running count in PATH (written to PATH.tmp and
//! renamed, at most every 100 ms) for another process to poll. `-q` turns off
//! the progress lines and per-connection error messages on stderr.
//!
//! `--durable DIR` makes it the *durable* ceiling: every message is stored the
//! Maildir way, in a file of its own, and its 250 waits until the file is on
//! disk under its final name: written to `DIR/tmp/PID.N` (created O_EXCL,
//! 0600), synced (`syncfs(2)` on DIR's filesystem), renamed to
//! `DIR/new/PID.N`, and the rename synced (fsync of `new/`). The first sync
//! makes the bytes durable before the name appears, so a crash never leaves a
//! half-written file in new/ (the promise a spool makes too); the second makes
//! the name durable before the 250. Each is a group commit: the first session
//! to ask runs one sync for itself and every session that asked before it
//! began; those that ask meanwhile wait for the next one. That is about the
//! least work a server that keeps each message in a file of its own can do for
//! a durable 250 (one file, no envelope): `make bench` runs it beside ternd as
//! the durable ceiling. A message whose file cannot be created, or whose sync
//! failed, is answered `451`; after a failed sync so is every later one (a
//! benchmark's disk must not fail). The files stay: remove DIR afterwards.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

#[path = "cli.rs"]
mod cli;

/// Longest command line accepted (RFC 5321 4.5.3.1.4 says 512; leave room for
/// extension parameters).
const MAX_LINE: usize = 4096;
const BUF_SIZE: usize = 64 * 1024;
/// How often the main thread looks at the counters.
const TICK: Duration = Duration::from_millis(20);
const COUNT_FILE_EVERY: Duration = Duration::from_millis(100);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// After `-n` is reached, how long to let clients read their last 250 and QUIT.
const LINGER: Duration = Duration::from_secs(2);
/// Not set: for `first_mail`.
const UNSET: u64 = u64::MAX;

const EXIT_SHORT: u8 = 1;
use cli::EXIT_USAGE;

const EHLO_REPLY: &[u8] = b"250-localhost smtp-sink\r\n\
250-PIPELINING\r\n\
250-SIZE\r\n\
250-8BITMIME\r\n\
250-ENHANCEDSTATUSCODES\r\n\
250-SMTPUTF8\r\n\
250 DSN\r\n";

struct Shared {
    base: Instant,
    quiet: bool,
    max_conn: usize,
    /// Messages whose 250 has been written.
    count: AtomicU64,
    /// Nanoseconds since `base`.
    first_mail: AtomicU64,
    last_250: AtomicU64,
    last_activity: AtomicU64,
    active: AtomicUsize,
    /// `--durable`: where messages are stored, and their group commit.
    durable: Option<Durable>,
}

impl Shared {
    fn nanos(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(UNSET - 1)
    }

    fn touch(&self) {
        self.last_activity.store(self.nanos(), Ordering::Relaxed);
    }

    /// Seconds from the first MAIL to the last 250.
    fn busy_seconds(&self) -> f64 {
        let first = self.first_mail.load(Ordering::Relaxed);
        let last = self.last_250.load(Ordering::Relaxed);
        if first == UNSET || last <= first {
            0.0
        } else {
            (last - first) as f64 / 1e9
        }
    }
}

/// Decrements the active-connection count when a session ends.
struct Active(Arc<Shared>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

fn usage(opts: &getopts::Options) -> String {
    opts.usage("usage: smtp-sink [-q] [-c max_conn] [-n expect] [-w secs] [--count-file path] [--durable dir] addr:port")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = getopts::Options::new();
    opts.optopt("c", "", "most connections at once (default 200)", "MAX_CONN");
    opts.optflag("q", "", "quiet: no progress or per-connection errors on stderr");
    opts.optopt("n", "", "exit after this many messages", "EXPECT");
    opts.optopt("w", "", "exit after this many idle seconds", "SECS");
    opts.optopt(
        "",
        "count-file",
        "keep the running message count in this file",
        "PATH",
    );
    opts.optopt(
        "",
        "durable",
        "store each message in a file of its own in DIR, on disk before its 250",
        "DIR",
    );
    opts.optflag("h", "help", "show this help");
    let m = match cli::matches("smtp-sink", &opts, &args, &usage(&opts)) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let parsed = (|| -> Result<_, String> {
        let addr: SocketAddr = match m.free.as_slice() {
            [a] => a
                .to_socket_addrs()
                .map_err(|e| format!("{a}: {e}"))?
                .next()
                .ok_or_else(|| format!("{a}: no address"))?,
            [] => return Err("missing addr:port".to_owned()),
            more => return Err(format!("unexpected arguments {:?}", &more[1..])),
        };
        let max_conn: usize = num(&m, "c")?.unwrap_or(200);
        let expect: Option<u64> = num(&m, "n")?;
        let idle: Option<u64> = num(&m, "w")?;
        if max_conn == 0 || expect == Some(0) || idle == Some(0) {
            return Err("-c, -n and -w must be at least 1".to_owned());
        }
        Ok((addr, max_conn, expect, idle.map(Duration::from_secs)))
    })();
    let (addr, max_conn, expect, idle) = match parsed {
        Ok(p) => p,
        Err(e) => return cli::usage_error("smtp-sink", &e, &usage(&opts)),
    };
    let count_file = m.opt_str("count-file").map(PathBuf::from);
    let durable = match m
        .opt_str("durable")
        .map(|d| Durable::open(PathBuf::from(d)))
        .transpose()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("smtp-sink: --durable: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };

    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("smtp-sink: bind {addr}: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let local = listener
        .local_addr()
        .map_or_else(|_| addr.to_string(), |a| a.to_string());
    println!("LISTENING {local}");
    let _ = io::stdout().flush();
    cli::catch_signals();

    let sh = Arc::new(Shared {
        base: Instant::now(),
        quiet: m.opt_present("q"),
        max_conn,
        count: AtomicU64::new(0),
        first_mail: AtomicU64::new(UNSET),
        last_250: AtomicU64::new(0),
        last_activity: AtomicU64::new(0),
        active: AtomicUsize::new(0),
        durable,
    });
    let sh2 = Arc::clone(&sh);
    if let Err(e) = thread::Builder::new()
        .name("accept".to_owned())
        .spawn(move || accept_loop(&listener, &sh2))
    {
        eprintln!("smtp-sink: cannot start the accept thread: {e}");
        return ExitCode::from(EXIT_USAGE);
    }

    let status = watch(&sh, expect, idle, count_file.as_deref());
    let n = sh.count.load(Ordering::Relaxed);
    let secs = sh.busy_seconds();
    let rate = if secs > 0.0 { n as f64 / secs } else { 0.0 };
    if let Some(p) = &count_file {
        write_count(p, n);
    }
    // With --durable, also how many syncs made those messages durable.
    let syncs = sh
        .durable
        .as_ref()
        .map(|d| format!(" syncs={}", d.syncs()))
        .unwrap_or_default();
    println!("RESULT messages={n} seconds={secs:.3} msgs_per_sec={rate:.1}{syncs}");
    let _ = io::stdout().flush();
    // The accept thread and any sessions still open end with the process.
    status
}

fn num<T: std::str::FromStr>(m: &getopts::Matches, opt: &str) -> Result<Option<T>, String> {
    match m.opt_str(opt) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("-{opt} {s}: not a number")),
    }
}

/// The main thread: count file, progress, and the exit conditions.
fn watch(sh: &Shared, expect: Option<u64>, idle: Option<Duration>, count_file: Option<&Path>) -> ExitCode {
    let mut written = None;
    let mut last_write: Option<Instant> = None;
    let mut last_progress = (Instant::now(), 0u64);
    loop {
        thread::sleep(TICK);
        let n = sh.count.load(Ordering::Relaxed);
        if let Some(p) = count_file {
            if written != Some(n) && last_write.is_none_or(|t| t.elapsed() >= COUNT_FILE_EVERY) {
                write_count(p, n);
                written = Some(n);
                last_write = Some(Instant::now());
            }
        }
        if !sh.quiet && last_progress.0.elapsed() >= PROGRESS_EVERY {
            let (t, before) = last_progress;
            if n != before {
                let rate = (n - before) as f64 / t.elapsed().as_secs_f64();
                eprintln!(
                    "smtp-sink: {n} messages, {rate:.0} msg/s, {} connections",
                    sh.active.load(Ordering::Relaxed)
                );
            }
            last_progress = (Instant::now(), n);
        }
        if cli::SIGNALLED.load(Ordering::Relaxed) {
            return short_of(expect, n);
        }
        if expect.is_some_and(|e| n >= e) {
            // Let the clients read their last 250 and QUIT: closing a socket
            // with unread input resets it, which can lose that 250.
            let t = Instant::now();
            while sh.active.load(Ordering::Relaxed) > 0 && t.elapsed() < LINGER {
                thread::sleep(TICK);
            }
            return ExitCode::SUCCESS;
        }
        if let Some(idle) = idle {
            let quiet_for = sh
                .nanos()
                .saturating_sub(sh.last_activity.load(Ordering::Relaxed));
            if Duration::from_nanos(quiet_for) >= idle {
                if !sh.quiet {
                    eprintln!("smtp-sink: idle for {} s, exiting", idle.as_secs());
                }
                return short_of(expect, n);
            }
        }
    }
}

fn short_of(expect: Option<u64>, n: u64) -> ExitCode {
    match expect {
        Some(e) if n < e => {
            eprintln!("smtp-sink: {n} of {e} expected messages arrived");
            ExitCode::from(EXIT_SHORT)
        }
        _ => ExitCode::SUCCESS,
    }
}

/// Write `n` to `path` atomically: PATH.tmp, then rename.
fn write_count(path: &Path, n: u64) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let r = std::fs::write(&tmp, format!("{n}\n")).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        eprintln!("smtp-sink: {}: {e}", path.display());
    }
}

fn accept_loop(listener: &TcpListener, sh: &Arc<Shared>) {
    for conn in listener.incoming() {
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                if !sh.quiet {
                    eprintln!("smtp-sink: accept: {e}");
                }
                // EMFILE and friends: do not spin.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        sh.touch();
        if sh.active.fetch_add(1, Ordering::Relaxed) >= sh.max_conn {
            sh.active.fetch_sub(1, Ordering::Relaxed);
            let _ = stream.write_all(b"421 4.7.0 Too many connections, try again later\r\n");
            continue;
        }
        let guard = Active(Arc::clone(sh));
        let spawned = thread::Builder::new().name("session".to_owned()).spawn(move || {
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string());
            if let Err(e) = serve(stream, &guard.0) {
                if !guard.0.quiet {
                    eprintln!("smtp-sink: {peer}: {e}");
                }
            }
            drop(guard);
        });
        if let Err(e) = spawned {
            // The closure, and with it the stream and the guard, is dropped.
            eprintln!("smtp-sink: cannot start a session thread: {e}");
        }
    }
}

/// One connection's buffers.
struct Conn<'a> {
    stream: TcpStream,
    sh: &'a Shared,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// Messages whose 250 is in `out`, not yet written.
    unflushed: u64,
}

enum Line {
    /// The verb, upper-cased (at most 8 bytes), and whether the line was too long.
    Command([u8; 8], bool),
    Eof,
}

impl Conn<'_> {
    fn reply(&mut self, r: &[u8]) {
        self.out.extend_from_slice(r);
    }

    /// Write the queued replies; only then do the messages they accept count.
    fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        if self.unflushed > 0 {
            self.sh.last_250.fetch_max(self.sh.nanos(), Ordering::Relaxed);
            self.sh.count.fetch_add(self.unflushed, Ordering::Relaxed);
            self.unflushed = 0;
        }
        Ok(())
    }

    /// Read more input: the buffer is exhausted, so send the replies first.
    fn fill(&mut self) -> io::Result<usize> {
        self.flush()?;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    if n > 0 {
                        self.sh.touch();
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next command line. An over-long line is skipped up to its LF.
    fn read_line(&mut self) -> io::Result<Line> {
        let mut too_long = false;
        loop {
            let pending = &self.buf[self.start..self.end];
            if let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let too_long = too_long || i > MAX_LINE;
                let mut verb = [0u8; 8];
                if !too_long {
                    for (v, b) in verb
                        .iter_mut()
                        .zip(pending[..i].iter().take_while(|b| !b" \r".contains(b)))
                    {
                        *v = b.to_ascii_uppercase();
                    }
                }
                self.start += i + 1;
                return Ok(Line::Command(verb, too_long));
            }
            if self.end - self.start >= MAX_LINE {
                too_long = true;
                self.start = self.end;
            }
            if self.fill()? == 0 {
                return Ok(Line::Eof);
            }
        }
    }

    /// Read the message up to and including CRLF.CRLF, writing it to `file`
    /// when there is one (as it came, dot-stuffed: only its size matters).
    /// False at EOF.
    fn take_data(&mut self, mut file: Option<&mut File>) -> io::Result<bool> {
        // DATA's own CRLF has been read: we start at the beginning of a line.
        let mut state = Scan::Bol;
        loop {
            let (next, end) = scan_data(state, &self.buf[self.start..self.end]);
            let upto = end.map_or(self.end, |n| self.start + n);
            if let (Some(f), Some(chunk)) = (file.as_deref_mut(), self.buf.get(self.start..upto)) {
                f.write_all(chunk)?;
            }
            if end.is_some() {
                self.start = upto;
                return Ok(true);
            }
            state = next;
            self.start = self.end;
            if self.fill()? == 0 {
                return Ok(false);
            }
        }
    }
}

/// `--durable`: a Maildir-like directory of message files, and the two group
/// commits that sync them.
struct Durable {
    /// DIR/tmp and DIR/new.
    tmp: PathBuf,
    new: PathBuf,
    /// DIR/new, open: `syncfs(2)` on it syncs the filesystem, `fsync(2)` the
    /// names in it.
    new_fd: File,
    next: AtomicU64,
    /// The bytes of every message written so far (syncfs).
    bytes: GroupCommit,
    /// The names renamed into new/ so far (fsync of new/).
    names: GroupCommit,
}

impl Durable {
    fn open(dir: PathBuf) -> io::Result<Durable> {
        let (tmp, new) = (dir.join("tmp"), dir.join("new"));
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(&new)?;
        let new_fd = File::open(&new)?;
        Ok(Durable {
            tmp,
            new,
            new_fd,
            next: AtomicU64::new(0),
            bytes: GroupCommit::default(),
            names: GroupCommit::default(),
        })
    }

    /// Syncs run so far, both kinds (for RESULT: messages per sync).
    fn syncs(&self) -> u64 {
        self.bytes.syncs.load(Ordering::Relaxed) + self.names.syncs.load(Ordering::Relaxed)
    }

    /// A new message file in tmp/, and its name.
    fn create(&self) -> io::Result<(File, String)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}.{n}", std::process::id());
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.tmp.join(&name))?;
        Ok((f, name))
    }

    /// Store the written tmp/NAME as new/NAME, on disk when this returns
    /// true; on false it is not in new/ (the caller answers 451).
    fn commit(&self, name: &str) -> bool {
        let (tmp, new) = (self.tmp.join(name), self.new.join(name));
        let fd = self.new_fd.as_raw_fd();
        // Bytes first, then the name: never a half-written file in new/.
        // SAFETY (both): the calls only read the descriptor, which stays open.
        if !self.bytes.sync_with(|| unsafe { libc::syncfs(fd) } == 0) {
            let _ = std::fs::remove_file(&tmp);
            return false;
        }
        if std::fs::rename(&tmp, &new).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return false;
        }
        if !self.names.sync_with(|| unsafe { libc::fsync(fd) } == 0) {
            let _ = std::fs::remove_file(&new);
            return false;
        }
        true
    }

    /// Remove tmp/NAME (a message cut short).
    fn discard(&self, name: &str) {
        let _ = std::fs::remove_file(self.tmp.join(name));
    }
}

/// One sync shared by every session that asks for it while none runs.
#[derive(Default)]
struct GroupCommit {
    state: Mutex<Group>,
    synced: Condvar,
    /// Syncs run.
    syncs: AtomicU64,
}

/// A group commit's state: callers are numbered as they ask.
#[derive(Default)]
struct Group {
    /// The last number handed out.
    asked: u64,
    /// Every caller up to this number is synced.
    done: u64,
    /// A caller is running a sync now.
    running: bool,
    /// A sync failed: nothing is acknowledged any more.
    failed: bool,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, Group> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait until a `sync` that began after this call has succeeded; false if
    /// one failed (this one or any before). The first caller to find no sync
    /// running runs one for everybody who has asked by then; the others sleep
    /// until it ends, and those that asked meanwhile go in the next one.
    fn sync_with(&self, sync: impl Fn() -> bool) -> bool {
        let mut g = self.lock();
        g.asked += 1;
        let mine = g.asked;
        loop {
            if g.failed {
                return false;
            }
            if g.done >= mine {
                return true;
            }
            if g.running {
                g = self.synced.wait(g).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            g.running = true;
            let upto = g.asked;
            drop(g);
            let ok = sync();
            self.syncs.fetch_add(1, Ordering::Relaxed);
            g = self.lock();
            g.running = false;
            g.done = upto;
            g.failed |= !ok;
            self.synced.notify_all();
        }
    }
}

/// Where the scan for CRLF.CRLF stands at the end of a chunk of message data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scan {
    /// Inside a line.
    Mid,
    /// After a CR.
    Cr,
    /// At the beginning of a line.
    Bol,
    /// After a dot at the beginning of a line.
    Dot,
    /// After that dot and a CR.
    DotCr,
}

/// Scan `data` for the end of a message. Returns the state to carry into the
/// next chunk, and, if the final CRLF.CRLF ends in this chunk, how many bytes
/// of it (up to and including the final LF) belong to the message.
fn scan_data(mut state: Scan, data: &[u8]) -> (Scan, Option<usize>) {
    for (i, &b) in data.iter().enumerate() {
        state = match (state, b) {
            (Scan::DotCr, b'\n') => return (Scan::Bol, Some(i + 1)),
            (Scan::Dot, b'\r') => Scan::DotCr,
            (_, b'\r') => Scan::Cr,
            (Scan::Cr, b'\n') => Scan::Bol,
            (Scan::Bol, b'.') => Scan::Dot,
            _ => Scan::Mid,
        };
    }
    (state, None)
}

/// One SMTP session.
fn serve(stream: TcpStream, sh: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut c = Conn {
        stream,
        sh,
        buf: vec![0; BUF_SIZE],
        start: 0,
        end: 0,
        out: Vec::with_capacity(1024),
        unflushed: 0,
    };
    c.reply(b"220 localhost ESMTP smtp-sink\r\n");
    let (mut mail, mut rcpts) = (false, 0u32);
    loop {
        let (verb, too_long) = match c.read_line()? {
            Line::Eof => return Ok(()),
            Line::Command(v, t) => (v, t),
        };
        if too_long {
            c.reply(b"500 5.5.2 Line too long\r\n");
            continue;
        }
        let verb = verb.split(|&b| b == 0).next().unwrap_or(&[]);
        match verb {
            b"EHLO" => {
                (mail, rcpts) = (false, 0);
                c.reply(EHLO_REPLY);
            }
            b"HELO" => {
                (mail, rcpts) = (false, 0);
                c.reply(b"250 localhost\r\n");
            }
            b"MAIL" => {
                if sh.first_mail.load(Ordering::Relaxed) == UNSET {
                    let now = sh.nanos();
                    let _ = sh
                        .first_mail
                        .compare_exchange(UNSET, now, Ordering::Relaxed, Ordering::Relaxed);
                }
                (mail, rcpts) = (true, 0);
                c.reply(b"250 2.1.0 Ok\r\n");
            }
            b"RCPT" if mail => {
                rcpts += 1;
                c.reply(b"250 2.1.5 Ok\r\n");
            }
            b"RCPT" => c.reply(b"503 5.5.1 Error: need MAIL command\r\n"),
            b"DATA" if rcpts > 0 => {
                c.reply(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                (mail, rcpts) = (false, 0);
                let Some(d) = &sh.durable else {
                    if !c.take_data(None)? {
                        return Ok(());
                    }
                    c.reply(b"250 2.0.0 Ok: queued\r\n");
                    c.unflushed += 1;
                    continue;
                };
                let Ok((mut file, name)) = d.create() else {
                    if !c.take_data(None)? {
                        return Ok(());
                    }
                    c.reply(b"451 4.3.0 Cannot create the message file\r\n");
                    continue;
                };
                let got = c.take_data(Some(&mut file));
                drop(file);
                if !matches!(got, Ok(true)) {
                    d.discard(&name);
                    return got.map(|_| ());
                }
                if d.commit(&name) {
                    c.reply(b"250 2.0.0 Ok: stored\r\n");
                    c.unflushed += 1;
                } else {
                    c.reply(b"451 4.3.0 Sync failed, not stored\r\n");
                }
            }
            b"DATA" => c.reply(b"503 5.5.1 Error: need RCPT command\r\n"),
            b"RSET" => {
                (mail, rcpts) = (false, 0);
                c.reply(b"250 2.0.0 Ok\r\n");
            }
            b"NOOP" => c.reply(b"250 2.0.0 Ok\r\n"),
            b"QUIT" => {
                c.reply(b"221 2.0.0 Bye\r\n");
                return c.flush();
            }
            _ => c.reply(b"502 5.5.2 Error: command not recognized\r\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `data` in chunks of `n` bytes; where the message ends, if it does.
    fn end_in_chunks(data: &[u8], n: usize) -> Option<usize> {
        let mut state = Scan::Bol;
        for (k, chunk) in data.chunks(n).enumerate() {
            match scan_data(state, chunk) {
                (_, Some(e)) => return Some(k * n + e),
                (s, None) => state = s,
            }
        }
        None
    }

    /// Every caller returns only after a sync that began after its message
    /// was written, and the syncs are shared.
    #[test]
    fn group_commit_covers_every_earlier_write_with_fewer_syncs() {
        let d = Arc::new(GroupCommit::default());
        let written = Arc::new(AtomicU64::new(0));
        let covered = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (d, written, covered, syncs) =
                    (d.clone(), written.clone(), covered.clone(), syncs.clone());
                thread::spawn(move || {
                    for _ in 0..200 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        let ok = d.sync_with(|| {
                            let upto = written.load(Ordering::SeqCst);
                            syncs.fetch_add(1, Ordering::SeqCst);
                            thread::sleep(Duration::from_micros(200));
                            covered.fetch_max(upto, Ordering::SeqCst);
                            true
                        });
                        assert!(ok);
                        assert!(
                            covered.load(Ordering::SeqCst) >= mine,
                            "message {mine} acknowledged unsynced"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = syncs.load(Ordering::SeqCst);
        assert!(n >= 1 && n < 1600, "{n} syncs for 1600 messages");
        assert_eq!(d.syncs.load(Ordering::SeqCst), n);
    }

    #[test]
    fn a_failed_sync_fails_that_message_and_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = Durable::open(dir.path().to_owned()).unwrap();
        assert!(d.bytes.sync_with(|| true));
        assert!(!d.bytes.sync_with(|| false));
        assert!(!d.bytes.sync_with(|| true));
        // And a message committed now is answered 451 and left nowhere.
        let (mut f, name) = d.create().unwrap();
        f.write_all(b"x\r\n.\r\n").unwrap();
        drop(f);
        assert!(!d.commit(&name));
        for sub in ["tmp", "new"] {
            assert_eq!(
                std::fs::read_dir(dir.path().join(sub)).unwrap().count(),
                0,
                "{sub}"
            );
        }
    }

    /// A durable sink on a loopback port, storing under STORE.
    fn durable_sink(store: &Path) -> (SocketAddr, Arc<Shared>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sh = Arc::new(Shared {
            base: Instant::now(),
            quiet: true,
            max_conn: 4,
            count: AtomicU64::new(0),
            first_mail: AtomicU64::new(UNSET),
            last_250: AtomicU64::new(0),
            last_activity: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            durable: Some(Durable::open(store.to_owned()).unwrap()),
        });
        let sh2 = sh.clone();
        thread::spawn(move || accept_loop(&listener, &sh2));
        (addr, sh)
    }

    /// One whole session, pipelined: everything the server said.
    fn session(addr: SocketAddr, input: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(input).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// A real session against `--durable`: the 250 comes after the message is
    /// in a file of its own, byte for byte as sent.
    #[test]
    fn durable_mode_stores_each_message_before_its_250() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, sh) = durable_sink(&dir.path().join("store"));
        let body = b"Subject: one\r\n\r\n..dot\r\n";
        let mut input = b"EHLO t\r\nMAIL FROM:<a@t>\r\nRCPT TO:<b@t>\r\nDATA\r\n".to_vec();
        input.extend_from_slice(body);
        input.extend_from_slice(b".\r\nMAIL FROM:<a@t>\r\nRCPT TO:<b@t>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n");
        let out = session(addr, &input);
        assert_eq!(out.matches("250 2.0.0 Ok: stored").count(), 2, "{out}");
        assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{out}");
        let store = dir.path().join("store");
        assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);
        let mut files: Vec<Vec<u8>> = std::fs::read_dir(store.join("new"))
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        files.sort();
        let mut first = body.to_vec();
        first.extend_from_slice(b".\r\n");
        assert_eq!(files, vec![first, b"x\r\n.\r\n".to_vec()]);
        assert_eq!(sh.count.load(Ordering::Relaxed), 2);
        let syncs = sh.durable.as_ref().map(Durable::syncs);
        // Two syncs per message (bytes, then name); one session shares none.
        assert_eq!(syncs, Some(4));
    }

    /// A message whose file cannot be made is refused, and the session goes on.
    #[test]
    fn durable_mode_answers_451_when_it_cannot_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let (addr, sh) = durable_sink(&store);
        std::fs::remove_dir(store.join("tmp")).unwrap();
        let out = session(
            addr,
            b"EHLO t\r\nMAIL FROM:<a@t>\r\nRCPT TO:<b@t>\r\nDATA\r\nx\r\n.\r\nNOOP\r\nQUIT\r\n",
        );
        assert!(out.contains("354 "), "{out}");
        assert!(
            out.contains("451 4.3.0 Cannot create the message file\r\n250 2.0.0 Ok\r\n221 "),
            "{out}"
        );
        assert_eq!(sh.count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn finds_the_end_of_data_across_chunks() {
        let msg = b"Subject: x\r\n\r\n..stuffed\r\n.x\r\n. \r\nlast\r\n.\r\nMAIL FROM:<>\r\n";
        let end = msg.len() - b"MAIL FROM:<>\r\n".len();
        for n in 1..=msg.len() {
            assert_eq!(end_in_chunks(msg, n), Some(end), "chunks of {n}");
        }
        assert_eq!(end_in_chunks(b".\r\n", 1), Some(3), "empty message");
        assert_eq!(end_in_chunks(b"a\r\n.\r", 2), None);
        assert_eq!(end_in_chunks(b"a\n.\n", 2), None, "bare LF does not end DATA");
        assert_eq!(end_in_chunks(b"a\r\r\n.\r\n", 3), Some(7));
    }
}
