//! OpenDKIM (opendkim, opendkim-tools) as a milter on a loopback port:
//! `opendkim -f -x DIR/opendkim.conf`, signing (relaxed/relaxed) mail whose
//! From: domain has a key in its KeyTable/SigningTable when the client is
//! internal (127.0.0.1, as ternd connects), and verifying mail from others
//! with the keys given in `TestDNSData` instead of DNS. RSA-2048 keys are made
//! once per domain and selector (opendkim-genkey) into target/test-peers.
//!
//! Facts from issue 19: `RequireSafeKeys false` for keys under /tmp; it
//! negotiates SMFIP_HDR_LEADSPC (header values travel with their leading
//! space, both ways) and folds the headers it returns with bare "\n\t".
//!
//! ```ignore
//! let Some(dkim) = OpenDkim::builder().sign("example.test", "sel").start() else { return };
//! dkim.conf();                              // milters = inet:127.0.0.1:PORT
//! dkim.txt_record("example.test", "sel");   // (name, TXT) for DNS or dkimpy
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::process::{self, PeerProcess, Service};
use super::skip;

#[derive(Clone, Default)]
pub struct OpenDkimBuilder {
    sign: Vec<(String, String)>,
    /// Extra keys for verification: (DNS name, TXT value).
    dns: Vec<(String, String)>,
}

impl OpenDkimBuilder {
    /// Sign mail from DOMAIN with a key under SELECTOR (made once, cached).
    pub fn sign(mut self, domain: &str, selector: &str) -> Self {
        self.sign.push((domain.to_ascii_lowercase(), selector.to_owned()));
        self
    }

    /// Let OpenDKIM find this key record when verifying (TestDNSData):
    /// `("sel._domainkey.example.test", "v=DKIM1; k=rsa; p=...")`.
    pub fn key_record(mut self, name: &str, txt: &str) -> Self {
        self.dns.push((name.to_ascii_lowercase(), txt.to_owned()));
        self
    }

    /// None when opendkim or opendkim-tools is missing (skip recorded; a
    /// failure under CI).
    pub fn start(self) -> Option<OpenDkim> {
        if !skip::tools_present(&["opendkim", "opendkim-genkey"]) {
            return None;
        }
        Some(process::retry_start("opendkim", || OpenDkim::start(&self)))
    }
}

/// The cached key pair for DOMAIN/SELECTOR: (private key path, TXT value).
pub fn dkim_key(domain: &str, selector: &str) -> (PathBuf, String) {
    let dir = process::cached(&format!("dkim-keys/{domain}-{selector}"), |d| {
        process::run_tool(
            Command::new(skip::find_tool("opendkim-genkey").ok_or("no opendkim-genkey")?)
                .args(["-b", "2048", "-d", domain, "-s", selector, "-D"])
                .arg(d),
        )
        .map(|_| ())
    });
    let txt = std::fs::read_to_string(dir.join(format!("{selector}.txt"))).expect("key record");
    // The record as BIND text: `sel._domainkey IN TXT ( "v=DKIM1; ..." "p=..." )`:
    // the strings inside quotes, joined.
    let value: String = txt
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    (dir.join(format!("{selector}.private")), value)
}

/// A running OpenDKIM; `addr()`, `conf()` and `process()` come from [`Service`].
pub struct OpenDkim {
    service: Service,
    keys: Vec<(String, String, String)>,
}

impl std::ops::Deref for OpenDkim {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

impl OpenDkim {
    pub fn builder() -> OpenDkimBuilder {
        OpenDkimBuilder::default()
    }

    fn start(b: &OpenDkimBuilder) -> Result<OpenDkim, String> {
        let dir = process::peer_dir("opendkim");
        let d = dir.path().to_path_buf();
        let mut keytable = String::new();
        let mut signing = String::new();
        let mut dns = String::new();
        let mut keys = Vec::new();
        for (domain, selector) in &b.sign {
            let (private, txt) = dkim_key(domain, selector);
            let name = format!("{selector}._domainkey.{domain}");
            keytable.push_str(&format!("{name} {domain}:{selector}:{}\n", private.display()));
            signing.push_str(&format!("*@{domain} {name}\n"));
            dns.push_str(&format!("{name} {txt}\n"));
            keys.push((domain.clone(), selector.clone(), txt));
        }
        for (name, txt) in &b.dns {
            dns.push_str(&format!("{name} {txt}\n"));
        }
        let w = |name: &str, text: &str| std::fs::write(d.join(name), text).map_err(|e| e.to_string());
        w("keytable", &keytable)?;
        w("signingtable", &signing)?;
        w("testdns", &dns)?;
        let port = process::free_port();
        let conf = format!(
            "# Private OpenDKIM for tern's tests.\n\
             Mode sv\nSocket inet:{port}@127.0.0.1\nPidFile {d}/opendkim.pid\n\
             Canonicalization relaxed/relaxed\n\
             KeyTable file:{d}/keytable\nSigningTable refile:{d}/signingtable\n\
             TestDNSData file:{d}/testdns\n\
             InternalHosts 127.0.0.1\n\
             RequireSafeKeys false\n\
             AuthservID mx.tern.test\nAlwaysAddARHeader yes\n\
             Syslog no\n",
            d = d.display()
        );
        w("opendkim.conf", &conf)?;
        let mut cmd = Command::new(skip::find_tool("opendkim").ok_or("no opendkim")?);
        cmd.arg("-f").arg("-x").arg(d.join("opendkim.conf"));
        let mut proc = PeerProcess::spawn("opendkim", cmd, dir, vec![])?;
        proc.wait_ready(Duration::from_secs(10), || {
            process::tcp_answers(process::localhost(port))
        })?;
        Ok(OpenDkim {
            service: Service { proc, port },
            keys,
        })
    }

    /// The public key record of a signing domain: (`SEL._domainkey.DOMAIN`, TXT value).
    pub fn txt_record(&self, domain: &str, selector: &str) -> (String, String) {
        let (_, _, txt) = self
            .keys
            .iter()
            .find(|(d, s, _)| d == domain && s == selector)
            .expect("a domain and selector this OpenDKIM signs for");
        (format!("{selector}._domainkey.{domain}"), txt.clone())
    }
}
