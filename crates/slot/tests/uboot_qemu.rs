//! The generated `boot.scr` run by real U-Boot (Debian's `qemu_arm` build under
//! `qemu-system-arm`, installed by scripts/setup): the console shows the chosen slot, the
//! state file is counted down into the other copy, exhausted tries fall back to the good
//! slot, a torn copy is ignored. The "kernels" are not bootable, so each run ends at the
//! script's `ballast: boot of slot X failed` line and QEMU is stopped there.
//!
//! Needs `qemu-system-arm` and `/usr/lib/u-boot/qemu_arm/u-boot.bin`; skips with a note
//! when either is missing. `mkimage` (u-boot-tools) is only used to cross-check the
//! script image and is optional too.

use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ballast_slot::uboot::{self, BootDir, ScriptParams, State};
use ballast_slot::SlotId;

const UBOOT: &str = "/usr/lib/u-boot/qemu_arm/u-boot.bin";
const PART_START: u64 = 1 << 20;
const PART_SIZE: u64 = 16 << 20;

fn have_qemu() -> bool {
    let q = Command::new("qemu-system-arm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !q || !Path::new(UBOOT).exists() {
        eprintln!("SKIPPED: needs qemu-system-arm and {UBOOT} (scripts/setup installs both)");
        return false;
    }
    true
}

/// A disk with an MBR and one FAT partition (type 0x0c, bootable) at 1 MiB holding
/// the files of `staging`.
fn make_disk(staging: &Path, disk: &Path) {
    let mut part = Cursor::new(vec![0u8; PART_SIZE as usize]);
    fatfs::format_volume(
        &mut part,
        fatfs::FormatVolumeOptions::new().volume_label(*b"BALLASTBOOT"),
    )
    .unwrap();
    {
        let fs = fatfs::FileSystem::new(&mut part, fatfs::FsOptions::new()).unwrap();
        copy_into(&fs.root_dir(), staging);
    }
    let mut mbr = [0u8; 512];
    let e = &mut mbr[446..462];
    e[0] = 0x80;
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[4] = 0x0c;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&((PART_START / 512) as u32).to_le_bytes());
    e[12..16].copy_from_slice(&((PART_SIZE / 512) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let mut f = std::fs::File::create(disk).unwrap();
    f.write_all(&mbr).unwrap();
    f.seek(SeekFrom::Start(PART_START)).unwrap();
    f.write_all(part.get_ref()).unwrap();
}

fn copy_into<T: fatfs::ReadWriteSeek>(dir: &fatfs::Dir<T>, src: &Path) {
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            let sub = dir.create_dir(&name).unwrap();
            copy_into(&sub, &e.path());
        } else {
            let mut f = dir.create_file(&name).unwrap();
            f.truncate().unwrap();
            f.write_all(&std::fs::read(e.path()).unwrap()).unwrap();
        }
    }
}

/// Read a file of the disk's FAT partition (None when absent).
fn read_from_disk(disk: &Path, path: &str) -> Option<String> {
    let mut f = std::fs::File::open(disk).unwrap();
    let mut part = vec![0u8; PART_SIZE as usize];
    f.seek(SeekFrom::Start(PART_START)).unwrap();
    f.read_exact(&mut part).unwrap();
    let mut cur = Cursor::new(part);
    let fs = fatfs::FileSystem::new(&mut cur, fatfs::FsOptions::new()).unwrap();
    let mut file = fs.root_dir().open_file(path).ok()?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).unwrap();
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Stage a boot partition: the script, fake kernels, boot.env per slot.
fn stage(dir: &Path) -> BootDir {
    let bd = BootDir::new(dir);
    let script = uboot::boot_script(&ScriptParams::qemu_arm());
    std::fs::write(
        dir.join("boot.scr"),
        uboot::mkimage_script(&script, "ballast boot"),
    )
    .unwrap();
    for s in SlotId::ALL {
        std::fs::create_dir_all(dir.join("ballast").join(s.as_str())).unwrap();
        std::fs::write(dir.join(ballast_slot::layout::kernel(s)), b"not a zImage").unwrap();
        std::fs::write(dir.join(ballast_slot::layout::initrd(s)), b"not an initrd").unwrap();
        bd.write_boot_env(s, "console=ttyAMA0", &format!("1.0.{}", s as u8))
            .unwrap();
    }
    bd
}

