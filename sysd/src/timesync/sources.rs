//! The time service's sources file: one NTP source per line, `server NAME`
//! (one host: the first of its addresses that answers is used) or
//! `pool NAME` (a name with several addresses, of which up to
//! [`POOL_ADDRESSES`] answer each round). `#` starts a comment. sysd writes the
//! first-boot config's `ntp:` servers and pools to [`CONFIGURED`]; without
//! that file the image's [`DEFAULTS`] are used.

use std::path::Path;

/// Written by sysd from the first-boot config (`ntp.servers`, `ntp.pools`).
pub const CONFIGURED: &str = "/run/ballast/config/time/sources";
/// The image's sources, used when the config names none.
pub const DEFAULTS: &str = "/usr/lib/ballast/time/sources";
/// Addresses of a pool name that answer each round.
pub const POOL_ADDRESSES: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Server(String),
    Pool(String),
}

impl Source {
    pub fn name(&self) -> &str {
        match self {
            Source::Server(n) | Source::Pool(n) => n,
        }
    }

    /// How many of the name's addresses should answer: one of a server's
    /// (an IPv6 address that cannot be reached gives way to the next, as
    /// with any client), up to [`POOL_ADDRESSES`] of a pool's.
    pub fn answers(&self) -> usize {
        match self {
            Source::Server(_) => 1,
            Source::Pool(_) => POOL_ADDRESSES,
        }
    }

    /// The line that [`parse`] reads back.
    pub fn line(&self) -> String {
        match self {
            Source::Server(n) => format!("server {n}\n"),
            Source::Pool(n) => format!("pool {n}\n"),
        }
    }
}

/// Parse a sources file's text; `file` names it in errors.
pub fn parse(file: &Path, text: &str) -> Result<Vec<Source>, String> {
    let mut sources = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{}, line {}", file.display(), n + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        let source = match words.as_slice() {
            ["server", name] => Source::Server(name.to_string()),
            ["pool", name] => Source::Pool(name.to_string()),
            [kind @ ("server" | "pool"), ..] => {
                return Err(format!(
                    "{}: `{line}`: give `{kind} NAME` with one host name or address and nothing after it",
                    at()
                ))
            }
            _ => {
                return Err(format!(
                    "{}: `{line}`: each line is `server NAME` or `pool NAME`",
                    at()
                ))
            }
        };
        sources.push(source);
    }
    Ok(sources)
}

/// The sources in effect: [`CONFIGURED`] if it exists, else [`DEFAULTS`]
/// (both under `root`), and the file they came from.
pub fn load(root: &Path) -> Result<(Vec<Source>, String), String> {
    for file in [CONFIGURED, DEFAULTS] {
        let path = root.join(file.trim_start_matches('/'));
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok((parse(Path::new(file), &text)?, file.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read {file}: {e}")),
        }
    }
    Err(format!(
        "no NTP sources: neither {CONFIGURED} nor {DEFAULTS} exists"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_pools_are_read_with_comments_and_blank_lines() {
        let text = "# from the config\nserver time.example.org\n\npool 2.pool.example  # four\nserver 10.0.2.2\n";
        let s = parse(Path::new("f"), text).unwrap();
        assert_eq!(
            s,
            vec![
                Source::Server("time.example.org".into()),
                Source::Pool("2.pool.example".into()),
                Source::Server("10.0.2.2".into()),
            ]
        );
        assert_eq!(s[1].answers(), POOL_ADDRESSES);
        assert_eq!(s[0].answers(), 1);
        let back: String = s.iter().map(Source::line).collect();
        assert_eq!(parse(Path::new("f"), &back).unwrap(), s);
    }

    #[test]
    fn a_bad_line_names_the_file_the_line_and_the_form() {
        let e = parse(Path::new(CONFIGURED), "server a\nserver b iburst\n").unwrap_err();
        assert!(e.contains(CONFIGURED) && e.contains("line 2"), "{e}");
        assert!(e.contains("`server NAME`"), "{e}");
        let e = parse(Path::new("f"), "peer x\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("`pool NAME`"), "{e}");
        let e = parse(Path::new("f"), "server\n").unwrap_err();
        assert!(e.contains("`server NAME`"), "{e}");
    }

    #[test]
    fn the_configured_file_wins_over_the_image_defaults() {
        let root = tempfile::tempdir().unwrap();
        let defaults = root.path().join(DEFAULTS.trim_start_matches('/'));
        std::fs::create_dir_all(defaults.parent().unwrap()).unwrap();
        std::fs::write(&defaults, "pool pool.example\n").unwrap();
        let (s, from) = load(root.path()).unwrap();
        assert_eq!(
            (s, from.as_str()),
            (vec![Source::Pool("pool.example".into())], DEFAULTS)
        );
        let configured = root.path().join(CONFIGURED.trim_start_matches('/'));
        std::fs::create_dir_all(configured.parent().unwrap()).unwrap();
        std::fs::write(&configured, "server ntp.lan\n").unwrap();
        let (s, from) = load(root.path()).unwrap();
        assert_eq!(
            (s, from.as_str()),
            (vec![Source::Server("ntp.lan".into())], CONFIGURED)
        );
        std::fs::remove_file(&defaults).unwrap();
        std::fs::remove_file(&configured).unwrap();
        assert!(load(root.path()).unwrap_err().contains("no NTP sources"));
    }
}
