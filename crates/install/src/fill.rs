//! Fills: ranges of the disk image that the install image leaves zero and the
//! medium already carries in another file (the live ISO's root image, its
//! kernel and initramfs). The ISO then carries slot A's root once instead of
//! twice. The signed manifest lists each fill (disk offset, length, the medium
//! file and the offset in it, the SHA-256 of the bytes); [`FillReader`] puts
//! those bytes in place while the image streams, so the writer, the full-disk
//! SHA-256 and the read-back see the whole disk image as if it had been
//! carried whole.
//!
//! A fill's file may be gzip-compressed ([`Codec::Gzip`]: the arm64 ISO
//! carries its kernel as `vmlinuz.gz`, which GRUB boots, and the disk holds it
//! raw): the range is then the gunzip of the stream at `file_offset`, and the
//! SHA-256 is still of the bytes written.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::InstallError;

/// One range of the disk image taken from a file beside the install image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Fill {
    /// Byte offset in the raw disk image.
    pub offset: u64,
    pub length: u64,
    /// The file that holds the bytes, relative to the install image's
    /// directory (a plain name: no `/`, no `..`).
    pub file: String,
    /// Byte offset of the range in `file`.
    pub file_offset: u64,
    /// Hex SHA-256 of the `length` bytes.
    pub sha256: String,
    /// How `file`'s bytes from `file_offset` give the range; absent means
    /// [`Codec::None`] (manifests written before codecs existed).
    #[serde(default, skip_serializing_if = "Codec::is_none")]
    pub codec: Codec,
}

/// How a fill's file holds its bytes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// The bytes themselves, at `file_offset`.
    #[default]
    None,
    /// A gzip stream starting at `file_offset` whose first `length`
    /// decompressed bytes are the range.
    Gzip,
}

impl Codec {
    fn is_none(&self) -> bool {
        *self == Codec::None
    }
}

impl Fill {
    /// Check the fields a manifest gave (sorted, inside the image, plain
    /// file names, hashes of 64 hex digits). `what` names the manifest.
    pub fn check_all(fills: &[Fill], raw_size: u64) -> Result<(), String> {
        let mut end = 0u64;
        for (i, f) in fills.iter().enumerate() {
            let at = format!("fills[{i}]");
            let plain = matches!(
                Path::new(&f.file)
                    .components()
                    .collect::<Vec<_>>()
                    .as_slice(),
                [Component::Normal(_)]
            );
            if !plain {
                return Err(format!(
                    "{at}.file `{}`: must be a file name beside the image",
                    f.file
                ));
            }
            let stop = f.offset.checked_add(f.length).filter(|s| *s <= raw_size);
            let Some(stop) = stop else {
                return Err(format!(
                    "{at}: offset {} + length {} runs past the image's {raw_size} bytes",
                    f.offset, f.length
                ));
            };
            if f.offset < end || f.length == 0 {
                return Err(format!(
                    "{at}: fills must be non-empty, sorted and must not overlap"
                ));
            }
            if hex::decode(&f.sha256).map(|b| b.len()) != Ok(32) {
                return Err(format!("{at}.sha256: not 64 hex digits"));
            }
            end = stop;
        }
        Ok(())
    }
}

/// The raw image stream with the fills put in place: outside a fill it
/// passes the stream's bytes; inside one it reads and discards the stream's
/// bytes (zeros) and yields the medium file's, hashing them, and fails at the
/// end of the fill if they are not the bytes the manifest names. With a
/// format 3 manifest the writer checks every chunk, fills included, against
/// its sum: the fill's own hash would hash the root a second time, so it is
/// skipped ([`FillReader::new`]'s `check`).
pub struct FillReader {
    inner: Box<dyn Read + Send>,
    fills: Vec<(Fill, File)>,
    /// Index of the next fill not yet finished.
    next: usize,
    pos: u64,
    hasher: Sha256,
    scratch: Vec<u8>,
    /// The decoder of the current fill when its codec is gzip.
    gunzip: Option<flate2::read::GzDecoder<BufReader<File>>>,
    /// Hash each fill and compare with its `sha256`.
    check: bool,
}

