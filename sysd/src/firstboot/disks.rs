//! `disk_setup` and `fs_setup`: partition and format a data disk, once per
//! instance, and only what is blank.
//!
//! cloud-init's rule, kept strictly: a disk that has a partition table or a
//! filesystem signature is never repartitioned, and a partition or disk with
//! a filesystem is never formatted, unless its entry says `overwrite: true`.
//! "Blank" is decided by reading the signatures ourselves ([`probe`]), not by
//! guessing from sizes.
//!
//! The table is written with `ballast_disk`'s GPT and MBR encoders (the same
//! ones the builder and init use), then the kernel is asked to read it again
//! (BLKRRPART). Filesystems are made by the image's e2fsprogs / dosfstools /
//! util-linux (`mkfs.ext4`, `mkfs.vfat`, `mkswap`), run from the userland with
//! the host's `/dev` (see [`super::sys::run_in_userland`]).
//!
//! Failures are errors for the console and `osctl status`; they never stop
//! the boot.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ballast_config::{DiskSetup, FsSetup};
use ballast_disk::gpt::{self, Entry, Header};
use ballast_disk::mbr::{self, MbrEntry};
use ballast_disk::{types, Guid, MIB, SECTOR};

use super::apply::Layout;

/// What a device's first bytes say it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// No table, no filesystem signature we know.
    Blank,
    /// A partition table (`gpt`, `mbr`).
    Table(&'static str),
    /// A filesystem or other signature (`ext4`, `vfat`, `xfs`, `swap`...).
    Fs(&'static str),
}

fn at(buf: &[u8], off: usize, magic: &[u8]) -> bool {
    buf.get(off..off + magic.len()) == Some(magic)
}

/// Read the signatures in the first 68 KiB of `dev` (a disk, a partition, or
/// an image file in tests).
pub fn probe(dev: &mut (impl Read + Seek)) -> std::io::Result<Content> {
    let mut buf = vec![0u8; 0x11000];
    dev.seek(SeekFrom::Start(0))?;
    let mut n = 0;
    while n < buf.len() {
        match dev.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    buf.truncate(n);
    Ok(classify(&buf))
}

/// The signatures of the first bytes of a device.
pub fn classify(b: &[u8]) -> Content {
    if at(b, 512, b"EFI PART") {
        return Content::Table("gpt");
    }
    // ext2/3/4: the superblock at 1024, magic 0xEF53 at offset 56.
    if at(b, 1080, &[0x53, 0xef]) {
        let compat = b
            .get(1116..1120)
            .map_or(0, |x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]));
        let incompat = b
            .get(1120..1124)
            .map_or(0, |x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]));
        return Content::Fs(if incompat & 0x40 != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        });
    }
    if at(b, 0, b"XFSB") {
        return Content::Fs("xfs");
    }
    if at(b, 0x10040, b"_BHRfS_M") {
        return Content::Fs("btrfs");
    }
    if at(b, 4086, b"SWAPSPACE2") || at(b, 4086, b"SWAP-SPACE") {
        return Content::Fs("swap");
    }
    if at(b, 0, b"LUKS\xba\xbe") {
        return Content::Fs("crypto_LUKS");
    }
    if at(b, 512 + 24, b"LVM2 001") || at(b, 512, b"LABELONE") {
        return Content::Fs("LVM2_member");
    }
    if at(b, 0x8001, b"CD001") {
        return Content::Fs("iso9660");
    }
    if at(b, 82, b"FAT32   ") || at(b, 54, b"FAT12   ") || at(b, 54, b"FAT16   ") {
        return Content::Fs("vfat");
    }
    if at(b, 510, &[0x55, 0xaa]) {
        return Content::Table("mbr");
    }
    Content::Blank
}

