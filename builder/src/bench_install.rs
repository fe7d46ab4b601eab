//! `ballast bench install --board B`: `osctl install` throughput against `dd`
//! of the same disk image to the same device in the same VM (goal: at least
//! 0.8x dd).
//!
//! It builds the board's image once (with a fresh SSH key) under
//! `target/bench-install/BOARD/` (reused by the next run unless `--rebuild`), boots its live ISO with a blank target disk
//! (`/dev/vda`) and a second disk holding the raw disk image (`/dev/vdb`),
//! then, on the device's clock: `dd if=/dev/vdb of=/dev/vda bs=4M
//! conv=fsync`, and `osctl install /dev/vda --force` from the medium (the
//! ISO's install image: zstd, fills from the ISO's files, hashed, written,
//! fsync'd, read back and verified). Its write phase (everything but the
//! read-back) is reported beside the whole.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bench_ssh::Remote;
use crate::build::BuildResult;
use crate::project::Project;
use crate::qemu::Console;

#[derive(Args, Debug)]
pub struct InstallBenchArgs {
    /// Board to measure (x86_64 or arm64: one with a live ISO).
    #[arg(long)]
    pub board: String,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Build again even if the bench directory holds a build (with its key).
    #[arg(long)]
    pub rebuild: bool,
    /// Extra arguments for `ballast build` (e.g. `--image images/minimal.toml`).
    #[arg(last = true)]
    pub build_args: Vec<String>,
}

#[derive(Serialize)]
struct Figures {
    board: String,
    raw_bytes: u64,
    /// `dd bs=4M conv=fsync` from the second disk to the target.
    dd_s: f64,
    dd_mb_s: f64,
    /// The whole `osctl install` (checks, write, fsync, read-back, table).
    install_s: f64,
    install_mb_s: f64,
    /// Its write phase alone, as sysd reports it.
    install_write_s: f64,
    install_verify_s: f64,
    /// dd / the whole install (goal >= 0.8).
    ratio: f64,
    /// dd / the install's write phase.
    ratio_write: f64,
}

pub fn run(project: &Project, args: &InstallBenchArgs) -> Result<()> {
    let dir = project.target_dir().join("bench-install").join(&args.board);
    let key = dir.join("id_ed25519");
    let out = dir.join("out");
    let exe = std::env::current_exe().context("finding the ballast executable")?;
    if args.rebuild || !out.join("build.json").is_file() || !key.is_file() {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        crate::bench_ssh::keygen(&key)?;
        let st = Command::new(&exe)
            .arg("--root")
            .arg(&project.root)
            .args(["build", "--board", &args.board, "--out"])
            .arg(&out)
            .arg("--ssh-key")
            .arg(key.with_extension("pub"))
            .args(&args.build_args)
            .stdout(Stdio::null())
            .status()
            .context("running ballast build")?;
        if !st.success() {
            bail!("ballast build --board {} failed", args.board);
        }
    } else {
        eprintln!(
            "bench install: reusing the build in {} (--rebuild to make it again)",
            out.display()
        );
    }
    let build = BuildResult::load(&out)?;
    let iso = build.artifact("iso")?;
    let image = build.artifact("install_image")?;

    // The raw disk image dd copies: OUT's install image, decompressed.
    let raw = dir.join("raw.img");
    {
        let mut dec = zstd::stream::Decoder::new(
            std::fs::File::open(&image).with_context(|| format!("opening {}", image.display()))?,
        )?;
        let mut w = std::fs::File::create(&raw)?;
        std::io::copy(&mut dec, &mut w).context("decompressing the install image")?;
    }
    let raw_bytes = std::fs::metadata(&raw)?.len();
    let blank_mib = raw_bytes.div_ceil(1 << 20) + 64;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = Command::new(&exe);
    cmd.arg("--root")
        .arg(&project.root)
        .args(["run", "--board", &args.board, "--out"])
        .arg(&out)
        .arg("--iso")
        .arg(&iso)
        .args(["--blank-disk", &format!("{blank_mib}M"), "--no-reboot"])
        .args(["--ssh-port", &port.to_string(), "--drive"])
        .arg(&raw);
    let mut console = Console::spawn(cmd)?;
    let remote = Remote {
        key: key.clone(),
        port,
    };
    let result = (|| -> Result<Figures> {
        console
            .wait_for("ballast-ready", Duration::from_secs(900))
            .context("booting the live ISO")?;
        // The disk holding the raw image is the one of exactly its size.
        let src = remote.run(
            &format!(
                "for d in /sys/block/vd*; do [ $(($(cat $d/size) * 512)) = {raw_bytes} ] && echo ${{d##*/}}; done"
            ),
            None,
        )?;
        let src = src.trim();
        if src.is_empty() || src.contains('\n') || src == "vda" {
            bail!("no single second disk of {raw_bytes} bytes on the device (found {src:?})");
        }
        // The SSH container's /dev holds no disks: make nodes for dd (as
        // `bench update` does); `osctl install` goes through sysd.
        remote.run(
            &format!(
                "sudo rm -f /dev/bench-src /dev/bench-dst && sudo mknod /dev/bench-src b $(tr : ' ' < /sys/block/{src}/dev) && sudo mknod /dev/bench-dst b $(tr : ' ' < /sys/block/vda/dev)"
            ),
            None,
        )?;
        let (_, dd_s) = remote.timed_output(&format!(
            "sudo dd if=/dev/bench-src of=/dev/bench-dst bs=4M count={} conv=fsync",
            raw_bytes.div_ceil(4 << 20)
        ))?;
        let (text, install_s) = remote.timed_output("osctl install /dev/vda --force --json")?;
        let report: serde_json::Value = serde_json::from_str(text.trim())
            .with_context(|| format!("osctl install --json printed {text:?}"))?;
        if report["bytes"].as_u64() != Some(raw_bytes) {
            bail!("osctl install wrote {report}, not the {raw_bytes}-byte image");
        }
        let install_write_s = report["write_seconds"].as_f64().unwrap_or(0.0);
        let install_verify_s = report["verify_seconds"].as_f64().unwrap_or(0.0);
        let mb = raw_bytes as f64 / 1e6;
        Ok(Figures {
            board: args.board.clone(),
            raw_bytes,
            dd_s,
            dd_mb_s: mb / dd_s,
            install_s,
            install_mb_s: mb / install_s,
            install_write_s,
            install_verify_s,
            ratio: dd_s / install_s,
            ratio_write: dd_s / install_write_s.max(1e-9),
        })
    })();
    console.kill();
    let f = result.map_err(|e| {
        e.context(format!(
            "console:\n{}",
            console
                .transcript
                .iter()
                .rev()
                .take(40)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        ))
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
    } else {
        println!(
            "{}: {:.0} MB disk image to a virtio disk in the live ISO's VM: dd bs=4M conv=fsync {:.2} s ({:.0} MB/s); osctl install {:.2} s ({:.0} MB/s; write {:.2} s, read-back {:.2} s): {:.2}x dd (goal >= 0.8x), write phase {:.2}x dd",
            f.board,
            f.raw_bytes as f64 / 1e6,
            f.dd_s,
            f.dd_mb_s,
            f.install_s,
            f.install_mb_s,
            f.install_write_s,
            f.install_verify_s,
            f.ratio,
            f.ratio_write
        );
    }
    Ok(())
}
