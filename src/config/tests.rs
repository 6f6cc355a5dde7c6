//! Tests of whole configurations: defaults, files, errors with their lines.

use super::value::{check_domain, default_local_domains, strip_comment};
use super::*;

fn p(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("tern.conf"))
}

fn perr(text: &str) -> String {
    match p(text) {
        Ok(_) => panic!("expected an error for {text:?}"),
        Err(e) => e.to_string(),
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap()
}

#[test]
fn defaults() {
    for c in [Config::default(), p("").unwrap()] {
        assert!(!c.hostname.is_empty());
        assert!(check_domain(&c.hostname).is_ok());
        assert_eq!(c.listen.smtp, vec![sa("0.0.0.0:25"), sa("[::]:25")]);
        assert_eq!(c.spool.dir, PathBuf::from("/var/spool/tern"));
        assert_eq!(c.local.domains, default_local_domains(&c.hostname));
        assert!(c.local.domains.contains(&"localhost".to_string()));
        assert!(c.local.is_local_domain(&c.hostname));
        assert_eq!(c.local.users, None);
        assert_eq!(c.local.aliases, None);
        assert_eq!(
            c.session.relay_networks,
            vec![cidr("127.0.0.0/8"), cidr("::1/128")]
        );
        assert_eq!(c.session.max_message_size, 36_700_160);
        assert_eq!(c.session.max_recipients, 100);
        assert_eq!(c.listen.max_sessions, 100);
        assert_eq!(c.listen.max_sessions_per_ip, 20);
        assert_eq!(c.session.max_errors, 10);
        assert_eq!(c.session.max_received, 50);
        assert_eq!(c.session.greeting_timeout, Duration::from_secs(300));
        assert_eq!(c.session.command_timeout, Duration::from_secs(300));
        assert_eq!(c.session.data_timeout, Duration::from_secs(300));
        assert!(!c.session.expn);
        assert!(!c.session.vrfy);
    }
    assert_eq!(Config::default().path, PathBuf::from(DEFAULT_PATH));
    assert_eq!(p("").unwrap().path, PathBuf::from("tern.conf"));
}

#[test]
fn default_local_domains_dedup() {
    assert_eq!(default_local_domains("localhost"), vec!["localhost"]);
    assert_eq!(default_local_domains("LocalHost."), vec!["localhost"]);
    assert_eq!(
        default_local_domains("Mail.Example.ORG"),
        vec!["mail.example.org", "localhost"]
    );
}

#[test]
fn every_key() {
    let text = "\
# every key, with non-default values
hostname = Mail.Example.org
listen = 127.0.0.1:2525 [::1]:2525, 192.0.2.1 *:587 127.0.0.1:2525
spool = ./var/spool
local_domains = Example.ORG. example.org, localhost
local_users = /etc/tern/users
aliases = /etc/aliases
relay_networks = 10.0.0.0/8, 2001:db8::/32 192.0.2.7
max_message_size = 10m
max_recipients = 5
max_sessions = 6
max_sessions_per_ip = 7
max_errors = 3
max_received = 30
greeting_timeout = 30s
command_timeout = 10m
data_timeout = 1h
expn = yes
vrfy = on
";
    let c = p(text).unwrap();
    assert_eq!(c.hostname, "Mail.Example.org");
    assert_eq!(
        c.listen.smtp,
        vec![
            sa("127.0.0.1:2525"),
            sa("[::1]:2525"),
            sa("192.0.2.1:25"),
            sa("0.0.0.0:587"),
            sa("[::]:587")
        ]
    );
    assert_eq!(c.spool.dir, PathBuf::from("./var/spool"));
    assert_eq!(c.local.domains, vec!["example.org", "localhost"]);
    assert_eq!(c.local.users, Some(PathBuf::from("/etc/tern/users")));
    assert_eq!(c.local.aliases, Some(PathBuf::from("/etc/aliases")));
    assert_eq!(
        c.session.relay_networks,
        vec![cidr("10.0.0.0/8"), cidr("2001:db8::/32"), cidr("192.0.2.7/32")]
    );
    assert_eq!(c.session.max_message_size, 10 << 20);
    assert_eq!(c.session.max_recipients, 5);
    assert_eq!(c.listen.max_sessions, 6);
    assert_eq!(c.listen.max_sessions_per_ip, 7);
    assert_eq!(c.session.max_errors, 3);
    assert_eq!(c.session.max_received, 30);
    assert_eq!(c.session.greeting_timeout, Duration::from_secs(30));
    assert_eq!(c.session.command_timeout, Duration::from_secs(600));
    assert_eq!(c.session.data_timeout, Duration::from_secs(3600));
    assert!(c.session.expn);
    assert!(c.session.vrfy);
}

#[test]
fn local_domains_follow_hostname_unless_set() {
    let c = p("hostname = MX.example.net").unwrap();
    assert_eq!(c.local.domains, vec!["mx.example.net", "localhost"]);
    let c = p("local_domains =\nhostname = mx.example.net").unwrap();
    assert!(c.local.domains.is_empty());
    assert!(!c.local.is_local_domain("localhost"));
    let c = p("local_domains = example.com # only this").unwrap();
    assert_eq!(c.local.domains, vec!["example.com"]);
}

#[test]
fn empty_lists_that_are_allowed() {
    assert!(p("relay_networks =").unwrap().session.relay_networks.is_empty());
    assert!(p("relay_networks = # nobody")
        .unwrap()
        .session
        .relay_networks
        .is_empty());
}

#[test]
fn comments_and_blank_lines() {
    let cases: &[(&str, usize)] = &[
        ("# comment\n\n   \n\t\nmax_recipients = 7\n", 7),
        ("  # indented comment\nmax_recipients = 7 # trailing comment\n", 7),
        ("max_recipients = 7\t# tab then comment\n", 7),
        ("max_recipients=7\r\n", 7),
        ("   max_recipients   =   7   \n# last line without newline", 7),
        ("#max_recipients = 1\nmax_recipients = 7", 7),
    ];
    for (text, want) in cases {
        assert_eq!(p(text).unwrap().session.max_recipients, *want, "{text:?}");
    }
    // A '#' inside a word is not a comment.
    assert_eq!(
        p("spool = /var/spool/a#b").unwrap().spool.dir,
        PathBuf::from("/var/spool/a#b")
    );
    assert_eq!(strip_comment("a # b"), "a ");
    assert_eq!(strip_comment("#x"), "");
    assert_eq!(strip_comment("a#b"), "a#b");
}

#[test]
fn errors_with_file_and_line() {
    let cases: &[(&str, &str)] = &[
        (
            "\n\n\n\n\n\nlisen = 1.2.3.4",
            "tern.conf:7: unknown key \"lisen\"",
        ),
        ("Listen = 1.2.3.4", "tern.conf:1: unknown key \"Listen\""),
        (
            "# x\nlisten 127.0.0.1",
            "tern.conf:2: missing \"=\" in \"listen 127.0.0.1\"",
        ),
        ("= 5", "tern.conf:1: missing key before \"=\""),
        (
            "max_recipients = 5\n\nmax_recipients = 6",
            "tern.conf:3: repeated key \"max_recipients\" (first set on line 1)",
        ),
        (
            "\n\nmax_message_size = 10X",
            "tern.conf:3: max_message_size: bad size \"10X\" (use a number with optional K, M or G)",
        ),
        (
            "max_message_size = 0",
            "tern.conf:1: max_message_size: must be greater than 0",
        ),
        (
            "max_message_size = 99999999999999999999G",
            "tern.conf:1: max_message_size: bad size",
        ),
        (
            "max_message_size =",
            "tern.conf:1: max_message_size: missing value",
        ),
        (
            "data_timeout = 5 m",
            "tern.conf:1: data_timeout: bad duration \"5 m\"",
        ),
        (
            "command_timeout = 0s",
            "tern.conf:1: command_timeout: must be greater than 0",
        ),
        (
            "greeting_timeout = -1",
            "tern.conf:1: greeting_timeout: bad duration \"-1\"",
        ),
        (
            "expn = maybe",
            "tern.conf:1: expn: bad boolean \"maybe\" (use yes or no)",
        ),
        ("vrfy =", "tern.conf:1: vrfy: missing value"),
        (
            "relay_networks = 10.0.0.0/33",
            "tern.conf:1: relay_networks: bad network \"10.0.0.0/33\"",
        ),
        (
            "relay_networks = 10.0.0.0/8 bogus",
            "tern.conf:1: relay_networks: bad network \"bogus\"",
        ),
        (
            "listen = localhost:25",
            "tern.conf:1: listen: bad address \"localhost:25\"",
        ),
        (
            "listen = 127.0.0.1:99999",
            "tern.conf:1: listen: bad address \"127.0.0.1:99999\"",
        ),
        ("listen = *:", "tern.conf:1: listen: bad address \"*:\""),
        ("listen =", "tern.conf:1: listen: no addresses given"),
        (
            "hostname = mail_1.example.org",
            "tern.conf:1: hostname: bad domain \"mail_1.example.org\": '_'",
        ),
        (
            "hostname = -mail.example.org",
            "tern.conf:1: hostname: bad domain \"-mail.example.org\": label",
        ),
        (
            "hostname = mail.example.org.",
            "tern.conf:1: hostname: bad domain \"mail.example.org.\": empty label",
        ),
        ("hostname =", "tern.conf:1: hostname: missing value"),
        (
            "local_domains = ok.example a..b",
            "tern.conf:1: local_domains: bad domain \"a..b\": empty label",
        ),
        (
            "max_sessions = 0",
            "tern.conf:1: max_sessions: must be at least 1",
        ),
        (
            "max_recipients = 0",
            "tern.conf:1: max_recipients: must be at least 1",
        ),
        (
            "max_sessions_per_ip = +3",
            "tern.conf:1: max_sessions_per_ip: bad number \"+3\"",
        ),
        (
            "max_errors = 4294967296",
            "tern.conf:1: max_errors: number \"4294967296\" is too large",
        ),
        (
            "max_received = 99999999999999999999999",
            "tern.conf:1: max_received: number",
        ),
        ("spool =", "tern.conf:1: spool: missing value"),
        ("aliases = # none", "tern.conf:1: aliases: missing value"),
        ("local_users =", "tern.conf:1: local_users: missing value"),
    ];
    for (text, want) in cases {
        let got = perr(text);
        assert!(got.starts_with(want), "{text:?}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn error_display() {
    let e = ConfigError {
        file: "f.conf".into(),
        line: 0,
        what: "cannot read: x".into(),
    };
    assert_eq!(e.to_string(), "f.conf: cannot read: x");
    let e = ConfigError { line: 4, ..e };
    assert_eq!(e.to_string(), "f.conf:4: cannot read: x");
}

#[test]
fn load() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.conf");
    std::fs::write(&f, "max_errors = 2\n").unwrap();
    let c = Config::load(&f).unwrap();
    assert_eq!(c.session.max_errors, 2);
    assert_eq!(c.path, f);

    std::fs::write(&f, "max_errors = 2\nfoo = 1\n").unwrap();
    let e = Config::load(&f).unwrap_err();
    assert_eq!(e.to_string(), format!("{}:2: unknown key \"foo\"", f.display()));

    let missing = dir.path().join("nope.conf");
    let e = Config::load(&missing).unwrap_err();
    assert_eq!(e.line, 0);
    let s = e.to_string();
    assert!(
        s.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{s}"
    );
}

/// Issue 17, 5: the aliases file `make install` puts beside tern.conf is used
/// without an `aliases` key; a key says otherwise.
#[test]
fn aliases_beside_the_configuration_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("tern.conf");
    std::fs::write(&f, "").unwrap();
    assert_eq!(Config::load(&f).unwrap().local.aliases, None);
    std::fs::write(dir.path().join("aliases"), "root: alice\n").unwrap();
    assert_eq!(
        Config::load(&f).unwrap().local.aliases,
        Some(dir.path().join("aliases"))
    );
    std::fs::write(&f, "aliases = /etc/aliases\n").unwrap();
    assert_eq!(
        Config::load(&f).unwrap().local.aliases,
        Some(PathBuf::from("/etc/aliases"))
    );
    // Parsing alone (no file) never looks around.
    assert_eq!(p("").unwrap().local.aliases, None);
}

/// Issue 17, 5: the domain bare user names get (Postfix's myorigin).
#[test]
fn origin_domain_file_or_mailname() {
    let dir = tempfile::tempdir().unwrap();
    let c = p("hostname = mx.Example.ORG\norigin = Example.org\n").unwrap();
    assert_eq!(c.origin, Origin::Domain("example.org".into()));
    assert_eq!(c.origin(), "example.org");
    let name = dir.path().join("mailname");
    std::fs::write(&name, "lists.example.net\nignored\n").unwrap();
    let c = p(&format!(
        "hostname = mx.example.org\norigin = {}\n",
        name.display()
    ))
    .unwrap();
    assert_eq!(c.origin(), "lists.example.net");
    // Unreadable or not a domain: the host name.
    std::fs::write(&name, "not a domain\n").unwrap();
    assert_eq!(c.origin(), "mx.example.org");
    let c = p(&format!(
        "hostname = mx.example.org\norigin = {}/none\n",
        dir.path().display()
    ))
    .unwrap();
    assert_eq!(c.origin(), "mx.example.org");
    // Unset: /etc/mailname when there is one (Debian), else the host name.
    let c = p("hostname = mx.example.org\n").unwrap();
    assert_eq!(c.origin, Origin::Default);
    let want = std::fs::read_to_string(MAILNAME)
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.trim().to_ascii_lowercase()))
        .unwrap_or_else(|| "mx.example.org".into());
    assert_eq!(c.origin(), want);
    assert!(
        perr("origin = a b\n").contains(":1: origin: bad domain"),
        "{}",
        perr("origin = a b\n")
    );
}

