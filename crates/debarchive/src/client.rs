//! The archive client: from mirror URLs and a keyring to verified `.deb` files.
//!
//! # Trust chain
//!
//! Nothing a mirror serves is trusted because of where it came from; every
//! byte is tied to a key in the [`Keyring`] the caller chose (by default
//! Debian's archive keys compiled into Ballast):
//!
//! 1. `dists/<suite>/InRelease` must carry a good OpenPGP signature by a
//!    trusted, unexpired, unrevoked key ([`Keyring::verify_cleartext`]); a
//!    bad signature by a trusted key refuses the suite outright.
//! 2. The signed text must name the suite that was asked for (`Suite` or
//!    `Codename`), so a mirror cannot answer `bookworm-security` with an old
//!    `bookworm`, and online its `Valid-Until` must lie in the future, so a
//!    mirror cannot replay an old, validly signed release for long.
//! 3. Each `Packages` index must match the size and SHA-256 the signed release
//!    lists for it before it is decompressed or parsed ([`verify_index`]).
//! 4. Each `.deb` must match the size and SHA-256 of its index entry before it
//!    is renamed into the cache under its hash ([`Fetcher::download_all`]).
//!
//! The cache stores `InRelease` and the compressed index only after steps 1–3
//! passed, and an offline run re-verifies both (signature and hash; only the
//! expiry is relaxed, with a warning), so a tampered cache is refused too.
//! Online, an index the cache holds is used instead of fetched while the
//! freshly signed release names it (step 3 on the cached bytes), and the
//! decompressed text is kept under the uncompressed `Packages` file's URL,
//! used only while the release lists that file with the text's size and
//! SHA-256 (ADR 0019).
//!
//! What this module must never do: parse an index, return a package, or place
//! a file in the cache whose link to the keyring was not checked in this run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::fetch::{Download, FetchError, Fetcher};
use crate::keyring::Keyring;
use crate::packages::{parse_packages, IndexError, Package};
use crate::release::{open_index, verify_index, Compression, Release, ReleaseError};
use crate::resolve::{resolve, Request, Resolution, ResolveError, Universe};
use crate::sources::Sources;

/// What to read from the archive and where to keep it.
pub struct ArchiveConfig {
    /// Debian architecture: `amd64`, `arm64` or `armhf`.
    pub arch: String,
    /// Suites to merge, e.g. `bookworm`, `bookworm-updates`, `bookworm-security`.
    pub suites: Vec<String>,
    /// Components, e.g. `main`.
    pub components: Vec<String>,
    pub sources: Sources,
    /// Cache directory (indices and `.deb` files).
    pub cache_dir: PathBuf,
    /// Use only the cache; never touch the network.
    pub offline: bool,
    pub keyring: Keyring,
    /// Show progress bars while downloading.
    pub progress: bool,
    /// "Now" for signature and `Valid-Until` checks, unix seconds.
    pub now: u64,
}

impl ArchiveConfig {
    /// bookworm + bookworm-updates + bookworm-security, `main`, online, no
    /// progress bars, the current time.
    pub fn new(arch: &str, sources: Sources, cache_dir: PathBuf, keyring: Keyring) -> Self {
        ArchiveConfig {
            arch: arch.to_string(),
            suites: ["bookworm", "bookworm-updates", "bookworm-security"]
                .map(String::from)
                .to_vec(),
            components: vec!["main".to_string()],
            sources,
            cache_dir,
            offline: false,
            keyring,
            progress: false,
            now: crate::keyring::unix_now(),
        }
    }
}

/// The command users run to fill the cache for offline builds.
const FILL_CACHE: &str =
    "run the same command once without --offline (or `ballast fetch`) to fill the cache";

