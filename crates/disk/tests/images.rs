//! Disk images as a user checks them: with sgdisk, sfdisk and fsck.fat (all
//! installed by scripts/setup: gdisk, fdisk, dosfstools) and by reading the
//! bytes back.

use std::fs::{self, File, OpenOptions};
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use ballast_disk::{
    fat, grow_last, read_table, types, write_image, Content, Device, Disk, DiskError, Guid,
    Partition, Placed, TableKind,
};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

// The DPS's published type GUIDs, as text (not our constants).
const DPS_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const DPS_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
const DPS_ROOT_ARM64: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";
const DPS_ROOT_ARM: &str = "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3";
const LINUX_DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// Run a tool; a missing tool is a setup problem, said plainly.
fn run(tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}); install it with scripts/setup (gdisk, fdisk, dosfstools)")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Deterministic non-trivial bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha(path: &Path) -> Vec<u8> {
    Sha256::digest(fs::read(path).unwrap()).to_vec()
}

fn boot_files() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "loader/entries/ballast-a.conf".into(),
            b"title Ballast A\nlinux /a/vmlinuz\n".to_vec(),
        ),
        ("EFI/BOOT/BOOTX64.EFI".into(), noise(1, 300_000)),
        ("a/vmlinuz".into(), noise(2, 5 * MIB as usize + 17)),
        ("a/initrd.img".into(), noise(3, 2 * MIB as usize)),
        ("empty".into(), Vec::new()),
    ]
}

