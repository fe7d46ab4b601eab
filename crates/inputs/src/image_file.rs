//! `images/NAME.toml`: what goes into an image, independent of the board.

use crate::board::find_key;
use crate::error::{read, InputError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFile {
    pub name: String,
    pub description: String,
    /// Semantic version of the OS image (`--version` overrides it).
    pub version: semver::Version,
    #[serde(default)]
    pub kernel: ImageKernel,
    #[serde(default)]
    pub debian: ImageDebian,
    #[serde(default)]
    pub disk: ImageDisk,
    /// System containers, by directory name under `system/`, in the image.
    #[serde(default = "default_system")]
    pub system: Vec<String>,
    /// The user container engine, run by sysd as a privileged system container
    /// beside the image's `system` ones.
    #[serde(default)]
    pub engine: Engine,
    #[serde(skip)]
    pub path: PathBuf,
}

/// The user container engine an image carries (`engine = "..."`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Docker Engine from Debian (`docker.io`: dockerd, containerd, runc, the CLI).
    #[default]
    Docker,
    /// containerd alone, with the CLI Debian ships with it (`ctr`).
    Containerd,
    /// No engine: the minimal image.
    None,
}

impl Engine {
    /// The system container (`system/NAME/`) that runs this engine, if any.
    pub fn system_container(self) -> Option<&'static str> {
        match self {
            Engine::Docker => Some("docker"),
            Engine::Containerd => Some("containerd"),
            Engine::None => None,
        }
    }
}

/// Partition sizes of the disk image, in MiB. The state partition is grown
/// to fill the disk on first boot, so its size here is only the minimum.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDisk {
    /// Boot partition (FAT32, at least 64): bootloader, both slots' kernels
    /// and initramfs, boot entries.
    #[serde(default = "default_boot_mib")]
    pub boot_mib: u64,
    /// Each root slot: room for the read-only root and its hash tree, and
    /// for the roots of future updates.
    #[serde(default = "default_root_mib")]
    pub root_mib: u64,
    /// State partition as built (ext4).
    #[serde(default = "default_state_mib")]
    pub state_mib: u64,
    /// Tries a newly written slot gets before the bootloader gives up on it.
    #[serde(default = "default_tries")]
    pub tries: u32,
}

impl Default for ImageDisk {
    fn default() -> Self {
        ImageDisk {
            boot_mib: default_boot_mib(),
            root_mib: default_root_mib(),
            state_mib: default_state_mib(),
            tries: default_tries(),
        }
    }
}

fn default_system() -> Vec<String> {
    ["network", "time", "ssh"].map(String::from).to_vec()
}

fn default_boot_mib() -> u64 {
    160
}
fn default_root_mib() -> u64 {
    256
}
fn default_state_mib() -> u64 {
    64
}
fn default_tries() -> u32 {
    3
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageKernel {
    /// Extra kernel command-line arguments for every board.
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// Kernel modules stage 1 loads on every board besides the board's own
    /// (module names as `modinfo` spells them, e.g. `mac80211_hwsim`).
    #[serde(default)]
    pub modules: Vec<String>,
}

/// Which part of the Debian archive the image is built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDebian {
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
    /// Debian packages added to the system containers' userland for this image,
    /// beside each container's `build.toml` (e.g. `wpasupplicant` for Wi-Fi on a
    /// board that does not list it).
    #[serde(default)]
    pub packages: Vec<String>,
}

impl Default for ImageDebian {
    fn default() -> Self {
        ImageDebian {
            suites: default_suites(),
            components: default_components(),
            exclude: Vec::new(),
            pins: BTreeMap::new(),
            packages: Vec::new(),
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

impl ImageFile {
    pub fn load(path: &Path) -> Result<ImageFile, InputError> {
        let text = read(path)?;
        ImageFile::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<ImageFile, InputError> {
        let mut image: ImageFile =
            toml::from_str(text).map_err(|e| InputError::from_toml(path, text, &e))?;
        image.path = path.to_path_buf();
        if image.debian.suites.is_empty() {
            return Err(InputError::at(
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
        let img = ImageFile::parse(
            Path::new("images/default.toml"),
            "name = \"default\"\ndescription = \"d\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        assert_eq!(img.version, semver::Version::new(0, 1, 0));
        assert_eq!(img.debian.suites.len(), 3);
    }

    #[test]
    fn engine_defaults_to_docker_and_takes_none() {
        let head = "name = \"m\"\ndescription = \"d\"\nversion = \"0.1.0\"\n";
        let img = ImageFile::parse(Path::new("images/x.toml"), head).unwrap();
        assert_eq!(img.engine, Engine::Docker);
        assert_eq!(img.engine.system_container(), Some("docker"));
        let img = ImageFile::parse(
            Path::new("images/x.toml"),
            &format!("{head}engine = \"none\"\n"),
        )
        .unwrap();
        assert_eq!(img.engine, Engine::None);
        assert_eq!(img.engine.system_container(), None);
    }

    #[test]
    fn unknown_engine_names_file_line_and_choices() {
        let text = "name = \"m\"\ndescription = \"d\"\nversion = \"0.1.0\"\nengine = \"dokcer\"\n";
        let msg = ImageFile::parse(Path::new("images/default.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("images/default.toml:4:"), "{msg}");
        assert!(msg.contains("engine"), "{msg}");
        assert!(msg.contains("dokcer"), "{msg}");
        for choice in ["docker", "containerd", "none"] {
            assert!(msg.contains(choice), "{msg}");
        }
    }

    #[test]
    fn bad_version_points_at_it() {
        let err = ImageFile::parse(
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
