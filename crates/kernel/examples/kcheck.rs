//! `cargo run -p ballast-kernel --example kcheck -- CONFIG KERNEL_CONFIGS_DIR ARCH [MODULES_DIR]`:
//! check a kernel config against `kernel-configs/` and, given the kernel's modules
//! directory, print the initramfs modules in load order.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: kcheck CONFIG KERNEL_CONFIGS_DIR ARCH [MODULES_DIR]");
        return ExitCode::from(2);
    }
    let report = match ballast_kernel::check::check_dir(
        Path::new(&args[0]),
        Path::new(&args[1]),
        &args[2],
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{report}");
    if let Some(dir) = args.get(3) {
        let start = std::time::Instant::now();
        let closure = ballast_kernel::modules::ModuleDb::load(Path::new(dir))
            .and_then(|db| db.closure(&report.initramfs_modules));
        match closure {
            Ok(paths) => {
                for p in &paths {
                    println!("{}", p.display());
                }
                println!("{} modules in {:?}", paths.len(), start.elapsed());
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
