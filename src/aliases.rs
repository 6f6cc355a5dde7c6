//! aliases(5): `name: target, target` lines, continuation lines starting with
//! white space, `#` comments. This module only parses; expansion (recursion,
//! `:include:`, pipes and files) belongs to local delivery.

use std::collections::HashMap;

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
}
