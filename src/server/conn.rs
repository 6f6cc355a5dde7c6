//! The byte stream a session runs over, and its buffered reader.
//!
//! One trait covers TCP, stdin/stdout (`ternd -i`, `sendmail -bs`) and TLS
//! over either (`tls::TlsStream`). The reader owns the input buffer, which is what PIPELINING needs:
//! replies are flushed only when the session is about to block on a read
//! (RFC 2920 3.1; qmail's flush-before-read).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A bidirectional stream with a settable read timeout.
pub trait Conn: Read + Write + Send {
    /// Timeout for reads and writes.
    fn set_timeout(&mut self, t: Duration) -> io::Result<()>;

    /// Timeout for reads only (the short waits that look at the stop flag).
    fn set_read_wait(&mut self, t: Duration) -> io::Result<()> {
        self.set_timeout(t)
    }

    /// Where the session stands, after each command: a pooled connection
    /// uses it to choose whom to close when the pool is full.
    fn report(&mut self, _standing: Standing) {}
}

/// What a session tells its connection about itself (see [`Conn::report`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// A mail transaction is open (MAIL accepted, not yet ended).
    pub in_transaction: bool,
    /// It sent more junk commands than `junk_command_limit`.
    pub junk: bool,
}

impl Conn for TcpStream {
    fn set_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }

    fn set_read_wait(&mut self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))
    }
}

/// stdin for reading, stdout for writing, as inetd and tcpserver hand them over.
pub struct Stdio {
    stdin: io::Stdin,
    stdout: io::Stdout,
    timeout: Duration,
}

impl Stdio {
    pub fn new() -> Stdio {
        Stdio {
            stdin: io::stdin(),
            stdout: io::stdout(),
            timeout: Duration::from_secs(300),
        }
    }
}

impl Default for Stdio {
    fn default() -> Self {
        Stdio::new()
    }
}

impl Read for Stdio {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // std has no read timeout for stdin, so wait with poll(2) first.
        if !crate::sys::wait_readable(self.stdin.as_raw_fd(), self.timeout)? {
            return Err(io::ErrorKind::TimedOut.into());
        }
        // Read straight from the descriptor: the session keeps its own buffer.
        self.stdin.lock().read(buf)
    }
}

impl Write for Stdio {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stdout.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stdout.flush()
    }
}

impl Conn for Stdio {
    fn set_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.timeout = t;
        Ok(())
    }
}

/// An in-memory connection, for tests and fuzzing (chasquid's
/// FuzzConnection): the client's bytes come from a script of chunks, each
/// read returning at most one chunk, so a test decides what arrives together
/// (as a pipelining client sends it). What the server writes, and when it
/// read, is kept in a [`Transcript`] the test holds on to.
pub struct Memory {
    chunks: std::collections::VecDeque<Vec<u8>>,
    /// Bytes per read at most (1: every line arrives in pieces).
    max_read: usize,
    /// When the script is used up: end of stream, or an idle client (a timeout).
    idle_at_end: bool,
    transcript: Transcript,
}

/// What happened on a [`Memory`] connection, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The server read these bytes.
    Read(Vec<u8>),
    /// The server wrote these bytes (one `write` call).
    Wrote(Vec<u8>),
}

/// The shared record of a [`Memory`] connection.
#[derive(Debug, Clone, Default)]
pub struct Transcript(Arc<std::sync::Mutex<Vec<Event>>>);

impl Transcript {
    fn push(&self, e: Event) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    }

    /// Everything so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Everything the server wrote, as text.
    pub fn output(&self) -> String {
        let bytes: Vec<u8> = self
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Wrote(b) => Some(b),
                Event::Read(_) => None,
            })
            .flatten()
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The reply lines the server wrote, without line ends.
    pub fn lines(&self) -> Vec<String> {
        self.output().lines().map(str::to_owned).collect()
    }
}

impl Memory {
    /// A client that sends `chunks`, one per read, then closes.
    pub fn new<I, B>(chunks: I) -> (Memory, Transcript)
    where
        I: IntoIterator<Item = B>,
        B: Into<Vec<u8>>,
    {
        let transcript = Transcript::default();
        let conn = Memory {
            chunks: chunks.into_iter().map(Into::into).collect(),
            max_read: usize::MAX,
            idle_at_end: false,
            transcript: transcript.clone(),
        };
        (conn, transcript)
    }

    /// Hand the bytes over one at a time.
    pub fn one_byte_at_a_time(mut self) -> Memory {
        self.max_read = 1;
        self
    }

    /// After the script, wait instead of closing: the next read times out.
    pub fn then_idle(mut self) -> Memory {
        self.idle_at_end = true;
        self
    }
}

