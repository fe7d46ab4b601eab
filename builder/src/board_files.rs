//! The files a board's boot partition needs from Debian besides the kernel:
//! its own U-Boot (`u-boot-rpi`, `u-boot-omap`), the Raspberry Pi's GPU
//! firmware (`raspi-firmware`, from `non-free-firmware`) as the board file's
//! `boot.files` names them, and its device trees (`kernel.dtbs`). Each package
//! comes through the archive client (signature- and hash-checked) and is
//! unpacked once into the cache (`debpkg`).
//!
//! What came from outside `main` is said on stderr: a user flashing the image
//! should know it carries non-free firmware.

use anyhow::{bail, Result};
use ballast_debarchive::client::Archive;
use ballast_inputs::Board;
use std::path::PathBuf;

use crate::debpkg;
use crate::kernel_input::{self, ArchiveArgs, KernelTree};

/// The board's `kernel.firmware`: (path below `lib/firmware/`, file on the
/// host), for the initramfs.
pub fn firmware(
    archive: &Archive,
    board: &Board,
    args: &ArchiveArgs,
) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for (name, files) in &board.kernel.firmware {
        let tree = debpkg::unpacked(archive, &args.cache_dir(), name)?;
        for rel in files {
            let file = tree.join("lib/firmware").join(rel);
            if rel.contains("..") || !file.is_file() {
                bail!(
                    "{}: kernel.firmware.{name}: {name} has no lib/firmware/{rel}; name a file the package ships",
                    board.path.display()
                );
            }
            out.push((rel.clone(), file));
        }
        say_non_free(archive, name, files);
    }
    Ok(out)
}

/// Say on stderr what came from outside `main` (the pool path names the
/// component: pool/<component>/...).
fn say_non_free(archive: &Archive, name: &str, files: &[String]) {
    if let Some(package) = archive.universe().get(name) {
        let component = package.filename.split('/').nth(1).unwrap_or("main");
        if component != "main" {
            eprintln!(
                "ballast: from {component}: {} {} ({})",
                package.name,
                package.version,
                files.join(", ")
            );
        }
    }
}

/// (path on the boot partition, file on the host), in the board file's order.
pub fn collect(
    archive: &Archive,
    board: &Board,
    args: &ArchiveArgs,
    kernel: &KernelTree,
) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for (name, files) in &board.boot.files {
        let tree = debpkg::unpacked(archive, &args.cache_dir(), name)?;
        for (dest, src) in files {
            let file = tree.join(src);
            if !file.is_file() {
                bail!(
                    "{}: boot.files.{name}: {name} has no {src}; name a file the package ships",
                    board.path.display()
                );
            }
            out.push((dest.clone(), file));
        }
        let names: Vec<String> = files.keys().cloned().collect();
        say_non_free(archive, name, &names);
    }
    out.extend(kernel_input::dtbs(archive, board, args, kernel)?);
    Ok(out)
}
