//! libFuzzer entry for `network_config` (the harness and what it checks: `ballast_fuzz::config::network_config`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::config::network_config(data));
