//! The key table: every key tern.conf knows, in one place, with how often it
//! may appear, how its value is parsed and stored, and what a SIGHUP does
//! when it changes. Adding a key is one row here plus its field in
//! [`Config`](super::Config), its entry in man/tern.conf.5 and etc/tern.conf.

use super::value::{
    account_name, boolean, count, delay, dns_servers, domain, inet_protocols, listen, listen_list,
    local_domains, log_level, mailbox, networks, next_hop, nonempty, optional_address, optional_duration,
    path, port_number, relay_auth, route, services, size, spool_sync, syslog_facility, timeout, tls_policy,
};
use super::Config;

/// How often a key may appear in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Times {
    Once,
    /// Each occurrence adds to the value; its setter must append rather than replace.
    Repeatable,
}

/// What a SIGHUP does with a changed value of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The new value applies to sessions and delivery attempts that start
    /// afterwards (listeners are rebound, tables and certificates reopened).
    Applies,
    /// Fixed when the daemon starts (the spool it locked, the threads it
    /// started, the account it became): a change is logged and waits for a restart.
    Restart,
    /// Fixed at start in a daemon started as root, whose delivery helper
    /// (forked before dropping root) keeps the value it started with;
    /// otherwise the new value applies.
    RestartWithHelper,
}

impl Reload {
    /// Whether a change waits for a restart, in a daemon with (`with_helper`)
    /// or without a root delivery helper.
    pub fn needs_restart(self, with_helper: bool) -> bool {
        match self {
            Reload::Applies => false,
            Reload::Restart => true,
            Reload::RestartWithHelper => with_helper,
        }
    }
}

/// Stores one parsed value into the config, or says what is wrong with it
/// (without the key; the caller prefixes it).
type Setter = fn(&mut Config, &str) -> Result<(), String>;

/// One row of the table.
pub(super) struct Key {
    pub(super) name: &'static str,
    pub(super) times: Times,
    pub(super) reload: Reload,
    pub(super) set: Setter,
    /// Whether two configurations hold the same value for this key.
    same: fn(&Config, &Config) -> bool,
}

/// A row: `key!(NAME, TIMES, RELOAD, FIELD.PATH, |c, v| SETTER)`. The field
/// path gives the comparison a reload uses to see whether the key changed.
macro_rules! key {
    ($name:literal, $times:ident, $reload:ident, $($field:ident).+, $set:expr) => {
        Key {
            name: $name,
            times: Times::$times,
            reload: Reload::$reload,
            set: $set,
            same: |a, b| a.$($field).+ == b.$($field).+,
        }
    };
}

