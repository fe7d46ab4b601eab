//! libFuzzer entry for `deb` (the harness and what it checks: `ballast_fuzz::debian::deb`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::debian::deb(data));
