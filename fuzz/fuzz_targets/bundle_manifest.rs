//! libFuzzer entry for `bundle_manifest` (the harness and what it checks: `ballast_fuzz::bundle::bundle_manifest`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::bundle::bundle_manifest(data));
