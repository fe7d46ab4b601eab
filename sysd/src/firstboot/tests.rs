//! First-boot config applied to a temporary root, the way sysd --root runs it.

use super::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nballast:x:1000:1000:Ballast admin:/state/home/ballast:/bin/bash\n";
const GROUP: &str = "root:x:0:\nsudo:x:27:ballast\nballast:x:1000:\n";
const SHADOW: &str = "root:*:19000:0:99999:7:::\nballast:*:19000:0:99999:7:::\n";

const DOC: &str = r#"#cloud-config
hostname: node1
fqdn: node1.example.org
users:
  - default
  - name: alice
    groups: [sudo]
    sudo: ALL=(ALL) NOPASSWD:ALL
    shell: /bin/bash
    ssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILe1Eo3gV7lc2mL+y8ZcEqoOHu6HTF6l/567mLmfmXXs alice@laptop]
ssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILe1Eo3gV7lc2mL+y8ZcEqoOHu6HTF6l/567mLmfmXXs ops]
write_files:
  - path: /state/data/hello.txt
    content: aGVsbG8K
    encoding: b64
    owner: alice:alice
    permissions: '0640'
  - path: /state/data/log.txt
    content: "one more line\n"
    append: true
runcmd:
  - echo ran >> /state/data/runs
  - [touch, /state/data/argv form]
bootcmd:
  - echo boot
ballast:
  system:
    - name: ticker
      command: [/bin/sh, -c, "while sleep 5; do date; done"]
"#;

fn root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let etc = d.path().join("usr/lib/ballast/userland/etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), PASSWD).unwrap();
    std::fs::write(etc.join("group"), GROUP).unwrap();
    std::fs::write(etc.join("shadow"), SHADOW).unwrap();
    std::fs::create_dir_all(d.path().join("state/data")).unwrap();
    std::fs::write(d.path().join("state/data/log.txt"), "first line\n").unwrap();
    d
}

fn layout(d: &tempfile::TempDir) -> Layout {
    Layout {
        root: d.path().to_path_buf(),
        on_device: false,
    }
}

fn seed(doc: &str, instance: &str) -> Result<Option<Found>, super::source::SourceError> {
    Ok(Some(Found {
        origin: "/boot".into(),
        user_data_source: "/boot/user-data".into(),
        user_data: doc.into(),
        meta_data: Some(format!("instance-id: {instance}\n")),
        network_config: None,
    }))
}

