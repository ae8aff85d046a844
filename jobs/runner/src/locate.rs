//! Finding the line of a key in a DAG file's text, for validation messages that name
//! `file:line`. The YAML parser reports positions for syntax and shape errors only; semantic
//! errors (an unknown job, a cycle) are found after deserializing, so this module maps a path
//! such as `steps[2].args.source` back to the line that spells it. It reads block-style YAML
//! (what DAG files are) by indentation; anything inside a flow collection (`[a, b]`) is reported
//! at the line of its key.

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

#[derive(Debug, Clone)]
enum Kind {
    Key(String),
    Item,
}

#[derive(Debug, Clone)]
struct Event {
    /// 1-based line.
    line: usize,
    /// 0-based column of the key or of the `-`.
    col: usize,
    kind: Kind,
}

/// The keys and sequence items of a YAML text, by position.
#[derive(Debug, Clone)]
pub struct Locator {
    events: Vec<Event>,
}

impl Locator {
    pub fn new(text: &str) -> Locator {
        let mut events = Vec::new();
        let mut in_block_scalar: Option<usize> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim_start_matches(' ');
            let mut col = raw.len() - trimmed.len();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            // Lines of a `|` or `>` block scalar are text, not keys.
            if let Some(parent) = in_block_scalar {
                if col > parent {
                    continue;
                }
                in_block_scalar = None;
            }
            let mut rest = trimmed;
            while let Some(r) = rest
                .strip_prefix("- ")
                .or_else(|| (rest == "-").then_some(""))
            {
                events.push(Event {
                    line,
                    col,
                    kind: Kind::Item,
                });
                let r2 = r.trim_start_matches(' ');
                col += 2 + (r.len() - r2.len());
                rest = r2;
            }
            if let Some((key, after)) = split_key(rest) {
                let after = after.trim();
                if after.starts_with('|') || after.starts_with('>') {
                    in_block_scalar = Some(col);
                }
                events.push(Event {
                    line,
                    col,
                    kind: Kind::Key(key),
                });
            }
        }
        Locator { events }
    }

    /// The line of the deepest part of `path` that exists (1 if none does).
    pub fn line(&self, path: &[Seg<'_>]) -> usize {
        self.scope(path).1
    }

    /// The line of the second `key` directly under `path` (serde reports a duplicated field
    /// without a position).
    pub fn duplicate(&self, path: &[Seg<'_>], key: &str) -> Option<usize> {
        let (scope, _) = self.scope(path);
        let level = scope.iter().map(|e| e.col).min()?;
        scope
            .iter()
            .filter(|e| e.col == level && matches!(&e.kind, Kind::Key(x) if x == key))
            .nth(1)
            .map(|e| e.line)
    }

    /// The events inside the deepest part of `path` that exists, and that part's line.
    fn scope(&self, path: &[Seg<'_>]) -> (&[Event], usize) {
        let mut scope: &[Event] = &self.events;
        let mut found = 1;
        for seg in path {
            let Some(level) = scope.iter().map(|e| e.col).min() else {
                break;
            };
            let hit = match seg {
                Seg::Key(k) => scope
                    .iter()
                    .position(|e| e.col == level && matches!(&e.kind, Kind::Key(x) if x == k)),
                // A compact sequence sits at its key's own column: still the scope's lowest.
                Seg::Index(n) => scope
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.col == level && matches!(e.kind, Kind::Item))
                    .nth(*n)
                    .map(|(i, _)| i),
            };
            let Some(i) = hit else { break };
            let e = &scope[i];
            found = e.line;
            let is_key = matches!(e.kind, Kind::Key(_));
            let end = scope[i + 1..]
                .iter()
                .position(|x| {
                    x.col < e.col || (x.col == e.col && (is_key || matches!(x.kind, Kind::Item)))
                })
                .map_or(scope.len(), |p| i + 1 + p);
            // Sequence items at the key's own column belong to the key.
            let end = if is_key {
                let mut end = end;
                while end < scope.len()
                    && scope[end].col == e.col
                    && matches!(scope[end].kind, Kind::Item)
                {
                    end = scope[end + 1..]
                        .iter()
                        .position(|x| x.col <= e.col)
                        .map_or(scope.len(), |p| end + 1 + p);
                }
                end
            } else {
                end
            };
            scope = &scope[i + 1..end];
        }
        (scope, found)
    }
}

/// `key: rest` → (key, rest), for plain and quoted keys.
fn split_key(s: &str) -> Option<(String, &str)> {
    if let Some(q) = s.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let close = s[1..].find(q)? + 1;
        let after = s[close + 1..].trim_start_matches(' ');
        let rest = after.strip_prefix(':')?;
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return None;
        }
        return Some((s[1..close].to_string(), rest));
    }
    if s.starts_with(['[', '{', '#', '&', '*', '!', '|', '>']) {
        return None;
    }
    let mut idx = 0;
    for (i, c) in s.char_indices() {
        if c == ':' {
            let next = s[i + 1..].chars().next();
            if next.is_none() || next == Some(' ') {
                idx = i;
                break;
            }
        }
        if c == '#' && i > 0 && s.as_bytes()[i - 1] == b' ' {
            return None;
        }
    }
    if idx == 0 {
        return None;
    }
    Some((s[..idx].trim_end().to_string(), &s[idx + 1..]))
}

