//! libFuzzer entry for `partition_table` (the harness and what it checks: `ballast_fuzz::disk::partition_table`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::disk::partition_table(data));
