//! The update channel: a static directory any file, HTTP or HTTPS server can serve.
//!
//! ```text
//! CHANNEL_DIR/index.json          {"format":1,"expires":UNIX,"entries":[Entry...]}
//! CHANNEL_DIR/index.json.sig      one line: ballast-ed25519-sig <key_id> <128 hex digits>
//! CHANNEL_DIR/<version>-<arch>.bundle
//! ```
//!
//! The signature is over the exact bytes of index.json. The index expires so a
//! mirror cannot freeze a fleet on an old index forever. Each entry carries the
//! SHA-256 of its bundle file, and the bundle is signed on its own as well.
//!
//! Deltas to the newest version of each arch from the few before it are listed
//! in a file of their own, signed the same way, so that devices that read only
//! `index.json` (it refuses unknown fields) keep working:
//!
//! ```text
//! CHANNEL_DIR/deltas.json         {"format":1,"expires":UNIX,"deltas":[DeltaEntry...]}
//! CHANNEL_DIR/deltas.json.sig
//! CHANNEL_DIR/<from>-<to>-<arch>.delta
//! ```

use crate::{compare_versions, BundleError, PublicKey, Reader, Signer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

pub const INDEX: &str = "index.json";
pub const INDEX_SIG: &str = "index.json.sig";
pub const DELTAS: &str = "deltas.json";
pub const DELTAS_SIG: &str = "deltas.json.sig";

/// The signed list of deltas in a channel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeltaList {
    pub format: u32,
    /// Unix seconds after which readers refuse the list.
    pub expires: u64,
    pub deltas: Vec<DeltaEntry>,
    /// Pairs no delta could be made for, with the reason (not in the file):
    /// machines on those versions take the full bundle, so publishing goes on.
    #[serde(skip)]
    pub skipped: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeltaEntry {
    /// The version a machine must run for this delta.
    pub from: String,
    pub to: String,
    pub arch: String,
    /// File name relative to the channel directory (or URL).
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

impl DeltaList {
    /// The delta from `from` to `to` for `arch`, if the channel has one.
    pub fn find(&self, from: &str, to: &str, arch: &str) -> Option<&DeltaEntry> {
        self.deltas
            .iter()
            .find(|d| d.from == from && d.to == to && d.arch == arch)
    }
}

/// The delta a machine running `from` takes to `to` on `arch`: from the
/// channel's `deltas.json` and its signature, verified with `trusted`. `None`
/// when the list is missing, refused (bad signature, unknown key, expired,
/// invalid) or lists no such delta: the machine takes the full bundle. The one
/// choice `osctl upgrade --channel` and the update agent both make.
pub fn delta_offered(
    list: Option<(&[u8], &str)>,
    trusted: &[PublicKey],
    now_unix: u64,
    from: &str,
    to: &str,
    arch: &str,
) -> Option<DeltaEntry> {
    let (json, sig) = list?;
    verify_deltas(json, sig, trusted, now_unix)
        .ok()?
        .find(from, to, arch)
        .cloned()
}

/// Verify `deltas.json` against its signature and parse it; refuses an unknown
/// key, a bad signature and an expired list.
pub fn verify_deltas(
    json: &[u8],
    sig_text: &str,
    trusted: &[PublicKey],
    now_unix: u64,
) -> Result<DeltaList, BundleError> {
    check_signature(json, sig_text, trusted, DELTAS, DELTAS_SIG)?;
    let list: DeltaList =
        serde_json::from_slice(json).map_err(|e| index_err(DELTAS, format!("invalid: {e}")))?;
    if list.format != 1 {
        return Err(index_err(
            DELTAS,
            format!(
                "field `format`: {} is not a format this program reads (1)",
                list.format
            ),
        ));
    }
    if list.expires <= now_unix {
        return Err(BundleError::IndexExpired {
            expires: list.expires,
            now: now_unix,
        });
    }
    Ok(list)
}

#[cfg(feature = "write")]
/// Make deltas to the newest version of each arch in the channel from the
/// `keep` versions before it (those already made are kept), and write the
/// signed `deltas.json` listing them; deltas to older versions are dropped from
/// the list. Returns the list.
pub fn publish_deltas(
    dir: &Path,
    signer: &Signer,
    keep: usize,
    expires_in_days: u64,
) -> Result<DeltaList, BundleError> {
    let own = signer.public();
    let index_path = dir.join(INDEX);
    let bytes = fs::read(&index_path).map_err(|e| BundleError::io("reading", &index_path, e))?;
    let sig_path = dir.join(INDEX_SIG);
    let sig = fs::read_to_string(&sig_path)
        .map_err(|e| BundleError::io("reading the index signature", &sig_path, e))?;
    let index = verify_signed(&bytes, &sig, std::slice::from_ref(&own))?;
    write_deltas(dir, &index, signer, keep, expires_in_days)
}

/// The deltas to `index`'s newest release of each arch, and the signed
/// deltas.json listing them.
#[cfg(feature = "write")]
fn write_deltas(
    dir: &Path,
    index: &Index,
    signer: &Signer,
    keep: usize,
    expires_in_days: u64,
) -> Result<DeltaList, BundleError> {
    let own = signer.public();
    let mut arches: Vec<&str> = index.entries.iter().map(|e| e.arch.as_str()).collect();
    arches.sort_unstable();
    arches.dedup();
    let mut deltas = Vec::new();
    let mut skipped = Vec::new();
    for arch in arches {
        let mut entries: Vec<&Entry> = index.entries.iter().filter(|e| e.arch == arch).collect();
        entries.sort_by(|a, b| {
            compare_versions(&b.version, &a.version).unwrap_or(std::cmp::Ordering::Equal)
        });
        let Some((newest, older)) = entries.split_first() else {
            continue;
        };
        for old in older.iter().take(keep) {
            let file = format!("{}-{}-{arch}.delta", old.version, newest.version);
            let path = dir.join(&file);
            if !path.exists() {
                // A pair without a delta only costs its machines the full
                // bundle; the release itself must still be published.
                if let Err(e) = crate::delta::write(
                    &path,
                    &dir.join(&old.file),
                    &dir.join(&newest.file),
                    signer,
                    std::slice::from_ref(&own),
                ) {
                    skipped.push(format!(
                        "{} -> {} ({arch}): {e}",
                        old.version, newest.version
                    ));
                    continue;
                }
            }
            let (sha256, size) = hash_file(&path)?;
            deltas.push(DeltaEntry {
                from: old.version.clone(),
                to: newest.version.clone(),
                arch: arch.to_string(),
                file,
                size,
                sha256,
            });
        }
    }
    let list = DeltaList {
        format: 1,
        expires: now_unix().saturating_add(expires_in_days.saturating_mul(86_400)),
        deltas,
        skipped,
    };
    let mut json = serde_json::to_vec_pretty(&list)
        .map_err(|e| index_err(DELTAS, format!("serialising: {e}")))?;
    json.push(b'\n');
    let sig_line = format!("{SIG_TAG} {} {}\n", own.id, hex::encode(signer.sign(&json)));
    write_atomic(&dir.join(DELTAS_SIG), sig_line.as_bytes())?;
    write_atomic(&dir.join(DELTAS), &json)?;
    Ok(list)
}

#[cfg(feature = "write")]
fn hash_file(path: &Path) -> Result<(String, u64), BundleError> {
    let file = File::open(path).map_err(|e| BundleError::io("reading", path, e))?;
    let mut r = HashingReader {
        inner: file,
        hasher: Sha256::new(),
        bytes: 0,
    };
    io::copy(&mut r, &mut io::sink()).map_err(|e| BundleError::io("reading", path, e))?;
    Ok((hex::encode(r.hasher.finalize()), r.bytes))
}
const SIG_TAG: &str = "ballast-ed25519-sig";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub format: u32,
    /// Unix seconds after which readers refuse the index.
    pub expires: u64,
    pub entries: Vec<Entry>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub version: String,
    pub arch: String,
    pub boards: Vec<String>,
    /// File name relative to the channel directory (or URL).
    pub file: String,
    /// Bytes of the bundle file.
    pub size: u64,
    /// Hex SHA-256 of the bundle file.
    pub sha256: String,
    pub notes: Option<String>,
    /// Unix seconds.
    pub published: u64,
    /// Spread the release over a wave: each machine installs it from its own
    /// place in `[start, start + duration)`. Absent: every machine at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// A release's wave: from `start` (Unix seconds) over `duration` seconds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub start: u64,
    pub duration: u64,
}

impl Index {
    /// The newest entry for this arch whose boards include `board` (or are empty).
    pub fn latest(&self, arch: &str, board: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|e| {
                e.arch == arch && (e.boards.is_empty() || e.boards.iter().any(|b| b == board))
            })
            .filter(|e| compare_versions(&e.version, &e.version).is_some())
            .max_by(|a, b| {
                compare_versions(&a.version, &b.version).unwrap_or(std::cmp::Ordering::Equal)
            })
    }
}

