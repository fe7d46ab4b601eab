//! Ship only what runs: after the Debian packages are unpacked into the
//! userland, keep the programs, everything they load and the data they read
//! by name, and delete the rest (the way distroless images are made).
//!
//! What is kept:
//! - the programs (files in [`PROGRAM_DIRS`]) of the packages the system
//!   containers ask for (`packages` in `system/*/build.toml`), the programs
//!   they name from other packages (`programs`), and Ballast's own files;
//!   programs of packages that came in only as dependencies are dropped;
//! - what those programs need, followed transitively: the ELF interpreter and
//!   `DT_NEEDED` libraries (searched in `DT_RUNPATH`/`DT_RPATH` and the
//!   library directories), the interpreter of a `#!` script, and the target
//!   of every symlink on the way;
//! - what is loaded without `DT_NEEDED` and so must be kept by rule
//!   ([`DLOPENED`]): NSS modules, gconv, xtables extensions, ...; and the PAM
//!   modules `/etc/pam.d` names;
//! - configuration and data read by name ([`KEEP_DATA`]): `/etc`, time zones,
//!   terminfo, ..., and each package's copyright file.
//!
//! A script whose interpreter is not shipped cannot run and is dropped with it.
//! A kept ELF file whose library is nowhere in the userland is an error: the
//! package set is broken, and the image would be too.
//!
//! Provenance: [`write_provenance`] records which package and version each
//! shipped file came from, so security advisories can still be matched.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use crate::elfdeps;

/// Where the provenance table goes, inside the userland.
pub const PROVENANCE: &str = "usr/share/ballast/provenance.tsv";

/// Directories whose files are programs: each is a root of what is kept.
const PROGRAM_DIRS: &[&str] = &[
    "usr/bin",
    "usr/sbin",
    "usr/libexec",
    "usr/lib/openssh",
    "usr/lib/ballast",
];

/// What the system containers ask for.
#[derive(Debug, Default)]
pub struct Policy {
    /// Packages whose programs are kept (`packages` of the build.toml files).
    pub packages: BTreeSet<String>,
    /// Programs kept from other packages (`programs`), absolute paths.
    pub programs: BTreeSet<PathBuf>,
    /// Programs of asked-for packages that nothing runs (`skip_programs`).
    pub skip: BTreeSet<PathBuf>,
    /// Files Ballast put in (the definitions' `files/`): always kept.
    pub ours: BTreeSet<PathBuf>,
}

/// Configuration and data read by name, kept whole (prefixes).
const KEEP_DATA: &[&str] = &[
    "etc",
    "var",
    // `timezone` of the first-boot config; `right/` (leap-second clocks) is
    // dropped below.
    "usr/share/zoneinfo",
    // The admin shell's terminal descriptions (ncurses-base).
    "usr/share/terminfo",
    "usr/lib/terminfo",
    // The licence texts the copyright files refer to.
    "usr/share/common-licenses",
    // iproute2's tables (rt_tables, ...) since bookworm.
    "usr/share/iproute2",
    // The C.UTF-8 locale (the only one shipped).
    "usr/lib/locale/C.utf8",
    "usr/share/ballast",
    "usr/lib/os-release",
];

/// Dropped even though under [`KEEP_DATA`].
const DROP_DATA: &[&str] = &["usr/share/zoneinfo/right"];

/// Loaded with `dlopen` (no `DT_NEEDED` names them): kept by rule. Patterns
/// are matched against the path below a library directory
/// (`usr/lib/<triplet>/` or `usr/lib/`); `*` matches within one component.
const DLOPENED: &[&str] = &[
    // glibc: name services (nsswitch.conf) and libgcc_s for thread cancellation
    // and unwinding.
    "libnss_*",
    "libgcc_s.so.1",
    // glibc's iconv: the module list and the Unicode and western codecs
    // (UTF-8, ASCII, Latin-1 and UCS-2/4 are built into libc).
    "gconv/gconv-modules",
    "gconv/gconv-modules.d/*",
    "gconv/UTF-*.so",
    "gconv/UNICODE.so",
    "gconv/ISO8859-15.so",
    "gconv/CP1252.so",
    // iptables extensions (Docker's NAT and filter rules).
    "xtables/*",
    // OpenSSL providers.
    "ossl-modules/*",
];

/// Which package (and version) each unpacked file came from.
#[derive(Debug, Default)]
pub struct Owners {
    map: HashMap<PathBuf, (String, String)>,
}

