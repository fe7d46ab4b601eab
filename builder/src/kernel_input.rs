//! The board's Debian kernel as a build input: resolve the board's kernel
//! package (usually a metapackage such as `linux-image-arm64`) to the real
//! `linux-image-<release>` package through the archive client, fetch it
//! (signature- and hash-checked), and unpack only `boot/` and the modules
//! into the cache, once per package hash.
//!
//! The unpacked tree lives at `CACHE/kernels/<sha256 of the .deb>/`. It is
//! unpacked into a temporary sibling and renamed into place, and a
//! `kernel.json` written last marks it complete, so an interrupted unpack is
//! never mistaken for a good one.

use anyhow::{bail, Context, Result};
use ballast_debarchive::client::{Archive, ArchiveConfig};
use ballast_debarchive::keyring::Keyring;
use ballast_debarchive::packages::Package;
use ballast_debarchive::sources::Sources;
use ballast_debarchive::unpack;
use ballast_inputs::{Arch, Board, ImageFile};
use ballast_kernel::check::Report;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::project::{self, Project};

/// Where Debian packages come from and where they are kept.
#[derive(Args, Debug, Clone, Default)]
pub struct ArchiveArgs {
    /// Use only what is already in the cache; fail naming anything missing.
    #[arg(long)]
    pub offline: bool,
    /// Debian mirror base URL (default: BALLAST_DEBIAN_MIRROR, else the
    /// host's apt sources).
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Download cache (default: BALLAST_CACHE, else the user's cache
    /// directory).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Debian suite to read instead of the image's (repeatable), e.g.
    /// `--suite bookworm --suite bookworm-updates`.
    #[arg(long = "suite", value_name = "SUITE")]
    pub suites: Vec<String>,
    /// OpenPGP keyring to trust instead of the Debian keys shipped with Ballast.
    #[arg(long, value_name = "FILE")]
    pub keyring: Option<PathBuf>,
}

impl ArchiveArgs {
    pub fn cache_dir(&self) -> PathBuf {
        project::cache_dir(self.cache.as_deref())
    }

    /// Open the archive for one Debian architecture with the image's suites.
    pub fn open(&self, arch: Arch, suites: &[String], components: &[String]) -> Result<Archive> {
        let sources = Sources::from_env_or_host(self.mirror.as_deref())
            .context("choosing the Debian mirror")?;
        let keyring = match &self.keyring {
            Some(path) => Keyring::from_file(path)?,
            None => Keyring::debian()?,
        };
        let mut config = ArchiveConfig::new(arch.debian(), sources, self.cache_dir(), keyring);
        if !self.suites.is_empty() {
            config.suites = self.suites.clone();
        } else if !suites.is_empty() {
            config.suites = suites.to_vec();
        }
        if !components.is_empty() {
            config.components = components.to_vec();
        }
        config.offline = self.offline;
        config.progress = std::io::stderr().is_terminal();
        Archive::open(config).with_context(|| {
            format!(
                "opening the Debian archive for {} ({})",
                arch.name(),
                arch.debian()
            )
        })
    }
}

/// A Debian kernel unpacked in the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelTree {
    /// `uname -r`, e.g. `6.1.0-27-arm64`.
    pub release: String,
    /// The `linux-image-*` package and version it came from.
    pub package: String,
    pub version: String,
    pub vmlinuz: PathBuf,
    pub config: PathBuf,
    /// `.../lib/modules/<release>`.
    pub modules_dir: PathBuf,
    /// Modification time of the kernel image inside the package: the default
    /// `SOURCE_DATE_EPOCH` of what we build from it.
    pub mtime: u64,
}

const MARKER: &str = "kernel.json";

/// Open the archive for the board's arch with the image's suites.
pub fn open_archive(board: &Board, image: &ImageFile, args: &ArchiveArgs) -> Result<Archive> {
    args.open(board.arch, &image.debian.suites, &components(board, image))
}

/// The image's Debian components (`main` when it names none) and the ones the
/// board opts into (`non-free-firmware` for the Pi's firmware).
fn components(board: &Board, image: &ImageFile) -> Vec<String> {
    let mut all = image.debian.components.clone();
    if all.is_empty() && !board.debian.components.is_empty() {
        all.push("main".to_owned());
    }
    for c in &board.debian.components {
        if !all.contains(c) {
            all.push(c.clone());
        }
    }
    all
}

