//! The writer against image files standing in for devices (the loop-device
//! and QEMU stories in `tests/` cover real block devices): a verified copy
//! with the config on the boot partition, and each failure leaving the
//! target without a partition table.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ballast_disk::{fat, types, Content, Disk, Guid, Partition, TableKind};
use ballast_install::chunks::{ChunkSum, Chunks};
use ballast_install::{install, BootConfig, Expected, Image, InstallError, HEAD};
use sha2::{Digest, Sha256};

/// A small GPT disk image: a 64 MiB FAT boot partition with a file, and a
/// data partition with a recognisable pattern.
fn disk_image(dir: &Path) -> PathBuf {
    let fat_img = dir.join("boot.fat");
    fat::build(
        &fat_img,
        64 << 20,
        "BOOT",
        0x1234,
        &[("hello.txt".into(), b"hi".to_vec())],
    )
    .unwrap();
    let data = dir.join("data.bin");
    let pattern: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&data, pattern).unwrap();
    let disk = Disk {
        kind: TableKind::Gpt,
        disk_guid: Guid::stable("test", "disk"),
        partitions: vec![
            Partition {
                label: "boot".into(),
                type_guid: types::ESP,
                uuid: Guid::stable("test", "boot"),
                mbr_type: 0x0c,
                bootable: false,
                size: 64 << 20,
                content: Content::File(fat_img),
            },
            Partition {
                label: "data".into(),
                type_guid: types::LINUX_DATA,
                uuid: Guid::stable("test", "data"),
                mbr_type: 0x83,
                bootable: false,
                size: 4 << 20,
                content: Content::File(data),
            },
        ],
    };
    let img = dir.join("disk.img");
    ballast_disk::write_image(&img, &disk).unwrap();
    img
}

