//! Which agent delivers a recipient. A recipient in a local domain goes
//! through the aliases to mailboxes, files and pipes; an alias that points
//! elsewhere makes a forwarded copy in the queue; any other domain goes to
//! remote delivery, or to an LMTP server when a route names one.
//!
//! With `mailbox_transport`, the users the aliases yield (the recipient
//! itself when it is no alias) go to that LMTP server in one transaction
//! instead of their `mailbox`, as Postfix's local(8) hands the final
//! mailbox to its mailbox_transport: aliases, `:include:` files, files and
//! commands are still ours, and the server decides which users exist.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::aliases::{ExpandError, Target as AliasTarget};
use crate::clock;
use crate::config::{Config, Lmtp};
use crate::deliver::dns::Resolver;
use crate::deliver::local::{self, Job, Target};
use crate::deliver::outcome::{self, Attempted, Outcome, Success, Timing, Verdict};
use crate::deliver::pool::{Farewell, Pool};
use crate::deliver::{lmtp, remote};
use crate::message;
use crate::smtp::address::{domain_key, Domain, Mailbox};
use crate::spool::{Envelope, QueueId, Recipient, Spool};
use crate::sys::{self, Passwd};
use crate::tables::Tables;
use crate::tlspolicy::outbound::Outbound;

/// The final targets (mailboxes, files, commands, remote addresses) one
/// message has reached in one delivery run, each with the recipient that
/// reached it first and its outcome, so that a target named again through
/// another recipient (`team: alice, bob` and `alice`) gets no second copy,
/// and that recipient the first one's result. Remote recipients of the
/// message itself are targets too: an alias pointing at one forwards nothing.
pub struct Targets {
    reached: RefCell<HashMap<String, (String, Outcome)>>,
    /// `Mailbox::identity` of each recipient of the message in another domain.
    recipients: HashSet<String>,
}

impl Targets {
    /// No target reached yet, for a run over `env`.
    pub fn new(cfg: &Config, env: &Envelope) -> Targets {
        let recipients = env
            .recipients
            .iter()
            .filter_map(|r| Mailbox::parse(&r.addr).ok())
            .filter(|m| !policy_local(cfg, m))
            .map(|m| m.identity(false))
            .collect();
        Targets {
            reached: RefCell::new(HashMap::new()),
            recipients,
        }
    }

    /// Who reached `key` first in this run, and how it went.
    fn get(&self, key: &str) -> Option<(String, Outcome)> {
        self.reached.borrow().get(key).cloned()
    }

    fn insert(&self, key: String, rcpt: &str, o: &Outcome) {
        self.reached
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| (rcpt.to_owned(), o.clone()));
    }
}

/// Whether `m` is in a local domain (address literals never are).
fn policy_local(cfg: &Config, m: &Mailbox) -> bool {
    matches!(m.domain(), Domain::Name(d) if cfg.local.is_local_domain(d))
}

/// What makes two alias targets the same place: a user's mailbox, a file, a
/// command, or a remote mailbox (`Mailbox::identity`).
fn target_key(t: &AliasTarget) -> String {
    match t {
        AliasTarget::User(name) => format!("user {name}"),
        AliasTarget::File(path) => format!("file {}", path.display()),
        AliasTarget::Pipe(cmd) => format!("pipe {cmd}"),
        AliasTarget::Remote(addr) => format!("smtp {}", remote_identity(addr)),
    }
}

/// `Mailbox::identity` of a remote alias target, or the address as written
/// when it does not parse.
fn remote_identity(addr: &str) -> String {
    Mailbox::parse(addr).map_or_else(|_| addr.to_owned(), |m| m.identity(false))
}

/// What delivery needs besides the recipient.
pub struct Context<'a> {
    pub cfg: &'a Config,
    pub tables: &'a Tables,
    pub spool: &'a Spool,
    pub env: &'a Envelope,
    /// The header section of the queued message, for loop checks.
    pub headers: &'a [u8],
    /// The whole message, when the caller has already read it (else it is
    /// read from the spool when needed).
    pub message: Option<&'a [u8]>,
    pub resolver: &'a dyn Resolver,
    /// The outbound TLS policy's state (DNSSEC probe, MTA-STS, TLS-RPT).
    pub outbound: &'a Outbound,
    /// Open connections and per-destination counts for remote delivery.
    pub pool: &'a Arc<Pool>,
    /// Tell the queue runner about a message queued here (a forwarded copy).
    pub queued: &'a dyn Fn(QueueId),
    /// The targets this message reached so far in this run.
    pub targets: &'a Targets,
}

