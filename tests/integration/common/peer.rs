//! A scripted SMTP peer on loopback for remote-delivery tests: it answers
//! each recipient by a rule, can refuse EHLO, drop the connection in the
//! middle of DATA, offer STARTTLS (or speak TLS from the start) with an
//! rcgen certificate (self-signed, or from a [`TestCa`]: good, wrong-name,
//! expired), offer REQUIRETLS (RFC 8689) inside TLS, and require AUTH. It
//! records every command line, every message it accepted, and the SNI of
//! each TLS session. [`on_one_port`] starts several on 127.0.0.1,
//! 127.0.0.2, ... with the same port, for MX hosts reached on `mx_port`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A self-signed certificate for `names`, as rustls config and PEM.
pub struct Cert {
    pub config: Arc<ServerConfig>,
    pub pem: String,
}

pub fn self_signed(names: &[&str]) -> Cert {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
    let der = CertificateDer::from(ck.cert.der().to_vec());
    Cert {
        config: server_config(vec![der], &ck.signing_key),
        pem: ck.cert.pem(),
    }
}

fn server_config(chain: Vec<CertificateDer<'static>>, key: &rcgen::KeyPair) -> Arc<ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    Arc::new(config)
}

/// A test CA (rcgen) whose leaves the peers present: trust it with
/// `tls_ca_file` (`pem`).
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "tern peer CA");
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca");
        let pem = issuer.pem();
        TestCa { issuer, pem }
    }

    /// A certificate for `names` signed by this CA; one that expired in
    /// 2002 when `expired`.
    pub fn leaf(&self, names: &[&str], expired: bool) -> Cert {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
        if expired {
            p.not_before = rcgen::date_time_ymd(2001, 1, 1);
            p.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let leaf = p.signed_by(&key, &self.issuer).expect("leaf");
        let der = CertificateDer::from(leaf.der().to_vec());
        Cert {
            config: server_config(vec![der], &key),
            pem: leaf.pem(),
        }
    }
}

/// How the peer behaves.
#[derive(Clone)]
pub struct Script {
    pub greeting: String,
    /// Refuse EHLO with 502 (HELO still works).
    pub refuse_ehlo: bool,
    pub pipelining: bool,
    pub size: Option<u64>,
    pub dsn: bool,
    pub smtputf8: bool,
    /// Reply to RCPT for an address; the default takes everyone.
    pub rcpt: fn(&str) -> String,
    /// Close the connection after reading this many body bytes.
    pub drop_in_data: Option<usize>,
    /// Offer STARTTLS with this config.
    pub starttls: Option<Arc<ServerConfig>>,
    /// TLS from the first byte.
    pub implicit_tls: Option<Arc<ServerConfig>>,
    /// Offer AUTH PLAIN LOGIN and accept only these credentials.
    pub auth: Option<(String, String)>,
    /// Answer 452 to RCPTs past this many in one transaction.
    pub max_rcpts: Option<usize>,
    /// Say 220 to STARTTLS, then send garbage instead of a handshake.
    pub broken_tls: bool,
    /// Offer REQUIRETLS (RFC 8689) in the EHLO reply of TLS sessions.
    pub requiretls: bool,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            greeting: "220 peer.test ESMTP".to_owned(),
            refuse_ehlo: false,
            pipelining: true,
            size: None,
            dsn: false,
            smtputf8: false,
            rcpt: |_| "250 2.1.5 Ok".to_owned(),
            drop_in_data: None,
            starttls: None,
            implicit_tls: None,
            auth: None,
            max_rcpts: None,
            broken_tls: false,
            requiretls: false,
        }
    }
}

/// What the peer saw.
#[derive(Default)]
pub struct Seen {
    /// Every command line, per connection.
    pub sessions: Vec<Vec<String>>,
    /// Accepted messages: (MAIL line, RCPT addresses, body as received).
    pub messages: Vec<(String, Vec<String>, Vec<u8>)>,
    /// Whether each session ended up encrypted.
    pub tls: Vec<bool>,
    /// The SNI of each TLS session, in order.
    pub sni: Vec<Option<String>>,
}