fn target(dir: &Path, size: u64, fill: u8) -> (PathBuf, File) {
    let p = dir.join("target");
    std::fs::write(&p, vec![fill; size as usize]).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    (p, f)
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn read_fat_file(dev: &Path, name: &str) -> Vec<u8> {
    let mut f = File::open(dev).unwrap();
    let t = ballast_disk::read_table(&mut f, 512).unwrap();
    let boot = &t.partitions[0];
    let mut all = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut all).unwrap();
    let part = all[(boot.start_lba * 512) as usize..((boot.end_lba + 1) * 512) as usize].to_vec();
    let fs = fatfs::FileSystem::new(std::io::Cursor::new(part), fatfs::FsOptions::new()).unwrap();
    let mut out = Vec::new();
    fs.root_dir()
        .open_file(name)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn a_zstd_image_is_written_verified_and_gets_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let img = disk_image(dir.path());
    let raw = std::fs::read(&img).unwrap();
    let zst = dir.path().join("install.img.zst");
    std::fs::write(&zst, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    let (tp, t) = target(dir.path(), raw.len() as u64 + (8 << 20), 0xaa);
    let mut image = Image::open(&zst, Some(raw.len() as u64)).unwrap();
    assert!(image.compressed);
    let config = BootConfig {
        user_data: Some(b"#cloud-config\nhostname: installed\n".to_vec()),
        meta_data: Some(b"instance-id: i-1\n".to_vec()),
        network_config: None,
    };
    let mut phases = Vec::new();
    let report = install(
        &mut image,
        &t,
        &tp,
        &Expected::Whole(sha(&raw)),
        &config,
        &mut |p, _, _| {
            if phases.last() != Some(&p) {
                phases.push(p);
            }
        },
    )
    .unwrap();
    assert_eq!(report.sha256, hex::encode(sha(&raw)));
    assert_eq!(report.config_files, vec!["user-data", "meta-data"]);
    use ballast_install::Phase::*;
    assert_eq!(phases, vec![Clear, Write, Verify, Config, Table]);
    let written = std::fs::read(&tp).unwrap();
    // Everything outside the boot partition is the image's; the old bytes past it stay.
    let boot_end = (1 + 64) << 20;
    assert_eq!(written[..HEAD as usize], raw[..HEAD as usize]);
    assert_eq!(written[boot_end..raw.len()], raw[boot_end..]);
    assert_eq!(read_fat_file(&tp, "user-data"), config.user_data.unwrap());
    assert_eq!(read_fat_file(&tp, "meta-data"), config.meta_data.unwrap());
    assert_eq!(read_fat_file(&tp, "hello.txt"), b"hi");
}

fn assert_no_table(tp: &Path) {
    let head = &std::fs::read(tp).unwrap()[..HEAD as usize];
    assert!(
        head.iter().all(|&b| b == 0),
        "the first MiB must be cleared"
    );
}

#[test]
fn a_truncated_image_leaves_the_target_without_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let raw = std::fs::read(disk_image(dir.path())).unwrap();
    let (tp, t) = target(dir.path(), raw.len() as u64, 0xaa);
    let cut = raw[..raw.len() - 4096].to_vec();
    let mut image = Image::from_reader(
        "cut.img",
        Box::new(std::io::Cursor::new(cut)),
        None,
        Some(raw.len() as u64),
    )
    .unwrap();
    let e = install(
        &mut image,
        &t,
        &tp,
        &Expected::Unsigned,
        &BootConfig::default(),
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    assert_no_table(&tp);
}

#[test]
fn an_image_that_does_not_match_its_manifest_leaves_the_target_without_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let raw = std::fs::read(disk_image(dir.path())).unwrap();
    let (tp, t) = target(dir.path(), raw.len() as u64, 0xaa);
    let mut image = Image::open(&dir.path().join("disk.img"), None).unwrap();
    let e = install(
        &mut image,
        &t,
        &tp,
        &Expected::Whole([7; 32]),
        &BootConfig::default(),
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(matches!(e, InstallError::Verify { .. }), "{e}");
    assert!(e.to_string().contains("signed manifest"), "{e}");
    assert_no_table(&tp);
}

#[test]
fn a_file_that_is_not_a_disk_image_is_refused_before_any_write() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("root.squashfs");
    std::fs::write(&junk, vec![0x5a; 4 << 20]).unwrap();
    let (tp, t) = target(dir.path(), 8 << 20, 0xaa);
    let mut image = Image::open(&junk, None).unwrap();
    let e = install(
        &mut image,
        &t,
        &tp,
        &Expected::Unsigned,
        &BootConfig::default(),
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a disk image"), "{e}");
    assert!(
        std::fs::read(&tp).unwrap().iter().all(|&b| b == 0xaa),
        "nothing written"
    );
}

/// The signed sums of `raw` in chunks of `size`, as `ballast build` lists them.
fn chunks_of(raw: &[u8], size: usize) -> Chunks {
    Chunks {
        size: size as u64,
        sums: raw.chunks(size).map(|c| ChunkSum::of(&[c])).collect(),
    }
}

#[test]
fn signed_chunk_sums_check_every_chunk_and_a_wrong_one_stops_before_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let img = disk_image(dir.path());
    let raw = std::fs::read(&img).unwrap();
    let chunks = chunks_of(&raw, 1 << 20);
    assert!(
        chunks.sums.contains(&ChunkSum::Zero),
        "the image has zero chunks"
    );
    let expected = Expected::Chunks {
        sha256: sha(&raw),
        chunks: chunks.clone(),
    };
    let (tp, t) = target(dir.path(), raw.len() as u64, 0xaa);
    let mut image = Image::open(&img, None).unwrap();
    let report = install(
        &mut image,
        &t,
        &tp,
        &expected,
        &BootConfig::default(),
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(report.sha256, hex::encode(sha(&raw)));
    assert!(
        std::fs::read(&tp).unwrap() == raw,
        "the image, byte for byte"
    );

    // One byte changed in the data partition (its last MiB): refused at that
    // chunk, nothing after it written, no table.
    let mut bad = raw.clone();
    let at = raw.len() - (1 << 20) + 100;
    bad[at] ^= 1;
    // Larger than the image, so the cleared backup GPT is past it.
    let (tp, t) = target(dir.path(), raw.len() as u64 + (2 << 20), 0xaa);
    let mut image = Image::from_reader(
        "bad.img",
        Box::new(std::io::Cursor::new(bad)),
        None,
        Some(raw.len() as u64),
    )
    .unwrap();
    let e = install(
        &mut image,
        &t,
        &tp,
        &expected,
        &BootConfig::default(),
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(matches!(e, InstallError::Verify { .. }), "{e}");
    let last = chunks.sums.len() - 1;
    assert!(e.to_string().contains(&format!("chunk {last} ")), "{e}");
    assert_no_table(&tp);
    let left = std::fs::read(&tp).unwrap();
    assert!(
        left[raw.len() - (1 << 20)..raw.len()]
            .iter()
            .all(|&b| b == 0xaa),
        "the bad chunk was not written"
    );
}

#[test]
fn flash_options_read_back_from_the_device_and_skip_the_whole_sha256() {
    // `ballast flash`'s options: an unsigned raw image, no whole-image
    // SHA-256, the read-back with O_DIRECT where the file system takes it.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("raw.img");
    std::fs::copy(disk_image(dir.path()), &img).unwrap();
    let raw = std::fs::read(&img).unwrap();
    let (tp, t) = target(dir.path(), raw.len() as u64 + (8 << 20), 0xaa);
    let mut image = Image::open(&img, None).unwrap();
    let options = ballast_install::Options {
        direct_read_back: true,
        skip_whole_sha256: true,
    };
    let report = ballast_install::install_with(
        &mut image,
        &t,
        &tp,
        &Expected::Unsigned,
        &BootConfig::default(),
        &options,
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(report.sha256, "", "no whole-image SHA-256 was taken");
    let direct_works = ballast_install::direct::open(&tp, HEAD).is_some();
    assert_eq!(report.read_back_direct, direct_works);
    let written = std::fs::read(&tp).unwrap();
    assert_eq!(written[..raw.len()], raw[..], "byte for byte");
    // The default options still name the image's SHA-256.
    let mut image = Image::open(&img, None).unwrap();
    let report = install(
        &mut image,
        &t,
        &tp,
        &Expected::Unsigned,
        &BootConfig::default(),
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(report.sha256, hex::encode(sha(&raw)));
    assert!(!report.read_back_direct);
}