fn read(d: &tempfile::TempDir, p: &str) -> String {
    std::fs::read_to_string(d.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn a_document_is_applied_and_recorded() {
    let d = root();
    let l = layout(&d);
    let o = apply_found(&l, seed(DOC, "i-1"));
    assert!(o.errors.is_empty(), "{o:?}");
    assert_eq!(read(&d, "etc/hostname"), "node1\n");
    assert!(read(&d, "etc/hosts").contains("127.0.1.1 node1.example.org node1\n"));
    assert_eq!(
        read(&d, "state/ballast/config/users/hosts"),
        read(&d, "etc/hosts")
    );
    let passwd = read(&d, "state/ballast/config/users/passwd");
    assert!(
        passwd.contains("alice:x:1001:1001::/state/home/alice:/bin/bash"),
        "{passwd}"
    );
    assert!(read(&d, "state/ballast/config/users/group").contains("sudo:x:27:ballast,alice\n"));
    assert_eq!(
        read(&d, "state/ballast/config/users/allow_users"),
        "ballast alice\n"
    );
    assert!(read(&d, "state/ballast/config/users/keys/alice").contains("alice@laptop"));
    assert!(read(&d, "state/ballast/config/users/keys/ballast").contains(" ops\n"));
    assert!(read(&d, "state/ballast/config/users/sudoers").contains("alice ALL=(ALL) NOPASSWD:ALL"));
    // write_files: decoded, mode, owner by name, append.
    assert_eq!(read(&d, "state/data/hello.txt"), "hello\n");
    let meta = std::fs::metadata(d.path().join("state/data/hello.txt")).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    if nix_root() {
        assert_eq!((meta.uid(), meta.gid()), (1001, 1001));
    }
    assert_eq!(
        read(&d, "state/data/log.txt"),
        "first line\none more line\n"
    );
    // runcmd queued as one script, both forms; bootcmd for this boot.
    let run = read(&d, "state/ballast/config/runcmd.sh");
    assert!(
        run.contains("echo ran >> /state/data/runs\ntouch '/state/data/argv form'\n"),
        "{run}"
    );
    assert!(read(&d, "run/ballast/config/bootcmd.sh").contains("echo boot\n"));
    // The extra system container is a bundle sysd can load.
    let dir = d.path().join("state/ballast/config/system/ticker");
    let (found, errs) = crate::definition::load_image_and_applied(
        &d.path().join("none"),
        &d.path().join("state/ballast/config/system"),
    );
    assert_eq!(found.len(), 1, "{errs:?}");
    crate::runtime::ContainerDir::load(&dir).unwrap();
    // It is an ordinary OOM candidate (not sysd's -900) under a seccomp deny list.
    let oci: serde_json::Value =
        serde_json::from_str(&read(&d, "state/ballast/config/system/ticker/config.json")).unwrap();
    assert_eq!(oci["process"]["oomScoreAdj"], 0);
    assert_eq!(oci["linux"]["resources"]["cpu"]["shares"], 1024);
    let denied = &oci["linux"]["seccomp"]["syscalls"][0]["names"];
    assert!(
        denied
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("kexec_load")),
        "{oci}"
    );
    assert_eq!(read(&d, "state/ballast/config/instance-id"), "i-1\n");
    let plan: Plan = serde_json::from_str(&read(&d, "state/ballast/config/applied.json")).unwrap();
    assert_eq!(plan.users.len(), 2);
}

fn nix_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn per_instance_steps_run_once_per_instance_id() {
    let d = root();
    let l = layout(&d);
    apply_found(&l, seed(DOC, "i-1"));
    // The SSH container takes the queued runcmd when it runs it.
    std::fs::remove_file(d.path().join("state/ballast/config/runcmd.sh")).unwrap();
    let o = apply_found(&l, seed(DOC, "i-1"));
    assert!(o.errors.is_empty(), "{o:?}");
    assert!(!d.path().join("state/ballast/config/runcmd.sh").exists());
    assert_eq!(
        read(&d, "state/data/log.txt"),
        "first line\none more line\n"
    );
    // Nothing found at all: the recorded plan is applied again, still once.
    let o = apply_found(&l, Ok(None));
    assert!(o.notes.iter().any(|n| n.contains("applied.json")), "{o:?}");
    assert!(!d.path().join("state/ballast/config/runcmd.sh").exists());
    assert!(d
        .path()
        .join("state/ballast/config/users/keys/alice")
        .exists());
    // A new instance id runs them again.
    apply_found(&l, seed(DOC, "i-2"));
    assert!(d.path().join("state/ballast/config/runcmd.sh").exists());
    assert_eq!(
        read(&d, "state/data/log.txt"),
        "first line\none more line\none more line\n"
    );
}

#[test]
fn a_broken_document_is_reported_and_changes_nothing() {
    let d = root();
    let l = layout(&d);
    let o = apply_found(&l, seed("#cloud-config\nhostname: [\n", "i-1"));
    assert_eq!(o.errors.len(), 1, "{o:?}");
    assert!(o.errors[0].starts_with("config: /boot/user-data:"), "{o:?}");
    assert!(o.notes.iter().any(|n| n.contains("defaults")), "{o:?}");
    assert!(!d.path().join("state/ballast/config/applied.json").exists());
    let o = apply_found(&l, seed("#cloud-config\nhostname: -bad-\n", "i-1"));
    assert!(o.errors[0].contains("/boot/user-data:2: hostname"), "{o:?}");
    // After a good one, a broken one keeps the good one.
    apply_found(&l, seed(DOC, "i-1"));
    let o = apply_found(&l, seed("#cloud-config\nusers: 3\n", "i-9"));
    assert_eq!(o.errors.len(), 1, "{o:?}");
    assert_eq!(read(&d, "state/ballast/config/instance-id"), "i-1\n");
    assert!(d
        .path()
        .join("state/ballast/config/users/keys/alice")
        .exists());
}

#[test]
fn write_files_outside_the_writable_directories_is_an_error_naming_the_file() {
    let e = apply::check_path("/usr/bin/x").unwrap_err().to_string();
    assert!(e.contains("/usr/bin/x") && e.contains("read-only"), "{e}");
    assert!(apply::check_path("/etc/../usr/x").is_err());
    assert!(apply::check_path("/etc/motd").is_ok());
}

#[test]
fn a_document_without_meta_data_is_its_own_instance() {
    assert_eq!(doc_id("a"), doc_id("a"));
    assert_ne!(doc_id("a"), doc_id("b"));
}

#[test]
fn update_channel_and_trusted_keys_are_recorded_for_upgrades() {
    let d = root();
    let l = layout(&d);
    let key = ballast_bundle::Signer::from_seed(&[4; 32]).public();
    let hex_key = key
        .to_text("")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let doc = format!(
        "#cloud-config\nballast:\n  update:\n    channel: http://updates.lan/stable/\n    trusted_keys:\n      - ballast-ed25519 {hex_key}\n"
    );
    let o = apply_found(&l, seed(&doc, "i-1"));
    assert!(o.errors.is_empty(), "{o:?}");
    assert_eq!(
        read(&d, "state/ballast/config/update-channel"),
        "http://updates.lan/stable/\n"
    );
    let keys = ballast_bundle::keys::read_dir(&d.path().join("state/ballast/config/keys")).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, key.id);
    // A document without them removes both.
    let o = apply_found(&l, seed("#cloud-config\nhostname: x\n", "i-2"));
    assert!(o.errors.is_empty(), "{o:?}");
    assert!(!d
        .path()
        .join("state/ballast/config/update-channel")
        .exists());
    assert!(!d.path().join("state/ballast/config/keys").exists());
}

