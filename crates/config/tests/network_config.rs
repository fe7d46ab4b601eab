//! NoCloud `network-config`, both versions, into the settings the network
//! service applies; errors name the source, line and key.

use ballast_config::{check_network_config, parse_network_config, InterfaceMatch, Route};

#[test]
fn version_2_static_and_dhcp() {
    let text = "\
network:
  version: 2
  ethernets:
    eth0:
      addresses: [192.168.1.10/24]
      gateway4: 192.168.1.1
      mtu: 1400
      nameservers:
        addresses: [192.168.1.53, 1.1.1.1]
        search: [lab.example]
      routes:
        - to: 10.8.0.0/16
          via: 192.168.1.254
    eth1:
      dhcp4: true
";
    let n = parse_network_config(text, "CIDATA:/network-config").unwrap();
    assert_eq!(n.interfaces.len(), 2);
    let e0 = &n.interfaces[0];
    assert_eq!(e0.name, "eth0");
    assert!(!e0.dhcp);
    assert_eq!(e0.addresses, ["192.168.1.10/24"]);
    assert_eq!(e0.gateway.as_deref(), Some("192.168.1.1"));
    assert_eq!(e0.mtu, Some(1400));
    assert_eq!(n.dns.nameservers, ["192.168.1.53", "1.1.1.1"]);
    assert_eq!(n.dns.search, ["lab.example"]);
    assert_eq!(
        n.routes,
        [Route {
            to: "10.8.0.0/16".into(),
            via: "192.168.1.254".into()
        }]
    );
    assert_eq!(n.interfaces[1].name, "eth1");
    assert!(n.interfaces[1].dhcp);
}

#[test]
fn version_1_with_netmask_nameserver_and_route() {
    let text = "\
version: 1
config:
  - type: physical
    name: eth0
    subnets:
      - type: static
        address: 10.0.0.5
        netmask: 255.255.255.0
        gateway: 10.0.0.1
        dns_nameservers: [10.0.0.2]
  - type: nameserver
    address: 9.9.9.9
    search: [corp.example]
  - type: route
    destination: 172.16.0.0/12
    gateway: 10.0.0.254
";
    let n = parse_network_config(text, "seed/network-config").unwrap();
    assert_eq!(n.interfaces[0].addresses, ["10.0.0.5/24"]);
    assert_eq!(n.interfaces[0].gateway.as_deref(), Some("10.0.0.1"));
    assert!(!n.interfaces[0].dhcp);
    assert_eq!(n.dns.nameservers, ["10.0.0.2", "9.9.9.9"]);
    assert_eq!(n.dns.search, ["corp.example"]);
    assert_eq!(n.routes[0].to, "172.16.0.0/12");
}

#[test]
fn errors_name_source_line_and_key() {
    for (text, line, key, needle) in [
        (
            "version: 2\nethernets:\n  eth0:\n    addresses: [10.0.0.300/24]\n",
            4,
            "ethernets.eth0.addresses[0]",
            "10.0.0.300",
        ),
        (
            "version: 1\nconfig:\n  - type: physical\n    name: eth0\n    subnets:\n      - type: static\n        address: 10.0.0.5\n",
            7,
            "config[0].subnets[0].address",
            "prefix",
        ),
        (
            "version: 1\nconfig:\n  - type: physical\n    name: eth0\n    subnets:\n      - type: static\n        address: 10.0.0.5\n        netmask: 255.0.255.0\n",
            7,
            "config[0].subnets[0].address",
            "contiguous",
        ),
        ("version: 3\n", 1, "version", "version 1 or 2"),
        ("ethernets: {}\n", 0, "version", "missing"),
    ] {
        let e = parse_network_config(text, "CIDATA:/network-config").unwrap_err();
        let shown = e.to_string();
        assert!(shown.starts_with("CIDATA:/network-config"), "{shown}");
        assert_eq!(e.key, key, "{shown}");
        if line > 0 {
            assert_eq!(e.line, Some(line), "{shown}");
        }
        assert!(shown.contains(needle), "{needle:?} not in {shown}");
    }
}

#[test]
fn version_2_matches_by_mac_name_and_driver_and_renames() {
    let text = "\
network:
  version: 2
  ethernets:
    lan:
      match:
        macaddress: 52:54:00:AB:cd:01
      set-name: lan0
      addresses: [10.0.0.5/24]
    wired:
      match:
        name: en*
        driver: virtio_net
      dhcp4: true
";
    let n = parse_network_config(text, "nc").unwrap();
    let lan = &n.interfaces[0];
    assert_eq!(lan.name, "lan");
    assert_eq!(
        lan.matches,
        Some(InterfaceMatch {
            macaddress: Some("52:54:00:ab:cd:01".into()),
            ..InterfaceMatch::default()
        })
    );
    assert_eq!(lan.set_name.as_deref(), Some("lan0"));
    let wired = &n.interfaces[1];
    assert_eq!(
        wired.matches,
        Some(InterfaceMatch {
            name: Some("en*".into()),
            driver: Some("virtio_net".into()),
            macaddress: None,
        })
    );
    assert_eq!(wired.set_name, None);
}

#[test]
fn version_2_match_mistakes_are_errors_with_lines() {
    let cases = [
        (
            "version: 2\nethernets:\n  a:\n    match: {macaddress: '52:54:00'}\n",
            4,
            "ethernets.a.match.macaddress",
            "not a MAC address",
        ),
        (
            "version: 2\nethernets:\n  eth0:\n    set-name: lan0\n",
            4,
            "ethernets.eth0.set-name",
            "needs a `match:`",
        ),
        (
            "version: 2\nethernets:\n  a:\n    match: {}\n",
            4,
            "ethernets.a.match",
            "matches nothing",
        ),
    ];
    for (text, line, key, msg) in cases {
        let e = parse_network_config(text, "nc").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text}: {e}");
        assert!(e.message.contains(msg), "{e}");
    }
}

#[test]
fn version_1_mac_address_matches_and_name_renames() {
    let text = "\
version: 1
config:
  - type: physical
    name: lan0
    mac_address: '52:54:00:12:34:56'
    subnets:
      - type: static
        address: 10.0.0.5/24
";
    let n = parse_network_config(text, "nc").unwrap();
    let i = &n.interfaces[0];
    assert_eq!(i.name, "lan0");
    assert_eq!(
        i.matches.as_ref().and_then(|m| m.macaddress.as_deref()),
        Some("52:54:00:12:34:56")
    );
    assert_eq!(i.set_name.as_deref(), Some("lan0"));
    assert_eq!(i.addresses, ["10.0.0.5/24"]);
}

#[test]
fn unsupported_keys_and_types_are_warnings_not_errors() {
    let v1 = "\
version: 1
config:
  - type: physical
    name: eth0
    subnets:
      - type: dhcp6
  - type: bond
    name: bond0
    bond_interfaces: [eth0, eth1]
";
    let c = check_network_config(v1, "nc");
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let w: Vec<(Option<usize>, &str)> = c
        .warnings
        .iter()
        .map(|w| (w.line, w.key.as_str()))
        .collect();
    assert_eq!(
        w,
        [
            (Some(6), "config[0].subnets[0].type"),
            (Some(7), "config[1].type")
        ]
    );
    assert!(c.warnings[1].message.contains("`bond` is not supported"));

    let v2 = "\
version: 2
ethernets:
  eth0:
    dhcp4: true
    dhcp6: true
bridges:
  br0: {}
";
    let c = check_network_config(v2, "nc");
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let keys: Vec<&str> = c.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["ethernets.eth0.dhcp6", "bridges"]);
    assert!(c.value.is_some());
}
