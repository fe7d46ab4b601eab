//! The Debian archive as the builder reads it: `InRelease` (clearsigned;
//! parsed before its signature is checked), `Release`, `Packages` (with the
//! versions and relations in it) and `.deb` files.

use ballast_debarchive::keyring::Keyring;
use ballast_debarchive::packages::parse_packages;
use ballast_debarchive::release::Release;
use ballast_debarchive::unpack::{read_control, unpack_deb};
use ballast_debarchive::{deb822, relation, version};
use std::sync::OnceLock;

fn keyring() -> Option<&'static Keyring> {
    static RING: OnceLock<Option<Keyring>> = OnceLock::new();
    RING.get_or_init(|| Keyring::debian().ok()).as_ref()
}

/// The input as an `InRelease` (signature check, which parses the OpenPGP
/// armour and packets of untrusted bytes) and as the text of a `Release`.
pub fn debian_release(data: &[u8]) {
    if let Some(ring) = keyring() {
        let _ = Release::verified(ring, "InRelease", data, 1_700_000_000, true);
    }
    if let Some(text) = crate::text(data) {
        if let Ok(release) = Release::parse(text) {
            let _ = release.packages_indices("main", "arm64");
            let _ = release.check_fresh("Release", 1_700_000_000);
        }
    }
}

/// A `Packages` index, each paragraph's fields, and its versions and relations.
pub fn debian_packages(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let _ = parse_packages(text);
    for paragraph in deb822::paragraphs(text) {
        let Ok(paragraph) = paragraph else {
            continue;
        };
        if let Some(v) = paragraph.get("Version") {
            if let Ok(v) = version::Version::parse(v) {
                let _ = v.cmp(&v);
            }
        }
        for field in ["Depends", "Pre-Depends", "Provides"] {
            if let Some(value) = paragraph.get(field) {
                let _ = relation::parse_relations(value);
                let _ = relation::parse_relations_for_arch(value, "arm64");
            }
        }
    }
}

/// A `.deb` file: its control file, and its data unpacked three directories
/// down from a fresh one: nothing may appear beside those directories (the
/// unpacker must refuse every path that escapes its destination).
pub fn deb(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let file = dir.path().join("package.deb");
    if std::fs::write(&file, data).is_err() {
        return;
    }
    let _ = read_control(&file);
    let dest = dir.path().join("a/b/root");
    let _ = unpack_deb(&file, &dest, &|_| true);
    for (parent, expected) in [
        (dir.path().to_path_buf(), &["a", "package.deb"][..]),
        (dir.path().join("a"), &["b"][..]),
        (dir.path().join("a/b"), &["root"][..]),
    ] {
        let mut names: Vec<String> = std::fs::read_dir(&parent)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, expected, "unpacking wrote beside its destination");
    }
}
