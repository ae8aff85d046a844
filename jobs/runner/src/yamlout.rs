//! A small block-style YAML writer for the rendered manifests. It quotes every string a YAML 1.1
//! reader (Kubernetes' own, PyYAML) could take for something else — dates, numbers, `on`/`yes`,
//! anything with `{{`, `*`, `:` or `#` — so a value like `2024-01-01` stays a string, and its
//! output is stable byte for byte, which the "k8s/ is up to date" test relies on.

/// A YAML value. Mappings keep their order.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Str(String),
    Int(i64),
    Bool(bool),
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
}

impl From<&str> for Node {
    fn from(s: &str) -> Node {
        Node::Str(s.to_string())
    }
}

impl From<String> for Node {
    fn from(s: String) -> Node {
        Node::Str(s)
    }
}

impl From<&String> for Node {
    fn from(s: &String) -> Node {
        Node::Str(s.clone())
    }
}

impl From<i64> for Node {
    fn from(i: i64) -> Node {
        Node::Int(i)
    }
}

impl From<bool> for Node {
    fn from(b: bool) -> Node {
        Node::Bool(b)
    }
}

impl From<Vec<Node>> for Node {
    fn from(v: Vec<Node>) -> Node {
        Node::List(v)
    }
}

/// A mapping from `(key, value)` pairs.
pub fn map<const N: usize>(pairs: [(&str, Node); N]) -> Node {
    Node::Map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A list of strings.
pub fn strs<S: AsRef<str>>(v: &[S]) -> Node {
    Node::List(
        v.iter()
            .map(|s| Node::Str(s.as_ref().to_string()))
            .collect(),
    )
}

impl Node {
    /// Add a key to a mapping (no-op on other nodes).
    pub fn push(&mut self, k: &str, v: impl Into<Node>) {
        if let Node::Map(m) = self {
            m.push((k.to_string(), v.into()));
        }
    }

    /// Serialize as a YAML document (no leading `---`).
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        match self {
            Node::Map(_) | Node::List(_) => emit(self, 0, &mut out),
            scalar => {
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
        out
    }
}

fn is_scalar(n: &Node) -> bool {
    match n {
        Node::Map(m) => m.is_empty(),
        Node::List(l) => l.is_empty(),
        _ => true,
    }
}

fn scalar_text(n: &Node) -> String {
    match n {
        Node::Str(s) => quote(s),
        Node::Int(i) => i.to_string(),
        Node::Bool(b) => b.to_string(),
        Node::Map(_) => "{}".into(),
        Node::List(_) => "[]".into(),
    }
}

fn emit(n: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match n {
        Node::Map(m) => {
            for (k, v) in m {
                out.push_str(&pad);
                out.push_str(&quote(k));
                out.push(':');
                if is_scalar(v) {
                    out.push(' ');
                    out.push_str(&scalar_text(v));
                    out.push('\n');
                } else {
                    out.push('\n');
                    emit(v, indent + 2, out);
                }
            }
        }
        Node::List(l) => {
            for item in l {
                out.push_str(&pad);
                out.push('-');
                match item {
                    Node::Map(m) if !m.is_empty() => {
                        // The first key shares the dash's line.
                        let mut first = String::new();
                        emit(item, indent + 2, &mut first);
                        out.push(' ');
                        out.push_str(&first[indent + 2..]);
                    }
                    Node::List(v) if !v.is_empty() => {
                        out.push('\n');
                        emit(item, indent + 2, out);
                    }
                    scalar => {
                        out.push(' ');
                        out.push_str(&scalar_text(scalar));
                        out.push('\n');
                    }
                }
            }
        }
        scalar => {
            out.push_str(&pad);
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

/// The string as a plain scalar when no YAML 1.1 or 1.2 reader can misread it, else
/// double-quoted (JSON escaping is valid YAML).
pub fn quote(s: &str) -> String {
    const WORDS: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
    ];
    let plain = !s.is_empty()
        && (s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '_')
            || s.strip_prefix('-')
                .is_some_and(|r| r.starts_with(|c: char| c == '-' || c.is_ascii_alphabetic())))
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !WORDS.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_style_with_safe_quoting() {
        let mut doc = map([
            ("apiVersion", "argoproj.io/v1alpha1".into()),
            (
                "list",
                Node::List(vec![
                    map([("name", "a".into()), ("value", "2024-01-01".into())]),
                    "on".into(),
                    Node::Int(3),
                ]),
            ),
            ("empty", Node::List(vec![])),
        ]);
        doc.push("expr", "{{tasks.x.ip}}");
        doc.push("nested", map([("k", map([("deep", true.into())]))]));
        let y = doc.to_yaml();
        assert_eq!(
            y,
            "apiVersion: argoproj.io/v1alpha1\n\
             list:\n  - name: a\n    value: \"2024-01-01\"\n  - \"on\"\n  - 3\n\
             empty: []\n\
             expr: \"{{tasks.x.ip}}\"\n\
             nested:\n  k:\n    deep: true\n"
        );
        // What we write reads back as the same strings.
        let back: yaml_serde::Value = yaml_serde::from_str(&y).unwrap();
        assert_eq!(back["list"][0]["value"].as_str(), Some("2024-01-01"));
        assert_eq!(back["list"][1].as_str(), Some("on"));
        assert_eq!(back["expr"].as_str(), Some("{{tasks.x.ip}}"));
        assert_eq!(quote("0 6 * * *"), "\"0 6 * * *\"");
        assert_eq!(quote("--store"), "--store");
        assert_eq!(quote("-7d"), "\"-7d\"");
        assert_eq!(quote("-"), "\"-\"");
        assert_eq!(quote("s3://b/p"), "\"s3://b/p\"");
    }
}
