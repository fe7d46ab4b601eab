//! Ballast's PID 1: stage 1 as `/init` in the initramfs, stage 2 as
//! `/sbin/init --stage2` on the real root.
//!
//! It owns the first seconds of a Ballast boot: the banner line tests wait for,
//! the kernel's pseudo filesystems, the kernel command line, loading the
//! modules the builder listed in `/etc/ballast/modules.load`, the verified
//! read-only root of the slot (dm-verity) or of the live medium (`live`), the state partition and its
//! overlays, switch_root, and counting boots on state.
//!
//! It must never panic and never exit: when PID 1 exits the kernel panics. All
//! syscalls go through the [`sys::Sys`] seam so the stage logic runs (and is
//! tested) on a development host without root; [`sys::LinuxSys`] is the real
//! implementation, covered by booting the binary under QEMU.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod children;
mod disks;
pub mod dm;
pub mod ext4;
pub mod fatcheck;
pub mod live;
pub mod log;
pub mod modules;
pub mod netboot;
pub mod root;
pub mod stage1;
pub mod stage2;
pub mod state;
pub mod sys;
pub mod userland;

#[cfg(test)]
mod testsys;
