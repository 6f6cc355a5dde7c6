//! The privileged delivery helper: what lets a ternd started as root give up
//! root and still write each local recipient's copy as that recipient.
//!
//! Before it drops privileges (and before any thread starts) the daemon forks
//! this helper, which stays root. The two talk over one Unix stream socket
//! pair: the daemon sends one request line per delivery, tagged with an id,
//! and the helper answers with one line carrying the same id, in whatever
//! order deliveries finish (each request runs in its own helper thread, so
//! the queue runner's delivery threads do not wait for each other).
//!
//! The helper trusts nothing it is told that would widen what root does:
//! - the message is named by its queue id, and the helper opens
//!   `spool/msg/ID` itself, without following a symlink, and only if it is a
//!   regular file of the daemon's account with one link, so no other file
//!   can be fed to a child;
//! - the user is looked up again (getpwnam), and never runs anything as root:
//!   the only root delivery allowed is root's own mailbox, recomputed from the
//!   `mailbox` template, as the daemon would do when it runs as root;
//! - a missing mbox in the mail spool is created with more than the user's
//!   rights (see `mailspool`) only when the target is that user's mailbox by
//!   the same recomputation, never for an arbitrary path.
//!
//! The delivery itself is the existing re-executed child (`ternd
//! --local-delivery`), spawned by the helper with the user's uid and gid.
//! The helper exits when its socket reaches end of file: when the daemon exits.
//!
//! Wire format: UTF-8 lines of tab-separated fields, each field escaped so
//! that it holds no tab or newline (`\\`, `\t`, `\n`, `\r`).
//! Request: `ID  QUEUEID  KIND  TARGET  SENDER  RECIPIENT  HOSTNAME  TIMEOUT_MS  USER`.
//! Reply:   `ID  RESULT  STATUS  DETAIL`, RESULT one of delivered, temporary, permanent.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use super::child;
use super::job::{mailbox_target, Job, Target};
use crate::deliver::outcome::{self, Outcome, Stage, Verdict};
use crate::smtp::status::Status;
use crate::spool::QueueId;
use crate::sys;

/// A request or reply longer than this is refused: addresses and paths are short.
const LINE_LIMIT: usize = 64 * 1024;

/// One delivery the daemon asks the helper for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    /// The queue id whose msg/ file is delivered.
    pub message: String,
    /// Its octets (`env.size`), before the seal.
    pub size: u64,
    pub target: Target,
    pub sender: String,
    pub recipient: String,
    pub hostname: String,
    pub pipe_timeout: Duration,
    /// The account the copy is written as.
    pub user: String,
}

