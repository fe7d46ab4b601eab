//! The device contract: what the builder promises the device and what PID 1, sysd and
//! osctl rely on, in one place.
//!
//! It owns:
//!
//! * [`paths`]: every well-known path on a running device;
//! * [`os_release`]: `/usr/lib/os-release`, written once by the builder and read by init,
//!   sysd and osctl, which refuse a missing field instead of guessing it;
//! * [`cmdline`]: the kernel command line and the one parser of every `ballast.*`
//!   argument;
//! * [`live`]: the live medium's config area, filled by `ballast iso customize`;
//! * [`atomic`]: the one crash-safe file replace (temp file beside, fsync, rename, fsync
//!   of the directory) and its variant for vfat boot partitions.
//!
//! It must never do anything else: no policy (what to do about a value belongs to the
//! caller), no system calls beyond plain file I/O, no dependency beyond std (and the
//! error derive), so that it builds for every device target and links into PID 1. It
//! never panics on input.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod atomic;
pub mod cmdline;
pub mod live;
pub mod os_release;
pub mod paths;

pub use atomic::{write_atomic, write_atomic_vfat, AtomicError};
pub use cmdline::Cmdline;
pub use os_release::{OsRelease, OsReleaseError};
