//! Stories: a user writes Ballast to a disk with the one installer.
//!
//! - `ballast flash` onto loop devices (the tests run as root): the written
//!   image is verified, the first-boot config is on the boot partition, and
//!   every refusal a user can meet says why and writes nothing.
//! - `osctl install` on a running x86_64 machine onto its blank second disk,
//!   then that disk booted alone under SeaBIOS.

mod common;

use common::loopdev::Loop;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BOARD: &str = "qemu-x86_64";

/// The build the x86_64 stories share (crun.rs makes the same one).
fn built() -> common::Built {
    common::Build::new(BOARD)
        .image("minimal")
        .version("0.1.0")
        .ssh_key()
        .shared()
}

fn flash(args: &[&std::ffi::OsStr], stdin: &[u8]) -> Output {
    let mut child = common::ballast()
        .arg("flash")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ballast flash");
    let _ = child.stdin.take().expect("stdin").write_all(stdin);
    let out = child.wait_with_output().expect("ballast flash");
    eprintln!(
        "ballast flash {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The refusal's message, and nothing written.
fn refused(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should have refused ({needle})");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

fn is_zero(path: &Path, bytes: usize) -> bool {
    let mut buf = vec![0u8; bytes];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading the device");
    buf.iter().all(|&b| b == 0)
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

#[test]
fn ballast_flash_writes_a_verified_image_with_its_config_and_refuses_what_it_must() {
    let _story = common::story();
    let work = common::workdir("install-flash");
    let built = built();
    let image = built.artifact("install_image");
    let raw = zstd::decode_all(fs::File::open(&image).expect("install image"))
        .expect("decompressing the install image");
    let size = raw.len() as u64;
    let user_data = work.join("user-data");
    fs::write(&user_data, "#cloud-config\nhostname: flashed\n").unwrap();

    let card = Loop::new(&work.join("card.img"), size + (16 << 20), &[]);
    let img = image.as_os_str();
    let dev = card.dev.as_os_str();

    // A device that does not exist.
    refused(
        &flash(&[img, os("/dev/ballast-no-such-disk"), os("--yes")], b""),
        "no such device",
    );
    // Not a disk image: the update bundle.
    let bundle = built.artifact("bundle");
    refused(
        &flash(&[bundle.as_os_str(), dev, os("--yes"), os("--force")], b""),
        "not a disk image",
    );
    assert!(is_zero(&card.dev, 1 << 20), "nothing written");
    // A loop device is not removable: only with --force.
    refused(
        &flash(&[img, dev, os("--yes")], b""),
        "not a removable disk",
    );
    // The question, answered no.
    refused(&flash(&[img, dev, os("--force")], b"n\n"), "not confirmed");
    // Too small: the size needed is named.
    let small = Loop::new(&work.join("small.img"), 64 << 20, &[]);
    refused(
        &flash(
            &[img, small.dev.as_os_str(), os("--yes"), os("--force")],
            b"",
        ),
        "too small",
    );
    // Read-only (losetup -r).
    let ro = Loop::new(&work.join("card.img"), 0, &["-r"]);
    refused(
        &flash(&[img, ro.dev.as_os_str(), os("--yes"), os("--force")], b""),
        "read-only",
    );
    drop(ro);
    // Mounted: an ext4 volume on a loop device, mounted.
    let vol = work.join("vol.img");
    // As large as a card that fits: the size check comes first.
    fs::File::create(&vol)
        .and_then(|f| f.set_len(size + (16 << 20)))
        .unwrap();
    assert!(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&vol)
        .status()
        .unwrap()
        .success());
    let seeded = Loop::new(&vol, 0, &[]);
    let mnt = work.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    assert!(Command::new("mount")
        .arg(&seeded.dev)
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    refused(
        &flash(
            &[img, seeded.dev.as_os_str(), os("--yes"), os("--force")],
            b"",
        ),
        "unmount it first",
    );
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(
        is_zero(&card.dev, 1 << 20),
        "nothing written by any refusal"
    );

    // The real thing, answered yes.
    let out = flash(
        &[
            img,
            dev,
            os("--force"),
            os("--user-data"),
            user_data.as_os_str(),
        ],
        b"y\n",
    );
    assert!(out.status.success(), "flash failed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Write "),
        "the question names the device"
    );

    // The card holds the image outside the boot partition, byte for byte,
    // and the config on the boot partition.
    let mut written = vec![0u8; raw.len()];
    fs::File::open(&card.dev)
        .and_then(|mut f| f.read_exact(&mut written))
        .unwrap();
    let table = ballast_disk::read_table(&mut std::io::Cursor::new(&written), 512).unwrap();
    let boot = &table.partitions[0];
    let (b0, b1) = (
        (boot.start_lba * 512) as usize,
        ((boot.end_lba + 1) * 512) as usize,
    );
    assert!(written[..b0] == raw[..b0], "the table and first MiB");
    assert!(written[b1..] == raw[b1..], "root, state partitions");
    let fs = fatfs::FileSystem::new(
        std::io::Cursor::new(written[b0..b1].to_vec()),
        fatfs::FsOptions::new(),
    )
    .unwrap();
    let mut ud = String::new();
    fs.root_dir()
        .open_file("user-data")
        .unwrap()
        .read_to_string(&mut ud)
        .unwrap();
    assert!(ud.contains("hostname: flashed"), "{ud}");
    let mut md = String::new();
    fs.root_dir()
        .open_file("meta-data")
        .unwrap()
        .read_to_string(&mut md)
        .unwrap();
    assert!(md.contains("instance-id"), "{md}");
    // The FAT volume is still sound for the firmware.
    let part = work.join("boot-part.img");
    fs::write(&part, &written[b0..b1]).unwrap();
    let fsck = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&part)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "fsck.vfat: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let copy = work.join("written.img");
    fs::write(&copy, &written).unwrap();
    common::assert_sgdisk_valid(&copy, "the flashed card");
}

/// `osctl install` on a running machine writes its blank second disk; that
/// disk then boots alone on a legacy BIOS, with the first-boot config given
/// to the install.
#[test]
fn osctl_install_writes_a_second_disk_that_boots_alone_with_its_config() {
    use common::vm::{free_port, ssh_as, Machine, Ssh};
    use std::time::Duration;
    let _story = common::story();
    let work = common::workdir("install-osctl");
    let built = built();
    let (key, out, version) = (built.ssh_key(), built.out.clone(), built.version());
    let image = built.artifact("install_image");
    let manifest = PathBuf::from(format!("{}.manifest", image.display()));
    let raw_size = zstd::decode_all(fs::File::open(&image).unwrap())
        .unwrap()
        .len() as u64;

    // A blank disk a little larger than the image, and the running machine.
    let blank = work.join("blank.img");
    fs::File::create(&blank)
        .and_then(|f| f.set_len(raw_size + (64 << 20)))
        .unwrap();
    let machine = built.vm_disk(&work, "machine");
    let port = free_port();
    let mut vm = Machine::start_with(
        BOARD,
        &out,
        port,
        work.join("live.log"),
        false,
        &[machine.as_os_str(), os("--drive"), blank.as_os_str()],
    );
    vm.wait_for("ballast-ready", Duration::from_secs(600));
    let ssh = Ssh {
        key: key.clone(),
        port,
    };

    // The image and its manifest go to /var/tmp (the state partition).
    ssh.ok_with_input("cat > /var/tmp/install.img.zst", &fs::read(&image).unwrap());
    ssh.ok_with_input(
        "cat > /var/tmp/install.img.zst.manifest",
        &fs::read(&manifest).unwrap(),
    );
    let alice = work.join("alice");
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&alice)
        .status()
        .unwrap()
        .success());
    let alice_pub = fs::read_to_string(alice.with_extension("pub")).unwrap();
    let user_data = format!(
        "#cloud-config\nhostname: installed\nusers:\n  - default\n  - name: alice\n    ssh_authorized_keys:\n      - {}\n",
        alice_pub.trim()
    );
    ssh.ok_with_input("cat > /var/tmp/user-data", user_data.as_bytes());

    // Refusals: the disk this machine runs from, a partition, a missing disk.
    let install = |args: &str| ssh.run(&format!("osctl install {args}"));
    let refused_here = |o: Output, needle: &str| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "should have refused ({needle})");
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    };
    let img = "--image /var/tmp/install.img.zst";
    refused_here(install(&format!("/dev/vda {img} --force")), "runs from");
    refused_here(install(&format!("/dev/vda1 {img}")), "is a partition");
    refused_here(install(&format!("/dev/vdz {img}")), "no such device");

    // The install itself.
    let done = ssh.ok(&format!(
        "osctl install /dev/vdb {img} --user-data /var/tmp/user-data --json"
    ));
    let v: serde_json::Value = serde_json::from_str(done.trim()).expect("install --json");
    assert_eq!(v["installed"], true, "{done}");
    assert_eq!(v["version"], version.as_str(), "{done}");
    assert_eq!(v["bytes"], raw_size, "{done}");
    eprintln!(
        "osctl install: {raw_size} bytes, write {} s, verify {} s",
        v["write_seconds"], v["verify_seconds"]
    );
    // Now it holds partitions: a second install needs --force.
    refused_here(install(&format!("/dev/vdb {img}")), "--force");
    let _ = ssh.run("osctl poweroff");
    vm.wait_exit(Duration::from_secs(180));
    vm.save();

    // The installed disk alone, on a machine without UEFI (SeaBIOS runs GRUB
    // from the disk): slot A, ready, alice's key from the user-data.
    let port = free_port();
    let mut vm = Machine::start_with(
        BOARD,
        &out,
        port,
        work.join("installed.log"),
        false,
        &[blank.as_os_str(), os("--bios")],
    );
    vm.wait_for(
        &format!("ballast-ready version={version} slot=a"),
        Duration::from_secs(600),
    );
    let who = ssh_as("alice", &alice, port, "hostname");
    assert!(
        who.status.success(),
        "alice cannot log in: {}",
        String::from_utf8_lossy(&who.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&who.stdout).trim(), "installed");
    let ssh = Ssh { key, port };
    let _ = ssh.run("osctl poweroff");
    vm.wait_exit(Duration::from_secs(180));
    vm.save();
}
