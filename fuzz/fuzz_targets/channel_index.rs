//! libFuzzer entry for `channel_index` (the harness and what it checks: `ballast_fuzz::bundle::channel_index`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::bundle::channel_index(data));
