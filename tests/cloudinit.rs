//! Story (issue 13): someone brings the user-data they already use with
//! cloud-init, written the way published examples write it (dash keys, a
//! top-level `groups:`, `users` with `default` and extra users with extra
//! fields, `write_files` to `/etc` and `/var`, `timezone`, a data disk with
//! `disk_setup`/`fs_setup`/`mounts` at `/var/lib/docker`, `ssh_keys`,
//! `final_message`, `ca_certs`) and a NoCloud `network-config` (v2) that finds the NIC by
//! its MAC address and renames it. They boot the default (Docker) image with
//! a blank second disk and check, over SSH, what they would check on any
//! cloud-init machine: each user logs in with their key, the host key is the
//! one they gave, the admin reads the written files, `date` shows the zone,
//! `findmnt` shows the data disk under Docker's data root, the interface has
//! its new name, `docker run` writes into a volume. The user-data's `ntp:`
//! names the host (10.0.2.2, where an NTP server runs for the story) and the
//! machine's clock starts three days ahead (`ballast run --clock`): the
//! kernel's log shows the wrong time it started from, `date` comes to the
//! host's time within 90 s, and sysd saves that time for the next boot's
//! clock floor. Then one reboot: Docker's data and the mount are
//! still there, the disk was not formatted again, and `cloud-init-per once`
//! in bootcmd ran once while `always` ran twice.
//!
//! Run: `cargo test -p ballast --test cloudinit -- --nocapture` (qemu-arm64
//! under TCG: one build, two boots).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::ntp::{self, NtpServer};
use common::oci::{image_tarball, static_busybox};
use common::vm::{free_port, ssh_as, Machine, Ssh};

const BOARD: &str = "qemu-arm64";
const IMAGE: &str = "ballast-test/busybox:1";
/// QEMU's MAC for the first NIC when none is given.
const MAC: &str = "52:54:00:12:34:56";
/// How far ahead of the host's time the first boot's clock starts.
const CLOCK_AHEAD: u64 = 3 * 86_400;

fn keygen(path: &Path, comment: &str) -> String {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(ok.success());
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("reading the public key")
        .trim()
        .to_string()
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}\n"))
        .collect::<String>()
}

fn user_data(alice: &str, bob: &str, host_priv: &str, host_pub: &str, ca: &str) -> String {
    format!(
        r#"#cloud-config
hostname: dock1
groups:
  - admins: [alice]
  - auditors
users:
  - default
  - name: alice
    gecos: Alice Admin
    primary-group: admins
    groups: [sudo, docker]
    sudo: ALL=(ALL) NOPASSWD:ALL
    shell: /bin/bash
    lock-passwd: true
    ssh-authorized-keys:
      - {alice}
  - name: bob
    homedir: /home/robert
    groups: auditors
    expiredate: '2099-12-31'
    inactive: '30'
    ssh_authorized_keys:
      - {bob}
  - name: svc
    system: true
    no-create-home: true
    no-user-group: true
ssh_deletekeys: true
ssh_keys:
  ed25519_private: |
{priv_block}  ed25519_public: {host_pub}
write_files:
  - path: /etc/motd
    content: |
      Welcome to dock1, configured by cloud-init user-data.
  - path: /var/lib/app/config.txt
    owner: alice:admins
    permissions: '0640'
    content: "setting=1\n"
ca_certs:
  trusted:
    - |
{ca_block}timezone: Europe/Berlin
ntp:
  enabled: true
  servers: [10.0.2.2]
disk_setup:
  /dev/vdb:
    table_type: gpt
    layout: true
    overwrite: false
fs_setup:
  - label: dockerdata
    filesystem: ext4
    device: /dev/vdb
    partition: auto
mounts:
  - [LABEL=dockerdata, /var/lib/docker, ext4, "defaults,nofail", "0", "2"]
bootcmd:
  - [cloud-init-per, once, first-marker, sh, -c, "echo once >> /var/lib/app/bootcmd-once"]
  - cloud-init-per always every-boot sh -c 'echo boot >> /var/lib/app/bootcmd-always'
final_message: "cloudinit-story: up after $UPTIME seconds, version $VERSION"
"#,
        priv_block = indent(host_priv, "    "),
        ca_block = indent(ca, "      ")
    )
}

