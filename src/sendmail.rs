//! sendmail(8): the command-line door into the mail system, with the flags of
//! Postfix's and Sendmail's sendmail(1), and its other names `mailq` (-bp) and
//! `newaliases` (-bi).
//!
//! Submission (-bm, the default) reads the message on stdin, applies the fixes a
//! submission server makes (RFC 6409 section 8: Date:, Message-ID:, From: when
//! missing), and drops it into the spool's maildrop — durably, whether or not ternd
//! runs — then pokes the daemon over the control socket. It exits 0 only once the
//! message is on disk; otherwise with a sysexits(3) code and one line on stderr
//! (OpenSMTPD enqueue, Postfix sendmail).
//!
//! Installed setgid to the `tern` group (see the Makefile's install), this program
//! runs as the invoking user with just enough privilege to write maildrop/; the uid
//! that wrote a drop file is the kernel's record (the file owner), which pickup puts
//! in the Received: header.

use std::io::{self, BufRead, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::aliases::Aliases;
use crate::clock;
use crate::config::{self, Config};
use crate::control::{self, Request, Response};
use crate::message::Header;
#[cfg(test)]
use crate::pipeline::add_missing;
use crate::pipeline::{self, Body, Draft, Origin};
use crate::server::session::{self, Peer};
use crate::smtp::address::Mailbox;
use crate::smtp::notify::Notify;
use crate::spool::{
    self, listing, maildrop, BodyType, DsnRet, Envelope, QueueId, Recipient, Spool, SpoolError,
};
use crate::sys;
use crate::sysexits::SysExit;

/// A failure: the exit code and the line for stderr.
#[derive(Debug)]
pub struct Failure {
    pub exit: SysExit,
    pub message: String,
}

fn fail(exit: SysExit, message: impl Into<String>) -> Failure {
    Failure {
        exit,
        message: message.into(),
    }
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// The -b mode letter: 'm' (deliver), 's', 'p', 'i', 'd', 'v'.
    pub mode: char,
    /// -q: process the queue now.
    pub queue_run: bool,
    /// -t: recipients from To:, Cc:, Bcc: too.
    pub extract: bool,
    /// -i / -oi: a line with a single '.' does not end the message.
    pub ignore_dots: bool,
    /// -f / -r.
    pub sender: Option<String>,
    /// -F.
    pub full_name: Option<String>,
    /// -v.
    pub verbose: bool,
    /// -N: RFC 3461 NOTIFY.
    pub notify: Option<Notify>,
    /// -R.
    pub ret: Option<DsnRet>,
    /// -V.
    pub envid: Option<String>,
    /// -O RequireTLS=yes: RFC 8689 REQUIRETLS for the message.
    pub requiretls: bool,
    /// -C, else $TERN_CONFIG, else the default.
    pub config: PathBuf,
    pub recipients: Vec<String>,
    /// Options of other sendmails accepted and ignored; each gets a warning
    /// with -v (mail programs pass them all the time: silent otherwise).
    pub ignored: Vec<String>,
}

fn options() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt(
        "b",
        "",
        "mode: m deliver (default), s SMTP on stdin, p list the queue, i aliases, d daemon, v verify",
        "MODE",
    );
    o.optflag("I", "", "check the aliases file (newaliases, -bi)");
    o.optflagopt("q", "", "process the queue now", "INTERVAL");
    o.optflagmulti("t", "", "recipients from To:, Cc: and Bcc: too");
    o.optflagmulti("i", "", "a lone '.' line does not end the message");
    o.optopt("f", "", "envelope sender", "ADDR");
    o.optopt("r", "", "envelope sender (obsolete -f)", "ADDR");
    o.optopt("F", "", "full name for an added From:", "NAME");
    o.optflagmulti("v", "", "show progress");
    o.optopt("N", "", "DSN notify: never, or success,failure,delay", "DSN");
    o.optopt("R", "", "DSN return: full or hdrs", "RET");
    o.optopt("V", "", "DSN envelope id", "ENVID");
    o.optopt("C", "", "configuration file", "FILE");
    // Options of Sendmail's and Postfix's sendmail that mail programs pass
    // (mutt -oem -oi, mail(1) -odb, cron -ODeliveryMode=b, -Am/-Ac): accepted
    // and ignored, as Postfix does (Postfix's getopt string, sendmail.c).
    o.optmulti("o", "", "legacy option (-oi is -i)", "OPT");
    o.optopt("B", "", "body type: 7BIT or 8BITMIME", "TYPE");
    // Repeating one of these is no mistake either (-Am -Ac).
    o.optmulti("h", "", "hop count (ignored)", "N");
    o.optmulti("L", "", "syslog label (ignored)", "LABEL");
    o.optmulti(
        "O",
        "",
        "RequireTLS=yes|no, or a legacy option (ignored)",
        "OPT=VALUE",
    );
    o.optmulti("X", "", "log file (ignored)", "FILE");
    o.optmulti("A", "", "which configuration, c or m (ignored)", "FILE");
    o.optmulti("e", "", "error reporting mode (ignored)", "MODE");
    o.optmulti("p", "", "protocol (ignored)", "PROTO");
    o.optflagmulti("n", "", "no aliasing (ignored)");
    o.optflagmulti("m", "", "send to me too (ignored)");
    o.optflagmulti("U", "", "initial user submission (ignored)");
    o.optflagmulti("G", "", "gateway submission (ignored)");
    o.optflagmulti("c", "", "ignored");
    o.optflagmulti("x", "", "ignored");
    o
}

