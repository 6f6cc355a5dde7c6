//! Pipe delivery (`|command` in aliases(5)), and the supervisor of every
//! process local delivery starts (a command, or the re-executed delivery
//! child): its stdin fed from a thread, its output drained and bounded, a time
//! limit that kills its whole process group.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::copy::{copy_message, CopyError};
use crate::deliver::outcome::{self, Outcome};
use crate::sys;
use crate::sysexits::SysExit;

/// Bytes of a command's output kept for the outcome's detail.
const OUTPUT_LIMIT: usize = 4096;
/// The longest first line of output quoted in a detail.
const DETAIL_LIMIT: usize = 200;
/// After a process exits, how long to wait for its output pipe to reach EOF (a
/// background grandchild may hold it open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// The environment of commands and delivery children.
pub(super) const SAFE_PATH: &str = "/usr/bin:/bin";

/// Run `/bin/sh -c COMMAND` in the user's home directory (else /, like sendmail's
/// prog mailer), the copy on its stdin. Exit 0 delivers; EX_TEMPFAIL (75) and
/// signals are temporary; any other status is permanent (sysexits.h, as sendmail).
pub(super) fn deliver_pipe(
    command: &str,
    env: &[(&'static str, String)],
    home: &Path,
    prefix: Vec<u8>,
    message: Box<dyn Read + Send>,
    timeout: Duration,
) -> Outcome {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped());
    let in_home = home.is_absolute() && home.is_dir();
    cmd.current_dir(if in_home { home } else { Path::new("/") });
    let spawned = match spawn_captured(&mut cmd) {
        // The home directory may exist but not be searchable by this user.
        Err(_) if in_home => spawn_captured(cmd.current_dir("/")),
        other => other,
    };
    let (child, output) = match spawned {
        Ok(x) => x,
        Err(e) => return outcome::local_error(format!("cannot run command: {e}")),
    };
    drop(cmd);
    let ran = supervise(child, output, Some((prefix, message)), timeout);
    pipe_outcome(&ran, timeout)
}

fn pipe_outcome(ran: &Ran, timeout: Duration) -> Outcome {
    if let Some(e) = &ran.feed_error {
        return outcome::cannot_read_message(e);
    }
    let status = match &ran.exit {
        Exit::Status(s) => *s,
        Exit::TimedOut => return outcome::local_error(format!("command timed out after {timeout:?}")),
        Exit::Failed(e) => return outcome::local_error(format!("command: {e}")),
    };
    match (status.code(), status.signal()) {
        (Some(0), _) => outcome::delivered_locally("delivered to command"),
        (Some(c), _) if SysExit::from_code(c) == Some(SysExit::TempFail) => outcome::local_error(
            with_output(format!("command deferred with status {c}"), &ran.output),
        ),
        (Some(c), _) => {
            outcome::command_failed(with_output(format!("command died with status {c}"), &ran.output))
        }
        (None, sig) => outcome::local_error(with_output(
            format!("command killed by signal {}", sig.unwrap_or(0)),
            &ran.output,
        )),
    }
}

/// `what: first line of output`, or just `what` when there was none.
pub(super) fn with_output(what: String, output: &[u8]) -> String {
    match first_line(output) {
        Some(line) => format!("{what}: {line}"),
        None => what,
    }
}

/// The first non-blank line of a process's output, trimmed to one printable line.
pub(super) fn first_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(one_line(line).chars().take(DETAIL_LIMIT).collect())
}

pub(super) fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

// ---------------------------------------------------------------------------
// Running a child process with a time limit

/// How a supervised process ended.
#[derive(Debug)]
pub(super) enum Exit {
    Status(ExitStatus),
    /// Ran past its time and was killed with its process group.
    TimedOut,
    /// Waiting for it failed; it was killed.
    Failed(String),
}

#[derive(Debug)]
pub(super) struct Ran {
    pub(super) exit: Exit,
    /// The first OUTPUT_LIMIT bytes of stdout and stderr together.
    pub(super) output: Vec<u8>,
    /// Reading the message to feed the process failed (it was killed).
    pub(super) feed_error: Option<io::Error>,
}

/// Spawn with stdout and stderr on one pipe, leading a new process group so a
/// timeout can kill everything it started.
pub(super) fn spawn_captured(cmd: &mut Command) -> io::Result<(Child, io::PipeReader)> {
    let (reader, writer) = io::pipe()?;
    cmd.stdout(writer.try_clone()?).stderr(writer).process_group(0);
    let spawned = cmd.spawn();
    // The Command keeps its Stdio until replaced or dropped: close our copies of the
    // write end now, or the reader would never see EOF.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    Ok((spawned?, reader))
}

