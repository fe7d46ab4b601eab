//! `ballast build`: turn a board file and an image file into bootable
//! artifacts. [`run`] lists the steps in order, one function each:
//!
//! 1. resolve the inputs: board and image files, the Debian kernel
//!    (`kernel_input`), checked against `kernel-configs/`;
//! 2. cross-compile init and sysd, whose binary is also osctl (`devbins`);
//! 3. assemble the initramfs (`initrd`);
//! 4. with a disk: fetch the bootloader (systemd-boot on UEFI boards);
//! 5. stage the root tree: the system containers' userland, sysd, osctl, keys
//!    (`userland`);
//! 6. build the disk image (`image`): root image + dm-verity, boot partition
//!    with the boot files, state partition, partition table;
//! 7. write the same OS as a signed update bundle (`ballast-bundle`), and for
//!    x86_64 and arm64 UEFI boards the hybrid live ISO (`iso`);
//! 8. put the outputs in place atomically (`ballast_device::atomic`) and record the build in
//!    `build.json` for `ballast run`;
//! 9. print the result (`--json`: one object on stdout).

use anyhow::{bail, Context, Result};
use ballast_inputs::{Board, ImageFile, QemuProfile};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::kernel_input::{self, ArchiveArgs};
use crate::project::Project;
use crate::{debpkg, devbins, disk_image, initrd, userland};
use ballast_bundle::PayloadName;
use ballast_device::atomic;
use ballast_inputs::Arch;
use ballast_inputs::BootFirmware;

use crate::effort::Effort;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Board name (boards/NAME.toml) or path to a board file.
    #[arg(long)]
    pub board: String,
    /// Image file (default: images/default.toml).
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Semantic version of the OS being built (default: the image file's).
    #[arg(long, value_name = "SEMVER")]
    pub version: Option<semver::Version>,
    /// Output directory (default: out/BOARD).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Rollback index of this build (default 0). A machine refuses any bundle
    /// with a lower index than its own, even with `osctl upgrade
    /// --allow-downgrade`: raise it in a release that fixes a security hole, so
    /// the vulnerable versions can never be installed again.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub rollback_index: u64,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Extra kernel command-line argument for every boot of this build
    /// (repeatable), e.g. `--kernel-arg ballast.debug=poweroff`.
    #[arg(long = "kernel-arg", value_name = "ARG")]
    pub kernel_args: Vec<String>,
    /// An SSH public key file for user `ballast`, baked into the image
    /// (repeatable). For development and tests: first-boot config is the
    /// way to give keys to real machines.
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_keys: Vec<PathBuf>,
    /// Build only the kernel and initramfs, no disk image.
    #[arg(long)]
    pub no_disk: bool,
    /// Secret key that signs the update bundle (`ballast keygen` writes one). Its
    /// public half is baked into the image as a trusted update key. Default:
    /// `BALLAST_SIGNING_KEY`, else `keys/dev.key` in the project, generated on first
    /// use (a development key: keep release keys out of the tree).
    #[arg(long, value_name = "FILE", env = "BALLAST_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// Another public key (`*.pub`) the image trusts for updates (repeatable), e.g.
    /// the release key when the build is signed with a development key.
    #[arg(long = "trusted-key", value_name = "FILE")]
    pub trusted_keys: Vec<PathBuf>,
    /// A first-boot config (`#cloud-config` or TOML) copied to the boot
    /// partition as `user-data`, as a user would after flashing.
    #[arg(long = "user-data", value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// NoCloud meta-data (instance-id, local-hostname) copied beside it.
    #[arg(long = "meta-data", value_name = "FILE", requires = "user_data")]
    pub meta_data: Option<PathBuf>,
    /// How hard to compress the root filesystem, the initramfs and the arm64 ISO's kernel:
    /// `best` for images you ship; `fast` to iterate, many times quicker and
    /// about 20 % larger, with the same formats and boot.
    #[arg(long, value_enum, value_name = "EFFORT", default_value = "best")]
    pub compress: Effort,
    #[command(flatten)]
    pub archive: ArchiveArgs,
}

#[derive(Args, Debug)]
pub struct KernelCheckArgs {
    /// Board whose kernel to check.
    #[arg(long)]
    pub board: String,
    /// Image file (default: images/default.toml); its Debian suites are used.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub archive: ArchiveArgs,
}

