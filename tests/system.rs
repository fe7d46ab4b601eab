//! Story: an operator boots the image, waits for `ballast-ready`, logs in
//! over SSH as `ballast` with a key, looks at `osctl status`, sees a killed
//! service come back, and reboots with `osctl reboot`. The slot that reached
//! ready is marked good, and the reboot leaves no filesystem to repair.
//! The image is the minimal one (`engine = "none"`): it has no engine, and
//! `ballast run`'s VM gets a state partition of several GiB from its overlay.

mod common;

use common::vm::{free_port, keyed_build, Machine, Ssh};

use std::process::Command;
use std::time::{Duration, Instant};

fn service<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no service {name} in {status}"))
}

fn is_up(service: &serde_json::Value) -> bool {
    matches!(service["state"].as_str(), Some("running" | "healthy"))
}

/// "grown from X MiB to Y MiB" on the console -> Y.
fn state_grown_to(console: &[String]) -> u64 {
    let line = console
        .iter()
        .find(|l| l.contains("state: ext4 on") && l.contains("grown from"))
        .unwrap_or_else(|| panic!("no state grow line; console:\n{}", console.join("\n")));
    let to = line.rsplit(" to ").next().unwrap_or_default();
    to.trim_end_matches(" MiB")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("cannot read the size in {line:?}"))
}

fn story(board: &str) {
    let work = common::workdir(&format!("system-{board}"));
    let built = common::Build::new(board)
        .image("minimal")
        .version("0.1.0")
        .ssh_key()
        .shared();
    let (key, out, version) = (built.ssh_key(), built.out.clone(), built.version());
    let disk = built.vm_disk(&work, "machine");

    let port = free_port();
    let mut vm = Machine::boot_disk(board, &out, &disk, port, work.join("console-1.log"));
    let ready = vm.wait_for("ballast-ready", Duration::from_secs(420));
    assert_eq!(
        ready.trim(),
        format!("ballast-ready version={version} slot=a")
    );
    // `ballast run` booted an overlay of 8 GiB, not the image as built:
    // state filled all the room the image leaves.
    let image_mib = std::fs::metadata(built.disk()).expect("disk").len() >> 20;
    let grown = state_grown_to(&vm.console);
    assert!(
        grown >= 8 * 1024 - image_mib,
        "state grew to {grown} MiB only (image {image_mib} MiB, VM disk 8 GiB)"
    );

    // sysd read ahead what the builder listed (the containers' programs and
    // their libraries), every file of it.
    let read_ahead = match vm.console.iter().find(|l| l.contains("sysd: read-ahead:")) {
        Some(line) => line.clone(),
        None => vm.wait_for("sysd: read-ahead:", Duration::from_secs(120)),
    };
    assert!(
        read_ahead.contains(" files, ")
            && !read_ahead.contains("read-ahead: 0 files")
            && !read_ahead.contains("unread"),
        "{read_ahead}"
    );

    let ssh = Ssh { key, port };
    let status = ssh.status();
    assert_eq!(status["version"], version, "{status}");
    assert_eq!(status["slot"], "a", "{status}");
    for name in ["network", "time", "ssh"] {
        assert!(is_up(service(&status, name)), "{name} not up: {status}");
    }
    // The minimal image has no user container engine.
    assert!(!status.to_string().contains("\"docker\""), "{status}");
    let which = ssh.ok("command -v docker dockerd || echo none");
    assert_eq!(which.trim(), "none");
    // The slot that reached ready is good now.
    let slot_a = status["slots"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["slot"] == "a"))
        .unwrap_or_else(|| panic!("no slot a in {status}"));
    assert_eq!(slot_a["health"]["state"], "good", "{status}");

    // Each service's output is kept: the network container logged its lease.
    let logs = ssh.ok("osctl logs network -n 50");
    assert!(logs.contains("network: DHCP on"), "{logs}");

    // No root login, no passwords: the SSH server says so itself.
    let root = Command::new("ssh")
        .arg("-i")
        .arg(&ssh.key)
        .args(["-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "root@127.0.0.1",
            "true",
        ])
        .output()
        .expect("ssh as root");
    assert!(!root.status.success(), "root logged in");
    // The admin environment has its own seccomp filter: the login shell runs
    // under it (mode 2), also as root.
    for who in ["", "sudo "] {
        let filtered = ssh.ok(&format!("{who}grep '^Seccomp:' /proc/self/status"));
        assert_eq!(
            filtered.split_whitespace().last(),
            Some("2"),
            "{who}{filtered}"
        );
    }

    // Kill the time service's process: sysd brings it back.
    let time = service(&status, "time");
    let pid = time["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid: {time}"));
    // Its bundle asks for a seccomp filter, and it is on (mode 2).
    let seccomp = ssh.ok(&format!("grep '^Seccomp:' /proc/{pid}/status"));
    assert!(seccomp.split_whitespace().last() == Some("2"), "{seccomp}");
    let restarts = time["restarts"].as_u64().unwrap_or(0);
    ssh.ok(&format!("sudo kill -9 {pid}"));
    let start = Instant::now();
    loop {
        let status = ssh.status();
        let time = service(&status, "time");
        if time["restarts"].as_u64().unwrap_or(0) > restarts && is_up(time) {
            assert_ne!(time["pid"].as_u64(), Some(pid), "{time}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "time did not come back: {status}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // A clean reboot: QEMU exits (-no-reboot) once the machine restarts.
    let _ = ssh.run("osctl reboot");
    let status = vm.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "QEMU exited with {status}");
    let console = vm.console.join("\n");
    assert!(console.contains("reboot: Restarting system"), "{console}");
    drop(vm);

    // The next boot finds nothing to repair on state, and comes up again.
    let mut vm = Machine::boot_disk(board, &out, &disk, port, work.join("console-2.log"));
    vm.wait_for("ballast-ready", Duration::from_secs(420));
    let console = vm.console.join("\n");
    assert!(
        !console.contains("recovery complete") && !console.contains("orphan"),
        "state needed repair after osctl reboot:\n{console}"
    );
    assert!(
        console.contains("boot 2 on this state partition"),
        "{console}"
    );
}

#[test]
fn qemu_arm64_boots_to_ready_serves_ssh_and_supervises_services() {
    let _story = common::story();
    story("qemu-arm64");
}

#[test]
fn qemu_x86_64_static_address_from_the_command_line() {
    let _story = common::story();
    let board = "qemu-x86_64";
    let work = common::workdir("system-static");
    let minimal = common::root().join("images/minimal.toml");
    let (key, out, _) = keyed_build(
        board,
        &work,
        &[
            "--image",
            minimal.to_str().expect("utf-8"),
            "--kernel-arg",
            "ballast.ip=10.0.2.15/24",
            "--kernel-arg",
            "ballast.gw=10.0.2.2",
            "--kernel-arg",
            "ballast.dns=10.0.2.3",
        ],
    );
    let port = free_port();
    let mut vm = Machine::boot(board, &out, port, work.join("console.log"));
    vm.wait_for("ballast-ready", Duration::from_secs(420));
    let ssh = Ssh { key, port };
    let logs = ssh.ok("osctl logs network -n 50");
    assert!(logs.contains("network: static 10.0.2.15/24"), "{logs}");
    let resolv = ssh.ok("cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.0.2.3"), "{resolv}");
    let _ = ssh.run("osctl poweroff");
    let status = vm.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "QEMU exited with {status}");
}