impl FillReader {
    /// Open every fill's file in `dir`. `image` names the image in errors.
    /// `check`: hash each fill against its `sha256` (false only when the
    /// writer checks every chunk of the image against signed sums).
    pub fn new(
        inner: Box<dyn Read + Send>,
        fills: &[Fill],
        dir: &Path,
        image: &str,
        check: bool,
    ) -> Result<FillReader, InstallError> {
        let mut opened = Vec::with_capacity(fills.len());
        for f in fills {
            let path = dir.join(&f.file);
            let file = File::open(&path).map_err(|e| InstallError::Image {
                what: image.to_string(),
                detail: format!(
                    "its manifest takes {} bytes from {}, which cannot be opened ({e}): this install image is the live ISO's and is written only from the ISO's medium; elsewhere use the whole {} `ballast build` wrote",
                    f.length,
                    path.display(),
                    crate::IMAGE_FILE
                ),
            })?;
            opened.push((f.clone(), file));
        }
        Ok(FillReader {
            inner,
            fills: opened,
            next: 0,
            pos: 0,
            hasher: Sha256::new(),
            scratch: Vec::new(),
            gunzip: None,
            check,
        })
    }
}

impl Read for FillReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let Some((fill, file)) = self.fills.get(self.next) else {
            let n = self.inner.read(buf)?;
            self.pos += n as u64;
            return Ok(n);
        };
        if self.pos < fill.offset {
            // Before the next fill: the stream's bytes, up to the fill.
            let room = (fill.offset - self.pos).min(buf.len() as u64) as usize;
            let n = self.inner.read(&mut buf[..room])?;
            self.pos += n as u64;
            return Ok(n);
        }
        // Inside the fill: consume as many stream bytes as we yield.
        let left = fill.offset + fill.length - self.pos;
        let want = left.min(buf.len() as u64) as usize;
        self.scratch.resize(want, 0);
        let n = self.inner.read(&mut self.scratch[..want])?;
        if n == 0 {
            return Ok(0); // the writer reports the short image
        }
        match fill.codec {
            Codec::None => {
                let in_file = fill.file_offset + (self.pos - fill.offset);
                file.read_exact_at(&mut buf[..n], in_file).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "reading {} bytes at {in_file} of the medium's {}: {e}",
                            n, fill.file
                        ),
                    )
                })?;
            }
            Codec::Gzip => {
                let done = self.pos - fill.offset;
                let decoder = match &mut self.gunzip {
                    Some(d) => d,
                    None => {
                        let mut f = file.try_clone()?;
                        f.seek(SeekFrom::Start(fill.file_offset))?;
                        self.gunzip
                            .insert(flate2::read::GzDecoder::new(BufReader::new(f)))
                    }
                };
                decoder.read_exact(&mut buf[..n]).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "decompressing bytes {done}..+{n} of the gzip stream at {} of the medium's {}: {e} (the medium is damaged or not this image's: write the ISO again)",
                            fill.file_offset, fill.file
                        ),
                    )
                })?;
            }
        }
        if self.check {
            self.hasher.update(&buf[..n]);
        }
        self.pos += n as u64;
        if self.pos == fill.offset + fill.length {
            let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
            if self.check && got != fill.sha256 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the medium's {} at {}..+{} has SHA-256 {got}, the signed manifest says {}: the medium is damaged or not this image's (write the ISO again)",
                        fill.file, fill.file_offset, fill.length, fill.sha256
                    ),
                ));
            }
            self.next += 1;
            self.gunzip = None;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(offset: u64, length: u64, file: &str, file_offset: u64, bytes: &[u8]) -> Fill {
        Fill {
            offset,
            length,
            file: file.into(),
            file_offset,
            sha256: hex::encode(Sha256::digest(bytes)),
            codec: Codec::None,
        }
    }

    fn read_all(mut r: impl Read, step: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn fills_put_the_medium_bytes_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let medium: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.path().join("root.img"), &medium).unwrap();
        let whole: Vec<u8> = (0..10_000u32).map(|i| (i % 13) as u8 + 1).collect();
        let mut want = whole.clone();
        want[100..1100].copy_from_slice(&medium[200..1200]);
        want[3000..7000].copy_from_slice(&medium[1000..5000]);
        let mut zeroed = whole.clone();
        zeroed[100..1100].fill(0);
        zeroed[3000..7000].fill(0);
        let fills = vec![
            fill(100, 1000, "root.img", 200, &medium[200..1200]),
            fill(3000, 4000, "root.img", 1000, &medium[1000..5000]),
        ];
        Fill::check_all(&fills, 10_000).unwrap();
        for step in [1, 7, 512, 4096, 1 << 20] {
            let r = FillReader::new(
                Box::new(io::Cursor::new(zeroed.clone())),
                &fills,
                dir.path(),
                "t",
                true,
            )
            .unwrap();
            assert_eq!(read_all(r, step).unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn a_gzip_fill_writes_the_decompressed_bytes() {
        use flate2::{write::GzEncoder, Compression};
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let kernel: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 241) as u8).collect();
        let mut gz = vec![7u8; 1000]; // the stream need not start the file
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(&kernel).unwrap();
        gz.extend(enc.finish().unwrap());
        std::fs::write(dir.path().join("vmlinuz.gz"), &gz).unwrap();
        let mut want = vec![5u8; 400_000];
        want[4096..4096 + kernel.len()].copy_from_slice(&kernel);
        let mut zeroed = want.clone();
        zeroed[4096..4096 + kernel.len()].fill(0);
        let mut f = fill(4096, kernel.len() as u64, "vmlinuz.gz", 1000, &kernel);
        f.codec = Codec::Gzip;
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains(r#""codec":"gzip""#), "{json}");
        let plain = serde_json::to_string(&fill(0, 1, "a", 0, &[])).unwrap();
        assert!(!plain.contains("codec"), "{plain}");
        for step in [1000, 65_536, 1 << 20] {
            let r = FillReader::new(
                Box::new(io::Cursor::new(zeroed.clone())),
                std::slice::from_ref(&f),
                dir.path(),
                "t",
                true,
            )
            .unwrap();
            assert!(read_all(r, step).unwrap() == want, "step {step}");
        }
        // A stream shorter than the fill is an error naming the file.
        f.length += 10;
        let mut longer = zeroed.clone();
        longer.extend([0u8; 10]);
        let r = FillReader::new(
            Box::new(io::Cursor::new(longer)),
            &[f],
            dir.path(),
            "t",
            true,
        )
        .unwrap();
        let e = read_all(r, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("vmlinuz.gz"), "{e}");
    }

    #[test]
    fn a_medium_file_with_other_bytes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.img"), vec![9u8; 100]).unwrap();
        let fills = vec![fill(10, 50, "root.img", 0, &[8u8; 50])];
        let r = FillReader::new(
            Box::new(io::Cursor::new(vec![0u8; 100])),
            &fills,
            dir.path(),
            "t",
            true,
        )
        .unwrap();
        let e = read_all(r, 4096).unwrap_err();
        assert!(e.to_string().contains("not this image's"), "{e}");
        // Unchecked (format 3): the bytes pass; the writer's chunk sums catch them.
        let r = FillReader::new(
            Box::new(io::Cursor::new(vec![0u8; 100])),
            &fills,
            dir.path(),
            "t",
            false,
        )
        .unwrap();
        assert_eq!(read_all(r, 4096).unwrap()[10..60], [9u8; 50]);
        let e = FillReader::new(
            Box::new(io::empty()),
            &[fill(0, 1, "gone.img", 0, &[0])],
            dir.path(),
            "t",
            true,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("gone.img"), "{e}");
    }

    #[test]
    fn bad_fill_fields_are_named() {
        let ok = fill(0, 10, "root.img", 0, &[]);
        let mut up = ok.clone();
        up.file = "../etc/passwd".into();
        assert!(Fill::check_all(&[up], 100).unwrap_err().contains("file"));
        assert!(Fill::check_all(std::slice::from_ref(&ok), 5)
            .unwrap_err()
            .contains("runs past"));
        assert!(Fill::check_all(&[ok.clone(), ok.clone()], 100)
            .unwrap_err()
            .contains("overlap"));
    }
}
