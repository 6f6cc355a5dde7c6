//! Issue 17, 2: files the daemon's account cannot read are found before they
//! are needed. A ternd started as root runs as its `user`; `ternd -n` and
//! start-up check every file it will read then (each file key of the key
//! table and the aliases' :include: files) and name each one it cannot, with
//! the account and the fix; a reload that names such a file keeps the old one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::{daemon_account, run_program, Setup, TERND};

/// A root-only secret, as an admin leaves it by habit: 0640 root:root.
fn root_only(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::os::unix::fs::chown(path, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640)).unwrap();
}

fn conf_path(setup: &Setup) -> PathBuf {
    setup.write_config()
}

#[test]
fn n_and_start_name_each_file_the_account_cannot_read() {
    require_root!("files the daemon's account cannot read");
    let account = require_some!(daemon_account(), "no account for the test daemon");
    let user = &account.name;
    let group = tern::sys::group_name(account.gid).unwrap();
    let setup = Setup::new().submission();
    let dir = setup.path().to_path_buf();
    let list = dir.join("list");
    let setup = setup.aliases(&format!("team: :include:{}\n", list.display()));
    for name in ["auth_users", "key.pem", "users", "aliases", "list"] {
        let p = dir.join(name);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|_| "alice\n".to_owned());
        root_only(&p, &text);
    }
    let conf = conf_path(&setup);
    let line = |key: &str, file: &str| {
        let p = dir.join(file);
        format!(
            "ternd: {key} {p}: not readable by user {user}: Permission denied; fix: chgrp {group} {p} && chmod g+r {p}\n",
            p = p.display()
        )
    };
    // The aliases file itself is unreadable: its includes cannot be found by
    // the account, but root finds them and says so too.
    let want = [
        line("tls_key", "key.pem"),
        line("auth_users", "auth_users"),
        line("local_users", "users"),
        line("aliases", "aliases"),
        format!(
            "ternd: :include: file {p} (named in the aliases): not readable by user {user}: Permission denied; fix: chgrp {group} {p} && chmod g+r {p}\n",
            p = list.display()
        ),
    ]
    .concat();
    let out = run_program(Path::new(TERND), &["-n", "-f", conf.to_str().unwrap()], b"");
    assert_eq!(
        (out.code, out.stderr.as_str(), out.stdout.as_str()),
        (1, want.as_str(), ""),
        "{out:?}"
    );
    // Start-up refuses the same way, before anything else happens.
    let out = run_program(Path::new(TERND), &["-d", "-f", conf.to_str().unwrap()], b"");
    assert_eq!(out.code, 78, "{out:?}");
    for l in want.lines() {
        assert!(out.stderr.contains(l), "{l}\n{out:?}");
    }
    assert!(!dir.join("spool/ternd.pid").exists());

    // The fix each line names works.
    for name in ["auth_users", "key.pem", "users", "aliases", "list"] {
        let p = dir.join(name);
        std::os::unix::fs::chown(&p, None, Some(account.gid)).unwrap();
    }
    let out = run_program(Path::new(TERND), &["-n", "-f", conf.to_str().unwrap()], b"");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("ternd: configuration OK"), "{out:?}");

    // A file that is not there at all is named too.
    std::fs::remove_file(dir.join("users")).unwrap();
    let out = run_program(Path::new(TERND), &["-n", "-f", conf.to_str().unwrap()], b"");
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr,
        format!(
            "ternd: local_users {}: no such file; create it or correct the setting\n",
            dir.join("users").display()
        )
    );
}

/// A reload that names a file the daemon cannot read keeps the one in use,
/// and says why; logins go on with the old file.
#[test]
fn reload_keeps_a_file_it_cannot_read() {
    require_root!("files the daemon's account cannot read");
    let account = require_some!(daemon_account(), "no account for the test daemon");
    let t = Setup::new().submission().start();
    let dir = t.setup.path().to_path_buf();
    let new = dir.join("auth_users.new");
    // bob only, so that taking it would make alice's login fail.
    let bob = std::fs::read_to_string(dir.join("auth_users"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("bob:"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    root_only(&new, &bob);
    let conf = dir.join("tern.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("auth_users =") {
                format!("auth_users = {}\n", new.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&conf, text).unwrap();
    t.signal(libc::SIGHUP);
    assert!(t.wait_log("SIGHUP: configuration reloaded"), "{}", t.log_text());
    let want = format!(
        "SIGHUP: auth_users {}: not readable by user {}: Permission denied; fix: chgrp ",
        new.display(),
        account.name
    );
    assert!(t.log_text().contains(&want), "{}", t.log_text());
    assert!(
        t.log_text().contains("; keeping the auth_users in use"),
        "{}",
        t.log_text()
    );
    let mut c = crate::common::Client::connect(t.submission_addr());
    c.hello();
    let mut s = c.starttls(&t.setup.ca_pem());
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    assert_eq!(s.auth_plain("alice", "secret").status(), "235 2.7.0");
}
