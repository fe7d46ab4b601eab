//! Growing the last partition to fill the device (first boot).
//!
//! GPT write order, so that a power cut at any point leaves a table that
//! Linux and sgdisk accept (either the old one or the new one):
//!
//! 1. the new backup entry array, then the new backup header, at the new
//!    device end; barrier. The primary still describes the old disk and is
//!    valid; the old backup (in the old last sector) too.
//! 2. the new primary entry array, barrier, then the new primary header;
//!    barrier. Between the two the primary header's entry CRC does not match,
//!    so readers (Linux `efi.c`, sgdisk, [`crate::read_table`]) fall back to
//!    the backup in the device's last sector, which is already the new one.
//!    The primary header is a single sector, written last: it is the commit.
//! 3. the protective MBR is resized to the new disk (cosmetic for Linux).
//! 4. the old backup header (now inside the grown partition, not yet used
//!    by its filesystem) is zeroed, so no stale GPT header lingers.
//!
//! A rerun after a cut in step 2 finds the primary damaged, reads the backup
//! and finishes the job, so `grow_last` is idempotent and self-healing.
//! MBR: the one sector is rewritten in place (sector writes are atomic).

use std::io::SeekFrom;

use crate::error::dev_err;
use crate::gpt::{self, Header};
use crate::mbr::{self, MbrEntry, Sector0};
use crate::{Device, DiskError, Placed, TableEntry, SECTOR};

/// Grow partition `index` (1-based; it must end last on the disk) to fill a
/// device of `device_bytes` (512-byte sectors). GPT: moves the backup header
/// and entries to the device end and extends the partition to the last
/// usable LBA. MBR: extends the entry to the device end (at most 2 TiB).
/// Returns the new extent, or `None` when the partition already fills the
/// device. The caller still has to grow the filesystem inside.
pub fn grow_last(
    dev: &mut impl Device,
    device_bytes: u64,
    index: u32,
) -> Result<Option<Placed>, DiskError> {
    let disk_sectors = device_bytes / SECTOR;
    let sector0 = mbr::read_sector0(dev, SECTOR)?;
    match gpt::read(dev, SECTOR, disk_sectors) {
        Ok(g) => grow_gpt(dev, disk_sectors, index, g),
        Err(DiskError::NoTable) => match sector0 {
            Some(s) if !s.entries.iter().any(|e| e.system_id == mbr::PROTECTIVE) => {
                grow_mbr(dev, disk_sectors, index, s)
            }
            Some(_) => Err(DiskError::BadGpt {
                reason: "sector 0 is a protective MBR but no GPT header was found".into(),
            }),
            None => Err(DiskError::NoTable),
        },
        Err(e) => Err(e),
    }
}

/// Check `index` exists and ends last.
fn the_last(parts: &[TableEntry], index: u32) -> Result<&TableEntry, DiskError> {
    let Some(p) = parts.iter().find(|p| p.index == index) else {
        return Err(DiskError::NoSuchPartition {
            index,
            existing: parts.iter().map(|p| p.index).collect(),
        });
    };
    let last = parts.iter().max_by_key(|q| (q.end_lba, q.index));
    if let Some(last) = last.filter(|q| q.index != index) {
        return Err(DiskError::NotLast {
            index,
            last: last.index,
        });
    }
    Ok(p)
}

