//! FAT boot/ESP filesystem images, built with the `fatfs` crate: FAT32 of a
//! given size for disk boot partitions ([`build`], [`write_files`]), and FAT16
//! sized to its files for read-only media such as the ISO's El Torito EFI
//! image ([`build_fitted`]).
//!
//! Reproducible: the `fatfs` crate is built without `chrono`, so every
//! timestamp is 1980-01-01 00:00; files are added in path order whatever
//! order the caller gives; volume id and label are the caller's.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};

use crate::error::io_err;
use crate::DiskError;

/// Smallest volume [`build`] accepts. FAT32 needs at least 65525 clusters;
/// with 512-byte clusters (what `fatfs` picks up to 260 MiB) that is about
/// 33 MiB, and firmware is happier with room to spare, so 64 MiB.
pub const MIN_BYTES: u64 = 64 << 20;

/// Write a FAT32 filesystem image of `size` bytes to `path` (atomically:
/// `<path>.tmp`, fsync, rename) holding `files` — relative paths with '/'
/// separators, parent directories created — with the given volume label
/// (at most 11 of A-Z 0-9 space _ -, lower case is upper-cased) and volume id.
pub fn build(
    path: &Path,
    size: u64,
    label: &str,
    volume_id: u32,
    files: &[(String, Vec<u8>)],
) -> Result<(), DiskError> {
    if size < MIN_BYTES {
        return Err(DiskError::FatTooSmall {
            path: path.to_path_buf(),
            size,
            min: MIN_BYTES,
        });
    }
    let label_bytes = volume_label(path, label)?;
    let mut sorted: Vec<&(String, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, _) in &sorted {
        check_name(path, name)?;
    }
    let sectors = size / 512;
    let Ok(total_sectors) = u32::try_from(sectors) else {
        return Err(DiskError::Io {
            path: path.to_path_buf(),
            action: format!("formatting {size} bytes"),
            source: io::Error::other(
                "FAT32 holds at most 2^32 sectors (2 TiB); make the boot partition smaller",
            ),
        });
    };

    crate::atomic::replace(path, "FAT image", |tmp| {
        let file = sized_file(tmp, sectors * 512)?;
        let mut disk = Buffered::new(file, sectors * 512);
        let opts = FormatVolumeOptions::new()
            .fat_type(FatType::Fat32)
            .total_sectors(total_sectors)
            .volume_id(volume_id)
            .volume_label(label_bytes);
        fatfs::format_volume(&mut disk, opts).map_err(io_err(tmp, "formatting FAT32"))?;
        disk.seek(SeekFrom::Start(0))
            .map_err(io_err(tmp, "rewinding after formatting"))?;
        write_root_label(&mut disk, label_bytes)
            .map_err(io_err(tmp, "writing the volume label entry"))?;
        // fatfs expects the stream at the volume start.
        disk.seek(SeekFrom::Start(0))
            .map_err(io_err(tmp, "rewinding after the label"))?;
        {
            let fs = FileSystem::new(&mut disk, FsOptions::new().update_accessed_date(false))
                .map_err(io_err(tmp, "opening the new FAT32 volume"))?;
            for (name, data) in &sorted {
                add_file(&fs, name, data).map_err(|source| DiskError::Fat {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    source,
                })?;
            }
            fs.unmount()
                .map_err(io_err(tmp, "closing the FAT32 volume"))?;
        }
        fix_dot_entries(&mut disk).map_err(io_err(tmp, "fixing the '.'/'..' directory entries"))?;
        let file = disk
            .into_inner()
            .map_err(io_err(tmp, "writing the FAT image"))?;
        file.sync_all()
            .map_err(io_err(tmp, "syncing the FAT image"))
    })
}

