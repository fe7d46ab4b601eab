//! The container's first process, between clone(2) and execve(2).
//!
//! The caller (sysd) may be multi-threaded, so after clone the child must not
//! allocate, lock or unwind: everything it needs — every path, flag, argv and envp — is
//! computed into a [`Plan`] by the parent beforehand, and the child only issues
//! syscalls. A failing step writes a fixed-size record (step, index, errno) to a
//! close-on-exec pipe and exits; a successful execve closes the pipe, which is how the
//! parent learns the program is running.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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

use crate::spec::{self, Spec};
use crate::ContainerError;

/// Steps the child can fail at; the parent turns them into messages.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub(crate) enum Step {
    Stdio = 1,
    JoinCgroup,
    UnshareCgroup,
    RootPropagation,
    BindRoot,
    MountDir,
    Mount,
    MountPropagation,
    Device,
    DevSymlink,
    PivotRoot,
    MaskedPath,
    ReadonlyPath,
    ReadonlyRoot,
    Hostname,
    Domainname,
    Sysctl,
    OomScoreAdj,
    Rlimit,
    CapBoundingDrop,
    KeepCaps,
    Groups,
    SetGid,
    SetUid,
    Capset,
    Ambient,
    NoNewPrivs,
    Cwd,
    Exec,
    Seccomp,
}

impl Step {
    /// (what the step does, how to fix a failure) for error messages.
    pub(crate) fn describe(self) -> (&'static str, &'static str) {
        use Step::*;
        match self {
            Stdio => ("set up stdin/stdout/stderr", "pass open file descriptors in Stdio3"),
            JoinCgroup => ("join the container's cgroup", "check /sys/fs/cgroup is writable (root)"),
            UnshareCgroup => ("create the cgroup namespace", "the kernel needs CONFIG_CGROUPS namespaces; or drop {\"type\": \"cgroup\"}"),
            RootPropagation => ("make / private in the new mount namespace", "check linux.rootfsPropagation"),
            BindRoot => ("bind-mount root.path onto itself", "check root.path exists and is a directory"),
            MountDir => ("create the mount point", "a read-only rootfs must contain every mount destination; add it to the image"),
            Mount => ("mount", "check the mount's type, source and options in config.json (and that the kernel has the filesystem)"),
            MountPropagation => ("set mount propagation", "check the mount's propagation options"),
            Device => ("create device node", "/dev must be a writable tmpfs mount, or the node must exist in the image"),
            DevSymlink => ("create /dev symlink", "/dev must be a writable tmpfs mount"),
            PivotRoot => ("pivot_root into root.path", "root.path must be a directory on a mount the host root is not stacked on"),
            MaskedPath => ("mask path (linux.maskedPaths)", "remove the path from linux.maskedPaths"),
            ReadonlyPath => ("make path read-only (linux.readonlyPaths)", "remove the path from linux.readonlyPaths"),
            ReadonlyRoot => ("remount the root read-only", "set root.readonly to false, or check the rootfs mount"),
            Hostname => ("set hostname", "use a hostname of at most 64 characters"),
            Domainname => ("set domainname", "use a domainname of at most 64 characters"),
            Sysctl => ("write sysctl", "only namespaced sysctls can be set; check the name under /proc/sys"),
            OomScoreAdj => ("write oom_score_adj", "use a value from -1000 to 1000"),
            Rlimit => ("set rlimit", "the soft limit must not exceed the hard limit"),
            CapBoundingDrop => ("drop capabilities from the bounding set", "run the caller as root with CAP_SETPCAP"),
            KeepCaps => ("keep capabilities across setuid", "run the caller as root"),
            Groups => ("set process.user.additionalGids", "run the caller as root"),
            SetGid => ("set process.user.gid", "run the caller as root"),
            SetUid => ("set process.user.uid", "run the caller as root"),
            Capset => ("set capabilities", "effective and inheritable must be subsets of permitted (and of bounding for inheritable)"),
            Ambient => ("raise ambient capabilities", "an ambient cap must also be permitted and inheritable"),
            NoNewPrivs => ("set no_new_privs", "unset process.noNewPrivileges"),
            Cwd => ("change to process.cwd", "create the directory in the rootfs, or fix process.cwd"),
            Exec => ("exec process.args[0]", "check the program exists in the rootfs (PATH from process.env) and is executable for process.user"),
            Seccomp => ("install the linux.seccomp filter", "the kernel needs CONFIG_SECCOMP_FILTER; without process.noNewPrivileges the caller needs CAP_SYS_ADMIN"),
        }
    }

