//! The hybrid live ISO (`OUT/ballast.iso`) of an x86_64 or arm64 UEFI board,
//! made from what the disk build already produced (root image, kernel,
//! initramfs, disk image): nothing is built twice.
//!
//! One image boots as a CD (El Torito) and, written with `dd`, as a disk (MBR +
//! GPT), written by Debian's `xorriso` (ADR 0007):
//!
//! * UEFI: an EFI system partition image (FAT16 sized to its files:
//!   systemd-boot, one loader entry, kernel, initramfs) that is both the El
//!   Torito EFI boot image and GPT partition 2. Where it fits the 32 MiB an El
//!   Torito entry can count ([`ELTORITO_MAX`], x86_64) it is appended after the
//!   ISO 9660 tree and its entry gives its size; where it does not (arm64:
//!   Debian's uncompressed arm64 kernel alone is 31.4 MiB) it is a file of the
//!   tree (`ballast/efi.img`) whose entry counts 0, which UEFI reads as "to the
//!   end of the CD" (UEFI specification, "ISO-9660 and El Torito"; ADR 0007);
//! * legacy BIOS (x86_64): ISOLINUX from Debian's `isolinux` and
//!   `syslinux-common`, with `isohdpfx.bin` as the hybrid MBR;
//! * the ISO 9660 tree: [`paths::MEDIUM_ROOT_IMAGE`] (the same verity-protected
//!   root image as slot A), [`paths::MEDIUM_INSTALL_IMAGE`] (the disk image,
//!   zstd), [`paths::MEDIUM_CONFIG_AREA`] (empty; `ballast iso customize` fills it).
//!
//! The kernel command line (both consoles, `ballast.live=VOLUME`, the root
//! hash) is written in each boot configuration on a line after
//! [`KARGS_MARKER`], padded with spaces to [`KARGS_LINE`] bytes so that
//! `ballast iso customize` can add arguments in place.
//!
//! Reproducible: `SOURCE_DATE_EPOCH` is handed to xorriso, which then derives
//! every date and the GPT GUIDs from it; the FAT image is reproducible by
//! construction (`ballast-disk`).

use anyhow::{bail, Context, Result};
use ballast_device::{live, paths};
use ballast_inputs::Arch;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The comment line that precedes each boot configuration's kernel command line.
pub const KARGS_MARKER: &str =
    "# ballast-kernel-args: the next line has room for more (ballast iso customize)\n";
/// Bytes of the padded kernel command line that follows [`KARGS_MARKER`], without
/// its newline. Both the x86 and arm64 kernels take 2048.
pub const KARGS_LINE: usize = 1536;
/// The loader entry's file name on the EFI image.
const ENTRY: &str = "loader/entries/ballast-live.conf";
/// The largest boot image an El Torito entry's 16-bit count of 512-byte
/// sectors describes, as xorriso rounds it (65532 sectors).
pub const ELTORITO_MAX: u64 = 33_552_384;
/// Where an EFI image too large for [`ELTORITO_MAX`] lives in the ISO tree.
const TREE_EFI_IMAGE: &str = "ballast/efi.img";

/// How the EFI image sits on the ISO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EfiPlacement {
    /// Appended after the ISO 9660 tree as GPT partition 2; its El Torito
    /// entry counts its sectors.
    Appended,
    /// A file of the ISO 9660 tree, exposed as the GPT's EFI partition; its El
    /// Torito entry counts 0 ("to the end of the CD").
    InTree,
}

/// Where an EFI image of `bytes` goes.
pub fn efi_placement(bytes: u64) -> EfiPlacement {
    if bytes <= ELTORITO_MAX {
        EfiPlacement::Appended
    } else {
        EfiPlacement::InTree
    }
}

/// What the ISO is made from.
pub struct Inputs<'a> {
    pub arch: Arch,
    pub version: &'a str,
    /// The root image with its hash tree (slot A's).
    pub root_image: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a [u8],
    /// The installer's image (`install.img.zst`, signed manifest beside it), as
    /// `install_image::write` made it for OUT: the ISO carries the same two files.
    pub install_image: &'a Path,
    pub install_manifest: &'a Path,
    /// The slot's kernel command line (board, image, `--kernel-arg`, `panic=`, verity).
    pub slot_cmdline: &'a str,
    pub systemd_boot: &'a Path,
    /// ISOLINUX's files (x86_64).
    pub isolinux: Option<&'a Isolinux>,
    pub epoch: u64,
    pub work: &'a Path,
}

/// ISOLINUX, from Debian: the El Torito BIOS loader, its library, the hybrid MBR.
pub struct Isolinux {
    pub isolinux_bin: PathBuf,
    pub ldlinux_c32: PathBuf,
    pub isohdpfx_bin: PathBuf,
}

