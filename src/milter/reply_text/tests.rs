use super::*;

#[test]
fn reply_codes_are_validated_like_postfix() {
    let r = parse_reply_text(b"554 5.7.1 Spam detected\0").unwrap();
    assert_eq!(
        (r.code, r.esc, r.lines.clone()),
        (554, Some(Status(5, 7, 1)), vec!["Spam detected".to_owned()])
    );
    assert!(!r.is_temporary());
    let r = parse_reply_text(b"451 Try later").unwrap();
    assert_eq!((r.code, r.esc), (451, None));
    assert!(r.is_temporary());
    let r = parse_reply_text(b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third").unwrap();
    assert_eq!(r.lines, ["first", "second", "third"]);
    assert_eq!(r.esc, Some(Status(5, 7, 1)));
    // Percent signs: doubled ones become one, a lone one goes.
    assert_eq!(
        parse_reply_text(b"550 Only 100%% sure, 5% off").unwrap().lines,
        ["Only 100% sure, 5 off"]
    );
    for bad in [
        &b""[..],
        b"250 ok",
        b"550",
        b"55 x",
        b"5x0 x",
        b"550-last line must use a space",
        b"550 first\r\n550 second",
        b"550-first\n550 second",
        b"550-first\r\n551 second",
        b"550-first\r\n",
        b"550 4.7.1 class mismatch",
        b"450 5.7.1 class mismatch",
        b"550 4 digit after code must match",
        b"550 nul\0inside",
    ] {
        assert_eq!(parse_reply_text(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
    // A word that only looks like an enhanced code stays text.
    let r = parse_reply_text(b"550 5.7 not an esc").unwrap();
    assert_eq!((r.esc, r.lines[0].as_str()), (None, "5.7 not an esc"));
}
