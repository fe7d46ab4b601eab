//! One tree for both input formats: `#cloud-config` YAML and TOML are loaded
//! into [`Node`]s that keep the line of every key and value, so the schema in
//! `schema.rs` is written once and every message it gives has a line.
//!
//! YAML scalars are resolved here by the YAML 1.1 rules that cloud-init's
//! PyYAML uses (`yes`/`on` are booleans, `0644` is octal), not by YAML 1.2's:
//! a document must mean on Ballast what it means under cloud-init.

use saphyr::{LoadableYamlNode, MarkedYaml, ScalarStyle, YamlData, YamlLoader};

/// Deeper nesting than any real config needs; refused before it can hurt.
pub(crate) const MAX_DEPTH: usize = 64;
/// Leading indentation/indicator characters allowed on a YAML line: bounds the
/// block nesting the YAML loader builds (and drops recursively).
const MAX_LINE_PREFIX: usize = 400;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub line: Option<usize>,
    pub v: V,
}

#[derive(Debug, Clone)]
pub(crate) enum V {
    Null,
    Bool(bool),
    /// The value and the radix it was written in (8 for YAML `0644`).
    Int(i64, u32),
    Float(f64),
    Str(String),
    /// A YAML `!!binary` scalar, already decoded.
    Bin(Vec<u8>),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub key_line: Option<usize>,
    pub value: Node,
}

impl V {
    /// What a user calls this kind of value, for "expected X, found Y".
    pub fn kind(&self) -> &'static str {
        match self {
            V::Null => "null",
            V::Bool(_) => "a boolean",
            V::Int(..) => "an integer",
            V::Float(_) => "a number",
            V::Str(_) => "a string",
            V::Bin(_) => "binary data",
            V::Seq(_) => "a list",
            V::Map(_) => "a mapping",
        }
    }
}

/// A load failure: line (if known) and message.
pub(crate) type LoadErr = (Option<usize>, String);

// ---------------------------------------------------------------- YAML

/// The message of saphyr's loader for a key given twice in one mapping.
const DUPLICATE: &str = "duplicated key in mapping";

/// YAML as cloud-init's PyYAML reads it: a key given twice in one mapping
/// is not an error, the last value counts. The first such key is returned
/// beside the tree (its line), for a warning.
pub(crate) fn load_yaml_lenient(text: &str) -> Result<(Option<Node>, Option<usize>), LoadErr> {
    match load_yaml_with(text, false) {
        Err((line, m)) if m == DUPLICATE => load_yaml_with(text, true).map(|n| (n, line)),
        other => other.map(|n| (n, None)),
    }
}

pub(crate) fn load_yaml(text: &str) -> Result<Option<Node>, LoadErr> {
    load_yaml_with(text, false)
}

fn load_yaml_with(text: &str, allow_duplicates: bool) -> Result<Option<Node>, LoadErr> {
    for (i, l) in text.lines().enumerate() {
        let prefix = l
            .chars()
            .take_while(|c| matches!(c, ' ' | '-' | '?' | ':' | '\t'))
            .count();
        if prefix > MAX_LINE_PREFIX {
            return Err((
                Some(i + 1),
                format!("nesting too deep (more than {MAX_LINE_PREFIX} columns of indentation)"),
            ));
        }
    }
    let mut parser = saphyr_parser::Parser::new_from_str(text);
    let mut loader: YamlLoader<MarkedYaml> = YamlLoader::default();
    loader.early_parse(false);
    loader.alias_limit(10_000);
    loader.allow_duplicate_keys(allow_duplicates);
    let scan = |e: &saphyr::ScanError| (Some(e.marker().line()), e.info().to_string());
    parser.load(&mut loader, true).map_err(|e| scan(&e))?;
    if let Some(e) = loader.error() {
        return Err(scan(e));
    }
    let mut docs = loader.into_documents();
    if docs.len() > 1 {
        let line = docs.get(1).map(|d| d.span.start.line());
        return Err((
            line,
            "more than one YAML document (`---`): a #cloud-config holds exactly one".into(),
        ));
    }
    match docs.pop() {
        None => Ok(None),
        Some(d) if d.is_badvalue() => Ok(None),
        Some(d) => yaml_node(&d, 0).map(Some),
    }
}

fn yaml_line(n: &MarkedYaml) -> Option<usize> {
    let l = n.span.start.line();
    (l > 0).then_some(l)
}

