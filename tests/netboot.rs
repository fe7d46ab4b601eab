//! Story: an operator boots a diskless x86_64 machine over the network. They
//! write a netboot set with `ballast netboot`, and `ballast run --netboot`
//! plays the rack: QEMU's DHCP/TFTP hands `boot.ipxe` to the NIC's iPXE ROM,
//! iPXE fetches the kernel and initramfs over HTTP, and init fetches the root
//! into RAM, verifies it and reaches `ballast-ready ... slot=net`; SSH works
//! and the state is in RAM. A base URL that is not http is refused, and a
//! tampered root image is refused on the console and never booted.

mod common;

use common::vm::{free_port, Machine, Ssh};
use std::path::Path;
use std::time::Duration;

const READY: Duration = Duration::from_secs(900);

/// `ballast netboot` from the shared build; returns its --json.
fn netboot(build: &Path, base_url: &str, out: &Path) -> serde_json::Value {
    let output = common::ballast()
        .args(["netboot", "--board", "qemu-x86_64", "--build"])
        .arg(build)
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

fn boot(built: &common::Built, set: &Path, ssh_port: u16, log: std::path::PathBuf) -> Machine {
    Machine::start_with(
        "qemu-x86_64",
        &built.out,
        ssh_port,
        log,
        false,
        &["--netboot".as_ref(), set.as_os_str()],
    )
}

#[test]
fn x86_64_boots_diskless_over_pxe_and_refuses_a_tampered_root() {
    let _story = common::story();
    let work = common::workdir("netboot-x86_64");
    let built = common::Build::new("qemu-x86_64")
        .image("minimal")
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
    let json = netboot(&built.out, &base, &set);
    for key in ["vmlinuz", "initrd", "root", "ipxe"] {
        let path = json["files"][key].as_str().expect("a file path");
        assert!(Path::new(path).is_file(), "{key}: {path}");
    }
    let cmdline = json["cmdline"].as_str().expect("a command line");
    assert!(
        cmdline.contains(&format!("ballast.root={base}/root.img")),
        "{cmdline}"
    );
    assert!(cmdline.contains("ballast.verity="), "{cmdline}");
    let root_hash = json["root_hash"].as_str().expect("a root hash");
    assert_eq!(Some(root_hash), built.json["root_hash"].as_str());

    let ssh_port = free_port();
    let mut m = boot(&built, &set, ssh_port, work.join("net.log"));
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
    drop(m);

    // The same set with one byte of the root changed (a copy: root.img is
    // hard-linked from the shared build).
    let tampered = work.join("tampered");
    let http = free_port();
    netboot(&built.out, &format!("http://10.0.2.2:{http}"), &tampered);
    let root = tampered.join("root.img");
    let mut bytes = std::fs::read(&root).expect("reading root.img");
    let at = bytes.len() / 3;
    bytes[at] ^= 0x55;
    std::fs::remove_file(&root).expect("unlinking the hard link");
    std::fs::write(&root, &bytes).expect("writing the tampered root.img");
    let mut m = boot(&built, &tampered, free_port(), work.join("tampered.log"));
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
