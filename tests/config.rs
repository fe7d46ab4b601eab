//! First-boot config, end to end on qemu-arm64 (issue 7): a NoCloud seed made
//! with `ballast seed` sets the host name and fqdn, adds a user who logs in
//! with their key, writes files (modes, owners, base64, an append), runs both
//! runcmd forms once per instance and starts an extra system container; the
//! same document from the boot partition (`ballast build --user-data`) and
//! from `ballast.config=https://...` (served here over TLS; the CA comes from a
//! local seed's `ca_certs`, and a seed with another CA is refused with the URL
//! on the console) gives the same machine; a
//! broken document still boots to ready with the error on the console and in
//! `osctl status`, and password login is never offered.
//!
//! Run: `cargo test -p ballast --test config -- --nocapture` (about 15 min
//! under TCG: 2 builds, one of them shared with other stories, 7 boots). Uses
//! images/minimal.toml (no Docker engine).

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::vm::{free_port, ssh_as, Machine, Ssh};

const BOARD: &str = "qemu-arm64";

fn image() -> String {
    common::root()
        .join("images/minimal.toml")
        .to_string_lossy()
        .into_owned()
}

fn user_data(alice_pub: &str) -> String {
    format!(
        r#"#cloud-config
hostname: node1
fqdn: node1.example.test
users:
  - default
  - name: alice
    groups: [sudo]
    sudo: ALL=(ALL) NOPASSWD:ALL
    shell: /bin/bash
    ssh_authorized_keys:
      - {alice_pub}
write_files:
  - path: /state/cfg/motd
    content: "hello from cloud-config\n"
  - path: /state/cfg/secret
    encoding: b64
    content: czNjcmV0Cg==
    owner: alice:alice
    permissions: '0600'
  - path: /state/cfg/log
    content: "appended\n"
    append: true
runcmd:
  - echo "shell form on $(hostname)" >> /state/cfg/runs
  - [sh, -c, "echo list form >> /state/cfg/runs"]
ballast:
  network:
    interfaces:
      - name: eth0
        addresses: [10.0.2.15/24]
        gateway: 10.0.2.2
    dns:
      nameservers: [10.0.2.3]
      search: [example.test]
  system:
    - name: ticker
      command: [/bin/sh, -c, "while true; do echo tick > /state/.ticker && mv /state/.ticker /state/ticker; sleep 2; done"]
      mounts:
        - source: /state/cfg
          destination: /state
"#
    )
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).expect("writing a test file");
    path.to_path_buf()
}

fn seed(work: &Path, name: &str, user_data: &str, instance: &str) -> PathBuf {
    seed_as(work, name, user_data, instance, &[])
}

/// `seed` with more `ballast seed` arguments (`--iso9660`).
fn seed_as(work: &Path, name: &str, user_data: &str, instance: &str, extra: &[&str]) -> PathBuf {
    let ud = write(&work.join(format!("{name}.user-data")), user_data);
    let md = write(
        &work.join(format!("{name}.meta-data")),
        &format!("instance-id: {instance}\n"),
    );
    let extra: Vec<&OsStr> = extra.iter().map(OsStr::new).collect();
    common::seed_image(&ud, &md, &extra, &work.join(format!("{name}.img")))
}

struct Booted {
    vm: Machine,
    ssh: Ssh,
}

fn boot(out: &Path, key: &Path, log: PathBuf, extra: &[&OsStr]) -> Booted {
    let port = free_port();
    let mut vm = Machine::start_with(BOARD, out, port, log, false, extra);
    vm.wait_for("ballast-ready", Duration::from_secs(300));
    let ssh = Ssh {
        key: key.to_path_buf(),
        port,
    };
    Booted { vm, ssh }
}

fn poweroff(b: &mut Booted) {
    let _ = b.ssh.run("osctl poweroff");
    b.vm.wait_exit(Duration::from_secs(120));
}

