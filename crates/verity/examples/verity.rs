//! Manual use of the library on an image file:
//!
//! ```text
//! cargo run -p ballast-verity --example verity -- append IMAGE SALT-SEED
//! cargo run -p ballast-verity --example verity -- verify IMAGE 'ballast.verity=...'
//! ```
//!
//! `append` prints the command line word, the kernel table and the time taken;
//! `verify` exits 1 naming the first bad block.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use ballast_verity::{append_hash_tree, verify, Params, Verity};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["append", image, seed] => {
            let t = Instant::now();
            append_hash_tree(
                Path::new(image),
                &Params::new(Params::derived_salt(seed.as_bytes())),
            )
            .map(|v| {
                let secs = t.elapsed().as_secs_f64();
                println!("{}", v.to_cmdline());
                println!("{}", v.table("/dev/vda2", "/dev/vda2"));
                println!(
                    "{} MiB of data in {secs:.2} s ({:.0} MiB/s), hash area {} KiB",
                    v.data_size() >> 20,
                    (v.data_size() >> 20) as f64 / secs,
                    v.hash_area_size() >> 10
                );
            })
        }
        ["verify", image, word] => Verity::from_cmdline(word).and_then(|v| {
            let t = Instant::now();
            verify(Path::new(image), &v)
                .map(|()| println!("ok in {:.2} s", t.elapsed().as_secs_f64()))
        }),
        _ => {
            eprintln!(
                "usage: verity append IMAGE SALT-SEED | verity verify IMAGE ballast.verity=..."
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
