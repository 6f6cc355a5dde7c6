//! The Sendmail milter protocol, version 6 as Postfix speaks it (its
//! src/milter/milter8.c; the constants are libmilter's mfdef.h), as pure
//! encoding and decoding of packets: no sockets, no clock.
//!
//! A packet is a 32-bit big-endian length of what follows, one command byte,
//! then the data. Strings are NUL-terminated; numbers are 32-bit big-endian,
//! except the 16-bit port in CONNECT. Everything a milter sends is decoded into
//! a [`Response`] or refused with a [`ProtocolError`]; nothing here panics on
//! what a milter sends (the `milter` fuzz target holds it to that).

use std::fmt;

// ---- Commands, MTA to milter (SMFIC_*) ----------------------------------
pub const SMFIC_ABORT: u8 = b'A';
pub const SMFIC_BODY: u8 = b'B';
pub const SMFIC_CONNECT: u8 = b'C';
pub const SMFIC_MACRO: u8 = b'D';
pub const SMFIC_BODYEOB: u8 = b'E';
pub const SMFIC_HELO: u8 = b'H';
pub const SMFIC_QUIT_NC: u8 = b'K';
pub const SMFIC_HEADER: u8 = b'L';
pub const SMFIC_MAIL: u8 = b'M';
pub const SMFIC_EOH: u8 = b'N';
pub const SMFIC_OPTNEG: u8 = b'O';
pub const SMFIC_QUIT: u8 = b'Q';
pub const SMFIC_RCPT: u8 = b'R';
pub const SMFIC_DATA: u8 = b'T';
pub const SMFIC_UNKNOWN: u8 = b'U';

// ---- Replies and modification requests, milter to MTA (SMFIR_*) ---------
pub const SMFIR_ADDRCPT: u8 = b'+';
pub const SMFIR_DELRCPT: u8 = b'-';
pub const SMFIR_ADDRCPT_PAR: u8 = b'2';
pub const SMFIR_SHUTDOWN: u8 = b'4';
pub const SMFIR_ACCEPT: u8 = b'a';
pub const SMFIR_REPLBODY: u8 = b'b';
pub const SMFIR_CONTINUE: u8 = b'c';
pub const SMFIR_DISCARD: u8 = b'd';
pub const SMFIR_CHGFROM: u8 = b'e';
pub const SMFIR_CONN_FAIL: u8 = b'f';
pub const SMFIR_ADDHEADER: u8 = b'h';
pub const SMFIR_INSHEADER: u8 = b'i';
pub const SMFIR_SETSYMLIST: u8 = b'l';
pub const SMFIR_CHGHEADER: u8 = b'm';
pub const SMFIR_PROGRESS: u8 = b'p';
pub const SMFIR_QUARANTINE: u8 = b'q';
pub const SMFIR_REJECT: u8 = b'r';
pub const SMFIR_SKIP: u8 = b's';
pub const SMFIR_TEMPFAIL: u8 = b't';
pub const SMFIR_REPLYCODE: u8 = b'y';

// ---- Actions a milter may ask for at negotiation (SMFIF_*) ---------------
pub const SMFIF_ADDHDRS: u32 = 1 << 0;
pub const SMFIF_CHGBODY: u32 = 1 << 1;
pub const SMFIF_ADDRCPT: u32 = 1 << 2;
pub const SMFIF_DELRCPT: u32 = 1 << 3;
pub const SMFIF_CHGHDRS: u32 = 1 << 4;
pub const SMFIF_QUARANTINE: u32 = 1 << 5;
pub const SMFIF_CHGFROM: u32 = 1 << 6;
pub const SMFIF_ADDRCPT_PAR: u32 = 1 << 7;
pub const SMFIF_SETSYMLIST: u32 = 1 << 8;
/// Every action tern carries out, which is what it offers (Postfix offers the same).
pub const MTA_ACTIONS: u32 = SMFIF_ADDHDRS
    | SMFIF_CHGBODY
    | SMFIF_ADDRCPT
    | SMFIF_DELRCPT
    | SMFIF_CHGHDRS
    | SMFIF_QUARANTINE
    | SMFIF_CHGFROM
    | SMFIF_ADDRCPT_PAR
    | SMFIF_SETSYMLIST;

