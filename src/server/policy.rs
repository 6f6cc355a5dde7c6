//! Who may send what to whom: pure decisions over the config and the user and
//! alias tables, kept out of the session so that policy can grow without
//! touching the protocol (as Postfix keeps smtpd_check.c apart from smtpd.c).

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::smtp::address::{Domain, ForwardPath, Mailbox};
use crate::smtp::reply::{self, Reply};
use crate::tables::Tables;

pub struct Policy {
    tables: Arc<Tables>,
}

impl Policy {
    pub fn new(tables: Arc<Tables>) -> Policy {
        Policy { tables }
    }

    /// The tables this policy reads (a reload keeps them when their paths stay).
    pub fn tables(&self) -> Arc<Tables> {
        Arc::clone(&self.tables)
    }

    /// Alias targets for EXPN.
    pub fn expand(&self, name: &str) -> Option<Vec<String>> {
        self.tables.aliases().get(name).map(<[String]>::to_vec)
    }

    /// RFC 5321 4.1.1.3 and the relay rules: Ok, or the reply refusing `rcpt`.
    pub fn check_recipient(
        &self,
        cfg: &Config,
        client: Option<IpAddr>,
        authenticated: bool,
        rcpt: &ForwardPath,
    ) -> Result<(), Reply> {
        let mbox = match rcpt {
            // RFC 5321 4.5.1: postmaster must always be accepted.
            ForwardPath::Postmaster => return Ok(()),
            ForwardPath::Mailbox(m) => m,
        };
        // Local submission (ternd -i from a pipe, sendmail -bs) counts as
        // trusted; so does a client that authenticated (RFC 4954 6).
        let trusted = authenticated || client.is_none_or(|ip| cfg.session.may_relay(ip));
        if is_local(cfg, mbox) {
            // user%remote@local, "user@remote"@local, remote!user@local: the
            // old routing forms (RFC 5321 3.6.1, 3.6.2). tern never routes on
            // them; from an outsider they are relay attempts and are named so.
            if mbox.has_routing_chars() && !trusted {
                return Err(reply::relay_denied(&mbox.to_string()));
            }
            if mbox.local().eq_ignore_ascii_case("postmaster") {
                return Ok(());
            }
            // A local part with %, ! or a quoted @ is looked up as it stands, so
            // it can only match a real user; it never makes tern relay.
            if self.tables.local_exists(mbox.local()) {
                return Ok(());
            }
            return Err(reply::no_such_user(&mbox.to_string()));
        }
        if trusted {
            Ok(())
        } else {
            Err(reply::relay_denied(&mbox.to_string()))
        }
    }
}

/// Whether the mailbox's domain is one of ours. Address literals are never
/// local: tern only answers for the names it is configured with.
pub fn is_local(cfg: &Config, mbox: &Mailbox) -> bool {
    match mbox.domain() {
        Domain::Name(n) => cfg.local.is_local_domain(n),
        Domain::Literal(_) | Domain::General(_) => false,
    }
}
