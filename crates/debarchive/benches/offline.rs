//! The user-facing re-resolve: `ballast build --offline` on a warm cache.
//! Open the archive offline (bookworm + updates + security for amd64:
//! re-verify each InRelease signature and index hash, decompress, parse,
//! merge) and resolve a ~200-package closure, with no network.
//!
//! `cargo bench -p ballast-debarchive --bench offline`
//!
//! The first run warms the cache online (mirror from the host's apt sources
//! or `BALLAST_DEBIAN_MIRROR`) in `target/bench-data/cache` unless
//! `BALLAST_CACHE` names one. Target: ≤ 1 s (median of 5).

use ballast_debarchive::client::{Archive, ArchiveConfig};
use ballast_debarchive::keyring::Keyring;
use ballast_debarchive::resolve::Request;
use ballast_debarchive::sources::Sources;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const REQUEST: [&str; 9] = [
    "openssh-server",
    "systemd",
    "chrony",
    "isc-dhcp-client",
    "docker.io",
    "sudo",
    "iproute2",
    "linux-image-amd64",
    "busybox",
];

type BoxError = Box<dyn std::error::Error>;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench offline: {e}");
        std::process::exit(1);
    }
}

fn config(cache: &Path, offline: bool) -> Result<ArchiveConfig, BoxError> {
    let sources = Sources::from_env_or_host(None)?;
    let mut config = ArchiveConfig::new("amd64", sources, cache.to_path_buf(), Keyring::debian()?);
    config.offline = offline;
    Ok(config)
}

fn run() -> Result<(), BoxError> {
    let cache = match std::env::var_os("BALLAST_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data/cache"),
    };
    if Archive::open(config(&cache, true)?).is_err() {
        eprintln!("warming the cache online in {}", cache.display());
        Archive::open(config(&cache, false)?)?;
    }
    // Essential packages are what a root needs besides the request; adding
    // them gives the ~200-package closure of a real system container set.
    let mut times = Vec::new();
    let mut open_times = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let archive = Archive::open(config(&cache, true)?)?;
        open_times.push(start.elapsed());
        let mut packages: Vec<String> = REQUEST.iter().map(|s| s.to_string()).collect();
        let mut essential: Vec<String> = archive
            .universe()
            .iter()
            .filter(|p| p.essential)
            .map(|p| p.name.clone())
            .collect();
        essential.sort();
        essential.dedup();
        packages.extend(essential);
        let request = Request {
            packages,
            ..Request::default()
        };
        let resolution = archive.resolve(&request)?;
        times.push(start.elapsed());
        size = resolution.packages.len();
    }
    println!(
        "offline open (3 suites, verify + parse): median {:.0} ms",
        ms(median(&mut open_times))
    );
    println!(
        "offline open + resolve of a {size}-package closure: median {:.0} ms (target <= 1000 ms)",
        ms(median(&mut times))
    );
    Ok(())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
