//! Stage 2's life as PID 1 of the real root: start sysd and keep it running,
//! pet the hardware watchdog, reap every child, and turn signals into an
//! orderly shutdown.
//!
//! Signals are blocked and read one at a time from the main loop
//! ([`Sys::wait_signal`], `sigtimedwait`), so nothing runs in a signal handler
//! and the order in which they are handled is the loop's order:
//!
//! | signal  | meaning                                                        |
//! |---------|----------------------------------------------------------------|
//! | SIGTERM | power off (sysd sends it for `osctl poweroff`)                  |
//! | SIGINT  | reboot (`osctl reboot`; ctrl-alt-del, since `RB_DISABLE_CAD`)  |
//! | SIGUSR1 | halt (CPUs stopped, power stays on)                            |
//! | SIGUSR2 | power off (busybox init's meaning)                             |
//! | SIGHUP  | logged and ignored                                             |
//! | SIGCHLD | reap every exited child; restart sysd if it was sysd           |
//!
//! The orderly shutdown: SIGTERM to sysd and up to 10 s for it to stop its
//! containers, then SIGTERM to every process and up to 3 s, then SIGKILL,
//! reap, unmount what lives on state and the boot partition, make state
//! read-only, sync, and the `reboot(2)` call. The watchdog is petted all the
//! way to that call, so a shutdown that hangs in the kernel still resets.
//!
//! sysd's health joins the watchdog decision: while sysd runs, PID 1 pets
//! only if sysd's heartbeat ([`SYSD_ALIVE`], its main loop's monotonic time)
//! is younger than [`SYSD_STALE`]. A stopped or deadlocked sysd thus resets
//! the machine within [`SYSD_STALE`] plus the watchdog's timeout, and the
//! bootloader counts that boot like any other. A sysd that died is restarted
//! with backoff instead, and the watchdog is petted meanwhile.
//!
//! It must never panic and never return while the machine runs: every
//! failure is logged (console, and `/state/ballast/init.log`) and the loop
//! goes on.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rustix::io::Errno;

use crate::log;
use crate::stage1::Ending;
use crate::sys::{KillSignal, Shutdown, Signal, Sys};

// The system supervisor PID 1 starts (crate sysd); sysd writes its ready line to
// READY once every required container is healthy; PID 1's errors go to INIT_LOG,
// one stamped line each; WATCHDOGS: first found wins.
pub use ballast_device::paths::{INIT_LOG, READY, SYSD, SYSD_ALIVE, WATCHDOGS};
/// What PID 1 asks of the watchdog driver.
pub const WATCHDOG_TIMEOUT_S: u32 = 30;
/// How often the watchdog is petted (at most half the driver's timeout).
pub const PET_EVERY: Duration = Duration::from_secs(10);
/// A running sysd whose heartbeat is this old is hung: the watchdog is no
/// longer petted. (sysd writes it every 2 s; its main loop turns every 50 ms.)
pub const SYSD_STALE: Duration = Duration::from_secs(60);
/// sysd restarts after 1 s, doubling up to 30 s...
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// ...and a sysd that ran this long before it died starts over at 1 s.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Shutdown: how long sysd gets to stop its containers.
pub const SYSD_STOP: Duration = Duration::from_secs(10);
/// Shutdown: how long every process gets after SIGTERM before SIGKILL.
pub const TERM_ALL: Duration = Duration::from_secs(3);
/// Shutdown: how long to reap after SIGKILL before going on regardless.
pub const KILL_ALL: Duration = Duration::from_secs(2);
/// `ballast.debug=`: how long to wait for sysd's ready line.
pub const READY_WAIT: Duration = Duration::from_secs(180);
/// `ballast.debug=`: how often to look for [`READY`].
const READY_POLL: Duration = Duration::from_secs(1);
/// The longest single wait of the main loop.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// What stage 2 learned before handing over to the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// `ballast.debug=poweroff|reboot`: shut down once sysd is ready.
    pub debug: Option<Shutdown>,
    /// This boot's number on state (prefixes lines in `init.log`).
    pub boot: Option<u64>,
    /// Whether `/state` is mounted read-write (else errors go to the console only).
    pub state: bool,
    /// `ballast.watchdog=off`: leave the hardware watchdog alone.
    pub watchdog_off: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sysd {
    /// Not in this image.
    Absent,
    Running {
        pid: i32,
        since: Duration,
    },
    /// Died (or failed to start); starts again at `at`.
    Waiting {
        at: Duration,
    },
    /// Shutting down: never restarted.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watchdog {
    every: Duration,
    next: Duration,
}

