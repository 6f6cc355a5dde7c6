//! The manual keeps up with the programs, and every reader can read it.
//!
//! - Configuration keys: the parser itself is asked which names are keys.
//!   `ternd -n` reads a file holding `NAME =` and answers `unknown key "NAME"`
//!   exactly when NAME is not one (a key with a bad or missing value gets
//!   another error). The names asked about are every key tern.conf(5) lists
//!   every name of the key table (src/config/keys.rs, `tern::config::keys`)
//!   and every lower-case string literal in src/, where a key handled outside
//!   the table would be spelt. The keys found must be exactly those
//!   tern.conf(5) lists and those of the key table, and all be shown in
//!   etc/tern.conf; ternd(8) names the keys a reload cannot change.
//! - Options: each program is asked which letters it takes. It runs with
//!   `-X` for every letter X and a configuration file that does not exist, so
//!   that it stops at reading the configuration before doing anything; getopts
//!   answers "Unrecognized option" for the letters the program does not take.
//!   The same for sendmail's `-b` modes ("unsupported mode") and ternctl's
//!   commands (its usage line lists them; a documented one must not get the
//!   usage). The options found must be exactly the `.It Fl` entries of the
//!   program's page.
//! - Rendering: each page lints clean with `mandoc -T lint` and with
//!   `groff -ww`, and mandoc, groff and `man -l` render it whole: every
//!   section heading appears in their output. (groff 1.22 once stopped at a
//!   reference title beginning with "An", which it took for the mdoc macro.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{SENDMAIL, TERNCTL, TERND};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The lines of `page` between `.Sh SECTION` and the next `.Sh`.
fn section(page: &str, name: &str) -> Vec<String> {
    read(page)
        .lines()
        .skip_while(|l| *l != format!(".Sh {name}"))
        .skip(1)
        .take_while(|l| !l.starts_with(".Sh "))
        .map(str::to_owned)
        .collect()
}

/// The keys tern.conf(5) documents: the names at the start of each `.It Cm`
/// entry of its KEYS section (`.It Cm a , b , c No = Ar duration` names three).
fn documented_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for line in section("man/tern.conf.5", "KEYS") {
        let Some(rest) = line.strip_prefix(".It Cm ") else {
            continue;
        };
        for w in rest.split_whitespace() {
            match w {
                "No" | "Ar" | "Op" | "Ns" | "Pq" => break,
                "Cm" | "," => {}
                key => {
                    keys.insert(key.trim_end_matches(',').to_owned());
                }
            }
        }
    }
    keys
}

/// Every `"lower_case"` string literal in the .rs files under `dir`.
fn string_literals(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("src/").filter_map(Result::ok) {
        let p = entry.path();
        if p.is_dir() {
            string_literals(&p, out);
            continue;
        }
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        for piece in text.split('"').skip(1).step_by(2) {
            let word = !piece.is_empty()
                && piece.starts_with(|c: char| c.is_ascii_lowercase())
                && piece
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if word {
                out.insert(piece.to_owned());
            }
        }
    }
}

/// Of `names`, those `ternd -n` takes for configuration keys.
fn known_keys(names: &BTreeSet<String>) -> BTreeSet<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let names: Vec<&String> = names.iter().collect();
    let chunks: Vec<&[&String]> = names.chunks(names.len().div_ceil(4).max(1)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let conf = dir.path().join(format!("probe{i}.conf"));
                s.spawn(move || {
                    let mut known = BTreeSet::new();
                    for name in chunk {
                        std::fs::write(&conf, format!("{name} =\n")).expect("write");
                        let (_, said) = run(TERND, &["-n", "-f", conf.to_str().expect("a UTF-8 path")]);
                        if !said.contains(&format!("unknown key \"{name}\"")) {
                            known.insert((*name).clone());
                        }
                    }
                    known
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("probe thread"))
            .collect()
    })
}

/// The names of the key table.
fn table_keys() -> BTreeSet<String> {
    tern::config::keys::all().map(|(k, _)| k.to_owned()).collect()
}

/// The keys the parser knows, found by asking it (see the module comment).
fn parser_keys() -> BTreeSet<String> {
    let mut names = documented_keys();
    names.extend(table_keys());
    string_literals(&root().join("src"), &mut names);
    // Not keys: the probe must tell them apart, or it proves nothing.
    names.insert("no_such_key".to_owned());
    let known = known_keys(&names);
    assert!(
        !known.contains("no_such_key"),
        "ternd -n takes any name for a key"
    );
    assert!(
        known.len() > 40 && known.contains("listen") && known.contains("spool"),
        "the parser knows only {known:?}"
    );
    known
}

