//! Every error names the device or file, what was wrong and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A target check failed; nothing was written. The message names the
    /// device and the fix.
    #[error("{}: {reason}; nothing was written", path.display())]
    Refused { path: PathBuf, reason: String },
    #[error("install image manifest {source_name}: {detail}")]
    Manifest { source_name: String, detail: String },
    #[error("the image {what}: {detail}")]
    Image { what: String, detail: String },
    #[error("verification failed on {}: {detail}; the target was left without a partition table (unbootable): write it again, and if it fails again the device is faulty", path.display())]
    Verify { path: PathBuf, detail: String },
    #[error("the boot partition of the image: {0}")]
    BootConfig(String),
}

impl InstallError {
    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> InstallError {
        let path = path.to_path_buf();
        move |source| InstallError::Io {
            action,
            path,
            source,
        }
    }
    pub(crate) fn refused(path: &std::path::Path, reason: impl Into<String>) -> InstallError {
        InstallError::Refused {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
