//! Helpers for the end-to-end stories: build with the real `ballast` binary
//! (once per test run for what several stories boot: `shared`), boot under
//! QEMU, read the serial console, time each story (`timing`).
#![allow(dead_code)] // each test binary uses a different subset

pub mod loopdev;
pub mod ntp;
pub mod oci;
pub mod shared;
pub mod timing;
pub mod tls;
pub mod vm;

#[allow(unused_imports)] // each test binary uses a different subset
pub use shared::{Build, Built};
pub use timing::story;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The checkout under test.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("builder/ has a parent")
        .to_path_buf()
}

/// A `ballast` command for the checkout under test.
pub fn ballast() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ballast"));
    cmd.env("BALLAST_ROOT", root());
    cmd
}

/// A per-test work directory under target/e2e. A story's disks and builds
/// take up to 2 GB, and forty of them kept would fill a CI machine's disk:
/// the directory is removed when the story passes and kept when it fails
/// (its console logs and artifacts are what the failure is read from), or
/// always with `BALLAST_KEEP_E2E=1`.
pub struct WorkDir(PathBuf);

impl std::ops::Deref for WorkDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for WorkDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for WorkDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let keep = std::env::var_os("BALLAST_KEEP_E2E").is_some_and(|v| v == "1");
        if !std::thread::panicking() && !keep {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn workdir(name: &str) -> WorkDir {
    let dir = root().join("target").join("e2e").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the e2e work directory");
    WorkDir(dir)
}

/// `ballast build --json` → the printed object. The stories build with
/// `--compress fast` (the same formats and boot, several times quicker; ADR
/// 0016) unless `extra` says `--compress`.
pub fn build(board: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut cmd = ballast();
    cmd.args(["build", "--board", board, "--json", "--out"])
        .arg(out)
        .args(extra);
    if !extra.contains(&"--compress") {
        cmd.args(["--compress", "fast"]);
    }
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("running ballast build");
    assert!(
        output.status.success(),
        "ballast build --board {board} failed: {}",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("ballast build --json printed no JSON ({e}): {stdout}"))
}

/// `ballast seed --user-data UD --meta-data MD [ARGS...] -o IMG`: a NoCloud
/// seed image, as a user makes one. `args` adds `--network-config F`, `--iso9660`.
pub fn seed_image(
    user_data: &Path,
    meta_data: &Path,
    args: &[&std::ffi::OsStr],
    img: &Path,
) -> PathBuf {
    let out = ballast()
        .args(["seed", "--user-data"])
        .arg(user_data)
        .arg("--meta-data")
        .arg(meta_data)
        .args(args)
        .arg("-o")
        .arg(img)
        .output()
        .expect("running ballast seed");
    assert!(
        out.status.success(),
        "ballast seed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img.to_path_buf()
}

/// What a QEMU run printed and how it ended.
pub struct Boot {
    pub status: Option<ExitStatus>,
    pub lines: Vec<String>,
    pub elapsed: Duration,
}

impl Boot {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// Index of the first console line containing `needle`.
    pub fn find(&self, needle: &str) -> Option<usize> {
        self.lines.iter().position(|l| l.contains(needle))
    }

    pub fn assert_has(&self, needle: &str) {
        assert!(
            self.find(needle).is_some(),
            "console never printed {needle:?}; console:\n{}",
            self.text()
        );
    }
}

/// The lines a child prints on `stdout` (a serial console), read by a thread.
pub fn console_lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
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
    rx
}

/// Run `ballast run` with `args` until QEMU exits or `timeout` passes (then it
/// is killed). The console is saved to `log`.
pub fn run(board: &str, out: &Path, args: &[&str], timeout: Duration, log: &Path) -> Boot {
    let mut child = ballast()
        .args(["run", "--board", board, "--no-reboot", "--out"])
        .arg(out)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting ballast run");
    let rx = console_lines(child.stdout.take().expect("piped stdout"));
    let start = Instant::now();
    let mut lines = Vec::new();
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            lines.push(line);
        }
        if let Ok(Some(status)) = child.try_wait() {
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
                lines.push(line);
            }
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            while let Ok(line) = rx.try_recv() {
                lines.push(line);
            }
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let boot = Boot {
        status,
        lines,
        elapsed: start.elapsed(),
    };
    let _ = std::fs::write(log, boot.text());
    boot
}

/// `sgdisk -v IMAGE` (gdisk, scripts/setup) must find no problems in the
/// partition table(s) of a disk image, ISO or written device copy. `what`
/// prefixes the failure message.
pub fn assert_sgdisk_valid(image: &Path, what: &str) {
    let out = Command::new("sgdisk")
        .arg("-v")
        .arg(image)
        .output()
        .expect("running sgdisk (gdisk, scripts/setup)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("No problems found"),
        "{what}: sgdisk -v {}: {report}{}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copy partition `index` (1-based) of a disk image into its own file.
pub fn extract_partition(disk: &Path, index: u32, dest: &Path) -> PathBuf {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(disk).expect("opening the disk image");
    let table = ballast_disk::read_table(&mut f, 512).expect("reading the partition table");
    let p = table
        .partitions
        .iter()
        .find(|p| p.index == index)
        .unwrap_or_else(|| panic!("no partition {index} in {}", disk.display()));
    f.seek(SeekFrom::Start(p.start_lba * 512)).expect("seek");
    let mut bytes = vec![0u8; ((p.end_lba + 1 - p.start_lba) * 512) as usize];
    f.read_exact(&mut bytes).expect("reading the partition");
    std::fs::write(dest, bytes).expect("writing the partition copy");
    dest.to_path_buf()
}
