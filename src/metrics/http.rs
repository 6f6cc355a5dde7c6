//! The smallest HTTP/1.1 server that Prometheus can scrape: one thread, one
//! connection at a time, `GET /metrics` (and `HEAD`), nothing else.
//!
//! A scrape is a handful of small requests a minute, so there is no pool and
//! no keep-alive: every answer says `Connection: close` and the socket is
//! closed after it (RFC 9112 9.6). What a client may cost is bounded: the
//! request head is at most `MAX_HEAD` bytes, and the whole exchange at most
//! `DEADLINE`, after which the connection is dropped, so a client that
//! stalls delays the next scrape by seconds, never forever. The request body
//! (a GET has none) is never read.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::text::CONTENT_TYPE;

/// The longest request head read: request line and header fields
/// (Prometheus sends about 300 bytes).
const MAX_HEAD: usize = 8 * 1024;
/// The longest a connection may take, from accept to close.
const DEADLINE: Duration = Duration::from_secs(5);
/// How long input is drained after the answer (see `answer`).
const DRAIN: Duration = Duration::from_millis(200);

/// The daemon's metrics listener: bound at start-up with the SMTP ones
/// (before the daemon detaches, so that a failure is seen), served once the
/// daemon runs.
pub struct Endpoint(TcpListener);

/// Bind `addr` (`metrics_listen`); the error names it.
pub fn bind(addr: SocketAddr) -> io::Result<Endpoint> {
    TcpListener::bind(addr)
        .map(Endpoint)
        .map_err(|e| io::Error::new(e.kind(), format!("metrics_listen: cannot listen on {addr}: {e}")))
}

impl Endpoint {
    /// Start answering scrapes with [`super::render`]; logs where.
    pub fn serve(self) -> io::Result<()> {
        let addr = self.0.local_addr()?;
        // A loopback address is the documented one (tern.conf(5)); another was
        // written out on purpose, but say what it means.
        if !addr.ip().is_loopback() {
            log::warn!(
                "metrics on {addr}, not a loopback address: anyone who can reach it can read them \
                 (counts only, no addresses); restrict it with a firewall"
            );
        }
        super::started(crate::clock::now());
        serve(self.0, super::render)?;
        log::info!("listening for metrics on {addr}");
        Ok(())
    }
}

/// Serve `listener` on a thread of its own, answering with `render()` at
/// each scrape. Returns at once; the thread lives as long as the process.
pub fn serve(listener: TcpListener, render: fn() -> String) -> io::Result<()> {
    thread::Builder::new()
        .name("metrics".to_owned())
        .spawn(move || loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = handle(stream, render) {
                        log::debug!("metrics: {e}");
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::error!("metrics: accept: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
        })?;
    Ok(())
}

/// What the request asked for, or why it cannot be answered.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// GET (body wanted) or HEAD (not) of /metrics.
    Metrics { body: bool },
    /// An answer other than the metrics: status line and a short text.
    Error(&'static str, &'static str),
}

fn handle(mut stream: TcpStream, render: fn() -> String) -> io::Result<()> {
    let started = Instant::now();
    stream.set_write_timeout(Some(DEADLINE))?;
    let head = match read_head(&mut stream, started)? {
        Some(h) => h,
        None => return Ok(()),
    };
    match parse(&head) {
        Request::Metrics { body } => answer(&mut stream, "200 OK", CONTENT_TYPE, &render(), body, &[]),
        Request::Error(status, why) => {
            // RFC 9110 15.5.6: a 405 names the methods that are allowed.
            let allow: &[&str] = if status.starts_with("405") {
                &["Allow: GET, HEAD"]
            } else {
                &[]
            };
            let text = format!("{why}\n");
            answer(
                &mut stream,
                status,
                "text/plain; charset=utf-8",
                &text,
                true,
                allow,
            )
        }
    }
}

/// Read up to the empty line that ends the request head. None: the client
/// closed, stalled past the deadline, or sent a head too large (answered 431).
fn read_head(stream: &mut TcpStream, started: Instant) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let left = DEADLINE.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        let end = head_end(&head);
        if let Some(end) = end.filter(|e| *e <= MAX_HEAD) {
            head.truncate(end);
            return Ok(Some(head));
        }
        if end.is_some() || head.len() > MAX_HEAD {
            let why = "Request header fields too large\n";
            answer(
                stream,
                "431 Request Header Fields Too Large",
                "text/plain; charset=utf-8",
                why,
                true,
                &[],
            )?;
            return Ok(None);
        }
    }
}

