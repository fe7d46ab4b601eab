//! dm-verity hash trees, "format 1" exactly as `veritysetup format` writes them.
//!
//! This crate owns the on-disk verity layout: the 512-byte cryptsetup superblock, the
//! SHA-256 hash tree stored top level first, the kernel table line for
//! `DM_TABLE_LOAD`, and the compact kernel command line word that carries the root
//! hash from the boot entry to init. It never talks to device-mapper itself (init does,
//! through its syscall seam) and never trusts a superblock over a root hash given by the
//! caller: the superblock only says how the tree is laid out.
//!
//! Layout when the tree is appended to the data file (what the builder does):
//!
//! ```text
//! | data, zero-padded to a block | superblock (512 B, padded to a hash block) | top level | ... | level 0 |
//! 0                              hash_offset
//! ```
//!
//! Hashes are `sha256(salt || block)` (format 1). With a single data block there is no
//! tree at all: the root hash is the hash of that block (the kernel and cryptsetup agree).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Size of a SHA-256 digest; also its slot size in a hash block (already a power of two).
const DIGEST: usize = 32;
/// Size of the cryptsetup verity superblock.
pub const SUPERBLOCK_SIZE: usize = 512;
const SIGNATURE: &[u8; 8] = b"verity\0\0";
/// Longest salt the superblock can hold.
pub const MAX_SALT: usize = 256;
/// Default data and hash block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
/// Name of the kernel command line parameter carrying a [`Verity`].
pub const CMDLINE_KEY: &str = "ballast.verity";

/// Everything that can go wrong; each message names the file, field or word and the fix.
#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error("{path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the file is empty; dm-verity needs at least one data block (build the filesystem image first)")]
    Empty { path: PathBuf },
    #[error("verity parameter {field} = {value} is invalid: {fix}")]
    BadParams {
        field: &'static str,
        value: String,
        fix: &'static str,
    },
    #[error("{path}: at byte {offset}: verity superblock field {field} {detail}")]
    BadSuperblock {
        path: PathBuf,
        offset: u64,
        field: &'static str,
        detail: String,
    },
    #[error("{path}: verity superblock at byte {offset} says {field} = {image}, expected {expected}; the hash tree belongs to another image or the offset is wrong")]
    SuperblockMismatch {
        path: PathBuf,
        offset: u64,
        field: &'static str,
        image: String,
        expected: String,
    },
    #[error("{path}: is {len} bytes, too short for {need} bytes of data and hash tree; the image is truncated or the verity parameters belong to another image")]
    TooShort { path: PathBuf, len: u64, need: u64 },
    #[error("{path}: data block {block} (bytes {start}..{end}) does not match its hash in the tree; the image is corrupt or was modified after the tree was built")]
    DataBlockMismatch {
        path: PathBuf,
        block: u64,
        start: u64,
        end: u64,
    },
    #[error("{path}: hash tree level {level} block {block} (byte {offset}) is not the hash of the level below; the hash area is corrupt, rebuild it")]
    HashBlockMismatch {
        path: PathBuf,
        level: usize,
        block: u64,
        offset: u64,
    },
    #[error("{path}: root hash is {actual}, expected {expected}; the image is not the one the boot entry names")]
    RootHashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("kernel command line word `{word}`: {reason} (expected {CMDLINE_KEY}=<root hex>:<salt hex or ->:<data blocks>:<hash offset>[:<data block size>:<hash block size>])")]
    Cmdline { word: String, reason: String },
}

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> VerityError + 'a {
    move |source| VerityError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// How to build a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub salt: Vec<u8>,
}

impl Params {
    /// 4096-byte data and hash blocks with the given salt (32 bytes is customary).
    pub fn new(salt: Vec<u8>) -> Params {
        Params {
            data_block_size: DEFAULT_BLOCK_SIZE,
            hash_block_size: DEFAULT_BLOCK_SIZE,
            salt,
        }
    }

