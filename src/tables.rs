//! The lookup tables that decide who exists here: the `local_users` file and
//! the aliases file, re-read whenever their files change, so edits take
//! effect without a restart. Shared by the SMTP policy (who may receive) and
//! local delivery (where it goes).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::aliases::Aliases;
use crate::config::Config;

/// What identifies a version of a file: its modification time and size.
type Stamp = Option<(SystemTime, u64)>;

/// A file that is re-read when its modification time or size changes.
pub(crate) struct Cached<T> {
    path: PathBuf,
    state: Mutex<Option<(Stamp, Arc<T>)>>,
    load: fn(&str) -> T,
}

impl<T> Cached<T> {
    pub(crate) fn new(path: PathBuf, load: fn(&str) -> T) -> Cached<T> {
        Cached {
            path,
            state: Mutex::new(None),
            load,
        }
    }

    pub(crate) fn get(&self) -> Option<Arc<T>> {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, value)) = st.as_ref() {
            if stamp.is_some() && *seen == stamp {
                return Some(Arc::clone(value));
            }
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let value = Arc::new((self.load)(&text));
                *st = Some((stamp, Arc::clone(&value)));
                Some(value)
            }
            Err(e) => {
                log::warn!("cannot read {}: {e}", self.path.display());
                // Keep answering from the last good copy rather than rejecting everyone.
                st.as_ref().map(|(_, v)| Arc::clone(v))
            }
        }
    }
}

fn load_users(text: &str) -> HashSet<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn load_aliases(text: &str) -> Aliases {
    let (aliases, errors) = Aliases::parse(text);
    for e in errors {
        log::warn!("aliases line {}: {}", e.line, e.what);
    }
    aliases
}

pub struct Tables {
    users: Option<Cached<HashSet<String>>>,
    aliases: Option<Cached<Aliases>>,
    aliases_path: Option<PathBuf>,
}

impl Tables {
    pub fn new(cfg: &Config) -> Tables {
        Tables {
            users: cfg.local.users.clone().map(|p| Cached::new(p, load_users)),
            aliases: cfg.local.aliases.clone().map(|p| Cached::new(p, load_aliases)),
            aliases_path: cfg.local.aliases.clone(),
        }
    }

    /// The current aliases (empty when none are configured or readable).
    pub fn aliases(&self) -> Arc<Aliases> {
        self.aliases.as_ref().and_then(Cached::get).unwrap_or_default()
    }

    pub fn aliases_path(&self) -> Option<&Path> {
        self.aliases_path.as_deref()
    }

    /// Whether `local` is an alias or a user here. Like Postfix, names are
    /// matched in lower case.
    pub fn local_exists(&self, local: &str) -> bool {
        let lower = local.to_lowercase();
        self.aliases().contains(&lower) || self.user_exists(local)
    }

    /// Whether `name` is a user (not an alias): in the `local_users` file
    /// when one is configured (any case), else a system account, as written
    /// or in lower case.
    pub fn user_exists(&self, name: &str) -> bool {
        let lower = name.to_lowercase();
        match &self.users {
            Some(users) => users.get().is_some_and(|u| u.contains(&lower)),
            None => crate::sys::account_exists(name) || crate::sys::account_exists(&lower),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(users: Option<&Path>, aliases: Option<&Path>) -> Tables {
        let mut cfg = Config::default();
        cfg.local.users = users.map(Path::to_path_buf);
        cfg.local.aliases = aliases.map(Path::to_path_buf);
        Tables::new(&cfg)
    }

    #[test]
    fn users_file_lines_comments_and_case() {
        let set = load_users("alice\n  Bob  # the builder\n# carol\n\n\tdave\n");
        let mut names: Vec<&str> = set.iter().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["alice", "bob", "dave"]);
    }

    #[test]
    fn users_and_aliases_from_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        let aliases = dir.path().join("aliases");
        std::fs::write(&users, "alice\nBob\n").unwrap();
        std::fs::write(&aliases, "info: alice\nList: alice, bob\n").unwrap();
        let t = tables(Some(&users), Some(&aliases));
        assert!(t.user_exists("alice"));
        assert!(t.user_exists("ALICE"));
        assert!(t.user_exists("bob"));
        // A system account is not a user when a users file is configured.
        assert!(!t.user_exists("root"));
        assert!(!t.user_exists("info"));
        assert!(t.local_exists("info"));
        assert!(t.local_exists("INFO"));
        assert!(t.local_exists("list"));
        assert!(!t.local_exists("mallory"));
        assert_eq!(t.aliases_path(), Some(aliases.as_path()));
        assert_eq!(t.aliases().get("info"), Some(&["alice".to_owned()][..]));
    }

    #[test]
    fn without_a_users_file_system_accounts_are_users() {
        let t = tables(None, None);
        assert!(t.user_exists("root"));
        assert!(t.user_exists("ROOT"));
        assert!(!t.user_exists("no-such-account-here"));
        assert!(t.aliases().get("root").is_none());
        assert_eq!(t.aliases_path(), None);
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_lost_one_keeps_the_last_copy() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, "alice\n").unwrap();
        let t = tables(Some(&users), None);
        assert!(t.user_exists("alice"));
        assert!(!t.user_exists("carol"));
        // A different size is a new version, whatever the clock's resolution.
        std::fs::write(&users, "alice\ncarol\n").unwrap();
        assert!(t.user_exists("carol"));
        // Unreadable (here: gone): answer from the last good copy rather
        // than refuse everyone.
        std::fs::remove_file(&users).unwrap();
        assert!(t.user_exists("carol"));
        // A file that was never readable knows nobody.
        let t = tables(Some(&dir.path().join("missing")), None);
        assert!(!t.user_exists("alice"));
    }
}
