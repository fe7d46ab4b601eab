//! `mounts`: fstab-style entries mounted on the host by sysd, every boot,
//! before the services start (the local config is applied before sysd loads
//! its definitions; with a URL config every service but `network` is held
//! until it is applied). The SSH and Docker containers bind the host's `/var`
//! recursively, so a disk mounted at `/var/lib/docker` is what both see.
//!
//! Specs are resolved the way fstab does: `/dev/...`, `LABEL=`, `UUID=` (read
//! from the ext2/3/4 superblocks of the block devices in `/sys/class/block`),
//! or a bare `vdb1`. A mount point is any absolute directory sysd can
//! create or that exists: in practice below `/var`, `/state` or `/run`, since
//! the rest of the host is the read-only image (the error says so).
//!
//! Never mounts over something already mounted there (an `osctl config
//! apply` on a running machine does not stack mounts), never fails the boot:
//! an entry that cannot be mounted is an error for the console and `osctl
//! status`, and the service using the path starts on the state partition.

use std::path::{Path, PathBuf};

use ballast_config::MountEntry;
use rustix::mount::MountFlags;

use super::apply::Layout;

/// The ext2/3/4 label and UUID of a device's first bytes (the superblock at
/// 1024: magic at +56, UUID at +104, label at +120).
pub fn ext_ids(b: &[u8]) -> Option<(String, String)> {
    let sb = b.get(1024..1024 + 136)?;
    if sb[56..58] != [0x53, 0xef] {
        return None;
    }
    let u = &sb[104..120];
    let hex: String = u.iter().map(|x| format!("{x:02x}")).collect();
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    let label: String = sb[120..136]
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as char)
        .collect();
    Some((label, uuid))
}

/// Block devices as `(/dev/NAME, label, uuid)`.
pub type Known = Vec<(String, String, String)>;

/// Read the ids of every block device of `sys_block` (`/sys/class/block`).
pub fn scan(dev_dir: &Path, sys_block: &Path) -> Known {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(sys_block) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("loop") || name.starts_with("ram") || name.starts_with("dm-") {
            continue;
        }
        let dev = dev_dir.join(&name);
        let mut buf = vec![0u8; 2048];
        let ok = std::fs::File::open(&dev).and_then(|mut f| {
            use std::io::Read;
            f.read_exact(&mut buf)
        });
        if ok.is_err() {
            continue;
        }
        if let Some((label, uuid)) = ext_ids(&buf) {
            out.push((format!("/dev/{name}"), label, uuid));
        }
    }
    out.sort();
    out
}

/// The device an fstab spec names.
pub fn resolve(spec: &str, known: &Known) -> Result<String, String> {
    if let Some(label) = spec.strip_prefix("LABEL=") {
        return known
            .iter()
            .find(|(_, l, _)| l == label)
            .map(|(d, _, _)| d.clone())
            .ok_or_else(|| format!("{spec}: no ext2/3/4 filesystem has the label {label}"));
    }
    if let Some(uuid) = spec.strip_prefix("UUID=") {
        return known
            .iter()
            .find(|(_, _, u)| u.eq_ignore_ascii_case(uuid))
            .map(|(d, _, _)| d.clone())
            .ok_or_else(|| format!("{spec}: no ext2/3/4 filesystem has the UUID {uuid}"));
    }
    super::disks::device_path(spec)
}

/// fstab options as mount(2) flags and the filesystem's own data.
pub fn options(opts: &str) -> (MountFlags, String) {
    let mut flags = MountFlags::empty();
    let mut data = Vec::new();
    for o in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match o {
            "defaults" | "rw" | "auto" | "noauto" | "nofail" | "user" | "nouser" | "_netdev" => {}
            "ro" => flags |= MountFlags::RDONLY,
            "noexec" => flags |= MountFlags::NOEXEC,
            "nosuid" => flags |= MountFlags::NOSUID,
            "nodev" => flags |= MountFlags::NODEV,
            "noatime" => flags |= MountFlags::NOATIME,
            "nodiratime" => flags |= MountFlags::NODIRATIME,
            "relatime" => flags |= MountFlags::RELATIME,
            "sync" => flags |= MountFlags::SYNCHRONOUS,
            o if o.starts_with("x-") || o.starts_with("comment=") => {}
            o => data.push(o.to_string()),
        }
    }
    (flags, data.join(","))
}