/// The recipient's domain when it is delivered by SMTP or an LMTP route:
/// lowercased, a UTF-8 name as its A-labels (what DNS and `route` know it
/// by, so both forms go in one transaction); None for local domains and
/// unparsable addresses (which `deliver` handles).
pub fn remote_domain(cfg: &Config, rcpt: &Recipient) -> Option<String> {
    let mbox = Mailbox::parse(&rcpt.addr).ok()?;
    match mbox.domain() {
        Domain::Name(d) if cfg.local.is_local_domain(d) => None,
        Domain::Name(d) => Some(domain_key(d).unwrap_or_else(|| d.to_lowercase())),
        // An address literal, `[192.0.2.1]`: delivered to that address.
        other => Some(other.to_string()),
    }
}

/// Deliver the recipients of one remote domain in one transaction: to the
/// LMTP server its route names, else by SMTP. The connection is let go when
/// the returned `Farewell` is dropped: after the caller has recorded the
/// results.
pub fn deliver_remote(ctx: &Context<'_>, domain: &str, rcpts: &[&Recipient]) -> (Vec<Attempted>, Farewell) {
    let message = match message(ctx) {
        Ok(m) => m,
        Err(o) => {
            let results = rcpts
                .iter()
                .map(|_| Attempted::local("none", o.clone()))
                .collect();
            return (results, Farewell::none());
        }
    };
    match ctx.cfg.remote.lmtp_route(domain) {
        Some(server) => lmtp::deliver(ctx.cfg, ctx.resolver, ctx.pool, ctx.env, &message, server, rcpts),
        None => remote::deliver(
            ctx.cfg,
            ctx.resolver,
            ctx.outbound,
            ctx.pool,
            ctx.env,
            &message,
            domain,
            rcpts,
        ),
    }
}

/// The whole message: as the caller read it, else from the spool.
fn message<'a>(ctx: &Context<'a>) -> Result<Cow<'a, [u8]>, Outcome> {
    if let Some(m) = ctx.message {
        return Ok(Cow::Borrowed(m));
    }
    ctx.spool
        .read_message(ctx.env)
        .map(Cow::Owned)
        .map_err(|e| outcome::spool_unreadable(&ctx.spool.message_path(&ctx.env.id), &e))
}

/// Deliver one recipient: locally, or alone in a remote transaction. The
/// connection an LMTP server or a next hop took it over is let go when the
/// returned `Farewell` is dropped: after the caller has recorded the result.
pub fn deliver(ctx: &Context<'_>, rcpt: &Recipient) -> (Attempted, Farewell) {
    let mbox = match Mailbox::parse(&rcpt.addr) {
        Ok(m) => m,
        Err(_) => {
            let a = Attempted::local("none", outcome::bad_recipient_syntax(&rcpt.addr));
            return (a, Farewell::none());
        }
    };
    if let Some(domain) = remote_domain(ctx.cfg, rcpt) {
        let (mut r, farewell) = deliver_remote(ctx, &domain, &[rcpt]);
        let a = r
            .pop()
            .unwrap_or_else(|| Attempted::local("none", outcome::no_route_result()));
        return (a, farewell);
    }
    let began = std::time::Instant::now();
    let (outcome, via) = deliver_local(ctx, rcpt, &mbox);
    match via {
        // The mailboxes went to the LMTP server: the log names it.
        Some((via, farewell)) => (Attempted { outcome, ..via }, farewell),
        // Local delivery has no connection to set up: all of it is transmission.
        None => {
            let a = Attempted::local("local", outcome).timed(Timing {
                began: Some(began),
                transmit: began.elapsed(),
                ..Timing::default()
            });
            (a, Farewell::none())
        }
    }
}

/// RFC 5321 6.3-style loop check with Delivered-To (as Postfix and qmail do):
/// a copy that already passed through this recipient is looping.
fn has_delivered_to(headers: &[u8], rcpt: &str) -> bool {
    message::fields(headers).any(|f| f.is("Delivered-To") && f.value().eq_ignore_ascii_case(rcpt))
}