/// The partitions of a `layout` in whole MiB, first at 1 MiB, the last one
/// ending 1 MiB before the end (room for the GPT backup): (first, last) LBAs.
pub fn place(disk_sectors: u64, percents: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    let total: u32 = percents.iter().map(|&p| u32::from(p)).sum();
    if percents.is_empty() || percents.contains(&0) || total > 100 {
        return Err(format!(
            "layout {percents:?}: sizes must be 1..100 percent and add up to at most 100"
        ));
    }
    let mib = MIB / SECTOR;
    let usable = (disk_sectors / mib).saturating_sub(2);
    if usable < percents.len() as u64 {
        return Err(format!(
            "the disk ({} MiB) is too small for {} partitions",
            disk_sectors / mib,
            percents.len()
        ));
    }
    let mut out = Vec::new();
    let mut start = mib;
    for &p in percents {
        let size = (usable * u64::from(p) / 100).max(1) * mib;
        out.push((start, start + size - 1));
        start += size;
    }
    Ok(out)
}

/// Write a fresh table of `kind` (`gpt` or `mbr`) with `parts` (from
/// [`place`]) to `dev` of `disk_sectors`.
pub fn write_table(
    dev: &mut (impl Write + Seek),
    disk_sectors: u64,
    kind: &str,
    parts: &[(u64, u64)],
    disk_guid: Guid,
) -> std::io::Result<()> {
    let mut put = |lba: u64, bytes: &[u8]| -> std::io::Result<()> {
        dev.seek(SeekFrom::Start(lba * SECTOR))?;
        dev.write_all(bytes)
    };
    match kind {
        "mbr" => {
            let mut entries = [MbrEntry::default(); 4];
            for (e, &(first, last)) in entries.iter_mut().zip(parts) {
                *e = MbrEntry {
                    bootable: false,
                    system_id: 0x83,
                    start_lba: first as u32,
                    sectors: (last + 1 - first) as u32,
                };
            }
            let sig = u32::from_le_bytes([
                disk_guid.0[0],
                disk_guid.0[1],
                disk_guid.0[2],
                disk_guid.0[3],
            ]);
            put(0, &mbr::new_sector(sig, entries, SECTOR))?;
            // No stale GPT header may outlive the new MBR.
            put(1, &vec![0u8; SECTOR as usize])?;
        }
        _ => {
            let entries: Vec<Entry> = parts
                .iter()
                .enumerate()
                .map(|(i, &(first, last))| Entry {
                    type_guid: types::LINUX_DATA,
                    uuid: Guid::stable(&format!("{:02x?}", disk_guid.0), &format!("part{}", i + 1)),
                    first_lba: first,
                    last_lba: last,
                    attributes: 0,
                    name: format!("data{}", i + 1),
                })
                .collect();
            let array = gpt::encode_entries(&entries);
            let array_sectors = array.len() as u64 / SECTOR;
            let last = disk_sectors - 1;
            let header = |my: u64, alt: u64, entries_lba: u64| Header {
                my_lba: my,
                alternate_lba: alt,
                first_usable_lba: 2 + array_sectors,
                last_usable_lba: last - 1 - array_sectors,
                disk_guid,
                entries_lba,
                entry_count: gpt::ENTRY_COUNT,
                entry_size: gpt::ENTRY_SIZE,
                entries_crc: crc32(&array),
            };
            put(0, &mbr::protective(disk_sectors, SECTOR))?;
            put(1, &header(1, last, 2).encode(SECTOR))?;
            put(2, &array)?;
            put(last - array_sectors, &array)?;
            put(last, &header(last, 1, last - array_sectors).encode(SECTOR))?;
        }
    }
    dev.flush()
}

/// CRC-32 (IEEE), as the GPT header's entry-array checksum.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The device node of partition `n` of `disk` (`/dev/vdb` → `/dev/vdb1`,
/// `/dev/nvme0n1` → `/dev/nvme0n1p1`).
pub fn partition_path(disk: &str, n: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{n}")
    } else {
        format!("{disk}{n}")
    }
}

/// A device as the config names it: `/dev/vdb`, or a bare `vdb`.
pub fn device_path(name: &str) -> Result<String, String> {
    if name.starts_with("/dev/") && !name.contains("..") {
        Ok(name.to_string())
    } else if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()) {
        if name.starts_with("ephemeral") || name == "swap" {
            Err(format!(
                "{name}: cloud-init's cloud-specific disk aliases are not known on Ballast; name the device (/dev/vdb)"
            ))
        } else {
            Ok(format!("/dev/{name}"))
        }
    } else {
        Err(format!("{name}: not a device (/dev/vdb)"))
    }
}

