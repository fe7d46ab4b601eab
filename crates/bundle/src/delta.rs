//! Delta updates: the new root image as copies from the running slot's root
//! image plus the bytes that are new, signed like a bundle. This module owns the
//! delta format, the diff (builder) and the apply (device).
//!
//! What it must never do: write a byte for the caller before the delta's
//! signature has verified, read the base anywhere but through the caller's
//! read-only file, or let a result through whose size and SHA-256 are not the
//! signed ones of the new root.
//!
//! # Delta format (version 1)
//!
//! ```text
//! offset    size      what
//! 0         16        magic b"BALLAST-DELTA01\n"
//! 16        4         manifest length N, u32 big-endian, 1..=1 MiB
//! 20        N         manifest: UTF-8 JSON, see [`DeltaManifest`] (unknown fields refused)
//! 20+N      64        ed25519 signature over bytes [0, 20+N), same keys as bundles
//! 84+N      ...       payloads `root`, `kernel`, `initrd`, each one zstd frame of
//!                     exactly `compressed_size` bytes, as in a bundle
//! ```
//!
//! The manifest names the base (version, root image size, SHA-256 and dm-verity
//! argument) and carries the new bundle's manifest (`target`: version, command
//! line with the new `ballast.verity=`, rollback index, and the size and SHA-256
//! of the new root, kernel and initrd).
//!
//! Each payload decompresses to instructions that make the new file of its kind
//! from the running slot's file of the same kind (root image, kernel, initrd):
//! a kernel that did not change is one copy, a changed one is all literals (a
//! whole kernel). Each instruction is a tag byte and LEB128 numbers:
//!
//! ```text
//! 0x01 OFFSET LEN     copy LEN bytes of the base root image from OFFSET
//! 0x02 LEN BYTES...   LEN literal bytes
//! 0x03 OFFSET LEN BYTES...  LEN bytes, each the base's byte at OFFSET+i plus
//!                     BYTES[i] (wrapping): an approximate match, as bsdiff
//!                     carries it (mostly zeros, which zstd packs tightly)
//! ```
//!
//! Applying them writes the new file front to back; its size and SHA-256 must
//! be the target's payload's of that name, or the delta is refused.
//!
//! # Why copies from the raw image
//!
//! Squashfs compresses each file's blocks on their own, so the compressed bytes
//! of every unchanged file are the same in both images, only at other offsets.
//! Copies of those runs are what makes a one-package delta small (figures in
//! `docs/adr/0005-delta-updates.md`). Applying needs no decompressor window over
//! the base: the device reads the base by offset, so RAM use is a few MiB
//! whatever the image size.

use crate::bundle::read_signed_header;
use crate::manifest::is_sha256_hex;
use crate::{BundleError, Manifest, Payload, PayloadName, PublicKey, Reader};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

pub const DELTA_MAGIC: &[u8; 16] = b"BALLAST-DELTA01\n";
/// The delta manifest format this crate writes and reads.
pub const DELTA_FORMAT: u32 = 1;
const OP_COPY: u8 = 1;
/// How often (in result bytes) applying reports progress.
const PROGRESS_EVERY: u64 = 8 << 20;
const OP_DATA: u8 = 2;
const OP_ADD: u8 = 3;
/// The kernel argument whose value names a root image and its hash tree.
const VERITY_KEY: &str = "ballast.verity=";

/// Whether `head` (the first bytes of a file) starts like a delta; used to
/// tell a delta from a bundle by content, never by name.
pub fn is_delta(head: &[u8]) -> bool {
    head.starts_with(DELTA_MAGIC)
}

/// The running root image a delta applies to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Base {
    pub version: String,
    /// Bytes of the base root image (squashfs and hash tree).
    pub root_size: u64,
    /// Lower-case hex SHA-256 of the base root image.
    pub root_sha256: String,
    /// The base's `ballast.verity=` value: its root hash and tree geometry, as
    /// the running machine was booted with it.
    pub verity: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeltaManifest {
    pub format: u32,
    /// The key that signed this delta (first 16 hex of the SHA-256 of the public key).
    pub key_id: String,
    pub base: Base,
    /// The manifest of the bundle this delta produces: what is installed.
    pub target: Manifest,
    /// The delta's own payloads, in order: `root` (instructions), `kernel`, `initrd`.
    pub payloads: Vec<Payload>,
}

fn delta_err(detail: impl Into<String>) -> BundleError {
    BundleError::Delta(detail.into())
}

/// The `ballast.verity=` value of a command line.
pub fn verity_of(cmdline: &str) -> Option<&str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(VERITY_KEY))
}

impl DeltaManifest {
    /// Parse and check; called only after the signature has verified.
    pub fn from_json(bytes: &[u8]) -> Result<DeltaManifest, BundleError> {
        let m: DeltaManifest = serde_json::from_slice(bytes)
            .map_err(|e| delta_err(format!("manifest: invalid JSON: {e}")))?;
        m.check()?;
        Ok(m)
    }

    /// The new root's `ballast.verity=` value.
    pub fn result_verity(&self) -> Option<&str> {
        verity_of(&self.target.cmdline)
    }

