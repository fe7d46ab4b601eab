//! The admin environment's `/etc`: what the config puts there besides the
//! account files (those are `users`'s): `write_files` under `/etc`, the time
//! zone and the CA bundle.
//!
//! Where each path lives:
//! - the host's `/etc` is an overlay on the state partition (init mounts it);
//!   sysd writes the config's files there, for the host's own programs;
//! - the admin environment (the SSH container) runs on the image's read-only
//!   userland; its start script copies the userland's `/etc` to a private
//!   tmpfs, lays the tree kept here, `/state/ballast/config/etc/`, over it,
//!   then the account files, and binds the result on `/etc`. So every file the
//!   config writes under `/etc` is also written into that tree, and what an
//!   admin reads over SSH (`cat /etc/motd`, `date`, `id alice`) is the config's;
//! - `/var` of the admin environment is the host's `/var` (the state
//!   partition's `var`), so `write_files` under `/var` needs no copy;
//! - the CA bundle also goes to `/run/ballast/ca-certificates.crt`, which the
//!   Docker engine's start script binds over its own
//!   `/etc/ssl/certs/ca-certificates.crt` (registry pulls trust the config's CAs).
//!
//! This module never touches the image's userland (read-only) and never
//! deletes a file it did not write: only the time zone and CA files are
//! removed again when the config stops naming them.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ballast_config::CaCerts;

use ballast_device::atomic::{sync_dir, write_atomic_mode, AtomicError};

use super::apply::{Layout, USERLAND};

/// Where the image's zone data lives, in the userland and in the admin environment.
const ZONEINFO: &str = "usr/share/zoneinfo";
/// Debian's CA bundle path (what OpenSSL, curl and Go read).
pub const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// The tree laid over the admin environment's `/etc` (see the module doc).
pub fn tree(l: &Layout) -> PathBuf {
    l.etc_tree()
}

/// The copy of a `/etc/...` path in the admin tree; `None` for other paths.
pub fn tree_path(l: &Layout, path: &str) -> Option<PathBuf> {
    let rest = path.strip_prefix("/etc/")?;
    Some(tree(l).join(rest))
}

/// The time zone was not applied: which zone or file, and why.
#[derive(Debug, thiserror::Error)]
pub enum TimezoneError {
    #[error("timezone {zone}: not a zone name (e.g. Europe/Berlin, America/New_York, UTC)")]
    NotAZone { zone: String },
    #[error(
        "timezone {zone}: no such zone in the image's zone data (/{ZONEINFO}); the clock stays UTC"
    )]
    NoSuchZone { zone: String },
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot link {} to {target}: {source}", at.display())]
    Link {
        at: PathBuf,
        target: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] AtomicError),
}

/// Check a zone name: a relative path of the image's zone data, no `..`.
pub fn zone_file(l: &Layout, zone: &str) -> Result<PathBuf, TimezoneError> {
    if zone.is_empty()
        || zone.starts_with('/')
        || zone.split('/').any(|c| c == ".." || c.is_empty())
    {
        return Err(TimezoneError::NotAZone { zone: zone.into() });
    }
    let file = l.userland().join(ZONEINFO).join(zone);
    if !file.is_file() {
        return Err(TimezoneError::NoSuchZone { zone: zone.into() });
    }
    Ok(file)
}

