//! `users:` and `groups:` as cloud-init reads them (`ug_util.py`): a list,
//! a comma-separated string or (deprecated) a mapping of users; `default`
//! for the built-in user; entries naming the same user merged, the first
//! value of a key winning; an entry named like the default user (or with no
//! name) merged into the default user, its groups added to the default ones.
//! Keys may be written with `-` or `_` (cloud-init normalises them).
//!
//! It never decides what the default user looks like: that is the plan's
//! [`default_user`](crate::plan::default_user); this module only lays the
//! document's entry over it.

use super::*;

use crate::Group;

pub(super) const USER_KEYS: &[&str] = &[
    "name",
    "gecos",
    "uid",
    "groups",
    "sudo",
    "shell",
    "lock_passwd",
    "ssh_authorized_keys",
    "primary_group",
    "homedir",
    "system",
    "no_create_home",
    "no_user_group",
    "no_log_init",
    "expiredate",
    "inactive",
    "create_groups",
    "ssh_redirect_user",
    "ssh_import_id",
    "selinux_user",
    "snapuser",
    "doas",
    "passwd",
    "hashed_passwd",
    "plain_text_passwd",
];

/// The `users:` list read: the specs in order, and the default user's own
/// entries merged over the built-in default user (`None`: none given).
pub(super) struct Users {
    pub specs: Vec<UserSpec>,
    pub default: Option<User>,
}

/// One name's entries, in document order.
struct Named<'a> {
    name: String,
    line: Option<usize>,
    /// Where the name is first written (for its error).
    path: String,
    /// The mappings that configure it, with their paths.
    maps: Vec<(&'a Node, String)>,
}

/// The name `users` entries without `name` (and `- default`) stand for.
const DEFAULT: &str = "default";

pub(super) fn users<'a>(n: &'a Node, path: &str, ctx: &mut Ctx) -> Users {
    let mut named: Vec<Named<'a>> = Vec::new();
    let mut add = |name: &str, line: Option<usize>, map: Option<(&'a Node, String)>, at: &str| {
        let i = match named.iter().position(|u| u.name == name) {
            Some(i) => i,
            None => {
                named.push(Named {
                    name: name.to_string(),
                    line,
                    path: at.to_string(),
                    maps: Vec::new(),
                });
                named.len() - 1
            }
        };
        named[i].maps.extend(map);
    };
    let names_in = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    match &n.v {
        V::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = idx(path, i);
                match &item.v {
                    V::Str(s) => names_in(s).iter().for_each(|s| add(s, item.line, None, &p)),
                    V::Seq(list) => {
                        for (j, s) in list.iter().enumerate() {
                            if let Some(s) = string(s, &idx(&p, j), ctx) {
                                names_in(&s)
                                    .iter()
                                    .for_each(|s| add(s, item.line, None, &p));
                            }
                        }
                    }
                    V::Map(_) => {
                        let name = entry_name(item, &p, ctx);
                        add(&name, item.line, Some((item, p.clone())), &sub(&p, "name"));
                    }
                    _ => ctx.expected(item, &p, "`default`, a user name or a mapping with `name`"),
                }
            }
        }
        V::Str(s) => names_in(s).iter().for_each(|s| add(s, n.line, None, path)),
        V::Map(entries) => {
            ctx.warn(
                n.line,
                path,
                "a mapping of users is deprecated in cloud-init (22.2), read as cloud-init reads it (write a list: `- name: alice`)",
            );
            for e in entries {
                let p = sub(path, &e.key);
                match &e.value.v {
                    V::Map(_) => add(&e.key, e.key_line, Some((&e.value, p.clone())), &p),
                    V::Bool(false) | V::Null => {}
                    V::Bool(true) | V::Str(_) | V::Int(..) => add(&e.key, e.key_line, None, &p),
                    _ => ctx.expected(&e.value, &p, "a mapping of user settings or true"),
                }
            }
        }
        _ => ctx.expected(n, path, "a list of users"),
    }

    let mut out = Users {
        specs: Vec::new(),
        default: None,
    };
    let has_default = named.iter().any(|u| u.name == DEFAULT);
    for u in &named {
        if u.name == DEFAULT {
            // The entry named like the default user comes first: its values
            // win over the entries without a name (cloud-init's order).
            let mut maps: Vec<(&Node, String)> = named
                .iter()
                .filter(|o| o.name == crate::DEFAULT_USER)
                .flat_map(|o| o.maps.iter().cloned())
                .collect();
            maps.extend(u.maps.iter().cloned());
            if !maps.is_empty() {
                let mut base = crate::plan::default_user(&[]);
                let default_groups = std::mem::take(&mut base.groups);
                if let Some(mut merged) = merge_entries(&maps, base, ctx) {
                    // cloud-init adds the default user's groups to those given.
                    for g in default_groups {
                        if !merged.groups.contains(&g) {
                            merged.groups.push(g);
                        }
                    }
                    out.default = Some(merged);
                }
            }
            out.specs.push(UserSpec::Default);
            continue;
        }
        if has_default && u.name == crate::DEFAULT_USER {
            continue; // merged into the default user above
        }
        let name_at = Node {
            line: u.line,
            v: V::Null,
        };
        if ctx
            .check(&name_at, &u.path, checks::user_name(&u.name))
            .is_none()
        {
            continue;
        }
        let p = u
            .maps
            .first()
            .map_or_else(|| u.path.clone(), |(_, p)| p.clone());
        if u.maps.len() > 1 {
            let lines: Vec<String> = u
                .maps
                .iter()
                .filter_map(|(m, _)| m.line.map(|l| l.to_string()))
                .collect();
            ctx.warn(
                u.maps.get(1).and_then(|(m, _)| m.line),
                &p,
                format!(
                    "user `{}` is configured more than once (lines {}): merged as cloud-init merges them, the first value of a key wins (write one entry)",
                    u.name,
                    lines.join(", ")
                ),
            );
        }
        let user = if u.maps.is_empty() {
            Some(User::named(&u.name))
        } else {
            merge_entries(&u.maps, User::named(&u.name), ctx)
        };
        out.specs.extend(user.map(UserSpec::User));
    }
    out
}

