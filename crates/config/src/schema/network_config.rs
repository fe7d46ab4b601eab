//! NoCloud `network-config` (version 1 and 2), and the route/MTU readers
//! that `ballast.network` shares with it.

use super::*;

use crate::InterfaceMatch;

/// A dotted netmask (`255.255.255.0`) as a prefix length.
pub(super) fn netmask_prefix(mask: &str) -> Result<u32, String> {
    let ip: std::net::Ipv4Addr = mask
        .parse()
        .map_err(|_| format!("`{mask}` is not a netmask (e.g. 255.255.255.0)"))?;
    let bits = u32::from(ip);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(format!(
            "`{mask}` is not a netmask: its ones are not contiguous"
        ));
    }
    Ok(bits.leading_ones())
}

/// `address` with a prefix: as given when it has one, else from `netmask`.
pub(super) fn with_prefix(address: &str, netmask: Option<&str>) -> Result<String, String> {
    if address.contains('/') {
        checks::cidr(address)?;
        return Ok(address.to_string());
    }
    checks::ip(address)?;
    match netmask {
        Some(m) => Ok(format!("{address}/{}", netmask_prefix(m)?)),
        None => Err(format!(
            "`{address}` has no prefix length: write {address}/24 or give `netmask`"
        )),
    }
}

/// NoCloud `network-config`: netplan-style version 2 (`ethernets:`) or
/// cloud-init's version 1 (`config:` list), with or without a top-level
/// `network:` key, into the same [`Network`] the `ballast.network` section gives.
pub(crate) fn network_config(text: &str, source: &str) -> SideChecked<Network> {
    let mut ctx = Ctx::new(source);
    let net = network_document(text, &mut ctx);
    ctx.side_checked(net)
}

fn network_document(text: &str, ctx: &mut Ctx) -> Option<Network> {
    let Some(root) = side_file(text, ctx, "network-config", "YAML syntax error")? else {
        return Some(Network::default());
    };
    let mut top = Fields::new(&root, "", ctx)?;
    // `network: {version: ..}` or the inner mapping itself.
    let (body, path) = match top.get("network") {
        Some(n) => {
            top.finish(ctx, &["network"]);
            (n, "network".to_string())
        }
        None => (&root, String::new()),
    };
    let mut f = Fields::new(body, &path, ctx)?;
    let version = f.get("version").map(|v| (v.line, v.v.clone()));
    let net = match version {
        Some((_, V::Int(2, _))) => network_v2(&mut f, ctx),
        Some((_, V::Int(1, _))) => network_v1(&mut f, ctx),
        Some((line, _)) => {
            ctx.err(line, &f.path("version"), "unsupported: use version 1 or 2");
            Network::default()
        }
        None => {
            ctx.err(
                None,
                &f.path("version"),
                "missing: network-config needs `version: 2` (netplan style) or `version: 1`",
            );
            Network::default()
        }
    };
    Some(net)
}

pub(super) fn network_v2(f: &mut Fields, ctx: &mut Ctx) -> Network {
    let mut net = Network::default();
    for section in ["ethernets", "wifis"] {
        if let Some(n) = f.get(section) {
            devices_v2(n, &f.path(section), section == "wifis", &mut net, ctx);
        }
    }
    f.finish_ref(ctx, &["version", "ethernets", "wifis"]);
    net
}

