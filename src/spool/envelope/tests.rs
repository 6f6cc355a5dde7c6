use super::*;

fn id() -> QueueId {
    QueueId::parse("0193A5F2C41B07E2").unwrap()
}

fn full() -> Envelope {
    let mut e = Envelope::new(id(), "alice@example.org".into(), 1_732_370_000);
    e.helo = Some("mail.example.org".into());
    e.client_addr = Some("192.0.2.7".parse().unwrap());
    e.client_name = Some("mail.example.org".into());
    e.protocol = "ESMTPS".into();
    e.body = BodyType::EightBitMime;
    e.smtputf8 = true;
    e.size = 12345;
    e.ret = Some(DsnRet::Hdrs);
    e.envid = Some("QQ314159".into());
    e.auth = Some("alice".into());
    e.delay_warned = true;
    e.hold_reason = Some("milter quarantine: looks odd".into());
    e.requiretls = true;
    e.recipients.push(Recipient::new("bob@example.net".into()));
    e.recipients.push(Recipient {
        addr: "\"carol smith\"@example.com".into(),
        orcpt: Some("rfc822;carol+x@example.com".into()),
        notify: Notify::parse("SUCCESS,FAILURE"),
        status: RcptStatus::Deferred,
        attempts: 3,
        next_attempt: Some(1_732_371_000),
        last_reply: Some("451 4.7.1 try later".into()),
    });
    e
}

fn minimal_text() -> &'static str {
    "version: 1\nid: 0193A5F2C41B07E2\ncreated: 5\nsender: \nrcpt: a@b status=pending attempts=0\n"
}

#[test]
fn text_form_is_readable() {
    let t = full().to_text();
    assert!(
        t.starts_with("version: 1\nid: 0193A5F2C41B07E2\ncreated: 1732370000\n"),
        "{t}"
    );
    assert!(t.contains("\nsender: alice@example.org\n"));
    assert!(t.contains("\nclient-addr: 192.0.2.7\n"));
    assert!(t.contains("\nbody: 8bitmime\n"));
    assert!(t.contains("\nsmtputf8: yes\n"));
    assert!(t.contains("\nret: hdrs\n"));
    assert!(t.contains("\nrequiretls: yes\n"));
    assert!(t.contains("\nrcpt: bob@example.net status=pending attempts=0\n"));
    assert!(
        t.contains("\nhold-reason: milter+20quarantine:+20looks+20odd\n"),
        "{t}"
    );
    assert!(t.contains(
        "\nrcpt: \"carol+20smith\"@example.com status=deferred attempts=3 next=1732371000 \
         orcpt=rfc822;carol+2Bx@example.com notify=SUCCESS,FAILURE last=451+204.7.1+20try+20later\n"
    ));
    assert!(t.ends_with('\n'));
    // None fields are left out.
    let e = Envelope::parse(minimal_text()).unwrap();
    let t = e.to_text();
    for k in [
        "helo:",
        "client-addr:",
        "client-name:",
        "ret:",
        "envid:",
        "auth:",
        "hold-reason:",
        "requiretls:",
        "next=",
        "orcpt=",
        "last=",
    ] {
        assert!(!t.contains(k), "{k} in {t}");
    }
}

#[test]
fn round_trip_table() {
    let mut cases = vec![full()];
    let mut e = Envelope::new(id(), String::new(), 0);
    e.recipients.push(Recipient::new(String::new()));
    cases.push(e);
    let mut e = full();
    e.client_addr = Some("2001:db8::1".parse().unwrap());
    e.helo = Some(String::new());
    e.envid = Some("a=b+c d\r\ne\u{0}f".into());
    e.body = BodyType::Binary;
    e.ret = Some(DsnRet::Full);
    e.recipients[0].status = RcptStatus::Sent;
    e.recipients[1].status = RcptStatus::Failed;
    e.recipients[1].orcpt = Some(String::new());
    e.recipients[1].attempts = u32::MAX;
    e.recipients[1].next_attempt = Some(u64::MAX);
    e.recipients.push(Recipient::new("用户@例子.广告".into()));
    e.sender = "\"odd = + sender\"@exämple.org".into();
    e.created = u64::MAX;
    e.size = u64::MAX;
    cases.push(e);
    for e in cases {
        let t = e.to_text();
        assert_eq!(Envelope::parse(&t), Ok(e.clone()), "{t}");
        // Tolerated variations: no final newline, CRLF.
        assert_eq!(Envelope::parse(t.trim_end_matches('\n')), Ok(e.clone()));
        assert_eq!(Envelope::parse(&t.replace('\n', "\r\n")), Ok(e));
    }
}

