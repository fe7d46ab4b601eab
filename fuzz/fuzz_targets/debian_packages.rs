//! libFuzzer entry for `debian_packages` (the harness and what it checks: `ballast_fuzz::debian::debian_packages`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::debian::debian_packages(data));
