//! The state partition (4, ext4, label `state`): mounted read-write on
//! `/sysroot/state`, grown to fill the disk on first boot, and the `/etc`
//! overlay and `/var` bind mount that live on it.
//!
//! It must never lose data: it grows a filesystem, never makes one, and every
//! failure here is logged and the boot goes on with what works (a small state,
//! or none).

use std::borrow::Cow;
use std::path::Path;

use rustix::mount::MountFlags;

use crate::log;
use crate::root::{Disk, STATE_INDEX, SYSROOT};
use crate::sys::{MountArgs, Sys};

pub const STATE_MOUNT: &str = "/sysroot/state";
const MIB: u64 = 1024 * 1024;

/// The superblock (the 1024 bytes at offset 1024 of the device) if it is
/// one of ext2/3/4's.
fn ext4_superblock(sb: &[u8]) -> Option<&[u8]> {
    let magic = u16::from_le_bytes(sb.get(0x38..0x3a)?.try_into().ok()?);
    (magic == 0xef53).then_some(sb)
}

/// Size of an ext4 filesystem from its superblock: (blocks, block size).
/// `None` if it is not ext2/3/4.
pub fn ext4_size(sb: &[u8]) -> Option<(u64, u64)> {
    let sb = ext4_superblock(sb)?;
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(sb.get(at..at + 4)?.try_into().ok()?))
    };
    let lo = u64::from(u32_at(0x04)?);
    let log_size = u32_at(0x18)?;
    let incompat = u32_at(0x60)?;
    let hi = if incompat & 0x80 != 0 {
        u64::from(u32_at(0x150)?)
    } else {
        0
    };
    let block_size = 1024u64.checked_shl(log_size.min(16))?;
    Some(((hi << 32) | lo, block_size))
}

/// The volume label of an ext4 filesystem from its superblock. `None` if it
/// is not ext2/3/4.
pub fn ext4_label(sb: &[u8]) -> Option<String> {
    let raw = ext4_superblock(sb)?.get(0x78..0x88)?;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(&raw[..end]).into_owned())
}

/// Grows partition 4 to the end of the disk (table, then the kernel's view).
/// Errors are logged; the partition keeps its size.
fn grow_partition(sys: &mut impl Sys, disk: &Disk) {
    let disk_path = disk.path();
    match sys.grow_last_partition(&disk_path, STATE_INDEX) {
        Ok(None) => {}
        Ok(Some(p)) => {
            let start = p.start_lba * 512;
            let length = (p.end_lba + 1 - p.start_lba.min(p.end_lba + 1)) * 512;
            match sys.blkpg_resize(&disk_path, STATE_INDEX, start, length) {
                Ok(()) => log!(
                    sys,
                    "state: partition {STATE_INDEX} of {} grown to the end of the disk ({} MiB)",
                    disk_path.display(),
                    length / MIB
                ),
                Err(e) => log!(
                    sys,
                    "state: the table of {} now gives partition {STATE_INDEX} {} MiB, but the kernel refused the new size (BLKPG_RESIZE_PARTITION: {e}); it applies on the next boot",
                    disk_path.display(),
                    length / MIB
                ),
            }
        }
        Err(e) => log!(
            sys,
            "state: cannot grow partition {STATE_INDEX} of {}: {e}; keeping its size",
            disk_path.display()
        ),
    }
}

