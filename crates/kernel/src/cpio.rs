//! A deterministic writer for the newc ("070701") cpio format, the one the kernel
//! unpacks as an initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Output depends only on the entries and `mtime`: entries are written in the order
//! given, inode numbers count up from 1, owner is root (0:0), one link per entry, and
//! the archive ends with the `TRAILER!!!` entry. Fields are 32 bits wide, so file sizes
//! must stay under 4 GiB and times before 2106; [`write`] refuses anything else.

/// `S_IFMT` type bits, to build `Entry::mode`.
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

const MAGIC: &[u8] = b"070701";
const TRAILER: &str = "TRAILER!!!";

#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("cpio entry {path:?}: {what} is {value}, more than newc's 32-bit field can hold")]
    TooLarge {
        path: String,
        what: &'static str,
        value: u64,
    },
    #[error("cpio entry {path:?}: names must be non-empty and contain no NUL byte")]
    BadName { path: String },
}

/// One archive member. `mode` holds the type bits (`S_IFREG | 0o755`); `data` is the
/// file content, or the target for a symlink, empty otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

fn field(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(format!("{value:08x}").as_bytes());
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn header(out: &mut Vec<u8>, ino: u32, e: &Entry, nlink: u32, mtime: u32) -> Result<(), CpioError> {
    if e.path.is_empty() || e.path.contains('\0') {
        return Err(CpioError::BadName {
            path: e.path.clone(),
        });
    }
    let size = u32::try_from(e.data.len()).map_err(|_| CpioError::TooLarge {
        path: e.path.clone(),
        what: "the size",
        value: e.data.len() as u64,
    })?;
    let namesize = u32::try_from(e.path.len() + 1).map_err(|_| CpioError::TooLarge {
        path: e.path.clone(),
        what: "the name length",
        value: e.path.len() as u64,
    })?;
    out.extend_from_slice(MAGIC);
    for v in [
        ino,
        e.mode,
        0,
        0,
        nlink,
        mtime,
        size,
        0,
        0,
        e.rdev_major,
        e.rdev_minor,
        namesize,
        0,
    ] {
        field(out, v);
    }
    out.extend_from_slice(e.path.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(&e.data);
    pad4(out);
    Ok(())
}

/// Write `entries` in order, then the trailer; `mtime` (seconds since 1970) is stamped
/// on every entry.
pub fn write(entries: &[Entry], mtime: u64) -> Result<Vec<u8>, CpioError> {
    let mtime = u32::try_from(mtime).map_err(|_| CpioError::TooLarge {
        path: "(all)".into(),
        what: "mtime",
        value: mtime,
    })?;
    let mut out =
        Vec::with_capacity(entries.iter().map(|e| e.data.len() + 128).sum::<usize>() + 128);
    for (i, e) in entries.iter().enumerate() {
        let ino = u32::try_from(i + 1).map_err(|_| CpioError::TooLarge {
            path: e.path.clone(),
            what: "the entry count",
            value: i as u64 + 1,
        })?;
        let nlink = if e.mode & 0o170000 == S_IFDIR { 2 } else { 1 };
        header(&mut out, ino, e, nlink, mtime)?;
    }
    let trailer = Entry {
        path: TRAILER.into(),
        mode: 0,
        data: Vec::new(),
        rdev_major: 0,
        rdev_minor: 0,
    };
    header(&mut out, 0, &trailer, 1, 0)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_one_file() {
        let e = Entry {
            path: "init".into(),
            mode: S_IFREG | 0o755,
            data: b"abcde".to_vec(),
            rdev_major: 0,
            rdev_minor: 0,
        };
        let out = write(&[e], 0x5f5e100).unwrap();
        let head = std::str::from_utf8(&out[..110]).unwrap();
        assert_eq!(
            head,
            "07070100000001000081ed00000000000000000000000105f5e10000000005\
             000000000000000000000000000000000000000500000000"
        );
        // name "init\0" after the 110-byte header, padded to 116; data 5 bytes padded to 8.
        assert_eq!(&out[110..116], b"init\0\0");
        assert_eq!(&out[116..124], b"abcde\0\0\0");
        assert_eq!(&out[124..130], b"070701");
        assert!(out.ends_with(b"TRAILER!!!\0\0\0\0"));
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn refuses_late_mtime() {
        assert!(write(&[], 1 << 33).is_err());
    }
}