/// The ISO 9660 volume id of a build: `BALLAST_` and the first 8 hex digits of
/// the root hash, so the live system finds its own medium and not another
/// version's.
pub fn volume_id(root_hash_hex: &str) -> String {
    let short: String = root_hash_hex.chars().take(8).collect();
    format!("BALLAST_{}", short.to_ascii_uppercase())
}

/// The live kernel command line: the screen console first, the board's serial
/// console last (it becomes `/dev/console`), then the slot's arguments.
pub fn live_cmdline(slot_cmdline: &str, volume: &str) -> String {
    format!(
        "console=tty0 {slot_cmdline} {}={volume}",
        ballast_device::cmdline::keys::LIVE
    )
}

/// `line` followed by spaces to [`KARGS_LINE`] bytes.
pub fn padded(line: &str) -> Result<String> {
    if line.len() > KARGS_LINE {
        bail!(
            "the kernel command line is {} bytes; a live ISO holds at most {KARGS_LINE}",
            line.len()
        );
    }
    Ok(format!("{line:<KARGS_LINE$}"))
}

/// Hard-link (or copy) a file the disk build made into the ISO tree.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    }
    Ok(())
}

/// Build the ISO at `dest`. Returns its volume id.
pub fn build(inputs: &Inputs<'_>, root_hash_hex: &str, dest: &Path) -> Result<String> {
    let volume = volume_id(root_hash_hex);
    let cmdline = padded(&live_cmdline(inputs.slot_cmdline, &volume))?;
    let work = inputs.work.join("iso");
    let tree = work.join("tree");
    let ballast_dir = tree.join("ballast");
    std::fs::create_dir_all(&ballast_dir)
        .with_context(|| format!("creating {}", ballast_dir.display()))?;

    // The ISO 9660 tree. The root image is hard-linked (or copied) from the disk build.
    let root_dest = tree.join(paths::MEDIUM_ROOT_IMAGE);
    link_or_copy(inputs.root_image, &root_dest)?;
    // The installer's image and its signed manifest, as `ballast build` wrote them.
    let install_dest = tree.join(paths::MEDIUM_INSTALL_IMAGE);
    link_or_copy(inputs.install_image, &install_dest)?;
    let mut manifest_dest = install_dest.into_os_string();
    manifest_dest.push(".manifest");
    link_or_copy(inputs.install_manifest, Path::new(&manifest_dest))?;
    let area = live::ConfigArea::default()
        .encode(live::AREA_BYTES)
        .context("encoding the empty config area")?;
    std::fs::write(tree.join(paths::MEDIUM_CONFIG_AREA), area)?;

    // The EFI system partition image.
    let title = format!("Ballast {} (live)", inputs.version);
    let entry = format!(
        "title {title}\nversion {}\nlinux /ballast/vmlinuz\ninitrd /ballast/initrd.img\n{KARGS_MARKER}options {cmdline}\n",
        inputs.version
    );
    let kernel = std::fs::read(inputs.kernel)
        .with_context(|| format!("reading {}", inputs.kernel.display()))?;
    let efi_name = match inputs.arch {
        Arch::X86_64 => "EFI/BOOT/BOOTX64.EFI",
        Arch::Arm64 => "EFI/BOOT/BOOTAA64.EFI",
        Arch::Armv7 => bail!("a live ISO is made for x86_64 and arm64 boards only"),
    };
    let efi_files = vec![
        (
            efi_name.to_owned(),
            std::fs::read(inputs.systemd_boot)
                .with_context(|| format!("reading {}", inputs.systemd_boot.display()))?,
        ),
        (
            "loader/loader.conf".to_owned(),
            b"timeout 0\ndefault ballast-live.conf\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n"
                .to_vec(),
        ),
        (ENTRY.to_owned(), entry.into_bytes()),
        ("ballast/vmlinuz".to_owned(), kernel.clone()),
        ("ballast/initrd.img".to_owned(), inputs.initrd.to_vec()),
    ];
    let efi_img = work.join("efi.img");
    let volume_serial = u32::from_str_radix(&root_hash_hex[..8.min(root_hash_hex.len())], 16)
        .unwrap_or(0x0ba1_1a57);
    let fitted =
        ballast_disk::fat::build_fitted(&efi_img, "BALLAST_EFI", volume_serial, &efi_files)
            .context("writing the ISO's EFI system partition image")?;
    let placement = efi_placement(fitted.size);
    if placement == EfiPlacement::InTree {
        std::fs::rename(&efi_img, tree.join(TREE_EFI_IMAGE))
            .context("moving the EFI image into the ISO tree")?;
    }

    // BIOS: ISOLINUX and the kernel and initramfs it loads from the ISO 9660 tree.
    if let Some(iso) = inputs.isolinux {
        let dir = tree.join("isolinux");
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(&iso.isolinux_bin, dir.join("isolinux.bin"))
            .with_context(|| format!("copying {}", iso.isolinux_bin.display()))?;
        std::fs::copy(&iso.ldlinux_c32, dir.join("ldlinux.c32"))
            .with_context(|| format!("copying {}", iso.ldlinux_c32.display()))?;
        std::fs::write(
            dir.join("isolinux.cfg"),
            format!(
                "DEFAULT live\nPROMPT 0\nTIMEOUT 0\nLABEL live\n  MENU LABEL {title}\n  KERNEL /ballast/vmlinuz\n  INITRD /ballast/initrd.img\n{KARGS_MARKER}  APPEND {cmdline}\n"
            ),
        )?;
        std::fs::write(ballast_dir.join("vmlinuz"), &kernel)?;
        std::fs::write(ballast_dir.join("initrd.img"), inputs.initrd)?;
    }

    let mut cmd = Command::new("xorriso");
    cmd.env("SOURCE_DATE_EPOCH", inputs.epoch.to_string())
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(dest)
        .args(["-V", &volume, "-R", "-J", "-joliet-long", "-iso-level", "3"]);
    if let Some(iso) = inputs.isolinux {
        cmd.arg("-isohybrid-mbr")
            .arg(&iso.isohdpfx_bin)
            .args(["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat"])
            .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
            .arg("-eltorito-alt-boot");
    }
    match placement {
        EfiPlacement::Appended => {
            cmd.args([
                "-e",
                "--interval:appended_partition_2:all::",
                "-no-emul-boot",
            ])
            .arg("-append_partition")
            .arg("2")
            .arg("0xef")
            .arg(&efi_img)
            .arg("-appended_part_as_gpt");
        }
        EfiPlacement::InTree => {
            // xorriso writes the count 0 for an image over ELTORITO_MAX and
            // places boot images first in the tree, so the "partition" UEFI
            // sees on a CD runs from the image to the end of the volume and
            // holds the whole FAT volume. `--efi-boot-image` makes the same
            // bytes GPT partition 2's EFI system partition for a USB stick.
            cmd.args(["-e", TREE_EFI_IMAGE, "-no-emul-boot"])
                .args(["-efi-boot-part", "--efi-boot-image"]);
            if inputs.isolinux.is_none() {
                cmd.arg("--protective-msdos-label");
            }
        }
    }
    cmd.arg(&tree);
    let out = cmd
        .output()
        .context("running xorriso: is it installed? (scripts/setup)")?;
    if !out.status.success() {
        bail!(
            "xorriso failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(volume)
}

/// ISOLINUX's files from Debian (`isolinux`, `syslinux-common`, both
/// architecture-independent), through the verified archive like every other
/// boot input: the ISO then does not depend on the build host's packages.
pub fn isolinux(archive: &ballast_debarchive::client::Archive, cache: &Path) -> Result<Isolinux> {
    let iso = crate::debpkg::unpacked(archive, cache, "isolinux")?;
    let common = crate::debpkg::unpacked(archive, cache, "syslinux-common")?;
    let files = Isolinux {
        isolinux_bin: iso.join("usr/lib/ISOLINUX/isolinux.bin"),
        isohdpfx_bin: iso.join("usr/lib/ISOLINUX/isohdpfx.bin"),
        ldlinux_c32: common.join("usr/lib/syslinux/modules/bios/ldlinux.c32"),
    };
    for f in [&files.isolinux_bin, &files.isohdpfx_bin, &files.ldlinux_c32] {
        if !f.is_file() {
            bail!("Debian's isolinux/syslinux-common has no {}", f.display());
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_ids_are_short_and_uppercase() {
        assert_eq!(volume_id("abcdef0123456789"), "BALLAST_ABCDEF01");
        assert!(volume_id("abcdef0123456789").len() <= 32);
    }

    #[test]
    fn the_serial_console_comes_last_and_the_line_is_padded() {
        let line = live_cmdline("console=ttyS0 panic=5 ballast.verity=x", "BALLAST_1");
        assert!(line.starts_with("console=tty0 console=ttyS0"));
        assert!(line.ends_with("ballast.live=BALLAST_1"));
        let p = padded(&line).unwrap();
        assert_eq!(p.len(), KARGS_LINE);
        assert_eq!(p.trim_end(), line);
        assert!(padded(&"x".repeat(KARGS_LINE + 1)).is_err());
    }

    #[test]
    fn an_efi_image_over_eltorito_s_count_goes_into_the_tree() {
        assert_eq!(efi_placement(11 << 20), EfiPlacement::Appended);
        assert_eq!(efi_placement(ELTORITO_MAX), EfiPlacement::Appended);
        assert_eq!(efi_placement(ELTORITO_MAX + 2048), EfiPlacement::InTree);
    }
}