/// Add (or replace) `files` in the existing FAT volume that lies at byte
/// `offset` of `dev` and is `len` bytes long: a partition of a disk image or
/// of a written device. `name` names the volume in errors. Parent directories
/// are created; other files are left alone. The caller syncs `dev`.
pub fn write_files<D: Read + Write + Seek>(
    dev: D,
    offset: u64,
    len: u64,
    name: &Path,
    files: &[(String, Vec<u8>)],
) -> Result<D, DiskError> {
    for (f, _) in files {
        check_name(name, f)?;
    }
    let mut disk = Buffered::existing(dev, offset, len);
    {
        let fs = FileSystem::new(&mut disk, FsOptions::new().update_accessed_date(false)).map_err(
            io_err(name, "opening the FAT volume (is it the boot partition?)"),
        )?;
        for (f, data) in files {
            add_file(&fs, f, data).map_err(|source| DiskError::Fat {
                path: name.to_path_buf(),
                name: f.clone(),
                source,
            })?;
        }
        fs.unmount()
            .map_err(io_err(name, "closing the FAT volume"))?;
    }
    fix_dot_entries(&mut disk).map_err(io_err(name, "fixing the '.'/'..' directory entries"))?;
    disk.into_inner()
        .map_err(io_err(name, "writing the FAT volume"))
}

fn add_file<T: fatfs::ReadWriteSeek>(
    fs: &FileSystem<T>,
    name: &str,
    data: &[u8],
) -> io::Result<()> {
    let root = fs.root_dir();
    if let Some((dir, _)) = name.rsplit_once('/') {
        // create_dir opens an existing directory, so creating each prefix is safe.
        let mut prefix = String::new();
        for part in dir.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            root.create_dir(&prefix)?;
        }
    }
    let mut f = root.create_file(name)?;
    f.truncate()?;
    f.write_all(data)?;
    f.flush()
}

fn check_name(path: &Path, name: &str) -> Result<(), DiskError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        || name
            .chars()
            .any(|c| c.is_control() || "\\:*?\"<>|".contains(c));
    if bad {
        return Err(DiskError::FatName {
            path: path.to_path_buf(),
            name: name.to_string(),
        });
    }
    Ok(())
}

fn volume_label(path: &Path, label: &str) -> Result<[u8; 11], DiskError> {
    let up = label.to_ascii_uppercase();
    let ok = up.len() <= 11
        && up
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b" _-".contains(&b));
    if !ok {
        return Err(DiskError::FatLabel {
            path: path.to_path_buf(),
            label: label.to_string(),
        });
    }
    let mut out = [b' '; 11];
    out[..up.len()].copy_from_slice(up.as_bytes());
    Ok(out)
}

/// `fatfs` 0.3 puts the label only in the boot sector; Windows, blkid and
/// fsck.fat read the volume-label entry in the root directory, so write
/// that too (first root directory slot, attribute 0x08, 1980 timestamps).
fn write_root_label(disk: &mut (impl Read + Write + Seek), label: [u8; 11]) -> io::Result<()> {
    if label == [b' '; 11] {
        return Ok(());
    }
    let mut bs = [0u8; 512];
    disk.seek(SeekFrom::Start(0))?;
    disk.read_exact(&mut bs)?;
    let bytes_per_sector = u64::from(u16::from_le_bytes([bs[11], bs[12]]));
    let sectors_per_cluster = u64::from(bs[13]);
    let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
    let fats = u64::from(bs[16]);
    let fat_sectors = u64::from(u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]]));
    let root_cluster = u64::from(u32::from_le_bytes([bs[44], bs[45], bs[46], bs[47]]));
    let data = reserved + fats * fat_sectors;
    let root = (data + (root_cluster - 2) * sectors_per_cluster) * bytes_per_sector;
    let mut entry = [0u8; 32];
    entry[..11].copy_from_slice(&label);
    entry[11] = 0x08;
    // Date 1980-01-01 (day 1, month 1) in the modified-date field.
    entry[24..26].copy_from_slice(&0x0021u16.to_le_bytes());
    disk.seek(SeekFrom::Start(root))?;
    disk.write_all(&entry)
}

