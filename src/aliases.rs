//! aliases(5): `name: target, target` lines, continuation lines starting with
//! white space, `#` comments; and expansion of a local name into its final
//! delivery targets (users, remote addresses, files, pipes), following
//! `:include:` files, as sendmail and Postfix's local(8) do. Reading include
//! files is left to the caller, which applies its own permission rules.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::smtp::address::{Domain, Mailbox};

/// How many aliases and `:include:` files may be nested in one expansion.
const MAX_DEPTH: usize = 20;

/// A final destination produced by expansion.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A local user name (to be looked up in local_users / the system accounts
    /// and delivered to their mailbox). Lowercased as the alias table is. It is
    /// not checked here: it may name no account, or hold any character a local
    /// part may (even `/`), so the caller must look it up before using it.
    User(String),
    /// An address in a domain that is not local (to be queued for remote
    /// delivery), as written in the alias or include file.
    Remote(String),
    /// Append to this file in mbox format (an absolute path).
    File(PathBuf),
    /// Pipe to this command (without the leading '|').
    Pipe(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// An alias refers back to itself through others: a → b → a (names the chain,
    /// `"a -> b -> a"`).
    Loop(String),
    /// Expansion went deeper than 20 levels (names the chain).
    TooDeep(String),
    /// An :include: file could not be read (temporary: the admin may fix it);
    /// holds `"path: error"`.
    Include(String),
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::Loop(chain) => write!(f, "alias loop: {chain}"),
            ExpandError::TooDeep(chain) => {
                write!(f, "aliases nested deeper than {MAX_DEPTH} levels: {chain}")
            }
            ExpandError::Include(what) => write!(f, "cannot read :include: file {what}"),
        }
    }
}

impl std::error::Error for ExpandError {}

/// One parse problem, with its line number; the rest of the file still loads,
/// as sendmail and Postfix do with a bad line in /etc/aliases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasError {
    pub line: usize,
    pub what: String,
}

/// The parsed file: lowercased name → targets as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aliases {
    map: HashMap<String, Vec<String>>,
}

impl Aliases {
    pub fn parse(text: &str) -> (Aliases, Vec<AliasError>) {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        let mut errors = Vec::new();
        // Join continuation lines first, remembering where each entry began.
        let mut entries: Vec<(usize, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim_start().starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                match entries.last_mut() {
                    Some((_, e)) => {
                        e.push(' ');
                        e.push_str(line.trim());
                    }
                    None => errors.push(AliasError {
                        line: i + 1,
                        what: "continuation line with no entry before it".to_owned(),
                    }),
                }
                continue;
            }
            entries.push((i + 1, line.trim().to_owned()));
        }
        for (line, entry) in entries {
            let Some((name, targets)) = entry.split_once(':') else {
                errors.push(AliasError {
                    line,
                    what: "missing ':' after the alias name".to_owned(),
                });
                continue;
            };
            let name = name.trim().trim_matches('"').to_lowercase();
            if name.is_empty() || name.contains(char::is_whitespace) {
                errors.push(AliasError {
                    line,
                    what: format!("bad alias name {name:?}"),
                });
                continue;
            }
            let targets: Vec<String> = split_targets(targets);
            if targets.is_empty() {
                errors.push(AliasError {
                    line,
                    what: format!("alias {name:?} has no targets"),
                });
                continue;
            }
            if map.insert(name.clone(), targets).is_some() {
                errors.push(AliasError {
                    line,
                    what: format!("duplicate alias {name:?}; the last one wins"),
                });
            }
        }
        (Aliases { map }, errors)
    }

    /// Targets of `name` (case-insensitive), as written in the file.
    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.map.get(&name.to_lowercase()).map(Vec::as_slice)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(&name.to_lowercase())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every `:include:` file the aliases name, and those the included files
    /// name in turn (read with `read`; one that cannot be read is listed but
    /// not looked into), each once, in the order met, at most MAX_DEPTH deep:
    /// the files delivery will read (issue 17: checked before they are needed).
    pub fn include_files(&self, read: &dyn Fn(&Path) -> io::Result<String>) -> Vec<PathBuf> {
        let mut names: Vec<&String> = self.map.keys().collect();
        names.sort();
        let mut found: Vec<PathBuf> = Vec::new();
        let mut level: Vec<PathBuf> = names
            .into_iter()
            .filter_map(|n| self.map.get(n))
            .flatten()
            .filter_map(|t| include_path(t))
            .collect();
        for _ in 0..MAX_DEPTH {
            let mut next = Vec::new();
            for p in level {
                if found.contains(&p) {
                    continue;
                }
                if let Ok(text) = read(&p) {
                    next.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.starts_with('#'))
                            .flat_map(split_targets)
                            .filter_map(|t| include_path(&t)),
                    );
                }
                found.push(p);
            }
            if next.is_empty() {
                break;
            }
            level = next;
        }
        found
    }

    /// Read and parse an aliases file.
    pub fn load(path: &Path) -> io::Result<(Aliases, Vec<AliasError>)> {
        std::fs::read_to_string(path).map(|text| Aliases::parse(&text))
    }

    /// Expand local name `name` (case-insensitive). `is_local(domain)` says
    /// whether an address's domain is one of ours (then its local part is
    /// expanded again); `read_include(path)` returns the text of an :include:
    /// file (injected so tests need no files and the caller can apply
    /// permission rules). The result is deduplicated, in first-seen order.
    ///
    /// `name` itself is only ever looked up as an alias or returned as a user:
    /// a recipient `|cmd` or `/file` never becomes a pipe or a file. Only the
    /// alias table and include files can name those.
    pub fn expand(
        &self,
        name: &str,
        is_local: &dyn Fn(&str) -> bool,
        read_include: &dyn Fn(&Path) -> io::Result<String>,
    ) -> Result<Vec<Target>, ExpandError> {
        let mut x = Expander {
            aliases: self,
            is_local,
            read_include,
            chain: Vec::new(),
            done: HashMap::new(),
            out: Vec::new(),
            seen: HashSet::new(),
        };
        x.alias(name)?;
        Ok(x.out)
    }
}

