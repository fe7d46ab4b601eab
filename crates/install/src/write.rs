//! The write order, so that a failed or interrupted install leaves the target
//! without a partition table (unbootable), never half-written and bootable:
//!
//! 1. read the image's first MiB into memory and check it holds a partition
//!    table whose partitions fit in the image (else: not a disk image);
//! 2. clear the old tables: zero the target's first MiB (MBR, primary GPT)
//!    and last MiB (backup GPT), fsync;
//! 3. stream the rest of the image to the target from 1 MiB on, chunk by
//!    chunk; each chunk is checked before it is written: against its signed
//!    sum (manifest format 3), or, for older manifests and unsigned images,
//!    its sum is taken and the whole image's SHA-256 is compared with the
//!    manifest's when the stream ends; it must end exactly at `raw_size`;
//!    fsync;
//! 4. drop the target's cached pages and read everything back (with
//!    `O_DIRECT` when [`Options::direct_read_back`] asks and the device takes
//!    it, so the bytes come from the device, not the cache): each chunk
//!    the device returns must match its sum (zeros where the image held
//!    only zeros, checked by scanning, not hashing);
//! 5. write the first-boot config files into the boot partition (read
//!    through the image's table in memory), fsync;
//! 6. write the first MiB last, fsync, read it back and compare;
//! 7. ask the kernel to re-read the partition table.
//!
//! Decompressing, checking and writing run on three threads, so the device
//! is kept busy while the next chunks are decompressed and hashed.
//!
//! Most of a fresh disk image is zeros (the empty B slot, the free space of
//! the others). A chunk of zeros is written with `BLKZEROOUT`, which a device
//! that can zero ranges (virtio, NVMe, many SSDs) does without moving the
//! bytes and any other has the kernel write as zeros; it is then read back
//! and checked as zeros, not hashed. With the signed per-chunk sums no
//! byte is hashed twice on the way in, and zeros never are.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::bootconfig::{self, BootConfig};
use crate::chunks::{ChunkSum, Chunks};
use crate::direct::{self, AlignedBuf};
use crate::{Image, InstallError, HEAD};

/// Bytes per chunk when the manifest gives no chunk sums (and what
/// `ballast build` writes them for): large enough that syscalls do not
/// matter.
pub const CHUNK: u64 = 4 << 20;

/// What the image is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// No signed manifest (`ballast flash` of a plain file): the writer
    /// hashes the whole image and reports it; the read-back checks each
    /// chunk against the sum taken while streaming.
    Unsigned,
    /// Manifest formats 1 and 2: the whole image's SHA-256, compared when
    /// the stream ends (before the table is written).
    Whole([u8; 32]),
    /// Manifest format 3: each chunk is checked against its signed sum
    /// before it is written and again when read back; `sha256` (the whole
    /// image's, from the same manifest) is what the report names.
    Chunks { sha256: [u8; 32], chunks: Chunks },
}

/// `_IO(0x12, 127)`: zero a byte range of a block device (`u64[2]`: start, length).
const BLKZEROOUT: u32 = 0x127f;
/// `_IO(0x12, 97)`: write back and drop the block device's buffer cache.
const BLKFLSBUF: u32 = 0x1261;
/// `_IO(0x12, 95)`: re-read the partition table.
const BLKRRPART: u32 = 0x125f;

/// What the installer is doing, for progress lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Zeroing the old partition tables.
    Clear,
    /// Streaming the image (from 1 MiB on).
    Write,
    /// Reading it back.
    Verify,
    /// First-boot config onto the boot partition.
    Config,
    /// The first MiB (the partition table), last.
    Table,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Clear => "clear",
            Phase::Write => "write",
            Phase::Verify => "verify",
            Phase::Config => "config",
            Phase::Table => "table",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How [`install_with`] works where front ends differ. [`install`] takes the
/// defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Read back with `O_DIRECT` ([`crate::direct`]), from the device and not
    /// the page cache, where the device takes it; else (and by default)
    /// through the cache after dropping it.
    pub direct_read_back: bool,
    /// With [`Expected::Unsigned`], skip the SHA-256 of the whole image: the
    /// write and the read-back are still checked chunk by chunk against the
    /// sums taken from the image's own bytes, but the report names no
    /// SHA-256 (an empty `sha256`). Hashing every byte, zeros included, is
    /// a large share of the CPU that writing a mostly empty image takes.
    pub skip_whole_sha256: bool,
}

