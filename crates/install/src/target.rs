//! The target device and the checks before anything is written to it.
//!
//! Each refusal names the device, what was found and the fix, and happens
//! before the first write: a device that does not exist or is not a whole
//! block device, one too small (the size needed is given), read-only
//! (`BLKROGET`), a disk the running system uses (the disks under the given
//! mount points, through partitions and device-mapper), one mounted or held
//! (`/proc/self/mountinfo`, `/proc/swaps`, `/sys/block/*/holders`, also for
//! its partitions), one that already holds partitions, and (for `ballast
//! flash`) one that is not removable. The last two yield to `force`.
//!
//! Everything is read from `/proc` and `/sys` (given as roots, so tests can
//! use a copy); the only ioctl is `BLKROGET`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::InstallError;

/// `_IO(0x12, 94)`: the block device is read-only (an int, 0 or 1).
const BLKROGET: u32 = 0x125e;

/// What the caller allows.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Overwrite a disk that holds partitions (and, with `require_removable`,
    /// one that is not removable).
    pub force: bool,
    /// `ballast flash`: refuse a fixed disk unless `force` (the usual target
    /// is an SD card or USB stick; a fixed disk is more likely a mistake).
    pub require_removable: bool,
    /// Mount points whose disks are the running system's: `/`, `/boot`, the
    /// live medium. Such a disk is refused whatever `force` says.
    pub system_mounts: Vec<PathBuf>,
}

/// A whole block device as the checks saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    /// Kernel name (`sdb`, `vdb`, `loop3`, `mmcblk0`).
    pub name: String,
    pub size: u64,
    /// Vendor and model from sysfs, the loop device's backing file, or "".
    pub model: String,
    pub removable: bool,
    pub read_only: bool,
    /// Kernel names of its partitions.
    pub partitions: Vec<String>,
    /// Its first sectors hold a partition table (an MBR signature or a GPT header).
    pub has_table: bool,
    /// (device, where) for each mount or swap of it or its partitions.
    pub mounted: Vec<(String, String)>,
    /// Devices stacked on it or its partitions (device-mapper, md, ...).
    pub holders: Vec<String>,
    /// Why it is a disk of the running system (`/ is on it`), if it is.
    pub system: Option<String>,
}

/// Where /proc and /sys are (`/proc` and `/sys` outside tests).
#[derive(Clone, Debug)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            proc: "/proc".into(),
            sys: "/sys".into(),
        }
    }
}

