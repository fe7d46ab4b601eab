//! The config formats a machine reads from a seed or `osctl config`: user-data
//! (`#cloud-config` YAML or TOML), network-config and meta-data.

use ballast_config::{check, check_meta_data, check_network_config, diff, parse_meta_data, Plan};

/// user-data: check, plan and diff never panic.
pub fn cloud_config(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let meta = parse_meta_data(text, "meta-data").unwrap_or_default();
    if let Some(doc) = check(text, "user-data").doc {
        let plan = doc.plan(&meta);
        let _ = diff(&Plan::default(), &plan);
        let _ = diff(&plan, &Plan::default());
    }
}

/// A NoCloud network-config.
pub fn network_config(data: &[u8]) {
    if let Some(text) = crate::text(data) {
        let _ = check_network_config(text, "network-config");
    }
}

/// A NoCloud meta-data file.
pub fn meta_data(data: &[u8]) {
    if let Some(text) = crate::text(data) {
        let _ = check_meta_data(text, "meta-data");
    }
}
