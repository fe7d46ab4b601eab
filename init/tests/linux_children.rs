//! The real [`LinuxSys`] process calls PID 1's supervisor relies on, run as an
//! ordinary process on the development host: spawn, kill, reap with
//! `waitpid(-1)`, and the `sigtimedwait` timeout. Blocking signals and
//! receiving them as PID 1 is not covered here: only a boot with sysd is.
//!
//! Its own test binary, and only one test here spawns: `waitpid(-1)` would
//! reap other tests' children.

use std::path::Path;
use std::time::{Duration, Instant};

use ballast_init::sys::{ExitStatus, KillSignal, LinuxSys, Sys};

#[test]
fn children_are_spawned_killed_and_reaped_with_their_status() {
    let (mut sys, _) = LinuxSys::attach_console();
    // As in PID 1, SIGTERM is blocked in the spawning thread: the children
    // must not inherit that (sysd would never see its stop signal).
    // SAFETY: plain libc calls on an initialised sigset_t on this stack.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
    }
    let quits = sys
        .spawn(Path::new("/bin/sh"), &["sh", "-c", "exit 3"])
        .unwrap();
    let sleeper = sys
        .spawn(Path::new("/bin/sleep"), &["sleep", "30"])
        .unwrap();
    let missing = sys.spawn(Path::new("/nonexistent/sysd"), &["sysd"]);
    assert_eq!(
        missing.unwrap_err().kind(),
        std::io::ErrorKind::NotFound,
        "a missing sysd is an error at spawn, not a child that exits 127"
    );
    sys.kill(sleeper, KillSignal::Term).unwrap();

    let start = Instant::now();
    let mut exited = Vec::new();
    loop {
        let reaped = sys.reap();
        exited.extend(reaped.exited);
        if !reaped.children_left {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{exited:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    exited.sort_by_key(|e| e.0);
    let mut want = vec![
        (quits, ExitStatus::Code(3)),
        (sleeper, ExitStatus::Signal(15)),
    ];
    want.sort_by_key(|e| e.0);
    assert_eq!(exited, want);
    assert_eq!(
        sys.kill(sleeper, KillSignal::Kill),
        Err(rustix::io::Errno::SRCH)
    );
}

#[test]
fn waiting_for_a_signal_gives_up_after_the_timeout() {
    let (mut sys, _) = LinuxSys::attach_console();
    let start = Instant::now();
    assert_eq!(sys.wait_signal(Duration::from_millis(300)), None);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "{took:?}"
    );
}
