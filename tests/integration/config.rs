//! `ternd -n`: the shipped configs check clean; each bad config fails with
//! its `file:line: why`.

use std::path::Path;
use std::process::Command;

use crate::common::TERND;

fn check(path: &Path) -> (i32, String, String) {
    let out = Command::new(TERND)
        .arg("-n")
        .arg("-f")
        .arg(path)
        .output()
        .expect("run ternd -n");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shipped_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["etc/tern.conf", "etc/tern.dev.conf"] {
        let (code, out, err) = check(&root.join(name));
        assert_eq!(code, 0, "{name}: {err}");
        assert!(out.contains("configuration OK"), "{out}");
    }
}

#[test]
fn bad_configs_fail_with_file_and_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/bad");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("conf") {
            continue;
        }
        n += 1;
        let want = std::fs::read_to_string(path.with_extension("err")).unwrap();
        let want = want.trim_end();
        let (code, _, err) = check(&path);
        assert_eq!(code, 1, "{}: {err}", path.display());
        // ternd names the file as given on the command line.
        let expected = format!(
            "ternd: {}{}",
            dir.display(),
            want.strip_prefix("").map(|w| format!("/{w}")).unwrap_or_default()
        );
        assert!(
            err.starts_with(&expected),
            "{}:\n got: {err}\nwant: {expected}",
            path.display()
        );
    }
    assert!(n >= 8);
}

#[test]
fn unreadable_config_and_bad_flags() {
    let (code, _, err) = check(Path::new("/nonexistent/tern.conf"));
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/tern.conf: cannot read"), "{err}");
    let out = Command::new(TERND).arg("-Z").output().unwrap();
    assert_eq!(out.status.code(), Some(64), "EX_USAGE for an unknown flag");
}

/// Certificate problems are configuration errors that `ternd -n` reports.
#[test]
fn tls_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tern.conf");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(
        &conf,
        format!("tls_cert = {}\ntls_key = {}\n", cert.display(), key.display()),
    )
    .unwrap();
    let (code, _, err) = check(&conf);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("tls_cert {}", cert.display())), "{err}");

    let a = crate::common::make_certs();
    let b = crate::common::make_certs();
    std::fs::write(&cert, &a.chain_pem).unwrap();
    std::fs::write(&key, &b.key_pem).unwrap();
    let (code, _, err) = check(&conf);
    assert_eq!(code, 1, "a key that does not match: {err}");
    assert!(err.contains("tls_cert/tls_key"), "{err}");

    std::fs::write(&key, &a.key_pem).unwrap();
    let (code, out, err) = check(&conf);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration OK"), "{out}");
}
