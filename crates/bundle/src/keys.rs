//! Signing keys: generating them, and the one-line text files they live in.
//! Secret: `ballast-ed25519-secret <hex seed>`; public: `ballast-ed25519 <hex key> [comment]`.
//! The secret file is created mode 0600 and an existing key is never overwritten.

use crate::BundleError;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const SECRET_TAG: &str = "ballast-ed25519-secret";
const PUBLIC_TAG: &str = "ballast-ed25519";

/// A trusted public key and its id (first 16 hex chars of sha256 of the key bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub id: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// The key from its 32 bytes; fails when they are not a valid curve point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<PublicKey> {
        VerifyingKey::from_bytes(bytes)
            .ok()
            .map(PublicKey::from_verifying)
    }

    fn from_verifying(key: VerifyingKey) -> PublicKey {
        let digest = Sha256::digest(key.as_bytes());
        PublicKey {
            id: hex::encode(&digest[..8]),
            key,
        }
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public key file's text: one line, ending in a newline.
    pub fn to_text(&self, comment: &str) -> String {
        let comment = comment.trim();
        if comment.is_empty() {
            format!("{PUBLIC_TAG} {}\n", hex::encode(self.key.as_bytes()))
        } else {
            // One line: a newline in the comment would make a second, unparsable one.
            let comment = comment.replace(['\n', '\r'], " ");
            format!(
                "{PUBLIC_TAG} {} {comment}\n",
                hex::encode(self.key.as_bytes())
            )
        }
    }

    /// Strict ed25519 verification (rejects small-order keys and malleable signatures).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = Signature::from_bytes(signature);
        self.key.verify_strict(message, &sig).is_ok()
    }
}

/// A secret signing key.
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "Signer({})", self.public().id)
    }
}

impl Signer {
    pub fn from_seed(seed: &[u8; 32]) -> Signer {
        Signer {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Signer, BundleError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|err| BundleError::Key {
            path: PathBuf::from("(random source)"),
            detail: format!("cannot read random bytes for a new key: {err}"),
        })?;
        Ok(Signer::from_seed(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::from_verifying(self.key.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    fn to_text(&self) -> String {
        format!("{SECRET_TAG} {}\n", hex::encode(self.key.to_bytes()))
    }
}

/// `PREFIX` + `suffix` (not `with_extension`: a prefix like `keys/v1.2` keeps its dot).
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes PREFIX.key (0600, refuses to overwrite either file) and PREFIX.pub;
/// returns (secret, public) paths.
pub fn generate(prefix: &Path, comment: &str) -> Result<(PathBuf, PathBuf), BundleError> {
    let secret_path = with_suffix(prefix, ".key");
    let public_path = with_suffix(prefix, ".pub");
    for path in [&secret_path, &public_path] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(BundleError::KeyExists { path: path.clone() });
        }
    }
    if let Some(dir) = secret_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| BundleError::io("creating key directory", dir, e))?;
    }
    let signer = Signer::generate()?;
    write_new(&secret_path, signer.to_text().as_bytes(), 0o600)?;
    if let Err(err) = write_new(
        &public_path,
        signer.public().to_text(comment).as_bytes(),
        0o644,
    ) {
        // A secret without its public half is useless and confusing: take it back.
        let _ = fs::remove_file(&secret_path);
        return Err(err);
    }
    Ok((secret_path, public_path))
}

/// Create `path` (never replacing anything) with `mode`, write, fsync.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BundleError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                BundleError::KeyExists {
                    path: path.to_path_buf(),
                }
            } else {
                BundleError::io("creating", path, e)
            }
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| BundleError::io("writing", path, e))
}

fn read_text(path: &Path) -> Result<String, BundleError> {
    fs::read_to_string(path).map_err(|e| BundleError::io("reading key file", path, e))
}

