//! The classic MBR in sector 0: boot code (0..440), disk signature (440..444),
//! four 16-byte partition entries (446..510), 0x55 0xAA (510..512). Entry:
//! 0 status (0x80 active), 1..4 CHS of the first sector, 4 system id, 5..8
//! CHS of the last sector, 8 first LBA (u32 LE), 12 sector count (u32 LE).
//! Nothing reads CHS any more; we still fill it (255 heads, 63 sectors per
//! track, saturating at 1023/254/63) as fdisk does, so old tools are content.
//! Only primary partitions: no extended/logical ones are written or read.

use std::io::{Read, Seek};

use crate::gpt::read_exact_at;
use crate::{DiskError, Guid, Table, TableEntry, TableKind};

pub const ENTRIES_OFFSET: usize = 446;
pub const SIGNATURE_OFFSET: usize = 440;
/// System id of the protective MBR entry that guards a GPT disk.
pub const PROTECTIVE: u8 = 0xee;

/// One primary partition entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MbrEntry {
    pub bootable: bool,
    pub system_id: u8,
    pub start_lba: u32,
    pub sectors: u32,
}

impl MbrEntry {
    pub fn encode(&self) -> [u8; 16] {
        let mut e = [0u8; 16];
        if self.system_id == 0 {
            return e;
        }
        e[0] = if self.bootable { 0x80 } else { 0 };
        e[1..4].copy_from_slice(&chs(u64::from(self.start_lba)));
        e[4] = self.system_id;
        let last = u64::from(self.start_lba) + u64::from(self.sectors).saturating_sub(1);
        e[5..8].copy_from_slice(&chs(last));
        e[8..12].copy_from_slice(&self.start_lba.to_le_bytes());
        e[12..16].copy_from_slice(&self.sectors.to_le_bytes());
        e
    }

    pub fn decode(e: &[u8]) -> MbrEntry {
        MbrEntry {
            bootable: e[0] & 0x80 != 0,
            system_id: e[4],
            start_lba: u32::from_le_bytes([e[8], e[9], e[10], e[11]]),
            sectors: u32::from_le_bytes([e[12], e[13], e[14], e[15]]),
        }
    }
}

/// CHS address of an LBA with the 255/63 geometry, saturating past cylinder 1023.
fn chs(lba: u64) -> [u8; 3] {
    let (c, h, s) = if lba >= 1024 * 255 * 63 {
        (1023u64, 254u64, 63u64)
    } else {
        (lba / (255 * 63), (lba / 63) % 255, lba % 63 + 1)
    };
    [
        h as u8,
        (s as u8 & 0x3f) | (((c >> 2) as u8) & 0xc0),
        c as u8,
    ]
}

/// Sector 0 decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sector0 {
    pub signature: u32,
    pub entries: [MbrEntry; 4],
    /// The raw sector (boot code preserved on rewrite).
    pub raw: Vec<u8>,
}

impl Sector0 {
    pub fn decode(raw: Vec<u8>) -> Option<Sector0> {
        if raw.len() < 512 || raw[510] != 0x55 || raw[511] != 0xaa {
            return None;
        }
        let mut entries = [MbrEntry::default(); 4];
        for (i, e) in entries.iter_mut().enumerate() {
            let o = ENTRIES_OFFSET + 16 * i;
            *e = MbrEntry::decode(&raw[o..o + 16]);
        }
        let s = &raw[SIGNATURE_OFFSET..SIGNATURE_OFFSET + 4];
        Some(Sector0 {
            signature: u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
            entries,
            raw,
        })
    }

    /// The raw sector with `entries` and `signature` written in.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = self.raw.clone();
        s[SIGNATURE_OFFSET..SIGNATURE_OFFSET + 4].copy_from_slice(&self.signature.to_le_bytes());
        for (i, e) in self.entries.iter().enumerate() {
            let o = ENTRIES_OFFSET + 16 * i;
            s[o..o + 16].copy_from_slice(&e.encode());
        }
        s[510] = 0x55;
        s[511] = 0xaa;
        s
    }

    pub fn to_table(&self, disk_sectors: u64) -> Table {
        let mut sig = [0u8; 16];
        sig[..4].copy_from_slice(&self.signature.to_le_bytes());
        let partitions = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.system_id != 0 && e.sectors != 0)
            .map(|(i, e)| TableEntry {
                index: i as u32 + 1,
                label: String::new(),
                type_guid: Guid::NIL,
                uuid: Guid::NIL,
                mbr_type: e.system_id,
                bootable: e.bootable,
                start_lba: u64::from(e.start_lba),
                end_lba: u64::from(e.start_lba) + u64::from(e.sectors) - 1,
            })
            .collect();
        Table {
            kind: TableKind::Mbr,
            disk_guid: Guid(sig),
            partitions,
            last_usable_lba: max_sectors(disk_sectors) - 1,
            disk_sectors,
        }
    }
}

/// Sectors an MBR can address on a disk of `disk_sectors` (32-bit LBA + count).
pub fn max_sectors(disk_sectors: u64) -> u64 {
    disk_sectors.min(1 << 32)
}

/// A fresh MBR sector (zero boot code) with these entries.
pub fn new_sector(signature: u32, entries: [MbrEntry; 4], sector_size: u64) -> Vec<u8> {
    Sector0 {
        signature,
        entries,
        raw: vec![0u8; sector_size as usize],
    }
    .encode()
}

/// The protective MBR of a GPT disk: one 0xee entry from LBA 1 over the whole
/// disk (capped at 2^32-1 sectors), as the UEFI spec asks.
pub fn protective(disk_sectors: u64, sector_size: u64) -> Vec<u8> {
    let entry = MbrEntry {
        bootable: false,
        system_id: PROTECTIVE,
        start_lba: 1,
        sectors: (disk_sectors - 1).min(u64::from(u32::MAX)) as u32,
    };
    let mut s = new_sector(
        0,
        [
            entry,
            MbrEntry::default(),
            MbrEntry::default(),
            MbrEntry::default(),
        ],
        sector_size,
    );
    // UEFI: the protective entry's CHS start is 0/0/2 and its end 0xffffff
    // when the disk is larger than CHS can address.
    s[ENTRIES_OFFSET + 1..ENTRIES_OFFSET + 4].copy_from_slice(&[0x00, 0x02, 0x00]);
    s
}

/// Sector 0 if it carries the 55 AA signature.
pub fn read_sector0(
    dev: &mut (impl Read + Seek),
    sector_size: u64,
) -> Result<Option<Sector0>, DiskError> {
    let mut raw = vec![0u8; sector_size as usize];
    match read_exact_at(dev, 0, &mut raw) {
        Ok(()) => Ok(Sector0::decode(raw)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(DiskError::DeviceIo {
            action: "reading sector 0".into(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_matches_fdisk_geometry() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(u64::from(u32::MAX)), [254, 0xff, 0xff]);
    }

    #[test]
    fn entry_round_trips() {
        let e = MbrEntry {
            bootable: true,
            system_id: 0x0c,
            start_lba: 2048,
            sectors: 131072,
        };
        assert_eq!(MbrEntry::decode(&e.encode()), e);
        assert_eq!(MbrEntry::default().encode(), [0; 16]);
    }
}
