//! The seam to the container runtime (ballast-container): load a container directory, start it with
//! its stdout and stderr piped into the service's log, clean up after it died.
//! Reaping stays with the supervisor loop (waitpid on -1).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::logs::{pump, Log};

/// A container could not be loaded, started or cleaned up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime's own error names the file and field, or the step.
    #[error(transparent)]
    Container(#[from] ballast_container::ContainerError),
    #[error("no container directory loaded")]
    NotLoaded,
    #[error("cannot {action}: {source}")]
    Io {
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{id}: cleanup: {source}")]
    Cleanup {
        id: String,
        source: ballast_container::ContainerError,
    },
}

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |source| RuntimeError::Io { action, source }
}

/// A loaded container directory: its path and parsed OCI config (`config.json`).
pub struct ContainerDir {
    dir: PathBuf,
    config: ballast_container::OciConfig,
}

impl ContainerDir {
    /// Parse `DIR/config.json`; the error names the file and field.
    pub fn load(dir: &Path) -> Result<ContainerDir, RuntimeError> {
        let config = ballast_container::load(dir)?;
        Ok(ContainerDir {
            dir: dir.to_path_buf(),
            config,
        })
    }

    /// Start the container as `id`; a thread copies its output into `log` until the
    /// last writer of the pipe is gone.
    pub fn start(&self, id: &str, log: Arc<Log>) -> Result<u32, RuntimeError> {
        let (read_end, write_end) = crate::sys::pipe().map_err(io("create the log pipe"))?;
        let devnull = File::open("/dev/null").map_err(io("open /dev/null"))?;
        let stdio = ballast_container::Stdio3 {
            stdin: devnull.as_fd(),
            stdout: write_end.as_fd(),
            stderr: write_end.as_fd(),
        };
        let started = ballast_container::start(id, &self.dir, &self.config, stdio)?;
        // Our copy of the write end must go, or the pump never sees end of file.
        drop(write_end);
        let src = File::from(read_end);
        std::thread::Builder::new()
            .name(format!("log-{id}"))
            .spawn(move || pump(src, log))
            .map_err(io("start the log thread"))?;
        Ok(started.pid)
    }
}

/// Remove the container's cgroup (killing leftovers) after its process died.
pub fn cleanup(id: &str) -> Result<(), RuntimeError> {
    ballast_container::cleanup(id).map_err(|source| RuntimeError::Cleanup {
        id: id.to_string(),
        source,
    })
}
