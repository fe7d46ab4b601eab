//! Stage 1, second half: from the kernel command line of a slot to the real
//! root, in order: find the disk by GUID, map the slot's root partition through
//! dm-verity, mount it read-only on `/sysroot`, mount (and on first boot grow)
//! the state partition, put the `/etc` overlay and `/var` on it, switch_root,
//! and exec the same binary as stage 2.
//!
//! It must never boot a root it could not verify: any failure up to the root
//! mount refuses the slot — it says why on the console and reboots so the
//! bootloader's counter moves on to the other slot. Failures after that (state,
//! overlays) are logged and the boot goes on with less: a read-only `/etc` is
//! better than no machine, and the state partition is never reformatted.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::io::Errno;
use rustix::mount::MountFlags;

use ballast_slot::SlotId;

use crate::dm::{self, DmError};
use crate::log;
use crate::stage1::Ending;
use crate::sys::{MountArgs, PartTable, Shutdown, Sys};
use ballast_device::cmdline::Cmdline;
use ballast_device::paths;

/// Where the real root is mounted before the switch.
pub use ballast_device::paths::SYSROOT;
/// The device-mapper name of the verified root.
pub const DM_NAME: &str = "ballast-root";
/// Partition number of the state partition on every Ballast disk.
pub const STATE_INDEX: u32 = ballast_slot::boot_files::PART_STATE;
/// Partition number of the boot partition (vfat: bootloader, slot state).
pub const BOOT_INDEX: u32 = ballast_slot::boot_files::PART_BOOT;
/// Where the boot partition is mounted before the switch (`/boot` after it).
pub const BOOT_MOUNT: &str = "/sysroot/boot";
/// Virtio and USB disks probe asynchronously; wait this long for ours.
pub const DISK_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
/// Stage 2 is this binary on the real root.
pub use ballast_device::paths::STAGE2;

/// Why a slot's root was refused.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error(transparent)]
    Stage1(crate::stage1::Stage1Error),
    #[error("kernel command line: ballast.slot={0:?} is not a slot (expected a or b)")]
    BadSlot(String),
    #[error(
        "kernel command line has no ballast.{0}=; the boot entry is incomplete (rebuild the image)"
    )]
    Missing(&'static str),
    #[error("kernel command line: {0}")]
    BadVerity(ballast_verity::VerityError),
    #[error("no disk with GUID {guid} appeared within {secs} s (block devices seen: {seen}); is the disk attached and its driver listed in modules.load?")]
    DiskNotFound {
        guid: String,
        secs: u64,
        seen: String,
    },
    #[error("no medium with ISO 9660 volume id {volume} appeared within {secs} s (block devices seen: {seen}); is the CD or USB stick attached, and its driver (sr_mod, ahci, usb-storage, xhci_pci, virtio_scsi) in modules.load?")]
    MediumNotFound {
        volume: String,
        secs: u64,
        seen: String,
    },
    #[error("live medium: {step} failed: {errno}{hint}", hint = if *errno == Errno::NODEV { " (no iso9660 in the kernel: list isofs.ko in modules.load)" } else if *errno == Errno::NOENT || *errno == Errno::NXIO { " (no loop device: list loop.ko in modules.load; or the ISO lacks ballast/root.img)" } else { "" })]
    Medium { step: String, errno: Errno },
    #[error("network root: {0}")]
    Net(String),
    #[error("disk {disk} (GUID {guid}) has no partition {index} for slot {slot}")]
    NoPartition {
        disk: String,
        guid: String,
        index: u32,
        slot: &'static str,
    },
    #[error("cannot create /dev/mapper/control (char 10:236): {0}; is dm-mod loaded?")]
    Control(Errno),
    #[error("dm-verity for {part}: {source}")]
    Verity { part: String, source: DmError },
    #[error("mounting the verified root {dev} (squashfs, read-only) on {SYSROOT} failed: {errno}{hint}", hint = mount_hint(*errno))]
    Mount { dev: String, errno: Errno },
    #[error("switch_root: {step} failed: {errno}")]
    Switch { step: String, errno: Errno },
    #[error("switch_root: exec {STAGE2} on the new root failed: {0}; the root image lacks init")]
    Exec(std::io::Error),
    #[error("cannot read {SYSROOT}{STAGE2} (stage 2): {source}{hint}", hint = if source.raw_os_error() == Some(Errno::IO.raw_os_error()) { " (dm-verity found blocks that do not match the root hash: the slot is corrupt or was altered)" } else { " (the root image lacks init)" })]
    Stage2Unreadable { source: std::io::Error },
}

fn mount_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::IO => " (dm-verity found blocks that do not match the root hash: the slot is corrupt or was altered)",
        Errno::NODEV => " (no squashfs in the kernel: list squashfs.ko in modules.load)",
        Errno::INVAL => " (not a squashfs image, or a compression the kernel lacks)",
        _ => "",
    }
}

