//! libFuzzer entry for `dhcp_reply` (the harness and what it checks: `ballast_fuzz::netboot::dhcp_reply`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::netboot::dhcp_reply(data));
