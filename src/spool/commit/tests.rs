use super::*;
use crate::spool::seal;
use crate::spool::tests::names;
use crate::spool::{Envelope, Recipient, Spool, TMP};
use std::io::Write;
use std::thread;
use tempfile::TempDir;

const MODES: [SyncMode; 2] = [SyncMode::Syncfs, SyncMode::Fsync];

/// A message as Incoming::commit hands it over: msg/ID written and sealed.
fn pending(s: &Spool) -> Pending {
    let id = QueueId::generate();
    let body = format!("body of {id}\n");
    let mut env = Envelope::new(id.clone(), "a@example.org".into(), 1_700_000_000);
    env.recipients.push(Recipient::new("b@example.net".into()));
    env.size = body.len() as u64;
    let env_text = env.to_text();
    let mut crc = seal::Crc::new();
    crc.update(body.as_bytes());
    let path = s.message_path(&id);
    let mut f = File::create(&path).unwrap();
    f.write_all(body.as_bytes()).unwrap();
    f.write_all(&seal::seal(crc, env.size, &env_text, false)).unwrap();
    Pending {
        file: File::open(&path).unwrap(),
        body: path,
        env_text,
        id,
        held: false,
    }
}

/// A name in the way of a rename or a create: a directory, not empty.
fn block(path: &Path) {
    fs::create_dir(path).unwrap();
    fs::write(path.join("x"), b"").unwrap();
}

fn unblock(path: &Path) {
    fs::remove_dir_all(path).unwrap();
}

#[test]
fn one_failure_fails_only_its_message() {
    for mode in MODES {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let batch: Vec<Pending> = (0..6).map(|_| pending(&s)).collect();
        // 1: its envelope cannot be written to tmp/.
        let tmp_blocker = s.root().join(TMP).join(format!("{}.env", batch[1].id));
        block(&tmp_blocker);
        // 4: something is in the way in env/.
        let env_blocker = s.root().join(ENV).join(batch[4].id.as_str());
        block(&env_blocker);
        let refs: Vec<&Pending> = batch.iter().collect();
        let results = commit_batch(&Dirs::new(s.root()), mode, &refs);
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, true, true, false, true]);
        for bad in [1, 4] {
            assert!(!s.message_path(&batch[bad].id).exists());
        }
        let e = results[1].as_ref().unwrap_err();
        assert!(e.to_string().starts_with("spool: create "), "{e}");
        let e = results[4].as_ref().unwrap_err();
        assert!(e.to_string().starts_with("spool: rename "), "{e}");

        let good: Vec<QueueId> = [0, 2, 3, 5].iter().map(|&i| batch[i].id.clone()).collect();
        unblock(&tmp_blocker);
        unblock(&env_blocker);
        assert_eq!(s.list().unwrap(), good);
        for id in &good {
            let env = s.load(id).unwrap();
            assert_eq!(env.id, *id);
            assert_eq!(
                s.read_message(&env).unwrap(),
                format!("body of {id}\n").as_bytes()
            );
        }
        assert!(names(&s.root().join(TMP)).is_empty());
        assert_eq!(names(&s.root().join(MSG)).len(), 4);
    }
}

#[test]
fn with_fsync_each_message_stands_or_falls_by_its_own_fsync() {
    let d = TempDir::new().unwrap();
    let s = Spool::open(&d.path().join("spool")).unwrap();
    let mut batch: Vec<Pending> = (0..3).map(|_| pending(&s)).collect();
    // 1: its file cannot be synced (EINVAL: /dev/null cannot be).
    batch[1].file = File::open("/dev/null").unwrap();
    let refs: Vec<&Pending> = batch.iter().collect();
    let results = commit_batch(&Dirs::new(s.root()), SyncMode::Fsync, &refs);
    let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, false, true]);
    let e = results[1].as_ref().unwrap_err();
    assert!(e.to_string().starts_with("spool: fsync "), "{e}");
    assert_eq!(e.io().and_then(io::Error::raw_os_error), Some(libc::EINVAL));
    let mut good: Vec<QueueId> = [0, 2].iter().map(|&i| batch[i].id.clone()).collect();
    good.sort();
    assert_eq!(s.list().unwrap(), good);
    assert_eq!(names(&s.root().join(MSG)).len(), 2);
    assert!(names(&s.root().join(TMP)).is_empty());
}

