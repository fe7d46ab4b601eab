//! Wi-Fi: network-config v2 `wifis:` as netplan and cloud-init read it, and the
//! `ballast.network` section's `access_points`, into the networks the network
//! service joins; bad passwords and SSIDs are errors naming line and key.

use ballast_config::{check_network_config, parse, parse_network_config, KeyManagement, MetaData};

#[test]
fn netplan_wifis_with_password_psk_open_and_hidden_networks() {
    let text = r#"network:
  version: 2
  ethernets:
    eth0:
      dhcp4: true
  wifis:
    wlan0:
      dhcp4: true
      access-points:
        "home net":
          password: "correct horse battery"
        office:
          password: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF
        cafe: {}
        lab:
          hidden: true
          bssid: 02:00:00:AA:BB:CC
          auth:
            key-management: sae
            password: "wpa3 only please"
"#;
    let n = parse_network_config(text, "CIDATA:/network-config").unwrap();
    assert_eq!(n.interfaces.len(), 2);
    assert!(n.interfaces[0].access_points.is_empty());
    let w = &n.interfaces[1];
    assert_eq!(w.name, "wlan0");
    assert!(w.dhcp);
    let aps = &w.access_points;
    assert_eq!(
        aps.iter().map(|a| a.ssid.as_str()).collect::<Vec<_>>(),
        ["home net", "office", "cafe", "lab"]
    );
    assert_eq!(aps[0].key_management, KeyManagement::Psk);
    assert_eq!(aps[0].password.as_deref(), Some("correct horse battery"));
    assert!(!aps[0].password_is_psk());
    assert!(aps[1].password_is_psk());
    assert_eq!(aps[2].key_management, KeyManagement::None);
    assert_eq!(aps[2].password, None);
    assert_eq!(aps[3].key_management, KeyManagement::Sae);
    assert!(aps[3].hidden);
    assert_eq!(aps[3].bssid.as_deref(), Some("02:00:00:aa:bb:cc"));
}

#[test]
fn the_brief_s_exact_netplan_example_and_a_static_wifi_address() {
    let text = "wifis: {wlan0: {access-points: {\"SSID\": {password: \"12345678\"}}, dhcp4: true}}\nversion: 2\n";
    let n = parse_network_config(text, "nc").unwrap();
    assert_eq!(n.interfaces[0].access_points[0].ssid, "SSID");
    let text = "version: 2\nwifis:\n  wlan0:\n    addresses: [192.168.4.2/24]\n    gateway4: 192.168.4.1\n    access-points:\n      x:\n        password: \"12345678\"\n";
    let n = parse_network_config(text, "nc").unwrap();
    assert!(!n.interfaces[0].dhcp);
    assert_eq!(n.interfaces[0].addresses, ["192.168.4.2/24"]);
}

#[test]
fn ballast_network_section_takes_access_points() {
    let text = r#"#cloud-config
ballast:
  network:
    interfaces:
      - name: wlan0
        access_points:
          home:
            password: "correct horse battery"
          guest:
            auth: {key_management: none}
"#;
    let p = parse(text, "user-data")
        .unwrap()
        .doc
        .plan(&MetaData::default());
    let net = p.network.unwrap();
    let w = &net.interfaces[0];
    assert!(w.dhcp);
    assert_eq!(w.access_points.len(), 2);
    assert_eq!(w.access_points[1].key_management, KeyManagement::None);
}

#[test]
fn bad_wifi_settings_name_line_key_and_fix() {
    for (text, line, key, needle) in [
        (
            "version: 2\nwifis:\n  wlan0:\n    access-points:\n      home:\n        password: short\n",
            6,
            "wifis.wlan0.access-points.\"home\".password",
            "8 to 63",
        ),
        (
            "version: 2\nwifis:\n  wlan0:\n    access-points:\n      \"this SSID is far longer than 32 bytes\": {}\n",
            5,
            "wifis.wlan0.access-points.\"this SSID is far longer than 32 bytes\"",
            "1 to 32 bytes",
        ),
        (
            "version: 2\nwifis:\n  wlan0:\n    dhcp4: true\n",
            0,
            "wifis.wlan0.access-points",
            "missing",
        ),
        (
            "version: 2\nwifis:\n  wlan0:\n    access-points:\n      home:\n        auth: {key-management: psk}\n",
            0,
            "wifis.wlan0.access-points.\"home\".password",
            "needs its `password`",
        ),
        (
            "version: 2\nwifis:\n  wlan0:\n    access-points:\n      home:\n        auth: {key-management: eap}\n",
            6,
            "wifis.wlan0.access-points.\"home\".auth.key-management",
            "enterprise",
        ),
        (
            "version: 2\nwifis:\n  wlan0:\n    access-points:\n      home:\n        mode: ap\n        password: \"12345678\"\n",
            6,
            "wifis.wlan0.access-points.\"home\".mode",
            "as a client",
        ),
        (
            "version: 2\nwifis:\n  wlan0:\n    access-points:\n      home:\n        password: \"caf\u{e9} au lait\"\n",
            6,
            "wifis.wlan0.access-points.\"home\".password",
            "printable ASCII",
        ),
    ] {
        let e = parse_network_config(text, "CIDATA:/network-config").unwrap_err();
        let shown = e.to_string();
        assert_eq!(e.key, key, "{shown}");
        if line > 0 {
            assert_eq!(e.line, Some(line), "{shown}");
        }
        assert!(shown.contains(needle), "{needle:?} not in {shown}");
    }
}

#[test]
fn an_unknown_access_point_key_is_a_warning_with_a_suggestion() {
    let text = "version: 2\nwifis:\n  wlan0:\n    access-points:\n      home:\n        pasword: \"12345678\"\n        password: \"12345678\"\n";
    let c = check_network_config(text, "nc");
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let w = c
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(w.contains("did you mean `password`"), "{w}");
}
