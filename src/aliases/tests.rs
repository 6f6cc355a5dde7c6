use super::*;

#[test]
fn include_files_are_found_through_includes() {
    let (a, _) = Aliases::parse(
        "list: :include:/etc/mail/one, bob\nother: \":INCLUDE: /etc/mail/two\"\nbad: :include:relative\nagain: :include:/etc/mail/one\n",
    );
    let read = |p: &Path| match p.to_str() {
        Some("/etc/mail/one") => Ok("# comment\nalice, :include:/etc/mail/three\n".to_owned()),
        Some("/etc/mail/three") => Ok(":include:/etc/mail/one\n".to_owned()),
        _ => Err(io::Error::from(io::ErrorKind::PermissionDenied)),
    };
    let found = a.include_files(&read);
    assert_eq!(
        found,
        ["/etc/mail/one", "/etc/mail/two", "/etc/mail/three"].map(PathBuf::from)
    );
    assert!(Aliases::default().include_files(&read).is_empty());
}

#[test]
fn parses_entries_continuations_and_comments() {
    let text =
        "# comment\npostmaster: root\nTeam: alice, bob,\n  carol,\n\tdave\npipe: \"|/bin/prog a, b\"\n";
    let (a, errs) = Aliases::parse(text);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(a.get("POSTMASTER"), Some(&["root".to_owned()][..]));
    assert_eq!(a.get("team").map(<[String]>::len), Some(4));
    assert_eq!(a.get("pipe"), Some(&["\"|/bin/prog a, b\"".to_owned()][..]));
    assert_eq!(a.len(), 3);
}

#[test]
fn bad_lines_are_reported_and_skipped() {
    let (a, errs) = Aliases::parse("  orphan\nnocolon\nok: x\nempty:\n");
    assert_eq!(errs.iter().map(|e| e.line).collect::<Vec<_>>(), vec![1, 2, 4]);
    assert!(a.contains("ok"));
}

fn u(s: &str) -> Target {
    Target::User(s.to_owned())
}
fn r(s: &str) -> Target {
    Target::Remote(s.to_owned())
}
fn f(s: &str) -> Target {
    Target::File(PathBuf::from(s))
}
fn p(s: &str) -> Target {
    Target::Pipe(s.to_owned())
}

/// Include files the tests can "read"; any other path fails.
const FILES: &[(&str, &str)] = &[
    (
        "/etc/mail/list1",
        "# the list\nalice, bob\n\n:include:/etc/mail/list2\r\n",
    ),
    (
        "/etc/mail/list2",
        "carol\n  # indented comment\ndave, \"|/bin/log x, y\"\n",
    ),
    ("/etc/mail/self", "alice, bob"),
    ("/etc/mail/loop", ":include:/etc/mail/loop"),
];

fn expand(aliases: &str, name: &str) -> Result<Vec<Target>, ExpandError> {
    let (a, errs) = Aliases::parse(aliases);
    assert!(errs.is_empty(), "{errs:?}");
    let is_local = |d: &str| d == "example.test";
    let read = |path: &Path| -> io::Result<String> {
        FILES
            .iter()
            .find(|(p, _)| Path::new(p) == path)
            .map(|(_, text)| (*text).to_owned())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    };
    a.expand(name, &is_local, &read)
}

/// `n` aliases a0: a1, a1: a2, ..., the last one pointing at user "end".
fn chain_of(n: usize) -> String {
    (0..n)
        .map(|i| {
            if i + 1 == n {
                format!("a{i}: end\n")
            } else {
                format!("a{i}: a{}\n", i + 1)
            }
        })
        .collect()
}

