//! `ballast run`: boot a board's build under QEMU, serial console on stdout.

use anyhow::{Context, Result};
use ballast_spec::{Board, QemuProfile};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::build::BuildResult;
use crate::project::Project;
use crate::qemu::{self, AccelChoice, Launch};

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
    /// Extra kernel command-line arguments, e.g. `--append ballast.debug=poweroff`.
    #[arg(long, value_name = "ARGS")]
    pub append: Vec<String>,
    /// Accelerator: auto probes KVM once and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Exit QEMU instead of rebooting the guest.
    #[arg(long)]
    pub no_reboot: bool,
    /// Cache directory (default: BALLAST_CACHE, else the user's cache dir).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

pub fn run(project: &Project, args: &RunArgs) -> Result<ExitCode> {
    let board = Board::find(&project.boards_dir(), &args.board)?;
    let profile_name = board.qemu.as_deref().with_context(|| {
        format!(
            "{}: board has no `qemu` profile, so it cannot be run under QEMU",
            board.path.display()
        )
    })?;
    let profile = QemuProfile::find(&project.qemu_dir(), profile_name)?;
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
    let mut cmdline = build.cmdline.clone();
    for extra in &args.append {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    let launch = Launch {
        profile,
        kernel: build.artifact("kernel")?,
        initrd: build.artifact("initrd")?,
        cmdline,
        ssh_port: args.ssh_port,
        no_reboot: args.no_reboot,
    };
    let cache = crate::project::cache_dir(args.cache.as_deref());
    let accel = qemu::choose_accel(&launch, board.arch, args.accel, &cache)?;
    let mut cmd = launch.command(accel);
    let status = cmd.status().with_context(|| {
        format!(
            "starting {}: is QEMU installed? (scripts/setup)",
            launch.profile.binary
        )
    })?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}