/// Where the head ends: after CRLF CRLF, or LF LF from a lax client.
fn head_end(b: &[u8]) -> Option<usize> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The request line, `METHOD SP TARGET SP HTTP/1.x` (RFC 9112 3); the header
/// fields are not needed: there is one representation, uncompressed.
fn parse(head: &[u8]) -> Request {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head.get(..line_end).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Request::Error("400 Bad Request", "Bad request");
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Error("400 Bad Request", "Bad request");
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Request::Error("505 HTTP Version Not Supported", "HTTP/1.1 only");
    }
    // The query string (Prometheus may add ?name[]=... for some targets) is ignored.
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Request::Error("404 Not Found", "Not found: the metrics are at /metrics");
    }
    match method {
        "GET" => Request::Metrics { body: true },
        "HEAD" => Request::Metrics { body: false },
        _ => Request::Error("405 Method Not Allowed", "Only GET and HEAD"),
    }
}

/// Write one response and close. Input still unread (a pipelined request)
/// is drained briefly first: closing a socket with unread input sends a
/// reset, which may throw away the response before the client has read it.
fn answer(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    with_body: bool,
    extra: &[&str],
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in extra {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    if with_body {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()?;
    stream.shutdown(Shutdown::Write)?;
    let until = Instant::now() + DRAIN;
    let mut sink = [0u8; 1024];
    while let Some(left) = until
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> String {
        "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n".to_owned()
    }

    fn server() -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        serve(l, body).unwrap();
        addr
    }

    fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_lines() {
        let m = |s: &str| parse(s.as_bytes());
        assert_eq!(
            m("GET /metrics HTTP/1.1\r\n\r\n"),
            Request::Metrics { body: true }
        );
        assert_eq!(
            m("HEAD /metrics HTTP/1.0\r\n\r\n"),
            Request::Metrics { body: false }
        );
        assert_eq!(
            m("GET /metrics?x=1 HTTP/1.1\r\n\r\n"),
            Request::Metrics { body: true }
        );
        assert!(matches!(m("POST /metrics HTTP/1.1\r\n\r\n"), Request::Error(s, _) if s.starts_with("405")));
        assert!(matches!(m("GET / HTTP/1.1\r\n\r\n"), Request::Error(s, _) if s.starts_with("404")));
        assert!(matches!(m("GET /metrics HTTP/2\r\n\r\n"), Request::Error(s, _) if s.starts_with("505")));
        assert!(matches!(m("GET /metrics\r\n\r\n"), Request::Error(s, _) if s.starts_with("400")));
        assert!(matches!(m("GET  /metrics HTTP/1.1\r\n\r\n"), Request::Error(s, _) if s.starts_with("400")));
        assert!(matches!(parse(b"GET /\xff HTTP/1.1\r\n\r\n"), Request::Error(s, _) if s.starts_with("400")));
    }

    #[test]
    fn scrape_over_a_socket() {
        let addr = server();
        let r = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain;version=0.0.4\r\n\r\n",
        );
        let (head, got) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nContent-Length: {}", body().len())),
            "{head}"
        );
        assert!(head.contains("\r\nConnection: close"), "{head}");
        assert_eq!(got, body());

        // HEAD: the same head, no body.
        let r = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );

        let r = exchange(addr, b"GET /other HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        let r = exchange(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("\r\nAllow: GET, HEAD\r\n"),
            "{r}"
        );
    }

    #[test]
    fn a_huge_head_is_refused_and_the_server_goes_on() {
        let addr = server();
        let mut req = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while req.len() <= MAX_HEAD {
            req.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        req.extend_from_slice(b"\r\n");
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&req);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let r = String::from_utf8_lossy(&out);
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        assert!(exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
    }

    #[test]
    fn a_silent_client_is_dropped_at_the_deadline() {
        let addr = server();
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.set_read_timeout(Some(DEADLINE * 3)).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 16];
        // Nothing sent: the server closes without a word once the deadline passes.
        assert_eq!(idle.read(&mut buf).unwrap_or(0), 0);
        let took = started.elapsed();
        assert!(
            took >= DEADLINE - Duration::from_millis(100) && took < DEADLINE * 2,
            "{took:?}"
        );
        // And serves the next one.
        assert!(exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
    }
}
