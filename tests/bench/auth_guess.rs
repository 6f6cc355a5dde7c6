//! auth-guess: how fast can a password guesser go? (issue 16 item 6)
//!
//! `auth-guess [-a SOURCES] [-c WORKERS] [-w SECS] [-u USER] [-n NAME] -C CAFILE HOST:PORT`
//!
//! WORKERS threads, spread over SOURCES loopback addresses (127.0.1.1 and
//! up), each connect to a submission port, STARTTLS (trusting CAFILE for
//! NAME, default mx.test), EHLO, and send AUTH PLAIN for USER (default
//! alice) with a wrong password again and again, reconnecting whenever the
//! server closes, for SECS seconds (default 60). A 535 is a guess the
//! server checked; 454 and 421 are attempts refused unchecked; a 421 before
//! the greeting (pool full) counts as busy.
//!
//! The last line is machine-readable:
//! `RESULT sources=A workers=C seconds=S guesses=G guesses_per_sec=R refused=F busy=B`
//!
//! A benchmark tool, never run as a test (tests/bench/README.md).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::prelude::{Engine as _, BASE64_STANDARD};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

#[derive(Default)]
struct Counts {
    guesses: AtomicU64,
    refused: AtomicU64,
    busy: AtomicU64,
}

struct Job {
    server: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    user: String,
    deadline: Instant,
    counts: Counts,
}

fn main() -> ExitCode {
    let mut opts = getopts::Options::new();
    opts.optopt("a", "", "loopback source addresses (default 1)", "SOURCES");
    opts.optopt("c", "", "worker threads (default 10)", "WORKERS");
    opts.optopt("w", "", "seconds to run (default 60)", "SECS");
    opts.optopt("u", "", "account to guess (default alice)", "USER");
    opts.optopt("n", "", "TLS name of the server (default mx.test)", "NAME");
    opts.optopt("C", "", "CA certificate to trust (PEM)", "CAFILE");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || opts.usage("Usage: auth-guess [options] -C CAFILE HOST:PORT");
    let m = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("auth-guess: {e}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let num = |o: &str, d: u64| m.opt_str(o).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (sources, workers, seconds) = (num("a", 1).clamp(1, 250), num("c", 10).max(1), num("w", 60));
    let (Some(server), Some(cafile)) = (m.free.first().and_then(|s| s.parse().ok()), m.opt_str("C")) else {
        eprintln!(
            "auth-guess: a server HOST:PORT and -C CAFILE are needed\n{}",
            usage()
        );
        return ExitCode::from(2);
    };
    let tls = match client_config(&cafile) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("auth-guess: {cafile}: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(name) = ServerName::try_from(m.opt_str("n").unwrap_or_else(|| "mx.test".to_owned())) else {
        eprintln!("auth-guess: bad TLS name");
        return ExitCode::from(2);
    };
    let started = Instant::now();
    let job = Arc::new(Job {
        server,
        tls,
        name,
        user: m.opt_str("u").unwrap_or_else(|| "alice".to_owned()),
        deadline: started + Duration::from_secs(seconds),
        counts: Counts::default(),
    });
    let threads: Vec<_> = (0..workers)
        .map(|i| {
            let job = Arc::clone(&job);
            let src = Ipv4Addr::new(127, 0, 1, (i % sources) as u8 + 1);
            std::thread::spawn(move || worker(&job, src, i))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let took = started.elapsed().as_secs_f64();
    let c = &job.counts;
    let guesses = c.guesses.load(Ordering::Relaxed);
    println!(
        "RESULT sources={sources} workers={workers} seconds={took:.0} guesses={guesses} guesses_per_sec={:.2} refused={} busy={}",
        guesses as f64 / took,
        c.refused.load(Ordering::Relaxed),
        c.busy.load(Ordering::Relaxed)
    );
    ExitCode::SUCCESS
}

fn client_config(cafile: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = std::fs::read(cafile).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Connect to `dst` from `src` (bind before connect).
fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    s.connect(&dst.into())?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(s)
}

/// One reply's code (the last line's), None at end of stream or on error.
fn reply(r: &mut impl BufRead) -> Option<u16> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.get(..3)?.parse().ok();
        }
    }
}

fn worker(job: &Job, src: Ipv4Addr, id: u64) {
    let mut n = 0u64;
    while Instant::now() < job.deadline {
        if session(job, src, id, &mut n).is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One session: guess until the server closes or refuses. None when it did
/// not get as far as AUTH.
fn session(job: &Job, src: Ipv4Addr, id: u64, n: &mut u64) -> Option<()> {
    let tcp = connect_from(src, job.server).ok()?;
    let mut plain = BufReader::new(tcp.try_clone().ok()?);
    let mut w = tcp;
    match reply(&mut plain)? {
        220 => {}
        _ => {
            job.counts.busy.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    }
    w.write_all(b"EHLO guesser.test\r\n").ok()?;
    (reply(&mut plain)? == 250).then_some(())?;
    w.write_all(b"STARTTLS\r\n").ok()?;
    (reply(&mut plain)? == 220).then_some(())?;
    let conn = rustls::ClientConnection::new(Arc::clone(&job.tls), job.name.clone()).ok()?;
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, w));
    tls.get_mut().write_all(b"EHLO guesser.test\r\n").ok()?;
    (reply(&mut tls)? == 250).then_some(())?;
    while Instant::now() < job.deadline {
        *n += 1;
        let creds = BASE64_STANDARD.encode(format!("\0{}\0wrong-{id}-{n}", job.user));
        tls.get_mut()
            .write_all(format!("AUTH PLAIN {creds}\r\n").as_bytes())
            .ok()?;
        match reply(&mut tls)? {
            535 => job.counts.guesses.fetch_add(1, Ordering::Relaxed),
            454 => job.counts.refused.fetch_add(1, Ordering::Relaxed),
            421 => {
                job.counts.refused.fetch_add(1, Ordering::Relaxed);
                return Some(());
            }
            _ => return Some(()),
        };
    }
    Some(())
}
