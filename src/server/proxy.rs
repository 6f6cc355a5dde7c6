//! The HAProxy PROXY protocol, versions 1 (text) and 2 (binary), as a load
//! balancer puts it in front of a connection to say who the client really is.
//! See haproxy's doc/proxy-protocol.txt.
//!
//! Parsing is pure; `read_header` reads exactly the header's bytes from any
//! reader and nothing more, so whatever follows (a TLS ClientHello on an
//! smtps port) is left for the session.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Section 2.1: a v1 line is at most 107 bytes including CRLF.
const V1_MAX: usize = 107;
/// Section 2.2: the 12-byte v2 signature.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v2 headers carrying TLVs can be long; nothing tern needs is past this.
const V2_MAX_LEN: usize = 4096;

/// What the proxy said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The client's and the proxy's (destination) addresses.
    Proxied { src: SocketAddr, dst: SocketAddr },
    /// v1 `UNKNOWN`, v2 `LOCAL` or an address family we do not use (UNIX
    /// sockets, UDP): use the connection's own address.
    Local,
}

/// Why a header was refused. The connection is closed for any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Neither the v1 nor the v2 signature.
    NotProxy,
    /// A signature, then something malformed.
    Malformed(&'static str),
    Io(io::ErrorKind),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotProxy => f.write_str("no PROXY header"),
            Error::Malformed(why) => write!(f, "bad PROXY header: {why}"),
            Error::Io(k) => write!(f, "reading PROXY header: {k}"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e.kind())
    }
}

/// Read one v1 or v2 header from `r`, consuming exactly its bytes.
pub fn read_header(r: &mut impl Read) -> Result<Header, Error> {
    // 8 bytes tell the versions apart and are shorter than either header.
    let mut head = [0u8; 16];
    let (first, rest) = head.split_at_mut(8);
    r.read_exact(first)?;
    if first == b"PROXY TC" || first == b"PROXY UN" {
        let mut line = first.to_vec();
        // Byte by byte up to the LF, so nothing after the header is consumed.
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err(Error::Malformed("v1 line too long"));
            }
            r.read_exact(&mut b)?;
            line.extend_from_slice(&b);
        }
        return parse_v1(&line);
    }
    if first != V2_SIG.get(..8).unwrap_or_default() {
        return Err(Error::NotProxy);
    }
    r.read_exact(rest)?;
    let [.., l1, l2] = head;
    let len = usize::from(u16::from_be_bytes([l1, l2]));
    if len > V2_MAX_LEN {
        return Err(Error::Malformed("v2 header too long"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    parse_v2(&head, &body)
}

/// Section 2.1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN...\r\n`.
pub fn parse_v1(line: &[u8]) -> Result<Header, Error> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or(Error::Malformed("v1 line without CRLF"))?;
    let line = std::str::from_utf8(line).map_err(|_| Error::Malformed("v1 line not ASCII"))?;
    let mut f = line.split(' ');
    if f.next() != Some("PROXY") {
        return Err(Error::NotProxy);
    }
    let proto = f.next().ok_or(Error::Malformed("v1 protocol missing"))?;
    if proto == "UNKNOWN" {
        // The rest of the line is to be ignored.
        return Ok(Header::Local);
    }
    let v6 = match proto {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(Error::Malformed("v1 protocol not TCP4, TCP6 or UNKNOWN")),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) =
        (f.next(), f.next(), f.next(), f.next(), f.next())
    else {
        return Err(Error::Malformed(
            "v1 needs exactly four fields after the protocol",
        ));
    };
    let ip = |s: &str| -> Result<IpAddr, Error> {
        let ip = if v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        ip.map_err(|_| Error::Malformed("v1 address does not match the protocol"))
    };
    Ok(Header::Proxied {
        src: SocketAddr::new(ip(src)?, port(sport)?),
        dst: SocketAddr::new(ip(dst)?, port(dport)?),
    })
}

/// A v1 port: decimal 0..=65535 without a sign or leading zeros.
fn port(s: &str) -> Result<u16, Error> {
    let bad = Error::Malformed("v1 bad port");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return Err(bad);
    }
    s.parse().map_err(|_| bad)
}

