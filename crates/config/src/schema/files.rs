//! `write_files:`: paths, owners, modes and content decoding. It never
//! touches the file system.

use super::*;

pub(super) const FILE_KEYS: &[&str] = &[
    "path",
    "content",
    "encoding",
    "owner",
    "permissions",
    "append",
    "defer",
];

pub(super) fn write_files(n: &Node, path: &str, ctx: &mut Ctx) -> Vec<WriteFile> {
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

pub(super) fn write_file(n: &Node, path: &str, ctx: &mut Ctx) -> Option<WriteFile> {
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
    if !crate::writable(&file_path) {
        let places: Vec<String> = crate::WRITABLE
            .iter()
            .map(|(dir, lives)| format!("{dir} ({lives})"))
            .collect();
        ctx.warn(
            n.line,
            path,
            format!(
                "`{file_path}` is on the read-only system image, so it is not written (write under {})",
                places.join(", ")
            ),
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

pub(super) fn decode(raw: &[u8], encoding: Option<&str>, binary: bool) -> Result<Vec<u8>, String> {
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

pub(super) fn permissions(n: &Node, path: &str, ctx: &mut Ctx) -> Option<u32> {
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
