//! A system container's two files: its OCI `config.json` (read by
//! `ballast-container` when it starts the container) and its service
//! definition `manifest.toml` (read by sysd at boot and when a config is
//! applied).

use std::path::Path;

/// `config.json`: parsed and validated, never panicking.
pub fn oci_config(data: &[u8]) {
    if let Some(text) = crate::text(data) {
        let _ = ballast_container::parse_config(text, Path::new("config.json"));
    }
}

/// `manifest.toml` of a service called `ssh`.
pub fn service_definition(data: &[u8]) {
    if let Some(text) = crate::text(data) {
        let _ = ballast_sysd::parse_definition("ssh", text, Path::new("manifest.toml"));
    }
}
