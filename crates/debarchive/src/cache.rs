//! The on-disk cache of archive metadata and packages.
//!
//! Files under the cache directory:
//!
//! ```text
//! debs/sha256/<ab>/<sha256>.deb     packages, named by their content hash
//! indices/<host>/<path>/...         InRelease and Packages files, by key
//! ```
//!
//! Packages are content-addressed: a file reaches its name only through the
//! verified rename in [`crate::fetch`], so a name is a promise about the bytes,
//! and two builds that want the same package share one file. Every write is
//! tmp + fsync + rename + fsync(dir), with temporary names unique per process
//! and call, so concurrent builds sharing one cache never see half a file.
//! That is why the writes here are not `ballast_device::atomic::write_atomic`,
//! whose fixed `<name>.tmp` two builds storing the same key at once would both
//! write into; the directory fsync is that module's (`sync_dir`).
//!
//! The cache never decides trust for metadata: callers store index bytes only
//! after checking them against a signed release, and check them again when
//! loaded if they need to.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use crate::fetch::{is_sha256, sha256_file};
use ballast_device::atomic::sync_dir;

/// Why a cache operation failed. Every variant names the path or key.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{}: {action}: {source}; check that the cache directory is writable and the disk is not full (or choose another cache directory)", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: SHA-256 is {actual}, expected {expected}: the cached file is corrupt; delete it and it will be downloaded again", path.display())]
    Corrupt {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("cache key {key:?} is not allowed: {reason}")]
    BadKey { key: String, reason: &'static str },
}

