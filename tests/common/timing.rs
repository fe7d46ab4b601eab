//! How long each story took: a guard that appends `story<TAB>seconds<TAB>result`
//! to `target/e2e/timings.tsv` when the test ends, passed or failed, so that
//! `scripts/test` can print every story's time after `cargo test`.
//!
//! It only records; it never decides anything about the test it times.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// The file `scripts/test` empties before a run and sorts after it.
pub fn timings_file() -> PathBuf {
    super::root().join("target").join("e2e").join("timings.tsv")
}

/// Started by [`story`]; writes its line when dropped (also while a failed
/// assertion unwinds).
pub struct StoryTimer {
    name: String,
    started: Instant,
}

/// Time the calling test: `let _story = common::story();` as its first line.
/// The name is the test binary and the test (`update::qemu_x86_64_...`).
pub fn story() -> StoryTimer {
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned();
    StoryTimer {
        name: format!("{}::{test}", env!("CARGO_CRATE_NAME")),
        started: Instant::now(),
    }
}

impl Drop for StoryTimer {
    fn drop(&mut self) {
        let result = if std::thread::panicking() {
            "FAILED"
        } else {
            "ok"
        };
        let line = format!(
            "{}\t{:.1}\t{result}\n",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
        let file = timings_file();
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // One short append per story: lines from parallel tests never mix.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("story timing: cannot append to {}: {e}", file.display());
        }
    }
}
