//! Replacing an image file the one way every writer here does it: write
//! `<path>.tmp` beside it (same filesystem), and only when that worked and was
//! fsynced, rename it over `path` and fsync the directory. A failed write
//! leaves no temporary file and never a half image at `path`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::error::io_err;
use crate::DiskError;

/// `write` fills (and fsyncs) the temporary file it is given; `what` names
/// the image in messages ("FAT image").
pub(crate) fn replace<T, E: From<DiskError>>(
    path: &Path,
    what: &str,
    write: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    let tmp = tmp_path(path);
    let value = match write(&tmp) {
        Ok(v) => v,
        Err(e) => {
            // Best effort: the error being reported matters more than this one.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path, format!("renaming {} into place", tmp.display()))(e).into());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err(
            parent,
            format!("syncing the directory after renaming the {what}"),
        ))?;
    Ok(value)
}

/// `<path>.tmp`, beside the target so the rename stays on one filesystem.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}
