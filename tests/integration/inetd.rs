//! `ternd -i`: one session on stdin/stdout, then exit.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use crate::common::{Setup, TERND};

pub(crate) fn run_inetd(setup: &Setup, input: &[u8], env: &[(&str, &str)]) -> (String, i32) {
    let conf = setup.write_config();
    let mut child = Command::new(TERND)
        .args(["-i", "-d", "-f"])
        .arg(&conf)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let status = child.wait().unwrap();
    (out, status.code().unwrap_or(-1))
}

#[test]
fn one_transaction_over_a_pipe() {
    let setup = Setup::new();
    let input = b"EHLO pipe.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: via inetd\r\n\r\nhello\r\n.\r\nQUIT\r\n";
    let (out, code) = run_inetd(&setup, input, &[]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().copied(), Some("220 mx.test ESMTP tern"));
    assert!(out.contains("\r\n354 "), "{out}");
    assert!(out.contains("250 2.0.0 Ok: queued as "), "{out}");
    assert_eq!(lines.last().copied(), Some("221 2.0.0 Bye"));
    let spool = tern::spool::Spool::open(&setup.path().join("spool")).unwrap();
    let ids = spool.list().unwrap();
    assert_eq!(ids.len(), 1);
    let env = spool.load(&ids[0]).unwrap();
    // No socket on stdin and no TCPREMOTEIP: a local client.
    assert_eq!(env.client_addr, None);
    let body = String::from_utf8(spool.read_message(&env).unwrap()).unwrap();
    assert!(
        body.starts_with("Received: from pipe.test (localhost)\n"),
        "{body}"
    );
    // Started as root (as inetd starts it), the session ran as `user`: the spool
    // it created and the message it queued are the daemon's, not root's.
    if let Some(pw) = crate::common::daemon_account() {
        use std::os::unix::fs::MetadataExt;
        for p in [
            spool.root().to_path_buf(),
            spool.root().join("env").join(ids[0].as_str()),
            spool.message_path(&ids[0]),
        ] {
            assert_eq!(std::fs::metadata(&p).unwrap().uid(), pw.uid, "{}", p.display());
        }
    }
}

#[test]
fn tcpremoteip_names_the_client_and_policy_applies() {
    let setup = Setup::new().set("relay_networks", "192.0.2.0/24");
    let input = b"HELO x\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<b@remote.test>\r\nQUIT\r\n";
    let (out, code) = run_inetd(&setup, input, &[("TCPREMOTEIP", "198.51.100.7")]);
    assert_eq!(code, 0);
    assert!(
        out.contains("554 5.7.1 <b@remote.test>: Relay access denied"),
        "{out}"
    );
    let (out, _) = run_inetd(&setup, input, &[("TCPREMOTEIP", "192.0.2.9")]);
    assert!(out.contains("250 2.1.5"), "{out}");
}

#[test]
fn eof_without_quit_exits_cleanly() {
    let setup = Setup::new();
    let (out, code) = run_inetd(&setup, b"EHLO x\r\nMAIL FROM:<a@example.test>\r\n", &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("220 "));
    let spool = tern::spool::Spool::open(&setup.path().join("spool")).unwrap();
    assert!(spool.list().unwrap().is_empty());
}

#[test]
fn client_address_from_a_socket_on_stdin() {
    // As inetd runs it: stdin and stdout are the accepted TCP connection.
    use std::io::BufRead;
    use std::os::fd::OwnedFd;
    let setup = Setup::new();
    let conf = setup.write_config();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let (server, _) = listener.accept().unwrap();
    let out = OwnedFd::from(server.try_clone().unwrap());
    let mut child = Command::new(TERND)
        .args(["-i", "-d", "-f"])
        .arg(&conf)
        .stdin(Stdio::from(OwnedFd::from(server)))
        .stdout(Stdio::from(out))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    client
        .write_all(b"HELO sock.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: s\r\n\r\nx\r\n.\r\nQUIT\r\n")
        .unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(client).lines() {
        let Ok(line) = line else { break };
        lines.push(line);
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(
        lines.last().map(String::as_str),
        Some("221 2.0.0 Bye"),
        "{lines:?}"
    );
    let spool = tern::spool::Spool::open(&setup.path().join("spool")).unwrap();
    let ids = spool.list().unwrap();
    let env = spool.load(&ids[0]).unwrap();
    assert_eq!(env.client_addr, Some("127.0.0.1".parse().unwrap()));
}

/// stdin and stdout as one stream for a TLS client.
struct Pipe {
    r: std::process::ChildStdout,
    w: std::process::ChildStdin,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.r.read(buf)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.w.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// One reply, read a byte at a time so nothing after it is consumed.
fn reply(r: &mut impl Read) -> String {
    let mut all = String::new();
    loop {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            assert_eq!(r.read(&mut b).unwrap(), 1, "EOF after {all:?}");
            line.push(b[0]);
        }
        let line = String::from_utf8(line).unwrap();
        all.push_str(&line);
        if line.as_bytes().get(3) == Some(&b' ') {
            return all;
        }
    }
}

/// STARTTLS works on stdin/stdout too (ternd -i under inetd).
#[test]
fn starttls_over_a_pipe() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let setup = Setup::new()
        .tls()
        .set("greeting_timeout", "10s")
        .set("command_timeout", "10s");
    let conf = setup.write_config();
    let mut child = Command::new(TERND)
        .args(["-i", "-d", "-f"])
        .arg(&conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut pipe = Pipe {
        r: child.stdout.take().unwrap(),
        w: child.stdin.take().unwrap(),
    };
    assert!(reply(&mut pipe).starts_with("220 "));
    pipe.write_all(b"EHLO pipe.test\r\n").unwrap();
    assert!(reply(&mut pipe).contains("250-STARTTLS\r\n"));
    pipe.write_all(b"STARTTLS\r\n").unwrap();
    assert_eq!(reply(&mut pipe), "220 2.0.0 Ready to start TLS\r\n");

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&setup.ca_pem()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        ServerName::try_from("mx.test").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, pipe);
    tls.write_all(b"EHLO pipe.test\r\n").unwrap();
    let r = reply(&mut tls);
    assert!(r.starts_with("250-mx.test") && !r.contains("STARTTLS"), "{r}");
    tls.write_all(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        .unwrap();
    assert!(reply(&mut tls).starts_with("250 "));
    assert!(reply(&mut tls).starts_with("250 "));
    assert!(reply(&mut tls).starts_with("354 "));
    tls.write_all(b"Subject: tls pipe\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        .unwrap();
    assert!(reply(&mut tls).starts_with("250 2.0.0 Ok: queued as "));
    assert_eq!(reply(&mut tls), "221 2.0.0 Bye\r\n");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let spool = tern::spool::Spool::open(&setup.path().join("spool")).unwrap();
    let ids = spool.list().unwrap();
    let env = spool.load(&ids[0]).unwrap();
    let body = String::from_utf8(spool.read_message(&env).unwrap()).unwrap();
    assert!(body.contains("(using TLSv1.3 with cipher "), "{body}");
    assert!(body.contains(" with ESMTPS id "), "{body}");
}
