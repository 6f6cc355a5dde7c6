//! The key table: every key tern.conf knows, in one place, with how often it
//! may appear, how its value is parsed and stored, and what a SIGHUP does
//! when it changes, and which keys name files the daemon reads once it has
//! dropped root (`file` rows: checked at start, by `ternd -n` and on reload).
//! Adding a key is one row here plus its field in
//! [`Config`](super::Config), its entry in man/tern.conf.5 and etc/tern.conf.

use super::value::{
    account_name, address, boolean, count, delay, dkim_sign, dns_servers, header_names, hostname,
    inet_protocols, limit, listen, listen_list, lmtp, local_domains, log_level, macro_value, mailbox,
    milter_action, milter_list, milter_protocol, mx_port, networks, next_hop, optional_address,
    optional_duration, origin, path, policy_action, policy_list, relay_auth, route, services, size,
    spf_reject, spool_sync, syslog_facility, text, timeout, tls_override, tls_policy, trust_ad,
};
use std::path::Path;

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
    /// Give this key the value it has in another configuration.
    keep: fn(&mut Config, &Config),
    /// For files the daemon reads after dropping root: their paths, as set.
    files: Option<fn(&Config) -> Vec<&Path>>,
}

/// A row: `key!(NAME, TIMES, RELOAD, FIELD.PATH, PARSER)` stores what
/// `PARSER` makes of the value in the field; `Some(PARSER)` wraps it for an
/// optional field, `push(PARSER)` appends it to a list, and `file` is an
/// optional path to a file the daemon reads as its `user` (so it must be
/// readable by that account); `files(GETTER)` after a row names such files
/// inside its values. The field path also gives the comparison a reload uses
/// to see whether the key changed.
macro_rules! key {
    ($name:literal, $times:ident, $reload:ident, $($field:ident).+, file) => {
        Key {
            files: Some(|c| c.$($field).+.as_deref().into_iter().collect()),
            ..key!($name, $times, $reload, $($field).+, Some(path))
        }
    };
    ($name:literal, $times:ident, $reload:ident, $($field:ident).+, push($parse:expr), files($files:expr)) => {
        Key {
            files: Some($files),
            ..key!($name, $times, $reload, $($field).+, push($parse))
        }
    };
    ($name:literal, $times:ident, $reload:ident, $($field:ident).+, Some($parse:expr)) => {
        key!($name, $times, $reload, $($field).+, |v| $parse(v).map(Some))
    };
    ($name:literal, $times:ident, $reload:ident, $($field:ident).+, push($parse:expr)) => {
        Key {
            name: $name,
            times: Times::$times,
            reload: Reload::$reload,
            set: |c, v| $parse(v).map(|x| c.$($field).+.push(x)),
            same: |a, b| a.$($field).+ == b.$($field).+,
            keep: |new, old| new.$($field).+.clone_from(&old.$($field).+),
            files: None,
        }
    };
    ($name:literal, $times:ident, $reload:ident, $($field:ident).+, $parse:expr) => {
        Key {
            name: $name,
            times: Times::$times,
            reload: Reload::$reload,
            set: |c, v| $parse(v).map(|x| c.$($field).+ = x),
            same: |a, b| a.$($field).+ == b.$($field).+,
            keep: |new, old| new.$($field).+.clone_from(&old.$($field).+),
            files: None,
        }
    };
}

