//! Story: an operator boots a diskless x86_64 machine over the network. They
//! write a netboot set with `ballast netboot`, and `ballast run --netboot`
//! plays the rack: QEMU's DHCP/TFTP hands `boot.ipxe` to the NIC's iPXE ROM,
//! iPXE fetches the kernel and initramfs over HTTP, and init fetches the root
//! into RAM, verifies it and reaches `ballast-ready ... slot=net`; SSH works
//! and the state is in RAM. The same machine is an installer (`ballast netboot
//! --install /dev/vda`, `ballast run --blank-disk`): once its checks are done
//! and the set's manifest is served, sysd's unattended install writes the
//! install image from the set to its blank disk and reboots; the disk alone
//! then boots to slot A. A base URL that is not http is refused, and a
//! tampered root image, fetched with an address stage 1 leased by DHCP
//! itself, is refused on the console and never booted. The x86_64 UKI is read
//! back with GNU binutils. An arm64 machine boots the set's UKI through
//! AAVMF's own PXE (no iPXE) to `ballast-ready ... slot=net`.

mod common;

use common::vm::{free_port, Machine, Ssh};
use std::path::Path;
use std::time::Duration;

/// Each wait for a boot's console line. A network boot is ready in 20 to
/// 40 s under TCG on two loaded cores; a boot that is stuck should fail the
/// story in minutes, not hold a CI run for a quarter of an hour.
const READY: Duration = Duration::from_secs(300);

