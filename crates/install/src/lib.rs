//! ballast-install is the one image writer. Three front ends use it and none
//! writes a disk another way: `osctl install` (through sysd, on the device),
//! the unattended install `ballast.install=DEVICE` (sysd at boot) and
//! `ballast flash` (the workstation).
//!
//! It owns:
//! - the **install image**: `install.img.zst` (the disk image, zstd) and its
//!   signed manifest `install.img.zst.manifest` ([`manifest`]), signed with the
//!   same ed25519 keys as update bundles, and the per-chunk sums it lists
//!   ([`chunks`]);
//! - the **target checks** ([`target`]): nothing is written to a device that
//!   does not exist, is not a whole block device, is too small, read-only,
//!   mounted or held, is a disk the running system uses, or already holds
//!   partitions (unless forced);
//! - the **write order** ([`write`]): clear the old tables (primary and backup
//!   GPT, MBR), write everything but the first MiB, fsync, read back and
//!   verify, put the first-boot config on the boot partition, then write the
//!   first MiB last and verify it. A failed install leaves the target
//!   unbootable, never half-written and bootable;
//! - reading the device back past the page cache (`O_DIRECT`, [`direct`]),
//!   which [`Options`] asks for (`ballast flash` does).
//!
//! What it must never do: write a byte to a target before every check passed;
//! write the first MiB (the partition table) before the rest was verified;
//! report success for bytes it did not read back.

mod bootconfig;
pub mod chunks;
pub mod direct;
mod error;
pub mod fill;
pub mod manifest;
pub mod source;
pub mod target;
pub mod write;

pub use bootconfig::{boot_partition, BootConfig, CONFIG_FILES};
pub use error::InstallError;
pub use fill::{Codec, Fill};
pub use manifest::Manifest;
pub use source::Image;
pub use target::{Policy, Target};
pub use write::{install, install_with, Expected, Options, Phase, Report};

/// The first MiB (protective MBR, GPT header and entries, the gap before the
/// first partition) is written last: until it is, the target has no table.
pub const HEAD: u64 = 1 << 20;

/// File names beside the disk image that `ballast build` writes.
pub const IMAGE_FILE: &str = "install.img.zst";
pub const MANIFEST_FILE: &str = "install.img.zst.manifest";
