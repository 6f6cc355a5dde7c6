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
