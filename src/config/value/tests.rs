use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn sizes() {
    let cases: &[(&str, Option<u64>)] = &[
        ("0", Some(0)),
        ("1", Some(1)),
        ("1024", Some(1024)),
        ("10k", Some(10 * 1024)),
        ("10K", Some(10 * 1024)),
        ("35M", Some(36_700_160)),
        ("1g", Some(1 << 30)),
        ("007", Some(7)),
        ("18446744073709551615", Some(u64::MAX)),
        ("18446744073709551616", None),
        ("17179869184G", None),
        ("99999999999999999999G", None),
        ("", None),
        ("K", None),
        ("10X", None),
        ("10KB", None),
        ("10 K", None),
        (" 10", None),
        ("-1", None),
        ("+1", None),
        ("1.5M", None),
        ("10T", None),
        ("１０", None), // fullwidth digits are not ASCII digits
    ];
    for (s, want) in cases {
        assert_eq!(parse_size(s), *want, "{s:?}");
    }
}

#[test]
fn durations() {
    let d = Duration::from_secs;
    let cases: &[(&str, Option<Duration>)] = &[
        ("0", Some(d(0))),
        ("30", Some(d(30))),
        ("30s", Some(d(30))),
        ("5m", Some(d(300))),
        ("5M", Some(d(300))),
        ("2h", Some(d(7200))),
        ("1d", Some(d(86400))),
        ("1w", Some(d(604_800))),
        ("18446744073709551615", Some(d(u64::MAX))),
        ("18446744073709551615m", None),
        ("99999999999999999999", None),
        ("99999999999999999999w", None),
        ("", None),
        ("m", None),
        ("5x", None),
        ("5ms", None),
        ("5 m", None),
        ("-5", None),
        ("1.5h", None),
    ];
    for (s, want) in cases {
        assert_eq!(parse_duration(s), *want, "{s:?}");
    }
}

#[test]
fn bools() {
    let cases: &[(&str, Option<bool>)] = &[
        ("yes", Some(true)),
        ("YES", Some(true)),
        ("true", Some(true)),
        ("on", Some(true)),
        ("1", Some(true)),
        ("no", Some(false)),
        ("False", Some(false)),
        ("off", Some(false)),
        ("0", Some(false)),
        ("", None),
        ("y", None),
        ("2", None),
        ("enabled", None),
        (" yes", None),
    ];
    for (s, want) in cases {
        assert_eq!(parse_bool(s), *want, "{s:?}");
    }
}

#[test]
fn listen_forms() {
    let cases: &[(&str, &[&str])] = &[
        ("127.0.0.1:2525", &["127.0.0.1:2525"]),
        ("[::1]:2525", &["[::1]:2525"]),
        ("10.0.0.1", &["10.0.0.1:25"]),
        ("::1", &["[::1]:25"]),
        ("[::1]", &["[::1]:25"]),
        ("*:587", &["0.0.0.0:587", "[::]:587"]),
        ("*", &["0.0.0.0:25", "[::]:25"]),
        ("*:25 0.0.0.0:25", &["0.0.0.0:25", "[::]:25"]),
        ("127.0.0.1:0", &["127.0.0.1:0"]),
    ];
    for (v, want) in cases {
        let got = listen(v).unwrap();
        let want: Vec<SocketAddr> = want.iter().map(|s| sa(s)).collect();
        assert_eq!(got, want, "{v:?}");
    }
    for bad in [
        "host:25",
        "1.2.3.4:",
        "1.2.3.4:x",
        "*:-1",
        "*:+25",
        ":25",
        "[1.2.3.4]:25",
        "1.2.3.4:65536",
    ] {
        assert!(listen(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn domains() {
    let long_label = "a".repeat(64);
    let ok_label = "a".repeat(63);
    let too_long = vec!["abcdefghi"; 26].join("."); // 259 characters
    let good = [
        "localhost",
        "mail.example.org",
        "MAIL.Example.Org",
        "a-b.c",
        "1.2.3.4",
        ok_label.as_str(),
    ];
    for d in good {
        assert!(check_domain(d).is_ok(), "{d:?}");
    }
    let bad = [
        "",
        ".",
        "a..b",
        ".a",
        "a.",
        "-a",
        "a-",
        "a.-b",
        "a_b",
        "a b",
        "[1.2.3.4]",
        "bücher.de",
        long_label.as_str(),
        too_long.as_str(),
    ];
    for d in bad {
        assert!(check_domain(d).is_err(), "{d:?}");
    }
}

/// Each tests/configs/bad/NAME.conf must fail with a message starting with NAME.err.

#[test]
fn syslog_facilities() {
    assert_eq!(syslog_facility("daemon"), Ok(3));
    assert_eq!(syslog_facility("mail"), Ok(2));
    assert_eq!(syslog_facility("LOCAL3"), Ok(19));
    assert!(syslog_facility("local8").is_err());
    assert!(syslog_facility("kern").is_err());
}
