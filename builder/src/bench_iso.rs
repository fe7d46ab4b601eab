//! `ballast bench iso`: the live ISO's size against the zstd -19 disk image of the
//! same build (goal: at most 1.3x), and QEMU start to `ballast-ready ... slot=live`
//! booting it as a CD.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::build::{human_size, BuildResult};
use crate::project::Project;
use crate::qemu::Console;

#[derive(Args, Debug)]
pub struct IsoBenchArgs {
    /// Board whose build to measure (build it first with `ballast build`).
    #[arg(long)]
    pub board: String,
    /// The build directory (default: out/BOARD).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Boot through SeaBIOS instead of UEFI (x86_64).
    #[arg(long)]
    pub bios: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct IsoFigures {
    board: String,
    iso_bytes: u64,
    disk_zstd19_bytes: u64,
    ratio: f64,
    ratio_goal: f64,
    start_to_ready_live_s: f64,
}

pub fn run(project: &Project, args: &IsoBenchArgs) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| project.default_out(&args.board));
    let build = BuildResult::load(&out)?;
    let iso = build.artifact("iso")?;
    let disk = build.artifact("disk")?;
    let iso_bytes = std::fs::metadata(&iso)?.len();
    let disk_zstd19_bytes = crate::bench::zstd19_size(&disk)?;

    // Boot a hard link of the ISO in the bench directory: `run --iso` keeps its
    // blank disk and firmware variables beside the ISO.
    let dir = project.target_dir().join("bench-iso").join(&args.board);
    std::fs::create_dir_all(&dir)?;
    let copy = dir.join("bench.iso");
    let _ = std::fs::remove_file(&copy);
    if std::fs::hard_link(&iso, &copy).is_err() {
        std::fs::copy(&iso, &copy)?;
    }
    let exe = std::env::current_exe().context("finding the ballast executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root")
        .arg(&project.root)
        .args(["run", "--board", &args.board, "--out"])
        .arg(&out)
        .arg("--iso")
        .arg(&copy)
        .args(["--blank-disk", "1G", "--no-reboot"]);
    if args.bios {
        cmd.arg("--bios");
    }
    let start = Instant::now();
    let mut console = Console::spawn(cmd)?;
    let ready = console.wait_for("ballast-ready", Duration::from_secs(900));
    console.kill();
    if ready.is_err() {
        bail!(
            "the ISO did not reach ballast-ready; console:\n{}",
            console.transcript.join("\n")
        );
    }
    let figures = IsoFigures {
        board: args.board.clone(),
        iso_bytes,
        disk_zstd19_bytes,
        ratio: iso_bytes as f64 / disk_zstd19_bytes.max(1) as f64,
        ratio_goal: 1.3,
        start_to_ready_live_s: start.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!(
            "{}: ISO {} against the zstd -19 disk image {}: {:.2}x (goal <= {:.1}x); QEMU start to ready live {:.1} s",
            figures.board,
            human_size(figures.iso_bytes),
            human_size(figures.disk_zstd19_bytes),
            figures.ratio,
            figures.ratio_goal,
            figures.start_to_ready_live_s
        );
    }
    Ok(())
}
