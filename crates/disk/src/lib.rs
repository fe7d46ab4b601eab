//! ballast-disk owns the disk image formats: GPT (with the UAPI Discoverable
//! Partitions Specification type GUIDs) and MBR partition tables, FAT32 boot
//! partitions, and growing the last partition to fill a device on first boot.
//!
//! Pure Rust on `std` only: it builds for the device targets too, because init
//! calls [`grow_last`] on the real disk. It never shells out (no sgdisk,
//! sfdisk, mkfs) and never touches a partition other than the one it is told
//! to grow. The GPT code is written here on purpose: the format is small and
//! the code that rewrites a live disk's table must be auditable in one file
//! ([`gpt`]).
//!
//! Partitioning rules ([`write_image`]): 512-byte sectors, the first partition at
//! 1 MiB, every partition 1 MiB aligned and a whole number of MiB long, the disk
//! 1 MiB longer than the last partition (room for the GPT backup). Images are
//! sparse and written atomically (`<path>.tmp`, fsync, rename).

mod atomic;
pub mod bios;
mod error;
pub mod fat;
pub mod gpt;
mod grow;
mod guid;
mod image;
pub mod iso9660;
pub mod mbr;

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, Write};
use std::path::PathBuf;

pub use error::DiskError;
pub use grow::grow_last;
pub use guid::Guid;
pub use image::write_image;

/// Logical sector size of every image this crate writes.
pub const SECTOR: u64 = 512;
/// Partition alignment and size granularity.
pub const MIB: u64 = 1 << 20;

/// Partition type GUIDs.
pub mod types {
    use crate::{DiskError, Guid};

    /// EFI System Partition (UEFI spec; DPS "ESP").
    pub const ESP: Guid = Guid::from_str_const("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    /// DPS root partition, x86-64.
    pub const ROOT_X86_64: Guid = Guid::from_str_const("4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
    /// DPS root partition, 64-bit ARM (AArch64).
    pub const ROOT_ARM64: Guid = Guid::from_str_const("b921b045-1df0-41c3-af44-4c6f280d3fae");
    /// DPS root partition, 32-bit ARM.
    pub const ROOT_ARM: Guid = Guid::from_str_const("69dad710-2ce4-4e3c-b16c-21a1d49abed3");
    /// DPS /var partition. Not used for the state partition: the DPS requires
    /// its partition UUID to be an HMAC of the machine ID, and an image is
    /// built before any machine ID exists (and is the same for every machine).
    pub const VAR: Guid = Guid::from_str_const("4d21b016-b534-45c2-a9fb-5c16e091fd2d");
    /// Generic Linux data. The state partition uses this type: it is more
    /// than /var (the /etc overlay upper, SSH host keys, logs), init finds it
    /// by its partition label/UUID rather than by type, and systemd's
    /// gpt-auto-generator leaves "generic Linux data" alone instead of
    /// mounting it somewhere on its own.
    pub const LINUX_DATA: Guid = Guid::from_str_const("0fc63daf-8483-4772-8e79-3d69d8477de4");

    /// BIOS boot partition ("Hah!IdontNeedEFI"): GRUB's core.img on a GPT disk
    /// booted by legacy BIOS ([`crate::bios`]).
    pub const BIOS_BOOT: Guid = Guid::from_str_const("21686148-6449-6e6f-744e-656564454649");

    /// The DPS root partition type for a Ballast architecture name.
    pub fn root(arch: &str) -> Result<Guid, DiskError> {
        match arch {
            "x86_64" | "amd64" => Ok(ROOT_X86_64),
            "arm64" | "aarch64" => Ok(ROOT_ARM64),
            "armv7" | "armhf" | "arm" => Ok(ROOT_ARM),
            _ => Err(DiskError::UnknownArch {
                arch: arch.to_string(),
            }),
        }
    }
}

/// Which partition table to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    Gpt,
    /// Classic MBR, for boot ROMs that cannot read GPT (Raspberry Pi <= 3):
    /// 4 primary partitions at most, disk at most 2 TiB.
    Mbr,
}

/// What goes into a partition when the image is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Nothing: the partition reads as zeros (a hole in the sparse image).
    Zero,
    /// A file copied in at the partition start; it must not be larger than the partition.
    File(PathBuf),
}

