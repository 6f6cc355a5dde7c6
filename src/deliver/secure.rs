//! The TLS each hop gets (issue 18): the glue between routing, DNS and the
//! pure decision of `tlspolicy::policy`. For one destination it gathers
//! what the decision needs once (the settings, the MTA-STS policy, the
//! message's demands); for each hop it looks up the TLSA records when they
//! can count (RFC 7672 2.2.2's base: the validated CNAME target first, then
//! the MX name), asks for the decision, and turns it into what the
//! connection does: whether and how STARTTLS goes, which certificate check
//! runs, whether its failure is fatal, and what the log line and TLS-RPT
//! say about it.

use std::io;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::ClientConfig;

use crate::clock;
use crate::config::{Config, TlsOverride, TlsPolicy};
use crate::deliver::dns::{DnsError, Resolver, Secured, Security, TlsaRecord};
use crate::deliver::outcome::TlsNote;
use crate::deliver::route::Hop;
use crate::deliver::tls_client::{self, Observed};
use crate::message;
use crate::spool::Envelope;
use crate::tlspolicy::dane::{DaneVerifier, Tlsa};
use crate::tlspolicy::mtasts::Policy as StsPolicy;
use crate::tlspolicy::outbound::Outbound;
use crate::tlspolicy::policy::{self, Action, Decision, Demands, Failure, Settings, Tls};
use crate::tlspolicy::tlsrpt::{self, Event, PolicyDetails, ResultType};

/// What is the same for every hop of one destination.
pub struct Destination<'a> {
    pub cfg: &'a Config,
    pub outbound: &'a Outbound,
    /// The recipient domain: MTA-STS's and TLS-RPT's policy domain.
    pub domain: &'a str,
    settings_base: Settings,
    sts: Option<StsPolicy>,
    pub demands: Demands,
    /// The message is itself a TLS report: its sessions are not recorded
    /// (RFC 8460 5.3, so that reports do not breed reports).
    is_report: bool,
}

