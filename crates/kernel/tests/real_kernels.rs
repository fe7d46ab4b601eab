//! The check and the module closure on real Debian bookworm kernel data
//! (`tests/fixtures/`, see its README) and on the repository's `kernel-configs/`.

use std::io::Read;
use std::path::{Path, PathBuf};

use ballast_kernel::check::{check, check_dir, check_dir_with, ModuleMap};
use ballast_kernel::kconfig::{Fragment, KernelConfig, Requirements};
use ballast_kernel::modules::{decompress, ModuleDb, ModulesError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn kernel_configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernel-configs")
}

/// Unpack a gzipped fixture config into `dir` and return its path.
fn unpack_config(name: &str, dir: &Path) -> PathBuf {
    let gz = std::fs::read(fixtures().join(format!("{name}.gz"))).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const KERNELS: &[(&str, &str)] = &[
    ("config-6.1.0-56-amd64", "x86_64"),
    ("config-6.1.0-50-arm64", "arm64"),
    ("config-6.1.0-50-armmp", "armv7"),
];

#[test]
fn debian_bookworm_kernels_meet_kernel_configs() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, arch) in KERNELS {
        let config = unpack_config(name, tmp.path());
        let report = check_dir(&config, &kernel_configs(), arch).unwrap();
        assert!(report.ok, "{arch}: {report}");
        assert!(
            report.checked > 100,
            "{arch}: only {} checked",
            report.checked
        );
        assert!(
            report.to_string().contains("options checked, all present"),
            "{report}"
        );
        for module in [
            "dm-verity",
            "dm-mod",
            "squashfs",
            "erofs",
            "ext4",
            "overlay",
            "vfat",
            "virtio_blk",
            "nls_cp437",
            "crc32c_generic",
        ] {
            assert!(
                report.initramfs_modules.iter().any(|m| m == module),
                "{arch}: {module} missing from {:?}",
                report.initramfs_modules
            );
        }
        // sorted and deduplicated
        let mut sorted = report.initramfs_modules.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, report.initramfs_modules);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["ok"], true);
        // The engine's modules are loaded only for images with an engine.
        assert!(!report.initramfs_modules.iter().any(|m| m == "br_netfilter"));
        let engine = check_dir_with(&config, &kernel_configs(), arch, &["engine"]).unwrap();
        assert!(engine.ok, "{arch} with engine.config: {engine}");
        for module in [
            "veth",
            "bridge",
            "br_netfilter",
            "nf_tables",
            "xt_MASQUERADE",
        ] {
            assert!(
                engine.initramfs_modules.iter().any(|m| m == module),
                "{arch}: {module} missing from {:?}",
                engine.initramfs_modules
            );
        }
    }
}

#[test]
fn module_built_in_on_arm_is_not_an_initramfs_module() {
    // CONFIG_VIRTIO is =m on amd64 but =y on arm64: only amd64 loads virtio.ko.
    let tmp = tempfile::tempdir().unwrap();
    let amd64 = check_dir(
        &unpack_config("config-6.1.0-56-amd64", tmp.path()),
        &kernel_configs(),
        "x86_64",
    )
    .unwrap();
    let arm64 = check_dir(
        &unpack_config("config-6.1.0-50-arm64", tmp.path()),
        &kernel_configs(),
        "arm64",
    )
    .unwrap();
    assert!(amd64.initramfs_modules.contains(&"virtio".to_string()));
    assert!(!arm64.initramfs_modules.contains(&"virtio".to_string()));
}

#[test]
fn missing_option_is_reported_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = unpack_config("config-6.1.0-56-amd64", tmp.path());
    // A fragment asking for things this kernel lacks: LPAE (arm-only), CGROUP_NS (gone
    // in 6.1), and TUN built in (it is =m and not in the module map).
    let frag = tmp.path().join("extra.config");
    std::fs::write(
        &frag,
        "# extra\nCONFIG_NAMESPACES=y\nCONFIG_ARM_LPAE=y\n\nCONFIG_TUN=y\nCONFIG_FAT_DEFAULT_IOCHARSET=\"utf8\"\n",
    )
    .unwrap();
    let reqs = Requirements::merge(&[Fragment::load(&frag).unwrap()]);
    let map = ModuleMap::load(&kernel_configs().join("initramfs-modules.toml")).unwrap();
    let report = check(&KernelConfig::load(&config).unwrap(), &reqs, &map);
    assert!(!report.ok);
    assert_eq!(report.checked, 4);
    let lines: Vec<(String, usize, String)> = report
        .missing
        .iter()
        .map(|m| (m.option.clone(), m.line, m.found.clone()))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("CONFIG_ARM_LPAE".into(), 3, "is not set".into()),
            ("CONFIG_TUN".into(), 5, "m".into()),
            ("CONFIG_FAT_DEFAULT_IOCHARSET".into(), 6, "\"ascii\"".into()),
        ]
    );
    let text = report.to_string();
    assert!(
        text.contains(&format!(
            "  CONFIG_ARM_LPAE: wanted y, found not set ({}:3)",
            frag.display()
        )),
        "{text}"
    );
}

