//! Story: a Ballast A/B disk boots on QEMU (x86_64). The disk is made the way
//! the builder makes it — GPT by ballast-disk, a squashfs root with its
//! dm-verity tree appended by ballast-verity, an ext4 state partition
//! (16 MiB, label `state`) — and then written to a larger disk. Init finds the
//! disk by its GUID, maps slot a through dm-verity, grows state to the end of
//! the disk, switches root and counts the boot on state; the second boot says
//! boot 2 and grows nothing. With one byte of the root changed, init refuses
//! slot a, says why, and reboots.
//!
//! PID 1 then supervises a stand-in for sysd (a busybox shell script): it
//! restarts it after it dies, takes `kill -INT 1` as a reboot request, stops
//! it with SIGTERM, and waits for its ready file under `ballast.debug=poweroff`.
//!
//! Needs `out/qemu-x86_64/{vmlinuz,initrd.img}` (`ballast build --board
//! qemu-x86_64`), the device build of init (`cargo build --profile device
//! --target x86_64-unknown-linux-musl -p ballast-init`), `mksquashfs`,
//! `mkfs.ext4`, a static `/bin/busybox` (the sysd stand-ins) and
//! `qemu-system-x86_64`. Run with
//! `cargo test -p ballast-init --test qemu_root -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use ballast_disk::{types, Content, Disk, Guid, Partition, TableKind, MIB};

const GUID: &str = "6b3e0f51-6e2d-4c5b-9f0a-2b8c1d3e4f50";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn need(path: &Path, how: &str) -> PathBuf {
    assert!(path.is_file(), "{} is missing: {how}", path.display());
    path.to_path_buf()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Machine {
    dir: tempfile::TempDir,
    cmdline: String,
    kernel: PathBuf,
}

impl Machine {
    fn disk(&self) -> PathBuf {
        self.dir.path().join("disk.img")
    }

    /// Builds root, state, disk and initramfs.
    fn new() -> Machine {
        Machine::with_sysd(None)
    }

    /// The same, with `script` (run by busybox sh) as /usr/lib/ballast/sysd.
    fn with_sysd(script: Option<&str>) -> Machine {
        let repo = repo();
        let out = repo.join("out/qemu-x86_64");
        let build = "run `ballast build --board qemu-x86_64`";
        let kernel = need(&out.join("vmlinuz"), build);
        let initrd = need(&out.join("initrd.img"), build);
        let init = need(
            &repo.join("target/x86_64-unknown-linux-musl/device/init"),
            "run `cargo build --profile device --target x86_64-unknown-linux-musl -p ballast-init`",
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();

        // The root tree, as the builder lays it out.
        let root = d.join("root");
        for sub in [
            "usr/lib/ballast",
            "sbin",
            "proc",
            "sys",
            "dev",
            "run",
            "tmp",
            "state",
            "etc",
            "var",
            "boot",
        ] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::copy(&init, root.join("usr/lib/ballast/init")).unwrap();
        std::os::unix::fs::symlink("../usr/lib/ballast/init", root.join("sbin/init")).unwrap();
        std::fs::write(
            root.join("usr/lib/os-release"),
            "ID=ballast\nVERSION_ID=9.8.7\n",
        )
        .unwrap();
        if let Some(script) = script {
            use std::os::unix::fs::PermissionsExt;
            let busybox = need(
                Path::new("/bin/busybox"),
                "install a static busybox (Debian: busybox-static)",
            );
            std::fs::create_dir_all(root.join("bin")).unwrap();
            std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
            let sysd = root.join("usr/lib/ballast/sysd");
            std::fs::write(&sysd, format!("#!/bin/busybox sh\n{script}")).unwrap();
            std::fs::set_permissions(&sysd, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let root_img = d.join("root.img");
        run(Command::new("mksquashfs").args([&root, &root_img]).args([
            "-comp",
            "zstd",
            "-all-root",
            "-noappend",
            "-quiet",
        ]));
        let verity = ballast_verity::append_hash_tree(
            &root_img,
            &ballast_verity::Params::new(ballast_verity::Params::derived_salt(b"qemu_root")),
        )
        .unwrap();

        let state_img = d.join("state.img");
        std::fs::File::create(&state_img)
            .unwrap()
            .set_len(16 * MIB)
            .unwrap();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "state"])
            .arg(&state_img));

        let part = |label: &str, type_guid: Guid, size: u64, content: Content| Partition {
            label: label.into(),
            type_guid,
            uuid: Guid::stable("qemu_root", label),
            mbr_type: 0x83,
            bootable: false,
            size,
            content,
        };
        let root_size = std::fs::metadata(&root_img).unwrap().len().div_ceil(MIB) * MIB;
        let disk_def = Disk {
            kind: TableKind::Gpt,
            disk_guid: Guid::from_str(GUID).unwrap(),
            partitions: vec![
                part("boot", types::ESP, 8 * MIB, Content::Zero),
                part(
                    "root-a",
                    types::ROOT_X86_64,
                    root_size,
                    Content::File(root_img),
                ),
                part("root-b", types::ROOT_X86_64, root_size, Content::Zero),
                part(
                    "state",
                    types::LINUX_DATA,
                    16 * MIB,
                    Content::File(state_img),
                ),
            ],
        };
        let disk = d.join("disk.img");
        ballast_disk::write_image(&disk, &disk_def).unwrap();
        // Written to a larger disk: state grows on first boot.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .unwrap()
            .set_len(256 * MIB)
            .unwrap();

        // The builder's initramfs with this init appended (the kernel unpacks
        // concatenated archives in order; the later /init wins).
        let mut initramfs = std::fs::read(&initrd).unwrap();
        let entry = ballast_kernel::cpio::Entry {
            path: "init".into(),
            mode: 0o100_755,
            data: std::fs::read(&init).unwrap(),
            rdev_major: 0,
            rdev_minor: 0,
        };
        initramfs.extend(ballast_kernel::cpio::write(&[entry], 0).unwrap());
        std::fs::write(d.join("initrd.img"), initramfs).unwrap();

        let cmdline = format!(
            "console=ttyS0 panic=-1 ballast.slot=a ballast.disk={GUID} {} ballast.debug=poweroff",
            verity.to_cmdline()
        );
        Machine {
            dir,
            cmdline,
            kernel,
        }
    }

    /// Boots once; returns the console. QEMU exits on power-off and, with
    /// `-no-reboot`, on reboot.
    fn boot(&self) -> String {
        let d = self.dir.path();
        let console = d.join("console.txt");
        let started = Instant::now();
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-machine", "q35", "-m", "512", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(d.join("initrd.img"))
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio",
                self.disk().display()
            ))
            .args(["-append", &self.cmdline])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&console).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-x86_64");
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if started.elapsed() > Duration::from_secs(180) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "QEMU did not end within 180 s; console:\n{}",
                    String::from_utf8_lossy(&std::fs::read(&console).unwrap())
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        String::from_utf8_lossy(&std::fs::read(&console).unwrap()).into_owned()
    }
}

