//! Partition tables through `ballast-disk`, for [`crate::sys::LinuxSys`]:
//! the one place init hands a whole-disk device to the table code (read, and
//! grow the last partition). Everything else sees [`PartTable`].

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::Path;

use ballast_disk::{TableKind, SECTOR};

use crate::sys::{PartInfo, PartTable};

/// The GPT/MBR of a whole-disk device.
pub fn read_table(disk: &Path) -> Result<PartTable, String> {
    let mut dev = File::open(disk).map_err(|e| format!("cannot open: {e}"))?;
    let table = ballast_disk::read_table(&mut dev, SECTOR).map_err(|e| e.to_string())?;
    Ok(PartTable {
        disk_guid: table.disk_guid.to_string(),
        signature_only: table.kind == TableKind::Mbr,
        partitions: table
            .partitions
            .iter()
            .map(|p| PartInfo {
                index: p.index,
                start_lba: p.start_lba,
                end_lba: p.end_lba,
            })
            .collect(),
    })
}

/// Grows partition `index` to the end of `disk` in the on-disk table.
pub fn grow_last(disk: &Path, index: u32) -> Result<Option<PartInfo>, String> {
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(|e| format!("cannot open for writing: {e}"))?;
    let bytes = dev
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("cannot find the device size: {e}"))?;
    let placed = ballast_disk::grow_last(&mut dev, bytes, index).map_err(|e| e.to_string())?;
    Ok(placed.map(|p| PartInfo {
        index: p.index,
        start_lba: p.start_lba,
        end_lba: p.end_lba,
    }))
}
