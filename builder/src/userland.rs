//! System containers as the image carries them: one shared, read-only
//! Debian userland (`/usr/lib/ballast/userland`) that every system
//! container uses as its root, and one container directory per container
//! (`/usr/lib/ballast/system/NAME/`: its OCI config `config.json` and its
//! service definition `manifest.toml`).
//!
//! Definitions live in the repository under `system/NAME/`:
//! `config.json` (OCI runtime spec; any OCI runtime runs it), `manifest.toml`
//! (sysd's: order, restart, health), `build.toml` (`packages = [...]`, the
//! Debian packages its processes need) and `files/` (added to the userland).
//! `system/base/` is the userland every container shares (users, groups).
//!
//! Packages are unpacked without running maintainer scripts, the way
//! mmdebstrap's "extract" variant does; what those scripts would have made
//! (users, the sshd configuration, ...) comes from the `files/` trees.
//! Documentation (but each package's copyright file), man pages and
//! translations are left out; then `prune` keeps only what the programs run
//! and load, and records which package each shipped file came from.

use anyhow::{bail, Context, Result};
use ballast_debarchive::client::Archive;
use ballast_debarchive::resolve::Request;
use ballast_debarchive::unpack;
use ballast_debarchive::version::Version;
use ballast_inputs::ImageFile;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::project::Project;
use crate::prune;

/// Where the shared userland lives inside the root image.
pub const USERLAND: &str = "usr/lib/ballast/userland";
/// Where the container directories live inside the root image.
pub const CONTAINER_DIRS: &str = "usr/lib/ballast/system";
/// Group id of the engine group (`docker` or `containerd`, after the engine),
/// whose members may use the engine's socket. Fixed, because the daemon
/// (engine container) and the CLI (SSH container) read the same `/etc/group`
/// but must agree across images too, and containerd's config names it by number.
pub const ENGINE_GID: u32 = 990;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildFile {
    #[serde(default)]
    packages: Vec<String>,
    /// Programs (absolute paths) kept from packages not in `packages`, which
    /// came in as dependencies: only the listed programs of those are shipped.
    #[serde(default)]
    programs: Vec<PathBuf>,
    /// Programs of `packages` that nothing runs, left out (absolute paths).
    #[serde(default)]
    skip_programs: Vec<PathBuf>,
    /// Programs this container starts on its way to healthy (absolute
    /// paths): listed with the libraries they load in the image's read-ahead
    /// list, which `sysd --read-ahead` (started by init once the root is
    /// mounted) reads into memory while the boot goes on.
    #[serde(default)]
    read_ahead: Vec<PathBuf>,
}

/// One `system/NAME/` definition.
#[derive(Debug, Clone)]
pub struct SystemDef {
    pub name: String,
    pub dir: PathBuf,
    pub packages: Vec<String>,
    pub programs: Vec<PathBuf>,
    pub skip_programs: Vec<PathBuf>,
    pub read_ahead: Vec<PathBuf>,
}

fn load_def(dir: &Path, name: &str) -> Result<SystemDef> {
    let build = dir.join("build.toml");
    let text =
        std::fs::read_to_string(&build).with_context(|| format!("reading {}", build.display()))?;
    let parsed: BuildFile = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", build.display(), e.message()))?;
    for p in parsed
        .programs
        .iter()
        .chain(&parsed.skip_programs)
        .chain(&parsed.read_ahead)
    {
        if !p.is_absolute() {
            bail!(
                "{}: programs, skip_programs, read_ahead: {} must be an absolute path, e.g. \"/usr/bin/ssh-keygen\"",
                build.display(),
                p.display()
            );
        }
    }
    Ok(SystemDef {
        name: name.to_owned(),
        dir: dir.to_path_buf(),
        packages: parsed.packages,
        programs: parsed.programs,
        skip_programs: parsed.skip_programs,
        read_ahead: parsed.read_ahead,
    })
}

