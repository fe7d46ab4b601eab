//! libFuzzer entry for `uboot_state` (the harness and what it checks: `ballast_fuzz::slot::uboot_state`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::slot::uboot_state(data));
