//! `qemu/NAME.toml`: how to launch QEMU so that it behaves like a board's
//! hardware and firmware.

use crate::error::{read, SpecError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuProfile {
    /// `qemu-system-*` binary name.
    pub binary: String,
    pub machine: String,
    pub cpu: String,
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    #[serde(default = "default_smp")]
    pub smp: u32,
    /// Whether KVM may be tried (only when the host has the same arch; a probe
    /// boot must succeed first, see the builder's `qemu` module).
    #[serde(default)]
    pub kvm: bool,
    /// Network device model for user-mode networking.
    pub net_device: String,
    /// Anything else the machine needs, verbatim.
    #[serde(default)]
    pub extra_args: Vec<String>,
    #[serde(skip)]
    pub path: PathBuf,
}

fn default_memory() -> u32 {
    1024
}

fn default_smp() -> u32 {
    1
}

impl QemuProfile {
    pub fn find(dir: &Path, name_or_path: &str) -> Result<QemuProfile, SpecError> {
        let path = crate::locate(dir, "QEMU profile", name_or_path)?;
        let text = read(&path)?;
        let mut p: QemuProfile =
            toml::from_str(&text).map_err(|e| SpecError::from_toml(&path, &text, &e))?;
        p.path = path;
        Ok(p)
    }
}
