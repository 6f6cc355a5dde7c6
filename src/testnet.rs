//! Loopback sockets for the unit tests' stub servers (test builds only).

use std::net::{SocketAddr, TcpListener, UdpSocket};

/// A UDP socket and a TCP listener on one free port of 127.0.0.1, for a stub
/// DNS server: other tests, ours and other programs', hold TCP ports on
/// loopback, so a free UDP port's TCP twin may be taken; a hundred tries.
pub(crate) fn udp_tcp_pair() -> (UdpSocket, TcpListener, SocketAddr) {
    (0..100)
        .find_map(|_| {
            let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
            let addr = udp.local_addr().ok()?;
            let tcp = TcpListener::bind(addr).ok()?;
            Some((udp, tcp, addr))
        })
        .expect("a free UDP and TCP port pair on 127.0.0.1")
}
