//! `ballast`: the host-side builder. Thin: it parses arguments and calls the
//! modules that do the work. Exit codes: 0 success, 1 failure (the message says
//! what and where), 2 bad usage.

mod bench;
mod bench_delta;
mod bench_flash;
mod bench_install;
mod bench_iso;
mod bench_netboot;
mod bench_powercut;
mod bench_size;
mod bench_ssh;
mod bench_update;
mod board_files;
mod build;
mod cmd_delta;
mod cmd_fetch;
mod cmd_flash;
mod cmd_iso;
mod cmd_keys;
mod cmd_publish;
mod cmd_seed;
mod debpkg;
mod devbins;
mod disk_image;
mod effort;
mod elfdeps;
mod grub_bios;
mod initrd;
mod install_image;
mod iso;
mod kernel_input;
mod netboot;
mod project;
mod prune;
mod qemu;
mod rollout;
mod run;
mod uki;
mod userland;

use anyhow::{Context, Result};
use ballast_osctl::docs;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ballast",
    version,
    about = "Build, run and ship Ballast OS images",
    long_about = "Build, run and ship Ballast OS images.\n\n\
Each command has its own --help; `ballast man --out DIR` writes the man pages and\n\
`ballast completions bash` prints the bash completion.",
    after_long_help = "Example: build the minimal image for the arm64 QEMU board and boot it:\n  \
ballast build --board qemu-arm64 --image images/minimal.toml && ballast run --board qemu-arm64"
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
    #[command(after_long_help = BUILD_EXAMPLE)]
    Build(build::BuildArgs),
    /// Boot a build under QEMU the way the board's firmware would.
    #[command(after_long_help = "Example:\n  ballast run --board qemu-arm64")]
    Run(run::RunArgs),
    /// Resolve Debian packages for an arch and fetch them into the cache.
    #[command(after_long_help = "Example:\n  ballast fetch --arch arm64 openssh-server")]
    Fetch(cmd_fetch::FetchArgs),
    /// Measure: boot time against the floor init, warm rebuild time and
    /// image size, update throughput against dd and upgrade-to-ready time.
    #[command(
        subcommand,
        after_long_help = "Example:\n  ballast bench boot --board qemu-arm64"
    )]
    Bench(bench::BenchCmd),
    /// Make an ed25519 key pair for signing update bundles and channels.
    #[command(
        after_long_help = "Example:\n  ballast keygen --out keys/release --comment \"release 2026\""
    )]
    Keygen(cmd_keys::KeygenArgs),
    /// Make a signed delta update from one bundle to the next: machines running
    /// OLD download only what changed (`osctl upgrade DELTA`).
    #[command(
        after_long_help = "Example:\n  ballast delta out/0.1.0/update.bundle out/0.2.0/update.bundle -o 0.1.0-0.2.0.delta"
    )]
    Delta(cmd_delta::DeltaArgs),
    /// Verify an update bundle and add it to a signed channel directory.
    #[command(
        after_long_help = "Example:\n  ballast publish www/stable out/qemu-arm64/update.bundle --key keys/release.key"
    )]
    Publish(cmd_publish::PublishArgs),
    /// Write a NoCloud seed image (FAT labelled CIDATA, or ISO 9660 with
    /// --iso9660) with a first-boot config.
    #[command(after_long_help = "Example:\n  ballast seed --user-data user-data -o seed.img")]
    Seed(cmd_seed::SeedArgs),
    #[command(
        after_long_help = "Example, an SD card for a Raspberry Pi with a first-boot config:\n  ballast flash out/rpi3-arm64/install.img.zst /dev/sdb --user-data user-data"
    )]
    Flash(cmd_flash::FlashArgs),
    /// Live ISO tools: `ballast iso customize ISO --user-data F -o OUT`.
    #[command(
        subcommand,
        after_long_help = "Example:\n  ballast iso customize out/qemu-x86_64/ballast.iso --user-data user-data -o custom.iso"
    )]
    Iso(cmd_iso::IsoCmd),
    /// Kernel tools.
    /// Write a network-boot set (kernel, initramfs, verity root, iPXE script)
    /// to serve over TFTP and HTTP.
    #[command(
        after_long_help = "Example:\n  ballast netboot --board qemu-x86_64 --image images/minimal.toml --base-url http://10.0.2.2:8080 --out out/netboot && ballast run --board qemu-x86_64 --netboot out/netboot"
    )]
    Netboot(netboot::NetbootArgs),
    #[command(
        subcommand,
        after_long_help = "Example:\n  ballast kernel check --board qemu-arm64"
    )]
    Kernel(KernelCmd),
    /// Print the shell completion script for bash, zsh or fish (and others).
    #[command(
        after_long_help = "Example, for bash:\n  ballast completions bash > ~/.local/share/bash-completion/completions/ballast"
    )]
    Completions {
        /// The shell.
        shell: docs::Shell,
    },
    /// Write a man page for ballast and each of its commands into a directory.
    #[command(
        after_long_help = "Example:\n  ballast man --out ~/.local/share/man/man1 && man ballast-build"
    )]
    Man {
        /// Where to write `ballast.1`, `ballast-build.1`, ...
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `ballast build`'s example, and what a board gets.
const BUILD_EXAMPLE: &str = "\
Every board gets, in its output directory (--out, default out/BOARD):
  disk.img       the disk image to flash (both slots, boot and state partitions)
  update.bundle  the same OS as a signed update bundle, for `osctl upgrade`
  install.img.zst and install.img.zst.manifest
                 the disk image compressed, and its signed manifest, for
                 `osctl install`, `ballast.install=` and `ballast flash`
  vmlinuz        the kernel
  initrd.img     the initramfs
  root.img       slot A's root image with its dm-verity hash tree (`ballast netboot`)
  ballast.iso    the hybrid live ISO (x86_64 and arm64 UEFI boards): CD or USB stick
  build.json     what was built and where (the same as --json prints)
With --no-disk: vmlinuz, initrd.img and build.json only.

Example:
  ballast build --board qemu-arm64 --image images/minimal.toml --version 0.2.0";

#[derive(Subcommand)]
enum KernelCmd {
    /// Check a board's Debian kernel against kernel-configs/.
    #[command(after_long_help = "Example:\n  ballast kernel check --board qemu-x86_64")]
    Check(build::KernelCheckArgs),
}

/// ballast's whole command line, with the examples of the `bench` verbs (defined
/// in their own modules) added here so every command's long help ends with one.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("bench", |b| {
        b.mut_subcommand("boot", |c| {
            c.after_long_help("Example:\n  ballast bench boot --board qemu-arm64 --runs 3")
        })
        .mut_subcommand("build", |c| {
            c.after_long_help("Example:\n  ballast bench build --board qemu-arm64")
        })
        .mut_subcommand("flash", |c| {
            c.after_long_help("Example (as root):\n  ballast bench flash out/qemu-x86_64/disk.img")
        })
        .mut_subcommand("update", |c| {
            c.after_long_help(
                "Example:\n  ballast bench update --board qemu-arm64 -- --image images/minimal.toml",
            )
        })
    })
}

fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
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
        Cmd::Completions { shell } => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&docs::completion(&command(), *shell))
                .context("writing the completion to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man { out } => {
            let written = docs::write_man_pages(&command(), out)?;
            println!("wrote {} man pages to {}", written.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fetch(args) => cmd_fetch::run(args).map(|()| ExitCode::SUCCESS),
        Cmd::Keygen(args) => cmd_keys::run(args).map(|()| ExitCode::SUCCESS),
        Cmd::Publish(args) => cmd_publish::run(args).map(|()| ExitCode::SUCCESS),
        Cmd::Delta(args) => cmd_delta::run(&project()?, args).map(|()| ExitCode::SUCCESS),
        Cmd::Seed(args) => cmd_seed::run(args).map(|()| ExitCode::SUCCESS),
        Cmd::Flash(args) => cmd_flash::run(args).map(|()| ExitCode::SUCCESS),
        Cmd::Iso(cmd) => cmd_iso::run(cmd).map(|()| ExitCode::SUCCESS),
        Cmd::Build(args) => build::run(&project()?, args).map(|()| ExitCode::SUCCESS),
        Cmd::Run(args) => run::run(&project()?, args),
        Cmd::Netboot(args) => netboot::run(&project()?, args).map(|()| ExitCode::SUCCESS),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_long_help_ends_with_an_example() {
        let missing = docs::commands_without_example(&command());
        assert!(
            missing.is_empty(),
            "no example in the long help of: {missing:?}"
        );
        let build = command()
            .find_subcommand("build")
            .and_then(|b| b.get_after_long_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        for artifact in [
            "disk.img",
            "update.bundle",
            "vmlinuz",
            "initrd.img",
            "build.json",
        ] {
            assert!(
                build.contains(artifact),
                "build's help lacks {artifact}: {build}"
            );
        }
    }

    #[test]
    fn completions_know_every_command_and_each_has_a_man_page() {
        let cmd = command();
        let paths = docs::command_paths(&cmd);
        assert!(paths.contains(&vec!["bench".to_string(), "update".to_string()]));
        assert!(paths.contains(&vec!["kernel".to_string(), "check".to_string()]));
        for shell in [docs::Shell::Bash, docs::Shell::Zsh, docs::Shell::Fish] {
            let script = String::from_utf8(docs::completion(&cmd, shell)).unwrap();
            for path in &paths {
                let word = path.last().unwrap();
                assert!(
                    script.contains(word.as_str()),
                    "{shell}: no `{}`",
                    path.join(" ")
                );
            }
            assert!(script.contains("no-disk"), "{shell}: build's options");
        }
        let dir = tempfile::tempdir().unwrap();
        let written = docs::write_man_pages(&cmd, dir.path()).unwrap();
        assert_eq!(written.len(), paths.len() + 1);
        for path in &paths {
            let page = dir.path().join(format!("ballast-{}.1", path.join("-")));
            let text = std::fs::read_to_string(&page).unwrap();
            assert!(text.contains("Example"), "{}", page.display());
        }
        let build = std::fs::read_to_string(dir.path().join("ballast-build.1")).unwrap();
        assert!(build.contains("\\-\\-board"), "{build}");
    }
}