/// What the helper needs to know, fixed when it is forked.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The spool's root directory.
    pub spool: PathBuf,
    /// The daemon's uid after the drop: the owner of every message file.
    pub owner: u32,
    /// The `mailbox` template.
    pub mailbox: String,
    /// The daemon's pid file, removed when the daemon is gone: the daemon,
    /// no longer root, cannot remove it from /var/run itself.
    pub pid_file: Option<PathBuf>,
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            other => {
                return Err(format!(
                    "bad escape \\{}",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
    }
    Ok(out)
}

fn fields(line: &str) -> Result<Vec<String>, String> {
    line.split('\t').map(unescape).collect()
}

impl Request {
    pub fn encode(&self) -> String {
        let (kind, target) = match &self.target {
            Target::Maildir(p) | Target::Mbox(p) => (self.target.kind(), p.to_string_lossy().into_owned()),
            Target::Pipe(c) => (self.target.kind(), c.clone()),
        };
        let f = [
            self.id.to_string(),
            self.message.clone(),
            kind.to_owned(),
            target,
            self.sender.clone(),
            self.recipient.clone(),
            self.hostname.clone(),
            self.pipe_timeout.as_millis().to_string(),
            self.user.clone(),
            self.size.to_string(),
        ];
        let mut line = f.iter().map(|s| escape(s)).collect::<Vec<_>>().join("\t");
        line.push('\n');
        line
    }

    pub fn decode(line: &str) -> Result<Request, String> {
        let f = fields(line.trim_end_matches('\n'))?;
        let [id, message, kind, target, sender, recipient, hostname, timeout, user, size] = f.as_slice()
        else {
            return Err(format!("expected 10 fields, got {}", f.len()));
        };
        let target = Target::from_parts(kind, target)?;
        Ok(Request {
            id: id.parse().map_err(|_| format!("bad id {id:?}"))?,
            message: message.clone(),
            target,
            sender: sender.clone(),
            recipient: recipient.clone(),
            hostname: hostname.clone(),
            pipe_timeout: Duration::from_millis(
                timeout.parse().map_err(|_| format!("bad timeout {timeout:?}"))?,
            ),
            user: user.clone(),
            size: size.parse().map_err(|_| format!("bad size {size:?}"))?,
        })
    }
}

fn encode_reply(id: u64, o: &Outcome) -> String {
    let result = match o.verdict() {
        Verdict::Delivered => "delivered",
        Verdict::Temporary => "temporary",
        Verdict::Permanent => "permanent",
    };
    format!("{id}\t{result}\t{}\t{}\n", o.status(), escape(o.detail()))
}

fn decode_reply(line: &str) -> Result<(u64, Outcome), String> {
    let f = fields(line.trim_end_matches('\n'))?;
    let [id, result, status, detail] = f.as_slice() else {
        return Err(format!("expected 4 fields, got {}", f.len()));
    };
    let id = id.parse().map_err(|_| format!("bad id {id:?}"))?;
    let status = Status::parse(status).ok_or_else(|| format!("bad status {status:?}"))?;
    let o = match result.as_str() {
        "delivered" => Outcome::decoded(Verdict::Delivered, Stage::Local, status, detail.clone()),
        "temporary" => Outcome::decoded(Verdict::Temporary, Stage::Local, status, detail.clone()),
        // Only a class 5 status bounces; anything else from the helper is retried.
        "permanent" if status.is_permanent() => {
            Outcome::decoded(Verdict::Permanent, Stage::Local, status, detail.clone())
        }
        _ => outcome::local_error(format!("delivery helper: {detail}")),
    };
    Ok((id, o))
}

/// Check a request against the policy and turn it into a job for the child,
/// marked as the user's own mailbox only when it is by the helper's own
/// recomputation. Err is the refusal.
pub fn validate(req: &Request, policy: &Policy) -> Result<Job, Outcome> {
    let refuse = |why: String| outcome::local_error(format!("delivery helper refused: {why}"));
    // Only a well-formed queue id names a file, and only in msg/.
    let id = QueueId::parse(&req.message).ok_or_else(|| refuse(format!("bad queue id {:?}", req.message)))?;
    let message = crate::spool::message_file(&policy.spool, &id);
    let pw = sys::getpwnam(&req.user).ok_or_else(|| refuse(format!("no such user {:?}", req.user)))?;
    let mailbox = mailbox_target(&policy.mailbox, &pw);
    let is_mailbox = req.target == mailbox;
    if pw.uid == 0 && !is_mailbox {
        return Err(refuse(format!("{} would run as root", req.recipient)));
    }
    let job = Job {
        target: req.target.clone(),
        sender: req.sender.clone(),
        recipient: req.recipient.clone(),
        user: Some(pw),
        mailbox: is_mailbox,
        message,
        size: req.size,
        hostname: req.hostname.clone(),
        pipe_timeout: req.pipe_timeout,
    };
    Ok(job)
}

/// The helper's main loop, in the forked root process: read requests until the
/// daemon closes its end, run each in a thread, then exit.
pub fn serve(sock: UnixStream, policy: Policy) -> ! {
    let writer = match sock.try_clone() {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            log::error!("delivery helper: {e}");
            std::process::exit(1)
        }
    };
    let policy = Arc::new(policy);
    let mut reader = BufReader::new(sock);
    loop {
        let line = match read_line(&mut reader) {
            Ok(Some(l)) => l,
            // End of file: the daemon is gone, and so is anyone to answer.
            Ok(None) => {
                if let Some(p) = &policy.pid_file {
                    let _ = std::fs::remove_file(p);
                }
                std::process::exit(0)
            }
            Err(e) => {
                log::error!("delivery helper: {e}");
                std::process::exit(1)
            }
        };
        let req = match Request::decode(&line) {
            Ok(r) => r,
            Err(e) => {
                log::error!("delivery helper: bad request: {e}");
                continue;
            }
        };
        let writer = Arc::clone(&writer);
        let policy = Arc::clone(&policy);
        let spawned = std::thread::Builder::new()
            .name("helper".to_owned())
            .spawn(move || {
                let outcome = match validate(&req, &policy) {
                    Ok(job) => child::deliver_as_user(&job, policy.owner),
                    Err(o) => {
                        log::warn!("{}", o.detail());
                        o
                    }
                };
                let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                let _ = w.write_all(encode_reply(req.id, &outcome).as_bytes());
            });
        if let Err(e) = spawned {
            log::error!("delivery helper: cannot start a thread: {e}");
        }
    }
}

