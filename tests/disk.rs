//! Story: a user builds the disk image for a board, checks it with standard
//! tools, flashes it (here: QEMU boots it through the board's real firmware),
//! and boots it twice. Slot A's root is verified and read-only, the state
//! partition keeps what the first boot wrote, and the bootloader's try
//! counter moves on each boot (the slot is never marked good yet: that is the
//! health check's job, which comes with sysd). The disk's layout is the
//! subject here, not the engine: the stories build the minimal image.

mod common;

use ballast_disk::{read_table, Table};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::vm::{free_port, Machine, Ssh};

/// A flashed card: the story's own copy of a build's disk image, booted as
/// it is (`ballast run --no-overlay`), so the image can be read back after.
struct Built {
    work: common::WorkDir,
    out: PathBuf,
    disk: PathBuf,
    /// The SSH key baked in: a user powers the machine off over SSH
    /// (`None` for a build that powers itself off: `ballast.debug=poweroff`).
    key: Option<PathBuf>,
}

/// The minimal 0.1.0 build of `board` that the update and system stories
/// boot too (made once per test run), and a fresh copy of its disk in the
/// story's work directory.
fn build(board: &str, name: &str, extra: &[&str]) -> Built {
    let work = common::workdir(name);
    let shared = minimal(board, extra);
    assert!(shared.disk().is_file(), "{}", shared.disk().display());
    let disk = shared.disk_copy(&work.join("disk.img"));
    Built {
        work,
        key: Some(shared.ssh_key()),
        out: shared.out,
        disk,
    }
}

fn minimal(board: &str, extra: &[&str]) -> common::Built {
    common::Build::new(board)
        .image("minimal")
        .version("0.1.0")
        .ssh_key()
        .args(extra)
        .shared()
}

/// `ballast run` arguments that boot the card itself.
fn card_args(built: &Built) -> [&str; 2] {
    [built.disk.to_str().expect("utf-8 path"), "--no-overlay"]
}

fn table(disk: &Path) -> Table {
    let mut f = fs::File::open(disk).unwrap();
    read_table(&mut f, 512).unwrap()
}

/// The boot partition's files: name -> content.
fn boot_files(disk: &Path, scratch: &Path) -> Vec<(String, Vec<u8>)> {
    let img = common::extract_partition(disk, 1, &scratch.join("boot-part.img"));
    let fs = fatfs::FileSystem::new(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap(),
        fatfs::FsOptions::new(),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), fs.root_dir())];
    while let Some((prefix, dir)) = stack.pop() {
        for entry in dir.iter() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let path = format!("{prefix}{name}");
            if entry.is_dir() {
                stack.push((format!("{path}/"), entry.to_dir()));
            } else {
                let mut data = Vec::new();
                entry.to_file().read_to_end(&mut data).unwrap();
                out.push((path, data));
            }
        }
    }
    out.sort();
    out
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The kernel command line of slot A, from its boot entry (UEFI) or its
/// U-Boot environment file.
fn slot_a_cmdline(files: &[(String, Vec<u8>)]) -> String {
    for (name, data) in files {
        let text = String::from_utf8_lossy(data);
        if name.starts_with("loader/entries/ballast-a") {
            let line = text
                .lines()
                .find(|l| l.starts_with("options"))
                .expect("options line");
            return line["options".len()..].trim().to_owned();
        }
        if name == "ballast/a/boot.env" {
            let line = text
                .lines()
                .find(|l| l.starts_with("ballast_args="))
                .expect("ballast_args");
            return line["ballast_args=".len()..].to_owned();
        }
    }
    panic!("no slot A entry among {:?}", names(files));
}

fn names(files: &[(String, Vec<u8>)]) -> Vec<&str> {
    files.iter().map(|(n, _)| n.as_str()).collect()
}

fn external_tools_agree(built: &Built, arch: &str) {
    let sgdisk = run_ok(Command::new("sgdisk").arg("-v").arg(&built.disk));
    assert!(sgdisk.contains("No problems found"), "{sgdisk}");

    let t = table(&built.disk);
    let labels: Vec<&str> = t.partitions.iter().map(|p| p.label.as_str()).collect();
    // x86_64 disks also boot on legacy BIOS: GRUB's core.img is in a BIOS boot
    // partition, entry 5, placed before entry 1 so that 1-4 keep their numbers.
    if arch == "x86_64" {
        assert_eq!(labels, ["boot", "root-a", "root-b", "state", "bios-boot"]);
    } else {
        assert_eq!(labels, ["boot", "root-a", "root-b", "state"]);
    }
    assert_eq!(
        t.partitions[1].type_guid,
        ballast_disk::types::root(arch).unwrap(),
        "root A carries the DPS root type for {arch}"
    );

    let boot = common::extract_partition(&built.disk, 1, &built.work.join("boot.img"));
    run_ok(Command::new("fsck.fat").arg("-n").arg(&boot));

    let files = boot_files(&built.disk, &built.work);
    let cmdline = slot_a_cmdline(&files);
    let verity_word = cmdline
        .split_whitespace()
        .find(|w| w.starts_with("ballast.verity="))
        .unwrap_or_else(|| panic!("no ballast.verity= in {cmdline}"));
    let verity = ballast_verity::Verity::from_cmdline(verity_word).unwrap();
    let root = common::extract_partition(&built.disk, 2, &built.work.join("root-a.img"));
    run_ok(
        Command::new("veritysetup")
            .arg("verify")
            .arg(&root)
            .arg(&root)
            .arg(verity.root_hash_hex())
            .arg(format!("--hash-offset={}", verity.hash_offset)),
    );
    let squash = run_ok(Command::new("unsquashfs").arg("-s").arg(&root));
    assert!(squash.contains("zstd"), "{squash}");
}

