//! `ballast bench delta --board B`: how small a delta update is, on Ballast's own
//! root images, beside the full bundle and beside `xdelta3` and `zstd
//! --patch-from` on the same pair of root images (the peers, from the same run).
//!
//! Two changes, each a pair of builds of the same image:
//! - one package: the image with one Debian package pinned to an older version
//!   (`[debian] pins`, `--pin`), then with the current one (goal: delta ≤ 10 % of
//!   the full bundle);
//! - a point release: suite `bookworm` alone, then bookworm + updates + security
//!   (goal ≤ 30 %).
//!
//! It also times applying each delta on this host (read the base, write the new
//! root, check its SHA-256), the device's work without the device's I/O.

use anyhow::{bail, Context, Result};
use ballast_bundle::delta::{self, DeltaReader};
use clap::Args;
use serde::Serialize;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::build::BuildResult;
use crate::project::Project;

#[derive(Args, Debug)]
pub struct DeltaBenchArgs {
    /// Board to build for.
    #[arg(long)]
    pub board: String,
    /// The image both builds of each pair start from.
    #[arg(long, value_name = "FILE", default_value = "images/minimal.toml")]
    pub image: PathBuf,
    /// The one-package change: NAME=OLDER_VERSION, a version the image's suites
    /// still offer below the current one.
    #[arg(
        long,
        value_name = "NAME=VERSION",
        default_value = "tzdata=2026b-0+deb12u1"
    )]
    pub pin: String,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Figures {
    board: String,
    changes: Vec<Change>,
}

#[derive(Serialize)]
struct Change {
    name: String,
    /// Goal: delta ≤ this fraction of the full bundle.
    goal: f64,
    bundle_bytes: u64,
    delta_bytes: u64,
    /// delta / bundle.
    ratio: f64,
    /// The peers, on the two root images alone (kernel and initrd not included).
    xdelta3_root_bytes: u64,
    zstd_patch_from_root_bytes: u64,
    ballast_delta_root_bytes: u64,
    /// Host time to apply the delta (read base, write and hash the new files).
    apply_s: f64,
    /// Host time to read the full bundle (decompress and hash every payload).
    full_read_s: f64,
}

