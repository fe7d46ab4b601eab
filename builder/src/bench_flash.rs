//! `ballast bench flash IMAGE`: `ballast flash` throughput against `dd` of
//! the same raw image to the same loop device (goal: at least 0.9x), both
//! measured in this run. Flash's time includes everything it does (clear,
//! write, fsync, read back and verify, table last). dd is timed twice over:
//! `bs=4M conv=fsync` alone, which writes and does not verify, and like
//! with like, that write then the same read-back a careful user runs (the
//! device's cache dropped, `dd | sha256sum`). Flash runs as `ballast
//! flash` does ([`crate::cmd_flash::OPTIONS`]: read-back with `O_DIRECT`, no
//! whole-image SHA-256). Each round prints its ratios; the end gives the
//! best times and the ratios' min and median. Needs root (losetup).
//!
//! On a loop device over a file, `BLKZEROOUT` (flash's zero chunks) becomes
//! a `fallocate` of the backing file and moves no bytes, where `dd` writes
//! the zeros; an SD card without write-zeroes support has the kernel write
//! them, as `dd` does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ballast_install::{BootConfig, Image, Policy, Target};
use clap::Args;
use serde::Serialize;

use crate::project::Project;

#[derive(Args, Debug)]
pub struct FlashBenchArgs {
    /// The disk image (raw or .zst; a .zst is decompressed first so both write the same bytes).
    pub image: PathBuf,
    /// Rounds of (dd, dd with read-back, flash): each round's ratios are
    /// printed, then the best time of each and the ratios' min and median.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Also time the writer with the installer's default options (`osctl
    /// install`: read-back through the dropped cache, the whole image
    /// hashed), to show what flash's options buy.
    #[arg(long)]
    pub installer_defaults: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Figures {
    image_bytes: u64,
    dd_s: f64,
    dd_mb_s: f64,
    /// dd's write, then its read-back through sha256sum.
    dd_verified_s: f64,
    flash_s: f64,
    flash_mb_s: f64,
    flash_write_s: f64,
    flash_verify_s: f64,
    ratio: f64,
    /// Against dd with the same read-back.
    ratio_verified: f64,
    /// Each round's ratio against plain dd, and their min and median.
    rounds: Vec<f64>,
    ratio_min: f64,
    ratio_median: f64,
    /// Whether flash read back with O_DIRECT (from the device, not the cache).
    read_back_direct: bool,
}

struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

pub fn run(project: &Project, args: &FlashBenchArgs) -> Result<()> {
    let dir = project.target_dir().join("bench-flash");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let raw = dir.join("image.raw");
    let img = Image::open(&args.image, None)?;
    let size = img.raw_size;
    if img.compressed {
        let mut dec = zstd::stream::Decoder::new(
            std::fs::File::open(&args.image)
                .with_context(|| format!("opening {}", args.image.display()))?,
        )?;
        let mut out = std::fs::File::create(&raw)?;
        std::io::copy(&mut dec, &mut out).context("decompressing the image")?;
    } else {
        std::fs::copy(&args.image, &raw).context("copying the image")?;
    }
    let backing = dir.join("device.img");
    let f = std::fs::File::create(&backing)?;
    f.set_len(size + (16 << 20))?;
    drop(f);
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&backing)
        .output()
        .context("running losetup (needs root)")?;
    if !out.status.success() {
        bail!("losetup: {}", String::from_utf8_lossy(&out.stderr));
    }
    let dev = Loop(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let dev_path = Path::new(&dev.0);

    let mut best_dd = f64::MAX;
    let mut best_dd_verified = f64::MAX;
    let mut best_flash = (f64::MAX, 0.0, 0.0);
    let mut rounds = Vec::new();
    let mut read_back_direct = true;
    for round in 1..=args.runs.max(1) {
        let start = Instant::now();
        let st = Command::new("dd")
            .arg(format!("if={}", raw.display()))
            .arg(format!("of={}", dev.0))
            .args(["bs=4M", "conv=fsync", "status=none"])
            .status()
            .context("running dd")?;
        if !st.success() {
            bail!("dd failed: {st}");
        }
        let dd_write = start.elapsed().as_secs_f64();
        best_dd = best_dd.min(dd_write);
        let start = Instant::now();
        let st = Command::new("blockdev")
            .args(["--flushbufs", &dev.0])
            .status()
            .context("running blockdev")?;
        if !st.success() {
            bail!("blockdev --flushbufs failed: {st}");
        }
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "dd if={} bs=4M iflag=count_bytes count={size} status=none | sha256sum",
                dev.0
            ))
            .output()
            .context("running dd | sha256sum")?;
        if !out.status.success() {
            bail!("dd | sha256sum failed: {}", out.status);
        }
        let dd_verified = dd_write + start.elapsed().as_secs_f64();
        best_dd_verified = best_dd_verified.min(dd_verified);

