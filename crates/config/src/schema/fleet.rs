//! `ballast.update` (channel, keys, and the update agent's settings: auto,
//! check_interval, jitter, window, reboot_lock) and `ballast.health` (the user
//! health checks that gate an update's commit).

use super::*;
use crate::fleet::{self as fl, HealthCheck, RebootLock, Update, Window};

const UPDATE_KEYS: &[&str] = &[
    "channel",
    "trusted_keys",
    "auto",
    "check_interval",
    "jitter",
    "window",
    "reboot_lock",
];

pub(super) fn update(n: &Node, path: &str, ctx: &mut Ctx) -> Option<Update> {
    let mut f = Fields::new(n, path, ctx)?;
    let channel = opt_str(&mut f, "channel", ctx, checks::url);
    let keys = opt_list(&mut f, "trusted_keys", ctx, |s| {
        checks::trusted_key(s).map(|_| ())
    });
    let mut u = Update::channel_only(
        channel,
        keys.iter()
            .filter_map(|k| checks::trusted_key(k).ok())
            .collect(),
    );
    u.auto = opt_bool(&mut f, "auto", false, ctx);
    if let Some(d) = opt_duration(&mut f, "check_interval", ctx) {
        if d == 0 {
            ctx.err(
                f.get("check_interval").and_then(|n| n.line),
                &f.path("check_interval"),
                "must be at least 1s (e.g. 1h)",
            );
        } else {
            u.check_interval = d;
        }
    }
    u.jitter = opt_duration(&mut f, "jitter", ctx).unwrap_or(0);
    if let Some(w) = f.get("window") {
        u.window = window(w, &f.path("window"), ctx);
    }
    if let Some(l) = f.get("reboot_lock") {
        u.reboot_lock = reboot_lock(l, &f.path("reboot_lock"), ctx);
    }
    if u.auto && u.channel.is_none() {
        ctx.err(
            n.line,
            &f.path("auto"),
            "auto: true needs a `channel` to update from (add ballast.update.channel: https://...)",
        );
    }
    f.finish(ctx, UPDATE_KEYS);
    Some(u)
}

/// A duration written as a number of seconds or a string like `1h30m`.
fn duration(n: &Node, path: &str, ctx: &mut Ctx) -> Option<u64> {
    let s = match &n.v {
        V::Int(i, _) if *i >= 0 => return Some(*i as u64),
        _ => string(n, path, ctx)?,
    };
    ctx.check(n, path, fl::parse_duration(&s))
}

fn opt_duration(f: &mut Fields, key: &str, ctx: &mut Ctx) -> Option<u64> {
    let p = f.path(key);
    let n = f.get(key)?;
    duration(n, &p, ctx)
}

fn window(n: &Node, path: &str, ctx: &mut Ctx) -> Option<Window> {
    let mut f = Fields::new(n, path, ctx)?;
    let mut ok = true;
    let mut days = Vec::new();
    if let Some(d) = f.get("days") {
        for s in str_list(d, &f.path("days"), ctx, |s| {
            fl::parse_weekday(s).map(|_| ())
        }) {
            if let Ok(i) = fl::parse_weekday(&s) {
                days.push(i);
            }
        }
        days.sort_unstable();
        days.dedup();
    }
    let start = match f.get("start") {
        Some(s) => {
            let p = f.path("start");
            let v = string(s, &p, ctx).and_then(|t| ctx.check(s, &p, fl::parse_clock(&t)));
            ok &= v.is_some();
            v
        }
        None => {
            ctx.err(
                n.line,
                &f.path("start"),
                "missing: a window needs a `start` time of day (e.g. start: \"02:00\")",
            );
            None
        }
    };
    let length = match f.get("length") {
        Some(l) => {
            let p = f.path("length");
            let v = duration(l, &p, ctx);
            match v {
                Some(0) => {
                    ctx.err(l.line, &p, "a window must last at least 1s (e.g. 2h)");
                    None
                }
                Some(s) if s > 7 * 86_400 => {
                    ctx.err(
                        l.line,
                        &p,
                        "a window lasts at most 7d (leave `window` out to allow reboots at any time)",
                    );
                    None
                }
                v => v,
            }
        }
        None => {
            ctx.err(
                n.line,
                &f.path("length"),
                "missing: a window needs a `length` (e.g. length: 2h)",
            );
            None
        }
    };
    let timezone = opt_str(&mut f, "timezone", ctx, checks::timezone);
    if f.get("timezone").is_some() && timezone.is_none() {
        ok = false;
    }
    f.finish(ctx, &["days", "start", "length", "timezone"]);
    if !ok {
        return None;
    }
    Some(Window {
        days,
        start_minute: start?,
        length: length?,
        timezone: timezone.unwrap_or_else(|| "UTC".into()),
    })
}

