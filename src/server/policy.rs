//! Who may send what to whom: pure decisions over the config and the user and
//! alias tables, kept out of the session so that policy can grow without
//! touching the protocol (as Postfix keeps smtpd_check.c apart from smtpd.c).
//!
//! Decisions are typed: a refusal says what it is ([`Refusal`]) and knows the
//! reply it turns into, so the session acts on the kind (an unknown user
//! counts toward the harvest limits) and never on a reply code.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::smtp::address::{Domain, ForwardPath, Mailbox};
use crate::smtp::reply::{self, Reply};
use crate::tables::Tables;

/// Why a recipient is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A local domain without such a user or alias (550 5.1.1): counted
    /// toward the directory-harvest limits.
    UnknownUser(Mailbox),
    /// Not ours, and the client may not relay (554 5.7.1); also a local
    /// address with source-routing characters from an outsider.
    RelayDenied(Mailbox),
}

impl Refusal {
    /// The reply the client gets.
    pub fn reply(&self) -> Reply {
        match self {
            Refusal::UnknownUser(m) => reply::no_such_user(&m.to_string()),
            Refusal::RelayDenied(m) => reply::relay_denied(&m.to_string()),
        }
    }

    /// Whether it names a user that does not exist here (harvest defence).
    pub fn is_unknown_user(&self) -> bool {
        matches!(self, Refusal::UnknownUser(_))
    }
}

/// The client a decision is about.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// None for local submission (`ternd -i` from a pipe, `sendmail -bs`).
    pub ip: Option<IpAddr>,
    /// It authenticated (RFC 4954 6: may relay).
    pub authenticated: bool,
}

