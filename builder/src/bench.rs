//! `ballast bench boot --board B`: how long a build takes from QEMU's start
//! to init's banner, against the floor: the same kernel, QEMU and
//! accelerator booting a trivial static init (`tools/floor-init`) that only
//! prints one line. The difference is what Ballast's initramfs and stage 1
//! cost before the banner (decompressing a bigger initramfs, mostly).

use anyhow::{bail, Context, Result};
use ballast_inputs::{Board, QemuProfile};
use ballast_kernel::initramfs::{Compression, Initramfs};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::build::{human_size, BuildResult};
use crate::devbins;
use crate::project::Project;
use crate::qemu::{self, AccelChoice, Console, Launch};

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Time QEMU start -> init banner for a build, against the floor init.
    Boot(BootArgs),
    /// Time a warm rebuild of a board's image and report its compressed size.
    Build(BuildBenchArgs),
    /// Time an update: slot write throughput of `osctl upgrade` against dd,
    /// and osctl upgrade -> ballast-ready of the new version.
    Update(crate::bench_update::UpdateBenchArgs),
    /// `ballast flash` throughput against dd of the same image to the same loop device.
    Flash(crate::bench_flash::FlashBenchArgs),
    /// Size of a delta update against the full bundle and xdelta3, for a
    /// one-package change and a point release.
    #[command(after_long_help = "Example:\n  ballast bench delta --board qemu-arm64")]
    Delta(crate::bench_delta::DeltaBenchArgs),
    /// The live ISO: its size against the zstd -19 disk image, and QEMU start
    /// to ready live.
    #[command(after_long_help = "Example:\n  ballast bench iso --board qemu-x86_64 --bios")]
    Iso(crate::bench_iso::IsoBenchArgs),
    /// `osctl install` from the live ISO against dd of the same image to the
    /// same disk in the same VM.
    #[command(
        after_long_help = "Example:\n  ballast bench install --board qemu-x86_64 -- --image images/minimal.toml"
    )]
    Install(crate::bench_install::InstallBenchArgs),
    /// Where the disk image's bytes go: kernel, initramfs, root, and inside
    /// the root each package and Ballast's binaries, at zstd -19, against the goal.
    #[command(
        after_long_help = "Example:\n  ballast bench size --board qemu-arm64 --image images/minimal.toml"
    )]
    Size(crate::bench_size::SizeBenchArgs),
    /// A diskless network boot: QEMU start to ready, bytes over TFTP and
    /// HTTP against the set's files, RAM in use after ready.
    #[command(after_long_help = "Example:\n  ballast bench netboot --board qemu-x86_64")]
    Netboot(crate::bench_netboot::NetbootBenchArgs),
    /// Power cuts at moments drawn from a seed (growing the state partition,
    /// `osctl upgrade`, the new slot's first boot, marking it good, a
    /// rollback), each followed by a boot and the checks a user would make.
    #[command(
        after_long_help = "Example (as root, for the loop devices of the host's fsck):\n  ballast bench powercut --board qemu-arm64 --runs 20 --seed 19\nRepeat run K of a seed:\n  ballast bench powercut --board qemu-arm64 --seed 19 --skip K-1 --runs 1"
    )]
    Powercut(crate::bench_powercut::PowercutBenchArgs),
}

