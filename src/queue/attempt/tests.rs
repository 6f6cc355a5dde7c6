use super::*;

#[test]
fn a_run_that_finishes_every_recipient_writes_no_state() {
    let mut env = Envelope::new(QueueId::generate(), String::new(), 100);
    for a in ["a@x.test", "b@x.test"] {
        env.recipients.push(Recipient::new(a.to_owned()));
    }
    // Not yet tried: nothing to write unless something changed.
    assert_eq!(conclude(&env, false), Conclusion::Keep);
    assert_eq!(conclude(&env, true), Conclusion::Save);
    env.recipients[0].status = RcptStatus::Sent;
    env.recipients[1].status = RcptStatus::Deferred;
    assert_eq!(conclude(&env, true), Conclusion::Save);
    // All final: retired at once, whatever changed in the run.
    env.recipients[1].status = RcptStatus::Failed;
    assert_eq!(conclude(&env, true), Conclusion::Retire);
    assert_eq!(conclude(&env, false), Conclusion::Retire);
}

/// An envelope that names one remote mailbox twice (whatever wrote it)
/// sends it one RCPT; the second takes the first's result.
#[test]
fn remote_recipients_group_by_domain_each_mailbox_once() {
    let cfg = Config::parse("local_domains = example.test", std::path::Path::new("t")).unwrap();
    let mut env = Envelope::new(QueueId::generate(), String::new(), 100);
    for a in [
        "x@peer.test",
        "alice@example.test",
        "y@other.test",
        "x@PEER.test",
        "X@peer.test",
        "x@xn--bcher-kva.test",
        "x@bücher.test",
    ] {
        env.recipients.push(Recipient::new(a.to_owned()));
    }
    env.recipients[4].status = RcptStatus::Sent;
    let groups = remote_groups(&cfg, &env, &|r: &Recipient| r.status == RcptStatus::Pending);
    let group = |domain: &str, idxs: Vec<usize>, dups: Vec<(usize, usize)>| Group {
        domain: domain.to_owned(),
        idxs,
        dups,
    };
    assert_eq!(
        groups,
        vec![
            group("peer.test", vec![0], vec![(3, 0)]),
            group("other.test", vec![2], vec![]),
            group("xn--bcher-kva.test", vec![5], vec![(6, 5)]),
        ]
    );
}

#[test]
fn only_a_flush_before_the_planned_retry_is_early() {
    let mut r = Recipient::new("a@x.test".to_owned());
    assert_eq!(flushed_early(&r, 100), None, "never tried");
    r.status = RcptStatus::Deferred;
    r.next_attempt = Some(500);
    assert_eq!(flushed_early(&r, 100), Some(500), "flushed");
    assert_eq!(flushed_early(&r, 500), None, "due");
    assert_eq!(flushed_early(&r, 600), None, "late");
    r.next_attempt = None;
    assert_eq!(flushed_early(&r, 100), None);
}

#[test]
fn remote_mta_is_the_host_name() {
    assert_eq!(
        remote_relay("mx.example.org[192.0.2.1]:25"),
        Some("mx.example.org")
    );
    assert_eq!(remote_relay("lmtp/mx.test[/run/dovecot/lmtp]"), Some("mx.test"));
    assert_eq!(remote_relay("local"), None);
    assert_eq!(remote_relay("none"), None);
}

#[test]
fn delays_split_the_time_like_postfix() {
    assert_eq!(Delays([3.0, 0.004, 0.25, 1.5]).to_string(), "3/0/0.25/1.5");
    assert_eq!(Delays([0.0, 0.0, 0.0, 0.0]).to_string(), "0/0/0/0");
    let env = Envelope::new(QueueId::generate(), String::new(), 100);
    let began = Instant::now();
    let t = Timing {
        began: Some(began),
        waited: Duration::from_millis(500),
        setup: Duration::from_secs(2),
        transmit: Duration::from_secs(1),
    };
    let d = Delays::of(&env, 107, began, &t);
    assert_eq!(d.to_string(), "7/0.5/2/1");
}
