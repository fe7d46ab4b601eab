//! Signed update bundles and the update channel index: this crate is the one
//! owner of both formats. The builder writes them (`ballast publish`, the build
//! hook), the device (sysd, `osctl upgrade`) reads them. Nobody else parses them.
//!
//! What it must never do: hand a caller a manifest or a payload byte whose
//! signature and hash have not been checked first, or write anything but the
//! caller's `out` writer while reading.
//!
//! # Bundle format (version 1)
//!
//! ```text
//! offset    size      what
//! 0         16        magic b"BALLAST-BUNDLE1\n"
//! 16        4         manifest length N, u32 big-endian, 1..=1 MiB
//! 20        N         manifest: UTF-8 JSON, see [`Manifest`] (unknown fields refused)
//! 20+N      64        ed25519 signature over bytes [0, 20+N) (magic, length, manifest)
//! 84+N      ...       payloads in manifest order, each one zstd frame of exactly
//!                     `compressed_size` bytes; after the last, end of file
//! ```
//!
//! The signature covers the manifest, and the manifest carries, for each
//! payload, the SHA-256 of its stored zstd frame (`compressed_sha256`) and of
//! its uncompressed bytes (`sha256`), so every byte of the bundle is covered:
//! [`Reader::copy_next`] hashes both while it streams and fails unless both
//! and the sizes match. The manifest's `key_id` names the signing key (first
//! 16 hex characters of the SHA-256 of the 32-byte public key); it must be the
//! key that verified the signature.
//!
//! # Features
//!
//! Reading uses ruzstd (pure Rust: it cross-compiles to every device target).
//! Writing ([`write`], [`COMPRESSION_LEVEL`]) uses libzstd, multithreaded, and
//! sits behind the default feature `write`; device builds turn it off.
//!
//! # Keys
//!
//! Text files of one line. Secret: `ballast-ed25519-secret <hex of the 32-byte seed>`
//! (written mode 0600). Public: `ballast-ed25519 <hex of the 32-byte key> [comment]`.
//! The device trusts the `*.pub` files of `/usr/lib/ballast/keys/` ([`keys::read_dir`]).
//!
//! # Deltas
//!
//! The same layout with the magic `b"BALLAST-DELTA01\n"`: the new root as
//! copies from the running root plus new bytes, see [`delta`].
//!
//! # Channel
//!
//! A static directory: `index.json`, `index.json.sig` and the bundles, see [`channel`].

mod bundle;
pub mod channel;
mod compat;
pub mod delta;
mod error;
pub mod keys;
mod manifest;

#[cfg(feature = "write")]
pub use bundle::{write, COMPRESSION_LEVEL};
pub use bundle::{Input, Reader, MAGIC, MAX_MANIFEST_LEN};
pub use compat::{check_compatible, compare_versions};
pub use delta::{is_delta, DeltaManifest, DeltaReader, DELTA_MAGIC};
pub use error::BundleError;
pub use keys::{PublicKey, Signer};
pub use manifest::{Manifest, Payload, PayloadName, ARCHES, FORMAT, OS};
