//! Data disks: `device_aliases`, `disk_setup` (partition), `fs_setup`
//! (format) and `mounts` (with `mount_default_fields`), read as cloud-init's
//! cc_disk_setup and cc_mounts read them. It never touches a disk: whether a
//! device exists, is blank or is mounted is the device's check at boot.

use super::*;

use crate::{DiskSetup, FsSetup, MountEntry};

/// cloud-init's names for devices a cloud's metadata service maps (EC2 and
/// the like): a NoCloud machine has no such service.
fn meta_device(name: &str) -> bool {
    ["ami", "root", "swap"].contains(&name)
        || ["ephemeral", "ebs"]
            .iter()
            .any(|p| name.starts_with(p) && !name.contains(':'))
}

/// cloud-init's short device names (`sdb`, `vdb1`, `xvdc`, `sr0`) that mean
/// `/dev/NAME`.
fn short_device(name: &str) -> bool {
    let b = name.as_bytes();
    if let Some(n) = name.strip_prefix("sr") {
        return !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit());
    }
    let rest = match b.first() {
        Some(b'x') => &b[1..],
        _ => b,
    };
    rest.len() >= 3
        && matches!(rest[0], b's' | b'h' | b'v')
        && rest[1] == b'd'
        && rest[2].is_ascii_lowercase()
        && rest[3..].iter().all(u8::is_ascii_digit)
}

const NO_META: &str = "is a device name of a cloud's metadata service; a NoCloud machine has none, so this entry is ignored (name the disk: /dev/vdb, LABEL=..., or an alias from `device_aliases`)";

pub(super) fn read(f: &mut Fields, d: &mut Document, ctx: &mut Ctx) {
    let mut aliases: Vec<(String, String)> = Vec::new();
    if let Some(n) = f.get("device_aliases") {
        let p = f.path("device_aliases");
        match &n.v {
            V::Map(entries) => {
                for e in entries {
                    let ap = sub(&p, &e.key);
                    if let Some(dev) = string(&e.value, &ap, ctx) {
                        if ctx.check(&e.value, &ap, device_path(&dev)).is_some() {
                            aliases.push((e.key.clone(), dev));
                        }
                    }
                }
            }
            _ => ctx.expected(n, &p, "a mapping of alias names to device paths"),
        }
    }
    let alias = |name: &str| -> String {
        aliases
            .iter()
            .find(|(a, _)| a == name)
            .map_or_else(|| name.to_string(), |(_, dev)| dev.clone())
    };
    if let Some(n) = f.get("disk_setup") {
        d.disk_setup = disk_setup(n, &f.path("disk_setup"), &alias, ctx);
    }
    if let Some(n) = f.get("fs_setup") {
        d.fs_setup = fs_setup(n, &f.path("fs_setup"), &alias, ctx);
    }
    let defaults = match f.get("mount_default_fields") {
        Some(n) => default_fields(n, &f.path("mount_default_fields"), ctx),
        None => DEFAULT_FIELDS.map(|s| s.map(String::from)),
    };
    if let Some(n) = f.get("mounts") {
        d.mounts = mounts(n, &f.path("mounts"), &defaults, &alias, ctx);
    }
}

fn device_path(s: &str) -> Result<(), String> {
    if !s.starts_with("/dev/") {
        return Err(format!(
            "`{s}` is not a device path (e.g. /dev/vdb or /dev/disk/by-id/...)"
        ));
    }
    checks::abs_path(s)
}