fn yaml_node(n: &MarkedYaml, depth: usize) -> Result<Node, LoadErr> {
    let line = yaml_line(n);
    if depth > MAX_DEPTH {
        return Err((line, format!("nesting deeper than {MAX_DEPTH} levels")));
    }
    let v = match &n.data {
        YamlData::Representation(text, style, tag) => {
            scalar(text, *style, tag.as_deref()).map_err(|m| (line, m))?
        }
        YamlData::Value(s) => match s {
            saphyr::Scalar::Null => V::Null,
            saphyr::Scalar::Boolean(b) => V::Bool(*b),
            saphyr::Scalar::Integer(i) => V::Int(*i, 10),
            saphyr::Scalar::FloatingPoint(f) => V::Float(f.into_inner()),
            saphyr::Scalar::String(s) => V::Str(s.to_string()),
        },
        YamlData::Sequence(items) => V::Seq(
            items
                .iter()
                .map(|i| yaml_node(i, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        YamlData::Mapping(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (k, v) in map {
                let key_line = yaml_line(k).or(line);
                let key = match yaml_node(k, depth + 1)?.v {
                    V::Str(s) => s,
                    V::Int(i, _) => i.to_string(),
                    V::Bool(b) => b.to_string(),
                    V::Null => "null".into(),
                    V::Float(f) => f.to_string(),
                    _ => {
                        return Err((
                            key_line,
                            "a mapping key must be a plain word, not a list or mapping".into(),
                        ))
                    }
                };
                entries.push(Entry {
                    key,
                    key_line,
                    value: yaml_node(v, depth + 1)?,
                });
            }
            V::Map(entries)
        }
        YamlData::Tagged(tag, inner) => {
            if tag.is_yaml_core_schema() {
                return yaml_node(inner, depth + 1);
            }
            return Err((
                line,
                format!("unsupported YAML tag `{tag}` (cloud-config uses plain values)"),
            ));
        }
        YamlData::Alias(_) => {
            return Err((
                line,
                "unresolved YAML alias (define the `&anchor` first)".into(),
            ))
        }
        YamlData::BadValue => V::Null,
    };
    Ok(Node { line, v })
}

fn scalar(text: &str, style: ScalarStyle, tag: Option<&saphyr::Tag>) -> Result<V, String> {
    if let Some(tag) = tag {
        if !tag.is_yaml_core_schema() {
            return Err(format!(
                "unsupported YAML tag `{tag}` (cloud-config uses plain values)"
            ));
        }
        return match tag.suffix.as_str() {
            "str" => Ok(V::Str(text.to_string())),
            "binary" => {
                let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                crate::checks::b64(&clean)
                    .map(V::Bin)
                    .map_err(|e| format!("!!binary value is not valid base64: {e}"))
            }
            "null" | "bool" | "int" | "float" => Ok(plain(text)),
            other => Err(format!("unsupported YAML tag `!!{other}`")),
        };
    }
    match style {
        ScalarStyle::Plain => Ok(plain(text)),
        _ => Ok(V::Str(text.to_string())),
    }
}

/// YAML 1.1 resolution of a plain scalar, as PyYAML's SafeLoader does it.
fn plain(t: &str) -> V {
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return V::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return V::Bool(true)
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return V::Bool(false)
        }
        _ => {}
    }
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let int = |digits: &str, radix: u32| -> Option<V> {
        let d: String = digits.chars().filter(|c| *c != '_').collect();
        if d.is_empty() || digits.starts_with('_') {
            return None;
        }
        let v = i64::from_str_radix(&d, radix).ok()?;
        Some(V::Int(if neg { v.checked_neg()? } else { v }, radix))
    };
    let parsed = if let Some(h) = body.strip_prefix("0x") {
        int(h, 16)
    } else if let Some(b) = body.strip_prefix("0b") {
        int(b, 2)
    } else if let Some(o) = body.strip_prefix("0o") {
        int(o, 8)
    } else if body.len() > 1
        && body.starts_with('0')
        && body.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        int(&body[1..], 8)
    } else if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        int(body, 10)
    } else {
        None
    };
    if let Some(v) = parsed {
        return v;
    }
    let lower = body.to_ascii_lowercase();
    if lower == ".inf" {
        return V::Float(if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if lower == ".nan" && t.len() == body.len() {
        return V::Float(f64::NAN);
    }
    let looks_float = body.contains('.')
        && body
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+' | b'_'));
    if looks_float {
        if let Ok(f) = body.replace('_', "").parse::<f64>() {
            return V::Float(if neg { -f } else { f });
        }
    }
    V::Str(t.to_string())
}

// ---------------------------------------------------------------- TOML

/// Byte offset → 1-based line.
pub(crate) struct Lines(Vec<usize>);

impl Lines {
    pub fn new(text: &str) -> Self {
        Lines(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }
    pub fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&nl| nl < offset) + 1
    }
}

