//! Where the Debian archive is: the mirror URLs for the main and security archives.
//!
//! Ballast never carries a mirror host name of its own. The mirror comes from,
//! in order: a command-line flag, the environment (`BALLAST_DEBIAN_MIRROR`,
//! `BALLAST_DEBIAN_SECURITY_MIRROR`), or the host's apt sources
//! (`/etc/apt/sources.list.d/*.sources` in deb822 form, `/etc/apt/sources.list`
//! and `/etc/apt/sources.list.d/*.list` in one-line form). Any mirror is only a
//! transport: every byte is checked against the signed `InRelease`, so a
//! hostile mirror can withhold updates (bounded by `Valid-Until`) but cannot
//! change what is installed.

use std::path::{Path, PathBuf};

use crate::deb822;

/// Environment variable naming the main archive mirror (`.../debian`).
pub const ENV_MIRROR: &str = "BALLAST_DEBIAN_MIRROR";
/// Environment variable naming the security archive mirror (`.../debian-security`).
pub const ENV_SECURITY_MIRROR: &str = "BALLAST_DEBIAN_SECURITY_MIRROR";

/// Mirror base URLs, without a trailing slash (`<scheme>://<host>/debian`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    pub debian: String,
    pub security: String,
}

/// Why no usable mirror was found.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    #[error("no Debian mirror configured: pass --mirror URL, or set {ENV_MIRROR}=URL (e.g. http://<your mirror>/debian), or add a `deb` entry for bookworm to /etc/apt/sources.list.d/*.sources (looked in: {looked})")]
    NotFound { looked: String },
    #[error("{origin}: mirror URL {url:?}: only http://, https:// and file:// are supported")]
    BadUrl { origin: String, url: String },
    #[error("{origin}: cannot derive the security mirror from {url:?} (it does not end in /debian): set {ENV_SECURITY_MIRROR}=URL")]
    NoSecurity { origin: String, url: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One `deb` entry of an apt source file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    uri: String,
    suite: String,
}

impl Sources {
    /// Flag, then environment, then the host's apt sources under `/etc/apt`.
    pub fn from_env_or_host(flag: Option<&str>) -> Result<Sources, SourcesError> {
        Self::from_inputs(flag, |k| std::env::var(k).ok(), Path::new("/etc/apt"))
    }

    /// As [`Sources::from_env_or_host`] with the environment and the apt
    /// directory given (for tests and for tools inspecting another root).
    pub fn from_inputs(
        flag: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
        apt_dir: &Path,
    ) -> Result<Sources, SourcesError> {
        let security_env = env(ENV_SECURITY_MIRROR).filter(|s| !s.trim().is_empty());
        let main = match flag {
            Some(url) => Some((url.to_string(), "--mirror".to_string())),
            None => env(ENV_MIRROR)
                .filter(|s| !s.trim().is_empty())
                .map(|url| (url, ENV_MIRROR.to_string())),
        };
        if let Some((url, origin)) = main {
            let debian = normalize(&origin, &url)?;
            let security = match security_env {
                Some(s) => normalize(ENV_SECURITY_MIRROR, &s)?,
                None => derive_security(&debian).ok_or_else(|| SourcesError::NoSecurity {
                    origin: origin.clone(),
                    url: debian.clone(),
                })?,
            };
            return Ok(Sources { debian, security });
        }
        let mut sources = Self::from_parts(apt_dir)?;
        if let Some(s) = security_env {
            sources.security = normalize(ENV_SECURITY_MIRROR, &s)?;
        }
        Ok(sources)
    }