/// `fatfs` 0.3 writes a long-name entry before every short entry, also
/// before the "." and ".." entries of a new directory, which must be the
/// first two slots (fsck.fat, and strict firmware, reject anything else).
/// Walk the tree and, in each subdirectory's first cluster, move "." and
/// ".." to slots 0 and 1 and mark the two stray long-name slots deleted.
/// ".." of a directory in the root points to cluster 0, as the spec says.
fn fix_dot_entries(disk: &mut (impl Read + Write + Seek)) -> io::Result<()> {
    let mut bs = [0u8; 512];
    disk.seek(SeekFrom::Start(0))?;
    disk.read_exact(&mut bs)?;
    let bps = u64::from(u16::from_le_bytes([bs[11], bs[12]]));
    let cluster_bytes = bps * u64::from(bs[13]);
    let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
    let fat_sectors = u64::from(u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]]));
    let root = u32::from_le_bytes([bs[44], bs[45], bs[46], bs[47]]);
    let data = (reserved + u64::from(bs[16]) * fat_sectors) * bps;
    let mut fat = vec![0u8; (fat_sectors * bps) as usize];
    disk.seek(SeekFrom::Start(reserved * bps))?;
    disk.read_exact(&mut fat)?;
    let next = |c: u32| -> Option<u32> {
        let i = c as usize * 4;
        let v = u32::from_le_bytes(fat.get(i..i + 4)?.try_into().ok()?) & 0x0fff_ffff;
        (2..0x0fff_fff8).contains(&v).then_some(v)
    };
    let at = |c: u32| data + u64::from(c - 2) * cluster_bytes;
    let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "directory cluster out of range");

    let mut todo = vec![(root, true)];
    let mut seen = std::collections::BTreeSet::new();
    while let Some((first, is_root)) = todo.pop() {
        if first < 2 || !seen.insert(first) {
            continue;
        }
        if !is_root {
            let mut e = [0u8; 128];
            disk.seek(SeekFrom::Start(at(first)))?;
            disk.read_exact(&mut e)?;
            if e[11] == 0x0f
                && &e[32..43] == b".          "
                && e[64 + 11] == 0x0f
                && &e[96..107] == b"..         "
            {
                let mut fixed = [0u8; 128];
                fixed[..32].copy_from_slice(&e[32..64]);
                fixed[32..64].copy_from_slice(&e[96..128]);
                let parent = u32::from(u16::from_le_bytes([fixed[52], fixed[53]])) << 16
                    | u32::from(u16::from_le_bytes([fixed[58], fixed[59]]));
                if parent == root {
                    fixed[52..54].fill(0);
                    fixed[58..60].fill(0);
                }
                fixed[64] = 0xe5;
                fixed[96] = 0xe5;
                disk.seek(SeekFrom::Start(at(first)))?;
                disk.write_all(&fixed)?;
            }
        }
        let mut c = Some(first);
        let mut buf = vec![0u8; cluster_bytes as usize];
        'chain: while let Some(cl) = c {
            if !seen.insert(u32::MAX - cl) && cl != first {
                return Err(corrupt());
            }
            disk.seek(SeekFrom::Start(at(cl)))?;
            disk.read_exact(&mut buf)?;
            if stamp_dates(&mut buf) {
                disk.seek(SeekFrom::Start(at(cl)))?;
                disk.write_all(&buf)?;
            }
            for e in buf.chunks(32) {
                match e[0] {
                    0 => break 'chain,
                    0xe5 | b'.' => continue,
                    _ => {}
                }
                if e[11] == 0x0f || e[11] & 0x08 != 0 || e[11] & 0x10 == 0 {
                    continue;
                }
                let sub = u32::from(u16::from_le_bytes([e[20], e[21]])) << 16
                    | u32::from(u16::from_le_bytes([e[26], e[27]]));
                todo.push((sub, false));
            }
            c = next(cl);
        }
    }
    // FSInfo: record the free cluster count and next free cluster (fatfs
    // leaves them "unknown", which fsck.fat reports and firmware may
    // recompute slowly on every boot).
    let total_sectors = u64::from(u32::from_le_bytes([bs[32], bs[33], bs[34], bs[35]]));
    let clusters = ((total_sectors * bps - data) / cluster_bytes) as u32;
    let free: Vec<u32> = (2..clusters + 2)
        .filter(|&c| {
            let i = c as usize * 4;
            fat.get(i..i + 4)
                .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x0fff_ffff == 0)
        })
        .collect();
    let info = u64::from(u16::from_le_bytes([bs[48], bs[49]])) * bps;
    let mut sector = vec![0u8; 512];
    disk.seek(SeekFrom::Start(info))?;
    disk.read_exact(&mut sector)?;
    if sector[0..4] == *b"RRaA" && sector[484..488] == *b"rrAa" {
        sector[488..492].copy_from_slice(&(free.len() as u32).to_le_bytes());
        let next_free = free.first().copied().unwrap_or(0xffff_ffff);
        sector[492..496].copy_from_slice(&next_free.to_le_bytes());
        disk.seek(SeekFrom::Start(info))?;
        disk.write_all(&sector)?;
    }
    disk.flush()
}

