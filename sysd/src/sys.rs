//! The system calls sysd makes, in one place, through rustix (typed fds and errors),
//! the way init's `sys.rs` does it: signalling and reaping its children, becoming
//! their subreaper, the control socket's peek, the bundle descriptor's poll, the log
//! pipes. The supervisor and the update logic never call the kernel themselves.
//!
//! [`Sys`] is the seam the main loop drives ([`LinuxSys`] on the device). The only
//! `unsafe` left is the SIGTERM handler's installation: rustix has no safe
//! `sigaction`, and sysd's handler only stores to an atomic.
//!
//! This module must never decide anything: it reports what the kernel said.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal as RSignal, WaitOptions};

use crate::supervisor::Exit;

/// The signals sysd sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Stop (a service), or power off (PID 1).
    Term,
    /// Stop now (a service that ignored Term).
    Kill,
    /// Reboot (PID 1).
    Int,
}

impl Signal {
    fn raw(self) -> RSignal {
        match self {
            Signal::Term => RSignal::TERM,
            Signal::Kill => RSignal::KILL,
            Signal::Int => RSignal::INT,
        }
    }
}

/// What the main loop asks of the kernel.
pub trait Sys {
    /// Send `sig` to process `pid`.
    fn kill(&self, pid: u32, sig: Signal) -> io::Result<()>;
    /// Every exited child, without blocking: `(pid, how it ended)`.
    fn reap(&self) -> Vec<(u32, Exit)>;
}

/// The real kernel.
pub struct LinuxSys;

impl Sys for LinuxSys {
    fn kill(&self, pid: u32, sig: Signal) -> io::Result<()> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(rustix::process::kill_process(pid, sig.raw())?)
    }

    fn reap(&self) -> Vec<(u32, Exit)> {
        let mut out = Vec::new();
        while let Ok(Some((pid, status))) = rustix::process::waitpid(None, WaitOptions::NOHANG) {
            let exit = if let Some(code) = status.exit_status() {
                Exit {
                    success: code == 0,
                    desc: format!("exited with status {code}"),
                }
            } else if let Some(sig) = status.terminating_signal() {
                Exit {
                    success: false,
                    desc: format!("killed by signal {sig}"),
                }
            } else {
                continue;
            };
            out.push((pid.as_raw_nonzero().get().unsigned_abs(), exit));
        }
        out
    }
}

/// Become the subreaper of everything sysd starts (orphaned container processes come
/// back to sysd, not PID 1).
pub fn set_subreaper() -> io::Result<()> {
    Ok(rustix::process::set_child_subreaper(
        rustix::process::getpid().into(),
    )?)
}

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT set a flag the main loop reads with [`term_requested`].
pub fn catch_term() -> io::Result<()> {
    on_term_signals(on_term)
}

/// Run `handler` on SIGTERM and SIGINT (sysd's flag; the time client's
/// exit). It must be async-signal-safe.
pub fn on_term_signals(handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: sigaction with an async-signal-safe handler (the caller's
    // contract); the struct is zeroed then filled, as sigaction(2) expects.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [libc::SIGTERM, libc::SIGINT] {
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// SIGTERM or SIGINT arrived.
pub fn term_requested() -> bool {
    TERM.load(Ordering::SeqCst)
}

/// Wait until `fd` is readable (or hung up): `Ok(false)` when `timeout` passed first.
pub fn wait_readable(fd: impl AsFd, timeout: Duration) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let ts =
        Timespec::try_from(timeout).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The peer of a stream socket hung up: a zero-byte peek without blocking.
pub fn peer_closed(sock: impl AsFd) -> bool {
    use rustix::net::RecvFlags;
    let mut b = [0u8; 1];
    matches!(
        rustix::net::recv(sock, &mut b[..], RecvFlags::PEEK | RecvFlags::DONTWAIT),
        Ok((0, _))
    )
}

/// A pipe, both ends close-on-exec: `(read, write)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    // `reap` waits for any child, so it is not run here beside tests that wait for
    // their own; sysd's supervise test and the QEMU stories cover it.
    #[test]
    fn a_signalled_child_dies_of_that_signal() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        LinuxSys.kill(child.id(), Signal::Kill).unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        let e = LinuxSys.kill(0, Signal::Term).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_pipe_is_readable_once_written_and_a_closed_peer_is_seen() {
        use std::io::Write;
        let (r, w) = pipe().unwrap();
        assert!(!wait_readable(&r, Duration::from_millis(10)).unwrap());
        std::fs::File::from(w).write_all(b"x").unwrap();
        assert!(wait_readable(&r, Duration::from_millis(10)).unwrap());

        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!peer_closed(&a));
        drop(b);
        assert!(peer_closed(&a));
    }
}