/// Parse the arguments (without argv[0]); `name` is the program's name, which makes
/// `mailq` mean -bp and `newaliases` -bi.
pub fn parse_args(name: &str, args: &[String], env_config: Option<String>) -> Result<Options, Failure> {
    let m = options()
        .parse(args)
        .map_err(|e| fail(SysExit::Usage, format!("{e}")))?;
    let mut o = Options {
        mode: 'm',
        ..Options::default()
    };
    match name {
        "mailq" => o.mode = 'p',
        "newaliases" => o.mode = 'i',
        _ => {}
    }
    if m.opt_present("I") {
        o.mode = 'i';
    }
    if let Some(b) = m.opt_str("b") {
        o.mode = match b.as_str() {
            "m" | "s" | "p" | "i" | "d" | "v" => b.chars().next().unwrap_or('m'),
            _ => return Err(fail(SysExit::Usage, format!("unsupported mode -b{b}"))),
        };
    }
    o.queue_run = m.opt_present("q");
    o.extract = m.opt_present("t");
    o.ignore_dots = m.opt_present("i");
    for opt in m.opt_strs("o") {
        if opt == "i" {
            o.ignore_dots = true;
        } else {
            o.ignored.push(format!("-o{opt}"));
        }
    }
    // RFC 6152: the body type is read from the content anyway; only a value
    // that is neither is a mistake (Postfix refuses it too).
    if let Some(b) = m.opt_str("B") {
        if !b.eq_ignore_ascii_case("8BITMIME") && !b.eq_ignore_ascii_case("7BIT") {
            return Err(fail(SysExit::Usage, format!("-B {b}: expected 8BITMIME or 7BIT")));
        }
    }
    for opt in m.opt_strs("O") {
        // sendmail's long options: `-O Name=value`, names without case.
        match opt.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("RequireTLS") => {
                o.requiretls = config::parse_bool(v.trim()).ok_or_else(|| {
                    fail(SysExit::Usage, format!("-O {opt}: expected RequireTLS=yes or no"))
                })?;
            }
            _ => o.ignored.push(format!("-O{opt}")),
        }
    }
    for flag in ["h", "L", "X", "A", "e", "p"] {
        for v in m.opt_strs(flag) {
            o.ignored.push(format!("-{flag}{v}"));
        }
    }
    for flag in ["n", "m", "U", "G", "c", "x"] {
        if m.opt_present(flag) {
            o.ignored.push(format!("-{flag}"));
        }
    }
    o.sender = m.opt_str("f").or_else(|| m.opt_str("r"));
    o.full_name = m.opt_str("F");
    o.verbose = m.opt_present("v");
    if let Some(n) = m.opt_str("N") {
        o.notify = Some(parse_notify(&n)?);
    }
    if let Some(r) = m.opt_str("R") {
        o.ret = Some(match r.to_ascii_lowercase().as_str() {
            "full" => DsnRet::Full,
            "hdrs" => DsnRet::Hdrs,
            _ => return Err(fail(SysExit::Usage, format!("-R {r}: expected full or hdrs"))),
        });
    }
    if let Some(v) = m.opt_str("V") {
        // RFC 3461 section 4.4: printable US-ASCII, at most 100 characters.
        if v.is_empty() || v.len() > 100 || !v.bytes().all(|b| (33..=126).contains(&b)) {
            return Err(fail(SysExit::Usage, format!("-V {v:?}: not a valid envelope id")));
        }
        o.envid = Some(v);
    }
    o.config = m
        .opt_str("C")
        .or(env_config)
        .map_or_else(|| PathBuf::from(config::DEFAULT_PATH), PathBuf::from);
    o.recipients = m.free;
    Ok(o)
}

