//! Story: an operator flashes the x86_64 disk onto a machine without UEFI. SeaBIOS
//! (QEMU's legacy BIOS) runs GRUB from the disk's MBR and BIOS boot partition; the
//! machine reaches `ballast-ready version=0.1.0 slot=a`, and `sgdisk -v` finds
//! nothing wrong with the table that carries both boot paths. An upgrade to 0.2.0
//! whose boot the power cuts three times (GRUB has counted each try) is rolled
//! back by GRUB itself: 0.1.0 in slot a, an automatic rollback in `osctl
//! status`. The same upgrade again boots slot b under SeaBIOS, counted by
//! GRUB. The same disk, after all that, still boots under OVMF (UEFI,
//! systemd-boot): both bootloaders' slot state were kept in step. There,
//! `osctl rollback --reboot` brings 0.1.0 back in slot a.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::vm::{free_port, Machine, Ssh};

const BOOT: Duration = Duration::from_secs(420);
const BOARD: &str = "qemu-x86_64";

fn slot<'a>(status: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    status["slots"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["slot"] == id))
        .unwrap_or_else(|| panic!("no slot {id} in {status}"))
}

/// Boot the story's machine (`disk`) with `out`'s build; `bios`: under SeaBIOS.
fn boot(out: &Path, disk: &Path, port: u16, log: &Path, bios: bool) -> Machine {
    let mut extra = vec![disk.as_os_str()];
    if bios {
        extra.push("--bios".as_ref());
    }
    Machine::start_with(BOARD, out, port, log.to_path_buf(), false, &extra)
}

/// Ask the machine to reboot over SSH and wait for QEMU to exit (`--no-reboot`).
fn reboot(vm: &mut Machine, ssh: &Ssh, command: &str) {
    ssh.ok_going_down(command);
    let exit = vm.wait_exit(Duration::from_secs(120));
    assert!(exit.success(), "QEMU exited with {exit}");
}