#[test]
fn a_held_message_is_queued_into_hold() {
    for mode in MODES {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let mut p = pending(&s);
        p.held = true;
        let id = p.id.clone();
        Committer::default().commit(s.root(), mode, p).unwrap();
        assert!(s.list().unwrap().is_empty());
        assert_eq!(s.list_held().unwrap(), [id]);
    }
}

#[test]
fn a_slow_syncfs_is_logged_at_most_every_ten_minutes() {
    let last = Mutex::new(None);
    assert!(!slow_syncfs_warning(Duration::from_millis(20), &last));
    assert!(lock(&last).is_none());
    assert!(slow_syncfs_warning(Duration::from_millis(800), &last));
    assert!(!slow_syncfs_warning(Duration::from_secs(3), &last));
    // Ten minutes later, the next slow one is told again.
    *lock(&last) = Instant::now().checked_sub(SLOW_SYNCFS_EVERY);
    assert!(lock(&last).is_some());
    assert!(slow_syncfs_warning(Duration::from_secs(1), &last));
}

#[test]
fn a_failed_batch_sync_fails_and_undoes_every_message() {
    for mode in [SyncMode::Syncfs] {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let batch: Vec<Pending> = (0..3).map(|_| pending(&s)).collect();
        let refs: Vec<&Pending> = batch.iter().collect();
        // msg/ cannot be opened for the syncfs: nothing may be renamed into env/.
        let mut dirs = Dirs::new(s.root());
        dirs.msg = s.root().join("gone");
        dirs.msg_fd = None;
        let results = commit_batch(&dirs, mode, &refs);
        for r in &results {
            let e = r.as_ref().unwrap_err().to_string();
            assert!(e.contains("/gone"), "{mode:?}: {e}");
        }
        assert!(s.list().unwrap().is_empty());
        assert!(names(&s.root().join(MSG)).is_empty());
        assert!(names(&s.root().join(TMP)).is_empty());
    }
}

#[test]
fn every_rename_failing_undoes_every_body() {
    for mode in MODES {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let batch: Vec<Pending> = (0..3).map(|_| pending(&s)).collect();
        let refs: Vec<&Pending> = batch.iter().collect();
        // A spool whose env/ has gone: every rename fails, and the undo removes the
        // bodies and the tmp files.
        fs::remove_dir(s.root().join(ENV)).unwrap();
        let results = commit_batch(&Dirs::new(s.root()), mode, &refs);
        assert!(results.iter().all(Result::is_err));
        assert!(names(&s.root().join(MSG)).is_empty());
        assert!(names(&s.root().join(TMP)).is_empty());
    }
}

#[test]
fn many_threads_commit_through_one_committer() {
    within(120, many_threads_commit_through_one_committer_in);
}

fn many_threads_commit_through_one_committer_in() {
    for mode in MODES {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let c = Committer::default();
        let batch: Vec<Pending> = (0..40).map(|_| pending(&s)).collect();
        // One of them cannot be committed: only it fails, whatever batch it lands in.
        let bad = batch[17].id.clone();
        let blocker = s.root().join(ENV).join(bad.as_str());
        block(&blocker);
        let mut ids: Vec<QueueId> = batch
            .iter()
            .map(|p| p.id.clone())
            .filter(|id| *id != bad)
            .collect();
        let failed: Vec<QueueId> = thread::scope(|sc| {
            let hs: Vec<_> = batch
                .into_iter()
                .map(|p| {
                    let (c, root) = (&c, s.root());
                    sc.spawn(move || {
                        let id = p.id.clone();
                        c.commit(root, mode, p).err().map(|_| id)
                    })
                })
                .collect();
            hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(failed, vec![bad.clone()]);
        assert!(!s.message_path(&bad).exists());
        unblock(&blocker);
        ids.sort();
        assert_eq!(s.list().unwrap(), ids);
        for id in &ids {
            assert_eq!(s.load(id).unwrap().id, *id);
        }
        assert!(names(&s.root().join(TMP)).is_empty());
        let st = lock(&c.state);
        assert!(st.queue.is_empty() && !st.busy);
    }
}

/// Runs `f` in a thread of its own and fails if it has not returned within `secs`:
/// a lost wake-up hangs its waiter, and the test must fail instead of hanging.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(e) => panic!("group commit hung ({e}): a lost wake-up?"),
    }
}

