//! The initramfs as the tools a user has see it: GNU cpio lists and extracts it with
//! the modes we set, and xz, zstd and gzip unpack each compressed form to the same
//! archive. Needs `cpio`, `xz`, `zstd`, `gzip` (installed by scripts/setup).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use ballast_kernel::initramfs::{Compression, Initramfs};

const MTIME: u64 = 1_700_000_000;

fn sample() -> Initramfs {
    let mut i = Initramfs::new();
    i.add_file("init", 0o755, b"#!/bin/sh\necho hi\n".to_vec());
    i.add_file(
        "/lib/modules/6.1.0-56-amd64/kernel/fs/fat/vfat.ko",
        0o644,
        vec![7u8; 4097],
    );
    i.add_dir("run", 0o700);
    i.add_dir("dev", 0o755);
    i.add_char_dev("dev/console", 0o600, 5, 1);
    i.add_symlink("sbin/init", "../init");
    i.add_file("etc/empty", 0o600, Vec::new());
    i
}

/// Run `cmd` with `input` on stdin, in `dir`; return stdout, failing on a non-zero exit.
fn run(cmd: &str, args: &[&str], input: &[u8], dir: &Path) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (scripts/setup installs it)"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn cpio_lists_entries_sorted_with_parents_first() {
    let raw = sample().to_cpio(MTIME).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let listing = String::from_utf8(run("cpio", &["-it", "--quiet"], &raw, tmp.path())).unwrap();
    let got: Vec<&str> = listing.lines().collect();
    assert_eq!(
        got,
        vec![
            "dev",
            "dev/console",
            "etc",
            "etc/empty",
            "init",
            "lib",
            "lib/modules",
            "lib/modules/6.1.0-56-amd64",
            "lib/modules/6.1.0-56-amd64/kernel",
            "lib/modules/6.1.0-56-amd64/kernel/fs",
            "lib/modules/6.1.0-56-amd64/kernel/fs/fat",
            "lib/modules/6.1.0-56-amd64/kernel/fs/fat/vfat.ko",
            "run",
            "sbin",
            "sbin/init",
        ]
    );
}

#[test]
fn cpio_extracts_contents_modes_links_and_devices() {
    let raw = sample().to_cpio(MTIME).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // As root, cpio creates the device node; --no-absolute-filenames guards the test dir.
    run(
        "cpio",
        &["-idm", "--quiet", "--no-absolute-filenames"],
        &raw,
        tmp.path(),
    );
    let root = tmp.path();
    let mode = |p: &str| {
        std::fs::symlink_metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        std::fs::read(root.join("init")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(mode("init"), 0o755);
    assert_eq!(mode("run"), 0o700);
    assert_eq!(mode("lib/modules"), 0o755);
    assert_eq!(mode("etc/empty"), 0o600);
    let ko = std::fs::read(root.join("lib/modules/6.1.0-56-amd64/kernel/fs/fat/vfat.ko")).unwrap();
    assert_eq!(ko, vec![7u8; 4097]);
    assert_eq!(
        std::fs::read_link(root.join("sbin/init")).unwrap(),
        Path::new("../init")
    );
    let init_meta = std::fs::metadata(root.join("init")).unwrap();
    assert_eq!(init_meta.mtime() as u64, MTIME);
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if is_root {
        let dev = std::fs::symlink_metadata(root.join("dev/console")).unwrap();
        assert_eq!(dev.rdev(), (5 << 8) | 1, "console is char 5:1");
    }
}

#[test]
fn compressed_forms_unpack_to_the_same_archive() {
    let i = sample();
    let raw = i.to_cpio(MTIME).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (compression, tool) in [
        (Compression::Gzip, "gzip"),
        (Compression::Xz, "xz"),
        (Compression::Zstd, "zstd"),
    ] {
        let best = i.write(compression, MTIME).unwrap();
        // A development build's quick level: another stream, the same archive.
        let quick = i.write_at(compression, 1, MTIME).unwrap();
        assert_ne!(quick, best, "{}", compression.name());
        for packed in [best, quick] {
            assert_ne!(packed, raw);
            let unpacked = run(tool, &["-d", "-c"], &packed, tmp.path());
            assert_eq!(unpacked, raw, "{}", compression.name());
        }
    }
    assert_eq!(i.write(Compression::None, MTIME).unwrap(), raw);
}

#[test]
fn xz_output_uses_crc32_check_for_the_kernel() {
    let packed = sample().write(Compression::Xz, MTIME).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("initrd.xz");
    std::fs::write(&path, &packed).unwrap();
    let out = Command::new("xz")
        .args(["--robot", "--list"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let file_line = text.lines().find(|l| l.starts_with("file\t")).unwrap();
    assert!(file_line.contains("\tCRC32\t"), "{text}");
}

#[test]
fn same_inputs_give_the_same_bytes_in_any_insertion_order() {
    let a = sample();
    let mut b = Initramfs::new();
    b.add_file("etc/empty", 0o600, Vec::new());
    b.add_symlink("sbin/init", "../init");
    b.add_dir("dev", 0o755);
    b.add_char_dev("dev/console", 0o600, 5, 1);
    b.add_dir("run", 0o700);
    b.add_file(
        "lib/modules/6.1.0-56-amd64/kernel/fs/fat/vfat.ko",
        0o644,
        vec![7u8; 4097],
    );
    b.add_file("init", 0o755, b"#!/bin/sh\necho hi\n".to_vec());
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Xz,
        Compression::Zstd,
    ] {
        assert_eq!(
            a.write(c, MTIME).unwrap(),
            b.write(c, MTIME).unwrap(),
            "{}",
            c.name()
        );
    }
    assert_ne!(a.to_cpio(MTIME).unwrap(), a.to_cpio(MTIME + 1).unwrap());
}