fn symlink(target: &str, at: &Path) -> Result<(), TimezoneError> {
    if let Some(dir) = at.parent() {
        std::fs::create_dir_all(dir).map_err(|source| TimezoneError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    let tmp = at.with_extension("tmp-link");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .and_then(|()| std::fs::rename(&tmp, at))
        .map_err(|source| TimezoneError::Link {
            at: at.to_path_buf(),
            target: target.into(),
            source,
        })?;
    // The rename is durable only once its directory is synced, like a file's.
    sync_dir(at.parent().unwrap_or(Path::new("/")))?;
    Ok(())
}

fn remove(p: &Path) {
    let _ = std::fs::remove_file(p);
}

/// `timezone`: `/etc/timezone` and `/etc/localtime` in the admin tree (a link
/// into the userland's zone data) and on the host (a link to the same file
/// through the userland's host path). `None`: both removed (UTC).
pub fn timezone(l: &Layout, zone: Option<&str>, errors: &mut Vec<String>) {
    let t = tree(l);
    let zone = match zone {
        Some(z) if !matches!(z, "UTC" | "Etc/UTC") => z,
        _ => {
            for p in [t.join("timezone"), t.join("localtime")] {
                remove(&p);
            }
            // Only what this module made: a link into the userland's zone data.
            if l.p("etc/localtime").is_symlink() {
                remove(&l.p("etc/localtime"));
                remove(&l.p("etc/timezone"));
            }
            return;
        }
    };
    if let Err(e) = zone_file(l, zone) {
        errors.push(format!("config: {e}"));
        return;
    }
    let line = format!("{zone}\n");
    let in_admin = format!("/{ZONEINFO}/{zone}");
    let on_host = format!("{USERLAND}/{ZONEINFO}/{zone}");
    for res in [
        write_atomic_mode(&t.join("timezone"), line.as_bytes(), 0o644).map_err(TimezoneError::from),
        symlink(&in_admin, &t.join("localtime")),
        write_atomic_mode(&l.p("etc/timezone"), line.as_bytes(), 0o644)
            .map_err(TimezoneError::from),
        symlink(&on_host, &l.p("etc/localtime")),
    ] {
        if let Err(e) = res {
            errors.push(format!("config: timezone: {e}"));
        }
    }
}

/// The CA bundle: the image's (unless `remove_defaults`) then the config's
/// certificates, each ending in a newline.
pub fn ca_bundle(image_bundle: &str, ca: &CaCerts) -> String {
    let mut out = String::new();
    if !ca.remove_defaults {
        out.push_str(image_bundle);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    }
    for c in &ca.trusted {
        out.push_str(c.trim_end());
        out.push('\n');
    }
    out
}

/// `ca_certs`: the bundle in the admin tree and for the engine (see the
/// module doc); `None`: both removed (the image's bundle applies).
pub fn ca_certs(l: &Layout, ca: Option<&CaCerts>, errors: &mut Vec<String>) {
    // The tree mirrors /etc: the bundle's path without its `etc/`.
    let admin = tree(l).join(CA_BUNDLE.trim_start_matches("etc/"));
    let engine = l.engine_ca_bundle();
    let Some(ca) = ca else {
        remove(&admin);
        remove(&engine);
        return;
    };
    for (i, c) in ca.trusted.iter().enumerate() {
        if !c.contains("-----BEGIN CERTIFICATE-----") {
            errors.push(format!(
                "config: ca_certs.trusted[{i}]: not a PEM certificate (-----BEGIN CERTIFICATE-----); left out"
            ));
        }
    }
    let kept = CaCerts {
        remove_defaults: ca.remove_defaults,
        trusted: ca
            .trusted
            .iter()
            .filter(|c| c.contains("-----BEGIN CERTIFICATE-----"))
            .cloned()
            .collect(),
    };
    let image = std::fs::read_to_string(l.userland().join(CA_BUNDLE)).unwrap_or_default();
    let bundle = ca_bundle(&image, &kept);
    for p in [admin, engine] {
        if let Err(e) = write_atomic_mode(&p, bundle.as_bytes(), 0o644) {
            errors.push(format!("config: ca_certs: {e}"));
        }
    }
}

/// The admin environment's sshd: sysd's child named `sshd` (the SSH
/// service's start script execs it in the container's mount namespace).
fn admin_pid(l: &Layout) -> Option<u32> {
    let me = std::process::id().to_string();
    let rd = std::fs::read_dir(l.p("proc")).ok()?;
    rd.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // `pid (comm) state ppid ...`; comm may hold spaces, so split at ')'.
        let (head, tail) = stat.rsplit_once(')')?;
        let comm = head.split_once('(')?.1;
        let ppid = tail.split_whitespace().nth(1)?;
        (comm == "sshd" && ppid == me).then_some(pid)
    })
}

