//! Run one OCI bundle in the foreground: `run-bundle ID BUNDLE_DIR`.
//! Exits with the container's exit code (128+signal if killed). A manual check on a
//! device or a dev host; sysd is the real caller.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, id, bundle] = args.as_slice() else {
        eprintln!("usage: run-bundle ID BUNDLE_DIR");
        return ExitCode::from(2);
    };
    let bundle = Path::new(bundle);
    let result = ballast_container::load(bundle).and_then(|spec| {
        ballast_container::start(id, bundle, &spec, ballast_container::Stdio3::inherit())
    });
    let started = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("run-bundle: {e}");
            return ExitCode::from(125);
        }
    };
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(started.pid as i32, &mut status, 0) } < 0 {
        eprintln!("run-bundle: waitpid: {}", std::io::Error::last_os_error());
        return ExitCode::from(125);
    }
    if let Err(e) = ballast_container::cleanup(id) {
        eprintln!("run-bundle: {e}");
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    ExitCode::from(code as u8)
}
