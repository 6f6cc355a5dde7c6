//! ternctl(8) and mailq: look at and manage the queue.
//!
//! `ternctl [-f FILE] queue | show ID | flush | delete ID|ALL | hold ID | release ID | stats | tlsrpt send`
//!
//! Everything works on the spool through `spool::Spool` (the only code that writes
//! it); the running daemon is told over the control socket where it must act at
//! once (flush, release). With the daemon down, flush marks deferred mail due now so
//! that ternd sends it when it starts.

use std::fmt::Write as _;
use std::io::Read;

use crate::clock;
use crate::config::{self, Config};
use crate::control::{self, Request, Response};
use crate::maillog;
use crate::message;
use crate::spool::listing::{self, mailq};
use crate::spool::{Place, QueueId, RcptStatus, Spool, SpoolError};
use crate::sysexits::SysExit;

/// The most of a message's header read for `show`.
const MAX_HEADERS: u64 = 256 * 1024;

const USAGE: &str =
    "usage: ternctl [-f file] queue | show ID | flush | delete ID|ALL | hold ID | release ID | stats | tlsrpt send";

/// The program; returns the exit status: EX_USAGE or EX_CONFIG (sysexits.h), else
/// 1 for any other failure (a bad queue id, say).
pub fn main(args: &[String]) -> u8 {
    let mut opts = getopts::Options::new();
    opts.optopt("f", "", "configuration file", "FILE");
    let m = match opts.parse(args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ternctl: {e}\n{USAGE}");
            return SysExit::Usage.code();
        }
    };
    let path = m
        .opt_str("f")
        .or_else(|| std::env::var("TERN_CONFIG").ok())
        .unwrap_or_else(|| config::DEFAULT_PATH.to_owned());
    let words: Vec<&str> = m.free.iter().map(String::as_str).collect();
    let verb = match words.as_slice() {
        ["queue"] | ["flush"] | ["stats"] => Verb::Plain(words.first().copied().unwrap_or("")),
        [v @ ("show" | "delete" | "hold" | "release"), arg] => Verb::WithId(v, arg),
        ["tlsrpt", "send"] => Verb::Plain("tlsrpt"),
        _ => {
            eprintln!("ternctl: {USAGE}");
            return SysExit::Usage.code();
        }
    };
    let cfg = match Config::load(std::path::Path::new(&path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ternctl: {e}");
            return SysExit::Config.code();
        }
    };
    // hold, release, delete and flush are in the mail log, with the queue id.
    crate::logging::for_tool(
        "ternctl",
        cfg.daemon.log_file.as_deref(),
        cfg.daemon.syslog_facility,
    );
    let spool = match Spool::open(&cfg.spool.dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ternctl: {e}");
            return 1;
        }
    };
    let result = match verb {
        Verb::Plain("queue") => mailq(&spool).map(|t| print!("{t}")).map_err(|e| e.to_string()),
        Verb::Plain("flush") => flush(&cfg, &spool),
        Verb::Plain("tlsrpt") => tlsrpt_send(&cfg),
        Verb::Plain(_) => stats(&spool).map(|t| print!("{t}")).map_err(|e| e.to_string()),
        Verb::WithId("delete", "ALL") => delete_all(&spool),
        Verb::WithId(v, arg) => match QueueId::parse(arg) {
            None => Err(format!("not a queue id: {arg}")),
            Some(id) => match v {
                "show" => show(&spool, &id).map(|t| print!("{t}")),
                "delete" => delete(&spool, &id),
                "hold" => hold(&spool, &id),
                _ => release(&cfg, &spool, &id),
            },
        },
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ternctl: {e}");
            1
        }
    }
}

enum Verb<'a> {
    Plain(&'a str),
    WithId(&'a str, &'a str),
}

