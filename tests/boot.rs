//! Story: a developer builds each QEMU board and boots it. The Debian kernel
//! starts Ballast's own init from the initramfs, which announces itself, loads
//! the kernel modules it needs and, asked to by `ballast.debug=poweroff`,
//! powers the machine off cleanly.

mod common;

use std::path::Path;
use std::time::Duration;

fn boots_to_init_banner_and_powers_off(
    board: &str,
    arch: &str,
    built: &serde_json::Value,
    out: &Path,
    work: &Path,
) {
    let version = built["version"].as_str().expect("a version");
    assert_eq!(built["board"], board);
    assert_eq!(built["arch"], arch);
    for key in ["kernel", "initrd"] {
        let path = built["artifacts"][key].as_str().expect("artifact path");
        assert!(
            std::path::Path::new(path).is_file(),
            "{key}: {path} missing"
        );
    }

    // Only the kernel and initramfs are booted here (tests/disk.rs boots disks).
    let boot = common::run(
        board,
        out,
        &["--direct", "--append", "ballast.debug=poweroff"],
        Duration::from_secs(240),
        &work.join("console.log"),
    );
    let console = boot.text();
    assert!(
        boot.status.is_some(),
        "QEMU did not power off within the timeout; console:\n{console}"
    );
    assert!(
        !console.contains("Kernel panic"),
        "kernel panic:\n{console}"
    );

    // The banner is init's first line, with the version and arch of the build.
    let banner = format!("ballast-init version={version} arch={arch}");
    let first_init_line = boot
        .lines
        .iter()
        .find(|l| l.contains("ballast-init"))
        .unwrap_or_else(|| panic!("init never spoke; console:\n{console}"));
    assert_eq!(first_init_line.trim(), banner, "console:\n{console}");

    // Every module the initramfs carries loaded (dependencies in order).
    let modules = boot
        .lines
        .iter()
        .find(|l| l.contains("ballast-init: modules:"))
        .unwrap_or_else(|| panic!("init did not report its modules; console:\n{console}"));
    assert!(modules.contains(" 0 failed"), "{modules}");

    // Stage 1 ran to its end, then the kernel powered the machine off.
    boot.assert_has("stage 1 complete");
    boot.assert_has("reboot: Power down");
    let status = boot.status.expect("checked above");
    assert!(
        status.success(),
        "QEMU exited with {status}; console:\n{console}"
    );
    eprintln!("{board}: QEMU start to power-off in {:.1?}", boot.elapsed);
}

/// The minimal 0.1.0 build most stories boot, made once per test run.
fn shared(board: &str, arch: &str) {
    let built = common::Build::new(board)
        .image("minimal")
        .version("0.1.0")
        .ssh_key()
        .shared();
    let work = common::workdir(board);
    boots_to_init_banner_and_powers_off(board, arch, &built.json, &built.out, &work);
}

#[test]
fn qemu_x86_64_boots_to_init_banner_and_powers_off() {
    let _story = common::story();
    shared("qemu-x86_64", "x86_64");
}

#[test]
fn qemu_arm64_boots_to_init_banner_and_powers_off() {
    let _story = common::story();
    shared("qemu-arm64", "arm64");
}

#[test]
fn qemu_armv7_boots_to_init_banner_and_powers_off() {
    let _story = common::story();
    // A build of its own, of the default image's kernel and initramfs only
    // (`--no-disk`, a developer's quick loop), at another version.
    //
    // bookworm-security is left out for armhf: on 2026-11-25 the mirror these
    // machines use served a binary-armhf Packages.xz that did not match its
    // signed InRelease, and the client (rightly) refuses the whole build then.
    // The security suite's chain is exercised by the other two boards.
    let board = "qemu-armv7";
    let work = common::workdir(board);
    let out = work.join("out");
    let built = common::build(
        board,
        &out,
        &[
            "--no-disk",
            "--version",
            "0.1.1",
            "--suite",
            "bookworm",
            "--suite",
            "bookworm-updates",
        ],
    );
    assert_eq!(built["version"], "0.1.1");
    boots_to_init_banner_and_powers_off(board, "armv7", &built, &out, &work);
}
