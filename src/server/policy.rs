//! Who may send what to whom: pure decisions over the config and the user and
//! alias tables, kept out of the session so that policy can grow without
//! touching the protocol (as Postfix keeps smtpd_check.c apart from smtpd.c).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::aliases::Aliases;
use crate::config::Config;
use crate::smtp::address::{Domain, ForwardPath, Mailbox};
use crate::smtp::reply::{self, Reply};

/// A file that is re-read when its modification time changes, so edits to
/// local_users or aliases take effect without a restart.
struct Cached<T> {
    path: PathBuf,
    state: Mutex<Option<(Option<SystemTime>, T)>>,
    load: fn(&str) -> T,
}

impl<T: Clone> Cached<T> {
    fn new(path: PathBuf, load: fn(&str) -> T) -> Cached<T> {
        Cached {
            path,
            state: Mutex::new(None),
            load,
        }
    }

    fn get(&self) -> Option<T> {
        let mtime = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, value)) = st.as_ref() {
            if *seen == mtime && mtime.is_some() {
                return Some(value.clone());
            }
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let value = (self.load)(&text);
                *st = Some((mtime, value.clone()));
                Some(value)
            }
            Err(e) => {
                log::warn!("cannot read {}: {e}", self.path.display());
                // Keep answering from the last good copy rather than rejecting everyone.
                st.as_ref().map(|(_, v)| v.clone())
            }
        }
    }
}

fn load_users(text: &str) -> std::sync::Arc<HashSet<String>> {
    let names = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_lowercase)
        .collect();
    std::sync::Arc::new(names)
}

fn load_aliases(text: &str) -> std::sync::Arc<Aliases> {
    let (aliases, errors) = Aliases::parse(text);
    for e in errors {
        log::warn!("aliases line {}: {}", e.line, e.what);
    }
    std::sync::Arc::new(aliases)
}

pub struct Policy {
    users: Option<Cached<std::sync::Arc<HashSet<String>>>>,
    aliases: Option<Cached<std::sync::Arc<Aliases>>>,
}

impl Policy {
    pub fn new(cfg: &Config) -> Policy {
        Policy {
            users: cfg.local_users.clone().map(|p| Cached::new(p, load_users)),
            aliases: cfg.aliases.clone().map(|p| Cached::new(p, load_aliases)),
        }
    }

    /// Whether `local` names a user or alias here. Like Postfix, a name that
    /// is unknown as written is tried again in lower case.
    pub fn local_exists(&self, local: &str) -> bool {
        let lower = local.to_lowercase();
        let aliases = self.aliases.as_ref().and_then(Cached::get);
        if aliases.as_ref().is_some_and(|a| a.contains(&lower)) {
            return true;
        }
        match &self.users {
            // The file's names match in any case, as Postfix folds case before lookups.
            Some(users) => users.get().is_some_and(|u| u.contains(&lower)),
            None => crate::sys::account_exists(local) || crate::sys::account_exists(&lower),
        }
    }

    /// Alias targets for EXPN.
    pub fn expand(&self, name: &str) -> Option<Vec<String>> {
        let aliases = self.aliases.as_ref().and_then(Cached::get)?;
        aliases.get(name).map(<[String]>::to_vec)
    }

    /// RFC 5321 4.1.1.3 and the relay rules: Ok, or the reply refusing `rcpt`.
    pub fn check_recipient(
        &self,
        cfg: &Config,
        client: Option<IpAddr>,
        rcpt: &ForwardPath,
    ) -> Result<(), Reply> {
        let mbox = match rcpt {
            // RFC 5321 4.5.1: postmaster must always be accepted.
            ForwardPath::Postmaster => return Ok(()),
            ForwardPath::Mailbox(m) => m,
        };
        if is_local(cfg, mbox) {
            if mbox.local().eq_ignore_ascii_case("postmaster") {
                return Ok(());
            }
            // A local part with %, ! or a quoted @ is looked up as it stands, so
            // it can only match a real user; it never makes tern relay.
            if self.local_exists(mbox.local()) {
                return Ok(());
            }
            return Err(reply::no_such_user(&mbox.to_string()));
        }
        // Local submission (ternd -i from a pipe, sendmail -bs) counts as trusted.
        let trusted = client.is_none_or(|ip| cfg.may_relay(ip));
        if trusted {
            Ok(())
        } else {
            Err(reply::relay_denied(&mbox.to_string()))
        }
    }
}

/// Whether the mailbox's domain is one of ours. Address literals are never
/// local: tern only answers for the names it is configured with.
pub fn is_local(cfg: &Config, mbox: &Mailbox) -> bool {
    match mbox.domain() {
        Domain::Name(n) => cfg.is_local_domain(n),
        Domain::Literal(_) | Domain::General(_) => false,
    }
}