fn dev_numbers(rdev: u64) -> (u64, u64) {
    // glibc's gnu_dev_major/minor encoding.
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
    (major, minor)
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

impl Target {
    /// Look at `path` without writing. Fails when it does not exist, is not a
    /// block device, or is a partition.
    pub fn inspect(path: &Path, policy: &Policy) -> Result<Target, InstallError> {
        Target::inspect_with(path, policy, &Roots::default())
    }

    pub fn inspect_with(
        path: &Path,
        policy: &Policy,
        roots: &Roots,
    ) -> Result<Target, InstallError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(InstallError::refused(
                    path,
                    "no such device (list the disks with `lsblk`; on a Ballast machine `ls /sys/block`)",
                ))
            }
            Err(e) => return Err(InstallError::refused(path, format!("cannot look at it: {e}"))),
        };
        if !meta.file_type().is_block_device() {
            return Err(InstallError::refused(
                path,
                "not a block device (give a whole disk such as /dev/sdb or /dev/vdb; to make an image file, use the disk.img `ballast build` wrote)",
            ));
        }
        let (major, minor) = dev_numbers(meta.rdev());
        let sysdev = roots.sys.join(format!("dev/block/{major}:{minor}"));
        let real = std::fs::canonicalize(&sysdev).map_err(|e| {
            InstallError::refused(
                path,
                format!("cannot find it in sysfs ({}): {e}", sysdev.display()),
            )
        })?;
        let name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if real.join("partition").exists() {
            let disk = real
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(InstallError::refused(
                path,
                format!("{name} is a partition; give the whole disk (/dev/{disk})"),
            ));
        }
        let mut f = File::open(path).map_err(|e| {
            InstallError::refused(
                path,
                format!("cannot open it for reading: {e} (run as root)"),
            )
        })?;
        let size = f
            .seek(SeekFrom::End(0))
            .map_err(|e| InstallError::refused(path, format!("cannot find its size: {e}")))?;
        let read_only = blk_ro(&f) || read_trim(&real.join("ro")).as_deref() == Some("1");
        let mut head = [0u8; 1024];
        let has_table = f.seek(SeekFrom::Start(0)).is_ok()
            && f.read_exact(&mut head).is_ok()
            && ((head[510] == 0x55 && head[511] == 0xaa) || &head[512..520] == b"EFI PART");

        let partitions: Vec<String> = std::fs::read_dir(&real)
            .map(|rd| {
                let mut v: Vec<String> = rd
                    .flatten()
                    .filter(|e| e.path().join("partition").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                v
            })
            .unwrap_or_default();
        // The disk and its partitions by number, for mountinfo and holders.
        let mut devs: Vec<(String, (u64, u64), PathBuf)> =
            vec![(name.clone(), (major, minor), real.clone())];
        for p in &partitions {
            let dir = real.join(p);
            if let Some(n) = read_trim(&dir.join("dev")).and_then(|s| parse_devno(&s)) {
                devs.push((p.clone(), n, dir));
            }
        }
        let mut holders = Vec::new();
        for (_, _, dir) in &devs {
            if let Ok(rd) = std::fs::read_dir(dir.join("holders")) {
                holders.extend(
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned()),
                );
            }
        }
        holders.sort();
        holders.dedup();
        let mounts = mountinfo(&roots.proc);
        let mut mounted: Vec<(String, String)> = Vec::new();
        for (dname, num, _) in &devs {
            for (n, point) in &mounts {
                if n == num {
                    mounted.push((dname.clone(), point.clone()));
                }
            }
        }
        for swap in swaps(&roots.proc) {
            if let Ok(m) = std::fs::metadata(&swap) {
                if m.file_type().is_block_device()
                    && devs.iter().any(|(_, n, _)| *n == dev_numbers(m.rdev()))
                {
                    mounted.push((swap.clone(), "swap".into()));
                }
            }
        }
        let mut system = None;
        for point in &policy.system_mounts {
            let want = point.to_string_lossy();
            let Some((num, _)) = mounts.iter().rev().find(|(_, p)| *p == want) else {
                continue;
            };
            if whole_disks(&roots.sys, *num).contains(&name) {
                system = Some(format!("{want} is on it"));
                break;
            }
        }
        Ok(Target {
            path: path.to_path_buf(),
            model: model(&real),
            removable: read_trim(&real.join("removable")).as_deref() == Some("1"),
            name,
            size,
            read_only,
            partitions,
            has_table,
            mounted,
            holders,
            system,
        })
    }

    /// "vdb, 2.0 GiB, QEMU HARDDISK"
    pub fn describe(&self) -> String {
        let mut s = format!("{}, {}", self.name, human(self.size));
        if !self.model.is_empty() {
            s.push_str(", ");
            s.push_str(&self.model);
        }
        s
    }

    /// Every check, in order; `need` is the image's raw size.
    pub fn check(&self, need: u64, policy: &Policy) -> Result<(), InstallError> {
        let refuse = |r: String| Err(InstallError::refused(&self.path, r));
        if self.size < need {
            return refuse(format!(
                "too small: it has {} ({} bytes) and the image needs {} ({need} bytes); use a disk of at least {}",
                human(self.size),
                self.size,
                human(need),
                human(need)
            ));
        }
        if self.read_only {
            return refuse(
                "read-only (BLKROGET): unlock the card's write-protect switch, or `blockdev --setrw` it".into(),
            );
        }
        if let Some(why) = &self.system {
            return refuse(format!(
                "it is the disk this system runs from ({why}); install to another disk"
            ));
        }
        if !self.mounted.is_empty() {
            let list: Vec<String> = self
                .mounted
                .iter()
                .map(|(d, p)| format!("{d} on {p}"))
                .collect();
            return refuse(format!(
                "in use: {}; unmount it first (`umount`, or `swapoff` for swap)",
                list.join(", ")
            ));
        }
        if !self.holders.is_empty() {
            return refuse(format!(
                "held by {} (device-mapper, RAID or LVM uses it); stop that first (`dmsetup remove`, `mdadm --stop`, `vgchange -an`)",
                self.holders.join(", ")
            ));
        }
        if policy.require_removable && !self.removable && !policy.force {
            return refuse(
                "not a removable disk (an SD card or USB stick is); pass --force if you really mean this fixed disk".into(),
            );
        }
        if (self.has_table || !self.partitions.is_empty()) && !policy.force {
            let parts = if self.partitions.is_empty() {
                "a partition table".to_string()
            } else {
                format!("partitions {}", self.partitions.join(", "))
            };
            return refuse(format!(
                "it already holds {parts}; everything on it would be lost: pass --force to overwrite it"
            ));
        }
        Ok(())
    }
}

fn blk_ro(f: &File) -> bool {
    use std::os::fd::AsRawFd;
    let mut ro: libc::c_int = 0;
    // SAFETY: BLKROGET writes one int through the pointer, which points at `ro`.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKROGET as _, &mut ro as *mut libc::c_int) };
    rc == 0 && ro != 0
}

