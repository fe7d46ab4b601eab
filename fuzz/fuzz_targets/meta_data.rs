//! libFuzzer entry for `meta_data` (the harness and what it checks: `ballast_fuzz::config::meta_data`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::config::meta_data(data));
