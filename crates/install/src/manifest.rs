//! The install image's signed manifest, `install.img.zst.manifest`:
//!
//! ```text
//! line 1   {"format":1,"version":"V","board":"B","arch":"A","raw_size":N,"sha256":"HEX"}
//! line 2   ballast-ed25519-sig <key id> <128 hex digits>
//! ```
//!
//! The signature (the channel index's line format) is over the exact bytes of
//! line 1 without its newline. `raw_size` and `sha256` describe the
//! uncompressed disk image, so the writer checks the bytes it streams, not the
//! compressed file: a corrupt or swapped image is refused before its first MiB
//! (the partition table) reaches the target.
//!
//! Format 2 adds `"fills":[...]` ([`Fill`]): ranges the compressed image
//! leaves zero and the writer takes from files beside it (the live ISO's
//! copy, which carries slot A's root once). `raw_size` and `sha256` still
//! describe the whole disk image with the fills in place. Format 1 (no
//! fills) is what `ballast flash` and PXE installs read. A fill's optional
//! `"codec":"gzip"` says its file holds the bytes gzip-compressed (absent:
//! as they are).
//!
//! Format 3 (what `ballast build` writes now) adds `"chunk_size":N` and
//! `"chunks":[...]` ([`Chunks`]): the sum of each `chunk_size` piece of the
//! image from byte 0, `"zero"` or its SHA-256, with fills or without. The
//! writer checks each chunk as it streams and reads it back against the same
//! sum, so it never hashes the whole image (zeros included) a second time;
//! `sha256` stays, naming the whole image, and is what the writer reports
//! once every chunk matched. Formats 1 and 2 are still read (the writer then
//! hashes the whole image, as before): they cost nothing to keep.

use ballast_bundle::{PublicKey, Signer};
use serde::{Deserialize, Serialize};

use crate::chunks::Chunks;
use crate::write::Expected;
use crate::{Fill, InstallError};

const SIG_TAG: &str = "ballast-ed25519-sig";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub version: String,
    pub board: String,
    pub arch: String,
    /// Bytes of the uncompressed disk image.
    pub raw_size: u64,
    /// Hex SHA-256 of the uncompressed disk image.
    pub sha256: String,
    /// Ranges taken from files beside the image (format 2 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fills: Vec<Fill>,
    /// Bytes per chunk of `chunks` (format 3 only).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub chunk_size: u64,
    /// The sum of each chunk, `"zero"` or hex SHA-256 (format 3 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// The manifest format without fills, with them, and with chunk sums (with
/// or without fills).
pub const FORMAT_WHOLE: u32 = 1;
pub const FORMAT_FILLS: u32 = 2;
pub const FORMAT_CHUNKS: u32 = 3;

