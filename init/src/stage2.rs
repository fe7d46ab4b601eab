//! Stage 2: the same binary as PID 1 of the real (verified, read-only) root,
//! started by stage 1's switch_root as `init --stage2`.
//!
//! It counts the boot on the state partition (`/state/ballast/boots`, one
//! line per boot, fsynced), then hands over to [`crate::children`]: sysd,
//! the watchdog, reaping, and the orderly shutdown that makes state
//! read-only so nothing is lost.

use std::path::Path;

use crate::children;
use crate::log;
use crate::stage1::{self, Ending};
use crate::sys::{Shutdown, Sys};
use ballast_device::cmdline::{Cmdline, DebugAction};
use ballast_device::paths;

// The unified cgroup hierarchy sysd places containers in (crate ballast-container);
// the boot partition (vfat, read-write), mounted by stage 1; the state partition
// and its boots file.
pub use ballast_device::paths::{BOOT, BOOTS, CGROUP, STATE};

/// The number of the next boot given the boots file: one more than the
/// highest `boot=N` in it (0 lines → 1).
pub fn next_boot(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("boot=")?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0)
        + 1
}

/// Counts this boot on the state partition. `None` if there is no state.
pub fn count_boot(sys: &mut impl Sys, version: &str, slot: &str) -> Option<u64> {
    match sys.is_mountpoint(Path::new(STATE)) {
        Ok(true) => {}
        _ => {
            log!(
                sys,
                "no state partition on {STATE}: this boot is not counted"
            );
            return None;
        }
    }
    let previous = match sys.read_file(Path::new(BOOTS)) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            log!(sys, "cannot read {BOOTS}: {e}; this boot is not counted");
            return None;
        }
    };
    let n = next_boot(&previous);
    if let Err(e) = sys.mkdir(Path::new(paths::STATE_BALLAST), 0o755) {
        log!(
            sys,
            "cannot make /state/ballast: {e}; this boot is not counted"
        );
        return None;
    }
    let line = format!("boot={n} version={version} slot={slot}\n");
    match sys.append_sync(Path::new(BOOTS), line.as_bytes()) {
        Ok(()) => {
            log!(sys, "boot {n} on this state partition");
            Some(n)
        }
        Err(e) => {
            log!(
                sys,
                "cannot append to {BOOTS}: {e}; this boot is not counted"
            );
            None
        }
    }
}

/// Mounts cgroup v2 on `/sys/fs/cgroup` (sysfs provides the directory) so
/// sysd can give containers their limits. Failure is logged; sysd then says
/// which limits it cannot apply.
pub fn mount_cgroup2(sys: &mut impl Sys) {
    if let Ok(true) = sys.is_mountpoint(Path::new(CGROUP)) {
        return;
    }
    let args = crate::sys::MountArgs {
        source: std::borrow::Cow::Borrowed("cgroup2"),
        target: CGROUP,
        fstype: "cgroup2",
        flags: rustix::mount::MountFlags::NOSUID
            .union(rustix::mount::MountFlags::NODEV)
            .union(rustix::mount::MountFlags::NOEXEC),
        data: None,
    };
    if let Err(e) = sys.mount(&args) {
        log!(
            sys,
            "cannot mount cgroup2 on {CGROUP}: {e}; containers run without resource limits (the kernel needs CONFIG_CGROUPS and the root a /sys)"
        );
    }
}

