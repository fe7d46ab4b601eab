//! Any UTF-8 as a NoCloud network-config: checking never panics.
#![no_main]

use ballast_config::check_network_config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = check_network_config(text, "network-config");
});
