//! Does a kernel meet Ballast's requirements? Compares a kernel's config with the
//! merged `kernel-configs/` fragments, using `initramfs-modules.toml` to accept
//! options that are modules stage 1 can load.
//!
//! Rules, per requirement line:
//! - `=y`: the kernel has `y`, or `m` when `initramfs-modules.toml` names the module
//!   (stage 1 loads it before it is needed);
//! - `=m`: `y` or `m` (a module loaded later from the root filesystem);
//! - `# ... is not set`: the kernel has it off;
//! - any other value (strings, numbers): exactly that value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::kconfig::{KconfigError, KernelConfig, Requirements, Value};

/// Ballast's arch names, as in `boards/*.toml`.
pub const ARCHES: &[&str] = &["x86_64", "arm64", "armv7"];

/// File name of the module map inside `kernel-configs/`.
pub const MODULE_MAP_FILE: &str = "initramfs-modules.toml";

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Kconfig(#[from] KconfigError),
    #[error("{}: cannot read: {source}", path.display())]
    MapRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}; expected a [modules] table (and optionally a [beside] table) of `CONFIG_X = \"module_name\"`", path.display())]
    MapParse { path: PathBuf, message: String },
    #[error("{}: [{table}] {key}: {message}", path.display())]
    MapEntry {
        table: &'static str,
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("unknown arch {arch:?}: use one of {} (there must be a {arch}.config in {})", ARCHES.join(", "), dir.display())]
    UnknownArch { arch: String, dir: PathBuf },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile {
    modules: BTreeMap<String, String>,
    /// Modules stage 1 loads beside its search for the root (boot media
    /// other than the board's own disk), not before it.
    #[serde(default)]
    beside: BTreeMap<String, String>,
}

/// `kernel-configs/initramfs-modules.toml`: which module provides each option that
/// may be `=m` although a fragment wants it built in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleMap {
    path: PathBuf,
    modules: BTreeMap<String, String>,
    /// The `[beside]` table's entries (options and modules of the boot media).
    beside: BTreeMap<String, String>,
}

