//! Device-mapper ioctls, as `<linux/dm-ioctl.h>` (interface version 4) lays
//! them out: a 312-byte `struct dm_ioctl` header, then for `DM_TABLE_LOAD` one
//! `struct dm_target_spec` (40 bytes) per target followed by its NUL-terminated
//! parameter string, padded to 8 bytes (as libdevmapper does).
//!
//! This module owns the bytes of those structures and the order of the three calls that make
//! a verity device (create, load, resume). The ioctl itself goes through
//! [`Sys::dm_ioctl`], so the sequence and its failures are tested without root.
//! It never builds the verity table line itself: `ballast-verity` does.

use rustix::io::Errno;

use crate::sys::Sys;

/// `DM_IOCTL`, the ioctl type byte.
pub const DM_IOCTL_TYPE: u8 = 0xfd;
/// `sizeof(struct dm_ioctl)`.
pub const HEADER_LEN: usize = 312;
/// `sizeof(struct dm_target_spec)`.
pub const TARGET_SPEC_LEN: usize = 40;
/// `DM_NAME_LEN`: names are at most 127 bytes plus the NUL.
pub const NAME_LEN: usize = 128;
/// The interface version we speak; the kernel accepts any lower minor.
pub const VERSION: [u32; 3] = [4, 0, 0];

/// `DM_READONLY_FLAG`.
pub const READONLY_FLAG: u32 = 1 << 0;
/// `DM_SUSPEND_FLAG`: absent on `DM_DEV_SUSPEND` means resume.
pub const SUSPEND_FLAG: u32 = 1 << 1;

/// Replies are read into a buffer of this size (the kernel sets
/// `DM_BUFFER_FULL_FLAG` when a reply does not fit; ours are tiny).
const REPLY_LEN: usize = 4096;

/// The dm ioctl commands init uses (`_IOC_NR` values from the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Command {
    Version = 0,
    DevCreate = 3,
    DevRemove = 4,
    DevSuspend = 6,
    TableLoad = 9,
}

impl Command {
    /// The full request number: `_IOWR(DM_IOCTL, nr, struct dm_ioctl)`.
    pub const fn request(self) -> u32 {
        // _IOC(dir=READ|WRITE (3), type, nr, size) in the generic encoding
        // used by x86, arm and arm64.
        (3 << 30) | ((HEADER_LEN as u32) << 16) | ((DM_IOCTL_TYPE as u32) << 8) | self as u32
    }

    pub const fn name(self) -> &'static str {
        match self {
            Command::Version => "DM_VERSION",
            Command::DevCreate => "DM_DEV_CREATE",
            Command::DevRemove => "DM_DEV_REMOVE",
            Command::DevSuspend => "DM_DEV_SUSPEND",
            Command::TableLoad => "DM_TABLE_LOAD",
        }
    }
}

/// Why a device-mapper device could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmError {
    #[error("device-mapper name {0:?} is longer than 127 bytes or contains NUL")]
    BadName(String),
    #[error("dm table line {0:?} is not `START LENGTH TARGET PARAMS`")]
    BadTable(String),
    #[error("{} failed: {errno}{hint}", cmd.name(), hint = hint(*cmd, *errno))]
    Ioctl { cmd: Command, errno: Errno },
    #[error("{} reply is {len} bytes, shorter than the 312-byte dm_ioctl header", cmd.name())]
    ShortReply { cmd: Command, len: usize },
}

fn hint(cmd: Command, errno: Errno) -> &'static str {
    match (cmd, errno) {
        (Command::Version, Errno::NOENT | Errno::NODEV | Errno::NXIO) => {
            " (no /dev/mapper/control: dm-mod is not loaded; list it in modules.load)"
        }
        (Command::TableLoad, Errno::INVAL) => {
            " (the kernel refused the table: dm-verity not loaded, a bad hash/root/salt, or the data device is too small; see the kernel's device-mapper lines above)"
        }
        (Command::TableLoad, Errno::NXIO | Errno::NOENT) => {
            " (the data or hash device named in the table does not exist)"
        }
        (Command::DevCreate, Errno::BUSY) => " (a device of that name exists already)",
        _ => "",
    }
}

/// A `struct dm_ioctl` header with `name` set, `data_size` = `total_len`,
/// `data_start` = 312.
pub fn header(name: &str, flags: u32, total_len: usize) -> Result<Vec<u8>, DmError> {
    if name.len() >= NAME_LEN || name.as_bytes().contains(&0) {
        return Err(DmError::BadName(name.to_string()));
    }
    let mut buf = vec![0u8; total_len.max(HEADER_LEN)];
    for (i, v) in VERSION.iter().enumerate() {
        put_u32(&mut buf, i * 4, *v);
    }
    let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    put_u32(&mut buf, 12, len); // data_size
    put_u32(&mut buf, 16, HEADER_LEN as u32); // data_start
    put_u32(&mut buf, 28, flags);
    buf[48..48 + name.len()].copy_from_slice(name.as_bytes());
    Ok(buf)
}

