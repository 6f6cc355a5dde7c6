//! Negotiation (SMFIC_OPTNEG): the protocol version, the actions and the
//! protocol steps tern offers a milter (tern.conf `milter_protocol`), and what
//! both sides agree on from the milter's answer, as milter8.c does.

use std::fmt;

use super::protocol::{
    OptNeg, Stage, MTA_ACTIONS, SMFIP_HDR_LEADSPC, SMFIP_NOBODY, SMFIP_NOCONNECT, SMFIP_NODATA, SMFIP_NOEOH,
    SMFIP_NOHDRS, SMFIP_NOHELO, SMFIP_NOMAIL, SMFIP_NORCPT, SMFIP_NOREPLY_MASK, SMFIP_NOSEND_MASK,
    SMFIP_NOUNKNOWN, SMFIP_NR_HDR, SMFIP_RCPT_REJ, SMFIP_SKIP,
};

// What each protocol version defines (milter8.c MILTER8_V*_PROTO_MASK): only
// these events may be sent to a milter speaking that version.
const V2_MASK: u32 =
    SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT | SMFIP_NOBODY | SMFIP_NOHDRS | SMFIP_NOEOH;
const V3_MASK: u32 = V2_MASK | SMFIP_NOUNKNOWN;
const V4_MASK: u32 = V3_MASK | SMFIP_NODATA;
const V6_MASK: u32 = V4_MASK | SMFIP_SKIP | SMFIP_RCPT_REJ | SMFIP_NOREPLY_MASK | SMFIP_HDR_LEADSPC;

/// tern.conf `milter_protocol`: a version (2, 3, 4 or 6) and optionally
/// `no_header_reply` (Postfix's syntax and meaning, default "6").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolSetting {
    pub version: u32,
    /// The SMFIP_* steps offered to the milter.
    pub offer: u32,
}

impl Default for ProtocolSetting {
    fn default() -> ProtocolSetting {
        ProtocolSetting {
            version: 6,
            offer: V6_MASK,
        }
    }
}

impl ProtocolSetting {
    pub fn parse(s: &str) -> Result<ProtocolSetting, String> {
        let mut version = None;
        let mut offer = 0;
        for word in s.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
            let (v, mask) = match word {
                "2" => (2, V2_MASK),
                "3" => (3, V3_MASK),
                "4" => (4, V4_MASK),
                "6" => (6, V6_MASK),
                "no_header_reply" => {
                    offer |= SMFIP_NR_HDR;
                    continue;
                }
                _ => {
                    return Err(format!(
                        "milter protocol {word:?}: expected 2, 3, 4, 6 or no_header_reply"
                    ))
                }
            };
            if version.replace(v).is_some() {
                return Err(format!("milter protocol {s:?}: more than one version"));
            }
            offer |= mask;
        }
        let version = version.ok_or_else(|| format!("milter protocol {s:?}: no version"))?;
        Ok(ProtocolSetting { version, offer })
    }

    /// The MTA's SMFIC_OPTNEG.
    pub fn optneg(&self) -> OptNeg {
        OptNeg {
            version: self.version,
            actions: MTA_ACTIONS,
            protocol: self.offer,
            symlists: Vec::new(),
        }
    }
}

/// What one milter and tern agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    /// SMFIF_* the milter may use.
    pub actions: u32,
    /// SMFIP_* as the milter answered: events it declines, replies it will not send.
    pub steps: u32,
    /// Events never to send, not even their macros: not defined in the version
    /// either side speaks (Postfix's np_mask).
    pub not_in_protocol: u32,
    /// Macro names the milter asked for, per [`Stage`] index, replacing tern's list.
    pub symlists: [Option<String>; 7],
}

impl Negotiated {
    /// Whether the milter declined the event whose SMFIP_NO* flag is `flag`.
    pub fn declines(&self, flag: u32) -> bool {
        self.steps & flag != 0
    }

    /// Whether header values go both ways with the space after the colon.
    pub fn leading_space(&self) -> bool {
        self.steps & SMFIP_HDR_LEADSPC != 0
    }
}

/// Why a milter's negotiation answer is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationError {
    /// The milter speaks a newer version than we offered, or one older than 2.
    Version { ours: u32, theirs: u32 },
    /// The milter wants actions we did not offer.
    Actions { offered: u32, wanted: u32 },
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiationError::Version { ours, theirs } => {
                write!(
                    f,
                    "protocol version {theirs} conflicts with MTA protocol version {ours}"
                )
            }
            NegotiationError::Actions { offered, wanted } => {
                write!(
                    f,
                    "request mask {wanted:#x} conflicts with MTA request mask {offered:#x}"
                )
            }
        }
    }
}

impl std::error::Error for NegotiationError {}

/// Check the milter's answer against our offer, as milter8_connect() does.
pub fn negotiate(ours: &ProtocolSetting, theirs: &OptNeg) -> Result<Negotiated, NegotiationError> {
    if theirs.version > ours.version || theirs.version < 2 {
        return Err(NegotiationError::Version {
            ours: ours.version,
            theirs: theirs.version,
        });
    }
    if theirs.actions & !MTA_ACTIONS != 0 {
        return Err(NegotiationError::Actions {
            offered: MTA_ACTIONS,
            wanted: theirs.actions,
        });
    }
    let mut not_in_protocol = SMFIP_NOSEND_MASK & !ours.offer;
    // A milter may speak an older version: never send it events that version lacks.
    let theirs_mask = match theirs.version {
        v if v >= 6 => V6_MASK,
        4 | 5 => V4_MASK,
        3 => V3_MASK,
        _ => V2_MASK,
    };
    not_in_protocol |= SMFIP_NOSEND_MASK & !theirs_mask;
    let mut symlists: [Option<String>; 7] = Default::default();
    for (stage, list) in &theirs.symlists {
        // milter8.c ignores an unknown stage number, and so do we.
        if let Some(slot) = Stage::from_u32(*stage).and_then(|s| symlists.get_mut(s as usize)) {
            *slot = Some(String::from_utf8_lossy(list).into_owned());
        }
    }
    Ok(Negotiated {
        version: theirs.version,
        actions: theirs.actions,
        steps: theirs.protocol,
        not_in_protocol,
        symlists,
    })
}

#[cfg(test)]
mod tests;
