//! Unpacking `.deb` files without root.
//!
//! A `.deb` is an `ar` archive: `debian-binary` ("2.0"), `control.tar.*`, then
//! `data.tar.*` (xz, zstd, gzip or plain). This module streams `data.tar`
//! straight from the `.deb` into a directory: nothing is buffered whole, and
//! nothing is run (no maintainer scripts).
//!
//! What it must never do:
//! - write outside `dest`: `..` components are refused, and a parent directory
//!   that is a symlink is followed only when it is relative and stays inside
//!   `dest` (so merged-/usr links like `bin -> usr/bin` work); an absolute
//!   symlink as a parent is refused;
//! - need root: ownership is not applied and device nodes are not created. Both
//!   are recorded in the returned [`Manifest`], which image writers use to set
//!   uid/gid/mode/devices inside the filesystem image;
//! - run code from the package.
//!
//! Modes (including setuid/setgid) are applied to files and directories on
//! disk; directory modes are applied last so a read-only directory does not
//! stop its own children from being written.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::{self, File, FileTimes};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What kind of thing an [`Entry`] is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
    /// A symlink; `target` is exactly what the package stores (may be absolute).
    Symlink {
        target: PathBuf,
    },
    /// A hard link to an earlier entry; `target` is relative to the root.
    Hardlink {
        target: PathBuf,
    },
    /// Recorded only: not created on disk.
    CharDev {
        major: u32,
        minor: u32,
    },
    /// Recorded only: not created on disk.
    BlockDev {
        major: u32,
        minor: u32,
    },
    /// Recorded only: not created on disk.
    Fifo,
}

/// One path the package installs, as the package says it should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the root, no leading `./` or `/`.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub uname: String,
    pub gname: String,
    /// Bytes of content for regular files, 0 otherwise.
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: u64,
}

/// Everything [`unpack_deb`] wrote (or recorded), in archive order; a path
/// that occurs twice keeps its first position and its last contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub entries: Vec<Entry>,
}

