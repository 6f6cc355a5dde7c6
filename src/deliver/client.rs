//! A blocking SMTP client over any `Read + Write` stream: reads replies with
//! a cap on their size, parses EHLO extensions, and sends a transaction with
//! or without PIPELINING (RFC 2920). It makes no delivery decisions: remote.rs
//! reads the replies it returns.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::smtp::status::Status;

/// A stream whose read timeout can be changed, so that a whole reply, not
/// each read, is bounded by the RFC 5321 4.5.3.2 timeout.
pub trait Timed {
    fn set_read_limit(&self, t: Duration) -> io::Result<()>;
    /// How long one write may block.
    fn set_write_limit(&self, _t: Duration) -> io::Result<()> {
        Ok(())
    }
}

/// The most bytes one reply may take (all lines), and one line. RFC 5321
/// 4.5.3.1.5 says 512 per line; servers send longer, we allow some slack.
const MAX_REPLY: usize = 64 * 1024;
const MAX_LINE: usize = 4096;

/// One server reply: the code and the text of each line (after "250-").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The enhanced status code (RFC 2034) the reply carries, when its
    /// class matches the code's; otherwise X.0.0 for the code's class.
    pub fn status(&self) -> Status {
        let class = u8::try_from(self.code / 100).unwrap_or(4);
        let esc = self
            .lines
            .first()
            .and_then(|l| l.split(' ').next())
            .and_then(Status::parse)
            .filter(|s| s.0 == class);
        esc.unwrap_or(Status(
            if class == 5 {
                5
            } else if class == 2 {
                2
            } else {
                4
            },
            0,
            0,
        ))
    }

    /// All on one line, for logs and DSNs: `550 5.1.1 no such user`.
    pub fn one_line(&self) -> String {
        let text: Vec<&str> = self
            .lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        let text = text.join(" ");
        // Control characters from the far end never reach our logs.
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if text.is_empty() {
            self.code.to_string()
        } else {
            format!("{} {text}", self.code)
        }
    }
}

/// What the server offered in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub pipelining: bool,
    /// SIZE limit; Some(0) = SIZE offered without a limit.
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    /// RFC 8689: the server takes `MAIL FROM:<...> REQUIRETLS`.
    pub requiretls: bool,
    /// AUTH mechanisms, uppercased.
    pub auth: Vec<String>,
    /// RFC 3030: BDAT.
    pub chunking: bool,
    pub binarymime: bool,
    /// RFC 9422 LIMITS: RCPT commands per transaction, and transactions per
    /// session, the server takes (None: not said; a value of 0 is ignored).
    pub rcptmax: Option<usize>,
    pub mailmax: Option<usize>,
}

