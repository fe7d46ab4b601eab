//! `/usr/lib/os-release`: who the machine is.
//!
//! One writer ([`OsRelease::render`], called by the builder) and one reader
//! ([`OsRelease::parse`], [`version`]) used by init, sysd and osctl. The reader
//! refuses a missing or malformed field and names the file and the field: a machine
//! that does not know its arch or board must not guess which update bundles fit it.
//!
//! The `BALLAST_*` fields are typed: the version is semver-checked text, the arch one
//! of the arches Ballast builds, the rollback index a number. This module never reads
//! the file system except in [`OsRelease::read`] and [`read_version`].

use std::fmt;
use std::path::{Path, PathBuf};

/// A version as Ballast writes it: semver (`MAJOR.MINOR.PATCH[-PRE][+BUILD]`),
/// kept as its text (bundles and channels compare it with their own rules).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    /// `Err(reason)` when `text` is not semver.
    pub fn parse(text: &str) -> Result<Version, &'static str> {
        let (rest, build) = match text.split_once('+') {
            Some((r, b)) => (r, Some(b)),
            None => (text, None),
        };
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let numbers: Vec<&str> = core.split('.').collect();
        let numeric = |n: &&str| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n.len() == 1 || !n.starts_with('0'))
        };
        if numbers.len() != 3 || !numbers.iter().all(numeric) {
            return Err("semver MAJOR.MINOR.PATCH (numbers without leading zeros)");
        }
        let ident_ok = |s: &str| {
            s.split('.')
                .all(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        };
        if pre.is_some_and(|p| !ident_ok(p)) || build.is_some_and(|b| !ident_ok(b)) {
            return Err("semver (pre-release and build parts are dot-separated [0-9A-Za-z-])");
        }
        Ok(Version(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The CPU architectures Ballast images are built for, by their Ballast names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Arm64,
    Armv7,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Arm64, Arch::Armv7];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
            Arch::Armv7 => "armv7",
        }
    }

    pub fn parse(text: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What os-release says about a Ballast machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsRelease {
    /// `VERSION_ID` (also in `VERSION` and `PRETTY_NAME`).
    pub version: Version,
    /// `BALLAST_BOARD`: the board file the image was built for.
    pub board: String,
    /// `BALLAST_ARCH`.
    pub arch: Arch,
    /// `BALLAST_ROLLBACK_INDEX`: bundles with a lower index are refused.
    pub rollback_index: u64,
}

/// os-release is missing, unreadable, or lacks a field Ballast needs.
#[derive(Debug, thiserror::Error)]
pub enum OsReleaseError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no {field}= line (`ballast build` writes it; this image's os-release is incomplete)", path.display())]
    Missing { path: PathBuf, field: &'static str },
    #[error("{}: {field}={value:?} is not {expected}", path.display())]
    Invalid {
        path: PathBuf,
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl OsRelease {
    /// The file's text. Values with spaces are quoted; the others are left bare so
    /// shell scripts and `. /etc/os-release` read them either way.
    pub fn render(&self) -> String {
        let v = &self.version;
        format!(
            "NAME=\"Ballast\"\nID=ballast\nVERSION=\"{v}\"\nVERSION_ID={v}\n\
             PRETTY_NAME=\"Ballast {v}\"\nBALLAST_BOARD={}\nBALLAST_ARCH={}\n\
             BALLAST_ROLLBACK_INDEX={}\n",
            self.board, self.arch, self.rollback_index
        )
    }

    /// Parse `text`, read from `path` (named in errors). Every Ballast field is required.
    pub fn parse(path: &Path, text: &str) -> Result<OsRelease, OsReleaseError> {
        let field = Fields { path, text };
        let board = field.required("BALLAST_BOARD")?;
        if board.is_empty() || board.contains(char::is_whitespace) {
            return Err(field.invalid("BALLAST_BOARD", board, "a board name"));
        }
        let arch = field.required("BALLAST_ARCH")?;
        let arch = Arch::parse(&arch)
            .ok_or_else(|| field.invalid("BALLAST_ARCH", arch, "x86_64, arm64 or armv7"))?;
        let index = field.required("BALLAST_ROLLBACK_INDEX")?;
        let rollback_index = index.parse().map_err(|_| {
            field.invalid(
                "BALLAST_ROLLBACK_INDEX",
                index,
                "a whole number (0 or more)",
            )
        })?;
        Ok(OsRelease {
            version: field.version()?,
            board,
            arch,
            rollback_index,
        })
    }

    /// Read and parse the file at `path` ([`crate::paths::OS_RELEASE`] on the device).
    pub fn read(path: &Path) -> Result<OsRelease, OsReleaseError> {
        OsRelease::parse(path, &read_text(path)?)
    }
}

/// Only `VERSION_ID`, for the callers that need nothing else (the banner, the
/// ready line); `text` was read from `path`.
pub fn version(path: &Path, text: &str) -> Result<Version, OsReleaseError> {
    Fields { path, text }.version()
}

/// Read the file at `path` and return its `VERSION_ID`.
pub fn read_version(path: &Path) -> Result<Version, OsReleaseError> {
    version(path, &read_text(path)?)
}

fn read_text(path: &Path) -> Result<String, OsReleaseError> {
    std::fs::read_to_string(path).map_err(|source| OsReleaseError::Read {
        path: path.to_path_buf(),
        source,
    })
}

struct Fields<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Fields<'_> {
    /// The last `KEY=value` line's value, unquoted (os-release(5): shell-like quoting).
    fn get(&self, key: &str) -> Option<String> {
        self.text
            .lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .next_back()
            .map(unquote)
    }

    fn required(&self, key: &'static str) -> Result<String, OsReleaseError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| OsReleaseError::Missing {
                path: self.path.to_path_buf(),
                field: key,
            })
    }

    fn invalid(
        &self,
        field: &'static str,
        value: String,
        expected: &'static str,
    ) -> OsReleaseError {
        OsReleaseError::Invalid {
            path: self.path.to_path_buf(),
            field,
            value,
            expected,
        }
    }

    fn version(&self) -> Result<Version, OsReleaseError> {
        let v = self.required("VERSION_ID")?;
        Version::parse(&v).map_err(|expected| self.invalid("VERSION_ID", v, expected))
    }
}

/// Remove one pair of matching quotes; inside double quotes, `\X` is `X`.
fn unquote(value: &str) -> String {
    let v = value.trim();
    if let Some(inner) = v.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return inner.to_string();
    }
    let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return v.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: &str = "NAME=\"Ballast\"\nID=ballast\nVERSION=\"0.2.0\"\nVERSION_ID=0.2.0\n\
PRETTY_NAME=\"Ballast 0.2.0\"\nBALLAST_BOARD=qemu-arm64\nBALLAST_ARCH=arm64\n\
BALLAST_ROLLBACK_INDEX=1\n";

    fn golden() -> OsRelease {
        OsRelease {
            version: Version::parse("0.2.0").unwrap(),
            board: "qemu-arm64".into(),
            arch: Arch::Arm64,
            rollback_index: 1,
        }
    }

    #[test]
    fn the_builder_writes_the_golden_text_and_the_device_reads_it_back() {
        assert_eq!(golden().render(), GOLDEN);
        assert_eq!(OsRelease::parse(Path::new("x"), GOLDEN).unwrap(), golden());
    }

    #[test]
    fn quoted_values_and_the_last_line_win() {
        let text = "VERSION_ID='1.4.0'\nBALLAST_BOARD=\"pc\"\nBALLAST_ARCH=x86_64\n\
                    BALLAST_ROLLBACK_INDEX=0\nBALLAST_ROLLBACK_INDEX=\"7\"\n";
        let o = OsRelease::parse(Path::new("x"), text).unwrap();
        assert_eq!(o.version.as_str(), "1.4.0");
        assert_eq!(
            (o.board.as_str(), o.arch, o.rollback_index),
            ("pc", Arch::X86_64, 7)
        );
        assert_eq!(unquote(r#""a \"b\" c""#), r#"a "b" c"#);
    }

    #[test]
    fn a_missing_field_is_refused_naming_the_file_and_the_field() {
        for field in [
            "VERSION_ID",
            "BALLAST_BOARD",
            "BALLAST_ARCH",
            "BALLAST_ROLLBACK_INDEX",
        ] {
            let text: String = GOLDEN
                .lines()
                .filter(|l| !l.starts_with(&format!("{field}=")))
                .map(|l| format!("{l}\n"))
                .collect();
            let e = OsRelease::parse(Path::new("/usr/lib/os-release"), &text)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("/usr/lib/os-release: no ") && e.contains(&format!("{field}=")),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused_not_defaulted() {
        let bad = |from: &str, to: &str| {
            OsRelease::parse(Path::new("f"), &GOLDEN.replace(from, to))
                .unwrap_err()
                .to_string()
        };
        assert!(bad("ARCH=arm64", "ARCH=mips").contains("BALLAST_ARCH=\"mips\""));
        assert!(bad("INDEX=1", "INDEX=-1").contains("whole number"));
        assert!(bad("VERSION_ID=0.2.0", "VERSION_ID=0.2").contains("semver"));
        assert!(bad("BOARD=qemu-arm64", "BOARD=\"a b\"").contains("board name"));
    }

    #[test]
    fn versions_are_semver() {
        for ok in [
            "0.1.0",
            "10.20.30",
            "1.0.0-rc.1",
            "1.0.0+build.5",
            "1.0.0-x-y+z",
        ] {
            assert!(Version::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1",
            "1.2",
            "01.2.3",
            "1.2.3.4",
            "1.2.x",
            "1.2.3-",
            "1.2.3+a..b",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_alone_needs_only_version_id() {
        let v = version(Path::new("f"), "ID=ballast\nVERSION_ID=\"0.1.0\"\n").unwrap();
        assert_eq!(v.as_str(), "0.1.0");
        let e = version(Path::new("/r/os-release"), "ID=ballast\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/r/os-release: no VERSION_ID= line (`ballast build` writes it; this image's os-release is incomplete)"
        );
        let e = read_version(Path::new("/nonexistent/os-release")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/os-release: "),
            "{e}"
        );
    }
}
