//! `sysd --admin-setup`: the SSH container's start, up to the point where
//! its start script (`system/ssh/files/usr/lib/ballast/ssh/start`) runs the
//! config's bootcmd and runcmd and starts sshd. It runs inside that
//! container, from the userland's copy of sysd's binary.
//!
//! The script used to do this with about fifteen programs (mkdir, chmod,
//! ln, mount, cp, cat, mv, chown), each of them read cold and linked at
//! its start: about 0.9 s under QEMU's TCG on the way to ballast-ready.
//! One static program does it in a few milliseconds. What it does, in order:
//! - the directories sshd and the admin need (`/state/ssh`, the ballast
//!   user's home, `/run/sshd`, `/var/tmp` sticky and world-writable);
//! - the ed25519 host key, when `/state/ssh` has none ([`hostkey`]; the
//!   ecdsa and rsa keys stay the script's, made after sshd listens);
//! - `/var/run` and the docker CLI's and ctr's default socket paths;
//! - the admin's `/etc`: an overlay of the userland's `/etc` with a tmpfs
//!   upper layer, the config's tree and account files laid over it
//!   ([`crate::firstboot::lay_config_over`]), bound on `/etc`; `/home` is
//!   `/state/home`;
//! - sshd's config with the config's `AllowUsers`, when it names users;
//! - each user's `authorized_keys`: the image's keys (user ballast) and the
//!   config's.
//!
//! A step the admin cannot do without (a directory, the host key, the
//! `/etc` overlay) fails the run, and sysd starts the container again; the
//! others say what went wrong and go on, as the script did.

pub mod hostkey;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::mount::MountFlags;

use crate::firstboot::{self, sys::mount};

/// The admin's `/etc` is made here: a tmpfs holding the overlay's upper and
/// work directories and its mount point.
const LAYERS: &str = "run/admin-etc";
/// Where sshd's config is written when the config names `AllowUsers`.
pub const MERGED_SSHD_CONFIG: &str = "run/ballast-users/sshd_config";
const IMAGE_SSHD_CONFIG: &str = "usr/lib/ballast/ssh/sshd_config";
/// User ballast's keys from the image (`ballast build --ssh-key`).
const IMAGE_KEYS: &str = "usr/lib/ballast/ssh/authorized_keys";
const HOST_KEYS: &str = "state/ssh";
const CONTAINERD: &str = "usr/lib/ballast/containerd";

fn say(msg: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ssh: {msg}");
    let _ = out.flush();
}

pub fn main_code() -> i32 {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    match setup(Path::new("/"), true) {
        Ok(()) => 0,
        Err(e) => {
            say(&e);
            1
        }
    }
}

