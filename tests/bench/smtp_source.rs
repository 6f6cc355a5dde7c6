//! smtp-source: an SMTP load generator, in the spirit of Postfix's smtp-source(1).
//!
//! `smtp-source [-c SESSIONS] [-m MESSAGES] [-s SIZE] [-r MSGS_PER_CONN] [-f FROM]
//! [-t TO]... [-P] [-B] [-w SECS] HOST:PORT`
//!
//! `-B` sends each message as one `BDAT n LAST` chunk (RFC 3030) instead of
//! DATA when the server offers CHUNKING.
//! `smtp-source --idle [-c SESSIONS] [-w SECS] HOST:PORT`
//!
//! SESSIONS client threads share MESSAGES between them. Each opens a connection,
//! sends EHLO, then MSGS_PER_CONN transactions (0: all of its messages on one
//! connection), then QUIT, and reconnects for the rest. Any non-2xx reply (354 to
//! DATA aside) or I/O error counts the message as an error and the connection is
//! dropped; the session reconnects for the messages it has left. At the deadline
//! (`-w`) every open connection is shut down and each message not yet accepted
//! counts as an error, so `messages + errors` is always MESSAGES.
//!
//! Latencies: `mail_to_250` runs from writing MAIL to the 250 after the final
//! dot, for every message; `conn_to_250` runs from the start of connect to that
//! same 250, for the first message of each connection.
//!
//! The last line of output is machine-readable:
//! `RESULT sessions=N messages=OK errors=E seconds=S msgs_per_sec=R p50_ms=X p99_ms=Y max_ms=Z
//! conn_p50_ms=X conn_p99_ms=Y` (the first three latencies `mail_to_250`).
//! Exit status: 0 if there were no errors, 1 if there were, 2 on a usage error.
//!
//! `--idle` sends no mail: it opens SESSIONS connections one after another,
//! each greeted and past EHLO, prints `IDLE open=N failed=F` and holds them
//! until `-w` runs out or it is killed, for measuring what an idle session
//! costs the server. Exit status 1 if any connection failed.
//!
//! A benchmark tool: it uses std networking and threads only, like the daemon.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "cli.rs"]
mod cli;

const DEFAULT_FROM: &str = "bench@example.test";
const DEFAULT_TO: &str = "alice@example.test";
/// Name sent in EHLO/HELO.
const HELO_NAME: &str = "localhost";
/// Longest reply line accepted (RFC 5321 4.5.3.1.5 says 512; be generous).
const MAX_REPLY_LINE: usize = 4096;
/// Most lines accepted in one multi-line reply.
const MAX_REPLY_LINES: usize = 256;
/// Body characters per line before CRLF (RFC 5322 recommends at most 78).
const BODY_LINE: usize = 72;
/// How many error texts are printed on stderr.
const SHOWN_ERRORS: usize = 10;

const EXIT_ERRORS: u8 = 1;

struct Config {
    target: String,
    addr: SocketAddr,
    sessions: usize,
    messages: u64,
    size: usize,
    per_conn: u64,
    from: String,
    to: Vec<String>,
    pipelining: bool,
    bdat: bool,
    wait: Duration,
    idle: bool,
}

/// What every session thread shares.
struct Shared {
    cfg: Config,
    /// The message body, already dot-stuffed, ending in CRLF (or empty).
    body: Vec<u8>,
    /// The same, not dot-stuffed (for BDAT).
    raw_body: Vec<u8>,
    /// `MAIL FROM:<..>\r\n`.
    mail_cmd: Vec<u8>,
    /// One `RCPT TO:<..>\r\n` per recipient.
    rcpt_cmds: Vec<Vec<u8>>,
    /// MAIL, every RCPT and DATA in one buffer, for PIPELINING.
    pipelined_cmds: Vec<u8>,
    /// MAIL and every RCPT, for PIPELINING with BDAT.
    envelope_cmds: Vec<u8>,
    /// `From:` and `To:` header lines.
    addr_headers: String,
    seq: AtomicU64,
    stop: AtomicBool,
    deadline: Instant,
    errors_seen: AtomicUsize,
    /// A clone of each session's open connection, so that the deadline can
    /// shut it down and wake a blocked read.
    sockets: Vec<Mutex<Option<TcpStream>>>,
    msgid_tag: String,
}

