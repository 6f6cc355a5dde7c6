use super::*;
use Security::{Bogus, Indeterminate, Insecure, Secure};

const H: &str = "mx.example.org";
const D: &str = "example.org";

fn tlsa_ok(records: Vec<TlsaRecord>, security: Security) -> Result<Secured<Vec<TlsaRecord>>, DnsError> {
    Ok(Secured {
        value: records,
        security,
        canonical: None,
    })
}

fn ee() -> TlsaRecord {
    TlsaRecord {
        usage: 3,
        selector: 1,
        matching: 1,
        data: vec![0xab; 32],
    }
}

fn pkix_ee() -> TlsaRecord {
    TlsaRecord {
        usage: 1,
        selector: 1,
        matching: 1,
        data: vec![0xab; 32],
    }
}

fn sts(mode: &str, mx: &str) -> mtasts::Policy {
    mtasts::parse_policy(&format!(
        "version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n"
    ))
    .unwrap()
}

fn settings(level: Level, dane: bool, o: Option<TlsOverride>) -> Settings {
    Settings {
        level,
        dane,
        domain_override: o,
    }
}

/// One row: the inputs and the expected (action kind, enforce, failure,
/// requiretls, label, report type).
struct Row {
    name: &'static str,
    settings: Settings,
    mx: Security,
    addr: Security,
    tlsa: Option<Result<Secured<Vec<TlsaRecord>>, DnsError>>,
    sts: Option<mtasts::Policy>,
    demands: Demands,
    want: &'static str,
}

/// A compact rendering of a decision for table comparison:
/// `ACTION enforce|lenient FAILURE [requiretls] LABEL REPORT`.
fn render(d: &Decision) -> String {
    let action = match &d.action {
        Action::Connect { tls, enforce } => {
            let t = match tls {
                Tls::Off => "off".to_owned(),
                Tls::Opportunistic => "may".to_owned(),
                Tls::Encrypt => "encrypt".to_owned(),
                Tls::Verify { names } => format!("verify({})", names.join(",")),
                Tls::Dane { tlsa, names } => format!("dane[{}]({})", tlsa.len(), names.join(",")),
            };
            format!("{t} {}", if *enforce { "enforce" } else { "lenient" })
        }
        Action::Skip { result, .. } => {
            format!("skip({})", result.map(|r| r.as_str()).unwrap_or("-"))
        }
    };
    let failure = match d.failure {
        Failure::Temporary => "temp",
        Failure::RequireTls => "5.7.10",
    };
    let rt = if d.requiretls { " requiretls" } else { "" };
    let report = match d.report {
        PolicyType::Tlsa => "tlsa",
        PolicyType::Sts => "sts",
        PolicyType::NoPolicyFound => "no-policy-found",
    };
    format!("{action} {failure}{rt} {} {report}", d.label)
}

