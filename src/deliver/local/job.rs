//! What one local delivery is: the target (a Maildir, an mbox, a command),
//! the envelope of the copy, and the account it is written as. Every privilege
//! path (in process, the re-executed child, the root helper) takes a [`Job`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::sys::Passwd;

/// Where one local recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Maildir directory (tmp/ new/ cur/ created if missing, mode 0700).
    Maildir(PathBuf),
    /// An mbox file (created mode 0600 if missing; see `mailspool`).
    Mbox(PathBuf),
    /// A shell command line, run with /bin/sh -c.
    Pipe(String),
}

/// One delivery job.
#[derive(Debug, Clone)]
pub struct Job {
    pub target: Target,
    /// Envelope sender, "" for <>.
    pub sender: String,
    /// The address this copy is for (Delivered-To).
    pub recipient: String,
    /// Run as this user when ternd is root; None = as ternd's own user.
    pub user: Option<Passwd>,
    /// The target is the user's own mailbox, made from the `mailbox` template
    /// (not a file or command an alias names): only then may a missing mbox in
    /// the mail spool be created with more than the user's rights (see
    /// `mailspool`).
    pub mailbox: bool,
    /// The spool's msg/ID file (read-only).
    pub message: PathBuf,
    /// The message's octets at the start of `message` (`env.size`): its seal
    /// follows them.
    pub size: u64,
    /// For Maildir unique names.
    pub hostname: String,
    pub pipe_timeout: Duration,
}

/// Expand the `mailbox` template for a user: `%u` → name, a leading `~` → home;
/// trailing '/' → Maildir, else Mbox. (`%%` → `%`; any other `%x` stays as written.)
///
/// The name comes from the account database, which does not hand out names with '/'.
pub fn mailbox_target(template: &str, user: &Passwd) -> Target {
    let mut out = String::new();
    let mut rest = template;
    if rest == "~" || rest.starts_with("~/") {
        let home = user.home.to_string_lossy();
        out.push_str(home.trim_end_matches('/'));
        rest = rest.get(1..).unwrap_or("");
    }
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.clone().next() {
            Some('u') => {
                chars.next();
                out.push_str(&user.name);
            }
            Some('%') => {
                chars.next();
                out.push('%');
            }
            _ => out.push('%'),
        }
    }
    if out.ends_with('/') {
        Target::Maildir(PathBuf::from(out))
    } else {
        Target::Mbox(PathBuf::from(out))
    }
}

impl Target {
    /// The word for this kind of target in the delivery child's arguments
    /// and the helper's requests.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Maildir(_) => "maildir",
            Target::Mbox(_) => "mbox",
            Target::Pipe(_) => "pipe",
        }
    }

    /// A target from its kind word and its path or command.
    pub fn from_parts(kind: &str, value: &str) -> Result<Target, String> {
        match kind {
            "maildir" => Ok(Target::Maildir(PathBuf::from(value))),
            "mbox" => Ok(Target::Mbox(PathBuf::from(value))),
            "pipe" => Ok(Target::Pipe(value.to_owned())),
            _ => Err(format!("unknown kind {kind:?}")),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Maildir(p) => write!(f, "maildir {}", p.display()),
            Target::Mbox(p) => write!(f, "mbox {}", p.display()),
            Target::Pipe(c) => write!(f, "|{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::local::testutil::user;
    use std::path::Path;

    #[test]
    fn mailbox_template_expansion() {
        let u = user(Path::new("/home/bob"));
        assert_eq!(
            mailbox_target("/var/mail/%u", &u),
            Target::Mbox("/var/mail/bob".into())
        );
        assert_eq!(
            mailbox_target("~/Maildir/", &u),
            Target::Maildir("/home/bob/Maildir/".into())
        );
        assert_eq!(
            mailbox_target("~/mbox", &u),
            Target::Mbox("/home/bob/mbox".into())
        );
        assert_eq!(
            mailbox_target("/srv/mail/%u/", &u),
            Target::Maildir("/srv/mail/bob/".into())
        );
        assert_eq!(
            mailbox_target("/m/%%u-%u%x%", &u),
            Target::Mbox("/m/%u-bob%x%".into())
        );
        // Only a leading ~ means home.
        assert_eq!(mailbox_target("/m/~%u", &u), Target::Mbox("/m/~bob".into()));
        let root = user(Path::new("/"));
        assert_eq!(
            mailbox_target("~/Maildir/", &root),
            Target::Maildir("/Maildir/".into())
        );
    }
}