/// What a build produced; printed with `--json` and kept as `build.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildResult {
    pub board: String,
    pub arch: String,
    pub version: String,
    pub artifacts: BTreeMap<String, PathBuf>,
    /// Kernel command line for booting `kernel` + `initrd` directly.
    pub cmdline: String,
    /// The Debian kernel release (`uname -r`) inside the build.
    pub kernel_release: String,
    /// dm-verity root hash of slot A's root image (when a disk was built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hash: Option<String>,
    /// Size of that root image with its hash tree, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_bytes: Option<u64>,
    /// Slot A's kernel command line without `ballast.slot=`/`ballast.disk=`
    /// (consoles, `panic=`, `ballast.verity=`): what `ballast netboot` boots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_cmdline: Option<String>,
}

impl BuildResult {
    pub const FILE: &'static str = "build.json";

    pub fn load(out: &Path) -> Result<BuildResult> {
        let path = out.join(Self::FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn artifact(&self, key: &str) -> Result<PathBuf> {
        let path = self
            .artifacts
            .get(key)
            .with_context(|| format!("the build has no {key:?} artifact"))?;
        if !path.is_file() {
            bail!("artifact {key:?} ({}) is missing: rebuild", path.display());
        }
        Ok(path.clone())
    }
}

fn load_inputs(project: &Project, board: &str, image: Option<&Path>) -> Result<(Board, ImageFile)> {
    let board = Board::find(&project.boards_dir(), board)?;
    let image_path = image
        .map(Path::to_path_buf)
        .unwrap_or_else(|| project.default_image());
    let image = ImageFile::load(&image_path)?;
    if let Some(profile) = &board.qemu {
        // Fail now, not at `ballast run`, when the board names a missing profile.
        QemuProfile::find(&project.qemu_dir(), profile)
            .with_context(|| format!("{}: field `qemu`", board.path.display()))?;
    }
    Ok((board, image))
}

/// `ballast build`, one step after the other. Each step takes what the earlier
/// ones made; nothing replaces the previous outputs until the last one.
pub fn run(project: &Project, args: &BuildArgs) -> Result<()> {
    let mut steps = StepTimes::default();
    let inputs = steps.time("inputs", || resolve_inputs(project, args))?;
    let bins = steps.time("device programs", || device_binaries(project, &inputs))?;
    let initrd = steps.time("initramfs", || {
        initramfs(&inputs, &bins, args.rollback_index, args.compress)
    })?;
    let work = fresh_scratch(&inputs.out)?;
    let mut iso_tmp = None;
    let disk = if args.no_disk {
        None
    } else {
        let (systemd_boot, board_files, bios) = steps.time("bootloaders", || {
            Ok((
                bootloader(&inputs, &args.archive)?,
                crate::board_files::collect(
                    &inputs.archive,
                    &inputs.board,
                    &args.archive,
                    &inputs.kernel,
                )?,
                bios_bootloader(&inputs, &args.archive, &work)?,
            ))
        })?;
        let root_tree = work.join("rootfs");
        let signer = steps.time("userland", || {
            userland(project, &inputs, &bins, args, &root_tree)
        })?;
        let boot_files = crate::cmd_seed::seed_files(
            args.user_data.as_deref(),
            args.meta_data.as_deref(),
            None,
        )?;
        let disk_tmp = work.join("disk.img");
        let built = steps.time("disk", || {
            disk_image(
                &inputs,
                &initrd,
                &bins,
                &DiskParts {
                    root_tree: &root_tree,
                    systemd_boot: systemd_boot.as_deref(),
                    bios: bios.as_ref(),
                    boot_files: &boot_files,
                    board_files: &board_files,
                    rollback_index: args.rollback_index,
                    effort: args.compress,
                    work: &work,
                },
                &disk_tmp,
            )
        })?;
        let bundle_tmp = steps.time("bundle", || {
            update_bundle(&inputs, &initrd, &built, &signer, args, &work)
        })?;
        steps.time("install image", || {
            crate::install_image::write(
                &disk_tmp,
                &inputs.version.to_string(),
                &inputs.board.name,
                inputs.board.arch.name(),
                &signer,
                &work,
            )
            .context("writing the install image")
        })?;
        // The board's U-Boot builds beside the disk, one artifact each, named
        // by file stem (`u-boot`, `u-boot-rpi2`): what `ballast run` gives
        // QEMU where the Pi's GPU firmware (which QEMU lacks) would load it.
        let u_boot: UBootFiles = board_files
            .iter()
            .filter_map(|(dest, file)| {
                let stem = dest.strip_suffix(".bin")?;
                stem.starts_with("u-boot")
                    .then(|| (stem.to_owned(), file.clone()))
            })
            .collect();
        iso_tmp = steps.time("iso", || {
            live_iso(
                &inputs,
                &initrd,
                &built,
                (&disk_tmp, &signer),
                systemd_boot.as_deref(),
                args,
                &work,
            )
        })?;
        Some((built, disk_tmp, bundle_tmp, u_boot))
    };
    let result = steps.time("outputs", || {
        write_outputs(&inputs, &initrd, disk, iso_tmp, &work)
    })?;
    print_result(&inputs, &initrd, &result, args.json)?;
    if !args.json {
        eprintln!("  steps: {steps}");
    }
    Ok(())
}

/// How long each step of a build took, in the order they ran: printed under the
/// summary, so a slow rebuild says where its time went.
#[derive(Default)]
struct StepTimes(Vec<(&'static str, std::time::Duration)>);

impl StepTimes {
    fn time<T>(&mut self, name: &'static str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = std::time::Instant::now();
        let out = step();
        self.0.push((name, started.elapsed()));
        out
    }
}

impl std::fmt::Display for StepTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: std::time::Duration = self.0.iter().map(|(_, d)| *d).sum();
        for (name, d) in &self.0 {
            write!(f, "{name} {:.1} s, ", d.as_secs_f64())?;
        }
        write!(f, "in all {:.1} s", total.as_secs_f64())
    }
}

/// What every step needs to know: the board and image files, the version, where
/// the outputs go, and the verified Debian kernel that meets `kernel-configs/`.
struct BuildInputs {
    board: Board,
    /// The image file (`images/*.toml`): what goes into the OS.
    image_file: ImageFile,
    version: semver::Version,
    /// The output directory, absolute.
    out: PathBuf,
    archive: ballast_debarchive::client::Archive,
    kernel: kernel_input::KernelTree,
    /// The kernel check, with the modules the initramfs needs.
    kernel_report: ballast_kernel::check::Report,
    /// Every boot's kernel command line: the board's, the image's, then `--kernel-arg`.
    cmdline: Vec<String>,
    /// The board's firmware files for the initramfs (`kernel.firmware`).
    firmware: Vec<(String, PathBuf)>,
}

/// Step 1: read the board and image files, resolve and verify the Debian kernel,
/// and refuse a kernel that lacks what Ballast needs.
fn resolve_inputs(project: &Project, args: &BuildArgs) -> Result<BuildInputs> {
    let (board, image) = load_inputs(project, &args.board, args.image.as_deref())?;
    let version = args
        .version
        .clone()
        .unwrap_or_else(|| image.version.clone());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| project.default_out(&board.name));
    let out = absolute(&out)?;

    let (archive, kernel, report) = board_kernel(project, &board, &image, &args.archive)?;
    if !report.ok {
        bail!(
            "the kernel {} of board {} lacks options Ballast needs:\n{report}\n\
             Choose a kernel package that has them (boards/{}.toml, kernel.package) \
             or change kernel-configs/ if the requirement is wrong",
            kernel.release,
            board.name,
            board.name
        );
    }
    let mut cmdline = board.base_cmdline();
    cmdline.extend(image.kernel.cmdline.iter().cloned());
    cmdline.extend(args.kernel_args.iter().cloned());
    let firmware = crate::board_files::firmware(&archive, &board, &args.archive)?;
    Ok(BuildInputs {
        board,
        image_file: image,
        version,
        out,
        archive,
        kernel,
        kernel_report: report,
        cmdline,
        firmware,
    })
}

/// Ballast's own device programs, cross-compiled for the board: init, and
/// sysd's binary, which is also osctl (run under that name; ADR 0018).
struct DeviceBins {
    init: PathBuf,
    sysd: PathBuf,
}

/// Step 2: cross-compile init and sysd (with osctl) from this checkout.
fn device_binaries(project: &Project, inputs: &BuildInputs) -> Result<DeviceBins> {
    let bins = devbins::build(
        project,
        inputs.board.arch,
        &["ballast-init", "ballast-sysd"],
        &["init", "sysd"],
    )?;
    let [init, sysd] = <[PathBuf; 2]>::try_from(bins)
        .map_err(|bins| anyhow::anyhow!("cargo built {} programs, not 2", bins.len()))?;
    Ok(DeviceBins { init, sysd })
}

/// Step 3: the initramfs: init plus exactly the kernel modules it needs.
fn initramfs(
    inputs: &BuildInputs,
    bins: &DeviceBins,
    rollback_index: u64,
    effort: Effort,
) -> Result<initrd::Assembled> {
    initrd::assemble(&initrd::Inputs {
        init: &bins.init,
        kernel: &inputs.kernel,
        modules: &inputs.kernel_report.initramfs_modules,
        beside: &inputs.kernel_report.beside_modules,
        version: &inputs.version,
        board: &inputs.board,
        rollback_index,
        firmware: &inputs.firmware,
        effort,
    })
}

/// Everything is made in a scratch directory (`OUT/.work`, emptied here) first;
/// outputs replace the previous ones only once all of them exist.
fn fresh_scratch(out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let work = out.join(".work");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    Ok(work)
}

/// Step 4 (disk builds): the bootloader binary, for UEFI boards systemd-boot
/// from Debian; U-Boot boards boot a script the slot library writes.
fn bootloader(inputs: &BuildInputs, archive_args: &ArchiveArgs) -> Result<Option<PathBuf>> {
    Ok(match inputs.board.boot.firmware {
        BootFirmware::Uefi => Some(systemd_boot_efi(
            &inputs.archive,
            archive_args,
            inputs.board.arch,
        )?),
        BootFirmware::UBoot => None,
    })
}

/// Step 4, BIOS half (x86_64 GPT disks on UEFI boards): GRUB from Debian's
/// `grub-pc-bin`, so the same disk also boots on legacy BIOS machines.
fn bios_bootloader(
    inputs: &BuildInputs,
    archive_args: &ArchiveArgs,
    work: &Path,
) -> Result<Option<crate::grub_bios::BiosLoader>> {
    let board = &inputs.board;
    if board.arch != Arch::X86_64
        || board.boot.firmware != BootFirmware::Uefi
        || board.boot.partition_table != ballast_inputs::PartitionTable::Gpt
    {
        return Ok(None);
    }
    crate::grub_bios::build(
        &inputs.archive,
        &archive_args.cache_dir(),
        &work.join("grub"),
    )
    .map(Some)
}

/// Step 5: the root tree: the system containers' userland and container
/// directories, sysd, osctl, baked SSH keys, and the public keys updates must be
/// signed with. Returns the key that signs this build's update bundle.
fn userland(
    project: &Project,
    inputs: &BuildInputs,
    bins: &DeviceBins,
    args: &BuildArgs,
    root_tree: &Path,
) -> Result<ballast_bundle::Signer> {
    let extra: Vec<String> = inputs
        .board
        .debian
        .packages
        .iter()
        .chain(&inputs.image_file.debian.packages)
        .cloned()
        .collect();
    stage_root(
        project,
        &inputs.archive,
        &inputs.image_file,
        &extra,
        bins,
        &args.ssh_keys,
        root_tree,
    )?;
    let signer = signing_key(project, args.signing_key.as_deref())?;
    bake_keys(&signer, &args.trusted_keys, root_tree)?;
    Ok(signer)
}

/// What goes on the disk besides the kernel and the initramfs.
struct DiskParts<'a> {
    root_tree: &'a Path,
    systemd_boot: Option<&'a Path>,
    /// GRUB for legacy BIOS (x86_64 disks).
    bios: Option<&'a crate::grub_bios::BiosLoader>,
    /// Files for the boot partition (`user-data`, `meta-data`).
    boot_files: &'a [(String, Vec<u8>)],
    /// The board's files from Debian for the boot partition (`board_files`).
    board_files: &'a [(String, PathBuf)],
    rollback_index: u64,
    effort: Effort,
    work: &'a Path,
}