fn rows() -> Vec<Row> {
    let may = settings(Level::May, true, None);
    let none = Demands::default();
    let rt = Demands {
        requiretls: true,
        tls_required_no: false,
    };
    let trn = Demands {
        requiretls: false,
        tls_required_no: true,
    };
    let both = Demands {
        requiretls: true,
        tls_required_no: true,
    };
    let row = |name, settings, mx, addr, tlsa, sts, demands, want| Row {
        name,
        settings,
        mx,
        addr,
        tlsa,
        sts,
        demands,
        want,
    };
    vec![
        // --- plain levels, no DANE, no MTA-STS
        row(
            "may",
            may,
            Insecure,
            Insecure,
            None,
            None,
            none,
            "may enforce temp policy=may no-policy-found",
        ),
        row(
            "none",
            settings(Level::None, true, None),
            Insecure,
            Insecure,
            None,
            None,
            none,
            "off enforce temp policy=none no-policy-found",
        ),
        row(
            "encrypt",
            settings(Level::Encrypt, true, None),
            Insecure,
            Insecure,
            None,
            None,
            none,
            "encrypt enforce temp policy=encrypt no-policy-found",
        ),
        row(
            "verify",
            settings(Level::Verify, true, None),
            Insecure,
            Insecure,
            None,
            None,
            none,
            "verify(mx.example.org) enforce temp policy=verify no-policy-found",
        ),
        // --- DANE (RFC 7672 2.2)
        row(
            "dane usable",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![ee()], Secure)),
            None,
            none,
            "dane[1](mx.example.org,example.org) enforce temp policy=dane tlsa",
        ),
        row(
            "dane over mta-sts",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![ee()], Secure)),
            Some(sts("enforce", H)),
            none,
            "dane[1](mx.example.org,example.org) enforce temp policy=dane tlsa",
        ),
        row(
            "dane over verify",
            settings(Level::Verify, true, None),
            Secure,
            Secure,
            Some(tlsa_ok(vec![ee()], Secure)),
            None,
            none,
            "dane[1](mx.example.org,example.org) enforce temp policy=dane tlsa",
        ),
        row(
            "secure, no tlsa: level",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![], Secure)),
            None,
            none,
            "may enforce temp policy=may no-policy-found",
        ),
        row(
            "secure, nxdomain: level",
            may,
            Secure,
            Secure,
            Some(Err(DnsError::NxDomain)),
            None,
            none,
            "may enforce temp policy=may no-policy-found",
        ),
        row(
            "secure, no tlsa: mta-sts",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![], Secure)),
            Some(sts("enforce", H)),
            none,
            "verify(mx.example.org) enforce temp policy=mta-sts mode=enforce sts",
        ),
        row(
            "tlsa insecure (CNAME to unsigned)",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![ee()], Insecure)),
            None,
            none,
            "may enforce temp policy=may no-policy-found",
        ),
        row(
            "tlsa bogus: defer",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![], Bogus)),
            None,
            none,
            "skip(dnssec-invalid) temp policy=dane tlsa",
        ),
        row(
            "tlsa servfail: defer",
            may,
            Secure,
            Secure,
            Some(Err(DnsError::Temporary("SERVFAIL".into()))),
            Some(sts("enforce", H)),
            none,
            "skip(dnssec-invalid) temp policy=dane tlsa",
        ),
        row(
            "unusable only: encrypt",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![pkix_ee()], Secure)),
            None,
            none,
            "encrypt enforce temp policy=dane tlsa",
        ),
        row(
            "unusable only + mta-sts",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![pkix_ee()], Secure)),
            Some(sts("enforce", H)),
            none,
            "verify(mx.example.org) enforce temp policy=mta-sts mode=enforce sts",
        ),
        row(
            "mixed set keeps the usable",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![pkix_ee(), ee()], Secure)),
            None,
            none,
            "dane[1](mx.example.org,example.org) enforce temp policy=dane tlsa",
        ),
        row(
            "insecure MX: no dane",
            may,
            Insecure,
            Secure,
            Some(tlsa_ok(vec![ee()], Secure)),
            None,
            none,
            "may enforce temp policy=may no-policy-found",
        ),
        row(
            "insecure address: no dane",
            may,
            Secure,
            Insecure,
            Some(tlsa_ok(vec![ee()], Secure)),
            None,
            none,
            "may enforce temp policy=may no-policy-found",
        ),
        row(
            "no validation: no dane",
            may,
            Indeterminate,
            Indeterminate,
            Some(tlsa_ok(vec![ee()], Secure)),
            None,
            none,
            "may enforce temp policy=may no-policy-found",
        ),
        row(
            "dane off",
            settings(Level::May, false, None),
            Secure,
            Secure,
            Some(tlsa_ok(vec![ee()], Secure)),
            None,
            none,
            "may enforce temp policy=may no-policy-found",
        ),
        row(
            "dane off, override dane",
            settings(Level::May, false, Some(TlsOverride::Dane)),
            Secure,
            Secure,
            Some(tlsa_ok(vec![ee()], Secure)),
            None,
            none,
            "dane[1](mx.example.org,example.org) enforce temp policy=dane tlsa",
        ),
        row(
            "override dane without tlsa: order goes on",
            settings(Level::Encrypt, false, Some(TlsOverride::Dane)),
            Secure,
            Secure,
            Some(tlsa_ok(vec![], Secure)),
            None,
            none,
            "encrypt enforce temp policy=encrypt no-policy-found",
        ),
        // --- MTA-STS (RFC 8461 5)
        row(
            "sts enforce, MX listed",
            may,
            Insecure,
            Insecure,
            None,
            Some(sts("enforce", "*.example.org")),
            none,
            "verify(mx.example.org) enforce temp policy=mta-sts mode=enforce sts",
        ),
        row(
            "sts enforce, MX not listed",
            may,
            Insecure,
            Insecure,
            None,
            Some(sts("enforce", "mx.other.net")),
            none,
            "skip(validation-failure) temp policy=mta-sts mode=enforce sts",
        ),
        row(
            "sts testing, MX listed",
            may,
            Insecure,
            Insecure,
            None,
            Some(sts("testing", H)),
            none,
            "verify(mx.example.org) lenient temp policy=mta-sts mode=testing sts",
        ),
        row(
            "sts testing, MX not listed",
            may,
            Insecure,
            Insecure,
            None,
            Some(sts("testing", "mx.other.net")),
            none,
            "may lenient temp policy=mta-sts mode=testing sts",
        ),
        row(
            "sts none",
            settings(Level::Encrypt, true, None),
            Insecure,
            Insecure,
            None,
            Some(mtasts::parse_policy("version: STSv1\nmode: none\nmax_age: 1\n").unwrap()),
            none,
            "encrypt enforce temp policy=encrypt no-policy-found",
        ),
        row(
            "sts with bogus tlsa: defer",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![], Bogus)),
            Some(sts("enforce", H)),
            none,
            "skip(dnssec-invalid) temp policy=dane tlsa",
        ),
        // --- overrides (Postfix smtp_tls_policy_maps)
        row(
            "override may beats dane+sts",
            settings(Level::Verify, true, Some(TlsOverride::Fixed(Level::May))),
            Secure,
            Secure,
            Some(tlsa_ok(vec![ee()], Secure)),
            Some(sts("enforce", "mx.other.net")),
            none,
            "may enforce temp policy=may no-policy-found",
        ),
        row(
            "override none",
            settings(Level::Verify, true, Some(TlsOverride::Fixed(Level::None))),
            Insecure,
            Insecure,
            None,
            None,
            none,
            "off enforce temp policy=none no-policy-found",
        ),
        row(
            "override verify",
            settings(Level::May, true, Some(TlsOverride::Fixed(Level::Verify))),
            Insecure,
            Insecure,
            None,
            None,
            none,
            "verify(mx.example.org) enforce temp policy=verify no-policy-found",
        ),
        // --- TLS-Required: No (RFC 8689 3)
        row(
            "trn over dane",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![ee()], Secure)),
            None,
            trn,
            "dane[1](mx.example.org,example.org) lenient temp policy=dane tlsa",
        ),
        row(
            "trn over bogus tlsa",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![], Bogus)),
            None,
            trn,
            "may lenient temp policy=dane tlsa",
        ),
        row(
            "trn over sts mismatch",
            may,
            Insecure,
            Insecure,
            None,
            Some(sts("enforce", "mx.other.net")),
            trn,
            "may lenient temp policy=mta-sts mode=enforce sts",
        ),
        row(
            "trn over sts match",
            may,
            Insecure,
            Insecure,
            None,
            Some(sts("enforce", H)),
            trn,
            "verify(mx.example.org) lenient temp policy=mta-sts mode=enforce sts",
        ),
        row(
            "trn keeps the configured level",
            settings(Level::Encrypt, true, None),
            Insecure,
            Insecure,
            None,
            None,
            trn,
            "encrypt enforce temp policy=encrypt no-policy-found",
        ),
        // --- REQUIRETLS (RFC 8689 4)
        row(
            "rt: secure MX + dane",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![ee()], Secure)),
            None,
            rt,
            "dane[1](mx.example.org,example.org) enforce 5.7.10 requiretls policy=dane tlsa",
        ),
        row(
            "rt: secure MX, no tlsa: pkix",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![], Secure)),
            None,
            rt,
            "verify(mx.example.org) enforce 5.7.10 requiretls policy=may no-policy-found",
        ),
        row(
            "rt: secure MX, insecure address: pkix",
            may,
            Secure,
            Insecure,
            None,
            None,
            rt,
            "verify(mx.example.org) enforce 5.7.10 requiretls policy=may no-policy-found",
        ),
        row(
            "rt: sts enforce",
            may,
            Insecure,
            Insecure,
            None,
            Some(sts("enforce", H)),
            rt,
            "verify(mx.example.org) enforce 5.7.10 requiretls policy=mta-sts mode=enforce sts",
        ),
        row(
            "rt: sts testing is not enough",
            may,
            Insecure,
            Insecure,
            None,
            Some(sts("testing", H)),
            rt,
            "skip(-) 5.7.10 requiretls policy=mta-sts mode=testing sts",
        ),
        row(
            "rt: insecure MX, no sts",
            settings(Level::Verify, true, None),
            Insecure,
            Insecure,
            None,
            None,
            rt,
            "skip(-) 5.7.10 requiretls policy=verify no-policy-found",
        ),
        row(
            "rt: sts enforce, MX not listed",
            may,
            Insecure,
            Insecure,
            None,
            Some(sts("enforce", "mx.other.net")),
            rt,
            "skip(validation-failure) 5.7.10 requiretls policy=mta-sts mode=enforce sts",
        ),
        row(
            "rt: bogus tlsa stays temporary",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![], Bogus)),
            None,
            rt,
            "skip(dnssec-invalid) temp requiretls policy=dane tlsa",
        ),
        row(
            "rt: unusable tlsa raised to pkix",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![pkix_ee()], Secure)),
            None,
            rt,
            "verify(mx.example.org) enforce 5.7.10 requiretls policy=dane tlsa",
        ),
        row(
            "rt: override none",
            settings(Level::May, true, Some(TlsOverride::Fixed(Level::None))),
            Secure,
            Secure,
            None,
            None,
            rt,
            "skip(-) 5.7.10 requiretls policy=none no-policy-found",
        ),
        row(
            "rt: override encrypt raised",
            settings(Level::May, true, Some(TlsOverride::Fixed(Level::Encrypt))),
            Secure,
            Secure,
            None,
            None,
            rt,
            "verify(mx.example.org) enforce 5.7.10 requiretls policy=encrypt no-policy-found",
        ),
        row(
            "rt: TLS-Required: No ignored",
            may,
            Secure,
            Secure,
            Some(tlsa_ok(vec![ee()], Secure)),
            None,
            both,
            "dane[1](mx.example.org,example.org) enforce 5.7.10 requiretls policy=dane tlsa",
        ),
        row(
            "rt: TLS-Required: No ignored (sts)",
            may,
            Insecure,
            Insecure,
            None,
            Some(sts("enforce", "mx.other.net")),
            both,
            "skip(validation-failure) 5.7.10 requiretls policy=mta-sts mode=enforce sts",
        ),
    ]
}