impl Read for Memory {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(chunk) = self.chunks.front_mut() else {
            if self.idle_at_end {
                // A timeout with a reason: Io takes it as the client's, not as
                // one of its own short waits.
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the script is over"));
            }
            return Ok(0);
        };
        let n = chunk.len().min(buf.len()).min(self.max_read);
        let taken: Vec<u8> = chunk.drain(..n).collect();
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        if let Some(dst) = buf.get_mut(..n) {
            dst.copy_from_slice(&taken);
        }
        self.transcript.push(Event::Read(taken));
        Ok(n)
    }
}

impl Write for Memory {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.transcript.push(Event::Wrote(buf.to_vec()));
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Conn for Memory {
    fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }
}

/// The stand-in while a connection is being upgraded, and what is left when
/// the upgrade failed: reads see end of stream, writes fail.
struct Closed;

impl Read for Closed {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

impl Write for Closed {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::NotConnected.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Conn for Closed {
    fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }
}

/// What one `read_line` produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line without its line end.
    Text(Vec<u8>),
    /// Over the limit; the whole line was read and thrown away.
    TooLong,
    /// A CR or LF that is not part of a CRLF (RFC 5321 2.3.8): client and
    /// server no longer agree where lines end, so nothing of the line may be
    /// acted on. What follows it in the buffer is left unread.
    Bare(Bare),
    /// The client closed the connection.
    Eof,
}

/// Which lone line-end character a line held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bare {
    /// An LF without a CR before it.
    Lf,
    /// A CR without an LF after it.
    Cr,
}

/// Buffered input and output over a `Conn`.
pub struct Io {
    conn: Box<dyn Conn>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// The read timeout the session asked for.
    timeout: Duration,
    /// The read timeout the connection has now (None: unknown), so that the
    /// stop-flag ticks and the reads after them change it only when needed.
    read_set: Option<Duration>,
    /// When set, a wait for the next command ends early once this is true.
    stop: Option<Arc<AtomicBool>>,
}

/// How often a wait for a command looks at the stop flag.
const STOP_TICK: Duration = Duration::from_millis(500);

/// The error `read_line` returns when the daemon is stopping.
pub fn is_stopping(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionAborted && e.to_string() == STOPPING
}

const STOPPING: &str = "server shutting down";

/// The error a pooled connection's read returns when stress mode cuts an idle
/// client short (src/server/listener.rs): a timeout, told apart for the log.
pub fn stress_timeout() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, STRESS)
}

/// Whether `e` is [`stress_timeout`]'s error.
pub fn is_stress_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut && e.get_ref().is_some_and(|m| m.to_string() == STRESS)
}

const STRESS: &str = "idle too long while the server is busy";

/// The error a pooled connection's read returns when the pool closed the
/// session to make room for a new client (src/server/listener.rs).
pub fn evicted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, EVICTED)
}

/// Whether `e` is [`evicted`]'s error.
pub fn is_evicted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionAborted && e.get_ref().is_some_and(|m| m.to_string() == EVICTED)
}

const EVICTED: &str = "closed to make room for another client";

const BUF_SIZE: usize = 16 * 1024;

impl Io {
    pub fn new(conn: Box<dyn Conn>) -> Io {
        Io {
            conn,
            buf: vec![0; BUF_SIZE],
            start: 0,
            end: 0,
            out: Vec::with_capacity(1024),
            timeout: Duration::from_secs(300),
            read_set: None,
            stop: None,
        }
    }