/// One line, at most LINE_LIMIT bytes; None at end of file.
fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = io::Read::take(&mut *r, LINE_LIMIT as u64).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "line too long or cut short",
        ));
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

type Pending = Arc<Mutex<HashMap<u64, mpsc::Sender<Outcome>>>>;

/// The daemon's side: sends requests and waits for the matching replies.
pub struct Client {
    writer: Mutex<UnixStream>,
    pending: Pending,
    next: AtomicU64,
}

impl Client {
    /// Wrap the daemon's end of the socket pair and start the thread that
    /// hands replies to the waiting deliveries.
    pub fn new(sock: UnixStream) -> io::Result<Client> {
        let pending: Pending = Arc::default();
        let mut reader = BufReader::new(sock.try_clone()?);
        let waiting = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("helper-replies".to_owned())
            .spawn(move || {
                while let Ok(Some(line)) = read_line(&mut reader) {
                    match decode_reply(&line) {
                        Ok((id, o)) => {
                            let tx = waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                            if let Some(tx) = tx {
                                let _ = tx.send(o);
                            }
                        }
                        Err(e) => log::error!("delivery helper: bad reply: {e}"),
                    }
                }
                log::error!("delivery helper is gone: local deliveries to users are deferred");
                // Dropping the senders wakes every waiting delivery.
                waiting.lock().unwrap_or_else(|e| e.into_inner()).clear();
            })?;
        Ok(Client {
            writer: Mutex::new(sock),
            pending,
            next: AtomicU64::new(1),
        })
    }

    /// Deliver `job` as `user` through the helper.
    pub fn deliver(&self, job: &Job, user: &str) -> Outcome {
        let Some(message) = job.message.file_name().and_then(|n| n.to_str()) else {
            return outcome::local_error(format!("bad message path {}", job.message.display()));
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let req = Request {
            id,
            message: message.to_owned(),
            size: job.size,
            target: job.target.clone(),
            sender: job.sender.clone(),
            recipient: job.recipient.clone(),
            hostname: job.hostname.clone(),
            pipe_timeout: job.pipe_timeout,
            user: user.to_owned(),
        };
        let (tx, rx) = mpsc::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let sent = {
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            w.write_all(req.encode().as_bytes())
        };
        if let Err(e) = sent {
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            return outcome::local_error(format!("delivery helper: {e}"));
        }
        rx.recv()
            .unwrap_or_else(|_| outcome::local_error("delivery helper is gone"))
    }
}

/// The helper of this daemon, set once after the privilege drop. A process-wide
/// value because local delivery is reached from deep inside the queue runner,
/// and only a daemon that dropped root ever sets it.
static HELPER: OnceLock<Client> = OnceLock::new();

/// Route local deliveries as other users through `client` from now on.
pub fn install(client: Client) {
    let _ = HELPER.set(client);
}

/// The installed helper, if this daemon dropped root.
pub fn installed() -> Option<&'static Client> {
    HELPER.get()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::local::testutil::{delivered, permanent, temporary};

