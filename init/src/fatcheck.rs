//! The boot partition is checked, and repaired, before it is mounted
//! read-write when a power cut left it dirty (what `systemd-fsck` does for an
//! EFI system partition).
//!
//! Linux sets FAT's "dirty" bit when it mounts a volume and clears it at a
//! clean unmount. A power cut in the middle of a vfat write can leave a
//! directory entry whose cluster chain runs into a free FAT entry (vfat writes
//! the entry and the FAT separately). At the first truncate of that file Linux
//! reports `fat_free_clusters: deleting FAT entry beyond EOF` and sets the whole
//! partition read-only, and from then on no update can write its kernel (the
//! arm64 update story hit this after its power cut).
//!
//! The checker is dosfstools' `fsck.fat -a -w` from the verified root's admin
//! userland (`userland.rs`). A clean volume is not checked, so a normal boot
//! pays one sector read.

use std::path::Path;

use crate::log;
use crate::sys::Sys;
use crate::userland::{self, last_lines};

/// The checker, inside the userland.
const FSCK_FAT: &str = "usr/sbin/fsck.fat";

/// Whether a FAT boot sector says its volume was not cleanly unmounted: bit 0
/// (Linux `FAT_STATE_DIRTY`) of the state byte, which sits at 0x41 on FAT32
/// (whose 16-bit FAT size at 0x16 is zero) and at 0x25 on FAT12/16. `None`:
/// not a FAT boot sector.
pub fn is_dirty(sector: &[u8]) -> Option<bool> {
    if sector.len() < 512 || sector[510..512] != [0x55, 0xaa] {
        return None;
    }
    let fat32 = sector[0x16] == 0 && sector[0x17] == 0;
    let state = if fat32 { sector[0x41] } else { sector[0x25] };
    Some(state & 0x01 != 0)
}

/// Checks and repairs `dev` (the boot partition, not mounted) if it is dirty.
/// Never fails the boot: what it could not do is said on the console, and the
/// mount goes ahead as before.
pub fn repair_if_dirty(sys: &mut impl Sys, dev: &Path) {
    let sector = match sys.read_at(dev, 0, 512) {
        Ok(s) => s,
        Err(e) => {
            log!(
                sys,
                "boot: cannot read {}'s boot sector ({e}); not checked",
                dev.display()
            );
            return;
        }
    };
    if is_dirty(&sector) != Some(true) {
        return;
    }
    let dev_s = dev.display().to_string();
    let fsck_s = userland::path(FSCK_FAT);
    match userland::run(sys, FSCK_FAT, &["-a", "-w", &dev_s]) {
        // fsck.fat: 0 nothing to repair, 1 repaired.
        Ok((Some(code @ (0 | 1)), out)) => {
            let what = if code == 0 { "nothing to repair" } else { "repaired" };
            log!(
                sys,
                "boot: {dev_s} was not cleanly unmounted; fsck.fat -a: {what}{}",
                last_lines(&out)
            );
        }
        Ok((code, out)) => log!(
            sys,
            "boot: {dev_s} was not cleanly unmounted; fsck.fat -a failed (exit {}); mounting it as it is{}",
            code.map_or_else(|| "by a signal".to_string(), |c| c.to_string()),
            last_lines(&out)
        ),
        Err(e) => log!(
            sys,
            "boot: {dev_s} was not cleanly unmounted, and {fsck_s} cannot run ({e}); mounting it unchecked"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsys::TestSys;
    use crate::userland::USERLAND;
    use std::path::PathBuf;

    fn sector(fat32: bool, state: u8) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[510] = 0x55;
        s[511] = 0xaa;
        if fat32 {
            s[0x41] = state;
        } else {
            s[0x16] = 0x20; // sectors per FAT (16-bit): a FAT12/16 volume
            s[0x25] = state;
        }
        s
    }

    #[test]
    fn the_dirty_bit_is_read_where_each_fat_keeps_it() {
        assert_eq!(is_dirty(&sector(true, 1)), Some(true));
        assert_eq!(is_dirty(&sector(true, 0)), Some(false));
        assert_eq!(is_dirty(&sector(false, 1)), Some(true));
        assert_eq!(is_dirty(&sector(false, 0)), Some(false));
        // The other FAT type's byte says nothing.
        let mut s = sector(false, 0);
        s[0x41] = 1;
        assert_eq!(is_dirty(&s), Some(false));
        assert_eq!(is_dirty(&[0u8; 512]), None);
        assert_eq!(is_dirty(&[0u8; 12]), None);
    }

    #[test]
    fn a_clean_volume_is_not_checked() {
        let mut sys = TestSys::booted_with("");
        sys.files
            .insert(PathBuf::from("/dev/vda1"), sector(true, 0));
        repair_if_dirty(&mut sys, Path::new("/dev/vda1"));
        assert!(sys.ran.is_empty(), "{:?}", sys.ran);
        assert!(sys.console().is_empty(), "{:?}", sys.console());
    }

    #[test]
    fn a_dirty_volume_is_repaired_with_the_userland_s_fsck_fat() {
        let mut sys = TestSys::booted_with("");
        sys.files
            .insert(PathBuf::from("/dev/vda1"), sector(true, 1));
        sys.run_results.push_back(Ok((
            Some(1),
            "fsck.fat 4.2\n/ballast/b/vmlinuz.tmp\n  Contains a free cluster (1234). Assuming EOF.\n/dev/vda1: 12 files, 9000/60000 clusters\nCannot initialize conversion from codepage 850 to ANSI_X3.4-1968: Invalid argument\nUsing internal CP850 conversion table\n".to_string(),
        )));
        repair_if_dirty(&mut sys, Path::new("/dev/vda1"));
        let argv = sys.ran.first().expect("fsck.fat ran");
        assert!(
            argv[0].starts_with(USERLAND) && argv[0].contains("ld-linux"),
            "{argv:?}"
        );
        assert_eq!(argv[1], "--library-path");
        assert_eq!(argv[3], format!("{USERLAND}/{FSCK_FAT}"));
        assert_eq!(&argv[4..], ["-a", "-w", "/dev/vda1"]);
        let said = sys.console().join("\n");
        assert!(
            said.contains("was not cleanly unmounted; fsck.fat -a: repaired"),
            "{said}"
        );
        assert!(said.contains("Contains a free cluster"), "{said}");
        assert!(!said.contains("CP850"), "{said}");
    }

    #[test]
    fn a_checker_that_cannot_run_leaves_the_mount_to_go_ahead() {
        let mut sys = TestSys::booted_with("");
        sys.files
            .insert(PathBuf::from("/dev/vda1"), sector(false, 1));
        repair_if_dirty(&mut sys, Path::new("/dev/vda1"));
        let said = sys.console().join("\n");
        assert!(said.contains("cannot run"), "{said}");
        assert!(said.contains("mounting it unchecked"), "{said}");
    }
}