#[test]
fn tern_conf_5_documents_exactly_the_keys_the_parser_knows() {
    let documented = documented_keys();
    let known = parser_keys();
    let undocumented: Vec<&String> = known.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&known).collect();
    assert!(
        undocumented.is_empty(),
        "keys ternd -n accepts without an `.It Cm KEY` entry in man/tern.conf.5: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "keys man/tern.conf.5 documents that ternd -n calls unknown: {unknown:?}"
    );
    assert_eq!(
        table_keys(),
        known,
        "the key table (left) and the keys ternd -n accepts (right)"
    );
}

/// ternd(8)'s SIGHUP entry names the keys a reload cannot change ("Changes
/// to ... are logged as needing a restart."): exactly those the key table marks.
#[test]
fn ternd_8_names_the_keys_that_need_a_restart() {
    use tern::config::Reload;
    let page = read("man/ternd.8");
    let start = page
        .find("\nChanges to\n")
        .expect("ternd.8: \"Changes to\" in the SIGHUP entry");
    let rest = &page[start..];
    let end = rest
        .find("are logged as needing a restart.")
        .expect("ternd.8: \"are logged as needing a restart.\"");
    let named: BTreeSet<String> = rest[..end]
        .lines()
        .filter_map(|l| l.strip_prefix(".Cm "))
        .filter_map(|w| w.split_whitespace().next().map(str::to_owned))
        .collect();
    let want: BTreeSet<String> = tern::config::keys::all()
        .filter(|(_, r)| *r != Reload::Applies)
        .map(|(k, _)| k.to_owned())
        .collect();
    assert_eq!(
        named, want,
        "ternd.8's restart list and src/config/keys.rs disagree"
    );
}

#[test]
fn every_config_key_is_in_the_example_tern_conf() {
    let text = read("etc/tern.conf");
    let shown: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix('#').unwrap_or(l);
            let (k, _) = l.split_once('=')?;
            let k = k.trim();
            (k.starts_with(|c: char| c.is_ascii_lowercase())
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
            .then(|| k.to_owned())
        })
        .collect();
    let missing: Vec<String> = parser_keys().into_iter().filter(|k| !shown.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "keys ternd -n accepts without a `#key = default` line in etc/tern.conf: {missing:?}"
    );
}

/// What a page documents as options: the word after each `Fl` of its `.It`
/// lines (`.It Fl h , Fl \-help` gives `h` and `-help`, `.It Fl b Ns Ar
/// mode` gives `b`, `.It Fl bs` gives `bs`).
fn documented_flags(page: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for line in read(page).lines() {
        let Some(rest) = line.strip_prefix(".It ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        for pair in words.windows(2) {
            if pair[0] == "Fl" {
                flags.insert(pair[1].trim_end_matches(',').replace("\\-", "-"));
            }
        }
    }
    flags
}

