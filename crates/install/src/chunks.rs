//! Per-chunk sums of a disk image: the image cut into fixed-size chunks from
//! byte 0 (the last one shorter), each either all zeros or named by the
//! SHA-256 of its bytes. The signed manifest (format 3) lists them, so the
//! writer checks each chunk as it streams and again when it reads it back,
//! and never hashes a chunk of zeros: it checks that the chunk is zeros,
//! zeroes it on the device with `BLKZEROOUT` and reads zeros back.
//!
//! In the manifest a sum is the string `"zero"` or 64 hex digits. Parsing
//! and checking the list against the image size is here; nothing else reads
//! it.

use sha2::{Digest, Sha256};

/// The manifest's word for a chunk of zeros.
const ZERO: &str = "zero";

/// The largest chunk a manifest may ask for: the writer holds a few in
/// memory at once on a live system.
pub const MAX_CHUNK: u64 = 16 << 20;

/// What one chunk holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkSum {
    /// Only zeros.
    Zero,
    /// The SHA-256 of its bytes.
    Sha([u8; 32]),
}

impl ChunkSum {
    /// The sum of a chunk given in parts (the first chunk is the first MiB,
    /// held in memory, and the rest of the chunk).
    pub fn of(parts: &[&[u8]]) -> ChunkSum {
        if parts.iter().all(|p| is_zero(p)) {
            ChunkSum::Zero
        } else {
            ChunkSum::Sha(sha_of(parts))
        }
    }

    /// Whether the parts are what this sum names. A chunk of zeros is
    /// scanned, never hashed; a chunk of data is hashed once.
    pub fn matches(&self, parts: &[&[u8]]) -> bool {
        match self {
            ChunkSum::Zero => parts.iter().all(|p| is_zero(p)),
            ChunkSum::Sha(want) => sha_of(parts) == *want,
        }
    }

    /// How it is written in the manifest.
    pub fn to_text(&self) -> String {
        match self {
            ChunkSum::Zero => ZERO.to_string(),
            ChunkSum::Sha(h) => hex::encode(h),
        }
    }

    /// Read a manifest entry: `"zero"` or 64 hex digits.
    pub fn parse(text: &str) -> Result<ChunkSum, String> {
        if text == ZERO {
            return Ok(ChunkSum::Zero);
        }
        hex::decode(text)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(ChunkSum::Sha)
            .ok_or_else(|| format!("`{text}` is neither \"{ZERO}\" nor 64 hex digits"))
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            ChunkSum::Zero => "zeros".to_string(),
            ChunkSum::Sha(h) => format!("bytes of SHA-256 {}", hex::encode(h)),
        }
    }
}

fn sha_of(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Whether every byte is zero (eight at a time).
pub fn is_zero(buf: &[u8]) -> bool {
    let (words, rest) = buf.split_at(buf.len() - buf.len() % 8);
    words
        .chunks_exact(8)
        .all(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0)
        && rest.iter().all(|&b| b == 0)
}

/// The sums of an image of `raw_size` bytes cut into chunks of `size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunks {
    /// Bytes per chunk (a multiple of 1 MiB, at most [`MAX_CHUNK`]).
    pub size: u64,
    pub sums: Vec<ChunkSum>,
}

impl Chunks {
    /// Parse and check a manifest's `chunk_size` and `chunks` against the
    /// image size. The error names the field.
    pub fn parse(size: u64, texts: &[String], raw_size: u64) -> Result<Chunks, String> {
        if size == 0 || !size.is_multiple_of(crate::HEAD) || size > MAX_CHUNK {
            return Err(format!(
                "`chunk_size`: {size}: must be a multiple of 1 MiB, at most {MAX_CHUNK}"
            ));
        }
        let want = raw_size.div_ceil(size);
        if texts.len() as u64 != want {
            return Err(format!(
                "`chunks`: {} entries, an image of {raw_size} bytes in chunks of {size} has {want}",
                texts.len()
            ));
        }
        let sums = texts
            .iter()
            .enumerate()
            .map(|(i, t)| ChunkSum::parse(t).map_err(|e| format!("`chunks[{i}]`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Chunks { size, sums })
    }

    /// The manifest's `chunks` entries.
    pub fn to_texts(&self) -> Vec<String> {
        self.sums.iter().map(ChunkSum::to_text).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_zero_only_if_every_byte_is() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0u8; 13]));
        for at in [0, 7, 8, 12] {
            let mut b = [0u8; 13];
            b[at] = 1;
            assert!(!is_zero(&b), "a 1 at {at}");
        }
        assert_eq!(ChunkSum::of(&[&[0u8; 4096], &[0u8; 3]]), ChunkSum::Zero);
        let data = b"ballast".repeat(100);
        let sum = ChunkSum::of(&[&data]);
        assert!(sum.matches(&[&data]));
        assert!(
            sum.matches(&[&data[..300], &data[300..]]),
            "parts hash as one"
        );
        assert!(!sum.matches(&[&[0u8; 700]]));
        assert!(!ChunkSum::Zero.matches(&[&[0u8; 10], &data]));
    }

    #[test]
    fn sums_round_trip_as_text_and_bad_lists_are_named() {
        let data = vec![3u8; 100];
        let list = Chunks {
            size: 1 << 20,
            sums: vec![ChunkSum::of(&[&data]), ChunkSum::Zero],
        };
        let texts = list.to_texts();
        assert_eq!(texts[1], "zero");
        assert_eq!(Chunks::parse(1 << 20, &texts, (1 << 20) + 1).unwrap(), list);
        let e = Chunks::parse(1 << 20, &texts, 3 << 20).unwrap_err();
        assert!(e.contains("has 3"), "{e}");
        let e = Chunks::parse(4096, &texts, 8192).unwrap_err();
        assert!(e.contains("chunk_size"), "{e}");
        let e = Chunks::parse(64 << 20, &texts, 100 << 20).unwrap_err();
        assert!(e.contains("chunk_size"), "{e}");
        let e = Chunks::parse(1 << 20, &["zero".into(), "abc".into()], 2 << 20).unwrap_err();
        assert!(e.contains("chunks[1]"), "{e}");
    }
}
