//! libFuzzer entry for `cloud_config` (the harness and what it checks: `ballast_fuzz::config::cloud_config`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::config::cloud_config(data));
