//! The first-boot config that an install puts on the boot partition: the
//! NoCloud files (`user-data`, `meta-data`, `network-config`) that sysd's first
//! boot already reads from `/boot` (ballast-config owns their format; this
//! module only places the bytes, after checking the user-data parses).

use std::io::{Cursor, Read, Seek, Write};
use std::path::Path;

use ballast_disk::{types, Table, TableEntry, TableKind, SECTOR};

use crate::InstallError;

/// The file names on the boot partition, in the order they are written.
pub const CONFIG_FILES: [&str; 3] = ["user-data", "meta-data", "network-config"];

/// Config files for the installed disk's boot partition; empty: none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootConfig {
    pub user_data: Option<Vec<u8>>,
    pub meta_data: Option<Vec<u8>>,
    pub network_config: Option<Vec<u8>>,
}

impl BootConfig {
    pub fn is_empty(&self) -> bool {
        self.files().is_empty()
    }

    /// (name, bytes) of the files given.
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        [&self.user_data, &self.meta_data, &self.network_config]
            .iter()
            .zip(CONFIG_FILES)
            .filter_map(|(v, n)| v.as_ref().map(|b| (n.to_string(), b.clone())))
            .collect()
    }
}

/// The partition table of an image from its first MiB alone (the primary GPT,
/// or the MBR, both live there). An image without one is not a disk image.
pub fn table_of(head: &[u8], raw_size: u64, name: &str) -> Result<Table, InstallError> {
    let not_disk = |d: String| {
        InstallError::Image {
        what: name.to_string(),
        detail: format!("{d}: it is not a disk image (give the disk.img or install.img.zst that `ballast build` wrote, not a root image, bundle or ISO)"),
    }
    };
    let table = ballast_disk::read_table(&mut Cursor::new(head), SECTOR).map_err(|e| match e {
        ballast_disk::DiskError::NoTable => not_disk("no partition table in its first MiB".into()),
        e => not_disk(format!("no valid partition table in its first MiB ({e})")),
    })?;
    if table.partitions.is_empty() {
        return Err(not_disk("its partition table is empty".into()));
    }
    if let Some(p) = table
        .partitions
        .iter()
        .find(|p| (p.end_lba + 1) * SECTOR > raw_size)
    {
        return Err(not_disk(format!(
            "partition {} ends at byte {}, beyond the image's {raw_size} bytes (is it truncated?)",
            p.index,
            (p.end_lba + 1) * SECTOR
        )));
    }
    Ok(table)
}

/// The boot partition: the ESP (GPT) or the FAT partition (MBR types 0x0b,
/// 0x0c, 0xef), else the first partition.
pub fn boot_partition(table: &Table) -> Option<&TableEntry> {
    let fat = |p: &&TableEntry| match table.kind {
        TableKind::Gpt => p.type_guid == types::ESP,
        TableKind::Mbr => matches!(p.mbr_type, 0x0b | 0x0c | 0xef),
    };
    table
        .partitions
        .iter()
        .find(fat)
        .or_else(|| table.partitions.first())
}

/// Write the config files into the boot partition of `dev` (the image's
/// table says where it is). `dev` is seen through [`Overlay`] by the caller,
/// so this works before the first MiB is on the target.
pub fn write<D: Read + Write + Seek>(
    dev: D,
    table: &Table,
    config: &BootConfig,
    name: &Path,
) -> Result<D, InstallError> {
    let boot = boot_partition(table)
        .ok_or_else(|| InstallError::BootConfig("the image has no partitions".into()))?;
    let offset = boot.start_lba * SECTOR;
    let len = (boot.end_lba + 1 - boot.start_lba) * SECTOR;
    ballast_disk::fat::write_files(dev, offset, len, name, &config.files()).map_err(|e| {
        InstallError::BootConfig(format!(
            "partition {} ({}): {e}",
            boot.index,
            if boot.label.is_empty() {
                "boot"
            } else {
                &boot.label
            }
        ))
    })
}
