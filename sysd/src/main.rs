//! The device's one Ballast program besides init: sysd, and osctl when it is
//! run under that name (the image installs it as `/usr/lib/ballast/sysd` and
//! as `/usr/bin/osctl`; ADR 0018). One binary links the code the two share
//! (the bundle reader, the slot state, the config parser, HTTP, std) once,
//! and is cross-compiled and optimised once per board.

use std::ffi::OsStr;
use std::path::Path;

fn main() {
    if runs_as_osctl(std::env::args_os().next().as_deref()) {
        std::process::exit(ballast_osctl::main_code());
    }
    // PID 1's stage 1 starts this in the new root (ADR 0015, read-ahead).
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new("--read-ahead")) {
        std::process::exit(ballast_sysd::readahead::main_code());
    }
    // The time system container runs this (ADR 0020).
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new("--admin-setup")) {
        std::process::exit(ballast_sysd::admin::main_code());
    }
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new("--time-sync")) {
        std::process::exit(ballast_sysd::timesync::main_code());
    }
    let args = match ballast_sysd::Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            ballast_sysd::say(&e.to_string());
            std::process::exit(2);
        }
    };
    std::process::exit(ballast_sysd::run(args));
}

/// Whether the name this program was started by (`argv[0]`) is osctl's:
/// `osctl`, by any path. Anything else (PID 1 starts `/usr/lib/ballast/sysd`)
/// is sysd.
fn runs_as_osctl(arg0: Option<&OsStr>) -> bool {
    arg0.and_then(|a| Path::new(a).file_name())
        .is_some_and(|name| name == "osctl")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_it_runs_by_chooses_the_program() {
        for osctl in ["osctl", "/usr/bin/osctl", "./osctl"] {
            assert!(runs_as_osctl(Some(OsStr::new(osctl))), "{osctl}");
        }
        for sysd in ["/usr/lib/ballast/sysd", "sysd", "osctl-old", ""] {
            assert!(!runs_as_osctl(Some(OsStr::new(sysd))), "{sysd}");
        }
        assert!(!runs_as_osctl(None));
    }
}