/// The board's device trees (`kernel.dtbs`) from its kernel package, unpacked
/// once per package into `CACHE/dtbs/<sha256>/`: (path on the boot partition,
/// `dtbs/<name>`, file).
pub fn dtbs(
    archive: &Archive,
    board: &Board,
    args: &ArchiveArgs,
    kernel: &KernelTree,
) -> Result<Vec<(String, PathBuf)>> {
    if board.kernel.dtbs.is_empty() {
        return Ok(Vec::new());
    }
    let package = kernel_package(archive, board)?;
    let parent = args.cache_dir().join("dtbs");
    let dir = parent.join(&package.sha256);
    let base = Path::new("usr/lib").join(format!("linux-image-{}", kernel.release));
    if !dir.is_dir() {
        let fetched = archive
            .fetch(std::slice::from_ref(&package))
            .with_context(|| format!("fetching {package}"))?;
        let deb = &fetched
            .first()
            .with_context(|| format!("the archive client returned nothing for {package}"))?
            .path;
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let tmp = parent.join(format!(".tmp-{}-{}", package.sha256, std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        let keep = |p: &Path| p.starts_with(&base);
        unpack::unpack_deb(deb, &tmp, &keep)
            .with_context(|| format!("unpacking the device trees of {}", deb.display()))?;
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            // Another build finished the same unpack first: use theirs.
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.is_dir() {
                return Err(e).with_context(|| format!("moving {} into place", dir.display()));
            }
        }
    }
    board
        .kernel
        .dtbs
        .iter()
        .map(|name| {
            let file = dir.join(&base).join(name);
            if !file.is_file() {
                bail!(
                    "{}: kernel.dtbs: {package} has no {}/{name}; name a device tree it ships",
                    board.path.display(),
                    base.display()
                );
            }
            Ok((format!("dtbs/{name}"), file))
        })
        .collect()
}

/// Resolve, fetch and unpack the board's kernel.
pub fn prepare(archive: &Archive, board: &Board, args: &ArchiveArgs) -> Result<KernelTree> {
    let package = kernel_package(archive, board)?;
    let fetched = archive
        .fetch(std::slice::from_ref(&package))
        .with_context(|| format!("fetching {package}"))?;
    let deb = &fetched
        .first()
        .with_context(|| format!("the archive client returned nothing for {package}"))?
        .path;
    unpack_kernel(&args.cache_dir(), &package, deb)
}

/// The real kernel image package behind `board.kernel.package`: the package
/// itself when it ships a kernel (`linux-image-<release>`), else the
/// `linux-image-*` its metapackage depends on.
fn kernel_package(archive: &Archive, board: &Board) -> Result<Package> {
    let wanted = &board.kernel.package;
    let universe = archive.universe();
    let Some(meta) = universe.get(wanted) else {
        bail!(
            "{}: kernel.package: {wanted:?} is not in the Debian archive for {}; \
             use a linux-image-* package that exists there (e.g. `ballast fetch --arch {} {wanted}` to check)",
            board.path.display(),
            board.arch.debian(),
            board.arch.debian()
        );
    };
    let target = meta
        .depends
        .iter()
        .flatten()
        .find(|rel| rel.name.starts_with("linux-image-") && rel.name != meta.name);
    let Some(target) = target else {
        return Ok(meta.clone());
    };
    // Take the newest version the metapackage's relation allows, but fetch
    // only the image package: its own dependencies (kmod, initramfs-tools,
    // ...) serve Debian's boot, not ours.
    universe
        .versions(&target.name)
        .iter()
        .find(|p| target.matches_version(&p.version))
        .cloned()
        .with_context(|| {
            format!(
                "{} {} depends on `{}`, which the archive for {} does not have",
                meta.name,
                meta.version,
                target,
                board.arch.debian()
            )
        })
}

fn unpack_kernel(cache: &Path, package: &Package, deb: &Path) -> Result<KernelTree> {
    let dir = cache.join("kernels").join(&package.sha256);
    let marker = dir.join(MARKER);
    if let Ok(text) = std::fs::read_to_string(&marker) {
        if let Ok(tree) = serde_json::from_str::<KernelTree>(&text) {
            if tree.vmlinuz.is_file() && tree.config.is_file() && tree.modules_dir.is_dir() {
                return Ok(tree);
            }
        }
    }
    let parent = cache.join("kernels");
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".tmp-{}-{}", package.sha256, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let keep = |p: &Path| {
        p.starts_with("boot") || p.starts_with("lib/modules") || p.starts_with("usr/lib/modules")
    };
    let manifest = unpack::unpack_deb(deb, &tmp, &keep)
        .with_context(|| format!("unpacking {}", deb.display()))?;

    let vmlinuz_entry = manifest
        .entries
        .iter()
        .find(|e| {
            e.path.starts_with("boot")
                && e.path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-") || n.starts_with("vmlinux-"))
        })
        .with_context(|| format!("{}: no boot/vmlinuz-* in {package}", deb.display()))?;
    let file_name = vmlinuz_entry
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let release = file_name
        .split_once('-')
        .map(|(_, r)| r.to_owned())
        .with_context(|| {
            format!(
                "{}: cannot read the release from {file_name}",
                deb.display()
            )
        })?;
    let mtime = vmlinuz_entry.mtime;

    let modules_rel = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|base| Path::new(base).join(&release))
        .find(|p| tmp.join(p).is_dir())
        .with_context(|| format!("{}: no lib/modules/{release} in {package}", deb.display()))?;

    // Move the finished tree into place; another build may have won the race.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
    ballast_device::atomic::sync_dir(&parent)?;
    let tree = KernelTree {
        release: release.clone(),
        package: package.name.clone(),
        version: package.version.to_string(),
        vmlinuz: dir.join("boot").join(&file_name),
        config: dir.join("boot").join(format!("config-{release}")),
        modules_dir: dir.join(modules_rel),
        mtime,
    };
    if !tree.config.is_file() {
        bail!(
            "{}: {package} ships no boot/config-{release}; Ballast needs it to check the kernel",
            deb.display()
        );
    }
    let json = serde_json::to_vec_pretty(&tree)?;
    ballast_device::atomic::write_atomic(&marker, &json)?;
    Ok(tree)
}

/// Compare the kernel's config with `kernel-configs/` for the board's arch.
/// Check the kernel against `kernel-configs/`; `engine`: the image runs a user
/// container engine, so `engine.config` is required too.
pub fn check(
    project: &Project,
    board: &Board,
    kernel: &KernelTree,
    engine: bool,
) -> Result<Report> {
    let extra: &[&str] = if engine { &["engine"] } else { &[] };
    ballast_kernel::check::check_dir_with(
        &kernel.config,
        &project.kernel_configs_dir(),
        board.arch.name(),
        extra,
    )
    .with_context(|| {
        format!(
            "checking {} against kernel-configs/",
            kernel.config.display()
        )
    })
}
