//! `ballast netboot`: the network-boot set of a build, for a TFTP/HTTP server.
//!
//! From one `ballast build` (run here, or an existing one with `--build`) it
//! writes to OUT:
//!
//! * `vmlinuz` and `initrd.img`: the build's kernel and initramfs (init and the
//!   modules stage 1 needs, NIC drivers included; no root);
//! * `root.img`: slot A's root image with its dm-verity hash tree, the same
//!   bytes as on the disk;
//! * `boot.ipxe`: the iPXE script. iPXE fetches it over TFTP, then the kernel
//!   and initramfs over HTTP from the base URL, and boots them with
//!   `ballast.root=URL/root.img`, the root hash (`ballast.verity=`), the
//!   consoles, and `ballast.root.ip=` filled in by iPXE from its own DHCP lease
//!   (ADR 0011);
//! * `install.img.zst` and its signed `install.img.zst.manifest` (when the
//!   build has a disk): the image the installer writes. With `--install
//!   DEVICE` the command line also carries `ballast.install=DEVICE
//!   ballast.install.image=URL/install.img.zst`: the machine boots diskless,
//!   sysd's unattended install (the ISO's installer) fetches the image and
//!   its manifest from the set, checks them, writes DEVICE and reboots into it;
//! * `ballast.efi` on UEFI boards (x86_64, arm64): the Unified Kernel Image
//!   (`uki.rs`: the systemd stub with the kernel, initramfs and command line)
//!   that UEFI firmware boots over PXE (TFTP) with no iPXE, the way arm64
//!   servers boot. Its `.cmdline` pins the root hash; with no iPXE to fill in
//!   an address, stage 1 leases its own by DHCP;
//! * `netboot.json`: what `--json` prints (paths, base URL, command line).
//!
//! Files are hard-linked from the build when they can be (same filesystem),
//! copied otherwise.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::build::{self, BuildResult};
use crate::project::Project;
use ballast_inputs::Arch;

#[derive(Args, Debug)]
pub struct NetbootArgs {
    /// Board name (a file in boards/).
    #[arg(long)]
    pub board: String,
    /// Image file (default: images/default.toml).
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// OS version (default: the image's).
    #[arg(long, value_name = "VERSION")]
    pub version: Option<semver::Version>,
    /// Use this existing `ballast build` output instead of building (its
    /// build.json must name the same board).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["image", "version"])]
    pub build: Option<PathBuf>,
    /// Where OUT will be served over HTTP, as the machines see it, e.g.
    /// `http://10.0.2.2:8080/ballast` (no TLS: the root is pinned by its hash).
    #[arg(long = "base-url", value_name = "URL")]
    pub base_url: String,
    /// The directory to write the netboot set to.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Make an installer set: the machines boot it, write the install image
    /// from the set to DEVICE (e.g. /dev/vda, /dev/nvme0n1; what is on it is
    /// lost) and reboot into it.
    #[arg(long, value_name = "DEVICE")]
    pub install: Option<String>,
    /// Stage 1 leases its own address by DHCP instead of taking iPXE's
    /// (`ballast.root.ip=` is left out of the command line).
    #[arg(long)]
    pub dhcp: bool,
    /// Print what was written as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Build from the download cache only (as `ballast build --offline`).
    #[arg(long)]
    pub offline: bool,
}

/// What `ballast netboot` wrote; `--json` prints it and OUT/netboot.json keeps it.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct NetbootSet {
    pub board: String,
    pub arch: String,
    pub version: String,
    pub base_url: String,
    /// `vmlinuz`, `initrd`, `root`, `ipxe` (and `uki` on UEFI boards):
    /// absolute paths.
    pub files: BTreeMap<String, PathBuf>,
    /// The kernel command line `boot.ipxe` boots (iPXE variables unexpanded).
    pub cmdline: String,
    /// The command line inside `ballast.efi` (UEFI boards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uki_cmdline: Option<String>,
    pub root_hash: String,
    /// `--install DEVICE`: the disk the machines install themselves to.
    #[serde(default)]
    pub install: Option<String>,
}

pub const FILE: &str = "netboot.json";