    pub(crate) fn from_u32(v: u32) -> Option<Step> {
        use Step::*;
        const ALL: [Step; 30] = [
            Stdio,
            JoinCgroup,
            UnshareCgroup,
            RootPropagation,
            BindRoot,
            MountDir,
            Mount,
            MountPropagation,
            Device,
            DevSymlink,
            PivotRoot,
            MaskedPath,
            ReadonlyPath,
            ReadonlyRoot,
            Hostname,
            Domainname,
            Sysctl,
            OomScoreAdj,
            Rlimit,
            CapBoundingDrop,
            KeepCaps,
            Groups,
            SetGid,
            SetUid,
            Capset,
            Ambient,
            NoNewPrivs,
            Cwd,
            Exec,
            Seccomp,
        ];
        ALL.into_iter().find(|s| *s as u32 == v)
    }
}

pub(crate) struct MountPlan {
    /// Ancestors of `dest` inside the rootfs, outermost first, then `dest` itself.
    pub dirs: Vec<CString>,
    pub dest: CString,
    pub dest_is_file: bool,
    pub source: Option<CString>,
    pub fstype: Option<CString>,
    pub flags: libc::c_ulong,
    pub data: Option<CString>,
    pub bind: bool,
    pub propagation: Vec<libc::c_ulong>,
    /// What the error message shows: the spec's destination.
    pub label: String,
}

pub(crate) struct DevicePlan {
    pub path: CString,
    pub mode: libc::mode_t,
    pub dev: libc::dev_t,
    pub uid: u32,
    pub gid: u32,
    pub label: String,
}

pub(crate) struct Caps {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

/// Everything the child does, precomputed.
pub(crate) struct Plan {
    pub stdio: [RawFd; 3],
    pub cgroup_procs: Vec<RawFd>,
    pub clone_flags: libc::c_int,
    pub unshare_cgroup: bool,
    pub root_propagation: libc::c_ulong,
    pub rootfs: CString,
    pub mounts: Vec<MountPlan>,
    pub devices: Vec<DevicePlan>,
    pub dev_symlinks: Vec<(CString, CString)>,
    pub masked: Vec<(CString, String)>,
    pub readonly_paths: Vec<(CString, String)>,
    pub readonly_root: bool,
    pub hostname: Option<CString>,
    pub domainname: Option<CString>,
    pub sysctls: Vec<(CString, Vec<u8>, String)>,
    pub oom_score_adj: Option<Vec<u8>>,
    /// (resource, [soft, hard]) for prlimit64, which takes 64-bit limits on every
    /// arch (setrlimit's rlim_t is 32 bits on armv7).
    pub rlimits: Vec<(i32, [u64; 2], String)>,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
    pub caps: Option<Caps>,
    pub last_cap: u32,
    pub no_new_privs: bool,
    pub umask: libc::mode_t,
    pub cwd: CString,
    pub exec_candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// The compiled linux.seccomp filter.
    pub seccomp: Option<Vec<libc::sock_filter>>,
}

fn cstr(s: impl AsRef<OsStr>, what: &str) -> Result<CString, ContainerError> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| ContainerError::Field {
        path: PathBuf::from("config.json"),
        field: what.to_string(),
        reason: "contains a NUL byte".into(),
    })
}

/// `rootfs` + an absolute container path.
fn under(rootfs: &Path, container_path: &str) -> PathBuf {
    rootfs.join(container_path.trim_start_matches('/'))
}

