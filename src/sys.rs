//! The only module with `unsafe`: thin wrappers over libc calls std lacks.
//! Each wrapper states the invariant that makes its call sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::Path;

/// The host name as gethostname(2) reports it.
pub fn hostname() -> io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(buf.get(..end).unwrap_or_default()).into_owned())
}

/// Whether an I/O error means the filesystem is full (ENOSPC) or a quota is
/// exceeded (EDQUOT): a temporary condition, reported as such (SMTP 452, 4.2.2 for
/// a mailbox, EX_TEMPFAIL). The one test the spool, the session and local delivery
/// share.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// A system account, from getpwnam(3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
    pub shell: String,
    /// The GECOS field's full name (the part before the first comma).
    pub gecos: String,
}

fn lossy(p: *const libc::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: getpwnam_r/getpwuid_r filled the struct with NUL-terminated strings
    // pointing into the buffer, which the caller keeps alive during this call.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

fn passwd_lookup(
    by: impl FnOnce(&mut libc::passwd, &mut [u8], &mut *mut libc::passwd) -> libc::c_int,
) -> Option<Passwd> {
    // SAFETY: an all-zero passwd is a valid value of this plain C struct.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16384];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = by(&mut pwd, &mut buf, &mut result);
    if rc != 0 || result.is_null() {
        return None;
    }
    let gecos = lossy(pwd.pw_gecos);
    Some(Passwd {
        name: lossy(pwd.pw_name),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        home: std::path::PathBuf::from(lossy(pwd.pw_dir)),
        shell: lossy(pwd.pw_shell),
        gecos: gecos.split(',').next().unwrap_or("").to_owned(),
    })
}

/// Look up an account by name (getpwnam_r: reentrant, no shared static buffer).
pub fn getpwnam(name: &str) -> Option<Passwd> {
    let cname = CString::new(name).ok()?;
    passwd_lookup(|pwd, buf, result| {
        // SAFETY: every pointer refers to live, correctly sized storage.
        unsafe { libc::getpwnam_r(cname.as_ptr(), pwd, buf.as_mut_ptr().cast(), buf.len(), result) }
    })
}

/// Look up an account by uid (getpwuid_r).
pub fn getpwuid(uid: u32) -> Option<Passwd> {
    passwd_lookup(|pwd, buf, result| {
        // SAFETY: every pointer refers to live, correctly sized storage.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr().cast(), buf.len(), result) }
    })
}

/// Whether the system account database knows `name`.
pub fn account_exists(name: &str) -> bool {
    getpwnam(name).is_some()
}

/// The real and effective user ids of this process.
pub fn uids() -> (u32, u32) {
    // SAFETY: getuid and geteuid cannot fail and touch no memory.
    unsafe { (libc::getuid(), libc::geteuid()) }
}

/// Free bytes and free inodes available to an unprivileged user on the filesystem
/// holding `path`, with the totals: (avail_bytes, total_bytes, avail_inodes, total_inodes).
pub fn fs_space(path: &Path) -> io::Result<(u64, u64, u64, u64)> {
    let cpath = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: cpath is NUL-terminated; st is a valid out-pointer.
    let rc = unsafe { libc::statvfs(cpath.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((
        (st.f_bavail as u64).saturating_mul(frsize),
        (st.f_blocks as u64).saturating_mul(frsize),
        st.f_favail as u64,
        st.f_files as u64,
    ))
}

/// The peer of a socket, or None when `fd` is not a connected socket (a pipe or a
/// terminal, as with `ternd -i` run by hand: getpeername(2) then fails with
/// ENOTSOCK, which socket2 returns as an error).
pub fn peer_of_fd(fd: &impl std::os::fd::AsFd) -> Option<SocketAddr> {
    socket2::SockRef::from(fd).peer_addr().ok()?.as_socket()
}

/// Wait until `fd` is readable or `timeout` passes; Ok(false) on timeout.
/// Used for read timeouts on descriptors std cannot set one on (stdin in `-i` mode).
pub fn wait_readable(fd: RawFd, timeout: std::time::Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: pfd is one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Ask the kernel to acknowledge what arrives on TCP socket `fd` at once rather
/// than delay the ACK (Linux TCP_QUICKACK; the kernel drops back to delayed ACKs
/// by itself, so callers set it before each read). Without it, a peer that sends
/// a reply in two writes with Nagle on (libmilter does) waits for our delayed ACK,
/// about 40 ms, between them. A no-op elsewhere.
pub fn tcp_quickack(fd: RawFd) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let on: libc::c_int = 1;
        // SAFETY: `on` is a live c_int and its size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
    Ok(())
}

/// The local time zone's offset from UTC in seconds at unix time `t`.
pub fn utc_offset(t: i64) -> i64 {
    let tt = t as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r writes only into tm; tt is a valid time_t.
    let p = unsafe { libc::localtime_r(&tt, &mut tm) };
    if p.is_null() {
        0
    } else {
        tm.tm_gmtoff as i64
    }
}

/// Fill `buf` from the kernel's random source.
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = buf.get_mut(filled..).unwrap_or_default();
        // SAFETY: rest is valid writable memory of rest.len() bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(())
}

/// Try to take a write lock on the whole of the file behind `fd`, without waiting:
/// Ok(true) when taken, Ok(false) when someone else holds a conflicting lock.
///
/// On Linux this is an open-file-description lock (F_OFD_SETLK): it excludes other
/// threads of this process too, and it conflicts with the classic F_SETLK locks
/// that mutt, mailx and Dovecot take (fcntl(2), "Open file description locks").
/// Elsewhere it is the classic per-process F_SETLK lock. Either way the lock goes
/// away when the file is closed.
pub fn try_lock_write(fd: RawFd) -> io::Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const CMD: libc::c_int = libc::F_OFD_SETLK;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const CMD: libc::c_int = libc::F_SETLK;
    // SAFETY: an all-zero flock is a valid value of this plain C struct; l_start = 0 and
    // l_len = 0 mean "the whole file", and l_pid must be 0 for OFD locks.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    loop {
        // SAFETY: fl is a valid, initialised flock that outlives the call.
        let rc = unsafe { libc::fcntl(fd, CMD, &fl as *const libc::flock) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Send SIGKILL to every process in the process group `pgid` (a child spawned with
/// `process_group(0)` leads a group whose id is its pid). Refuses ids 0 and 1 and
/// anything that is not a positive pid: kill(-1) would signal every process we may
/// signal, kill(0) our own group.
pub fn kill_process_group(pgid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pgid).unwrap_or(0);
    if pid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to kill process group {pgid}"),
        ));
    }
    // SAFETY: kill touches no memory; -pid names exactly one process group.
    let rc = unsafe { libc::kill(-pid, libc::SIGKILL) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The detached daemon's side of the start-up handshake: `ready()` lets the
/// original process exit 0, so an rc script that runs `ternd` finds the pid
/// file written and the ports open once the command returns.
pub struct Detached {
    pipe: Option<std::fs::File>,
}

impl Detached {
    pub fn ready(mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = std::io::Write::write_all(&mut p, b"1");
        }
    }
}

/// Detach from the terminal as a daemon (fork, setsid, fork, chdir /,
/// umask 027, stdio to /dev/null). The original process waits until the
/// daemon calls `Detached::ready` and exits 0, or exits 1 if the daemon dies
/// first. Must run before any thread is started: fork copies only the
/// calling thread.
pub fn daemonize() -> io::Result<Detached> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is an array of two ints for pipe to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    let (mut rd, wr) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: fork in a single-threaded process.
    match unsafe { libc::fork() } {
        -1 => return Err(io::Error::last_os_error()),
        0 => drop(rd),
        _ => {
            drop(wr);
            let mut b = [0u8; 1];
            let ok = matches!(rd.read(&mut b), Ok(1));
            // SAFETY: _exit is async-signal-safe and skips atexit handlers and buffers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
    }
    // SAFETY: setsid has no memory effects; failure is reported through errno.
    if unsafe { libc::setsid() } == -1 {
        return Err(io::Error::last_os_error());
    }
    // A second fork: the session leader exits, so the daemon can never
    // acquire a controlling terminal again.
    // SAFETY: as above.
    match unsafe { libc::fork() } {
        -1 => return Err(io::Error::last_os_error()),
        0 => {}
        // SAFETY: as above.
        _ => unsafe { libc::_exit(0) },
    }
    std::env::set_current_dir("/")?;
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o027) };
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..=2 {
        // SAFETY: both descriptors are valid; dup2 atomically replaces fd.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Detached { pipe: Some(wr) })
}