/// Why reading or unpacking a `.deb` failed. Every variant names the `.deb`.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{}: cannot open: {source}", deb.display())]
    Open {
        deb: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a Debian package: {reason}; check the file is a complete .deb", deb.display())]
    NotDeb { deb: PathBuf, reason: String },
    #[error("{}: debian-binary says {found:?}, expected \"2.0\"; this .deb format version is not supported", deb.display())]
    Format { deb: PathBuf, found: String },
    #[error("{}: no {member}.* member; the .deb is truncated or not a binary package: delete it and download it again", deb.display())]
    MissingMember { deb: PathBuf, member: &'static str },
    #[error("{}: member {member}: unsupported compression; Ballast reads .xz, .zst, .gz and uncompressed tar", deb.display())]
    Compression { deb: PathBuf, member: String },
    #[error("{}: member {member}: {source}; the .deb is truncated or corrupt: delete it and download it again", deb.display())]
    Corrupt {
        deb: PathBuf,
        member: String,
        #[source]
        source: io::Error,
    },
    #[error("{}: member {member}: entry {entry:?}: {reason}; refusing to unpack it", deb.display())]
    Unsafe {
        deb: PathBuf,
        member: String,
        entry: String,
        reason: String,
    },
    #[error("{}: member {member}: entry {entry:?}: hard link to {target:?}, which was not unpacked (filtered out or not a regular file); keep both paths in the filter", deb.display())]
    Hardlink {
        deb: PathBuf,
        member: String,
        entry: String,
        target: String,
    },
    #[error("{}: member {member}: entry {entry:?}: {action} {}: {source}; check that the destination is writable and the disk is not full", deb.display(), path.display())]
    Write {
        deb: PathBuf,
        member: String,
        entry: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: member {member}: no ./control file; the package is malformed", deb.display())]
    NoControl { deb: PathBuf, member: String },
    #[error("{}: the unpacked copy {} of this package does not match its manifest at {entry:?}: {reason}; delete {} and build again", deb.display(), tree.display(), tree.display())]
    Copy {
        deb: PathBuf,
        tree: PathBuf,
        entry: String,
        reason: String,
    },
}

/// Unpack `data.tar.{xz,zst,gz,}` of `deb` into `dest` (created if missing).
///
/// Keeps modes, symlinks and hard links; does not chown and creates no device
/// nodes (both recorded in the manifest); refuses paths escaping `dest`.
/// `keep` filters by relative path: returning false skips that entry (for a
/// directory, its children are still offered to `keep`).
pub fn unpack_deb(
    deb: &Path,
    dest: &Path,
    keep: &dyn Fn(&Path) -> bool,
) -> Result<Manifest, UnpackError> {
    with_member(deb, "data.tar", |member, reader| {
        let mut unpacker = Unpacker::new(deb, member, dest)?;
        unpacker.run(reader, keep)?;
        unpacker.finish()
    })
}

/// Lay out in `dest` what [`unpack_deb`]`(deb, dest, keep)` would, from
/// `tree` and `manifest`: what an earlier `unpack_deb(deb, tree, &|_| true)`
/// made and returned (a cache of unpacked packages). The entries go down in
/// the manifest's order through the same checks as a `.deb`'s (paths stay in
/// `dest`, a directory where a symlink to one exists keeps the symlink, hard
/// links need their target), so only reading the tar stream is skipped. A file
/// of `tree` that is missing or not the manifest's size is an error that
/// names `tree`.
pub fn unpack_from_tree(
    deb: &Path,
    tree: &Path,
    manifest: &Manifest,
    dest: &Path,
    keep: &dyn Fn(&Path) -> bool,
) -> Result<Manifest, UnpackError> {
    let mut unpacker = Unpacker::new(deb, "data.tar", dest)?;
    let copy_err = |entry: &Entry, reason: String| UnpackError::Copy {
        deb: deb.to_path_buf(),
        tree: tree.to_path_buf(),
        entry: entry.path.display().to_string(),
        reason,
    };
    for entry in manifest.entries.iter().filter(|e| keep(&e.path)) {
        let safe =
            normalize(&entry.path).map_err(|reason| unpacker.unsafe_entry(&entry.path, reason))?;
        if safe != entry.path || safe.as_os_str().is_empty() {
            return Err(unpacker.unsafe_entry(&entry.path, "not a normal relative path".into()));
        }
        if entry.kind == EntryKind::File {
            let source = tree.join(&entry.path);
            let mut file = File::open(&source).map_err(|e| copy_err(entry, e.to_string()))?;
            let len = file
                .metadata()
                .map_err(|e| copy_err(entry, e.to_string()))?
                .len();
            if len != entry.size {
                return Err(copy_err(
                    entry,
                    format!("{len} bytes, the manifest says {}", entry.size),
                ));
            }
            unpacker.place(&entry.path, &entry.kind, entry.mode, entry.mtime, &mut file)?;
        } else {
            unpacker.place(
                &entry.path,
                &entry.kind,
                entry.mode,
                entry.mtime,
                &mut io::empty(),
            )?;
        }
        unpacker.record(entry.clone());
    }
    unpacker.finish()
}

/// The text of the `control` file (from `control.tar.{xz,zst,gz,}`).
pub fn read_control(deb: &Path) -> Result<String, UnpackError> {
    with_member(deb, "control.tar", |member, reader| {
        let corrupt = |source| UnpackError::Corrupt {
            deb: deb.to_path_buf(),
            member: member.to_string(),
            source,
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let path = entry.path().map_err(corrupt)?.into_owned();
            let is_control = path
                .components()
                .filter(|c| !matches!(c, Component::CurDir | Component::RootDir))
                .eq([Component::Normal("control".as_ref())]);
            if is_control && entry.header().entry_type().is_file() {
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(16 << 20)
                    .read_to_end(&mut bytes)
                    .map_err(corrupt)?;
                return String::from_utf8(bytes).map_err(|e| {
                    corrupt(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("control file is not UTF-8: {e}"),
                    ))
                });
            }
        }
        Err(UnpackError::NoControl {
            deb: deb.to_path_buf(),
            member: member.to_string(),
        })
    })
}

/// Open `deb`, check its ar magic and `debian-binary`, find the member whose
/// name starts with `prefix` and hand `f` a decompressing reader for it.
fn with_member<T>(
    deb: &Path,
    prefix: &'static str,
    f: impl FnOnce(&str, &mut dyn Read) -> Result<T, UnpackError>,
) -> Result<T, UnpackError> {
    let not_deb = |reason: String| UnpackError::NotDeb {
        deb: deb.to_path_buf(),
        reason,
    };
    let file = File::open(deb).map_err(|source| UnpackError::Open {
        deb: deb.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .map_err(|e| not_deb(format!("cannot read the ar header: {e}")))?;
    if &magic != b"!<arch>\n" {
        return Err(not_deb("no ar archive magic (\"!<arch>\")".into()));
    }
    let mut archive = ar::Archive::new(io::Cursor::new(magic).chain(reader));

    let mut first = true;
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(|e| not_deb(format!("bad ar member header: {e}")))?;
        let name = member_name(entry.header().identifier());
        let size = entry.header().size();
        let mut body = Exact {
            inner: entry,
            remaining: size,
        };
        if first {
            first = false;
            if name != "debian-binary" {
                return Err(not_deb(format!(
                    "first member is {name:?}, expected \"debian-binary\""
                )));
            }
            let mut text = String::new();
            (&mut body)
                .take(64)
                .read_to_string(&mut text)
                .map_err(|source| UnpackError::Corrupt {
                    deb: deb.to_path_buf(),
                    member: name.clone(),
                    source,
                })?;
            let version = text.lines().next().unwrap_or("").trim().to_string();
            let major_ok = version.split_once('.').is_some_and(|(major, minor)| {
                major == "2" && minor.bytes().all(|b| b.is_ascii_digit())
            });
            if !major_ok {
                return Err(UnpackError::Format {
                    deb: deb.to_path_buf(),
                    found: version,
                });
            }
            continue;
        }
        let Some(suffix) = name.strip_prefix(prefix) else {
            continue;
        };
        let corrupt = |source| UnpackError::Corrupt {
            deb: deb.to_path_buf(),
            member: name.clone(),
            source,
        };
        let mut decoded: Box<dyn Read + '_> = match suffix {
            "" => Box::new(body),
            ".xz" => Box::new(liblzma::read::XzDecoder::new(body)),
            ".zst" => Box::new(zstd::stream::read::Decoder::new(body).map_err(corrupt)?),
            ".gz" => Box::new(flate2::read::GzDecoder::new(body)),
            _ => {
                return Err(UnpackError::Compression {
                    deb: deb.to_path_buf(),
                    member: name,
                })
            }
        };
        return f(&name, &mut decoded);
    }
    if first {
        return Err(not_deb("empty ar archive".into()));
    }
    Err(UnpackError::MissingMember {
        deb: deb.to_path_buf(),
        member: prefix,
    })
}

/// ar member names may be padded with spaces or end in `/` (GNU style).
fn member_name(id: &[u8]) -> String {
    let s = String::from_utf8_lossy(id);
    s.trim_end_matches(' ').trim_end_matches('/').to_string()
}

/// A reader that turns an early end of the underlying member into an error,
/// so a truncated .deb is reported as truncated, not as a short package.
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "file ends {} bytes before the end of the member",
                    self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Normalise a tar path: drop `./` and a leading `/`; `..` is an error.
fn normalize(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir | Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err("path contains '..'".into()),
            Component::Prefix(_) => return Err("path has a drive prefix".into()),
        }
    }
    Ok(out)
}

