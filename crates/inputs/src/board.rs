//! `boards/NAME.toml`: one file per board. What the hardware is (arch), which
//! Debian kernel runs on it, how its firmware boots, what its console is, and
//! which QEMU profile emulates it.

use crate::error::{read, InputError};
use crate::Arch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// Debian archive components this board needs beside the image's, e.g.
    /// `non-free-firmware` for the Raspberry Pi's GPU firmware.
    #[serde(default)]
    pub debian: BoardDebian,
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
    /// The screen console (`tty1`): named on the command line before the
    /// serial one, so both get the kernel's messages and `/dev/console` stays
    /// the serial port.
    #[serde(default)]
    pub screen: Option<String>,
    /// Device trees from the kernel package (paths below
    /// `usr/lib/linux-image-RELEASE/`), put on the boot partition under
    /// `dtbs/`, where the boot script loads U-Boot's `${fdtfile}` from.
    #[serde(default)]
    pub dtbs: Vec<String>,
    /// Modules stage 1 loads on this board besides the ones every board needs
    /// (`kernel-configs/initramfs-modules.toml`): its SD/USB host and network
    /// drivers when Debian builds them as modules.
    #[serde(default)]
    pub modules: Vec<String>,
    /// Firmware files those modules load, from Debian packages: package name
    /// -> paths below its `lib/firmware/` (symlinks followed). They go into
    /// the initramfs, where the kernel finds them while stage 1 loads the
    /// drivers (the Pi's Wi-Fi from `firmware-brcm80211`).
    #[serde(default)]
    pub firmware: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardDebian {
    /// Added to the image's `debian.components`.
    #[serde(default)]
    pub components: Vec<String>,
    /// Debian packages added to the system containers' userland on this board
    /// only, beside each container's `build.toml` (the Pi's `wpasupplicant`).
    #[serde(default)]
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardBoot {
    pub firmware: BootFirmware,
    #[serde(default = "default_table")]
    pub partition_table: PartitionTable,
    /// Files from Debian packages copied to the boot partition: package name
    /// -> { destination on the boot partition = path inside the package }.
    /// The board's own U-Boot (`u-boot-rpi`, `u-boot-omap`) and the Pi's GPU
    /// firmware (`raspi-firmware`). A board with such files boots the U-Boot
    /// it brings, which finds `boot.scr` by distro boot.
    #[serde(default)]
    pub files: BTreeMap<String, BTreeMap<String, String>>,
    /// Raspberry Pi: the lines of the `config.txt` the builder writes.
    #[serde(default)]
    pub config_txt: Vec<String>,
    /// U-Boot variables (`name=value`) the boot script sets before it loads
    /// anything: load addresses where the defaults leave too little room.
    #[serde(default)]
    pub u_boot_env: Vec<String>,
    /// Kernel arguments for one model of a board image that serves several,
    /// keyed by the device tree file U-Boot picks for it (`${fdtfile}`): the
    /// boot script adds them after the slot's command line. The 32-bit Pi
    /// image's serial console is `ttyS1` on the Pi 3 and `ttyAMA0` on the
    /// Pi 2, and the last `console=` the kernel finds is `/dev/console`.
    #[serde(default)]
    pub model_cmdline: BTreeMap<String, Vec<String>>,
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
        for (package, files) in &self.boot.files {
            for (dest, src) in files {
                let bad = |p: &str| {
                    p.is_empty()
                        || p.starts_with('/')
                        || p.split('/').any(|c| c == ".." || c.is_empty())
                };
                if bad(dest) || bad(src) {
                    return Err(at(
                        dest,
                        &format!("boot.files.{package}"),
                        format!(
                            "{dest:?} = {src:?}: both must be relative paths without `..` \
                             (destination on the boot partition = path inside the package)"
                        ),
                    ));
                }
            }
        }
        if let Some(bad) = self.boot.u_boot_env.iter().find(|v| {
            v.split_once('=').is_none_or(|(k, _)| {
                k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        }) {
            return Err(at(
                "u_boot_env",
                "boot.u_boot_env",
                format!("{bad:?} is not `name=value` with a U-Boot variable name"),
            ));
        }
        // The script quotes them: nothing U-Boot's shell would read as its own.
        let unsafe_char = |c: char| matches!(c, '"' | '$' | ';' | '\\' | '\n' | '\r');
        for (fdtfile, args) in &self.boot.model_cmdline {
            if let Some(bad) = std::iter::once(fdtfile)
                .chain(args)
                .find(|a| a.is_empty() || a.contains(unsafe_char) || a.contains(' '))
            {
                return Err(at(
                    "model_cmdline",
                    "boot.model_cmdline",
                    format!("{bad:?}: device tree names and arguments are single words without quotes, `$`, `;` or `\\`"),
                ));
            }
        }
        Ok(())
    }

    /// The kernel command line every boot of this board gets, before the
    /// image's and the caller's additions.
    pub fn base_cmdline(&self) -> Vec<String> {
        let mut args: Vec<String> = self
            .kernel
            .screen
            .iter()
            .map(|s| format!("console={s}"))
            .collect();
        args.push(format!("console={}", self.kernel.console));
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
    fn screen_console_comes_before_the_serial_one() {
        let b = parse(&GOOD.replace(
            "console = \"ttyAMA0\"",
            "console = \"ttyS1\"\nscreen = \"tty1\"",
        ))
        .unwrap();
        assert_eq!(b.base_cmdline(), vec!["console=tty1", "console=ttyS1"]);
    }

    #[test]
    fn boot_files_must_stay_inside_the_partition_and_package() {
        let text = GOOD.replace(
            "[boot]\nfirmware = \"uefi\"\n",
            "[boot]\nfirmware = \"u-boot\"\n[boot.files.u-boot-rpi]\n\"../x\" = \"usr/lib/u-boot/rpi_3/u-boot.bin\"\n",
        );
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("boot.files.u-boot-rpi"), "{err}");
        let ok = text.replace("\"../x\"", "\"u-boot.bin\"");
        let b = parse(&ok).unwrap();
        assert_eq!(
            b.boot.files["u-boot-rpi"]["u-boot.bin"],
            "usr/lib/u-boot/rpi_3/u-boot.bin"
        );
    }

    #[test]
    fn u_boot_env_must_be_name_value() {
        let text = GOOD.replace("[boot]\n", "[boot]\nu_boot_env = [\"kernel addr\"]\n");
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("boot.u_boot_env"), "{err}");
    }

    #[test]
    fn model_cmdline_must_be_plain_words() {
        let bad = "\n[boot.model_cmdline]\n\"x.dtb\" = [\"console=${oops}\"]\n";
        let err = parse(&format!("{GOOD}{bad}")).unwrap_err();
        assert!(err.to_string().contains("boot.model_cmdline"), "{err}");
        let good = "\n[boot.model_cmdline]\n\"x.dtb\" = [\"console=ttyAMA0,115200\"]\n";
        parse(&format!("{GOOD}{good}")).unwrap();
    }

    #[test]
    fn every_board_in_the_project_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../boards");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            Board::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn missing_section_is_named() {
        let text = GOOD.replace("[boot]\nfirmware = \"uefi\"\n", "");
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("missing field `boot`"), "{err}");
    }
}
