//! What a milter is told about the session: the Sendmail macros (`j`,
//! `{client_addr}`, `i`...) as the session learns them, and who connected
//! (SMFIC_CONNECT).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::protocol::{Command, Family};

/// The values of the Sendmail macros milters read, filled by the session as it
/// learns them. `None` is not sent (Postfix sends only macros with a value).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Macros {
    /// `j`: our host name.
    pub j: Option<String>,
    /// `{daemon_name}` (Postfix: milter_macro_daemon_name).
    pub daemon_name: Option<String>,
    /// `v`: the MTA and its version (Postfix: milter_macro_v).
    pub v: Option<String>,
    /// `{daemon_addr}`, `{daemon_port}`: the address the client connected to.
    pub daemon_addr: Option<String>,
    pub daemon_port: Option<String>,
    /// `{if_addr}`: Sendmail's name for the same address; `{daemon_addr}` when unset.
    pub if_addr: Option<String>,
    /// `{client_addr}`, `{client_port}`.
    pub client_addr: Option<String>,
    pub client_port: Option<String>,
    /// `{client_name}`: the verified name, or "unknown".
    pub client_name: Option<String>,
    /// `{client_ptr}`: the reverse-DNS name, or "unknown".
    pub client_ptr: Option<String>,
    /// `{client_resolve}`: OK, FAIL, FORGED or TEMP.
    pub client_resolve: Option<String>,
    /// `{client_connections}`.
    pub client_connections: Option<String>,
    /// `{tls_version}`, `{cipher}`, `{cipher_bits}`, `{tls_sni}`; `{cert_subject}` and
    /// `{cert_issuer}` only for a verified client certificate.
    pub tls_version: Option<String>,
    pub cipher: Option<String>,
    pub cipher_bits: Option<String>,
    pub tls_sni: Option<String>,
    pub cert_subject: Option<String>,
    pub cert_issuer: Option<String>,
    /// `i`: the queue id.
    pub queue_id: Option<String>,
    /// `{auth_type}`, `{auth_authen}`, `{auth_author}`: SASL mechanism, user, sender.
    pub auth_type: Option<String>,
    pub auth_authen: Option<String>,
    pub auth_author: Option<String>,
    /// `{mail_addr}`, `{mail_host}`, `{mail_mailer}`: the sender, its next hop and
    /// transport ("" for the null sender).
    pub mail_addr: Option<String>,
    pub mail_host: Option<String>,
    pub mail_mailer: Option<String>,
    /// `{rcpt_addr}`, `{rcpt_host}`, `{rcpt_mailer}`: the recipient of this RCPT,
    /// its next hop and transport (for a rejected recipient: its text, its enhanced
    /// code and "error").
    pub rcpt_addr: Option<String>,
    pub rcpt_host: Option<String>,
    pub rcpt_mailer: Option<String>,
    /// Any other name (with or without braces) and value: milter_macro_defaults,
    /// used when nothing above has a value.
    pub other: Vec<(String, String)>,
}

impl Macros {
    /// The value of macro `name` (`j`, `{j}`, `{daemon_name}`...).
    pub fn lookup(&self, name: &str) -> Option<Cow<'_, str>> {
        let bare = name
            .strip_prefix('{')
            .and_then(|n| n.strip_suffix('}'))
            .unwrap_or(name);
        let field = match bare {
            "j" => &self.j,
            "daemon_name" => &self.daemon_name,
            "v" => &self.v,
            "daemon_addr" => &self.daemon_addr,
            "daemon_port" => &self.daemon_port,
            "if_addr" => {
                if self.if_addr.is_some() {
                    &self.if_addr
                } else {
                    &self.daemon_addr
                }
            }
            "client_addr" => &self.client_addr,
            "client_port" => &self.client_port,
            "client_name" => &self.client_name,
            "client_ptr" => &self.client_ptr,
            "client_resolve" => &self.client_resolve,
            "client_connections" => &self.client_connections,
            "tls_version" => &self.tls_version,
            "cipher" => &self.cipher,
            "cipher_bits" => &self.cipher_bits,
            "tls_sni" => &self.tls_sni,
            "cert_subject" => &self.cert_subject,
            "cert_issuer" => &self.cert_issuer,
            "i" => &self.queue_id,
            "auth_type" => &self.auth_type,
            "auth_authen" => &self.auth_authen,
            "auth_author" => &self.auth_author,
            "mail_addr" => &self.mail_addr,
            "mail_host" => &self.mail_host,
            "mail_mailer" => &self.mail_mailer,
            "rcpt_addr" => &self.rcpt_addr,
            "rcpt_host" => &self.rcpt_host,
            "rcpt_mailer" => &self.rcpt_mailer,
            "_" => {
                return self
                    .underscore()
                    .map(Cow::Owned)
                    .or_else(|| self.other_value(bare))
            }
            _ => &None,
        };
        field
            .as_deref()
            .map(Cow::Borrowed)
            .or_else(|| self.other_value(bare))
    }

    fn other_value(&self, bare: &str) -> Option<Cow<'_, str>> {
        self.other
            .iter()
            .find(|(n, _)| n.strip_prefix('{').and_then(|n| n.strip_suffix('}')).unwrap_or(n) == bare)
            .map(|(_, v)| Cow::Borrowed(v.as_str()))
    }

    /// `_`: "ptr [addr]", with "(may be forged)" when the verified name differs
    /// (Postfix's smtpd_milter_eval()).
    fn underscore(&self) -> Option<String> {
        let addr = self.client_addr.as_deref()?;
        let ptr = self
            .client_ptr
            .as_deref()
            .or(self.client_name.as_deref())
            .unwrap_or("unknown");
        let mut s = format!("{ptr} [{addr}]");
        if let Some(name) = &self.client_name {
            if !name.eq_ignore_ascii_case(ptr) {
                s.push_str(" (may be forged)");
            }
        }
        Some(s)
    }

    /// The (name, value) pairs for a list of names, in list order.
    pub(super) fn pairs(&self, names: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        names
            .split([' ', ',', '\t'])
            .filter(|n| !n.is_empty())
            .filter_map(|n| {
                self.lookup(n)
                    .map(|v| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            })
            .collect()
    }
}

/// Who connected, for SMFIC_CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectInfo {
    /// The client's verified name, or "unknown".
    pub hostname: String,
    /// None for mail not from the network (sendmail, `ternd -i` from a pipe).
    pub addr: Option<SocketAddr>,
}

impl ConnectInfo {
    /// Local submission: Postfix pretends localhost at 127.0.0.1 (MILTER_README,
    /// non-SMTP milters).
    pub fn local() -> ConnectInfo {
        ConnectInfo {
            hostname: "localhost".to_owned(),
            addr: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)),
        }
    }

    pub(super) fn command(&self) -> Command {
        let Some(addr) = self.addr else {
            return Command::Connect {
                hostname: self.hostname.as_bytes().to_vec(),
                family: Family::Unknown,
                port: 0,
                address: Vec::new(),
            };
        };
        // Sendmail's form for a name that did not verify (milter8_conn_event()).
        let hostname = if self.hostname == "unknown" {
            format!("[{}]", addr.ip())
        } else {
            self.hostname.clone()
        };
        Command::Connect {
            hostname: hostname.into_bytes(),
            family: if addr.is_ipv4() {
                Family::Inet
            } else {
                Family::Inet6
            },
            port: addr.port(),
            address: addr.ip().to_string().into_bytes(),
        }
    }
}