    fn check(&self) -> Result<(), BundleError> {
        let bad = |field: &str, detail: String| {
            Err(delta_err(format!("manifest field `{field}`: {detail}")))
        };
        if self.format != DELTA_FORMAT {
            return bad(
                "format",
                format!(
                    "{} is not a delta format this program reads ({DELTA_FORMAT}); update it, or use the full bundle",
                    self.format
                ),
            );
        }
        if semver::Version::parse(&self.base.version).is_err() {
            return bad(
                "base.version",
                format!("{:?} is not a semver version", self.base.version),
            );
        }
        if !is_sha256_hex(&self.base.root_sha256) {
            return bad(
                "base.root_sha256",
                format!(
                    "{:?} is not 64 lower-case hex digits",
                    self.base.root_sha256
                ),
            );
        }
        if self.base.verity.is_empty() || self.base.verity.contains(char::is_whitespace) {
            return bad(
                "base.verity",
                format!("{:?} is not a ballast.verity= value", self.base.verity),
            );
        }
        self.target
            .check()
            .map_err(|e| delta_err(format!("manifest field `target`: {e}")))?;
        if self.result_verity().is_none() {
            return bad(
                "target.cmdline",
                "has no ballast.verity=: the new root could not be checked".to_string(),
            );
        }
        let names: Vec<&str> = self.payloads.iter().map(|p| p.name.as_str()).collect();
        if names != ["root", "kernel", "initrd"] {
            return bad(
                "payloads",
                format!("{names:?}; a delta carries root, kernel, initrd in that order"),
            );
        }
        for (i, p) in self.payloads.iter().enumerate() {
            if !is_sha256_hex(&p.sha256) || !is_sha256_hex(&p.compressed_sha256) {
                return bad(
                    &format!("payloads[{i}]"),
                    "a hash is not 64 lower-case hex digits".to_string(),
                );
            }
            if p.compressed_size == 0 {
                return bad(
                    &format!("payloads[{i}].compressed_size"),
                    "0; a zstd frame is never empty".to_string(),
                );
            }
        }
        for name in PayloadName::ALL {
            if self.target.payload(name).is_none() {
                return bad(
                    "target.payloads",
                    format!("no `{name}`: a delta installs root, kernel and initrd"),
                );
            }
        }
        Ok(())
    }
}

/// Streams a delta: signature and manifest on `open`, then the root (applied
/// against the base) and the kernel and initrd.
pub struct DeltaReader<R: Read> {
    inner: Reader<R>,
    manifest: DeltaManifest,
}

impl<R: Read> DeltaReader<R> {
    /// Reads magic, manifest and signature and verifies the signature against
    /// `trusted` before parsing the manifest.
    pub fn open(mut input: R, trusted: &[PublicKey]) -> Result<DeltaReader<R>, BundleError> {
        let (json, key_id) =
            read_signed_header(&mut input, DELTA_MAGIC, trusted).map_err(|e| match e {
                BundleError::BadMagic => delta_err(
                    "not a Ballast delta: the first 16 bytes are not \"BALLAST-DELTA01\\n\" (is it the file `ballast delta` wrote?)",
                ),
                other => other,
            })?;
        let manifest = DeltaManifest::from_json(&json)?;
        if manifest.key_id != key_id {
            return Err(delta_err(format!(
                "manifest field `key_id`: says {} but the delta was signed by key {key_id}; make it again with `ballast delta`",
                manifest.key_id
            )));
        }
        // The payload streaming is the bundle reader's; it reads only the
        // payload list of the manifest it is given.
        let mut frames = manifest.target.clone();
        frames.payloads = manifest.payloads.clone();
        Ok(DeltaReader {
            inner: Reader::verified(input, frames),
            manifest,
        })
    }

    pub fn manifest(&self) -> &DeltaManifest {
        &self.manifest
    }

    /// Refuse a delta made for another root than the running one: `verity` is
    /// the running root's `ballast.verity=` value (from the booted command line).
    pub fn check_base(&self, version: &str, verity: Option<&str>) -> Result<(), BundleError> {
        let base = &self.manifest.base;
        if verity == Some(base.verity.as_str()) {
            return Ok(());
        }
        let root = |v: Option<&str>| {
            v.and_then(|v| v.split(':').next())
                .map(|h| h.chars().take(16).collect::<String>())
                .unwrap_or_else(|| "unknown".to_string())
        };
        Err(BundleError::DeltaBase {
            detail: format!(
                "this delta updates version {} (root hash {}...) but this machine runs {version} (root hash {}...): use a delta from {version}, or the full bundle of {}",
                base.version,
                root(Some(&base.verity)),
                root(verity),
                self.manifest.target.version
            ),
        })
    }

