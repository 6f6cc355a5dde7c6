//! A real HTTPS server for MTA-STS tests: Debian's nginx, run privately
//! (`nginx -p DIR -c DIR/nginx.conf`, one process, no daemon) on a free
//! loopback port, with a certificate for the chosen names from a fresh test
//! CA (rcgen). One `server` block per host name, so each name has its own
//! files and special paths.
//!
//! ```ignore
//! let Some(web) = Https::builder()
//!     .file("mta-sts.example.test", "/.well-known/mta-sts.txt", POLICY)
//!     .redirect("mta-sts.moved.test", "/.well-known/mta-sts.txt", "https://elsewhere.test/")
//!     .slow("mta-sts.slow.test", "/.well-known/mta-sts.txt", POLICY, 10)  // 10 bytes/s
//!     .sized("mta-sts.big.test", "/.well-known/mta-sts.txt", 100_000)     // oversized
//!     .start()
//! else { return };
//! web.port();      // 127.0.0.1:port serves every name (SNI and Host pick the block)
//! web.ca_file();   // PEM of the CA that signed the certificate: tls_ca_file for tern
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::process::{self, PeerProcess};
use super::skip;

#[derive(Clone)]
enum Answer {
    File(Vec<u8>),
    /// A body sent at this many bytes a second.
    Slow(Vec<u8>, u32),
    Redirect(u16, String),
    Status(u16),
}

#[derive(Clone, Default)]
pub struct HttpsBuilder {
    /// Certificate names beyond the hosts served.
    names: Vec<String>,
    /// Serve a certificate for these names only (a wrong-name certificate).
    cert_names: Option<Vec<String>>,
    /// A certificate no test CA signed (self-signed).
    self_signed: bool,
    paths: Vec<(String, String, Answer, Option<String>)>,
}

impl HttpsBuilder {
    fn add(mut self, host: &str, path: &str, answer: Answer) -> Self {
        assert!(path.starts_with('/'), "a path starts with /: {path}");
        self.paths
            .push((host.to_ascii_lowercase(), path.to_owned(), answer, None));
        self
    }

    /// Serve `body` at `https://host/path` (text/plain).
    pub fn file(self, host: &str, path: &str, body: &str) -> Self {
        self.add(host, path, Answer::File(body.as_bytes().to_vec()))
    }

    /// A body of `size` bytes of text (for size limits).
    pub fn sized(self, host: &str, path: &str, size: usize) -> Self {
        let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\n";
        let body: Vec<u8> = line.iter().cycle().take(size).copied().collect();
        self.add(host, path, Answer::File(body))
    }

    /// `body` sent at `bytes_per_second` (nginx limit_rate; for time limits).
    pub fn slow(self, host: &str, path: &str, body: &str, bytes_per_second: u32) -> Self {
        self.add(
            host,
            path,
            Answer::Slow(body.as_bytes().to_vec(), bytes_per_second),
        )
    }

    /// A 301 to `location`.
    pub fn redirect(self, host: &str, path: &str, location: &str) -> Self {
        self.add(host, path, Answer::Redirect(301, location.to_owned()))
    }

    /// An empty answer with this status (404, 500...).
    pub fn status(self, host: &str, path: &str, code: u16) -> Self {
        self.add(host, path, Answer::Status(code))
    }

    /// The Content-Type of the last path added (text/plain otherwise).
    pub fn content_type(mut self, ct: &str) -> Self {
        if let Some(last) = self.paths.last_mut() {
            last.3 = Some(ct.to_owned());
        }
        self
    }

    /// Also put `name` in the certificate (and give it a server block).
    pub fn name(mut self, name: &str) -> Self {
        self.names.push(name.to_ascii_lowercase());
        self
    }

    /// Certificate for exactly these names, whatever is served (wrong-name tests).
    pub fn cert_names(mut self, names: &[&str]) -> Self {
        self.cert_names = Some(names.iter().map(|n| n.to_string()).collect());
        self
    }

    /// A self-signed certificate that the test CA does not vouch for.
    pub fn self_signed(mut self) -> Self {
        self.self_signed = true;
        self
    }

    /// None when nginx is missing (the skip is recorded; a failure under CI).
    pub fn start(self) -> Option<Https> {
        if !skip::installed("nginx", &[]) {
            return None;
        }
        Some(process::retry_start("nginx", || Https::start(&self)))
    }

    fn hosts(&self) -> Vec<String> {
        let mut h: Vec<String> = self.names.clone();
        for (host, ..) in &self.paths {
            if !h.contains(host) {
                h.push(host.clone());
            }
        }
        if h.is_empty() {
            h.push("localhost".to_owned());
        }
        h
    }
}

/// A running nginx; stops on Drop.
pub struct Https {
    proc: PeerProcess,
    port: u16,
    ca_pem: String,
    ca_file: PathBuf,
    cert_pem: String,
}

