//! The container's setup, computed in the parent before clone(2): every path, flag,
//! argv and envp entry, the mount list, the capability sets and the seccomp program,
//! as C strings and plain numbers the child can hand to the kernel as they are.
//!
//! It owns the translation of a validated `config.json` into syscall arguments. It
//! must never make a syscall that changes anything (it only reads
//! `/proc/sys/kernel/cap_last_cap` and stats the rootfs and bind sources): the child
//! (`child/`) does the work, and runs without allocating, so whatever it needs has to
//! be here already.

use std::ffi::{CString, OsStr};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::child::Step;
use crate::oci_config::{self, OciConfig};
use crate::ContainerError;

pub(crate) struct MountSetup {
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
    /// What the error message shows: the config.s destination.
    pub label: String,
}

pub(crate) struct DeviceSetup {
    pub path: CString,
    pub mode: libc::mode_t,
    pub dev: libc::dev_t,
    pub uid: u32,
    pub gid: u32,
    pub label: String,
}

/// One half of the kernel's capability sets (`struct __user_cap_data_struct`):
/// capset(2) with version 3 takes two, bits 0-31 then 32-63.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CapData {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

/// `process.capabilities`, as the child applies them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Caps {
    /// Capabilities to drop from the bounding set: every one the kernel knows
    /// (up to `cap_last_cap`) that `bounding` does not name.
    pub bounding_drops: Vec<u32>,
    /// effective, permitted and inheritable, in capset(2)'s layout.
    pub sets: [CapData; 2],
    /// Capabilities to raise in the ambient set, in order.
    pub ambient_raises: Vec<u32>,
}

impl Caps {
    /// The five sets as bit masks (bit N = capability N) and the highest
    /// capability the running kernel knows.
    pub(crate) fn new(
        bounding: u64,
        effective: u64,
        permitted: u64,
        inheritable: u64,
        ambient: u64,
        last_cap: u32,
    ) -> Caps {
        let known = 0..=last_cap.min(63);
        let word = |m: u64, i: u32| (m >> (32 * i)) as u32;
        Caps {
            bounding_drops: known
                .clone()
                .filter(|cap| bounding & (1 << cap) == 0)
                .collect(),
            sets: [0, 1].map(|i| CapData {
                effective: word(effective, i),
                permitted: word(permitted, i),
                inheritable: word(inheritable, i),
            }),
            ambient_raises: known.filter(|cap| ambient & (1 << cap) != 0).collect(),
        }
    }
}

/// Everything the child does, precomputed.
pub(crate) struct ChildSetup {
    pub stdio: [RawFd; 3],
    pub cgroup_procs: Vec<RawFd>,
    pub clone_flags: libc::c_int,
    pub unshare_cgroup: bool,
    pub root_propagation: libc::c_ulong,
    pub rootfs: CString,
    pub mounts: Vec<MountSetup>,
    pub devices: Vec<DeviceSetup>,
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

/// The highest capability number the running kernel knows (40 when it does not say).
fn kernel_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

impl ChildSetup {
    /// The setup for `config` on the running kernel.
    pub(crate) fn new(
        dir: &Path,
        config: &OciConfig,
        stdio: [RawFd; 3],
        cgroup_procs: Vec<RawFd>,
    ) -> Result<ChildSetup, ContainerError> {
        ChildSetup::for_kernel(dir, config, stdio, cgroup_procs, kernel_last_cap())
    }