/// A verified install.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Bytes of the raw image written and verified.
    pub bytes: u64,
    /// Hex SHA-256 of the raw image: taken while streaming, or, with signed
    /// chunk sums, the manifest's (every chunk written and read back
    /// matched the sums signed with it); empty when an unsigned image was
    /// written with [`Options::skip_whole_sha256`].
    pub sha256: String,
    /// Seconds spent writing (clear and stream, with fsync) and verifying.
    pub write_seconds: f64,
    pub verify_seconds: f64,
    /// Config files placed on the boot partition.
    pub config_files: Vec<String>,
    /// Whether the read-back used `O_DIRECT` (see [`Options`]).
    pub read_back_direct: bool,
}

/// Write `image` to `dev` (opened read-write; a block device, or a file in
/// tests), verify, place `config`. `expected`: what a signed manifest says
/// ([`crate::Manifest::expected`]). The target checks
/// ([`crate::Target::check`]) come first, by the caller.
pub fn install(
    image: &mut Image,
    dev: &File,
    dev_path: &Path,
    expected: &Expected,
    config: &BootConfig,
    progress: &mut dyn FnMut(Phase, u64, u64),
) -> Result<Report, InstallError> {
    install_with(
        image,
        dev,
        dev_path,
        expected,
        config,
        &Options::default(),
        progress,
    )
}