/// Why the archive could not be read or packages not fetched.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{url}: signed release is for suite {found:?}, but {expected:?} was asked for: the mirror serves the wrong suite (check the mirror URL and suite names)")]
    WrongSuite {
        url: String,
        expected: String,
        found: String,
    },
    #[error("{url}: {source}")]
    IndexRefused {
        url: String,
        #[source]
        source: ReleaseError,
    },
    #[error("{url}: index verified but unreadable: {source}")]
    Index {
        url: String,
        #[source]
        source: IndexError,
    },
    #[error("cache {}: {message}; check that the directory is writable (set BALLAST_CACHE or --cache to move it)", dir.display())]
    Cache { dir: PathBuf, message: String },
    #[error("offline: not in the cache {}:\n  {}\n{FILL_CACHE}", dir.display(), missing.join("\n  "))]
    Offline { dir: PathBuf, missing: Vec<String> },
    #[error("offline: {} package(s), {total} bytes, not in the cache {}:\n  {}\n{FILL_CACHE}", missing.len(), dir.display(), missing.join("\n  "))]
    OfflineDebs {
        dir: PathBuf,
        missing: Vec<String>,
        total: u64,
    },
    #[error("no suite of {suites} lists a Packages index for {components} on {arch}: is {arch} a Debian architecture of these suites?")]
    NoIndices {
        suites: String,
        components: String,
        arch: String,
    },
}

/// A `.deb` in the cache whose SHA-256 matched its index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedDeb {
    pub package: Package,
    pub path: PathBuf,
}

/// The merged, verified package universe of some suites, and the means to
/// fetch its packages.
pub struct Archive {
    config: ArchiveConfig,
    cache: Cache,
    fetcher: Fetcher,
    universe: Universe,
    /// (SHA-256, pool path) -> base URL of the suite whose index listed it.
    /// The hash alone is not enough: a security update copied into a point
    /// release has the same hash under a different pool path and mirror.
    origin: HashMap<(String, String), String>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("arch", &self.config.arch)
            .field("suites", &self.config.suites)
            .field("packages", &self.origin.len())
            .finish()
    }
}

/// What one suite contributed.
struct SuiteIndex {
    base: String,
    packages: Vec<Package>,
}

impl Archive {
    /// Read and verify every suite's `InRelease` and `Packages` index (from
    /// the mirror, or from the cache when offline) and build the universe.
    pub fn open(config: ArchiveConfig) -> Result<Archive, ArchiveError> {
        let cache = Cache::open(&config.cache_dir).map_err(|e| ArchiveError::Cache {
            dir: config.cache_dir.clone(),
            message: e.to_string(),
        })?;
        let fetcher = Fetcher::new(config.progress);
        let mut missing = Vec::new();
        let mut all = Vec::new();
        let mut origin = HashMap::new();
        let mut any_index = false;
        for suite in &config.suites {
            let loaded = match load_suite(&config, &cache, &fetcher, suite, &mut missing) {
                // A mirror mid-sync can serve a new InRelease with old indices
                // (or the reverse): fetch both once more before giving up.
                Err(ArchiveError::IndexRefused {
                    url,
                    source: source @ ReleaseError::IndexMismatch { .. },
                }) if !config.offline => {
                    eprintln!("note: {url}: {source}; fetching {suite} again in case the mirror was mid-sync");
                    std::thread::sleep(std::time::Duration::from_secs(2));
                    load_suite(&config, &cache, &fetcher, suite, &mut missing)?
                }
                other => other?,
            };
            let Some(index) = loaded else {
                continue;
            };
            any_index = true;
            for p in &index.packages {
                origin
                    .entry((p.sha256.clone(), p.filename.clone()))
                    .or_insert_with(|| index.base.clone());
            }
            all.extend(index.packages);
        }
        if !missing.is_empty() {
            return Err(ArchiveError::Offline {
                dir: config.cache_dir.clone(),
                missing,
            });
        }
        if !any_index {
            return Err(ArchiveError::NoIndices {
                suites: config.suites.join(", "),
                components: config.components.join(", "),
                arch: config.arch.clone(),
            });
        }
        let universe = Universe::new(&config.arch, all);
        Ok(Archive {
            config,
            cache,
            fetcher,
            universe,
            origin,
        })
    }

