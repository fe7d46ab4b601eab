//! Kernel-facing formats Ballast owns: Kconfig fragments and the check of a kernel's
//! config against them (`kconfig`, `check`), the module dependency closure of a
//! kernel's `/lib/modules/KVER` (`modules`), and the initramfs as a deterministic newc
//! cpio archive (`cpio`, `initramfs`).
//!
//! This crate only reads and writes bytes: it never fetches packages, runs `depmod`
//! or loads modules; the builder and init do that with what it returns.

pub mod check;
pub mod cpio;
pub mod initramfs;
pub mod kconfig;
pub mod modules;