/// Every key. The order is the order of man/tern.conf.5's sections.
#[rustfmt::skip]
static KEYS: &[Key] = &[
    // Identity and listeners.
    key!("hostname", Once, Applies, hostname, hostname),
    key!("origin", Once, Applies, origin, origin),
    key!("listen", Once, Applies, listen.smtp, listen),
    key!("submission", Once, Applies, listen.submission, listen_list),
    key!("smtps", Once, Applies, listen.smtps, listen_list),
    key!("proxy_protocol", Once, Applies, listen.proxy_protocol, services),
    key!("proxy_from", Once, Applies, listen.proxy_from, networks),
    key!("max_sessions", Once, Restart, listen.max_sessions, count),
    key!("max_sessions_per_ip", Once, Restart, listen.max_sessions_per_ip, count),
    key!("refuse_mail", Once, Applies, listen.refuse_mail, services),
    // Server TLS and AUTH.
    key!("tls_cert", Once, Applies, tls.cert, file),
    key!("tls_key", Once, Applies, tls.key, file),
    key!("auth_users", Once, Applies, auth.users, file),
    key!("sender_map", Once, Applies, auth.sender_map, file),
    key!("auth_failure_delay", Once, Applies, auth.failure_delay, delay),
    key!("auth_failure_limit", Once, Applies, auth.failure_limit, count),
    key!("auth_failure_window", Once, Applies, auth.failure_window, timeout),
    // What a session accepts, and its limits.
    key!("relay_networks", Once, Applies, session.relay_networks, networks),
    key!("max_message_size", Once, Applies, session.max_message_size, size),
    key!("max_recipients", Once, Applies, session.max_recipients, count),
    key!("max_transactions", Once, Applies, session.max_transactions, count),
    key!("message_drop_headers", Once, Applies, session.drop_headers, header_names),
    key!("max_errors", Once, Applies, session.max_errors, count),
    key!("max_received", Once, Applies, session.max_received, count),
    key!("greeting_timeout", Once, Applies, session.greeting_timeout, timeout),
    key!("command_timeout", Once, Applies, session.command_timeout, timeout),
    key!("data_timeout", Once, Applies, session.data_timeout, timeout),
    key!("stress_timeout", Once, Applies, session.stress_timeout, timeout),
    key!("harvest_threshold", Once, Applies, session.harvest_threshold, count),
    key!("harvest_delay", Once, Applies, session.harvest_delay, delay),
    key!("harvest_limit", Once, Applies, session.harvest_limit, count),
    key!("expn", Once, Applies, session.expn, boolean),
    key!("vrfy", Once, Applies, session.vrfy, boolean),
    key!("strict_rfc821_envelopes", Once, Applies, session.strict_rfc821_envelopes, boolean),
    key!("junk_command_limit", Once, Applies, session.junk_command_limit, count),
    key!("junk_command_delay", Once, Applies, session.junk_command_delay, delay),
    key!("requiretls", Once, Applies, session.requiretls, boolean),
    // Milters and policy services: a session asks those of the configuration
    // it started with.
    key!("milters", Once, Applies, milter.smtp_list, milter_list),
    key!("non_smtp_milters", Once, Applies, milter.non_smtp_list, milter_list),
    key!("milter_default_action", Once, Applies, milter.default_action, milter_action),
    key!("milter_protocol", Once, Applies, milter.protocol, milter_protocol),
    key!("milter_connect_timeout", Once, Applies, milter.connect_timeout, timeout),
    key!("milter_command_timeout", Once, Applies, milter.command_timeout, timeout),
    key!("milter_content_timeout", Once, Applies, milter.content_timeout, timeout),
    key!("milter_macro_daemon_name", Once, Applies, milter.macro_daemon_name, macro_value),
    key!("milter_macro_v", Once, Applies, milter.macro_v, macro_value),
    key!("policy_services", Once, Applies, policy.list, policy_list),
    key!("policy_service_timeout", Once, Applies, policy.timeout, timeout),
    key!("policy_service_default_action", Once, Applies, policy.default_action, policy_action),
    key!("policy_service_try_limit", Once, Applies, policy.try_limit, count),
    key!("policy_service_retry_delay", Once, Applies, policy.retry_delay, delay),
    key!("policy_service_max_idle", Once, Applies, policy.max_idle, timeout),
    key!("policy_service_max_ttl", Once, Applies, policy.max_ttl, timeout),
    key!("policy_service_request_limit", Once, Applies, policy.request_limit, limit),
    // The spool.
    key!("spool", Once, Restart, spool.dir, path),
    key!("spool_sync", Once, Restart, spool.sync, spool_sync),
    // Local delivery.
    key!("local_domains", Once, Applies, local.domains, local_domains),
    key!("local_users", Once, Applies, local.users, file),
    key!("aliases", Once, Applies, local.aliases, file),
    // The delivery helper recomputes mailboxes with the template it started with.
    key!("mailbox", Once, RestartWithHelper, local.mailbox, mailbox),
    key!("pipe_timeout", Once, Applies, local.pipe_timeout, timeout),
    // Delivered by the queue runner itself, never by the root helper.
    key!("mailbox_transport", Once, Applies, local.mailbox_transport, Some(lmtp)),
    // The queue.
    key!("retry_initial", Once, Applies, queue.retry_initial, timeout),
    key!("retry_max", Once, Applies, queue.retry_max, timeout),
    key!("queue_lifetime", Once, Applies, queue.lifetime, timeout),
    key!("delay_warning", Once, Applies, queue.delay_warning, optional_duration),
    key!("delivery_threads", Once, Restart, queue.delivery_threads, count),
    key!("double_bounce_to_postmaster", Once, Applies, queue.double_bounce_to_postmaster, boolean),
    key!("queue_only", Once, Restart, queue.only, boolean),
    // Remote delivery: DNS, routes, the SMTP client.
    key!("dns_servers", Once, Restart, remote.dns_servers, dns_servers),
    key!("dns_timeout", Once, Restart, remote.dns_timeout, timeout),
    key!("route", Repeatable, Applies, remote.routes, push(route)),
    key!("relay_host", Once, Applies, remote.relay_host, Some(next_hop)),
    key!("relay_auth", Once, Applies, remote.relay_auth, Some(relay_auth)),
    key!("smtp_tls", Once, Applies, remote.tls, tls_policy),
    key!("tls_ca_file", Once, Applies, remote.tls_ca_file, file),
    key!("inet_protocols", Once, Applies, remote.inet_protocols, inet_protocols),
    key!("mx_port", Once, Applies, remote.mx_port, mx_port),
    key!("smtp_connect_timeout", Once, Applies, remote.connect_timeout, timeout),
    key!("smtp_helo_timeout", Once, Applies, remote.helo_timeout, timeout),
    key!("smtp_command_timeout", Once, Applies, remote.command_timeout, timeout),
    key!("smtp_data_timeout", Once, Applies, remote.data_timeout, timeout),
    key!("smtp_data_done_timeout", Once, Applies, remote.data_done_timeout, timeout),
    key!("smtp_connection_cache_time", Once, Applies, remote.connection_cache_time, optional_duration),
    key!("max_connections_per_domain", Once, Applies, remote.max_connections_per_domain, count),
    // Outbound TLS policy: DANE, MTA-STS, overrides, REQUIRETLS's header.
    key!("smtp_dane", Once, Applies, outbound.dane, boolean),
    // The resolver is made once, at start (as for dns_servers).
    key!("dnssec_trust_ad", Once, Restart, outbound.dnssec_trust_ad, trust_ad),
    key!("mta_sts", Once, Applies, outbound.mta_sts, boolean),
    key!("tls_policy", Repeatable, Applies, outbound.policies, push(tls_override)),
    key!("tls_required_header", Once, Applies, outbound.tls_required_header, boolean),
    key!("testing__mta_sts_port", Once, Applies, outbound.mta_sts_port, mx_port),
    // TLS reporting (RFC 8460).
    key!("tlsrpt_from", Once, Applies, tlsrpt.from, Some(address)),
    key!("tlsrpt_organization", Once, Applies, tlsrpt.organization, Some(text)),
    key!("tlsrpt_submitter", Once, Applies, tlsrpt.submitter, Some(hostname)),
    // Mail authentication. Keys are read again on every reload; the checker
    // keeps the resolver it started with (dns_servers), and is made anew
    // when hostname or auth_timeout change.
    key!("dkim_sign", Repeatable, Applies, mailauth.dkim_sign, push(dkim_sign),
        files(|c| c.mailauth.dkim_sign.iter().map(|e| e.key_file.as_path()).collect())),
    key!("auth_check", Once, Applies, mailauth.check, boolean),
    key!("auth_timeout", Once, Applies, mailauth.timeout, timeout),
    key!("dmarc_reject", Once, Applies, mailauth.dmarc_reject, boolean),
    key!("spf_reject", Once, Applies, mailauth.spf_reject, spf_reject),
    // The daemon.
    key!("pid_file", Once, Restart, daemon.pid_file, path),
    key!("shutdown_grace", Once, Applies, daemon.shutdown_grace, timeout),
    key!("user", Once, Restart, daemon.user, account_name),
    key!("log_level", Once, Applies, daemon.log_level, log_level),
    key!("syslog_facility", Once, Restart, daemon.syslog_facility, syslog_facility),
    // Opened before root is dropped; a SIGHUP reopens the same path (rotation).
    key!("log_file", Once, Restart, daemon.log_file, Some(path)),
    key!("metrics_listen", Once, Restart, daemon.metrics_listen, optional_address),
];

