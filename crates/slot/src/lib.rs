//! A/B slot state for Ballast: the one crate that reads and writes which root slot the
//! bootloader boots, how many tries a new slot has left, and whether a slot is good.
//!
//! Two bootloader families, one meaning:
//!
//! * [`bls`]: UEFI boards boot systemd-boot, which reads Boot Loader Specification
//!   (Type #1) entries from `loader/entries/` and counts tries in the entry's file name
//!   ("Automatic Boot Assessment").
//! * [`uboot`]: U-Boot boards run a `boot.scr` generated here, which keeps the same
//!   state in a small two-copy environment file on the boot partition and counts down
//!   itself.
//! * [`grub`]: the x86_64 disk on legacy BIOS machines: GRUB reads the same state from
//!   two environment blocks on the ESP beside the BLS entries, and counts down in its
//!   script; [`install::BootPartition::Hybrid`] keeps both in step.
//!
//! # Shared semantics (both bootloaders)
//!
//! * A slot is **good** (booted fine and was blessed by userspace), **trying** (tries
//!   left > 0, not yet blessed) or **bad** (0 tries left and not blessed).
//! * The bootloader boots the *default* slot when it is good or trying; booting a trying
//!   slot decrements its tries *before* the kernel starts (systemd-boot renames the
//!   entry, the U-Boot script writes the other state copy).
//! * A bad default slot is skipped for the other slot when that one is good or trying.
//! * When both are bad, the default is booted anyway: never brick.
//! * Userspace (sysd, after the health check) marks the booted slot good; an update
//!   installs the inactive slot with N tries and makes it the default.
//!
//! Note the consequence, shared with systemd: while a slot runs its *last* try, its
//! tries-left counter already reads 0, so it shows as [`Health::Bad`] until it is
//! marked good.
//!
//! # What this crate must never do
//!
//! Touch the active slot's files other than by the atomic renames/rewrites documented on
//! each verb; leave a state in which no copy or entry is valid.
//!
//! # For whoever packs the boot partition into FAT
//!
//! Give every file a valid time stamp. fatfs without its `chrono` feature stamps DOS
//! date 0 (month 0, day 0); EDK2's FAT driver (OVMF, most UEFI firmware) then refuses
//! systemd-boot's rename of the entry, boot counting silently stops and a broken update
//! is never rolled back (seen in `tests/systemd_boot_qemu.rs`). Use a fixed time
//! provider (e.g. from `SOURCE_DATE_EPOCH`, clamped to 1980..2107).
//!
//! Pure Rust and std only, so it builds for every device target.

use std::fmt;
use std::path::{Path, PathBuf};

pub mod bls;
pub mod grub;
pub mod install;
pub mod uboot;
mod verscmp;

pub use install::{BootPartition, Staged};
pub use verscmp::strverscmp_improved;

/// The fixed file names on the boot partition (and, until they move to
/// `ballast-device`, the partition numbers), shared by the builder, init and this crate.
pub mod boot_files {
    /// systemd-boot as the removable-media loader, x86_64.
    pub const EFI_BOOT_X64: &str = "EFI/BOOT/BOOTX64.EFI";
    /// systemd-boot as the removable-media loader, arm64.
    pub const EFI_BOOT_AA64: &str = "EFI/BOOT/BOOTAA64.EFI";
    /// systemd-boot's configuration.
    pub const LOADER_CONF: &str = "loader/loader.conf";
    /// Directory of BLS Type #1 entries.
    pub const ENTRIES_DIR: &str = "loader/entries";
    /// Prefix of Ballast's entry file names (`ballast-a.conf`, `ballast-b+3-0.conf`).
    pub const ENTRY_PREFIX: &str = "ballast-";
    /// Directory holding the per-slot directories (`ballast/a/`, `ballast/b/`).
    pub const SLOT_DIR: &str = "ballast";
    /// Kernel file name inside a slot directory.
    pub const KERNEL: &str = "vmlinuz";
    /// Initrd file name inside a slot directory.
    pub const INITRD: &str = "initrd.img";
    /// U-Boot: the boot script in the partition root.
    pub const BOOT_SCR: &str = "boot.scr";
    /// U-Boot: per-slot environment (`ballast_args=`, `ballast_version=`) inside a slot directory.
    pub const BOOT_ENV: &str = "boot.env";
    /// U-Boot: the two copies of the slot state.
    pub const STATE_COPIES: [&str; 2] = ["ballast/state.0.env", "ballast/state.1.env"];
    /// Partition numbers (1-based) on the disk.
    pub const PART_BOOT: u32 = 1;
    /// Root A partition number.
    pub const PART_ROOT_A: u32 = 2;
    /// Root B partition number.
    pub const PART_ROOT_B: u32 = 3;
    /// State partition number.
    pub const PART_STATE: u32 = 4;
    /// Tries a freshly installed slot gets unless told otherwise.
    pub const DEFAULT_TRIES: u32 = 3;