    /// Apply the next payload's instructions (root, kernel, then initrd): read
    /// the running slot's file of that kind from `base` (only read, by offset),
    /// write the new file to `out`, hashing it. Fails unless the result has
    /// exactly the target's size and SHA-256 for that payload. `None` after the
    /// last one (and the delta must end there).
    pub fn apply_next(
        &mut self,
        base: &File,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<PayloadName>, BundleError> {
        let Some(name) = self.next_payload() else {
            return self
                .inner
                .copy_next(&mut io::sink(), &mut |_| {})
                .map(|_| None);
        };
        let target = self
            .manifest
            .target
            .payload(name)
            .cloned()
            .ok_or_else(|| delta_err(format!("the target has no {name}")))?;
        let base_size = if name == PayloadName::Root {
            self.manifest.base.root_size
        } else {
            base.metadata()
                .map_err(|e| delta_err(format!("reading the running {name}'s size: {e}")))?
                .len()
        };
        let mut apply = Apply::new(base, base_size, name, target.size, out, progress);
        let streamed = self.inner.copy_next(&mut apply, &mut |_| {});
        if let Some(e) = apply.error.take() {
            return Err(e);
        }
        match streamed {
            Ok(Some(_)) => {}
            Ok(None) => return Err(delta_err(format!("it has no {name} payload"))),
            Err(e) => return Err(e),
        }
        apply.finish(&target)?;
        Ok(Some(name))
    }

    /// The payload `apply_next` reads next.
    pub fn next_payload(&self) -> Option<PayloadName> {
        self.inner.next_payload()
    }
}

/// A `Write` that takes the decompressed instructions and writes the result.
struct Apply<'a> {
    base: &'a File,
    base_size: u64,
    name: PayloadName,
    limit: u64,
    out: &'a mut dyn Write,
    progress: &'a mut dyn FnMut(u64),
    next_report: u64,
    hasher: Sha256,
    written: u64,
    /// Bytes of an instruction header not complete yet.
    head: Vec<u8>,
    /// Literal bytes still to come for the current DATA or ADD instruction.
    data_left: u64,
    /// For ADD: the base offset the next byte adds to.
    add_at: Option<u64>,
    add_buf: Vec<u8>,
    buf: Vec<u8>,
    /// The first error, with its own message (the `Write` error only stops the stream).
    error: Option<BundleError>,
}