    pub fn set_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.timeout = t;
        self.read_set = None;
        self.conn.set_timeout(t)?;
        self.read_set = Some(t);
        Ok(())
    }

    fn read_wait(&mut self, t: Duration) -> io::Result<()> {
        if self.read_set != Some(t) {
            self.read_set = None;
            self.conn.set_read_wait(t)?;
            self.read_set = Some(t);
        }
        Ok(())
    }

    /// Let waits for a command end when `flag` becomes true (daemon shutdown);
    /// reading message data is never cut short by it.
    pub fn set_stop_flag(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    /// `fill`, but waking every STOP_TICK to look at the stop flag, so an idle
    /// client can be told the server is going away (RFC 5321 3.8: 421).
    fn fill_or_stop(&mut self) -> io::Result<usize> {
        let Some(stop) = self.stop.clone() else {
            return self.fill();
        };
        // Replies go out under the full timeout, before the short read ticks.
        self.flush()?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, STOPPING));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.read_wait(left.min(STOP_TICK))?;
            let r = self.fill_now();
            // Only the socket's own expiry is a tick; a timeout the Conn
            // decided on (one with a message: stress mode) ends the wait.
            if matches!(&r, Err(e) if e.get_ref().is_none()
                && matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
            {
                continue;
            }
            // The tick stays on the connection: the next wait for a command
            // needs it again, and `fill` restores the full timeout if it reads.
            return r;
        }
    }

    /// Tell the connection where the session stands (see [`Conn::report`]).
    pub fn report(&mut self, standing: Standing) {
        self.conn.report(standing);
    }

    /// Queue bytes for the client; sent at the next flush.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    pub fn out_buffer(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let r = self.conn.write_all(&self.out);
            self.out.clear();
            r?;
        }
        self.conn.flush()
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Throw away everything the client sent that was not yet read; used
    /// where pipelined input must not be acted on (after STARTTLS, CVE-2011-0411).
    pub fn discard_buffered(&mut self) {
        self.start = self.end;
    }

    /// Replace the connection underneath, for STARTTLS and implicit TLS:
    /// pending replies are flushed first, and input received but not yet read
    /// is thrown away, so that nothing a client pipelined in plaintext is
    /// ever executed inside the TLS session (CVE-2011-0411, RFC 3207 6).
    pub fn upgrade<T>(
        &mut self,
        wrap: impl FnOnce(Box<dyn Conn>) -> io::Result<(Box<dyn Conn>, T)>,
    ) -> io::Result<T> {
        self.flush()?;
        self.discard_buffered();
        let old = std::mem::replace(&mut self.conn, Box::new(Closed));
        self.read_set = None;
        let (new, t) = wrap(old)?;
        self.conn = new;
        Ok(t)
    }

    /// Read more from the connection, flushing pending replies first because
    /// this may block. Ok(0) means end of stream.
    pub fn fill(&mut self) -> io::Result<usize> {
        self.flush()?;
        self.read_wait(self.timeout)?;
        self.fill_now()
    }

    /// `fill` under whatever read timeout the connection has.
    fn fill_now(&mut self) -> io::Result<usize> {
        self.flush()?;
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Callers consume before refilling, so a full buffer means one
            // very long line; the line reader handles that case itself.
            return Err(io::Error::other("input buffer full"));
        }
        let free = self.buf.get_mut(self.end..).unwrap_or_default();
        loop {
            match self.conn.read(free) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Read one line ending in CRLF, without it. RFC 5321 2.3.8 and 4.1.1:
    /// CRLF and nothing else ends a line, so a lone LF or a lone CR makes the
    /// line `Bare`: it is reported as soon as it is seen (an LF at once; a CR
    /// when the byte after it is not LF), never waited out, so a client
    /// that ends lines with LF only gets its answer instead of a timeout.
    /// Lines longer than `max` octets including the line end are read to
    /// their end and reported as `TooLong` (RFC 5321 4.5.3.1.4 for
    /// commands), or as `Bare` when a lone CR or LF was in them.
    pub fn read_line(&mut self, max: usize) -> io::Result<Line> {
        let mut discarding = false;
        loop {
            let avail = self.buffered();
            match scan_line(avail) {
                Scan::Bare(kind) => {
                    // The session ends on this, so what comes after does not matter.
                    let n = avail.len();
                    self.consume(n);
                    return Ok(Line::Bare(kind));
                }
                Scan::Line(pos) => {
                    let line = avail.get(..pos).unwrap_or_default();
                    let too_long = discarding || pos + 2 > max;
                    let line = if too_long { Vec::new() } else { line.to_vec() };
                    self.consume(pos + 2);
                    return Ok(if too_long { Line::TooLong } else { Line::Text(line) });
                }
                Scan::Partial => {}
            }
            if avail.len() >= max {
                // No line end within the limit (nor a lone CR or LF: those end
                // the scan): drop what we have and keep reading, but keep a
                // final CR, which may be half of the CRLF.
                discarding = true;
                let keep = usize::from(avail.last() == Some(&b'\r'));
                let n = avail.len() - keep;
                self.consume(n);
            }
            if self.fill_or_stop()? == 0 {
                return Ok(Line::Eof);
            }
        }
    }
}

/// Where the first line of `buf` ends, by RFC 5321's rule.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// A CRLF at this offset ends a clean line.
    Line(usize),
    /// A lone CR or LF.
    Bare(Bare),
    /// No line end yet (a final CR may still be followed by its LF).
    Partial,
}