impl Owners {
    /// Record `paths` (as the package lists them) as `package`'s.
    pub fn record<'a>(
        &mut self,
        package: &str,
        version: &str,
        paths: impl IntoIterator<Item = &'a Path>,
    ) {
        for p in paths {
            self.map
                .insert(canonical(p), (package.to_owned(), version.to_owned()));
        }
    }

    /// A file the builder wrote over (or generated) is no package's.
    pub fn forget(&mut self, path: &Path) {
        self.map.remove(&canonical(path));
    }

    fn get(&self, path: &Path) -> Option<&(String, String)> {
        self.map.get(path)
    }
}

/// Relative, and merged /usr: `./bin/x` in a package is `usr/bin/x` on disk.
fn canonical(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect();
    match rel.components().next() {
        Some(Component::Normal(first))
            if ["bin", "sbin", "lib", "lib64"]
                .iter()
                .any(|m| first == std::ffi::OsStr::new(m)) =>
        {
            Path::new("usr").join(rel)
        }
        _ => rel,
    }
}

/// What pruning did.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Scripts dropped because their interpreter is not shipped.
    pub unrunnable: Vec<PathBuf>,
    pub kept_files: usize,
    pub kept_bytes: u64,
    pub dropped_files: usize,
    pub dropped_bytes: u64,
}

/// Delete from `root` every file and symlink that nothing shipped needs.
pub fn prune(root: &Path, owners: &Owners, policy: &Policy) -> Result<Pruned> {
    let all = walk(root)?;
    let lib_dirs = library_dirs(root, &all);
    let pam = pam_modules(root)?;
    let mut keep = Closure {
        root,
        lib_dirs: &lib_dirs,
        kept: BTreeSet::new(),
        unresolved: Vec::new(),
    };
    let ours: BTreeSet<PathBuf> = policy.ours.iter().map(|p| canonical(p)).collect();
    let named: BTreeSet<PathBuf> = policy.programs.iter().map(|p| canonical(p)).collect();
    let skip: BTreeSet<PathBuf> = policy.skip.iter().map(|p| canonical(p)).collect();
    // A program stays when its package was asked for, or it is named, or ours.
    let wanted = |p: &Path| {
        ours.contains(p)
            || named.contains(p)
            || owners
                .get(p)
                .is_some_and(|(pkg, _)| policy.packages.contains(pkg))
    };
    let mut roots = Vec::new();
    let mut programs = Vec::new();
    for p in all.keys() {
        if PROGRAM_DIRS.iter().any(|d| p.starts_with(d)) {
            if wanted(p) && !skip.contains(p) {
                programs.push(p.clone());
            }
        } else if ours.contains(p)
            || is_data(p)
            || is_copyright(p)
            || dlopened(p, &lib_dirs)
            || pam_module(p, &lib_dirs, &pam)
        {
            roots.push(p.clone());
        }
    }
    for p in &named {
        if !all.contains_key(p) {
            bail!(
                "build.toml names the program /{} but no package in the userland ships it; \
                 fix `programs` or add the package that has it to `packages`",
                p.display()
            );
        }
    }
    // A skipped program no package ships is a typo (or a package that moved
    // it): say so, or the program the line meant would silently stay.
    for p in &skip {
        if !all.contains_key(p) {
            bail!(
                "build.toml's skip_programs names /{} but no package in the userland ships it; \
                 fix the path or remove the line",
                p.display()
            );
        }
    }
    for p in roots {
        keep.add(&p)?;
    }
    // Programs: kept when they can run, i.e. their interpreter is shipped.
    let mut blocked = Vec::new();
    for p in programs {
        if keep.runnable(&p, &all, &wanted)? {
            keep.add(&p)?;
        } else {
            blocked.push(p);
        }
    }
    if !keep.unresolved.is_empty() {
        keep.unresolved.sort();
        keep.unresolved.dedup();
        bail!(
            "the userland is missing libraries its programs load:\n  {}\n\
             add the package that ships each one to a system container's build.toml",
            keep.unresolved.join("\n  ")
        );
    }
    let mut pruned = Pruned {
        unrunnable: blocked,
        ..Pruned::default()
    };
    for (p, size) in &all {
        if keep.kept.contains(p) {
            pruned.kept_files += 1;
            pruned.kept_bytes += size;
        } else {
            let path = root.join(p);
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            pruned.dropped_files += 1;
            pruned.dropped_bytes += size;
        }
    }
    remove_empty_dirs(&root.join("usr/share"))?;
    remove_empty_dirs(&root.join("usr/lib"))?;
    Ok(pruned)
}