/// The image's system containers, then its user container engine's system
/// container (`engine`, if not `none`), plus `base`. An unknown name is an error naming
/// the image file and the known ones.
pub fn load_defs(project: &Project, image: &ImageFile) -> Result<(SystemDef, Vec<SystemDef>)> {
    let root = project.root.join("system");
    let base = load_def(&root.join("base"), "base")?;
    let mut known: Vec<String> = std::fs::read_dir(&root)
        .with_context(|| format!("reading {}", root.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("config.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    known.sort();
    let mut defs = Vec::new();
    for name in &image.system {
        if !known.contains(name) {
            bail!(
                "{}: system: unknown system container {name:?}; known: {}",
                image.path.display(),
                known.join(", ")
            );
        }
        defs.push(load_def(&root.join(name), name)?);
    }
    if let Some(engine) = image.engine.system_container() {
        if !known.iter().any(|k| k == engine) {
            bail!(
                "{}: engine: {engine:?} needs the system container system/{engine}/, which this checkout does not have; \
                 choose engine = \"docker\" or \"none\"",
                image.path.display()
            );
        }
        if !image.system.iter().any(|s| s == engine) {
            defs.push(load_def(&root.join(engine), engine)?);
        }
    }
    Ok((base, defs))
}

/// What went into the userland.
#[derive(Debug)]
pub struct Report {
    pub packages: usize,
    pub pruned: prune::Pruned,
    /// Which package each unpacked file came from, for the provenance table.
    pub owners: prune::Owners,
    /// The files the containers' `read_ahead` programs are and load,
    /// relative to the userland, programs in the order named.
    pub read_ahead: Vec<PathBuf>,
}

fn keep(path: &Path) -> bool {
    if path.starts_with("usr/share/doc") && path.file_name().is_some_and(|n| n == "copyright") {
        return true;
    }
    const DROP: [&str; 6] = [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/lintian",
        "usr/share/bug",
    ];
    !DROP.iter().any(|d| path.starts_with(d))
}

/// Resolve, fetch and unpack the userland into `dest`, then add the
/// definitions' files. `extra` are the board's and the image's own packages
/// (`[debian] packages`), kept like a container's.
pub fn build(
    archive: &Archive,
    image: &ImageFile,
    base: &SystemDef,
    defs: &[SystemDef],
    extra: &[String],
    dest: &Path,
) -> Result<Report> {
    let mut packages: BTreeSet<String> = base.packages.iter().cloned().collect();
    for def in defs {
        packages.extend(def.packages.iter().cloned());
    }
    packages.extend(extra.iter().cloned());
    let mut pins = BTreeMap::new();
    for (name, version) in &image.debian.pins {
        let v = Version::parse(version).with_context(|| {
            format!(
                "{}: debian.pins.{name}: {version:?} is not a Debian version",
                image.path.display()
            )
        })?;
        pins.insert(name.clone(), v);
    }
    let request = Request {
        packages: packages.into_iter().collect(),
        exclude: image.debian.exclude.iter().cloned().collect(),
        pins,
    };
    let resolution = archive
        .resolve(&request)
        .context("resolving the system containers' Debian packages")?;
    let fetched = archive.fetch(&resolution.packages)?;

    // merged /usr, as Debian bookworm installs it.
    for dir in [
        "usr/bin", "usr/sbin", "usr/lib", "etc", "var", "run", "tmp", "proc", "sys", "dev", "root",
        "state",
    ] {
        std::fs::create_dir_all(dest.join(dir))?;
    }
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")] {
        std::os::unix::fs::symlink(target, dest.join(link))?;
    }
    if archive.universe().arch() == "amd64" {
        std::fs::create_dir_all(dest.join("usr/lib64"))?;
        std::os::unix::fs::symlink("usr/lib64", dest.join("lib64"))?;
    }
    let mut debs: Vec<_> = fetched.iter().collect();
    debs.sort_by(|a, b| a.package.name.cmp(&b.package.name));
    let mut owners = prune::Owners::default();
    for deb in debs {
        let manifest = crate::debpkg::unpack_into(deb, archive.cache_dir(), dest, &keep)
            .with_context(|| format!("unpacking {}", deb.package))?;
        let version = deb.package.version.to_string();
        owners.record(
            &deb.package.name,
            &version,
            manifest
                .entries
                .iter()
                .filter(|e| !matches!(e.kind, unpack::EntryKind::Dir))
                .map(|e| e.path.as_path()),
        );
        if deb.package.name == "ca-certificates" {
            // The bundle made from its certificates below.
            owners.record(&deb.package.name, &version, [Path::new(CA_BUNDLE)]);
        }
    }
    ca_bundle(dest)?;
    let mut policy = prune::Policy::default();
    for def in std::iter::once(base).chain(defs) {
        for written in copy_tree(&def.dir.join("files"), dest)? {
            owners.forget(&written);
            policy.ours.insert(written);
        }
        policy.packages.extend(def.packages.iter().cloned());
        policy.programs.extend(def.programs.iter().cloned());
        policy.skip.extend(def.skip_programs.iter().cloned());
    }
    policy.packages.extend(extra.iter().cloned());
    let pruned = prune::prune(dest, &owners, &policy).context("pruning the userland")?;
    let read_ahead = read_ahead_list(dest, std::iter::once(base).chain(defs))?;
    // The engine group is named after the engine (`docker`, `containerd`);
    // its socket is owned by ENGINE_GID either way.
    if let Some(engine) = image.engine.system_container() {
        add_engine_group(dest, engine, ENGINE_GID, "ballast")?;
    }
    let resolv = dest.join("etc/resolv.conf");
    if resolv.symlink_metadata().is_ok() {
        std::fs::remove_file(&resolv)?;
    }
    std::os::unix::fs::symlink("/run/ballast/resolv.conf", &resolv)?;
    owners.forget(Path::new("etc/resolv.conf"));
    ship_osctl_docs(dest)?;
    Ok(Report {
        packages: resolution.packages.len(),
        pruned,
        owners,
        read_ahead,
    })
}

/// The definitions' `read_ahead` programs and what they load, each file once,
/// in the order the programs are named. A program the userland does not ship
/// is an error naming its `build.toml`.
fn read_ahead_list<'a>(
    userland: &Path,
    defs: impl Iterator<Item = &'a SystemDef>,
) -> Result<Vec<PathBuf>> {
    let mut list = Vec::new();
    for def in defs.filter(|d| !d.read_ahead.is_empty()) {
        let loads = prune::loads(userland, &def.read_ahead)
            .with_context(|| format!("{}: read_ahead", def.dir.join("build.toml").display()))?;
        for f in loads.into_iter().flatten() {
            if !list.contains(&f) {
                list.push(f);
            }
        }
    }
    Ok(list)
}

/// The trust store bundle, in the userland.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// `/etc/ssl/certs/ca-certificates.crt` from the certificates
/// ca-certificates unpacks (its maintainer script, update-ca-certificates,
/// never runs here), in a stable order. Nothing when the package is absent.
fn ca_bundle(dest: &Path) -> Result<()> {
    let src = dest.join("usr/share/ca-certificates");
    if !src.is_dir() {
        return Ok(());
    }
    let mut files = Vec::new();
    let mut dirs = vec![src];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "crt") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut bundle = String::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        bundle.push_str(text.trim_end());
        bundle.push('\n');
    }
    let out = dest.join(CA_BUNDLE);
    std::fs::create_dir_all(dest.join("etc/ssl/certs"))?;
    std::fs::write(&out, bundle).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// osctl's bash completion (loaded by login shells through /etc/profile.d) and
