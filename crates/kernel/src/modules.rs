//! Kernel modules of one kernel (`/lib/modules/KVER`): which files stage 1 needs for a
//! list of module names, dependencies first.
//!
//! An installed kernel has `modules.dep`, written by `depmod`. A kernel unpacked from
//! a Debian `linux-image-*` package has not (the package's postinst runs depmod), so
//! without `modules.dep` the modules are found by file name under `kernel/` and each
//! one's dependencies are read from its `.modinfo` ELF section (`depends=`), which is
//! what depmod itself reads. Soft dependencies (`softdep=`) are not followed: they name
//! aliases, not modules, so `kernel-configs/initramfs-modules.toml` lists them.
//!
//! Module names are compared with `-` and `_` as the same character, as the kernel does.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: expected `path/to/module.ko: dependency.ko ...` (line: {text:?})", path.display())]
    DepSyntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{}: neither modules.dep nor any *.ko module under kernel/; is this a /lib/modules/KVER directory?", dir.display())]
    NoModules { dir: PathBuf },
    #[error("module {name:?} is not in {} and not built in (modules.builtin); check the name (see modules.order) or the kernel config", source_path.display())]
    Unknown { name: String, source_path: PathBuf },
    #[error("module {module:?} depends on {dependency:?}, which is not in {} and not built in", source_path.display())]
    UnknownDependency {
        module: String,
        dependency: String,
        source_path: PathBuf,
    },
    #[error("modules depend on each other in a cycle: {}", chain.join(" -> "))]
    Cycle { chain: Vec<String> },
    #[error("{}: not a kernel module: {message}", path.display())]
    NotAModule { path: PathBuf, message: String },
    #[error("{}: cannot decompress ({method}): {source}", path.display())]
    Decompress {
        path: PathBuf,
        method: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The kernel's spelling-insensitive module name: `dm-verity` and `dm_verity` are one.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

const MODULE_SUFFIXES: &[&str] = &[".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// The module name of a file path (`kernel/fs/nls/nls_iso8859-1.ko.xz` →
/// `nls_iso8859_1`), or None when the file is not a module.
fn name_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    MODULE_SUFFIXES
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .filter(|stem| !stem.is_empty())
        .map(normalise)
}

#[derive(Debug, Clone)]
struct Module {
    /// Relative to the modules directory.
    path: PathBuf,
    /// From modules.dep; None when it has to be read from the module itself.
    deps: Option<Vec<String>>,
}

/// The modules of one kernel.
#[derive(Debug, Clone)]
pub struct ModuleDb {
    dir: PathBuf,
    /// `modules.dep`, or the directory when the modules were scanned.
    source: PathBuf,
    modules: BTreeMap<String, Module>,
    builtin: BTreeSet<String>,
}

fn read_optional(path: &Path) -> Result<Option<String>, ModulesError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ModulesError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn scan(dir: &Path, rel: &Path, out: &mut BTreeMap<String, Module>) -> Result<(), ModulesError> {
    let full = dir.join(rel);
    let read_err = |source| ModulesError::Read {
        path: full.clone(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(&full)
        .map_err(read_err)?
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel_child = rel.join(entry.file_name());
        let kind = entry.file_type().map_err(read_err)?;
        if kind.is_dir() {
            scan(dir, &rel_child, out)?;
        } else if let Some(name) = name_of(&rel_child) {
            out.entry(name).or_insert(Module {
                path: rel_child,
                deps: None,
            });
        }
    }
    Ok(())
}

impl ModuleDb {
    /// Load the modules of `modules_dir` (`.../lib/modules/KVER`): `modules.dep` when
    /// present, else the `*.ko*` files under `kernel/`; plus `modules.builtin`.
    pub fn load(modules_dir: &Path) -> Result<ModuleDb, ModulesError> {
        let builtin = read_optional(&modules_dir.join("modules.builtin"))?
            .unwrap_or_default()
            .lines()
            .filter_map(|l| name_of(Path::new(l.trim())))
            .collect();
        let dep_path = modules_dir.join("modules.dep");
        let (source, modules) = match read_optional(&dep_path)? {
            Some(text) => {
                let modules = Self::parse_dep(&text, &dep_path)?;
                (dep_path, modules)
            }
            None => {
                let mut modules = BTreeMap::new();
                let kernel = modules_dir.join("kernel");
                if kernel.is_dir() {
                    scan(modules_dir, Path::new("kernel"), &mut modules)?;
                }
                if modules.is_empty() {
                    return Err(ModulesError::NoModules {
                        dir: modules_dir.to_path_buf(),
                    });
                }
                (modules_dir.to_path_buf(), modules)
            }
        };
        Ok(ModuleDb {
            dir: modules_dir.to_path_buf(),
            source,
            modules,
            builtin,
        })
    }

    fn parse_dep(text: &str, path: &Path) -> Result<BTreeMap<String, Module>, ModulesError> {
        let mut modules = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = || ModulesError::DepSyntax {
                path: path.to_path_buf(),
                line: i + 1,
                text: line.to_string(),
            };
            let (module, deps) = line.split_once(':').ok_or_else(bad)?;
            let module = PathBuf::from(module.trim());
            let name = name_of(&module).ok_or_else(bad)?;
            let deps = deps
                .split_whitespace()
                .map(|d| name_of(Path::new(d)).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()?;
            modules.insert(
                name,
                Module {
                    path: module,
                    deps: Some(deps),
                },
            );
        }
        Ok(modules)
    }

    /// The modules directory this database describes.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the dependencies come from: `modules.dep`, or the directory when scanned.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Number of loadable (not built-in) modules.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalise(name))
    }

    /// The module file of `name`, relative to the modules directory.
    pub fn path_of(&self, name: &str) -> Option<&Path> {
        self.modules.get(&normalise(name)).map(|m| m.path.as_path())
    }

    /// Direct dependencies of a known module.
    fn deps_of(&self, module: &Module) -> Result<Vec<String>, ModulesError> {
        if let Some(deps) = &module.deps {
            return Ok(deps.clone());
        }
        let path = self.dir.join(&module.path);
        let bytes = std::fs::read(&path).map_err(|source| ModulesError::Read {
            path: path.clone(),
            source,
        })?;
        let (_, bytes) = decompress(&path, &bytes)?;
        let info = modinfo(&bytes).map_err(|message| ModulesError::NotAModule {
            path: path.clone(),
            message,
        })?;
        Ok(info
            .iter()
            .filter(|(k, _)| k == "depends")
            .flat_map(|(_, v)| v.split(','))
            .filter(|d| !d.is_empty())
            .map(normalise)
            .collect())
    }

    /// Files to load for `names`, relative to the modules directory, each after the
    /// modules it depends on, each once. Built-in modules are skipped.
    pub fn closure(&self, names: &[String]) -> Result<Vec<PathBuf>, ModulesError> {
        Ok(self
            .ordered(names)?
            .into_iter()
            .map(|(_, path)| path)
            .collect())
    }

    /// [`ModuleDb::closure`] in waves: wave 0 holds the modules that depend
    /// on no other module of the list, wave N those whose deepest dependency
    /// is in wave N-1. A wave's modules may load in any order, or together.
    ///
    /// Crypto algorithm modules (under a `crypto/` directory) and what they
    /// depend on come in waves of their own, before all the others: a module
    /// asks for an algorithm by name when it starts (`libcrc32c` for
    /// "crc32c", dm-verity for "sha256"), a soft dependency that `depends=`
    /// does not name, and stage 1 has no modprobe to load it on demand.
    pub fn waves(&self, names: &[String]) -> Result<Vec<Vec<PathBuf>>, ModulesError> {
        let ordered = self.ordered(names)?;
        // The algorithms and their dependencies: dependencies come before
        // their users in `ordered`, so walking it backwards marks them all.
        let mut first: BTreeSet<String> = BTreeSet::new();
        for (name, path) in ordered.iter().rev() {
            if first.contains(name) || is_algorithm(path) {
                first.insert(name.clone());
                if let Some(module) = self.modules.get(name) {
                    first.extend(self.deps_of(module)?);
                }
            }
        }
        let mut depth: BTreeMap<String, usize> = BTreeMap::new();
        let mut waves: Vec<Vec<PathBuf>> = Vec::new();
        for phase_one in [true, false] {
            // The second phase starts after the first one's last wave.
            let start = if phase_one { 0 } else { waves.len() };
            for (name, path) in ordered
                .iter()
                .filter(|(n, _)| first.contains(n) == phase_one)
            {
                let mut d = start;
                if let Some(module) = self.modules.get(name) {
                    for dep in self.deps_of(module)? {
                        if let Some(dd) = depth.get(&dep) {
                            d = d.max(dd + 1);
                        }
                    }
                }
                depth.insert(name.clone(), d);
                if waves.len() <= d {
                    waves.resize_with(d + 1, Vec::new);
                }
                waves[d].push(path.clone());
            }
        }
        Ok(waves)
    }

    /// The waves of `names`' closure without the modules of `loaded` (loaded
    /// before these, so a dependency among them counts as met): each
    /// module in the first wave after all of its dependencies that are not.
    pub fn waves_after(
        &self,
        names: &[String],
        loaded: &[Vec<PathBuf>],
    ) -> Result<Vec<Vec<PathBuf>>, ModulesError> {
        let before: BTreeSet<&PathBuf> = loaded.iter().flatten().collect();
        let mut depth: BTreeMap<String, usize> = BTreeMap::new();
        let mut waves: Vec<Vec<PathBuf>> = Vec::new();
        for (name, path) in self.ordered(names)? {
            if before.contains(&path) {
                continue;
            }
            let mut d = 0;
            if let Some(module) = self.modules.get(&name) {
                for dep in self.deps_of(module)? {
                    if let Some(dd) = depth.get(&dep) {
                        d = d.max(dd + 1);
                    }
                }
            }
            depth.insert(name, d);
            if waves.len() <= d {
                waves.resize_with(d + 1, Vec::new);
            }
            waves[d].push(path);
        }
        Ok(waves)
    }

    /// The closure as (module name, file), each after its dependencies.
    fn ordered(&self, names: &[String]) -> Result<Vec<(String, PathBuf)>, ModulesError> {
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut out = Vec::new();
        for name in names {
            let n = normalise(name);
            if !self.modules.contains_key(&n) {
                if self.builtin.contains(&n) {
                    continue;
                }
                return Err(ModulesError::Unknown {
                    name: name.clone(),
                    source_path: self.source.clone(),
                });
            }
            let mut stack = Vec::new();
            self.visit(&n, &mut stack, &mut done, &mut out)?;
        }
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<(String, PathBuf)>,
    ) -> Result<(), ModulesError> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            let mut chain = stack.clone();
            chain.push(name.to_string());
            return Err(ModulesError::Cycle { chain });
        }
        let Some(module) = self.modules.get(name) else {
            return Ok(());
        };
        stack.push(name.to_string());
        for dep in self.deps_of(module)? {
            if !self.modules.contains_key(&dep) {
                if self.builtin.contains(&dep) {
                    continue;
                }
                return Err(ModulesError::UnknownDependency {
                    module: name.to_string(),
                    dependency: dep,
                    source_path: self.source.clone(),
                });
            }
            self.visit(&dep, stack, done, out)?;
        }
        stack.pop();
        done.insert(name.to_string());
        out.push((name.to_string(), module.path.clone()));
        Ok(())
    }
}

