use super::*;
use serde_json::Value;
use std::io::Read;

fn who() -> Reporter {
    Reporter {
        organization: "Example Org".to_owned(),
        contact: "tlsrpt@sender.example".to_owned(),
        submitter: "mx.sender.example".to_owned(),
    }
}

fn sts_policy() -> PolicyDetails {
    PolicyDetails::new(
        PolicyType::Sts,
        vec![
            "version: STSv1".into(),
            "mode: testing".into(),
            "mx: *.mail.company-y.example".into(),
            "max_age: 86400".into(),
        ],
        "Company-Y.example.",
        "mx1.mail.company-y.example",
    )
}

fn events() -> Vec<Event> {
    let tlsa = PolicyDetails::new(
        PolicyType::Tlsa,
        vec!["3 1 1 abcd".into()],
        "company-y.example",
        "MX2.company-y.example",
    );
    let mut v = Vec::new();
    for _ in 0..3 {
        v.push(Event {
            policy: sts_policy(),
            failure: None,
        });
    }
    let mut expired = Failure::new(ResultType::CertificateExpired, "mx1.mail.company-y.example");
    expired.sending_mta_ip = Some("2001:db8::1".parse().unwrap());
    expired.receiving_ip = Some("192.0.2.25".parse().unwrap());
    for _ in 0..2 {
        v.push(Event {
            policy: sts_policy(),
            failure: Some(expired.clone()),
        });
    }
    v.push(Event {
        policy: sts_policy(),
        failure: Some(Failure::new(
            ResultType::StarttlsNotSupported,
            "mx3.mail.company-y.example",
        )),
    });
    v.push(Event {
        policy: tlsa,
        failure: None,
    });
    v.push(Event {
        policy: PolicyDetails::new(
            PolicyType::NoPolicyFound,
            vec![],
            "other.example",
            "mx.other.example",
        ),
        failure: None,
    });
    v
}

#[test]
fn record_survives_reopening_and_loads_by_day() {
    let dir = tempfile::tempdir().unwrap();
    let day1 = 1_733_270_400; // 2024-12-04T00:00:00Z
    {
        let s = Store::open(dir.path()).unwrap();
        for ev in events() {
            s.record(day1 + 3600, &ev).unwrap();
        }
    }
    let s = Store::open(dir.path()).unwrap();
    s.record(day1 + 86_400 + 5, &events()[0]).unwrap();
    // A line cut by a crash.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("2024-12-04"))
        .unwrap();
    f.write_all(b"{\"policy\":{\"poli").unwrap();
    assert_eq!(
        s.finished_days(day1 + 86_400 + 10).unwrap(),
        vec!["2024-12-04".to_owned()]
    );
    assert_eq!(s.finished_days(day1 + 10).unwrap(), Vec::<String>::new());
    assert_eq!(s.load("2024-12-04").unwrap(), events());
    s.remove("2024-12-04").unwrap();
    assert_eq!(
        s.finished_days(day1 + 3 * 86_400).unwrap(),
        vec!["2024-12-05".to_owned()]
    );
    s.remove("../etc/passwd").unwrap();
}

#[test]
fn days() {
    assert_eq!(day_of(0), "1970-01-01");
    assert_eq!(day_of(1_733_270_400 + 86_399), "2024-12-04");
    assert_eq!(day_start(1_733_270_400 + 500), 1_733_270_400);
    assert!(is_day("2024-12-04"));
    assert!(!is_day("2024-12-4x"));
    assert!(!is_day(".2024-12-04.tmp"));
}