fn disk_setup(
    n: &Node,
    path: &str,
    alias: &dyn Fn(&str) -> String,
    ctx: &mut Ctx,
) -> Vec<DiskSetup> {
    let V::Map(entries) = &n.v else {
        ctx.expected(
            n,
            path,
            "a mapping of devices (`/dev/vdb:`) to their partition layout",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let p = sub(path, &e.key);
        let device = alias(&e.key);
        if meta_device(&device) {
            ctx.warn(e.key_line, &p, format!("`{}` {NO_META}", e.key));
            continue;
        }
        if ctx.check(&e.value, &p, device_path(&device)).is_none() {
            continue;
        }
        let Some(mut g) = Fields::new(&e.value, &p, ctx) else {
            continue;
        };
        let table_type = opt_str(&mut g, "table_type", ctx, |s| match s {
            "gpt" | "mbr" => Ok(()),
            _ => Err(format!("`{s}` is not a partition table type (gpt or mbr)")),
        })
        .unwrap_or_else(|| "mbr".into());
        let layout = match g.get("layout") {
            None => Some(Vec::new()),
            Some(l) => layout(l, &g.path("layout"), ctx),
        };
        let overwrite = opt_bool(&mut g, "overwrite", false, ctx);
        g.finish(ctx, &["table_type", "layout", "overwrite"]);
        if let Some(layout) = layout {
            out.push(DiskSetup {
                device,
                table_type,
                layout,
                overwrite,
            });
        }
    }
    out
}

/// `true` (one partition), `false` (none), or a list of percentages, each
/// a number or `[percent, partition type]`. `None`: nothing to do with it.
fn layout(n: &Node, path: &str, ctx: &mut Ctx) -> Option<Vec<u8>> {
    let items = match &n.v {
        V::Bool(true) => return Some(vec![100]),
        V::Bool(false) => return Some(Vec::new()),
        V::Str(s) if s == "remove" => {
            ctx.warn(n.line, path, "`layout: remove` (wipe the partition table) is not supported, ignored: Ballast never removes a table (wipe the disk by hand if you mean it)");
            return None;
        }
        V::Seq(items) => items,
        _ => {
            ctx.expected(
                n,
                path,
                "true, false or a list of partition sizes in percent",
            );
            return None;
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = idx(path, i);
        let percent = match &item.v {
            V::Int(..) => Some(item),
            V::Seq(pair) if pair.len() == 2 => {
                let ty = match &pair[1].v {
                    V::Int(t, 16) => format!("{t:x}"),
                    V::Int(t, _) => t.to_string(),
                    V::Str(s) => s.clone(),
                    _ => String::new(),
                };
                if !["83", "8300"].contains(&ty.as_str()) {
                    ctx.warn(
                        pair[1].line,
                        &idx(&p, 1),
                        format!("partition type `{ty}` is not set: Ballast makes every partition a Linux data partition (a swap partition still works: give it `filesystem: swap` in fs_setup)"),
                    );
                }
                Some(&pair[0])
            }
            _ => None,
        };
        let value = percent.and_then(|n| match n.v {
            V::Int(v, _) if (1..=100).contains(&v) => u8::try_from(v).ok(),
            _ => None,
        });
        match value {
            Some(v) => out.push(v),
            None => ctx.err(item.line, &p, "not a partition size (a percentage of the disk from 1 to 100, or `[percent, type]`)"),
        }
    }
    let total: u32 = out.iter().map(|v| u32::from(*v)).sum();
    if total > 100 {
        ctx.err(
            n.line,
            path,
            format!("the partitions add up to {total}% of the disk (at most 100)"),
        );
    }
    Some(out)
}

const FS_KEYS: &[&str] = &[
    "label",
    "filesystem",
    "device",
    "partition",
    "overwrite",
    "replace_fs",
    "extra_opts",
    "cmd",
];

fn fs_setup(n: &Node, path: &str, alias: &dyn Fn(&str) -> String, ctx: &mut Ctx) -> Vec<FsSetup> {
    let V::Seq(items) = &n.v else {
        ctx.expected(n, path, "a list of filesystems");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = idx(path, i);
        let Some(mut g) = Fields::new(item, &p, ctx) else {
            continue;
        };
        let label = opt_str(&mut g, "label", ctx, |s| {
            if s.is_empty() || s.len() > 16 || s.contains(['/', '\n', '\0']) {
                Err(format!(
                    "`{s}` is not a filesystem label (1 to 16 characters, no `/`)"
                ))
            } else {
                Ok(())
            }
        });
        let filesystem = opt_str(&mut g, "filesystem", ctx, |s| {
            if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                Ok(())
            } else {
                Err(format!(
                    "`{s}` is not a filesystem type (ext4, xfs, vfat, swap...)"
                ))
            }
        });
        let mut partition = match g.get("partition") {
            None => None,
            Some(pn) => {
                let pp = g.path("partition");
                let v = match &pn.v {
                    V::Int(x, _) if *x >= 0 => Some(x.to_string()),
                    V::Str(s) if ["auto", "any", "none"].contains(&s.as_str()) => Some(s.clone()),
                    V::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                        Some(s.clone())
                    }
                    _ => None,
                };
                if v.is_none() {
                    ctx.err(
                        pn.line,
                        &pp,
                        "not a partition (auto, any, none, or a number)",
                    );
                }
                v
            }
        };
        // `<device>.<n>`: partition n of the device (or of an alias).
        let device = opt_str(&mut g, "device", ctx, any).and_then(|dev| {
            let (base, part) = dotted(&dev);
            let part = part.map(String::from);
            let resolved = alias(base);
            if meta_device(&resolved) {
                ctx.warn(
                    g.key_line("device"),
                    &g.path("device"),
                    format!("`{dev}` {NO_META}"),
                );
                return None;
            }
            let line = g.key_line("device");
            if let Err(m) = device_path(&resolved) {
                ctx.err(line, &g.path("device"), m);
                return None;
            }
            if part.is_some() {
                partition = part;
            }
            Some(resolved)
        });
        let overwrite = opt_bool(&mut g, "overwrite", false, ctx);
        if g.given("replace_fs") {
            ctx.warn(g.key_line("replace_fs"), &g.path("replace_fs"), "not supported, ignored: Ballast never replaces a filesystem it finds (use `overwrite: true` to format anyway)");
        }
        let extra_opts = match g.get("extra_opts") {
            None => Vec::new(),
            Some(e) => match &e.v {
                V::Str(s) => s.split_whitespace().map(String::from).collect(),
                _ => str_list(e, &g.path("extra_opts"), ctx, any),
            },
        };
        if g.given("cmd") {
            ctx.warn(g.key_line("cmd"), &g.path("cmd"), "a custom mkfs command is not supported, ignored: Ballast runs mkfs itself (give `filesystem`, `label` and `extra_opts`)");
        }
        g.finish(ctx, FS_KEYS);
        match (filesystem, device) {
            (Some(filesystem), Some(device)) => out.push(FsSetup {
                label,
                filesystem,
                device,
                partition,
                overwrite,
                extra_opts,
            }),
            (None, _) if !g_given(item, "filesystem") => ctx.warn(
                item.line,
                &p,
                "no `filesystem` given, so nothing is formatted (add e.g. `filesystem: ext4`)",
            ),
            (_, None) if !g_given(item, "device") => ctx.warn(
                item.line,
                &p,
                "no `device` given, so nothing is formatted (add e.g. `device: /dev/vdb`)",
            ),
            _ => {}
        }
    }
    out
}