/// The PAM module names (`pam_unix.so`) the files in `etc/pam.d` use.
fn pam_modules(root: &Path) -> Result<BTreeSet<String>> {
    let dir = root.join("etc/pam.d");
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in entries {
        let path = e?.path();
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for word in text.lines().flat_map(str::split_whitespace) {
            if word.ends_with(".so") {
                if let Some(name) = Path::new(word).file_name() {
                    out.insert(name.to_string_lossy().into_owned());
                }
            }
        }
    }
    Ok(out)
}

/// A PAM module (`security/NAME.so` in a library directory) that pam.d names.
fn pam_module(p: &Path, lib_dirs: &[PathBuf], named: &BTreeSet<String>) -> bool {
    lib_dirs.iter().any(|dir| {
        p.strip_prefix(dir.join("security"))
            .ok()
            .is_some_and(|rel| {
                rel.components().count() == 1 && named.contains(&*rel.to_string_lossy())
            })
    })
}

fn is_data(p: &Path) -> bool {
    KEEP_DATA.iter().any(|d| p.starts_with(d)) && !DROP_DATA.iter().any(|d| p.starts_with(d))
}

/// `usr/share/doc/PKG/copyright`: kept for every package.
fn is_copyright(p: &Path) -> bool {
    p.starts_with("usr/share/doc")
        && p.components().count() == 5
        && p.file_name().is_some_and(|n| n == "copyright")
}

fn dlopened(p: &Path, lib_dirs: &[PathBuf]) -> bool {
    lib_dirs.iter().any(|dir| {
        p.strip_prefix(dir)
            .ok()
            .is_some_and(|rel| DLOPENED.iter().any(|pat| glob(pat, rel)))
    })
}

/// `*` matches any run of characters within one path component.
fn glob(pattern: &str, path: &Path) -> bool {
    let pats: Vec<&str> = pattern.split('/').collect();
    let comps: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    pats.len() == comps.len() && pats.iter().zip(&comps).all(|(p, c)| glob_one(p, c))
}

fn glob_one(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            s.starts_with(head)
                && (head.len()..=s.len()).any(|i| s.is_char_boundary(i) && glob_one(tail, &s[i..]))
        }
    }
}

/// The library search path: the multiarch directories, `usr/lib`, `usr/lib64`.
fn library_dirs(root: &Path, all: &BTreeMap<PathBuf, u64>) -> Vec<PathBuf> {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for p in all.keys() {
        if let Ok(rest) = p.strip_prefix("usr/lib") {
            if let Some(Component::Normal(first)) = rest.components().next() {
                let name = first.to_string_lossy();
                if name.contains("-linux-gnu") && root.join("usr/lib").join(first).is_dir() {
                    dirs.insert(Path::new("usr/lib").join(first));
                }
            }
        }
    }
    let mut dirs: Vec<PathBuf> = dirs.into_iter().collect();
    dirs.push(PathBuf::from("usr/lib"));
    dirs.push(PathBuf::from("usr/lib64"));
    dirs
}

/// Every file and symlink under `root` (relative, merged-/usr paths) with its
/// size; the top-level merged-/usr symlinks are not candidates.
fn walk(root: &Path) -> Result<BTreeMap<PathBuf, u64>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let path = e.path();
            let meta = e.metadata()?;
            let rel = path.strip_prefix(root)?.to_path_buf();
            if meta.is_dir() {
                stack.push(path);
            } else if dir != root {
                out.insert(rel, if meta.is_file() { meta.len() } else { 0 });
            }
        }
    }
    Ok(out)
}

fn remove_empty_dirs(dir: &Path) -> Result<bool> {
    let Ok(meta) = dir.symlink_metadata() else {
        return Ok(false);
    };
    if !meta.is_dir() {
        return Ok(false);
    }
    let mut empty = true;
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if !remove_empty_dirs(&p)? {
            empty = false;
        }
    }
    if empty {
        std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(empty)
}

