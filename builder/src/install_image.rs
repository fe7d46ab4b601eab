//! Build step 7b: the install image. The disk image, zstd-compressed
//! (`install.img.zst`, one frame recording its size), and its signed manifest
//! (`install.img.zst.manifest`: version, board, arch, raw size and SHA-256 of
//! the raw disk image, and the sum of each 4 MiB chunk of it, `"zero"` for
//! chunks of zeros: format 3, owned by `ballast-install`), signed with the key
//! that signs the update bundle. The ISO carries a copy that leaves slot A's
//! root (and the boot files it holds elsewhere) to the medium ([`write_filled`]); `osctl install`, the
//! unattended install and `ballast flash` write them.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ballast_install::chunks::{ChunkSum, Chunks};
use ballast_install::{manifest, Codec, Fill, Manifest, IMAGE_FILE, MANIFEST_FILE};
use sha2::{Digest, Sha256};
use std::os::unix::fs::FileExt;

/// zstd level: 3 compresses a disk image (mostly squashfs, already
/// compressed, and zeros) about as well as 19 at a fraction of the time.
const LEVEL: i32 = 3;

/// Write both files into `work`; they are moved into OUT with the others.
pub fn write(
    disk: &Path,
    version: &str,
    board: &str,
    arch: &str,
    signer: &ballast_bundle::Signer,
    work: &Path,
) -> Result<()> {
    let out = work.join(IMAGE_FILE);
    let (raw_size, sums) = compress(disk, &out, &[], true)?;
    let (sha256, chunks) = sums.context("the install image's sums were not taken")?;
    let manifest = Manifest {
        format: manifest::FORMAT_CHUNKS,
        version: version.to_owned(),
        board: board.to_owned(),
        arch: arch.to_owned(),
        raw_size,
        sha256,
        fills: Vec::new(),
        chunk_size: chunks.size,
        chunks: chunks.to_texts(),
    };
    let m = work.join(MANIFEST_FILE);
    std::fs::write(&m, manifest.sign(signer))
        .with_context(|| format!("writing {}", m.display()))?;
    Ok(())
}

/// A file of the live ISO's tree, beside the install image, whose bytes (all
/// of it, or the `needle` found in it) the disk image also holds.
pub struct MediumFile<'a> {
    /// Its name in the install image's directory on the medium.
    pub name: &'a str,
    /// Where it is now (the ISO tree being built).
    pub path: &'a Path,
    /// The bytes to look for: `None` for the whole file (the root image), or
    /// a file the FAT image `path` holds (the kernel, the initramfs).
    pub needle: Option<&'a [u8]>,
    /// `path` is a gzip stream whose content is `needle` (the arm64 ISO's
    /// `vmlinuz.gz`): the fill says [`Codec::Gzip`] and the installer
    /// decompresses it.
    pub gzip: bool,
}

