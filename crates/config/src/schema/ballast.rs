//! The `ballast:` section: system containers, engine, update, network,
//! sysctl and kernel modules.

use super::*;

pub(super) fn ballast(n: &Node, path: &str, ctx: &mut Ctx) -> Ballast {
    let mut b = Ballast::default();
    let Some(mut f) = Fields::new(n, path, ctx) else {
        return b;
    };
    if let Some(s) = f.get("system") {
        b.system = system(s, &f.path("system"), ctx);
    }
    if let Some(e) = f.get("engine") {
        b.engine = engine(e, &f.path("engine"), ctx);
    }
    if let Some(u) = f.get("update") {
        b.update = update(u, &f.path("update"), ctx);
    }
    if let Some(nw) = f.get("network") {
        b.network = network(nw, &f.path("network"), ctx);
    }
    if let Some(s) = f.get("sysctl") {
        b.sysctl = sysctl(s, &f.path("sysctl"), ctx);
    }
    b.modules = opt_list(&mut f, "modules", ctx, checks::module_name);
    if let Some(h) = f.get("health") {
        b.health = super::fleet::health(h, &f.path("health"), ctx);
    }
    f.finish(
        ctx,
        &[
            "system", "engine", "update", "network", "sysctl", "modules", "health",
        ],
    );
    b
}

pub(super) const SYSTEM_KEYS: &[&str] = &[
    "name",
    "image",
    "bundle",
    "command",
    "env",
    "mounts",
    "host_network",
    "restart",
    "required",
];

pub(super) fn system(n: &Node, path: &str, ctx: &mut Ctx) -> Vec<SystemContainer> {
    let V::Seq(items) = &n.v else {
        ctx.expected(n, path, "a list of system containers");
        return Vec::new();
    };
    let mut out: Vec<SystemContainer> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = idx(path, i);
        if let Some(c) = container(item, &p, ctx) {
            if out.iter().any(|o| o.name == c.name) {
                ctx.err(
                    item.line,
                    &p,
                    format!(
                        "system container `{}` is defined twice (names must be unique)",
                        c.name
                    ),
                );
                continue;
            }
            out.push(c);
        }
    }
    out
}

