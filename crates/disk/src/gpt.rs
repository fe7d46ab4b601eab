//! The GUID Partition Table on disk (UEFI spec, "GPT Disk Layout"):
//!
//! ```text
//! LBA 0          protective MBR (one partition of type 0xee over the disk)
//! LBA 1          primary header (92 bytes, rest of the sector zero)
//! LBA 2..=33     primary entry array: 128 entries x 128 bytes
//! ...            partitions, between first_usable_lba and last_usable_lba
//! LBA N-33..N-2  backup entry array (same bytes as the primary)
//! LBA N-1        backup header (my_lba and alternate_lba swapped)
//! ```
//!
//! Header fields (little-endian): 0 signature "EFI PART", 8 revision 1.0,
//! 12 header size 92, 16 header CRC32 (computed with this field zero), 20
//! reserved, 24 my_lba, 32 alternate_lba, 40 first_usable_lba, 48
//! last_usable_lba, 56 disk GUID, 72 entries_lba, 80 entry count, 84 entry
//! size, 88 entry array CRC32. Entry: 0 type GUID, 16 partition GUID, 32
//! first LBA, 40 last LBA (inclusive), 48 attributes, 56 name (36 UTF-16LE
//! units). GUIDs are stored mixed-endian ([`Guid::to_gpt_bytes`]).

use std::io::{Read, Seek, SeekFrom};

use crate::{DiskError, Guid, Table, TableEntry, TableKind};

pub const SIGNATURE: &[u8; 8] = b"EFI PART";
pub const REVISION: u32 = 0x0001_0000;
pub const HEADER_SIZE: u32 = 92;
pub const ENTRY_SIZE: u32 = 128;
pub const ENTRY_COUNT: u32 = 128;
/// GPT attribute bit 2: "legacy BIOS bootable".
pub const ATTR_LEGACY_BOOTABLE: u64 = 1 << 2;
/// Longest partition name, in UTF-16 units.
pub const NAME_UNITS: usize = 36;

