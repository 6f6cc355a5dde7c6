//! The daemon's life: detaching with a pid file, refusing a second instance,
//! and a graceful stop on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{message, wait_until, Client, Setup, TERND};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn detaches_writes_a_pid_file_and_refuses_a_second_instance() {
    let port = free_port();
    let setup = Setup::new().set("listen", &format!("127.0.0.1:{port}"));
    let pid_path = setup.path().join("ternd.pid");
    let setup = setup.set("pid_file", &pid_path.display().to_string());
    let conf = setup.write_config();
    // Without -d: the command returns once the daemon has detached and is
    // ready, with its pid file written, as rc scripts expect.
    let st = Command::new(TERND)
        .arg("-f")
        .arg(&conf)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
    let pid: u32 = std::fs::read_to_string(&pid_path)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(pid));
    let mut c = Client::connect(format!("127.0.0.1:{port}").parse().unwrap());
    assert_eq!(c.reply().code, 220);
    assert_eq!(c.cmd("QUIT").code, 221);
    // A second instance on the same config refuses to start, saying why.
    let out = Command::new(TERND)
        .arg("-f")
        .arg(&conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another ternd is running"), "{err}");
    assert!(err.contains(&pid.to_string()), "{err}");
    // SIGTERM stops it; the pid file goes with it.
    tern::sys::send_signal(pid, libc::SIGTERM).unwrap();
    assert!(wait_until(10, || !pid_alive(pid)), "ternd did not stop");
    assert!(!pid_path.exists());
}

#[test]
fn sigterm_lets_data_finish_and_tells_idle_clients() {
    let mut t = Setup::new().start();
    let mut idle = t.connect();
    idle.hello();
    let mut busy = t.connect();
    busy.hello();
    busy.cmd("MAIL FROM:<a@example.test>");
    busy.cmd("RCPT TO:<alice@example.test>");
    assert_eq!(busy.cmd("DATA").code, 354);
    busy.send_raw(b"Subject: in flight\r\n\r\nfirst half\r\n");
    t.signal(libc::SIGTERM);
    // The idle client is told at once.
    let start = Instant::now();
    assert_eq!(idle.reply().status(), "421 4.3.2");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(idle.closed());
    // The message in flight is completed and acknowledged: nothing is lost.
    busy.send_raw(b"second half\r\n.\r\n");
    let r = busy.reply();
    assert_eq!(r.status(), "250 2.0.0", "{r:?}");
    let id = r.queue_id();
    assert_eq!(busy.cmd("NOOP").status(), "421 4.3.2");
    // New connections are refused; the daemon exits 0.
    assert_eq!(t.wait_exit(10), Some(0), "{}", t.log_text());
    assert!(Client::try_connect(t.addr).is_none());
    let (env, body) = t.message(&id);
    assert_eq!(env.recipients.len(), 1);
    assert!(String::from_utf8_lossy(&body).ends_with("first half\nsecond half\n"));
    assert!(t.log_text().contains("stopped"));
}

#[test]
fn sigterm_waits_for_deliveries_in_flight() {
    let setup = Setup::new().deliver().open_to_all();
    let out = setup.path().join("out");
    let mut t = setup
        .aliases(&format!("slow: \"|sleep 1; cat > {}/slow.txt\"\n", out.display()))
        .start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(
        c.send_mail("a@example.test", &["slow@example.test"], &message("slow"))
            .code,
        250
    );
    c.cmd("QUIT");
    // Stop while the pipe is still sleeping: the delivery completes first.
    std::thread::sleep(Duration::from_millis(300));
    t.signal(libc::SIGTERM);
    assert_eq!(t.wait_exit(20), Some(0), "{}", t.log_text());
    assert!(out.join("slow.txt").exists(), "{}", t.log_text());
}

#[test]
fn sigusr1_runs_the_queue_now() {
    let t = Setup::new()
        .deliver()
        .set("retry_initial", "1h")
        .aliases("slow: \"|exit 75\"\n")
        .open_to_all()
        .start();
    let mut c = t.connect();
    c.hello();
    let id = c
        .send_mail("a@example.test", &["slow@example.test"], &message("later"))
        .queue_id();
    let attempt = format!("{id}: to=<slow@example.test>");
    assert!(wait_until(5, || t.log_text().matches(&attempt).count() == 1));
    // The next try is an hour away; SIGUSR1 makes it now.
    t.signal(libc::SIGUSR1);
    assert!(
        wait_until(5, || t.log_text().matches(&attempt).count() == 2),
        "{}",
        t.log_text()
    );
}
