//! No input makes parsing, planning or diffing panic: the device parses
//! whatever a CIDATA volume or a URL hands it.

use ballast_config::{check, check_network_config, diff, parse_meta_data, MetaData, Plan};
use proptest::prelude::*;

fn run(text: &str) {
    let c = check(text, "ud");
    if let Some(doc) = c.doc {
        let plan = doc.plan(&MetaData::default());
        let _ = diff(&Plan::default(), &plan);
        let _ = diff(&plan, &Plan::default());
    }
    let _ = parse_meta_data(text, "md");
    let _ = check_network_config(text, "nc");
}

/// Pieces of YAML and TOML syntax and of real keys, to reach deep code.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("- ".to_string()),
        Just(": ".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just(", ".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("!!binary ".to_string()),
        Just("|\n".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("= ".to_string()),
        Just("[[ballast.system]]\n".to_string()),
        prop::sample::select(vec![
            "hostname",
            "users",
            "default",
            "name",
            "write_files",
            "path",
            "content",
            "encoding",
            "gz+b64",
            "b64",
            "permissions",
            "0644",
            "runcmd",
            "bootcmd",
            "ballast",
            "system",
            "image",
            "bundle",
            "network",
            "interfaces",
            "sysctl",
            "ntp",
            "servers",
            "timezone",
            "yes",
            "~",
            "/etc/x",
            "ssh-ed25519",
            "AAAA",
            "mounts",
            "env",
            "restart",
            "update",
            "trusted_keys",
            "engine",
            "mtu",
            "groups",
            "ssh-authorized-keys",
            "primary-group",
            "sudo",
            "ssh_keys",
            "ed25519_private",
            "ed25519_certificate",
            "-----BEGIN CERTIFICATE-----",
            "-----END CERTIFICATE-----",
            "ca-certs",
            "trusted",
            "remove-defaults",
            "device_aliases",
            "disk_setup",
            "fs_setup",
            "layout",
            "partition",
            "mount_default_fields",
            "None",
            "/dev/vdb",
            "vdb.1",
            "ephemeral0",
            "power_state",
            "mode",
            "delay",
            "condition",
            "reboot",
            "+5",
            "version",
            "ethernets",
            "match",
            "macaddress",
            "set-name",
            "config",
            "type",
            "physical",
            "mac_address",
            "subnets",
        ])
        .prop_map(String::from),
        "[a-z0-9./:=_-]{1,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text(s in any::<String>()) {
        run(&s);
        run(&format!("#cloud-config\n{s}"));
    }

    #[test]
    fn yaml_like_text(tokens in prop::collection::vec(token(), 0..60)) {
        let body = tokens.concat();
        run(&format!("#cloud-config\n{body}"));
        run(&body);
    }
}
