//! Downloads from the Debian archive: small indices into memory, packages into
//! files, every package checked against the size and SHA-256 its index gave.
//!
//! This module owns the network side of the archive client. It must never leave
//! an unverified byte at a destination path: a download streams into
//! `<dest>.part-<pid>-<n>` beside the destination, is hashed while it is
//! written, fsynced, and only renamed to `dest` once size and hash match. A
//! crash, Ctrl-C or a corrupt mirror leaves at worst a `.part-*` file, never a
//! wrong file under its trusted name. (The part file is streamed and hashed, with
//! a name unique to this download, so it is not `ballast_device::atomic`'s fixed
//! `<name>.tmp`; the directory fsync after the rename is that module's.)
//!
//! It does not decide what is trustworthy for indices: `get` returns bytes and
//! the caller checks them against the signed `InRelease`.
//!
//! Supported URL schemes: `http://`, `https://` (rustls) and `file:///abs/path`
//! (for local mirrors and tests). A proxy comes from the usual environment
//! variables (`ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY`, lower case too, and
//! `NO_PROXY`), as ureq reads them.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// How many downloads run at once. Four keeps a mirror busy without being rude.
const PARALLEL: usize = 4;
/// Largest body `get` accepts into memory (a Packages index is tens of MiB).
const GET_LIMIT: u64 = 1 << 30;

/// One file to download and verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub url: String,
    pub dest: PathBuf,
    /// Expected size in bytes (from the `Size:` field of the index).
    pub size: u64,
    /// Expected SHA-256, hex (from the `SHA256:` field of the index).
    pub sha256: String,
}

/// Why a fetch failed. Every variant names the URL or path involved.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "{url}: not found (HTTP 404 or missing file); check the mirror URL, suite and architecture"
    )]
    NotFound { url: String },
    #[error("{url}: server answered HTTP {status}; check the mirror URL or try another mirror")]
    Http { url: String, status: u16 },
    #[error("{url}: {message}; check the network connection, proxy settings (http_proxy/https_proxy) and the mirror")]
    Transport { url: String, message: String },
    #[error("{url}: SHA-256 mismatch: expected {expected}, got {actual}; the mirror may be mid-sync or corrupt: retry later or use another mirror")]
    HashMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: size mismatch: expected {expected} bytes, got {actual}; the mirror may be mid-sync or the index stale: refresh indices or use another mirror")]
    SizeMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("{url}: download cut off after {actual} of {expected} bytes ({attempts} attempts); check the network or proxy and run again")]
    Incomplete {
        url: String,
        expected: u64,
        actual: u64,
        attempts: u32,
    },
    #[error("{url}: bad URL: {reason}; use http://, https:// or file:///absolute/path")]
    BadUrl { url: String, reason: String },
    #[error(
        "{url}: bad expected SHA-256 {sha256:?}: want 64 hex digits; the index entry is malformed"
    )]
    BadHash { url: String, sha256: String },
    #[error("{}: {source}; check that the directory exists, is writable and the disk is not full", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A failure during one attempt, and whether trying again could help.
struct Failure {
    err: FetchError,
    retry: bool,
}

impl Failure {
    fn fatal(err: FetchError) -> Failure {
        Failure { err, retry: false }
    }
    fn transient(err: FetchError) -> Failure {
        Failure { err, retry: true }
    }
}

/// Downloads files over HTTP(S) or from `file://` URLs.
pub struct Fetcher {
    agent: ureq::Agent,
    progress: bool,
    attempts: u32,
    backoff: Duration,
}

