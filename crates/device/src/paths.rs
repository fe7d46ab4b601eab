//! Every well-known path on a running Ballast device, absolute, in one table.
//!
//! The builder lays the image out to match; init, sysd and osctl read and write
//! them. A path changes here or nowhere. Code that runs under another root (the
//! builder's tree, `sysd --root DIR` in tests) places a path with [`under`].
//!
//! This module only names paths; it never touches the file system.

use std::path::{Path, PathBuf};

/// Who the machine is (see [`crate::os_release`]); `/etc/os-release` links here.
pub const OS_RELEASE: &str = "/usr/lib/os-release";
/// The symlink to [`OS_RELEASE`] other tools expect.
pub const ETC_OS_RELEASE: &str = "/etc/os-release";
/// The kernel command line (see [`crate::cmdline`]).
pub const CMDLINE: &str = "/proc/cmdline";
/// The running kernel's host name.
pub const HOSTNAME: &str = "/proc/sys/kernel/hostname";

/// PID 1 on the root (stage 2); a link to [`INIT`].
pub const STAGE2: &str = "/sbin/init";
/// PID 1's binary on the root.
pub const INIT: &str = "/usr/lib/ballast/init";
/// The system-container supervisor PID 1 starts.
pub const SYSD: &str = "/usr/lib/ballast/sysd";
/// The image's system container definitions.
pub const SYSTEM_DIR: &str = "/usr/lib/ballast/system";
/// Files the system containers load on their way to healthy, one path per
/// line relative to `/` (written by the builder): sysd reads them ahead.
pub const READ_AHEAD: &str = "/usr/lib/ballast/read-ahead";
/// Public keys update bundles must be signed with (baked in by the builder).
pub const KEYS_DIR: &str = "/usr/lib/ballast/keys";
/// Kernel modules stage 1 loads, in the initramfs.
pub const MODULES_LOAD: &str = "/etc/ballast/modules.load";

/// sysd's control socket (osctl talks to it).
pub const SOCKET: &str = "/run/ballast/sysd.sock";
/// Written by sysd with the `ballast-ready` line once the slot is marked good.
pub const READY: &str = "/run/ballast/ready";

/// The boot partition's mount point.
pub const BOOT: &str = "/boot";
/// The state partition's mount point.
pub const STATE: &str = "/state";
/// Ballast's own directory on the state partition.
pub const STATE_BALLAST: &str = "/state/ballast";
/// One line per boot, written by PID 1.
pub const BOOTS: &str = "/state/ballast/boots";
/// PID 1's log of the previous boots.
pub const INIT_LOG: &str = "/state/ballast/init.log";
/// The system containers' logs.
pub const LOGS: &str = "/state/ballast/logs";
/// Pending update, last rollback, last health failure.
pub const UPDATE_RECORDS: &str = "/state/ballast/update";
/// The machine's stable id (the update agent's wave place and lock holder name).
pub const MACHINE_ID: &str = "/state/ballast/machine-id";
/// What the applied first-boot config keeps.
pub const CONFIG_DIR: &str = "/state/ballast/config";
/// System containers the applied first-boot config adds.
pub const APPLIED_SYSTEM: &str = "/state/ballast/config/system";
/// Update keys the first-boot config adds (`ballast.update.trusted_keys`).
pub const CONFIG_KEYS_DIR: &str = "/state/ballast/config/keys";
/// The update channel a first-boot config chose (`ballast.update.channel`), one URL.
pub const CHANNEL_FILE: &str = "/state/ballast/config/update-channel";

/// Zone data: the root's, then the admin userland's.
pub const ZONEINFO: [&str; 2] = [
    "/usr/share/zoneinfo",
    "/usr/lib/ballast/userland/usr/share/zoneinfo",
];

/// The cgroup2 hierarchy.
pub const CGROUP: &str = "/sys/fs/cgroup";
/// sysd's heartbeat: its `CLOCK_MONOTONIC` milliseconds, rewritten every few
/// seconds while its main loop turns; PID 1 stops petting the watchdog when it
/// goes stale (a hung sysd resets the machine).
pub const SYSD_ALIVE: &str = "/run/ballast/sysd.alive";
/// Hardware watchdogs, in the order PID 1 tries them.
pub const WATCHDOGS: [&str; 2] = ["/dev/watchdog0", "/dev/watchdog"];

/// Where a live system's medium (the ISO, CD or USB stick) is mounted read-only;
/// the installer reads [`MEDIUM_INSTALL_IMAGE`] under it.
pub const MEDIUM: &str = "/run/ballast/medium";
/// On the medium: the root image (squashfs + dm-verity hash tree), as in slot A.
pub const MEDIUM_ROOT_IMAGE: &str = "ballast/root.img";
/// On the medium: the board's disk image, zstd-compressed (the installer's input).
pub const MEDIUM_INSTALL_IMAGE: &str = "ballast/install.img.zst";
/// On the medium: the reserved first-boot config area ([`crate::live`]).
pub const MEDIUM_CONFIG_AREA: &str = "ballast/config.area";

/// Where stage 1 mounts the verified root before switch_root.
pub const SYSROOT: &str = "/sysroot";

/// `path` (absolute, from this table) under `root`: `under("/tmp/t", READY)` is
/// `/tmp/t/run/ballast/ready`; under `/` it is the path itself.
pub fn under(root: &Path, path: &str) -> PathBuf {
    root.join(relative(path))
}

/// `path` without its leading `/`, for archive members and trees being built.
pub fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_land_under_a_root() {
        assert_eq!(
            under(Path::new("/tmp/t"), READY),
            PathBuf::from("/tmp/t/run/ballast/ready")
        );
        assert_eq!(under(Path::new("/"), OS_RELEASE), PathBuf::from(OS_RELEASE));
        assert_eq!(relative(OS_RELEASE), "usr/lib/os-release");
    }
}