/// A cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Open (and create if needed) the cache at `dir`.
    pub fn open(dir: &Path) -> Result<Cache, CacheError> {
        fs::create_dir_all(dir).map_err(|source| CacheError::Io {
            path: dir.to_path_buf(),
            action: "creating the cache directory",
            source,
        })?;
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the package with this SHA-256 lives: `<dir>/debs/sha256/<ab>/<sha>.deb`.
    ///
    /// Anything that is not a hex digit is replaced by `_` so a malformed hash
    /// can never name a path outside the cache.
    pub fn deb_path(&self, sha256: &str) -> PathBuf {
        let sha: String = sha256
            .chars()
            .map(|c| {
                if c.is_ascii_hexdigit() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let prefix: String = sha.chars().take(2).collect();
        self.dir
            .join("debs")
            .join("sha256")
            .join(if prefix.is_empty() {
                "_".into()
            } else {
                prefix
            })
            .join(format!("{sha}.deb"))
    }

    /// Cheap check: `path` is a non-empty regular file and, when its name is
    /// a hash (as under [`Cache::deb_path`]), that hash is `sha256`.
    ///
    /// Files only get their final names through a verified rename, so this is
    /// enough in normal operation; call [`Cache::verify`] to re-hash (after a
    /// crash of the machine, or when the cache is shared with untrusted users).
    pub fn has_verified(&self, path: &Path, sha256: &str) -> bool {
        if !is_sha256(sha256) {
            return false;
        }
        let Ok(meta) = fs::symlink_metadata(path) else {
            return false;
        };
        if !meta.is_file() || meta.len() == 0 {
            return false;
        }
        match path.file_stem().and_then(|s| s.to_str()) {
            Some(stem) if is_sha256(stem) => stem.eq_ignore_ascii_case(sha256),
            _ => true,
        }
    }

    /// Full check: re-hash `path` and compare with `sha256`.
    pub fn verify(&self, path: &Path, sha256: &str) -> Result<(), CacheError> {
        let (actual, _) = sha256_file(path).map_err(|source| CacheError::Io {
            path: path.to_path_buf(),
            action: "reading a cached file to verify it",
            source,
        })?;
        if actual.eq_ignore_ascii_case(sha256) {
            Ok(())
        } else {
            Err(CacheError::Corrupt {
                path: path.to_path_buf(),
                expected: sha256.to_ascii_lowercase(),
                actual,
            })
        }
    }

    /// Store `bytes` under `key` (a relative path such as
    /// `indices/<host>/debian/dists/bookworm/InRelease`), atomically.
    pub fn put(&self, key: &str, bytes: &[u8]) -> Result<PathBuf, CacheError> {
        let path = self.key_path(key)?;
        let parent = path.parent().unwrap_or(&self.dir).to_path_buf();
        let io = |path: &Path, action: &'static str| {
            let path = path.to_path_buf();
            move |source| CacheError::Io {
                path,
                action,
                source,
            }
        };
        fs::create_dir_all(&parent).map_err(io(&parent, "creating a cache directory"))?;
        let tmp = tmp_path(&path);
        let result = (|| {
            let mut file = File::create(&tmp).map_err(io(&tmp, "creating a temporary file"))?;
            file.write_all(bytes)
                .map_err(io(&tmp, "writing a temporary file"))?;
            file.sync_all()
                .map_err(io(&tmp, "syncing a temporary file"))?;
            drop(file);
            fs::rename(&tmp, &path).map_err(io(&path, "renaming into place"))?;
            sync_dir(&parent).map_err(|e| io(&parent, "syncing the directory")(e.source))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| path)
    }

    /// Load what [`Cache::put`] stored under `key`; `None` when absent.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.key_path(key)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CacheError::Io {
                path,
                action: "reading a cached file",
                source,
            }),
        }
    }

    /// A stable, filesystem-safe key for a URL: `host/path` with `/` kept, the
    /// scheme dropped, and every byte outside `[A-Za-z0-9._+~-]` (including a
    /// port's `:`) written as `%XX`. Segments `.` and `..` become `%2E` and
    /// `%2E%2E`, empty segments are dropped, so a key never leaves the cache.
    /// `file:///a/b` maps to `_file/a/b`.
    pub fn key_for_url(url: &str) -> String {
        let (local, rest) = match url.split_once("://") {
            Some(("file", rest)) => (true, rest),
            Some((_, rest)) => (false, rest),
            None => (false, url),
        };
        let mut segments: Vec<String> = Vec::new();
        if local {
            segments.push("_file".into());
        }
        for seg in rest.split('/').filter(|s| !s.is_empty()) {
            let encoded = match seg {
                "." => "%2E".to_string(),
                ".." => "%2E%2E".to_string(),
                _ => seg
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"._+~-".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect(),
            };
            segments.push(encoded);
        }
        if segments.is_empty() {
            segments.push("_".into());
        }
        segments.join("/")
    }

    /// Remove partial downloads (`*.part-*`) and temporary files (`*.tmp-*`)
    /// older than `older_than`, left behind by builds that were killed.
    /// Returns how many were removed. Young ones are kept: a concurrent build
    /// may still be writing them.
    pub fn remove_stale_parts(&self, older_than: Duration) -> Result<usize, CacheError> {
        let now = SystemTime::now();
        let mut removed = 0;
        let mut stack = vec![self.dir.clone()];
        while let Some(dir) = stack.pop() {
            let read = fs::read_dir(&dir).map_err(|source| CacheError::Io {
                path: dir.clone(),
                action: "listing a cache directory",
                source,
            })?;
            for entry in read.flatten() {
                let path = entry.path();
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if !(name.contains(".part-") || name.contains(".tmp-")) {
                    continue;
                }
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                if age >= older_than && fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn key_path(&self, key: &str) -> Result<PathBuf, CacheError> {
        let bad = |reason| CacheError::BadKey {
            key: key.to_string(),
            reason,
        };
        if key.is_empty() {
            return Err(bad("it is empty"));
        }
        if key.starts_with('/') {
            return Err(bad("it must be relative to the cache directory"));
        }
        let mut path = self.dir.clone();
        for seg in key.split('/') {
            match seg {
                "" => return Err(bad("it has an empty path segment")),
                "." | ".." => return Err(bad("it has a '.' or '..' segment")),
                s if s.contains('\0') => return Err(bad("it contains a NUL byte")),
                s => path.push(s),
            }
        }
        Ok(path)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn deb_paths_are_content_addressed_and_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let sha = "AB".to_string() + &"0".repeat(62);
        assert_eq!(
            cache.deb_path(&sha),
            dir.path()
                .join("c/debs/sha256/ab")
                .join(format!("ab{}.deb", "0".repeat(62)))
        );
        let evil = cache.deb_path("../../etc/passwd");
        assert!(
            evil.starts_with(dir.path().join("c/debs/sha256")),
            "{evil:?}"
        );
        assert!(!evil.to_string_lossy().contains(".."));
    }

    #[test]
    fn verify_and_has_verified() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let data = b"a package".to_vec();
        let sha = hex::encode(Sha256::digest(&data));
        let path = cache.deb_path(&sha);
        assert!(!cache.has_verified(&path, &sha));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &data).unwrap();
        assert!(cache.has_verified(&path, &sha));
        let other = hex::encode(Sha256::digest(b"x"));
        assert!(!cache.has_verified(&path, &other), "name must match hash");
        cache.verify(&path, &sha).unwrap();

        fs::write(&path, b"tampered").unwrap();
        let err = cache.verify(&path, &sha).unwrap_err();
        assert!(matches!(err, CacheError::Corrupt { .. }));
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn put_get_roundtrip_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let key = "indices/mirror.example/debian/dists/bookworm/InRelease";
        assert_eq!(cache.get(key).unwrap(), None);
        let path = cache.put(key, b"one").unwrap();
        assert_eq!(path, dir.path().join(key));
        assert_eq!(cache.get(key).unwrap().as_deref(), Some(&b"one"[..]));
        cache.put(key, b"two").unwrap();
        assert_eq!(cache.get(key).unwrap().as_deref(), Some(&b"two"[..]));
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary files left: {names:?}");
    }

    #[test]
    fn stale_partial_files_are_removed_and_finished_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let sha = "ab".repeat(32);
        let deb = cache.deb_path(&sha);
        fs::create_dir_all(deb.parent().unwrap()).unwrap();
        fs::write(&deb, b"done").unwrap();
        let part = deb.with_file_name(format!("{sha}.deb.part-123-0"));
        fs::write(&part, b"half").unwrap();
        let tmp = dir.path().join("indices/h/InRelease.tmp-123-4");
        fs::create_dir_all(tmp.parent().unwrap()).unwrap();
        fs::write(&tmp, b"half").unwrap();

        // Young partial files may belong to a running build: kept.
        assert_eq!(
            cache.remove_stale_parts(Duration::from_secs(3600)).unwrap(),
            0
        );
        assert!(part.exists());
        assert_eq!(cache.remove_stale_parts(Duration::ZERO).unwrap(), 2);
        assert!(!part.exists() && !tmp.exists());
        assert!(deb.exists());
    }

    #[test]
    fn bad_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        for key in ["", "/etc/passwd", "a/../../b", "a//b", "./a"] {
            assert!(
                matches!(cache.put(key, b"x"), Err(CacheError::BadKey { .. })),
                "{key:?}"
            );
        }
    }

    #[test]
    fn url_keys_are_stable_and_safe() {
        assert_eq!(
            Cache::key_for_url("http://mirror.example/debian/dists/bookworm/InRelease"),
            "mirror.example/debian/dists/bookworm/InRelease"
        );
        assert_eq!(
            Cache::key_for_url("https://mirror.example:8080/debian//x?y=1"),
            "mirror.example%3A8080/debian/x%3Fy%3D1"
        );
        assert_eq!(
            Cache::key_for_url("http://h/a/../../b/./c"),
            "h/a/%2E%2E/%2E%2E/b/%2E/c"
        );
        assert_eq!(Cache::key_for_url("file:///srv/mirror"), "_file/srv/mirror");
        // Every key is accepted by put() (stays inside the cache).
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        for url in ["http://h/a/../../b", "file:///", "http://", "weird"] {
            let key = Cache::key_for_url(url);
            let path = cache.put(&key, b"x").unwrap();
            assert!(path.starts_with(dir.path()), "{url} -> {path:?}");
        }
    }
}