#[derive(Default)]
struct Stats {
    ok: u64,
    errors: u64,
    /// Messages lost to the deadline (included in `errors`).
    late: u64,
    connections: u64,
    pipelined: u64,
    mail_us: Vec<u64>,
    conn_us: Vec<u64>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.ok += o.ok;
        self.errors += o.errors;
        self.late += o.late;
        self.connections += o.connections;
        self.pipelined += o.pipelined;
        self.mail_us.extend(o.mail_us);
        self.conn_us.extend(o.conn_us);
    }
}

/// Why a message failed; the text is what gets printed.
struct Failure(String);

fn io_fail(what: &str, e: io::Error) -> Failure {
    Failure(format!("{what}: {e}"))
}

fn usage(opts: &getopts::Options) -> String {
    opts.usage(
        "usage: smtp-source [-P] [-c sessions] [-m messages] [-s size] [-r msgs_per_conn]\n\
         \x20                  [-f from] [-t to]... [-w secs] host:port",
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = getopts::Options::new();
    opts.optopt("c", "", "concurrent sessions (default 1)", "SESSIONS");
    opts.optopt("m", "", "messages in total (default 100)", "MESSAGES");
    opts.optopt(
        "s",
        "",
        "body size in bytes, K or M suffix (default 4096)",
        "SIZE",
    );
    opts.optopt("r", "", "messages per connection, 0 = all (default 1)", "N");
    opts.optopt(
        "f",
        "",
        &format!("envelope sender (default {DEFAULT_FROM})"),
        "FROM",
    );
    opts.optmulti(
        "t",
        "",
        &format!("recipient, repeatable (default {DEFAULT_TO})"),
        "TO",
    );
    opts.optflag("P", "", "use PIPELINING when the server offers it");
    opts.optflag(
        "B",
        "",
        "use BDAT (CHUNKING) instead of DATA when the server offers it",
    );
    opts.optflag(
        "",
        "idle",
        "open SESSIONS connections, EHLO, and hold them idle until -w runs out",
    );
    opts.optopt("w", "", "give up after this many seconds (default 300)", "SECS");
    opts.optflag("h", "help", "show this help");
    let m = match cli::matches("smtp-source", &opts, &args, &usage(&opts)) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let cfg = match config(&m) {
        Ok(c) => c,
        Err(e) => return cli::usage_error("smtp-source", &e, &usage(&opts)),
    };
    run(cfg)
}

fn config(m: &getopts::Matches) -> Result<Config, String> {
    let target = match m.free.as_slice() {
        [t] => t.clone(),
        [] => return Err("missing host:port".to_owned()),
        more => return Err(format!("unexpected arguments {:?}", &more[1..])),
    };
    let addr = target
        .to_socket_addrs()
        .map_err(|e| format!("{target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target}: no address"))?;
    let sessions: usize = num(m, "c", 1)?;
    let messages: u64 = num(m, "m", 100)?;
    let per_conn: u64 = num(m, "r", 1)?;
    let secs: u64 = num(m, "w", 300)?;
    if sessions == 0 || messages == 0 || secs == 0 {
        return Err("-c, -m and -w must be at least 1".to_owned());
    }
    let size = match m.opt_str("s") {
        Some(s) => parse_size(&s).ok_or_else(|| format!("-s {s}: not a size (e.g. 4096, 4K, 1M)"))?,
        None => 4096,
    };
    let from = m.opt_str("f").unwrap_or_else(|| DEFAULT_FROM.to_owned());
    let mut to = m.opt_strs("t");
    if to.is_empty() {
        to.push(DEFAULT_TO.to_owned());
    }
    for a in std::iter::once(&from).chain(&to) {
        if a.bytes().any(|b| b.is_ascii_control() || b == b'<' || b == b'>') {
            return Err(format!("bad address {a:?}"));
        }
    }
    Ok(Config {
        target,
        addr,
        // More sessions than messages would only open idle threads (unless
        // idle connections are what is wanted).
        sessions: if m.opt_present("idle") {
            sessions
        } else {
            sessions.min(usize::try_from(messages).unwrap_or(usize::MAX))
        },
        messages,
        size,
        per_conn,
        from,
        to,
        pipelining: m.opt_present("P"),
        bdat: m.opt_present("B"),
        wait: Duration::from_secs(secs),
        idle: m.opt_present("idle"),
    })
}

fn num<T: std::str::FromStr>(m: &getopts::Matches, opt: &str, default: T) -> Result<T, String> {
    match m.opt_str(opt) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| format!("-{opt} {s}: not a number")),
    }
}