impl Client {
    /// Inside our domain: it may relay, its mail is DKIM-signed and not
    /// checked. Local submission counts as such; so does a client that
    /// authenticated (RFC 4954 6), and one in `relay_networks`.
    pub fn trusted(&self, cfg: &Config) -> bool {
        self.authenticated || self.ip.is_none_or(|ip| cfg.session.may_relay(ip))
    }
}

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

    /// RFC 5321 4.1.1.3 and the relay rules: whether `rcpt` is accepted from
    /// `client`. VRFY asks the same question (Postfix's smtpd_check_rcpt).
    pub fn check_recipient(&self, cfg: &Config, client: Client, rcpt: &ForwardPath) -> Result<(), Refusal> {
        let mbox = match rcpt {
            // RFC 5321 4.5.1: postmaster must always be accepted.
            ForwardPath::Postmaster => return Ok(()),
            ForwardPath::Mailbox(m) => m,
        };
        let trusted = client.trusted(cfg);
        if is_local(cfg, mbox) {
            // user%remote@local, "user@remote"@local, remote!user@local: the
            // old routing forms (RFC 5321 3.6.1, 3.6.2). tern never routes on
            // them; from an outsider they are relay attempts and are named so.
            if mbox.has_routing_chars() && !trusted {
                return Err(Refusal::RelayDenied(mbox.clone()));
            }
            if mbox.local().eq_ignore_ascii_case("postmaster") {
                return Ok(());
            }
            // A local part with %, ! or a quoted @ is looked up as it stands, so
            // it can only match a real user; it never makes tern relay.
            if self.tables.local_exists(mbox.local()) {
                return Ok(());
            }
            return Err(Refusal::UnknownUser(mbox.clone()));
        }
        if trusted {
            Ok(())
        } else {
            Err(Refusal::RelayDenied(mbox.clone()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn setup() -> (tempfile::TempDir, Config, Policy) {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, "alice\nBob\n").unwrap();
        let aliases = dir.path().join("aliases");
        std::fs::write(&aliases, "info: alice\nsales: alice, bob@remote.test\n").unwrap();
        let text = format!(
            "local_domains = example.org\nrelay_networks = 192.0.2.0/24\nlocal_users = {}\naliases = {}\n",
            users.display(),
            aliases.display()
        );
        let cfg = Config::parse(&text, Path::new("t.conf")).unwrap();
        let policy = Policy::new(Arc::new(Tables::new(&cfg)));
        (dir, cfg, policy)
    }

    fn mb(s: &str) -> ForwardPath {
        ForwardPath::Mailbox(Mailbox::parse(s).unwrap())
    }

    fn from(ip: &str) -> Client {
        Client {
            ip: Some(ip.parse().unwrap()),
            authenticated: false,
        }
    }

    const OUTSIDER: &str = "203.0.113.5";
    const RELAY: &str = "192.0.2.9";

    #[test]
    fn local_recipients() {
        let (_d, cfg, p) = setup();
        for rcpt in [
            "alice@example.org",
            "ALICE@Example.ORG",
            "bob@example.org",
            "info@example.org",
        ] {
            assert_eq!(
                p.check_recipient(&cfg, from(OUTSIDER), &mb(rcpt)),
                Ok(()),
                "{rcpt}"
            );
        }
        // RFC 5321 4.5.1: postmaster, bare or at a local domain, with no such user.
        assert_eq!(
            p.check_recipient(&cfg, from(OUTSIDER), &ForwardPath::Postmaster),
            Ok(())
        );
        assert_eq!(
            p.check_recipient(&cfg, from(OUTSIDER), &mb("PostMaster@example.org")),
            Ok(())
        );
    }

    #[test]
    fn unknown_user_is_typed_and_answers_550_5_1_1() {
        let (_d, cfg, p) = setup();
        for client in [from(OUTSIDER), from(RELAY)] {
            let r = p
                .check_recipient(&cfg, client, &mb("mallory@example.org"))
                .unwrap_err();
            assert!(r.is_unknown_user());
            assert_eq!(
                r,
                Refusal::UnknownUser(Mailbox::parse("mallory@example.org").unwrap())
            );
            let reply = r.reply();
            assert_eq!((reply.code, reply.esc), (550, reply::no_such_user("").esc));
            assert!(reply.to_string().contains("<mallory@example.org>"), "{reply}");
        }
    }

    #[test]
    fn relaying() {
        let (_d, cfg, p) = setup();
        let remote = mb("x@remote.test");
        let r = p.check_recipient(&cfg, from(OUTSIDER), &remote).unwrap_err();
        assert!(matches!(r, Refusal::RelayDenied(_)));
        assert!(!r.is_unknown_user());
        assert_eq!(
            (r.reply().code, r.reply().esc),
            (554, reply::relay_denied("").esc)
        );
        assert_eq!(p.check_recipient(&cfg, from(RELAY), &remote), Ok(()));
        // IPv4 peers seen through a dual-stack socket.
        assert_eq!(p.check_recipient(&cfg, from("::ffff:192.0.2.9"), &remote), Ok(()));
        let local = Client {
            ip: None,
            authenticated: false,
        };
        assert_eq!(p.check_recipient(&cfg, local, &remote), Ok(()));
        let authed = Client {
            ip: Some(OUTSIDER.parse().unwrap()),
            authenticated: true,
        };
        assert_eq!(p.check_recipient(&cfg, authed, &remote), Ok(()));
        // An address literal is never local: a relay question.
        let literal = mb("alice@[127.0.0.1]");
        assert!(matches!(
            p.check_recipient(&cfg, from(OUTSIDER), &literal),
            Err(Refusal::RelayDenied(_))
        ));
    }

    #[test]
    fn routing_characters_in_a_local_address() {
        let (_d, cfg, p) = setup();
        for rcpt in ["x%remote.test@example.org", "remote.test!x@example.org"] {
            let r = p.check_recipient(&cfg, from(OUTSIDER), &mb(rcpt)).unwrap_err();
            assert!(matches!(r, Refusal::RelayDenied(_)), "{rcpt}");
            // A trusted client: looked up as it stands, and no such user.
            let r = p.check_recipient(&cfg, from(RELAY), &mb(rcpt)).unwrap_err();
            assert!(r.is_unknown_user(), "{rcpt}");
        }
    }

    #[test]
    fn expand_lists_alias_targets() {
        let (_d, _cfg, p) = setup();
        assert_eq!(
            p.expand("sales"),
            Some(vec!["alice".to_owned(), "bob@remote.test".to_owned()])
        );
        assert_eq!(p.expand("nobody"), None);
        assert!(Arc::ptr_eq(&p.tables(), &p.tables));
    }
}