fn assert_console(b: &Booted, needle: &str) {
    assert!(
        b.vm.console.iter().any(|l| l.contains(needle)),
        "no console line with {needle:?}:\n{}",
        b.vm.console.join("\n")
    );
}

/// Wait until the queued runcmd finished (it runs beside sshd).
fn wait_runcmd(ssh: &Ssh) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) {
        let out = ssh.run("test ! -e /state/ballast/config/runcmd.sh && test ! -e /state/ballast/config/runcmd.running");
        if out.status.success() {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("runcmd did not finish within 90 s");
}

/// What a user checks after first boot, as one text (compared across sources).
fn observe(b: &Booted, alice_key: &Path) -> String {
    wait_runcmd(&b.ssh);
    // The ticker container writes every 2 s, by rename, so a reader never
    // sees the file truncated.
    let start = Instant::now();
    while !b.ssh.run("test -f /state/cfg/ticker").status.success() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the config's ticker container never wrote /state/cfg/ticker: {}",
            b.ssh.ok("osctl status")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let text = b.ssh.ok("hostname; hostname -f; \
         stat -c '%n %a %U:%G' /state/cfg/motd /state/cfg/secret /state/cfg/log; \
         cat /state/cfg/motd /state/cfg/log /state/cfg/runs /state/cfg/ticker; \
         cat /etc/resolv.conf; \
         sudo cat /state/cfg/secret");
    let alice = ssh_as(
        "alice",
        alice_key,
        b.ssh.port,
        "id -un; id -Gn; cat /state/cfg/secret; sudo -n id -u; echo $SHELL",
    );
    assert!(
        alice.status.success(),
        "alice cannot log in with her key: {}",
        String::from_utf8_lossy(&alice.stderr)
    );
    let status = b.ssh.status();
    let ticker = status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "ticker"))
        .map(|s| s["state"].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|| "absent".into());
    format!(
        "{text}--- alice\n{}--- ticker {ticker}\n",
        String::from_utf8_lossy(&alice.stdout)
    )
}

fn assert_first_boot(seen: &str) {
    for want in [
        "node1\nnode1.example.test\n",
        "/state/cfg/motd 644 root:root\n",
        "/state/cfg/secret 600 alice:alice\n",
        "/state/cfg/log 644 root:root\n",
        "hello from cloud-config\nappended\n",
        "shell form on node1\nlist form\n",
        "tick\nnameserver 10.0.2.3\nsearch example.test\n",
        "s3cret\n--- alice\nalice\nalice sudo\ns3cret\n0\n/bin/bash\n",
        "--- ticker healthy\n",
    ] {
        assert!(seen.contains(want), "missing {want:?} in:\n{seen}");
    }
}