#[test]
fn module_without_map_entry_fails_when_y_is_wanted() {
    let tmp = tempfile::tempdir().unwrap();
    let config = KernelConfig::load(&unpack_config("config-6.1.0-50-arm64", tmp.path())).unwrap();
    let reqs = Requirements::load_for_arch(&kernel_configs(), "arm64").unwrap();
    let empty = ModuleMap::parse("[modules]\n", Path::new("empty.toml")).unwrap();
    let report = check(&config, &reqs, &empty);
    assert!(!report.ok);
    assert!(report.initramfs_modules.is_empty());
    let dm = report
        .missing
        .iter()
        .find(|m| m.option == "CONFIG_DM_VERITY")
        .unwrap();
    assert_eq!((dm.wanted.as_str(), dm.found.as_str()), ("y", "m"));
    assert!(dm.file.ends_with("common.config"));
    // =m lines still pass without a map entry.
    assert!(!report.missing.iter().any(|m| m.option == "CONFIG_TUN"));
}

/// The wave that loads module file `name`.
fn wave_of(waves: &[Vec<PathBuf>], name: &str) -> usize {
    waves
        .iter()
        .position(|w| names(w).iter().any(|g| g == name))
        .unwrap_or_else(|| panic!("{name} not in {waves:?}"))
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect()
}

#[test]
fn dm_verity_closure_from_modules_dep_loads_dependencies_first() {
    let db = ModuleDb::load(&fixtures().join("modules-dep-amd64")).unwrap();
    let got = db
        .closure(&[
            "dm_verity".to_string(),
            "dm-mod".to_string(),
            "ext4".into(),
            "vfat".into(),
        ])
        .unwrap();
    let got = names(&got);
    let pos = |n: &str| {
        got.iter()
            .position(|g| g == n)
            .unwrap_or_else(|| panic!("{n} not in {got:?}"))
    };
    assert!(pos("dm-mod.ko") < pos("dm-bufio.ko"));
    assert!(pos("dm-bufio.ko") < pos("dm-verity.ko"));
    assert!(pos("reed_solomon.ko") < pos("dm-verity.ko"));
    for dep in ["crc16.ko", "mbcache.ko", "jbd2.ko"] {
        assert!(pos(dep) < pos("ext4.ko"));
    }
    assert!(pos("fat.ko") < pos("vfat.ko"));
    assert_eq!(got.len(), 10, "deduplicated: {got:?}");
    assert_eq!(
        db.path_of("dm-verity").unwrap(),
        Path::new("kernel/drivers/md/dm-verity.ko")
    );
}

#[test]
fn built_in_modules_are_skipped_and_unknown_ones_named() {
    let dir = fixtures().join("modules-dep-amd64");
    let db = ModuleDb::load(&dir).unwrap();
    assert!(db.is_builtin("8250"));
    assert!(db.is_builtin("sha256-generic"));
    assert!(!db.is_builtin("dm-verity"));
    assert_eq!(
        db.closure(&["sha256_generic".into()]).unwrap(),
        Vec::<PathBuf>::new()
    );
    let err = db.closure(&["dm-veritas".into()]).unwrap_err();
    assert!(matches!(err, ModulesError::Unknown { .. }));
    let text = err.to_string();
    assert!(
        text.contains("\"dm-veritas\"") && text.contains("modules.dep"),
        "{text}"
    );
}

#[test]
fn closure_without_modules_dep_reads_modinfo_of_compressed_modules() {
    for tree in ["modules-scan-amd64", "modules-scan-armmp"] {
        let db = ModuleDb::load(&fixtures().join(tree)).unwrap();
        let got = db.closure(&["vfat".into(), "fat".into()]).unwrap();
        assert_eq!(
            got,
            vec![
                PathBuf::from("kernel/fs/fat/fat.ko.xz"),
                PathBuf::from("kernel/fs/fat/vfat.ko.xz")
            ],
            "{tree}"
        );
    }
}

#[test]
fn decompressed_module_is_the_elf_and_plain_one_passes_through() {
    let dir = fixtures().join("modules-scan-amd64");
    let xz = std::fs::read(dir.join("kernel/fs/fat/vfat.ko.xz")).unwrap();
    let (name, bytes) = decompress(Path::new("kernel/fs/fat/vfat.ko.xz"), &xz).unwrap();
    assert_eq!(name, Path::new("kernel/fs/fat/vfat.ko"));
    assert_eq!(&bytes[..4], b"\x7fELF");
    let info = ballast_kernel::modules::modinfo(&bytes).unwrap();
    assert!(info.contains(&("name".into(), "vfat".into())), "{info:?}");
    assert!(info.contains(&("depends".into(), "fat".into())), "{info:?}");

    let plain = std::fs::read(dir.join("kernel/lib/crc16.ko")).unwrap();
    let (name, bytes) = decompress(Path::new("kernel/lib/crc16.ko"), &plain).unwrap();
    assert_eq!(name, Path::new("kernel/lib/crc16.ko"));
    assert_eq!(bytes, plain);
}