/// The recipient's outcome, and the LMTP attempt (with its connection)
/// when `mailbox_transport` took its mailboxes (for the log's relay= and
/// the success notice).
fn deliver_local(
    ctx: &Context<'_>,
    rcpt: &Recipient,
    mbox: &Mailbox,
) -> (Outcome, Option<(Attempted, Farewell)>) {
    if has_delivered_to(ctx.headers, &rcpt.addr) {
        return (outcome::forwarding_loop(&rcpt.addr), None);
    }
    let targets = match expand(ctx.cfg, ctx.tables, mbox) {
        Ok(t) => t,
        Err(o) => return (o, None),
    };
    let transport = ctx.cfg.local.mailbox_transport.as_ref();
    let mut remote = Vec::new();
    let mut mailboxes = Vec::new();
    let mut results = Vec::new();
    for t in targets {
        // Each target once per message: one reached before (through another
        // recipient) gives its result again instead of a second copy.
        let key = target_key(&t);
        if let Some((first, o)) = ctx.targets.get(&key) {
            results.push(outcome::duplicate_of(&first, &o));
            continue;
        }
        let o = match t {
            AliasTarget::User(name) if transport.is_some() => {
                mailboxes.push((key, name));
                continue;
            }
            AliasTarget::User(name) => deliver_user(ctx, rcpt, &name),
            AliasTarget::File(path) => deliver_as_alias_owner(ctx, rcpt, Target::Mbox(path)),
            AliasTarget::Pipe(cmd) => deliver_as_alias_owner(ctx, rcpt, Target::Pipe(cmd)),
            AliasTarget::Remote(addr) => {
                let id = remote_identity(&addr);
                if ctx.targets.recipients.contains(&id) {
                    results.push(outcome::also_a_recipient(&addr));
                } else {
                    remote.push((key, addr));
                }
                continue;
            }
        };
        ctx.targets.insert(key, &rcpt.addr, &o);
        results.push(o);
    }
    if !remote.is_empty() {
        let addrs: Vec<String> = remote.iter().map(|(_, a)| a.clone()).collect();
        let o = forward(ctx, rcpt, &addrs);
        for (key, _) in remote {
            ctx.targets.insert(key, &rcpt.addr, &o);
        }
        results.push(o);
    }
    let mut via = None;
    if let (Some(server), false) = (transport, mailboxes.is_empty()) {
        let alone = results.is_empty();
        let users: Vec<String> = mailboxes.iter().map(|(_, u)| u.clone()).collect();
        let (attempts, farewell) = deliver_mailboxes(ctx, server, rcpt, mbox, &users);
        for ((key, _), a) in mailboxes.into_iter().zip(&attempts) {
            ctx.targets.insert(key, &rcpt.addr, &a.outcome);
        }
        let (o, mut attempt) = match attempts.first() {
            Some(first) => (
                combine(attempts.iter().map(|a| a.outcome.clone()).collect()),
                first.clone(),
            ),
            None => {
                let o = outcome::no_route_result();
                (o.clone(), Attempted::local("none", o))
            }
        };
        // Besides files, commands or forwarding, the notice is ours to send.
        if !alone {
            attempt.success = Success::Delivered;
        }
        results.push(o);
        via = Some((attempt, farewell));
    }
    (combine(results), via)
}

/// The `users` of recipient `rcpt` to the LMTP server, in one transaction:
/// one attempt per user, in order, and the connection to let go.
fn deliver_mailboxes(
    ctx: &Context<'_>,
    server: &Lmtp,
    rcpt: &Recipient,
    mbox: &Mailbox,
    users: &[String],
) -> (Vec<Attempted>, Farewell) {
    let message = match message(ctx) {
        Ok(m) => m,
        Err(o) => {
            let failed = users
                .iter()
                .map(|_| Attempted::local("none", o.clone()))
                .collect();
            return (failed, Farewell::none());
        }
    };
    let lmtp_rcpts: Vec<Recipient> = users.iter().map(|u| mailbox_recipient(rcpt, mbox, u)).collect();
    let refs: Vec<&Recipient> = lmtp_rcpts.iter().collect();
    lmtp::deliver(ctx.cfg, ctx.resolver, ctx.pool, ctx.env, &message, server, &refs)
}

/// The LMTP recipient for `user`'s mailbox: the recipient itself when it is
/// the user's own address, else the user at the recipient's domain, with
/// the recipient as ORCPT unless the sender gave one (RFC 3461 4.2 lets a
/// relaying MTA add it; an LMTP server offering DSN can then tell which
/// address the mail was sent to).
fn mailbox_recipient(rcpt: &Recipient, mbox: &Mailbox, user: &str) -> Recipient {
    let addr = if user.eq_ignore_ascii_case(mbox.local()) {
        rcpt.addr.clone()
    } else {
        format!("{user}@{}", mbox.domain())
    };
    let mut r = Recipient::new(addr);
    r.notify = rcpt.notify;
    r.orcpt = rcpt
        .orcpt
        .clone()
        .or_else(|| Some(format!("rfc822;{}", rcpt.addr)));
    r
}