impl Extensions {
    /// Parse the lines of a 250 EHLO reply; the first is the greeting.
    pub fn parse(reply: &Reply) -> Extensions {
        let mut e = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => e.pipelining = true,
                "SIZE" => e.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => e.eightbitmime = true,
                "SMTPUTF8" => e.smtputf8 = true,
                "DSN" => e.dsn = true,
                "STARTTLS" => e.starttls = true,
                "REQUIRETLS" => e.requiretls = true,
                "AUTH" => e.auth = words.map(|w| w.to_ascii_uppercase()).collect(),
                "CHUNKING" => e.chunking = true,
                "BINARYMIME" => e.binarymime = true,
                "LIMITS" => {
                    // RFC 9422 3: limit = name "=" value; unknown names are ignored.
                    for w in words {
                        let Some((name, value)) = w.split_once('=') else {
                            continue;
                        };
                        let n = value.parse::<usize>().ok().filter(|&n| n > 0);
                        match name.to_ascii_uppercase().as_str() {
                            "RCPTMAX" => e.rcptmax = n,
                            "MAILMAX" => e.mailmax = n,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        e
    }
}

/// The replies to one transaction's envelope: MAIL, each RCPT, and DATA
/// (None when it was not sent because nothing was accepted).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The reply to a RSET sent first in the group (see [`Client::envelope`]).
    pub rset: Option<Reply>,
    pub mail: Reply,
    pub rcpts: Vec<Reply>,
    pub data: Option<Reply>,
}

/// An SMTP client connection.
pub struct Client<S> {
    stream: S,
    /// Mail transactions begun on this connection (RFC 9422 MAILMAX).
    transactions: usize,
    buf: Vec<u8>,
    start: usize,
    /// The most time one whole reply may take; None = only the socket's
    /// own per-read timeout applies.
    limit: Option<Duration>,
    /// The socket's read and write timeouts as last set here (None: unknown),
    /// so that they are changed only when they must be: a system call each.
    read_set: Option<Duration>,
    write_set: Option<Duration>,
}

impl<S: Read + Write + Timed> Client<S> {
    pub fn new(stream: S) -> Client<S> {
        Client {
            stream,
            transactions: 0,
            buf: Vec::with_capacity(4096),
            start: 0,
            limit: None,
            read_set: None,
            write_set: None,
        }
    }

    /// Bound each reply by `t` (as [`Client::set_reply_limit`]) and each write
    /// by `t`.
    pub fn set_timeouts(&mut self, t: Duration) -> io::Result<()> {
        self.limit = Some(t);
        if self.write_set != Some(t) {
            self.write_set = None;
            self.stream.set_write_limit(t)?;
            self.write_set = Some(t);
        }
        Ok(())
    }

    /// Bound each reply, however it trickles in (a byte a minute, an
    /// endless line), by `t` in all: RFC 5321 4.5.3.2 times the wait for
    /// the reply, not the gap between bytes.
    pub fn set_reply_limit(&mut self, t: Duration) {
        self.limit = Some(t);
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Mail transactions begun on this connection.
    pub fn transactions(&self) -> usize {
        self.transactions
    }

    /// Count one more mail transaction begun.
    pub fn count_transaction(&mut self) {
        self.transactions += 1;
    }

    /// Give back the stream, for STARTTLS. Fails if the server sent bytes
    /// past its reply: those would be injected into the TLS session
    /// (the STARTTLS command injection of CVE-2011-0411, in reverse).
    pub fn into_stream(self) -> io::Result<S> {
        if self.start < self.buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "server sent data after its STARTTLS reply",
            ));
        }
        Ok(self.stream)
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    pub fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.send(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// One line without its CRLF; a lone LF is accepted as the end too.
    fn line(&mut self, budget: &mut usize, deadline: Option<Instant>) -> io::Result<Vec<u8>> {
        loop {
            let pending = self.buf.get(self.start..).unwrap_or_default();
            if let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let mut line = pending.get(..nl).unwrap_or_default().to_vec();
                self.start += nl + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                *budget = budget.saturating_sub(nl + 1);
                return Ok(line);
            }
            if pending.len() > MAX_LINE || pending.len() >= *budget {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "reply line too long"));
            }
            // Compact, then read more.
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "reply timed out"));
                }
                // The socket's timeout stays when it ends the wait no later than an
                // eighth past the deadline: timeouts are minutes, and resetting it
                // before every read would cost a system call each.
                if self.read_set.is_none_or(|s| s > left.saturating_add(left / 8)) {
                    self.read_set = None;
                    self.stream.set_read_limit(left)?;
                    self.read_set = Some(left);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                // A shorter timeout left from an earlier reply: wait on until ours.
                Err(e)
                    if deadline.is_some()
                        && matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    self.read_set = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            self.buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }

    /// Read one reply, single or multi-line (RFC 5321 4.2.1).
    pub fn reply(&mut self) -> io::Result<Reply> {
        let mut budget = MAX_REPLY;
        let deadline = self.limit.map(|t| Instant::now() + t);
        let mut lines = Vec::new();
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bad reply: {what}"));
        loop {
            let raw = self.line(&mut budget, deadline)?;
            let line = String::from_utf8_lossy(&raw);
            let digits = line.get(..3).ok_or_else(|| bad(&line))?;
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&line));
            }
            let code: u16 = digits.parse().map_err(|_| bad(&line))?;
            if !(200..600).contains(&code) {
                return Err(bad(&line));
            }
            let sep = line.as_bytes().get(3).copied();
            let text = line.get(4..).unwrap_or_default().to_owned();
            lines.push(text);
            match sep {
                Some(b'-') => {}
                None | Some(b' ') => return Ok(Reply { code, lines }),
                Some(_) => return Err(bad(&line)),
            }
            if lines.len() > 200 {
                return Err(bad("too many lines"));
            }
        }
    }

    /// MAIL, each RCPT and DATA: in one write with PIPELINING, else one by
    /// one. DATA is sent only when a recipient was accepted (without
    /// pipelining) or always (with it, as RFC 2920 3.1 allows: the server
    /// then refuses it, and a 354 anyway is closed with an empty message).
    /// With `rset` and PIPELINING, a RSET leads the group (RFC 2920 3.1 lets
    /// it be pipelined): on a connection kept from an earlier message it
    /// checks the server is still there without a round trip of its own.
    pub fn envelope(
        &mut self,
        rset: bool,
        mail: &str,
        rcpts: &[String],
        pipelining: bool,
    ) -> io::Result<Envelope> {
        self.envelope_then(rset, mail, rcpts, pipelining, true)
    }

    /// MAIL and each RCPT as [`Client::envelope`], without DATA: the message
    /// goes by BDAT (RFC 3030), once the recipients' replies are in.
    pub fn envelope_only(
        &mut self,
        rset: bool,
        mail: &str,
        rcpts: &[String],
        pipelining: bool,
    ) -> io::Result<Envelope> {
        self.envelope_then(rset, mail, rcpts, pipelining, false)
    }

    fn envelope_then(
        &mut self,
        rset: bool,
        mail: &str,
        rcpts: &[String],
        pipelining: bool,
        data: bool,
    ) -> io::Result<Envelope> {
        if pipelining {
            let mut out = String::new();
            if rset {
                out.push_str("RSET\r\n");
            }
            out.push_str(mail);
            out.push_str("\r\n");
            for r in rcpts {
                out.push_str(r);
                out.push_str("\r\n");
            }
            if data {
                out.push_str("DATA\r\n");
            }
            self.send(out.as_bytes())?;
            let rset = if rset { Some(self.reply()?) } else { None };
            let mail = self.reply()?;
            let mut replies = Vec::with_capacity(rcpts.len());
            for _ in rcpts {
                replies.push(self.reply()?);
            }
            if !data {
                return Ok(Envelope {
                    rset,
                    mail,
                    rcpts: replies,
                    data: None,
                });
            }
            let data = self.reply()?;
            let accepted = mail.is_positive() && replies.iter().any(Reply::is_positive);
            if data.code == 354 && !accepted {
                // RFC 2920 3.1: a server must not do this, but if it does,
                // send nothing rather than a message with no recipients.
                self.send(b".\r\n")?;
                let _ = self.reply()?;
                return Ok(Envelope {
                    rset,
                    mail,
                    rcpts: replies,
                    data: None,
                });
            }
            return Ok(Envelope {
                rset,
                mail,
                rcpts: replies,
                data: Some(data),
            });
        }
        let rset = if rset { Some(self.command("RSET")?) } else { None };
        let mail = self.command(mail)?;
        if !mail.is_positive() {
            return Ok(Envelope {
                rset,
                mail,
                rcpts: Vec::new(),
                data: None,
            });
        }
        let mut replies = Vec::with_capacity(rcpts.len());
        for r in rcpts {
            replies.push(self.command(r)?);
        }
        let data = if data && replies.iter().any(Reply::is_positive) {
            Some(self.command("DATA")?)
        } else {
            None
        };
        Ok(Envelope {
            rset,
            mail,
            rcpts: replies,
            data,
        })
    }
}

