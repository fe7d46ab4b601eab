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
