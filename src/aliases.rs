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
mod tests;
