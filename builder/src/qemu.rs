//! Launching QEMU the way a board's firmware would start Ballast, and choosing
//! the accelerator.
//!
//! KVM is only worth trying when the board's arch is the host's, `/dev/kvm` is
//! usable and the profile allows it. Even then a kernel boot under KVM hangs on
//! some hosts (docs/adr/0001, "KVM"), so KVM is chosen only after a short probe boot of the
//! same kernel reaches init's banner; the verdict is cached per QEMU version
//! and kernel so the probe runs once.

use anyhow::{bail, Context, Result};
use ballast_inputs::{Arch, QemuProfile};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// Probe KVM when it could work, else TCG.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub(crate) fn arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,thread=multi",
        }
    }
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct Launch {
    pub profile: QemuProfile,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub ssh_port: Option<u16>,
    pub no_reboot: bool,
    /// Boot this disk image through the profile's firmware instead of
    /// handing QEMU the kernel and initramfs.
    pub disk: Option<DiskBoot>,
}

/// A disk image and the firmware files that boot it.
#[derive(Debug, Clone)]
pub struct DiskBoot {
    pub image: PathBuf,
    /// QEMU's name for the image's format: `raw` or `qcow2`.
    pub format: &'static str,
    /// UEFI code and the writable variable store of this disk.
    pub uefi: Option<(PathBuf, PathBuf)>,
    /// A `-bios` image (U-Boot).
    pub bios: Option<PathBuf>,
    /// A `-kernel` image standing in for the board's first stage (the
    /// Raspberry Pi's U-Boot, which its GPU firmware would load).
    pub kernel: Option<PathBuf>,
    /// Files QEMU's generic loader puts at fixed addresses (raspi2b: the Pi
    /// firmware's ARM stub at 0 and U-Boot at 0x8000).
    pub loads: Vec<(PathBuf, u64)>,
}

impl Launch {
    pub fn command(&self, accel: Accel) -> Command {
        let p = &self.profile;
        let mut cmd = Command::new(&p.binary);
        cmd.args(["-machine", &p.machine])
            .args(["-accel", accel.arg()])
            .args(["-cpu", if accel == Accel::Kvm { "host" } else { &p.cpu }])
            .args(["-m", &p.memory_mib.to_string()])
            .args(["-smp", &p.smp.to_string()])
            .args(["-nographic", "-nodefaults"]);
        for _ in 0..p.console_serial {
            cmd.args(["-serial", "null"]);
        }
        cmd.args(["-serial", "mon:stdio"]);
        match &self.disk {
            None => {
                cmd.arg("-kernel")
                    .arg(&self.kernel)
                    .arg("-initrd")
                    .arg(&self.initrd)
                    .args(["-append", &self.cmdline]);
            }
            Some(disk) => {
                if let Some((code, vars)) = &disk.uefi {
                    cmd.arg("-drive")
                        .arg(drive_arg("if=pflash,format=raw,unit=0,readonly=on", code));
                    cmd.arg("-drive")
                        .arg(drive_arg("if=pflash,format=raw,unit=1", vars));
                }
                if let Some(bios) = &disk.bios {
                    cmd.arg("-bios").arg(bios);
                }
                if let Some(kernel) = &disk.kernel {
                    cmd.arg("-kernel").arg(kernel);
                }
                for (file, addr) in &disk.loads {
                    let mut arg = drive_arg("loader", file);
                    arg.push(format!(",addr={addr:#x}"));
                    cmd.arg("-device").arg(arg);
                }
                if p.disk_device == "sd" {
                    let opts = format!("if=sd,index=0,format={}", disk.format);
                    cmd.arg("-drive").arg(drive_arg(&opts, &disk.image));
                } else {
                    let opts = format!("if=none,id=disk0,format={}", disk.format);
                    cmd.arg("-drive")
                        .arg(drive_arg(&opts, &disk.image))
                        .args(["-device", &format!("{},drive=disk0", p.disk_device)]);
                }
            }
        }
        let mut netdev = "user,id=net0".to_owned();
        if let Some(port) = self.ssh_port {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{port}-:22"));
        }
        cmd.args(["-netdev", &netdev]);
        // A disk boot under a profile with `net_attach_after` gets its device
        // later, through the monitor (`attach_net`).
        if p.net_attach_after.is_none() || self.disk.is_none() {
            cmd.args(["-device", &format!("{},netdev=net0", p.net_device)]);
        }
        if self.no_reboot {
            cmd.arg("-no-reboot");
        }
        cmd.args(&p.extra_args);
        cmd
    }
}

