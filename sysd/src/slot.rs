//! What sysd needs to know about the boot: the booted slot (kernel command line, parsed
//! by ballast-device), both slots' state and marking the booted slot good. The slot
//! formats themselves belong to ballast-slot; this module only picks the right backend.
//!
//! Which firmware booted the machine decides whose state is the truth on the x86_64
//! disk, which carries both systemd-boot's (UEFI) and GRUB's (BIOS): the kernel
//! creates [`EFI_DIR`] only when UEFI started it.

use std::path::{Path, PathBuf};

use ballast_device::Cmdline;
use ballast_slot::{BootPartition, SlotError, SlotId, SlotStatus};

/// Present exactly when UEFI firmware booted the kernel.
pub const EFI_DIR: &str = "/sys/firmware/efi";

/// Why the booted slot or the boot partition's state is unknown or unchanged.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("kernel command line: ballast.slot={0} is not a slot (expected a or b)")]
    BadSlot(String),
    #[error("{}: no ballast.slot= on the kernel command line; the bootloader entry must pass it (the slot cannot be marked good)", .0.display())]
    NoSlot(PathBuf),
    #[error("{} is not a mount point: the boot partition is not mounted (init mounts it before starting sysd); slot state cannot be read or marked good", .0.display())]
    NotMounted(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Reading the slot state (the slot crate's error names the file).
    #[error(transparent)]
    State(#[from] SlotError),
    /// Changing the slot state: what was being done, and the slot crate's error.
    #[error("cannot {action}: {source}")]
    Change { action: String, source: SlotError },
}

fn change(action: impl FnOnce() -> String) -> impl FnOnce(SlotError) -> BootError {
    move |source| BootError::Change {
        action: action(),
        source,
    }
}

/// The booted slot, from `ballast.slot=` of the command line read from `path`.
pub fn booted_slot(cmdline: &Cmdline, path: &Path) -> Result<SlotId, BootError> {
    let value = cmdline
        .slot()
        .ok_or_else(|| BootError::NoSlot(path.to_path_buf()))?;
    SlotId::parse(value).ok_or_else(|| BootError::BadSlot(value.to_string()))
}

/// The boot partition's slot state (ballast-slot's verbs), with sysd's context on
/// every error.
pub struct Boot(BootPartition);

impl Boot {
    /// `check_mounted`: on the device, refuse a `/boot` that is just a directory of the
    /// root file system (init did not mount the boot partition), and read which
    /// firmware booted it ([`EFI_DIR`]); elsewhere (tests, `--root`) assume UEFI.
    pub fn open(dir: &Path, check_mounted: bool) -> Result<Boot, BootError> {
        if check_mounted {
            use std::os::unix::fs::MetadataExt;
            let parent = dir.parent().unwrap_or(Path::new("/"));
            match (std::fs::metadata(dir), std::fs::metadata(parent)) {
                (Ok(b), Ok(p)) if b.dev() == p.dev() => {
                    return Err(BootError::NotMounted(dir.to_path_buf()))
                }
                (Err(source), _) => {
                    return Err(BootError::Read {
                        path: dir.to_path_buf(),
                        source,
                    })
                }
                _ => {}
            }
        }
        let bios = check_mounted && !Path::new(EFI_DIR).exists();
        Ok(Boot(BootPartition::open_booted(dir, bios)))
    }

    /// The slot verbs themselves (install order: see ballast_slot::install).
    pub fn partition(&self) -> &BootPartition {
        &self.0
    }

    pub fn status(&self) -> Result<Vec<SlotStatus>, BootError> {
        Ok(self.0.status()?)
    }

    /// Boot `slot` next (it must be good or trying).
    pub fn set_default(&self, slot: SlotId) -> Result<(), BootError> {
        self.0
            .set_default(slot)
            .map_err(change(|| format!("make slot {slot} the default")))
    }

    pub fn mark_good(&self, slot: SlotId) -> Result<(), BootError> {
        self.0
            .mark_good(slot)
            .map_err(change(|| format!("mark slot {slot} good")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_slot() {
        let slot = |text: &str| booted_slot(&Cmdline::parse(text), Path::new("/proc/cmdline"));
        assert_eq!(
            slot("console=ttyS0 ballast.slot=b quiet").unwrap(),
            SlotId::B
        );
        let e = slot("console=ttyS0").unwrap_err().to_string();
        assert!(e.starts_with("/proc/cmdline: no ballast.slot="), "{e}");
        let e = slot("ballast.slot=c").unwrap_err().to_string();
        assert_eq!(
            e,
            "kernel command line: ballast.slot=c is not a slot (expected a or b)"
        );
    }

    #[test]
    fn uboot_state_is_marked_good() {
        let dir = tempfile::tempdir().unwrap();
        let bd = ballast_slot::uboot::BootDir::new(dir.path());
        let mut st = ballast_slot::uboot::State::new(SlotId::A);
        st.install(SlotId::B, 3);
        st.set_default(SlotId::B);
        bd.initialize(&st).unwrap();
        let boot = Boot::open(dir.path(), false).unwrap();
        assert!(matches!(boot.partition(), BootPartition::UBoot(_)));
        let before = boot.status().unwrap();
        let b = before.iter().find(|s| s.slot == SlotId::B).unwrap();
        assert_eq!(b.health.as_str(), "trying");
        boot.mark_good(SlotId::B).unwrap();
        let after = boot.status().unwrap();
        let b = after.iter().find(|s| s.slot == SlotId::B).unwrap();
        assert_eq!(b.health.as_str(), "good");
    }

    #[test]
    fn unmounted_boot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("boot")).unwrap();
        let err = Boot::open(&dir.path().join("boot"), true).err().unwrap();
        assert!(err.to_string().contains("not mounted"), "{err}");
    }
}