#[test]
fn may_relay() {
    let c = Config::default();
    assert!(c.session.may_relay(ip("127.0.0.1")));
    assert!(c.session.may_relay(ip("::1")));
    assert!(c.session.may_relay(ip("::ffff:127.0.0.2")));
    assert!(!c.session.may_relay(ip("192.0.2.1")));
}

#[test]
fn is_local_domain() {
    let c = p("local_domains = example.org localhost").unwrap();
    for (d, want) in [
        ("example.org", true),
        ("EXAMPLE.Org", true),
        ("example.org.", true),
        ("Localhost.", true),
        ("sub.example.org", false),
        ("example.com", false),
        ("", false),
        (".", false),
    ] {
        assert_eq!(c.local.is_local_domain(d), want, "{d:?}");
    }
}

/// A UTF-8 domain and its A-label are one domain for local_domains and
/// route, whichever form the file and the address use (RFC 5890).
#[test]
fn internationalized_domains_in_either_form() {
    let c = p("local_domains = bücher.test xn--caf-dma.test\n\
               route = Straße.example [127.0.0.1]:2525\n\
               route = xn--nave-6pa.example [127.0.0.1]:2526\n\
               relay_host = mx.bücher.example")
    .unwrap();
    assert_eq!(c.local.domains, vec!["xn--bcher-kva.test", "xn--caf-dma.test"]);
    for d in [
        "bücher.test",
        "BÜCHER.test.",
        "xn--bcher-kva.test",
        "café.test",
        "XN--CAF-DMA.test",
    ] {
        assert!(c.local.is_local_domain(d), "{d}");
    }
    for d in ["bucher.test", "cafe.test", "exämple.test", "xn--zz.test"] {
        assert!(!c.local.is_local_domain(d), "{d}");
    }
    let port = |d: &str| c.remote.next_hop(d).map(|h| h.port);
    assert_eq!(port("straße.example"), Some(2525));
    assert_eq!(port("xn--strae-oqa.example"), Some(2525));
    assert_eq!(port("naïve.example"), Some(2526));
    assert_eq!(port("NAÏVE.example."), Some(2526));
    // Anything else takes the relay_host, looked up by its A-labels.
    assert_eq!(
        c.remote.next_hop("other.example").map(|h| h.host.as_str()),
        Some("mx.xn--bcher-kva.example")
    );
    assert!(perr("local_domains = xn--zz.test").contains("bad domain"));
    assert!(perr("local_domains = ｅxample.test").contains("bad domain"));
}