/// What the command line of a slot's boot entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPlan {
    pub slot: SlotId,
    pub disk_guid: String,
    pub verity: ballast_verity::Verity,
}

impl RootPlan {
    pub fn from_cmdline(cmdline: &Cmdline) -> Result<RootPlan, RootError> {
        let slot_value = cmdline.slot().unwrap_or("");
        let slot =
            SlotId::parse(slot_value).ok_or_else(|| RootError::BadSlot(slot_value.into()))?;
        let disk_guid = cmdline
            .disk()
            .ok_or(RootError::Missing("disk"))?
            .to_string();
        let verity = cmdline.verity().ok_or(RootError::Missing("verity"))?;
        let verity = ballast_verity::Verity::from_cmdline(verity).map_err(RootError::BadVerity)?;
        Ok(RootPlan {
            slot,
            disk_guid,
            verity,
        })
    }
}

/// The disk we booted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name (`vda`, `nvme0n1`).
    pub name: String,
    pub table: PartTable,
}

impl Disk {
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/{}", self.name))
    }

    /// `/dev/vda2`, or `/dev/nvme0n1p2` when the disk name ends in a digit.
    pub fn partition_path(&self, index: u32) -> PathBuf {
        partition_path(&self.name, index)
    }

    pub fn has_partition(&self, index: u32) -> bool {
        self.table.partitions.iter().any(|p| p.index == index)
    }
}

/// The kernel's partition device name rule (`disk_name()` in block/genhd.c).
pub fn partition_path(disk: &str, index: u32) -> PathBuf {
    let sep = if disk.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    PathBuf::from(format!("/dev/{disk}{sep}{index}"))
}

