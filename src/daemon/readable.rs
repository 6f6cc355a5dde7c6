//! The files a daemon reads after it has dropped root to its `user`: every
//! file-valued key of the key table (`auth_users`, `tls_cert`, `tls_key`,
//! `aliases`, `local_users`, ...; see `config::keys::files`) and the
//! `:include:` files the aliases name. A file that account cannot read used to
//! surface only later, as a 535 for every login or a reload that could not
//! pick up a renewed certificate; start-up and `ternd -n` now say so at once,
//! one line per file naming it, the account and the fix, and a reload keeps
//! the file it had (see `reload.rs`).
//!
//! Whether the account can read a file is asked of the kernel, not worked
//! out from mode bits (ACLs, and every directory on the way, count): a root
//! ternd re-executes itself as that account (`ternd --check-readable
//! PATH...`, [`child_main`]) and each file is opened for reading.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use crate::aliases::Aliases;
use crate::config::{keys, Config};
use crate::deliver::local;
use crate::deliver::outcome::io_text;
use crate::sys::{self, Passwd};

/// argv[1] that makes ternd run [`child_main`].
pub const CHECK_FLAG: &str = "--check-readable";

/// What names a file: its key, or the aliases file that includes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    Key(&'static str),
    Include,
}

/// A file the daemon's account cannot read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unreadable {
    pub(super) source: Source,
    pub(super) path: PathBuf,
    /// The account (user name) and its group, for the fix.
    pub(super) user: String,
    pub(super) group: String,
    pub(super) why: Why,
}

/// Why a file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Why {
    Missing,
    /// A directory on the way may not be entered.
    Directory(PathBuf),
    /// The file itself (its mode, owner, an ACL).
    File(String),
}

impl fmt::Display for Unreadable {
    /// One line: the key, the file, the account, and the fix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p, user, group) = (self.path.display(), &self.user, &self.group);
        match &self.source {
            Source::Key(k) => write!(f, "{k} {p}: ")?,
            Source::Include => write!(f, ":include: file {p} (named in the aliases): ")?,
        }
        match &self.why {
            Why::Missing => write!(f, "no such file; create it or correct the setting"),
            Why::Directory(d) => write!(
                f,
                "not readable by user {user}: directory {} may not be entered; \
                 fix: chmod o+x {}, or keep the file where {user} may go",
                d.display(),
                d.display()
            ),
            Why::File(e) => write!(
                f,
                "not readable by user {user}: {e}; fix: chgrp {group} {p} && chmod g+r {p}"
            ),
        }
    }
}

/// Every file the daemon will read as its `user`, with what names it: the
/// file keys, then the aliases' `:include:` files (read with this process's
/// rights to find them).
pub(super) fn files(cfg: &Config) -> Vec<(Source, PathBuf)> {
    let mut out: Vec<(Source, PathBuf)> = keys::files(cfg)
        .into_iter()
        .map(|(k, p)| (Source::Key(k), p.to_path_buf()))
        .collect();
    if let Some(Ok((aliases, _))) = cfg.local.aliases.as_deref().map(Aliases::load) {
        let read = |p: &Path| std::fs::read_to_string(p);
        out.extend(
            aliases
                .include_files(&read)
                .into_iter()
                .map(|p| (Source::Include, p)),
        );
    }
    out
}

/// The files of `cfg` that `account` cannot read; None: this process's own
/// account (a daemon that is not root, or has dropped root already).
pub(super) fn unreadable(cfg: &Config, account: Option<&Passwd>) -> io::Result<Vec<Unreadable>> {
    let files = files(cfg);
    let (user, gid) = match account {
        Some(pw) => (pw.name.clone(), pw.gid),
        None => {
            let (_, euid) = sys::uids();
            let name = sys::getpwuid(euid).map_or_else(|| format!("uid {euid}"), |pw| pw.name);
            (name, sys::gids().1)
        }
    };
    let group = sys::group_name(gid).unwrap_or_else(|| gid.to_string());
    let paths: Vec<&Path> = files.iter().map(|(_, p)| p.as_path()).collect();
    let failed = match account {
        Some(pw) if sys::uids().1 == 0 && pw.uid != 0 => ask_as(pw, &paths)?,
        _ => paths
            .iter()
            .enumerate()
            .filter_map(|(i, p)| check(p).err().map(|w| (i, w)))
            .collect(),
    };
    Ok(failed
        .into_iter()
        .filter_map(|(i, why)| {
            let (source, path) = files.get(i)?.clone();
            Some(Unreadable {
                source,
                path,
                user: user.clone(),
                group: group.clone(),
                why,
            })
        })
        .collect())
}

/// Can this process read `path`? Err says why not.
fn check(path: &Path) -> Result<(), Why> {
    match File::open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Why::Missing),
        Err(e) => {
            // The first directory from the root down that may not be entered:
            // stat("DIR/.") needs search permission on DIR and all above it.
            let mut dirs: Vec<&Path> = path.ancestors().skip(1).collect();
            dirs.reverse();
            let blocked = dirs.into_iter().find(|d| {
                !d.as_os_str().is_empty()
                    && std::fs::metadata(d.join("."))
                        .is_err_and(|e| e.kind() == io::ErrorKind::PermissionDenied)
            });
            Err(match blocked {
                Some(d) => Why::Directory(d.to_path_buf()),
                None => Why::File(io_text(&e)),
            })
        }
    }
}

