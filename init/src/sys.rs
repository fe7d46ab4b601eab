//! The syscall seam: everything stage 1 asks of the kernel goes through [`Sys`].
//!
//! [`LinuxSys`] is the real implementation (rustix: raw syscalls, typed fds).
//! Tests use a recording double so the order of actions can be checked on a
//! development host without root. Keep logic out of this module: it only
//! translates calls.

use std::borrow::Cow;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{self, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::MountFlags;

/// One mount stage 1 performs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountArgs {
    pub source: Cow<'static, str>,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MountFlags,
    pub data: Option<&'static std::ffi::CStr>,
}

/// How to leave: the `reboot(2)` commands PID 1 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    PowerOff,
    Reboot,
    /// `RB_HALT_SYSTEM`: stop the CPUs without powering off (SIGUSR1).
    Halt,
}

impl Shutdown {
    /// The word users know it by (`ballast.debug=`, osctl, console lines).
    pub fn name(self) -> &'static str {
        match self {
            Shutdown::PowerOff => "poweroff",
            Shutdown::Reboot => "reboot",
            Shutdown::Halt => "halt",
        }
    }
}

/// The signals PID 1 of stage 2 blocks and reads synchronously
/// ([`Sys::wait_signal`]); nothing runs in a signal handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: orderly power-off (sysd sends it for `osctl poweroff`).
    Term,
    /// SIGINT: orderly reboot (`osctl reboot`, and ctrl-alt-del once
    /// `RB_DISABLE_CAD` is set).
    Int,
    /// SIGCHLD: a child (sysd, or an orphan re-parented to PID 1) exited.
    Chld,
    /// SIGHUP: logged and ignored (there is no configuration to reload).
    Hup,
    /// SIGUSR1: orderly halt.
    Usr1,
    /// SIGUSR2: orderly power-off, as busybox init does.
    Usr2,
}

/// Signals PID 1 sends (to sysd, or to every process with pid -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillSignal {
    Term,
    Kill,
}

/// How a child ended, as `waitpid` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit status {c}"),
            ExitStatus::Signal(s) => {
                let name = match s {
                    6 => " (SIGABRT)",
                    9 => " (SIGKILL)",
                    11 => " (SIGSEGV)",
                    15 => " (SIGTERM)",
                    _ => "",
                };
                write!(f, "killed by signal {s}{name}")
            }
        }
    }
}

/// What one non-blocking reap found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Children that exited, in the order `waitpid` returned them.
    pub exited: Vec<(i32, ExitStatus)>,
    /// Whether PID 1 still has children (`waitpid` did not say ECHILD). When
    /// PID 1 has no children, no user process is left on the machine: every
    /// orphan is re-parented to it.
    pub children_left: bool,
}

/// Why a module did not load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot open the module file: {0}")]
    Open(Errno),
    #[error("finit_module failed: {0}{hint}", hint = load_hint(*.0))]
    Load(Errno),
}

/// What a `finit_module` errno usually means for a module list the builder wrote.
fn load_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::NOENT => " (unknown symbols, see the kernel lines above: a module it depends on is not loaded; list dependencies first in modules.load)",
        Errno::NOEXEC => " (not a module for this kernel: wrong kernel release, or a compressed .ko; the initramfs must carry uncompressed .ko files)",
        Errno::KEYREJECTED => " (module signature rejected: the kernel enforces signed modules; use the modules from the same kernel package)",
        // The kernel refuses a module named in `module_blacklist=` with EPERM
        // too (under QEMU's raspi3b, `ballast run` names bcm2835_wdt there).
        Errno::PERM => " (refused: the module is named in module_blacklist= on the kernel command line, or its signature was rejected: use the modules from the same kernel package)",
        _ => "",
    }
}

/// A partition table as init needs it: the disk's identity and where each
/// partition lies (512-byte sectors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartTable {
    /// The disk GUID as text (for MBR: the GUID ballast-disk derives from the
    /// 32-bit signature), compared case-insensitively.
    pub disk_guid: String,
    /// MBR: only the 32-bit disk signature (the first 4 bytes of the GUID the
    /// builder chose) identifies the disk.
    pub signature_only: bool,
    pub partitions: Vec<PartInfo>,
}

