//! Legacy BIOS boot on a GPT disk image, the way `grub-bios-setup` installs GRUB
//! (i386-pc) when the disk has a BIOS boot partition. This module places the two
//! pieces GRUB's build produced; it does not build them.
//!
//! # On-disk facts (GRUB 2.06, `include/grub/i386/pc/boot.h`, `util/setup.c`)
//!
//! * **boot.img** (512 bytes) goes into sector 0, the protective MBR, keeping the
//!   sector's bytes 0x1b8..0x1fe (disk signature and the partition table with the
//!   0xee entry) and its BPB area 0x03..0x5a (zero on our images). Two patches:
//!   `kernel_sector` at 0x5c (u64 LE) = the LBA of core.img's first sector; at 0x66
//!   (`boot_drive_check`) the 2-byte `jmp` becomes `nop nop`, so the code forces a
//!   hard-disk drive number on BIOSes that pass a bogus one (what grub-bios-setup
//!   does for a hard disk). The BIOS runs it at 0x7c00; it loads one sector,
//!   core.img's first.
//! * **core.img** goes into the BIOS boot partition (type
//!   21686148-6449-6e6f-744e-656564454649), whole sectors. Its first sector
//!   (`diskboot.img`) ends with a block list, `{start: u64, len: u16, segment: u16}`
//!   LE at offset 500: `start` = the LBA of core.img's second sector, `len` = the
//!   remaining sectors, `segment` = 0x820 (loaded right after the first sector at
//!   0x8000; grub-mkimage writes 2, size−1, 0x820 there, for core.img right after
//!   sector 1); the 12 bytes before it stay zero (the list's terminator). core.img is
//!   contiguous, so one entry holds it all. GRUB's optional Reed-Solomon parity is not
//!   added (its length field stays 0, as in a core.img grub-mkimage writes).
//! * The BIOS boot partition is entry 5 of the table, in the gap between the GPT's
//!   entry array and the first partition (LBA 34..=2047), so the numbers of the other
//!   partitions (boot 1, root A 2, root B 3, state 4) stay what init and the slot
//!   crate use, and the state partition stays the last on the disk (it grows).
//!   core.img may be at most 2014 sectors (1007 KiB); GRUB's own limit is larger.
//!
//! Both GPT copies (entry arrays and headers, CRCs) are rewritten; the image must be
//! one [`crate::write_image`] just wrote (the gap empty, entry 5 unused).

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::gpt::{self, Entry, Header};
use crate::{types, DiskError, Guid, SECTOR};

/// First LBA of the BIOS boot partition (right after the primary entry array).
pub const FIRST_LBA: u64 = 34;
/// Last LBA of the BIOS boot partition (before the first partition at 1 MiB).
pub const LAST_LBA: u64 = 2047;
/// The BIOS boot partition's number.
pub const INDEX: u32 = 5;
/// Its GPT name.
pub const LABEL: &str = "bios-boot";

const KERNEL_SECTOR: usize = 0x5c;
const DRIVE_CHECK: usize = 0x66;
const BPB: std::ops::Range<usize> = 0x03..0x5a;
const KEEP: std::ops::Range<usize> = 0x1b8..0x1fe;
const BLOCKLIST: usize = 512 - 12;
const SEGMENT: u16 = 0x820;