/// Uncompress a module file by its suffix (`.xz`, `.zst`, `.gz`), returning the file
/// name without that suffix and the plain bytes. Anything else, a plain `.ko` included,
/// passes through unchanged. Needed because Debian's 6.1 kernels lack
/// `CONFIG_MODULE_DECOMPRESS`, so `finit_module` cannot load compressed modules.
pub fn decompress(path: &Path, bytes: &[u8]) -> Result<(PathBuf, Vec<u8>), ModulesError> {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let (method, stem): (&'static str, &str) = if let Some(s) = file.strip_suffix(".xz") {
        ("xz", s)
    } else if let Some(s) = file.strip_suffix(".zst") {
        ("zstd", s)
    } else if let Some(s) = file.strip_suffix(".gz") {
        ("gzip", s)
    } else {
        return Ok((path.to_path_buf(), bytes.to_vec()));
    };
    let err = |source| ModulesError::Decompress {
        path: path.to_path_buf(),
        method,
        source,
    };
    let mut out = Vec::with_capacity(bytes.len() * 3);
    match method {
        "xz" => {
            liblzma::read::XzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
        "zstd" => {
            zstd::stream::read::Decoder::new(bytes)
                .map_err(err)?
                .read_to_end(&mut out)
                .map_err(err)?;
        }
        _ => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
    }
    Ok((path.with_file_name(stem), out))
}

fn slice(bytes: &[u8], off: u64, len: u64) -> Result<&[u8], String> {
    let start = usize::try_from(off).map_err(|_| "offset out of range".to_string())?;
    let len = usize::try_from(len).map_err(|_| "size out of range".to_string())?;
    start
        .checked_add(len)
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| {
            format!(
                "truncated: needs bytes {start}..{} of {}",
                start + len,
                bytes.len()
            )
        })
}

