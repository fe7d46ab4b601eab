//! The bundle manifest: what the bundle is for and what its payloads hash to.
//! Parsing refuses unknown fields and checks every value, naming the field.

use crate::BundleError;
use serde::{Deserialize, Serialize};

/// The manifest format this crate writes and reads.
pub const FORMAT: u32 = 1;
/// The only `os` value.
pub const OS: &str = "ballast";
/// Architectures a bundle may be for.
pub const ARCHES: &[&str] = &["x86_64", "arm64", "armv7"];
/// What a payload is; each appears at most once in a bundle. On the wire (the
/// manifest's `name`) it is the lowercase text of [`PayloadName::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadName {
    /// The slot's root file system image (squashfs + dm-verity tree).
    Root,
    /// The slot's kernel, `vmlinuz` on the boot partition.
    Kernel,
    /// The slot's initramfs, `initrd.img` on the boot partition.
    Initrd,
}

impl PayloadName {
    /// Every payload name, in the order the builder writes them.
    pub const ALL: [PayloadName; 3] = [PayloadName::Root, PayloadName::Kernel, PayloadName::Initrd];

    pub fn as_str(self) -> &'static str {
        match self {
            PayloadName::Root => "root",
            PayloadName::Kernel => "kernel",
            PayloadName::Initrd => "initrd",
        }
    }

    pub fn parse(name: &str) -> Option<PayloadName> {
        PayloadName::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// `root, kernel, initrd`, for messages.
    pub fn list() -> String {
        PayloadName::ALL.map(PayloadName::as_str).join(", ")
    }
}

impl std::fmt::Display for PayloadName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub os: String,
    /// Semver: MAJOR.MINOR.PATCH, optional -pre and +build.
    pub version: String,
    pub arch: String,
    /// Boards this bundle may be installed on; empty = any board of `arch`.
    pub boards: Vec<String>,
    /// Unix seconds.
    pub build_time: u64,
    /// Devices refuse a bundle whose index is below the highest they have installed.
    pub rollback_index: u64,
    pub key_id: String,
    /// Kernel arguments for the slot this bundle is installed into.
    pub cmdline: String,
    pub payloads: Vec<Payload>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// "root" | "kernel" | "initrd"
    pub name: String,
    /// Uncompressed bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the uncompressed bytes.
    pub sha256: String,
    /// Bytes of its zstd frame in the bundle.
    pub compressed_size: u64,
    /// Lower-case hex SHA-256 of the zstd frame as stored: every byte of the bundle
    /// is covered, also those a decoder may skip or not check (frame checksums).
    pub compressed_sha256: String,
}

impl Payload {
    /// What this payload is; `None` only before [`Manifest::check`] refused it.
    pub fn kind(&self) -> Option<PayloadName> {
        PayloadName::parse(&self.name)
    }
}