fn flush(cfg: &Config, spool: &Spool) -> Result<(), String> {
    match control::request(&cfg.spool.dir, &Request::Flush) {
        Ok(Response::Ok) => {
            maillog::flush_requested();
            println!("ternctl: ternd is retrying all deferred mail now");
            Ok(())
        }
        Ok(r) => Err(format!("ternd: {r}")),
        Err(_) => {
            // Daemon down: make the deferred mail due now, so it goes at start-up.
            let mut n = 0;
            for id in spool.list().map_err(|e| e.to_string())? {
                let Ok(_lock) = spool.lock(&id) else { continue };
                let Ok(mut env) = spool.load(&id) else { continue };
                let now = clock::now();
                let mut changed = false;
                for r in &mut env.recipients {
                    if r.status == RcptStatus::Deferred && r.next_attempt.is_some_and(|t| t > now) {
                        r.next_attempt = Some(now);
                        changed = true;
                    }
                }
                if changed {
                    spool.update(&env).map_err(|e| e.to_string())?;
                    maillog::marked_due(&id);
                    n += 1;
                }
            }
            println!("ternctl: ternd is not running; {n} deferred messages marked due, sent when it starts");
            Ok(())
        }
    }
}

/// `ternctl tlsrpt send`: have ternd send the TLS reports (RFC 8460) of
/// the days that are over now, rather than after midnight UTC.
fn tlsrpt_send(cfg: &Config) -> Result<(), String> {
    match control::request(&cfg.spool.dir, &Request::TlsRpt) {
        Ok(Response::Ok) => {
            println!("ternctl: ternd is sending the TLS reports that are due");
            Ok(())
        }
        Ok(r) => Err(format!("ternd: {r}")),
        Err(e) => Err(format!("ternd is not running ({e}); reports go when it runs")),
    }
}

fn delete(spool: &Spool, id: &QueueId) -> Result<(), String> {
    // Waits for a delivery in flight to end, so no message vanishes mid-delivery.
    let _lock = spool.lock(id).map_err(|_| format!("no such message: {id}"))?;
    match spool.place(id).map_err(|e| e.to_string())? {
        Some(Place::Queued) => spool.remove(id).map_err(|e| e.to_string())?,
        Some(Place::Held) => spool.remove_held(id).map_err(|e| e.to_string())?,
        None => return Err(format!("no such message: {id}")),
    }
    maillog::deleted(id);
    println!("{id}: deleted");
    Ok(())
}

fn delete_all(spool: &Spool) -> Result<(), String> {
    let mut ids = spool.list().map_err(|e| e.to_string())?;
    ids.extend(spool.list_held().map_err(|e| e.to_string())?);
    let n = ids.len();
    for id in ids {
        // Delivered meanwhile: fine, it is gone either way.
        let _ = delete(spool, &id);
    }
    println!("ternctl: {n} messages deleted");
    Ok(())
}

fn hold(spool: &Spool, id: &QueueId) -> Result<(), String> {
    let _lock = spool.lock(id).map_err(|_| format!("no such message: {id}"))?;
    match spool.place(id).map_err(|e| e.to_string())? {
        Some(Place::Queued) => spool.hold(id).map_err(|e| e.to_string())?,
        Some(Place::Held) => return Err(format!("{id} is already held")),
        None => return Err(format!("no such message: {id}")),
    }
    maillog::held(id);
    println!("{id}: held");
    Ok(())
}

fn release(cfg: &Config, spool: &Spool, id: &QueueId) -> Result<(), String> {
    match spool.place(id).map_err(|e| e.to_string())? {
        Some(Place::Held) => spool.release(id).map_err(|e| e.to_string())?,
        Some(Place::Queued) => return Err(format!("{id} is not held")),
        None => return Err(format!("no such message: {id}")),
    }
    // Down is fine: the daemon lists env/ when it starts.
    control::wake(&cfg.spool.dir, std::slice::from_ref(id));
    maillog::released(id);
    println!("{id}: released");
    Ok(())
}

