//! ballast-container: run one container directory (an OCI `config.json` and the
//! rootfs it names; the OCI runtime spec calls this a "bundle", a word Ballast keeps
//! for the update bundle) as a process tree in its own namespaces, cgroup, read-only
//! root and reduced privileges.
//!
//! It owns the container directory → running process step for sysd, and the parsed
//! OCI configuration ([`OciConfig`]). It must never supervise, restart
//! or reap: the caller is the parent of the process it returns and owns its lifetime.
//!
//! # Why our own code and not youki's `libcontainer`
//!
//! `libcontainer` 0.5 resolves to about 100 crates for `aarch64-unknown-linux-musl`
//! with default features, including `libseccomp-sys`, which links the C libseccomp: a
//! static libseccomp for aarch64-musl and armv7-gnueabihf is not something Debian
//! ships, so the device builds would need a C cross toolchain dance or the feature
//! off. Without it, what remains is a generic runtime (state directory, hooks, tty,
//! user namespaces, systemd cgroups, v1) of which system containers use a small part,
//! compiled four times on a 2-core builder. The part we do need — clone with
//! namespace flags, mounts in order, pivot_root, capabilities, cgroup v2 files — is a
//! few hundred lines on `libc`, reviewable, and cross-builds static for every target
//! with no C dependency.
//!
//! # What is honoured
//!
//! `process` (args with PATH lookup in the config's env, env, cwd, user uid/gid/
//! additionalGids/umask, capabilities: all five sets, rlimits, noNewPrivileges,
//! oomScoreAdj), `root` (path relative to the container directory or absolute, readonly),
//! `hostname`, `domainname`, `mounts` (in order, bind/rbind with remount flags,
//! propagation options, data options), `linux.namespaces` (pid, network, mount, ipc,
//! uts, cgroup), `linux.devices` plus the OCI default devices, `linux.maskedPaths`,
//! `linux.readonlyPaths`, `linux.sysctl`, `linux.rootfsPropagation`,
//! `linux.resources` (memory.limit, pids.limit, cpu shares/quota/period, unified),
//! `linux.seccomp` without argument conditions: `defaultAction`, `defaultErrnoRet`,
//! `architectures` (the native one is matched, every other arch is killed) and
//! `syscalls[].names/action/errnoRet`, compiled to classic BPF in the parent (names
//! resolved for the build target by the `syscalls` crate; names this arch lacks are
//! skipped, like libseccomp) and installed right before execve — or, without
//! `noNewPrivileges`, before capabilities are dropped (CAP_SYS_ADMIN is needed then),
//! as runc does. Details in `seccomp.rs`.
//!
//! # What is refused or ignored
//!
//! Refused with an error naming the field: `linux.seccomp.syscalls[].args`,
//! `linux.seccomp.flags`, `listenerPath` and SCMP_ACT_NOTIFY, user and time namespaces, joining namespaces by
//! `path`, `process.terminal: true`. Ignored: hooks, `linux.resources.devices` (the v2
//! device controller needs eBPF; system containers are trusted image content),
//! annotations, AppArmor/SELinux labels.

mod cgroup;
mod child;
mod oci_config;
mod seccomp;
mod setup;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

pub use oci_config::{
    load, parse as parse_config, Capabilities, Cpu, Device, Linux, Memory, Mount, Namespace,
    OciConfig, Pids, Process, Resources, Rlimit, Root, Seccomp, SeccompSyscall, User,
};

/// Everything that can go wrong, each naming the file, field or step and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("cannot read {path}: {source} (is this a container directory, with config.json and the rootfs?)")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}:{line}:{column}: not a valid OCI runtime spec: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {field}: {reason}")]
    Field {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error(
        "container id {0:?} is not usable as a cgroup name; use letters, digits, '-', '_' and '.'"
    )]
    BadId(String),
    #[error("cgroup {path}: cannot {action}: {source}")]
    Cgroup {
        path: PathBuf,
        action: String,
        source: io::Error,
    },
    #[error("{field} is set but no cgroup hierarchy has the {controller} controller; boot with cgroup v2 (cgroup_no_v1=all) or remove the limit")]
    NoController {
        field: &'static str,
        controller: &'static str,
    },
    #[error("cgroup {path} still holds pids {pids:?} after SIGKILL; they are stuck in the kernel (D state?)")]
    CgroupBusy { path: PathBuf, pids: Vec<i32> },
    #[error("container {id}: {what}: {source}")]
    Os {
        id: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("container {id}: {step}{detail}: {source}; {hint}")]
    Setup {
        id: String,
        /// What the child was doing, e.g. "exec process.args[0]".
        step: &'static str,
        /// Which mount, path or limit, when the step has several.
        detail: String,
        source: io::Error,
        hint: &'static str,
    },
}