/// What `disk_setup` does with a disk of this content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskAction {
    Partition,
    /// Left alone, with why.
    Skip(String),
}

pub fn disk_decision(content: &Content, overwrite: bool) -> DiskAction {
    match content {
        Content::Blank => DiskAction::Partition,
        _ if overwrite => DiskAction::Partition,
        Content::Table(t) => DiskAction::Skip(format!("it has a partition table ({t})")),
        Content::Fs(f) => DiskAction::Skip(format!("it holds a filesystem ({f})")),
    }
}

/// Whether `fs_setup` formats a target of this content.
pub fn fs_decision(content: &Content, overwrite: bool) -> DiskAction {
    match content {
        Content::Blank => DiskAction::Partition,
        _ if overwrite => DiskAction::Partition,
        Content::Fs(f) => DiskAction::Skip(format!("it holds a filesystem ({f})")),
        Content::Table(t) => DiskAction::Skip(format!(
            "it has a partition table ({t}): name a partition (`partition: 1` or /dev/vdb1)"
        )),
    }
}

fn open_rw(dev: &str) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|e| format!("cannot open {dev}: {e}"))
}

fn probe_path(dev: &str) -> Result<Content, String> {
    let mut f = File::open(dev).map_err(|e| format!("cannot open {dev}: {e}"))?;
    probe(&mut f).map_err(|e| format!("cannot read {dev}: {e}"))
}