pub(crate) fn load_toml(text: &str) -> Result<Node, LoadErr> {
    use toml::de::{DeTable, DeValue};
    let lines = Lines::new(text);
    let table = DeTable::parse(text).map_err(|e| {
        (
            e.span().map(|s| lines.line(s.start)),
            e.message().trim().to_string(),
        )
    })?;
    fn conv(v: &DeValue<'_>, line: usize, lines: &Lines, depth: usize) -> Result<Node, LoadErr> {
        if depth > MAX_DEPTH {
            return Err((
                Some(line),
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        let v = match v {
            DeValue::String(s) => V::Str(s.to_string()),
            DeValue::Integer(i) => {
                let n = i64::from_str_radix(i.as_str(), i.radix())
                    .map_err(|_| (Some(line), format!("integer {i} is out of range")))?;
                V::Int(n, i.radix())
            }
            DeValue::Float(f) => V::Float(f.as_str().replace('_', "").parse().unwrap_or(f64::NAN)),
            DeValue::Boolean(b) => V::Bool(*b),
            DeValue::Datetime(d) => V::Str(d.to_string()),
            DeValue::Array(a) => V::Seq(
                a.iter()
                    .map(|item| {
                        conv(
                            item.get_ref(),
                            lines.line(item.span().start),
                            lines,
                            depth + 1,
                        )
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DeValue::Table(t) => V::Map(table_entries(t, lines, depth + 1)?),
        };
        Ok(Node {
            line: Some(line),
            v,
        })
    }
    fn table_entries(t: &DeTable<'_>, lines: &Lines, depth: usize) -> Result<Vec<Entry>, LoadErr> {
        let mut entries: Vec<Entry> = t
            .iter()
            .map(|(k, v)| {
                let key_line = lines.line(k.span().start);
                Ok(Entry {
                    key: k.get_ref().to_string(),
                    key_line: Some(key_line),
                    value: conv(v.get_ref(), lines.line(v.span().start), lines, depth)?,
                })
            })
            .collect::<Result<_, LoadErr>>()?;
        // The TOML map is sorted by key: put entries back in document order.
        entries.sort_by_key(|e| e.key_line);
        Ok(entries)
    }
    Ok(Node {
        line: Some(1),
        v: V::Map(table_entries(table.get_ref(), &lines, 0)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_11_scalars_resolve_like_cloud_init() {
        assert!(matches!(plain("yes"), V::Bool(true)));
        assert!(matches!(plain("off"), V::Bool(false)));
        assert!(matches!(plain("0644"), V::Int(0o644, 8)));
        assert!(matches!(plain("644"), V::Int(644, 10)));
        assert!(matches!(plain("0x1F"), V::Int(31, 16)));
        assert!(matches!(plain("-3"), V::Int(-3, 10)));
        assert!(matches!(plain("1.5"), V::Float(f) if (f - 1.5).abs() < 1e-9));
        assert!(matches!(plain("~"), V::Null));
        assert!(matches!(plain("09"), V::Str(_)));
        assert!(matches!(plain("1.2.3.4"), V::Str(_)));
        assert!(matches!(plain("-"), V::Str(_)));
    }

    #[test]
    fn a_key_given_twice_is_read_as_pyyaml_reads_it() {
        let (n, dup) = load_yaml_lenient("a: 1\nb: 2\na: 3\n").unwrap();
        assert_eq!(dup, Some(3));
        let V::Map(e) = n.unwrap().v else { panic!() };
        assert_eq!(e.len(), 2);
        let a = e.iter().find(|x| x.key == "a").unwrap();
        assert!(matches!(a.value.v, V::Int(3, _)), "the last value counts");
        assert!(load_yaml("a: 1\na: 3\n").is_err());
    }

    #[test]
    fn keys_and_values_keep_their_lines() {
        let n = load_yaml("a: 1\nb:\n  - x\n  - y\n").unwrap().unwrap();
        let V::Map(e) = n.v else { panic!() };
        assert_eq!(e[1].key, "b");
        assert_eq!(e[1].key_line, Some(2));
        let V::Seq(items) = &e[1].value.v else {
            panic!()
        };
        assert_eq!(items[1].line, Some(4));
    }

    #[test]
    fn toml_lines_come_from_spans() {
        let n = load_toml("x = 1\n\n[t]\ny = \"a\"\n").unwrap();
        let V::Map(e) = n.v else { panic!() };
        assert_eq!(e[0].key, "x");
        assert_eq!(e[1].key, "t");
        let V::Map(inner) = &e[1].value.v else {
            panic!()
        };
        assert_eq!(inner[0].key_line, Some(4));
    }
}