/// Boot U-Boot on `disk` until the script gives up on the fake kernel; the console.
fn run_uboot(disk: &Path) -> String {
    let start = Instant::now();
    let mut child = Command::new("qemu-system-arm")
        .args([
            "-machine",
            "virt,highmem=off",
            "-cpu",
            "cortex-a15",
            "-m",
            "512",
            "-nographic",
        ])
        .args(["-bios", UBOOT, "-no-reboot", "-nic", "none"])
        .arg("-drive")
        .arg(format!("if=none,file={},format=raw,id=d0", disk.display()))
        .args(["-device", "virtio-blk-device,drive=d0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start qemu-system-arm");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut console = String::new();
    let deadline = Duration::from_secs(60);
    let mut done = false;
    while start.elapsed() < deadline && !done {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                done = line.contains("ballast: boot of slot");
                console.push_str(&line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("U-Boot run took {:.1} s", start.elapsed().as_secs_f64());
    if std::env::var_os("BALLAST_SHOW_CONSOLE").is_some() {
        eprintln!("{console}");
    }
    assert!(
        done,
        "the boot script never reached its end within 60 s; console:\n{console}"
    );
    console
}

fn state_on_disk(disk: &Path, copy: usize) -> Option<State> {
    read_from_disk(disk, ballast_slot::layout::STATE_COPIES[copy])
        .and_then(|t| uboot::parse(&t).ok())
}

fn workdir() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let staging = t.path().join("boot");
    std::fs::create_dir_all(&staging).unwrap();
    let disk = t.path().join("disk.img");
    (t, staging, disk)
}

#[test]
fn uboot_counts_tries_down_then_falls_back_to_the_good_slot() {
    if !have_qemu() {
        return;
    }
    let (_t, staging, disk) = workdir();
    let bd = stage(&staging);
    bd.initialize(&State::new(SlotId::A)).unwrap(); // both copies seq 0: a good
    bd.install(SlotId::B, 2).unwrap(); // copy 1, seq 1: b default with 2 tries
    make_disk(&staging, &disk);

    // Boot 1: b, one try consumed, written to copy 0 (copy 1 was read) with seq 2.
    let c = run_uboot(&disk);
    assert!(c.contains("ballast: booting slot b (tries left 1)"), "{c}");
    assert!(
        c.contains("ballast: starting version 1.0.1 from slot b"),
        "{c}"
    );
    let s0 = state_on_disk(&disk, 0).expect("copy 0 valid after the script wrote it");
    assert_eq!(
        (s0.seq, s0.default, s0.b.tries, s0.b.good),
        (2, SlotId::B, 1, false)
    );
    assert!(s0.a.good);
    // The script's `env export` and this crate's render are the same bytes.
    let raw = read_from_disk(&disk, "ballast/state.0.env").unwrap();
    assert_eq!(
        raw.trim_end_matches('\0'),
        uboot::render(&s0),
        "script output differs from render()"
    );
    let s1 = state_on_disk(&disk, 1).unwrap();
    assert_eq!(
        (s1.seq, s1.b.tries),
        (1, 2),
        "the copy that was read is untouched"
    );

    // Boot 2: last try, into copy 1 with seq 3.
    let c = run_uboot(&disk);
    assert!(c.contains("ballast: booting slot b (tries left 0)"), "{c}");
    let s1 = state_on_disk(&disk, 1).unwrap();
    assert_eq!((s1.seq, s1.b.tries), (3, 0));

    // Boot 3: b never marked good: a boots, nothing is written.
    let c = run_uboot(&disk);
    assert!(c.contains("ballast: slot b is bad (no tries left)"), "{c}");
    assert!(c.contains("ballast: booting slot a\n"), "{c}");
    assert!(
        c.contains("ballast.slot=a") || c.contains("from slot a"),
        "{c}"
    );
    assert_eq!(state_on_disk(&disk, 0).unwrap().seq, 2);
    assert_eq!(state_on_disk(&disk, 1).unwrap().seq, 3);
}

#[test]
fn uboot_ignores_a_torn_state_copy() {
    if !have_qemu() {
        return;
    }
    let (_t, staging, disk) = workdir();
    let bd = stage(&staging);
    let mut st = State::new(SlotId::A);
    st.install(SlotId::B, 3);
    st.seq = 5;
    bd.initialize(&st).unwrap();
    // Copy 1 claims a newer seq and slot a, but its write never finished.
    let mut newer = st;
    newer.seq = 6;
    newer.set_default(SlotId::A);
    let full = uboot::render(&newer);
    let torn = full.trim_end_matches('\n').trim_end_matches("end=ballast");
    std::fs::write(staging.join("ballast/state.1.env"), torn).unwrap();
    make_disk(&staging, &disk);

    let c = run_uboot(&disk);
    assert!(c.contains("ballast/state.1.env is incomplete"), "{c}");
    assert!(c.contains("ballast: booting slot b (tries left 2)"), "{c}");
    // The torn copy is the one overwritten, now complete and newer.
    let s1 = state_on_disk(&disk, 1).expect("copy 1 rewritten complete");
    assert_eq!((s1.seq, s1.default, s1.b.tries), (6, SlotId::B, 2));
    assert_eq!(state_on_disk(&disk, 0).unwrap(), st);
}

#[test]
fn script_image_matches_mkimage() {
    let script = uboot::boot_script(&ScriptParams::qemu_arm());
    let ours = uboot::mkimage_script(&script, "ballast boot");
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("boot.cmd");
    let out = t.path().join("boot.scr");
    std::fs::write(&src, &script).unwrap();
    let status = Command::new("mkimage")
        .env("SOURCE_DATE_EPOCH", "0")
        .args([
            "-A",
            "arm",
            "-O",
            "linux",
            "-T",
            "script",
            "-C",
            "none",
            "-n",
            "ballast boot",
            "-d",
        ])
        .arg(&src)
        .arg(&out)
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {
            assert_eq!(
                std::fs::read(&out).unwrap(),
                ours,
                "differs from mkimage -T script"
            );
        }
        _ => eprintln!("SKIPPED comparison: mkimage (u-boot-tools) is not installed"),
    }
}
