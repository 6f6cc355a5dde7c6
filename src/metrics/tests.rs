use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::smtp::reply;

#[test]
fn each_refusal_of_the_catalog_has_its_reason() {
    let cases = [
        (reply::no_such_user("a@b"), Reject::UnknownUser),
        (reply::expn_unknown(), Reject::UnknownUser),
        (reply::relay_denied("a@b"), Reject::RelayDenied),
        (reply::sender_not_owned("a@b"), Reject::SenderNotOwned),
        (reply::tls_required(), Reject::TlsRequired),
        (reply::auth_needs_tls(), Reject::TlsRequired),
        (reply::auth_required(), Reject::AuthRequired),
        (reply::auth_failed(), Reject::AuthFailed),
        (reply::auth_failed().and_close(), Reject::AuthFailed),
        (reply::auth_address_blocked(), Reject::AuthThrottled),
        (reply::auth_account_throttled(), Reject::AuthThrottled),
        (reply::auth_account_throttled().and_close(), Reject::AuthThrottled),
        (reply::size_exceeded(), Reject::TooBig),
        (reply::too_many_recipients(), Reject::TooManyRecipients),
        (reply::no_space(), Reject::NoSpace),
        (reply::local_error(), Reject::LocalError),
        (reply::mail_loop(), Reject::MailLoop),
        (reply::bare_newline(), Reject::BadData),
        (reply::data_line_too_long(), Reject::BadData),
        (reply::bare_newline_command(true), Reject::BadData),
        (reply::bare_newline_command(false), Reject::BadData),
        (
            reply::path_needs_brackets("Syntax: MAIL FROM:<address>"),
            Reject::Protocol,
        ),
        (reply::need_smtputf8(), Reject::Smtputf8Required),
        (reply::harvest_limit(), Reject::HarvestLimit),
        (reply::spf_failed("x.test"), Reject::SpfFail),
        (reply::dmarc_rejected("x.test"), Reject::DmarcReject),
        (reply::dkim_sign_failed(), Reject::LocalError),
        (reply::unknown_command(), Reject::Protocol),
        (reply::line_too_long(), Reject::Protocol),
        (reply::not_implemented(), Reject::Protocol),
        (reply::syntax("Syntax: x"), Reject::Protocol),
        (reply::bad_sender_syntax(), Reject::Protocol),
        (reply::bad_recipient_syntax(), Reject::Protocol),
        (reply::need_helo(), Reject::Protocol),
        (reply::need_mail(), Reject::Protocol),
        (reply::need_rcpt(), Reject::Protocol),
        (reply::nested_mail(), Reject::Protocol),
        (reply::unknown_parameter(), Reject::Protocol),
        (reply::bad_parameter(), Reject::Protocol),
        (reply::body_unsupported(), Reject::Protocol),
        (reply::expn_disabled(), Reject::Protocol),
        (reply::tls_already_active(), Reject::Protocol),
        (reply::auth_mechanism_unknown(), Reject::Protocol),
        (reply::auth_malformed(), Reject::Protocol),
        (reply::auth_cancelled(), Reject::Protocol),
        (reply::http_probe(), Reject::Protocol),
    ];
    for (r, want) in cases {
        assert_eq!(reject_reason(&r), want, "{r}");
    }
}

#[test]
fn each_closing_reply_names_how_the_session_ended() {
    let cases = [
        (reply::bye(), End::Quit),
        (reply::timeout(), End::Timeout),
        (reply::shutting_down(), End::Shutdown),
        (reply::too_many_errors(), End::ErrorLimit),
        (reply::harvest_limit(), End::HarvestLimit),
        (reply::auth_failed().and_close(), End::AuthLimit),
        (reply::auth_address_blocked(), End::AuthLimit),
        (reply::auth_account_throttled().and_close(), End::AuthLimit),
        (reply::evicted(), End::Evicted),
        (reply::http_probe(), End::HttpProbe),
        (reply::internal_error(), End::InternalError),
        (reply::too_busy(), End::Other),
    ];
    for (r, want) in cases {
        assert!(r.close, "{r} does not close");
        assert_eq!(end_of(&r), want, "{r}");
    }
}

