//! `images/NAME.toml`: what goes into an image, independent of the board.

use crate::board::find_key;
use crate::error::{read, SpecError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub name: String,
    pub description: String,
    /// Semantic version of the OS image (`--version` overrides it).
    pub version: semver::Version,
    #[serde(default)]
    pub kernel: ImageKernel,
    #[serde(default)]
    pub debian: DebianSpec,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageKernel {
    /// Extra kernel command-line arguments for every board.
    #[serde(default)]
    pub cmdline: Vec<String>,
}

/// Which part of the Debian archive the image is built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSpec {
    #[serde(default = "default_suites")]
    pub suites: Vec<String>,
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// Packages never installed, even when something depends on them.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Exact versions, `name = "version"`.
    #[serde(default)]
    pub pins: BTreeMap<String, String>,
}

impl Default for DebianSpec {
    fn default() -> Self {
        DebianSpec {
            suites: default_suites(),
            components: default_components(),
            exclude: Vec::new(),
            pins: BTreeMap::new(),
        }
    }
}

fn default_suites() -> Vec<String> {
    ["bookworm", "bookworm-updates", "bookworm-security"]
        .map(String::from)
        .to_vec()
}

fn default_components() -> Vec<String> {
    vec!["main".to_owned()]
}

impl Image {
    pub fn load(path: &Path) -> Result<Image, SpecError> {
        let text = read(path)?;
        Image::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Image, SpecError> {
        let mut image: Image =
            toml::from_str(text).map_err(|e| SpecError::from_toml(path, text, &e))?;
        image.path = path.to_path_buf();
        if image.debian.suites.is_empty() {
            return Err(SpecError::at(
                path,
                text,
                find_key(text, "suites"),
                Some("debian.suites".into()),
                "needs at least one suite, e.g. [\"bookworm\"]",
            ));
        }
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_version() {
        let img = Image::parse(
            Path::new("images/default.toml"),
            "name = \"default\"\ndescription = \"d\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        assert_eq!(img.version, semver::Version::new(0, 1, 0));
        assert_eq!(img.debian.suites.len(), 3);
    }

    #[test]
    fn bad_version_points_at_it() {
        let err = Image::parse(
            Path::new("images/default.toml"),
            "name = \"default\"\ndescription = \"d\"\nversion = \"one\"\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("images/default.toml:3:11: version: "),
            "{msg}"
        );
    }
}