    /// The cache directory this archive reads and fills (releases, indices,
    /// `.deb` files; callers keep what they derive from those there too).
    pub fn cache_dir(&self) -> &Path {
        &self.config.cache_dir
    }

    /// Every package version of every suite (the resolver takes the newest).
    pub fn universe(&self) -> &Universe {
        &self.universe
    }

    /// Resolve `request` against the universe.
    pub fn resolve(&self, request: &Request) -> Result<Resolution, ArchiveError> {
        Ok(resolve(&self.universe, request)?)
    }

    /// Where `package` is downloaded from: the mirror of the suite whose index
    /// listed it, then its pool path.
    pub fn url_for(&self, package: &Package) -> String {
        let base = self
            .origin
            .get(&(package.sha256.clone(), package.filename.clone()))
            .map_or(self.config.sources.debian.as_str(), String::as_str);
        format!("{base}/{}", package.filename.trim_start_matches('/'))
    }

    /// Make sure every package is in the cache with its index's SHA-256,
    /// downloading what is missing (in parallel). Offline, a missing package
    /// is an error that lists every missing one with its size.
    pub fn fetch(&self, packages: &[Package]) -> Result<Vec<CachedDeb>, ArchiveError> {
        let mut out = Vec::with_capacity(packages.len());
        let mut downloads: Vec<Download> = Vec::new();
        for p in packages {
            let path = self.cache.deb_path(&p.sha256);
            if !self.cache.has_verified(&path, &p.sha256)
                && !downloads.iter().any(|d| d.dest == path)
            {
                downloads.push(Download {
                    url: self.url_for(p),
                    dest: path.clone(),
                    size: p.size,
                    sha256: p.sha256.clone(),
                });
            }
            out.push(CachedDeb {
                package: p.clone(),
                path,
            });
        }
        if downloads.is_empty() {
            return Ok(out);
        }
        if self.config.offline {
            let missing = packages
                .iter()
                .filter(|p| downloads.iter().any(|d| d.sha256 == p.sha256))
                .map(|p| format!("{p}: {} bytes ({})", p.size, self.url_for(p)))
                .collect();
            return Err(ArchiveError::OfflineDebs {
                dir: self.config.cache_dir.clone(),
                missing,
                total: downloads.iter().map(|d| d.size).sum(),
            });
        }
        self.fetcher.download_all(&downloads)?;
        Ok(out)
    }
}