/// What the aliases make of local address `mbox`: its final targets, the user
/// of the same name when it is no alias; Err is the outcome when expansion fails.
pub fn expand(cfg: &Config, tables: &Tables, mbox: &Mailbox) -> Result<Vec<AliasTarget>, Outcome> {
    let local = mbox.local().to_lowercase();
    let aliases = tables.aliases();
    let is_local = |d: &str| cfg.local.is_local_domain(d);
    let read_include = |p: &Path| read_include(p);
    let mut targets = match aliases.expand(&local, &is_local, &read_include) {
        Ok(t) => t,
        Err(e @ ExpandError::Include(_)) => return Err(outcome::include_failed(&e)),
        Err(e) => return Err(outcome::alias_failed(&e)),
    };
    // RFC 5321 4.5.1: postmaster must reach someone even without an alias.
    if local == "postmaster" && targets == [AliasTarget::User("postmaster".to_owned())] {
        targets = vec![AliasTarget::User("root".to_owned())];
    }
    Ok(targets)
}

/// An :include: file names commands and files run as the aliases owner, so
/// one that others could change is refused (as sendmail refuses an unsafe
/// include): it must be a regular file writable by its owner only.
fn read_include(p: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(p)?;
    if !meta.is_file() || meta.permissions().mode() & 0o022 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "not a regular file writable only by its owner",
        ));
    }
    let text = std::fs::read_to_string(p)?;
    // Guard against a swap between the check and the read.
    match std::fs::symlink_metadata(p) {
        Ok(after) if after.ino() == meta.ino() && after.dev() == meta.dev() => Ok(text),
        _ => Err(std::io::Error::other("file changed while being read")),
    }
}

/// One outcome for all of a recipient's targets: any temporary failure
/// means try again; otherwise any permanent failure bounces.
fn combine(mut results: Vec<Outcome>) -> Outcome {
    // A single target's outcome is the recipient's as it is (with the
    // server's reply, when one decided it).
    if results.len() == 1 {
        if let Some(only) = results.pop() {
            return only;
        }
    }
    let mut delivered = Vec::new();
    let mut permanent = None;
    for r in results {
        match r.verdict() {
            Verdict::Temporary => return r,
            Verdict::Permanent => permanent = permanent.or(Some(r)),
            Verdict::Delivered => delivered.push(r.detail().to_owned()),
        }
    }
    if let Some(p) = permanent {
        return p;
    }
    delivered.dedup();
    outcome::delivered_locally(if delivered.is_empty() {
        "delivered".to_owned()
    } else {
        delivered.join(", ")
    })
}

fn job(ctx: &Context<'_>, rcpt: &Recipient, target: Target, user: Option<Passwd>) -> Job {
    Job {
        target,
        sender: ctx.env.sender.clone(),
        recipient: rcpt.addr.clone(),
        user,
        mailbox: false,
        message: ctx.spool.message_path(&ctx.env.id),
        size: ctx.env.size,
        hostname: ctx.cfg.hostname.clone(),
        pipe_timeout: ctx.cfg.local.pipe_timeout,
    }
}

fn deliver_user(ctx: &Context<'_>, rcpt: &Recipient, name: &str) -> Outcome {
    let (target, user) = match user_mailbox(ctx.cfg, ctx.tables, name) {
        Ok(m) => m,
        Err(o) => return o,
    };
    let mut j = job(ctx, rcpt, target, user);
    j.mailbox = true;
    local::deliver(&j)
}