/// Every key. The order is the order of man/tern.conf.5's sections.
#[rustfmt::skip]
static KEYS: &[Key] = &[
    // Identity and listeners.
    key!("hostname", Once, Applies, hostname, |c, v| domain(v).map(|x| c.hostname = x.to_owned())),
    key!("listen", Once, Applies, listen.smtp, |c, v| listen(v).map(|x| c.listen.smtp = x)),
    key!("submission", Once, Applies, listen.submission, |c, v| listen_list(v).map(|x| c.listen.submission = x)),
    key!("smtps", Once, Applies, listen.smtps, |c, v| listen_list(v).map(|x| c.listen.smtps = x)),
    key!("proxy_protocol", Once, Applies, listen.proxy_protocol, |c, v| services(v).map(|x| c.listen.proxy_protocol = x)),
    key!("proxy_from", Once, Applies, listen.proxy_from, |c, v| networks(v).map(|x| c.listen.proxy_from = x)),
    key!("max_sessions", Once, Restart, listen.max_sessions, |c, v| count(v).map(|x| c.listen.max_sessions = x)),
    key!("max_sessions_per_ip", Once, Restart, listen.max_sessions_per_ip, |c, v| count(v).map(|x| c.listen.max_sessions_per_ip = x)),
    // Server TLS and AUTH.
    key!("tls_cert", Once, Applies, tls.cert, |c, v| path(v).map(|x| c.tls.cert = Some(x))),
    key!("tls_key", Once, Applies, tls.key, |c, v| path(v).map(|x| c.tls.key = Some(x))),
    key!("auth_users", Once, Applies, auth.users, |c, v| path(v).map(|x| c.auth.users = Some(x))),
    key!("sender_map", Once, Applies, auth.sender_map, |c, v| path(v).map(|x| c.auth.sender_map = Some(x))),
    key!("auth_failure_delay", Once, Applies, auth.failure_delay, |c, v| delay(v).map(|x| c.auth.failure_delay = x)),
    // What a session accepts, and its limits.
    key!("relay_networks", Once, Applies, session.relay_networks, |c, v| networks(v).map(|x| c.session.relay_networks = x)),
    key!("max_message_size", Once, Applies, session.max_message_size, |c, v| size(v).map(|x| c.session.max_message_size = x)),
    key!("max_recipients", Once, Applies, session.max_recipients, |c, v| count(v).map(|x| c.session.max_recipients = x)),
    key!("max_errors", Once, Applies, session.max_errors, |c, v| count(v).map(|x| c.session.max_errors = x)),
    key!("max_received", Once, Applies, session.max_received, |c, v| count(v).map(|x| c.session.max_received = x)),
    key!("greeting_timeout", Once, Applies, session.greeting_timeout, |c, v| timeout(v).map(|x| c.session.greeting_timeout = x)),
    key!("command_timeout", Once, Applies, session.command_timeout, |c, v| timeout(v).map(|x| c.session.command_timeout = x)),
    key!("data_timeout", Once, Applies, session.data_timeout, |c, v| timeout(v).map(|x| c.session.data_timeout = x)),
    key!("stress_timeout", Once, Applies, session.stress_timeout, |c, v| timeout(v).map(|x| c.session.stress_timeout = x)),
    key!("harvest_threshold", Once, Applies, session.harvest_threshold, |c, v| count(v).map(|x| c.session.harvest_threshold = x)),
    key!("harvest_delay", Once, Applies, session.harvest_delay, |c, v| delay(v).map(|x| c.session.harvest_delay = x)),
    key!("harvest_limit", Once, Applies, session.harvest_limit, |c, v| count(v).map(|x| c.session.harvest_limit = x)),
    key!("expn", Once, Applies, session.expn, |c, v| boolean(v).map(|x| c.session.expn = x)),
    key!("vrfy", Once, Applies, session.vrfy, |c, v| boolean(v).map(|x| c.session.vrfy = x)),
    // The spool.
    key!("spool", Once, Restart, spool.dir, |c, v| path(v).map(|x| c.spool.dir = x)),
    key!("spool_sync", Once, Restart, spool.sync, |c, v| spool_sync(v).map(|x| c.spool.sync = x)),
    // Local delivery.
    key!("local_domains", Once, Applies, local.domains, |c, v| local_domains(v).map(|x| c.local.domains = x)),
    key!("local_users", Once, Applies, local.users, |c, v| path(v).map(|x| c.local.users = Some(x))),
    key!("aliases", Once, Applies, local.aliases, |c, v| path(v).map(|x| c.local.aliases = Some(x))),
    // The delivery helper recomputes mailboxes with the template it started with.
    key!("mailbox", Once, RestartWithHelper, local.mailbox, |c, v| mailbox(v).map(|x| c.local.mailbox = x)),
    key!("pipe_timeout", Once, Applies, local.pipe_timeout, |c, v| timeout(v).map(|x| c.local.pipe_timeout = x)),
    // The queue.
    key!("retry_initial", Once, Applies, queue.retry_initial, |c, v| timeout(v).map(|x| c.queue.retry_initial = x)),
    key!("retry_max", Once, Applies, queue.retry_max, |c, v| timeout(v).map(|x| c.queue.retry_max = x)),
    key!("queue_lifetime", Once, Applies, queue.lifetime, |c, v| timeout(v).map(|x| c.queue.lifetime = x)),
    key!("delay_warning", Once, Applies, queue.delay_warning, |c, v| optional_duration(v).map(|x| c.queue.delay_warning = x)),
    key!("delivery_threads", Once, Restart, queue.delivery_threads, |c, v| count(v).map(|x| c.queue.delivery_threads = x)),
    key!("double_bounce_to_postmaster", Once, Applies, queue.double_bounce_to_postmaster, |c, v| boolean(v).map(|x| c.queue.double_bounce_to_postmaster = x)),
    key!("queue_only", Once, Restart, queue.only, |c, v| boolean(v).map(|x| c.queue.only = x)),
    // Remote delivery: DNS, routes, the SMTP client.
    key!("dns_servers", Once, Restart, remote.dns_servers, |c, v| dns_servers(v).map(|x| c.remote.dns_servers = x)),
    key!("dns_timeout", Once, Restart, remote.dns_timeout, |c, v| timeout(v).map(|x| c.remote.dns_timeout = x)),
    key!("route", Repeatable, Applies, remote.routes, |c, v| route(v).map(|x| c.remote.routes.push(x))),
    key!("relay_host", Once, Applies, remote.relay_host, |c, v| next_hop(v).map(|x| c.remote.relay_host = Some(x))),
    key!("relay_auth", Once, Applies, remote.relay_auth, |c, v| relay_auth(v).map(|x| c.remote.relay_auth = Some(x))),
    key!("smtp_tls", Once, Applies, remote.tls, |c, v| tls_policy(v).map(|x| c.remote.tls = x)),
    key!("tls_ca_file", Once, Applies, remote.tls_ca_file, |c, v| path(v).map(|x| c.remote.tls_ca_file = Some(x))),
    key!("inet_protocols", Once, Applies, remote.inet_protocols, |c, v| inet_protocols(v).map(|x| c.remote.inet_protocols = x)),
    key!("mx_port", Once, Applies, remote.mx_port, |c, v| {
        port_number(nonempty(v)?)
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("bad port {v:?}"))
            .map(|x| c.remote.mx_port = x)
    }),
    key!("smtp_connect_timeout", Once, Applies, remote.connect_timeout, |c, v| timeout(v).map(|x| c.remote.connect_timeout = x)),
    key!("smtp_helo_timeout", Once, Applies, remote.helo_timeout, |c, v| timeout(v).map(|x| c.remote.helo_timeout = x)),
    key!("smtp_command_timeout", Once, Applies, remote.command_timeout, |c, v| timeout(v).map(|x| c.remote.command_timeout = x)),
    key!("smtp_data_timeout", Once, Applies, remote.data_timeout, |c, v| timeout(v).map(|x| c.remote.data_timeout = x)),
    key!("smtp_data_done_timeout", Once, Applies, remote.data_done_timeout, |c, v| timeout(v).map(|x| c.remote.data_done_timeout = x)),
    key!("smtp_connection_cache_time", Once, Applies, remote.connection_cache_time, |c, v| optional_duration(v).map(|x| c.remote.connection_cache_time = x)),
    key!("max_connections_per_domain", Once, Applies, remote.max_connections_per_domain, |c, v| count(v).map(|x| c.remote.max_connections_per_domain = x)),
    // The daemon.
    key!("pid_file", Once, Restart, daemon.pid_file, |c, v| path(v).map(|x| c.daemon.pid_file = x)),
    key!("shutdown_grace", Once, Applies, daemon.shutdown_grace, |c, v| timeout(v).map(|x| c.daemon.shutdown_grace = x)),
    key!("user", Once, Restart, daemon.user, |c, v| account_name(v).map(|x| c.daemon.user = x)),
    key!("log_level", Once, Applies, daemon.log_level, |c, v| log_level(v).map(|x| c.daemon.log_level = x)),
    key!("syslog_facility", Once, Restart, daemon.syslog_facility, |c, v| syslog_facility(v).map(|x| c.daemon.syslog_facility = x)),
    key!("metrics_listen", Once, Restart, daemon.metrics_listen, |c, v| optional_address(v).map(|x| c.daemon.metrics_listen = x)),
];