/// The `key=value` strings of a module's `.modinfo` section, in file order. Works for
/// 32- and 64-bit, little- and big-endian ELF objects.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>, String> {
    if elf.len() < 52 || &elf[..4] != b"\x7fELF" {
        return Err("no ELF header".into());
    }
    let wide = match elf[4] {
        1 => false,
        2 => true,
        c => return Err(format!("unknown ELF class {c}")),
    };
    let big = match elf[5] {
        1 => false,
        2 => true,
        d => return Err(format!("unknown ELF data encoding {d}")),
    };
    let uint = |off: u64, size: u64| -> Result<u64, String> {
        let b = slice(elf, off, size)?;
        let mut v: u64 = 0;
        for i in 0..b.len() {
            let byte = if big { b[i] } else { b[b.len() - 1 - i] };
            v = (v << 8) | u64::from(byte);
        }
        Ok(v)
    };
    let (shoff, shentsize, shnum, shstrndx) = if wide {
        (
            uint(0x28, 8)?,
            uint(0x3a, 2)?,
            uint(0x3c, 2)?,
            uint(0x3e, 2)?,
        )
    } else {
        (
            uint(0x20, 4)?,
            uint(0x2e, 2)?,
            uint(0x30, 2)?,
            uint(0x32, 2)?,
        )
    };
    let section = |index: u64| -> Result<(u64, u64, u64), String> {
        let base = shoff + index * shentsize;
        if wide {
            Ok((uint(base, 4)?, uint(base + 24, 8)?, uint(base + 32, 8)?))
        } else {
            Ok((uint(base, 4)?, uint(base + 16, 4)?, uint(base + 20, 4)?))
        }
    };
    if shstrndx >= shnum {
        return Err("no section name table".into());
    }
    let (_, str_off, str_size) = section(shstrndx)?;
    let names = slice(elf, str_off, str_size)?;
    for i in 0..shnum {
        let (name_off, off, size) = section(i)?;
        let name = names
            .get(name_off as usize..)
            .and_then(|n| n.split(|&b| b == 0).next())
            .unwrap_or(b"");
        if name == b".modinfo" {
            let data = slice(elf, off, size)?;
            return Ok(data
                .split(|&b| b == 0)
                .filter_map(|s| std::str::from_utf8(s).ok())
                .filter_map(|s| s.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect());
        }
    }
    Err("no .modinfo section".into())
}

