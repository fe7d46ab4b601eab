//! The child's system calls: one small wrapper per call, each turning the C
//! convention (-1 and errno) into `Result<_, Errno>`, each with the one `unsafe`
//! block it needs and the reason it is sound.
//!
//! It owns every `unsafe` FFI call the child makes. It must never allocate, lock
//! or panic (the child runs them after clone from a possibly multi-threaded
//! parent), and never go through a libc wrapper that touches other threads
//! (credentials: see `setgroups`). Memory safety here rests on one pattern: every
//! pointer handed to the kernel comes from a `&CStr`, a slice or a local that
//! outlives the call.

use std::ffi::CStr;
use std::os::fd::RawFd;

use crate::setup::CapData;

// Credentials are changed with raw syscalls, never libc's wrappers: glibc and
// musl implement setuid/setgid/setgroups for *every thread of the process*
// (they signal each thread and wait for it). After a raw clone from a
// multi-threaded sysd, the child's libc still lists the parent's threads, so
// the wrappers wait forever for threads that are not there (seen on armv7:
// a container start hung now and then). The raw syscalls change only the
// calling thread, which in the child is the whole process.
#[cfg(target_arch = "arm")]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups32;
#[cfg(target_arch = "arm")]
const SYS_SETRESGID: libc::c_long = libc::SYS_setresgid32;
#[cfg(target_arch = "arm")]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid32;
#[cfg(not(target_arch = "arm"))]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups;
#[cfg(not(target_arch = "arm"))]
const SYS_SETRESGID: libc::c_long = libc::SYS_setresgid;
#[cfg(not(target_arch = "arm"))]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid;

/// The errno of a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Errno(pub i32);

/// The calling thread's errno (reading it allocates nothing).
pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// -1 (or any negative return) means failure with errno set.
fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 {
        Err(Errno(errno()))
    } else {
        Ok(ret)
    }
}

fn ptr_or_null(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

/// Write the failure record and exit without running any destructor or atexit
/// handler (they belong to the parent's copy of the process).
pub(crate) fn report_and_exit(fd: RawFd, record: &[u8]) -> ! {
    // SAFETY: write reads `record.len()` bytes from a live slice; _exit never
    // returns and touches no user-space state.
    unsafe {
        libc::write(fd, record.as_ptr().cast(), record.len());
        libc::_exit(127)
    }
}

/// fcntl(F_DUPFD_CLOEXEC): a copy of `fd` numbered `min` or higher.
pub(crate) fn dup_cloexec_above(fd: RawFd, min: RawFd) -> Result<RawFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer argument and no pointer.
    check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) }.into()).map(|fd| fd as RawFd)
}

pub(crate) fn dup2(from: RawFd, to: RawFd) -> Result<(), Errno> {
    // SAFETY: integers only.
    check(unsafe { libc::dup2(from, to) }.into()).map(drop)
}

/// close(2); the child has nothing to do about a failed close.
pub(crate) fn close(fd: RawFd) {
    // SAFETY: integers only; `fd` is one the child opened or was given.
    unsafe { libc::close(fd) };
}

/// Unblock every signal and restore every disposition the caller may have changed
/// (Rust ignores SIGPIPE): both survive execve.
pub(crate) fn reset_signals() {
    // SAFETY: the set is a zeroed local that sigemptyset initialises; signal()
    // with SIG_DFL installs no handler code.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// write(2) once; a short write is not retried (callers write a few bytes to
/// kernel files, which take them whole or fail).
pub(crate) fn write(fd: RawFd, data: &[u8]) -> Result<(), Errno> {
    // SAFETY: reads `data.len()` bytes from a live slice.
    check(unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) } as libc::c_long).map(drop)
}

/// Open `path` write-only, write `data` once, close.
pub(crate) fn write_file(path: &CStr, data: &[u8]) -> Result<(), Errno> {
    // SAFETY: `path` is a live C string.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) }.into())?
        as RawFd;
    let written = write(fd, data);
    // A successful close leaves errno as write set it.
    close(fd);
    written
}

/// Create an empty file at `path` (a bind-mount target) if none is there; an
/// existing file or a read-only filesystem is left to the mount to judge.
pub(crate) fn create_file(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a live C string.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        let e = errno();
        if e != libc::EEXIST && e != libc::EROFS {
            return Err(Errno(e));
        }
    } else {
        close(fd);
    }
    Ok(())
}

/// mkdir(2) that accepts an existing directory.
pub(crate) fn mkdir_ok(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a live C string.
    match check(unsafe { libc::mkdir(path.as_ptr(), 0o755) }.into()) {
        Err(Errno(libc::EEXIST)) => Ok(()),
        other => other.map(drop),
    }
}

/// stat(2): Some(is a directory), or None when nothing is there.
pub(crate) fn is_dir(path: &CStr) -> Option<bool> {
    // SAFETY: stat writes into a zeroed local struct; `path` is a live C string.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::stat(path.as_ptr(), &mut st) < 0 {
            return None;
        }
        Some(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
    }
}

pub(crate) fn unshare(flags: libc::c_int) -> Result<(), Errno> {
    // SAFETY: integers only.
    check(unsafe { libc::unshare(flags) }.into()).map(drop)
}

pub(crate) fn umask(mode: libc::mode_t) {
    // SAFETY: integers only; umask cannot fail.
    unsafe { libc::umask(mode) };
}

/// mount(2); None is a null pointer (no source, no type, no data).
pub(crate) fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), Errno> {
    // SAFETY: every pointer is a live C string or null, which mount(2) accepts for
    // source, fstype and data.
    check(
        unsafe {
            libc::mount(
                ptr_or_null(source),
                target.as_ptr(),
                ptr_or_null(fstype),
                flags,
                ptr_or_null(data).cast(),
            )
        }
        .into(),
    )
    .map(drop)
}