/// `ballast netboot` from the shared build; returns its --json.
fn netboot(
    board: &str,
    build: &Path,
    base_url: &str,
    out: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let output = common::ballast()
        .args(["netboot", "--board", board, "--build"])
        .arg(build)
        .args(extra)
        .args(["--base-url", base_url, "--json", "--out"])
        .arg(out)
        .output()
        .expect("running ballast netboot");
    assert!(
        output.status.success(),
        "ballast netboot failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("ballast netboot --json")
}

fn boot(
    board: &str,
    built: &common::Built,
    set: &Path,
    ssh_port: u16,
    log: std::path::PathBuf,
    extra: &[&str],
) -> Machine {
    let mut args = vec!["--netboot".as_ref(), set.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    Machine::start_with(board, &built.out, ssh_port, log, false, &args)
}

/// The x86_64 UKI as GNU binutils reads it: the stub's sections and ours, and
/// the command line inside pins the root hash and leases by DHCP (UEFI's PXE
/// fills in no address).
fn check_uki_with_binutils(json: &serde_json::Value, work: &Path) {
    let uki = json["files"]["uki"].as_str().expect("a UKI path");
    let out = std::process::Command::new("objdump")
        .args(["-h", uki])
        .output()
        .expect("running objdump (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "objdump -h {uki}: {text}");
    assert!(text.contains("file format pei-x86-64"), "{text}");
    for section in [
        ".text", ".sdmagic", ".osrel", ".cmdline", ".initrd", ".linux",
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(section)),
            "no {section} in {uki}: {text}"
        );
    }
    let cmdline_file = work.join("uki.cmdline");
    let st = std::process::Command::new("objcopy")
        .args(["-O", "binary", "--only-section=.cmdline", uki])
        .arg(&cmdline_file)
        .status()
        .expect("running objcopy");
    assert!(st.success());
    let inside = std::fs::read_to_string(&cmdline_file).expect("the .cmdline section");
    assert_eq!(Some(inside.as_str()), json["uki_cmdline"].as_str());
    let hash = json["root_hash"].as_str().expect("a root hash");
    assert!(
        inside.contains(&format!("ballast.verity={hash}")),
        "{inside}"
    );
    assert!(!inside.contains("ballast.root.ip="), "{inside}");
}

#[test]
fn x86_64_boots_diskless_over_pxe_and_refuses_a_tampered_root() {
    let _story = common::story();
    let work = common::workdir("netboot-x86_64");
    let built = common::Build::new("qemu-x86_64")
        .image("minimal")
        .version("0.1.0")
        .ssh_key()
        .shared();

    // Not an http URL: refused before anything is written.
    let bad = common::ballast()
        .args(["netboot", "--board", "qemu-x86_64", "--build"])
        .arg(&built.out)
        .args(["--base-url", "ftp://10.0.2.2/x", "--out"])
        .arg(work.join("never"))
        .output()
        .expect("running ballast netboot");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("is not an http URL"), "{err}");
    assert!(!work.join("never").exists());

    let http = free_port();
    let base = format!("http://10.0.2.2:{http}");
    let set = work.join("set");
    let json = netboot(
        "qemu-x86_64",
        &built.out,
        &base,
        &set,
        &["--install", "/dev/vda"],
    );
    for key in [
        "vmlinuz",
        "initrd",
        "root",
        "ipxe",
        "uki",
        "install_image",
        "install_manifest",
    ] {
        let path = json["files"][key].as_str().expect("a file path");
        assert!(Path::new(path).is_file(), "{key}: {path}");
    }
    let cmdline = json["cmdline"].as_str().expect("a command line");
    assert!(
        cmdline.contains(&format!("ballast.root={base}/root.img")),
        "{cmdline}"
    );
    assert!(cmdline.contains("ballast.verity="), "{cmdline}");
    assert!(
        cmdline.contains(&format!(
            "ballast.install=/dev/vda ballast.install.image={base}/install.img.zst"
        )),
        "{cmdline}"
    );
    check_uki_with_binutils(&json, &work);

    // The manifest is held back until the diskless checks are done (a rack
    // whose image is not published yet): the installer waits for it.
    let manifest = set.join("install.img.zst.manifest");
    let held = set.join(".held.manifest");
    std::fs::rename(&manifest, &held).expect("holding the manifest back");
    let root_hash = json["root_hash"].as_str().expect("a root hash");
    assert_eq!(Some(root_hash), built.json["root_hash"].as_str());

    let ssh_port = free_port();
    let mut m = boot(
        "qemu-x86_64",
        &built,
        &set,
        ssh_port,
        work.join("net.log"),
        &["--blank-disk", "8G"],
    );
    m.wait_for("netboot: fetching", READY);
    m.wait_for("(100 %)", READY);
    let verified = m.wait_for("netboot: every block of the root matches", READY);
    assert!(verified.contains(&root_hash[..16]), "{verified}");
    let ready = m.wait_for("ballast-ready", READY);
    assert!(ready.contains("slot=net"), "{ready}");
    assert!(
        ready.contains(&format!("version={}", built.version())),
        "{ready}"
    );
    eprintln!("x86_64 PXE: QEMU start to ready in {:.1?}", m.since_start());
    let ssh = Ssh {
        key: built.key.clone().expect("a baked key"),
        port: ssh_port,
    };
    let status = ssh.status();
    assert_eq!(status["live"], true, "{status}");
    let state = ssh.ok("findmnt -n -o FSTYPE --target /state");
    assert!(state.contains("tmpfs"), "state is on {state}");
    let root = ssh.ok("findmnt -n -o SOURCE,FSTYPE /");
    assert!(root.contains("squashfs"), "root is {root}");
    let mem = ssh.ok("grep -E 'MemTotal|MemAvailable' /proc/meminfo");
    eprintln!("x86_64 PXE: after ready: {}", mem.replace('\n', "; "));

    // The unattended install from the set onto the blank disk.
    m.wait_for("ballast-install waiting for", READY);
    std::fs::rename(&held, &manifest).expect("publishing the manifest");
    let started = std::time::Instant::now();
    let done = m.wait_for("ballast-install done", READY);
    assert!(done.contains("device=/dev/vda"), "{done}");
    assert!(
        done.contains(&format!("version={}", built.version())),
        "{done}"
    );
    eprintln!(
        "x86_64 PXE install: {done} ({:.1?} after the manifest)",
        started.elapsed()
    );
    m.wait_for("ballast-install rebooting", Duration::from_secs(120));
    m.wait_exit(Duration::from_secs(300));
    drop(m);

    // The disk alone, without the network boot: slot A of the installed version.
    let mut target = set.clone().into_os_string();
    target.push(".target.img");
    let port = free_port();
    let mut m = Machine::boot_disk(
        "qemu-x86_64",
        &built.out,
        Path::new(&target),
        port,
        work.join("disk.log"),
    );
    m.wait_for(
        &format!("ballast-ready version={} slot=a", built.version()),
        READY,
    );
    eprintln!(
        "x86_64 installed disk: QEMU start to ready in {:.1?}",
        m.since_start()
    );
    drop(m);

    // The same set with one byte of the root changed (a copy: root.img is
    // hard-linked from the shared build).
    let tampered = work.join("tampered");
    let http = free_port();
    // Stage 1 leases its own address here (`--dhcp`: no ballast.root.ip=).
    let json = netboot(
        "qemu-x86_64",
        &built.out,
        &format!("http://10.0.2.2:{http}"),
        &tampered,
        &["--dhcp"],
    );
    let cmdline = json["cmdline"].as_str().expect("a command line");
    assert!(!cmdline.contains("ballast.root.ip="), "{cmdline}");
    let root = tampered.join("root.img");
    let mut bytes = std::fs::read(&root).expect("reading root.img");
    let at = bytes.len() / 3;
    bytes[at] ^= 0x55;
    std::fs::remove_file(&root).expect("unlinking the hard link");
    std::fs::write(&root, &bytes).expect("writing the tampered root.img");
    let mut m = boot(
        "qemu-x86_64",
        &built,
        &tampered,
        free_port(),
        work.join("tampered.log"),
        &[],
    );
    let leased = m.wait_for("(DHCP)", READY);
    assert!(
        leased.contains(" is 10.0.2.15/255.255.255.0 via 10.0.2.2"),
        "{leased}"
    );
    let refused = m.wait_for("root slot net refused", READY);
    assert!(
        refused.contains("does not match the root hash"),
        "{refused}"
    );
    m.wait_exit(Duration::from_secs(300));
    assert!(
        !m.console.iter().any(|l| l.contains("ballast-ready")),
        "a tampered root booted"
    );
}

