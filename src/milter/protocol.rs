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

use crate::smtp::status::Status;

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

// What each protocol version defines (milter8.c MILTER8_V*_PROTO_MASK): only
// these events may be sent to a milter speaking that version.
const V2_MASK: u32 =
    SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT | SMFIP_NOBODY | SMFIP_NOHDRS | SMFIP_NOEOH;
const V3_MASK: u32 = V2_MASK | SMFIP_NOUNKNOWN;
const V4_MASK: u32 = V3_MASK | SMFIP_NODATA;
const V6_MASK: u32 = V4_MASK | SMFIP_SKIP | SMFIP_RCPT_REJ | SMFIP_NOREPLY_MASK | SMFIP_HDR_LEADSPC;

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

    fn from_u32(n: u32) -> Option<Stage> {
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

// ---- Negotiation -------------------------------------------------------------

/// tern.conf `milter_protocol`: a version (2, 3, 4 or 6) and optionally
/// `no_header_reply` (Postfix's syntax and meaning, default "6").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolSetting {
    pub version: u32,
    /// The SMFIP_* steps offered to the milter.
    pub offer: u32,
}

impl Default for ProtocolSetting {
    fn default() -> ProtocolSetting {
        ProtocolSetting {
            version: 6,
            offer: V6_MASK,
        }
    }
}

impl ProtocolSetting {
    pub fn parse(s: &str) -> Result<ProtocolSetting, String> {
        let mut version = None;
        let mut offer = 0;
        for word in s.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
            let (v, mask) = match word {
                "2" => (2, V2_MASK),
                "3" => (3, V3_MASK),
                "4" => (4, V4_MASK),
                "6" => (6, V6_MASK),
                "no_header_reply" => {
                    offer |= SMFIP_NR_HDR;
                    continue;
                }
                _ => {
                    return Err(format!(
                        "milter protocol {word:?}: expected 2, 3, 4, 6 or no_header_reply"
                    ))
                }
            };
            if version.replace(v).is_some() {
                return Err(format!("milter protocol {s:?}: more than one version"));
            }
            offer |= mask;
        }
        let version = version.ok_or_else(|| format!("milter protocol {s:?}: no version"))?;
        Ok(ProtocolSetting { version, offer })
    }

    /// The MTA's SMFIC_OPTNEG.
    pub fn optneg(&self) -> OptNeg {
        OptNeg {
            version: self.version,
            actions: MTA_ACTIONS,
            protocol: self.offer,
            symlists: Vec::new(),
        }
    }
}

/// What one milter and tern agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    /// SMFIF_* the milter may use.
    pub actions: u32,
    /// SMFIP_* as the milter answered: events it declines, replies it will not send.
    pub steps: u32,
    /// Events never to send, not even their macros: not defined in the version
    /// either side speaks (Postfix's np_mask).
    pub not_in_protocol: u32,
    /// Macro names the milter asked for, per [`Stage`] index, replacing tern's list.
    pub symlists: [Option<String>; 7],
}

impl Negotiated {
    /// Whether the milter declined the event whose SMFIP_NO* flag is `flag`.
    pub fn declines(&self, flag: u32) -> bool {
        self.steps & flag != 0
    }

    /// Whether header values go both ways with the space after the colon.
    pub fn leading_space(&self) -> bool {
        self.steps & SMFIP_HDR_LEADSPC != 0
    }
}

/// Why a milter's negotiation answer is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationError {
    /// The milter speaks a newer version than we offered, or one older than 2.
    Version { ours: u32, theirs: u32 },
    /// The milter wants actions we did not offer.
    Actions { offered: u32, wanted: u32 },
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiationError::Version { ours, theirs } => {
                write!(
                    f,
                    "protocol version {theirs} conflicts with MTA protocol version {ours}"
                )
            }
            NegotiationError::Actions { offered, wanted } => {
                write!(
                    f,
                    "request mask {wanted:#x} conflicts with MTA request mask {offered:#x}"
                )
            }
        }
    }
}

impl std::error::Error for NegotiationError {}