pub(crate) fn umount_detach(target: &CStr) -> Result<(), Errno> {
    // SAFETY: `target` is a live C string.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }.into()).map(drop)
}

pub(crate) fn mknod(path: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> Result<(), Errno> {
    // SAFETY: `path` is a live C string.
    check(unsafe { libc::mknod(path.as_ptr(), mode, dev) }.into()).map(drop)
}

pub(crate) fn chown(path: &CStr, uid: libc::uid_t, gid: libc::gid_t) -> Result<(), Errno> {
    // SAFETY: `path` is a live C string.
    check(unsafe { libc::chown(path.as_ptr(), uid, gid) }.into()).map(drop)
}

pub(crate) fn symlink(target: &CStr, link: &CStr) -> Result<(), Errno> {
    // SAFETY: both are live C strings.
    check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }.into()).map(drop)
}

/// open(O_DIRECTORY | O_RDONLY | O_CLOEXEC).
pub(crate) fn open_dir(path: &CStr) -> Result<RawFd, Errno> {
    // SAFETY: `path` is a live C string.
    check(
        unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
            )
        }
        .into(),
    )
    .map(|fd| fd as RawFd)
}

pub(crate) fn chdir(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a live C string.
    check(unsafe { libc::chdir(path.as_ptr()) }.into()).map(drop)
}

pub(crate) fn fchdir(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: integers only.
    check(unsafe { libc::fchdir(fd) }.into()).map(drop)
}

pub(crate) fn chroot(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a live C string.
    check(unsafe { libc::chroot(path.as_ptr()) }.into()).map(drop)
}

/// pivot_root(2), which libc does not wrap.
pub(crate) fn pivot_root(new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
    // SAFETY: both are live C strings.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
        .map(drop)
}

pub(crate) fn sethostname(name: &CStr) -> Result<(), Errno> {
    let bytes = name.to_bytes();
    // SAFETY: reads `bytes.len()` bytes of a live C string.
    check(unsafe { libc::sethostname(bytes.as_ptr().cast(), bytes.len()) }.into()).map(drop)
}

pub(crate) fn setdomainname(name: &CStr) -> Result<(), Errno> {
    let bytes = name.to_bytes();
    // SAFETY: reads `bytes.len()` bytes of a live C string.
    check(unsafe { libc::setdomainname(bytes.as_ptr().cast(), bytes.len()) }.into()).map(drop)
}

/// prlimit64 on the calling process: 64-bit limits on every arch.
pub(crate) fn prlimit(resource: i32, limits: &[u64; 2]) -> Result<(), Errno> {
    // SAFETY: the kernel reads two u64 (struct rlimit64) from a live array and,
    // with a null old-limit pointer, writes nothing.
    check(unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0 as libc::pid_t,
            resource as libc::c_int,
            limits.as_ptr(),
            std::ptr::null_mut::<u64>(),
        )
    })
    .map(drop)
}

/// prctl(2) with integer arguments only.
pub(crate) fn prctl(
    option: libc::c_int,
    arg2: libc::c_ulong,
    arg3: libc::c_ulong,
) -> Result<(), Errno> {
    // SAFETY: every option the child uses (CAPBSET_DROP, SET_KEEPCAPS, CAP_AMBIENT,
    // SET_NO_NEW_PRIVS) takes integers, not pointers.
    check(unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) }.into())
        .map(drop)
}

/// Install a seccomp filter on the calling thread.
pub(crate) fn set_seccomp(filter: &[libc::sock_filter]) -> Result<(), Errno> {
    let prog = libc::sock_fprog {
        // seccomp::compile keeps programs within BPF_MAXINSNS (4096).
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the kernel copies the program from `prog`, a local pointing at a live
    // slice of `len` instructions; it never writes through the pointer.
    check(
        unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        }
        .into(),
    )
    .map(drop)
}

pub(crate) fn setgroups(groups: &[libc::gid_t]) -> Result<(), Errno> {
    // SAFETY: the kernel reads `groups.len()` gids from a live slice.
    check(unsafe { libc::syscall(SYS_SETGROUPS, groups.len(), groups.as_ptr()) }).map(drop)
}

pub(crate) fn setresgid(gid: libc::gid_t) -> Result<(), Errno> {
    // SAFETY: integers only.
    check(unsafe { libc::syscall(SYS_SETRESGID, gid, gid, gid) }).map(drop)
}

pub(crate) fn setresuid(uid: libc::uid_t) -> Result<(), Errno> {
    // SAFETY: integers only.
    check(unsafe { libc::syscall(SYS_SETRESUID, uid, uid, uid) }).map(drop)
}

/// capset(2) on the calling thread with `_LINUX_CAPABILITY_VERSION_3`.
pub(crate) fn capset(sets: &[CapData; 2]) -> Result<(), Errno> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    // SAFETY: header and data are #[repr(C)] like the kernel's structs, live for
    // the call; version 3 reads exactly two data structs.
    check(unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, sets.as_ptr()) })
        .map(drop)
}

/// execve(2); it only returns on failure, with the errno.
///
/// # Safety
/// `argv` and `envp` must each end with a null pointer, and every other entry
/// must point to a C string that lives until the call returns.
pub(crate) unsafe fn execve(
    program: &CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> Errno {
    // SAFETY: `program` is a live C string; the arrays are as the caller promised.
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Errno(errno())
}

/// Sleep 10 ms.
pub(crate) fn sleep_10ms() {
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    // SAFETY: reads a local timespec; a null remainder pointer is allowed.
    unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
}