/// What running `prog args` said, and its exit status.
fn run(prog: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(prog)
        .args(args)
        .env_remove("TERN_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), said)
}

/// A configuration file that does not exist: a program given it stops when
/// it reads its configuration, before it does anything.
const NO_CONFIG: &str = "/nonexistent/tern-manpages-test/tern.conf";

/// The letters `prog` takes as options: `-X` for each letter, after
/// `before` (the option naming NO_CONFIG) and before `after` (a command).
fn accepted_letters(prog: &str, before: &[&str], after: &[&str]) -> BTreeSet<String> {
    let mut accepted = BTreeSet::new();
    for c in ('a'..='z').chain('A'..='Z') {
        let flag = format!("-{c}");
        let mut args: Vec<&str> = before.to_vec();
        args.push(&flag);
        args.extend_from_slice(after);
        let (_, said) = run(prog, &args);
        if !said.contains("Unrecognized option") {
            accepted.insert(c.to_string());
        }
    }
    // The probe must tell the two apart, or it proves nothing.
    assert!(
        accepted.len() < 40 && !accepted.is_empty(),
        "{prog}: accepts {accepted:?}"
    );
    accepted
}

/// The single-letter flags of `documented` must be exactly `accepted`; each
/// longer one (`-oi`, `--help`) must not be refused as a usage error.
fn assert_flags_match(
    page: &str,
    prog: &str,
    base: &[&str],
    after: &[&str],
    accepted: &BTreeSet<String>,
    documented: &BTreeSet<String>,
) {
    let letters: BTreeSet<String> = documented.iter().filter(|f| f.len() == 1).cloned().collect();
    let undocumented: Vec<&String> = accepted.difference(&letters).collect();
    let refused: Vec<&String> = letters.difference(accepted).collect();
    assert!(
        undocumented.is_empty(),
        "{prog} accepts options without an `.It Fl` entry in {page}: {undocumented:?}"
    );
    assert!(
        refused.is_empty(),
        "{page} documents options {prog} does not accept: {refused:?}"
    );
    for long in documented.iter().filter(|f| f.len() > 1) {
        let flag = format!("-{long}");
        let mut args: Vec<&str> = base.to_vec();
        args.push(&flag);
        args.extend_from_slice(after);
        let (code, said) = run(prog, &args);
        assert!(
            code != Some(64) && !said.contains("Unrecognized option"),
            "{page} documents -{long}, which {prog} refuses: {said}"
        );
    }
}

#[test]
fn ternd_8_documents_exactly_the_options_ternd_takes() {
    let base = ["-f", NO_CONFIG];
    let accepted = accepted_letters(TERND, &base, &[]);
    let documented = documented_flags("man/ternd.8");
    assert_flags_match("man/ternd.8", TERND, &base, &[], &accepted, &documented);
    // The long options, from ternd's own help.
    let (code, help) = run(TERND, &["-h"]);
    assert_eq!(code, Some(0), "{help}");
    for long in help.split_whitespace().filter_map(|w| w.strip_prefix("--")) {
        let long = long.trim_end_matches(',');
        assert!(
            documented.contains(&format!("-{long}")),
            "ternd --{long} has no `.It Fl \\-{long}` entry in ternd.8"
        );
    }
}

#[test]
fn sendmail_8_documents_exactly_the_options_and_modes_sendmail_takes() {
    let base = ["-C", NO_CONFIG];
    let page = "man/sendmail.8";
    let accepted = accepted_letters(SENDMAIL, &base, &[]);
    let documented = documented_flags(page);
    // -bX are modes, checked below; the other long forms are -X with a value.
    let (modes, others): (BTreeSet<String>, BTreeSet<String>) = documented
        .iter()
        .cloned()
        .partition(|f| f.len() == 2 && f.starts_with('b'));
    assert_flags_match(page, SENDMAIL, &base, &[], &accepted, &others);

    let mut taken = BTreeSet::new();
    for c in ('a'..='z').chain('A'..='Z') {
        let mode = format!("-b{c}");
        let (code, said) = run(SENDMAIL, &["-C", NO_CONFIG, &mode]);
        if !said.contains("unsupported mode") {
            assert_ne!(code, Some(64), "{mode}: {said}");
            taken.insert(format!("b{c}"));
        }
    }
    assert!(taken.len() >= 5 && taken.contains("bm"), "{taken:?}");
    assert_eq!(
        modes, taken,
        "the -b modes sendmail.8 documents (left) and those sendmail takes (right)"
    );
    // And the names it is called by.
    let text = read(page);
    for name in ["mailq", "newaliases"] {
        assert!(
            text.contains(&format!(".Nm {name}")),
            "sendmail.8 does not name {name}"
        );
    }
}

#[test]
fn ternctl_8_documents_exactly_the_options_and_commands_ternctl_takes() {
    let base = ["-f", NO_CONFIG];
    let page = "man/ternctl.8";
    let accepted = accepted_letters(TERNCTL, &base, &["queue"]);
    let documented = documented_flags(page);
    assert_flags_match(page, TERNCTL, &base, &["queue"], &accepted, &documented);

    // The commands ternctl names in its usage line: "usage: ternctl [-f file] a | b ID | ...".
    let (code, usage) = run(TERNCTL, &[]);
    assert_eq!(code, Some(64), "{usage}");
    let after = usage
        .split("usage: ternctl")
        .nth(1)
        .and_then(|u| u.split(']').nth(1))
        .unwrap_or_else(|| panic!("no usage line: {usage}"));
    let verbs: BTreeSet<String> = after
        .lines()
        .next()
        .unwrap_or_default()
        // Alternatives are set off by " | "; `ID|ALL` is one argument.
        .split(" | ")
        .filter_map(|v| v.split_whitespace().next().map(str::to_owned))
        .collect();
    assert!(verbs.len() >= 7, "{verbs:?}");
    // The commands the page documents: `.It Cm VERB [Ar id | Cm WORD]` in its
    // command list, each run as documented.
    let mut listed = BTreeSet::new();
    for line in read(page).lines() {
        let Some(rest) = line.strip_prefix(".It Cm ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let verb = words.next().unwrap_or_default().to_owned();
        let mut args = vec!["-f", NO_CONFIG, verb.as_str()];
        match (words.next(), words.next()) {
            (Some("Ar"), _) => args.push("0123456789ABCDEF"),
            (Some("Cm"), Some(w)) => args.push(w),
            _ => {}
        }
        let (code, said) = run(TERNCTL, &args);
        assert!(
            code != Some(64),
            "ternctl.8 documents `{}`, which ternctl refuses: {said}",
            args[2..].join(" ")
        );
        listed.insert(verb);
    }
    assert_eq!(
        listed, verbs,
        "the commands ternctl.8 documents (left) and those of ternctl's usage (right)"
    );
}

/// The man pages: man/*.[0-9].
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("man"))
        .expect("man/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.len() == 1 && x.to_string_lossy().as_bytes()[0].is_ascii_digit())
        })
        .collect();
    pages.sort();
    for page in ["sendmail.8", "ternctl.8", "ternd.8", "tern.conf.5", "aliases.5"] {
        assert!(pages.iter().any(|p| p.ends_with(page)), "man/{page} is missing");
    }
    pages
}

