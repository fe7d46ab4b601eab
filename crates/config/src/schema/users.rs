//! `users:`: the default user and named users, checked field by field.
//! It never decides what the default user looks like (that is the plan's).

use super::*;

pub(super) const USER_KEYS: &[&str] = &[
    "name",
    "gecos",
    "uid",
    "groups",
    "sudo",
    "shell",
    "lock_passwd",
    "ssh_authorized_keys",
];

pub(super) fn users(n: &Node, path: &str, ctx: &mut Ctx) -> Vec<UserSpec> {
    // cloud-init also takes a comma-separated string of names.
    let items: Vec<Node> = match &n.v {
        V::Seq(items) => items.clone(),
        V::Str(s) => s
            .split(',')
            .map(|name| Node {
                line: n.line,
                v: V::Str(name.trim().to_string()),
            })
            .collect(),
        _ => {
            ctx.expected(n, path, "a list of users");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let p = idx(path, i);
        let spec = match &item.v {
            V::Str(s) if s == "default" => Some(UserSpec::Default),
            V::Str(s) => ctx
                .check(item, &p, checks::user_name(s))
                .map(|()| UserSpec::User(bare_user(s))),
            V::Map(_) => user(item, &p, ctx).map(UserSpec::User),
            _ => {
                ctx.expected(item, &p, "`default`, a user name or a mapping with `name`");
                None
            }
        };
        if let Some(spec) = spec {
            let name = match &spec {
                UserSpec::Default => crate::DEFAULT_USER.to_string(),
                UserSpec::User(u) => u.name.clone(),
            };
            if !seen.insert(name.clone()) {
                ctx.err(
                    item.line,
                    &p,
                    format!("user `{name}` is listed twice (`default` is the user `{}`; merge the entries)", crate::DEFAULT_USER),
                );
                continue;
            }
            out.push(spec);
        }
    }
    out
}

pub(super) fn bare_user(name: &str) -> User {
    User::named(name)
}

pub(super) fn user(n: &Node, path: &str, ctx: &mut Ctx) -> Option<User> {
    let mut f = Fields::new(n, path, ctx)?;
    let Some(name) = opt_str(&mut f, "name", ctx, checks::user_name) else {
        if f.get("name").is_none() {
            ctx.err(
                n.line,
                &f.path("name"),
                "missing: every user needs a `name` (e.g. `name: alice`)",
            );
        }
        return None;
    };
    let mut u = bare_user(&name);
    u.gecos = opt_str(&mut f, "gecos", ctx, |s| {
        if s.contains([':', '\n']) {
            Err("contains `:` or a newline (write plain text)".into())
        } else {
            Ok(())
        }
    });
    if let Some(uid) = f.get("uid") {
        let p = f.path("uid");
        u.uid = match &uid.v {
            V::Int(i, _) => u32::try_from(*i).ok(),
            V::Str(s) => s.parse().ok(),
            _ => None,
        };
        if u.uid.is_none() {
            ctx.err(
                uid.line,
                &p,
                "not a user id (a number from 0 to 4294967295)",
            );
        }
    }
    if let Some(g) = f.get("groups") {
        let p = f.path("groups");
        u.groups = match &g.v {
            V::Str(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            _ => str_list(g, &p, ctx, any),
        };
        for group in &u.groups {
            if checks::user_name(group).is_err() {
                ctx.err(
                    g.line,
                    &p,
                    format!("`{group}` is not a valid group name (a-z, 0-9, _ and -)"),
                );
            }
        }
    }
    if let Some(s) = f.get("sudo") {
        let p = f.path("sudo");
        u.sudo = match &s.v {
            V::Bool(false) => Vec::new(),
            V::Str(rule) => vec![rule.clone()],
            V::Seq(_) => str_list(s, &p, ctx, any),
            _ => {
                ctx.expected(s, &p, "a sudoers rule string (e.g. `ALL=(ALL) NOPASSWD:ALL`), a list of rules, or false");
                Vec::new()
            }
        };
        for rule in &u.sudo {
            if rule.contains('\n') {
                ctx.err(
                    s.line,
                    &p,
                    "a sudo rule must be one line (one list item per rule)",
                );
            }
        }
    }
    u.shell = opt_str(&mut f, "shell", ctx, checks::abs_path);
    let lock_line = f.key_line("lock_passwd");
    if !opt_bool(&mut f, "lock_passwd", true, ctx) {
        ctx.warn(lock_line, &f.path("lock_passwd"), NO_PASSWORD);
    }
    u.ssh_authorized_keys = opt_list(&mut f, "ssh_authorized_keys", ctx, checks::ssh_key);
    for k in ["passwd", "hashed_passwd", "plain_text_passwd"] {
        if f.get(k).is_some() || f.key_line(k).is_some() {
            let line = f.key_line(k);
            ctx.warn(line, &f.path(k), NO_PASSWORD);
        }
    }
    f.finish(ctx, USER_KEYS);
    Some(u)
}
