//! Service definitions: each system container's `SYSTEM_DIR/NAME/manifest.toml`
//! (the file keeps its on-device name; its neighbour `config.json`, the OCI
//! config, is the container runtime's to parse).
//!
//! This module reads and validates service definitions and nothing else. A broken definition
//! becomes an error string naming the file, the field and the fix; it never stops the
//! other definitions from loading.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Health check when a service definition has no `[health]` table: up for this long.
pub const DEFAULT_RUNNING_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    #[serde(default = "default_policy")]
    policy: Policy,
    #[serde(default = "default_initial")]
    backoff_initial_ms: u64,
    #[serde(default = "default_max")]
    backoff_max_ms: u64,
}

fn default_policy() -> Policy {
    Policy::Always
}
fn default_initial() -> u64 {
    500
}
fn default_max() -> u64 {
    30_000
}

impl Default for RawRestart {
    fn default() -> Self {
        RawRestart {
            policy: default_policy(),
            backoff_initial_ms: default_initial(),
            backoff_max_ms: default_max(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    tcp: Option<String>,
    running_ms: Option<u64>,
    /// Path of a unix socket that answers HTTP (Docker's API socket).
    unix_http: Option<String>,
    /// Request path for `unix_http`; `/` when absent.
    path: Option<String>,
    /// Path of a unix socket that accepts connections (containerd's gRPC socket).
    unix: Option<String>,
    /// Path of a file the service creates once it is ready.
    ready_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceDef {
    #[serde(default)]
    description: String,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    restart: RawRestart,
    health: Option<RawHealth>,
}

/// How sysd decides a running service is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// A TCP connect to this address succeeds.
    Tcp(SocketAddr),
    /// The process stayed up this long.
    RunningMs(u64),
    /// `GET path` over the unix socket at `socket` (a host path) answers HTTP 200.
    UnixHttp { socket: PathBuf, path: String },
    /// A connect to the unix socket at this host path succeeds (a gRPC API such
    /// as containerd's, which answers no HTTP/1).
    Unix(PathBuf),
    /// The service created this file (a host path): it says itself that it is
    /// ready, the way `sd_notify(READY=1)` or s6's notification fd do. sysd
    /// removes the file before every start, so only this run's file counts.
    ReadyFile(PathBuf),
}

/// One validated definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Def {
    pub name: String,
    pub description: String,
    pub after: Vec<String>,
    pub required: bool,
    pub policy: Policy,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub health: Health,
    /// The service definition has a `[health]` table: dependents wait for healthy, not just running.
    pub health_explicit: bool,
}

/// A service name is a directory name that also lands in file names and cgroup paths.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A manifest.toml that is not understood: the file, and what is wrong with which key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct ServiceDefError {
    pub file: PathBuf,
    pub message: String,
}

fn bad(file: &Path) -> impl Fn(String) -> ServiceDefError + '_ {
    move |message| ServiceDefError {
        file: file.to_path_buf(),
        message,
    }
}

/// Parse and validate one service definition's text. `file` is only used in messages.
pub fn parse(name: &str, text: &str, file: &Path) -> Result<Def, ServiceDefError> {
    let bad = bad(file);
    if !valid_name(name) {
        return Err(bad(format!(
            "service name `{name}` (the directory name) may only hold letters, digits, `-`, `_` and `.`; rename the directory"
        )));
    }
    let raw: RawServiceDef =
        toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().replace('\n', " | ")))?;
    for dep in &raw.after {
        if dep == name {
            return Err(bad(format!(
                "after: `{name}` names itself; remove it from the list"
            )));
        }
    }
    let r = &raw.restart;
    if r.backoff_initial_ms == 0 {
        return Err(bad("restart.backoff_initial_ms: must be at least 1 (a zero backoff turns a crashing service into a busy loop)".to_string()));
    }
    if r.backoff_max_ms < r.backoff_initial_ms {
        return Err(bad(format!(
            "restart.backoff_max_ms ({}) is below restart.backoff_initial_ms ({}); raise the maximum",
            r.backoff_max_ms, r.backoff_initial_ms
        )));
    }
    let (health, explicit) = match &raw.health {
        None => (Health::RunningMs(DEFAULT_RUNNING_MS), false),
        Some(h) => (parse_health(h, file)?, true),
    };
    Ok(Def {
        name: name.to_string(),
        description: raw.description,
        after: raw.after,
        required: raw.required,
        policy: r.policy,
        backoff_initial_ms: r.backoff_initial_ms,
        backoff_max_ms: r.backoff_max_ms,
        health,
        health_explicit: explicit,
    })
}

