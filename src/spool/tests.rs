use super::*;
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use tempfile::TempDir;

fn spool() -> (TempDir, Spool) {
    let dir = TempDir::new().unwrap();
    let s = Spool::open(&dir.path().join("spool")).unwrap();
    (dir, s)
}

fn envelope(id: &QueueId, rcpts: &[&str]) -> Envelope {
    let mut e = Envelope::new(id.clone(), "alice@example.org".into(), 1_700_000_000);
    e.client_addr = Some("192.0.2.1".parse().unwrap());
    for r in rcpts {
        e.recipients.push(Recipient::new((*r).into()));
    }
    e
}

fn queue(s: &Spool, body: &[u8]) -> QueueId {
    let mut inc = s.begin().unwrap();
    inc.write_all(body).unwrap();
    let id = inc.id().clone();
    let mut env = envelope(&id, &["bob@example.net"]);
    env.size = inc.bytes_written();
    inc.commit(&env).unwrap();
    id
}

/// The sorted names in `dir`; for the tests of the spool's submodules too.
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn open_creates_layout() {
    let (_d, s) = spool();
    for sub in SUBDIRS {
        let m = fs::metadata(s.root().join(sub)).unwrap();
        assert!(m.is_dir());
        let want = if sub == MAILDROP { MAILDROP_MODE } else { 0o700 };
        assert_eq!(m.permissions().mode() & 0o7777, want, "{sub}");
    }
    assert_eq!(
        fs::metadata(s.root()).unwrap().permissions().mode() & 0o777,
        ROOT_MODE
    );
    assert!(names(&s.root().join(TMP)).is_empty(), "probe left behind");
    // Opening again is fine, and an existing layout is left as it is.
    Spool::open(s.root()).unwrap();
}

#[test]
fn owner_check_names_loose_modes_and_wrong_owners() {
    let (_d, s) = spool();
    let me = sys::uids().1;
    check_owner(s.root(), me, false).unwrap();
    let env = s.root().join(ENV);
    fs::set_permissions(&env, fs::Permissions::from_mode(0o777)).unwrap();
    let e = check_owner(s.root(), me, false).unwrap_err();
    assert!(e.contains("env: mode 0777 lets group or others write it"), "{e}");
    fs::set_permissions(&env, fs::Permissions::from_mode(0o700)).unwrap();
    let md = s.root().join(MAILDROP);
    fs::set_permissions(&md, fs::Permissions::from_mode(0o700)).unwrap();
    let e = check_owner(s.root(), me, false).unwrap_err();
    assert!(e.contains("maildrop: mode 0700, should be 1730"), "{e}");
    fs::set_permissions(&md, fs::Permissions::from_mode(MAILDROP_MODE)).unwrap();
    let e = check_owner(s.root(), me + 1, false).unwrap_err();
    assert!(
        e.contains(&format!("owned by uid {me}, should be uid {}", me + 1)),
        "{e}"
    );
}

#[test]
fn open_rejects_non_directory() {
    let d = TempDir::new().unwrap();
    let file = d.path().join("file");
    fs::write(&file, b"x").unwrap();
    let e = Spool::open(&file).unwrap_err().to_string();
    assert!(
        e.contains(&file.display().to_string()) && e.contains("not a directory"),
        "{e}"
    );
    // A subdirectory that is a file.
    let root = d.path().join("s");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("env"), b"x").unwrap();
    let e = Spool::open(&root).unwrap_err().to_string();
    assert!(e.contains("/s/env: not a directory"), "{e}");
}