pub(super) fn container(n: &Node, path: &str, ctx: &mut Ctx) -> Option<SystemContainer> {
    let mut f = Fields::new(n, path, ctx)?;
    let name = opt_str(&mut f, "name", ctx, checks::container_name);
    if name.is_none() && f.get("name").is_none() {
        ctx.err(
            n.line,
            &f.path("name"),
            "missing: every system container needs a `name` ([a-z0-9-])",
        );
    }
    let image = opt_str(&mut f, "image", ctx, checks::abs_path);
    let bundle = opt_str(&mut f, "bundle", ctx, checks::abs_path);
    let source = match (image, bundle) {
        (Some(i), None) => Some(ContainerSource::Image(i)),
        (None, Some(b)) => Some(ContainerSource::Bundle(b)),
        (Some(_), Some(_)) => {
            ctx.err(
                n.line,
                path,
                "both `image` and `bundle` are given (keep exactly one)",
            );
            None
        }
        (None, None) => {
            if f.get("image").is_none() && f.get("bundle").is_none() {
                // Neither: the command runs on the image's admin userland
                // (checked below: it then needs a command).
                Some(ContainerSource::Userland)
            } else {
                None
            }
        }
    };
    let command = opt_list(&mut f, "command", ctx, any);
    if source == Some(ContainerSource::Userland) && command.is_empty() {
        ctx.err(
            n.line,
            path,
            "neither `image` (an OCI archive path) nor `bundle` (an OCI bundle directory) nor `command` (run on the admin userland) is given (add one)",
        );
    }
    let mut env = Vec::new();
    if let Some(e) = f.get("env") {
        let p = f.path("env");
        match &e.v {
            V::Map(entries) => {
                let mut pairs: Vec<(String, String)> = Vec::new();
                for entry in entries {
                    let kp = sub(&p, &entry.key);
                    if ctx
                        .check(&entry.value, &kp, checks::env_name(&entry.key))
                        .is_none()
                    {
                        continue;
                    }
                    let value = match &entry.value.v {
                        V::Bool(b) => Some(b.to_string()),
                        V::Null => Some(String::new()),
                        _ => string(&entry.value, &kp, ctx),
                    };
                    if let Some(v) = value {
                        pairs.push((entry.key.clone(), v));
                    }
                }
                pairs.sort();
                env = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            }
            V::Seq(_) => {
                env = str_list(e, &p, ctx, |s| match s.split_once('=') {
                    Some((k, _)) => checks::env_name(k),
                    None => Err(format!("`{s}` is not `NAME=value`")),
                });
            }
            _ => ctx.expected(e, &p, "a mapping NAME: value or a list of NAME=value"),
        }
    }
    let mut mounts = Vec::new();
    if let Some(m) = f.get("mounts") {
        let p = f.path("mounts");
        if let V::Seq(items) = &m.v {
            for (i, item) in items.iter().enumerate() {
                if let Some(mount) = mount(item, &idx(&p, i), ctx) {
                    mounts.push(mount);
                }
            }
        } else {
            ctx.expected(m, &p, "a list of mounts");
        }
    }
    let host_network = opt_bool(&mut f, "host_network", false, ctx);
    let restart = match f.get("restart") {
        None => Some(Restart::Always),
        Some(r) => {
            let p = f.path("restart");
            match string(r, &p, ctx).as_deref() {
                Some("always") => Some(Restart::Always),
                Some("on-failure") => Some(Restart::OnFailure),
                Some("never") => Some(Restart::Never),
                Some(other) => {
                    ctx.err(
                        r.line,
                        &p,
                        format!("unknown value `{other}` (always, on-failure, never)"),
                    );
                    None
                }
                None => None,
            }
        }
    };
    let required = opt_bool(&mut f, "required", false, ctx);
    f.finish(ctx, SYSTEM_KEYS);
    Some(SystemContainer {
        name: name?,
        source: source?,
        command,
        env,
        mounts,
        host_network,
        restart: restart?,
        required,
    })
}

pub(super) fn mount(n: &Node, path: &str, ctx: &mut Ctx) -> Option<Mount> {
    let m = match &n.v {
        V::Str(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            let (source, destination, options) = match parts.as_slice() {
                [s, d] => (*s, *d, Vec::new()),
                [s, d, o] => (*s, *d, o.split(',').map(String::from).collect()),
                _ => {
                    ctx.err(
                        n.line,
                        path,
                        format!(
                            "`{s}` is not `SOURCE:DESTINATION[:ro]` (e.g. /state/data:/data:ro)"
                        ),
                    );
                    return None;
                }
            };
            Mount {
                source: source.into(),
                destination: destination.into(),
                options,
            }
        }
        V::Map(_) => {
            let mut f = Fields::new(n, path, ctx)?;
            let source = opt_str(&mut f, "source", ctx, any);
            let destination = opt_str(&mut f, "destination", ctx, any);
            let options = opt_list(&mut f, "options", ctx, any);
            f.finish(ctx, &["source", "destination", "options"]);
            let (Some(source), Some(destination)) = (source, destination) else {
                ctx.err(n.line, path, "a mount needs `source` and `destination`");
                return None;
            };
            Mount {
                source,
                destination,
                options,
            }
        }
        _ => {
            ctx.expected(n, path, "`SOURCE:DESTINATION[:ro]` or a mapping");
            return None;
        }
    };
    ctx.check(n, path, checks::abs_path(&m.destination))?;
    if m.source.starts_with('/') {
        ctx.check(n, path, checks::abs_path(&m.source))?;
    }
    for o in &m.options {
        if ![
            "ro", "rw", "bind", "rbind", "nosuid", "nodev", "noexec", "private", "rprivate",
            "slave", "rslave",
        ]
        .contains(&o.as_str())
        {
            ctx.err(
                n.line,
                path,
                format!(
                    "unknown mount option `{o}` (ro, rw, bind, rbind, nosuid, nodev, noexec, ...)"
                ),
            );
            return None;
        }
    }
    Some(m)
}

