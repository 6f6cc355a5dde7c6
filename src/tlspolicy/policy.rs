//! The TLS decision for one hop, as a pure function: given what DNS said
//! about the next hop, its TLSA records, the domain's MTA-STS policy, the
//! configuration and the message's own demands, what must the SMTP client
//! do on this connection, and what does failing it mean.
//!
//! Order (issue 18, as Postfix with an MTA-STS policy map): a per-domain
//! `tls_policy` override first; then DANE when the MX host has usable TLSA
//! records (RFC 7672 2.2); then an MTA-STS policy in enforce or testing
//! mode (RFC 8461 5); then the configured `smtp_tls` level. REQUIRETLS
//! (RFC 8689 4) raises the bar on top of that; `TLS-Required: No` (RFC
//! 8689 3) lowers DANE and MTA-STS to opportunistic TLS.
//!
//! Nothing here does I/O: the caller looks up TLSA (when [`wants_tlsa`]
//! says so) and the MTA-STS policy, asks [`decide`], and enforces the
//! answer; the answer also says what TLS-RPT counts the session against.

use crate::config::{TlsOverride, TlsPolicy as Level};
use crate::deliver::dns::{DnsError, Secured, Security, TlsaRecord};

use super::dane::{usable_set, Tlsa};
use super::mtasts::{self, Mode};
use super::tlsrpt::{PolicyType, ResultType};

/// The configuration that bears on the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `smtp_tls`: the level when neither DANE nor MTA-STS applies.
    pub level: Level,
    /// `smtp_dane`, already combined with "validation is available" (the
    /// resolver probe): false means DANE is never used unless overridden.
    pub dane: bool,
    /// `tls_policy` for this hop's domain, if any.
    pub domain_override: Option<TlsOverride>,
}

/// What is known about the next hop.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// The policy domain: the recipient domain, or the relay host's domain
    /// when mail goes through a smart host (RFC 8461 4's "smart host" note).
    pub domain: &'a str,
    /// The host being connected to (an MX host, or the domain itself when
    /// it has no MX).
    pub mx_host: &'a str,
    /// How the host name was learnt: the MX answer's status (Secure for
    /// the implicit MX, whose name comes from the envelope, and for a
    /// configured relay host).
    pub mx_security: Security,
    /// The host's address answer's status.
    pub addr_security: Security,
    /// The TLSA lookup, when [`wants_tlsa`] said to make it.
    pub tlsa: Option<&'a Result<Secured<Vec<TlsaRecord>>, DnsError>>,
    /// The domain's MTA-STS policy, if it has one (any mode).
    pub sts: Option<&'a mtasts::Policy>,
}

/// What the message itself asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Demands {
    /// `MAIL FROM:<...> REQUIRETLS` (RFC 8689 4).
    pub requiretls: bool,
    /// A `TLS-Required: No` header (RFC 8689 3), when honouring it is
    /// enabled. Ignored when `requiretls` is set (RFC 8689 3).
    pub tls_required_no: bool,
}

/// The TLS the client must (try to) use on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// Never STARTTLS.
    Off,
    /// STARTTLS when offered, any certificate; plaintext otherwise.
    Opportunistic,
    /// STARTTLS required, any certificate.
    Encrypt,
    /// STARTTLS required, certificate PKIX-valid (WebPKI roots or
    /// `tls_ca_file`) for one of `names`.
    Verify { names: Vec<String> },
    /// STARTTLS required, certificate matching `tlsa`; DANE-TA chains
    /// must name one of `names` (RFC 7672 3.2.2). SNI: the MX host.
    Dane { tlsa: Vec<Tlsa>, names: Vec<String> },
}

/// What to do with this hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Connect and apply `tls`. With `enforce` false (MTA-STS testing, or
    /// `TLS-Required: No` over a policy), a failed check is logged and
    /// reported but the message goes on, as with `Opportunistic`.
    Connect { tls: Tls, enforce: bool },
    /// Do not use this host; `why` is for the log, `result` for TLS-RPT.
    Skip { why: String, result: Option<ResultType> },
}

/// What failing this hop (a skip, or a TLS requirement not met) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Try the next MX; when none is left, defer (a 4xx, retried later).
    /// RFC 7672 2.2 and RFC 8461 5.1 both make TLS failures temporary.
    Temporary,
    /// Try the next MX; when every host has failed this way, return the
    /// message with 5.7.10 (RFC 8689 4.1, 5). A connection that fails for
    /// reasons of its own (timeouts, 4xx) stays temporary.
    RequireTls,
}

/// For the delivery log line: `policy=dane`, `policy=mta-sts mode=enforce`,
/// `policy=may`...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    pub policy: &'static str,
    pub mode: Option<Mode>,
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "policy={}", self.policy)?;
        if let Some(m) = self.mode {
            write!(f, " mode={}", m.as_str())?;
        }
        Ok(())
    }
}