/// netplan's `ethernets:` or `wifis:` (`wifi`: each entry joins the networks
/// in its `access-points`).
fn devices_v2(eths: &Node, p: &str, wifi: bool, net: &mut Network, ctx: &mut Ctx) {
    let p = p.to_string();
    {
        match &eths.v {
            V::Map(entries) => {
                for e in entries {
                    let ip = sub(&p, &e.key);
                    let Some(mut g) = Fields::new(&e.value, &ip, ctx) else {
                        continue;
                    };
                    // With `match:` the id is only a label (netplan); without,
                    // it is the interface's kernel name.
                    let matches = g
                        .get("match")
                        .and_then(|m| match_v2(m, &g.path("match"), ctx));
                    let id_check = if matches.is_some() {
                        netplan_id(&e.key)
                    } else {
                        checks::interface_name(&e.key)
                    };
                    if let Err(m) = id_check {
                        ctx.err(e.key_line, &ip, m);
                        continue;
                    }
                    let set_name = opt_str(&mut g, "set-name", ctx, checks::interface_name);
                    if set_name.is_some() && matches.is_none() {
                        ctx.err(
                            g.key_line("set-name"),
                            &g.path("set-name"),
                            "`set-name` needs a `match:` saying which interface to rename (e.g. `match: {macaddress: 52:54:00:12:34:56}`)",
                        );
                    }
                    let addresses = opt_list(&mut g, "addresses", ctx, checks::cidr);
                    let dhcp = opt_bool(&mut g, "dhcp4", addresses.is_empty(), ctx);
                    let gateway = opt_str(&mut g, "gateway4", ctx, checks::ip);
                    let mtu = opt_mtu(&mut g, ctx);
                    if let Some(ns) = g.get("nameservers") {
                        if let Some(mut h) = Fields::new(ns, &g.path("nameservers"), ctx) {
                            net.dns.nameservers.extend(opt_list(
                                &mut h,
                                "addresses",
                                ctx,
                                checks::ip,
                            ));
                            net.dns.search.extend(opt_list(
                                &mut h,
                                "search",
                                ctx,
                                checks::hostname,
                            ));
                            h.finish(ctx, &["addresses", "search"]);
                        }
                    }
                    if let Some(r) = g.get("routes") {
                        routes(r, &g.path("routes"), ("to", "via"), &mut net.routes, ctx);
                    }
                    let access_points = if wifi {
                        match g.get("access-points") {
                            Some(a) => {
                                super::wifi::access_points(a, &g.path("access-points"), false, ctx)
                            }
                            None => {
                                ctx.err(
                                    e.value.line,
                                    &g.path("access-points"),
                                    "missing: a Wi-Fi interface needs `access-points` (e.g. {\"home\": {password: \"...\"}})",
                                );
                                Vec::new()
                            }
                        }
                    } else {
                        Vec::new()
                    };
                    let mut known = vec![
                        "match",
                        "set-name",
                        "addresses",
                        "dhcp4",
                        "gateway4",
                        "mtu",
                        "nameservers",
                        "routes",
                    ];
                    if wifi {
                        known.push("access-points");
                    }
                    g.finish(ctx, &known);
                    net.interfaces.push(Interface {
                        name: e.key.clone(),
                        matches,
                        set_name,
                        dhcp,
                        addresses,
                        gateway,
                        mtu,
                        access_points,
                    });
                }
            }
            _ => ctx.expected(eths, &p, "a mapping of interface names"),
        }
    }
}

