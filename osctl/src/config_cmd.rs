//! `osctl config validate [FILE] [--network-config FILE] [--meta-data FILE]
//! [--json]`: checks a NoCloud seed offline with the crate ballast-config,
//! the same code the device applies it with; nothing is sent to sysd. Each
//! document is checked by its own rules (user-data: #cloud-config or TOML;
//! network-config: version 1 or 2; meta-data), any of them alone.
//!
//! Exit codes: 0 valid (warnings on stderr, a summary on stdout),
//! 1 invalid (every error on stderr, `FILE:LINE: KEY: MESSAGE (fix)`),
//! 2 a file could not be read, or no file given.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ballast_config::{ConfigError, MetaData, Network, Plan, MAX_DOCUMENT};
use ballast_control::{client, Request, Response};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Check a #cloud-config (or TOML) document, a network-config and a
    /// meta-data, and print what they would do.
    Validate {
        /// The document (user-data); optional when another file is given.
        file: Option<PathBuf>,
        /// NoCloud network-config (version 1 or 2).
        #[arg(long = "network-config", value_name = "FILE")]
        network_config: Option<PathBuf>,
        /// NoCloud meta-data (instance-id, local-hostname) to resolve the plan with.
        #[arg(long = "meta-data", value_name = "FILE")]
        meta_data: Option<PathBuf>,
        /// Print {"valid", "errors", "warnings", "plan"} as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Send a document to sysd: show what changes and apply it (the same steps
    /// as at first boot; write_files new or changed and runcmd entries that are
    /// new run now, the instance id stays). Exit 0 applied, 1 refused or
    /// failed, 2 unreadable file.
    Apply {
        /// The document, or `-` for stdin (what `--host` uses to stream it).
        file: PathBuf,
        /// Show the changes only.
        #[arg(long)]
        dry_run: bool,
        /// Print {"changes", "warnings", "errors", "applied"} as JSON.
        #[arg(long)]
        json: bool,
        /// Name of the document in messages (default: FILE).
        #[arg(long, value_name = "NAME", hide = true)]
        source: Option<String>,
    },
}

/// Reads at most one byte more than the document limit, so the crate can
/// say the file is too large without us loading a huge file.
fn read(path: &Path) -> Result<Vec<u8>, String> {
    let f = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    f.take(MAX_DOCUMENT as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(buf)
}

/// Text of a document, or the error that it is not UTF-8.
fn text(bytes: Vec<u8>, source: &str) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        ConfigError {
            source: source.into(),
            line: Some(line),
            key: String::new(),
            message: "not UTF-8 text (save the file as UTF-8)".into(),
        }
    })
}

/// Runs the action; returns the exit code.
pub fn run(action: &ConfigAction, socket: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match action {
        ConfigAction::Validate {
            file,
            network_config,
            meta_data,
            json,
        } => validate(
            &Seed {
                user_data: file.as_deref(),
                network_config: network_config.as_deref(),
                meta_data: meta_data.as_deref(),
            },
            *json,
            out,
            err,
        ),
        ConfigAction::Apply {
            file,
            dry_run,
            json,
            source,
        } => apply(socket, file, source.as_deref(), *dry_run, *json, out, err),
    }
}

fn read_input(path: &Path) -> Result<Vec<u8>, String> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        io::stdin()
            .take(MAX_DOCUMENT as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        return Ok(buf);
    }
    read(path)
}

