//! libFuzzer entry for `service_definition` (the harness and what it checks: `ballast_fuzz::container::service_definition`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::container::service_definition(data));
