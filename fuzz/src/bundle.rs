//! The update path's untrusted bytes: a bundle (its manifest and its payload
//! stream) and the channel index. The fuzzer cannot forge a signature, so the
//! harnesses sign what they build with a fixed test key: that reaches the
//! parsers and the decoder, which on a device see bytes from a channel that
//! is only checked as they stream (payload hashes) or after signing (a
//! leaked or careless key).

use ballast_bundle::channel::verify_index;
use ballast_bundle::{Manifest, PublicKey, Reader, Signer, MAGIC};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| Signer::from_seed(&[7; 32]))
}

fn key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| signer().public())
}

/// The input as a whole bundle file (unsigned: the reader must refuse it
/// before parsing), then as manifest JSON (signed, so parsed).
pub fn bundle_manifest(data: &[u8]) {
    if let Ok(mut reader) = Reader::open(data, std::slice::from_ref(key())) {
        while let Ok(Some(_)) = reader.copy_next(&mut std::io::sink(), &mut |_| {}) {}
    }
    let _ = Manifest::from_json(data);
    let _ = Reader::open(&signed_bundle(data)[..], std::slice::from_ref(key()));
}

/// MAGIC, length, `manifest`, signature: a bundle signed by the test key.
fn signed_bundle(manifest: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(manifest.len() as u32).to_be_bytes());
    out.extend_from_slice(manifest);
    let signature = signer().sign(&out);
    out.extend_from_slice(&signature);
    out
}

/// The payload stream: the first two bytes choose the claimed uncompressed
/// size (in KiB), the rest is the stored zstd frame, whose hash the signed
/// manifest states (so the reader decodes all of it, as it would a frame from
/// a bundle signed by a trusted key over a decoder-hostile payload).
pub fn bundle_payload(data: &[u8]) {
    // The manifest refuses an empty frame before any payload is read.
    let [a, b, frame @ ..] = data else {
        return;
    };
    if frame.is_empty() {
        return;
    }
    let size = u64::from(u16::from_le_bytes([*a, *b])) * 1024;
    let manifest = serde_json::json!({
        "format": 1,
        "os": "ballast",
        "version": "1.2.3",
        "arch": "arm64",
        "boards": [],
        "build_time": 0,
        "rollback_index": 0,
        "key_id": key().id,
        "cmdline": "",
        "payloads": [{
            "name": "root",
            "size": size,
            "sha256": "0".repeat(64),
            "compressed_size": frame.len(),
            "compressed_sha256": hex::encode(Sha256::digest(frame)),
        }],
    });
    let mut bundle = signed_bundle(manifest.to_string().as_bytes());
    bundle.extend_from_slice(frame);
    let mut reader = match Reader::open(&bundle[..], std::slice::from_ref(key())) {
        Ok(reader) => reader,
        Err(e) => panic!("the harness's own manifest was refused: {e}"),
    };
    let mut out = Vec::new();
    if reader.copy_next(&mut out, &mut |_| {}).is_ok() {
        panic!("a payload whose sha256 cannot match was accepted");
    }
    assert!(
        out.len() as u64 <= size,
        "{} bytes written for a payload of {size}",
        out.len()
    );
}

/// `index.json` bytes: with a signature file made of the input (refused before
/// parsing), then signed by the test key (parsed and used).
pub fn channel_index(data: &[u8]) {
    let trusted = std::slice::from_ref(key());
    if let Ok(sig_text) = std::str::from_utf8(data) {
        let _ = verify_index(b"{}", sig_text, trusted, 0);
    }
    let sig_text = format!(
        "ballast-ed25519-sig {} {}\n",
        key().id,
        hex::encode(signer().sign(data))
    );
    if let Ok(index) = verify_index(data, &sig_text, trusted, 0) {
        for arch in ["arm64", "x86_64", "armv7"] {
            let _ = index.latest(arch, "qemu-arm64");
        }
    }
}
