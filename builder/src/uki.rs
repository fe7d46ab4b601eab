//! The Unified Kernel Image `ballast.efi`: the systemd stub from Debian's
//! `systemd-boot-efi` (`linuxx64.efi.stub`, `linuxaa64.efi.stub`) with the
//! kernel, the initramfs, the command line and an os-release appended as PE
//! sections (`.osrel`, `.cmdline`, `.initrd`, `.linux`, in ukify's order).
//! UEFI firmware loads it like any EFI program (over PXE, from a disk); the
//! stub finds the sections in its own loaded image, hands the initramfs to the
//! kernel (`LINUX_INITRD_MEDIA_GUID`) and starts it with `.cmdline`.
//!
//! This module is a PE32+ section writer of its own (ADR 0013): bookworm has
//! no `ukify`, and the host's objcopy cannot write arm64 PE. It only appends:
//! every byte of the stub stays where it was (its sections, and whatever
//! follows them: the x86_64 stub's COFF symbols, the arm64 stub's SBAT text),
//! the new section headers go in the header slack after the stub's section
//! table, and their data after the end of the stub's file, each section at the
//! next `FileAlignment` in the file and `SectionAlignment` in memory. Then
//! `NumberOfSections`, `SizeOfImage`, `SizeOfInitializedData` and the PE
//! checksum are brought up to date.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// `IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ`: what ukify gives
/// the sections it adds.
const DATA_READ: u32 = 0x4000_0040;
const SECTION_HEADER: usize = 40;
const PE32_PLUS: u16 = 0x20b;

/// One section header of a PE file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub raw_size: u32,
    pub raw_offset: u32,
    pub characteristics: u32,
}

/// The header fields this writer reads and changes.
#[derive(Debug, Clone)]
pub struct Headers {
    pub machine: u16,
    /// File offset of the COFF header (after `PE\0\0`).
    coff: usize,
    /// File offset of the optional header.
    optional: usize,
    /// File offset of the section table.
    table: usize,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_image: u32,
    pub size_of_headers: u32,
    pub sections: Vec<Section>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn align_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Reads the headers of a PE32+ image (`what` names it in errors).
pub fn headers(pe: &[u8], what: &str) -> Result<Headers> {
    let short = || format!("{what}: truncated PE header");
    if pe.get(0..2) != Some(b"MZ") {
        bail!("{what}: not a PE/EFI image (no MZ signature)");
    }
    let pe_at = u32_at(pe, 0x3c).with_context(short)? as usize;
    if pe.get(pe_at..pe_at + 4) != Some(b"PE\0\0") {
        bail!("{what}: not a PE/EFI image (no PE signature at {pe_at:#x})");
    }
    let coff = pe_at + 4;
    let machine = u16_at(pe, coff).with_context(short)?;
    let count = u16_at(pe, coff + 2).with_context(short)? as usize;
    let optional_size = u16_at(pe, coff + 16).with_context(short)? as usize;
    let optional = coff + 20;
    let magic = u16_at(pe, optional).with_context(short)?;
    if magic != PE32_PLUS {
        bail!("{what}: optional header magic {magic:#x}, not PE32+ (0x20b): not a 64-bit EFI stub");
    }
    let field = |off: usize| u32_at(pe, optional + off).with_context(short);
    let table = optional + optional_size;
    let mut sections = Vec::with_capacity(count);
    for i in 0..count {
        let at = table + i * SECTION_HEADER;
        let raw = pe.get(at..at + SECTION_HEADER).with_context(short)?;
        let name = String::from_utf8_lossy(&raw[..8])
            .trim_end_matches('\0')
            .to_string();
        let word = |off: usize| u32_at(raw, off).unwrap_or(0);
        sections.push(Section {
            name,
            virtual_size: word(8),
            virtual_address: word(12),
            raw_size: word(16),
            raw_offset: word(20),
            characteristics: word(36),
        });
    }
    let h = Headers {
        machine,
        coff,
        optional,
        table,
        section_alignment: field(32)?,
        file_alignment: field(36)?,
        size_of_image: field(56)?,
        size_of_headers: field(60)?,
        sections,
    };
    for (name, a) in [
        ("SectionAlignment", h.section_alignment),
        ("FileAlignment", h.file_alignment),
    ] {
        if a == 0 || !a.is_power_of_two() {
            bail!("{what}: {name} {a:#x} is not a power of two");
        }
    }
    Ok(h)
}

/// `NOP` on aarch64 (`0xd503201f`): gnu-efi's arm64 stub pads its header up
/// to `.text` with it (the header is never executed).
const AARCH64_NOP: [u8; 4] = [0x1f, 0x20, 0x03, 0xd5];

/// Header slack a section header may be written over: zeros, or the arm64
/// stub's NOP padding (whole 4-byte words from an aligned offset).
fn is_padding(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
        || (bytes.len().is_multiple_of(4) && bytes.chunks(4).all(|w| w == AARCH64_NOP))
}

/// The PE checksum (the algorithm of Windows' `CheckSumMappedFile`): 16-bit
/// one's-complement-style sum of the file with the checksum field as zero,
/// plus the file's length.
pub fn checksum(pe: &[u8], checksum_at: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, chunk) in pe.chunks(2).enumerate() {
        let at = i * 2;
        if at >= checksum_at && at < checksum_at + 4 {
            continue;
        }
        let word = u16::from_le_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u64::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(pe.len() as u32)
}

/// The stub with `sections` (name, contents) appended, as one PE image.
pub fn assemble(stub: &[u8], sections: &[(&str, &[u8])], what: &str) -> Result<Vec<u8>> {
    let h = headers(stub, what)?;
    for s in &h.sections {
        if sections.iter().any(|(name, _)| *name == s.name) {
            bail!("{what}: the stub already has a {} section", s.name);
        }
    }
    // The new headers must fit between the section table and the first
    // section's data, inside SizeOfHeaders, over bytes that are zero.
    let table_end = h.table + h.sections.len() * SECTION_HEADER;
    let new_end = table_end + sections.len() * SECTION_HEADER;
    let first_data = h
        .sections
        .iter()
        .filter(|s| s.raw_size > 0)
        .map(|s| s.raw_offset as usize)
        .min()
        .unwrap_or(h.size_of_headers as usize);
    let room = first_data.min(h.size_of_headers as usize);
    if new_end > room {
        bail!(
            "{what}: no room for {} more section headers (the table ends at {table_end:#x}, the headers at {room:#x})",
            sections.len()
        );
    }
    if !is_padding(&stub[table_end..new_end]) {
        bail!("{what}: the header slack after the section table is not empty ({table_end:#x}..{new_end:#x})");
    }
    let falign = u64::from(h.file_alignment);
    let salign = u64::from(h.section_alignment);
    let mut next_va = h
        .sections
        .iter()
        .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size.max(s.raw_size)))
        .max()
        .unwrap_or(0)
        .max(u64::from(h.size_of_image));
    let mut out = stub.to_vec();
    let mut added_raw: u64 = 0;
    for (i, (name, data)) in sections.iter().enumerate() {
        if name.is_empty() || name.len() > 8 {
            bail!("section name {name:?}: 1 to 8 bytes");
        }
        let len = data.len() as u64;
        let offset = align_up(out.len() as u64, falign);
        let raw_size = align_up(len, falign);
        let va = align_up(next_va, salign);
        next_va = va + len;
        let too_big = |v: u64| {
            u32::try_from(v).with_context(|| {
                format!("{what}: section {name} ends past 4 GiB: too big for a PE image")
            })
        };
        let header_at = table_end + i * SECTION_HEADER;
        let mut header = [0u8; SECTION_HEADER];
        header[..name.len()].copy_from_slice(name.as_bytes());
        put_u32(&mut header, 8, too_big(len)?);
        put_u32(&mut header, 12, too_big(va)?);
        put_u32(&mut header, 16, too_big(raw_size)?);
        put_u32(&mut header, 20, too_big(offset)?);
        put_u32(&mut header, 36, DATA_READ);
        too_big(offset + raw_size)?;
        too_big(next_va)?;
        out[header_at..header_at + SECTION_HEADER].copy_from_slice(&header);
        out.resize(offset as usize, 0);
        out.extend_from_slice(data);
        out.resize((offset + raw_size) as usize, 0);
        added_raw += raw_size;
    }
    let count = u16::try_from(h.sections.len() + sections.len())
        .with_context(|| format!("{what}: too many sections"))?;
    put_u16(&mut out, h.coff + 2, count);
    let size_of_image = u32::try_from(align_up(next_va, salign))
        .with_context(|| format!("{what}: image too big"))?;
    put_u32(&mut out, h.optional + 56, size_of_image);
    // SizeOfInitializedData: informative, kept consistent as objcopy does.
    let init = u32_at(&out, h.optional + 8).unwrap_or(0);
    put_u32(
        &mut out,
        h.optional + 8,
        init.saturating_add(u32::try_from(added_raw).unwrap_or(u32::MAX)),
    );
    let sum_at = h.optional + 64;
    let sum = checksum(&out, sum_at);
    put_u32(&mut out, sum_at, sum);
    Ok(out)
}