pub struct Peer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    pub connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

/// Peers on 127.0.0.1, 127.0.0.2, ... (one per script, in order) that all
/// listen on the same port, the port returned: MX hosts at those addresses
/// are reached on `mx_port`.
pub fn on_one_port(scripts: Vec<Script>) -> (u16, Vec<Peer>) {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind peer");
        let port = first.local_addr().expect("addr").port();
        let mut listeners = vec![first];
        for i in 1..scripts.len() {
            let ip = IpAddr::from([127, 0, 0, (i + 1) as u8]);
            match TcpListener::bind(SocketAddr::new(ip, port)) {
                Ok(l) => listeners.push(l),
                Err(_) => break,
            }
        }
        if listeners.len() == scripts.len() {
            let peers = listeners
                .into_iter()
                .zip(scripts)
                .map(|(l, s)| Peer::serve(l, s))
                .collect();
            return (port, peers);
        }
    }
    panic!("no port free on every address");
}

impl Peer {
    pub fn start(script: Script) -> Peer {
        Peer::serve(TcpListener::bind("127.0.0.1:0").expect("bind peer"), script)
    }

    fn serve(listener: TcpListener, script: Script) -> Peer {
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (seen, connections, stop) = (Arc::clone(&seen), Arc::clone(&connections), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            connections.fetch_add(1, Ordering::SeqCst);
                            let (script, seen) = (script.clone(), Arc::clone(&seen));
                            std::thread::spawn(move || {
                                let _ = s.set_nonblocking(false);
                                let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
                                let _ = serve(s, &script, &seen);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
        }
        Peer {
            addr,
            seen,
            connections,
            stop,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn messages(&self) -> Vec<(String, Vec<String>, Vec<u8>)> {
        self.seen.lock().unwrap().messages.clone()
    }

    pub fn commands(&self) -> Vec<String> {
        self.seen.lock().unwrap().sessions.concat()
    }

    pub fn tls(&self) -> Vec<bool> {
        self.seen.lock().unwrap().tls.clone()
    }

    pub fn sni(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().sni.clone()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(b),
            Conn::Tls(s) => s.read(b),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(b),
            Conn::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

fn tls_accept(tcp: TcpStream, cfg: &Arc<ServerConfig>, seen: &Mutex<Seen>) -> io::Result<Conn> {
    let mut conn = ServerConnection::new(Arc::clone(cfg)).map_err(io::Error::other)?;
    let mut tcp = tcp;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    seen.lock()
        .unwrap()
        .sni
        .push(conn.server_name().map(str::to_owned));
    Ok(Conn::Tls(Box::new(StreamOwned::new(conn, tcp))))
}

/// Strict base64 (the `base64` crate): a client sending anything else fails AUTH.
fn b64decode(s: &str) -> Vec<u8> {
    use base64::prelude::{Engine as _, BASE64_STANDARD};
    BASE64_STANDARD.decode(s.trim()).unwrap_or_default()
}

fn serve(tcp: TcpStream, script: &Script, seen: &Mutex<Seen>) -> io::Result<()> {
    let idx = {
        let mut s = seen.lock().unwrap();
        s.sessions.push(Vec::new());
        s.tls.push(false);
        s.sessions.len() - 1
    };
    let record = |line: &str| seen.lock().unwrap().sessions[idx].push(line.to_owned());
    let mut conn = match &script.implicit_tls {
        Some(cfg) => {
            seen.lock().unwrap().tls[idx] = true;
            tls_accept(tcp, cfg, seen)?
        }
        None => Conn::Plain(tcp),
    };
    let mut reader = BufReader::new(conn);
    macro_rules! say {
        ($($t:tt)*) => {{
            let text = format!($($t)*);
            reader.get_mut().write_all(format!("{text}\r\n").as_bytes())?;
            reader.get_mut().flush()?;
        }};
    }
    say!("{}", script.greeting);
    if !script.greeting.starts_with("220") {
        return Ok(());
    }
    let mut mail = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut authed = script.auth.is_none();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_owned();
        record(&line);
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            if script.refuse_ehlo {
                say!("502 5.5.2 EHLO not implemented");
                continue;
            }
            let mut ext = vec!["peer.test".to_owned()];
            if script.pipelining {
                ext.push("PIPELINING".into());
            }
            if let Some(n) = script.size {
                ext.push(format!("SIZE {n}"));
            }
            ext.push("8BITMIME".into());
            if script.dsn {
                ext.push("DSN".into());
            }
            if script.smtputf8 {
                ext.push("SMTPUTF8".into());
            }
            let tls_now = matches!(reader.get_ref(), Conn::Tls(_));
            if script.starttls.is_some() && !tls_now {
                ext.push("STARTTLS".into());
            }
            if script.auth.is_some() && tls_now {
                ext.push("AUTH PLAIN LOGIN".into());
            }
            if script.requiretls && tls_now {
                ext.push("REQUIRETLS".into());
            }
            let n = ext.len();
            let mut out = String::new();
            for (i, e) in ext.iter().enumerate() {
                out.push_str(&format!("250{}{e}\r\n", if i + 1 == n { ' ' } else { '-' }));
            }
            reader.get_mut().write_all(out.as_bytes())?;
        } else if upper.starts_with("HELO") {
            say!("250 peer.test");
        } else if upper == "STARTTLS" {
            let Some(cfg) = &script.starttls else {
                say!("502 5.5.1 no");
                continue;
            };
            say!("220 2.0.0 go ahead");
            if script.broken_tls {
                reader.get_mut().write_all(b"this is not TLS\r\n")?;
                return Ok(());
            }
            let Conn::Plain(tcp) = reader.into_inner() else {
                return Ok(());
            };
            conn = tls_accept(tcp, cfg, seen)?;
            seen.lock().unwrap().tls[idx] = true;
            reader = BufReader::new(conn);
        } else if upper.starts_with("AUTH PLAIN") {
            let token = line.split_whitespace().nth(2).unwrap_or_default();
            let want = script.auth.clone().unwrap_or_default();
            let got = b64decode(token);
            if got == format!("\0{}\0{}", want.0, want.1).into_bytes() {
                authed = true;
                say!("235 2.7.0 Authentication successful");
            } else {
                say!("535 5.7.8 Authentication credentials invalid");
            }
        } else if upper.starts_with("MAIL FROM:") {
            if !authed {
                say!("530 5.7.0 Authentication required");
                continue;
            }
            mail = line.clone();
            rcpts.clear();
            say!("250 2.1.0 Ok");
        } else if upper.starts_with("RCPT TO:") {
            let addr = line
                .split('<')
                .nth(1)
                .and_then(|r| r.split('>').next())
                .unwrap_or_default()
                .to_owned();
            let reply = if script.max_rcpts.is_some_and(|n| rcpts.len() >= n) {
                "452 4.5.3 Too many recipients".to_owned()
            } else {
                (script.rcpt)(&addr)
            };
            if reply.starts_with('2') {
                rcpts.push(addr);
            }
            say!("{reply}");
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                say!("554 5.5.1 No valid recipients");
                continue;
            }
            say!("354 End data with <CR><LF>.<CR><LF>");
            let mut body = Vec::new();
            loop {
                let mut l = Vec::new();
                if reader.read_until(b'\n', &mut l)? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                body.extend_from_slice(&l);
                if script.drop_in_data.is_some_and(|n| body.len() >= n) {
                    return Ok(());
                }
            }
            seen.lock()
                .unwrap()
                .messages
                .push((mail.clone(), rcpts.clone(), body));
            say!("250 2.0.0 Ok: queued as PEER{}", idx);
        } else if upper == "RSET" {
            rcpts.clear();
            say!("250 2.0.0 Ok");
        } else if upper == "QUIT" {
            say!("221 2.0.0 Bye");
            return Ok(());
        } else {
            say!("502 5.5.2 Error: command not recognized");
        }
    }
}