/// xorshift64*: a small deterministic generator so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn odd_string(&mut self) -> String {
        const POOL: &[char] = &[
            'a', 'Z', '0', '@', '.', ' ', '=', '+', '\n', '\r', '\t', '\0', ':', '"', '\\', '<', '>', ';',
            ',', '%', '~', '\u{7f}', 'é', 'ß', '日', '本', '😀', '\u{feff}', '\u{2028}', '+', '=',
        ];
        let len = self.below(24) as usize;
        (0..len)
            .map(|_| POOL[self.below(POOL.len() as u64) as usize])
            .collect()
    }
    fn opt_string(&mut self) -> Option<String> {
        (self.below(3) != 0).then(|| self.odd_string())
    }
    fn num(&mut self) -> u64 {
        match self.below(3) {
            0 => 0,
            1 => u64::MAX,
            _ => self.next(),
        }
    }
}

fn random_envelope(r: &mut Rng) -> Envelope {
    let mut e = Envelope::new(QueueId::generate(), r.odd_string(), r.num());
    e.helo = r.opt_string();
    e.client_addr = match r.below(3) {
        0 => None,
        1 => Some(IpAddr::from((r.next() as u32).to_be_bytes())),
        _ => Some(IpAddr::from(
            ((u128::from(r.next()) << 64) | u128::from(r.next())).to_be_bytes(),
        )),
    };
    e.client_name = r.opt_string();
    e.protocol = r.odd_string();
    e.body = [BodyType::SevenBit, BodyType::EightBitMime, BodyType::Binary][r.below(3) as usize];
    e.smtputf8 = r.below(2) == 0;
    e.size = r.num();
    e.ret = [None, Some(DsnRet::Full), Some(DsnRet::Hdrs)][r.below(3) as usize];
    e.envid = r.opt_string();
    e.auth = r.opt_string();
    e.delay_warned = r.next().is_multiple_of(2);
    e.requiretls = r.next().is_multiple_of(2);
    for _ in 0..=r.below(4) {
        e.recipients.push(Recipient {
            addr: r.odd_string(),
            orcpt: r.opt_string(),
            notify: [
                None,
                Some(Notify::NEVER),
                Notify::parse("SUCCESS,DELAY"),
                Some(Notify::DEFAULT),
            ][r.below(4) as usize],
            status: [
                RcptStatus::Pending,
                RcptStatus::Sent,
                RcptStatus::Failed,
                RcptStatus::Deferred,
            ][r.below(4) as usize],
            attempts: r.num() as u32,
            next_attempt: (r.below(2) == 0).then(|| r.num()),
            last_reply: r.opt_string(),
        });
    }
    e
}

#[test]
fn round_trip_generated() {
    let mut r = Rng(0x1234_5678_9ABC_DEF1);
    for _ in 0..5000 {
        let e = random_envelope(&mut r);
        let t = e.to_text();
        // Nothing but printable ASCII and line ends in the text.
        assert!(t.bytes().all(|b| b == b'\n' || (32..=126).contains(&b)), "{t:?}");
        assert_eq!(Envelope::parse(&t).as_ref(), Ok(&e), "{t}");
    }
}

#[test]
fn xtext() {
    for s in ["", "a b", "+", "=", "é", "\n\r", "abc~!"] {
        assert_eq!(xtext_decode(&xtext::encode(s)).as_deref(), Ok(s));
    }
    assert_eq!(xtext::encode("a b+c=é"), "a+20b+2Bc+3D+C3+A9");
    assert_eq!(xtext_decode("a+2Bc").as_deref(), Ok("a+c"));
    // Lower case hex is not xtext (RFC 3461 4): the envelope reads what tern writes.
    for bad in ["+", "+2", "+zz", "a b", "a=b", "+FF", "+C3", "\u{e9}", "a+2bc"] {
        assert!(xtext_decode(bad).is_err(), "{bad:?}");
    }
}