pub(super) fn network_v1(f: &mut Fields, ctx: &mut Ctx) -> Network {
    let mut net = Network::default();
    let Some(config) = f.get("config") else {
        f.finish_ref(ctx, &["version", "config"]);
        return net;
    };
    let p = f.path("config");
    let V::Seq(items) = &config.v else {
        ctx.expected(config, &p, "a list of network settings");
        return net;
    };
    for (k, item) in items.iter().enumerate() {
        let ip = idx(&p, k);
        let Some(mut g) = Fields::new(item, &ip, ctx) else {
            continue;
        };
        let kind = opt_str(&mut g, "type", ctx, any).unwrap_or_default();
        match kind.as_str() {
            "physical" => {
                let name = opt_str(&mut g, "name", ctx, checks::interface_name);
                let mac = opt_str(&mut g, "mac_address", ctx, mac_address)
                    .map(|m| m.to_ascii_lowercase());
                let mtu = opt_mtu(&mut g, ctx);
                // cloud-init renames the interface with that MAC to `name`.
                let (matches, set_name) = match &mac {
                    Some(m) => (
                        Some(InterfaceMatch {
                            macaddress: Some(m.clone()),
                            ..InterfaceMatch::default()
                        }),
                        name.clone(),
                    ),
                    None => (None, None),
                };
                let mut iface = Interface {
                    name: name.clone().unwrap_or_default(),
                    matches,
                    set_name,
                    dhcp: false,
                    addresses: Vec::new(),
                    gateway: None,
                    mtu,
                    access_points: Vec::new(),
                };
                if let Some(subnets) = g.get("subnets") {
                    let sp = g.path("subnets");
                    if let V::Seq(subs) = &subnets.v {
                        for (j, s) in subs.iter().enumerate() {
                            subnet_v1(s, &idx(&sp, j), &mut iface, &mut net, ctx);
                        }
                    } else {
                        ctx.expected(subnets, &sp, "a list of subnets");
                    }
                } else {
                    iface.dhcp = true;
                }
                if name.is_some() {
                    net.interfaces.push(iface);
                } else {
                    ctx.err(
                        item.line,
                        &g.path("name"),
                        "missing: a physical interface needs a `name` (e.g. eth0)",
                    );
                }
                g.finish(ctx, &["type", "name", "mtu", "subnets", "mac_address"]);
            }
            "nameserver" => {
                let addresses = match g.get("address") {
                    Some(n) if matches!(n.v, V::Seq(_)) => {
                        str_list(n, &g.path("address"), ctx, checks::ip)
                    }
                    Some(n) => {
                        let ap = g.path("address");
                        string(n, &ap, ctx)
                            .and_then(|s| ctx.check(n, &ap, checks::ip(&s)).map(|()| vec![s]))
                            .unwrap_or_default()
                    }
                    None => Vec::new(),
                };
                net.dns.nameservers.extend(addresses);
                net.dns
                    .search
                    .extend(opt_list(&mut g, "search", ctx, checks::hostname));
                g.finish(ctx, &["type", "address", "search"]);
            }
            "route" => {
                let to = opt_str(&mut g, "destination", ctx, route_destination);
                let via = opt_str(&mut g, "gateway", ctx, checks::ip);
                g.finish(ctx, &["type", "destination", "gateway"]);
                match (to, via) {
                    (Some(to), Some(via)) => net.routes.push(Route { to, via }),
                    _ => ctx.err(
                        item.line,
                        &ip,
                        "a route needs `destination` (CIDR or default) and `gateway`",
                    ),
                }
            }
            other => {
                // cloud-init's bond, bridge, vlan...: one warning for the entry, its
                // keys unread.
                ctx.warn(
                    item.line,
                    &g.path("type"),
                    format!("`{other}` is not supported by Ballast, ignored (physical, nameserver and route are)"),
                );
            }
        }
    }
    f.finish_ref(ctx, &["version", "config"]);
    net
}

/// One version 1 subnet of `iface`: dhcp, dhcp4 or static.
pub(super) fn subnet_v1(
    n: &Node,
    path: &str,
    iface: &mut Interface,
    net: &mut Network,
    ctx: &mut Ctx,
) {
    let Some(mut g) = Fields::new(n, path, ctx) else {
        return;
    };
    let kind = opt_str(&mut g, "type", ctx, any).unwrap_or_default();
    match kind.as_str() {
        "dhcp" | "dhcp4" => iface.dhcp = true,
        "static" | "static6" => {
            let netmask = opt_str(&mut g, "netmask", ctx, any);
            let ap = g.path("address");
            match g.get("address") {
                Some(a) => {
                    if let Some(s) = string(a, &ap, ctx) {
                        if let Some(c) = ctx.check(a, &ap, with_prefix(&s, netmask.as_deref())) {
                            iface.addresses.push(c);
                        }
                    }
                }
                None => ctx.err(n.line, &ap, "missing: a static subnet needs an `address`"),
            }
            if let Some(gw) = opt_str(&mut g, "gateway", ctx, checks::ip) {
                iface.gateway = Some(gw);
            }
            net.dns
                .nameservers
                .extend(opt_list(&mut g, "dns_nameservers", ctx, checks::ip));
            net.dns
                .search
                .extend(opt_list(&mut g, "dns_search", ctx, checks::hostname));
        }
        other => {
            ctx.warn(
                n.line,
                &g.path("type"),
                format!("subnet type `{other}` is not supported by Ballast, ignored (dhcp, dhcp4, static and static6 are)"),
            );
            return;
        }
    }
    g.finish(
        ctx,
        &[
            "type",
            "address",
            "netmask",
            "gateway",
            "dns_nameservers",
            "dns_search",
        ],
    );
}