/// Whether a mapping node has `key` at all.
fn g_given(n: &Node, key: &str) -> bool {
    matches!(&n.v, V::Map(es) if es.iter().any(|e| e.key == key))
}

/// cloud-init's defaults for the fields a `mounts` entry leaves out. The
/// options differ: cloud-init's name systemd units Ballast does not have;
/// `nofail` keeps a missing disk from stopping the boot, as there.
const DEFAULT_FIELDS: [Option<&str>; 6] = [
    None,
    None,
    Some("auto"),
    Some("defaults,nofail"),
    Some("0"),
    Some("2"),
];

/// `sdb.1` → (`sdb`, Some(`1`)): cloud-init's dotted partition notation.
fn dotted(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once('.') {
        Some((base, n))
            if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (base, Some(n))
        }
        _ => (name, None),
    }
}

/// The kernel's name of partition `n` of `dev`: `/dev/vdb1`, `/dev/nvme0n1p1`,
/// `/dev/disk/by-id/X-part1`.
fn partition_path(dev: &str, n: &str) -> String {
    if dev.starts_with("/dev/disk/") {
        format!("{dev}-part{n}")
    } else if dev.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{dev}p{n}")
    } else {
        format!("{dev}{n}")
    }
}

/// A field of an fstab line: a string or a number, no blanks.
fn field(n: &Node, path: &str, ctx: &mut Ctx) -> Option<Option<String>> {
    let s = match &n.v {
        V::Null => return Some(None),
        V::Str(s) => s.clone(),
        V::Int(i, _) => i.to_string(),
        V::Float(f) => f.to_string(),
        V::Bool(b) => b.to_string(),
        _ => {
            ctx.expected(n, path, "a string");
            return None;
        }
    };
    if s.is_empty() || s.contains(['\n', '\t', '\0']) {
        ctx.err(n.line, path, "an fstab field must be one non-empty line");
        return None;
    }
    Some(Some(s))
}

fn default_fields(n: &Node, path: &str, ctx: &mut Ctx) -> [Option<String>; 6] {
    let fallback = DEFAULT_FIELDS.map(|s| s.map(String::from));
    let V::Seq(items) = &n.v else {
        ctx.expected(
            n,
            path,
            "a list of 6 fstab fields (null where the entry must give it)",
        );
        return fallback;
    };
    if items.len() != 6 {
        ctx.err(n.line, path, format!("{} fields given, 6 needed (spec, mount point, type, options, dump, pass; null where unset)", items.len()));
        return fallback;
    }
    let mut out = fallback.clone();
    for (i, item) in items.iter().enumerate() {
        if let Some(v) = field(item, &idx(path, i), ctx) {
            // cloud-init's own example writes Python's `None`, which YAML
            // reads as the string "None": it means null.
            out[i] = v.filter(|s| s != "None");
        }
    }
    out
}