fn image_variant(src: &Path, dest: &Path, edit: impl FnOnce(&mut toml::Table)) -> Result<()> {
    let text =
        std::fs::read_to_string(src).with_context(|| format!("reading {}", src.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", src.display()))?;
    edit(&mut table);
    std::fs::write(dest, toml::to_string(&table)?)
        .with_context(|| format!("writing {}", dest.display()))
}

fn debian(table: &mut toml::Table) -> &mut toml::Table {
    let entry = table
        .entry("debian")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    match entry {
        toml::Value::Table(t) => t,
        _ => unreachable!("made a table just above"),
    }
}

pub fn run(project: &Project, args: &DeltaBenchArgs) -> Result<()> {
    let Some((pkg, older)) = args.pin.split_once('=') else {
        bail!("--pin {}: expected NAME=VERSION", args.pin);
    };
    let dir = project.target_dir().join("bench-delta").join(&args.board);
    std::fs::create_dir_all(&dir)?;
    let image = project.root.join(&args.image);
    let pinned = dir.join("pinned.toml");
    image_variant(&image, &pinned, |t| {
        let mut pins = toml::Table::new();
        pins.insert(pkg.to_string(), toml::Value::String(older.to_string()));
        debian(t).insert("pins".into(), toml::Value::Table(pins));
    })?;
    let bookworm = dir.join("bookworm.toml");
    image_variant(&image, &bookworm, |t| {
        debian(t).insert(
            "suites".into(),
            toml::Value::Array(vec![toml::Value::String("bookworm".into())]),
        );
    })?;

    let exe = std::env::current_exe().context("finding the ballast executable")?;
    let build = |name: &str, image: &Path, version: &str| -> Result<BuildResult> {
        let out = dir.join(name);
        eprintln!("bench delta: building {name} ({version})");
        let st = Command::new(&exe)
            .args([
                "build",
                "--board",
                &args.board,
                "--version",
                version,
                "--image",
            ])
            .arg(image)
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .context("running ballast build")?;
        if !st.success() {
            bail!("ballast build {name} failed");
        }
        BuildResult::load(&out)
    };
    let current = build("current", &image, "1.0.1")?;
    let old_pkg = build("pinned", &pinned, "1.0.0")?;
    let old_release = build("bookworm", &bookworm, "1.0.0")?;

    let keys = ballast_bundle::keys::read_dir(&project.root.join("keys"))?;
    let signer = crate::build::signing_key(project, None)?;
    let new_bundle = current.artifact("bundle")?;
    let mut changes = Vec::new();
    for (name, goal, old) in [
        (
            format!("one package ({pkg} {older} -> current)"),
            0.10,
            &old_pkg,
        ),
        (
            "point release (bookworm -> bookworm + updates + security)".to_string(),
            0.30,
            &old_release,
        ),
    ] {
        let tag = if goal < 0.2 { "package" } else { "release" };
        let work = dir.join(tag);
        std::fs::create_dir_all(&work)?;
        let old_bundle = old.artifact("bundle")?;
        let out = work.join("update.delta");
        let info = delta::write(&out, &old_bundle, &new_bundle, &signer, &keys)
            .context("making the delta")?;
        let old_files = unpack(&old_bundle, &keys, &work.join("old"))?;
        let new_files = unpack(&new_bundle, &keys, &work.join("new"))?;
        let xd = work.join("root.xdelta3");
        run_tool(
            Command::new("xdelta3")
                .args(["-e", "-9", "-f", "-s"])
                .arg(&old_files[0])
                .arg(&new_files[0])
                .arg(&xd),
            "xdelta3 (scripts/setup installs it)",
        )?;
        let zp = work.join("root.zst-patch");
        let long = format!(
            "--long={}",
            log2_ceil(std::fs::metadata(&old_files[0])?.len()).max(27)
        );
        run_tool(
            Command::new("zstd")
                .args(["-q", "-f", "-19", &long, "--patch-from"])
                .arg(&old_files[0])
                .arg(&new_files[0])
                .arg("-o")
                .arg(&zp),
            "zstd",
        )?;

        // Apply on this host against the old files, as the device does.
        let start = Instant::now();
        let f = File::open(&out)?;
        let mut r = DeltaReader::open(std::io::BufReader::with_capacity(1 << 20, f), &keys)?;
        let bases: Vec<File> = old_files.iter().map(File::open).collect::<Result<_, _>>()?;
        let mut i = 0;
        while r.next_payload().is_some() {
            r.apply_next(&bases[i], &mut std::io::sink(), &mut |_| {})?;
            i += 1;
        }
        let apply_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        unpack(&new_bundle, &keys, &work.join("check"))?;
        let full_read_s = start.elapsed().as_secs_f64();

        let bundle_bytes = std::fs::metadata(&new_bundle)?.len();
        changes.push(Change {
            name,
            goal,
            bundle_bytes,
            delta_bytes: info.size,
            ratio: info.size as f64 / bundle_bytes as f64,
            xdelta3_root_bytes: std::fs::metadata(&xd)?.len(),
            zstd_patch_from_root_bytes: std::fs::metadata(&zp)?.len(),
            ballast_delta_root_bytes: info.manifest.payloads[0].compressed_size,
            apply_s,
            full_read_s,
        });
    }
    let figures = Figures {
        board: args.board.clone(),
        changes,
    };
    if args.json {
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    for c in &figures.changes {
        println!("{}", c.name);
        println!(
            "  delta {} bytes = {:.1} % of the full bundle ({} bytes); goal <= {:.0} %: {}",
            c.delta_bytes,
            c.ratio * 100.0,
            c.bundle_bytes,
            c.goal * 100.0,
            if c.ratio <= c.goal { "met" } else { "NOT met" }
        );
        println!(
            "  root only: ballast delta {} bytes, xdelta3 -9 {} bytes, zstd -19 --patch-from {} bytes",
            c.ballast_delta_root_bytes, c.xdelta3_root_bytes, c.zstd_patch_from_root_bytes
        );
        println!(
            "  apply on this host {:.2} s, reading the full bundle {:.2} s",
            c.apply_s, c.full_read_s
        );
    }
    Ok(())
}

fn log2_ceil(n: u64) -> u32 {
    64 - n.saturating_sub(1).leading_zeros()
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

/// The payloads of a bundle as files DIR/root, DIR/kernel, DIR/initrd.
fn unpack(bundle: &Path, keys: &[ballast_bundle::PublicKey], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let f = File::open(bundle).with_context(|| format!("opening {}", bundle.display()))?;
    let mut r = ballast_bundle::Reader::open(std::io::BufReader::with_capacity(1 << 20, f), keys)
        .with_context(|| format!("reading {}", bundle.display()))?;
    let mut files = Vec::new();
    for name in ballast_bundle::PayloadName::ALL {
        let path = dir.join(name.as_str());
        let mut out = std::io::BufWriter::new(File::create(&path)?);
        r.copy_next(&mut out, &mut |_| {})?;
        files.push(path);
    }
    Ok(files)
}