impl NetbootSet {
    /// The set's `netboot.json` in `dir`.
    pub fn load(dir: &Path) -> Result<NetbootSet> {
        let json = dir.join(FILE);
        let text = std::fs::read_to_string(&json).with_context(|| {
            format!(
                "reading {}: make the set with `ballast netboot --out {}`",
                json.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))
    }
}

/// The file the firmware fetches over TFTP: iPXE's script on x86_64, the UKI
/// that AAVMF's own PXE starts on arm64.
pub fn tftp_file(arch: &str) -> &'static str {
    if arch == Arch::Arm64.name() {
        UKI
    } else {
        "boot.ipxe"
    }
}
/// The UKI's name in the set: what UEFI firmware's PXE is told to boot.
pub const UKI: &str = "ballast.efi";

/// The systemd stub for `arch` from Debian's `systemd-boot-efi`, fetched into
/// the download cache like every boot input.
fn systemd_stub(arch: Arch, offline: bool) -> Result<PathBuf> {
    let archive_args = crate::kernel_input::ArchiveArgs {
        offline,
        ..Default::default()
    };
    let archive = archive_args.open(arch, &[], &[])?;
    let tree = crate::debpkg::unpacked(&archive, &archive_args.cache_dir(), "systemd-boot-efi")?;
    let name = crate::uki::stub_name(arch)?;
    let stub = tree.join("usr/lib/systemd/boot/efi").join(name);
    if !stub.is_file() {
        bail!(
            "systemd-boot-efi for {} has no usr/lib/systemd/boot/efi/{name}",
            arch.debian()
        );
    }
    Ok(stub)
}

