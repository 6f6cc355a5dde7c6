use super::*;
use crate::spool::tests::names;
use crate::spool::{Envelope, Recipient, Spool, TMP};
use std::thread;
use tempfile::TempDir;

const MODES: [SyncMode; 2] = [SyncMode::Syncfs, SyncMode::Fsync];

/// A message as Incoming::commit hands it over: msg/ID linked, tmp/ID.env written.
fn pending(s: &Spool) -> Pending {
    let id = QueueId::generate();
    let tmp_env = s.root().join(TMP).join(format!("{id}.env"));
    let mut env = Envelope::new(id.clone(), "a@example.org".into(), 1_700_000_000);
    env.recipients.push(Recipient::new("b@example.net".into()));
    fs::write(s.message_path(&id), format!("body of {id}\n")).unwrap();
    fs::write(&tmp_env, env.to_text()).unwrap();
    let open = |p: &Path| Arc::new(File::open(p).unwrap());
    Pending {
        files: [open(&s.message_path(&id)), open(&tmp_env)],
        synced: None,
        tmp_env,
        id,
        held: false,
    }
}

#[test]
fn one_failure_fails_only_its_message() {
    for mode in MODES {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let batch: Vec<Pending> = (0..6).map(|_| pending(&s)).collect();
        // 1: its envelope vanished from tmp/.
        fs::remove_file(&batch[1].tmp_env).unwrap();
        // 4: something (a directory, not empty) is in the way in env/.
        let blocker = s.root().join(ENV).join(batch[4].id.as_str());
        fs::create_dir(&blocker).unwrap();
        fs::write(blocker.join("x"), b"").unwrap();
        let refs: Vec<&Pending> = batch.iter().collect();
        let results = commit_batch(&Dirs::new(s.root()), mode, &refs);
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, true, true, false, true]);
        for bad in [1, 4] {
            let e = results[bad].as_ref().unwrap_err();
            assert!(e.to_string().starts_with("spool: rename "), "{e}");
            assert!(!s.message_path(&batch[bad].id).exists());
        }
        assert_eq!(
            results[1].as_ref().unwrap_err().io().map(io::Error::kind),
            Some(io::ErrorKind::NotFound)
        );

        let good: Vec<QueueId> = [0, 2, 3, 5].iter().map(|&i| batch[i].id.clone()).collect();
        fs::remove_file(blocker.join("x")).unwrap();
        fs::remove_dir(&blocker).unwrap();
        assert_eq!(s.list().unwrap(), good);
        for id in &good {
            assert_eq!(s.load(id).unwrap().id, *id);
            assert_eq!(
                fs::read(s.message_path(id)).unwrap(),
                format!("body of {id}\n").as_bytes()
            );
        }
        assert!(names(&s.root().join(TMP)).is_empty());
        assert_eq!(names(&s.root().join(MSG)).len(), 4);
    }
}

/// A file whose fdatasync fails (EINVAL: /dev/null cannot be synced).
fn unsyncable() -> Arc<File> {
    Arc::new(File::open("/dev/null").unwrap())
}

#[test]
fn with_fsync_each_message_stands_or_falls_by_its_own_syncs() {
    let d = TempDir::new().unwrap();
    let s = Spool::open(&d.path().join("spool")).unwrap();
    let mut batch: Vec<Pending> = (0..5).map(|_| pending(&s)).collect();
    // 1: its session's own syncs failed.
    batch[1].synced = Some(Err(SpoolError::other("fsync", &batch[1].tmp_env, "disk on fire")));
    // 2: its session synced it.
    batch[2].synced = Some(Ok(()));
    // 3: comes unsynced and its body cannot be synced; 0 and 4 come unsynced.
    batch[3].files[0] = unsyncable();
    let refs: Vec<&Pending> = batch.iter().collect();
    let results = commit_batch(&Dirs::new(s.root()), SyncMode::Fsync, &refs);
    let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, false, true, false, true]);
    assert!(results[1]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("disk on fire"));
    let e = results[3].as_ref().unwrap_err();
    assert!(e.to_string().starts_with("spool: fsync "), "{e}");
    assert_eq!(e.io().and_then(io::Error::raw_os_error), Some(libc::EINVAL));
    let mut good: Vec<QueueId> = [0, 2, 4].iter().map(|&i| batch[i].id.clone()).collect();
    good.sort();
    assert_eq!(s.list().unwrap(), good);
    assert_eq!(names(&s.root().join(MSG)).len(), 3);
    assert!(names(&s.root().join(TMP)).is_empty());
}

#[test]
fn with_fsync_a_session_syncs_its_own_message_before_it_queues_it() {
    let d = TempDir::new().unwrap();
    let s = Spool::open(&d.path().join("spool")).unwrap();
    let c = Committer::default();
    // Its envelope cannot be synced: refused before it ever reaches a batch, and
    // nothing of it stays.
    let mut bad = pending(&s);
    bad.files[1] = unsyncable();
    let tmp_env = bad.tmp_env.clone();
    let e = c.commit(s.root(), SyncMode::Fsync, bad).unwrap_err();
    assert!(e.to_string().starts_with("spool: fsync "), "{e}");
    assert!(e.to_string().contains(&*tmp_env.to_string_lossy()), "{e}");
    assert!(s.list().unwrap().is_empty());
    assert!(names(&s.root().join(MSG)).is_empty());
    assert!(names(&s.root().join(TMP)).is_empty());
    let good = pending(&s);
    let id = good.id.clone();
    c.commit(s.root(), SyncMode::Fsync, good).unwrap();
    assert_eq!(s.list().unwrap(), [id]);
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
    for mode in MODES {
        let d = TempDir::new().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        let batch: Vec<Pending> = (0..3).map(|_| pending(&s)).collect();
        let refs: Vec<&Pending> = batch.iter().collect();
        // msg/ cannot be opened for its sync: nothing may be renamed into env/.
        let mut dirs = Dirs::new(s.root());
        dirs.msg = s.root().join("gone");
        dirs.msg_fd = None;
        let results = commit_batch(&dirs, mode, &refs);
        for r in &results {
            let e = r.as_ref().unwrap_err().to_string();
            assert!(e.contains("/gone"), "{mode:?}: {e}");
        }
        assert!(s.list().unwrap().is_empty());
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
        fs::remove_file(&batch[17].tmp_env).unwrap();
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
    let null = || Arc::new(File::open("/dev/null").unwrap());
    Pending {
        id: QueueId::generate(),
        tmp_env: PathBuf::from(who),
        held: false,
        files: [null(), null()],
        synced: None,
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
        .map(|p| match p.tmp_env.to_string_lossy().ends_with('!') {
            true => Err(SpoolError::other("commit", &p.tmp_env, "refused")),
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
