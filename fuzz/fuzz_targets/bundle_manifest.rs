//! Untrusted bytes into the bundle reader and the manifest parser: any input
//! must give Ok or an error, never a panic, a hang or a huge allocation.
#![no_main]

use ballast_bundle::{Manifest, PublicKey, Reader, Signer};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| Signer::from_seed(&[7; 32]).public())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(mut reader) = Reader::open(data, std::slice::from_ref(key())) {
        // Only reachable with a valid signature (the fuzzer cannot forge one),
        // kept so a seed corpus of real bundles exercises the payload path.
        while let Ok(Some(_)) = reader.copy_next(&mut std::io::sink(), &mut |_| {}) {}
    }
    let _ = Manifest::from_json(data);
});
