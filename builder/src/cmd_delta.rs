//! `ballast delta OLD_BUNDLE NEW_BUNDLE -o DELTA [--key SECRET] [--json]`: the
//! update from OLD to NEW as a signed delta (format owned by `ballast-bundle`),
//! for machines that run OLD.

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};

use crate::project::Project;

#[derive(Args, Debug)]
pub struct DeltaArgs {
    /// The bundle the machines run now (the base).
    #[arg(value_name = "OLD_BUNDLE")]
    pub old: PathBuf,
    /// The bundle to update them to.
    #[arg(value_name = "NEW_BUNDLE")]
    pub new: PathBuf,
    /// Where to write the delta.
    #[arg(short = 'o', long = "out", value_name = "DELTA")]
    pub out: PathBuf,
    /// Secret key that signs the delta; both bundles must verify with it.
    /// Default: `BALLAST_SIGNING_KEY`, else the project's `keys/dev.key` (as `ballast build`).
    #[arg(long, value_name = "SECRET", env = "BALLAST_SIGNING_KEY")]
    pub key: Option<PathBuf>,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Made<'a> {
    delta: &'a Path,
    /// Bytes of the delta file.
    size: u64,
    /// Bytes of the new full bundle, for comparison.
    bundle_size: u64,
    from: &'a str,
    to: &'a str,
    /// Per payload: bytes copied from the running slot and bytes carried.
    payloads: Vec<PayloadFigures<'a>>,
}

#[derive(Serialize)]
struct PayloadFigures<'a> {
    name: &'a str,
    copied: u64,
    literal: u64,
    /// Bytes carried as differences to the running slot's (approximate matches).
    added: u64,
}

pub fn run(project: &Project, args: &DeltaArgs) -> Result<()> {
    let signer = crate::build::signing_key(project, args.key.as_deref())?;
    let info =
        ballast_bundle::delta::write(&args.out, &args.old, &args.new, &signer, &[signer.public()])
            .with_context(|| {
                format!(
                    "making the delta {} -> {}",
                    args.old.display(),
                    args.new.display()
                )
            })?;
    let bundle_size = std::fs::metadata(&args.new)
        .with_context(|| format!("reading {}", args.new.display()))?
        .len();
    let made = Made {
        delta: &args.out,
        size: info.size,
        bundle_size,
        from: &info.manifest.base.version,
        to: &info.manifest.target.version,
        payloads: info
            .stats
            .iter()
            .map(|(name, s)| PayloadFigures {
                name,
                copied: s.copied,
                literal: s.literal,
                added: s.added,
            })
            .collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&made)?);
    } else {
        println!(
            "{}: delta {} -> {}, {} bytes ({:.1} % of the full bundle's {} bytes)",
            args.out.display(),
            made.from,
            made.to,
            made.size,
            made.size as f64 * 100.0 / bundle_size.max(1) as f64,
            bundle_size
        );
        for p in &made.payloads {
            println!(
                "  {}: {} bytes copied from the running slot, {} carried as differences to it, {} carried",
                p.name, p.copied, p.added, p.literal
            );
        }
    }
    Ok(())
}
