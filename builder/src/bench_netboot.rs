//! `ballast bench netboot --board B`: a diskless network boot (issue 15's
//! performance figures). It builds the image (default `images/minimal.toml`)
//! with a throwaway SSH key (or takes `--build DIR --ssh-key KEY`), writes
//! its netboot set, boots it with `ballast
//! run --netboot` and reports: QEMU start to `ballast-ready ... slot=net`; the
//! bytes sent over TFTP (x86_64: only `boot.ipxe`, iPXE fetches the rest over
//! HTTP; arm64: the UKI `ballast.efi`, which AAVMF's own PXE fetches, and how
//! long that took by AAVMF's console lines) and over HTTP, beside the floor of
//! fetching each file of the set once; and
//! the RAM in use after ready (MemTotal - MemAvailable over SSH), beside the
//! root image that lives in RAM.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::build::human_size;
use crate::project::Project;
use crate::qemu::Console;

#[derive(Args, Debug)]
pub struct NetbootBenchArgs {
    /// Board to boot (x86_64: iPXE under SeaBIOS; arm64: the UKI through
    /// AAVMF's own PXE).
    #[arg(long)]
    pub board: String,
    /// Image file to build (default: images/minimal.toml).
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Use this existing `ballast build` output instead of building; it must
    /// have the public half of `--ssh-key` baked in (`build --ssh-key`).
    #[arg(
        long,
        value_name = "DIR",
        requires = "ssh_key",
        conflicts_with = "image"
    )]
    pub build: Option<PathBuf>,
    /// With --build: the private SSH key for user `ballast` on that build.
    #[arg(long, value_name = "FILE", requires = "build")]
    pub ssh_key: Option<PathBuf>,
    /// The machine's RAM in MiB (default: the QEMU profile's).
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u32>,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug, PartialEq)]
struct Figures {
    board: String,
    start_to_ready_s: f64,
    tftp_bytes: u64,
    /// arm64: from AAVMF's "Downloading NBP file" to its success line.
    #[serde(skip_serializing_if = "Option::is_none")]
    tftp_s: Option<f64>,
    http_bytes: u64,
    /// Each file fetched over HTTP once: vmlinuz + initrd.img + root.img
    /// (x86_64), root.img (arm64, whose kernel and initramfs came in the UKI).
    http_floor_bytes: u64,
    mem_total_bytes: u64,
    mem_used_after_ready_bytes: u64,
    /// The root image, which a diskless machine keeps in RAM.
    root_bytes: u64,
}

/// The bytes of every `HTTP GET ...: 200, N bytes` line `ballast run` printed.
fn http_bytes(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.starts_with("ballast run: HTTP GET "))
        .filter_map(|l| l.rsplit_once(": 200, "))
        .filter_map(|(_, n)| n.strip_suffix(" bytes")?.parse::<u64>().ok())
        .sum()
}

/// MemTotal and MemTotal - MemAvailable from /proc/meminfo, in bytes.
fn mem_used(meminfo: &str) -> Option<(u64, u64)> {
    let kib = |key: &str| -> Option<u64> {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()
    };
    let total = kib("MemTotal:")?;
    let available = kib("MemAvailable:")?;
    Some((total * 1024, total.saturating_sub(available) * 1024))
}

/// Seconds between AAVMF's "Downloading NBP file" and its "NBP file
/// downloaded successfully" (edk2's PXE client prints both on the console).
fn tftp_seconds(timed: &[(f64, String)]) -> Option<f64> {
    let at = timed
        .iter()
        .position(|(_, l)| l.contains("Downloading NBP file"))?;
    let (start, _) = timed[at];
    let (end, _) = timed[at..]
        .iter()
        .find(|(_, l)| l.contains("NBP file downloaded") || l.contains("EFI stub"))?;
    Some(end - start)
}

fn size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

/// Builds the image with a throwaway SSH key; returns the build and the key.
fn build(
    project: &Project,
    args: &NetbootBenchArgs,
    dir: &Path,
    exe: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let key = dir.join("id_ed25519");
    crate::bench_ssh::keygen(&key)?;
    let out = dir.join("build");
    let image = args
        .image
        .clone()
        .unwrap_or_else(|| project.root.join("images").join("minimal.toml"));
    let st = Command::new(exe)
        .arg("--root")
        .arg(&project.root)
        .args(["build", "--board", &args.board, "--image"])
        .arg(&image)
        .arg("--out")
        .arg(&out)
        .arg("--ssh-key")
        .arg(key.with_extension("pub"))
        .stdout(Stdio::null())
        .status()
        .context("running ballast build")?;
    if !st.success() {
        bail!("ballast build --board {} failed", args.board);
    }
    Ok((out, key))
}