/// Step 6: the disk image (`disk_image::assemble`): the root image (squashfs) and its
/// dm-verity hash tree in slot A, the boot partition with each slot's boot
/// files, the state partition, and the partition table.
fn disk_image(
    inputs: &BuildInputs,
    initrd: &initrd::Assembled,
    bins: &DeviceBins,
    parts: &DiskParts<'_>,
    dest: &Path,
) -> Result<disk_image::Built> {
    let (version, board) = (&inputs.version, &inputs.board);
    let os_release = initrd::os_release(version, board, parts.rollback_index)?;
    disk_image::assemble(
        &disk_image::Inputs {
            board: &inputs.board,
            image: &inputs.image_file,
            version: &inputs.version,
            kernel: &inputs.kernel.vmlinuz,
            initrd: &initrd.bytes,
            init: &bins.init,
            root_tree: parts.root_tree,
            os_release: &os_release,
            cmdline: &inputs.cmdline,
            systemd_boot: parts.systemd_boot,
            bios: parts.bios,
            epoch: initrd.epoch,
            work: parts.work,
            boot_files: parts.boot_files,
            board_files: parts.board_files,
            effort: parts.effort,
        },
        dest,
    )
}

/// Step 7: the same OS as a signed update bundle: root image, kernel, initramfs.
/// Returns where it was written in the scratch directory.
fn update_bundle(
    inputs: &BuildInputs,
    initrd: &initrd::Assembled,
    built: &disk_image::Built,
    signer: &ballast_bundle::Signer,
    args: &BuildArgs,
    work: &Path,
) -> Result<PathBuf> {
    let initrd_file = work.join("bundle-initrd.img");
    std::fs::write(&initrd_file, &initrd.bytes)
        .with_context(|| format!("writing {}", initrd_file.display()))?;
    let bundle_tmp = work.join("update.bundle");
    let base = ballast_bundle::Manifest {
        format: ballast_bundle::FORMAT,
        os: ballast_bundle::OS.to_owned(),
        version: inputs.version.to_string(),
        arch: inputs.board.arch.name().to_owned(),
        boards: vec![inputs.board.name.clone()],
        build_time: initrd.epoch,
        rollback_index: args.rollback_index,
        key_id: String::new(),
        cmdline: built.slot_cmdline.clone(),
        payloads: Vec::new(),
    };
    ballast_bundle::write(
        &bundle_tmp,
        base,
        &[
            ballast_bundle::Input {
                name: PayloadName::Root,
                path: &built.root_image,
            },
            ballast_bundle::Input {
                name: PayloadName::Kernel,
                path: &inputs.kernel.vmlinuz,
            },
            ballast_bundle::Input {
                name: PayloadName::Initrd,
                path: &initrd_file,
            },
        ],
        signer,
    )
    .context("writing the update bundle")?;
    Ok(bundle_tmp)
}

