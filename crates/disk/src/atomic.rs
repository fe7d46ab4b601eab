//! Replacing an image file through the project's one crash-safe write
//! (`ballast_device::atomic`): `<path>.tmp` beside it (same filesystem), and
//! only when that was written and fsynced, rename it over `path` and fsync the
//! directory. A failed write leaves no temporary file and never a half image
//! at `path`.
//!
//! The writers here open the temporary file themselves (by its path) because
//! they need options the shared helper does not give (the FAT writer reads
//! back what it wrote); the helper's own handle only fsyncs the same file.

use std::fs::File;
use std::io;
use std::path::Path;

use ballast_device::atomic::{replace_with, tmp_beside, AtomicError};

use crate::DiskError;

/// Either the caller's write failed (its error is returned as it is), or a
/// step of the durable replace did.
enum Failed<E> {
    Write(E),
    Replace(AtomicError),
}

impl<E> From<AtomicError> for Failed<E> {
    fn from(e: AtomicError) -> Self {
        Failed::Replace(e)
    }
}

/// `write` fills (and fsyncs) the temporary file whose path it is given;
/// `what` names the image in messages ("FAT image").
pub(crate) fn replace<T, E: From<DiskError>>(
    path: &Path,
    what: &str,
    write: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    // The shared helper creates missing parent directories; an image writer
    // never did: a mistyped output path is an error, not a new directory.
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(E::from(DiskError::Io {
            path: tmp_beside(path),
            action: format!("creating the {what} (is the directory writable?)"),
            source: io::Error::from(io::ErrorKind::NotFound),
        }));
    }
    replace_with(path, |tmp: &Path, _: &mut File| {
        write(tmp).map_err(Failed::Write)
    })
    .map_err(|failed| match failed {
        Failed::Write(e) => e,
        Failed::Replace(e) => E::from(DiskError::Io {
            path: e.path,
            action: format!("{} (replacing the {what})", e.action),
            source: e.source,
        }),
    })
}