/// BLKRRPART: the kernel reads the new table; wait for the partition nodes.
fn reread(f: &File, disk: &str, parts: usize) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    const BLKRRPART: libc::c_ulong = 0x125f;
    // SAFETY: ioctl(2) BLKRRPART takes no argument.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKRRPART as _, 0) };
    if rc != 0 {
        return Err(format!(
            "{disk}: the kernel did not read the new table (BLKRRPART: {}); reboot to use it",
            std::io::Error::last_os_error()
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let last = PathBuf::from(partition_path(disk, parts as u32));
    while !last.exists() {
        if Instant::now() > deadline {
            return Err(format!("{disk}: {} did not appear", last.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// One `disk_setup` entry on the device.
pub fn setup_disk(d: &DiskSetup) -> Result<String, String> {
    let disk = device_path(&d.device)?;
    if d.layout.is_empty() {
        return Ok(format!("disk_setup {disk}: layout false: nothing to do"));
    }
    if !matches!(d.table_type.as_str(), "gpt" | "mbr") {
        return Err(format!(
            "disk_setup {disk}: table_type {}: gpt or mbr",
            d.table_type
        ));
    }
    let content = probe_path(&disk)?;
    if let DiskAction::Skip(why) = disk_decision(&content, d.overwrite) {
        return Ok(format!(
            "disk_setup {disk}: left alone: {why} (overwrite: true to repartition)"
        ));
    }
    let mut f = open_rw(&disk)?;
    let bytes = f
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("cannot size {disk}: {e}"))?;
    let sectors = bytes / SECTOR;
    let parts = place(sectors, &d.layout).map_err(|e| format!("disk_setup {disk}: {e}"))?;
    // A new table gets a new disk GUID: the time makes it unique per machine.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let guid = Guid::stable("ballast-disk-setup", &format!("{disk}-{bytes}-{now}"));
    write_table(&mut f, sectors, &d.table_type, &parts, guid)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("disk_setup {disk}: cannot write the table: {e}"))?;
    reread(&f, &disk, parts.len())?;
    Ok(format!(
        "disk_setup {disk}: {} table with {} partition(s) written",
        d.table_type,
        parts.len()
    ))
}

/// The device `fs_setup` formats: the disk, or one of its partitions.
pub fn fs_target(fs: &FsSetup) -> Result<String, String> {
    let dev = device_path(&fs.device)?;
    match fs.partition.as_deref() {
        None | Some("none") => Ok(dev),
        Some("auto" | "any") => {
            // cloud-init: the first partition (or the disk itself when it has
            // no table).
            let p = partition_path(&dev, 1);
            Ok(if Path::new(&p).exists() { p } else { dev })
        }
        Some(n) => match n.parse::<u32>() {
            Ok(n) if n > 0 => Ok(partition_path(&dev, n)),
            _ => Err(format!(
                "fs_setup {dev}: partition {n}: auto, any, none or a number"
            )),
        },
    }
}

/// The mkfs command line for an entry (argv, run from the userland).
pub fn mkfs_argv(fs: &FsSetup, target: &str) -> Result<Vec<String>, String> {
    let mut argv: Vec<String> = match fs.filesystem.as_str() {
        "ext4" | "ext3" | "ext2" => vec![format!("/usr/sbin/mkfs.{}", fs.filesystem), "-F".into(), "-q".into()],
        "vfat" | "fat" => vec!["/usr/sbin/mkfs.vfat".into()],
        "swap" => vec!["/usr/sbin/mkswap".into()],
        other => {
            return Err(format!(
                "fs_setup {target}: filesystem {other}: this image makes ext4, ext3, ext2, vfat and swap"
            ))
        }
    };
    if let Some(l) = &fs.label {
        argv.push(
            if fs.filesystem.starts_with("ext") || fs.filesystem == "swap" {
                "-L".into()
            } else {
                "-n".into()
            },
        );
        argv.push(l.clone());
    }
    argv.extend(fs.extra_opts.iter().cloned());
    argv.push(target.to_string());
    Ok(argv)
}

/// One `fs_setup` entry on the device.
pub fn setup_fs(l: &Layout, fs: &FsSetup) -> Result<String, String> {
    let target = fs_target(fs)?;
    let content = probe_path(&target)?;
    if let DiskAction::Skip(why) = fs_decision(&content, fs.overwrite) {
        return Ok(format!(
            "fs_setup {target}: left alone: {why} (overwrite: true to format)"
        ));
    }
    let argv = mkfs_argv(fs, &target)?;
    let out = super::sys::run_in_userland(&l.userland(), &argv).map_err(|e| e.to_string())?;
    Ok(format!(
        "fs_setup {target}: {} made{}{}",
        fs.filesystem,
        fs.label
            .as_deref()
            .map(|x| format!(", label {x}"))
            .unwrap_or_default(),
        if out.trim().is_empty() {
            String::new()
        } else {
            format!(" ({})", out.trim())
        }
    ))
}

/// Partition, then format (per instance). Notes and errors.
pub fn apply(l: &Layout, disks: &[DiskSetup], fss: &[FsSetup]) -> (Vec<String>, Vec<String>) {
    let (mut notes, mut errors) = (Vec::new(), Vec::new());
    for d in disks {
        match setup_disk(d) {
            Ok(n) => notes.push(format!("config: {n}")),
            Err(e) => errors.push(format!("config: disk_setup: {e}")),
        }
    }
    for fs in fss {
        match setup_fs(l, fs) {
            Ok(n) => notes.push(format!("config: {n}")),
            Err(e) => errors.push(format!("config: fs_setup: {e}")),
        }
    }
    (notes, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn fs(dev: &str, part: Option<&str>) -> FsSetup {
        FsSetup {
            label: Some("data".into()),
            filesystem: "ext4".into(),
            device: dev.into(),
            partition: part.map(str::to_string),
            overwrite: false,
            extra_opts: vec![],
        }
    }

    #[test]
    fn a_zeroed_disk_is_blank_and_signatures_are_recognised() {
        assert_eq!(classify(&vec![0u8; 0x11000]), Content::Blank);
        let mut b = vec![0u8; 0x11000];
        b[1080] = 0x53;
        b[1081] = 0xef;
        b[1120] = 0x40;
        assert_eq!(classify(&b), Content::Fs("ext4"));
        let mut b = vec![0u8; 4096];
        b[510] = 0x55;
        b[511] = 0xaa;
        assert_eq!(classify(&b), Content::Table("mbr"));
        let mut b = vec![0u8; 4096];
        b[4086..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(classify(&b), Content::Fs("swap"));
        let mut b = vec![0u8; 4096];
        b[0..4].copy_from_slice(b"XFSB");
        assert_eq!(classify(&b), Content::Fs("xfs"));
    }

    #[test]
    fn only_blank_disks_are_partitioned_unless_overwrite() {
        assert_eq!(disk_decision(&Content::Blank, false), DiskAction::Partition);
        assert!(matches!(
            disk_decision(&Content::Table("gpt"), false),
            DiskAction::Skip(_)
        ));
        assert!(matches!(
            disk_decision(&Content::Fs("ext4"), false),
            DiskAction::Skip(_)
        ));
        assert_eq!(
            disk_decision(&Content::Fs("ext4"), true),
            DiskAction::Partition
        );
        assert!(matches!(
            fs_decision(&Content::Fs("ext4"), false),
            DiskAction::Skip(_)
        ));
        assert_eq!(fs_decision(&Content::Blank, false), DiskAction::Partition);
        assert_eq!(
            fs_decision(&Content::Fs("xfs"), true),
            DiskAction::Partition
        );
    }

    #[test]
    fn a_written_gpt_reads_back_and_is_no_longer_blank() {
        let sectors = 64 * MIB / SECTOR;
        let mut dev = Cursor::new(vec![0u8; (sectors * SECTOR) as usize]);
        let parts = place(sectors, &[50, 50]).unwrap();
        write_table(&mut dev, sectors, "gpt", &parts, Guid::stable("t", "disk")).unwrap();
        let t = ballast_disk::read_table(&mut dev, SECTOR).unwrap();
        assert_eq!(t.kind, ballast_disk::TableKind::Gpt);
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.partitions[0].start_lba, MIB / SECTOR);
        assert!(t.partitions[1].end_lba <= t.last_usable_lba);
        assert_eq!(probe(&mut dev).unwrap(), Content::Table("gpt"));
        assert!(matches!(
            disk_decision(&probe(&mut dev).unwrap(), false),
            DiskAction::Skip(_)
        ));
    }

    #[test]
    fn a_written_mbr_reads_back() {
        let sectors = 32 * MIB / SECTOR;
        let mut dev = Cursor::new(vec![0u8; (sectors * SECTOR) as usize]);
        let parts = place(sectors, &[100]).unwrap();
        write_table(&mut dev, sectors, "mbr", &parts, Guid::stable("t", "m")).unwrap();
        let t = ballast_disk::read_table(&mut dev, SECTOR).unwrap();
        assert_eq!(t.kind, ballast_disk::TableKind::Mbr);
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(probe(&mut dev).unwrap(), Content::Table("mbr"));
    }

    #[test]
    fn layouts_and_devices_are_checked() {
        assert!(place(1000, &[60, 60]).is_err());
        assert!(place(1000, &[0]).is_err());
        assert_eq!(partition_path("/dev/vdb", 1), "/dev/vdb1");
        assert_eq!(partition_path("/dev/nvme0n1", 2), "/dev/nvme0n1p2");
        assert_eq!(device_path("vdb").unwrap(), "/dev/vdb");
        assert!(device_path("ephemeral0").is_err());
        assert!(device_path("/dev/../etc/passwd").is_err());
        assert_eq!(fs_target(&fs("/dev/vdb", Some("1"))).unwrap(), "/dev/vdb1");
        assert_eq!(fs_target(&fs("/dev/vdb1", None)).unwrap(), "/dev/vdb1");
        assert!(fs_target(&fs("/dev/vdb", Some("x"))).is_err());
        assert_eq!(
            mkfs_argv(&fs("/dev/vdb", Some("1")), "/dev/vdb1").unwrap(),
            ["/usr/sbin/mkfs.ext4", "-F", "-q", "-L", "data", "/dev/vdb1"]
        );
        let mut z = fs("/dev/vdb", None);
        z.filesystem = "zfs".into();
        assert!(mkfs_argv(&z, "/dev/vdb").is_err());
    }
}