enum ResolveError {
    Unsafe(String),
    Io(PathBuf, io::Error),
}

/// Find (creating missing directories, mode 0755) the on-disk directory for
/// the relative directory `rel` under `dest`, following relative symlinks as
/// long as they stay inside `dest`.
fn resolve_dir(dest: &Path, rel: &Path) -> Result<PathBuf, ResolveError> {
    let mut queue: VecDeque<OsString> = rel
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut cur = dest.to_path_buf();
    let mut depth = 0usize;
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        if c == "." || c == "/" {
            continue;
        }
        if c == ".." {
            if depth == 0 {
                return Err(ResolveError::Unsafe(format!(
                    "a symlink in {} leads outside the destination",
                    rel.display()
                )));
            }
            cur.pop();
            depth -= 1;
            continue;
        }
        let candidate = cur.join(&c);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(ResolveError::Unsafe(format!(
                        "too many levels of symbolic links under {}",
                        rel.display()
                    )));
                }
                let target = fs::read_link(&candidate)
                    .map_err(|e| ResolveError::Io(candidate.clone(), e))?;
                if target.is_absolute() {
                    return Err(ResolveError::Unsafe(format!(
                        "parent directory {} is a symlink to the absolute path {}",
                        candidate.display(),
                        target.display()
                    )));
                }
                for comp in target.components().rev() {
                    queue.push_front(comp.as_os_str().to_os_string());
                }
            }
            Ok(m) if m.is_dir() => {
                cur = candidate;
                depth += 1;
            }
            Ok(_) => {
                return Err(ResolveError::Unsafe(format!(
                    "parent {} exists and is not a directory",
                    candidate.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&candidate)
                    .map_err(|e| ResolveError::Io(candidate.clone(), e))?;
                cur = candidate;
                depth += 1;
            }
            Err(e) => return Err(ResolveError::Io(candidate, e)),
        }
    }
    Ok(cur)
}

