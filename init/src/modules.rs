//! `/etc/ballast/modules.load`: the kernel modules stage 1 loads, in order.
//!
//! The builder writes it (dependencies already first):
//!
//! ```text
//! # kver=6.1.0-28-amd64
//! kernel/drivers/block/virtio_blk.ko
//! ```
//!
//! Paths are relative to `/lib/modules/KVER`. `# wave N` lines group modules
//! that may load together. After a `# beside` line come the modules stage 1
//! loads beside its search for the root rather than before it (boot media
//! other than the board's own disk: the live ISO's CD or USB stick, SATA and
//! USB disks), in waves of their own. Blank lines and other `#` lines are
//! ignored. This module parses and checks the file; loading is
//! [`crate::stage1`]'s job through [`crate::sys::Sys`].

use std::path::{Component, Path, PathBuf};

/// Where the builder puts the list in the initramfs.
pub const MODULES_LOAD: &str = "/etc/ballast/modules.load";

/// A line that starts a wave: the modules after it depend only on modules
/// of earlier waves, so a wave may load in parallel.
pub const WAVE: &str = "# wave";
/// The line after which the modules load beside the root's search.
pub const BESIDE: &str = "# beside";

/// The parsed list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModulesLoad {
    /// The kernel release the modules were built for (`# kver=` header).
    pub kver: String,
    /// Module files relative to `/lib/modules/KVER`, in waves: each wave after
    /// the modules it depends on. Without `# wave` lines, each module is its
    /// own wave (loaded one after another, in the file's order).
    pub waves: Vec<Vec<PathBuf>>,
    /// The modules after `# beside`, in waves of their own (they need only
    /// [`Self::waves`]' modules and earlier waves of theirs).
    pub beside: Vec<Vec<PathBuf>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModulesLoadError {
    #[error("{MODULES_LOAD}: the first line must be `# kver=KERNEL_RELEASE` (found {found:?}); rebuild the initramfs with the Ballast builder")]
    MissingKver { found: String },
    #[error("{MODULES_LOAD}:{line}: {path:?} must be a relative path below /lib/modules/KVER without `..`; fix the builder's module list")]
    BadPath { line: usize, path: String },
}

