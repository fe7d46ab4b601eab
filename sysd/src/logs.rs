//! Service logs: `LOGDIR/NAME.log`, rotated at [`ROTATE_AT`] keeping `.1` and `.2`;
//! when the state partition is not writable, the last [`MEMORY_KEEP`] bytes in memory.
//!
//! Writers copy a service's stdout+stderr pipe byte for byte (no prefix: the
//! service's own format is kept). Readers serve `osctl logs` (last N lines, follow).
//! Each log also keeps its last [`RECENT_KEEP`] bytes in memory with a mark where the
//! current run began, so a failure is reported with that run's own last lines, never
//! an earlier run's.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const ROTATE_AT: u64 = 1 << 20;
pub const MEMORY_KEEP: usize = 256 << 10;
/// What a failure report can quote: the last bytes written, whatever the sink.
pub const RECENT_KEEP: usize = 8 << 10;

/// The last bytes written and where the current run began, in bytes ever written.
#[derive(Default)]
struct Recent {
    buf: VecDeque<u8>,
    total: u64,
    run_start: u64,
}

enum Sink {
    File {
        path: PathBuf,
        file: File,
        size: u64,
    },
    Memory {
        buf: VecDeque<u8>,
        total: u64,
    },
}

/// One service's log.
pub struct Log {
    sink: Mutex<Sink>,
    recent: Mutex<Recent>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A writer thread that panicked mid-write leaves bytes, not broken invariants.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Log {
    fn memory() -> Log {
        Log {
            sink: Mutex::new(Sink::Memory {
                buf: VecDeque::new(),
                total: 0,
            }),
            recent: Mutex::default(),
        }
    }

    fn open_file(path: &Path) -> std::io::Result<Log> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Log {
            sink: Mutex::new(Sink::File {
                path: path.to_path_buf(),
                file,
                size,
            }),
            recent: Mutex::default(),
        })
    }

    /// A new run of the service begins: [`Log::run_tail`] quotes only what follows.
    pub fn begin_run(&self) {
        let mut r = lock(&self.recent);
        r.run_start = r.total;
    }

    /// The last `n` lines (without newlines) written since [`Log::begin_run`], as
    /// far as the last [`RECENT_KEEP`] bytes reach.
    pub fn run_tail(&self, n: usize) -> Vec<String> {
        let r = lock(&self.recent);
        let kept_from = r.total - r.buf.len() as u64;
        let skip = r.run_start.saturating_sub(kept_from) as usize;
        let bytes: Vec<u8> = r.buf.iter().skip(skip).copied().collect();
        last_lines(&bytes, n)
    }

    /// Append bytes, rotating first when the file has reached [`ROTATE_AT`]. A write
    /// error switches this log to memory (and says so once in the log itself).
    pub fn write(&self, data: &[u8]) {
        {
            let mut r = lock(&self.recent);
            r.buf.extend(data);
            r.total += data.len() as u64;
            let extra = r.buf.len().saturating_sub(RECENT_KEEP);
            r.buf.drain(..extra);
        }
        let mut sink = lock(&self.sink);
        let mut failed = None;
        if let Sink::File { path, file, size } = &mut *sink {
            // Fill the file to exactly ROTATE_AT, rotate, go on: no file ever exceeds it.
            let mut rest = data;
            while !rest.is_empty() && failed.is_none() {
                if *size >= ROTATE_AT {
                    match rotate(path) {
                        Ok(f) => {
                            *file = f;
                            *size = 0;
                        }
                        Err(e) => {
                            failed = Some(format!("cannot rotate {}: {e}", path.display()));
                            break;
                        }
                    }
                }
                let room = (ROTATE_AT - *size).min(rest.len() as u64) as usize;
                match file.write_all(&rest[..room]) {
                    Ok(()) => *size += room as u64,
                    Err(e) => failed = Some(format!("cannot write {}: {e}", path.display())),
                }
                rest = &rest[room..];
            }
        }
        if let Some(msg) = failed {
            *sink = Sink::Memory {
                buf: VecDeque::new(),
                total: 0,
            };
            push_mem(
                &mut sink,
                format!("sysd: {msg}; keeping the last {MEMORY_KEEP} bytes in memory\n").as_bytes(),
            );
        }
        push_mem(&mut sink, data);
    }

    /// The last `n` lines (without newlines).
    pub fn tail(&self, n: usize) -> Vec<String> {
        let bytes = match &*lock(&self.sink) {
            Sink::Memory { buf, .. } => buf.iter().copied().collect::<Vec<u8>>(),
            Sink::File { path, .. } => {
                let mut all = Vec::new();
                for p in [suffixed(path, ".2"), suffixed(path, ".1"), path.clone()] {
                    if let Ok(mut f) = File::open(&p) {
                        let _ = f.read_to_end(&mut all);
                    }
                }
                all
            }
        };
        last_lines(&bytes, n)
    }

    /// Where a follower starts reading new output.
    pub fn cursor(&self) -> Cursor {
        match &*lock(&self.sink) {
            Sink::Memory { total, .. } => Cursor::Memory { pos: *total },
            Sink::File { path, .. } => match File::open(path) {
                Ok(mut f) => {
                    let _ = f.seek(SeekFrom::End(0));
                    Cursor::File {
                        path: path.clone(),
                        file: Some(f),
                    }
                }
                Err(_) => Cursor::File {
                    path: path.clone(),
                    file: None,
                },
            },
        }
    }

    /// Bytes written since `cursor`, advancing it. Follows rotation: the open file
    /// handle keeps reading the renamed file to its end, then the new file from its start.
    pub fn read_new(&self, cursor: &mut Cursor) -> Vec<u8> {
        match cursor {
            Cursor::Memory { pos } => {
                if let Sink::Memory { buf, total } = &*lock(&self.sink) {
                    let start_total = total.saturating_sub(buf.len() as u64);
                    let from = (*pos).max(start_total);
                    let skip = (from - start_total) as usize;
                    *pos = *total;
                    buf.iter().skip(skip).copied().collect()
                } else {
                    Vec::new()
                }
            }
            Cursor::File { path, file } => {
                let mut out = Vec::new();
                if let Some(f) = file {
                    let _ = f.read_to_end(&mut out);
                    let same = match (f.metadata(), std::fs::metadata(&*path)) {
                        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                        _ => false,
                    };
                    if same {
                        return out;
                    }
                }
                // Rotated (or not there before): continue in the current file.
                if let Ok(mut f) = File::open(&*path) {
                    let _ = f.read_to_end(&mut out);
                    *file = Some(f);
                }
                out
            }
        }
    }
}