/// One dm target: the parsed form of a table line `START LENGTH TYPE PARAMS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub sector_start: u64,
    pub length: u64,
    pub target_type: String,
    pub params: String,
}

impl Target {
    /// Parses one line of a dm table, as `dmsetup table` prints it.
    pub fn parse(line: &str) -> Result<Target, DmError> {
        let bad = || DmError::BadTable(line.to_string());
        let mut words = line.trim().splitn(4, ' ');
        let sector_start = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        let length = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        let target_type = words.next().filter(|w| !w.is_empty() && w.len() < 16);
        let target_type = target_type.ok_or_else(bad)?.to_string();
        let params = words.next().unwrap_or("").trim().to_string();
        if params.contains('\0') {
            return Err(bad());
        }
        Ok(Target {
            sector_start,
            length,
            target_type,
            params,
        })
    }
}

/// The `DM_TABLE_LOAD` buffer for one target.
pub fn table_load(name: &str, target: &Target, readonly: bool) -> Result<Vec<u8>, DmError> {
    // Params plus NUL, padded to 8 so `next` keeps specs aligned.
    let params_len = (target.params.len() + 1).next_multiple_of(8);
    let spec_len = TARGET_SPEC_LEN + params_len;
    let flags = if readonly { READONLY_FLAG } else { 0 };
    let mut buf = header(name, flags, HEADER_LEN + spec_len)?;
    put_u32(&mut buf, 20, 1); // target_count
    let s = HEADER_LEN;
    put_u64(&mut buf, s, target.sector_start);
    put_u64(&mut buf, s + 8, target.length);
    put_u32(&mut buf, s + 20, spec_len as u32); // next
    let ty = target.target_type.as_bytes();
    buf[s + 24..s + 24 + ty.len()].copy_from_slice(ty);
    let p = s + TARGET_SPEC_LEN;
    buf[p..p + target.params.len()].copy_from_slice(target.params.as_bytes());
    Ok(buf)
}

/// The `dev` field of a reply, decoded (`huge_decode_dev`): (major, minor).
pub fn reply_dev(buf: &[u8]) -> (u32, u32) {
    let dev = get_u64(buf, 40);
    let major = ((dev >> 8) & 0xfff) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    (major, minor)
}

/// Encodes (major, minor) as the kernel puts it in `dev` (`huge_encode_dev`).
pub fn encode_dev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The kernel's interface version from a `DM_VERSION` reply.
pub fn reply_version(buf: &[u8]) -> [u32; 3] {
    [get_u32(buf, 0), get_u32(buf, 4), get_u32(buf, 8)]
}

fn call(sys: &mut impl Sys, cmd: Command, mut buf: Vec<u8>) -> Result<Vec<u8>, DmError> {
    sys.dm_ioctl(cmd, &mut buf)
        .map_err(|errno| DmError::Ioctl { cmd, errno })?;
    if buf.len() < HEADER_LEN {
        return Err(DmError::ShortReply {
            cmd,
            len: buf.len(),
        });
    }
    Ok(buf)
}

/// A device-mapper device that is live: its block device is `/dev/dm-{minor}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activated {
    pub major: u32,
    pub minor: u32,
    pub kernel_version: [u32; 3],
}

