//! Trusted OpenPGP keys and cleartext-signature verification of `InRelease`.
//!
//! This module owns the trust root of every build: the Debian archive signing
//! keys, shipped in the repository as data (`keys/*.gpg`, exported from
//! Debian's `debian-archive-keyring` for bookworm and trixie) and embedded with
//! `include_bytes!`, or read from a keyring file the caller names (for example
//! the host's `/usr/share/keyrings/debian-archive-keyring.gpg`).
//!
//! OpenPGP is done by the `pgp` crate (rPGP): pure Rust, maintained, audited,
//! used by Delta Chat and others, and it parses binary and armored keyrings and
//! cleartext-signed messages (RFC 9580 §7) directly. Sequoia would also do, but
//! it pulls a much larger dependency tree and its default crypto backend is
//! Nettle (C); gpgv would mean shelling out to a host tool we want not to need.
//!
//! What this module must never do: return text whose signature did not verify,
//! or accept a signature made by an expired or revoked key. It answers only
//! "which signed bytes does this message carry, and who signed them"; freshness
//! of the release itself (`Valid-Until`) is checked in `release.rs`.

use std::path::{Path, PathBuf};

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use pgp::packet::Signature;
use pgp::types::{KeyDetails, Timestamp};

/// The Debian archive keys shipped with Ballast (bookworm and trixie: archive,
/// security and stable release keys).
const EMBEDDED: &[(&str, &[u8])] = &[
    (
        "debian-archive-bookworm-automatic",
        include_bytes!("../keys/debian-archive-bookworm-automatic.gpg"),
    ),
    (
        "debian-archive-bookworm-security-automatic",
        include_bytes!("../keys/debian-archive-bookworm-security-automatic.gpg"),
    ),
    (
        "debian-archive-bookworm-stable",
        include_bytes!("../keys/debian-archive-bookworm-stable.gpg"),
    ),
    (
        "debian-archive-trixie-automatic",
        include_bytes!("../keys/debian-archive-trixie-automatic.gpg"),
    ),
    (
        "debian-archive-trixie-security-automatic",
        include_bytes!("../keys/debian-archive-trixie-security-automatic.gpg"),
    ),
    (
        "debian-archive-trixie-stable",
        include_bytes!("../keys/debian-archive-trixie-stable.gpg"),
    ),
];

/// The host keyring used when the caller asks for "the host's keyring".
pub const HOST_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Why a keyring could not be loaded or a signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read keyring {path}: {source}")]
    ReadKeyring {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("keyring {name}: not an OpenPGP public keyring: {message}")]
    ParseKeyring { name: String, message: String },
    #[error("keyring {name} holds no public keys")]
    EmptyKeyring { name: String },
    #[error(
        "{what}: not an OpenPGP cleartext-signed message ({message}); refusing an unsigned release"
    )]
    NotSigned { what: String, message: String },
    #[error("{what}: signed only by keys not in the trusted keyring (issuers: {issuers}); add the right keyring with --keyring")]
    UnknownSigner { what: String, issuers: String },
    #[error("{what}: BAD signature by trusted key {key}: the signed text was altered or the signature is corrupt")]
    BadSignature { what: String, key: String },
    #[error("{what}: signature by key {key} expired at unix time {expired_at}")]
    SignatureExpired {
        what: String,
        key: String,
        expired_at: u64,
    },
    #[error("{what}: signing key {key} expired at unix time {expired_at}; update the keyring")]
    KeyExpired {
        what: String,
        key: String,
        expired_at: u64,
    },
    #[error("{what}: signing key {key} has been revoked")]
    KeyRevoked { what: String, key: String },
}

/// One component key (primary or signing subkey) allowed to sign.
struct Signer {
    /// Fingerprint of the component key, hex upper-case.
    fingerprint: String,
    key_id: String,
    /// Unix time after which signatures by this key are refused.
    expires_at: Option<u64>,
    revoked: bool,
    key: ComponentKey,
    /// Which keyring file it came from (for messages).
    origin: String,
}

enum ComponentKey {
    Primary(pgp::packet::PublicKey),
    Sub(pgp::packet::PublicSubkey),
}

impl ComponentKey {
    fn verify(&self, sig: &Signature, data: &[u8]) -> bool {
        match self {
            ComponentKey::Primary(k) => sig.verify(k, data).is_ok(),
            ComponentKey::Sub(k) => sig.verify(k, data).is_ok(),
        }
    }
}

/// A set of trusted public keys.
pub struct Keyring {
    signers: Vec<Signer>,
}

/// The result of a successful verification.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The signed text with `\n` line endings (exactly the bytes that were signed,
    /// less the trailing newline the cleartext framework strips).
    pub text: String,
    /// Fingerprint of the component key that made the first good signature.
    pub signer: String,
    /// Name of the keyring file that key came from.
    pub origin: String,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.signers.iter().map(|s| &s.fingerprint))
            .finish()
    }
}