/// [`install`], with [`Options`].
pub fn install_with(
    image: &mut Image,
    dev: &File,
    dev_path: &Path,
    expected: &Expected,
    config: &BootConfig,
    options: &Options,
    progress: &mut dyn FnMut(Phase, u64, u64),
) -> Result<Report, InstallError> {
    let raw_size = image.raw_size;
    let name = image.name.clone();
    let image_err = |detail: String| InstallError::Image {
        what: name.clone(),
        detail,
    };
    let dev_size = (&*dev)
        .seek(SeekFrom::End(0))
        .map_err(InstallError::io("finding the size of", dev_path))?;
    if dev_size < raw_size {
        return Err(InstallError::refused(
            dev_path,
            format!("too small: {dev_size} bytes, the image needs {raw_size}"),
        ));
    }
    if raw_size <= HEAD {
        return Err(image_err(format!(
            "{raw_size} bytes is too small for a disk image (more than 1 MiB)"
        )));
    }

    // 1. The first MiB, kept in memory until the rest is verified.
    let mut head = vec![0u8; HEAD as usize];
    read_full(image.reader(), &mut head)
        .map_err(|e| image_err(format!("reading: {e}")))
        .and_then(|n| {
            if n < head.len() {
                Err(image_err(format!(
                    "it ends after {n} bytes, before its first MiB"
                )))
            } else {
                Ok(())
            }
        })?;
    let table = bootconfig::table_of(&head, raw_size, &name)?;
    let chunk = match expected {
        Expected::Chunks { chunks, .. } => chunks.size,
        Expected::Whole(_) | Expected::Unsigned => CHUNK,
    };
    if let Expected::Chunks { chunks, .. } = expected {
        if chunks.sums.len() as u64 != raw_size.div_ceil(chunk) || chunk < HEAD {
            return Err(image_err(format!(
                "its manifest lists {} chunk sums of {chunk} bytes for {raw_size} bytes",
                chunks.sums.len()
            )));
        }
    }

    // 2. Clear the old tables.
    let started = Instant::now();
    progress(Phase::Clear, 0, 2 * HEAD);
    let zeros = vec![0u8; HEAD as usize];
    dev.write_all_at(&zeros, 0).map_err(InstallError::io(
        "clearing the partition table of",
        dev_path,
    ))?;
    if dev_size >= 2 * HEAD {
        dev.write_all_at(&zeros, dev_size - HEAD)
            .map_err(InstallError::io("clearing the backup GPT of", dev_path))?;
    }
    dev.sync_all()
        .map_err(InstallError::io("syncing", dev_path))?;
    progress(Phase::Clear, 2 * HEAD, 2 * HEAD);

    // 3. Stream the rest.
    let whole = !(options.skip_whole_sha256 && *expected == Expected::Unsigned);
    let (digest, sums) = stream(
        image.reader(),
        dev,
        dev_path,
        raw_size,
        &head,
        expected,
        whole,
        chunk,
        progress,
        &name,
    )?;
    let digest = match (expected, digest) {
        (Expected::Chunks { sha256, .. }, _) => Some(*sha256),
        (_, Some(d)) => Some(d),
        (Expected::Unsigned, None) if !whole => None,
        (_, None) => {
            return Err(image_err(
                "the writer took no SHA-256 of it (a bug: report it)".into(),
            ))
        }
    };
    if let Expected::Whole(want) = *expected {
        if digest != Some(want) {
            return Err(InstallError::Verify {
                path: dev_path.to_path_buf(),
                detail: format!(
                    "the image {name} has SHA-256 {}, its signed manifest says {}: the image is corrupt or not the one the manifest describes",
                    digest.map(hex::encode).unwrap_or_default(),
                    hex::encode(want)
                ),
            });
        }
    }
    dev.sync_all()
        .map_err(InstallError::io("syncing", dev_path))?;
    let write_seconds = started.elapsed().as_secs_f64();

    // 4. Read back.
    let started = Instant::now();
    drop_cache(dev);
    let direct = if options.direct_read_back {
        direct::open(dev_path, HEAD)
    } else {
        None
    };
    read_back(
        direct.as_ref().unwrap_or(dev),
        direct.is_some(),
        dev_path,
        &head,
        chunk,
        raw_size,
        &sums,
        progress,
    )?;
    let verify_seconds = started.elapsed().as_secs_f64();

    // 5. Config on the boot partition, through the table in memory.
    let files = config.files();
    if !files.is_empty() {
        let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
        progress(Phase::Config, 0, total);
        let view = Overlay {
            head: &head,
            dev,
            pos: 0,
            len: raw_size,
        };
        bootconfig::write(view, &table, config, dev_path)?;
        dev.sync_all()
            .map_err(InstallError::io("syncing", dev_path))?;
        progress(Phase::Config, total, total);
    }

    // 6. The first MiB, last.
    progress(Phase::Table, 0, HEAD);
    dev.write_all_at(&head, 0)
        .map_err(InstallError::io("writing the partition table to", dev_path))?;
    dev.sync_all()
        .map_err(InstallError::io("syncing", dev_path))?;
    drop_cache(dev);
    let mut check = vec![0u8; HEAD as usize];
    dev.read_exact_at(&mut check, 0).map_err(InstallError::io(
        "reading back the partition table of",
        dev_path,
    ))?;
    if check != head {
        // Leave it unbootable rather than half right.
        let _ = dev.write_all_at(&zeros, 0);
        let _ = dev.sync_all();
        return Err(InstallError::Verify {
            path: dev_path.to_path_buf(),
            detail: "the first MiB read back differs from what was written".into(),
        });
    }
    progress(Phase::Table, HEAD, HEAD);

    // 7. Let the kernel see the new partitions (a file or a busy disk: no matter).
    reread_table(dev);
    Ok(Report {
        bytes: raw_size,
        sha256: digest.map(hex::encode).unwrap_or_default(),
        write_seconds,
        verify_seconds,
        config_files: files.into_iter().map(|(n, _)| n).collect(),
        read_back_direct: direct.is_some(),
    })
}

/// Read until `buf` is full or the stream ends; the bytes read (chunk sums
/// need whole chunks, whatever sizes the reader hands out).
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The piece of chunk `i` (of `raw_size.div_ceil(chunk)`) that is streamed
/// and read back: the chunk's bytes, but from 1 MiB on (the first MiB is
/// held in memory; a first chunk of 1 MiB has an empty piece), up to the
/// image's end.
fn piece(i: u64, chunk: u64, raw_size: u64) -> (u64, u64) {
    let from = (i * chunk).max(HEAD);
    (from, ((i + 1) * chunk).min(raw_size).max(from))
}