/// RFC 3461 section 4.1: NEVER alone, or any of SUCCESS, FAILURE, DELAY.
fn parse_notify(s: &str) -> Result<Notify, Failure> {
    Notify::parse(s).ok_or_else(|| {
        fail(
            SysExit::Usage,
            format!("-N {s}: expected never or success,failure,delay"),
        )
    })
}

/// The program: `name` is argv[0]'s base name. Returns the exit status.
pub fn main(name: &str, args: &[String]) -> u8 {
    let prog = match name {
        "mailq" | "newaliases" => name,
        _ => "sendmail",
    };
    match run(name, args) {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("{prog}: {}", f.message);
            f.exit.code()
        }
    }
}

fn run(name: &str, args: &[String]) -> Result<(), Failure> {
    let env_config = std::env::var("TERN_CONFIG").ok();
    let o = parse_args(name, args, env_config)?;
    keep_privilege_only_if_needed(&o)?;
    if o.verbose {
        for i in &o.ignored {
            eprintln!("sendmail: warning: option {i} is ignored");
        }
    }
    let cfg = Config::load(&o.config).map_err(|e| fail(SysExit::Config, e.to_string()))?;
    if o.queue_run {
        return flush(&cfg);
    }
    match o.mode {
        's' => smtp_session(cfg),
        'p' => {
            // Root reads the spool itself (the daemon may be down); anyone else
            // asks the daemon, which may read it.
            if sys::uids().0 != 0 {
                if let Ok(Response::Listing(text)) = control::request(&cfg.spool.dir, &Request::Mailq) {
                    print!("{text}");
                    return Ok(());
                }
            }
            let spool = Spool::open(&cfg.spool.dir).map_err(|e| spool_failure(&e))?;
            let text = listing::mailq(&spool).map_err(|e| spool_failure(&e))?;
            print!("{text}");
            Ok(())
        }
        'i' => newaliases(&cfg),
        'd' => start_daemon(&cfg),
        'v' => verify(&o, &cfg),
        _ => submit(&o, &cfg, &mut io::stdin().lock()),
    }
}

/// Installed setgid `tern`, this program may write the maildrop and talk to the
/// control socket; nothing else. So it drops the group at once (as Postfix's
/// postdrop refuses alternate configurations) when an ordinary user:
/// - names another configuration (-C or TERN_CONFIG): it could point `spool` at any
///   directory the group may write;
/// - asks for anything but submission (-bm, and -bs, whose session drops what it
///   accepts into the maildrop too), -q and -bp (which asks the daemon through the
///   control socket): -bd starts the daemon, -bi only reads the aliases file.
fn keep_privilege_only_if_needed(o: &Options) -> Result<(), Failure> {
    let (rgid, egid) = sys::gids();
    if rgid == egid || sys::uids().0 == 0 {
        return Ok(());
    }
    let other_config = o.config != Path::new(config::DEFAULT_PATH);
    let needs_group = o.queue_run || matches!(o.mode, 'm' | 's' | 'p');
    if other_config || !needs_group {
        sys::drop_setgid().map_err(|e| fail(SysExit::OsErr, format!("cannot drop the setgid group: {e}")))?;
    }
    Ok(())
}

