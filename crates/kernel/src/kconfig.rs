//! Kconfig files: a kernel's `.config` (as Debian ships it in `/boot/config-KVER`) and
//! Ballast's requirement fragments in `kernel-configs/*.config`.
//!
//! Both use the same line format, the one `scripts/kconfig/merge_config.sh` reads:
//! `CONFIG_X=y`, `CONFIG_X=m`, `CONFIG_X="string"`, `CONFIG_X=123`, and
//! `# CONFIG_X is not set`; any other `#` line is a comment. This module only parses;
//! deciding whether a kernel meets the requirements is `check`'s job. Every fragment
//! requirement keeps its file and line so a failed check can point at it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Why a Kconfig file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum KconfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message} (line: {text:?}); expected `CONFIG_X=y|m|value` or `# CONFIG_X is not set`", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        text: String,
        message: String,
    },
    #[error("{}:{line}: {option} is already set at line {first_line} of the same fragment; keep one of them", path.display())]
    Duplicate {
        path: PathBuf,
        line: usize,
        option: String,
        first_line: usize,
    },
}

/// The value of one option.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Value {
    /// `=y`: built in.
    Yes,
    /// `=m`: built as a module.
    Module,
    /// `# CONFIG_X is not set`, `=n`, or absent from the file.
    NotSet,
    /// Any other value, kept verbatim (strings keep their quotes): `"zstd"`, `0x1000`, `3`.
    Other(String),
}

impl Value {
    fn parse(raw: &str) -> Value {
        match raw {
            "y" => Value::Yes,
            "m" => Value::Module,
            "n" => Value::NotSet,
            other => Value::Other(other.to_string()),
        }
    }

    /// True for `y` and `m`: the feature is available in some form.
    pub fn is_enabled(&self) -> bool {
        matches!(self, Value::Yes | Value::Module)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Yes => f.write_str("y"),
            Value::Module => f.write_str("m"),
            Value::NotSet => f.write_str("is not set"),
            Value::Other(v) => f.write_str(v),
        }
    }
}

/// One meaningful line of a Kconfig file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    number: usize,
    option: String,
    value: Value,
}

/// Parse all option lines of `text`; `path` only names the file in errors.
fn parse_lines(text: &str, path: &Path) -> Result<Vec<Line>, KconfigError> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        let syntax = |message: &str| KconfigError::Syntax {
            path: path.to_path_buf(),
            line: number,
            text: raw.to_string(),
            message: message.to_string(),
        };
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            if let Some(option) = comment.strip_suffix(" is not set") {
                let option = option.trim();
                if option.starts_with("CONFIG_") {
                    if !valid_option(option) {
                        return Err(syntax("invalid option name"));
                    }
                    out.push(Line {
                        number,
                        option: option.to_string(),
                        value: Value::NotSet,
                    });
                }
            }
            continue;
        }
        let Some((option, value)) = line.split_once('=') else {
            return Err(syntax("missing `=`"));
        };
        let option = option.trim();
        let value = value.trim();
        if !valid_option(option) {
            return Err(syntax(
                "option names start with CONFIG_ and use A-Z, a-z, 0-9, _",
            ));
        }
        if value.is_empty() {
            return Err(syntax("empty value"));
        }
        if value.starts_with('"') && (value.len() < 2 || !value.ends_with('"')) {
            return Err(syntax("unterminated string value"));
        }
        out.push(Line {
            number,
            option: option.to_string(),
            value: Value::parse(value),
        });
    }
    Ok(out)
}

