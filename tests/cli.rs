//! Story: a user makes mistakes. Each one gets an error that names the file,
//! the line and the field, and nothing is left half-written.

mod common;

use std::fs;
use std::path::Path;

/// A scratch checkout: the project's data directories copied, so a test can
/// break one file without touching the real ones.
fn scratch_root(name: &str) -> common::WorkDir {
    let dir = common::workdir(name);
    for sub in ["boards", "images", "qemu", "kernel-configs"] {
        copy_dir(&common::root().join(sub), &dir.join(sub));
    }
    fs::copy(common::root().join("Cargo.toml"), dir.join("Cargo.toml")).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unknown_board_lists_the_known_ones() {
    let _story = common::story();
    let out = common::ballast()
        .args(["build", "--board", "qemu-arm65"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("unknown board \"qemu-arm65\""), "{err}");
    assert!(
        err.contains("qemu-arm64") && err.contains("qemu-armv7"),
        "{err}"
    );
}

#[test]
fn a_typo_in_a_board_file_names_file_line_and_field() {
    let _story = common::story();
    let root = scratch_root("cli-board-typo");
    let board = root.join("boards/qemu-arm64.toml");
    let text = fs::read_to_string(&board).unwrap();
    fs::write(&board, text.replace("arch = \"arm64\"", "arch = \"amr64\"")).unwrap();
    let out = common::ballast()
        .env("BALLAST_ROOT", &root)
        .args(["build", "--board", "qemu-arm64", "--out"])
        .arg(root.join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    let line = text.lines().position(|l| l.starts_with("arch =")).unwrap() + 1;
    assert!(
        err.contains(&format!(
            "boards/qemu-arm64.toml:{line}:8: arch: unknown variant `amr64`"
        )),
        "{err}"
    );
    assert!(err.contains("arm64"), "the choices are listed: {err}");
    assert!(
        !root.join("out").exists(),
        "nothing is written on bad input"
    );
}

#[test]
fn a_bad_image_version_is_refused_with_its_place() {
    let _story = common::story();
    let root = scratch_root("cli-image-version");
    let image = root.join("images/default.toml");
    let text = fs::read_to_string(&image).unwrap();
    fs::write(
        &image,
        text.replace("version = \"0.1.0\"", "version = \"1.0\""),
    )
    .unwrap();
    let out = common::ballast()
        .env("BALLAST_ROOT", &root)
        .args(["build", "--board", "qemu-arm64"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("images/default.toml:"), "{err}");
    assert!(err.contains(": version: "), "{err}");
}

#[test]
fn kernel_check_passes_for_the_board_kernel_and_fails_naming_a_missing_option() {
    let _story = common::story();
    // The real Debian arm64 kernel satisfies kernel-configs/.
    let out = common::ballast()
        .args(["kernel", "check", "--board", "qemu-arm64", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let modules = report["initramfs_modules"].as_array().expect("module list");
    assert!(
        modules.iter().any(|m| m == "dm_verity" || m == "dm-verity"),
        "dm-verity is a module in Debian's arm64 kernel and goes in the initramfs: {report}"
    );

    // A requirement no kernel meets is reported with where it comes from.
    let root = scratch_root("cli-kernel-check");
    let common_cfg = root.join("kernel-configs/common.config");
    let mut text = fs::read_to_string(&common_cfg).unwrap();
    text.push_str("CONFIG_BALLAST_TEST_IMPOSSIBLE=y\n");
    let line = text.lines().count();
    fs::write(&common_cfg, &text).unwrap();
    let out = common::ballast()
        .env("BALLAST_ROOT", &root)
        .args(["kernel", "check", "--board", "qemu-arm64"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CONFIG_BALLAST_TEST_IMPOSSIBLE"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("common.config:{line}")),
        "{stdout}"
    );
}

#[test]
fn a_build_refuses_a_kernel_that_lacks_an_option_and_keeps_the_old_output() {
    let _story = common::story();
    let root = scratch_root("cli-build-kernel-lacks");
    let out_dir = root.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    fs::write(out_dir.join("vmlinuz"), b"previous good build").unwrap();
    let common_cfg = root.join("kernel-configs/common.config");
    let mut text = fs::read_to_string(&common_cfg).unwrap();
    text.push_str("CONFIG_BALLAST_TEST_IMPOSSIBLE=y\n");
    let line = text.lines().count();
    fs::write(&common_cfg, &text).unwrap();
    let out = common::ballast()
        .env("BALLAST_ROOT", &root)
        .args(["build", "--board", "qemu-arm64", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("lacks options Ballast needs"), "{err}");
    assert!(err.contains("CONFIG_BALLAST_TEST_IMPOSSIBLE"), "{err}");
    assert!(err.contains(&format!("common.config:{line}")), "{err}");
    assert_eq!(
        fs::read(out_dir.join("vmlinuz")).unwrap(),
        b"previous good build",
        "a failed build must not touch the previous output"
    );
    assert!(!out_dir.join("initrd.img").exists());
}

#[test]
fn fetch_prints_the_verified_closure_as_json() {
    let _story = common::story();
    let out = common::ballast()
        .args(["fetch", "--arch", "arm64", "--json", "busybox-static"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = listed["packages"].as_array().expect("packages array");
    let busybox = packages
        .iter()
        .find(|p| p["name"] == "busybox-static")
        .unwrap_or_else(|| panic!("busybox-static not in {listed}"));
    assert_eq!(busybox["arch"], "arm64");
    for p in packages {
        let path = Path::new(p["path"].as_str().expect("path"));
        let bytes = fs::read(path).unwrap();
        assert_eq!(bytes.len() as u64, p["size"].as_u64().unwrap(), "{p}");
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        assert_eq!(sha, p["sha256"].as_str().unwrap(), "{p}");
        assert!(p["version"].as_str().is_some_and(|v| !v.is_empty()));
    }
}

#[test]
fn offline_with_an_empty_cache_names_what_is_missing() {
    let _story = common::story();
    let cache = common::workdir("cli-offline-cache");
    let out = common::ballast()
        .args(["fetch", "--arch", "armhf", "--offline", "--cache"])
        .arg(&cache)
        .arg("busybox-static")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("offline"), "{err}");
    assert!(err.contains("InRelease"), "{err}");
}

#[test]
fn fetch_rejects_an_unknown_arch_and_an_unknown_package() {
    let _story = common::story();
    let out = common::ballast()
        .args(["fetch", "--arch", "sparc", "hello"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("x86_64"), "{}", stderr_of(&out));

    let out = common::ballast()
        .args([
            "fetch",
            "--arch",
            "arm64",
            "--no-download",
            "no-such-package-xyz",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("no-such-package-xyz"),
        "{}",
        stderr_of(&out)
    );
}