#[derive(Args, Debug)]
pub struct BuildBenchArgs {
    /// Board to build.
    #[arg(long)]
    pub board: String,
    /// Extra arguments for `ballast build` (e.g. `--suite bookworm`).
    #[arg(last = true)]
    pub build_args: Vec<String>,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct BuildFigures {
    board: String,
    warm_rebuild_s: f64,
    disk_bytes: u64,
    disk_zstd19_bytes: u64,
}

#[derive(Args, Debug)]
pub struct BootArgs {
    /// Board whose build to measure (run `ballast build --board B` first).
    #[arg(long)]
    pub board: String,
    /// The build directory (default: out/BOARD).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Boots of each kind; the median is reported.
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also boot the disk image through the board's firmware and time each
    /// phase from QEMU start to `ballast-ready` (system containers up, slot
    /// marked good), beside the floor booted through the same firmware,
    /// bootloader and kernel (a copy of the disk whose slot A boots the
    /// trivial init).
    #[arg(long)]
    pub ready: bool,
}

#[derive(Serialize)]
struct Figures {
    board: String,
    arch: String,
    accel: String,
    runs: u32,
    /// The direct boots (QEMU given the kernel and initramfs); none on a
    /// machine that boots Linux only through the board's U-Boot (raspi3b).
    #[serde(skip_serializing_if = "Option::is_none")]
    ballast_banner_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_banner_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overhead_s: Option<f64>,
    initrd_bytes: u64,
    floor_initrd_bytes: u64,
    init_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_ready_s: Option<f64>,
    /// With `--ready`: when each phase of the first boot through the firmware
    /// was first seen on the console (seconds since QEMU started).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    phases: Vec<Phase>,
    /// With `--ready`: the floor (a copy of the disk whose slot A boots the
    /// trivial init) through the same firmware, bootloader and kernel.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    floor_phases: Vec<Phase>,
    /// `ballast-ready` minus the floor's banner, both through the firmware.
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_after_floor_banner_s: Option<f64>,
}

/// sysd's line when the machine is ready (a failure's "blocks ballast-ready"
/// is not it).
const READY: &str = "ballast-ready version=";

/// The floor's phase name for its one console line.
const FLOOR_BANNER: &str = "floor: its banner (trivial init)";

#[derive(Serialize, Debug, Clone, PartialEq)]
struct Phase {
    name: String,
    at_s: f64,
}

/// The console lines that mark where a first boot is, in boot order; each is
/// timed at its first appearance. Services are found by sysd's own lines.
const PHASE_MARKS: &[(&str, &str)] = &[
    ("firmware+bootloader: kernel starts", "Booting Linux"),
    ("kernel: init's banner (stage 1)", "ballast-init version="),
    ("stage 2: sysd starts", "started /usr/lib/ballast/sysd"),
];

/// Phases from a timed console: the fixed marks, then each service's start
/// and its health check passing in the order they came, then ready. (The
/// SSH host keys have no console line: the ssh container's output goes to
/// its log. Its ed25519 key is made before sshd starts, so it lies within
/// the ssh service's start and healthy moments.)
fn first_boot_phases(timed: &[(f64, String)]) -> Vec<Phase> {
    let mut out = Vec::new();
    for (name, needle) in PHASE_MARKS {
        if let Some((t, _)) = timed.iter().find(|(_, l)| l.contains(needle)) {
            out.push(Phase {
                name: (*name).to_owned(),
                at_s: *t,
            });
        }
    }
    for (t, line) in timed {
        let text = line.split("sysd: ").nth(1).unwrap_or(line);
        if let Some((svc, _)) = text.split_once(": started (pid") {
            out.push(Phase {
                name: format!("service {svc} started"),
                at_s: *t,
            });
        } else if let Some((svc, _)) = text.split_once(": healthy (") {
            out.push(Phase {
                name: format!("service {svc} healthy"),
                at_s: *t,
            });
        } else if text.starts_with("read-ahead: ") {
            out.push(Phase {
                name: "sysd: read-ahead done".to_owned(),
                at_s: *t,
            });
        }
    }
    if let Some((t, _)) = timed.iter().find(|(_, l)| l.contains(READY)) {
        out.push(Phase {
            name: "ballast-ready".to_owned(),
            at_s: *t,
        });
    }
    out
}

pub fn run(project: &Project, cmd: &BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Boot(args) => boot(project, args),
        BenchCmd::Build(args) => build(project, args),
        BenchCmd::Update(args) => crate::bench_update::run(project, args),
        BenchCmd::Flash(args) => crate::bench_flash::run(project, args),
        BenchCmd::Install(args) => crate::bench_install::run(project, args),
        BenchCmd::Delta(args) => crate::bench_delta::run(project, args),
        BenchCmd::Iso(args) => crate::bench_iso::run(project, args),
        BenchCmd::Size(args) => crate::bench_size::run(project, args),
        BenchCmd::Netboot(args) => crate::bench_netboot::run(project, args),
        BenchCmd::Powercut(args) => crate::bench_powercut::run(project, args),
    }
}