/// For each of `programs` (absolute, as on the device), the regular files it
/// is and loads in the userland `root` (its interpreter and libraries,
/// followed through symlinks): the program first, then the rest in path
/// order. An error names a program the userland does not ship, or a library
/// one loads that it lacks.
pub fn loads(root: &Path, programs: &[PathBuf]) -> Result<Vec<Vec<PathBuf>>> {
    let all = walk(root)?;
    let lib_dirs = library_dirs(root, &all);
    let mut out = Vec::new();
    for program in programs {
        let mut closure = Closure {
            root,
            lib_dirs: &lib_dirs,
            kept: BTreeSet::new(),
            unresolved: Vec::new(),
        };
        let start = canonical(program);
        let Some(real) = closure.resolve(&start) else {
            bail!("{}: the userland does not ship it", program.display());
        };
        closure.add(&start)?;
        if !closure.unresolved.is_empty() {
            bail!(
                "{}: the userland lacks libraries it loads: {}",
                program.display(),
                closure.unresolved.join(", ")
            );
        }
        let mut files = vec![real.clone()];
        files.extend(
            closure
                .kept
                .into_iter()
                .filter(|p| *p != real && root.join(p).is_file() && !root.join(p).is_symlink()),
        );
        out.push(files);
    }
    Ok(out)
}

/// The set of kept paths, grown by following what each kept file needs.
struct Closure<'a> {
    root: &'a Path,
    lib_dirs: &'a [PathBuf],
    kept: BTreeSet<PathBuf>,
    unresolved: Vec<String>,
}

impl Closure<'_> {
    /// Keep `path` (relative, may contain symlinks) and what it needs.
    fn add(&mut self, path: &Path) -> Result<()> {
        let mut work = vec![canonical(path)];
        while let Some(p) = work.pop() {
            let mut links = Vec::new();
            let Some(real) = resolve_in(self.root, &p, &mut links) else {
                continue;
            };
            self.kept.extend(links);
            if !self.kept.insert(real.clone()) {
                continue;
            }
            let host = self.root.join(&real);
            if !host.is_file() {
                continue;
            }
            let needs = elfdeps::needs(&host, &Path::new("/").join(&real))?;
            if let Some(interp) = &needs.interpreter {
                work.push(canonical(interp));
            }
            if let Some(prog) = &needs.env_program {
                if let Some(found) = self.find_program(prog) {
                    work.push(found);
                }
            }
            for lib in &needs.libraries {
                match self.find_library(lib, &needs.search) {
                    Some(found) => work.push(found),
                    None => self
                        .unresolved
                        .push(format!("{lib} (needed by /{})", real.display())),
                }
            }
        }
        Ok(())
    }

    /// Whether `program` could run if kept: an ELF file always (its libraries
    /// are checked when it is added), a script when its interpreter is a
    /// program that is kept.
    fn runnable(
        &self,
        program: &Path,
        all: &BTreeMap<PathBuf, u64>,
        wanted: &dyn Fn(&Path) -> bool,
    ) -> Result<bool> {
        let Some(real) = self.resolve(program) else {
            return Ok(false);
        };
        let host = self.root.join(&real);
        if !host.is_file() {
            return Ok(true);
        }
        let Some(needs) = elfdeps::script(&host)? else {
            return Ok(true);
        };
        let ok = |p: &Path| {
            self.resolve(&canonical(p))
                .is_some_and(|r| all.contains_key(&r) && wanted(&r))
        };
        Ok(match (&needs.interpreter, &needs.env_program) {
            (Some(_), Some(prog)) => self.find_program(prog).is_some_and(|p| ok(&p)),
            (Some(interp), None) => ok(interp),
            (None, _) => false,
        })
    }

    fn find_program(&self, name: &str) -> Option<PathBuf> {
        ["usr/bin", "usr/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| self.resolve(p).is_some())
    }

    fn find_library(&self, name: &str, search: &[PathBuf]) -> Option<PathBuf> {
        let name = Path::new(name);
        if name.is_absolute() {
            return Some(canonical(name));
        }
        search
            .iter()
            .map(|d| canonical(d))
            .chain(self.lib_dirs.iter().cloned())
            .map(|d| d.join(name))
            .find(|p| self.resolve(p).is_some_and(|r| self.root.join(r).is_file()))
    }

    /// Resolve symlinks inside the userland (as a chroot would). `None` if the
    /// path does not exist.
    fn resolve(&self, path: &Path) -> Option<PathBuf> {
        resolve_in(self.root, path, &mut Vec::new())
    }
}