/// The parts of chunk `i`: the first chunk starts with the first MiB.
fn parts<'a>(i: u64, head: &'a [u8], buf: &'a [u8]) -> [&'a [u8]; 2] {
    if i == 0 {
        [head, buf]
    } else {
        [&[], buf]
    }
}

/// Zero `len` bytes of `dev` at `at` with `BLKZEROOUT`; false where that is
/// not possible (a regular file, a device or range it refuses): the caller
/// then writes the zeros.
fn zero_out(dev: &File, at: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    if !at.is_multiple_of(512) || !len.is_multiple_of(512) {
        return false;
    }
    let range: [u64; 2] = [at, len];
    // SAFETY: BLKZEROOUT reads two u64 from the pointer, which points at a
    // live array of two u64; the descriptor is valid for the call.
    unsafe { libc::ioctl(dev.as_raw_fd(), BLKZEROOUT as _, range.as_ptr()) == 0 }
}

/// Stream from the reader (already past the first MiB, `head`) to `dev` at
/// offset 1 MiB, in the pieces of chunks of `chunk` bytes. Three threads
/// keep the device and both CPUs busy: this one decompresses, a second
/// checks each chunk (against the signed sums, or takes its sum and the
/// whole image's SHA-256 when the manifest has no sums; the latter only if
/// `whole`, which an unsigned image may go without), a third writes
/// what was checked. Returns the whole image's SHA-256 when it was taken
/// and each chunk's sum, for the read-back.
#[allow(clippy::too_many_arguments)]
fn stream(
    r: &mut (dyn Read + Send),
    dev: &File,
    dev_path: &Path,
    raw_size: u64,
    head: &[u8],
    expected: &Expected,
    whole: bool,
    chunk: u64,
    progress: &mut dyn FnMut(Phase, u64, u64),
    name: &str,
) -> Result<(Option<[u8; 32]>, Vec<ChunkSum>), InstallError> {
    let image_err = |detail: String| InstallError::Image {
        what: name.to_string(),
        detail,
    };
    let (to_checker, from_reader) = mpsc::sync_channel::<(u64, u64, Vec<u8>)>(2);
    let (to_writer, from_checker) = mpsc::sync_channel::<(u64, Vec<u8>, bool)>(2);
    let (to_reader, spare) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> io::Result<()> {
            for (at, buf, zero) in from_checker {
                if !(zero && zero_out(dev, at, buf.len() as u64)) {
                    dev.write_all_at(&buf, at)?;
                }
                // The reader may have stopped on an error; then nobody wants it back.
                let _ = to_reader.send(buf);
            }
            Ok(())
        });
        let checker = s.spawn(
            move || -> Result<(Option<[u8; 32]>, Vec<ChunkSum>), InstallError> {
                let mut whole = match expected {
                    Expected::Chunks { .. } => None,
                    Expected::Unsigned if !whole => None,
                    Expected::Whole(_) | Expected::Unsigned => {
                        let mut h = Sha256::new();
                        h.update(head);
                        Some(h)
                    }
                };
                let mut sums = Vec::new();
                for (i, at, buf) in from_reader {
                    let parts = parts(i, head, &buf);
                    let sum = match expected {
                        Expected::Chunks { chunks, .. } => {
                            let want = chunks.sums[i as usize];
                            if !want.matches(&parts) {
                                return Err(InstallError::Verify {
                                    path: dev_path.to_path_buf(),
                                    detail: format!(
                                        "chunk {i} (bytes {}..{}) of the image {name} is not what its signed manifest says ({}): the image, or the medium it takes ranges from, is corrupt or not the one the manifest describes",
                                        i * chunks.size,
                                        at + buf.len() as u64,
                                        want.describe()
                                    ),
                                });
                            }
                            want
                        }
                        Expected::Whole(_) | Expected::Unsigned => {
                            if let Some(h) = whole.as_mut() {
                                h.update(&buf);
                            }
                            ChunkSum::of(&parts)
                        }
                    };
                    sums.push(sum);
                    if to_writer.send((at, buf, sum == ChunkSum::Zero)).is_err() {
                        break; // the writer failed; its error is reported first
                    }
                }
                Ok((whole.map(|h| h.finalize().into()), sums))
            },
        );
        let mut at = HEAD;
        let mut failure = None;
        progress(Phase::Write, HEAD, raw_size);
        let count = raw_size.div_ceil(chunk);
        let mut i = 0u64;
        loop {
            let (from, to) = piece(i, chunk, raw_size);
            if i == count {
                // The image should end here: a longer stream is not this image.
                let mut probe = [0u8; 1];
                match read_full(r, &mut probe) {
                    Ok(0) => {}
                    Ok(_) => failure = Some(image_err(format!(
                        "it is longer than the {raw_size} bytes expected (its signed manifest or header): refusing it"
                    ))),
                    Err(e) => failure = Some(image_err(format!("reading at byte {at}: {e}"))),
                }
                break;
            }
            let mut buf = spare
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(chunk as usize));
            buf.resize((to - from) as usize, 0);
            let n = match read_full(r, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    failure = Some(image_err(format!("reading at byte {at}: {e}")));
                    break;
                }
            };
            if n < buf.len() {
                break; // truncated: reported below
            }
            if to_checker.send((i, at, buf)).is_err() {
                break; // the checker or the writer failed; its error is below
            }
            at = to;
            i += 1;
            progress(Phase::Write, at, raw_size);
        }
        drop(to_checker);
        let checked = checker
            .join()
            .unwrap_or_else(|_| Err(image_err("the checking thread panicked".into())));
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")));
        if let Err(e) = written {
            return Err(InstallError::Io {
                action: "writing the image to",
                path: dev_path.to_path_buf(),
                source: e,
            });
        }
        let (digest, sums) = checked?;
        if let Some(f) = failure {
            return Err(f);
        }
        if at != raw_size {
            return Err(image_err(format!(
                "it ends after {at} bytes, {raw_size} were expected: the file is truncated (copy or download it again)"
            )));
        }
        Ok((digest, sums))
    })
}