/// Read all of `output`, keeping the first OUTPUT_LIMIT bytes: the process must
/// never block on a full pipe, however much it writes.
fn drain(mut output: io::PipeReader, keep: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 8192];
    loop {
        match output.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let mut kept = keep.lock().unwrap_or_else(|p| p.into_inner());
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Write the prefix and the message to a command's stdin. Write errors (EPIPE: the
/// command exited without reading everything) are not failures — its exit status
/// decides; a read error is.
fn feed(mut stdin: File, prefix: &[u8], mut message: Box<dyn Read + Send>) -> io::Result<()> {
    if stdin.write_all(prefix).is_err() {
        return Ok(());
    }
    match copy_message(&mut message, &mut stdin) {
        Ok(()) | Err(CopyError::Write(_)) => Ok(()),
        Err(CopyError::Read(e)) => Err(e),
    }
}

/// Feed the process (if asked), collect its output, wait for it up to `timeout`;
/// then kill its process group. Only this thread reaps the child, so a kill can
/// never hit a recycled process id.
///
/// The feeding thread writes to a duplicate of the stdin pipe while this thread holds
/// the original: the process sees EOF only once the whole message went through, so
/// a spool read error (the process is killed) can never look like a short message.
pub(super) fn supervise(
    mut child: Child,
    output: io::PipeReader,
    feed_with: Option<(Vec<u8>, Box<dyn Read + Send>)>,
    timeout: Duration,
) -> Ran {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (drained_tx, drained_rx) = mpsc::channel::<()>();
    let keep = Arc::clone(&kept);
    // If the thread cannot start, the reader is dropped and the process's writes
    // fail: it runs on, only its output is lost.
    let _ = thread::Builder::new()
        .name("local-output".to_owned())
        .spawn(move || {
            drain(output, &keep);
            let _ = drained_tx.send(());
        });

    let mut feed_error = None;
    let mut held_stdin: Option<OwnedFd> = None;
    let mut fed_rx = None;
    if let Some((prefix, message)) = feed_with {
        let started = child
            .stdin
            .take()
            .map(OwnedFd::from)
            .ok_or_else(|| io::Error::other("no stdin pipe"))
            .and_then(|fd| Ok((fd.try_clone()?, fd)))
            .and_then(|(dup, fd)| {
                let (tx, rx) = mpsc::channel();
                thread::Builder::new()
                    .name("local-feed".to_owned())
                    .spawn(move || {
                        let _ = tx.send(feed(File::from(dup), &prefix, message));
                    })
                    .map(|_| (fd, rx))
            });
        match started {
            Ok((fd, rx)) => {
                held_stdin = Some(fd);
                fed_rx = Some(rx);
            }
            Err(e) => feed_error = Some(e),
        }
    }

    let deadline = deadline_after(timeout);
    let mut step = Duration::from_millis(2);
    let exit = loop {
        if feed_error.is_some() {
            break kill_and_reap(&mut child, Exit::Failed("feeding the message failed".to_owned()));
        }
        if let Some(rx) = &fed_rx {
            match rx.try_recv() {
                Ok(Ok(())) => {
                    // All written: now let the process see EOF.
                    held_stdin = None;
                    fed_rx = None;
                }
                Ok(Err(e)) => {
                    feed_error = Some(e);
                    continue;
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    feed_error = Some(io::Error::other("the feeding thread died"));
                    continue;
                }
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break Exit::Status(status),
            Ok(None) => {}
            Err(e) => break kill_and_reap(&mut child, Exit::Failed(format!("cannot wait: {e}"))),
        }
        let now = Instant::now();
        if now >= deadline {
            break kill_and_reap(&mut child, Exit::TimedOut);
        }
        thread::sleep(step.min(deadline - now));
        step = (step * 2).min(Duration::from_millis(50));
    };
    drop(held_stdin);
    // Output after exit: wait briefly for EOF; a background process holding the pipe
    // must not hold up the delivery.
    let _ = drained_rx.recv_timeout(DRAIN_GRACE);
    let output = kept.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ran {
        exit,
        output,
        feed_error,
    }
}

/// `timeout` from now; a time limit too large for the clock is a very long one.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(u64::from(u32::MAX))))
        .unwrap_or(now)
}

fn kill_and_reap(child: &mut Child, why: Exit) -> Exit {
    let _ = sys::kill_process_group(child.id());
    let _ = child.kill();
    let _ = child.wait();
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::local::deliver;
    use crate::deliver::local::job::Target;
    use crate::deliver::local::testutil::{
        delivered, delivery, here, job, permanent, temporary, with_prefix, FailingReader, BODY,
        COMMAND_FAILED, PREFIX, SYSTEM_ERROR,
    };
    use crate::deliver::local::write::pipe_env;
    use std::collections::HashSet;
    use std::fs;

    #[test]
    fn pipe_delivers_the_copy_on_stdin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let cmd = format!("cat > '{}'", out.display());
        let j = job(dir.path(), Target::Pipe(cmd), BODY);
        assert_eq!(deliver(&j), delivered("delivered to command"));
        assert_eq!(fs::read(&out).expect("read"), with_prefix(BODY));
    }

    #[test]
    fn pipe_exit_statuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = |cmd: &str| here(&delivery(Target::Pipe(cmd.to_owned()), dir.path()), BODY);
        assert_eq!(run("exit 0"), delivered("delivered to command"));
        assert_eq!(
            run("echo try later; exit 75"),
            temporary(SYSTEM_ERROR, "command deferred with status 75: try later")
        );
        assert_eq!(
            run("cat >/dev/null; echo no such list >&2; exit 1"),
            permanent(COMMAND_FAILED, "command died with status 1: no such list")
        );
        assert_eq!(
            run("echo; echo '  first  '; echo second; exit 2"),
            permanent(COMMAND_FAILED, "command died with status 2: first")
        );
        assert_eq!(
            run("exit 67"),
            permanent(COMMAND_FAILED, "command died with status 67")
        );
        assert_eq!(
            run("kill -9 $$"),
            temporary(SYSTEM_ERROR, "command killed by signal 9")
        );
        let o = run("/no/such/program");
        assert_eq!(o.status(), COMMAND_FAILED, "{o:?}");
        assert!(o.detail().starts_with("command died with status 127: "), "{o:?}");
    }

    #[test]
    fn pipe_output_is_bounded_and_drained() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 1 MB of output must not block the command; the detail stays short.
        let d = delivery(
            Target::Pipe("head -c 1000000 /dev/zero | tr '\\0' x; exit 3".to_owned()),
            dir.path(),
        );
        let o = here(&d, BODY);
        assert_eq!(o.status(), COMMAND_FAILED, "{o:?}");
        assert!(o.detail().len() < 300, "{}", o.detail().len());
    }

    #[test]
    fn pipe_timeout_kills_the_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("marker");
        let mut d = delivery(
            Target::Pipe(format!("(sleep 1; touch '{}') & sleep 5", marker.display())),
            dir.path(),
        );
        d.pipe_timeout = Duration::from_millis(200);
        let start = Instant::now();
        let o = here(&d, BODY);
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
        assert_eq!(o, temporary(SYSTEM_ERROR, "command timed out after 200ms"));
        // The background child died with the group.
        thread::sleep(Duration::from_millis(1200));
        assert!(!marker.exists());
    }

    #[test]
    fn pipe_that_ignores_its_input_does_not_deadlock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = vec![b'x'; 4 << 20];
        for cmd in ["exit 0", "head -c 10 >/dev/null", "exec 0<&-; sleep 0.1"] {
            let d = delivery(Target::Pipe(cmd.to_owned()), dir.path());
            let start = Instant::now();
            assert_eq!(here(&d, &big), delivered("delivered to command"), "{cmd}");
            assert!(start.elapsed() < Duration::from_secs(5), "{cmd}");
        }
        // A background process holding stdout open does not hold up the outcome.
        let d = delivery(Target::Pipe("sleep 3 & exit 0".to_owned()), dir.path());
        let start = Instant::now();
        assert_eq!(here(&d, BODY), delivered("delivered to command"));
        assert!(
            start.elapsed() < Duration::from_millis(2500),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn pipe_read_error_is_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let d = delivery(Target::Pipe(format!("cat > '{}'", out.display())), dir.path());
        let o = deliver_pipe(
            "cat >/dev/null; exit 0",
            &pipe_env(&d),
            dir.path(),
            PREFIX.to_vec(),
            Box::new(FailingReader { good: 100_000 }),
            Duration::from_secs(10),
        );
        assert_eq!(
            o,
            temporary(SYSTEM_ERROR, "cannot read message: injected read error")
        );
    }

    #[test]
    fn pipe_environment_is_clean() {
        let home = tempfile::tempdir().expect("tempdir");
        let out = home.path().join("env");
        let d = delivery(
            Target::Pipe(format!("env > '{}'; pwd >> '{}'", out.display(), out.display())),
            home.path(),
        );
        assert_eq!(here(&d, BODY), delivered("delivered to command"));
        let text = fs::read_to_string(&out).expect("read");
        let lines: HashSet<&str> = text.lines().collect();
        for want in [
            "SENDER=alice@example.org".to_owned(),
            "RECIPIENT=bob@example.test".to_owned(),
            "LOCAL=bob".to_owned(),
            "DOMAIN=example.test".to_owned(),
            format!("HOME={}", home.path().display()),
            "USER=bob".to_owned(),
            "LOGNAME=bob".to_owned(),
            "SHELL=/bin/sh".to_owned(),
            "PATH=/usr/bin:/bin".to_owned(),
        ] {
            assert!(lines.contains(want.as_str()), "{want} not in {text}");
        }
        // Nothing of the test runner's environment leaks in; the shell may add PWD etc.
        for line in &lines {
            let name = line.split('=').next().unwrap_or("");
            assert!(
                !name.starts_with("CARGO") && name != "RUST_TEST_THREADS" && name != "TERM",
                "{line}"
            );
        }
        // It ran in the home directory.
        assert_eq!(text.lines().last(), Some(home.path().to_str().expect("utf8")));

        let mut d = delivery(Target::Pipe("exit 0".to_owned()), Path::new("/no/such/home"));
        d.recipient = "postmaster".to_owned();
        d.sender = String::new();
        let env = pipe_env(&d);
        assert!(env.contains(&("LOCAL", "postmaster".to_owned())));
        assert!(env.contains(&("DOMAIN", String::new())));
        assert!(env.contains(&("SENDER", String::new())));
        // A home that does not exist: run in / instead.
        assert_eq!(here(&d, BODY), delivered("delivered to command"));
    }
}