/// A human monitor on a Unix socket at `sock`, for [`attach_net`].
pub fn monitor_args(sock: &Path) -> Vec<std::ffi::OsString> {
    let mut arg = std::ffi::OsString::from("unix:");
    arg.push(sock.as_os_str());
    arg.push(",server=on,wait=off");
    vec!["-monitor".into(), arg]
}

/// Attach the profile's network device to `net0` through the monitor at
/// `sock` (profiles with `net_attach_after`: see its doc).
pub fn attach_net(profile: &QemuProfile, sock: &Path) -> Result<()> {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .with_context(|| format!("connecting to QEMU's monitor at {}", sock.display()))?;
    s.write_all(format!("device_add {},netdev=net0,id=net0dev\n", profile.net_device).as_bytes())
        .with_context(|| format!("writing to QEMU's monitor at {}", sock.display()))?;
    // Closing at once may drop the command before the monitor reads it: wait
    // for its answer (the prompt after the command), briefly.
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("device_add") {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&seen);
    if text.contains("Error") || text.contains("error") {
        bail!("QEMU's monitor refused device_add: {}", text.trim());
    }
    Ok(())
}

/// QEMU arguments that attach a NoCloud seed image read-only as a second
/// drive of the profile's disk device.
pub fn seed_args(profile: &QemuProfile, seed: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "-drive".into(),
        drive_arg("if=none,id=seed0,format=raw,readonly=on", seed),
        "-device".into(),
        format!("{},drive=seed0", profile.disk_device).into(),
    ]
}

/// An extra writable raw disk (`ballast run --drive`), the `index`-th one.
pub fn drive_args(profile: &QemuProfile, file: &Path, index: usize) -> Vec<std::ffi::OsString> {
    vec![
        "-drive".into(),
        drive_arg(&format!("if=none,id=data{index},format=raw"), file),
        "-device".into(),
        format!("{},drive=data{index}", profile.disk_device).into(),
    ]
}

/// `-drive` (or `-device loader`) value with a file name, commas escaped the
/// way QEMU wants.
fn drive_arg(opts: &str, file: &Path) -> std::ffi::OsString {
    let mut arg = std::ffi::OsString::from(format!("{opts},file="));
    arg.push(file.to_string_lossy().replace(',', ",,"));
    arg
}

/// Pick the accelerator for `launch` (see the module doc).
pub fn choose_accel(
    launch: &Launch,
    arch: Arch,
    choice: AccelChoice,
    cache: &Path,
) -> Result<Accel> {
    let env_choice = std::env::var("BALLAST_ACCEL").ok();
    let choice = match env_choice.as_deref() {
        Some("kvm") => AccelChoice::Kvm,
        Some("tcg") => AccelChoice::Tcg,
        Some("auto") | Some("") | None => choice,
        Some(other) => bail!("BALLAST_ACCEL={other:?} is not one of auto, kvm, tcg"),
    };
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Kvm => Ok(Accel::Kvm),
        AccelChoice::Auto => {
            let kvm_possible = launch.profile.kvm
                && Arch::host() == Some(arch)
                && std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/kvm")
                    .is_ok();
            if !kvm_possible {
                return Ok(Accel::Tcg);
            }
            probe_kvm(launch, cache)
        }
    }
}

