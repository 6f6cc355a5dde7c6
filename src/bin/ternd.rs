//! ternd: the tern SMTP daemon. See ternd(8).
//!
//! Flags follow OpenSMTPD's smtpd(8): `-f FILE` config, `-d` foreground with
//! logs on stderr, `-n` check the config and exit, `-v` verbose, `-i` one
//! SMTP session on stdin/stdout (inetd, tcpserver). This file parses them;
//! the daemon's life is in `tern::daemon`.

use std::path::PathBuf;
use std::process::ExitCode;

use tern::config;
use tern::daemon::{self, Origin};
use tern::deliver::local;
use tern::logging;
use tern::sysexits::SysExit;

fn usage(opts: &getopts::Options) -> String {
    opts.usage("usage: ternd [-dinv] [-f file]")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A delivery child (see tern::deliver::local): ternd re-executed as a mail user.
    if args.first().map(String::as_str) == Some(local::CHILD_FLAG) {
        return local::child_main(args.get(1..).unwrap_or_default());
    }
    // Start-up asking, as the daemon's account, which files it can read.
    if args.first().map(String::as_str) == Some(daemon::CHECK_FLAG) {
        return daemon::check_readable_main(args.get(1..).unwrap_or_default());
    }
    let mut opts = getopts::Options::new();
    opts.optopt("f", "", "configuration file", "FILE");
    opts.optflag("d", "", "stay in the foreground, log to stderr");
    opts.optflag("n", "", "check the configuration and exit");
    opts.optflagmulti("v", "", "more verbose logging");
    opts.optflag("i", "", "one SMTP session on stdin/stdout (inetd)");
    opts.optflag("h", "help", "show this help");
    let m = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ternd: {e}\n{}", usage(&opts));
            return ExitCode::from(SysExit::Usage);
        }
    };
    if m.opt_present("h") {
        print!("{}", usage(&opts));
        return ExitCode::SUCCESS;
    }
    if !m.free.is_empty() {
        eprintln!(
            "ternd: unexpected argument {:?}\n{}",
            m.free.join(" "),
            usage(&opts)
        );
        return ExitCode::from(SysExit::Usage);
    }
    let origin = Origin {
        path: PathBuf::from(m.opt_str("f").unwrap_or_else(|| config::DEFAULT_PATH.to_owned())),
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        verbose: m.opt_count("v"),
    };
    let check_only = m.opt_present("n");
    let (cfg, tls) = match daemon::load(&origin.path, &origin.cwd) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("ternd: {e}");
            return ExitCode::from(if check_only { 1 } else { SysExit::Config.code() });
        }
    };
    if check_only {
        // The files must be readable by the account the daemon will run as
        // (when that account exists; start-up names a missing one).
        let account = daemon::account(&cfg).ok().flatten();
        if let Err(f) = daemon::check_files(&cfg, account.as_ref()) {
            f.report();
            return ExitCode::from(1);
        }
        println!("ternd: configuration OK: {}", origin.path.display());
        return ExitCode::SUCCESS;
    }
    let level = logging::level(cfg.daemon.log_level, origin.verbose);
    let foreground = m.opt_present("d");
    let inetd = m.opt_present("i");
    if let Some(path) = &cfg.daemon.log_file {
        // Opened now, as root if we are: the daemon keeps the file open. One
        // it creates is given to the account it runs as, so that a SIGHUP
        // after rotation can open the new one.
        match logging::to_file("ternd", path, foreground, level) {
            Ok(true) => {
                if let Ok(Some(pw)) = daemon::account(&cfg) {
                    let _ = std::os::unix::fs::chown(path, Some(pw.uid), Some(pw.gid));
                }
            }
            Ok(false) => {}
            Err(e) => {
                eprintln!("ternd: log_file {}: {e}", path.display());
                return ExitCode::from(SysExit::CantCreat);
            }
        }
    } else if foreground {
        logging::to_stderr("ternd", level);
    } else {
        logging::to_syslog("ternd", cfg.daemon.syslog_facility, level);
        if let (false, Err(e)) = (inetd, logging::syslog_reachable()) {
            eprintln!(
                "ternd: warning: cannot reach syslog (/dev/log: {e}): the log of the detached daemon \
                 is lost; set log_file = PATH in {} or start a syslog daemon",
                origin.path.display()
            );
        }
    }
    if inetd {
        daemon::inetd(cfg, tls)
    } else {
        daemon::run(cfg, tls, origin, foreground)
    }
}
