//! libFuzzer entry for `http_head` (the harness and what it checks: `ballast_fuzz::netboot::http_head`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::netboot::http_head(data));