/// Step 7, for x86_64 and arm64 UEFI boards: the hybrid live ISO, from the root
/// image, kernel, initramfs and install image just built. Returns where it was
/// written in the scratch directory.
fn live_iso(
    inputs: &BuildInputs,
    initrd: &initrd::Assembled,
    built: &disk_image::Built,
    // The raw disk image and the key: the ISO's install image is made from them.
    (disk_tmp, signer): (&Path, &ballast_bundle::Signer),
    systemd_boot: Option<&Path>,
    args: &BuildArgs,
    work: &Path,
) -> Result<Option<PathBuf>> {
    let archive_args = &args.archive;
    let arch = inputs.board.arch;
    let (Some(systemd_boot), Arch::X86_64 | Arch::Arm64) = (systemd_boot, arch) else {
        return Ok(None);
    };
    let grub_cd = match arch {
        Arch::X86_64 => Some(crate::iso::grub_cd(
            &inputs.archive,
            &archive_args.cache_dir(),
            &work.join("grub-cd"),
        )?),
        _ => None,
    };
    // arm64: GRUB boots the gzip kernel (Debian's arm64 Image is 31.4 MiB raw
    // and neither systemd-boot nor the EFI stub loads a compressed one).
    let grub_efi = match arch {
        Arch::Arm64 => Some(
            crate::debpkg::unpacked(
                &inputs.archive,
                &archive_args.cache_dir(),
                "grub-efi-arm64-bin",
            )?
            .join("usr/lib/grub/arm64-efi"),
        ),
        _ => None,
    };
    let dest = work.join("ballast.iso");
    crate::iso::build(
        &crate::iso::Inputs {
            arch,
            version: &inputs.version.to_string(),
            root_image: &built.root_image,
            kernel: &inputs.kernel.vmlinuz,
            initrd: &initrd.bytes,
            disk: disk_tmp,
            install_manifest: &work.join(ballast_install::MANIFEST_FILE),
            signer,
            slot_cmdline: &built.slot_cmdline,
            systemd_boot,
            grub_cd: grub_cd.as_ref(),
            grub_efi: grub_efi.as_deref(),
            epoch: initrd.epoch,
            effort: args.compress,
            work,
        },
        &built.root_hash,
        &dest,
    )
    .context("writing the live ISO")?;
    Ok(Some(dest))
}