/// A follower's position.
pub enum Cursor {
    Memory { pos: u64 },
    File { path: PathBuf, file: Option<File> },
}

fn push_mem(sink: &mut Sink, data: &[u8]) {
    if let Sink::Memory { buf, total } = sink {
        buf.extend(data);
        *total += data.len() as u64;
        while buf.len() > MEMORY_KEEP {
            buf.pop_front();
        }
    }
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// `.1` → `.2`, current → `.1`, open a new current.
fn rotate(path: &Path) -> std::io::Result<File> {
    let one = suffixed(path, ".1");
    if one.exists() {
        std::fs::rename(&one, suffixed(path, ".2"))?;
    }
    std::fs::rename(path, &one)?;
    OpenOptions::new().create(true).append(true).open(path)
}

fn last_lines(bytes: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|s| s.to_string()).collect()
}

/// Every service's log.
pub struct Logs {
    /// `None`: the directory is not writable, everything stays in memory.
    dir: Option<PathBuf>,
    logs: Mutex<HashMap<String, Arc<Log>>>,
}

impl Logs {
    /// Create `dir` if needed; if it cannot be written, keep logs in memory and
    /// return the reason as the second value.
    pub fn new(dir: &Path) -> (Logs, Option<String>) {
        let probe = dir.join(".sysd-write-test");
        let res = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&probe, b""))
            .and_then(|()| std::fs::remove_file(&probe));
        let (d, err) = match res {
            Ok(()) => (Some(dir.to_path_buf()), None),
            Err(e) => (
                None,
                Some(format!(
                    "cannot write service logs to {}: {e}; keeping the last {} KiB of each in memory (is the state partition mounted read-write?)",
                    dir.display(),
                    MEMORY_KEEP >> 10
                )),
            ),
        };
        (
            Logs {
                dir: d,
                logs: Mutex::new(HashMap::new()),
            },
            err,
        )
    }

    /// The log of `name`, opened on first use.
    pub fn get(&self, name: &str) -> Arc<Log> {
        let mut map = lock(&self.logs);
        if let Some(l) = map.get(name) {
            return l.clone();
        }
        let log = match &self.dir {
            Some(d) => Log::open_file(&d.join(format!("{name}.log"))).unwrap_or_else(|e| {
                let l = Log::memory();
                l.write(
                    format!(
                        "sysd: cannot open {}: {e}; keeping this log in memory\n",
                        d.join(format!("{name}.log")).display()
                    )
                    .as_bytes(),
                );
                l
            }),
            None => Log::memory(),
        };
        let log = Arc::new(log);
        map.insert(name.to_string(), log.clone());
        log
    }
}