/// Everything under `root`; `mounts` is false in tests (no tmpfs, overlay
/// or bind: the admin's `/etc` is then made as a plain directory).
fn setup(root: &Path, mounts: bool) -> Result<(), String> {
    let at = |p: &str| root.join(p);
    for dir in [
        HOST_KEYS,
        "state/home/ballast/.ssh",
        "run/sshd",
        "var/tmp",
        "run/ballast-users",
        LAYERS,
    ] {
        std::fs::create_dir_all(at(dir))
            .map_err(|e| format!("cannot create {}: {e}", at(dir).display()))?;
    }
    let key = at(HOST_KEYS).join("ssh_host_ed25519_key");
    if hostkey::ensure(&key, &comment(root))? {
        say(&format!(
            "generated host key /{HOST_KEYS}/ssh_host_ed25519_key"
        ));
    }
    // /var/tmp: the documented place to stage an update bundle (scp it there,
    // then `osctl upgrade /var/tmp/FILE`). /var is the state partition's,
    // which starts empty.
    chmod(&at("var/tmp"), 0o1777)?;
    links(root, mounts);

    let layers = at(LAYERS);
    let etc = layers.join("etc");
    if mounts {
        let flags = MountFlags::NOSUID | MountFlags::NODEV;
        mount(
            Path::new("admin-etc"),
            &layers,
            "tmpfs",
            flags,
            "mode=0755,size=64m",
        )
        .map_err(|e| e.to_string())?;
    }
    for d in ["upper", "work", "etc"] {
        std::fs::create_dir_all(layers.join(d))
            .map_err(|e| format!("cannot create {}: {e}", layers.join(d).display()))?;
    }
    if mounts {
        let data = format!(
            "lowerdir=/etc,upperdir={0}/upper,workdir={0}/work",
            layers.display()
        );
        mount(
            Path::new("admin-etc"),
            &etc,
            "overlay",
            MountFlags::empty(),
            &data,
        )
        .map_err(|e| e.to_string())?;
    }
    let l = firstboot::Layout {
        root: root.to_path_buf(),
        on_device: mounts,
    };
    for e in firstboot::lay_config_over(&l, &etc) {
        say(&e);
    }
    allow_users(root, &l.users())?;
    if mounts {
        bind(&etc, &at("etc")).map_err(|e| format!("{e}; the admin's /etc stays the image's"))?;
        if let Err(e) = bind(&at("state/home"), &at("home")) {
            say(&format!("{e}; /home is not /state/home"));
        }
    }
    // Read after the bind: the merged files, as the admin sees them.
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let homes = std::fs::read_to_string(l.users().join("homes")).unwrap_or_default();
    let keys = l.users().join("keys");
    let mut users = vec!["ballast".to_string()];
    if let Ok(rd) = std::fs::read_dir(&keys) {
        let mut more: Vec<String> = rd
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "ballast")
            .collect();
        more.sort();
        users.extend(more);
    }
    for name in users {
        let mut sources = Vec::new();
        if name == "ballast" && at(IMAGE_KEYS).is_file() {
            sources.push(at(IMAGE_KEYS));
        }
        if keys.join(&name).is_file() {
            sources.push(keys.join(&name));
        }
        match install_keys(root, &name, &passwd, &homes, &sources) {
            Ok(Some(note)) => say(&note),
            Ok(None) => {}
            Err(e) => say(&e),
        }
    }
    Ok(())
}

