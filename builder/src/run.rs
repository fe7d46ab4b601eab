//! `ballast run`: boot a board's build under QEMU, serial console on stdout.

use anyhow::{bail, Context, Result};
use ballast_inputs::{Board, QemuProfile};
use clap::Args;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::build::BuildResult;
use crate::project::Project;
use crate::qemu::{self, AccelChoice, DiskBoot, Launch};

mod armstub;
mod attach;
pub mod boot_args;
mod live;
mod netboot;
mod overlay;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Board name (boards/NAME.toml) or path to a board file.
    #[arg(long)]
    pub board: String,
    /// The build directory (default: out/BOARD, where `ballast build` writes).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Forward this host port (on 127.0.0.1) to the guest's SSH port.
    #[arg(long, value_name = "PORT")]
    pub ssh_port: Option<u16>,
    /// The disk image to boot (default: the build's `disk` artifact). The VM
    /// boots a copy-on-write overlay of it (see --fresh, --no-overlay).
    #[arg(value_name = "DISK")]
    pub disk: Option<PathBuf>,
    /// Start the VM afresh: discard its overlay (and UEFI variables), so it
    /// boots the image as first flashed.
    #[arg(long, conflicts_with = "no_overlay")]
    pub fresh: bool,
    /// Boot the disk image itself, as it is: the VM writes to it (like a
    /// flashed card) and its state partition is only as large as the image.
    #[arg(long)]
    pub no_overlay: bool,
    /// Boot the build's kernel and initramfs directly (no firmware, no disk).
    #[arg(long)]
    pub direct: bool,
    /// Extra kernel command-line arguments for --direct, e.g.
    /// `--append ballast.debug=poweroff` (a disk boots the command line in
    /// its boot entry; build with `--kernel-arg` to change that).
    #[arg(long, value_name = "ARGS", requires = "direct")]
    pub append: Vec<String>,
    /// Accelerator: auto probes KVM once and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Exit QEMU instead of rebooting the guest.
    #[arg(long)]
    pub no_reboot: bool,
    /// Attach this NoCloud seed image (`ballast seed`) as a read-only second
    /// drive: the device reads its first-boot config from it.
    #[arg(long, value_name = "PATH")]
    pub seed: Option<PathBuf>,
    /// Attach this file as an extra writable virtio disk (raw), before the
    /// seed: the first is `/dev/vdb`, the next `/dev/vdc`... Repeatable. For
    /// a data disk of the first-boot config's `disk_setup`/`mounts`. With
    /// --iso they follow the blank target disk. With --netboot they are the
    /// machine's local disks (after --blank-disk's): an ext4 labelled
    /// `ballast-state` keeps a diskless machine's state.
    #[arg(long, value_name = "PATH")]
    pub drive: Vec<PathBuf>,
    /// Boot the live ISO (default: the build's `iso` artifact) as a CD, with an
    /// empty target disk; the ISO is attached read-only.
    #[arg(long, value_name = "PATH", num_args = 0..=1, conflicts_with_all = ["direct", "disk", "no_overlay", "fresh"])]
    pub iso: Option<Option<PathBuf>>,
    /// With --iso: attach it as a USB stick (xHCI, usb-storage) instead of a CD.
    #[arg(long, requires = "iso")]
    pub usb: bool,
    /// Boot through SeaBIOS (legacy BIOS) instead of UEFI (x86_64).
    #[arg(long)]
    pub bios: bool,
    /// With --iso: size of the empty target disk (default 8G), made afresh each run
    /// beside the ISO (`ballast.target.img`; UEFI variables in `ballast.efivars.fd`).
    /// With --netboot: an empty disk of SIZE (default: none, diskless) beside
    /// DIR (`DIR.target.img`), for an installer set (`ballast netboot --install`).
    #[arg(long, value_name = "SIZE")]
    pub blank_disk: Option<String>,
    /// Boot a netboot set (`ballast netboot --out DIR`) over the network:
    /// QEMU's TFTP serves DIR's boot.ipxe to the NIC's iPXE, and this command
    /// serves DIR over HTTP on 127.0.0.1 at the set's base-URL port until QEMU
    /// exits (x86_64, SeaBIOS).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["direct", "disk", "no_overlay", "fresh", "iso", "seed"])]
    pub netboot: Option<PathBuf>,
    /// With --netboot: the machine's RAM in MiB instead of the QEMU profile's
    /// (to find the least a diskless machine boots with).
    #[arg(long, value_name = "MIB", requires = "netboot")]
    pub memory: Option<u32>,
    /// Add a hardware watchdog: QEMU's i6300esb (PCI), which resets the
    /// machine when PID 1 stops petting it (a hung sysd). Stage 1 loads its
    /// driver on x86_64 and arm64.
    #[arg(long)]
    pub watchdog: bool,
    /// Start the machine's real-time clock at WHEN, in UTC
    /// (`YYYY-MM-DDTHH:MM:SS` or `YYYY-MM-DD`), instead of the host's time
    /// (QEMU's `-rtc base=WHEN`): a wrong clock, for seeing the device's time
    /// service set it. The raspi boards have no RTC (nor have QEMU's models of
    /// them) and ignore it.
    #[arg(long, value_name = "WHEN", value_parser = parse_clock)]
    pub clock: Option<String>,
    /// Cache directory (default: BALLAST_CACHE, else the user's cache dir).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

