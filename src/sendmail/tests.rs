use super::*;

fn args(s: &[&str]) -> Vec<String> {
    s.iter().map(|a| (*a).to_owned()).collect()
}

#[test]
fn flags() {
    let o = parse_args(
        "sendmail",
        &args(&["-t", "-oi", "-f", "a@b", "-Fx y", "c@d"]),
        None,
    )
    .unwrap();
    assert!(o.extract && o.ignore_dots);
    assert_eq!(o.sender.as_deref(), Some("a@b"));
    assert_eq!(o.full_name.as_deref(), Some("x y"));
    assert_eq!(o.recipients, vec!["c@d".to_owned()]);
    assert_eq!(o.mode, 'm');
    assert_eq!(o.config, PathBuf::from(config::DEFAULT_PATH));
    assert_eq!(parse_args("mailq", &[], None).unwrap().mode, 'p');
    assert_eq!(parse_args("newaliases", &[], None).unwrap().mode, 'i');
    assert_eq!(parse_args("sendmail", &args(&["-bs"]), None).unwrap().mode, 's');
    assert!(parse_args("sendmail", &args(&["-q"]), None).unwrap().queue_run);
    assert!(parse_args("sendmail", &args(&["-q30m"]), None).unwrap().queue_run);
    let o = parse_args(
        "sendmail",
        &args(&["-odb", "-B8BITMIME", "-oem", "x"]),
        Some("/c".into()),
    )
    .unwrap();
    // -B8BITMIME is understood (the body type is read from the content).
    assert_eq!(o.ignored, vec!["-odb".to_owned(), "-oem".to_owned()]);
    assert_eq!(o.config, PathBuf::from("/c"));
    let o = parse_args(
        "sendmail",
        &args(&["-Ac", "-Am", "-ODeliveryMode=b", "-odi", "-oi", "-c", "-x", "y"]),
        None,
    )
    .unwrap();
    assert!(o.ignore_dots);
    assert_eq!(
        o.ignored,
        ["-odi", "-ODeliveryMode=b", "-Ac", "-Am", "-c", "-x"].map(str::to_owned)
    );
    assert_eq!(o.recipients, vec!["y".to_owned()]);
    assert_eq!(parse_args("sendmail", &args(&["-I"]), None).unwrap().mode, 'i');
    assert_eq!(
        parse_args("sendmail", &args(&["-bv", "a"]), None).unwrap().mode,
        'v'
    );
    let o = parse_args(
        "sendmail",
        &args(&["-N", "success,Failure", "-R", "hdrs", "-V", "abc"]),
        None,
    )
    .unwrap();
    assert_eq!(
        o.notify.map(|n| n.to_string()).as_deref(),
        Some("SUCCESS,FAILURE")
    );
    assert_eq!(o.ret, Some(DsnRet::Hdrs));
    assert!(!o.requiretls);
    // RFC 8689 for a submission; other -O options are ignored.
    let o = parse_args(
        "sendmail",
        &args(&["-O", "RequireTLS=yes", "-ODeliveryMode=b", "x"]),
        None,
    )
    .unwrap();
    assert!(o.requiretls);
    assert_eq!(o.ignored, vec!["-ODeliveryMode=b".to_owned()]);
    let o = parse_args("sendmail", &args(&["-Orequiretls=no", "x"]), None).unwrap();
    assert!(!o.requiretls);
    for bad in [
        &["-O", "RequireTLS=maybe"][..],
        &["-Z"][..],
        &["-bz"],
        &["-N", "never,success"],
        &["-R", "x"],
        &["-f"],
        &["-B", "9BIT"],
    ] {
        assert_eq!(
            parse_args("sendmail", &args(bad), None).unwrap_err().exit,
            SysExit::Usage,
            "{bad:?}"
        );
    }
}

#[test]
fn addresses() {
    assert_eq!(
        address_list(
            "Al <a@b>, \"x, y\" <c@d>, e@f (comment, here), team: g@h, i@j;, undisclosed-recipients:;"
        ),
        vec!["a@b", "c@d", "e@f", "g@h", "i@j"]
    );
    assert_eq!(qualify("bob", "h.test").as_deref(), Some("bob@h.test"));
    assert_eq!(qualify("a b@c", "h"), None);
}

#[test]
fn reading_and_fixing() {
    let mut input: &[u8] = b"Subject: hi\r\nTo: a@b\r\n\r\nline\r\n.\r\nafter\r\n";
    let text = read_message(&mut input, false, 1000).unwrap();
    assert_eq!(text, b"Subject: hi\nTo: a@b\n\nline\n");
    let mut input: &[u8] = b"x\n.\nafter";
    assert_eq!(read_message(&mut input, true, 1000).unwrap(), b"x\n.\nafter\n");
    let mut input: &[u8] = b"0123456789\n";
    assert_eq!(
        read_message(&mut input, true, 5).unwrap_err().exit,
        SysExit::DataErr
    );
    let mut input: &[u8] = b"";
    assert_eq!(read_message(&mut input, true, 5).unwrap(), b"");

    let (mut m, body) = Header::parse(b"Subject: s\nBcc: x@y,\n z@w\nTo: a@b\n\nbody\n");
    assert_eq!(m.get("bcc").map(|f| f.value()).as_deref(), Some("x@y, z@w"));
    m.remove("BCC");
    add_missing(&mut m, "u@h", "Jo \"J\" Bloggs\nBcc: evil@x", "h");
    let out = String::from_utf8(m.to_message(body)).unwrap();
    assert!(
        out.starts_with("Subject: s\nTo: a@b\nFrom: \"Jo \\\"J\\\" BloggsBcc: evil@x\" <u@h>\nDate: "),
        "{out}"
    );
    assert!(out.contains("\nMessage-ID: <"), "{out}");
    assert!(out.ends_with("\n\nbody\n"), "{out}");
    // No header at all: fields are added and the empty line separates the body.
    let (mut m, body) = Header::parse(b"just text\n");
    assert!(m.is_empty());
    add_missing(&mut m, "u@h", "", "h");
    let out = String::from_utf8(m.to_message(body)).unwrap();
    assert!(out.starts_with("From: u@h\nDate: "), "{out}");
    assert!(out.ends_with(">\n\njust text\n"), "{out}");
}
