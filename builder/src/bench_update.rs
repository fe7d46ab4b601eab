//! `ballast bench update --board B`: the two update figures, measured on a real boot
//! under QEMU.
//!
//! 1. Slot write throughput: inside the VM, `dd` of the root image to the inactive root
//!    partition (`conv=fsync`), against the root phase of `osctl upgrade` of a bundle
//!    carrying the same root image (streamed over the control socket, decompressed,
//!    hashed twice, written, fsync'd), both read from the state partition. The goal is
//!    upgrade ≥ 0.8 × dd. The whole upgrade (with kernel and initramfs) is reported too.
//! 2. Applying a delta (`1.0.0` → `1.0.1`, made by `ballast_bundle::delta`) against
//!    the full bundle: both `osctl upgrade`s in the same VM, to the same inactive slot
//!    (the delta first; the bundle then replaces what it wrote), with their sizes.
//! 3. From `osctl upgrade` to `ballast-ready` on the new version: the upgrade, the
//!    orderly reboot, firmware, kernel, init, sysd and the system containers.
//!
//! It builds two versions of the image (`1.0.0` and `1.0.1`) under
//! `target/bench-update/BOARD/`, boots the first and upgrades it to the second.

use anyhow::{bail, Context, Result};
use ballast_inputs::{Board, QemuProfile};
use clap::Args;
use serde::Serialize;

use std::time::{Duration, Instant};

use crate::bench_ssh::{free_port, release_pair, Remote};
use crate::project::Project;
use crate::qemu::{self, AccelChoice, Console, Launch};

#[derive(Args, Debug)]
pub struct UpdateBenchArgs {
    /// Board to measure.
    #[arg(long)]
    pub board: String,
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Extra arguments for both `ballast build`s (e.g. `--image images/minimal.toml`).
    #[arg(last = true)]
    pub build_args: Vec<String>,
}

#[derive(Serialize)]
struct Figures {
    board: String,
    accel: String,
    root_bytes: u64,
    bundle_bytes: u64,
    dd_s: f64,
    dd_mb_s: f64,
    /// The whole `osctl upgrade`: verify, root, kernel, initrd, activate.
    upgrade_s: f64,
    /// Its root phase: the same bytes dd wrote, decompressed, hashed and written.
    root_phase_s: f64,
    upgrade_root_mb_s: f64,
    /// Root phase throughput / dd throughput (goal ≥ 0.8).
    ratio: f64,
    /// `osctl upgrade` issued → `ballast-ready` of the new version on the console.
    upgrade_to_ready_s: f64,
    /// The delta from the running version to the same new one.
    delta_bytes: u64,
    /// The whole `osctl upgrade` of that delta (reads the running slot, writes all
    /// of the new one), to compare with `upgrade_s`.
    delta_upgrade_s: f64,
}

