//! Run one container directory (config.json + rootfs) in the foreground:
//! `run-container ID DIR`.
//! Exits with the container's exit code (128+signal if killed). A manual check on a
//! device or a dev host; sysd is the real caller.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, id, dir] = args.as_slice() else {
        eprintln!("usage: run-container ID DIR");
        return ExitCode::from(2);
    };
    let dir = Path::new(dir);
    let result = ballast_container::load(dir).and_then(|config| {
        ballast_container::start(id, dir, &config, ballast_container::Stdio3::inherit())
    });
    let started = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("run-container: {e}");
            return ExitCode::from(125);
        }
    };
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(started.pid as i32, &mut status, 0) } < 0 {
        eprintln!(
            "run-container: waitpid: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(125);
    }
    if let Err(e) = ballast_container::cleanup(id) {
        eprintln!("run-container: {e}");
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    ExitCode::from(code as u8)
}
