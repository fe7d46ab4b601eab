//! Package relationship fields (Debian Policy §7.1): `Depends`, `Pre-Depends`,
//! `Provides`, `Conflicts`, `Breaks` and friends.
//!
//! A field is a comma-separated list of groups; a group is `|`-separated
//! alternatives; each alternative is
//! `name[:archqual] [(op version)] [\[arch list\]] [<profile list> ...]`.
//!
//! This module owns that syntax and nothing else: it turns text into
//! [`Relation`]s and answers "does this version satisfy this relation".
//! Which package satisfies a relation is the resolver's job.
//!
//! ## Restrictions
//!
//! `[arch]` restriction lists and `<profile>` build-profile lists appear only in
//! source-package fields (`Build-Depends`), never in binary `Packages`
//! indices. [`parse_relations`] checks their syntax and then ignores them,
//! keeping every relation. [`parse_relations_for_arch`] honours the `[arch]`
//! lists for one architecture (dropping relations restricted away from it)
//! and still ignores build profiles: Ballast never builds source packages, so
//! no profile is ever active and there is nothing to choose between.
//!
//! An empty group between commas (`a, , b` or a trailing `,`) is skipped, as
//! dpkg-dev's substvar output produces it; an empty alternative (`a | | b`)
//! is an error.

use crate::version::{Version, VersionError};
use std::fmt;

/// The comparison in a versioned relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionOp {
    /// `<<`: strictly earlier.
    Lt,
    /// `<=` (and the obsolete `<`): earlier or equal.
    Le,
    /// `=`: exactly equal.
    Eq,
    /// `>=` (and the obsolete `>`): later or equal.
    Ge,
    /// `>>`: strictly later.
    Gt,
}

impl VersionOp {
    /// The operator as Policy spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionOp::Lt => "<<",
            VersionOp::Le => "<=",
            VersionOp::Eq => "=",
            VersionOp::Ge => ">=",
            VersionOp::Gt => ">>",
        }
    }

    /// Whether `candidate OP wanted` holds.
    pub fn holds(self, candidate: &Version, wanted: &Version) -> bool {
        use std::cmp::Ordering::*;
        let ord = candidate.cmp(wanted);
        match self {
            VersionOp::Lt => ord == Less,
            VersionOp::Le => ord != Greater,
            VersionOp::Eq => ord == Equal,
            VersionOp::Ge => ord != Less,
            VersionOp::Gt => ord == Greater,
        }
    }
}

impl fmt::Display for VersionOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alternative of a relationship field: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Relation {
    /// Package (or virtual package) name.
    pub name: String,
    /// `any`, `native` or an architecture name after `:`.
    pub arch_qualifier: Option<String>,
    /// The version constraint, if any.
    pub constraint: Option<(VersionOp, Version)>,
}

impl Relation {
    /// A relation on `name` without constraint or qualifier.
    pub fn plain(name: impl Into<String>) -> Relation {
        Relation {
            name: name.into(),
            arch_qualifier: None,
            constraint: None,
        }
    }

    /// Whether version `v` of a package named [`Relation::name`] satisfies the
    /// constraint (always true for an unversioned relation).
    pub fn matches_version(&self, v: &Version) -> bool {
        match &self.constraint {
            None => true,
            Some((op, wanted)) => op.holds(v, wanted),
        }
    }

    /// The constraint as Policy writes it, e.g. `(>= 3.0.9)`, or `""`.
    pub fn constraint_text(&self) -> String {
        match &self.constraint {
            None => String::new(),
            Some((op, v)) => format!("({op} {v})"),
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(q) = &self.arch_qualifier {
            write!(f, ":{q}")?;
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({op} {v})")?;
        }
        Ok(())
    }
}

/// A group of alternatives: `a | b | c`, satisfied by any one of them.
pub type Alternatives = Vec<Relation>;

/// Display helper for a group of alternatives (`a | b (>= 1)`).
pub struct DisplayAlternatives<'a>(pub &'a [Relation]);

impl fmt::Display for DisplayAlternatives<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// A malformed relationship field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelationError {
    /// The syntax is wrong at `item` (the offending alternative as written).
    #[error("in {item:?}: {reason}")]
    Syntax { item: String, reason: String },
    /// The version inside `(op version)` is invalid.
    #[error("in {item:?}: {source}")]
    Version {
        item: String,
        #[source]
        source: VersionError,
    },
}