/// One partition of a [`Disk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// GPT partition name (UTF-16LE on disk, at most 36 units). Ignored for MBR.
    pub label: String,
    /// GPT partition type, e.g. [`types::ESP`]. Ignored for MBR.
    pub type_guid: Guid,
    /// GPT unique partition GUID (`PARTUUID=`). Ignored for MBR.
    pub uuid: Guid,
    /// MBR system id: 0x0c FAT32 (LBA) for the boot partition, 0x83 Linux. Ignored for GPT.
    pub mbr_type: u8,
    /// MBR: the 0x80 active flag. GPT: attribute bit 2 "legacy BIOS bootable",
    /// which U-Boot's distro boot uses to pick the partition to scan.
    pub bootable: bool,
    /// Bytes; rounded up to a whole MiB.
    pub size: u64,
    pub content: Content,
}

/// A whole disk: table kind, disk GUID and partitions in order (index 1, 2, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub kind: TableKind,
    /// GPT disk GUID. MBR: its first 4 bytes are the disk signature.
    pub disk_guid: Guid,
    pub partitions: Vec<Partition>,
}

/// Where a partition landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// 1-based, as in `/dev/sda1`.
    pub index: u32,
    pub start_lba: u64,
    /// Inclusive.
    pub end_lba: u64,
    pub label: String,
}

impl Placed {
    /// Byte offset of the partition in the image.
    pub fn offset(&self) -> u64 {
        self.start_lba * SECTOR
    }
    /// Partition length in bytes.
    pub fn bytes(&self) -> u64 {
        (self.end_lba + 1 - self.start_lba) * SECTOR
    }
}

/// A partition table as read back from an image or device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub kind: TableKind,
    /// GPT disk GUID; for MBR the 4-byte disk signature in the first 4 bytes, rest zero.
    pub disk_guid: Guid,
    /// Used entries, in table order.
    pub partitions: Vec<TableEntry>,
    /// GPT: from the header. MBR: the last sector the table can address.
    pub last_usable_lba: u64,
    /// Sectors on the device (its length / sector size).
    pub disk_sectors: u64,
}

/// One used entry of a [`Table`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableEntry {
    /// 1-based slot number in the table.
    pub index: u32,
    /// GPT name; empty for MBR.
    pub label: String,
    /// GPT type; [`Guid::NIL`] for MBR.
    pub type_guid: Guid,
    /// GPT partition GUID; [`Guid::NIL`] for MBR.
    pub uuid: Guid,
    /// MBR system id; 0 for GPT.
    pub mbr_type: u8,
    /// MBR active flag / GPT legacy-BIOS-bootable attribute.
    pub bootable: bool,
    pub start_lba: u64,
    /// Inclusive.
    pub end_lba: u64,
}

/// A block device or image file that can be made durable between the steps
/// of a table rewrite. [`grow_last`] calls [`Device::barrier`] between the
/// backup and the primary GPT writes: without it the kernel may reorder them
/// and a power cut could leave neither table valid.
pub trait Device: Read + Write + Seek {
    /// Everything written so far is on stable storage when this returns.
    fn barrier(&mut self) -> io::Result<()>;
}

impl Device for File {
    fn barrier(&mut self) -> io::Result<()> {
        self.flush()?;
        self.sync_data()
    }
}

/// In-memory devices (tests, building tables in a buffer) have nothing to sync.
impl<T> Device for Cursor<T>
where
    Cursor<T>: Read + Write + Seek,
{
    fn barrier(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Read the partition table of an image or device: GPT if sector 1 (or, when
/// the primary is damaged, the last sector) holds a valid GPT header, else MBR.
/// `sector_size` is the device's logical sector size (512 for our images).
pub fn read_table(dev: &mut (impl Read + Seek), sector_size: u64) -> Result<Table, DiskError> {
    let disk_bytes = dev
        .seek(io::SeekFrom::End(0))
        .map_err(error::dev_err("finding the device size"))?;
    let disk_sectors = disk_bytes / sector_size;
    let mbr0 = mbr::read_sector0(dev, sector_size)?;
    let protective = mbr0
        .as_ref()
        .is_some_and(|s| s.entries.iter().any(|e| e.system_id == 0xee));
    match gpt::read(dev, sector_size, disk_sectors) {
        Ok(g) => Ok(g.table),
        Err(DiskError::NoTable) if !protective => match mbr0 {
            Some(s) => Ok(s.to_table(disk_sectors)),
            None => Err(DiskError::NoTable),
        },
        Err(DiskError::NoTable) => Err(DiskError::BadGpt {
            reason: "sector 0 is a protective MBR (type ee) but neither GPT header is present"
                .into(),
        }),
        Err(e) => Err(e),
    }
}
