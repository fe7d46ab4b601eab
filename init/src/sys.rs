//! The syscall seam: everything stage 1 asks of the kernel goes through [`Sys`].
//!
//! [`LinuxSys`] is the real implementation (rustix: raw syscalls, typed fds).
//! Tests use a recording double so the order of actions can be checked on a
//! development host without root. Keep logic out of this module: it only
//! translates calls.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use rustix::fs::{self, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::MountFlags;

/// One mount stage 1 performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MountFlags,
    pub data: Option<&'static std::ffi::CStr>,
}

/// How to leave: the two `reboot(2)` commands stage 1 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    PowerOff,
    Reboot,
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
        Errno::KEYREJECTED | Errno::PERM => " (module signature rejected: the kernel enforces signed modules; use the modules from the same kernel package)",
        _ => "",
    }
}

/// The kernel, as stage 1 sees it.
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
    fn mount(&mut self, spec: &MountSpec) -> Result<(), Errno>;
    /// `uname -r` of the running kernel.
    fn kernel_release(&self) -> String;
    /// Opens `path` and calls `finit_module(fd, "", 0)`.
    fn finit_module(&mut self, path: &Path) -> Result<(), ModuleError>;
    fn sync(&mut self);
    /// `reboot(2)`; on success the real call does not return.
    fn reboot(&mut self, how: Shutdown) -> Result<(), Errno>;
}

/// The real kernel.
#[derive(Debug)]
pub struct LinuxSys {
    _private: (),
}

impl LinuxSys {
    /// Makes sure fds 0, 1 and 2 are the console, then returns the `Sys`.
    ///
    /// The kernel opens `/dev/console` as fd 0/1/2 for PID 1. When it could not,
    /// Rust's runtime has put `/dev/null` on the closed fds before `main`, so a
    /// stdout that is closed or `/dev/null` means: open the console ourselves.
    /// Returns a note to log (after the banner) when something had to be done.
    pub fn attach_console() -> (LinuxSys, Option<String>) {
        let sys = LinuxSys { _private: () };
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

    fn mount(&mut self, spec: &MountSpec) -> Result<(), Errno> {
        rustix::mount::mount(spec.source, spec.target, spec.fstype, spec.flags, spec.data)
    }

    fn kernel_release(&self) -> String {
        rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned()
    }

    fn finit_module(&mut self, path: &Path) -> Result<(), ModuleError> {
        let fd = fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(ModuleError::Open)?;
        rustix::system::finit_module(&fd, c"", 0).map_err(ModuleError::Load)
    }

    fn sync(&mut self) {
        fs::sync();
    }

    fn reboot(&mut self, how: Shutdown) -> Result<(), Errno> {
        let cmd = match how {
            Shutdown::PowerOff => rustix::system::RebootCommand::PowerOff,
            Shutdown::Reboot => rustix::system::RebootCommand::Restart,
        };
        rustix::system::reboot(cmd)
    }
}
