//! Recording a skip, the one copy shared by the library's unit tests
//! (src/testskip.rs) and the integration harness
//! (tests/integration/common/skip.rs, which includes this file by path): a
//! loud `SKIP test: reason` line on stderr (libtest captures only the print
//! macros, so it shows even when the test passes), a line in the skip log that
//! `make test` and .ci/run list, and under `CI=true` a failure instead.

use std::io::Write;
use std::path::{Path, PathBuf};

/// True when running under CI (`CI=true`, as .ci/run is run).
pub(crate) fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1") | Ok("yes"))
}

/// Where skips are recorded: `$TERN_SKIP_LOG` (set by `make test`), else
/// `test-skips.txt` in the target directory.
fn skip_log() -> PathBuf {
    match std::env::var_os("TERN_SKIP_LOG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => match option_env!("CARGO_TARGET_DIR") {
            Some(t) => Path::new(t).join("test-skips.txt"),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-skips.txt"),
        },
    }
}

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" => n.to_owned(),
        _ => "(unnamed test)".to_owned(),
    }
}

/// Skip the running test: the caller returns right after. Under CI this
/// panics (the test fails) instead.
pub(crate) fn skip(reason: &str) {
    let test = test_name();
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