/// Read `dev` back from 1 MiB to `raw_size` in the pieces [`stream`] wrote,
/// on a second thread, and check each chunk (the first with `head` from
/// memory) against its sum. `direct`: `dev` was opened with `O_DIRECT`.
#[allow(clippy::too_many_arguments)]
fn read_back(
    dev: &File,
    direct: bool,
    dev_path: &Path,
    head: &[u8],
    chunk: u64,
    raw_size: u64,
    sums: &[ChunkSum],
    progress: &mut dyn FnMut(Phase, u64, u64),
) -> Result<(), InstallError> {
    let (tx, rx) = mpsc::sync_channel::<io::Result<AlignedBuf>>(2);
    let (back_tx, back_rx) = mpsc::channel::<AlignedBuf>();
    std::thread::scope(|s| {
        let count = raw_size.div_ceil(chunk);
        s.spawn(move || {
            for i in 0..count {
                let (from, to) = piece(i, chunk, raw_size);
                let mut buf = back_rx
                    .try_recv()
                    .unwrap_or_else(|_| AlignedBuf::with_capacity(chunk as usize));
                let len = (to - from) as usize;
                let r = if direct {
                    direct::read_at(dev, &mut buf, from, len)
                } else {
                    buf.read_exact_at(dev, from, len)
                }
                .map(|()| buf);
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    return;
                }
            }
        });
        progress(Phase::Verify, HEAD, raw_size);
        for i in 0..count {
            let (from, to) = piece(i, chunk, raw_size);
            let buf = rx
                .recv()
                .map_err(|_| io::Error::other("the reader thread stopped"))
                .and_then(|r| r)
                .map_err(InstallError::io("reading back", dev_path))?;
            let sum = sums.get(i as usize).ok_or_else(|| InstallError::Verify {
                path: dev_path.to_path_buf(),
                detail: format!("read back past the {} chunks written", sums.len()),
            })?;
            if !sum.matches(&parts(i, head, buf.as_slice())) {
                return Err(InstallError::Verify {
                    path: dev_path.to_path_buf(),
                    detail: format!(
                        "bytes {from}..{to} read back differ from what was written ({}): the device does not keep what it is given",
                        sum.describe()
                    ),
                });
            }
            let _ = back_tx.send(buf);
            progress(Phase::Verify, to, raw_size);
        }
        Ok(())
    })
}