struct Fixture {
    dir: tempfile::TempDir,
    disk: Disk,
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The 4-partition Ballast disk: ESP (64 MiB FAT32), root A/B (16 MiB, with
/// content files), state (8 MiB, empty).
fn ballast_partitions(kind: TableKind, arch: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path().join("esp.img");
    fat::build(&esp, 64 * MIB, "BALLAST", 0x1234_abcd, &boot_files()).unwrap();
    let root_a = dir.path().join("root-a.img");
    // Content with a zero run in the middle (a hole in the image) and an odd length.
    let mut a = noise(4, 3 * MIB as usize);
    a.extend(vec![0u8; 2 * MIB as usize]);
    a.extend(noise(5, 1234));
    fs::write(&root_a, &a).unwrap();
    let root_b = dir.path().join("root-b.img");
    fs::write(&root_b, noise(6, 16 * MIB as usize)).unwrap();
    let id = "test-image-1";
    let part = |label: &str, type_guid, mbr_type, bootable, size, content| Partition {
        label: label.into(),
        type_guid,
        uuid: Guid::stable("ballast-test", &format!("{id}/{label}")),
        mbr_type,
        bootable,
        size,
        content,
    };
    let root = types::root(arch).unwrap();
    let disk = Disk {
        kind,
        disk_guid: Guid::stable("ballast-test", id),
        partitions: vec![
            part("esp", types::ESP, 0x0c, true, 64 * MIB, Content::File(esp)),
            part("root-a", root, 0x83, false, 16 * MIB, Content::File(root_a)),
            part(
                "root-b",
                root,
                0x83,
                false,
                16 * MIB - 1000,
                Content::File(root_b),
            ),
            part(
                "state",
                types::LINUX_DATA,
                0x83,
                false,
                8 * MIB,
                Content::Zero,
            ),
        ],
    };
    Fixture { dir, disk }
}

/// `sgdisk -i N` fields.
fn sgdisk_info(img: &Path, n: u32) -> String {
    let (ok, out) = run("sgdisk", &["-i", &n.to_string(), img.to_str().unwrap()]);
    assert!(ok, "{out}");
    out
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name:?} in:\n{text}"))
        .trim()
}

/// `sfdisk --json` partitions: (start, size, type, bootable).
fn sfdisk_parts(img: &Path) -> (serde_json::Value, Vec<(u64, u64, String, bool)>) {
    let (ok, out) = run("sfdisk", &["--json", img.to_str().unwrap()]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let parts = v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_string(),
                p["bootable"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    (v, parts)
}

fn sgdisk_verify_clean(img: &Path) {
    let (ok, out) = run("sgdisk", &["-v", img.to_str().unwrap()]);
    assert!(ok && out.contains("No problems found"), "sgdisk -v:\n{out}");
}

fn last_usable_by_sgdisk(img: &Path) -> u64 {
    let (ok, out) = run("sgdisk", &["-p", img.to_str().unwrap()]);
    assert!(ok, "{out}");
    let l = field(&out, "First usable sector is 34, last usable sector is ");
    l.parse().unwrap()
}

#[test]
fn gpt_image_is_what_sgdisk_expects() {
    for (arch, dps_root) in [
        ("x86_64", DPS_ROOT_X86_64),
        ("arm64", DPS_ROOT_ARM64),
        ("armv7", DPS_ROOT_ARM),
    ] {
        let fx = ballast_partitions(TableKind::Gpt, arch);
        let img = fx.path("disk.img");
        let placed = write_image(&img, &fx.disk).unwrap();
        assert!(!fx.path("disk.img.tmp").exists());
        sgdisk_verify_clean(&img);

        let expect_types = [DPS_ESP, dps_root, dps_root, LINUX_DATA];
        for (i, (p, pl)) in fx.disk.partitions.iter().zip(&placed).enumerate() {
            let info = sgdisk_info(&img, pl.index);
            assert!(
                field(&info, "Partition GUID code:").starts_with(expect_types[i]),
                "{arch} partition {}: {info}",
                pl.index
            );
            assert_eq!(
                field(&info, "Partition unique GUID:"),
                p.uuid.to_string().to_uppercase()
            );
            assert_eq!(field(&info, "Partition name:"), format!("'{}'", p.label));
            let first: u64 = field(&info, "First sector:")
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let last: u64 = field(&info, "Last sector:")
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!((first, last), (pl.start_lba, pl.end_lba));
            assert_eq!(first % 2048, 0, "1 MiB aligned");
            assert_eq!((last + 1) % 2048, 0, "whole MiB");
        }
        // Sizes rounded up to MiB, first at 1 MiB, disk = last end + 1 MiB.
        assert_eq!(placed[0].start_lba, 2048);
        assert_eq!(placed[2].bytes(), 16 * MIB);
        let disk_len = fs::metadata(&img).unwrap().len();
        assert_eq!(disk_len, (placed[3].end_lba + 1) * 512 + MIB);
        // Disk GUID.
        let (_, out) = run("sgdisk", &["-p", img.to_str().unwrap()]);
        assert!(
            out.contains(&fx.disk.disk_guid.to_string().to_uppercase()),
            "{out}"
        );
        // The ESP has the legacy-BIOS-bootable attribute (U-Boot's choice).
        let (_, attrs) = run("sgdisk", &["-A", "1:show", img.to_str().unwrap()]);
        assert!(attrs.contains("legacy BIOS bootable"), "{attrs}");
    }
}

#[test]
fn partition_contents_sit_at_their_offsets_and_zeros_are_holes() {
    let fx = ballast_partitions(TableKind::Gpt, "x86_64");
    let img = fx.path("disk.img");
    let placed = write_image(&img, &fx.disk).unwrap();
    let mut f = File::open(&img).unwrap();
    for (p, pl) in fx.disk.partitions.iter().zip(&placed) {
        let Content::File(src) = &p.content else {
            continue;
        };
        let want = fs::read(src).unwrap();
        let mut got = vec![0u8; want.len()];
        f.seek(SeekFrom::Start(pl.offset())).unwrap();
        f.read_exact(&mut got).unwrap();
        assert!(got == want, "content of {} differs", p.label);
        // The rest of the partition is zero.
        let mut tail = vec![1u8; (pl.bytes() - want.len() as u64).min(MIB) as usize];
        f.read_exact(&mut tail).unwrap();
        assert!(tail.iter().all(|&b| b == 0), "tail of {}", p.label);
    }
    // Sparse: the 8 MiB state partition, the zero run of root-a and the FAT's
    // unused area take no blocks.
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(&img).unwrap();
    let allocated = m.blocks() * 512;
    assert!(
        allocated < m.len() - 16 * MIB,
        "image is {} bytes, {} allocated",
        m.len(),
        allocated
    );
}

#[test]
fn read_table_round_trips_gpt_and_mbr() {
    for kind in [TableKind::Gpt, TableKind::Mbr] {
        let fx = ballast_partitions(kind, "arm64");
        let img = fx.path("disk.img");
        let placed = write_image(&img, &fx.disk).unwrap();
        let t = read_table(&mut File::open(&img).unwrap(), 512).unwrap();
        assert_eq!(t.kind, kind);
        assert_eq!(t.disk_sectors * 512, fs::metadata(&img).unwrap().len());
        assert_eq!(t.partitions.len(), 4);
        for ((e, p), pl) in t.partitions.iter().zip(&fx.disk.partitions).zip(&placed) {
            assert_eq!(
                (e.index, e.start_lba, e.end_lba),
                (pl.index, pl.start_lba, pl.end_lba)
            );
            assert_eq!(e.bootable, p.bootable);
            match kind {
                TableKind::Gpt => {
                    assert_eq!(
                        (&e.label, e.type_guid, e.uuid),
                        (&p.label, p.type_guid, p.uuid)
                    );
                }
                TableKind::Mbr => assert_eq!(e.mbr_type, p.mbr_type),
            }
        }
        match kind {
            TableKind::Gpt => assert_eq!(t.disk_guid, fx.disk.disk_guid),
            TableKind::Mbr => assert_eq!(t.disk_guid.0[..4], fx.disk.disk_guid.0[..4]),
        }
    }
}

#[test]
fn mbr_image_is_what_sfdisk_expects() {
    let fx = ballast_partitions(TableKind::Mbr, "armv7");
    let img = fx.path("disk.img");
    let placed = write_image(&img, &fx.disk).unwrap();
    let (v, parts) = sfdisk_parts(&img);
    assert_eq!(v["partitiontable"]["label"], "dos", "{v}");
    let g = fx.disk.disk_guid.0;
    let sig = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
    assert_eq!(
        v["partitiontable"]["id"],
        format!("0x{sig:08x}"),
        "disk signature"
    );
    let want: Vec<(u64, u64, String, bool)> = placed
        .iter()
        .zip(["c", "83", "83", "83"])
        .map(|(pl, t)| {
            (
                pl.start_lba,
                pl.end_lba + 1 - pl.start_lba,
                t.to_string(),
                pl.index == 1,
            )
        })
        .collect();
    assert_eq!(parts, want);
    // sfdisk's own consistency check.
    let (ok, out) = run("sfdisk", &["--verify", img.to_str().unwrap()]);
    assert!(
        ok && out.contains("No errors detected"),
        "sfdisk --verify:\n{out}"
    );
}

#[test]
fn fat_image_passes_fsck_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("esp.img");
    let files = boot_files();
    fat::build(&img, 64 * MIB, "ballast-esp", 0xdead_beef, &files).unwrap();
    assert!(!dir.path().join("esp.img.tmp").exists());
    let (ok, out) = run("fsck.fat", &["-n", "-v", img.to_str().unwrap()]);
    assert!(ok, "fsck.fat -n:\n{out}");
    assert!(out.contains("32 bit entries"), "FAT32: {out}");
    assert!(!out.contains("uninitialized"), "FSInfo: {out}");
    assert!(
        !out.to_lowercase().contains("label"),
        "label complaint or mismatch:\n{out}"
    );

    let f = File::open(&img).unwrap();
    let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new()).unwrap();
    assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
    assert_eq!(fs.volume_id(), 0xdead_beef);
    assert_eq!(fs.volume_label(), "BALLAST-ESP");
    assert_eq!(
        fs.read_volume_label_from_root_dir().unwrap().as_deref(),
        Some("BALLAST-ESP")
    );
    for (name, data) in &files {
        let mut got = Vec::new();
        fs.root_dir()
            .open_file(name)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert!(&got == data, "{name} differs");
    }
    // blkid sees what a mount by LABEL= would use.
    let (ok, out) = run("blkid", &["-p", "-o", "export", img.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("LABEL=BALLAST-ESP") && out.contains("UUID=DEAD-BEEF"),
        "{out}"
    );
}

#[test]
fn fat_rejects_bad_input_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("esp.img");
    let e = fat::build(&img, 16 * MIB, "X", 1, &[]).unwrap_err();
    assert!(
        matches!(e, DiskError::FatTooSmall { .. }) && e.to_string().contains("esp.img"),
        "{e}"
    );
    let e = fat::build(&img, 64 * MIB, "much too long label", 1, &[]).unwrap_err();
    assert!(e.to_string().contains("at most 11"), "{e}");
    let e = fat::build(&img, 64 * MIB, "L", 1, &[("../x".into(), vec![])]).unwrap_err();
    assert!(e.to_string().contains("\"../x\""), "{e}");
    // Files that do not fit: named, and no half image left behind.
    let e = fat::build(
        &img,
        64 * MIB,
        "L",
        1,
        &[("big".into(), vec![7u8; 70 * MIB as usize])],
    )
    .unwrap_err();
    assert!(e.to_string().contains("\"big\""), "{e}");
    assert!(!img.exists() && !dir.path().join("esp.img.tmp").exists());
}

#[test]
fn rebuilding_gives_identical_bytes() {
    let a = ballast_partitions(TableKind::Gpt, "x86_64");
    let b = ballast_partitions(TableKind::Gpt, "x86_64");
    // Same FAT inputs in a different order: same bytes.
    let mut rev = boot_files();
    rev.reverse();
    fat::build(&b.path("esp2.img"), 64 * MIB, "BALLAST", 0x1234_abcd, &rev).unwrap();
    assert_eq!(sha(&a.path("esp.img")), sha(&b.path("esp2.img")));
    write_image(&a.path("disk.img"), &a.disk).unwrap();
    write_image(&b.path("disk.img"), &b.disk).unwrap();
    assert_eq!(sha(&a.path("disk.img")), sha(&b.path("disk.img")));
    // And a different image identity changes the GUIDs, hence the bytes.
    let mut c = b.disk.clone();
    c.disk_guid = Guid::stable("ballast-test", "other-image");
    write_image(&b.path("disk2.img"), &c).unwrap();
    assert_ne!(sha(&a.path("disk.img")), sha(&b.path("disk2.img")));
}

fn extend(img: &Path, by: u64) -> u64 {
    let f = OpenOptions::new().write(true).open(img).unwrap();
    let len = f.metadata().unwrap().len() + by;
    f.set_len(len).unwrap();
    len
}

#[test]
fn grow_last_gpt_fills_the_disk_and_is_idempotent() {
    let fx = ballast_partitions(TableKind::Gpt, "x86_64");
    let img = fx.path("disk.img");
    let placed = write_image(&img, &fx.disk).unwrap();
    let before = read_table(&mut File::open(&img).unwrap(), 512).unwrap();

    // On the image as built the partition takes the slack before the
    // backup table (under 1 MiB); after that it is full size and nothing
    // is written.
    let len = fs::metadata(&img).unwrap().len();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let first = grow_last(&mut f, len, 4).unwrap().expect("takes the slack");
    assert_eq!(first.end_lba, len / 512 - 34);
    assert!(first.end_lba - placed[3].end_lba < 2048);
    let sum = sha(&img);
    assert_eq!(grow_last(&mut f, len, 4).unwrap(), None);
    assert_eq!(sha(&img), sum);

    let len = extend(&img, 64 * MIB);
    let grown = grow_last(&mut f, len, 4).unwrap().expect("grown");
    drop(f);
    sgdisk_verify_clean(&img);
    let last_usable = last_usable_by_sgdisk(&img);
    assert_eq!(last_usable, len / 512 - 34);
    assert_eq!(grown.start_lba, placed[3].start_lba);
    assert_eq!(grown.end_lba, last_usable);
    let info = sgdisk_info(&img, 4);
    assert!(
        field(&info, "Last sector:").starts_with(&last_usable.to_string()),
        "{info}"
    );
    assert_eq!(field(&info, "Partition name:"), "'state'");

    // Everything else unchanged.
    let after = read_table(&mut File::open(&img).unwrap(), 512).unwrap();
    assert_eq!(after.partitions[..3], before.partitions[..3]);
    assert_eq!(after.disk_guid, before.disk_guid);

    // Idempotent.
    let sum = sha(&img);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    assert_eq!(grow_last(&mut f, len, 4).unwrap(), None);
    assert_eq!(sha(&img), sum);

    // Only the last partition may grow; the device must hold the table.
    assert!(matches!(
        grow_last(&mut f, len, 2),
        Err(DiskError::NotLast { index: 2, last: 4 })
    ));
    assert!(matches!(
        grow_last(&mut f, len, 9),
        Err(DiskError::NoSuchPartition { index: 9, .. })
    ));
    assert!(matches!(
        grow_last(&mut f, len - 2 * MIB, 4),
        Err(DiskError::DeviceTooSmall { .. })
    ));
}

#[test]
fn grow_last_mbr_fills_the_disk() {
    let fx = ballast_partitions(TableKind::Mbr, "armv7");
    let img = fx.path("disk.img");
    let placed = write_image(&img, &fx.disk).unwrap();
    let len = extend(&img, 64 * MIB);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let grown = grow_last(&mut f, len, 4).unwrap().expect("grown");
    assert_eq!(grown.end_lba, len / 512 - 1);
    assert_eq!(grow_last(&mut f, len, 4).unwrap(), None);
    drop(f);
    let (_, parts) = sfdisk_parts(&img);
    assert_eq!(
        parts[3],
        (
            placed[3].start_lba,
            len / 512 - placed[3].start_lba,
            "83".into(),
            false
        )
    );
    let (ok, out) = run("sfdisk", &["--verify", img.to_str().unwrap()]);
    assert!(
        ok && out.contains("No errors detected"),
        "sfdisk --verify:\n{out}"
    );
}

/// A device whose power fails after `budget` sectors are written: writes up
/// to then land, later ones are lost.
struct PowerCut {
    inner: Cursor<Vec<u8>>,
    budget: usize,
}

impl Read for PowerCut {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(b)
    }
}
impl Seek for PowerCut {
    fn seek(&mut self, p: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(p)
    }
}
impl Write for PowerCut {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.budget == 0 {
            return Err(std::io::Error::other("power cut"));
        }
        // Sector-granular: at most one sector per call.
        let n = b.len().min(512);
        self.budget -= 1;
        self.inner.write(&b[..n])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl Device for PowerCut {
    fn barrier(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn grow_last_survives_a_power_cut_at_every_sector() {
    let fx = ballast_partitions(TableKind::Gpt, "x86_64");
    let img = fx.path("disk.img");
    let placed = write_image(&img, &fx.disk).unwrap();
    let mut bytes = fs::read(&img).unwrap();
    bytes.resize(bytes.len() + 4 * MIB as usize, 0);
    let len = bytes.len() as u64;
    let new_end = len / 512 - 34;
    let old_end = placed[3].end_lba;
    // 33 backup + 32 primary entries/header + 1 MBR + 1 old-backup clear.
    let mut seen_new = false;
    for budget in 0..80 {
        let mut dev = PowerCut {
            inner: Cursor::new(bytes.clone()),
            budget,
        };
        let finished = grow_last(&mut dev, len, 4).is_ok();
        let mut cut = dev.inner;
        // After the cut: some valid table, with the old or the new end.
        let t =
            read_table(&mut cut, 512).unwrap_or_else(|e| panic!("cut after {budget} sectors: {e}"));
        let end = t.partitions[3].end_lba;
        assert!(
            end == old_end || end == new_end,
            "cut after {budget}: end {end}"
        );
        seen_new |= end == new_end;
        // The next boot finishes the job.
        let r = grow_last(&mut cut, len, 4).unwrap();
        assert!(r.is_none() || !finished, "cut after {budget}: {r:?}");
        assert_eq!(
            read_table(&mut cut, 512).unwrap().partitions[3].end_lba,
            new_end
        );
        if budget % 16 == 0 {
            let p = fx.path("cut.img");
            fs::write(&p, cut.get_ref()).unwrap();
            sgdisk_verify_clean(&p);
        }
        if finished {
            assert!(seen_new);
            return;
        }
    }
    panic!("grow_last never finished within 80 sectors");
}

#[test]
fn disk_errors_name_the_image_partition_and_fix() {
    let fx = ballast_partitions(TableKind::Gpt, "x86_64");
    let img = fx.path("disk.img");

    let mut l = fx.disk.clone();
    l.partitions[1].size = MIB; // root-a content is > 5 MiB
    let e = write_image(&img, &l).unwrap_err().to_string();
    assert!(
        e.contains("disk.img") && e.contains("\"root-a\"") && e.contains("enlarge"),
        "{e}"
    );
    assert!(!img.exists() && !fx.path("disk.img.tmp").exists());

    let mut l = fx.disk.clone();
    l.partitions[0].label = "x".repeat(37);
    let e = write_image(&img, &l).unwrap_err().to_string();
    assert!(
        e.contains("37 UTF-16 units") && e.contains("shorten"),
        "{e}"
    );

    let mut l = fx.disk.clone();
    l.kind = TableKind::Mbr;
    l.partitions.push(l.partitions[3].clone());
    let e = write_image(&img, &l).unwrap_err().to_string();
    assert!(e.contains("at most 4") && e.contains("GPT"), "{e}");

    let mut l = fx.disk.clone();
    l.partitions[2].content = Content::File(fx.path("missing.img"));
    let e = write_image(&img, &l).unwrap_err().to_string();
    assert!(e.contains("missing.img") && e.contains("\"root-b\""), "{e}");

    assert!(types::root("mips")
        .unwrap_err()
        .to_string()
        .contains("x86_64, arm64 or armv7"));

    // A failed rebuild keeps the previous good image.
    write_image(&img, &fx.disk).unwrap();
    let sum = sha(&img);
    let mut l = fx.disk.clone();
    l.partitions[1].size = MIB;
    write_image(&img, &l).unwrap_err();
    assert_eq!(sha(&img), sum);
}

#[test]
fn read_table_reports_damage_and_uses_the_backup() {
    let fx = ballast_partitions(TableKind::Gpt, "x86_64");
    let img = fx.path("disk.img");
    write_image(&img, &fx.disk).unwrap();
    let good = read_table(&mut File::open(&img).unwrap(), 512).unwrap();
    let mut bytes = fs::read(&img).unwrap();
    bytes[512 + 48] ^= 0xff; // primary header last_usable_lba
    let t = read_table(&mut Cursor::new(bytes.clone()), 512).unwrap();
    assert_eq!(t.partitions, good.partitions, "read from the backup");
    let n = bytes.len();
    bytes[n - 512 + 48] ^= 0xff; // and the backup header
    let e = read_table(&mut Cursor::new(bytes), 512)
        .unwrap_err()
        .to_string();
    assert!(e.contains("CRC32") && e.contains("LBA 1"), "{e}");
    let e = read_table(&mut Cursor::new(vec![0u8; 4096]), 512).unwrap_err();
    assert!(matches!(e, DiskError::NoTable), "{e}");
}

#[allow(dead_code)]
fn _placed_is_public(p: &Placed) -> u64 {
    p.offset() + p.bytes()
}

/// `mcopy` a file out of a FAT image (mtools, as a user would).
fn mtools_read(img: &Path, name: &str) -> Vec<u8> {
    let out = Command::new("mtype")
        .arg("-i")
        .arg(img)
        .arg(format!("::{name}"))
        .output()
        .unwrap_or_else(|e| panic!("running mtype (scripts/setup installs mtools): {e}"));
    assert!(
        out.status.success(),
        "mtype {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn fitted_fat16_image_is_as_small_as_its_files_and_passes_fsck_and_mtools() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("efi.img");
    let files = boot_files();
    let content: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    let fitted = fat::build_fitted(&img, "BALLAST_EFI", 0xdead_beef, &files).unwrap();
    let size = fs::metadata(&img).unwrap().len();
    assert_eq!(size, fitted.size);
    assert_eq!(size % 2048, 0, "whole CD blocks");
    // As small as its content: the files, the FAT and root overhead, the slack.
    assert!(size > content, "{size} <= {content}");
    assert!(
        size < content + fat::FITTED_SLACK + 512 * 1024,
        "{size} bytes for {content} bytes of files"
    );

    let (ok, out) = run("fsck.fat", &["-n", "-v", img.to_str().unwrap()]);
    assert!(ok, "fsck.fat -n:\n{out}");
    assert!(out.contains("16 bit entries"), "FAT16: {out}");
    assert!(
        !out.to_lowercase().contains("label"),
        "label complaint or mismatch:\n{out}"
    );
    let (ok, out) = run("blkid", &["-p", "-o", "export", img.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("LABEL=BALLAST_EFI")
            && out.contains("TYPE=vfat")
            && out.contains("VERSION=FAT16"),
        "{out}"
    );
    // mtools reads every file back, byte for byte, and lists the tree.
    for (name, data) in &files {
        assert!(&mtools_read(&img, name) == data, "{name} differs (mtype)");
    }
    let (ok, out) = run("mdir", &["-i", img.to_str().unwrap(), "-/", "-b", "::"]);
    assert!(ok, "{out}");
    assert!(out.contains("::/loader/entries/ballast-a.conf"), "{out}");

    let f = File::open(&img).unwrap();
    let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new()).unwrap();
    assert_eq!(fs.fat_type(), fatfs::FatType::Fat16);
    assert_eq!(fs.volume_id(), 0xdead_beef);
    assert_eq!(
        fs.read_volume_label_from_root_dir().unwrap().as_deref(),
        Some("BALLAST_EFI")
    );
    // The same files in another order: the same bytes.
    let mut rev = files.clone();
    rev.reverse();
    let img2 = dir.path().join("efi2.img");
    fat::build_fitted(&img2, "BALLAST_EFI", 0xdead_beef, &rev).unwrap();
    assert_eq!(sha(&img), sha(&img2));
}

#[test]
fn fitted_fat16_grows_its_clusters_for_large_files_and_stays_fat16_when_tiny() {
    let dir = tempfile::tempdir().unwrap();
    // 40 MiB of files do not fit 65524 clusters of 512 bytes: larger clusters.
    let big = vec![
        ("ballast/vmlinuz".to_string(), noise(7, 33 * MIB as usize)),
        ("ballast/initrd.img".to_string(), noise(8, 7 * MIB as usize)),
    ];
    let img = dir.path().join("big.img");
    let fitted = fat::build_fitted(&img, "BIG", 1, &big).unwrap();
    assert!(fitted.cluster > 512, "{fitted:?}");
    assert!(fitted.size < 41 * MIB, "{fitted:?}");
    let (ok, out) = run("fsck.fat", &["-n", img.to_str().unwrap()]);
    assert!(ok, "fsck.fat -n:\n{out}");
    assert!(mtools_read(&img, "ballast/vmlinuz") == big[0].1);
    // One tiny file: padded up to FAT16's minimum cluster count, still FAT16.
    let tiny = dir.path().join("tiny.img");
    let fitted = fat::build_fitted(&tiny, "", 2, &[("a".into(), b"x".to_vec())]).unwrap();
    assert!(fitted.size < 3 * MIB, "{fitted:?}");
    let (ok, out) = run("fsck.fat", &["-n", "-v", tiny.to_str().unwrap()]);
    assert!(ok && out.contains("16 bit entries"), "fsck.fat -n:\n{out}");
    // Bad names are refused before anything is written.
    let e = fat::build_fitted(
        &dir.path().join("bad.img"),
        "L",
        1,
        &[("../x".into(), vec![])],
    )
    .unwrap_err();
    assert!(e.to_string().contains("\"../x\""), "{e}");
    assert!(!dir.path().join("bad.img").exists());
}
