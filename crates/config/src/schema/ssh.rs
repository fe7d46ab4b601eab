//! The SSH server's keys: `ssh_keys` (host keys given by the document),
//! `ssh_deletekeys` and `ssh_genkeytypes`. It checks the key text only; it
//! never writes a key.

use super::*;

use crate::HostKey;

/// Host key types Ballast's SSH service uses (and generates when none is given).
const KINDS: &[&str] = &["rsa", "ecdsa", "ed25519"];

pub(super) fn read(f: &mut Fields, d: &mut Document, ctx: &mut Ctx) {
    if let Some(n) = f.get("ssh_keys") {
        d.ssh_keys = ssh_keys(n, &f.path("ssh_keys"), ctx);
    }
    d.ssh_deletekeys = opt_bool(f, "ssh_deletekeys", true, ctx);
    if let Some(n) = f.get("ssh_genkeytypes") {
        let p = f.path("ssh_genkeytypes");
        let types = str_list(n, &p, ctx, any);
        for t in &types {
            if !KINDS.contains(&t.as_str()) {
                ctx.warn(
                    n.line,
                    &p,
                    format!("Ballast does not generate `{t}` host keys, ignored (it generates rsa, ecdsa and ed25519)"),
                );
            }
        }
        if types.is_empty() {
            ctx.warn(
                n.line,
                &p,
                "Ballast's SSH service always has host keys: it generates rsa, ecdsa and ed25519 keys that `ssh_keys` does not give",
            );
        }
    }
}

/// `<type>_private`, `<type>_public`, `<type>_certificate` for rsa, ecdsa
/// and ed25519; dsa is warned about and dropped (OpenSSH removed it).
fn ssh_keys(n: &Node, path: &str, ctx: &mut Ctx) -> Vec<HostKey> {
    let V::Map(entries) = &n.v else {
        ctx.expected(
            n,
            path,
            "a mapping like `ed25519_private: |` and `ed25519_public: ...`",
        );
        return Vec::new();
    };
    let mut keys: Vec<HostKey> = Vec::new();
    let mut lines: Vec<(String, Option<usize>)> = Vec::new();
    for e in entries {
        let p = sub(path, &e.key);
        let Some((kind, part)) = e.key.rsplit_once('_') else {
            ctx.warn(e.key_line, &p, "unknown key, ignored (write `<type>_private`, `<type>_public` or `<type>_certificate`, type rsa, ecdsa or ed25519)");
            continue;
        };
        if kind == "dsa" {
            ctx.warn(e.key_line, &p, "DSA host keys are not supported by Ballast's OpenSSH, ignored (give an ed25519 key)");
            continue;
        }
        if !KINDS.contains(&kind) || !["private", "public", "certificate"].contains(&part) {
            ctx.warn(e.key_line, &p, "unknown key, ignored (write `<type>_private`, `<type>_public` or `<type>_certificate`, type rsa, ecdsa or ed25519)");
            continue;
        }
        let Some(text) = string(&e.value, &p, ctx) else {
            continue;
        };
        let checked = match part {
            "private" => private_key(&text),
            "public" => public_key(kind, &text),
            _ => certificate(kind, &text),
        };
        if ctx.check(&e.value, &p, checked).is_none() {
            continue;
        }
        let i = match keys.iter().position(|k| k.kind == kind) {
            Some(i) => i,
            None => {
                keys.push(HostKey {
                    kind: kind.to_string(),
                    private: String::new(),
                    public: None,
                    certificate: None,
                });
                lines.push((p.clone(), e.key_line));
                keys.len() - 1
            }
        };
        let text = text.trim_end().to_string();
        match part {
            "private" => keys[i].private = format!("{text}\n"),
            "public" => keys[i].public = Some(text),
            _ => keys[i].certificate = Some(text),
        }
    }
    let mut out = Vec::new();
    for (k, (p, line)) in keys.into_iter().zip(lines) {
        if k.private.is_empty() {
            ctx.warn(
                line,
                &p,
                format!("no `{}_private` is given, so this {} key is not installed (give the private key too)", k.kind, k.kind),
            );
        } else {
            out.push(k);
        }
    }
    out
}

/// A PEM or OpenSSH private key block.
fn private_key(s: &str) -> Result<(), String> {
    let t = s.trim();
    let ok = t.starts_with("-----BEGIN ")
        && t.lines()
            .next()
            .is_some_and(|l| l.ends_with("PRIVATE KEY-----"))
        && t.lines()
            .last()
            .is_some_and(|l| l.starts_with("-----END ") && l.ends_with("PRIVATE KEY-----"));
    if ok {
        Ok(())
    } else {
        Err("not a private key (a block from `-----BEGIN OPENSSH PRIVATE KEY-----` to `-----END OPENSSH PRIVATE KEY-----`; use YAML's `|` for the lines)".into())
    }
}

/// The OpenSSH key type names of one of [`KINDS`].
fn algorithms(kind: &str) -> &'static [&'static str] {
    match kind {
        "rsa" => &["ssh-rsa"],
        "ecdsa" => &[
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
        ],
        _ => &["ssh-ed25519"],
    }
}

fn public_key(kind: &str, s: &str) -> Result<(), String> {
    let s = s.trim();
    checks::ssh_key(s)?;
    let algo = s.split_whitespace().next().unwrap_or("");
    if !algorithms(kind).contains(&algo) {
        return Err(format!(
            "this is a `{algo}` key, not {kind} (put it under the key of its type)"
        ));
    }
    Ok(())
}

fn certificate(kind: &str, s: &str) -> Result<(), String> {
    let s = s.trim();
    let algo = s.split_whitespace().next().unwrap_or("");
    let expected: Vec<String> = algorithms(kind)
        .iter()
        .map(|a| format!("{a}-cert-v01@openssh.com"))
        .collect();
    if !expected.iter().any(|e| e == algo) {
        return Err(format!(
            "not an OpenSSH {kind} host certificate (a line starting `{}`, as `ssh-keygen -s` writes it)",
            expected.first().map_or("", String::as_str)
        ));
    }
    checks::ssh_key(s)
}