// ---- Protocol steps (SMFIP_*): events not to send, replies not to wait for
pub const SMFIP_NOCONNECT: u32 = 1 << 0;
pub const SMFIP_NOHELO: u32 = 1 << 1;
pub const SMFIP_NOMAIL: u32 = 1 << 2;
pub const SMFIP_NORCPT: u32 = 1 << 3;
pub const SMFIP_NOBODY: u32 = 1 << 4;
pub const SMFIP_NOHDRS: u32 = 1 << 5;
pub const SMFIP_NOEOH: u32 = 1 << 6;
/// No reply to each header (Postfix's `no_header_reply`, 8.13's NOHREPL).
pub const SMFIP_NR_HDR: u32 = 1 << 7;
pub const SMFIP_NOUNKNOWN: u32 = 1 << 8;
pub const SMFIP_NODATA: u32 = 1 << 9;
/// The MTA understands SMFIR_SKIP.
pub const SMFIP_SKIP: u32 = 1 << 10;
/// The milter wants rejected recipients too.
pub const SMFIP_RCPT_REJ: u32 = 1 << 11;
pub const SMFIP_NR_CONN: u32 = 1 << 12;
pub const SMFIP_NR_HELO: u32 = 1 << 13;
pub const SMFIP_NR_MAIL: u32 = 1 << 14;
pub const SMFIP_NR_RCPT: u32 = 1 << 15;
pub const SMFIP_NR_DATA: u32 = 1 << 16;
pub const SMFIP_NR_UNKN: u32 = 1 << 17;
pub const SMFIP_NR_EOH: u32 = 1 << 18;
pub const SMFIP_NR_BODY: u32 = 1 << 19;
/// Header values keep the space after the colon, both ways.
pub const SMFIP_HDR_LEADSPC: u32 = 1 << 20;

/// The events a milter may decline.
pub const SMFIP_NOSEND_MASK: u32 = SMFIP_NOCONNECT
    | SMFIP_NOHELO
    | SMFIP_NOMAIL
    | SMFIP_NORCPT
    | SMFIP_NOBODY
    | SMFIP_NOHDRS
    | SMFIP_NOEOH
    | SMFIP_NOUNKNOWN
    | SMFIP_NODATA;
/// The replies a milter may decline to send.
pub const SMFIP_NOREPLY_MASK: u32 = SMFIP_NR_CONN
    | SMFIP_NR_HELO
    | SMFIP_NR_MAIL
    | SMFIP_NR_RCPT
    | SMFIP_NR_DATA
    | SMFIP_NR_UNKN
    | SMFIP_NR_HDR
    | SMFIP_NR_EOH
    | SMFIP_NR_BODY;

/// Body chunks sent in one SMFIC_BODY (mfdef.h MILTER_CHUNK_SIZE).
pub const MILTER_CHUNK_SIZE: usize = 65535;
/// The largest packet (command byte and data) accepted from a milter. libmilter
/// sends at most 65535 data bytes, or 1 MiB - 1 when built for large chunks
/// (SMFIP_MDS_1M); Postfix's INT_MAX/2 would let a broken milter make us allocate
/// a gigabyte.
pub const MAX_PACKET: usize = 1 << 20;

/// The address family in SMFIC_CONNECT (SMFIA_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// 'U': no address (libmilter then ignores port and address).
    Unknown,
    /// 'L': a local socket.
    Unix,
    /// '4'
    Inet,
    /// '6'
    Inet6,
}

impl Family {
    fn byte(self) -> u8 {
        match self {
            Family::Unknown => b'U',
            Family::Unix => b'L',
            Family::Inet => b'4',
            Family::Inet6 => b'6',
        }
    }
}

/// The protocol stages whose macro lists a milter may set at negotiation
/// (SMFIM_*, the index into [`Negotiated::symlists`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect = 0,
    Helo = 1,
    Mail = 2,
    Rcpt = 3,
    Data = 4,
    Eom = 5,
    Eoh = 6,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Eom,
        Stage::Eoh,
    ];

    pub(super) fn from_u32(n: u32) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u32 == n)
    }
}

/// SMFIC_OPTNEG and its answer: version, actions (SMFIF_*), protocol steps
/// (SMFIP_*), and in the milter's answer the macro lists it wants per stage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OptNeg {
    pub version: u32,
    pub actions: u32,
    pub protocol: u32,
    pub symlists: Vec<(u32, Vec<u8>)>,
}