/// A step of expansion that can nest: an alias, or an include file read on
/// behalf of an alias (`owner`, whose name in the file means the user itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    Alias(String),
    Include { owner: String, path: PathBuf },
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Alias(name) => f.write_str(name),
            Node::Include { path, .. } => write!(f, ":include:{}", path.display()),
        }
    }
}

/// One expansion: a depth-first walk over aliases and include files.
struct Expander<'a> {
    aliases: &'a Aliases,
    is_local: &'a dyn Fn(&str) -> bool,
    read_include: &'a dyn Fn(&Path) -> io::Result<String>,
    /// The nodes being expanded, outermost first (loop detection, depth).
    chain: Vec<Node>,
    /// Nodes fully expanded, with the depth of their subtree. Their targets are
    /// already in `out`, so meeting one again only needs the depth check; this
    /// keeps shared sub-lists (a: b, c; b: d; c: d) from costing exponential time.
    done: HashMap<Node, usize>,
    out: Vec<Target>,
    seen: HashSet<Target>,
}

impl Expander<'_> {
    fn push(&mut self, t: Target) {
        if self.seen.insert(t.clone()) {
            self.out.push(t);
        }
    }

    /// The chain so far followed by `node`, for error messages.
    fn describe(&self, node: &Node) -> String {
        let mut s = String::new();
        for n in &self.chain {
            s.push_str(&n.to_string());
            s.push_str(" -> ");
        }
        s.push_str(&node.to_string());
        s
    }

    /// Before descending into `node`: Err on a loop or too deep, Ok(Some(depth))
    /// if it was already expanded (nothing more to do), Ok(None) to go ahead.
    fn begin(&self, node: &Node) -> Result<Option<usize>, ExpandError> {
        if self.chain.contains(node) {
            return Err(ExpandError::Loop(self.describe(node)));
        }
        let depth = self.done.get(node).copied();
        if self.chain.len() + depth.unwrap_or(1) > MAX_DEPTH {
            return Err(ExpandError::TooDeep(self.describe(node)));
        }
        Ok(depth)
    }

    /// Expand a name as an alias; a name that is not an alias is a user.
    /// Returns the depth of nodes below and including this one.
    fn alias(&mut self, name: &str) -> Result<usize, ExpandError> {
        let name = name.to_lowercase();
        let aliases = self.aliases;
        let Some(targets) = aliases.map.get(&name) else {
            self.push(Target::User(name));
            return Ok(0);
        };
        let node = Node::Alias(name.clone());
        if let Some(depth) = self.begin(&node)? {
            return Ok(depth);
        }
        self.chain.push(node.clone());
        let mut below = 0;
        for t in targets {
            below = below.max(self.element(&name, t)?);
        }
        self.chain.pop();
        self.done.insert(node, below + 1);
        Ok(below + 1)
    }

    /// Expand the include file `path`, named in the list of alias `owner`.
    fn include(&mut self, owner: &str, path: PathBuf) -> Result<usize, ExpandError> {
        let node = Node::Include {
            owner: owner.to_owned(),
            path: path.clone(),
        };
        if let Some(depth) = self.begin(&node)? {
            return Ok(depth);
        }
        let text = (self.read_include)(&path)
            .map_err(|e| ExpandError::Include(format!("{}: {e}", path.display())))?;
        self.chain.push(node.clone());
        let mut below = 0;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            for t in split_targets(line) {
                below = below.max(self.element(owner, &t)?);
            }
        }
        self.chain.pop();
        self.done.insert(node, below + 1);
        Ok(below + 1)
    }

    /// A name in the list of alias `owner`: the owner itself is the user (the
    /// classic `alice: alice, bob`), anything else is expanded again.
    fn member(&mut self, owner: &str, name: &str) -> Result<usize, ExpandError> {
        if name.is_empty() {
            log::warn!("alias {owner}: empty name ignored");
            return Ok(0);
        }
        let name = name.to_lowercase();
        if name == owner {
            self.push(Target::User(name));
            return Ok(0);
        }
        self.alias(&name)
    }

    /// Whether the domain of `m` is one of ours.
    fn is_local(&self, m: &Mailbox) -> bool {
        match m.domain() {
            Domain::Name(_) => m.domain().lower().is_some_and(|d| (self.is_local)(&d)),
            Domain::Literal(_) => (self.is_local)(&m.domain().to_string()),
            Domain::General(_) => false,
        }
    }

    /// One target as written in the list of alias `owner` (or an include file
    /// it names).
    fn element(&mut self, owner: &str, raw: &str) -> Result<usize, ExpandError> {
        let t = unquote(raw.trim());
        if let Some(cmd) = t.strip_prefix('|') {
            let cmd = cmd.trim();
            if cmd.is_empty() {
                log::warn!("alias {owner}: empty pipe command ignored");
            } else {
                self.push(Target::Pipe(cmd.to_owned()));
            }
            return Ok(0);
        }
        if let Some(rest) = strip_prefix_ignore_case(t, ":include:") {
            let path = Path::new(unquote(rest.trim()));
            if !path.is_absolute() {
                log::warn!("alias {owner}: :include: path {path:?} is not absolute; ignored");
                return Ok(0);
            }
            return self.include(owner, path.to_path_buf());
        }
        if let Some(rest) = t.strip_prefix('\\') {
            // `\name`: this user, with no further alias expansion.
            if rest.contains('@') {
                match Mailbox::parse(rest) {
                    Ok(m) if self.is_local(&m) => self.push(Target::User(m.local().to_lowercase())),
                    Ok(_) => self.push(Target::Remote(rest.to_owned())),
                    Err(_) => log::warn!("alias {owner}: bad address {rest:?} ignored"),
                }
            } else if rest.is_empty() {
                log::warn!("alias {owner}: empty name after '\\' ignored");
            } else {
                self.push(Target::User(rest.to_lowercase()));
            }
            return Ok(0);
        }
        if t.starts_with('/') {
            let path = Path::new(t);
            if path.is_absolute() {
                self.push(Target::File(path.to_path_buf()));
            } else {
                log::warn!("alias {owner}: file {t:?} is not an absolute path; ignored");
            }
            return Ok(0);
        }
        if t.contains('@') {
            return match Mailbox::parse(t) {
                Ok(m) if self.is_local(&m) => self.member(owner, m.local()),
                Ok(_) => {
                    self.push(Target::Remote(t.to_owned()));
                    Ok(0)
                }
                Err(_) => {
                    log::warn!("alias {owner}: bad address {t:?} ignored");
                    Ok(0)
                }
            };
        }
        if t.contains('/') || t.starts_with('~') {
            log::warn!("alias {owner}: file {t:?} is not an absolute path; ignored");
            return Ok(0);
        }
        if t.starts_with('"') {
            log::warn!("alias {owner}: unbalanced quote in {t:?}; ignored");
            return Ok(0);
        }
        self.member(owner, t)
    }
}

/// The file of an `:include:` target (absolute paths only, as expansion takes).
fn include_path(raw: &str) -> Option<PathBuf> {
    let rest = strip_prefix_ignore_case(unquote(raw.trim()), ":include:")?;
    let path = Path::new(unquote(rest.trim()));
    path.is_absolute().then(|| path.to_path_buf())
}

/// `"x"` → `x`; anything else unchanged (`"a b"@host` keeps its quotes).
fn unquote(s: &str) -> &str {
    s.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(s)
}

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Split on commas outside double quotes (`"|/usr/bin/prog a, b"` is one target).
fn split_targets(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                push_target(&mut out, &cur);
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    push_target(&mut out, &cur);
    out
}

fn push_target(out: &mut Vec<String>, t: &str) {
    let t = t.trim();
    if !t.is_empty() {
        out.push(t.to_owned());
    }
}

#[cfg(test)]
mod tests {
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
}