/// The row of `name`, if it is a key.
pub(super) fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// Every key and what a reload does with it, in table order.
pub fn all() -> impl Iterator<Item = (&'static str, Reload)> {
    KEYS.iter().map(|k| (k.name, k.reload))
}

/// The keys whose values differ between `old` and `new`, with what a reload
/// does with each, in table order.
pub fn changed(old: &Config, new: &Config) -> Vec<(&'static str, Reload)> {
    KEYS.iter()
        .filter(|k| !(k.same)(old, new))
        .map(|k| (k.name, k.reload))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::Path;

    fn p(text: &str) -> Config {
        Config::parse(text, Path::new("t.conf")).unwrap()
    }

    #[test]
    fn names_are_unique_and_lower_case() {
        let mut seen = HashSet::new();
        for (name, _) in all() {
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert!(find(name).is_some());
        }
        assert!(find("Listen").is_none());
        assert!(seen.len() >= 60);
    }

    #[test]
    fn changed_names_each_key_that_differs() {
        let base = p("");
        assert!(changed(&base, &p("")).is_empty());
        let new = p("max_errors = 3\nspool = /elsewhere\nroute = a.test [127.0.0.1]:25\nmailbox = ~/Mail/\n");
        assert_eq!(
            changed(&base, &new),
            vec![
                ("max_errors", Reload::Applies),
                ("spool", Reload::Restart),
                ("mailbox", Reload::RestartWithHelper),
                ("route", Reload::Applies),
            ]
        );
        // The same value written differently is no change.
        assert!(changed(&p("max_errors = 60"), &p("max_errors = 0060")).is_empty());
        assert!(changed(&p("data_timeout = 1m"), &p("data_timeout = 60")).is_empty());
    }

    /// Every key's setter must reach the field its comparison reads: a
    /// value that parses differently from the default must show as changed.
    #[test]
    fn each_setter_writes_the_field_it_compares() {
        let base = p("");
        let samples: &[(&str, &str)] = &[
            ("hostname", "other.example"),
            ("listen", "127.0.0.1:2"),
            ("submission", "127.0.0.1:3"),
            ("smtps", "127.0.0.1:4"),
            ("proxy_protocol", "smtp"),
            ("proxy_from", "10.0.0.1"),
            ("max_sessions", "3"),
            ("max_sessions_per_ip", "3"),
            ("tls_cert", "/c"),
            ("tls_key", "/k"),
            ("auth_users", "/u"),
            ("sender_map", "/s"),
            ("auth_failure_delay", "7"),
            ("relay_networks", "10.0.0.0/8"),
            ("max_message_size", "1k"),
            ("max_recipients", "3"),
            ("max_errors", "3"),
            ("max_received", "3"),
            ("greeting_timeout", "7"),
            ("command_timeout", "7"),
            ("data_timeout", "7"),
            ("stress_timeout", "7"),
            ("harvest_threshold", "3"),
            ("harvest_delay", "7"),
            ("harvest_limit", "3"),
            ("expn", "yes"),
            ("vrfy", "yes"),
            ("spool", "/x"),
            ("spool_sync", "fsync"),
            ("local_domains", "x.test"),
            ("local_users", "/u"),
            ("aliases", "/a"),
            ("mailbox", "/m/%u"),
            ("pipe_timeout", "7"),
            ("retry_initial", "7"),
            ("retry_max", "7"),
            ("queue_lifetime", "7"),
            ("delay_warning", "0"),
            ("delivery_threads", "3"),
            ("double_bounce_to_postmaster", "yes"),
            ("queue_only", "yes"),
            ("dns_servers", "127.0.0.1"),
            ("dns_timeout", "7"),
            ("route", "x.test [127.0.0.1]"),
            ("relay_host", "[127.0.0.1]"),
            ("relay_auth", "u:p"),
            ("smtp_tls", "verify"),
            ("tls_ca_file", "/ca"),
            ("inet_protocols", "ipv4"),
            ("mx_port", "2525"),
            ("smtp_connect_timeout", "7"),
            ("smtp_helo_timeout", "7"),
            ("smtp_command_timeout", "7"),
            ("smtp_data_timeout", "7"),
            ("smtp_data_done_timeout", "7"),
            ("smtp_connection_cache_time", "0"),
            ("max_connections_per_domain", "3"),
            ("pid_file", "/p"),
            ("shutdown_grace", "7"),
            ("user", "other"),
            ("log_level", "debug"),
            ("syslog_facility", "local1"),
            ("metrics_listen", "127.0.0.1:9125"),
        ];
        assert_eq!(samples.len(), all().count(), "a key without a sample");
        for (key, value) in samples {
            let mut c = p("");
            let k = find(key).unwrap_or_else(|| panic!("{key} is not a key"));
            (k.set)(&mut c, value).unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
            let names: Vec<&str> = changed(&base, &c).into_iter().map(|(n, _)| n).collect();
            assert_eq!(names, vec![*key], "{key} = {value}");
        }
    }
}