fn reboot_lock(n: &Node, path: &str, ctx: &mut Ctx) -> Option<RebootLock> {
    let mut f = Fields::new(n, path, ctx)?;
    let etcd = f.get("etcd");
    let fleetlock = f.get("fleetlock");
    let lock = match (etcd, fleetlock) {
        (Some(e), None) => {
            let p = f.path("etcd");
            let mut g = Fields::new(e, &p, ctx)?;
            let endpoints = opt_list(&mut g, "endpoints", ctx, checks::url);
            if endpoints.is_empty() && g.get("endpoints").is_none() {
                ctx.err(
                    e.line,
                    &g.path("endpoints"),
                    "missing: etcd needs `endpoints` (e.g. [\"http://10.0.0.5:2379\"])",
                );
            }
            let slots = match g.get("slots") {
                None => Some(1),
                Some(s) => match &s.v {
                    V::Int(i, _) if (1..=1000).contains(i) => Some(*i as u32),
                    _ => {
                        ctx.err(
                            s.line,
                            &g.path("slots"),
                            "expected how many machines may reboot at once, 1-1000",
                        );
                        None
                    }
                },
            };
            let prefix = opt_str(&mut g, "prefix", ctx, |s| {
                if s.is_empty() || s.chars().any(char::is_whitespace) {
                    Err(format!(
                        "`{s}` is not an etcd key prefix (e.g. /ballast/reboot-lock/)"
                    ))
                } else {
                    Ok(())
                }
            })
            .unwrap_or_else(|| fl::DEFAULT_ETCD_PREFIX.into());
            g.finish(ctx, &["endpoints", "slots", "prefix"]);
            if endpoints.is_empty() {
                return None;
            }
            RebootLock::Etcd {
                endpoints,
                slots: slots?,
                prefix,
            }
        }
        (None, Some(l)) => {
            let p = f.path("fleetlock");
            match &l.v {
                V::Map(_) => {
                    let mut g = Fields::new(l, &p, ctx)?;
                    let url = opt_str(&mut g, "url", ctx, checks::url);
                    if url.is_none() && g.get("url").is_none() {
                        ctx.err(
                            l.line,
                            &g.path("url"),
                            "missing: fleetlock needs the server's `url`",
                        );
                    }
                    let group = opt_str(&mut g, "group", ctx, any)
                        .unwrap_or_else(|| fl::DEFAULT_FLEETLOCK_GROUP.into());
                    g.finish(ctx, &["url", "group"]);
                    RebootLock::Fleetlock { url: url?, group }
                }
                _ => {
                    let url = string(l, &p, ctx)?;
                    ctx.check(l, &p, checks::url(&url))?;
                    RebootLock::Fleetlock {
                        url,
                        group: fl::DEFAULT_FLEETLOCK_GROUP.into(),
                    }
                }
            }
        }
        (Some(_), Some(_)) => {
            ctx.err(
                n.line,
                path,
                "both `etcd` and `fleetlock` are given (keep exactly one)",
            );
            return None;
        }
        (None, None) => {
            ctx.err(
                n.line,
                path,
                "give `etcd: {endpoints: [...], slots: N}` or `fleetlock: URL`",
            );
            return None;
        }
    };
    f.finish(ctx, &["etcd", "fleetlock"]);
    Some(lock)
}

pub(super) fn health(n: &Node, path: &str, ctx: &mut Ctx) -> Vec<HealthCheck> {
    let V::Seq(items) = &n.v else {
        ctx.expected(
            n,
            path,
            "a list of health checks ({http: URL}, {tcp: HOST:PORT} or {container: NAME})",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = idx(path, i);
        let Some(mut f) = Fields::new(item, &p, ctx) else {
            continue;
        };
        let http = opt_str(&mut f, "http", ctx, checks::url);
        let tcp = opt_str(&mut f, "tcp", ctx, |s| match s.rsplit_once(':') {
            Some((h, port)) if !h.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
            _ => Err(format!("`{s}` is not HOST:PORT (e.g. 127.0.0.1:5432)")),
        });
        let container = opt_str(&mut f, "container", ctx, checks::container_name);
        let given = ["http", "tcp", "container"]
            .iter()
            .filter(|k| f.given(k))
            .count();
        f.finish(ctx, &["http", "tcp", "container"]);
        if given != 1 {
            ctx.err(
                item.line,
                &p,
                "each health check is exactly one of `http: URL`, `tcp: HOST:PORT`, `container: NAME`",
            );
            continue;
        }
        if let Some(url) = http {
            out.push(HealthCheck::Http { url });
        } else if let Some(address) = tcp {
            out.push(HealthCheck::Tcp { address });
        } else if let Some(name) = container {
            out.push(HealthCheck::Container { name });
        }
    }
    out
}