struct Unpacker<'a> {
    deb: &'a Path,
    member: &'a str,
    dest: &'a Path,
    manifest: Manifest,
    /// Manifest position of each path, so a repeated path replaces its entry.
    index: HashMap<PathBuf, usize>,
    /// Regular files written, valid hard-link targets.
    files: HashSet<PathBuf>,
    /// Directories and the mode/mtime to give them once everything is written.
    dirs: Vec<(PathBuf, u32, u64)>,
}

impl<'a> Unpacker<'a> {
    /// An unpacker into `dest`, which is created if missing.
    fn new(deb: &'a Path, member: &'a str, dest: &'a Path) -> Result<Self, UnpackError> {
        fs::create_dir_all(dest).map_err(|source| UnpackError::Write {
            deb: deb.to_path_buf(),
            member: String::new(),
            entry: String::new(),
            action: "creating",
            path: dest.to_path_buf(),
            source,
        })?;
        Ok(Unpacker {
            deb,
            member,
            dest,
            manifest: Manifest::default(),
            index: HashMap::new(),
            files: HashSet::new(),
            dirs: Vec::new(),
        })
    }

    fn corrupt(&self, source: io::Error) -> UnpackError {
        UnpackError::Corrupt {
            deb: self.deb.to_path_buf(),
            member: self.member.to_string(),
            source,
        }
    }

    fn unsafe_entry(&self, entry: &Path, reason: String) -> UnpackError {
        UnpackError::Unsafe {
            deb: self.deb.to_path_buf(),
            member: self.member.to_string(),
            entry: entry.display().to_string(),
            reason,
        }
    }