/// `cp -a FROM/. TO/`: directories, files and symbolic links, each with
/// its owner and mode (a `write_files` entry may name an owner).
fn copy_tree(from: &Path, to: &Path, errors: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(from) else {
        return;
    };
    for e in rd.flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let Ok(meta) = std::fs::symlink_metadata(&src) else {
            continue;
        };
        let res = if meta.is_dir() {
            std::fs::create_dir_all(&dst)
                .and_then(|()| std::fs::set_permissions(&dst, meta.permissions()))
                .map(|()| copy_tree(&src, &dst, errors))
        } else if meta.file_type().is_symlink() {
            std::fs::read_link(&src).and_then(|t| {
                let _ = std::fs::remove_file(&dst);
                std::os::unix::fs::symlink(t, &dst)
            })
        } else {
            std::fs::copy(&src, &dst).map(|_| ())
        }
        .and_then(|()| {
            rustix::fs::chownat(
                rustix::fs::CWD,
                &dst,
                Some(rustix::fs::Uid::from_raw(meta.uid())),
                Some(rustix::fs::Gid::from_raw(meta.gid())),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(std::io::Error::from)
        });
        if let Err(e) = res {
            errors.push(format!("config: cannot update {}: {e}", dst.display()));
        }
    }
}

/// `cp SRC DST`: the bytes written into `dst` in place, so a file that is
/// there keeps its owner and mode; a new one gets `src`'s mode.
fn copy_in_place(src: &Path, dst: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(src)?;
    let mode = std::fs::metadata(src)?.permissions().mode();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o7777)
        .open(dst)?;
    f.write_all(&bytes)
}

/// Lay the config over `etc`, an admin environment's `/etc`: the tree of
/// `/etc` files ([`tree`]), then the merged account files, the host name and
/// the sudoers rules. The SSH container's start does this over its fresh
/// copy of the userland's `/etc` (`sysd --admin-setup`), and
/// `osctl config apply` over a running one's ([`refresh_admin`]). shadow is
/// left 0640 and of group shadow, which pam_unix's helper reads it by
/// (0600 where the group is unknown), with a config or without one: never
/// readable by all. Errors, if any.
pub fn lay_config_over(l: &Layout, etc: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    copy_tree(&tree(l), etc, &mut errors);
    let users = l.users();
    let mut fail = |what: &Path, e: std::io::Error| {
        errors.push(format!("config: cannot update {}: {e}", what.display()));
    };
    let accounts = users.join("passwd").is_file();
    for f in ["passwd", "group", "shadow", "hosts", "hostname"] {
        if accounts && users.join(f).is_file() {
            if let Err(e) = copy_in_place(&users.join(f), &etc.join(f)) {
                fail(&etc.join(f), e);
            }
        }
    }
    let shadow = etc.join("shadow");
    if shadow.is_file() {
        let group = std::fs::read_to_string(etc.join("group")).unwrap_or_default();
        let gid = group.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[0] == "shadow").then(|| f[2].parse::<u32>().ok())?
        });
        let owned = gid.map(|g| {
            rustix::fs::chown(&shadow, None, Some(rustix::fs::Gid::from_raw(g)))
                .map_err(std::io::Error::from)
        });
        let mode = if matches!(owned, Some(Ok(()))) {
            0o640
        } else {
            0o600
        };
        if let Err(e) = std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(mode)) {
            fail(&shadow, e);
        }
    }
    let sudoers = users.join("sudoers");
    if accounts && sudoers.is_file() {
        let dst = etc.join("sudoers.d/90-config");
        let res = std::fs::create_dir_all(etc.join("sudoers.d"))
            .and_then(|()| copy_in_place(&sudoers, &dst))
            .and_then(|()| std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o440)));
        if let Err(e) = res {
            fail(&dst, e);
        }
    }
    errors
}

