//! Fixtures the local delivery tests share.

use std::fs;
use std::io::{self, Cursor, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::job::{Job, Target};
use super::write::{deliver_here, Delivery};
use crate::deliver::outcome::{Outcome, Stage, Verdict};
use crate::smtp::status::Status;
use crate::sys::{self, Passwd};

pub(super) const BODY: &[u8] =
    b"Received: from x by mx.test; Mon, 23 Nov 2026 14:08:39 +0000\nSubject: hi\n\nHello.\n";
pub(super) const PREFIX: &[u8] = b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.test\n";

pub(super) fn user(home: &Path) -> Passwd {
    let (_, euid) = sys::uids();
    Passwd {
        name: "bob".to_owned(),
        uid: euid,
        gid: 0,
        home: home.to_owned(),
        shell: "/bin/sh".to_owned(),
        gecos: String::new(),
    }
}

pub(super) fn delivery(target: Target, home: &Path) -> Delivery {
    Delivery {
        target,
        sender: "alice@example.org".to_owned(),
        recipient: "bob@example.test".to_owned(),
        hostname: "mx.test".to_owned(),
        pipe_timeout: Duration::from_secs(10),
        user_name: "bob".to_owned(),
        home: home.to_owned(),
        owner: None,
        lock_wait: Duration::from_millis(300),
    }
}

/// A job for `deliver`, with the message written to DIR/msg and followed, as in
/// the spool, by a seal that no delivery may copy.
pub(super) fn job(dir: &Path, target: Target, body: &[u8]) -> Job {
    let message = dir.join("msg");
    let mut file = body.to_vec();
    file.extend_from_slice(SEAL);
    fs::write(&message, file).expect("write message");
    Job {
        target,
        sender: "alice@example.org".to_owned(),
        recipient: "bob@example.test".to_owned(),
        user: None,
        mailbox: false,
        message,
        size: body.len() as u64,
        hostname: "mx.test".to_owned(),
        pipe_timeout: Duration::from_secs(10),
    }
}

/// Stands for the spool's seal after a job's message (see `job`).
pub(super) const SEAL: &[u8] = b"\ntern-seal 1 Q (not part of the message)\n";

pub(super) fn here(d: &Delivery, body: &[u8]) -> Outcome {
    deliver_here(d, Box::new(Cursor::new(body.to_vec())))
}

pub(super) fn with_prefix(body: &[u8]) -> Vec<u8> {
    [PREFIX, body].concat()
}

pub(super) fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub(super) fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

/// Yields `good` bytes of 'x' lines, then fails.
pub(super) struct FailingReader {
    pub(super) good: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.good == 0 {
            return Err(io::Error::other("injected read error"));
        }
        let n = buf.len().min(self.good);
        for (i, b) in buf.iter_mut().take(n).enumerate() {
            *b = if i % 64 == 63 { b'\n' } else { b'x' };
        }
        self.good -= n;
        Ok(n)
    }
}

/// Hands out one byte per read, to cross every chunk boundary.
pub(super) struct Trickle(pub(super) Vec<u8>, pub(super) usize);

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (self.0.get(self.1), buf.first_mut()) {
            (Some(&b), Some(slot)) => {
                *slot = b;
                self.1 += 1;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

/// The RFC 3463 codes local delivery gives, spelt out so that a changed
/// catalog entry fails these tests.
pub(super) const MAILBOX_UNAVAILABLE: Status = Status(4, 2, 0);
pub(super) const MAILBOX_FULL: Status = Status(4, 2, 2);
pub(super) const SYSTEM_ERROR: Status = Status(4, 3, 0);
pub(super) const COMMAND_FAILED: Status = Status(5, 3, 0);

pub(super) fn delivered(detail: &str) -> Outcome {
    Outcome::decoded(Verdict::Delivered, Stage::Local, Status(2, 0, 0), detail)
}

pub(super) fn temporary(status: Status, detail: impl Into<String>) -> Outcome {
    Outcome::decoded(Verdict::Temporary, Stage::Local, status, detail)
}

pub(super) fn permanent(status: Status, detail: impl Into<String>) -> Outcome {
    Outcome::decoded(Verdict::Permanent, Stage::Local, status, detail)
}