/// `4096`, `4K`, `4k`, `1M`: bytes, KiB, MiB.
fn parse_size(s: &str) -> Option<usize> {
    usize::try_from(cli::size(s, "KM")?).ok()
}

/// A body of exactly `size` bytes (1 is rounded up to 2, the shortest that can
/// end in CRLF): printable lines of at most 73 characters plus CRLF. Line `i`
/// starts with character `i` of `!`..`~`, so some lines start with a dot and
/// the dot-stuffing gets exercised.
fn make_body(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 2);
    let mut left = if size == 1 { 2 } else { size };
    let mut line = 0usize;
    while left > 0 {
        let chars = if left >= BODY_LINE + 2 {
            // Never leave a single byte over: it could not end in CRLF.
            if left - (BODY_LINE + 2) == 1 {
                BODY_LINE + 1
            } else {
                BODY_LINE
            }
        } else {
            left - 2
        };
        out.extend((0..chars).map(|j| b'!' + ((line + j) % 94) as u8));
        out.extend_from_slice(b"\r\n");
        left -= chars + 2;
        line += 1;
    }
    out
}

/// RFC 5321 4.5.2: double a dot that starts a line.
fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 1);
    let mut bol = true;
    for &b in data {
        if bol && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        bol = b == b'\n';
    }
    out
}

/// RFC 5322 date in UTC, e.g. `Mon, 23 Nov 2026 14:08:39 +0000`.
fn rfc5322_date(now: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = t / 86_400;
    let secs = t % 86_400;
    // Howard Hinnant's civil_from_days, for days >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    let wd = DAYS[(days % 7) as usize];
    let mon = MONTHS[(m - 1) as usize % 12];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} +0000",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn run(cfg: Config) -> ExitCode {
    let start_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mail_cmd = format!("MAIL FROM:<{}>\r\n", cfg.from).into_bytes();
    let rcpt_cmds: Vec<Vec<u8>> = cfg
        .to
        .iter()
        .map(|t| format!("RCPT TO:<{t}>\r\n").into_bytes())
        .collect();
    let mut pipelined_cmds = mail_cmd.clone();
    for r in &rcpt_cmds {
        pipelined_cmds.extend_from_slice(r);
    }
    let envelope_cmds = pipelined_cmds.clone();
    pipelined_cmds.extend_from_slice(b"DATA\r\n");
    let to_list: Vec<String> = cfg.to.iter().map(|t| format!("<{t}>")).collect();
    let addr_headers = format!("From: <{}>\r\nTo: {}\r\n", cfg.from, to_list.join(",\r\n "));
    let sessions = cfg.sessions;
    let started = Instant::now();
    let sh = Arc::new(Shared {
        body: dot_stuff(&make_body(cfg.size)),
        raw_body: make_body(cfg.size),
        envelope_cmds,
        mail_cmd,
        rcpt_cmds,
        pipelined_cmds,
        addr_headers,
        seq: AtomicU64::new(1),
        stop: AtomicBool::new(false),
        deadline: started + cfg.wait,
        errors_seen: AtomicUsize::new(0),
        sockets: (0..sessions).map(|_| Mutex::new(None)).collect(),
        msgid_tag: format!("{}.{start_epoch}", std::process::id()),
        cfg,
    });
    if sh.cfg.idle {
        return idle(&sh);
    }

    // Split the messages: the first `extra` sessions take one more.
    let base = sh.cfg.messages / sessions as u64;
    let extra = sh.cfg.messages % sessions as u64;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut workers = Vec::with_capacity(sessions);
    let mut total = Stats::default();
    for id in 0..sessions {
        let n = base + u64::from((id as u64) < extra);
        let (sh2, tx) = (Arc::clone(&sh), done_tx.clone());
        let spawned = thread::Builder::new()
            .name(format!("session-{id}"))
            .spawn(move || {
                let stats = session(&sh2, id, n);
                let _ = tx.send(());
                stats
            });
        match spawned {
            Ok(h) => workers.push((n, h)),
            Err(e) => {
                report(&sh, id, &format!("cannot start a thread: {e}"));
                total.errors += n;
            }
        }
    }
    drop(done_tx);

    // Wait for the sessions, or the deadline.
    let mut finished = 0;
    while finished < workers.len() {
        let left = sh.deadline.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) => finished += 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                sh.stop.store(true, Ordering::SeqCst);
                for slot in &sh.sockets {
                    let guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(s) = guard.as_ref() {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                }
                break;
            }
        }
    }
    for (n, h) in workers {
        match h.join() {
            Ok(s) => total.merge(s),
            Err(_) => {
                eprintln!("smtp-source: a session thread panicked; its {n} messages count as errors");
                total.errors += n;
            }
        }
    }
    let elapsed = started.elapsed();
    let shown = sh.errors_seen.load(Ordering::Relaxed);
    if shown > SHOWN_ERRORS {
        eprintln!("smtp-source: {} more errors not shown", shown - SHOWN_ERRORS);
    }
    print_results(&sh.cfg, &mut total, elapsed);
    if total.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ERRORS)
    }
}

