//! `osctl config validate FILE [--meta-data FILE] [--json]`: checks a
//! #cloud-config (or TOML) document offline with the crate ballast-config,
//! the same code the device applies it with; nothing is sent to sysd.
//!
//! Exit codes: 0 valid (warnings on stderr, a plan summary on stdout),
//! 1 invalid (every error on stderr, `FILE:LINE: KEY: MESSAGE (fix)`),
//! 2 a file could not be read.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ballast_config::{ConfigError, MetaData, Plan, MAX_DOCUMENT};
use ballast_control::{client, Request, Response};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Check a #cloud-config (or TOML) document and print what it would do.
    Validate {
        /// The document (user-data).
        file: PathBuf,
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
            meta_data,
            json,
        } => validate(file, meta_data.as_deref(), *json, out, err),
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

fn validate(
    file: &Path,
    meta_data: Option<&Path>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let source = file.display().to_string();
    let bytes = match read(file) {
        Ok(b) => b,
        Err(m) => {
            let _ = writeln!(err, "osctl: {m}");
            return 2;
        }
    };
    let meta_bytes = match meta_data.map(read).transpose() {
        Ok(b) => b,
        Err(m) => {
            let _ = writeln!(err, "osctl: {m}");
            return 2;
        }
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut doc = None;
    match text(bytes, &source) {
        Ok(t) => {
            let c = ballast_config::check(&t, &source);
            errors.extend(c.errors);
            warnings = c.warnings;
            doc = c.doc;
        }
        Err(e) => errors.push(e),
    }
    let mut meta = MetaData::default();
    if let (Some(b), Some(p)) = (meta_bytes, meta_data) {
        let msource = p.display().to_string();
        match text(b, &msource).and_then(|t| ballast_config::parse_meta_data(&t, &msource)) {
            Ok(m) => meta = m,
            Err(e) => errors.push(e),
        }
    }
    let plan = if errors.is_empty() {
        doc.map(|d| d.plan(&meta))
    } else {
        None
    };
    let valid = plan.is_some();
    let written = if json {
        let v = serde_json::json!({
            "valid": valid,
            "errors": errors,
            "warnings": warnings,
            "plan": plan,
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
        if let Some(p) = &plan {
            r = r.and(out.write_all(summary(&source, p).as_bytes()));
        } else {
            r = r.and(writeln!(
                err,
                "{source}: invalid, {} error(s)",
                errors.len()
            ));
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