fn probe_kvm(launch: &Launch, cache: &Path) -> Result<Accel> {
    let key = probe_key(launch)?;
    let verdict_file = cache.join("kvm-probe").join(&key);
    if let Ok(v) = std::fs::read_to_string(&verdict_file) {
        return Ok(if v.trim() == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        });
    }
    eprintln!("ballast: probing KVM with a short boot (once per kernel and QEMU version)...");
    let mut probe = launch.clone();
    probe.cmdline = format!("{} ballast.debug=poweroff", launch.cmdline);
    probe.no_reboot = true;
    probe.ssh_port = None;
    probe.disk = None;
    let mut console = Console::spawn(probe.command(Accel::Kvm))?;
    let ok = console
        .wait_for("ballast-init version=", Duration::from_secs(20))
        .is_ok();
    console.kill();
    let verdict = if ok { Accel::Kvm } else { Accel::Tcg };
    if let Some(dir) = verdict_file.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    ballast_device::atomic::write_atomic(&verdict_file, if ok { b"kvm\n" } else { b"tcg\n" }).ok();
    if !ok {
        eprintln!("ballast: KVM did not boot this kernel; using TCG");
    }
    Ok(verdict)
}

fn probe_key(launch: &Launch) -> Result<String> {
    let version = Command::new(&launch.profile.binary)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "running {} --version: is QEMU installed? (scripts/setup)",
                launch.profile.binary
            )
        })?;
    let kernel = std::fs::read(&launch.kernel)
        .with_context(|| format!("reading {}", launch.kernel.display()))?;
    let mut h = Sha256::new();
    h.update(&version.stdout);
    h.update(&kernel);
    Ok(hex::encode(&h.finalize()[..12]))
}

/// A running QEMU whose serial console is read line by line.
pub struct Console {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Everything read so far.
    pub transcript: Vec<String>,
}

impl Console {
    pub fn spawn(cmd: Command) -> Result<Console> {
        Console::spawn_with_stderr(cmd, Stdio::inherit())
    }

    /// Like `spawn`, with the command's stderr sent to `stderr` (a file a
    /// bench reads `ballast run`'s own lines from).
    pub fn spawn_with_stderr(mut cmd: Command, stderr: Stdio) -> Result<Console> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "starting {:?}: is QEMU installed? (scripts/setup)",
                cmd.get_program()
            )
        })?;
        let stdout = child
            .stdout
            .take()
            .context("QEMU's stdout was not captured")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            while let Ok(n) = reader.read_until(b'\n', &mut buf) {
                if n == 0 {
                    break;
                }
                let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                buf.clear();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Console {
            child,
            lines: rx,
            transcript: Vec::new(),
        })
    }

    /// Read lines until one contains `needle`; returns how long it took.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.transcript.push(line);
                    if hit {
                        return Ok(start.elapsed());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("no console line containing {needle:?} within {timeout:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("QEMU exited before printing {needle:?}")
                }
            }
        }
    }

    /// Read lines until one contains `needle`, noting when each line came
    /// (seconds since `since`).
    pub fn timed_until(
        &mut self,
        needle: &str,
        since: Instant,
        timeout: Duration,
    ) -> Result<Vec<(f64, String)>> {
        let mut timed = Vec::new();
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    timed.push((since.elapsed().as_secs_f64(), line.clone()));
                    self.transcript.push(line);
                    if hit {
                        return Ok(timed);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("no console line containing {needle:?} within {timeout:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("QEMU exited before printing {needle:?}")
                }
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL QEMU (a power cut: nothing is flushed), then keep what the
    /// console printed up to that moment.
    pub fn kill_and_drain(&mut self) {
        self.kill();
        self.drain(Duration::from_secs(2));
    }

    /// Wait for QEMU to exit by itself (a power-off), reading the console to its end.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => self.transcript.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if start.elapsed() > timeout {
                bail!("QEMU did not exit within {timeout:?}");
            }
        }
        self.child.wait().context("waiting for QEMU")
    }

    /// Lines already printed or printed within `quiet` of each other.
    fn drain(&mut self, quiet: Duration) {
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            self.transcript.push(line);
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
