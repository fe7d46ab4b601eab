//! May this device install this bundle? Arch, board, version order and the
//! rollback index. Pure functions: the device passes in what it is.

use crate::{BundleError, Manifest};
use std::cmp::Ordering;

/// Semver order (pre-releases before their release, build metadata ignored);
/// None when either is not semver.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let a = semver::Version::parse(a).ok()?;
    let b = semver::Version::parse(b).ok()?;
    // semver's Ord also orders build metadata; semver precedence ignores it.
    Some(a.cmp_precedence(&b))
}

/// Refuse another arch, a board not listed (empty list = any board), a version
/// not newer than `current` unless `allow_downgrade`, and a rollback index below
/// `min_rollback_index` (never allowed).
pub fn check_compatible(
    m: &Manifest,
    arch: &str,
    board: &str,
    current: &str,
    min_rollback_index: u64,
    allow_downgrade: bool,
) -> Result<(), BundleError> {
    let refuse = |detail: String| Err(BundleError::Incompatible { detail });
    if m.arch != arch {
        return refuse(format!(
            "the bundle (version {}) is for arch {}, this device is {arch}: use the bundle built for {arch}",
            m.version, m.arch
        ));
    }
    if !m.boards.is_empty() && !m.boards.iter().any(|b| b == board) {
        return refuse(format!(
            "the bundle (version {}) is for boards [{}], this device is board {board}: use a bundle built for {board}",
            m.version,
            m.boards.join(", ")
        ));
    }
    if m.rollback_index < min_rollback_index {
        return refuse(format!(
            "the bundle (version {}) has rollback index {}, this device requires at least {min_rollback_index}: it is older than a security fix this device has installed, and no flag allows that",
            m.version, m.rollback_index
        ));
    }
    if allow_downgrade {
        return Ok(());
    }
    match compare_versions(&m.version, current) {
        Some(Ordering::Greater) => Ok(()),
        Some(Ordering::Equal) => refuse(format!(
            "the bundle is version {}, the same as this device runs ({current}): pass --allow-downgrade to reinstall it",
            m.version
        )),
        Some(Ordering::Less) => refuse(format!(
            "the bundle is version {}, older than this device's {current}: pass --allow-downgrade to install it anyway",
            m.version
        )),
        None => refuse(format!(
            "cannot order the bundle's version {} against this device's {current:?} (not semver): pass --allow-downgrade to install it anyway",
            m.version
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest(version: &str, boards: &[&str], rollback_index: u64) -> Manifest {
        Manifest {
            format: 1,
            os: "ballast".into(),
            version: version.into(),
            arch: "arm64".into(),
            boards: boards.iter().map(|s| s.to_string()).collect(),
            build_time: 0,
            rollback_index,
            key_id: "0123456789abcdef".into(),
            cmdline: String::new(),
            payloads: vec![],
        }
    }

    #[test]
    fn semver_order_including_prerelease() {
        use Ordering::*;
        assert_eq!(compare_versions("1.10.0", "1.9.9"), Some(Greater));
        assert_eq!(compare_versions("2.0.0-rc.1", "2.0.0"), Some(Less));
        assert_eq!(compare_versions("2.0.0-rc.2", "2.0.0-rc.10"), Some(Less));
        assert_eq!(compare_versions("2.0.0-alpha", "2.0.0-beta"), Some(Less));
        assert_eq!(compare_versions("1.0.0+a", "1.0.0+b"), Some(Equal));
        assert_eq!(compare_versions("1.0", "1.0.0"), None);
    }

    #[test]
    fn refusals_say_offered_device_and_flag() {
        let m = manifest("1.2.0", &["rpi4"], 3);
        assert!(check_compatible(&m, "arm64", "rpi4", "1.1.0", 3, false).is_ok());
        let err = check_compatible(&m, "x86_64", "rpi4", "1.1.0", 0, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("arm64") && err.contains("x86_64"), "{err}");
        let err = check_compatible(&m, "arm64", "qemu-arm64", "1.1.0", 0, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("rpi4") && err.contains("qemu-arm64"), "{err}");
        let any_board = manifest("1.2.0", &[], 0);
        assert!(check_compatible(&any_board, "arm64", "qemu-arm64", "1.1.0", 0, false).is_ok());
        for current in ["1.2.0", "1.3.0", "1.2.0+other-build"] {
            let err = check_compatible(&m, "arm64", "rpi4", current, 0, false)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--allow-downgrade") && err.contains(current) && err.contains("1.2.0"),
                "{err}"
            );
            assert!(check_compatible(&m, "arm64", "rpi4", current, 0, true).is_ok());
        }
        // The rollback index is never overridable.
        let err = check_compatible(&m, "arm64", "rpi4", "1.0.0", 4, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rollback index 3") && err.contains("at least 4"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn order_is_antisymmetric_and_matches_numbers(a in (0u64..50, 0u64..50, 0u64..50), b in (0u64..50, 0u64..50, 0u64..50)) {
            let va = format!("{}.{}.{}", a.0, a.1, a.2);
            let vb = format!("{}.{}.{}", b.0, b.1, b.2);
            prop_assert_eq!(compare_versions(&va, &vb), Some(a.cmp(&b)));
            prop_assert_eq!(compare_versions(&vb, &va), Some(b.cmp(&a)));
            let pre = format!("{va}-rc.1");
            prop_assert_eq!(compare_versions(&pre, &va), Some(Ordering::Less));
        }
    }
}