/// Build once to warm every cache (downloads, unpacked packages, cargo),
/// then time a second identical build in a fresh output directory; compress
/// the disk image with zstd -19 (what a release would publish) and count.
fn build(project: &Project, args: &BuildBenchArgs) -> Result<()> {
    let exe = std::env::current_exe().context("finding the ballast executable")?;
    let dir = project.target_dir().join("bench-build").join(&args.board);
    let run_build = |out: &Path| -> Result<f64> {
        let start = Instant::now();
        let status = std::process::Command::new(&exe)
            .arg("--root")
            .arg(&project.root)
            .args(["build", "--board", &args.board, "--out"])
            .arg(out)
            .args(&args.build_args)
            .stdout(std::process::Stdio::null())
            .status()
            .context("running ballast build")?;
        if !status.success() {
            bail!("ballast build --board {} failed ({status})", args.board);
        }
        Ok(start.elapsed().as_secs_f64())
    };
    run_build(&dir.join("warm"))?;
    let out = dir.join("timed");
    let took = run_build(&out)?;
    let disk = out.join("disk.img");
    let disk_bytes = std::fs::metadata(&disk)
        .with_context(|| format!("reading {}", disk.display()))?
        .len();
    let compressed = zstd19_size(&disk)?;
    let figures = BuildFigures {
        board: args.board.clone(),
        warm_rebuild_s: took,
        disk_bytes,
        disk_zstd19_bytes: compressed,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!(
            "{}: warm rebuild {:.1} s (goal <= 7.9 s: qemu-arm64, minimal, --compress fast); disk image {} ({} with zstd -19; goals: no engine <= 20 MB, with Docker <= 80 MB)",
            figures.board,
            figures.warm_rebuild_s,
            human_size(figures.disk_bytes),
            human_size(figures.disk_zstd19_bytes)
        );
    }
    Ok(())
}