/// -q: the daemon retries all deferred mail now.
fn flush(cfg: &Config) -> Result<(), Failure> {
    match control::request(&cfg.spool.dir, &Request::Flush) {
        Ok(Response::Ok) => Ok(()),
        Ok(r) => Err(fail(SysExit::TempFail, format!("ternd: {r}"))),
        Err(e) => Err(fail(
            SysExit::TempFail,
            format!(
                "ternd is not running ({}: {e})",
                spool::control_socket(&cfg.spool.dir).display()
            ),
        )),
    }
}

/// -bd: become the daemon (the ternd program installed beside this one).
fn start_daemon(cfg: &Config) -> Result<(), Failure> {
    let exe =
        std::env::current_exe().map_err(|e| fail(SysExit::OsErr, format!("cannot find myself: {e}")))?;
    let ternd = exe.with_file_name("ternd");
    let e = std::process::Command::new(&ternd).arg("-f").arg(&cfg.path).exec();
    Err(fail(
        SysExit::OsErr,
        format!("cannot run {}: {e}", ternd.display()),
    ))
}

/// -bi: tern reads the aliases file itself (no database to rebuild), and the daemon
/// sees a change by its modification time; so this checks the file and reports.
fn newaliases(cfg: &Config) -> Result<(), Failure> {
    let Some(path) = &cfg.local.aliases else {
        println!("newaliases: no aliases file configured");
        return Ok(());
    };
    let (aliases, errors) =
        Aliases::load(path).map_err(|e| fail(SysExit::NoInput, format!("{}: {e}", path.display())))?;
    for e in &errors {
        eprintln!("newaliases: {}:{}: {}", path.display(), e.line, e.what);
    }
    println!("newaliases: {}: {} aliases", path.display(), aliases.len());
    match errors.len() {
        0 => Ok(()),
        n => Err(fail(
            SysExit::DataErr,
            format!("{n} error{} in {}", if n == 1 { "" } else { "s" }, path.display()),
        )),
    }
}

/// -bv: say for each recipient what delivery would do (its mailbox, what its
/// alias expands to, where its domain's mail goes, or the error), in
/// Sendmail's `ADDRESS... deliverable: ...` form; nothing is queued or sent.
/// Exits 0 when all are deliverable, else EX_NOUSER for an unknown user,
/// EX_UNAVAILABLE for another permanent error, EX_TEMPFAIL for a temporary one.
fn verify(o: &Options, cfg: &Config) -> Result<(), Failure> {
    use crate::deliver::{dns, verify};
    let origin = cfg.origin();
    let mut rcpts = Vec::new();
    for arg in &o.recipients {
        for a in address_list(arg) {
            rcpts.push(qualify(&a, &origin).unwrap_or(a));
        }
    }
    if rcpts.is_empty() {
        return Err(fail(SysExit::Usage, "no recipients"));
    }
    for p in cfg.local.aliases.iter().chain(&cfg.local.users) {
        if let Err(e) = std::fs::File::open(p) {
            eprintln!("sendmail: warning: cannot read {}: {e}", p.display());
        }
    }
    let tables = crate::tables::Tables::new(cfg);
    let resolver: Box<dyn dns::Resolver> =
        match dns::Hickory::new(&cfg.remote.dns_servers, cfg.remote.dns_timeout) {
            Ok(r) => Box::new(r),
            Err(e) => Box::new(dns::Broken(e.to_string())),
        };
    let mut worst: Option<SysExit> = None;
    for r in &rcpts {
        for line in verify::verify(cfg, &tables, resolver.as_ref(), r) {
            let indent = "    ".repeat(line.depth);
            match &line.verdict {
                Ok(how) => println!("{indent}{}... deliverable: {how}", line.what),
                Err(e) => {
                    let (word, exit) = if e.is_temporary() {
                        ("deferred", SysExit::TempFail)
                    } else if e.status().subject() == 1 {
                        ("undeliverable", SysExit::NoUser)
                    } else {
                        ("undeliverable", SysExit::Unavailable)
                    };
                    println!("{indent}{}... {word}: {} {}", line.what, e.status(), e.detail());
                    // A permanent failure outranks a temporary one.
                    if worst.is_none() || worst == Some(SysExit::TempFail) {
                        worst = Some(exit);
                    }
                }
            }
        }
    }
    match worst {
        None => Ok(()),
        Some(exit) => Err(fail(exit, "some addresses are not deliverable")),
    }
}

