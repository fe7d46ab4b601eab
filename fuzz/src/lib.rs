//! The fuzz harnesses: one function per parser of untrusted or on-disk data.
//! Each takes any bytes and must return: a panic, a hang or a runaway
//! allocation is the bug. The libFuzzer binaries in `fuzz_targets/` call them
//! (`cargo fuzz run --features libfuzzer TARGET`); `tests/corpus.rs` replays
//! every committed corpus file and regression through them in `cargo test`.

pub mod bundle;
pub mod config;
pub mod container;
pub mod debian;
pub mod disk;
pub mod netboot;
pub mod slot;

/// A harness: any bytes in, a panic out only on a bug.
pub type Harness = fn(&[u8]);

/// Every target: its name (the binary in `fuzz_targets/` and the directory
/// under `corpus/`) and its harness.
pub const TARGETS: &[(&str, Harness)] = &[
    ("cloud_config", config::cloud_config),
    ("network_config", config::network_config),
    ("meta_data", config::meta_data),
    ("partition_table", disk::partition_table),
    ("uboot_state", slot::uboot_state),
    ("bls_entry", slot::bls_entry),
    ("bundle_manifest", bundle::bundle_manifest),
    ("bundle_payload", bundle::bundle_payload),
    ("channel_index", bundle::channel_index),
    ("oci_config", container::oci_config),
    ("service_definition", container::service_definition),
    ("debian_release", debian::debian_release),
    ("debian_packages", debian::debian_packages),
    ("deb", debian::deb),
    ("dhcp_reply", netboot::dhcp_reply),
    ("http_head", netboot::http_head),
];

/// Text parsers read their files as UTF-8 (a file that is not is refused
/// before any parser sees it), so only UTF-8 input reaches them.
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