    /// Read only the apt sources under `apt_dir` (normally `/etc/apt`).
    pub fn from_parts(apt_dir: &Path) -> Result<Sources, SourcesError> {
        let mut entries: Vec<(Entry, String)> = Vec::new();
        let list = apt_dir.join("sources.list");
        let mut looked = vec![list.display().to_string()];
        if list.is_file() {
            let text = read(&list)?;
            entries.extend(
                one_line_entries(&text)
                    .into_iter()
                    .map(|e| (e, list.display().to_string())),
            );
        }
        let dir = apt_dir.join("sources.list.d");
        looked.push(format!("{}/*.sources|*.list", dir.display()));
        if let Ok(read_dir) = std::fs::read_dir(&dir) {
            let mut files: Vec<PathBuf> =
                read_dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            for path in files {
                let name = path.display().to_string();
                match path.extension().and_then(|e| e.to_str()) {
                    Some("sources") => {
                        let text = read(&path)?;
                        for e in deb822_entries(&path, &text)? {
                            entries.push((e, name.clone()));
                        }
                    }
                    Some("list") => {
                        let text = read(&path)?;
                        entries.extend(
                            one_line_entries(&text)
                                .into_iter()
                                .map(|e| (e, name.clone())),
                        );
                    }
                    _ => {}
                }
            }
        }
        let usable: Vec<&(Entry, String)> = entries
            .iter()
            .filter(|(e, _)| is_supported(&e.uri))
            .collect();
        let is_security = |s: &str| s.ends_with("-security") || s.ends_with("/updates");
        // Prefer a plain release suite (bookworm) over -updates/-backports.
        let main = usable
            .iter()
            .filter(|(e, _)| !is_security(&e.suite))
            .min_by_key(|(e, _)| e.suite.contains('-'));
        let Some((main, origin)) = main else {
            return Err(SourcesError::NotFound {
                looked: looked.join(", "),
            });
        };
        let debian = normalize(origin, &main.uri)?;
        let security = match usable.iter().find(|(e, _)| is_security(&e.suite)) {
            Some((e, origin)) => normalize(origin, &e.uri)?,
            None => derive_security(&debian).ok_or_else(|| SourcesError::NoSecurity {
                origin: origin.clone(),
                url: debian.clone(),
            })?,
        };
        Ok(Sources { debian, security })
    }

    /// The base URL serving `suite`: the security mirror for `*-security`.
    pub fn for_suite(&self, suite: &str) -> &str {
        if suite.ends_with("-security") {
            &self.security
        } else {
            &self.debian
        }
    }
}

fn read(path: &Path) -> Result<String, SourcesError> {
    std::fs::read_to_string(path).map_err(|source| SourcesError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn is_supported(url: &str) -> bool {
    ["http://", "https://", "file://"]
        .iter()
        .any(|p| url.starts_with(p))
}

fn normalize(origin: &str, url: &str) -> Result<String, SourcesError> {
    let url = url.trim().trim_end_matches('/');
    if !is_supported(url) || url.len() <= "file://".len() {
        return Err(SourcesError::BadUrl {
            origin: origin.to_string(),
            url: url.to_string(),
        });
    }
    Ok(url.to_string())
}

/// `.../debian` -> `.../debian-security`; for a snapshot-style URL
/// (`.../debian/<timestamp>`) the `debian` path segment is replaced.
fn derive_security(debian: &str) -> Option<String> {
    if let Some(base) = debian.strip_suffix("/debian") {
        return Some(format!("{base}/debian-security"));
    }
    let (head, last) = debian.rsplit_once('/')?;
    let base = head.strip_suffix("/debian")?;
    if last.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return Some(format!("{base}/debian-security/{last}"));
    }
    None
}

/// `deb [opts] URI suite component...` lines (`deb-src` and comments skipped).
fn one_line_entries(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let mut rest = rest.trim_start();
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(i) => rest = rest[i + 1..].trim_start(),
                None => continue,
            }
        }
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push(Entry {
                uri: uri.to_string(),
                suite: suite.to_string(),
            });
        }
    }
    out
}