/// FAT date of 1980-01-01 (year 0, month 1, day 1).
const FAT_DATE_1980_01_01: u16 = (1 << 5) | 1;

/// Give every short entry in a directory cluster a valid date. `fatfs` 0.3
/// without its clock writes date 0 (month 0, day 0), which UEFI's FAT driver
/// treats as invalid: it then refuses to rename the file, and systemd-boot's
/// boot counting (which renames the entry) silently stops. Returns whether
/// anything changed.
fn stamp_dates(cluster: &mut [u8]) -> bool {
    let mut dirty = false;
    for e in cluster.chunks_mut(32) {
        if e[0] == 0 {
            break;
        }
        if e[0] == 0xe5 || e[11] == 0x0f {
            continue;
        }
        // Creation, last access and last modification dates.
        for off in [16usize, 18, 24] {
            if e[off] == 0 && e[off + 1] == 0 {
                e[off..off + 2].copy_from_slice(&FAT_DATE_1980_01_01.to_le_bytes());
                dirty = true;
            }
        }
    }
    dirty
}

/// A write-back sector cache in front of the image file: `fatfs` reads and
/// writes FAT entries and clusters a few bytes at a time, which as raw
/// syscalls makes a 64 MiB volume with a 30 MiB kernel take seconds.
/// Whole 64 KiB blocks are cached (at most the volume size, touched parts
/// only); all-zero blocks never written before are not written, so the
/// fresh (sparse, zero) file stays sparse.
///
/// Generic over the backing store so that [`write_files`] can edit a volume
/// inside a whole disk or device: `base` is the volume's byte offset there.
/// `fresh`: the backing bytes are known to be zero (a new sparse file), so
/// untouched all-zero blocks may stay holes; an existing volume is written
/// back block for block.
struct Buffered<F = File> {
    file: F,
    base: u64,
    fresh: bool,
    pos: u64,
    len: u64,
    /// Block number -> (bytes, dirty).
    blocks: std::collections::BTreeMap<u64, (Vec<u8>, bool)>,
    /// Blocks that have reached the file at least once.
    written: std::collections::BTreeSet<u64>,
}

const BLOCK: u64 = 64 * 1024;

impl Buffered<File> {
    /// `len`: the file's length (it was just sized to this).
    fn new(file: File, len: u64) -> Buffered {
        Buffered {
            file,
            base: 0,
            fresh: true,
            pos: 0,
            len,
            blocks: Default::default(),
            written: Default::default(),
        }
    }
}

impl<F: Read + Write + Seek> Buffered<F> {
    /// An existing volume of `len` bytes at byte `base` of `file`.
    fn existing(file: F, base: u64, len: u64) -> Buffered<F> {
        Buffered {
            file,
            base,
            fresh: false,
            pos: 0,
            len,
            blocks: Default::default(),
            written: Default::default(),
        }
    }

