//! Reading a written device back from the device itself, past the page
//! cache: `O_DIRECT` reads into buffers aligned to [`ALIGN`]. A read-back
//! served from the cache would only prove that the kernel kept what it was
//! given, not that the card did. Dropping the cache first (`BLKFLSBUF`) is
//! the fallback where a device or file system refuses `O_DIRECT` (tmpfs,
//! some FUSE file systems); `O_DIRECT` also spares the copy into the cache.
//!
//! Owns: the aligned buffers, rounding a read's length up to the alignment
//! (an image's end need not be aligned), and the probe that decides whether
//! `O_DIRECT` works on a device.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of `O_DIRECT` buffers, offsets and lengths: the largest logical
/// block size in use (4Kn disks); a 512-byte device accepts it too.
pub const ALIGN: usize = 4096;

/// `path` opened read-only with `O_DIRECT`, if the device takes such reads
/// (one aligned read at `probe_at` is tried); `None` where it does not, and
/// the caller reads through the (dropped) cache instead.
pub fn open(path: &Path, probe_at: u64) -> Option<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()?;
    let mut buf = AlignedBuf::with_capacity(ALIGN);
    read_at(&file, &mut buf, probe_at, ALIGN).ok()?;
    Some(file)
}

/// Bytes whose first one sits on an [`ALIGN`] boundary in memory.
pub struct AlignedBuf {
    vec: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    /// Room for `cap` bytes (rounded up to [`ALIGN`]), empty.
    pub fn with_capacity(cap: usize) -> AlignedBuf {
        let room = cap.div_ceil(ALIGN) * ALIGN;
        let vec = vec![0u8; room + ALIGN];
        let addr = vec.as_ptr() as usize;
        let off = (ALIGN - addr % ALIGN) % ALIGN;
        AlignedBuf { vec, off, len: 0 }
    }

    fn room(&self) -> usize {
        self.vec.len() - self.off
    }

    /// Read exactly `len` bytes of `file` at `at` through an ordinary
    /// (cached) descriptor: the fallback where `O_DIRECT` is refused.
    pub fn read_exact_at(&mut self, file: &File, at: u64, len: usize) -> io::Result<()> {
        if self.room() < len {
            *self = AlignedBuf::with_capacity(len);
        }
        file.read_exact_at(&mut self.vec[self.off..self.off + len], at)?;
        self.len = len;
        Ok(())
    }

    /// The bytes last read.
    pub fn as_slice(&self) -> &[u8] {
        &self.vec[self.off..self.off + self.len]
    }
}

/// Read `len` bytes of `file` at `at` into `buf`. With `O_DIRECT` the
/// offset must be aligned (the caller's pieces start on MiB boundaries) and
/// the length is rounded up to [`ALIGN`]: bytes past `len` are read when the
/// device has them and ignored. Fewer than `len` bytes is an error.
pub fn read_at(file: &File, buf: &mut AlignedBuf, at: u64, len: usize) -> io::Result<()> {
    let padded = len.div_ceil(ALIGN) * ALIGN;
    if buf.room() < padded {
        *buf = AlignedBuf::with_capacity(padded);
    }
    let mut n = 0;
    while n < len {
        let start = buf.off + n;
        match file.read_at(&mut buf.vec[start..buf.off + padded], at + n as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the device ends at byte {}", at + n as u64),
                ))
            }
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.len = len;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn buffers_are_aligned_and_an_unaligned_end_is_read_whole() {
        for cap in [1, ALIGN, 3 * ALIGN + 5] {
            let b = AlignedBuf::with_capacity(cap);
            assert_eq!(b.vec[b.off..].as_ptr() as usize % ALIGN, 0);
            assert!(b.room() >= cap);
        }
        // A file that ends 100 bytes into a block: the read asks for the
        // whole block and gets the 100.
        let mut f = tempfile::tempfile().expect("temp file");
        let data: Vec<u8> = (0..(2 * ALIGN + 100)).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).expect("write");
        let mut buf = AlignedBuf::with_capacity(16);
        read_at(&f, &mut buf, ALIGN as u64, ALIGN + 100).expect("read");
        assert_eq!(buf.as_slice(), &data[ALIGN..]);
        let e = read_at(&f, &mut buf, ALIGN as u64, 2 * ALIGN).expect_err("past the end");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn o_direct_reads_the_file_or_is_refused_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("dev");
        let data: Vec<u8> = (0..(4 * ALIGN)).map(|i| (i % 7) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        match open(&path, 0) {
            Some(f) => {
                let mut buf = AlignedBuf::with_capacity(ALIGN);
                read_at(&f, &mut buf, ALIGN as u64, 2 * ALIGN).expect("direct read");
                assert_eq!(buf.as_slice(), &data[ALIGN..3 * ALIGN]);
            }
            // tmpfs refuses O_DIRECT at open with EINVAL: then the
            // installer reads through the dropped cache.
            None => {
                let e = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&path)
                    .expect_err("open refused");
                assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
            }
        }
    }
}