/// `--idle`: open the sessions one by one, each greeted and past EHLO, then
/// hold them until the deadline (or until killed).
fn idle(sh: &Shared) -> ExitCode {
    let mut open = Vec::with_capacity(sh.cfg.sessions);
    let mut failed = 0usize;
    for id in 0..sh.cfg.sessions {
        match Client::open(sh, id) {
            Ok(c) => open.push(c),
            Err(f) => {
                failed += 1;
                report(sh, id, &f.0);
            }
        }
    }
    println!("IDLE open={} failed={failed}", open.len());
    let _ = io::stdout().flush();
    thread::sleep(sh.deadline.saturating_duration_since(Instant::now()));
    for mut c in open {
        c.quit();
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ERRORS)
    }
}

/// Print the first few errors; count them all.
fn report(sh: &Shared, id: usize, text: &str) {
    let n = sh.errors_seen.fetch_add(1, Ordering::Relaxed);
    if n < SHOWN_ERRORS {
        eprintln!("smtp-source: session {id}: {text}");
    }
}

/// One session thread: send `n` messages, reconnecting as needed.
fn session(sh: &Shared, id: usize, n: u64) -> Stats {
    let mut st = Stats {
        mail_us: Vec::with_capacity(usize::try_from(n).unwrap_or(0)),
        ..Stats::default()
    };
    let mut left = n;
    let mut msg = Vec::with_capacity(sh.body.len() + 1024);
    'conn: while left > 0 && !sh.stop.load(Ordering::SeqCst) {
        let batch = if sh.cfg.per_conn == 0 {
            left
        } else {
            sh.cfg.per_conn.min(left)
        };
        let t_conn = Instant::now();
        st.connections += 1;
        let mut client = match Client::open(sh, id) {
            Ok(c) => c,
            Err(f) => {
                left -= 1;
                fail(sh, id, &mut st, &f);
                continue;
            }
        };
        st.pipelined += u64::from(client.pipelining);
        for i in 0..batch {
            if sh.stop.load(Ordering::SeqCst) {
                break 'conn;
            }
            let t_mail = Instant::now();
            let r = client.send_message(sh, &mut msg);
            left -= 1;
            match r {
                Ok(()) => {
                    let done = Instant::now();
                    st.ok += 1;
                    st.mail_us.push(micros(done - t_mail));
                    if i == 0 {
                        st.conn_us.push(micros(done - t_conn));
                    }
                }
                Err(f) => {
                    fail(sh, id, &mut st, &f);
                    client.close(sh, id);
                    continue 'conn;
                }
            }
        }
        client.quit();
        client.close(sh, id);
    }
    if left > 0 {
        // Stopped by the deadline.
        st.errors += left;
        st.late += left;
    }
    st
}

