//! Local delivery: one queued message to one local mailbox — a Maildir, an mbox
//! file, or a `|command` pipe — ending in an [`Outcome`].
//!
//! Every copy is `Return-Path: <sender>` (RFC 5321 4.4: the delivering MTA adds it),
//! `Delivered-To: recipient`, then the spool's bytes (which begin with our
//! Received: header). The spool holds LF text, and so does every copy.
//!
//! Privileges: when ternd runs as root and the job names a user, the writing
//! happens in a child process that runs as that user (uid, gid, no supplementary
//! groups): ternd re-executes itself as `ternd --local-delivery ...` (see
//! [`child_main`]) with the spool file as stdin and reports one status line on
//! stderr. Otherwise the writing happens in-process. Both paths run the same code
//! ([`write`]).
//!
//! Failure policy: a misconfiguration (missing or unwritable directory, a symlinked
//! mbox, a locked mailbox) is temporary, so mail waits in the queue for an admin
//! instead of bouncing. Only a command that exits with a permanent status fails
//! permanently.
//!
//! The rooms: [`job`] says what a delivery is; this module chooses the
//! privilege path; [`helper`] (a daemon that dropped root asks a root process),
//! [`child`] (the re-executed delivery child) and [`write`] (in this process)
//! are the three paths; [`maildir`], [`mbox`] and [`pipe`] write the copy;
//! [`mailspool`] says who may create a missing mailbox in /var/mail.

use std::fs::File;

use crate::deliver::outcome::{self, Outcome};
use crate::sys;

mod child;
mod copy;
pub mod helper;
mod job;
mod maildir;
mod mailspool;
mod mbox;
mod pipe;
#[cfg(test)]
mod testutil;
mod write;

pub use child::{child_main, deliver_in_child, own_executable, CHILD_FLAG};
pub use job::{mailbox_target, Job, Target};

use write::{deliver_here, Delivery};

/// Deliver one job. As root with `job.user` set, in a child running as that user
/// (ternd re-executed, see [`deliver_in_child`]); otherwise in this process.
pub fn deliver(job: &Job) -> Outcome {
    if let Some(user) = &job.user {
        // A daemon that dropped root asks its root helper (see helper).
        if let Some(helper) = helper::installed() {
            return helper.deliver(job, &user.name);
        }
        if sys::uids().1 == 0 {
            return match child::own_executable() {
                Ok(program) => deliver_in_child(job, user, &program),
                Err(e) => outcome::local_error(format!("cannot find ternd's executable: {e}")),
            };
        }
    }
    deliver_in_process(job)
}

/// Deliver in this process, reading the spool file.
fn deliver_in_process(job: &Job) -> Outcome {
    let message = match File::open(&job.message) {
        Ok(f) => std::io::Read::take(f, job.size),
        Err(e) => {
            return outcome::cannot_open_message(&job.message, &e);
        }
    };
    deliver_here(&Delivery::in_process(job), Box::new(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use testutil::{delivered, job, user, BODY, SYSTEM_ERROR};

    #[test]
    fn pipe_job_as_a_named_user_in_process() {
        let home = tempfile::tempdir().expect("tempdir");
        let out = home.path().join("who");
        let mut j = job(
            home.path(),
            Target::Pipe(format!("echo $USER $HOME > '{}'", out.display())),
            BODY,
        );
        j.user = Some(user(home.path()));
        assert_eq!(deliver_in_process(&j), delivered("delivered to command"));
        assert_eq!(
            fs::read_to_string(&out).expect("read"),
            format!("bob {}\n", home.path().display())
        );
    }

    #[test]
    fn missing_spool_file_is_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = job(dir.path(), Target::Mbox(dir.path().join("bob")), BODY);
        j.message = dir.path().join("gone");
        let o = deliver(&j);
        assert_eq!(o.status(), SYSTEM_ERROR, "{o:?}");
        assert!(o.detail().starts_with("cannot open message"), "{o:?}");
    }
}
