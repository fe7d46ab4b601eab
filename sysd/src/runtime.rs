//! The seam to the container runtime (ballast-container): load a bundle, start it with
//! its stdout and stderr piped into the service's log, clean up after it died.
//! Reaping stays with the supervisor loop (waitpid on -1).

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::logs::{pump, Log};

/// A loaded bundle: its directory and parsed config.json.
pub struct Bundle {
    dir: PathBuf,
    spec: ballast_container::Spec,
}

impl Bundle {
    /// Parse `DIR/config.json`; the error names the file and field.
    pub fn load(dir: &Path) -> Result<Bundle, String> {
        let spec = ballast_container::load(dir).map_err(|e| e.to_string())?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            spec,
        })
    }

    /// Start the container as `id`; a thread copies its output into `log` until the
    /// last writer of the pipe is gone.
    pub fn start(&self, id: &str, log: Arc<Log>) -> Result<u32, String> {
        let (read_end, write_end) = pipe()?;
        let devnull = File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
        let stdio = ballast_container::Stdio3 {
            stdin: devnull.as_fd(),
            stdout: write_end.as_fd(),
            stderr: write_end.as_fd(),
        };
        let started = ballast_container::start(id, &self.dir, &self.spec, stdio)
            .map_err(|e| e.to_string())?;
        // Our copy of the write end must go, or the pump never sees end of file.
        drop(write_end);
        let src = File::from(read_end);
        std::thread::Builder::new()
            .name(format!("log-{id}"))
            .spawn(move || pump(src, log))
            .map_err(|e| format!("cannot start the log thread: {e}"))?;
        Ok(started.pid)
    }
}

/// Remove the container's cgroup (killing leftovers) after its process died.
pub fn cleanup(id: &str) -> Result<(), String> {
    ballast_container::cleanup(id).map_err(|e| format!("{id}: cleanup: {e}"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the two-element array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(format!(
            "cannot create the log pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: pipe2 just returned these fds and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