/// Section 2.2: the 16-byte fixed part and the `len` bytes after it.
pub fn parse_v2(head: &[u8; 16], body: &[u8]) -> Result<Header, Error> {
    if head.get(..12) != Some(V2_SIG.as_slice()) {
        return Err(Error::NotProxy);
    }
    let &[.., ver_cmd, fam, _, _] = head;
    if ver_cmd >> 4 != 2 {
        return Err(Error::Malformed("v2 version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(Error::Malformed("v2 command neither LOCAL nor PROXY")),
    };
    if local {
        // Health checks from the proxy itself: addresses, if any, are ignored.
        return Ok(Header::Local);
    }
    match fam {
        // TCP over IPv4: 4 + 4 + 2 + 2 bytes.
        0x11 => {
            let a: [u8; 12] = body
                .get(..12)
                .and_then(|a| a.try_into().ok())
                .ok_or(Error::Malformed("v2 TCP4 addresses truncated"))?;
            let [s0, s1, s2, s3, d0, d1, d2, d3, sp0, sp1, dp0, dp1] = a;
            Ok(Header::Proxied {
                src: SocketAddr::new(
                    Ipv4Addr::new(s0, s1, s2, s3).into(),
                    u16::from_be_bytes([sp0, sp1]),
                ),
                dst: SocketAddr::new(
                    Ipv4Addr::new(d0, d1, d2, d3).into(),
                    u16::from_be_bytes([dp0, dp1]),
                ),
            })
        }
        // TCP over IPv6: 16 + 16 + 2 + 2 bytes.
        0x21 => {
            let a: [u8; 36] = body
                .get(..36)
                .and_then(|a| a.try_into().ok())
                .ok_or(Error::Malformed("v2 TCP6 addresses truncated"))?;
            let (src, rest) = a.split_at(16);
            let (dst, ports) = rest.split_at(16);
            let ip = |b: &[u8]| -> IpAddr {
                let arr: [u8; 16] = b.try_into().unwrap_or([0; 16]);
                IpAddr::V6(Ipv6Addr::from(arr))
            };
            let &[sp0, sp1, dp0, dp1] = ports else {
                return Err(Error::Malformed("v2 TCP6 ports truncated"));
            };
            Ok(Header::Proxied {
                src: SocketAddr::new(ip(src), u16::from_be_bytes([sp0, sp1])),
                dst: SocketAddr::new(ip(dst), u16::from_be_bytes([dp0, dp1])),
            })
        }
        // UNSPEC, UDP and UNIX sockets: accepted, the real address is used.
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => Ok(Header::Local),
        _ => Err(Error::Malformed("v2 unknown address family")),
    }
}

/// A v2 header for tests and tools: PROXY command, TCP, `src` to `dst`.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIG.to_vec();
    out.push(0x21);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn read(bytes: &[u8]) -> (Result<Header, Error>, Vec<u8>) {
        let mut c = io::Cursor::new(bytes.to_vec());
        let h = read_header(&mut c);
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        (h, rest)
    }

    #[test]
    fn v1_good() {
        let cases: &[(&str, Header)] = &[
            (
                "PROXY TCP4 203.0.113.5 192.0.2.1 56324 25\r\n",
                Header::Proxied {
                    src: sa("203.0.113.5:56324"),
                    dst: sa("192.0.2.1:25"),
                },
            ),
            (
                "PROXY TCP6 2001:db8::5 2001:db8::1 65535 587\r\n",
                Header::Proxied {
                    src: sa("[2001:db8::5]:65535"),
                    dst: sa("[2001:db8::1]:587"),
                },
            ),
            ("PROXY UNKNOWN\r\n", Header::Local),
            (
                "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
                Header::Local,
            ),
        ];
        for (line, want) in cases {
            let (h, rest) = read(format!("{line}EHLO x\r\n").as_bytes());
            assert_eq!(h.as_ref(), Ok(want), "{line:?}");
            // Exactly the header was consumed.
            assert_eq!(rest, b"EHLO x\r\n", "{line:?}");
        }
    }

    #[test]
    fn v1_bad() {
        let cases: &[&str] = &[
            "PROXY TCP4 203.0.113.5 192.0.2.1 56324\r\n",
            "PROXY TCP4 203.0.113.5 192.0.2.1 56324 25 extra\r\n",
            "PROXY TCP4 2001:db8::5 192.0.2.1 1 25\r\n",
            "PROXY TCP6 203.0.113.5 2001:db8::1 1 25\r\n",
            "PROXY TCP4 203.0.113.5 192.0.2.1 65536 25\r\n",
            "PROXY TCP4 203.0.113.5 192.0.2.1 025 25\r\n",
            "PROXY TCP4 203.0.113.5 192.0.2.1 +25 25\r\n",
            "PROXY TCP4  203.0.113.5 192.0.2.1 1 25\r\n",
            "PROXY TCP4 203.0.113.5 192.0.2.1 1 25\n\r\n",
            "PROXY TCP4 999.0.113.5 192.0.2.1 1 25\r\n",
        ];
        for line in cases {
            let (h, _) = read(line.as_bytes());
            assert!(matches!(h, Err(Error::Malformed(_))), "{line:?}: {h:?}");
        }
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(matches!(read(long.as_bytes()).0, Err(Error::Malformed(_))));
        assert_eq!(read(b"EHLO client.test\r\n").0, Err(Error::NotProxy));
        assert_eq!(
            read(b"PROXY TCP4 1.2.3.4").0,
            Err(Error::Io(io::ErrorKind::UnexpectedEof))
        );
        assert_eq!(read(b"PROX").0, Err(Error::Io(io::ErrorKind::UnexpectedEof)));
    }

    #[test]
    fn v2_round_trip() {
        for (src, dst) in [
            ("203.0.113.5:56324", "192.0.2.1:25"),
            ("[2001:db8::5]:1", "[2001:db8::1]:465"),
        ] {
            let mut bytes = encode_v2(sa(src), sa(dst));
            bytes.extend_from_slice(b"\x16\x03\x01");
            let (h, rest) = read(&bytes);
            assert_eq!(
                h,
                Ok(Header::Proxied {
                    src: sa(src),
                    dst: sa(dst)
                })
            );
            assert_eq!(rest, b"\x16\x03\x01");
        }
    }

    #[test]
    fn v2_variants() {
        let base = encode_v2(sa("203.0.113.5:1"), sa("192.0.2.1:25"));
        let with = |i: usize, b: u8| {
            let mut v = base.clone();
            v[i] = b;
            v
        };
        // LOCAL command, and families whose address tern does not use.
        assert_eq!(read(&with(12, 0x20)).0, Ok(Header::Local));
        assert_eq!(read(&with(13, 0x12)).0, Ok(Header::Local));
        assert_eq!(read(&with(13, 0x00)).0, Ok(Header::Local));
        // Wrong version, command, family.
        assert!(matches!(read(&with(12, 0x11)).0, Err(Error::Malformed(_))));
        assert!(matches!(read(&with(12, 0x22)).0, Err(Error::Malformed(_))));
        assert!(matches!(read(&with(13, 0x41)).0, Err(Error::Malformed(_))));
        // A TCP6 family with only TCP4-sized addresses.
        assert!(matches!(read(&with(13, 0x21)).0, Err(Error::Malformed(_))));
        // A damaged signature.
        assert_eq!(read(&with(11, b'X')).0, Err(Error::NotProxy));
        assert_eq!(read(&with(3, b'X')).0, Err(Error::NotProxy));
        // Length beyond what was sent, and beyond the cap.
        assert_eq!(
            read(&with(15, 40)).0,
            Err(Error::Io(io::ErrorKind::UnexpectedEof))
        );
        let mut huge = with(14, 0xff);
        huge[15] = 0xff;
        assert!(matches!(read(&huge).0, Err(Error::Malformed(_))));
        // TLVs after the addresses are skipped, and consumed.
        let mut tlv = base.clone();
        tlv[15] = 12 + 4;
        tlv.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
        tlv.extend_from_slice(b"EHLO");
        let (h, rest) = read(&tlv);
        assert!(matches!(h, Ok(Header::Proxied { .. })));
        assert_eq!(rest, b"EHLO");
    }
}