/// A crypto algorithm's module: `kernel/crypto/`, `kernel/arch/*/crypto/`,
/// `kernel/lib/crypto/`.
fn is_algorithm(path: &Path) -> bool {
    path.parent()
        .is_some_and(|dir| dir.components().any(|c| c.as_os_str() == "crypto"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_suffixes_stripped() {
        assert_eq!(
            name_of(Path::new("kernel/fs/nls/nls_iso8859-1.ko.xz")).as_deref(),
            Some("nls_iso8859_1")
        );
        assert_eq!(
            name_of(Path::new("kernel/fs/ext4/ext4.ko")).as_deref(),
            Some("ext4")
        );
        assert_eq!(name_of(Path::new("modules.order")), None);
    }

    #[test]
    fn dep_syntax_error_names_line() {
        let err =
            ModuleDb::parse_dep("kernel/a.ko:\nnonsense\n", Path::new("modules.dep")).unwrap_err();
        assert!(err.to_string().starts_with("modules.dep:2: "), "{err}");
    }

    #[test]
    fn plain_ko_passes_through() {
        let (p, b) = decompress(Path::new("kernel/a.ko"), b"\x7fELF...").unwrap();
        assert_eq!(p, Path::new("kernel/a.ko"));
        assert_eq!(b, b"\x7fELF...");
    }

    #[test]
    fn corrupt_xz_names_the_file() {
        let err = decompress(Path::new("kernel/a.ko.xz"), b"not xz").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("kernel/a.ko.xz: cannot decompress (xz)"),
            "{err}"
        );
    }
}
