//! Story: a new user builds the minimal image with a broken network setting
//! (`ballast.ip` without its prefix length) and boots it on a new machine.
//! Nobody can log in, since the network is what fails, so the console itself
//! says why: the network service's own error line, once however often sysd
//! restarts it, and that `ballast-ready` waits for it.

mod common;

use std::time::Duration;

use common::vm::{free_port, Machine};

const BOOT: Duration = Duration::from_secs(420);

#[test]
fn qemu_arm64_a_failing_required_service_shows_its_own_error_on_the_console() {
    let board = "qemu-arm64";
    let _story = common::story();
    let work = common::workdir("papercuts-failing-service");
    // The same broken 0.3.0 the arm64 update story rolls back from, booted
    // as a new machine: nothing to roll back to, so it keeps trying.
    let built = common::Build::new(board)
        .image("minimal")
        .version("0.1.0")
        .ssh_key()
        .shared()
        .broken_network_release();
    let disk = built.vm_disk(&work, "machine");
    let mut vm = Machine::boot_disk(
        board,
        &built.out,
        &disk,
        free_port(),
        work.join("console.log"),
    );
    let line = vm.wait_for("network failed (", BOOT);
    // The service's own words, not only its exit status.
    assert!(
        line.contains("sysd: network failed (exited with status 1): ")
            && line.contains("network: ballast.ip=10.0.2.15 needs a prefix length"),
        "{line}"
    );
    // Nothing else waits for it: time and SSH start beside the network
    // (time's first round and the config's bootcmd and runcmd wait for its
    // ready file themselves).
    assert!(line.contains("[blocks ballast-ready;"), "{line}");
    assert!(line.contains("osctl logs network"), "{line}");
    // sysd keeps restarting it (with backoff); the console is not told again.
    for _ in 0..3 {
        vm.wait_for("sysd: network (pid", Duration::from_secs(120));
    }
    let told = vm
        .console
        .iter()
        .filter(|l| l.contains("network failed ("))
        .count();
    assert_eq!(told, 1, "console:\n{}", vm.console.join("\n"));
    assert!(
        !vm.console
            .iter()
            .any(|l| l.trim().starts_with("ballast-ready version=")),
        "ready without its required network; console:\n{}",
        vm.console.join("\n")
    );
}
