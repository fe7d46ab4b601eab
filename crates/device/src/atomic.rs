//! The one crash-safe way to replace a file on the device (and on the build host):
//! write `<name>.tmp` beside it, fsync it, rename it over the target, fsync the
//! directory. After a power cut the target is either the old file or the new one,
//! never a mix, and a failed write leaves no temporary file behind.
//!
//! The vfat variant ([`write_atomic_vfat`], [`rename_vfat`]) also fsyncs the renamed
//! file: on vfat (every boot partition) a rename writes the new directory entry with
//! size 0 and no clusters, and the real ones reach the disk only when the file's inode
//! is written back, which an fsync of the directory does not do (docs/adr/0003: a power
//! cut in that window left an empty boot entry).
//!
//! This module never decides what to write or where; it only makes the replace durable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One step of a durable replace failed: what was being done, to which path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct AtomicError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AtomicError {
    let path = path.to_path_buf();
    move |source| AtomicError {
        action,
        path,
        source,
    }
}

/// How the temporary file is made and how the rename is made durable.
#[derive(Debug, Clone, Copy, Default)]
struct How {
    /// Permission bits of the new file (the umask does not apply); default 0o644 & umask.
    mode: Option<u32>,
    /// fsync the file again after the rename (vfat).
    vfat: bool,
}

/// Replace `path` with `bytes`, durably (parent directories are created).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AtomicError> {
    replace(path, How::default(), write_all(bytes))
}

/// [`write_atomic`] with the new file's permission bits (secrets: 0o600).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AtomicError> {
    let how = How {
        mode: Some(mode),
        vfat: false,
    };
    replace(path, how, write_all(bytes))
}

/// [`write_atomic`] for a file on a vfat boot partition.
pub fn write_atomic_vfat(path: &Path, bytes: &[u8]) -> Result<(), AtomicError> {
    let how = How {
        mode: None,
        vfat: true,
    };
    replace(path, how, write_all(bytes))
}

fn write_all(bytes: &[u8]) -> impl FnOnce(&Path, &mut File) -> Result<(), AtomicError> + '_ {
    move |tmp, f| f.write_all(bytes).map_err(err("write", tmp))
}

/// Replace `path` with what `fill` writes into the temporary file it is given (its
/// path is for messages): for contents that are streamed or checked while they are
/// written. An error from `fill` is returned as it is, and nothing is renamed.
pub fn replace_with<T, E: From<AtomicError>>(
    path: &Path,
    fill: impl FnOnce(&Path, &mut File) -> Result<T, E>,
) -> Result<T, E> {
    replace(path, How::default(), fill)
}

fn replace<T, E: From<AtomicError>>(
    path: &Path,
    how: How,
    fill: impl FnOnce(&Path, &mut File) -> Result<T, E>,
) -> Result<T, E> {
    let dir = parent(path);
    fs::create_dir_all(dir).map_err(err("create directory", dir))?;
    let tmp = tmp_beside(path);
    let written = (|| {
        let mut open = OpenOptions::new();
        open.write(true).create(true).truncate(true);
        if let Some(mode) = how.mode {
            open.mode(mode);
        }
        let mut f = open.open(&tmp).map_err(err("create", &tmp))?;
        let value = fill(&tmp, &mut f)?;
        if let Some(mode) = how.mode {
            // A file left by an earlier try keeps its mode through O_TRUNC.
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(err("set the mode of", &tmp))?;
        }
        f.sync_all().map_err(err("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(err("rename into place", path))?;
        Ok(value)
    })();
    let value = match written {
        Ok(v) => v,
        Err(e) => {
            // Best effort: the error being reported matters more than this one.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if how.vfat {
        sync_renamed(path)?;
    }
    sync_dir(dir)?;
    Ok(value)
}

/// Rename `from` to `to` on a vfat boot partition, durably: the renamed file, then
/// the directory.
pub fn rename_vfat(from: &Path, to: &Path) -> Result<(), AtomicError> {
    fs::rename(from, to).map_err(err("rename", from))?;
    sync_renamed(to)?;
    sync_dir(parent(to))
}

/// fsync a file just renamed (see the module doc for why vfat needs it).
pub fn sync_renamed(path: &Path) -> Result<(), AtomicError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(err("fsync", path))
}

/// fsync a directory, making the renames and removals in it durable. Some file
/// systems (vfat on old kernels) refuse fsync on a directory with EINVAL: the change
/// itself is done, so only that error is tolerated.
pub fn sync_dir(dir: &Path) -> Result<(), AtomicError> {
    let d = File::open(dir).map_err(err("open directory", dir))?;
    match d.sync_all() {
        Err(e) if e.kind() != io::ErrorKind::InvalidInput => Err(err("fsync directory", dir)(e)),
        _ => Ok(()),
    }
}

/// `<name>.tmp` beside `path`, so the rename stays on one file system.
pub fn tmp_beside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".tmp");
    PathBuf::from(name)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replace_leaves_the_new_content_and_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/dir/state.env");
        write_atomic(&p, b"one").unwrap();
        write_atomic_vfat(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file_and_removes_the_temporary_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("records.json");
        write_atomic(&p, b"old").unwrap();
        let e = replace_with(&p, |tmp, f| {
            f.write_all(b"half").map_err(err("write", tmp))?;
            Err::<(), _>(err("write", tmp)(io::Error::other("disk full")))
        })
        .unwrap_err();
        assert_eq!(e.path, tmp_beside(&p));
        assert!(e.to_string().starts_with("cannot write "), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert!(!tmp_beside(&p).exists());
    }

    #[test]
    fn the_mode_is_the_one_asked_for() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret");
        fs::write(tmp_beside(&p), b"left over").unwrap();
        fs::set_permissions(tmp_beside(&p), fs::Permissions::from_mode(0o666)).unwrap();
        write_atomic_mode(&p, b"s", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn rename_vfat_moves_the_file() {
        let d = tempfile::tempdir().unwrap();
        let (from, to) = (d.path().join("vmlinuz.tmp"), d.path().join("vmlinuz"));
        fs::write(&from, b"kernel").unwrap();
        rename_vfat(&from, &to).unwrap();
        assert_eq!(fs::read(&to).unwrap(), b"kernel");
        let e = rename_vfat(&from, &to).unwrap_err();
        assert_eq!((e.action, e.path), ("rename", from));
    }
}
