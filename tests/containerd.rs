//! Story: a user picks containerd instead of Docker Engine for their image
//! (`images/containerd.toml`, `engine = "containerd"`). The machine comes up
//! ready only once containerd serves its API; over SSH, `ctr` (the CLI Debian
//! ships with containerd) talks to it at its default address, imports an image
//! (Debian's static busybox, `docker save` format, no registry) and runs a
//! command in it; containerd's content store is on the state partition.

mod common;

use common::oci::{image_tarball, static_busybox};
use common::vm::{free_port, keyed_build, Machine, Ssh};

use std::process::Stdio;
use std::time::Duration;

const BOARD: &str = "qemu-arm64";
const TAG: &str = "ballast-test/busybox:1";

#[test]
fn qemu_arm64_containerd_imports_and_runs_an_image_with_ctr() {
    let _story = common::story();
    let work = common::workdir("containerd-arm64");
    let image = common::root().join("images/containerd.toml");
    let (key, out, built) = keyed_build(BOARD, &work, &["--image", image.to_str().expect("utf-8")]);
    let version = built["version"].as_str().expect("version").to_owned();
    let tarball = image_tarball(&static_busybox(&work), TAG);

    let port = free_port();
    let mut vm = Machine::boot(BOARD, &out, port, work.join("console.log"));
    vm.wait_for("ballast-ready", Duration::from_secs(600));
    let ready = vm.since_start();
    eprintln!("containerd: QEMU start to ballast-ready (API socket accepting): {ready:.1?}");
    let ssh = Ssh { key, port };

    // ballast-ready waited for the engine, which sysd runs as `containerd`;
    // there is no Docker on this image.
    let status = ssh.ok("osctl status --json");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["version"], version, "{status}");
    let services = status["services"].as_array().expect("services");
    let engine = services
        .iter()
        .find(|s| s["name"] == "containerd")
        .unwrap_or_else(|| panic!("no containerd service: {status}"));
    assert_eq!(engine["state"], "healthy", "{status}");
    assert!(!services.iter().any(|s| s["name"] == "docker"), "{status}");
    let which = ssh.ok("command -v dockerd docker || echo none");
    assert_eq!(which.trim(), "none");

    // ctr finds the daemon at its default address, as root and as user
    // ballast (member of the engine group that owns the socket).
    let groups = ssh.ok("id -Gn");
    assert!(
        groups.split_whitespace().any(|g| g == "containerd"),
        "{groups}"
    );
    for ctr in ["sudo ctr", "ctr"] {
        let v = ssh.ok(&format!("{ctr} version"));
        let server = v
            .split("Server:")
            .nth(1)
            .unwrap_or_else(|| panic!("`{ctr} version` shows no server: {v}"));
        assert!(server.contains("Version:"), "{v}");
        assert!(server.contains("1.6."), "bookworm's containerd is 1.6: {v}");
    }

    // Import the tarball (stdin), then run a command in the image.
    let imported = ssh.ok_with_input("sudo ctr image import -", &tarball);
    eprintln!("containerd: ctr image import: {}", imported.trim());
    let listed = ssh.ok("sudo ctr image ls");
    let row = listed
        .lines()
        .find(|l| l.contains(TAG))
        .unwrap_or_else(|| panic!("{TAG} is not listed after the import: {listed}"));
    let mut cols = row.split_whitespace();
    let name = cols.next().expect("image name").to_owned();
    let digest = cols
        .find(|c| c.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {row}"))
        .trim_start_matches("sha256:")
        .to_owned();
    let said = ssh.ok(&format!("sudo ctr run --rm {name} t1 echo hello"));
    assert_eq!(said.trim(), "hello");
    // --rm removed the container; the image stays.
    let containers = ssh.ok("sudo ctr containers ls -q");
    assert!(
        !containers.lines().any(|l| l.trim() == "t1"),
        "{containers}"
    );

    // containerd's root is /var/lib/containerd, which is the state partition
    // (ext4 on the disk): the image's manifest blob is there under /state.
    let fs = ssh.ok("findmnt -n -o SOURCE,FSTYPE --target /state");
    let mut fs = fs.split_whitespace();
    let (source, fstype) = (fs.next().unwrap_or(""), fs.next().unwrap_or(""));
    assert_eq!(fstype, "ext4", "state is {source} {fstype}");
    assert!(source.starts_with("/dev/vd"), "state is {source} {fstype}");
    ssh.ok(&format!(
        "sudo test -s /state/var/lib/containerd/io.containerd.content.v1.content/blobs/sha256/{digest}"
    ));

    let _ = ssh.command("osctl poweroff").stdin(Stdio::null()).output();
    vm.wait_exit(Duration::from_secs(180));
}