/// The live ISO's install image in `dir`: the same disk image and signed
/// manifest as [`write`], but every range that a [`MediumFile`] holds too is
/// left zero (a zstd stream compresses it to nothing) and listed as a fill
/// (`ballast_install::fill`): the ISO then carries slot A's root once.
/// Returns the fills' total bytes.
pub fn write_filled(
    disk: &Path,
    manifest_of_whole: &Path,
    medium: &[MediumFile<'_>],
    signer: &ballast_bundle::Signer,
    dir: &Path,
) -> Result<u64> {
    let text = std::fs::read_to_string(manifest_of_whole)
        .with_context(|| format!("reading {}", manifest_of_whole.display()))?;
    let whole = Manifest::verify(
        &text,
        &[signer.public()],
        &manifest_of_whole.display().to_string(),
    )?;
    let mut fills = Vec::new();
    for m in medium {
        let (file_offset, bytes) = match m.needle {
            Some(needle) if m.gzip => {
                gunzips_to(m.path, needle)?;
                (0, needle.to_vec())
            }
            None if m.gzip => bail!(
                "{}: a gzip medium file needs the bytes it decompresses to",
                m.path.display()
            ),
            None => (
                0,
                std::fs::read(m.path).with_context(|| format!("reading {}", m.path.display()))?,
            ),
            Some(needle) => match find_aligned(m.path, needle)?.first() {
                Some(at) => (*at, needle.to_vec()),
                None => continue, // not stored contiguously: carried in the image
            },
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        for offset in find_aligned(disk, &bytes)? {
            fills.push(Fill {
                offset,
                length: bytes.len() as u64,
                file: m.name.to_owned(),
                file_offset,
                sha256: sha256.clone(),
                codec: if m.gzip { Codec::Gzip } else { Codec::None },
            });
        }
    }
    fills.sort_by_key(|f| f.offset);
    // Overlaps cannot happen for distinct files found at aligned offsets
    // unless one holds the other; keep the first.
    let mut kept: Vec<Fill> = Vec::new();
    for f in fills {
        if kept.last().is_none_or(|k| k.offset + k.length <= f.offset) {
            kept.push(f);
        }
    }
    let zero: Vec<(u64, u64)> = kept.iter().map(|f| (f.offset, f.length)).collect();
    let out = dir.join(IMAGE_FILE);
    // The sums are the whole image's, taken by `write` from the same scratch
    // file moments before; only its size is checked again here.
    let (raw_size, _) = compress(disk, &out, &zero, false)?;
    if raw_size != whole.raw_size {
        bail!(
            "{} changed while the ISO's install image was made from it",
            disk.display()
        );
    }
    let total = kept.iter().map(|f| f.length).sum();
    // The chunk sums are of the whole disk image, fills in place: the
    // writer checks the medium's bytes with them too.
    let manifest = Manifest {
        fills: kept,
        ..whole
    };
    let m = dir.join(MANIFEST_FILE);
    std::fs::write(&m, manifest.sign(signer))
        .with_context(|| format!("writing {}", m.display()))?;
    Ok(total)
}

/// Check that the gzip file `path` decompresses to `want`: a fill must never
/// name bytes the medium does not give.
fn gunzips_to(path: &Path, want: &[u8]) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut got = Vec::with_capacity(want.len());
    flate2::read::GzDecoder::new(BufReader::new(file))
        .read_to_end(&mut got)
        .with_context(|| format!("decompressing {}", path.display()))?;
    if got != want {
        bail!(
            "{} does not decompress to the kernel the disk image holds",
            path.display()
        );
    }
    Ok(())
}

/// Offsets (multiples of 512) at which `path` holds `needle`. Holes of a
/// sparse `path` are skipped: a match starts with the needle's first bytes,
/// which are data unless they are zeros (then every offset is looked at).
fn find_aligned(path: &Path, needle: &[u8]) -> Result<Vec<u64>> {
    const ALIGN: usize = 512;
    const PREFIX: usize = 64;
    if needle.len() < PREFIX {
        return Ok(Vec::new());
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    let ranges = if needle[..PREFIX].iter().all(|&b| b == 0) {
        vec![(0, len)]
    } else {
        data_ranges(&file, len)
            .with_context(|| format!("finding the data of {}", path.display()))?
    };
    let mut found = Vec::new();
    let mut buf = vec![0u8; 16 << 20];
    let mut check = vec![0u8; needle.len()];
    // Where the next look may start: past the last match.
    let mut next = 0u64;
    for (start, end) in ranges {
        let mut base = start.max(next).next_multiple_of(ALIGN as u64);
        while base < end {
            let n = ((end - base) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], base)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut i = (next.max(base) - base) as usize;
            while i + PREFIX <= n {
                let at = base + i as u64;
                if buf[i..i + PREFIX] == needle[..PREFIX] && at + needle.len() as u64 <= len {
                    file.read_exact_at(&mut check, at)
                        .with_context(|| format!("reading {}", path.display()))?;
                    if check == needle {
                        found.push(at);
                        i += needle.len().next_multiple_of(ALIGN);
                        next = base + i as u64;
                        continue;
                    }
                }
                i += ALIGN;
            }
            base += n as u64;
        }
    }
    Ok(found)
}

/// zstd-compress `disk` to `out` (one frame recording its size) with the
/// `zero` ranges (offset, length; sorted) replaced by zeros. With `sums`,
/// returns the hex SHA-256 and the chunk sums of the disk image as it is
/// (zeros not applied); without, only its raw size is read.
///
/// The disk image is sparse (slot B and the state partition's free space are
/// holes): a chunk that lies in a hole is known to be zeros and is not read.
fn compress(
    disk: &Path,
    out: &Path,
    zero: &[(u64, u64)],
    sums: bool,
) -> Result<(u64, Option<(String, Chunks)>)> {
    let input = File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let raw_size = input
        .metadata()
        .with_context(|| format!("reading {}", disk.display()))?
        .len();
    let data = data_ranges(&input, raw_size)
        .with_context(|| format!("finding the data of {}", disk.display()))?;
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut enc = zstd::stream::Encoder::new(file, LEVEL)?;
    enc.set_pledged_src_size(Some(raw_size))?;
    enc.include_contentsize(true)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    enc.multithread(threads)?;
    let mut hasher = Sha256::new();
    let chunk = ballast_install::write::CHUNK;
    let mut chunk_sums = Vec::new();
    let mut buf = vec![0u8; chunk as usize];
    let zeros = vec![0u8; chunk as usize];
    let mut pos = 0u64;
    while pos < raw_size {
        let n = (raw_size - pos).min(chunk) as usize;
        let end = pos + n as u64;
        if !overlaps(&data, pos, end) {
            if sums {
                hasher.update(&zeros[..n]);
                chunk_sums.push(ChunkSum::Zero);
            }
            enc.write_all(&zeros[..n])
                .with_context(|| format!("writing {}", out.display()))?;
            pos = end;
            continue;
        }
        input.read_exact_at(&mut buf[..n], pos).with_context(|| {
            format!(
                "reading {}: it changed while it was compressed",
                disk.display()
            )
        })?;
        if sums {
            hasher.update(&buf[..n]);
            chunk_sums.push(ChunkSum::of(&[&buf[..n]]));
        }
        for &(zo, zl) in zero {
            let (a, b) = (zo.max(pos), (zo + zl).min(end));
            if a < b {
                buf[(a - pos) as usize..(b - pos) as usize].fill(0);
            }
        }
        enc.write_all(&buf[..n])
            .with_context(|| format!("writing {}", out.display()))?;
        pos = end;
    }
    enc.finish()
        .and_then(|f| f.sync_all())
        .with_context(|| format!("finishing {}", out.display()))?;
    let sums = sums.then(|| {
        (
            hex::encode(hasher.finalize()),
            Chunks {
                size: chunk,
                sums: chunk_sums,
            },
        )
    });
    Ok((raw_size, sums))
}

/// The (start, end) byte ranges of `file` (of `len` bytes) that hold data,
/// in order: everything but its holes (`SEEK_DATA`, `SEEK_HOLE`). A file
/// system that does not report holes gives one range, the whole file.
fn data_ranges(file: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let seek = |offset: u64, whence: i32| -> std::io::Result<Option<u64>> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: lseek on a descriptor `file` owns; it reads no memory.
        let at = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
        if at >= 0 {
            return Ok(Some(at as u64));
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            // No data at or after `offset`.
            Some(libc::ENXIO) => Ok(None),
            _ => Err(err),
        }
    };
    let mut ranges = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let start = match seek(pos, libc::SEEK_DATA) {
            Ok(Some(at)) => at,
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(vec![(0, len)]),
            Err(e) => return Err(e),
        };
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        if end <= start {
            break;
        }
        ranges.push((start, end));
        pos = end;
    }
    Ok(ranges)
}