fn valid_option(option: &str) -> bool {
    option.len() > "CONFIG_".len()
        && option.starts_with("CONFIG_")
        && option
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn read(path: &Path) -> Result<String, KconfigError> {
    std::fs::read_to_string(path).map_err(|source| KconfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A kernel's full configuration (`/boot/config-KVER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    path: PathBuf,
    options: BTreeMap<String, Value>,
}

impl KernelConfig {
    /// Read and parse a kernel config file.
    pub fn load(path: &Path) -> Result<Self, KconfigError> {
        Self::parse(&read(path)?, path)
    }

    /// Parse config text; `path` names the file in errors and reports. As in Kconfig
    /// itself, when an option appears twice the last line wins.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KconfigError> {
        let options = parse_lines(text, path)?
            .into_iter()
            .map(|l| (l.option, l.value))
            .collect();
        Ok(KernelConfig {
            path: path.to_path_buf(),
            options,
        })
    }

    /// The file this config came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value of `option` (`CONFIG_` prefix included); absent options are `NotSet`.
    pub fn get(&self, option: &str) -> Value {
        self.options.get(option).cloned().unwrap_or(Value::NotSet)
    }

    /// Number of options the file sets or explicitly unsets.
    pub fn len(&self) -> usize {
        self.options.len()
    }

    /// True when the file holds no option at all.
    pub fn is_empty(&self) -> bool {
        self.options.is_empty()
    }
}

/// One line of a requirement fragment: `option` must have value `want`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    pub option: String,
    pub want: Value,
    /// The fragment file, as it was given to [`Fragment::load`] / [`Fragment::parse`].
    pub file: PathBuf,
    /// 1-based line in `file`.
    pub line: usize,
}

/// A requirement fragment (`kernel-configs/common.config`, `kernel-configs/arm64.config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub path: PathBuf,
    pub requirements: Vec<Requirement>,
}

impl Fragment {
    /// Read and parse a fragment file.
    pub fn load(path: &Path) -> Result<Self, KconfigError> {
        Self::parse(&read(path)?, path)
    }

    /// Parse fragment text. Unlike a kernel config, a fragment that names one option
    /// twice is an error: one of the two lines would be silently ignored.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KconfigError> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut requirements = Vec::new();
        for l in parse_lines(text, path)? {
            if let Some(first_line) = seen.insert(l.option.clone(), l.number) {
                return Err(KconfigError::Duplicate {
                    path: path.to_path_buf(),
                    line: l.number,
                    option: l.option,
                    first_line,
                });
            }
            requirements.push(Requirement {
                option: l.option,
                want: l.value,
                file: path.to_path_buf(),
                line: l.number,
            });
        }
        Ok(Fragment {
            path: path.to_path_buf(),
            requirements,
        })
    }
}

/// The merged requirements of several fragments, in the order given: as with
/// `merge_config.sh`, a later fragment overrides an earlier one for the same option
/// (so `arm64.config` can relax or tighten `common.config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Requirements {
    requirements: Vec<Requirement>,
}

impl Requirements {
    /// Merge fragments; the result lists each option once, in first-seen order.
    pub fn merge(fragments: &[Fragment]) -> Self {
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut requirements: Vec<Requirement> = Vec::new();
        for req in fragments.iter().flat_map(|f| f.requirements.iter()) {
            match index.get(&req.option) {
                Some(&i) => requirements[i] = req.clone(),
                None => {
                    index.insert(req.option.clone(), requirements.len());
                    requirements.push(req.clone());
                }
            }
        }
        Requirements { requirements }
    }

    /// Load `common.config` and then `<arch>.config` from `dir` (`kernel-configs/`).
    /// `arch` is the Ballast arch name: `x86_64`, `arm64` or `armv7`.
    pub fn load_for_arch(dir: &Path, arch: &str) -> Result<Self, KconfigError> {
        Self::load_with(dir, arch, &[])
    }