/// `rootfs` itself is not included: it exists (we bind-mount it).
fn ancestors(rootfs: &Path, container_path: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = rootfs.to_path_buf();
    for c in container_path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
    {
        cur.push(c);
        out.push(cur.clone());
    }
    out
}

const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

impl Plan {
    pub(crate) fn new(
        bundle: &Path,
        spec: &Spec,
        stdio: [RawFd; 3],
        cgroup_procs: Vec<RawFd>,
    ) -> Result<Plan, ContainerError> {
        let field_err = |(field, reason): (String, String)| ContainerError::Field {
            path: bundle.join("config.json"),
            field,
            reason,
        };
        spec::validate(spec).map_err(field_err)?;
        let (clone_flags, unshare_cgroup) =
            spec::namespace_flags(&spec.linux.namespaces).map_err(field_err)?;
        let rootfs = if spec.root.path.is_absolute() {
            spec.root.path.clone()
        } else {
            bundle.join(&spec.root.path)
        };
        if !rootfs.is_dir() {
            return Err(ContainerError::Field {
                path: bundle.join("config.json"),
                field: "root.path".into(),
                reason: format!("{} is not a directory", rootfs.display()),
            });
        }

        let mut mounts = Vec::new();
        for (i, m) in spec.mounts.iter().enumerate() {
            let opts = spec::mount_options(&m.options)
                .map_err(|r| field_err((format!("mounts[{i}].options"), r)))?;
            let kind = m.kind.as_deref().unwrap_or("");
            let bind = opts.flags & libc::MS_BIND != 0 || kind == "bind";
            let source = m.source.as_ref().map(|s| {
                if bind && !s.starts_with('/') {
                    bundle.join(s)
                } else {
                    PathBuf::from(s)
                }
            });
            let dest_is_file = bind && source.as_ref().is_some_and(|s| s.exists() && !s.is_dir());
            // OCI "cgroup" means "the container's cgroups": on a v2 system that is cgroup2.
            let fstype = match kind {
                "" | "bind" => None,
                "cgroup" => Some("cgroup2"),
                other => Some(other),
            };
            let data = (!opts.data.is_empty()).then(|| opts.data.join(","));
            let label = format!("mounts[{i}] {}", m.destination);
            mounts.push(MountPlan {
                dirs: ancestors(&rootfs, &m.destination)
                    .iter()
                    .map(|p| cstr(p, &label))
                    .collect::<Result<_, _>>()?,
                dest: cstr(under(&rootfs, &m.destination), &label)?,
                dest_is_file,
                source: source.map(|s| cstr(s, &label)).transpose()?,
                fstype: fstype.map(|t| cstr(t, &label)).transpose()?,
                flags: opts.flags,
                data: data.map(|d| cstr(d, &label)).transpose()?,
                bind,
                propagation: opts.propagation,
                label,
            });
        }

        let mut devices = Vec::new();
        for (path, major, minor) in DEFAULT_DEVICES {
            devices.push(DevicePlan {
                path: cstr(under(&rootfs, path), path)?,
                mode: libc::S_IFCHR | 0o666,
                dev: libc::makedev(major as _, minor as _),
                uid: 0,
                gid: 0,
                label: path.to_string(),
            });
        }
        for d in &spec.linux.devices {
            let kind = match d.kind.as_str() {
                "b" => libc::S_IFBLK,
                "p" => libc::S_IFIFO,
                _ => libc::S_IFCHR,
            };
            devices.retain(|x| x.label != d.path);
            devices.push(DevicePlan {
                path: cstr(under(&rootfs, &d.path), &d.path)?,
                mode: kind | (d.file_mode.unwrap_or(0o666) & 0o7777) as libc::mode_t,
                dev: libc::makedev(d.major as _, d.minor as _),
                uid: d.uid.unwrap_or(0),
                gid: d.gid.unwrap_or(0),
                label: d.path.clone(),
            });
        }
        let mut dev_symlinks = Vec::new();
        for (target, link) in [
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
            ("pts/ptmx", "/dev/ptmx"),
        ] {
            dev_symlinks.push((cstr(target, link)?, cstr(under(&rootfs, link), link)?));
        }

        let list = |paths: &[String]| -> Result<Vec<(CString, String)>, ContainerError> {
            paths.iter().map(|p| Ok((cstr(p, p)?, p.clone()))).collect()
        };

        let p = &spec.process;
        let caps = match &p.capabilities {
            None => None,
            Some(c) => {
                let m = |names: &[String], set: &str| {
                    spec::cap_mask(names).map_err(|bad| {
                        field_err((
                            format!("process.capabilities.{set}"),
                            format!("unknown capability {bad:?}"),
                        ))
                    })
                };
                Some(Caps {
                    bounding: m(&c.bounding, "bounding")?,
                    effective: m(&c.effective, "effective")?,
                    permitted: m(&c.permitted, "permitted")?,
                    inheritable: m(&c.inheritable, "inheritable")?,
                    ambient: m(&c.ambient, "ambient")?,
                })
            }
        };
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);