#[test]
fn expansion() {
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        Result<Vec<Target>, ExpandError>,
    );
    let cases: &[Case] = &[
        ("plain user", "", "alice", Ok(vec![u("alice")])),
        (
            "not an alias, other aliases exist",
            "team: bob",
            "alice",
            Ok(vec![u("alice")]),
        ),
        (
            "alias to two users",
            "team: alice, bob",
            "team",
            Ok(vec![u("alice"), u("bob")]),
        ),
        (
            "nested aliases",
            "all: team, carol\nteam: alice, bob\n",
            "all",
            Ok(vec![u("alice"), u("bob"), u("carol")]),
        ),
        (
            "remote address kept as written",
            "x: Bob@Remote.Example, \"john smith\"@remote.example",
            "x",
            Ok(vec![r("Bob@Remote.Example"), r("\"john smith\"@remote.example")]),
        ),
        (
            "local-domain address re-expanded",
            "x: alice@example.test",
            "x",
            Ok(vec![u("alice")]),
        ),
        (
            "local-domain address expands its alias",
            "x: Team@Example.Test.\nteam: alice, bob",
            "x",
            Ok(vec![u("alice"), u("bob")]),
        ),
        (
            "pipe, quoted pipe with comma, file",
            "x: |/usr/bin/vacation alice, \"|/bin/prog a, b\", /var/log/archive, \"/tmp/with space\"",
            "x",
            Ok(vec![
                p("/usr/bin/vacation alice"),
                p("/bin/prog a, b"),
                f("/var/log/archive"),
                f("/tmp/with space"),
            ]),
        ),
        (
            "include including another include",
            "list: :include:/etc/mail/list1, erin",
            "list",
            Ok(vec![
                u("alice"),
                u("bob"),
                u("carol"),
                u("dave"),
                p("/bin/log x, y"),
                u("erin"),
            ]),
        ),
        (
            "include keyword is case-insensitive and may be quoted",
            "list: \":INCLUDE:/etc/mail/list2\"",
            "list",
            Ok(vec![u("carol"), u("dave"), p("/bin/log x, y")]),
        ),
        (
            "self-reference",
            "alice: alice, bob",
            "alice",
            Ok(vec![u("alice"), u("bob")]),
        ),
        (
            "self-reference by local address",
            "alice: Alice@example.test, bob",
            "alice",
            Ok(vec![u("alice"), u("bob")]),
        ),
        (
            "self-reference inside an include",
            "alice: :include:/etc/mail/self",
            "alice",
            Ok(vec![u("alice"), u("bob")]),
        ),
        (
            "backslash",
            "alice: \\alice, bob",
            "alice",
            Ok(vec![u("alice"), u("bob")]),
        ),
        (
            "backslash stops alias expansion",
            "x: \\Team, \\bob@example.test, \\carol@remote.example\nteam: alice",
            "x",
            Ok(vec![u("team"), u("bob"), r("carol@remote.example")]),
        ),
        (
            "loop names the chain",
            "a: b\nb: a\n",
            "a",
            Err(ExpandError::Loop("a -> b -> a".to_owned())),
        ),
        (
            "loop below the start",
            "x: y, a\na: b\nb: c\nc: a\n",
            "x",
            Err(ExpandError::Loop("x -> a -> b -> c -> a".to_owned())),
        ),
        (
            "loop through a local address",
            "a: b@example.test\nb: a@example.test\n",
            "a",
            Err(ExpandError::Loop("a -> b -> a".to_owned())),
        ),
        (
            "include loop",
            "x: :include:/etc/mail/loop",
            "x",
            Err(ExpandError::Loop(
                "x -> :include:/etc/mail/loop -> :include:/etc/mail/loop".to_owned(),
            )),
        ),
        (
            "dedup",
            "team: alice, alice@example.test, bob, ALICE, \\alice",
            "team",
            Ok(vec![u("alice"), u("bob")]),
        ),
        (
            "dedup across aliases, first-seen order",
            "all: b, a\na: x, y\nb: y, z\n",
            "all",
            Ok(vec![u("y"), u("z"), u("x")]),
        ),
        (
            "case-insensitivity",
            "Team: Alice, BOB",
            "tEAM",
            Ok(vec![u("alice"), u("bob")]),
        ),
        (
            "failing include",
            "x: bob, :include:/etc/mail/missing",
            "x",
            Err(ExpandError::Include("/etc/mail/missing: no such file".to_owned())),
        ),
        (
            "relative include and relative files ignored",
            "x: :include:lists/x, :include:, ./mbox, ~/mbox, mail/box, bob",
            "x",
            Ok(vec![u("bob")]),
        ),
        (
            "a pipe in a local part is a user name, not a command",
            "x: \"|/bin/sh\"@example.test, \"/etc/passwd\"@example.test",
            "x",
            Ok(vec![u("|/bin/sh"), u("/etc/passwd")]),
        ),
        (
            "the name asked for is never a pipe",
            "",
            "|/bin/sh",
            Ok(vec![u("|/bin/sh")]),
        ),
    ];
    for (what, aliases, name, want) in cases {
        assert_eq!(&expand(aliases, name), want, "{what}");
    }
}

