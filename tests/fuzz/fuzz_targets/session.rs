//! A whole SMTP session (server::session::run) over an in-memory connection
//! (server::conn::Memory, which the session's unit tests use too): the
//! input is everything the client sends, on port 25 or 587 (chasquid's
//! FuzzConnection, mox's FuzzServer). One spool serves every run; messages that get
//! through are queued there. It is $TMPDIR/tern-fuzz-session, emptied when a run
//! starts (a static is never dropped, so a TempDir would be left behind by every
//! run); so run one `session` fuzzer at a time.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tern::config::Config;
use tern::server::conn::Memory;
use tern::server::session::{run, Context, Peer, Service};
use tern::spool::Spool;
use tern::tables::Tables;
mod common;

fn context() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let dir = std::env::temp_dir().join("tern-fuzz-session");
        let _ = std::fs::remove_dir_all(&dir);
        let text = format!(
            "hostname = mx.example.org\nspool = {}\nlocal_domains = localhost example.org\n\
             relay_networks = 10.0.0.0/8\nmailbox = {}/mail/%u/\n",
            dir.join("spool").display(),
            dir.display()
        );
        let cfg = Config::parse(&text, Path::new("fuzz.conf")).expect("fuzz config");
        let spool = Spool::open(&cfg.spool.dir).expect("spool");
        let tables = Arc::new(Tables::new(&cfg));
        Context::new(Arc::new(cfg), Arc::new(spool), tables, None)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, _)) = data.split_first() else {
        return;
    };
    let input = common::raw_or_mapped(data);
    let service = if ctl & 2 == 0 {
        Service::Smtp
    } else {
        Service::Submission
    };
    // From a relay network or not.
    let ip = IpAddr::V4(if ctl & 4 == 0 {
        Ipv4Addr::new(192, 0, 2, 1)
    } else {
        Ipv4Addr::new(10, 0, 0, 1)
    });
    // What the server writes is recorded and dropped with the transcript.
    let (conn, _) = Memory::new([input]);
    run(context(), &Peer::remote(ip), service, Box::new(conn));
});