fn index_err(what: &str, detail: impl Into<String>) -> BundleError {
    BundleError::Index {
        what: what.to_string(),
        detail: detail.into(),
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verify `index.json`'s bytes against its signature file and parse it;
/// refuses an unknown key, a bad signature and an expired index.
pub fn verify_index(
    index_json: &[u8],
    sig_text: &str,
    trusted: &[PublicKey],
    now_unix: u64,
) -> Result<Index, BundleError> {
    let index = verify_signed(index_json, sig_text, trusted)?;
    if index.expires <= now_unix {
        return Err(BundleError::IndexExpired {
            expires: index.expires,
            now: now_unix,
        });
    }
    Ok(index)
}

fn verify_signed(
    index_json: &[u8],
    sig_text: &str,
    trusted: &[PublicKey],
) -> Result<Index, BundleError> {
    check_signature(index_json, sig_text, trusted, INDEX, INDEX_SIG)?;
    // (signature checked above)
    let index: Index = serde_json::from_slice(index_json)
        .map_err(|e| index_err(INDEX, format!("invalid: {e}")))?;
    if index.format != 1 {
        return Err(index_err(
            INDEX,
            format!(
                "field `format`: {} is not a format this program reads (1); update it",
                index.format
            ),
        ));
    }
    Ok(index)
}

/// `sig_text` (one line, `ballast-ed25519-sig KEY_ID HEX`) is a trusted key's
/// signature over `json`.
fn check_signature(
    json: &[u8],
    sig_text: &str,
    trusted: &[PublicKey],
    what: &str,
    sig_what: &str,
) -> Result<(), BundleError> {
    let words: Vec<&str> = sig_text.split_whitespace().collect();
    let (key_id, sig_hex) = match words.as_slice() {
        [SIG_TAG, key_id, sig] => (*key_id, *sig),
        _ => {
            return Err(index_err(
                sig_what,
                format!("expected one line `{SIG_TAG} <key id> <128 hex digits>`; the channel is damaged (publish again)"),
            ))
        }
    };
    let signature: [u8; 64] = hex::decode(sig_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            index_err(
                sig_what,
                "the signature is not 128 hex digits; the channel is damaged (publish again)",
            )
        })?;
    let key = trusted
        .iter()
        .find(|k| k.id == key_id)
        .ok_or_else(|| BundleError::UnknownKey {
            key_id: key_id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(32)
                .collect(),
        })?;
    if !key.verify(json, &signature) {
        return Err(index_err(what, BundleError::BadSignature.to_string()));
    }
    Ok(())
}

/// Publish with only the signer's own key trusted for the bundle.
pub fn publish(
    dir: &Path,
    bundle: &Path,
    signer: &Signer,
    notes: Option<&str>,
    expires_in_days: u64,
) -> Result<Index, BundleError> {
    publish_with(dir, bundle, signer, notes, expires_in_days, &[])
}

/// Copy `bundle` into the channel as `<version>-<arch>.bundle` after checking its
/// signature (signer's key or one of `extra_trusted`) and every payload hash,
/// add or replace its (version, arch) entry, re-sign the index. Each file is
/// replaced atomically; the index last, so readers never see an entry whose
/// bundle is missing.
pub fn publish_with(
    dir: &Path,
    bundle: &Path,
    signer: &Signer,
    notes: Option<&str>,
    expires_in_days: u64,
    extra_trusted: &[PublicKey],
) -> Result<Index, BundleError> {
    publish_release(
        dir,
        bundle,
        signer,
        notes,
        expires_in_days,
        extra_trusted,
        None,
        0,
    )
    .map(|(index, _)| index)
}

/// [`publish_with`], the entry spread over a wave (`rollout`; `None`: every
/// machine at once), and with `deltas` > 0 the deltas from that many older
/// releases to the newest, made and listed (deltas.json) *before* the index
/// that names the new release is written: an agent that sees the release in
/// the index finds its delta too, instead of taking the whole bundle while
/// the deltas are still being made.
#[allow(clippy::too_many_arguments)]
pub fn publish_release(
    dir: &Path,
    bundle: &Path,
    signer: &Signer,
    notes: Option<&str>,
    expires_in_days: u64,
    extra_trusted: &[PublicKey],
    rollout: Option<Rollout>,
    deltas: usize,
) -> Result<(Index, Option<DeltaList>), BundleError> {
    let own = signer.public();
    let mut trusted = vec![own.clone()];
    trusted.extend_from_slice(extra_trusted);
    fs::create_dir_all(dir).map_err(|e| BundleError::io("creating channel directory", dir, e))?;

    let index_path = dir.join(INDEX);
    let sig_path = dir.join(INDEX_SIG);
    let mut index = match fs::read(&index_path) {
        Ok(bytes) => {
            let sig = fs::read_to_string(&sig_path)
                .map_err(|e| BundleError::io("reading the index signature", &sig_path, e))?;
            // An expired index is fine to extend; one signed by another key is
            // someone else's channel.
            verify_signed(&bytes, &sig, std::slice::from_ref(&own)).map_err(|e| {
                index_err(
                    &index_path.display().to_string(),
                    format!("{e}; the existing channel index is not signed by this key ({}): publish with the channel's key, or into a new directory", own.id),
                )
            })?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Index {
            format: 1,
            expires: 0,
            entries: Vec::new(),
        },
        Err(e) => return Err(BundleError::io("reading", &index_path, e)),
    };

    // Check the bundle: signature, manifest, every payload.
    let bundle_err = |e: BundleError| index_err(&bundle.display().to_string(), e.to_string());
    let file = File::open(bundle).map_err(|e| BundleError::io("opening bundle", bundle, e))?;
    let mut hashing = HashingReader {
        inner: io::BufReader::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut reader = Reader::open(&mut hashing, &trusted).map_err(bundle_err)?;
    let manifest = reader.manifest().clone();
    while reader
        .copy_next(&mut io::sink(), &mut |_| {})
        .map_err(bundle_err)?
        .is_some()
    {}
    drop(reader);
    let sha256 = hex::encode(hashing.hasher.finalize_reset());
    let size = hashing.bytes;

    let file_name = format!("{}-{}.bundle", manifest.version, manifest.arch);
    let dest = dir.join(&file_name);
    copy_atomic(bundle, &dest, &sha256)?;

    let now = now_unix();
    index
        .entries
        .retain(|e| !(e.version == manifest.version && e.arch == manifest.arch));
    index.entries.push(Entry {
        version: manifest.version.clone(),
        arch: manifest.arch.clone(),
        boards: manifest.boards.clone(),
        file: file_name,
        size,
        sha256,
        notes: notes.map(str::to_string),
        published: now,
        rollout,
    });
    index.entries.sort_by(|a, b| {
        a.arch.cmp(&b.arch).then_with(|| {
            compare_versions(&a.version, &b.version).unwrap_or(std::cmp::Ordering::Equal)
        })
    });
    index.expires = now.saturating_add(expires_in_days.saturating_mul(86_400));

    let mut json = serde_json::to_vec_pretty(&index)
        .map_err(|e| index_err(INDEX, format!("serialising: {e}")))?;
    json.push(b'\n');
    let sig_line = format!("{SIG_TAG} {} {}\n", own.id, hex::encode(signer.sign(&json)));
    #[cfg(feature = "write")]
    let list = if deltas > 0 {
        Some(write_deltas(dir, &index, signer, deltas, expires_in_days)?)
    } else {
        None
    };
    // Without the delta writer (the device's build) there are no deltas to make.
    #[cfg(not(feature = "write"))]
    let list = {
        let _ = deltas;
        None
    };
    // The signature first: a reader between the two renames sees a new
    // signature over the old index and refuses it, then succeeds on retry.
    write_atomic(&sig_path, sig_line.as_bytes())?;
    write_atomic(&index_path, &json)?;
    Ok((index, list))
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    Ok(ballast_device::write_atomic(path, bytes)?)
}

/// Copy `src` to `dest` atomically, checking the copy hashes to `sha256`
/// (the bytes that were verified), so a file changed meanwhile is not published.
fn copy_atomic(src: &Path, dest: &Path, sha256: &str) -> Result<(), BundleError> {
    if fs::canonicalize(src).ok() == fs::canonicalize(dest).ok() && dest.exists() {
        return Ok(()); // publishing the channel's own file again
    }
    ballast_device::atomic::replace_with(dest, |tmp, out| {
        let file = File::open(src).map_err(|e| BundleError::io("opening bundle", src, e))?;
        let mut reader = HashingReader {
            inner: file,
            hasher: Sha256::new(),
            bytes: 0,
        };
        io::copy(&mut reader, out).map_err(|e| BundleError::io("copying the bundle to", tmp, e))?;
        if hex::encode(reader.hasher.finalize()) != sha256 {
            return Err(index_err(
                &src.display().to_string(),
                "changed while it was being published; publish it again once it is complete",
            ));
        }
        Ok(())
    })
}