/// Runs stage 2 to its end (idle, or power-off/reboot when debugging).
pub fn boot(sys: &mut impl Sys) -> Ending {
    // Stage 1 moved /proc, /sys, /dev and /run here; mount what is missing
    // (a root booted without our initramfs).
    if let Err(e) = stage1::mount_pseudo_filesystems(sys, false) {
        log!(sys, "stage 2: {e}");
    }
    let cmdline = sys
        .read_file(Path::new(paths::CMDLINE))
        .map(|t| Cmdline::parse(&String::from_utf8_lossy(&t)))
        .unwrap_or_default();
    let slot = match (cmdline.slot(), cmdline.live(), cmdline.root_url()) {
        (Some(slot), _, _) => slot,
        (None, Some(_), _) => "live",
        (None, None, Some(_)) => "net",
        (None, None, None) => "?",
    }
    .to_string();
    let version = stage1::version(sys);
    log!(sys, "stage 2 on slot {slot} (root verified, read-only)");
    let boot = count_boot(sys, &version, &slot);
    let debug = match cmdline.debug() {
        Ok(Some(DebugAction::PowerOff)) => Some(Shutdown::PowerOff),
        Ok(Some(DebugAction::Reboot)) => Some(Shutdown::Reboot),
        Ok(None) => None,
        Err(bad) => {
            log!(sys, "{bad}");
            None
        }
    };
    let watchdog_off = cmdline.watchdog_off().unwrap_or_else(|bad| {
        log!(sys, "{bad}");
        false
    });
    mount_cgroup2(sys);
    let state = boot.is_some();
    children::run(
        sys,
        children::Config {
            debug,
            boot,
            state,
            watchdog_off,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn boots_are_numbered_from_the_file() {
        assert_eq!(next_boot(""), 1);
        assert_eq!(next_boot("boot=1 version=0.1.0 slot=a\n"), 2);
        assert_eq!(
            next_boot("boot=1 version=0.1.0 slot=a\nboot=2 version=0.1.0 slot=b\ngarbage\n"),
            3
        );
        // A torn last line (power cut mid-write) does not reset the count.
        assert_eq!(next_boot("boot=7 version=1 slot=a\nboot="), 8);
    }

    use crate::testsys::{Action, TestSys};

    fn real_root(cmdline: &str) -> TestSys {
        let mut sys = TestSys::booted_with(cmdline);
        // Stage 1 moved these here.
        for m in ["/proc", "/sys", "/dev", "/dev/pts", "/run", "/state"] {
            sys.mounted.insert(m.into());
        }
        sys
    }

    #[test]
    fn first_and_second_boot_are_counted_on_state() {
        let mut sys = real_root("ballast.slot=a ballast.debug=poweroff");
        assert_eq!(boot(&mut sys), Ending::Shutdown(Shutdown::PowerOff));
        let messages = sys.messages();
        assert!(
            messages.contains(&"stage 2 on slot a (root verified, read-only)"),
            "{messages:?}"
        );
        assert!(
            messages.contains(&"boot 1 on this state partition"),
            "{messages:?}"
        );
        assert_eq!(
            sys.files
                .get(Path::new(BOOTS))
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            Some("boot=1 version=0.1.0 slot=a\n".to_string())
        );
        // cgroup v2 is there for sysd.
        assert!(sys.actions.contains(&Action::Mount {
            fstype: "cgroup2".into(),
            target: "/sys/fs/cgroup".into()
        }));
        // Power-off came after state was made read-only.
        let ro = sys
            .actions
            .iter()
            .position(|a| *a == Action::RemountRo("/state".into()));
        let off = sys
            .actions
            .iter()
            .position(|a| *a == Action::Reboot(Shutdown::PowerOff));
        assert!(ro.is_some() && ro < off, "{:?}", sys.actions);

        let mut second = real_root("ballast.slot=b ballast.debug=poweroff");
        second
            .files
            .insert(PathBuf::from(BOOTS), sys.files[Path::new(BOOTS)].clone());
        boot(&mut second);
        assert!(second
            .messages()
            .contains(&"boot 2 on this state partition"));
        assert_eq!(
            String::from_utf8_lossy(&second.files[Path::new(BOOTS)]),
            "boot=1 version=0.1.0 slot=a\nboot=2 version=0.1.0 slot=b\n"
        );
    }

    #[test]
    fn without_state_the_boot_is_not_counted_and_pid_1_waits_for_a_signal() {
        let mut sys = real_root("ballast.slot=a");
        sys.mounted.remove("/state");
        sys.signals
            .push_back((3_600_000_000, crate::sys::Signal::Term));
        assert_eq!(boot(&mut sys), Ending::Shutdown(Shutdown::PowerOff));
        assert!(sys
            .messages()
            .contains(&"no state partition on /state: this boot is not counted"));
        // It waited the hour for the signal, then nothing was written.
        assert!(sys.clock_us.get() >= 3_600_000_000);
        assert!(!sys
            .actions
            .iter()
            .any(|a| matches!(a, Action::Append { .. } | Action::RemountRo(_))));
    }

    #[test]
    fn a_failed_append_is_logged_and_the_boot_goes_on() {
        let mut sys = real_root("ballast.slot=a");
        sys.fail.insert("append_sync", rustix::io::Errno::NOSPC);
        sys.signals.push_back((5_000_000, crate::sys::Signal::Int));
        assert_eq!(boot(&mut sys), Ending::Shutdown(Shutdown::Reboot));
        assert!(sys
            .messages()
            .iter()
            .any(|m| m.starts_with("cannot append to /state/ballast/boots: ")));
    }
}