impl Fetcher {
    /// A fetcher that shows progress bars on stderr only when `progress` is true
    /// (callers pass "stderr is a terminal").
    pub fn new(progress: bool) -> Fetcher {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("ballast/", env!("CARGO_PKG_VERSION")))
            .build();
        Fetcher {
            agent: config.into(),
            progress,
            attempts: 3,
            backoff: Duration::from_secs(1),
        }
    }

    /// Change the retry policy: `attempts` tries in all (at least 1), waiting
    /// `backoff`, then twice that, and so on, between them.
    pub fn with_retry(mut self, attempts: u32, backoff: Duration) -> Fetcher {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self
    }

    /// GET a small file (InRelease, Packages.xz) into memory.
    ///
    /// Retries network errors, truncated bodies and HTTP 5xx with backoff; a
    /// 404 fails at once with [`FetchError::NotFound`].
    pub fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        self.with_retries(url, || self.get_attempt(url))
            .map_err(|(err, _)| err)
    }

    fn get_attempt(&self, url: &str) -> Result<Vec<u8>, Failure> {
        let (reader, len) = self.open(url)?;
        let mut body = Vec::with_capacity(len.unwrap_or(0).min(GET_LIMIT) as usize);
        reader
            .take(GET_LIMIT + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                Failure::transient(FetchError::Transport {
                    url: url.to_string(),
                    message: format!("reading the body failed after {} bytes: {e}", body.len()),
                })
            })?;
        if body.len() as u64 > GET_LIMIT {
            return Err(Failure::fatal(FetchError::Transport {
                url: url.to_string(),
                message: format!("body larger than {GET_LIMIT} bytes, refusing"),
            }));
        }
        if let Some(len) = len {
            if body.len() as u64 != len {
                return Err(Failure::transient(FetchError::Incomplete {
                    url: url.to_string(),
                    expected: len,
                    actual: body.len() as u64,
                    attempts: self.attempts,
                }));
            }
        }
        Ok(body)
    }

    /// Download many files, [`PARALLEL`] at a time, each verified against its
    /// size and SHA-256 before it appears at its `dest`.
    ///
    /// Items whose `dest` already exists are skipped (the cache only ever holds
    /// verified files under their final names). Stops starting new downloads
    /// after the first failure and returns the failure of the earliest item.
    pub fn download_all(&self, items: &[Download]) -> Result<(), FetchError> {
        let mut seen = std::collections::HashSet::new();
        let mut todo = Vec::new();
        for item in items {
            if !is_sha256(&item.sha256) {
                return Err(FetchError::BadHash {
                    url: item.url.clone(),
                    sha256: item.sha256.clone(),
                });
            }
            if item.dest.exists() || !seen.insert(item.dest.clone()) {
                continue;
            }
            todo.push(item);
        }
        if todo.is_empty() {
            return Ok(());
        }
        let total: u64 = todo.iter().map(|d| d.size).sum();
        let bar = self.bar(total, todo.len());

        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let errors: Mutex<Vec<(usize, FetchError)>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL.min(todo.len()) {
                scope.spawn(|| loop {
                    if failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = todo.get(i) else { break };
                    if let Err(e) = self.download_one(item, &bar) {
                        failed.store(true, Ordering::SeqCst);
                        if let Ok(mut errors) = errors.lock() {
                            errors.push((i, e));
                        }
                    }
                });
            }
        });
        bar.finish_and_clear();
        let mut errors = match errors.into_inner() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        };
        errors.sort_by_key(|(i, _)| *i);
        match errors.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    fn bar(&self, total: u64, files: usize) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(format!("downloading {files} files"));
        bar
    }

    fn download_one(&self, item: &Download, bar: &ProgressBar) -> Result<(), FetchError> {
        let dir = match item.dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(|source| FetchError::Io {
            path: dir.clone(),
            source,
        })?;
        let part = part_path(&item.dest);
        let result = self
            .with_retries(&item.url, || self.download_attempt(item, &part, &dir, bar))
            .map_err(|(err, tries)| match err {
                FetchError::Incomplete {
                    url,
                    expected,
                    actual,
                    ..
                } => FetchError::Incomplete {
                    url,
                    expected,
                    actual,
                    attempts: tries,
                },
                other => other,
            });
        if result.is_err() {
            let _ = fs::remove_file(&part);
        }
        result
    }

    fn download_attempt(
        &self,
        item: &Download,
        part: &Path,
        dir: &Path,
        bar: &ProgressBar,
    ) -> Result<(), Failure> {
        let url = item.url.as_str();
        let (mut reader, len) = self.open(url)?;
        if let Some(len) = len {
            if len != item.size {
                return Err(Failure::fatal(FetchError::SizeMismatch {
                    url: url.to_string(),
                    expected: item.size,
                    actual: len,
                }));
            }
        }
        let io_err = |source| {
            Failure::fatal(FetchError::Io {
                path: part.to_path_buf(),
                source,
            })
        };
        let file = File::create(part).map_err(io_err)?;
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        let mut hasher = Sha256::new();
        let mut got: u64 = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    bar.dec(got);
                    return Err(Failure::transient(FetchError::Transport {
                        url: url.to_string(),
                        message: format!(
                            "connection failed after {got} of {} bytes: {e}",
                            item.size
                        ),
                    }));
                }
            };
            got += n as u64;
            if got > item.size {
                bar.dec(got - n as u64);
                return Err(Failure::fatal(FetchError::SizeMismatch {
                    url: url.to_string(),
                    expected: item.size,
                    actual: got,
                }));
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err)?;
            bar.inc(n as u64);
        }
        if got < item.size {
            bar.dec(got);
            return Err(Failure::transient(FetchError::Incomplete {
                url: url.to_string(),
                expected: item.size,
                actual: got,
                attempts: self.attempts,
            }));
        }
        let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        drop(file);
        let actual = hex::encode(hasher.finalize());
        if !actual.eq_ignore_ascii_case(&item.sha256) {
            return Err(Failure::fatal(FetchError::HashMismatch {
                url: url.to_string(),
                expected: item.sha256.to_ascii_lowercase(),
                actual,
            }));
        }
        fs::rename(part, &item.dest).map_err(|source| {
            Failure::fatal(FetchError::Io {
                path: item.dest.clone(),
                source,
            })
        })?;
        ballast_device::atomic::sync_dir(dir).map_err(|e| {
            Failure::fatal(FetchError::Io {
                path: dir.to_path_buf(),
                source: e.source,
            })
        })?;
        Ok(())
    }

    /// Run `attempt` up to `self.attempts` times while it fails transiently.
    /// On failure returns the last error and the number of attempts made.
    fn with_retries<T>(
        &self,
        url: &str,
        mut attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, (FetchError, u32)> {
        let mut wait = self.backoff;
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt() {
                Ok(v) => return Ok(v),
                Err(f) if f.retry && tries < self.attempts => {
                    if self.progress {
                        eprintln!("retrying {url} in {wait:?}: {}", f.err);
                    }
                    std::thread::sleep(wait);
                    wait = wait.saturating_mul(2);
                }
                Err(f) => {
                    let err = match f.err {
                        FetchError::Transport { url, message } if tries > 1 => {
                            FetchError::Transport {
                                url,
                                message: format!("{message} (gave up after {tries} attempts)"),
                            }
                        }
                        other => other,
                    };
                    return Err((err, tries));
                }
            }
        }
    }

    /// Open a URL for reading; returns the reader and the announced length.
    fn open(&self, url: &str) -> Result<(Box<dyn Read + Send>, Option<u64>), Failure> {
        if let Some(rest) = url.strip_prefix("file://") {
            let path = Path::new(rest);
            if !path.is_absolute() {
                return Err(Failure::fatal(FetchError::BadUrl {
                    url: url.to_string(),
                    reason: "a file:// URL needs an absolute path (file:///dir/file)".into(),
                }));
            }
            let file = File::open(path).map_err(|source| {
                Failure::fatal(if source.kind() == io::ErrorKind::NotFound {
                    FetchError::NotFound {
                        url: url.to_string(),
                    }
                } else {
                    FetchError::Io {
                        path: path.to_path_buf(),
                        source,
                    }
                })
            })?;
            let len = file.metadata().ok().map(|m| m.len());
            return Ok((Box::new(file), len));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Failure::fatal(FetchError::BadUrl {
                url: url.to_string(),
                reason: "unsupported scheme".into(),
            }));
        }
        let response = self.agent.get(url).call().map_err(|e| {
            let retry = !matches!(
                e,
                ureq::Error::BadUri(_) | ureq::Error::InvalidProxyUrl | ureq::Error::Http(_)
            );
            let err = FetchError::Transport {
                url: url.to_string(),
                message: e.to_string(),
            };
            if retry {
                Failure::transient(err)
            } else {
                Failure::fatal(err)
            }
        })?;
        let status = response.status().as_u16();
        match status {
            200..=299 => {}
            404 | 410 => {
                return Err(Failure::fatal(FetchError::NotFound {
                    url: url.to_string(),
                }))
            }
            // 408 Request Timeout and 429 Too Many Requests are worth another try.
            408 | 429 | 500..=599 => {
                return Err(Failure::transient(FetchError::Http {
                    url: url.to_string(),
                    status,
                }))
            }
            _ => {
                return Err(Failure::fatal(FetchError::Http {
                    url: url.to_string(),
                    status,
                }))
            }
        }
        let len = response.body().content_length();
        let reader = response.into_body().into_reader();
        Ok((Box::new(reader), len))
    }
}