impl Https {
    pub fn builder() -> HttpsBuilder {
        HttpsBuilder::default()
    }

    fn start(b: &HttpsBuilder) -> Result<Https, String> {
        let dir = process::peer_dir("nginx");
        let d = dir.path().to_path_buf();
        let hosts = b.hosts();
        let cert_names: Vec<String> = b.cert_names.clone().unwrap_or_else(|| hosts.clone());
        let refs: Vec<&str> = cert_names.iter().map(String::as_str).collect();
        let certs = super::make_certs_for(&refs);
        let (chain, key) = if b.self_signed {
            let ck = rcgen::generate_simple_self_signed(cert_names.clone()).map_err(|e| e.to_string())?;
            (ck.cert.pem(), ck.signing_key.serialize_pem())
        } else {
            (certs.chain_pem.clone(), certs.key_pem.clone())
        };
        let w = |name: &str, text: &[u8]| std::fs::write(d.join(name), text).map_err(|e| e.to_string());
        w("cert.pem", chain.as_bytes())?;
        w("key.pem", key.as_bytes())?;
        w("ca.pem", certs.ca_pem.as_bytes())?;
        std::fs::create_dir_all(d.join("tmp")).map_err(|e| e.to_string())?;
        let port = process::free_port();
        let mut servers = String::new();
        for (i, host) in hosts.iter().enumerate() {
            let root = d.join("www").join(host);
            std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
            let mut locations = String::new();
            for (n, (_, path, answer, ct)) in b.paths.iter().enumerate().filter(|(_, p)| &p.0 == host) {
                let ct = ct
                    .as_deref()
                    .map(|c| format!("default_type \"{c}\"; "))
                    .unwrap_or_default();
                match answer {
                    Answer::File(body) | Answer::Slow(body, _) => {
                        let file = root.join(format!(".body{n}"));
                        std::fs::write(&file, body).map_err(|e| e.to_string())?;
                        let rate = match answer {
                            Answer::Slow(_, rate) => format!("limit_rate {rate}; sendfile off; "),
                            _ => String::new(),
                        };
                        locations.push_str(&format!(
                            "    location = {path} {{ {ct}{rate}alias {}; }}\n",
                            file.display()
                        ));
                    }
                    Answer::Redirect(code, to) => {
                        locations.push_str(&format!("    location = {path} {{ return {code} {to}; }}\n"));
                    }
                    Answer::Status(code) => {
                        locations.push_str(&format!("    location = {path} {{ return {code}; }}\n"));
                    }
                }
            }
            let default = if i == 0 { " default_server" } else { "" };
            servers.push_str(&format!(
                "  server {{\n    listen 127.0.0.1:{port} ssl{default};\n    server_name {host};\n    root {root};\n{locations}  }}\n",
                root = root.display()
            ));
        }
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 128; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp/client;\n  proxy_temp_path {d}/tmp/proxy;\n  \
             fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  \
             types {{ }}\n  default_type text/plain;\n  ssl_certificate {d}/cert.pem;\n  ssl_certificate_key {d}/key.pem;\n  \
             ssl_protocols TLSv1.2 TLSv1.3;\n  keepalive_timeout 5s;\n{servers}}}\n",
            d = d.display()
        );
        std::fs::write(d.join("nginx.conf"), conf).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(skip::find_tool("nginx").ok_or("no nginx")?);
        cmd.arg("-p")
            .arg(&d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-e")
            .arg(d.join("error.log"));
        let logs = vec![d.join("error.log"), d.join("access.log")];
        let mut proc = PeerProcess::spawn("nginx", cmd, dir, logs)?;
        proc.wait_ready(Duration::from_secs(10), || {
            process::tcp_answers(process::localhost(port))
        })?;
        Ok(Https {
            ca_file: proc.dir().join("ca.pem"),
            proc,
            port,
            ca_pem: certs.ca_pem,
            cert_pem: chain,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        process::localhost(self.port)
    }

    /// `https://host:port/path`.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port)
    }

    /// PEM of the CA that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA in a file (tern's `tls_ca_file` in tests).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The server's certificate chain (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn process(&self) -> &PeerProcess {
        &self.proc
    }

    /// Lines of nginx's access log (one per request served).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.proc.dir().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// An answer as the test client read it.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 GET over rustls, trusting only `ca_pem`, with `host` as
/// SNI and Host: for smoke tests and for checking what a test serves.
pub fn get(addr: SocketAddr, host: &str, path: &str, ca_pem: &str) -> Result<HttpAnswer, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("TLS: {e}"))?;
    let mut r = BufReader::new(tls);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).map_err(|e| e.to_string())?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut body = Vec::new();
    // nginx closes after the body (Connection: close); a TLS close without
    // close_notify shows as an error after all the data: keep what came.
    let _ = r.read_to_end(&mut body);
    Ok(HttpAnswer {
        status,
        headers,
        body,
    })
}