/// A GPT header's fields (the CRCs are computed when encoding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Guid,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl Header {
    /// One sector: the 92 header bytes, CRC filled in, zero padding.
    pub fn encode(&self, sector_size: u64) -> Vec<u8> {
        let mut s = vec![0u8; sector_size as usize];
        s[0..8].copy_from_slice(SIGNATURE);
        s[8..12].copy_from_slice(&REVISION.to_le_bytes());
        s[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        s[24..32].copy_from_slice(&self.my_lba.to_le_bytes());
        s[32..40].copy_from_slice(&self.alternate_lba.to_le_bytes());
        s[40..48].copy_from_slice(&self.first_usable_lba.to_le_bytes());
        s[48..56].copy_from_slice(&self.last_usable_lba.to_le_bytes());
        s[56..72].copy_from_slice(&self.disk_guid.to_gpt_bytes());
        s[72..80].copy_from_slice(&self.entries_lba.to_le_bytes());
        s[80..84].copy_from_slice(&self.entry_count.to_le_bytes());
        s[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        s[88..92].copy_from_slice(&self.entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&s[..HEADER_SIZE as usize]);
        s[16..20].copy_from_slice(&crc.to_le_bytes());
        s
    }

    /// Parse and check one header sector read at `lba`. `Ok(None)`: no GPT
    /// signature at all; `Err(reason)`: a GPT header that is not valid.
    pub fn decode(s: &[u8], lba: u64) -> Result<Option<Header>, String> {
        if s.len() < 512 || &s[0..8] != SIGNATURE {
            return Ok(None);
        }
        let size = le32(s, 12);
        if size < HEADER_SIZE || size as usize > s.len() {
            return Err(format!("header at LBA {lba} has size {size}"));
        }
        let stored = le32(s, 16);
        let mut copy = s[..size as usize].to_vec();
        copy[16..20].fill(0);
        let crc = crc32fast::hash(&copy);
        if crc != stored {
            return Err(format!(
                "header at LBA {lba}: CRC32 {crc:08x} does not match the stored {stored:08x}"
            ));
        }
        let h = Header {
            my_lba: le64(s, 24),
            alternate_lba: le64(s, 32),
            first_usable_lba: le64(s, 40),
            last_usable_lba: le64(s, 48),
            disk_guid: Guid::from_gpt_bytes(&arr16(s, 56)),
            entries_lba: le64(s, 72),
            entry_count: le32(s, 80),
            entry_size: le32(s, 84),
            entries_crc: le32(s, 88),
        };
        if h.my_lba != lba {
            return Err(format!(
                "header at LBA {lba} says it lives at LBA {}",
                h.my_lba
            ));
        }
        // Bounds keep a corrupt header from asking for a huge allocation.
        if h.entry_size < ENTRY_SIZE
            || h.entry_size > 4096
            || h.entry_size & 7 != 0
            || h.entry_count > 4096
        {
            return Err(format!(
                "header at LBA {lba}: implausible entry array ({} entries of {} bytes)",
                h.entry_count, h.entry_size
            ));
        }
        Ok(Some(h))
    }

    /// Bytes of the entry array.
    pub fn entries_bytes(&self) -> u64 {
        u64::from(self.entry_count) * u64::from(self.entry_size)
    }

    /// Sectors the entry array occupies.
    pub fn entries_sectors(&self, sector_size: u64) -> u64 {
        self.entries_bytes().div_ceil(sector_size)
    }
}

/// One partition entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub type_guid: Guid,
    pub uuid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

impl Entry {
    /// Write into a 128-byte (or larger) slot. The name must fit ([`name_units`]).
    pub fn encode_into(&self, slot: &mut [u8]) {
        slot.fill(0);
        slot[0..16].copy_from_slice(&self.type_guid.to_gpt_bytes());
        slot[16..32].copy_from_slice(&self.uuid.to_gpt_bytes());
        slot[32..40].copy_from_slice(&self.first_lba.to_le_bytes());
        slot[40..48].copy_from_slice(&self.last_lba.to_le_bytes());
        slot[48..56].copy_from_slice(&self.attributes.to_le_bytes());
        for (i, u) in self.name.encode_utf16().take(NAME_UNITS).enumerate() {
            slot[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
    }

    pub fn decode(slot: &[u8]) -> Entry {
        let units: Vec<u16> = (0..NAME_UNITS)
            .map(|i| u16::from_le_bytes([slot[56 + 2 * i], slot[57 + 2 * i]]))
            .take_while(|&u| u != 0)
            .collect();
        Entry {
            type_guid: Guid::from_gpt_bytes(&arr16(slot, 0)),
            uuid: Guid::from_gpt_bytes(&arr16(slot, 16)),
            first_lba: le64(slot, 32),
            last_lba: le64(slot, 40),
            attributes: le64(slot, 48),
            name: String::from_utf16_lossy(&units),
        }
    }
}

/// UTF-16 length of a partition name.
pub fn name_units(name: &str) -> usize {
    name.encode_utf16().count()
}

/// The full 128 x 128-byte entry array for `entries` (unused slots zero).
pub fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let mut a = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
    for (e, slot) in entries.iter().zip(a.chunks_mut(ENTRY_SIZE as usize)) {
        e.encode_into(slot);
    }
    a
}

/// A GPT read from a device: the header that was used, its raw entry array
/// (kept verbatim so a rewrite preserves entries and bytes it does not
/// understand) and the decoded table.
#[derive(Clone, Debug)]
pub struct Gpt {
    pub header: Header,
    pub entries_raw: Vec<u8>,
    pub table: Table,
    /// The primary was damaged and this came from the backup at the disk end.
    pub from_backup: bool,
}

/// Read the primary GPT, or the backup in the last sector when the primary is
/// missing or damaged (e.g. a power cut during a previous [`crate::grow_last`]).
pub fn read(
    dev: &mut (impl Read + Seek),
    sector_size: u64,
    disk_sectors: u64,
) -> Result<Gpt, DiskError> {
    let primary = read_at(dev, 1, sector_size);
    let primary_err = match primary {
        Ok(Some((h, raw))) => return Ok(build(h, raw, sector_size, disk_sectors, false)),
        Ok(None) => None,
        Err(e) => Some(e),
    };
    if disk_sectors < 3 {
        return match primary_err {
            Some(reason) => Err(DiskError::BadGpt { reason }),
            None => Err(DiskError::NoTable),
        };
    }
    match (read_at(dev, disk_sectors - 1, sector_size), primary_err) {
        (Ok(Some((h, raw))), _) => Ok(build(h, raw, sector_size, disk_sectors, true)),
        (Ok(None), None) => Err(DiskError::NoTable),
        (Ok(None), Some(p)) => Err(DiskError::BadGpt {
            reason: format!("{p}; no backup header in the last sector"),
        }),
        (Err(b), Some(p)) => Err(DiskError::BadGpt {
            reason: format!("{p}; {b}"),
        }),
        (Err(b), None) => Err(DiskError::BadGpt {
            reason: format!("no primary header; {b}"),
        }),
    }
}

type RawGpt = (Header, Vec<u8>);

fn read_at(
    dev: &mut (impl Read + Seek),
    lba: u64,
    sector_size: u64,
) -> Result<Option<RawGpt>, String> {
    let mut s = vec![0u8; sector_size as usize];
    if let Err(e) = read_exact_at(dev, lba * sector_size, &mut s) {
        return Err(format!("reading the header at LBA {lba}: {e}"));
    }
    let Some(h) = Header::decode(&s, lba)? else {
        return Ok(None);
    };
    let mut raw = vec![0u8; h.entries_bytes() as usize];
    if let Err(e) = read_exact_at(dev, h.entries_lba * sector_size, &mut raw) {
        return Err(format!(
            "reading the entry array at LBA {} (header at LBA {lba}): {e}",
            h.entries_lba
        ));
    }
    let crc = crc32fast::hash(&raw);
    if crc != h.entries_crc {
        return Err(format!(
            "entry array at LBA {} (header at LBA {lba}): CRC32 {crc:08x} does not match the stored {:08x}",
            h.entries_lba, h.entries_crc
        ));
    }
    Ok(Some((h, raw)))
}

fn build(h: Header, raw: Vec<u8>, _sector_size: u64, disk_sectors: u64, from_backup: bool) -> Gpt {
    let partitions = raw
        .chunks(h.entry_size as usize)
        .enumerate()
        .map(|(i, slot)| (i, Entry::decode(slot)))
        .filter(|(_, e)| !e.type_guid.is_nil())
        .map(|(i, e)| TableEntry {
            index: i as u32 + 1,
            label: e.name,
            type_guid: e.type_guid,
            uuid: e.uuid,
            mbr_type: 0,
            bootable: e.attributes & ATTR_LEGACY_BOOTABLE != 0,
            start_lba: e.first_lba,
            end_lba: e.last_lba,
        })
        .collect();
    let table = Table {
        kind: TableKind::Gpt,
        disk_guid: h.disk_guid,
        partitions,
        last_usable_lba: h.last_usable_lba,
        disk_sectors,
    };
    Gpt {
        header: h,
        entries_raw: raw,
        table,
        from_backup,
    }
}

pub(crate) fn read_exact_at(
    dev: &mut (impl Read + Seek),
    offset: u64,
    buf: &mut [u8],
) -> std::io::Result<()> {
    dev.seek(SeekFrom::Start(offset))?;
    dev.read_exact(buf)
}

fn le32(s: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]])
}

