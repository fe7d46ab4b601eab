//! The section writer, read back by our own reader and by goblin's PE parser.

use super::*;

/// A small PE32+ EFI program laid out as Debian's arm64 stub is: 4 KiB
/// section alignment, 512-byte file alignment, two sections, and bytes after
/// the last section that belong to none (the stub's SBAT text).
fn stub() -> Vec<u8> {
    let mut b = vec![0u8; 0x800];
    b[0..2].copy_from_slice(b"MZ");
    put_u32(&mut b, 0x3c, 0x40);
    b[0x40..0x44].copy_from_slice(b"PE\0\0");
    let coff = 0x44;
    put_u16(&mut b, coff, 0xaa64);
    put_u16(&mut b, coff + 2, 2);
    put_u16(&mut b, coff + 16, 0xf0);
    put_u16(&mut b, coff + 18, 0x206);
    let opt = coff + 20;
    put_u16(&mut b, opt, PE32_PLUS);
    put_u32(&mut b, opt + 8, 0x200); // SizeOfInitializedData
    put_u32(&mut b, opt + 16, 0x1000); // AddressOfEntryPoint
    put_u32(&mut b, opt + 32, 0x1000);
    put_u32(&mut b, opt + 36, 0x200);
    put_u32(&mut b, opt + 56, 0x3000);
    put_u32(&mut b, opt + 60, 0x400);
    put_u16(&mut b, opt + 68, 10); // EFI application
    put_u32(&mut b, opt + 108, 16); // NumberOfRvaAndSizes
    let table = opt + 0xf0;
    for (i, (name, va, vs, off, chars)) in [
        (b".text", 0x1000u32, 0x180u32, 0x400u32, 0x6000_0020u32),
        (b".data", 0x2000, 0x80, 0x600, 0xc000_0040),
    ]
    .into_iter()
    .enumerate()
    {
        let at = table + i * SECTION_HEADER;
        b[at..at + 5].copy_from_slice(name);
        put_u32(&mut b, at + 8, vs);
        put_u32(&mut b, at + 12, va);
        put_u32(&mut b, at + 16, 0x200);
        put_u32(&mut b, at + 20, off);
        put_u32(&mut b, at + 36, chars);
    }
    // gnu-efi's arm64 stub pads its header with NOPs up to .text.
    for word in b[table + 2 * SECTION_HEADER..0x400].chunks_mut(4) {
        word.copy_from_slice(&AARCH64_NOP);
    }
    for byte in &mut b[0x400..0x580] {
        *byte = 0xc3;
    }
    b[0x600..0x608].copy_from_slice(b"DATADATA");
    b.extend_from_slice(b"sbat,1,trailing bytes of no section");
    b
}

