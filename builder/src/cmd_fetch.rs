//! `ballast fetch --arch ARCH [--json] PKG...`: resolve Debian packages for
//! one architecture into their dependency closure, fetch every .deb into the
//! cache (signature- and hash-checked), and print the closure.

use anyhow::{Context, Result};
use ballast_debarchive::resolve::Request;
use ballast_debarchive::version::Version;
use ballast_inputs::Arch;
use clap::Args;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::build::human_size;
use crate::kernel_input::ArchiveArgs;

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Architecture: x86_64|amd64, arm64|aarch64, armv7|armhf.
    #[arg(long, value_parser = parse_arch)]
    pub arch: Arch,
    /// Print the closure as JSON: {"packages": [{name, version, arch, size, sha256, path}]}.
    #[arg(long)]
    pub json: bool,
    /// Archive component (repeatable; default: main).
    #[arg(long = "component", value_name = "NAME")]
    pub components: Vec<String>,
    /// Never install this package (repeatable).
    #[arg(long = "exclude", value_name = "PKG")]
    pub exclude: Vec<String>,
    /// Require this exact version (repeatable, NAME=VERSION).
    #[arg(long = "pin", value_name = "NAME=VERSION")]
    pub pins: Vec<String>,
    /// Resolve and print only; download nothing.
    #[arg(long)]
    pub no_download: bool,
    #[command(flatten)]
    pub archive: ArchiveArgs,
    /// Packages to resolve (`name` or `name=version`).
    #[arg(required = true, value_name = "PKG")]
    pub packages: Vec<String>,
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    Arch::parse(s).ok_or_else(|| {
        format!("unknown architecture {s:?}; use x86_64 (amd64), arm64 (aarch64) or armv7 (armhf)")
    })
}

#[derive(Serialize)]
struct Listed {
    name: String,
    version: String,
    arch: String,
    size: u64,
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
}

pub fn run(args: &FetchArgs) -> Result<()> {
    let archive = args.archive.open(args.arch, &[], &args.components)?;
    let mut pins = BTreeMap::new();
    for pin in &args.pins {
        let (name, version) = pin
            .split_once('=')
            .with_context(|| format!("--pin {pin:?}: expected NAME=VERSION"))?;
        let version = Version::parse(version)
            .with_context(|| format!("--pin {pin:?}: bad Debian version"))?;
        pins.insert(name.to_owned(), version);
    }
    let request = Request {
        packages: args.packages.clone(),
        exclude: args.exclude.iter().cloned().collect::<BTreeSet<_>>(),
        pins,
    };
    let resolution = archive.resolve(&request)?;
    let mut listed: Vec<Listed> = resolution
        .packages
        .iter()
        .map(|p| Listed {
            name: p.name.clone(),
            version: p.version.to_string(),
            arch: p.architecture.clone(),
            size: p.size,
            sha256: p.sha256.clone(),
            path: None,
        })
        .collect();
    if !args.no_download {
        let fetched: BTreeMap<String, PathBuf> = archive
            .fetch(&resolution.packages)?
            .into_iter()
            .map(|deb| (deb.package.sha256, deb.path))
            .collect();
        for entry in &mut listed {
            entry.path = fetched.get(&entry.sha256).cloned();
        }
    }
    if args.json {
        let out = serde_json::json!({ "packages": listed });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let total: u64 = listed.iter().map(|p| p.size).sum();
        for p in &listed {
            println!(
                "{:40} {:32} {:8} {:>10}",
                p.name,
                p.version,
                p.arch,
                human_size(p.size)
            );
        }
        eprintln!(
            "ballast: {} packages, {} for {}",
            listed.len(),
            human_size(total),
            args.arch.debian()
        );
    }
    Ok(())
}