/// Check the milter's answer against our offer, as milter8_connect() does.
pub fn negotiate(ours: &ProtocolSetting, theirs: &OptNeg) -> Result<Negotiated, NegotiationError> {
    if theirs.version > ours.version || theirs.version < 2 {
        return Err(NegotiationError::Version {
            ours: ours.version,
            theirs: theirs.version,
        });
    }
    if theirs.actions & !MTA_ACTIONS != 0 {
        return Err(NegotiationError::Actions {
            offered: MTA_ACTIONS,
            wanted: theirs.actions,
        });
    }
    let mut not_in_protocol = SMFIP_NOSEND_MASK & !ours.offer;
    // A milter may speak an older version: never send it events that version lacks.
    let theirs_mask = match theirs.version {
        v if v >= 6 => V6_MASK,
        4 | 5 => V4_MASK,
        3 => V3_MASK,
        _ => V2_MASK,
    };
    not_in_protocol |= SMFIP_NOSEND_MASK & !theirs_mask;
    let mut symlists: [Option<String>; 7] = Default::default();
    for (stage, list) in &theirs.symlists {
        // milter8.c ignores an unknown stage number, and so do we.
        if let Some(slot) = Stage::from_u32(*stage).and_then(|s| symlists.get_mut(s as usize)) {
            *slot = Some(String::from_utf8_lossy(list).into_owned());
        }
    }
    Ok(Negotiated {
        version: theirs.version,
        actions: theirs.actions,
        steps: theirs.protocol,
        not_in_protocol,
        symlists,
    })
}

// ---- SMFIR_REPLYCODE ---------------------------------------------------------

/// A milter's own SMTP reply (SMFIR_REPLYCODE), validated: the code, the
/// enhanced status code when the milter gave one, and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyText {
    pub code: u16,
    pub esc: Option<Status>,
    pub lines: Vec<String>,
}

impl ReplyText {
    /// A 4xx reply.
    pub fn is_temporary(&self) -> bool {
        self.code < 500
    }
}

/// Validate and split a SMFIR_REPLYCODE text as milter8_valid_smtp_reply() does:
/// every line `[45]dd` then `-` (more lines follow, CRLF between) or ` ` (the
/// last line), an enhanced code if present of the same class, and the same code on
/// every line (RFC 5321 4.2.1). `%%` becomes `%` and a lone `%` goes (Sendmail
/// treats the text as a format string, so milters double their percent signs).
pub fn parse_reply_text(data: &[u8]) -> Option<ReplyText> {
    let data = data.strip_suffix(b"\0").unwrap_or(data);
    if data.contains(&0) || data.is_empty() {
        return None;
    }
    let mut code = None;
    let mut esc = None;
    let mut lines = Vec::new();
    let mut rest = data;
    loop {
        let end = rest.iter().position(|&b| b == b'\r' || b == b'\n');
        let (line, after) = match end {
            Some(i) => rest.split_at(i),
            None => (rest, &[][..]),
        };
        let last = end.is_none();
        let [c0, c1, c2, sep, text @ ..] = line else {
            return None;
        };
        if !matches!(c0, b'4' | b'5') || !c1.is_ascii_digit() || !c2.is_ascii_digit() {
            return None;
        }
        if *sep != if last { b' ' } else { b'-' } {
            return None;
        }
        let this = u16::from(c0 - b'0') * 100 + u16::from(c1 - b'0') * 10 + u16::from(c2 - b'0');
        if *code.get_or_insert(this) != this {
            return None;
        }
        let text = unpercent(text);
        let (line_esc, text) = split_esc(&text);
        if let Some(e) = line_esc {
            if e.0 != c0 - b'0' {
                return None;
            }
        } else if text.first().is_some_and(|b| b.is_ascii_digit()) && text.first() != Some(c0) {
            // milter8.c: a digit right after the code must be the code's class.
            return None;
        }
        if esc.is_none() && lines.is_empty() {
            esc = line_esc;
        }
        lines.push(String::from_utf8_lossy(text).into_owned());
        if last {
            break;
        }
        // Between lines exactly CRLF.
        rest = after.strip_prefix(b"\r\n")?;
    }
    Some(ReplyText {
        code: code?,
        esc,
        lines,
    })
}

