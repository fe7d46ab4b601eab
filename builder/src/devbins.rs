//! Cross-compiling Ballast's own device binaries (init, and later sysd and
//! osctl) for a board's arch, through Cargo and the workspace's `device`
//! profile (static, size-optimised; linkers in `.cargo/config.toml`).

use anyhow::{bail, Context, Result};
use ballast_inputs::Arch;
use std::path::PathBuf;
use std::process::Command;

use crate::project::Project;

/// The variables Cargo sets for a package's own programs (its tests, its build
/// script), which a `ballast` started by a test inherits. Build scripts may
/// watch them (ring's watches `CARGO_MANIFEST_DIR`): left in, a build from a
/// test and one from a shell would each compile the device programs again.
const PACKAGE_ENV: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
];

/// `cmd` without the package variables of whoever started `ballast`.
fn without_package_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if PACKAGE_ENV.contains(&name.as_ref())
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
        {
            cmd.env_remove(name.as_ref());
        }
    }
}

/// Build `packages` (Cargo package names) for `arch` and return the path of
/// each named binary.
pub fn build(
    project: &Project,
    arch: Arch,
    packages: &[&str],
    bins: &[&str],
) -> Result<Vec<PathBuf>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = arch.rust_target();
    let mut cmd = Command::new(&cargo);
    without_package_env(&mut cmd);
    cmd.current_dir(&project.root).args([
        "build",
        "--quiet",
        "--profile",
        "device",
        "--target",
        target,
    ]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    // Cargo's own progress goes to stderr; stdout stays free for --json.
    cmd.stdout(std::process::Stdio::null());
    let status = cmd
        .status()
        .with_context(|| format!("running {} build for {target}", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!(
            "cross-compiling {} for {target} failed (see Cargo's messages above); \
             is the target installed? `scripts/setup` installs it with rustup",
            packages.join(", ")
        );
    }
    let dir = project.target_dir().join(target).join("device");
    bins.iter()
        .map(|b| {
            let path = dir.join(b);
            if path.is_file() {
                Ok(path)
            } else {
                bail!("Cargo succeeded but {} is missing", path.display())
            }
        })
        .collect()
}