#[test]
fn report_json_has_the_rfc8460_fields() {
    let agg = aggregate(&events());
    assert_eq!(
        agg.keys().collect::<Vec<_>>(),
        vec!["company-y.example", "other.example"]
    );
    let day = 1_733_270_400;
    let r = Report::new(&who(), "company-y.example", day, agg["company-y.example"].clone());
    let v: Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["organization-name"], "Example Org");
    assert_eq!(v["date-range"]["start-datetime"], "2024-12-04T00:00:00Z");
    assert_eq!(v["date-range"]["end-datetime"], "2024-12-04T23:59:59Z");
    assert_eq!(v["contact-info"], "tlsrpt@sender.example");
    assert_eq!(v["report-id"], "2024-12-04.company-y.example@mx.sender.example");
    let policies = v["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2);
    let sts = policies
        .iter()
        .find(|p| p["policy"]["policy-type"] == "sts")
        .unwrap();
    assert_eq!(sts["policy"]["policy-domain"], "company-y.example");
    assert_eq!(sts["policy"]["policy-string"][1], "mode: testing");
    assert_eq!(
        sts["policy"]["mx-host"],
        serde_json::json!(["*.mail.company-y.example"])
    );
    assert_eq!(sts["summary"]["total-successful-session-count"], 3);
    assert_eq!(sts["summary"]["total-failure-session-count"], 3);
    let details = sts["failure-details"].as_array().unwrap();
    assert_eq!(details.len(), 2);
    let exp = details
        .iter()
        .find(|d| d["result-type"] == "certificate-expired")
        .unwrap();
    assert_eq!(exp["failed-session-count"], 2);
    assert_eq!(exp["sending-mta-ip"], "2001:db8::1");
    assert_eq!(exp["receiving-ip"], "192.0.2.25");
    assert_eq!(exp["receiving-mx-hostname"], "mx1.mail.company-y.example");
    assert!(exp.get("receiving-mx-helo").is_none());
    let st = details
        .iter()
        .find(|d| d["result-type"] == "starttls-not-supported")
        .unwrap();
    assert_eq!(st["failed-session-count"], 1);
    let tlsa = policies
        .iter()
        .find(|p| p["policy"]["policy-type"] == "tlsa")
        .unwrap();
    assert_eq!(
        tlsa["policy"]["mx-host"],
        serde_json::json!(["mx2.company-y.example"])
    );
    assert_eq!(tlsa["summary"]["total-failure-session-count"], 0);
    assert!(tlsa.get("failure-details").is_none());
    let other = Report::new(&who(), "other.example", day, agg["other.example"].clone());
    let v: Value = serde_json::from_str(&other.to_json()).unwrap();
    assert_eq!(v["policies"][0]["policy"]["policy-type"], "no-policy-found");
    // And it reads back as what was written.
    let back: Report = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn result_type_names() {
    let all = [
        (ResultType::StarttlsNotSupported, "starttls-not-supported"),
        (ResultType::CertificateHostMismatch, "certificate-host-mismatch"),
        (ResultType::CertificateExpired, "certificate-expired"),
        (ResultType::CertificateNotTrusted, "certificate-not-trusted"),
        (ResultType::ValidationFailure, "validation-failure"),
        (ResultType::TlsaInvalid, "tlsa-invalid"),
        (ResultType::DnssecInvalid, "dnssec-invalid"),
        (ResultType::DaneRequired, "dane-required"),
        (ResultType::StsPolicyFetchError, "sts-policy-fetch-error"),
        (ResultType::StsPolicyInvalid, "sts-policy-invalid"),
        (ResultType::StsWebpkiInvalid, "sts-webpki-invalid"),
    ];
    for (t, name) in all {
        assert_eq!(t.as_str(), name);
        assert_eq!(serde_json::to_value(t).unwrap(), name);
    }
    use rustls::CertificateError as C;
    let e = |c| rustls::Error::InvalidCertificate(c);
    assert_eq!(
        ResultType::of_tls_error(&e(C::NotValidForName)),
        ResultType::CertificateHostMismatch
    );
    assert_eq!(
        ResultType::of_tls_error(&e(C::Expired)),
        ResultType::CertificateExpired
    );
    assert_eq!(
        ResultType::of_tls_error(&e(C::UnknownIssuer)),
        ResultType::CertificateNotTrusted
    );
    assert_eq!(
        ResultType::of_tls_error(&rustls::Error::HandshakeNotComplete),
        ResultType::ValidationFailure
    );
}

/// Split a message at its MIME boundary; returns (head, parts).
fn mime(m: &str) -> (String, Vec<String>) {
    let (head, body) = m.split_once("\n\n").unwrap();
    let b = head
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let mut parts: Vec<String> = body.split(&format!("--{b}")).map(str::to_owned).collect();
    assert!(parts.last().unwrap().starts_with("--"), "closing boundary");
    parts.pop();
    parts.remove(0); // preamble
    (head.to_owned(), parts)
}

#[test]
fn report_mail_structure() {
    let agg = aggregate(&events());
    let day = 1_733_270_400;
    let r = Report::new(&who(), "company-y.example", day, agg["company-y.example"].clone());
    let to = vec![
        "tlsrpt@company-y.example".to_owned(),
        "ops@company-y.example".to_owned(),
    ];
    let m = report_mail(
        &r,
        &who(),
        "company-y.example",
        "tlsrpt@sender.example",
        &to,
        day + 90_000,
        "0193A5F2",
    )
    .unwrap();
    let m = String::from_utf8(m).unwrap();
    let (head, parts) = mime(&m);
    for want in [
        "From: tlsrpt@sender.example\n",
        "To: tlsrpt@company-y.example, ops@company-y.example\n",
        "Subject: Report Domain: company-y.example Submitter: mx.sender.example Report-ID: <2024-12-04.company-y.example@mx.sender.example>\n",
        "TLS-Report-Domain: company-y.example\n",
        "TLS-Report-Submitter: mx.sender.example\n",
        "TLS-Required: No\n",
        "MIME-Version: 1.0\n",
        "Content-Type: multipart/report; report-type=\"tlsrpt\";\n",
        "Message-ID: <0193A5F2.tlsrpt@mx.sender.example>\n",
    ] {
        assert!(head.contains(want), "missing {want:?} in\n{head}");
    }
    assert!(head.contains("\nDate: "));
    assert!(!m.contains('\r'));
    assert_eq!(parts.len(), 2);
    assert!(parts[0].contains("Content-Type: text/plain"));
    let att = &parts[1];
    assert!(att.contains("Content-Type: application/tlsrpt+gzip\n"));
    assert!(att.contains("Content-Transfer-Encoding: base64\n"));
    assert!(att.contains("filename=\"mx.sender.example!company-y.example!1733270400!1733356799.json.gz\""));
    // The attachment decodes, gunzips and parses back to the report.
    let b64: String = att.split_once("\n\n").unwrap().1.lines().collect();
    assert!(att.split_once("\n\n").unwrap().1.lines().all(|l| l.len() <= 76));
    let gz = BASE64_STANDARD.decode(b64.trim()).unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert_eq!(report_start(&r), day);
}

#[test]
fn rua_records() {
    let r = parse_record("v=TLSRPTv1; rua=mailto:tlsrpt@example.com").unwrap();
    assert_eq!(r.mailto(), vec!["tlsrpt@example.com"]);
    let r = parse_record("v=TLSRPTv1;rua=mailto:a@example.com, https://reports.example.com/v1 ,MAILTO:b%2Bx@example.com?subject=x;ext=1").unwrap();
    assert_eq!(r.mailto(), vec!["a@example.com", "b+x@example.com"]);
    assert_eq!(r.rua.len(), 3);
    for bad in [
        "rua=mailto:a@example.com; v=TLSRPTv1",
        "v=TLSRPTv2; rua=mailto:a@example.com",
        "v=TLSRPTv1",
        "v=TLSRPTv1; rua=",
        "v=TLSRPTv1; rua=mailto:nobody",
        "v=TLSRPTv1; rua=mailto:a%zz@example.com",
        " v=TLSRPTv1; rua=mailto:a@example.com",
    ] {
        assert!(parse_record(bad).is_err(), "{bad}");
    }
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(select_record(&s(&["v=spf1 -all", "v=TLSRPTv1; rua=mailto:a@example.com"])).is_some());
    assert!(select_record(&s(&[
        "v=TLSRPTv1; rua=mailto:a@example.com",
        "v=TLSRPTv1; rua=mailto:b@example.com"
    ]))
    .is_none());
    assert!(select_record(&s(&["v=spf1 -all"])).is_none());
}