        let mut rlimits = Vec::new();
        for r in &p.rlimits {
            let res = spec::rlimit_resource(&r.kind).ok_or_else(|| {
                field_err((
                    "process.rlimits".into(),
                    format!("unknown type {:?}", r.kind),
                ))
            })?;
            rlimits.push((res, [r.soft, r.hard], r.kind.clone()));
        }

        let program = &p.args[0];
        let exec_candidates = if program.contains('/') {
            vec![cstr(program, "process.args[0]")?]
        } else {
            let path = p
                .env
                .iter()
                .find_map(|e| e.strip_prefix("PATH="))
                .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
            path.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| cstr(format!("{d}/{program}"), "process.args[0]"))
                .collect::<Result<_, _>>()?
        };

        if p.args.len() > MAX_ARGS || p.env.len() > MAX_ARGS {
            return Err(field_err((
                "process.args / process.env".into(),
                format!("more than {MAX_ARGS} entries; use a wrapper script"),
            )));
        }

        Ok(Plan {
            stdio,
            cgroup_procs,
            clone_flags,
            unshare_cgroup,
            root_propagation: spec
                .linux
                .rootfs_propagation
                .as_deref()
                .and_then(spec::propagation_flag)
                .unwrap_or(libc::MS_PRIVATE | libc::MS_REC),
            rootfs: cstr(&rootfs, "root.path")?,
            mounts,
            devices,
            dev_symlinks,
            masked: list(&spec.linux.masked_paths)?,
            readonly_paths: list(&spec.linux.readonly_paths)?,
            readonly_root: spec.root.readonly,
            hostname: spec
                .hostname
                .as_ref()
                .map(|h| cstr(h, "hostname"))
                .transpose()?,
            domainname: spec
                .domainname
                .as_ref()
                .map(|h| cstr(h, "domainname"))
                .transpose()?,
            sysctls: spec
                .linux
                .sysctl
                .iter()
                .map(|(k, v)| {
                    Ok((
                        cstr(format!("/proc/sys/{}", k.replace('.', "/")), "linux.sysctl")?,
                        v.as_bytes().to_vec(),
                        k.clone(),
                    ))
                })
                .collect::<Result<_, ContainerError>>()?,
            oom_score_adj: p.oom_score_adj.map(|v| v.to_string().into_bytes()),
            rlimits,
            uid: p.user.uid,
            gid: p.user.gid,
            groups: p.user.additional_gids.clone(),
            caps,
            last_cap,
            no_new_privs: p.no_new_privileges,
            umask: p.user.umask.unwrap_or(0o022) as libc::mode_t,
            cwd: cstr(&p.cwd, "process.cwd")?,
            exec_candidates,
            argv: p
                .args
                .iter()
                .map(|a| cstr(a, "process.args"))
                .collect::<Result<_, _>>()?,
            envp: p
                .env
                .iter()
                .map(|e| cstr(e, "process.env"))
                .collect::<Result<_, _>>()?,
            seccomp: spec
                .linux
                .seccomp
                .as_ref()
                .map(crate::seccomp::compile)
                .transpose()
                .map_err(field_err)?,
        })
    }

    /// Human label for a failed step's index (which mount, which path...).
    pub(crate) fn label(&self, step: Step, index: u32) -> String {
        let i = index as usize;
        let get = |v: Option<&String>| v.cloned().unwrap_or_default();
        match step {
            Step::MountDir | Step::Mount | Step::MountPropagation => {
                get(self.mounts.get(i).map(|m| &m.label))
            }
            Step::Device => get(self.devices.get(i).map(|d| &d.label)),
            Step::MaskedPath => get(self.masked.get(i).map(|m| &m.1)),
            Step::ReadonlyPath => get(self.readonly_paths.get(i).map(|m| &m.1)),
            Step::Sysctl => get(self.sysctls.get(i).map(|s| &s.2)),
            Step::Rlimit => get(self.rlimits.get(i).map(|r| &r.2)),
            Step::Exec => String::from_utf8_lossy(self.argv[0].as_bytes()).into_owned(),
            Step::Cwd => String::from_utf8_lossy(self.cwd.as_bytes()).into_owned(),
            _ => String::new(),
        }
    }
}

