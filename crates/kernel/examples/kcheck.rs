//! `cargo run -p ballast-kernel --example kcheck -- CONFIG KERNEL_CONFIGS_DIR ARCH [MODULES_DIR]`:
//! check a kernel config against `kernel-configs/` and, given the kernel's modules
//! directory, print the initramfs modules in load order. With `OUT INIT` too, write an
//! initramfs to OUT: INIT as `/init`, the modules uncompressed under `lib/modules/`, and
//! their load order in `/etc/modules-load.order`, compressed as the kernel allows best.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: kcheck CONFIG KERNEL_CONFIGS_DIR ARCH [MODULES_DIR [OUT INIT]]");
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
                if let (Some(out), Some(init)) = (args.get(4), args.get(5)) {
                    if let Err(e) = write_initramfs(&args[0], Path::new(dir), &paths, out, init) {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
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

fn write_initramfs(
    config: &str,
    dir: &Path,
    paths: &[std::path::PathBuf],
    out: &str,
    init: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    use ballast_kernel::initramfs::{Compression, Initramfs};
    let kver = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("modules dir has no KVER name")?;
    let mut i = Initramfs::new();
    i.add_file("init", 0o755, std::fs::read(init)?);
    i.add_dir("dev", 0o755);
    i.add_dir("proc", 0o755);
    i.add_char_dev("dev/console", 0o600, 5, 1);
    let mut order = String::new();
    for p in paths {
        let bytes = std::fs::read(dir.join(p))?;
        let (plain, bytes) = ballast_kernel::modules::decompress(p, &bytes)?;
        let target = format!("lib/modules/{kver}/{}", plain.display());
        order.push_str(&format!("/{target}\n"));
        i.add_file(&target, 0o644, bytes);
    }
    i.add_file("etc/modules-load.order", 0o644, order.into_bytes());
    let kconfig = ballast_kernel::kconfig::KernelConfig::load(Path::new(config))?;
    let raw = i.to_cpio(0)?;
    for c in [Compression::Gzip, Compression::Xz, Compression::Zstd] {
        let t = std::time::Instant::now();
        let packed = i.write(c, 0)?;
        println!(
            "{}: {} bytes (cpio {} bytes) in {:?}",
            c.name(),
            packed.len(),
            raw.len(),
            t.elapsed()
        );
    }
    // BALLAST_INITRD_COMPRESSION=gzip|xz|zstd|none forces a method (to boot-test each).
    let best = match std::env::var("BALLAST_INITRD_COMPRESSION").as_deref() {
        Ok("gzip") => Compression::Gzip,
        Ok("xz") => Compression::Xz,
        Ok("zstd") => Compression::Zstd,
        Ok("none") => Compression::None,
        _ => Compression::best_for(&kconfig),
    };
    std::fs::write(out, i.write(best, 0)?)?;
    println!("wrote {out} ({})", best.name());
    Ok(())
}
