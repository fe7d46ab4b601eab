//! GPT and MBR as init reads them (`init/src/disks.rs` hands the whole-disk
//! device to `ballast_disk::read_table`) and as first boot grows the last
//! partition (`ballast_disk::grow_last`).

use ballast_disk::{grow_last, read_table, SECTOR};
use std::io::Cursor;

/// Room after the input, so a table that fits can be grown into it.
const SPARE_SECTORS: u64 = 64;

/// Read the table of a disk holding these bytes, then grow its last partition
/// on a copy that has room to grow; a grown table must read back.
pub fn partition_table(data: &[u8]) {
    let mut disk = data.to_vec();
    let _ = read_table(&mut Cursor::new(&mut disk), SECTOR);

    let bytes = (data.len() as u64 / SECTOR + SPARE_SECTORS) * SECTOR;
    disk.resize(bytes as usize, 0);
    let Ok(table) = read_table(&mut Cursor::new(&mut disk), SECTOR) else {
        return;
    };
    let Some(last) = table.partitions.iter().map(|p| p.index).max() else {
        return;
    };
    let mut dev = Cursor::new(&mut disk);
    if let Ok(Some(grown)) = grow_last(&mut dev, bytes, last) {
        assert!(
            grown.end_lba < bytes / SECTOR,
            "grown past the end of the disk: {grown:?}"
        );
        assert!(disk.len() as u64 == bytes, "growing changed the disk size");
        let after = read_table(&mut Cursor::new(&mut disk), SECTOR);
        assert!(
            after.is_ok(),
            "the grown table does not read back: {after:?}"
        );
    }
}