    /// The setup for a kernel whose highest capability is `last_cap`.
    fn for_kernel(
        dir: &Path,
        config: &OciConfig,
        stdio: [RawFd; 3],
        cgroup_procs: Vec<RawFd>,
        last_cap: u32,
    ) -> Result<ChildSetup, ContainerError> {
        let field_err = |(field, reason): (String, String)| ContainerError::Field {
            path: dir.join("config.json"),
            field,
            reason,
        };
        oci_config::validate(config).map_err(field_err)?;
        let (clone_flags, unshare_cgroup) =
            oci_config::namespace_flags(&config.linux.namespaces).map_err(field_err)?;
        let rootfs = if config.root.path.is_absolute() {
            config.root.path.clone()
        } else {
            dir.join(&config.root.path)
        };
        if !rootfs.is_dir() {
            return Err(ContainerError::Field {
                path: dir.join("config.json"),
                field: "root.path".into(),
                reason: format!("{} is not a directory", rootfs.display()),
            });
        }

        let mut mounts = Vec::new();
        for (i, m) in config.mounts.iter().enumerate() {
            let opts = oci_config::mount_options(&m.options)
                .map_err(|r| field_err((format!("mounts[{i}].options"), r)))?;
            let kind = m.kind.as_deref().unwrap_or("");
            let bind = opts.flags & libc::MS_BIND != 0 || kind == "bind";
            let source = m.source.as_ref().map(|s| {
                if bind && !s.starts_with('/') {
                    dir.join(s)
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
            mounts.push(MountSetup {
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
            devices.push(DeviceSetup {
                path: cstr(under(&rootfs, path), path)?,
                mode: libc::S_IFCHR | 0o666,
                dev: libc::makedev(major as _, minor as _),
                uid: 0,
                gid: 0,
                label: path.to_string(),
            });
        }
        for d in &config.linux.devices {
            let kind = match d.kind.as_str() {
                "b" => libc::S_IFBLK,
                "p" => libc::S_IFIFO,
                _ => libc::S_IFCHR,
            };
            devices.retain(|x| x.label != d.path);
            devices.push(DeviceSetup {
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

        let p = &config.process;
        let caps = match &p.capabilities {
            None => None,
            Some(c) => {
                let m = |names: &[String], set: &str| {
                    oci_config::cap_mask(names).map_err(|bad| {
                        field_err((
                            format!("process.capabilities.{set}"),
                            format!("unknown capability {bad:?}"),
                        ))
                    })
                };
                Some(Caps::new(
                    m(&c.bounding, "bounding")?,
                    m(&c.effective, "effective")?,
                    m(&c.permitted, "permitted")?,
                    m(&c.inheritable, "inheritable")?,
                    m(&c.ambient, "ambient")?,
                    last_cap,
                ))
            }
        };

        let mut rlimits = Vec::new();
        for r in &p.rlimits {
            let res = oci_config::rlimit_resource(&r.kind).ok_or_else(|| {
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

        Ok(ChildSetup {
            stdio,
            cgroup_procs,
            clone_flags,
            unshare_cgroup,
            root_propagation: config
                .linux
                .rootfs_propagation
                .as_deref()
                .and_then(oci_config::propagation_flag)
                .unwrap_or(libc::MS_PRIVATE | libc::MS_REC),
            rootfs: cstr(&rootfs, "root.path")?,
            mounts,
            devices,
            dev_symlinks,
            masked: list(&config.linux.masked_paths)?,
            readonly_paths: list(&config.linux.readonly_paths)?,
            readonly_root: config.root.readonly,
            hostname: config
                .hostname
                .as_ref()
                .map(|h| cstr(h, "hostname"))
                .transpose()?,
            domainname: config
                .domainname
                .as_ref()
                .map(|h| cstr(h, "domainname"))
                .transpose()?,
            sysctls: config
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
            seccomp: config
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A container directory with an empty rootfs, the empty `files` beside it, and
    /// `config` as its config.json (parsed, not written: the setup reads the parsed config).
    fn setup_with(
        config: serde_json::Value,
        files: &[&str],
    ) -> (tempfile::TempDir, Result<ChildSetup, ContainerError>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        for f in files {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let config: OciConfig = serde_json::from_value(config).unwrap();
        let setup = ChildSetup::for_kernel(dir.path(), &config, [0, 1, 2], vec![], 40);
        (dir, setup)
    }

    fn setup_for(
        config: serde_json::Value,
    ) -> (tempfile::TempDir, Result<ChildSetup, ContainerError>) {
        setup_with(config, &[])
    }

    fn base() -> serde_json::Value {
        json!({
            "process": {"args": ["sh", "-c", "true"], "cwd": "/work",
                        "env": ["PATH=/usr/bin:/bin", "FOO=bar"]},
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "h1",
            "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "uts"}]}
        })
    }

    fn text(c: &CString) -> String {
        c.to_str().unwrap().to_owned()
    }

    #[test]
    fn paths_are_under_the_rootfs_and_mount_points_are_made_outermost_first() {
        let mut v = base();
        v["mounts"] = json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "hosts",
             "options": ["rbind", "ro", "rprivate"]},
        ]);
        let (dir, setup) = setup_with(v, &["hosts"]);
        let setup = setup.unwrap();
        let root = dir.path().join("rootfs");
        let r = |p: &str| root.join(p).to_str().unwrap().to_owned();

        assert_eq!(text(&setup.rootfs), root.to_str().unwrap());
        let proc = &setup.mounts[0];
        assert_eq!(text(&proc.dest), r("proc"));
        assert_eq!(proc.fstype.as_ref().map(text).as_deref(), Some("proc"));
        assert!(!proc.bind);

        // OCI "cgroup" is cgroup2 on a v2 host; every ancestor is created in order.
        let cg = &setup.mounts[1];
        assert_eq!(cg.fstype.as_ref().map(text).as_deref(), Some("cgroup2"));
        let dirs: Vec<String> = cg.dirs.iter().map(text).collect();
        assert_eq!(dirs, [r("sys"), r("sys/fs"), r("sys/fs/cgroup")]);
        assert_eq!(cg.flags & libc::MS_RDONLY, libc::MS_RDONLY);
        assert_eq!(cg.label, "mounts[1] /sys/fs/cgroup");

        // A relative bind source is in the container directory; the target is a file only if the
        // source is one, and only then is it created with open(O_CREAT).
        let hosts = &setup.mounts[2];
        assert!(hosts.bind);
        assert!(hosts.dest_is_file);
        assert_eq!(hosts.fstype, None);
        let source = dir.path().join("hosts");
        assert_eq!(
            hosts.source.as_ref().map(text),
            source.to_str().map(str::to_owned)
        );
        assert_eq!(hosts.propagation, [libc::MS_PRIVATE | libc::MS_REC]);
        assert_eq!(setup.label(Step::Mount, 2), "mounts[2] /etc/hosts");
        assert_eq!(
            setup.label(Step::Mount, 9),
            "",
            "an index out of range has no label"
        );
    }

    #[test]
    fn a_bind_of_a_file_created_after_planning_is_planned_as_a_directory() {
        // dest_is_file is decided in the parent from what exists then.
        let mut v = base();
        v["mounts"] = json!([{"destination": "/etc/x", "type": "bind", "source": "x"}]);
        let (_dir, setup) = setup_for(v);
        assert!(!setup.unwrap().mounts[0].dest_is_file);
    }

    #[test]
    fn the_default_devices_come_first_and_a_spec_device_replaces_one() {
        let mut v = base();
        v["linux"]["devices"] = json!([
            {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600,
             "uid": 5, "gid": 6},
            {"path": "/dev/loop0", "type": "b", "major": 7, "minor": 0},
        ]);
        let (_dir, setup) = setup_for(v);
        let setup = setup.unwrap();
        let labels: Vec<&str> = setup.devices.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty",
                "/dev/null",
                "/dev/loop0"
            ]
        );
        let null = &setup.devices[5];
        assert_eq!(null.mode, libc::S_IFCHR | 0o600);
        assert_eq!((null.uid, null.gid), (5, 6));
        assert_eq!(null.dev, libc::makedev(1, 3));
        let lo = &setup.devices[6];
        assert_eq!(lo.mode, libc::S_IFBLK | 0o666);
        assert_eq!(setup.label(Step::Device, 6), "/dev/loop0");
    }

    #[test]
    fn a_bare_program_name_is_looked_up_on_the_specs_path() {
        let (_dir, setup) = setup_for(base());
        let setup = setup.unwrap();
        let candidates: Vec<String> = setup.exec_candidates.iter().map(text).collect();
        assert_eq!(candidates, ["/usr/bin/sh", "/bin/sh"]);
        assert_eq!(
            setup.argv.iter().map(text).collect::<Vec<_>>(),
            ["sh", "-c", "true"]
        );
        assert_eq!(setup.envp.len(), 2);
        assert_eq!(setup.label(Step::Exec, 0), "sh");
        assert_eq!(setup.label(Step::Cwd, 0), "/work");

        let mut v = base();
        v["process"]["args"] = json!(["/opt/app", "x"]);
        v["process"]["env"] = json!([]);
        let (_dir, setup) = setup_for(v);
        assert_eq!(
            setup
                .unwrap()
                .exec_candidates
                .iter()
                .map(text)
                .collect::<Vec<_>>(),
            ["/opt/app"]
        );

        // No PATH in the env: the usual default, as execvp.
        let mut v = base();
        v["process"]["env"] = json!(["FOO=bar"]);
        let (_dir, setup) = setup_for(v);
        assert_eq!(setup.unwrap().exec_candidates.len(), 6);
    }

    #[test]
    fn too_many_arguments_are_refused_before_clone() {
        let mut v = base();
        v["process"]["args"] = json!(vec!["x"; MAX_ARGS + 1]);
        let (_dir, setup) = setup_for(v);
        let msg = setup.err().expect("refused").to_string();
        assert!(msg.contains("process.args / process.env"), "{msg}");
        assert!(msg.contains("wrapper script"), "{msg}");
    }

    #[test]
    fn a_missing_rootfs_is_refused_with_the_field() {
        let mut v = base();
        v["root"]["path"] = json!("nope");
        let (_dir, setup) = setup_for(v);
        let msg = setup.err().expect("refused").to_string();
        assert!(
            msg.contains("root.path") && msg.contains("is not a directory"),
            "{msg}"
        );
    }

    #[test]
    fn capability_sets_become_drops_kernel_words_and_raises() {
        let mut v = base();
        v["process"]["capabilities"] = json!({
            "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"],
            "effective": ["CAP_KILL", "CAP_BPF"],
            "permitted": ["CAP_KILL", "CAP_BPF"],
            "inheritable": [],
            "ambient": ["CAP_KILL", "CAP_CHECKPOINT_RESTORE"],
        });
        let (_dir, setup) = setup_for(v);
        let caps = setup.unwrap().caps.expect("caps");
        // Kernel with cap_last_cap 40: 0..=40 except the three kept.
        assert_eq!(caps.bounding_drops.len(), 41 - 3);
        for kept in [5, 10, 29] {
            assert!(!caps.bounding_drops.contains(&kept), "{kept}");
        }
        // CAP_BPF is 39: the second 32-bit word.
        assert_eq!(caps.sets[0].effective, 1 << 5);
        assert_eq!(caps.sets[1].effective, 1 << (39 - 32));
        assert_eq!(caps.sets[1].permitted, 1 << (39 - 32));
        assert_eq!(caps.sets[0].inheritable, 0);
        // CAP_CHECKPOINT_RESTORE (40) is within this kernel's range.
        assert_eq!(caps.ambient_raises, [5, 40]);
    }

    #[test]
    fn capabilities_the_kernel_does_not_know_are_neither_dropped_nor_raised() {
        let caps = Caps::new(0, 0, 0, 0, 1 << 40, 37);
        assert_eq!(caps.bounding_drops, (0..=37).collect::<Vec<u32>>());
        assert!(caps.ambient_raises.is_empty());
    }

    #[test]
    fn limits_sysctls_and_identity_are_kernel_ready() {
        let mut v = base();
        v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}]);
        v["process"]["oomScoreAdj"] = json!(-500);
        v["process"]["user"] =
            json!({"uid": 1000, "gid": 100, "additionalGids": [990], "umask": 0o077});
        v["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "network"}));
        let (_dir, setup) = setup_for(v);
        let setup = setup.unwrap();
        assert_eq!(
            setup.rlimits,
            [(
                libc::RLIMIT_NOFILE as i32,
                [1024, 4096],
                "RLIMIT_NOFILE".to_owned()
            )]
        );
        assert_eq!(setup.label(Step::Rlimit, 0), "RLIMIT_NOFILE");
        assert_eq!(setup.oom_score_adj.as_deref(), Some(&b"-500"[..]));
        assert_eq!(text(&setup.sysctls[0].0), "/proc/sys/net/ipv4/ip_forward");
        assert_eq!(setup.sysctls[0].1, b"1");
        assert_eq!(setup.label(Step::Sysctl, 0), "net.ipv4.ip_forward");
        assert_eq!(
            (setup.uid, setup.gid, setup.groups.as_slice()),
            (1000, 100, &[990][..])
        );
        assert_eq!(setup.umask, 0o077);
        assert!(setup.readonly_root);
        assert_eq!(setup.hostname.as_ref().map(text).as_deref(), Some("h1"));
        assert_eq!(setup.root_propagation, libc::MS_PRIVATE | libc::MS_REC);
        assert_ne!(setup.clone_flags & libc::CLONE_NEWNET, 0);
        assert_ne!(setup.clone_flags & libc::CLONE_NEWPID, 0);
    }

    #[test]
    fn a_seccomp_section_is_compiled_before_clone() {
        let (_dir, setup) = setup_for(base());
        assert!(setup.unwrap().seccomp.is_none());
        let mut v = base();
        v["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]});
        let (_dir, setup) = setup_for(v);
        let filter = setup.unwrap().seccomp.expect("a program");
        assert!(filter.len() > 3 && filter.len() <= 4096, "{}", filter.len());
    }
}
