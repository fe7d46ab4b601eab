//! `osctl`: thin shell around [`ballast_osctl::run`]. Exit codes: 0 ok,
//! 1 failure (the message says what and why), 2 usage.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;

fn main() {
    let cli = ballast_osctl::Cli::parse();
    let mut out = std::io::stdout().lock();
    match ballast_osctl::run(&cli, &mut out) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("osctl: {e}");
            std::process::exit(1);
        }
    }
}
