//! Story: a user downloads the live ISO, checks it with the usual tools, boots it
//! as a CD on an old BIOS PC and on a UEFI PC, and as a USB stick on a UEFI PC,
//! and finds a working Ballast that wrote nothing to the machine's disk. Then
//! they embed their own SSH key with `ballast iso customize` and log in with it;
//! an ISO that is not Ballast's is refused. On an ARM server they write the ISO
//! with `ballast.install=` added to a USB stick and boot it: it comes up live,
//! installs itself to the blank disk unattended and reboots, and the disk alone
//! boots slot A.

mod common;

use common::vm::{free_port, Machine, Ssh};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const READY: Duration = Duration::from_secs(900);

/// The build's ISO, hard-linked into the story's work directory: `ballast run
/// --iso` keeps its blank disk and UEFI variables beside the ISO, and a shared
/// build is read-only.
fn iso_in(built: &common::Built, work: &Path, name: &str) -> PathBuf {
    let iso = built.json["artifacts"]["iso"]
        .as_str()
        .expect("ballast build --json names an iso artifact");
    let dest = work.join(name);
    let _ = std::fs::remove_file(&dest);
    if std::fs::hard_link(iso, &dest).is_err() {
        std::fs::copy(iso, &dest).expect("copying the ISO");
    }
    dest
}