impl Manifest {
    /// The manifest file's text: the JSON line and its signature line.
    pub fn sign(&self, signer: &Signer) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        let sig = signer.sign(json.as_bytes());
        format!(
            "{json}\n{SIG_TAG} {} {}\n",
            signer.public().id,
            hex::encode(sig)
        )
    }

    /// Check the signature with `trusted` keys, then parse. `source_name`
    /// names the file or URL in errors.
    pub fn verify(
        text: &str,
        trusted: &[PublicKey],
        source_name: &str,
    ) -> Result<Manifest, InstallError> {
        let err = |detail: String| InstallError::Manifest {
            source_name: source_name.to_string(),
            detail,
        };
        let mut lines = text.lines();
        let (Some(json), Some(sig_line)) = (lines.next(), lines.next()) else {
            return Err(err(format!(
                "expected two lines (the JSON manifest, then `{SIG_TAG} <key id> <signature>`); is it the .manifest file `ballast build` wrote?"
            )));
        };
        let words: Vec<&str> = sig_line.split_whitespace().collect();
        let [SIG_TAG, key_id, sig_hex] = words.as_slice() else {
            return Err(err(format!(
                "line 2: expected `{SIG_TAG} <key id> <128 hex digits>`; the manifest is damaged (copy it again)"
            )));
        };
        let signature: [u8; 64] = hex::decode(sig_hex)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| err("line 2: the signature is not 128 hex digits; the manifest is damaged (copy it again)".into()))?;
        let key = trusted.iter().find(|k| k.id == *key_id).ok_or_else(|| {
            let id: String = key_id
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(32)
                .collect();
            err(format!(
                "signed by key {id}, which is not trusted here (the image was built with another key: use an image signed with a key in /usr/lib/ballast/keys/, or pass its .pub with --key)"
            ))
        })?;
        if !key.verify(json.as_bytes(), &signature) {
            return Err(err(
                "bad signature: the manifest was changed after signing, or signed by another key; refusing the image".into(),
            ));
        }
        let m: Manifest =
            serde_json::from_str(json).map_err(|e| err(format!("line 1: invalid: {e}")))?;
        let want = if !m.chunks.is_empty() || m.chunk_size != 0 {
            FORMAT_CHUNKS
        } else if m.fills.is_empty() {
            FORMAT_WHOLE
        } else {
            FORMAT_FILLS
        };
        if m.format != want {
            return Err(err(format!(
                "field `format`: {} with {} fills and {} chunk sums; this program reads format {FORMAT_WHOLE} (neither), {FORMAT_FILLS} (fills) and {FORMAT_CHUNKS} (chunk sums, with or without fills) (update it if the image is newer)",
                m.format,
                m.fills.len(),
                m.chunks.len()
            )));
        }
        Fill::check_all(&m.fills, m.raw_size).map_err(|d| err(format!("field {d}")))?;
        m.sha256_bytes()
            .map_err(|d| err(format!("field `sha256`: {d}")))?;
        m.chunk_sums().map_err(|d| err(format!("field {d}")))?;
        Ok(m)
    }

    /// The parsed chunk sums of format 3; `None` for formats 1 and 2.
    pub fn chunk_sums(&self) -> Result<Option<Chunks>, String> {
        if self.format != FORMAT_CHUNKS {
            return Ok(None);
        }
        Chunks::parse(self.chunk_size, &self.chunks, self.raw_size).map(Some)
    }

    /// What the writer checks the image against: the chunk sums (format 3)
    /// or the whole image's SHA-256 (formats 1 and 2).
    pub fn expected(&self) -> Result<Expected, String> {
        let sha256 = self.sha256_bytes()?;
        Ok(match self.chunk_sums()? {
            Some(chunks) => Expected::Chunks { sha256, chunks },
            None => Expected::Whole(sha256),
        })
    }

    /// The SHA-256 as bytes.
    pub fn sha256_bytes(&self) -> Result<[u8; 32], String> {
        hex::decode(&self.sha256)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| "not 64 hex digits".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: 1,
            version: "1.2.0".into(),
            board: "qemu-x86_64".into(),
            arch: "x86_64".into(),
            raw_size: 4 << 20,
            sha256: "ab".repeat(32),
            fills: Vec::new(),
            chunk_size: 0,
            chunks: Vec::new(),
        }
    }

    #[test]
    fn chunk_sums_need_format_3_and_match_the_size() {
        let signer = Signer::from_seed(&[7; 32]);
        let mut m = sample();
        m.chunk_size = 4 << 20;
        m.chunks = vec!["zero".into()];
        let e = Manifest::verify(&m.sign(&signer), &[signer.public()], "t").unwrap_err();
        assert!(e.to_string().contains("format"), "{e}");
        m.format = FORMAT_CHUNKS;
        let back = Manifest::verify(&m.sign(&signer), &[signer.public()], "t").unwrap();
        assert_eq!(back, m);
        assert!(matches!(back.expected(), Ok(Expected::Chunks { .. })));
        assert!(matches!(sample().expected(), Ok(Expected::Whole(_))));
        m.chunks.push("zero".into());
        let e = Manifest::verify(&m.sign(&signer), &[signer.public()], "t").unwrap_err();
        assert!(e.to_string().contains("`chunks`"), "{e}");
        // A format 1 manifest, as older builds wrote it, still reads.
        let old = r#"{"format":1,"version":"1.2.0","board":"b","arch":"x86_64","raw_size":4194304,"sha256":"abababababababababababababababababababababababababababababababab"}"#;
        let text = format!(
            "{old}\n{SIG_TAG} {} {}\n",
            signer.public().id,
            hex::encode(signer.sign(old.as_bytes()))
        );
        assert_eq!(
            Manifest::verify(&text, &[signer.public()], "t")
                .unwrap()
                .format,
            1
        );
    }

    #[test]
    fn fills_need_format_2_and_round_trip() {
        let signer = Signer::from_seed(&[7; 32]);
        let mut m = sample();
        m.fills = vec![Fill {
            offset: 1 << 20,
            length: 4096,
            file: "root.img".into(),
            file_offset: 0,
            sha256: "cd".repeat(32),
            codec: crate::fill::Codec::None,
        }];
        let e = Manifest::verify(&m.sign(&signer), &[signer.public()], "t").unwrap_err();
        assert!(e.to_string().contains("format"), "{e}");
        m.format = FORMAT_FILLS;
        let back = Manifest::verify(&m.sign(&signer), &[signer.public()], "t").unwrap();
        assert_eq!(back, m);
        m.fills[0].offset = 5 << 20;
        let e = Manifest::verify(&m.sign(&signer), &[signer.public()], "t").unwrap_err();
        assert!(e.to_string().contains("runs past"), "{e}");
    }

    #[test]
    fn signed_manifest_verifies_with_its_key_only() {
        let signer = Signer::from_seed(&[7; 32]);
        let other = Signer::from_seed(&[8; 32]);
        let text = sample().sign(&signer);
        let m = Manifest::verify(&text, &[signer.public()], "t").unwrap();
        assert_eq!(m, sample());
        let e = Manifest::verify(&text, &[other.public()], "t").unwrap_err();
        assert!(e.to_string().contains("not trusted"), "{e}");
    }

    #[test]
    fn a_changed_manifest_is_refused() {
        let signer = Signer::from_seed(&[7; 32]);
        let text = sample().sign(&signer).replace("1.2.0", "1.3.0");
        let e = Manifest::verify(&text, &[signer.public()], "t").unwrap_err();
        assert!(e.to_string().contains("bad signature"), "{e}");
        let e = Manifest::verify("junk", &[signer.public()], "t").unwrap_err();
        assert!(e.to_string().contains("two lines"), "{e}");
    }
}