impl PartTable {
    /// Whether this is the disk `ballast.disk=` names.
    pub fn matches(&self, guid: &str) -> bool {
        if self.signature_only {
            guid.len() == 36
                && self.disk_guid.len() == 36
                && guid[..8].eq_ignore_ascii_case(&self.disk_guid[..8])
        } else {
            guid.eq_ignore_ascii_case(&self.disk_guid)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartInfo {
    pub index: u32,
    pub start_lba: u64,
    /// Inclusive.
    pub end_lba: u64,
}

/// The kernel, as stage 1 and stage 2 see it.
pub trait Sys {
    /// Time since boot on the clock printk uses (CLOCK_MONOTONIC).
    fn now(&self) -> Duration;
    /// Writes one whole line (no newline) to the console; best effort.
    fn write_console(&mut self, line: &str);
    fn read_file(&mut self, path: &Path) -> io::Result<Vec<u8>>;
    /// Whether `path` is the root of a mount (its device differs from its parent's).
    fn is_mountpoint(&mut self, path: &Path) -> Result<bool, Errno>;
    /// `mkdir`; an existing directory is success.
    fn mkdir(&mut self, path: &Path, mode: u32) -> Result<(), Errno>;
    fn mount(&mut self, args: &MountArgs) -> Result<(), Errno>;
    /// `uname -r` of the running kernel.
    fn kernel_release(&self) -> String;
    /// Opens `path` and calls `finit_module(fd, "", 0)`.
    fn finit_module(&mut self, path: &Path) -> Result<(), ModuleError>;
    /// [`Sys::finit_module`] for modules that do not depend on each other
    /// (one wave of `modules.load`), in any order; the results in `paths`'
    /// order. The real one loads them on several threads.
    fn finit_modules(&mut self, paths: &[PathBuf]) -> Vec<Result<(), ModuleError>> {
        paths.iter().map(|p| self.finit_module(p)).collect()
    }
    /// Starts loading `waves` beside the caller: each wave as
    /// [`Sys::finit_modules`] does, one wave after another. The real one
    /// loads them on a thread of their own.
    fn begin_modules(&mut self, waves: Vec<Vec<PathBuf>>);
    /// Waits for the modules [`Sys::begin_modules`] started: each module's
    /// result, in their order (none when nothing was started).
    fn finish_modules(&mut self) -> Vec<(PathBuf, Result<(), ModuleError>)>;
    fn sync(&mut self);
    /// `reboot(2)`; on success the real call does not return.
    fn reboot(&mut self, how: Shutdown) -> Result<(), Errno>;

    fn sleep(&mut self, how_long: Duration);
    /// Names in a directory (no `.`/`..`), sorted.
    fn list_dir(&mut self, path: &Path) -> Result<Vec<String>, Errno>;
    fn exists(&mut self, path: &Path) -> bool;
    /// `mknod` of a character device node, mode 0600.
    fn mknod_char(&mut self, path: &Path, major: u32, minor: u32) -> Result<(), Errno>;
    /// One ioctl on `/dev/mapper/control`; `buf` is the whole `dm_ioctl`
    /// buffer, replaced in place by the kernel's reply.
    fn dm_ioctl(&mut self, cmd: crate::dm::Command, buf: &mut [u8]) -> Result<(), Errno>;
    /// Attaches `file` read-only to a free loop device (`LOOP_CTL_GET_FREE`,
    /// `LOOP_SET_FD`) and returns the device's path (`/dev/loopN`).
    fn loop_attach(&mut self, file: &Path) -> Result<PathBuf, Errno>;
    /// Reads the GPT or MBR of a whole-disk device (ballast-disk).
    fn read_partition_table(&mut self, disk: &Path) -> Result<PartTable, String>;
    /// Grows partition `index` (the last one) to the end of the disk, in the
    /// table on disk only (ballast-disk). `Ok(None)`: it fills the disk already.
    fn grow_last_partition(&mut self, disk: &Path, index: u32) -> Result<Option<PartInfo>, String>;
    /// `BLKPG_RESIZE_PARTITION` on the whole disk, in bytes: tells the
    /// kernel a partition's new size while other partitions are in use.
    fn blkpg_resize(
        &mut self,
        disk: &Path,
        index: u32,
        start: u64,
        length: u64,
    ) -> Result<(), Errno>;
    /// `BLKGETSIZE64`.
    fn device_bytes(&mut self, dev: &Path) -> Result<u64, Errno>;
    /// Reads `len` bytes at `offset` of a file or device.
    fn read_at(&mut self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// `statfs`: (free, total) bytes of the filesystem mounted at `path`.
    fn statfs(&mut self, path: &Path) -> Result<(u64, u64), Errno>;
    /// `EXT4_IOC_RESIZE_FS` on the mounted filesystem at `mountpoint`.
    fn ext4_resize(&mut self, mountpoint: &Path, blocks: u64) -> Result<(), Errno>;
    fn bind_mount(&mut self, from: &Path, to: &Path) -> Result<(), Errno>;
    /// `mount --move`.
    fn move_mount(&mut self, from: &Path, to: &Path) -> Result<(), Errno>;
    fn remount_ro(&mut self, target: &Path) -> Result<(), Errno>;
    fn unmount(&mut self, target: &Path) -> Result<(), Errno>;
    fn chdir(&mut self, path: &Path) -> Result<(), Errno>;
    fn chroot(&mut self, path: &Path) -> Result<(), Errno>;
    /// Removes the initramfs' own files under `/` without crossing into other
    /// mounts; returns how many entries went. Best effort.
    fn free_initramfs(&mut self) -> u64;
    /// `execv`; the real call returns only on failure.
    fn exec(&mut self, path: &Path, argv: &[&str]) -> io::Result<()>;
    /// Appends `bytes` to `path` (created 0644) and fsyncs file and directory.
    fn append_sync(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()>;

    /// `reboot(RB_DISABLE_CAD)` (ctrl-alt-del then sends SIGINT to PID 1) and
    /// blocks every [`Signal`] so [`Sys::wait_signal`] can read them.
    fn setup_signals(&mut self) -> Result<(), Errno>;
    /// Waits up to `timeout` for one of the blocked signals (`sigtimedwait`).
    /// `None`: the time passed (or the wait was interrupted).
    fn wait_signal(&mut self, timeout: Duration) -> Option<Signal>;
    /// Starts `path` with `argv` (argv\[0\] first) in `/`, stdio inherited
    /// (the console), an empty signal mask; returns its pid. Never waits for it.
    fn spawn(&mut self, path: &Path, argv: &[&str]) -> io::Result<i32> {
        self.spawn_in(Path::new("/"), path, argv)
    }
    /// [`Sys::spawn`] with `cwd` as the child's working directory, entered
    /// before this returns (so the child keeps it when `cwd`'s mount moves).
    fn spawn_in(&mut self, cwd: &Path, path: &Path, argv: &[&str]) -> io::Result<i32>;
    /// Runs `path` with `argv` (argv\[0\] first) to its end and returns its
    /// exit code (`None`: killed by a signal) and what it printed (stdout, then
    /// stderr). Stage 1 only: in stage 2 PID 1 reaps every child itself.
    fn run_to_end(&mut self, path: &Path, argv: &[&str]) -> io::Result<(Option<i32>, String)>;
    /// `waitpid(-1, WNOHANG)` until nothing more is ready.
    fn reap(&mut self) -> Reaped;
    /// `kill(pid, sig)`; pid -1 is every process but PID 1 (and kernel threads).
    fn kill(&mut self, pid: i32, sig: KillSignal) -> Result<(), Errno>;
    /// Opens a watchdog device and keeps its fd (never closed: closing could
    /// disarm it, and PID 1 ending means a kernel panic anyway).
    fn watchdog_open(&mut self, path: &Path) -> Result<(), Errno>;
    /// `WDIOC_SETTIMEOUT`; returns the timeout the driver actually set.
    fn watchdog_set_timeout(&mut self, secs: u32) -> Result<u32, Errno>;
    /// `WDIOC_KEEPALIVE`.
    fn watchdog_keepalive(&mut self) -> Result<(), Errno>;
}

/// The real kernel.
#[derive(Debug)]
pub struct LinuxSys {
    watchdog: Option<rustix::fd::OwnedFd>,
    /// The modules loading beside stage 1 ([`Sys::begin_modules`]).
    beside: Option<Beside>,
}

/// Results of modules loaded beside stage 1, in their order.
type ModuleResults = Vec<(PathBuf, Result<(), ModuleError>)>;

#[derive(Debug)]
enum Beside {
    Loading {
        modules: Vec<PathBuf>,
        thread: std::thread::JoinHandle<ModuleResults>,
    },
    /// No thread could be started: they were loaded at once.
    Loaded(ModuleResults),
}

/// Each wave's modules together, one wave after another.
fn load_waves(waves: &[Vec<PathBuf>]) -> ModuleResults {
    let mut out = Vec::new();
    for wave in waves {
        out.extend(wave.iter().cloned().zip(load_modules_in_parallel(wave)));
    }
    out
}

impl LinuxSys {
    /// Makes sure fds 0, 1 and 2 are the console, then returns the `Sys`.
    ///
    /// The kernel opens `/dev/console` as fd 0/1/2 for PID 1. When it could not,
    /// Rust's runtime has put `/dev/null` on the closed fds before `main`, so a
    /// stdout that is closed or `/dev/null` means: open the console ourselves.
    /// Returns a note to log (after the banner) when something had to be done.
    pub fn attach_console() -> (LinuxSys, Option<String>) {
        let sys = LinuxSys {
            watchdog: None,
            beside: None,
        };
        if stdio_is_console() {
            return (sys, None);
        }
        let console = match open_console() {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                // No /dev/console node: devtmpfs provides one.
                let _ = rustix::mount::mount(
                    "devtmpfs",
                    "/dev",
                    "devtmpfs",
                    MountFlags::NOSUID,
                    c"mode=0755",
                );
                match open_console() {
                    Ok(fd) => fd,
                    Err(e) => {
                        return (sys, Some(format!("cannot open /dev/console: {e}")));
                    }
                }
            }
            Err(e) => return (sys, Some(format!("cannot open /dev/console: {e}"))),
        };
        let dup = rustix::stdio::dup2_stdin(&console)
            .and_then(|()| rustix::stdio::dup2_stdout(&console))
            .and_then(|()| rustix::stdio::dup2_stderr(&console));
        let note = match dup {
            Ok(()) => "fds 0-2 were not the console; opened /dev/console".to_string(),
            Err(e) => format!("cannot make /dev/console fds 0-2: {e}"),
        };
        (sys, Some(note))
    }

    /// PID 1 after stage 1: reap every child that exits, forever.
    pub fn idle_forever(&mut self) -> ! {
        loop {
            match rustix::process::wait(rustix::process::WaitOptions::empty()) {
                Ok(_) => {}
                // No children (yet): orphans may be re-parented to us later.
                Err(_) => std::thread::sleep(Duration::from_secs(5)),
            }
        }
    }
}

fn open_console() -> Result<rustix::fd::OwnedFd, Errno> {
    fs::open(
        "/dev/console",
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Whether fd 1 is open and not `/dev/null` (char 1:3).
fn stdio_is_console() -> bool {
    // SAFETY: fd 1 is open for the whole life of the process: the Rust runtime
    // reopens a closed fd 0/1/2 on /dev/null before main (or aborts).
    let stdout = unsafe { rustix::fd::BorrowedFd::borrow_raw(1) };
    match fs::fstat(stdout) {
        Ok(st) => {
            let is_null = fs::FileType::from_raw_mode(st.st_mode) == fs::FileType::CharacterDevice
                && fs::major(st.st_rdev) == 1
                && fs::minor(st.st_rdev) == 3;
            !is_null
        }
        Err(_) => false,
    }
}

fn load_module(path: &Path) -> Result<(), ModuleError> {
    let fd = fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(ModuleError::Open)?;
    rustix::system::finit_module(&fd, c"", 0).map_err(ModuleError::Load)
}

/// Most threads one wave of modules is loaded on: a module's load is mostly
/// the kernel relocating and checking it, which runs on the calling CPU.
const MODULE_THREADS: usize = 4;

/// Load `paths` on up to one thread per CPU ([`MODULE_THREADS`] at most),
/// each taking the next module not yet taken. A thread that cannot be
/// started leaves its share to the others (this thread always works too).
fn load_modules_in_parallel(paths: &[PathBuf]) -> Vec<Result<(), ModuleError>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(path) = paths.get(i) else {
                return done;
            };
            done.push((i, load_module(path)));
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MODULE_THREADS)
        .min(paths.len());
    let mut results: Vec<Option<Result<(), ModuleError>>> = paths.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        let mut all = work();
        for h in helpers {
            // A helper only calls syscalls; if it panicked anyway, its
            // modules are reported as not loaded below.
            all.extend(h.join().unwrap_or_default());
        }
        for (i, r) in all {
            results[i] = Some(r);
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(ModuleError::Load(Errno::CANCELED))))
        .collect()
}

impl Sys for LinuxSys {
    fn now(&self) -> Duration {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        )
    }

    fn write_console(&mut self, line: &str) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }

    fn read_file(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn is_mountpoint(&mut self, path: &Path) -> Result<bool, Errno> {
        let own = fs::stat(path)?;
        let parent = fs::stat(path.join(".."))?;
        Ok(own.st_dev != parent.st_dev || own.st_ino == parent.st_ino)
    }

    fn mkdir(&mut self, path: &Path, mode: u32) -> Result<(), Errno> {
        match fs::mkdir(path, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn mount(&mut self, args: &MountArgs) -> Result<(), Errno> {
        rustix::mount::mount(
            args.source.as_ref(),
            args.target,
            args.fstype,
            args.flags,
            args.data,
        )
    }

    fn kernel_release(&self) -> String {
        rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned()
    }

    fn finit_module(&mut self, path: &Path) -> Result<(), ModuleError> {
        load_module(path)
    }

    fn finit_modules(&mut self, paths: &[PathBuf]) -> Vec<Result<(), ModuleError>> {
        load_modules_in_parallel(paths)
    }

    fn begin_modules(&mut self, waves: Vec<Vec<PathBuf>>) {
        let modules: Vec<PathBuf> = waves.iter().flatten().cloned().collect();
        let spawned = std::thread::Builder::new().name("modules".into()).spawn({
            let waves = waves.clone();
            move || load_waves(&waves)
        });
        self.beside = Some(match spawned {
            Ok(thread) => Beside::Loading { modules, thread },
            Err(_) => Beside::Loaded(load_waves(&waves)),
        });
    }

    fn finish_modules(&mut self) -> Vec<(PathBuf, Result<(), ModuleError>)> {
        match self.beside.take() {
            None => Vec::new(),
            Some(Beside::Loaded(results)) => results,
            // The thread only makes system calls; if it panicked anyway, its
            // modules are reported as not loaded.
            Some(Beside::Loading { modules, thread }) => thread.join().unwrap_or_else(|_| {
                modules
                    .into_iter()
                    .map(|m| (m, Err(ModuleError::Load(Errno::CANCELED))))
                    .collect()
            }),
        }
    }

    fn sync(&mut self) {
        fs::sync();
    }

    fn reboot(&mut self, how: Shutdown) -> Result<(), Errno> {
        let cmd = match how {
            Shutdown::PowerOff => rustix::system::RebootCommand::PowerOff,
            Shutdown::Reboot => rustix::system::RebootCommand::Restart,
            Shutdown::Halt => rustix::system::RebootCommand::Halt,
        };
        rustix::system::reboot(cmd)
    }

    fn sleep(&mut self, how_long: Duration) {
        std::thread::sleep(how_long);
    }

    fn list_dir(&mut self, path: &Path) -> Result<Vec<String>, Errno> {
        let entries = std::fs::read_dir(path).map_err(|e| errno_of(&e))?;
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn exists(&mut self, path: &Path) -> bool {
        fs::lstat(path).is_ok()
    }

    fn mknod_char(&mut self, path: &Path, major: u32, minor: u32) -> Result<(), Errno> {
        fs::mknodat(
            fs::CWD,
            path,
            fs::FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            fs::makedev(major, minor),
        )
    }

    fn dm_ioctl(&mut self, cmd: crate::dm::Command, buf: &mut [u8]) -> Result<(), Errno> {
        linux::dm_ioctl(cmd, buf)
    }

    fn loop_attach(&mut self, file: &Path) -> Result<PathBuf, Errno> {
        linux::loop_attach(file)
    }

    fn read_partition_table(&mut self, disk: &Path) -> Result<PartTable, String> {
        crate::disks::read_table(disk)
    }

    fn grow_last_partition(&mut self, disk: &Path, index: u32) -> Result<Option<PartInfo>, String> {
        crate::disks::grow_last(disk, index)
    }

    fn blkpg_resize(
        &mut self,
        disk: &Path,
        index: u32,
        start: u64,
        length: u64,
    ) -> Result<(), Errno> {
        linux::blkpg_resize(disk, index, start, length)
    }

    fn device_bytes(&mut self, dev: &Path) -> Result<u64, Errno> {
        linux::device_bytes(dev)
    }

    fn read_at(&mut self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(path)?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    // The block counts are u64 here and narrower on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    fn statfs(&mut self, path: &Path) -> Result<(u64, u64), Errno> {
        let st = rustix::fs::statfs(path)?;
        let bsize = u64::try_from(st.f_bsize).unwrap_or(0);
        Ok((
            u64::from(st.f_bfree).saturating_mul(bsize),
            u64::from(st.f_blocks).saturating_mul(bsize),
        ))
    }

    fn ext4_resize(&mut self, mountpoint: &Path, blocks: u64) -> Result<(), Errno> {
        linux::ext4_resize(mountpoint, blocks)
    }

    fn bind_mount(&mut self, from: &Path, to: &Path) -> Result<(), Errno> {
        rustix::mount::mount_bind(from, to)
    }

    fn move_mount(&mut self, from: &Path, to: &Path) -> Result<(), Errno> {
        rustix::mount::mount_move(from, to)
    }

    fn remount_ro(&mut self, target: &Path) -> Result<(), Errno> {
        rustix::mount::mount_remount(target, MountFlags::RDONLY, c"")
    }

    fn unmount(&mut self, target: &Path) -> Result<(), Errno> {
        rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty())
    }

    fn chdir(&mut self, path: &Path) -> Result<(), Errno> {
        rustix::process::chdir(path)
    }

    fn chroot(&mut self, path: &Path) -> Result<(), Errno> {
        rustix::process::chroot(path)
    }

    fn free_initramfs(&mut self) -> u64 {
        match fs::stat("/") {
            Ok(root) => linux::free_tree(Path::new("/"), root.st_dev),
            Err(_) => 0,
        }
    }

    fn exec(&mut self, path: &Path, argv: &[&str]) -> io::Result<()> {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(path);
        if let Some((first, rest)) = argv.split_first() {
            cmd.arg0(first).args(rest);
        }
        Err(cmd.exec())
    }

    fn append_sync(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn setup_signals(&mut self) -> Result<(), Errno> {
        rustix::system::reboot(rustix::system::RebootCommand::CadOff)?;
        linux::block_signals()
    }

    fn wait_signal(&mut self, timeout: Duration) -> Option<Signal> {
        linux::wait_signal(timeout)
    }

    fn spawn_in(&mut self, cwd: &Path, path: &Path, argv: &[&str]) -> io::Result<i32> {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(path);
        if let Some((first, rest)) = argv.split_first() {
            cmd.arg0(first).args(rest);
        }
        // The child inherits PID 1's signal mask (std leaves it alone; seen
        // under QEMU: sysd never got SIGTERM), so it is emptied between fork
        // and exec. The Child handle is dropped without waiting: PID 1 reaps
        // with waitpid(-1).
        cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir(cwd);
        // SAFETY: the closure runs in the forked child before exec and only
        // calls sigprocmask(2) and signal(2), both async-signal-safe; it
        // allocates nothing and touches no lock.
        unsafe {
            cmd.pre_exec(linux::child_signals);
        }
        let child = cmd.spawn()?;
        i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))
    }

    fn run_to_end(&mut self, path: &Path, argv: &[&str]) -> io::Result<(Option<i32>, String)> {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(path);
        if let Some((first, rest)) = argv.split_first() {
            cmd.arg0(first).args(rest);
        }
        let out = cmd
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .output()?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.code(), text))
    }

    fn reap(&mut self) -> Reaped {
        linux::reap()
    }

    fn kill(&mut self, pid: i32, sig: KillSignal) -> Result<(), Errno> {
        linux::kill(pid, sig)
    }

    fn watchdog_open(&mut self, path: &Path) -> Result<(), Errno> {
        let fd = fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
        self.watchdog = Some(fd);
        Ok(())
    }

    fn watchdog_set_timeout(&mut self, secs: u32) -> Result<u32, Errno> {
        match &self.watchdog {
            Some(fd) => linux::watchdog_set_timeout(fd, secs),
            None => Err(Errno::BADF),
        }
    }

    fn watchdog_keepalive(&mut self) -> Result<(), Errno> {
        match &self.watchdog {
            Some(fd) => linux::watchdog_keepalive(fd),
            None => Err(Errno::BADF),
        }
    }
}

fn errno_of(e: &io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::IO, Errno::from_raw_os_error)
}