/// `ternctl show ID`: the envelope, each recipient's state, the message's header.
fn show(spool: &Spool, id: &QueueId) -> Result<String, String> {
    let (env, state) = match spool.place(id).map_err(|e| e.to_string())? {
        Some(Place::Queued) => (
            spool.load(id).map_err(|e| e.to_string())?,
            if spool.is_locked(id) {
                "being delivered"
            } else {
                "queued"
            },
        ),
        Some(Place::Held) => (spool.load_held(id).map_err(|e| e.to_string())?, "held"),
        None => return Err(format!("no such message: {id}")),
    };
    let mut out = String::new();
    let _ = writeln!(out, "id: {id} ({state})");
    if let Some(why) = &env.hold_reason {
        let _ = writeln!(out, "hold reason: {why}");
    }
    let _ = writeln!(out, "arrival: {}", clock::rfc5322(env.created));
    let _ = writeln!(out, "size: {}", env.size);
    let _ = writeln!(out, "sender: <{}>", env.sender);
    let client = match (&env.client_name, env.client_addr) {
        (Some(n), Some(ip)) => format!("{n} [{ip}]"),
        (None, Some(ip)) => format!("[{ip}]"),
        (Some(n), None) => n.clone(),
        (None, None) => "local".to_owned(),
    };
    let _ = writeln!(
        out,
        "client: {client} helo={}",
        env.helo.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "protocol: {}", env.protocol);
    if let Some(e) = &env.envid {
        let _ = writeln!(out, "envid: {e}");
    }
    if env.requiretls {
        // RFC 8689: relayed only over authenticated TLS to REQUIRETLS servers.
        let _ = writeln!(out, "requiretls: yes");
    }
    let _ = writeln!(out, "recipients:");
    for r in &env.recipients {
        let status = match r.status {
            RcptStatus::Pending => "pending",
            RcptStatus::Sent => "sent",
            RcptStatus::Failed => "failed",
            RcptStatus::Deferred => "deferred",
        };
        let _ = write!(out, "  <{}>: {status}, {} attempts", r.addr, r.attempts);
        if let (RcptStatus::Deferred, Some(t)) = (r.status, r.next_attempt) {
            let _ = write!(out, ", next {}", clock::rfc5322(t));
        }
        out.push('\n');
        if let Some(l) = &r.last_reply {
            let _ = writeln!(out, "    last: {l}");
        }
    }
    let _ = writeln!(out, "headers:");
    let mut head = Vec::new();
    if let Ok(f) = spool.open_message(&env) {
        let _ = f.take(MAX_HEADERS).read_to_end(&mut head);
    }
    let text = String::from_utf8_lossy(message::split(&head).0);
    for line in text.lines() {
        let _ = writeln!(out, "  {line}");
    }
    Ok(out)
}

/// `ternctl stats`: counts by state and the age of the oldest message.
fn stats(spool: &Spool) -> Result<String, SpoolError> {
    let msgs = listing::messages(spool)?;
    let (mut queued, mut held, mut pending, mut deferred) = (0, 0, 0, 0);
    for (env, h) in &msgs {
        if *h {
            held += 1;
        } else {
            queued += 1;
        }
        for r in &env.recipients {
            match r.status {
                RcptStatus::Pending => pending += 1,
                RcptStatus::Deferred => deferred += 1,
                RcptStatus::Sent | RcptStatus::Failed => {}
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "queued: {queued}");
    let _ = writeln!(out, "held: {held}");
    let _ = writeln!(out, "recipients pending: {pending}");
    let _ = writeln!(out, "recipients deferred: {deferred}");
    let _ = writeln!(out, "maildrop: {}", spool.maildrop_count()?);
    let _ = writeln!(out, "corrupt: {}", spool.corrupt_count()?);
    match msgs.iter().map(|(e, _)| e).min_by_key(|e| e.created) {
        Some(e) => {
            let age = clock::now().saturating_sub(e.created);
            let _ = writeln!(out, "oldest: {} ({})", duration(age), e.id);
        }
        None => {
            let _ = writeln!(out, "oldest: -");
        }
    }
    Ok(out)
}

/// `3d4h`, `2h5m`, `40s`: the two largest units.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration(90061), "1d1h");
        assert_eq!(duration(7500), "2h5m");
        assert_eq!(duration(100), "1m40s");
        assert_eq!(duration(59), "59s");
    }
}
