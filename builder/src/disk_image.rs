//! The disk image users flash: a boot partition (FAT32), root slots A and B
//! (squashfs + dm-verity hash tree; B starts empty), and a small state
//! partition (ext4) that init grows to fill the disk on first boot.
//!
//! Reproducible: every timestamp is `SOURCE_DATE_EPOCH`, every UUID and the
//! verity salt are derived from the image's identity and content, and files
//! are added in sorted order; two builds of the same inputs are identical.
//!
//! Formats have one owner each: `ballast-verity` (hash tree and the kernel
//! argument carrying it), `ballast-slot` (boot entries, U-Boot state and
//! script), `ballast-disk` (FAT32, GPT/MBR). This module only decides what
//! goes where.

use anyhow::{bail, Context, Result};
use ballast_device::paths;
use ballast_disk::{fat, types, Content, Disk, Guid, Partition, TableKind};
use ballast_inputs::{Arch, Board, ImageFile};
use ballast_inputs::{BootFirmware, PartitionTable};
use ballast_slot::{bls, grub, uboot, SlotId};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Kernel arguments that harden every image: slab caches are not merged (a
/// heap overflow stays in its cache), the page allocator is shuffled (the
/// kernel has it, off by default), and debugfs, a kernel-internals window
/// nothing on Ballast reads, is off.
pub const KERNEL_HARDENING: [&str; 3] = ["slab_nomerge", "page_alloc.shuffle=1", "debugfs=off"];
const MIB: u64 = 1 << 20;

pub struct Inputs<'a> {
    pub board: &'a Board,
    pub image: &'a ImageFile,
    pub version: &'a semver::Version,
    pub kernel: &'a Path,
    pub initrd: &'a [u8],
    pub init: &'a Path,
    /// A staged root tree (userland, container directories, sysd, osctl) that init,
    /// os-release and the mount points are added to.
    pub root_tree: &'a Path,
    pub os_release: &'a str,
    /// Kernel command line before the slot's own arguments.
    pub cmdline: &'a [String],
    /// systemd-boot's EFI binary (UEFI boards).
    pub systemd_boot: Option<&'a Path>,
    /// GRUB for legacy BIOS (x86_64): the same disk then boots on either firmware.
    pub bios: Option<&'a crate::grub_bios::BiosLoader>,
    pub epoch: u64,
    /// Scratch space, removed by the caller.
    pub work: &'a Path,
    /// Extra files for the top of the boot partition (`user-data`,
    /// `meta-data` of `ballast build --user-data`): what a user copies there
    /// after flashing.
    pub boot_files: &'a [(String, Vec<u8>)],
    /// The board's files from Debian (its U-Boot, the Pi's firmware, device
    /// trees): (path on the boot partition, file).
    pub board_files: &'a [(String, PathBuf)],
    /// How hard the root filesystem is compressed.
    pub effort: crate::effort::Effort,
}

#[derive(Debug, Clone)]
pub struct Built {
    pub root_hash: String,
    /// Root image with its hash tree, bytes.
    pub root_bytes: u64,
    /// The root image with its hash tree (in the scratch directory): the update
    /// bundle's `root` payload.
    pub root_image: PathBuf,
    /// The slot's kernel command line without `ballast.disk=` (which belongs to the
    /// disk, not to the OS version): what an update bundle carries.
    pub slot_cmdline: String,
}

/// The stable identity every UUID of the image derives from.
fn identity(inputs: &Inputs<'_>) -> String {
    format!(
        "{}/{}/{}",
        inputs.board.name, inputs.image.name, inputs.version
    )
}

pub fn disk_guid(inputs: &Inputs<'_>) -> Guid {
    Guid::stable("ballast-disk", &identity(inputs))
}