    fn write_err(
        &self,
        entry: &Path,
        action: &'static str,
        path: &Path,
        source: io::Error,
    ) -> UnpackError {
        UnpackError::Write {
            deb: self.deb.to_path_buf(),
            member: self.member.to_string(),
            entry: entry.display().to_string(),
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    fn run(
        &mut self,
        reader: &mut dyn Read,
        keep: &dyn Fn(&Path) -> bool,
    ) -> Result<(), UnpackError> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| self.corrupt(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.corrupt(e))?;
            let raw = entry.path().map_err(|e| self.corrupt(e))?.into_owned();
            let rel = normalize(&raw).map_err(|reason| self.unsafe_entry(&raw, reason))?;
            let header = entry.header();
            let ty = header.entry_type();
            if rel.as_os_str().is_empty() {
                // "./" itself: the destination root, which the caller owns.
                continue;
            }
            if matches!(
                ty,
                tar::EntryType::XGlobalHeader
                    | tar::EntryType::XHeader
                    | tar::EntryType::GNULongName
                    | tar::EntryType::GNULongLink
            ) {
                continue;
            }
            if !keep(&rel) {
                continue;
            }
            let num = |r: io::Result<u64>, what: &str| -> Result<u32, UnpackError> {
                let v = r.map_err(|e| self.corrupt(e))?;
                u32::try_from(v).map_err(|_| {
                    self.unsafe_entry(&raw, format!("{what} {v} does not fit in 32 bits"))
                })
            };
            let mode = num(header.mode().map(u64::from), "mode")? & 0o7777;
            let uid = num(header.uid(), "uid")?;
            let gid = num(header.gid(), "gid")?;
            let uname =
                String::from_utf8_lossy(header.username_bytes().unwrap_or_default()).into_owned();
            let gname =
                String::from_utf8_lossy(header.groupname_bytes().unwrap_or_default()).into_owned();
            let mtime = header.mtime().map_err(|e| self.corrupt(e))?;
            let device = |h: &tar::Header| -> Result<(u32, u32), UnpackError> {
                let major = h.device_major().map_err(|e| self.corrupt(e))?.unwrap_or(0);
                let minor = h.device_minor().map_err(|e| self.corrupt(e))?.unwrap_or(0);
                Ok((major, minor))
            };
            let link = || -> Result<PathBuf, UnpackError> {
                entry
                    .link_name()
                    .map_err(|e| self.corrupt(e))?
                    .map(|p| p.into_owned())
                    .ok_or_else(|| self.unsafe_entry(&raw, "link without a target".into()))
            };
            let kind = match ty {
                tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
                tar::EntryType::Directory => EntryKind::Dir,
                tar::EntryType::Symlink => EntryKind::Symlink { target: link()? },
                tar::EntryType::Link => {
                    let target = link()?;
                    let target = normalize(&target).map_err(|reason| {
                        self.unsafe_entry(&raw, format!("hard link target: {reason}"))
                    })?;
                    EntryKind::Hardlink { target }
                }
                tar::EntryType::Char => {
                    let (major, minor) = device(header)?;
                    EntryKind::CharDev { major, minor }
                }
                tar::EntryType::Block => {
                    let (major, minor) = device(header)?;
                    EntryKind::BlockDev { major, minor }
                }
                tar::EntryType::Fifo => EntryKind::Fifo,
                other => {
                    return Err(self.unsafe_entry(
                        &raw,
                        format!("unsupported tar entry type {:?}", other.as_byte() as char),
                    ))
                }
            };
            let size = if kind == EntryKind::File {
                entry.size()
            } else {
                0
            };
            self.place(&rel, &kind, mode, mtime, &mut entry)?;
            self.record(Entry {
                path: rel,
                kind,
                mode,
                uid,
                gid,
                uname,
                gname,
                size,
                mtime,
            });
        }
        Ok(())
    }

    fn record(&mut self, entry: Entry) {
        match self.index.get(&entry.path) {
            Some(&i) => self.manifest.entries[i] = entry,
            None => {
                self.index
                    .insert(entry.path.clone(), self.manifest.entries.len());
                self.manifest.entries.push(entry);
            }
        }
    }

