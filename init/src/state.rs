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

use crate::ext4;
use crate::log;
use crate::root::{Disk, STATE_INDEX, SYSROOT};
use crate::sys::{MountArgs, Sys};

pub const STATE_MOUNT: &str = "/sysroot/state";
const MIB: u64 = 1024 * 1024;

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
    let superblock = sys
        .read_at(&dev, ext4::SUPERBLOCK_AT, ext4::SUPERBLOCK_LEN)
        .ok();
    let fs_size = superblock.as_deref().and_then(ext4::size);
    let Some((mut fs_blocks, block_size)) = fs_size else {
        log!(
            sys,
            "state: {} holds no ext4 filesystem; booting without state (it is never formatted here: that would lose data)",
            dev.display()
        );
        return false;
    };
    grow_partition(sys, disk);
    if superblock.as_deref().and_then(ext4::needs_recovery) == Some(true) {
        if let Some(blocks) = check_interrupted_grow(sys, &dev, fs_blocks * block_size) {
            fs_blocks = blocks;
        }
    }
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
                Ok(()) => {
                    // Make the grow durable at once rather than at the next
                    // journal commit: a power cut in the seconds after it
                    // once left a block bitmap that `e2fsck -f` found wrong
                    // after the journal's replay (`ballast bench powercut`,
                    // arm64 seed 19 run 92). This shortens that window.
                    sys.sync();
                    log!(
                        sys,
                        "state: ext4 on {} grown from {} MiB to {} MiB",
                        dev.display(),
                        fs_bytes / MIB,
                        new_blocks * block_size / MIB
                    )
                }
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
    log_reserve(sys, &dev);
    true
}

/// The checker of the state filesystem, inside the admin userland.
const E2FSCK: &str = "usr/sbin/e2fsck";

/// A state filesystem that was not cleanly unmounted (its journal needs
/// replaying) and is smaller than its partition was cut off while first boot
/// grew it: `ballast bench powercut` found such a filesystem once with a block
/// bitmap that `e2fsck -f` called wrong after the kernel's journal replay
/// (blocks in use, marked free: a later write could take them twice). It
/// holds little yet, and a full check of it is quick: run e2fsprogs'
/// `e2fsck -f -p` (replay, check, repair what is safe) before mounting it.
/// Any other unclean state is left to the kernel's journal replay, as
/// before. Returns the filesystem's block count after the check. Never fails
/// the boot: what the check could not do is said, and the mount goes ahead.
fn check_interrupted_grow(sys: &mut impl Sys, dev: &Path, fs_bytes: u64) -> Option<u64> {
    let part_bytes = sys.device_bytes(dev).ok()?;
    if part_bytes <= fs_bytes {
        return None;
    }
    let dev_s = dev.display().to_string();
    match crate::userland::run(sys, E2FSCK, &["-f", "-p", &dev_s]) {
        // e2fsck: 0 clean, 1 repaired, 2 repaired (reboot if mounted).
        Ok((Some(code @ (0..=2)), out)) => log!(
            sys,
            "state: {dev_s} was cut off while it grew; e2fsck -f -p: {}{}",
            if code == 0 { "clean" } else { "repaired" },
            crate::userland::last_lines(&out)
        ),
        Ok((code, out)) => log!(
            sys,
            "state: {dev_s} was cut off while it grew; e2fsck -f -p could not repair it (exit {}); mounting it as it is{}",
            code.map_or_else(|| "by a signal".to_string(), |c| c.to_string()),
            crate::userland::last_lines(&out)
        ),
        Err(e) => log!(
            sys,
            "state: {dev_s} was cut off while it grew, and {} cannot run ({e}); mounting it unchecked",
            crate::userland::path(E2FSCK)
        ),
    }
    let sb = sys
        .read_at(dev, ext4::SUPERBLOCK_AT, ext4::SUPERBLOCK_LEN)
        .ok()?;
    ext4::size(&sb).map(|(blocks, _)| blocks)
}

/// Says how much of the state filesystem is kept for sysd and SSH (ext4's
/// reserved blocks, see [`RESERVE_ID`]).
fn log_reserve(sys: &mut impl Sys, dev: &Path) {
    let sb = sys.read_at(dev, ext4::SUPERBLOCK_AT, ext4::SUPERBLOCK_LEN);
    if let Ok(sb) = sb {
        if let (Some((blocks, block_size)), Some(reserved)) =
            (ext4::size(&sb), ext4::reserved_blocks(&sb))
        {
            log!(
                sys,
                "state: {:.1} MiB of {} MiB reserved for sysd and SSH (CAP_SYS_RESOURCE): a full /var keeps them writing",
                (reserved * block_size) as f64 / MIB as f64,
                blocks * block_size / MIB
            );
        }
    }
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

/// The user and group ext4's reserved blocks belong to on the state
/// filesystem, besides any process with `CAP_SYS_RESOURCE`: an id nothing
/// runs as. ext4's default is uid 0, and containers run as uid 0 (Docker's,
/// and the first-boot config's, in the host's user namespace) without
/// `CAP_SYS_RESOURCE`: with the default, a container filling `/var` takes the
/// reserve too and sysd, SSH and updates meet ENOSPC. sysd (every capability)
/// and the SSH container (keeps `CAP_SYS_RESOURCE`) still write into it.
pub const RESERVE_ID: u32 = 0x7fff_fffe;
const RESERVE_OPTIONS: &std::ffi::CStr = c"resuid=2147483646,resgid=2147483646";

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
        data: Some(RESERVE_OPTIONS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_belongs_to_an_id_nothing_runs_as() {
        let options = RESERVE_OPTIONS.to_str().expect("ASCII");
        assert_eq!(options, format!("resuid={RESERVE_ID},resgid={RESERVE_ID}"));
        assert_eq!(
            state_mount(Path::new("/dev/vda4")).data,
            Some(RESERVE_OPTIONS)
        );
    }
}
