//! Programs of the admin userland, run from stage 1: the checkers it ships
//! (dosfstools' `fsck.fat`, e2fsprogs' `e2fsck`) are run from the verified
//! root, once it is mounted on `/sysroot`, through that userland's own dynamic
//! loader: stage 1 has no C library of its own.

use std::io;
use std::path::Path;

use crate::sys::Sys;

/// The admin userland inside the mounted root (`/sysroot`).
pub const USERLAND: &str = "/sysroot/usr/lib/ballast/userland";

/// The userland's dynamic loader and library directory for this build's arch.
#[cfg(target_arch = "aarch64")]
const LOADER: (&str, &str) = (
    "usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
    "usr/lib/aarch64-linux-gnu",
);
#[cfg(target_arch = "x86_64")]
const LOADER: (&str, &str) = (
    "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "usr/lib/x86_64-linux-gnu",
);
#[cfg(target_arch = "arm")]
const LOADER: (&str, &str) = (
    "usr/lib/arm-linux-gnueabihf/ld-linux-armhf.so.3",
    "usr/lib/arm-linux-gnueabihf",
);

/// Where `program` (a path inside the userland, e.g. `usr/sbin/e2fsck`) is.
pub fn path(program: &str) -> String {
    format!("{USERLAND}/{program}")
}

/// Runs the userland's `program` with `args` to its end: its exit code
/// (`None`: killed by a signal) and what it printed.
pub fn run(sys: &mut impl Sys, program: &str, args: &[&str]) -> io::Result<(Option<i32>, String)> {
    let userland = Path::new(USERLAND);
    let loader = userland.join(LOADER.0);
    let (loader_s, libs_s, program_s) = (
        loader.display().to_string(),
        userland.join(LOADER.1).display().to_string(),
        path(program),
    );
    let mut argv = vec![
        loader_s.as_str(),
        "--library-path",
        libs_s.as_str(),
        program_s.as_str(),
    ];
    argv.extend_from_slice(args);
    sys.run_to_end(&loader, &argv)
}

/// A checker's last lines, for the console: what it found and did.
pub fn last_lines(out: &str) -> String {
    // The userland ships no gconv modules: fsck.fat says so on every run and
    // falls back to its own code page table, which is all a check needs.
    let noise = |l: &str| l.contains("initialize conversion") || l.contains("internal CP850");
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !noise(l))
        .collect();
    let tail = &lines[lines.len().saturating_sub(6)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {}", tail.join(" | "))
    }
}