/// The message as sent after DATA: LF or CRLF line ends become CRLF, lines
/// starting with a dot get another (RFC 5321 4.5.2), and the final dot.
pub fn wire_body(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40 + 8);
    let mut rest = message;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (
                rest.get(..i).unwrap_or_default(),
                rest.get(i + 1..).unwrap_or_default(),
            ),
            None => (rest, &[][..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        rest = next;
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A scripted far end for the tests of the SMTP client and of what runs on it.
#[cfg(test)]
pub(crate) mod script {
    use super::{Client, Timed};
    use std::io::{self, Read, Write};
    use std::time::Duration;

    /// Reads come from the script, writes are kept in `output`.
    pub(crate) struct Fake {
        input: io::Cursor<Vec<u8>>,
        pub(crate) output: Vec<u8>,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // One byte at a time, to exercise reassembly.
            let n = buf.len().min(1);
            self.input.read(&mut buf[..n])
        }
    }

    impl Timed for Fake {
        fn set_read_limit(&self, _: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A client whose server answers with `input`, whatever is sent.
    pub(crate) fn client(input: &str) -> Client<Fake> {
        Client::new(Fake {
            input: io::Cursor::new(input.as_bytes().to_vec()),
            output: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::script::client;
    use super::*;

    #[test]
    fn multiline_reply_and_extensions() {
        let mut c = client("250-mx.test hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-AUTH PLAIN login\r\n250 DSN\r\n");
        let r = c.reply().unwrap();
        assert_eq!(r.code, 250);
        let e = Extensions::parse(&r);
        assert!(e.pipelining && e.eightbitmime && e.dsn && !e.starttls && !e.smtputf8);
        assert_eq!(e.size, Some(1000));
        assert_eq!(e.auth, vec!["PLAIN", "LOGIN"]);
        assert!(!e.requiretls);
        let mut c = client("250-mx.test\r\n250-requiretls\r\n250 STARTTLS\r\n");
        let e = Extensions::parse(&c.reply().unwrap());
        assert!(e.requiretls && e.starttls);
    }

    #[test]
    fn bad_replies() {
        for input in ["25\r\n", "abc x\r\n", "250x\r\n", "999 x\r\n", ""] {
            assert!(client(input).reply().is_err(), "{input:?}");
        }
        let long = format!("250 {}\r\n", "x".repeat(MAX_LINE + 10));
        assert!(client(&long).reply().is_err());
        let many = "250-x\r\n".repeat(20_000);
        assert!(client(&many).reply().is_err());
    }

    #[test]
    fn status_from_reply() {
        let r = Reply {
            code: 550,
            lines: vec!["5.1.1 no such user".into()],
        };
        assert_eq!(r.status(), Status(5, 1, 1));
        assert_eq!(r.one_line(), "550 5.1.1 no such user");
        let r = Reply {
            code: 451,
            lines: vec!["5.1.1 mismatched".into()],
        };
        assert_eq!(r.status(), Status(4, 0, 0));
        let r = Reply {
            code: 250,
            lines: vec![],
        };
        assert_eq!(r.one_line(), "250");
    }

    #[test]
    fn pipelined_envelope() {
        let mut c = client("250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n");
        let env = c
            .envelope(
                false,
                "MAIL FROM:<a@b>",
                &["RCPT TO:<x@y>".into(), "RCPT TO:<z@y>".into()],
                true,
            )
            .unwrap();
        assert_eq!(env.rcpts.len(), 2);
        assert_eq!(env.data.map(|d| d.code), Some(354));
        assert_eq!(
            String::from_utf8(c.stream.output).unwrap(),
            "MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nRCPT TO:<z@y>\r\nDATA\r\n"
        );
    }

    #[test]
    fn unpipelined_stops_without_recipients() {
        let mut c = client("250 ok\r\n550 no\r\n");
        let env = c
            .envelope(false, "MAIL FROM:<>", &["RCPT TO:<x@y>".into()], false)
            .unwrap();
        assert!(env.data.is_none());
        assert_eq!(
            String::from_utf8(c.stream.output).unwrap(),
            "MAIL FROM:<>\r\nRCPT TO:<x@y>\r\n"
        );
    }

    #[test]
    fn rset_leads_a_pipelined_group() {
        let mut c = client("250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n");
        let env = c
            .envelope(true, "MAIL FROM:<>", &["RCPT TO:<x@y>".into()], true)
            .unwrap();
        assert_eq!(env.rset.map(|r| r.code), Some(250));
        assert_eq!(env.data.map(|d| d.code), Some(354));
        assert_eq!(
            String::from_utf8(c.stream.output).unwrap(),
            "RSET\r\nMAIL FROM:<>\r\nRCPT TO:<x@y>\r\nDATA\r\n"
        );
        // A server gone meanwhile: an error, nothing to deliver to.
        assert!(client("")
            .envelope(true, "MAIL FROM:<>", &["RCPT TO:<x@y>".into()], true)
            .is_err());
    }

    #[test]
    fn body_on_the_wire() {
        assert_eq!(wire_body(b"a\n.b\n..\nc"), b"a\r\n..b\r\n...\r\nc\r\n.\r\n");
        assert_eq!(wire_body(b"a\r\n.\r\n"), b"a\r\n..\r\n.\r\n");
        assert_eq!(wire_body(b""), b".\r\n");
    }
}
