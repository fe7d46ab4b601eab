//! Ballast's build inputs: board files (`boards/*.toml`), image files (`images/*.toml`) and QEMU profiles (`qemu/*.toml`).
//!
//! This crate owns those three formats and nothing else. Every error names the
//! file, the line and the field, and where it can, the fix:
//! `boards/qemu-arm64.toml:3:8: arch: unknown variant `arm65`, expected one of ...`.
//! Files are parsed strictly (unknown fields are errors) so that a typo never
//! silently falls back to a default.

mod arch;
mod board;
mod error;
mod image_file;
mod qemu;

pub use arch::Arch;
pub use board::{Board, BoardBoot, BoardDebian, BoardKernel, BootFirmware, PartitionTable};
pub use error::InputError;
pub use image_file::{ImageDebian, ImageFile};
pub use qemu::{Armstub, QemuProfile};

use std::path::{Path, PathBuf};

/// Names of the `*.toml` files in `dir`, sorted, without the extension.
pub fn list_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    names
}

/// Resolve `name_or_path` to a file: an existing path is used as is; otherwise
/// `DIR/NAME.toml`. Unknown names produce an error listing what exists.
pub fn locate(dir: &Path, kind: &str, name_or_path: &str) -> Result<PathBuf, InputError> {
    let as_path = Path::new(name_or_path);
    if name_or_path.ends_with(".toml") || name_or_path.contains('/') {
        if as_path.is_file() {
            return Ok(as_path.to_path_buf());
        }
        return Err(InputError::NotFound {
            kind: kind.to_owned(),
            name: name_or_path.to_owned(),
            known: list_names(dir),
        });
    }
    let candidate = dir.join(format!("{name_or_path}.toml"));
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(InputError::NotFound {
            kind: kind.to_owned(),
            name: name_or_path.to_owned(),
            known: list_names(dir),
        })
    }
}
