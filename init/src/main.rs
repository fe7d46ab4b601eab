//! `/init` in the initramfs (and `/sbin/init --stage2` on the real root): a
//! thin shell around [`ballast_init::stage1::boot`] and [`ballast_init::stage2::boot`].
//! It must never exit while it is PID 1 (the kernel would panic): stage 2
//! supervises sysd until a shutdown, and if a stage ever returns (stage 1
//! without a slot, or a failed `reboot(2)`) it reaps children forever.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use ballast_init::sys::LinuxSys;
use ballast_init::{stage1, stage2};

fn main() {
    if rustix::process::getpid() != rustix::process::Pid::INIT {
        eprintln!(
            "ballast-init: not PID 1; refusing to run (this is the initramfs /init; boot it with a kernel, e.g. `ballast run`)"
        );
        std::process::exit(2);
    }
    let (mut sys, note) = LinuxSys::attach_console();
    if std::env::args_os().skip(1).any(|a| a == "--stage2") {
        let _ending = stage2::boot(&mut sys);
    } else {
        let _ending = stage1::boot(&mut sys, note);
    }
    sys.idle_forever()
}