/// Mount points in `/proc/self/mountinfo` (field 5).
fn mounted(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

/// What one entry amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Mount {
        dev: String,
        at: String,
        fstype: String,
        flags: MountFlags,
        data: String,
    },
    Skip(String),
}

pub fn plan(m: &MountEntry, known: &Known, already: &[String]) -> Result<Plan, String> {
    if m.fstype == "swap" || m.dir == "none" || m.dir == "swap" {
        return Ok(Plan::Skip(format!(
            "{} {}: swap is not used on Ballast (containers' memory limits assume none)",
            m.spec, m.dir
        )));
    }
    if !m.dir.starts_with('/') || m.dir.split('/').any(|c| c == "..") || m.dir == "/" {
        return Err(format!(
            "{}: mount point {}: an absolute path below /",
            m.spec, m.dir
        ));
    }
    if already.iter().any(|a| a == &m.dir) {
        return Ok(Plan::Skip(format!("{} is mounted already", m.dir)));
    }
    let dev = resolve(&m.spec, known)?;
    let (flags, data) = options(&m.options);
    let fstype = if m.fstype.is_empty() || m.fstype == "auto" {
        // What the probe says the device holds; ext4 mounts ext2/3 too.
        "ext4".to_string()
    } else {
        m.fstype.clone()
    };
    Ok(Plan::Mount {
        dev,
        at: m.dir.clone(),
        fstype,
        flags,
        data,
    })
}

/// Mount every entry (on the device). Notes and errors.
pub fn apply(l: &Layout, entries: &[MountEntry]) -> (Vec<String>, Vec<String>) {
    let (mut notes, mut errors) = (Vec::new(), Vec::new());
    if entries.is_empty() {
        return (notes, errors);
    }
    let known = scan(&l.p("dev"), &l.p("sys/class/block"));
    let info = std::fs::read_to_string(l.p("proc/self/mountinfo")).unwrap_or_default();
    let already = mounted(&info);
    for m in entries {
        match plan(m, &known, &already) {
            Ok(Plan::Skip(why)) => notes.push(format!("config: mounts: {why}")),
            Ok(Plan::Mount {
                dev,
                at,
                fstype,
                flags,
                data,
            }) => {
                let target: PathBuf = l.p(&at);
                if let Err(e) = std::fs::create_dir_all(&target) {
                    errors.push(format!(
                        "config: mounts: {dev} at {at}: cannot create the mount point: {e} (the system image is read-only: mount below /var, /state or /run)"
                    ));
                    continue;
                }
                match super::sys::mount(Path::new(&dev), &target, &fstype, flags, &data) {
                    Ok(()) => notes.push(format!("config: mounts: {dev} ({fstype}) at {at}")),
                    Err(e) => errors.push(format!("config: mounts: {e}")),
                }
            }
            Err(e) => errors.push(format!("config: mounts: {e}")),
        }
    }
    (notes, errors)
}