/// The `name` of a user mapping; `default` when it has none (cloud-init).
fn entry_name(n: &Node, path: &str, ctx: &mut Ctx) -> String {
    let V::Map(entries) = &n.v else {
        return DEFAULT.into();
    };
    match entries.iter().find(|e| e.key == "name").map(|e| &e.value) {
        None => DEFAULT.into(),
        Some(v) => string(v, &sub(path, "name"), ctx).unwrap_or_else(|| DEFAULT.into()),
    }
}

/// Reads the mappings of one user as one: a key of a later mapping is only
/// read when no earlier mapping gives it (cloud-init's `mergemanydict`).
fn merge_entries(maps: &[(&Node, String)], base: User, ctx: &mut Ctx) -> Option<User> {
    let (first, path) = maps.first()?;
    let mut entries: Vec<Entry> = Vec::new();
    for (k, (m, _)) in maps.iter().enumerate() {
        let V::Map(es) = &m.v else { continue };
        let earlier: Vec<String> = entries.iter().map(|e| e.key.replace('-', "_")).collect();
        entries.extend(
            es.iter()
                .filter(|e| k == 0 || !earlier.contains(&e.key.replace('-', "_")))
                .cloned(),
        );
    }
    let merged = Node {
        line: first.line,
        v: V::Map(entries),
    };
    user(&merged, path, base, ctx)
}

