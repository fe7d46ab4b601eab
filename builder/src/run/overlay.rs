//! The VM's own disk for `ballast run`: a qcow2 overlay beside the disk image,
//! backed by it, with a virtual size of a few GiB.
//!
//! Init grows the state partition to fill whatever disk it boots from, so a
//! VM booted from the overlay gets a useful `/var` (Docker's images, volumes)
//! while the built image keeps its size: the overlay holds only what the VM
//! wrote. It is kept, so the next `ballast run` boots the same machine again.
//! It must never write to the disk image: the build output stays as built.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Virtual size of a new overlay (or the image's own size, when larger).
pub const SIZE: u64 = 8 << 30;

/// The first bytes of every qcow2 image.
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// The overlay of `image`: `disk.img` -> `disk.vm.qcow2`.
pub fn path_of(image: &Path) -> PathBuf {
    image.with_extension("vm.qcow2")
}

/// What the overlay was made from (size and mtime of the image), kept beside
/// it: a rebuilt image must not be read through an overlay of the old one.
fn base_record(overlay: &Path) -> PathBuf {
    overlay.with_extension("base")
}

fn identity(image: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(image).with_context(|| format!("reading {}", image.display()))?;
    Ok(format!(
        "{} {} {}.{:09} {}\n",
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.len()
    ))
}

/// The overlay to boot for `image`, made when missing, when `fresh`, or when
/// the image changed since the overlay was made (a new build).
/// Also says whether the overlay was made now (it then reads exactly as
/// `image`).
pub fn prepare_new(image: &Path, fresh: bool) -> Result<(PathBuf, bool)> {
    if !image.is_file() {
        bail!("{}: no such disk image", image.display());
    }
    if format_of(image)? == "qcow2" {
        // Already a VM disk (an overlay made by hand): boot it as it is.
        return Ok((image.to_path_buf(), false));
    }
    let overlay = path_of(image);
    let record = base_record(&overlay);
    let now = identity(image)?;
    let recorded = std::fs::read_to_string(&record).ok();
    let stale = recorded.as_deref().is_some_and(|r| r != now);
    if stale {
        eprintln!(
            "ballast: {} changed since {} was made: starting the VM afresh",
            image.display(),
            overlay.display()
        );
    }
    let new = fresh || stale || recorded.is_none() || !overlay.is_file();
    if new {
        create(image, &overlay)?;
        std::fs::write(&record, now).with_context(|| format!("writing {}", record.display()))?;
    }
    Ok((overlay, new))
}

/// A new, empty overlay of `image` (and no UEFI variables: a new machine).
fn create(image: &Path, overlay: &Path) -> Result<()> {
    for old in [overlay.to_path_buf(), overlay.with_extension("efivars.fd")] {
        match std::fs::remove_file(&old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", old.display())),
        }
    }
    let len = std::fs::metadata(image)
        .with_context(|| format!("reading {}", image.display()))?
        .len();
    // The backing file is named relative to the overlay (they sit side by
    // side), so the directory can be moved.
    let backing = image
        .file_name()
        .with_context(|| format!("{}: not a file name", image.display()))?;
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(backing)
        .arg(overlay)
        .arg(SIZE.max(len).to_string())
        .output()
        .context("running qemu-img: is QEMU installed? (scripts/setup)")?;
    if !out.status.success() {
        bail!(
            "qemu-img create {}: {}",
            overlay.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// QEMU's format name for `image`: `qcow2` by its magic, else `raw`.
pub fn format_of(image: &Path) -> Result<&'static str> {
    let mut f =
        std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .with_context(|| format!("reading {}", image.display()))?;
    Ok(if n == 4 && &magic == QCOW2_MAGIC {
        "qcow2"
    } else {
        "raw"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_qemu_img() -> bool {
        Command::new("qemu-img").arg("--version").output().is_ok()
    }

    #[test]
    fn an_overlay_is_kept_renewed_on_fresh_and_when_the_image_changes() {
        if !have_qemu_img() {
            panic!("qemu-img is missing: run scripts/setup");
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();

        let (overlay, new) = prepare_new(&image, false).unwrap();
        assert!(new);
        assert_eq!(overlay, dir.path().join("disk.vm.qcow2"));
        assert_eq!(format_of(&overlay).unwrap(), "qcow2");
        assert_eq!(format_of(&image).unwrap(), "raw");
        let info = Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&overlay)
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["virtual-size"], SIZE, "{info}");
        assert_eq!(info["backing-filename"], "disk.img", "{info}");

        // What the VM wrote survives the next run: the overlay is the same file.
        let vars = overlay.with_extension("efivars.fd");
        std::fs::write(&vars, b"vars").unwrap();
        let marker = std::fs::metadata(&overlay).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&overlay)
            .unwrap()
            .set_len(marker + 512)
            .unwrap();
        assert!(!prepare_new(&image, false).unwrap().1);
        assert_eq!(std::fs::metadata(&overlay).unwrap().len(), marker + 512);
        assert!(vars.is_file(), "a kept VM keeps its UEFI variables");

        // --fresh: a new overlay and no old UEFI variables.
        assert!(prepare_new(&image, true).unwrap().1);
        assert_eq!(std::fs::metadata(&overlay).unwrap().len(), marker);
        assert!(!vars.is_file());

        // A rebuilt image (a new file in its place) gets a new overlay too.
        std::fs::write(&vars, b"vars").unwrap();
        let tmp = dir.path().join("disk.img.new");
        std::fs::write(&tmp, vec![9u8; 1 << 20]).unwrap();
        std::fs::rename(&tmp, &image).unwrap();
        assert!(prepare_new(&image, false).unwrap().1);
        assert!(!vars.is_file(), "an overlay of the old image was reused");
        // The image itself was never written.
        assert_eq!(std::fs::read(&image).unwrap(), vec![9u8; 1 << 20]);

        // A qcow2 DISK is booted as it is.
        assert_eq!(prepare_new(&overlay, false).unwrap(), (overlay, false));
    }
}
