//! What the bench programs' command lines share (included by `#[path]`):
//! reading the options with `-h`, the usage error, sizes with a suffix, and
//! SIGINT/SIGTERM as a flag.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// sysexits EX_USAGE.
pub const EXIT_USAGE: u8 = 2;

/// The options in `args`; or, for `-h`, the usage printed and exit 0, and for
/// options `opts` does not know, the error and the usage and exit 2.
pub fn matches(
    name: &str,
    opts: &getopts::Options,
    args: &[String],
    usage: &str,
) -> Result<getopts::Matches, ExitCode> {
    let m = opts.parse(args).map_err(|e| usage_error(name, &e, usage))?;
    if m.opt_present("h") {
        print!("{usage}");
        return Err(ExitCode::SUCCESS);
    }
    Ok(m)
}

/// `name: error`, the usage, and exit 2.
pub fn usage_error(name: &str, e: &dyn std::fmt::Display, usage: &str) -> ExitCode {
    eprintln!("{name}: {e}\n{usage}");
    ExitCode::from(EXIT_USAGE)
}

/// `4096`, `4K`, `1M`, `1G`: bytes with one of the binary `suffixes` allowed
/// ("KM" or "KMG", either case).
#[allow(dead_code)] // smtp-sink takes no size
pub fn size(s: &str, suffixes: &str) -> Option<u64> {
    let last = char::from(*s.as_bytes().last()?).to_ascii_uppercase();
    let shift = match last {
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return s.parse().ok(),
    };
    if !suffixes.contains(last) {
        return None;
    }
    s.get(..s.len() - 1)?.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Set by SIGINT or SIGTERM once [`catch_signals`] has run: a program that runs
/// until stopped looks at it, so that its RESULT line still gets printed.
#[allow(dead_code)] // only smtp-sink and neighbour run until stopped
pub static SIGNALLED: AtomicBool = AtomicBool::new(false);

#[allow(dead_code)]
extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM set [`SIGNALLED`] instead of ending the program.
#[allow(dead_code)]
pub fn catch_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, handler);
        }
    }
}
