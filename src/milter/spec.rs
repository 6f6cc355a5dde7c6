//! One configured milter (tern.conf `milters` and the milter_* keys): where it
//! listens, Postfix's time limits, the default action when it fails, the
//! protocol steps offered and the macros sent at each stage.

use std::time::Duration;

use super::client::{Refusal, Verdict};
use super::negotiate::ProtocolSetting;
use super::protocol::Stage;
use crate::endpoint::{self, Endpoint};

/// tern.conf `milter_default_action`: what a milter that cannot be reached, times
/// out or breaks the protocol means for the rest of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultAction {
    /// 451: the client tries again later (Postfix's documented default).
    #[default]
    Tempfail,
    /// As if the milter were not configured.
    Accept,
    /// 550.
    Reject,
    /// 421 and close the connection.
    Shutdown,
}

impl DefaultAction {
    pub fn parse(s: &str) -> Result<DefaultAction, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tempfail" => Ok(DefaultAction::Tempfail),
            "accept" => Ok(DefaultAction::Accept),
            "reject" => Ok(DefaultAction::Reject),
            "shutdown" => Ok(DefaultAction::Shutdown),
            _ => Err(format!("{s:?}: expected tempfail, accept, reject or shutdown")),
        }
    }

    pub(super) fn verdict(self) -> Verdict {
        match self {
            DefaultAction::Tempfail => Verdict::Tempfail(Refusal::Unavailable),
            DefaultAction::Accept => Verdict::Continue,
            DefaultAction::Reject => Verdict::Reject(Refusal::Unavailable),
            DefaultAction::Shutdown => Verdict::Shutdown,
        }
    }
}

/// Postfix's three milter time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// milter_connect_timeout: opening the socket.
    pub connect: Duration,
    /// milter_command_timeout: negotiation and each envelope stage.
    pub command: Duration,
    /// milter_content_timeout: each header, body chunk and the end of message.
    pub content: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(30),
            command: Duration::from_secs(30),
            content: Duration::from_secs(300),
        }
    }
}

/// The macro names sent at each stage (Postfix's milter_*_macros), unless the
/// milter asks for its own list at negotiation. Postfix's defaults, plus the
/// client and interface macros at CONNECT that Sendmail sends and some milters
/// read there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacroLists {
    pub connect: String,
    pub helo: String,
    pub mail: String,
    pub rcpt: String,
    pub data: String,
    pub eoh: String,
    pub eom: String,
    pub unknown: String,
}

impl Default for MacroLists {
    fn default() -> MacroLists {
        MacroLists {
            connect: "j {daemon_name} {daemon_addr} {daemon_port} {if_addr} v _ {client_addr} {client_port} \
                      {client_name} {client_ptr} {client_resolve}"
                .to_owned(),
            helo: "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer} {tls_sni}".to_owned(),
            mail: "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}"
                .to_owned(),
            rcpt: "i {rcpt_addr} {rcpt_host} {rcpt_mailer}".to_owned(),
            data: "i".to_owned(),
            eoh: "i".to_owned(),
            eom: "i".to_owned(),
            unknown: String::new(),
        }
    }
}

impl MacroLists {
    pub(super) fn for_stage(&self, s: Stage) -> &str {
        match s {
            Stage::Connect => &self.connect,
            Stage::Helo => &self.helo,
            Stage::Mail => &self.mail,
            Stage::Rcpt => &self.rcpt,
            Stage::Data => &self.data,
            Stage::Eoh => &self.eoh,
            Stage::Eom => &self.eom,
        }
    }
}

/// One configured milter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterSpec {
    pub endpoint: Endpoint,
    pub timeouts: Timeouts,
    pub default_action: DefaultAction,
    pub protocol: ProtocolSetting,
    pub macros: MacroLists,
    /// The largest replacement body accepted (the session passes max_message_size).
    pub max_body: usize,
}

impl MilterSpec {
    pub fn new(endpoint: Endpoint) -> MilterSpec {
        MilterSpec {
            endpoint,
            timeouts: Timeouts::default(),
            default_action: DefaultAction::default(),
            protocol: ProtocolSetting::default(),
            macros: MacroLists::default(),
            max_body: 100 << 20,
        }
    }

    /// Parse a `milters` list: endpoints separated by commas or white space, each
    /// either plain or, as in Postfix, `{ endpoint, name = value, ... }` with the
    /// per-milter settings `connect_timeout`, `command_timeout`,
    /// `content_timeout`, `default_action` and `protocol`. Every milter starts as
    /// a copy of `defaults` (its endpoint replaced); `duration` parses a time
    /// value as tern.conf does.
    pub fn parse_list(
        list: &str,
        defaults: &MilterSpec,
        duration: &dyn Fn(&str) -> Option<Duration>,
    ) -> Result<Vec<MilterSpec>, String> {
        let place = |spec: &mut MilterSpec, e| spec.endpoint = e;
        endpoint::parse_specs(list, defaults, place, |spec, k, v| {
            let time = || duration(v).ok_or_else(|| format!("{k} = {v:?}: not a time"));
            match k {
                "connect_timeout" => spec.timeouts.connect = time()?,
                "command_timeout" => spec.timeouts.command = time()?,
                "content_timeout" => spec.timeouts.content = time()?,
                "default_action" => spec.default_action = DefaultAction::parse(v)?,
                "protocol" => spec.protocol = ProtocolSetting::parse(v)?,
                _ => return Err(format!("{k:?}: unknown milter setting")),
            }
            Ok(())
        })
    }
}
