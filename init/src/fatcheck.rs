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
//! userland, run through that userland's own dynamic loader: stage 1 has no C
//! library of its own. A clean volume is not checked, so a normal boot pays
//! one sector read.

use std::path::{Path, PathBuf};

use crate::log;
use crate::sys::Sys;

/// The admin userland inside the mounted root (`/sysroot`).
const USERLAND: &str = "/sysroot/usr/lib/ballast/userland";
/// The checker, inside the userland.
const FSCK_FAT: &str = "usr/sbin/fsck.fat";

/// The userland's dynamic loader and library directory for this build's arch.
#[cfg(target_arch = "aarch64")]
const LOADER: (&str, &str) = (
    "usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
    "usr/lib/aarch64-linux-gnu",
);
#[cfg(target_arch = "x86_64")]
const LOADER: (&str, &str) = (
    "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "usr/lib/x86_64-linux-gnu",
);
#[cfg(target_arch = "arm")]
const LOADER: (&str, &str) = (
    "usr/lib/arm-linux-gnueabihf/ld-linux-armhf.so.3",
    "usr/lib/arm-linux-gnueabihf",
);

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
    let userland = Path::new(USERLAND);
    let loader = userland.join(LOADER.0);
    let fsck = userland.join(FSCK_FAT);
    let libs: PathBuf = userland.join(LOADER.1);
    let (loader_s, libs_s, fsck_s, dev_s) = (
        loader.display().to_string(),
        libs.display().to_string(),
        fsck.display().to_string(),
        dev.display().to_string(),
    );
    let argv = [
        loader_s.as_str(),
        "--library-path",
        libs_s.as_str(),
        fsck_s.as_str(),
        "-a",
        "-w",
        dev_s.as_str(),
    ];
    match sys.run_to_end(&loader, &argv) {
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

/// The checker's last lines, for the console: what it found and did.
fn last_lines(out: &str) -> String {
    // The userland ships no gconv modules: fsck.fat says so on every run and
    // falls back to its own code page table, which is all a check needs.
    let noise = |l: &str| l.contains("initialize conversion") || l.contains("internal CP850");
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !noise(l))
        .collect();
    let tail = &lines[lines.len().saturating_sub(6)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {}", tail.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsys::TestSys;

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
