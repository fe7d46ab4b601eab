//! The hybrid live ISO (`OUT/ballast.iso`) of an x86_64 or arm64 UEFI board,
//! made from what the disk build already produced (root image, kernel,
//! initramfs, disk image): nothing is built twice.
//!
//! One image boots as a CD (El Torito) and, written with `dd`, as a disk (MBR +
//! GPT), written by Debian's `xorriso` (ADR 0007):
//!
//! * UEFI: an EFI system partition image (FAT16 sized to its files) that is
//!   both the El Torito EFI boot image and GPT partition 2. On x86_64 it holds
//!   systemd-boot, one loader entry, kernel and initramfs, and is a file of
//!   the tree (`ballast/efi.img`), which GRUB for BIOS reads the kernel from.
//!   On arm64 it holds GRUB alone (Debian's `grub-efi-arm64-bin`, built by
//!   `grub-mkimage -O arm64-efi` with the volume id in its embedded
//!   configuration) and is appended after the tree, its El Torito entry
//!   counting it: Debian's arm64 `Image` is 31.4 MiB raw, and neither
//!   systemd-boot nor the kernel's EFI stub loads a compressed one (no
//!   `EFI_ZBOOT`), while GRUB decompresses `ballast/vmlinuz.gz` from the ISO
//!   9660 tree. An image over the 32 MiB an El Torito entry counts
//!   ([`ELTORITO_MAX`]) would be a file of the tree whose entry counts 0, "to
//!   the end of the CD" (UEFI specification, "ISO-9660 and El Torito"; ADR
//!   0007);
//! * legacy BIOS (x86_64): GRUB from Debian's `grub-pc-bin` (El Torito image
//!   and `boot_hybrid.img` as the hybrid MBR, as `grub-mkrescue` does), which
//!   reads the kernel and initramfs out of the EFI image in the tree
//!   (`loopback`): they are carried once, and the EFI image is then always a
//!   file of the tree;
//! * the ISO 9660 tree: [`paths::MEDIUM_ROOT_IMAGE`] (the same verity-protected
//!   root image as slot A), [`paths::MEDIUM_INSTALL_IMAGE`] (the disk image,
//!   zstd, leaving to fills what the tree already holds: slot A's root, the
//!   kernel and initramfs in the EFI image, or arm64's `vmlinuz.gz`
//!   (a gzip fill) and `initrd.img`), [`paths::MEDIUM_CONFIG_AREA`] (empty; `ballast iso customize` fills it).
//!
//! The kernel command line (both consoles, `ballast.live=VOLUME`, the root
//! hash) is written in each boot configuration on a line after
//! [`KARGS_MARKER`], padded with spaces to [`KARGS_LINE`] bytes so that
//! `ballast iso customize` can add arguments in place.
//!
//! Reproducible: `SOURCE_DATE_EPOCH` is handed to xorriso, which then derives
//! every date and the GPT GUIDs from it; the FAT image is reproducible by
//! construction (`ballast-disk`).

use crate::install_image;
use anyhow::{bail, Context, Result};
use ballast_device::{live, paths};
use ballast_inputs::Arch;
use std::path::{Path, PathBuf};
use std::process::Command;

/// GRUB's kernel line in the ISO's `grub.cfg`, before the padded arguments.
pub const GRUB_LINUX: &str = "linux (efi)/ballast/vmlinuz ";
/// GRUB's kernel line in the arm64 ISO's `grub.cfg` (the gzip kernel in the tree).
pub const GRUB_LINUX_GZ: &str = "linux /ballast/vmlinuz.gz ";
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
/// The gzip kernel's name in the tree's `ballast/` (arm64).
const GZ_KERNEL: &str = "vmlinuz.gz";
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
    /// The raw disk image and the signed manifest `install_image::write` made
    /// for OUT: the ISO's install image is the same disk with the ranges the
    /// medium already holds left to fills (`install_image::write_filled`).
    pub disk: &'a Path,
    pub install_manifest: &'a Path,
    pub signer: &'a ballast_bundle::Signer,
    /// The slot's kernel command line (board, image, `--kernel-arg`, `panic=`, verity).
    pub slot_cmdline: &'a str,
    pub systemd_boot: &'a Path,
    /// GRUB's El Torito image and hybrid MBR (x86_64's legacy BIOS).
    pub grub_cd: Option<&'a GrubCd>,
    /// The `arm64-efi` module directory of Debian's `grub-efi-arm64-bin`: the
    /// UEFI loader is then GRUB, which boots the gzip kernel from the tree.
    pub grub_efi: Option<&'a Path>,
    pub epoch: u64,
    /// How hard the arm64 kernel is gzipped.
    pub effort: crate::effort::Effort,
    pub work: &'a Path,
}

/// GRUB for a legacy BIOS, from Debian's `grub-pc-bin`: the El Torito image
/// (`grub-mkimage -O i386-pc-eltorito`) and the hybrid MBR that starts it
/// from a USB stick (`boot_hybrid.img`), as `grub-mkrescue` makes them.
pub struct GrubCd {
    pub eltorito_img: PathBuf,
    pub boot_hybrid: PathBuf,
}