fn scan_line(buf: &[u8]) -> Scan {
    let Some(i) = buf.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return Scan::Partial;
    };
    match (buf.get(i), buf.get(i + 1)) {
        (Some(b'\n'), _) => Scan::Bare(Bare::Lf),
        (_, Some(b'\n')) => Scan::Line(i),
        (_, Some(_)) => Scan::Bare(Bare::Cr),
        _ => Scan::Partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_for(input: &[u8]) -> Io {
        // One byte at a time: lines must survive any fragmentation.
        let (conn, _) = Memory::new([input]);
        Io::new(Box::new(conn.one_byte_at_a_time()))
    }

    #[test]
    fn memory_conn_records_reads_and_writes() -> io::Result<()> {
        let (mut conn, t) = Memory::new(["ab", "c"]);
        let mut buf = [0u8; 8];
        assert_eq!(conn.read(&mut buf)?, 2);
        conn.write_all(b"x\r\n")?;
        assert_eq!(conn.read(&mut buf)?, 1);
        assert_eq!(conn.read(&mut buf)?, 0);
        assert_eq!(
            t.events(),
            vec![
                Event::Read(b"ab".to_vec()),
                Event::Wrote(b"x\r\n".to_vec()),
                Event::Read(b"c".to_vec())
            ]
        );
        assert_eq!(t.lines(), vec!["x"]);
        let (conn, _) = Memory::new(["a"]);
        let mut conn = conn.then_idle();
        assert_eq!(conn.read(&mut buf)?, 1);
        assert_eq!(conn.read(&mut buf).unwrap_err().kind(), io::ErrorKind::TimedOut);
        Ok(())
    }

    #[test]
    fn lines_and_limits() -> io::Result<()> {
        let long = "x".repeat(600);
        let input = format!("HELO a\r\nNOOP\r\n{long}\r\nQUIT\r\n");
        let mut io = io_for(input.as_bytes());
        assert_eq!(io.read_line(512)?, Line::Text(b"HELO a".to_vec()));
        assert_eq!(io.read_line(512)?, Line::Text(b"NOOP".to_vec()));
        assert_eq!(io.read_line(512)?, Line::TooLong);
        assert_eq!(io.read_line(512)?, Line::Text(b"QUIT".to_vec()));
        assert_eq!(io.read_line(512)?, Line::Eof);
        Ok(())
    }

    /// RFC 5321 2.3.8: only CRLF ends a line; a lone LF or CR anywhere in a
    /// line (short or overlong) makes it one bad line, whatever follows.
    #[test]
    fn lone_cr_or_lf_is_a_bare_line() -> io::Result<()> {
        let long = "x".repeat(600);
        for (input, want) in [
            (
                "MAIL FROM:<c@example.org>\nRCPT TO:<b@example.test>\r\n".to_owned(),
                Bare::Lf,
            ),
            ("EHLO a\nMAIL FROM:<x@y>\r\n".to_owned(), Bare::Lf),
            ("NOOP\n".to_owned(), Bare::Lf),
            ("\n".to_owned(), Bare::Lf),
            ("NOOP\rRSET\r\n".to_owned(), Bare::Cr),
            ("NOOP\r\r\n".to_owned(), Bare::Cr),
            (format!("{long}\nRCPT TO:<b@example.test>\r\n"), Bare::Lf),
            (format!("{long}\rRCPT TO:<b@example.test>\r\n"), Bare::Cr),
        ] {
            let mut io = io_for(format!("NOOP\r\n{input}").as_bytes());
            assert_eq!(io.read_line(512)?, Line::Text(b"NOOP".to_vec()));
            assert_eq!(io.read_line(512)?, Line::Bare(want), "{input:?}");
        }
        // A lone CR is known by the byte after it, not waited out to a timeout.
        let (conn, _) = Memory::new(["NOOP\rX"]);
        let mut io = Io::new(Box::new(conn.then_idle()));
        assert_eq!(io.read_line(512)?, Line::Bare(Bare::Cr));
        // A CRLF split between reads, even at the end of an overlong line, is a line end.
        let (conn, _) = Memory::new([format!("{long}\r"), "\nNOOP\r".to_owned(), "\n".to_owned()]);
        let mut io = Io::new(Box::new(conn));
        assert_eq!(io.read_line(512)?, Line::TooLong);
        assert_eq!(io.read_line(512)?, Line::Text(b"NOOP".to_vec()));
        Ok(())
    }

    #[test]
    fn exactly_at_limit() -> io::Result<()> {
        let ok = format!("{}\r\n", "a".repeat(510));
        let bad = format!("{}\r\n", "a".repeat(511));
        let mut io = io_for(format!("{ok}{bad}").as_bytes());
        assert!(matches!(io.read_line(512)?, Line::Text(_)));
        assert_eq!(io.read_line(512)?, Line::TooLong);
        Ok(())
    }

    #[test]
    fn very_long_line_larger_than_buffer() -> io::Result<()> {
        let input = format!("{}\r\nNOOP\r\n", "z".repeat(100_000));
        let mut io = io_for(input.as_bytes());
        assert_eq!(io.read_line(512)?, Line::TooLong);
        assert_eq!(io.read_line(512)?, Line::Text(b"NOOP".to_vec()));
        Ok(())
    }
}