#[test]
fn static_network_from_the_document_or_network_config_goes_to_the_network_service() {
    let d = root();
    let l = layout(&d);
    let doc = "#cloud-config\nballast:\n  network:\n    interfaces:\n      - name: eth0\n        addresses: [10.0.2.15/24]\n        gateway: 10.0.2.2\n    dns:\n      nameservers: [10.0.2.3]\n      search: [example.test]\n";
    let o = apply_found(&l, seed(doc, "i-1"));
    assert!(o.errors.is_empty(), "{o:?}");
    assert!(o.network_changed);
    assert_eq!(
        read(&d, "run/ballast/network.conf"),
        "# Written by sysd from the first-boot config (ballast.network or network-config).\n\
         iface eth0 static -\naddr eth0 10.0.2.15/24\ngw eth0 10.0.2.2\ndns 10.0.2.3\nsearch example.test\n"
    );
    // The same again: nothing to restart.
    assert!(!apply_found(&l, seed(doc, "i-1")).network_changed);

    // A NoCloud network-config wins over the document's section.
    let mut found = seed(doc, "i-1").unwrap().unwrap();
    found.network_config = Some("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n".into());
    let o = apply_found(&l, Ok(Some(found.clone())));
    assert!(o.errors.is_empty() && o.network_changed, "{o:?}");
    assert!(read(&d, "run/ballast/network.conf").ends_with("iface eth0 dhcp -\n"));

    // A broken network-config is the document's error: nothing applied.
    found.network_config =
        Some("version: 2\nethernets:\n  eth0:\n    addresses: [10.0.2.15]\n".into());
    let o = apply_found(&l, Ok(Some(found)));
    let shown = o.errors.join("\n");
    assert!(
        shown.contains("/boot/network-config:4: ethernets.eth0.addresses[0]"),
        "{shown}"
    );
    assert!(read(&d, "run/ballast/network.conf").ends_with("iface eth0 dhcp -\n"));

    // No network settings any more: the file goes, DHCP as before.
    let o = apply_found(&l, seed("#cloud-config\nhostname: n\n", "i-1"));
    assert!(o.network_changed);
    assert!(!d.path().join("run/ballast/network.conf").exists());
}

