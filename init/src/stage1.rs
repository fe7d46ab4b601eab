//! Stage 1, in order: banner, pseudo filesystems, command line, modules, end.
//!
//! [`boot`] is the whole stage and its top-level error handler: it never
//! panics and never returns an error. A failure is logged with what to do and
//! then, like success, ends in idling, or in power-off / reboot when
//! `ballast.debug=` asks (so tests end). Later stages (verity root, overlays,
//! switch_root) will slot in between modules and the end.

use std::borrow::Cow;
use std::io;
use std::path::Path;
use std::time::Duration;

use rustix::io::Errno;
use rustix::mount::MountFlags;

use crate::log;
use crate::modules::{ModulesLoad, ModulesLoadError, MODULES_LOAD};
use crate::root;
use crate::sys::{ModuleError, MountArgs, Shutdown, Sys};
use ballast_device::cmdline::{keys, Cmdline, DebugAction};
use ballast_device::{os_release, paths};

/// The architecture name in the banner.
pub const ARCH: &str = if cfg!(target_arch = "x86_64") {
    "x86_64"
} else if cfg!(target_arch = "aarch64") {
    "arm64"
} else if cfg!(target_arch = "arm") {
    "armv7"
} else {
    "unknown"
};

pub use ballast_device::paths::OS_RELEASE;

/// The pseudo filesystems, in mount order. `required: false` ones only warn.
struct PseudoFs {
    args: MountArgs,
    required: bool,
}

const MOUNTS: [PseudoFs; 5] = [
    PseudoFs {
        args: MountArgs {
            source: Cow::Borrowed("proc"),
            target: "/proc",
            fstype: "proc",
            flags: MountFlags::NOSUID
                .union(MountFlags::NODEV)
                .union(MountFlags::NOEXEC),
            data: None,
        },
        required: true,
    },
    PseudoFs {
        args: MountArgs {
            source: Cow::Borrowed("sysfs"),
            target: "/sys",
            fstype: "sysfs",
            flags: MountFlags::NOSUID
                .union(MountFlags::NODEV)
                .union(MountFlags::NOEXEC),
            data: None,
        },
        required: true,
    },
    PseudoFs {
        args: MountArgs {
            source: Cow::Borrowed("devtmpfs"),
            target: "/dev",
            fstype: "devtmpfs",
            flags: MountFlags::NOSUID,
            data: Some(c"mode=0755"),
        },
        required: true,
    },
    PseudoFs {
        args: MountArgs {
            source: Cow::Borrowed("devpts"),
            target: "/dev/pts",
            fstype: "devpts",
            flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
            data: Some(c"gid=5,mode=0620,ptmxmode=0666"),
        },
        required: false,
    },
    PseudoFs {
        args: MountArgs {
            source: Cow::Borrowed("tmpfs"),
            target: "/run",
            fstype: "tmpfs",
            flags: MountFlags::NOSUID.union(MountFlags::NODEV),
            data: Some(c"mode=0755"),
        },
        required: true,
    },
];

/// A failure that stops stage 1.
#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    #[error("cannot mount {fstype} on {target}: {errno}; the kernel needs {fstype} support (built in) and the initramfs the {target} directory")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        errno: Errno,
    },
    #[error("cannot read /proc/cmdline: {0}; is /proc mounted?")]
    Cmdline(io::Error),
    #[error("cannot read {MODULES_LOAD}: {0}")]
    ReadModulesLoad(io::Error),
    #[error(transparent)]
    ModulesLoad(#[from] ModulesLoadError),
    #[error("{MODULES_LOAD} lists modules for kernel {built}, but kernel {running} is running; rebuild the initramfs with the kernel it boots")]
    KernelMismatch { built: String, running: String },
}

/// Where stage 1 ended, for the caller (and tests). Real power-off and
/// reboot never come back; `Shutdown` is returned only if the call returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Idle,
    /// Stage 2 was exec'd on the new root (only returns under test).
    SwitchedRoot,
    Shutdown(Shutdown),
}

/// What module loading did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModuleReport {
    pub listed: usize,
    pub loaded: usize,
    pub already: usize,
    pub failed: usize,
    pub took: Duration,
}

/// `VERSION_ID` of this image's os-release, or `unknown` (the banner and the boots
/// file must be written even on a broken image; the reader names what is wrong to
/// sysd, which reports it).
pub fn version(sys: &mut impl Sys) -> String {
    sys.read_file(Path::new(OS_RELEASE))
        .ok()
        .and_then(|bytes| {
            os_release::version(Path::new(OS_RELEASE), &String::from_utf8_lossy(&bytes)).ok()
        })
        .map_or_else(|| "unknown".to_string(), |v| v.to_string())
}