/// Each tests/configs/bad/NAME.conf must fail with a message starting with NAME.err.
#[test]
fn bad_config_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/bad");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("conf") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let want = std::fs::read_to_string(path.with_extension("err"))
            .unwrap_or_else(|e| panic!("{name}: no matching .err file: {e}"));
        let want = want.trim_end_matches(['\n', '\r']);
        assert!(!want.is_empty(), "{name}: empty .err file");
        match Config::parse(&text, Path::new(&name)) {
            Ok(_) => panic!("{name}: parsed without error"),
            Err(e) => {
                let got = e.to_string();
                assert!(got.starts_with(want), "{name}\n got: {got}\nwant: {want}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} bad configs in {}", dir.display());
}

fn etc(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("etc").join(name)
}

#[test]
fn dev_config() {
    let c = Config::load(&etc("tern.dev.conf")).unwrap();
    assert_eq!(c.listen.smtp, vec![sa("127.0.0.1:2525")]);
    assert_eq!(c.spool.dir, PathBuf::from("./var/spool"));
    assert_eq!(c.hostname, "localhost");
    assert_eq!(c.local.domains, vec!["localhost"]);
    assert_eq!(
        c.session.relay_networks,
        vec![cidr("127.0.0.0/8"), cidr("::1/128")]
    );
}

/// The sample file must parse as is, document every key, and its commented-out
/// values must be the real defaults (except those that depend on the host or
/// default to "none", where the sample shows an example instead).
#[test]
fn sample_config() {
    let path = etc("tern.conf");
    let sample = std::fs::read_to_string(&path).unwrap();
    Config::load(&path).unwrap();

    // "#key = value" lines (no space after '#') are the settings; "# ..." is prose.
    let uncommented: String = sample
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
        .map(|l| format!("{l}\n"))
        .collect();
    let c = p(&uncommented).unwrap();
    let d = Config::default();
    let shown: Vec<&str> = uncommented
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .collect();
    for (key, _) in keys::all() {
        assert!(shown.contains(&key), "sample does not document {key}");
    }
    assert_eq!(c.listen.smtp, d.listen.smtp);
    assert_eq!(c.spool.dir, d.spool.dir);
    assert_eq!(c.session.relay_networks, d.session.relay_networks);
    assert_eq!(c.session.max_message_size, d.session.max_message_size);
    assert_eq!(c.session.max_recipients, d.session.max_recipients);
    assert_eq!(c.listen.max_sessions, d.listen.max_sessions);
    assert_eq!(c.listen.max_sessions_per_ip, d.listen.max_sessions_per_ip);
    assert_eq!(c.session.max_errors, d.session.max_errors);
    assert_eq!(c.session.max_received, d.session.max_received);
    assert_eq!(c.session.greeting_timeout, d.session.greeting_timeout);
    assert_eq!(c.session.command_timeout, d.session.command_timeout);
    assert_eq!(c.session.data_timeout, d.session.data_timeout);
    assert_eq!(c.session.stress_timeout, d.session.stress_timeout);
    assert_eq!(c.session.expn, d.session.expn);
    assert_eq!(c.session.vrfy, d.session.vrfy);
    assert_eq!(c.auth.failure_delay, d.auth.failure_delay);
    assert_eq!(c.session.harvest_threshold, d.session.harvest_threshold);
    assert_eq!(c.session.harvest_delay, d.session.harvest_delay);
    assert_eq!(c.session.harvest_limit, d.session.harvest_limit);
    assert_eq!(c.listen.proxy_protocol, d.listen.proxy_protocol);
    assert_eq!(c.remote.dns_timeout, d.remote.dns_timeout);
    assert_eq!(c.remote.tls, d.remote.tls);
    assert_eq!(c.remote.inet_protocols, d.remote.inet_protocols);
    assert_eq!(c.remote.mx_port, d.remote.mx_port);
    assert_eq!(c.remote.connect_timeout, d.remote.connect_timeout);
    assert_eq!(c.remote.helo_timeout, d.remote.helo_timeout);
    assert_eq!(c.remote.command_timeout, d.remote.command_timeout);
    assert_eq!(c.remote.data_timeout, d.remote.data_timeout);
    assert_eq!(c.remote.data_done_timeout, d.remote.data_done_timeout);
    assert_eq!(c.remote.connection_cache_time, d.remote.connection_cache_time);
    assert_eq!(
        c.remote.max_connections_per_domain,
        d.remote.max_connections_per_domain
    );
}

#[test]
fn routes_and_relay_host() {
    let c = p("route = Example.ORG [127.0.0.1]:2525\nroute = b.test mx.b.test tls=verify\nrelay_host = [smart.test]:465\nrelay_auth = u:p:w").unwrap();
    assert_eq!(
        c.remote.next_hop("example.org"),
        Some(&NextHop {
            host: "127.0.0.1".into(),
            port: 2525,
            mx: false,
            tls: None,
            implicit_tls: false
        })
    );
    assert_eq!(
        c.remote.next_hop("B.test."),
        Some(&NextHop {
            host: "mx.b.test".into(),
            port: 25,
            mx: true,
            tls: Some(TlsPolicy::Verify),
            implicit_tls: false
        })
    );
    assert_eq!(
        c.remote.next_hop("other.test").map(|h| (h.port, h.implicit_tls)),
        Some((465, true))
    );
    assert!(p("relay_host = [x.test]:2465 smtps")
        .unwrap()
        .remote
        .relay_host
        .is_some_and(|h| h.implicit_tls));
    assert_eq!(c.remote.relay_auth, Some(("u".into(), "p:w".into())));
    assert!(p("").unwrap().remote.next_hop("x.test").is_none());
    for bad in [
        "route = example.org",
        "route = example.org 127.0.0.1:25",
        "route = example.org [x.test]:0",
        "route = example.org [x.test]:25 tls=maybe",
        "relay_host = [x.test",
        "relay_auth = nopassword",
        "smtp_tls = perhaps",
        "inet_protocols = ipx",
        "dns_servers = localhost",
    ] {
        assert!(p(bad).is_err(), "{bad}");
    }
    let c = p("dns_servers = 127.0.0.1:5353, ::1").unwrap();
    assert_eq!(c.remote.dns_servers, vec![sa("127.0.0.1:5353"), sa("[::1]:53")]);
}

#[test]
fn lmtp_servers_for_mailboxes_and_routes() {
    let unix = |p: &str| Lmtp {
        addr: crate::endpoint::Endpoint::Unix(PathBuf::from(p)),
        tls: None,
    };
    let inet = |h: &str, port: u16, tls: Option<TlsPolicy>| Lmtp {
        addr: crate::endpoint::Endpoint::Inet { host: h.into(), port },
        tls,
    };
    let c = p("mailbox_transport = lmtp:unix:/run/dovecot/lmtp").unwrap();
    assert_eq!(c.local.mailbox_transport, Some(unix("/run/dovecot/lmtp")));
    assert_eq!(p("").unwrap().local.mailbox_transport, None);
    for (v, want) in [
        ("LMTP:[127.0.0.1]:2424", inet("127.0.0.1", 2424, None)),
        (
            "lmtp:[::1]:24 tls=verify",
            inet("::1", 24, Some(TlsPolicy::Verify)),
        ),
        ("lmtp:[Store.Example.org]", inet("store.example.org", 24, None)),
        ("lmtp:store.test:2003", inet("store.test", 2003, None)),
        ("lmtp:127.0.0.1:24", inet("127.0.0.1", 24, None)),
        ("lmtp:inet:store.test", inet("store.test", 24, None)),
    ] {
        let c = p(&format!("mailbox_transport = {v}")).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(c.local.mailbox_transport, Some(want), "{v}");
    }
    // A route may name an LMTP server: SMTP then has no next hop for the
    // domain (not even the relay host).
    let c = p("route = store.test lmtp:unix:/s\nroute = b.test [10.0.0.1]:2525\nrelay_host = [smart.test]")
        .unwrap();
    assert_eq!(c.remote.lmtp_route("Store.test."), Some(&unix("/s")));
    assert_eq!(c.remote.next_hop("store.test"), None);
    assert_eq!(c.remote.lmtp_route("b.test"), None);
    assert_eq!(c.remote.next_hop("b.test").map(|h| h.port), Some(2525));
    assert_eq!(c.remote.lmtp_route("other.test"), None);
    assert_eq!(
        c.remote.next_hop("other.test").map(|h| h.host.as_str()),
        Some("smart.test")
    );
    for bad in [
        "mailbox_transport = /run/dovecot/lmtp",
        "mailbox_transport = lmtp:",
        "mailbox_transport = lmtp:unix:run/lmtp",
        "mailbox_transport = lmtp:unix:/run/lmtp tls=may",
        "mailbox_transport = lmtp:[127.0.0.1]:25",
        "mailbox_transport = lmtp:[127.0.0.1]:0",
        "mailbox_transport = lmtp:::1:24",
        "mailbox_transport = lmtp:[x.test]:24 tls=maybe",
        "mailbox_transport = lmtp:[x.test]:24 smtps",
        "mailbox_transport = lmtp:bad_host:24",
        "route = store.test lmtp:[127.0.0.1",
    ] {
        assert!(p(bad).is_err(), "{bad}");
    }
    let e = p("mailbox_transport = lmtp:[127.0.0.1]:25")
        .unwrap_err()
        .to_string();
    assert!(e.contains("RFC 2033"), "{e}");
}

#[test]
fn spool_sync_values() {
    assert_eq!(p("").unwrap().spool.sync, SyncMode::Fsync);
    assert_eq!(p("spool_sync = fsync").unwrap().spool.sync, SyncMode::Fsync);
    assert_eq!(p("spool_sync = SyncFS").unwrap().spool.sync, SyncMode::Syncfs);
    let e = p("spool_sync = fdatasync").unwrap_err().to_string();
    assert!(e.contains("use syncfs or fsync"), "{e}");
    assert!(p("spool_sync =").is_err());
}

#[test]
fn relative_paths_resolve_against_the_start_directory() {
    let mut c = p("spool = ./var/spool\naliases = etc/aliases\nmailbox = ./var/mail/%u/\n").unwrap();
    c.resolve_relative(Path::new("/srv/tern"));
    assert_eq!(c.spool.dir, PathBuf::from("/srv/tern/./var/spool"));
    assert_eq!(c.local.aliases, Some(PathBuf::from("/srv/tern/etc/aliases")));
    assert_eq!(c.local.mailbox, "/srv/tern/./var/mail/%u/");
    let mut c = p("mailbox = ~/Maildir/\n").unwrap();
    c.resolve_relative(Path::new("/srv"));
    assert_eq!(c.local.mailbox, "~/Maildir/");
}

#[test]
fn daemon_user_and_log_keys() {
    let c = Config::parse(
        "user = _tern\nlog_level = WARN\nsyslog_facility = local3\n",
        Path::new("t"),
    )
    .expect("parse");
    assert_eq!(c.daemon.user, "_tern");
    assert_eq!(c.daemon.log_level, log::LevelFilter::Warn);
    assert_eq!(c.daemon.syslog_facility, 19);
    let d = Config::default();
    assert_eq!(
        (
            d.daemon.user.as_str(),
            d.daemon.log_level,
            d.daemon.syslog_facility
        ),
        ("tern", log::LevelFilter::Info, 2)
    );
    for bad in [
        "user = a/b",
        "user = -x",
        "log_level = loud",
        "syslog_facility = local8",
        "syslog_facility = kern",
    ] {
        assert!(Config::parse(bad, Path::new("t")).is_err(), "{bad}");
    }
}

#[test]
fn outbound_tls_keys() {
    let c = p(
        "tls_policy = example.org verify\ntls_policy = .corp.test DANE\ntls_policy = Plain.Test. none\n\
               dnssec_trust_ad = yes\nsmtp_dane = no\ntlsrpt_from = tlsrpt@example.org\n",
    )
    .unwrap();
    let o = &c.outbound;
    assert_eq!(
        o.policy_for("example.org"),
        Some(TlsOverride::Fixed(TlsPolicy::Verify))
    );
    assert_eq!(
        o.policy_for("EXAMPLE.org."),
        Some(TlsOverride::Fixed(TlsPolicy::Verify))
    );
    // Only the named domain, not its subdomains...
    assert_eq!(o.policy_for("mx.example.org"), None);
    // ...unless written with a leading dot, which is for subdomains only.
    assert_eq!(o.policy_for("a.corp.test"), Some(TlsOverride::Dane));
    assert_eq!(o.policy_for("a.b.corp.test"), Some(TlsOverride::Dane));
    assert_eq!(o.policy_for("corp.test"), None);
    assert_eq!(
        o.policy_for("plain.test"),
        Some(TlsOverride::Fixed(TlsPolicy::None))
    );
    assert_eq!(o.dnssec_trust_ad, TrustAd::Yes);
    assert!(!o.dane && o.mta_sts && o.tls_required_header);
    assert_eq!(c.tlsrpt.from.as_deref(), Some("tlsrpt@example.org"));
    let d = Config::default();
    assert!(d.outbound.dane && d.session.requiretls && d.tlsrpt.from.is_none());
    assert_eq!(d.outbound.dnssec_trust_ad, TrustAd::Auto);
    assert_eq!(d.outbound.mta_sts_port, 443);
    for bad in [
        "tls_policy = example.org",
        "tls_policy = example.org sometimes",
        "tls_policy = bad_domain! verify",
        "dnssec_trust_ad = maybe",
        "tlsrpt_from = nobody",
        "tlsrpt_from = a b@example.org",
        "testing__mta_sts_port = 0",
    ] {
        assert!(p(bad).is_err(), "{bad}");
    }
}

#[test]
fn metrics_listen_is_off_unless_set() {
    assert_eq!(p("").unwrap().daemon.metrics_listen, None);
    assert_eq!(p("metrics_listen =").unwrap().daemon.metrics_listen, None);
    let c = p("metrics_listen = 127.0.0.1:9125").unwrap();
    assert_eq!(c.daemon.metrics_listen, Some(sa("127.0.0.1:9125")));
    let c = p("metrics_listen = [::1]:9125").unwrap();
    assert_eq!(c.daemon.metrics_listen, Some(sa("[::1]:9125")));
    // Written out, any address: the administrator chose it (ternd logs a warning).
    let c = p("metrics_listen = 0.0.0.0:9125").unwrap();
    assert_eq!(c.daemon.metrics_listen, Some(sa("0.0.0.0:9125")));
    for bad in [
        "9125",
        "localhost:9125",
        "127.0.0.1",
        "127.0.0.1:9125 [::1]:9125",
        "*:9125",
    ] {
        let e = perr(&format!("metrics_listen = {bad}"));
        assert!(
            e.starts_with("tern.conf:1: metrics_listen: bad address"),
            "{bad}: {e}"
        );
    }
}