/// The board's U-Boot builds: (artifact name, file), e.g. (`u-boot-rpi2`, ...).
type UBootFiles = Vec<(String, PathBuf)>;

/// Step 8: put every artifact in place (kernel and initramfs written atomically,
/// disk and bundle renamed from the scratch directory), drop the scratch
/// directory, and record the build in `build.json`.
fn write_outputs(
    inputs: &BuildInputs,
    initrd: &initrd::Assembled,
    disk: Option<(disk_image::Built, PathBuf, PathBuf, UBootFiles)>,
    iso: Option<PathBuf>,
    work: &Path,
) -> Result<BuildResult> {
    let out = &inputs.out;
    let mut artifacts = BTreeMap::new();
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (stem, file) in disk.iter().flat_map(|(_, _, _, u_boot)| u_boot) {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let dest = out.join(format!("{stem}.bin"));
        atomic::write_atomic(&dest, &bytes)?;
        artifacts.insert(stem.clone(), dest);
    }
    if let Some((_, disk_tmp, bundle_tmp, _)) = &disk {
        staged.push((disk_tmp.clone(), out.join("disk.img")));
        artifacts.insert("disk".to_owned(), out.join("disk.img"));
        staged.push((bundle_tmp.clone(), out.join("update.bundle")));
        artifacts.insert("bundle".to_owned(), out.join("update.bundle"));
        for (tmp, name) in crate::install_image::staged(work) {
            staged.push((tmp, out.join(name)));
        }
        artifacts.insert(
            "install_image".to_owned(),
            out.join(ballast_install::IMAGE_FILE),
        );
    }
    if let Some((built, _, _, _)) = &disk {
        // Slot A's root image with its hash tree, for `ballast netboot`.
        staged.push((built.root_image.clone(), out.join("root.img")));
        artifacts.insert("root".to_owned(), out.join("root.img"));
    }
    if let Some(iso_tmp) = iso {
        staged.push((iso_tmp, out.join("ballast.iso")));
        artifacts.insert("iso".to_owned(), out.join("ballast.iso"));
    }

    let kernel_out = out.join("vmlinuz");
    let initrd_out = out.join("initrd.img");
    let vmlinuz = &inputs.kernel.vmlinuz;
    let kernel_bytes =
        std::fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    atomic::write_atomic(&kernel_out, &kernel_bytes)?;
    atomic::write_atomic(&initrd_out, &initrd.bytes)?;
    for (from, to) in &staged {
        std::fs::rename(from, to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        // A new disk starts with fresh firmware variables.
        let _ = std::fs::remove_file(to.with_extension("efivars.fd"));
    }
    // The disk and bundle were written and fsynced in OUT/.work; this makes
    // their renames durable too.
    atomic::sync_dir(out)?;
    if work.exists() {
        std::fs::remove_dir_all(work).with_context(|| format!("removing {}", work.display()))?;
    }
    artifacts.insert("kernel".to_owned(), kernel_out);
    artifacts.insert("initrd".to_owned(), initrd_out);

    let built = disk.map(|(built, _, _, _)| built);
    let result = BuildResult {
        board: inputs.board.name.clone(),
        arch: inputs.board.arch.name().to_owned(),
        version: inputs.version.to_string(),
        artifacts,
        cmdline: inputs.cmdline.join(" "),
        kernel_release: inputs.kernel.release.clone(),
        root_hash: built.as_ref().map(|d| d.root_hash.clone()),
        root_bytes: built.as_ref().map(|d| d.root_bytes),
        slot_cmdline: built.as_ref().map(|d| d.slot_cmdline.clone()),
    };
    let json = serde_json::to_string_pretty(&result)?;
    atomic::write_atomic(&out.join(BuildResult::FILE), json.as_bytes())?;
    Ok(result)
}

/// Step 9: the result, as one JSON object on stdout (`--json`) or a summary on
/// stderr.
fn print_result(
    inputs: &BuildInputs,
    initrd: &initrd::Assembled,
    result: &BuildResult,
    json: bool,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(result)?);
        return Ok(());
    }
    eprintln!(
        "ballast: built {} {} for {} ({}):",
        inputs.image_file.name, result.version, inputs.board.name, result.arch
    );
    for (key, path) in &result.artifacts {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        eprintln!("  {key:8} {} ({})", path.display(), human_size(size));
    }
    let kernel = &inputs.kernel;
    eprintln!(
        "  kernel {} ({} {}); initramfs: {} modules, {}",
        kernel.release, kernel.package, kernel.version, initrd.modules, initrd.compression
    );
    Ok(())
}