/// Build the disk image at `dest` (written atomically).
pub fn assemble(inputs: &Inputs<'_>, dest: &Path) -> Result<Built> {
    let work = inputs.work;
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let sizes = &inputs.image.disk;
    if sizes.boot_mib < 64 {
        bail!(
            "{}: disk.boot_mib = {}: a FAT32 boot partition needs at least 64 MiB",
            inputs.image.path.display(),
            sizes.boot_mib
        );
    }

    // Root slot A: squashfs of the root tree, then its hash tree.
    let root_img = work.join("root.img");
    build_root(inputs, inputs.root_tree, &root_img)?;
    let salt = Sha256::digest(
        std::fs::read(&root_img).with_context(|| format!("reading {}", root_img.display()))?,
    )
    .to_vec();
    let verity = ballast_verity::append_hash_tree(&root_img, &ballast_verity::Params::new(salt))
        .with_context(|| {
            format!(
                "appending the dm-verity hash tree to {}",
                root_img.display()
            )
        })?;
    let root_bytes = std::fs::metadata(&root_img)?.len();
    if root_bytes > sizes.root_mib * MIB {
        bail!(
            "{}: disk.root_mib = {} is too small for the root image ({} MiB with its hash tree); raise it",
            inputs.image.path.display(),
            sizes.root_mib,
            root_bytes.div_ceil(MIB)
        );
    }

    let guid = disk_guid(inputs);
    let mut args = inputs.cmdline.to_vec();
    // A PID 1 that dies after switch_root must not hang the machine: reboot,
    // so the bootloader counts the try and moves on.
    args.push("panic=5".to_owned());
    // Kernel hardening for every board (docs/security.md says why each, and
    // why the others were left out).
    args.extend(KERNEL_HARDENING.iter().map(|a| a.to_string()));
    args.push(verity.to_cmdline());
    let slot_cmdline = args.join(" ");
    // `ballast.slot=` is added by the bootloader side (the BLS entry, the
    // U-Boot script), which knows which slot it boots.
    args.push(format!("ballast.disk={guid}"));
    let cmdline_a = args.join(" ");

    // Boot partition, staged as a directory through the slot library, then
    // packed into FAT32.
    let staging = work.join("boot");
    std::fs::create_dir_all(&staging)?;
    stage_boot(inputs, &staging, &cmdline_a)?;
    let mut files = collect_files(&staging)?;
    files.extend(inputs.boot_files.iter().cloned());
    let boot_img = work.join("boot.img");
    let volume_id = u32::from_le_bytes([guid.0[0], guid.0[1], guid.0[2], guid.0[3]]);
    fat::build(
        &boot_img,
        sizes.boot_mib * MIB,
        "BALLAST",
        volume_id,
        &files,
    )
    .context("writing the boot partition")?;

    let state_img = work.join("state.img");
    build_state(inputs, &state_img, sizes.state_mib * MIB)?;

    let arch = inputs.board.arch;
    let kind = match inputs.board.boot.partition_table {
        PartitionTable::Gpt => TableKind::Gpt,
        PartitionTable::Mbr => TableKind::Mbr,
    };
    let id = identity(inputs);
    let part = |label: &str, type_guid: Guid, mbr_type: u8, mib: u64, content: Content| Partition {
        label: label.to_owned(),
        type_guid,
        uuid: Guid::stable("ballast-partition", &format!("{id}/{label}")),
        mbr_type,
        bootable: label == "boot",
        size: mib * MIB,
        content,
    };
    let root_type = types::root(arch.name())?;
    let disk = Disk {
        kind,
        disk_guid: guid,
        partitions: vec![
            part(
                "boot",
                types::ESP,
                0x0c,
                sizes.boot_mib,
                Content::File(boot_img),
            ),
            part(
                "root-a",
                root_type,
                0x83,
                sizes.root_mib,
                Content::File(root_img.clone()),
            ),
            part("root-b", root_type, 0x83, sizes.root_mib, Content::Zero),
            part(
                "state",
                types::LINUX_DATA,
                0x83,
                sizes.state_mib,
                Content::File(state_img),
            ),
        ],
    };
    ballast_disk::write_image(dest, &disk)
        .with_context(|| format!("writing the disk image {}", dest.display()))?;
    if let Some(bios) = inputs.bios {
        // The BIOS boot partition is entry 5 in the gap before partition 1:
        // the other partition numbers do not move (ballast_disk::bios).
        ballast_disk::bios::install(
            dest,
            &bios.boot_img,
            &bios.core_img,
            Guid::stable("ballast-partition", &format!("{id}/bios-boot")),
        )
        .with_context(|| format!("making {} boot on legacy BIOS", dest.display()))?;
    }
    Ok(Built {
        root_hash: verity.root_hash_hex(),
        root_bytes,
        root_image: root_img,
        slot_cmdline,
    })
}