/// A timed console, one line each with its seconds since QEMU started.
fn write_timed_log(path: &Path, timed: &[(f64, String)]) -> Result<()> {
    let text: String = timed
        .iter()
        .map(|(t, l)| format!("{t:8.3} {l}\n"))
        .collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Bytes of `path` compressed with zstd -19 (the size figure every bench
/// reports), counted without writing the compressed copy anywhere.
pub fn zstd19_size(path: &std::path::Path) -> Result<u64> {
    let mut encoder = zstd::stream::Encoder::new(CountingSink(0), 19)?;
    encoder.multithread(2)?;
    let mut input =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::copy(&mut input, &mut encoder)
        .with_context(|| format!("compressing {}", path.display()))?;
    Ok(encoder.finish()?.0)
}

/// Counts what is written and drops it.
struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn boot(project: &Project, args: &BootArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let board = Board::find(&project.boards_dir(), &args.board)?;
    let profile_name = board
        .qemu
        .as_deref()
        .with_context(|| format!("{}: board has no `qemu` profile", board.path.display()))?;
    let profile = QemuProfile::find(&project.qemu_dir(), profile_name)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| project.default_out(&board.name));
    let build = BuildResult::load(&out).with_context(|| {
        format!(
            "no build in {}: run `ballast build --board {}` first",
            out.display(),
            board.name
        )
    })?;
    let kernel = build.artifact("kernel")?;
    let initrd = build.artifact("initrd")?;

    // The floor: same compression as the real initramfs, so the comparison
    // is about content, not codec.
    let real = std::fs::read(&initrd).with_context(|| format!("reading {}", initrd.display()))?;
    let compression = sniff(&real);
    let floor_bin = devbins::build(
        project,
        board.arch,
        &["ballast-floor-init"],
        &["floor-init"],
    )?;
    let floor_bin = floor_bin.first().context("floor-init was not built")?;
    let mut fs = Initramfs::new();
    fs.add_file("init", 0o755, std::fs::read(floor_bin)?);
    fs.add_dir("dev", 0o755);
    fs.add_char_dev("dev/console", 0o600, 5, 1);
    let floor_initrd = out.join("floor-initrd.img");
    ballast_device::atomic::write_atomic(&floor_initrd, &fs.write(compression, 0)?)?;
    let init_bin = devbins::build(project, board.arch, &["ballast-init"], &["init"])?;
    let init_bytes = std::fs::metadata(init_bin.first().context("init was not built")?)?.len();

    let cmdline = format!("{} ballast.debug=poweroff", build.cmdline);
    let launch = |initrd: &Path| Launch {
        profile: profile.clone(),
        kernel: kernel.clone(),
        initrd: initrd.to_path_buf(),
        cmdline: cmdline.clone(),
        ssh_port: None,
        no_reboot: true,
        disk: None,
    };
    let cache = crate::project::cache_dir(None);
    let accel = qemu::choose_accel(&launch(&initrd), board.arch, args.accel, &cache)?;

    // QEMU's raspi machines have no device tree of their own to give a
    // kernel booted directly: they boot Linux through the board's U-Boot,
    // which the profile hands them (`kernel_artifact`), and only --ready
    // boots that way.
    let direct = profile
        .firmware
        .as_ref()
        .is_none_or(|f| f.kernel_artifact.is_none());
    if !direct && !args.ready {
        bail!(
            "board {}: QEMU's {} boots Linux only through the board's U-Boot; time it from QEMU's start with --ready",
            board.name,
            profile.machine
        );
    }
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..if direct { args.runs } else { 0 } {
        ours.push(time_to(&launch(&initrd), accel, "ballast-init version=")?);
        floor.push(time_to(
            &launch(&floor_initrd),
            accel,
            "ballast-floor ready",
        )?);
    }
    let mut phases = Vec::new();
    let mut floor_phases = Vec::new();
    let mut after_floor: Vec<f64> = Vec::new();
    let disk_ready_s = if args.ready {
        let disk = build.artifact("disk")?;
        let kernel_args = crate::run::card_kernel_args(&board, &profile);
        let disk_launch = |image: &Path| -> Result<Launch> {
            let mut launch = launch(&initrd);
            let mut boot = crate::run::disk_boot(&profile, image)?;
            crate::run::firmware_images(&profile, &build, &mut boot)?;
            launch.disk = Some(boot);
            Ok(launch)
        };
        let mut ours_runs = Vec::new();
        let mut floor_runs = Vec::new();
        for _ in 0..args.runs {
            // The floor through the same firmware and bootloader: a copy of
            // the disk whose slot A boots the floor's initramfs.
            let floor_copy = out.join("bench-floor-disk.img");
            fresh_copy(&disk, &floor_copy, &profile, kernel_args)?;
            let floor_bytes = std::fs::read(&floor_initrd)?;
            let floor_timed = crate::run::boot_args::write_boot_files(
                &floor_copy,
                &[(
                    ballast_slot::boot_files::initrd(ballast_slot::SlotId::A),
                    floor_bytes,
                )],
            )
            .and_then(|()| disk_launch(&floor_copy))
            .and_then(|l| timed_console(&l, accel, "ballast-floor ready"));
            remove_copy(&floor_copy);
            let floor_timed = floor_timed.context("booting the floor's disk to its banner")?;
            write_timed_log(&out.join("bench-floor.log"), &floor_timed)?;
            let mut f = first_boot_phases(&floor_timed);
            let banner = floor_timed.last().map(|(t, _)| *t).unwrap_or_default();
            f.push(Phase {
                name: FLOOR_BANNER.to_owned(),
                at_s: banner,
            });
            floor_runs.push(f);

            // A copy, so the measured boot is a first boot of a fresh image
            // and the build output stays as built.
            let copy = out.join("bench-disk.img");
            fresh_copy(&disk, &copy, &profile, kernel_args)?;
            let timed = disk_launch(&copy).and_then(|l| timed_console(&l, accel, READY));
            remove_copy(&copy);
            let timed = timed.context("booting the disk image to ballast-ready")?;
            // The whole timed console (of the last run), for a closer look.
            write_timed_log(&out.join("bench-ready.log"), &timed)?;
            if let Some((t, _)) = timed.last() {
                after_floor.push(t - banner);
            }
            ours_runs.push(first_boot_phases(&timed));
        }
        phases = median_phases(&ours_runs);
        floor_phases = median_phases(&floor_runs);
        phases
            .iter()
            .find(|p| p.name == "ballast-ready")
            .map(|p| p.at_s)
    } else {
        None
    };
    let ready_after_floor_banner_s = (!after_floor.is_empty()).then(|| median(&mut after_floor));
    let figures = Figures {
        board: board.name.clone(),
        arch: board.arch.name().to_owned(),
        accel: format!("{accel:?}").to_lowercase(),
        runs: args.runs,
        ballast_banner_s: direct.then(|| median(&mut ours)),
        floor_banner_s: direct.then(|| median(&mut floor)),
        overhead_s: direct.then(|| median(&mut ours) - median(&mut floor)),
        initrd_bytes: real.len() as u64,
        floor_initrd_bytes: std::fs::metadata(&floor_initrd)?.len(),
        init_bytes,
        disk_ready_s,
        phases,
        floor_phases,
        ready_after_floor_banner_s,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        match (figures.ballast_banner_s, figures.floor_banner_s, figures.overhead_s) {
            (Some(ours), Some(floor), Some(overhead)) => println!(
                "{} ({}, {}): banner after {ours:.2} s; floor {floor:.2} s; overhead {overhead:+.2} s (goal <= +0.30 s)",
                figures.board, figures.arch, figures.accel,
            ),
            _ => println!(
                "{} ({}, {}): no direct boot (QEMU's {} boots Linux only through U-Boot)",
                figures.board, figures.arch, figures.accel, profile.machine
            ),
        }
        println!(
            "  initramfs {} (floor {}), init binary {}",
            human_size(figures.initrd_bytes),
            human_size(figures.floor_initrd_bytes),
            human_size(figures.init_bytes)
        );
        if let Some(t) = figures.disk_ready_s {
            println!("  first boot of the disk through the firmware (s since QEMU start):");
            println!("    {:<44} {:>8} {:>8}", "phase", "ours", "floor");
            for p in &figures.phases {
                let floor = figures
                    .floor_phases
                    .iter()
                    .find(|f| f.name == p.name)
                    .map(|f| format!("{:8.2}", f.at_s))
                    .unwrap_or_default();
                println!("    {:<44} {:8.2} {floor:>8}", p.name, p.at_s);
            }
            if let Some(f) = figures.floor_phases.iter().find(|f| f.name == FLOOR_BANNER) {
                println!("    {:<44} {:>8} {:8.2}", f.name, "", f.at_s);
            }
            if let Some(after) = figures.ready_after_floor_banner_s {
                println!(
                    "  ballast-ready {after:.2} s after the floor's banner through the same firmware, bootloader and kernel (goal <= 2.00 s); ready at {t:.2} s"
                );
            }
            println!("  timed console: {}", out.join("bench-ready.log").display());
        }
    }
    Ok(())
}

/// Copy the built disk to `copy` for one first boot (no UEFI variables from
/// an earlier run; a power-of-two size for QEMU's SD card).
fn fresh_copy(
    disk: &Path,
    copy: &Path,
    profile: &QemuProfile,
    kernel_args: &[String],
) -> Result<()> {
    std::fs::copy(disk, copy).with_context(|| format!("copying {}", disk.display()))?;
    let _ = std::fs::remove_file(copy.with_extension("efivars.fd"));
    if profile.disk_device == "sd" {
        // QEMU's SD card must be a power of two long (a real card's size is
        // whatever it is: init grows the state partition).
        let len = std::fs::metadata(copy)?.len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(copy)
            .and_then(|f| f.set_len(len.next_power_of_two()))
            .with_context(|| format!("sizing {}", copy.display()))?;
    }
    if !kernel_args.is_empty() {
        // As `ballast run` does (raspi3b: ballast.watchdog=off).
        crate::run::boot_args::write_raw(copy, kernel_args)?;
    }
    Ok(())
}

fn remove_copy(copy: &Path) {
    let _ = std::fs::remove_file(copy);
    let _ = std::fs::remove_file(copy.with_extension("efivars.fd"));
}

/// Boot and keep every console line with its time since QEMU started, up to
/// and including the first line that contains `until`.
fn timed_console(launch: &Launch, accel: qemu::Accel, until: &str) -> Result<Vec<(f64, String)>> {
    let start = Instant::now();
    let mut cmd = launch.command(accel);
    // A disk boot whose network device comes late (raspi3b), as `ballast
    // run` attaches it: through the monitor, once the console shows the text.
    let late_net = launch
        .disk
        .as_ref()
        .and(launch.profile.net_attach_after.as_deref());
    let sock = std::env::temp_dir().join(format!("ballast-bench-{}.monitor", std::process::id()));
    if late_net.is_some() {
        let _ = std::fs::remove_file(&sock);
        cmd.args(qemu::monitor_args(&sock));
    }
    let mut console = Console::spawn(cmd)?;
    let timed = (|| {
        let mut timed = Vec::new();
        if let Some(after) = late_net {
            timed = console.timed_until(after, start, Duration::from_secs(600))?;
            qemu::attach_net(&launch.profile, &sock)?;
        }
        timed.extend(console.timed_until(until, start, Duration::from_secs(600))?);
        Ok(timed)
    })();
    console.kill();
    let _ = std::fs::remove_file(&sock);
    timed
}

fn time_to(launch: &Launch, accel: qemu::Accel, banner: &str) -> Result<f64> {
    let start = Instant::now();
    let mut console = Console::spawn(launch.command(accel))?;
    console
        .wait_for(banner, Duration::from_secs(180))
        .with_context(|| format!("booting {}", launch.initrd.display()))?;
    let took = start.elapsed().as_secs_f64();
    // Only the time to the line matters; do not wait for the rest.
    console.kill();
    Ok(took)
}

/// Each phase of the first run at the median of its times over the runs
/// that saw it.
fn median_phases(runs: &[Vec<Phase>]) -> Vec<Phase> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|p| {
            let mut at: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.iter().find(|q| q.name == p.name).map(|q| q.at_s))
                .collect();
            Phase {
                name: p.name.clone(),
                at_s: median(&mut at),
            }
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The codec of an initramfs, from its magic number.
fn sniff(bytes: &[u8]) -> Compression {
    match bytes {
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Compression::Xz,
        [0x1f, 0x8b, ..] => Compression::Gzip,
        _ => Compression::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_come_from_the_console_in_boot_order() {
        let timed: Vec<(f64, String)> = [
            (1.0, "EFI stub: Booting Linux Kernel..."),
            (3.0, "ballast-init version=0.1.0 slot=a"),
            // Not sysd's start: a line that only names it.
            (
                3.5,
                "ballast-init: state: 1.3 MiB of 64 MiB reserved for sysd and SSH",
            ),
            (4.0, "ballast-init: started /usr/lib/ballast/sysd (pid 117)"),
            (4.5, "sysd: network: started (pid 12)"),
            (5.0, "sysd: network: healthy (500 ms after its start)"),
            (6.0, "sysd: read-ahead: 40 files, 9.1 MiB in 1500 ms"),
            (7.0, "ballast-ready version=0.1.0 slot=a"),
        ]
        .iter()
        .map(|(t, l)| (*t, (*l).to_owned()))
        .collect();
        let names: Vec<(String, f64)> = first_boot_phases(&timed)
            .into_iter()
            .map(|p| (p.name, p.at_s))
            .collect();
        assert_eq!(
            names,
            vec![
                ("firmware+bootloader: kernel starts".to_owned(), 1.0),
                ("kernel: init's banner (stage 1)".to_owned(), 3.0),
                ("stage 2: sysd starts".to_owned(), 4.0),
                ("service network started".to_owned(), 4.5),
                ("service network healthy".to_owned(), 5.0),
                ("sysd: read-ahead done".to_owned(), 6.0),
                ("ballast-ready".to_owned(), 7.0),
            ]
        );
    }
}
