//! Stage 1 of a live boot (`ballast.live=VOLUME`, the ISO's boot entry): find
//! the medium (a CD through `sr`, a USB stick, a virtio disk) by its ISO 9660
//! volume id, mount it read-only on [`paths::MEDIUM`], attach its root image
//! ([`paths::MEDIUM_ROOT_IMAGE`]) to a read-only loop device, map that through
//! dm-verity with the root hash of `ballast.verity=`, mount it on `/sysroot`,
//! put the state on a tmpfs (so `/etc` and `/var` are writable and nothing is
//! written to any disk), and switch_root.
//!
//! It must never boot a root it could not verify, and never write to a disk:
//! it opens block devices only to read their volume descriptor.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::mount::MountFlags;

use crate::log;
use crate::root::{self, RootError};
use crate::stage1::Ending;
use crate::state::STATE_MOUNT;
use crate::sys::{MountArgs, Sys};
use ballast_device::cmdline::Cmdline;
use ballast_device::paths;

/// CDs and USB sticks take longer than virtio disks to show up.
pub const MEDIUM_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);
/// The primary volume descriptor: sector 16 of 2048 bytes.
const PVD_OFFSET: u64 = 16 * 2048;

/// The volume id of an ISO 9660 primary volume descriptor (`CD001`, type 1),
/// without its space padding; `None` for anything else.
pub fn iso_volume_id(pvd: &[u8]) -> Option<String> {
    if pvd.first() != Some(&1) || pvd.get(1..6) != Some(b"CD001") {
        return None;
    }
    let id = pvd.get(40..72)?;
    Some(String::from_utf8_lossy(id).trim_end().to_string())
}

