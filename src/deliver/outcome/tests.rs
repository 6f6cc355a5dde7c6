use super::*;

fn r(code: u16, text: &str) -> Reply {
    Reply {
        code,
        lines: vec![text.to_owned()],
    }
}

#[test]
fn replies_classify() {
    let o = reply(Stage::Data, &r(250, "2.6.0 queued"));
    assert!(o.is_delivered());
    // A delivery reports 2.0.0 whatever the server said.
    assert_eq!(o.status(), Status(2, 0, 0));
    assert_eq!(o.detail(), "250 2.6.0 queued");
    let o = reply(Stage::Rcpt, &r(451, "4.3.0 later"));
    assert!(o.is_temporary());
    assert_eq!((o.status(), o.stage()), (Status(4, 3, 0), Stage::Rcpt));
    let o = reply(Stage::Mail, &r(550, "nope"));
    assert!(o.is_permanent());
    assert_eq!(o.status(), Status(5, 0, 0));
    assert_eq!(o.reply().map(|r| r.code), Some(550));
}

#[test]
fn diagnostic_type_follows_the_reply() {
    assert_eq!(
        reply(Stage::Rcpt, &r(550, "5.1.1 no such user")).diagnostic(),
        "smtp; 550 5.1.1 no such user"
    );
    assert_eq!(
        null_mx("example.org").diagnostic(),
        "smtp; 556 5.1.10 domain example.org does not accept mail (null MX)"
    );
    assert_eq!(
        command_failed("command died with status 1".to_owned()).diagnostic(),
        "x-local; command died with status 1"
    );
    // The log's detail says where; the DSN quotes the reply alone.
    let o = greeting_refused(&r(421, "4.3.2 busy"));
    assert_eq!(o.detail(), "greeting: 421 4.3.2 busy");
    assert_eq!(o.diagnostic(), "smtp; 421 4.3.2 busy");
}

#[test]
fn records_round_trip() {
    let o = reply(Stage::Rcpt, &r(451, "4.2.0 try later"));
    assert_eq!(o.record(), "4.2.0 451 4.2.0 try later");
    let back = Outcome::from_record(&o.record());
    assert!(back.is_temporary());
    assert_eq!(back.status(), Status(4, 2, 0));
    assert_eq!(back.detail(), "451 4.2.0 try later");
    assert_eq!(back.diagnostic(), "smtp; 451 4.2.0 try later");
    let local = Outcome::from_record("4.2.2 mailbox full: cannot write /m: No space");
    assert_eq!(local.status(), Status(4, 2, 2));
    assert_eq!(
        local.diagnostic(),
        "x-local; mailbox full: cannot write /m: No space"
    );
    // Nothing usable recorded: 4.0.0 and the text as it was.
    let odd = Outcome::from_record("garbage");
    assert_eq!((odd.status(), odd.detail()), (Status(4, 0, 0), "garbage"));
    assert_eq!(Outcome::from_record("").detail(), "");
}

#[test]
fn network_errors_split_timeouts() {
    let t = io::Error::new(io::ErrorKind::TimedOut, "slow");
    assert_eq!(network(Stage::Connect, "connect", &t).status(), Status(4, 4, 2));
    let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
    let o = network(Stage::Connect, "connect", &refused);
    assert_eq!(o.status(), Status(4, 4, 1));
    assert_eq!(o.detail(), "connect: refused");
    let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
    let o = connect_failed("mx.example.org", "192.0.2.1:25".parse().unwrap(), &refused);
    assert_eq!(o.status(), Status(4, 4, 1));
    assert_eq!(
        o.detail(),
        "connect to mx.example.org[192.0.2.1]:25: Connection refused"
    );
    let v6 = connect_failed("mx.example.org", "[2001:db8::1]:25".parse().unwrap(), &refused);
    assert_eq!(
        v6.detail(),
        "connect to mx.example.org[2001:db8::1]:25: Connection refused"
    );
    // Errors that are not the system's keep their words.
    assert_eq!(io_text(&io::Error::other("odd")), "odd");
}

#[test]
fn full_disks_are_mailbox_full() {
    let full = io::Error::from_raw_os_error(libc::ENOSPC);
    assert_eq!(mailbox_io("write", &full).status(), Status(4, 2, 2));
    assert!(local_io("write", &full)
        .detail()
        .starts_with("mailbox full: write: "));
    let other = io::Error::other("x");
    assert_eq!(mailbox_io("write", &other).status(), Status(4, 2, 0));
    assert_eq!(local_io("write", &other).status(), Status(4, 3, 0));
}

#[test]
fn expiry_keeps_the_last_reason() {
    let last = reply(Stage::Rcpt, &r(451, "4.2.0 try later"));
    let o = expired(&last);
    assert!(o.is_permanent());
    assert_eq!(o.status(), Status(4, 4, 7));
    assert_eq!(o.detail(), "delivery time expired: 451 4.2.0 try later");
    assert_eq!(
        o.diagnostic(),
        "x-local; delivery time expired: 451 4.2.0 try later"
    );
}