/// argv and envp entries the child can pass (pointer arrays live on its stack).
pub(crate) const MAX_ARGS: usize = 256;

/// Size of the failure record: step, index, errno.
pub(crate) const REPORT_LEN: usize = 12;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Report a failed step and exit. Never returns.
///
/// # Safety
/// Only async-signal-safe calls: write(2) and _exit(2).
unsafe fn fail(fd: RawFd, step: Step, index: usize, err: i32) -> ! {
    let mut buf = [0u8; REPORT_LEN];
    buf[0..4].copy_from_slice(&(step as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    buf[8..12].copy_from_slice(&err.to_ne_bytes());
    libc::write(fd, buf.as_ptr().cast(), REPORT_LEN);
    libc::_exit(127)
}

macro_rules! check {
    ($fd:expr, $call:expr, $step:expr, $idx:expr) => {
        if $call < 0 {
            fail($fd, $step, $idx, errno());
        }
    };
}

/// Write all of `data` to `path` (opened O_WRONLY). Returns -1 with errno on failure.
unsafe fn write_file(path: &CStr, data: &[u8]) -> i32 {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return -1;
    }
    let n = libc::write(fd, data.as_ptr().cast(), data.len());
    // A successful close leaves errno as write set it.
    libc::close(fd);
    if n < 0 {
        return -1;
    }
    0
}

/// mkdir that accepts an existing directory.
unsafe fn mkdir_ok(path: &CString) -> i32 {
    if libc::mkdir(path.as_ptr(), 0o755) < 0 && errno() != libc::EEXIST {
        return -1;
    }
    0
}

fn is_dir(path: &CString) -> Option<bool> {
    // SAFETY: stat writes into a zeroed local struct; no allocation.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::stat(path.as_ptr(), &mut st) < 0 {
            return None;
        }
        Some(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
    }
}

/// Load the plan's seccomp filter, if any, into the calling thread.
///
/// # Safety
/// Child only: prctl on a filter the parent built; fails via `fail`.
unsafe fn install_seccomp(plan: &Plan, report: RawFd) {
    if let Some(filter) = &plan.seccomp {
        let prog = libc::sock_fprog {
            // compile() keeps programs within BPF_MAXINSNS (4096).
            len: filter.len() as libc::c_ushort,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        check!(
            report,
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong
            ),
            Step::Seccomp,
            0
        );
    }
}