fn is_candidate(name: &str) -> bool {
    !["loop", "ram", "dm-", "zram", "md", "nbd"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Polls `/sys/block` until a device carrying the ISO 9660 volume `volume`
/// appears; returns its path (`/dev/sr0`, `/dev/sda`).
pub fn find_medium(sys: &mut impl Sys, volume: &str) -> Result<PathBuf, RootError> {
    let start = sys.now();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let names = sys.list_dir(Path::new("/sys/block")).unwrap_or_default();
        for name in names.into_iter().filter(|n| is_candidate(n)) {
            let path = PathBuf::from(format!("/dev/{name}"));
            let note = match sys.read_at(&path, PVD_OFFSET, 2048) {
                Ok(pvd) => match iso_volume_id(&pvd) {
                    Some(id) if id == volume => return Ok(path),
                    Some(id) => format!("{name} (ISO volume {id})"),
                    None => format!("{name} (not ISO 9660)"),
                },
                Err(e) => format!("{name} ({e})"),
            };
            if !seen.contains(&note) {
                seen.push(note);
            }
        }
        if sys.now().saturating_sub(start) >= MEDIUM_WAIT {
            return Err(RootError::MediumNotFound {
                volume: volume.to_string(),
                secs: MEDIUM_WAIT.as_secs(),
                seen: if seen.is_empty() {
                    "none".into()
                } else {
                    seen.join(", ")
                },
            });
        }
        sys.sleep(POLL);
    }
}

/// Stage 1 of a live boot, from the command line to exec of stage 2.
pub fn boot_live(sys: &mut impl Sys, cmdline: &Cmdline) -> Ending {
    match live_root(sys, cmdline) {
        Ok(()) => Ending::SwitchedRoot,
        Err(e) => root::refuse(sys, "live", &e),
    }
}

fn live_root(sys: &mut impl Sys, cmdline: &Cmdline) -> Result<(), RootError> {
    let volume = cmdline.live().ok_or(RootError::Missing("live"))?;
    let verity = cmdline.verity().ok_or(RootError::Missing("verity"))?;
    let verity = ballast_verity::Verity::from_cmdline(verity).map_err(RootError::BadVerity)?;
    // The medium is a CD or a USB stick, its root image on a loop device:
    // their modules load beside the rest of stage 1 (`modules.load`).
    crate::stage1::finish_beside(sys);
    let medium = find_medium(sys, volume)?;
    log!(sys, "live: medium {volume} is {}", medium.display());
    let step = |what: &str| {
        let what = what.to_string();
        move |errno| RootError::Medium { step: what, errno }
    };
    sys.mkdir(Path::new("/run/ballast"), 0o755)
        .map_err(step("mkdir /run/ballast"))?;
    sys.mkdir(Path::new(paths::MEDIUM), 0o755)
        .map_err(step(&format!("mkdir {}", paths::MEDIUM)))?;
    let args = MountArgs {
        source: Cow::Owned(medium.display().to_string()),
        target: paths::MEDIUM,
        fstype: "iso9660",
        flags: MountFlags::RDONLY
            .union(MountFlags::NODEV)
            .union(MountFlags::NOSUID)
            .union(MountFlags::NOEXEC),
        data: None,
    };
    sys.mount(&args).map_err(step(&format!(
        "mounting {} (iso9660) on {}",
        medium.display(),
        paths::MEDIUM
    )))?;
    let image = Path::new(paths::MEDIUM).join(paths::MEDIUM_ROOT_IMAGE);
    let dev = sys.loop_attach(&image).map_err(step(&format!(
        "attaching {} to a loop device",
        image.display()
    )))?;
    log!(sys, "live: {} on {}", image.display(), dev.display());
    root::verify_and_mount(sys, &dev.display().to_string(), &verity, "live medium")?;
    state_in_ram(sys);
    root::switch_root(sys)
}

/// The state of a live system lives in RAM: a tmpfs on `/sysroot/state`, with
/// the same `/etc` overlay and `/var` as on a disk. Failures leave `/etc` and
/// `/var` read-only and are logged.
pub(crate) fn state_in_ram(sys: &mut impl Sys) {
    if let Err(e) = sys.mkdir(Path::new(STATE_MOUNT), 0o755) {
        log!(
            sys,
            "live: cannot make {STATE_MOUNT}: {e}; no writable state"
        );
        return;
    }
    let args = MountArgs {
        source: Cow::Borrowed("state"),
        target: STATE_MOUNT,
        fstype: "tmpfs",
        flags: MountFlags::NODEV.union(MountFlags::NOSUID),
        data: Some(c"mode=0755"),
    };
    match sys.mount(&args) {
        Ok(()) => {
            log!(sys, "live: state on tmpfs (RAM); no disk is written");
            crate::state::overlays(sys);
        }
        Err(e) => log!(
            sys,
            "live: cannot mount a tmpfs on {STATE_MOUNT}: {e}; /etc and /var stay read-only"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage1::boot;
    use crate::testsys::{Action, TestSys};

    fn pvd(volume: &str) -> Vec<u8> {
        let mut b = vec![0u8; 2048];
        b[0] = 1;
        b[1..6].copy_from_slice(b"CD001");
        b[40..72].copy_from_slice(format!("{volume:<32}").as_bytes());
        b
    }

    #[test]
    fn reads_the_volume_id() {
        assert_eq!(
            iso_volume_id(&pvd("BALLAST_AB")).as_deref(),
            Some("BALLAST_AB")
        );
        assert_eq!(iso_volume_id(&[0u8; 2048]), None);
        assert_eq!(iso_volume_id(&[1u8; 3]), None);
    }

    #[test]
    fn a_live_boot_mounts_the_medium_verifies_its_root_and_keeps_state_in_ram() {
        let verity = ballast_verity::Verity {
            root_hash: [0xab; 32],
            salt: vec![0x12; 32],
            data_blocks: 2048,
            data_block_size: 4096,
            hash_block_size: 4096,
            hash_offset: 2048 * 4096,
            uuid: [0; 16],
        };
        let mut sys = TestSys::booted_with(&format!(
            "console=ttyS0 {} ballast.live=BALLAST_AB",
            verity.to_cmdline()
        ));
        sys.block_devices = vec![("vda".into(), 0), ("sr0".into(), 0)];
        let mut image = vec![0u8; 16 * 2048];
        image.extend(pvd("BALLAST_AB"));
        sys.files.insert(PathBuf::from("/dev/sr0"), image);
        sys.files
            .insert(PathBuf::from("/sysroot/sbin/init"), b"init".to_vec());
        assert_eq!(boot(&mut sys, None), Ending::SwitchedRoot);
        let mounts: Vec<(String, String)> = sys
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Mount { fstype, target } => Some((fstype.clone(), target.clone())),
                _ => None,
            })
            .collect();
        let has = |f: &str, t: &str| mounts.contains(&(f.to_string(), t.to_string()));
        assert!(has("iso9660", paths::MEDIUM), "{mounts:?}");
        assert!(has("squashfs", "/sysroot"), "{mounts:?}");
        assert!(has("tmpfs", STATE_MOUNT), "{mounts:?}");
        assert!(!mounts.iter().any(|(f, _)| f == "ext4" || f == "vfat"));
        assert!(sys.actions.contains(&Action::Loop(format!(
            "{}/{}",
            paths::MEDIUM,
            paths::MEDIUM_ROOT_IMAGE
        ))));
    }

    #[test]
    fn a_missing_medium_is_named_and_refused() {
        let verity = ballast_verity::Verity {
            root_hash: [0xab; 32],
            salt: vec![0x12; 32],
            data_blocks: 2048,
            data_block_size: 4096,
            hash_block_size: 4096,
            hash_offset: 2048 * 4096,
            uuid: [0; 16],
        };
        let mut sys =
            TestSys::booted_with(&format!("ballast.live=BALLAST_XY {}", verity.to_cmdline()));
        sys.block_devices = vec![("vda".into(), 0)];
        boot(&mut sys, None);
        let messages = sys.messages();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("no medium with ISO 9660 volume id BALLAST_XY")),
            "{messages:?}"
        );
    }
}
