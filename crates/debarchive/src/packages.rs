//! Binary `Packages` indices: one deb822 paragraph per package version.
//!
//! This module owns turning an index (already verified against the signed
//! `InRelease` by the caller) into [`Package`] values: the fields the
//! resolver and the downloader need, typed and validated. It reads each
//! paragraph's fields in one pass and never copies fields it does not keep
//! (descriptions, maintainers, tags).
//!
//! Required fields: `Package`, `Version`, `Architecture`, `Filename`, `Size`,
//! `SHA256`. A missing or malformed field is an error that names the 1-based
//! line of the field (or of the paragraph when the field is missing), the
//! package and the field, so a bad index is easy to look at:
//! `line 1234: package foo: field Size: "12x" is not a number`.

use crate::deb822::{self, Paragraph};
use crate::relation::{parse_relation_list, parse_relations, Alternatives, Relation};
use crate::version::Version;
use std::fmt;

/// The `Multi-Arch` field (absent means [`MultiArch::No`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MultiArch {
    #[default]
    No,
    Same,
    Foreign,
    Allowed,
}

/// One binary package version from an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: Version,
    pub architecture: String,
    pub multi_arch: MultiArch,
    pub depends: Vec<Alternatives>,
    pub pre_depends: Vec<Alternatives>,
    pub provides: Vec<Relation>,
    pub conflicts: Vec<Relation>,
    pub breaks: Vec<Relation>,
    pub essential: bool,
    pub priority: Option<String>,
    /// The source package's name (the `Source` field without its optional
    /// `(version)`), when it differs from the binary's.
    pub source: Option<String>,
    /// Pool path relative to the mirror root.
    pub filename: String,
    pub size: u64,
    /// SHA-256 of the `.deb`, lowercase hex.
    pub sha256: String,
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.name, self.version, self.architecture)
    }
}

/// A `Packages` index that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The deb822 structure itself is broken.
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    /// A required field is absent from the paragraph starting at `line`.
    #[error(
        "line {line}: {}missing required field {field}",
        package_prefix(package)
    )]
    MissingField {
        line: usize,
        package: Option<String>,
        field: &'static str,
    },
    /// A field is present but its value is unusable.
    #[error("line {line}: {}field {field}: {reason}", package_prefix(package))]
    BadField {
        line: usize,
        package: Option<String>,
        field: String,
        reason: String,
    },
}

fn package_prefix(p: &Option<String>) -> String {
    match p {
        Some(p) => format!("package {p}: "),
        None => String::new(),
    }
}

/// Parse a whole binary `Packages` index.
pub fn parse_packages(text: &str) -> Result<Vec<Package>, IndexError> {
    // Real indices average ~800 bytes per paragraph.
    let mut out = Vec::with_capacity(text.len() / 700 + 1);
    for para in deb822::paragraphs(text) {
        let para = para.map_err(|e| IndexError::Syntax {
            line: e.line,
            message: e.message,
        })?;
        out.push(package_from_paragraph(text, &para)?);
    }
    Ok(out)
}

/// 1-based line of `field_value` (a slice of `text`), for error messages.
fn line_of(text: &str, field_value: &str, fallback: usize) -> usize {
    let base = text.as_ptr() as usize;
    let at = field_value.as_ptr() as usize;
    if at < base || at > base + text.len() {
        return fallback;
    }
    1 + text.as_bytes()[..at - base]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// The fields we keep, recognised in one pass over the paragraph.
#[derive(Default)]
struct Raw<'a> {
    package: Option<&'a str>,
    version: Option<&'a str>,
    architecture: Option<&'a str>,
    multi_arch: Option<&'a str>,
    depends: Option<&'a str>,
    pre_depends: Option<&'a str>,
    provides: Option<&'a str>,
    conflicts: Option<&'a str>,
    breaks: Option<&'a str>,
    essential: Option<&'a str>,
    priority: Option<&'a str>,
    source: Option<&'a str>,
    filename: Option<&'a str>,
    size: Option<&'a str>,
    sha256: Option<&'a str>,
}

impl<'a> Raw<'a> {
    fn slot(&mut self, name: &str) -> Option<&mut Option<&'a str>> {
        // Dispatch on length first: most fields (Description, Maintainer,
        // Tag, MD5sum, ...) are rejected after one integer comparison or one
        // short string comparison.
        let eq = |want: &str| name.eq_ignore_ascii_case(want);
        Some(match name.len() {
            4 if eq("Size") => &mut self.size,
            6 if eq("SHA256") => &mut self.sha256,
            6 if eq("Breaks") => &mut self.breaks,
            6 if eq("Source") => &mut self.source,
            7 if eq("Package") => &mut self.package,
            7 if eq("Version") => &mut self.version,
            7 if eq("Depends") => &mut self.depends,
            8 if eq("Provides") => &mut self.provides,
            8 if eq("Priority") => &mut self.priority,
            8 if eq("Filename") => &mut self.filename,
            9 if eq("Conflicts") => &mut self.conflicts,
            9 if eq("Essential") => &mut self.essential,
            10 if eq("Multi-Arch") => &mut self.multi_arch,
            11 if eq("Pre-Depends") => &mut self.pre_depends,
            12 if eq("Architecture") => &mut self.architecture,
            _ => return None,
        })
    }
}