/// Parse a relationship field into groups of alternatives, ignoring `[arch]`
/// and `<profile>` restrictions after checking their syntax (see the module
/// doc). Multi-line values (deb822 continuation lines) are accepted as is.
pub fn parse_relations(field: &str) -> Result<Vec<Alternatives>, RelationError> {
    parse_with(field, None)
}

/// Like [`parse_relations`], but drop alternatives whose `[arch]` list
/// excludes `arch` (and groups left empty by that).
pub fn parse_relations_for_arch(
    field: &str,
    arch: &str,
) -> Result<Vec<Alternatives>, RelationError> {
    parse_with(field, Some(arch))
}

/// Parse a comma-separated list of single relations with no alternatives, as
/// `Provides`, `Conflicts`, `Breaks` and `Replaces` are.
pub fn parse_relation_list(field: &str) -> Result<Vec<Relation>, RelationError> {
    let groups = parse_relations(field)?;
    let mut out = Vec::with_capacity(groups.len());
    for mut g in groups {
        if g.len() != 1 {
            return Err(RelationError::Syntax {
                item: DisplayAlternatives(&g).to_string(),
                reason: "alternatives ('|') are not allowed in this field".into(),
            });
        }
        if let Some(r) = g.pop() {
            out.push(r);
        }
    }
    Ok(out)
}

fn parse_with(field: &str, arch: Option<&str>) -> Result<Vec<Alternatives>, RelationError> {
    let mut groups = Vec::with_capacity(field.len() / 16 + 1);
    for group in field.split(',') {
        if group.trim().is_empty() {
            continue;
        }
        let mut alts = Vec::with_capacity(1);
        for item in group.split('|') {
            if let Some(rel) = parse_one(item, arch)? {
                alts.push(rel);
            }
        }
        if !alts.is_empty() {
            groups.push(alts);
        }
    }
    Ok(groups)
}