/// One user's settings over `base` (keys not given keep `base`'s value).
fn user(n: &Node, path: &str, base: User, ctx: &mut Ctx) -> Option<User> {
    let mut f = Fields::spelled(n, path, Spelling::Dashes, ctx)?;
    f.get("name"); // read by the caller
    let mut u = base;
    if let Some(g) = opt_str(&mut f, "gecos", ctx, |s| {
        if s.contains([':', '\n']) {
            Err("contains `:` or a newline (write plain text)".into())
        } else {
            Ok(())
        }
    }) {
        u.gecos = Some(g);
    }
    if let Some(uid) = f.get("uid") {
        let p = f.path("uid");
        // An integer, or (deprecated in cloud-init 22.3) a string of digits.
        u.uid = match &uid.v {
            V::Int(i, _) => u32::try_from(*i).ok(),
            V::Str(s) => s.trim().parse().ok(),
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
        u.groups = group_names(g, &f.path("groups"), ctx);
    }
    if f.given("sudo") {
        let p = f.path("sudo");
        u.sudo = match f.get("sudo") {
            // `sudo: null` and (deprecated) `sudo: false`: no rules.
            None => Vec::new(),
            Some(s) => match &s.v {
                V::Bool(false) => Vec::new(),
                V::Str(rule) => vec![rule.clone()],
                V::Seq(items) => {
                    let mut rules = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        match &item.v {
                            V::Null => {}
                            _ => rules.extend(string(item, &idx(&p, i), ctx)),
                        }
                    }
                    rules
                }
                _ => {
                    ctx.expected(s, &p, "a sudoers rule string (e.g. `ALL=(ALL) NOPASSWD:ALL`), a list of rules, or null");
                    Vec::new()
                }
            },
        };
        if u.sudo.iter().any(|r| r.contains('\n')) {
            ctx.err(
                f.key_line("sudo"),
                &p,
                "a sudo rule must be one line (one list item per rule)",
            );
        }
    }
    if let Some(s) = opt_str(&mut f, "shell", ctx, checks::abs_path) {
        u.shell = Some(s);
    }
    let lock_line = f.key_line("lock_passwd");
    if !opt_bool(&mut f, "lock_passwd", true, ctx) {
        ctx.warn(lock_line, &f.path("lock_passwd"), NO_PASSWORD);
    }
    let keys = opt_list(&mut f, "ssh_authorized_keys", ctx, checks::ssh_key);
    if f.key_line("ssh_authorized_keys").is_some() {
        u.ssh_authorized_keys = keys;
    }
    if let Some(g) = opt_str(&mut f, "primary_group", ctx, group_name) {
        u.primary_group = Some(g);
    }
    if let Some(h) = opt_str(&mut f, "homedir", ctx, checks::abs_path) {
        u.homedir = Some(h);
    }
    u.system = opt_bool(&mut f, "system", u.system, ctx);
    u.no_create_home = opt_bool(&mut f, "no_create_home", u.no_create_home, ctx);
    u.no_user_group = opt_bool(&mut f, "no_user_group", u.no_user_group, ctx);
    // Ballast keeps no lastlog/faillog, so `no_log_init` is what happens anyway.
    opt_bool(&mut f, "no_log_init", false, ctx);
    if let Some(d) = opt_str(&mut f, "expiredate", ctx, checks::date) {
        u.expiredate = Some(d);
    }
    if let Some(i) = f.get("inactive") {
        let p = f.path("inactive");
        // cloud-init's schema says a string of days; YAML makes `30` an integer.
        let days = match &i.v {
            V::Int(d, _) => u32::try_from(*d).ok(),
            V::Str(s) => s.trim().parse().ok(),
            _ => None,
        };
        if days.is_none() {
            ctx.err(i.line, &p, "not a number of days (e.g. `30`)");
        }
        u.inactive = days.or(u.inactive);
    }
    let create_line = f.key_line("create_groups");
    if !opt_bool(&mut f, "create_groups", true, ctx) {
        ctx.warn(
            create_line,
            &f.path("create_groups"),
            "ignored: Ballast creates every group a user is put in, as it keeps no groups from the image (list existing groups only, or drop the key)",
        );
    }
    let redirect_line = f.key_line("ssh_redirect_user");
    if opt_bool(&mut f, "ssh_redirect_user", false, ctx) {
        ctx.warn(
            redirect_line,
            &f.path("ssh_redirect_user"),
            "ignored: a NoCloud machine has no cloud-provided keys to redirect; this user gets only its own `ssh_authorized_keys` (drop the key)",
        );
    }
    let why: [(&str, &str); 4] = [
        ("ssh_import_id", "not supported: Ballast does not fetch keys from Launchpad or GitHub at boot (paste the keys into `ssh_authorized_keys`)"),
        ("selinux_user", "ignored: Ballast has no SELinux (drop the key)"),
        ("snapuser", "not supported: Ballast is an immutable OS without snap (give `name` and `ssh_authorized_keys`)"),
        ("doas", "not supported: Ballast has sudo, not doas (give the rule in `sudo`)"),
    ];
    for (k, reason) in why {
        if f.given(k) {
            ctx.warn(f.key_line(k), &f.path(k), reason);
        }
    }
    for k in ["passwd", "hashed_passwd", "plain_text_passwd"] {
        if f.given(k) {
            ctx.warn(f.key_line(k), &f.path(k), NO_PASSWORD);
        }
    }
    f.finish(ctx, USER_KEYS);
    Some(u)
}

