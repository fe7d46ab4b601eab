//! The initramfs as an in-memory tree, written as a sorted newc cpio archive and
//! compressed with a method the kernel can unpack.
//!
//! Paths are relative to the archive root (`init`, `lib/modules/...`); a leading `/`
//! is accepted and dropped. Parent directories are created implicitly with mode 0755.
//! The archive lists entries sorted by path, so a parent always precedes its children
//! and the same tree always gives the same bytes.

use std::collections::BTreeMap;
use std::io::Write;

use crate::cpio::{self, CpioError, Entry, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG};
use crate::kconfig::{KernelConfig, Value};

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("initramfs path {path:?}: {message}")]
    Path { path: String, message: String },
    #[error("initramfs path {path:?} added twice (first as {first}, then as {second}); add each path once")]
    Duplicate {
        path: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("initramfs path {path:?}: its parent {parent:?} is a {kind}, not a directory")]
    ParentNotDir {
        path: String,
        parent: String,
        kind: &'static str,
    },
    #[error(transparent)]
    Cpio(#[from] CpioError),
    #[error("initramfs: {method} compression failed: {source}")]
    Compress {
        method: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// How to compress the archive; the kernel must have the matching `CONFIG_RD_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// The smallest output the kernel can unpack: zstd, then xz, then gzip, else none.
    pub fn best_for(config: &KernelConfig) -> Compression {
        if config.get("CONFIG_RD_ZSTD") == Value::Yes {
            Compression::Zstd
        } else if config.get("CONFIG_RD_XZ") == Value::Yes {
            Compression::Xz
        } else if config.get("CONFIG_RD_GZIP") == Value::Yes {
            Compression::Gzip
        } else {
            Compression::None
        }
    }

    /// The level [`Initramfs::write`] uses: gzip 9, xz preset 6, zstd 19.
    pub fn best_level(self) -> u32 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 9,
            Compression::Xz => 6,
            Compression::Zstd => 19,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// Conventional file name suffix, with its dot (`""` for none).
    pub fn extension(&self) -> &str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// `explicit` is false for parents created implicitly.
    Dir {
        mode: u32,
        explicit: bool,
    },
    File {
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        target: String,
    },
    CharDev {
        mode: u32,
        major: u32,
        minor: u32,
    },
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Dir { .. } => "directory",
            Node::File { .. } => "file",
            Node::Symlink { .. } => "symlink",
            Node::CharDev { .. } => "character device",
        }
    }
}

/// An initramfs being assembled. The `add_*` methods never fail: a bad path or a
/// conflict is remembered and returned by [`Initramfs::to_cpio`] / [`Initramfs::write`],
/// so a builder can add everything and check once.
#[derive(Debug, Default)]
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
    errors: Vec<InitramfsError>,
}

fn normalise(path: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err("`..` is not allowed".into()),
            p if p.contains('\0') => return Err("NUL byte in path".into()),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("empty path (the root directory exists already)".into());
    }
    Ok(parts.join("/"))
}

impl Initramfs {
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, path: &str, node: Node) {
        let path = match normalise(path) {
            Ok(p) => p,
            Err(message) => {
                self.errors.push(InitramfsError::Path {
                    path: path.to_string(),
                    message,
                });
                return;
            }
        };
        // Parents: create missing ones, refuse non-directories.
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            end += i + 1;
            match self.nodes.get(parent) {
                None => {
                    self.nodes.insert(
                        parent.to_string(),
                        Node::Dir {
                            mode: 0o755,
                            explicit: false,
                        },
                    );
                }
                Some(Node::Dir { .. }) => {}
                Some(other) => {
                    self.errors.push(InitramfsError::ParentNotDir {
                        path: path.clone(),
                        parent: parent.to_string(),
                        kind: other.kind(),
                    });
                    return;
                }
            }
        }
        match (self.nodes.get(&path), &node) {
            (None, _) => {
                self.nodes.insert(path, node);
            }
            // An implicit parent becomes explicit with the mode asked for.
            (
                Some(Node::Dir {
                    explicit: false, ..
                }),
                Node::Dir { .. },
            ) => {
                self.nodes.insert(path, node);
            }
            (Some(existing), _) => {
                self.errors.push(InitramfsError::Duplicate {
                    path,
                    first: existing.kind(),
                    second: node.kind(),
                });
            }
        }
    }

    /// A directory; `mode` is the permission bits (0o755).
    pub fn add_dir(&mut self, path: &str, mode: u32) {
        self.insert(
            path,
            Node::Dir {
                mode: mode & 0o7777,
                explicit: true,
            },
        );
    }

    /// A regular file; `mode` is the permission bits (0o755 for `init`).
    pub fn add_file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.insert(
            path,
            Node::File {
                mode: mode & 0o7777,
                data,
            },
        );
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) {
        self.insert(
            path,
            Node::Symlink {
                target: target.to_string(),
            },
        );
    }

    /// A character device node (`dev/console`: 5, 1), so the kernel can open the
    /// console before devtmpfs is mounted.
    pub fn add_char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.insert(
            path,
            Node::CharDev {
                mode: mode & 0o7777,
                major,
                minor,
            },
        );
    }

    /// Number of entries, implicit directories included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The uncompressed newc archive, entries sorted by path.
    pub fn to_cpio(&self, mtime: u64) -> Result<Vec<u8>, InitramfsError> {
        if let Some(first) = self.errors.first() {
            return Err(clone_error(first));
        }
        let entries: Vec<Entry> = self
            .nodes
            .iter()
            .map(|(path, node)| {
                let (mode, data, rdev_major, rdev_minor) = match node {
                    Node::Dir { mode, .. } => (S_IFDIR | mode, Vec::new(), 0, 0),
                    Node::File { mode, data } => (S_IFREG | mode, data.clone(), 0, 0),
                    Node::Symlink { target } => (S_IFLNK | 0o777, target.as_bytes().to_vec(), 0, 0),
                    Node::CharDev { mode, major, minor } => {
                        (S_IFCHR | mode, Vec::new(), *major, *minor)
                    }
                };
                Entry {
                    path: path.clone(),
                    mode,
                    data,
                    rdev_major,
                    rdev_minor,
                }
            })
            .collect();
        Ok(cpio::write(&entries, mtime)?)
    }

    /// The archive compressed with `compression`: gzip at level 9 (header time 0),
    /// xz preset 6 with CRC32 checks (the kernel's XZ decoder supports no CRC64 or
    /// SHA-256 check), or zstd level 19, single-threaded so the bytes are reproducible.
    pub fn write(&self, compression: Compression, mtime: u64) -> Result<Vec<u8>, InitramfsError> {
        self.write_at(compression, compression.best_level(), mtime)
    }

    /// [`Initramfs::write`] at another `level` of the method's own scale (gzip
    /// 1-9, xz preset 0-9, zstd 1-19): a quicker one for development builds.
    pub fn write_at(
        &self,
        compression: Compression,
        level: u32,
        mtime: u64,
    ) -> Result<Vec<u8>, InitramfsError> {
        let raw = self.to_cpio(mtime)?;
        compress_at(compression, level, &raw)
    }
}