    /// Write one entry to disk (devices and fifos are only recorded).
    fn place(
        &mut self,
        rel: &Path,
        kind: &EntryKind,
        mode: u32,
        mtime: u64,
        data: &mut dyn Read,
    ) -> Result<(), UnpackError> {
        if matches!(
            kind,
            EntryKind::CharDev { .. } | EntryKind::BlockDev { .. } | EntryKind::Fifo
        ) {
            return Ok(());
        }
        let name = rel
            .file_name()
            .ok_or_else(|| self.unsafe_entry(rel, "no file name".into()))?;
        let parent = self.resolve(rel, rel.parent().unwrap_or(Path::new("")))?;
        let path = parent.join(name);
        self.files.remove(rel);

        // What is already there is replaced, never followed.
        let existing = match fs::symlink_metadata(&path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.write_err(rel, "inspecting", &path, e)),
        };
        if let Some(m) = &existing {
            if m.file_type().is_symlink() && *kind == EntryKind::Dir {
                // Like dpkg: a directory entry where a symlink to a directory
                // exists (merged /usr: `bin -> usr/bin`) keeps the symlink, as
                // long as it resolves to a directory inside `dest`.
                self.resolve(rel, rel)?;
                return Ok(());
            }
            let is_dir = m.is_dir() && !m.file_type().is_symlink();
            match (is_dir, kind) {
                (true, EntryKind::Dir) => {}
                (true, _) => {
                    return Err(self.unsafe_entry(
                        rel,
                        format!("a directory already exists at {}", path.display()),
                    ))
                }
                (false, _) => fs::remove_file(&path)
                    .map_err(|e| self.write_err(rel, "replacing", &path, e))?,
            }
        }

        match kind {
            EntryKind::Dir => {
                if existing.as_ref().is_none_or(|m| !m.is_dir()) {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&path)
                        .map_err(|e| self.write_err(rel, "creating directory", &path, e))?;
                }
                self.dirs.push((path, mode, mtime));
            }
            EntryKind::File => {
                let mut file = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| self.write_err(rel, "creating", &path, e))?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match data.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(self.corrupt(e)),
                    };
                    file.write_all(&buf[..n])
                        .map_err(|e| self.write_err(rel, "writing", &path, e))?;
                }
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|e| self.write_err(rel, "setting the mode of", &path, e))?;
                file.set_times(
                    FileTimes::new().set_modified(UNIX_EPOCH + Duration::from_secs(mtime)),
                )
                .map_err(|e| self.write_err(rel, "setting the mtime of", &path, e))?;
                self.files.insert(rel.to_path_buf());
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &path)
                    .map_err(|e| self.write_err(rel, "creating symlink", &path, e))?;
            }
            EntryKind::Hardlink { target } => {
                let hardlink_err = || UnpackError::Hardlink {
                    deb: self.deb.to_path_buf(),
                    member: self.member.to_string(),
                    entry: rel.display().to_string(),
                    target: target.display().to_string(),
                };
                if !self.files.contains(target) {
                    return Err(hardlink_err());
                }
                let tname = target.file_name().ok_or_else(hardlink_err)?;
                let tparent = self.resolve(rel, target.parent().unwrap_or(Path::new("")))?;
                let tpath = tparent.join(tname);
                match fs::symlink_metadata(&tpath) {
                    Ok(m) if m.is_file() => {}
                    _ => return Err(hardlink_err()),
                }
                fs::hard_link(&tpath, &path)
                    .map_err(|e| self.write_err(rel, "creating hard link", &path, e))?;
                self.files.insert(rel.to_path_buf());
            }
            EntryKind::CharDev { .. } | EntryKind::BlockDev { .. } | EntryKind::Fifo => {}
        }
        Ok(())
    }

    fn resolve(&self, entry: &Path, dir: &Path) -> Result<PathBuf, UnpackError> {
        resolve_dir(self.dest, dir).map_err(|e| match e {
            ResolveError::Unsafe(reason) => self.unsafe_entry(entry, reason),
            ResolveError::Io(path, source) => {
                self.write_err(entry, "creating parent directory", &path, source)
            }
        })
    }

    /// Apply directory modes and mtimes, deepest first, and return the manifest.
    fn finish(mut self) -> Result<Manifest, UnpackError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (path, mode, mtime) in dirs.iter().rev() {
            let rel = path.strip_prefix(self.dest).unwrap_or(path);
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(|e| self.write_err(rel, "setting the mode of", path, e))?;
            if let Ok(dir) = File::open(path) {
                // Best effort: a directory without read permission cannot be
                // opened here, and its mtime matters to nobody.
                let _ = dir.set_times(
                    FileTimes::new().set_modified(UNIX_EPOCH + Duration::from_secs(*mtime)),
                );
            }
        }
        Ok(self.manifest)
    }
}
