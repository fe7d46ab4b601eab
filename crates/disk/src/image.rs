//! Writing a whole disk image from a [`Disk`].

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::io_err;
use crate::gpt::{self, Entry, Header};
use crate::mbr::{self, MbrEntry};
use crate::{Content, Disk, DiskError, Placed, TableKind, MIB, SECTOR};

/// Sectors of the GPT entry array (128 x 128 bytes).
const ENTRY_SECTORS: u64 = (gpt::ENTRY_COUNT as u64 * gpt::ENTRY_SIZE as u64) / SECTOR;

/// Write `disk` as a disk image at `path` and return where each partition
/// landed.
///
/// First partition at 1 MiB, each 1 MiB aligned and rounded up to whole MiB,
/// 512-byte sectors; the disk is the end of the last partition + 1 MiB (room
/// for the GPT backup). GPT: protective MBR, primary header and 128 entries,
/// backup entries and header at the end. MBR: 4 primary entries at most, the
/// disk signature is the first 4 bytes of `disk_guid`.
///
/// The image is sparse (zero areas, including zero runs inside content files,
/// are holes) and written to `<path>.tmp`, fsynced and renamed over `path`, so
/// a failed write never leaves a half image at `path`. Same disk and
/// content files in, same bytes out.
pub fn write_image(path: &Path, disk: &Disk) -> Result<Vec<Placed>, DiskError> {
    let placed = place(path, disk)?;
    let last_end = placed.last().map(|p| p.end_lba).unwrap_or(0);
    let disk_sectors = last_end + 1 + MIB / SECTOR;
    if disk.kind == TableKind::Mbr && disk_sectors > 1 << 32 {
        return Err(DiskError::MbrTooBig {
            path: path.to_path_buf(),
            bytes: disk_sectors * SECTOR,
        });
    }

    crate::atomic::replace(path, "image", |tmp| {
        write_tmp(tmp, path, disk, &placed, disk_sectors)
    })?;
    Ok(placed)
}

/// Check the disk and compute each partition's place.
fn place(path: &Path, disk: &Disk) -> Result<Vec<Placed>, DiskError> {
    let (max, kind, other) = match disk.kind {
        TableKind::Gpt => (gpt::ENTRY_COUNT as usize, "GPT", "fewer partitions"),
        TableKind::Mbr => (4, "MBR", "GPT"),
    };
    if disk.partitions.is_empty() {
        return Err(DiskError::NoPartitions {
            path: path.to_path_buf(),
        });
    }
    if disk.partitions.len() > max {
        return Err(DiskError::TooManyPartitions {
            path: path.to_path_buf(),
            kind,
            count: disk.partitions.len(),
            max,
            other,
        });
    }
    let mut start = MIB / SECTOR;
    let mut placed = Vec::with_capacity(disk.partitions.len());
    for (i, p) in disk.partitions.iter().enumerate() {
        let units = gpt::name_units(&p.label);
        if disk.kind == TableKind::Gpt && units > gpt::NAME_UNITS {
            return Err(DiskError::LabelTooLong {
                path: path.to_path_buf(),
                label: p.label.clone(),
                units,
            });
        }
        if p.size == 0 {
            return Err(DiskError::ZeroSize {
                path: path.to_path_buf(),
                label: p.label.clone(),
            });
        }
        let bytes = p.size.div_ceil(MIB) * MIB;
        if let Content::File(f) = &p.content {
            let len = fs::metadata(f)
                .map_err(|source| DiskError::Content {
                    path: path.to_path_buf(),
                    label: p.label.clone(),
                    content: f.clone(),
                    source,
                })?
                .len();
            if len > bytes {
                return Err(DiskError::ContentTooBig {
                    path: path.to_path_buf(),
                    label: p.label.clone(),
                    content: f.clone(),
                    content_bytes: len,
                    part_bytes: bytes,
                });
            }
        }
        let end = start + bytes / SECTOR - 1;
        placed.push(Placed {
            index: i as u32 + 1,
            start_lba: start,
            end_lba: end,
            label: p.label.clone(),
        });
        start = end + 1;
    }
    Ok(placed)
}

