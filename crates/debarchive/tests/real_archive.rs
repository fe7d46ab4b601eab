//! The archive client against the real Debian archive, as a user's build uses
//! it: the mirror from the host's apt sources (or `BALLAST_DEBIAN_MIRROR`),
//! Debian's archive keys embedded in Ballast, bookworm + updates + security.
//!
//! Needs network access to a Debian mirror. The cache is `BALLAST_CACHE` when
//! set (so repeated runs reuse downloads), else a directory under `target/`.

use std::path::PathBuf;
use std::time::Instant;

use ballast_debarchive::client::{Archive, ArchiveConfig, ArchiveError, CachedDeb};
use ballast_debarchive::keyring::Keyring;
use ballast_debarchive::resolve::Request;
use ballast_debarchive::sources::Sources;
use sha2::{Digest, Sha256};

/// The cache `ballast` itself uses by default, so that the end-to-end builds
/// reuse what these tests download.
fn cache_dir() -> PathBuf {
    let from_env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = from_env("BALLAST_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = from_env("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("ballast");
    }
    match from_env("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/ballast"),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ballast-cache"),
    }
}

fn open_suites(arch: &str, suites: Option<&[&str]>) -> Result<Archive, ArchiveError> {
    let sources = Sources::from_env_or_host(None).unwrap();
    let mut config = ArchiveConfig::new(arch, sources, cache_dir(), Keyring::debian().unwrap());
    if let Some(suites) = suites {
        config.suites = suites.iter().map(|s| s.to_string()).collect();
    }
    let start = Instant::now();
    let archive = Archive::open(config)?;
    eprintln!(
        "{arch}: indices fetched, verified and parsed in {:?}",
        start.elapsed()
    );
    Ok(archive)
}

fn open(arch: &str) -> Archive {
    open_suites(arch, None).unwrap()
}

fn resolve_and_fetch(archive: &Archive, package: &str) -> Vec<CachedDeb> {
    let request = Request {
        packages: vec![package.to_string()],
        ..Default::default()
    };
    let resolution = archive.resolve(&request).unwrap();
    let start = Instant::now();
    let debs = archive.fetch(&resolution.packages).unwrap();
    let bytes: u64 = debs.iter().map(|d| d.package.size).sum();
    eprintln!(
        "{package}: {} packages, {bytes} bytes, fetched (or found cached) in {:?}",
        debs.len(),
        start.elapsed()
    );
    for deb in &debs {
        let data = std::fs::read(&deb.path).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            deb.package.sha256,
            "{} at {}",
            deb.package,
            deb.path.display()
        );
        assert_eq!(data.len() as u64, deb.package.size, "{}", deb.package);
    }
    debs
}

#[test]
fn arm64_kernel_resolves_and_fetches_verified() {
    let archive = open("arm64");
    let debs = resolve_and_fetch(&archive, "linux-image-arm64");
    let names: Vec<&str> = debs.iter().map(|d| d.package.name.as_str()).collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("linux-image-6.1.") && n.ends_with("-arm64")),
        "{names:?}"
    );
    assert!(names.contains(&"linux-image-arm64"), "{names:?}");
}

#[test]
fn armhf_openssh_server_resolves_and_fetches_verified() {
    // Seen on 2026-11-25: a mirror mid-sync served a bookworm-security
    // binary-armhf/Packages.xz that did not match its signed InRelease (apt
    // refused it too). The client must refuse such an index, naming it; the
    // rest of the chain is then proved on the suites that are consistent.
    let archive = match open_suites("armhf", None) {
        Ok(archive) => archive,
        Err(err) => {
            let text = err.to_string();
            eprintln!("armhf with bookworm-security refused: {text}");
            assert!(
                text.contains("bookworm-security") && text.contains("binary-armhf/Packages"),
                "an unexpected failure, not an inconsistent security index: {text}"
            );
            open_suites("armhf", Some(&["bookworm", "bookworm-updates"])).unwrap()
        }
    };
    let debs = resolve_and_fetch(&archive, "openssh-server");
    let names: Vec<&str> = debs.iter().map(|d| d.package.name.as_str()).collect();
    for want in ["openssh-server", "libc6", "openssh-client"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(debs
        .iter()
        .all(|d| d.package.architecture == "armhf" || d.package.architecture == "all"));
}
