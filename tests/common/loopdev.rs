//! A loop device over a file, for the stories that write Ballast onto a
//! "card" the way a user does (`ballast flash`): the tests run as root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device over a file of `size` bytes, detached when dropped.
pub struct Loop {
    pub dev: PathBuf,
}

impl Loop {
    /// Attach `file` (made `size` bytes long when it does not exist), with
    /// more `losetup` arguments (`-r` for a read-only device).
    pub fn new(file: &Path, size: u64, extra: &[&str]) -> Loop {
        if !file.exists() {
            let f = fs::File::create(file).expect("creating a loop backing file");
            f.set_len(size).expect("sizing it");
        }
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .args(extra)
            .arg(file)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop {
            dev: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // Most stories never mount it: umount's "not mounted" says nothing.
        let _ = Command::new("umount")
            .arg(&self.dev)
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}