impl Keyring {
    /// The Debian archive keys compiled into Ballast.
    pub fn debian() -> Result<Self, TrustError> {
        let mut ring = Keyring {
            signers: Vec::new(),
        };
        for (name, bytes) in EMBEDDED {
            ring.add_bytes(name, bytes)?;
        }
        Ok(ring)
    }

    /// An empty keyring (add keys with [`Keyring::add_bytes`]).
    pub fn empty() -> Self {
        Keyring {
            signers: Vec::new(),
        }
    }

    /// Read a keyring file: binary (`.gpg`) or ASCII-armored (`.asc`), one or many keys.
    pub fn from_file(path: &Path) -> Result<Self, TrustError> {
        let bytes = std::fs::read(path).map_err(|source| TrustError::ReadKeyring {
            path: path.to_path_buf(),
            source,
        })?;
        let mut ring = Keyring::empty();
        ring.add_bytes(&path.display().to_string(), &bytes)?;
        Ok(ring)
    }

    /// The host's Debian archive keyring ([`HOST_KEYRING`]).
    pub fn host() -> Result<Self, TrustError> {
        Self::from_file(Path::new(HOST_KEYRING))
    }

    /// Number of component keys that may sign.
    pub fn len(&self) -> usize {
        self.signers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }

    /// Add every public key in `bytes` (binary or armored).
    pub fn add_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), TrustError> {
        let parse_err = |e: pgp::errors::Error| TrustError::ParseKeyring {
            name: name.to_string(),
            message: e.to_string(),
        };
        let armored = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .is_some_and(|i| bytes[i..].starts_with(b"-----BEGIN"));
        let keys: Vec<SignedPublicKey> = if armored {
            let (iter, _) = SignedPublicKey::from_armor_many(bytes).map_err(parse_err)?;
            iter.collect::<Result<_, _>>().map_err(parse_err)?
        } else {
            SignedPublicKey::from_bytes_many(bytes)
                .map_err(parse_err)?
                .collect::<Result<_, _>>()
                .map_err(parse_err)?
        };
        if keys.is_empty() {
            return Err(TrustError::EmptyKeyring {
                name: name.to_string(),
            });
        }
        for key in keys {
            self.add_key(name, key);
        }
        Ok(())
    }

    /// Add one transferable public key: its primary key and each subkey whose
    /// binding signature verifies and that is flagged for signing.
    pub fn add_key(&mut self, origin: &str, key: SignedPublicKey) {
        let primary = &key.primary_key;
        let revoked = key
            .details
            .revocation_signatures
            .iter()
            .any(|s| s.verify_key(primary).is_ok());
        // The newest self-signature on a user id or a direct-key signature carries
        // the primary key's expiry.
        let user_sigs = key.details.users.iter().flat_map(|u| {
            u.signatures.iter().filter(move |s| {
                s.verify_certification(primary, pgp::types::Tag::UserId, &u.id)
                    .is_ok()
            })
        });
        let direct_sigs = key
            .details
            .direct_signatures
            .iter()
            .filter(|s| s.verify_key(primary).is_ok());
        let newest = user_sigs
            .chain(direct_sigs)
            .max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0));
        let created = u64::from(primary.created_at().as_secs());
        let primary_expiry = newest
            .and_then(|s| s.key_expiration_time())
            .filter(|d| d.as_secs() > 0)
            .map(|d| created + u64::from(d.as_secs()));
        self.signers.push(Signer {
            fingerprint: hex::encode_upper(primary.fingerprint().as_bytes()),
            key_id: hex::encode_upper(primary.legacy_key_id().as_ref()),
            expires_at: primary_expiry,
            revoked,
            key: ComponentKey::Primary(primary.clone()),
            origin: origin.to_string(),
        });
        for sub in &key.public_subkeys {
            let bindings: Vec<&Signature> = sub
                .signatures
                .iter()
                .filter(|s| s.verify_subkey_binding(primary, &sub.key).is_ok())
                .collect();
            let Some(binding) = bindings
                .iter()
                .filter(|s| s.typ() == Some(pgp::packet::SignatureType::SubkeyBinding))
                .max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
            else {
                continue; // no valid binding: the subkey is not this key's to use
            };
            if !binding.key_flags().sign() {
                continue;
            }
            let sub_revoked = bindings
                .iter()
                .any(|s| s.typ() == Some(pgp::packet::SignatureType::SubkeyRevocation));
            let sub_created = u64::from(sub.key.created_at().as_secs());
            let sub_expiry = binding
                .key_expiration_time()
                .filter(|d| d.as_secs() > 0)
                .map(|d| sub_created + u64::from(d.as_secs()));
            let expires_at = match (sub_expiry, primary_expiry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.signers.push(Signer {
                fingerprint: hex::encode_upper(sub.key.fingerprint().as_bytes()),
                key_id: hex::encode_upper(sub.key.legacy_key_id().as_ref()),
                expires_at,
                revoked: revoked || sub_revoked,
                key: ComponentKey::Sub(sub.key.clone()),
                origin: origin.to_string(),
            });
        }
    }

    /// Verify a cleartext-signed message (`InRelease`) at time `now` (unix seconds).
    ///
    /// Succeeds when at least one signature was made by a trusted, unexpired,
    /// unrevoked key and verifies. A signature that claims a trusted issuer but
    /// does not verify fails the whole message (as gpgv's BADSIG does for apt):
    /// it means the text was altered. Signatures by unknown keys are ignored.
    /// `what` names the message in errors (e.g. "bookworm InRelease").
    pub fn verify_cleartext(
        &self,
        what: &str,
        message: &[u8],
        now: u64,
    ) -> Result<Verified, TrustError> {
        let not_signed = |message: String| TrustError::NotSigned {
            what: what.to_string(),
            message,
        };
        let text = std::str::from_utf8(message).map_err(|e| not_signed(e.to_string()))?;
        let (msg, _headers) =
            CleartextSignedMessage::from_string(text).map_err(|e| not_signed(e.to_string()))?;
        if msg.signatures().is_empty() {
            return Err(not_signed("no signature packets".into()));
        }
        let signed = msg.signed_text();
        let mut good: Option<&Signer> = None;
        let mut issuers = Vec::new();
        let mut refusal: Option<TrustError> = None;
        for sig in msg.signatures() {
            let ids: Vec<String> = sig
                .issuer_key_id()
                .iter()
                .map(|k| hex::encode_upper(k.as_ref()))
                .collect();
            let fprs: Vec<String> = sig
                .issuer_fingerprint()
                .iter()
                .map(|f| hex::encode_upper(f.as_bytes()))
                .collect();
            issuers.extend(fprs.iter().chain(ids.iter()).cloned());
            let candidates: Vec<&Signer> = self
                .signers
                .iter()
                .filter(|s| fprs.contains(&s.fingerprint) || ids.contains(&s.key_id))
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let Some(signer) = candidates
                .into_iter()
                .find(|s| s.key.verify(sig, signed.as_bytes()))
            else {
                return Err(TrustError::BadSignature {
                    what: what.to_string(),
                    key: fprs.first().or(ids.first()).cloned().unwrap_or_default(),
                });
            };
            if let Some(err) = check_validity(what, signer, sig, now) {
                refusal.get_or_insert(err);
                continue;
            }
            good.get_or_insert(signer);
        }
        match (good, refusal) {
            (Some(signer), _) => Ok(Verified {
                text: signed.replace("\r\n", "\n"),
                signer: signer.fingerprint.clone(),
                origin: signer.origin.clone(),
            }),
            (None, Some(err)) => Err(err),
            (None, None) => {
                issuers.dedup();
                Err(TrustError::UnknownSigner {
                    what: what.to_string(),
                    issuers: if issuers.is_empty() {
                        "none named".into()
                    } else {
                        issuers.join(", ")
                    },
                })
            }
        }
    }
}