    /// A 32-byte salt derived from `seed` (e.g. image name and version), so that two
    /// builds of the same inputs give byte-identical images.
    pub fn derived_salt(seed: &[u8]) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(b"ballast-verity salt\0");
        h.update(seed);
        h.finalize().to_vec()
    }

    fn check(&self) -> Result<(), VerityError> {
        check_block_size("data_block_size", self.data_block_size)?;
        check_block_size("hash_block_size", self.hash_block_size)?;
        if self.salt.len() > MAX_SALT {
            return Err(VerityError::BadParams {
                field: "salt",
                value: format!("{} bytes", self.salt.len()),
                fix: "the verity superblock holds at most 256 bytes of salt; use 32",
            });
        }
        Ok(())
    }
}

fn check_block_size(field: &'static str, size: u32) -> Result<(), VerityError> {
    // The kernel wants a power of two between a sector and the page size; 64 KiB is the
    // largest page size of any board we target.
    if !size.is_power_of_two() || !(512..=65536).contains(&size) {
        return Err(VerityError::BadParams {
            field,
            value: size.to_string(),
            fix: "use a power of two from 512 to 65536 (4096 works on every board)",
        });
    }
    Ok(())
}

/// The parsed cryptsetup verity superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub version: u32,
    /// 1 = normal (format 1), 0 = Chrome OS.
    pub hash_type: u32,
    pub uuid: [u8; 16],
    pub algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

impl Superblock {
    fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..8].copy_from_slice(SIGNATURE);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.hash_type.to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid);
        let alg = self.algorithm.as_bytes();
        let n = alg.len().min(31);
        b[32..32 + n].copy_from_slice(&alg[..n]);
        b[64..68].copy_from_slice(&self.data_block_size.to_le_bytes());
        b[68..72].copy_from_slice(&self.hash_block_size.to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        let salt_len = self.salt.len().min(MAX_SALT);
        b[80..82].copy_from_slice(&(salt_len as u16).to_le_bytes());
        b[88..88 + salt_len].copy_from_slice(&self.salt[..salt_len]);
        b
    }

    fn decode(
        b: &[u8; SUPERBLOCK_SIZE],
        path: &Path,
        offset: u64,
    ) -> Result<Superblock, VerityError> {
        let bad = |field: &'static str, detail: String| VerityError::BadSuperblock {
            path: path.to_path_buf(),
            offset,
            field,
            detail,
        };
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if &b[0..8] != SIGNATURE {
            return Err(bad(
                "signature",
                format!(
                    "is {:?}, not \"verity\\0\\0\"; no superblock here (wrong --hash-offset, or the tree was never appended)",
                    String::from_utf8_lossy(&b[0..8])
                ),
            ));
        }
        let version = u32_at(8);
        if version != 1 {
            return Err(bad(
                "version",
                format!("is {version}; only version 1 exists"),
            ));
        }
        let hash_type = u32_at(12);
        if hash_type != 1 {
            return Err(bad(
                "hash_type",
                format!("is {hash_type}; only format 1 (normal, salt first) is supported, rebuild with `veritysetup format --format=1`"),
            ));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        let alg_end = b[32..64].iter().position(|&c| c == 0).unwrap_or(32);
        let algorithm = String::from_utf8_lossy(&b[32..32 + alg_end]).into_owned();
        if algorithm != "sha256" {
            return Err(bad(
                "algorithm",
                format!("is {algorithm:?}; only sha256 is supported"),
            ));
        }
        let data_block_size = u32_at(64);
        let hash_block_size = u32_at(68);
        for (field, v) in [
            ("data_block_size", data_block_size),
            ("hash_block_size", hash_block_size),
        ] {
            if check_block_size(field, v).is_err() {
                return Err(bad(
                    field,
                    format!("is {v}, not a power of two from 512 to 65536"),
                ));
            }
        }
        let mut d = [0u8; 8];
        d.copy_from_slice(&b[72..80]);
        let data_blocks = u64::from_le_bytes(d);
        if data_blocks == 0 {
            return Err(bad("data_blocks", "is 0".to_string()));
        }
        let salt_len = u16::from_le_bytes([b[80], b[81]]) as usize;
        if salt_len > MAX_SALT {
            return Err(bad("salt_size", format!("is {salt_len}, more than 256")));
        }
        Ok(Superblock {
            version,
            hash_type,
            uuid,
            algorithm,
            data_block_size,
            hash_block_size,
            data_blocks,
            salt: b[88..88 + salt_len].to_vec(),
        })
    }

    /// The [`Verity`] this superblock describes, given the root hash (which must come from
    /// a trusted place, never from the image) and where the superblock was read.
    pub fn to_verity(&self, root_hash: [u8; 32], hash_offset: u64) -> Verity {
        Verity {
            root_hash,
            salt: self.salt.clone(),
            data_blocks: self.data_blocks,
            data_block_size: self.data_block_size,
            hash_block_size: self.hash_block_size,
            hash_offset,
            uuid: self.uuid,
        }
    }
}

