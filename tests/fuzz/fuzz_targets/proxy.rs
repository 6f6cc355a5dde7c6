//! The PROXY protocol header reader (server/proxy.rs), v1 and v2, as a stream and
//! as the two parsers; and v2 headers tern encodes read back unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tern::server::proxy::{encode_v2, parse_v1, parse_v2, read_header, Header};

fuzz_target!(|data: &[u8]| {
    let _ = read_header(&mut Cursor::new(data));
    // The v1 signature in front of the input, so that the line parser is reached.
    let mut v1 = b"PROXY ".to_vec();
    v1.extend_from_slice(data);
    let _ = read_header(&mut Cursor::new(&v1));
    let _ = parse_v1(data);
    // The v2 signature in front, the input as the rest of the fixed part and body.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(data);
    let _ = read_header(&mut Cursor::new(&v2));
    if let Some((head, body)) = v2.split_first_chunk::<16>() {
        let _ = parse_v2(head, body);
    }
    // Round trip of addresses built from the input.
    if data.len() >= 36 {
        let a4 = Ipv4Addr::new(data[0], data[1], data[2], data[3]);
        let b4 = Ipv4Addr::new(data[4], data[5], data[6], data[7]);
        let a6 = Ipv6Addr::from(<[u8; 16]>::try_from(&data[8..24]).unwrap());
        let port = u16::from_be_bytes([data[24], data[25]]);
        for (s, d) in [(IpAddr::V4(a4), IpAddr::V4(b4)), (IpAddr::V6(a6), IpAddr::V6(a6))] {
            let (src, dst) = (SocketAddr::new(s, port), SocketAddr::new(d, port ^ 1));
            let got = read_header(&mut Cursor::new(encode_v2(src, dst)));
            assert_eq!(got, Ok(Header::Proxied { src, dst }));
        }
    }
});
