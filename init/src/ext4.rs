//! The ext4 superblock, as far as init reads it: the size, the label, the
//! blocks reserved for root, and whether the journal needs replaying.
//!
//! The superblock is the 1024 bytes at offset 1024 of the device. Its layout
//! is ext4's on-disk format (the kernel's `struct ext4_super_block`); only the
//! fields named below are read.

/// Where the superblock starts on the device, and its size.
pub const SUPERBLOCK_AT: u64 = 1024;
pub const SUPERBLOCK_LEN: usize = 1024;

const MAGIC: usize = 0x38;
const BLOCKS_LO: usize = 0x04;
const R_BLOCKS_LO: usize = 0x08;
const LOG_BLOCK_SIZE: usize = 0x18;
const INCOMPAT: usize = 0x60;
const LABEL: usize = 0x78;
const BLOCKS_HI: usize = 0x150;
const R_BLOCKS_HI: usize = 0x154;

const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_64BIT: u32 = 0x80;

/// The superblock if it is one of ext2/3/4's (magic 0xef53), whole.
fn superblock(sb: &[u8]) -> Option<&[u8]> {
    let sb = sb.get(..SUPERBLOCK_LEN)?;
    let magic = u16::from_le_bytes(sb.get(MAGIC..MAGIC + 2)?.try_into().ok()?);
    (magic == 0xef53).then_some(sb)
}

fn u32_at(sb: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(sb.get(at..at + 4)?.try_into().ok()?))
}

fn is_64bit(sb: &[u8]) -> Option<bool> {
    Some(u32_at(sb, INCOMPAT)? & INCOMPAT_64BIT != 0)
}

/// A 64-bit block count from its low and (with the `64bit` feature) high words.
fn count(sb: &[u8], lo: usize, hi: usize) -> Option<u64> {
    let high = if is_64bit(sb)? { u32_at(sb, hi)? } else { 0 };
    Some((u64::from(high) << 32) | u64::from(u32_at(sb, lo)?))
}

/// Size of an ext4 filesystem from its superblock: (blocks, block size).
/// `None` if it is not ext2/3/4.
pub fn size(sb: &[u8]) -> Option<(u64, u64)> {
    let sb = superblock(sb)?;
    let log_size = u32_at(sb, LOG_BLOCK_SIZE)?;
    let block_size = 1024u64.checked_shl(log_size.min(16))?;
    Some((count(sb, BLOCKS_LO, BLOCKS_HI)?, block_size))
}

/// Whether the journal holds transactions to replay: the filesystem was not
/// cleanly unmounted (`needs_recovery`). `None` if it is not ext2/3/4.
pub fn needs_recovery(sb: &[u8]) -> Option<bool> {
    Some(u32_at(superblock(sb)?, INCOMPAT)? & INCOMPAT_RECOVER != 0)
}

/// Blocks reserved for root (and for `CAP_SYS_RESOURCE`). `None` if it is not
/// ext2/3/4.
pub fn reserved_blocks(sb: &[u8]) -> Option<u64> {
    count(superblock(sb)?, R_BLOCKS_LO, R_BLOCKS_HI)
}

/// The volume label of an ext4 filesystem from its superblock. `None` if it
/// is not ext2/3/4.
pub fn label(sb: &[u8]) -> Option<String> {
    let raw = superblock(sb)?.get(LABEL..LABEL + 16)?;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(&raw[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic(blocks: u64, log_size: u32, bit64: bool) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[MAGIC..MAGIC + 2].copy_from_slice(&0xef53u16.to_le_bytes());
        sb[BLOCKS_LO..BLOCKS_LO + 4].copy_from_slice(&(blocks as u32).to_le_bytes());
        sb[LOG_BLOCK_SIZE..LOG_BLOCK_SIZE + 4].copy_from_slice(&log_size.to_le_bytes());
        if bit64 {
            sb[INCOMPAT..INCOMPAT + 4].copy_from_slice(&INCOMPAT_64BIT.to_le_bytes());
            sb[BLOCKS_HI..BLOCKS_HI + 4].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
        }
        sb
    }

    #[test]
    fn sizes() {
        assert_eq!(size(&synthetic(8192, 2, false)), Some((8192, 4096)));
        assert_eq!(size(&synthetic(1 << 33, 2, true)), Some((1 << 33, 4096)));
        assert_eq!(size(&synthetic(65536, 0, false)), Some((65536, 1024)));
        assert_eq!(size(&[0u8; 1024]), None);
        assert_eq!(size(&[0u8; 10]), None);
    }

    #[test]
    fn reserve() {
        let mut sb = synthetic(1000, 0, false);
        sb[R_BLOCKS_LO..R_BLOCKS_LO + 4].copy_from_slice(&20u32.to_le_bytes());
        assert_eq!(reserved_blocks(&sb), Some(20));
        assert_eq!(reserved_blocks(&[0u8; 1024]), None);
    }

    #[test]
    fn recovery() {
        let mut sb = synthetic(1000, 0, true);
        assert_eq!(needs_recovery(&sb), Some(false));
        sb[INCOMPAT] |= INCOMPAT_RECOVER as u8;
        assert_eq!(needs_recovery(&sb), Some(true));
        assert_eq!(size(&sb), Some((1000, 1024)));
        assert_eq!(needs_recovery(&[0u8; 1024]), None);
    }
}
