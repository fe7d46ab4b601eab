//! sysd's binary is also osctl on a device (ADR 0018): installed as
//! `/usr/bin/osctl`, it runs osctl. Here through a symlink of that name, as
//! a user's shell runs it.

use std::process::Command;

#[test]
fn sysds_binary_named_osctl_is_osctl() {
    let dir = tempfile::tempdir().expect("temp dir");
    let osctl = dir.path().join("osctl");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sysd"), &osctl).expect("symlink");

    let out = Command::new(&osctl)
        .arg("--version")
        .output()
        .expect("running it");
    assert!(out.status.success(), "{out:?}");
    let version = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        version.trim(),
        format!("osctl {}", env!("CARGO_PKG_VERSION"))
    );

    // osctl's own refusal, with its file:line message and exit code.
    let bad = dir.path().join("user-data");
    std::fs::write(&bad, "#cloud-config\nusers: 7\n").expect("writing user-data");
    let out = Command::new(&osctl)
        .args(["config", "validate"])
        .arg(&bad)
        .output()
        .expect("running it");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("user-data:2: users: expected a list of users"),
        "{err}"
    );

    // By its own name it is still sysd: a usage error in sysd's words.
    let out = Command::new(env!("CARGO_BIN_EXE_sysd"))
        .arg("--no-such-flag")
        .output()
        .expect("running sysd");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