/// The root tree: init as /sbin/init, os-release, mount points.
fn build_root(inputs: &Inputs<'_>, tree: &Path, dest: &Path) -> Result<()> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    for dir in [
        "usr/lib/ballast",
        "usr/bin",
        "sbin",
        "etc",
        "var",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "state",
        "boot",
    ] {
        std::fs::create_dir_all(tree.join(dir))?;
    }
    let init = paths::under(tree, paths::INIT);
    std::fs::copy(inputs.init, &init)
        .with_context(|| format!("copying {}", inputs.init.display()))?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    symlink(
        format!("..{}", paths::INIT),
        paths::under(tree, paths::STAGE2),
    )?;
    std::fs::write(paths::under(tree, paths::OS_RELEASE), inputs.os_release)?;
    symlink(
        format!("..{}", paths::OS_RELEASE),
        paths::under(tree, paths::ETC_OS_RELEASE),
    )?;
    // Directory modes are part of the image: set them, whatever the umask.
    for entry in walk(tree)? {
        if entry.is_dir() && !entry.is_symlink() {
            let mode = if entry.ends_with("tmp") {
                0o1777
            } else {
                0o755
            };
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode))?;
        }
    }
    let epoch = inputs.epoch.to_string();
    let level = inputs.effort.root_zstd_level().to_string();
    let status = Command::new("mksquashfs")
        .arg(tree)
        .arg(dest)
        // 1 MiB blocks at zstd level 19 (`--compress best`): the root is written
        // once and read many times; on the default image this is ~15% smaller
        // than 128 KiB blocks at level 15 (30.2 -> 25.5 MB for the minimal arm64
        // root), and it is what users download with every update. `fast`
        // builds take 128 KiB blocks, quicker to boot under emulation.
        .args(["-noappend", "-comp", "zstd", "-Xcompression-level", &level])
        .args(["-b", inputs.effort.root_block_size()])
        .args(["-no-xattrs", "-all-root"])
        .args(["-mkfs-time", &epoch, "-all-time", &epoch])
        .args(["-quiet", "-no-progress"])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running mksquashfs: is squashfs-tools installed? (scripts/setup)")?;
    if !status.success() {
        bail!("mksquashfs {} failed ({status})", tree.display());
    }
    Ok(())
}

/// The state partition as built: an empty ext4 labelled `state`, with a UUID
/// and hash seed from the image identity and the build's timestamp.
fn build_state(inputs: &Inputs<'_>, dest: &Path, size: u64) -> Result<()> {
    let uuid = Guid::stable("ballast-state-fs", &identity(inputs)).to_string();
    let file =
        std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    file.set_len(size)?;
    drop(file);
    // Reserved blocks keep sysd and sshd (CAP_SYS_RESOURCE) writing when a
    // user's container fills /var (docs/security.md; init mounts it with the
    // reserve owned by an id nothing runs as). 2 % as built; the kernel's
    // online grow at first boot keeps the whole percent (1 % after it).
    let status = Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", inputs.epoch.to_string())
        .args([
            "-q", "-F", "-t", "ext4", "-L", "state", "-m", "2", "-U", &uuid,
        ])
        .args([
            "-E",
            &format!("hash_seed={uuid},root_owner=0:0,lazy_itable_init=0"),
        ])
        .arg(dest)
        .status()
        .context("running mke2fs: is e2fsprogs installed? (scripts/setup)")?;
    if !status.success() {
        bail!("mke2fs {} failed ({status})", dest.display());
    }
    Ok(())
}