    fn block(&mut self, n: u64) -> io::Result<&mut (Vec<u8>, bool)> {
        if !self.blocks.contains_key(&n) {
            let mut b = vec![0u8; BLOCK as usize];
            let start = n * BLOCK;
            let want = (self.len.saturating_sub(start)).min(BLOCK) as usize;
            self.file.seek(SeekFrom::Start(self.base + start))?;
            self.file.read_exact(&mut b[..want])?;
            self.blocks.insert(n, (b, false));
        }
        self.blocks
            .get_mut(&n)
            .ok_or_else(|| io::Error::other("block cache lost a block"))
    }

    fn into_inner(mut self) -> io::Result<F> {
        self.flush()?;
        Ok(self.file)
    }
}

impl<F: Read + Write + Seek> Read for Buffered<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let n = self.pos / BLOCK;
        let off = (self.pos % BLOCK) as usize;
        let avail = ((BLOCK as usize) - off)
            .min((self.len - self.pos) as usize)
            .min(buf.len());
        let pos = self.pos;
        let (b, _) = self.block(n)?;
        buf[..avail].copy_from_slice(&b[off..off + avail]);
        self.pos = pos + avail as u64;
        Ok(avail)
    }
}

impl<F: Read + Write + Seek> Write for Buffered<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the volume",
            ));
        }
        let n = self.pos / BLOCK;
        let off = (self.pos % BLOCK) as usize;
        let avail = ((BLOCK as usize) - off)
            .min((self.len - self.pos) as usize)
            .min(buf.len());
        let pos = self.pos;
        let (b, dirty) = self.block(n)?;
        b[off..off + avail].copy_from_slice(&buf[..avail]);
        *dirty = true;
        self.pos = pos + avail as u64;
        Ok(avail)
    }

    fn flush(&mut self) -> io::Result<()> {
        for (n, (b, dirty)) in self.blocks.iter_mut().filter(|(_, (_, d))| *d) {
            let start = n * BLOCK;
            let want = (self.len.saturating_sub(start)).min(BLOCK) as usize;
            *dirty = false;
            if self.fresh && !self.written.contains(n) && b[..want].iter().all(|&x| x == 0) {
                continue; // still a hole in the file: nothing to write
            }
            self.file.seek(SeekFrom::Start(self.base + start))?;
            self.file.write_all(&b[..want])?;
            self.written.insert(*n);
        }
        self.file.flush()
    }
}

impl<F: Read + Write + Seek> Seek for Buffered<F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// Bytes of free room [`build_fitted`] leaves beyond the files: a firmware or
/// boot loader that writes a small file (systemd-boot's random seed on a
/// writable stick) still finds a cluster or two.
pub const FITTED_SLACK: u64 = 256 << 10;

/// FAT16's cluster-count range (Microsoft's FAT specification): fewer clusters
/// make a volume FAT12, more make it FAT32, whatever its BPB says.
const FAT16_MIN_CLUSTERS: u64 = 4085;
const FAT16_MAX_CLUSTERS: u64 = 65524;
/// Root directory entries of a FAT16 volume (fixed region; 16 KiB).
const FAT16_ROOT_ENTRIES: u64 = 512;

/// The geometry [`build_fitted`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fitted {
    /// Bytes of the image.
    pub size: u64,
    /// Bytes of a cluster.
    pub cluster: u64,
}