impl Manifest {
    /// The payload called `name`, if the bundle carries one.
    pub fn payload(&self, name: PayloadName) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.kind() == Some(name))
    }

    /// Parse and check manifest JSON. The reader calls this only after the
    /// signature has been verified; the fuzz target calls it on anything.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, BundleError> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|err| BundleError::Manifest(format!("invalid JSON: {err}")))?;
        manifest.check()?;
        Ok(manifest)
    }

    /// Check every field except the payload list, which a bundle being written
    /// does not have yet.
    pub(crate) fn check_header(&self) -> Result<(), BundleError> {
        let bad = |field: &str, detail: String| {
            Err(BundleError::Manifest(format!("field `{field}`: {detail}")))
        };
        if self.format != FORMAT {
            return bad(
                "format",
                format!(
                    "{} is not a format this program reads ({FORMAT}); update the reading program",
                    self.format
                ),
            );
        }
        if self.os != OS {
            return bad(
                "os",
                format!(
                    "{:?} is not {OS:?}: this bundle is not for Ballast",
                    self.os
                ),
            );
        }
        if semver::Version::parse(&self.version).is_err() {
            return bad(
                "version",
                format!("{:?} is not a semver version (MAJOR.MINOR.PATCH, optional -pre and +build, e.g. 1.4.0 or 2.0.0-rc.1)", self.version),
            );
        }
        if !ARCHES.contains(&self.arch.as_str()) {
            return bad(
                "arch",
                format!("{:?} is not one of {}", self.arch, ARCHES.join(", ")),
            );
        }
        if let Some(board) = self
            .boards
            .iter()
            .find(|b| b.is_empty() || b.contains(char::is_whitespace))
        {
            return bad("boards", format!("{board:?} is not a board name"));
        }
        if self.cmdline.contains(['\n', '\0']) {
            return bad("cmdline", "must be one line without NUL bytes".to_string());
        }
        Ok(())
    }

    pub(crate) fn check(&self) -> Result<(), BundleError> {
        self.check_header()?;
        let is_hex16 = self.key_id.len() == 16
            && self
                .key_id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if !is_hex16 {
            return Err(BundleError::Manifest(format!(
                "field `key_id`: {:?} is not 16 lower-case hex digits",
                self.key_id
            )));
        }
        if self.payloads.is_empty() {
            return Err(BundleError::Manifest(
                "field `payloads`: empty; a bundle carries at least one payload".to_string(),
            ));
        }
        for (i, p) in self.payloads.iter().enumerate() {
            let bad = |field: &str, detail: String| {
                Err(BundleError::Manifest(format!(
                    "field `payloads[{i}].{field}`: {detail}"
                )))
            };
            if p.kind().is_none() {
                return bad(
                    "name",
                    format!("{:?} is not one of {}", p.name, PayloadName::list()),
                );
            }
            if self.payloads[..i].iter().any(|q| q.name == p.name) {
                return bad("name", format!("{:?} appears twice", p.name));
            }
            for (field, value) in [
                ("sha256", &p.sha256),
                ("compressed_sha256", &p.compressed_sha256),
            ] {
                if !is_sha256_hex(value) {
                    return bad(field, format!("{value:?} is not 64 lower-case hex digits"));
                }
            }
            if p.compressed_size == 0 {
                return bad(
                    "compressed_size",
                    "0; a zstd frame is never empty".to_string(),
                );
            }
        }
        Ok(())
    }
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: 1,
            os: "ballast".into(),
            version: "1.2.3".into(),
            arch: "x86_64".into(),
            boards: vec!["pc".into()],
            build_time: 1_700_000_000,
            rollback_index: 1,
            key_id: "0123456789abcdef".into(),
            cmdline: "console=ttyS0".into(),
            payloads: vec![Payload {
                name: "root".into(),
                size: 3,
                sha256: "a".repeat(64),
                compressed_size: 12,
                compressed_sha256: "00".repeat(32),
            }],
        }
    }

    #[test]
    fn roundtrip_and_unknown_field_refused() {
        let m = sample();
        let json = serde_json::to_vec(&m).unwrap();
        assert_eq!(Manifest::from_json(&json).unwrap(), m);
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        value["surprise"] = 1.into();
        let err = Manifest::from_json(value.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("surprise"), "{err}");
    }

    #[test]
    fn each_bad_field_is_named() {
        type Breaker = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("format", Box::new(|m| m.format = 2)),
            ("os", Box::new(|m| m.os = "debian".into())),
            ("version", Box::new(|m| m.version = "1.2".into())),
            ("arch", Box::new(|m| m.arch = "amd64".into())),
            ("key_id", Box::new(|m| m.key_id = "XYZ".into())),
            ("payloads", Box::new(|m| m.payloads.clear())),
            (
                "payloads[0].name",
                Box::new(|m| m.payloads[0].name = "boot".into()),
            ),
            (
                "payloads[0].sha256",
                Box::new(|m| m.payloads[0].sha256 = "00".into()),
            ),
            (
                "payloads[0].compressed_sha256",
                Box::new(|m| m.payloads[0].compressed_sha256 = "A".repeat(64)),
            ),
            (
                "payloads[1].name",
                Box::new(|m| m.payloads.push(m.payloads[0].clone())),
            ),
        ];
        for (field, break_it) in cases {
            let mut m = sample();
            break_it(&mut m);
            let err = Manifest::from_json(&serde_json::to_vec(&m).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{field}`")), "{field}: {err}");
        }
    }
}