/// A packet from the MTA to a milter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    OptNeg(OptNeg),
    /// Macros for the event `cmd` (an SMFIC_* byte) that follows.
    Macro {
        cmd: u8,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    Connect {
        hostname: Vec<u8>,
        family: Family,
        port: u16,
        address: Vec<u8>,
    },
    Helo(Vec<u8>),
    /// `<sender>` then the ESMTP parameters, one string each.
    Mail(Vec<Vec<u8>>),
    /// `<recipient>` then the ESMTP parameters.
    Rcpt(Vec<Vec<u8>>),
    Data,
    Header {
        name: Vec<u8>,
        value: Vec<u8>,
    },
    Eoh,
    Body(Vec<u8>),
    BodyEob,
    Abort,
    Quit,
    QuitNc,
    Unknown(Vec<u8>),
}

/// A packet from a milter to the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    OptNeg(OptNeg),
    Accept,
    Continue,
    Reject,
    Tempfail,
    Discard,
    ConnFail,
    Shutdown,
    Progress,
    Skip,
    /// An SMTP reply, possibly multi-line (`550-...\r\n550 ...`), NUL stripped.
    ReplyCode(Vec<u8>),
    /// Put the message on hold, with a reason.
    Quarantine(Vec<u8>),
    AddHeader {
        name: Vec<u8>,
        value: Vec<u8>,
    },
    /// Insert at `index` (0 = before the first header).
    InsHeader {
        index: u32,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    /// Change the `index`th header called `name` (1 = first); empty value deletes.
    ChgHeader {
        index: u32,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    /// A chunk of the replacement body, CRLF line ends.
    ReplBody(Vec<u8>),
    AddRcpt(Vec<u8>),
    AddRcptPar {
        rcpt: Vec<u8>,
        args: Option<Vec<u8>>,
    },
    DelRcpt(Vec<u8>),
    ChgFrom {
        sender: Vec<u8>,
        args: Option<Vec<u8>>,
    },
    SetSymList {
        stage: u32,
        macros: Vec<u8>,
    },
}

/// Why bytes from a milter are not a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A length of zero: there must be at least the command byte.
    EmptyPacket,
    /// More than [`MAX_PACKET`].
    TooLong(usize),
    /// The data ended inside a field.
    Short(u8),
    /// A string without its NUL.
    Unterminated(u8),
    /// Bytes left over after the last field.
    Trailing(u8),
    /// A command byte this side does not know.
    UnknownCommand(u8),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |b: &u8| char::from(*b).escape_default().to_string();
        match self {
            ProtocolError::EmptyPacket => write!(f, "packet of length 0"),
            ProtocolError::TooLong(n) => write!(f, "packet of {n} bytes (limit {MAX_PACKET})"),
            ProtocolError::Short(b) => write!(f, "'{}' packet too short", c(b)),
            ProtocolError::Unterminated(b) => write!(f, "'{}' packet: string without NUL", c(b)),
            ProtocolError::Trailing(b) => write!(f, "'{}' packet: data left over", c(b)),
            ProtocolError::UnknownCommand(b) => write!(f, "unknown command '{}'", c(b)),
        }
    }
}

impl std::error::Error for ProtocolError {}

// ---- Framing -------------------------------------------------------------

/// The length a packet header announces, checked: 1..=[`MAX_PACKET`].
pub fn packet_len(header: [u8; 4]) -> Result<usize, ProtocolError> {
    let n = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
    match n {
        0 => Err(ProtocolError::EmptyPacket),
        n if n > MAX_PACKET => Err(ProtocolError::TooLong(n)),
        n => Ok(n),
    }
}

/// One whole packet at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub cmd: u8,
    pub data: &'a [u8],
    /// Bytes it took, length field included.
    pub size: usize,
}

/// One packet from the front of `buf`; `Ok(None)` when `buf` does not yet hold
/// all of it.
pub fn split_packet(buf: &[u8]) -> Result<Option<Packet<'_>>, ProtocolError> {
    let Some((header, rest)) = buf.split_first_chunk::<4>() else {
        return Ok(None);
    };
    let len = packet_len(*header)?;
    let Some(body) = rest.get(..len) else {
        return Ok(None);
    };
    let Some((&cmd, data)) = body.split_first() else {
        return Err(ProtocolError::EmptyPacket);
    };
    Ok(Some(Packet {
        cmd,
        data,
        size: 4 + len,
    }))
}