/// Run the check as `account`: ternd re-executed with its uid and gid (and no
/// other group, as the daemon will run). Returns (index, why) per failure.
fn ask_as(account: &Passwd, paths: &[&Path]) -> io::Result<Vec<(usize, Why)>> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let program = local::own_executable()?;
    let out = Command::new(program)
        .arg0("ternd")
        .arg(CHECK_FLAG)
        .args(paths)
        .env_clear()
        .current_dir("/")
        .uid(account.uid)
        .gid(account.gid)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "checking the files as {} failed: {}",
            account.name, out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(decode)
        .collect())
}

/// The child's answer for one file: `INDEX missing`, `INDEX dir PATH`,
/// `INDEX file WHY` (an index into its arguments, so paths need no quoting
/// on the way in; a path on the way out is the last field).
fn encode(i: usize, why: &Why) -> String {
    match why {
        Why::Missing => format!("{i} missing"),
        Why::Directory(d) => format!("{i} dir {}", d.display()),
        Why::File(e) => format!("{i} file {e}"),
    }
}

fn decode(line: &str) -> Option<(usize, Why)> {
    let (i, rest) = line.split_once(' ')?;
    let i = i.parse().ok()?;
    let (kind, what) = rest.split_once(' ').unwrap_or((rest, ""));
    let why = match kind {
        "missing" => Why::Missing,
        "dir" => Why::Directory(PathBuf::from(what)),
        "file" => Why::File(what.to_owned()),
        _ => return None,
    };
    Some((i, why))
}

/// `ternd --check-readable PATH...`, run as the daemon's account: one line on
/// standard output per file it cannot read (see `encode`); exit 0.
pub fn child_main(args: &[String]) -> ExitCode {
    let mut out = String::new();
    for (i, p) in args.iter().enumerate() {
        if let Err(why) = check(Path::new(p)) {
            out.push_str(&encode(i, &why).replace('\n', " "));
            out.push('\n');
        }
    }
    print!("{out}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn answers_round_trip() {
        for why in [
            Why::Missing,
            Why::Directory(PathBuf::from("/etc/ssl/private dir")),
            Why::File("Permission denied".to_owned()),
        ] {
            assert_eq!(decode(&encode(3, &why)), Some((3, why)));
        }
        assert_eq!(decode("x file y"), None);
        assert_eq!(decode("1 odd y"), None);
    }

    #[test]
    fn lines_name_the_file_the_account_and_the_fix() {
        let u = |source, why| Unreadable {
            source,
            path: PathBuf::from("/etc/tern/auth_users"),
            user: "tern".to_owned(),
            group: "tern".to_owned(),
            why,
        };
        assert_eq!(
            u(Source::Key("auth_users"), Why::File("Permission denied".into())).to_string(),
            "auth_users /etc/tern/auth_users: not readable by user tern: Permission denied; \
             fix: chgrp tern /etc/tern/auth_users && chmod g+r /etc/tern/auth_users"
        );
        assert_eq!(
            u(Source::Key("tls_key"), Why::Directory("/etc/tern".into())).to_string(),
            "tls_key /etc/tern/auth_users: not readable by user tern: directory /etc/tern may not be \
             entered; fix: chmod o+x /etc/tern, or keep the file where tern may go"
        );
        assert_eq!(
            u(Source::Include, Why::Missing).to_string(),
            ":include: file /etc/tern/auth_users (named in the aliases): no such file; create it or \
             correct the setting"
        );
    }

    #[test]
    fn files_come_from_the_key_table_and_the_includes() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list");
        std::fs::write(&list, "alice\n").unwrap();
        let aliases = dir.path().join("aliases");
        std::fs::write(&aliases, format!("l: :include:{}\n", list.display())).unwrap();
        let text = format!(
            "aliases = {}\nauth_users = /nonexistent/users\n",
            aliases.display()
        );
        let cfg = Config::parse(&text, Path::new("t.conf")).unwrap();
        assert_eq!(
            files(&cfg),
            vec![
                (Source::Key("auth_users"), PathBuf::from("/nonexistent/users")),
                (Source::Key("aliases"), aliases.clone()),
                (Source::Include, list.clone()),
            ]
        );
        // As this process: only the missing one.
        let bad = unreadable(&cfg, None).unwrap();
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].why, Why::Missing);
        assert_eq!(bad[0].source, Source::Key("auth_users"));
        // A directory that may not be entered is named (as root everything opens).
        if sys::uids().1 != 0 {
            let shut = dir.path().join("shut");
            std::fs::create_dir(&shut).unwrap();
            std::fs::write(shut.join("f"), "x").unwrap();
            std::fs::set_permissions(&shut, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert_eq!(check(&shut.join("f")), Err(Why::Directory(shut.clone())));
            std::fs::set_permissions(&shut, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
    }
}