/// Resolve `path` inside `root`, pushing the symlinks followed onto `links`.
fn resolve_in(root: &Path, path: &Path, links: &mut Vec<PathBuf>) -> Option<PathBuf> {
    let mut todo: Vec<PathBuf> = vec![canonical(path)];
    let mut hops = 0;
    'outer: while let Some(p) = todo.pop() {
        let mut done = PathBuf::new();
        let comps: Vec<_> = p.components().collect();
        for (i, c) in comps.iter().enumerate() {
            match c {
                Component::ParentDir => {
                    done.pop();
                    continue;
                }
                Component::Normal(n) => done.push(n),
                _ => continue,
            }
            let meta = root.join(&done).symlink_metadata().ok()?;
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                links.push(done.clone());
                let target = std::fs::read_link(root.join(&done)).ok()?;
                let mut next = if target.is_absolute() {
                    PathBuf::new()
                } else {
                    done.parent().map(Path::to_path_buf).unwrap_or_default()
                };
                next.push(target.strip_prefix("/").unwrap_or(&target));
                for rest in &comps[i + 1..] {
                    next.push(rest);
                }
                todo.push(canonical(&next));
                continue 'outer;
            }
        }
        return Some(canonical(&done));
    }
    None
}

/// Write the provenance table: one line per shipped file, `path`, `package`,
/// `version` (tab-separated, sorted); files no package shipped (Ballast's
/// own, or generated by the builder) say `ballast`.
pub fn write_provenance(root: &Path, owners: &Owners, ballast_version: &str) -> Result<usize> {
    let all = walk(root)?;
    let mut text = String::from(
        "# Which Debian package (and version) each file of this userland came from.\n\
         # Files marked `ballast` are Ballast's own (system/ definitions, or made by the builder).\n\
         # path\tpackage\tversion\n",
    );
    let mut lines = 0;
    for p in all.keys() {
        if p == Path::new(PROVENANCE) {
            continue;
        }
        let (pkg, ver) = match owners.get(p) {
            Some((pkg, ver)) => (pkg.as_str(), ver.as_str()),
            None => ("ballast", ballast_version),
        };
        text.push_str(&format!("/{}\t{pkg}\t{ver}\n", p.display()));
        lines += 1;
    }
    let out = root.join(PROVENANCE);
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_usr_paths_are_canonical() {
        assert_eq!(canonical(Path::new("./bin/sh")), Path::new("usr/bin/sh"));
        assert_eq!(
            canonical(Path::new("/lib64/ld-linux-x86-64.so.2")),
            Path::new("usr/lib64/ld-linux-x86-64.so.2")
        );
        assert_eq!(canonical(Path::new("etc/passwd")), Path::new("etc/passwd"));
    }

    #[test]
    fn globs_match_within_one_component() {
        assert!(glob("libnss_*", Path::new("libnss_files.so.2")));
        assert!(glob("security/*", Path::new("security/pam_unix.so")));
        assert!(!glob("security/*", Path::new("security/sub/pam_unix.so")));
        assert!(glob("gconv/UTF-*.so", Path::new("gconv/UTF-16.so")));
        assert!(!glob("gconv/UTF-*.so", Path::new("gconv/UTF-16.so.x")));
        assert!(!glob("libgcc_s.so.1", Path::new("libgcc_s.so.2")));
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("usr/lib/x")).unwrap();
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).unwrap();
        std::fs::write(r.join("usr/lib/x/libc.so.6"), "c").unwrap();
        std::os::unix::fs::symlink("/lib/x/libc.so.6", r.join("usr/lib/x/abs")).unwrap();
        let mut links = Vec::new();
        assert_eq!(
            resolve_in(r, Path::new("usr/lib/x/abs"), &mut links),
            Some(PathBuf::from("usr/lib/x/libc.so.6"))
        );
        assert_eq!(links, vec![PathBuf::from("usr/lib/x/abs")]);
        assert_eq!(resolve_in(r, Path::new("usr/lib/x/none"), &mut links), None);
    }
    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn only_wanted_programs_and_what_they_need_are_shipped() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("usr/lib/aarch64-linux-gnu/security")).unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        write(r, "usr/bin/dash", "a stand-in for an ELF program");
        std::os::unix::fs::symlink("dash", r.join("usr/bin/sh")).unwrap();
        write(r, "usr/bin/tool", "#!/bin/sh\necho tool\n");
        write(r, "usr/bin/perlish", "#!/usr/bin/perl\n");
        write(r, "usr/bin/perl", "perl");
        write(r, "usr/bin/dep-tool", "#!/bin/sh\n");
        write(r, "usr/bin/named", "#!/bin/sh\n");
        write(r, "usr/bin/skipped", "#!/bin/sh\n");
        write(r, "usr/share/doc/tool/copyright", "GPL");
        write(r, "usr/share/doc/tool/README", "docs");
        write(r, "usr/share/locale/de/tool.mo", "de");
        write(r, "usr/share/zoneinfo/UTC", "utc");
        write(r, "usr/share/zoneinfo/right/UTC", "utc");
        write(r, "usr/lib/aarch64-linux-gnu/security/pam_unix.so", "pam");
        write(r, "usr/lib/aarch64-linux-gnu/security/pam_userdb.so", "pam");
        write(r, "usr/lib/aarch64-linux-gnu/libnss_compat.so.2", "nss");
        write(r, "usr/lib/aarch64-linux-gnu/libunused.so.1", "lib");
        write(r, "etc/pam.d/sudo", "auth required pam_unix.so\n");
        let mut owners = Owners::default();
        owners.record("dash", "1", [Path::new("bin/dash"), Path::new("bin/sh")]);
        owners.record(
            "tool",
            "2",
            [Path::new("usr/bin/tool"), Path::new("usr/bin/skipped")],
        );
        owners.record("perl-base", "5", [Path::new("usr/bin/perl")]);
        owners.record("tool", "2", [Path::new("usr/bin/perlish")]);
        owners.record(
            "dep",
            "3",
            [Path::new("usr/bin/dep-tool"), Path::new("usr/bin/named")],
        );
        let policy = Policy {
            packages: ["dash", "tool"].iter().map(|s| s.to_string()).collect(),
            programs: [PathBuf::from("/usr/bin/named")].into_iter().collect(),
            skip: [PathBuf::from("/usr/bin/skipped")].into_iter().collect(),
            ours: BTreeSet::new(),
        };
        let pruned = prune(r, &owners, &policy).unwrap();
        let exists = |p: &str| r.join(p).symlink_metadata().is_ok();
        for kept in [
            "usr/bin/dash",
            "usr/bin/sh",
            "usr/bin/tool",
            "usr/bin/named",
            "usr/share/doc/tool/copyright",
            "usr/share/zoneinfo/UTC",
            "usr/lib/aarch64-linux-gnu/security/pam_unix.so",
            "usr/lib/aarch64-linux-gnu/libnss_compat.so.2",
            "etc/pam.d/sudo",
        ] {
            assert!(exists(kept), "{kept} was dropped");
        }
        for dropped in [
            "usr/bin/perl",
            "usr/bin/perlish",
            "usr/bin/dep-tool",
            "usr/bin/skipped",
            "usr/share/doc/tool/README",
            "usr/share/locale/de/tool.mo",
            "usr/share/zoneinfo/right/UTC",
            "usr/lib/aarch64-linux-gnu/security/pam_userdb.so",
            "usr/lib/aarch64-linux-gnu/libunused.so.1",
        ] {
            assert!(!exists(dropped), "{dropped} was kept");
        }
        assert_eq!(pruned.unrunnable, vec![PathBuf::from("usr/bin/perlish")]);

        let n = write_provenance(r, &owners, "0.1.0").unwrap();
        let table = std::fs::read_to_string(r.join(PROVENANCE)).unwrap();
        assert!(table.contains("/usr/bin/tool\ttool\t2\n"), "{table}");
        assert!(
            table.contains("/etc/pam.d/sudo\tballast\t0.1.0\n"),
            "{table}"
        );
        assert_eq!(table.lines().filter(|l| !l.starts_with('#')).count(), n);
    }

    #[test]
    fn a_named_program_no_package_ships_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "usr/bin/a", "x");
        let policy = Policy {
            programs: [PathBuf::from("/usr/bin/missing")].into_iter().collect(),
            ..Policy::default()
        };
        let err = prune(dir.path(), &Owners::default(), &policy).unwrap_err();
        assert!(err.to_string().contains("/usr/bin/missing"), "{err}");
    }

    #[test]
    fn a_skipped_program_no_package_ships_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "usr/bin/a", "x");
        let policy = Policy {
            skip: [PathBuf::from("/usr/sbin/typo")].into_iter().collect(),
            ..Policy::default()
        };
        let err = prune(dir.path(), &Owners::default(), &policy).unwrap_err();
        assert!(
            err.to_string()
                .contains("skip_programs names /usr/sbin/typo"),
            "{err}"
        );
    }
}
