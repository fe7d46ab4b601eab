//! The BLS entries and loader.conf written by `ballast_slot::bls` booted by real
//! systemd-boot v252 (Debian bookworm's `systemd-boot-efi`) under OVMF: systemd-boot
//! picks the slot [`Esp::default_slot`] predicts, renames the entry to count a try, and
//! falls back to the good slot once the new one has no tries left.
//!
//! The kernels are fake, so each boot ends with systemd-boot's "Error loading
//! \\ballast\\<slot>\\vmlinuz" error; the entry rename happens before that, which is what is checked.
//!
//! Needs `qemu-system-x86_64`, OVMF (`/usr/share/OVMF/OVMF_CODE_4M.fd`) and
//! systemd-boot's EFI binary: `$BALLAST_SYSTEMD_BOOT_EFI` or
//! `/usr/lib/systemd/boot/efi/systemd-bootx64.efi` (package `systemd-boot-efi`);
//! skips with a note otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ballast_slot::bls::{Entry, Esp};
use ballast_slot::{boot_files, Health, SlotId};
use common::{extract, make_disk, workdir};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

fn systemd_boot() -> Option<PathBuf> {
    let p = std::env::var_os("BALLAST_SYSTEMD_BOOT_EFI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"));
    if !p.exists() {
        eprintln!(
            "SKIPPED: systemd-boot not found at {} (install systemd-boot-efi or set BALLAST_SYSTEMD_BOOT_EFI)",
            p.display()
        );
        return None;
    }
    Some(p)
}

fn run_sdboot(disk: &Path, vars: &Path) -> String {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-machine",
        "q35",
        "-m",
        "256",
        "-nographic",
        "-nic",
        "none",
        "-no-reboot",
    ])
    .arg("-drive")
    .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
    .arg("-drive")
    .arg(format!("if=pflash,format=raw,file={}", vars.display()))
    .arg("-drive")
    .arg(format!("if=none,id=d0,format=raw,file={}", disk.display()))
    .args(["-device", "virtio-blk-pci,drive=d0"]);
    common::run_qemu(cmd, "Error loading", Duration::from_secs(60))
}

fn entry_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join(boot_files::ENTRIES_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn systemd_boot_counts_and_falls_back_as_predicted() {
    if !common::have("qemu-system-x86_64", &[OVMF_CODE, OVMF_VARS]) {
        return;
    }
    let Some(sdboot) = systemd_boot() else { return };
    let (t, staging, disk) = workdir();
    let vars = t.path().join("vars.fd");
    std::fs::copy(OVMF_VARS, &vars).unwrap();
    let efi = staging.join(boot_files::EFI_BOOT_X64);
    std::fs::create_dir_all(efi.parent().unwrap()).unwrap();
    std::fs::copy(&sdboot, &efi).unwrap();
    for s in SlotId::ALL {
        std::fs::create_dir_all(staging.join("ballast").join(s.as_str())).unwrap();
        std::fs::write(staging.join(boot_files::kernel(s)), b"not a kernel").unwrap();
        std::fs::write(staging.join(boot_files::initrd(s)), b"not an initrd").unwrap();
    }
    let esp = Esp::new(&staging);
    esp.write_loader_conf().unwrap();
    esp.write_entry(&Entry::new(SlotId::A, "1.0.0", "console=ttyS0"), None)
        .unwrap();
    esp.write_entry(&Entry::new(SlotId::B, "1.1.0", "console=ttyS0"), Some(2))
        .unwrap();
    assert_eq!(esp.default_slot().unwrap(), Some(SlotId::B));
    make_disk(&staging, &disk, 0xef);

    let mut expected = [
        (SlotId::B, vec!["ballast-a.conf", "ballast-b+1-1.conf"]),
        (SlotId::B, vec!["ballast-a.conf", "ballast-b+0-2.conf"]),
        (SlotId::A, vec!["ballast-a.conf", "ballast-b+0-2.conf"]),
    ]
    .into_iter();
    let mut predicted = Some(SlotId::B);
    for boot in 1..=3 {
        let (slot, names) = expected.next().unwrap();
        assert_eq!(
            predicted,
            Some(slot),
            "library prediction before boot {boot}"
        );
        let c = run_sdboot(&disk, &vars);
        let kernel = format!("Error loading \\ballast\\{slot}\\vmlinuz");
        assert!(
            c.contains(&kernel),
            "boot {boot}: expected systemd-boot to load slot {slot}:\n{c}"
        );
        assert!(
            !c.contains("Failed to rename"),
            "boot {boot}: systemd-boot could not count:\n{c}"
        );
        let after = t.path().join(format!("after{boot}"));
        extract(&disk, &after);
        assert_eq!(entry_names(&after), names, "boot {boot}");
        predicted = Esp::new(&after).default_slot().unwrap();
    }
    let st = Esp::new(t.path().join("after3")).status().unwrap();
    assert_eq!(st[1].health, Health::Bad);
    assert!(st[0].is_default);
}
