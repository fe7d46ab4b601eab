//! sysd's binary: parse the arguments and run the library (see `lib.rs`).

fn main() {
    let args = match ballast_sysd::Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            ballast_sysd::say(&e.to_string());
            std::process::exit(2);
        }
    };
    std::process::exit(ballast_sysd::run(args));
}
