//! The initramfs: init as `/init`, the few device nodes the kernel needs
//! before devtmpfs, `/usr/lib/os-release`, and exactly the kernel modules
//! stage 1 loads, with their dependencies from `modules.dep`, stored
//! uncompressed with `/etc/ballast/modules.load` listing them in load order.
//!
//! Modules are stored uncompressed because finit_module() only takes
//! compressed modules when the kernel has `CONFIG_MODULE_DECOMPRESS`, and the
//! initramfs as a whole is compressed anyway (better ratio than per-file xz).
//!
//! Reproducible: entries are sorted, owners are 0, and every timestamp is
//! `SOURCE_DATE_EPOCH` (from the environment, else the kernel's own mtime).

use anyhow::{Context, Result};
use ballast_device::paths;
use ballast_inputs::Board;
use ballast_kernel::initramfs::{Compression, Initramfs};
use ballast_kernel::kconfig::KernelConfig;
use ballast_kernel::modules::{self, ModuleDb};
use std::path::Path;

use crate::kernel_input::KernelTree;

/// init's `modules::BESIDE`: the modules after it load beside the root's search.
const BESIDE_LINE: &str = "# beside";

pub struct Inputs<'a> {
    pub init: &'a Path,
    pub kernel: &'a KernelTree,
    /// Module names (as `kernel-configs/initramfs-modules.toml` spells them).
    pub modules: &'a [String],
    /// Those of `modules` that stage 1 loads beside its search for the root
    /// (the map's `[beside]` table), after the others.
    pub beside: &'a [String],
    pub version: &'a semver::Version,
    pub board: &'a Board,
    /// `ballast build --rollback-index`.
    pub rollback_index: u64,
    /// (path below `lib/firmware/`, file on the host): the board's firmware.
    pub firmware: &'a [(String, std::path::PathBuf)],
    /// How hard the archive is compressed.
    pub effort: crate::effort::Effort,
}

/// What went into the initramfs, for the build summary.
#[derive(Debug, Clone)]
pub struct Assembled {
    pub bytes: Vec<u8>,
    pub compression: String,
    pub modules: usize,
    /// The timestamp used (`SOURCE_DATE_EPOCH`), for the rest of the build.
    pub epoch: u64,
}

/// `SOURCE_DATE_EPOCH` from the environment, else `fallback`.
pub fn source_date_epoch(fallback: u64) -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        }),
        Err(_) => Ok(fallback),
    }
}

/// `/usr/lib/os-release`: who the machine is. sysd reads the BALLAST_ fields
/// (board, arch, rollback index) to decide which bundles it accepts; the text is
/// ballast-device's, the one format init, sysd and osctl read.
pub fn os_release(version: &semver::Version, board: &Board, rollback_index: u64) -> Result<String> {
    use ballast_device::os_release::{Arch, OsRelease, Version};
    use ballast_inputs::Arch as BoardArch;
    let version = Version::parse(&version.to_string())
        .map_err(|expected| anyhow::anyhow!("version {version} is not {expected}"))?;
    let arch = match board.arch {
        BoardArch::X86_64 => Arch::X86_64,
        BoardArch::Arm64 => Arch::Arm64,
        BoardArch::Armv7 => Arch::Armv7,
    };
    Ok(OsRelease {
        version,
        board: board.name.clone(),
        arch,
        rollback_index,
    }
    .render())
}

pub fn assemble(inputs: &Inputs<'_>) -> Result<Assembled> {
    let kernel = inputs.kernel;
    let db = ModuleDb::load(&kernel.modules_dir)
        .with_context(|| format!("reading modules of kernel {}", kernel.release))?;
    let (beside, first): (Vec<String>, Vec<String>) = inputs
        .modules
        .iter()
        .filter(|m| !db.is_builtin(m))
        .cloned()
        .partition(|m| inputs.beside.contains(m));
    let context = || {
        format!(
            "finding the modules stage 1 needs in kernel {}",
            kernel.release
        )
    };
    let waves = db.waves(&first).with_context(context)?;
    let beside = db.waves_after(&beside, &waves).with_context(context)?;

    let mut fs = Initramfs::new();
    let init =
        std::fs::read(inputs.init).with_context(|| format!("reading {}", inputs.init.display()))?;
    fs.add_file("init", 0o755, init);
    for dir in ["dev", "proc", "sys", "run", "tmp", "etc/ballast"] {
        fs.add_dir(dir, 0o755);
    }
    fs.add_char_dev("dev/console", 0o600, 5, 1);
    fs.add_char_dev("dev/null", 0o666, 1, 3);
    fs.add_file(
        paths::relative(paths::OS_RELEASE),
        0o644,
        os_release(inputs.version, inputs.board, inputs.rollback_index)?.into_bytes(),
    );

    // init/src/modules.rs reads this: `# kver=`, then each wave after a
    // `# wave N` line (a wave's modules need only earlier waves': stage 1
    // loads each wave's together); after a `# beside` line, the waves stage 1
    // loads beside its search for the root.
    let mut load = format!("# kver={}\n", kernel.release);
    let beside_line = (!beside.is_empty()).then_some((0, None));
    let marked = waves
        .iter()
        .enumerate()
        .map(|(n, w)| (n, Some(w)))
        .chain(beside_line)
        .chain(beside.iter().enumerate().map(|(n, w)| (n, Some(w))));
    for (n, wave) in marked {
        let Some(wave) = wave else {
            load.push_str(&format!("{}\n", BESIDE_LINE));
            continue;
        };
        load.push_str(&format!("# wave {n}\n"));
        for rel in wave {
            let src = kernel.modules_dir.join(rel);
            let bytes =
                std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
            let (plain, data) = modules::decompress(rel, &bytes)
                .with_context(|| format!("decompressing {}", src.display()))?;
            let plain = plain.to_string_lossy().into_owned();
            fs.add_file(
                &format!("lib/modules/{}/{plain}", kernel.release),
                0o644,
                data,
            );
            load.push_str(&plain);
            load.push('\n');
        }
    }
    // The kernel reads firmware from the root it has while the driver
    // probes: stage 1's, as the board's drivers load there.
    for (rel, src) in inputs.firmware {
        let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        fs.add_file(&format!("lib/firmware/{rel}"), 0o644, data);
    }
    fs.add_file(
        paths::relative(paths::MODULES_LOAD),
        0o644,
        load.into_bytes(),
    );

    let config = KernelConfig::load(&kernel.config)?;
    let compression = Compression::best_for(&config);
    let mtime = source_date_epoch(kernel.mtime)?;
    let bytes = fs
        .write_at(compression, inputs.effort.level(compression), mtime)
        .context("compressing the initramfs")?;
    Ok(Assembled {
        bytes,
        compression: compression.name().to_owned(),
        modules: waves.iter().chain(&beside).map(Vec::len).sum(),
        epoch: mtime,
    })
}