/// `--clock WHEN`: a UTC date and time as QEMU's `-rtc base=` takes it,
/// `YYYY-MM-DDTHH:MM:SS` or `YYYY-MM-DD`, checked field by field.
fn parse_clock(when: &str) -> Result<String, String> {
    const FORM: &str =
        "expected a UTC time as YYYY-MM-DDTHH:MM:SS or YYYY-MM-DD, e.g. 2030-01-31T12:00:00";
    // clap's error names the option and the value before this.
    let bad = |why: String| Err(format!("{why}; {FORM}"));
    let (date, time) = match when.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (when, None),
    };
    let fields = |text: &str, sep: char, widths: [usize; 3]| -> Option<[u32; 3]> {
        let parts: Vec<&str> = text.split(sep).collect();
        if parts.len() != 3 {
            return None;
        }
        let mut out = [0; 3];
        for ((o, part), width) in out.iter_mut().zip(&parts).zip(widths) {
            if part.len() != width || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *o = part.parse().ok()?;
        }
        Some(out)
    };
    let Some([y, m, d]) = fields(date, '-', [4, 2, 2]) else {
        return bad(format!("{date:?} is not a date YYYY-MM-DD"));
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if y < 1970 || !(1..=12).contains(&m) || d == 0 || d > month_days {
        return bad(format!("{date} is not a calendar day from 1970 on"));
    }
    if let Some(time) = time {
        let Some([h, min, sec]) = fields(time, ':', [2, 2, 2]) else {
            return bad(format!("{time:?} is not a time HH:MM:SS"));
        };
        if h > 23 || min > 59 || sec > 59 {
            return bad(format!("{time} is not a time of day"));
        }
    }
    Ok(when.to_owned())
}

/// Start the machine's RTC at `when` (`--clock`): QEMU's `-rtc base=WHEN`,
/// added to the profile's extra arguments, or set as the base of the
/// profile's own `-rtc` (QEMU takes one; none of qemu/*.toml passes it now).
fn set_rtc_base(extra_args: &mut Vec<String>, when: &str) {
    let base = format!("base={when}");
    match extra_args.iter().position(|a| a == "-rtc") {
        Some(i) if i + 1 < extra_args.len() => {
            let mut opts = vec![base];
            opts.extend(
                extra_args[i + 1]
                    .split(',')
                    .filter(|o| !o.is_empty() && !o.starts_with("base="))
                    .map(str::to_owned),
            );
            extra_args[i + 1] = opts.join(",");
        }
        _ => {
            extra_args.retain(|a| a != "-rtc");
            extra_args.extend(["-rtc".to_owned(), base]);
        }
    }
}