fn parse_devno(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// (device number, mount point) of every mount, in mount order.
fn mountinfo(proc_root: &Path) -> Vec<((u64, u64), String)> {
    let text = std::fs::read_to_string(proc_root.join("self/mountinfo")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            let num = parse_devno(w.nth(2)?)?;
            let _root = w.next()?;
            let point = unescape(w.next()?);
            Some((num, point))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn swaps(proc_root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(proc_root.join("swaps")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(unescape))
        .collect()
}

/// The whole disks under a device: itself, the disk of a partition, and the
/// disks under a device-mapper or md device (its `slaves`), recursively.
fn whole_disks(sys: &Path, num: (u64, u64)) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(start) = std::fs::canonicalize(sys.join(format!("dev/block/{}:{}", num.0, num.1)))
    else {
        return out;
    };
    let mut todo = vec![start];
    let mut seen = 0;
    while let Some(dir) = todo.pop() {
        seen += 1;
        if seen > 64 {
            break;
        }
        let disk = if dir.join("partition").exists() {
            dir.parent().map(Path::to_path_buf).unwrap_or(dir.clone())
        } else {
            dir.clone()
        };
        let slaves: Vec<PathBuf> = std::fs::read_dir(disk.join("slaves"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| std::fs::canonicalize(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        if slaves.is_empty() {
            if let Some(n) = disk.file_name() {
                out.push(n.to_string_lossy().into_owned());
            }
        }
        todo.extend(slaves);
    }
    out
}

fn model(real: &Path) -> String {
    if let Some(b) = read_trim(&real.join("loop/backing_file")) {
        return format!("loop device on {b}");
    }
    let vendor = read_trim(&real.join("device/vendor")).unwrap_or_default();
    let model = read_trim(&real.join("device/model")).unwrap_or_default();
    let name = read_trim(&real.join("device/name")).unwrap_or_default(); // SD/MMC cards
    [vendor, model, name]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// 1.5 GiB, 512 MiB, 900 KiB.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else if bytes >= 1 << 20 {
        format!("{:.0} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            path: "/dev/vdb".into(),
            name: "vdb".into(),
            size: 4 << 30,
            model: String::new(),
            removable: false,
            read_only: false,
            partitions: vec![],
            has_table: false,
            mounted: vec![],
            holders: vec![],
            system: None,
        }
    }

    #[test]
    fn a_blank_disk_passes_and_each_problem_is_refused_with_its_fix() {
        let p = Policy::default();
        target().check(1 << 30, &p).unwrap();
        let e = target().check(8 << 30, &p).unwrap_err().to_string();
        assert!(
            e.contains("too small") && e.contains("8.0 GiB") && e.contains("nothing was written"),
            "{e}"
        );
        let e = Target {
            read_only: true,
            ..target()
        }
        .check(1, &p)
        .unwrap_err()
        .to_string();
        assert!(e.contains("read-only"), "{e}");
        let e = Target {
            system: Some("/ is on it".into()),
            ..target()
        }
        .check(
            1,
            &Policy {
                force: true,
                ..p.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("runs from"), "{e}");
        let e = Target {
            mounted: vec![("vdb1".into(), "/mnt".into())],
            ..target()
        }
        .check(1, &p)
        .unwrap_err()
        .to_string();
        assert!(e.contains("vdb1 on /mnt") && e.contains("unmount"), "{e}");
        let e = Target {
            holders: vec!["dm-0".into()],
            ..target()
        }
        .check(1, &p)
        .unwrap_err()
        .to_string();
        assert!(e.contains("dm-0"), "{e}");
        let parted = Target {
            partitions: vec!["vdb1".into()],
            has_table: true,
            ..target()
        };
        let e = parted.check(1, &p).unwrap_err().to_string();
        assert!(e.contains("vdb1") && e.contains("--force"), "{e}");
        parted
            .check(
                1,
                &Policy {
                    force: true,
                    ..p.clone()
                },
            )
            .unwrap();
        let flash = Policy {
            require_removable: true,
            ..p.clone()
        };
        let e = target().check(1, &flash).unwrap_err().to_string();
        assert!(e.contains("removable"), "{e}");
        Target {
            removable: true,
            ..target()
        }
        .check(1, &flash)
        .unwrap();
    }

    #[test]
    fn mountinfo_lines_give_numbers_and_points() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        std::fs::write(
            dir.path().join("self/mountinfo"),
            "22 1 253:0 / / ro,relatime - squashfs /dev/dm-0 ro\n30 22 254:1 / /my\\040boot rw - vfat /dev/vda1 rw\n",
        )
        .unwrap();
        assert_eq!(
            mountinfo(dir.path()),
            vec![
                ((253, 0), "/".to_string()),
                ((254, 1), "/my boot".to_string())
            ]
        );
    }

    #[test]
    fn a_missing_device_and_a_regular_file_are_refused() {
        let p = Policy::default();
        let e = Target::inspect(Path::new("/dev/does-not-exist-ballast"), &p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no such device") && e.contains("nothing was written"),
            "{e}"
        );
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = Target::inspect(f.path(), &p).unwrap_err().to_string();
        assert!(e.contains("not a block device"), "{e}");
    }
}