pub fn run(project: &Project, args: &NetbootBenchArgs) -> Result<()> {
    let dir = project.target_dir().join("bench-netboot").join(&args.board);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe().context("finding the ballast executable")?;
    let (out, key) = match (&args.build, &args.ssh_key) {
        (Some(out), Some(key)) => (out.clone(), key.clone()),
        _ => build(project, args, &dir, &exe)?,
    };
    let port = crate::bench_ssh::free_port()?;
    let set = dir.join("set");
    let st = Command::new(&exe)
        .arg("--root")
        .arg(&project.root)
        .args(["netboot", "--board", &args.board, "--build"])
        .arg(&out)
        .args(["--base-url", &format!("http://10.0.2.2:{port}"), "--out"])
        .arg(&set)
        .stdout(Stdio::null())
        .status()
        .context("running ballast netboot")?;
    if !st.success() {
        bail!("ballast netboot --board {} failed", args.board);
    }

    let ssh_port = crate::bench_ssh::free_port()?;
    let log = dir.join("run.log");
    let mut cmd = Command::new(&exe);
    cmd.arg("--root")
        .arg(&project.root)
        .args(["run", "--board", &args.board, "--netboot"])
        .arg(&set)
        .args(["--no-reboot", "--ssh-port", &ssh_port.to_string()]);
    if let Some(mib) = args.memory {
        cmd.args(["--memory", &mib.to_string()]);
    }
    let stderr =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let start = Instant::now();
    let mut console = Console::spawn_with_stderr(cmd, Stdio::from(stderr))?;
    let timed = match console.timed_until("ballast-ready", start, Duration::from_secs(900)) {
        Ok(t) => t,
        Err(e) => {
            console.kill();
            bail!(
                "the netboot did not reach ballast-ready: {e}; console:\n{}",
                console.transcript.join("\n")
            );
        }
    };
    let start_to_ready_s = start.elapsed().as_secs_f64();
    let tftp_s = tftp_seconds(&timed);
    let ready = console.transcript.last().cloned().unwrap_or_default();
    if !ready.contains("slot=net") {
        console.kill();
        bail!("not a network boot: {ready}");
    }
    let meminfo = Command::new("ssh")
        .arg("-i")
        .arg(&key)
        .args(["-p", &ssh_port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=30",
            "-o",
            "LogLevel=ERROR",
        ])
        .args(["ballast@127.0.0.1", "cat /proc/meminfo"])
        .stdin(Stdio::null())
        .output()
        .context("running ssh")?;
    console.kill();
    let text = String::from_utf8_lossy(&meminfo.stdout);
    let (mem_total_bytes, mem_used_after_ready_bytes) = mem_used(&text).with_context(|| {
        format!(
            "no MemTotal/MemAvailable over SSH ({}): {text:?} {}",
            meminfo.status,
            String::from_utf8_lossy(&meminfo.stderr)
        )
    })?;
    let served =
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let root_bytes = size(&set.join("root.img"))?;
    let arch = crate::netboot::NetbootSet::load(&set)?.arch;
    let tftp_file = crate::netboot::tftp_file(&arch);
    let http_floor_bytes = if tftp_file == crate::netboot::UKI {
        root_bytes
    } else {
        size(&set.join("vmlinuz"))? + size(&set.join("initrd.img"))? + root_bytes
    };
    let figures = Figures {
        board: args.board.clone(),
        start_to_ready_s,
        tftp_bytes: size(&set.join(tftp_file))?,
        tftp_s,
        http_bytes: http_bytes(&served),
        http_floor_bytes,
        mem_total_bytes,
        mem_used_after_ready_bytes,
        root_bytes,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        let tftp_time = figures
            .tftp_s
            .map(|s| format!(" in {s:.1} s"))
            .unwrap_or_default();
        println!(
            "{}: QEMU start to ready over PXE {:.1} s; TFTP {} bytes ({tftp_file}){tftp_time}; HTTP {} (each file once: {}); RAM in use after ready {} of {} (the root in RAM: {})",
            figures.board,
            figures.start_to_ready_s,
            figures.tftp_bytes,
            human_size(figures.http_bytes),
            human_size(figures.http_floor_bytes),
            human_size(figures.mem_used_after_ready_bytes),
            human_size(figures.mem_total_bytes),
            human_size(figures.root_bytes),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_lines_and_meminfo() {
        let log = "ballast run: serving /x at http://127.0.0.1:1/\n\
                   ballast run: HTTP GET /vmlinuz HTTP/1.1: 200, 100 bytes\n\
                   ballast run: HTTP GET /nope HTTP/1.1: 404\n\
                   ballast run: HTTP GET /root.img HTTP/1.1: 200, 23 bytes\n";
        assert_eq!(http_bytes(log), 123);
        let meminfo = "MemTotal:        1000 kB\nMemFree:  10 kB\nMemAvailable:     600 kB\n";
        assert_eq!(mem_used(meminfo), Some((1000 * 1024, 400 * 1024)));
        assert_eq!(mem_used("MemTotal: 5 kB\n"), None);
        let timed = [
            (1.0, ">>Start PXE over IPv4.".to_string()),
            (2.0, "  Downloading NBP file...".to_string()),
            (2.5, String::new()),
            (9.5, "  NBP file downloaded successfully.".to_string()),
        ];
        assert_eq!(tftp_seconds(&timed), Some(7.5));
        assert_eq!(tftp_seconds(&timed[..2]), None);
    }
}