fn group_name(s: &str) -> Result<(), String> {
    checks::user_name(s).map_err(|_| format!("`{s}` is not a valid group name (a-z, 0-9, _ and -)"))
}

/// A user's `groups`: a comma-separated string, a list, or (deprecated in
/// cloud-init 23.1) a mapping whose keys are the groups.
fn group_names(g: &Node, path: &str, ctx: &mut Ctx) -> Vec<String> {
    let names: Vec<String> = match &g.v {
        V::Str(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        V::Map(entries) => entries.iter().map(|e| e.key.clone()).collect(),
        _ => str_list(g, path, ctx, any),
    };
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if ctx.check(g, path, group_name(&name)).is_some() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Top-level `groups:`: a comma-separated string, a list of names and
/// `{group: members}` mappings, or a mapping of groups to members (a member
/// is one name or a list). A group given twice gets both member lists.
pub(super) fn groups(n: &Node, path: &str, ctx: &mut Ctx) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    match &n.v {
        V::Str(s) => {
            for name in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if ctx.check(n, path, group_name(name)).is_some() {
                    add_group(&mut out, name.to_string(), Vec::new());
                }
            }
        }
        V::Map(entries) => groups_map(&mut out, entries, path, ctx),
        V::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = idx(path, i);
                match &item.v {
                    V::Map(entries) => groups_map(&mut out, entries, &p, ctx),
                    _ => {
                        if let Some(name) = string(item, &p, ctx) {
                            if ctx.check(item, &p, group_name(&name)).is_some() {
                                add_group(&mut out, name, Vec::new());
                            }
                        }
                    }
                }
            }
        }
        _ => ctx.expected(
            n,
            path,
            "a list of groups, a mapping of groups to members, or a comma-separated string",
        ),
    }
    for g in &mut out {
        let mut seen = HashSet::new();
        g.members.retain(|m| seen.insert(m.clone()));
    }
    out
}

fn add_group(out: &mut Vec<Group>, name: String, members: Vec<String>) {
    match out.iter_mut().find(|g| g.name == name) {
        Some(g) => g.members.extend(members),
        None => out.push(Group { name, members }),
    }
}

/// `{group: member}` or `{group: [members]}` entries.
fn groups_map(out: &mut Vec<Group>, entries: &[Entry], path: &str, ctx: &mut Ctx) {
    for e in entries {
        let gp = sub(path, &e.key);
        if ctx.check(&e.value, &gp, group_name(&e.key)).is_none() {
            continue;
        }
        let members = match &e.value.v {
            V::Null => Vec::new(),
            V::Seq(_) => str_list(&e.value, &gp, ctx, checks::user_name),
            _ => string(&e.value, &gp, ctx)
                .and_then(|m| {
                    ctx.check(&e.value, &gp, checks::user_name(&m))
                        .map(|()| vec![m])
                })
                .unwrap_or_default(),
        };
        add_group(out, e.key.clone(), members);
    }
}