fn package_from_paragraph<'t>(text: &'t str, para: &Paragraph<'t>) -> Result<Package, IndexError> {
    let mut raw = Raw::default();
    for (name, value) in para.fields() {
        if let Some(slot) = raw.slot(name) {
            *slot = Some(value);
        }
    }
    let missing = |field: &'static str, package: Option<&str>| IndexError::MissingField {
        line: para.line,
        package: package.map(str::to_string),
        field,
    };
    let name = raw.package.ok_or_else(|| missing("Package", None))?;
    let bad = |field: &str, value: &str, reason: String| IndexError::BadField {
        line: line_of(text, value, para.line),
        package: Some(name.to_string()),
        field: field.to_string(),
        reason,
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
    {
        return Err(IndexError::BadField {
            line: line_of(text, name, para.line),
            package: None,
            field: "Package".into(),
            reason: format!("{name:?} is not a valid package name"),
        });
    }
    let need =
        |field: &'static str, v: Option<&'t str>| v.ok_or_else(|| missing(field, Some(name)));
    let version_text = need("Version", raw.version)?;
    let version = Version::parse(version_text)
        .map_err(|e| bad("Version", version_text, e.reason.to_string()))?;
    let architecture = need("Architecture", raw.architecture)?;
    let filename = need("Filename", raw.filename)?;
    let size_text = need("Size", raw.size)?;
    let size: u64 = size_text
        .parse()
        .map_err(|_| bad("Size", size_text, format!("{size_text:?} is not a number")))?;
    let sha_text = need("SHA256", raw.sha256)?;
    if sha_text.len() != 64 || !sha_text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(
            "SHA256",
            sha_text,
            format!("{sha_text:?} is not 64 hexadecimal digits"),
        ));
    }
    let multi_arch = match raw.multi_arch {
        None => MultiArch::No,
        Some(m) if m.eq_ignore_ascii_case("no") => MultiArch::No,
        Some(m) if m.eq_ignore_ascii_case("same") => MultiArch::Same,
        Some(m) if m.eq_ignore_ascii_case("foreign") => MultiArch::Foreign,
        Some(m) if m.eq_ignore_ascii_case("allowed") => MultiArch::Allowed,
        Some(m) => {
            return Err(bad(
                "Multi-Arch",
                m,
                format!("{m:?} is not one of no, same, foreign, allowed"),
            ))
        }
    };
    let groups = |field: &str, v: Option<&str>| -> Result<Vec<Alternatives>, IndexError> {
        match v {
            None => Ok(Vec::new()),
            Some(v) => parse_relations(v).map_err(|e| bad(field, v, e.to_string())),
        }
    };
    let list = |field: &str, v: Option<&str>| -> Result<Vec<Relation>, IndexError> {
        match v {
            None => Ok(Vec::new()),
            Some(v) => parse_relation_list(v).map_err(|e| bad(field, v, e.to_string())),
        }
    };
    let essential = match raw.essential {
        None => false,
        Some(e) if e.eq_ignore_ascii_case("yes") => true,
        Some(e) if e.eq_ignore_ascii_case("no") => false,
        Some(e) => return Err(bad("Essential", e, format!("{e:?} is not yes or no"))),
    };
    let source = raw
        .source
        .map(|s| s.split_ascii_whitespace().next().unwrap_or(s).to_string())
        .filter(|s| !s.is_empty());
    Ok(Package {
        name: name.to_string(),
        version,
        architecture: architecture.to_string(),
        multi_arch,
        depends: groups("Depends", raw.depends)?,
        pre_depends: groups("Pre-Depends", raw.pre_depends)?,
        provides: list("Provides", raw.provides)?,
        conflicts: list("Conflicts", raw.conflicts)?,
        breaks: list("Breaks", raw.breaks)?,
        essential,
        priority: raw.priority.map(str::to_string),
        source,
        filename: filename.to_string(),
        size,
        sha256: sha_text.to_ascii_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relation::VersionOp;

    const SHA: &str = "4f0c3b2b2bb2c1c59c0e0a5d7b8e6f2f4a8c9d0e1f2a3b4c5d6e7f8091a2b3c4";

    fn stanza(extra: &str) -> String {
        format!(
            "Package: openssh-server\nSource: openssh (1:9.2p1-2)\nVersion: 1:9.2p1-2+deb12u3\nInstalled-Size: 1760\nMaintainer: Debian OpenSSH Maintainers <x@example.invalid>\nArchitecture: amd64\nMulti-Arch: foreign\n{extra}Description: secure shell (SSH) server\nFilename: pool/main/o/openssh/openssh-server_9.2p1-2+deb12u3_amd64.deb\nSize: 456012\nMD5sum: 00000000000000000000000000000000\nSHA256: {SHA}\nPriority: optional\n"
        )
    }

    #[test]
    fn parses_a_real_looking_stanza() {
        let text = stanza(
            "Pre-Depends: init-system-helpers (>= 1.54~)\nDepends: libc6 (>= 2.36), libssl3 (>= 3.0.9),\n openssh-client (= 1:9.2p1-2+deb12u3), default-logind | logind | libpam-systemd\nProvides: ssh-server\nConflicts: sftp, ssh-socks\nBreaks: runit (<< 2.1.2-51~)\n",
        );
        let pkgs = parse_packages(&format!("{text}\n{}", stanza(""))).unwrap();
        assert_eq!(pkgs.len(), 2);
        let p = &pkgs[0];
        assert_eq!(p.name, "openssh-server");
        assert_eq!(p.version.epoch(), 1);
        assert_eq!(p.architecture, "amd64");
        assert_eq!(p.multi_arch, MultiArch::Foreign);
        assert_eq!(p.pre_depends.len(), 1);
        assert_eq!(p.depends.len(), 4);
        assert_eq!(p.depends[3].len(), 3);
        assert_eq!(
            p.depends[2][0].constraint.as_ref().unwrap().0,
            VersionOp::Eq
        );
        assert_eq!(p.provides[0].name, "ssh-server");
        assert_eq!(p.conflicts.len(), 2);
        assert_eq!(p.breaks[0].name, "runit");
        assert_eq!(p.source.as_deref(), Some("openssh"));
        assert_eq!(p.priority.as_deref(), Some("optional"));
        assert_eq!(p.size, 456012);
        assert_eq!(p.sha256, SHA);
        assert!(!p.essential);
        assert!(pkgs[1].depends.is_empty());
    }

    #[test]
    fn missing_required_field_names_line_package_and_field() {
        let text = format!(
            "{}\n{}",
            stanza(""),
            stanza("").replace("Size: 456012\n", "")
        );
        let e = parse_packages(&text).unwrap_err();
        assert!(
            matches!(e, IndexError::MissingField { field: "Size", .. }),
            "{e:?}"
        );
        let line_of_second = stanza("").lines().count() + 2;
        assert_eq!(
            e.to_string(),
            format!("line {line_of_second}: package openssh-server: missing required field Size")
        );
        let e = parse_packages("Version: 1\n").unwrap_err();
        assert_eq!(e.to_string(), "line 1: missing required field Package");
    }

    #[test]
    fn bad_field_names_its_own_line() {
        let text = stanza("").replace("Size: 456012", "Size: 45x");
        let e = parse_packages(&text).unwrap_err();
        let line = text.lines().position(|l| l.starts_with("Size:")).unwrap() + 1;
        assert_eq!(
            e.to_string(),
            format!("line {line}: package openssh-server: field Size: \"45x\" is not a number")
        );
        let text = stanza("Depends: libc6 (>= 2.36,\n").to_string();
        let e = parse_packages(&text).unwrap_err();
        assert!(e.to_string().contains("field Depends:"), "{e}");
        let e = parse_packages(&stanza("").replace(SHA, "abc")).unwrap_err();
        assert!(e.to_string().contains("field SHA256"), "{e}");
        let e = parse_packages(&stanza("").replace("Version: 1:", "Version: x:")).unwrap_err();
        assert!(e.to_string().contains("field Version"), "{e}");
        let e = parse_packages(&stanza("").replace("foreign", "sometimes")).unwrap_err();
        assert!(e.to_string().contains("field Multi-Arch"), "{e}");
    }

    #[test]
    fn uppercase_hash_is_normalised_and_essential_read() {
        let text = stanza("Essential: yes\n").replace(SHA, &SHA.to_ascii_uppercase());
        let p = &parse_packages(&text).unwrap()[0];
        assert_eq!(p.sha256, SHA);
        assert!(p.essential);
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let e = parse_packages("Package: a\nthis is not a field\n").unwrap_err();
        assert!(matches!(e, IndexError::Syntax { line: 2, .. }), "{e:?}");
        assert!(e.to_string().starts_with("line 2: "), "{e}");
    }

    /// Time the parse of a real index: `BALLAST_TEST_PACKAGES=/tmp/Packages
    /// cargo test --release -p ballast-debarchive -- --ignored --nocapture parse_real`.
    #[test]
    #[ignore]
    fn parse_real_index_timing() {
        let Ok(path) = std::env::var("BALLAST_TEST_PACKAGES") else {
            eprintln!("BALLAST_TEST_PACKAGES is unset: skipping");
            return;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        let mut best = f64::MAX;
        let mut n = 0;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let pkgs = parse_packages(&text).unwrap();
            best = best.min(t.elapsed().as_secs_f64());
            n = pkgs.len();
        }
        eprintln!(
            "parsed {n} packages from {} MB in {:.3} s (best of 5)",
            text.len() / 1_000_000,
            best
        );
    }
}