/// A message for `Committer::run` with a stand-in commit: no files, and the path
/// names who sent it.
fn fake(who: String) -> Pending {
    Pending {
        id: QueueId::generate(),
        body: PathBuf::from(who),
        held: false,
        file: File::open("/dev/null").unwrap(),
        env_text: String::new(),
    }
}

/// The stand-in commit: fails the messages whose name ends in "!", counts the
/// messages and the batches, and lets the others queue meanwhile.
fn fake_commit(batch: &[&Pending], stats: &Mutex<(usize, usize, usize)>) -> Vec<Result<(), SpoolError>> {
    thread::yield_now();
    let mut s = lock(stats);
    s.0 += batch.len();
    s.1 += 1;
    s.2 = s.2.max(batch.len());
    batch
        .iter()
        .map(|p| match p.body.to_string_lossy().ends_with('!') {
            true => Err(SpoolError::other("commit", &p.body, "refused")),
            false => Ok(()),
        })
        .collect()
}

#[test]
fn no_wake_up_is_lost() {
    const THREADS: usize = 16;
    const ROUNDS: usize = 400;
    let c = Arc::new(Committer::default());
    let stats = Arc::new(Mutex::new((0, 0, 0)));
    let (c2, stats2) = (Arc::clone(&c), Arc::clone(&stats));
    within(120, move || {
        thread::scope(|sc| {
            for t in 0..THREADS {
                let (c, stats) = (&c2, &stats2);
                sc.spawn(move || {
                    for round in 0..ROUNDS {
                        // Every thread gets its own result, good or bad.
                        let bad = (t + round) % 7 == 0;
                        let who = format!("{t}/{round}{}", if bad { "!" } else { "" });
                        let r = c.run(fake(who.clone()), |b| fake_commit(b, stats));
                        match r {
                            Ok(()) => assert!(!bad, "{who}"),
                            Err(e) => assert!(bad && e.to_string().contains(&who), "{who}: {e}"),
                        }
                    }
                });
            }
        });
    });
    let (messages, batches, largest) = *lock(&stats);
    assert_eq!(messages, THREADS * ROUNDS);
    assert!(batches <= messages && largest <= THREADS, "{batches} {largest}");
    let st = lock(&c.state);
    assert!(st.queue.is_empty() && !st.busy);
}

#[test]
fn a_lone_message_is_its_own_batch_and_batches_stay_bounded() {
    let c = Arc::new(Committer::default());
    let sizes = Arc::new(Mutex::new(Vec::new()));
    // Alone: committed in the calling thread, at once.
    let me = thread::current().id();
    c.run(fake("alone".into()), |b| {
        assert_eq!(thread::current().id(), me);
        lock(&sizes).push(b.len());
        b.iter().map(|_| Ok(())).collect()
    })
    .unwrap();

    // The first batch holds its leader until 300 more messages are queued: they
    // go in batches of at most MAX_BATCH, the oldest first.
    const MORE: usize = 300;
    let (c2, sizes2) = (Arc::clone(&c), Arc::clone(&sizes));
    within(120, move || {
        thread::scope(|sc| {
            let c = &c2;
            let sizes = &sizes2;
            sc.spawn(move || {
                c.run(fake("first".into()), |b| {
                    while lock(&c.state).queue.len() < MORE {
                        thread::sleep(std::time::Duration::from_millis(1));
                    }
                    lock(sizes).push(b.len());
                    b.iter().map(|_| Ok(())).collect()
                })
                .unwrap();
            });
            while !lock(&c.state).busy {
                thread::yield_now();
            }
            for i in 0..MORE {
                sc.spawn(move || {
                    c.run(fake(format!("{i}")), |b| {
                        lock(sizes).push(b.len());
                        b.iter().map(|_| Ok(())).collect()
                    })
                    .unwrap();
                });
            }
        });
    });
    assert_eq!(*lock(&sizes), [1, 1, MAX_BATCH, MORE - MAX_BATCH]);
    let st = lock(&c.state);
    assert!(st.queue.is_empty() && !st.busy);
}
