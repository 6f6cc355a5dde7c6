//! Where a helper service listens, in Postfix's syntax: `inet:host:port` or
//! `unix:/path` (milters, SMTP access policy services), and a blocking stream to
//! it with time-outs. Shared by `milter` and `policy_service`, which know the
//! protocols; this module knows only sockets.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// A service address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `inet:host:port`, `inet:[v6addr]:port`, or Sendmail's `inet:port@host`.
    Inet { host: String, port: u16 },
    /// `unix:/path` (`local:` is Postfix's synonym).
    Unix(PathBuf),
}

impl Endpoint {
    /// Parse `inet:127.0.0.1:11332`, `inet:[::1]:10023`, `inet:8891@localhost`
    /// (the form OpenDKIM's and rspamd's own configs use, accepted so an
    /// administrator can copy it), `unix:/run/opendkim/opendkim.sock`.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let s = s.trim();
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected inet:host:port or unix:/path"))?;
        match kind.to_ascii_lowercase().as_str() {
            "inet" => parse_inet(rest).ok_or_else(|| format!("{s:?}: expected inet:host:port")),
            "unix" | "local" if !rest.is_empty() && !rest.contains('\0') => {
                Ok(Endpoint::Unix(PathBuf::from(rest)))
            }
            "unix" | "local" => Err(format!("{s:?}: expected unix:/path")),
            _ => Err(format!("{s:?}: unknown transport {kind:?} (inet or unix)")),
        }
    }

    /// Connect, giving up after `timeout` (for each address a name resolves to).
    /// TCP_NODELAY is set: both protocols are small request/reply exchanges, which
    /// Nagle's algorithm and delayed ACKs would slow by tens of milliseconds each.
    pub fn connect(&self, timeout: Duration) -> io::Result<Stream> {
        match self {
            Endpoint::Inet { host, port } => {
                let mut last = None;
                for addr in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => {
                            s.set_nodelay(true)?;
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"))
                }))
            }
            // A local socket connects at once or fails (ECONNREFUSED, ENOENT).
            Endpoint::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
        }
    }
}

/// One entry of a service list: an endpoint and the settings given with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub endpoint: Endpoint,
    /// `name = value` pairs, trimmed, in order.
    pub settings: Vec<(String, String)>,
}

/// A list of services as Postfix writes `smtpd_milters`: endpoints separated by
/// commas or white space, each either plain or `{ endpoint, name = value, ... }`
/// with settings of its own (which the caller interprets).
pub fn parse_list(list: &str) -> Result<Vec<ListEntry>, String> {
    let mut out = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let (item, after) = if let Some(inner) = rest.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| format!("{rest:?}: missing }}"))?;
            (
                inner.get(..end).unwrap_or_default(),
                inner.get(end + 1..).unwrap_or_default(),
            )
        } else {
            let end = rest.find([',', ' ', '\t', '\n']).unwrap_or(rest.len());
            (
                rest.get(..end).unwrap_or_default(),
                rest.get(end..).unwrap_or_default(),
            )
        };
        rest = after.trim_start_matches([',', ' ', '\t', '\n']);
        let mut parts = item.split(',').map(str::trim).filter(|s| !s.is_empty());
        let endpoint = Endpoint::parse(parts.next().ok_or("empty entry { }")?)?;
        let settings = parts
            .map(|setting| {
                setting
                    .split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| format!("{setting:?}: expected name = value"))
            })
            .collect::<Result<_, _>>()?;
        out.push(ListEntry { endpoint, settings });
    }
    Ok(out)
}

/// The services of a list (see [`parse_list`]) as the caller's settings
/// (`MilterSpec`, `PolicySpec`): each starts as a copy of `defaults`, gets its
/// endpoint from `place`, then `set(spec, name, value)` applies each of its own
/// settings in order (an error names the setting).
pub fn parse_specs<T: Clone>(
    list: &str,
    defaults: &T,
    place: impl Fn(&mut T, Endpoint),
    mut set: impl FnMut(&mut T, &str, &str) -> Result<(), String>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for entry in parse_list(list)? {
        let mut spec = defaults.clone();
        place(&mut spec, entry.endpoint);
        for (k, v) in &entry.settings {
            set(&mut spec, k, v)?;
        }
        out.push(spec);
    }
    Ok(out)
}

fn parse_inet(rest: &str) -> Option<Endpoint> {
    // Sendmail's and libmilter's own form: port@host.
    if let Some((port, host)) = rest.split_once('@') {
        return inet(host, port);
    }
    let (host, port) = rest.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    inet(host, port)
}

