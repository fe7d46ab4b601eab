//! Story: a user of the default image runs containers with Docker over SSH,
//! as on any container host. They load an image (built here from Debian's
//! static busybox, in `docker save` format), run a command in it, keep data
//! in a named volume across a reboot, publish a port and reach it, and find
//! Docker's data root on the state partition. The minimal image
//! (`engine = "none"`) still boots to ready; both images' sizes are checked
//! against the targets.

mod common;

use common::vm::{free_port, keyed_build, Machine, Ssh};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const BOARD: &str = "qemu-arm64";
const IMAGE: &str = "ballast-test/busybox:1";

// --- a `docker save` tarball of Debian's static busybox --------------------

/// A ustar archive in memory: directories, regular files, symlinks.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn header(&mut self, name: &str, mode: u32, size: usize, kind: u8, link: &str) {
        assert!(
            name.len() < 100 && link.len() < 100,
            "short names only: {name}"
        );
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |field: &mut [u8], v: u64| {
            let s = format!("{:0width$o}", v, width = field.len() - 1);
            field[..s.len()].copy_from_slice(s.as_bytes());
        };
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size as u64);
        octal(&mut h[136..148], 0);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.0.extend_from_slice(&h);
    }

    fn dir(&mut self, name: &str) {
        self.header(&format!("{name}/"), 0o755, 0, b'5', "");
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.header(name, mode, data.len(), b'0', "");
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0, pad));
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.header(name, 0o777, 0, b'2', target);
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0, 1024));
        self.0
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Debian's busybox-static for arm64, fetched and checked by `ballast fetch`.
fn static_busybox(work: &Path) -> Vec<u8> {
    let out = common::ballast()
        .args(["fetch", "--arch", "arm64", "--json", "busybox-static"])
        .stderr(Stdio::inherit())
        .output()
        .expect("running ballast fetch");
    assert!(out.status.success(), "ballast fetch busybox-static failed");
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("ballast fetch --json prints JSON");
    let deb = json["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "busybox-static"))
        .and_then(|p| p["path"].as_str())
        .unwrap_or_else(|| panic!("no busybox-static in {json}"));
    let dest = work.join("busybox-static");
    ballast_debarchive::unpack::unpack_deb(Path::new(deb), &dest, &|_| true)
        .expect("unpacking busybox-static");
    let bin = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| dest.join(p))
        .find(|p| p.is_file())
        .expect("busybox-static has bin/busybox");
    let bytes = std::fs::read(bin).expect("reading busybox");
    // A static ELF for aarch64 (e_machine 183).
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([bytes[18], bytes[19]]), 183);
    bytes
}

/// The image as `docker save` writes it: one layer, its config, manifest.json.
fn image_tarball(busybox: &[u8]) -> Vec<u8> {
    let mut layer = Tar::default();
    for d in ["bin", "www", "tmp", "proc", "sys", "dev", "etc"] {
        layer.dir(d);
    }
    layer.file("bin/busybox", 0o755, busybox);
    for applet in ["sh", "echo", "cat", "httpd", "wget", "ls", "sleep"] {
        layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer.file("www/index.html", 0o644, b"hello from a ballast container\n");
    let layer = layer.finish();
    let diff_id = format!("sha256:{}", sha256_hex(&layer));
    let config = serde_json::json!({
        "architecture": "arm64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "ballast tests/docker.rs"}],
    })
    .to_string();
    let config_name = format!("{}.json", sha256_hex(config.as_bytes()));
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [IMAGE],
        "Layers": ["layer/layer.tar"],
    }])
    .to_string();
    let mut tar = Tar::default();
    tar.file(&config_name, 0o644, config.as_bytes());
    tar.dir("layer");
    tar.file("layer/layer.tar", 0o644, &layer);
    tar.file("manifest.json", 0o644, manifest.as_bytes());
    tar.finish()
}

// --- builds -----------------------------------------------------------------

/// The disk image compressed with zstd -19, as a release publishes it.
fn zstd19_size(disk: &Path) -> u64 {
    struct Count(u64);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut enc = zstd::stream::Encoder::new(Count(0), 19).expect("zstd encoder");
    enc.multithread(2).expect("zstd threads");
    let mut f = std::fs::File::open(disk).expect("opening the disk image");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("reading the disk image");
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n]).expect("compressing");
    }
    enc.finish().expect("zstd finish").0
}

fn disk_of(built: &serde_json::Value) -> PathBuf {
    PathBuf::from(
        built["artifacts"]["disk"]
            .as_str()
            .unwrap_or_else(|| panic!("no disk artifact in {built}")),
    )
}

const MB: f64 = 1_000_000.0;

#[test]
fn qemu_arm64_docker_loads_runs_keeps_volumes_and_publishes_ports() {
    let work = common::workdir("docker-arm64");
    let (key, out, built) = keyed_build(BOARD, &work, &[]);
    let version = built["version"].as_str().expect("version").to_owned();
    let with_docker = zstd19_size(&disk_of(&built));
    eprintln!(
        "docker: default image (engine docker) {:.1} MB with zstd -19",
        with_docker as f64 / MB
    );
    assert!(
        (with_docker as f64) <= 120.0 * MB,
        "image with Docker is {with_docker} bytes compressed, over the 120 MB target"
    );
    let tarball = image_tarball(&static_busybox(&work));

    let port = free_port();
    let mut vm = Machine::boot(BOARD, &out, port, work.join("console-1.log"));
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
    let mut vm = Machine::boot(BOARD, &out, port, work.join("console-2.log"));
    vm.wait_for("ballast-ready", Duration::from_secs(600));
    let ready = vm.since_start();
    eprintln!("docker: second boot, QEMU start to ballast-ready: {ready:.1?}");
    let kept = ssh.ok(&format!("docker run --rm -v keep:/d {IMAGE} cat /d/f"));
    assert_eq!(kept.trim(), "kept-across-reboots");
    let _ = ssh.command("osctl poweroff").stdin(Stdio::null()).output();
    vm.wait_exit(Duration::from_secs(180));
}

#[test]
fn qemu_arm64_minimal_image_has_no_engine_and_boots_to_ready() {
    let work = common::workdir("docker-minimal-arm64");
    let image = common::root().join("images/minimal.toml");
    let (key, out, built) = keyed_build(BOARD, &work, &["--image", image.to_str().expect("utf-8")]);
    let base = zstd19_size(&disk_of(&built));
    eprintln!(
        "docker: minimal image (engine none) {:.1} MB with zstd -19",
        base as f64 / MB
    );
    assert!(
        (base as f64) <= 40.0 * MB,
        "minimal image is {base} bytes compressed, over the 40 MB target"
    );
    let port = free_port();
    let mut vm = Machine::boot(BOARD, &out, port, work.join("console.log"));
    vm.wait_for("ballast-ready", Duration::from_secs(420));
    let ssh = Ssh { key, port };
    let status = ssh.ok("osctl status --json");
    assert!(!status.contains("\"docker\""), "{status}");
    let which = ssh.ok("command -v docker dockerd || echo none");
    assert_eq!(which.trim(), "none");
    let _ = ssh.command("osctl poweroff").stdin(Stdio::null()).output();
    vm.wait_exit(Duration::from_secs(180));
}