/// Boot the card to `ballast-ready`, then power it off over SSH as a user
/// would, and read what the console said.
fn boot(board: &str, built: &Built, n: u32) -> common::Boot {
    let port = free_port();
    let mut vm = Machine::start_with(
        board,
        &built.out,
        port,
        built.work.join(format!("console-{n}.log")),
        false,
        &[built.disk.as_os_str(), "--no-overlay".as_ref()],
    );
    vm.wait_for("ballast-ready", Duration::from_secs(300));
    let ssh = Ssh {
        key: built
            .key
            .clone()
            .expect("a card booted to ready has an SSH key"),
        port,
    };
    let _ = ssh.run("osctl poweroff");
    let status = vm.wait_exit(Duration::from_secs(120));
    let boot = common::Boot {
        status: Some(status),
        lines: vm.console.clone(),
        elapsed: vm.since_start(),
    };
    let console = boot.text();
    boot.assert_has("ballast-init version=");
    boot.assert_has("stage 2 on slot a");
    boot.assert_has(&format!("boot {n} on this state partition"));
    boot.assert_has("reboot: Power down");
    assert!(!console.contains("Kernel panic"), "{console}");
    boot
}

/// Tries left for slot A, as the boot partition records it now; `None` once
/// the slot is marked good (sysd does that after `ballast-ready`).
fn tries_left(built: &Built) -> Option<u32> {
    let files = boot_files(&built.disk, &built.work);
    for (name, _) in &files {
        if let Some(rest) = name.strip_prefix("loader/entries/") {
            if let Some((slot, counter)) = ballast_slot::bls::parse_file_name(rest) {
                if slot == ballast_slot::SlotId::A {
                    return counter.map(|(left, _done)| left);
                }
            }
        }
    }
    let scratch = built.work.join("state-read");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(scratch.join("ballast")).unwrap();
    let mut any = false;
    for (name, data) in &files {
        if name.starts_with("ballast/state.") {
            fs::write(scratch.join(name), data).unwrap();
            any = true;
        }
    }
    assert!(
        any,
        "no BLS counter and no U-Boot state among {:?}",
        names(&files)
    );
    let state = ballast_slot::uboot::BootDir::new(&scratch)
        .read_state()
        .unwrap();
    if state.a.good {
        None
    } else {
        Some(state.a.tries)
    }
}

/// "grown from X MiB to Y MiB" on the console -> Y.
fn state_grown_to(boot: &common::Boot) -> u64 {
    let line = boot
        .lines
        .iter()
        .find(|l| l.contains("state: ext4 on") && l.contains("grown from"))
        .unwrap_or_else(|| panic!("no state grow line; console:\n{}", boot.text()));
    let to = line.rsplit(" to ").next().unwrap_or_default();
    to.trim_end_matches(" MiB")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("cannot read the size in {line:?}"))
}

fn story(board: &str, arch: &str, extra: &[&str]) {
    let built = build(board, &format!("disk-{board}"), extra);
    external_tools_agree(&built, arch);
    assert_eq!(tries_left(&built), Some(3), "a fresh slot A gets 3 tries");
    // Flashed onto a bigger card: the state partition fills it on first boot.
    let disk = fs::OpenOptions::new()
        .write(true)
        .open(&built.disk)
        .unwrap();
    let len = disk.metadata().unwrap().len();
    disk.set_len(len + 256 * 1024 * 1024).unwrap();
    drop(disk);
    let first = boot(board, &built, 1);
    assert!(
        state_grown_to(&first) >= 300,
        "state did not fill the disk; console:\n{}",
        first.text()
    );
    first.assert_has("ballast-ready version=");
    assert_eq!(
        tries_left(&built),
        None,
        "the slot that reached ballast-ready is marked good"
    );
    let second = boot(board, &built, 2);
    second.assert_has("ballast-ready version=");
    assert_eq!(tries_left(&built), None, "a good slot stays good");
    let sgdisk = run_ok(Command::new("sgdisk").arg("-v").arg(&built.disk));
    assert!(
        sgdisk.contains("No problems found"),
        "after growing: {sgdisk}"
    );
}

#[test]
fn qemu_x86_64_disk_boots_through_ovmf_and_counts_tries() {
    let _story = common::story();
    story("qemu-x86_64", "x86_64", &[]);
}

#[test]
fn qemu_arm64_disk_boots_through_aavmf_and_counts_tries() {
    let _story = common::story();
    story("qemu-arm64", "arm64", &[]);
}

