//! cgroup placement and limits: `<cgroup2>/ballast/<id>`.
//!
//! Ballast boots with the unified (v2) hierarchy, where every limit lands in one
//! directory. Development hosts are often hybrid (v1 controllers, an empty v2 tree at
//! `/sys/fs/cgroup/unified`); there a limit whose controller is only on v1 goes to
//! `/sys/fs/cgroup/<controller>/ballast/<id>` instead, so the same container directory can be tested
//! anywhere. A limit no hierarchy can enforce is an error, never skipped.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::oci_config::Resources;
use crate::ContainerError;

const CGROUP_FS: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// The v2 hierarchy's mount point, if the host has one.
fn v2_root() -> Option<PathBuf> {
    let base = Path::new(CGROUP_FS);
    if base.join("cgroup.controllers").exists() {
        Some(base.to_path_buf())
    } else if base.join("unified/cgroup.controllers").exists() {
        Some(base.join("unified"))
    } else {
        None
    }
}

fn v1_root(controller: &str) -> Option<PathBuf> {
    let dir = Path::new(CGROUP_FS).join(controller);
    // A v1 hierarchy has cgroup.procs but no cgroup.controllers.
    (dir.join("cgroup.procs").exists() && !dir.join("cgroup.controllers").exists()).then_some(dir)
}

/// Every directory this id may own, v2 first.
pub(crate) fn candidate_dirs(id: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(root) = v2_root() {
        dirs.push(root.join("ballast").join(id));
    }
    for c in V1_CONTROLLERS {
        if let Some(root) = v1_root(c) {
            dirs.push(root.join("ballast").join(id));
        }
    }
    dirs
}

fn write(path: &Path, value: &str) -> Result<(), ContainerError> {
    fs::write(path, value).map_err(|source| ContainerError::Cgroup {
        path: path.to_path_buf(),
        action: format!("write {value:?}"),
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), ContainerError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(ContainerError::Cgroup {
            path: path.to_path_buf(),
            action: "create directory".into(),
            source,
        }),
    }
}