fn syntax(item: &str, reason: impl Into<String>) -> RelationError {
    RelationError::Syntax {
        item: item.trim().to_string(),
        reason: reason.into(),
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Parse one alternative. `Ok(None)` when an `[arch]` list excludes `arch`.
fn parse_one(item: &str, arch: Option<&str>) -> Result<Option<Relation>, RelationError> {
    let s = item.as_bytes();
    let mut i = skip_ws(s, 0);
    if i == s.len() {
        return Err(syntax(item, "empty alternative"));
    }
    let name_start = i;
    while i < s.len() && is_name_byte(s[i]) {
        i += 1;
    }
    let name = &item[name_start..i];
    if name.is_empty() {
        return Err(syntax(item, "expected a package name"));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(syntax(
            item,
            "a package name must start with a letter or digit",
        ));
    }
    let mut arch_qualifier = None;
    if i < s.len() && s[i] == b':' {
        i += 1;
        let q_start = i;
        while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'-') {
            i += 1;
        }
        if q_start == i {
            return Err(syntax(item, "expected an architecture qualifier after ':'"));
        }
        arch_qualifier = Some(item[q_start..i].to_string());
    }
    i = skip_ws(s, i);
    let mut constraint = None;
    if i < s.len() && s[i] == b'(' {
        i = skip_ws(s, i + 1);
        let (op, len) = match (s.get(i), s.get(i + 1)) {
            (Some(b'<'), Some(b'<')) => (VersionOp::Lt, 2),
            (Some(b'<'), Some(b'=')) => (VersionOp::Le, 2),
            (Some(b'>'), Some(b'>')) => (VersionOp::Gt, 2),
            (Some(b'>'), Some(b'=')) => (VersionOp::Ge, 2),
            (Some(b'='), _) => (VersionOp::Eq, 1),
            // Obsolete forms, which dpkg reads as <= and >=.
            (Some(b'<'), _) => (VersionOp::Le, 1),
            (Some(b'>'), _) => (VersionOp::Ge, 1),
            _ => {
                return Err(syntax(
                    item,
                    "expected a version operator (<<, <=, =, >=, >>) after '('",
                ))
            }
        };
        i = skip_ws(s, i + len);
        let v_start = i;
        while i < s.len() && s[i] != b')' && !s[i].is_ascii_whitespace() {
            i += 1;
        }
        let text = &item[v_start..i];
        i = skip_ws(s, i);
        if i >= s.len() || s[i] != b')' {
            return Err(syntax(item, "expected ')' after the version"));
        }
        i += 1;
        if text.is_empty() {
            return Err(syntax(item, "empty version inside '( )'"));
        }
        let version = Version::parse(text).map_err(|source| RelationError::Version {
            item: item.trim().to_string(),
            source,
        })?;
        constraint = Some((op, version));
    }
    i = skip_ws(s, i);
    let mut keep = true;
    if i < s.len() && s[i] == b'[' {
        let close = item[i..]
            .find(']')
            .map(|k| i + k)
            .ok_or_else(|| syntax(item, "unclosed '[' architecture list"))?;
        let list = &item[i + 1..close];
        if let Some(arch) = arch {
            keep = arch_list_matches(item, list, arch)?;
        } else {
            arch_list_matches(item, list, "amd64")?; // syntax check only
        }
        i = skip_ws(s, close + 1);
    }
    while i < s.len() && s[i] == b'<' {
        let close = item[i..]
            .find('>')
            .map(|k| i + k)
            .ok_or_else(|| syntax(item, "unclosed '<' build-profile list"))?;
        if item[i + 1..close].trim().is_empty() {
            return Err(syntax(item, "empty build-profile list"));
        }
        i = skip_ws(s, close + 1);
    }
    if i != s.len() {
        return Err(syntax(
            item,
            format!("unexpected text {:?}", item[i..].trim()),
        ));
    }
    if !keep {
        return Ok(None);
    }
    Ok(Some(Relation {
        name: name.to_string(),
        arch_qualifier,
        constraint,
    }))
}

/// Evaluate `[a b !c]`: all positive or all negated, as Policy requires.
fn arch_list_matches(item: &str, list: &str, arch: &str) -> Result<bool, RelationError> {
    let mut positive = None;
    let mut any_match = false;
    let mut empty = true;
    for word in list.split_ascii_whitespace() {
        empty = false;
        let (neg, name) = match word.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, word),
        };
        if name.is_empty() {
            return Err(syntax(item, "empty architecture name in '[ ]'"));
        }
        match positive {
            None => positive = Some(!neg),
            Some(p) if p == neg => {
                return Err(syntax(
                    item,
                    "an architecture list may not mix negated and plain names",
                ))
            }
            Some(_) => {}
        }
        if arch_matches(name, arch) {
            any_match = true;
        }
    }
    if empty {
        return Err(syntax(item, "empty architecture list '[ ]'"));
    }
    Ok(if positive == Some(true) {
        any_match
    } else {
        !any_match
    })
}