/// The exact first console line.
pub fn banner(sys: &mut impl Sys) -> String {
    format!("ballast-init version={} arch={ARCH}", version(sys))
}

/// Runs stage 1 to its end. `console_note` is what setting up the console had
/// to do; it is logged right after the banner.
pub fn boot(sys: &mut impl Sys, console_note: Option<String>) -> Ending {
    let line = banner(sys);
    sys.write_console(&line);
    if let Some(note) = console_note {
        log!(sys, "{note}");
    }
    let mut cmdline = None;
    let result = run(sys, &mut cmdline);
    if cmdline.is_none() {
        // Stage 1 failed before reading the command line; /proc may still be
        // there, and ballast.debug=poweroff must end a failing test boot too.
        cmdline = sys
            .read_file(Path::new(paths::CMDLINE))
            .ok()
            .map(|text| Cmdline::parse(&String::from_utf8_lossy(&text)));
    }
    if let Some(net_cmdline) = cmdline.as_ref().filter(|c| c.has(keys::ROOT)) {
        // A network boot (`ballast netboot`): the root over HTTP into RAM.
        let net_cmdline = net_cmdline.clone();
        return match result {
            Ok(()) => {
                log!(sys, "stage 1 complete; fetching the root over the network");
                crate::netboot::boot_net(sys, &mut crate::netboot::LinuxNet, &net_cmdline)
            }
            Err(e) => root::refuse(sys, "net", &root::RootError::Stage1(e)),
        };
    }
    if let Some(live_cmdline) = cmdline.as_ref().filter(|c| c.has(keys::LIVE)) {
        // The live ISO's boot entry: its medium's verified root, state in RAM.
        let live_cmdline = live_cmdline.clone();
        return match result {
            Ok(()) => {
                log!(sys, "stage 1 complete; booting live from the medium");
                crate::live::boot_live(sys, &live_cmdline)
            }
            Err(e) => root::refuse(sys, "live", &root::RootError::Stage1(e)),
        };
    }
    if let Some(slot_cmdline) = cmdline.as_ref().filter(|c| c.has(keys::SLOT)) {
        // A slot's boot entry: go on to its verified root, or refuse the slot.
        let slot_cmdline = slot_cmdline.clone();
        return match result {
            Ok(()) => {
                log!(
                    sys,
                    "stage 1 complete; mounting the root of slot {}",
                    slot_cmdline.get("ballast.slot").unwrap_or("?")
                );
                root::boot_slot(sys, &slot_cmdline)
            }
            Err(e) => root::refuse(
                sys,
                slot_cmdline.get("ballast.slot").unwrap_or("?"),
                &root::RootError::Stage1(e),
            ),
        };
    }
    let debug = match cmdline.as_ref().map(Cmdline::debug) {
        Some(Ok(debug)) => debug,
        Some(Err(bad)) => {
            log!(sys, "{bad}");
            None
        }
        None => None,
    };
    match (&result, debug) {
        (Ok(()), Some(_)) => log!(sys, "stage 1 complete"),
        (Ok(()), None) => log!(
            sys,
            "stage 1 complete; no ballast.slot= on the kernel command line, so no root to switch to: idling"
        ),
        (Err(e), _) => log!(sys, "error: {e}"),
    }
    let how = match debug {
        Some(DebugAction::PowerOff) => Shutdown::PowerOff,
        Some(DebugAction::Reboot) => Shutdown::Reboot,
        None => {
            if result.is_err() {
                log!(sys, "stage 1 failed; idling (PID 1 must not exit)");
            }
            return Ending::Idle;
        }
    };
    if result.is_err() {
        log!(
            sys,
            "stage 1 failed; ballast.debug={} asked: doing it",
            debug_name(how)
        );
    }
    sys.sync();
    match sys.reboot(how) {
        Ok(()) => Ending::Shutdown(how),
        Err(e) => {
            log!(sys, "reboot({}) failed: {e}; idling", debug_name(how));
            Ending::Idle
        }
    }
}

fn debug_name(how: Shutdown) -> &'static str {
    match how {
        Shutdown::PowerOff => "poweroff",
        Shutdown::Reboot => "reboot",
        Shutdown::Halt => "halt",
    }
}

fn run(sys: &mut impl Sys, cmdline: &mut Option<Cmdline>) -> Result<(), Stage1Error> {
    mount_pseudo_filesystems(sys, true)?;
    let text = sys
        .read_file(Path::new(paths::CMDLINE))
        .map_err(Stage1Error::Cmdline)?;
    let parsed = Cmdline::parse(&String::from_utf8_lossy(&text));
    log!(
        sys,
        "cmdline: {}",
        String::from_utf8_lossy(&text).trim_end()
    );
    *cmdline = Some(parsed);
    load_modules(sys)?;
    Ok(())
}