fn parse_err(t: &str) -> String {
    match Envelope::parse(t) {
        Ok(e) => panic!("parsed {e:?} from {t:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parse_errors() {
    let ok = minimal_text();
    assert!(Envelope::parse(ok).is_ok());
    assert!(parse_err(&ok.replace("version: 1", "version: 2")).contains("unsupported envelope version 2"));
    assert!(parse_err(&ok.replace("version: 1", "version: x")).contains("line 1: bad version"));
    assert!(parse_err(&ok.replace("version: 1\n", "")).contains("line 1: expected \"version\" first"));
    let e = parse_err(&format!("{ok}colour: blue\n"));
    assert!(e.contains("line 6: unknown key \"colour\""), "{e}");
    let e = parse_err(&ok.replace("rcpt: a@b status=pending attempts=0\n", ""));
    assert!(e.contains("missing \"rcpt\""), "{e}");
    assert!(parse_err(&ok.replace("id: 0193A5F2C41B07E2\n", "")).contains("missing \"id\""));
    assert!(parse_err(&ok.replace("created: 5\n", "")).contains("missing \"created\""));
    assert!(parse_err(&ok.replace("sender: \n", "")).contains("missing \"sender\""));
    assert!(parse_err(&ok.replace("id: 0193A5F2C41B07E2", "id: ../../x")).contains("line 2: bad queue id"));
    assert!(parse_err(&ok.replace("created: 5", "created: -5")).contains("line 3"));
    assert!(parse_err(&ok.replace("created: 5", "created: 99999999999999999999")).contains("out of range"));
    assert!(parse_err(&format!("{ok}sender: x\n")).contains("duplicate key \"sender\""));
    assert!(parse_err(&format!("{ok}version: 1\n")).contains("duplicate"));
    assert!(parse_err(&ok.replace("sender: ", "sender: a b")).contains("line 4: sender"));
    assert!(parse_err(&ok.replace("status=pending", "status=lost")).contains("bad status"));
    assert!(parse_err(&ok.replace("status=pending ", "")).contains("missing status"));
    assert!(parse_err(&ok.replace(" attempts=0", "")).contains("missing attempts"));
    assert!(parse_err(&ok.replace("attempts=0", "attempts=0 attempts=1")).contains("duplicate"));
    assert!(parse_err(&ok.replace("attempts=0", "attempts=0 colour=blue")).contains("unknown field"));
    assert!(parse_err(&ok.replace("attempts=0", "attempts=0 junk")).contains("key=value"));
    assert!(parse_err(&ok.replace("attempts=0", "attempts=0 notify=SOMETIMES")).contains("bad notify"));
    assert!(parse_err(&ok.replace("attempts=0", "attempts=0 notify=NEVER,DELAY")).contains("bad notify"));
    // Any order and case reads; it is written back in canonical form.
    let e = Envelope::parse(&ok.replace("attempts=0", "attempts=0 notify=delay,SUCCESS")).unwrap();
    assert!(e.to_text().contains(" notify=SUCCESS,DELAY\n"), "{}", e.to_text());
    assert!(parse_err(&format!("{ok}no colon here\n")).contains("line 6: expected \"key: value\""));
    assert!(parse_err(&format!("{ok}body: 9bit\n")).contains("bad body"));
    assert!(parse_err(&format!("{ok}smtputf8: maybe\n")).contains("smtputf8"));
    assert!(parse_err(&format!("{ok}client-addr: 999.1.1.1\n")).contains("bad client address"));
    assert!(parse_err(&format!("{ok}ret: some\n")).contains("bad ret"));
    assert!(parse_err(&format!("{ok}requiretls: no\n")).contains("requiretls: expected yes"));
    // An envelope written before REQUIRETLS existed reads as without it.
    assert!(!Envelope::parse(ok).unwrap().requiretls);
    assert!(
        Envelope::parse(&format!("{ok}requiretls: yes\n"))
            .unwrap()
            .requiretls
    );
    assert!(parse_err("").contains("empty envelope"));
    assert!(parse_err("\n\n").contains("empty envelope"));
    // A huge garbage value is cut short in the message.
    let long = "x".repeat(10_000);
    assert!(parse_err(&format!("{ok}{long}: y\n")).len() < 200);
    // Missing final newline, blank lines and "key:" without a space are tolerated.
    assert!(Envelope::parse(ok.trim_end()).is_ok());
    assert!(Envelope::parse(&ok.replace("sender: \n", "\nsender:\n\n")).is_ok());
}

#[test]
fn garbage_never_panics() {
    let mut r = Rng(99);
    let valid = full().to_text();
    // Every prefix (at char boundaries: the input is &str) parses or errors.
    for n in 0..=valid.len() {
        if let Some(p) = valid.get(..n) {
            let _ = Envelope::parse(p);
        }
    }
    // Random bytes, and valid text with random bytes changed.
    for _ in 0..3000 {
        let len = r.below(300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
        let _ = Envelope::parse(&String::from_utf8_lossy(&bytes));
        let mut m = valid.clone().into_bytes();
        for _ in 0..=r.below(4) {
            let i = r.below(m.len() as u64) as usize;
            m[i] = b"+=: \n\r0aF9-"[r.below(11) as usize];
        }
        let _ = Envelope::parse(&String::from_utf8_lossy(&m));
    }
}
