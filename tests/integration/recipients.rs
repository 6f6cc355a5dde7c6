//! RCPT policy: local users and aliases, postmaster, unknown users, relaying
//! only for relay_networks, and no relaying through old routing tricks.

use crate::common::Setup;

#[test]
fn local_users_aliases_and_postmaster() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<x@elsewhere.test>");
    for ok in [
        "alice@example.test",
        "ALICE@Example.TEST",
        "carol@example.test",
        "team@example.test",
        "Sales@example.test",
        "bob@localhost",
        "postmaster@example.test",
        "PostMaster@example.test",
        "Postmaster",
        "postmaster",
        "\"alice\"@example.test",
    ] {
        assert_eq!(c.cmd(&format!("RCPT TO:<{ok}>")).status(), "250 2.1.5", "{ok}");
    }
    for unknown in ["nobody@example.test", "root2@localhost"] {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<{unknown}>")).status(),
            "550 5.1.1",
            "{unknown}"
        );
    }
}

#[test]
fn aliases_file_changes_without_restart() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<x@elsewhere.test>");
    assert_eq!(c.cmd("RCPT TO:<newlist@example.test>").status(), "550 5.1.1");
    // A later mtime, so the change is seen even on coarse-grained filesystems.
    let path = t.setup.path().join("aliases");
    std::fs::write(&path, "newlist: alice\n").unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(c.cmd("RCPT TO:<newlist@example.test>").status(), "250 2.1.5");
}

#[test]
fn relay_from_relay_networks_is_allowed() {
    let t = Setup::new().start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<alice@example.test>");
    assert_eq!(c.cmd("RCPT TO:<someone@remote.test>").status(), "250 2.1.5");
    assert_eq!(c.cmd("RCPT TO:<someone@[192.0.2.1]>").status(), "250 2.1.5");
}

#[test]
fn relay_from_outside_is_denied() {
    let t = Setup::new().set("relay_networks", "192.0.2.0/24").start();
    let mut c = t.connect();
    c.hello();
    c.cmd("MAIL FROM:<x@elsewhere.test>");
    for denied in [
        "someone@remote.test",
        "someone@[192.0.2.1]",
        "u@[IPv6:2001:db8::1]",
    ] {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<{denied}>")).status(),
            "554 5.7.1",
            "{denied}"
        );
    }
    // Old routing tricks through a local domain never relay: they name no user.
    for trick in [
        "someone%remote.test@example.test",
        "\"someone@remote.test\"@example.test",
        "remote.test!someone@example.test",
        "@example.test:someone@remote.test",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{trick}>"));
        assert!(r.code == 550 || r.code == 554, "{trick}: {r:?}");
    }
    // Local mail still works.
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").status(), "250 2.1.5");
    assert!(t.wait_log("Relay access denied"));
}