    /// `ballast/<slot>/vmlinuz`
    pub fn kernel(slot: super::SlotId) -> String {
        format!("{SLOT_DIR}/{}/{KERNEL}", slot.as_str())
    }
    /// `ballast/<slot>/initrd.img`
    pub fn initrd(slot: super::SlotId) -> String {
        format!("{SLOT_DIR}/{}/{INITRD}", slot.as_str())
    }
    /// `ballast/<slot>/boot.env`
    pub fn boot_env(slot: super::SlotId) -> String {
        format!("{SLOT_DIR}/{}/{BOOT_ENV}", slot.as_str())
    }
}

/// The most tries a slot can be given on the boards whose bootloader counts
/// in a script (GRUB on BIOS, U-Boot): those scripts have no arithmetic
/// (GRUB's has none; the BeagleBone's U-Boot lacks `setexpr`), so they count
/// down through a table this long.
pub const MAX_TRIES: u32 = 16;

/// Refuse a state with more tries than the `bootloader`'s script counts down
/// ([`MAX_TRIES`]).
fn check_countable(state: &uboot::State, bootloader: &str) -> Result<(), SlotError> {
    for slot in SlotId::ALL {
        let tries = state.slot(slot).tries;
        if tries > MAX_TRIES {
            return Err(SlotError::Invalid {
                what: format!("slot {slot} tries"),
                reason: format!(
                    "{tries} is more than the {bootloader} boot script counts down ({MAX_TRIES}); lower `tries` in the image file"
                ),
            });
        }
    }
    Ok(())
}

/// One of the two root slots.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SlotId {
    A,
    B,
}

impl SlotId {
    /// Both slots, in order.
    pub const ALL: [SlotId; 2] = [SlotId::A, SlotId::B];

    /// `"a"` or `"b"`: the id in file names, the kernel command line and the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotId::A => "a",
            SlotId::B => "b",
        }
    }

    /// The other slot.
    pub fn other(self) -> SlotId {
        match self {
            SlotId::A => SlotId::B,
            SlotId::B => SlotId::A,
        }
    }

    /// Partition number of this slot's root (2 or 3).
    pub fn partition_index(self) -> u32 {
        match self {
            SlotId::A => boot_files::PART_ROOT_A,
            SlotId::B => boot_files::PART_ROOT_B,
        }
    }

    /// GPT partition label of this slot's root (`root-a`, `root-b`).
    pub fn label(self) -> &'static str {
        match self {
            SlotId::A => "root-a",
            SlotId::B => "root-b",
        }
    }

    /// Parse `"a"`/`"b"` (case-insensitive).
    pub fn parse(s: &str) -> Option<SlotId> {
        match s {
            "a" | "A" => Some(SlotId::A),
            "b" | "B" => Some(SlotId::B),
            _ => None,
        }
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SlotId {
    type Err = SlotError;
    fn from_str(s: &str) -> Result<Self, SlotError> {
        SlotId::parse(s).ok_or_else(|| SlotError::BadSlot {
            value: s.to_string(),
        })
    }
}

/// Health of a slot as the bootloader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum Health {
    /// Booted and blessed by userspace; booted without counting.
    Good,
    /// Not yet blessed, with tries left.
    Trying { tries_left: u32, tries_done: u32 },
    /// No tries left and never blessed: skipped when the other slot is usable.
    Bad,
}