/// At shutdown, after the services stopped: unmount what `apply` mounted
/// (deepest first), so a data disk is clean at the next boot instead of
/// replaying its journal. A busy one is left to PID 1's sync.
pub fn unmount_all(l: &Layout, entries: &[MountEntry]) -> Vec<String> {
    let info = std::fs::read_to_string(l.p("proc/self/mountinfo")).unwrap_or_default();
    let already = mounted(&info);
    let mut dirs: Vec<&str> = entries
        .iter()
        .map(|m| m.dir.as_str())
        .filter(|d| already.iter().any(|a| a == d))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    let mut said = Vec::new();
    for d in dirs {
        match super::sys::umount_clean(&l.p(d)) {
            Ok(()) => said.push(format!("config: mounts: {d} unmounted")),
            Err(e) => said.push(format!("config: mounts: {e}")),
        }
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(label: &str) -> Vec<u8> {
        let mut b = vec![0u8; 2048];
        b[1024 + 56] = 0x53;
        b[1024 + 57] = 0xef;
        for (i, x) in (0u8..16).enumerate() {
            b[1024 + 104 + i] = x * 17;
        }
        b[1024 + 120..1024 + 120 + label.len()].copy_from_slice(label.as_bytes());
        b
    }

    fn entry(spec: &str, dir: &str) -> MountEntry {
        MountEntry {
            spec: spec.into(),
            dir: dir.into(),
            fstype: "auto".into(),
            options: "defaults,nofail,noatime".into(),
            dump: "0".into(),
            pass: "2".into(),
        }
    }

    #[test]
    fn labels_and_uuids_are_read_from_the_superblock() {
        let (label, uuid) = ext_ids(&sb("data")).unwrap();
        assert_eq!(label, "data");
        assert_eq!(uuid, "00112233-4455-6677-8899-aabbccddeeff");
        assert!(ext_ids(&[0u8; 2048]).is_none());
    }

    #[test]
    fn specs_resolve_like_fstab() {
        let d = tempfile::tempdir().unwrap();
        let (dev, sys) = (d.path().join("dev"), d.path().join("sys"));
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(sys.join("vdb1")).unwrap();
        std::fs::create_dir_all(sys.join("vda")).unwrap();
        std::fs::write(dev.join("vdb1"), sb("data")).unwrap();
        std::fs::write(dev.join("vda"), vec![0u8; 4096]).unwrap();
        let known = scan(&dev, &sys);
        assert_eq!(known.len(), 1, "{known:?}");
        assert_eq!(resolve("LABEL=data", &known).unwrap(), "/dev/vdb1");
        assert_eq!(
            resolve("UUID=00112233-4455-6677-8899-AABBCCDDEEFF", &known).unwrap(),
            "/dev/vdb1"
        );
        assert_eq!(resolve("/dev/vdc1", &known).unwrap(), "/dev/vdc1");
        assert_eq!(resolve("vdc", &known).unwrap(), "/dev/vdc");
        assert!(resolve("LABEL=other", &known).is_err());
    }

    #[test]
    fn an_entry_becomes_a_mount_or_a_reasoned_skip() {
        let known = vec![("/dev/vdb1".into(), "data".into(), "u".into())];
        let p = plan(&entry("LABEL=data", "/var/lib/docker"), &known, &[]).unwrap();
        assert_eq!(
            p,
            Plan::Mount {
                dev: "/dev/vdb1".into(),
                at: "/var/lib/docker".into(),
                fstype: "ext4".into(),
                flags: MountFlags::NOATIME,
                data: String::new(),
            }
        );
        let again = plan(
            &entry("LABEL=data", "/var/lib/docker"),
            &known,
            &["/var/lib/docker".into()],
        )
        .unwrap();
        assert!(matches!(again, Plan::Skip(_)));
        let mut swap = entry("swap", "none");
        swap.fstype = "swap".into();
        assert!(matches!(plan(&swap, &known, &[]).unwrap(), Plan::Skip(_)));
        assert!(plan(&entry("/dev/vdb1", "relative"), &known, &[]).is_err());
        assert!(plan(&entry("/dev/vdb1", "/var/../usr"), &known, &[]).is_err());
    }

    #[test]
    fn options_split_into_flags_and_data() {
        assert_eq!(
            options("defaults,ro,nosuid,x-systemd.requires=foo,errors=remount-ro"),
            (
                MountFlags::RDONLY | MountFlags::NOSUID,
                "errors=remount-ro".into()
            )
        );
    }
}
