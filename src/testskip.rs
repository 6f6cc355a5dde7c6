//! Skips that are seen, for the library's own unit tests: the lib-side twin of
//! the integration harness's tests/integration/common/skip.rs, with the same
//! log and the same rule. A unit test that needs an outside program (openssl,
//! Debian's python3 with a module, opendkim) or root and cannot have it here
//! - prints a `SKIP test: reason` line straight to stderr (shown even when the
//!   test passes, unlike the print macros, which libtest captures),
//! - appends `test: reason` to the skip log (`$TERN_SKIP_LOG`, which `make
//!   test` sets, else `target/test-skips.txt`), listed at the end of `make test`
//!   and counted by .ci/run,
//! - and under `CI=true` fails instead: .ci/run installs every such program,
//!   so a skip there is a missing install step, not a pass.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// True when running under CI (`CI=true`, as .ci/run is run).
pub(crate) fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1") | Ok("yes"))
}

/// The skip log: `$TERN_SKIP_LOG`, else `test-skips.txt` in the target
/// directory (the one integration tests write to as well).
fn skip_log() -> PathBuf {
    match std::env::var_os("TERN_SKIP_LOG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => match option_env!("CARGO_TARGET_DIR") {
            Some(t) => Path::new(t).join("test-skips.txt"),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-skips.txt"),
        },
    }
}

/// Skip the running test (the caller returns right after); under CI, fail it.
pub(crate) fn skip(reason: &str) {
    // libtest names each test's thread after the test.
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("(unnamed test)")
        .to_owned();
    if in_ci() {
        panic!("CI=true: {test} cannot run: {reason}; .ci/run must provide it (a skip here would hide a missing install step)");
    }
    let line = format!("{test}: {reason}");
    let _ = writeln!(std::io::stderr(), "SKIP {line}");
    let log = skip_log();
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One short write in append mode: lines from parallel tests do not mix.
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&log) {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// True when `program` runs (`program ARGS` exits 0); else a skip naming the
/// Debian package that brings it.
pub(crate) fn tool(program: &str, args: &[&str], package: &str) -> bool {
    let runs = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runs {
        skip(&format!("{program} is not installed (apt-get install {package})"));
    }
    runs
}

/// The python3 that imports every one of `modules`: Debian's own first (its
/// python3-* packages are not visible to a pyenv python3 that may come first
/// in PATH), then the one in PATH; else a skip naming `package`.
pub(crate) fn python(modules: &str, package: &str) -> Option<&'static str> {
    let found = ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", &format!("import {modules}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        skip(&format!(
            "python3 cannot import {modules} (apt-get install {package})"
        ));
    }
    found
}

/// True when `path` (a program outside PATH, e.g. in /usr/sbin) exists; else
/// a skip naming `package`.
pub(crate) fn file(path: &str, package: &str) -> bool {
    let there = Path::new(path).exists();
    if !there {
        skip(&format!("{path} is missing (apt-get install {package})"));
    }
    there
}

/// True when running as root; else a skip "needs root: WHY".
pub(crate) fn root_for(why: &str) -> bool {
    let root = crate::sys::uids().1 == 0;
    if !root {
        skip(&format!("needs root: {why}"));
    }
    root
}