/// Copy everything from `src` (a pipe's read end) into `log` until end of file.
pub fn pump(mut src: File, log: Arc<Log>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match src.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => log.write(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_one_mib_keeping_two_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let (logs, err) = Logs::new(&dir.path().join("logs"));
        assert!(err.is_none());
        let log = logs.get("svc");
        let line = [b'x'; 1023];
        let mut chunk = line.to_vec();
        chunk.push(b'\n');
        // 3.5 MiB in 1 KiB lines.
        for _ in 0..(3 * 1024 + 512) {
            log.write(&chunk);
        }
        let base = dir.path().join("logs/svc.log");
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert_eq!(size(suffixed(&base, ".1")), ROTATE_AT);
        assert_eq!(size(suffixed(&base, ".2")), ROTATE_AT);
        assert_eq!(size(base.clone()), 512 * 1024);
        assert!(!suffixed(&base, ".3").exists());
        let tail = log.tail(5000);
        assert_eq!(tail.len(), 2048 + 512);
    }

    #[test]
    fn tail_and_follow_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (logs, _) = Logs::new(dir.path());
        let log = logs.get("svc");
        log.write(b"one\ntwo\nthree\n");
        assert_eq!(log.tail(2), vec!["two", "three"]);
        let mut c = log.cursor();
        log.write(b"four\n");
        assert_eq!(log.read_new(&mut c), b"four\n");
        // Fill to force a rotation, then write a marker into the new file.
        let big = vec![b'y'; ROTATE_AT as usize];
        log.write(&big);
        log.write(b"after\n");
        let got = log.read_new(&mut c);
        assert_eq!(got.len(), big.len() + 6);
        assert!(got.ends_with(b"after\n"));
    }

    #[test]
    fn run_tail_quotes_only_the_current_run() {
        let dir = tempfile::tempdir().unwrap();
        let (logs, _) = Logs::new(dir.path());
        let log = logs.get("network");
        log.begin_run();
        log.write(b"network: up on eth0\n");
        log.begin_run();
        assert!(log.run_tail(3).is_empty(), "{:?}", log.run_tail(3));
        log.write(b"network: reading config\nnetwork: no interface interface0\n");
        assert_eq!(
            log.run_tail(3),
            vec![
                "network: reading config",
                "network: no interface interface0"
            ]
        );
        // A run longer than what is kept is quoted from its end.
        log.begin_run();
        for i in 0..5000 {
            log.write(format!("line {i}\n").as_bytes());
        }
        assert_eq!(log.run_tail(2), vec!["line 4998", "line 4999"]);
    }

    #[test]
    fn unwritable_dir_keeps_the_last_256_kib_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let (logs, err) = Logs::new(&file.join("logs"));
        assert!(err.unwrap().contains("not-a-dir"));
        let log = logs.get("svc");
        let mut c = log.cursor();
        for i in 0..100_000 {
            log.write(format!("line {i}\n").as_bytes());
        }
        let tail = log.tail(2);
        assert_eq!(tail, vec!["line 99998", "line 99999"]);
        let new = log.read_new(&mut c);
        assert!(new.len() <= MEMORY_KEEP && new.len() > MEMORY_KEEP - 20);
        assert!(new.ends_with(b"line 99999\n"));
    }
}