fn fail(sh: &Shared, id: usize, st: &mut Stats, f: &Failure) {
    st.errors += 1;
    if sh.stop.load(Ordering::SeqCst) {
        st.late += 1;
    } else {
        report(sh, id, &f.0);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

struct Reply {
    code: u16,
    /// Every line, CRLF removed, joined by `\n`.
    text: String,
}

impl Reply {
    fn class(&self) -> u16 {
        self.code / 100
    }

    /// Whether an EHLO reply lists `kw` (case-insensitive, first word of a line).
    fn has_keyword(&self, kw: &str) -> bool {
        self.text.lines().skip(1).any(|l| {
            l.get(4..)
                .and_then(|s| s.split_whitespace().next())
                .is_some_and(|w| w.eq_ignore_ascii_case(kw))
        })
    }
}

/// One client connection: a read buffer over the socket, and pending output.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    pipelining: bool,
    /// BDAT instead of DATA (-B, and the server offers CHUNKING).
    chunking: bool,
}

impl Client {
    /// Connect, read the greeting, EHLO (HELO if EHLO is refused).
    fn open(sh: &Shared, id: usize) -> Result<Client, Failure> {
        let left = sh.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure("deadline reached".to_owned()));
        }
        let stream = TcpStream::connect_timeout(&sh.cfg.addr, left)
            .map_err(|e| io_fail(&format!("connect {}", sh.cfg.addr), e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| io_fail("set TCP_NODELAY", e))?;
        if let Some(slot) = sh.sockets.get(id) {
            let clone = stream.try_clone().map_err(|e| io_fail("dup socket", e))?;
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(clone);
        }
        // Registered before this check, so the deadline either saw the socket
        // or is seen here.
        if sh.stop.load(Ordering::SeqCst) {
            return Err(Failure("deadline reached".to_owned()));
        }
        let mut c = Client {
            stream,
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
            pipelining: false,
            chunking: false,
        };
        let greeting = c.read_reply("greeting")?;
        expect(&greeting, 2, "greeting")?;
        c.write(format!("EHLO {HELO_NAME}\r\n").as_bytes(), "EHLO")?;
        let ehlo = c.read_reply("EHLO")?;
        if ehlo.class() == 2 {
            c.pipelining = sh.cfg.pipelining && ehlo.has_keyword("PIPELINING");
            c.chunking = sh.cfg.bdat && ehlo.has_keyword("CHUNKING");
        } else {
            c.write(format!("HELO {HELO_NAME}\r\n").as_bytes(), "HELO")?;
            let helo = c.read_reply("HELO")?;
            expect(&helo, 2, "HELO")?;
        }
        Ok(c)
    }

    /// One transaction: MAIL, RCPT..., DATA, the message, and its 250.
    fn send_message(&mut self, sh: &Shared, msg: &mut Vec<u8>) -> Result<(), Failure> {
        if self.chunking {
            return self.send_chunked(sh, msg);
        }
        if self.pipelining {
            self.write(&sh.pipelined_cmds, "MAIL/RCPT/DATA")?;
            let r = self.read_reply("MAIL")?;
            expect(&r, 2, "MAIL")?;
            for to in &sh.cfg.to {
                let r = self.read_reply("RCPT")?;
                expect(&r, 2, &format!("RCPT TO:<{to}>"))?;
            }
        } else {
            self.write(&sh.mail_cmd, "MAIL")?;
            let r = self.read_reply("MAIL")?;
            expect(&r, 2, "MAIL")?;
            for (cmd, to) in sh.rcpt_cmds.iter().zip(&sh.cfg.to) {
                self.write(cmd, "RCPT")?;
                let r = self.read_reply("RCPT")?;
                expect(&r, 2, &format!("RCPT TO:<{to}>"))?;
            }
            self.write(b"DATA\r\n", "DATA")?;
        }
        let r = self.read_reply("DATA")?;
        expect(&r, 3, "DATA")?;

        self.message_into(sh, msg, &sh.body);
        msg.extend_from_slice(b".\r\n");
        self.write(msg, "message")?;
        let r = self.read_reply("end of data")?;
        expect(&r, 2, "end of data")
    }

    /// MAIL, RCPT..., then the message as one `BDAT n LAST` chunk (RFC 3030).
    fn send_chunked(&mut self, sh: &Shared, msg: &mut Vec<u8>) -> Result<(), Failure> {
        if self.pipelining {
            self.write(&sh.envelope_cmds, "MAIL/RCPT")?;
        } else {
            self.write(&sh.mail_cmd, "MAIL")?;
        }
        let r = self.read_reply("MAIL")?;
        expect(&r, 2, "MAIL")?;
        for (cmd, to) in sh.rcpt_cmds.iter().zip(&sh.cfg.to) {
            if !self.pipelining {
                self.write(cmd, "RCPT")?;
            }
            let r = self.read_reply("RCPT")?;
            expect(&r, 2, &format!("RCPT TO:<{to}>"))?;
        }
        let mut data = Vec::new();
        self.message_into(sh, &mut data, &sh.raw_body);
        msg.clear();
        msg.extend_from_slice(format!("BDAT {} LAST\r\n", data.len()).as_bytes());
        msg.extend_from_slice(&data);
        self.write(msg, "BDAT")?;
        let r = self.read_reply("BDAT LAST")?;
        expect(&r, 2, "BDAT LAST")
    }

    /// The header section of the next message, then `body`, into `msg`.
    fn message_into(&self, sh: &Shared, msg: &mut Vec<u8>, body: &[u8]) {
        let seq = sh.seq.fetch_add(1, Ordering::Relaxed);
        msg.clear();
        msg.extend_from_slice(sh.addr_headers.as_bytes());
        let date = rfc5322_date(SystemTime::now());
        let headers = format!(
            "Subject: smtp-source test message {seq}\r\n\
             Message-ID: <{seq}.{}@smtp-source.invalid>\r\n\
             Date: {date}\r\n\r\n",
            sh.msgid_tag
        );
        msg.extend_from_slice(headers.as_bytes());
        msg.extend_from_slice(body);
    }

    fn write(&mut self, data: &[u8], what: &str) -> Result<(), Failure> {
        self.stream
            .write_all(data)
            .map_err(|e| io_fail(&format!("write {what}"), e))
    }

    /// Read one reply, multi-line or not.
    fn read_reply(&mut self, what: &str) -> Result<Reply, Failure> {
        let mut text = String::new();
        for n in 0..MAX_REPLY_LINES {
            let line = self.read_line(what)?;
            let code = line
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| Failure(format!("{what}: malformed reply {line:?}")))?;
            let last = match line.as_bytes().get(3) {
                None | Some(b' ') => true,
                Some(b'-') => false,
                Some(_) => return Err(Failure(format!("{what}: malformed reply {line:?}"))),
            };
            if n > 0 {
                text.push('\n');
            }
            text.push_str(&line);
            if last {
                return Ok(Reply { code, text });
            }
        }
        Err(Failure(format!(
            "{what}: reply longer than {MAX_REPLY_LINES} lines"
        )))
    }

    /// One line from the server, CRLF (or bare LF) removed.
    fn read_line(&mut self, what: &str) -> Result<String, Failure> {
        loop {
            if let Some(i) = self.buf[self.start..self.end].iter().position(|&b| b == b'\n') {
                let raw = &self.buf[self.start..self.start + i];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let line = String::from_utf8_lossy(raw).into_owned();
                self.start += i + 1;
                return Ok(line);
            }
            if self.end - self.start >= MAX_REPLY_LINE {
                return Err(Failure(format!(
                    "{what}: reply line longer than {MAX_REPLY_LINE} bytes"
                )));
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = loop {
                match self.stream.read(&mut self.buf[self.end..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_fail(&format!("read {what} reply"), e)),
                }
            };
            if n == 0 {
                return Err(Failure(format!("read {what} reply: connection closed by server")));
            }
            self.end += n;
        }
    }

    /// QUIT politely; its reply does not count.
    fn quit(&mut self) {
        if self.write(b"QUIT\r\n", "QUIT").is_ok() {
            let _ = self.read_reply("QUIT");
        }
    }

    /// Forget the deadline's clone of the socket; dropping `self` closes it.
    fn close(self, sh: &Shared, id: usize) {
        if let Some(slot) = sh.sockets.get(id) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }
}

