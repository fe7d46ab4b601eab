//! The QEMU profile's `kernel_args` on a U-Boot board's disk (raspi3b:
//! `ballast.watchdog=off`): `ballast run` writes them to the VM disk's
//! boot partition as `cmdline_extra.txt`, which the board's boot script adds
//! to the kernel command line (`ballast_slot::uboot::CMDLINE_EXTRA`), the way a
//! user adds arguments on a real card. They go into a VM overlay when it is
//! made (through `qemu-io`: the built image stays as built), or into the disk
//! itself with `--no-overlay` (the VM's own card).

use anyhow::{bail, Context, Result};
use ballast_disk::SECTOR;
use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use ballast_slot::uboot::CMDLINE_EXTRA;

/// The file's text: the arguments on one line.
fn text(args: &[String]) -> Vec<u8> {
    format!("{}\n", args.join(" ")).into_bytes()
}

/// Byte offset and length of the boot partition of the raw disk `f`, found
/// as the installer and `ballast flash` find it ([`ballast_install::boot_partition`]).
fn boot_partition(f: &mut File, name: &Path) -> Result<(u64, u64)> {
    let table = ballast_disk::read_table(f, SECTOR)
        .with_context(|| format!("{}: reading the partition table", name.display()))?;
    let p = ballast_install::boot_partition(&table)
        .with_context(|| format!("{}: the disk has no partitions", name.display()))?;
    Ok((p.start_lba * SECTOR, (p.end_lba + 1 - p.start_lba) * SECTOR))
}

/// Write the file into the boot partition of the raw disk `disk` (booted
/// with `--no-overlay`: the VM writes to it anyway).
pub fn write_raw(disk: &Path, args: &[String]) -> Result<()> {
    write_boot_files(disk, &[(CMDLINE_EXTRA.into(), text(args))])
}

/// Add or replace `files` (path on the partition, content) in the boot
/// partition of the raw disk `disk`, in place.
pub fn write_boot_files(disk: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .with_context(|| format!("opening {}", disk.display()))?;
    let (offset, len) = boot_partition(&mut f, disk)?;
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let f = ballast_disk::fat::write_files(f, offset, len, disk, files)
        .with_context(|| format!("{}: writing {}", disk.display(), names.join(", ")))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", disk.display()))
}