#[test]
fn depth_limit() {
    let ok = chain_of(MAX_DEPTH);
    assert_eq!(expand(&ok, "a0"), Ok(vec![u("end")]));
    let deep = chain_of(MAX_DEPTH + 1);
    match expand(&deep, "a0") {
        Err(ExpandError::TooDeep(chain)) => assert!(chain.starts_with("a0 -> a1 -> "), "{chain}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn depth_limit_applies_to_a_list_already_expanded() {
    // `a` is 15 levels deep (a, a0 .. a13): fine right under `r`, and met
    // again under r, b1 .. bk it needs k + 16 levels.
    let text = |k: usize| {
        let mut t = String::from("r: a, b1\na: a0\n");
        t.push_str(&chain_of(14));
        for i in 1..k {
            t.push_str(&format!("b{i}: b{}\n", i + 1));
        }
        t.push_str(&format!("b{k}: a\n"));
        t
    };
    assert_eq!(expand(&text(4), "r"), Ok(vec![u("end")]));
    match expand(&text(5), "r") {
        Err(ExpandError::TooDeep(chain)) => {
            assert_eq!(chain, "r -> b1 -> b2 -> b3 -> b4 -> b5 -> a");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn junk_is_ignored_not_fatal() {
    let junk = [
        "\"",
        "\\",
        "|",
        "\"\"",
        "\"|\"",
        "@",
        "bob@",
        "@example.test",
        "\\@",
        "\\@example.test",
        "\"@",
        ":include:",
        ":include:\"\"",
        ":inc",
        "~",
        "/",
        "é",
        "\"a\"\"b\"@example.test",
        "a@[1.2.3.4]",
        "a@[IPv6:::1]",
        "a@[x:y]",
        "a@b@c",
        "\\\\\\",
    ];
    for j in junk {
        let got = expand(&format!("x: ok, {j}\n"), "x");
        assert!(got.as_ref().is_ok_and(|t| t.contains(&u("ok"))), "{j:?}: {got:?}");
        let _ = expand("", j);
    }
}

#[test]
fn shared_sublists_do_not_take_exponential_time() {
    // Each level names both lists of the next: 2^19 paths, 38 aliases.
    let mut text = String::new();
    for i in 0..19 {
        text.push_str(&format!("a{i}: a{j}, b{j}\nb{i}: b{j}, a{j}\n", j = i + 1));
    }
    text.push_str("a19: x\nb19: y\n");
    assert_eq!(expand(&text, "a0"), Ok(vec![u("x"), u("y")]));
}

#[test]
fn expand_errors_display() {
    assert_eq!(
        ExpandError::Loop("a -> b -> a".into()).to_string(),
        "alias loop: a -> b -> a"
    );
    assert_eq!(
        ExpandError::TooDeep("a0 -> a1".into()).to_string(),
        "aliases nested deeper than 20 levels: a0 -> a1"
    );
    assert_eq!(
        ExpandError::Include("/x: denied".into()).to_string(),
        "cannot read :include: file /x: denied"
    );
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aliases");
    std::fs::write(&path, "postmaster: root\nbad line\n").unwrap();
    let (a, errs) = Aliases::load(&path).unwrap();
    assert_eq!(a.get("postmaster"), Some(&["root".to_owned()][..]));
    assert_eq!(errs.len(), 1);
    assert!(Aliases::load(&dir.path().join("missing")).is_err());
}