/// Mounts the state partition on `/sysroot/state`, growing it first when it
/// does not fill the disk. `false`: there is no usable state this boot.
pub fn mount_state(sys: &mut impl Sys, disk: &Disk) -> bool {
    if !disk.has_partition(STATE_INDEX) {
        log!(
            sys,
            "state: {} has no partition {STATE_INDEX}; booting without state (/etc and /var read-only)",
            disk.path().display()
        );
        return false;
    }
    let dev = disk.partition_path(STATE_INDEX);
    let fs_size = sys
        .read_at(&dev, 1024, 1024)
        .ok()
        .and_then(|sb| ext4_size(&sb));
    let Some((fs_blocks, block_size)) = fs_size else {
        log!(
            sys,
            "state: {} holds no ext4 filesystem; booting without state (it is never formatted here: that would lose data)",
            dev.display()
        );
        return false;
    };
    grow_partition(sys, disk);
    let args = state_mount(&dev);
    if let Err(e) = sys.mkdir(Path::new(STATE_MOUNT), 0o755) {
        log!(
            sys,
            "state: cannot make {STATE_MOUNT}: {e}; booting without state"
        );
        return false;
    }
    if let Err(e) = sys.mount(&args) {
        log!(
            sys,
            "state: cannot mount {} (ext4) on {STATE_MOUNT}: {e}; booting without state (/etc and /var read-only)",
            dev.display()
        );
        return false;
    }
    let fs_bytes = fs_blocks * block_size;
    match sys.device_bytes(&dev) {
        Ok(part_bytes) if part_bytes / block_size > fs_blocks => {
            let new_blocks = part_bytes / block_size;
            match sys.ext4_resize(Path::new(STATE_MOUNT), new_blocks) {
                Ok(()) => log!(
                    sys,
                    "state: ext4 on {} grown from {} MiB to {} MiB",
                    dev.display(),
                    fs_bytes / MIB,
                    new_blocks * block_size / MIB
                ),
                Err(e) => log!(
                    sys,
                    "state: cannot grow ext4 on {} to {} MiB (EXT4_IOC_RESIZE_FS: {e}); continuing with {} MiB",
                    dev.display(),
                    new_blocks * block_size / MIB,
                    fs_bytes / MIB
                ),
            }
        }
        Ok(_) => log!(
            sys,
            "state: {} (ext4, {} MiB) mounted on {STATE_MOUNT}",
            dev.display(),
            fs_bytes / MIB
        ),
        Err(e) => log!(
            sys,
            "state: cannot read the size of {}: {e}; not growing it",
            dev.display()
        ),
    }
    true
}

/// `/etc`: overlay of the image's `/etc` with an upper layer on state;
/// `/var`: a bind mount of `state/var`. Failures leave that directory as the
/// image has it (read-only) and are logged.
pub fn overlays(sys: &mut impl Sys) {
    for dir in ["etc", "etc/upper", "etc/work", "var"] {
        let path = format!("{STATE_MOUNT}/{dir}");
        if let Err(e) = sys.mkdir(Path::new(&path), 0o755) {
            log!(sys, "state: cannot make {path}: {e}");
        }
    }
    let etc = MountArgs {
        source: Cow::Borrowed("overlay"),
        target: "/sysroot/etc",
        fstype: "overlay",
        flags: MountFlags::NODEV,
        data: Some(
            c"lowerdir=/sysroot/etc,upperdir=/sysroot/state/etc/upper,workdir=/sysroot/state/etc/work",
        ),
    };
    if let Err(e) = sys.mount(&etc) {
        log!(
            sys,
            "cannot mount the /etc overlay (upper {STATE_MOUNT}/etc/upper): {e}; /etc stays read-only (is overlay.ko in modules.load?)"
        );
    }
    let var = Path::new("/sysroot/var");
    if let Err(e) = sys.bind_mount(Path::new(&format!("{STATE_MOUNT}/var")), var) {
        log!(
            sys,
            "cannot bind {STATE_MOUNT}/var on {SYSROOT}/var: {e}; /var stays read-only"
        );
    }
}

/// How the state filesystem (ext4 on `dev`) is mounted at [`STATE_MOUNT`],
/// from a disk's state partition or a diskless machine's `ballast-state`.
pub(crate) fn state_mount(dev: &Path) -> MountArgs {
    MountArgs {
        source: Cow::Owned(dev.display().to_string()),
        target: STATE_MOUNT,
        fstype: "ext4",
        flags: MountFlags::NOATIME
            .union(MountFlags::NODEV)
            .union(MountFlags::NOSUID),
        data: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(blocks: u64, log_size: u32, bit64: bool) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
        sb[4..8].copy_from_slice(&(blocks as u32).to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&log_size.to_le_bytes());
        if bit64 {
            sb[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
            sb[0x150..0x154].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
        }
        sb
    }

    #[test]
    fn ext4_superblock_sizes() {
        assert_eq!(ext4_size(&superblock(8192, 2, false)), Some((8192, 4096)));
        assert_eq!(
            ext4_size(&superblock(1 << 33, 2, true)),
            Some((1 << 33, 4096))
        );
        assert_eq!(ext4_size(&superblock(65536, 0, false)), Some((65536, 1024)));
        assert_eq!(ext4_size(&[0u8; 1024]), None);
        assert_eq!(ext4_size(&[0u8; 10]), None);
    }
}