pub(super) fn engine(n: &Node, path: &str, ctx: &mut Ctx) -> Option<Engine> {
    let mut f = Fields::new(n, path, ctx)?;
    let e = Engine {
        enabled: opt_bool(&mut f, "enabled", true, ctx),
        data_root: opt_str(&mut f, "data_root", ctx, checks::abs_path),
        registry_mirrors: opt_list(&mut f, "registry_mirrors", ctx, checks::url),
        insecure_registries: opt_list(&mut f, "insecure_registries", ctx, checks::host_port),
    };
    f.finish(
        ctx,
        &[
            "enabled",
            "data_root",
            "registry_mirrors",
            "insecure_registries",
        ],
    );
    Some(e)
}

pub(super) fn network(n: &Node, path: &str, ctx: &mut Ctx) -> Option<Network> {
    let mut f = Fields::new(n, path, ctx)?;
    let mut net = Network::default();
    if let Some(i) = f.get("interfaces") {
        let p = f.path("interfaces");
        if let V::Seq(items) = &i.v {
            for (k, item) in items.iter().enumerate() {
                let ip = idx(&p, k);
                let Some(mut g) = Fields::new(item, &ip, ctx) else {
                    continue;
                };
                let name = opt_str(&mut g, "name", ctx, checks::interface_name);
                if name.is_none() && g.get("name").is_none() {
                    ctx.err(
                        item.line,
                        &g.path("name"),
                        "missing: every interface needs a `name` (e.g. eth0)",
                    );
                }
                let addresses = opt_list(&mut g, "addresses", ctx, checks::cidr);
                let dhcp = opt_bool(&mut g, "dhcp", addresses.is_empty(), ctx);
                let gateway = opt_str(&mut g, "gateway", ctx, checks::ip);
                let mtu = opt_mtu(&mut g, ctx);
                let access_points = g
                    .get("access_points")
                    .map(|a| super::wifi::access_points(a, &g.path("access_points"), true, ctx))
                    .unwrap_or_default();
                g.finish(
                    ctx,
                    &[
                        "name",
                        "dhcp",
                        "addresses",
                        "gateway",
                        "mtu",
                        "access_points",
                    ],
                );
                if let Some(name) = name {
                    net.interfaces.push(Interface {
                        name,
                        matches: None,
                        set_name: None,
                        dhcp,
                        addresses,
                        gateway,
                        mtu,
                        access_points,
                    });
                }
            }
        } else {
            ctx.expected(i, &p, "a list of interfaces");
        }
    }
    if let Some(d) = f.get("dns") {
        if let Some(mut g) = Fields::new(d, &f.path("dns"), ctx) {
            net.dns = Dns {
                nameservers: opt_list(&mut g, "nameservers", ctx, checks::ip),
                search: opt_list(&mut g, "search", ctx, checks::hostname),
            };
            g.finish(ctx, &["nameservers", "search"]);
        }
    }
    if let Some(r) = f.get("routes") {
        routes(r, &f.path("routes"), ("to", "via"), &mut net.routes, ctx);
    }
    f.finish(ctx, &["interfaces", "dns", "routes"]);
    Some(net)
}

pub(super) fn sysctl(n: &Node, path: &str, ctx: &mut Ctx) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let V::Map(entries) = &n.v else {
        ctx.expected(n, path, "a mapping of sysctl names to values");
        return out;
    };
    for e in entries {
        let p = format!("{path}.\"{}\"", e.key);
        if let Err(m) = checks::sysctl_name(&e.key) {
            ctx.err(e.key_line, &p, m);
            continue;
        }
        let v = match &e.value.v {
            V::Bool(b) => Some(u8::from(*b).to_string()),
            V::Map(_) => {
                ctx.err(e.value.line, &p, "expected a value, found a mapping (quote the dotted name: \"net.ipv4.ip_forward\": 1)");
                None
            }
            _ => string(&e.value, &p, ctx),
        };
        if let Some(v) = v {
            out.insert(e.key.clone(), v);
        }
    }
    out
}
