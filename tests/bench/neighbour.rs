//! neighbour: another program writing to the spool's filesystem, for the
//! neighbour loads of `make bench` (issue 21).
//!
//! `neighbour [-s SIZE] [-b BLOCK] [-r MB_PER_SEC] [-t SECS] FILE`
//!
//! Rewrites FILE (SIZE bytes, default 256M) from start to end in a loop, in
//! BLOCK-sized buffered writes (default 1M), never syncing: what a mailbox
//! server, a log or a database that leaves its writeback to the kernel puts on
//! a shared disk. With `-r` it holds a steady rate (MiB per second, averaged
//! from the start; 0, the default, writes as fast as it can). Every page of
//! FILE is dirty again within one pass, so whoever syncs the whole filesystem
//! (`syncfs(2)`) writes up to SIZE bytes of it each time; whoever syncs only
//! its own files does not.
//!
//! Once the first pass is written it prints `READY` (the page cache then holds
//! a full file of its dirty data: the steady state). It stops after `-t` SECS,
//! or on SIGINT or SIGTERM; then it removes FILE, which discards its dirty
//! pages instead of writing them (a load after this one must not pay for
//! them), and prints
//! `RESULT bytes=N seconds=S mib_per_sec=R passes=P`. Exit status: 0, 1 on an
//! I/O error, 2 on a usage error.
//!
//! A benchmark tool, never a timed test.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

#[path = "cli.rs"]
mod cli;

const EXIT_ERRORS: u8 = 1;
const MIB: f64 = 1024.0 * 1024.0;

struct Config {
    file: PathBuf,
    size: u64,
    block: usize,
    /// Bytes per second; 0 = unlimited.
    rate: f64,
    secs: Option<f64>,
}

fn usage(opts: &getopts::Options) -> String {
    opts.usage("usage: neighbour [-s size] [-b block] [-r MiB_per_sec] [-t secs] file")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = getopts::Options::new();
    opts.optopt("s", "", "file size, K, M or G suffix (default 256M)", "SIZE");
    opts.optopt("b", "", "bytes per write, K or M suffix (default 1M)", "BLOCK");
    opts.optopt("r", "", "MiB per second (default 0: as fast as possible)", "RATE");
    opts.optopt("t", "", "stop after SECS (default: at SIGINT or SIGTERM)", "SECS");
    opts.optflag("h", "help", "show this help");
    let m = match cli::matches("neighbour", &opts, &args, &usage(&opts)) {
        Ok(m) => m,
        Err(code) => return code,
    };
    match config(&m) {
        Ok(cfg) => run(&cfg),
        Err(e) => cli::usage_error("neighbour", &e, &usage(&opts)),
    }
}

fn config(m: &getopts::Matches) -> Result<Config, String> {
    let file = match m.free.as_slice() {
        [f] => PathBuf::from(f),
        _ => return Err("one file expected".into()),
    };
    let size = match m.opt_str("s") {
        Some(s) => parse_size(&s)?,
        None => 256 << 20,
    };
    let block = match m.opt_str("b") {
        Some(s) => parse_size(&s)?,
        None => 1 << 20,
    };
    if block == 0 || size < block {
        return Err("need 0 < block <= size".into());
    }
    let rate = match m.opt_str("r") {
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|r| r.is_finite() && *r >= 0.0)
            .ok_or(format!("bad rate {s:?}"))?,
        None => 0.0,
    };
    let secs = match m.opt_str("t") {
        Some(s) => Some(
            s.parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t > 0.0)
                .ok_or(format!("bad time {s:?}"))?,
        ),
        None => None,
    };
    Ok(Config {
        file,
        size,
        block: usize::try_from(block).map_err(|_| "block too large")?,
        rate: rate * MIB,
        secs,
    })
}

/// "4096", "4K", "256M", "1G".
fn parse_size(s: &str) -> Result<u64, String> {
    cli::size(s, "KMG").ok_or(format!("bad size {s:?}"))
}

fn run(cfg: &Config) -> ExitCode {
    cli::catch_signals();
    let file = match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&cfg.file)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("neighbour: {}: {e}", cfg.file.display());
            return ExitCode::from(EXIT_ERRORS);
        }
    };
    let mut buf = vec![b'n'; cfg.block];
    let start = Instant::now();
    let (mut written, mut passes, mut offset) = (0u64, 0u64, 0u64);
    let mut failed = None;
    while !cli::SIGNALLED.load(Ordering::Relaxed) {
        let elapsed = start.elapsed().as_secs_f64();
        if cfg.secs.is_some_and(|t| elapsed >= t) {
            break;
        }
        // Hold the rate: sleep until this block is due (in short steps, so that a
        // signal is seen soon).
        if cfg.rate > 0.0 {
            let due = written as f64 / cfg.rate;
            if due > elapsed {
                thread::sleep(Duration::from_secs_f64((due - elapsed).min(0.05)));
                continue;
            }
        }
        let n = usize::try_from((cfg.size - offset).min(cfg.block as u64)).unwrap_or(cfg.block);
        // A different byte each pass: every write really changes the page.
        buf.fill(b'a' + (passes % 26) as u8);
        if let Err(e) = file.write_all_at(&buf[..n], offset) {
            failed = Some(e);
            break;
        }
        written += n as u64;
        offset += n as u64;
        if offset >= cfg.size {
            offset = 0;
            passes += 1;
            if passes == 1 {
                println!("READY");
                let _ = std::io::stdout().flush();
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(file);
    // Unlinking drops the file's dirty pages without writing them.
    let _ = fs::remove_file(&cfg.file);
    println!(
        "RESULT bytes={written} seconds={seconds:.3} mib_per_sec={:.1} passes={passes}",
        written as f64 / MIB / seconds.max(1e-9)
    );
    match failed {
        Some(e) => {
            eprintln!("neighbour: {}: {e}", cfg.file.display());
            ExitCode::from(EXIT_ERRORS)
        }
        None => ExitCode::SUCCESS,
    }
}
