//! Ballast's Debian archive client.
//!
//! This crate owns everything Ballast knows about the Debian archive: the deb822
//! control format, `InRelease` signatures, `Packages` indices, Debian version
//! ordering, dependency resolution, verified downloads into a content-addressed
//! cache, and unpacking `.deb` files without root. No other crate parses these
//! formats.
//!
//! It must never trust a byte before its signature or hash has been checked:
//! an index is parsed only after its SHA-256 matches the signed release, and a
//! `.deb` enters the cache only after its SHA-256 matches the index.

pub mod cache;
pub mod client;
pub mod deb822;
pub mod fetch;
pub mod keyring;
pub mod packages;
pub mod relation;
pub mod release;
pub mod resolve;
pub mod sources;
pub mod unpack;
pub mod version;

pub use client::{Archive, ArchiveConfig, CachedDeb};
pub use sources::Sources;