/// Whether [start, end) meets any of the sorted `ranges`.
fn overlaps(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    let i = ranges.partition_point(|&(_, e)| e <= start);
    ranges.get(i).is_some_and(|&(s, _)| s < end)
}

/// (scratch file, name in OUT) of both files.
pub fn staged(work: &Path) -> Vec<(PathBuf, &'static str)> {
    vec![
        (work.join(IMAGE_FILE), IMAGE_FILE),
        (work.join(MANIFEST_FILE), MANIFEST_FILE),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_lists_each_chunk_and_zero_chunks_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.img");
        let mut raw = vec![0u8; (9 << 20) + 512];
        raw[..4096].fill(1);
        raw[9 << 20..].fill(2);
        std::fs::write(&disk, &raw).unwrap();
        let signer = ballast_bundle::Signer::from_seed(&[3; 32]);
        write(&disk, "1.0.0", "qemu-x86_64", "x86_64", &signer, dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        let m = Manifest::verify(&text, &[signer.public()], "t").unwrap();
        assert_eq!(m.format, manifest::FORMAT_CHUNKS);
        assert_eq!(m.raw_size, raw.len() as u64);
        let sums = m.chunk_sums().unwrap().unwrap().sums;
        assert_eq!(sums.len(), 3);
        assert!(sums[0].matches(&[&raw[..4 << 20]]));
        assert_eq!(sums[1], ChunkSum::Zero);
        assert!(sums[2].matches(&[&raw[8 << 20..]]));
        assert_eq!(m.sha256, hex::encode(Sha256::digest(&raw)));
    }

    #[test]
    fn a_file_is_found_at_aligned_offsets_only() {
        let dir = tempfile::tempdir().unwrap();
        let needle: Vec<u8> = (0..3000u32).map(|i| (i * 31 % 253) as u8 + 1).collect();
        let mut hay = vec![0u8; 64 << 10];
        hay[4096..4096 + 3000].copy_from_slice(&needle);
        hay[20_000..23_000].copy_from_slice(&needle); // not 512-aligned
        hay[40_960..43_960].copy_from_slice(&needle);
        let path = dir.path().join("disk.img");
        std::fs::write(&path, &hay).unwrap();
        assert_eq!(find_aligned(&path, &needle).unwrap(), vec![4096, 40_960]);
        assert!(find_aligned(&path, &[1u8; 10]).unwrap().is_empty());
    }

    /// A disk image with holes (as the disk writer leaves slot B): the same
    /// bytes written densely and sparsely give the same manifest and the
    /// same install image, and a file after a hole is still found.
    #[test]
    fn holes_are_read_as_the_zeros_they_are() {
        use std::io::{Seek, SeekFrom};
        let dir = tempfile::tempdir().unwrap();
        let needle: Vec<u8> = (0..9000u32).map(|i| (i * 7 % 251) as u8 + 1).collect();
        let size = 21u64 << 20;
        let at = [
            (0u64, &needle[..4096]),
            (13 << 20, &needle[..]),
            ((13 << 20) + 12288, &needle[..]),
        ];
        let mut dense = vec![0u8; size as usize];
        for (offset, bytes) in at {
            dense[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
        }
        let dense_path = dir.path().join("dense.img");
        std::fs::write(&dense_path, &dense).unwrap();
        let sparse_path = dir.path().join("sparse.img");
        let mut sparse = File::create(&sparse_path).unwrap();
        sparse.set_len(size).unwrap();
        for (offset, bytes) in at {
            sparse.seek(SeekFrom::Start(offset)).unwrap();
            sparse.write_all(bytes).unwrap();
        }
        drop(sparse);
        let ranges = data_ranges(&File::open(&sparse_path).unwrap(), size).unwrap();
        assert!(ranges.len() >= 2, "no holes reported: {ranges:?}");
        assert!(!overlaps(&ranges, 4 << 20, 8 << 20));

        let signer = ballast_bundle::Signer::from_seed(&[3; 32]);
        let made = |disk: &Path, name: &str| {
            let out = dir.path().join(name);
            std::fs::create_dir(&out).unwrap();
            write(disk, "1.0.0", "qemu-arm64", "arm64", &signer, &out).unwrap();
            let text = std::fs::read_to_string(out.join(MANIFEST_FILE)).unwrap();
            let m = Manifest::verify(&text, &[signer.public()], "t").unwrap();
            let image = zstd::decode_all(File::open(out.join(IMAGE_FILE)).unwrap()).unwrap();
            (m.sha256, m.chunks, image)
        };
        let (sha_d, chunks_d, image_d) = made(&dense_path, "d");
        let (sha_s, chunks_s, image_s) = made(&sparse_path, "s");
        assert_eq!(sha_s, sha_d);
        assert_eq!(sha_d, hex::encode(Sha256::digest(&dense)));
        assert_eq!(chunks_s, chunks_d);
        assert_eq!(chunks_d[1], "zero");
        assert!(image_s == dense && image_d == dense);
        assert_eq!(
            find_aligned(&sparse_path, &needle).unwrap(),
            vec![13 << 20, (13 << 20) + 12288]
        );
    }
}
