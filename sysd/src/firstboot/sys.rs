//! The few system calls first-boot config makes: mount/umount of a CIDATA
//! volume, the host name. Kept here so the rest is plain file work that runs under
//! `--root` in tests. Through rustix, like `crate::sys`. Errors are [`SysError`], naming the call and
//! the path or device; their Display is the line `osctl status` shows.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

/// A first-boot system call or userland command failed.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("cannot mount {} ({fstype}, read-only) at {}: {source}{hint}", dev.display(), at.display())]
    MountRo {
        dev: PathBuf,
        at: PathBuf,
        fstype: String,
        /// What to do about it, when the cause is known (empty otherwise).
        hint: String,
        source: std::io::Error,
    },
    #[error("cannot mount {} ({fstype}) at {}: {source}", dev.display(), at.display())]
    Mount {
        dev: PathBuf,
        at: PathBuf,
        fstype: String,
        source: std::io::Error,
    },
    #[error("bad mount options")]
    MountOptions,
    #[error("cannot unmount {}: {source}", at.display())]
    Unmount { at: PathBuf, source: std::io::Error },
    #[error("cannot set the host name to {name}: {source}")]
    Hostname {
        name: String,
        source: std::io::Error,
    },
    #[error("nothing to run")]
    NothingToRun,
    #[error("{}: a path with a NUL byte", path.display())]
    NulInPath { path: PathBuf },
    #[error("cannot run {prog} from the userland: {source}")]
    Spawn {
        prog: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {output}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
}

pub fn mount_ro(dev: &Path, at: &Path, fstype: &str) -> Result<(), SysError> {
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    rustix::mount::mount(dev, at, fstype, flags, None).map_err(|e| {
        let hint = if e == rustix::io::Errno::NODEV {
            format!(" (the kernel has no {fstype} support loaded; use a vfat seed: `ballast seed` without --iso)")
        } else {
            String::new()
        };
        SysError::MountRo {
            dev: dev.to_path_buf(),
            at: at.to_path_buf(),
            fstype: fstype.to_string(),
            hint,
            source: e.into(),
        }
    })
}

pub fn umount(at: &Path) -> Result<(), SysError> {
    rustix::mount::unmount(at, UnmountFlags::DETACH).map_err(|e| SysError::Unmount {
        at: at.to_path_buf(),
        source: e.into(),
    })
}

pub fn sethostname(name: &str) -> Result<(), SysError> {
    rustix::system::sethostname(name.as_bytes()).map_err(|e| SysError::Hostname {
        name: name.to_string(),
        source: e.into(),
    })
}

/// Run `argv` (absolute paths inside the userland) chrooted into the image's
/// userland, in a private mount namespace with the host's `/dev`, `/proc` and
/// `/sys` bound in (the userland's own are empty directories): how sysd runs
/// mkfs, which the host image does not carry. Returns its output; a non-zero
/// exit is an error with that output.
pub fn run_in_userland(userland: &Path, argv: &[String]) -> Result<String, SysError> {
    use rustix::mount::{mount_bind_recursive, mount_change, MountPropagationFlags};
    use std::os::unix::process::CommandExt;
    let Some((prog, args)) = argv.split_first() else {
        return Err(SysError::NothingToRun);
    };
    // Every path the child uses is made here, before the fork: the closure
    // below must not allocate.
    let root = cstr(userland)?;
    let binds: Vec<(CString, CString)> = ["dev", "proc", "sys"]
        .iter()
        .map(|d| Ok((cstr(&Path::new("/").join(d))?, cstr(&userland.join(d))?)))
        .collect::<Result<_, SysError>>()?;
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
    let out = cmd.output().map_err(|source| SysError::Spawn {
        prog: prog.clone(),
        source,
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(SysError::Failed {
            command: argv.join(" "),
            status: out.status,
            output: text.trim().to_string(),
        })
    }
}

fn cstr(p: &Path) -> Result<CString, SysError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SysError::NulInPath {
        path: p.to_path_buf(),
    })
}

/// Mount `dev` at `at` (`fstype`, `flags`, the rest as the filesystem's `data`).
pub fn mount(
    dev: &Path,
    at: &Path,
    fstype: &str,
    flags: MountFlags,
    data: &str,
) -> Result<(), SysError> {
    let d = CString::new(data).map_err(|_| SysError::MountOptions)?;
    let data = (!data.is_empty()).then_some(d.as_c_str());
    rustix::mount::mount(dev, at, fstype, flags, data).map_err(|e| SysError::Mount {
        dev: dev.to_path_buf(),
        at: at.to_path_buf(),
        fstype: fstype.to_string(),
        source: e.into(),
    })
}

/// umount(2) without MNT_DETACH: fails (EBUSY) rather than leave the
/// filesystem mounted out of sight.
pub fn umount_clean(at: &Path) -> Result<(), SysError> {
    rustix::mount::unmount(at, UnmountFlags::empty()).map_err(|e| SysError::Unmount {
        at: at.to_path_buf(),
        source: e.into(),
    })
}
