//! Shell completions and man pages for a clap command line, rendered by clap's own
//! generators (`clap_complete`, `clap_mangen`) from the same definitions that parse
//! the arguments, so they can never drift from the real options.
//!
//! Shared by `osctl` and the host-side `ballast` (which also uses it to ship
//! osctl's completion and man page in the image). It only renders bytes and writes
//! the files it is asked for; it never installs anything into a shell's or man's
//! search path by itself.

use std::io;
use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

/// The completion script of `cmd` for `shell` (named after the command).
pub fn completion(cmd: &clap::Command, shell: Shell) -> Vec<u8> {
    let mut cmd = cmd.clone();
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out
}

/// One man page per command and subcommand, as `(file name, roff text)`:
/// `osctl.1`, `osctl-service.1`, `osctl-service-restart.1`, ... (the layout of
/// `clap_mangen::generate_to`, kept in memory so callers and tests choose where it goes).
pub fn man_pages(cmd: &clap::Command) -> io::Result<Vec<(String, Vec<u8>)>> {
    fn walk(cmd: clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, out)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let mut text = Vec::new();
        man.render(&mut text)?;
        out.push((man.get_filename(), text));
        Ok(())
    }
    // `build` gives each subcommand its display name (`osctl-service-restart`);
    // clap's implicit `help` subcommand is not a command worth a page.
    let mut cmd = cmd.clone().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Write every man page of `cmd` into `dir` (created if needed); the paths written.
pub fn write_man_pages(cmd: &clap::Command, dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    std::fs::create_dir_all(dir).map_err(|source| DocsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let pages = man_pages(cmd).map_err(DocsError::Render)?;
    let mut written = Vec::new();
    for (name, text) in pages {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| DocsError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Man pages could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("cannot render the man pages: {0}")]
    Render(io::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// Every command path of `cmd` below the top, as words (`["service", "restart"]`),
/// leaving out clap's implicit `help`. What the completions and man pages must cover.
pub fn command_paths(cmd: &clap::Command) -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            walk(sub, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(cmd, &[], &mut out);
    out
}

/// Commands (as `osctl service restart`) whose long help does not end with an
/// example (the last paragraph of `after_long_help` starts with `Example`). Empty
/// when every one does.
pub fn commands_without_example(cmd: &clap::Command) -> Vec<String> {
    fn walk(cmd: &clap::Command, name: String, out: &mut Vec<String>) {
        // The last paragraph is the example (what comes before may explain more).
        let has = cmd.get_after_long_help().is_some_and(|h| {
            let h = h.to_string();
            let last = h.trim_end().rsplit("\n\n").next().unwrap_or_default();
            last.trim_start().starts_with("Example")
        });
        if !has {
            out.push(name.clone());
        }
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() != "help" {
                walk(sub, format!("{name} {}", sub.get_name()), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(cmd, cmd.get_name().to_string(), &mut out);
    out
}
