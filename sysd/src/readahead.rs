//! Reading ahead: on a first boot every program a system container starts is
//! read cold from the verified root (squashfs blocks decompressed, dm-verity
//! hashes checked), one page fault at a time, while the other CPUs wait. The
//! builder lists what the containers load on their way to healthy
//! ([`ballast_device::paths::READ_AHEAD`]: sysd's own binary, the containers'
//! programs and the libraries those load); `sysd --read-ahead`, which PID 1
//! starts as soon as the root is mounted, reads those files into the page
//! cache while stage 1 finishes and the containers start, so their page
//! faults find the pages there.
//!
//! It only reads: a missing file costs nothing but the line that says so,
//! and nothing waits for it.

use ballast_device::paths::READ_AHEAD;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

/// What one pass read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    pub bytes: u64,
    /// Listed files that could not be read (path and why).
    pub unread: Vec<String>,
}

impl Report {
    /// The console line (without sysd's prefix).
    pub fn line(&self, took: Duration) -> String {
        let mut line = format!(
            "read-ahead: {} files, {:.1} MiB in {} ms",
            self.files,
            self.bytes as f64 / (1 << 20) as f64,
            took.as_millis()
        );
        if let Some(first) = self.unread.first() {
            line.push_str(&format!(
                "; {} listed files unread (first: {first})",
                self.unread.len()
            ));
        }
        line
    }
}

/// Read every file `list` names (paths relative to `root`, one per line;
/// blank lines and `#` comments skipped).
pub fn read_listed(root: &Path, list: &str) -> Report {
    let mut report = Report::default();
    let mut buf = vec![0u8; 128 << 10];
    for line in list.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let path = root.join(line.trim_start_matches('/'));
        match read_through(&path, &mut buf) {
            Ok(n) => {
                report.files += 1;
                report.bytes += n;
            }
            Err(e) => report.unread.push(format!("{}: {e}", path.display())),
        }
    }
    report
}

fn read_through(path: &Path, buf: &mut [u8]) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut total = 0u64;
    loop {
        match file.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `sysd --read-ahead`: PID 1's stage 1 starts it in the freshly mounted
/// root (its working directory) as soon as the root is verified and
/// mounted; it reads the root's list through and says what it read. Exit
/// code 0, or 1 when the list cannot be read.
pub fn main_code() -> i32 {
    let began = Instant::now();
    // Its own name in `ps` and `pgrep` (and /proc/PID/comm): it is not sysd.
    let _ = rustix::thread::set_name(c"read-ahead");
    let list = Path::new(READ_AHEAD.trim_start_matches('/'));
    match std::fs::read_to_string(list) {
        Ok(text) => {
            let report = read_listed(Path::new("."), &text);
            crate::say(&report.line(began.elapsed()));
            0
        }
        Err(e) => {
            crate::say(&format!("read-ahead: cannot read {READ_AHEAD}: {e}"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_files_are_read_and_missing_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/sbin")).unwrap();
        std::fs::write(dir.path().join("usr/sbin/sshd"), vec![7u8; 300_000]).unwrap();
        std::fs::write(dir.path().join("lib.so"), b"12345").unwrap();
        let report = read_listed(
            dir.path(),
            "# programs first\nusr/sbin/sshd\n\n/lib.so\nusr/bin/gone\n",
        );
        assert_eq!(report.files, 2);
        assert_eq!(report.bytes, 300_005);
        assert_eq!(report.unread.len(), 1);
        assert!(
            report.unread[0].contains("usr/bin/gone"),
            "{:?}",
            report.unread
        );
        let line = report.line(Duration::from_millis(42));
        assert!(
            line.starts_with(
                "read-ahead: 2 files, 0.3 MiB in 42 ms; 1 listed files unread (first: "
            ),
            "{line}"
        );
    }
}
