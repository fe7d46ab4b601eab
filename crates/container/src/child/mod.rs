//! The container's first process, between clone(2) and execve(2).
//!
//! The caller (sysd) may be multi-threaded, so after clone the child must not
//! allocate, lock or unwind: everything it needs — every path, flag, argv and envp,
//! the mount list, the capability sets and the seccomp program — is computed into a
//! [`ChildSetup`] by the parent beforehand, and the child only issues syscalls, through
//! the small wrappers in `sys` (the only `unsafe` FFI here; credentials by raw
//! syscall, never libc's all-threads wrappers). A failing step writes a fixed-size
//! record (step, index, errno) to a close-on-exec pipe and exits; a successful
//! execve closes the pipe, which is how the parent learns the program is running.
//!
//! It owns the order of the steps (the list in `prepare`, then `exec`); it must never decide
//! anything the setup could have decided, nor format a message (the parent does).

mod step;
mod sys;

pub(crate) use step::{Failed, Step, REPORT_LEN};

use std::ffi::CStr;
use std::os::fd::RawFd;

use crate::setup::{Caps, ChildSetup, DeviceSetup, MountSetup, MAX_ARGS};
use sys::Errno;

type StepResult = Result<(), Failed>;

/// Tags an errno with the step and index it failed at.
fn at(step: Step, index: usize) -> impl Fn(Errno) -> Failed {
    move |Errno(errno)| Failed { step, index, errno }
}

/// The child after clone(2): set the process up as the setup says, then exec.
/// Never returns.
///
/// # Safety
/// Must only run in the freshly cloned child (it changes this process's mounts,
/// root, credentials and signal dispositions, and exits on failure); `report` is
/// the write end of the status pipe.
pub(crate) unsafe fn run(setup: &ChildSetup, report: RawFd) -> ! {
    let failed = match prepare(setup) {
        // SAFETY: the setup's argv and envp outlive the exec; we are the child.
        Ok(()) => unsafe { exec(setup) },
        Err(f) => f,
    };
    sys::report_and_exit(report, &failed.to_record())
}

/// Every step before exec, in order (the order matters: see each comment). Only
/// ever called by [`run`] in the child: it changes this process for good.
fn prepare(setup: &ChildSetup) -> StepResult {
    set_stdio(setup.stdio)?;
    // The caller may block or ignore some signals; both survive execve.
    sys::reset_signals();
    join_cgroups(setup)?;
    sys::umask(0);
    // Mounts are made relative to the host's view of the rootfs, then we pivot.
    mount_root(setup)?;
    for (i, m) in setup.mounts.iter().enumerate() {
        mount_one(i, m)?;
    }
    for (i, d) in setup.devices.iter().enumerate() {
        make_device(i, d)?;
    }
    make_dev_symlinks(setup)?;
    pivot_root(setup)?;
    // sysctls go in before /proc/sys is made read-only (readonlyPaths), as runc does.
    set_names(setup)?;
    write_sysctls(setup)?;
    mask_paths(setup)?;
    make_paths_readonly(setup)?;
    if setup.readonly_root {
        let ro = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        sys::mount(None, c"/", None, ro, None).map_err(at(Step::ReadonlyRoot, 0))?;
    }
    set_limits(setup)?;
    // Without no_new_privs the kernel only takes a filter from a CAP_SYS_ADMIN
    // holder: install it while we still are one (runc does the same); the rest of
    // the setup then runs under it.
    if !setup.no_new_privs {
        install_seccomp(setup)?;
    }
    // Privileges: bounding set, then identity (keeping permitted caps across
    // setuid), then the exact capability sets, ambient last.
    if let Some(caps) = &setup.caps {
        drop_bounding(caps)?;
        sys::prctl(libc::PR_SET_KEEPCAPS, 1, 0).map_err(at(Step::KeepCaps, 0))?;
    }
    set_identity(setup)?;
    if let Some(caps) = &setup.caps {
        set_caps(caps)?;
    }
    if setup.no_new_privs {
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(at(Step::NoNewPrivs, 0))?;
    }
    sys::chdir(&setup.cwd).map_err(at(Step::Cwd, 0))?;
    sys::umask(setup.umask);
    if setup.no_new_privs {
        install_seccomp(setup)?;
    }
    Ok(())
}