fn write_tmp(
    tmp: &Path,
    path: &Path,
    disk: &Disk,
    placed: &[Placed],
    disk_sectors: u64,
) -> Result<(), DiskError> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io_err(
            tmp,
            "creating the image (is the directory writable?)",
        ))?;
    f.set_len(disk_sectors * SECTOR)
        .map_err(io_err(tmp, "sizing the image (is there space?)"))?;

    let mut put = |offset: u64, bytes: &[u8], what: &str| -> Result<(), DiskError> {
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.write_all(bytes))
            .map_err(io_err(tmp, format!("writing {what}")))
    };

    match disk.kind {
        TableKind::Gpt => {
            let entries: Vec<Entry> = disk
                .partitions
                .iter()
                .zip(placed)
                .map(|(p, pl)| Entry {
                    type_guid: p.type_guid,
                    uuid: p.uuid,
                    first_lba: pl.start_lba,
                    last_lba: pl.end_lba,
                    attributes: if p.bootable {
                        gpt::ATTR_LEGACY_BOOTABLE
                    } else {
                        0
                    },
                    name: p.label.clone(),
                })
                .collect();
            let array = gpt::encode_entries(&entries);
            let last = disk_sectors - 1;
            let primary = Header {
                my_lba: 1,
                alternate_lba: last,
                first_usable_lba: 2 + ENTRY_SECTORS,
                last_usable_lba: last - 1 - ENTRY_SECTORS,
                disk_guid: disk.disk_guid,
                entries_lba: 2,
                entry_count: gpt::ENTRY_COUNT,
                entry_size: gpt::ENTRY_SIZE,
                entries_crc: crc32fast::hash(&array),
            };
            let backup = Header {
                my_lba: last,
                alternate_lba: 1,
                entries_lba: last - ENTRY_SECTORS,
                ..primary.clone()
            };
            put(
                0,
                &mbr::protective(disk_sectors, SECTOR),
                "the protective MBR",
            )?;
            put(SECTOR, &primary.encode(SECTOR), "the primary GPT header")?;
            put(2 * SECTOR, &array, "the primary GPT entries")?;
            put(
                backup.entries_lba * SECTOR,
                &array,
                "the backup GPT entries",
            )?;
            put(
                last * SECTOR,
                &backup.encode(SECTOR),
                "the backup GPT header",
            )?;
        }
        TableKind::Mbr => {
            let mut entries = [MbrEntry::default(); 4];
            for ((e, p), pl) in entries.iter_mut().zip(&disk.partitions).zip(placed) {
                *e = MbrEntry {
                    bootable: p.bootable,
                    system_id: p.mbr_type,
                    // place() and the 2 TiB check above keep these in range.
                    start_lba: pl.start_lba as u32,
                    sectors: (pl.end_lba + 1 - pl.start_lba) as u32,
                };
            }
            let g = disk.disk_guid.0;
            let sig = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
            put(0, &mbr::new_sector(sig, entries, SECTOR), "the MBR")?;
        }
    }

    for (p, pl) in disk.partitions.iter().zip(placed) {
        if let Content::File(src) = &p.content {
            copy_sparse(&mut f, pl.offset(), pl.bytes(), src).map_err(|e| match e {
                CopyError::Read(source) => DiskError::Content {
                    path: path.to_path_buf(),
                    label: p.label.clone(),
                    content: src.clone(),
                    source,
                },
                CopyError::TooBig(content_bytes) => DiskError::ContentTooBig {
                    path: path.to_path_buf(),
                    label: p.label.clone(),
                    content: src.clone(),
                    content_bytes,
                    part_bytes: pl.bytes(),
                },
                CopyError::Write(source) => DiskError::Io {
                    path: tmp.to_path_buf(),
                    action: format!("writing partition {:?} (is there space?)", p.label),
                    source,
                },
            })?;
        }
    }
    f.sync_all().map_err(io_err(tmp, "syncing the image"))
}

enum CopyError {
    Read(std::io::Error),
    /// The file grew past the partition after it was measured.
    TooBig(u64),
    Write(std::io::Error),
}

/// Copy `src` to `dst` at `offset`, seeking over all-zero blocks so they stay
/// holes in the (freshly truncated, hence zero) image. Never writes past
/// `limit` bytes, even if the file grew since it was measured.
fn copy_sparse(dst: &mut File, offset: u64, limit: u64, src: &Path) -> Result<(), CopyError> {
    const BLOCK: usize = 64 * 1024;
    let mut input = File::open(src).map_err(CopyError::Read)?;
    let mut buf = vec![0u8; BLOCK];
    let mut pos = offset;
    loop {
        let n = read_full(&mut input, &mut buf).map_err(CopyError::Read)?;
        if n == 0 {
            return Ok(());
        }
        if pos + n as u64 - offset > limit {
            return Err(CopyError::TooBig(pos + n as u64 - offset));
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(pos))
                .and_then(|_| dst.write_all(&buf[..n]))
                .map_err(CopyError::Write)?;
        }
        pos += n as u64;
    }
}

/// Fill `buf` unless EOF comes first; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