/// The key's comment, as ssh-keygen writes it: `root@HOSTNAME`.
fn comment(root: &Path) -> String {
    let host = std::fs::read_to_string(root.join("proc/sys/kernel/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("root@{}", if host.is_empty() { "ballast" } else { &host })
}

fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {:o} {}: {e}", mode, path.display()))
}

fn bind(from: &Path, to: &Path) -> Result<(), String> {
    rustix::mount::mount_bind(from, to)
        .map_err(|e| format!("cannot bind {} to {}: {e}", from.display(), to.display()))
}

/// `ln -sf TARGET LINK`.
fn symlink(target: &str, link: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(link).is_ok() {
        std::fs::remove_file(link)?;
    }
    std::os::unix::fs::symlink(target, link)
}

/// The user container engine's socket is `/run/ballast/docker.sock`; the
/// docker CLI's default path leads there. With engine = "containerd", ctr's
/// default address and FIFO directory lead to the engine's, and its
/// snapshots are at their own path so ctr (as root) can mount them.
fn links(root: &Path, mounts: bool) {
    let at = |p: &str| root.join(p);
    let mut problems = Vec::new();
    if std::fs::symlink_metadata(at("var/run")).is_err() {
        if let Err(e) = std::os::unix::fs::symlink("/run", at("var/run")) {
            problems.push(format!("cannot link /var/run to /run: {e}"));
        }
    }
    if let Err(e) = symlink("/run/ballast/docker.sock", &at("run/docker.sock")) {
        problems.push(format!("cannot link /run/docker.sock: {e}"));
    }
    if at(CONTAINERD).is_dir() {
        for d in [
            "run/containerd",
            "state/var/lib/containerd",
            "var/lib/containerd",
        ] {
            if let Err(e) = std::fs::create_dir_all(at(d)) {
                problems.push(format!("cannot create /{d}: {e}"));
            }
        }
        for (target, link) in [
            (
                "/run/ballast/containerd.sock",
                "run/containerd/containerd.sock",
            ),
            ("/run/ballast/containerd/fifo", "run/containerd/fifo"),
        ] {
            if let Err(e) = symlink(target, &at(link)) {
                problems.push(format!("cannot link /{link}: {e}"));
            }
        }
        if mounts {
            if let Err(e) = bind(&at("state/var/lib/containerd"), &at("var/lib/containerd")) {
                problems.push(format!("{e}; ctr run will not find its snapshots"));
            }
        }
    }
    for p in problems {
        say(&p);
    }
}

/// sshd's config with the config's `AllowUsers` line, when it names users.
fn allow_users(root: &Path, users: &Path) -> Result<(), String> {
    let allow = std::fs::read_to_string(users.join("allow_users")).unwrap_or_default();
    let allow = allow.trim_end_matches('\n');
    let merged = root.join(MERGED_SSHD_CONFIG);
    if allow.trim().is_empty() {
        let _ = std::fs::remove_file(&merged);
        return Ok(());
    }
    let image = root.join(IMAGE_SSHD_CONFIG);
    let text = std::fs::read_to_string(&image)
        .map_err(|e| format!("cannot read {}: {e}", image.display()))?;
    let out: String = text
        .lines()
        .map(|l| {
            if l.starts_with("AllowUsers ") {
                format!("AllowUsers {allow}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&merged, out).map_err(|e| format!("cannot write {}: {e}", merged.display()))
}

/// One user's `authorized_keys`: `sources` one after another, written whole,
/// the home made if missing and handed to the user (its `.ssh` 0700, the
/// file 0600). `None` when done; a note when the user gets no keys.
fn install_keys(
    root: &Path,
    name: &str,
    passwd: &str,
    homes: &str,
    sources: &[PathBuf],
) -> Result<Option<String>, String> {
    let Some((uid, gid, home)) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[0] == name).then(|| (f[2].parse().ok(), f[3].parse().ok(), f[5]))
    }) else {
        return Ok(Some(format!(
            "user {name} has no /etc/passwd entry; no keys installed"
        )));
    };
    let (Some(uid), Some(gid)) = (uid, gid) else {
        return Ok(Some(format!(
            "user {name}'s /etc/passwd entry has no numeric uid and gid; no keys installed"
        )));
    };
    if home.is_empty() {
        return Ok(Some(format!(
            "user {name} has no home in /etc/passwd; no keys installed"
        )));
    }
    let home_at = root.join(home.trim_start_matches('/'));
    if !home_at.is_dir() && homes.lines().any(|l| l == format!("{name} keep")) {
        return Ok(Some(format!(
            "user {name} has no home ({home}: no_create_home or a system user); no keys installed"
        )));
    }
    let ssh = home_at.join(".ssh");
    std::fs::create_dir_all(&ssh).map_err(|e| format!("cannot create {}: {e}", ssh.display()))?;
    let mut text = Vec::new();
    for s in sources {
        let bytes = std::fs::read(s).map_err(|e| format!("cannot read {}: {e}", s.display()))?;
        text.extend_from_slice(&bytes);
    }
    let file = ssh.join("authorized_keys");
    ballast_device::atomic::write_atomic_mode(&file, &text, 0o600).map_err(|e| e.to_string())?;
    chown_tree(&home_at, uid, gid)?;
    chmod(&ssh, 0o700)?;
    Ok(None)
}

/// `chown -R UID:GID DIR`: every entry below `dir` and `dir` itself, symbolic
/// links themselves (never what they point to).
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    let owner = (
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    );
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p)
            .map_err(|e| format!("cannot chown {}: {e}", p.display()))?;
        if meta.uid() != uid || meta.gid() != gid {
            rustix::fs::chownat(
                rustix::fs::CWD,
                &p,
                owner.0,
                owner.1,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| format!("cannot chown {}: {e}", p.display()))?;
        }
        if meta.is_dir() {
            let rd =
                std::fs::read_dir(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
