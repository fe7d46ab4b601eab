//! `ballast publish CHANNEL_DIR BUNDLE --key SECRET [--notes TEXT]
//! [--expires-days N] [--rollout-hours H [--rollout-start TIME]] [--json]`:
//! verify a bundle and add it to a signed channel directory that any static
//! file server can serve.

use anyhow::{bail, Context, Result};
use ballast_bundle::channel::{self, Entry};
use ballast_bundle::{keys, Reader};
use clap::Args;
use serde::Serialize;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The channel directory (created when missing): index.json, index.json.sig, bundles.
    #[arg(value_name = "CHANNEL_DIR")]
    pub channel: PathBuf,
    /// The .bundle file to publish.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// The secret key (PREFIX.key from `ballast keygen`) that signed the bundle and signs the index.
    #[arg(long, value_name = "SECRET")]
    pub key: PathBuf,
    /// Release notes stored in the index entry.
    #[arg(long, value_name = "TEXT")]
    pub notes: Option<String>,
    /// Devices refuse the index this many days after publishing; publish again before then.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub expires_days: u64,
    /// Also make deltas to this version from this many versions before it in
    /// the channel (listed in the signed deltas.json); 0: none.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub deltas: usize,
    /// Spread the release over a wave of H hours (e.g. 24, 0.5): each machine's
    /// update agent installs it from its own place in the wave (a stable hash of
    /// its machine id); `osctl update now` skips the wait.
    #[arg(long, value_name = "H")]
    pub rollout_hours: Option<f64>,
    /// When the wave starts: `now` (the default), Unix seconds, or a UTC time
    /// like 2026-12-24T06:00:00Z. Needs --rollout-hours.
    #[arg(long, value_name = "TIME")]
    pub rollout_start: Option<String>,
    /// Print {"channel", "entry": {...}, "expires", "entries", "deltas"}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Published {
    channel: PathBuf,
    entry: Entry,
    /// Unix seconds.
    expires: u64,
    /// How many entries the index holds now.
    entries: usize,
    /// The deltas the channel lists now.
    deltas: Vec<channel::DeltaEntry>,
}

pub fn run(args: &PublishArgs) -> Result<()> {
    if args.expires_days == 0 {
        bail!("--expires-days 0 would publish an index devices refuse at once; give 1 or more");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rollout =
        crate::rollout::from_flags(args.rollout_start.as_deref(), args.rollout_hours, now)?;
    let signer = keys::read_secret(&args.key)?;
    // The deltas are made before the index naming the release is written.
    let (index, list) = channel::publish_release(
        &args.channel,
        &args.bundle,
        &signer,
        args.notes.as_deref(),
        args.expires_days,
        &[],
        rollout,
        args.deltas,
    )
    .with_context(|| format!("{}: publishing", args.channel.display()))?;
    // The bundle verified during publish; read its header again for the entry's key.
    let file =
        File::open(&args.bundle).with_context(|| format!("opening {}", args.bundle.display()))?;
    let reader = Reader::open(BufReader::new(file), &[signer.public()])
        .with_context(|| format!("reading {}", args.bundle.display()))?;
    let manifest = reader.manifest();
    let entry = index
        .entries
        .iter()
        .find(|e| e.version == manifest.version && e.arch == manifest.arch)
        .cloned()
        .with_context(|| {
            format!(
                "{}: the index has no entry for {} {} after publishing",
                args.channel.display(),
                manifest.version,
                manifest.arch
            )
        })?;
    let deltas = match list {
        Some(list) => {
            for why in &list.skipped {
                eprintln!("ballast: warning: no delta {why}");
            }
            list.deltas
        }
        None => Vec::new(),
    };
    let out = Published {
        channel: args.channel.clone(),
        entry,
        expires: index.expires,
        entries: index.entries.len(),
        deltas,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "published {} ({}) as {}",
            out.entry.version,
            out.entry.arch,
            out.channel.join(&out.entry.file).display()
        );
        if let Some(r) = out.entry.rollout {
            println!(
                "rollout: from unix {} over {} s: each machine installs it at its own place in the wave",
                r.start, r.duration
            );
        }
        println!(
            "index: {} entries, signed by key {}, expires in {} days (unix {}): publish again before then",
            out.entries,
            signer.public().id,
            args.expires_days,
            out.expires
        );
        for d in &out.deltas {
            println!(
                "delta {} -> {} ({}): {} bytes as {}",
                d.from,
                d.to,
                d.arch,
                d.size,
                out.channel.join(&d.file).display()
            );
        }
    }
    Ok(())
}