fn boot_iso(
    board: &str,
    out: &Path,
    iso: &Path,
    port: u16,
    log: PathBuf,
    extra: &[&str],
) -> Machine {
    let mut args: Vec<std::ffi::OsString> = vec![
        "--iso".into(),
        iso.into(),
        "--blank-disk".into(),
        "1G".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    Machine::start_with(board, out, port, log, false, &refs)
}

/// The El Torito UEFI entry of `xorriso -report_el_torito plain`: its load
/// size (512-byte sectors; 0 means "to the end of the CD").
fn eltorito_uefi_load_size(report: &str) -> u64 {
    let line = report
        .lines()
        .find(|l| l.starts_with("El Torito boot img") && l.contains("UEFI"))
        .unwrap_or_else(|| panic!("no UEFI boot image in:\n{report}"));
    // "El Torito boot img :   2  UEFI  y   none  0x0000  0x00   21504   31232"
    let fields: Vec<&str> = line.split_whitespace().collect();
    fields[fields.len() - 2]
        .parse()
        .unwrap_or_else(|_| panic!("load size in {line:?}"))
}

fn el_torito_report(iso: &Path) -> String {
    let report = Command::new("xorriso")
        .args(["-indev"])
        .arg(iso)
        .args(["-report_el_torito", "plain"])
        .output()
        .expect("running xorriso");
    String::from_utf8_lossy(&report.stdout).into_owned()
}

/// GPT partition 2 of the ISO (what UEFI boots from a USB stick) is a FAT16
/// volume sized to its files, passing `fsck.fat -n`, with the live loader
/// entry (x86_64's systemd-boot). Returns its size in bytes.
fn check_efi_partition(iso: &Path, work: &Path) -> u64 {
    let bytes = check_fat16_partition(iso, work);
    let efi = work.join("efi-partition.img");
    let entry = Command::new("mtype")
        .arg("-i")
        .arg(&efi)
        .arg("::loader/entries/ballast-live.conf")
        .output()
        .expect("running mtype (mtools)");
    let entry = String::from_utf8_lossy(&entry.stdout);
    assert!(entry.contains("ballast.live="), "loader entry:\n{entry}");
    bytes
}

/// GPT partition 2 of the ISO is a FAT16 volume passing `fsck.fat -n`;
/// returns its size in bytes (copied to `work/efi-partition.img`).
fn check_fat16_partition(iso: &Path, work: &Path) -> u64 {
    let efi = common::extract_partition(iso, 2, &work.join("efi-partition.img"));
    let fsck = Command::new("fsck.fat")
        .args(["-n", "-v"])
        .arg(&efi)
        .output()
        .expect("running fsck.fat (dosfstools)");
    let text = String::from_utf8_lossy(&fsck.stdout);
    assert!(fsck.status.success(), "fsck.fat -n:\n{text}");
    assert!(text.contains("16 bit entries"), "not FAT16:\n{text}");
    std::fs::metadata(&efi)
        .expect("the EFI partition copy")
        .len()
}

/// Over SSH: the machine is live, its state in RAM, upgrades refused; on the
/// host: not one block of the blank target disk was written.
fn assert_live_and_untouched(ssh: &Ssh, target: &Path) {
    let status = ssh.status();
    assert_eq!(status["live"], true, "{status}");
    let fs = ssh.ok("findmnt -n -o SOURCE,FSTYPE --target /state");
    assert!(fs.contains("tmpfs"), "state is {fs}");
    let out = ssh.run("osctl rollback");
    assert!(
        !out.status.success(),
        "osctl rollback succeeded on a live system"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("runs live"), "osctl rollback said: {err}");
    let meta = std::fs::metadata(target).expect("the blank target disk");
    assert_eq!(meta.blocks(), 0, "the live system wrote to its target disk");
}

#[test]
fn x86_64_iso_boots_live_from_cd_under_seabios_and_ovmf_and_customised_from_usb_under_ovmf() {
    let _story = common::story();
    let board = "qemu-x86_64";
    let work = common::workdir("iso-x86_64");
    let built = common::Build::new(board)
        .image("minimal")
        .version("0.1.0")
        .ssh_key()
        .shared();
    let iso = iso_in(&built, &work, "ballast.iso");

    // The tools users check an ISO with: both boot images, a valid GPT. The
    // EFI image is FAT16 sized to its files, so its El Torito entry can count
    // all of it (a CD under UEFI then finds it).
    let text = el_torito_report(&iso);
    assert!(
        text.contains("BIOS") && text.contains("UEFI"),
        "El Torito:\n{text}"
    );
    common::assert_sgdisk_valid(&iso, "the hybrid ISO");
    let efi_bytes = check_efi_partition(&iso, &work);
    assert!(efi_bytes < 32 << 20, "EFI image of {efi_bytes} bytes");
    assert_eq!(
        eltorito_uefi_load_size(&text) * 512,
        efi_bytes,
        "El Torito:\n{text}"
    );

    // A CD on a legacy-BIOS PC.
    let port = free_port();
    let mut m = boot_iso(
        board,
        &built.out,
        &iso,
        port,
        work.join("cd-bios.log"),
        &["--bios"],
    );
    let ready = m.wait_for("ballast-ready", READY);
    assert!(ready.contains("slot=live"), "{ready}");
    eprintln!(
        "x86_64 CD/SeaBIOS: QEMU start to ready live in {:.1?}",
        m.since_start()
    );
    let key = built.key.clone().expect("a baked key");
    let ssh = Ssh { key, port };
    assert_live_and_untouched(&ssh, &iso.with_extension("target.img"));
    // `osctl install` from the medium. The ISO's install image leaves slot
    // A's root, the kernel and the initramfs to the ISO's own files (fills):
    // the disk it writes and reads back must still be, byte for byte, the
    // disk image of OUT (the same SHA-256 as OUT's signed manifest).
    let whole = std::fs::read_to_string(format!(
        "{}.manifest",
        built.artifact("install_image").display()
    ))
    .expect("OUT's install manifest");
    let whole: serde_json::Value =
        serde_json::from_str(whole.lines().next().unwrap_or_default()).expect("manifest JSON");
    let done = ssh.ok("osctl install /dev/vda --json");
    let v: serde_json::Value = serde_json::from_str(done.trim()).expect("install --json");
    assert_eq!(v["installed"], true, "{done}");
    assert_eq!(v["bytes"], whole["raw_size"], "{done}");
    assert_eq!(v["sha256"], whole["sha256"], "{done}");
    eprintln!(
        "x86_64 osctl install from the CD: write {} s, verify {} s",
        v["write_seconds"], v["verify_seconds"]
    );
    drop(m);

    // The same ISO as a CD on a UEFI PC.
    let port = free_port();
    let mut m = boot_iso(board, &built.out, &iso, port, work.join("cd-ovmf.log"), &[]);
    let ready = m.wait_for("ballast-ready", READY);
    assert!(ready.contains("slot=live"), "{ready}");
    eprintln!(
        "x86_64 CD/OVMF: QEMU start to ready live in {:.1?}",
        m.since_start()
    );
    drop(m);

    // The same ISO customised with another key and a kernel argument, as a USB
    // stick on a UEFI PC.
    let user_key = work.join("user_key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&user_key)
        .status()
        .expect("ssh-keygen");
    assert!(keygen.success());
    let pubkey = std::fs::read_to_string(user_key.with_extension("pub")).expect("public key");
    let user_data = work.join("user-data");
    std::fs::write(
        &user_data,
        format!(
            "#cloud-config\nssh_authorized_keys:\n  - {}\n",
            pubkey.trim()
        ),
    )
    .expect("writing user-data");
    let custom = work.join("custom.iso");
    let out = common::ballast()
        .args(["iso", "customize"])
        .arg(&iso)
        .arg("--user-data")
        .arg(&user_data)
        .args(["--kernel-arg", "ballast.story=customised", "-o"])
        .arg(&custom)
        .output()
        .expect("ballast iso customize");
    assert!(
        out.status.success(),
        "customize: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Not a Ballast ISO: refused, nothing written.
    let seed = work.join("seed.iso");
    let meta_data = work.join("meta-data");
    std::fs::write(&meta_data, "instance-id: story\n").expect("writing meta-data");
    common::seed_image(
        &user_data,
        &meta_data,
        &[std::ffi::OsStr::new("--iso9660")],
        &seed,
    );
    let refused = work.join("refused.iso");
    let out = common::ballast()
        .args(["iso", "customize"])
        .arg(&seed)
        .arg("--user-data")
        .arg(&user_data)
        .arg("-o")
        .arg(&refused)
        .output()
        .expect("ballast iso customize");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a Ballast ISO"),
        "{err}"
    );
    assert!(!refused.exists());

    let port = free_port();
    let mut m = boot_iso(
        board,
        &built.out,
        &custom,
        port,
        work.join("usb-ovmf.log"),
        &["--usb"],
    );
    let ready = m.wait_for("ballast-ready", READY);
    assert!(ready.contains("slot=live"), "{ready}");
    eprintln!(
        "x86_64 USB/OVMF: QEMU start to ready live in {:.1?}",
        m.since_start()
    );
    let ssh = Ssh {
        key: user_key,
        port,
    };
    let cmdline = ssh.ok("cat /proc/cmdline");
    assert!(cmdline.contains("ballast.story=customised"), "{cmdline}");
    assert!(
        cmdline.contains("console=tty0") && cmdline.contains("console=ttyS0"),
        "{cmdline}"
    );
    assert_live_and_untouched(&ssh, &custom.with_extension("target.img"));
}

#[test]
fn arm64_iso_boots_live_from_a_usb_stick_under_aavmf_and_installs_itself_unattended() {
    let _story = common::story();
    let board = "qemu-arm64";
    let work = common::workdir("iso-arm64");
    let built = common::Build::new(board)
        .image("minimal")
        .version("0.1.0")
        .ssh_key()
        .shared();
    let iso = iso_in(&built, &work, "ballast.iso");
    common::assert_sgdisk_valid(&iso, "the hybrid ISO");
    // The EFI image holds GRUB alone (it boots the gzip kernel from the ISO
    // 9660 tree): appended after the tree, its El Torito entry counts it.
    let text = el_torito_report(&iso);
    let efi_bytes = check_fat16_partition(&iso, &work);
    assert!(efi_bytes < 4 << 20, "EFI image of {efi_bytes} bytes");
    assert_eq!(
        eltorito_uefi_load_size(&text) * 512,
        efi_bytes,
        "El Torito:\n{text}"
    );
    let grub = Command::new("mdir")
        .arg("-i")
        .arg(work.join("efi-partition.img"))
        .arg("::EFI/BOOT/BOOTAA64.EFI")
        .output()
        .expect("running mdir (mtools)");
    assert!(grub.status.success(), "no EFI/BOOT/BOOTAA64.EFI");
    // Its size beside the disk's: `ballast bench iso` gives the ratio.
    let iso_bytes = std::fs::metadata(&iso).expect("the ISO").len();
    eprintln!("arm64 ISO: {iso_bytes} bytes, EFI image {efi_bytes}");

    // The unattended install: the ISO customised with ballast.install=,
    // written to a USB stick (the hybrid image's GPT and ESP, not El
    // Torito: the x86_64 story boots the CD form under OVMF, the same EDK2
    // El Torito code as AAVMF's). The stick is a SCSI disk to the live
    // system, so it must find its medium there, not on a CD drive.
    let custom = work.join("install.iso");
    let out = common::ballast()
        .args(["iso", "customize"])
        .arg(&iso)
        .args(["--kernel-arg", "ballast.install=/dev/vda", "-o"])
        .arg(&custom)
        .output()
        .expect("ballast iso customize");
    assert!(
        out.status.success(),
        "customize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let mut m = boot_iso(
        board,
        &built.out,
        &custom,
        port,
        work.join("usb-aavmf.log"),
        &["--usb"],
    );
    let medium = m.wait_for("live: medium", READY);
    assert!(
        medium.contains("/dev/sd") && !medium.contains("/dev/sr"),
        "the USB stick is not the medium: {medium}"
    );
    let ready = m.wait_for("ballast-ready", READY);
    assert!(ready.contains("slot=live"), "{ready}");
    eprintln!(
        "arm64 USB/AAVMF: QEMU start to ready live in {:.1?}",
        m.since_start()
    );
    let started = std::time::Instant::now();
    let done = m.wait_for("ballast-install done", READY);
    assert!(done.contains("device=/dev/vda"), "{done}");
    eprintln!(
        "arm64 unattended install: {done} ({:.1?} after ready)",
        started.elapsed()
    );
    m.wait_for("ballast-install rebooting", Duration::from_secs(60));
    m.wait_exit(Duration::from_secs(300));

    // The disk alone, without the ISO: slot A of the installed version.
    let target = custom.with_extension("target.img");
    let port = free_port();
    let mut m = Machine::boot_disk(board, &built.out, &target, port, work.join("disk.log"));
    m.wait_for(
        &format!("ballast-ready version={} slot=a", built.version()),
        READY,
    );
    let ssh = Ssh {
        key: built.key.clone().expect("a baked key"),
        port,
    };
    let status = ssh.status();
    assert_eq!(status["live"], false, "{status}");
}