/// man pages for the admin environment, generated from osctl's own clap definition.
fn ship_osctl_docs(dest: &Path) -> Result<()> {
    let osctl = ballast_osctl::command();
    let bash = ballast_osctl::docs::completion(&osctl, ballast_osctl::docs::Shell::Bash);
    let completions = dest.join("usr/share/bash-completion/completions");
    std::fs::create_dir_all(&completions)?;
    std::fs::write(completions.join("osctl"), bash)?;
    let profile = dest.join("etc/profile.d");
    std::fs::create_dir_all(&profile)?;
    std::fs::write(
        profile.join("osctl-completion.sh"),
        "[ -n \"$BASH_VERSION\" ] && . /usr/share/bash-completion/completions/osctl\n",
    )?;
    ballast_osctl::docs::write_man_pages(&osctl, &dest.join("usr/share/man/man1"))?;
    Ok(())
}

/// Add `name:x:gid:member` to the userland's `/etc/group` (no maintainer
/// script runs `addgroup`), refusing a gid or name the base files already use.
fn add_engine_group(dest: &Path, name: &str, gid: u32, member: &str) -> Result<()> {
    let path = dest.join("etc/group");
    let mut text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for line in text.lines() {
        let mut fields = line.split(':');
        let (g_name, g_id) = (fields.next(), fields.nth(1));
        if g_name == Some(name) {
            bail!("{}: group {name} is already defined; remove it from system/base/files/etc/group (the builder adds it with gid {gid})", path.display());
        }
        if g_id == Some(&gid.to_string()) {
            bail!(
                "{}: gid {gid} is taken by {line:?}; the engine group needs it",
                path.display()
            );
        }
    }
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    text.push_str(&format!("{name}:x:{gid}:{member}\n"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Copy `from` over `to`, keeping each file's mode, except that sudoers
/// snippets get the 0440 sudo insists on (git does not keep it). Returns the
/// files written (relative).
fn copy_tree(from: &Path, to: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    if !from.is_dir() {
        return Ok(written);
    }
    let mut stack = vec![from.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let rel = path.strip_prefix(from)?;
            let target = to.join(rel);
            if entry.file_type()?.is_dir() {
                std::fs::create_dir_all(&target)?;
                stack.push(path);
            } else {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                if target.symlink_metadata().is_ok() {
                    std::fs::remove_file(&target)?;
                }
                std::fs::copy(&path, &target)
                    .with_context(|| format!("copying {}", path.display()))?;
                let mode = if rel.starts_with("etc/sudoers.d") {
                    0o440
                } else {
                    std::fs::metadata(&path)?.permissions().mode() & 0o7777
                };
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
                written.push(rel.to_path_buf());
            }
        }
    }
    Ok(written)
}

/// Put each container directory (OCI config and service definition) into the
/// root tree.
pub fn install_container_dirs(defs: &[SystemDef], root: &Path) -> Result<()> {
    for def in defs {
        let dir = root.join(CONTAINER_DIRS).join(&def.name);
        std::fs::create_dir_all(&dir)?;
        for file in ["config.json", "manifest.toml"] {
            let from = def.dir.join(file);
            std::fs::copy(&from, dir.join(file))
                .with_context(|| format!("copying {}", from.display()))?;
            std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_group_is_added_once_with_its_member() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let group = dir.path().join("etc/group");
        std::fs::write(&group, "root:x:0:\nballast:x:1000:\n").unwrap();
        add_engine_group(dir.path(), "docker", ENGINE_GID, "ballast").unwrap();
        let text = std::fs::read_to_string(&group).unwrap();
        assert!(text.ends_with("docker:x:990:ballast\n"), "{text}");
        let err = add_engine_group(dir.path(), "docker", ENGINE_GID, "ballast").unwrap_err();
        assert!(err.to_string().contains("already defined"), "{err}");
    }

    #[test]
    fn engine_gid_clash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/group"), "other:x:990:\n").unwrap();
        let err = add_engine_group(dir.path(), "docker", 990, "ballast").unwrap_err();
        assert!(err.to_string().contains("gid 990 is taken"), "{err}");
    }

    #[test]
    fn the_ca_bundle_holds_every_unpacked_certificate_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("usr/share/ca-certificates/mozilla");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("B.crt"), "CERT B\n").unwrap();
        std::fs::write(m.join("A.crt"), "CERT A").unwrap();
        std::fs::write(m.join("README"), "not a cert").unwrap();
        ca_bundle(dir.path()).unwrap();
        let text =
            std::fs::read_to_string(dir.path().join("etc/ssl/certs/ca-certificates.crt")).unwrap();
        assert_eq!(text, "CERT A\nCERT B\n");
    }
}