pub fn run(project: &Project, args: &UpdateBenchArgs) -> Result<()> {
    let board = Board::find(&project.boards_dir(), &args.board)?;
    let profile_name = board
        .qemu
        .as_deref()
        .with_context(|| format!("{}: board has no `qemu` profile", board.path.display()))?;
    let profile = QemuProfile::find(&project.qemu_dir(), profile_name)?;
    let dir = project.target_dir().join("bench-update").join(&board.name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let (v1, v2, key) = release_pair(project, &board.name, &dir, &args.build_args)?;
    let bundle = v2.artifact("bundle")?;

    // The root payload, as plain bytes, for dd.
    let root = dir.join("root.img");
    {
        let keys = ballast_bundle::keys::read_dir(&project.root.join("keys"))?;
        let f = std::fs::File::open(&bundle)?;
        let mut r = ballast_bundle::Reader::open(std::io::BufReader::new(f), &keys).context(
            "reading the bundle (signed with keys/dev.key? the bench uses the default key)",
        )?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&root)?);
        r.copy_next(&mut out, &mut |_| {})?;
    }
    let root_bytes = std::fs::metadata(&root)?.len();
    let bundle_bytes = std::fs::metadata(&bundle)?.len();
    let delta = dir.join("update.delta");
    let signer = crate::build::signing_key(project, None)?;
    let made = ballast_bundle::delta::write(
        &delta,
        &v1.artifact("bundle")?,
        &bundle,
        &signer,
        &[signer.public()],
    )
    .context("making the delta 1.0.0 -> 1.0.1")?;

    let port = free_port()?;
    // A copy with 1 GiB more: the state partition grows into it on first boot and
    // holds the root image and the bundle the bench copies in.
    let disk = dir.join("bench-disk.img");
    std::fs::copy(v1.artifact("disk")?, &disk).context("copying the disk image")?;
    let f = std::fs::OpenOptions::new().write(true).open(&disk)?;
    f.set_len(f.metadata()?.len() + (1 << 30))?;
    drop(f);
    let launch = Launch {
        profile: profile.clone(),
        kernel: v1.artifact("kernel")?,
        initrd: v1.artifact("initrd")?,
        cmdline: v1.cmdline.clone(),
        ssh_port: Some(port),
        no_reboot: false,
        disk: Some(crate::run::disk_boot(&profile, &disk)?),
    };
    let cache = crate::project::cache_dir(None);
    let accel = qemu::choose_accel(&launch, board.arch, args.accel, &cache)?;
    let mut console = Console::spawn(launch.command(accel))?;
    let boot = Duration::from_secs(600);
    console
        .wait_for("ballast-ready version=1.0.0", boot)
        .context("booting 1.0.0")?;
    let remote = Remote { key, port };
    let result = (|| -> Result<Figures> {
        remote.run("cat > root.img", Some(&root))?;
        remote.run("cat > update.bundle", Some(&bundle))?;
        // The inactive slot of a fresh image is b: partition 3 of the boot disk.
        let dev = remote.run(
            "for d in /sys/class/block/*; do [ \"$(cat $d/partition 2>/dev/null)\" = 3 ] && [ -e $d/../$(basename $d | sed 's/3$/1/')/partition ] && cat $d/dev && break; done",
            None,
        )?;
        let (major, minor) = dev
            .trim()
            .split_once(':')
            .with_context(|| format!("no partition 3 on the device (got {dev:?})"))?;
        remote.run(
            &format!("sudo rm -f /dev/bench-slot && sudo mknod /dev/bench-slot b {major} {minor}"),
            None,
        )?;
        let dd_s = remote.timed("sudo dd if=root.img of=/dev/bench-slot bs=1M conv=fsync")?;
        remote.run("cat > update.delta", Some(&delta))?;
        let delta_upgrade_s = remote.timed("osctl upgrade update.delta")?;
        let started = Instant::now();
        // sysd times each phase (verify, root, kernel, initrd, activate) itself
        // and osctl --json reports them: the root phase is what dd is compared with.
        let out = remote.run(
            "sync; s=$(date +%s%N); osctl upgrade --json update.bundle || exit 1; e=$(date +%s%N); echo \"$((e-s))\"",
            None,
        )?;
        let mut lines = out.lines().filter(|l| !l.trim().is_empty());
        let (Some(report), Some(ns)) = (lines.next(), lines.next()) else {
            bail!("osctl upgrade --json printed {out:?}");
        };
        let report: serde_json::Value = serde_json::from_str(report)
            .with_context(|| format!("osctl upgrade --json printed {report:?}"))?;
        let upgrade_s = ns
            .trim()
            .parse::<u64>()
            .with_context(|| format!("timing osctl upgrade: device printed {out:?}"))?
            as f64
            / 1e9;
        let root_phase_s = report["phases"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["phase"] == "root"))
            .and_then(|p| p["seconds"].as_f64())
            .with_context(|| format!("osctl upgrade --json reported no root phase: {report}"))?;
        let _ = remote.run("osctl reboot", None);
        console
            .wait_for("ballast-ready version=1.0.1", boot)
            .context("booting 1.0.1 after the upgrade")?;
        let upgrade_to_ready_s = started.elapsed().as_secs_f64();
        let mb = root_bytes as f64 / 1e6;
        Ok(Figures {
            board: board.name.clone(),
            accel: format!("{accel:?}").to_lowercase(),
            root_bytes,
            bundle_bytes,
            dd_s,
            dd_mb_s: mb / dd_s,
            upgrade_s,
            root_phase_s,
            upgrade_root_mb_s: mb / root_phase_s,
            ratio: dd_s / root_phase_s,
            upgrade_to_ready_s,
            delta_bytes: made.size,
            delta_upgrade_s,
        })
    })();
    console.kill();
    let f = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
    } else {
        println!(
            "{} ({}): root image {:.1} MB, bundle {:.1} MB",
            f.board,
            f.accel,
            f.root_bytes as f64 / 1e6,
            f.bundle_bytes as f64 / 1e6
        );
        println!(
            "  dd of the root to the inactive slot: {:.2} s ({:.1} MB/s); osctl upgrade's root phase: {:.2} s ({:.1} MB/s); ratio {:.2} (goal >= 0.8)",
            f.dd_s, f.dd_mb_s, f.root_phase_s, f.upgrade_root_mb_s, f.ratio
        );
        println!(
            "  the whole osctl upgrade (verify, root, kernel, initrd, activate): {:.2} s",
            f.upgrade_s
        );
        println!(
            "  osctl upgrade of a {:.2} MB delta to the same version: {:.2} s, against {:.2} s for the {:.1} MB bundle",
            f.delta_bytes as f64 / 1e6,
            f.delta_upgrade_s,
            f.upgrade_s,
            f.bundle_bytes as f64 / 1e6
        );
        println!(
            "  osctl upgrade -> ballast-ready of the new version: {:.1} s",
            f.upgrade_to_ready_s
        );
    }
    Ok(())
}