fn unpercent(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut it = text.iter();
    while let Some(&b) = it.next() {
        if b == b'%' {
            if let Some(&n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(b);
        }
    }
    out
}

/// A leading `class.subject.detail ` (RFC 3463) of class 2, 4 or 5, and the text
/// after it (also used by `policy_service`).
pub fn split_esc(text: &[u8]) -> (Option<Status>, &[u8]) {
    let end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    let (word, rest) = text.split_at(end);
    // RFC 3463: one class digit, then one to three digits twice.
    let shape = |w: &str| {
        let mut parts = w.split('.');
        let (c, s, d) = (parts.next(), parts.next(), parts.next());
        parts.next().is_none()
            && c.is_some_and(|c| c.len() == 1)
            && [s, d].iter().all(|p| {
                p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            })
    };
    let parsed = std::str::from_utf8(word)
        .ok()
        .filter(|w| shape(w))
        .and_then(Status::parse);
    match parsed {
        Some(e) if matches!(e.0, 2 | 4 | 5) => (Some(e), rest.strip_prefix(b" ").unwrap_or(rest)),
        _ => (None, text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_command(c: Command) {
        let mut out = Vec::new();
        c.encode(&mut out);
        let p = split_packet(&out).unwrap().unwrap();
        assert_eq!(p.size, out.len());
        assert_eq!(Command::decode(p.cmd, p.data), Ok(c));
    }

    fn roundtrip_response(r: Response) {
        let mut out = Vec::new();
        r.encode(&mut out);
        let p = split_packet(&out).unwrap().unwrap();
        assert_eq!(p.size, out.len());
        assert_eq!(Response::decode(p.cmd, p.data), Ok(r));
    }

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn every_command_round_trips() {
        for c in [
            Command::OptNeg(ProtocolSetting::default().optneg()),
            Command::Macro {
                cmd: SMFIC_CONNECT,
                pairs: vec![(v("j"), v("mx.example.org")), (v("{daemon_name}"), v("tern"))],
            },
            Command::Macro {
                cmd: SMFIC_BODYEOB,
                pairs: vec![],
            },
            Command::Connect {
                hostname: v("client.example.com"),
                family: Family::Inet,
                port: 40000,
                address: v("192.0.2.1"),
            },
            Command::Connect {
                hostname: v("[2001:db8::1]"),
                family: Family::Inet6,
                port: 25,
                address: v("2001:db8::1"),
            },
            Command::Connect {
                hostname: v("localhost"),
                family: Family::Unknown,
                port: 0,
                address: vec![],
            },
            Command::Helo(v("client.example.com")),
            Command::Mail(vec![v("<a@example.com>"), v("SIZE=100"), v("BODY=8BITMIME")]),
            Command::Rcpt(vec![v("<b@example.org>")]),
            Command::Data,
            Command::Header {
                name: v("Subject"),
                value: v(" hi\n\tthere"),
            },
            Command::Eoh,
            Command::Body(b"line\r\n\0binary\xff\r\n".to_vec()),
            Command::BodyEob,
            Command::Abort,
            Command::Quit,
            Command::QuitNc,
            Command::Unknown(v("XYZZY now")),
        ] {
            roundtrip_command(c);
        }
    }

    #[test]
    fn every_response_round_trips() {
        for r in [
            Response::OptNeg(OptNeg {
                version: 6,
                actions: SMFIF_ADDHDRS | SMFIF_CHGBODY,
                protocol: SMFIP_NOCONNECT | SMFIP_HDR_LEADSPC,
                symlists: vec![(Stage::Mail as u32, v("{mail_addr} i")), (5, v("i"))],
            }),
            Response::Accept,
            Response::Continue,
            Response::Reject,
            Response::Tempfail,
            Response::Discard,
            Response::ConnFail,
            Response::Shutdown,
            Response::Progress,
            Response::Skip,
            Response::ReplyCode(v("554 5.7.1 Spam")),
            Response::Quarantine(v("looks odd")),
            Response::AddHeader {
                name: v("X-Spam"),
                value: v("yes"),
            },
            Response::InsHeader {
                index: 0,
                name: v("DKIM-Signature"),
                value: v(" v=1;\n\ta=rsa-sha256"),
            },
            Response::ChgHeader {
                index: 2,
                name: v("Subject"),
                value: vec![],
            },
            Response::ReplBody(b"new\r\nbody\r\n".to_vec()),
            Response::AddRcpt(v("<c@example.net>")),
            Response::AddRcptPar {
                rcpt: v("<c@example.net>"),
                args: Some(v("NOTIFY=NEVER")),
            },
            Response::AddRcptPar {
                rcpt: v("<c@example.net>"),
                args: None,
            },
            Response::DelRcpt(v("<b@example.org>")),
            Response::ChgFrom {
                sender: v("<>"),
                args: None,
            },
            Response::ChgFrom {
                sender: v("<bounce@example.com>"),
                args: Some(v("RET=HDRS")),
            },
            Response::SetSymList {
                stage: 2,
                macros: v("{auth_authen}"),
            },
        ] {
            roundtrip_response(r);
        }
    }

    #[test]
    fn wire_format_is_libmilters() {
        // Length counts the command byte; numbers big-endian; strings NUL-terminated.
        let mut out = Vec::new();
        Command::Helo(v("h")).encode(&mut out);
        assert_eq!(out, b"\0\0\0\x03Hh\0");
        out.clear();
        Command::OptNeg(ProtocolSetting::default().optneg()).encode(&mut out);
        assert_eq!(&out[..5], b"\0\0\0\x0dO");
        assert_eq!(&out[5..9], &6u32.to_be_bytes());
        assert_eq!(&out[9..13], &0x1ffu32.to_be_bytes());
        assert_eq!(&out[13..17], &0x1f_ffffu32.to_be_bytes());
        out.clear();
        Command::Connect {
            hostname: v("h"),
            family: Family::Inet,
            port: 0x1234,
            address: v("1.2.3.4"),
        }
        .encode(&mut out);
        let want = [&b"\0\0\0\x0eCh\0"[..], b"4", &[0x12, 0x34], b"1.2.3.4\0"].concat();
        assert_eq!(out, want);
    }

    #[test]
    fn nul_inside_a_string_cannot_shift_the_fields() {
        let mut out = Vec::new();
        Command::Header {
            name: v("X\0Y"),
            value: v("a\0b"),
        }
        .encode(&mut out);
        let p = split_packet(&out).unwrap().unwrap();
        assert_eq!(
            Command::decode(p.cmd, p.data),
            Ok(Command::Header {
                name: v("XY"),
                value: v("ab"),
            })
        );
    }

    #[test]
    fn framing_refuses_hostile_lengths_and_waits_for_the_rest() {
        assert_eq!(split_packet(b""), Ok(None));
        assert_eq!(split_packet(b"\0\0\0"), Ok(None));
        assert_eq!(split_packet(b"\0\0\0\x02c"), Ok(None));
        assert_eq!(split_packet(b"\0\0\0\0"), Err(ProtocolError::EmptyPacket));
        assert_eq!(
            split_packet(b"\xff\xff\xff\xff"),
            Err(ProtocolError::TooLong(0xffff_ffff))
        );
        assert_eq!(packet_len((MAX_PACKET as u32).to_be_bytes()), Ok(MAX_PACKET));
        assert!(packet_len((MAX_PACKET as u32 + 1).to_be_bytes()).is_err());
        assert_eq!(
            split_packet(b"\0\0\0\x01cextra"),
            Ok(Some(Packet {
                cmd: b'c',
                data: b"",
                size: 5
            }))
        );
    }

    #[test]
    fn hostile_packets_are_errors_not_panics() {
        let short = |c: u8| Err::<Response, _>(ProtocolError::Short(c));
        assert_eq!(Response::decode(b'c', b"x"), Err(ProtocolError::Trailing(b'c')));
        assert_eq!(Response::decode(b'a', b"\0"), Err(ProtocolError::Trailing(b'a')));
        assert_eq!(Response::decode(b'h', b""), short(b'h'));
        assert_eq!(
            Response::decode(b'h', b"name"),
            Err(ProtocolError::Unterminated(b'h'))
        );
        assert_eq!(Response::decode(b'h', b"name\0"), short(b'h'));
        assert_eq!(
            Response::decode(b'h', b"name\0v\0x"),
            Err(ProtocolError::Trailing(b'h'))
        );
        assert_eq!(Response::decode(b'm', b"\0\0\0"), short(b'm'));
        assert_eq!(Response::decode(b'i', b"\0\0\0\x01"), short(b'i'));
        assert_eq!(Response::decode(b'+', b""), short(b'+'));
        assert_eq!(
            Response::decode(b'e', b"<a>\0args\0more"),
            Err(ProtocolError::Trailing(b'e'))
        );
        assert_eq!(Response::decode(b'O', b"\0\0\0\x06"), short(b'O'));
        assert_eq!(
            Response::decode(b'O', b"\0\0\0\x06\0\0\0\0\0\0\0\0\0\0\0\x02{x}"),
            Err(ProtocolError::Unterminated(b'O'))
        );
        assert_eq!(
            Response::decode(b'Z', b""),
            Err(ProtocolError::UnknownCommand(b'Z'))
        );
        assert_eq!(Command::decode(b'C', b"h\0X"), Err(ProtocolError::Short(b'C')));
        assert_eq!(
            Command::decode(b'C', b"h\x004\x01"),
            Err(ProtocolError::Short(b'C'))
        );
        assert_eq!(Command::decode(b'D', b""), Err(ProtocolError::Short(b'D')));
        assert_eq!(Command::decode(b'D', b"Cj\0"), Err(ProtocolError::Short(b'D')));
        // Free-text replies keep everything but one final NUL.
        assert_eq!(
            Response::decode(b'y', b"550 5.7.1 no\0"),
            Ok(Response::ReplyCode(v("550 5.7.1 no")))
        );
        assert_eq!(Response::decode(b'q', b""), Ok(Response::Quarantine(vec![])));
    }

    #[test]
    fn protocol_setting_parses_postfix_values() {
        assert_eq!(ProtocolSetting::parse("6"), Ok(ProtocolSetting::default()));
        let p = ProtocolSetting::parse("2").unwrap();
        assert_eq!((p.version, p.offer), (2, V2_MASK));
        let p = ProtocolSetting::parse("4, no_header_reply").unwrap();
        assert_eq!((p.version, p.offer), (4, V4_MASK | SMFIP_NR_HDR));
        assert_eq!(ProtocolSetting::parse("3").unwrap().offer, V3_MASK);
        for bad in ["", "5", "7", "2 6", "no_header_reply", "six"] {
            assert!(ProtocolSetting::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn negotiation_follows_milter8() {
        let ours = ProtocolSetting::default();
        let answer = |version, actions, protocol| OptNeg {
            version,
            actions,
            protocol,
            symlists: vec![(Stage::Connect as u32, v("j {client_addr}")), (99, v("x"))],
        };
        let n = negotiate(&ours, &answer(6, SMFIF_ADDHDRS, SMFIP_NR_HDR | SMFIP_HDR_LEADSPC)).unwrap();
        assert!(n.leading_space());
        assert!(n.declines(SMFIP_NR_HDR));
        assert_eq!(n.not_in_protocol, 0);
        assert_eq!(n.symlists[0].as_deref(), Some("j {client_addr}"));
        assert!(n.symlists[1..].iter().all(Option::is_none), "stage 99 ignored");
        // Newer than ours, or prehistoric: refused.
        assert!(negotiate(&ours, &answer(7, 0, 0)).is_err());
        assert!(negotiate(&ours, &answer(1, 0, 0)).is_err());
        // Actions we never offered: refused.
        assert_eq!(
            negotiate(&ours, &answer(6, 1 << 9, 0)),
            Err(NegotiationError::Actions {
                offered: MTA_ACTIONS,
                wanted: 1 << 9
            })
        );
        // An older milter never gets DATA or UNKNOWN (version 2) events.
        let n = negotiate(&ours, &answer(2, SMFIF_ADDHDRS, 0)).unwrap();
        assert_eq!(n.not_in_protocol, SMFIP_NODATA | SMFIP_NOUNKNOWN);
        // Nor when we ourselves speak version 2.
        let n = negotiate(&ProtocolSetting::parse("2").unwrap(), &answer(2, 0, 0)).unwrap();
        assert_eq!(n.not_in_protocol, SMFIP_NODATA | SMFIP_NOUNKNOWN);
    }

    #[test]
    fn reply_codes_are_validated_like_postfix() {
        let r = parse_reply_text(b"554 5.7.1 Spam detected\0").unwrap();
        assert_eq!(
            (r.code, r.esc, r.lines.clone()),
            (554, Some(Status(5, 7, 1)), vec!["Spam detected".to_owned()])
        );
        assert!(!r.is_temporary());
        let r = parse_reply_text(b"451 Try later").unwrap();
        assert_eq!((r.code, r.esc), (451, None));
        assert!(r.is_temporary());
        let r = parse_reply_text(b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third").unwrap();
        assert_eq!(r.lines, ["first", "second", "third"]);
        assert_eq!(r.esc, Some(Status(5, 7, 1)));
        // Percent signs: doubled ones become one, a lone one goes.
        assert_eq!(
            parse_reply_text(b"550 Only 100%% sure, 5% off").unwrap().lines,
            ["Only 100% sure, 5 off"]
        );
        for bad in [
            &b""[..],
            b"250 ok",
            b"550",
            b"55 x",
            b"5x0 x",
            b"550-last line must use a space",
            b"550 first\r\n550 second",
            b"550-first\n550 second",
            b"550-first\r\n551 second",
            b"550-first\r\n",
            b"550 4.7.1 class mismatch",
            b"450 5.7.1 class mismatch",
            b"550 4 digit after code must match",
            b"550 nul\0inside",
        ] {
            assert_eq!(parse_reply_text(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        // A word that only looks like an enhanced code stays text.
        let r = parse_reply_text(b"550 5.7 not an esc").unwrap();
        assert_eq!((r.esc, r.lines[0].as_str()), (None, "5.7 not an esc"));
    }
}