/// The mailbox of local user `name`, and the account it is written as (None:
/// as ternd's own user, for a `local_users` user without a system account).
/// Err when there is no such user, or the template needs a home they lack.
pub fn user_mailbox(cfg: &Config, tables: &Tables, name: &str) -> Result<(Target, Option<Passwd>), Outcome> {
    if name != "root" && !tables.user_exists(name) {
        return Err(outcome::unknown_user(name));
    }
    let account = sys::getpwnam(name).or_else(|| sys::getpwnam(&name.to_lowercase()));
    let (pw, user) = match account {
        Some(pw) => (pw.clone(), Some(pw)),
        // A user of the local_users file with no system account: mail is
        // written as ternd's own user, like virtual mailboxes.
        None => {
            let (_, euid) = sys::uids();
            let pseudo = Passwd {
                name: name.to_owned(),
                uid: euid,
                gid: euid,
                home: std::path::PathBuf::new(),
                shell: String::new(),
                gecos: String::new(),
            };
            if cfg.local.mailbox.starts_with('~') {
                return Err(outcome::no_home(name, &cfg.local.mailbox));
            }
            (pseudo, None)
        }
    };
    Ok((local::mailbox_target(&cfg.local.mailbox, &pw), user))
}

/// Files and commands named in the aliases file run as the file's owner, or
/// as `nobody` when root owns it (Postfix's default_privs): never as root.
fn deliver_as_alias_owner(ctx: &Context<'_>, rcpt: &Recipient, target: Target) -> Outcome {
    let Some(pw) = alias_account(ctx.tables) else {
        return outcome::no_alias_account();
    };
    local::deliver(&job(ctx, rcpt, target, Some(pw)))
}

/// The account files and commands of the aliases file run as (see
/// `deliver_as_alias_owner`).
pub fn alias_account(tables: &Tables) -> Option<Passwd> {
    let owner = tables
        .aliases_path()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    match owner {
        Some(uid) if uid != 0 => sys::getpwuid(uid),
        _ => sys::getpwnam("nobody"),
    }
}

/// An alias pointing to other domains: queue a copy for those addresses,
/// marked with Delivered-To so a forwarding loop is caught.
fn forward(ctx: &Context<'_>, rcpt: &Recipient, to: &[String]) -> Outcome {
    let body_path = ctx.spool.message_path(&ctx.env.id);
    let result = (|| -> Result<QueueId, String> {
        let body = ctx
            .spool
            .read_message(ctx.env)
            .map_err(|e| format!("read {}: {e}", body_path.display()))?;
        let mut incoming = ctx.spool.begin().map_err(|e| e.to_string())?;
        let id = incoming.id().clone();
        incoming
            .append(format!("Delivered-To: {}\n", rcpt.addr).as_bytes())
            .and_then(|()| incoming.append(&body))
            .map_err(|e| e.to_string())?;
        let mut env = Envelope::new(id.clone(), ctx.env.sender.clone(), clock::now());
        env.protocol = "local".to_owned();
        env.body = ctx.env.body;
        env.smtputf8 = ctx.env.smtputf8;
        // RFC 8689 4: the sender's demand follows the message wherever it goes.
        env.requiretls = ctx.env.requiretls;
        env.ret = ctx.env.ret;
        env.envid = ctx.env.envid.clone();
        env.size = incoming.bytes_written();
        env.recipients = to
            .iter()
            .map(|a| {
                let mut r = Recipient::new(a.clone());
                r.notify = rcpt.notify;
                r
            })
            .collect();
        incoming.commit(&env).map_err(|e| e.to_string())?;
        ctx.spool.log_queued(&env);
        Ok(id)
    })();
    match result {
        Ok(id) => {
            let done = outcome::forwarded(&id);
            (ctx.queued)(id);
            done
        }
        Err(e) => outcome::cannot_forward(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_include_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("list");
        std::fs::write(&p, "alice\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(read_include(&p).expect("safe"), "alice\n");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(read_include(&p).is_err(), "world-writable");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        assert!(read_include(&p).is_err(), "group-writable");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).expect("symlink");
        assert!(read_include(&link).is_err(), "symlink");
    }

    #[test]
    fn delivered_to_loop_detection() {
        let h = b"Received: x\nDelivered-To: alice@example.test\nSubject: y\n";
        assert!(has_delivered_to(h, "alice@example.test"));
        assert!(has_delivered_to(h, "ALICE@example.test"));
        assert!(!has_delivered_to(h, "bob@example.test"));
    }

    #[test]
    fn combining_outcomes() {
        let d = outcome::delivered_locally("delivered to maildir");
        let t = outcome::mailbox_unavailable("locked".to_owned());
        let p = outcome::command_failed("died".to_owned());
        assert_eq!(combine(vec![d.clone(), d.clone()]), d);
        assert_eq!(combine(vec![d.clone(), p.clone(), t.clone()]), t);
        assert_eq!(combine(vec![d, p.clone()]), p);
    }
}