/// A built (or announced) verity volume: what init needs to map it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verity {
    pub root_hash: [u8; 32],
    pub salt: Vec<u8>,
    pub data_blocks: u64,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    /// byte offset of the superblock (= end of the padded data) when appended to the same file
    pub hash_offset: u64,
    pub uuid: [u8; 16],
}

impl Verity {
    pub fn root_hash_hex(&self) -> String {
        hex::encode(self.root_hash)
    }

    /// The salt in hex; empty when there is no salt (the kernel table then uses `-`).
    pub fn salt_hex(&self) -> String {
        hex::encode(&self.salt)
    }

    /// The UUID in its usual 8-4-4-4-12 form (as `veritysetup dump` prints it).
    pub fn uuid_string(&self) -> String {
        uuid_string(&self.uuid)
    }

    /// Bytes of data covered (what the mapped device exposes).
    pub fn data_size(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size)
    }

    /// First block of the tree on the hash device, in hash blocks (skips the superblock).
    pub fn hash_start_block(&self) -> u64 {
        let sb_blocks = (SUPERBLOCK_SIZE as u64).div_ceil(u64::from(self.hash_block_size));
        self.hash_offset / u64::from(self.hash_block_size) + sb_blocks
    }

    /// Total bytes of the hash area (superblock block(s) plus the tree) after `hash_offset`.
    pub fn hash_area_size(&self) -> u64 {
        let hbs = u64::from(self.hash_block_size);
        let sb = (SUPERBLOCK_SIZE as u64).div_ceil(hbs) * hbs;
        sb + tree_blocks(self.data_blocks, self.hash_block_size) * hbs
    }

    /// Kernel table for `dmsetup create`/DM_TABLE_LOAD:
    /// `0 <sectors> verity 1 <data_dev> <hash_dev> <dbs> <hbs> <data_blocks> <hash_start_block> sha256 <root> <salt>`.
    pub fn table(&self, data_dev: &str, hash_dev: &str) -> String {
        let salt = if self.salt.is_empty() {
            "-".to_string()
        } else {
            self.salt_hex()
        };
        format!(
            "0 {} verity 1 {} {} {} {} {} {} sha256 {} {}",
            self.data_size() / 512,
            data_dev,
            hash_dev,
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start_block(),
            self.root_hash_hex(),
            salt
        )
    }

    /// `ballast.verity=<root>:<salt>:<data_blocks>:<hash_offset>`, with
    /// `:<data_block_size>:<hash_block_size>` only when they are not 4096. The UUID is
    /// not carried: it is derived from root hash and salt (see [`derive_uuid`]).
    pub fn to_cmdline(&self) -> String {
        let salt = if self.salt.is_empty() {
            "-".to_string()
        } else {
            self.salt_hex()
        };
        let mut s = format!(
            "{CMDLINE_KEY}={}:{}:{}:{}",
            self.root_hash_hex(),
            salt,
            self.data_blocks,
            self.hash_offset
        );
        if self.data_block_size != DEFAULT_BLOCK_SIZE || self.hash_block_size != DEFAULT_BLOCK_SIZE
        {
            s.push_str(&format!(
                ":{}:{}",
                self.data_block_size, self.hash_block_size
            ));
        }
        s
    }

    /// Inverse of [`Verity::to_cmdline`]; accepts the value with or without the
    /// `ballast.verity=` prefix.
    pub fn from_cmdline(value: &str) -> Result<Verity, VerityError> {
        let word = value.to_string();
        let err = |reason: String| VerityError::Cmdline {
            word: word.clone(),
            reason,
        };
        let v = value
            .strip_prefix(CMDLINE_KEY)
            .and_then(|r| r.strip_prefix('='))
            .unwrap_or(value);
        let fields: Vec<&str> = v.split(':').collect();
        if fields.len() != 4 && fields.len() != 6 {
            return Err(err(format!(
                "has {} fields separated by ':', want 4 or 6",
                fields.len()
            )));
        }
        let root = hex::decode(fields[0])
            .map_err(|e| err(format!("root hash {:?} is not hex: {e}", fields[0])))?;
        let root_hash: [u8; 32] = root.try_into().map_err(|r: Vec<u8>| {
            err(format!("root hash is {} bytes, sha256 needs 32", r.len()))
        })?;
        let salt = if fields[1] == "-" {
            Vec::new()
        } else {
            hex::decode(fields[1])
                .map_err(|e| err(format!("salt {:?} is not hex: {e}", fields[1])))?
        };
        if salt.len() > MAX_SALT {
            return Err(err(format!("salt is {} bytes, at most 256", salt.len())));
        }
        let data_blocks: u64 = fields[2]
            .parse()
            .map_err(|e| err(format!("data block count {:?}: {e}", fields[2])))?;
        if data_blocks == 0 {
            return Err(err("data block count is 0".to_string()));
        }
        let hash_offset: u64 = fields[3]
            .parse()
            .map_err(|e| err(format!("hash offset {:?}: {e}", fields[3])))?;
        let (data_block_size, hash_block_size) = if fields.len() == 6 {
            let parse = |name: &str, f: &str| -> Result<u32, VerityError> {
                let n: u32 = f.parse().map_err(|e| err(format!("{name} {f:?}: {e}")))?;
                if !n.is_power_of_two() || !(512..=65536).contains(&n) {
                    return Err(err(format!(
                        "{name} {n} is not a power of two from 512 to 65536"
                    )));
                }
                Ok(n)
            };
            (
                parse("data block size", fields[4])?,
                parse("hash block size", fields[5])?,
            )
        } else {
            (DEFAULT_BLOCK_SIZE, DEFAULT_BLOCK_SIZE)
        };
        if !hash_offset.is_multiple_of(u64::from(hash_block_size)) {
            return Err(err(format!(
                "hash offset {hash_offset} is not a multiple of the hash block size {hash_block_size}"
            )));
        }
        if hash_offset < data_blocks.saturating_mul(u64::from(data_block_size)) {
            return Err(err(format!(
                "hash offset {hash_offset} lies inside the {data_blocks} data blocks"
            )));
        }
        Ok(Verity {
            root_hash,
            uuid: derive_uuid(&root_hash, &salt),
            salt,
            data_blocks,
            data_block_size,
            hash_block_size,
            hash_offset,
        })
    }

    /// Find `ballast.verity=` in a whole kernel command line (e.g. /proc/cmdline).
    /// `Ok(None)` when the word is absent; the last occurrence wins, as for the kernel.
    pub fn find_in_cmdline(cmdline: &str) -> Result<Option<Verity>, VerityError> {
        let prefix = format!("{CMDLINE_KEY}=");
        match cmdline
            .split_ascii_whitespace()
            .rfind(|w| w.starts_with(&prefix))
        {
            Some(w) => Verity::from_cmdline(w).map(Some),
            None => Ok(None),
        }
    }
}

