//! libFuzzer entry for `oci_config` (the harness and what it checks: `ballast_fuzz::container::oci_config`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::container::oci_config(data));
