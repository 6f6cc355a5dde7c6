//! SIGHUP: read the configuration again.
//!
//! A file that does not load is logged and the running configuration kept.
//! Otherwise new sessions and delivery attempts use the new one (sessions in
//! progress keep theirs); tables whose paths changed are opened anew
//! (unchanged ones reload themselves when their files change), certificates
//! are loaded again, listening addresses are rebound, and the keys the key
//! table marks as fixed at start (`config::Reload`) are logged as waiting for
//! a restart. A new file the daemon's account cannot read is not taken: the
//! key keeps the file it had, and the log says why (see `readable.rs`).

use std::sync::Arc;

use super::readable::{self, Source};
use super::start::{services, Daemon};
use crate::config::{self, keys, Config};
use crate::deliver::local::helper;
use crate::logging;
use crate::server::session::Context;
use crate::tables::Tables;
use crate::tls;

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys whose new values now apply, in key-table order.
    pub applied: Vec<&'static str>,
    /// Keys that changed but wait for a restart.
    pub need_restart: Vec<&'static str>,
    /// The new certificate did not load and the one in use was kept.
    pub kept_certificate: bool,
    /// File keys whose new file this daemon cannot read: they keep the old one.
    pub kept_files: Vec<&'static str>,
}

impl Daemon {
    /// Read the configuration file again and apply it. The error, also
    /// logged, says why the running configuration was kept.
    pub fn reload(&self) -> Result<Reloaded, String> {
        let path = &self.origin.path;
        let mut cfg = Config::load(path).map_err(|e| {
            let why = format!("{e}; keeping the running configuration");
            log::error!("SIGHUP: {why}");
            why
        })?;
        cfg.resolve_relative(&self.origin.cwd);
        let old = self.live.get();
        let kept_files = keep_unreadable(&old.cfg, &mut cfg);
        let mut kept_certificate = false;
        let tls = match tls::Source::new(&cfg) {
            Ok(t) => t.map(Arc::new),
            // Unchanged paths that no longer load (a key only root may read, in a
            // daemon that dropped root): the certificate in use stays, the rest applies.
            Err(e) if old.cfg.tls.cert == cfg.tls.cert && old.cfg.tls.key == cfg.tls.key => {
                log::warn!("SIGHUP: {e}; keeping the certificate in use");
                kept_certificate = true;
                old.tls.clone()
            }
            Err(e) => {
                let why = format!("{}: {e}; keeping the running configuration", path.display());
                log::error!("SIGHUP: {why}");
                return Err(why);
            }
        };
        // The key table says what a reload cannot change.
        let with_helper = helper::installed().is_some();
        let (mut applied, mut need_restart) = (Vec::new(), Vec::new());
        for (key, reload) in config::keys::changed(&old.cfg, &cfg) {
            if reload.needs_restart(with_helper) {
                log::warn!("SIGHUP: {key} changed; it takes effect when ternd is restarted");
                need_restart.push(key);
            } else {
                applied.push(key);
            }
        }
        // The log file by its name again: logrotate may have moved it.
        if let Err(e) = logging::reopen() {
            log::warn!("SIGHUP: cannot reopen the log file: {e}; logging on to the one open");
        }
        if old.cfg.daemon.log_level != cfg.daemon.log_level {
            logging::set_level(logging::level(cfg.daemon.log_level, self.origin.verbose));
            log::info!("SIGHUP: log_level is now {}", cfg.daemon.log_level);
        }
        let cfg = Arc::new(cfg);
        let tables = if old.cfg.local.aliases != cfg.local.aliases || old.cfg.local.users != cfg.local.users {
            Arc::new(Tables::new(&cfg))
        } else {
            old.policy.tables()
        };
        for (addrs, service) in services(&cfg) {
            self.server.rebind(service, addrs);
        }
        // Keys read again; a key that no longer loads makes its domain's
        // mail wait (logged), see MailAuth::reload.
        let mailauth = Arc::new(old.mailauth.reload(&cfg));
        self.runner
            .reconfigure(Arc::clone(&cfg), Arc::clone(&tables), Arc::clone(&mailauth));
        let mut ctx = Context::new(Arc::clone(&cfg), Arc::clone(&old.spool), tables, tls);
        ctx.shutdown = Arc::clone(&old.shutdown);
        // What guessers did before the reload still counts.
        ctx.auth_guard = Arc::clone(&old.auth_guard);
        ctx.queued = old.queued.clone();
        ctx.mailauth = mailauth;
        self.live.set(Arc::new(ctx));
        log::info!("SIGHUP: configuration reloaded from {}", path.display());
        Ok(Reloaded {
            applied,
            need_restart,
            kept_certificate,
            kept_files,
        })
    }
}

/// The files of `new` this daemon, running as its `user`, cannot read: a key
/// whose file changed keeps the one `old` had, logged as an error with the
/// fix; a file that did not change is logged as a warning, and what was last
/// read of it stays in use (the tables keep their last good copy). The
/// certificate and its key are `reload`'s own: a new pair that does not load
/// fails the reload, an unchanged one keeps the certificate in use. Returns
/// the keys kept.
fn keep_unreadable(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let bad = match readable::unreadable(new, None) {
        Ok(b) => b,
        Err(e) => {
            log::warn!("SIGHUP: cannot check the configured files: {e}");
            return Vec::new();
        }
    };
    let changed: Vec<&'static str> = keys::changed(old, new).into_iter().map(|(k, _)| k).collect();
    let mut kept = Vec::new();
    for u in &bad {
        match u.source {
            Source::Key("tls_cert" | "tls_key") => {}
            Source::Key(k) if changed.contains(&k) => {
                log::error!("SIGHUP: {u}; keeping the {k} in use");
                kept.push(k);
            }
            _ => log::warn!("SIGHUP: {u}; keeping what was last read of it"),
        }
    }
    for k in &kept {
        keys::keep(k, new, old);
    }
    kept
}