    fn request(target: Target, user: &str) -> Request {
        Request {
            id: 7,
            message: "0123456789ABCDEF".to_owned(),
            size: 1234,
            target,
            sender: "a\tb\\c@example.test".to_owned(),
            recipient: "root@example.test".to_owned(),
            hostname: "mx.example.test".to_owned(),
            pipe_timeout: Duration::from_millis(1500),
            user: user.to_owned(),
        }
    }

    #[test]
    fn requests_round_trip_with_awkward_bytes() {
        for t in [
            Target::Maildir(PathBuf::from("/home/a/Maildir/")),
            Target::Mbox(PathBuf::from("/var/mail/a\nb")),
            Target::Pipe("cat >/dev/null\t# \\n".to_owned()),
        ] {
            let r = request(t, "root");
            let line = r.encode();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert_eq!(Request::decode(&line), Ok(r));
        }
        assert!(Request::decode("1\t2\n").is_err());
        assert!(Request::decode("x\t1\tmbox\t/p\t\t\t\t1\troot\n").is_err());
        assert!(Request::decode("1\t1\tfile\t/p\t\t\t\t1\troot\n").is_err());
        assert!(Request::decode("1\t1\tmbox\t/p\\q\t\t\t\t1\troot\n").is_err());
    }

    #[test]
    fn replies_round_trip_and_only_class_5_bounces() {
        for o in [
            delivered("delivered to maildir"),
            temporary(Status(4, 2, 2), "full\nreally"),
            permanent(Status(5, 3, 0), "command died"),
        ] {
            assert_eq!(decode_reply(&encode_reply(3, &o)), Ok((3, o)));
        }
        let (_, o) = decode_reply("4\tpermanent\t4.2.0\tx\n").expect("decode");
        assert!(o.is_temporary(), "{o:?}");
        assert!(decode_reply("4\tdelivered\n").is_err());
    }

    #[test]
    fn validation_recomputes_what_root_would_do() {
        let policy = Policy {
            spool: PathBuf::from("/spool"),
            owner: 1,
            mailbox: "/var/mail/%u".to_owned(),
            pid_file: None,
        };
        // Root's own mailbox: allowed, pre-created, message from msg/.
        let r = request(Target::Mbox(PathBuf::from("/var/mail/root")), "root");
        let job = validate(&r, &policy).expect("root mailbox");
        assert!(job.mailbox);
        assert_eq!(job.message, PathBuf::from("/spool/msg/0123456789ABCDEF"));
        assert_eq!(job.user.map(|u| u.uid), Some(0));
        // Anything else as root is refused.
        for t in [
            Target::Pipe("id".to_owned()),
            Target::Mbox(PathBuf::from("/etc/passwd")),
            Target::Maildir(PathBuf::from("/var/mail/root/")),
        ] {
            assert!(validate(&request(t, "root"), &policy).is_err());
        }
        // A queue id that is a path is refused.
        let mut bad = request(Target::Mbox(PathBuf::from("/var/mail/root")), "root");
        bad.message = "../../etc/shadow".to_owned();
        assert!(validate(&bad, &policy).is_err());
        // Unknown users are refused.
        let r = request(Target::Pipe("id".to_owned()), "no-such-user-tern-test");
        assert!(validate(&r, &policy).is_err());
        // Another user: runs as them; a path that is not their mailbox is not pre-created.
        if sys::getpwnam("nobody").is_some() {
            let r = request(Target::Mbox(PathBuf::from("/etc/x")), "nobody");
            let job = validate(&r, &policy).expect("nobody");
            assert!(!job.mailbox);
            assert_ne!(job.user.map(|u| u.uid), Some(0));
            // Their own mailbox is.
            let r = request(Target::Mbox(PathBuf::from("/var/mail/nobody")), "nobody");
            assert!(validate(&r, &policy).expect("nobody").mailbox);
        }
    }
}