/// PID 1's state on the real root.
#[derive(Debug)]
pub struct Pid1 {
    config: Config,
    sysd: Sysd,
    backoff: Duration,
    watchdog: Option<Watchdog>,
    /// When `ballast.debug=` gives up waiting for sysd's ready line.
    debug_deadline: Option<Duration>,
    /// A shutdown is under way: sysd is not restarted.
    stopping: bool,
    /// The watchdog is not petted because sysd shows no life.
    withheld: bool,
}

/// Seconds with one decimal, for log lines.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} s", self.0.as_secs_f64())
    }
}

/// Runs PID 1's duties until a shutdown ends it. Returns only if the final
/// `reboot(2)` failed, or under test.
pub fn run(sys: &mut impl Sys, config: Config) -> Ending {
    let mut pid1 = Pid1 {
        config,
        sysd: Sysd::Absent,
        backoff: BACKOFF_FIRST,
        watchdog: None,
        debug_deadline: None,
        stopping: false,
        withheld: false,
    };
    pid1.start(sys);
    pid1.serve(sys)
}

impl Pid1 {
    /// Logs an error on the console and appends it to [`INIT_LOG`].
    fn error(&mut self, sys: &mut impl Sys, message: fmt::Arguments<'_>) {
        let line = log::stamped(sys.now(), message);
        sys.write_console(&line);
        if !self.config.state {
            return;
        }
        let entry = match self.config.boot {
            Some(n) => format!("boot={n} {line}\n"),
            None => format!("{line}\n"),
        };
        if let Err(e) = sys.append_sync(Path::new(INIT_LOG), entry.as_bytes()) {
            // Once: a full or read-only state must not double every line.
            self.config.state = false;
            log!(
                sys,
                "cannot append to {INIT_LOG}: {e}; PID 1's errors go to the console only from now on"
            );
        }
    }

    fn start(&mut self, sys: &mut impl Sys) {
        if let Err(e) = sys.setup_signals() {
            self.error(
                sys,
                format_args!(
                    "cannot block signals or disable ctrl-alt-del: {e}; shutdown requests may be lost"
                ),
            );
        }
        if self.config.watchdog_off {
            log!(
                sys,
                "ballast.watchdog=off: not opening the hardware watchdog"
            );
        } else {
            self.open_watchdog(sys);
        }
        if sys.exists(Path::new(SYSD)) {
            self.spawn_sysd(sys);
        } else if self.config.debug.is_none() {
            log!(
                sys,
                "no {SYSD} in this image: nothing to supervise; PID 1 reaps orphans and waits for SIGTERM (poweroff) or SIGINT (reboot)"
            );
        }
        if let Some(how) = self.config.debug {
            if self.sysd == Sysd::Absent {
                self.debug_deadline = Some(Duration::ZERO);
            } else {
                log!(
                    sys,
                    "ballast.debug={}: waiting up to {} s for sysd's ready line ({READY})",
                    how.name(),
                    READY_WAIT.as_secs()
                );
                self.debug_deadline = Some(sys.now() + READY_WAIT);
            }
        }
    }

    fn open_watchdog(&mut self, sys: &mut impl Sys) {
        let Some(dev) = WATCHDOGS.iter().find(|d| sys.exists(Path::new(d))) else {
            return;
        };
        if let Err(e) = sys.watchdog_open(Path::new(dev)) {
            self.error(
                sys,
                format_args!("cannot open the watchdog {dev}: {e}; running without it"),
            );
            return;
        }
        let every = match sys.watchdog_set_timeout(WATCHDOG_TIMEOUT_S) {
            Ok(secs) => {
                log!(
                    sys,
                    "watchdog {dev}: timeout {secs} s, petted every {} s",
                    PET_EVERY
                        .min(Duration::from_secs(u64::from(secs)) / 2)
                        .as_secs_f32()
                );
                PET_EVERY.min(Duration::from_secs(u64::from(secs)) / 2)
            }
            Err(e) => {
                self.error(
                    sys,
                    format_args!(
                        "watchdog {dev}: cannot set a {WATCHDOG_TIMEOUT_S} s timeout (WDIOC_SETTIMEOUT: {e}); keeping the driver's and petting every {} s",
                        PET_EVERY.as_secs()
                    ),
                );
                PET_EVERY
            }
        };
        let every = every.max(Duration::from_secs(1));
        self.watchdog = Some(Watchdog {
            every,
            next: sys.now(),
        });
        self.pet(sys);
    }

