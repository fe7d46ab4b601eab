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
//! 4. drop the target's cached pages and read everything back: the SHA-256
//!    of the first MiB in memory and of what the device returns must match;
//! 5. write the first-boot config files into the boot partition (read
//!    through the image's table in memory), fsync;
//! 6. write the first MiB last, fsync, read it back and compare;
//! 7. ask the kernel to re-read the partition table.
//!
//! Reading and hashing run on one thread and writing on another, so the
//! device is kept busy while the next chunk is decompressed and hashed.

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
    let digest = stream(
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
    let mut back = Sha256::new();
    back.update(&head);
    read_back(dev, dev_path, HEAD, raw_size, &mut back, progress)?;
    let got: [u8; 32] = back.finalize().into();
    if got != digest {
        return Err(InstallError::Verify {
            path: dev_path.to_path_buf(),
            detail: format!(
                "read back SHA-256 {} but wrote {}",
                hex::encode(got),
                hex::encode(digest)
            ),
        });
    }
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

/// Stream from the reader (already past the first MiB) to `dev` at offset
/// 1 MiB; the writes run on their own thread. Returns the SHA-256 of the
/// whole raw image (`hasher` already holds the first MiB).
fn stream(
    r: &mut (dyn Read + Send),
    dev: &File,
    dev_path: &Path,
    raw_size: u64,
    mut hasher: Sha256,
    progress: &mut dyn FnMut(Phase, u64, u64),
    name: &str,
) -> Result<[u8; 32], InstallError> {
    let image_err = |detail: String| InstallError::Image {
        what: name.to_string(),
        detail,
    };
    let (to_writer, from_reader) = mpsc::sync_channel::<(u64, Vec<u8>)>(3);
    let (to_reader, spare) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> io::Result<()> {
            for (at, buf) in from_reader {
                dev.write_all_at(&buf, at)?;
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
            if to_writer.send((at, buf)).is_err() {
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
        Ok(hasher.finalize().into())
    })
}

/// Hash `dev` from `from` to `to`, reading on a second thread.
fn read_back(
    dev: &File,
    dev_path: &Path,
    from: u64,
    to: u64,
    hasher: &mut Sha256,
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
        while at < to {
            let buf = rx
                .recv()
                .map_err(|_| io::Error::other("the reader thread stopped"))
                .and_then(|r| r)
                .map_err(InstallError::io("reading back", dev_path))?;
            hasher.update(&buf);
            at += buf.len() as u64;
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