fn mounts(
    n: &Node,
    path: &str,
    defaults: &[Option<String>; 6],
    alias: &dyn Fn(&str) -> String,
    ctx: &mut Ctx,
) -> Vec<MountEntry> {
    let V::Seq(items) = &n.v else {
        ctx.expected(
            n,
            path,
            "a list of mounts, each a list like [/dev/vdb1, /var/lib/docker]",
        );
        return Vec::new();
    };
    let mut out: Vec<MountEntry> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = idx(path, i);
        let V::Seq(fields) = &item.v else {
            // cloud-init skips such an entry with a warning: so do we.
            ctx.warn(
                item.line,
                &p,
                "not a list of fstab fields, ignored (write [/dev/vdb1, /var/lib/docker])",
            );
            continue;
        };
        if fields.is_empty() || fields.len() > 6 {
            ctx.err(
                item.line,
                &p,
                "a mount has 1 to 6 fields: [spec, mount point, type, options, dump, pass]",
            );
            continue;
        }
        let mut v: Vec<Option<String>> = Vec::new();
        let mut ok = true;
        for (j, fnode) in fields.iter().enumerate() {
            match field(fnode, &idx(&p, j), ctx) {
                Some(x) => v.push(x.or_else(|| defaults[j].clone())),
                None => ok = false,
            }
        }
        if !ok {
            continue;
        }
        for d in defaults.iter().skip(v.len()) {
            v.push(d.clone());
        }
        let Some(written) = v[0].clone() else {
            ctx.err(
                item.line,
                &idx(&p, 0),
                "missing: the device to mount (e.g. /dev/vdb1, LABEL=data)",
            );
            continue;
        };
        let spec = if written.contains(':') {
            written.clone() // a network filesystem, `server:/path`
        } else {
            // `name.N`: partition N of the device `name` stands for.
            let (base, part) = dotted(&written);
            let a = alias(base);
            if meta_device(&a) {
                ctx.warn(item.line, &p, format!("`{written}` {NO_META}"));
                continue;
            }
            let dev = if short_device(&a) {
                format!("/dev/{a}")
            } else {
                a
            };
            match part {
                Some(n) if dev.starts_with("/dev/") => partition_path(&dev, n),
                Some(_) => written.clone(),
                None => dev,
            }
        };
        let Some(dir) = v[1].clone() else {
            // cloud-init: an entry without a mount point removes the
            // device's mounts, its default ones included.
            out.retain(|m| m.spec != spec);
            ctx.warn(
                item.line,
                &p,
                format!("no mount point: `{written}` is not mounted (as in cloud-init, earlier entries for it are dropped; Ballast has no default mounts such as ephemeral0 on /mnt to remove)"),
            );
            continue;
        };
        if dir != "none" {
            if let Err(m) = checks::abs_path(&dir) {
                ctx.err(item.line, &idx(&p, 1), format!("{m} (or `none` for swap)"));
                continue;
            }
        }
        // A field still unset (null in `mount_default_fields` too) gets
        // what fstab(5) assumes for it.
        let fstype = v[2].clone().unwrap_or_else(|| "auto".into());
        let options = v[3].clone().unwrap_or_else(|| "defaults".into());
        let dump = v[4].clone().unwrap_or_else(|| "0".into());
        let pass = v[5].clone().unwrap_or_else(|| "0".into());
        for (k, x) in [(4, &dump), (5, &pass)] {
            if !x.bytes().all(|b| b.is_ascii_digit()) {
                ctx.err(
                    item.line,
                    &idx(&p, k),
                    format!("`{x}` is not a number (dump and pass are 0, 1 or 2)"),
                );
                ok = false;
            }
        }
        if options.contains(char::is_whitespace) || fstype.contains(char::is_whitespace) {
            ctx.err(
                item.line,
                &p,
                "the type and the options cannot contain blanks (options are separated by commas)",
            );
            ok = false;
        }
        if ok {
            out.push(MountEntry {
                spec,
                dir,
                fstype,
                options,
                dump,
                pass,
            });
        }
    }
    out
}
