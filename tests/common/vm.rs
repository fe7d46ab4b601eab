//! A booted machine for the SSH stories: QEMU through `ballast run`, its console
//! read line by line, and an SSH client for user `ballast`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Machine {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub console: Vec<String>,
    log: PathBuf,
    started: Instant,
}

impl Machine {
    /// Boot `out`'s disk; QEMU exits when the machine reboots.
    pub fn boot(board: &str, out: &Path, ssh_port: u16, log: PathBuf) -> Machine {
        Machine::start(board, out, ssh_port, log, false)
    }

    /// Boot `out`'s disk; with `reboots`, QEMU restarts the machine in place (for
    /// stories that span several boots, such as an automatic rollback).
    pub fn start(board: &str, out: &Path, ssh_port: u16, log: PathBuf, reboots: bool) -> Machine {
        Machine::start_with(board, out, ssh_port, log, reboots, &[])
    }

    /// Boot `disk` (a story's own machine: `Built::vm_disk`) with `out`'s
    /// kernel; QEMU exits when the machine reboots.
    pub fn boot_disk(board: &str, out: &Path, disk: &Path, ssh_port: u16, log: PathBuf) -> Machine {
        Machine::start_with(board, out, ssh_port, log, false, &[disk.as_os_str()])
    }

    /// Like `start`, with more `ballast run` arguments (`--seed PATH`, a DISK).
    pub fn start_with(
        board: &str,
        out: &Path,
        ssh_port: u16,
        log: PathBuf,
        reboots: bool,
        extra: &[&std::ffi::OsStr],
    ) -> Machine {
        let mut cmd = super::ballast();
        cmd.args(["run", "--board", board]);
        if !reboots {
            cmd.arg("--no-reboot");
        }
        let mut child = cmd
            .arg("--out")
            .arg(out)
            .args(["--ssh-port", &ssh_port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting ballast run");
        let rx = super::console_lines(child.stdout.take().expect("piped stdout"));
        Machine {
            child,
            lines: rx,
            console: Vec::new(),
            log,
            started: Instant::now(),
        }
    }

    /// Time since QEMU was started.
    pub fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    /// The console's last lines, and where the whole of it is: a CI report
    /// keeps only the start and the end of a failing test's output, and
    /// what a stuck boot printed last is at the end of its console.
    fn tail(&self) -> String {
        const LAST: usize = 60;
        let from = self.console.len().saturating_sub(LAST);
        format!(
            "the console's last {} of {} lines (the whole console is in {}):\n{}",
            self.console.len() - from,
            self.console.len(),
            self.log.display(),
            self.console[from..].join("\n")
        )
    }

    pub fn save(&self) {
        let _ = std::fs::write(&self.log, self.console.join("\n"));
    }

    /// Read the console until a line contains `needle`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for_any(&[needle], timeout)
    }

    /// Read the console until a line contains one of `needles`.
    pub fn wait_for_any(&mut self, needles: &[&str], timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.console.push(line.clone());
                    if needles.iter().any(|n| line.contains(n)) {
                        self.save();
                        return line;
                    }
                }
                Err(_) => {
                    self.save();
                    let _ = self.child.kill();
                    panic!(
                        "no console line with {needles:?} within {timeout:?}; {}",
                        self.tail()
                    );
                }
            }
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.console.push(line);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // The console to its end: the reader reaches the end of the
                // pipe once QEMU is gone. A quiet moment is not the end: on
                // a loaded machine the reader may take longer than any gap
                // to pass on the last lines (`reboot: Power down`).
                let until = Instant::now() + Duration::from_secs(10);
                while let Ok(line) = self
                    .lines
                    .recv_timeout(until.saturating_duration_since(Instant::now()))
                {
                    self.console.push(line);
                }
                self.save();
                return status;
            }
            if start.elapsed() > timeout {
                self.save();
                let _ = self.child.kill();
                panic!("QEMU did not exit within {timeout:?}; {}", self.tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Machine {
    /// Keeps what the console printed after the last wait (a failing step's
    /// kernel messages, say) in the log before the machine is stopped.
    fn drop(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
            self.console.push(line);
        }
        self.save();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// `ssh USER@127.0.0.1 -p PORT COMMAND` with another user's key (the
/// stories' [`Ssh`] logs in as `ballast`).
pub fn ssh_as(user: &str, key: &Path, port: u16, command: &str) -> std::process::Output {
    let mut cmd = Command::new("ssh");
    cmd.arg("-i").arg(key).args(["-p", &port.to_string()]);
    for o in Ssh::options() {
        cmd.arg("-o").arg(o);
    }
    cmd.arg(format!("{user}@127.0.0.1"))
        .arg(command)
        .output()
        .expect("running ssh")
}

pub struct Ssh {
    pub key: PathBuf,
    pub port: u16,
}

impl Ssh {
    /// The options every ssh call of the stories passes (`-o` values).
    pub fn options() -> Vec<String> {
        [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "ConnectTimeout=20",
            "LogLevel=ERROR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Run `command` with `input` on its stdin.
    pub fn run_with_input(&self, command: &str, input: &[u8]) -> std::process::Output {
        let mut child = self
            .command(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running ssh");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let data = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().expect("waiting for ssh");
        let _ = writer.join();
        out
    }

    /// Run `command` with `input` on its stdin; it must succeed.
    pub fn ok_with_input(&self, command: &str, input: &[u8]) -> String {
        let out = self.run_with_input(command, input);
        succeeded(command, out)
    }

    /// The ssh command for `command`, not started.
    pub fn command(&self, command: &str) -> Command {
        // No story may hang on a stuck session.
        let mut cmd = Command::new("timeout");
        cmd.args(["300", "ssh"]);
        cmd.arg("-i")
            .arg(&self.key)
            .args(["-p", &self.port.to_string()]);
        for o in Ssh::options() {
            cmd.arg("-o").arg(o);
        }
        cmd.args(["ballast@127.0.0.1", command]);
        cmd
    }

    pub fn run(&self, command: &str) -> std::process::Output {
        self.command(command).output().expect("running ssh")
    }

    pub fn ok(&self, command: &str) -> String {
        let out = self.run(command);
        succeeded(command, out)
    }

    /// Run an osctl command that reboots or powers off the machine (`osctl
    /// reboot`, `osctl rollback --reboot`). ssh may exit 255 with "closed by
    /// remote host": the reboot stops the SSH container, at times before sshd
    /// has sent osctl's exit code, as with `ssh HOST reboot` on any Linux.
    /// That is success once osctl has said PID 1 took the request.
    pub fn ok_going_down(&self, command: &str) -> String {
        let out = self.run(command);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.code() == Some(255) && stdout.contains(": asked PID ") {
            return stdout;
        }
        succeeded(command, out)
    }

    pub fn status(&self) -> serde_json::Value {
        let text = self.ok("osctl status --json");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("osctl status --json: {e}: {text}"))
    }
}

/// A fresh SSH key in `work`, and a build of `board` that trusts it.
/// Returns (private key, build output dir, `ballast build --json`).
pub fn keyed_build(
    board: &str,
    work: &Path,
    extra: &[&str],
) -> (PathBuf, PathBuf, serde_json::Value) {
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
    let built = super::build(board, &out, &args);
    (key, out, built)
}

/// `out`'s stdout, after asserting that `command` exited 0 (stdout and stderr in the message).
fn succeeded(command: &str, out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "ssh {command:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
