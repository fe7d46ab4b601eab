use std::io;
use std::path::PathBuf;

/// Everything that can go wrong building, reading or growing a disk image.
/// Each message names the image or device, the partition and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("device: {action}: {source} (check the device exists, is not in use and is readable/writable)")]
    DeviceIo {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: the disk has no partitions; add at least one")]
    NoPartitions { path: PathBuf },
    #[error("{path}: {count} partitions but a {kind} table holds at most {max}; merge partitions or use {other}")]
    TooManyPartitions {
        path: PathBuf,
        kind: &'static str,
        count: usize,
        max: usize,
        other: &'static str,
    },
    #[error("{path}: partition {label:?}: the GPT name is {units} UTF-16 units, at most 36 fit; shorten the label")]
    LabelTooLong {
        path: PathBuf,
        label: String,
        units: usize,
    },
    #[error("{path}: partition {label:?} has size 0; give it a size (rounded up to 1 MiB)")]
    ZeroSize { path: PathBuf, label: String },
    #[error("{path}: partition {label:?}: content {content} is {content_bytes} bytes but the partition is {part_bytes} bytes; enlarge the partition")]
    ContentTooBig {
        path: PathBuf,
        label: String,
        content: PathBuf,
        content_bytes: u64,
        part_bytes: u64,
    },
    #[error("{path}: partition {label:?}: reading content {content}: {source}")]
    Content {
        path: PathBuf,
        label: String,
        content: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: the image would be {bytes} bytes but an MBR table addresses at most 2 TiB; shrink the partitions or use GPT")]
    MbrTooBig { path: PathBuf, bytes: u64 },
    #[error(
        "{text:?} is not a GUID; write it as xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex digits)"
    )]
    GuidSyntax { text: String },
    #[error(
        "unknown architecture {arch:?} for a DPS root partition type; use x86_64, arm64 or armv7"
    )]
    UnknownArch { arch: String },
    #[error("device: no partition table (no 55 AA signature in sector 0 and no \"EFI PART\" header); write an image first")]
    NoTable,
    #[error("device: the GPT is damaged: {reason}; restore it from the image (or `sgdisk -e`/`-b` by hand)")]
    BadGpt { reason: String },
    #[error("device: partition {index} does not exist (the table has {existing:?}); pass an existing index")]
    NoSuchPartition { index: u32, existing: Vec<u32> },
    #[error("device: partition {index} is not the last one on the disk (partition {last} ends later); only the last partition can grow")]
    NotLast { index: u32, last: u32 },
    #[error("device: {device_bytes} bytes is smaller than the table expects ({needed_bytes} bytes); was the image written to the right (large enough) device?")]
    DeviceTooSmall {
        device_bytes: u64,
        needed_bytes: u64,
    },
    #[error("{path}: a FAT32 volume needs at least {min} bytes (65525 clusters); got {size}; enlarge the boot partition")]
    FatTooSmall { path: PathBuf, size: u64, min: u64 },
    #[error("{path}: volume label {label:?}: use at most 11 characters A-Z, 0-9, space or _-")]
    FatLabel { path: PathBuf, label: String },
    #[error("{path}: file name {name:?}: use a relative path with '/' separators, no empty, '.' or '..' parts")]
    FatName { path: PathBuf, name: String },
    #[error("{path}: writing {name:?} into the FAT volume: {source} (is the volume large enough for all files?)")]
    Fat {
        path: PathBuf,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: cannot make the disk boot on legacy BIOS: {reason}")]
    BiosBoot { path: PathBuf, reason: String },
}

pub(crate) fn io_err(
    path: &std::path::Path,
    action: impl Into<String>,
) -> impl FnOnce(io::Error) -> DiskError {
    let path = path.to_path_buf();
    let action = action.into();
    move |source| DiskError::Io {
        path,
        action,
        source,
    }
}

pub(crate) fn dev_err(action: impl Into<String>) -> impl FnOnce(io::Error) -> DiskError {
    let action = action.into();
    move |source| DiskError::DeviceIo { action, source }
}