/// Where GRUB's El Torito image and configuration live in the ISO tree.
const GRUB_IMAGE: &str = "boot/grub/eltorito.img";
const GRUB_CFG: &str = "boot/grub/grub.cfg";
/// The modules the El Torito image embeds (grub-mkimage adds their
/// dependencies): the CD or stick, ISO 9660, the EFI image as a loopback FAT
/// volume (the kernel and initramfs are carried once, there), the script
/// language, `linux`, the serial console.
const GRUB_CD_MODULES: &[&str] = &[
    "biosdisk",
    "iso9660",
    "loopback",
    "fat",
    "normal",
    "configfile",
    "linux",
    "boot",
    "test",
    "echo",
    "serial",
    "terminal",
];

/// The modules arm64's GRUB (BOOTAA64.EFI) embeds: find the ISO 9660 volume
/// by its label on the CD or stick, read `grub.cfg` there, and boot the gzip
/// kernel (`gzio`) with its initramfs. No `serial`: GRUB has no driver for
/// the virt board's PL011 and writes through UEFI's console, which AAVMF
/// (and server firmware) already sends to the serial port.
const GRUB_EFI_MODULES: &[&str] = &[
    "iso9660",
    "part_gpt",
    "part_msdos",
    "fat",
    "search",
    "search_label",
    "normal",
    "configfile",
    "linux",
    "gzio",
    "boot",
    "test",
    "echo",
    "efi_gop",
];

