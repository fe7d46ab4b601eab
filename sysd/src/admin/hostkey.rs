//! An SSH host key of type ed25519, made here rather than by `ssh-keygen`:
//! on a first boot, starting `ssh-keygen` means reading it and OpenSSL's
//! libcrypto cold from the verified root (about 0.5 s under QEMU's TCG),
//! and sshd waits for this key. The files are the ones
//! `ssh-keygen -t ed25519 -N '' -f FILE` writes, which sshd and `ssh-keygen`
//! read:
//! - `FILE`, mode 0600: PROTOCOL.key's `openssh-key-v1` container, not
//!   encrypted (cipher and KDF `none`), one key, in PEM-style armour with
//!   lines of 70 base64 characters;
//! - `FILE.pub`, mode 0644: `ssh-ed25519 BASE64 COMMENT` (RFC 8709's key
//!   blob).
//!
//! The seed comes from the kernel's random pool (getrandom, through ring,
//! which waits until the pool is initialised); the public key from ring's
//! Ed25519 (RFC 8032).

use std::path::{Path, PathBuf};

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};

const KEY_TYPE: &str = "ssh-ed25519";
const ARMOUR_BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const ARMOUR_END: &str = "-----END OPENSSH PRIVATE KEY-----";
/// Base64 characters per armour line, as ssh-keygen writes them.
const LINE: usize = 70;
/// The private section is padded to the cipher's block size; `none`'s is 8.
const BLOCK: usize = 8;

/// A new ed25519 key: its 32-byte seed and 32-byte public key.
pub struct Ed25519 {
    seed: [u8; 32],
    public: [u8; 32],
}

impl Ed25519 {
    pub fn generate() -> Result<Ed25519, String> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| "the kernel gave no random bytes (getrandom failed)".to_string())?;
        Ed25519::from_seed(seed)
    }

    pub fn from_seed(seed: [u8; 32]) -> Result<Ed25519, String> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| format!("cannot make an ed25519 key from its seed: {e}"))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(Ed25519 { seed, public })
    }

    /// RFC 8709's public key blob: the type, then the 32 bytes.
    fn blob(&self) -> Vec<u8> {
        let mut b = Vec::new();
        put_string(&mut b, KEY_TYPE.as_bytes());
        put_string(&mut b, &self.public);
        b
    }

    /// The `.pub` file's line.
    pub fn public_line(&self, comment: &str) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.blob());
        format!("{KEY_TYPE} {b64} {comment}\n")
    }

    /// The private key file's text. `check` is the pair of equal words
    /// that tells a wrong passphrase from a right one (random in a real key).
    pub fn private_text(&self, comment: &str, check: u32) -> String {
        let mut private = Vec::new();
        private.extend_from_slice(&check.to_be_bytes());
        private.extend_from_slice(&check.to_be_bytes());
        put_string(&mut private, KEY_TYPE.as_bytes());
        put_string(&mut private, &self.public);
        // OpenSSH's ed25519 secret key is the seed followed by the public key.
        let mut secret = Vec::with_capacity(64);
        secret.extend_from_slice(&self.seed);
        secret.extend_from_slice(&self.public);
        put_string(&mut private, &secret);
        put_string(&mut private, comment.as_bytes());
        let mut pad = 1u8;
        while private.len() % BLOCK != 0 {
            private.push(pad);
            pad += 1;
        }

        let mut body = b"openssh-key-v1\0".to_vec();
        put_string(&mut body, b"none");
        put_string(&mut body, b"none");
        put_string(&mut body, b"");
        body.extend_from_slice(&1u32.to_be_bytes());
        put_string(&mut body, &self.blob());
        put_string(&mut body, &private);

        let b64 = base64::engine::general_purpose::STANDARD.encode(body);
        let mut text = format!("{ARMOUR_BEGIN}\n");
        for chunk in b64.as_bytes().chunks(LINE) {
            text.push_str(&String::from_utf8_lossy(chunk));
            text.push('\n');
        }
        text.push_str(ARMOUR_END);
        text.push('\n');
        text
    }
}