/// Parse a path as the YAML deserializer prints it (`steps[2].args.source`).
pub fn parse_path(p: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in p.split('.') {
        let (key, mut idx) = match part.find('[') {
            Some(b) => (&part[..b], &part[b..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        while let Some(r) = idx.strip_prefix('[') {
            let Some(close) = r.find(']') else { break };
            if let Ok(n) = r[..close].parse() {
                out.push(Seg::Index(n));
            }
            idx = &r[close + 1..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Seg::{Index as I, Key as K};
    use super::*;

    const DOC: &str = "\
name: demo            # line 1
defaults:
  start: 2024-12-01
  symbols: [A, B]
description: |
  steps:
    job: not a key
steps:
  - name: download
    job: download
    args:
      source: x
  - name: extract
    needs: [download]
    args:
      force: true
services:
  archive:
    command: [archive-sim]
";

    #[test]
    fn finds_keys_items_and_nested_keys() {
        let l = Locator::new(DOC);
        assert_eq!(l.line(&[K("name")]), 1);
        assert_eq!(l.line(&[K("defaults"), K("symbols")]), 4);
        assert_eq!(l.line(&[K("steps")]), 8);
        assert_eq!(l.line(&[K("steps"), I(0)]), 9);
        assert_eq!(l.line(&[K("steps"), I(0), K("job")]), 10);
        assert_eq!(l.line(&[K("steps"), I(0), K("args"), K("source")]), 12);
        assert_eq!(l.line(&[K("steps"), I(1), K("name")]), 13);
        assert_eq!(l.line(&[K("steps"), I(1), K("needs")]), 14);
        assert_eq!(l.line(&[K("steps"), I(1), K("args"), K("force")]), 16);
        assert_eq!(l.line(&[K("services"), K("archive"), K("command")]), 19);
        // Missing parts: the deepest that exists.
        assert_eq!(l.line(&[K("steps"), I(1), K("retries")]), 13);
        assert_eq!(l.line(&[K("nothing")]), 1);
    }

    #[test]
    fn compact_sequences_at_the_keys_column() {
        let doc = "steps:\n- name: a\n  job: x\n- name: b\n  job: y\nafter: 1\n";
        let l = Locator::new(doc);
        assert_eq!(l.line(&[K("steps"), I(1), K("job")]), 5);
        assert_eq!(l.line(&[K("after")]), 6);
    }

    #[test]
    fn paths_as_the_deserializer_prints_them() {
        assert_eq!(
            parse_path("steps[2].args.source"),
            vec![K("steps"), I(2), K("args"), K("source")]
        );
        assert_eq!(parse_path("a[1][0]"), vec![K("a"), I(1), I(0)]);
    }
}
