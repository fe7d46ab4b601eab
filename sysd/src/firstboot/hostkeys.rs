//! SSH host keys from the config (`ssh_keys`) and `ssh_deletekeys`.
//!
//! The SSH container keeps its host keys in `/state/ssh/ssh_host_TYPE_key`
//! (+ `.pub`, `-cert.pub`) and generates any that is missing when it starts.
//! sysd applies the config before that container starts, so:
//! - on a new instance with `ssh_deletekeys` (cloud-init's default), the old
//!   keys are deleted (the container then generates new ones), except those
//!   `ssh_keys` gives;
//! - the keys `ssh_keys` gives are written (private 0600, public and
//!   certificate 0644) on every boot, so they stay what the config says.
//!
//! Never writes a key type sshd does not know, never leaves a private key
//! readable by others.

use std::path::{Path, PathBuf};

use ballast_config::HostKey;

use ballast_device::atomic::write_atomic_mode;

use super::apply::Layout;

/// Key types sshd loads from the state partition (`HostKey` lines of the
/// container's `sshd_config`).
pub const KINDS: [&str; 3] = ["ed25519", "ecdsa", "rsa"];

pub fn dir(l: &Layout) -> PathBuf {
    l.p(ballast_device::paths::STATE).join("ssh")
}

fn key_path(dir: &Path, kind: &str) -> PathBuf {
    dir.join(format!("ssh_host_{kind}_key"))
}

/// Delete the host keys of every kind `keep` does not give (new instance,
/// `ssh_deletekeys`). Returns the files removed.
pub fn delete_old(l: &Layout, keep: &[HostKey], errors: &mut Vec<String>) -> Vec<PathBuf> {
    let d = dir(l);
    let mut gone = Vec::new();
    for kind in KINDS {
        if keep.iter().any(|k| k.kind == kind) {
            continue;
        }
        let base = key_path(&d, kind);
        for suffix in ["", ".pub", "-cert.pub"] {
            let mut p = base.clone().into_os_string();
            p.push(suffix);
            let p = PathBuf::from(p);
            match std::fs::remove_file(&p) {
                Ok(()) => gone.push(p),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!(
                    "config: ssh_deletekeys: cannot remove {}: {e}",
                    p.display()
                )),
            }
        }
    }
    gone
}

fn with_newline(s: &str) -> String {
    let mut t = s.trim_end().to_string();
    t.push('\n');
    t
}

/// Write the keys `ssh_keys` gives.
pub fn install(l: &Layout, keys: &[HostKey], errors: &mut Vec<String>) {
    let d = dir(l);
    for k in keys {
        if !KINDS.contains(&k.kind.as_str()) {
            errors.push(format!(
                "config: ssh_keys: {}_private: sshd on Ballast loads {} host keys only; left out",
                k.kind,
                KINDS.join(", ")
            ));
            continue;
        }
        if !k.private.contains("PRIVATE KEY-----") {
            errors.push(format!(
                "config: ssh_keys: {}_private: not a PEM/OpenSSH private key; left out",
                k.kind
            ));
            continue;
        }
        let base = key_path(&d, &k.kind);
        let mut files = vec![(base.clone(), with_newline(&k.private), 0o600)];
        let extra = |suffix: &str| {
            let mut p = base.clone().into_os_string();
            p.push(suffix);
            PathBuf::from(p)
        };
        match &k.public {
            Some(p) => files.push((extra(".pub"), with_newline(p), 0o644)),
            // A stale public key of another key would be served next to
            // this private key: drop it (sshd derives it from the private).
            None => {
                let _ = std::fs::remove_file(extra(".pub"));
            }
        }
        match &k.certificate {
            Some(c) => files.push((extra("-cert.pub"), with_newline(c), 0o644)),
            None => {
                let _ = std::fs::remove_file(extra("-cert.pub"));
            }
        }
        for (path, text, mode) in files {
            if let Err(e) = write_atomic_mode(&path, text.as_bytes(), mode) {
                errors.push(format!("config: ssh_keys: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const PRIV: &str =
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA=\n-----END OPENSSH PRIVATE KEY-----";

    fn key(kind: &str, public: Option<&str>) -> HostKey {
        HostKey {
            kind: kind.into(),
            private: PRIV.into(),
            public: public.map(str::to_string),
            certificate: None,
        }
    }

    fn layout_with_old_keys() -> (tempfile::TempDir, Layout) {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("state/ssh");
        std::fs::create_dir_all(&s).unwrap();
        for k in KINDS {
            std::fs::write(s.join(format!("ssh_host_{k}_key")), "old").unwrap();
            std::fs::write(s.join(format!("ssh_host_{k}_key.pub")), "old").unwrap();
        }
        let l = Layout {
            root: d.path().to_path_buf(),
            on_device: false,
        };
        (d, l)
    }

    #[test]
    fn given_keys_are_written_with_private_modes() {
        let (d, l) = layout_with_old_keys();
        let mut e = Vec::new();
        install(&l, &[key("ed25519", Some("ssh-ed25519 AAAA host"))], &mut e);
        assert!(e.is_empty(), "{e:?}");
        let p = d.path().join("state/ssh/ssh_host_ed25519_key");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{PRIV}\n"));
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let pubk = d.path().join("state/ssh/ssh_host_ed25519_key.pub");
        assert_eq!(
            std::fs::read_to_string(&pubk).unwrap(),
            "ssh-ed25519 AAAA host\n"
        );
        assert_eq!(
            std::fs::metadata(&pubk).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn deletekeys_removes_the_old_keys_but_not_the_given_ones() {
        let (d, l) = layout_with_old_keys();
        let mut e = Vec::new();
        let gone = delete_old(&l, &[key("rsa", None)], &mut e);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(gone.len(), 4, "{gone:?}");
        let s = d.path().join("state/ssh");
        assert!(!s.join("ssh_host_ed25519_key").exists());
        assert!(!s.join("ssh_host_ecdsa_key.pub").exists());
        assert!(s.join("ssh_host_rsa_key").exists());
    }

    #[test]
    fn unknown_kinds_and_non_keys_are_refused() {
        let (d, l) = layout_with_old_keys();
        let mut e = Vec::new();
        let mut bad = key("ed25519", None);
        bad.private = "hello".into();
        install(&l, &[key("dsa", None), bad], &mut e);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            std::fs::read_to_string(d.path().join("state/ssh/ssh_host_ed25519_key")).unwrap(),
            "old"
        );
    }
}