fn has(console: &str, text: &str) -> bool {
    console.lines().any(|l| l.contains(text))
}

#[test]
#[ignore = "boots QEMU; needs out/qemu-x86_64 and the device build of init (see the file's doc)"]
fn slot_a_boots_verified_grows_state_once_and_counts_boots() {
    let machine = Machine::new();

    let first = machine.boot();
    assert!(!first.contains("Kernel panic"), "{first}");
    for line in [
        "ballast-init: root: slot a on /dev/vda2 mapped through dm-verity as /dev/dm-0",
        "ballast-init: state: partition 4 of /dev/vda grown to the end of the disk",
        "ballast-init: state: ext4 on /dev/vda4 grown from 16 MiB to ",
        "ballast-init: stage 2 on slot a (root verified, read-only)",
        "ballast-init: boot 1 on this state partition",
        "ballast-init: /state is read-only; it is safe to power off",
        "reboot: Power down",
    ] {
        assert!(has(&first, line), "no {line:?} in:\n{first}");
    }

    let second = machine.boot();
    assert!(
        has(&second, "ballast-init: boot 2 on this state partition"),
        "{second}"
    );
    assert!(!has(&second, "grown"), "grew again:\n{second}");

    // The table on disk is valid and the state partition ends near the disk's end.
    let mut disk = std::fs::File::open(machine.disk()).unwrap();
    let table = ballast_disk::read_table(&mut disk, 512).unwrap();
    let state = table.partitions.iter().find(|p| p.index == 4).unwrap();
    assert!(state.end_lba * 512 > 254 * MIB, "{state:?}");
}

#[test]
#[ignore = "boots QEMU; needs out/qemu-x86_64 and the device build of init (see the file's doc)"]
fn a_changed_byte_in_the_root_refuses_the_slot_and_reboots() {
    let machine = Machine::new();
    // One byte inside the squashfs data of root-a (partition 2 starts at 9 MiB).
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(machine.disk())
        .unwrap();
    let table = ballast_disk::read_table(&mut disk, 512).unwrap();
    let root_a = table.partitions.iter().find(|p| p.index == 2).unwrap();
    use std::os::unix::fs::FileExt;
    let at = root_a.start_lba * 512 + 200_000;
    let mut byte = [0u8];
    disk.read_exact_at(&mut byte, at).unwrap();
    disk.write_all_at(&[byte[0] ^ 0xff], at).unwrap();
    drop(disk);

    let console = machine.boot();
    assert!(
        has(&console, "ballast-init: root slot a refused: "),
        "{console}"
    );
    assert!(has(&console, "do not match the root hash"), "{console}");
    assert!(has(&console, "reboot: Restarting system"), "{console}");
    assert!(!has(&console, "stage 2 on slot"), "{console}");
}

