//! The schema: walks a [`Node`] tree (from YAML or TOML), checks every key,
//! and builds the typed [`Document`]. It goes on after an error so that one
//! run lists them all; the document is only returned when there was none.

use std::collections::{BTreeMap, HashSet};

use crate::checks;
use crate::node::{self, Entry, Node, V};
use crate::{
    Ballast, Checked, Cmd, ConfigError, ContainerSource, Dns, Document, Engine, Interface,
    MetaData, Mount, Network, Ntp, Restart, Route, SystemContainer, Update, User, UserSpec,
    Warning, WriteFile, MAX_DOCUMENT,
};

const HEADER: &str = "#cloud-config";

struct Ctx {
    source: String,
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
}

impl Ctx {
    fn new(source: &str) -> Ctx {
        Ctx {
            source: source.to_string(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }
    /// The first error, or a general one naming `what` (a side file).
    fn first_error(&mut self, what: &str) -> ConfigError {
        self.errors.drain(..).next().unwrap_or_else(|| ConfigError {
            source: self.source.clone(),
            line: None,
            key: String::new(),
            message: format!("invalid {what}"),
        })
    }
    fn item(&self, line: Option<usize>, key: &str, message: String) -> ConfigError {
        ConfigError {
            source: self.source.clone(),
            line,
            key: key.to_string(),
            message,
        }
    }
    fn err(&mut self, line: Option<usize>, key: &str, message: impl Into<String>) {
        let e = self.item(line, key, message.into());
        // One list of errors is plenty; a broken document can give thousands.
        if self.errors.len() < 100 {
            self.errors.push(e);
        }
    }
    fn warn(&mut self, line: Option<usize>, key: &str, message: impl Into<String>) {
        let w = self.item(line, key, message.into());
        if self.warnings.len() < 100 {
            self.warnings.push(w);
        }
    }
    /// Records `r`'s error at the node; `Some` when it passed.
    fn check<T>(&mut self, n: &Node, path: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(m) => {
                self.err(n.line, path, m);
                None
            }
        }
    }
    fn expected(&mut self, n: &Node, path: &str, what: &str) {
        let mut m = format!("expected {what}, found {}", n.v.kind());
        if matches!(n.v, V::Bool(_)) && what.contains("string") {
            m.push_str(" (YAML reads yes/no/on/off as booleans: quote the value)");
        }
        self.err(n.line, path, m);
    }
}

fn sub(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The keys of one mapping; remembers which were read, so that the others
/// are reported as unknown.
struct Fields<'a> {
    entries: &'a [Entry],
    used: Vec<bool>,
    path: String,
}

impl<'a> Fields<'a> {
    fn new(n: &'a Node, path: &str, ctx: &mut Ctx) -> Option<Self> {
        match &n.v {
            V::Map(entries) => Some(Fields {
                entries,
                used: vec![false; entries.len()],
                path: path.to_string(),
            }),
            _ => {
                ctx.expected(n, path, "a mapping of keys");
                None
            }
        }
    }
    /// The value of `key`, or `None` if missing or null.
    fn get(&mut self, key: &str) -> Option<&'a Node> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        self.used[i] = true;
        let n = &self.entries[i].value;
        (!matches!(n.v, V::Null)).then_some(n)
    }
    fn key_line(&self, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .and_then(|e| e.key_line)
    }
    fn path(&self, key: &str) -> String {
        sub(&self.path, key)
    }
    /// [`Fields::finish`] through a reference.
    fn finish_ref(&mut self, ctx: &mut Ctx, known: &[&str]) {
        let done = Fields {
            entries: self.entries,
            used: std::mem::take(&mut self.used),
            path: self.path.clone(),
        };
        done.finish(ctx, known);
    }
    /// Warns about every key not read, with its line.
    fn finish(self, ctx: &mut Ctx, known: &[&str]) {
        for (e, used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let hint = match checks::suggest(&e.key, known) {
                Some(k) => format!("did you mean `{k}`?"),
                None => format!("known here: {}", known.join(", ")),
            };
            ctx.warn(
                e.key_line,
                &sub(&self.path, &e.key),
                format!("unknown key, ignored ({hint})"),
            );
        }
    }
}

