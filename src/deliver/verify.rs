//! `sendmail -bv`: what delivery would do with an address, decided by the
//! same code the queue runner uses (the router's alias expansion and user
//! lookup, the pure route plan over a real MX answer), without writing or
//! sending anything: the local mailbox, what an alias expands to, where a
//! remote domain's mail would go, or the error that would bounce or defer it.

use crate::aliases::Target as AliasTarget;
use crate::config::Config;
use crate::deliver::dns::Resolver;
use crate::deliver::local::Target;
use crate::deliver::outcome::{self, Outcome};
use crate::deliver::{route, router};
use crate::smtp::address::{Domain, Mailbox};
use crate::tables::Tables;

/// One line of the answer: an address (or an alias's target, one level in),
/// and what would become of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 0 for an address asked about, 1 for what an alias expands it to.
    pub depth: usize,
    /// The address, or the file or `|command` an alias names.
    pub what: String,
    /// How it would be delivered, or the outcome that stops it.
    pub verdict: Result<String, Outcome>,
}

/// What delivery would do with `addr`: one line, followed by one per target
/// when it is an alias.
pub fn verify(cfg: &Config, tables: &Tables, resolver: &dyn Resolver, addr: &str) -> Vec<Line> {
    let line = |depth, what: &str, verdict| Line {
        depth,
        what: what.to_owned(),
        verdict,
    };
    let mbox = match Mailbox::parse(addr) {
        Ok(m) => m,
        Err(_) => return vec![line(0, addr, Err(outcome::bad_recipient_syntax(addr)))],
    };
    let domain = match mbox.domain() {
        Domain::Name(d) if cfg.local.is_local_domain(d) => None,
        Domain::Name(d) => Some(d.to_lowercase()),
        other => Some(other.to_string()),
    };
    if let Some(domain) = domain {
        return vec![line(0, addr, remote(cfg, resolver, &domain))];
    }
    let targets = match router::expand(cfg, tables, &mbox) {
        Ok(t) => t,
        Err(o) => return vec![line(0, addr, Err(o))],
    };
    // Not an alias: the user of that name.
    if let [AliasTarget::User(name)] = targets.as_slice() {
        if name.eq_ignore_ascii_case(mbox.local()) {
            return vec![line(0, addr, user(cfg, tables, name))];
        }
    }
    let mut out = vec![line(
        0,
        addr,
        Ok(format!(
            "alias, {} target{}",
            targets.len(),
            if targets.len() == 1 { "" } else { "s" }
        )),
    )];
    let account = || {
        router::alias_account(tables)
            .map(|pw| pw.name)
            .ok_or_else(outcome::no_alias_account)
    };
    for t in targets {
        out.push(match t {
            AliasTarget::User(name) => line(1, &name, user(cfg, tables, &name)),
            AliasTarget::File(path) => {
                let shown = path.display().to_string();
                line(
                    1,
                    &shown,
                    account().map(|a| format!("file (mbox), written as {a}")),
                )
            }
            AliasTarget::Pipe(cmd) => line(
                1,
                &format!("|{cmd}"),
                account().map(|a| format!("command, run as {a}")),
            ),
            AliasTarget::Remote(to) => {
                let verdict = match Mailbox::parse(&to) {
                    Ok(m) => remote(cfg, resolver, &m.domain().to_string().to_lowercase())
                        .map(|how| format!("forwarded, {how}")),
                    Err(_) => Err(outcome::bad_recipient_syntax(&to)),
                };
                line(1, &to, verdict)
            }
        });
    }
    out
}

/// A local user's mailbox.
fn user(cfg: &Config, tables: &Tables, name: &str) -> Result<String, Outcome> {
    let (target, account) = router::user_mailbox(cfg, tables, name)?;
    let mailbox = match &target {
        Target::Mbox(p) if p.as_os_str() == "/dev/null" => "discarded (/dev/null)".to_owned(),
        t => t.to_string(),
    };
    Ok(match account {
        Some(pw) => format!("local user {}, {mailbox}", pw.name),
        None => format!("local user {name} (no system account), {mailbox}"),
    })
}