/// deb822 `.sources` paragraphs with `Types: deb`, not `Enabled: no`.
fn deb822_entries(path: &Path, text: &str) -> Result<Vec<Entry>, SourcesError> {
    let mut out = Vec::new();
    for para in deb822::paragraphs(text) {
        let para = para.map_err(|e| SourcesError::Syntax {
            path: path.to_path_buf(),
            line: e.line,
            message: e.message,
        })?;
        let types = para.get("Types").unwrap_or("");
        if !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        if para
            .get("Enabled")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let uris = para.get("URIs").unwrap_or("");
        let suites = para.get("Suites").unwrap_or("");
        for uri in uris.split_whitespace() {
            for suite in suites.split_whitespace() {
                out.push(Entry {
                    uri: uri.to_string(),
                    suite: suite.to_string(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apt_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sources.list.d")).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    const DEB822: &str = "Types: deb\n# http://example.invalid/archive/debian/20250520T000000Z\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n";

    #[test]
    fn reads_deb822_sources() {
        let dir = apt_dir(&[
            ("sources.list.d/a-backports.sources", "Types: deb\nURIs: http://other.example/debian/\nSuites: bookworm-backports\nComponents: main\n"),
            ("sources.list.d/debian.sources", DEB822),
            ("sources.list.d/x.sources.disabled", "Types: deb\nURIs: http://nope/debian\nSuites: bookworm\n"),
        ]);
        let s = Sources::from_parts(dir.path()).unwrap();
        assert_eq!(s.debian, "http://mirror.example/debian");
        assert_eq!(s.security, "http://mirror.example/debian-security");
        assert_eq!(s.for_suite("bookworm-security"), s.security);
        assert_eq!(s.for_suite("bookworm-updates"), s.debian);
    }

    #[test]
    fn reads_one_line_sources_with_options() {
        let dir = apt_dir(&[(
            "sources.list",
            "# comment\ndeb-src http://src.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] https://m.example/debian/ bookworm main contrib\ndeb https://m.example/debian-security bookworm-security main\n",
        )]);
        let s = Sources::from_parts(dir.path()).unwrap();
        assert_eq!(s.debian, "https://m.example/debian");
        assert_eq!(s.security, "https://m.example/debian-security");
    }

    #[test]
    fn flag_beats_env_beats_host_and_security_is_derived() {
        let dir = apt_dir(&[("sources.list.d/debian.sources", DEB822)]);
        let env = |k: &str| (k == ENV_MIRROR).then(|| "http://env.example/debian/".to_string());
        let s = Sources::from_inputs(Some("file:///srv/mirror/debian"), env, dir.path()).unwrap();
        assert_eq!(s.debian, "file:///srv/mirror/debian");
        assert_eq!(s.security, "file:///srv/mirror/debian-security");
        let s = Sources::from_inputs(None, env, dir.path()).unwrap();
        assert_eq!(s.debian, "http://env.example/debian");
        assert_eq!(s.security, "http://env.example/debian-security");
        let s = Sources::from_inputs(None, |_| None, dir.path()).unwrap();
        assert_eq!(s.debian, "http://mirror.example/debian");
        let snap = Sources::from_inputs(
            Some("http://snap.example/archive/debian/20250520T000000Z/"),
            |_| None,
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            snap.security,
            "http://snap.example/archive/debian-security/20250520T000000Z"
        );
    }

    #[test]
    fn nothing_found_names_the_flag_and_env_var() {
        let dir = apt_dir(&[(
            "sources.list.d/cd.list",
            "deb cdrom:[Debian]/ bookworm main\n",
        )]);
        let err = Sources::from_inputs(None, |_| None, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--mirror") && err.contains(ENV_MIRROR),
            "{err}"
        );
        let err = Sources::from_inputs(Some("ftp://x/debian"), |_| None, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ftp://x/debian") && err.contains("--mirror"),
            "{err}"
        );
        let err = Sources::from_inputs(Some("http://x/mirror"), |_| None, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV_SECURITY_MIRROR), "{err}");
    }
}
