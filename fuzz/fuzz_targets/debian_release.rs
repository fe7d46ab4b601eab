//! libFuzzer entry for `debian_release` (the harness and what it checks: `ballast_fuzz::debian::debian_release`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::debian::debian_release(data));