/// Refuse signatures by revoked or expired keys, and expired signatures.
fn check_validity(what: &str, signer: &Signer, sig: &Signature, now: u64) -> Option<TrustError> {
    if signer.revoked {
        return Some(TrustError::KeyRevoked {
            what: what.to_string(),
            key: signer.fingerprint.clone(),
        });
    }
    if let Some(exp) = signer.expires_at {
        if now >= exp {
            return Some(TrustError::KeyExpired {
                what: what.to_string(),
                key: signer.fingerprint.clone(),
                expired_at: exp,
            });
        }
    }
    let created = sig.created().map(Timestamp::as_secs).map(u64::from);
    if let (Some(created), Some(d)) = (created, sig.signature_expiration_time()) {
        if d.as_secs() > 0 && now >= created + u64::from(d.as_secs()) {
            return Some(TrustError::SignatureExpired {
                what: what.to_string(),
                key: signer.fingerprint.clone(),
                expired_at: created + u64::from(d.as_secs()),
            });
        }
    }
    None
}

/// Seconds since the Unix epoch, or 0 when the clock is before 1970.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_debian_keys_load_with_signing_subkeys() {
        let ring = Keyring::debian().unwrap();
        // bookworm archive automatic key's signing subkey
        assert!(
            ring.signers.iter().any(|s| s.key_id == "6ED0E7B82643E131"),
            "{ring:?}"
        );
        // bookworm stable release key (primary signs)
        assert!(ring.signers.iter().any(|s| s.key_id == "F8D2585B8783D481"));
        let sub = ring
            .signers
            .iter()
            .find(|s| s.key_id == "6ED0E7B82643E131")
            .unwrap();
        // expires 2031-01-18 (1926589461)
        assert_eq!(sub.expires_at, Some(1_926_589_461));
    }

    #[test]
    fn garbage_is_not_signed() {
        let ring = Keyring::debian().unwrap();
        let err = ring
            .verify_cleartext("x InRelease", b"Origin: Debian\n", 0)
            .unwrap_err();
        assert!(matches!(err, TrustError::NotSigned { .. }), "{err}");
    }
}