#[test]
fn qemu_armv7_disk_boots_through_u_boot_and_counts_tries() {
    let _story = common::story();
    // See tests/boot.rs for why armhf leaves out bookworm-security here.
    story(
        "qemu-armv7",
        "armv7",
        &["--suite", "bookworm", "--suite", "bookworm-updates"],
    );
}

#[test]
fn two_builds_of_the_same_inputs_are_identical() {
    let _story = common::story();
    // The first is this run's shared build; the second a build of its own.
    let shared = minimal("qemu-arm64", &[]);
    let one = shared.disk();
    let work = common::workdir("disk-repro");
    let image = common::root().join("images/minimal.toml");
    let key = shared.ssh_key().with_extension("pub");
    let two = common::build(
        "qemu-arm64",
        &work.join("out"),
        &[
            "--image",
            image.to_str().expect("utf-8"),
            "--version",
            "0.1.0",
            "--ssh-key",
            key.to_str().expect("utf-8"),
        ],
    );
    let two = PathBuf::from(two["artifacts"]["disk"].as_str().expect("disk artifact"));
    assert_ne!(one, two, "the second build must be a build of its own");
    assert_eq!(
        sha256_file(&one),
        sha256_file(&two),
        "two builds of the same inputs differ: {} vs {}",
        one.display(),
        two.display()
    );
}

fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let mut f = fs::File::open(path).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// A refused boot uses a try: the bootloader's counter is seen moving.
fn corrupted_root_story(board: &str, extra: &[&str]) {
    let built = build(board, &format!("disk-corrupt-{board}"), extra);
    let t = table(&built.disk);
    let root = &t.partitions[1];
    assert_eq!(tries_left(&built), Some(3));
    // Flip one byte of slot A's root in its first block (the squashfs
    // superblock): dm-verity refuses the block, so the root cannot mount.
    let at = root.start_lba * 512 + 64;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&built.disk)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x55;
    f.seek(SeekFrom::Start(at)).unwrap();
    std::io::Write::write_all(&mut f, &b).unwrap();
    drop(f);

    let boot = common::run(
        board,
        &built.out,
        &card_args(&built),
        Duration::from_secs(300),
        &built.work.join("console-corrupt.log"),
    );
    let console = boot.text();
    assert!(
        boot.status.is_some(),
        "QEMU did not end; console:\n{console}"
    );
    boot.assert_has("root slot a refused");
    assert!(
        !console.contains("stage 2 on slot a"),
        "a corrupted root must not be switched to; console:\n{console}"
    );
    assert!(console.contains("reboot: Restarting system"), "{console}");
    assert_eq!(tries_left(&built), Some(2), "the refused boot used a try");
}

#[test]
fn a_corrupted_root_is_refused_and_the_try_is_counted_by_systemd_boot() {
    let _story = common::story();
    corrupted_root_story("qemu-arm64", &[]);
}

#[test]
fn a_corrupted_root_is_refused_and_the_try_is_counted_by_u_boot() {
    let _story = common::story();
    corrupted_root_story(
        "qemu-armv7",
        &["--suite", "bookworm", "--suite", "bookworm-updates"],
    );
}

#[test]
fn an_mbr_board_gets_the_same_partitions_and_boots() {
    let _story = common::story();
    let work = common::workdir("disk-mbr");
    let board_file = work.join("qemu-armv7-mbr.toml");
    let text = fs::read_to_string(common::root().join("boards/qemu-armv7.toml")).unwrap();
    fs::write(
        &board_file,
        text.replace("partition_table = \"gpt\"", "partition_table = \"mbr\"")
            .replace("name = \"qemu-armv7\"", "name = \"qemu-armv7-mbr\""),
    )
    .unwrap();
    let out = work.join("out");
    let board = board_file.to_str().unwrap();
    let minimal = common::root().join("images/minimal.toml");
    let built = common::build(
        board,
        &out,
        &[
            "--image",
            minimal.to_str().unwrap(),
            "--kernel-arg",
            "ballast.debug=poweroff",
            "--suite",
            "bookworm",
            "--suite",
            "bookworm-updates",
        ],
    );
    let disk = PathBuf::from(built["artifacts"]["disk"].as_str().unwrap());
    let json = run_ok(Command::new("sfdisk").arg("--json").arg(&disk));
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pt = &parsed["partitiontable"];
    assert_eq!(pt["label"], "dos", "{json}");
    let parts = pt["partitions"].as_array().unwrap();
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["c", "83", "83", "83"], "{json}");
    assert_eq!(parts[0]["bootable"], true, "{json}");

    let built = Built {
        work,
        out,
        disk,
        key: None,
    };
    let boot = common::run(
        board,
        &built.out,
        &card_args(&built),
        Duration::from_secs(300),
        &built.work.join("console.log"),
    );
    boot.assert_has("stage 2 on slot a");
    boot.assert_has("boot 1 on this state partition");
    boot.assert_has("reboot: Power down");
    boot.assert_has("ballast-ready version=");
    assert_eq!(tries_left(&built), None, "marked good after ready");
}