impl<'a> Destination<'a> {
    /// Gather what the decision needs for mail to `domain` routed as
    /// `first` (every hop of a plan shares the route and its `tls=`);
    /// `configured`: a route or relay host chose the hosts, so MTA-STS,
    /// whose policy lists the domain's own MX hosts, is not consulted.
    pub fn new(
        cfg: &'a Config,
        outbound: &'a Outbound,
        domain: &'a str,
        first: Option<&Hop>,
        configured: bool,
        env: &Envelope,
        message: &[u8],
    ) -> Destination<'a> {
        let level = first.map_or(cfg.remote.tls, |h| h.tls);
        let domain_override = match first {
            Some(h) if h.tls_fixed => Some(TlsOverride::Fixed(h.tls)),
            _ => cfg.outbound.policy_for(domain),
        };
        let fixed = matches!(domain_override, Some(TlsOverride::Fixed(_)));
        // RFC 7672 2.2: only validated answers count; without a validating
        // resolver DANE is off (the probe's log line says why), even for a
        // domain whose override asks for it.
        let validated = outbound.dnssec_usable();
        let settings_base = Settings {
            level,
            dane: cfg.outbound.dane && validated,
            domain_override: match domain_override {
                Some(TlsOverride::Dane) if !validated => None,
                o => o,
            },
        };
        let sts = if cfg.outbound.mta_sts && !configured && !fixed && !domain.starts_with('[') {
            outbound.sts_policy(cfg, domain, clock::now())
        } else {
            None
        };
        let headers = message::split(message).0;
        let tls_required_no = cfg.outbound.tls_required_header
            && message::fields(headers)
                .any(|f| f.is("TLS-Required") && f.value().trim().eq_ignore_ascii_case("no"));
        let is_report = cfg
            .tlsrpt
            .from
            .as_deref()
            .is_some_and(|f| f.eq_ignore_ascii_case(&env.sender))
            && message::fields(headers).any(|f| f.is("TLS-Report-Submitter"));
        Destination {
            cfg,
            outbound,
            domain,
            settings_base,
            sts,
            demands: Demands {
                requiretls: env.requiretls,
                tls_required_no,
            },
            is_report,
        }
    }

    /// The decision for `hop`, given its address answer's status and the
    /// name CNAMEs led to; the TLSA lookup happens here when it can count.
    pub fn hop(
        &self,
        resolver: &dyn Resolver,
        hop: &Hop,
        addr_security: Security,
        canonical: Option<&str>,
    ) -> HopTls {
        let settings = self.settings_base;
        let wants = policy::wants_tlsa(&settings, hop.mx_security, addr_security);
        let (tlsa, base) = if wants {
            let (r, base) = tlsa_lookup(resolver, &hop.host, canonical, addr_security, hop.port);
            (Some(r), base)
        } else {
            (None, hop.host.clone())
        };
        let phop = policy::Hop {
            domain: self.domain,
            mx_host: &hop.host,
            mx_security: hop.mx_security,
            addr_security,
            tlsa: tlsa.as_ref(),
            sts: self.sts.as_ref(),
        };
        let mut decision = policy::decide(&settings, &phop, &self.demands);
        // RFC 7672 2.2.2, 3.2.2: a CNAME-expanded TLSA base is the first
        // reference identifier and the SNI.
        if let Action::Connect {
            tls: Tls::Dane { names, .. },
            ..
        } = &mut decision.action
        {
            let b = base.to_ascii_lowercase();
            if !names.contains(&b) {
                names.insert(0, b);
            }
        }
        let sni = match &decision.action {
            Action::Connect {
                tls: Tls::Dane { .. },
                ..
            } => base,
            _ => hop.host.clone(),
        };
        HopTls {
            decision,
            sni,
            mx_host: hop.host.clone(),
        }
    }

    /// Record one session (or skipped host) for TLS-RPT.
    pub fn record(&self, tls: &HopTls, failure: Option<(ResultType, Option<String>)>) {
        if self.is_report {
            return;
        }
        let d = &tls.decision;
        let failure = failure.map(|(rt, info)| {
            let mut f = tlsrpt::Failure::new(rt, &tls.mx_host);
            f.additional_information = info;
            f
        });
        let ev = Event {
            policy: PolicyDetails::new(d.report, d.report_strings.clone(), self.domain, &tls.mx_host),
            failure,
        };
        self.outbound.record(self.cfg, &ev, clock::now());
    }
}

/// RFC 7672 2.2.2: TLSA at the validated CNAME target of the MX host
/// first, at the MX host itself when there are none there. Returns the
/// answer and the base it was found at.
fn tlsa_lookup(
    resolver: &dyn Resolver,
    host: &str,
    canonical: Option<&str>,
    addr_security: Security,
    port: u16,
) -> (Result<Secured<Vec<TlsaRecord>>, DnsError>, String) {
    if let Some(c) = canonical.filter(|_| addr_security == Security::Secure) {
        let r = resolver.tlsa(c, port);
        let none_there = matches!(&r, Ok(s) if s.value.is_empty() && s.security != Security::Bogus)
            || matches!(&r, Err(DnsError::NxDomain));
        if !none_there {
            return (r, c.to_owned());
        }
    }
    (resolver.tlsa(host, port), host.to_owned())
}

/// The decision for one hop and what the connection does with it.
#[derive(Debug, Clone)]
pub struct HopTls {
    pub decision: Decision,
    /// The name sent as SNI and checked by PKIX: the MX host, or the TLSA
    /// base for DANE.
    pub sni: String,
    pub mx_host: String,
}

/// When STARTTLS happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Never (`none`).
    Never,
    /// When offered; plaintext otherwise, and after a failed handshake.
    IfOffered,
    /// Always: without it, or with a failed handshake, the host is not used.
    Required,
}