fn string(n: &Node, path: &str, ctx: &mut Ctx) -> Option<String> {
    match &n.v {
        V::Str(s) => Some(s.clone()),
        V::Int(i, _) => Some(i.to_string()),
        V::Float(f) => Some(f.to_string()),
        _ => {
            ctx.expected(n, path, "a string");
            None
        }
    }
}

fn boolean(n: &Node, path: &str, ctx: &mut Ctx) -> Option<bool> {
    match &n.v {
        V::Bool(b) => Some(*b),
        V::Str(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(true),
            "false" | "no" | "off" | "0" => Some(false),
            _ => {
                ctx.err(
                    n.line,
                    path,
                    format!("`{s}` is not a boolean (true or false)"),
                );
                None
            }
        },
        _ => {
            ctx.expected(n, path, "true or false");
            None
        }
    }
}

/// A list of strings, each checked by `check`.
fn str_list(
    n: &Node,
    path: &str,
    ctx: &mut Ctx,
    check: impl Fn(&str) -> Result<(), String>,
) -> Vec<String> {
    let V::Seq(items) = &n.v else {
        ctx.expected(n, path, "a list of strings");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = idx(path, i);
        if let Some(s) = string(item, &p, ctx) {
            if ctx.check(item, &p, check(&s)).is_some() {
                out.push(s);
            }
        }
    }
    out
}

fn any(_: &str) -> Result<(), String> {
    Ok(())
}

fn opt_bool(f: &mut Fields, key: &str, default: bool, ctx: &mut Ctx) -> bool {
    let p = f.path(key);
    f.get(key)
        .and_then(|n| boolean(n, &p, ctx))
        .unwrap_or(default)
}

fn opt_str(
    f: &mut Fields,
    key: &str,
    ctx: &mut Ctx,
    check: impl Fn(&str) -> Result<(), String>,
) -> Option<String> {
    let p = f.path(key);
    let n = f.get(key)?;
    let s = string(n, &p, ctx)?;
    ctx.check(n, &p, check(&s))?;
    Some(s)
}

fn opt_list(
    f: &mut Fields,
    key: &str,
    ctx: &mut Ctx,
    check: impl Fn(&str) -> Result<(), String>,
) -> Vec<String> {
    let p = f.path(key);
    f.get(key)
        .map(|n| str_list(n, &p, ctx, check))
        .unwrap_or_default()
}

// ------------------------------------------------------------ document

const TOP: &[&str] = &[
    "hostname",
    "fqdn",
    "preserve_hostname",
    "users",
    "ssh_authorized_keys",
    "write_files",
    "bootcmd",
    "runcmd",
    "ntp",
    "timezone",
    "ssh_pwauth",
    "disable_root",
    "ballast",
];

const IMMUTABLE: &str = "Ballast is an immutable OS: packages cannot be installed (run software in containers: `docker run`, or `ballast.system`)";
const NO_PASSWORD: &str =
    "password login is never enabled on Ballast (log in with a key from `ssh_authorized_keys`)";

/// cloud-init keys Ballast knows and deliberately does not honour.
fn ignored_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "packages" | "package_update" | "package_upgrade" | "package_reboot_if_required"
        | "apt" | "yum_repos" | "snap" | "zypper" | "apk_repos" => IMMUTABLE,
        "chpasswd" | "password" => NO_PASSWORD,
        "mounts" | "manage_etc_hosts" | "growpart" | "resize_rootfs" | "locale" | "keyboard"
        | "ca_certs" | "final_message" | "power_state" | "phone_home" | "ssh_keys"
        | "ssh_genkeytypes" | "ssh_deletekeys" | "ssh_import_id" | "random_seed" | "rsyslog"
        | "resolv_conf" | "manage_resolv_conf" | "groups" | "system_info" | "output"
        | "disk_setup" | "fs_setup" | "swap" | "ssh" | "device_aliases" | "prefer_fqdn_over_hostname"
        | "create_hostname_file" | "merge_how" | "vendor_data" => {
            "a cloud-init key that Ballast does not support, ignored (network, disks and time are set in the `ballast:` section)"
        }
        _ => return None,
    })
}

pub(crate) fn check(text: &str, source: &str) -> Checked {
    let mut ctx = Ctx::new(source);
    let doc = document(text, &mut ctx);
    // Read top to bottom, like the file.
    ctx.warnings.sort_by_key(|w| w.line);
    ctx.errors.sort_by_key(|e| e.line);
    Checked {
        doc: if ctx.errors.is_empty() { doc } else { None },
        errors: ctx.errors,
        warnings: ctx.warnings,
    }
}

