//! Where the project's data lives: `boards/`, `images/`, `qemu/`,
//! `kernel-configs/`, and the Cargo workspace that builds the device binaries.
//!
//! The builder runs from a checkout. The root is `--root`, else `BALLAST_ROOT`,
//! else the nearest ancestor of the working directory holding `boards/` and
//! `Cargo.toml`, else the checkout this binary was built from.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
}

impl Project {
    pub fn discover(explicit: Option<&Path>) -> Result<Project> {
        if let Some(root) = explicit {
            return Project::at(root);
        }
        if let Some(root) = std::env::var_os("BALLAST_ROOT") {
            return Project::at(Path::new(&root));
        }
        if let Ok(cwd) = std::env::current_dir() {
            if let Some(root) = cwd.ancestors().find(|d| is_root(d)) {
                return Ok(Project {
                    root: root.to_path_buf(),
                });
            }
        }
        let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        if is_root(&built_from) {
            return Project::at(&built_from);
        }
        bail!(
            "cannot find the Ballast checkout (a directory with boards/ and Cargo.toml): \
             run from inside it, or pass --root DIR or set BALLAST_ROOT"
        )
    }

    fn at(root: &Path) -> Result<Project> {
        if !is_root(root) {
            bail!(
                "{} is not a Ballast checkout: it has no boards/ directory and Cargo.toml",
                root.display()
            );
        }
        Ok(Project {
            root: root.canonicalize().unwrap_or_else(|_| root.to_path_buf()),
        })
    }

    pub fn boards_dir(&self) -> PathBuf {
        self.root.join("boards")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn qemu_dir(&self) -> PathBuf {
        self.root.join("qemu")
    }
    pub fn kernel_configs_dir(&self) -> PathBuf {
        self.root.join("kernel-configs")
    }
    pub fn default_image(&self) -> PathBuf {
        self.images_dir().join("default.toml")
    }
    /// Cargo's target directory for this workspace.
    pub fn target_dir(&self) -> PathBuf {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.root.join("target"))
    }
    /// Default output directory of a board's build.
    pub fn default_out(&self, board: &str) -> PathBuf {
        self.root.join("out").join(board)
    }
}

fn is_root(dir: &Path) -> bool {
    dir.join("boards").is_dir() && dir.join("Cargo.toml").is_file()
}

/// The cache directory shared with the archive client: `explicit`, else
/// `BALLAST_CACHE`, else `$XDG_CACHE_HOME/ballast`, else `~/.cache/ballast`.
pub fn cache_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("BALLAST_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("ballast");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache").join("ballast"))
        .unwrap_or_else(|| PathBuf::from(".cache/ballast"))
}