/// Story: an arm64 rack machine boots over the network with no iPXE, the way
/// arm64 servers do: AAVMF's own PXE client gets the set's UKI `ballast.efi`
/// from QEMU's TFTP and starts it; the systemd stub inside starts the kernel
/// with the initramfs and the command line that pins the root hash; stage 1
/// leases an address by DHCP, fetches the root over HTTP and verifies it.
/// A local disk with an ext4 labelled `ballast-state` holds its state.
#[test]
fn arm64_boots_the_uki_over_uefi_pxe() {
    let _story = common::story();
    let work = common::workdir("netboot-arm64");
    let built = common::Build::new("qemu-arm64")
        .image("minimal")
        .version("0.1.0")
        .ssh_key()
        .shared();
    let http = free_port();
    let set = work.join("set");
    let json = netboot(
        "qemu-arm64",
        &built.out,
        &format!("http://10.0.2.2:{http}"),
        &set,
        &[],
    );
    let uki = json["files"]["uki"].as_str().expect("a UKI path");
    let uki_bytes = std::fs::metadata(uki).expect("the UKI").len();
    // GNU binutils' arm64 reader (from gcc-aarch64-linux-gnu, which
    // scripts/setup installs) agrees on the sections.
    let out = std::process::Command::new("aarch64-linux-gnu-objdump")
        .args(["-h", uki])
        .output()
        .expect("running aarch64-linux-gnu-objdump");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "objdump -h {uki}: {text}");
    assert!(text.contains("file format pei-aarch64-little"), "{text}");
    for section in [".text", ".data", ".osrel", ".cmdline", ".initrd", ".linux"] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(section)),
            "no {section} in {uki}: {text}"
        );
    }
    // A local disk with an ext4 labelled ballast-state: the diskless
    // machine keeps its state there instead of in RAM.
    let state = work.join("state.img");
    let st = std::process::Command::new("truncate")
        .args(["-s", "64M"])
        .arg(&state)
        .status()
        .expect("truncate");
    assert!(st.success());
    let st = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "ballast-state"])
        .arg(&state)
        .status()
        .expect("running mkfs.ext4 (e2fsprogs)");
    assert!(st.success());
    let ssh_port = free_port();
    let mut m = boot(
        "qemu-arm64",
        &built,
        &set,
        ssh_port,
        work.join("net.log"),
        &["--drive", state.to_str().expect("a UTF-8 path")],
    );
    m.wait_for("Downloading NBP file", READY);
    let fetched = m.since_start();
    m.wait_for("NBP file downloaded successfully", READY);
    let tftp = m.since_start() - fetched;
    eprintln!("arm64 PXE: {uki_bytes} bytes of ballast.efi over TFTP in {tftp:.1?}");
    // The systemd stub handed the kernel the UKI's .initrd.
    m.wait_for(
        "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID",
        READY,
    );
    let leased = m.wait_for("(DHCP)", READY);
    assert!(
        leased.contains(" is 10.0.2.15/255.255.255.0 via 10.0.2.2"),
        "{leased}"
    );
    let root_hash = json["root_hash"].as_str().expect("a root hash");
    let verified = m.wait_for("netboot: every block of the root matches", READY);
    assert!(verified.contains(&root_hash[..16]), "{verified}");
    let ready = m.wait_for("ballast-ready", READY);
    assert!(
        ready.contains(&format!("version={} slot=net", built.version())),
        "{ready}"
    );
    eprintln!("arm64 PXE: QEMU start to ready in {:.1?}", m.since_start());
    let ssh = Ssh {
        key: built.key.clone().expect("a baked key"),
        port: ssh_port,
    };
    let status = ssh.status();
    assert_eq!(status["live"], true, "{status}");
    let on = ssh.ok("findmnt -n -o SOURCE,FSTYPE --target /state");
    assert!(
        on.contains("/dev/vda") && on.contains("ext4"),
        "state is on {on}"
    );
    // Stage 1 made the /etc overlay's and /var's directories on the disk.
    let listing = ssh.ok("ls /state");
    for dir in ["etc", "var"] {
        assert!(
            listing.split_whitespace().any(|w| w == dir),
            "no {dir} on the state disk: {listing}"
        );
    }
}