pub(crate) fn is_candidate(name: &str) -> bool {
    !["loop", "ram", "dm-", "zram", "sr", "md", "nbd"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Polls `/sys/block` until a disk whose table carries `guid` appears.
pub fn find_disk(sys: &mut impl Sys, guid: &str) -> Result<Disk, RootError> {
    let start = sys.now();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let names = sys.list_dir(Path::new("/sys/block")).unwrap_or_default();
        for name in names.into_iter().filter(|n| is_candidate(n)) {
            let path = PathBuf::from(format!("/dev/{name}"));
            let note = match sys.read_partition_table(&path) {
                Ok(table) if table.matches(guid) => {
                    return Ok(Disk { name, table });
                }
                Ok(table) => format!("{name} (GUID {})", table.disk_guid),
                Err(e) => format!("{name} ({e})"),
            };
            if !seen.contains(&note) {
                seen.push(note);
            }
        }
        if sys.now().saturating_sub(start) >= DISK_WAIT {
            return Err(RootError::DiskNotFound {
                guid: guid.to_string(),
                secs: DISK_WAIT.as_secs(),
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

/// Maps the slot's root partition through dm-verity and mounts it on
/// `/sysroot`. Returns the dm block device.
pub fn mount_verified_root(
    sys: &mut impl Sys,
    plan: &RootPlan,
    disk: &Disk,
) -> Result<PathBuf, RootError> {
    let index = plan.slot.partition_index();
    if !disk.has_partition(index) {
        return Err(RootError::NoPartition {
            disk: disk.path().display().to_string(),
            guid: disk.table.disk_guid.clone(),
            index,
            slot: plan.slot.as_str(),
        });
    }
    let part = disk.partition_path(index).display().to_string();
    verify_and_mount(
        sys,
        &part,
        &plan.verity,
        &format!("slot {}", plan.slot.as_str()),
    )
}

/// Maps `part` through dm-verity with `verity`'s root hash and mounts the
/// result read-only (squashfs) on `/sysroot`. `what` names the root in the log
/// (`slot a`, `live medium`). Returns the dm block device.
pub fn verify_and_mount(
    sys: &mut impl Sys,
    part: &str,
    verity: &ballast_verity::Verity,
    what: &str,
) -> Result<PathBuf, RootError> {
    let part = part.to_string();
    let control = Path::new("/dev/mapper/control");
    if !sys.exists(control) {
        sys.mkdir(Path::new("/dev/mapper"), 0o755)
            .map_err(RootError::Control)?;
        sys.mknod_char(control, 10, 236)
            .map_err(RootError::Control)?;
    }
    let table = verity.table(&part, &part);
    let mapped =
        dm::create_device(sys, DM_NAME, &table, true).map_err(|source| RootError::Verity {
            part: part.clone(),
            source,
        })?;
    let dev = format!("/dev/dm-{}", mapped.minor);
    log!(
        sys,
        "root: {what} on {part} mapped through dm-verity as {dev} (root hash {}, device-mapper {}.{}.{})",
        verity.root_hash_hex(),
        mapped.kernel_version[0],
        mapped.kernel_version[1],
        mapped.kernel_version[2],
    );
    sys.mkdir(Path::new(SYSROOT), 0o755)
        .map_err(|errno| RootError::Mount {
            dev: dev.clone(),
            errno,
        })?;
    let args = MountArgs {
        source: Cow::Owned(dev.clone()),
        target: SYSROOT,
        fstype: "squashfs",
        flags: MountFlags::RDONLY.union(MountFlags::NODEV),
        data: None,
    };
    sys.mount(&args).map_err(|errno| RootError::Mount {
        dev: dev.clone(),
        errno,
    })?;
    start_read_ahead(sys);
    Ok(PathBuf::from(dev))
}

/// Starts sysd's reader of the root's read-ahead list (`sysd --read-ahead`,
/// in `/sysroot`): the files the system containers load on their way to
/// healthy are read into the page cache while stage 1 finishes and sysd
/// starts, instead of one page fault at a time. The reader outlives stage 1
/// (stage 2 reaps it) and only reads; a root without a list starts none.
fn start_read_ahead(sys: &mut impl Sys) {
    let root = Path::new(SYSROOT);
    let under = |p: &str| root.join(p.trim_start_matches('/'));
    if !sys.exists(&under(paths::READ_AHEAD)) {
        return;
    }
    let sysd = under(paths::SYSD);
    if let Err(e) = sys.spawn_in(root, &sysd, &["sysd", "--read-ahead"]) {
        log!(sys, "read-ahead: cannot start {}: {e}", sysd.display());
    }
}

/// Says why the slot is refused and reboots, so the bootloader tries the
/// other slot (or counts this one down).
pub fn refuse(sys: &mut impl Sys, slot: &str, why: &RootError) -> Ending {
    log!(sys, "root slot {slot} refused: {why}");
    if slot == "net" {
        log!(sys, "rebooting to boot from the network again");
    } else {
        log!(sys, "rebooting so the bootloader can try the other slot");
    }
    sys.sync();
    match sys.reboot(Shutdown::Reboot) {
        Ok(()) => Ending::Shutdown(Shutdown::Reboot),
        Err(e) => {
            log!(sys, "reboot failed: {e}; idling");
            Ending::Idle
        }
    }
}

/// Stage 1 from the command line of a slot to exec of stage 2.
pub fn boot_slot(sys: &mut impl Sys, cmdline: &Cmdline) -> Ending {
    let slot_name = cmdline.slot().unwrap_or("?").to_string();
    let result = RootPlan::from_cmdline(cmdline).and_then(|plan| {
        let disk = find_disk(sys, &plan.disk_guid)?;
        log!(
            sys,
            "disk: /dev/{} has GUID {} ({} partitions)",
            disk.name,
            disk.table.disk_guid,
            disk.table.partitions.len()
        );
        mount_verified_root(sys, &plan, &disk)?;
        if crate::state::mount_state(sys, &disk) {
            crate::state::overlays(sys);
        }
        mount_boot(sys, &disk);
        switch_root(sys)
    });
    match result {
        Ok(()) => Ending::SwitchedRoot,
        Err(e) => refuse(sys, &slot_name, &e),
    }
}

/// Mounts the boot partition read-write on `/sysroot/boot`: sysd records
/// there that the slot is good (ballast-slot). Without it the machine still
/// boots, and the bootloader's counter falls back after the tries run out.
pub fn mount_boot(sys: &mut impl Sys, disk: &Disk) {
    if !disk.has_partition(BOOT_INDEX) {
        log!(
            sys,
            "boot: {} has no partition {BOOT_INDEX}; /boot stays empty and this slot cannot be marked good",
            disk.path().display()
        );
        return;
    }
    let dev = disk.partition_path(BOOT_INDEX);
    if let Err(e) = sys.mkdir(Path::new(BOOT_MOUNT), 0o755) {
        log!(
            sys,
            "boot: the root image has no /boot directory ({e}); this slot cannot be marked good (rebuild the image)"
        );
        return;
    }
    crate::fatcheck::repair_if_dirty(sys, &dev);
    let args = MountArgs {
        source: Cow::Owned(dev.display().to_string()),
        target: BOOT_MOUNT,
        fstype: "vfat",
        flags: MountFlags::NOEXEC
            .union(MountFlags::NOSUID)
            .union(MountFlags::NODEV)
            .union(MountFlags::NOATIME),
        data: Some(c"umask=0022"),
    };
    match sys.mount(&args) {
        Ok(()) => {
            log!(sys, "boot: {} (vfat) mounted on /boot", dev.display());
            // Linux keeps FAT32's free-cluster count (FSInfo) from the disk
            // and only adjusts it, and U-Boot's `fatwrite` (the try counter
            // of U-Boot boards) allocates without updating it: a count that
            // is off stays off through every later write. statfs makes Linux
            // count the FAT itself, and that count is what it writes back.
            match sys.statfs(Path::new(BOOT_MOUNT)) {
                Ok((free, total)) => log!(
                    sys,
                    "boot: {} MiB free of {} MiB",
                    free / (1 << 20),
                    total / (1 << 20)
                ),
                Err(e) => log!(sys, "boot: cannot read the free space of /boot: {e}"),
            }
        }
        Err(e) => {
            let hint = match e {
                Errno::NODEV => " (no vfat in the kernel: list vfat.ko, fat.ko in modules.load)",
                Errno::INVAL => " (not a FAT filesystem, or the kernel lacks its default codepage/charset: list nls_cp437.ko and nls_utf8.ko or nls_iso8859-1.ko)",
                _ => "",
            };
            log!(
                sys,
                "boot: cannot mount {} (vfat) on /boot: {e}{hint}; this slot cannot be marked good",
                dev.display()
            );
        }
    }
}

/// Moves the pseudo filesystems into `/sysroot`, frees the initramfs, makes
/// `/sysroot` the root and execs stage 2. Returns only in tests (or on failure).
pub fn switch_root(sys: &mut impl Sys) -> Result<(), RootError> {
    let step = |what: String| move |errno| RootError::Switch { step: what, errno };
    // The boot media's modules are read from the initramfs, which this frees.
    crate::stage1::finish_beside(sys);
    // Read all of stage 2 through dm-verity now: a corrupt page found by the
    // kernel while exec'ing would kill PID 1 (a panic), without a word of why.
    sys.read_file(&Path::new(SYSROOT).join(STAGE2.trim_start_matches('/')))
        .map_err(|source| RootError::Stage2Unreadable { source })?;
    for dir in ["/dev", "/proc", "/sys", "/run"] {
        let target = PathBuf::from(format!("{SYSROOT}{dir}"));
        sys.move_mount(Path::new(dir), &target)
            .map_err(step(format!("moving {dir} to {}", target.display())))?;
    }
    let freed = sys.free_initramfs();
    log!(
        sys,
        "switching root to {SYSROOT} (freed {freed} initramfs entries)"
    );
    sys.chdir(Path::new(SYSROOT))
        .map_err(step(format!("chdir {SYSROOT}")))?;
    sys.move_mount(Path::new("."), Path::new("/"))
        .map_err(step(format!("moving {SYSROOT} to /")))?;
    sys.chroot(Path::new("."))
        .map_err(step("chroot .".to_string()))?;
    sys.chdir(Path::new("/"))
        .map_err(step("chdir /".to_string()))?;
    sys.exec(Path::new(STAGE2), &["init", "--stage2"])
        .map_err(RootError::Exec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_follow_the_kernel() {
        assert_eq!(partition_path("vda", 2), PathBuf::from("/dev/vda2"));
        assert_eq!(partition_path("sda", 4), PathBuf::from("/dev/sda4"));
        assert_eq!(
            partition_path("nvme0n1", 3),
            PathBuf::from("/dev/nvme0n1p3")
        );
        assert_eq!(
            partition_path("mmcblk0", 2),
            PathBuf::from("/dev/mmcblk0p2")
        );
    }

    #[test]
    fn virtual_devices_are_not_candidates() {
        for n in ["loop0", "ram0", "dm-0", "zram0", "sr0"] {
            assert!(!is_candidate(n), "{n}");
        }
        for n in ["vda", "sda", "nvme0n1", "mmcblk0", "xvda"] {
            assert!(is_candidate(n), "{n}");
        }
    }

    #[test]
    fn plan_errors_name_the_parameter() {
        let c = Cmdline::parse("ballast.slot=c");
        let e = RootPlan::from_cmdline(&c).unwrap_err().to_string();
        assert!(e.contains("ballast.slot=\"c\""), "{e}");
        let c = Cmdline::parse("ballast.slot=a ballast.verity=x");
        let e = RootPlan::from_cmdline(&c).unwrap_err().to_string();
        assert!(e.contains("no ballast.disk="), "{e}");
        let c = Cmdline::parse("ballast.slot=b ballast.disk=x ballast.verity=zz");
        let e = RootPlan::from_cmdline(&c).unwrap_err().to_string();
        assert!(e.contains("zz"), "{e}");
    }

    use crate::stage1::{boot, Ending};
    use crate::sys::{PartInfo, Shutdown};
    use crate::testsys::{position, Action, TestSys};

    const GUID: &str = "6B3E0F51-6E2D-4C5B-9F0A-2B8C1D3E4F50";

    fn verity() -> ballast_verity::Verity {
        ballast_verity::Verity {
            root_hash: [0xab; 32],
            salt: vec![0x12; 32],
            data_blocks: 2048,
            data_block_size: 4096,
            hash_block_size: 4096,
            hash_offset: 2048 * 4096,
            uuid: [0; 16],
        }
    }

    fn ext4_superblock(blocks: u32) -> Vec<u8> {
        let mut image = vec![0u8; 2048];
        image[1024 + 4..1024 + 8].copy_from_slice(&blocks.to_le_bytes());
        image[1024 + 0x18..1024 + 0x1c].copy_from_slice(&2u32.to_le_bytes());
        image[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
        image
    }

    /// A QEMU machine with a Ballast disk on vda that shows up after 0.3 s,
    /// state created by the builder at 16 MiB on a 1 GiB disk.
    fn machine(extra: &str) -> TestSys {
        let cmdline = format!(
            "console=ttyS0 ballast.slot=a ballast.disk={} {} {extra}",
            GUID.to_lowercase(),
            verity().to_cmdline()
        );
        let mut sys = TestSys::booted_with(&cmdline);
        sys.block_devices = vec![("loop0".into(), 0), ("vda".into(), 300_000)];
        let part = |index, start_lba, end_lba| PartInfo {
            index,
            start_lba,
            end_lba,
        };
        sys.tables.insert(
            PathBuf::from("/dev/vda"),
            PartTable {
                disk_guid: GUID.into(),
                signature_only: false,
                partitions: vec![
                    part(1, 2048, 18431),
                    part(2, 18432, 100_000),
                    part(3, 100_001, 200_000),
                    part(4, 200_001, 232_768),
                ],
            },
        );
        sys.grow = Some(Ok(Some(part(4, 200_001, 2_097_118))));
        sys.sizes
            .insert(PathBuf::from("/dev/vda4"), (2_097_118 - 200_001 + 1) * 512);
        sys.files
            .insert(PathBuf::from("/dev/vda4"), ext4_superblock(4096));
        sys.file("/sysroot/sbin/init", "\x7fELF");
        sys
    }

    fn without_console(sys: &TestSys) -> Vec<&Action> {
        sys.actions
            .iter()
            .filter(|a| !matches!(a, Action::Console(_) | Action::Mkdir(_)))
            .skip(5) // the pseudo filesystems
            .collect()
    }

    #[test]
    fn a_good_slot_is_verified_mounted_and_switched_to() {
        let mut sys = machine("ballast.debug=poweroff");
        assert_eq!(boot(&mut sys, None), Ending::SwitchedRoot);
        let mount = |fstype: &str, target: &str| Action::Mount {
            fstype: fstype.into(),
            target: target.into(),
        };
        let mv = |from: &str, to: &str| Action::Move {
            from: from.into(),
            to: to.into(),
        };
        let new_len = (2_097_118 - 200_001 + 1) * 512;
        assert_eq!(
            without_console(&sys),
            [
                &Action::Mknod("/dev/mapper/control".into()),
                &Action::Dm(dm::Command::Version),
                &Action::Dm(dm::Command::DevCreate),
                &Action::Dm(dm::Command::TableLoad),
                &Action::Dm(dm::Command::DevSuspend),
                &mount("squashfs", "/sysroot"),
                &Action::Grow("/dev/vda".into()),
                &Action::Blkpg {
                    index: 4,
                    start: 200_001 * 512,
                    length: new_len
                },
                &mount("ext4", "/sysroot/state"),
                &Action::Ext4Resize(new_len / 4096),
                &Action::Sync,
                &mount("overlay", "/sysroot/etc"),
                &Action::Bind {
                    from: "/sysroot/state/var".into(),
                    to: "/sysroot/var".into()
                },
                &mount("vfat", "/sysroot/boot"),
                &mv("/dev", "/sysroot/dev"),
                &mv("/proc", "/sysroot/proc"),
                &mv("/sys", "/sysroot/sys"),
                &mv("/run", "/sysroot/run"),
                &Action::FreeInitramfs,
                &Action::Chdir("/sysroot".into()),
                &mv(".", "/"),
                &Action::Chroot(".".into()),
                &Action::Chdir("/".into()),
                &Action::Exec(vec!["/sbin/init".into(), "init".into(), "--stage2".into()]),
            ]
        );
        let messages = sys.messages();
        assert!(
            messages.iter().any(|m| m.starts_with(
                "root: slot a on /dev/vda2 mapped through dm-verity as /dev/dm-0 (root hash abab"
            )),
            "{messages:?}"
        );
        assert!(
            messages.contains(&"state: ext4 on /dev/vda4 grown from 16 MiB to 926 MiB"),
            "{messages:?}"
        );
        assert!(messages.contains(&"boot: /dev/vda1 (vfat) mounted on /boot"));
    }

    /// The fixture's state filesystem with its journal needing replay.
    fn unclean(sys: &mut TestSys) {
        if let Some(dev) = sys.files.get_mut(Path::new("/dev/vda4")) {
            dev[1024 + 0x60] |= 0x4;
        }
    }

    #[test]
    fn a_grow_cut_off_by_a_power_cut_is_checked_with_e2fsck_before_the_mount() {
        let mut sys = machine("");
        unclean(&mut sys);
        sys.run_results.push_back(Ok((
            Some(1),
            "state: 11/4096 files (0.0% non-contiguous), 1100/237000 blocks\n".to_string(),
        )));
        assert_eq!(boot(&mut sys, None), Ending::SwitchedRoot);
        let argv = sys.ran.first().expect("e2fsck ran");
        assert!(argv[0].contains("ld-linux"), "{argv:?}");
        assert_eq!(argv[3], "/sysroot/usr/lib/ballast/userland/usr/sbin/e2fsck");
        assert_eq!(&argv[4..], ["-f", "-p", "/dev/vda4"]);
        let messages = sys.messages();
        assert!(
            messages.iter().any(|m| m.starts_with(
                "state: /dev/vda4 was cut off while it grew; e2fsck -f -p: repaired: state: 11/4096 files"
            )),
            "{messages:?}"
        );
        // Checked before the mount.
        let checked = sys
            .actions
            .iter()
            .position(|a| matches!(a, Action::Console(m) if m.contains("e2fsck -f -p")));
        let mounted = sys
            .actions
            .iter()
            .position(|a| matches!(a, Action::Mount { target, .. } if target == "/sysroot/state"));
        assert!(checked < mounted, "{:?}", sys.actions);
    }

    #[test]
    fn the_root_read_ahead_list_starts_sysds_reader_in_the_root_once_it_is_mounted() {
        let mut sys = machine("");
        sys.files.insert(
            PathBuf::from("/sysroot/usr/lib/ballast/read-ahead"),
            b"usr/lib/ballast/sysd\n".to_vec(),
        );
        assert_eq!(boot(&mut sys, None), Ending::SwitchedRoot);
        let actions = without_console(&sys);
        let at = |want: &dyn Fn(&Action) -> bool| position(&actions, want);
        let mounted = at(&|a| matches!(a, Action::Mount { target, .. } if target == "/sysroot"));
        let reader = at(&|a| {
            *a == Action::SpawnIn {
                cwd: "/sysroot".into(),
                argv: vec!["sysd".into(), "--read-ahead".into()],
            }
        });
        assert_eq!(reader, mounted + 1, "{actions:?}");
        assert_eq!(
            actions[reader + 1],
            &Action::Spawn("/sysroot/usr/lib/ballast/sysd".into())
        );
        // Without a list (the other tests' roots), no reader.
        let mut plain = machine("");
        assert_eq!(boot(&mut plain, None), Ending::SwitchedRoot);
        assert!(!plain
            .actions
            .iter()
            .any(|a| matches!(a, Action::SpawnIn { .. })));
    }

    #[test]
    fn boot_media_modules_load_beside_the_disks_search_and_are_waited_for_before_the_switch() {
        let mut sys = machine("");
        sys.files.insert(
            PathBuf::from(crate::modules::MODULES_LOAD),
            format!(
                "# kver={}\n# wave 0\nkernel/drivers/block/virtio_blk.ko\n# beside\n\
                 # wave 0\nkernel/drivers/ata/libata.ko\n# wave 1\nkernel/drivers/ata/ahci.ko\n",
                sys.release
            )
            .into_bytes(),
        );
        assert_eq!(boot(&mut sys, None), Ending::SwitchedRoot);
        let actions = without_console(&sys);
        let at = |want: &dyn Fn(&Action) -> bool| position(&actions, want);
        let virtio = at(&|a| matches!(a, Action::Module(m) if m.ends_with("virtio_blk.ko")));
        let begun = at(&|a| *a == Action::BeginModules(2));
        let root = at(&|a| matches!(a, Action::Mount { target, .. } if target == "/sysroot"));
        let libata = at(&|a| matches!(a, Action::Module(m) if m.ends_with("libata.ko")));
        let ahci = at(&|a| matches!(a, Action::Module(m) if m.ends_with("ahci.ko")));
        let exec = at(&|a| matches!(a, Action::Exec(_)));
        assert!(virtio < begun && begun < root, "{actions:?}");
        // Loaded (here: when waited for) after the root was found, before stage 2.
        assert!(root < libata && libata < ahci && ahci < exec, "{actions:?}");
        let messages = sys.messages();
        assert!(
            messages.iter().any(|m| m
                .starts_with("modules: 1 loaded, 0 already present, 0 failed, of 1 listed in ")
                && m.ends_with("; 2 more loading beside the search for the root")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.starts_with(
                "modules beside: 2 loaded, 0 already present, 0 failed, of 2 listed (waited "
            )),
            "{messages:?}"
        );
    }

    #[test]
    fn an_unclean_state_that_fills_its_partition_is_left_to_the_journal() {
        let mut sys = machine("");
        unclean(&mut sys);
        sys.grow = Some(Ok(None));
        sys.sizes.insert(PathBuf::from("/dev/vda4"), 4096 * 4096);
        assert_eq!(boot(&mut sys, None), Ending::SwitchedRoot);
        assert!(sys.ran.is_empty(), "{:?}", sys.ran);
    }

    #[test]
    fn a_boot_partition_that_does_not_mount_only_costs_marking_the_slot_good() {
        let mut sys = machine("");
        sys.mount_errors.insert(BOOT_MOUNT.into(), Errno::NODEV);
        assert_eq!(boot(&mut sys, None), Ending::SwitchedRoot);
        assert!(sys.messages().contains(
            &"boot: cannot mount /dev/vda1 (vfat) on /boot: No such device (os error 19) (no vfat in the kernel: list vfat.ko, fat.ko in modules.load); this slot cannot be marked good"
        ), "{:?}", sys.messages());
    }

    #[test]
    fn a_missing_disk_refuses_the_slot_after_ten_seconds_and_reboots() {
        let mut sys = machine("ballast.debug=poweroff");
        sys.tables.clear();
        assert_eq!(boot(&mut sys, None), Ending::Shutdown(Shutdown::Reboot));
        let messages = sys.messages();
        let refusal = messages
            .iter()
            .find(|m| m.starts_with("root slot a refused: no disk with GUID"))
            .unwrap_or_else(|| panic!("{messages:?}"));
        assert!(refusal.contains("within 10 s"), "{refusal}");
        assert!(refusal.contains("vda (no partition table)"), "{refusal}");
        assert!(!refusal.contains("loop0"), "{refusal}");
        assert!(sys.clock_us.get() >= 10_000_000);
        let tail = &sys.actions[sys.actions.len() - 2..];
        assert_eq!(tail, [Action::Sync, Action::Reboot(Shutdown::Reboot)]);
        assert!(!sys.actions.iter().any(|a| matches!(a, Action::Dm(_))));
    }

    #[test]
    fn an_mbr_disk_is_recognised_by_its_signature() {
        let mut sys = machine("");
        if let Some(t) = sys.tables.get_mut(Path::new("/dev/vda")) {
            t.disk_guid = format!("{}-0000-0000-0000-000000000000", &GUID[..8]);
            t.signature_only = true;
        }
        assert_eq!(boot(&mut sys, None), Ending::SwitchedRoot);
        if let Some(t) = sys.tables.get_mut(Path::new("/dev/vda")) {
            t.disk_guid = "6b3e0f52-0000-0000-0000-000000000000".into();
        }
        let mut other = machine("");
        other.tables = sys.tables.clone();
        assert_eq!(boot(&mut other, None), Ending::Shutdown(Shutdown::Reboot));
    }

    #[test]
    fn a_disk_with_another_guid_is_not_booted() {
        let mut sys = machine("");
        if let Some(t) = sys.tables.get_mut(Path::new("/dev/vda")) {
            t.disk_guid = "00000000-0000-0000-0000-000000000001".into();
        }
        assert_eq!(boot(&mut sys, None), Ending::Shutdown(Shutdown::Reboot));
        assert!(sys
            .messages()
            .iter()
            .any(|m| m.contains("vda (GUID 00000000-0000-0000-0000-000000000001)")));
    }

    #[test]
    fn a_refused_verity_table_refuses_the_slot_and_reboots_even_when_debugging() {
        let mut sys = machine("ballast.debug=poweroff");
        sys.dm_errors.insert(dm::Command::TableLoad, Errno::INVAL);
        assert_eq!(boot(&mut sys, None), Ending::Shutdown(Shutdown::Reboot));
        let messages = sys.messages();
        assert!(
            messages.iter().any(|m| m.starts_with(
                "root slot a refused: dm-verity for /dev/vda2: DM_TABLE_LOAD failed: "
            )),
            "{messages:?}"
        );
        assert!(sys.actions.contains(&Action::Dm(dm::Command::DevRemove)));
        assert!(!sys
            .actions
            .iter()
            .any(|a| matches!(a, Action::Mount { target, .. } if target == "/sysroot")));
    }

    #[test]
    fn a_root_that_fails_verification_on_mount_is_refused() {
        let mut sys = machine("");
        sys.mount_errors.insert("/sysroot".into(), Errno::IO);
        assert_eq!(boot(&mut sys, None), Ending::Shutdown(Shutdown::Reboot));
        let messages = sys.messages();
        let refusal = messages
            .iter()
            .find(|m| m.starts_with("root slot a refused: mounting the verified root /dev/dm-0"))
            .unwrap_or_else(|| panic!("{messages:?}"));
        assert!(refusal.contains("do not match the root hash"), "{refusal}");
        assert!(!sys.actions.iter().any(|a| matches!(a, Action::Exec(_))));
    }

    #[test]
    fn a_failed_grow_keeps_the_small_state_and_boots_on() {
        let mut sys = machine("");
        sys.grow = Some(Err("backup GPT header unreadable".into()));
        sys.sizes.insert(PathBuf::from("/dev/vda4"), 4096 * 4096);
        assert_eq!(boot(&mut sys, None), Ending::SwitchedRoot);
        let messages = sys.messages();
        assert!(messages.contains(
            &"state: cannot grow partition 4 of /dev/vda: backup GPT header unreadable; keeping its size"
        ));
        assert!(!sys
            .actions
            .iter()
            .any(|a| matches!(a, Action::Blkpg { .. } | Action::Ext4Resize(_))));
        assert!(sys.actions.contains(&Action::Mount {
            fstype: "ext4".into(),
            target: "/sysroot/state".into()
        }));
    }

    #[test]
    fn a_refused_online_resize_keeps_the_filesystem_and_boots_on() {
        let mut sys = machine("");
        sys.fail.insert("ext4_resize", Errno::OPNOTSUPP);
        assert_eq!(boot(&mut sys, None), Ending::SwitchedRoot);
        assert!(sys.messages().iter().any(|m| m
            .starts_with("state: cannot grow ext4 on /dev/vda4 to 926 MiB")
            && m.ends_with("continuing with 16 MiB")));
    }

    #[test]
    fn a_state_partition_without_ext4_is_never_formatted() {
        let mut sys = machine("");
        sys.files.remove(Path::new("/dev/vda4"));
        assert_eq!(boot(&mut sys, None), Ending::SwitchedRoot);
        assert!(!sys.actions.iter().any(|a| match a {
            Action::Grow(_) => true,
            Action::Mount { fstype, .. } => fstype == "ext4" || fstype == "overlay",
            _ => false,
        }));
        assert!(sys
            .messages()
            .iter()
            .any(|m| m.starts_with("state: /dev/vda4 holds no ext4 filesystem")));
    }

    #[test]
    fn a_corrupt_stage_2_is_refused_before_switching() {
        let mut sys = machine("");
        sys.files.remove(Path::new("/sysroot/sbin/init"));
        assert_eq!(boot(&mut sys, None), Ending::Shutdown(Shutdown::Reboot));
        assert!(sys
            .messages()
            .iter()
            .any(|m| m
                .starts_with("root slot a refused: cannot read /sysroot/sbin/init (stage 2): ")));
        assert!(!sys.actions.iter().any(|a| matches!(a, Action::Move { .. })));
    }

    #[test]
    fn a_failed_exec_refuses_the_slot() {
        let mut sys = machine("");
        sys.fail.insert("exec", Errno::NOENT);
        assert_eq!(boot(&mut sys, None), Ending::Shutdown(Shutdown::Reboot));
        assert!(sys
            .messages()
            .iter()
            .any(|m| m.starts_with("root slot a refused: switch_root: exec /sbin/init")));
    }

    #[test]
    fn stage_1_failure_on_a_slot_refuses_it() {
        let mut sys = machine("");
        sys.mount_errors.insert("/sys".into(), Errno::NODEV);
        assert_eq!(boot(&mut sys, None), Ending::Shutdown(Shutdown::Reboot));
        assert!(sys
            .messages()
            .iter()
            .any(|m| m.starts_with("root slot a refused: cannot mount sysfs")));
    }

    #[test]
    fn nvme_disks_use_p_partition_names() {
        let mut sys = machine("");
        let table = sys.tables.remove(Path::new("/dev/vda"));
        sys.tables.insert(
            PathBuf::from("/dev/nvme0n1"),
            table.unwrap_or_else(|| unreachable!()),
        );
        sys.block_devices = vec![("nvme0n1".into(), 0)];
        sys.files.remove(Path::new("/dev/vda4"));
        sys.files
            .insert(PathBuf::from("/dev/nvme0n1p4"), ext4_superblock(4096));
        sys.sizes.insert(PathBuf::from("/dev/nvme0n1p4"), 16 << 20);
        assert_eq!(boot(&mut sys, None), Ending::SwitchedRoot);
        assert!(sys
            .messages()
            .iter()
            .any(|m| m.starts_with("root: slot a on /dev/nvme0n1p2 ")));
    }
}
