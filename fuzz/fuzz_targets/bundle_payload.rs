//! libFuzzer entry for `bundle_payload` (the harness and what it checks: `ballast_fuzz::bundle::bundle_payload`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::bundle::bundle_payload(data));