/// A base URL machines can fetch from: `http://HOST[:PORT][/PATH]`, returned
/// without a trailing slash.
pub fn check_base_url(url: &str) -> Result<String> {
    let Some(rest) = url.strip_prefix("http://") else {
        if url.starts_with("https://") {
            bail!("--base-url {url:?}: https is not supported yet (init fetches the root over plain HTTP; its dm-verity root hash protects it); use http://HOST[:PORT]/PATH");
        }
        bail!("--base-url {url:?} is not an http URL; give the URL the machines fetch OUT from, e.g. http://10.0.2.2:8080/ballast");
    };
    let host_port = rest.split('/').next().unwrap_or_default();
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host_port, None),
    };
    if host.is_empty() || host.contains(['@', ' ', '?', '#']) {
        bail!("--base-url {url:?} has no usable host; e.g. http://10.0.2.2:8080/ballast");
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            bail!("--base-url {url:?}: port {p:?} is not a port number (1-65535)");
        }
    }
    if url.contains(char::is_whitespace) || url.contains(['"', '?', '#']) {
        bail!("--base-url {url:?} must not contain spaces, quotes, '?' or '#': it goes into a kernel command line");
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The kernel command line of a netboot: the slot's (consoles, `panic=`,
/// `ballast.verity=`), the root's URL, and the address iPXE got by DHCP
/// (unless stage 1 is to lease its own: `dhcp`).
pub fn cmdline(slot_cmdline: &str, base_url: &str, dhcp: bool) -> String {
    let mut line = format!("{slot_cmdline} ballast.root={base_url}/root.img");
    if !dhcp {
        line.push_str(" ballast.root.ip=${net0/ip},${net0/netmask},${net0/gateway},${net0/mac}");
    }
    line
}

/// A `--install` device: a whole-disk path under /dev that fits on a kernel
/// command line.
pub fn check_install_device(device: &str) -> Result<()> {
    let ok = device.starts_with("/dev/")
        && device.len() > 5
        && !device.contains(char::is_whitespace)
        && !device.contains(['"', '\\']);
    if !ok {
        bail!("--install {device:?}: not a device path; give the disk to install to, e.g. /dev/vda or /dev/nvme0n1");
    }
    Ok(())
}

/// The command-line words of an unattended install from the set.
pub fn install_args(device: &str, base_url: &str) -> String {
    format!(
        "ballast.install={device} ballast.install.image={base_url}/{}",
        ballast_install::IMAGE_FILE
    )
}

/// `boot.ipxe`: kernel and initramfs over HTTP (TFTP carries only this script).
pub fn ipxe_script(version: &str, base_url: &str, cmdline: &str) -> String {
    format!(
        "#!ipxe\n\
         # Ballast {version}: written by `ballast netboot`.\n\
         echo Ballast {version}: kernel and initramfs from {base_url}\n\
         kernel {base_url}/vmlinuz initrd=initrd.img {cmdline} || goto retry\n\
         initrd --name initrd.img {base_url}/initrd.img || goto retry\n\
         boot\n\
         :retry\n\
         echo Ballast: cannot fetch from {base_url}; retrying in 5 s\n\
         sleep 5\n\
         chain boot.ipxe\n"
    )
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

pub fn run(project: &Project, args: &NetbootArgs) -> Result<()> {
    let base_url = check_base_url(&args.base_url)?;
    if let Some(device) = &args.install {
        check_install_device(device)?;
    }
    let build_dir = match &args.build {
        Some(dir) => dir.clone(),
        None => {
            let out = project.default_out(&args.board);
            let build_args = build::BuildArgs {
                board: args.board.clone(),
                image: args.image.clone(),
                version: args.version.clone(),
                out: Some(out.clone()),
                rollback_index: 0,
                json: false,
                kernel_args: Vec::new(),
                ssh_keys: Vec::new(),
                no_disk: false,
                signing_key: std::env::var_os("BALLAST_SIGNING_KEY").map(PathBuf::from),
                trusted_keys: Vec::new(),
                user_data: None,
                meta_data: None,
                compress: crate::effort::Effort::Best,
                archive: crate::kernel_input::ArchiveArgs {
                    offline: args.offline,
                    mirror: None,
                    cache: None,
                    suites: Vec::new(),
                    keyring: None,
                },
            };
            build::run(project, &build_args)?;
            out
        }
    };
    let built = BuildResult::load(&build_dir)?;
    if built.board != args.board {
        bail!(
            "{}: the build is for board {}, not {}; build it with `ballast build --board {}`",
            build_dir.join(BuildResult::FILE).display(),
            built.board,
            args.board,
            args.board
        );
    }
    let (Some(slot_cmdline), Some(root_hash)) = (&built.slot_cmdline, &built.root_hash) else {
        bail!(
            "{}: the build has no root image (built with --no-disk, or by an older ballast); rebuild without --no-disk",
            build_dir.join(BuildResult::FILE).display()
        );
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let out = std::path::absolute(&args.out)
        .with_context(|| format!("resolving {}", args.out.display()))?;
    let mut files = BTreeMap::new();
    for (key, artifact, name) in [
        ("vmlinuz", "kernel", "vmlinuz"),
        ("initrd", "initrd", "initrd.img"),
        ("root", "root", "root.img"),
    ] {
        let from = built.artifact(artifact)?;
        let to = out.join(name);
        link_or_copy(&from, &to)?;
        files.insert(key.to_string(), to);
    }
    // The installer's image and its signed manifest, served beside the root.
    if let Ok(image) = built.artifact("install_image") {
        let manifest = image.with_file_name(ballast_install::MANIFEST_FILE);
        if image.is_file() && manifest.is_file() {
            for (key, from, name) in [
                ("install_image", &image, ballast_install::IMAGE_FILE),
                (
                    "install_manifest",
                    &manifest,
                    ballast_install::MANIFEST_FILE,
                ),
            ] {
                let to = out.join(name);
                link_or_copy(from, &to)?;
                files.insert(key.to_string(), to);
            }
        }
    }
    let mut cmdline = cmdline(slot_cmdline, &base_url, args.dhcp);
    if let Some(device) = &args.install {
        if !files.contains_key("install_image") {
            bail!(
                "--install {device}: the build in {} has no {} with its manifest to install; rebuild it with this ballast (without --no-disk)",
                build_dir.display(),
                ballast_install::IMAGE_FILE
            );
        }
        cmdline.push(' ');
        cmdline.push_str(&install_args(device, &base_url));
    }
    // The UKI: UEFI's own PXE client fills in no address, so stage 1 leases
    // one by DHCP.
    let board = ballast_inputs::Board::find(&project.boards_dir(), &args.board)?;
    let uki_cmdline = match (board.boot.firmware, board.arch) {
        (ballast_inputs::BootFirmware::Uefi, Arch::X86_64 | Arch::Arm64) => {
            let mut line = self::cmdline(slot_cmdline, &base_url, true);
            if let Some(device) = &args.install {
                line.push(' ');
                line.push_str(&install_args(device, &base_url));
            }
            let stub = systemd_stub(board.arch, args.offline)?;
            let efi = out.join(UKI);
            crate::uki::write(
                &stub,
                &files["vmlinuz"],
                &files["initrd"],
                &line,
                &built.version,
                &efi,
            )
            .with_context(|| format!("writing the UKI {}", efi.display()))?;
            files.insert("uki".to_string(), efi);
            Some(line)
        }
        _ => None,
    };
    let script = out.join("boot.ipxe");
    std::fs::write(&script, ipxe_script(&built.version, &base_url, &cmdline))
        .with_context(|| format!("writing {}", script.display()))?;
    files.insert("ipxe".to_string(), script);
    let set = NetbootSet {
        board: built.board.clone(),
        arch: built.arch.clone(),
        version: built.version.clone(),
        base_url,
        files,
        cmdline,
        uki_cmdline,
        root_hash: root_hash.clone(),
        install: args.install.clone(),
    };
    let json = serde_json::to_string_pretty(&set)?;
    std::fs::write(out.join(FILE), &json)
        .with_context(|| format!("writing {}", out.join(FILE).display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&set)?);
    } else {
        eprintln!(
            "ballast: netboot set for {} {} in {}: serve it at {} (TFTP: {})",
            set.board,
            set.version,
            out.display(),
            set.base_url,
            tftp_file(&set.arch)
        );
        for (key, path) in &set.files {
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            eprintln!("  {key:8} {} ({})", path.display(), build::human_size(size));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_must_be_http() {
        assert_eq!(
            check_base_url("http://10.0.2.2:8080/ballast/").unwrap(),
            "http://10.0.2.2:8080/ballast"
        );
        assert_eq!(
            check_base_url("http://boot.example").unwrap(),
            "http://boot.example"
        );
        for bad in [
            "10.0.2.2/x",
            "ftp://h/x",
            "http://",
            "http://:80/x",
            "http://h:99999/",
            "http://h:0/",
            "http://h/a b",
        ] {
            let e = check_base_url(bad).unwrap_err().to_string();
            assert!(e.contains("--base-url"), "{bad}: {e}");
        }
        let e = check_base_url("https://h/x").unwrap_err().to_string();
        assert!(e.contains("https is not supported"), "{e}");
    }

    #[test]
    fn install_devices_are_device_paths() {
        check_install_device("/dev/vda").unwrap();
        check_install_device("/dev/nvme0n1").unwrap();
        for bad in ["vda", "/dev/", "/dev/vda extra", "/tmp/x"] {
            let e = check_install_device(bad).unwrap_err().to_string();
            assert!(e.contains("--install"), "{bad}: {e}");
        }
        assert_eq!(
            install_args("/dev/vda", "http://10.0.2.2:8080"),
            "ballast.install=/dev/vda ballast.install.image=http://10.0.2.2:8080/install.img.zst"
        );
    }

    #[test]
    fn the_script_boots_the_kernel_with_the_root_url_and_hash() {
        let own = cmdline("console=ttyS0", "http://h", true);
        assert_eq!(own, "console=ttyS0 ballast.root=http://h/root.img");
        let line = cmdline(
            "console=ttyS0 panic=5 ballast.verity=abc",
            "http://10.0.2.2:8080",
            false,
        );
        assert!(line.starts_with("console=ttyS0 panic=5 ballast.verity=abc "));
        assert!(line.contains(" ballast.root=http://10.0.2.2:8080/root.img "));
        assert!(line
            .ends_with("ballast.root.ip=${net0/ip},${net0/netmask},${net0/gateway},${net0/mac}"));
        let script = ipxe_script("0.1.0", "http://10.0.2.2:8080", &line);
        assert!(script.starts_with("#!ipxe\n"));
        assert!(script.contains(&format!(
            "kernel http://10.0.2.2:8080/vmlinuz initrd=initrd.img {line} || goto retry\n"
        )));
        assert!(script
            .contains("initrd --name initrd.img http://10.0.2.2:8080/initrd.img || goto retry\n"));
    }
}
