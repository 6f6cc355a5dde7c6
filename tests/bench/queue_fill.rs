//! queue-fill: put COUNT deferred messages straight into a spool, fast, for
//! tests/bench/queue-scale.sh (how ternd copes with a big queue).
//!
//! ```text
//! queue-fill SPOOL COUNT [RCPT]
//! ```
//!
//! It writes the layout src/spool/README.md documents (msg/ID, then env/ID)
//! with tern's own `Envelope` and `QueueId`, but not through the commit
//! protocol: no fsync per file, only one `syncfs` of the spool's filesystem at
//! the end. That is fine for a benchmark's setup and would not be for mail.
//! Every recipient is deferred until a day from now, so ternd schedules these
//! messages but never delivers them while the benchmark runs. Run it while no
//! ternd uses the spool.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use tern::spool::{Envelope, QueueId, RcptStatus, Recipient, Spool};

fn write_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

fn fill(root: &Path, count: usize, rcpt: &str) -> Result<(), String> {
    // Creates the layout (and checks it is writable) as ternd would.
    Spool::open(root).map_err(|e| e.to_string())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let mut body = String::from("From: <bench@example.test>\nSubject: deferred filler\n\n");
    while body.len() < 1024 {
        body.push_str("This message waits in the queue; nobody delivers it.\n");
    }
    for i in 0..count {
        let id = QueueId::generate();
        let mut env = Envelope::new(id.clone(), "bench@example.test".to_owned(), now);
        env.size = body.len() as u64;
        let mut r = Recipient::new(rcpt.to_owned());
        r.status = RcptStatus::Deferred;
        r.attempts = 1;
        // Spread over an hour from a day ahead: a realistic, unsorted schedule.
        r.next_attempt = Some(now + 86_400 + (i as u64 * 7919) % 3600);
        r.last_reply = Some("4.4.1 connect: Connection refused".to_owned());
        env.recipients.push(r);
        // Body first, then the envelope: never an envelope without its body.
        let msg = root.join("msg").join(id.as_str());
        write_new(&msg, body.as_bytes()).map_err(|e| format!("{}: {e}", msg.display()))?;
        let envp = root.join("env").join(id.as_str());
        write_new(&envp, env.to_text().as_bytes()).map_err(|e| format!("{}: {e}", envp.display()))?;
    }
    // One flush for all of it.
    let dir = File::open(root).map_err(|e| e.to_string())?;
    tern::sys::syncfs(dir.as_raw_fd()).map_err(|e| format!("syncfs: {e}"))?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(root), Some(count)) = (args.get(1), args.get(2).and_then(|n| n.parse::<usize>().ok())) else {
        eprintln!("usage: queue-fill SPOOL COUNT [RCPT]");
        return ExitCode::from(2);
    };
    let rcpt = args.get(3).map_or("deferred@example.test", String::as_str);
    let root = Path::new(root);
    if let Err(e) = fs::create_dir_all(root) {
        eprintln!("queue-fill: {}: {e}", root.display());
        return ExitCode::from(1);
    }
    match fill(root, count, rcpt) {
        Ok(()) => {
            println!("queued {count} deferred messages in {}", root.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("queue-fill: {e}");
            ExitCode::from(1)
        }
    }
}
