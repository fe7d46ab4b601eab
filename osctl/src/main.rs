//! `osctl`: thin shell around [`ballast_osctl::run`]. Exit codes: 0 ok,
//! 1 failure (the message says what and why), 2 usage.
#![deny(clippy::unwrap_used, clippy::expect_used)]

fn main() {
    let cli = ballast_osctl::parse();
    let mut out = std::io::stdout().lock();
    match ballast_osctl::run(&cli, &mut out) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("osctl: {e}");
            std::process::exit(1);
        }
    }
}