/// -bs: an SMTP session on stdin/stdout, the same code as `ternd -i`, except
/// that what it accepts goes into the maildrop, as `sendmail` without -bs drops
/// it: so any user may run it (Postfix's sendmail -bs runs its smtpd the same
/// way, through postdrop), the drop file's owner records who did, and the queue
/// files stay the daemon's even when root runs it. The daemon is then told to
/// pick the messages up.
fn smtp_session(cfg: Config) -> Result<(), Failure> {
    // First use: create the spool when we may, as a submission does.
    if !maildrop::dir(&cfg.spool.dir).is_dir() {
        Spool::open(&cfg.spool.dir).map_err(|e| spool_failure(&e))?;
    }
    let root = cfg.spool.dir.clone();
    let spool = maildrop::submission_spool(&root);
    let queued = session::run_stdio(
        cfg,
        spool,
        &Peer::local(),
        None,
        session::Door::Maildrop,
        pipeline::MailAuth::none(),
    );
    if !queued.is_empty() {
        // Down is fine: the daemon picks the maildrop up when it starts.
        let _ = control::request(&root, &Request::Pickup);
    }
    Ok(())
}

fn spool_failure(e: &SpoolError) -> Failure {
    let exit = if e.is_no_space() {
        SysExit::TempFail
    } else {
        match e.io().map(io::Error::kind) {
            Some(io::ErrorKind::PermissionDenied) => SysExit::NoPerm,
            Some(io::ErrorKind::NotFound) => SysExit::CantCreat,
            _ => SysExit::TempFail,
        }
    };
    fail(exit, e.to_string())
}

/// The invoking user: the real uid's account (never the effective ids of a setgid
/// program).
struct User {
    uid: u32,
    name: String,
    gecos: String,
}

fn invoking_user() -> Result<User, Failure> {
    let uid = sys::uids().0;
    let pw = sys::getpwuid(uid).ok_or_else(|| fail(SysExit::NoUser, format!("no account for uid {uid}")))?;
    Ok(User {
        uid,
        name: pw.name,
        gecos: pw.gecos,
    })
}

