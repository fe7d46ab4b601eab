//! Story: an operator boots the image, waits for `ballast-ready`, logs in
//! over SSH as `ballast` with a key, looks at `osctl status`, sees a killed
//! service come back, and reboots with `osctl reboot`. The slot that reached
//! ready is marked good, and the reboot leaves no filesystem to repair.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Machine {
    child: Child,
    lines: mpsc::Receiver<String>,
    console: Vec<String>,
    log: PathBuf,
}

impl Machine {
    fn boot(board: &str, out: &Path, ssh_port: u16, log: PathBuf) -> Machine {
        let mut child = common::ballast()
            .args(["run", "--board", board, "--no-reboot", "--out"])
            .arg(out)
            .args(["--ssh-port", &ssh_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting ballast run");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            while let Ok(n) = reader.read_until(b'\n', &mut buf) {
                if n == 0 {
                    break;
                }
                let _ = tx.send(String::from_utf8_lossy(&buf).trim_end().to_owned());
                buf.clear();
            }
        });
        Machine {
            child,
            lines: rx,
            console: Vec::new(),
            log,
        }
    }

    fn save(&self) {
        let _ = std::fs::write(&self.log, self.console.join("\n"));
    }

    /// Read the console until a line contains `needle`.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.console.push(line.clone());
                    if line.contains(needle) {
                        self.save();
                        return line;
                    }
                }
                Err(_) => {
                    self.save();
                    let _ = self.child.kill();
                    panic!(
                        "no console line with {needle:?} within {timeout:?}; console:\n{}",
                        self.console.join("\n")
                    );
                }
            }
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.console.push(line);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
                    self.console.push(line);
                }
                self.save();
                return status;
            }
            if start.elapsed() > timeout {
                self.save();
                let _ = self.child.kill();
                panic!(
                    "QEMU did not exit within {timeout:?}; console:\n{}",
                    self.console.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

struct Ssh {
    key: PathBuf,
    port: u16,
}

impl Ssh {
    fn run(&self, command: &str) -> std::process::Output {
        Command::new("ssh")
            .arg("-i")
            .arg(&self.key)
            .args(["-p", &self.port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "LogLevel=ERROR",
                "ballast@127.0.0.1",
                command,
            ])
            .output()
            .expect("running ssh")
    }

    fn ok(&self, command: &str) -> String {
        let out = self.run(command);
        assert!(
            out.status.success(),
            "ssh {command:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn status(&self) -> serde_json::Value {
        let text = self.ok("osctl status --json");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("osctl status --json: {e}: {text}"))
    }
}

fn service<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no service {name} in {status}"))
}

fn is_up(service: &serde_json::Value) -> bool {
    matches!(service["state"].as_str(), Some("running" | "healthy"))
}

/// A fresh SSH key in `work`, and a build of `board` that trusts it.
/// Returns (private key, build output dir, `ballast build --json`).
fn keyed_build(board: &str, work: &Path, extra: &[&str]) -> (PathBuf, PathBuf, serde_json::Value) {
    let key = work.join("id_ed25519");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(keygen.success());
    let out = work.join("out");
    let pubkey = key.with_extension("pub");
    let mut args = vec!["--ssh-key", pubkey.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    let built = common::build(board, &out, &args);
    (key, out, built)
}

fn story(board: &str, extra: &[&str]) {
    let work = common::workdir(&format!("system-{board}"));
    let (key, out, built) = keyed_build(board, &work, extra);
    let version = built["version"].as_str().expect("version").to_owned();

    let port = free_port();
    let mut vm = Machine::boot(board, &out, port, work.join("console-1.log"));
    let ready = vm.wait_for("ballast-ready", Duration::from_secs(420));
    assert_eq!(
        ready.trim(),
        format!("ballast-ready version={version} slot=a")
    );

    let ssh = Ssh { key, port };
    let status = ssh.status();
    assert_eq!(status["version"], version, "{status}");
    assert_eq!(status["slot"], "a", "{status}");
    for name in ["network", "time", "ssh"] {
        assert!(is_up(service(&status, name)), "{name} not up: {status}");
    }
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
    let mut vm = Machine::boot(board, &out, port, work.join("console-2.log"));
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
    story("qemu-arm64", &[]);
}

#[test]
fn qemu_x86_64_static_address_from_the_command_line() {
    let board = "qemu-x86_64";
    let work = common::workdir("system-static");
    let (key, out, _) = keyed_build(
        board,
        &work,
        &[
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