impl ModuleMap {
    pub fn load(path: &Path) -> Result<ModuleMap, CheckError> {
        let text = std::fs::read_to_string(path).map_err(|source| CheckError::MapRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse map text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ModuleMap, CheckError> {
        let file: MapFile = toml::from_str(text).map_err(|e| CheckError::MapParse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        for (table, entries) in [("modules", &file.modules), ("beside", &file.beside)] {
            for (key, module) in entries {
                let entry = |message: &str| CheckError::MapEntry {
                    path: path.to_path_buf(),
                    table,
                    key: key.clone(),
                    message: message.to_string(),
                };
                if !key.starts_with("CONFIG_")
                    || key.len() <= "CONFIG_".len()
                    || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(entry("keys are kernel options such as CONFIG_DM_VERITY"));
                }
                if module.is_empty()
                    || !module
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(entry(
                        "values are module names such as \"dm-verity\" (letters, digits, '-', '_')",
                    ));
                }
                if table == "beside" && file.modules.contains_key(key) {
                    return Err(entry(
                        "the option is in [modules] too: a module loads either before the root's search or beside it",
                    ));
                }
            }
        }
        Ok(ModuleMap {
            path: path.to_path_buf(),
            modules: file.modules,
            beside: file.beside,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The module that provides `option`, if the map names one.
    pub fn module_for(&self, option: &str) -> Option<&str> {
        self.modules
            .get(option)
            .or_else(|| self.beside.get(option))
            .map(String::as_str)
    }

    /// All `(option, module)` pairs of both tables, sorted by option within each.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.modules
            .iter()
            .chain(&self.beside)
            .map(|(o, m)| (o.as_str(), m.as_str()))
    }

    /// Whether `option`'s module loads beside the root's search (`[beside]`).
    pub fn is_beside(&self, option: &str) -> bool {
        self.beside.contains_key(option)
    }
}

/// One requirement the kernel does not meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub option: String,
    /// The fragment's value: `y`, `m`, `is not set`, or the literal value.
    pub wanted: String,
    /// The kernel's value, same spelling.
    pub found: String,
    pub file: PathBuf,
    pub line: usize,
}

/// The outcome of a check; `--json` prints it as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub kernel_config: PathBuf,
    pub ok: bool,
    /// Number of requirements checked (after merging the fragments).
    pub checked: usize,
    pub missing: Vec<Missing>,
    /// Modules stage 1 must load: the map's module for every map option the kernel
    /// has as `=m` (whether or not a fragment names the option), sorted, deduped.
    pub initramfs_modules: Vec<String>,
    /// Those of them from the map's `[beside]` table: stage 1 loads them beside
    /// its search for the root (unless a module before it needs them too).
    pub beside_modules: Vec<String>,
}

/// Check `config` against `reqs`; never fails, the report says what is missing.
pub fn check(config: &KernelConfig, reqs: &Requirements, map: &ModuleMap) -> Report {
    let mut missing = Vec::new();
    for req in reqs.iter() {
        let found = config.get(&req.option);
        let ok = match &req.want {
            Value::Yes => {
                found == Value::Yes
                    || (found == Value::Module && map.module_for(&req.option).is_some())
            }
            Value::Module => found.is_enabled(),
            Value::NotSet => found == Value::NotSet,
            Value::Other(_) => found == req.want,
        };
        if !ok {
            missing.push(Missing {
                option: req.option.clone(),
                wanted: req.want.to_string(),
                found: found.to_string(),
                file: req.file.clone(),
                line: req.line,
            });
        }
    }
    // A mapped module is loaded when some fragment asks for its option (an option
    // no fragment of this image asks for, such as the engine's on an image without
    // one, stays out of the initramfs) and the kernel builds it as a module.
    let wanted: BTreeSet<&str> = reqs
        .iter()
        .filter(|r| matches!(r.want, Value::Yes | Value::Module))
        .map(|r| r.option.as_str())
        .collect();
    let loaded = |beside: bool| -> BTreeSet<String> {
        map.iter()
            .filter(|(option, _)| {
                wanted.contains(option)
                    && config.get(option) == Value::Module
                    && map.is_beside(option) == beside
            })
            .map(|(_, module)| module.to_string())
            .collect()
    };
    let beside_modules = loaded(true);
    let mut initramfs_modules = loaded(false);
    initramfs_modules.extend(beside_modules.iter().cloned());
    Report {
        kernel_config: config.path().to_path_buf(),
        ok: missing.is_empty(),
        checked: reqs.len(),
        missing,
        initramfs_modules: initramfs_modules.into_iter().collect(),
        beside_modules: beside_modules.into_iter().collect(),
    }
}

/// Load the kernel config at `config_path`, `common.config` + `<arch>.config` and
/// `initramfs-modules.toml` from `kernel_configs_dir`, and check.
pub fn check_dir(
    config_path: &Path,
    kernel_configs_dir: &Path,
    arch: &str,
) -> Result<Report, CheckError> {
    check_dir_with(config_path, kernel_configs_dir, arch, &[])
}

/// [`check_dir`] with extra fragments (`<name>.config`), e.g. `engine`.
pub fn check_dir_with(
    config_path: &Path,
    kernel_configs_dir: &Path,
    arch: &str,
    extra: &[&str],
) -> Result<Report, CheckError> {
    if !ARCHES.contains(&arch) {
        return Err(CheckError::UnknownArch {
            arch: arch.to_string(),
            dir: kernel_configs_dir.to_path_buf(),
        });
    }
    let config = KernelConfig::load(config_path)?;
    let reqs = Requirements::load_with(kernel_configs_dir, arch, extra)?;
    let map = ModuleMap::load(&kernel_configs_dir.join(MODULE_MAP_FILE))?;
    Ok(check(&config, &reqs, &map))
}

fn spell(value: &str) -> &str {
    if value == "is not set" {
        "not set"
    } else {
        value
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.kernel_config.display();
        if self.ok {
            write!(
                f,
                "kernel config {path}: {} options checked, all present",
                self.checked
            )?;
            if !self.initramfs_modules.is_empty() {
                write!(
                    f,
                    "\ninitramfs modules: {}",
                    self.initramfs_modules.join(" ")
                )?;
            }
            return Ok(());
        }
        write!(
            f,
            "kernel config {path}: {} options checked, {} not met:",
            self.checked,
            self.missing.len()
        )?;
        for m in &self.missing {
            let hint = if m.wanted == "y" && m.found == "m" {
                "; a module stage 1 does not load: name its module in initramfs-modules.toml"
            } else {
                ""
            };
            write!(
                f,
                "\n  {}: wanted {}, found {}{hint} ({}:{})",
                m.option,
                spell(&m.wanted),
                spell(&m.found),
                m.file.display(),
                m.line
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kconfig::Fragment;

    fn setup(config: &str, fragment: &str, map: &str) -> Report {
        let c = KernelConfig::parse(config, Path::new("config-6.1")).unwrap();
        let f = Fragment::parse(fragment, Path::new("kernel-configs/common.config")).unwrap();
        let m = ModuleMap::parse(map, Path::new("initramfs-modules.toml")).unwrap();
        check(&c, &Requirements::merge(&[f]), &m)
    }

    #[test]
    fn every_rule() {
        let config = "CONFIG_A=y\nCONFIG_B=m\nCONFIG_C=m\nCONFIG_D=y\n# CONFIG_E is not set\n\
                      CONFIG_F=437\nCONFIG_G=m\nCONFIG_H=y\nCONFIG_I=\"ascii\"\n";
        let fragment = "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\nCONFIG_D=m\n# CONFIG_E is not set\n\
                        CONFIG_F=437\nCONFIG_G=m\n# CONFIG_H is not set\nCONFIG_I=\"utf8\"\n\
                        CONFIG_J=m\n";
        let r = setup(config, fragment, "[modules]\nCONFIG_B = \"b-mod\"\n");
        let got: Vec<(&str, &str, &str, usize)> = r
            .missing
            .iter()
            .map(|m| {
                (
                    m.option.as_str(),
                    m.wanted.as_str(),
                    m.found.as_str(),
                    m.line,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("CONFIG_C", "y", "m", 3),
                ("CONFIG_H", "is not set", "y", 8),
                ("CONFIG_I", "\"utf8\"", "\"ascii\"", 9),
                ("CONFIG_J", "m", "is not set", 10),
            ]
        );
        assert!(!r.ok);
        assert_eq!(r.checked, 10);
        assert_eq!(r.initramfs_modules, vec!["b-mod".to_string()]);
        let text = r.to_string();
        assert!(
            text.contains("  CONFIG_J: wanted m, found not set (kernel-configs/common.config:10)"),
            "{text}"
        );
        assert!(
            text.contains("CONFIG_C: wanted y, found m; a module"),
            "{text}"
        );
    }

    #[test]
    fn all_present_message_and_only_modules_a_fragment_asks_for() {
        // jbd2 is mapped but no fragment of this image asks for it (as the engine's
        // modules on an image without an engine): not loaded.
        let r = setup(
            "CONFIG_EXT4_FS=m\nCONFIG_JBD2=m\nCONFIG_CRC16=y\n",
            "CONFIG_EXT4_FS=y\n",
            "[modules]\nCONFIG_EXT4_FS = \"ext4\"\nCONFIG_JBD2 = \"jbd2\"\nCONFIG_CRC16 = \"crc16\"\n",
        );
        assert!(r.ok);
        assert_eq!(r.initramfs_modules, vec!["ext4"]);
        assert!(r
            .to_string()
            .starts_with("kernel config config-6.1: 1 options checked, all present"));
    }

    #[test]
    fn a_beside_table_passes_the_check_and_is_reported_apart() {
        let map = "[modules]\nCONFIG_A = \"a-mod\"\n[beside]\nCONFIG_B = \"b-mod\"\n";
        let r = setup("CONFIG_A=m\nCONFIG_B=m\n", "CONFIG_A=y\nCONFIG_B=y\n", map);
        assert!(r.ok, "{r:?}");
        assert_eq!(r.initramfs_modules, ["a-mod", "b-mod"]);
        assert_eq!(r.beside_modules, ["b-mod"]);
        let both = "[modules]\nCONFIG_A = \"a\"\n[beside]\nCONFIG_A = \"a\"\n";
        let err = ModuleMap::parse(both, Path::new("initramfs-modules.toml")).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "initramfs-modules.toml: [beside] CONFIG_A: the option is in [modules] too"
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_map_entries_name_the_key() {
        for (text, key) in [
            ("[modules]\nDM_VERITY = \"dm-verity\"\n", "DM_VERITY"),
            ("[modules]\nCONFIG_X = \"a b\"\n", "CONFIG_X"),
        ] {
            let err = ModuleMap::parse(text, Path::new("m.toml")).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("m.toml: [modules] {key}: ")),
                "{err}"
            );
        }
        let err = ModuleMap::parse("[module]\n", Path::new("m.toml")).unwrap_err();
        assert!(matches!(err, CheckError::MapParse { .. }), "{err}");
    }

    #[test]
    fn unknown_arch_is_refused() {
        let err = check_dir(Path::new("c"), Path::new("kernel-configs"), "amd64").unwrap_err();
        assert!(err.to_string().contains("x86_64, arm64, armv7"), "{err}");
    }
}
