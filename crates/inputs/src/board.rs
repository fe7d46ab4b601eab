//! `boards/NAME.toml`: one file per board. What the hardware is (arch), which
//! Debian kernel runs on it, how its firmware boots, what its console is, and
//! which QEMU profile emulates it.

use crate::error::{read, InputError};
use crate::Arch;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// Must equal the file name without `.toml`.
    pub name: String,
    pub description: String,
    pub arch: Arch,
    pub kernel: BoardKernel,
    pub boot: BoardBoot,
    /// Name of the launch profile in `qemu/` that emulates this board.
    pub qemu: Option<String>,
    /// Where the board file was read from (not part of the file).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardKernel {
    /// Debian package providing the kernel, usually a metapackage such as
    /// `linux-image-arm64`; the builder follows it to the versioned image.
    pub package: String,
    /// The serial console device, e.g. `ttyAMA0`; it becomes `console=` on the
    /// kernel command line.
    pub console: String,
    /// Extra kernel command-line arguments every image on this board needs.
    #[serde(default)]
    pub cmdline: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardBoot {
    pub firmware: BootFirmware,
    #[serde(default = "default_table")]
    pub partition_table: PartitionTable,
}

fn default_table() -> PartitionTable {
    PartitionTable::Gpt
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootFirmware {
    /// UEFI firmware loading systemd-boot (x86_64, arm64).
    #[serde(rename = "uefi")]
    Uefi,
    /// U-Boot running Ballast's `boot.scr` (ARMv7 and Raspberry Pi class boards).
    #[serde(rename = "u-boot")]
    UBoot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionTable {
    #[serde(rename = "gpt")]
    Gpt,
    #[serde(rename = "mbr")]
    Mbr,
}

impl Board {
    /// Load `boards/NAME.toml` (or a path) from `boards_dir`.
    pub fn find(boards_dir: &Path, name_or_path: &str) -> Result<Board, InputError> {
        let path = crate::locate(boards_dir, "board", name_or_path)?;
        Board::load(&path)
    }

    pub fn load(path: &Path) -> Result<Board, InputError> {
        let text = read(path)?;
        Board::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Board, InputError> {
        let mut board: Board =
            toml::from_str(text).map_err(|e| InputError::from_toml(path, text, &e))?;
        board.path = path.to_path_buf();
        board.validate(text)?;
        Ok(board)
    }

    fn validate(&self, text: &str) -> Result<(), InputError> {
        let at = |key: &str, field: &str, msg: String| {
            let span = find_key(text, key);
            InputError::at(&self.path, text, span, Some(field.to_owned()), msg)
        };
        if let Some(stem) = self.path.file_stem().and_then(|s| s.to_str()) {
            if stem != self.name {
                return Err(at(
                    "name",
                    "name",
                    format!(
                        "{:?} does not match the file name; rename one so both say {stem:?}",
                        self.name
                    ),
                ));
            }
        }
        if !self.kernel.package.starts_with("linux-image-") {
            return Err(at(
                "package",
                "kernel.package",
                format!(
                    "{:?} is not a Debian kernel image package (expected linux-image-*)",
                    self.kernel.package
                ),
            ));
        }
        if self.kernel.console.is_empty() || self.kernel.console.contains(char::is_whitespace) {
            return Err(at(
                "console",
                "kernel.console",
                "must be a device name such as ttyS0 or ttyAMA0".into(),
            ));
        }
        Ok(())
    }

    /// The kernel command line every boot of this board gets, before the
    /// image's and the caller's additions.
    pub fn base_cmdline(&self) -> Vec<String> {
        let mut args = vec![format!("console={}", self.kernel.console)];
        args.extend(self.kernel.cmdline.iter().cloned());
        args
    }
}

/// Byte span of the first `key =` assignment in `text`, for error positions.
pub(crate) fn find_key(text: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                let start = offset + (line.len() - trimmed.len());
                return Some(start..start + key.len());
            }
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "qemu-arm64"
description = "QEMU virt, arm64"
arch = "arm64"
qemu = "qemu-arm64"

[kernel]
package = "linux-image-arm64"
console = "ttyAMA0"

[boot]
firmware = "uefi"
"#;

    fn parse(text: &str) -> Result<Board, InputError> {
        Board::parse(Path::new("boards/qemu-arm64.toml"), text)
    }

    #[test]
    fn parses_a_good_board() {
        let b = parse(GOOD).unwrap();
        assert_eq!(b.arch, Arch::Arm64);
        assert_eq!(b.boot.partition_table, PartitionTable::Gpt);
        assert_eq!(b.base_cmdline(), vec!["console=ttyAMA0".to_owned()]);
    }

    #[test]
    fn unknown_arch_names_file_line_field_and_choices() {
        let err = parse(&GOOD.replace("\"arm64\"\nqemu", "\"arm65\"\nqemu")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("boards/qemu-arm64.toml:4:8: arch: "),
            "{msg}"
        );
        assert!(msg.contains("arm65") && msg.contains("x86_64"), "{msg}");
    }

    #[test]
    fn unknown_field_is_an_error_not_ignored() {
        let err = parse(&GOOD.replace("[boot]", "[boot]\nfirmwre = \"x\"")).unwrap_err();
        let loc = err.located().unwrap();
        assert_eq!(loc.line, 12);
        assert_eq!(loc.field.as_deref(), Some("boot.firmwre"));
        assert!(loc.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn name_must_match_file() {
        let err = parse(&GOOD.replace("name = \"qemu-arm64\"", "name = \"other\"")).unwrap_err();
        assert!(err.to_string().contains(":2:1: name: "), "{err}");
    }

    #[test]
    fn kernel_package_must_be_an_image() {
        let err = parse(&GOOD.replace("linux-image-arm64", "linux-headers-arm64")).unwrap_err();
        assert!(err.to_string().contains("kernel.package"), "{err}");
    }

    #[test]
    fn missing_section_is_named() {
        let text = GOOD.replace("[boot]\nfirmware = \"uefi\"\n", "");
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("missing field `boot`"), "{err}");
    }
}