/// The file descriptors that become the container's stdin, stdout and stderr.
#[derive(Debug, Clone, Copy)]
pub struct Stdio3<'a> {
    pub stdin: BorrowedFd<'a>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
}

impl Stdio3<'static> {
    /// The caller's own 0, 1 and 2.
    pub fn inherit() -> Stdio3<'static> {
        // SAFETY: like std's Stdin/Stdout/Stderr handles, we treat 0..2 as open for the
        // life of the process; if one is closed, start() reports EBADF for "stdio".
        unsafe {
            Stdio3 {
                stdin: BorrowedFd::borrow_raw(0),
                stdout: BorrowedFd::borrow_raw(1),
                stderr: BorrowedFd::borrow_raw(2),
            }
        }
    }
}

/// A started container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// Host pid of the container's first process (pid 1 inside a pid namespace).
    pub pid: u32,
}

fn check_id(id: &str) -> Result<(), ContainerError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ContainerError::BadId(id.to_string()))
    }
}

/// How long [`start`] waits for the container's process to exec.
pub const EXEC_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

/// Start the process of the container directory `dir`. Returns once it has exec'd `process.args[0]`, or with
/// the step that failed. The caller is its parent and must reap it (waitpid); after it
/// died, call [`cleanup`].
pub fn start(
    id: &str,
    dir: &Path,
    config: &OciConfig,
    stdio: Stdio3<'_>,
) -> Result<Started, ContainerError> {
    check_id(id)?;
    let os = |what: &'static str| {
        let id = id.to_string();
        move |source| ContainerError::Os { id, what, source }
    };
    let cg = cgroup::Cgroup::create(id, config.linux.resources.as_ref())?;
    let procs = cg.procs_files()?;
    let setup = setup::ChildSetup::new(
        dir,
        config,
        [
            stdio.stdin.as_raw_fd(),
            stdio.stdout.as_raw_fd(),
            stdio.stderr.as_raw_fd(),
        ],
        procs.iter().map(|f| f.as_raw_fd()).collect(),
    )?;

    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(os("create the status pipe")(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just returned these two fds; we own them.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    let flags = setup.clone_flags as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: clone without CLONE_VM behaves like fork: the child gets a copy of our
    // memory and runs child::run, which only makes syscalls on `setup` and never
    // returns. A null stack means "keep using the current one" (copy-on-write).
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid < 0 {
        let e = io::Error::last_os_error();
        let _ = cgroup::remove(id);
        return Err(os("clone with the config's namespaces (is this root?)")(e));
    }
    if pid == 0 {
        // SAFETY: we are the child of the clone above.
        unsafe { child::run(&setup, write_end.as_raw_fd()) }
    }
    drop(write_end);
    drop(procs);

    let mut buf = [0u8; child::REPORT_LEN];
    let mut got = 0;
    let deadline = std::time::Instant::now() + EXEC_DEADLINE;
    while got < buf.len() {
        // A child that neither execs nor reports (stuck in a mount, say) must
        // not hang the caller: sysd's whole supervision runs on this thread.
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd {
            fd: read_end.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready =
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(os("wait for the child's status")(e));
        }
        if ready == 0 {
            // SAFETY: signals and reaps our own child.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(pid as libc::pid_t, &mut status, 0);
            }
            let _ = cgroup::remove(id);
            return Err(ContainerError::Os {
                id: id.to_string(),
                what: "start within the deadline (killed: it neither ran process.args nor reported an error)",
                source: io::Error::from(io::ErrorKind::TimedOut),
            });
        }
        // SAFETY: reads into the unfilled tail of a local buffer.
        let n = unsafe {
            libc::read(
                read_end.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(os("read the child's status")(e));
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    if got == 0 {
        return Ok(Started { pid: pid as u32 });
    }

    // The child failed before exec: reap it here (the caller never saw its pid).
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    let _ = cgroup::remove(id);
    let (step, index, errno) = child::Failed::from_record(&buf);
    let label = step.map(|s| setup.label(s, index)).unwrap_or_default();
    Err(ContainerError::Setup {
        id: id.to_string(),
        step: step.map_or("unknown step", |s| s.describe().0),
        hint: step.map_or("", |s| s.describe().1),
        detail: if label.is_empty() {
            String::new()
        } else {
            format!(" ({label})")
        },
        source: io::Error::from_raw_os_error(errno),
    })
}

/// Remove the container's cgroups after its process died, killing any leftovers.
pub fn cleanup(id: &str) -> Result<(), ContainerError> {
    check_id(id)?;
    cgroup::remove(id)
}

/// The cgroup directories `start` put the container in (v2 first), for callers and
/// tests that read its counters.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    cgroup::candidate_dirs(id)
        .into_iter()
        .filter(|d| d.is_dir())
        .collect()
}