/// Write the file into `overlay`, a new qcow2 overlay of the raw disk `base`
/// (so its boot partition still reads as `base`'s): the partition is changed
/// in memory and the changed blocks are written through `qemu-io`.
pub fn write_overlay(base: &Path, overlay: &Path, args: &[String]) -> Result<()> {
    let mut f = File::open(base).with_context(|| format!("opening {}", base.display()))?;
    let (offset, len) = boot_partition(&mut f, base)?;
    let size = usize::try_from(len).context("boot partition size")?;
    let mut before = vec![0u8; size];
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut before))
        .with_context(|| format!("reading the boot partition of {}", base.display()))?;
    let after = ballast_disk::fat::write_files(
        Cursor::new(before.clone()),
        0,
        len,
        base,
        &[(CMDLINE_EXTRA.into(), text(args))],
    )
    .with_context(|| format!("{}: writing {CMDLINE_EXTRA}", base.display()))?
    .into_inner();
    // A few blocks change (directory entry, both FATs, the file's cluster).
    const BLOCK: usize = 64 << 10;
    let work = overlay.with_extension("args.tmp");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut cmd = Command::new("qemu-io");
    // Run in `work` so the block files are named without the user's path
    // (qemu-io splits its commands at spaces).
    cmd.current_dir(&work).args(["-f", "qcow2"]);
    for (i, (a, b)) in before.chunks(BLOCK).zip(after.chunks(BLOCK)).enumerate() {
        if a != b {
            let name = format!("block{i}");
            std::fs::write(work.join(&name), b)
                .with_context(|| format!("writing {}", work.join(&name).display()))?;
            let at = offset + (i * BLOCK) as u64;
            cmd.arg("-c")
                .arg(format!("write -q -s {name} {at} {}", b.len()));
        }
    }
    let overlay_abs =
        std::path::absolute(overlay).with_context(|| format!("resolving {}", overlay.display()))?;
    let out = cmd
        .arg(&overlay_abs)
        .output()
        .context("running qemu-io: is QEMU installed? (scripts/setup)")?;
    let _ = std::fs::remove_dir_all(&work);
    // qemu-io exits 0 even when a command fails; it says so on its output.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !said.trim().is_empty() {
        bail!(
            "qemu-io writing {CMDLINE_EXTRA} into {}: {}",
            overlay.display(),
            said.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_disk::mbr::{new_sector, MbrEntry};
    use std::io::Write;

    /// A disk with an MBR and a 64 MiB FAT32 partition holding `boot.scr`.
    fn disk(dir: &Path) -> std::path::PathBuf {
        let fat = dir.join("boot.fat");
        ballast_disk::fat::build(
            &fat,
            ballast_disk::fat::MIN_BYTES,
            "BALLAST",
            0x1234,
            &[("boot.scr".into(), b"script".to_vec())],
        )
        .unwrap();
        let start = 2048u32;
        let sectors = (ballast_disk::fat::MIN_BYTES / SECTOR) as u32;
        let entry = MbrEntry {
            bootable: true,
            system_id: 0x0c,
            start_lba: start,
            sectors,
        };
        let none = MbrEntry::default();
        let img = dir.join("disk.img");
        let mut f = File::create(&img).unwrap();
        f.write_all(&new_sector(0xb1d35bb6, [entry, none, none, none], SECTOR))
            .unwrap();
        f.seek(SeekFrom::Start(u64::from(start) * SECTOR)).unwrap();
        f.write_all(&std::fs::read(&fat).unwrap()).unwrap();
        img
    }

    /// The named file in the boot partition of the raw disk `img`.
    fn read_file(img: &Path, name: &str) -> Option<Vec<u8>> {
        let mut f = File::open(img).unwrap();
        let (offset, len) = boot_partition(&mut f, img).unwrap();
        let mut part = vec![0u8; len as usize];
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.read_exact(&mut part).unwrap();
        let fs = fatfs::FileSystem::new(Cursor::new(part), fatfs::FsOptions::new()).unwrap();
        let mut file = fs.root_dir().open_file(name).ok()?;
        let mut out = Vec::new();
        file.read_to_end(&mut out).unwrap();
        Some(out)
    }

    #[test]
    fn the_arguments_go_into_a_new_overlay_and_not_into_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = disk(dir.path());
        let before = std::fs::read(&img).unwrap();
        let overlay = dir.path().join("disk.vm.qcow2");
        let ok = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b", "disk.img"])
            .arg(&overlay)
            .arg("128M")
            .status()
            .expect("qemu-img: run scripts/setup");
        assert!(ok.success());
        let args = vec!["ballast.watchdog=off".to_owned(), "quiet".to_owned()];
        write_overlay(&img, &overlay, &args).unwrap();
        assert_eq!(std::fs::read(&img).unwrap(), before, "the image changed");
        assert!(!overlay.with_extension("args.tmp").exists());
        // What the VM reads: the overlay over the image.
        let seen = dir.path().join("seen.img");
        let ok = Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&overlay)
            .arg(&seen)
            .status()
            .unwrap();
        assert!(ok.success());
        assert_eq!(
            read_file(&seen, CMDLINE_EXTRA).unwrap(),
            b"ballast.watchdog=off quiet\n"
        );
        assert_eq!(read_file(&seen, "boot.scr").unwrap(), b"script");
    }

    #[test]
    fn the_arguments_go_into_a_raw_disk_booted_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let img = disk(dir.path());
        write_raw(&img, &["a=1".to_owned()]).unwrap();
        assert_eq!(read_file(&img, CMDLINE_EXTRA).unwrap(), b"a=1\n");
        assert_eq!(read_file(&img, "boot.scr").unwrap(), b"script");
    }

    #[test]
    fn a_disk_without_a_partition_table_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("blank.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let e = format!("{:#}", write_raw(&img, &["a=1".to_owned()]).unwrap_err());
        assert!(e.contains("blank.img"), "{e}");
    }
}