/// The Linux side of the block-device and mount methods of [`Sys`].
mod linux {
    use super::*;
    use rustix::ioctl::{self, Ioctl, IoctlOutput, Opcode};

    /// A `dm_ioctl` buffer handed to the kernel whole (header + payload).
    struct DmBuf<'a> {
        request: Opcode,
        buf: &'a mut [u8],
    }

    // SAFETY: the request is one of the dm `_IOWR(0xfd, nr, struct dm_ioctl)`
    // numbers, and `buf` is at least `data_size` bytes long (the kernel reads
    // and writes at most `data_size`, which `dm::header` sets to `buf.len()`).
    unsafe impl Ioctl for DmBuf<'_> {
        type Output = ();
        const IS_MUTATING: bool = true;
        fn opcode(&self) -> Opcode {
            self.request
        }
        fn as_ptr(&mut self) -> *mut std::ffi::c_void {
            self.buf.as_mut_ptr().cast()
        }
        unsafe fn output_from_ptr(
            _: IoctlOutput,
            _: *mut std::ffi::c_void,
        ) -> rustix::io::Result<()> {
            Ok(())
        }
    }

    /// `LOOP_CTL_GET_FREE` and `LOOP_SET_FD` from <linux/loop.h>.
    const LOOP_CTL_GET_FREE: Opcode = 0x4C82;
    const LOOP_SET_FD: Opcode = 0x4C00;

    /// `LOOP_CTL_GET_FREE`: no argument; the ioctl's return value is the number
    /// of a free loop device.
    struct GetFree;

    // SAFETY: LOOP_CTL_GET_FREE reads no argument and returns an int.
    unsafe impl Ioctl for GetFree {
        type Output = IoctlOutput;
        const IS_MUTATING: bool = false;
        fn opcode(&self) -> Opcode {
            LOOP_CTL_GET_FREE
        }
        fn as_ptr(&mut self) -> *mut std::ffi::c_void {
            std::ptr::null_mut()
        }
        unsafe fn output_from_ptr(
            out: IoctlOutput,
            _: *mut std::ffi::c_void,
        ) -> rustix::io::Result<IoctlOutput> {
            Ok(out)
        }
    }

    pub fn loop_attach(file: &Path) -> Result<PathBuf, Errno> {
        // Opened read-only, so the loop device is read-only too (the kernel
        // makes a loop device read-only when its file is not writable).
        let backing = fs::open(file, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        let control = fs::open(
            "/dev/loop-control",
            OFlags::RDWR | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // A free device may be taken by someone else between the two calls;
        // stage 1 is alone, but try a few times anyway.
        let mut last = Errno::BUSY;
        for _ in 0..4 {
            // SAFETY: see `impl Ioctl for GetFree`.
            let n = unsafe { ioctl::ioctl(&control, GetFree) }?;
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
            let fd = rustix::fd::AsRawFd::as_raw_fd(&backing) as usize;
            // SAFETY: LOOP_SET_FD takes the backing file's descriptor by value;
            // `backing` stays open for the call (the kernel takes its own reference).
            match unsafe { ioctl::ioctl(&dev, ioctl::IntegerSetter::<LOOP_SET_FD>::new_usize(fd)) }
            {
                Ok(()) => return Ok(path),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub fn dm_ioctl(cmd: crate::dm::Command, buf: &mut [u8]) -> Result<(), Errno> {
        if buf.len() < crate::dm::HEADER_LEN {
            return Err(Errno::INVAL);
        }
        let control = fs::open(
            "/dev/mapper/control",
            OFlags::RDWR | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let request = DmBuf {
            request: cmd.request() as Opcode,
            buf,
        };
        // SAFETY: see `impl Ioctl for DmBuf`.
        unsafe { ioctl::ioctl(&control, request) }
    }

    /// `struct blkpg_partition` from <linux/blkpg.h>.
    #[repr(C)]
    struct BlkpgPartition {
        start: i64,
        length: i64,
        pno: std::ffi::c_int,
        devname: [u8; 64],
        volname: [u8; 64],
    }

    /// `struct blkpg_ioctl_arg`.
    #[repr(C)]
    struct BlkpgArg {
        op: std::ffi::c_int,
        flags: std::ffi::c_int,
        datalen: std::ffi::c_int,
        data: *mut std::ffi::c_void,
    }

    const BLKPG: Opcode = ioctl::opcode::none(0x12, 105);
    const BLKPG_RESIZE_PARTITION: std::ffi::c_int = 3;
    /// `_IOR(0x12, 114, size_t)`: the header says `size_t`, so the request
    /// number differs on 32-bit targets, though the kernel writes a u64.
    const BLKGETSIZE64: Opcode = ioctl::opcode::read::<usize>(0x12, 114);
    const EXT4_IOC_RESIZE_FS: Opcode = ioctl::opcode::write::<u64>(b'f', 16);

    pub fn blkpg_resize(disk: &Path, index: u32, start: u64, length: u64) -> Result<(), Errno> {
        let fd = fs::open(disk, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        let mut part = BlkpgPartition {
            start: i64::try_from(start).map_err(|_| Errno::INVAL)?,
            length: i64::try_from(length).map_err(|_| Errno::INVAL)?,
            pno: std::ffi::c_int::try_from(index).map_err(|_| Errno::INVAL)?,
            devname: [0; 64],
            volname: [0; 64],
        };
        let arg = BlkpgArg {
            op: BLKPG_RESIZE_PARTITION,
            flags: 0,
            datalen: std::mem::size_of::<BlkpgPartition>() as std::ffi::c_int,
            data: (&raw mut part).cast(),
        };
        // SAFETY: BLKPG takes a pointer to `blkpg_ioctl_arg`, whose `data`
        // points at `part`, alive on this stack frame for the whole call.
        unsafe { ioctl::ioctl(&fd, ioctl::Setter::<BLKPG, BlkpgArg>::new(arg)) }
    }

    pub fn device_bytes(dev: &Path) -> Result<u64, Errno> {
        let fd = fs::open(dev, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        // SAFETY: BLKGETSIZE64 writes one u64.
        unsafe { ioctl::ioctl(&fd, ioctl::Getter::<BLKGETSIZE64, u64>::new()) }
    }

    pub fn ext4_resize(mountpoint: &Path, blocks: u64) -> Result<(), Errno> {
        let fd = fs::open(
            mountpoint,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 (the new block count).
        unsafe { ioctl::ioctl(&fd, ioctl::Setter::<EXT4_IOC_RESIZE_FS, u64>::new(blocks)) }
    }

    /// The signals of [`Signal`] as a `sigset_t`.
    fn pid1_set() -> Result<libc::sigset_t, Errno> {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset only
        // writes inside it. Both are plain libc calls on our own stack.
        unsafe {
            if libc::sigemptyset(set.as_mut_ptr()) != 0 {
                return Err(Errno::INVAL);
            }
            for sig in [
                libc::SIGTERM,
                libc::SIGINT,
                libc::SIGCHLD,
                libc::SIGHUP,
                libc::SIGUSR1,
                libc::SIGUSR2,
            ] {
                if libc::sigaddset(set.as_mut_ptr(), sig) != 0 {
                    return Err(Errno::INVAL);
                }
            }
            Ok(set.assume_init())
        }
    }

    /// In a forked child of PID 1: no blocked signals, SIGPIPE back to its
    /// default (Rust's runtime ignores it in PID 1).
    pub fn child_signals() -> io::Result<()> {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises `set`; sigprocmask and signal are
        // async-signal-safe and take valid arguments.
        unsafe {
            if libc::sigemptyset(set.as_mut_ptr()) != 0
                || libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()) != 0
            {
                return Err(io::Error::last_os_error());
            }
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        Ok(())
    }

    pub fn block_signals() -> Result<(), Errno> {
        let set = pid1_set()?;
        // SAFETY: `set` is an initialised sigset_t; the old mask is not wanted.
        let rc = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(Errno::from_raw_os_error(
                io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ))
        }
    }

    pub fn wait_signal(timeout: Duration) -> Option<Signal> {
        let set = pid1_set().ok()?;
        // Both casts are lossless: at most a day of seconds, and nanoseconds
        // below 10^9 (time_t and long differ between the device targets).
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(86_400) as _,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        // SAFETY: `set` and `ts` are initialised and live across the call;
        // a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
        match sig {
            libc::SIGTERM => Some(Signal::Term),
            libc::SIGINT => Some(Signal::Int),
            libc::SIGCHLD => Some(Signal::Chld),
            libc::SIGHUP => Some(Signal::Hup),
            libc::SIGUSR1 => Some(Signal::Usr1),
            libc::SIGUSR2 => Some(Signal::Usr2),
            // -1 with EAGAIN (time passed) or EINTR.
            _ => None,
        }
    }

    pub fn reap() -> Reaped {
        let mut reaped = Reaped {
            exited: Vec::new(),
            children_left: true,
        };
        loop {
            let mut status: std::ffi::c_int = 0;
            // SAFETY: waitpid writes one int through a pointer to our stack.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid > 0 {
                let how = if libc::WIFEXITED(status) {
                    ExitStatus::Code(libc::WEXITSTATUS(status))
                } else {
                    ExitStatus::Signal(libc::WTERMSIG(status))
                };
                reaped.exited.push((pid, how));
                continue;
            }
            if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                reaped.children_left = false;
            }
            return reaped;
        }
    }

    pub fn kill(pid: i32, sig: KillSignal) -> Result<(), Errno> {
        let sig = match sig {
            KillSignal::Term => libc::SIGTERM,
            KillSignal::Kill => libc::SIGKILL,
        };
        // SAFETY: kill(2) takes two integers.
        if unsafe { libc::kill(pid, sig) } == 0 {
            Ok(())
        } else {
            Err(Errno::from_raw_os_error(
                io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ))
        }
    }

    /// `WDIOC_SETTIMEOUT` = `_IOWR('W', 6, int)`, `WDIOC_KEEPALIVE` = `_IOR('W', 5, int)`.
    const WDIOC_SETTIMEOUT: Opcode = ioctl::opcode::read_write::<std::ffi::c_int>(b'W', 6);
    const WDIOC_KEEPALIVE: Opcode = ioctl::opcode::read::<std::ffi::c_int>(b'W', 5);

    pub fn watchdog_set_timeout(fd: &rustix::fd::OwnedFd, secs: u32) -> Result<u32, Errno> {
        let mut value = std::ffi::c_int::try_from(secs).map_err(|_| Errno::INVAL)?;
        // SAFETY: WDIOC_SETTIMEOUT reads and writes back one int.
        unsafe {
            ioctl::ioctl(
                fd,
                ioctl::Updater::<WDIOC_SETTIMEOUT, std::ffi::c_int>::new(&mut value),
            )?;
        }
        u32::try_from(value).map_err(|_| Errno::INVAL)
    }

    pub fn watchdog_keepalive(fd: &rustix::fd::OwnedFd) -> Result<(), Errno> {
        // SAFETY: WDIOC_KEEPALIVE ignores its argument (declared as one int
        // written by the kernel); the getter gives it a valid int to write.
        unsafe { ioctl::ioctl(fd, ioctl::Getter::<WDIOC_KEEPALIVE, std::ffi::c_int>::new()) }
            .map(|_| ())
    }

    /// Deletes the files of the initramfs (rootfs) below `dir`, staying on
    /// `root_dev` so nothing in another mount (the new root, /dev, ...) is touched.
    pub fn free_tree(dir: &Path, root_dev: u64) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(st) = fs::lstat(&path) else { continue };
            if st.st_dev != root_dev {
                continue;
            }
            if fs::FileType::from_raw_mode(st.st_mode) == fs::FileType::Directory {
                removed += free_tree(&path, root_dev);
                if fs::rmdir(&path).is_ok() {
                    removed += 1;
                }
            } else if fs::unlink(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}
