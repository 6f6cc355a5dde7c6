//! The pid file that keeps a second ternd from starting on the same spool
//! (and names the running one for rc scripts).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A locked pid file; the lock lasts as long as this value (and the process).
pub struct PidFile {
    path: PathBuf,
    _file: File,
    /// Set in a forked child: closing its copy must not remove the file.
    leave: bool,
}

impl PidFile {
    /// Create or take over `path`, lock it, and write our pid. Another live
    /// ternd holding the lock makes this fail with a message naming its pid.
    pub fn create(path: &Path) -> Result<PidFile, String> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            // Root opens the spool's lock file in a directory the daemon's
            // account owns: never through a symlink, and never a file with
            // another name (a hard link), which the write below would truncate.
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| format!("cannot open pid file {}: {e}", path.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot open pid file {}: {e}", path.display()))?;
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(format!(
                "pid file {}: not a regular file with one link",
                path.display()
            ));
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut old = String::new();
                let _ = file.read_to_string(&mut old);
                return Err(format!(
                    "another ternd is running (pid {}, pid file {})",
                    old.trim(),
                    path.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock pid file {}: {e}", path.display()))
            }
        }
        let write = |f: &mut File| -> io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()
        };
        write(&mut file).map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        Ok(PidFile {
            path: path.to_owned(),
            _file: file,
            leave: false,
        })
    }

    /// Rewrite the pid (after detaching, the pid changed but the lock is ours).
    pub fn update(&mut self) -> Result<(), String> {
        let f = &mut self._file;
        let r = f
            .set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| writeln!(f, "{}", std::process::id()))
            .and_then(|()| f.sync_all());
        r.map_err(|e| format!("cannot write pid file {}: {e}", self.path.display()))
    }

    /// Give the file to `uid`:`gid`, through the open descriptor (the name may
    /// have been replaced since it was opened).
    pub fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::fchown(&self._file, Some(uid), Some(gid))
    }

    /// Close this copy without removing the file: for a forked child (the
    /// delivery helper), so that the lock goes when the daemon goes, and a
    /// daemon restarted at once does not find it still held.
    pub fn close_in_child(mut self) {
        self.leave = true;
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if !self.leave {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_locks_out_a_second_instance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ternd.pid");
        let first = PidFile::create(&path).expect("first");
        let pid = std::fs::read_to_string(&path).expect("read");
        assert_eq!(pid.trim(), std::process::id().to_string());
        let err = PidFile::create(&path).err().expect("second must fail");
        assert!(err.contains("another ternd is running"), "{err}");
        drop(first);
        assert!(!path.exists());
        // A stale file from a dead process is taken over.
        std::fs::write(&path, "999999\n").expect("write");
        let again = PidFile::create(&path).expect("take over stale file");
        drop(again);
        // Neither a symlink nor a second name of another file is opened (and
        // truncated): the daemon's account may plant either in the spool.
        let other = dir.path().join("precious");
        std::fs::write(&other, "keep\n").expect("write");
        std::os::unix::fs::symlink(&other, &path).expect("symlink");
        assert!(PidFile::create(&path).is_err());
        std::fs::remove_file(&path).expect("rm");
        std::fs::hard_link(&other, &path).expect("link");
        assert!(PidFile::create(&path).is_err());
        assert_eq!(std::fs::read_to_string(&other).expect("read"), "keep\n");
    }
}