/// Give up root for good: supplementary groups, then gid, then uid (the
/// order matters: after setuid there is no right left to change groups),
/// and check that none of it can be undone.
pub fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    let groups = [gid as libc::gid_t];
    // SAFETY: groups is a valid array of one gid.
    if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: these calls take plain integers.
    if unsafe { libc::setgid(gid) } != 0 || unsafe { libc::setuid(uid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getters without side effects.
    let (r, e, rg, eg) = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid(), libc::getegid()) };
    // SAFETY: setuid(0) only tests that root cannot be regained.
    if r != uid || e != uid || rg != gid || eg != gid || (uid != 0 && unsafe { libc::setuid(0) } == 0) {
        return Err(io::Error::other("privileges were not dropped"));
    }
    Ok(())
}

/// fork(2): Ok(None) in the child, Ok(Some(pid)) in the parent. Only for a
/// process with one thread (the daemon forks its delivery helper before any
/// thread starts): the child gets a copy of the calling thread only, and a lock
/// another thread held would stay locked in it forever.
pub fn fork() -> io::Result<Option<u32>> {
    // SAFETY: fork touches no memory of ours; the caller is single-threaded.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid.unsigned_abs())),
    }
}

/// Signals the daemon handles itself, by a thread that waits for them.
pub const DAEMON_SIGNALS: [i32; 4] = [libc::SIGHUP, libc::SIGTERM, libc::SIGINT, libc::SIGUSR1];

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Block `signals` in this thread and every thread it starts afterwards, so
/// that only `wait_signal` receives them.
pub fn block_signals(signals: &[i32]) -> io::Result<()> {
    let set = sigset(signals);
    // SAFETY: set is initialised; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Wait for one of `signals` (blocked beforehand) and return its number.
pub fn wait_signal(signals: &[i32]) -> io::Result<i32> {
    let set = sigset(signals);
    let mut sig: libc::c_int = 0;
    // SAFETY: set is initialised; sig is a valid out-pointer.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(sig)
}

/// Send `sig` to process `pid` (for tests and ternctl).
pub fn send_signal(pid: u32, sig: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill takes plain integers.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Listen on an IPv6 address with IPV6_V6ONLY set, so that `[::]:25` and
/// `0.0.0.0:25` can both be bound whatever net.ipv6.bindv6only says (std
/// offers no way to set the option before bind; socket2 does).
pub fn listen_v6only(addr: std::net::SocketAddrV6, backlog: i32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    // Close-on-exec, as std's sockets are.
    let socket = Socket::new(Domain::IPV6, Type::STREAM, None)?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::V6(addr).into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// shutdown(2) both directions of a socket; on a listening socket this wakes
/// a thread blocked in accept() (Linux returns EINVAL to it).
pub fn shutdown_socket(sock: &impl std::os::fd::AsFd) {
    let _ = socket2::SockRef::from(sock).shutdown(std::net::Shutdown::Both);
}

/// The id of the group `name` (getgrnam_r), or None when there is no such group.
pub fn group_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    // SAFETY: an all-zero group is a valid value of this plain C struct.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16384];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, correctly sized storage.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(grp.gr_gid)
}

/// The name of group `gid` (getgrgid_r), or None when there is no such group.
pub fn group_name(gid: u32) -> Option<String> {
    // SAFETY: an all-zero group is a valid value of this plain C struct.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16384];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, correctly sized storage.
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(lossy(grp.gr_name))
}

/// The real and effective group ids of this process (they differ when the
/// program runs setgid, as sendmail is installed).
pub fn gids() -> (u32, u32) {
    // SAFETY: getgid and getegid cannot fail and touch no memory.
    unsafe { (libc::getgid(), libc::getegid()) }
}

/// Give up a setgid program's group for good: real, effective and saved group ids
/// all become the real one (setregid(2) with the real id also resets the saved id),
/// so nothing later in the process can take the group back.
pub fn drop_setgid() -> io::Result<()> {
    let (rgid, egid) = gids();
    if rgid == egid {
        return Ok(());
    }
    // SAFETY: setregid touches no memory.
    let rc = unsafe { libc::setregid(rgid, rgid) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if gids() != (rgid, rgid) {
        return Err(io::Error::other("setregid did not drop the group"));
    }
    Ok(())
}

/// Write `bytes` to file descriptor 2 with write(2), without std's `Stderr` lock: one
/// call for the whole buffer unless the kernel takes less (then the rest follows).
pub fn write_stderr(mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe `bytes`, which outlives the call.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = bytes.get(usize::try_from(n).unwrap_or(0)..).unwrap_or_default();
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// syncfs(2): flush the whole filesystem holding `fd`. sendmail uses it to make
/// a rename in maildrop/ durable when it may not open that directory to fsync it
/// (mode 1730 gives the group write and search but not read).
pub fn syncfs(fd: RawFd) -> io::Result<()> {
    // SAFETY: syncfs touches no memory; a bad fd is reported as EBADF.
    let rc = unsafe { libc::syncfs(fd) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Start writing `fd`'s dirty pages to disk without waiting (sync_file_range(2) with
/// SYNC_FILE_RANGE_WRITE). Not a durability step: the spool calls it on a message's
/// two files before fsyncing them, so that the filesystem allocates both files' blocks
/// at once and the first fsync's journal commit covers the second file too (ext4 and
/// XFS allocate at writeback). Errors are only a lost optimisation.
pub fn start_writeback(fd: RawFd) {
    // SAFETY: sync_file_range touches no memory; a bad fd is reported as EBADF.
    let _ = unsafe { libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_errors() {
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(is_no_space(&io::Error::from(io::ErrorKind::StorageFull)));
        assert!(is_no_space(&io::Error::from(io::ErrorKind::QuotaExceeded)));
        assert!(!is_no_space(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(!is_no_space(&io::Error::from(io::ErrorKind::PermissionDenied)));
    }

    #[test]
    fn root_account() {
        let root = getpwnam("root").expect("root exists");
        assert_eq!(root.uid, 0);
        assert_eq!(getpwuid(0).map(|p| p.name), Some("root".to_owned()));
        assert!(getpwnam("no-such-user-tern-test").is_none());
        // Groups by id, both ways.
        if let Some(name) = group_name(0) {
            assert_eq!(group_id(&name), Some(0));
        }
        assert_eq!(group_name(u32::MAX - 7), None);
        assert!(getpwnam("bad\0name").is_none());
    }

    #[test]
    fn v4_and_v6_wildcards_on_one_port() {
        let v6 = listen_v6only("[::]:0".parse().expect("addr"), 16).expect("bind [::]");
        let port = v6.local_addr().expect("addr").port();
        // With IPV6_V6ONLY the IPv4 wildcard on the same port is free.
        let v4 = std::net::TcpListener::bind(("0.0.0.0", port));
        assert!(v4.is_ok(), "{v4:?}");
    }

    #[test]
    fn peer_of_sockets_and_pipes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, from) = l.accept().expect("accept");
        assert_eq!(peer_of_fd(&s), Some(from));
        assert_eq!(peer_of_fd(&c), l.local_addr().ok());
        // Not a socket: a file (or a pipe, or a terminal).
        let f = tempfile::tempfile().expect("tempfile");
        assert_eq!(peer_of_fd(&f), None);
        // A listener has no peer; shutdown wakes accept() and is harmless here.
        assert_eq!(peer_of_fd(&l), None);
        shutdown_socket(&l);
    }

    #[test]
    fn kill_refuses_special_groups() {
        assert!(kill_process_group(0).is_err());
        assert!(kill_process_group(1).is_err());
        assert!(kill_process_group(u32::MAX).is_err());
    }

    #[test]
    fn write_lock_conflicts_between_open_files() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let a = std::fs::File::create(&path).expect("create");
        let b = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
        assert!(try_lock_write(a.as_raw_fd()).expect("lock a"));
        #[cfg(any(target_os = "linux", target_os = "android"))]
        assert!(!try_lock_write(b.as_raw_fd()).expect("lock b"));
        drop(a);
        assert!(try_lock_write(b.as_raw_fd()).expect("lock b after close"));
    }
}
