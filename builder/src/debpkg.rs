//! A Debian package's files as a build input: fetched through the archive
//! client (signature and hash checked) and unpacked once per package hash
//! into `CACHE/unpacked/<sha256>/`: the tree (`tree/`) and what unpacking
//! recorded (`manifest.json`: every entry with its owner, mode and kind),
//! completed by one atomic rename. A warm build lays the userland out from
//! these copies instead of decompressing every `.deb` again (ADR 0019).

use anyhow::{Context, Result};
use ballast_debarchive::client::{Archive, CachedDeb};
use ballast_debarchive::unpack::{self, Manifest};
use std::path::{Path, PathBuf};

/// The cache's directory of unpacked packages.
const DIR: &str = "unpacked";
const TREE: &str = "tree";
const MANIFEST: &str = "manifest.json";

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
    let dir = cache.join(DIR).join(&package.sha256);
    if dir.join(MANIFEST).is_file() {
        return Ok(dir.join(TREE));
    }
    let fetched = archive
        .fetch(std::slice::from_ref(&package))
        .with_context(|| format!("fetching {package}"))?;
    let deb = fetched
        .first()
        .with_context(|| format!("the archive client returned nothing for {package}"))?;
    Ok(unpacked_deb(deb, cache)?.0)
}

/// The unpacked tree of a fetched package and its manifest, unpacking it into
/// the cache first when it is not there yet.
pub fn unpacked_deb(deb: &CachedDeb, cache: &Path) -> Result<(PathBuf, Manifest)> {
    let dir = cache.join(DIR).join(&deb.package.sha256);
    let manifest_path = dir.join(MANIFEST);
    if let Ok(text) = std::fs::read_to_string(&manifest_path) {
        let manifest = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a manifest of unpacked files; delete {} and build again",
                manifest_path.display(),
                dir.display()
            )
        })?;
        return Ok((dir.join(TREE), manifest));
    }
    let parent = cache.join(DIR);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".tmp-{}-{}",
        deb.package.sha256,
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let manifest = unpack::unpack_deb(&deb.path, &tmp.join(TREE), &|_| true)
        .with_context(|| format!("unpacking {}", deb.path.display()))?;
    let text = serde_json::to_string(&manifest)?;
    std::fs::write(tmp.join(MANIFEST), text)
        .with_context(|| format!("writing {}", tmp.join(MANIFEST).display()))?;
    // An older cache kept the tree directly under the hash: make way.
    if dir.is_dir() && !manifest_path.is_file() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Another build finished the same unpack first: use theirs.
        Err(_) if manifest_path.is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))
        }
    }
    Ok((dir.join(TREE), manifest))
}

/// Unpack a fetched package into `dest` as [`unpack::unpack_deb`] with `keep`
/// would, from its unpacked copy in the cache.
pub fn unpack_into(
    deb: &CachedDeb,
    cache: &Path,
    dest: &Path,
    keep: &dyn Fn(&Path) -> bool,
) -> Result<Manifest> {
    let (tree, full) = unpacked_deb(deb, cache)?;
    Ok(unpack::unpack_from_tree(
        &deb.path, &tree, &full, dest, keep,
    )?)
}
