//! The OCI configuration (`config.json` of a container directory): the subset of the
//! OCI runtime spec 1.0.x this runtime honours.
//!
//! Parsing is lenient about fields it does not know (serde ignores them), and strict
//! about fields it knows but cannot honour: a security setting that would be silently
//! dropped (seccomp argument conditions, user namespaces, joining namespaces by path) is an error naming the
//! field, never a quiet downgrade.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ContainerError;

/// Parsed `config.json`. Field names follow the OCI runtime spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciConfig {
    #[serde(default)]
    pub oci_version: String,
    pub process: Process,
    pub root: Root,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub domainname: Option<String>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub linux: Linux,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    #[serde(default)]
    pub terminal: bool,
    #[serde(default)]
    pub user: User,
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    pub cwd: String,
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    #[serde(default)]
    pub no_new_privileges: bool,
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub umask: Option<u32>,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Capabilities {
    #[serde(default)]
    pub bounding: Vec<String>,
    #[serde(default)]
    pub effective: Vec<String>,
    #[serde(default)]
    pub inheritable: Vec<String>,
    #[serde(default)]
    pub permitted: Vec<String>,
    #[serde(default)]
    pub ambient: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Root {
    pub path: PathBuf,
    #[serde(default)]
    pub readonly: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Mount {
    pub destination: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub masked_paths: Vec<String>,
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
    #[serde(default)]
    pub rootfs_propagation: Option<String>,
    /// Compiled to a BPF filter; see the crate docs for the subset honoured.
    #[serde(default)]
    pub seccomp: Option<Seccomp>,
    #[serde(default)]
    pub uid_mappings: Vec<serde_json::Value>,
}

/// `linux.seccomp`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seccomp {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub listener_path: Option<String>,
    #[serde(default)]
    pub syscalls: Vec<SeccompSyscall>,
}

/// One `linux.seccomp.syscalls[]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompSyscall {
    pub names: Vec<String>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    /// Argument conditions: refused (see the crate docs).
    #[serde(default)]
    pub args: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Namespace {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Resources {
    #[serde(default)]
    pub memory: Option<Memory>,
    #[serde(default)]
    pub pids: Option<Pids>,
    #[serde(default)]
    pub cpu: Option<Cpu>,
    /// cgroup v2 files written verbatim (`"io.weight": "200"`).
    #[serde(default)]
    pub unified: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Memory {
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Pids {
    pub limit: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Cpu {
    #[serde(default)]
    pub shares: Option<u64>,
    #[serde(default)]
    pub quota: Option<i64>,
    #[serde(default)]
    pub period: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub major: u64,
    #[serde(default)]
    pub minor: u64,
    #[serde(default)]
    pub file_mode: Option<u32>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

/// Read and check `DIR/config.json` of a container directory.
pub fn load(dir: &Path) -> Result<OciConfig, ContainerError> {
    let file = dir.join("config.json");
    let text = std::fs::read_to_string(&file).map_err(|source| ContainerError::Read {
        path: file.clone(),
        source,
    })?;
    parse(&text, &file)
}

/// Parse and check the text of a `config.json`; `file` only names it in errors.
pub fn parse(text: &str, file: &Path) -> Result<OciConfig, ContainerError> {
    let file = file.to_path_buf();
    let config: OciConfig = serde_json::from_str(text).map_err(|e| ContainerError::Parse {
        path: file.clone(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    validate(&config).map_err(|(field, reason)| ContainerError::Field {
        path: file,
        field,
        reason,
    })?;
    Ok(config)
}

/// Everything in the config that can be checked without touching the system.
/// Returns (field, reason-with-fix).
pub(crate) fn validate(config: &OciConfig) -> Result<(), (String, String)> {
    let p = &config.process;
    if p.args.is_empty() {
        return Err((
            "process.args".into(),
            "is empty; give the program to run".into(),
        ));
    }
    if !p.cwd.starts_with('/') {
        return Err((
            "process.cwd".into(),
            format!("{:?} is not absolute; use a path starting with /", p.cwd),
        ));
    }
    if p.terminal {
        return Err((
            "process.terminal".into(),
            "true is not supported (system containers log to pipes); set it to false".into(),
        ));
    }
    for e in &p.env {
        if !e.contains('=') {
            return Err(("process.env".into(), format!("{e:?} is not NAME=VALUE")));
        }
    }
    if let Some(c) = &p.capabilities {
        for (set, names) in [
            ("bounding", &c.bounding),
            ("effective", &c.effective),
            ("inheritable", &c.inheritable),
            ("permitted", &c.permitted),
            ("ambient", &c.ambient),
        ] {
            cap_mask(names).map_err(|bad| {
                (
                    format!("process.capabilities.{set}"),
                    format!("unknown capability {bad:?}; names look like CAP_NET_BIND_SERVICE"),
                )
            })?;
        }
    }
    for r in &p.rlimits {
        if rlimit_resource(&r.kind).is_none() {
            return Err((
                "process.rlimits".into(),
                format!("unknown type {:?}; names look like RLIMIT_NOFILE", r.kind),
            ));
        }
    }
    namespace_flags(&config.linux.namespaces)?;
    if config.hostname.is_some() && !config.linux.namespaces.iter().any(|n| n.kind == "uts") {
        return Err((
            "hostname".into(),
            "is set but linux.namespaces has no uts namespace; add {\"type\": \"uts\"}".into(),
        ));
    }
    if let Some(s) = &config.linux.seccomp {
        crate::seccomp::compile(s)?;
    }
    if !config.linux.uid_mappings.is_empty() {
        return Err((
            "linux.uidMappings".into(),
            "user namespaces are not supported; remove the mappings".into(),
        ));
    }
    if let Some(p) = &config.linux.rootfs_propagation {
        propagation_flag(p).ok_or_else(|| {
            (
                "linux.rootfsPropagation".into(),
                format!("unknown value {p:?} (private, rprivate, slave, rslave, shared, rshared)"),
            )
        })?;
    }
    for (i, m) in config.mounts.iter().enumerate() {
        check_container_path(&m.destination)
            .map_err(|r| (format!("mounts[{i}].destination"), r))?;
        mount_options(&m.options).map_err(|r| (format!("mounts[{i}].options"), r))?;
    }
    for (i, d) in config.linux.devices.iter().enumerate() {
        check_container_path(&d.path).map_err(|r| (format!("linux.devices[{i}].path"), r))?;
        if !matches!(d.kind.as_str(), "c" | "u" | "b" | "p") {
            return Err((
                format!("linux.devices[{i}].type"),
                format!("{:?} is not one of c, u, b, p", d.kind),
            ));
        }
    }
    for (name, list) in [
        ("linux.maskedPaths", &config.linux.masked_paths),
        ("linux.readonlyPaths", &config.linux.readonly_paths),
    ] {
        for (i, path) in list.iter().enumerate() {
            check_container_path(path).map_err(|r| (format!("{name}[{i}]"), r))?;
        }
    }
    for key in config.linux.sysctl.keys() {
        if key.contains('/') || key.contains("..") {
            return Err((
                "linux.sysctl".into(),
                format!("{key:?} is not a sysctl name like net.ipv4.ip_forward"),
            ));
        }
    }
    if let Some(r) = &config.linux.resources {
        for key in r.unified.keys() {
            if key.contains('/') || !key.contains('.') {
                return Err((
                    "linux.resources.unified".into(),
                    format!("{key:?} is not a cgroup v2 file name like memory.high"),
                ));
            }
        }
    }
    Ok(())
}

/// Paths inside the container: absolute, no `..` (a mount must not climb out of the
/// rootfs through the config itself).
fn check_container_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not absolute; start it with /"));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!("{path:?} contains ..; give the plain path"));
    }
    Ok(())
}

/// clone(2) flags for the namespaces the config asks for. The cgroup namespace is
/// returned separately: it is unshared after the process joined its cgroup, so the
/// container sees its own cgroup as `/`.
pub(crate) fn namespace_flags(ns: &[Namespace]) -> Result<(libc::c_int, bool), (String, String)> {
    let mut flags = 0;
    let mut cgroup = false;
    for (i, n) in ns.iter().enumerate() {
        if n.path.is_some() {
            return Err((
                format!("linux.namespaces[{i}].path"),
                "joining an existing namespace is not supported; drop the path (new namespace) or the entry (share the host's)".into(),
            ));
        }
        flags |= match n.kind.as_str() {
            "pid" => libc::CLONE_NEWPID,
            "network" => libc::CLONE_NEWNET,
            "mount" => libc::CLONE_NEWNS,
            "ipc" => libc::CLONE_NEWIPC,
            "uts" => libc::CLONE_NEWUTS,
            "cgroup" => {
                cgroup = true;
                0
            }
            "user" | "time" => {
                return Err((
                    format!("linux.namespaces[{i}].type"),
                    format!(
                        "{:?} namespaces are not supported; remove the entry",
                        n.kind
                    ),
                ))
            }
            other => {
                return Err((
                    format!("linux.namespaces[{i}].type"),
                    format!("unknown namespace {other:?} (pid, network, mount, ipc, uts, cgroup)"),
                ))
            }
        };
    }
    if flags & libc::CLONE_NEWNS == 0 {
        return Err((
            "linux.namespaces".into(),
            "has no mount namespace; add {\"type\": \"mount\"} (pivot_root needs one)".into(),
        ));
    }
    Ok((flags, cgroup))
}

const CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Bit mask of capability names (`CAP_` prefix optional, case-insensitive).
/// Err carries the first unknown name.
pub(crate) fn cap_mask(names: &[String]) -> Result<u64, String> {
    let mut mask = 0u64;
    for name in names {
        let upper = name.to_ascii_uppercase();
        let short = upper.strip_prefix("CAP_").unwrap_or(&upper);
        let bit = CAPS
            .iter()
            .position(|c| *c == short)
            .ok_or_else(|| name.clone())?;
        mask |= 1 << bit;
    }
    Ok(mask)
}

pub(crate) fn rlimit_resource(kind: &str) -> Option<i32> {
    Some(match kind {
        "RLIMIT_CPU" => libc::RLIMIT_CPU as i32,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE as i32,
        "RLIMIT_DATA" => libc::RLIMIT_DATA as i32,
        "RLIMIT_STACK" => libc::RLIMIT_STACK as i32,
        "RLIMIT_CORE" => libc::RLIMIT_CORE as i32,
        "RLIMIT_RSS" => libc::RLIMIT_RSS as i32,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC as i32,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE as i32,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK as i32,
        "RLIMIT_AS" => libc::RLIMIT_AS as i32,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS as i32,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING as i32,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE as i32,
        "RLIMIT_NICE" => libc::RLIMIT_NICE as i32,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO as i32,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME as i32,
        _ => return None,
    })
}

pub(crate) fn propagation_flag(name: &str) -> Option<libc::c_ulong> {
    Some(match name {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// mount(2) flags, propagation changes and the data string for a mount's options.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MountOptions {
    pub flags: libc::c_ulong,
    pub propagation: Vec<libc::c_ulong>,
    pub data: Vec<String>,
}

pub(crate) fn mount_options(options: &[String]) -> Result<MountOptions, String> {
    let mut out = MountOptions::default();
    for o in options {
        if let Some(p) = propagation_flag(o) {
            out.propagation.push(p);
            continue;
        }
        let (set, clear) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "" => return Err("empty option".into()),
            other => {
                out.data.push(other.to_string());
                continue;
            }
        };
        out.flags = (out.flags | set) & !clear;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> OciConfig {
        serde_json::from_str(json).unwrap()
    }

    const MIN: &str = r#"{"process":{"args":["/bin/true"],"cwd":"/"},"root":{"path":"rootfs"},
        "linux":{"namespaces":[{"type":"mount"},{"type":"pid"}]}}"#;

    #[test]
    fn minimal_spec_is_valid_and_unknown_fields_are_ignored() {
        let mut v: serde_json::Value = serde_json::from_str(MIN).unwrap();
        v["annotations"] = serde_json::json!({"x": "y"});
        v["linux"]["intelRdt"] = serde_json::json!({});
        let s: OciConfig = serde_json::from_value(v).unwrap();
        validate(&s).unwrap();
        assert_eq!(s.process.args, ["/bin/true"]);
    }

    #[test]
    fn errors_name_the_field() {
        let mut s = config(MIN);
        s.process.capabilities = Some(Capabilities {
            bounding: vec!["CAP_KILL".into(), "CAP_FLY".into()],
            ..Default::default()
        });
        let (field, reason) = validate(&s).unwrap_err();
        assert_eq!(field, "process.capabilities.bounding");
        assert!(reason.contains("CAP_FLY"), "{reason}");

        let mut s = config(MIN);
        s.linux.namespaces.retain(|n| n.kind != "mount");
        assert_eq!(validate(&s).unwrap_err().0, "linux.namespaces");

        let mut s = config(MIN);
        s.hostname = Some("x".into());
        assert_eq!(validate(&s).unwrap_err().0, "hostname");

        let mut s = config(MIN);
        s.mounts.push(Mount {
            destination: "/a/../../etc".into(),
            kind: None,
            source: None,
            options: vec![],
        });
        assert_eq!(validate(&s).unwrap_err().0, "mounts[0].destination");

        let mut s = config(MIN);
        s.linux.seccomp = Some(
            serde_json::from_value(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}]}))
            .unwrap(),
        );
        assert_eq!(
            validate(&s).unwrap_err().0,
            "linux.seccomp.syscalls[0].args"
        );
    }

    #[test]
    fn capability_names_map_to_kernel_bits() {
        assert_eq!(cap_mask(&["CAP_CHOWN".into()]).unwrap(), 1);
        assert_eq!(cap_mask(&["net_bind_service".into()]).unwrap(), 1 << 10);
        assert_eq!(cap_mask(&["CAP_SYS_ADMIN".into()]).unwrap(), 1 << 21);
        assert_eq!(
            cap_mask(&["CAP_CHECKPOINT_RESTORE".into()]).unwrap(),
            1 << 40
        );
    }

    #[test]
    fn mount_options_split_into_flags_propagation_and_data() {
        let o = mount_options(&[
            "nosuid".into(),
            "strictatime".into(),
            "mode=755".into(),
            "size=65536k".into(),
            "rprivate".into(),
            "ro".into(),
            "rw".into(),
        ])
        .unwrap();
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(o.data, ["mode=755", "size=65536k"]);
        assert_eq!(o.propagation, [libc::MS_PRIVATE | libc::MS_REC]);
    }
}