impl Health {
    /// Good or trying: the bootloader will boot it when it is the default.
    pub fn is_bootable(self) -> bool {
        !matches!(self, Health::Bad)
    }
    /// `good`, `trying` or `bad`, as `osctl status` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Good => "good",
            Health::Trying { .. } => "trying",
            Health::Bad => "bad",
        }
    }
}

/// One slot's state, as `osctl status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlotStatus {
    pub slot: SlotId,
    /// Version installed in the slot, when the boot partition names one.
    pub version: Option<String>,
    pub health: Health,
    /// This slot is the one the bootloader boots next.
    pub is_default: bool,
}

/// Everything that can go wrong reading or writing slot state.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {reason}")]
    Parse {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{file}: required field `{field}` is missing; {fix}")]
    MissingField {
        file: String,
        field: &'static str,
        fix: &'static str,
    },
    #[error("`{value}` is not a slot id (expected `a` or `b`)")]
    BadSlot { value: String },
    #[error("no boot entry for slot {slot} in {}: install the slot first (write_entry)", dir.display())]
    NoEntry { slot: SlotId, dir: PathBuf },
    #[error(
        "no valid slot state in {}: neither {} nor {} is complete (missing or no `end=ballast` line); \
         reinstall the boot partition or write a state with BootDir::initialize",
        dir.display(), boot_files::STATE_COPIES[0], boot_files::STATE_COPIES[1]
    )]
    NoValidState { dir: PathBuf },
    #[error("slot {slot} has no boot entry: nothing to roll back to")]
    NoRollbackTarget { slot: SlotId },
    #[error("slot {slot} is {state} ({version}): only a good slot can be rolled back to")]
    RollbackTargetNotGood {
        slot: SlotId,
        state: &'static str,
        version: String,
    },
    #[error("invalid value for {what}: {reason}")]
    Invalid { what: String, reason: String },
}

pub(crate) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> SlotError {
    let path = path.to_path_buf();
    move |source| SlotError::Io {
        action,
        path,
        source,
    }
}

/// Crash-safe replace on the boot partition (vfat): ballast-device's one atomic write,
/// which also fsyncs the renamed file (see [`ballast_device::atomic`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SlotError> {
    Ok(ballast_device::write_atomic_vfat(path, bytes)?)
}

/// Rename within a directory of the boot partition and make it durable.
pub(crate) fn rename_synced(from: &Path, to: &Path) -> Result<(), SlotError> {
    Ok(ballast_device::atomic::rename_vfat(from, to)?)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), SlotError> {
    Ok(ballast_device::atomic::sync_dir(dir)?)
}

impl From<ballast_device::AtomicError> for SlotError {
    fn from(e: ballast_device::AtomicError) -> SlotError {
        SlotError::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ids() {
        assert_eq!(SlotId::A.as_str(), "a");
        assert_eq!(SlotId::B.other(), SlotId::A);
        assert_eq!(SlotId::A.partition_index(), 2);
        assert_eq!(SlotId::B.partition_index(), 3);
        assert_eq!(SlotId::B.label(), "root-b");
        assert_eq!("b".parse::<SlotId>().unwrap(), SlotId::B);
        let e = "c".parse::<SlotId>().unwrap_err().to_string();
        assert!(
            e.contains("`c`") && e.contains("expected `a` or `b`"),
            "{e}"
        );
        assert_eq!(boot_files::kernel(SlotId::B), "ballast/b/vmlinuz");
        assert_eq!(boot_files::initrd(SlotId::A), "ballast/a/initrd.img");
    }

    #[test]
    fn status_serializes_for_osctl() {
        let s = SlotStatus {
            slot: SlotId::B,
            version: Some("1.2.0".into()),
            health: Health::Trying {
                tries_left: 2,
                tries_done: 1,
            },
            is_default: true,
        };
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains("\"slot\":\"b\""), "{j}");
        assert!(j.contains("\"state\":\"trying\""), "{j}");
        assert!(j.contains("\"tries_left\":2"), "{j}");
    }
}