/// Password login is not offered at all: the server lists publickey only.
fn assert_no_password_login(port: u16) {
    let out = Command::new("ssh")
        .args(["-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "PubkeyAuthentication=no",
            "ballast@127.0.0.1",
            "true",
        ])
        .output()
        .expect("running ssh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "password login succeeded?");
    assert!(err.contains("Permission denied (publickey)"), "{err}");
}

#[test]
fn nocloud_seed_boot_partition_and_url_configure_the_machine() {
    let _story = common::story();
    let work = common::workdir("config");
    let image = image();
    let built = common::Build::new(BOARD)
        .image("minimal")
        .version("0.1.0")
        .ssh_key()
        .shared();
    let (key, out) = (built.ssh_key(), built.out.clone());
    // The machine of steps 1 to 3, booted again and again.
    let machine = built.vm_disk(&work, "machine");

    let alice_key = work.join("alice");
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f"])
        .arg(&alice_key)
        .status()
        .expect("ssh-keygen")
        .success());
    let alice_pub = std::fs::read_to_string(alice_key.with_extension("pub")).expect("alice.pub");
    let doc = user_data(alice_pub.trim());

    // 1. NoCloud seed, first boot.
    let s1 = seed(&work, "seed1", &doc, "i-1");
    let mut b = boot(
        &out,
        &key,
        work.join("boot1.log"),
        &[machine.as_os_str(), OsStr::new("--seed"), s1.as_os_str()],
    );
    assert_console(&b, "sysd: config: found CIDATA:");
    let first = observe(&b, &alice_key);
    assert_first_boot(&first);
    // osctl config apply --dry-run shows the change and changes nothing.
    let changed = doc
        .replace("hostname: node1", "hostname: node2")
        .replace("fqdn: node1.example.test\n", "");
    let dry = b
        .ssh
        .run_with_input("osctl config apply --dry-run -", changed.as_bytes());
    let dry_out = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{dry_out}{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(dry_out.contains("~ hostname: node1 -> node2"), "{dry_out}");
    assert_eq!(b.ssh.ok("hostname").trim(), "node1");
    poweroff(&mut b);

    // 2. Same seed again: nothing per-instance runs twice.
    let mut b = boot(
        &out,
        &key,
        work.join("boot2.log"),
        &[machine.as_os_str(), OsStr::new("--seed"), s1.as_os_str()],
    );
    wait_runcmd(&b.ssh);
    assert_eq!(
        b.ssh.ok("cat /state/cfg/runs"),
        "shell form on node1\nlist form\n"
    );
    assert_eq!(b.ssh.ok("cat /state/cfg/log"), "appended\n");
    assert_eq!(b.ssh.ok("hostname -f").trim(), "node1.example.test");
    poweroff(&mut b);

    // 3. A new instance id runs them again; this seed is iso9660 (cloud-localds'
    //    and genisoimage's format) instead of FAT.
    let s2 = seed_as(&work, "seed2", &doc, "i-2", &["--iso9660"]);
    let mut b = boot(
        &out,
        &key,
        work.join("boot3.log"),
        &[machine.as_os_str(), OsStr::new("--seed"), s2.as_os_str()],
    );
    assert_console(&b, "sysd: config: found CIDATA:");
    wait_runcmd(&b.ssh);
    assert_eq!(
        b.ssh.ok("cat /state/cfg/runs"),
        "shell form on node1\nlist form\nshell form on node1\nlist form\n"
    );
    assert_eq!(b.ssh.ok("cat /state/cfg/log"), "appended\nappended\n");
    poweroff(&mut b);

    // 4. A broken document on a fresh machine: ready anyway, the error on the
    //    console and in osctl status, no password login. (A bad value takes
    //    the same way from the same parser, whose messages
    //    osctl/tests/config_validate.rs checks without a boot.)
    let needle = "user-data:4: YAML syntax error";
    let d = built.vm_disk(&work, "syntax-disk");
    let s = seed(
        &work,
        "syntax",
        "#cloud-config\nhostname: node1\nusers: [\n",
        "i-1",
    );
    let mut b = boot(
        &out,
        &key,
        work.join("syntax.log"),
        &[d.as_os_str(), OsStr::new("--seed"), s.as_os_str()],
    );
    let console = b.vm.console.join("\n");
    assert!(
        console
            .lines()
            .any(|l| l.contains("sysd: config: CIDATA:") && l.contains(needle)),
        "no config error with {needle:?} on the console:\n{console}"
    );
    let errors = b.ssh.status()["errors"].to_string();
    assert!(errors.contains(needle), "osctl status errors: {errors}");
    assert_no_password_login(b.ssh.port);
    poweroff(&mut b);

    // 5. The same document from the boot partition: the image flashed onto a
    //    card with the config, as `ballast flash --user-data` (and Raspberry Pi
    //    Imager's settings) put it there.
    let ud = write(&work.join("ud.yaml"), &doc);
    let md = write(&work.join("md.yaml"), "instance-id: i-1\n");
    let card = work.join("card.img");
    let size = std::fs::metadata(built.disk())
        .expect("the disk image")
        .len();
    {
        let card_dev = common::loopdev::Loop::new(&card, size, &[]);
        let flashed = common::ballast()
            .arg("flash")
            .arg(built.artifact("install_image"))
            .arg(&card_dev.dev)
            .arg("--user-data")
            .arg(&ud)
            .arg("--meta-data")
            .arg(&md)
            .args(["--yes", "--force"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running ballast flash");
        assert!(
            flashed.status.success(),
            "ballast flash: {}",
            String::from_utf8_lossy(&flashed.stderr)
        );
    }
    let mut b = boot(&out, &key, work.join("bootpart.log"), &[card.as_os_str()]);
    assert_console(&b, "sysd: config: found /boot/user-data");
    let from_boot = observe(&b, &alice_key);
    poweroff(&mut b);
    assert_eq!(from_boot, first, "boot partition and NoCloud seed differ");

    // 6. The same document from ballast.config=https://... (QEMU's host is
    //    10.0.2.2), its server's CA given in a local seed's ca_certs, as Ignition's
    //    pointer config carries the CA of its config URL.
    let ca = common::tls::TestCa::new("config story CA");
    let (ud_text, md_text) = (doc.clone(), "instance-id: i-1\n".to_string());
    let port = common::tls::serve(ca.server(&["10.0.2.2"]), move |s| {
        answer(s, &ud_text, &md_text)
    });
    let out_url = work.join("out-url");
    let url = format!("https://10.0.2.2:{port}/seed/");
    let url_arg = format!("ballast.config={url}");
    common::build(
        BOARD,
        &out_url,
        &[
            "--image",
            &image,
            "--ssh-key",
            key.with_extension("pub").to_str().expect("utf-8"),
            "--kernel-arg",
            &url_arg,
        ],
    );
    let ca_seed = |name: &str, pem: &str| {
        let pem = pem.trim().replace('\n', "\n      ");
        let text = format!("#cloud-config\nca_certs:\n  trusted:\n    - |\n      {pem}\n");
        seed(&work, name, &text, "i-ca")
    };
    let trusted = ca_seed("ca-seed", &ca.pem);
    let mut b = boot(
        &out_url,
        &key,
        work.join("url.log"),
        &[OsStr::new("--seed"), trusted.as_os_str()],
    );
    assert_console(&b, "CA certificate(s) from CIDATA");
    let from_url = observe(&b, &alice_key);
    poweroff(&mut b);
    assert_eq!(from_url, first, "URL and NoCloud seed differ");

    // 7. A seed with another CA: the server's certificate is refused, the console
    //    names the URL and what to fix, and nothing of the document is applied.
    let stranger = common::tls::TestCa::new("a CA this server does not use");
    let untrusted = ca_seed("wrong-ca-seed", &stranger.pem);
    let port = free_port();
    let mut vm = Machine::start_with(
        BOARD,
        &out_url,
        port,
        work.join("url-wrong-ca.log"),
        false,
        &[OsStr::new("--seed"), untrusted.as_os_str()],
    );
    let refused = vm.wait_for(&format!("cannot fetch {url}"), Duration::from_secs(300));
    assert!(refused.contains("ca_certs"), "{refused}");
}

/// Answers one request of a NoCloud-net seed: /seed/user-data and
/// /seed/meta-data, else 404.
fn answer(s: &mut dyn common::tls::Stream, user_data: &str, meta_data: &str) {
    let mut line = String::new();
    let mut reader = BufReader::new(&mut *s);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut header = String::new();
    while reader
        .read_line(&mut header)
        .map(|n| n > 2)
        .unwrap_or(false)
    {
        header.clear();
    }
    drop(reader);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let body = match path {
        "/seed/user-data" => Some(user_data),
        "/seed/meta-data" => Some(meta_data),
        _ => None,
    };
    let resp = match body {
        Some(b) => format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        ),
        None => "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    };
    let _ = s.write_all(resp.as_bytes());
}