/// The board's Debian kernel, unpacked, and its configuration checked against
/// `kernel-configs/` (with the engine's options when the image has one).
fn board_kernel(
    project: &Project,
    board: &Board,
    image: &ImageFile,
    archive_args: &ArchiveArgs,
) -> Result<(
    ballast_debarchive::client::Archive,
    kernel_input::KernelTree,
    ballast_kernel::check::Report,
)> {
    let archive = kernel_input::open_archive(board, image, archive_args)?;
    let kernel = kernel_input::prepare(&archive, board, archive_args)?;
    let mut report = kernel_input::check(
        project,
        board,
        &kernel,
        image.engine.system_container().is_some(),
    )?;
    // The board's own drivers (SD and USB hosts, network) that Debian builds
    // as modules: stage 1 needs the SD host to find the root. Then the
    // image's own (a Wi-Fi test image's simulated radios).
    // These load before the root's search, even one the map loads beside it.
    for m in board.kernel.modules.iter().chain(&image.kernel.modules) {
        if !report.initramfs_modules.contains(m) {
            report.initramfs_modules.push(m.clone());
        }
        report.beside_modules.retain(|b| b != m);
    }
    Ok((archive, kernel, report))
}

pub fn kernel_check(project: &Project, args: &KernelCheckArgs) -> Result<ExitCode> {
    let (board, image) = load_inputs(project, &args.board, args.image.as_deref())?;
    let (_archive, kernel, report) = board_kernel(project, &board, &image, &args.archive)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("kernel {} ({}):", kernel.release, board.name);
        println!("{report}");
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("reading the working directory")?
            .join(p))
    }
}