#[test]
fn decision_table() {
    let mut failed = Vec::new();
    for r in rows() {
        let hop = Hop {
            domain: D,
            mx_host: H,
            mx_security: r.mx,
            addr_security: r.addr,
            tlsa: r.tlsa.as_ref(),
            sts: r.sts.as_ref(),
        };
        let got = render(&decide(&r.settings, &hop, &r.demands));
        if got != r.want {
            failed.push(format!("{}:\n   got  {got}\n   want {}", r.name, r.want));
        }
    }
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}

#[test]
fn tlsa_is_looked_up_only_when_it_can_count() {
    let on = settings(Level::May, true, None);
    assert!(wants_tlsa(&on, Secure, Secure));
    for (mx, addr) in [
        (Insecure, Secure),
        (Secure, Insecure),
        (Indeterminate, Secure),
        (Bogus, Secure),
    ] {
        assert!(!wants_tlsa(&on, mx, addr), "{mx:?} {addr:?}");
    }
    assert!(!wants_tlsa(&settings(Level::May, false, None), Secure, Secure));
    assert!(wants_tlsa(
        &settings(Level::May, false, Some(TlsOverride::Dane)),
        Secure,
        Secure
    ));
    assert!(!wants_tlsa(
        &settings(Level::May, true, Some(TlsOverride::Fixed(Level::Verify))),
        Secure,
        Secure
    ));
}