fn drop_cache(dev: &File) {
    use std::os::fd::AsRawFd;
    let fd = dev.as_raw_fd();
    // SAFETY: plain syscalls on a valid descriptor, no memory passed. On a
    // block device BLKFLSBUF drops its buffer cache (fadvise alone may keep
    // pages); on a file (tests) fadvise does. Failure only weakens the check
    // to what the cache holds, which the fsync already wrote.
    unsafe {
        let _ = libc::ioctl(fd, BLKFLSBUF as _, 0);
        let _ = libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

fn reread_table(dev: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: BLKRRPART takes no argument; on a file it fails with ENOTTY.
    unsafe {
        let _ = libc::ioctl(dev.as_raw_fd(), BLKRRPART as _, 0);
    }
}

/// The target as the image will be once complete: the first MiB from memory
/// (not yet written), the rest from the device. Writes must not touch the
/// first MiB (the boot partition starts at or after 1 MiB).
struct Overlay<'a> {
    head: &'a [u8],
    dev: &'a File,
    pos: u64,
    len: u64,
}

impl Read for Overlay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let n = if self.pos < HEAD {
            let start = self.pos as usize;
            let n = buf.len().min(self.head.len() - start);
            buf[..n].copy_from_slice(&self.head[start..start + n]);
            n
        } else {
            let n = buf.len().min((self.len - self.pos) as usize);
            self.dev.read_at(&mut buf[..n], self.pos)?
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Overlay<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos < HEAD {
            return Err(io::Error::other(
                "the boot partition overlaps the first MiB, which is written last",
            ));
        }
        let n = buf.len().min(self.len.saturating_sub(self.pos) as usize);
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "past the image end",
            ));
        }
        let n = self.dev.write_at(&buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Overlay<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_not_zeroed_by_ioctl_and_gets_the_zeros_written() {
        let f = tempfile::tempfile().expect("temp file");
        assert!(!zero_out(&f, 0, 4096));
    }

    #[test]
    fn pieces_follow_the_chunks_from_the_first_mib_on() {
        assert_eq!(piece(0, CHUNK, 10 << 20), (HEAD, CHUNK));
        assert_eq!(piece(1, CHUNK, 10 << 20), (CHUNK, 2 * CHUNK));
        assert_eq!(piece(2, CHUNK, 10 << 20), (2 * CHUNK, 10 << 20));
        assert_eq!(piece(0, HEAD, 10 << 20), (HEAD, HEAD), "only the head");
    }

    #[test]
    fn the_read_back_finds_a_chunk_the_device_did_not_keep() {
        // An image whose end is not aligned: O_DIRECT reads round it up.
        let data = vec![0x5au8; 4096 + 100];
        let total = CHUNK + data.len() as u64;
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let f = file.as_file();
        f.set_len(total).expect("size");
        f.write_all_at(&data, CHUNK).expect("write");
        let head = vec![0u8; HEAD as usize];
        let sums = vec![ChunkSum::Zero, ChunkSum::of(&[&data])];
        let path = Path::new("/dev/test");
        // Through the cache, and with O_DIRECT where the temp directory's
        // file system takes it (tmpfs does not).
        let odirect = direct::open(file.path(), HEAD);
        let mut readers = vec![(f, false)];
        if let Some(d) = odirect.as_ref() {
            readers.push((d, true));
        }
        for (reader, is_direct) in readers {
            let check = || {
                read_back(
                    reader,
                    is_direct,
                    path,
                    &head,
                    CHUNK,
                    total,
                    &sums,
                    &mut |_, _, _| {},
                )
            };
            check().expect("as written");
            // A byte the device lost in the zero chunk, then in the data chunk.
            f.write_all_at(&[1], HEAD + 17).expect("write");
            let e = check().expect_err("a changed zero chunk");
            assert!(e.to_string().contains("read back differ"), "{e}");
            f.write_all_at(&[0], HEAD + 17).expect("write");
            f.write_all_at(&[0], CHUNK + 4100).expect("write");
            let e = check().expect_err("a changed data chunk, in its last bytes");
            assert!(e.to_string().contains("SHA-256"), "direct {is_direct}: {e}");
            f.write_all_at(&[0x5a], CHUNK + 4100).expect("write");
        }
    }
}