fn apply(
    socket: &Path,
    file: &Path,
    source: Option<&str>,
    dry_run: bool,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let source = source.map_or_else(|| file.display().to_string(), str::to_string);
    let text = match read_input(file).map(|b| text(b, &source)) {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            let _ = writeln!(err, "error: {e}");
            return 1;
        }
        Err(m) => {
            let _ = writeln!(err, "osctl: {m}");
            return 2;
        }
    };
    let req = Request::ConfigApply {
        text,
        source: source.clone(),
        dry_run,
    };
    let resp = match client::call(socket, &req) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "osctl: cannot reach sysd at {}: {e}", socket.display());
            return 1;
        }
    };
    let (changes, warnings, errors, applied) = match resp {
        Response::ConfigApplied {
            changes,
            warnings,
            errors,
            applied,
        } => (changes, warnings, errors, applied),
        Response::Error { message } => {
            let _ = writeln!(err, "error: {message}");
            return 1;
        }
        _ => {
            let _ = writeln!(
                err,
                "osctl: sysd answered something else to config apply: osctl and sysd are from different versions?"
            );
            return 1;
        }
    };
    let written = if json {
        let v = serde_json::json!({
            "changes": changes,
            "warnings": warnings,
            "errors": errors,
            "applied": applied,
        });
        serde_json::to_string_pretty(&v)
            .map_err(io::Error::other)
            .and_then(|s| writeln!(out, "{s}"))
    } else {
        let mut r = Ok(());
        for w in &warnings {
            r = r.and(writeln!(err, "warning: {w}"));
        }
        for c in &changes {
            r = r.and(writeln!(out, "{c}"));
        }
        if changes.is_empty() {
            r = r.and(writeln!(out, "no changes"));
        }
        for e in &errors {
            r = r.and(writeln!(err, "error: {e}"));
        }
        r.and(writeln!(
            out,
            "{source}: {}",
            if !applied {
                "not applied (dry run)"
            } else if errors.is_empty() {
                "applied"
            } else {
                "applied with errors"
            }
        ))
    };
    if let Err(e) = written {
        if e.kind() != io::ErrorKind::BrokenPipe {
            let _ = writeln!(err, "osctl: cannot write output: {e}");
        }
    }
    if errors.is_empty() {
        0
    } else {
        1
    }
}

/// The files of a NoCloud seed given to `validate`.
struct Seed<'a> {
    user_data: Option<&'a Path>,
    network_config: Option<&'a Path>,
    meta_data: Option<&'a Path>,
}

/// One file's text and its source name; `Err(exit code)` after saying why.
fn load(path: &Path, err: &mut dyn Write) -> Result<(String, Result<String, ConfigError>), i32> {
    let source = path.display().to_string();
    match read(path) {
        Ok(b) => {
            let t = text(b, &source);
            Ok((source, t))
        }
        Err(m) => {
            let _ = writeln!(err, "osctl: {m}");
            Err(2)
        }
    }
}

fn validate(seed: &Seed, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if seed.user_data.is_none() && seed.network_config.is_none() && seed.meta_data.is_none() {
        let _ = writeln!(
            err,
            "osctl: give a user-data FILE, --network-config FILE or --meta-data FILE"
        );
        return 2;
    }
    let mut files = Vec::new();
    for p in [seed.user_data, seed.network_config, seed.meta_data] {
        match p.map(|p| load(p, err)).transpose() {
            Ok(f) => files.push(f),
            Err(code) => return code,
        }
    }
    let mut files = files.into_iter();
    let (user_data, network_config, meta_data) = (
        files.next().flatten(),
        files.next().flatten(),
        files.next().flatten(),
    );
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut doc = None;
    let mut sources = Vec::new();
    if let Some((source, t)) = user_data {
        match t {
            Ok(t) => {
                let c = ballast_config::check(&t, &source);
                errors.extend(c.errors);
                warnings.extend(c.warnings);
                doc = c.doc;
            }
            Err(e) => errors.push(e),
        }
        sources.push(source);
    }
    let mut network = None;
    if let Some((source, t)) = network_config {
        match t {
            Ok(t) => {
                let c = ballast_config::check_network_config(&t, &source);
                errors.extend(c.errors);
                warnings.extend(c.warnings);
                network = c.value;
            }
            Err(e) => errors.push(e),
        }
        sources.push(source);
    }
    let mut meta = MetaData::default();
    if let Some((source, t)) = meta_data {
        match t {
            Ok(t) => {
                let c = ballast_config::check_meta_data(&t, &source);
                errors.extend(c.errors);
                warnings.extend(c.warnings);
                meta = c.value.unwrap_or_default();
            }
            Err(e) => errors.push(e),
        }
        sources.push(source);
    }
    let valid = errors.is_empty();
    let plan = if valid {
        doc.map(|d| {
            let mut p = d.plan(&meta);
            // On the device a network-config wins over `ballast.network`.
            if network.is_some() {
                p.network = network.clone();
            }
            p
        })
    } else {
        None
    };
    let source = sources.join(" + ");
    let written = if json {
        let v = serde_json::json!({
            "valid": valid,
            "errors": errors,
            "warnings": warnings,
            "plan": plan,
            "network": network,
        });
        serde_json::to_string_pretty(&v)
            .map_err(io::Error::other)
            .and_then(|s| writeln!(out, "{s}"))
    } else {
        let mut r = Ok(());
        for w in &warnings {
            r = r.and(writeln!(err, "warning: {w}"));
        }
        for e in &errors {
            r = r.and(writeln!(err, "error: {e}"));
        }
        if !valid {
            r = r.and(writeln!(
                err,
                "{source}: invalid, {} error(s): the machine would refuse the whole document and keep its previous config",
                errors.len()
            ));
        } else if let Some(p) = &plan {
            r = r.and(out.write_all(summary(&source, p).as_bytes()));
        } else {
            r = r.and(writeln!(out, "{source}: valid"));
            if let Some(n) = &network {
                r = r.and(out.write_all(network_summary(n).as_bytes()));
            }
        }
        r
    };
    if let Err(e) = written {
        if e.kind() != io::ErrorKind::BrokenPipe {
            let _ = writeln!(err, "osctl: cannot write output: {e}");
            return 2;
        }
    }
    if valid {
        0
    } else {
        1
    }
}