#[test]
fn report_strings_and_labels() {
    let s = settings(Level::May, true, None);
    let t = tlsa_ok(vec![ee()], Secure);
    let hop = Hop {
        domain: D,
        mx_host: H,
        mx_security: Secure,
        addr_security: Secure,
        tlsa: Some(&t),
        sts: None,
    };
    let d = decide(&s, &hop, &Demands::default());
    assert_eq!(d.report_strings, vec![format!("3 1 1 {}", "ab".repeat(32))]);
    assert_eq!(d.label.to_string(), "policy=dane");
    let p = sts("testing", H);
    let hop = Hop {
        sts: Some(&p),
        tlsa: None,
        mx_security: Insecure,
        ..hop
    };
    let d = decide(&s, &hop, &Demands::default());
    assert_eq!(d.label.to_string(), "policy=mta-sts mode=testing");
    assert_eq!(d.report_strings, p.policy_strings());
    // Unusable records are reported as published.
    let u = tlsa_ok(vec![pkix_ee()], Secure);
    let hop = Hop {
        tlsa: Some(&u),
        sts: None,
        mx_security: Secure,
        ..hop
    };
    assert_eq!(
        decide(&s, &hop, &Demands::default()).report_strings,
        vec![format!("1 1 1 {}", "ab".repeat(32))]
    );
}