const NETWORK_CONFIG: &str = r#"version: 2
ethernets:
  uplink:
    match:
      macaddress: "52:54:00:12:34:56"
    set-name: lan0
    dhcp4: true
"#;

fn seed(work: &Path, user_data: &str) -> PathBuf {
    let ud = work.join("user-data");
    let md = work.join("meta-data");
    let nc = work.join("network-config");
    std::fs::write(&ud, user_data).expect("writing user-data");
    std::fs::write(&md, "instance-id: iid-cloudinit-1\nlocal-hostname: dock1\n")
        .expect("writing meta-data");
    std::fs::write(&nc, NETWORK_CONFIG).expect("writing network-config");
    common::seed_image(
        &ud,
        &md,
        &[OsStr::new("--network-config"), nc.as_os_str()],
        &work.join("seed.img"),
    )
}

fn login(user: &str, key: &Path, port: u16, command: &str) -> String {
    let out = ssh_as(user, key, port, command);
    assert!(
        out.status.success(),
        "{user} cannot log in with their key and run {command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private CA's certificate (PEM), as a company registry would use.
fn private_ca(work: &Path) -> String {
    let (key, cert) = (work.join("ca.key"), work.join("ca.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=ballast-story-ca", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("running openssl");
    assert!(
        ok.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::read_to_string(&cert).expect("reading the CA")
}

/// The host's ed25519 key as the SSH server offers it (`TYPE BASE64`).
fn offered_host_key(port: u16) -> String {
    let out = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"])
        .output()
        .expect("running ssh-keyscan");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("ssh-ed25519"))
        .unwrap_or_else(|| panic!("ssh-keyscan offered no ed25519 key: {text}"));
    line.split_whitespace()
        .skip(1)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn boot(
    out: &Path,
    disk: &Path,
    port: u16,
    log: PathBuf,
    data: &Path,
    seed: &Path,
    clock: Option<&str>,
) -> Machine {
    let mut args = vec![
        disk.as_os_str(),
        OsStr::new("--drive"),
        data.as_os_str(),
        OsStr::new("--seed"),
        seed.as_os_str(),
    ];
    if let Some(when) = clock {
        args.extend([OsStr::new("--clock"), OsStr::new(when)]);
    }
    let mut vm = Machine::start_with(BOARD, out, port, log, false, &args);
    vm.wait_for("ballast-ready", Duration::from_secs(600));
    vm
}

/// A console line seen already (before ballast-ready), or the next one.
fn wait_console(vm: &mut Machine, needle: &str, timeout: Duration) {
    if !vm.console.iter().any(|l| l.contains(needle)) {
        vm.wait_for(needle, timeout);
    }
}

fn assert_console(vm: &Machine, needle: &str) {
    assert!(
        vm.console.iter().any(|l| l.contains(needle)),
        "no console line with {needle:?}:\n{}",
        vm.console.join("\n")
    );
}

/// The machine's clock started from its RTC at `clock` (`--clock`, Unix
/// seconds), and the time service steps `date` to the host's time (the NTP
/// server's) within 90 s: what a user checks, whichever client keeps the time.
///
/// That the clock started wrong is read from the kernel's log, where it says
/// what it set the clock to from the RTC at boot: the RTC itself may already
/// be right again, as the kernel copies a synchronised clock to it (chrony's
/// `rtcsync`, and any client that clears `STA_UNSYNC`) about a second after
/// the first synchronisation.
fn clock_is_set(ssh: &Ssh, clock: u64) {
    let log = ssh.ok("sudo dmesg");
    let line = log
        .lines()
        .find(|l| l.contains("setting system clock to "))
        .unwrap_or_else(|| panic!("the kernel never set the clock from the RTC; dmesg:\n{log}"));
    let set_to: u64 = line
        .rsplit_once('(')
        .and_then(|(_, secs)| secs.trim_end().strip_suffix(')'))
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("no (seconds) in the kernel's {line:?}"));
    // The RTC runs from `clock` when QEMU starts; the kernel reads it after
    // the firmware's part of the boot (seconds; minutes at most under TCG).
    assert!(
        (clock.saturating_sub(2)..=clock + 300).contains(&set_to),
        "the machine's clock did not start at --clock {} ({clock}): the kernel says {line:?}",
        ntp::utc(clock)
    );
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(90) {
        let before = ntp::now();
        let out = ssh.run("date +%s");
        let after = ntp::now();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if let Ok(guest) = text.parse::<u64>() {
            // The guest read its clock between `before` and `after` (whole
            // seconds): within 2 s of the host's then.
            if guest + 1 >= before.saturating_sub(2) && guest <= after + 2 {
                eprintln!(
                    "cloudinit: the clock started {} s ahead; `date` agreed with the host {:.0?} into the check",
                    set_to as i64 - clock as i64 + CLOCK_AHEAD as i64,
                    start.elapsed()
                );
                return;
            }
            last = format!(
                "guest {guest} ({}), host {before}..{after} ({})",
                ntp::utc(guest),
                ntp::utc(after)
            );
        } else {
            last = format!(
                "`date +%s` printed {text:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let logs = ssh.run("osctl logs time -n 50");
    panic!(
        "the time service did not set the clock from the NTP server on 10.0.2.2 within 90 s: \
         {last}; osctl logs time -n 50:\n{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
}

/// sysd saved the synchronised time on the state partition (the mtime of
/// /state/ballast/clock, the next boot's clock floor): within 2 minutes of
/// the host's time.
fn clock_saved(ssh: &Ssh) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(90) {
        let out = ssh.run("sudo stat -c %Y /state/ballast/clock");
        last = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if let Ok(saved) = last.parse::<u64>() {
            let now = ntp::now();
            assert!(
                saved + 120 >= now && saved <= now + 2,
                "the saved time {saved} ({}) is not the host's {now}",
                ntp::utc(saved)
            );
            return;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    panic!("sysd did not save the synchronised time to /state/ballast/clock within 90 s: {last:?}");
}

#[test]
fn qemu_arm64_published_cloud_init_user_data_configures_users_files_zone_disk_and_network() {
    let started = Instant::now();
    let _story = common::story();
    let work = common::workdir("cloudinit");
    // The default image the Docker story boots too.
    let shared = common::Build::new(BOARD)
        .version("0.1.0")
        .ssh_key()
        .shared();
    let (key, out) = (shared.ssh_key(), shared.out.clone());
    let disk = shared.vm_disk(&work, "machine");
    let alice_key = work.join("alice");
    let bob_key = work.join("bob");
    let alice = keygen(&alice_key, "alice@laptop");
    let bob = keygen(&bob_key, "bob@desk");
    let host_key = work.join("host_ed25519");
    let host_pub = keygen(&host_key, "dock1");
    let host_priv = std::fs::read_to_string(&host_key).expect("host key");
    let ca = private_ca(&work);
    // A line of the certificate's body identifies it in a bundle.
    let ca_line = ca.lines().nth(1).expect("a PEM body").to_string();
    let seed = seed(&work, &user_data(&alice, &bob, &host_priv, &host_pub, &ca));
    // A blank 2 GiB data disk: /dev/vdb (attached before the seed).
    let data = work.join("data.img");
    let f = std::fs::File::create(&data).expect("creating the data disk");
    f.set_len(2 << 30).expect("sizing the data disk");
    drop(f);
    let tarball = image_tarball(&static_busybox(&work), IMAGE);

    // The NTP server the user-data names (10.0.2.2 is the host's 127.0.0.1).
    let _ntp = NtpServer::start(&work);

    // First boot, its clock three days ahead.
    let port = free_port();
    let clock = ntp::now() + CLOCK_AHEAD;
    let mut vm = boot(
        &out,
        &disk,
        port,
        work.join("boot1.log"),
        &data,
        &seed,
        Some(&ntp::utc(clock)),
    );
    let ssh = Ssh {
        key: key.clone(),
        port,
    };
    clock_is_set(&ssh, clock);
    // The time service's log says who set it, and by how much.
    let time_log = ssh.ok("osctl logs time -n 20");
    assert!(
        time_log.contains("time: stepped the clock by -25")
            && time_log.contains(" s to 10.0.2.2 (10.0.2.2:123, stratum "),
        "{time_log}"
    );
    // final_message after runcmd (none here), with its variables filled in.
    wait_console(
        &mut vm,
        "cloudinit-story: up after ",
        Duration::from_secs(120),
    );
    assert!(
        !vm.console
            .iter()
            .any(|l| l.contains("$UPTIME") || l.contains("$VERSION")),
        "final_message variables left unsubstituted"
    );
    // The host key is the one the user-data gave.
    let given: String = host_pub
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(offered_host_key(port), given);

    // Each user logs in with their key.
    let a = login(
        "alice",
        &alice_key,
        port,
        "id -un; id -gn; id -Gn; cat /var/lib/app/config.txt; sudo -n true && echo sudo-ok",
    );
    let lines: Vec<&str> = a.lines().collect();
    assert_eq!(lines[0], "alice", "{a}");
    assert_eq!(lines[1], "admins", "primary-group: {a}");
    for g in ["sudo", "docker", "admins"] {
        assert!(lines[2].split_whitespace().any(|x| x == g), "{g}: {a}");
    }
    assert!(a.contains("setting=1\nsudo-ok\n"), "{a}");
    let b = login("bob", &bob_key, port, "id -Gn; pwd; echo $HOME");
    assert!(b.contains("auditors"), "{b}");
    assert!(b.contains("/home/robert\n/home/robert\n"), "homedir: {b}");
    let default_user = ssh.ok("id -Gn");
    assert!(default_user.contains("docker"), "{default_user}");

    // What the admin reads.
    let admin = ssh.ok(
        "cat /etc/motd; stat -c '%n %a %U:%G' /var/lib/app/config.txt; cat /etc/timezone; \
         date +%Z; hostname; \
         sudo getent shadow bob | cut -d: -f7,8; test -d /home/svc || echo svc-no-home",
    );
    for want in [
        "Welcome to dock1, configured by cloud-init user-data.\n",
        "/var/lib/app/config.txt 640 alice:admins\n",
        "Europe/Berlin\n",
        "dock1\n",
        "30:47481\n",
        "svc-no-home\n",
    ] {
        assert!(admin.contains(want), "missing {want:?} in:\n{admin}");
    }
    assert!(
        admin.contains("\nCET\n") || admin.contains("\nCEST\n"),
        "date +%Z is not Berlin time: {admin}"
    );
    let svc_uid: u32 = ssh.ok("id -u svc").trim().parse().expect("a uid for svc");
    assert!(svc_uid < 1000, "svc is a system user: uid {svc_uid}");

    // ca_certs: the admin environment and the Docker engine trust the CA,
    // besides the image's bundle.
    let trust = ssh.ok(&format!(
        "grep -cF -- '{ca_line}' /etc/ssl/certs/ca-certificates.crt; \
         sudo sh -c 'grep -cF -- \"{ca_line}\" /proc/$(pgrep -x dockerd)/root/etc/ssl/certs/ca-certificates.crt'; \
         grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt"
    ));
    let counts: Vec<u32> = trust
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(counts.len(), 3, "{trust}");
    assert_eq!(
        counts[..2],
        [1, 1],
        "the CA in the admin's and the engine's bundle: {trust}"
    );
    assert!(counts[2] > 100, "the image's CAs are kept: {trust}");

    // The data disk is under Docker's data root; the NIC has its new name.
    let mnt = ssh.ok("findmnt -n -o SOURCE,FSTYPE,LABEL /var/lib/docker || findmnt -n -o SOURCE,FSTYPE /var/lib/docker");
    assert!(mnt.contains("/dev/vdb1") && mnt.contains("ext4"), "{mnt}");
    let link = ssh.ok("ip -o link show lan0");
    assert!(link.contains(MAC), "{link}");
    let route = ssh.ok("ip route show default");
    assert!(route.contains("dev lan0"), "{route}");

    // Docker keeps a volume on the data disk.
    let loaded = ssh.ok_with_input("docker load", &tarball);
    assert!(loaded.contains(IMAGE), "{loaded}");
    ssh.ok(&format!(
        "docker run --rm -v keep:/d {IMAGE} sh -c 'echo on-the-data-disk > /d/f'"
    ));
    // Issue 12's debt: a bind with rshared propagation is accepted.
    let shared = ssh.ok(&format!(
        "sudo mkdir -p /var/lib/app/shared && docker run --rm -v /var/lib/app/shared:/s:rshared {IMAGE} sh -c 'grep \" /s \" /proc/self/mountinfo'"
    ));
    assert!(shared.contains("shared:"), "{shared}");
    let root = ssh.ok("docker info -f '{{.DockerRootDir}}'");
    assert_eq!(root.trim(), "/var/lib/docker");
    ssh.ok("sudo sh -c 'echo first-boot > /var/lib/docker/ballast-marker'");
    let used = ssh.ok("sudo findmnt -n -o SOURCE -T /var/lib/docker/volumes/keep/_data");
    assert_eq!(used.trim(), "/dev/vdb1", "the volume is on the data disk");
    let engine_id = ssh.ok("docker info -f '{{.ID}}'");
    // Now that the clock is synchronised, sysd saves the time for the next
    // boot's clock floor (within a minute of the first sync).
    clock_saved(&ssh);
    let _ = ssh.run("osctl reboot");
    vm.wait_exit(Duration::from_secs(180));
    vm.save();

    // Second boot, same disks: nothing formatted again, everything still there.
    let port = free_port();
    let mut vm = boot(
        &out,
        &disk,
        port,
        work.join("boot2.log"),
        &data,
        &seed,
        None,
    );
    let ssh = Ssh { key, port };
    assert!(
        !vm.console
            .iter()
            .any(|l| l.contains("fs_setup") && l.contains("made")),
        "the data disk was formatted again:\n{}",
        vm.console.join("\n")
    );
    assert_console(&vm, "mounts: /dev/vdb1 (ext4) at /var/lib/docker");
    // sysd unmounted it at the reboot: no journal to replay.
    assert!(
        !vm.console
            .iter()
            .any(|l| l.contains("vdb1): recovery complete")),
        "the data disk was not unmounted cleanly:\n{}",
        vm.console.join("\n")
    );
    assert_eq!(
        ssh.ok("sudo cat /var/lib/docker/ballast-marker").trim(),
        "first-boot"
    );
    assert_eq!(
        ssh.ok(&format!("docker run --rm -v keep:/d {IMAGE} cat /d/f"))
            .trim(),
        "on-the-data-disk"
    );
    assert_eq!(
        ssh.ok("docker info -f '{{.ID}}'"),
        engine_id,
        "engine ID kept"
    );
    login("alice", &alice_key, port, "true");
    assert_eq!(offered_host_key(port), given);
    // cloud-init-per inside bootcmd: `once` ran on the first boot only.
    assert_eq!(
        ssh.ok("cat /var/lib/app/bootcmd-once /var/lib/app/bootcmd-always"),
        "once\nboot\nboot\n"
    );
    let _ = ssh.run("osctl poweroff");
    vm.wait_exit(Duration::from_secs(180));
    vm.save();
    eprintln!("cloudinit: build + two boots in {:.0?}", started.elapsed());
}