#[test]
fn commit_list_load_read() {
    let (_d, s) = spool();
    assert!(s.list().unwrap().is_empty());
    let body = b"Subject: hi\n\nhello\n".repeat(10_000); // bigger than the buffer
    let mut inc = s.begin().unwrap();
    let id = inc.id().clone();
    assert!(s.message_path(&id).exists());
    assert!(s.list().unwrap().is_empty());
    inc.write_all(&body).unwrap();
    assert_eq!(inc.bytes_written(), body.len() as u64);
    let mut env = envelope(&id, &["bob@example.net", "\"odd one\"@example.com"]);
    env.size = inc.bytes_written();
    inc.commit(&env).unwrap();

    assert_eq!(s.list().unwrap(), vec![id.clone()]);
    assert_eq!(s.load(&id).unwrap(), env);
    assert_eq!(s.read_message(&env).unwrap(), body);
    // The file holds the body, then the seal: the envelope as committed.
    let file = fs::read(s.message_path(&id)).unwrap();
    assert_eq!(file.get(..body.len()), Some(&body[..]));
    let after = String::from_utf8_lossy(&file[body.len()..]);
    assert!(after.starts_with(&env.to_text()), "{after}");
    assert!(after.contains("\ntern-seal 1 Q "), "{after}");
    assert_eq!(s.message_path(&id), s.root().join("msg").join(id.as_str()));
    assert!(names(&s.root().join(TMP)).is_empty());
    for f in [s.message_path(&id), s.root().join(ENV).join(id.as_str())] {
        assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&f).unwrap().nlink(), 1);
    }
    // Nothing for recover to do after a clean commit.
    assert_eq!(s.recover().unwrap(), RecoverStats::default());
    assert_eq!(s.list().unwrap(), vec![id]);
}

use std::os::unix::fs::MetadataExt;

#[test]
fn empty_body_commits() {
    let (_d, s) = spool();
    let id = queue(&s, b"");
    assert_eq!(s.read_message(&s.load(&id).unwrap()).unwrap(), b"");
}