fn le64(s: &[u8], o: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&s[o..o + 8]);
    u64::from_le_bytes(b)
}

fn arr16(s: &[u8], o: usize) -> [u8; 16] {
    let mut b = [0u8; 16];
    b.copy_from_slice(&s[o..o + 16]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_corruption() {
        let h = Header {
            my_lba: 1,
            alternate_lba: 99,
            first_usable_lba: 34,
            last_usable_lba: 66,
            disk_guid: Guid::stable("t", "disk"),
            entries_lba: 2,
            entry_count: ENTRY_COUNT,
            entry_size: ENTRY_SIZE,
            entries_crc: 0x1234_5678,
        };
        let mut s = h.encode(512);
        assert_eq!(Header::decode(&s, 1).unwrap(), Some(h.clone()));
        assert!(Header::decode(&s, 99)
            .unwrap_err()
            .contains("says it lives at LBA 1"));
        s[48] ^= 1;
        assert!(Header::decode(&s, 1).unwrap_err().contains("CRC32"));
        assert_eq!(Header::decode(&[0u8; 512], 1).unwrap(), None);
    }

    #[test]
    fn entry_name_is_utf16le_and_round_trips() {
        let e = Entry {
            type_guid: crate::types::ESP,
            uuid: Guid::stable("t", "p"),
            first_lba: 2048,
            last_lba: 4095,
            attributes: ATTR_LEGACY_BOOTABLE,
            name: "bööt".into(),
        };
        let mut slot = [0u8; 128];
        e.encode_into(&mut slot);
        assert_eq!(&slot[56..60], &[b'b', 0, 0xf6, 0]);
        assert_eq!(Entry::decode(&slot), e);
    }
}