fn expect(r: &Reply, class: u16, what: &str) -> Result<(), Failure> {
    if r.class() == class {
        Ok(())
    } else {
        Err(Failure(format!("{what}: {}", r.text.replace('\n', " / "))))
    }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn pct_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn latency_line(name: &str, v: &mut [u64]) -> String {
    v.sort_unstable();
    if v.is_empty() {
        return format!("  {name:<12} (no samples)");
    }
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0;
    format!(
        "  {name:<12} ms: min {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {mean:.3}  (n={})",
        pct_ms(v, 0.0),
        pct_ms(v, 50.0),
        pct_ms(v, 90.0),
        pct_ms(v, 99.0),
        pct_ms(v, 100.0),
        v.len()
    )
}

fn print_results(cfg: &Config, st: &mut Stats, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { st.ok as f64 / secs } else { 0.0 };
    let per_conn = if cfg.per_conn == 0 {
        "all".to_owned()
    } else {
        cfg.per_conn.to_string()
    };
    let pipelining = match (cfg.pipelining, st.pipelined) {
        (false, _) => "off".to_owned(),
        (true, n) => format!("requested, used on {n} of {} connections", st.connections),
    };
    println!(
        "smtp-source: {} sessions, {} messages of {} body bytes to {} ({} recipients each)",
        cfg.sessions,
        cfg.messages,
        cfg.size,
        cfg.target,
        cfg.to.len()
    );
    println!("  messages/connection {per_conn}, pipelining {pipelining}");
    println!("  accepted     {}", st.ok);
    println!("  errors       {}", st.errors);
    if st.late > 0 {
        println!(
            "  of which     {} not accepted by the -w deadline ({} s)",
            st.late,
            cfg.wait.as_secs()
        );
    }
    println!("  connections  {}", st.connections);
    println!("  elapsed      {secs:.3} s");
    println!("  rate         {rate:.1} msg/s");
    println!("{}", latency_line("mail_to_250", &mut st.mail_us));
    println!("{}", latency_line("conn_to_250", &mut st.conn_us));
    println!(
        "RESULT sessions={} messages={} errors={} seconds={secs:.3} msgs_per_sec={rate:.1} \
         p50_ms={:.3} p99_ms={:.3} max_ms={:.3} conn_p50_ms={:.3} conn_p99_ms={:.3}",
        cfg.sessions,
        st.ok,
        st.errors,
        pct_ms(&st.mail_us, 50.0),
        pct_ms(&st.mail_us, 99.0),
        pct_ms(&st.mail_us, 100.0),
        pct_ms(&st.conn_us, 50.0),
        pct_ms(&st.conn_us, 99.0)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_exact_size_and_short_crlf_lines() {
        for size in [0, 1, 2, 3, 73, 74, 75, 76, 147, 148, 149, 4096, 65_536] {
            let body = make_body(size);
            assert_eq!(body.len(), size.max(2) * usize::from(size > 0), "size {size}");
            if size == 0 {
                continue;
            }
            assert!(body.ends_with(b"\r\n"), "size {size}");
            for line in body.split(|&b| b == b'\n') {
                assert!(line.len() <= 79, "size {size}: line of {}", line.len());
                assert!(line.is_empty() || line.ends_with(b"\r"), "size {size}: bare LF");
                assert!(line.iter().all(|&b| b == b'\r' || (b'!'..=b'~').contains(&b)));
            }
        }
    }

    #[test]
    fn stuffing_doubles_leading_dots_only() {
        assert_eq!(
            dot_stuff(b".a\r\nb.c\r\n.\r\n..\r\n"),
            b"..a\r\nb.c\r\n..\r\n...\r\n"
        );
        let body = make_body(4096);
        let stuffed = dot_stuff(&body);
        assert!(
            stuffed.len() > body.len(),
            "the generated body exercises stuffing"
        );
        assert!(!stuffed.windows(5).any(|w| w == b"\r\n.\r\n"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("2M"), Some(2 * 1024 * 1024));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("4G"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3723); // 2000-02-29 01:02:03
        assert_eq!(rfc5322_date(t), "Tue, 29 Feb 2000 01:02:03 +0000");
    }
}