/// Sector 0 with GRUB's `boot_img` in it, pointing at core.img at [`FIRST_LBA`].
pub fn patch_mbr(sector0: &[u8], boot_img: &[u8]) -> Result<Vec<u8>, String> {
    if boot_img.len() != 512 || boot_img[510..] != [0x55, 0xaa] {
        return Err(format!(
            "boot.img is {} bytes without 55 AA at its end; GRUB's i386-pc boot.img is one 512-byte sector",
            boot_img.len()
        ));
    }
    if sector0.len() != 512 {
        return Err("sector 0 is not 512 bytes".into());
    }
    let mut s = boot_img.to_vec();
    s[BPB].copy_from_slice(&sector0[BPB]);
    s[KEEP].copy_from_slice(&sector0[KEEP]);
    s[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&FIRST_LBA.to_le_bytes());
    s[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    Ok(s)
}

/// core.img with its block list pointing at its own sectors from [`FIRST_LBA`].
pub fn patch_core(core_img: &[u8]) -> Result<Vec<u8>, String> {
    let max = (LAST_LBA + 1 - FIRST_LBA) as usize;
    if core_img.len() < 1024 {
        return Err(format!(
            "core.img is {} bytes: too small to be GRUB's",
            core_img.len()
        ));
    }
    let mut c = core_img.to_vec();
    c.resize(core_img.len().div_ceil(512) * 512, 0);
    let sectors = c.len() / 512;
    if sectors > max {
        return Err(format!(
            "core.img is {sectors} sectors; the BIOS boot partition holds {max}: embed fewer modules"
        ));
    }
    // grub-mkimage fills in the list for core.img right after sector 1 (start 2);
    // the entry before it must be the zero terminator.
    if c[BLOCKLIST - 12..BLOCKLIST].iter().any(|&b| b != 0) {
        return Err("core.img's first sector holds more than one block list entry: give grub-mkimage's output, not an installed one".into());
    }
    c[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(FIRST_LBA + 1).to_le_bytes());
    c[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
    c[BLOCKLIST + 10..BLOCKLIST + 12].copy_from_slice(&SEGMENT.to_le_bytes());
    Ok(c)
}

/// Make the GPT disk image at `path` boot on legacy BIOS: add the BIOS boot partition
/// (entry [`INDEX`], `uuid`), write the patched core.img into it and boot.img into the
/// protective MBR (module doc).
pub fn install(path: &Path, boot_img: &[u8], core_img: &[u8], uuid: Guid) -> Result<(), DiskError> {
    let fail = |reason: String| DiskError::BiosBoot {
        path: path.to_path_buf(),
        reason,
    };
    let io = |action: &str| crate::error::io_err(path, action.to_string());
    let core = patch_core(core_img).map_err(fail)?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io("opening the image"))?;
    let disk_sectors = f.metadata().map_err(io("reading the image size"))?.len() / SECTOR;
    let g = gpt::read(&mut f, SECTOR, disk_sectors)?;
    if g.from_backup || g.header.my_lba != 1 {
        return Err(fail(
            "the primary GPT is damaged; write the image again".into(),
        ));
    }
    if g.header.first_usable_lba > FIRST_LBA {
        return Err(fail(format!(
            "the first usable LBA is {}: no room for the BIOS boot partition at LBA {FIRST_LBA}",
            g.header.first_usable_lba
        )));
    }
    if let Some(p) = g.table.partitions.iter().find(|p| p.start_lba <= LAST_LBA) {
        return Err(fail(format!(
            "partition {} starts at LBA {}, inside the BIOS boot gap {FIRST_LBA}..={LAST_LBA}",
            p.index, p.start_lba
        )));
    }
    let size = g.header.entry_size as usize;
    let slot = (INDEX as usize - 1) * size;
    let mut raw = g.entries_raw.clone();
    if raw.len() < slot + size || raw[slot..slot + 16].iter().any(|&b| b != 0) {
        return Err(fail(format!(
            "GPT entry {INDEX} is taken; the BIOS boot partition needs it"
        )));
    }
    Entry {
        type_guid: types::BIOS_BOOT,
        uuid,
        first_lba: FIRST_LBA,
        last_lba: LAST_LBA,
        attributes: 0,
        name: LABEL.to_string(),
    }
    .encode_into(&mut raw[slot..slot + size]);
    let primary = Header {
        entries_crc: crc32fast::hash(&raw),
        ..g.header.clone()
    };
    let entry_sectors = primary.entries_sectors(SECTOR);
    let backup = Header {
        my_lba: primary.alternate_lba,
        alternate_lba: 1,
        entries_lba: primary.alternate_lba - entry_sectors,
        ..primary.clone()
    };
    let mut sector0 = vec![0u8; SECTOR as usize];
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read_exact(&mut sector0))
        .map_err(io("reading sector 0"))?;
    let mbr = patch_mbr(&sector0, boot_img).map_err(fail)?;
    let mut put = |lba: u64, bytes: &[u8], what: &str| {
        f.seek(SeekFrom::Start(lba * SECTOR))
            .and_then(|_| f.write_all(bytes))
            .map_err(io(&format!("writing {what}")))
    };
    put(FIRST_LBA, &core, "core.img")?;
    put(backup.entries_lba, &raw, "the backup GPT entries")?;
    put(
        backup.my_lba,
        &backup.encode(SECTOR),
        "the backup GPT header",
    )?;
    put(primary.entries_lba, &raw, "the primary GPT entries")?;
    put(1, &primary.encode(SECTOR), "the primary GPT header")?;
    put(0, &mbr, "boot.img into the MBR")?;
    f.sync_all().map_err(io("syncing the image"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Content, Disk, Partition, TableKind, MIB};

    fn fake_boot_img() -> Vec<u8> {
        let mut b = vec![0xccu8; 512];
        b[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0xeb, 0x05]);
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    #[test]
    fn a_disk_gets_the_bios_boot_partition_and_grubs_pointers() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("disk.img");
        let part = |label: &str| Partition {
            label: label.into(),
            type_guid: types::LINUX_DATA,
            uuid: Guid::stable("t", label),
            mbr_type: 0x83,
            bootable: false,
            size: MIB,
            content: Content::Zero,
        };
        let disk = Disk {
            kind: TableKind::Gpt,
            disk_guid: Guid::stable("t", "disk"),
            partitions: vec![part("boot"), part("root-a"), part("root-b"), part("state")],
        };
        crate::write_image(&img, &disk).unwrap();
        let mut core = vec![0x11u8; 3 * 512 + 100];
        core[BLOCKLIST - 12..BLOCKLIST].fill(0);
        install(&img, &fake_boot_img(), &core, Guid::stable("t", "bios")).unwrap();

        let mut f = std::fs::File::open(&img).unwrap();
        let t = crate::read_table(&mut f, SECTOR).unwrap();
        let bios = t.partitions.iter().find(|p| p.index == INDEX).unwrap();
        assert_eq!((bios.start_lba, bios.end_lba), (FIRST_LBA, LAST_LBA));
        assert_eq!(t.partitions.len(), 5);
        let state = t.partitions.iter().find(|p| p.index == 4).unwrap();
        assert!(t.partitions.iter().all(|p| p.end_lba <= state.end_lba));

        let bytes = std::fs::read(&img).unwrap();
        assert_eq!(
            &bytes[KERNEL_SECTOR..KERNEL_SECTOR + 8],
            &34u64.to_le_bytes()
        );
        assert_eq!(&bytes[DRIVE_CHECK..DRIVE_CHECK + 2], &[0x90, 0x90]);
        assert_eq!(bytes[0x1be + 4], 0xee, "the protective entry stays");
        let c = &bytes[34 * 512..];
        assert_eq!(&c[BLOCKLIST..BLOCKLIST + 8], &35u64.to_le_bytes());
        assert_eq!(&c[BLOCKLIST + 8..BLOCKLIST + 10], &3u16.to_le_bytes());
        assert_eq!(&c[BLOCKLIST + 10..BLOCKLIST + 12], &0x820u16.to_le_bytes());
        assert_eq!(c[512], 0x11);

        // A second install finds the gap taken.
        let e = install(&img, &fake_boot_img(), &core, Guid::stable("t", "bios"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("partition 5 starts at LBA 34"), "{e}");
    }

    #[test]
    fn wrong_pieces_are_refused() {
        assert!(patch_mbr(&[0u8; 512], &[0u8; 400])
            .unwrap_err()
            .contains("boot.img"));
        let e = patch_core(&vec![0u8; 2015 * 512]).unwrap_err();
        assert!(e.contains("2015 sectors"), "{e}");
    }
}