/// The section and subsection headings of a page, as they are rendered.
fn headings(page: &Path) -> Vec<String> {
    std::fs::read_to_string(page)
        .expect("page")
        .lines()
        .filter_map(|l| l.strip_prefix(".Sh ").or_else(|| l.strip_prefix(".Ss ")))
        .map(|h| h.trim_matches('"').to_owned())
        .collect()
}

/// Rendered text without overstrikes (`X\bX` bold, `_\bX` underline).
fn plain(text: &[u8]) -> String {
    let mut out: Vec<char> = Vec::new();
    for c in String::from_utf8_lossy(text).chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    let s: String = out.into_iter().collect();
    // groff may print a hyphen as U+2010; compare with ASCII.
    s.replace('\u{2010}', "-")
}

/// Run a formatter on `page`; None when it is not installed.
fn render(prog: &str, args: &[&str], page: &Path) -> Option<(String, String, bool)> {
    let out = Command::new(prog)
        .args(args)
        .arg(page)
        .env("GROFF_NO_SGR", "1")
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "")
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    Some((
        plain(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    ))
}

/// Lint with `lint` (no diagnostics allowed) and render with `fmt`: every
/// heading of every page must be in the output. False when `prog` is missing
/// (a recorded skip; a failure under CI=true).
fn check_renderer(prog: &str, lint: Option<&[&str]>, fmt: &[&str]) -> bool {
    if Command::new(prog).arg("--version").output().is_err() {
        crate::common::skip::skip(&crate::common::skip::missing(prog));
        return false;
    }
    for page in pages() {
        if let Some(lint) = lint {
            let (out, err, ok) = render(prog, lint, &page).expect(prog);
            assert!(
                ok && out.trim().is_empty() && err.trim().is_empty(),
                "{prog} {} {}:\n{out}{err}",
                lint.join(" "),
                page.display()
            );
        }
        let (out, err, ok) = render(prog, fmt, &page).expect(prog);
        assert!(ok, "{prog} {}: {err}", page.display());
        assert!(
            err.trim().is_empty(),
            "{prog} {} {}: {err}",
            fmt.join(" "),
            page.display()
        );
        for h in headings(&page) {
            assert!(
                out.contains(&h),
                "{prog} {}: {h:?} is not in the output: the page stops early\n{out}",
                page.display()
            );
        }
    }
    true
}

#[test]
fn man_pages_render_whole_and_without_warnings_under_mandoc() {
    check_renderer("mandoc", Some(&["-T", "lint", "-W", "warning"]), &["-T", "ascii"]);
}

#[test]
fn man_pages_render_whole_and_without_warnings_under_groff() {
    check_renderer(
        "groff",
        Some(&["-mandoc", "-ww", "-z"]),
        &["-mandoc", "-T", "ascii", "-ww"],
    );
}

/// `man -l`, as an administrator reads a page on Debian (man-db runs groff).
#[test]
fn man_pages_render_whole_with_man_l() {
    check_renderer("man", None, &["-l"]);
}
