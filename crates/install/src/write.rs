//! The write order, so that a failed or interrupted install leaves the target
//! without a partition table (unbootable), never half-written and bootable:
//!
//! 1. read the image's first MiB into memory and check it holds a partition
//!    table whose partitions fit in the image (else: not a disk image);
//! 2. clear the old tables: zero the target's first MiB (MBR, primary GPT)
//!    and last MiB (backup GPT), fsync;
//! 3. stream the rest of the image to the target from 1 MiB on, hashing it
//!    (SHA-256 of the whole raw image); it must end exactly at `raw_size`;
//!    compare with the signed manifest's hash when there is one; fsync;
//! 4. drop the target's cached pages and read everything back: each chunk
//!    the device returns must be what was written (the SHA-256 of each chunk
//!    that held data, taken while streaming; zeros where the image held only
//!    zeros);
//! 5. write the first-boot config files into the boot partition (read
//!    through the image's table in memory), fsync;
//! 6. write the first MiB last, fsync, read it back and compare;
//! 7. ask the kernel to re-read the partition table.
//!
//! Reading and hashing run on one thread and writing on another, so the
//! device is kept busy while the next chunk is decompressed and hashed.
//!
//! Most of a fresh disk image is zeros (the empty B slot, the free space of
//! the others). A chunk of zeros is written with `BLKZEROOUT`, which a device
//! that can zero ranges (virtio, NVMe, many SSDs) does without moving the
//! bytes and any other has the kernel write as zeros; it is then read back
//! and checked as zeros, not hashed. That is what makes the install faster
//! than `dd` of the same image, with its read-back.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::bootconfig::{self, BootConfig};
use crate::{Image, InstallError, HEAD};

/// Bytes per write: large enough that syscalls do not matter.
const CHUNK: usize = 4 << 20;

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

/// A verified install.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Bytes of the raw image written and verified.
    pub bytes: u64,
    /// Hex SHA-256 of the raw image (what was read back).
    pub sha256: String,
    /// Seconds spent writing (clear and stream, with fsync) and verifying.
    pub write_seconds: f64,
    pub verify_seconds: f64,
    /// Config files placed on the boot partition.
    pub config_files: Vec<String>,
}

/// Write `image` to `dev` (opened read-write; a block device, or a file in
/// tests), verify, place `config`. `expected`: the SHA-256 from a signed
/// manifest. The target checks ([`crate::Target::check`]) come first, by
/// the caller.
pub fn install(
    image: &mut Image,
    dev: &File,
    dev_path: &Path,
    expected: Option<[u8; 32]>,
    config: &BootConfig,
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
    let mut hasher = Sha256::new();
    hasher.update(&head);

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
    let (digest, sums) = stream(
        image.reader(),
        dev,
        dev_path,
        raw_size,
        hasher,
        progress,
        &name,
    )?;
    if let Some(want) = expected {
        if digest != want {
            return Err(InstallError::Verify {
                path: dev_path.to_path_buf(),
                detail: format!(
                    "the image {name} has SHA-256 {}, its signed manifest says {}: the image is corrupt or not the one the manifest describes",
                    hex::encode(digest),
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
    read_back(dev, dev_path, HEAD, raw_size, &sums, progress)?;
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
        sha256: hex::encode(digest),
        write_seconds,
        verify_seconds,
        config_files: files.into_iter().map(|(n, _)| n).collect(),
    })
}

/// Read until `buf` is full or the stream ends; the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
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

/// What one streamed chunk (of [`CHUNK`] bytes from 1 MiB on, the last one
/// shorter) held, for the read-back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkSum {
    /// Only zeros.
    Zero,
    /// The SHA-256 of its bytes.
    Sha([u8; 32]),
}

impl ChunkSum {
    fn of(buf: &[u8]) -> ChunkSum {
        if is_zero(buf) {
            ChunkSum::Zero
        } else {
            ChunkSum::Sha(Sha256::digest(buf).into())
        }
    }

    fn matches(&self, buf: &[u8]) -> bool {
        match self {
            ChunkSum::Zero => is_zero(buf),
            ChunkSum::Sha(want) => <[u8; 32]>::from(Sha256::digest(buf)) == *want,
        }
    }
}

fn is_zero(buf: &[u8]) -> bool {
    let (words, rest) = buf.split_at(buf.len() - buf.len() % 8);
    words
        .chunks_exact(8)
        .all(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0)
        && rest.iter().all(|&b| b == 0)
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

/// Stream from the reader (already past the first MiB) to `dev` at offset
/// 1 MiB; the writes run on their own thread. Returns the SHA-256 of the
/// whole raw image (`hasher` already holds the first MiB) and what each
/// chunk held.
fn stream(
    r: &mut (dyn Read + Send),
    dev: &File,
    dev_path: &Path,
    raw_size: u64,
    mut hasher: Sha256,
    progress: &mut dyn FnMut(Phase, u64, u64),
    name: &str,
) -> Result<([u8; 32], Vec<ChunkSum>), InstallError> {
    let image_err = |detail: String| InstallError::Image {
        what: name.to_string(),
        detail,
    };
    let mut sums = Vec::new();
    let (to_writer, from_reader) = mpsc::sync_channel::<(u64, Vec<u8>, bool)>(3);
    let (to_reader, spare) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> io::Result<()> {
            for (at, buf, zero) in from_reader {
                if !(zero && zero_out(dev, at, buf.len() as u64)) {
                    dev.write_all_at(&buf, at)?;
                }
                // The reader may have stopped on an error; then nobody wants it back.
                let _ = to_reader.send(buf);
            }
            Ok(())
        });
        let mut at = HEAD;
        let mut failure = None;
        progress(Phase::Write, HEAD, raw_size);
        loop {
            let mut buf = spare.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
            buf.resize(CHUNK, 0);
            let n = match read_full(r, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    failure = Some(image_err(format!("reading at byte {at}: {e}")));
                    break;
                }
            };
            if n == 0 {
                break;
            }
            buf.truncate(n);
            if at + n as u64 > raw_size {
                failure = Some(image_err(format!(
                    "it is longer than the {raw_size} bytes expected (its signed manifest or header): refusing it"
                )));
                break;
            }
            hasher.update(&buf);
            let sum = ChunkSum::of(&buf);
            sums.push(sum);
            if to_writer.send((at, buf, sum == ChunkSum::Zero)).is_err() {
                break; // the writer failed; its error is below
            }
            at += n as u64;
            progress(Phase::Write, at, raw_size);
        }
        drop(to_writer);
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
        if let Some(f) = failure {
            return Err(f);
        }
        if at != raw_size {
            return Err(image_err(format!(
                "it ends after {at} bytes, {raw_size} were expected: the file is truncated (copy or download it again)"
            )));
        }
        Ok((hasher.finalize().into(), sums))
    })
}