/// One limit: the controller, its v2 file and value, its v1 file and value.
struct Limit {
    controller: &'static str,
    v2: (&'static str, String),
    v1: Option<(&'static str, String)>,
    field: &'static str,
}

fn limits(r: &Resources) -> Vec<Limit> {
    let mut out = Vec::new();
    if let Some(limit) = r.memory.as_ref().and_then(|m| m.limit) {
        let v = if limit < 0 {
            "max".to_string()
        } else {
            limit.to_string()
        };
        let v1 = if limit < 0 {
            "-1".to_string()
        } else {
            limit.to_string()
        };
        out.push(Limit {
            controller: "memory",
            v2: ("memory.max", v),
            v1: Some(("memory.limit_in_bytes", v1)),
            field: "linux.resources.memory.limit",
        });
    }
    if let Some(p) = &r.pids {
        let v = if p.limit <= 0 {
            "max".to_string()
        } else {
            p.limit.to_string()
        };
        out.push(Limit {
            controller: "pids",
            v2: ("pids.max", v.clone()),
            v1: Some(("pids.max", v)),
            field: "linux.resources.pids.limit",
        });
    }
    if let Some(cpu) = &r.cpu {
        if let Some(shares) = cpu.shares.filter(|s| *s > 0) {
            // The conversion crun and runc use, so a container gets the same weight.
            let s = shares.clamp(2, 262_144);
            let weight = 1 + ((s - 2) * 9999) / 262_142;
            out.push(Limit {
                controller: "cpu",
                v2: ("cpu.weight", weight.to_string()),
                v1: Some(("cpu.shares", s.to_string())),
                field: "linux.resources.cpu.shares",
            });
        }
        if cpu.quota.is_some() || cpu.period.is_some() {
            let period = cpu.period.unwrap_or(100_000);
            let quota = match cpu.quota {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            out.push(Limit {
                controller: "cpu",
                v2: ("cpu.max", format!("{quota} {period}")),
                v1: None,
                field: "linux.resources.cpu.quota",
            });
        }
    }
    out
}

/// The cgroup directories a container was placed in.
#[derive(Debug)]
pub(crate) struct Cgroup {
    pub dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// Create `ballast/<id>` and write the limits. A leftover directory from an earlier
    /// run of the same id is emptied and removed first.
    pub fn create(id: &str, resources: Option<&Resources>) -> Result<Cgroup, ContainerError> {
        remove(id)?;
        let empty = Resources::default();
        let r = resources.unwrap_or(&empty);
        let mut dirs: Vec<PathBuf> = Vec::new();
        let v2 = v2_root();
        let v2_available: Vec<String> = v2
            .as_ref()
            .and_then(|root| fs::read_to_string(root.join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let wanted = limits(r);
        if let Some(root) = &v2 {
            let parent = root.join("ballast");
            mkdir(&parent)?;
            let enable: Vec<String> = wanted
                .iter()
                .map(|l| l.controller)
                .filter(|c| v2_available.iter().any(|a| a == c))
                .map(|c| format!("+{c}"))
                .collect();
            for e in &enable {
                write(&root.join("cgroup.subtree_control"), e)?;
                write(&parent.join("cgroup.subtree_control"), e)?;
            }
            let dir = parent.join(id);
            mkdir(&dir)?;
            dirs.push(dir);
        }
        for l in &wanted {
            if let (Some(root), true) = (&v2, v2_available.iter().any(|a| a == l.controller)) {
                write(&root.join("ballast").join(id).join(l.v2.0), &l.v2.1)?;
                continue;
            }
            let (Some(v1root), Some((file, value))) = (v1_root(l.controller), &l.v1) else {
                return Err(ContainerError::NoController {
                    field: l.field,
                    controller: l.controller,
                });
            };
            let parent = v1root.join("ballast");
            mkdir(&parent)?;
            let dir = parent.join(id);
            mkdir(&dir)?;
            write(&dir.join(file), value)?;
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        if !r.unified.is_empty() {
            let Some(dir) = v2.as_ref().map(|root| root.join("ballast").join(id)) else {
                return Err(ContainerError::NoController {
                    field: "linux.resources.unified",
                    controller: "cgroup2",
                });
            };
            for (file, value) in &r.unified {
                write(&dir.join(file), value)?;
            }
        }
        Ok(Cgroup { dirs })
    }

    /// Open every `cgroup.procs` so the child can write itself ("0") into each before
    /// it does anything else.
    pub fn procs_files(&self) -> Result<Vec<File>, ContainerError> {
        self.dirs
            .iter()
            .map(|d| {
                let path = d.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|source| ContainerError::Cgroup {
                        path,
                        action: "open".into(),
                        source,
                    })
            })
            .collect()
    }
}

fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Kill whatever is left in the container's cgroups and remove them.
pub fn remove(id: &str) -> Result<(), ContainerError> {
    for dir in candidate_dirs(id) {
        if !dir.exists() {
            continue;
        }
        let kill = dir.join("cgroup.kill");
        if kill.exists() {
            write(&kill, "1")?;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = procs(&dir);
            if left.is_empty() {
                break;
            }
            for pid in &left {
                // SAFETY: kill(2) has no memory effects; a pid that already exited
                // gives ESRCH, which is what we want.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            if Instant::now() > deadline {
                return Err(ContainerError::CgroupBusy {
                    path: dir.clone(),
                    pids: left,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // rmdir can race with the last exit being accounted: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(source) => {
                    return Err(ContainerError::Cgroup {
                        path: dir.clone(),
                        action: "remove directory".into(),
                        source,
                    })
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci_config::{Cpu, Memory, Pids};

    #[test]
    fn limits_convert_like_crun() {
        let r = Resources {
            memory: Some(Memory {
                limit: Some(64 << 20),
            }),
            pids: Some(Pids { limit: 0 }),
            cpu: Some(Cpu {
                shares: Some(1024),
                quota: Some(50_000),
                period: None,
            }),
            ..Default::default()
        };
        let l = limits(&r);
        let v2: Vec<(&str, &str)> = l.iter().map(|l| (l.v2.0, l.v2.1.as_str())).collect();
        assert_eq!(
            v2,
            [
                ("memory.max", "67108864"),
                ("pids.max", "max"),
                ("cpu.weight", "39"),
                ("cpu.max", "50000 100000"),
            ]
        );
    }
}