/// Where SMTP delivery to `domain` would go: the route or relay host, or the
/// MX hosts in the order they would be tried.
fn remote(cfg: &Config, resolver: &dyn Resolver, domain: &str) -> Result<String, Outcome> {
    let mx = route::mx_query(cfg, domain).map(|name| resolver.mx_secured(name));
    let plan = route::plan(cfg, domain, mx.as_ref(), 0)?;
    let hosts: Vec<String> = plan
        .hops
        .iter()
        .map(|h| match h.ip {
            Some(ip) => format!("[{ip}]:{}", h.port),
            None => format!("{}:{}", h.host, h.port),
        })
        .collect();
    let how = if plan.smarthost {
        "relay_host"
    } else if plan.configured {
        "route"
    } else if plan.hops.iter().all(|h| h.implicit_mx) {
        "no MX, the domain's own address"
    } else if plan.hops.iter().any(|h| h.ip.is_some()) {
        "address literal"
    } else {
        "MX"
    };
    Ok(format!("SMTP via {how}: {}", hosts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Family;
    use crate::deliver::dns::{DnsError, Mx};
    use std::net::IpAddr;
    use std::path::Path;

    struct Dns;

    impl Resolver for Dns {
        fn mx(&self, domain: &str) -> Result<Mx, DnsError> {
            match domain {
                "mx.test" => Ok(Mx::Hosts(vec![
                    (20, "b.mx.test".into()),
                    (10, "a.mx.test".into()),
                ])),
                "plain.test" => Ok(Mx::Implicit),
                "null.test" => Ok(Mx::Null),
                "gone.test" => Err(DnsError::NxDomain),
                _ => Err(DnsError::Temporary("SERVFAIL".into())),
            }
        }

        fn addrs(&self, _host: &str, _family: Family) -> Result<Vec<IpAddr>, DnsError> {
            Err(DnsError::Temporary("not asked".into()))
        }
    }

    fn setup(dir: &Path, extra: &str) -> (Config, Tables) {
        let users = dir.join("users");
        std::fs::write(&users, "alice\nbob\n").unwrap();
        let aliases = dir.join("aliases");
        std::fs::write(
            &aliases,
            "team: alice, bob@h.test, far@mx.test, /var/log/team, \"|/bin/list x\"\nghost: nobody-here\n",
        )
        .unwrap();
        let text = format!(
            "hostname = h.test\nlocal_domains = h.test\nlocal_users = {}\naliases = {}\nmailbox = /var/mail/%u\n{extra}",
            users.display(),
            aliases.display()
        );
        let cfg = Config::parse(&text, Path::new("t.conf")).unwrap();
        let tables = Tables::new(&cfg);
        (cfg, tables)
    }

    fn text(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| match &l.verdict {
                Ok(how) => format!("{}{}: {how}", "  ".repeat(l.depth), l.what),
                Err(o) => format!(
                    "{}{}: {} {}",
                    "  ".repeat(l.depth),
                    l.what,
                    o.status(),
                    o.detail()
                ),
            })
            .collect()
    }

    #[test]
    fn what_delivery_would_do() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, tables) = setup(dir.path(), "route = routed.test [127.0.0.1]:2525\n");
        let v = |a: &str| text(&verify(&cfg, &tables, &Dns, a));
        assert_eq!(
            v("alice@h.test"),
            ["alice@h.test: local user alice (no system account), mbox /var/mail/alice"]
        );
        assert_eq!(v("carol@h.test"), ["carol@h.test: 5.1.1 unknown user: \"carol\""]);
        let team = v("team@h.test");
        assert_eq!(team[0], "team@h.test: alias, 5 targets");
        assert_eq!(
            team[1],
            "  alice: local user alice (no system account), mbox /var/mail/alice"
        );
        assert_eq!(
            team[2],
            "  bob: local user bob (no system account), mbox /var/mail/bob"
        );
        assert_eq!(
            team[3],
            "  far@mx.test: forwarded, SMTP via MX: a.mx.test:25, b.mx.test:25"
        );
        assert!(
            team[4].starts_with("  /var/log/team: file (mbox), written as "),
            "{team:?}"
        );
        assert!(
            team[5].starts_with("  |/bin/list x: command, run as "),
            "{team:?}"
        );
        assert_eq!(
            v("ghost@h.test"),
            [
                "ghost@h.test: alias, 1 target",
                "  nobody-here: 5.1.1 unknown user: \"nobody-here\""
            ]
        );
        assert_eq!(
            v("x@mx.test"),
            ["x@mx.test: SMTP via MX: a.mx.test:25, b.mx.test:25"]
        );
        assert_eq!(
            v("x@plain.test"),
            ["x@plain.test: SMTP via no MX, the domain's own address: plain.test:25"]
        );
        assert_eq!(
            v("x@routed.test"),
            ["x@routed.test: SMTP via route: [127.0.0.1]:2525"]
        );
        assert_eq!(
            v("x@[192.0.2.1]"),
            ["x@[192.0.2.1]: SMTP via address literal: [192.0.2.1]:25"]
        );
        let null = v("x@null.test");
        assert!(null[0].starts_with("x@null.test: 5.1.10 "), "{null:?}");
        let gone = v("x@gone.test");
        assert!(gone[0].starts_with("x@gone.test: 5.1.2 "), "{gone:?}");
        let later = verify(&cfg, &tables, &Dns, "x@broken.test");
        assert!(
            later[0].verdict.as_ref().is_err_and(Outcome::is_temporary),
            "{later:?}"
        );
        assert!(v("not an address")[0].starts_with("not an address: 5.1.3 "));

        let (cfg, tables) = setup(dir.path(), "relay_host = [192.0.2.9]:587\n");
        assert_eq!(
            text(&verify(&cfg, &tables, &Dns, "x@mx.test")),
            ["x@mx.test: SMTP via relay_host: [192.0.2.9]:587"]
        );
    }
}