/// The interfaces a network-config sets up, one line each.
fn network_summary(n: &Network) -> String {
    let mut s = String::new();
    for i in &n.interfaces {
        let mut how = Vec::new();
        if let Some(m) = &i.matches {
            how.extend(m.macaddress.as_ref().map(|x| format!("mac {x}")));
            how.extend(m.name.as_ref().map(|x| format!("name {x}")));
            how.extend(m.driver.as_ref().map(|x| format!("driver {x}")));
        }
        if let Some(new) = &i.set_name {
            how.push(format!("renamed {new}"));
        }
        let addr = if i.dhcp {
            "dhcp".to_string()
        } else {
            i.addresses.join(", ")
        };
        let matched = if how.is_empty() {
            String::new()
        } else {
            format!(" ({})", how.join(", "))
        };
        s.push_str(&format!("  interface   {}{matched}: {addr}\n", i.name));
    }
    s
}

/// What a valid document would do, in a few lines.
pub fn summary(source: &str, p: &Plan) -> String {
    let mut s = format!("{source}: valid\n");
    let hostname = p
        .hostname
        .as_ref()
        .map_or("(unchanged)".to_string(), |h| match &h.fqdn {
            Some(f) => format!("{} ({f})", h.hostname),
            None => h.hostname.clone(),
        });
    s.push_str(&format!("  hostname    {hostname}\n"));
    let users: Vec<String> = p
        .users
        .iter()
        .map(|u| format!("{} ({} keys)", u.name, u.ssh_authorized_keys.len()))
        .collect();
    s.push_str(&format!("  users       {}\n", none(&users.join(", "))));
    let files: Vec<String> = p
        .files
        .iter()
        .map(|f| format!("{} ({:04o}, {} bytes)", f.path, f.mode, f.content.len()))
        .collect();
    s.push_str(&format!("  files       {}\n", none(&files.join(", "))));
    s.push_str(&format!(
        "  commands    {} bootcmd (every boot), {} runcmd (once per instance)\n",
        p.bootcmd.len(),
        p.runcmd.len()
    ));
    let containers: Vec<&str> = p.system.iter().map(|c| c.name.as_str()).collect();
    s.push_str(&format!("  containers  {}\n", none(&containers.join(", "))));
    if let Some(tz) = &p.timezone {
        s.push_str(&format!("  timezone    {tz}\n"));
    }
    if !p.groups.is_empty() {
        let groups: Vec<&str> = p.groups.iter().map(|g| g.name.as_str()).collect();
        s.push_str(&format!("  groups      {}\n", groups.join(", ")));
    }
    for m in &p.mounts {
        s.push_str(&format!(
            "  mount       {} on {} ({})\n",
            m.spec, m.dir, m.fstype
        ));
    }
    if let Some(n) = &p.network {
        s.push_str(&network_summary(n));
    }
    if let Some(n) = &p.ntp {
        let servers: Vec<&str> = n
            .servers
            .iter()
            .chain(&n.pools)
            .map(String::as_str)
            .collect();
        s.push_str(&format!("  ntp         {}\n", none(&servers.join(", "))));
    }
    s
}

fn none(s: &str) -> &str {
    if s.is_empty() {
        "(none)"
    } else {
        s
    }
}
