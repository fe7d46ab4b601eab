//! `ballast flash IMAGE DEVICE`: write a disk image (raw or `.zst`) to an SD
//! card or USB stick through `ballast-install`, the same writer `osctl
//! install` uses: target checks first (mounted, the host's own disk, too
//! small, read-only, not removable or holding partitions without `--force`),
//! a confirmation naming the device, then write, read back and verify, and
//! the first-boot config on the boot partition. Exit 0 only when verified.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ballast_install::target::human;
use ballast_install::{BootConfig, Image, Phase, Policy, Target};
use clap::Args;

/// Write a disk image to an SD card or USB stick, verify it, add the first-boot config.
#[derive(Args, Debug)]
pub struct FlashArgs {
    /// The disk image: disk.img or install.img.zst from `ballast build` (raw or zstd).
    pub image: PathBuf,
    /// The whole device to overwrite, e.g. /dev/sdb or /dev/mmcblk0.
    pub device: PathBuf,
    /// A #cloud-config (or TOML) config for the first boot, put on the boot partition.
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// NoCloud meta-data (instance-id, local-hostname); made from the user-data when absent.
    #[arg(long, value_name = "FILE", requires = "user_data")]
    pub meta_data: Option<PathBuf>,
    /// NoCloud network-config (version 2).
    #[arg(long, value_name = "FILE", requires = "user_data")]
    pub network_config: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Also write a disk that is not removable or already holds partitions.
    #[arg(long)]
    pub force: bool,
    /// Also print the image's SHA-256 (to compare with a published one); slower.
    #[arg(long)]
    pub sha256: bool,
}

/// How flash writes: the read-back reads the card itself with `O_DIRECT`,
/// not the page cache (a verify from the cache proves only that the kernel
/// kept the bytes), and skips a copy into the cache on the way.
/// It takes no SHA-256 of the whole image unless `--sha256` asks: each 4
/// MiB chunk is still hashed (zeros scanned) as it streams and checked
/// again when read back. Hashing every byte, zeros included, costs about
/// as much CPU as `dd`'s whole write (SHA-256 at 1.2 GB/s on the build
/// host: 0.66 s for a 774 MB image; `dd` 0.82 s on a quiet machine).
pub const OPTIONS: ballast_install::Options = ballast_install::Options {
    direct_read_back: true,
    skip_whole_sha256: true,
};

/// The mount points whose disks are the host's own: never flashed.
const HOST_MOUNTS: [&str; 5] = ["/", "/boot", "/boot/efi", "/usr", "/var"];

pub fn run(args: &FlashArgs) -> Result<()> {
    let files = crate::cmd_seed::seed_files(
        args.user_data.as_deref(),
        args.meta_data.as_deref(),
        args.network_config.as_deref(),
    )?;
    let mut config = BootConfig::default();
    for (name, bytes) in files {
        match name.as_str() {
            "user-data" => config.user_data = Some(bytes),
            "meta-data" => config.meta_data = Some(bytes),
            _ => config.network_config = Some(bytes),
        }
    }
    let policy = Policy {
        force: args.force,
        require_removable: true,
        system_mounts: HOST_MOUNTS.iter().map(PathBuf::from).collect(),
    };
    let mut image = Image::open(&args.image, None)?;
    let target = Target::inspect(&args.device, &policy)?;
    target.check(image.raw_size, &policy)?;
    if !args.yes {
        eprint!(
            "Write {} ({}) to {} ({})? Everything on {} will be lost. [y/N] ",
            args.image.display(),
            human(image.raw_size),
            args.device.display(),
            target.describe(),
            args.device.display()
        );
        let _ = io::stderr().flush();
        let mut answer = String::new();
        io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!(
                "not confirmed: nothing was written to {} (pass --yes to skip the question)",
                args.device.display()
            );
        }
    }
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc_o_excl())
        .open(&args.device)
        .with_context(|| {
            format!(
                "opening {} for writing (it may have been mounted meanwhile); nothing was written",
                args.device.display()
            )
        })?;
    let mut meter = Meter::new();
    let report = ballast_install::install_with(
        &mut image,
        &dev,
        &args.device,
        &ballast_install::Expected::Unsigned,
        &config,
        &ballast_install::Options {
            skip_whole_sha256: !args.sha256,
            ..OPTIONS
        },
        &mut |p, done, total| meter.show(p, done, total),
    )?;
    meter.done();
    let mb = report.bytes as f64 / 1e6;
    println!(
        "{}: wrote and verified {} ({mb:.0} MB, {}); write {:.1} s ({:.0} MB/s), verify {:.1} s ({}){}",
        args.device.display(),
        args.image.display(),
        if report.sha256.is_empty() {
            "each 4 MiB chunk checked against the image's bytes".to_string()
        } else {
            format!("SHA-256 {}", report.sha256)
        },
        report.write_seconds,
        mb / report.write_seconds.max(1e-6),
        report.verify_seconds,
        if report.read_back_direct {
            "read from the device with O_DIRECT"
        } else {
            "read through the dropped page cache: the device refused O_DIRECT"
        },
        if report.config_files.is_empty() {
            String::new()
        } else {
            format!(
                "; first-boot config on the boot partition: {}",
                report.config_files.join(", ")
            )
        }
    );
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

/// O_EXCL on a block device: the open fails while the kernel has it mounted.
fn libc_o_excl() -> i32 {
    0o200
}

/// Progress on stderr: one rewritten line on a terminal, a line per phase otherwise.
struct Meter {
    tty: bool,
    phase: Option<Phase>,
    last_pct: u64,
}

impl Meter {
    fn new() -> Meter {
        Meter {
            tty: io::stderr().is_terminal(),
            phase: None,
            last_pct: 101,
        }
    }
    fn show(&mut self, phase: Phase, done: u64, total: u64) {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        let mut err = io::stderr();
        if self.tty {
            if self.phase != Some(phase) || pct != self.last_pct {
                let width = 30usize;
                let filled = (pct as usize * width) / 100;
                let _ = write!(
                    err,
                    "\r\x1b[K{:<7} [{}{}] {pct:>3}% {} / {}",
                    phase.as_str(),
                    "#".repeat(filled),
                    " ".repeat(width - filled),
                    human(done),
                    human(total)
                );
                let _ = err.flush();
            }
        } else if self.phase != Some(phase) {
            let _ = writeln!(err, "{} ...", phase.as_str());
        }
        self.phase = Some(phase);
        self.last_pct = pct;
    }
    fn done(&mut self) {
        if self.tty && self.phase.is_some() {
            let _ = writeln!(io::stderr());
        }
    }
}