pub fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// systemd-boot's EFI binary for `arch`, from Debian's `systemd-boot-efi`.
fn systemd_boot_efi(
    archive: &ballast_debarchive::client::Archive,
    args: &ArchiveArgs,
    arch: Arch,
) -> Result<PathBuf> {
    let tree = debpkg::unpacked(archive, &args.cache_dir(), "systemd-boot-efi")?;
    let name = match arch {
        Arch::X86_64 => "systemd-bootx64.efi",
        Arch::Arm64 => "systemd-bootaa64.efi",
        Arch::Armv7 => "systemd-bootarm.efi",
    };
    let path = tree.join("usr/lib/systemd/boot/efi").join(name);
    if !path.is_file() {
        bail!(
            "systemd-boot-efi for {} has no usr/lib/systemd/boot/efi/{name}",
            arch.debian()
        );
    }
    Ok(path)
}

/// The key that signs this build's update bundle: the flag / environment, else the
/// project's development key, made on first use.
pub(crate) fn signing_key(
    project: &Project,
    explicit: Option<&Path>,
) -> Result<ballast_bundle::Signer> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = project.root.join("keys/dev.key");
            if !p.exists() {
                let prefix = project.root.join("keys/dev");
                ballast_bundle::keys::generate(&prefix, "ballast development key").with_context(
                    || format!("generating the development signing key {}", p.display()),
                )?;
                eprintln!(
                    "ballast: generated the development signing key {} (images built here trust it; \
                     use --signing-key with a key from `ballast keygen` for releases)",
                    p.display()
                );
            }
            p
        }
    };
    ballast_bundle::keys::read_secret(&path)
        .with_context(|| format!("--signing-key {}", path.display()))
}

