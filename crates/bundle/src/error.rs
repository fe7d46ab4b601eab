//! Every error says what was wrong, where (file, field, payload) and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the update bundle: {0}")]
    Read(#[source] std::io::Error),
    #[error("not a Ballast update bundle: the first 16 bytes are not \"BALLAST-BUNDLE1\\n\" (is this the .bundle file from `ballast build`, not a disk image or an HTML error page?)")]
    BadMagic,
    #[error("the update bundle is truncated: it ends before the end its header and manifest announce; download or copy it again")]
    Truncated,
    #[error("update bundle manifest length {len} is outside 1..=1048576 bytes: the file is corrupt or not a bundle")]
    ManifestLength { len: u64 },
    #[error("signed by key {key_id}, which is not trusted here (add its .pub file to the trusted keys, e.g. /usr/lib/ballast/keys/ on the device, or sign with a trusted key)")]
    UnknownKey { key_id: String },
    #[error("bad signature: the signed bytes were changed after signing, or signed by another key; refusing it (fetch it again from the publisher)")]
    BadSignature,
    #[error("update bundle manifest: {0}")]
    Manifest(String),
    #[error("update bundle payload {name:?}: {detail}; the bundle is corrupt (download it again)")]
    PayloadMismatch { name: String, detail: String },
    #[error("update bundle payload {name:?}: decompressing: {source}; the bundle is corrupt (download it again)")]
    Decompress {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing update bundle payload {name:?} to its destination: {source}")]
    Output {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the update bundle has bytes after its last payload; it is corrupt or was concatenated with something (download it again)")]
    TrailingData,
    #[error("{}: {detail}", path.display())]
    Key { path: PathBuf, detail: String },
    #[error("{}: already exists; refusing to overwrite a key (choose another prefix with --out, or move the old key away first)", path.display())]
    KeyExists { path: PathBuf },
    #[error("input {name:?}: {detail}")]
    Input { name: String, detail: String },
    #[error("{detail}")]
    Incompatible { detail: String },
    #[error("delta refused: {0}; the full bundle is the fallback")]
    Delta(String),
    #[error("delta refused: {detail}")]
    DeltaBase { detail: String },
    #[error("delta refused: applying it did not give the signed new root: {detail}; the full bundle is the fallback")]
    DeltaResult { detail: String },
    #[error("{what}: {detail}")]
    Index { what: String, detail: String },
    #[error("channel index expired at {expires} (unix time), it is now {now}: the publisher must run `ballast publish` again (a stale index could hide a security update)")]
    IndexExpired { expires: u64, now: u64 },
}

impl From<ballast_device::AtomicError> for BundleError {
    fn from(e: ballast_device::AtomicError) -> Self {
        BundleError::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
}

impl BundleError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        BundleError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
