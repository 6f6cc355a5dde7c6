//! Writing one copy in this process: the code both privilege paths share (the
//! daemon itself, or the re-executed child running as the user). It adds the
//! lines every copy starts with and hands the copy to the Maildir, mbox or
//! pipe writer.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::job::{Job, Target};
use super::maildir::deliver_maildir;
use super::mbox::{deliver_mbox, MboxOptions, LOCK_WAIT};
use super::pipe::{deliver_pipe, SAFE_PATH};
use crate::deliver::outcome::{self, Outcome};
use crate::sys;

/// What the writing code needs, in either process.
#[derive(Debug, Clone)]
pub(super) struct Delivery {
    pub(super) target: Target,
    pub(super) sender: String,
    pub(super) recipient: String,
    pub(super) hostname: String,
    pub(super) pipe_timeout: Duration,
    /// USER and HOME for commands.
    pub(super) user_name: String,
    pub(super) home: PathBuf,
    /// Besides this process's effective uid, who may own an existing mbox.
    pub(super) owner: Option<u32>,
    pub(super) lock_wait: Duration,
}

impl Delivery {
    pub(super) fn in_process(job: &Job) -> Delivery {
        let (user_name, home, owner) = match &job.user {
            Some(u) => (u.name.clone(), u.home.clone(), Some(u.uid)),
            None => match sys::getpwuid(sys::uids().1) {
                Some(u) => (u.name, u.home, None),
                None => (String::new(), PathBuf::from("/"), None),
            },
        };
        Delivery {
            target: job.target.clone(),
            sender: job.sender.clone(),
            recipient: job.recipient.clone(),
            hostname: job.hostname.clone(),
            pipe_timeout: job.pipe_timeout,
            user_name,
            home,
            owner,
            lock_wait: LOCK_WAIT,
        }
    }
}

/// Write one copy in this process: the code both delivery paths share.
pub(super) fn deliver_here(d: &Delivery, mut message: Box<dyn Read + Send>) -> Outcome {
    let prefix = delivery_prefix(&d.sender, &d.recipient);
    match &d.target {
        Target::Maildir(dir) => deliver_maildir(dir, &d.hostname, &prefix, &mut message),
        // The aliases(5) idiom `nobody: /dev/null` discards; it is not a regular file.
        Target::Mbox(path) if path == Path::new("/dev/null") => {
            outcome::delivered_locally("discarded to /dev/null")
        }
        Target::Mbox(path) => {
            let opts = MboxOptions {
                sender: &d.sender,
                owner: d.owner,
                lock_wait: d.lock_wait,
            };
            deliver_mbox(path, &opts, &prefix, &mut message)
        }
        Target::Pipe(command) => {
            deliver_pipe(command, &pipe_env(d), &d.home, prefix, message, d.pipe_timeout)
        }
    }
}

/// The lines every copy starts with. CR and LF are dropped so an address can never
/// Postfix and qmail write Delivered-To without angle brackets; loop checks match that form.
/// start a header of its own.
pub(super) fn delivery_prefix(sender: &str, recipient: &str) -> Vec<u8> {
    format!(
        "Return-Path: <{}>\nDelivered-To: {}\n",
        header_safe(sender),
        header_safe(recipient)
    )
    .into_bytes()
}

fn header_safe(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, '\r' | '\n' | '\0')).collect()
}

/// The whole environment of a command: nothing of ternd's leaks in. The names are
/// Postfix local(8)'s, which .forward and alias programs already expect.
pub(super) fn pipe_env(d: &Delivery) -> Vec<(&'static str, String)> {
    let (local, domain) = d.recipient.rsplit_once('@').unwrap_or((d.recipient.as_str(), ""));
    vec![
        ("SENDER", d.sender.clone()),
        ("RECIPIENT", d.recipient.clone()),
        ("LOCAL", local.to_owned()),
        ("DOMAIN", domain.to_owned()),
        ("HOME", d.home.to_string_lossy().into_owned()),
        ("USER", d.user_name.clone()),
        ("LOGNAME", d.user_name.clone()),
        ("SHELL", "/bin/sh".to_owned()),
        ("PATH", SAFE_PATH.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_cannot_inject_headers() {
        assert_eq!(
            delivery_prefix("a@b\r\nX-Evil: 1", "c@d"),
            b"Return-Path: <a@bX-Evil: 1>\nDelivered-To: c@d\n"
        );
        assert_eq!(Target::Pipe("x".to_owned()).to_string(), "|x");
    }
}