/// `/usr/lib/ballast/keys/<id>.pub`: the keys the device accepts updates from.
fn bake_keys(signer: &ballast_bundle::Signer, extra: &[PathBuf], tree: &Path) -> Result<()> {
    let dir = tree.join("usr/lib/ballast/keys");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut keys = vec![(signer.public(), "signing key of this build".to_owned())];
    for p in extra {
        let k = ballast_bundle::keys::read_public(p)
            .with_context(|| format!("--trusted-key {}", p.display()))?;
        keys.push((k, format!("from {}", p.display())));
    }
    for (k, comment) in keys {
        let file = dir.join(format!("{}.pub", k.id));
        std::fs::write(&file, k.to_text(&comment))
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// The root tree before init and os-release go in: the system containers'
/// userland and container directories, sysd and osctl.
fn stage_root(
    project: &Project,
    archive: &ballast_debarchive::client::Archive,
    image: &ImageFile,
    extra_packages: &[String],
    bins: &DeviceBins,
    ssh_keys: &[PathBuf],
    tree: &Path,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (base, defs) = userland::load_defs(project, image)?;
    let userland_dir = tree.join(userland::USERLAND);
    std::fs::create_dir_all(&userland_dir)?;
    let report = userland::build(archive, image, &base, &defs, extra_packages, &userland_dir)?;
    let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    eprintln!(
        "ballast: system containers {}: userland of {} Debian packages, {} files ({}) shipped, {} files ({}) nothing runs dropped",
        names.join(", "),
        report.packages,
        report.pruned.kept_files,
        human_size(report.pruned.kept_bytes),
        report.pruned.dropped_files,
        human_size(report.pruned.dropped_bytes),
    );
    if !report.pruned.unrunnable.is_empty() {
        eprintln!(
            "ballast: dropped {} scripts whose interpreter is not shipped (e.g. /{})",
            report.pruned.unrunnable.len(),
            report.pruned.unrunnable[0].display()
        );
    }
    userland::install_container_dirs(&defs, tree)?;
    let exe = |from: &Path, to: &Path| -> Result<()> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    };
    // sysd's binary is osctl under that name. The four names are hard links
    // of one file (squashfs keeps them one inode): the containers that run
    // it (the time client, the SSH container's `--admin-setup`) share the
    // pages sysd has already read, and the boot's read-ahead of sysd covers
    // them all.
    let sysd = tree.join("usr/lib/ballast/sysd");
    exe(&bins.sysd, &sysd)?;
    let link = |to: &Path| -> Result<()> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::symlink_metadata(to).is_ok() {
            std::fs::remove_file(to)?;
        }
        std::fs::hard_link(&sysd, to)
            .with_context(|| format!("linking {} to {}", to.display(), sysd.display()))
    };
    link(&tree.join("usr/bin/osctl"))?;
    // The admin environment (the SSH container) has osctl too, and the time
    // container runs `sysd --time-sync` (ADR 0020).
    link(&userland_dir.join("usr/bin/osctl"))?;
    link(&userland_dir.join("usr/lib/ballast/sysd"))?;
    if !ssh_keys.is_empty() {
        let mut keys = String::new();
        for key in ssh_keys {
            let text = std::fs::read_to_string(key)
                .with_context(|| format!("--ssh-key {}", key.display()))?;
            if !text.trim_start().starts_with("ssh-") && !text.trim_start().starts_with("ecdsa-") {
                bail!(
                    "--ssh-key {}: not an OpenSSH public key (expected a line like `ssh-ed25519 AAAA...`)",
                    key.display()
                );
            }
            keys.push_str(text.trim_end());
            keys.push('\n');
        }
        let dest = userland_dir.join("usr/lib/ballast/ssh/authorized_keys");
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&dest, keys)?;
    }
    crate::prune::write_provenance(&userland_dir, &report.owners, &image.version.to_string())?;
    // What the boot reads ahead, paths relative to `/`: first sysd's binary
    // (the reader is that binary too, but runs only the pages it needs;
    // sysd itself starts soon after; the userland's sysd, which the SSH
    // container's start and the time container run first, is the same
    // inode), then what the containers' build.toml files name.
    let mut list = format!("{}\n", ballast_device::paths::SYSD.trim_start_matches('/'));
    for f in &report.read_ahead {
        list.push_str(&format!("{}/{}\n", userland::USERLAND, f.display()));
    }
    let dest = ballast_device::paths::under(tree, ballast_device::paths::READ_AHEAD);
    std::fs::write(&dest, list).with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}