/// Put the three fds on 0, 1, 2: first move them out of the way (they may be 0..2
/// in any order), then dup2 onto the targets (which clears close-on-exec there).
fn set_stdio(stdio: [RawFd; 3]) -> StepResult {
    let mut high = [0; 3];
    for (i, fd) in stdio.iter().enumerate() {
        high[i] = sys::dup_cloexec_above(*fd, 10).map_err(at(Step::Stdio, i))?;
    }
    for (i, fd) in high.iter().enumerate() {
        sys::dup2(*fd, i as RawFd).map_err(at(Step::Stdio, i))?;
        sys::close(*fd);
    }
    Ok(())
}

fn join_cgroups(setup: &ChildSetup) -> StepResult {
    for (i, fd) in setup.cgroup_procs.iter().enumerate() {
        sys::write(*fd, b"0").map_err(at(Step::JoinCgroup, i))?;
    }
    if setup.unshare_cgroup {
        sys::unshare(libc::CLONE_NEWCGROUP).map_err(at(Step::UnshareCgroup, 0))?;
    }
    Ok(())
}

/// Make / private (or what rootfsPropagation says), then bind the rootfs onto
/// itself so it is a mount point pivot_root can take.
fn mount_root(setup: &ChildSetup) -> StepResult {
    sys::mount(None, c"/", None, setup.root_propagation, None)
        .map_err(at(Step::RootPropagation, 0))?;
    let rootfs = Some(setup.rootfs.as_c_str());
    sys::mount(
        rootfs,
        &setup.rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(at(Step::BindRoot, 0))
}

/// One `mounts[i]`: its mount point, the mount, its propagation.
fn mount_one(i: usize, m: &MountSetup) -> StepResult {
    let last = m.dirs.len().saturating_sub(1);
    for (j, d) in m.dirs.iter().enumerate() {
        if j == last && m.dest_is_file {
            sys::create_file(d)
        } else {
            sys::mkdir_ok(d)
        }
        .map_err(at(Step::MountDir, i))?;
    }
    let source = m.source.as_deref();
    let data = m.data.as_deref();
    if m.bind {
        // A bind mount ignores flags and data; they need a remount.
        let flags = libc::MS_BIND | (m.flags & libc::MS_REC);
        sys::mount(source, &m.dest, None, flags, None).map_err(at(Step::Mount, i))?;
        let extra = m.flags & !(libc::MS_BIND | libc::MS_REC);
        if extra != 0 || m.data.is_some() {
            let flags = libc::MS_REMOUNT | libc::MS_BIND | extra;
            sys::mount(source, &m.dest, None, flags, data).map_err(at(Step::Mount, i))?;
        }
    } else {
        sys::mount(source, &m.dest, m.fstype.as_deref(), m.flags, data)
            .map_err(at(Step::Mount, i))?;
    }
    for p in &m.propagation {
        sys::mount(None, &m.dest, None, *p, None).map_err(at(Step::MountPropagation, i))?;
    }
    Ok(())
}

/// An existing node (from the image) is kept; a read-only /dev without the node
/// is an error.
fn make_device(i: usize, d: &DeviceSetup) -> StepResult {
    match sys::mknod(&d.path, d.mode, d.dev) {
        Ok(()) => sys::chown(&d.path, d.uid, d.gid).map_err(at(Step::Device, i)),
        Err(Errno(libc::EEXIST)) => Ok(()),
        Err(e) => Err(at(Step::Device, i)(e)),
    }
}

/// /dev/fd, /dev/stdin...: best effort where /dev is read-only or absent.
fn make_dev_symlinks(setup: &ChildSetup) -> StepResult {
    for (i, (target, link)) in setup.dev_symlinks.iter().enumerate() {
        match sys::symlink(target, link) {
            Err(Errno(libc::EEXIST | libc::EROFS | libc::ENOENT)) | Ok(()) => {}
            Err(e) => return Err(at(Step::DevSymlink, i)(e)),
        }
    }
    Ok(())
}

/// pivot_root(".", ".") stacks the old root on the new one; detach it. Where the
/// host root is the initramfs (rootfs cannot be pivoted away), move the new root
/// over / and chroot, as crun and runc do there.
fn pivot_root(setup: &ChildSetup) -> StepResult {
    let step = |index| at(Step::PivotRoot, index);
    let oldroot = sys::open_dir(c"/").map_err(step(0))?;
    sys::chdir(&setup.rootfs).map_err(step(1))?;
    match sys::pivot_root(c".", c".") {
        Ok(()) => {
            sys::fchdir(oldroot).map_err(step(3))?;
            let slave = libc::MS_SLAVE | libc::MS_REC;
            sys::mount(None, c".", None, slave, None).map_err(step(4))?;
            sys::umount_detach(c".").map_err(step(5))?;
        }
        Err(Errno(libc::EINVAL)) => {
            sys::mount(Some(c"."), c"/", None, libc::MS_MOVE, None).map_err(step(7))?;
            sys::chroot(c".").map_err(step(8))?;
        }
        Err(e) => return Err(step(2)(e)),
    }
    sys::close(oldroot);
    sys::chdir(c"/").map_err(step(6))
}

fn set_names(setup: &ChildSetup) -> StepResult {
    if let Some(h) = &setup.hostname {
        sys::sethostname(h).map_err(at(Step::Hostname, 0))?;
    }
    if let Some(d) = &setup.domainname {
        sys::setdomainname(d).map_err(at(Step::Domainname, 0))?;
    }
    Ok(())
}

fn write_sysctls(setup: &ChildSetup) -> StepResult {
    for (i, (path, value, _)) in setup.sysctls.iter().enumerate() {
        sys::write_file(path, value).map_err(at(Step::Sysctl, i))?;
    }
    Ok(())
}

/// linux.maskedPaths: a directory gets an empty read-only tmpfs, a file
/// /dev/null; a path that is not there is skipped.
fn mask_paths(setup: &ChildSetup) -> StepResult {
    for (i, (path, _)) in setup.masked.iter().enumerate() {
        match sys::is_dir(path) {
            None => continue,
            Some(true) => {
                let tmpfs = Some(c"tmpfs");
                sys::mount(tmpfs, path, tmpfs, libc::MS_RDONLY, None)
            }
            Some(false) => sys::mount(Some(c"/dev/null"), path, None, libc::MS_BIND, None),
        }
        .map_err(at(Step::MaskedPath, i))?;
    }
    Ok(())
}

/// linux.readonlyPaths: bind each onto itself, then remount that read-only.
fn make_paths_readonly(setup: &ChildSetup) -> StepResult {
    for (i, (path, _)) in setup.readonly_paths.iter().enumerate() {
        if sys::is_dir(path).is_none() {
            continue;
        }
        let bind = libc::MS_BIND | libc::MS_REC;
        sys::mount(Some(path), path, None, bind, None).map_err(at(Step::ReadonlyPath, i))?;
        let ro = bind | libc::MS_REMOUNT | libc::MS_RDONLY;
        sys::mount(Some(path), path, None, ro, None).map_err(at(Step::ReadonlyPath, i))?;
    }
    Ok(())
}

fn set_limits(setup: &ChildSetup) -> StepResult {
    if let Some(v) = &setup.oom_score_adj {
        sys::write_file(c"/proc/self/oom_score_adj", v).map_err(at(Step::OomScoreAdj, 0))?;
    }
    for (i, (resource, limits, _)) in setup.rlimits.iter().enumerate() {
        sys::prlimit(*resource, limits).map_err(at(Step::Rlimit, i))?;
    }
    Ok(())
}

fn install_seccomp(setup: &ChildSetup) -> StepResult {
    match &setup.seccomp {
        Some(filter) => sys::set_seccomp(filter).map_err(at(Step::Seccomp, 0)),
        None => Ok(()),
    }
}

/// EINVAL: a capability the kernel does not know; nothing to drop.
fn drop_bounding(caps: &Caps) -> StepResult {
    for cap in &caps.bounding_drops {
        match sys::prctl(libc::PR_CAPBSET_DROP, *cap as libc::c_ulong, 0) {
            Ok(()) | Err(Errno(libc::EINVAL)) => {}
            Err(e) => return Err(at(Step::CapBoundingDrop, *cap as usize)(e)),
        }
    }
    Ok(())
}

/// Groups, then gid, then uid (after setuid there is no right to change the rest).
fn set_identity(setup: &ChildSetup) -> StepResult {
    sys::setgroups(&setup.groups).map_err(at(Step::Groups, 0))?;
    sys::setresgid(setup.gid).map_err(at(Step::SetGid, 0))?;
    sys::setresuid(setup.uid).map_err(at(Step::SetUid, 0))
}

/// The exact effective, permitted and inheritable sets, then ambient.
fn set_caps(caps: &Caps) -> StepResult {
    sys::prctl(libc::PR_SET_KEEPCAPS, 0, 0).map_err(at(Step::KeepCaps, 1))?;
    sys::capset(&caps.sets).map_err(at(Step::Capset, 0))?;
    // Clearing cannot fail in a way that matters: every raise below is checked.
    let _ = sys::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    );
    for cap in &caps.ambient_raises {
        // The kernel only raises an ambient cap that is also permitted and
        // inheritable; like crun and runc, others are skipped (crun's own
        // `crun spec` asks for ambient caps with an empty inheritable set).
        let raise = libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong;
        match sys::prctl(libc::PR_CAP_AMBIENT, raise, *cap as libc::c_ulong) {
            Ok(()) | Err(Errno(libc::EPERM | libc::EINVAL)) => {}
            Err(e) => return Err(at(Step::Ambient, *cap as usize)(e)),
        }
    }
    Ok(())
}