/// The superblock UUID, derived from root hash and salt so that builds are reproducible
/// and so the command line need not carry it. Marked as an RFC 9562 version 8 UUID.
pub fn derive_uuid(root_hash: &[u8; 32], salt: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"ballast-verity uuid\0");
    h.update(root_hash);
    h.update(salt);
    let d = h.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

fn uuid_string(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Number of hash blocks in each level, level 0 (hashes of data blocks) first. Empty
/// for a single data block: cryptsetup and the kernel then use the block's hash as root.
fn level_sizes(data_blocks: u64, hash_block_size: u32) -> Vec<u64> {
    let per_block = u64::from(hash_block_size) / DIGEST as u64;
    let mut sizes = Vec::new();
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(per_block);
        sizes.push(n);
    }
    sizes
}

fn tree_blocks(data_blocks: u64, hash_block_size: u32) -> u64 {
    level_sizes(data_blocks, hash_block_size).iter().sum()
}

fn hash_block(salt: &[u8], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Hash every data block of `file` (the last partial block zero-padded), streaming.
/// Returns the concatenated digests (32 bytes per block, ~0.8 % of the data).
fn hash_data(
    file: &File,
    path: &Path,
    data_blocks: u64,
    data_block_size: u32,
    salt: &[u8],
) -> Result<Vec<u8>, VerityError> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut block = vec![0u8; data_block_size as usize];
    let mut out = Vec::with_capacity((data_blocks as usize).saturating_mul(DIGEST));
    for _ in 0..data_blocks {
        let mut filled = 0;
        while filled < block.len() {
            let n = reader
                .read(&mut block[filled..])
                .map_err(io(path, "read data blocks"))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        block[filled..].fill(0);
        out.extend_from_slice(&hash_block(salt, &block));
    }
    Ok(out)
}

/// Build the levels from the level-0 digests. Returns (levels with level 0 first, each
/// as its padded bytes; root hash).
fn build_tree(leaves: Vec<u8>, hash_block_size: u32, salt: &[u8]) -> (Vec<Vec<u8>>, [u8; 32]) {
    let hbs = hash_block_size as usize;
    let mut levels = Vec::new();
    let mut digests = leaves;
    while digests.len() > DIGEST {
        let blocks = digests.len().div_ceil(hbs);
        let mut level = digests;
        level.resize(blocks * hbs, 0);
        digests = level
            .chunks(hbs)
            .flat_map(|b| hash_block(salt, b))
            .collect();
        levels.push(level);
    }
    let mut root = [0u8; 32];
    root.copy_from_slice(&digests[..DIGEST]);
    (levels, root)
}

/// Pad the file to a multiple of the block size, then append superblock + tree.
/// Deterministic: the superblock UUID is derived from root hash and salt.
pub fn append_hash_tree(path: &Path, params: &Params) -> Result<Verity, VerityError> {
    params.check()?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(path, "open the image for appending a hash tree"))?;
    let len = file
        .metadata()
        .map_err(io(path, "read the image size"))?
        .len();
    if len == 0 {
        return Err(VerityError::Empty {
            path: path.to_path_buf(),
        });
    }
    let dbs = u64::from(params.data_block_size);
    let hbs = u64::from(params.hash_block_size);
    let data_blocks = len.div_ceil(dbs);
    // The kernel addresses the hash device in hash blocks: align the superblock to one.
    let hash_offset = (data_blocks * dbs).div_ceil(hbs) * hbs;

    let leaves = hash_data(
        &file,
        path,
        data_blocks,
        params.data_block_size,
        &params.salt,
    )?;
    let (levels, root_hash) = build_tree(leaves, params.hash_block_size, &params.salt);
    let uuid = derive_uuid(&root_hash, &params.salt);
    let sb = Superblock {
        version: 1,
        hash_type: 1,
        uuid,
        algorithm: "sha256".to_string(),
        data_block_size: params.data_block_size,
        hash_block_size: params.hash_block_size,
        data_blocks,
        salt: params.salt.clone(),
    };
    let verity = sb.to_verity(root_hash, hash_offset);

    // set_len pads the data with zeros up to the superblock. The whole file is data: a
    // file that already carries a tree gets a second one over both (callers pass a fresh image).
    file.set_len(hash_offset)
        .map_err(io(path, "pad the image to a whole block"))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &file);
    (&file)
        .seek(SeekFrom::Start(hash_offset))
        .map_err(io(path, "seek to the hash area"))?;
    let mut sb_area = vec![0u8; (SUPERBLOCK_SIZE as u64).div_ceil(hbs) as usize * hbs as usize];
    sb_area[..SUPERBLOCK_SIZE].copy_from_slice(&sb.encode());
    w.write_all(&sb_area)
        .map_err(io(path, "write the verity superblock"))?;
    for level in levels.iter().rev() {
        w.write_all(level)
            .map_err(io(path, "write the hash tree"))?;
    }
    w.flush().map_err(io(path, "write the hash tree"))?;
    drop(w);
    file.sync_all()
        .map_err(io(path, "flush the image to disk"))?;
    Ok(verity)
}

