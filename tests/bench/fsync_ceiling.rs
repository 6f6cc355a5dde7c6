//! fsync-ceiling: how many durable file commits a filesystem allows, the
//! ceiling under any MTA that fsyncs a message before its 250.
//!
//! `fsync-ceiling [-k] [-t THREADS] [-n FILES] [-s SIZE] DIR`
//!
//! In a fresh work directory under DIR (put it on the spool's filesystem),
//! THREADS threads share FILES iterations of a Maildir-style durable commit:
//! create `tmp/F` (O_EXCL), write SIZE bytes, fsync it, rename it to `new/F`,
//! fsync `new/`. That is one file and one directory fsync per message, the
//! cost of a message in a Maildir or in a spool that syncs its names. An MTA
//! whose commit is one fsync of one new file (Postfix's queue file, ternd's
//! sealed msg/ID, both relying on the filesystem to make the new name durable
//! with it) can pass this rate, as can one that shares fsyncs between
//! messages (group commit). The work directory is removed at the end, not
//! timed, unless `-k` keeps it: on ext4 without a journal, a new inode skips
//! every inode of its group freed in the last minute or more (`find_inode_bit`,
//! `recently_deleted`), so removing thousands of files right before the next
//! load in the same directory tree slows that load's file creations; `make
//! bench` keeps them and removes its whole directory at the very end.
//!
//! The last line of output is machine-readable:
//! `RESULT threads=T files=N errors=E seconds=S files_per_sec=R p50_ms=X p99_ms=Y max_ms=Z`,
//! latencies per iteration (create to directory fsync). Exit status: 0, 1 on
//! an I/O error, 2 on a usage error.
//!
//! A benchmark tool, never a timed test.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[path = "cli.rs"]
mod cli;

const EXIT_ERRORS: u8 = 1;

struct Config {
    dir: PathBuf,
    threads: usize,
    files: u64,
    size: usize,
    keep: bool,
}

fn usage(opts: &getopts::Options) -> String {
    opts.usage("usage: fsync-ceiling [-k] [-t threads] [-n files] [-s size] dir")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = getopts::Options::new();
    opts.optopt("t", "", "threads (default 1)", "THREADS");
    opts.optopt("n", "", "files in total (default 1000)", "FILES");
    opts.optopt("s", "", "bytes per file, K or M suffix (default 4096)", "SIZE");
    opts.optflag("k", "keep", "keep the work directory (its path is printed)");
    opts.optflag("h", "help", "show this help");
    let m = match cli::matches("fsync-ceiling", &opts, &args, &usage(&opts)) {
        Ok(m) => m,
        Err(code) => return code,
    };
    match config(&m) {
        Ok(cfg) => run(&cfg),
        Err(e) => cli::usage_error("fsync-ceiling", &e, &usage(&opts)),
    }
}

fn config(m: &getopts::Matches) -> Result<Config, String> {
    let dir = match m.free.as_slice() {
        [d] => PathBuf::from(d),
        [] => return Err("missing directory".to_owned()),
        more => return Err(format!("unexpected arguments {:?}", &more[1..])),
    };
    let threads: usize = num(m, "t", 1)?;
    let files: u64 = num(m, "n", 1000)?;
    if threads == 0 || files == 0 {
        return Err("-t and -n must be at least 1".to_owned());
    }
    let size = match m.opt_str("s") {
        Some(s) => parse_size(&s).ok_or_else(|| format!("-s {s}: not a size (e.g. 4096, 4K)"))?,
        None => 4096,
    };
    Ok(Config {
        dir,
        // More threads than files would only start idle threads.
        threads: threads.min(usize::try_from(files).unwrap_or(usize::MAX)),
        files,
        size,
        keep: m.opt_present("k"),
    })
}

fn num<T: std::str::FromStr>(m: &getopts::Matches, opt: &str, default: T) -> Result<T, String> {
    match m.opt_str(opt) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| format!("-{opt} {s}: not a number")),
    }
}

/// `4096`, `4K`, `1M`: bytes, KiB, MiB.
fn parse_size(s: &str) -> Option<usize> {
    usize::try_from(cli::size(s, "KM")?).ok()
}

/// The work directory: `tmp/` and `new/`, like a Maildir or a spool.
struct Work {
    root: PathBuf,
    tmp: PathBuf,
    new: PathBuf,
    keep: bool,
}