#[test]
fn engine_settings_go_to_the_docker_service() {
    let d = root();
    std::fs::create_dir_all(d.path().join("usr/lib/ballast/system/docker")).unwrap();
    let l = layout(&d);
    let doc = "#cloud-config\nballast:\n  engine:\n    data_root: /state/docker\n    registry_mirrors: [http://10.0.2.2:5000]\n    insecure_registries: [10.0.2.2:5000]\n";
    let o = apply_found(&l, seed(doc, "i-1"));
    assert!(o.errors.is_empty(), "{o:?}");
    assert!(o.engine_changed);
    assert_eq!(
        read(&d, "run/ballast/engine.conf"),
        "# Written by sysd from the first-boot config (ballast.engine).\n\
         registry-mirror http://10.0.2.2:5000\ninsecure-registry 10.0.2.2:5000\n"
    );
    let warned = o.warnings.join("\n");
    assert!(
        warned.contains("data_root /state/docker: not applied: it must be below /var"),
        "{warned}"
    );
    assert!(!warned.contains("no Docker engine"), "{warned}");
    assert!(!apply_found(&l, seed(doc, "i-1")).engine_changed);
    let o = apply_found(&l, seed("#cloud-config\nhostname: n\n", "i-1"));
    assert!(o.engine_changed);
    assert!(!d.path().join("run/ballast/engine.conf").exists());
}

#[test]
fn a_refused_document_says_which_file_to_fix_and_how_to_get_in() {
    let d = root();
    let l = layout(&d);
    let o = apply_found(&l, seed("#cloud-config\nhostname: [\n", "i-1"));
    let e = &o.errors[0];
    assert!(e.contains("on the boot partition"), "{e}");
    assert!(e.contains("osctl config validate"), "{e}");
    assert!(e.contains("SSH as `ballast`"), "{e}");
}

const CLOUD_DOC: &str = r#"#cloud-config
groups:
  - admins: [alice]
users:
  - default
  - name: ballast
    ssh-authorized-keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILe1Eo3gV7lc2mL+y8ZcEqoOHu6HTF6l/567mLmfmXXs extra]
    groups: [auditors]
  - name: alice
    primary-group: admins
    homedir: /home/alice
    ssh-authorized-keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILe1Eo3gV7lc2mL+y8ZcEqoOHu6HTF6l/567mLmfmXXs alice]
timezone: Europe/Berlin
write_files:
  - path: /etc/motd
    content: "hello admin\n"
  - path: /var/lib/app/x
    content: "x\n"
ca_certs:
  trusted:
    - |
      -----BEGIN CERTIFICATE-----
      MIIB
      -----END CERTIFICATE-----
"#;

#[test]
fn a_cloud_init_document_reaches_the_admin_environments_files() {
    let d = root();
    let zi = d
        .path()
        .join("usr/lib/ballast/userland/usr/share/zoneinfo/Europe");
    std::fs::create_dir_all(&zi).unwrap();
    std::fs::write(zi.join("Berlin"), "TZif2").unwrap();
    let l = layout(&d);
    let o = apply_found(&l, seed(CLOUD_DOC, "i-1"));
    assert!(o.errors.is_empty(), "{o:?}");
    // write_files under /etc: on the host and in the admin tree; /var as is.
    assert_eq!(read(&d, "etc/motd"), "hello admin\n");
    assert_eq!(read(&d, "state/ballast/config/etc/motd"), "hello admin\n");
    assert_eq!(read(&d, "var/lib/app/x"), "x\n");
    assert_eq!(
        read(&d, "state/ballast/config/etc/timezone"),
        "Europe/Berlin\n"
    );
    let applied = read(&d, "state/ballast/config/applied.json");
    let ca = std::fs::read_to_string(
        d.path()
            .join("state/ballast/config/etc/ssl/certs/ca-certificates.crt"),
    )
    .unwrap_or_else(|e| panic!("{e}: {applied}"));
    assert!(ca.contains("MIIB"), "{ca}");
    // Groups, the merged default user's extra keys and groups, alice's fields.
    let group = read(&d, "state/ballast/config/users/group");
    assert!(group.contains("admins:x:2000:alice\n"), "{group}");
    assert!(group.contains("auditors:x:2001:ballast\n"), "{group}");
    let passwd = read(&d, "state/ballast/config/users/passwd");
    assert!(
        passwd.contains("alice:x:1001:2000::/home/alice:"),
        "{passwd}"
    );
    assert!(read(&d, "state/ballast/config/users/keys/ballast").contains(" extra\n"));
}