/// The smallest FAT16 geometry that holds `files` (plus [`FITTED_SLACK`]):
/// the smallest cluster size (512 B to 32 KiB) at which the clusters they
/// need stay within FAT16's range, padded up to FAT16's minimum count.
/// Directories are counted one cluster per 16 entries' worth of names.
pub fn fitted_geometry(files: &[(String, Vec<u8>)]) -> Option<Fitted> {
    // Every directory that files create, and how many entries each holds.
    let mut dirs: std::collections::BTreeMap<String, u64> = Default::default();
    for (name, _) in files {
        let mut parent = String::new();
        for part in name.split('/') {
            // A name takes its short entry plus one long-name slot per 13
            // characters (fatfs writes a long name for every entry).
            let slots = 1 + (part.len() as u64).div_ceil(13);
            *dirs.entry(parent.clone()).or_default() += slots;
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
        }
    }
    let mut cluster = 512u64;
    while cluster <= 32 << 10 {
        let mut clusters: u64 = files
            .iter()
            .map(|(_, d)| (d.len() as u64).div_ceil(cluster))
            .sum();
        for (dir, entries) in &dirs {
            if dir.is_empty() {
                continue; // the root directory is its own fixed region
            }
            // "." and ".." (each with the long-name slot fatfs writes).
            clusters += ((entries + 4) * 32).div_ceil(cluster);
        }
        clusters += FITTED_SLACK.div_ceil(cluster);
        let clusters = clusters.max(FAT16_MIN_CLUSTERS + 16);
        if clusters <= FAT16_MAX_CLUSTERS - 16 {
            let fat_sectors = ((clusters + 2) * 2).div_ceil(512);
            let root_sectors = FAT16_ROOT_ENTRIES * 32 / 512;
            let sectors = 1 + 2 * fat_sectors + root_sectors + clusters * cluster / 512;
            // Whole 2 KiB blocks: the image is an El Torito entry on a CD.
            let size = (sectors * 512).div_ceil(2048) * 2048;
            return Some(Fitted { size, cluster });
        }
        cluster *= 2;
    }
    None
}

/// Write a FAT16 filesystem image to `path` (atomically, like [`build`]) that
/// is as small as `files` allow (see [`fitted_geometry`]), and return its
/// geometry. For read-only media: the ISO's El Torito EFI image must stay
/// under the 32 MiB an El Torito entry can describe, and every byte of it is
/// on the ISO. Disk boot partitions stay FAT32 ([`build`]).
///
/// This path shares no code with the FAT32 fix-ups ([`fix_dot_entries`]
/// reads FAT32 fields): FAT16 has a fixed root directory region, 16-bit FAT
/// entries and no FSInfo sector, so it has its own.
pub fn build_fitted(
    path: &Path,
    label: &str,
    volume_id: u32,
    files: &[(String, Vec<u8>)],
) -> Result<Fitted, DiskError> {
    let label_bytes = volume_label(path, label)?;
    let mut sorted: Vec<&(String, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, _) in &sorted {
        check_name(path, name)?;
    }
    let Some(geometry) = fitted_geometry(files) else {
        return Err(DiskError::Io {
            path: path.to_path_buf(),
            action: "sizing a FAT16 volume".into(),
            source: io::Error::other(
                "the files need more than FAT16 holds (2 GiB); use a FAT32 image (fat::build)",
            ),
        });
    };
    let sectors = geometry.size / 512;
    // fitted_geometry caps the size far below 2^32 sectors.
    let total_sectors = u32::try_from(sectors).unwrap_or(u32::MAX);
    crate::atomic::replace(path, "FAT image", |tmp| {
        let file = sized_file(tmp, geometry.size)?;
        let mut disk = Buffered::new(file, geometry.size);
        let mut opts = FormatVolumeOptions::new()
            .fat_type(FatType::Fat16)
            .bytes_per_cluster(geometry.cluster as u32)
            .max_root_dir_entries(FAT16_ROOT_ENTRIES as u16)
            .total_sectors(total_sectors)
            .volume_id(volume_id);
        // fatfs writes a root label entry for any label it is given, and an
        // all-blank one is invalid (fsck.fat removes it): no label then, and
        // the BPB says "NO NAME" as the specification asks.
        if label_bytes != [b' '; 11] {
            opts = opts.volume_label(label_bytes);
        }
        fatfs::format_volume(&mut disk, opts).map_err(io_err(tmp, "formatting FAT16"))?;
        let bpb = Fat16Layout::read(&mut disk).map_err(io_err(tmp, "reading the new FAT16 BPB"))?;
        bpb.write_root_label(&mut disk, label_bytes)
            .map_err(io_err(tmp, "writing the volume label entry"))?;
        disk.seek(SeekFrom::Start(0))
            .map_err(io_err(tmp, "rewinding after the label"))?;
        {
            let fs = FileSystem::new(&mut disk, FsOptions::new().update_accessed_date(false))
                .map_err(io_err(tmp, "opening the new FAT16 volume"))?;
            if fs.fat_type() != FatType::Fat16 {
                return Err(DiskError::Io {
                    path: path.to_path_buf(),
                    action: "formatting FAT16".into(),
                    source: io::Error::other(format!(
                        "fatfs made a {:?} volume of {} bytes",
                        fs.fat_type(),
                        geometry.size
                    )),
                });
            }
            for (name, data) in &sorted {
                add_file(&fs, name, data).map_err(|source| DiskError::Fat {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    source,
                })?;
            }
            fs.unmount()
                .map_err(io_err(tmp, "closing the FAT16 volume"))?;
        }
        bpb.fix_dot_entries(&mut disk)
            .map_err(io_err(tmp, "fixing the '.'/'..' directory entries"))?;
        let file = disk
            .into_inner()
            .map_err(io_err(tmp, "writing the FAT image"))?;
        file.sync_all()
            .map_err(io_err(tmp, "syncing the FAT image"))
    })?;
    Ok(geometry)
}

