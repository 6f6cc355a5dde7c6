//! Skips that are seen, for the library's own unit tests: the lib-side twin
//! of the integration harness's tests/integration/common/skip.rs, sharing its
//! recording (testskip/record.rs) and so its log and its rule. A unit test
//! that needs an outside program (openssl, Debian's python3 with a module,
//! opendkim) or root and cannot have it here
//! - prints a `SKIP test: reason` line straight to stderr (shown even when the
//!   test passes, unlike the print macros, which libtest captures),
//! - appends `test: reason` to the skip log (`$TERN_SKIP_LOG`, which `make
//!   test` sets, else `target/test-skips.txt`), listed at the end of `make test`
//!   and counted by .ci/run,
//! - and under `CI=true` fails instead: .ci/run installs every such program,
//!   so a skip there is a missing install step, not a pass.

use std::path::Path;
use std::process::{Command, Stdio};

mod record;
pub(crate) use record::skip;

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