fn parse_health(h: &RawHealth, file: &Path) -> Result<Health, ServiceDefError> {
    let bad = bad(file);
    let given = [
        h.tcp.is_some(),
        h.running_ms.is_some(),
        h.unix_http.is_some(),
        h.unix.is_some(),
        h.ready_file.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given > 1 {
        return Err(bad(
            "health: give one of `tcp`, `unix_http`, `unix`, `ready_file` or `running_ms`, not several"
                .to_string(),
        ));
    }
    if h.path.is_some() && h.unix_http.is_none() {
        return Err(bad(
            "health.path: only used with `unix_http = \"/run/NAME.sock\"`; add it or remove `path`"
                .to_string(),
        ));
    }
    if let Some(addr) = &h.tcp {
        let a: SocketAddr = addr.parse().map_err(|_| {
            bad(format!("health.tcp: `{addr}` is not an IP:port address (e.g. \"127.0.0.1:22\"); host names are not resolved"))
        })?;
        return Ok(Health::Tcp(a));
    }
    if let Some(ms) = h.running_ms {
        return Ok(Health::RunningMs(ms));
    }
    if let Some(socket) = &h.unix_http {
        if !socket.starts_with('/') {
            return Err(bad(format!(
                "health.unix_http: `{socket}` is not an absolute path (e.g. \"/run/ballast/docker.sock\"); it is a path on the host"
            )));
        }
        let path = h.path.clone().unwrap_or_else(|| "/".to_owned());
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(format!(
                "health.path: `{path}` is not an HTTP request path (e.g. \"/_ping\")"
            )));
        }
        return Ok(Health::UnixHttp {
            socket: PathBuf::from(socket),
            path,
        });
    }
    if let Some(socket) = &h.unix {
        if !socket.starts_with('/') {
            return Err(bad(format!(
                "health.unix: `{socket}` is not an absolute path (e.g. \"/run/ballast/containerd.sock\"); it is a path on the host"
            )));
        }
        return Ok(Health::Unix(PathBuf::from(socket)));
    }
    if let Some(file) = &h.ready_file {
        if !file.starts_with("/run/") || file.split('/').any(|c| c == "..") {
            return Err(bad(format!(
                "health.ready_file: `{file}` is not a path under /run (e.g. \"/run/ballast/network.ready\"); it is a path on the host, and must not outlive the boot"
            )));
        }
        return Ok(Health::ReadyFile(PathBuf::from(file)));
    }
    Err(bad("[health] is empty; set `tcp = \"IP:PORT\"`, `unix_http = \"/PATH.sock\"`, `unix = \"/PATH.sock\"`, `ready_file = \"/run/PATH\"` or `running_ms = N`, or remove the table".to_string()))
}

/// A definition directory found in the system directory.
#[derive(Debug, Clone)]
pub struct Found {
    pub def: Def,
    /// The container directory. Still named `bundle` because first-boot code
    /// (`firstboot/`, being changed on another branch) reads it; rename it to
    /// `dir` when that code moves over.
    pub dir: PathBuf,
}