/// Creates `name`, loads `table_line` into it (read-only when asked) and
/// resumes it. On a failed load or resume the half-made device is removed so
/// a retry (or the other slot) starts clean.
pub fn create_device(
    sys: &mut impl Sys,
    name: &str,
    table_line: &str,
    readonly: bool,
) -> Result<Activated, DmError> {
    let target = Target::parse(table_line)?;
    let version = call(sys, Command::Version, header("", 0, REPLY_LEN)?)?;
    let kernel_version = reply_version(&version);
    let created = call(sys, Command::DevCreate, header(name, 0, REPLY_LEN)?)?;
    let (major, minor) = reply_dev(&created);
    let loaded = table_load(name, &target, readonly)
        .and_then(|buf| call(sys, Command::TableLoad, buf))
        .and_then(|_| call(sys, Command::DevSuspend, header(name, 0, REPLY_LEN)?));
    if let Err(e) = loaded {
        if let Ok(buf) = header(name, 0, REPLY_LEN) {
            let _ = call(sys, Command::DevRemove, buf);
        }
        return Err(e);
    }
    Ok(Activated {
        major,
        minor,
        kernel_version,
    })
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_ne_bytes(b)
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = buf.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsys::{Action, TestSys};

    const LINE: &str = "0 8192 verity 1 /dev/vda2 /dev/vda2 4096 4096 1024 1025 sha256 \
                        4392712ba01368efdf14b05c76f9e4df0d53664630b5d48632ed17a137f39076 \
                        1234000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn request_numbers_match_the_kernel_header() {
        // Values from strace of `dmsetup` on x86_64 / arm64.
        assert_eq!(Command::Version.request(), 0xc138_fd00);
        assert_eq!(Command::DevCreate.request(), 0xc138_fd03);
        assert_eq!(Command::DevSuspend.request(), 0xc138_fd06);
        assert_eq!(Command::TableLoad.request(), 0xc138_fd09);
    }

    #[test]
    fn header_bytes_match_dm_ioctl_h() {
        let buf = header("ballast-root", READONLY_FLAG, 0).unwrap();
        assert_eq!(buf.len(), 312);
        assert_eq!(reply_version(&buf), [4, 0, 0]);
        assert_eq!(get_u32(&buf, 12), 312, "data_size");
        assert_eq!(get_u32(&buf, 16), 312, "data_start");
        assert_eq!(get_u32(&buf, 28), 1, "flags");
        assert_eq!(&buf[48..61], b"ballast-root\0");
        assert!(buf[176..].iter().all(|b| *b == 0), "uuid and data empty");
        assert!(header(&"x".repeat(128), 0, 0).is_err());
        assert!(header(&"x".repeat(127), 0, 0).is_ok());
    }

    #[test]
    fn table_load_has_target_spec_then_nul_terminated_params() {
        let target = Target::parse(LINE).unwrap();
        assert_eq!(target.sector_start, 0);
        assert_eq!(target.length, 8192);
        assert_eq!(target.target_type, "verity");
        assert!(target.params.starts_with("1 /dev/vda2 "));
        let buf = table_load("ballast-root", &target, true).unwrap();
        let params_len = target.params.len();
        let spec_len = 40 + (params_len + 1).next_multiple_of(8);
        assert_eq!(buf.len(), 312 + spec_len);
        assert_eq!(buf.len() % 8, 0);
        assert_eq!(get_u32(&buf, 12) as usize, buf.len(), "data_size");
        assert_eq!(get_u32(&buf, 20), 1, "target_count");
        assert_eq!(get_u32(&buf, 28) & READONLY_FLAG, READONLY_FLAG);
        assert_eq!(get_u64(&buf, 312), 0, "sector_start");
        assert_eq!(get_u64(&buf, 320), 8192, "length");
        assert_eq!(get_u32(&buf, 328), 0, "status");
        assert_eq!(get_u32(&buf, 332) as usize, spec_len, "next");
        assert_eq!(&buf[336..343], b"verity\0");
        assert_eq!(&buf[352..352 + params_len], target.params.as_bytes());
        assert_eq!(buf[352 + params_len], 0);
    }

    #[test]
    fn bad_table_lines_are_refused() {
        for line in ["", "0 x verity 1", "0 8 ", "0 8 averyveryverylongtype x"] {
            assert!(Target::parse(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn dev_numbers_round_trip_like_the_kernel() {
        assert_eq!(encode_dev(253, 0), 0xfd00);
        for (ma, mi) in [(253, 0), (253, 7), (259, 300), (8, 1 << 19)] {
            let mut buf = vec![0u8; 312];
            put_u64(&mut buf, 40, encode_dev(ma, mi));
            assert_eq!(reply_dev(&buf), (ma, mi));
        }
    }

    #[test]
    fn create_device_runs_version_create_load_resume() {
        let mut sys = TestSys::booted_with("");
        let dev = create_device(&mut sys, "ballast-root", LINE, true).unwrap();
        assert_eq!((dev.major, dev.minor), (253, 0));
        let calls: Vec<&Action> = sys
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Dm(_)))
            .collect();
        assert_eq!(
            calls,
            [
                &Action::Dm(Command::Version),
                &Action::Dm(Command::DevCreate),
                &Action::Dm(Command::TableLoad),
                &Action::Dm(Command::DevSuspend),
            ]
        );
    }

    #[test]
    fn a_refused_table_removes_the_device_and_says_why() {
        let mut sys = TestSys::booted_with("");
        sys.dm_errors.insert(Command::TableLoad, Errno::INVAL);
        let err = create_device(&mut sys, "ballast-root", LINE, true).unwrap_err();
        assert_eq!(
            err,
            DmError::Ioctl {
                cmd: Command::TableLoad,
                errno: Errno::INVAL
            }
        );
        assert!(err.to_string().starts_with("DM_TABLE_LOAD failed: "));
        assert!(err.to_string().contains("kernel refused the table"));
        assert_eq!(sys.actions.last(), Some(&Action::Dm(Command::DevRemove)));
    }
}
