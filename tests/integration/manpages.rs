//! The manual and the example configuration keep up with the code: every
//! configuration key of src/config/keys.rs is in tern.conf(5) and etc/tern.conf,
//! every option of sendmail, ternctl and ternd in its page, and the pages
//! lint clean under mandoc.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every key tern.conf knows: the key table of src/config/keys.rs.
fn config_keys() -> Vec<String> {
    let keys: Vec<String> = tern::config::keys::all().map(|(k, _)| k.to_owned()).collect();
    assert!(keys.len() > 40, "only {} keys in the table: {keys:?}", keys.len());
    keys
}

/// The words of every `.It Cm`, `.It Fl` (...) line of a page: what it documents.
fn items(page: &str, macro_: &str) -> BTreeSet<String> {
    let prefix = format!(".It {macro_} ");
    read(page)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .flat_map(|rest| {
            rest.split_whitespace()
                .map(|w| w.trim_end_matches(',').to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_config_key_is_in_tern_conf_5() {
    let documented = items("man/tern.conf.5", "Cm");
    let missing: Vec<String> = config_keys()
        .into_iter()
        .filter(|k| !documented.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys of src/config/keys.rs without an `.It Cm KEY` entry in man/tern.conf.5: {missing:?}"
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
            (!k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')).then(|| k.to_owned())
        })
        .collect();
    let missing: Vec<String> = config_keys().into_iter().filter(|k| !shown.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "keys of src/config/keys.rs without a `#key = default` line in etc/tern.conf: {missing:?}"
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

/// The short option names a getopts set-up declares: the first string literal of
/// each `.opt...(` call between `start` and `end`.
fn getopts_flags(src: &str, start: &str, end: &str) -> Vec<String> {
    let from = src.find(start).unwrap_or_else(|| panic!("{start:?} not found"));
    let body = &src[from..];
    let body = &body[..body.find(end).unwrap_or(body.len())];
    let mut flags = Vec::new();
    for (i, _) in body.match_indices(".opt") {
        let call = &body[i..];
        let Some(q) = call.find('"') else { continue };
        let Some(len) = call[q + 1..].find('"') else {
            continue;
        };
        flags.push(call[q + 1..q + 1 + len].to_owned());
    }
    assert!(!flags.is_empty(), "no options found after {start:?}");
    flags
}

/// Every flag has an `.It Fl X` entry (also `.It Fl X Ns Ar ...`).
fn assert_flags_documented(page: &str, flags: &[String]) {
    let documented = items(page, "Fl");
    let missing: Vec<&String> = flags.iter().filter(|f| !documented.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "options without an `.It Fl` entry in {page}: {missing:?}"
    );
}

#[test]
fn every_sendmail_option_and_mode_is_in_sendmail_8() {
    let src = read("src/sendmail.rs");
    let flags = getopts_flags(&src, "fn options()", "\n}\n");
    assert!(flags.len() > 20, "{flags:?}");
    assert_flags_documented("man/sendmail.8", &flags);
    // The -b modes: the letters of the match arm that accepts them.
    let arm = src
        .lines()
        .find(|l| l.contains("=> b.chars()"))
        .expect("the -b mode match arm");
    let modes: Vec<String> = arm
        .split("=>")
        .next()
        .unwrap_or_default()
        .split('|')
        .map(|m| format!("b{}", m.trim().trim_matches('"')))
        .collect();
    assert!(modes.len() >= 5, "{modes:?}");
    assert_flags_documented("man/sendmail.8", &modes);
    // And the pages it is called as.
    let page = read("man/sendmail.8");
    for name in ["mailq", "newaliases"] {
        assert!(
            page.contains(&format!(".Nm {name}")),
            "sendmail.8 does not name {name}"
        );
    }
}

#[test]
fn every_ternctl_option_and_command_is_in_ternctl_8() {
    let src = read("src/ctl.rs");
    let flags = getopts_flags(&src, "pub fn main(", "opts.parse");
    assert_flags_documented("man/ternctl.8", &flags);
    // The commands, from the usage line: "usage: ternctl [-f file] a | b ID | ...".
    let usage = src
        .lines()
        .find(|l| l.contains("\"usage: ternctl"))
        .expect("the USAGE line of src/ctl.rs");
    let verbs_part = usage.split(']').nth(1).expect("commands after [-f file]");
    let verbs: Vec<String> = verbs_part
        .trim_matches(|c: char| c == '"' || c == ';' || c.is_whitespace())
        .split('|')
        .filter_map(|v| v.split_whitespace().next().map(str::to_owned))
        .collect();
    assert!(verbs.len() >= 7, "{verbs:?}");
    let documented = items("man/ternctl.8", "Cm");
    let missing: Vec<&String> = verbs.iter().filter(|v| !documented.contains(*v)).collect();
    assert!(
        missing.is_empty(),
        "ternctl commands without an `.It Cm` entry in ternctl.8: {missing:?}"
    );
}

#[test]
fn every_ternd_option_is_in_ternd_8() {
    let src = read("src/bin/ternd.rs");
    let flags = getopts_flags(&src, "let mut opts = getopts::Options::new()", "opts.parse");
    assert_flags_documented("man/ternd.8", &flags);
}

/// `mandoc -T lint -W warning` on every page: any warning fails. Without mandoc
/// (CI installs it, see .ci/run) the test says so and passes.
#[test]
fn man_pages_lint_clean() {
    let pages: Vec<PathBuf> = std::fs::read_dir(root().join("man"))
        .expect("man/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.len() == 1 && x.to_string_lossy().as_bytes()[0].is_ascii_digit())
        })
        .collect();
    for page in ["sendmail.8", "ternctl.8", "ternd.8", "tern.conf.5", "aliases.5"] {
        assert!(pages.iter().any(|p| p.ends_with(page)), "man/{page} is missing");
    }
    let out = match Command::new("mandoc")
        .args(["-T", "lint", "-W", "warning"])
        .args(&pages)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("man_pages_lint_clean: mandoc not run ({e}); install mandoc to lint the pages");
            return;
        }
    };
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "mandoc lint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