/// Match a Debian architecture name or wildcard (`any`, `linux-any`,
/// `any-arm64`) against a concrete Linux architecture.
fn arch_matches(pattern: &str, arch: &str) -> bool {
    if pattern == arch || pattern == "any" {
        return true;
    }
    let cpu = match arch {
        "armhf" | "armel" => "arm",
        "ppc64el" => "ppc64el",
        other => other,
    };
    match pattern.split_once('-') {
        Some((os, "any")) => os == "linux" || os == "any",
        Some(("any", c)) => c == cpu,
        Some(("linux", c)) => c == arch,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn parses_groups_alternatives_and_constraints() {
        let g = parse_relations(
            "libc6 (>= 2.34), libssl3 (>= 3.0.9) | libssl1.1,\n debconf (>= 0.5) | debconf-2.0, perl:any, adduser",
        )
        .unwrap();
        assert_eq!(g.len(), 5);
        assert_eq!(g[0][0].name, "libc6");
        assert_eq!(g[0][0].constraint, Some((VersionOp::Ge, v("2.34"))));
        assert_eq!(g[1].len(), 2);
        assert_eq!(g[1][1].name, "libssl1.1");
        assert_eq!(g[3][0].arch_qualifier.as_deref(), Some("any"));
        assert_eq!(g[4][0].constraint, None);
        assert_eq!(
            DisplayAlternatives(&g[1]).to_string(),
            "libssl3 (>= 3.0.9) | libssl1.1"
        );
    }

    #[test]
    fn all_operators_and_obsolete_ones() {
        let g = parse_relations(
            "a (<< 1), b (<= 1), c (= 1), d (>= 1), e (>> 1), f (< 1), g (> 1), h(>=1)",
        )
        .unwrap();
        let ops: Vec<_> = g
            .iter()
            .map(|x| x[0].constraint.as_ref().unwrap().0)
            .collect();
        use VersionOp::*;
        assert_eq!(ops, vec![Lt, Le, Eq, Ge, Gt, Le, Ge, Ge]);
    }

    #[test]
    fn matches_version_for_each_operator() {
        let rel = |s: &str| parse_relations(s).unwrap().remove(0).remove(0);
        assert!(rel("a (>= 1.0)").matches_version(&v("1.0")));
        assert!(rel("a (>= 1.0)").matches_version(&v("1.0-0")));
        assert!(!rel("a (>= 1.0)").matches_version(&v("1.0~rc1")));
        assert!(!rel("a (<< 2)").matches_version(&v("1:0")));
        assert!(rel("a (<< 2)").matches_version(&v("2~beta")));
        assert!(rel("a (= 1.2-3)").matches_version(&v("0:1.2-3")));
        assert!(!rel("a (>> 1.2-3)").matches_version(&v("1.2-3")));
        assert!(rel("a (<= 1.2-3)").matches_version(&v("1.2-3")));
        assert!(rel("a").matches_version(&v("9")));
    }

    #[test]
    fn skips_empty_groups_but_not_empty_alternatives() {
        assert_eq!(parse_relations("a, , b,").unwrap().len(), 2);
        assert_eq!(parse_relations("").unwrap().len(), 0);
        assert!(parse_relations("a | | b").is_err());
        assert!(parse_relations("a |").is_err());
    }

    #[test]
    fn restrictions_are_checked_then_ignored_or_honoured() {
        let field = "debhelper-compat (= 13), libfoo-dev [amd64 arm64] <!nocheck>, libbar [!armhf], gcc-x [linux-any] <stage1 cross> <pkg.x>";
        let all = parse_relations(field).unwrap();
        assert_eq!(all.len(), 4);
        let amd = parse_relations_for_arch(field, "amd64").unwrap();
        assert_eq!(amd.len(), 4);
        let armhf = parse_relations_for_arch(field, "armhf").unwrap();
        let names: Vec<_> = armhf.iter().map(|g| g[0].name.as_str()).collect();
        assert_eq!(names, vec!["debhelper-compat", "gcc-x"]);
        let any_arm = parse_relations_for_arch("x [any-arm]", "armhf").unwrap();
        assert_eq!(any_arm.len(), 1);
        assert!(parse_relations("a [amd64 !i386]").is_err());
        assert!(parse_relations("a [amd64").is_err());
        assert!(parse_relations("a <nocheck").is_err());
    }

    #[test]
    fn errors_name_the_item_and_reason() {
        let e = parse_relations("ok, bad (>= 1.0 x)").unwrap_err();
        assert!(e.to_string().contains("bad (>= 1.0 x)"), "{e}");
        let e = parse_relations("a (>= )").unwrap_err();
        assert!(e.to_string().contains("empty version"), "{e}");
        let e = parse_relations("a (~ 1)").unwrap_err();
        assert!(e.to_string().contains("operator"), "{e}");
        let e = parse_relations("a (>= x1)").unwrap_err();
        assert!(matches!(e, RelationError::Version { .. }), "{e}");
        assert!(parse_relations("Upper").is_err());
        assert!(parse_relations("a:").is_err());
    }

    #[test]
    fn relation_lists_refuse_alternatives() {
        let l = parse_relation_list("mail-transport-agent, foo (= 1.0)").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].to_string(), "foo (= 1.0)");
        assert!(parse_relation_list("a | b").is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["a", "a:any", "libc6 (>= 2.36)", "x:amd64 (<< 1:2.0-1~)"] {
            let r = parse_relations(s).unwrap().remove(0).remove(0);
            assert_eq!(r.to_string(), s);
        }
    }
}