        let (t, report) = flash_once(&raw, dev_path, &crate::cmd_flash::OPTIONS)?;
        let defaults = if args.installer_defaults {
            let (t, r) = flash_once(&raw, dev_path, &ballast_install::Options::default())?;
            format!(
                "; with the installer's defaults {t:.2} s (write {:.2} s, verify {:.2} s)",
                r.write_seconds, r.verify_seconds
            )
        } else {
            String::new()
        };
        if t < best_flash.0 {
            best_flash = (t, report.write_seconds, report.verify_seconds);
        }
        read_back_direct &= report.read_back_direct;
        rounds.push(dd_write / t);
        if !args.json {
            println!(
                "round {round}: dd {dd_write:.2} s, dd + read-back {dd_verified:.2} s, ballast flash {t:.2} s (write {:.2} s, verify {:.2} s): {:.2}x dd, {:.2}x dd + read-back{defaults}",
                report.write_seconds,
                report.verify_seconds,
                dd_write / t,
                dd_verified / t
            );
        }
    }
    let mut sorted = rounds.clone();
    sorted.sort_by(f64::total_cmp);
    let ratio_min = sorted[0];
    let ratio_median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    let mb = size as f64 / 1e6;
    let fig = Figures {
        image_bytes: size,
        dd_s: best_dd,
        dd_mb_s: mb / best_dd,
        flash_s: best_flash.0,
        flash_mb_s: mb / best_flash.0,
        flash_write_s: best_flash.1,
        flash_verify_s: best_flash.2,
        ratio: best_dd / best_flash.0,
        dd_verified_s: best_dd_verified,
        ratio_verified: best_dd_verified / best_flash.0,
        rounds,
        ratio_min,
        ratio_median,
        read_back_direct,
    };
    let _ = std::fs::remove_file(&raw);
    if args.json {
        println!("{}", serde_json::to_string(&fig)?);
    } else {
        println!(
            "flash {:.0} MB: ballast flash {:.2} s ({:.0} MB/s; write {:.2} s, verify {:.2} s), dd bs=4M conv=fsync {:.2} s ({:.0} MB/s): {:.2}x dd (goal >= 0.9x)",
            mb, fig.flash_s, fig.flash_mb_s, fig.flash_write_s, fig.flash_verify_s, fig.dd_s, fig.dd_mb_s, fig.ratio
        );
        println!(
            "like with like: dd write then read-back | sha256sum {:.2} s: ballast flash is {:.2}x that (goal >= 0.9x)",
            fig.dd_verified_s, fig.ratio_verified
        );
        println!(
            "ratio to plain dd over {} rounds: min {:.2}x, median {:.2}x (goal >= 0.9x); flash read back {}",
            fig.rounds.len(),
            fig.ratio_min,
            fig.ratio_median,
            if fig.read_back_direct {
                "with O_DIRECT (from the device)"
            } else {
                "through the dropped page cache (O_DIRECT refused)"
            }
        );
    }
    Ok(())
}

/// One `ballast flash` of the raw image to the loop device with `options`:
/// its wall time (checks included) and the writer's report.
fn flash_once(
    raw: &Path,
    dev_path: &Path,
    options: &ballast_install::Options,
) -> Result<(f64, ballast_install::Report)> {
    let start = Instant::now();
    let policy = Policy {
        force: true,
        ..Policy::default()
    };
    let mut image = Image::open(raw, None)?;
    let target = Target::inspect(dev_path, &policy)?;
    target.check(image.raw_size, &policy)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_path)
        .with_context(|| format!("opening {}", dev_path.display()))?;
    let report = ballast_install::install_with(
        &mut image,
        &file,
        dev_path,
        &ballast_install::Expected::Unsigned,
        &BootConfig::default(),
        options,
        &mut |_, _, _| {},
    )?;
    Ok((start.elapsed().as_secs_f64(), report))
}