/// Load one suite. `Ok(None)` when its release lists no index for this
/// architecture (e.g. an empty `-updates`). Offline, missing cache entries are
/// pushed to `missing` and the suite is skipped.
fn load_suite(
    config: &ArchiveConfig,
    cache: &Cache,
    fetcher: &Fetcher,
    suite: &str,
    missing: &mut Vec<String>,
) -> Result<Option<SuiteIndex>, ArchiveError> {
    let base = config.sources.for_suite(suite).to_string();
    let dists = format!("{base}/dists/{suite}");
    let release_url = format!("{dists}/InRelease");
    let what = format!("{suite} InRelease ({release_url})");
    let cache_err = |e: &dyn std::fmt::Display| ArchiveError::Cache {
        dir: config.cache_dir.clone(),
        message: e.to_string(),
    };
    let release_bytes = if config.offline {
        match cache
            .get(&Cache::key_for_url(&release_url))
            .map_err(|e| cache_err(&e))?
        {
            Some(b) => b,
            None => {
                missing.push(what);
                return Ok(None);
            }
        }
    } else {
        fetcher.get(&release_url)?
    };
    let release = Release::verified(
        &config.keyring,
        &what,
        &release_bytes,
        config.now,
        !config.offline,
    )?;
    if config.offline {
        if let Err(e) = release.check_fresh(&what, config.now) {
            eprintln!("warning: {e} (accepted offline: the cached release was fresh when fetched)");
        }
    }
    let names = [release.suite.as_deref(), release.codename.as_deref()];
    if !names.contains(&Some(suite)) {
        return Err(ArchiveError::WrongSuite {
            url: release_url,
            expected: suite.to_string(),
            found: names
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<_>>()
                .join(" / "),
        });
    }
    if !config.offline {
        cache
            .put(&Cache::key_for_url(&release_url), &release_bytes)
            .map_err(|e| cache_err(&e))?;
    }
    let mut packages = Vec::new();
    let mut listed = false;
    for component in &config.components {
        let candidates = release.packages_indices(component, &config.arch);
        if candidates.is_empty() {
            eprintln!(
                "note: {suite}: the signed release lists no {component}/binary-{} Packages index; skipping",
                config.arch
            );
            continue;
        }
        listed = true;
        // The uncompressed index, as the release lists it (mirrors serve it
        // compressed): its text is kept in the cache under its own URL once
        // decompressed, and is used while the signed release still gives
        // its size and SHA-256, so a warm build does not decompress again.
        let plain = candidates
            .iter()
            .find(|(_, index)| index.compression == Compression::None)
            .map(|(path, index)| (format!("{dists}/{path}"), index));
        let mut got = plain.as_ref().and_then(|(url, index)| {
            let bytes = cache.get(&Cache::key_for_url(url)).ok()??;
            verify_index(index, &bytes).ok()?;
            Some((url.clone(), String::from_utf8(bytes).ok()?))
        });
        let mut last_err = None;
        for (path, index) in candidates.iter().filter(|_| got.is_none()) {
            let url = format!("{dists}/{path}");
            let key = Cache::key_for_url(&url);
            // What the cache holds is used while it is what the signed
            // release names (size and SHA-256), as apt keeps its lists.
            let cached = cache
                .get(&key)
                .map_err(|e| cache_err(&e))?
                .filter(|bytes| config.offline || verify_index(index, bytes).is_ok());
            let bytes = match cached {
                Some(b) => Some(b),
                None if config.offline => None,
                None => match fetch_index(fetcher, &release, &dists, index) {
                    Ok(b) => {
                        verify_index(index, &b).map_err(|source| ArchiveError::IndexRefused {
                            url: url.clone(),
                            source,
                        })?;
                        cache.put(&key, &b).map_err(|e| cache_err(&e))?;
                        Some(b)
                    }
                    Err(e @ FetchError::NotFound { .. }) => {
                        last_err = Some(e);
                        None
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            let Some(bytes) = bytes else { continue };
            let text = open_index(index, &bytes).map_err(|source| ArchiveError::IndexRefused {
                url: url.clone(),
                source,
            })?;
            if let Some((plain_url, plain)) = &plain {
                if index.compression != Compression::None
                    && verify_index(plain, text.as_bytes()).is_ok()
                {
                    cache
                        .put(&Cache::key_for_url(plain_url), text.as_bytes())
                        .map_err(|e| cache_err(&e))?;
                }
            }
            got = Some((url, text));
            break;
        }
        let Some((url, text)) = got else {
            if config.offline {
                missing.push(format!(
                    "{suite} {component}/binary-{} Packages index ({dists}/{})",
                    config.arch, candidates[0].0
                ));
                continue;
            }
            // Listed in the signed release but served by the mirror under no name.
            return Err(last_err
                .unwrap_or(FetchError::NotFound {
                    url: format!("{dists}/{}", candidates[0].0),
                })
                .into());
        };
        packages
            .extend(parse_packages(&text).map_err(|source| ArchiveError::Index { url, source })?);
    }
    if !listed {
        return Ok(None);
    }
    Ok(Some(SuiteIndex { base, packages }))
}

/// GET an index, by hash when the release offers it (immune to the mirror
/// switching to a new release between our two requests), else by name.
fn fetch_index(
    fetcher: &Fetcher,
    release: &Release,
    dists: &str,
    index: &crate::release::IndexFile,
) -> Result<Vec<u8>, FetchError> {
    if release.acquire_by_hash {
        match fetcher.get(&format!("{dists}/{}", index.by_hash_path())) {
            Err(FetchError::NotFound { .. }) => {}
            other => return other,
        }
    }
    fetcher.get(&format!("{dists}/{}", index.path))
}