/// The decision for one hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub failure: Failure,
    /// Send REQUIRETLS on MAIL and refuse a server that does not advertise
    /// it (RFC 8689 4.1).
    pub requiretls: bool,
    pub label: Label,
    /// The TLS-RPT policy this session counts against (RFC 8460 4.4).
    pub report: PolicyType,
    /// Its policy strings: TLSA records in presentation form, or the
    /// MTA-STS policy's lines.
    pub report_strings: Vec<String>,
}

/// Whether DANE may apply to this hop, so that TLSA must be looked up:
/// DANE is on for the domain, and both the host name and its addresses
/// were validated (RFC 7672 2.2.1, 2.2.2: no TLSA lookup otherwise).
pub fn wants_tlsa(settings: &Settings, mx_security: Security, addr_security: Security) -> bool {
    let dane_on = match settings.domain_override {
        Some(TlsOverride::Dane) => true,
        Some(TlsOverride::Fixed(_)) => false,
        None => settings.dane,
    };
    dane_on && mx_security == Security::Secure && addr_security == Security::Secure
}

/// What the TLSA answer means for this hop (RFC 7672 2.2).
enum DaneState {
    /// Not applicable: DANE off, insecure DNS, or no (secure) TLSA.
    None,
    /// Usable records.
    Usable(Vec<Tlsa>),
    /// A secure RRset with only unusable records: mandatory TLS without
    /// authentication (RFC 7672 2.2, 3.1).
    Unusable(Vec<String>),
    /// Bogus, or the lookup failed: this host cannot be used now.
    Failed(String, ResultType),
}

fn dane_state(settings: &Settings, hop: &Hop<'_>) -> DaneState {
    if !wants_tlsa(settings, hop.mx_security, hop.addr_security) {
        return DaneState::None;
    }
    match hop.tlsa {
        None => DaneState::None,
        Some(Err(DnsError::NxDomain)) => DaneState::None,
        Some(Err(e)) => DaneState::Failed(
            format!("TLSA lookup for {}: {e}", hop.mx_host),
            ResultType::DnssecInvalid,
        ),
        Some(Ok(s)) => match s.security {
            Security::Bogus => DaneState::Failed(
                format!(
                    "TLSA records of {} are bogus (DNSSEC validation failed)",
                    hop.mx_host
                ),
                ResultType::DnssecInvalid,
            ),
            // RFC 7672 2.2: an insecure TLSA RRset (say, a CNAME into an
            // unsigned zone, 2.2.2) is as good as none.
            Security::Insecure | Security::Indeterminate => DaneState::None,
            Security::Secure if s.value.is_empty() => DaneState::None,
            Security::Secure => {
                let usable = usable_set(&s.value);
                if usable.is_empty() {
                    DaneState::Unusable(s.value.iter().map(presentation).collect())
                } else {
                    DaneState::Usable(usable)
                }
            }
        },
    }
}

/// A raw record in presentation form, for TLS-RPT.
fn presentation(r: &TlsaRecord) -> String {
    let hex: String = r.data.iter().map(|b| format!("{b:02x}")).collect();
    format!("{} {} {} {hex}", r.usage, r.selector, r.matching)
}

/// The reference identifiers for a verified certificate: the MX host, and
/// the next-hop domain too for DANE-TA (RFC 7672 3.2.2). MTA-STS checks
/// the MX host only (RFC 8461 4.2).
fn names(hop: &Hop<'_>, with_domain: bool) -> Vec<String> {
    let mut v = vec![hop.mx_host.trim_end_matches('.').to_ascii_lowercase()];
    let d = hop.domain.trim_end_matches('.').to_ascii_lowercase();
    if with_domain && !v.contains(&d) {
        v.push(d);
    }
    v
}

/// The decision for one hop.
pub fn decide(settings: &Settings, hop: &Hop<'_>, demands: &Demands) -> Decision {
    let d = decide_policy(settings, hop, demands.tls_required_no && !demands.requiretls);
    if demands.requiretls {
        require_tls(d, settings, hop)
    } else {
        d
    }
}

fn connect(tls: Tls, enforce: bool, label: Label, report: PolicyType, strings: Vec<String>) -> Decision {
    Decision {
        action: Action::Connect { tls, enforce },
        failure: Failure::Temporary,
        requiretls: false,
        label,
        report,
        report_strings: strings,
    }
}

fn skip(
    why: String,
    result: Option<ResultType>,
    label: Label,
    report: PolicyType,
    strings: Vec<String>,
) -> Decision {
    Decision {
        action: Action::Skip { why, result },
        failure: Failure::Temporary,
        requiretls: false,
        label,
        report,
        report_strings: strings,
    }
}

fn level_label(level: Level) -> Label {
    let policy = match level {
        Level::None => "none",
        Level::May => "may",
        Level::Encrypt => "encrypt",
        Level::Verify => "verify",
    };
    Label { policy, mode: None }
}

fn level_tls(level: Level, hop: &Hop<'_>) -> Tls {
    match level {
        Level::None => Tls::Off,
        Level::May => Tls::Opportunistic,
        Level::Encrypt => Tls::Encrypt,
        Level::Verify => Tls::Verify {
            names: names(hop, false),
        },
    }
}