pub fn run(project: &Project, args: &RunArgs) -> Result<ExitCode> {
    let board = Board::find(&project.boards_dir(), &args.board)?;
    let profile_name = board.qemu.as_deref().with_context(|| {
        format!(
            "{}: board has no `qemu` profile, so it cannot be run under QEMU",
            board.path.display()
        )
    })?;
    let mut profile = QemuProfile::find(&project.qemu_dir(), profile_name)?;
    // Every way of booting (disk, --direct, --iso, --netboot) passes the
    // profile's extra arguments to QEMU.
    if let Some(when) = &args.clock {
        set_rtc_base(&mut profile.extra_args, when);
    }
    if let Some(dir) = &args.netboot {
        return run_netboot(&board, profile, dir, args);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| project.default_out(&board.name));
    let build = BuildResult::load(&out).with_context(|| {
        format!(
            "no build of {} in {}: run `ballast build --board {}` first",
            board.name,
            out.display(),
            board.name
        )
    })?;
    if let Some(iso) = &args.iso {
        return run_live(&board, profile, &build, iso.as_deref(), args);
    }
    if args.blank_disk.is_some() {
        bail!("--blank-disk: only with --iso or --netboot (a disk boot has its own disk; add data disks with --drive)");
    }
    let mut cmdline = build.cmdline.clone();
    // The machine model's own needs (raspi3b); a disk gets them below.
    if args.direct {
        for extra in &profile.kernel_args {
            cmdline.push(' ');
            cmdline.push_str(extra);
        }
    }
    for extra in &args.append {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    let disk = if args.direct {
        None
    } else {
        let image = match &args.disk {
            Some(path) => path.clone(),
            None => build.artifact("disk").with_context(|| {
                format!("boot the kernel and initramfs with `ballast run --board {} --direct`, or build a disk image", board.name)
            })?,
        };
        let kernel_args = card_kernel_args(&board, &profile);
        let image = if args.no_overlay {
            if !kernel_args.is_empty() {
                boot_args::write_raw(&image, kernel_args)?;
            }
            image
        } else {
            let (overlay, new) = overlay::prepare_new(&image, args.fresh)?;
            if !kernel_args.is_empty() && new {
                boot_args::write_overlay(&image, &overlay, kernel_args)?;
            }
            overlay
        };
        let mut boot = disk_boot(&profile, &image)?;
        firmware_images(&profile, &build, &mut boot)?;
        if args.bios {
            if board.arch != ballast_inputs::Arch::X86_64 {
                bail!(
                    "--bios: board {} is {}; only x86_64 disks boot on legacy BIOS (SeaBIOS)",
                    board.name,
                    board.arch.name()
                );
            }
            // No pflash and no -bios: QEMU's own default firmware, SeaBIOS.
            boot.uefi = None;
            boot.bios = None;
        }
        Some(boot)
    };
    let launch = Launch {
        profile,
        kernel: build.artifact("kernel")?,
        initrd: build.artifact("initrd")?,
        cmdline,
        ssh_port: args.ssh_port,
        no_reboot: args.no_reboot,
        disk,
    };
    let cache = crate::project::cache_dir(args.cache.as_deref());
    let accel = qemu::choose_accel(&launch, board.arch, args.accel, &cache)?;
    let mut cmd = launch.command(accel);
    for (i, drive) in args.drive.iter().enumerate() {
        if !drive.is_file() {
            bail!(
                "--drive {}: no such file (make one with `truncate -s 1G FILE`)",
                drive.display()
            );
        }
        cmd.args(qemu::drive_args(&launch.profile, drive, i));
    }
    if let Some(seed) = &args.seed {
        if !seed.is_file() {
            bail!(
                "--seed {}: no such seed image (make one with `ballast seed`)",
                seed.display()
            );
        }
        cmd.args(qemu::seed_args(&launch.profile, seed));
    }
    if args.watchdog {
        // QEMU's default watchdog action is a reset (with -no-reboot: exit).
        cmd.args(["-device", "i6300esb"]);
    }
    if let (Some(after), Some(_)) = (&launch.profile.net_attach_after, &launch.disk) {
        return attach::run(cmd, &launch.profile, after);
    }
    // Become QEMU: signals (a test's timeout, Ctrl-C) reach it directly and
    // its exit code is ours.
    let err = cmd.exec();
    Err(err).with_context(|| {
        format!(
            "starting {}: is QEMU installed? (scripts/setup)",
            launch.profile.binary
        )
    })
}

/// `ballast run --netboot`: QEMU as a child, the HTTP server beside it.
fn run_netboot(
    board: &Board,
    profile: QemuProfile,
    dir: &Path,
    args: &RunArgs,
) -> Result<ExitCode> {
    let dir = std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let probe = Launch {
        profile: profile.clone(),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        cmdline: String::new(),
        ssh_port: None,
        no_reboot: true,
        disk: None,
    };
    let cache = crate::project::cache_dir(args.cache.as_deref());
    let accel = qemu::choose_accel(&probe, board.arch, args.accel, &cache)?;
    let blank_disk = match &args.blank_disk {
        Some(size) => {
            let path = netboot::blank_disk_path(&dir);
            live::make_blank_disk(&path, live::parse_size(size)?)?;
            Some(path)
        }
        None => None,
    };
    let mut cmd = netboot::command(
        &netboot::NetBoot {
            profile: &profile,
            arch: board.arch,
            dir: &dir,
            ssh_port: args.ssh_port,
            no_reboot: args.no_reboot,
            blank_disk: blank_disk.as_deref(),
            memory_mib: args.memory,
        },
        accel,
    )?;
    // Local disks after the blank one: e.g. an ext4 labelled ballast-state
    // that keeps a diskless machine's state.
    for (i, drive) in args.drive.iter().enumerate() {
        if !drive.is_file() {
            bail!("--drive {}: no such file", drive.display());
        }
        cmd.args(qemu::drive_args(&profile, drive, i + 1));
    }
    netboot::run(&dir, cmd)
}

/// `ballast run --iso`: become QEMU booting the ISO, with a fresh blank disk.
fn run_live(
    board: &Board,
    profile: QemuProfile,
    build: &BuildResult,
    iso: Option<&Path>,
    args: &RunArgs,
) -> Result<ExitCode> {
    let iso = match iso {
        Some(p) => p.to_path_buf(),
        None => build.artifact("iso").with_context(|| {
            format!(
                "the {} build has no ISO (x86_64 and arm64 UEFI boards get one from `ballast build`)",
                board.name
            )
        })?,
    };
    if !iso.is_file() {
        bail!("--iso {}: no such file", iso.display());
    }
    let bytes = live::parse_size(args.blank_disk.as_deref().unwrap_or("8G"))?;
    let (target, efivars) = live::run_files(&iso);
    live::make_blank_disk(&target, bytes)?;
    let probe = Launch {
        profile: profile.clone(),
        kernel: build.artifact("kernel")?,
        initrd: build.artifact("initrd")?,
        cmdline: build.cmdline.clone(),
        ssh_port: None,
        no_reboot: true,
        disk: None,
    };
    let cache = crate::project::cache_dir(args.cache.as_deref());
    let accel = qemu::choose_accel(&probe, board.arch, args.accel, &cache)?;
    let mut cmd = live::command(
        &live::LiveBoot {
            profile: &profile,
            arch: board.arch,
            iso: &iso,
            usb: args.usb,
            bios: args.bios,
            blank_disk: &target,
            ssh_port: args.ssh_port,
            no_reboot: args.no_reboot,
            efivars: &efivars,
        },
        accel,
    )?;
    // Extra disks after the blank target (`/dev/vdb`... on virtio): e.g. the
    // raw image `ballast bench install` copies with dd.
    for (i, drive) in args.drive.iter().enumerate() {
        if !drive.is_file() {
            bail!("--drive {}: no such file", drive.display());
        }
        cmd.args(qemu::drive_args(&profile, drive, i));
    }
    let err = cmd.exec();
    Err(err).with_context(|| {
        format!(
            "starting {}: is QEMU installed? (scripts/setup)",
            profile.binary
        )
    })
}

/// The firmware files for booting `image` (raw, or a qcow2 overlay): UEFI gets
/// a variable store of its own beside the disk (created from the profile's
/// template on first use), so boot entries and counters persist across runs
/// like on a real machine.
pub fn disk_boot(profile: &QemuProfile, image: &Path) -> Result<DiskBoot> {
    if !image.is_file() {
        bail!("{}: no such disk image", image.display());
    }
    let firmware = profile.firmware.as_ref().with_context(|| {
        format!(
            "{}: the QEMU profile names no [firmware], so it cannot boot a disk; use --direct",
            profile.path.display()
        )
    })?;
    let uefi = match (&firmware.code, &firmware.vars) {
        (Some(code), Some(template)) => {
            for f in [code, template] {
                if !f.is_file() {
                    bail!(
                        "{}: firmware {} is missing: run scripts/setup",
                        profile.path.display(),
                        f.display()
                    );
                }
            }
            let vars = image.with_extension("efivars.fd");
            if !vars.is_file() {
                std::fs::copy(template, &vars).with_context(|| {
                    format!("copying {} to {}", template.display(), vars.display())
                })?;
            }
            Some((code.clone(), vars))
        }
        (None, None) => None,
        _ => bail!(
            "{}: [firmware] needs both `code` and `vars` for UEFI",
            profile.path.display()
        ),
    };
    if let Some(bios) = &firmware.bios {
        if !bios.is_file() {
            bail!(
                "{}: firmware {} is missing: run scripts/setup",
                profile.path.display(),
                bios.display()
            );
        }
    }
    Ok(DiskBoot {
        image: image.to_path_buf(),
        format: overlay::format_of(image)?,
        uefi,
        bios: firmware.bios.clone(),
        kernel: None,
        loads: Vec::new(),
    })
}

/// The profile's `kernel_args` a VM's card gets in its `cmdline_extra.txt`:
/// only on a board whose own U-Boot reads that file (distro boot, board
/// files), none elsewhere.
pub fn card_kernel_args<'a>(board: &Board, profile: &'a QemuProfile) -> &'a [String] {
    let uboot_board =
        !board.boot.files.is_empty() && board.boot.firmware == ballast_inputs::BootFirmware::UBoot;
    if uboot_board {
        &profile.kernel_args
    } else {
        &[]
    }
}