/// Read `dev` back from `from` to `to` in the chunks [`stream`] wrote, on a
/// second thread, and check each against what it held.
fn read_back(
    dev: &File,
    dev_path: &Path,
    from: u64,
    to: u64,
    sums: &[ChunkSum],
    progress: &mut dyn FnMut(Phase, u64, u64),
) -> Result<(), InstallError> {
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(3);
    let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut at = from;
            while at < to {
                let n = (to - at).min(CHUNK as u64) as usize;
                let mut buf = back_rx.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
                buf.resize(n, 0);
                let r = dev.read_exact_at(&mut buf, at).map(|()| buf);
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    return;
                }
                at += n as u64;
            }
        });
        let mut at = from;
        progress(Phase::Verify, at, to);
        let mut sums = sums.iter();
        while at < to {
            let buf = rx
                .recv()
                .map_err(|_| io::Error::other("the reader thread stopped"))
                .and_then(|r| r)
                .map_err(InstallError::io("reading back", dev_path))?;
            let end = at + buf.len() as u64;
            let sum = sums.next().ok_or_else(|| InstallError::Verify {
                path: dev_path.to_path_buf(),
                detail: format!("read back past the {} chunks written", sums.len()),
            })?;
            if !sum.matches(&buf) {
                let held = match sum {
                    ChunkSum::Zero => "zeros".to_string(),
                    ChunkSum::Sha(h) => format!("bytes of SHA-256 {}", hex::encode(h)),
                };
                return Err(InstallError::Verify {
                    path: dev_path.to_path_buf(),
                    detail: format!(
                        "bytes {at}..{end} read back differ from what was written ({held}): the device does not keep what it is given"
                    ),
                });
            }
            at = end;
            let _ = back_tx.send(buf);
            progress(Phase::Verify, at, to);
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
    fn a_chunk_is_zero_only_if_every_byte_is() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0u8; 13]));
        for at in [0, 7, 8, 12] {
            let mut b = [0u8; 13];
            b[at] = 1;
            assert!(!is_zero(&b), "a 1 at {at}");
        }
        assert_eq!(ChunkSum::of(&[0u8; 4096]), ChunkSum::Zero);
        let data = b"ballast".repeat(100);
        let sum = ChunkSum::of(&data);
        assert!(sum.matches(&data));
        assert!(!sum.matches(&[0u8; 700]));
        assert!(!ChunkSum::Zero.matches(&data));
    }

    #[test]
    fn a_regular_file_is_not_zeroed_by_ioctl_and_gets_the_zeros_written() {
        let f = tempfile::tempfile().expect("temp file");
        assert!(!zero_out(&f, 0, 4096));
    }

    #[test]
    fn the_read_back_finds_a_chunk_the_device_did_not_keep() {
        let total = HEAD + CHUNK as u64 + 4096;
        let f = tempfile::tempfile().expect("temp file");
        f.set_len(total).expect("size");
        let data = vec![0x5au8; 4096];
        f.write_all_at(&data, HEAD + CHUNK as u64).expect("write");
        let sums = vec![ChunkSum::Zero, ChunkSum::of(&data)];
        let path = Path::new("/dev/test");
        read_back(&f, path, HEAD, total, &sums, &mut |_, _, _| {}).expect("as written");
        // A byte the device lost in the zero chunk, then in the data chunk.
        f.write_all_at(&[1], HEAD + 17).expect("write");
        let e = read_back(&f, path, HEAD, total, &sums, &mut |_, _, _| {})
            .expect_err("a changed zero chunk");
        assert!(e.to_string().contains("read back differ"), "{e}");
        f.write_all_at(&[0], HEAD + 17).expect("write");
        f.write_all_at(&[0], HEAD + CHUNK as u64 + 9)
            .expect("write");
        let e = read_back(&f, path, HEAD, total, &sums, &mut |_, _, _| {})
            .expect_err("a changed data chunk");
        assert!(e.to_string().contains("SHA-256"), "{e}");
    }
}
