//! The mail spool directory (/var/mail): how the delivery child of a user's
//! own mbox gets to create it there when it is missing, with Postfix local(8)'s
//! rule (its `deliver_mailbox_file`), which is what Debian's layout expects:
//!
//! - a directory anyone may write (a sticky 1777 /var/mail), or the user's
//!   home: the child runs as the user, who may create the file;
//! - a directory its group may write (Debian's /var/mail, root:mail 2775):
//!   the child runs as the user *with that group* (never group root), so it
//!   can create the mailbox (user:mail, 0600, as Postfix leaves it) and take
//!   the dotlock mutt and mailx look for; the group is the child's only one,
//!   and the user cannot ptrace a process whose group is not theirs;
//! - otherwise (root:root 0755): root creates the missing file for the user
//!   before the child runs, where only root can redirect the path.
//!
//! Only the user's own mailbox (the `mailbox` template's) gets this; a file an
//! alias names is written with the rights of its account alone.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path};

use crate::sys::{self, Passwd};

/// With which rights the child writes a user's own mbox at `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// As the user, with their own group.
    User,
    /// As the user, with this group (the spool directory's) instead of theirs.
    Group(u32),
    /// As the user, after root created a missing mailbox for them.
    RootCreates,
}

/// Postfix's rule for `path`, a user's own mbox (see the module comment).
pub(super) fn access(path: &Path, user: &Passwd) -> Access {
    let home = user.home.as_path();
    if home != Path::new("/") && !home.as_os_str().is_empty() && path.starts_with(home) {
        return Access::User;
    }
    let Some(meta) = path.parent().and_then(|d| fs::metadata(d).ok()) else {
        return Access::User;
    };
    let mode = meta.mode();
    if mode & 0o002 != 0 {
        Access::User
    } else if mode & 0o020 != 0 && meta.gid() != 0 {
        Access::Group(meta.gid())
    } else {
        Access::RootCreates
    }
}

/// Root creates a missing mbox for the user (theirs, their group, mode 0600), as
/// Postfix's local(8) does where the user may not create files. Only where no one
/// but root can redirect the path (see `root_controlled`), and with
/// O_EXCL|O_NOFOLLOW, so a planted name is never followed. Errors are left for
/// the child to report.
pub(super) fn precreate(path: &Path, user: &Passwd) {
    if sys::uids().1 != 0 || path == Path::new("/dev/null") {
        return;
    }
    let Some(dir) = path.parent() else { return };
    if !root_controlled(dir) {
        return;
    }
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    if let Ok(f) = created {
        if std::os::unix::fs::fchown(&f, Some(user.uid), Some(user.gid)).is_err() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Whether only root can change what `dir` names: an absolute path without `..`
/// whose every directory is a real directory owned by root, and whose ancestors
/// are not writable by group or others unless sticky (where only an entry's owner,
/// root, may rename it). `dir` itself may be writable: the file is made with O_EXCL.
fn root_controlled(dir: &Path) -> bool {
    if !dir.is_absolute() || dir.components().any(|c| c == Component::ParentDir) {
        return false;
    }
    dir.ancestors()
        .enumerate()
        .all(|(i, a)| match fs::symlink_metadata(a) {
            Ok(m) => {
                let open = m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0;
                m.file_type().is_dir() && m.uid() == 0 && (i == 0 || !open)
            }
            Err(_) => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::local::testutil::user;
    use std::os::unix::fs::PermissionsExt;

    fn dir_with_mode(parent: &Path, name: &str, mode: u32) -> std::path::PathBuf {
        let d = parent.join(name);
        fs::create_dir(&d).expect("mkdir");
        fs::set_permissions(&d, fs::Permissions::from_mode(mode)).expect("chmod");
        d
    }

    #[test]
    fn postfix_rule_for_the_spool_directory() {
        let base = tempfile::tempdir().expect("tempdir");
        let home = dir_with_mode(base.path(), "home", 0o755);
        let u = user(&home);
        // The user's home: as the user, whatever its mode.
        assert_eq!(access(&home.join("mbox"), &u), Access::User);
        // Sticky and world-writable (1777): as the user.
        let open = dir_with_mode(base.path(), "open", 0o1777);
        assert_eq!(access(&open.join("bob"), &u), Access::User);
        // Group-writable (2775): as the user with the directory's group.
        let spool = dir_with_mode(base.path(), "spool", 0o2775);
        let gid = fs::metadata(&spool).expect("stat").gid();
        let want = if gid == 0 {
            Access::RootCreates
        } else {
            Access::Group(gid)
        };
        assert_eq!(access(&spool.join("bob"), &u), want);
        if sys::uids().1 == 0 {
            std::os::unix::fs::chown(&spool, Some(0), Some(8)).expect("chown");
            assert_eq!(access(&spool.join("bob"), &u), Access::Group(8));
            // Never group root.
            std::os::unix::fs::chown(&spool, Some(0), Some(0)).expect("chown");
            assert_eq!(access(&spool.join("bob"), &u), Access::RootCreates);
        }
        // Writable by its owner only: root creates the file.
        let closed = dir_with_mode(base.path(), "closed", 0o755);
        assert_eq!(access(&closed.join("bob"), &u), Access::RootCreates);
        // No such directory: as the user, who gets the error.
        assert_eq!(access(&base.path().join("none/bob"), &u), Access::User);
    }

    #[test]
    fn root_controlled_directories() {
        assert!(!root_controlled(Path::new("relative")));
        assert!(!root_controlled(Path::new("/var/../tmp")));
        let dir = tempfile::tempdir().expect("tempdir");
        let open = dir.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
        fs::create_dir(open.join("sub")).expect("mkdir");
        // A world-writable, non-sticky ancestor lets anyone swap `sub`.
        assert!(!root_controlled(&open.join("sub")));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&open, &link).expect("symlink");
        assert!(!root_controlled(&link));
        assert!(!root_controlled(&dir.path().join("missing")));
        if fs::metadata("/").is_ok_and(|m| m.uid() == 0) {
            assert!(root_controlled(Path::new("/")));
        }
    }
}
