//! The schema: walks a [`Node`] tree (from YAML or TOML), checks every key,
//! and builds the typed [`Document`]. It goes on after an error so that one
//! run lists them all; the document is only returned when there was none.
//!
//! This module holds what every section shares: the error/warning list
//! ([`Ctx`]), the key lookup that knows cloud-init's other spellings
//! ([`Fields`], [`Spelling`]), the scalar readers, and the loading of a
//! document or side file. Each section's keys live in its own module; none
//! of them touches the machine.

use std::collections::{BTreeMap, HashSet};

use crate::checks;
use crate::node::{self, Entry, Node, V};
use crate::{
    Ballast, Checked, Cmd, ConfigError, ContainerSource, Dns, Document, Engine, Interface,
    MetaData, Mount, Network, Ntp, Restart, Route, SideChecked, SystemContainer, User, UserSpec,
    Warning, WriteFile, MAX_DOCUMENT,
};

mod ballast;
mod ca_certs;
mod commands;
mod disks;
mod document;
mod files;
mod fleet;
mod meta_data;
mod network_config;
mod ntp;
mod power;
mod ssh;
mod users;
mod wifi;

use self::ballast::*;
use self::ca_certs::*;
use self::commands::*;
use self::document::*;
use self::files::*;
use self::fleet::update;
pub(crate) use self::meta_data::meta_data;
pub(crate) use self::network_config::network_config;
use self::network_config::*;
use self::ntp::*;
use self::power::*;
use self::users::*;
pub(crate) use self::wifi::is_hex_psk;

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
    /// The result of checking a side file: the value only when no error.
    fn side_checked<T>(mut self, value: Option<T>) -> SideChecked<T> {
        self.warnings.sort_by_key(|w| w.line);
        self.errors.sort_by_key(|e| e.line);
        if value.is_none() && self.errors.is_empty() {
            // Not reachable by the readers above; kept so a value is never
            // dropped without saying why.
            self.err(None, "", "invalid document");
        }
        SideChecked {
            value: if self.errors.is_empty() { value } else { None },
            errors: self.errors,
            warnings: self.warnings,
        }
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

/// Other spellings a mapping's keys may have, as cloud-init reads them.
#[derive(Clone, Copy)]
pub(super) enum Spelling {
    /// Keys as written (netplan, meta-data, `write_files`, `ballast:`).
    Exact,
    /// Every `-` reads as `_`: cloud-init normalises user entries this way
    /// (`ssh-authorized-keys`, `lock-passwd`, `primary-group`, ...).
    Dashes,
    /// Only these `(alias, key)` pairs: the deprecated spellings cloud-init's
    /// schema still accepts (`ca-certs`, `remove-defaults`).
    Aliases(&'static [(&'static str, &'static str)]),
}

impl Spelling {
    fn canonical(self, key: &str) -> String {
        match self {
            Spelling::Exact => key.to_string(),
            Spelling::Dashes => key.replace('-', "_"),
            Spelling::Aliases(pairs) => pairs
                .iter()
                .find(|(alias, _)| *alias == key)
                .map_or_else(|| key.to_string(), |(_, k)| (*k).to_string()),
        }
    }
}

/// The keys of one mapping; remembers which were read, so that the others
/// are reported as unknown. Every lookup goes through the mapping's
/// [`Spelling`], so an alias is accepted wherever its key is.
struct Fields<'a> {
    entries: &'a [Entry],
    /// The name each entry is looked up by (its key, or the key its alias
    /// stands for).
    names: Vec<String>,
    used: Vec<bool>,
    path: String,
}

impl<'a> Fields<'a> {
    fn new(n: &'a Node, path: &str, ctx: &mut Ctx) -> Option<Self> {
        Self::spelled(n, path, Spelling::Exact, ctx)
    }
    /// A mapping whose keys may be written as `spelling` allows. Giving one
    /// key in two spellings is an error naming both lines.
    fn spelled(n: &'a Node, path: &str, spelling: Spelling, ctx: &mut Ctx) -> Option<Self> {
        let V::Map(entries) = &n.v else {
            ctx.expected(n, path, "a mapping of keys");
            return None;
        };
        let names: Vec<String> = entries.iter().map(|e| spelling.canonical(&e.key)).collect();
        let mut used = vec![false; entries.len()];
        for (i, e) in entries.iter().enumerate() {
            let first = names[..i]
                .iter()
                .position(|other| *other == names[i])
                .map(|j| &entries[j]);
            if let Some(first) = first.filter(|f| f.key != e.key) {
                used[i] = true;
                let at = |l: Option<usize>| l.map_or_else(String::new, |l| format!(" (line {l})"));
                ctx.err(
                    e.key_line,
                    &sub(path, &names[i]),
                    format!(
                        "given twice, as `{}`{} and as `{}`{}: both spellings mean the same key (keep one)",
                        first.key,
                        at(first.key_line),
                        e.key,
                        at(e.key_line)
                    ),
                );
            }
        }
        Some(Fields {
            entries,
            names,
            used,
            path: path.to_string(),
        })
    }
    fn position(&self, key: &str) -> Option<usize> {
        self.names.iter().position(|n| n == key)
    }
    /// The value of `key` (in any spelling), or `None` if missing or null.
    fn get(&mut self, key: &str) -> Option<&'a Node> {
        let i = self.position(key)?;
        self.used[i] = true;
        let n = &self.entries[i].value;
        (!matches!(n.v, V::Null)).then_some(n)
    }
    /// Whether `key` is written at all, even as null (marks it read).
    fn given(&mut self, key: &str) -> bool {
        let Some(i) = self.position(key) else {
            return false;
        };
        self.used[i] = true;
        true
    }
    fn key_line(&self, key: &str) -> Option<usize> {
        self.position(key).and_then(|i| self.entries[i].key_line)
    }
    fn path(&self, key: &str) -> String {
        sub(&self.path, key)
    }
    /// [`Fields::finish`] through a reference.
    fn finish_ref(&mut self, ctx: &mut Ctx, known: &[&str]) {
        let done = Fields {
            entries: self.entries,
            names: std::mem::take(&mut self.names),
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
        return yaml(text, ctx, "YAML syntax error");
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
            if let Ok(Some(Node {
                v: V::Map(entries), ..
            })) = node::load_yaml(text)
            {
                let has = |k: &str| entries.iter().any(|e| e.key == k);
                let m = if has("network") || has("ethernets") || (has("version") && has("config")) {
                    "this is a NoCloud network-config, not user-data (give it as `network-config` beside user-data in the seed; check it with `osctl config validate --network-config FILE`)"
                } else if has("instance-id") || has("local-hostname") {
                    "this is a NoCloud meta-data, not user-data (give it as `meta-data` beside user-data in the seed; check it with `osctl config validate --meta-data FILE`)"
                } else {
                    "this looks like YAML without the header (add `#cloud-config` as the first line)"
                };
                ctx.err(Some(1), "", m);
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

/// A NoCloud side file (`meta-data`, `network-config`): its size and its
/// YAML, `None` when empty. `syntax` leads the message of a YAML error.
/// YAML read leniently as cloud-init does (a key given twice: the last
/// counts, with a warning); a syntax error is recorded behind `syntax`.
fn yaml(text: &str, ctx: &mut Ctx, syntax: &str) -> Result<Option<Node>, ()> {
    match node::load_yaml_lenient(text) {
        Ok((n, duplicate)) => {
            if let Some(line) = duplicate {
                // The loader gives the line only: the key is what it starts with.
                let key = text
                    .lines()
                    .nth(line.saturating_sub(1))
                    .map(|l| l.trim_start().trim_start_matches("- ").trim_start())
                    .and_then(|l| l.split_once(':'))
                    .map(|(k, _)| k.trim().trim_matches(['"', '\'']).to_string())
                    .unwrap_or_default();
                ctx.warn(
                    Some(line),
                    &key,
                    "given twice in one mapping: the last one counts, as in cloud-init (remove the other)",
                );
            }
            Ok(n)
        }
        Err((line, m)) => {
            ctx.err(line, "", format!("{syntax}: {m}"));
            Err(())
        }
    }
}

fn side_file(text: &str, ctx: &mut Ctx, what: &str, syntax: &str) -> Option<Option<Node>> {
    if text.len() > MAX_DOCUMENT {
        ctx.err(None, "", format!("{what} larger than 1 MiB"));
        return None;
    }
    yaml(text, ctx, syntax).ok()
}