/// `<dest>.part-<pid>-<n>`: unique per process and per call, so concurrent
/// builds sharing one cache never write into each other's partial files.
fn part_path(dest: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".part-{}-{n}", std::process::id()));
    dest.with_file_name(name)
}

pub(crate) fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// SHA-256 of a file, hex, streamed.
pub(crate) fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::Arc;

    /// What the test server does for one path.
    #[derive(Clone)]
    enum Reply {
        Body(Vec<u8>),
        /// Announce the full length, send only `sent` bytes, close.
        Truncated(Vec<u8>, usize),
        Status(u16),
    }

    /// A tiny HTTP/1.1 server on 127.0.0.1 that answers each request by path and
    /// counts the requests it saw per path.
    struct Server {
        base: String,
        hits: Arc<Mutex<HashMap<String, usize>>>,
    }

    impl Server {
        fn start(routes: Vec<(&str, Reply)>) -> Server {
            let routes: HashMap<String, Reply> = routes
                .into_iter()
                .map(|(p, r)| (p.to_string(), r))
                .collect();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let hits = Arc::new(Mutex::new(HashMap::new()));
            let counter = hits.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut first = String::new();
                    if reader.read_line(&mut first).is_err() {
                        continue;
                    }
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => break,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                    *counter.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                    let _ = match routes.get(&path).cloned().unwrap_or(Reply::Status(404)) {
                        Reply::Body(body) => stream
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .and_then(|_| stream.write_all(&body)),
                        Reply::Truncated(body, sent) => stream
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .and_then(|_| stream.write_all(&body[..sent])),
                        Reply::Status(code) => stream.write_all(
                            format!(
                                "HTTP/1.1 {code} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            )
                            .as_bytes(),
                        ),
                    };
                    let _ = stream.flush();
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                }
            });
            Server { base, hits }
        }

        fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        fn hits(&self, path: &str) -> usize {
            self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
        }
    }

    fn fetcher() -> Fetcher {
        Fetcher::new(false).with_retry(3, Duration::from_millis(10))
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn good_downloads_are_verified_and_land_at_dest() {
        let a = payload(300_000);
        let b = payload(1234);
        let server = Server::start(vec![
            ("/pool/a.deb", Reply::Body(a.clone())),
            ("/pool/b.deb", Reply::Body(b.clone())),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let items = vec![
            Download {
                url: server.url("/pool/a.deb"),
                dest: dir.path().join("sub/a.deb"),
                size: a.len() as u64,
                sha256: sha(&a),
            },
            Download {
                url: server.url("/pool/b.deb"),
                dest: dir.path().join("sub/b.deb"),
                size: b.len() as u64,
                sha256: sha(&b).to_uppercase(),
            },
        ];
        fetcher().download_all(&items).unwrap();
        assert_eq!(fs::read(dir.path().join("sub/a.deb")).unwrap(), a);
        assert_eq!(fs::read(dir.path().join("sub/b.deb")).unwrap(), b);
        let mut names = leftovers(&dir.path().join("sub"));
        names.sort();
        assert_eq!(names, vec!["a.deb", "b.deb"], "no .part files left behind");

        // A second run finds the files in place and does not fetch again.
        fetcher().download_all(&items).unwrap();
        assert_eq!(server.hits("/pool/a.deb"), 1);
    }

    #[test]
    fn wrong_hash_fails_and_leaves_nothing_at_dest() {
        let a = payload(5000);
        let server = Server::start(vec![("/a.deb", Reply::Body(a.clone()))]);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.deb");
        let wrong = sha(b"something else");
        let err = fetcher()
            .download_all(&[Download {
                url: server.url("/a.deb"),
                dest: dest.clone(),
                size: a.len() as u64,
                sha256: wrong.clone(),
            }])
            .unwrap_err();
        match &err {
            FetchError::HashMismatch {
                url,
                expected,
                actual,
            } => {
                assert!(url.ends_with("/a.deb"));
                assert_eq!(expected, &wrong);
                assert_eq!(actual, &sha(&a));
            }
            other => panic!("expected HashMismatch, got {other:?}"),
        }
        assert!(err.to_string().contains("/a.deb"), "{err}");
        assert!(!dest.exists());
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
    }

    #[test]
    fn wrong_size_fails_before_download() {
        let a = payload(5000);
        let server = Server::start(vec![("/a.deb", Reply::Body(a.clone()))]);
        let dir = tempfile::tempdir().unwrap();
        let err = fetcher()
            .download_all(&[Download {
                url: server.url("/a.deb"),
                dest: dir.path().join("a.deb"),
                size: 4000,
                sha256: sha(&a),
            }])
            .unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::SizeMismatch {
                    expected: 4000,
                    actual: 5000,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn truncated_body_is_retried_then_fails_cleanly() {
        let a = payload(100_000);
        let server = Server::start(vec![("/cut.deb", Reply::Truncated(a.clone(), 40_000))]);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("cut.deb");
        let err = fetcher()
            .download_all(&[Download {
                url: server.url("/cut.deb"),
                dest: dest.clone(),
                size: a.len() as u64,
                sha256: sha(&a),
            }])
            .unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::Incomplete { attempts: 3, .. } | FetchError::Transport { .. }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("/cut.deb"), "{err}");
        assert!(err.to_string().contains("3 attempts"), "{err}");
        assert_eq!(server.hits("/cut.deb"), 3, "three attempts");
        assert!(!dest.exists());
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );

        // get() retries truncation too.
        let err = fetcher().get(&server.url("/cut.deb")).unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::Incomplete { .. } | FetchError::Transport { .. }
            ),
            "{err:?}"
        );
        assert_eq!(server.hits("/cut.deb"), 6);
    }

    #[test]
    fn not_found_fails_at_once_and_server_errors_are_retried() {
        let server = Server::start(vec![("/busy", Reply::Status(503))]);
        let err = fetcher()
            .get(&server.url("/missing/InRelease"))
            .unwrap_err();
        assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
        assert_eq!(server.hits("/missing/InRelease"), 1, "404 is not retried");

        let err = fetcher().get(&server.url("/busy")).unwrap_err();
        assert!(
            matches!(err, FetchError::Http { status: 503, .. }),
            "{err:?}"
        );
        assert_eq!(server.hits("/busy"), 3);

        let dir = tempfile::tempdir().unwrap();
        let err = fetcher()
            .download_all(&[Download {
                url: server.url("/gone.deb"),
                dest: dir.path().join("gone.deb"),
                size: 1,
                sha256: sha(b"x"),
            }])
            .unwrap_err();
        assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn get_returns_the_body() {
        let body = b"Origin: Debian\nSuite: stable\n".to_vec();
        let server = Server::start(vec![("/dists/stable/InRelease", Reply::Body(body.clone()))]);
        assert_eq!(
            fetcher()
                .get(&server.url("/dists/stable/InRelease"))
                .unwrap(),
            body
        );
    }

    #[test]
    fn file_urls_work_for_get_and_download() {
        let src = tempfile::tempdir().unwrap();
        let data = payload(70_000);
        fs::write(src.path().join("p.deb"), &data).unwrap();
        let url = format!("file://{}", src.path().join("p.deb").display());
        assert_eq!(fetcher().get(&url).unwrap(), data);

        let missing = format!("file://{}", src.path().join("nope").display());
        assert!(matches!(
            fetcher().get(&missing),
            Err(FetchError::NotFound { .. })
        ));
        assert!(matches!(
            fetcher().get("file://relative/path"),
            Err(FetchError::BadUrl { .. })
        ));

        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("p.deb");
        fetcher()
            .download_all(&[Download {
                url: url.clone(),
                dest: dest.clone(),
                size: data.len() as u64,
                sha256: sha(&data),
            }])
            .unwrap();
        assert_eq!(fs::read(&dest).unwrap(), data);

        let dest2 = out.path().join("bad.deb");
        let err = fetcher()
            .download_all(&[Download {
                url,
                dest: dest2.clone(),
                size: data.len() as u64,
                sha256: sha(b"other"),
            }])
            .unwrap_err();
        assert!(matches!(err, FetchError::HashMismatch { .. }));
        assert!(!dest2.exists());
    }

    #[test]
    fn malformed_expected_hash_is_rejected() {
        let err = fetcher()
            .download_all(&[Download {
                url: "http://127.0.0.1:9/x.deb".into(),
                dest: PathBuf::from("/nonexistent/x.deb"),
                size: 1,
                sha256: "abc".into(),
            }])
            .unwrap_err();
        assert!(matches!(err, FetchError::BadHash { .. }), "{err:?}");
    }
}