fn grow_gpt(
    dev: &mut impl Device,
    disk_sectors: u64,
    index: u32,
    g: gpt::Gpt,
) -> Result<Option<Placed>, DiskError> {
    let part = the_last(&g.table.partitions, index)?.clone();
    let h = &g.header;
    let entry_sectors = h.entries_sectors(SECTOR);
    let new_last = disk_sectors.saturating_sub(1);
    // The table must fit: old partition end + backup array + backup header.
    // Saturating: the LBAs come from the disk, and a table claiming sectors
    // near 2^64 must be refused, not wrap into a size that looks fine.
    let needed = part
        .end_lba
        .saturating_add(1)
        .saturating_add(entry_sectors)
        .saturating_add(1);
    let old_last = h.my_lba.max(h.alternate_lba);
    if disk_sectors < needed || (!g.from_backup && disk_sectors < old_last.saturating_add(1)) {
        return Err(DiskError::DeviceTooSmall {
            device_bytes: disk_sectors.saturating_mul(SECTOR),
            needed_bytes: needed
                .max(old_last.saturating_add(1))
                .saturating_mul(SECTOR),
        });
    }
    let new_last_usable = new_last - entry_sectors - 1;
    let placed = Placed {
        index,
        start_lba: part.start_lba,
        end_lba: new_last_usable,
        label: part.label.clone(),
    };
    if !g.from_backup
        && h.alternate_lba == new_last
        && h.last_usable_lba == new_last_usable
        && part.end_lba == new_last_usable
    {
        return Ok(None);
    }

    let mut raw = g.entries_raw.clone();
    let slot_range = {
        let o = (index as usize - 1) * h.entry_size as usize;
        o..o + h.entry_size as usize
    };
    // Only the entry's last-LBA field changes; every other byte (name,
    // attributes, bytes past 128 if entries are larger) stays as it was.
    raw[slot_range][40..48].copy_from_slice(&new_last_usable.to_le_bytes());
    let crc = crc32fast::hash(&raw);

    let primary = Header {
        my_lba: 1,
        alternate_lba: new_last,
        last_usable_lba: new_last_usable,
        // A backup-only recovery puts the primary array where we (and
        // every tool) put it: right after the primary header.
        entries_lba: if g.from_backup { 2 } else { h.entries_lba },
        entries_crc: crc,
        ..h.clone()
    };
    let backup = Header {
        my_lba: new_last,
        alternate_lba: 1,
        entries_lba: new_last - entry_sectors,
        ..primary.clone()
    };

    // Where the previous backup header lived (to clear it at the end).
    let stale_backup = if g.from_backup {
        None
    } else {
        Some(h.alternate_lba)
    };

    put(
        dev,
        backup.entries_lba * SECTOR,
        &raw,
        "the new backup GPT entries",
    )?;
    put(
        dev,
        new_last * SECTOR,
        &backup.encode(SECTOR),
        "the new backup GPT header",
    )?;
    barrier(dev)?;
    put(
        dev,
        primary.entries_lba * SECTOR,
        &raw,
        "the new primary GPT entries",
    )?;
    barrier(dev)?;
    put(
        dev,
        SECTOR,
        &primary.encode(SECTOR),
        "the new primary GPT header",
    )?;
    barrier(dev)?;
    // The protective MBR: keep its boot code, cover the new disk.
    let mut pm = mbr::read_sector0(dev, SECTOR)?
        .filter(|s| s.entries.iter().any(|e| e.system_id == mbr::PROTECTIVE));
    if let Some(s) = pm.as_mut() {
        for e in s
            .entries
            .iter_mut()
            .filter(|e| e.system_id == mbr::PROTECTIVE)
        {
            e.sectors = (disk_sectors - 1).min(u64::from(u32::MAX)) as u32;
        }
        let mut bytes = s.encode();
        // UEFI's fixed CHS start for the protective entry.
        bytes[mbr::ENTRIES_OFFSET + 1..mbr::ENTRIES_OFFSET + 4]
            .copy_from_slice(&[0x00, 0x02, 0x00]);
        put(dev, 0, &bytes, "the protective MBR")?;
    }
    if let Some(old) = stale_backup {
        if old != new_last && old > part.end_lba && old < new_last_usable {
            put(
                dev,
                old * SECTOR,
                &vec![0u8; SECTOR as usize],
                "clearing the old backup GPT header",
            )?;
        }
    }
    barrier(dev)?;
    Ok(Some(placed))
}

fn grow_mbr(
    dev: &mut impl Device,
    disk_sectors: u64,
    index: u32,
    mut s: Sector0,
) -> Result<Option<Placed>, DiskError> {
    let table = s.to_table(disk_sectors);
    let part = the_last(&table.partitions, index)?.clone();
    let limit = mbr::max_sectors(disk_sectors);
    if limit <= part.end_lba {
        return Err(DiskError::DeviceTooSmall {
            device_bytes: disk_sectors * SECTOR,
            needed_bytes: (part.end_lba + 1) * SECTOR,
        });
    }
    let new_end = limit - 1;
    let placed = Placed {
        index,
        start_lba: part.start_lba,
        end_lba: new_end,
        label: String::new(),
    };
    if new_end == part.end_lba {
        return Ok(None);
    }
    let slot = &mut s.entries[index as usize - 1];
    *slot = MbrEntry {
        sectors: (new_end + 1 - part.start_lba) as u32,
        ..*slot
    };
    put(dev, 0, &s.encode(), "the MBR")?;
    barrier(dev)?;
    Ok(Some(placed))
}

fn put(dev: &mut impl Device, offset: u64, bytes: &[u8], what: &str) -> Result<(), DiskError> {
    dev.seek(SeekFrom::Start(offset))
        .and_then(|_| dev.write_all(bytes))
        .map_err(dev_err(format!("writing {what} at byte {offset}")))
}

fn barrier(dev: &mut impl Device) -> Result<(), DiskError> {
    dev.barrier().map_err(dev_err("syncing the device"))
}