#[test]
fn the_sections_are_appended_and_the_stub_kept() {
    let stub = stub();
    let kernel = vec![0x4du8; 5000];
    let initrd = vec![0x1fu8; 1234];
    let osrel = os_release("0.1.0");
    let image = assemble(
        &stub,
        &[
            (".osrel", osrel.as_bytes()),
            (".cmdline", b"console=ttyAMA0 ballast.verity=abc"),
            (".initrd", &initrd),
            (".linux", &kernel),
        ],
        "test stub",
    )
    .unwrap();

    let h = headers(&image, "uki").unwrap();
    let names: Vec<_> = h.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [".text", ".data", ".osrel", ".cmdline", ".initrd", ".linux"]
    );
    // The stub's bytes, trailer included, are where they were.
    assert_eq!(&image[0x400..stub.len()], &stub[0x400..]);
    let old = headers(&stub, "stub").unwrap();
    assert_eq!(h.sections[..2], old.sections[..]);
    // Each new section holds its contents, aligned in the file and in memory.
    for (s, want) in h.sections[2..].iter().zip([
        osrel.as_bytes(),
        b"console=ttyAMA0 ballast.verity=abc".as_slice(),
        &initrd,
        &kernel,
    ]) {
        assert_eq!(s.virtual_size as usize, want.len(), "{}", s.name);
        assert_eq!(s.raw_offset % h.file_alignment, 0, "{}", s.name);
        assert_eq!(s.virtual_address % h.section_alignment, 0, "{}", s.name);
        assert!(s.raw_offset as usize >= stub.len(), "{}", s.name);
        let at = s.raw_offset as usize;
        assert_eq!(&image[at..at + want.len()], want, "{}", s.name);
        assert_eq!(s.characteristics, DATA_READ);
    }
    // No two sections overlap in memory or in the file, and all fit the image.
    let mut spans: Vec<_> = h
        .sections
        .iter()
        .map(|s| (s.virtual_address, s.virtual_address + s.virtual_size))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap in memory: {spans:x?}");
    }
    assert!(spans.last().unwrap().1 <= h.size_of_image);
    assert_eq!(h.size_of_image % h.section_alignment, 0);
    let mut files: Vec<_> = h
        .sections
        .iter()
        .map(|s| (s.raw_offset, s.raw_offset + s.raw_size))
        .collect();
    files.sort();
    for w in files.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap in the file: {files:x?}");
    }
    assert!(files.last().unwrap().1 as usize <= image.len());
    let sum = u32_at(&image, h.optional + 64).unwrap();
    assert_eq!(sum, checksum(&image, h.optional + 64));
    assert_ne!(sum, 0);

    // An independent PE parser agrees.
    let pe = goblin::pe::PE::parse(&image).expect("goblin parses the UKI");
    assert!(pe.is_64);
    let linux = pe
        .sections
        .iter()
        .find(|s| s.name().ok() == Some(".linux"))
        .expect("a .linux section");
    let at = linux.pointer_to_raw_data as usize;
    assert_eq!(&image[at..at + kernel.len()], &kernel[..]);
    let opt = pe.header.optional_header.expect("an optional header");
    assert_eq!(opt.windows_fields.size_of_image, h.size_of_image);
    assert_eq!(pe.header.coff_header.number_of_sections, 6);
}

#[test]
fn a_stub_without_room_or_of_the_wrong_kind_is_refused() {
    let mut tight = stub();
    // SizeOfHeaders and the first section's data just after the table.
    let h = headers(&tight, "stub").unwrap();
    let end = (h.table + 2 * SECTION_HEADER) as u32;
    put_u32(&mut tight, h.optional + 60, end);
    put_u32(&mut tight, h.table + 20, end);
    let e = assemble(&tight, &[(".linux", b"x")], "tight.stub")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tight.stub: no room"), "{e}");

    let mut pe32 = stub();
    put_u16(&mut pe32, 0x44 + 20, 0x10b);
    let mut busy = stub();
    let h = headers(&busy, "stub").unwrap();
    busy[h.table + 2 * SECTION_HEADER + 4] = 0x90;
    let e = assemble(&busy, &[(".linux", b"x")], "busy.stub")
        .unwrap_err()
        .to_string();
    assert!(e.contains("busy.stub: the header slack"), "{e}");

    let e = assemble(&pe32, &[(".linux", b"x")], "old.stub")
        .unwrap_err()
        .to_string();
    assert!(e.contains("old.stub") && e.contains("not PE32+"), "{e}");

    let e = assemble(b"\x7fELF", &[], "elf").unwrap_err().to_string();
    assert!(e.contains("no MZ signature"), "{e}");

    let e = assemble(&stub(), &[(".data", b"x")], "s")
        .unwrap_err()
        .to_string();
    assert!(e.contains("already has a .data section"), "{e}");
}

#[test]
fn the_checksum_is_windows_algorithm() {
    // Two words 0xffff + 0x0002 fold to 0x0002, plus the length 4.
    assert_eq!(checksum(&[0xff, 0xff, 0x02, 0x00], 100), 2 + 4);
    // The checksum field itself is skipped.
    assert_eq!(checksum(&[1, 0, 9, 9, 9, 9], 2), 1 + 6);
}