/// What a scrape says, read back: family -> (type, help), and every sample
/// line's series (name with labels) -> value. Panics on anything a strict
/// reader of format 0.0.4 would refuse.
fn parse(text: &str) -> (BTreeMap<String, (String, String)>, BTreeMap<String, String>) {
    let mut families: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let mut help: Option<(String, String)> = None;
    let mut current: Option<(String, String)> = None;
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').unwrap();
            help = Some((name.to_owned(), h.to_owned()));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let (hname, h) = help.take().expect("HELP before TYPE");
            assert_eq!(hname, name);
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                families.insert(name.to_owned(), (kind.to_owned(), h)).is_none(),
                "{name} declared twice"
            );
            current = Some((name.to_owned(), kind.to_owned()));
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            let (family, kind) = current.as_ref().expect("sample before TYPE");
            let ok = match kind.as_str() {
                "histogram" => [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count"),
                ]
                .contains(&name.to_owned()),
                _ => name == family,
            };
            assert!(ok, "{name} under {family} ({kind})");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
            assert!(name.starts_with("tern_"), "{name}");
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
            assert!(
                samples.insert(series.to_owned(), value.to_owned()).is_none(),
                "{series} twice"
            );
        }
    }
    (families, samples)
}

#[test]
fn a_scrape_is_well_formed() {
    let (families, samples) = parse(&render());
    for name in [
        "tern_connections_total",
        "tern_sessions_closed_total",
        "tern_sessions",
        "tern_messages_accepted_total",
        "tern_smtp_rejects_total",
        "tern_auth_attempts_total",
        "tern_tls_sessions_total",
        "tern_tls_handshake_failures_total",
        "tern_deliveries_total",
        "tern_delivery_latency_seconds",
        "tern_queue_messages",
        "tern_queue_oldest_message_age_seconds",
        "tern_spool_commit_seconds",
        "tern_start_time_seconds",
        "tern_build_info",
    ] {
        assert!(families.contains_key(name), "{name} missing");
    }
    // Every series exists from the start, zero or not.
    assert!(samples.contains_key("tern_connections_total{listener=\"smtps\",outcome=\"refused_proxy\"}"));
    assert!(samples.contains_key("tern_deliveries_total{transport=\"smtp\",status=\"bounced\"}"));
    assert!(samples.contains_key("tern_delivery_latency_seconds_bucket{transport=\"local\",le=\"+Inf\"}"));
    assert!(samples.contains_key("tern_queue_messages{state=\"corrupt\"}"));
    assert_eq!(
        samples
            .get(&format!(
                "tern_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            ))
            .unwrap(),
        "1"
    );
}

#[test]
fn scrape_hooks_run_before_each_render() {
    on_scrape(|| queue_size(QueueState::Maildrop, 4242));
    let (_, samples) = parse(&render());
    assert_eq!(
        samples.get("tern_queue_messages{state=\"maildrop\"}").unwrap(),
        "4242"
    );
}

/// ternd(8) documents every metric and every label value a scrape shows.
#[test]
fn the_man_page_lists_every_metric_and_label_value() {
    let page = include_str!("../../man/ternd.8");
    let (families, samples) = parse(&render());
    let mut missing = BTreeSet::new();
    for name in families.keys() {
        if !page.contains(&format!(".It Sy {name}")) {
            missing.insert(name.clone());
        }
    }
    for series in samples.keys() {
        let Some((_, labels)) = series.split_once('{') else {
            continue;
        };
        for pair in labels.trim_end_matches('}').split(',') {
            let (k, v) = pair.split_once('=').unwrap();
            let v = v.trim_matches('"');
            if k == "le" || k == "version" {
                continue;
            }
            if !page.contains(&format!("Cm {v}")) {
                missing.insert(format!("{k}={v}"));
            }
        }
    }
    assert!(missing.is_empty(), "not in man/ternd.8: {missing:?}");
}