impl ModulesLoad {
    pub fn parse(text: &str) -> Result<ModulesLoad, ModulesLoadError> {
        let mut lines = text.lines().enumerate();
        let first = lines.next().map(|(_, l)| l.trim()).unwrap_or("");
        let kver = first
            .strip_prefix('#')
            .map(str::trim)
            .and_then(|rest| rest.strip_prefix("kver="))
            .map(str::trim)
            .filter(|k| !k.is_empty() && !k.contains('/'))
            .ok_or_else(|| ModulesLoadError::MissingKver {
                found: first.to_string(),
            })?;
        let mut waves: Vec<Vec<PathBuf>> = Vec::new();
        let mut beside: Option<Vec<Vec<PathBuf>>> = None;
        let mut marked = false;
        for (index, line) in lines {
            let line = line.trim();
            if line == BESIDE {
                waves.retain(|w| !w.is_empty());
                beside = Some(std::mem::take(&mut waves));
                marked = false;
                continue;
            }
            if line == WAVE || line.starts_with(&format!("{WAVE} ")) {
                marked = true;
                waves.push(Vec::new());
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let path = Path::new(line);
            let plain = path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !plain {
                return Err(ModulesLoadError::BadPath {
                    line: index + 1,
                    path: line.to_string(),
                });
            }
            match waves.last_mut() {
                Some(wave) if marked => wave.push(path.to_path_buf()),
                _ => waves.push(vec![path.to_path_buf()]),
            }
        }
        waves.retain(|w| !w.is_empty());
        // Before `# beside`, the waves read so far are the ones loaded first.
        let (waves, beside) = match beside {
            Some(first) => (first, waves),
            None => (waves, Vec::new()),
        };
        Ok(ModulesLoad {
            kver: kver.to_string(),
            waves,
            beside,
        })
    }

    /// Every module, in the file's order.
    pub fn modules(&self) -> impl Iterator<Item = &PathBuf> {
        self.waves.iter().chain(&self.beside).flatten()
    }

    /// The absolute path of a listed module inside the initramfs.
    pub fn full_path(&self, module: &Path) -> PathBuf {
        Path::new("/lib/modules").join(&self.kver).join(module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_after_the_beside_line_are_a_list_of_their_own() {
        let text = "# kver=6.1.0-28-arm64\n# wave 0\na.ko\nb.ko\n# wave 1\nc.ko\n\
                    # beside\n# wave 0\nd.ko\ne.ko\n# wave 1\nf.ko\n";
        let list = ModulesLoad::parse(text).unwrap();
        let p = PathBuf::from;
        assert_eq!(list.waves, [vec![p("a.ko"), p("b.ko")], vec![p("c.ko")]]);
        assert_eq!(list.beside, [vec![p("d.ko"), p("e.ko")], vec![p("f.ko")]]);
        assert_eq!(list.modules().count(), 6);
        // Without the line, nothing loads beside.
        let list = ModulesLoad::parse("# kver=6.1.0-28-arm64\n# wave 0\na.ko\n").unwrap();
        assert!(list.beside.is_empty());
    }

    #[test]
    fn the_builders_format() {
        let text = "# kver=6.1.0-28-amd64\n\
                    kernel/drivers/virtio/virtio_ring.ko\n\
                    \n\
                    # block\n\
                    kernel/drivers/block/virtio_blk.ko\n";
        let list = ModulesLoad::parse(text).unwrap();
        assert_eq!(list.kver, "6.1.0-28-amd64");
        // No wave lines: one module per wave, in order.
        assert_eq!(
            list.waves,
            [
                vec![PathBuf::from("kernel/drivers/virtio/virtio_ring.ko")],
                vec![PathBuf::from("kernel/drivers/block/virtio_blk.ko")],
            ]
        );
        assert_eq!(
            list.full_path(&list.waves[1][0]),
            PathBuf::from("/lib/modules/6.1.0-28-amd64/kernel/drivers/block/virtio_blk.ko")
        );
    }

    #[test]
    fn wave_lines_group_modules_that_may_load_together() {
        let text = "# kver=6.1.0-28-arm64\n# wave 0\na.ko\nb.ko\n# wave 1\nc.ko\n# wave 2\n";
        let list = ModulesLoad::parse(text).unwrap();
        let p = PathBuf::from;
        assert_eq!(list.waves, [vec![p("a.ko"), p("b.ko")], vec![p("c.ko")]]);
        assert_eq!(list.modules().count(), 3);
    }

    #[test]
    fn header_only_means_no_modules() {
        let list = ModulesLoad::parse("#kver=6.1.0-28-arm64").unwrap();
        assert_eq!(list.kver, "6.1.0-28-arm64");
        assert!(list.waves.is_empty());
    }

    #[test]
    fn missing_header_is_an_error_that_says_what_to_write() {
        let err = ModulesLoad::parse("kernel/a.ko\n").unwrap_err();
        assert!(matches!(err, ModulesLoadError::MissingKver { .. }));
        assert!(err.to_string().contains("# kver="), "{err}");
        assert!(ModulesLoad::parse("").is_err());
        assert!(ModulesLoad::parse("# kver=\n").is_err());
    }

    #[test]
    fn paths_escaping_the_module_tree_are_refused_with_their_line() {
        for bad in ["/lib/modules/x.ko", "../../etc/shadow", "kernel/../../x.ko"] {
            let err = ModulesLoad::parse(&format!("# kver=6.1\n\n{bad}\n")).unwrap_err();
            assert_eq!(
                err,
                ModulesLoadError::BadPath {
                    line: 3,
                    path: bad.to_string()
                }
            );
            assert!(err.to_string().contains("modules.load:3"), "{err}");
        }
    }
}
