//! Maildir delivery (cr.yp.to/proto/maildir.html): a unique name in tmp/,
//! written and fsync'd, then renamed into new/, where readers look.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::copy::{copy_message, CopyError};
use crate::deliver::outcome::{self, Outcome};
use crate::sys;

/// Deliveries by this process, for the Q part of Maildir names.
static MAILDIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The maildir protocol: a unique name in tmp/, written and fsync'd, then renamed
/// into new/, where readers look; a reader never sees a partial file.
pub(super) fn deliver_maildir(dir: &Path, hostname: &str, prefix: &[u8], message: &mut dyn Read) -> Outcome {
    if let Err(e) = make_maildir(dir) {
        return outcome::mailbox_io(&format!("cannot create maildir {}", dir.display()), &e);
    }
    let tmp_dir = dir.join("tmp");
    let new_dir = dir.join("new");
    let mut clashes = 0;
    let (name, mut file) = loop {
        let name = maildir_name(hostname);
        // O_EXCL: a clash (only after a clock step back in a recycled pid) is an
        // error to retry with a new name, never an overwrite.
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp_dir.join(&name));
        match opened {
            Ok(f) => break (name, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && clashes < 10 => clashes += 1,
            Err(e) => {
                return outcome::mailbox_io(&format!("cannot create file in {}", tmp_dir.display()), &e)
            }
        }
    };
    let tmp = tmp_dir.join(&name);
    let written = file
        .write_all(prefix)
        .map_err(CopyError::Write)
        .and_then(|()| copy_message(message, &mut file))
        .and_then(|()| file.sync_all().map_err(CopyError::Write));
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return e.outcome(&tmp);
    }
    let new = new_dir.join(&name);
    if let Err(e) = fs::rename(&tmp, &new) {
        let _ = fs::remove_file(&tmp);
        return outcome::local_io(&format!("cannot rename into {}", new_dir.display()), &e);
    }
    // The rename is the delivery; make it durable before saying so. If that fails,
    // take the message back so the retry does not leave a duplicate.
    if let Err(e) = sync_dir(&new_dir) {
        let _ = fs::remove_file(&new);
        return outcome::local_io(&format!("cannot fsync {}", new_dir.display()), &e);
    }
    outcome::delivered_locally("delivered to maildir")
}

/// Create the Maildir and its tmp/ new/ cur/ (0700) where missing; its parent must exist.
fn make_maildir(dir: &Path) -> io::Result<()> {
    // Missing parents are made too (as Postfix's local does for ~/Maildir/
    // under a mail root), owned by whoever delivers: the user, in the child.
    if !dir.is_dir() {
        DirBuilder::new().mode(0o700).recursive(true).create(dir)?;
    }
    let mut builder = DirBuilder::new();
    builder.mode(0o700);
    for d in [dir.join("tmp"), dir.join("new"), dir.join("cur")] {
        match builder.create(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// `secs.M<usecs>P<pid>Q<counter>R<random>.host`, the modern maildir unique name:
/// unique within this process by the counter, across processes by the pid, across
/// pid reuse by the time and the random part.
fn maildir_name(hostname: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let q = MAILDIR_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut rnd = [0u8; 8];
    let random = match sys::random_bytes(&mut rnd) {
        Ok(()) => format!("R{}", rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        Err(_) => String::new(),
    };
    format!(
        "{}.M{}P{}Q{q}{random}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        maildir_host(hostname)
    )
}

/// The spec: '/' and ':' in the host name become `\057` and `\072` (':' starts the
/// info part of a name in cur/).
fn maildir_host(hostname: &str) -> String {
    if hostname.is_empty() {
        return "localhost".to_owned();
    }
    hostname.replace('/', "\\057").replace(':', "\\072")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::local::deliver;
    use crate::deliver::local::job::Target;
    use crate::deliver::local::testutil::{
        delivered, delivery, here, job, mode, names, with_prefix, FailingReader, BODY, MAILBOX_UNAVAILABLE,
        PREFIX, SYSTEM_ERROR,
    };
    use std::collections::HashSet;
    use std::thread;

    #[test]
    fn maildir_delivery_lands_in_new_with_exact_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = dir.path().join("Maildir");
        let mut j = job(dir.path(), Target::Maildir(md.clone()), BODY);
        j.hostname = "mx/a:b".to_owned();
        assert_eq!(deliver(&j), delivered("delivered to maildir"));
        let new = names(&md.join("new"));
        assert_eq!(new.len(), 1);
        assert!(names(&md.join("tmp")).is_empty());
        assert!(names(&md.join("cur")).is_empty());
        let name = new.first().expect("one file");
        assert!(name.ends_with(".mx\\057a\\072b"), "{name}");
        assert!(name.contains(&format!("P{}Q", std::process::id())), "{name}");
        assert!(name.contains('R') && name.contains(".M"), "{name}");
        let file = md.join("new").join(name);
        assert_eq!(fs::read(&file).expect("read"), with_prefix(BODY));
        assert_eq!(mode(&file), 0o600);
        for d in ["", "tmp", "new", "cur"] {
            assert_eq!(mode(&md.join(d)), 0o700, "{d}");
        }
    }

    #[test]
    fn maildir_null_sender() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = dir.path().join("Maildir");
        let mut d = delivery(Target::Maildir(md.clone()), dir.path());
        d.sender = String::new();
        assert_eq!(here(&d, b"x\n"), delivered("delivered to maildir"));
        let new = names(&md.join("new"));
        let text = fs::read(md.join("new").join(new.first().expect("file"))).expect("read");
        assert_eq!(text, b"Return-Path: <>\nDelivered-To: bob@example.test\nx\n");
    }

    #[test]
    fn maildir_names_are_unique_over_1000_deliveries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = dir.path().join("Maildir");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let md = md.clone();
                let home = dir.path().to_owned();
                thread::spawn(move || {
                    let d = delivery(Target::Maildir(md), &home);
                    (0..250).all(|_| here(&d, b"x\n") == delivered("delivered to maildir"))
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().expect("thread"));
        }
        assert_eq!(names(&md.join("new")).len(), 1000);
        assert!(names(&md.join("tmp")).is_empty());
        let many: HashSet<String> = (0..1000).map(|_| maildir_name("h")).collect();
        assert_eq!(many.len(), 1000);
    }

    #[test]
    fn maildir_failures_are_temporary_and_leave_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A missing parent is created; a parent that is a file cannot be.
        let d = delivery(Target::Maildir(dir.path().join("no/such/Maildir")), dir.path());
        assert!(here(&d, BODY).is_delivered());
        fs::write(dir.path().join("plain"), b"").expect("write");
        let d = delivery(Target::Maildir(dir.path().join("plain/Maildir")), dir.path());
        let o = here(&d, BODY);
        assert_eq!(o.status(), MAILBOX_UNAVAILABLE, "{o:?}");
        assert!(o.detail().contains("cannot create maildir"), "{o:?}");
        // A file where the Maildir should be.
        fs::write(dir.path().join("file"), b"").expect("write");
        let d = delivery(Target::Maildir(dir.path().join("file")), dir.path());
        assert!(here(&d, BODY).is_temporary());
        // A read error half-way: nothing in tmp/ or new/.
        let md = dir.path().join("Maildir");
        let o = deliver_maildir(&md, "h", PREFIX, &mut FailingReader { good: 200_000 });
        assert_eq!(o.status(), SYSTEM_ERROR, "{o:?}");
        assert!(o.detail().contains("injected read error"), "{o:?}");
        assert!(names(&md.join("tmp")).is_empty());
        assert!(names(&md.join("new")).is_empty());
    }
}
