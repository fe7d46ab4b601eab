//! A diskless machine's state on a local disk: the first partition (or whole
//! disk) whose ext4 filesystem is labelled `ballast-state` (Alpine's data
//! mode). `/etc`'s overlay and `/var` live on it and survive reboots while the
//! root still comes over the network each boot. Without one, the state is in
//! RAM as before ([`crate::live::state_in_ram`]).
//!
//! Nothing here makes, grows or checks a filesystem: the operator makes it
//! (`mkfs.ext4 -L ballast-state DEVICE`), and one that cannot be mounted leaves
//! the state in RAM, with a console line, so a bad disk never stops a boot.

use std::path::{Path, PathBuf};

use crate::ext4;
use crate::log;
use crate::root::{is_candidate, partition_path};
use crate::state::STATE_MOUNT;
use crate::sys::Sys;

/// The ext4 label that marks a local state partition.
pub const LABEL: &str = "ballast-state";

/// Every partition of every disk, then the disk itself (a filesystem on a
/// whole disk).
fn candidates(sys: &mut impl Sys) -> Vec<PathBuf> {
    let Ok(mut names) = sys.list_dir(Path::new("/sys/block")) else {
        return Vec::new();
    };
    names.sort();
    let mut devices = Vec::new();
    for name in names.into_iter().filter(|n| is_candidate(n)) {
        let disk = PathBuf::from(format!("/dev/{name}"));
        if let Ok(table) = sys.read_partition_table(&disk) {
            devices.extend(
                table
                    .partitions
                    .iter()
                    .map(|p| partition_path(&name, p.index)),
            );
        }
        devices.push(disk);
    }
    devices
}

/// The first block device whose ext4 label is [`LABEL`].
pub fn find(sys: &mut impl Sys) -> Option<PathBuf> {
    candidates(sys).into_iter().find(|dev| {
        sys.read_at(dev, ext4::SUPERBLOCK_AT, ext4::SUPERBLOCK_LEN)
            .ok()
            .and_then(|sb| ext4::label(&sb))
            .is_some_and(|label| label == LABEL)
    })
}

/// Mounts the local state partition on `/sysroot/state` with the `/etc`
/// overlay and `/var` on it, or, when there is none or it cannot be mounted,
/// keeps the state in RAM.
pub fn local_or_ram(sys: &mut impl Sys) {
    let Some(dev) = find(sys) else {
        crate::live::state_in_ram(sys);
        return;
    };
    let args = crate::state::state_mount(&dev);
    let mounted = sys
        .mkdir(Path::new(STATE_MOUNT), 0o755)
        .and_then(|()| sys.mount(&args));
    match mounted {
        Ok(()) => {
            log!(
                sys,
                "netboot: state on {} (ext4 labelled {LABEL}): kept across reboots",
                dev.display()
            );
            crate::state::overlays(sys);
        }
        Err(e) => {
            log!(
                sys,
                "netboot: cannot mount {} (ext4 labelled {LABEL}) on {STATE_MOUNT}: {e}; the state stays in RAM",
                dev.display()
            );
            crate::live::state_in_ram(sys);
        }
    }
}