/// Read the superblock at `hash_offset` (so a tool given only the root hash can check an image).
pub fn read_superblock(path: &Path, hash_offset: u64) -> Result<Superblock, VerityError> {
    let mut file =
        File::open(path).map_err(io(path, "open the image to read its verity superblock"))?;
    file.seek(SeekFrom::Start(hash_offset))
        .map_err(io(path, "seek to the verity superblock"))?;
    let mut b = [0u8; SUPERBLOCK_SIZE];
    file.read_exact(&mut b).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            VerityError::BadSuperblock {
                path: path.to_path_buf(),
                offset: hash_offset,
                field: "signature",
                detail: "is missing: the file ends before the superblock (wrong hash offset?)"
                    .to_string(),
            }
        } else {
            io(path, "read the verity superblock")(e)
        }
    })?;
    Superblock::decode(&b, path, hash_offset)
}

/// Recompute the tree from the data and compare it with the stored superblock, tree and
/// `verity.root_hash`. Errors name the first bad data block, else the first bad hash block.
pub fn verify(path: &Path, verity: &Verity) -> Result<(), VerityError> {
    Params {
        data_block_size: verity.data_block_size,
        hash_block_size: verity.hash_block_size,
        salt: verity.salt.clone(),
    }
    .check()?;
    let sb = read_superblock(path, verity.hash_offset)?;
    let mismatch =
        |field: &'static str, image: String, expected: String| VerityError::SuperblockMismatch {
            path: path.to_path_buf(),
            offset: verity.hash_offset,
            field,
            image,
            expected,
        };
    if sb.data_blocks != verity.data_blocks {
        return Err(mismatch(
            "data_blocks",
            sb.data_blocks.to_string(),
            verity.data_blocks.to_string(),
        ));
    }
    if sb.salt != verity.salt {
        return Err(mismatch("salt", hex::encode(&sb.salt), verity.salt_hex()));
    }
    if sb.data_block_size != verity.data_block_size || sb.hash_block_size != verity.hash_block_size
    {
        return Err(mismatch(
            "block sizes",
            format!("{}/{}", sb.data_block_size, sb.hash_block_size),
            format!("{}/{}", verity.data_block_size, verity.hash_block_size),
        ));
    }
    let file = File::open(path).map_err(io(path, "open the image to verify it"))?;
    let len = file
        .metadata()
        .map_err(io(path, "read the image size"))?
        .len();
    let need = verity.hash_offset + verity.hash_area_size();
    if len < need {
        return Err(VerityError::TooShort {
            path: path.to_path_buf(),
            len,
            need,
        });
    }

    let leaves = hash_data(
        &file,
        path,
        verity.data_blocks,
        verity.data_block_size,
        &verity.salt,
    )?;
    let (levels, root) = build_tree(leaves.clone(), verity.hash_block_size, &verity.salt);

    // Read the stored tree (top level first on disk).
    let hbs = u64::from(verity.hash_block_size);
    let tree_start = verity.hash_start_block() * hbs;
    let mut stored =
        vec![0u8; (verity.hash_area_size() - (tree_start - verity.hash_offset)) as usize];
    let mut f = &file;
    f.seek(SeekFrom::Start(tree_start))
        .map_err(io(path, "seek to the hash tree"))?;
    f.read_exact(&mut stored)
        .map_err(io(path, "read the hash tree"))?;
    // Offsets of each level inside `stored`, level 0 first.
    let mut offsets = vec![0usize; levels.len()];
    let mut at = 0usize;
    for (i, level) in levels.iter().enumerate().rev() {
        offsets[i] = at;
        at += level.len();
    }

    // Level 0 first: a difference there is a bad data block (or a bad leaf hash).
    if let Some(level0) = levels.first() {
        let stored0 = &stored[offsets[0]..offsets[0] + level0.len()];
        for (block, (ours, theirs)) in leaves
            .chunks(DIGEST)
            .zip(stored0.chunks(DIGEST))
            .enumerate()
        {
            if ours != theirs {
                let start = block as u64 * u64::from(verity.data_block_size);
                return Err(VerityError::DataBlockMismatch {
                    path: path.to_path_buf(),
                    block: block as u64,
                    start,
                    end: start + u64::from(verity.data_block_size),
                });
            }
        }
    } else if root != verity.root_hash {
        // Single block: no tree, the root hash is the block's hash.
        return Err(VerityError::DataBlockMismatch {
            path: path.to_path_buf(),
            block: 0,
            start: 0,
            end: u64::from(verity.data_block_size),
        });
    }
    for (i, level) in levels.iter().enumerate() {
        let theirs = &stored[offsets[i]..offsets[i] + level.len()];
        if let Some(pos) = level
            .chunks(hbs as usize)
            .zip(theirs.chunks(hbs as usize))
            .position(|(a, b)| a != b)
        {
            return Err(VerityError::HashBlockMismatch {
                path: path.to_path_buf(),
                level: i,
                block: pos as u64,
                offset: tree_start + (offsets[i] as u64) + pos as u64 * hbs,
            });
        }
    }
    if root != verity.root_hash {
        return Err(VerityError::RootHashMismatch {
            path: path.to_path_buf(),
            expected: verity.root_hash_hex(),
            actual: hex::encode(root),
        });
    }
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn level_sizes_match_cryptsetup_layout() {
        assert_eq!(level_sizes(1, 4096), Vec::<u64>::new());
        assert_eq!(level_sizes(2, 4096), vec![1]);
        assert_eq!(level_sizes(128, 4096), vec![1]);
        assert_eq!(level_sizes(129, 4096), vec![2, 1]);
        assert_eq!(level_sizes(128 * 128 + 1, 4096), vec![129, 2, 1]);
    }

    #[test]
    fn cmdline_round_trips_and_names_the_word() {
        let v = Verity {
            root_hash: [0xab; 32],
            salt: vec![1; 32],
            data_blocks: 5000,
            data_block_size: 4096,
            hash_block_size: 4096,
            hash_offset: 5000 * 4096,
            uuid: derive_uuid(&[0xab; 32], &[1; 32]),
        };
        let word = v.to_cmdline();
        assert_eq!(Verity::from_cmdline(&word).unwrap(), v);
        let line = format!("console=ttyS0 {word} quiet");
        assert_eq!(Verity::find_in_cmdline(&line).unwrap(), Some(v.clone()));
        assert_eq!(Verity::find_in_cmdline("console=ttyS0").unwrap(), None);

        let odd = Verity {
            salt: vec![],
            data_block_size: 1024,
            uuid: derive_uuid(&[0xab; 32], &[]),
            ..v.clone()
        };
        assert_eq!(Verity::from_cmdline(&odd.to_cmdline()).unwrap(), odd);

        let e = Verity::from_cmdline("ballast.verity=zz:00:1:4096")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ballast.verity=zz:00:1:4096") && e.contains("root hash"),
            "{e}"
        );
        let e = Verity::from_cmdline(&format!("{}:00:1:100", "ab".repeat(32)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a multiple"), "{e}");
        let e = Verity::from_cmdline("ab:cd").unwrap_err().to_string();
        assert!(e.contains("2 fields"), "{e}");
    }

    #[test]
    fn table_skips_the_superblock_block() {
        let v = Verity {
            root_hash: [0x11; 32],
            salt: vec![0x22; 32],
            data_blocks: 10,
            data_block_size: 4096,
            hash_block_size: 4096,
            hash_offset: 40960,
            uuid: [0; 16],
        };
        assert_eq!(
            v.table("/dev/vda2", "/dev/vda2"),
            format!(
                "0 80 verity 1 /dev/vda2 /dev/vda2 4096 4096 10 11 sha256 {} {}",
                "11".repeat(32),
                "22".repeat(32)
            )
        );
    }

    #[test]
    fn superblock_round_trips() {
        let sb = Superblock {
            version: 1,
            hash_type: 1,
            uuid: [7; 16],
            algorithm: "sha256".into(),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: 42,
            salt: vec![9; 32],
        };
        assert_eq!(
            Superblock::decode(&sb.encode(), Path::new("x"), 0).unwrap(),
            sb
        );
    }
}