/// Frame `cmd` and `data` (the packet length is written first).
fn frame(out: &mut Vec<u8>, cmd: u8, data: &[u8]) {
    // Every caller's data is bounded far below 4 GiB (chunks, headers of a message
    // under max_message_size); saturating keeps this total even so.
    let len = u32::try_from(data.len().saturating_add(1)).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(cmd);
    out.extend_from_slice(data);
}

/// A C string: the bytes without any NUL (which would end it early and shift every
/// field after it), then the NUL.
fn put_cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend(s.iter().copied().filter(|&b| b != 0));
    out.push(0);
}

fn put_optneg(out: &mut Vec<u8>, o: &OptNeg) {
    out.extend_from_slice(&o.version.to_be_bytes());
    out.extend_from_slice(&o.actions.to_be_bytes());
    out.extend_from_slice(&o.protocol.to_be_bytes());
    for (stage, list) in &o.symlists {
        out.extend_from_slice(&stage.to_be_bytes());
        put_cstr(out, list);
    }
}

impl Command {
    /// The SMFIC_* byte.
    pub fn code(&self) -> u8 {
        match self {
            Command::OptNeg(_) => SMFIC_OPTNEG,
            Command::Macro { .. } => SMFIC_MACRO,
            Command::Connect { .. } => SMFIC_CONNECT,
            Command::Helo(_) => SMFIC_HELO,
            Command::Mail(_) => SMFIC_MAIL,
            Command::Rcpt(_) => SMFIC_RCPT,
            Command::Data => SMFIC_DATA,
            Command::Header { .. } => SMFIC_HEADER,
            Command::Eoh => SMFIC_EOH,
            Command::Body(_) => SMFIC_BODY,
            Command::BodyEob => SMFIC_BODYEOB,
            Command::Abort => SMFIC_ABORT,
            Command::Quit => SMFIC_QUIT,
            Command::QuitNc => SMFIC_QUIT_NC,
            Command::Unknown(_) => SMFIC_UNKNOWN,
        }
    }

    /// Append the packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut d = Vec::new();
        match self {
            Command::OptNeg(o) => put_optneg(&mut d, o),
            Command::Macro { cmd, pairs } => {
                d.push(*cmd);
                for (name, value) in pairs {
                    put_cstr(&mut d, name);
                    put_cstr(&mut d, value);
                }
            }
            Command::Connect {
                hostname,
                family,
                port,
                address,
            } => {
                put_cstr(&mut d, hostname);
                d.push(family.byte());
                // libmilter reads port and address only for a known family.
                if *family != Family::Unknown {
                    d.extend_from_slice(&port.to_be_bytes());
                    put_cstr(&mut d, address);
                }
            }
            Command::Helo(s) | Command::Unknown(s) => put_cstr(&mut d, s),
            Command::Mail(args) | Command::Rcpt(args) => {
                for a in args {
                    put_cstr(&mut d, a);
                }
            }
            Command::Header { name, value } => {
                put_cstr(&mut d, name);
                put_cstr(&mut d, value);
            }
            Command::Body(b) => d.extend_from_slice(b),
            Command::Data
            | Command::Eoh
            | Command::BodyEob
            | Command::Abort
            | Command::Quit
            | Command::QuitNc => {}
        }
        frame(out, self.code(), &d);
    }

    /// Decode one command packet (what a milter reads; used by tests and the
    /// fuzz target to check that encoding round-trips).
    pub fn decode(cmd: u8, data: &[u8]) -> Result<Command, ProtocolError> {
        let mut r = Fields { data, cmd };
        let c = match cmd {
            SMFIC_OPTNEG => Command::OptNeg(r.optneg()?),
            SMFIC_MACRO => {
                let stage = r.u8()?;
                let mut pairs = Vec::new();
                while !r.data.is_empty() {
                    let name = r.cstr()?;
                    let value = r.cstr()?;
                    pairs.push((name, value));
                }
                Command::Macro { cmd: stage, pairs }
            }
            SMFIC_CONNECT => {
                let hostname = r.cstr()?;
                let family = match r.u8()? {
                    b'U' => Family::Unknown,
                    b'L' => Family::Unix,
                    b'4' => Family::Inet,
                    b'6' => Family::Inet6,
                    _ => return Err(ProtocolError::Short(cmd)),
                };
                let (port, address) = if family == Family::Unknown {
                    (0, Vec::new())
                } else {
                    (r.u16()?, r.cstr()?)
                };
                Command::Connect {
                    hostname,
                    family,
                    port,
                    address,
                }
            }
            SMFIC_HELO => Command::Helo(r.cstr()?),
            SMFIC_UNKNOWN => Command::Unknown(r.cstr()?),
            SMFIC_MAIL | SMFIC_RCPT => {
                let mut args = Vec::new();
                while !r.data.is_empty() {
                    args.push(r.cstr()?);
                }
                if cmd == SMFIC_MAIL {
                    Command::Mail(args)
                } else {
                    Command::Rcpt(args)
                }
            }
            SMFIC_HEADER => Command::Header {
                name: r.cstr()?,
                value: r.cstr()?,
            },
            SMFIC_BODY => Command::Body(r.rest()),
            SMFIC_DATA => Command::Data,
            SMFIC_EOH => Command::Eoh,
            SMFIC_BODYEOB => Command::BodyEob,
            SMFIC_ABORT => Command::Abort,
            SMFIC_QUIT => Command::Quit,
            SMFIC_QUIT_NC => Command::QuitNc,
            other => return Err(ProtocolError::UnknownCommand(other)),
        };
        r.end()?;
        Ok(c)
    }
}