/// `say_already`: log the ones found mounted (stage 1; in stage 2 they all are).
pub(crate) fn mount_pseudo_filesystems(
    sys: &mut impl Sys,
    say_already: bool,
) -> Result<(), Stage1Error> {
    for fs in &MOUNTS {
        let args = &fs.args;
        match mount_one(sys, args) {
            Ok(true) => {}
            Ok(false) if say_already => log!(sys, "{} already mounted", args.target),
            Ok(false) => {}
            Err(errno) if fs.required => {
                return Err(Stage1Error::Mount {
                    fstype: args.fstype,
                    target: args.target,
                    errno,
                })
            }
            Err(errno) => log!(
                sys,
                "warning: cannot mount {} on {}: {errno}; continuing without it",
                args.fstype,
                args.target
            ),
        }
    }
    Ok(())
}

/// Mounts unless something is mounted there already. `Ok(false)`: it was.
fn mount_one(sys: &mut impl Sys, args: &MountArgs) -> Result<bool, Errno> {
    let target = Path::new(args.target);
    sys.mkdir(target, 0o755)?;
    if sys.is_mountpoint(target)? {
        return Ok(false);
    }
    match sys.mount(args) {
        Ok(()) => Ok(true),
        // devtmpfs auto-mounted by the kernel (CONFIG_DEVTMPFS_MOUNT).
        Err(Errno::BUSY) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Loads the modules of `modules.load` that come before its `# beside` line,
/// and starts loading the rest beside what follows ([`finish_beside`] waits
/// for them). A failing module is logged and skipped so the console shows
/// every problem in one boot.
pub fn load_modules(sys: &mut impl Sys) -> Result<ModuleReport, Stage1Error> {
    let text = match sys.read_file(Path::new(MODULES_LOAD)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log!(sys, "no {MODULES_LOAD}: loading no modules");
            return Ok(ModuleReport::default());
        }
        Err(e) => return Err(Stage1Error::ReadModulesLoad(e)),
    };
    let list = ModulesLoad::parse(&String::from_utf8_lossy(&text))?;
    let running = sys.kernel_release();
    if list.kver != running {
        return Err(Stage1Error::KernelMismatch {
            built: list.kver,
            running,
        });
    }
    let start = sys.now();
    let mut report = ModuleReport {
        listed: list.waves.iter().flatten().count(),
        ..ModuleReport::default()
    };
    // Wave by wave: a wave's modules need only earlier waves', so the
    // modules of one wave load together.
    for wave in &list.waves {
        let paths: Vec<std::path::PathBuf> = wave.iter().map(|m| list.full_path(m)).collect();
        let results = sys.finit_modules(&paths);
        for (module, result) in wave.iter().zip(results) {
            report.count(sys, module, result);
        }
    }
    report.took = sys.now().saturating_sub(start);
    let beside = list.beside.iter().flatten().count();
    let also = if beside > 0 {
        format!("; {beside} more loading beside the search for the root")
    } else {
        String::new()
    };
    log!(
        sys,
        "modules: {} loaded, {} already present, {} failed, of {} listed in {:.1} ms{also}",
        report.loaded,
        report.already,
        report.failed,
        report.listed,
        report.took.as_secs_f64() * 1000.0
    );
    if beside > 0 {
        let waves = list
            .beside
            .iter()
            .map(|w| w.iter().map(|m| list.full_path(m)).collect())
            .collect();
        sys.begin_modules(waves);
    }
    Ok(report)
}

impl ModuleReport {
    fn count(&mut self, sys: &mut impl Sys, module: &Path, result: Result<(), ModuleError>) {
        match result {
            Ok(()) => self.loaded += 1,
            Err(ModuleError::Load(Errno::EXIST)) => self.already += 1,
            Err(e) => {
                self.failed += 1;
                log!(sys, "module {}: {e}; continuing", module.display());
            }
        }
    }
}

/// Waits for the modules [`load_modules`] started beside stage 1 (the boot
/// media's: CD, USB, SATA, loop), and says how they went. Before a live
/// root's search and a network root's loop device, which need them, and
/// before the switch to the root, which frees the initramfs they are read
/// from.
pub fn finish_beside(sys: &mut impl Sys) {
    let start = sys.now();
    let results = sys.finish_modules();
    if results.is_empty() {
        return;
    }
    let waited = sys.now().saturating_sub(start);
    let mut report = ModuleReport {
        listed: results.len(),
        ..ModuleReport::default()
    };
    for (module, result) in results {
        report.count(sys, &module, result);
    }
    log!(
        sys,
        "modules beside: {} loaded, {} already present, {} failed, of {} listed (waited {:.1} ms for them)",
        report.loaded,
        report.already,
        report.failed,
        report.listed,
        waited.as_secs_f64() * 1000.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsys::{Action, TestSys};
    use std::path::PathBuf;

    const KO: &str = "/lib/modules/6.1.0-28-amd64/kernel/drivers";

    fn with_modules(cmdline: &str) -> TestSys {
        let mut sys = TestSys::booted_with(cmdline);
        sys.file(
            MODULES_LOAD,
            "# kver=6.1.0-28-amd64\nkernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/block/virtio_blk.ko\nkernel/drivers/md/dm-verity.ko\n",
        );
        sys
    }

    #[test]
    fn banner_is_the_first_console_line_and_exact() {
        let mut sys = with_modules("console=ttyS0");
        boot(&mut sys, Some("fds 0-2 were not the console".into()));
        assert_eq!(
            sys.actions[0],
            Action::Console(format!("ballast-init version=0.1.0 arch={ARCH}"))
        );
        assert!(sys.console()[1].ends_with("ballast-init: fds 0-2 were not the console"));
    }

    #[test]
    fn banner_says_unknown_without_os_release() {
        let mut sys = TestSys::booted_with("");
        sys.files.remove(Path::new(OS_RELEASE));
        assert_eq!(
            banner(&mut sys),
            format!("ballast-init version=unknown arch={ARCH}")
        );
        sys.file(OS_RELEASE, "NAME=\"Ballast\"\nVERSION_ID=\"1.2.3\"\n");
        assert_eq!(
            banner(&mut sys),
            format!("ballast-init version=1.2.3 arch={ARCH}")
        );
    }

    #[test]
    fn mounts_then_modules_in_order_then_poweroff() {
        let mut sys = with_modules("console=ttyS0 ballast.debug=poweroff");
        let ending = boot(&mut sys, None);
        assert_eq!(ending, Ending::Shutdown(Shutdown::PowerOff));
        let order: Vec<&Action> = sys
            .actions
            .iter()
            .filter(|a| !matches!(a, Action::Console(_) | Action::Mkdir(_)))
            .collect();
        let mount = |fstype: &str, target: &str| Action::Mount {
            fstype: fstype.into(),
            target: target.into(),
        };
        assert_eq!(
            order,
            [
                &mount("proc", "/proc"),
                &mount("sysfs", "/sys"),
                &mount("devtmpfs", "/dev"),
                &mount("devpts", "/dev/pts"),
                &mount("tmpfs", "/run"),
                &Action::Module(format!("{KO}/virtio/virtio_ring.ko")),
                &Action::Module(format!("{KO}/block/virtio_blk.ko")),
                &Action::Module(format!("{KO}/md/dm-verity.ko")),
                &Action::Sync,
                &Action::Reboot(Shutdown::PowerOff),
            ]
        );
        let messages = sys.messages();
        assert!(messages.contains(&"stage 1 complete"), "{messages:?}");
        assert!(messages
            .iter()
            .any(|m| m.starts_with("modules: 3 loaded, 0 already present, 0 failed, of 3")));
    }

    #[test]
    fn reboot_asks_for_a_restart() {
        let mut sys = with_modules("ballast.debug=reboot");
        assert_eq!(boot(&mut sys, None), Ending::Shutdown(Shutdown::Reboot));
        assert_eq!(sys.actions.last(), Some(&Action::Reboot(Shutdown::Reboot)));
    }

    #[test]
    fn without_debug_it_idles_and_says_why() {
        let mut sys = with_modules("console=ttyS0");
        assert_eq!(boot(&mut sys, None), Ending::Idle);
        assert!(!sys.actions.iter().any(|a| matches!(a, Action::Reboot(_))));
        assert_eq!(
            sys.messages().last(),
            Some(&"stage 1 complete; no ballast.slot= on the kernel command line, so no root to switch to: idling")
        );
    }

    #[test]
    fn a_failing_module_is_logged_and_the_rest_still_load() {
        let mut sys = with_modules("ballast.debug=poweroff");
        sys.module_errors.insert(
            PathBuf::from(format!("{KO}/virtio/virtio_ring.ko")),
            ModuleError::Load(Errno::NOEXEC),
        );
        sys.module_errors.insert(
            PathBuf::from(format!("{KO}/block/virtio_blk.ko")),
            ModuleError::Load(Errno::EXIST),
        );
        assert_eq!(boot(&mut sys, None), Ending::Shutdown(Shutdown::PowerOff));
        let modules = sys
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Module(_)))
            .count();
        assert_eq!(modules, 3);
        let messages = sys.messages();
        let failure = messages
            .iter()
            .find(|m| {
                m.starts_with("module kernel/drivers/virtio/virtio_ring.ko: finit_module failed: ")
            })
            .unwrap_or_else(|| panic!("no failure line in {messages:?}"));
        assert!(failure.contains("os error 8"), "{failure}");
        assert!(failure.contains("uncompressed .ko"), "{failure}");
        assert!(messages
            .iter()
            .any(|m| m.starts_with("modules: 1 loaded, 1 already present, 1 failed, of 3")));
        assert!(messages.contains(&"stage 1 complete"));
    }

    #[test]
    fn already_mounted_targets_are_not_remounted() {
        let mut sys = with_modules("");
        sys.mounted.insert("/dev".into());
        sys.mount_errors.insert("/run".into(), Errno::BUSY);
        boot(&mut sys, None);
        assert!(!sys
            .actions
            .iter()
            .any(|a| matches!(a, Action::Mount { target, .. } if target == "/dev")));
        let messages = sys.messages();
        assert!(messages.contains(&"/dev already mounted"));
        assert!(messages.contains(&"/run already mounted"));
        assert!(messages.iter().any(|m| m.starts_with("stage 1 complete;")));
    }

    #[test]
    fn a_failed_required_mount_is_reported_and_poweroff_still_happens() {
        let mut sys = with_modules("ballast.debug=poweroff");
        sys.mount_errors.insert("/sys".into(), Errno::NODEV);
        assert_eq!(boot(&mut sys, None), Ending::Shutdown(Shutdown::PowerOff));
        let messages = sys.messages();
        let error = messages
            .iter()
            .find(|m| m.starts_with("error: cannot mount sysfs on /sys: "))
            .unwrap_or_else(|| panic!("{messages:?}"));
        assert!(error.contains("sysfs support"), "{error}");
        assert!(!messages.contains(&"stage 1 complete"));
        assert!(!sys.actions.iter().any(|a| matches!(a, Action::Module(_))));
    }

    #[test]
    fn an_optional_mount_failure_only_warns() {
        let mut sys = with_modules("ballast.debug=poweroff");
        sys.mount_errors.insert("/dev/pts".into(), Errno::NODEV);
        boot(&mut sys, None);
        let messages = sys.messages();
        assert!(messages
            .iter()
            .any(|m| m.starts_with("warning: cannot mount devpts on /dev/pts")));
        assert!(messages.contains(&"stage 1 complete"));
    }

    #[test]
    fn modules_for_another_kernel_stop_stage_1_with_both_versions() {
        let mut sys = with_modules("");
        sys.release = "6.1.0-30-amd64".into();
        assert_eq!(boot(&mut sys, None), Ending::Idle);
        let messages = sys.messages();
        let error = messages
            .iter()
            .find(|m| m.starts_with("error: "))
            .unwrap_or_else(|| panic!("{messages:?}"));
        assert!(
            error.contains("6.1.0-28-amd64") && error.contains("6.1.0-30-amd64"),
            "{error}"
        );
        assert_eq!(
            messages.last(),
            Some(&"stage 1 failed; idling (PID 1 must not exit)")
        );
    }

    #[test]
    fn no_modules_load_means_no_modules() {
        let mut sys = TestSys::booted_with("ballast.debug=poweroff");
        boot(&mut sys, None);
        assert!(sys
            .messages()
            .contains(&"no /etc/ballast/modules.load: loading no modules"));
        assert!(sys.messages().contains(&"stage 1 complete"));
    }

    #[test]
    fn an_unknown_debug_value_is_logged_and_stage_1_idles() {
        let mut sys = with_modules("ballast.debug=halt");
        assert_eq!(boot(&mut sys, None), Ending::Idle);
        assert!(sys
            .messages()
            .iter()
            .any(|m| m.contains("\"halt\" is not understood")));
    }

    #[test]
    fn stamps_are_monotonic() {
        let mut sys = with_modules("");
        boot(&mut sys, None);
        let stamps: Vec<f64> = sys.console()[1..]
            .iter()
            .map(|l| {
                l[1..l.find(']').unwrap_or(1)]
                    .trim()
                    .parse::<f64>()
                    .unwrap_or(-1.0)
            })
            .collect();
        assert!(
            stamps.windows(2).all(|w| w[0] <= w[1] && w[0] > 0.0),
            "{stamps:?}"
        );
    }
}
