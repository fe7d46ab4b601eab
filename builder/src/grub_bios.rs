//! The legacy BIOS bootloader of the x86_64 disk: GRUB (i386-pc) from Debian's
//! `grub-pc-bin`, fetched and verified through the archive client like every boot
//! input, and assembled into a `core.img` by the host's `grub-mkimage` (Debian's
//! `grub-common`, scripts/setup) from that package's modules, never the host's.
//!
//! core.img embeds every module the boot needs (disk, GPT, FAT, the script
//! language, `linux`, `loadenv`, serial console), so nothing but `grub.cfg` and the
//! slot state lives on the boot partition; its prefix `(,gpt1)/ballast/grub` is the
//! boot partition of the disk the BIOS booted. `ballast-disk::bios` places boot.img
//! and core.img; `ballast-slot::grub` writes the script and the slot state.
//! grub-mkimage writes no time stamp: the same package gives the same core.img.

use anyhow::{bail, Context, Result};
use ballast_debarchive::client::Archive;
use std::path::Path;
use std::process::Command;

use crate::debpkg;

/// The modules core.img embeds (grub-mkimage adds their dependencies).
const MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "fat",
    "normal",
    "configfile",
    "linux",
    "boot",
    "loadenv",
    "test",
    "echo",
    "serial",
    "terminal",
];

/// Where core.img finds `grub.cfg`: the boot partition (1) of the boot disk.
const PREFIX: &str = "(,gpt1)/ballast/grub";

/// GRUB's two pieces for a BIOS boot.
#[derive(Debug, Clone)]
pub struct BiosLoader {
    /// `boot.img`: the MBR boot code (512 bytes).
    pub boot_img: Vec<u8>,
    /// `core.img`: the rest of GRUB, for the BIOS boot partition.
    pub core_img: Vec<u8>,
}

/// Fetch `grub-pc-bin` and build core.img in `work`.
pub fn build(archive: &Archive, cache: &Path, work: &Path) -> Result<BiosLoader> {
    let tree = debpkg::unpacked(archive, cache, "grub-pc-bin")?;
    let dir = tree.join("usr/lib/grub/i386-pc");
    let boot = dir.join("boot.img");
    if !boot.is_file() {
        bail!("grub-pc-bin has no usr/lib/grub/i386-pc/boot.img");
    }
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let core = work.join("core.img");
    let out = Command::new("grub-mkimage")
        .args(["-O", "i386-pc", "-p", PREFIX, "-d"])
        .arg(&dir)
        .arg("-o")
        .arg(&core)
        .args(MODULES)
        .output()
        .context("running grub-mkimage: is grub-common installed? (scripts/setup)")?;
    if !out.status.success() {
        bail!(
            "grub-mkimage -O i386-pc -d {} failed ({}): {}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(BiosLoader {
        boot_img: std::fs::read(&boot).with_context(|| format!("reading {}", boot.display()))?,
        core_img: std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?,
    })
}