/// The row of `name`, if it is a key.
pub(super) fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// Every key and what a reload does with it, in table order.
pub fn all() -> impl Iterator<Item = (&'static str, Reload)> {
    KEYS.iter().map(|k| (k.name, k.reload))
}

/// The files a daemon reads after dropping root, as `cfg` names them, each
/// with its key, in table order.
pub fn files(cfg: &Config) -> Vec<(&'static str, &Path)> {
    KEYS.iter()
        .filter_map(|k| Some((k.name, (k.files?)(cfg))))
        .flat_map(|(name, paths)| paths.into_iter().map(move |p| (name, p)))
        .collect()
}

/// Give key `name` in `new` the value it has in `old` (a reload keeping a
/// file it cannot read). False when there is no such key.
pub fn keep(name: &str, new: &mut Config, old: &Config) -> bool {
    match find(name) {
        Some(k) => {
            (k.keep)(new, old);
            true
        }
        None => false,
    }
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
                name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
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

    /// Every key whose value is a path that ends up in the configuration is
    /// a file the daemon reads as its `user` (checked at start, -n and reload),
    /// except these few the daemon writes or opens before it drops root; so a
    /// key added later is checked without anyone remembering to.
    #[test]
    fn every_path_key_is_a_checked_file_or_known_not_to_be() {
        // message_drop_headers takes header names, and "/" may be in one
        // (RFC 5322 3.6.8 ftext); tlsrpt_organization and the milter macros
        // are free text: the probe passes through them.
        const NOT_READ_AS_USER: &[&str] = &[
            "spool",
            "pid_file",
            "mailbox",
            "origin",
            "log_file",
            "message_drop_headers",
            "tlsrpt_organization",
            "milter_macro_daemon_name",
            "milter_macro_v",
        ];
        let probe = "/tern-probe/dir/file";
        let mut files = Vec::new();
        for (name, _) in all() {
            let mut c = p("");
            let k = find(name).unwrap();
            // A path alone, or as the last word of a value (dkim_sign).
            let set = (k.set)(&mut c, probe).is_ok()
                || (k.set)(&mut c, &format!("example.org sel {probe}")).is_ok();
            if !set || !format!("{c:?}").contains(probe) {
                continue;
            }
            if !NOT_READ_AS_USER.contains(&name) {
                assert!(
                    super::files(&c).contains(&(name, Path::new(probe))),
                    "{name} takes a path: mark it `file` in the key table, or list it here"
                );
                files.push(name);
            }
        }
        assert_eq!(
            files,
            [
                "tls_cert",
                "tls_key",
                "auth_users",
                "sender_map",
                "local_users",
                "aliases",
                "tls_ca_file",
                "dkim_sign"
            ]
        );
        // keep copies a value back.
        let mut new = p("aliases = /new\n");
        assert!(keep("aliases", &mut new, &p("aliases = /old\n")));
        assert_eq!(new.local.aliases.as_deref(), Some(Path::new("/old")));
        assert!(!keep("no_such_key", &mut new, &p("")));
    }

    /// Every key's setter must reach the field its comparison reads: a
    /// value that parses differently from the default must show as changed.
    #[test]
    fn each_setter_writes_the_field_it_compares() {
        let base = p("");
        let samples: &[(&str, &str)] = &[
            ("hostname", "other.example"),
            ("origin", "example.org"),
            ("listen", "127.0.0.1:2"),
            ("submission", "127.0.0.1:3"),
            ("smtps", "127.0.0.1:4"),
            ("proxy_protocol", "smtp"),
            ("proxy_from", "10.0.0.1"),
            ("max_sessions", "3"),
            ("max_sessions_per_ip", "3"),
            ("refuse_mail", "smtp"),
            ("tls_cert", "/c"),
            ("tls_key", "/k"),
            ("auth_users", "/u"),
            ("sender_map", "/s"),
            ("auth_failure_delay", "7"),
            ("auth_failure_limit", "3"),
            ("auth_failure_window", "7"),
            ("relay_networks", "10.0.0.0/8"),
            ("max_message_size", "1k"),
            ("max_recipients", "3"),
            ("max_transactions", "3"),
            ("message_drop_headers", "x-secret"),
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
            ("strict_rfc821_envelopes", "no"),
            ("junk_command_limit", "3"),
            ("junk_command_delay", "7"),
            ("requiretls", "no"),
            ("milters", "inet:127.0.0.1:8891"),
            ("non_smtp_milters", "unix:/run/m.sock"),
            ("milter_default_action", "accept"),
            ("milter_protocol", "4"),
            ("milter_connect_timeout", "7"),
            ("milter_command_timeout", "7"),
            ("milter_content_timeout", "7"),
            ("milter_macro_daemon_name", "mx-in"),
            ("milter_macro_v", "Postfix 3.7"),
            ("policy_services", "inet:127.0.0.1:10023"),
            ("policy_service_timeout", "7"),
            ("policy_service_default_action", "DUNNO"),
            ("policy_service_try_limit", "3"),
            ("policy_service_retry_delay", "7"),
            ("policy_service_max_idle", "7"),
            ("policy_service_max_ttl", "7"),
            ("policy_service_request_limit", "7"),
            ("spool", "/x"),
            ("spool_sync", "syncfs"),
            ("local_domains", "x.test"),
            ("local_users", "/u"),
            ("aliases", "/a"),
            ("mailbox", "/m/%u"),
            ("pipe_timeout", "7"),
            ("mailbox_transport", "lmtp:unix:/run/lmtp"),
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
            ("smtp_dane", "no"),
            ("dnssec_trust_ad", "yes"),
            ("mta_sts", "no"),
            ("tls_policy", "example.org verify"),
            ("tls_required_header", "no"),
            ("testing__mta_sts_port", "8443"),
            ("tlsrpt_from", "tlsrpt@example.org"),
            ("tlsrpt_organization", "Example"),
            ("tlsrpt_submitter", "mx.example.org"),
            ("dkim_sign", "example.org sel /k.pem"),
            ("auth_check", "no"),
            ("auth_timeout", "7"),
            ("dmarc_reject", "yes"),
            ("spf_reject", "fail"),
            ("pid_file", "/p"),
            ("shutdown_grace", "7"),
            ("user", "other"),
            ("log_level", "debug"),
            ("syslog_facility", "local1"),
            ("log_file", "/var/log/tern.log"),
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