/// SSH's `string`: a 32-bit big-endian length, then the bytes.
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Make `key` and `key.pub` unless `key` exists. Each file appears whole:
/// written under a temporary name, then renamed, the public one first (as
/// the start script did), so sshd never loads half a key. Whether a key was
/// made.
pub fn ensure(key: &Path, comment: &str) -> Result<bool, String> {
    if key.exists() {
        return Ok(false);
    }
    let k = Ed25519::generate()?;
    let mut check = [0u8; 4];
    SystemRandom::new()
        .fill(&mut check)
        .map_err(|_| "the kernel gave no random bytes (getrandom failed)".to_string())?;
    let public = with_suffix(key, ".pub");
    write_new(&public, k.public_line(comment).as_bytes(), 0o644)?;
    write_new(
        key,
        k.private_text(comment, u32::from_be_bytes(check))
            .as_bytes(),
        0o600,
    )?;
    Ok(true)
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Write `path` whole (`.tmp` beside it with `mode`, synced, renamed).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    ballast_device::atomic::write_atomic_mode(path, bytes, mode).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// RFC 8032's test 1: the seed and the public key it gives.
    #[test]
    fn the_public_key_is_rfc_8032s() {
        let seed = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let k = Ed25519::from_seed(seed.try_into().unwrap()).unwrap();
        assert_eq!(
            k.public.to_vec(),
            hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
        let line = k.public_line("root@test");
        assert!(
            line.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"),
            "{line}"
        );
        assert!(line.ends_with(" root@test\n"), "{line}");
    }

    #[test]
    fn the_private_file_is_armoured_in_lines_of_70_and_padded_to_8() {
        let k = Ed25519::from_seed([7; 32]).unwrap();
        let text = k.private_text("a comment of some length", 0x0102_0304);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&ARMOUR_BEGIN));
        assert_eq!(lines.last(), Some(&ARMOUR_END));
        let body = &lines[1..lines.len() - 1];
        assert!(body[..body.len() - 1].iter().all(|l| l.len() == LINE));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(body.concat())
            .unwrap();
        assert!(raw.starts_with(b"openssh-key-v1\0"));
        // The private section is the last string; its length is a multiple of 8.
        let len = raw.len();
        let mut at = 15;
        let mut strings = Vec::new();
        while at < len {
            if strings.len() == 3 {
                at += 4; // the number of keys
            }
            let n = u32::from_be_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
            strings.push(raw[at + 4..at + 4 + n].to_vec());
            at += 4 + n;
        }
        assert_eq!(
            strings.len(),
            5,
            "cipher, kdf, kdf options, public, private"
        );
        assert_eq!(strings[0], b"none");
        assert_eq!(strings[1], b"none");
        assert_eq!(strings[4].len() % BLOCK, 0);
        assert_eq!(&strings[4][..8], &[1, 2, 3, 4, 1, 2, 3, 4]);
    }

    /// The judge is OpenSSH's own ssh-keygen: it reads the private file,
    /// gives the same public key, and signs with it so that the public key
    /// verifies the signature (a wrong secret half would not).
    #[test]
    fn ssh_keygen_reads_the_key_and_its_signatures_verify() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("ssh_host_ed25519_key");
        assert!(ensure(&key, "root@ballast").unwrap());
        assert!(!ensure(&key, "root@ballast").unwrap(), "made twice");
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
                & 0o777
        };
        assert_eq!(mode(&key), 0o600);
        let public = d.path().join("ssh_host_ed25519_key.pub");
        assert_eq!(mode(&public), 0o644);
        assert!(!d.path().join("ssh_host_ed25519_key.tmp").exists());

        let out = Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&key)
            .output()
            .expect("ssh-keygen (openssh-client) is installed by scripts/setup");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let derived = String::from_utf8_lossy(&out.stdout).to_string();
        let written = std::fs::read_to_string(&public).unwrap();
        let two = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        assert_eq!(two(&derived), two(&written));

        let data = d.path().join("data");
        std::fs::write(&data, b"ballast").unwrap();
        let sign = Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", "file", "-f"])
            .arg(&key)
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            sign.status.success(),
            "{}",
            String::from_utf8_lossy(&sign.stderr)
        );
        let signers = d.path().join("allowed_signers");
        std::fs::write(&signers, format!("host@ballast {}\n", two(&written))).unwrap();
        let verify = Command::new("ssh-keygen")
            .args(["-Y", "verify", "-n", "file", "-I", "host@ballast", "-f"])
            .arg(&signers)
            .arg("-s")
            .arg(d.path().join("data.sig"))
            .stdin(std::fs::File::open(&data).unwrap())
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