/// -bm: read, fix up, drop into the maildrop, poke the daemon.
fn submit(o: &Options, cfg: &Config, input: &mut dyn BufRead) -> Result<(), Failure> {
    let user = invoking_user()?;
    // Bare user names (the sender's own too) get the origin domain, as
    // Postfix's myorigin: /etc/mailname on Debian.
    let origin = cfg.origin();
    let host = &origin;
    let own = format!("{}@{host}", user.name);
    let sender = match &o.sender {
        None => own.clone(),
        Some(s) => {
            let s = s.trim().trim_start_matches('<').trim_end_matches('>');
            if s.is_empty() {
                String::new()
            } else {
                qualify(s, host).ok_or_else(|| fail(SysExit::Usage, format!("bad sender address: {s}")))?
            }
        }
    };
    let mut rcpts: Vec<String> = Vec::new();
    for arg in &o.recipients {
        for a in address_list(arg) {
            let q = qualify(&a, host)
                .ok_or_else(|| fail(SysExit::Usage, format!("bad recipient address: {a}")))?;
            push_unique(&mut rcpts, q);
        }
    }
    let mut text = read_message(input, o.ignore_dots, cfg.session.max_message_size)?;
    // Issue 16: RFC 5322 text excludes NUL, and a next hop that drops it could
    // read a smuggled end of data; refused like SMTP refuses it (550 5.6.0).
    if text.contains(&0) {
        return Err(fail(
            SysExit::DataErr,
            "message contains a NUL character, refused (RFC 5322 text excludes it)",
        ));
    }
    // An mbox "From " line in front (mail(1) pipelines, resent mailboxes) is not a
    // header field; sendmail drops it, and so do we.
    if text.starts_with(b"From ") {
        let end = text
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| i + 1);
        text.drain(..end);
    }
    let (head, content) = Header::parse(&text);
    if o.extract {
        for name in ["to", "cc", "bcc"] {
            for value in head.fields().filter(|f| f.is(name)).map(|f| f.value()) {
                for a in address_list(&value) {
                    let q = qualify(&a, host)
                        .ok_or_else(|| fail(SysExit::Usage, format!("bad address in {name}: header: {a}")))?;
                    push_unique(&mut rcpts, q);
                }
            }
        }
    }
    if rcpts.is_empty() {
        return Err(fail(SysExit::Usage, "no recipients"));
    }
    let from_addr = if sender.is_empty() { own } else { sender.clone() };
    let name = o.full_name.clone().unwrap_or(user.gecos);

    let mut env = Envelope::new(QueueId::generate(), sender, clock::now());
    env.protocol = "local".to_owned();
    env.client_name = Some("localhost".to_owned());
    env.smtputf8 = !env.sender.is_ascii() || rcpts.iter().any(|r| !r.is_ascii());
    env.ret = o.ret;
    env.envid = o.envid.clone();
    env.requiretls = o.requiretls;
    env.recipients = rcpts
        .iter()
        .map(|r| {
            let mut rc = Recipient::new(r.clone());
            rc.notify = o.notify;
            rc
        })
        .collect();
    // The same stages as mail from SMTP (src/pipeline): the fields that must
    // not travel go (Bcc: among them, RFC 5322 section 3.6.3, whatever the
    // flags), the missing From:, Date: and Message-ID: come.
    let mut draft = Draft {
        header: head,
        body: Body::from_vec(content.to_vec()),
        env,
    };
    let mut ctx = pipeline::Context {
        cfg,
        origin: Origin::Local {
            from: from_addr,
            name,
        },
        // Signed at pickup, by the daemon: this process holds no keys.
        auth: pipeline::Stages::default(),
        milters: None,
    };
    pipeline::finish(&mut draft, &mut ctx).map_err(|r| fail(exit_for(&r), format!("refused: {r}")))?;
    let mut body = Vec::with_capacity(text.len() + 256);
    let mut env = pipeline::commit(draft, &mut body)
        .map_err(|e| fail(SysExit::IoErr, format!("building the message: {e}")))?;
    drop(text);
    if body.len() as u64 > cfg.session.max_message_size {
        return Err(fail(
            SysExit::DataErr,
            format!(
                "message too big (the limit is {} bytes)",
                cfg.session.max_message_size
            ),
        ));
    }
    // RFC 6152: an 8-bit body is kept as given and marked so delivery can tell.
    env.body = if body.iter().any(|&b| b >= 0x80) {
        BodyType::EightBitMime
    } else {
        BodyType::SevenBit
    };

    // First use (say, cron mails before ternd ever ran): create the spool when we may.
    if !maildrop::dir(&cfg.spool.dir).is_dir() {
        Spool::open(&cfg.spool.dir).map_err(|e| spool_failure(&e))?;
    }
    let name = maildrop::deposit(&cfg.spool.dir, &env, &body).map_err(|e| spool_failure(&e))?;
    if o.verbose {
        eprintln!(
            "sendmail: uid {} queued {} bytes for {} recipients as maildrop/{name}",
            user.uid,
            body.len(),
            env.recipients.len()
        );
    }
    match control::request(&cfg.spool.dir, &Request::Pickup) {
        Ok(r) if o.verbose => eprintln!("sendmail: ternd: {r}"),
        Err(e) if o.verbose => {
            eprintln!("sendmail: ternd not reached ({e}); it picks the message up when it starts")
        }
        _ => {}
    }
    Ok(())
}

fn push_unique(v: &mut Vec<String>, a: String) {
    if !v.iter().any(|x| x.eq_ignore_ascii_case(&a)) {
        v.push(a);
    }
}