/// What the profile's firmware stands in for the board's first stage with
/// (the Raspberry Pi's U-Boot, which its GPU firmware would load: see
/// `Firmware::kernel_artifact`): the build artifact as `-kernel`, or at
/// `kernel_addr` behind the firmware's ARM stub (`Firmware::armstub`, written
/// beside the artifact).
pub fn firmware_images(
    profile: &QemuProfile,
    build: &BuildResult,
    boot: &mut DiskBoot,
) -> Result<()> {
    let Some(firmware) = &profile.firmware else {
        return Ok(());
    };
    let Some(key) = &firmware.kernel_artifact else {
        return Ok(());
    };
    let kernel = build
        .artifact(key)
        .with_context(|| format!("{}: [firmware] kernel_artifact", profile.path.display()))?;
    if let Some(stub) = firmware.armstub {
        let path = kernel.with_file_name("qemu-armstub.bin");
        ballast_device::atomic::write_atomic(&path, &armstub::image(stub))?;
        boot.loads.push((path, 0));
    }
    match firmware.kernel_addr {
        Some(addr) => boot.loads.push((kernel, addr)),
        None => boot.kernel = Some(kernel),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn clock_takes_a_utc_date_or_date_and_time() {
        for good in [
            "2030-01-31T12:00:00",
            "2030-01-31",
            "1970-01-01T00:00:00",
            "2024-02-29T23:59:59",
        ] {
            assert_eq!(parse_clock(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "tomorrow",
            "2030-1-31",
            "2030-01-31 12:00:00",
            "2030-01-31T12:00",
            "2030-01-31T12:00:00Z",
            "2030-01-31T24:00:00",
            "2030-02-29",
            "2030-13-01",
            "1969-12-31",
            "+030-01-01",
        ] {
            let err = parse_clock(bad).expect_err(bad);
            assert!(err.contains("YYYY-MM-DDTHH:MM:SS or YYYY-MM-DD"), "{err}");
        }
    }

    #[test]
    fn a_bad_clock_is_refused_naming_the_option_and_the_value() {
        let args = Cli::try_parse_from(["run", "--board", "b", "--clock", "2030-01-31"])
            .expect("a date alone is a clock");
        assert_eq!(args.run.clock.as_deref(), Some("2030-01-31"));
        let err = Cli::try_parse_from(["run", "--board", "b", "--clock", "31.01.2030"])
            .err()
            .expect("a clock in another form is refused")
            .to_string();
        assert!(
            err.contains("--clock") && err.contains("31.01.2030") && err.contains("YYYY-MM-DD"),
            "{err}"
        );
    }

    #[test]
    fn the_clock_is_one_rtc_base() {
        let mut args = vec!["-device".to_owned(), "virtio-rng-pci".to_owned()];
        set_rtc_base(&mut args, "2030-01-31T12:00:00");
        assert_eq!(
            args,
            [
                "-device",
                "virtio-rng-pci",
                "-rtc",
                "base=2030-01-31T12:00:00"
            ]
        );
        // A profile's own -rtc keeps its other options and gets the new base.
        let mut args = vec!["-rtc".to_owned(), "base=utc,clock=vm".to_owned()];
        set_rtc_base(&mut args, "2030-01-31");
        assert_eq!(args, ["-rtc", "base=2030-01-31,clock=vm"]);
    }
}