/// Where a FAT16 volume keeps things, from its BPB.
struct Fat16Layout {
    cluster_bytes: u64,
    fat_start: u64,
    fat_bytes: u64,
    root_start: u64,
    root_bytes: u64,
    data_start: u64,
}

impl Fat16Layout {
    fn read(disk: &mut (impl Read + Seek)) -> io::Result<Fat16Layout> {
        let mut bs = [0u8; 512];
        disk.seek(SeekFrom::Start(0))?;
        disk.read_exact(&mut bs)?;
        let bps = u64::from(u16::from_le_bytes([bs[11], bs[12]]));
        let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
        let fats = u64::from(bs[16]);
        let root_entries = u64::from(u16::from_le_bytes([bs[17], bs[18]]));
        let fat_sectors = u64::from(u16::from_le_bytes([bs[22], bs[23]]));
        let root_start = (reserved + fats * fat_sectors) * bps;
        let root_bytes = (root_entries * 32).div_ceil(bps) * bps;
        Ok(Fat16Layout {
            cluster_bytes: bps * u64::from(bs[13]),
            fat_start: reserved * bps,
            fat_bytes: fat_sectors * bps,
            root_start,
            root_bytes,
            data_start: root_start + root_bytes,
        })
    }

    /// The volume-label entry in the first root directory slot (as
    /// [`write_root_label`] does for FAT32; here the root is a fixed region).
    fn write_root_label(
        &self,
        disk: &mut (impl Read + Write + Seek),
        label: [u8; 11],
    ) -> io::Result<()> {
        if label == [b' '; 11] {
            return Ok(());
        }
        let mut entry = [0u8; 32];
        entry[..11].copy_from_slice(&label);
        entry[11] = 0x08;
        entry[24..26].copy_from_slice(&FAT_DATE_1980_01_01.to_le_bytes());
        disk.seek(SeekFrom::Start(self.root_start))?;
        disk.write_all(&entry)
    }

