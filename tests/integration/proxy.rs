//! PROXY protocol v1 and v2 (issue 5): a trusted proxy's header sets the
//! client address used for relay decisions, Received: and logs; untrusted
//! proxies and bad or missing headers get the connection closed, unanswered.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

use tern::server::proxy::encode_v2;

use crate::common::{message, Client, Setup, Tern, TlsClient};

fn behind_proxy() -> Setup {
    Setup::new()
        .set("proxy_protocol", "smtp smtps")
        .set("proxy_from", "127.0.0.1")
        .set("relay_networks", "10.0.0.0/8")
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Connect and send `header` before anything else.
fn connect_with(t: &Tern, header: &[u8]) -> Client {
    let mut c = t.connect();
    c.send_raw(header);
    c
}

/// Closed without a greeting, or anything else.
fn refused(mut c: Client) {
    let rest = c.read_to_close().expect("connection closed");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[test]
fn v1_header_sets_the_client() {
    let t = behind_proxy().start();
    let mut c = connect_with(&t, b"PROXY TCP4 203.0.113.5 127.0.0.1 40000 25\r\n");
    c.hello();
    c.cmd("MAIL FROM:<x@remote.test>");
    // 127.0.0.1 would be trusted for nothing here, but 203.0.113.5 is the client.
    assert_eq!(c.cmd("RCPT TO:<someone@remote.test>").status(), "554 5.7.1");
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").status(), "250 2.1.5");
    c.cmd("DATA");
    c.send_raw(message("proxied").as_bytes());
    c.send_raw(b".\r\n");
    let r = c.reply();
    let (env, body) = t.message(&r.queue_id());
    assert_eq!(env.client_addr, Some("203.0.113.5".parse().unwrap()));
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.starts_with("Received: from client.test (unknown [203.0.113.5])"),
        "{body}"
    );
    assert!(t.wait_log("proxy unknown[127.0.0.1]: client unknown[203.0.113.5]"));
    assert!(t.wait_log("reject: RCPT from unknown[203.0.113.5]: 554 5.7.1"));
}

#[test]
fn v1_unknown_keeps_the_proxy_address() {
    let t = behind_proxy().start();
    let mut c = connect_with(&t, b"PROXY UNKNOWN\r\n");
    c.hello();
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
}

#[test]
fn v2_header_sets_the_client_v4_and_v6() {
    let t = behind_proxy().start();
    // A client inside relay_networks, as the proxy reports it.
    let mut c = connect_with(&t, &encode_v2(sa("10.1.2.3:5555"), sa("127.0.0.1:25")));
    c.hello();
    c.cmd("MAIL FROM:<x@remote.test>");
    assert_eq!(c.cmd("RCPT TO:<someone@remote.test>").status(), "250 2.1.5");
    assert!(t.wait_log("client unknown[10.1.2.3]"));
    let mut c = connect_with(&t, &encode_v2(sa("[2001:db8::7]:5555"), sa("[2001:db8::1]:25")));
    c.hello();
    c.cmd("MAIL FROM:<x@remote.test>");
    assert_eq!(c.cmd("RCPT TO:<someone@remote.test>").status(), "554 5.7.1");
    assert!(t.wait_log("client unknown[2001:db8::7]"));
}

#[test]
fn v2_before_implicit_tls() {
    let t = behind_proxy().submission().start();
    let mut stream = TcpStream::connect(t.smtps_addr()).unwrap();
    // Header and ClientHello may arrive together: the header is read exactly.
    stream
        .write_all(&encode_v2(sa("198.51.100.9:1234"), sa("127.0.0.1:465")))
        .unwrap();
    let mut s = TlsClient::handshake(stream, &t.setup.ca_pem());
    assert_eq!(s.reply().code, 220);
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    assert!(t.wait_log("TLS established from unknown[198.51.100.9] on smtps"));
}

#[test]
fn untrusted_proxy_is_closed() {
    let t = behind_proxy().set("proxy_from", "192.0.2.10").start();
    refused(connect_with(&t, b"PROXY TCP4 203.0.113.5 127.0.0.1 40000 25\r\n"));
    assert!(t.wait_log("proxy: refused connection from unknown[127.0.0.1]: not in proxy_from"));
}

#[test]
fn bad_or_missing_headers_are_closed() {
    let t = behind_proxy().start();
    for bad in [
        &b"PROXY TCP4 203.0.113.5 127.0.0.1 40000\r\n"[..],
        b"PROXY TCP6 203.0.113.5 127.0.0.1 1 25\r\n",
        b"PROXY TCP4 203.0.113.5 127.0.0.1 99999 25\r\n",
        b"EHLO client.test\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ] {
        refused(connect_with(&t, bad));
    }
    let mut v2 = encode_v2(sa("203.0.113.5:1"), sa("127.0.0.1:25"));
    v2[12] = 0x31; // version 3
    refused(connect_with(&t, &v2));
    let mut v2 = encode_v2(sa("203.0.113.5:1"), sa("127.0.0.1:25"));
    v2[13] = 0x21; // claims TCP6 with TCP4-sized addresses
    refused(connect_with(&t, &v2));
    assert!(t.wait_log("proxy: refused connection from unknown[127.0.0.1]: no PROXY header"));
    assert!(t.wait_log("bad PROXY header"));
    // The daemon is fine.
    let mut c = connect_with(&t, b"PROXY UNKNOWN\r\n");
    c.hello();
}

#[test]
fn header_on_a_plain_listener_is_just_a_bad_command() {
    let t = Setup::new().set("proxy_from", "127.0.0.1").start();
    let mut c = t.connect();
    c.reply();
    // Spoofing the client address where no proxy is configured does nothing.
    assert_eq!(c.cmd("PROXY TCP4 10.1.2.3 127.0.0.1 1 25").status(), "500 5.5.2");
}

/// The per-address limit applies to the clients a proxy names, not to the
/// proxy, which carries them all.
#[test]
fn per_ip_limit_counts_proxied_clients() {
    let t = behind_proxy().set("max_sessions_per_ip", "1").start();
    let mut a = connect_with(&t, b"PROXY TCP4 203.0.113.1 127.0.0.1 1000 25\r\n");
    assert_eq!(a.reply().code, 220);
    let mut b = connect_with(&t, b"PROXY TCP4 203.0.113.2 127.0.0.1 1001 25\r\n");
    assert_eq!(b.reply().code, 220);
    let mut c = connect_with(&t, b"PROXY TCP4 203.0.113.1 127.0.0.1 1002 25\r\n");
    assert_eq!(c.reply().status(), "421 4.7.0");
    assert_eq!(a.cmd("NOOP").code, 250);
    assert_eq!(b.cmd("NOOP").code, 250);
    assert!(t.wait_log("reject: connect from unknown[203.0.113.1]: 421 4.7.0"));
}