impl Response {
    /// The SMFIR_* byte (SMFIC_OPTNEG for the negotiation answer).
    pub fn code(&self) -> u8 {
        match self {
            Response::OptNeg(_) => SMFIC_OPTNEG,
            Response::Accept => SMFIR_ACCEPT,
            Response::Continue => SMFIR_CONTINUE,
            Response::Reject => SMFIR_REJECT,
            Response::Tempfail => SMFIR_TEMPFAIL,
            Response::Discard => SMFIR_DISCARD,
            Response::ConnFail => SMFIR_CONN_FAIL,
            Response::Shutdown => SMFIR_SHUTDOWN,
            Response::Progress => SMFIR_PROGRESS,
            Response::Skip => SMFIR_SKIP,
            Response::ReplyCode(_) => SMFIR_REPLYCODE,
            Response::Quarantine(_) => SMFIR_QUARANTINE,
            Response::AddHeader { .. } => SMFIR_ADDHEADER,
            Response::InsHeader { .. } => SMFIR_INSHEADER,
            Response::ChgHeader { .. } => SMFIR_CHGHEADER,
            Response::ReplBody(_) => SMFIR_REPLBODY,
            Response::AddRcpt(_) => SMFIR_ADDRCPT,
            Response::AddRcptPar { .. } => SMFIR_ADDRCPT_PAR,
            Response::DelRcpt(_) => SMFIR_DELRCPT,
            Response::ChgFrom { .. } => SMFIR_CHGFROM,
            Response::SetSymList { .. } => SMFIR_SETSYMLIST,
        }
    }

