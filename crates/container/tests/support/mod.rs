//! Test container directories: a static busybox rootfs and a config.json from `crun spec`, edited.
//! Shared by the integration tests and the bench (`#[path]`-included).
//!
//! Needs root, `crun` and a static busybox (Debian: `apt-get install crun
//! busybox-static`).

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

const APPLETS: &[&str] = &[
    "sh", "true", "cat", "echo", "grep", "hostname", "id", "pwd", "sleep", "touch", "ls", "wc",
    "cut",
];

/// Where a static busybox is, or None (the tests then fail with a setup hint).
fn busybox() -> Option<PathBuf> {
    ["/usr/bin/busybox", "/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            Command::new("file")
                .arg(p)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("statically linked"))
                .unwrap_or(false)
        })
}

pub struct ContainerDir {
    pub dir: tempfile::TempDir,
}

impl ContainerDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A container directory running `args`, with `edit` applied to crun's default config.json after
/// our baseline edits (no terminal, cwd /work, FOO=bar in env, hostname h10).
pub fn container_dir(args: &[&str], edit: impl FnOnce(&mut Value)) -> ContainerDir {
    let dir = tempfile::Builder::new()
        .prefix("ballast-container-")
        .tempdir()
        .expect("temp dir");
    let rootfs = dir.path().join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "work"] {
        fs::create_dir_all(rootfs.join(d)).expect("rootfs dirs");
    }
    let bb = busybox().expect("a static busybox is needed: apt-get install busybox-static");
    fs::copy(&bb, rootfs.join("bin/busybox")).expect("copy busybox");
    for a in APPLETS {
        symlink("busybox", rootfs.join("bin").join(a)).expect("applet link");
    }
    let st = Command::new("crun")
        .arg("spec")
        .current_dir(dir.path())
        .status()
        .expect("crun is needed: apt-get install crun");
    assert!(st.success(), "crun spec failed");
    let file = dir.path().join("config.json");
    let mut v: Value = serde_json::from_str(&fs::read_to_string(&file).expect("config.json"))
        .expect("crun spec JSON");
    v["process"]["terminal"] = json!(false);
    v["process"]["args"] = json!(args);
    v["process"]["cwd"] = json!("/work");
    v["process"]["env"] = json!(["PATH=/bin", "FOO=bar"]);
    v["hostname"] = json!("h10");
    edit(&mut v);
    fs::write(&file, serde_json::to_string_pretty(&v).expect("json")).expect("write config");
    ContainerDir { dir }
}

/// Run the container directory with ballast-container; returns (stdout, exit status).
pub fn run_ours(id: &str, b: &ContainerDir) -> (String, i32) {
    let config = ballast_container::load(b.path()).expect("load");
    let (reader, writer) = pipe();
    let mut reader = fs::File::from(reader);
    let started = ballast_container::start(
        id,
        b.path(),
        &config,
        ballast_container::Stdio3 {
            stdin: std::io::stdin().as_fd(),
            stdout: writer.as_fd(),
            stderr: std::io::stderr().as_fd(),
        },
    )
    .expect("start");
    drop(writer);
    let mut out = String::new();
    reader.read_to_string(&mut out).expect("read stdout");
    let status = wait(started.pid);
    ballast_container::cleanup(id).expect("cleanup");
    (out, status)
}

/// A close-on-exec pipe (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array; we take ownership of both fds.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

/// waitpid; returns the exit code (or 128+signal).
pub fn wait(pid: u32) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    assert_eq!(r, pid as i32, "waitpid");
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// A hybrid cgroup host whose v2 tree holds a controller (crun 1.8 refuses those).
pub fn crun_needs_wrapper() -> bool {
    fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .is_ok_and(|c| !c.trim().is_empty())
}

/// Run the container directory with `crun run`; returns (stdout, exit status).
pub fn run_crun(id: &str, b: &ContainerDir) -> (String, i32) {
    let state = b.path().join("crun-state");
    // crun 1.8 refuses a hybrid host whose v2 tree holds a controller ("cgroups in
    // hybrid mode not supported"); development hosts often are one (hugetlb on v2).
    // Hide that tree from crun in a private mount namespace so it uses v1 there. On a
    // pure v2 host (Ballast) crun runs as is.
    let mut cmd = if crun_needs_wrapper() {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs hide-v2 /sys/fs/cgroup/unified && exec crun \"$@\"")
            .arg("crun");
        c
    } else {
        Command::new("crun")
    };
    let out = cmd
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(b.path())
        .arg(id)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("crun run");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}
