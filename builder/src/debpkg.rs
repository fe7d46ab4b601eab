//! A Debian package's files as a build input: fetched through the archive
//! client (signature and hash checked) and unpacked once per package hash
//! into `CACHE/unpacked/<sha256>/`, completed by an atomic rename.

use anyhow::{Context, Result};
use ballast_debarchive::client::Archive;
use ballast_debarchive::unpack;
use std::path::{Path, PathBuf};

/// Unpack `name` (newest version in the archive) and return the tree's root.
pub fn unpacked(archive: &Archive, cache: &Path, name: &str) -> Result<PathBuf> {
    let package = archive
        .universe()
        .get(name)
        .with_context(|| {
            format!(
                "package {name} is not in the Debian archive for {}",
                archive.universe().arch()
            )
        })?
        .clone();
    let dir = cache.join("unpacked").join(&package.sha256);
    if dir.is_dir() {
        return Ok(dir);
    }
    let fetched = archive
        .fetch(std::slice::from_ref(&package))
        .with_context(|| format!("fetching {package}"))?;
    let deb = &fetched
        .first()
        .with_context(|| format!("the archive client returned nothing for {package}"))?
        .path;
    let parent = cache.join("unpacked");
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".tmp-{}-{}", package.sha256, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    unpack::unpack_deb(deb, &tmp, &|_| true)
        .with_context(|| format!("unpacking {}", deb.display()))?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another build finished the same unpack first: use theirs.
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(e).with_context(|| format!("moving {} to {}", tmp.display(), dir.display())),
    }
}