/// Try each candidate path of the program like execvp: a PATH entry that does not
/// hold it is skipped, a permission problem is remembered.
///
/// # Safety
/// Child only: on success this process becomes the container's program.
unsafe fn exec(setup: &ChildSetup) -> Failed {
    // argv/envp pointer arrays live on the stack (no allocation after clone); the
    // setup refuses more than MAX_ARGS entries.
    let mut argv = [std::ptr::null::<libc::c_char>(); MAX_ARGS + 1];
    let mut envp = [std::ptr::null::<libc::c_char>(); MAX_ARGS + 1];
    for (slot, a) in argv.iter_mut().zip(setup.argv.iter().take(MAX_ARGS)) {
        *slot = a.as_ptr();
    }
    for (slot, e) in envp.iter_mut().zip(setup.envp.iter().take(MAX_ARGS)) {
        *slot = e.as_ptr();
    }
    let mut last = libc::ENOENT;
    for program in &setup.exec_candidates {
        // SAFETY: both arrays end in at least one null and point into the setup's
        // C strings, which live as long as this process.
        let Errno(e) = unsafe { exec_retrying(program, &argv, &envp) };
        if e != libc::ENOENT && e != libc::ENOTDIR {
            last = e;
        }
    }
    Failed {
        step: Step::Exec,
        index: 0,
        errno: last,
    }
}

/// ETXTBSY: another process still holds the program open for writing — often a
/// sibling forked by a threaded parent while it was copying the file, which keeps
/// the inherited descriptor only until its own exec. Retry for up to a second.
///
/// # Safety
/// As [`sys::execve`].
unsafe fn exec_retrying(
    program: &CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> Errno {
    // SAFETY: passed on from the caller.
    let mut e = unsafe { sys::execve(program, argv, envp) };
    let mut tries = 0;
    while e == Errno(libc::ETXTBSY) && tries < 100 {
        sys::sleep_10ms();
        // SAFETY: as above.
        e = unsafe { sys::execve(program, argv, envp) };
        tries += 1;
    }
    e
}
