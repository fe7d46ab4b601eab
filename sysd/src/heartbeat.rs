//! sysd's heartbeat for PID 1's watchdog decision.
//!
//! PID 1 owns `/dev/watchdog` (it must keep petting it through sysd's
//! restarts and the shutdown), but it pets only while sysd shows life: a
//! thread here writes [`ballast_device::paths::SYSD_ALIVE`] every
//! [`EVERY`] with the `CLOCK_MONOTONIC` time in milliseconds, the clock PID 1
//! reads too. It writes only while the main loop has turned within
//! [`LOOP_STALE`] (or has not started yet: the first-boot config runs before
//! it, and the probation timeout covers a boot that never gets there), so a
//! stopped (SIGSTOP) or deadlocked sysd stops the heartbeat, PID 1 stops
//! petting, and the watchdog resets the machine: a boot like any other, which
//! the bootloader counts as a try of a slot on probation.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the heartbeat is written.
pub const EVERY: Duration = Duration::from_secs(2);
/// A main loop that has not turned for this long is hung.
pub const LOOP_STALE: Duration = Duration::from_secs(30);

/// `CLOCK_MONOTONIC` in milliseconds (the clock of PID 1's `Sys::now`).
pub fn monotonic_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1000)
        .saturating_add((t.tv_nsec as u64) / 1_000_000)
}

/// The main loop's last turn, in [`monotonic_ms`]; 0 until it first turns.
#[derive(Debug, Default, Clone)]
pub struct LoopMark(Arc<AtomicU64>);

impl LoopMark {
    /// Called by the main loop on every turn.
    pub fn turned(&self) {
        self.0.store(monotonic_ms(), Ordering::Relaxed);
    }

    /// Whether the heartbeat should be written at `now` (ms).
    pub fn alive_at(&self, now: u64) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        last == 0 || now.saturating_sub(last) < LOOP_STALE.as_millis() as u64
    }
}

/// Starts the heartbeat thread writing `path`. An error starting it is returned
/// for `osctl status`; PID 1 then stops petting once its grace has passed,
/// which is the safe side.
pub fn start(path: PathBuf, mark: LoopMark) -> Result<(), String> {
    std::thread::Builder::new()
        .name("sysd-heartbeat".into())
        .spawn(move || {
            let mut said = false;
            loop {
                let now = monotonic_ms();
                if mark.alive_at(now) {
                    // tmpfs: no fsync; renamed so PID 1 never reads half a line.
                    if let Some(dir) = path.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    let tmp = path.with_extension("alive.tmp");
                    let wrote = std::fs::write(&tmp, format!("{now}\n"))
                        .and_then(|()| std::fs::rename(&tmp, &path));
                    if let Err(e) = wrote {
                        if !said {
                            crate::say(&format!(
                                "cannot write the heartbeat {}: {e}; PID 1 will stop petting the watchdog",
                                path.display()
                            ));
                            said = true;
                        }
                    }
                }
                std::thread::sleep(EVERY);
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the heartbeat thread: {e}; PID 1 will stop petting the watchdog"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stopped_turning_stops_the_heartbeat() {
        let mark = LoopMark::default();
        // Before the main loop starts (first-boot config), the heartbeat runs.
        assert!(mark.alive_at(monotonic_ms() + 3_600_000));
        mark.turned();
        let now = monotonic_ms();
        assert!(mark.alive_at(now + 29_000));
        assert!(!mark.alive_at(now + 31_000));
    }

    #[test]
    fn the_heartbeat_file_holds_the_monotonic_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sysd.alive");
        start(path.clone(), LoopMark::default()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !path.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let ms: u64 = text.trim().parse().unwrap();
        assert!(
            ms <= monotonic_ms() && monotonic_ms() - ms < 5_000,
            "{text}"
        );
    }
}
