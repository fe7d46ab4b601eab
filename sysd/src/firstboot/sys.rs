//! The few system calls first-boot config makes: mount/umount of a CIDATA
//! volume, the host name. Kept here so the rest is plain file work that runs under
//! `--root` in tests. Through rustix, like `crate::sys`; the errors stay text because
//! the config sources (`source.rs`) collect them as text for `osctl status`.

use std::path::Path;

use rustix::mount::{MountFlags, UnmountFlags};

pub fn mount_ro(dev: &Path, at: &Path, fstype: &str) -> Result<(), String> {
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    rustix::mount::mount(dev, at, fstype, flags, None).map_err(|e| {
        let hint = if e == rustix::io::Errno::NODEV {
            format!(" (the kernel has no {fstype} support loaded; use a vfat seed: `ballast seed` without --iso)")
        } else {
            String::new()
        };
        format!(
            "cannot mount {} ({fstype}, read-only) at {}: {}{hint}",
            dev.display(),
            at.display(),
            std::io::Error::from(e)
        )
    })
}

pub fn umount(at: &Path) -> Result<(), String> {
    rustix::mount::unmount(at, UnmountFlags::DETACH).map_err(|e| {
        format!(
            "cannot unmount {}: {}",
            at.display(),
            std::io::Error::from(e)
        )
    })
}

pub fn sethostname(name: &str) -> Result<(), String> {
    rustix::system::sethostname(name.as_bytes()).map_err(|e| {
        format!(
            "cannot set the host name to {name}: {}",
            std::io::Error::from(e)
        )
    })
}
