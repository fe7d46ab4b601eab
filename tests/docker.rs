//! Story: a user of the default image runs containers with Docker over SSH,
//! as on any container host. They load an image (built here from Debian's
//! static busybox, in `docker save` format), run a command in it, keep data
//! in a named volume across a reboot, publish a port and reach it, and find
//! Docker's data root on the state partition. The image's compressed size is
//! a benchmark's business (`ballast bench size --board B`), not a test's.

mod common;

use common::oci::{image_tarball, static_busybox};
use common::vm::{free_port, Machine, Ssh};

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::{Duration, Instant};

const BOARD: &str = "qemu-arm64";
const IMAGE: &str = "ballast-test/busybox:1";

#[test]
fn qemu_arm64_docker_loads_runs_keeps_volumes_and_publishes_ports() {
    let _story = common::story();
    let work = common::workdir("docker-arm64");
    // Engine settings from a first-boot config (a NoCloud seed), on the
    // default image the cloud-init story boots too.
    let ud = work.join("user-data.yaml");
    std::fs::write(
        &ud,
        "#cloud-config\nballast:\n  engine:\n    registry_mirrors: [http://10.0.2.2:5000]\n    insecure_registries: [10.0.2.2:5000]\n",
    )
    .expect("writing user-data");
    let md = work.join("meta-data");
    std::fs::write(&md, "instance-id: docker-1\n").expect("writing meta-data");
    let seed = common::seed_image(&ud, &md, &[], &work.join("seed.img"));
    let port = free_port();
    let shared = common::Build::new(BOARD)
        .version("0.1.0")
        .ssh_key()
        .shared();
    let (key, out, built) = (shared.ssh_key(), shared.out.clone(), shared.json.clone());
    let disk = shared.vm_disk(&work, "machine");
    let boot = |log: &str| {
        Machine::start_with(
            BOARD,
            &out,
            port,
            work.join(log),
            false,
            &[disk.as_os_str(), OsStr::new("--seed"), seed.as_os_str()],
        )
    };
    let version = built["version"].as_str().expect("version").to_owned();
    let tarball = image_tarball(&static_busybox(&work), IMAGE);

    let mut vm = boot("console-1.log");
    vm.wait_for("ballast-ready", Duration::from_secs(600));
    let ready = vm.since_start();
    eprintln!("docker: QEMU start to ballast-ready (engine answering): {ready:.1?}");
    let ssh = Ssh { key, port };

    // ballast-ready waited for the engine: it answers at once, and reports
    // itself as the engine container sysd runs.
    let status = ssh.ok("osctl status --json");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["version"], version, "{status}");
    let docker = status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "docker"))
        .unwrap_or_else(|| panic!("no docker service: {status}"));
    assert_eq!(docker["state"], "healthy", "{status}");
    let groups = ssh.ok("id -Gn");
    assert!(groups.split_whitespace().any(|g| g == "docker"), "{groups}");

    // docker load, then run: as user ballast, without sudo.
    let loaded = ssh.ok_with_input("docker load", &tarball);
    assert!(loaded.contains(IMAGE), "{loaded}");
    let said = ssh.ok(&format!("docker run --rm {IMAGE} echo ballast-says-hello"));
    assert_eq!(said.trim(), "ballast-says-hello");

    // A named volume, written by one container.
    ssh.ok("docker volume create keep");
    ssh.ok(&format!(
        "docker run --rm -v keep:/d {IMAGE} sh -c 'echo kept-across-reboots > /d/f'"
    ));

    // The data root is /var/lib/docker, and it is the state partition: the
    // volume's file is there under /state, which is ext4 on the disk.
    let root = ssh.ok("docker info --format '{{.DockerRootDir}} {{.Driver}} {{.CgroupVersion}}'");
    assert_eq!(root.trim(), "/var/lib/docker overlay2 2");
    // The config's registry mirror and insecure registry reached dockerd.
    let reg = ssh.ok("docker info --format '{{json .RegistryConfig}}'");
    let reg: serde_json::Value = serde_json::from_str(&reg).expect("RegistryConfig JSON");
    assert_eq!(
        reg["Mirrors"],
        serde_json::json!(["http://10.0.2.2:5000/"]),
        "{reg}"
    );
    assert_eq!(
        reg["IndexConfigs"]["10.0.2.2:5000"]["Secure"], false,
        "{reg}"
    );
    let fs = ssh.ok("findmnt -n -o SOURCE,FSTYPE --target /state");
    let mut fs = fs.split_whitespace();
    let (source, fstype) = (fs.next().unwrap_or(""), fs.next().unwrap_or(""));
    assert_eq!(fstype, "ext4", "state is {source} {fstype}");
    assert!(source.starts_with("/dev/vd"), "state is {source} {fstype}");
    let on_state = ssh.ok("sudo cat /state/var/lib/docker/volumes/keep/_data/f");
    assert_eq!(on_state.trim(), "kept-across-reboots");

    // A published port answers from inside the VM (the admin shell). No -T:
    // bookworm's busybox wget crashes with -q -T (SIGSEGV); `timeout` bounds it.
    ssh.ok(&format!(
        "docker run -d --name web -p 8080:80 {IMAGE} httpd -f -p 80 -h /www"
    ));
    let start = Instant::now();
    let page = loop {
        let out = ssh
            .command("timeout 10 busybox wget -q -O- http://127.0.0.1:8080/")
            .stdin(Stdio::null())
            .output()
            .expect("ssh");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "port 8080 never answered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(page.trim(), "hello from a ballast container");
    // Through Docker's NAT too: the bridge address of the host, not loopback.
    let docker0 = ssh.ok("ip -4 -o addr show dev docker0");
    let gw = docker0
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 address on docker0: {docker0}"))
        .to_owned();
    let nat = ssh.ok(&format!(
        "docker run --rm {IMAGE} wget -q -O- http://{}:8080/",
        gw.trim()
    ));
    assert_eq!(nat.trim(), "hello from a ballast container");
    ssh.ok("docker rm -f web");

    // Reboot: the image and the volume are still there.
    let _ = ssh.command("osctl reboot").stdin(Stdio::null()).output();
    let status = vm.wait_exit(Duration::from_secs(180));
    assert!(status.success(), "QEMU exited with {status}");
    drop(vm);
    let mut vm = boot("console-2.log");
    vm.wait_for("ballast-ready", Duration::from_secs(600));
    let ready = vm.since_start();
    eprintln!("docker: second boot, QEMU start to ballast-ready: {ready:.1?}");
    let kept = ssh.ok(&format!("docker run --rm -v keep:/d {IMAGE} cat /d/f"));
    assert_eq!(kept.trim(), "kept-across-reboots");
    let _ = ssh.command("osctl poweroff").stdin(Stdio::null()).output();
    vm.wait_exit(Duration::from_secs(180));
}