/// A mailbox as written on a command line or in a header: `user` gets `@ORIGIN`
/// (sendmail's habit, Postfix's myorigin); the result must parse as an RFC
/// 5321 mailbox.
fn qualify(addr: &str, host: &str) -> Option<String> {
    let a = addr.trim();
    let full = if a.contains('@') {
        a.to_owned()
    } else {
        format!("{a}@{host}")
    };
    Mailbox::parse(&full).ok().map(|m| m.to_string())
}

/// The addresses in an RFC 5322 section 3.4 address list (also a command-line
/// argument, which may hold several separated by commas): `a@b`, `Name <a@b>`,
/// `"quoted, name" <a@b>`, `a@b (comment)`, groups `team: a@b, c@d;`.
pub fn address_list(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut angle: Option<String> = None;
    let (mut quoted, mut escaped, mut comment, mut in_angle) = (false, false, 0u32, false);
    let finish = |cur: &mut String, angle: &mut Option<String>, out: &mut Vec<String>| {
        let a = angle.take().unwrap_or_else(|| cur.trim().to_owned());
        let a = a.trim().to_owned();
        if !a.is_empty() {
            out.push(a);
        }
        cur.clear();
    };
    for c in s.chars() {
        if escaped {
            escaped = false;
            push_char(c, in_angle, &mut cur, &mut angle);
            continue;
        }
        if comment > 0 {
            match c {
                '\\' => escaped = true,
                '(' => comment += 1,
                ')' => comment -= 1,
                _ => {}
            }
            continue;
        }
        if quoted {
            if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
            push_char(c, in_angle, &mut cur, &mut angle);
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                push_char(c, in_angle, &mut cur, &mut angle);
            }
            '(' => comment = 1,
            '<' if !in_angle => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' if in_angle => in_angle = false,
            // A group's display name ends at ':'; its list ends at ';'.
            ':' if !in_angle => cur.clear(),
            ',' | ';' if !in_angle => finish(&mut cur, &mut angle, &mut out),
            '\r' | '\n' => {}
            _ => push_char(c, in_angle, &mut cur, &mut angle),
        }
    }
    finish(&mut cur, &mut angle, &mut out);
    out
}

fn push_char(c: char, in_angle: bool, cur: &mut String, angle: &mut Option<String>) {
    match angle {
        Some(a) if in_angle => a.push(c),
        // Text after a closing '>' (before the next ',') is not part of the address.
        Some(_) => {}
        None => {
            if !c.is_whitespace() || !cur.is_empty() {
                cur.push(c);
            }
        }
    }
}

/// Read the message from stdin: lines end in LF or CRLF and are stored with LF (the
/// spool's form; delivery writes CRLF on the wire, RFC 5322 section 2.1). Without
/// `ignore_dots`, a line holding a single '.' ends the message, as in sendmail. A
/// last line without its newline gets one. Over `max` bytes is an error: the message
/// is refused whole rather than cut.
fn read_message(input: &mut dyn BufRead, ignore_dots: bool, max: u64) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    let too_big = || {
        fail(
            SysExit::DataErr,
            format!("message too big (the limit is {max} bytes)"),
        )
    };
    loop {
        line.clear();
        // Bounded: one line can never take more than the whole limit plus a byte.
        let n = input
            .take(max.saturating_add(2))
            .read_until(b'\n', &mut line)
            .map_err(|e| fail(SysExit::IoErr, format!("reading the message: {e}")))?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if !ignore_dots && line == b"." {
            break;
        }
        out.extend_from_slice(&line);
        out.push(b'\n');
        if out.len() as u64 > max {
            return Err(too_big());
        }
    }
    Ok(out)
}

/// The exit code for a stage's refusal: 4xx is worth retrying, 5xx is not.
fn exit_for(r: &crate::smtp::reply::Reply) -> SysExit {
    if r.code >= 500 {
        SysExit::DataErr
    } else {
        SysExit::TempFail
    }
}

/// The base name of argv[0], which chooses the program's role (argv[0] dispatch).
pub fn program_name(argv0: &str) -> String {
    Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sendmail".to_owned())
}

#[cfg(test)]
mod tests;
