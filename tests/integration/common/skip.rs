//! Skips that are seen. A test that cannot run here (it needs root, an
//! outside program or a Debian package) calls `skip(reason)` or one of the
//! `require_*!` macros, which
//! - print a loud `SKIP test: reason` line straight to stderr (libtest
//!   captures only the print macros, so the line shows even when the test passes),
//! - append `test: reason` to the skip log (`$TERN_SKIP_LOG`, else
//!   `target/test-skips.txt`), which `make test` and `.ci/run` print at the end,
//! - and under `CI=true` fail the test instead: CI installs every peer
//!   (`.ci/run`), so a skip there is a broken install step, not a pass.
//!
//! The library's unit tests skip the same way (src/testskip.rs).

#![allow(unused_macros)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Debian's own interpreter: its python3-* packages (Milter, dkim) are not
/// visible to another python3 that may come first in PATH (pyenv).
pub fn debian_python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

// The recording (stderr line, skip log, failure under CI) is the library's
// unit-test copy, one file for both.
#[path = "../../../src/testskip/record.rs"]
mod record;
pub(crate) use record::skip;

pub fn is_root() -> bool {
    tern::sys::uids().1 == 0
}

/// `name` as a path to run: itself when it has a slash, else the first
/// executable of that name in PATH or the sbin directories (root's programs
/// are there and a user's PATH often lacks them).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if name.contains('/') {
        return executable(Path::new(name)).then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

pub fn have_tool(name: &str) -> bool {
    find_tool(name).is_some()
}

/// Debian's python3 can import `module`.
pub fn have_python_module(module: &str) -> bool {
    Command::new(debian_python())
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Debian package that brings a program or python module, for the
/// skip message (and .ci/run's install list says the same).
pub fn package_of(tool: &str) -> &'static str {
    match tool {
        "nsd" => "nsd",
        "unbound" => "unbound",
        "dnssec-keygen" | "dnssec-signzone" | "dnssec-dsfromkey" => "bind9-utils",
        "drill" | "ldns-signzone" => "ldnsutils",
        "dovecot" => "dovecot-core dovecot-lmtpd",
        "opendkim" => "opendkim",
        "opendkim-genkey" | "opendkim-testmsg" | "miltertest" => "opendkim-tools",
        "rspamd" => "rspamd",
        "postgrey" => "postgrey",
        "nginx" => "nginx-light",
        "postfix" | "postconf" | "smtp-sink" | "smtp-source" => "postfix",
        "pflogsumm" => "pflogsumm",
        "promtool" => "prometheus",
        "python3" => "python3",
        "Milter" => "python3-milter",
        "dkim" => "python3-dkim",
        "openssl" => "openssl",
        "mandoc" => "mandoc",
        "groff" => "groff-base",
        "man" => "man-db",
        "swaks" => "swaks",
        "dpkg-divert" => "dpkg",
        _ => "?",
    }
}

/// True when `tool` is installed and every one of `files` (parts of its
/// package outside PATH) exists; else a skip is recorded (a failure under CI).
pub fn installed(tool: &str, files: &[&str]) -> bool {
    if have_tool(tool) && files.iter().all(|f| Path::new(f).exists()) {
        return true;
    }
    skip(&missing(tool));
    false
}

/// True when running as root; else a skip "needs root: WHY" is recorded.
pub fn root_for(why: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(&format!("needs root: {why}"));
    false
}

/// "TOOL is not installed (apt-get install PACKAGE)", for a skip.
pub fn missing(tool: &str) -> String {
    match package_of(tool) {
        "?" => format!("{tool} is not installed"),
        p if tool.chars().next().is_some_and(|c| c.is_ascii_uppercase()) || tool == "dkim" => {
            format!("python module {tool} is not installed (apt-get install {p})")
        }
        p => format!("{tool} is not installed (apt-get install {p})"),
    }
}

/// True when every program is installed; else the first missing one is
/// skipped for (recorded, or a failure under CI) and the caller returns.
pub fn tools_present(tools: &[&str]) -> bool {
    match tools.iter().find(|t| !have_tool(t)) {
        Some(t) => {
            skip(&missing(t));
            false
        }
        None => true,
    }
}

/// Skip unless every program is installed: `require_tool!("nsd", "unbound");`
macro_rules! require_tool {
    ($($tool:expr),+ $(,)?) => {
        $(
            if !$crate::common::skip::have_tool($tool) {
                $crate::common::skip::skip(&$crate::common::skip::missing($tool));
                return;
            }
        )+
    };
}

/// Skip unless Debian's python3 imports every module: `require_python!("Milter");`
macro_rules! require_python {
    ($($module:expr),+ $(,)?) => {
        $(
            if !$crate::common::skip::have_python_module($module) {
                $crate::common::skip::skip(&$crate::common::skip::missing($module));
                return;
            }
        )+
    };
}

/// Skip unless running as root: `require_root!("mounting a tmpfs");`
macro_rules! require_root {
    ($why:expr) => {
        if !$crate::common::skip::root_for($why) {
            return;
        }
    };
}

/// The value of an Option, or skip with `reason`:
/// `let nobody = require_some!(getpwnam("nobody"), "no nobody account");`
macro_rules! require_some {
    ($opt:expr, $($reason:tt)+) => {
        match $opt {
            Some(v) => v,
            None => {
                $crate::common::skip::skip(&format!($($reason)+));
                return;
            }
        }
    };
}