/// A route's destination: `default` or a CIDR (`0.0.0.0/0` is one).
pub(super) fn route_destination(s: &str) -> Result<(), String> {
    if s == "default" {
        Ok(())
    } else {
        checks::cidr(s)
    }
}

pub(super) fn opt_mtu(g: &mut Fields, ctx: &mut Ctx) -> Option<u32> {
    let p = g.path("mtu");
    g.get("mtu").and_then(|m| match m.v {
        V::Int(v, _) if (68..=65535).contains(&v) => u32::try_from(v).ok(),
        _ => {
            ctx.err(m.line, &p, "not an MTU (a number from 68 to 65535)");
            None
        }
    })
}

/// A list of `{TO: CIDR|default, VIA: IP}` mappings.
pub(super) fn routes(
    n: &Node,
    path: &str,
    (to_key, via_key): (&str, &str),
    out: &mut Vec<Route>,
    ctx: &mut Ctx,
) {
    let V::Seq(items) = &n.v else {
        ctx.expected(n, path, "a list of routes");
        return;
    };
    for (k, item) in items.iter().enumerate() {
        let Some(mut g) = Fields::new(item, &idx(path, k), ctx) else {
            continue;
        };
        let to = opt_str(&mut g, to_key, ctx, route_destination);
        let via = opt_str(&mut g, via_key, ctx, checks::ip);
        g.finish(ctx, &[to_key, via_key]);
        match (to, via) {
            (Some(to), Some(via)) => out.push(Route { to, via }),
            _ => ctx.err(
                item.line,
                &idx(path, k),
                format!(
                    "a route needs `{to_key}` (CIDR or default) and `{via_key}` (an IP address)"
                ),
            ),
        }
    }
}

/// A netplan id used with `match:`: any label without blanks or `/`.
fn netplan_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 || s.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!(
            "`{s}` is not an interface id (a word like `lan` or `eth0`)"
        ));
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff` (any case).
pub(super) fn mac_address(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a MAC address (six hex pairs with colons, e.g. 52:54:00:12:34:56)"
        ))
    }
}

/// A glob on interface or driver names (`en*`, `virtio_net`).
fn name_glob(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 || s.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!("`{s}` is not a name or glob (e.g. `en*`)"));
    }
    Ok(())
}

/// netplan's `match:` (macaddress, name, driver), MAC lowercased.
fn match_v2(n: &Node, path: &str, ctx: &mut Ctx) -> Option<InterfaceMatch> {
    let mut f = Fields::new(n, path, ctx)?;
    let m = InterfaceMatch {
        macaddress: opt_str(&mut f, "macaddress", ctx, mac_address).map(|m| m.to_ascii_lowercase()),
        name: opt_str(&mut f, "name", ctx, name_glob),
        driver: opt_str(&mut f, "driver", ctx, name_glob),
    };
    f.finish(ctx, &["macaddress", "name", "driver"]);
    if m == InterfaceMatch::default() {
        ctx.err(
            n.line,
            path,
            "an empty `match:` matches nothing here (give macaddress, name or driver)",
        );
        return None;
    }
    Some(m)
}