/// The image's definitions plus those the applied config added (`applied`,
/// on the state partition; absent is fine). The image's win: a config cannot
/// replace or remove a system container the OS ships, only add its own.
pub fn load_image_and_applied(image: &Path, applied: &Path) -> (Vec<Found>, Vec<String>) {
    let (mut found, mut errors) = load_all(image);
    if applied.is_dir() {
        let (more, more_errors) = load_all(applied);
        errors.extend(more_errors);
        for f in more {
            if found.iter().any(|g| g.def.name == f.def.name) {
                errors.push(format!(
                    "{}: the image already has a system container named {:?}; the applied config cannot replace it (give yours another name)",
                    f.dir.display(),
                    f.def.name
                ));
            } else {
                found.push(f);
            }
        }
    }
    (found, errors)
}

/// Read every `DIR/*/manifest.toml`, sorted by name. Broken ones go to the error list.
pub fn load_all(dir: &Path) -> (Vec<Found>, Vec<String>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            errors.push(format!(
                "{}: no system container directory; the image defines no system containers",
                dir.display()
            ));
            return (found, errors);
        }
        Err(e) => {
            errors.push(format!("cannot read {}: {e}", dir.display()));
            return (found, errors);
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = dir.join("manifest.toml");
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!(
                    "cannot read {}: {e}; every system container directory needs a manifest.toml",
                    file.display()
                ));
                continue;
            }
        };
        match parse(&name, &text, &file) {
            Ok(def) => found.push(Found { def, dir }),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (found, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Def, String> {
        parse("svc", text, Path::new("/sys/svc/manifest.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn contract_example_parses() {
        let d = p(r#"
description = "DHCP client"
after = ["network"]
required = true
[restart]
policy = "always"
backoff_initial_ms = 500
backoff_max_ms = 30000
[health]
tcp = "127.0.0.1:22"
"#)
        .unwrap();
        assert_eq!(d.after, vec!["network".to_string()]);
        assert!(d.required && d.health_explicit);
        assert_eq!(d.health, Health::Tcp("127.0.0.1:22".parse().unwrap()));
        assert_eq!(d.policy, Policy::Always);
    }

    #[test]
    fn unix_http_health_is_the_engine_socket_and_path() {
        let d = p("required = true\n[health]\nunix_http = \"/run/ballast/docker.sock\"\npath = \"/_ping\"").unwrap();
        assert!(d.health_explicit);
        assert_eq!(
            d.health,
            Health::UnixHttp {
                socket: "/run/ballast/docker.sock".into(),
                path: "/_ping".into()
            }
        );
        let d = p("[health]\nunix_http = \"/run/x.sock\"").unwrap();
        assert!(matches!(d.health, Health::UnixHttp { ref path, .. } if path == "/"));
    }

    #[test]
    fn unix_health_is_a_socket_path_alone() {
        let d = p("required = true\n[health]\nunix = \"/run/ballast/containerd.sock\"").unwrap();
        assert!(d.health_explicit);
        assert_eq!(
            d.health,
            Health::Unix("/run/ballast/containerd.sock".into())
        );
        let e = p("[health]\nunix = \"run/c.sock\"").unwrap_err();
        assert!(e.contains("health.unix:") && e.contains("absolute"), "{e}");
        let e = p("[health]\nunix = \"/run/c.sock\"\npath = \"/\"").unwrap_err();
        assert!(e.contains("health.path"), "{e}");
        let e = p("[health]\nunix = \"/run/c.sock\"\nunix_http = \"/run/c.sock\"").unwrap_err();
        assert!(e.contains("not several"), "{e}");
    }

    #[test]
    fn ready_file_health_is_a_path_under_run() {
        let d = p("[health]\nready_file = \"/run/ballast/network.ready\"").unwrap();
        assert!(d.health_explicit);
        assert_eq!(
            d.health,
            Health::ReadyFile("/run/ballast/network.ready".into())
        );
        for bad in ["/state/ready", "run/x", "/run/../state/x"] {
            let e = p(&format!("[health]\nready_file = \"{bad}\"")).unwrap_err();
            assert!(
                e.contains("health.ready_file:") && e.contains("under /run"),
                "{e}"
            );
        }
        let e = p("[health]\nready_file = \"/run/x\"\nrunning_ms = 5").unwrap_err();
        assert!(e.contains("not several"), "{e}");
    }

    #[test]
    fn defaults_when_tables_are_absent() {
        let d = p("").unwrap();
        assert_eq!(d.health, Health::RunningMs(1000));
        assert!(!d.health_explicit && !d.required);
        assert_eq!((d.backoff_initial_ms, d.backoff_max_ms), (500, 30_000));
        assert_eq!(d.policy, Policy::Always);
        let d = p("[restart]\npolicy = \"on-failure\"").unwrap();
        assert_eq!(d.policy, Policy::OnFailure);
    }

    #[test]
    fn errors_name_file_and_field() {
        let e = p("[restart]\npolicy = \"sometimes\"").unwrap_err();
        assert!(
            e.contains("manifest.toml") && e.contains("sometimes"),
            "{e}"
        );
        let e = p("[health]\ntcp = \"localhost:22\"").unwrap_err();
        assert!(e.contains("health.tcp"), "{e}");
        let e = p("[health]\ntcp = \"127.0.0.1:1\"\nrunning_ms = 3").unwrap_err();
        assert!(e.contains("not several"), "{e}");
        let e = p("[health]\nunix_http = \"run/x.sock\"").unwrap_err();
        assert!(e.contains("health.unix_http"), "{e}");
        let e = p("[health]\nunix_http = \"/run/x.sock\"\npath = \"_ping\"").unwrap_err();
        assert!(e.contains("health.path"), "{e}");
        let e = p("[health]\npath = \"/_ping\"\nrunning_ms = 3").unwrap_err();
        assert!(e.contains("health.path"), "{e}");
        let e = p("requried = true").unwrap_err();
        assert!(e.contains("requried"), "{e}");
        let e = p("[restart]\nbackoff_initial_ms = 0").unwrap_err();
        assert!(e.contains("backoff_initial_ms"), "{e}");
        let e = p("after = [\"svc\"]").unwrap_err();
        assert!(e.contains("itself"), "{e}");
        let e = parse("bad name", "", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("rename"), "{e}");
    }

    #[test]
    fn applied_config_adds_containers_but_cannot_replace_the_images() {
        let image = tempfile::tempdir().unwrap();
        let applied = tempfile::tempdir().unwrap();
        for (dir, n) in [
            (image.path(), "ssh"),
            (applied.path(), "ssh"),
            (applied.path(), "mine"),
        ] {
            std::fs::create_dir(dir.join(n)).unwrap();
            std::fs::write(dir.join(n).join("manifest.toml"), "required = false").unwrap();
        }
        let (found, errors) = load_image_and_applied(image.path(), applied.path());
        let names: Vec<&str> = found.iter().map(|f| f.def.name.as_str()).collect();
        assert_eq!(names, ["ssh", "mine"]);
        assert!(found[0].dir.starts_with(image.path()));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("cannot replace"), "{errors:?}");
        // No applied directory: just the image's.
        let (found, errors) = load_image_and_applied(image.path(), &applied.path().join("absent"));
        assert_eq!(found.len(), 1);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn load_all_skips_broken_definitions() {
        let dir = tempfile::tempdir().unwrap();
        for (n, t) in [("good", "required = true"), ("broken", "after = 3")] {
            std::fs::create_dir(dir.path().join(n)).unwrap();
            std::fs::write(dir.path().join(n).join("manifest.toml"), t).unwrap();
        }
        std::fs::create_dir(dir.path().join("nomanifest")).unwrap();
        let (found, errors) = load_all(dir.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].def.name, "good");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("broken/manifest.toml")));
        assert!(errors
            .iter()
            .any(|e| e.contains("nomanifest/manifest.toml")));
    }
}