/// `osctl config apply`: update the running admin environment's `/etc` in
/// place (through `/proc/PID/root`), so open SSH sessions see the new files
/// without a restart. Its copy is a tmpfs the start made: this writes only
/// there, never into the image. Errors, if any.
pub fn refresh_admin(l: &Layout) -> Vec<String> {
    let Some(pid) = admin_pid(l) else {
        return Vec::new();
    };
    lay_config_over(l, &l.p(&format!("proc/{pid}/root/etc")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> (tempfile::TempDir, Layout) {
        let d = tempfile::tempdir().unwrap();
        let zi = d.path().join("usr/lib/ballast/userland").join(ZONEINFO);
        std::fs::create_dir_all(zi.join("Europe")).unwrap();
        std::fs::write(zi.join("Europe/Berlin"), b"TZif2").unwrap();
        let certs = d.path().join("usr/lib/ballast/userland").join(CA_BUNDLE);
        std::fs::create_dir_all(certs.parent().unwrap()).unwrap();
        std::fs::write(&certs, "IMAGE CA\n").unwrap();
        let l = Layout {
            root: d.path().to_path_buf(),
            on_device: false,
        };
        (d, l)
    }

    #[test]
    fn a_zone_links_localtime_in_the_admin_tree_and_on_the_host() {
        let (d, l) = layout();
        let mut e = Vec::new();
        timezone(&l, Some("Europe/Berlin"), &mut e);
        assert!(e.is_empty(), "{e:?}");
        let t = d.path().join("state/ballast/config/etc");
        assert_eq!(
            std::fs::read_to_string(t.join("timezone")).unwrap(),
            "Europe/Berlin\n"
        );
        assert_eq!(
            std::fs::read_link(t.join("localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Europe/Berlin")
        );
        assert_eq!(
            std::fs::read_link(d.path().join("etc/localtime")).unwrap(),
            Path::new("/usr/lib/ballast/userland/usr/share/zoneinfo/Europe/Berlin")
        );
        // Back to UTC: the files go.
        timezone(&l, None, &mut e);
        assert!(!t.join("localtime").is_symlink());
        assert!(!d.path().join("etc/timezone").exists());
    }

    #[test]
    fn an_unknown_or_hostile_zone_is_an_error_and_writes_nothing() {
        let (d, l) = layout();
        for z in ["Mars/Olympus", "../../etc/shadow", "/etc/passwd"] {
            let mut e = Vec::new();
            timezone(&l, Some(z), &mut e);
            assert_eq!(e.len(), 1, "{z}: {e:?}");
        }
        assert!(!d.path().join("state/ballast/config/etc/localtime").exists());
    }

    #[test]
    fn the_ca_bundle_adds_to_or_replaces_the_images() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        let add = CaCerts {
            remove_defaults: false,
            trusted: vec![pem.into()],
        };
        assert_eq!(ca_bundle("IMAGE CA", &add), format!("IMAGE CA\n{pem}\n"));
        let only = CaCerts {
            remove_defaults: true,
            ..add.clone()
        };
        assert_eq!(ca_bundle("IMAGE CA\n", &only), format!("{pem}\n"));

        let (d, l) = layout();
        let mut e = Vec::new();
        let with_junk = CaCerts {
            remove_defaults: false,
            trusted: vec![pem.into(), "not a cert".into()],
        };
        ca_certs(&l, Some(&with_junk), &mut e);
        assert_eq!(e.len(), 1, "{e:?}");
        let admin = d
            .path()
            .join("state/ballast/config/etc/ssl/certs/ca-certificates.crt");
        let engine = d.path().join("run/ballast/ca-certificates.crt");
        assert_eq!(
            std::fs::read_to_string(&admin).unwrap(),
            format!("IMAGE CA\n{pem}\n")
        );
        assert_eq!(
            std::fs::read_to_string(&engine).unwrap(),
            std::fs::read_to_string(&admin).unwrap()
        );
        ca_certs(&l, None, &mut e);
        assert!(!admin.exists() && !engine.exists());
    }
}