    /// FAT16's version of [`fix_dot_entries`]: "." and ".." first in each
    /// subdirectory, valid dates on every entry (root region included).
    fn fix_dot_entries(&self, disk: &mut (impl Read + Write + Seek)) -> io::Result<()> {
        let mut fat = vec![0u8; self.fat_bytes as usize];
        disk.seek(SeekFrom::Start(self.fat_start))?;
        disk.read_exact(&mut fat)?;
        let next = |c: u32| -> Option<u32> {
            let i = c as usize * 2;
            let v = u32::from(u16::from_le_bytes(fat.get(i..i + 2)?.try_into().ok()?));
            (2..0xfff8).contains(&v).then_some(v)
        };
        let at = |c: u32| self.data_start + u64::from(c - 2) * self.cluster_bytes;
        let corrupt =
            || io::Error::new(io::ErrorKind::InvalidData, "directory cluster out of range");
        let subdirs = |buf: &[u8], todo: &mut Vec<u32>| -> bool {
            for e in buf.chunks(32) {
                match e[0] {
                    0 => return false,
                    0xe5 | b'.' => continue,
                    _ => {}
                }
                if e[11] == 0x0f || e[11] & 0x08 != 0 || e[11] & 0x10 == 0 {
                    continue;
                }
                todo.push(u32::from(u16::from_le_bytes([e[26], e[27]])));
            }
            true
        };

        let mut todo = Vec::new();
        let mut root = vec![0u8; self.root_bytes as usize];
        disk.seek(SeekFrom::Start(self.root_start))?;
        disk.read_exact(&mut root)?;
        if stamp_dates(&mut root) {
            disk.seek(SeekFrom::Start(self.root_start))?;
            disk.write_all(&root)?;
        }
        subdirs(&root, &mut todo);

        let mut seen = std::collections::BTreeSet::new();
        let mut buf = vec![0u8; self.cluster_bytes as usize];
        while let Some(first) = todo.pop() {
            if first < 2 || !seen.insert(first) {
                continue;
            }
            let mut e = [0u8; 128];
            disk.seek(SeekFrom::Start(at(first)))?;
            disk.read_exact(&mut e)?;
            if e[11] == 0x0f
                && &e[32..43] == b".          "
                && e[64 + 11] == 0x0f
                && &e[96..107] == b"..         "
            {
                let mut fixed = [0u8; 128];
                fixed[..32].copy_from_slice(&e[32..64]);
                fixed[32..64].copy_from_slice(&e[96..128]);
                fixed[64] = 0xe5;
                fixed[96] = 0xe5;
                disk.seek(SeekFrom::Start(at(first)))?;
                disk.write_all(&fixed)?;
            }
            let mut c = Some(first);
            let mut chain = std::collections::BTreeSet::new();
            while let Some(cl) = c {
                if !chain.insert(cl) || at(cl) + self.cluster_bytes > self.data_end(disk)? {
                    return Err(corrupt());
                }
                disk.seek(SeekFrom::Start(at(cl)))?;
                disk.read_exact(&mut buf)?;
                if stamp_dates(&mut buf) {
                    disk.seek(SeekFrom::Start(at(cl)))?;
                    disk.write_all(&buf)?;
                }
                if !subdirs(&buf, &mut todo) {
                    break;
                }
                c = next(cl);
            }
        }
        disk.flush()
    }

    fn data_end(&self, disk: &mut (impl Read + Seek)) -> io::Result<u64> {
        disk.seek(SeekFrom::End(0))
    }
}

/// The temporary file a FAT image is formatted in, `size` bytes long (sparse).
fn sized_file(tmp: &Path, size: u64) -> Result<std::fs::File, DiskError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io_err(
            tmp,
            "creating the FAT image (is the directory writable?)",
        ))?;
    file.set_len(size)
        .map_err(io_err(tmp, "sizing the FAT image (is there space?)"))?;
    Ok(file)
}

#[cfg(test)]
mod date_tests {
    use super::*;

    #[test]
    fn zero_dates_become_1980_01_01_and_others_stay() {
        let mut cluster = vec![0u8; 128];
        cluster[..11].copy_from_slice(b"KERNEL     ");
        cluster[11] = 0x20;
        cluster[32..43].copy_from_slice(b"OTHER      ");
        cluster[32 + 11] = 0x20;
        cluster[32 + 24..32 + 26].copy_from_slice(&0x5a21u16.to_le_bytes());
        cluster[64] = 0xe5; // deleted: untouched
        assert!(stamp_dates(&mut cluster));
        for off in [16, 18, 24] {
            assert_eq!(cluster[off..off + 2], FAT_DATE_1980_01_01.to_le_bytes());
        }
        assert_eq!(cluster[32 + 24..32 + 26], 0x5a21u16.to_le_bytes());
        assert_eq!(cluster[64 + 16..64 + 18], [0, 0]);
        assert!(!stamp_dates(&mut cluster[..32].to_vec()));
    }
}