/// The decision without REQUIRETLS. `lenient`: `TLS-Required: No`.
fn decide_policy(settings: &Settings, hop: &Hop<'_>, lenient: bool) -> Decision {
    const DANE: Label = Label {
        policy: "dane",
        mode: None,
    };
    // An explicit level for this domain wins over everything.
    if let Some(TlsOverride::Fixed(level)) = settings.domain_override {
        return connect(
            level_tls(level, hop),
            true,
            level_label(level),
            PolicyType::NoPolicyFound,
            Vec::new(),
        );
    }
    let sts = hop.sts.filter(|p| p.mode != Mode::None);
    match dane_state(settings, hop) {
        DaneState::Usable(tlsa) => {
            let strings = tlsa.iter().map(ToString::to_string).collect();
            let tls = Tls::Dane {
                tlsa,
                names: names(hop, true),
            };
            return connect(tls, !lenient, DANE, PolicyType::Tlsa, strings);
        }
        DaneState::Failed(why, result) => {
            if lenient {
                // RFC 8689 3: the sender accepts delivery without the policy.
                return connect(Tls::Opportunistic, false, DANE, PolicyType::Tlsa, Vec::new());
            }
            return skip(why, Some(result), DANE, PolicyType::Tlsa, Vec::new());
        }
        DaneState::Unusable(strings) if sts.is_none() || lenient => {
            let tls = if lenient { Tls::Opportunistic } else { Tls::Encrypt };
            return connect(tls, !lenient, DANE, PolicyType::Tlsa, strings);
        }
        // Unusable TLSA with an MTA-STS policy: MTA-STS authenticates, which
        // is more than the unauthenticated TLS unusable TLSA would give.
        DaneState::Unusable(_) | DaneState::None => {}
    }
    if let Some(p) = sts {
        let label = Label {
            policy: "mta-sts",
            mode: Some(p.mode),
        };
        let strings = p.policy_strings();
        let enforce = p.mode == Mode::Enforce && !lenient;
        if !p.mx_allowed(hop.mx_host) {
            if enforce {
                // RFC 8461 5.1: never deliver to an MX the policy does not list.
                let why = format!(
                    "MX host {} is not in the MTA-STS policy of {}",
                    hop.mx_host, hop.domain
                );
                return skip(
                    why,
                    Some(ResultType::ValidationFailure),
                    label,
                    PolicyType::Sts,
                    strings,
                );
            }
            // Testing (or TLS-Required: No): deliver, count the failure.
            return connect(Tls::Opportunistic, false, label, PolicyType::Sts, strings);
        }
        let tls = Tls::Verify {
            names: names(hop, false),
        };
        return connect(tls, enforce, label, PolicyType::Sts, strings);
    }
    connect(
        level_tls(settings.level, hop),
        true,
        level_label(settings.level),
        PolicyType::NoPolicyFound,
        Vec::new(),
    )
}

/// RFC 8689 4.1: a REQUIRETLS message goes only to an MX learnt through
/// DNSSEC or listed by an enforced MTA-STS policy, over TLS authenticated
/// by DANE or PKIX, to a server that advertises REQUIRETLS.
fn require_tls(mut d: Decision, settings: &Settings, hop: &Hop<'_>) -> Decision {
    d.requiretls = true;
    d.failure = Failure::RequireTls;
    // A temporary DANE problem stays temporary: RFC 8689 returns the
    // message only when no host can qualify, not while DNS is failing.
    if let Action::Skip {
        result: Some(ResultType::DnssecInvalid),
        ..
    } = d.action
    {
        d.failure = Failure::Temporary;
        return d;
    }
    // Already refused (an MX the enforced policy does not list): keep
    // that reason, now with the REQUIRETLS consequence.
    if matches!(d.action, Action::Skip { .. }) {
        return d;
    }
    let sts_enforced = hop
        .sts
        .is_some_and(|p| p.mode == Mode::Enforce && p.mx_allowed(hop.mx_host));
    if hop.mx_security != Security::Secure && !sts_enforced {
        d.action = Action::Skip {
            why: format!(
                "{} was found neither through DNSSEC nor in an enforced MTA-STS policy",
                hop.mx_host
            ),
            result: None,
        };
        return d;
    }
    if settings.domain_override == Some(TlsOverride::Fixed(Level::None)) {
        d.action = Action::Skip {
            why: format!("tls_policy for {} is none", hop.domain),
            result: None,
        };
        return d;
    }
    let action = match d.action {
        Action::Connect {
            tls: tls @ (Tls::Dane { .. } | Tls::Verify { .. }),
            ..
        } => Action::Connect { tls, enforce: true },
        // Anything weaker is raised to a verified certificate for the host.
        Action::Connect { .. } => Action::Connect {
            tls: Tls::Verify {
                names: names(hop, false),
            },
            enforce: true,
        },
        skip @ Action::Skip { .. } => skip,
    };
    d.action = action;
    d
}

#[cfg(test)]
mod tests;