impl HopTls {
    /// `policy=dane`, `policy=mta-sts mode=enforce`, `policy=may`..., and
    /// ` requiretls=yes` for a REQUIRETLS message (RFC 8689).
    pub fn label(&self) -> String {
        let mut l = self.decision.label.to_string();
        if self.decision.requiretls {
            l.push_str(" requiretls=yes");
        }
        l
    }

    /// When STARTTLS happens under this decision (a Skip never connects).
    pub fn start(&self) -> Start {
        match &self.decision.action {
            Action::Connect { tls: Tls::Off, .. } => Start::Never,
            Action::Connect {
                tls: Tls::Opportunistic,
                ..
            } => Start::IfOffered,
            Action::Connect { enforce: false, .. } => Start::IfOffered,
            Action::Connect { .. } => Start::Required,
            Action::Skip { .. } => Start::Never,
        }
    }

    /// Whether the certificate is checked at all (PKIX or DANE).
    pub fn checks(&self) -> bool {
        matches!(
            &self.decision.action,
            Action::Connect {
                tls: Tls::Verify { .. } | Tls::Dane { .. },
                ..
            }
        )
    }

    /// The client config for the handshake, and the observer of a check
    /// that is not enforced.
    pub fn client_config(
        &self,
        ca_file: Option<&std::path::Path>,
    ) -> io::Result<(Arc<ClientConfig>, Option<Arc<Observed>>)> {
        let (tls, enforce) = match &self.decision.action {
            Action::Connect { tls, enforce } => (tls, *enforce),
            Action::Skip { .. } => return Err(io::Error::other("no connection for a skipped host")),
        };
        let verifier: Arc<dyn ServerCertVerifier> = match tls {
            Tls::Verify { .. } => tls_client::pkix_verifier(ca_file)?,
            Tls::Dane { tlsa, names } => Arc::new(DaneVerifier::new(tlsa.clone(), names.clone())),
            Tls::Off | Tls::Opportunistic | Tls::Encrypt => {
                return Ok((tls_client::config(TlsPolicy::May, ca_file)?, None));
            }
        };
        tls_client::checking(verifier, enforce)
    }

    /// What failing this hop means (try the next, then defer or 5.7.10).
    pub fn failure(&self) -> Failure {
        self.decision.failure
    }

    /// Send REQUIRETLS and refuse a server without it.
    pub fn requiretls(&self) -> bool {
        self.decision.requiretls
    }

    /// What kept connections are filed under: the same decision, so that
    /// a connection checked one way never carries mail that needs another.
    pub fn pool_key(&self) -> String {
        let (tls, enforce) = match &self.decision.action {
            Action::Connect { tls, enforce } => (tls_key(tls), *enforce),
            Action::Skip { .. } => ("skip".to_owned(), false),
        };
        format!(
            "{tls} enforce={enforce} sni={} rt={}",
            self.sni, self.decision.requiretls
        )
    }

    /// The log line's note: what applied, and whether the certificate was
    /// authenticated (`verified`, when the session was encrypted).
    pub fn note(&self, encrypted: bool, verified: bool) -> TlsNote {
        TlsNote {
            policy: self.label(),
            verified: encrypted.then_some(verified),
        }
    }
}

fn tls_key(tls: &Tls) -> String {
    match tls {
        Tls::Off => "off".to_owned(),
        Tls::Opportunistic => "may".to_owned(),
        Tls::Encrypt => "encrypt".to_owned(),
        Tls::Verify { names } => format!("verify({})", names.join(",")),
        Tls::Dane { tlsa, names } => {
            let t: Vec<String> = tlsa.iter().map(Tlsa::to_string).collect();
            format!("dane({};{})", t.join(","), names.join(","))
        }
    }
}

/// The TLS-RPT result of a failed handshake or check (RFC 8460 4.3.1).
pub fn result_of(e: &rustls::Error) -> ResultType {
    ResultType::of_tls_error(e)
}
