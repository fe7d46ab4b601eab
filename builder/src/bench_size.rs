//! `ballast bench size --board B`: where the bytes of a build go, all in one
//! run. The figure is the disk image at zstd -19 (what a release publishes);
//! beside it, each part on its own at zstd -19 (kernel, initramfs, slot A's
//! root image) and, inside the root, the largest Debian packages (grouped
//! by the image's own provenance table) and Ballast's binaries, each with
//! its share of the figure, against the goal.
//!
//! A package's share is the zstd -19 size of its shipped files read one
//! after another: close to what it costs inside the squashfs (zstd 19,
//! 1 MiB blocks), not byte-exact.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::bench::zstd19_size;
use crate::build::BuildResult;
use crate::project::Project;
use crate::prune::PROVENANCE;
use crate::userland::USERLAND;

/// The goals, zstd -19 of the disk image.
const GOAL_MINIMAL: u64 = 20_000_000;
const GOAL_ENGINE: u64 = 80_000_000;

#[derive(Args, Debug)]
pub struct SizeBenchArgs {
    /// Board whose build to measure.
    #[arg(long)]
    pub board: String,
    /// Build this image file first (into target/bench-size/BOARD-NAME); without
    /// it (and without --out), the build in out/BOARD is measured.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Measure the build in this directory instead.
    #[arg(long, value_name = "DIR", conflicts_with = "image")]
    pub out: Option<PathBuf>,
    /// How many packages to list by size (the rest are summed).
    #[arg(long, default_value_t = 15)]
    pub top: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
struct Part {
    name: String,
    /// Bytes as shipped (uncompressed files; the artifact's size for parts).
    bytes: u64,
    zstd19_bytes: u64,
}

#[derive(Serialize, Debug)]
struct SizeFigures {
    board: String,
    disk_zstd19_bytes: u64,
    goal_bytes: u64,
    /// kernel, initramfs, root image (slot A), each alone at zstd -19.
    parts: Vec<Part>,
    /// Inside the root: the packages by compressed size, then "other
    /// packages", then Ballast's own files.
    root: Vec<Part>,
    packages: usize,
}

pub fn run(project: &Project, args: &SizeBenchArgs) -> Result<()> {
    let out = match (&args.out, &args.image) {
        (Some(out), _) => out.clone(),
        (None, Some(image)) => build(project, args, image)?,
        (None, None) => project.default_out(&args.board),
    };
    let build = BuildResult::load(&out).with_context(|| {
        format!(
            "no build in {}: run `ballast build --board {}` first, or give --image",
            out.display(),
            args.board
        )
    })?;
    let disk = build.artifact("disk")?;
    let mut parts = Vec::new();
    for (key, name) in [
        ("kernel", "kernel"),
        ("initrd", "initramfs"),
        ("root", "root image (slot A)"),
    ] {
        let path = build.artifact(key)?;
        parts.push(Part {
            name: name.to_owned(),
            bytes: std::fs::metadata(&path)?.len(),
            zstd19_bytes: zstd19_size(&path)?,
        });
    }
    // The root unpacked, beside the other benches' scratch (replaced each run).
    let tree = project
        .target_dir()
        .join("bench-size")
        .join(format!("root-{}", build.board));
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    if let Some(parent) = tree.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    unsquash(&build.artifact("root")?, &tree)?;
    let (root, packages) = root_parts(&tree, args.top)?;
    // An image with a user container engine ships containerd (Docker's too).
    let engine = tree.join(USERLAND).join("usr/bin/containerd").exists();
    let _ = std::fs::remove_dir_all(&tree);
    let figures = SizeFigures {
        board: build.board.clone(),
        disk_zstd19_bytes: zstd19_size(&disk)?,
        goal_bytes: if engine { GOAL_ENGINE } else { GOAL_MINIMAL },
        parts,
        root,
        packages,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        print!("{}", table(&figures));
    }
    Ok(())
}

/// `ballast build --board B --image F` into target/bench-size/.
fn build(project: &Project, args: &SizeBenchArgs, image: &Path) -> Result<PathBuf> {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".to_owned());
    let out = project
        .target_dir()
        .join("bench-size")
        .join(format!("{}-{stem}", args.board));
    let exe = std::env::current_exe().context("finding the ballast executable")?;
    let status = std::process::Command::new(exe)
        .arg("--root")
        .arg(&project.root)
        .args(["build", "--board", &args.board, "--image"])
        .arg(image)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running ballast build")?;
    if !status.success() {
        bail!(
            "ballast build --board {} --image {} failed ({status})",
            args.board,
            image.display()
        );
    }
    Ok(out)
}

/// Unpack the root image (squashfs; the verity tree after it is ignored).
fn unsquash(image: &Path, dest: &Path) -> Result<()> {
    let out = std::process::Command::new("unsquashfs")
        .args(["-no-xattrs", "-quiet", "-no-progress", "-d"])
        .arg(dest)
        .arg(image)
        .output()
        .context("running unsquashfs (Debian package squashfs-tools; scripts/setup installs it)")?;
    if !out.status.success() {
        bail!(
            "unsquashfs {} failed: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Group the root's files: userland files by their package (provenance
/// table), Ballast's binaries by name, everything else of Ballast's as one.
fn root_parts(tree: &Path, top: usize) -> Result<(Vec<Part>, usize)> {
    let userland = tree.join(USERLAND);
    let table_path = userland.join(PROVENANCE);
    let table = std::fs::read_to_string(&table_path)
        .with_context(|| format!("reading {}", table_path.display()))?;
    let mut groups: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for line in table.lines().filter(|l| !l.starts_with('#')) {
        let mut cols = line.split('\t');
        let (Some(path), Some(pkg)) = (cols.next(), cols.next()) else {
            continue;
        };
        let file = userland.join(path.trim_start_matches('/'));
        let group = if pkg == "ballast" {
            ours(&file, "ballast (userland files)")
        } else {
            pkg.to_owned()
        };
        groups.entry(group).or_default().push(file);
    }
    // Outside the userland: Ballast's own tree (sysd, osctl, the container
    // directories, ...).
    for file in files_under(tree)? {
        if file.starts_with(&userland) {
            continue;
        }
        let group = ours(&file, "ballast (other files)");
        groups.entry(group).or_default().push(file);
    }
    let packages = groups.keys().filter(|k| !k.starts_with("ballast")).count();
    let mut measured = Vec::new();
    // squashfs stores identical files once (osctl is both in the root and
    // in the userland): the first group to hold a content pays for it.
    let mut seen = HashSet::new();
    for (name, files) in groups {
        let (bytes, zstd19_bytes) = zstd19_of_files(&files, &mut seen)?;
        measured.push(Part {
            name,
            bytes,
            zstd19_bytes,
        });
    }
    measured.sort_by_key(|p| std::cmp::Reverse(p.zstd19_bytes));
    let (ours, debian): (Vec<Part>, Vec<Part>) = measured
        .into_iter()
        .partition(|p| p.name.starts_with("ballast"));
    let mut out: Vec<Part> = Vec::new();
    let mut rest = Part {
        name: String::new(),
        bytes: 0,
        zstd19_bytes: 0,
    };
    let mut n_rest = 0;
    for (i, p) in debian.into_iter().enumerate() {
        if i < top {
            out.push(p);
        } else {
            rest.bytes += p.bytes;
            rest.zstd19_bytes += p.zstd19_bytes;
            n_rest += 1;
        }
    }
    if n_rest > 0 {
        rest.name = format!("{n_rest} other packages");
        out.push(rest);
    }
    out.extend(ours);
    Ok((out, packages))
}

/// Ballast's binaries by name, wherever they are; its other files as `other`.
fn ours(file: &Path, other: &str) -> String {
    match file.file_name().and_then(|n| n.to_str()) {
        Some("sysd" | "osctl") => "ballast: sysd and osctl (one binary)".to_owned(),
        Some("init") => "ballast: init".to_owned(),
        _ => other.to_owned(),
    }
}

/// Regular files under `dir` (symlinks are not followed nor counted).
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Decimal megabytes, as the goals are written (20 MB is 20,000,000 bytes).
fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

/// Bytes, and zstd -19 bytes of the files read one after another (symlinks
/// and missing entries count nothing; a content already in `seen` neither).
fn zstd19_of_files(files: &[PathBuf], seen: &mut HashSet<(u64, u64)>) -> Result<(u64, u64)> {
    let mut enc = zstd::stream::Encoder::new(Counter(0), 19)?;
    let mut bytes = 0;
    for f in files {
        let Ok(meta) = f.symlink_metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let data = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        data.hash(&mut h);
        if !seen.insert((data.len() as u64, h.finish())) {
            continue;
        }
        enc.write_all(&data)
            .with_context(|| format!("compressing {}", f.display()))?;
        bytes += data.len() as u64;
    }
    enc.flush()?;
    Ok((bytes, enc.finish()?.0))
}

struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn table(f: &SizeFigures) -> String {
    let mut s = format!(
        "{}: disk image at zstd -19: {} (goal <= {}; {})\n",
        f.board,
        mb(f.disk_zstd19_bytes),
        mb(f.goal_bytes),
        if f.disk_zstd19_bytes <= f.goal_bytes {
            "met".to_owned()
        } else {
            format!("{} over", mb(f.disk_zstd19_bytes - f.goal_bytes))
        }
    );
    s.push_str("  part                              shipped     zstd -19   share\n");
    let mut sum = 0;
    for p in &f.parts {
        sum += p.zstd19_bytes;
        s.push_str(&row(p, f.disk_zstd19_bytes));
    }
    s.push_str(&format!(
        "  {:<32} {:>9} {:>11} {:>6.1}%\n",
        "rest (partition tables, slot B, state)",
        "",
        mb(f.disk_zstd19_bytes.saturating_sub(sum)),
        share(f.disk_zstd19_bytes.saturating_sub(sum), f.disk_zstd19_bytes)
    ));
    s.push_str(&format!(
        "  inside the root ({} Debian packages; each alone at zstd -19):\n",
        f.packages
    ));
    for p in &f.root {
        s.push_str(&row(p, f.disk_zstd19_bytes));
    }
    s
}

fn row(p: &Part, whole: u64) -> String {
    format!(
        "  {:<32} {:>9} {:>11} {:>6.1}%\n",
        p.name,
        mb(p.bytes),
        mb(p.zstd19_bytes),
        share(p.zstd19_bytes, whole)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_are_grouped_by_provenance_and_ours_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let u = t.join(USERLAND);
        let write = |p: &Path, text: &str| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write(&u.join("usr/bin/a"), &"a".repeat(5000));
        write(&u.join("usr/lib/liba.so"), &"b".repeat(100));
        write(&u.join("usr/bin/c"), "c");
        write(&u.join("etc/passwd"), "root");
        write(&t.join("usr/sbin/sysd"), "sysd");
        write(&t.join("usr/lib/ballast/system/ssh/config.json"), "{}");
        write(
            &u.join(PROVENANCE),
            "# header\n/usr/bin/a\tpa\t1\n/usr/lib/liba.so\tpa\t1\n/usr/bin/c\tpc\t2\n/etc/passwd\tballast\t0.1\n",
        );
        let (parts, packages) = root_parts(t, 1).unwrap();
        assert_eq!(packages, 2);
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names[0], "pa");
        assert_eq!(names[1], "1 other packages");
        assert!(
            names.contains(&"ballast: sysd and osctl (one binary)"),
            "{names:?}"
        );
        assert!(names.contains(&"ballast (other files)"), "{names:?}");
        assert!(names.contains(&"ballast (userland files)"), "{names:?}");
        assert_eq!(parts[0].bytes, 5100);
        assert!(parts[0].zstd19_bytes < 200, "{}", parts[0].zstd19_bytes);
    }
}
