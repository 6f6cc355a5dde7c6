//! Milters as peers: the python test milter (test_milter.py, Debian's
//! python3-milter) that performs any milter action on demand, and a small
//! MTA side of the milter protocol (version 6, as Postfix speaks it) for the
//! smoke tests of every milter peer (OpenDKIM, rspamd, the test milter).
//!
//! ```ignore
//! let Some(m) = TestMilter::start("rcpt(bad@) reject; eom addheader X-Seen yes") else { return };
//! // tern: milters = inet:127.0.0.1:PORT   (m.addr())
//! m.events();   // every callback with its arguments and the macros tern sent
//! ```
//! A message can also carry `X-Test-Milter: eom replacebody new body` to pick
//! what happens to it alone (see test_milter.py for the whole language).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{self, PeerProcess, Service};
use super::skip;

// Commands, MTA to milter.
const C_OPTNEG: u8 = b'O';
const C_MACRO: u8 = b'D';
const C_CONNECT: u8 = b'C';
const C_HELO: u8 = b'H';
const C_MAIL: u8 = b'M';
const C_RCPT: u8 = b'R';
const C_DATA: u8 = b'T';
const C_HEADER: u8 = b'L';
const C_EOH: u8 = b'N';
const C_BODY: u8 = b'B';
const C_EOB: u8 = b'E';
const C_QUIT: u8 = b'Q';

/// Protocol flags (SMFIP_*): steps the milter does not want, or does not answer.
pub mod flags {
    pub const NOCONNECT: u32 = 0x1;
    pub const NOHELO: u32 = 0x2;
    pub const NOMAIL: u32 = 0x4;
    pub const NORCPT: u32 = 0x8;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    pub const HDR_LEADSPC: u32 = 0x100000;
    /// Every step and every no-reply option an MTA can offer (Postfix's set).
    pub const ALL: u32 = 0x1f_ffff;
}

/// Actions the MTA allows (SMFIF_*): all of them.
pub const ALL_ACTIONS: u32 = 0x1ff;

/// The milter's answer to one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Continue,
    Accept,
    Reject,
    Tempfail,
    Discard,
    /// A custom reply: "550 5.7.1 text".
    Code(String),
    Skip,
    /// No reply: the milter asked not to answer this step (or not to see it).
    None,
}

/// A change the milter asks for at the end of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    AddHeader(String, String),
    InsHeader(u32, String, String),
    ChgHeader(u32, String, String),
    ReplBody(Vec<u8>),
    AddRcpt(String),
    AddRcptPar(String, String),
    DelRcpt(String),
    ChgFrom(String, String),
    Quarantine(String),
    Progress,
}