#[test]
fn waves_put_each_module_one_wave_after_its_deepest_dependency() {
    let db = ModuleDb::load(&fixtures().join("modules-dep-amd64")).unwrap();
    let wanted = [
        "dm_verity".to_string(),
        "dm-mod".to_string(),
        "ext4".into(),
        "vfat".into(),
    ];
    let waves = db.waves(&wanted).unwrap();
    let wave_of = |n: &str| wave_of(&waves, n);
    // Leaves first, together; each module after its deepest dependency.
    for leaf in [
        "dm-mod.ko",
        "crc16.ko",
        "mbcache.ko",
        "fat.ko",
        "reed_solomon.ko",
    ] {
        assert_eq!(wave_of(leaf), 0, "{leaf}: {waves:?}");
    }
    assert_eq!(wave_of("dm-bufio.ko"), wave_of("dm-mod.ko") + 1);
    assert!(wave_of("dm-verity.ko") > wave_of("dm-bufio.ko"));
    assert_eq!(wave_of("vfat.ko"), 1);
    assert!(wave_of("ext4.ko") > wave_of("jbd2.ko"));
    // The same modules as the closure, each once.
    let mut flat: Vec<PathBuf> = waves.concat();
    let mut closure = db.closure(&wanted).unwrap();
    flat.sort();
    closure.sort();
    assert_eq!(flat, closure);
}

#[test]
fn crypto_algorithms_and_their_dependencies_load_in_waves_before_the_rest() {
    // libcrc32c asks the crypto API for "crc32c" when it starts: a soft
    // dependency on crc32c_generic that modules.dep does not list. Loaded in
    // the same wave, it failed one boot in a few (ENOENT: no modprobe).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("modules.dep"),
        "kernel/lib/libcrc32c.ko:\n\
         kernel/crypto/crc32c_generic.ko:\n\
         kernel/lib/crypto/libsha256.ko:\n\
         kernel/arch/arm64/crypto/sha2-ce.ko: kernel/arch/arm64/crypto/sha256-arm64.ko\n\
         kernel/arch/arm64/crypto/sha256-arm64.ko: kernel/lib/crc16.ko\n\
         kernel/lib/crc16.ko:\n\
         kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/lib/libcrc32c.ko\n",
    )
    .unwrap();
    let db = ModuleDb::load(dir.path()).unwrap();
    let wanted: Vec<String> = ["ext4", "crc32c_generic", "sha2_ce", "libsha256"]
        .map(String::from)
        .to_vec();
    let waves = db.waves(&wanted).unwrap();
    let wave_of = |n: &str| wave_of(&waves, n);
    // The algorithms' phase: crc16 (a dependency of one), then sha256-arm64,
    // then sha2-ce; crc32c_generic and libsha256 need nothing.
    assert_eq!(wave_of("crc16.ko"), 0, "{waves:?}");
    assert_eq!(wave_of("crc32c_generic.ko"), 0, "{waves:?}");
    assert_eq!(wave_of("libsha256.ko"), 0, "{waves:?}");
    assert_eq!(wave_of("sha256-arm64.ko"), 1, "{waves:?}");
    assert_eq!(wave_of("sha2-ce.ko"), 2, "{waves:?}");
    // Then the rest, after the last algorithm.
    assert_eq!(wave_of("libcrc32c.ko"), 3, "{waves:?}");
    assert_eq!(wave_of("ext4.ko"), 4, "{waves:?}");
    assert_eq!(waves.concat().len(), 7, "{waves:?}");
}

#[test]
fn modules_loaded_beside_come_in_waves_of_their_own_after_the_first_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("modules.dep"),
        "kernel/drivers/scsi/scsi_common.ko:\n\
         kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko\n\
         kernel/drivers/scsi/virtio_scsi.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko\n\
         kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko\n\
         kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko\n\
         kernel/drivers/usb/storage/uas.ko: kernel/drivers/usb/storage/usb-storage.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko\n\
         kernel/drivers/block/virtio_blk.ko:\n",
    )
    .unwrap();
    let db = ModuleDb::load(dir.path()).unwrap();
    let first = db
        .waves(&["virtio_scsi".to_string(), "virtio_blk".into()])
        .unwrap();
    let beside = db
        .waves_after(&["sd_mod".to_string(), "uas".into()], &first)
        .unwrap();
    // What the first waves loaded (scsi_mod, scsi_common) is not loaded again;
    // the rest starts at wave 0 and each module comes after its own.
    let names: Vec<Vec<String>> = beside
        .iter()
        .map(|w| {
            w.iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        })
        .collect();
    assert_eq!(
        names,
        [vec!["sd_mod.ko", "usb-storage.ko"], vec!["uas.ko"]],
        "{beside:?}"
    );
}
