//! libFuzzer entry for `bls_entry` (the harness and what it checks: `ballast_fuzz::slot::bls_entry`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::slot::bls_entry(data));
