//! `ballast`: the host-side builder. Thin: it parses arguments and calls the
//! modules that do the work. Exit codes: 0 success, 1 failure (the message says
//! what and where), 2 bad usage.

mod bench;
mod bench_update;
mod build;
mod cmd_fetch;
mod cmd_keys;
mod cmd_publish;
mod cmd_seed;
mod debpkg;
mod devbins;
mod disk_image;
mod initrd;
mod kernel_input;
mod project;
mod qemu;
mod run;
mod userland;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ballast",
    version,
    about = "Build, run and ship Ballast OS images"
)]
struct Cli {
    /// The Ballast checkout (boards/, images/, qemu/, kernel-configs/).
    /// Default: BALLAST_ROOT, else found from the working directory.
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build an image for a board: the disk image to flash, its kernel and
    /// initramfs, and the same OS as a signed update bundle (--no-disk: kernel
    /// and initramfs only).
    Build(build::BuildArgs),
    /// Boot a build under QEMU the way the board's firmware would.
    Run(run::RunArgs),
    /// Resolve Debian packages for an arch and fetch them into the cache.
    Fetch(cmd_fetch::FetchArgs),
    /// Measure: boot time against the floor init, warm rebuild time and
    /// image size, update throughput against dd and upgrade-to-ready time.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Make an ed25519 key pair for signing update bundles and channels.
    Keygen(cmd_keys::KeygenArgs),
    /// Verify an update bundle and add it to a signed channel directory.
    Publish(cmd_publish::PublishArgs),
    /// Write a NoCloud seed image (FAT labelled CIDATA, or ISO 9660 with
    /// --iso9660) with a first-boot config.
    Seed(cmd_seed::SeedArgs),
    /// Kernel tools.
    #[command(subcommand)]
    Kernel(KernelCmd),
}

#[derive(Subcommand)]
enum KernelCmd {
    /// Check a board's Debian kernel against kernel-configs/.
    Check(build::KernelCheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ballast: error: {}", render(&err));
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    // `fetch` needs no checkout; everything else reads boards/ and images/.
    let project = || project::Project::discover(cli.root.as_deref());
    match &cli.command {
        Cmd::Fetch(args) => cmd_fetch::run(args).map(|()| ExitCode::SUCCESS),
        Cmd::Keygen(args) => cmd_keys::run(args).map(|()| ExitCode::SUCCESS),
        Cmd::Publish(args) => cmd_publish::run(args).map(|()| ExitCode::SUCCESS),
        Cmd::Seed(args) => cmd_seed::run(args).map(|()| ExitCode::SUCCESS),
        Cmd::Build(args) => build::run(&project()?, args).map(|()| ExitCode::SUCCESS),
        Cmd::Run(args) => run::run(&project()?, args),
        Cmd::Kernel(KernelCmd::Check(args)) => build::kernel_check(&project()?, args),
        Cmd::Bench(cmd) => bench::run(&project()?, cmd).map(|()| ExitCode::SUCCESS),
    }
}

/// The error and its causes on one line, each cause once: many library errors
/// already quote their source in their own message.
fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