/// The boot partition's files: bootloader, slot A's kernel, initramfs and
/// boot entry (with `tries` tries: a fresh slot is on probation like an
/// updated one), and the bootloader's slot state.
fn stage_boot(inputs: &Inputs<'_>, dir: &Path, cmdline: &str) -> Result<()> {
    let slot = SlotId::A;
    let slot_dir = dir.join("ballast").join(slot.as_str());
    std::fs::create_dir_all(&slot_dir)?;
    std::fs::copy(inputs.kernel, slot_dir.join("vmlinuz"))
        .with_context(|| format!("copying {}", inputs.kernel.display()))?;
    std::fs::write(slot_dir.join("initrd.img"), inputs.initrd)?;
    let tries = inputs.image.disk.tries;
    let version = inputs.version.to_string();
    match inputs.board.boot.firmware {
        BootFirmware::Uefi => {
            let efi = inputs
                .systemd_boot
                .context("a UEFI board needs systemd-boot (systemd-boot-efi)")?;
            let name = match inputs.board.arch {
                Arch::X86_64 => "BOOTX64.EFI",
                Arch::Arm64 => "BOOTAA64.EFI",
                Arch::Armv7 => "BOOTARM.EFI",
            };
            let boot_dir = dir.join("EFI/BOOT");
            std::fs::create_dir_all(&boot_dir)?;
            std::fs::copy(efi, boot_dir.join(name))
                .with_context(|| format!("copying {}", efi.display()))?;
            std::fs::create_dir_all(dir.join("loader/entries"))?;
            std::fs::write(dir.join("loader/loader.conf"), bls::loader_conf())?;
            let entry = bls::Entry {
                slot,
                title: format!("Ballast {version} (slot {})", slot.as_str()),
                version: version.clone(),
                linux: format!("/ballast/{}/vmlinuz", slot.as_str()),
                initrd: format!("/ballast/{}/initrd.img", slot.as_str()),
                options: cmdline.to_owned(),
            };
            bls::Esp::new(dir)
                .write_entry(&entry, Some(tries))
                .context("writing slot A's boot entry")?;
            if inputs.bios.is_some() {
                // GRUB's side of the same slot state, for legacy BIOS boots: the
                // same command line and tries as the BLS entry.
                let options = entry.options.clone();
                let grub = grub::GrubDir::new(dir);
                let state = uboot::State {
                    seq: 0,
                    seq_boot: 0,
                    default: slot,
                    a: uboot::SlotState { tries, good: false },
                    b: uboot::SlotState {
                        tries: 0,
                        good: false,
                    },
                };
                grub.initialize(&state)
                    .and_then(|()| grub.write_slot_cfg(slot, &version, &options))
                    .context("writing the GRUB (BIOS) slot state")?;
            }
        }
        BootFirmware::UBoot => {
            std::fs::write(
                slot_dir.join("boot.env"),
                format!("ballast_args={cmdline}\nballast_version={version}\n"),
            )?;
            let params = if inputs.board.boot.files.is_empty() {
                // QEMU's qemu_arm U-Boot (-bios) on a virtio disk.
                uboot::ScriptParams::qemu_arm()
            } else {
                stage_board_files(inputs, dir)?;
                let cmd = match inputs.board.arch {
                    Arch::Arm64 => "booti",
                    _ => "bootz",
                };
                let mut params =
                    uboot::ScriptParams::distro_boot(cmd, &inputs.board.boot.u_boot_env);
                params.model_args = inputs
                    .board
                    .boot
                    .model_cmdline
                    .iter()
                    .map(|(fdtfile, args)| (fdtfile.clone(), args.join(" ")))
                    .collect();
                params
            };
            let script = uboot::boot_script(&params);
            std::fs::write(
                dir.join("boot.scr"),
                uboot::mkimage_script(&script, "ballast"),
            )?;
            let state = uboot::State {
                seq: 0,
                seq_boot: 0,
                default: slot,
                a: uboot::SlotState { tries, good: false },
                b: uboot::SlotState {
                    tries: 0,
                    good: false,
                },
            };
            uboot::BootDir::new(dir)
                .write_state(&state)
                .context("writing the U-Boot slot state")?;
        }
    }
    Ok(())
}

/// A real board's boot files: its U-Boot (and the Pi's GPU firmware) from
/// Debian, the kernel's device trees under `dtbs/` for the boot script, and on
/// the Raspberry Pi `config.txt` plus the same device trees at the top, where
/// the GPU firmware looks for the one `config.txt` names.
fn stage_board_files(inputs: &Inputs<'_>, dir: &Path) -> Result<()> {
    let board = inputs.board;
    for (dest, file) in inputs.board_files {
        let to = dir.join(dest);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(file, &to).with_context(|| format!("copying {}", file.display()))?;
        if !board.boot.config_txt.is_empty() && dest.starts_with("dtbs/") && dest.ends_with(".dtb")
        {
            if let Some(name) = Path::new(dest).file_name() {
                std::fs::copy(file, dir.join(name))
                    .with_context(|| format!("copying {}", file.display()))?;
            }
        }
    }
    if !board.boot.config_txt.is_empty() {
        let mut text = format!(
            "# Written by `ballast build` for board {} (boards/{}.toml): the GPU\n\
             # firmware starts U-Boot, which runs boot.scr (A/B slots, boot counting).\n",
            board.name, board.name
        );
        for line in &board.boot.config_txt {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(dir.join("config.txt"), text)?;
    }
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .with_context(|| format!("reading {}", d.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Regular files under `dir`, as (relative path with '/', bytes), sorted.
fn collect_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = BTreeMap::new();
    for path in walk(dir)? {
        if path.is_file() {
            let rel = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            files.insert(rel, bytes);
        }
    }
    Ok(files.into_iter().collect())
}