/// The MTA side of one milter conversation.
pub struct MilterClient {
    s: TcpStream,
    pub version: u32,
    pub actions: u32,
    pub protocol: u32,
    /// Actions of the last end of message.
    pub eom_actions: Vec<Action>,
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn split_nul(data: &[u8]) -> Vec<String> {
    data.split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

impl MilterClient {
    /// Connect and negotiate, offering version 6, every action and every
    /// protocol option.
    pub fn connect(addr: SocketAddr) -> Result<MilterClient, String> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut c = MilterClient {
            s,
            version: 0,
            actions: 0,
            protocol: 0,
            eom_actions: Vec::new(),
        };
        let mut data = Vec::new();
        for v in [6u32, ALL_ACTIONS, flags::ALL] {
            data.extend_from_slice(&v.to_be_bytes());
        }
        c.send(C_OPTNEG, &data)?;
        let (cmd, data) = c.read()?;
        if cmd != C_OPTNEG || data.len() < 12 {
            return Err(format!("negotiation answered {:?} {data:?}", cmd as char));
        }
        let word = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        c.version = word(0);
        c.actions = word(4);
        c.protocol = word(8);
        Ok(c)
    }

    fn send(&mut self, cmd: u8, data: &[u8]) -> Result<(), String> {
        let len = u32::try_from(data.len() + 1).map_err(|e| e.to_string())?;
        let mut pkt = len.to_be_bytes().to_vec();
        pkt.push(cmd);
        pkt.extend_from_slice(data);
        self.s.write_all(&pkt).map_err(|e| format!("milter write: {e}"))
    }

    fn read(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut len = [0u8; 4];
        self.s
            .read_exact(&mut len)
            .map_err(|e| format!("milter read: {e}"))?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > 1 << 24 {
            return Err(format!("milter packet of length {len}"));
        }
        let mut buf = vec![0u8; len];
        self.s
            .read_exact(&mut buf)
            .map_err(|e| format!("milter read: {e}"))?;
        Ok((buf[0], buf[1..].to_vec()))
    }

    /// Read packets until a reply; modification actions on the way are kept.
    fn reply(&mut self) -> Result<Reply, String> {
        loop {
            let (cmd, data) = self.read()?;
            let f = split_nul(&data);
            let s = |i: usize| f.get(i).cloned().unwrap_or_default();
            // INSHEADER and CHGHEADER: a 32-bit index, then name and value.
            let indexed = || {
                let idx = data
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                let f = split_nul(data.get(4..).unwrap_or_default());
                (
                    idx,
                    f.first().cloned().unwrap_or_default(),
                    f.get(1).cloned().unwrap_or_default(),
                )
            };
            match cmd {
                b'c' => return Ok(Reply::Continue),
                b'a' => return Ok(Reply::Accept),
                b'r' => return Ok(Reply::Reject),
                b't' => return Ok(Reply::Tempfail),
                b'd' => return Ok(Reply::Discard),
                b's' => return Ok(Reply::Skip),
                b'y' => return Ok(Reply::Code(s(0))),
                b'p' => self.eom_actions.push(Action::Progress),
                b'h' => self.eom_actions.push(Action::AddHeader(s(0), s(1))),
                b'i' => {
                    let (idx, name, value) = indexed();
                    self.eom_actions.push(Action::InsHeader(idx, name, value));
                }
                b'm' => {
                    let (idx, name, value) = indexed();
                    self.eom_actions.push(Action::ChgHeader(idx, name, value));
                }
                b'b' => self.eom_actions.push(Action::ReplBody(data.clone())),
                b'+' => self.eom_actions.push(Action::AddRcpt(s(0))),
                b'2' => self.eom_actions.push(Action::AddRcptPar(s(0), s(1))),
                b'-' => self.eom_actions.push(Action::DelRcpt(s(0))),
                b'e' => self.eom_actions.push(Action::ChgFrom(s(0), s(1))),
                b'q' => self.eom_actions.push(Action::Quarantine(s(0))),
                other => return Err(format!("unknown milter reply {:?}", other as char)),
            }
        }
    }

    /// Send the macros for a step (before the step's command).
    pub fn macros(&mut self, step: u8, macros: &[(&str, &str)]) -> Result<(), String> {
        if macros.is_empty() {
            return Ok(());
        }
        let mut data = vec![step];
        for (k, v) in macros {
            data.extend(cstr(k));
            data.extend(cstr(v));
        }
        self.send(C_MACRO, &data)
    }

    /// One step: skipped when the milter asked not to see it (`no`), not
    /// waited for when it asked not to answer it (`nr`).
    fn step(&mut self, cmd: u8, data: &[u8], no: u32, nr: u32) -> Result<Reply, String> {
        if no != 0 && self.protocol & no != 0 {
            return Ok(Reply::None);
        }
        self.send(cmd, data)?;
        if nr != 0 && self.protocol & nr != 0 {
            return Ok(Reply::None);
        }
        self.reply()
    }

    pub fn connect_step(&mut self, hostname: &str, ip: &str, port: u16) -> Result<Reply, String> {
        self.macros(
            C_CONNECT,
            &[
                ("j", "mx.tern.test"),
                ("{daemon_name}", "tern"),
                ("{client_addr}", ip),
                ("{client_name}", hostname),
            ],
        )?;
        let mut data = cstr(hostname);
        data.push(b'4');
        data.extend_from_slice(&port.to_be_bytes());
        data.extend(cstr(ip));
        self.step(C_CONNECT, &data, flags::NOCONNECT, flags::NR_CONN)
    }

    pub fn helo(&mut self, name: &str) -> Result<Reply, String> {
        self.step(C_HELO, &cstr(name), flags::NOHELO, flags::NR_HELO)
    }

    pub fn mail(&mut self, from: &str) -> Result<Reply, String> {
        self.macros(
            C_MAIL,
            &[("{mail_addr}", from.trim_matches(|c| c == '<' || c == '>'))],
        )?;
        self.step(C_MAIL, &cstr(from), flags::NOMAIL, flags::NR_MAIL)
    }

    pub fn rcpt(&mut self, to: &str) -> Result<Reply, String> {
        self.macros(
            C_RCPT,
            &[("{rcpt_addr}", to.trim_matches(|c| c == '<' || c == '>'))],
        )?;
        self.step(C_RCPT, &cstr(to), flags::NORCPT, flags::NR_RCPT)
    }

    pub fn data(&mut self) -> Result<Reply, String> {
        self.macros(C_DATA, &[("i", "4AbCdEfGhIj")])?;
        self.step(C_DATA, &[], flags::NODATA, flags::NR_DATA)
    }

    /// One header; with HDR_LEADSPC negotiated the value goes with its
    /// leading space, as it was in the message.
    pub fn header(&mut self, name: &str, value: &str) -> Result<Reply, String> {
        let v = if self.protocol & flags::HDR_LEADSPC != 0 {
            format!(" {value}")
        } else {
            value.to_owned()
        };
        let mut data = cstr(name);
        data.extend(cstr(&v));
        self.step(C_HEADER, &data, flags::NOHDRS, flags::NR_HDR)
    }

    pub fn eoh(&mut self) -> Result<Reply, String> {
        self.step(C_EOH, &[], flags::NOEOH, flags::NR_EOH)
    }

    pub fn body(&mut self, chunk: &[u8]) -> Result<Reply, String> {
        self.step(C_BODY, chunk, flags::NOBODY, flags::NR_BODY)
    }

    /// End of message: the final reply; the changes are in `eom_actions`.
    pub fn eom(&mut self) -> Result<Reply, String> {
        self.eom_actions.clear();
        self.send(C_EOB, &[])?;
        self.reply()
    }

    pub fn quit(mut self) {
        let _ = self.send(C_QUIT, &[]);
    }

    /// A whole message through every step: headers as (name, value), a
    /// CRLF body. Returns the first reply that is not Continue/None (or the
    /// end-of-message reply) and the step it came at.
    pub fn message(
        &mut self,
        from: &str,
        rcpts: &[&str],
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(&'static str, Reply), String> {
        let go = |r: Reply| !matches!(r, Reply::Continue | Reply::None);
        let r = self.connect_step("client.test", "127.0.0.1", 40000)?;
        if go(r.clone()) {
            return Ok(("connect", r));
        }
        let r = self.helo("client.test")?;
        if go(r.clone()) {
            return Ok(("helo", r));
        }
        let r = self.mail(&format!("<{from}>"))?;
        if go(r.clone()) {
            return Ok(("mail", r));
        }
        for to in rcpts {
            let r = self.rcpt(&format!("<{to}>"))?;
            if go(r.clone()) {
                return Ok(("rcpt", r));
            }
        }
        let r = self.data()?;
        if go(r.clone()) {
            return Ok(("data", r));
        }
        for (n, v) in headers {
            let r = self.header(n, v)?;
            if go(r.clone()) {
                return Ok(("header", r));
            }
        }
        let r = self.eoh()?;
        if go(r.clone()) {
            return Ok(("eoh", r));
        }
        for chunk in body.as_bytes().chunks(65535) {
            let r = self.body(chunk)?;
            if go(r.clone()) && r != Reply::Skip {
                return Ok(("body", r));
            }
            if r == Reply::Skip {
                break;
            }
        }
        Ok(("eom", self.eom()?))
    }
}

/// The python test milter, running on a loopback port.
/// `addr()`, `conf()` and `process()` come from [`Service`].
pub struct TestMilter {
    service: Service,
    log: PathBuf,
}

impl std::ops::Deref for TestMilter {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

/// One callback the test milter saw.
#[derive(Debug, Clone)]
pub struct Event {
    pub stage: String,
    pub args: Vec<String>,
    pub macros: BTreeMap<String, String>,
}

impl TestMilter {
    /// Start it with `spec` for every connection ("" for none). None when
    /// python3-milter is missing (skip recorded; a failure under CI).
    pub fn start(spec: &str) -> Option<TestMilter> {
        if !skip::have_python_module("Milter") {
            skip::skip(&skip::missing("Milter"));
            return None;
        }
        Some(process::retry_start("test milter", || TestMilter::spawn(spec)))
    }

    fn spawn(spec: &str) -> Result<TestMilter, String> {
        let dir = process::peer_dir("test-milter");
        let log = dir.path().join("events.log");
        let port = process::free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/common/test_milter.py");
        let mut cmd = Command::new(skip::debian_python());
        cmd.arg("-u")
            .arg(&script)
            .arg("--socket")
            .arg(format!("inet:{port}@127.0.0.1"))
            .arg("--log")
            .arg(&log)
            .env("TEST_MILTER_SPEC", spec);
        let mut proc = PeerProcess::spawn("test milter", cmd, dir, vec![])?;
        proc.wait_ready(Duration::from_secs(10), || {
            process::tcp_answers(process::localhost(port))
        })?;
        Ok(TestMilter {
            service: Service { proc, port },
            log,
        })
    }

    /// Every callback so far, in order.
    pub fn events(&self) -> Vec<Event> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter_map(parse_event).collect()
    }

    /// Wait up to `secs` for an event of `stage`.
    pub fn wait_event(&self, secs: u64, stage: &str) -> Option<Event> {
        let mut found = None;
        super::wait_until(secs, || {
            found = self.events().into_iter().find(|e| e.stage == stage);
            found.is_some()
        });
        found
    }
}

/// One line of test_milter.py's log: `STAGE ARG... | NAME=VALUE...`, every
/// token percent-encoded (so a literal `|` token only separates).
fn parse_event(line: &str) -> Option<Event> {
    let mut tokens = line.split(' ');
    let stage = percent_decode(tokens.next()?)?;
    let mut args = Vec::new();
    let mut macros = BTreeMap::new();
    let mut in_macros = false;
    for t in tokens {
        if t == "|" {
            in_macros = true;
        } else if in_macros {
            let (k, v) = t.split_once('=')?;
            macros.insert(percent_decode(k)?, percent_decode(v)?);
        } else {
            args.push(percent_decode(t)?);
        }
    }
    Some(Event { stage, args, macros })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}
