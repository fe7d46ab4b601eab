//! The floor for the boot benchmark: the least an init can do. It prints one
//! line on the console and powers off. `ballast bench boot` boots the same
//! kernel with this and with Ballast's init and reports the difference.

use std::io::Write;

fn main() {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ballast-floor ready");
    let _ = out.flush();
    // SAFETY: plain syscalls without pointers; reboot() only returns on error.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}
