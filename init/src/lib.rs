//! Ballast's PID 1, stage 1: what runs as `/init` in the initramfs.
//!
//! It owns the first seconds of a Ballast boot: the banner line tests wait for,
//! the kernel's pseudo filesystems, the kernel command line, and loading the
//! modules the builder listed in `/etc/ballast/modules.load`.
//!
//! It must never panic and never exit: when PID 1 exits the kernel panics. All
//! syscalls go through the [`sys::Sys`] seam so the stage logic runs (and is
//! tested) on a development host without root; [`sys::LinuxSys`] is the real
//! implementation, covered by booting the binary under QEMU.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cmdline;
pub mod log;
pub mod modules;
pub mod stage1;
pub mod sys;

#[cfg(test)]
mod testsys;