fn decode_32(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

/// Read a secret key file written by [`generate`].
pub fn read_secret(path: &Path) -> Result<Signer, BundleError> {
    let text = read_text(path)?;
    let bad = |detail: &str| BundleError::Key {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let mut words = text.split_whitespace();
    match words.next() {
        Some(SECRET_TAG) => {}
        Some(PUBLIC_TAG) => {
            return Err(bad(
                "this is a public key; signing needs the secret key (the PREFIX.key file from `ballast keygen`)",
            ))
        }
        _ => {
            return Err(bad(&format!(
                "not a Ballast secret key: expected one line `{SECRET_TAG} <64 hex digits>` (make one with `ballast keygen`)"
            )))
        }
    }
    let seed = words.next().and_then(decode_32).ok_or_else(|| {
        bad(&format!(
            "the seed after `{SECRET_TAG}` must be 64 hex digits (32 bytes)"
        ))
    })?;
    if words.next().is_some() {
        return Err(bad(
            "unexpected text after the seed; the file must hold one line",
        ));
    }
    Ok(Signer::from_seed(&seed))
}

/// Read a public key file.
pub fn read_public(path: &Path) -> Result<PublicKey, BundleError> {
    let text = read_text(path)?;
    parse_public(&text, &path.display().to_string())
}

/// Parse a public key file's text; `source` names it in errors.
pub fn parse_public(text: &str, source: &str) -> Result<PublicKey, BundleError> {
    let bad = |detail: String| BundleError::Key {
        path: PathBuf::from(source),
        detail,
    };
    let line = text.trim();
    if line.lines().count() > 1 {
        return Err(bad("a public key file holds one line".to_string()));
    }
    let mut words = line.split_whitespace();
    match words.next() {
        Some(PUBLIC_TAG) => {}
        Some(SECRET_TAG) => {
            return Err(bad(
                "this is a SECRET key: never install it on a device or share it; use the matching .pub file".to_string(),
            ))
        }
        _ => {
            return Err(bad(format!(
                "not a Ballast public key: expected `{PUBLIC_TAG} <64 hex digits> [comment]` (the PREFIX.pub file from `ballast keygen`)"
            )))
        }
    }
    let bytes = words.next().and_then(decode_32).ok_or_else(|| {
        bad(format!(
            "the key after `{PUBLIC_TAG}` must be 64 hex digits (32 bytes)"
        ))
    })?;
    PublicKey::from_bytes(&bytes)
        .ok_or_else(|| bad("the 32 bytes are not a valid ed25519 public key".to_string()))
}

/// All `*.pub` files in a directory (the device's /usr/lib/ballast/keys/),
/// sorted by file name; a missing directory means no keys.
pub fn read_dir(dir: &Path) -> Result<Vec<PublicKey>, BundleError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BundleError::io("listing trusted keys in", dir, e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| BundleError::io("listing trusted keys in", dir, e))?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "pub") {
            paths.push(path);
        }
    }
    paths.sort();
    paths.iter().map(|p| read_public(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_writes_0600_secret_and_matching_public_and_refuses_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("sub/release.v1");
        let (sec, public) = generate(&prefix, "release key").unwrap();
        assert_eq!(sec, dir.path().join("sub/release.v1.key"));
        assert_eq!(public, dir.path().join("sub/release.v1.pub"));
        let mode = fs::metadata(&sec).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let signer = read_secret(&sec).unwrap();
        let pk = read_public(&public).unwrap();
        assert_eq!(signer.public(), pk);
        assert_eq!(pk.id.len(), 16);
        assert!(fs::read_to_string(&public)
            .unwrap()
            .ends_with(" release key\n"));
        let before = fs::read(&sec).unwrap();
        let err = generate(&prefix, "again").unwrap_err();
        assert!(err.to_string().contains("release.v1.key"), "{err}");
        assert_eq!(fs::read(&sec).unwrap(), before);
        // Only the .pub left behind: still refused, and no stray secret created.
        fs::remove_file(&sec).unwrap();
        assert!(generate(&prefix, "")
            .unwrap_err()
            .to_string()
            .contains("release.v1.pub"));
        assert!(!sec.exists());
    }

    #[test]
    fn key_id_is_sha256_prefix_of_key_bytes() {
        let signer = Signer::from_seed(&[7; 32]);
        let pk = signer.public();
        let digest = Sha256::digest(pk.to_bytes());
        assert_eq!(pk.id, hex::encode(&digest[..8]));
    }

    #[test]
    fn parse_public_refuses_secret_and_garbage() {
        let signer = Signer::from_seed(&[1; 32]);
        let err = parse_public(&signer.to_text(), "x.pub")
            .unwrap_err()
            .to_string();
        assert!(err.contains("SECRET") && err.contains("x.pub"), "{err}");
        assert!(parse_public("ballast-ed25519 abcd", "y.pub").is_err());
        assert!(parse_public("ssh-ed25519 AAAA", "y.pub").is_err());
        let text = signer.public().to_text("a\nb");
        assert_eq!(parse_public(&text, "z").unwrap(), signer.public());
    }

    #[test]
    fn read_dir_sorted_only_pub_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_dir(&dir.path().join("none")).unwrap().is_empty());
        let b = Signer::from_seed(&[2; 32]).public();
        let a = Signer::from_seed(&[3; 32]).public();
        fs::write(dir.path().join("b.pub"), b.to_text("")).unwrap();
        fs::write(dir.path().join("a.pub"), a.to_text("")).unwrap();
        fs::write(dir.path().join("README"), "not a key").unwrap();
        assert_eq!(read_dir(dir.path()).unwrap(), vec![a, b]);
        fs::write(dir.path().join("c.pub"), "junk").unwrap();
        assert!(read_dir(dir.path())
            .unwrap_err()
            .to_string()
            .contains("c.pub"));
    }
}