/// The child after clone(2). Never returns.
///
/// # Safety
/// Must only run in the freshly cloned child; uses only syscalls on pre-built data.
pub(crate) unsafe fn run(plan: &Plan, report: RawFd) -> ! {
    let null = std::ptr::null::<libc::c_char>();
    let nul = std::ptr::null_mut::<libc::c_void>();

    // stdio: first move the three fds out of the way (they may be 0..2 in any order),
    // then onto 0, 1, 2 (dup2 clears close-on-exec on the targets).
    let mut high = [0; 3];
    for (i, fd) in plan.stdio.iter().enumerate() {
        high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
        check!(report, high[i], Step::Stdio, i);
    }
    for (i, fd) in high.iter().enumerate() {
        check!(report, libc::dup2(*fd, i as i32), Step::Stdio, i);
        libc::close(*fd);
    }

    // Signals: the caller may block or ignore some (Rust ignores SIGPIPE); both
    // survive execve, so reset them.
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }

    for (i, fd) in plan.cgroup_procs.iter().enumerate() {
        check!(
            report,
            libc::write(*fd, b"0".as_ptr().cast(), 1) as i32,
            Step::JoinCgroup,
            i
        );
    }
    if plan.unshare_cgroup {
        check!(
            report,
            libc::unshare(libc::CLONE_NEWCGROUP),
            Step::UnshareCgroup,
            0
        );
    }
    libc::umask(0);

    // Mounts, relative to the host view of the rootfs.
    check!(
        report,
        libc::mount(null, c"/".as_ptr(), null, plan.root_propagation, nul),
        Step::RootPropagation,
        0
    );
    check!(
        report,
        libc::mount(
            plan.rootfs.as_ptr(),
            plan.rootfs.as_ptr(),
            null,
            libc::MS_BIND | libc::MS_REC,
            nul
        ),
        Step::BindRoot,
        0
    );
    for (i, m) in plan.mounts.iter().enumerate() {
        let last = m.dirs.len().saturating_sub(1);
        for (j, d) in m.dirs.iter().enumerate() {
            if j == last && m.dest_is_file {
                let fd = libc::open(
                    d.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if fd < 0 && errno() != libc::EEXIST && errno() != libc::EROFS {
                    fail(report, Step::MountDir, i, errno());
                }
                if fd >= 0 {
                    libc::close(fd);
                }
            } else {
                check!(report, mkdir_ok(d), Step::MountDir, i);
            }
        }
        let src = m.source.as_ref().map_or(null, |s| s.as_ptr());
        let data = m
            .data
            .as_ref()
            .map_or(nul, |d| d.as_ptr() as *mut libc::c_void);
        if m.bind {
            check!(
                report,
                libc::mount(
                    src,
                    m.dest.as_ptr(),
                    null,
                    libc::MS_BIND | (m.flags & libc::MS_REC),
                    nul
                ),
                Step::Mount,
                i
            );
            let extra = m.flags & !(libc::MS_BIND | libc::MS_REC);
            if extra != 0 || m.data.is_some() {
                check!(
                    report,
                    libc::mount(
                        src,
                        m.dest.as_ptr(),
                        null,
                        libc::MS_REMOUNT | libc::MS_BIND | extra,
                        data
                    ),
                    Step::Mount,
                    i
                );
            }
        } else {
            let fstype = m.fstype.as_ref().map_or(null, |t| t.as_ptr());
            check!(
                report,
                libc::mount(src, m.dest.as_ptr(), fstype, m.flags, data),
                Step::Mount,
                i
            );
        }
        for p in &m.propagation {
            check!(
                report,
                libc::mount(null, m.dest.as_ptr(), null, *p, nul),
                Step::MountPropagation,
                i
            );
        }
    }
    for (i, d) in plan.devices.iter().enumerate() {
        if libc::mknod(d.path.as_ptr(), d.mode, d.dev) < 0 {
            let e = errno();
            // An existing node (from the image) is kept; a read-only /dev without the
            // node is an error.
            if e != libc::EEXIST {
                fail(report, Step::Device, i, e);
            }
        } else {
            check!(
                report,
                libc::chown(d.path.as_ptr(), d.uid, d.gid),
                Step::Device,
                i
            );
        }
    }
    for (i, (target, link)) in plan.dev_symlinks.iter().enumerate() {
        if libc::symlink(target.as_ptr(), link.as_ptr()) < 0 {
            let e = errno();
            if e != libc::EEXIST && e != libc::EROFS && e != libc::ENOENT {
                fail(report, Step::DevSymlink, i, e);
            }
        }
    }

    // pivot_root(".", ".") stacks the old root on the new one; detach it.
    let oldroot = libc::open(
        c"/".as_ptr(),
        libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
    );
    check!(report, oldroot, Step::PivotRoot, 0);
    check!(
        report,
        libc::chdir(plan.rootfs.as_ptr()),
        Step::PivotRoot,
        1
    );
    if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0 {
        check!(report, libc::fchdir(oldroot), Step::PivotRoot, 3);
        check!(
            report,
            libc::mount(
                null,
                c".".as_ptr(),
                null,
                libc::MS_SLAVE | libc::MS_REC,
                nul
            ),
            Step::PivotRoot,
            4
        );
        check!(
            report,
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
            Step::PivotRoot,
            5
        );
    } else if errno() == libc::EINVAL {
        // The host root is the initramfs (rootfs cannot be pivoted away): move the
        // new root over / and chroot, as crun and runc do there.
        check!(
            report,
            libc::mount(c".".as_ptr(), c"/".as_ptr(), null, libc::MS_MOVE, nul),
            Step::PivotRoot,
            7
        );
        check!(report, libc::chroot(c".".as_ptr()), Step::PivotRoot, 8);
    } else {
        fail(report, Step::PivotRoot, 2, errno());
    }
    libc::close(oldroot);
    check!(report, libc::chdir(c"/".as_ptr()), Step::PivotRoot, 6);

    // sysctls go in before /proc/sys is made read-only (readonlyPaths), as runc does.
    if let Some(h) = &plan.hostname {
        check!(
            report,
            libc::sethostname(h.as_ptr(), h.as_bytes().len()),
            Step::Hostname,
            0
        );
    }
    if let Some(h) = &plan.domainname {
        check!(
            report,
            libc::setdomainname(h.as_ptr(), h.as_bytes().len()),
            Step::Domainname,
            0
        );
    }
    for (i, (path, value, _)) in plan.sysctls.iter().enumerate() {
        check!(report, write_file(path, value), Step::Sysctl, i);
    }
    for (i, (path, _)) in plan.masked.iter().enumerate() {
        match is_dir(path) {
            None => continue,
            Some(true) => check!(
                report,
                libc::mount(
                    c"tmpfs".as_ptr(),
                    path.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_RDONLY,
                    nul
                ),
                Step::MaskedPath,
                i
            ),
            Some(false) => check!(
                report,
                libc::mount(
                    c"/dev/null".as_ptr(),
                    path.as_ptr(),
                    null,
                    libc::MS_BIND,
                    nul
                ),
                Step::MaskedPath,
                i
            ),
        }
    }
    for (i, (path, _)) in plan.readonly_paths.iter().enumerate() {
        if is_dir(path).is_none() {
            continue;
        }
        check!(
            report,
            libc::mount(
                path.as_ptr(),
                path.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                nul
            ),
            Step::ReadonlyPath,
            i
        );
        check!(
            report,
            libc::mount(
                path.as_ptr(),
                path.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC,
                nul
            ),
            Step::ReadonlyPath,
            i
        );
    }
    if plan.readonly_root {
        check!(
            report,
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                nul
            ),
            Step::ReadonlyRoot,
            0
        );
    }
    if let Some(v) = &plan.oom_score_adj {
        check!(
            report,
            write_file(c"/proc/self/oom_score_adj", v),
            Step::OomScoreAdj,
            0
        );
    }
    for (i, (res, lim, _)) in plan.rlimits.iter().enumerate() {
        check!(
            report,
            libc::syscall(
                libc::SYS_prlimit64,
                0 as libc::pid_t,
                *res as libc::c_int,
                lim.as_ptr(),
                std::ptr::null_mut::<u64>()
            ) as i32,
            Step::Rlimit,
            i
        );
    }

    // Without no_new_privs the kernel only takes a filter from a CAP_SYS_ADMIN
    // holder: install it while we still are one (runc does the same); the rest of
    // the setup then runs under it.
    if !plan.no_new_privs {
        install_seccomp(plan, report);
    }

    // Privileges: bounding set, then identity (keeping permitted caps across setuid),
    // then the exact capability sets, ambient last.
    if let Some(c) = &plan.caps {
        for cap in 0..=plan.last_cap.min(63) {
            if c.bounding & (1 << cap) == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0
                && errno() != libc::EINVAL
            {
                fail(report, Step::CapBoundingDrop, cap as usize, errno());
            }
        }
        check!(
            report,
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
            Step::KeepCaps,
            0
        );
    }
    check!(
        report,
        libc::syscall(SYS_SETGROUPS, plan.groups.len(), plan.groups.as_ptr()) as i32,
        Step::Groups,
        0
    );
    check!(
        report,
        libc::syscall(SYS_SETRESGID, plan.gid, plan.gid, plan.gid) as i32,
        Step::SetGid,
        0
    );
    check!(
        report,
        libc::syscall(SYS_SETRESUID, plan.uid, plan.uid, plan.uid) as i32,
        Step::SetUid,
        0
    );
    if let Some(c) = &plan.caps {
        check!(
            report,
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0),
            Step::KeepCaps,
            1
        );
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let word = |m: u64, i: u32| (m >> (32 * i)) as u32;
        let data = [0, 1].map(|i| Data {
            effective: word(c.effective, i),
            permitted: word(c.permitted, i),
            inheritable: word(c.inheritable, i),
        });
        check!(
            report,
            libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) as i32,
            Step::Capset,
            0
        );
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        for cap in 0..=plan.last_cap.min(63) {
            // The kernel only raises an ambient cap that is also permitted and
            // inheritable; like crun and runc, others are skipped (crun's own
            // `crun spec` asks for ambient caps with an empty inheritable set).
            if c.ambient & (1 << cap) != 0
                && libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                ) < 0
                && errno() != libc::EPERM
                && errno() != libc::EINVAL
            {
                fail(report, Step::Ambient, cap as usize, errno());
            }
        }
    }
    if plan.no_new_privs {
        check!(
            report,
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            Step::NoNewPrivs,
            0
        );
    }
    check!(report, libc::chdir(plan.cwd.as_ptr()), Step::Cwd, 0);
    libc::umask(plan.umask);
    if plan.no_new_privs {
        install_seccomp(plan, report);
    }

    // argv/envp pointer arrays live on the stack (no allocation after clone).
    let mut argv = [std::ptr::null::<libc::c_char>(); MAX_ARGS + 1];
    let mut envp = [std::ptr::null::<libc::c_char>(); MAX_ARGS + 1];
    for (slot, a) in argv.iter_mut().zip(plan.argv.iter().take(MAX_ARGS)) {
        *slot = a.as_ptr();
    }
    for (slot, e) in envp.iter_mut().zip(plan.envp.iter().take(MAX_ARGS)) {
        *slot = e.as_ptr();
    }
    let mut last = libc::ENOENT;
    for prog in &plan.exec_candidates {
        libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
        let mut e = errno();
        // ETXTBSY: another process still holds the program open for writing — often a
        // sibling forked by a threaded parent while it was copying the file, which keeps
        // the inherited descriptor only until its own exec. Retry for up to a second.
        let mut tries = 0;
        while e == libc::ETXTBSY && tries < 100 {
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000,
            };
            libc::nanosleep(&pause, std::ptr::null_mut());
            libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
            e = errno();
            tries += 1;
        }
        // Like execvp: a PATH entry that does not hold the program is skipped, but a
        // permission problem is remembered.
        if e != libc::ENOENT && e != libc::ENOTDIR {
            last = e;
        }
    }
    fail(report, Step::Exec, 0, last)
}