/// Compress `data` the way [`Initramfs::write`] does.
pub fn compress(compression: Compression, data: &[u8]) -> Result<Vec<u8>, InitramfsError> {
    compress_at(compression, compression.best_level(), data)
}

/// Compress `data` at `level` of the method's own scale.
fn compress_at(
    compression: Compression,
    level: u32,
    data: &[u8],
) -> Result<Vec<u8>, InitramfsError> {
    let method: &'static str = match compression {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
    };
    let err = |source: std::io::Error| InitramfsError::Compress { method, source };
    match compression {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::new(level.min(9)));
            enc.write_all(data).map_err(err)?;
            enc.finish().map_err(err)
        }
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_easy_encoder(
                level.min(9),
                liblzma::stream::Check::Crc32,
            )
            .map_err(|e| err(std::io::Error::other(e)))?;
            let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
            enc.write_all(data).map_err(err)?;
            enc.finish().map_err(err)
        }
        Compression::Zstd => zstd::bulk::compress(data, level.clamp(1, 19) as i32).map_err(err),
    }
}

/// Errors recorded by `add_*` are only the path variants, which hold plain data.
fn clone_error(e: &InitramfsError) -> InitramfsError {
    match e {
        InitramfsError::Path { path, message } => InitramfsError::Path {
            path: path.clone(),
            message: message.clone(),
        },
        InitramfsError::Duplicate {
            path,
            first,
            second,
        } => InitramfsError::Duplicate {
            path: path.clone(),
            first,
            second,
        },
        InitramfsError::ParentNotDir { path, parent, kind } => InitramfsError::ParentNotDir {
            path: path.clone(),
            parent: parent.clone(),
            kind,
        },
        other => InitramfsError::Path {
            path: String::new(),
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn best_compression_follows_rd_options() {
        let c = |t: &str| KernelConfig::parse(t, Path::new("c")).unwrap();
        assert_eq!(
            Compression::best_for(&c("CONFIG_RD_GZIP=y\nCONFIG_RD_XZ=y\nCONFIG_RD_ZSTD=y\n")),
            Compression::Zstd
        );
        assert_eq!(
            Compression::best_for(&c("CONFIG_RD_GZIP=y\nCONFIG_RD_XZ=y\n")),
            Compression::Xz
        );
        assert_eq!(
            Compression::best_for(&c("CONFIG_RD_GZIP=y\n")),
            Compression::Gzip
        );
        assert_eq!(Compression::best_for(&c("")), Compression::None);
    }

    #[test]
    fn conflicts_and_bad_paths_are_reported() {
        let mut i = Initramfs::new();
        i.add_file("etc/x", 0o644, vec![]);
        i.add_file("/etc/x", 0o644, vec![]);
        let err = i.to_cpio(0).unwrap_err();
        assert!(err.to_string().contains("\"etc/x\" added twice"), "{err}");

        let mut i = Initramfs::new();
        i.add_file("init", 0o755, vec![]);
        i.add_file("init/x", 0o644, vec![]);
        assert!(matches!(
            i.to_cpio(0).unwrap_err(),
            InitramfsError::ParentNotDir { .. }
        ));

        let mut i = Initramfs::new();
        i.add_file("../etc/passwd", 0o644, vec![]);
        assert!(i.to_cpio(0).unwrap_err().to_string().contains("`..`"));
    }

    #[test]
    fn explicit_dir_mode_overrides_implicit_parent() {
        let mut i = Initramfs::new();
        i.add_file("run/x", 0o644, vec![]);
        i.add_dir("run", 0o700);
        assert_eq!(i.len(), 2);
        let out = i.to_cpio(0).unwrap();
        // First entry is "run" with mode 040700.
        assert_eq!(&out[14..22], b"000041c0");
    }
}