impl Work {
    fn create(parent: &Path, keep: bool) -> std::io::Result<Work> {
        let root = parent.join(format!("fsync-ceiling.{}", std::process::id()));
        fs::create_dir(&root)?;
        let (tmp, new) = (root.join("tmp"), root.join("new"));
        fs::create_dir(&tmp)?;
        fs::create_dir(&new)?;
        // The new directories themselves durable, so the first timed
        // iterations do not pay for them.
        File::open(&root)?.sync_all()?;
        Ok(Work { root, tmp, new, keep })
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("fsync-ceiling: kept {}", self.root.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// One durable commit: the smallest thing a 250 after DATA can stand on.
fn commit(work: &Work, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = work.tmp.join(name);
    let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, work.new.join(name))?;
    File::open(&work.new)?.sync_all()
}

fn run(cfg: &Config) -> ExitCode {
    let work = match Work::create(&cfg.dir, cfg.keep) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            eprintln!(
                "fsync-ceiling: cannot create a work directory in {}: {e}",
                cfg.dir.display()
            );
            return ExitCode::from(EXIT_ERRORS);
        }
    };
    let data: Arc<Vec<u8>> = Arc::new((0..cfg.size).map(|i| b'a' + (i % 26) as u8).collect());
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(cfg.threads);
    for t in 0..cfg.threads {
        let (work, data, next, failures) = (
            Arc::clone(&work),
            Arc::clone(&data),
            Arc::clone(&next),
            Arc::clone(&errors),
        );
        let files = cfg.files;
        let spawned = thread::Builder::new().name(format!("writer-{t}")).spawn(move || {
            let mut lat = Vec::new();
            // Iterations are handed out one at a time, so a slow thread does
            // not leave the others idle at the end.
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= files {
                    break;
                }
                let t0 = Instant::now();
                match commit(&work, &format!("{t}.{i}"), &data) {
                    Ok(()) => lat.push(micros(t0.elapsed())),
                    Err(e) => {
                        if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("fsync-ceiling: {}: {e}", work.root.display());
                        }
                        break;
                    }
                }
            }
            lat
        });
        match spawned {
            Ok(h) => workers.push(h),
            Err(e) => {
                eprintln!("fsync-ceiling: cannot start a thread: {e}");
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let mut lat = Vec::with_capacity(usize::try_from(cfg.files).unwrap_or(0));
    for h in workers {
        match h.join() {
            Ok(l) => lat.extend(l),
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    lat.sort_unstable();
    let done = lat.len();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    println!(
        "fsync-ceiling: {} threads, {done} files of {} bytes in {} (write, fsync, rename, fsync dir)",
        cfg.threads,
        cfg.size,
        cfg.dir.display()
    );
    println!("  elapsed      {secs:.3} s");
    println!("  rate         {rate:.1} files/s");
    println!(
        "  latency ms:  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        pct_ms(&lat, 50.0),
        pct_ms(&lat, 90.0),
        pct_ms(&lat, 99.0),
        pct_ms(&lat, 100.0)
    );
    println!(
        "RESULT threads={} files={done} errors={errors} seconds={secs:.3} files_per_sec={rate:.1} \
         p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        cfg.threads,
        pct_ms(&lat, 50.0),
        pct_ms(&lat, 99.0),
        pct_ms(&lat, 100.0)
    );
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ERRORS)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn pct_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len()) - 1)
        .map_or(0.0, |&us| us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("4K"), Some(4096));
        assert_eq!(parse_size("1m"), Some(1024 * 1024));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn percentiles() {
        let v = [1000, 2000, 3000, 4000];
        assert_eq!(pct_ms(&v, 50.0), 2.0);
        assert_eq!(pct_ms(&v, 99.0), 4.0);
        assert_eq!(pct_ms(&v, 0.0), 1.0);
        assert_eq!(pct_ms(&[], 50.0), 0.0);
    }

    #[test]
    fn commits_land_in_new_and_the_work_dir_goes_away() {
        let parent = std::env::temp_dir().join(format!("fsync-ceiling-test.{}", std::process::id()));
        fs::create_dir_all(&parent).expect("parent");
        {
            let work = Work::create(&parent, false).expect("work");
            commit(&work, "a", b"hello").expect("commit");
            assert_eq!(fs::read(work.new.join("a")).expect("read"), b"hello");
            assert!(!work.tmp.join("a").exists());
            assert!(commit(&work, "a", b"again").is_ok(), "tmp name is free again");
        }
        assert_eq!(fs::read_dir(&parent).expect("list").count(), 0);
        // -k: the files stay for whoever removes the parent.
        let kept = {
            let work = Work::create(&parent, true).expect("work");
            commit(&work, "a", b"kept").expect("commit");
            work.new.join("a")
        };
        assert_eq!(fs::read(&kept).expect("read"), b"kept");
        fs::remove_dir_all(&parent).expect("rm -r");
    }
}
