//! `/init` in the initramfs: a thin shell around [`ballast_init::stage1::boot`].
//! It must never exit while it is PID 1 (the kernel would panic), so after
//! stage 1 it reaps children forever unless stage 1 powered off or rebooted.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use ballast_init::stage1;
use ballast_init::sys::LinuxSys;

fn main() {
    if rustix::process::getpid() != rustix::process::Pid::INIT {
        eprintln!(
            "ballast-init: not PID 1; refusing to run (this is the initramfs /init; boot it with a kernel, e.g. `ballast run`)"
        );
        std::process::exit(2);
    }
    let (mut sys, note) = LinuxSys::attach_console();
    let _ending = stage1::boot(&mut sys, note);
    sys.idle_forever()
}