/// LEB128, from `bytes`: `None` when more bytes are needed.
fn varint(bytes: &[u8]) -> Result<Option<(u64, usize)>, String> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        if i >= 10 {
            return Err("a number longer than 10 bytes".to_string());
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    Ok(None)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

enum Op {
    Copy { offset: u64, len: u64 },
    Data { len: u64 },
    Add { offset: u64, len: u64 },
}

/// One complete instruction header from `head`, and its length.
fn parse_op(head: &[u8]) -> Result<Option<(Op, usize)>, String> {
    let Some((&tag, rest)) = head.split_first() else {
        return Ok(None);
    };
    match tag {
        OP_COPY => {
            let Some((offset, a)) = varint(rest)? else {
                return Ok(None);
            };
            let Some((len, b)) = varint(&rest[a..])? else {
                return Ok(None);
            };
            Ok(Some((Op::Copy { offset, len }, 1 + a + b)))
        }
        OP_ADD => {
            let Some((offset, a)) = varint(rest)? else {
                return Ok(None);
            };
            let Some((len, b)) = varint(&rest[a..])? else {
                return Ok(None);
            };
            Ok(Some((Op::Add { offset, len }, 1 + a + b)))
        }
        OP_DATA => Ok(varint(rest)?.map(|(len, a)| (Op::Data { len }, 1 + a))),
        other => Err(format!("unknown instruction {other:#04x}")),
    }
}

impl<'a> Apply<'a> {
    fn new(
        base: &'a File,
        base_size: u64,
        name: PayloadName,
        limit: u64,
        out: &'a mut dyn Write,
        progress: &'a mut dyn FnMut(u64),
    ) -> Apply<'a> {
        Apply {
            base,
            base_size,
            name,
            limit,
            out,
            progress,
            next_report: PROGRESS_EVERY,
            hasher: Sha256::new(),
            written: 0,
            head: Vec::new(),
            data_left: 0,
            add_at: None,
            add_buf: Vec::new(),
            buf: Vec::new(),
            error: None,
        }
    }

    fn fail(&mut self, e: BundleError) -> io::Error {
        let msg = e.to_string();
        self.error.get_or_insert(e);
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), BundleError> {
        if self.written + bytes.len() as u64 > self.limit {
            return Err(BundleError::DeltaResult {
                detail: format!(
                    "{}: it makes more than the {} bytes of the signed new one",
                    self.name, self.limit
                ),
            });
        }
        self.out
            .write_all(bytes)
            .map_err(|source| BundleError::Output {
                name: self.name.to_string(),
                source,
            })?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        if self.written >= self.next_report {
            (self.progress)(self.written);
            self.next_report = self.written + PROGRESS_EVERY;
        }
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), BundleError> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.base_size)
        {
            return Err(delta_err(format!(
                "its {} instructions read bytes {offset}..+{len}, beyond the running {}'s {} bytes",
                self.name, self.name, self.base_size
            )));
        }
        Ok(())
    }

    fn copy(&mut self, offset: u64, len: u64) -> Result<(), BundleError> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.base_size)
        {
            return Err(delta_err(format!(
                "its {} instructions copy bytes {offset}..+{len}, beyond the running {}'s {} bytes",
                self.name, self.name, self.base_size
            )));
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(crate::bundle::CHUNK, 0);
        let (mut at, mut left) = (offset, len);
        let result = (|| {
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                self.base.read_exact_at(&mut buf[..n], at).map_err(|e| {
                    delta_err(format!(
                        "reading the running {} at byte {at}: {e}",
                        self.name
                    ))
                })?;
                self.emit(&buf[..n])?;
                at += n as u64;
                left -= n as u64;
            }
            Ok(())
        })();
        self.buf = buf;
        result
    }

    fn take(&mut self, mut data: &[u8]) -> Result<(), BundleError> {
        while !data.is_empty() {
            if self.data_left > 0 {
                let n = (self.data_left.min(data.len() as u64)) as usize;
                if let Some(at) = self.add_at {
                    let mut sum = std::mem::take(&mut self.add_buf);
                    sum.resize(n, 0);
                    let read = self.base.read_exact_at(&mut sum, at).map_err(|e| {
                        delta_err(format!(
                            "reading the running {} at byte {at}: {e}",
                            self.name
                        ))
                    });
                    let result = read.and_then(|()| {
                        for (b, d) in sum.iter_mut().zip(&data[..n]) {
                            *b = b.wrapping_add(*d);
                        }
                        self.emit(&sum)
                    });
                    self.add_buf = sum;
                    result?;
                    self.add_at = Some(at + n as u64);
                } else {
                    self.emit(&data[..n])?;
                }
                self.data_left -= n as u64;
                data = &data[n..];
                continue;
            }
            // Collect a header; at most 21 bytes (tag and two 10-byte numbers).
            let want = (21 - self.head.len()).min(data.len());
            let old = self.head.len();
            self.head.extend_from_slice(&data[..want]);
            let name = self.name;
            match parse_op(&self.head)
                .map_err(|e| delta_err(format!("{name} instructions: {e}")))?
            {
                None => {
                    data = &data[want..];
                }
                Some((op, used)) => {
                    data = &data[used - old..];
                    self.head.clear();
                    match op {
                        Op::Copy { offset, len } => self.copy(offset, len)?,
                        Op::Data { len } => {
                            self.data_left = len;
                            self.add_at = None;
                        }
                        Op::Add { offset, len } => {
                            self.check_range(offset, len)?;
                            self.data_left = len;
                            self.add_at = Some(offset);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(mut self, target: &Payload) -> Result<(), BundleError> {
        if !self.head.is_empty() || self.data_left != 0 {
            return Err(delta_err(format!(
                "its {} instructions end in the middle of one",
                self.name
            )));
        }
        if self.written != target.size {
            return Err(BundleError::DeltaResult {
                detail: format!(
                    "{}: it made {} bytes, the signed new one has {}",
                    self.name, self.written, target.size
                ),
            });
        }
        let got = hex::encode(self.hasher.finalize_reset());
        if got != target.sha256 {
            return Err(BundleError::DeltaResult {
                detail: format!(
                    "{}: the result has sha256 {got}, the signed new one {}",
                    self.name, target.sha256
                ),
            });
        }
        (self.progress)(self.written);
        Ok(())
    }
}

impl Write for Apply<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Err(io::Error::other("the delta already failed"));
        }
        match self.take(data) {
            Ok(()) => Ok(data.len()),
            Err(e) => Err(self.fail(e)),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// How the new root was expressed.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Bytes of the new root copied from the base.
    pub copied: u64,
    /// Bytes of the new root carried as literals.
    pub literal: u64,
    /// Bytes of the new root carried as differences to the base's.
    pub added: u64,
    pub copies: u64,
}

/// Window of the rolling hash and spacing of the indexed base positions: a run
/// shared by both images is found when it is at least twice this long.
const BLOCK: usize = 64;
/// Shorter matches cost more as an instruction than as literals.
const MIN_MATCH: usize = BLOCK;

/// The rolling hash's multiplier (odd) and the mixer that picks a table slot.
const MUL: u64 = 0x100000001b3;
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Write instructions that make `new` from `base`: an index of the base's
/// `BLOCK`-aligned blocks, a rolling hash over every offset of `new`, and each
/// hit extended both ways (rsync's search, bsdiff's extension).
pub fn diff(base: &[u8], new: &[u8], out: &mut impl Write) -> io::Result<DiffStats> {
    let blocks = base.len() / BLOCK;
    let bits = (blocks.max(1) * 2)
        .next_power_of_two()
        .trailing_zeros()
        .max(4);
    let size = 1usize << bits;
    // Slot: (hash tag, base block index + 1); 0 = empty.
    let mut table: Vec<(u32, u32)> = vec![(0, 0); size];
    let slot = |h: u64| (h.wrapping_mul(MIX) >> (64 - bits)) as usize;
    let tag = |h: u64| (h >> 32) as u32;
    let hash = |w: &[u8]| {
        w.iter()
            .fold(0u64, |h, &b| h.wrapping_mul(MUL).wrapping_add(u64::from(b)))
    };
    for b in 0..blocks {
        let h = hash(&base[b * BLOCK..(b + 1) * BLOCK]);
        let mut s = slot(h);
        for _ in 0..8 {
            if table[s].1 == 0 {
                table[s] = (tag(h), (b + 1) as u32);
                break;
            }
            s = (s + 1) & (size - 1);
        }
    }
    // MUL^(BLOCK-1): the weight of the byte that leaves the window.
    let out_factor = (1..BLOCK).fold(1u64, |f, _| f.wrapping_mul(MUL));

    let mut ops = Vec::with_capacity(1 << 20);
    let mut stats = DiffStats::default();
    let mut lit_start = 0usize;
    let mut i = 0usize;
    let mut h = if new.len() >= BLOCK {
        hash(&new[..BLOCK])
    } else {
        0
    };
    let flush = |ops: &mut Vec<u8>, out: &mut dyn Write| -> io::Result<()> {
        if ops.len() >= 1 << 20 {
            out.write_all(ops)?;
            ops.clear();
        }
        Ok(())
    };
    while i + BLOCK <= new.len() {
        let mut found = None;
        let mut s = slot(h);
        for _ in 0..8 {
            let (t, b) = table[s];
            if b == 0 {
                break;
            }
            let p = (b as usize - 1) * BLOCK;
            if t == tag(h) && base[p..p + BLOCK] == new[i..i + BLOCK] {
                found = Some(p);
                break;
            }
            s = (s + 1) & (size - 1);
        }
        if let Some(p) = found {
            // Extend backwards into the pending literals, then forwards.
            let (mut ns, mut bs) = (i, p);
            while ns > lit_start && bs > 0 && base[bs - 1] == new[ns - 1] {
                ns -= 1;
                bs -= 1;
            }
            let mut len = i - ns + BLOCK;
            while ns + len < new.len() && bs + len < base.len() && base[bs + len] == new[ns + len] {
                len += 1;
            }
            if len >= MIN_MATCH {
                if ns > lit_start {
                    ops.push(OP_DATA);
                    put_varint(&mut ops, (ns - lit_start) as u64);
                    ops.extend_from_slice(&new[lit_start..ns]);
                    stats.literal += (ns - lit_start) as u64;
                }
                ops.push(OP_COPY);
                put_varint(&mut ops, bs as u64);
                put_varint(&mut ops, len as u64);
                stats.copied += len as u64;
                stats.copies += 1;
                // Past the exact match, go on while matching bytes outnumber
                // the others (bsdiff's score): code whose addresses moved
                // differs every few bytes and matches in between.
                let (mut score, mut best, mut best_len, mut k) = (0i64, 0i64, 0usize, 0usize);
                while ns + len + k < new.len() && bs + len + k < base.len() {
                    score += if base[bs + len + k] == new[ns + len + k] {
                        1
                    } else {
                        -1
                    };
                    k += 1;
                    if score > best {
                        best = score;
                        best_len = k;
                    }
                    if score < best - 64 {
                        break;
                    }
                }
                if best_len > 0 {
                    ops.push(OP_ADD);
                    put_varint(&mut ops, (bs + len) as u64);
                    put_varint(&mut ops, best_len as u64);
                    let (b0, n0) = (bs + len, ns + len);
                    ops.extend((0..best_len).map(|j| new[n0 + j].wrapping_sub(base[b0 + j])));
                    stats.added += best_len as u64;
                }
                flush(&mut ops, out)?;
                let len = len + best_len;
                i = ns + len;
                lit_start = i;
                if i + BLOCK <= new.len() {
                    h = hash(&new[i..i + BLOCK]);
                }
                continue;
            }
        }
        if i + BLOCK < new.len() {
            h = h
                .wrapping_sub(u64::from(new[i]).wrapping_mul(out_factor))
                .wrapping_mul(MUL)
                .wrapping_add(u64::from(new[i + BLOCK]));
        }
        i += 1;
        flush(&mut ops, out)?;
    }
    if lit_start < new.len() {
        ops.push(OP_DATA);
        put_varint(&mut ops, (new.len() - lit_start) as u64);
        ops.extend_from_slice(&new[lit_start..]);
        stats.literal += (new.len() - lit_start) as u64;
    }
    out.write_all(&ops)?;
    Ok(stats)
}

/// Reads a whole stream into memory, for the diff (builder only).
#[cfg(feature = "write")]
fn read_all(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    let mut buf = vec![0u8; crate::bundle::CHUNK];
    loop {
        let n = crate::bundle::fill(r, &mut buf)?;
        if n == 0 {
            return Ok(v);
        }
        v.extend_from_slice(&buf[..n]);
    }
}

#[cfg(feature = "write")]
pub use write_side::{write, DeltaInfo};

#[cfg(feature = "write")]
mod write_side {
    use super::*;
    use crate::bundle::{compress, sibling, signed_header, TempFile};
    use crate::{Input, Signer};
    use std::fs;
    use std::io::BufWriter;
    use std::path::Path;

    /// What `ballast delta` made.
    #[derive(Serialize, Clone, Debug)]
    pub struct DeltaInfo {
        pub manifest: DeltaManifest,
        /// Per payload: how much of the new file was copied from the running one.
        pub stats: Vec<(String, DiffStats)>,
        /// Bytes of the delta file.
        pub size: u64,
    }

    /// The payloads of a verified bundle, each in a temporary file beside `out`.
    struct Unpacked {
        manifest: Manifest,
        files: Vec<(PayloadName, TempFile)>,
    }

    impl Unpacked {
        fn path(&self, name: PayloadName) -> Option<&Path> {
            self.files
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t.0.as_path())
        }
    }

    fn unpack(
        bundle: &Path,
        trusted: &[PublicKey],
        out: &Path,
        tag: &str,
        names: &[PayloadName],
    ) -> Result<Unpacked, BundleError> {
        let wrap = |e: BundleError| BundleError::Input {
            name: bundle.display().to_string(),
            detail: e.to_string(),
        };
        let file = File::open(bundle).map_err(|e| BundleError::io("opening bundle", bundle, e))?;
        let mut reader =
            Reader::open(io::BufReader::with_capacity(1 << 20, file), trusted).map_err(wrap)?;
        let manifest = reader.manifest().clone();
        let mut files = Vec::new();
        for p in &manifest.payloads {
            let kind = p.kind().ok_or_else(|| wrap(delta_err("unknown payload")))?;
            if names.contains(&kind) {
                let tmp = TempFile(sibling(out, &format!(".{tag}-{kind}.tmp")));
                let f = File::create(&tmp.0).map_err(|e| BundleError::io("creating", &tmp.0, e))?;
                let mut w = BufWriter::with_capacity(1 << 20, f);
                reader.copy_next(&mut w, &mut |_| {}).map_err(wrap)?;
                w.flush()
                    .map_err(|e| BundleError::io("writing", &tmp.0, e))?;
                files.push((kind, tmp));
            } else {
                reader
                    .copy_next(&mut io::sink(), &mut |_| {})
                    .map_err(wrap)?;
            }
        }
        Ok(Unpacked { manifest, files })
    }

    /// Make a delta from `old_bundle` to `new_bundle` (both verified against
    /// `trusted`), signed by `signer`, written atomically to `out`.
    pub fn write(
        out: &Path,
        old_bundle: &Path,
        new_bundle: &Path,
        signer: &Signer,
        trusted: &[PublicKey],
    ) -> Result<DeltaInfo, BundleError> {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| BundleError::io("creating directory", dir, e))?;
        }
        let old = unpack(old_bundle, trusted, out, "base", &PayloadName::ALL)?;
        let new = unpack(new_bundle, trusted, out, "new", &PayloadName::ALL)?;
        let (o, n) = (&old.manifest, &new.manifest);
        if o.arch != n.arch {
            return Err(delta_err(format!(
                "the bundles are for different arches ({} and {})",
                o.arch, n.arch
            )));
        }
        let base_root = o
            .payload(PayloadName::Root)
            .ok_or_else(|| delta_err(format!("{}: has no root", old_bundle.display())))?;
        let verity = verity_of(&o.cmdline).ok_or_else(|| {
            delta_err(format!(
                "{}: its command line has no ballast.verity=, so a device could not tell it runs this base",
                old_bundle.display()
            ))
        })?;
        let base = Base {
            version: o.version.clone(),
            root_size: base_root.size,
            root_sha256: base_root.sha256.clone(),
            verity: verity.to_string(),
        };

        let read = |path: Option<&Path>| -> Result<Vec<u8>, BundleError> {
            let path = path.ok_or_else(|| delta_err("a payload is missing"))?;
            let mut f = File::open(path).map_err(|e| BundleError::io("reading", path, e))?;
            read_all(&mut f).map_err(|e| BundleError::io("reading", path, e))
        };
        let mut frames = Vec::new();
        let mut temps = Vec::new();
        let mut stats = Vec::new();
        for (i, name) in PayloadName::ALL.into_iter().enumerate() {
            let base_bytes = read(old.path(name))?;
            let new_bytes = read(new.path(name))?;
            let ops = TempFile(sibling(out, &format!(".ops{i}.tmp")));
            let f = File::create(&ops.0).map_err(|e| BundleError::io("creating", &ops.0, e))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            let st = diff(&base_bytes, &new_bytes, &mut w)
                .and_then(|st| w.flush().map(|()| st))
                .map_err(|e| BundleError::io("writing", &ops.0, e))?;
            drop(w);
            drop((base_bytes, new_bytes));
            let tmp = TempFile(sibling(out, &format!(".frame{i}.tmp")));
            let mut frame = compress(&Input { name, path: &ops.0 }, &tmp.0)?;
            frame.name = name.to_string();
            frames.push(frame);
            temps.push(tmp);
            stats.push((name.to_string(), st));
        }
        let manifest = DeltaManifest {
            format: DELTA_FORMAT,
            key_id: signer.public().id,
            base,
            target: n.clone(),
            payloads: frames,
        };
        manifest.check()?;
        let json = serde_json::to_vec(&manifest)
            .map_err(|e| delta_err(format!("serialising the manifest: {e}")))?;
        let header = signed_header(DELTA_MAGIC, &json, signer)?;
        ballast_device::atomic::replace_with(out, |tmp, file| {
            let werr = |e| BundleError::io("writing", tmp, e);
            let mut writer = BufWriter::with_capacity(1 << 20, file);
            writer.write_all(&header).map_err(werr)?;
            for t in &temps {
                let mut src =
                    File::open(&t.0).map_err(|e| BundleError::io("reading back", &t.0, e))?;
                io::copy(&mut src, &mut writer).map_err(werr)?;
            }
            writer.flush().map_err(werr)
        })?;
        let size = fs::metadata(out)
            .map_err(|e| BundleError::io("reading", out, e))?
            .len();
        Ok(DeltaInfo {
            manifest,
            stats,
            size,
        })
    }
}

#[cfg(all(test, feature = "write"))]
mod tests {
    use super::*;
    use crate::{Input, Signer};
    use std::fs;
    use std::path::{Path, PathBuf};

    /// Pseudo-random bytes (incompressible like squashfs data).
    fn noise(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    struct Pair {
        dir: tempfile::TempDir,
        signer: Signer,
        old_root: Vec<u8>,
        new_root: Vec<u8>,
    }

    /// Old root: blocks A B C D; new: A C' (changed) B D, shifted by a few bytes.
    fn pair() -> Pair {
        let a = noise(1, 300_000);
        let b = noise(2, 200_000);
        let c = noise(3, 100_000);
        let d = noise(4, 250_000);
        let old_root = [a.clone(), b.clone(), c, d.clone()].concat();
        let new_root = [a, noise(5, 3_001), b, d].concat();
        Pair {
            dir: tempfile::tempdir().unwrap(),
            signer: Signer::from_seed(&[7; 32]),
            old_root,
            new_root,
        }
    }

    fn bundle(p: &Pair, version: &str, root: &[u8], kernel: &[u8], verity: &str) -> PathBuf {
        let d = p.dir.path().join(version);
        fs::create_dir_all(&d).unwrap();
        let files = [
            ("root", root),
            ("kernel", kernel),
            ("initrd", b"initrd" as &[u8]),
        ];
        for (name, bytes) in files {
            fs::write(d.join(name), bytes).unwrap();
        }
        let m = Manifest {
            format: 1,
            os: "ballast".into(),
            version: version.into(),
            arch: "arm64".into(),
            boards: vec![],
            build_time: 1,
            rollback_index: 0,
            key_id: String::new(),
            cmdline: format!("console=ttyAMA0 ballast.verity={verity}"),
            payloads: vec![],
        };
        let inputs: Vec<Input> = PayloadName::ALL
            .iter()
            .map(|&name| Input {
                name,
                path: Box::leak(d.join(name.as_str()).into_boxed_path()),
            })
            .collect();
        let out = d.join("update.bundle");
        crate::write(&out, m, &inputs, &p.signer).unwrap();
        out
    }

    fn make_delta(p: &Pair) -> (PathBuf, DeltaInfo) {
        let old = bundle(p, "0.1.0", &p.old_root, b"kernel one", "OLD:s:1:2");
        let new = bundle(p, "0.2.0", &p.new_root, b"kernel one", "NEW:s:1:2");
        let out = p.dir.path().join("0.1.0-0.2.0.delta");
        let info = write(&out, &old, &new, &p.signer, &[p.signer.public()]).unwrap();
        (out, info)
    }

    /// The running slot's files, as the device has them.
    fn base_files(p: &Pair, root: &[u8]) -> [File; 3] {
        let d = p.dir.path().join("running");
        fs::create_dir_all(&d).unwrap();
        // The partition is bigger than the image.
        let mut part = root.to_vec();
        part.resize(root.len() + 65_536, 0xee);
        fs::write(d.join("root"), part).unwrap();
        fs::write(d.join("kernel"), b"kernel one").unwrap();
        fs::write(d.join("initrd"), b"initrd").unwrap();
        ["root", "kernel", "initrd"].map(|n| File::open(d.join(n)).unwrap())
    }

    /// Apply all three payloads; the results, or the first error.
    fn apply(
        bytes: &[u8],
        keys: &[PublicKey],
        base: &[File; 3],
        verity: &str,
    ) -> Result<Vec<Vec<u8>>, BundleError> {
        let mut r = DeltaReader::open(bytes, keys)?;
        r.check_base("0.1.0", Some(verity))?;
        let mut outs = Vec::new();
        for f in base {
            let mut out = Vec::new();
            r.apply_next(f, &mut out, &mut |_| {})?
                .ok_or_else(|| delta_err("ended early"))?;
            outs.push(out);
        }
        assert!(r
            .apply_next(&base[0], &mut Vec::new(), &mut |_| {})?
            .is_none());
        Ok(outs)
    }

    #[test]
    fn a_delta_makes_exactly_the_new_files_and_is_small() {
        let p = pair();
        let (path, info) = make_delta(&p);
        let bytes = fs::read(&path).unwrap();
        assert!(is_delta(&bytes));
        let outs = apply(
            &bytes,
            &[p.signer.public()],
            &base_files(&p, &p.old_root),
            "OLD:s:1:2",
        )
        .unwrap();
        assert_eq!(outs[0], p.new_root);
        assert_eq!(outs[1], b"kernel one");
        assert_eq!(outs[2], b"initrd");
        // Only the 3 001 new bytes (and the headers) travel.
        assert!(bytes.len() < 8_000, "{} bytes", bytes.len());
        let root = &info.stats[0].1;
        assert_eq!(root.literal, 3_001);
        assert_eq!(root.copied as usize, p.new_root.len() - 3_001);
        assert_eq!(info.manifest.base.version, "0.1.0");
        assert_eq!(info.manifest.result_verity(), Some("NEW:s:1:2"));
    }

    #[test]
    fn diff_roundtrips_unaligned_and_tiny_inputs() {
        let base = noise(9, 10_000);
        for new in [
            vec![],
            b"short".to_vec(),
            [&base[7..5_000], b"x", &base[3..9_999]].concat(),
            noise(10, 777),
            // Addresses that moved: a byte in every 50 differs after the first 1000.
            base.iter()
                .enumerate()
                .map(|(i, b)| {
                    if i > 1000 && i % 50 == 0 {
                        b ^ 0x5a
                    } else {
                        *b
                    }
                })
                .collect(),
        ] {
            let mut ops = Vec::new();
            let st = diff(&base, &new, &mut ops).unwrap();
            assert_eq!(st.copied + st.literal + st.added, new.len() as u64);
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("b"), &base).unwrap();
            let f = File::open(dir.path().join("b")).unwrap();
            let mut out = Vec::new();
            let mut progress = |_| {};
            let mut a = Apply::new(
                &f,
                base.len() as u64,
                PayloadName::Root,
                new.len() as u64,
                &mut out,
                &mut progress,
            );
            // In odd-sized pieces, as a decoder hands them over.
            for piece in ops.chunks(3) {
                a.write_all(piece).unwrap();
            }
            let sha = hex::encode(Sha256::digest(&new));
            a.finish(&Payload {
                name: "root".into(),
                size: new.len() as u64,
                sha256: sha,
                compressed_size: 1,
                compressed_sha256: String::new(),
            })
            .unwrap();
            assert_eq!(out, new);
        }
    }

    #[test]
    fn every_bad_delta_is_refused_with_its_reason() {
        let p = pair();
        let (path, _) = make_delta(&p);
        let good = fs::read(&path).unwrap();
        let keys = [p.signer.public()];
        let base = base_files(&p, &p.old_root);
        let n = good.len();
        let refuse = |bytes: &[u8], keys: &[PublicKey], base: &[File; 3], verity: &str| {
            apply(bytes, keys, base, verity).unwrap_err().to_string()
        };

        let e = refuse(&good, &keys, &base, "OTHER:s:1:2");
        assert!(
            e.contains("this delta updates version 0.1.0") && e.contains("full bundle"),
            "{e}"
        );

        let e = refuse(&good[..n / 2], &keys, &base, "OLD:s:1:2");
        assert!(e.contains("truncated"), "{e}");
        let e = refuse(&good[..10], &keys, &base, "OLD:s:1:2");
        assert!(e.contains("truncated"), "{e}");

        let mut tampered = good.clone();
        tampered[n - 20] ^= 0x10;
        let e = refuse(&tampered, &keys, &base, "OLD:s:1:2");
        assert!(e.contains("corrupt") || e.contains("sha256"), "{e}");

        let mut manifest = good.clone();
        manifest[40] ^= 0x01;
        let e = refuse(&manifest, &keys, &base, "OLD:s:1:2");
        assert!(e.contains("signature"), "{e}");

        let stranger = [Signer::from_seed(&[8; 32]).public()];
        let e = refuse(&good, &stranger, &base, "OLD:s:1:2");
        assert!(e.contains("not trusted"), "{e}");

        // A bundle is not a delta.
        let bundle = fs::read(p.dir.path().join("0.2.0/update.bundle")).unwrap();
        let e = refuse(&bundle, &keys, &base, "OLD:s:1:2");
        assert!(e.contains("not a Ballast delta"), "{e}");

        // The running root is not the base the delta names (the same verity
        // argument, other bytes): the result does not match the signed root.
        let other = base_files(&p, &noise(42, p.old_root.len()));
        let e = refuse(&good, &keys, &other, "OLD:s:1:2");
        assert!(e.contains("did not give the signed new root"), "{e}");
    }

    #[test]
    fn instructions_beyond_the_base_or_cut_short_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b"), b"0123456789").unwrap();
        let f = File::open(dir.path().join("b")).unwrap();
        let run = |ops: &[u8]| -> String {
            let mut out = Vec::new();
            let mut progress = |_| {};
            let mut a = Apply::new(&f, 10, PayloadName::Kernel, 100, &mut out, &mut progress);
            if a.write_all(ops).is_err() {
                return a.error.take().unwrap().to_string();
            }
            let target = Payload {
                name: "kernel".into(),
                size: 5,
                sha256: hex::encode(Sha256::digest(b"01234")),
                compressed_size: 1,
                compressed_sha256: String::new(),
            };
            a.finish(&target).unwrap_err().to_string()
        };
        assert!(run(&[OP_COPY, 8, 5]).contains("beyond the running kernel"));
        assert!(run(&[OP_DATA, 9, b'a']).contains("middle of one"));
        assert!(run(&[7]).contains("unknown instruction"));
        assert!(run(&[OP_ADD, 9, 2, 0, 0]).contains("beyond the running kernel"));
        assert!(run(&[OP_COPY, 0, 4]).contains("4 bytes"));
        assert!(run(&[OP_DATA, 200, 1]).contains("middle of one"));
    }

    #[allow(dead_code)]
    fn _paths(_: &Path) {}
}