/// Everything that follows a console line containing `after`.
fn after<'a>(console: &'a str, after: &str) -> &'a str {
    console.find(after).map_or("", |at| &console[at..])
}

#[test]
#[ignore = "boots QEMU; needs out/qemu-x86_64, the device build of init and a static /bin/busybox (see the file's doc)"]
fn pid_1_restarts_a_dying_sysd_and_reboots_when_sysd_asks() {
    // First run: dies at once. Second run: asks PID 1 for a reboot, as sysd
    // does for `osctl reboot`, and stops on SIGTERM.
    let mut machine = Machine::with_sysd(Some(
        "if [ ! -e /run/sysd-ran ]; then : > /run/sysd-ran; exit 1; fi\n\
         trap 'echo fake-sysd: SIGTERM; exit 0' TERM\n\
         /bin/busybox sleep 1\n\
         kill -INT 1\n\
         while :; do /bin/busybox sleep 1; done\n",
    ));
    machine.cmdline = machine.cmdline.replace(" ballast.debug=poweroff", "");
    let console = machine.boot();
    assert!(!console.contains("Kernel panic"), "{console}");
    let story = after(&console, "stage 2 on slot a");
    let mut rest = story;
    for line in [
        "ballast-init: started /usr/lib/ballast/sysd (pid ",
        "ballast-init: sysd (pid ",
        "died: exit status 1 after ",
        "; restarting it in 1.0 s",
        "ballast-init: started /usr/lib/ballast/sysd (pid ",
        "ballast-init: SIGINT (reboot request or ctrl-alt-del): orderly reboot",
        "ballast-init: stopping sysd (pid ",
        "fake-sysd: SIGTERM",
        "ballast-init: sysd stopped after ",
        "ballast-init: /state is read-only; it is safe to power off",
        "ballast-init: reboot",
        "reboot: Restarting system",
    ] {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("no {line:?} in order after stage 2:\n{story}"));
        rest = &rest[at + line.len()..];
    }
    println!("{story}");
    // sysd's exit woke PID 1 (SIGCHLD), it did not sit out the 10 s.
    assert!(!has(story, "did not stop within"), "{story}");

    // The death is on state, in init.log, with the boot's number.
    let mut disk = std::fs::File::open(machine.disk()).unwrap();
    let table = ballast_disk::read_table(&mut disk, 512).unwrap();
    let state = table.partitions.iter().find(|p| p.index == 4).unwrap();
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0u8; ((state.end_lba + 1 - state.start_lba) * 512) as usize];
    disk.read_exact_at(&mut bytes, state.start_lba * 512)
        .unwrap();
    let state_img = machine.dir.path().join("state-after.img");
    std::fs::write(&state_img, bytes).unwrap();
    let out = Command::new("debugfs")
        .args(["-R", "cat /ballast/init.log"])
        .arg(&state_img)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.lines()
            .any(|l| l.starts_with("boot=1 [") && l.contains("died: exit status 1 after")),
        "init.log:\n{log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "boots QEMU; needs out/qemu-x86_64, the device build of init and a static /bin/busybox (see the file's doc)"]
fn debug_poweroff_waits_for_sysd_to_be_ready_then_stops_it() {
    let machine = Machine::with_sysd(Some(
        "trap 'exit 0' TERM\n\
         echo \"fake-sysd: cgroup2 controllers: $(/bin/busybox cat /sys/fs/cgroup/cgroup.controllers)\"\n\
         /bin/busybox sleep 2\n\
         /bin/busybox mkdir -p /run/ballast\n\
         echo 'ballast-ready version=9.8.7 slot=a' > /run/ballast/ready\n\
         echo 'ballast-ready version=9.8.7 slot=a'\n\
         while :; do /bin/busybox sleep 1; done\n",
    ));
    let console = machine.boot();
    let story = after(&console, "stage 2 on slot a");
    let mut rest = story;
    for line in [
        "ballast-init: started /usr/lib/ballast/sysd (pid ",
        "ballast-init: ballast.debug=poweroff: waiting up to 180 s for sysd's ready line",
        "ballast-ready version=9.8.7 slot=a",
        "ballast-init: ballast.debug=poweroff: sysd is ready: orderly poweroff",
        "ballast-init: sysd stopped after ",
        "ballast-init: poweroff",
        "reboot: Power down",
    ] {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("no {line:?} in order after stage 2:\n{story}"));
        rest = &rest[at + line.len()..];
    }
    println!("{story}");
    // PID 1 mounted cgroup v2 for sysd's container limits.
    let cgroup = story
        .lines()
        .find(|l| l.starts_with("fake-sysd: cgroup2 controllers: "))
        .unwrap_or_else(|| panic!("{story}"));
    assert!(
        cgroup.contains("memory") && cgroup.contains("pids"),
        "{cgroup}"
    );
}