    /// Append the packet to `out` (what a milter sends; for tests and test milters).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut d = Vec::new();
        match self {
            Response::OptNeg(o) => put_optneg(&mut d, o),
            Response::ReplyCode(s) | Response::Quarantine(s) => put_cstr(&mut d, s),
            Response::AddHeader { name, value } => {
                put_cstr(&mut d, name);
                put_cstr(&mut d, value);
            }
            Response::InsHeader { index, name, value } | Response::ChgHeader { index, name, value } => {
                d.extend_from_slice(&index.to_be_bytes());
                put_cstr(&mut d, name);
                put_cstr(&mut d, value);
            }
            Response::ReplBody(b) => d.extend_from_slice(b),
            Response::AddRcpt(s) | Response::DelRcpt(s) => put_cstr(&mut d, s),
            Response::AddRcptPar { rcpt: a, args } | Response::ChgFrom { sender: a, args } => {
                put_cstr(&mut d, a);
                if let Some(args) = args {
                    put_cstr(&mut d, args);
                }
            }
            Response::SetSymList { stage, macros } => {
                d.extend_from_slice(&stage.to_be_bytes());
                put_cstr(&mut d, macros);
            }
            Response::Accept
            | Response::Continue
            | Response::Reject
            | Response::Tempfail
            | Response::Discard
            | Response::ConnFail
            | Response::Shutdown
            | Response::Progress
            | Response::Skip => {}
        }
        frame(out, self.code(), &d);
    }

    /// Decode one packet from a milter. The shapes are milter8.c's reads: for
    /// example a reply without data must have none, a header change is a number
    /// and two strings, and nothing may follow the last field.
    pub fn decode(cmd: u8, data: &[u8]) -> Result<Response, ProtocolError> {
        let mut r = Fields { data, cmd };
        let resp = match cmd {
            SMFIC_OPTNEG => {
                let o = r.optneg()?;
                return Ok(Response::OptNeg(o));
            }
            SMFIR_ACCEPT => Response::Accept,
            SMFIR_CONTINUE => Response::Continue,
            SMFIR_REJECT => Response::Reject,
            SMFIR_TEMPFAIL => Response::Tempfail,
            SMFIR_DISCARD => Response::Discard,
            SMFIR_CONN_FAIL => Response::ConnFail,
            SMFIR_SHUTDOWN => Response::Shutdown,
            SMFIR_PROGRESS => Response::Progress,
            SMFIR_SKIP => Response::Skip,
            // Free text, one NUL at the end (milter8.c reads the whole buffer and
            // leaves out one final NUL).
            SMFIR_REPLYCODE => Response::ReplyCode(strip_nul(r.rest())),
            SMFIR_QUARANTINE => Response::Quarantine(strip_nul(r.rest())),
            SMFIR_ADDHEADER => Response::AddHeader {
                name: r.cstr()?,
                value: r.cstr()?,
            },
            SMFIR_INSHEADER => Response::InsHeader {
                index: r.u32()?,
                name: r.cstr()?,
                value: r.cstr()?,
            },
            SMFIR_CHGHEADER => Response::ChgHeader {
                index: r.u32()?,
                name: r.cstr()?,
                value: r.cstr()?,
            },
            SMFIR_REPLBODY => Response::ReplBody(r.rest()),
            SMFIR_ADDRCPT => Response::AddRcpt(r.cstr()?),
            SMFIR_DELRCPT => Response::DelRcpt(r.cstr()?),
            SMFIR_ADDRCPT_PAR => {
                let rcpt = r.cstr()?;
                let args = r.opt_cstr()?;
                Response::AddRcptPar { rcpt, args }
            }
            SMFIR_CHGFROM => {
                let sender = r.cstr()?;
                let args = r.opt_cstr()?;
                Response::ChgFrom { sender, args }
            }
            SMFIR_SETSYMLIST => Response::SetSymList {
                stage: r.u32()?,
                macros: r.cstr()?,
            },
            other => return Err(ProtocolError::UnknownCommand(other)),
        };
        r.end()?;
        Ok(resp)
    }
}

fn strip_nul(mut v: Vec<u8>) -> Vec<u8> {
    if v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// A cursor over a packet's data.
struct Fields<'a> {
    data: &'a [u8],
    cmd: u8,
}

impl Fields<'_> {
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        let (&b, rest) = self.data.split_first().ok_or(ProtocolError::Short(self.cmd))?;
        self.data = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, ProtocolError> {
        let (n, rest) = self
            .data
            .split_first_chunk::<2>()
            .ok_or(ProtocolError::Short(self.cmd))?;
        self.data = rest;
        Ok(u16::from_be_bytes(*n))
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let (n, rest) = self
            .data
            .split_first_chunk::<4>()
            .ok_or(ProtocolError::Short(self.cmd))?;
        self.data = rest;
        Ok(u32::from_be_bytes(*n))
    }

    fn cstr(&mut self) -> Result<Vec<u8>, ProtocolError> {
        if self.data.is_empty() {
            return Err(ProtocolError::Short(self.cmd));
        }
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::Unterminated(self.cmd))?;
        let (s, rest) = self.data.split_at(end);
        self.data = rest.get(1..).unwrap_or_default();
        Ok(s.to_vec())
    }

    /// A string only if any data is left (CHGFROM's and ADDRCPT_PAR's arguments).
    fn opt_cstr(&mut self) -> Result<Option<Vec<u8>>, ProtocolError> {
        if self.data.is_empty() {
            Ok(None)
        } else {
            self.cstr().map(Some)
        }
    }

    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.data).to_vec()
    }

    fn optneg(&mut self) -> Result<OptNeg, ProtocolError> {
        let mut o = OptNeg {
            version: self.u32()?,
            actions: self.u32()?,
            protocol: self.u32()?,
            symlists: Vec::new(),
        };
        while !self.data.is_empty() {
            let stage = self.u32()?;
            let list = self.cstr()?;
            o.symlists.push((stage, list));
        }
        Ok(o)
    }

    fn end(&self) -> Result<(), ProtocolError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Trailing(self.cmd))
        }
    }
}

#[cfg(test)]
mod tests;