/// The `.osrel` of a Ballast UKI: what `bootctl list` and the stub show.
pub fn os_release(version: &str) -> String {
    format!("NAME=Ballast\nID=ballast\nVERSION_ID={version}\nPRETTY_NAME=\"Ballast {version}\"\n")
}

/// The systemd stub's file name in `systemd-boot-efi` for a Debian architecture.
pub fn stub_name(arch: ballast_inputs::Arch) -> Result<&'static str> {
    match arch {
        ballast_inputs::Arch::X86_64 => Ok("linuxx64.efi.stub"),
        ballast_inputs::Arch::Arm64 => Ok("linuxaa64.efi.stub"),
        other => bail!(
            "no UKI for {}: the systemd stub exists for x86_64 and arm64 only",
            other.name()
        ),
    }
}

/// Writes `out`: the stub with the kernel, initramfs, command line and
/// os-release of `version`.
pub fn write(
    stub: &Path,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    version: &str,
    out: &Path,
) -> Result<()> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let stub_bytes = read(stub)?;
    let kernel_bytes = read(kernel)?;
    let linux = headers(&kernel_bytes, &kernel.display().to_string()).with_context(|| {
        "the UKI's kernel must be an EFI-stub kernel (a PE image) the systemd stub can start"
    })?;
    let machine = headers(&stub_bytes, &stub.display().to_string())?.machine;
    if linux.machine != machine {
        bail!(
            "{}: PE machine {:#x}, but the stub {} is for {machine:#x}: a kernel of another arch",
            kernel.display(),
            linux.machine,
            stub.display()
        );
    }
    let initrd_bytes = read(initrd)?;
    let osrel = os_release(version);
    let image = assemble(
        &stub_bytes,
        &[
            (".osrel", osrel.as_bytes()),
            (".cmdline", cmdline.as_bytes()),
            (".initrd", &initrd_bytes),
            (".linux", &kernel_bytes),
        ],
        &stub.display().to_string(),
    )?;
    let tmp = out.with_extension("efi.tmp");
    std::fs::write(&tmp, &image).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("moving {} to {}", tmp.display(), out.display()))
}

#[cfg(test)]
mod tests;