/// YAML or TOML → node tree; `None` for an empty document.
fn load(text: &str, ctx: &mut Ctx) -> Result<Option<Node>, ()> {
    if text.len() > MAX_DOCUMENT {
        ctx.err(
            None,
            "",
            format!(
                "document is {} bytes, more than the {} KiB allowed (move large files into a container image or fetch them in runcmd)",
                text.len(),
                MAX_DOCUMENT >> 10
            ),
        );
        return Err(());
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.lines().next().unwrap_or("").trim_end();
    if first == HEADER {
        return node::load_yaml(text).map_err(|(line, m)| {
            ctx.err(line, "", format!("YAML syntax error: {m}"));
        });
    }
    if text.trim().is_empty() {
        return Ok(None);
    }
    if first.starts_with("#!") {
        ctx.err(Some(1), "", "user-data scripts are not supported (write a #cloud-config with the commands under `runcmd`)");
        return Err(());
    }
    if first.starts_with("#include")
        || first.starts_with("Content-Type:")
        || first.starts_with("#cloud-boothook")
    {
        ctx.err(
            Some(1),
            "",
            format!("`{first}` user-data is not supported (give one #cloud-config document)"),
        );
        return Err(());
    }
    match node::load_toml(text) {
        Ok(n) => Ok(Some(n)),
        Err((line, m)) => {
            if let Ok(Some(Node { v: V::Map(_), .. })) = node::load_yaml(text) {
                ctx.err(
                    Some(1),
                    "",
                    "this looks like YAML without the header (add `#cloud-config` as the first line)",
                );
            } else {
                ctx.err(
                    line,
                    "",
                    format!("TOML syntax error: {m} (a YAML document must start with the line `#cloud-config`)"),
                );
            }
            Err(())
        }
    }
}

fn document(text: &str, ctx: &mut Ctx) -> Option<Document> {
    let root = match load(text, ctx) {
        Ok(Some(n)) => n,
        Ok(None) => {
            return Some(Document {
                disable_root: true,
                ssh_deletekeys: true,
                ..Document::default()
            })
        }
        Err(()) => return None,
    };
    let mut f = Fields::new(&root, "", ctx)?;
    let mut d = Document {
        disable_root: true,
        ssh_deletekeys: true,
        ..Document::default()
    };

    d.hostname = opt_str(&mut f, "hostname", ctx, checks::hostname);
    d.fqdn = opt_str(&mut f, "fqdn", ctx, |s| {
        checks::hostname(s)?;
        if s.contains('.') {
            Ok(())
        } else {
            Err(format!("`{s}` is not a fully qualified name (a dotted name like web1.example.org; a short name goes in `hostname`)"))
        }
    });
    d.preserve_hostname = opt_bool(&mut f, "preserve_hostname", false, ctx);
    if let Some(n) = f.get("users") {
        d.users = Some(users(n, "users", ctx));
    }
    let keys_line = f.key_line("ssh_authorized_keys");
    d.ssh_authorized_keys = opt_list(&mut f, "ssh_authorized_keys", ctx, checks::ssh_key);
    if let Some(list) = &d.users {
        if !d.ssh_authorized_keys.is_empty() && !list.contains(&UserSpec::Default) {
            ctx.warn(
                keys_line,
                "ssh_authorized_keys",
                format!("these keys are for the default user `{}`, which `users` does not list, so they are not installed (add `- default` to `users`, or put the keys under a user)", crate::DEFAULT_USER),
            );
        }
    }
    if let Some(n) = f.get("write_files") {
        d.write_files = write_files(n, "write_files", ctx);
    }
    if let Some(n) = f.get("bootcmd") {
        d.bootcmd = commands(n, "bootcmd", ctx);
    }
    if let Some(n) = f.get("runcmd") {
        d.runcmd = commands(n, "runcmd", ctx);
    }
    if let Some(n) = f.get("ntp") {
        d.ntp = ntp(n, "ntp", ctx);
    }
    d.timezone = opt_str(&mut f, "timezone", ctx, checks::timezone);
    let pw_line = f.key_line("ssh_pwauth");
    d.ssh_pwauth = f
        .get("ssh_pwauth")
        .and_then(|n| boolean(n, "ssh_pwauth", ctx));
    if d.ssh_pwauth == Some(true) {
        ctx.warn(pw_line, "ssh_pwauth", NO_PASSWORD);
    }
    let root_line = f.key_line("disable_root");
    d.disable_root = opt_bool(&mut f, "disable_root", true, ctx);
    if !d.disable_root {
        ctx.warn(
            root_line,
            "disable_root",
            "root never logs in over SSH on Ballast, ignored (log in as `ballast` and use sudo)",
        );
    }
    if let Some(n) = f.get("ballast") {
        d.ballast = ballast(n, "ballast", ctx);
    }
    // cloud-init's own keys that Ballast leaves alone, then the rest.
    for (i, e) in f.entries.iter().enumerate() {
        if f.used[i] {
            continue;
        }
        if let Some(reason) = ignored_reason(&e.key) {
            f.used[i] = true;
            ctx.warn(e.key_line, &e.key, reason);
        }
    }
    f.finish(ctx, TOP);
    Some(d)
}

// ------------------------------------------------------------ users

const USER_KEYS: &[&str] = &[
    "name",
    "gecos",
    "uid",
    "groups",
    "sudo",
    "shell",
    "lock_passwd",
    "ssh_authorized_keys",
];

fn users(n: &Node, path: &str, ctx: &mut Ctx) -> Vec<UserSpec> {
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

fn bare_user(name: &str) -> User {
    User::named(name)
}

fn user(n: &Node, path: &str, ctx: &mut Ctx) -> Option<User> {
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

// ------------------------------------------------------------ files

const FILE_KEYS: &[&str] = &[
    "path",
    "content",
    "encoding",
    "owner",
    "permissions",
    "append",
    "defer",
];

fn write_files(n: &Node, path: &str, ctx: &mut Ctx) -> Vec<WriteFile> {
    let V::Seq(items) = &n.v else {
        ctx.expected(n, path, "a list of files");
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| write_file(item, &idx(path, i), ctx))
        .collect()
}

fn write_file(n: &Node, path: &str, ctx: &mut Ctx) -> Option<WriteFile> {
    let mut f = Fields::new(n, path, ctx)?;
    let file_path = opt_str(&mut f, "path", ctx, checks::abs_path);
    if file_path.is_none() && f.get("path").is_none() {
        ctx.err(
            n.line,
            &f.path("path"),
            "missing: every file needs an absolute `path`",
        );
    }
    let enc = opt_str(&mut f, "encoding", ctx, any);
    let content = match f.get("content") {
        None => Some(Vec::new()),
        Some(c) => {
            let p = f.path("content");
            let raw = match &c.v {
                V::Bin(b) => Some(b.clone()),
                _ => string(c, &p, ctx).map(String::into_bytes),
            };
            raw.and_then(|raw| {
                let r = decode(&raw, enc.as_deref(), matches!(c.v, V::Bin(_)));
                ctx.check(c, &p, r)
            })
        }
    };
    let owner = opt_str(&mut f, "owner", ctx, |s| {
        for part in s.split(':') {
            if checks::user_name(part).is_err() && part.parse::<u32>().is_err() {
                return Err(format!(
                    "`{s}` is not `user:group` or `user` (e.g. `root:root`)"
                ));
            }
        }
        if s.matches(':').count() > 1 {
            return Err(format!(
                "`{s}` is not `user:group` or `user` (e.g. `root:root`)"
            ));
        }
        Ok(())
    })
    .unwrap_or_else(|| "root:root".into());
    let (user, group) = match owner.split_once(':') {
        Some((u, g)) => (u.to_string(), Some(g.to_string())),
        None => (owner.clone(), None),
    };
    let mode = match f.get("permissions") {
        None => Some(0o644),
        Some(p) => permissions(p, &f.path("permissions"), ctx),
    };
    let append = opt_bool(&mut f, "append", false, ctx);
    let defer = opt_bool(&mut f, "defer", false, ctx);
    if let Some(line) = f.key_line("source") {
        f.get("source");
        ctx.warn(
            Some(line),
            &f.path("source"),
            "fetching file content from a URL is not supported, ignored (put the content in `content`, or fetch it in runcmd)",
        );
    }
    f.finish(ctx, FILE_KEYS);
    let file_path = file_path?;
    if file_path.starts_with("/usr/") {
        ctx.warn(
            n.line,
            path,
            format!("`{file_path}` is on the read-only system image and cannot be written (use /etc, /var or /state)"),
        );
    }
    Some(WriteFile {
        path: file_path,
        content: content?,
        owner: user,
        group,
        mode: mode?,
        append,
        defer,
    })
}

fn decode(raw: &[u8], encoding: Option<&str>, binary: bool) -> Result<Vec<u8>, String> {
    let text = || String::from_utf8_lossy(raw).into_owned();
    let out = match encoding.map(str::to_ascii_lowercase).as_deref() {
        None | Some("text/plain") | Some("text") => raw.to_vec(),
        Some("b64") | Some("base64") if binary => raw.to_vec(),
        Some("b64") | Some("base64") => checks::b64(&text()).map_err(|e| {
            format!("content is not valid base64: {e} (encode with `base64 -w0 FILE`)")
        })?,
        Some("gz") | Some("gzip") => checks::gunzip(raw)?,
        Some("gz+b64") | Some("gz+base64") | Some("gzip+b64") | Some("gzip+base64") => {
            let bytes = if binary {
                raw.to_vec()
            } else {
                checks::b64(&text()).map_err(|e| {
                    format!("content is not valid base64: {e} (encode with `gzip -c FILE | base64 -w0`)")
                })?
            };
            checks::gunzip(&bytes)?
        }
        Some(other) => {
            return Err(format!(
                "unknown encoding `{other}` (text/plain, b64, base64, gz, gzip, gz+b64, gz+base64, gzip+b64, gzip+base64)"
            ))
        }
    };
    if out.len() > checks::MAX_FILE {
        return Err(format!(
            "content is larger than {} MiB (ship big files in a container image)",
            checks::MAX_FILE >> 20
        ));
    }
    Ok(out)
}

fn permissions(n: &Node, path: &str, ctx: &mut Ctx) -> Option<u32> {
    let mode = match &n.v {
        V::Str(s) => {
            let digits = s.trim().trim_start_matches("0o");
            u32::from_str_radix(digits, 8)
                .ok()
                .filter(|_| !digits.is_empty())
        }
        // cloud-init takes an integer as the mode itself: YAML `0644` is
        // octal already; a decimal `644` is mode 01204, which nobody means.
        V::Int(i, radix) => {
            let m = u32::try_from(*i).ok();
            if *radix == 10 && *i > 7 && i.to_string().bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                ctx.warn(
                    n.line,
                    path,
                    format!("{i} is a decimal number (mode 0{:o}): write '0{i}' in quotes if you meant octal", m.unwrap_or(0)),
                );
            }
            m
        }
        _ => None,
    };
    match mode {
        Some(m) if m <= 0o7777 => Some(m),
        _ => {
            ctx.err(
                n.line,
                path,
                "not a file mode (an octal string like '0644' or '0600')",
            );
            None
        }
    }
}

// ------------------------------------------------------------ commands

fn commands(n: &Node, path: &str, ctx: &mut Ctx) -> Vec<Cmd> {
    let V::Seq(items) = &n.v else {
        ctx.expected(n, path, "a list of commands");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = idx(path, i);
        match &item.v {
            V::Str(s) if s.trim().is_empty() => {
                ctx.err(item.line, &p, "empty command (remove the item)");
            }
            V::Str(s) => out.push(Cmd::Shell(s.clone())),
            V::Seq(args) => {
                let mut argv = Vec::new();
                for (j, a) in args.iter().enumerate() {
                    let ap = idx(&p, j);
                    match &a.v {
                        V::Str(s) => argv.push(s.clone()),
                        V::Int(x, _) => argv.push(x.to_string()),
                        V::Float(x) => argv.push(x.to_string()),
                        V::Bool(b) => argv.push(b.to_string()),
                        _ => ctx.expected(a, &ap, "a string argument"),
                    }
                }
                if argv.is_empty() {
                    ctx.err(
                        item.line,
                        &p,
                        "empty argument list (give the program and its arguments)",
                    );
                } else if argv.len() == args.len() {
                    out.push(Cmd::Argv(argv));
                }
            }
            _ => ctx.expected(
                item,
                &p,
                "a command string (run by `sh -c`) or a list (program and arguments)",
            ),
        }
    }
    out
}

// ------------------------------------------------------------ ntp

fn ntp(n: &Node, path: &str, ctx: &mut Ctx) -> Option<Ntp> {
    let mut f = Fields::new(n, path, ctx)?;
    let enabled = opt_bool(&mut f, "enabled", true, ctx);
    let servers = opt_list(&mut f, "servers", ctx, checks::host_or_ip);
    let pools = opt_list(&mut f, "pools", ctx, checks::host_or_ip);
    for k in ["ntp_client", "config"] {
        if let Some(line) = f.key_line(k) {
            f.get(k);
            ctx.warn(
                Some(line),
                &f.path(k),
                "Ballast runs its own time service, ignored (give `servers` or `pools`)",
            );
        }
    }
    f.finish(ctx, &["enabled", "servers", "pools"]);
    Some(Ntp {
        enabled,
        servers,
        pools,
    })
}

// ------------------------------------------------------------ ballast:

fn ballast(n: &Node, path: &str, ctx: &mut Ctx) -> Ballast {
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
    f.finish(
        ctx,
        &["system", "engine", "update", "network", "sysctl", "modules"],
    );
    b
}

const SYSTEM_KEYS: &[&str] = &[
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

fn system(n: &Node, path: &str, ctx: &mut Ctx) -> Vec<SystemContainer> {
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

fn container(n: &Node, path: &str, ctx: &mut Ctx) -> Option<SystemContainer> {
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

fn mount(n: &Node, path: &str, ctx: &mut Ctx) -> Option<Mount> {
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

fn engine(n: &Node, path: &str, ctx: &mut Ctx) -> Option<Engine> {
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

fn update(n: &Node, path: &str, ctx: &mut Ctx) -> Option<Update> {
    let mut f = Fields::new(n, path, ctx)?;
    let channel = opt_str(&mut f, "channel", ctx, checks::url);
    let keys = opt_list(&mut f, "trusted_keys", ctx, |s| {
        checks::trusted_key(s).map(|_| ())
    });
    f.finish(ctx, &["channel", "trusted_keys"]);
    Some(Update {
        channel,
        trusted_keys: keys
            .iter()
            .filter_map(|k| checks::trusted_key(k).ok())
            .collect(),
    })
}

fn network(n: &Node, path: &str, ctx: &mut Ctx) -> Option<Network> {
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
                g.finish(ctx, &["name", "dhcp", "addresses", "gateway", "mtu"]);
                if let Some(name) = name {
                    net.interfaces.push(Interface {
                        name,
                        matches: None,
                        set_name: None,
                        dhcp,
                        addresses,
                        gateway,
                        mtu,
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

fn sysctl(n: &Node, path: &str, ctx: &mut Ctx) -> BTreeMap<String, String> {
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

// ------------------------------------------------------------ meta-data

/// A NoCloud side file (`meta-data`, `network-config`): its size and its
/// YAML, `None` when empty. `syntax` leads the message of a YAML error.
fn side_file(
    text: &str,
    ctx: &mut Ctx,
    what: &str,
    syntax: &str,
) -> Result<Option<Node>, ConfigError> {
    if text.len() > MAX_DOCUMENT {
        ctx.err(None, "", format!("{what} larger than 1 MiB"));
        return Err(ctx.first_error(what));
    }
    node::load_yaml(text).map_err(|(line, m)| {
        ctx.err(line, "", format!("{syntax}: {m}"));
        ctx.first_error(what)
    })
}

pub(crate) fn meta_data(text: &str, source: &str) -> Result<MetaData, ConfigError> {
    let mut ctx = Ctx::new(source);
    let fail = |ctx: &mut Ctx| ctx.first_error("meta-data");
    let Some(root) = side_file(
        text,
        &mut ctx,
        "meta-data",
        "not YAML or `key: value` lines",
    )?
    else {
        return Ok(MetaData::default());
    };
    let Some(mut f) = Fields::new(&root, "", &mut ctx) else {
        return Err(fail(&mut ctx));
    };
    let md = MetaData {
        instance_id: opt_str(&mut f, "instance-id", &mut ctx, |s| {
            if s.trim().is_empty() || s.contains(['/', '\n']) {
                Err("not an instance id (a word like iid-local01)".into())
            } else {
                Ok(())
            }
        }),
        local_hostname: opt_str(&mut f, "local-hostname", &mut ctx, checks::hostname),
    };
    if ctx.errors.is_empty() {
        Ok(md)
    } else {
        Err(fail(&mut ctx))
    }
}

// ------------------------------------------------------------ network-config

/// A dotted netmask (`255.255.255.0`) as a prefix length.
fn netmask_prefix(mask: &str) -> Result<u32, String> {
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
fn with_prefix(address: &str, netmask: Option<&str>) -> Result<String, String> {
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
pub(crate) fn network_config(text: &str, source: &str) -> Result<Network, ConfigError> {
    let mut ctx = Ctx::new(source);
    let fail = |ctx: &mut Ctx| ctx.first_error("network-config");
    let Some(root) = side_file(text, &mut ctx, "network-config", "YAML syntax error")? else {
        return Ok(Network::default());
    };
    let Some(mut top) = Fields::new(&root, "", &mut ctx) else {
        return Err(fail(&mut ctx));
    };
    // `network: {version: ..}` or the inner mapping itself.
    let (body, path) = match top.get("network") {
        Some(n) => {
            top.finish(&mut ctx, &["network"]);
            (n, "network".to_string())
        }
        None => (&root, String::new()),
    };
    let Some(mut f) = Fields::new(body, &path, &mut ctx) else {
        return Err(fail(&mut ctx));
    };
    let version = f.get("version").map(|v| (v.line, v.v.clone()));
    let net = match version {
        Some((_, V::Int(2, _))) => network_v2(&mut f, &mut ctx),
        Some((_, V::Int(1, _))) => network_v1(&mut f, &mut ctx),
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
    if ctx.errors.is_empty() {
        Ok(net)
    } else {
        Err(fail(&mut ctx))
    }
}

fn network_v2(f: &mut Fields, ctx: &mut Ctx) -> Network {
    let mut net = Network::default();
    if let Some(eths) = f.get("ethernets") {
        let p = f.path("ethernets");
        match &eths.v {
            V::Map(entries) => {
                for e in entries {
                    let ip = sub(&p, &e.key);
                    if let Err(m) = checks::interface_name(&e.key) {
                        ctx.err(e.key_line, &ip, m);
                        continue;
                    }
                    let Some(mut g) = Fields::new(&e.value, &ip, ctx) else {
                        continue;
                    };
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
                    g.finish(
                        ctx,
                        &[
                            "addresses",
                            "dhcp4",
                            "gateway4",
                            "mtu",
                            "nameservers",
                            "routes",
                        ],
                    );
                    net.interfaces.push(Interface {
                        name: e.key.clone(),
                        matches: None,
                        set_name: None,
                        dhcp,
                        addresses,
                        gateway,
                        mtu,
                    });
                }
            }
            _ => ctx.expected(eths, &p, "a mapping of interface names"),
        }
    }
    f.finish_ref(ctx, &["version", "ethernets"]);
    net
}

fn network_v1(f: &mut Fields, ctx: &mut Ctx) -> Network {
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
                let mtu = opt_mtu(&mut g, ctx);
                let mut iface = Interface {
                    name: name.clone().unwrap_or_default(),
                    matches: None,
                    set_name: None,
                    dhcp: false,
                    addresses: Vec::new(),
                    gateway: None,
                    mtu,
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
            other => ctx.err(
                item.line,
                &g.path("type"),
                format!("`{other}` is not supported: use physical, nameserver or route"),
            ),
        }
    }
    f.finish_ref(ctx, &["version", "config"]);
    net
}

/// One version 1 subnet of `iface`: dhcp, dhcp4 or static.
fn subnet_v1(n: &Node, path: &str, iface: &mut Interface, net: &mut Network, ctx: &mut Ctx) {
    let Some(mut g) = Fields::new(n, path, ctx) else {
        return;
    };
    let kind = opt_str(&mut g, "type", ctx, any).unwrap_or_default();
    match kind.as_str() {
        "dhcp" | "dhcp4" => iface.dhcp = true,
        "static" => {
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
        other => ctx.err(
            n.line,
            &g.path("type"),
            format!("`{other}` is not supported: use dhcp or static"),
        ),
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
fn route_destination(s: &str) -> Result<(), String> {
    if s == "default" {
        Ok(())
    } else {
        checks::cidr(s)
    }
}

fn opt_mtu(g: &mut Fields, ctx: &mut Ctx) -> Option<u32> {
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
fn routes(
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