#[test]
fn drop_without_commit_leaves_nothing() {
    let (_d, s) = spool();
    let mut inc = s.begin().unwrap();
    inc.write_all(b"partial").unwrap();
    drop(inc);
    let mut inc = s.begin().unwrap();
    inc.write_all(&vec![b'x'; 200_000]).unwrap();
    inc.flush().unwrap();
    drop(inc);
    for sub in [TMP, MSG, ENV] {
        assert!(names(&s.root().join(sub)).is_empty(), "{sub}");
    }
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn commit_with_wrong_id_or_no_recipients_fails_cleanly() {
    let (_d, s) = spool();
    let mut inc = s.begin().unwrap();
    inc.write_all(b"body\n").unwrap();
    let other = QueueId::generate();
    let e = inc.commit(&envelope(&other, &["bob@example.net"])).unwrap_err();
    assert!(e.to_string().contains("is not the message's id"), "{e}");
    assert!(!e.is_no_space() && e.io().is_none());

    let mut inc = s.begin().unwrap();
    inc.write_all(b"body\n").unwrap();
    let id = inc.id().clone();
    let e = inc.commit(&envelope(&id, &[])).unwrap_err();
    assert!(e.to_string().contains("no recipients"), "{e}");

    for sub in [TMP, MSG, ENV] {
        assert!(names(&s.root().join(sub)).is_empty(), "{sub}");
    }
}

#[test]
fn failed_write_is_never_committed() {
    let (_d, s) = spool();
    let mut inc = s.begin().unwrap();
    inc.write_all(b"half a mess").unwrap();
    // As if the disk filled up under BufWriter.
    let _ = inc.fail(io::Error::from_raw_os_error(libc::ENOSPC));
    assert!(inc.write_all(b"more").is_err());
    let id = inc.id().clone();
    let e = inc.commit(&envelope(&id, &["a@b"])).unwrap_err();
    assert!(e.is_no_space(), "{e}");
    assert!(e.to_string().starts_with("spool: write "), "{e}");
    for sub in [TMP, MSG, ENV] {
        assert!(names(&s.root().join(sub)).is_empty(), "{sub}");
    }
    // EINTR does not poison.
    let mut inc = s.begin().unwrap();
    let _ = inc.fail(io::Error::from(io::ErrorKind::Interrupted));
    inc.write_all(b"ok").unwrap();
    let id = inc.id().clone();
    let mut env = envelope(&id, &["a@b"]);
    env.size = 2;
    inc.commit(&env).unwrap();
}

#[test]
fn begin_never_reuses_a_body() {
    let (_d, s) = spool();
    let mut inc = s.begin().unwrap();
    inc.write_all(b"mine").unwrap();
    let id = inc.id().clone();
    // The body is msg/ID itself, created O_EXCL, and not queued until the commit.
    assert!(OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(s.message_path(&id))
        .is_err());
    assert!(s.list().unwrap().is_empty());
    let mut env = envelope(&id, &["a@b"]);
    env.size = 4;
    inc.commit(&env).unwrap();
    assert_eq!(s.read_message(&env).unwrap(), b"mine");
    assert!(names(&s.root().join(TMP)).is_empty());
}

#[test]
fn recover_cleans_up() {
    let (_d, s) = spool();
    let good = queue(&s, b"good\n");
    let root = s.root().to_owned();

    // A crash mid-receive and mid-commit: tmp leftovers, a body with no envelope.
    let crashed = QueueId::generate();
    fs::write(root.join(TMP).join(format!("{crashed}.msg")), b"half").unwrap();
    fs::write(root.join(TMP).join(format!("{crashed}.env")), b"version: 1\nid: ").unwrap();
    fs::create_dir(root.join(TMP).join("junkdir")).unwrap();
    fs::write(root.join(TMP).join("junkdir").join("f"), b"").unwrap();
    fs::write(root.join(MSG).join(crashed.as_str()), b"orphan").unwrap();

    // A held message keeps its body.
    let held = QueueId::generate();
    fs::write(
        root.join(HOLD).join(held.as_str()),
        envelope(&held, &["a@b"]).to_text(),
    )
    .unwrap();
    fs::write(root.join(MSG).join(held.as_str()), b"held").unwrap();

    // A corrupt envelope goes to corrupt/, its body stays for a human.
    let bad = QueueId::generate();
    fs::write(root.join(ENV).join(bad.as_str()), b"version: 1\nid: garbage\n").unwrap();
    fs::write(root.join(MSG).join(bad.as_str()), b"bad").unwrap();
    // So does an env/ name that is not an id, and an envelope without its body.
    fs::write(root.join(ENV).join("notes.txt~"), b"hello").unwrap();
    let nobody = QueueId::generate();
    fs::write(
        root.join(ENV).join(nobody.as_str()),
        envelope(&nobody, &["a@b"]).to_text(),
    )
    .unwrap();
    // An envelope whose text names another id.
    let liar = QueueId::generate();
    fs::write(
        root.join(ENV).join(liar.as_str()),
        envelope(&good, &["a@b"]).to_text(),
    )
    .unwrap();
    fs::write(root.join(MSG).join(liar.as_str()), b"liar").unwrap();
    // An earlier corrupt file of the same name is not replaced.
    fs::write(root.join(CORRUPT).join(bad.as_str()), b"older").unwrap();

    let stats = s.recover().unwrap();
    assert_eq!(
        stats,
        RecoverStats {
            tmp_removed: 3,
            orphans_removed: 1,
            corrupt: 4,
            restored: 0,
            finished: 0,
        }
    );
    assert!(names(&root.join(TMP)).is_empty());
    assert_eq!(s.list().unwrap(), vec![good.clone()]);
    assert_eq!(names(&root.join(ENV)), vec![good.to_string()]);
    let mut msgs = vec![
        good.to_string(),
        held.to_string(),
        bad.to_string(),
        liar.to_string(),
    ];
    msgs.sort();
    assert_eq!(names(&root.join(MSG)), msgs);
    let mut corrupt = vec![
        bad.to_string(),
        format!("{bad}.1"),
        "notes.txt~".to_owned(),
        nobody.to_string(),
        liar.to_string(),
    ];
    corrupt.sort();
    assert_eq!(names(&root.join(CORRUPT)), corrupt);
    assert_eq!(fs::read(root.join(CORRUPT).join(bad.as_str())).unwrap(), b"older");
    assert_eq!(s.read_message(&s.load(&good).unwrap()).unwrap(), b"good\n");

    // Idempotent.
    assert_eq!(s.recover().unwrap(), RecoverStats::default());
}

#[test]
fn update_round_trip() {
    let (_d, s) = spool();
    let id = queue(&s, b"x\n");
    let mut env = s.load(&id).unwrap();
    env.recipients[0].status = RcptStatus::Deferred;
    env.recipients[0].attempts = 1;
    env.recipients[0].next_attempt = Some(1_700_000_600);
    env.recipients[0].last_reply = Some("451 4.7.1 try later".into());
    s.update(&env).unwrap();
    assert_eq!(s.load(&id).unwrap(), env);
    assert!(names(&s.root().join(TMP)).is_empty());
    assert_eq!(s.read_message(&env).unwrap(), b"x\n");

    // Not for messages that are not queued.
    let gone = envelope(&QueueId::generate(), &["a@b"]);
    let e = s.update(&gone).unwrap_err();
    assert!(e.to_string().contains("no such queued message"), "{e}");
    assert!(names(&s.root().join(ENV)).len() == 1);
    // Nor for envelopes that would not parse back.
    env.recipients.clear();
    assert!(s.update(&env).is_err());
    assert_eq!(s.load(&id).unwrap().recipients.len(), 1);
}

#[test]
fn remove_message() {
    let (_d, s) = spool();
    let a = queue(&s, b"a");
    let b = queue(&s, b"b");
    s.remove(&a).unwrap();
    assert_eq!(s.list().unwrap(), vec![b.clone()]);
    assert!(!s.message_path(&a).exists());
    assert!(s.load(&a).unwrap_err().io().is_some());
    // Removing twice errors and touches nothing.
    let e = s.remove(&a).unwrap_err();
    assert_eq!(e.io().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
    assert!(s.message_path(&b).exists());
}

#[test]
fn hold_release_lock() {
    let (_d, s) = spool();
    let id = queue(&s, b"a");
    assert_eq!(s.place(&id).unwrap(), Some(Place::Queued));
    let lock = s.lock(&id).unwrap();
    assert!(s.is_locked(&id));
    s.hold(&id).unwrap();
    drop(lock);
    assert!(!s.is_locked(&id));
    assert_eq!(s.place(&id).unwrap(), Some(Place::Held));
    assert!(s.list().unwrap().is_empty());
    assert_eq!(s.list_held().unwrap(), vec![id.clone()]);
    assert_eq!(s.load_held(&id).unwrap().id, id);
    assert!(s.hold(&id).is_err());
    // recover keeps a held message's body.
    assert_eq!(s.recover().unwrap(), RecoverStats::default());
    s.release(&id).unwrap();
    assert_eq!(s.list().unwrap(), vec![id.clone()]);
    s.hold(&id).unwrap();
    s.remove_held(&id).unwrap();
    assert_eq!(s.place(&id).unwrap(), None);
    assert!(!s.message_path(&id).exists());
    assert!(s.lock(&id).is_err());
}

#[test]
fn list_ignores_foreign_names() {
    let (_d, s) = spool();
    let id = queue(&s, b"a");
    fs::write(s.root().join(ENV).join(".hidden"), b"").unwrap();
    fs::write(s.root().join(ENV).join("0123"), b"").unwrap();
    assert_eq!(s.list().unwrap(), vec![id]);
}

#[test]
fn concurrent_commits() {
    for mode in [SyncMode::Syncfs, SyncMode::Fsync] {
        let (_d, s) = spool();
        concurrent_commits_with(&s.with_sync(mode));
    }
}

fn concurrent_commits_with(s: &Spool) {
    let ids: Vec<QueueId> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|t| {
                sc.spawn(move || {
                    (0..50)
                        .map(|i| queue(s, format!("thread {t} message {i}\n").as_bytes()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids.len(), 400);
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 400);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(s.list().unwrap(), sorted);
    for id in &ids {
        assert_eq!(s.load(id).unwrap().id, *id);
    }
    assert!(names(&s.root().join(TMP)).is_empty());
}

#[test]
fn has_room_guard() {
    let (_d, s) = spool();
    assert!(s.has_room(0, 0));
    assert!(s.has_room(1024, 1));
    let (avail, total, _, _) = sys::fs_space(s.root()).unwrap();
    if total > 0 {
        assert!(!s.has_room(u64::MAX, 0));
        // (Other tests change the free space meanwhile: leave a wide margin.)
        assert!(!s.has_room(avail.saturating_add(total), 0));
        assert!(!s.has_room(0, 100) || avail == total);
    }
    // statvfs failing counts as room.
    let gone = Spool {
        root: s.root().join("no/such/dir"),
        committer: Arc::default(),
        sync: SyncMode::default(),
    };
    assert!(gone.has_room(u64::MAX, 100));
}

#[test]
fn error_display_and_no_space() {
    let e = SpoolError::from_io(
        "write",
        Path::new("/x/tmp/ID.msg"),
        io::Error::from_raw_os_error(libc::ENOSPC),
    );
    assert!(e.is_no_space());
    assert!(
        e.to_string()
            .starts_with("spool: write /x/tmp/ID.msg: No space left on device"),
        "{e}"
    );
    assert!(std::error::Error::source(&e).is_some());
    assert!(
        SpoolError::from_io("w", Path::new("/"), io::Error::from_raw_os_error(libc::EDQUOT)).is_no_space()
    );
    assert!(
        SpoolError::from_io("w", Path::new("/"), io::Error::from(io::ErrorKind::StorageFull)).is_no_space()
    );
    assert!(!SpoolError::from_io("w", Path::new("/"), io::Error::from_raw_os_error(libc::EIO)).is_no_space());
}

/// A commit whose envelope's rename a crash lost: msg/ID durable and sealed, no
/// env/ID (or hold/ID). Recover queues it again, exactly as it was committed.
#[test]
fn recover_queues_a_sealed_orphan_again() {
    let (_d, s) = spool();
    let root = s.root().to_owned();
    let queued = queue(&s, b"Subject: queued\r\n\r\nbody\r\n");
    let before = s.load(&queued).unwrap();
    let held = {
        let mut inc = s.begin().unwrap();
        inc.write_all(b"Subject: held\r\n\r\n").unwrap();
        let id = inc.id().clone();
        let mut env = envelope(&id, &["carol@example.net"]);
        env.size = inc.bytes_written();
        env.hold_reason = Some("quarantine".into());
        inc.commit_held(&env).unwrap();
        id
    };
    // A third whose seal a torn write damaged: never acknowledged, removed.
    let torn = queue(&s, b"Subject: torn\r\n\r\nbody\r\n");
    let mut bytes = fs::read(s.message_path(&torn)).unwrap();
    bytes[3] ^= 1;
    fs::write(s.message_path(&torn), bytes).unwrap();
    for (sub, id) in [(ENV, &queued), (HOLD, &held), (ENV, &torn)] {
        fs::remove_file(root.join(sub).join(id.as_str())).unwrap();
    }

    let stats = s.recover().unwrap();
    assert_eq!((stats.restored, stats.orphans_removed), (2, 1), "{stats:?}");
    assert_eq!(s.list().unwrap(), std::slice::from_ref(&queued));
    assert_eq!(s.list_held().unwrap(), std::slice::from_ref(&held));
    assert_eq!(s.load(&queued).unwrap(), before);
    assert_eq!(
        s.load_held(&held).unwrap().hold_reason.as_deref(),
        Some("quarantine")
    );
    assert_eq!(
        s.read_message(&before).unwrap(),
        b"Subject: queued\r\n\r\nbody\r\n"
    );
    assert!(!s.message_path(&torn).exists());
    assert!(names(&root.join(TMP)).is_empty());
    assert_eq!(s.recover().unwrap(), RecoverStats::default());
}

/// A body written before seals, or one whose seal names another message, is an
/// orphan as before.
#[test]
fn recover_removes_orphans_whose_seal_is_not_their_own() {
    let (_d, s) = spool();
    let root = s.root().to_owned();
    let a = queue(&s, b"a\n");
    let b = queue(&s, b"b\n");
    // b's file, seal and all, under a's name: the seal verifies, its envelope is b's.
    fs::remove_file(root.join(ENV).join(a.as_str())).unwrap();
    fs::remove_file(root.join(ENV).join(b.as_str())).unwrap();
    fs::rename(s.message_path(&b), s.message_path(&a)).unwrap();
    let old = QueueId::generate();
    fs::write(s.message_path(&old), b"Subject: before seals\r\n\r\n").unwrap();
    let stats = s.recover().unwrap();
    assert_eq!((stats.restored, stats.orphans_removed), (0, 2), "{stats:?}");
    assert!(names(&root.join(MSG)).is_empty());
}

/// The reader of a queued message gets its body, never the seal after it.
#[test]
fn a_message_reads_back_without_its_seal() {
    let (_d, s) = spool();
    let id = queue(&s, b"Subject: x\r\nMessage-ID: <m@x>\r\n");
    let env = s.load(&id).unwrap();
    assert!(fs::metadata(s.message_path(&id)).unwrap().len() > env.size);
    assert_eq!(
        s.read_message(&env).unwrap(),
        b"Subject: x\r\nMessage-ID: <m@x>\r\n"
    );
    // A header section with no empty line after it ends where the message does.
    assert_eq!(s.message_id(&env).as_deref(), Some("<m@x>"));
}

/// A retired message whose envelope's unlink a crash lost (msg/ID.done beside
/// env/ID) is finished by recover, not delivered again; one removed by ternctl
/// leaves nothing behind.
#[test]
fn recover_finishes_retired_messages_and_never_queues_them_again() {
    let (_d, s) = spool();
    let root = s.root().to_owned();
    let a = queue(&s, b"a\n");
    let b = queue(&s, b"b\n");
    let a_env = fs::read(root.join(ENV).join(a.as_str())).unwrap();
    let batch = Retired::new();
    s.retire(&a, &batch).unwrap();
    s.retire(&b, &batch).unwrap();
    // The crash: a's unlink lost; neither reaped.
    fs::write(root.join(ENV).join(a.as_str()), a_env).unwrap();
    let stats = s.recover().unwrap();
    assert_eq!(
        (stats.finished, stats.restored, stats.corrupt),
        (2, 0, 0),
        "{stats:?}"
    );
    assert!(names(&root.join(ENV)).is_empty());
    assert!(names(&root.join(MSG)).is_empty());

    let c = queue(&s, b"c\n");
    s.remove(&c).unwrap();
    assert!(names(&root.join(MSG)).is_empty());
    assert!(names(&root.join(ENV)).is_empty());
    assert_eq!(s.recover().unwrap(), RecoverStats::default());
}

/// The envelope's size must be the body's: readers read that many octets.
#[test]
fn a_commit_with_a_wrong_size_is_refused() {
    let (_d, s) = spool();
    let mut inc = s.begin().unwrap();
    inc.write_all(b"four").unwrap();
    let id = inc.id().clone();
    let mut env = envelope(&id, &["bob@example.net"]);
    env.size = 3;
    let e = inc.commit(&env).unwrap_err();
    assert!(
        e.to_string()
            .contains("envelope size 3 is not the 4 octets written"),
        "{e}"
    );
    assert!(names(&s.root().join(MSG)).is_empty());
    assert!(s.list().unwrap().is_empty());
}
