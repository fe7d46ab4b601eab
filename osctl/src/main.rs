//! `osctl`: thin shell around [`ballast_osctl::main_code`]. Exit codes: 0 ok,
//! 1 failure (the message says what and why), 2 usage. On a device, osctl is
//! sysd's binary run under this name (sysd/src/main.rs).
#![deny(clippy::unwrap_used, clippy::expect_used)]

fn main() {
    std::process::exit(ballast_osctl::main_code());
}
