//! The few system calls first-boot config makes: mount/umount of a CIDATA
//! volume, the host name, chown. Kept here so the rest is plain file work that
//! runs under `--root` in tests.

use std::ffi::CString;
use std::path::Path;

fn cstr(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: path has a NUL byte", p.display()))
}

pub fn mount_ro(dev: &Path, at: &Path, fstype: &str) -> Result<(), String> {
    let (d, a) = (cstr(dev)?, cstr(at)?);
    let t = CString::new(fstype).map_err(|_| "bad filesystem type".to_string())?;
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call and no data.
    let rc = unsafe { libc::mount(d.as_ptr(), a.as_ptr(), t.as_ptr(), flags, std::ptr::null()) };
    if rc == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        let hint = if e.raw_os_error() == Some(libc::ENODEV) {
            format!(" (the kernel has no {fstype} support loaded; use a vfat seed: `ballast seed` without --iso)")
        } else {
            String::new()
        };
        Err(format!(
            "cannot mount {} ({fstype}, read-only) at {}: {e}{hint}",
            dev.display(),
            at.display()
        ))
    }
}

pub fn umount(at: &Path) -> Result<(), String> {
    let a = cstr(at)?;
    // SAFETY: umount2(2) with a NUL-terminated path.
    let rc = unsafe { libc::umount2(a.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot unmount {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        ))
    }
}

pub fn sethostname(name: &str) -> Result<(), String> {
    // SAFETY: sethostname(2) reads exactly len bytes from the pointer.
    let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot set the host name to {name}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Run `argv` (absolute paths inside the userland) chrooted into the image's
/// userland, in a private mount namespace with the host's `/dev`, `/proc` and
/// `/sys` bound in (the userland's own are empty directories): how sysd runs
/// mkfs, which the host image does not carry. Returns its output; a non-zero
/// exit is an error with that output.
pub fn run_in_userland(userland: &Path, argv: &[String]) -> Result<String, String> {
    use std::os::unix::process::CommandExt;
    let Some((prog, args)) = argv.split_first() else {
        return Err("nothing to run".into());
    };
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
    // (unshare, mount, chroot, chdir) on strings prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let null: *const libc::c_char = std::ptr::null();
            let nodata: *const libc::c_void = std::ptr::null();
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_PRIVATE | libc::MS_REC,
                    nodata,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (from, to) in &binds {
                if libc::mount(
                    from.as_ptr(),
                    to.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    nodata,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
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

/// Mount `dev` at `at` (`fstype`, MS_* `flags`, the rest as `data`).
pub fn mount(
    dev: &Path,
    at: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), String> {
    let (d, a) = (cstr(dev)?, cstr(at)?);
    let t = CString::new(fstype).map_err(|_| "bad filesystem type".to_string())?;
    let o = CString::new(data).map_err(|_| "bad mount options".to_string())?;
    let data_ptr = if data.is_empty() {
        std::ptr::null()
    } else {
        o.as_ptr().cast()
    };
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe { libc::mount(d.as_ptr(), a.as_ptr(), t.as_ptr(), flags, data_ptr) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot mount {} ({fstype}) at {}: {}",
            dev.display(),
            at.display(),
            std::io::Error::last_os_error()
        ))
    }
}

/// umount(2) without MNT_DETACH: fails (EBUSY) rather than leave the
/// filesystem mounted out of sight.
pub fn umount_clean(at: &Path) -> Result<(), String> {
    let a = cstr(at)?;
    // SAFETY: umount2(2) with a NUL-terminated path.
    let rc = unsafe { libc::umount2(a.as_ptr(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot unmount {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        ))
    }
}
