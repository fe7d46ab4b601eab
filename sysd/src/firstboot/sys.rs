//! The few system calls first-boot config makes: mount/umount of a CIDATA
//! volume, the host name. Kept here so the rest is plain file work that runs under
//! `--root` in tests. Through rustix, like `crate::sys`; the errors stay text because
//! the config sources (`source.rs`) collect them as text for `osctl status`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
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

/// Run `argv` (absolute paths inside the userland) chrooted into the image's
/// userland, in a private mount namespace with the host's `/dev`, `/proc` and
/// `/sys` bound in (the userland's own are empty directories): how sysd runs
/// mkfs, which the host image does not carry. Returns its output; a non-zero
/// exit is an error with that output.
pub fn run_in_userland(userland: &Path, argv: &[String]) -> Result<String, String> {
    use rustix::mount::{mount_bind_recursive, mount_change, MountPropagationFlags};
    use std::os::unix::process::CommandExt;
    let Some((prog, args)) = argv.split_first() else {
        return Err("nothing to run".into());
    };
    // Every path the child uses is made here, before the fork: the closure
    // below must not allocate.
    let root = cstr(userland)?;
    let binds: Vec<(CString, CString)> = ["dev", "proc", "sys"]
        .iter()
        .map(|d| Ok((cstr(&Path::new("/").join(d))?, cstr(&userland.join(d))?)))
        .collect::<Result<_, String>>()?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8");
    // SAFETY: between fork and exec the closure only makes system calls
    // (unshare, mount, chroot, chdir) on C strings prepared before the fork;
    // it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)?;
            mount_change(
                c"/",
                MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
            )?;
            for (from, to) in &binds {
                mount_bind_recursive(from.as_c_str(), to.as_c_str())?;
            }
            rustix::process::chroot(root.as_c_str())?;
            rustix::process::chdir(c"/")?;
            Ok(())
        });
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {prog} from the userland: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{} failed ({}): {}",
            argv.join(" "),
            out.status,
            text.trim()
        ))
    }
}

fn cstr(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a path with a NUL byte", p.display()))
}

/// Mount `dev` at `at` (`fstype`, `flags`, the rest as the filesystem's `data`).
pub fn mount(
    dev: &Path,
    at: &Path,
    fstype: &str,
    flags: MountFlags,
    data: &str,
) -> Result<(), String> {
    let d = CString::new(data).map_err(|_| "bad mount options".to_string())?;
    let data = (!data.is_empty()).then_some(d.as_c_str());
    rustix::mount::mount(dev, at, fstype, flags, data).map_err(|e| {
        format!(
            "cannot mount {} ({fstype}) at {}: {}",
            dev.display(),
            at.display(),
            std::io::Error::from(e)
        )
    })
}

/// umount(2) without MNT_DETACH: fails (EBUSY) rather than leave the
/// filesystem mounted out of sight.
pub fn umount_clean(at: &Path) -> Result<(), String> {
    rustix::mount::unmount(at, UnmountFlags::empty()).map_err(|e| {
        format!(
            "cannot unmount {}: {}",
            at.display(),
            std::io::Error::from(e)
        )
    })
}