    /// `common.config`, `<arch>.config`, then each `<extra>.config` (e.g. `engine`
    /// for images with a user container engine); later fragments win.
    pub fn load_with(dir: &Path, arch: &str, extra: &[&str]) -> Result<Self, KconfigError> {
        let mut frags = vec![
            Fragment::load(&dir.join("common.config"))?,
            Fragment::load(&dir.join(format!("{arch}.config")))?,
        ];
        for name in extra {
            frags.push(Fragment::load(&dir.join(format!("{name}.config")))?);
        }
        Ok(Self::merge(&frags))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Requirement> {
        self.requirements.iter()
    }

    pub fn len(&self) -> usize {
        self.requirements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn parses_kernel_config_values() {
        let text = "#\n# Automatically generated file; DO NOT EDIT.\n#\nCONFIG_A=y\nCONFIG_B=m\n\
                    # CONFIG_C is not set\nCONFIG_D=\"zstd -19\"\nCONFIG_E=0x1000\nCONFIG_F=n\n";
        let c = KernelConfig::parse(text, &p("config")).unwrap();
        assert_eq!(c.get("CONFIG_A"), Value::Yes);
        assert_eq!(c.get("CONFIG_B"), Value::Module);
        assert_eq!(c.get("CONFIG_C"), Value::NotSet);
        assert_eq!(c.get("CONFIG_D"), Value::Other("\"zstd -19\"".into()));
        assert_eq!(c.get("CONFIG_E"), Value::Other("0x1000".into()));
        assert_eq!(c.get("CONFIG_F"), Value::NotSet);
        assert_eq!(c.get("CONFIG_ABSENT"), Value::NotSet);
        assert_eq!(c.len(), 6);
    }

    #[test]
    fn comment_that_looks_like_an_option_is_ignored_unless_not_set() {
        let c = KernelConfig::parse(
            "# CONFIG_X=y is a comment\n# Linux/x86 6.1 Kernel Configuration\n",
            &p("c"),
        )
        .unwrap();
        assert!(c.is_empty());
    }

    #[test]
    fn kernel_config_last_line_wins() {
        let c = KernelConfig::parse("CONFIG_A=m\nCONFIG_A=y\n", &p("c")).unwrap();
        assert_eq!(c.get("CONFIG_A"), Value::Yes);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        for bad in [
            "CONFIG_A=y\nGARBAGE\n",
            "CONFIG_A=y\nCONFIG_B=\n",
            "CONFIG_A=y\nFOO=y\n",
            "CONFIG_A=y\nCONFIG_B=\"open\n",
            "CONFIG_A=y\nCONFIG_B-C=y\n",
        ] {
            let err = KernelConfig::parse(bad, &p("kernel-configs/x.config")).unwrap_err();
            match &err {
                KconfigError::Syntax { line, .. } => assert_eq!(*line, 2, "{bad:?}"),
                other => panic!("unexpected {other:?}"),
            }
            assert!(
                err.to_string().starts_with("kernel-configs/x.config:2: "),
                "{err}"
            );
        }
    }

    #[test]
    fn fragment_records_file_and_line() {
        let f = Fragment::parse(
            "# namespaces\nCONFIG_NAMESPACES=y\n\n# CONFIG_LEGACY is not set\nCONFIG_BRIDGE=m\n",
            &p("common.config"),
        )
        .unwrap();
        let got: Vec<(&str, &Value, usize)> = f
            .requirements
            .iter()
            .map(|r| (r.option.as_str(), &r.want, r.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("CONFIG_NAMESPACES", &Value::Yes, 2),
                ("CONFIG_LEGACY", &Value::NotSet, 4),
                ("CONFIG_BRIDGE", &Value::Module, 5),
            ]
        );
    }

    #[test]
    fn fragment_duplicate_is_an_error() {
        let err = Fragment::parse("CONFIG_A=y\n\nCONFIG_A=m\n", &p("f.config")).unwrap_err();
        assert!(matches!(
            err,
            KconfigError::Duplicate {
                line: 3,
                first_line: 1,
                ..
            }
        ));
    }

    #[test]
    fn later_fragment_overrides_earlier() {
        let common = Fragment::parse("CONFIG_A=y\nCONFIG_B=y\n", &p("common.config")).unwrap();
        let arch = Fragment::parse("CONFIG_B=m\nCONFIG_C=y\n", &p("arm64.config")).unwrap();
        let r = Requirements::merge(&[common, arch]);
        let got: Vec<(String, Value, String)> = r
            .iter()
            .map(|r| {
                (
                    r.option.clone(),
                    r.want.clone(),
                    r.file.display().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("CONFIG_A".into(), Value::Yes, "common.config".into()),
                ("CONFIG_B".into(), Value::Module, "arm64.config".into()),
                ("CONFIG_C".into(), Value::Yes, "arm64.config".into()),
            ]
        );
    }
}