/// Build arm64's BOOTAA64.EFI at `dest` with the host's `grub-mkimage` from
/// `modules` (Debian's `grub-efi-arm64-bin`); its embedded configuration finds
/// the volume labelled `volume` (unique per build) and reads
/// [`GRUB_CFG`] from it.
fn grub_efi_image(modules: &Path, volume: &str, work: &Path, dest: &Path) -> Result<()> {
    let early = work.join("grub-early.cfg");
    std::fs::write(
        &early,
        format!(
            "search --no-floppy --set=root --label {volume}\nset prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n"
        ),
    )
    .with_context(|| format!("writing {}", early.display()))?;
    let out = Command::new("grub-mkimage")
        .args(["-O", "arm64-efi", "-p", "/boot/grub", "-d"])
        .arg(modules)
        .arg("-c")
        .arg(&early)
        .arg("-o")
        .arg(dest)
        .args(GRUB_EFI_MODULES)
        .output()
        .context("running grub-mkimage: is grub-common installed? (scripts/setup)")?;
    if !out.status.success() {
        bail!(
            "grub-mkimage -O arm64-efi -d {} failed ({}): {}",
            modules.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `data` gzip-compressed at `effort`'s level, with no name or time stamp
/// (reproducible).
fn gzip(data: &[u8], effort: crate::effort::Effort, dest: &Path) -> Result<()> {
    use std::io::Write;
    let file =
        std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut enc = flate2::GzBuilder::new().write(
        std::io::BufWriter::new(file),
        flate2::Compression::new(effort.level(ballast_kernel::initramfs::Compression::Gzip)),
    );
    enc.write_all(data)
        .and_then(|()| enc.finish())
        .and_then(|mut w| w.flush())
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
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
    let efi_files = if let Some(modules) = inputs.grub_efi {
        // arm64: GRUB alone on the EFI image; the gzip kernel, the initramfs
        // and grub.cfg lie in the tree. GRUB writes through UEFI's console.
        let grub_efi = work.join("BOOTAA64.EFI");
        grub_efi_image(modules, &volume, &work, &grub_efi)?;
        gzip(&kernel, inputs.effort, &ballast_dir.join(GZ_KERNEL))?;
        std::fs::write(ballast_dir.join("initrd.img"), inputs.initrd)?;
        let dir = tree.join("boot/grub");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(
            tree.join(GRUB_CFG),
            format!(
                "echo \"{title}\"\n{KARGS_MARKER}{GRUB_LINUX_GZ}{cmdline}\ninitrd /ballast/initrd.img\nboot\n"
            ),
        )?;
        vec![(
            efi_name.to_owned(),
            std::fs::read(&grub_efi).with_context(|| format!("reading {}", grub_efi.display()))?,
        )]
    } else {
        vec![
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
    ]
    };
    let efi_img = work.join("efi.img");
    let volume_serial = u32::from_str_radix(&root_hash_hex[..8.min(root_hash_hex.len())], 16)
        .unwrap_or(0x0ba1_1a57);
    let fitted =
        ballast_disk::fat::build_fitted(&efi_img, "BALLAST_EFI", volume_serial, &efi_files)
            .context("writing the ISO's EFI system partition image")?;
    let placement = if inputs.grub_cd.is_some() {
        // GRUB loopback-mounts it from the tree.
        EfiPlacement::InTree
    } else {
        efi_placement(fitted.size)
    };
    if placement == EfiPlacement::InTree {
        std::fs::rename(&efi_img, tree.join(TREE_EFI_IMAGE))
            .context("moving the EFI image into the ISO tree")?;
    }

    // BIOS: GRUB, which reads the kernel and initramfs out of the EFI image
    // (a file of the tree, loopback-mounted): they are carried once.
    if let Some(grub) = inputs.grub_cd {
        let dir = tree.join("boot/grub");
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(&grub.eltorito_img, tree.join(GRUB_IMAGE))
            .with_context(|| format!("copying {}", grub.eltorito_img.display()))?;
        std::fs::write(
            tree.join(GRUB_CFG),
            format!(
                "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\necho \"{title}\"\nloopback efi /{TREE_EFI_IMAGE}\n{KARGS_MARKER}{GRUB_LINUX}{cmdline}\ninitrd (efi)/ballast/initrd.img\nboot\n"
            ),
        )?;
    }

    // The installer's image and its signed manifest: slot A's root, and the
    // kernel and initramfs where the tree holds them whole, come from the
    // tree's files (fills) instead of a second copy.
    let install_dir = tree.join(paths::MEDIUM_INSTALL_IMAGE);
    let install_dir = install_dir.parent().unwrap_or(&ballast_dir);
    let name_in = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
    let root_name = name_in(paths::MEDIUM_ROOT_IMAGE);
    let (kernel_name, initrd_name, efi_name) = ("vmlinuz", "initrd.img", name_in(TREE_EFI_IMAGE));
    let mut medium = vec![install_image::MediumFile {
        name: &root_name,
        path: &root_dest,
        needle: None,
        gzip: false,
    }];
    let tree_gz = ballast_dir.join(GZ_KERNEL);
    let (tree_kernel, tree_initrd, tree_efi) = (
        ballast_dir.join(kernel_name),
        ballast_dir.join(initrd_name),
        tree.join(TREE_EFI_IMAGE),
    );
    // The kernel (gzip on arm64's GRUB tree, raw on x86_64's) and the initramfs
    // as files of the tree, where there are such files.
    let tree_files = if tree_gz.is_file() {
        Some((GZ_KERNEL, &tree_gz, true))
    } else if tree_kernel.is_file() {
        Some((kernel_name, &tree_kernel, false))
    } else {
        None
    };
    if let Some((name, path, gzip)) = tree_files {
        medium.push(install_image::MediumFile {
            name,
            path,
            needle: Some(&kernel),
            gzip,
        });
        medium.push(install_image::MediumFile {
            name: initrd_name,
            path: &tree_initrd,
            needle: Some(inputs.initrd),
            gzip: false,
        });
    } else if tree_efi.is_file() {
        for needle in [&kernel[..], inputs.initrd] {
            medium.push(install_image::MediumFile {
                name: &efi_name,
                path: &tree_efi,
                needle: Some(needle),
                gzip: false,
            });
        }
    }
    install_image::write_filled(
        inputs.disk,
        inputs.install_manifest,
        &medium,
        inputs.signer,
        install_dir,
    )
    .context("writing the ISO's install image")?;

    let mut cmd = Command::new("xorriso");
    cmd.env("SOURCE_DATE_EPOCH", inputs.epoch.to_string())
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(dest)
        .args(["-V", &volume, "-R", "-J", "-joliet-long", "-iso-level", "3"]);
    if let Some(grub) = inputs.grub_cd {
        // As grub-mkrescue: GRUB's boot-info patch and hybrid MBR.
        cmd.args(["-b", GRUB_IMAGE, "-c", "boot/grub/boot.cat"])
            .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
            .arg("--grub2-boot-info")
            .arg("--grub2-mbr")
            .arg(&grub.boot_hybrid)
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
            if inputs.grub_cd.is_none() {
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

/// GRUB's El Torito image, built by the host's `grub-mkimage` from the
/// modules of Debian's `grub-pc-bin` (fetched through the verified archive,
/// as for the disk's BIOS boot), and its hybrid MBR from the same package.
pub fn grub_cd(
    archive: &ballast_debarchive::client::Archive,
    cache: &Path,
    work: &Path,
) -> Result<GrubCd> {
    let pkg = crate::debpkg::unpacked(archive, cache, "grub-pc-bin")?;
    let dir = pkg.join("usr/lib/grub/i386-pc");
    let boot_hybrid = dir.join("boot_hybrid.img");
    if !boot_hybrid.is_file() {
        bail!("Debian's grub-pc-bin has no {}", boot_hybrid.display());
    }
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let eltorito_img = work.join("grub-eltorito.img");
    let out = Command::new("grub-mkimage")
        .args(["-O", "i386-pc-eltorito", "-p", "/boot/grub", "-d"])
        .arg(&dir)
        .arg("-o")
        .arg(&eltorito_img)
        .args(GRUB_CD_MODULES)
        .output()
        .context("running grub-mkimage: is grub-common installed? (scripts/setup)")?;
    if !out.status.success() {
        bail!(
            "grub-mkimage -O i386-pc-eltorito -d {} failed ({}): {}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(GrubCd {
        eltorito_img,
        boot_hybrid,
    })
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