fn inet(host: &str, port: &str) -> Option<Endpoint> {
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    ok.then(|| Endpoint::Inet {
        host: host.to_owned(),
        port,
    })
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Inet { host, port } if host.contains(':') => write!(f, "inet:[{host}]:{port}"),
            Endpoint::Inet { host, port } => write!(f, "inet:{host}:{port}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connected stream, TCP or local.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Bound every following read and write by `t` (None: wait forever).
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        // A zero duration is an error for std; the callers' deadlines never reach it,
        // but a deadline that has just passed must still time out, not block.
        let t = t.map(|d| d.max(Duration::from_millis(1)));
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }

    /// Acknowledge incoming data at once (see [`crate::sys::tcp_quickack`]); call
    /// before each read of a reply. Local sockets have no ACKs to delay.
    pub fn ack_now(&self) {
        if let Stream::Tcp(s) = self {
            let _ = crate::sys::tcp_quickack(s.as_raw_fd());
        }
    }

    /// Close both directions now, so a peer blocked on us sees the end at once.
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Whether an I/O error is a time-out (std reports them as WouldBlock or TimedOut).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn parses_postfix_and_sendmail_forms() {
        let inet = |h: &str, p| Endpoint::Inet {
            host: h.to_owned(),
            port: p,
        };
        assert_eq!(
            Endpoint::parse("inet:127.0.0.1:11332"),
            Ok(inet("127.0.0.1", 11332))
        );
        assert_eq!(
            Endpoint::parse("inet:localhost:8891"),
            Ok(inet("localhost", 8891))
        );
        assert_eq!(Endpoint::parse("inet:[::1]:10023"), Ok(inet("::1", 10023)));
        assert_eq!(
            Endpoint::parse("inet:8891@127.0.0.1"),
            Ok(inet("127.0.0.1", 8891))
        );
        assert_eq!(Endpoint::parse(" INET:h:1 "), Ok(inet("h", 1)));
        assert_eq!(
            Endpoint::parse("unix:/run/opendkim/opendkim.sock"),
            Ok(Endpoint::Unix(PathBuf::from("/run/opendkim/opendkim.sock")))
        );
        assert_eq!(
            Endpoint::parse("local:/x"),
            Ok(Endpoint::Unix(PathBuf::from("/x")))
        );
        for bad in [
            "",
            "inet",
            "inet:",
            "inet:host",
            "inet:host:0",
            "inet:host:65536",
            "inet::25",
            "inet:ho st:25",
            "unix:",
            "tcp:1.2.3.4:5",
            "/path",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn lists_have_plain_entries_and_braced_ones_with_settings() {
        let l = parse_list("inet:h:1, unix:/a {unix:/b, x = 1 , y=two words} inet:h:2").unwrap();
        let eps: Vec<String> = l.iter().map(|e| e.endpoint.to_string()).collect();
        assert_eq!(eps, ["inet:h:1", "unix:/a", "unix:/b", "inet:h:2"]);
        assert_eq!(
            l[2].settings,
            [
                ("x".to_owned(), "1".to_owned()),
                ("y".to_owned(), "two words".to_owned())
            ]
        );
        assert!(l[0].settings.is_empty());
        assert_eq!(parse_list("  ").unwrap(), []);
        for bad in [
            "{ inet:h:1",
            "{ }",
            "{ inet:h:1, novalue }",
            "tcp:x",
            "inet:h:1 {bad:x}",
        ] {
            assert!(parse_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_in_postfix_form() {
        for s in ["inet:127.0.0.1:11332", "inet:[::1]:10023", "unix:/run/x.sock"] {
            assert_eq!(Endpoint::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Endpoint::parse("inet:25@h").unwrap().to_string(), "inet:h:25");
    }

    #[test]
    fn connects_over_tcp_and_unix() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut s = Endpoint::parse(&format!("inet:127.0.0.1:{port}"))
            .unwrap()
            .connect(Duration::from_secs(5))
            .unwrap();
        let (mut a, _) = l.accept().unwrap();
        s.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let ul = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut u = Endpoint::Unix(path).connect(Duration::from_secs(5)).unwrap();
        let (mut b, _) = ul.accept().unwrap();
        b.write_all(b"yo").unwrap();
        u.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"yo");
    }

    #[test]
    fn refused_and_missing_fail_fast_and_reads_time_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert!(Endpoint::parse(&format!("inet:127.0.0.1:{port}"))
            .unwrap()
            .connect(Duration::from_secs(5))
            .is_err());
        assert!(Endpoint::Unix(PathBuf::from("/nonexistent/x.sock"))
            .connect(Duration::from_secs(5))
            .is_err());

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut s = Endpoint::parse(&format!("inet:127.0.0.1:{port}"))
            .unwrap()
            .connect(Duration::from_secs(5))
            .unwrap();
        s.set_timeout(Some(Duration::from_millis(100))).unwrap();
        let t = Instant::now();
        let e = s.read(&mut [0u8; 1]).unwrap_err();
        assert!(is_timeout(&e), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}
