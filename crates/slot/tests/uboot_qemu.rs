//! The generated `boot.scr` run by real U-Boot (Debian's `qemu_arm` build under
//! `qemu-system-arm`, installed by scripts/setup): the console shows the chosen slot, the
//! state file is counted down into the other copy, exhausted tries fall back to the good
//! slot, a torn copy is ignored. The "kernels" are not bootable, so each run ends at the
//! script's `ballast: boot of slot X failed` line and QEMU is stopped there.
//!
//! Needs `qemu-system-arm` and `/usr/lib/u-boot/qemu_arm/u-boot.bin`; skips with a note
//! when either is missing. `mkimage` (u-boot-tools) is only used to cross-check the
//! script image and is optional too.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ballast_slot::uboot::{self, BootDir, ScriptParams, State};
use ballast_slot::SlotId;
use common::{make_disk, read_from_disk, workdir};

const UBOOT: &str = "/usr/lib/u-boot/qemu_arm/u-boot.bin";

fn have_qemu() -> bool {
    common::have("qemu-system-arm", &[UBOOT])
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
        std::fs::write(
            dir.join(ballast_slot::boot_files::kernel(s)),
            b"not a zImage",
        )
        .unwrap();
        std::fs::write(
            dir.join(ballast_slot::boot_files::initrd(s)),
            b"not an initrd",
        )
        .unwrap();
        bd.write_boot_env(s, "console=ttyAMA0", &format!("1.0.{}", s as u8))
            .unwrap();
    }
    bd
}

/// Boot U-Boot on `disk` until the script gives up on the fake kernel; the console.
fn run_uboot(disk: &Path) -> String {
    run_uboot_with(disk, "")
}

fn run_uboot_with(disk: &Path, drive_opts: &str) -> String {
    let mut cmd = Command::new("qemu-system-arm");
    cmd.args([
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
    .arg(format!(
        "if=none,file={},format=raw,id=d0{drive_opts}",
        disk.display()
    ))
    .args(["-device", "virtio-blk-device,drive=d0"]);
    common::run_qemu(cmd, "ballast: boot of slot", Duration::from_secs(60))
}

/// Run `f` on the disk's boot partition as the system would (the state copies
/// as U-Boot left them), then write the partition back.
fn on_disk(staging: &Path, disk: &Path, f: impl FnOnce(&BootDir)) {
    for rel in ballast_slot::boot_files::STATE_COPIES {
        if let Some(text) = read_from_disk(disk, rel) {
            std::fs::write(staging.join(rel), text.trim_end_matches('\0')).unwrap();
        }
    }
    f(&BootDir::new(staging));
    make_disk(staging, disk, 0x0c);
}

fn state_on_disk(disk: &Path, copy: usize) -> Option<State> {
    read_from_disk(disk, ballast_slot::boot_files::STATE_COPIES[copy])
        .and_then(|t| uboot::parse(&t).ok())
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
    make_disk(&staging, &disk, 0x0c);

    // Boot 1: b, one try consumed, written to copy 0 (copy 1 was read): seq 1
    // kept, the script's first write since (it does no arithmetic: the tries and
    // seq_boot step through its tables).
    let c = run_uboot(&disk);
    assert!(c.contains("ballast: booting slot b (tries left 1)"), "{c}");
    assert!(
        c.contains("ballast: starting version 1.0.1 from slot b"),
        "{c}"
    );
    let s0 = state_on_disk(&disk, 0).expect("copy 0 valid after the script wrote it");
    assert_eq!(
        (s0.seq, s0.seq_boot, s0.default, s0.b.tries, s0.b.good),
        (1, 1, SlotId::B, 1, false)
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
        (s1.seq, s1.seq_boot, s1.b.tries),
        (1, 0, 2),
        "the copy that was read is untouched"
    );

    // Boot 2: last try, into copy 1, the script's second write.
    let c = run_uboot(&disk);
    assert!(c.contains("ballast: booting slot b (tries left 0)"), "{c}");
    let s1 = state_on_disk(&disk, 1).unwrap();
    assert_eq!((s1.seq, s1.seq_boot, s1.b.tries), (1, 2, 0));

    // Boot 3: b never marked good: a boots, nothing is written.
    let c = run_uboot(&disk);
    assert!(c.contains("ballast: slot b is bad (no tries left)"), "{c}");
    assert!(c.contains("ballast: booting slot a\n"), "{c}");
    assert!(
        c.contains("ballast.slot=a") || c.contains("from slot a"),
        "{c}"
    );
    assert_eq!(state_on_disk(&disk, 0).unwrap().seq_boot, 1);
    assert_eq!(state_on_disk(&disk, 1).unwrap().seq_boot, 2);

    // The system writes next (a marks itself good): seq 2, into copy 0,
    // newer than both of the script's writes.
    on_disk(&staging, &disk, |bd| bd.mark_good(SlotId::A).unwrap());
    let s0 = state_on_disk(&disk, 0).unwrap();
    assert_eq!((s0.seq, s0.seq_boot, s0.default), (2, 0, SlotId::B));
    let c = run_uboot(&disk);
    assert!(c.contains("ballast: booting slot a\n"), "{c}");
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
    // Copy 0 as an older Ballast wrote it, before ballast_seq_boot: read as 0.
    let old = uboot::render(&st).replace("ballast_seq_boot=0\n", "");
    std::fs::write(staging.join("ballast/state.0.env"), old).unwrap();
    // Copy 1 claims a newer seq and slot a, but its write never finished.
    let mut newer = st;
    newer.seq = 6;
    newer.set_default(SlotId::A);
    let full = uboot::render(&newer);
    let torn = full.trim_end_matches('\n').trim_end_matches("end=ballast");
    std::fs::write(staging.join("ballast/state.1.env"), torn).unwrap();
    make_disk(&staging, &disk, 0x0c);

    let c = run_uboot(&disk);
    assert!(c.contains("ballast/state.1.env is incomplete"), "{c}");
    assert!(c.contains("ballast: booting slot b (tries left 2)"), "{c}");
    // The torn copy is the one overwritten, now complete and newer.
    let s1 = state_on_disk(&disk, 1).expect("copy 1 rewritten complete");
    assert_eq!(
        (s1.seq, s1.seq_boot, s1.default, s1.b.tries),
        (5, 1, SlotId::B, 2)
    );
    assert_eq!(
        state_on_disk(&disk, 0).unwrap(),
        st,
        "the copy read is untouched"
    );
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

#[test]
fn uboot_does_not_take_an_uncountable_try() {
    if !have_qemu() {
        return;
    }
    let (_t, staging, disk) = workdir();
    let bd = stage(&staging);
    bd.initialize(&State::new(SlotId::A)).unwrap();
    bd.install(SlotId::B, 3).unwrap();
    make_disk(&staging, &disk, 0x0c);
    // A write-protected boot medium: the try on b cannot be recorded, so a boots.
    let c = run_uboot_with(&disk, ",readonly=on");
    assert!(
        c.contains("ballast: could not write ballast/state.0.env"),
        "{c}"
    );
    assert!(
        c.contains("ballast: cannot count tries; booting good slot a instead"),
        "{c}"
    );
    assert!(c.contains("from slot a"), "{c}");
}
