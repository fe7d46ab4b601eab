//! The admin environment's start under a temporary root: what the admin and
//! sshd find afterwards (files, modes, owners), with the accounts of the
//! user running the test (no root needed).

use super::*;
use std::fs;

fn me() -> (u32, u32) {
    (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    )
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A root with the userland's `/etc` already copied to the admin's `/etc`
/// (what the overlay shows on a device) and the image's files.
fn root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    let (uid, gid) = me();
    let etc = r.join(LAYERS).join("etc");
    fs::create_dir_all(etc.join("sudoers.d")).unwrap();
    fs::write(
        etc.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/bash\nballast:x:{uid}:{gid}::/home/ballast:/bin/bash\n"
        ),
    )
    .unwrap();
    fs::write(etc.join("group"), format!("root:x:0:\nshadow:x:{gid}:\n")).unwrap();
    fs::write(etc.join("shadow"), "root:*:1::::::\n").unwrap();
    fs::set_permissions(etc.join("shadow"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir_all(r.join("usr/lib/ballast/ssh")).unwrap();
    fs::write(
        r.join(IMAGE_SSHD_CONFIG),
        "HostKey /state/ssh/ssh_host_ed25519_key\nAllowUsers ballast\nPasswordAuthentication no\n",
    )
    .unwrap();
    fs::write(r.join(IMAGE_KEYS), "ssh-ed25519 AAAAimage image@host\n").unwrap();
    fs::create_dir_all(r.join("var")).unwrap();
    fs::create_dir_all(r.join("home")).unwrap();
    fs::create_dir_all(r.join("proc/sys/kernel")).unwrap();
    fs::write(r.join("proc/sys/kernel/hostname"), "node-1\n").unwrap();
    d
}

#[test]
fn without_a_config_ballast_gets_the_images_keys_and_sshd_a_host_key() {
    let d = root();
    let r = d.path();
    setup(r, false).unwrap();

    let key = r.join("state/ssh/ssh_host_ed25519_key");
    assert_eq!(mode(&key), 0o600);
    let public = fs::read_to_string(r.join("state/ssh/ssh_host_ed25519_key.pub")).unwrap();
    assert!(
        public.starts_with("ssh-ed25519 ") && public.ends_with(" root@node-1\n"),
        "{public}"
    );
    assert_eq!(mode(&r.join("var/tmp")), 0o1777);
    assert_eq!(
        fs::read_link(r.join("run/docker.sock")).unwrap(),
        Path::new("/run/ballast/docker.sock")
    );
    assert_eq!(fs::read_link(r.join("var/run")).unwrap(), Path::new("/run"));
    assert!(r.join("run/sshd").is_dir());
    // The image's sshd config is used as it is.
    assert!(!r.join(MERGED_SSHD_CONFIG).exists());

    // ballast's home is on the state partition (/home is bound there on a
    // device; here its passwd home is looked up under the root).
    let ak = r.join("home/ballast/.ssh/authorized_keys");
    assert_eq!(
        fs::read_to_string(&ak).unwrap(),
        "ssh-ed25519 AAAAimage image@host\n"
    );
    assert_eq!(mode(&ak), 0o600);
    assert_eq!(mode(&r.join("home/ballast/.ssh")), 0o700);
    assert!(!r.join("home/ballast/.ssh/authorized_keys.tmp").exists());

    // The image's shadow is never left readable by all.
    assert_eq!(mode(&r.join(LAYERS).join("etc/shadow")), 0o640);

    // A second start keeps the host key.
    let before = fs::read(&key).unwrap();
    setup(r, false).unwrap();
    assert_eq!(fs::read(&key).unwrap(), before);
}

#[test]
fn the_configs_accounts_sudo_rules_keys_and_allow_users_are_laid_over() {
    let d = root();
    let r = d.path();
    let (uid, gid) = me();
    let users = r.join("state/ballast/config/users");
    fs::create_dir_all(users.join("keys")).unwrap();
    fs::write(
        users.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/bash\nballast:x:{uid}:{gid}::/home/ballast:/bin/bash\n\
             alice:x:{uid}:{gid}:Alice:/home/alice:/bin/bash\nsvc:x:{uid}:{gid}::/nonexistent:/bin/false\n"
        ),
    )
    .unwrap();
    fs::write(
        users.join("group"),
        format!("root:x:0:\nballast:x:{gid}:\nshadow:x:{gid}:\n"),
    )
    .unwrap();
    fs::write(users.join("shadow"), "root:*:1::::::\nalice:$6$x:1::::::\n").unwrap();
    fs::set_permissions(users.join("shadow"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(users.join("sudoers"), "alice ALL=(ALL) NOPASSWD:ALL\n").unwrap();
    fs::write(users.join("allow_users"), "ballast alice\n").unwrap();
    fs::write(users.join("homes"), "alice create\nsvc keep\n").unwrap();
    fs::write(
        users.join("keys/alice"),
        "ssh-ed25519 AAAAalice alice@laptop\n",
    )
    .unwrap();
    fs::write(users.join("keys/svc"), "ssh-ed25519 AAAAsvc svc@ci\n").unwrap();
    fs::write(users.join("keys/ballast"), "ssh-rsa AAAAmore me@desk\n").unwrap();
    let tree = r.join("state/ballast/config/etc");
    fs::create_dir_all(tree.join("motd.d")).unwrap();
    fs::write(tree.join("motd.d/hello"), "hello\n").unwrap();
    fs::set_permissions(tree.join("motd.d/hello"), fs::Permissions::from_mode(0o600)).unwrap();

    setup(r, false).unwrap();

    let etc = r.join(LAYERS).join("etc");
    assert!(fs::read_to_string(etc.join("passwd"))
        .unwrap()
        .contains("alice:x:"));
    // shadow keeps the mode pam_unix's helper needs, whatever the source's.
    assert!(fs::read_to_string(etc.join("shadow"))
        .unwrap()
        .contains("alice:$6$x"));
    assert_eq!(mode(&etc.join("shadow")), 0o640);
    assert_eq!(
        fs::read_to_string(etc.join("sudoers.d/90-config")).unwrap(),
        "alice ALL=(ALL) NOPASSWD:ALL\n"
    );
    assert_eq!(mode(&etc.join("sudoers.d/90-config")), 0o440);
    assert_eq!(
        fs::read_to_string(etc.join("motd.d/hello")).unwrap(),
        "hello\n"
    );
    assert_eq!(mode(&etc.join("motd.d/hello")), 0o600);

    let sshd = fs::read_to_string(r.join(MERGED_SSHD_CONFIG)).unwrap();
    assert_eq!(
        sshd,
        "HostKey /state/ssh/ssh_host_ed25519_key\nAllowUsers ballast alice\nPasswordAuthentication no\n"
    );

    // The image's keys and the config's, for ballast; the config's for alice,
    // whose home is made; none for a user whose home is kept and missing.
    assert_eq!(
        fs::read_to_string(r.join("home/ballast/.ssh/authorized_keys")).unwrap(),
        "ssh-ed25519 AAAAimage image@host\nssh-rsa AAAAmore me@desk\n"
    );
    assert_eq!(
        fs::read_to_string(r.join("home/alice/.ssh/authorized_keys")).unwrap(),
        "ssh-ed25519 AAAAalice alice@laptop\n"
    );
    assert_eq!(fs::metadata(r.join("home/alice")).unwrap().uid(), uid);
    assert!(!r.join("nonexistent").exists());

    // Without allow_users names, the merged sshd config goes again.
    fs::write(users.join("allow_users"), "\n").unwrap();
    setup(r, false).unwrap();
    assert!(!r.join(MERGED_SSHD_CONFIG).exists());
}

#[test]
fn a_user_without_a_passwd_entry_gets_no_keys_and_a_note() {
    let d = root();
    let note = install_keys(
        d.path(),
        "nobody-here",
        "root:x:0:0::/root:/bin/sh\n",
        "",
        &[],
    )
    .unwrap();
    assert_eq!(
        note.as_deref(),
        Some("user nobody-here has no /etc/passwd entry; no keys installed")
    );
}

#[test]
fn chown_tree_reaches_every_entry_and_leaves_link_targets_alone() {
    let d = tempfile::tempdir().unwrap();
    let (uid, gid) = me();
    let home = d.path().join("home");
    fs::create_dir_all(home.join("a/b")).unwrap();
    fs::write(home.join("a/b/f"), "x").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", home.join("link")).unwrap();
    chown_tree(&home, uid, gid).unwrap();
    assert_eq!(fs::metadata(home.join("a/b/f")).unwrap().uid(), uid);
    assert_eq!(fs::symlink_metadata(home.join("link")).unwrap().uid(), uid);
}