    /// Pets the watchdog if it is due.
    fn pet(&mut self, sys: &mut impl Sys) {
        let Some(mut dog) = self.watchdog else { return };
        let now = sys.now();
        if now < dog.next {
            return;
        }
        dog.next = now + dog.every;
        self.watchdog = Some(dog);
        if !self.stopping {
            match self.sysd_silent_for(sys, now) {
                Some(silent) if silent >= SYSD_STALE => {
                    if !self.withheld {
                        self.withheld = true;
                        self.error(
                            sys,
                            format_args!(
                                "sysd has shown no life for {} (heartbeat {SYSD_ALIVE}): no longer petting the watchdog, which resets the machine",
                                Secs(silent)
                            ),
                        );
                    }
                    return;
                }
                _ if self.withheld => {
                    self.withheld = false;
                    log!(sys, "sysd shows life again: petting the watchdog");
                }
                _ => {}
            }
        }
        if let Err(e) = sys.watchdog_keepalive() {
            self.error(
                sys,
                format_args!("watchdog: WDIOC_KEEPALIVE failed: {e}; the machine may reset"),
            );
        }
    }

    /// How long a running sysd has shown no life: since its last heartbeat,
    /// or since it started if it has not written one yet. `None` when sysd is
    /// not running (absent, or waiting to be restarted).
    fn sysd_silent_for(&self, sys: &mut impl Sys, now: Duration) -> Option<Duration> {
        let Sysd::Running { since, .. } = self.sysd else {
            return None;
        };
        let beat = sys
            .read_file(Path::new(SYSD_ALIVE))
            .ok()
            .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<u64>().ok())
            .map(Duration::from_millis);
        // A heartbeat older than this sysd is its predecessor's.
        let last = beat.map_or(since, |b| b.max(since));
        Some(now.saturating_sub(last))
    }

    fn spawn_sysd(&mut self, sys: &mut impl Sys) {
        match sys.spawn(Path::new(SYSD), &["sysd"]) {
            Ok(pid) => {
                log!(sys, "started {SYSD} (pid {pid})");
                self.sysd = Sysd::Running {
                    pid,
                    since: sys.now(),
                };
            }
            Err(e) => {
                let delay = self.next_backoff(Duration::ZERO);
                self.error(
                    sys,
                    format_args!("cannot start {SYSD}: {e}; trying again in {}", Secs(delay)),
                );
                self.sysd = Sysd::Waiting {
                    at: sys.now() + delay,
                };
            }
        }
    }

    /// The delay before the next start of sysd, given how long it ran.
    fn next_backoff(&mut self, ran: Duration) -> Duration {
        if ran >= STABLE_AFTER {
            self.backoff = BACKOFF_FIRST;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        delay
    }

    /// Reaps every exited child; notes (and schedules the restart of) sysd.
    /// Returns whether PID 1 still has children.
    fn reap(&mut self, sys: &mut impl Sys) -> bool {
        let reaped = sys.reap();
        for (pid, status) in reaped.exited {
            let Sysd::Running { pid: sysd, since } = self.sysd else {
                continue;
            };
            if pid != sysd {
                continue;
            }
            let ran = sys.now().saturating_sub(since);
            if self.stopping {
                log!(sys, "sysd (pid {pid}) exited: {status}");
                self.sysd = Sysd::Stopped;
                continue;
            }
            let delay = self.next_backoff(ran);
            self.error(
                sys,
                format_args!(
                    "sysd (pid {pid}) died: {status} after {}; restarting it in {}",
                    Secs(ran),
                    Secs(delay)
                ),
            );
            self.sysd = Sysd::Waiting {
                at: sys.now() + delay,
            };
        }
        reaped.children_left
    }

    /// How long the main loop may sleep.
    fn next_wait(&self, now: Duration) -> Duration {
        let mut wake = now + MAX_WAIT;
        if let Some(dog) = self.watchdog {
            wake = wake.min(dog.next);
        }
        if let Sysd::Waiting { at } = self.sysd {
            wake = wake.min(at);
        }
        if self.debug_deadline.is_some() {
            wake = wake.min(now + READY_POLL);
        }
        wake.saturating_sub(now)
    }

    /// The main loop: returns only through [`Pid1::shutdown`].
    fn serve(&mut self, sys: &mut impl Sys) -> Ending {
        loop {
            if let (Some(how), Some(deadline)) = (self.config.debug, self.debug_deadline) {
                if self.sysd == Sysd::Absent {
                    return self.shutdown(
                        sys,
                        how,
                        &format!("ballast.debug={} and no sysd", how.name()),
                    );
                }
                if sys.exists(Path::new(READY)) {
                    return self.shutdown(
                        sys,
                        how,
                        &format!("ballast.debug={}: sysd is ready", how.name()),
                    );
                }
                if sys.now() >= deadline {
                    self.error(
                        sys,
                        format_args!(
                            "ballast.debug={}: sysd did not write {READY} within {} s",
                            how.name(),
                            READY_WAIT.as_secs()
                        ),
                    );
                    return self.shutdown(sys, how, "ballast.debug= timeout");
                }
            }
            let now = sys.now();
            let signal = sys.wait_signal(self.next_wait(now));
            match signal {
                Some(Signal::Term) => {
                    return self.shutdown(sys, Shutdown::PowerOff, "SIGTERM (poweroff request)")
                }
                Some(Signal::Usr2) => {
                    return self.shutdown(sys, Shutdown::PowerOff, "SIGUSR2 (poweroff request)")
                }
                Some(Signal::Int) => {
                    return self.shutdown(
                        sys,
                        Shutdown::Reboot,
                        "SIGINT (reboot request or ctrl-alt-del)",
                    )
                }
                Some(Signal::Usr1) => {
                    return self.shutdown(sys, Shutdown::Halt, "SIGUSR1 (halt request)")
                }
                Some(Signal::Hup) => log!(sys, "SIGHUP: nothing to reload; ignored"),
                Some(Signal::Chld) | None => {}
            }
            self.reap(sys);
            self.pet(sys);
            if let Sysd::Waiting { at } = self.sysd {
                if sys.now() >= at {
                    self.spawn_sysd(sys);
                }
            }
        }
    }

    /// Waits until `done(self)` or `deadline`, reaping and petting meanwhile.
    /// Signals that arrive are ignored: a shutdown is already under way.
    fn wait_until(
        &mut self,
        sys: &mut impl Sys,
        deadline: Duration,
        done: impl Fn(&Pid1, bool) -> bool,
    ) -> bool {
        loop {
            let children_left = self.reap(sys);
            if done(self, children_left) {
                return true;
            }
            self.pet(sys);
            let now = sys.now();
            if now >= deadline {
                return false;
            }
            let mut wait = deadline.saturating_sub(now);
            if let Some(dog) = self.watchdog {
                wait = wait.min(dog.next.saturating_sub(now));
            }
            match sys.wait_signal(wait) {
                Some(Signal::Chld | Signal::Hup) | None => {}
                Some(other) => log!(sys, "{other:?} ignored: already shutting down"),
            }
        }
    }

    /// The orderly shutdown; ends in `reboot(2)`.
    fn shutdown(&mut self, sys: &mut impl Sys, how: Shutdown, why: &str) -> Ending {
        log!(sys, "{why}: orderly {}", how.name());
        self.stopping = true;
        let start = sys.now();
        match self.sysd {
            Sysd::Running { pid, .. } => {
                log!(
                    sys,
                    "stopping sysd (pid {pid}): SIGTERM, waiting up to {} s",
                    SYSD_STOP.as_secs()
                );
                if let Err(e) = sys.kill(pid, KillSignal::Term) {
                    self.error(sys, format_args!("SIGTERM to sysd (pid {pid}): {e}"));
                }
                // Reaped from here on, sysd is not restarted.
                let stopped = self.wait_until(sys, start + SYSD_STOP, |me, _| {
                    !matches!(me.sysd, Sysd::Running { .. })
                });
                if stopped {
                    log!(
                        sys,
                        "sysd stopped after {}",
                        Secs(sys.now().saturating_sub(start))
                    );
                } else {
                    self.error(
                        sys,
                        format_args!(
                            "sysd (pid {pid}) did not stop within {} s; stopping every process",
                            SYSD_STOP.as_secs()
                        ),
                    );
                }
            }
            Sysd::Absent | Sysd::Waiting { .. } | Sysd::Stopped => {}
        }
        self.sysd = Sysd::Stopped;
        self.stop_everything(sys);
        self.finish(sys, how)
    }

    /// SIGTERM to every process, [`TERM_ALL`] to exit, then SIGKILL.
    fn stop_everything(&mut self, sys: &mut impl Sys) {
        if !self.reap(sys) {
            log!(sys, "no processes left");
            return;
        }
        log!(
            sys,
            "sending SIGTERM to every process, waiting up to {} s",
            TERM_ALL.as_secs()
        );
        match sys.kill(-1, KillSignal::Term) {
            Ok(()) => {}
            Err(Errno::SRCH) => return,
            Err(e) => self.error(sys, format_args!("kill(-1, SIGTERM): {e}")),
        }
        let start = sys.now();
        if self.wait_until(sys, start + TERM_ALL, |_, left| !left) {
            log!(
                sys,
                "every process exited after {}",
                Secs(sys.now().saturating_sub(start))
            );
            return;
        }
        log!(
            sys,
            "processes still running after {} s: sending SIGKILL",
            TERM_ALL.as_secs()
        );
        match sys.kill(-1, KillSignal::Kill) {
            Ok(()) | Err(Errno::SRCH) => {}
            Err(e) => self.error(sys, format_args!("kill(-1, SIGKILL): {e}")),
        }
        let start = sys.now();
        if !self.wait_until(sys, start + KILL_ALL, |_, left| !left) {
            self.error(
                sys,
                format_args!(
                    "processes survived SIGKILL for {} s (stuck in the kernel); going on",
                    KILL_ALL.as_secs()
                ),
            );
        }
    }

    /// Unmounts what lives on state and the boot partition, makes state
    /// read-only, syncs, and calls `reboot(2)`.
    fn finish(&mut self, sys: &mut impl Sys, how: Shutdown) -> Ending {
        sys.sync();
        for target in ["/etc", "/var"] {
            if let Ok(true) = sys.is_mountpoint(Path::new(target)) {
                if let Err(e) = sys.unmount(Path::new(target)) {
                    log!(sys, "unmount {target}: {e}");
                }
            }
        }
        if let Ok(true) = sys.is_mountpoint(Path::new(ballast_device::paths::BOOT)) {
            match sys.unmount(Path::new(ballast_device::paths::BOOT)) {
                Ok(()) => log!(sys, "{} unmounted", ballast_device::paths::BOOT),
                Err(e) => match sys.remount_ro(Path::new(ballast_device::paths::BOOT)) {
                    Ok(()) => log!(
                        sys,
                        "cannot unmount {}: {e}; made it read-only",
                        ballast_device::paths::BOOT
                    ),
                    Err(e2) => self.error(
                        sys,
                        format_args!(
                            "cannot unmount {} ({e}) nor make it read-only ({e2}); synced it",
                            ballast_device::paths::BOOT
                        ),
                    ),
                },
            }
        }
        if let Ok(true) = sys.is_mountpoint(Path::new(ballast_device::paths::STATE)) {
            // Last chance to record an error there.
            let state = ballast_device::paths::STATE;
            match sys.remount_ro(Path::new(state)) {
                Ok(()) => {
                    self.config.state = false;
                    log!(sys, "{state} is read-only; it is safe to power off");
                }
                Err(e) => {
                    self.error(
                        sys,
                        format_args!("cannot make {state} read-only: {e}; synced it instead"),
                    );
                    self.config.state = false;
                }
            }
        }
        sys.sync();
        if let Some(dog) = self.watchdog.as_mut() {
            dog.next = Duration::ZERO;
        }
        self.pet(sys);
        log!(sys, "{}", how.name());
        match sys.reboot(how) {
            Ok(()) => Ending::Shutdown(how),
            Err(e) => {
                // The watchdog, if any, resets the machine: it is not petted any more.
                self.error(
                    sys,
                    format_args!("reboot({}) failed: {e}; idling", how.name()),
                );
                Ending::Idle
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::ExitStatus;
    use crate::testsys::{Action, ChildPlan, TestSys};
    use std::path::PathBuf;

    const S: u64 = 1_000_000;

    /// The real root after stage 1, with sysd in the image and /state, /boot,
    /// /etc and /var mounted.
    fn machine(cmdline: &str) -> TestSys {
        let mut sys = TestSys::booted_with(cmdline);
        sys.file(SYSD, "\x7fELF");
        for m in ["/state", "/boot", "/etc", "/var"] {
            sys.mounted.insert(m.into());
        }
        sys
    }

    fn config() -> Config {
        Config {
            debug: None,
            boot: Some(3),
            state: true,
            watchdog_off: false,
        }
    }

    fn position(sys: &TestSys, want: &Action) -> usize {
        sys.actions
            .iter()
            .position(|a| a == want)
            .unwrap_or_else(|| panic!("no {want:?} in {:#?}", sys.actions))
    }

    fn near(got: Option<f64>, want: f64) -> bool {
        got.is_some_and(|g| (g - want).abs() < 0.1)
    }

    #[test]
    fn sysd_is_restarted_with_a_doubling_backoff_and_each_death_is_logged() {
        let mut sys = machine("ballast.slot=a");
        for _ in 0..7 {
            sys.spawn_plan
                .push_back(ChildPlan::dies_after(200_000, ExitStatus::Code(1)));
        }
        sys.signals.push_back((300 * S, Signal::Term));
        assert_eq!(
            run(&mut sys, config()),
            Ending::Shutdown(Shutdown::PowerOff)
        );

        let starts = sys.whens("started /usr/lib/ballast/sysd");
        let gaps: Vec<u64> = starts
            .windows(2)
            .map(|w| (w[1] - w[0]).round() as u64)
            .collect();
        // 0.2 s of life, then 1, 2, 4, 8, 16, 30, 30 s of waiting.
        assert_eq!(gaps, [1, 2, 4, 8, 16, 30, 30], "{starts:?}");
        let messages = sys.messages();
        assert!(
            messages.contains(
                &"sysd (pid 101) died: exit status 1 after 0.2 s; restarting it in 1.0 s"
            ),
            "{messages:?}"
        );
        assert!(messages
            .contains(&"sysd (pid 102) died: exit status 1 after 0.2 s; restarting it in 2.0 s"));
        // Each death is on state too, with the boot number.
        let log = String::from_utf8_lossy(&sys.files[Path::new(INIT_LOG)]).into_owned();
        assert_eq!(log.lines().count(), 7, "{log}");
        assert!(log.lines().all(|l| l.starts_with("boot=3 [")), "{log}");
        assert!(log.contains("ballast-init: sysd (pid 103) died: exit status 1"));
    }

    #[test]
    fn a_sysd_that_ran_a_while_restarts_after_one_second_again() {
        let mut pid1 = Pid1 {
            config: config(),
            sysd: Sysd::Absent,
            backoff: BACKOFF_FIRST,
            watchdog: None,
            debug_deadline: None,
            stopping: false,
            withheld: false,
        };
        let short = Duration::from_millis(100);
        let delays: Vec<u64> = [short, short, short, Duration::from_secs(120), short]
            .into_iter()
            .map(|ran| pid1.next_backoff(ran).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 1, 2]);
    }

    #[test]
    fn orderly_poweroff_stops_sysd_then_everyone_then_makes_state_read_only() {
        let mut sys = machine("ballast.slot=a");
        sys.spawn_plan.push_back(ChildPlan::obeys_term(2 * S));
        // A process that ignores SIGTERM, and one that takes 1 s.
        sys.orphan(
            500,
            ChildPlan {
                exits_after: None,
                term_takes: None,
            },
        );
        sys.orphan(501, ChildPlan::obeys_term(S));
        sys.signals.push_back((30 * S, Signal::Term));
        assert_eq!(
            run(&mut sys, config()),
            Ending::Shutdown(Shutdown::PowerOff)
        );

        let term_sysd = position(
            &sys,
            &Action::Kill {
                pid: 101,
                sig: KillSignal::Term,
            },
        );
        let sysd_gone = position(&sys, &Action::Reaped(101, ExitStatus::Signal(15)));
        let term_all = position(
            &sys,
            &Action::Kill {
                pid: -1,
                sig: KillSignal::Term,
            },
        );
        let gentle_gone = position(&sys, &Action::Reaped(501, ExitStatus::Signal(15)));
        let kill_all = position(
            &sys,
            &Action::Kill {
                pid: -1,
                sig: KillSignal::Kill,
            },
        );
        let stubborn_gone = position(&sys, &Action::Reaped(500, ExitStatus::Signal(9)));
        let boot_off = position(&sys, &Action::Unmount("/boot".into()));
        let state_ro = position(&sys, &Action::RemountRo("/state".into()));
        let off = position(&sys, &Action::Reboot(Shutdown::PowerOff));
        let order = [
            term_sysd,
            sysd_gone,
            term_all,
            gentle_gone,
            kill_all,
            stubborn_gone,
            boot_off,
            state_ro,
            off,
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{:#?}", sys.actions);
        assert!(sys.actions[state_ro..off].contains(&Action::Sync));
        // sysd is not restarted while shutting down.
        assert_eq!(
            sys.actions
                .iter()
                .filter(|a| matches!(a, Action::Spawn(_)))
                .count(),
            1
        );
        // Deadlines: sysd took its 2 s, SIGKILL 3 s after the SIGTERM to all.
        assert!(near(
            sys.when("SIGTERM (poweroff request): orderly poweroff"),
            30.0
        ));
        assert!(
            near(sys.when("sysd stopped after 2.0 s"), 32.0),
            "{:?}",
            sys.messages()
        );
        assert!(near(sys.when("sending SIGTERM to every process"), 32.0));
        assert!(near(
            sys.when("processes still running after 3 s: sending SIGKILL"),
            35.0
        ));
        assert!(sys
            .messages()
            .contains(&"sysd (pid 101) exited: killed by signal 15 (SIGTERM)"));
    }

    #[test]
    fn a_sysd_that_ignores_sigterm_gets_ten_seconds_then_is_killed_with_the_rest() {
        let mut sys = machine("ballast.slot=a");
        sys.spawn_plan.push_back(ChildPlan {
            exits_after: None,
            term_takes: None,
        });
        sys.signals.push_back((5 * S, Signal::Int));
        assert_eq!(run(&mut sys, config()), Ending::Shutdown(Shutdown::Reboot));
        assert!(near(
            sys.when("sysd (pid 101) did not stop within 10 s; stopping every process"),
            15.0
        ));
        assert!(near(sys.when("sending SIGKILL"), 18.0));
        assert!(sys
            .actions
            .contains(&Action::Reaped(101, ExitStatus::Signal(9))));
        assert!(
            near(sys.when("ballast-init: reboot"), 18.0),
            "{:?}",
            sys.messages()
        );
        // The timeout is an error: it is on state, written before state went read-only.
        let log = String::from_utf8_lossy(&sys.files[Path::new(INIT_LOG)]).into_owned();
        assert!(log.contains("did not stop within 10 s"), "{log}");
    }

    #[test]
    fn signals_are_handled_in_arrival_order_and_the_first_shutdown_wins() {
        let mut sys = machine("ballast.slot=a");
        sys.orphan(700, ChildPlan::dies_after(2 * S, ExitStatus::Code(0)));
        sys.signals.extend([
            (S, Signal::Hup),
            (4 * S, Signal::Usr1),
            (4 * S + 100_000, Signal::Term),
        ]);
        assert_eq!(run(&mut sys, config()), Ending::Shutdown(Shutdown::Halt));
        let messages = sys.messages();
        let hup = messages
            .iter()
            .position(|m| *m == "SIGHUP: nothing to reload; ignored");
        let halt = messages
            .iter()
            .position(|m| *m == "SIGUSR1 (halt request): orderly halt");
        let term = messages
            .iter()
            .position(|m| *m == "Term ignored: already shutting down");
        assert!(hup < halt && halt < term && hup.is_some(), "{messages:?}");
        // The orphan was reaped when it exited, before the shutdown.
        let reaped = position(&sys, &Action::Reaped(700, ExitStatus::Code(0)));
        assert!(
            reaped
                < position(
                    &sys,
                    &Action::Kill {
                        pid: 101,
                        sig: KillSignal::Term
                    }
                )
        );
        assert_eq!(sys.actions[0], Action::SetupSignals);
    }

    #[test]
    fn watchdog_off_leaves_the_watchdog_closed() {
        let mut sys = machine("ballast.slot=a ballast.watchdog=off");
        sys.nodes.insert(PathBuf::from("/dev/watchdog0"));
        sys.signals.push_back((20 * S, Signal::Term));
        sys.file(SYSD_ALIVE, "1000000\n");
        run(
            &mut sys,
            Config {
                watchdog_off: true,
                ..config()
            },
        );
        assert!(!sys
            .actions
            .iter()
            .any(|a| matches!(a, Action::WatchdogOpen(_))));
        assert!(sys.pets.is_empty());
        assert!(sys
            .messages()
            .contains(&"ballast.watchdog=off: not opening the hardware watchdog"));
    }

    #[test]
    fn the_watchdog_is_petted_every_ten_seconds_until_the_final_reboot_call() {
        let mut sys = machine("ballast.slot=a");
        sys.nodes.insert(PathBuf::from("/dev/watchdog0"));
        sys.spawn_plan.push_back(ChildPlan {
            exits_after: None,
            term_takes: None,
        });
        sys.signals.push_back((95 * S, Signal::Term));
        // sysd's heartbeat is fresh throughout (a time past the test's end).
        sys.file(SYSD_ALIVE, "1000000\n");
        run(&mut sys, config());
        assert!(sys
            .actions
            .contains(&Action::WatchdogOpen("/dev/watchdog0".into())));
        assert!(sys.actions.contains(&Action::WatchdogTimeout(30)));
        let gaps: Vec<u64> = sys.pets.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g <= 10 * S + 10_000), "{gaps:?}");
        // 95 s running + 15 s shutdown: about 11 pets, the last just before reboot(2).
        assert!(sys.pets.len() >= 11, "{:?}", sys.pets);
        let off = position(&sys, &Action::Reboot(Shutdown::PowerOff));
        assert!(sys.actions[..off]
            .iter()
            .rev()
            .take(3)
            .any(|a| *a == Action::Pet));
    }

    #[test]
    fn a_hung_sysd_stops_the_petting_so_the_watchdog_resets_the_machine() {
        let mut sys = machine("ballast.slot=a");
        sys.nodes.insert(PathBuf::from("/dev/watchdog0"));
        sys.spawn_plan.push_back(ChildPlan {
            exits_after: None,
            term_takes: None,
        });
        // sysd's last heartbeat was at 20 s (then SIGSTOP, or a deadlock).
        sys.file(SYSD_ALIVE, "20000\n");
        sys.signals.push_back((200 * S, Signal::Term));
        run(&mut sys, config());
        let hung = sys.when("sysd has shown no life for ");
        assert!(sys.console().iter().any(|l| l.contains(
            "(heartbeat /run/ballast/sysd.alive): no longer petting the watchdog, which resets the machine"
        )));
        assert!(
            hung.is_some_and(|t| (80.0..91.0).contains(&t)),
            "{hung:?} {:?}",
            sys.messages()
        );
        // Petted until then; not between then and the shutdown (which pets
        // to its end, so a hang there still resets).
        assert!(
            sys.pets.iter().any(|t| *t >= 70 * S && *t < 81 * S),
            "{:?}",
            sys.pets
        );
        assert!(
            !sys.pets.iter().any(|t| *t >= 91 * S && *t < 200 * S),
            "{:?}",
            sys.pets
        );
        assert!(sys.pets.iter().any(|t| *t >= 200 * S), "{:?}", sys.pets);
    }

    #[test]
    fn a_heartbeat_older_than_a_restarted_sysd_is_not_held_against_it() {
        let mut sys = machine("ballast.slot=a");
        sys.nodes.insert(PathBuf::from("/dev/watchdog0"));
        // The first sysd dies at 5 s (its last beat at 4 s); the second runs.
        sys.spawn_plan.push_back(ChildPlan {
            exits_after: Some((5 * S, ExitStatus::Code(1))),
            term_takes: None,
        });
        sys.spawn_plan.push_back(ChildPlan {
            exits_after: None,
            term_takes: None,
        });
        sys.file(SYSD_ALIVE, "4000\n");
        sys.signals.push_back((50 * S, Signal::Term));
        run(&mut sys, config());
        assert!(
            !sys.messages()
                .iter()
                .any(|m| m.starts_with("sysd has shown no life")),
            "{:?}",
            sys.messages()
        );
        let gaps: Vec<u64> = sys.pets.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g <= 10 * S + 10_000), "{gaps:?}");
    }

    #[test]
    fn debug_poweroff_waits_for_sysds_ready_file() {
        let mut sys = machine("ballast.slot=a ballast.debug=poweroff");
        sys.appear.insert(PathBuf::from(READY), 42 * S);
        let cfg = Config {
            debug: Some(Shutdown::PowerOff),
            ..config()
        };
        assert_eq!(run(&mut sys, cfg), Ending::Shutdown(Shutdown::PowerOff));
        let ready = sys.when("ballast.debug=poweroff: sysd is ready: orderly poweroff");
        assert!(
            ready.is_some_and(|t| (42.0..43.1).contains(&t)),
            "{:?}",
            sys.messages()
        );
        assert!(sys.actions.contains(&Action::Kill {
            pid: 101,
            sig: KillSignal::Term
        }));
    }

    #[test]
    fn debug_reboot_gives_up_on_a_sysd_that_never_gets_ready() {
        let mut sys = machine("ballast.slot=a ballast.debug=reboot");
        let cfg = Config {
            debug: Some(Shutdown::Reboot),
            ..config()
        };
        assert_eq!(run(&mut sys, cfg), Ending::Shutdown(Shutdown::Reboot));
        // The test clock ticks 1 ms per reading, so 180 polls drift a little.
        let gave_up =
            sys.when("ballast.debug=reboot: sysd did not write /run/ballast/ready within 180 s");
        assert!(
            gave_up.is_some_and(|t| (180.0..182.0).contains(&t)),
            "{gave_up:?}"
        );
    }

    #[test]
    fn debug_poweroff_without_sysd_powers_off_at_once() {
        let mut sys = machine("ballast.slot=a ballast.debug=poweroff");
        sys.files.remove(Path::new(SYSD));
        let cfg = Config {
            debug: Some(Shutdown::PowerOff),
            ..config()
        };
        assert_eq!(run(&mut sys, cfg), Ending::Shutdown(Shutdown::PowerOff));
        assert!(!sys
            .actions
            .iter()
            .any(|a| matches!(a, Action::Spawn(_) | Action::Kill { .. })));
        assert!(sys.clock_us.get() < S, "{}", sys.clock_us.get());
        assert!(sys
            .messages()
            .contains(&"ballast.debug=poweroff and no sysd: orderly poweroff"));
    }

    #[test]
    fn a_sysd_that_cannot_start_is_retried_and_the_error_kept_on_state() {
        let mut sys = machine("ballast.slot=a");
        sys.fail.insert("spawn", Errno::ACCESS);
        sys.signals.push_back((10 * S, Signal::Term));
        run(&mut sys, config());
        let tries = sys
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Spawn(_)))
            .count();
        // At 0, 1, 3 and 7 s.
        assert_eq!(tries, 4);
        let log = String::from_utf8_lossy(&sys.files[Path::new(INIT_LOG)]).into_owned();
        assert!(
            log.contains(
                "cannot start /usr/lib/ballast/sysd: permission denied; trying again in 1.0 s"
            ),
            "{log}"
        );
    }

    #[test]
    fn without_state_errors_stay_on_the_console() {
        let mut sys = machine("ballast.slot=a");
        sys.fail.insert("spawn", Errno::ACCESS);
        sys.signals.push_back((2 * S, Signal::Term));
        run(
            &mut sys,
            Config {
                state: false,
                ..config()
            },
        );
        assert!(sys.messages().iter().any(|m| m.starts_with("cannot start")));
        assert!(!sys.files.contains_key(Path::new(INIT_LOG)));
    }
}