#[test]
fn qemu_x86_64_disk_boots_updates_and_rolls_back_on_bios() {
    let _story = common::story();
    let work = common::workdir("bios");
    // The same 0.1.0 build the update stories boot.
    let built1 = common::Build::new(BOARD)
        .image("minimal")
        .version("0.1.0")
        .ssh_key()
        .shared();
    let key = built1.ssh_key();
    // The same 0.2.0 the update stories upgrade to.
    let built2 = built1.next_release(&[]);

    // The table with both boot paths passes sgdisk's own checks.
    common::assert_sgdisk_valid(&built1.disk(), "the BIOS+UEFI disk");
    let p = Command::new("sgdisk")
        .arg("-p")
        .arg(built1.disk())
        .output()
        .expect("running sgdisk -p");
    let table = String::from_utf8_lossy(&p.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["5", "34", "2047", "1007.0", "KiB", "EF02", "bios-boot"]),
        "no BIOS boot partition 5 at LBA 34..2047: {table}"
    );

    let disk = built1.vm_disk(&work, "machine");
    let port = free_port();
    let ssh = Ssh {
        key: key.clone(),
        port,
    };

    // 1. Legacy BIOS, first boot: GRUB boots slot a.
    let started = Instant::now();
    let mut vm = boot(&built1.out, &disk, port, &work.join("console-1.log"), true);
    let ready = vm.wait_for("ballast-ready", BOOT);
    assert_eq!(ready.trim(), "ballast-ready version=0.1.0 slot=a");
    assert!(
        vm.console
            .iter()
            .any(|l| l.contains("ballast: booting slot a")),
        "GRUB's boot line is missing: was this a BIOS boot?"
    );
    eprintln!(
        "bios: SeaBIOS to ballast-ready: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let st = ssh.status();
    assert_eq!(slot(&st, "a")["health"]["state"], "good", "{st}");
    assert_eq!(slot(&st, "a")["is_default"], true, "{st}");

    // 2. Upgrade to 0.2.0 on the BIOS-booted machine; the power fails three
    // times while GRUB starts it (after GRUB recorded each try in its
    // environment block): GRUB then boots slot a by itself and sysd reports
    // an automatic rollback.
    let bundle = std::fs::read(built2.artifact("bundle")).expect("reading the 0.2.0 bundle");
    let upgrade = |ssh: &Ssh| {
        let out = ssh.ok_with_input("osctl upgrade - --json", &bundle);
        let res: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("upgrade --json: {e}: {out}"));
        assert_eq!(res["installed"], true, "{res}");
        assert_eq!(res["slot"], "b", "{res}");
        let st = ssh.status();
        let b = slot(&st, "b");
        assert_eq!(b["version"], "0.2.0", "{st}");
        assert_eq!(b["is_default"], true, "{st}");
        assert_eq!(b["health"]["state"], "trying", "{st}");
    };
    upgrade(&ssh);
    reboot(&mut vm, &ssh, "osctl reboot");
    drop(vm);
    for cut in 1..=3 {
        let mut vm = boot(
            &built1.out,
            &disk,
            port,
            &work.join(format!("console-2-cut{cut}.log")),
            true,
        );
        vm.wait_for("ballast: booting slot b", BOOT);
        drop(vm); // the power cut: QEMU is killed
    }
    let mut vm = boot(&built1.out, &disk, port, &work.join("console-2.log"), true);
    let line = vm.wait_for("ballast-rollback", BOOT);
    assert!(
        line.trim()
            .starts_with("ballast-rollback from=0.2.0 to=0.1.0 reason="),
        "{line}"
    );
    let ready = vm.wait_for("ballast-ready", BOOT);
    assert_eq!(ready.trim(), "ballast-ready version=0.1.0 slot=a");
    let st = ssh.status();
    assert_eq!(st["last_rollback"]["from"], "0.2.0", "{st}");
    assert_eq!(st["last_rollback"]["automatic"], true, "{st}");
    assert_eq!(slot(&st, "a")["is_default"], true, "{st}");

    // 3. The same upgrade again, and this time it boots: slot b, counted by
    // GRUB, marked good.
    upgrade(&ssh);
    reboot(&mut vm, &ssh, "osctl reboot");
    drop(vm);
    let mut vm = boot(&built1.out, &disk, port, &work.join("console-3.log"), true);
    let ready = vm.wait_for("ballast-ready", BOOT);
    assert_eq!(ready.trim(), "ballast-ready version=0.2.0 slot=b");
    let st = ssh.status();
    assert_eq!(slot(&st, "b")["health"]["state"], "good", "{st}");
    reboot(&mut vm, &ssh, "osctl reboot");
    drop(vm);

    // 4. The same disk under UEFI: systemd-boot's entries followed every step.
    let mut vm = boot(&built1.out, &disk, port, &work.join("console-4.log"), false);
    let ready = vm.wait_for("ballast-ready", BOOT);
    assert_eq!(ready.trim(), "ballast-ready version=0.2.0 slot=b");
    assert!(
        !vm.console
            .iter()
            .any(|l| l.contains("ballast: booting slot")),
        "GRUB ran under OVMF: this was not a UEFI boot"
    );
    let st = ssh.status();
    assert_eq!(slot(&st, "a")["version"], "0.1.0", "{st}");
    assert_eq!(slot(&st, "a")["health"]["state"], "good", "{st}");
    assert_eq!(slot(&st, "b")["health"]["state"], "good", "{st}");

    // 5. Under UEFI, the operator rolls back by hand: systemd-boot boots 0.1.0
    // in slot a again.
    reboot(&mut vm, &ssh, "osctl rollback --reboot");
    drop(vm);
    let mut vm = boot(&built1.out, &disk, port, &work.join("console-5.log"), false);
    let ready = vm.wait_for("ballast-ready", BOOT);
    assert_eq!(ready.trim(), "ballast-ready version=0.1.0 slot=a");
    let st = ssh.status();
    assert_eq!(st["last_rollback"]["from"], "0.2.0", "{st}");
    assert_eq!(st["last_rollback"]["to"], "0.1.0", "{st}");
    assert_eq!(st["last_rollback"]["automatic"], false, "{st}");
    assert_eq!(slot(&st, "a")["is_default"], true, "{st}");
    let _ = ssh.run("osctl poweroff");
    vm.wait_exit(Duration::from_secs(120));
}
